//! Trap entry and exit (docs/abi.md §2.3), and the "expected trap" machinery the tests use.
//!
//! The host delivers a trap by pushing a hardware-shaped frame on the current stack (aligned down
//! to 16): `[error code,] RIP, CS, RFLAGS, RSP, SS`. Each vector has a tiny stub that pushes a
//! dummy error code where the CPU has none, then its vector number, and jumps to `trap_common`,
//! which saves every general register and calls [`dispatch`] with the resulting [`TrapFrame`].
//! On the way out the registers are restored and the `IRET` hypercall pops
//! `RAX, RIP, CS, RFLAGS, RSP, SS`: RAX travels in the frame because RAX itself must carry the
//! hypercall number. `dispatch` returns the frame to restore: the one it was given, or (user mode,
//! `src/user/`) another process's frame on that process's kernel stack, which is how the
//! scheduler switches. The system call entry (`lg_syscall_entry`, docs/abi.md §2.6) builds the
//! same frame under the one the host pushed for it, with [`SYSCALL_VECTOR`] as its vector.
//!
//! Tests expect a trap with [`probe!`]: arm a vector, run an instruction; the dispatcher records
//! the frame ([`TrapRecord`]) and resumes at the label after the instruction (the "fixup"), or, for
//! a page fault that should be repaired, installs a prepared PTE and retries the instruction.
//! Any other trap is a bug: it is printed in full and the guest crashes.

use crate::{hcall, irq, paging, shared};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use lg_core::abi::{self, hcall as nr, trap, vector};
use lgtest::pagetable::Level;

/// Everything `trap_common` saves, lowest address first: the general registers in reverse push
/// order, then the stub's vector and error code, then the frame the host pushed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    pub const ZERO: TrapFrame = TrapFrame {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: 0,
        rsi: 0,
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: 0,
        error: 0,
        rip: 0,
        cs: 0,
        rflags: 0,
        rsp: 0,
        ss: 0,
    };
}
const _: () = assert!(core::mem::offset_of!(TrapFrame, rax) == 14 * 8);
const _: () = assert!(core::mem::offset_of!(TrapFrame, rip) == 17 * 8);
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

/// The `vector` of a frame built by the system call entry (not a CPU vector).
pub const SYSCALL_VECTOR: u64 = 0x100;

// The stubs: one per exception vector (0..=31) and one for the irq vector (`irq::VECTOR`, 32).
// Which vectors carry a CPU error code is `abi::vector::has_error_code`; `WITH_ERROR` below
// checks the list against it at compile time.
global_asm!(
    r#"
    .section .text.traps, "ax", @progbits

    .macro TRAP_STUB vec, has_error
    .p2align 4
lg_trap_stub_\vec:
    .if \has_error == 0
    pushq $0
    .endif
    pushq $\vec
    jmp lg_trap_common
    .endm

    .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31,32
    TRAP_STUB \v, 0
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
    TRAP_STUB \v, 1
    .endr

    .p2align 4
lg_trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    cld                         # Rust assumes DF=0; the interrupted RFLAGS is safe in the frame
    mov %rsp, %rdi              # the TrapFrame
    and $-16, %rsp              # the SysV ABI's call alignment, whatever the host's frame did
    call {dispatch}
    mov %rax, %rsp              # the frame to return to (this one, or another process's)
    .global lg_trap_return
lg_trap_return:
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    # Left: [rax, vector, error, rip, cs, rflags, rsp, ss]. IRET takes [rax, rip, cs, rflags,
    # rsp, ss]: move the saved RAX up into the error-code slot and drop the two words below it.
    mov (%rsp), %rax
    mov %rax, 16(%rsp)
    add $16, %rsp
    mov ${iret}, %eax
    int $0x1f
    ud2                         # IRET never comes back here

    # System calls from user mode (SET_SYSCALL_ENTRY): the host left RSP = sp0 - 40 pointing at
    # [RIP = RCX, CS, RFLAGS = R11, RSP, SS]. Note the RFLAGS we run with (to check the mask),
    # then build a trap frame on top like the stubs do.
    .p2align 4
    .global lg_syscall_entry
lg_syscall_entry:
    pushfq
    popq {entry_rflags}(%rip)
    pushq $0
    pushq ${syscall_vector}
    jmp lg_trap_common

    .section .rodata.trap_stubs, "a", @progbits
    .p2align 3
lg_trap_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32
    .quad lg_trap_stub_\v
    .endr
"#,
    dispatch = sym dispatch,
    iret = const nr::IRET,
    entry_rflags = sym SYSCALL_ENTRY_RFLAGS,
    syscall_vector = const SYSCALL_VECTOR,
    options(att_syntax)
);

const STUBS: usize = 33;

unsafe extern "C" {
    #[link_name = "lg_trap_stubs"]
    static TRAP_STUBS: [u64; STUBS];
    #[link_name = "lg_syscall_entry"]
    static SYSCALL_ENTRY: u8;
}

/// RFLAGS as the system call entry found them (before it touched anything).
static SYSCALL_ENTRY_RFLAGS: AtomicU64 = AtomicU64::new(0);

/// Where the host enters the kernel for a user `syscall`.
pub fn syscall_entry() -> u64 {
    &raw const SYSCALL_ENTRY as u64
}

/// RFLAGS at the last system call entry.
pub fn syscall_entry_rflags() -> u64 {
    SYSCALL_ENTRY_RFLAGS.load(Relaxed)
}

/// The vectors whose stubs pop a CPU error code (the `TRAP_STUB \v, 1` list above).
const WITH_ERROR: [u8; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
const _: () = {
    let mut v = 0u8;
    while v < 32 {
        let mut listed = false;
        let mut i = 0;
        while i < WITH_ERROR.len() {
            listed |= WITH_ERROR[i] == v;
            i += 1;
        }
        assert!(listed == vector::has_error_code(v));
        v += 1;
    }
    assert!(irq::VECTOR as usize == STUBS - 1);
};

fn stub(vector: u8) -> u64 {
    // SAFETY: a table of addresses in .rodata, never written.
    let stubs = unsafe { &TRAP_STUBS };
    stubs.get(usize::from(vector)).copied().unwrap_or(0)
}

/// Vectors the host refuses in `SET_TRAP`: NMI, and the hypercall.
fn settable(v: u8) -> bool {
    v != vector::NMI && v != vector::HYPERCALL
}

/// Register the stub for one vector as an interrupt gate (delivery clears the virtual IF, so no
/// interrupt can land inside a handler).
pub fn install(vector: u8) {
    if usize::from(vector) < STUBS && settable(vector) {
        // SAFETY: the stub follows the frame protocol and returns with IRET.
        unsafe { hcall::set_trap(u64::from(vector), stub(vector), trap::PRESENT) };
    }
}

/// Every exception vector the host may reflect.
pub fn install_exceptions() {
    (0..32).for_each(install);
}

pub fn install_irq() {
    install(irq::VECTOR as u8);
}

/// Address of the stub for `vector` (for the adversary's deliberately bad `SET_TRAP`s).
pub fn stub_address(vector: u8) -> u64 {
    stub(vector)
}

// ---------------------------------------------------------------------------------------------
// Expected traps.
// ---------------------------------------------------------------------------------------------

/// `EXPECT` value: nothing expected; any trap is a bug.
const NONE: u64 = u64::MAX;
/// `EXPECT` value: any exception vector is expected (for "this must not trap" probes).
pub const ANY: u64 = u64::MAX - 1;

/// The vector the next trap may have (one shot).
static EXPECT: AtomicU64 = AtomicU64::new(NONE);
/// Where to resume after the expected trap; written by the `probe!` code itself. 0: retry the
/// instruction after applying the armed repair.
static FIXUP: AtomicU64 = AtomicU64::new(0);
/// The repair for an expected page fault: store `REPAIR_VALUE` into the PTE at `REPAIR_PTE` (gpa).
static REPAIR_PTE: AtomicU64 = AtomicU64::new(0);
static REPAIR_VALUE: AtomicU64 = AtomicU64::new(0);

/// What the dispatcher saw of an expected trap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapRecord {
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
    /// The shared page's `cr2` at delivery (page faults only; 0 otherwise).
    pub cr2: u64,
    /// Where the host put the frame: the address of its RIP slot.
    pub rip_slot: u64,
    /// The virtual IF (`irq_enabled`) while the handler ran.
    pub handler_irq_enabled: u64,
}

impl TrapRecord {
    const WORDS: usize = 10;
    fn to_words(self) -> [u64; Self::WORDS] {
        [
            self.vector,
            self.error,
            self.rip,
            self.cs,
            self.rflags,
            self.rsp,
            self.ss,
            self.cr2,
            self.rip_slot,
            self.handler_irq_enabled,
        ]
    }
    fn from_words(w: [u64; Self::WORDS]) -> Self {
        let [vector, error, rip, cs, rflags, rsp, ss, cr2, rip_slot, handler_irq_enabled] = w;
        TrapRecord {
            vector,
            error,
            rip,
            cs,
            rflags,
            rsp,
            ss,
            cr2,
            rip_slot,
            handler_irq_enabled,
        }
    }
}

/// The last expected trap, as words (atomics: the trap handler writes them, the test reads).
static LAST: [AtomicU64; TrapRecord::WORDS] = [const { AtomicU64::new(0) }; TrapRecord::WORDS];
/// Number of expected traps recorded so far.
static RECORDED: AtomicU64 = AtomicU64::new(0);

/// Expect one trap with `vector` (or [`ANY`]); returns the record count to pass to [`take`].
pub fn arm(vector: u64) -> u64 {
    FIXUP.store(0, Relaxed);
    EXPECT.store(vector, Relaxed);
    RECORDED.load(Relaxed)
}

/// Expect a page fault and repair it by storing `value` into the PTE at `pte_gpa` (then
/// `SET_PTE`); the faulting instruction is retried (a `probe!` fixup is ignored).
///
/// # Safety
/// `pte_gpa` must be a live PTE whose new value maps memory nothing else relies on.
pub unsafe fn arm_repair(pte_gpa: u64, value: u64) -> u64 {
    REPAIR_PTE.store(pte_gpa, Relaxed);
    REPAIR_VALUE.store(value, Relaxed);
    arm(u64::from(vector::PF))
}

/// The slot the `probe!` code writes its resume address into.
pub fn fixup_slot() -> *mut u64 {
    FIXUP.as_ptr()
}

/// Disarm, and return the trap recorded since `arm` returned `since`, if any.
pub fn take(since: u64) -> Option<TrapRecord> {
    disarm();
    (RECORDED.load(Relaxed) != since)
        .then(|| TrapRecord::from_words(core::array::from_fn(|i| LAST[i].load(Relaxed))))
}

/// Nothing is expected any more.
pub fn disarm() {
    EXPECT.store(NONE, Relaxed);
    FIXUP.store(0, Relaxed);
    REPAIR_PTE.store(0, Relaxed);
}

/// The outcome of [`probe!`]: where the instruction was, where execution resumed, the stack
/// pointer when it ran, and the trap it raised, if any.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub fault_rip: u64,
    pub resume_rip: u64,
    pub rsp: u64,
    pub trap: Option<TrapRecord>,
}

/// Run instructions expecting a trap, and evaluate to a [`Probe`].
///
/// `probe!(vector, [insns] [then [insns]] [, operands])` arms `vector` (or `traps::ANY`); the
/// first instruction is at label `1:`, and after the trap execution resumes at label `2:` right
/// after them (where the optional `then` instructions run). `probe!(@armed since, ...)` takes an
/// arming done by the caller instead (e.g. [`arm_repair`], which retries the instruction instead
/// of skipping it). Extra operands go to `asm!`.
///
/// Every register is as it was at the trap when execution resumes (the handler restores them),
/// so outputs written before the trapping instruction are valid. Expands to `asm!`: the caller's
/// `unsafe` block vouches for the instructions.
macro_rules! probe {
    (@armed $since:expr, [$($insn:literal),+ $(,)?]
        $(then [$($after:literal),+ $(,)?])? $(, $($operands:tt)+)?) => {{
        let since = $since;
        let (fault_rip, resume_rip, rsp): (u64, u64, u64);
        core::arch::asm!(
            "lea 2f(%rip), {resume}",
            "mov {resume}, ({fixup})",
            "lea 1f(%rip), {fault}",
            "mov %rsp, {rsp}",
            "1:",
            $($insn,)+
            "2:",
            $($($after,)+)?
            fixup = in(reg) $crate::traps::fixup_slot(),
            resume = out(reg) resume_rip,
            fault = out(reg) fault_rip,
            rsp = out(reg) rsp,
            $($($operands)+,)?
            options(att_syntax)
        );
        $crate::traps::Probe { fault_rip, resume_rip, rsp, trap: $crate::traps::take(since) }
    }};
    ($vector:expr, $($rest:tt)+) => {
        probe!(@armed $crate::traps::arm($vector), $($rest)+)
    };
}

// ---------------------------------------------------------------------------------------------
// The dispatcher.
// ---------------------------------------------------------------------------------------------

/// Called by `trap_common` with the virtual IF off (interrupt gate) and DF clear; returns the
/// frame to restore and IRET to.
extern "C" fn dispatch(frame_ptr: *mut TrapFrame) -> *mut TrapFrame {
    // SAFETY: `trap_common` passes the frame it just built on this stack; nothing else refers to
    // it until we return.
    let frame = unsafe { &mut *frame_ptr };
    if frame.cs == USER_CS || frame.vector == SYSCALL_VECTOR {
        return crate::user::trap(frame);
    }
    if frame.vector == irq::VECTOR {
        irq::handle();
        return frame_ptr;
    }
    let expected = EXPECT.load(Relaxed);
    if expected != frame.vector && expected != ANY {
        unexpected(frame);
    }
    EXPECT.store(NONE, Relaxed);
    record(frame);
    let fixup = FIXUP.swap(0, Relaxed);
    let repair = REPAIR_PTE.swap(0, Relaxed);
    if repair != 0 && frame.vector == u64::from(vector::PF) {
        // Retry the instruction with the page mapped.
        // SAFETY: `arm_repair`'s caller vouched for the PTE and the value.
        unsafe { paging::Entry::at(repair) }.set(Level::Pte, REPAIR_VALUE.load(Relaxed));
    } else if fixup != 0 {
        frame.rip = fixup;
    } else {
        unexpected(frame);
    }
    frame_ptr
}

fn record(frame: &TrapFrame) {
    let rec = TrapRecord {
        vector: frame.vector,
        error: frame.error,
        rip: frame.rip,
        cs: frame.cs,
        rflags: frame.rflags,
        rsp: frame.rsp,
        ss: frame.ss,
        cr2: if frame.vector == u64::from(vector::PF) {
            shared::cr2().load(Relaxed)
        } else {
            0
        },
        rip_slot: &raw const frame.rip as u64,
        handler_irq_enabled: shared::irq_enabled().load(Relaxed),
    };
    for (slot, word) in LAST.iter().zip(rec.to_words()) {
        slot.store(word, Relaxed);
    }
    RECORDED.fetch_add(1, Relaxed);
}

/// A trap nobody expected: say everything about it, then crash.
pub fn unexpected(f: &TrapFrame) -> ! {
    let cr2 = shared::cr2().load(Relaxed);
    println!(
        "UNEXPECTED TRAP: vector {} error {:#x} rip {:#x} cs {:#x} rflags {:#x} rsp {:#x} ss {:#x} cr2 {:#x}",
        f.vector, f.error, f.rip, f.cs, f.rflags, f.rsp, f.ss, cr2
    );
    println!(
        "  rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}",
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp
    );
    hcall::crash(b"lgtest: unexpected trap")
}

/// The frame CS/SS a kernel-mode trap must show.
pub const FRAME_CS: u64 = abi::FRAME_KERNEL_CS as u64;
pub const FRAME_SS: u64 = abi::FRAME_KERNEL_DS as u64;
/// … and a user-mode one.
pub const USER_CS: u64 = abi::USER_CS as u64;
pub const USER_SS: u64 = abi::USER_DS as u64;
