//! Paging hypercalls: publishing new tables at each level (SET_P4D/PUD/PMD/PTE), changing a
//! present PTE, 2 MiB pages, the flushes, a second address space, and the async ring.
//!
//! Every test reads its pages through the new mapping and checks a marker written through the
//! direct map, so a stale or wrong shadow translation shows up as the wrong marker (or a fault).

use super::{ensure, ensure_eq, fail, peek, Detail, TestResult};
use crate::paging::{self, Entry};
use crate::{boot, hcall, shared};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use lg_core::abi::{hcall as nr, vector, PAGE_SIZE};
use lgtest::pagetable::{self as pt, Level};
use lgtest::{virt_to_phys, KERNEL_BASE};

const GIB: u64 = 1 << 30;
const LARGE: u64 = 1 << 21;

/// PML4[1]: the `set-*` tests, each publishing a subtree one level lower than the one before.
const LEVELS: u64 = 0x0000_0080_0000_0000;
const P4D_VA: u64 = LEVELS;
const PUD_VA: u64 = LEVELS + GIB;
const PMD_VA: u64 = LEVELS + GIB + LARGE;
const PTE_VA: u64 = LEVELS + GIB + LARGE + PAGE_SIZE;
const LARGE_VA: u64 = LEVELS + GIB + 2 * LARGE;
/// PML4[2]: mapped only in the second address space of `new-pgtable`.
const OTHER_SPACE_VA: u64 = 0x0000_0100_0000_0000;
/// PML4[3]: fresh pages for any test (`scratch_va`).
const SCRATCH: u64 = 0x0000_0180_0000_0000;
/// PML4[510]: an upper-half ("kernel") address outside the direct map.
const UPPER_VA: u64 = 0xffff_ff00_0000_0000;

/// A data page: present, writable, not executable.
pub const DATA: u64 = pt::PRESENT | pt::WRITABLE | pt::NO_EXECUTE;

static NEXT_SCRATCH: AtomicU64 = AtomicU64::new(SCRATCH);

/// A page-aligned virtual address nothing has mapped yet.
pub fn scratch_va() -> u64 {
    NEXT_SCRATCH.fetch_add(PAGE_SIZE, Relaxed)
}

/// The page tables everything runs on.
pub fn root() -> u64 {
    boot::boot_pml4_gpa()
}

/// `va` may be used for a test mapping: canonical and outside the switcher's range.
pub fn usable(va: u64, len: u64) -> TestResult {
    ensure!(
        pt::is_canonical(va) && !paging::in_reserved(va, len),
        "test address {va:#x} is in the host's reserved range"
    );
    Ok(())
}

/// A fresh frame whose first and last words hold a marker unique to it; returns both.
pub fn marked_frame() -> Result<(u64, u64), Detail> {
    let Some(pa) = paging::alloc_frame() else {
        fail!("out of memory ({} frames left)", paging::free_frames());
    };
    let marker = 0x3a9c_0000_0000_0000 ^ pa;
    // SAFETY: a fresh frame of ours.
    unsafe {
        paging::write_phys(pa, marker);
        paging::write_phys(pa + PAGE_SIZE - 8, marker);
    }
    Ok((pa, marker))
}

/// Reading the page at `va` shows `marker` at both ends.
pub fn check_marker(va: u64, marker: u64, what: &str) -> TestResult {
    // SAFETY: the caller mapped `va` to one of its marked frames.
    let (first, last) = unsafe { (peek(va), peek(va + PAGE_SIZE - 8)) };
    ensure!(
        first == marker && last == marker,
        "{what}: read {first:#x}/{last:#x} at {va:#x}, want {marker:#x}"
    );
    Ok(())
}

/// Map `va` to a new marked page, expecting the new subtree to be published at `want`.
pub fn map_marked(va: u64, flags: u64, want: Option<Level>) -> Result<(Entry, u64), Detail> {
    usable(va, PAGE_SIZE)?;
    let (pa, marker) = marked_frame()?;
    let level = match paging::map(root(), va, Level::Pte, pa | flags) {
        Ok(level) => level,
        Err(e) => fail!("mapping {va:#x}: {e:?}"),
    };
    if let Some(want) = want {
        ensure!(
            level == want,
            "new tables published at {}, want {}",
            level.name(),
            want.name()
        );
    }
    let Some(pte) = paging::lookup(root(), va, Level::Pte) else {
        fail!("no PTE for {va:#x} after mapping it");
    };
    Ok((pte, marker))
}

/// Publish a fresh mapping at `level`, read through it, then point the PTE at another frame
/// with SET_PTE and read the new frame.
fn publish_then_change(va: u64, level: Level) -> TestResult {
    let (pte, marker) = map_marked(va, DATA, Some(level))?;
    check_marker(va, marker, "through the new mapping")?;
    let (pa2, marker2) = marked_frame()?;
    pte.set(Level::Pte, pa2 | DATA);
    check_marker(va, marker2, "after SET_PTE to another frame")
}

pub fn set_p4d() -> TestResult {
    publish_then_change(P4D_VA, Level::P4d)
}

pub fn set_pud() -> TestResult {
    publish_then_change(PUD_VA, Level::Pud)
}

pub fn set_pmd() -> TestResult {
    publish_then_change(PMD_VA, Level::Pmd)
}

pub fn set_pte() -> TestResult {
    publish_then_change(PTE_VA, Level::Pte)
}

/// A value to find through a 2 MiB alias of the kernel image.
static ALIAS_PROBE: AtomicU64 = AtomicU64::new(0x2a11_a5ed_0000_0001);

/// SET_PMD with a 2 MiB page: alias the 2 MiB the kernel is loaded in (read-only) and find one
/// of its statics there; then move the PMD to the first 2 MiB and find the zero page's boot flag.
pub fn set_pmd_large() -> TestResult {
    usable(LARGE_VA, LARGE)?;
    let image_phys = virt_to_phys(boot::image_start()) & !(LARGE - 1);
    let flags = pt::PRESENT | pt::LARGE | pt::NO_EXECUTE;
    match paging::map(root(), LARGE_VA, Level::Pmd, image_phys | flags) {
        Ok(Level::Pmd) => {}
        Ok(l) => fail!("new tables published at {}, want PMD", l.name()),
        Err(e) => fail!("mapping {LARGE_VA:#x}: {e:?}"),
    }
    let offset = virt_to_phys(ALIAS_PROBE.as_ptr() as u64) - image_phys;
    ensure!(
        offset < LARGE,
        "the kernel's statics are not in its first 2 MiB"
    );
    // SAFETY: LARGE_VA maps the kernel's own first 2 MiB, read-only; the static is a word in it.
    let got = unsafe { peek(LARGE_VA + offset) };
    ensure_eq!(
        got,
        ALIAS_PROBE.load(Relaxed),
        "static through the 2 MiB alias"
    );

    let Some(pmd) = paging::lookup(root(), LARGE_VA, Level::Pmd) else {
        fail!("no PMD entry after mapping");
    };
    pmd.set(Level::Pmd, flags); // physical 0
    let boot_flag_word =
        lg_core::abi::ZERO_PAGE_GPA + (lg_core::abi::zero_page::BOOT_FLAG & !7) as u64;
    // SAFETY: now maps guest-physical [0, 2 MiB) read-only; the zero page is inside.
    let word = unsafe { peek(LARGE_VA + boot_flag_word) };
    let shift = 8 * (lg_core::abi::zero_page::BOOT_FLAG % 8);
    ensure_eq!(
        (word >> shift) & 0xffff,
        0xaa55,
        "zero page boot_flag after SET_PMD"
    );
    Ok(())
}

/// Change a present PTE without telling the host, flush with `flush`, and see the new frame.
fn change_then_flush(va: u64, flush: impl FnOnce(u64)) -> TestResult {
    let (pte, marker) = map_marked(va, DATA, None)?;
    check_marker(va, marker, "through the new mapping")?;
    let (pa2, marker2) = marked_frame()?;
    pte.set_quiet(pa2 | DATA);
    flush(va);
    check_marker(va, marker2, "after the flush")
}

pub fn flush_one() -> TestResult {
    change_then_flush(scratch_va(), hcall::flush_one)
}

pub fn flush_tlb_user() -> TestResult {
    change_then_flush(scratch_va(), |_| hcall::flush_tlb(nr::FLUSH_USER))
}

pub fn flush_tlb_all() -> TestResult {
    change_then_flush(UPPER_VA, |_| hcall::flush_tlb(nr::FLUSH_ALL))
}

/// A second PML4 sharing the kernel's half and mapping one page of its own: switch to it, read
/// the page, switch back (where the page is not mapped), release it.
pub fn new_pgtable() -> TestResult {
    usable(OTHER_SPACE_VA, PAGE_SIZE)?;
    let Some(other) = paging::alloc_frame() else {
        fail!("out of memory");
    };
    let kernel = Level::P4d.index(KERNEL_BASE) as u64;
    // SAFETY: both are PML4 entries of tables we own; `other` is not in use yet.
    let (boot_entry, other_entry) = unsafe {
        (
            Entry::at(root() + 8 * kernel),
            Entry::at(other + 8 * kernel),
        )
    };
    other_entry.set_quiet(boot_entry.get());
    let (pa, marker) = marked_frame()?;
    if let Err(e) = paging::map(other, OTHER_SPACE_VA, Level::Pte, pa | DATA) {
        fail!("mapping {OTHER_SPACE_VA:#x}: {e:?}");
    }

    // SAFETY: `other` maps the kernel half exactly as the boot tables do.
    unsafe { hcall::new_pgtable(other) };
    let seen = check_marker(OTHER_SPACE_VA, marker, "in the second address space");
    // SAFETY: back to the boot tables.
    unsafe { hcall::new_pgtable(root()) };
    seen?;

    // SAFETY: the read faults (nothing is mapped there in the boot tables) and is skipped.
    let p = unsafe {
        probe!(u64::from(vector::PF), ["mov ({va}), {x}"], va = in(reg) OTHER_SPACE_VA, x = out(reg) _)
    };
    hcall::release_pgtable(other);
    ensure!(
        p.trap.is_some(),
        "{OTHER_SPACE_VA:#x} still readable after switching back"
    );
    Ok(())
}

/// A SET_PTE queued in the async ring takes effect at FLUSH_ASYNC, and the slot is freed.
pub fn flush_async() -> TestResult {
    let va = scratch_va();
    let (pte, marker) = map_marked(va, DATA, None)?;
    check_marker(va, marker, "through the new mapping")?;
    let (pa2, marker2) = marked_frame()?;
    pte.set_quiet(pa2 | DATA);
    let slot = shared::queue_async(nr::SET_PTE, [pte.gpa(), pa2 | DATA, 0, 0, 0]);
    hcall::flush_async();
    ensure!(
        shared::async_slot_done(slot),
        "ring slot {slot} not consumed"
    );
    check_marker(va, marker2, "after the queued SET_PTE")
}
