//! Hostile modes (`lgtest=<mode>`): each performs ONE action the host must refuse, normally by
//! killing the guest with a reason. A guest that is still running afterwards prints
//! `UNEXPECTED: survived <mode>` and crashes, so the launcher's exit status shows it either way.
//!
//! Unless a mode says otherwise no trap handler is registered, so an exception the action raises
//! must end the guest ("no handler"), not be silently resumed.
//!
//! The `unsafe` blocks here are the hostile actions themselves: the host is expected to kill the
//! guest before or at each one; if it does not, `survived` ends the guest before anything
//! relies on state the action may have disturbed.
//!
//! Exceptions to "must not survive": `ac-df` is expected to survive (it checks the host copes
//! with AC and DF set), `irq-off-loop` never ends (the test harness interrupts the launcher), and
//! the stress modes of `stress.rs` must survive.
//!
//! The user-mode modes run one process on the user space of `user/`: `user-syscall-noncanonical-rcx`
//! makes the kernel IRET to a non-canonical RCX (the host must kill the guest), `user-hypercall`
//! makes the kernel crash deliberately when the process's `int $0x1f` arrives as #GP.

use crate::hcall::{self, hcall};
use crate::tests::memory::{scratch_va, DATA};
use crate::user::{self, Limits, Program};
use crate::{boot, irq, paging, stress, traps};
use core::arch::asm;
use lg_core::abi::{hcall as nr, rflags, trap, vector, PAGE_SIZE};
use lgtest::mode::Mode;
use lgtest::pagetable::Level;
use lgtest::phys_to_virt;

/// Not canonical for 4-level paging.
const NONCANONICAL: u64 = 0x8000_0000_0000_0000;
/// Far beyond any guest memory.
const BEYOND_MEMORY: u64 = 1 << 40;
/// A canonical address the guest never maps (PML4[32]).
const UNMAPPED: u64 = 0x0000_1000_0000_0000;

pub fn run(mode: Mode) -> ! {
    match mode {
        // `kmain` runs the suites directly; here for completeness.
        Mode::Suite => crate::tests::run(),
        Mode::User => crate::tests::run_user(),
        Mode::Privileged => crate::tests::run_privileged(),
        Mode::Bench => crate::tests::run_bench(),
        // `kmain` runs the I/O modes directly; here for completeness.
        Mode::ConsoleEcho
        | Mode::BlockWritePattern
        | Mode::BlockReadChecksum
        | Mode::BlockAckLoop
        | Mode::BlockEdges
        | Mode::NetEcho
        | Mode::NetPing
        | Mode::NetTcpServer
        | Mode::NetTcpClient
        | Mode::NetBcast
        | Mode::DmaOutsideMemory
        | Mode::DmaCrossPage
        | Mode::DmaHugeLen
        | Mode::DmaZeroLen
        | Mode::DmaOverlap
        | Mode::DmaBind33
        | Mode::DmaIrq32
        | Mode::DmaBindTop
        | Mode::DmaStorm
        | Mode::DmaBindAndDie
        | Mode::DmaRebindStorm
        | Mode::DmaRxOutsideMemory => crate::io::run(mode),
        Mode::ShadowThrash
        | Mode::AliasPerms
        | Mode::PteRace
        | Mode::MemoryTop
        | Mode::Idle
        | Mode::UserUdAtTop => stress::run(mode),
        // `syscall` (0f 05) in the last two bytes of the lower half.
        Mode::UserSyscallNoncanonicalRcx => user_program(Program::AtTop(0x050f)),
        Mode::UserHypercall => {
            user_init();
            user::set_crash_on_user_hypercall(true);
            user_program(Program::Int1f);
        }
        // A lower-half (user) address.
        Mode::StackUser => hcall::set_stack(0x0000_7fff_0000_0000),
        Mode::SetStackSwitcher => {
            let (start, _) = reserved_or_skip();
            hcall::set_stack(start + PAGE_SIZE);
        }
        // Kernel memory, but only 8-byte aligned.
        Mode::StackUnaligned => hcall::set_stack(phys_to_virt(fresh_frame()) + PAGE_SIZE - 8),
        // SAFETY: the hostile action itself (module docs).
        Mode::BadHcallNr => unsafe {
            hcall(9999, 0, 0, 0, 0, 0);
        },
        // SAFETY: the hostile action itself (module docs).
        Mode::BadHcallNoncanonical => unsafe {
            hcall(nr::CONSOLE_WRITE, NONCANONICAL, 16, 0, 0, 0);
        },
        // SAFETY: the hostile action itself (module docs).
        Mode::BadHcallOob => unsafe { hcall::new_pgtable(BEYOND_MEMORY) },
        // SAFETY: the hostile action itself (module docs).
        Mode::BadHcallUnaligned => unsafe { hcall::new_pgtable(0x1234) },
        // SAFETY: the hostile action itself (module docs).
        Mode::TrapBadFlags => unsafe {
            hcall::set_trap(u64::from(vector::UD), traps::stub_address(vector::UD), 0x80);
        },
        // SAFETY: the hostile action itself (module docs).
        Mode::TrapNoncanonical => unsafe {
            hcall::set_trap(u64::from(vector::UD), NONCANONICAL, trap::PRESENT);
        },
        Mode::TrapInSwitcher => {
            let (start, _) = reserved_or_skip();
            // SAFETY: the hostile action itself (module docs).
            unsafe { hcall::set_trap(u64::from(vector::UD), start, trap::PRESENT) };
        }
        Mode::PtSwitcher => {
            let (start, _) = reserved_or_skip();
            map_and_touch(start, fresh_frame());
        }
        Mode::PtBeyondMemory => map_and_touch(scratch_va(), BEYOND_MEMORY),
        Mode::IretRing0 => iret_hypercall(None, 0x08),
        Mode::IretNoncanonical => iret_hypercall(Some(NONCANONICAL), traps::FRAME_CS),
        Mode::NativeIretRing0 => native_iret_to_ring0(),
        // SAFETY: the hostile action itself (module docs).
        Mode::Syscall => unsafe {
            asm!("syscall", out("rcx") _, out("r11") _, options(att_syntax));
        },
        // SAFETY: the hostile action itself (module docs).
        Mode::Sysenter => unsafe {
            asm!("sysenter", out("rcx") _, out("r11") _, options(att_syntax));
        },
        // SAFETY: the hostile action itself (module docs).
        Mode::Int80 => unsafe { asm!("int $0x80", options(att_syntax)) },
        // SAFETY: the hostile action itself (module docs).
        Mode::IntHostVector => unsafe { asm!("int $0x20", options(att_syntax)) },
        // SAFETY: the hostile action itself (module docs).
        Mode::IntNmi => unsafe { asm!("int $2", options(att_syntax)) },
        // SAFETY: the hostile action itself (module docs).
        Mode::Cli => unsafe { asm!("cli", options(att_syntax)) },
        // SAFETY: the hostile action itself (module docs).
        Mode::Sti => unsafe { asm!("sti", options(att_syntax)) },
        // SAFETY: the hostile action itself (module docs).
        Mode::Hlt => unsafe { asm!("hlt", options(att_syntax)) },
        // SAFETY: the hostile action itself (module docs).
        Mode::Wrmsr => unsafe {
            // IA32_FS_BASE := 0.
            asm!("wrmsr", in("ecx") 0xc000_0100u32, in("eax") 0u32, in("edx") 0u32,
                options(att_syntax));
        },
        // SAFETY: the hostile action itself (module docs).
        Mode::MovCr3 => unsafe {
            asm!("mov {pml4}, %cr3", pml4 = in(reg) boot::boot_pml4_gpa(), options(att_syntax));
        },
        Mode::Lgdt => {
            let pseudo_descriptor = [0u64; 2];
            // SAFETY: the hostile action itself (module docs).
            unsafe {
                asm!("lgdt ({p})", p = in(reg) pseudo_descriptor.as_ptr(), options(att_syntax));
            }
        }
        // SAFETY: the hostile action itself (module docs).
        Mode::Swapgs => unsafe { asm!("swapgs", options(att_syntax)) },
        Mode::AcDf => ac_df(),
        Mode::IrqOffLoop => irq_off_loop(),
        Mode::DoubleFault => double_fault(),
        Mode::StackInSwitcher => stack_in_switcher(),
        Mode::Crash => hcall::crash(b"deliberate crash from lgtest"),
        // SAFETY: the hostile action itself (module docs).
        Mode::UnhandledUd => unsafe { asm!("ud2", options(att_syntax)) },
    }
    survived(mode)
}

fn survived(mode: Mode) -> ! {
    println!("UNEXPECTED: survived {}", mode.name());
    crate::crash_fmt(format_args!("UNEXPECTED: survived {}", mode.name()))
}

fn user_init() {
    if !user::init() {
        hcall::crash(b"lgtest: out of memory for user mode");
    }
}

/// Run `program` as the only process, and say how it ended (if the guest is still alive).
fn user_program(program: Program) {
    user_init();
    let pid = match user::spawn(program, [0; 3]) {
        Ok(pid) => pid,
        Err(e) => crate::crash_fmt(format_args!("lgtest: spawning {program:?}: {e:?}")),
    };
    user::run(Limits::DEFAULT);
    println!("lgtest: pid {pid} ended: {:?}", user::exit_of(pid));
}

/// The switcher's reserved range, or (on a 5-level host, where it is empty) a clean skip.
fn reserved_or_skip() -> (u64, u64) {
    let (start, end) = paging::reserved();
    if start >= end {
        println!("SKIP: no reserved range");
        hcall::shutdown();
    }
    (start, end)
}

fn fresh_frame() -> u64 {
    paging::alloc_frame().unwrap_or_else(|| hcall::crash(b"lgtest: out of memory"))
}

/// Map `va` to physical `pa` in the current tables (telling the host), then read it.
fn map_and_touch(va: u64, pa: u64) {
    if let Err(e) = paging::map(crate::tests::memory::root(), va, Level::Pte, pa | DATA) {
        crate::crash_fmt(format_args!("lgtest: mapping {va:#x}: {e:?}"));
    }
    // SAFETY: the read is the hostile action; the mapping is not one Rust relies on.
    unsafe { asm!("mov ({va}), {x}", va = in(reg) va, x = out(reg) _, options(att_syntax)) };
}

/// An IRET hypercall with frame `[rax, rip, cs, rflags, rsp, ss]`: RIP `rip` (default: right
/// after the call), CS `cs`, the current RFLAGS and RSP, SS 0x18.
fn iret_hypercall(rip: Option<u64>, cs: u64) {
    // SAFETY: the hostile action; if the host accepted the frame, execution continues at `2:`
    // with the stack as before (RSP is restored from the frame).
    unsafe {
        asm!(
            "mov %rsp, {sp}",
            "lea 2f(%rip), {ret}",
            "test {rip}, {rip}",
            "cmovnz {rip}, {ret}",
            "pushq ${ss}",
            "push {sp}",
            "pushfq",
            "push {cs}",
            "push {ret}",
            "push %rax",
            "mov ${iret}, %eax",
            "int $0x1f",
            "2:",
            sp = out(reg) _,
            ret = out(reg) _,
            rip = in(reg) rip.unwrap_or(0),
            cs = in(reg) cs,
            ss = const traps::FRAME_SS,
            iret = const nr::IRET,
            out("rax") _,
            options(att_syntax)
        );
    }
}

/// A real `iretq` to CS 0x08 (ring 0): the CPU raises #GP at ring 1, and no handler exists.
fn native_iret_to_ring0() {
    // SAFETY: the hostile action; a (wrongly) successful iretq lands at `2:` with RSP restored.
    unsafe {
        asm!(
            "mov %rsp, {sp}",
            "mov %ss, {ss}",
            "pushq {ss}",
            "push {sp}",
            "pushfq",
            "pushq $0x08",
            "lea 2f(%rip), {sp}",
            "push {sp}",
            "iretq",
            "2:",
            sp = out(reg) _,
            ss = out(reg) _,
            options(att_syntax)
        );
    }
}

/// `double-fault`: with a #PF handler registered, point RSP at an unmapped page and read
/// another: the host cannot push the frame and must kill the guest. If it "delivered" anyway,
/// the probe's fixup brings us back and the real stack is restored from r12.
fn double_fault() {
    traps::install(vector::PF);
    // SAFETY: the hostile action; RSP is restored whichever way we come back.
    let _ = unsafe {
        probe!(u64::from(vector::PF), ["mov %rsp, %r12", "mov {bad}, %rsp", "mov ({bad}), {x}"]
            then ["mov %r12, %rsp"],
            bad = in(reg) UNMAPPED, x = out(reg) _, out("r12") _)
    };
}

/// `stack-in-switcher`: with a #UD handler registered, point RSP into the switcher's range and
/// raise #UD: the host must not write the frame there.
fn stack_in_switcher() {
    let (_, end) = reserved_or_skip();
    traps::install(vector::UD);
    // SAFETY: the hostile action; RSP is restored whichever way we come back.
    let _ = unsafe {
        probe!(u64::from(vector::UD), ["mov %rsp, %r12", "mov {bad}, %rsp", "ud2"]
            then ["mov %r12, %rsp"],
            bad = in(reg) end - 64, out("r12") _)
    };
}

/// `ac-df`: with AC and DF set, make hypercalls (one copying guest memory) and take a page
/// fault; the flags must come back intact. Expected to survive.
fn ac_df() -> ! {
    const MSG: &[u8] = b"ac-df: console write with AC and DF set\n";
    traps::install_exceptions();
    let va = scratch_va();
    let flags_after: u64;
    // SAFETY: all inside one asm block, so no Rust code runs with DF set; the page fault is
    // expected and skipped by the handler (which clears DF for itself).
    let p = unsafe {
        probe!(u64::from(vector::PF), [
            "pushfq",
            "orq ${acdf}, (%rsp)",
            "popfq",
            "mov ${write}, %eax",
            "xchg {len}, %rbx",
            "int $0x1f",
            "xchg {len}, %rbx",
            "mov ${clock}, %eax",
            "int $0x1f",
            "mov ({va}), {x}",
        ] then [
            "pushfq",
            "pop {flags}",
            "pushfq",
            "andq ${clear}, (%rsp)",
            "popfq",
        ],
            acdf = const rflags::AC | rflags::DF,
            clear = const !(rflags::AC | rflags::DF),
            write = const nr::CONSOLE_WRITE,
            clock = const nr::GET_WALLCLOCK,
            in("rdx") MSG.as_ptr(),
            len = inout(reg) MSG.len() => _,
            va = in(reg) va,
            x = out(reg) _,
            flags = out(reg) flags_after,
            out("rax") _)
    };
    let want = rflags::AC | rflags::DF;
    let Some(t) = p.trap else {
        hcall::crash(b"ac-df: the page fault was not delivered");
    };
    if t.rflags & want != want {
        crate::crash_fmt(format_args!(
            "ac-df: frame RFLAGS {:#x} lost AC/DF",
            t.rflags
        ));
    }
    if flags_after & want != want {
        crate::crash_fmt(format_args!("ac-df: RFLAGS {flags_after:#x} lost AC/DF"));
    }
    println!("ok: survived ac-df");
    hcall::shutdown()
}

/// `irq-off-loop`: interrupts off (with a timer pending for good measure), spin forever.
fn irq_off_loop() -> ! {
    irq::disable();
    hcall::set_clockevent(1_000_000);
    println!("looping");
    loop {
        core::hint::spin_loop();
    }
}
