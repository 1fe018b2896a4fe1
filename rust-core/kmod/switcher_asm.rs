//! The switcher: the only code that runs with guest state loaded.
//!
//! It is position independent and lives in a non-executable section of the module (`.rodata`), so
//! objtool, ftrace, kprobes and the kernel's alternatives never see or patch it; the module copies
//! it into the switcher's text pages, which are mapped at the same address in the host and in every
//! guest. All per-CPU data is found relative to the CPU's switcher base (its regs page): on entry it
//! is the argument, on exit it is the stack pointer rounded down (TSS.RSP0 is the top of the regs
//! page), and in the NMI/#MC stubs it comes from SIDT (the IDT is a fixed page after the base).
//!
//! Order of the switch (x86_64-hazards.md §9): the switcher IDT is loaded first and the host IDT
//! restored last, so an NMI or machine check at any instruction in between finds our stubs, which
//! note it and let the host handle it once the host state is back.

use core::arch::global_asm;

use lg_core::switcher::pages::{flag, off, TRAP_ABORTED};
use lg_core::switcher::tables::STUB_SIZE;

const MSR_FS_BASE: u32 = 0xc000_0100;
const MSR_GS_BASE: u32 = 0xc000_0101;
const MSR_IA32_PRED_CMD: u32 = 0x49;
/// CR4 bits cleared in guest mode: PGE (host global TLB entries would survive the switch to the
/// guest's CR3), PCE (user RDPMC), SMAP (a ring-1 kernel cannot use STAC/CLAC).
const CR4_GUEST_CLEAR: u64 = (1 << 7) | (1 << 8) | (1 << 21);

global_asm!(
    ".pushsection .rodata.lg_switcher, \"a\"",
    ".balign 4096",
    ".globl lg_switcher_start",
    "lg_switcher_start:",

    // ------------------------------------------------------------------------------------------
    // void lg_sw_enter(u64 cpu_base): host -> guest. Called with IRQs off; returns after the next
    // exit, with all host state restored and the guest's state on the regs page.
    // ------------------------------------------------------------------------------------------
    ".globl lg_sw_enter",
    "lg_sw_enter:",
    "push %rbp", "push %rbx", "push %r12", "push %r13", "push %r14", "push %r15",
    "pushfq",
    "mov %rdi, %rbx",
    "mov %rsp, {H_RSP}(%rbx)",
    // Save what the exit path must restore.
    "sidt {H_IDT}(%rbx)",
    "sgdt {H_GDT}(%rbx)",
    "str {H_TR}(%rbx)",
    "sldt {H_LDT}(%rbx)",
    "mov %ds, {H_DS}(%rbx)",
    "mov %es, {H_ES}(%rbx)",
    "mov %fs, {H_FS}(%rbx)",
    "mov %gs, {H_GS}(%rbx)",
    "mov %cr3, %rax",
    "mov %rax, {G_HOST_CR3}(%rbx)",
    "mov ${MSR_FS_BASE}, %ecx",
    "rdmsr",
    "mov %eax, {H_FS_BASE}(%rbx)",
    "mov %edx, {H_FS_BASE}+4(%rbx)",
    "mov ${MSR_GS_BASE}, %ecx",
    "rdmsr",
    "mov %eax, {H_GS_BASE}(%rbx)",
    "mov %edx, {H_GS_BASE}+4(%rbx)",
    "testq ${F_PKU}, {G_FLAGS}(%rbx)",
    "jz 1f",
    "xor %ecx, %ecx",
    "rdpkru",
    "mov %eax, {H_PKRU}(%rbx)",
    "1:",
    // From here until the host IDT is back, NMIs and machine checks enter our stubs.
    "lidt {G_IDT_DESC}(%rbx)",
    // LTR needs an available (not busy) TSS descriptor: ours now, the host's on the way back.
    "mov {H_GDT_RW_BASE}(%rbx), %rax",
    "andb $0xfd, {TSS_TYPE_IN_GDT}(%rax)",
    "lgdt {G_GDT_DESC}(%rbx)",
    "andb $0xfd, {G_TSS_DESC_TYPE}(%rbx)",
    "mov ${TSS_SEL}, %eax",
    "ltr %ax",
    "xor %eax, %eax",
    "lldt %ax",
    // The guest's data selectors (checked by the host), then its FS/GS bases: loading a selector
    // clobbers the base.
    "mov {X_DS}(%rbx), %eax",
    "mov %eax, %ds",
    "mov {X_ES}(%rbx), %eax",
    "mov %eax, %es",
    "mov {X_FS}(%rbx), %eax",
    "mov %eax, %fs",
    "mov {X_GS}(%rbx), %eax",
    "mov %eax, %gs",
    "mov ${MSR_FS_BASE}, %ecx",
    "mov {X_FS_BASE}(%rbx), %eax",
    "mov {X_FS_BASE}+4(%rbx), %edx",
    "wrmsr",
    "mov ${MSR_GS_BASE}, %ecx",
    "mov {X_GS_BASE}(%rbx), %eax",
    "mov {X_GS_BASE}+4(%rbx), %edx",
    "wrmsr",
    "testq ${F_PKU}, {G_FLAGS}(%rbx)",
    "jz 1f",
    "mov {X_PKRU}(%rbx), %eax",
    "xor %ecx, %ecx",
    "xor %edx, %edx",
    "wrpkru",
    "1:",
    "mov %cr4, %rax",
    "mov %rax, {H_CR4}(%rbx)",
    "and ${CR4_NOT_GUEST}, %rax",
    "mov %rax, %cr4",
    // An NMI or #MC noted during the switch: back out now instead of entering the guest.
    "cmpw $0, {H_NMI_PENDING}(%rbx)",
    "jne 2f",
    "mov {G_GUEST_CR3}(%rbx), %rax",
    "mov %rax, %cr3",
    // Guest address space: only this CPU's switcher pages (no host page) are mapped now.
    "lea {REGS}(%rbx), %rsp",
    "pop %r15", "pop %r14", "pop %r13", "pop %r12", "pop %r11", "pop %r10", "pop %r9",
    "pop %r8", "pop %rbp", "pop %rdi", "pop %rsi", "pop %rdx", "pop %rcx", "pop %rbx",
    "pop %rax",
    "add $16, %rsp",
    // Clear CPU buffers (MDS and friends) before running untrusted code; harmless elsewhere.
    "verw lg_sw_verw_sel(%rip)",
    "iretq",
    "2:",
    "movq ${TRAP_ABORTED}, {R_TRAPNUM}(%rbx)",
    "movq ${TRAP_ABORTED}, {X_EXIT_VECTOR}(%rbx)",
    "movq $0, {X_EXIT_CS}(%rbx)",
    "lea {REGS}(%rbx), %rsp",
    "jmp lg_sw_exit_restore",

    // ------------------------------------------------------------------------------------------
    // Guest -> host. Every vector has a 16-byte stub that makes the frame uniform (error code,
    // vector) and joins the common exit path with the guest's registers untouched.
    // ------------------------------------------------------------------------------------------
    ".balign 16",
    ".globl lg_sw_stubs",
    "lg_sw_stubs:",
    ".set vec, 0",
    ".rept 256",
    ".balign {STUB_SIZE}",
    ".if vec == 2",
    "jmp lg_sw_nmi",
    ".elseif vec == 18",
    "jmp lg_sw_mce",
    ".elseif vec == 1",
    "jmp lg_sw_debug",
    ".elseif vec == 8",
    "jmp lg_sw_double_fault",
    ".elseif vec == 10 || vec == 11 || vec == 12 || vec == 13 || vec == 14 || vec == 17 || vec == 21 || vec == 29 || vec == 30",
    "pushq $vec",
    "jmp lg_sw_exit",
    ".else",
    "pushq $0",
    "pushq $vec",
    "jmp lg_sw_exit",
    ".endif",
    ".set vec, vec + 1",
    ".endr",
    ".balign {STUB_SIZE}",
    "lg_sw_stubs_end:",

    "lg_sw_exit:",
    "push %rax", "push %rbx", "push %rcx", "push %rdx", "push %rsi", "push %rdi", "push %rbp",
    "push %r8", "push %r9", "push %r10", "push %r11", "push %r12", "push %r13", "push %r14",
    "push %r15",
    // Sane flags for host code: the guest may have left AC (SMAP off) or DF set.
    "pushq $2",
    "popfq",
    "mov %rsp, %rbx",
    "and $-4096, %rbx",
    // Record the frame as found. CS RPL 0 means the CPU faulted inside the switcher itself.
    "mov 15*8(%rsp), %rax",
    "mov %rax, {X_EXIT_VECTOR}(%rbx)",
    "mov 16*8(%rsp), %rax",
    "mov %rax, {X_EXIT_ERR}(%rbx)",
    "mov 17*8(%rsp), %rax",
    "mov %rax, {X_EXIT_RIP}(%rbx)",
    "mov 18*8(%rsp), %rax",
    "mov %rax, {X_EXIT_CS}(%rbx)",
    "mov %cr2, %rax",
    "mov %rax, {X_CR2}(%rbx)",
    "movq $0, {X_DS}(%rbx)",
    "mov %ds, {X_DS}(%rbx)",
    "movq $0, {X_ES}(%rbx)",
    "mov %es, {X_ES}(%rbx)",
    "movq $0, {X_FS}(%rbx)",
    "mov %fs, {X_FS}(%rbx)",
    "movq $0, {X_GS}(%rbx)",
    "mov %gs, {X_GS}(%rbx)",
    "lg_sw_exit_restore:",
    "mov {G_HOST_CR3}(%rbx), %rax",
    "mov %rax, %cr3",
    "mov {H_CR4}(%rbx), %rax",
    "mov %rax, %cr4",
    // The guest's FS/GS bases and PKRU (it can change all three without trapping).
    "mov ${MSR_FS_BASE}, %ecx",
    "rdmsr",
    "mov %eax, {X_FS_BASE}(%rbx)",
    "mov %edx, {X_FS_BASE}+4(%rbx)",
    "mov ${MSR_GS_BASE}, %ecx",
    "rdmsr",
    "mov %eax, {X_GS_BASE}(%rbx)",
    "mov %edx, {X_GS_BASE}+4(%rbx)",
    "testq ${F_PKU}, {G_FLAGS}(%rbx)",
    "jz 1f",
    "xor %ecx, %ecx",
    "rdpkru",
    "mov %eax, {X_PKRU}(%rbx)",
    "mov {H_PKRU}(%rbx), %eax",
    "xor %ecx, %ecx",
    "xor %edx, %edx",
    "wrpkru",
    "1:",
    // Host GDT: the writable alias for LTR (which marks the TSS busy), then the saved one.
    "lgdt {H_GDT_RW}(%rbx)",
    "movzwl {H_TR}(%rbx), %eax",
    "ltr %ax",
    "lgdt {H_GDT}(%rbx)",
    "movzwl {H_LDT}(%rbx), %eax",
    "lldt %ax",
    "movzwl {H_DS}(%rbx), %eax",
    "mov %eax, %ds",
    "movzwl {H_ES}(%rbx), %eax",
    "mov %eax, %es",
    "movzwl {H_FS}(%rbx), %eax",
    "mov %eax, %fs",
    "movzwl {H_GS}(%rbx), %eax",
    "mov %eax, %gs",
    "mov ${MSR_FS_BASE}, %ecx",
    "mov {H_FS_BASE}(%rbx), %eax",
    "mov {H_FS_BASE}+4(%rbx), %edx",
    "wrmsr",
    "mov ${MSR_GS_BASE}, %ecx",
    "mov {H_GS_BASE}(%rbx), %eax",
    "mov {H_GS_BASE}+4(%rbx), %edx",
    "wrmsr",
    "mov {H_RSP}(%rbx), %rsp",
    // Host IDT last: from here on host handlers see complete host state.
    "lidt {H_IDT}(%rbx)",
    // Ring 1 shares the supervisor predictor mode with ring 0: wipe what the guest trained before
    // the first host return (x86_64-hazards.md §14).
    "testq ${F_IBPB}, {G_FLAGS}(%rbx)",
    "jz 1f",
    "mov ${MSR_IA32_PRED_CMD}, %ecx",
    "mov $1, %eax",
    "xor %edx, %edx",
    "wrmsr",
    "1:",
    // Refill the return stack buffer with harmless entries.
    "mov $16, %ecx",
    "3:",
    "call 4f",
    "int3",
    "4:",
    "call 5f",
    "int3",
    "5:",
    "dec %ecx",
    "jnz 3b",
    "add $(32*8), %rsp",
    "lfence",
    "popfq",
    "pop %r15", "pop %r14", "pop %r13", "pop %r12", "pop %rbx", "pop %rbp",
    "ret",
    "int3",

    // ------------------------------------------------------------------------------------------
    // NMI / #MC / #DB / #DF arrive on their own IST stacks. From the guest they become ordinary
    // exits (the frame is moved to the regs page). Inside the switcher (CPL 0) an NMI or #MC is
    // only noted in the host page (reached by briefly loading the host CR3) and handled by the
    // host after the switch; a stray #DB is dismissed.
    // ------------------------------------------------------------------------------------------
    "lg_sw_nmi:",
    "testb $3, 8(%rsp)",
    "jz 6f",
    "push $2",
    "jmp lg_sw_ist_to_exit",
    "6:",
    "push %rax",
    "mov ${H_NMI_PENDING_REL}, %eax",
    "jmp lg_sw_note_pending",

    "lg_sw_mce:",
    "testb $3, 8(%rsp)",
    "jz 6f",
    "push $18",
    "jmp lg_sw_ist_to_exit",
    "6:",
    "push %rax",
    "mov ${H_MCE_PENDING_REL}, %eax",
    "jmp lg_sw_note_pending",

    "lg_sw_debug:",
    "testb $3, 8(%rsp)",
    "jz 6f",
    "push $1",
    "jmp lg_sw_ist_to_exit",
    "6:",
    "push %rax",
    "mov $0xfffe0ff0, %eax",
    "mov %rax, %db6",
    "pop %rax",
    "iretq",

    // A double fault is a switcher bug if it came from ring 0; either way, report it as an exit
    // (vector 8) and let the host kill the guest with a clear message.
    "lg_sw_double_fault:",
    "add $8, %rsp",
    "push $8",
    "jmp lg_sw_ist_to_exit",

    // On the IST stack: [vector][rip cs rflags rsp ss]. Copy the frame to the top of the regs page
    // (the IST page follows it, so the IST stack rounded down is the regs page's end) and exit.
    "lg_sw_ist_to_exit:",
    "push %rax",
    "push %rcx",
    "mov %rsp, %rax",
    "and $-4096, %rax",
    "mov 24(%rsp), %rcx", "mov %rcx, -40(%rax)",
    "mov 32(%rsp), %rcx", "mov %rcx, -32(%rax)",
    "mov 40(%rsp), %rcx", "mov %rcx, -24(%rax)",
    "mov 48(%rsp), %rcx", "mov %rcx, -16(%rax)",
    "mov 56(%rsp), %rcx", "mov %rcx, -8(%rax)",
    "movq $0, -48(%rax)",
    "mov 16(%rsp), %rcx", "mov %rcx, -56(%rax)",
    "mov 8(%rsp), %rcx", "mov %rcx, -64(%rax)",
    "mov (%rsp), %rcx",
    "lea -64(%rax), %rsp",
    "pop %rax",
    "jmp lg_sw_exit",

    // rax (saved on the stack) holds the host-page-relative offset of the flag to set.
    "lg_sw_note_pending:",
    "push %rcx",
    "push %rdx",
    "sub $16, %rsp",
    "sidt 6(%rsp)",
    "mov 8(%rsp), %rdx",
    "add $16, %rsp",
    "sub ${IDT}, %rdx",
    "add %rdx, %rax",
    "mov %cr3, %rcx",
    "push %rcx",
    "mov {G_HOST_CR3}(%rdx), %rcx",
    "mov %rcx, %cr3",
    "movb $1, (%rax)",
    "pop %rcx",
    "mov %rcx, %cr3",
    "pop %rdx",
    "pop %rcx",
    "pop %rax",
    "iretq",

    "lg_sw_verw_sel:",
    ".word 0x18",
    ".globl lg_switcher_end",
    "lg_switcher_end:",
    ".popsection",

    H_RSP = const off::H_RSP,
    H_IDT = const off::H_IDT,
    H_GDT = const off::H_GDT,
    H_GDT_RW = const off::H_GDT_RW,
    H_GDT_RW_BASE = const off::H_GDT_RW_BASE,
    H_TR = const off::H_TR,
    H_LDT = const off::H_LDT,
    H_DS = const off::H_DS,
    H_ES = const off::H_ES,
    H_FS = const off::H_FS,
    H_GS = const off::H_GS,
    H_CR4 = const off::H_CR4,
    H_FS_BASE = const off::H_FS_BASE,
    H_GS_BASE = const off::H_GS_BASE,
    H_PKRU = const off::H_PKRU,
    H_NMI_PENDING = const off::H_NMI_PENDING,
    H_NMI_PENDING_REL = const off::H_NMI_PENDING,
    H_MCE_PENDING_REL = const off::H_MCE_PENDING,
    G_HOST_CR3 = const off::G_HOST_CR3,
    G_GUEST_CR3 = const off::G_GUEST_CR3,
    G_FLAGS = const off::G_FLAGS,
    G_IDT_DESC = const off::G_IDT_DESC,
    G_GDT_DESC = const off::G_GDT_DESC,
    G_TSS_DESC_TYPE = const off::G_TSS_DESC_TYPE,
    X_FS_BASE = const off::X_FS_BASE,
    X_GS_BASE = const off::X_GS_BASE,
    X_PKRU = const off::X_PKRU,
    X_CR2 = const off::X_CR2,
    X_EXIT_VECTOR = const off::X_EXIT_VECTOR,
    X_EXIT_ERR = const off::X_EXIT_ERR,
    X_EXIT_RIP = const off::X_EXIT_RIP,
    X_EXIT_CS = const off::X_EXIT_CS,
    X_DS = const off::X_DS,
    X_ES = const off::X_ES,
    X_FS = const off::X_FS,
    X_GS = const off::X_GS,
    REGS = const off::REGS,
    R_TRAPNUM = const off::R_TRAPNUM,
    IDT = const off::IDT,
    TSS_SEL = const 8 * 8,
    TSS_TYPE_IN_GDT = const 8 * 8 + 5,
    F_PKU = const flag::PKU,
    F_IBPB = const flag::IBPB,
    MSR_FS_BASE = const MSR_FS_BASE,
    MSR_GS_BASE = const MSR_GS_BASE,
    MSR_IA32_PRED_CMD = const MSR_IA32_PRED_CMD,
    CR4_NOT_GUEST = const !CR4_GUEST_CLEAR as i64,
    TRAP_ABORTED = const TRAP_ABORTED,
    STUB_SIZE = const STUB_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    pub static lg_switcher_start: u8;
    pub static lg_switcher_end: u8;
    pub static lg_sw_enter: u8;
    pub static lg_sw_stubs: u8;
}

/// Offsets of the entry points inside the switcher text.
pub struct Blob {
    pub bytes: &'static [u8],
    pub enter: u64,
    pub stubs: u64,
}

pub fn blob() -> Blob {
    // SAFETY: these are labels in the section emitted above; taking their addresses is safe and
    // the range start..end is the assembled code, which is immutable (.rodata).
    unsafe {
        let start = &raw const lg_switcher_start as usize;
        let end = &raw const lg_switcher_end as usize;
        let enter = &raw const lg_sw_enter as usize;
        let stubs = &raw const lg_sw_stubs as usize;
        Blob {
            bytes: core::slice::from_raw_parts(start as *const u8, end - start),
            enter: (enter - start) as u64,
            stubs: (stubs - start) as u64,
        }
    }
}
