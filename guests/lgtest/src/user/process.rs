//! Processes: the table, creating them (`spawn`), and ending them (exit, kill, reaping).
//!
//! A process is a slot of [`Kernel::procs`] with its own PML4, its own 16 KiB kernel stack
//! ([`kstack_top`]: what `SET_STACK` gets while it runs), and its user registers saved in `regs`
//! whenever it is not running. The kernel never sleeps inside a system call: every entry either
//! finishes and returns to user mode or leaves the process's state in `regs`, so a kernel stack is
//! empty whenever its process is not running.

use super::{mm, programs::Program};
use crate::traps::{TrapFrame, USER_CS, USER_SS};
use crate::{boot, hcall};
use core::cell::UnsafeCell;
use lg_core::abi::{rflags, vector, PAGE_SIZE};
use lgtest::regions::Regions;
use lgtest::text::FixedStr;
use lgtest::uapi::{self, status};

pub const MAX_PROCS: usize = 16;
const KSTACK_SIZE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Free,
    Runnable,
    /// In `waitpid` for this child.
    Waiting(u64),
    /// Ended; kept for its parent (or the test) to collect.
    Zombie,
}

/// An exception the kernel would not handle for a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    /// Page faults only.
    pub cr2: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(u64),
    /// Killed for a fault.
    Killed(Fault),
    /// Stopped by the scheduler (tick budget or deadline of [`super::sched::run`]).
    Stopped,
}

impl Exit {
    /// What `waitpid` returns for it.
    pub fn status(self) -> u64 {
        match self {
            Exit::Code(c) => status::exited(c),
            Exit::Killed(f) => status::killed(f.vector),
            Exit::Stopped => status::KILLED,
        }
    }
}

/// Per-process counters the tests look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// Times it was switched to.
    pub slices: u64,
    pub demand_faults: u64,
    pub cow_copies: u64,
    pub cow_reuses: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Process {
    pub state: State,
    pub pid: u64,
    /// 0: spawned by the kernel (the test collects it).
    pub parent: u64,
    pub pml4: u64,
    pub regs: TrapFrame,
    pub regions: Regions,
    pub program: Option<Program>,
    pub exit: Option<Exit>,
    pub stats: ProcStats,
}

impl Process {
    const FREE: Process = Process {
        state: State::Free,
        pid: 0,
        parent: 0,
        pml4: 0,
        regs: TrapFrame::ZERO,
        regions: Regions::new(),
        program: None,
        exit: None,
        stats: ProcStats {
            slices: 0,
            demand_faults: 0,
            cow_copies: 0,
            cow_reuses: 0,
        },
    };

    pub fn alive(&self) -> bool {
        matches!(self.state, State::Runnable | State::Waiting(_))
    }
}

/// Kernel-wide counters (since boot).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Switches from one process to another.
    pub switches: u64,
    /// Timer interrupts taken in user mode.
    pub ticks: u64,
    /// System calls through the entry the host bounces to.
    pub syscalls: u64,
    /// `syscall`s that arrived as #UD (a host that does not bounce them) and were emulated.
    pub ud_syscalls: u64,
    /// System call entries whose state broke docs/abi.md §2.6.
    pub bad_entries: u64,
    /// Entries from user mode where `%gs:0` was not the kernel's per-CPU block.
    pub bad_kernel_gs: u64,
    /// User page faults by outcome.
    pub demand_faults: u64,
    pub cow_copies: u64,
    pub cow_reuses: u64,
    pub kills: u64,
}

/// The `(pid, value)` pairs processes sent with `REPORT`.
pub struct Log {
    entries: [(u64, u64); 256],
    len: usize,
}

impl Log {
    const EMPTY: Log = Log {
        entries: [(0, 0); 256],
        len: 0,
    };

    fn push(&mut self, pid: u64, value: u64) {
        if let Some(slot) = self.entries.get_mut(self.len) {
            *slot = (pid, value);
            self.len += 1;
        }
    }

    /// The values `pid` reported, in order.
    pub fn of(&self, pid: u64) -> impl Iterator<Item = u64> + '_ {
        self.entries
            .iter()
            .take(self.len)
            .filter(move |e| e.0 == pid)
            .map(|e| e.1)
    }
}

/// Everything the user-mode kernel knows.
pub struct Kernel {
    pub procs: [Process; MAX_PROCS],
    /// The slot running (or whose trap is being handled).
    pub current: Option<usize>,
    next_pid: u64,
    pub log: Log,
    pub stats: Stats,
    /// The first broken system call entry, described.
    pub first_bad_entry: FixedStr<160>,
    /// `lgtest=user-hypercall`: a user `int $0x1f` reflected as #GP crashes the guest.
    pub crash_on_user_hypercall: bool,
    /// Queue the context switch's hypercalls in the async ring (they run at the IRET).
    pub async_switch: bool,
}

impl Kernel {
    const fn new() -> Kernel {
        Kernel {
            procs: [Process::FREE; MAX_PROCS],
            current: None,
            next_pid: 1,
            log: Log::EMPTY,
            stats: Stats {
                switches: 0,
                ticks: 0,
                syscalls: 0,
                ud_syscalls: 0,
                bad_entries: 0,
                bad_kernel_gs: 0,
                demand_faults: 0,
                cow_copies: 0,
                cow_reuses: 0,
                kills: 0,
            },
            first_bad_entry: FixedStr::new(),
            crash_on_user_hypercall: false,
            async_switch: true,
        }
    }

    /// The slot of process `pid`, if it exists (alive or zombie).
    pub fn slot_of(&self, pid: u64) -> Option<usize> {
        self.procs
            .iter()
            .position(|p| p.state != State::Free && p.pid == pid)
    }

    fn free_slot(&self) -> Option<usize> {
        self.procs.iter().position(|p| p.state == State::Free)
    }

    pub fn report(&mut self, pid: u64, value: u64) {
        self.log.push(pid, value);
    }

    pub fn clear_log(&mut self) {
        self.log = Log::EMPTY;
    }
}

struct Global(UnsafeCell<Kernel>);
// SAFETY: one vCPU; see `kernel` for who may touch it when.
unsafe impl Sync for Global {}
static KERNEL: Global = Global(UnsafeCell::new(Kernel::new()));

/// The user-mode kernel's state.
///
/// # Safety
/// No other reference from this function may be live. Trap handlers never nest (they run with
/// the virtual IF off and the kernel does not fault on purpose), and the test code only calls
/// this while no process runs, never across entering user mode ([`super::sched::run`]).
pub unsafe fn kernel() -> &'static mut Kernel {
    // SAFETY: exclusive by the caller's promise.
    unsafe { &mut *KERNEL.0.get() }
}

#[repr(C, align(16))]
struct KStacks([[u8; KSTACK_SIZE]; MAX_PROCS]);
struct Stacks(UnsafeCell<KStacks>);
// SAFETY: the stacks are only ever used as raw memory by the CPU (and our frames on them).
unsafe impl Sync for Stacks {}
static KSTACKS: Stacks = Stacks(UnsafeCell::new(KStacks([[0; KSTACK_SIZE]; MAX_PROCS])));

/// The top of slot `slot`'s kernel stack (16-byte aligned): its `SET_STACK` value.
pub fn kstack_top(slot: usize) -> u64 {
    KSTACKS.0.get() as u64 + ((slot % MAX_PROCS + 1) * KSTACK_SIZE) as u64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    NoSlot,
    NoMemory,
}

/// A new process running `program` with `args` in RDI, RSI, RDX.
pub fn spawn(k: &mut Kernel, program: Program, args: [u64; 3]) -> Result<u64, SpawnError> {
    let slot = k.free_slot().ok_or(SpawnError::NoSlot)?;
    let pml4 = mm::new_space().ok_or(SpawnError::NoMemory)?;
    let mut regions = Regions::new();
    let stack = uapi::STACK_TOP - uapi::STACK_SIZE;
    if regions
        .add(uapi::DATA_BASE, uapi::DATA_BASE + uapi::DATA_SIZE)
        .and_then(|()| regions.add(stack, uapi::STACK_TOP))
        .is_err()
    {
        mm::destroy(pml4);
        return Err(SpawnError::NoMemory);
    }
    if let Program::AtTop(insn) = program {
        // The instruction's two bytes end the lower half.
        let Some(pa) = mm::map_new(pml4, uapi::LAST_USER_PAGE, mm::CODE) else {
            mm::destroy(pml4);
            return Err(SpawnError::NoMemory);
        };
        // SAFETY: a fresh user frame of ours; the word holds the page's last 8 bytes.
        unsafe { crate::paging::write_phys(pa + PAGE_SIZE - 8, u64::from(insn) << 48) };
    }
    let pid = k.next_pid;
    k.next_pid += 1;
    let regs = TrapFrame {
        rip: program.entry(),
        cs: USER_CS,
        rflags: rflags::IF | rflags::FIXED,
        rsp: uapi::STACK_TOP,
        ss: USER_SS,
        rdi: args[0],
        rsi: args[1],
        rdx: args[2],
        ..TrapFrame::ZERO
    };
    k.procs[slot] = Process {
        state: State::Runnable,
        pid,
        parent: 0,
        pml4,
        regs,
        regions,
        program: Some(program),
        ..Process::FREE
    };
    Ok(pid)
}

/// A child of slot `parent` with the address space `pml4` (already shared copy-on-write) and
/// the parent's registers, returning 0 from `fork`.
pub fn add_child(k: &mut Kernel, parent: usize, pml4: u64) -> Option<u64> {
    let slot = k.free_slot()?;
    let pid = k.next_pid;
    k.next_pid += 1;
    let p = k.procs[parent];
    k.procs[slot] = Process {
        state: State::Runnable,
        pid,
        parent: p.pid,
        pml4,
        regs: TrapFrame { rax: 0, ..p.regs },
        regions: p.regions,
        program: p.program,
        ..Process::FREE
    };
    Some(pid)
}

/// Is a slot free for `fork`?
pub fn has_free_slot(k: &Kernel) -> bool {
    k.free_slot().is_some()
}

/// End slot `slot`: free its memory, keep it as a zombie for whoever collects it, and wake a
/// parent waiting for it. The caller then switches to another process.
pub fn end(k: &mut Kernel, slot: usize, exit: Exit) {
    let p = &mut k.procs[slot];
    if let Exit::Killed(f) = exit {
        k.stats.kills += 1;
        println!(
            "lgtest: pid {} killed: {} error {:#x} at rip {:#x} cr2 {:#x}",
            p.pid,
            vector_name(f.vector),
            f.error,
            f.rip,
            f.cr2
        );
    }
    let pml4 = core::mem::replace(&mut p.pml4, 0);
    p.exit = Some(exit);
    p.state = State::Zombie;
    let (pid, parent) = (p.pid, p.parent);
    if pml4 != 0 {
        if k.current == Some(slot) {
            // SAFETY: the boot tables map the whole kernel.
            unsafe { hcall::new_pgtable(boot::boot_pml4_gpa()) };
        }
        hcall::release_pgtable(pml4);
        mm::destroy(pml4);
    }
    // Orphans go to the kernel (the test collects them).
    for q in k.procs.iter_mut().filter(|q| q.state != State::Free) {
        if q.parent == pid {
            q.parent = 0;
        }
    }
    if let Some(w) = k
        .procs
        .iter()
        .position(|q| q.pid == parent && q.state == State::Waiting(pid))
    {
        k.procs[w].regs.rax = exit.status();
        k.procs[w].state = State::Runnable;
        k.procs[slot] = Process::FREE;
    }
}

/// `waitpid(pid)` for slot `slot`: the status if the child has ended (reaping it), `Err(())` if
/// it is not a child, `Ok(None)` if it is still running.
pub fn wait(k: &mut Kernel, slot: usize, pid: u64) -> Result<Option<u64>, ()> {
    let me = k.procs[slot].pid;
    let child = k
        .slot_of(pid)
        .filter(|&c| k.procs[c].parent == me)
        .ok_or(())?;
    let c = &mut k.procs[child];
    if c.state != State::Zombie {
        return Ok(None);
    }
    let status = c.exit.map_or(0, Exit::status);
    *c = Process::FREE;
    Ok(Some(status))
}

/// Free every zombie (the test has read what it needs).
pub fn reap_all(k: &mut Kernel) {
    for p in k.procs.iter_mut().filter(|p| p.state == State::Zombie) {
        *p = Process::FREE;
    }
}

pub fn vector_name(v: u64) -> &'static str {
    match u8::try_from(v).unwrap_or(u8::MAX) {
        vector::DE => "#DE",
        vector::DB => "#DB",
        vector::BP => "#BP",
        vector::UD => "#UD",
        vector::GP => "#GP",
        vector::PF => "#PF",
        vector::AC => "#AC",
        vector::SS => "#SS",
        vector::NP => "#NP",
        _ => "exception",
    }
}
