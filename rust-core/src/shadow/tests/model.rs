//! The test model of a host and a guest, written against the public API only, so that the unit
//! tests, the randomized test and the fuzz target (`rust-core/fuzz`, which includes this file)
//! share it: a fake host (guest memory in a `Vec`, pins counted per frame, shadow tables in boxes
//! with made-up physical addresses), a software MMU that walks the shadow the way the CPU does, an
//! independent reference walk of the guest tables, and a random guest driven through every
//! operation.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::vec::Vec;

use crate::shadow::{
    Config, Fault, Kill, MemFault, Shadow, ShadowHost, TablePage, Translation, MAX_TABLES,
};

// Page-table entry bits.
pub const P: u64 = 1 << 0;
pub const RW: u64 = 1 << 1;
pub const US: u64 = 1 << 2;
pub const PWT: u64 = 1 << 3;
pub const PCD: u64 = 1 << 4;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const PS: u64 = 1 << 7;
pub const G: u64 = 1 << 8;
pub const NX: u64 = 1 << 63;
pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
pub const ENTRIES: usize = 512;
// Page-fault error code bits.
pub const PF_P: u64 = 1 << 0;
pub const PF_W: u64 = 1 << 1;
pub const PF_U: u64 = 1 << 2;
pub const PF_RSVD: u64 = 1 << 3;
pub const PF_I: u64 = 1 << 4;
pub const PF_PK: u64 = 1 << 5;

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
                return if denied {
                    Err(err_access | PF_P)
                } else {
                    Ok(e)
                };
            }
            assert_eq!(
                e & (RW | US | NX | PS),
                RW | US,
                "intermediate entry {e:#x}"
            );
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
        self.collect(
            root_pa,
            if la57 { 5 } else { 4 },
            0,
            Some(slot),
            &mut Vec::new(),
            &mut n,
        );
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
        assert!(
            gpa.is_multiple_of(8) && gpa + 8 <= self.mem.len() as u64,
            "read {gpa:#x}"
        );
        Ok(self.read(gpa))
    }

    fn write_gpa(&mut self, gpa: u64, val: u64) -> Result<(), MemFault> {
        assert!(
            gpa.is_multiple_of(8) && gpa + 8 <= self.mem.len() as u64,
            "write {gpa:#x}"
        );
        self.gpa_writes += 1;
        self.write(gpa, val);
        Ok(())
    }

    fn pin(&mut self, gpa: u64) -> Result<u64, MemFault> {
        assert!(
            gpa.is_multiple_of(4096) && gpa < self.mem.len() as u64,
            "pin {gpa:#x}"
        );
        let pfn = (gpa >> 12) + HOST_PFN_OFFSET;
        *self.pins.entry(pfn).or_default() += 1;
        Ok(pfn)
    }

    fn unpin(&mut self, host_pfn: u64) {
        let n = self
            .pins
            .get_mut(&host_pfn)
            .expect("unpin of an unpinned frame");
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
        let p = self
            .tables
            .remove(&table.pa)
            .expect("free of an unknown table");
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
        switcher_slot: if la57 {
            SWITCHER_SLOT_5
        } else {
            SWITCHER_SLOT_4
        },
        pfn_limit: GUEST_PAGES,
        host_phys_bits: 46,
        max_tables: MAX_TABLES,
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

/// xorshift64*: small, deterministic, good enough to pick operations. A fuzzer steers it instead
/// by feeding two input bytes into the state before each draw ([`Rng::from_bytes`]).
pub struct Rng {
    state: u64,
    input: Vec<u8>,
    pos: usize,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            input: Vec::new(),
            pos: 0,
        }
    }
    pub fn from_bytes(data: &[u8]) -> Self {
        Rng {
            input: data.to_vec(),
            ..Rng::new(1)
        }
    }
    /// All fuzz input consumed (never for a seeded generator).
    pub fn exhausted(&self) -> bool {
        !self.input.is_empty() && self.pos >= self.input.len()
    }
    pub fn next(&mut self) -> u64 {
        if let Some(b) = self.input.get(self.pos..self.pos + 2) {
            self.state ^= u64::from(u16::from_le_bytes([b[0], b[1]])) << 17;
            self.pos += 2;
        } else {
            self.pos = self.input.len();
        }
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// A guest whose tables are partitioned by level (so an entry's meaning never depends on the walk)
/// but freely shared within a level, addresses drawn from a small set of indices so that walks
/// collide often.
pub struct World {
    pub f: Fake,
    pub s: Shadow,
    pub la57: bool,
    pub pml4s: Vec<u64>,
    /// Tables by guest level: [PT, PD, PDPT].
    pub lower: [Vec<u64>; 3],
    pub oom: bool,
    /// How often each kind of outcome happened: [hit, fixed, reflected, killed, translated].
    pub stats: [usize; 5],
    /// Addresses faulted in lately: accessed again often, so translations get reused.
    recent: Vec<u64>,
}

const PML4_IDX: [u64; 6] = [0, 1, 255, 256, 273, 511];
const IDX: [u64; 4] = [0, 1, 2, 511];
/// Data frames (4 KiB) and 2 MiB frames. The last of each is outside the 8 MiB of guest memory.
const FRAMES: [u64; 9] = [
    0x40_0000, 0x40_1000, 0x40_2000, 0x55_5000, 0x7f_f000, 0x10_0000, 0x12_3000, 0x66_6000,
    0x80_0000,
];
const HUGE_FRAMES: [u64; 4] = [0x40_0000, 0x60_0000, 0x20_0000, 0x80_0000];

impl World {
    pub fn new(seed: u64, la57: bool, max_tables: usize) -> (Self, Rng) {
        let mut rng = Rng::new(seed);
        let mut f = Fake::new(GUEST_PAGES);
        let pml4s: Vec<u64> = (0..10).map(|_| f.guest_page()).collect();
        let lower = [
            (0..8).map(|_| f.guest_page()).collect(),
            (0..6).map(|_| f.guest_page()).collect(),
            (0..4).map(|_| f.guest_page()).collect(),
        ];
        let s = Shadow::new(Config {
            max_tables,
            ..config(la57)
        });
        let mut w = World {
            f,
            s,
            la57,
            pml4s,
            lower,
            oom: false,
            stats: [0; 5],
            recent: Vec::new(),
        };
        for level in 1..=4 {
            for t in w.tables(level) {
                for i in PML4_IDX.iter().chain(&IDX) {
                    let e = w.random_entry(&mut rng, level);
                    w.f.write(t + 8 * i, e);
                }
            }
        }
        let c = rng.pick(&w.pml4s);
        w.s.set_cr3(&mut w.f, c).unwrap();
        w.s.set_switcher_entry(SWITCHER_ENTRY);
        (w, rng)
    }

    fn tables(&self, level: u32) -> Vec<u64> {
        if level == 4 {
            self.pml4s.clone()
        } else {
            self.lower[level as usize - 1].clone()
        }
    }

    pub fn random_va(&self, rng: &mut Rng) -> u64 {
        if !self.recent.is_empty() && rng.chance(50) {
            return rng.pick(&self.recent) ^ rng.below(4096);
        }
        let mut pml4 = rng.pick(&PML4_IDX);
        if !self.la57 && pml4 as usize == SWITCHER_SLOT_4 {
            pml4 = 0;
        }
        let va = (pml4 << 39)
            | (rng.pick(&IDX) << 30)
            | (rng.pick(&IDX) << 21)
            | (rng.pick(&IDX) << 12)
            | rng.below(4096);
        ((va << 16) as i64 >> 16) as u64
    }

    pub fn random_entry(&self, rng: &mut Rng, level: u32) -> u64 {
        if rng.chance(10) {
            // Not present; the CPU ignores every other bit, and so must we.
            return if rng.chance(50) { 0 } else { rng.next() & !P };
        }
        let mut e = P;
        for (bit, pct) in [(RW, 85), (US, 75), (NX, 10), (A, 50), (D, 40)] {
            if rng.chance(pct) {
                e |= bit;
            }
        }
        // Bits the shadow must ignore: G, PWT, PCD, the software bits 9..=11.
        e |= rng.next() & (0x100 | 0x18 | 0xe00);
        let target = match level {
            1 => rng.pick(&FRAMES),
            2 if rng.chance(25) => {
                e |= PS;
                rng.pick(&HUGE_FRAMES)
            }
            _ => rng.pick(&self.tables(level - 1)),
        };
        if level == 1 && rng.chance(50) {
            e |= PS; // PAT in a PT entry: ignored.
        }
        // Rarely, something that kills the guest.
        if rng.chance(2) {
            e |= match rng.below(3) {
                0 => 1 << (52 + rng.below(11)),
                1 if level >= 3 => PS,
                _ => 0,
            };
        }
        let target = if level > 1 && rng.chance(1) {
            GUEST_PAGES << 12
        } else {
            target
        };
        e | target
    }

    fn permits(r: &Ref, access: u64) -> bool {
        match *r {
            Ref::Mapped { rw, us, nx, .. } => {
                !((access & PF_W != 0 && !rw)
                    || (access & PF_U != 0 && !us)
                    || (access & PF_I != 0 && nx))
            }
            _ => false,
        }
    }

    /// One access by the guest through the fake CPU, with the host's fault handling.
    pub fn access(&mut self, va: u64, access: u64) {
        let cr3 = self.s.current_pml4().unwrap();
        let r = reference(&self.f, cr3, va);
        let root = self.s.root_pa().unwrap();
        let err = match self.f.mmu(root, self.la57, va, access) {
            Ok(leaf) => {
                let Ref::Mapped { frame, .. } = r else {
                    panic!("shadow allowed {va:#x} but guest says {r:?}");
                };
                assert!(Self::permits(&r, access), "{va:#x} {access:#x} {r:?}");
                assert_eq!((leaf & ADDR) >> 12, (frame >> 12) + HOST_PFN_OFFSET);
                self.stats[0] += 1;
                return;
            }
            Err(err) => err,
        };
        let outcome = self.s.page_fault(&mut self.f, va, err);
        self.stats[match outcome {
            Ok(Fault::Fixed) => 1,
            Ok(_) => 2,
            Err(_) => 3,
        }] += 1;
        let code = access & (PF_W | PF_U | PF_I);
        match (outcome, r) {
            (Ok(Fault::Reflect { err }), Ref::NotPresent) => assert_eq!(err, code),
            (Ok(Fault::Reflect { err }), Ref::Mapped { .. }) => {
                assert!(!Self::permits(&r, access));
                assert_eq!(err, code | PF_P);
            }
            (Err(_), Ref::Bad) => {}
            (Err(Kill::FrameBeyondMemory { .. }), Ref::Mapped { frame, .. }) => {
                assert!(frame >= GUEST_PAGES << 12 && Self::permits(&r, access));
            }
            (Err(Kill::OutOfMemory), _) if self.oom => {}
            (Ok(Fault::Fixed), Ref::Mapped { frame, .. }) => {
                assert!(Self::permits(&r, access), "{va:#x} {access:#x} {r:?}");
                let leaf = self
                    .f
                    .mmu(self.s.root_pa().unwrap(), self.la57, va, access)
                    .unwrap_or_else(|e| panic!("still faults at {va:#x}: {e:#x}"));
                assert_eq!((leaf & ADDR) >> 12, (frame >> 12) + HOST_PFN_OFFSET);
                let Ref::Mapped { dirty, .. } = reference(&self.f, cr3, va) else {
                    unreachable!()
                };
                assert!(dirty || access & PF_W == 0, "write did not set D");
                if self.recent.len() < 16 {
                    self.recent.push(va);
                } else {
                    self.recent[self.stats[1] % 16] = va;
                }
            }
            (o, r) => panic!("fault at {va:#x} access {access:#x}: got {o:?}, guest says {r:?}"),
        }
    }

    pub fn translate(&mut self, va: u64, write: bool) {
        let cr3 = self.s.current_pml4().unwrap();
        let r = reference(&self.f, cr3, va);
        let access = if write { PF_W } else { 0 };
        match (self.s.translate(&mut self.f, va, write), r) {
            (Ok(Translation::Mapped(gpa)), Ref::Mapped { frame, .. }) => {
                self.stats[4] += 1;
                assert!(Self::permits(&r, access));
                assert_eq!(gpa, frame | (va & 0xfff));
            }
            (Ok(Translation::Fault { err }), Ref::NotPresent) => assert_eq!(err, access),
            (Ok(Translation::Fault { err }), Ref::Mapped { .. }) => {
                assert!(!Self::permits(&r, access));
                assert_eq!(err, access | PF_P);
            }
            (Err(_), Ref::Bad) => {}
            (Err(Kill::FrameBeyondMemory { .. }), Ref::Mapped { frame, .. }) => {
                assert!(frame >= GUEST_PAGES << 12);
            }
            (o, r) => panic!("translate {va:#x}: got {o:?}, guest says {r:?}"),
        }
    }

    /// Change one entry somewhere in the guest's tables; returns its address.
    pub fn modify(&mut self, rng: &mut Rng) -> u64 {
        let level = 1 + rng.below(4) as u32;
        let t = rng.pick(&self.tables(level));
        let i = if level == 4 {
            rng.pick(&PML4_IDX)
        } else {
            rng.pick(&IDX)
        };
        let e = self.random_entry(rng, level);
        self.f.write(t + 8 * i, e);
        t + 8 * i
    }

    pub fn step(&mut self, rng: &mut Rng) {
        match rng.below(1000) {
            0..=549 => {
                let va = self.random_va(rng);
                let mut access = rng.pick(&[0, 0, PF_W, PF_I]);
                if rng.chance(30) {
                    access |= PF_U;
                }
                self.access(va, access);
            }
            550..=669 => {
                let gpa = self.modify(rng);
                self.s.entry_changed(&mut self.f, gpa).unwrap();
            }
            670..=679 => {
                self.modify(rng);
                self.s.flush_all(&mut self.f);
            }
            680..=739 => {
                let va = self.random_va(rng);
                self.s.flush_one(&mut self.f, va);
            }
            740..=759 => self.s.flush_user(&mut self.f),
            760..=764 => self.s.flush_all(&mut self.f),
            765..=829 => {
                let c = rng.pick(&self.pml4s);
                match self.s.set_cr3(&mut self.f, c) {
                    Ok(()) => {}
                    Err(Kill::OutOfMemory) if self.oom => {}
                    Err(k) => panic!("set_cr3: {k}"),
                }
            }
            830..=839 => {
                let c = rng.pick(&self.pml4s);
                self.s.release(&mut self.f, c).unwrap();
            }
            840..=939 => {
                let va = self.random_va(rng);
                self.translate(va, rng.chance(50));
            }
            940..=942 => {
                self.oom = false;
                self.f.table_cap = None;
                self.s.destroy(&mut self.f);
                assert!(self.f.pins.is_empty() && self.f.tables.is_empty());
                let c = rng.pick(&self.pml4s);
                self.s.set_cr3(&mut self.f, c).unwrap();
            }
            943..=969 => {
                // Memory pressure in the host comes and goes.
                self.oom = !self.oom;
                self.f.table_cap = self
                    .oom
                    .then(|| self.f.tables.len() + rng.below(6) as usize);
            }
            _ => {
                // Faults in a non-canonical (on a 5-level host: still a page fault) address.
                let va = 0x0000_8000_0000_0000 | (rng.next() & 0x7fff_ffff_f000);
                if self.la57 {
                    assert_eq!(
                        self.s.page_fault(&mut self.f, va, PF_U),
                        Ok(Fault::GeneralProtection)
                    );
                }
            }
        }
        if self.s.root_pa().is_none() {
            // Only an out-of-memory set_cr3 (after evicting) leaves no current root.
            assert!(self.oom);
            self.oom = false;
            self.f.table_cap = None;
            let c = rng.pick(&self.pml4s);
            self.s.set_cr3(&mut self.f, c).unwrap();
        }
        self.s.set_switcher_entry(SWITCHER_ENTRY);
    }
}

/// A present shadow leaf `e` at `va`, in the root shadowing the guest PML4 at `cr3`, must map the
/// frame the guest maps there with no more permission than the guest gives, and nothing else.
pub fn check_leaf(f: &Fake, cr3: u64, va: u64, e: u64) {
    let r = reference(f, cr3, va);
    let Ref::Mapped {
        frame,
        rw,
        us,
        nx,
        dirty,
    } = r
    else {
        panic!("shadow leaf {e:#x} at {va:#x} (root {cr3:#x}) but guest says {r:?}");
    };
    assert_eq!(
        (e & ADDR) >> 12,
        (frame >> 12) + HOST_PFN_OFFSET,
        "frame at {va:#x}"
    );
    assert!(
        e & RW == 0 || (rw && dirty),
        "too writable at {va:#x}: {e:#x}"
    );
    assert!(e & US == 0 || us, "too user at {va:#x}");
    assert!(e & NX != 0 || !nx, "too executable at {va:#x}");
    // P, A, RW, US, D, NX and the frame: nothing else (no G, PWT, PCD, PAT, soft bits, keys).
    assert_eq!(
        e & !(ADDR | P | A | RW | US | D | NX),
        0,
        "stray bits in {e:#x}"
    );
    assert_eq!(e & (P | A), P | A);
}

/// What can be checked through the public API alone: the counters agree with the host's, and
/// every leaf of the current root agrees with the guest's tables.
pub fn check_public(s: &Shadow, f: &Fake, la57: bool) {
    assert_eq!(s.pinned_pages(), f.pins.values().sum::<u64>(), "pins");
    assert_eq!(s.table_pages() as usize, f.tables.len(), "tables");
    let (Some(root), Some(cr3)) = (s.root_pa(), s.current_pml4()) else {
        return;
    };
    let slot = if la57 {
        SWITCHER_SLOT_5
    } else {
        SWITCHER_SLOT_4
    };
    for (va, e) in f.leaves(root, la57, slot) {
        assert_eq!(
            ((va << 16) as i64 >> 16) as u64,
            va,
            "aliased leaf at {va:#x}"
        );
        check_leaf(f, cr3, va, e);
    }
}

/// One fuzz case (the body of `rust-core/fuzz/fuzz_targets/shadow_ops.rs`): the first byte picks
/// the host (bit 0: 5-level) and the table budget (bit 1: the minimum), the second seeds the guest's
/// tables, and the rest steers the operations.
pub fn fuzz_one(data: &[u8]) {
    let (Some(&flags), Some(&seed), Some(ops)) = (data.first(), data.get(1), data.get(2..)) else {
        return;
    };
    if ops.is_empty() {
        return;
    }
    let la57 = flags & 1 != 0;
    let max_tables = if flags & 2 != 0 {
        crate::shadow::MIN_TABLES
    } else {
        MAX_TABLES
    };
    let (mut w, _) = World::new(u64::from(seed), la57, max_tables);
    let mut rng = Rng::from_bytes(ops);
    while !rng.exhausted() {
        w.step(&mut rng);
        check_public(&w.s, &w.f, la57);
    }
    w.s.destroy(&mut w.f);
    assert!(w.f.pins.is_empty() && w.f.tables.is_empty());
}
