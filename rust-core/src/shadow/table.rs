//! The bits of a page-table entry, and the one place that touches a shadow table's memory.

use core::ptr::NonNull;

/// Entries in every page table.
pub const ENTRIES: usize = 512;

// Page-table entry bits (SDM vol. 3, §4.5). The same positions at every level, except that bit 7
// means PS in PML4/PDPT/PD entries and PAT in a PT entry. (Bits 3, 4 and 8, PWT, PCD and G, are
// the ones the shadow never sets: see `Shadow::set_leaf`.)
pub const P: u64 = 1 << 0;
pub const RW: u64 = 1 << 1;
pub const US: u64 = 1 << 2;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const PS: u64 = 1 << 7;
pub const NX: u64 = 1 << 63;
/// The physical address field: bits 12..=51.
pub const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Bits of a guest entry the ABI reserves (docs/abi.md §2.5): 52..=62. The CPU ignores them in
/// most entries (or reads protection keys from 59..=62); we refuse them so that a guest can never
/// believe they mean something to us. Bits 9..=11 are different: Linux keeps software state there
/// (`_PAGE_SPECIAL`, `_PAGE_UFFD_WP`, `_PAGE_SOFT_DIRTY`), so they are tolerated and ignored.
pub const GUEST_RESERVED: u64 = 0x7ff0_0000_0000_0000;
/// Bits 13..=20 of a 2 MiB entry: between the PAT bit (12) and the frame, reserved by the CPU.
pub const HUGE_RESERVED: u64 = 0x0000_0000_001f_e000;
/// The offset of a 4 KiB page inside a 2 MiB page.
pub const HUGE_OFFSET: u64 = 0x0000_0000_001f_f000;

/// An intermediate shadow entry grants everything: the leaf below carries the permissions of the
/// whole guest walk, and every shadow table has exactly one parent, so nothing else can see it.
pub const TABLE_FLAGS: u64 = P | RW | US | A;

/// Non-leaf shadow entries carry the metadata slot of the table they point to in bits 52..=62,
/// which the CPU ignores in non-leaf entries: going from an entry to its table is one array lookup.
pub const CHILD_SHIFT: u32 = 52;
pub const CHILD_MASK: u64 = 0x7ff;

/// A zeroed host page for one shadow table, from [`ShadowHost::alloc_table`](super::ShadowHost).
///
/// Owning a `TablePage` means owning the page: the host may not touch it until it gets it back
/// through [`ShadowHost::free_table`](super::ShadowHost). It is deliberately not `Clone`.
#[derive(Debug)]
pub struct TablePage {
    /// Host-physical address of the page (what a parent entry or CR3 holds).
    pub pa: u64,
    /// Where the host can read and write its 512 entries.
    pub ptr: NonNull<[u64; ENTRIES]>,
}

// SAFETY: a `TablePage` is the exclusive claim on one host page (nothing else reads or writes it
// through `ptr` while we own it), so moving the claim to another thread moves all access with it.
unsafe impl Send for TablePage {}

/// Access to the entries of one live shadow table. This is the only unsafe code in shadow paging.
///
/// A `TableRef` is made from a `TablePage` we own and used at once: it is never stored, so it
/// cannot outlive the page (the caller, [`super::Shadow`], looks the page up for every access).
#[derive(Clone, Copy)]
pub(super) struct TableRef(NonNull<u64>);

impl TableRef {
    pub fn new(page: &TablePage) -> Self {
        TableRef(page.ptr.cast())
    }

    /// Entry `i` (0 for an index outside the table, which no caller passes).
    pub fn get(self, i: usize) -> u64 {
        if i >= ENTRIES {
            return 0;
        }
        // SAFETY: the page came from `ShadowHost::alloc_table`, which gives us exclusive use of its
        // 512 aligned `u64`s until we hand it back, and it is still ours (see the type's comment);
        // `i < 512` keeps the read inside it.
        unsafe { self.0.add(i).read() }
    }

    /// Set entry `i` (ignored for an index outside the table).
    pub fn set(self, i: usize, val: u64) {
        if i >= ENTRIES {
            return;
        }
        // SAFETY: as in `get`. Nothing else writes the page while we do: the CPU only walks (and
        // sets A/D bits in) a shadow table while the guest runs, and then no host code runs for
        // this guest.
        unsafe { self.0.add(i).write(val) }
    }
}
