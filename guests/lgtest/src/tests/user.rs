//! `lgtest=user`: processes in ring 3 on the small user space of `src/user/`. Each test spawns
//! user programs (`user/programs.rs`), runs them until they have all ended, and checks their
//! exit statuses, what they reported, and the kernel's counters. The last tests are
//! benchmarks (10,000 context switches, 100,000 page faults) and leak checks.

use super::bench::Snapshot;
use super::{detail, ensure, ensure_eq, fail, Detail, Test, TestResult};
use crate::user::{self, Exit, Fault, Limits, Program, RunResult};
use crate::{hcall, paging};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use lg_core::abi::{rflags, vector};
use lgtest::uapi::{self, err, errno};
use lgtest::KERNEL_BASE;

const TESTS: &[Test] = &[
    ("syscall-bounce", syscall_bounce),
    ("exit-codes", exit_codes),
    ("write-getpid", write_getpid),
    ("syscall-rflags-mask", syscall_rflags_mask),
    ("syscall-preserves-registers", preserves_registers),
    ("user-gs", user_gs),
    ("isolation-same-va", same_va),
    ("isolation-private-va", private_va),
    ("kernel-memory-killed", kernel_memory),
    ("write-to-code-killed", write_to_code),
    ("user-ud", user_ud),
    ("user-privileged-gp", user_privileged),
    ("user-int1f-gp", user_int1f),
    ("mmap-demand-paging", mmap_demand),
    ("fork", fork),
    ("fork-cow", fork_cow),
    ("preemption", preemption),
    ("process-table-full", table_full),
    ("context-switches", context_switches),
    ("syscall-cost", syscall_cost),
    ("page-faults", page_faults),
    ("entry-invariants", entry_invariants),
    ("no-leaks", no_leaks),
];

/// Free frames once user mode was set up: every test must give back what it took.
static BASELINE: AtomicU64 = AtomicU64::new(0);

pub fn run() -> ! {
    if !user::init() {
        hcall::crash(b"lgtest: out of memory for user mode");
    }
    BASELINE.store(paging::free_frames(), Relaxed);
    super::run_suite(TESTS, user::reset, || {})
}

fn spawn(program: Program, args: [u64; 3]) -> Result<u64, Detail> {
    user::spawn(program, args).map_err(|e| detail(format_args!("spawning {program:?}: {e:?}")))
}

/// Run everything spawned to the end.
fn run_all() -> Result<RunResult, Detail> {
    run_with(Limits::DEFAULT)
}

fn run_with(limits: Limits) -> Result<RunResult, Detail> {
    let r = user::run(limits);
    ensure!(
        !r.timed_out,
        "processes still running after {} s",
        limits.timeout_ns / 1_000_000_000
    );
    Ok(r)
}

fn exited(pid: u64, code: u64) -> TestResult {
    match user::exit_of(pid) {
        Some(Exit::Code(c)) if c == code => Ok(()),
        other => fail!("pid {pid}: {other:?}, want exit({code})"),
    }
}

fn killed(pid: u64, vector: u8) -> Result<Fault, Detail> {
    match user::exit_of(pid) {
        Some(Exit::Killed(f)) if f.vector == u64::from(vector) => Ok(f),
        other => fail!("pid {pid}: {other:?}, want killed by vector {vector}"),
    }
}

fn reports_eq(pid: u64, want: &[u64]) -> TestResult {
    let got = user::reports(pid);
    ensure!(
        got.as_slice() == want,
        "pid {pid} reported {:x?}, want {:x?}",
        got.as_slice(),
        want
    );
    Ok(())
}

/// Entries that broke docs/abi.md §2.6 since `before`.
fn no_bad_entries(before: &user::Stats) -> TestResult {
    let bad = user::stats().bad_entries - before.bad_entries;
    ensure!(
        bad == 0,
        "{bad} bad entries, first: {}",
        user::first_bad_entry()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------

/// `syscall` reaches the registered entry (not as #UD), with the state §2.6 describes.
fn syscall_bounce() -> TestResult {
    let before = user::stats();
    let pid = spawn(Program::GetpidLoop, [3, 0, 0])?;
    run_all()?;
    exited(pid, 0)?;
    let after = user::stats();
    let ud = after.ud_syscalls - before.ud_syscalls;
    ensure!(
        ud == 0,
        "{ud} syscalls arrived as #UD (the guest emulated them): the host does not bounce syscall"
    );
    ensure_eq!(after.syscalls - before.syscalls, 4, "system call entries");
    no_bad_entries(&before)
}

fn exit_codes() -> TestResult {
    let codes = [0, 7, 255, 0x1234];
    let mut pids = [0; 4];
    for (pid, code) in pids.iter_mut().zip(codes) {
        *pid = spawn(Program::Exit, [code, 0, 0])?;
    }
    run_all()?;
    for (pid, code) in pids.into_iter().zip(codes) {
        exited(pid, code)?;
    }
    Ok(())
}

/// `write` returns the length (and -EFAULT for kernel or unmapped buffers); `getpid` is each
/// process's own.
fn write_getpid() -> TestResult {
    const LINE: u64 = "user: hello from ring 3\n".len() as u64;
    let pids = [
        spawn(Program::Hello, [5, 0, 0])?,
        spawn(Program::Hello, [5, 0, 0])?,
    ];
    run_all()?;
    ensure!(pids[0] != pids[1], "two processes with pid {}", pids[0]);
    for pid in pids {
        exited(pid, 5)?;
        reports_eq(pid, &[LINE, pid, err(errno::EFAULT), err(errno::EFAULT)])?;
    }
    Ok(())
}

/// The entry runs with TF/DF/AC/NT/IOPL and the virtual IF masked, while the user's AC and DF
/// come back in R11 and are restored by IRET.
fn syscall_rflags_mask() -> TestResult {
    let before = user::stats();
    let pid = spawn(Program::Rflags, [0; 3])?;
    run_all()?;
    exited(pid, 0)?;
    let flags = user::reports(pid).as_slice().first().copied().unwrap_or(0);
    let acdf = rflags::AC | rflags::DF;
    ensure!(
        flags & acdf == acdf,
        "user RFLAGS after the syscall {flags:#x}: AC/DF lost"
    );
    no_bad_entries(&before)
}

/// Every register but RAX, RCX and R11 survives system calls and preemption.
fn preserves_registers() -> TestResult {
    let pids = [
        spawn(Program::Regs, [20, 0, 0])?,
        spawn(Program::Regs, [20, 0, 0])?,
    ];
    run_all()?;
    for pid in pids {
        exited(pid, 0)?;
        reports_eq(pid, &[0])?;
    }
    Ok(())
}

/// `%gs` is the user's base in user mode (per process) and the kernel's in the kernel.
fn user_gs() -> TestResult {
    let before = user::stats();
    let pids = [spawn(Program::Gs, [0; 3])?, spawn(Program::Gs, [0; 3])?];
    run_all()?;
    for pid in pids {
        exited(pid, 0)?;
        reports_eq(pid, &[pid, pid])?;
    }
    let bad = user::stats().bad_kernel_gs - before.bad_kernel_gs;
    ensure!(bad == 0, "{bad} kernel entries with the user's GS base");
    Ok(())
}

/// Two processes write different values at the same address; each reads its own back.
fn same_va() -> TestResult {
    let (a, b) = (0x1111_1111, 0x2222_2222);
    let pids = [
        spawn(Program::SameVa, [a, 5, 0])?,
        spawn(Program::SameVa, [b, 5, 0])?,
    ];
    run_all()?;
    for (pid, v) in pids.into_iter().zip([a, b]) {
        exited(pid, 0)?;
        reports_eq(pid, &[v])?;
    }
    Ok(())
}

/// A private page of one process at address X: another process that maps its own X sees its
/// own memory; one that does not is killed by a page fault.
fn private_va() -> TestResult {
    let x = uapi::MMAP_BASE;
    let a = spawn(Program::Private, [0xaaaa, 0, 0])?;
    let b = spawn(Program::Peek, [x, 0, 0])?;
    let c = spawn(Program::Private, [0xcccc, 0, 0])?;
    run_all()?;
    exited(a, 0)?;
    reports_eq(a, &[x, 0, 0xaaaa])?;
    exited(c, 0)?;
    reports_eq(c, &[x, 0, 0xcccc])?;
    let f = killed(b, vector::PF)?;
    ensure_eq!(
        f.error,
        mm_err(false, false),
        "#PF error (user read, not present)"
    );
    ensure_eq!(f.cr2, x, "CR2");
    Ok(())
}

/// The page-fault error code of a user access: P (protection) or not present, W.
fn mm_err(present: bool, write: bool) -> u64 {
    4 | u64::from(present) | u64::from(write) << 1
}

/// Reading or writing kernel memory from ring 3: #PF with U (and P: the page is there, but
/// supervisor-only) delivered to the guest kernel, which kills the process.
fn kernel_memory() -> TestResult {
    let addr = KERNEL_BASE + 0x20_0000;
    let r = spawn(Program::Peek, [addr, 0, 0])?;
    let w = spawn(Program::Poke, [addr, 0, 0])?;
    run_all()?;
    for (pid, write, program) in [(r, false, Program::Peek), (w, true, Program::Poke)] {
        let f = killed(pid, vector::PF)?;
        ensure!(f.error & 4 != 0, "#PF error {:#x} without U", f.error);
        ensure_eq!(f.error, mm_err(true, write), "#PF error");
        ensure_eq!(f.cr2, addr, "CR2");
        ensure_eq!(f.rip, program.entry(), "RIP");
        ensure!(
            user::reports(pid).as_slice().is_empty(),
            "pid {pid} went on"
        );
    }
    Ok(())
}

/// The code is mapped read-only: a write is a protection fault and the process dies.
fn write_to_code() -> TestResult {
    let pid = spawn(Program::Poke, [uapi::CODE_BASE, 0, 0])?;
    run_all()?;
    let f = killed(pid, vector::PF)?;
    ensure_eq!(f.error, mm_err(true, true), "#PF error");
    ensure_eq!(f.cr2, uapi::CODE_BASE, "CR2");
    Ok(())
}

fn user_ud() -> TestResult {
    let pid = spawn(Program::Ud2, [0; 3])?;
    run_all()?;
    let f = killed(pid, vector::UD)?;
    ensure_eq!(f.rip, Program::Ud2.entry(), "RIP");
    Ok(())
}

/// Privileged instructions at ring 3 are #GP(0), including those the host emulates for the
/// guest kernel (docs/abi.md §2.7).
fn user_privileged() -> TestResult {
    let programs = [
        Program::Cli,
        Program::Hlt,
        Program::ReadCr0,
        Program::Wbinvd,
    ];
    let mut pids = [0; 4];
    for (pid, p) in pids.iter_mut().zip(programs) {
        *pid = spawn(p, [0; 3])?;
    }
    run_all()?;
    for (pid, p) in pids.into_iter().zip(programs) {
        let f = killed(pid, vector::GP).map_err(|d| detail(format_args!("{p:?}: {d}")))?;
        ensure_eq!(f.error, 0, "#GP error");
        ensure_eq!(f.rip, p.entry(), "RIP");
    }
    Ok(())
}

/// `int $0x1f` (the hypercall gate, DPL 1) from ring 3: #GP with the gate's selector-style error
/// code, 0x1f * 8 + 2 (0xfa); TCG reports 0x1f * 16 + 2 (0x1f2).
fn user_int1f() -> TestResult {
    let pid = spawn(Program::Int1f, [0; 3])?;
    run_all()?;
    let f = killed(pid, vector::GP)?;
    ensure!(
        f.error == 0xfa || f.error == 0x1f2,
        "#GP error {:#x}, want 0xfa (or 0x1f2)",
        f.error
    );
    ensure_eq!(f.rip, Program::Int1f.entry(), "RIP");
    Ok(())
}

/// `mmap` returns a region nothing maps until touched; each first touch is one page fault.
fn mmap_demand() -> TestResult {
    const PAGES: u64 = 16;
    let pid = spawn(Program::MmapTouch, [PAGES, 0, 0])?;
    run_all()?;
    exited(pid, 0)?;
    reports_eq(pid, &[uapi::MMAP_BASE, 0])?;
    let stats = user::stats_of(pid).unwrap_or_default();
    ensure_eq!(stats.demand_faults, PAGES, "demand faults");
    Ok(())
}

/// `fork` is 0 in the child and the child's pid in the parent, whose `waitpid` (which blocks
/// while the child runs) returns the child's exit status.
fn fork() -> TestResult {
    let parent = spawn(Program::Fork, [0; 3])?;
    run_all()?;
    exited(parent, 0)?;
    let got = user::reports(parent);
    let child = got.as_slice().first().copied().unwrap_or(0);
    ensure!(
        child != 0 && child != parent,
        "fork returned {child} in the parent (pid {parent})"
    );
    reports_eq(parent, &[child, 42, err(errno::ECHILD)])?;
    reports_eq(child, &[0, child])?;
    ensure!(
        user::exit_of(child).is_none(),
        "the child was not reaped by waitpid"
    );
    Ok(())
}

/// After `fork`, writes by the child (to its data and an mmap page) are its own; the parent
/// still sees its values, and once the child is gone its own write needs no copy.
fn fork_cow() -> TestResult {
    let (v1, v2) = (0x1111, 0x2222);
    let before = user::stats();
    let parent = spawn(Program::Cow, [v1, v2, 0])?;
    run_all()?;
    exited(parent, 0)?;
    let child = user::reports(parent)
        .as_slice()
        .first()
        .copied()
        .unwrap_or(0);
    reports_eq(parent, &[child, v1, v1, 0, v1 + 1])?;
    reports_eq(child, &[v2, v2])?;
    let after = user::stats();
    let (copies, reuses) = (
        after.cow_copies - before.cow_copies,
        after.cow_reuses - before.cow_reuses,
    );
    ensure!(
        copies >= 2,
        "{copies} copy-on-write copies, want at least 2"
    );
    ensure!(
        reuses >= 1,
        "{reuses} copy-on-write pages reused, want at least 1"
    );
    Ok(())
}

/// Two processes that never give up the CPU both keep running: the timer preempts them.
fn preemption() -> TestResult {
    const TICKS: u64 = 20;
    let pids = [spawn(Program::Spin, [0; 3])?, spawn(Program::Spin, [0; 3])?];
    let r = run_with(Limits {
        ticks: Some(TICKS),
        ..Limits::DEFAULT
    })?;
    ensure_eq!(r.ticks, TICKS, "timer ticks");
    for pid in pids {
        ensure!(
            user::exit_of(pid) == Some(Exit::Stopped),
            "pid {pid}: {:?}",
            user::exit_of(pid)
        );
        let slices = user::stats_of(pid).unwrap_or_default().slices;
        ensure!(
            slices >= TICKS / 2 - 1,
            "pid {pid} ran {slices} times in {TICKS} ticks"
        );
    }
    Ok(())
}

/// Every slot can hold a process; one more is refused.
fn table_full() -> TestResult {
    let mut n = 0;
    while user::spawn(Program::Exit, [n, 0, 0]).is_ok() {
        n += 1;
    }
    ensure_eq!(n, user::process::MAX_PROCS as u64, "processes spawned");
    run_all()?;
    Ok(())
}

/// `bench: <name> <cycles> cycles <exits> exits <ns> ns`, per operation, around `f`.
fn measure(name: &str, ops: u64, f: impl FnOnce() -> TestResult) -> TestResult {
    let start = Snapshot::now();
    f()?;
    start.report(name, ops);
    Ok(())
}

/// Two processes ping-ponging with `yield`: 10,000 switches, counted; then 2,000 with the
/// switch's hypercalls made one by one instead of through the async ring.
fn context_switches() -> TestResult {
    for (name, rounds, queued) in [
        ("user-context-switch", 5_000, true),
        ("user-context-switch-sync", 1_000, false),
    ] {
        user::set_async_switch(queued);
        let before = user::stats().switches;
        let mut pids = [0; 2];
        let result = measure(name, 2 * rounds, || {
            pids = [
                spawn(Program::PingPong, [rounds, 0, 0])?,
                spawn(Program::PingPong, [rounds, 0, 0])?,
            ];
            run_all().map(|_| ())
        });
        user::set_async_switch(true);
        result?;
        for pid in pids {
            exited(pid, 0)?;
        }
        let switches = user::stats().switches - before;
        println!("context-switches: {switches} switches ({name})");
        ensure!(
            switches >= 2 * rounds,
            "{switches} switches for {} yields",
            2 * rounds
        );
        user::reset();
    }
    Ok(())
}

/// The cost of a system call (`getpid`) from ring 3.
fn syscall_cost() -> TestResult {
    const N: u64 = 10_000;
    let mut pid = 0;
    measure("user-syscall", N, || {
        pid = spawn(Program::GetpidLoop, [N, 0, 0])?;
        run_all().map(|_| ())
    })?;
    exited(pid, 0)
}

/// 100,000 demand-paging faults: 5 processes, each mapping 2,000 pages 10 times over, touching
/// every page, and unmapping them.
fn page_faults() -> TestResult {
    const BATCHES: u64 = 5;
    const ROUNDS: u64 = 10;
    const PAGES: u64 = 2_000;
    let total = BATCHES * ROUNDS * PAGES;
    let before = user::stats().demand_faults;
    measure("user-page-fault", total, || {
        for _ in 0..BATCHES {
            let pid = spawn(Program::PfBench, [ROUNDS, PAGES, 0])?;
            run_all()?;
            exited(pid, 0)?;
            user::reset();
            println!(
                "page-faults: {} of {total}",
                user::stats().demand_faults - before
            );
        }
        Ok(())
    })?;
    ensure_eq!(user::stats().demand_faults - before, total, "demand faults");
    Ok(())
}

/// Over the whole run: every entry from user mode was as §2.6 says, and no `syscall` needed
/// the guest's #UD fallback.
fn entry_invariants() -> TestResult {
    let s = user::stats();
    println!(
        "entry-invariants: {} system calls, {} ticks, {} switches, {} demand faults, {} COW copies, {} kills",
        s.syscalls, s.ticks, s.switches, s.demand_faults, s.cow_copies, s.kills
    );
    ensure!(
        s.bad_entries == 0,
        "{} bad entries, first: {}",
        s.bad_entries,
        user::first_bad_entry()
    );
    ensure_eq!(s.bad_kernel_gs, 0, "entries with the user's GS base");
    ensure_eq!(s.ud_syscalls, 0, "syscalls that arrived as #UD");
    Ok(())
}

/// Every frame and process slot the tests used is free again.
fn no_leaks() -> TestResult {
    ensure_eq!(user::slots_in_use() as u64, 0, "process slots in use");
    ensure_eq!(
        paging::free_frames(),
        BASELINE.load(Relaxed),
        "free frames (vs. after user-mode setup)"
    );
    Ok(())
}
