//! What the launcher needs from the image (docs/abi.md §2.1): the `lguest` ELF note, the static
//! initial page tables it names, and `_start`, which gets a stack before any Rust code runs.

use core::arch::global_asm;
use lg_core::abi;

/// Size of the boot stack, which is also the stack every trap in kernel mode is delivered on.
pub const STACK_SIZE: usize = 64 * 1024;

// The note: namesz, descsz, type, "lguest\0" padded to 4 bytes, then `BootNote`
// { abi_version, entry (virtual), cr3 (physical) }. 4-byte alignment, as Linux writes notes.
//
// The page tables map guest-physical [0, 1 GiB) at KERNEL_BASE with 2 MiB pages:
// PML4[511] -> PDPT[510] -> PD[0..512]. Entry flags: tables P|RW (0x3); pages P|RW|A|D|PS (0xe3).
// `kmain` later unmaps the part of the GiB that is not guest RAM.
global_asm!(
    r#"
    .section .note.lguest, "a", @note
    .p2align 2
    .long 7                     # namesz: "lguest\0"
    .long 24                    # descsz: sizeof(BootNote)
    .long {note_type}
    .asciz "lguest"
    .p2align 2
    .quad {abi_version}
    .quad _start
    .quad boot_pml4 - {kbase}
    .p2align 2

    .section .data.pagetables, "aw", @progbits
    .p2align 12
    .global boot_pml4
boot_pml4:
    .zero 511 * 8
    .quad boot_pdpt - {kbase} + 0x3
boot_pdpt:
    .zero 510 * 8
    .quad boot_pd - {kbase} + 0x3
    .zero 8
boot_pd:
    .set pd_index, 0
    .rept 512
    .quad (pd_index << 21) | 0xe3
    .set pd_index, pd_index + 1
    .endr

    .section .bss.stack, "aw", @nobits
    .p2align 12
boot_stack:
    .skip {stack_size}
boot_stack_top:

    .section .text.boot, "ax", @progbits
    .global _start
_start:
    # RSP is 0: set our own stack before anything else, then clear .bss (the loader should have,
    # but an unexpected non-zero byte there would be a miserable bug to chase).
    lea boot_stack_top(%rip), %rsp
    mov %rsi, %r12              # zero page gpa, kept across the clearing
    lea __bss_start(%rip), %rdi
    lea __bss_end(%rip), %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    cld
    rep stosb
    mov %r12, %rdi
    call {kmain}
    ud2
"#,
    note_type = const abi::NOTE_TYPE_BOOT,
    abi_version = const abi::VERSION,
    kbase = const lgtest::KERNEL_BASE,
    stack_size = const STACK_SIZE,
    kmain = sym crate::kmain,
    options(att_syntax)
);

unsafe extern "C" {
    /// The boot PML4 (it is also the page tables `kmain` keeps using).
    #[link_name = "boot_pml4"]
    static mut BOOT_PML4: [u64; 512];
    #[link_name = "__image_start"]
    static IMAGE_START: u8;
    #[link_name = "__image_end"]
    static IMAGE_END: u8;
}

/// Guest-physical address of the boot PML4.
pub fn boot_pml4_gpa() -> u64 {
    lgtest::virt_to_phys(&raw mut BOOT_PML4 as u64)
}

/// Virtual address of the start of the image.
pub fn image_start() -> u64 {
    &raw const IMAGE_START as u64
}

/// Guest-physical end of the loaded image, .bss included.
pub fn image_end_gpa() -> u64 {
    lgtest::virt_to_phys(&raw const IMAGE_END as u64)
}
