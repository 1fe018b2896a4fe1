//! lgprobe: run as root inside the test VM with lg.ko loaded; drives `/dev/lguest` with good and
//! hostile input and checks every result exactly. Output: `ok - <name>` / `not ok - <name>:
//! <detail>` per check, then `lgprobe <subcommand>: N checks, M failures`; exit status 0 iff M == 0.

mod fuzz;
mod lifecycle;
mod model;
mod openclose;
mod proto;
mod protocol_suite;
mod report;
mod threads;
mod watchdog;

use report::Report;

const USAGE: &str = "\
usage: lgprobe <subcommand>
  protocol            every request, read length, argument, state (uninitialized, ready, dead)
                      and bad pointer, exact errnos and records
  fuzz [N] [SEED]     N random writes and reads checked against a model (default 10000, seed
                      from the clock)
  openclose [N]       N open/close cycles, every other one with a guest (default 1000)
  threads             close during reads, a read during BREAK 1, BREAK blocking/waking/EINTR,
                      INITIALIZE races
  lifecycle [N]       N guests that run and die: SIGKILLed launchers, files closed by another
                      thread during read(), guests that die by themselves (default 1000)
  all                 protocol, fuzz 10000, openclose 1000, threads
environment: LGPROBE_DEVICE (default /dev/lguest), LGPROBE_SWITCHER=START:END (switcher range,
  if known: enables the entry-point-in-switcher checks)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(sub) = args.first().map(String::as_str) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let num = |i: usize, default: u64| -> u64 {
        match args.get(i) {
            None => default,
            Some(s) => {
                proto::parse_u64(s).unwrap_or_else(|| usage_error(&format!("bad number {s:?}")))
            }
        }
    };
    let plan: Vec<Section> = match sub {
        "protocol" => vec![Section::Protocol],
        "fuzz" => vec![Section::Fuzz(num(1, 10_000), num(2, clock_seed()))],
        "openclose" => vec![Section::OpenClose(num(1, 1000))],
        "threads" => vec![Section::Threads],
        "lifecycle" => vec![Section::Lifecycle(num(1, 1000))],
        "all" => vec![
            Section::Protocol,
            Section::Fuzz(10_000, clock_seed()),
            Section::OpenClose(1000),
            Section::Threads,
        ],
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return;
        }
        other => usage_error(&format!("unknown subcommand {other:?}")),
    };
    if args.len() > sub_max_args(sub) {
        usage_error("too many arguments");
    }
    // Fail early and clearly when there is no device to test.
    if let Err(e) = proto::open() {
        let err = std::io::Error::from_raw_os_error(e.0);
        eprintln!("lgprobe: cannot open {}: {err}", proto::device_path());
        std::process::exit(1);
    }
    let mut rep = Report::new();
    for section in plan {
        let (c0, f0) = rep.counts();
        let (name, result) = match section {
            Section::Protocol => ("protocol", protocol_suite::run(&mut rep)),
            Section::Fuzz(n, seed) => ("fuzz", fuzz::run(&mut rep, n, seed)),
            Section::OpenClose(n) => ("openclose", openclose::run(&mut rep, n)),
            Section::Threads => ("threads", threads::run(&mut rep)),
            Section::Lifecycle(n) => ("lifecycle", lifecycle::run(&mut rep, n)),
        };
        if let Err(e) = result {
            rep.check(&format!("{name}_setup"), Err(e));
        }
        if sub == "all" {
            let (c1, f1) = rep.counts();
            rep.note(&format!("{name}: {} checks, {} failures", c1 - c0, f1 - f0));
        }
    }
    println!("{}", rep.summary(sub));
    std::process::exit(if rep.failures() == 0 { 0 } else { 1 });
}

enum Section {
    Protocol,
    Fuzz(u64, u64),
    OpenClose(u64),
    Threads,
    Lifecycle(u64),
}

fn sub_max_args(sub: &str) -> usize {
    match sub {
        "fuzz" => 3,
        "openclose" | "lifecycle" => 2,
        _ => 1,
    }
}

fn usage_error(msg: &str) -> ! {
    eprintln!("lgprobe: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}
