//! Thousands of random operations on random guest tables, checked against the reference walk after
//! every step: every access the shadow lets through must be one the guest's tables allow, with the
//! right frame; every fault must be fixed or reflected exactly as the reference says; pins and
//! table pages must be accounted exactly.

use super::*;
use crate::shadow::walk::PF_I;
use crate::shadow::{Fault, Kill, Translation, MIN_TABLES};

/// xorshift64*: small, deterministic, good enough to pick operations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
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
                self.f.table_cap = self.oom.then(|| self.f.tables.len() + rng.below(6) as usize);
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

fn run(seed: u64, la57: bool, max_tables: usize, steps: usize) {
    let (mut w, mut rng) = World::new(seed, la57, max_tables);
    let (mut max_tables_seen, mut max_pins_seen) = (0, 0);
    for _ in 0..steps {
        w.step(&mut rng);
        check_invariants(&w.s, &w.f);
        max_tables_seen = max_tables_seen.max(w.s.table_pages());
        max_pins_seen = max_pins_seen.max(w.s.pinned_pages());
    }
    eprintln!("max tables {max_tables_seen} pins {max_pins_seen}");
    // The run must have exercised every path, not just reflected faults.
    eprintln!("{seed} {la57} {:?} tables {}", w.stats, w.s.table_pages());
    assert!(w.stats.iter().all(|&n| n > 20), "{:?}", w.stats);
    w.s.destroy(&mut w.f);
    assert!(w.f.pins.is_empty() && w.f.tables.is_empty());
}

#[test]
fn random_ops_four_level() {
    for seed in 1..=4 {
        run(seed, false, crate::shadow::MAX_TABLES, 3000);
    }
}

#[test]
fn random_ops_five_level() {
    for seed in 11..=14 {
        run(seed, true, crate::shadow::MAX_TABLES, 3000);
    }
}

#[test]
fn random_ops_tight_table_budget() {
    for seed in 21..=24 {
        run(seed, seed % 2 == 0, MIN_TABLES, 3000);
    }
}
