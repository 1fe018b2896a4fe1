//! Tests of shadow paging: the shared model (fake host, MMU, reference walk, random guest), unit
//! tests, and a randomized test that checks the internal invariants after every operation.

pub mod model;
mod random;
mod unit;

use std::collections::HashMap;

pub use model::*;

use super::{Shadow, NO_SRC};

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
            check_leaf(f, root.gpa, va, e);
            *pins_expected.entry((e & ADDR) >> 12).or_default() += 1;
        }
        check_sources(s, f, root.gpa, root.slot, s.top_level(), 0);
    }
    assert_eq!(s.pinned_pages(), leaves_total, "pin counter vs leaves");
    assert_eq!(f.pins, pins_expected, "host pins vs leaves");
    assert_eq!(
        s.table_pages() as usize,
        reachable,
        "tables vs reachable tables"
    );
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
            assert!(
                g & P != 0,
                "shadow table below a non-present guest entry at {va:#x}"
            );
            want = if l == 2 && g & PS != 0 {
                NO_SRC
            } else {
                g & ADDR
            };
            table = g & ADDR;
        }
        assert_eq!(
            s.meta[child].src,
            want,
            "source of the table at {va:#x} level {}",
            level - 1
        );
        assert_eq!(s.meta[child].level, level - 1);
        check_sources(s, f, cr3, child, level - 1, va);
    }
}
