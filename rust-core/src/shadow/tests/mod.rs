//! A fake host for shadow paging: guest memory in a `Vec`, pins counted per frame, shadow tables in
//! boxes with made-up physical addresses; plus a software MMU that walks the shadow the way the CPU
//! does, and an independent reference walk of the guest tables.

mod random;
mod unit;

use std::collections::HashMap;
use std::ptr::NonNull;

use super::table::{A, ADDR, D, ENTRIES, NX, P, PS, RW, US};
use super::walk::{PF_I, PF_P, PF_U, PF_W};
use super::{Config, MemFault, Shadow, ShadowHost, TablePage, NO_SRC};

/// Host frame = guest frame + this, so a test can tell a translated frame from an untranslated one.
pub const HOST_PFN_OFFSET: u64 = 0x10_0000;
/// Fake physical addresses of shadow table pages start here (far from any leaf frame).
const TABLE_PA_BASE: u64 = 0x40_0000_0000;
/// Guest memory in the tests: 8 MiB.
pub const GUEST_PAGES: u64 = 2048;
pub const SWITCHER_SLOT_4: usize = 400;
pub const SWITCHER_SLOT_5: usize = 300;
/// What the tests install in the switcher slot (not a table the fake knows: never walked).
pub const SWITCHER_ENTRY: u64 = 0x7777_7000 | P | RW | A;

pub struct Fake {
    pub mem: Vec<u8>,
    pub pins: HashMap<u64, u64>,
    pub tables: HashMap<u64, NonNull<[u64; ENTRIES]>>,
    next_pa: u64,
    /// Guest pages handed out by `guest_page` (a bump allocator from 1 MiB).
    next_guest_page: u64,
    /// Make `alloc_table` fail while this many tables are out (host memory pressure).
    pub table_cap: Option<usize>,
    pub gpa_writes: usize,
    pub allocs: usize,
}

impl Fake {
    pub fn new(pages: u64) -> Self {
        Fake {
            mem: vec![0; (pages * 4096) as usize],
            pins: HashMap::new(),
            tables: HashMap::new(),
            next_pa: TABLE_PA_BASE,
            next_guest_page: 0x10_0000,
            table_cap: None,
            gpa_writes: 0,
            allocs: 0,
        }
    }

    pub fn read(&self, gpa: u64) -> u64 {
        let g = gpa as usize;
        u64::from_le_bytes(self.mem[g..g + 8].try_into().unwrap())
    }

    pub fn write(&mut self, gpa: u64, val: u64) {
        let g = gpa as usize;
        self.mem[g..g + 8].copy_from_slice(&val.to_le_bytes());
    }

    /// A fresh zeroed guest page (for guest page tables).
    pub fn guest_page(&mut self) -> u64 {
        let p = self.next_guest_page;
        self.next_guest_page += 4096;
        assert!(p < 0x40_0000, "test guest ran out of table pages");
        p
    }

    /// Map `va` in the guest tables rooted at `cr3`: `leaf` is written at level 1 (or at level 2
    /// when it has PS); missing tables are created with `table_flags`.
    pub fn map(&mut self, cr3: u64, va: u64, leaf: u64, table_flags: u64) {
        let leaf_level = if leaf & PS != 0 { 2 } else { 1 };
        let mut table = cr3;
        for level in (leaf_level + 1..=4).rev() {
            let ea = table + 8 * idx(va, level);
            let e = self.read(ea);
            table = if e & P != 0 {
                e & ADDR
            } else {
                let t = self.guest_page();
                self.write(ea, t | table_flags);
                t
            };
        }
        self.write(table + 8 * idx(va, leaf_level), leaf);
    }

    /// Guest-physical address of the entry for `va` at `level` (following present entries).
    pub fn entry_addr(&self, cr3: u64, va: u64, level: u32) -> u64 {
        let mut table = cr3;
        for l in (level + 1..=4).rev() {
            table = self.read(table + 8 * idx(va, l)) & ADDR;
        }
        table + 8 * idx(va, level)
    }

    fn table(&self, pa: u64) -> Option<&[u64; ENTRIES]> {
        // SAFETY (test): the pointer came from Box::into_raw and stays valid until free_table.
        self.tables.get(&pa).map(|p| unsafe { p.as_ref() })
    }

    /// The shadow entry at `index` of the table at `pa` (0 if there is no such table).
    pub fn shadow_entry(&self, pa: u64, index: usize) -> u64 {
        self.table(pa).map_or(0, |t| t[index])
    }

    /// The CPU's walk of the shadow rooted at `root_pa` for `va` (hardware indexing, 57-bit on a
    /// 5-level host). Intermediate entries must be present tables the fake handed out, permissive
    /// (P|RW|US), without NX. Returns the leaf entry, or the CPU's error code.
    pub fn mmu(&self, root_pa: u64, la57: bool, va: u64, err_access: u64) -> Result<u64, u64> {
        let top = if la57 { 5 } else { 4 };
        let mut table = root_pa;
        for level in (1..=top).rev() {
            let i = ((va >> (12 + 9 * (level - 1))) & 511) as usize;
            let e = self.table(table).expect("walked into an unknown table")[i];
            if e & P == 0 {
                return Err(err_access);
            }
            if level == 1 {
                let denied = (err_access & PF_W != 0 && e & RW == 0)
                    || (err_access & PF_U != 0 && e & US == 0)
                    || (err_access & PF_I != 0 && e & NX != 0);
                return if denied { Err(err_access | PF_P) } else { Ok(e) };
            }
            assert_eq!(e & (RW | US | NX | PS), RW | US, "intermediate entry {e:#x}");
            table = e & ADDR;
        }
        unreachable!()
    }

    /// Every present leaf under a shadow root, with the guest virtual address it maps (sign
    /// extended from 57 bits on a 5-level host, 48 on a 4-level one), skipping the switcher slot.
    pub fn leaves(&self, root_pa: u64, la57: bool, slot: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let top = if la57 { 5 } else { 4 };
        self.collect(root_pa, top, 0, Some(slot), &mut out, &mut 0);
        let bits = if la57 { 57 } else { 48 };
        out.into_iter()
            .map(|(va, e)| ((((va << (64 - bits)) as i64) >> (64 - bits)) as u64, e))
            .collect()
    }

    /// Number of shadow tables reachable from a root (itself included).
    pub fn reachable_tables(&self, root_pa: u64, la57: bool, slot: usize) -> usize {
        let mut n = 0;
        self.collect(root_pa, if la57 { 5 } else { 4 }, 0, Some(slot), &mut Vec::new(), &mut n);
        n
    }

    fn collect(
        &self,
        pa: u64,
        level: u32,
        base: u64,
        skip: Option<usize>,
        out: &mut Vec<(u64, u64)>,
        n: &mut usize,
    ) {
        *n += 1;
        let t = self.table(pa).expect("unknown shadow table");
        for (i, &e) in t.iter().enumerate() {
            if e & P == 0 || skip == Some(i) {
                continue;
            }
            let va = base | ((i as u64) << (12 + 9 * (level - 1)));
            if level == 1 {
                out.push((va, e));
            } else {
                self.collect(e & ADDR, level - 1, va, None, out, n);
            }
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        for (_, p) in self.tables.drain() {
            // SAFETY (test): from Box::into_raw, not freed yet.
            drop(unsafe { Box::from_raw(p.as_ptr()) });
        }
    }
}

impl ShadowHost for Fake {
    fn read_gpa(&mut self, gpa: u64) -> Result<u64, MemFault> {
        assert!(gpa % 8 == 0 && gpa + 8 <= self.mem.len() as u64, "read {gpa:#x}");
        Ok(self.read(gpa))
    }

    fn write_gpa(&mut self, gpa: u64, val: u64) -> Result<(), MemFault> {
        assert!(gpa % 8 == 0 && gpa + 8 <= self.mem.len() as u64, "write {gpa:#x}");
        self.gpa_writes += 1;
        self.write(gpa, val);
        Ok(())
    }

    fn pin(&mut self, gpa: u64) -> Result<u64, MemFault> {
        assert!(gpa % 4096 == 0 && gpa < self.mem.len() as u64, "pin {gpa:#x}");
        let pfn = (gpa >> 12) + HOST_PFN_OFFSET;
        *self.pins.entry(pfn).or_default() += 1;
        Ok(pfn)
    }

    fn unpin(&mut self, host_pfn: u64) {
        let n = self.pins.get_mut(&host_pfn).expect("unpin of an unpinned frame");
        *n -= 1;
        if *n == 0 {
            self.pins.remove(&host_pfn);
        }
    }

    fn alloc_table(&mut self) -> Option<TablePage> {
        if self.table_cap.is_some_and(|cap| self.tables.len() >= cap) {
            return None;
        }
        self.allocs += 1;
        // Poisoned, not zeroed: the shadow must clear the page itself.
        let ptr = NonNull::new(Box::into_raw(Box::new([0xdead_beef_u64; ENTRIES]))).unwrap();
        let pa = self.next_pa;
        self.next_pa += 4096;
        self.tables.insert(pa, ptr);
        Some(TablePage { pa, ptr })
    }

    fn free_table(&mut self, table: TablePage) {
        let p = self.tables.remove(&table.pa).expect("free of an unknown table");
        assert_eq!(p, table.ptr);
        // SAFETY (test): from Box::into_raw, removed from the map so freed once.
        drop(unsafe { Box::from_raw(p.as_ptr()) });
    }
}

/// Index of `va` at guest paging level `level`.
pub fn idx(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * (level - 1))) & 511
}

pub fn config(la57: bool) -> Config {
    Config {
        host_la57: la57,
        switcher_slot: if la57 { SWITCHER_SLOT_5 } else { SWITCHER_SLOT_4 },
        pfn_limit: GUEST_PAGES,
        host_phys_bits: 46,
        max_tables: super::MAX_TABLES,
    }
}

/// The independent reference: what the guest's tables say about `va` (no side effects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref {
    NotPresent,
    /// A present walk: guest frame of the 4 KiB page, effective permissions, leaf dirty.
    Mapped {
        frame: u64,
        rw: bool,
        us: bool,
        nx: bool,
        dirty: bool,
    },
    /// The walk hits something that kills the guest (reserved bits, 1 GiB page, beyond memory).
    Bad,
}

pub fn reference(f: &Fake, cr3: u64, va: u64) -> Ref {
    let limit = f.mem.len() as u64;
    let (mut rw, mut us, mut nx) = (true, true, false);
    let mut table = cr3;
    for level in (1..=4).rev() {
        let e = f.read(table + 8 * idx(va, level));
        if e & P == 0 {
            return Ref::NotPresent;
        }
        if e & 0x7ff0_0000_0000_0000 != 0 {
            return Ref::Bad;
        }
        rw &= e & RW != 0;
        us &= e & US != 0;
        nx |= e & NX != 0;
        let huge = level == 2 && e & PS != 0;
        if level > 2 && e & PS != 0 {
            return Ref::Bad;
        }
        if huge && e & 0x1f_e000 != 0 {
            return Ref::Bad;
        }
        if level == 1 || huge {
            let frame = if huge {
                (e & ADDR & !0x1f_ffff) + (va & 0x1f_f000)
            } else {
                e & ADDR
            };
            return Ref::Mapped {
                frame,
                rw,
                us,
                nx,
                dirty: e & D != 0,
            };
        }
        table = e & ADDR;
        if table >= limit {
            return Ref::Bad;
        }
    }
    unreachable!()
}

/// Check everything that must hold between operations: every shadow leaf agrees with the guest
/// tables; pins and tables are accounted exactly; every table's source is truthful.
pub fn check_invariants(s: &Shadow, f: &Fake) {
    let la57 = s.la57;
    let mut leaves_total = 0u64;
    let mut pins_expected: HashMap<u64, u64> = HashMap::new();
    let mut reachable = 0usize;
    for root in s.roots.iter().flatten() {
        let root_pa = s.page(root.slot).unwrap().pa;
        if !la57 {
            assert_eq!(s.meta[root.slot].src, root.gpa);
        }
        reachable += f.reachable_tables(root_pa, la57, s.switcher_slot);
        for (va, e) in f.leaves(root_pa, la57, s.switcher_slot) {
            leaves_total += 1;
            assert_eq!(
                ((va << 16) as i64 >> 16) as u64,
                va,
                "leaf at non-canonical (aliased) va {va:#x}"
            );
            let r = reference(f, root.gpa, va);
            let Ref::Mapped {
                frame,
                rw,
                us,
                nx,
                dirty,
            } = r
            else {
                panic!("shadow leaf {e:#x} at {va:#x} (root {:#x}) but guest says {r:?}", root.gpa);
            };
            assert_eq!((e & ADDR) >> 12, (frame >> 12) + HOST_PFN_OFFSET, "frame at {va:#x}");
            assert!(e & RW == 0 || (rw && dirty), "too writable at {va:#x}: {e:#x}");
            assert!(e & US == 0 || us, "too user at {va:#x}");
            assert!(e & NX != 0 || !nx, "too executable at {va:#x}");
            // P, A, RW, US, D, NX and the frame: nothing else (no G, PWT, PCD, PAT, soft bits, keys).
            assert_eq!(e & !(ADDR | P | A | RW | US | D | NX), 0, "stray bits in {e:#x}");
            assert_eq!(e & (P | A), P | A);
            *pins_expected.entry((e & ADDR) >> 12).or_default() += 1;
        }
        check_sources(s, f, root.gpa, root.slot, s.top_level(), 0);
    }
    assert_eq!(s.pinned_pages(), leaves_total, "pin counter vs leaves");
    assert_eq!(f.pins, pins_expected, "host pins vs leaves");
    assert_eq!(s.table_pages() as usize, reachable, "tables vs reachable tables");
    assert_eq!(f.tables.len(), reachable, "host tables vs reachable tables");
    assert!(s.table_pages() as usize <= s.max_tables);
}

/// Every shadow table below `slot` (level `level`, covering VAs from `base`) must be derived from
/// the table the guest's walk reaches there now.
fn check_sources(s: &Shadow, f: &Fake, cr3: u64, slot: usize, level: u8, base: u64) {
    if level == 1 {
        return;
    }
    for i in 0..ENTRIES {
        let e = s.entry(slot, i);
        if e & P == 0 || !s.owned(slot, i) {
            continue;
        }
        let child = s.child(e).expect("present non-leaf entry without a table");
        let va = if level == 5 {
            if i == 0 {
                0
            } else {
                0xffff_8000_0000_0000
            }
        } else {
            let v = base | ((i as u64) << (12 + 9 * (u32::from(level) - 1)));
            ((v << 16) as i64 >> 16) as u64
        };
        // The guest table at level `level - 1` for this VA prefix.
        let mut table = cr3;
        let mut want = cr3;
        for l in (u32::from(level)..=4).rev() {
            let g = f.read(table + 8 * idx(va, l));
            assert!(g & P != 0, "shadow table below a non-present guest entry at {va:#x}");
            want = if l == 2 && g & PS != 0 { NO_SRC } else { g & ADDR };
            table = g & ADDR;
        }
        assert_eq!(s.meta[child].src, want, "source of the table at {va:#x} level {}", level - 1);
        assert_eq!(s.meta[child].level, level - 1);
        check_sources(s, f, cr3, child, level - 1, va);
    }
}
