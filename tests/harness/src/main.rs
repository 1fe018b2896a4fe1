//! `vmtest`: boots the Debian test kernel under QEMU TCG with lg.ko and the test programs in an
//! initramfs, runs scenarios inside it, and reports them.
//!
//! ```text
//! vmtest test [--cells 'CPU:SMP ...'] [--scenarios all|NAME,...] [--cell-timeout SECS]
//! vmtest run                      # `make run`: the demo, console shown live
//! ```
//! The verdict of a scenario is the `@@ RESULT` line the VM's /init prints (tests/vm/init.sh),
//! never QEMU's exit status. A VM that stops talking is killed when its time is up and every
//! scenario it did not finish is reported as failed.

mod qemu;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use qemu::{Cell, VmConfig};

/// The CPU matrix real users have: a modern CPU (SMEP, SMAP, UMIP, PKU, LA57) and a bare one,
/// each with one and two host CPUs.
const DEFAULT_CELLS: &str = "max:1 max:2 qemu64:1 qemu64:2";

fn usage() -> ExitCode {
    eprintln!(
        "usage: vmtest test [--cells 'CPU:SMP ...'] [--scenarios all|NAME,...] [--cell-timeout SECS]\n       vmtest run"
    );
    ExitCode::from(2)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let mut cells = DEFAULT_CELLS.to_string();
    let mut scenarios = "all".to_string();
    let mut cell_timeout = 900u64;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let val = it.next();
        match (a.as_str(), val) {
            ("--cells", Some(v)) => cells = v.clone(),
            ("--scenarios", Some(v)) => scenarios = v.clone(),
            ("--cell-timeout", Some(v)) => match v.parse() {
                Ok(n) => cell_timeout = n,
                Err(_) => return usage(),
            },
            _ => return usage(),
        }
    }
    let root = root();
    let initrd = match qemu::build_initramfs(&root) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vmtest: {e}");
            return ExitCode::from(1);
        }
    };
    let cfg = VmConfig::new(&root, initrd);
    match cmd.as_str() {
        "run" => {
            let cell = Cell::parse("max:2").unwrap_or_default();
            match qemu::run_demo(&cfg, &cell) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("vmtest: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "test" => {
            let mut parsed = Vec::new();
            for c in cells.split_whitespace() {
                match Cell::parse(c) {
                    Some(cell) => parsed.push(cell),
                    None => {
                        eprintln!("vmtest: bad cell '{c}' (want CPU:SMP, e.g. max:2)");
                        return ExitCode::from(2);
                    }
                }
            }
            let mut rep = report::Report::default();
            for cell in &parsed {
                match qemu::run_cell(&cfg, cell, &scenarios, Duration::from_secs(cell_timeout)) {
                    Ok(results) => rep.add_cell(cell, results),
                    Err(e) => rep.cell_error(cell, &e.to_string()),
                }
            }
            rep.print_summary();
            if rep.failed() == 0 && rep.passed() > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        _ => usage(),
    }
}
