//! `nativebench`: what the operations the guest benchmarks measure cost natively, in the test VM
//! (`make bench`, tests/vm/scenarios/bench.sh). Every result is TSC cycles per operation, the
//! median of several timed runs (after one untimed warm-up run), printed as
//! `native: <name> <cycles> cycles`:
//!
//! | name | the native operation | its guest counterpart |
//! |---|---|---|
//! | hypercall | a raw `syscall` of getppid: one kernel entry and exit | a NOP hypercall |
//! | getpid | glibc's `getpid()` (a system call: glibc caches nothing) | getpid in a guest process |
//! | page-fault | mmap 256 anonymous pages, write one byte to each, munmap; per page | a guest page fault |
//! | context-switch | two processes on one CPU ping-pong a byte through two pipes; per one-way switch | the same in the guest |
//! | timer-latency | clock_nanosleep 200 µs (timer slack 1 ns); the time slept beyond 200 µs | a guest timer interrupt's lateness |
//!
//! Benchmarks, not tests: nothing here fails on a number. Run it pinned (`taskset -c 0`).

mod stats;

use std::process::ExitCode;
use std::time::Duration;

use stats::{median, ns_to_cycles, per_op, tsc_hz, Options};

/// A TSC read that later loads cannot pass and earlier ones cannot sink below.
#[inline(always)]
fn tsc() -> u64 {
    use core::arch::x86_64::{_mm_lfence, _rdtsc};
    #[allow(unused_unsafe)]
    // SAFETY: lfence and rdtsc exist on every x86_64 CPU; rdtsc is allowed at ring 3 in the VM.
    unsafe {
        _mm_lfence();
        let t = _rdtsc();
        _mm_lfence();
        t
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The TSC rate against CLOCK_MONOTONIC over about 200 ms.
fn measure_tsc_hz() -> Option<u64> {
    let (n0, c0) = (monotonic_ns(), tsc());
    std::thread::sleep(Duration::from_millis(200));
    let (c1, n1) = (tsc(), monotonic_ns());
    tsc_hz(c1.wrapping_sub(c0), n1.saturating_sub(n0))
}

/// One warm-up run, then `runs` timed ones; the median of what `run` returns.
fn median_of(runs: usize, mut run: impl FnMut() -> u64) -> u64 {
    run();
    let mut results: Vec<u64> = (0..runs).map(|_| run()).collect();
    median(&mut results).unwrap_or(0)
}

/// getppid through the `syscall` instruction itself: no libc, one kernel entry and exit.
#[inline(always)]
fn raw_getppid() -> i64 {
    let ret: i64;
    // SAFETY: getppid takes no arguments and touches no memory; `syscall` clobbers rcx and r11.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_getppid => ret,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    ret
}

fn bench_hypercall(runs: usize) -> u64 {
    const N: u64 = 20_000;
    median_of(runs, || {
        let start = tsc();
        for _ in 0..N {
            std::hint::black_box(raw_getppid());
        }
        per_op(tsc() - start, N)
    })
}

fn bench_getpid(runs: usize) -> u64 {
    const N: u64 = 20_000;
    median_of(runs, || {
        let start = tsc();
        for _ in 0..N {
            // SAFETY: getpid has no preconditions.
            std::hint::black_box(unsafe { libc::getpid() });
        }
        per_op(tsc() - start, N)
    })
}

/// Per page: mmap `PAGES` fresh anonymous pages, write a byte to each (one fault each: a zeroed
/// page allocated and mapped), munmap them; `ROUNDS` times per run. The region is smaller than a
/// huge page and marked NOHUGEPAGE, so every touch is a 4 KiB fault.
fn bench_page_fault(runs: usize) -> Option<u64> {
    const PAGES: usize = 256;
    const ROUNDS: usize = 4;
    const PAGE: usize = 4096;
    let mut failed = false;
    let v = median_of(runs, || {
        let start = tsc();
        for _ in 0..ROUNDS {
            // SAFETY: a fresh private anonymous mapping, written only inside its bounds below and
            // unmapped before the next round.
            unsafe {
                let p = libc::mmap(
                    core::ptr::null_mut(),
                    PAGES * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    failed = true;
                    return 0;
                }
                libc::madvise(p, PAGES * PAGE, libc::MADV_NOHUGEPAGE);
                let base = p.cast::<u8>();
                for i in 0..PAGES {
                    core::ptr::write_volatile(base.add(i * PAGE), 1);
                }
                libc::munmap(p, PAGES * PAGE);
            }
        }
        per_op(tsc() - start, (PAGES * ROUNDS) as u64)
    });
    (!failed).then_some(v)
}

/// Pin the calling process (and so its children) to CPU 0.
fn pin_cpu0() -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only touch
    // that set.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn pipe() -> Option<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    (unsafe { libc::pipe(fds.as_mut_ptr()) } == 0).then_some((fds[0], fds[1]))
}

/// Two processes on one CPU pass a byte back and forth through two pipes; each hand-over is one
/// switch (lmbench's lat_ctx with no working set: the pipe read and write are part of the cost).
/// Per one-way switch, i.e. round-trip cycles / 2.
fn bench_context_switch(runs: usize) -> Option<u64> {
    const ROUND_TRIPS: u64 = 1_000;
    if !pin_cpu0() {
        eprintln!("nativebench: cannot pin to CPU 0; context-switch skipped");
        return None;
    }
    let (to_child_r, to_child_w) = pipe()?;
    let (to_parent_r, to_parent_w) = pipe()?;
    // SAFETY: this process has one thread; the child only calls async-signal-safe functions
    // (read, write, close, _exit) before it exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return None;
    }
    if pid == 0 {
        // SAFETY: the descriptors are ours; `b` is a valid one-byte buffer.
        unsafe {
            libc::close(to_child_w);
            libc::close(to_parent_r);
            let mut b = 0u8;
            while libc::read(to_child_r, (&raw mut b).cast(), 1) == 1 {
                if libc::write(to_parent_w, (&raw const b).cast(), 1) != 1 {
                    break;
                }
            }
            libc::_exit(0);
        }
    }
    // SAFETY: the child's ends, closed in the parent.
    unsafe {
        libc::close(to_child_r);
        libc::close(to_parent_w);
    }
    let mut broken = false;
    let v = median_of(runs, || {
        let mut b = 0u8;
        let start = tsc();
        for _ in 0..ROUND_TRIPS {
            // SAFETY: our pipe ends and a valid one-byte buffer.
            let ok = unsafe {
                libc::write(to_child_w, (&raw const b).cast(), 1) == 1
                    && libc::read(to_parent_r, (&raw mut b).cast(), 1) == 1
            };
            if !ok {
                broken = true;
                return 0;
            }
        }
        per_op(tsc() - start, 2 * ROUND_TRIPS)
    });
    // SAFETY: closing our ends ends the child's loop; it is our child to reap.
    unsafe {
        libc::close(to_child_w);
        libc::close(to_parent_r);
        libc::waitpid(pid, core::ptr::null_mut(), 0);
    }
    (!broken).then_some(v)
}

/// How late a 200 µs sleep wakes up: the cycles slept beyond 200 µs, the median of every single
/// sleep of every run (timer interrupt, wake-up, switch back, return to user). Timer slack is
/// set to 1 ns so that the kernel does not add its default 50 µs on purpose.
fn bench_timer_latency(runs: usize, hz: u64) -> u64 {
    const SLEEPS: usize = 40;
    const REQUEST_NS: u64 = 200_000;
    // SAFETY: PR_SET_TIMERSLACK takes a value and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    let requested = ns_to_cycles(REQUEST_NS, hz);
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: REQUEST_NS as libc::c_long,
    };
    let mut samples = Vec::with_capacity(SLEEPS * runs);
    for run in 0..=runs {
        for _ in 0..SLEEPS {
            let start = tsc();
            // SAFETY: `ts` is a valid relative timespec; no remainder is asked for.
            unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts, core::ptr::null_mut()) };
            let slept = tsc() - start;
            if run > 0 {
                samples.push(slept.saturating_sub(requested));
            }
        }
    }
    median(&mut samples).unwrap_or(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Options { runs, names } = match stats::parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("nativebench: {e}\n{}", stats::USAGE);
            return ExitCode::from(2);
        }
    };
    let hz = measure_tsc_hz();
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    match hz {
        Some(hz) => println!(
            "nativebench: tsc {} kHz (against CLOCK_MONOTONIC), cpu {cpu}, median of {runs} runs",
            hz / 1000
        ),
        None => println!("nativebench: tsc rate unknown, cpu {cpu}, median of {runs} runs"),
    }
    for name in names {
        let cycles = match name {
            "hypercall" => Some(bench_hypercall(runs)),
            "getpid" => Some(bench_getpid(runs)),
            "page-fault" => bench_page_fault(runs),
            "context-switch" => bench_context_switch(runs),
            "timer-latency" => hz.map(|hz| bench_timer_latency(runs, hz)),
            _ => None,
        };
        match cycles {
            Some(c) => println!("{}", stats::line(name, c)),
            None => println!("nativebench: {name} skipped (see above)"),
        }
    }
    ExitCode::SUCCESS
}
