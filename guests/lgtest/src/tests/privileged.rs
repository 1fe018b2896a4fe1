//! `lgtest=privileged`: the privileged instructions the host emulates for the guest kernel at
//! ring 1 (docs/abi.md §2.7: CR reads, `wbinvd`, `xsetbv`, `hlt`), and some it must not (still
//! #GP). The same instructions from user mode are in `user.rs`.

use super::{check_trap, ensure, ensure_eq, fail, memory, wait_until, TestResult};
use crate::{boot, hcall, irq, paging, shared, traps};
use core::arch::{asm, global_asm};
use core::sync::atomic::Ordering::Relaxed;
use lg_core::abi::vector;
use lgtest::pagetable as pt;

pub const TESTS: &[super::Test] = &[
    ("read-cr0", read_cr0),
    ("read-cr0-other-registers", read_cr0_other_registers),
    ("read-cr3", read_cr3),
    ("read-cr4", read_cr4),
    ("read-cr2", read_cr2),
    ("wbinvd", wbinvd),
    ("xgetbv-xsetbv", xsetbv),
    ("hlt-timer", hlt_timer),
    ("rdmsr-gp", rdmsr_gp),
    ("wrmsr-gp", wrmsr_gp),
    ("invlpg-gp", invlpg_gp),
    ("cli-gp", cli_gp),
    ("port-io-gp", port_io_gp),
];

const GP: u64 = vector::GP as u64;

/// What `mov %cr0` must read: PE, MP, ET, NE, WP, AM, PG.
const CR0: u64 = 0x8005_0033;

/// Run an instruction that must be emulated: no trap may reach the guest.
macro_rules! emulated {
    ($name:literal, [$($insn:literal),+] $(, $($operands:tt)+)?) => {{
        // SAFETY: the caller's instruction only reads a control register or does nothing the
        // kernel relies on; a trap is recorded and skipped.
        let p = unsafe { probe!(traps::ANY, [$($insn),+] $(, $($operands)+)?) };
        if let Some(t) = p.trap {
            fail!("{} raised vector {} error {:#x}", $name, t.vector, t.error);
        }
    }};
}

fn read_cr0() -> TestResult {
    let cr0: u64;
    emulated!("mov %cr0, %rax", ["mov %cr0, %rax"], out("rax") cr0);
    ensure_eq!(cr0, CR0, "CR0");
    Ok(())
}

/// The emulation decodes the destination register, REX-extended ones included, and leaves
/// every other register alone.
fn read_cr0_other_registers() -> TestResult {
    let (rcx, r8, r15, rbx): (u64, u64, u64, u64);
    let canary = 0x0c0f_fee0_0000_0001u64;
    let (rdx, r9): (u64, u64);
    emulated!("mov %cr0 into rcx, r8, r15, rbx",
        ["mov %cr0, %rcx", "mov %cr0, %r8", "mov %cr0, %r15", "mov %rbx, {save}",
         "mov %cr0, %rbx", "xchg %rbx, {save}"],
        out("rcx") rcx, out("r8") r8, out("r15") r15, save = out(reg) rbx,
        inout("rdx") canary => rdx, inout("r9") canary + 1 => r9);
    for (name, got) in [("rcx", rcx), ("r8", r8), ("r15", r15), ("rbx", rbx)] {
        ensure_eq!(got, CR0, name);
    }
    ensure_eq!(rdx, canary, "rdx (untouched)");
    ensure_eq!(r9, canary + 1, "r9 (untouched)");
    Ok(())
}

fn cr3() -> Result<u64, super::Detail> {
    let cr3: u64;
    emulated!("mov %cr3, %rax", ["mov %cr3, %rax"], out("rax") cr3);
    Ok(cr3)
}

/// CR3 is the current PML4's guest-physical address, following NEW_PGTABLE.
fn read_cr3() -> TestResult {
    ensure_eq!(cr3()?, boot::boot_pml4_gpa(), "CR3 (boot tables)");
    let Some(other) = paging::alloc_frame() else {
        fail!("out of memory");
    };
    for i in pt::ENTRIES / 2..pt::ENTRIES {
        let boot = boot::boot_pml4_gpa();
        paging::Entry::in_table(other, i).set_quiet(paging::Entry::in_table(boot, i).get());
    }
    // SAFETY: `other` maps the kernel half exactly as the boot tables do.
    unsafe { hcall::new_pgtable(other) };
    let seen = cr3();
    // SAFETY: back to the boot tables.
    unsafe { hcall::new_pgtable(boot::boot_pml4_gpa()) };
    hcall::release_pgtable(other);
    ensure_eq!(seen?, other, "CR3 after NEW_PGTABLE");
    ensure_eq!(cr3()?, boot::boot_pml4_gpa(), "CR3 back on the boot tables");
    Ok(())
}

const CR4_PGE: u64 = 1 << 7;
const CR4_PCE: u64 = 1 << 8;
const CR4_LA57: u64 = 1 << 12;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_SMAP: u64 = 1 << 21;

fn cr4() -> Result<u64, super::Detail> {
    let cr4: u64;
    emulated!("mov %cr4, %rax", ["mov %cr4, %rax"], out("rax") cr4);
    Ok(cr4)
}

/// CPUID.1:ECX.OSXSAVE (bit 27) mirrors CR4.OSXSAVE.
fn cpuid_osxsave() -> bool {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    ecx & (1 << 27) != 0
}

/// CR4 is the host's, without what a 4-level, ring-1 guest must not believe it has.
fn read_cr4() -> TestResult {
    let cr4 = cr4()?;
    println!("read-cr4: CR4 = {cr4:#x}");
    for (bit, name) in [
        (CR4_PGE, "PGE"),
        (CR4_PCE, "PCE"),
        (CR4_LA57, "LA57"),
        (CR4_PCIDE, "PCIDE"),
        (CR4_SMAP, "SMAP"),
    ] {
        ensure!(cr4 & bit == 0, "CR4 {cr4:#x} has {name}");
    }
    ensure!(cr4 & (1 << 5) != 0, "CR4 {cr4:#x} without PAE");
    ensure_eq!(
        u64::from(cr4 & CR4_OSXSAVE != 0),
        u64::from(cpuid_osxsave()),
        "CR4.OSXSAVE vs CPUID.1:ECX.OSXSAVE"
    );
    Ok(())
}

/// CR2 is the address of the last page fault delivered.
fn read_cr2() -> TestResult {
    let va = memory::scratch_va() + 0x123;
    // SAFETY: the read faults (nothing is mapped there) and is skipped.
    let p = unsafe {
        probe!(u64::from(vector::PF), ["mov ({va}), {x}"], va = in(reg) va, x = out(reg) _)
    };
    ensure!(p.trap.is_some(), "no page fault at {va:#x}");
    let cr2: u64;
    emulated!("mov %cr2, %rax", ["mov %cr2, %rax"], out("rax") cr2);
    ensure_eq!(cr2, va, "CR2");
    ensure_eq!(shared::cr2().load(Relaxed), va, "shared page cr2");
    Ok(())
}

fn wbinvd() -> TestResult {
    emulated!("wbinvd", ["wbinvd"]);
    Ok(())
}

fn xgetbv(ecx: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv only reads XCR0 (CR4.OSXSAVE is checked by the caller).
    unsafe { asm!("xgetbv", in("ecx") ecx, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// `xsetbv` of the current XCR0 is accepted; clearing x87, or XCR 1, is a #GP.
fn xsetbv() -> TestResult {
    if !cpuid_osxsave() {
        println!("xgetbv-xsetbv: skipped (CR4.OSXSAVE off)");
        return Ok(());
    }
    let xcr0 = xgetbv(0);
    println!("xgetbv-xsetbv: XCR0 = {xcr0:#x}");
    ensure!(xcr0 & 1 != 0, "XCR0 {xcr0:#x} without x87");
    let (lo, hi) = (xcr0 as u32, (xcr0 >> 32) as u32);
    emulated!("xsetbv (same XCR0)", ["xsetbv"], in("ecx") 0u32, in("eax") lo, in("edx") hi);
    ensure_eq!(xgetbv(0), xcr0, "XCR0 after xsetbv");
    for (what, ecx, value) in [("x87 cleared", 0u32, xcr0 & !1), ("XCR 1", 1, xcr0)] {
        let (lo, hi) = (value as u32, (value >> 32) as u32);
        // SAFETY: the xsetbv faults (refused) and is skipped; were it accepted, it asked for a
        // state the kernel does not use (no SSE/AVX in this kernel).
        let p = unsafe { probe!(GP, ["xsetbv"], in("ecx") ecx, in("eax") lo, in("edx") hi) };
        check_trap(&p, vector::GP, 0, p.fault_rip, false)
            .map_err(|d| super::detail(format_args!("xsetbv with {what}: {d}")))?;
    }
    Ok(())
}

// `sti; hlt` without the race: while RIP is in `[lg_sti_hlt_start, lg_sti_hlt_end)` the host
// does not inject (the shared page's noirq range, set by the test), so a timer that expires
// between turning the virtual IF on and the `hlt` is delivered after the `hlt`, which returns
// at once because an interrupt is pending.
global_asm!(
    r#"
    .section .text.sti_hlt, "ax", @progbits
lg_sti_hlt:
lg_sti_hlt_start:
    movq ${on}, {page}(%rip)
    hlt
lg_sti_hlt_end:
    ret
"#,
    on = const irq::ON,
    page = sym shared::PAGE,
    options(att_syntax)
);

unsafe extern "C" {
    fn lg_sti_hlt();
    #[link_name = "lg_sti_hlt_start"]
    static STI_HLT_START: u8;
    #[link_name = "lg_sti_hlt_end"]
    static STI_HLT_END: u8;
}

/// `hlt` with the virtual IF on sleeps until the armed timer fires; the interrupt is delivered
/// and `hlt` returns.
fn hlt_timer() -> TestResult {
    const MS: u64 = 1_000_000;
    irq::disable();
    let before = irq::ticks();
    let (start, end) = (
        &raw const STI_HLT_START as u64,
        &raw const STI_HLT_END as u64,
    );
    let saved = (
        shared::noirq_start().load(Relaxed),
        shared::noirq_end().load(Relaxed),
    );
    shared::noirq_start().store(start, Relaxed);
    shared::noirq_end().store(end, Relaxed);
    let t0 = hcall::wallclock_ns();
    hcall::set_clockevent(5 * MS);
    // SAFETY: stores the virtual IF (offset 0 of the shared page) and halts; clobbers nothing.
    unsafe { lg_sti_hlt() };
    let slept = hcall::wallclock_ns() - t0;
    let on = irq::enabled();
    irq::disable();
    shared::noirq_start().store(saved.0, Relaxed);
    shared::noirq_end().store(saved.1, Relaxed);
    ensure_eq!(
        irq::ticks() - before,
        1,
        "timer interrupts by the time hlt returned"
    );
    ensure!(on, "virtual IF off after hlt");
    ensure!(
        slept >= 4 * MS,
        "hlt returned after {slept} ns, before the 5 ms timer"
    );
    // And with the timer already pending, hlt does not sleep.
    hcall::set_clockevent(MS / 10);
    ensure!(
        wait_until(2_000 * MS, || shared::irq_pending().load(Relaxed) & 1 != 0),
        "timer never became pending"
    );
    shared::noirq_start().store(start, Relaxed);
    shared::noirq_end().store(end, Relaxed);
    // SAFETY: as above.
    unsafe { lg_sti_hlt() };
    irq::disable();
    shared::noirq_start().store(saved.0, Relaxed);
    shared::noirq_end().store(saved.1, Relaxed);
    ensure_eq!(
        irq::ticks() - before,
        2,
        "timer interrupts after a hlt with one pending"
    );
    Ok(())
}

/// Not emulated: #GP(0) at the instruction.
fn expect_gp(p: traps::Probe, what: &str) -> TestResult {
    check_trap(&p, vector::GP, 0, p.fault_rip, false)
        .map_err(|d| super::detail(format_args!("{what}: {d}")))
}

fn rdmsr_gp() -> TestResult {
    // SAFETY: rdmsr faults at ring 1 and is skipped.
    let p = unsafe { probe!(GP, ["rdmsr"], in("ecx") 0x10u32, out("eax") _, out("edx") _) };
    expect_gp(p, "rdmsr IA32_TIME_STAMP_COUNTER")
}

fn wrmsr_gp() -> TestResult {
    // SAFETY: wrmsr faults at ring 1 and is skipped (it would only zero the FS base, unused).
    let p =
        unsafe { probe!(GP, ["wrmsr"], in("ecx") 0xc000_0100u32, in("eax") 0u32, in("edx") 0u32) };
    expect_gp(p, "wrmsr IA32_FS_BASE")
}

fn invlpg_gp() -> TestResult {
    let va = boot::image_start();
    // SAFETY: invlpg faults at ring 1 and is skipped (and would only drop a translation).
    let p = unsafe { probe!(GP, ["invlpg ({va})"], va = in(reg) va) };
    expect_gp(p, "invlpg")
}

fn cli_gp() -> TestResult {
    // SAFETY: cli faults at ring 1 (IOPL 0) and is skipped.
    let p = unsafe { probe!(GP, ["cli"]) };
    expect_gp(p, "cli")
}

fn port_io_gp() -> TestResult {
    // SAFETY: port I/O faults at ring 1 (IOPL 0, no I/O bitmap) and is skipped.
    let p = unsafe { probe!(GP, ["inb $0x80, %al"], out("al") _) };
    expect_gp(p, "inb $0x80")
}
