//! A small user space (`lgtest=user` and the user-mode hostile modes): ring-3 processes with
//! their own page tables, system calls through the host's `syscall` bounce (docs/abi.md §2.6),
//! demand-paged `mmap`, copy-on-write `fork`, and a preemptive round-robin scheduler.
//!
//! - `programs.rs`: the user programs (assembly linked at 0x40_0000, mapped into every process)
//! - `mm.rs`: address spaces, demand paging, reference-counted frames
//! - `fork.rs`: `fork` and copy-on-write
//! - `process.rs`: the process table, `spawn`, exit and kill
//! - `sched.rs`: round robin, the context switch, entering and leaving user mode
//! - `syscalls.rs`: the system calls
//!
//! Every entry from user mode (exception, interrupt, system call) arrives at [`trap`] on the
//! process's kernel stack with the virtual IF off; it saves the user frame, handles the entry and
//! returns the frame to IRET to. The test code drives it from outside: [`spawn`] processes,
//! [`run`] them until they have all ended, then look at exit statuses, reports and counters.

pub mod fork;
pub mod mm;
pub mod process;
pub mod programs;
pub mod sched;
mod syscalls;

pub use process::{Exit, Fault, ProcStats, SpawnError, Stats};
pub use programs::Program;
pub use sched::{Limits, RunResult};

use crate::traps::{self, TrapFrame, SYSCALL_VECTOR, USER_CS, USER_SS};
use crate::{hcall, irq, shared};
use core::arch::asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use lg_core::abi::{hcall as nr, rflags, vector};
use lgtest::text::FixedStr;
use lgtest::uapi;
use process::{kernel, Kernel};
use sched::Action;

/// What `%gs:0` holds in the kernel: the kernel GS base points at [`PERCPU`].
pub const GS_MAGIC: u64 = 0x7367_6c65_6e72_656b; // "kernelgs"
static PERCPU: [AtomicU64; 2] = [AtomicU64::new(GS_MAGIC), AtomicU64::new(0)];

/// The RFLAGS bits the system call entry clears (Linux's SFMASK): TF, IF, DF, IOPL, NT, AC.
pub const SYSCALL_MASK: u64 =
    rflags::TF | rflags::IF | rflags::DF | rflags::IOPL | rflags::NT | rflags::AC;

static READY: AtomicBool = AtomicBool::new(false);

/// Set up user mode once: reference counts, trap handlers, the system call entry and the kernel
/// GS base. False if memory is short.
pub fn init() -> bool {
    if READY.load(Relaxed) {
        return true;
    }
    if !mm::init() {
        return false;
    }
    traps::install_exceptions();
    traps::install_irq();
    // SAFETY: the entry is `lg_syscall_entry`, which follows the trap-frame protocol; the GS
    // base is a static of ours (nothing else in the kernel uses GS).
    unsafe {
        hcall::hcall(
            nr::SET_SYSCALL_ENTRY,
            traps::syscall_entry(),
            SYSCALL_MASK,
            0,
            0,
            0,
        );
        hcall::hcall(
            nr::SET_SEGMENT_BASE,
            nr::SEG_GS_KERNEL,
            PERCPU.as_ptr() as u64,
            0,
            0,
            0,
        );
    }
    READY.store(true, Relaxed);
    true
}

/// An entry from user mode (called by `traps::dispatch`): returns the frame to IRET to.
pub fn trap(frame: &mut TrapFrame) -> *mut TrapFrame {
    // SAFETY: trap handlers do not nest, and the test code holds no reference while processes
    // run (`process::kernel`).
    let k = unsafe { kernel() };
    let Some(cur) = k.current else {
        sched::no_current(frame)
    };
    check_entry(k, cur, frame);
    k.procs[cur].regs = *frame;
    let action = match frame.vector {
        SYSCALL_VECTOR => {
            k.stats.syscalls += 1;
            syscalls::syscall(k, cur)
        }
        v if v == irq::VECTOR => sched::timer_irq(k),
        v if v == u64::from(vector::UD) && syscall_insn_at(k, cur, frame.rip) => {
            // The host did not bounce this `syscall` (docs/abi.md §2.6): do what it should
            // have, so the other tests still run; `syscall-bounce` reports it.
            k.stats.ud_syscalls += 1;
            let r = &mut k.procs[cur].regs;
            r.rcx = r.rip + 2;
            r.r11 = r.rflags;
            r.rip += 2;
            syscalls::syscall(k, cur)
        }
        v if v == u64::from(vector::PF) => page_fault(k, cur, frame),
        _ => unhandled(k, frame, 0),
    };
    sched::after(k, cur, action, frame)
}

/// Is the instruction at user `rip` a `syscall` (0f 05)?
fn syscall_insn_at(k: &Kernel, cur: usize, rip: u64) -> bool {
    let p = &k.procs[cur];
    let mut insn = [0u8; 2];
    uapi::is_user_range(rip, 2)
        && mm::copy_from_user(p.pml4, &p.regions, rip, &mut insn).is_ok()
        && insn == [0x0f, 0x05]
}

/// Consecutive page faults that found nothing to fix (a guard against looping on one).
static SPURIOUS: AtomicU64 = AtomicU64::new(0);

fn page_fault(k: &mut Kernel, cur: usize, frame: &TrapFrame) -> Action {
    let cr2 = shared::cr2().load(Relaxed);
    let err = frame.error;
    let p = &mut k.procs[cur];
    let fixable = err & (mm::PF_RSVD | mm::PF_FETCH) == 0 && uapi::is_user_range(cr2, 1);
    let resolved = if fixable {
        mm::resolve(p.pml4, &p.regions, cr2, err & mm::PF_WRITE != 0).ok()
    } else {
        None
    };
    let count = |n: &mut u64| *n += 1;
    match resolved {
        Some(mm::Resolved::Demand) => {
            count(&mut p.stats.demand_faults);
            count(&mut k.stats.demand_faults);
        }
        Some(mm::Resolved::CowCopy) => {
            count(&mut p.stats.cow_copies);
            count(&mut k.stats.cow_copies);
        }
        Some(mm::Resolved::CowReuse) => {
            count(&mut p.stats.cow_reuses);
            count(&mut k.stats.cow_reuses);
        }
        Some(mm::Resolved::Spurious) if SPURIOUS.fetch_add(1, Relaxed) < 3 => {
            hcall::flush_one(cr2);
            return Action::Resume;
        }
        Some(mm::Resolved::Spurious) | None => return unhandled(k, frame, cr2),
    }
    SPURIOUS.store(0, Relaxed);
    Action::Resume
}

/// An exception the kernel does not handle for a process: it is killed.
fn unhandled(k: &mut Kernel, frame: &TrapFrame, cr2: u64) -> Action {
    SPURIOUS.store(0, Relaxed);
    let fault = Fault {
        vector: frame.vector,
        error: frame.error,
        rip: frame.rip,
        cr2,
    };
    let int1f_gp = fault.vector == u64::from(vector::GP) && matches!(fault.error, 0xfa | 0x1f2);
    if k.crash_on_user_hypercall && int1f_gp {
        println!(
            "lgtest: user int $0x1f at rip {:#x} raised #GP error {:#x}",
            fault.rip, fault.error
        );
        hcall::crash(b"user int $0x1f raised #GP");
    }
    Action::End(Exit::Killed(fault))
}

/// Check what docs/abi.md §2.6 promises about an entry from user mode; count (and describe the
/// first of) the entries that break it.
fn check_entry(k: &mut Kernel, cur: usize, f: &TrapFrame) {
    let gs: u64;
    // SAFETY: the kernel GS base points at `PERCPU` (set in `init`), mapped in every process.
    unsafe { asm!("mov %gs:0, {}", out(reg) gs, options(att_syntax, nostack, readonly)) };
    if gs != GS_MAGIC {
        k.stats.bad_kernel_gs += 1;
    }
    let mut bad = FixedStr::<160>::new();
    let sp0 = process::kstack_top(cur);
    let rip_slot = &raw const f.rip as u64;
    if rip_slot != sp0 - 40 {
        let _ = write!(
            bad,
            "frame RIP slot {rip_slot:#x}, want sp0 - 40 = {:#x}; ",
            sp0 - 40
        );
    }
    if f.cs != USER_CS || f.ss != USER_SS {
        let _ = write!(bad, "CS/SS {:#x}/{:#x}; ", f.cs, f.ss);
    }
    if f.rflags & rflags::IF == 0 {
        let _ = write!(bad, "frame RFLAGS {:#x} without IF; ", f.rflags);
    }
    if shared::irq_enabled().load(Relaxed) != 0 {
        bad.write_str("virtual IF on at entry; ").ok();
    }
    if f.vector == SYSCALL_VECTOR {
        if f.rcx != f.rip || f.r11 != f.rflags {
            let _ = write!(
                bad,
                "RCX {:#x} / R11 {:#x} vs frame RIP {:#x} / RFLAGS {:#x}; ",
                f.rcx, f.r11, f.rip, f.rflags
            );
        }
        // The real IF is always set at ring 1: the mask's IF is the virtual one, checked above.
        let entry = traps::syscall_entry_rflags();
        if entry & SYSCALL_MASK & !rflags::IF != 0 {
            let _ = write!(bad, "entry RFLAGS {entry:#x} not masked; ");
        }
    }
    if !bad.is_empty() {
        k.stats.bad_entries += 1;
        if k.first_bad_entry.is_empty() {
            let _ = write!(k.first_bad_entry, "vector {:#x}: {}", f.vector, bad);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The test code's side (no process is running while these are called).
// ---------------------------------------------------------------------------------------------

fn with<R>(f: impl FnOnce(&mut Kernel) -> R) -> R {
    // SAFETY: called by the test code only, never while a process runs (between `run`s), so no
    // trap handler holds the state.
    f(unsafe { kernel() })
}

pub fn spawn(program: Program, args: [u64; 3]) -> Result<u64, SpawnError> {
    with(|k| process::spawn(k, program, args))
}

/// Run everything spawned until it has all ended (or `limits` strike).
pub fn run(limits: Limits) -> RunResult {
    sched::run(limits)
}

/// How process `pid` ended (`None`: still there, or already collected).
pub fn exit_of(pid: u64) -> Option<Exit> {
    with(|k| k.slot_of(pid).and_then(|s| k.procs[s].exit))
}

pub fn stats_of(pid: u64) -> Option<ProcStats> {
    with(|k| k.slot_of(pid).map(|s| k.procs[s].stats))
}

/// Up to 16 values `pid` reported, in order.
pub fn reports(pid: u64) -> Reports {
    with(|k| {
        let mut r = Reports::default();
        for v in k.log.of(pid) {
            r.push(v);
        }
        r
    })
}

pub fn stats() -> Stats {
    with(|k| k.stats)
}

pub fn first_bad_entry() -> FixedStr<160> {
    with(|k| {
        let mut s = FixedStr::new();
        let _ = s.write_str(k.first_bad_entry.as_str());
        s
    })
}

/// Forget every ended process and the report log (the counters stay: see [`reset_stats`]).
pub fn reset() {
    with(|k| {
        process::reap_all(k);
        k.clear_log();
    });
}

/// How many process slots are in use (0 after a `run` and a `reset`).
pub fn slots_in_use() -> usize {
    with(|k| {
        k.procs
            .iter()
            .filter(|p| p.state != process::State::Free)
            .count()
    })
}

pub fn set_async_switch(on: bool) {
    with(|k| k.async_switch = on);
}

pub fn set_crash_on_user_hypercall(on: bool) {
    with(|k| k.crash_on_user_hypercall = on);
}

/// What one process reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reports {
    vals: [u64; 16],
    len: usize,
}

impl Reports {
    fn push(&mut self, v: u64) {
        if let Some(slot) = self.vals.get_mut(self.len) {
            *slot = v;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[u64] {
        self.vals.get(..self.len).unwrap_or(&[])
    }
}
