//! Hypercalls (docs/abi.md §2.2): `int $0x1f` from ring 1, the call number in RAX, arguments in
//! RDX, RBX, RCX, RSI, RDI, the result in RAX; every other register is preserved.
//!
//! [`hcall`] is the one place that issues them; the wrappers below are the calls that cannot
//! break the memory Rust relies on, so they are safe to use anywhere.

use core::arch::asm;
use lg_core::abi::hcall as nr;
use lgtest::pagetable::Level;

/// Issue hypercall `nr` with up to five arguments and return RAX.
///
/// # Safety
/// The call must not invalidate anything Rust relies on: e.g. `NEW_PGTABLE` must switch to tables
/// that still map the kernel, `SET_TRAP` must name a real handler, `IRET` must have a frame. The
/// host kills the guest for invalid arguments, which is always memory-safe.
#[inline(always)]
pub unsafe fn hcall(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> u64 {
    let ret;
    // SAFETY: `int $0x1f` is the hypercall gate; the host changes only RAX (and, per the caller's
    // contract, memory the call is about). RBX is reserved by LLVM, so its argument is swapped in
    // and out around the call rather than named as an operand.
    unsafe {
        asm!(
            "xchg {a1}, %rbx",
            "int $0x1f",
            "xchg {a1}, %rbx",
            a1 = inout(reg) a1 => _,
            inlateout("rax") nr => ret,
            in("rdx") a0,
            in("rcx") a2,
            in("rsi") a3,
            in("rdi") a4,
            options(att_syntax)
        );
    }
    ret
}

/// A call with at most one argument and no effect on guest memory or on the kernel's mappings
/// (only the wrappers below use it, each with a fixed call number).
fn simple(call: u64, a0: u64) -> u64 {
    // SAFETY: only used for calls that change no guest memory and no mapping the kernel uses.
    unsafe { hcall(call, a0, 0, 0, 0, 0) }
}

/// Write bytes to the early console, in pieces the host accepts.
pub fn console_write(bytes: &[u8]) {
    for chunk in bytes.chunks(nr::CONSOLE_MAX as usize) {
        // SAFETY: the host only reads the buffer, which `chunk` keeps alive.
        unsafe {
            hcall(
                nr::CONSOLE_WRITE,
                chunk.as_ptr() as u64,
                chunk.len() as u64,
                0,
                0,
                0,
            )
        };
    }
}

/// Report a crash: the launcher exits 1 with `msg` (truncated to what the host accepts).
pub fn crash(msg: &[u8]) -> ! {
    let msg = msg.get(..nr::CRASH_MAX as usize).unwrap_or(msg);
    // SAFETY: the host only reads the message.
    unsafe { hcall(nr::CRASH, msg.as_ptr() as u64, msg.len() as u64, 0, 0, 0) };
    unreachable_after_exit()
}

/// Power off: the launcher exits 0.
pub fn shutdown() -> ! {
    simple(nr::SHUTDOWN, nr::SHUTDOWN_POWEROFF);
    unreachable_after_exit()
}

/// The host promised not to come back; if it does anyway, stay put rather than run on.
fn unreachable_after_exit() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

pub fn flush_async() {
    simple(nr::FLUSH_ASYNC, 0);
}

pub fn wallclock_ns() -> u64 {
    simple(nr::GET_WALLCLOCK, 0)
}

/// Arm the one-shot timer (irq 0) `delta_ns` from now; 0 cancels it.
pub fn set_clockevent(delta_ns: u64) {
    simple(nr::SET_CLOCKEVENT, delta_ns);
}

/// Enable interrupts and sleep until one is pending; it is delivered before this returns.
pub fn halt() {
    simple(nr::HALT, 0);
}

pub fn flush_tlb(kind: u64) {
    simple(nr::FLUSH_TLB, kind);
}

pub fn flush_one(va: u64) {
    simple(nr::FLUSH_ONE, va);
}

/// Tell the host that the entry at `entry_gpa` (a table of `level`) now holds `value`.
/// The caller has already stored it; the host only drops what it derived from the old value.
pub fn set_entry(level: Level, entry_gpa: u64, value: u64) {
    // SAFETY: a notification: the guest's tables, which the caller already changed, are the truth.
    unsafe { hcall(level.set_hcall(), entry_gpa, value, 0, 0, 0) };
}

/// The host may forget this top-level table (not the current one).
pub fn release_pgtable(pml4_gpa: u64) {
    simple(nr::RELEASE_PGTABLE, pml4_gpa);
}

/// Switch to the address space rooted at `pml4_gpa`.
///
/// # Safety
/// The tables must map everything the kernel uses from here on (code, stack, statics).
pub unsafe fn new_pgtable(pml4_gpa: u64) {
    // SAFETY: the caller guarantees the new tables keep the kernel mapped.
    unsafe { hcall(nr::NEW_PGTABLE, pml4_gpa, 0, 0, 0, 0) };
}

/// Set trap-table entry `vector`.
///
/// # Safety
/// `handler` must be an entry stub that follows the trap-frame protocol (`traps.rs`).
pub unsafe fn set_trap(vector: u64, handler: u64, flags: u64) {
    // SAFETY: the caller guarantees `handler` is a trap stub.
    unsafe { hcall(nr::SET_TRAP, vector, handler, flags, 0, 0) };
}

/// The kernel stack for traps from guest user mode (this guest never enters user mode).
pub fn set_stack(sp0: u64) {
    simple(nr::SET_STACK, sp0);
}

/// Set all three TLS descriptors (GDT entries 12..=14).
pub fn load_tls(descs: [u64; 3]) {
    // SAFETY: only the TLS GDT slots change; the kernel's own segments are the host's.
    unsafe { hcall(nr::LOAD_TLS, descs[0], descs[1], descs[2], 0, 0) };
}

/// Set one TLS descriptor (`index` 12..=14).
pub fn load_gdt_entry(index: u64, desc: u64) {
    // SAFETY: as for `load_tls`.
    unsafe { hcall(nr::LOAD_GDT_ENTRY, index, desc, 0, 0, 0) };
}
