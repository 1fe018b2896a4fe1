//! Starting QEMU and following what the test VM prints.

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// One point of the CPU matrix: a QEMU CPU model and a number of host CPUs.
#[derive(Clone, Debug)]
pub struct Cell {
    pub cpu: String,
    pub smp: u32,
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            cpu: "max".into(),
            smp: 2,
        }
    }
}

impl Cell {
    /// `max:2`, `qemu64:1`, `max,vendor=GenuineIntel:1`.
    pub fn parse(s: &str) -> Option<Cell> {
        let (cpu, smp) = s.rsplit_once(':')?;
        let smp = smp.parse().ok().filter(|n| (1..=8).contains(n))?;
        (!cpu.is_empty()).then(|| Cell {
            cpu: cpu.into(),
            smp,
        })
    }

    /// A file-name-friendly name: `max-smp2`.
    pub fn name(&self) -> String {
        let cpu: String = self
            .cpu
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{cpu}-smp{}", self.smp)
    }
}

/// What every boot shares.
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub logs: PathBuf,
}

impl VmConfig {
    pub fn new(root: &Path, initrd: PathBuf) -> Self {
        let kver = std::fs::read_to_string(root.join("target/kver")).unwrap_or_default();
        let kver = kver.trim();
        VmConfig {
            kernel: root.join(format!("target/kimg/{kver}/boot/vmlinuz-{kver}")),
            initrd,
            logs: root.join("target/vm/logs"),
        }
    }
}

/// Pack the initramfs (tests/mkinitramfs.sh).
pub fn build_initramfs(root: &Path) -> io::Result<PathBuf> {
    // One per harness process: several runs may share the tree.
    let out = root.join(format!(
        "target/vm/initramfs-{}.cpio.gz",
        std::process::id()
    ));
    std::fs::create_dir_all(root.join("target/vm"))?;
    let status = Command::new(root.join("tests/mkinitramfs.sh"))
        .arg(&out)
        .status()?;
    if !status.success() {
        return Err(io::Error::other("tests/mkinitramfs.sh failed"));
    }
    Ok(out)
}

/// A running VM whose console lines arrive on a channel.
struct Vm {
    child: Child,
    lines: Receiver<String>,
    /// The QEMU monitor's Unix socket (for injecting NMIs).
    monitor: PathBuf,
    /// Requests to the NMI injector thread, which keeps one monitor connection.
    nmi_tx: Option<mpsc::Sender<u32>>,
}

impl Vm {
    fn boot(cfg: &VmConfig, cell: &Cell, append: &str) -> io::Result<Vm> {
        let monitor = std::env::temp_dir().join(format!(
            "lguest-vmtest-{}-{}.monitor",
            std::process::id(),
            cell.name()
        ));
        let _ = std::fs::remove_file(&monitor);
        if !cfg.kernel.is_file() {
            return Err(io::Error::other(format!(
                "test kernel {} not found (run: make deps)",
                cfg.kernel.display()
            )));
        }
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", &cell.cpu, "-m", "2G"])
            .args(["-smp", &cell.smp.to_string()])
            .args(["-display", "none", "-serial", "stdio"])
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .args(["-no-reboot", "-nodefaults"])
            .arg("-kernel")
            .arg(&cfg.kernel)
            .arg("-initrd")
            .arg(&cfg.initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 loglevel=4 {append}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::other(format!("cannot start qemu-system-x86_64: {e}")))?;
        let (tx, rx) = mpsc::channel();
        let out = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let err = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr"))?;
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).replace('\r', "");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx2.send(format!("qemu: {line}")).is_err() {
                    break;
                }
            }
        });
        Ok(Vm {
            child,
            lines: rx,
            monitor,
            nmi_tx: None,
        })
    }

    /// Inject `n` NMIs through the monitor (QEMU sends them to CPU 0), 50 ms apart, in the
    /// background, in order, over one monitor connection.
    fn inject_nmis(&mut self, n: u32) {
        if self.nmi_tx.is_none() {
            let (tx, rx) = mpsc::channel::<u32>();
            let path = self.monitor.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut stream = None;
                while let Ok(n) = rx.recv() {
                    if stream.is_none() {
                        stream = std::os::unix::net::UnixStream::connect(&path).ok();
                    }
                    let Some(s) = stream.as_mut() else {
                        eprintln!(
                            "vmtest: cannot reach the QEMU monitor at {}",
                            path.display()
                        );
                        continue;
                    };
                    for _ in 0..n {
                        let _ = s.write_all(b"nmi\n");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
            self.nmi_tx = Some(tx);
        }
        if let Some(tx) = &self.nmi_tx {
            let _ = tx.send(n);
        }
    }

    /// Next console line, `Ok(None)` at EOF, `Err(())` when the deadline passed.
    fn next_line(&self, deadline: Instant) -> Result<Option<String>, ()> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => Ok(Some(l)),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => Err(()),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.monitor);
    }
}

/// The verdict on one scenario in one cell.
#[derive(Debug)]
pub struct ScenarioResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    /// What the scenario printed, for the report of a failure.
    pub output: Vec<String>,
}

/// Boot one cell, run `scenarios` ("all" or a comma list), collect the verdicts.
pub fn run_cell(
    cfg: &VmConfig,
    cell: &Cell,
    scenarios: &str,
    timeout: Duration,
) -> io::Result<Vec<ScenarioResult>> {
    std::fs::create_dir_all(&cfg.logs)?;
    let log_path = cfg.logs.join(format!("{}.log", cell.name()));
    let mut log = Vec::new();
    let started = Instant::now();
    let mut vm = Vm::boot(cfg, cell, &format!("lgtest={scenarios}"))?;
    let deadline = started + timeout;
    let mut results = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    let mut done = false;
    let mut booted = false;
    loop {
        let line = match vm.next_line(deadline) {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(()) => {
                log.push(format!(
                    "vmtest: cell timed out after {}s",
                    timeout.as_secs()
                ));
                break;
            }
        };
        log.push(line.clone());
        if line.contains("@@ BOOTED") {
            booted = true;
            eprintln!(
                "  [{}] booted in {:.1}s: {}",
                cell.name(),
                started.elapsed().as_secs_f64(),
                line.split("@@ BOOTED").nth(1).unwrap_or("").trim()
            );
        }
        if let Some(rest) = line.split("@@ NMI ").nth(1) {
            vm.inject_nmis(rest.trim().parse().unwrap_or(1));
        }
        if let Some(rest) = line.split("@@ BEGIN ").nth(1) {
            current = Some((rest.trim().to_string(), Vec::new()));
        } else if let Some(rest) = line.split("@@ RESULT ").nth(1) {
            let mut parts = rest.trim().splitn(3, ' ');
            let name = parts.next().unwrap_or("?").to_string();
            let verdict = parts.next().unwrap_or("");
            let detail = parts.next().unwrap_or("").to_string();
            let output = current.take().map(|(_, o)| o).unwrap_or_default();
            results.push(ScenarioResult {
                name,
                passed: verdict == "PASS",
                detail,
                output,
            });
        } else if line.contains("@@ DONE") {
            done = true;
        } else if let Some((_, out)) = current.as_mut() {
            out.push(line);
        }
    }
    drop(vm);
    std::fs::write(&log_path, log.join("\n") + "\n")?;
    if let Some((name, output)) = current {
        results.push(ScenarioResult {
            name,
            passed: false,
            detail: format!(
                "VM stopped answering during this scenario (hang or crash; log {})",
                log_path.display()
            ),
            output,
        });
    }
    if !done {
        let what = if booted {
            "did not finish"
        } else {
            "did not boot"
        };
        results.push(ScenarioResult {
            name: "(vm)".into(),
            passed: false,
            detail: format!("VM {what} (see {})", log_path.display()),
            output: log.iter().rev().take(30).rev().cloned().collect(),
        });
    }
    Ok(results)
}

/// `make run`: boot the demo and show the console as it comes.
pub fn run_demo(cfg: &VmConfig, cell: &Cell) -> io::Result<bool> {
    eprintln!(
        "lguest: booting the test VM (qemu -cpu {} -smp {}, TCG); lg.ko and lguest inside",
        cell.cpu, cell.smp
    );
    let vm = Vm::boot(cfg, cell, "lgmode=run quiet")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut done = false;
    while let Ok(Some(line)) = vm.next_line(deadline) {
        if line.contains("@@ DONE") {
            done = true;
            break;
        }
        if !line.contains("@@ ") {
            println!("{line}");
        }
    }
    Ok(done)
}

/// What `make bench` read from the VM.
pub struct BenchOutput {
    /// The lines between `@@ BENCH-BEGIN` and `@@ BENCH-END` (tests/vm/scenarios/bench.sh).
    pub lines: Vec<String>,
    /// `@@ BENCH-END` came: the section is whole.
    pub complete: bool,
    /// The whole console.
    pub log: PathBuf,
}

/// `make bench`: boot with lgmode=bench and collect the bench section, showing it as it comes.
pub fn run_bench(cfg: &VmConfig, cell: &Cell, timeout: Duration) -> io::Result<BenchOutput> {
    std::fs::create_dir_all(&cfg.logs)?;
    let log_path = cfg.logs.join(format!("bench-{}.log", cell.name()));
    let started = Instant::now();
    let vm = Vm::boot(cfg, cell, "lgmode=bench")?;
    let deadline = started + timeout;
    let mut log = Vec::new();
    let mut lines = Vec::new();
    let (mut inside, mut complete) = (false, false);
    loop {
        let line = match vm.next_line(deadline) {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(()) => {
                log.push(format!("vmtest: timed out after {}s", timeout.as_secs()));
                eprintln!("  [bench] timed out after {}s", timeout.as_secs());
                break;
            }
        };
        log.push(line.clone());
        if let Some(rest) = line.split("@@ BOOTED").nth(1) {
            eprintln!(
                "  [bench] booted in {:.1}s: {}",
                started.elapsed().as_secs_f64(),
                rest.trim()
            );
        } else if line.contains("@@ BENCH-BEGIN") {
            inside = true;
        } else if line.contains("@@ BENCH-END") {
            inside = false;
            complete = true;
        } else if line.contains("@@ DONE") {
            break;
        } else if inside {
            eprintln!("  | {line}");
            lines.push(line);
        }
    }
    drop(vm);
    std::fs::write(&log_path, log.join("\n") + "\n")?;
    Ok(BenchOutput {
        lines,
        complete,
        log: log_path,
    })
}
