//! `vmtest`: boots the Debian test kernel under QEMU TCG with lg.ko and the test programs in an
//! initramfs, runs scenarios inside it, and reports them.
//!
//! ```text
//! vmtest test [--cells 'CPU:SMP ...'] [--scenarios all|NAME,...] [--cell-timeout SECS] [--parallel N]
//! vmtest run                      # `make run`: the demo, console shown live
//! vmtest bench [--cells 'CPU:SMP'] [--cell-timeout SECS]   # `make bench` (docs/bench.md)
//! ```
//! The verdict of a scenario is the `@@ RESULT` line the VM's /init prints (tests/vm/init.sh),
//! never QEMU's exit status. A VM that stops talking is killed when its time is up and every
//! scenario it did not finish is reported as failed.

mod bench;
mod chart;
mod qemu;
mod report;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qemu::{Cell, VmConfig};

/// The CPU matrix real users have: a modern CPU (SMEP, SMAP, UMIP, PKU, LA57) and a bare one,
/// each with one and two host CPUs.
const DEFAULT_CELLS: &str = "max:1 max:2 qemu64:1 qemu64:2";

/// Where `make bench` measures: the modern CPU, with a second CPU for the host's own work.
const BENCH_CELL: &str = "max:2";

fn usage() -> ExitCode {
    eprintln!(
        "usage: vmtest test [--cells 'CPU:SMP ...'] [--scenarios all|NAME,...] [--cell-timeout SECS] [--parallel N]\n       vmtest run\n       vmtest bench [--cells 'CPU:SMP'] [--cell-timeout SECS]   (one cell; default {BENCH_CELL})"
    );
    ExitCode::from(2)
}

fn root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let mut cells = None;
    let mut scenarios = "all".to_string();
    let mut cell_timeout = None;
    let mut parallel = 1usize;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let val = it.next();
        match (a.as_str(), val) {
            ("--cells", Some(v)) => cells = Some(v.clone()),
            ("--scenarios", Some(v)) => scenarios = v.clone(),
            ("--parallel", Some(v)) => match v.parse() {
                Ok(n) => parallel = n,
                Err(_) => return usage(),
            },
            ("--cell-timeout", Some(v)) => match v.parse() {
                Ok(n) => cell_timeout = Some(n),
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
    // The initramfs is this run's own; remove it whichever way main returns.
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _initrd_guard = RemoveOnDrop(initrd.clone());
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
        "bench" => {
            let cells = cells.as_deref().unwrap_or(BENCH_CELL);
            let mut words = cells.split_whitespace();
            let (Some(cell), None) = (words.next().and_then(Cell::parse), words.next()) else {
                eprintln!(
                    "vmtest: bench runs in one cell (CPU:SMP, e.g. {BENCH_CELL}), not '{cells}'"
                );
                return ExitCode::from(2);
            };
            bench_main(
                &root,
                &cfg,
                &cell,
                Duration::from_secs(cell_timeout.unwrap_or(600)),
            )
        }
        "test" => {
            let cell_timeout = cell_timeout.unwrap_or(900);
            let cells = cells.as_deref().unwrap_or(DEFAULT_CELLS);
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
            // Cells run `parallel` at a time: most scenarios spend their time sleeping or in
            // one vCPU, so two VMs share two host cores well. Results print in cell order.
            let timeout = Duration::from_secs(cell_timeout);
            let mut outcomes: Vec<Option<std::io::Result<Vec<qemu::ScenarioResult>>>> =
                (0..parsed.len()).map(|_| None).collect();
            for (chunk_cells, chunk_out) in parsed
                .chunks(parallel.max(1))
                .zip(outcomes.chunks_mut(parallel.max(1)))
            {
                std::thread::scope(|sc| {
                    let handles: Vec<_> = chunk_cells
                        .iter()
                        .map(|cell| {
                            let (cfg, scenarios) = (&cfg, &scenarios);
                            sc.spawn(move || qemu::run_cell(cfg, cell, scenarios, timeout))
                        })
                        .collect();
                    for (h, out) in handles.into_iter().zip(chunk_out.iter_mut()) {
                        *out = Some(h.join().unwrap_or_else(|_| {
                            Err(std::io::Error::other("cell thread panicked"))
                        }));
                    }
                });
            }
            let mut rep = report::Report::default();
            for (cell, out) in parsed.iter().zip(outcomes) {
                match out {
                    Some(Ok(results)) => rep.add_cell(cell, results),
                    Some(Err(e)) => rep.cell_error(cell, &e.to_string()),
                    None => rep.cell_error(cell, "not run"),
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

/// The first line of `cmd --version`, after "version ": `10.0.2`.
fn version_of(cmd: &str) -> String {
    std::process::Command::new(cmd)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let first = text.lines().next()?.to_string();
            first
                .split("version ")
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// This machine's CPU, which TCG runs the VM on.
fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// How many QEMU processes are running on this machine (ours is not while this is called).
fn other_qemus() -> usize {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("qemu-system"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// `make bench`: boot one VM, tabulate, write target/bench/bench.{json,png}, and when the run
/// measured something, copy both to docs/ and put the table into docs/bench.md. Succeeds when the
/// VM finished the bench section and at least one number came out; never judges the numbers.
fn bench_main(root: &Path, cfg: &VmConfig, cell: &Cell, timeout: Duration) -> ExitCode {
    eprintln!(
        "vmtest: bench in qemu -cpu {} -smp {} (TCG); about two minutes",
        cell.cpu, cell.smp
    );
    let busy_before = other_qemus();
    let out = match qemu::run_bench(cfg, cell, timeout) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vmtest: {e}");
            return ExitCode::from(1);
        }
    };
    let mut c = bench::Collected::from_lines(&out.lines);
    if !out.complete {
        c.notes.push(format!(
            "the VM did not finish the bench section (see {})",
            out.log.display()
        ));
    }
    let busy = busy_before.max(other_qemus());
    if busy > 0 {
        c.notes.push(format!(
            "{busy} other QEMU process(es) shared the host's CPUs with this run: TCG slows down, numbers are noisier"
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let machine = bench::Machine {
        qemu_cpu: cell.cpu.clone(),
        smp: cell.smp,
        qemu_version: version_of("qemu-system-x86_64"),
        host_cpu: host_cpu(),
        date: bench::utc_date(now),
    };
    let table = bench::table(&c.rows);
    let mut block = format!("{}\n\n{table}", machine.caption());
    if !c.notes.is_empty() {
        block += "\nNotes from this run:\n";
        for n in &c.notes {
            block += &format!("- {n}\n");
        }
    }
    println!("\n{block}");

    let measured = c
        .rows
        .iter()
        .any(|r| r.guest_cycles.is_some() || r.native_cycles.is_some());
    let dir = root.join("target/bench");
    let json_path = dir.join("bench.json");
    let png_path = dir.join("bench.png");
    let mut wrote_png = false;
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let text =
            serde_json::to_string_pretty(&bench::json(&machine, &c)).map_err(io::Error::other)?;
        std::fs::write(&json_path, text + "\n")
    });
    if let Err(e) = written {
        eprintln!("vmtest: cannot write {}: {e}", json_path.display());
        return ExitCode::from(1);
    }
    if measured {
        match chart::render(
            &png_path,
            &c.rows,
            &machine.caption(),
            Path::new(chart::FONT),
        ) {
            Ok(()) => wrote_png = true,
            Err(e) => eprintln!("vmtest: no chart: {e}"),
        }
    }
    println!(
        "wrote {}{}",
        json_path.display(),
        if wrote_png {
            format!(" and {}", png_path.display())
        } else {
            String::new()
        }
    );
    if !(out.complete && measured) {
        eprintln!("vmtest: docs/ left as they were (this run is incomplete)");
        return ExitCode::from(1);
    }
    let docs = root.join("docs");
    let mut copies = vec![(json_path, docs.join("bench.json"))];
    if wrote_png {
        copies.push((png_path, docs.join("bench.png")));
    }
    for (from, to) in copies {
        if let Err(e) = std::fs::copy(&from, &to) {
            eprintln!("vmtest: cannot copy to {}: {e}", to.display());
        }
    }
    let md = docs.join("bench.md");
    if let Ok(doc) = std::fs::read_to_string(&md) {
        match bench::splice_doc(&doc, &block) {
            Some(new) if new != doc => {
                if let Err(e) = std::fs::write(&md, new) {
                    eprintln!("vmtest: cannot update {}: {e}", md.display());
                }
            }
            Some(_) => {}
            None => eprintln!("vmtest: {} has no table markers; not updated", md.display()),
        }
    }
    println!(
        "copied to docs/: bench.json, {}the table in bench.md",
        if wrote_png {
            "bench.png, "
        } else {
            "(no chart: docs/bench.png is an older run's), "
        }
    );
    ExitCode::SUCCESS
}
