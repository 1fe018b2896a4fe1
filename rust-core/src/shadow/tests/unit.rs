//! One behaviour per test, on 4-level and (where it differs) 5-level hosts.

use super::*;
use crate::shadow::{Config, Fault, Kill, Translation, MIN_TABLES};

const USER_VA: u64 = 0x0000_0040_1234_5000;
const KERN_VA: u64 = 0xffff_8880_0010_0000;
const FRAME: u64 = 0x40_0000;
const RWX_USER: u64 = P | RW | US;

fn setup(la57: bool) -> (Shadow, Fake, u64) {
    let mut f = Fake::new(GUEST_PAGES);
    let mut s = Shadow::new(config(la57));
    let cr3 = f.guest_page();
    s.set_cr3(&mut f, cr3).unwrap();
    s.set_switcher_entry(SWITCHER_ENTRY);
    (s, f, cr3)
}

fn root_pa(s: &Shadow) -> u64 {
    s.root_pa().unwrap()
}

/// The CPU's view of an access through the current shadow.
fn cpu(s: &Shadow, f: &Fake, va: u64, access: u64) -> Result<u64, u64> {
    f.mmu(root_pa(s), s.la57, va, access)
}

/// Run an access like the CPU + host loop would: fault, fix, retry. Returns the shadow leaf or the
/// error code reflected to the guest.
fn touch(s: &mut Shadow, f: &mut Fake, va: u64, access: u64) -> Result<u64, u64> {
    for _ in 0..3 {
        match cpu(s, f, va, access) {
            Ok(leaf) => return Ok(leaf),
            Err(err) => match s.page_fault(f, va, err).unwrap() {
                Fault::Fixed => continue,
                Fault::Reflect { err } => return Err(err),
                Fault::GeneralProtection => return Err(u64::MAX),
            },
        }
    }
    panic!("access to {va:#x} keeps faulting");
}

fn both(t: impl Fn(bool)) {
    t(false);
    t(true);
}

#[test]
fn read_fault_maps_read_only_then_write_upgrades_and_sets_dirty() {
    both(|la57| {
        let (mut s, mut f, cr3) = setup(la57);
        f.map(cr3, USER_VA, FRAME | RWX_USER, RWX_USER);
        let leaf = touch(&mut s, &mut f, USER_VA, PF_U).unwrap();
        assert_eq!(leaf & ADDR, ((FRAME >> 12) + HOST_PFN_OFFSET) << 12);
        assert_eq!(leaf & (RW | D), 0, "a read installs a read-only leaf");
        assert_eq!(leaf & (P | US | A), P | US | A);
        // Accessed in every level, not yet dirty.
        for level in 1..=4 {
            assert_ne!(f.read(f.entry_addr(cr3, USER_VA, level)) & A, 0);
        }
        assert_eq!(f.read(f.entry_addr(cr3, USER_VA, 1)) & D, 0);
        check_invariants(&s, &f);

        let leaf = touch(&mut s, &mut f, USER_VA, PF_U | PF_W).unwrap();
        assert_eq!(leaf & (RW | D), RW | D);
        assert_ne!(f.read(f.entry_addr(cr3, USER_VA, 1)) & D, 0);
        // D only in the leaf.
        assert_eq!(f.read(f.entry_addr(cr3, USER_VA, 2)) & D, 0);
        assert_eq!(s.pinned_pages(), 1);
        check_invariants(&s, &f);
    });
}

#[test]
fn dirty_guest_page_is_mapped_writable_on_a_read() {
    let (mut s, mut f, cr3) = setup(false);
    f.map(cr3, USER_VA, FRAME | RWX_USER | A | D, RWX_USER);
    let leaf = touch(&mut s, &mut f, USER_VA, PF_U).unwrap();
    assert_eq!(leaf & RW, RW);
}

#[test]
fn accessed_and_dirty_are_written_back_only_when_they_change() {
    let (mut s, mut f, cr3) = setup(false);
    f.map(cr3, USER_VA, FRAME | RWX_USER, RWX_USER);
    touch(&mut s, &mut f, USER_VA, PF_U).unwrap();
    assert_eq!(f.gpa_writes, 4, "A set in four entries");
    s.flush_all(&mut f);
    touch(&mut s, &mut f, USER_VA, PF_U).unwrap();
    assert_eq!(f.gpa_writes, 4, "nothing changed the second time");
    touch(&mut s, &mut f, USER_VA, PF_U | PF_W).unwrap();
    assert_eq!(f.gpa_writes, 5, "only the leaf's D");
}

#[test]
fn effective_permissions_combine_all_levels() {
    let (mut s, mut f, cr3) = setup(false);
    // Read-only at the PD level, supervisor at the PDPT level, NX at the PML4 level.
    let pdpt = f.guest_page();
    let pd = f.guest_page();
    let pt = f.guest_page();
    f.write(cr3 + 8 * idx(USER_VA, 4), pdpt | P | RW | US | NX);
    f.write(pdpt + 8 * idx(USER_VA, 3), pd | P | RW);
    f.write(pd + 8 * idx(USER_VA, 2), pt | P | US);
    f.write(pt + 8 * idx(USER_VA, 1), FRAME | RWX_USER | D);
    let leaf = touch(&mut s, &mut f, USER_VA, 0).unwrap();
    assert_eq!(leaf & (RW | US | NX), NX);
    assert_eq!(touch(&mut s, &mut f, USER_VA, PF_W), Err(PF_P | PF_W));
    assert_eq!(touch(&mut s, &mut f, USER_VA, PF_U), Err(PF_P | PF_U));
    assert_eq!(touch(&mut s, &mut f, USER_VA, PF_I), Err(PF_P | PF_I));
    check_invariants(&s, &f);
}

#[test]
fn reflected_error_codes_match_hardware() {
    both(|la57| {
        let (mut s, mut f, cr3) = setup(la57);
        // Not present at the top level, then at the leaf level.
        assert_eq!(
            touch(&mut s, &mut f, USER_VA, PF_U | PF_W),
            Err(PF_U | PF_W)
        );
        f.map(cr3, USER_VA, 0, RWX_USER);
        assert_eq!(touch(&mut s, &mut f, USER_VA, PF_I), Err(PF_I));
        // Write to read-only, user to supervisor, fetch from NX.
        f.map(cr3, USER_VA, FRAME | P | US, RWX_USER);
        assert_eq!(
            touch(&mut s, &mut f, USER_VA, PF_U | PF_W),
            Err(PF_P | PF_U | PF_W)
        );
        assert_eq!(
            touch(&mut s, &mut f, USER_VA, PF_W),
            Err(PF_P | PF_W),
            "CR0.WP"
        );
        f.map(cr3, USER_VA, FRAME | P | RW, RWX_USER);
        let ea = f.entry_addr(cr3, USER_VA, 1);
        s.entry_changed(&mut f, ea).unwrap();
        assert_eq!(touch(&mut s, &mut f, USER_VA, PF_U), Err(PF_P | PF_U));
        f.map(cr3, USER_VA, FRAME | RWX_USER | NX, RWX_USER);
        let ea = f.entry_addr(cr3, USER_VA, 1);
        s.entry_changed(&mut f, ea).unwrap();
        assert_eq!(
            touch(&mut s, &mut f, USER_VA, PF_U | PF_I),
            Err(PF_P | PF_U | PF_I)
        );
        // A reflected fault sets no A bit in the leaf.
        assert_eq!(f.read(f.entry_addr(cr3, USER_VA, 1)) & A, 0);
        assert!(touch(&mut s, &mut f, USER_VA, PF_U).is_ok());
        check_invariants(&s, &f);
    });
}

#[test]
fn two_mib_pages_are_split_into_4k_leaves() {
    both(|la57| {
        let (mut s, mut f, cr3) = setup(la57);
        let va = 0xffff_8880_0020_0000;
        f.map(cr3, va, 0x20_0000 | P | RW | PS, P | RW);
        let a = touch(&mut s, &mut f, va + 0x3000, 0).unwrap();
        let b = touch(&mut s, &mut f, va + 0x1f_f000, PF_W).unwrap();
        assert_eq!(a & ADDR, ((0x20_3000 >> 12) + HOST_PFN_OFFSET) << 12);
        assert_eq!(b & ADDR, ((0x3f_f000 >> 12) + HOST_PFN_OFFSET) << 12);
        assert_eq!(a & RW, 0);
        assert_eq!(b & RW, RW);
        // D lands in the PD entry (the guest's leaf).
        assert_ne!(f.read(f.entry_addr(cr3, va, 2)) & D, 0);
        assert_eq!(s.pinned_pages(), 2);
        let tables = s.table_pages();
        check_invariants(&s, &f);

        // invlpg of any address in a 2 MiB page drops all of it.
        s.flush_one(&mut f, va + 0x10_0000);
        assert_eq!(s.pinned_pages(), 0);
        assert_eq!(s.table_pages(), tables - 1, "the split page table is freed");
        check_invariants(&s, &f);

        // SET_PMD on the 2 MiB entry drops it too.
        touch(&mut s, &mut f, va, 0).unwrap();
        let ea = f.entry_addr(cr3, va, 2);
        s.entry_changed(&mut f, ea).unwrap();
        assert_eq!(s.pinned_pages(), 0);
        check_invariants(&s, &f);
    });
}

#[test]
fn guest_caching_global_and_soft_bits_never_reach_the_shadow() {
    let (mut s, mut f, cr3) = setup(false);
    f.map(
        cr3,
        KERN_VA,
        FRAME | P | RW | D | G | PWT | PCD | PS /* PAT */ | (7 << 9),
        P | RW,
    );
    let leaf = touch(&mut s, &mut f, KERN_VA, PF_W).unwrap();
    assert_eq!(leaf & !ADDR, P | A | RW | D);
}

#[test]
fn bad_guest_entries_kill() {
    both(|la57| {
        let (mut s, mut f, cr3) = setup(la57);
        let kill = |s: &mut Shadow, f: &mut Fake, va| s.page_fault(f, va, 0).unwrap_err();

        f.map(cr3, USER_VA, FRAME | RWX_USER | (1 << 52), RWX_USER);
        assert!(matches!(
            kill(&mut s, &mut f, USER_VA),
            Kill::ReservedBits { level: 1, .. }
        ));
        f.map(cr3, USER_VA, FRAME | RWX_USER | (1 << 62), RWX_USER);
        assert!(matches!(
            kill(&mut s, &mut f, USER_VA),
            Kill::ReservedBits { level: 1, .. }
        ));
        f.map(cr3, USER_VA, (GUEST_PAGES << 12) | RWX_USER, RWX_USER);
        assert_eq!(
            kill(&mut s, &mut f, USER_VA),
            Kill::FrameBeyondMemory {
                va: USER_VA,
                gpa: GUEST_PAGES << 12
            }
        );
        // The last page is fine.
        f.map(cr3, USER_VA, ((GUEST_PAGES - 1) << 12) | RWX_USER, RWX_USER);
        assert!(touch(&mut s, &mut f, USER_VA, 0).is_ok());

        // PS in a PML4 entry; a 1 GiB page; a table beyond memory.
        let pml4e = f.entry_addr(cr3, USER_VA, 4);
        let good = f.read(pml4e);
        f.write(pml4e, good | PS);
        assert!(matches!(
            kill(&mut s, &mut f, USER_VA),
            Kill::ReservedBits { level: 4, .. }
        ));
        f.write(pml4e, good);
        let pdpte = f.entry_addr(cr3, USER_VA, 3);
        let good = f.read(pdpte);
        f.write(pdpte, 0x4000_0000 | P | RW | US | PS);
        assert!(matches!(
            kill(&mut s, &mut f, USER_VA),
            Kill::GiantPage { .. }
        ));
        f.write(pdpte, (GUEST_PAGES << 12) | P | RW | US);
        assert!(matches!(
            kill(&mut s, &mut f, USER_VA),
            Kill::TableBeyondMemory { .. }
        ));
        f.write(pdpte, good);
        // Reserved bits 13..=20 of a 2 MiB entry.
        let pde = f.entry_addr(cr3, USER_VA, 2);
        f.write(pde, 0x20_0000 | P | RW | US | PS | (1 << 13));
        assert!(matches!(
            kill(&mut s, &mut f, USER_VA),
            Kill::ReservedBits { level: 2, .. }
        ));
        // Nothing was shadowed by any of it.
        s.flush_all(&mut f);
        assert_eq!(s.pinned_pages(), 0);
        check_invariants(&s, &f);
    });
}

#[test]
fn switcher_slot_is_the_hosts() {
    let (mut s, mut f, cr3) = setup(false);
    let sw_va = 0xffff_0000_0000_0000 | ((SWITCHER_SLOT_4 as u64) << 39) | 0x5000;
    // Even if the guest maps it, the guest kernel may not touch it...
    f.map(cr3, sw_va, FRAME | P | RW, P | RW);
    assert_eq!(
        s.page_fault(&mut f, sw_va, PF_W),
        Err(Kill::Switcher { va: sw_va })
    );
    assert_eq!(
        s.translate(&mut f, sw_va, false),
        Err(Kill::Switcher { va: sw_va })
    );
    // ... while guest user code just sees an unmapped page.
    assert_eq!(
        s.page_fault(&mut f, sw_va, PF_U | PF_P),
        Ok(Fault::Reflect { err: PF_U })
    );
    // The slot holds the host's entry, which no flush, SET_P4D or teardown touches.
    let slot_entry = || f.shadow_entry(root_pa(&s), SWITCHER_SLOT_4);
    assert_eq!(slot_entry(), SWITCHER_ENTRY);
    s.flush_all(&mut f);
    s.entry_changed(&mut f, cr3 + 8 * SWITCHER_SLOT_4 as u64)
        .unwrap();
    s.flush_one(&mut f, sw_va);
    assert_eq!(f.shadow_entry(root_pa(&s), SWITCHER_SLOT_4), SWITCHER_ENTRY);
    // A new root gets it as soon as it is switched to.
    let cr3b = f.guest_page();
    s.set_cr3(&mut f, cr3b).unwrap();
    assert_eq!(f.shadow_entry(root_pa(&s), SWITCHER_SLOT_4), SWITCHER_ENTRY);
    s.set_switcher_entry(SWITCHER_ENTRY + 0x1000);
    assert_eq!(
        f.shadow_entry(root_pa(&s), SWITCHER_SLOT_4),
        SWITCHER_ENTRY + 0x1000
    );
    check_invariants(&s, &f);
    s.destroy(&mut f);
    assert!(f.tables.is_empty());
}

#[test]
fn five_level_host_separates_the_halves() {
    let (mut s, mut f, cr3) = setup(true);
    let low = 0x0000_7fff_ffff_f000;
    let high = 0xffff_ffff_ffff_f000;
    // Same PML4/PDPT/PD/PT indices in both halves except the PML4 one (255 vs 511).
    f.map(cr3, low, FRAME | RWX_USER, RWX_USER);
    f.map(cr3, high, (FRAME + 0x1000) | P | RW, P | RW);
    let l = touch(&mut s, &mut f, low, PF_U).unwrap();
    let h = touch(&mut s, &mut f, high, 0).unwrap();
    assert_eq!((l & ADDR) >> 12, (FRAME >> 12) + HOST_PFN_OFFSET);
    assert_eq!((h & ADDR) >> 12, (FRAME >> 12) + 1 + HOST_PFN_OFFSET);
    let root = root_pa(&s);
    let lo4 = f.shadow_entry(root, 0) & ADDR;
    let hi4 = f.shadow_entry(root, 511) & ADDR;
    assert!(lo4 != 0 && hi4 != 0 && lo4 != hi4, "separate PML4s");
    assert_ne!(f.shadow_entry(lo4, 255), 0);
    assert_eq!(f.shadow_entry(lo4, 511), 0);
    assert_ne!(f.shadow_entry(hi4, 511), 0);
    assert_eq!(f.shadow_entry(hi4, 255), 0);
    assert_eq!(f.shadow_entry(root, SWITCHER_SLOT_5), SWITCHER_ENTRY);
    for i in (1..511).filter(|&i| i != SWITCHER_SLOT_5) {
        assert_eq!(f.shadow_entry(root, i), 0);
    }
    // A 57-bit canonical but 48-bit non-canonical address is #GP for a 4-level guest.
    assert_eq!(
        s.page_fault(&mut f, 0x0001_0000_0000_0000, PF_U),
        Ok(Fault::GeneralProtection)
    );
    assert_eq!(
        s.page_fault(&mut f, 0xff00_0000_0000_0000, 0),
        Ok(Fault::GeneralProtection)
    );
    // flush_user frees the whole lower PML4; the upper one stays.
    let tables = s.table_pages();
    s.flush_user(&mut f);
    assert_eq!(f.shadow_entry(root, 0), 0);
    assert_eq!(f.shadow_entry(root, 511) & ADDR, hi4);
    assert_eq!(s.table_pages(), tables - 4);
    check_invariants(&s, &f);
}

#[test]
fn four_level_host_root_mirrors_guest_pml4() {
    let (mut s, mut f, cr3) = setup(false);
    let low = 0x0000_7fff_ffff_f000;
    let high = 0xffff_ffff_ffff_f000;
    f.map(cr3, low, FRAME | RWX_USER, RWX_USER);
    f.map(cr3, high, (FRAME + 0x1000) | P | RW, P | RW);
    touch(&mut s, &mut f, low, PF_U).unwrap();
    touch(&mut s, &mut f, high, 0).unwrap();
    let root = root_pa(&s);
    assert_ne!(f.shadow_entry(root, 255), 0);
    assert_ne!(f.shadow_entry(root, 511), 0);
    assert_eq!(f.shadow_entry(root, 0), 0);
    check_invariants(&s, &f);
}

#[test]
fn flushes_drop_what_they_say() {
    both(|la57| {
        let (mut s, mut f, cr3) = setup(la57);
        let cr3b = f.guest_page();
        for cr3 in [cr3, cr3b] {
            f.map(cr3, USER_VA, FRAME | RWX_USER, RWX_USER);
            f.map(cr3, USER_VA + 0x1000, FRAME | RWX_USER, RWX_USER);
            f.map(cr3, KERN_VA, FRAME | P | RW, P | RW);
        }
        let fill = |s: &mut Shadow, f: &mut Fake| {
            for va in [USER_VA, USER_VA + 0x1000, KERN_VA] {
                touch(s, f, va, 0).unwrap();
            }
        };
        fill(&mut s, &mut f);
        s.set_cr3(&mut f, cr3b).unwrap();
        fill(&mut s, &mut f);
        assert_eq!(s.pinned_pages(), 6);

        // A user address: the current address space only, that page only.
        s.flush_one(&mut f, USER_VA);
        assert_eq!(s.pinned_pages(), 5);
        assert!(cpu(&s, &f, USER_VA, 0).is_err());
        assert!(cpu(&s, &f, USER_VA + 0x1000, 0).is_ok());
        // A kernel address: every address space.
        s.flush_one(&mut f, KERN_VA);
        assert_eq!(s.pinned_pages(), 3);
        // Non-canonical or switcher addresses are ignored.
        s.flush_one(&mut f, 0x8000_0000_0000);
        assert_eq!(s.pinned_pages(), 3);
        check_invariants(&s, &f);

        // Switching back drops the user half of the root switched to, keeps its kernel half.
        fill(&mut s, &mut f);
        s.set_cr3(&mut f, cr3).unwrap();
        fill(&mut s, &mut f);
        s.set_cr3(&mut f, cr3b).unwrap();
        assert!(cpu(&s, &f, USER_VA + 0x1000, 0).is_err());
        assert!(cpu(&s, &f, KERN_VA, 0).is_ok());
        assert_eq!(s.pinned_pages(), 4);
        check_invariants(&s, &f);

        fill(&mut s, &mut f);
        assert_eq!(s.pinned_pages(), 6);
        s.flush_user(&mut f);
        assert_eq!(s.pinned_pages(), 4);
        assert!(cpu(&s, &f, KERN_VA, 0).is_ok());
        s.flush_all(&mut f);
        assert_eq!(s.pinned_pages(), 0);
        // Only the roots remain.
        assert_eq!(s.table_pages(), 2);
        check_invariants(&s, &f);
    });
}

#[test]
fn entry_changed_drops_exactly_the_derived_entries() {
    both(|la57| {
        let (mut s, mut f, cr3) = setup(la57);
        let cr3b = f.guest_page();
        // Two address spaces sharing the kernel PDPT (as Linux does).
        f.map(cr3, KERN_VA, FRAME | P | RW, P | RW);
        f.map(cr3, KERN_VA + 0x1000, FRAME | P | RW, P | RW);
        f.map(cr3, KERN_VA + 0x20_0000, FRAME | P | RW, P | RW);
        f.map(cr3, KERN_VA + 0x4000_0000, FRAME | P | RW, P | RW);
        f.map(cr3, USER_VA, FRAME | RWX_USER, RWX_USER);
        let k = idx(KERN_VA, 4);
        f.write(cr3b + 8 * k, f.read(cr3 + 8 * k));
        f.map(cr3b, USER_VA, FRAME | RWX_USER, RWX_USER);
        let vas = [
            KERN_VA,
            KERN_VA + 0x1000,
            KERN_VA + 0x20_0000,
            KERN_VA + 0x4000_0000,
        ];
        let fill = |s: &mut Shadow, f: &mut Fake| {
            for cr3 in [cr3b, cr3] {
                s.set_cr3(f, cr3).unwrap();
                for va in vas.into_iter().chain([USER_VA]) {
                    touch(s, f, va, 0).unwrap();
                }
            }
        };
        fill(&mut s, &mut f);
        assert_eq!(s.pinned_pages(), 10);
        check_invariants(&s, &f);

        // SET_PTE: that leaf, in both roots; the page table stays.
        let tables = s.table_pages();
        let ea = f.entry_addr(cr3, KERN_VA, 1);
        s.entry_changed(&mut f, ea).unwrap();
        assert_eq!(s.pinned_pages(), 8);
        assert_eq!(s.table_pages(), tables);
        assert!(cpu(&s, &f, KERN_VA, 0).is_err());
        assert!(cpu(&s, &f, KERN_VA + 0x1000, 0).is_ok());
        check_invariants(&s, &f);

        // SET_PMD: the page table below (two leaves in each root).
        fill(&mut s, &mut f);
        let ea = f.entry_addr(cr3, KERN_VA, 2);
        s.entry_changed(&mut f, ea).unwrap();
        assert_eq!(s.pinned_pages(), 6);
        assert_eq!(s.table_pages(), tables - 2);
        assert!(cpu(&s, &f, KERN_VA + 0x20_0000, 0).is_ok());
        check_invariants(&s, &f);

        // SET_PUD: the PD and everything below it (three leaves each).
        fill(&mut s, &mut f);
        let ea = f.entry_addr(cr3, KERN_VA, 3);
        s.entry_changed(&mut f, ea).unwrap();
        assert_eq!(s.pinned_pages(), 4);
        assert!(cpu(&s, &f, KERN_VA + 0x4000_0000, 0).is_ok());
        check_invariants(&s, &f);

        // SET_P4D of cr3's kernel slot: only cr3's root derives from that entry.
        fill(&mut s, &mut f);
        s.entry_changed(&mut f, cr3 + 8 * k).unwrap();
        assert_eq!(s.pinned_pages(), 6);
        assert!(cpu(&s, &f, USER_VA, 0).is_ok());
        check_invariants(&s, &f);

        // An entry nothing was derived from; then the address checks.
        s.entry_changed(&mut f, FRAME + 8).unwrap();
        assert_eq!(s.pinned_pages(), 6);
        assert_eq!(
            s.entry_changed(&mut f, cr3 + 4),
            Err(Kill::BadEntry { gpa: cr3 + 4 })
        );
        assert!(s.entry_changed(&mut f, GUEST_PAGES << 12).is_err());
        assert!(s.entry_changed(&mut f, u64::MAX - 7).is_err());
    });
}

#[test]
fn a_stale_intermediate_table_is_rebuilt_from_the_guests_current_one() {
    let (mut s, mut f, cr3) = setup(false);
    f.map(cr3, USER_VA, FRAME | RWX_USER, RWX_USER);
    touch(&mut s, &mut f, USER_VA, 0).unwrap();
    // The guest points the PD entry at a new page table and flushes only USER_VA.
    let pde = f.entry_addr(cr3, USER_VA, 2);
    let new_pt = f.guest_page();
    f.write(
        new_pt + 8 * idx(USER_VA + 0x1000, 1),
        (FRAME + 0x1000) | RWX_USER,
    );
    f.write(pde, new_pt | RWX_USER);
    s.flush_one(&mut f, USER_VA);
    // The next fault below that PD entry replaces the shadow page table derived from the old one.
    touch(&mut s, &mut f, USER_VA + 0x1000, 0).unwrap();
    check_invariants(&s, &f);
    // And SET_PTE on the new table now reaches the new leaf.
    s.entry_changed(&mut f, new_pt + 8 * idx(USER_VA + 0x1000, 1))
        .unwrap();
    assert_eq!(s.pinned_pages(), 0);
}

#[test]
fn root_cache_evicts_the_least_recently_used_and_tears_it_down() {
    both(|la57| {
        let (mut s, mut f, first) = setup(la57);
        let mut cr3s = vec![first];
        for _ in 1..MAX_ROOTS_T {
            cr3s.push(f.guest_page());
        }
        for &c in &cr3s {
            f.map(c, KERN_VA, FRAME | P | RW, P | RW);
            s.set_cr3(&mut f, c).unwrap();
            touch(&mut s, &mut f, KERN_VA, 0).unwrap();
        }
        assert_eq!(s.cached_roots(), MAX_ROOTS_T);
        // Use the first again, so the second is the least recently used.
        s.set_cr3(&mut f, first).unwrap();
        let extra = f.guest_page();
        f.map(extra, KERN_VA, FRAME | P | RW, P | RW);
        s.set_cr3(&mut f, extra).unwrap();
        assert_eq!(s.cached_roots(), MAX_ROOTS_T);
        assert!(s.find_root(cr3s[1]).is_none());
        assert!(s.find_root(first).is_some());
        assert_eq!(s.pinned_pages(), MAX_ROOTS_T as u64 - 1);
        check_invariants(&s, &f);
    });
}

const MAX_ROOTS_T: usize = crate::shadow::MAX_ROOTS;

#[test]
fn release_forgets_an_address_space() {
    let (mut s, mut f, cr3) = setup(false);
    let other = f.guest_page();
    for c in [cr3, other] {
        f.map(c, KERN_VA, FRAME | P | RW, P | RW);
        s.set_cr3(&mut f, c).unwrap();
        touch(&mut s, &mut f, KERN_VA, 0).unwrap();
    }
    s.release(&mut f, cr3).unwrap();
    assert_eq!(s.cached_roots(), 1);
    assert_eq!(s.pinned_pages(), 1);
    // Releasing the current one empties it but keeps it loadable.
    s.release(&mut f, other).unwrap();
    assert_eq!(s.cached_roots(), 1);
    assert_eq!(s.pinned_pages(), 0);
    assert!(s.root_pa().is_some());
    touch(&mut s, &mut f, KERN_VA, 0).unwrap();
    // Unknown is fine, invalid is not.
    s.release(&mut f, FRAME).unwrap();
    assert_eq!(
        s.release(&mut f, cr3 + 8),
        Err(Kill::BadRoot { gpa: cr3 + 8 })
    );
    assert!(s.release(&mut f, GUEST_PAGES << 12).is_err());
    check_invariants(&s, &f);
}

#[test]
fn set_cr3_validates() {
    let (mut s, mut f, cr3) = setup(false);
    assert_eq!(
        s.set_cr3(&mut f, cr3 + 1),
        Err(Kill::BadRoot { gpa: cr3 + 1 })
    );
    assert!(s.set_cr3(&mut f, GUEST_PAGES << 12).is_err());
    assert_eq!(s.current_pml4(), Some(cr3));
}

#[test]
fn destroy_returns_everything() {
    both(|la57| {
        let (mut s, mut f, first) = setup(la57);
        for i in 0..12u64 {
            let c = if i == 0 { first } else { f.guest_page() };
            f.map(c, KERN_VA + i * 0x20_0000, FRAME | P | RW, P | RW);
            f.map(c, USER_VA, FRAME | RWX_USER, RWX_USER);
            s.set_cr3(&mut f, c).unwrap();
            touch(&mut s, &mut f, KERN_VA + i * 0x20_0000, 0).unwrap();
            touch(&mut s, &mut f, USER_VA, 0).unwrap();
        }
        assert!(s.pinned_pages() > 0);
        s.destroy(&mut f);
        assert_eq!(s.pinned_pages(), 0);
        assert_eq!(s.table_pages(), 0);
        assert!(f.pins.is_empty());
        assert!(f.tables.is_empty());
        assert_eq!(s.root_pa(), None);
        assert_eq!(s.page_fault(&mut f, KERN_VA, 0), Err(Kill::NoPageTable));
        // It can start over.
        s.set_cr3(&mut f, first).unwrap();
        touch(&mut s, &mut f, USER_VA, 0).unwrap();
        s.destroy(&mut f);
        assert!(f.pins.is_empty() && f.tables.is_empty());
    });
}

#[test]
fn table_budget_flushes_instead_of_failing() {
    both(|la57| {
        let mut f = Fake::new(GUEST_PAGES);
        let mut s = Shadow::new(Config {
            max_tables: 1, // clamped up to MIN_TABLES
            ..config(la57)
        });
        let cr3 = f.guest_page();
        s.set_cr3(&mut f, cr3).unwrap();
        // Each page in its own 1 GiB region needs three new tables.
        for i in 0..40u64 {
            let va = KERN_VA + i * 0x4000_0000;
            f.map(cr3, va, FRAME | P | RW, P | RW);
            touch(&mut s, &mut f, va, 0).unwrap();
            assert!(s.table_pages() as usize <= MIN_TABLES);
            check_invariants(&s, &f);
        }
        // Old translations went in a flush; the last one is there.
        assert!(s.pinned_pages() < 40);
        assert!(cpu(&s, &f, KERN_VA + 39 * 0x4000_0000, 0).is_ok());
    });
}

#[test]
fn host_out_of_memory() {
    let (mut s, mut f, cr3) = setup(false);
    f.map(cr3, KERN_VA, FRAME | P | RW, P | RW);
    f.map(cr3, USER_VA, FRAME | RWX_USER, RWX_USER);
    touch(&mut s, &mut f, KERN_VA, 0).unwrap();
    // Room for one more table, three needed: flush everything, then it fits.
    assert_eq!(f.tables.len(), 4);
    f.table_cap = Some(5);
    touch(&mut s, &mut f, USER_VA, 0).unwrap();
    assert!(cpu(&s, &f, KERN_VA, 0).is_err(), "flushed to make room");
    check_invariants(&s, &f);
    // None at all: the guest dies, and nothing leaks.
    s.flush_all(&mut f);
    f.table_cap = Some(1);
    assert_eq!(s.page_fault(&mut f, USER_VA, 0), Err(Kill::OutOfMemory));
    let other = f.guest_page();
    assert_eq!(s.set_cr3(&mut f, other), Err(Kill::OutOfMemory));
    check_invariants(&s, &f);
}

#[test]
fn translate_walks_without_touching_the_shadow() {
    both(|la57| {
        let (s, mut f, cr3) = setup(la57);
        f.map(cr3, KERN_VA, FRAME | P | RW, P | RW);
        f.map(cr3, KERN_VA + 0x1000, FRAME | P, P | RW);
        f.map(cr3, 0xffff_8880_0020_0000, 0x20_0000 | P | RW | PS, P | RW);
        let tables = s.table_pages();
        assert_eq!(
            s.translate(&mut f, KERN_VA + 0x123, false),
            Ok(Translation::Mapped(FRAME + 0x123))
        );
        assert_eq!(f.read(f.entry_addr(cr3, KERN_VA, 1)) & (A | D), A);
        assert_eq!(
            s.translate(&mut f, KERN_VA + 8, true),
            Ok(Translation::Mapped(FRAME + 8))
        );
        assert_eq!(f.read(f.entry_addr(cr3, KERN_VA, 1)) & (A | D), A | D);
        assert_eq!(
            s.translate(&mut f, KERN_VA + 0x1000, true),
            Ok(Translation::Fault { err: PF_P | PF_W })
        );
        assert_eq!(
            s.translate(&mut f, KERN_VA + 0x2000, true),
            Ok(Translation::Fault { err: PF_W })
        );
        assert_eq!(
            s.translate(&mut f, 0xffff_8880_0023_4567, false),
            Ok(Translation::Mapped(0x23_4567))
        );
        assert_eq!(
            s.translate(&mut f, 0x8000_0000_0000, false),
            Err(Kill::NonCanonical {
                va: 0x8000_0000_0000
            })
        );
        assert_eq!(s.table_pages(), tables);
        assert_eq!(s.pinned_pages(), 0);
    });
}

#[test]
fn smep_smap_and_protection_keys_are_the_guests_to_see() {
    let (mut s, mut f, cr3) = setup(false);
    f.map(cr3, USER_VA, FRAME | RWX_USER, RWX_USER);
    // First fault: a supervisor fetch from a user page fills the shadow.
    assert_eq!(s.page_fault(&mut f, USER_VA, PF_I), Ok(Fault::Fixed));
    // The retry faults again (SMEP), with the shadow unchanged: the guest sees it.
    assert_eq!(
        s.page_fault(&mut f, USER_VA, PF_P | PF_I),
        Ok(Fault::Reflect { err: PF_P | PF_I })
    );
    // A supervisor read (SMAP) likewise.
    assert_eq!(
        s.page_fault(&mut f, USER_VA, PF_P),
        Ok(Fault::Reflect { err: PF_P })
    );
    // A protection-key fault from user mode keeps its PK bit.
    assert_eq!(
        s.page_fault(&mut f, USER_VA, PF_P | PF_U | PF_PK),
        Ok(Fault::Reflect {
            err: PF_P | PF_U | PF_PK
        })
    );
    // A user fault the shadow already satisfies was spurious: retry.
    assert_eq!(s.page_fault(&mut f, USER_VA, PF_U), Ok(Fault::Fixed));
    assert_eq!(s.pinned_pages(), 1);
    check_invariants(&s, &f);
    // A reserved-bit fault can only be our bug.
    assert_eq!(
        s.page_fault(&mut f, USER_VA, PF_P | PF_RSVD),
        Err(Kill::ShadowReserved { va: USER_VA })
    );
}

#[test]
fn kill_reasons_read_well() {
    use std::fmt::Write;
    let mut out = String::new();
    write!(
        out,
        "{}",
        Kill::FrameBeyondMemory {
            va: 0x1000,
            gpa: 0x8000_0000
        }
    )
    .unwrap();
    assert_eq!(
        out,
        "guest page table maps guest-physical 0x80000000 beyond its memory (at 0x1000)"
    );
    // Every reason fits the launcher's line through a FixedBuf without tripping anything.
    let mut raw = [0u8; 96];
    let mut b = crate::fixedbuf::FixedBuf::new(&mut raw);
    write!(
        b,
        "{}",
        Kill::ReservedBits {
            va: u64::MAX,
            level: 4,
            entry: u64::MAX
        }
    )
    .unwrap();
    assert!(!b.is_empty());
}

#[test]
fn shadow_size_is_as_documented() {
    // The module comment promises "about 64 KiB"; keep it honest.
    let size = std::mem::size_of::<Shadow>();
    assert!(size <= 66 * 1024, "{size}");
}
