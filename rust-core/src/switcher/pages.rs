//! What is inside each per-CPU switcher page, byte for byte.
//!
//! The switcher's assembly (rust-core/kmod/switcher_asm.rs) addresses these structures by offset
//! from the CPU's base (its regs page), so every offset it uses is computed here from the
//! `#[repr(C)]` definitions and handed to the assembler as a constant: one layout, no duplicates.

use core::mem::{offset_of, size_of};

use crate::abi::PAGE_SIZE;
use crate::switcher::layout::{GDT_PAGE, HOST_PAGE, IDT_PAGE, IST_PAGE, REGS_PAGE};

/// The guest's general registers and trap frame, as the switcher leaves them on the regs page: the
/// CPU pushes `ss..rip` (and the error code), the stub pushes `trapnum`, the common exit path
/// pushes the general registers. Entry pops them in reverse.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
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
    pub trapnum: u64,
    pub errcode: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Guest state the switcher saves and restores besides the registers, and what the exit path
/// records about the exit. Lives at the start of the regs page (guest-writable, so untrusted).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestExtra {
    pub fs_base: u64,
    pub gs_base: u64,
    pub pkru: u64,
    pub cr2: u64,
    /// The vector, error code, RIP and CS of the trap frame exactly as the exit path found it.
    /// If `exit_cs` has RPL 0 the CPU faulted inside the switcher (entering the guest failed)
    /// and `GuestRegs` is not meaningful.
    pub exit_vector: u64,
    pub exit_err: u64,
    pub exit_rip: u64,
    pub exit_cs: u64,
    /// The guest's data segment selectors (loading a selector is legal at ring 1 and 3). The host
    /// checks them before every entry: the switcher loads them at ring 0.
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

/// Offset of [`GuestRegs`] in the regs page: the top, so that TSS.RSP0 = end of page.
pub const REGS_OFFSET: u64 = PAGE_SIZE - size_of::<GuestRegs>() as u64;

/// Value of `trapnum` when the switcher backed out before entering the guest (an NMI or machine
/// check arrived during the switch).
pub const TRAP_ABORTED: u64 = 256;

/// A 64-bit TSS (without I/O bitmap).
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default)]
pub struct Tss {
    pub reserved0: u32,
    pub rsp: [u64; 3],
    pub reserved1: u64,
    pub ist: [u64; 7],
    pub reserved2: u64,
    pub reserved3: u16,
    pub iomap_base: u16,
}

/// A descriptor-table register image for `lgdt`/`lidt`/`sgdt`/`sidt`.
#[repr(C, packed(2))]
#[derive(Clone, Copy, Debug, Default)]
pub struct DescPtr {
    pub pad: [u16; 3],
    pub limit: u16,
    pub base: u64,
}

/// GDT entries in the switcher GDT (the host's layout for 0..15, then the guest's ring-1 pair).
pub const GDT_ENTRIES: usize = 18;
pub const GDT_ENTRY_TSS: usize = 8;

/// Flags the host sets for the switcher (feature bits of this CPU).
pub mod flag {
    /// CR4.PKE is on: swap PKRU.
    pub const PKU: u64 = 1 << 0;
    /// Issue IBPB on the way back to the host.
    pub const IBPB: u64 = 1 << 1;
}

/// The GDT/TSS page: read-only to the guest, written by the host through the vmap.
#[repr(C, align(4096))]
pub struct GdtPage {
    pub gdt: [u64; GDT_ENTRIES],
    pub _pad0: [u64; 32 - GDT_ENTRIES],
    pub tss: Tss,
    pub _pad1: [u8; 256 - size_of::<Tss>()],
    /// The host's CR3, saved by the entry path; read by the exit path before it can see the host
    /// page. (The guest can read it: a known, accepted leak of one physical address.)
    pub host_cr3: u64,
    /// The shadow page-table root to load for the guest.
    pub guest_cr3: u64,
    /// [`flag`] bits.
    pub flags: u64,
    pub idt_desc: DescPtr,
    pub gdt_desc: DescPtr,
}

/// The host-only page: host state the exit path restores. Never mapped in a guest.
#[repr(C, align(4096))]
pub struct HostPage {
    pub rsp: u64,
    pub cr4: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub pkru: u64,
    pub gdt: DescPtr,
    pub idt: DescPtr,
    /// A GDTR image of this CPU's writable GDT, for `ltr` (which writes the busy bit).
    pub gdt_rw: DescPtr,
    pub tr: u16,
    pub ldt: u16,
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
    pub _pad: u32,
    /// Set by the switcher's NMI / #MC stubs when one arrived in the middle of a switch; the host
    /// runs the real handler after the switch and clears it.
    pub nmi_pending: u8,
    pub mce_pending: u8,
    pub _pad2: [u8; 6],
    /// The page-table subtree that maps this CPU's switcher pages into guests
    /// ([`crate::switcher::map`]): its root's physical address, and the kernel addresses of its
    /// pages (so the module can free them at unload).
    pub subtree_root: u64,
    pub subtree_pages: [u64; 8],
}

/// Offsets from a CPU's switcher base (its regs page), for the assembly.
pub mod off {
    use super::*;

    const fn page(p: u64) -> usize {
        ((p - REGS_PAGE) * PAGE_SIZE) as usize
    }
    pub const REGS: usize = REGS_OFFSET as usize;
    pub const R_TRAPNUM: usize = REGS + offset_of!(GuestRegs, trapnum);
    pub const X_FS_BASE: usize = offset_of!(GuestExtra, fs_base);
    pub const X_GS_BASE: usize = offset_of!(GuestExtra, gs_base);
    pub const X_PKRU: usize = offset_of!(GuestExtra, pkru);
    pub const X_CR2: usize = offset_of!(GuestExtra, cr2);
    pub const X_EXIT_VECTOR: usize = offset_of!(GuestExtra, exit_vector);
    pub const X_EXIT_ERR: usize = offset_of!(GuestExtra, exit_err);
    pub const X_EXIT_RIP: usize = offset_of!(GuestExtra, exit_rip);
    pub const X_EXIT_CS: usize = offset_of!(GuestExtra, exit_cs);
    pub const X_DS: usize = offset_of!(GuestExtra, ds);
    pub const X_ES: usize = offset_of!(GuestExtra, es);
    pub const X_FS: usize = offset_of!(GuestExtra, fs);
    pub const X_GS: usize = offset_of!(GuestExtra, gs);

    pub const IST: usize = page(IST_PAGE);
    pub const IDT: usize = page(IDT_PAGE);

    pub const GDTP: usize = page(GDT_PAGE);
    pub const G_TSS_DESC_TYPE: usize = GDTP + GDT_ENTRY_TSS * 8 + 5;
    pub const G_HOST_CR3: usize = GDTP + offset_of!(GdtPage, host_cr3);
    pub const G_GUEST_CR3: usize = GDTP + offset_of!(GdtPage, guest_cr3);
    pub const G_FLAGS: usize = GDTP + offset_of!(GdtPage, flags);
    pub const G_IDT_DESC: usize = GDTP + offset_of!(GdtPage, idt_desc) + 6;
    pub const G_GDT_DESC: usize = GDTP + offset_of!(GdtPage, gdt_desc) + 6;

    pub const HOST: usize = page(HOST_PAGE);
    pub const H_RSP: usize = HOST + offset_of!(HostPage, rsp);
    pub const H_CR4: usize = HOST + offset_of!(HostPage, cr4);
    pub const H_FS_BASE: usize = HOST + offset_of!(HostPage, fs_base);
    pub const H_GS_BASE: usize = HOST + offset_of!(HostPage, gs_base);
    pub const H_PKRU: usize = HOST + offset_of!(HostPage, pkru);
    pub const H_GDT: usize = HOST + offset_of!(HostPage, gdt) + 6;
    pub const H_IDT: usize = HOST + offset_of!(HostPage, idt) + 6;
    pub const H_GDT_RW: usize = HOST + offset_of!(HostPage, gdt_rw) + 6;
    pub const H_GDT_RW_BASE: usize = H_GDT_RW + 2;
    pub const H_TR: usize = HOST + offset_of!(HostPage, tr);
    pub const H_LDT: usize = HOST + offset_of!(HostPage, ldt);
    pub const H_DS: usize = HOST + offset_of!(HostPage, ds);
    pub const H_ES: usize = HOST + offset_of!(HostPage, es);
    pub const H_FS: usize = HOST + offset_of!(HostPage, fs);
    pub const H_GS: usize = HOST + offset_of!(HostPage, gs);
    pub const H_NMI_PENDING: usize = HOST + offset_of!(HostPage, nmi_pending);
    pub const H_MCE_PENDING: usize = HOST + offset_of!(HostPage, mce_pending);
}

static_assertions::const_assert_eq!(size_of::<GuestRegs>(), 22 * 8);
static_assertions::const_assert_eq!(size_of::<Tss>(), 104);
static_assertions::const_assert_eq!(size_of::<DescPtr>(), 16);
static_assertions::const_assert!(size_of::<GdtPage>() == PAGE_SIZE as usize);
static_assertions::const_assert!(size_of::<HostPage>() == PAGE_SIZE as usize);
static_assertions::const_assert!(size_of::<GuestExtra>() < 256);
// The exit path runs on the regs page below GuestRegs: leave it plenty of room.
static_assertions::const_assert!(REGS_OFFSET as usize - size_of::<GuestExtra>() > 3000);
// The descriptor images must be 2-byte aligned at the limit field for lgdt/lidt.
static_assertions::const_assert!(
    off::G_IDT_DESC.is_multiple_of(2) && off::H_GDT_RW.is_multiple_of(2)
);
