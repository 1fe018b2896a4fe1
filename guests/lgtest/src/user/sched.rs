//! The scheduler: round robin over the runnable processes, preemptive on a 2 ms timer tick, and
//! switching on `yield`, `exit`, `waitpid` and kills.
//!
//! A switch: the user frame is already saved (every entry from user mode saves it), then
//! `NEW_PGTABLE(next PML4)`, `SET_STACK(next kernel stack)`, `SET_SEGMENT_BASE(user GS)`, and an
//! IRET from a copy of the next process's frame at the top of its own kernel stack. With
//! [`Kernel::async_switch`] (the default) the three calls go into the async ring, which the host
//! drains at the IRET's exit: one exit per switch instead of four.
//!
//! The test code enters with [`run`]: `lg_sched_enter` saves its callee-saved registers and
//! stack pointer and IRETs into the first process; when nothing is runnable any more,
//! `lg_sched_leave` (a longjmp from whatever trap handler noticed) returns from `run`.

use super::process::{self, kstack_top, Exit, Kernel, State, MAX_PROCS};
use crate::traps::{self, TrapFrame};
use crate::{hcall, irq, shared};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use lg_core::abi::{self, hcall as nr};
use lgtest::regions::round_robin;
use lgtest::uapi;

/// The scheduler's time slice.
pub const TICK_NS: u64 = 2_000_000;

global_asm!(
    r#"
    .section .text.sched, "ax", @progbits
    # lg_sched_enter(saved_sp: *mut u64 [rdi], frame: *mut TrapFrame [rsi])
    .global lg_sched_enter
lg_sched_enter:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, (%rdi)
    mov %rsi, %rsp
    jmp {trap_return}

    # lg_sched_leave(saved_sp [rdi]): back to lg_sched_enter's caller.
    .global lg_sched_leave
lg_sched_leave:
    mov %rdi, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret
"#,
    trap_return = sym lg_trap_return_sym,
    options(att_syntax)
);

unsafe extern "C" {
    #[link_name = "lg_trap_return"]
    fn lg_trap_return_sym();
    fn lg_sched_enter(saved_sp: *mut u64, frame: *mut TrapFrame);
    fn lg_sched_leave(saved_sp: u64) -> !;
}

/// The test code's stack pointer while processes run.
static DRIVER_SP: AtomicU64 = AtomicU64::new(0);

/// How long [`run`] may go on.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Stop every process after this many timer ticks (for processes that never end).
    pub ticks: Option<u64>,
    /// Stop everything after this much wall-clock time (a safety net against a hung test).
    pub timeout_ns: u64,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        ticks: None,
        timeout_ns: 20_000_000_000,
    };
}

/// The limits of the current run, and whether they struck.
static TICK_LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);
static DEADLINE: AtomicU64 = AtomicU64::new(u64::MAX);
static RUN_TICKS: AtomicU64 = AtomicU64::new(0);
static TIMED_OUT: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, Debug)]
pub struct RunResult {
    pub ticks: u64,
    pub timed_out: bool,
}

/// Run the runnable processes until none is left (all ended, or stopped by `limits`).
pub fn run(limits: Limits) -> RunResult {
    TICK_LIMIT.store(limits.ticks.unwrap_or(u64::MAX), Relaxed);
    DEADLINE.store(
        hcall::wallclock_ns().saturating_add(limits.timeout_ns),
        Relaxed,
    );
    RUN_TICKS.store(0, Relaxed);
    TIMED_OUT.store(0, Relaxed);
    let frame = {
        // SAFETY: no process runs; the reference ends before user mode is entered.
        let k = unsafe { process::kernel() };
        let Some(first) = round_robin(MAX_PROCS, None, |i| runnable(k, i)) else {
            return result();
        };
        hcall::set_clockevent(TICK_NS);
        switch_to(k, first)
    };
    // SAFETY: `frame` is a user frame on the first process's kernel stack, whose tables and
    // stack `switch_to` installed; `lg_sched_leave` comes back here with the callee-saved
    // registers restored, so to Rust this is an ordinary call.
    unsafe { lg_sched_enter(DRIVER_SP.as_ptr(), frame) };
    result()
}

fn result() -> RunResult {
    RunResult {
        ticks: RUN_TICKS.load(Relaxed),
        timed_out: TIMED_OUT.load(Relaxed) != 0,
    }
}

fn runnable(k: &Kernel, slot: usize) -> bool {
    k.procs[slot].state == State::Runnable
}

/// What the handler of an entry from user mode decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Back to the same process with its (possibly updated) saved registers.
    Resume,
    /// Let the next runnable process have the CPU (`yield`).
    Yield,
    /// A timer tick: like `Yield`, and the limits are checked.
    Tick,
    /// The process cannot run (`waitpid`).
    Block,
    /// The process ends.
    End(Exit),
}

/// Carry out `action` for slot `cur` (whose registers are saved) and return the frame to IRET
/// to: `frame`, updated, if the process goes on; the next process's, on its own kernel stack.
pub fn after(k: &mut Kernel, cur: usize, action: Action, frame: &mut TrapFrame) -> *mut TrapFrame {
    match action {
        Action::Resume => {
            *frame = k.procs[cur].regs;
            return frame;
        }
        Action::Yield | Action::Block => {}
        Action::Tick => {
            let ticks = RUN_TICKS.fetch_add(1, Relaxed) + 1;
            // The host refreshes the shared page's clock at every interrupt delivery: no
            // GET_WALLCLOCK exit needed on every tick.
            let late = shared::wallclock_ns().load(Relaxed) > DEADLINE.load(Relaxed);
            if late {
                println!("lgtest: user processes still running at the deadline: stopping them");
                TIMED_OUT.store(1, Relaxed);
            }
            if late || ticks >= TICK_LIMIT.load(Relaxed) {
                stop_all(k);
                leave(k);
            }
            hcall::set_clockevent(TICK_NS);
        }
        Action::End(exit) => process::end(k, cur, exit),
    }
    match round_robin(MAX_PROCS, Some(cur), |i| runnable(k, i)) {
        Some(next) if next == cur => {
            *frame = k.procs[cur].regs;
            frame
        }
        Some(next) => switch_to(k, next),
        None => {
            // Nothing runnable: everyone ended (or, through a bug, waits forever).
            stop_all(k);
            leave(k)
        }
    }
}

/// Make slot `next` current and return its frame, copied to the top of its kernel stack.
fn switch_to(k: &mut Kernel, next: usize) -> *mut TrapFrame {
    let p = &mut k.procs[next];
    let sp0 = kstack_top(next);
    let calls = [
        (nr::NEW_PGTABLE, [p.pml4, 0]),
        (nr::SET_STACK, [sp0, 0]),
        (
            nr::SET_SEGMENT_BASE,
            [nr::SEG_GS_USER, uapi::user_gs_base(p.pid)],
        ),
    ];
    for (call, [a0, a1]) in calls {
        if k.async_switch {
            shared::queue_async(call, [a0, a1, 0, 0, 0]);
        } else {
            // SAFETY: the new tables share the kernel half; the stack is this process's; the GS
            // base is the user's (the kernel's stays active until the IRET).
            unsafe { hcall::hcall(call, a0, a1, 0, 0, 0) };
        }
    }
    p.stats.slices += 1;
    if k.current != Some(next) {
        k.stats.switches += 1;
    }
    k.current = Some(next);
    let frame = (sp0 - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame;
    // SAFETY: the top of the next process's kernel stack, which is empty (it is not running,
    // and this is not the stack we are on: that belongs to `k.current` before the switch).
    unsafe { frame.write(p.regs) };
    frame
}

/// End every process that has not ended (they are "stopped").
fn stop_all(k: &mut Kernel) {
    for slot in 0..MAX_PROCS {
        if k.procs[slot].alive() {
            process::end(k, slot, Exit::Stopped);
        }
    }
}

/// Back to the test code in [`run`]; nothing may be runnable.
fn leave(k: &mut Kernel) -> ! {
    hcall::set_clockevent(0);
    shared::irq_pending().fetch_and(!(1 << abi::irq::TIMER), Relaxed);
    k.current = None;
    let sp = DRIVER_SP.load(Relaxed);
    if sp == 0 {
        crate::crash_fmt(format_args!("lgtest: scheduler left with no test waiting"));
    }
    // SAFETY: `run` saved `sp` with `lg_sched_enter` and is still waiting for it; the stack we
    // abandon is a kernel stack of a process that is not running.
    unsafe { lg_sched_leave(sp) }
}

/// A timer irq from user mode: count it (the irq handler clears the pending bit).
pub fn timer_irq(k: &mut Kernel) -> Action {
    let before = irq::ticks();
    irq::handle();
    if irq::ticks() == before {
        return Action::Resume;
    }
    k.stats.ticks += 1;
    Action::Tick
}

/// An entry from user mode with no current process is a kernel bug.
pub fn no_current(frame: &TrapFrame) -> ! {
    println!("lgtest: entry from user mode with no current process");
    traps::unexpected(frame)
}
