//! Collecting verdicts and printing the summary.

use crate::qemu::{Cell, ScenarioResult};

#[derive(Default)]
pub struct Report {
    passed: usize,
    failed: usize,
    failures: Vec<String>,
}

impl Report {
    pub fn add_cell(&mut self, cell: &Cell, results: Vec<ScenarioResult>) {
        for r in results {
            if r.passed {
                self.passed += 1;
                println!("PASS {} {} {}", cell.name(), r.name, r.detail);
            } else {
                self.failed += 1;
                println!("FAIL {} {}: {}", cell.name(), r.name, r.detail);
                for l in r.output.iter().rev().take(40).rev() {
                    println!("     | {l}");
                }
                self.failures.push(format!("{} {}", cell.name(), r.name));
            }
        }
    }

    pub fn cell_error(&mut self, cell: &Cell, err: &str) {
        self.failed += 1;
        println!("FAIL {} (vm): {err}", cell.name());
        self.failures.push(format!("{} (vm)", cell.name()));
    }

    pub fn passed(&self) -> usize {
        self.passed
    }

    pub fn failed(&self) -> usize {
        self.failed
    }

    pub fn print_summary(&self) {
        if !self.failures.is_empty() {
            println!("failed: {}", self.failures.join(", "));
        }
        println!("vmtest: {} passed, {} failed", self.passed, self.failed);
    }
}
