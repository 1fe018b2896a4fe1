//! Exceptions reflected by the host (SET_TRAP + IRET): each with the right vector, error code,
//! RIP, CS/SS, RSP and virtual IF, and execution continuing where the handler says.

use super::{check_trap, ensure, ensure_eq, TestResult};
use crate::irq;
use lg_core::abi::vector;

fn v(vector: u8) -> u64 {
    u64::from(vector)
}

/// #UD with interrupts off: the frame shows IF=0 and IRET leaves them off.
pub fn ud_irq_off() -> TestResult {
    irq::disable();
    // SAFETY: ud2 only traps.
    let p = unsafe { probe!(v(vector::UD), ["ud2"]) };
    check_trap(&p, vector::UD, 0, p.fault_rip, false)?;
    ensure!(!irq::enabled(), "IRET turned interrupts on");
    Ok(())
}

/// #UD with interrupts on: the frame shows IF=1, the handler runs with them off (interrupt
/// gate), and IRET turns them back on from the frame.
pub fn ud_irq_on() -> TestResult {
    irq::enable();
    // SAFETY: ud2 only traps.
    let p = unsafe { probe!(v(vector::UD), ["ud2"]) };
    let on_after = irq::enabled();
    irq::disable();
    check_trap(&p, vector::UD, 0, p.fault_rip, true)?;
    ensure!(
        on_after,
        "IRET did not restore the virtual IF from the frame"
    );
    Ok(())
}

/// #DE from dividing by zero.
pub fn divide_error() -> TestResult {
    // SAFETY: the division traps; RAX/RDX are declared clobbered.
    let p = unsafe {
        probe!(v(vector::DE), ["div {zero}"],
            zero = in(reg) 0u64, inout("rax") 1u64 => _, inout("rdx") 0u64 => _)
    };
    check_trap(&p, vector::DE, 0, p.fault_rip, false)
}

/// #BP from int3 is a trap: the frame's RIP is the instruction after it.
pub fn breakpoint() -> TestResult {
    // SAFETY: int3 only traps.
    let p = unsafe { probe!(v(vector::BP), ["int3"]) };
    check_trap(&p, vector::BP, 0, p.resume_rip, false)
}

/// Privileged instructions at ring 1 raise #GP(0).
pub fn general_protection() -> TestResult {
    // SAFETY: writing CR0 at ring 1 traps (reading it is emulated by the host, docs/abi.md §2.7).
    let p = unsafe { probe!(v(vector::GP), ["mov {x}, %cr0"], x = in(reg) 0x8005_0033u64) };
    check_trap(&p, vector::GP, 0, p.fault_rip, false)
}

/// A trap and its IRET preserve every register the interrupted code had, RAX (which travels in
/// the IRET frame) and the arithmetic flags included.
pub fn iret_preserves_registers() -> TestResult {
    const SEED: u64 = 0x5eed_0000_0000_0000;
    let (mut rax, mut rcx, mut rdx, mut rsi, mut rdi, mut r8, mut r9) = (
        SEED | 1,
        SEED | 2,
        SEED | 3,
        SEED | 4,
        SEED | 5,
        SEED | 6,
        SEED | 7,
    );
    let carry: u64;
    // SAFETY: ud2 traps; stc/setc only touch flags and the named register.
    let p = unsafe {
        probe!(v(vector::UD), ["stc", "ud2"] then ["setc {cf:l}", "movzbl {cf:l}, {cf:e}"],
            inout("rax") rax, inout("rcx") rcx, inout("rdx") rdx, inout("rsi") rsi,
            inout("rdi") rdi, inout("r8") r8, inout("r9") r9, cf = out(reg) carry)
    };
    ensure!(p.trap.is_some(), "no trap");
    for (name, got, n) in [
        ("rax", rax, 1),
        ("rcx", rcx, 2),
        ("rdx", rdx, 3),
        ("rsi", rsi, 4),
        ("rdi", rdi, 5),
        ("r8", r8, 6),
        ("r9", r9, 7),
    ] {
        ensure_eq!(got, SEED | n, name);
    }
    ensure_eq!(carry, 1, "carry flag");

    let (mut r10, mut r11, mut r12, mut r13, mut r14, mut r15) = (
        SEED | 10,
        SEED | 11,
        SEED | 12,
        SEED | 13,
        SEED | 14,
        SEED | 15,
    );
    // SAFETY: ud2 only traps.
    let p = unsafe {
        probe!(v(vector::UD), ["ud2"],
            inout("r10") r10, inout("r11") r11, inout("r12") r12, inout("r13") r13,
            inout("r14") r14, inout("r15") r15)
    };
    ensure!(p.trap.is_some(), "no trap");
    for (name, got, n) in [
        ("r10", r10, 10),
        ("r11", r11, 11),
        ("r12", r12, 12),
        ("r13", r13, 13),
        ("r14", r14, 14),
        ("r15", r15, 15),
    ] {
        ensure_eq!(got, SEED | n, name);
    }
    Ok(())
}
