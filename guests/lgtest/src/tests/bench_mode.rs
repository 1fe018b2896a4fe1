//! `lgtest=bench`: the guest's side of `make bench` (tests/vm/scenarios/bench.sh), one
//! `bench: <name> <cycles> cycles <exits> exits <ns> ns` line per operation that
//! tests/nativebench measures natively, with the same meaning:
//!
//! - `hypercall`: the cheapest hypercall (FLUSH_ASYNC), one kernel entry and exit
//! - `getpid`: `getpid` from a process in ring 3
//! - `page-fault`: mmap 256 pages, write a byte to each, munmap; per page
//! - `context-switch`: two processes ping-ponging with `yield`; per one-way switch
//! - `timer-latency`: how late a 200 µs one-shot timer wakes HALT (cycles beyond 200 µs)
//!
//! Benchmarks, not tests: nothing fails on a number; a setup failure crashes the guest.

use super::bench::{self, rdtsc, rdtsc_works, Snapshot};
use crate::user::{self, Exit, Limits, Program};
use crate::{hcall, irq, shared, traps};
use core::sync::atomic::Ordering::Relaxed;

pub fn run() -> ! {
    traps::install_exceptions();
    traps::install_irq();
    if !rdtsc_works() {
        println!("bench: skipped (rdtsc traps at ring 1)");
        hcall::shutdown();
    }
    if !user::init() {
        hcall::crash(b"lgtest: out of memory for user mode");
    }
    bench::hypercall();
    getpid();
    page_fault();
    context_switch();
    timer_latency();
    hcall::shutdown()
}

/// Spawn `program` (twice if `pair`), run to the end, and insist on exit(0).
fn run_programs(program: Program, args: [u64; 3], pair: bool) {
    let count = if pair { 2 } else { 1 };
    let mut pids = [0; 2];
    for pid in pids.iter_mut().take(count) {
        *pid = user::spawn(program, args).unwrap_or_else(|e| {
            crate::crash_fmt(format_args!("bench: spawning {program:?}: {e:?}"))
        });
    }
    user::run(Limits::DEFAULT);
    for &pid in pids.iter().take(count) {
        let exit = user::exit_of(pid);
        if exit != Some(Exit::Code(0)) {
            crate::crash_fmt(format_args!(
                "bench: {program:?} (pid {pid}) ended {exit:?}"
            ));
        }
    }
    user::reset();
}

fn getpid() {
    const N: u64 = 10_000;
    let start = Snapshot::now();
    run_programs(Program::GetpidLoop, [N, 0, 0], false);
    start.report("getpid", N);
}

fn page_fault() {
    const ROUNDS: u64 = 20;
    const PAGES: u64 = 256;
    let start = Snapshot::now();
    run_programs(Program::PfBench, [ROUNDS, PAGES, 0], false);
    start.report("page-fault", ROUNDS * PAGES);
}

fn context_switch() {
    const YIELDS: u64 = 2_000;
    let before = user::stats().switches;
    let start = Snapshot::now();
    run_programs(Program::PingPong, [YIELDS, 0, 0], true);
    start.report("context-switch", user::stats().switches - before);
}

fn timer_latency() {
    const N: u64 = 100;
    const DELAY_NS: u64 = 200_000;
    let khz = tsc_khz();
    let due = DELAY_NS * khz / 1_000_000;
    let start = Snapshot::now();
    let mut late = 0;
    for _ in 0..N {
        let t0 = rdtsc();
        hcall::set_clockevent(DELAY_NS);
        // Returns once the timer's interrupt has been delivered (at once if it already fired).
        hcall::halt();
        irq::disable();
        late += (rdtsc() - t0).saturating_sub(due);
    }
    // The exits and time are per wake-up; the cycles are the lateness alone.
    start.report_cycles("timer-latency", N, late / N);
}

/// The TSC rate: the host's, or measured against the wall clock over 50 ms.
fn tsc_khz() -> u64 {
    let khz = shared::tsc_khz().load(Relaxed);
    if khz != 0 {
        return khz;
    }
    let (c0, t0) = (rdtsc(), hcall::wallclock_ns());
    let mut t1 = t0;
    while t1 - t0 < 50_000_000 {
        t1 = hcall::wallclock_ns();
    }
    (rdtsc() - c0) * 1_000_000 / (t1 - t0)
}
