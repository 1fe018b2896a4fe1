//! The user programs: hand-written assembly in the `.user` section, which `link.ld` links at
//! `uapi::CODE_BASE` (0x40_0000) and loads inside the kernel image. The kernel maps those frames
//! read-only and executable (US=1) into every process, so a program can reach nothing but its own
//! code, its own memory and the system calls. Assembly rather than Rust because compiled code
//! could call back into kernel text (memcpy, panics) that user mode may not execute.
//!
//! Each program starts with its arguments in RDI, RSI, RDX (set by `spawn`), RSP at the top of
//! its stack, every other register 0. They report what they observe with `REPORT` and end with
//! `EXIT`; a test then checks the kernel's log and exit statuses.

use core::arch::global_asm;
use lg_core::abi::{rflags, PAGE_SIZE};
use lgtest::uapi::{self, sys};

global_asm!(
    r#"
    .section .user.text, "ax", @progbits

    .macro U_SYS nr
    mov $\nr, %eax
    syscall
    .endm

    .macro U_REPORT reg
    mov \reg, %rdi
    U_SYS {report}
    .endm

    .macro U_EXIT0
    xor %edi, %edi
    U_SYS {exit}
    ud2
    .endm

    # exit(code)
    .p2align 4
lg_user_exit:
    U_SYS {exit}
    ud2

    # hello(code): write a line and report write's result and the pid; then report write's
    # result for a kernel buffer and for an unmapped one (both -EFAULT); exit(code).
    .p2align 4
lg_user_hello:
    mov %rdi, %r12
    lea lg_user_hello_msg(%rip), %rdi
    mov $lg_user_hello_len, %esi
    U_SYS {write}
    U_REPORT %rax
    U_SYS {getpid}
    U_REPORT %rax
    movabs ${kernel_addr}, %rdi
    mov $8, %esi
    U_SYS {write}
    U_REPORT %rax
    mov $0x1000, %edi
    mov $8, %esi
    U_SYS {write}
    U_REPORT %rax
    mov %r12, %rdi
    U_SYS {exit}
    ud2
lg_user_hello_msg:
    .ascii "user: hello from ring 3\n"
    .set lg_user_hello_len, . - lg_user_hello_msg

    # peek(addr): report the word at addr.
    .p2align 4
lg_user_peek:
    mov (%rdi), %rax
    U_REPORT %rax
    U_EXIT0

    # poke(addr): store to addr.
    .p2align 4
lg_user_poke:
    movq $1, (%rdi)
    U_EXIT0

    # One instruction that must fault at ring 3 (each is the first of its program).
    .p2align 4
lg_user_ud2:
    ud2
    U_EXIT0
    .p2align 4
lg_user_cli:
    cli
    U_EXIT0
    .p2align 4
lg_user_int1f:
    int $0x1f
    U_EXIT0
    .p2align 4
lg_user_hlt:
    hlt
    U_EXIT0
    .p2align 4
lg_user_read_cr0:
    mov %cr0, %rax
    U_EXIT0
    .p2align 4
lg_user_wbinvd:
    wbinvd
    U_EXIT0

    # same_va(value, rounds): store value at DATA_BASE, yield `rounds` times, report what is
    # there.
    .p2align 4
lg_user_same_va:
    mov ${data}, %ebx
    mov %rdi, (%rbx)
    mov %rsi, %r12
1:  test %r12, %r12
    jz 2f
    U_SYS {yield_}
    dec %r12
    jmp 1b
2:  mov (%rbx), %rax
    U_REPORT %rax
    U_EXIT0

    # private(value): mmap a page; report its address and first word; store value; yield
    # three times; report the word again.
    .p2align 4
lg_user_private:
    mov %rdi, %r13
    mov ${page}, %edi
    U_SYS {mmap}
    mov %rax, %rbx
    U_REPORT %rbx
    mov (%rbx), %rax
    U_REPORT %rax
    mov %r13, (%rbx)
    U_SYS {yield_}
    U_SYS {yield_}
    U_SYS {yield_}
    mov (%rbx), %rax
    U_REPORT %rax
    U_EXIT0

    # mmap_touch(pages): mmap them, write a pattern at both ends of every page, check it all;
    # report the address and the number of mismatches.
    .p2align 4
lg_user_mmap_touch:
    mov %rdi, %r12
    shl $12, %rdi
    U_SYS {mmap}
    mov %rax, %rbx
    U_REPORT %rbx
    xor %r13, %r13
1:  cmp %r12, %r13
    jae 2f
    mov %r13, %rdx
    shl $12, %rdx
    add %rbx, %rdx
    mov %r13, %rax
    xor ${pattern}, %rax
    mov %rax, (%rdx)
    mov %rax, {last_word}(%rdx)
    inc %r13
    jmp 1b
2:  xor %r13, %r13
    xor %r14, %r14
3:  cmp %r12, %r13
    jae 5f
    mov %r13, %rdx
    shl $12, %rdx
    add %rbx, %rdx
    mov %r13, %rax
    xor ${pattern}, %rax
    cmp %rax, (%rdx)
    je 4f
    inc %r14
4:  cmp %rax, {last_word}(%rdx)
    je 6f
    inc %r14
6:  inc %r13
    jmp 3b
5:  U_REPORT %r14
    U_EXIT0

    # fork: the child reports fork's value and its pid, and exits 42; the parent reports
    # fork's value, the child's status from waitpid, then waitpid's answer for a pid that is
    # no longer its child (-ECHILD).
    .p2align 4
lg_user_fork:
    U_SYS {fork}
    test %rax, %rax
    jnz 1f
    U_REPORT %rax
    U_SYS {getpid}
    U_REPORT %rax
    mov $42, %edi
    U_SYS {exit}
    ud2
1:  mov %rax, %rbx
    U_REPORT %rbx
    mov %rbx, %rdi
    U_SYS {waitpid}
    U_REPORT %rax
    mov %rbx, %rdi
    U_SYS {waitpid}
    U_REPORT %rax
    U_EXIT0

    # cow(v1, v2): DATA_BASE and a fresh mmap page hold v1; fork; the child stores v2 in both,
    # yields and reports both; the parent reports the child's pid, yields twice (the child
    # writes meanwhile), reports both, waits and reports the child's status, then increments
    # the DATA_BASE word (its page is no longer shared) and reports it.
    .p2align 4
lg_user_cow:
    mov %rdi, %r12
    mov %rsi, %r13
    mov ${data}, %ebx
    mov %r12, (%rbx)
    mov ${page}, %edi
    U_SYS {mmap}
    mov %rax, %r14
    mov %r12, (%r14)
    U_SYS {fork}
    test %rax, %rax
    jnz 1f
    mov %r13, (%rbx)
    mov %r13, (%r14)
    U_SYS {yield_}
    mov (%rbx), %rax
    U_REPORT %rax
    mov (%r14), %rax
    U_REPORT %rax
    U_EXIT0
1:  mov %rax, %r15
    U_REPORT %r15
    U_SYS {yield_}
    U_SYS {yield_}
    mov (%rbx), %rax
    U_REPORT %rax
    mov (%r14), %rax
    U_REPORT %rax
    mov %r15, %rdi
    U_SYS {waitpid}
    U_REPORT %rax
    incq (%rbx)
    mov (%rbx), %rax
    U_REPORT %rax
    U_EXIT0

    # pingpong(n): yield n times.
    .p2align 4
lg_user_pingpong:
    mov %rdi, %r12
1:  test %r12, %r12
    jz 2f
    U_SYS {yield_}
    dec %r12
    jmp 1b
2:  U_EXIT0

    # getpid_loop(n): n getpids.
    .p2align 4
lg_user_getpid_loop:
    mov %rdi, %r12
1:  test %r12, %r12
    jz 2f
    U_SYS {getpid}
    dec %r12
    jmp 1b
2:  U_EXIT0

    # spin: forever (only the timer gets the CPU back).
    .p2align 4
lg_user_spin:
1:  inc %rax
    jmp 1b

    # pf_bench(rounds, pages): `rounds` times mmap `pages`, store a byte into each, munmap.
    # Exits 1 if mmap or munmap fails.
    .p2align 4
lg_user_pf_bench:
    mov %rdi, %r12
    mov %rsi, %r13
    mov %rsi, %r15
    shl $12, %r15
1:  test %r12, %r12
    jz 3f
    mov %r15, %rdi
    U_SYS {mmap}
    cmp $-4096, %rax
    jae 4f
    mov %rax, %rbx
    xor %r14, %r14
2:  movb $1, (%rbx)
    add ${page}, %rbx
    inc %r14
    cmp %r13, %r14
    jb 2b
    sub %r15, %rbx
    mov %rbx, %rdi
    mov %r15, %rsi
    U_SYS {munmap}
    test %rax, %rax
    jnz 4f
    dec %r12
    jmp 1b
3:  U_EXIT0
4:  mov $1, %edi
    U_SYS {exit}
    ud2

    # gs: store the pid in this process's user-GS slot (uapi::user_gs_base), then report
    # %gs:0 twice around a yield.
    .p2align 4
lg_user_gs:
    U_SYS {getpid}
    mov %rax, %rbx
    and $1023, %rax
    shl $4, %rax
    mov %rbx, {gs_slots}(%rax)
    U_SYS {yield_}
    mov %gs:0, %rax
    U_REPORT %rax
    U_SYS {yield_}
    mov %gs:0, %rax
    U_REPORT %rax
    U_EXIT0

    # rflags: set AC and DF, make a system call, report the RFLAGS it returned with.
    .p2align 4
lg_user_rflags:
    pushfq
    orq ${acdf}, (%rsp)
    popfq
    U_SYS {getpid}
    pushfq
    pop %rbx
    pushfq
    andq ${not_acdf}, (%rsp)
    popfq
    U_REPORT %rbx
    U_EXIT0

    # regs(rounds): load a pattern into every register a system call preserves, then yield and
    # spin (to be preempted) `rounds` times; report how many registers changed.
    .p2align 4
lg_user_regs:
    mov %rdi, %rax
    push %rax
    movabs ${seed}, %rax
    lea 1(%rax), %rbx
    lea 2(%rax), %rdx
    lea 3(%rax), %rsi
    lea 4(%rax), %rdi
    lea 5(%rax), %rbp
    lea 6(%rax), %r8
    lea 7(%rax), %r9
    lea 8(%rax), %r10
    lea 9(%rax), %r12
    lea 10(%rax), %r13
    lea 11(%rax), %r14
    lea 12(%rax), %r15
1:  U_SYS {yield_}
    mov $100000, %ecx
2:  dec %ecx
    jnz 2b
    decq (%rsp)
    jnz 1b
    movabs ${seed}, %rax
    xor %ecx, %ecx
    .irp reg, rbx, rdx, rsi, rdi, rbp, r8, r9, r10, r12, r13, r14, r15
    inc %rax
    cmp %rax, %\reg
    setne %r11b
    movzbl %r11b, %r11d
    add %r11, %rcx
    .endr
    U_REPORT %rcx
    U_EXIT0

    # at_top: run the two-byte instruction the kernel put in the last two bytes of the lower
    # half (a `syscall`, whose return address in RCX is then non-canonical, or a `ud2`).
    .p2align 4
lg_user_at_top:
    mov ${getpid}, %eax
    movabs ${top_insn}, %rcx
    jmp *%rcx

    # The entry points, in `Program` order, for the kernel (absolute addresses: kernel code
    # cannot reach 0x40_0000 RIP-relatively), and the section's bounds.
    .section .rodata.user_programs, "a", @progbits
    .p2align 3
    .global lg_user_programs
lg_user_programs:
    .quad lg_user_exit, lg_user_hello, lg_user_peek, lg_user_poke
    .quad lg_user_ud2, lg_user_cli, lg_user_int1f, lg_user_hlt, lg_user_read_cr0, lg_user_wbinvd
    .quad lg_user_same_va, lg_user_private, lg_user_mmap_touch, lg_user_fork, lg_user_cow
    .quad lg_user_pingpong, lg_user_getpid_loop, lg_user_spin, lg_user_pf_bench, lg_user_gs
    .quad lg_user_rflags, lg_user_regs, lg_user_at_top
    .global lg_user_section
lg_user_section:
    .quad __user_start, __user_end, __user_load
"#,
    report = const sys::REPORT,
    exit = const sys::EXIT,
    write = const sys::WRITE,
    getpid = const sys::GETPID,
    yield_ = const sys::YIELD,
    mmap = const sys::MMAP,
    munmap = const sys::MUNMAP,
    fork = const sys::FORK,
    waitpid = const sys::WAITPID,
    kernel_addr = const lgtest::KERNEL_BASE + 0x20_0000,
    data = const uapi::DATA_BASE,
    gs_slots = const uapi::user_gs_base(0),
    page = const PAGE_SIZE,
    last_word = const PAGE_SIZE - 8,
    pattern = const 0x5a5a_5a5a,
    acdf = const rflags::AC | rflags::DF,
    not_acdf = const !(rflags::AC | rflags::DF),
    seed = const SEED,
    top_insn = const TOP_INSN,
    options(att_syntax)
);

/// What `regs` loads into its registers (plus 1, 2, …).
pub const SEED: u64 = 0x5eed_0000_0000_0000;
/// Where `at_top` jumps: the last two bytes of the lower half ([`Program::AtTop`]).
pub const TOP_INSN: u64 = uapi::USER_END - 2;

/// The user programs, in the order of the `lg_user_programs` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    Exit,
    Hello,
    Peek,
    Poke,
    Ud2,
    Cli,
    Int1f,
    Hlt,
    ReadCr0,
    Wbinvd,
    SameVa,
    Private,
    MmapTouch,
    Fork,
    Cow,
    PingPong,
    GetpidLoop,
    Spin,
    PfBench,
    Gs,
    Rflags,
    Regs,
    /// Runs a two-byte instruction at [`TOP_INSN`], given to `spawn`.
    AtTop(u16),
}

/// The programs without a parameter, in table order (`AtTop` comes last).
const SIMPLE: [Program; 22] = {
    use Program::*;
    [
        Exit, Hello, Peek, Poke, Ud2, Cli, Int1f, Hlt, ReadCr0, Wbinvd, SameVa, Private, MmapTouch,
        Fork, Cow, PingPong, GetpidLoop, Spin, PfBench, Gs, Rflags, Regs,
    ]
};
const PROGRAMS: usize = SIMPLE.len() + 1;

unsafe extern "C" {
    #[link_name = "lg_user_programs"]
    static ENTRIES: [u64; PROGRAMS];
    #[link_name = "lg_user_section"]
    static SECTION: [u64; 3];
}

impl Program {
    /// The user virtual address of its first instruction.
    pub fn entry(self) -> u64 {
        // SAFETY: a table in .rodata, filled by the linker, never written.
        let entries = unsafe { &ENTRIES };
        entries.get(self.index()).copied().unwrap_or(0)
    }

    /// Its place in the `lg_user_programs` table.
    fn index(self) -> usize {
        match self {
            Program::AtTop(_) => SIMPLE.len(),
            p => SIMPLE.iter().position(|&q| q == p).unwrap_or(usize::MAX),
        }
    }
}

/// The `.user` section: `(virtual start, virtual end, guest-physical start)`.
pub fn section() -> (u64, u64, u64) {
    // SAFETY: as for `ENTRIES`.
    let [start, end, load] = unsafe { SECTION };
    (start, end, load)
}
