//! Thousands of random operations on random guest tables (the model's `World`), checked after
//! every step: every access the shadow lets through must be one the guest's tables allow, with the
//! right frame; every fault must be fixed or reflected exactly as the reference says; pins and
//! table pages must be accounted exactly; every shadow table's source must be truthful.

use super::*;
use crate::shadow::{MAX_TABLES, MIN_TABLES};

fn run(seed: u64, la57: bool, max_tables: usize, steps: usize) {
    let (mut w, mut rng) = World::new(seed, la57, max_tables);
    let mut max_tables_seen = 0;
    for _ in 0..steps {
        w.step(&mut rng);
        check_invariants(&w.s, &w.f);
        check_public(&w.s, &w.f, la57);
        max_tables_seen = max_tables_seen.max(w.s.table_pages() as usize);
    }
    // The run must have exercised every path, not just reflected faults, and filled the shadow.
    assert!(max_tables_seen >= max_tables.min(16), "{max_tables_seen}");
    assert!(w.stats.iter().all(|&n| n > 20), "{:?}", w.stats);
    w.s.destroy(&mut w.f);
    assert!(w.f.pins.is_empty() && w.f.tables.is_empty());
}

#[test]
fn random_ops_four_level() {
    for seed in 1..=3 {
        run(seed, false, MAX_TABLES, 3000);
    }
}

#[test]
fn random_ops_five_level() {
    for seed in 11..=13 {
        run(seed, true, MAX_TABLES, 3000);
    }
}

#[test]
fn random_ops_tight_table_budget() {
    for seed in 21..=23 {
        run(seed, seed % 2 == 0, MIN_TABLES, 3000);
    }
}

#[test]
fn fuzz_driver_runs_byte_steered_cases() {
    let mut rng = Rng::new(99);
    for case in 0..8u8 {
        let data: Vec<u8> = [case, case.wrapping_mul(37)]
            .into_iter()
            .chain((0..4000).map(|_| rng.next() as u8))
            .collect();
        fuzz_one(&data);
    }
    fuzz_one(&[]);
    fuzz_one(&[3, 4]);
}
