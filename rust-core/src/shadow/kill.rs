//! Why shadow paging gave up on a guest: the reasons the launcher prints.

use core::fmt;

/// A guest broke the memory contract of docs/abi.md §2.5 (or the host ran out of something the
/// guest needs): the guest must die. `Display` gives the reason the launcher prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kill {
    /// `NEW_PGTABLE`/`RELEASE_PGTABLE` (or the boot note) named a PML4 that is misaligned or
    /// outside guest memory.
    BadRoot { gpa: u64 },
    /// `SET_PTE` and friends named an entry that is misaligned or outside guest memory.
    BadEntry { gpa: u64 },
    /// A present guest entry points to a page table beyond the guest's memory.
    TableBeyondMemory { va: u64, gpa: u64 },
    /// A present guest leaf maps a page beyond the guest's memory.
    FrameBeyondMemory { va: u64, gpa: u64 },
    /// A present guest entry has bits the ABI reserves (or PS in a PML4 entry).
    ReservedBits { va: u64, level: u8, entry: u64 },
    /// A 1 GiB page (PS in a PDPT entry): not supported.
    GiantPage { va: u64, entry: u64 },
    /// The guest kernel touched the top-level slot that belongs to the switcher.
    Switcher { va: u64 },
    /// The host was asked to use a guest-virtual address that is not canonical (48-bit).
    NonCanonical { va: u64 },
    /// Reading or writing guest memory failed: the launcher's memory is gone.
    GuestMemory,
    /// No host memory for shadow tables even after dropping every cached translation.
    OutOfMemory,
    /// The host handed out a frame or table address that cannot go in a page-table entry.
    HostFrame { pa: u64 },
    /// The CPU reported a reserved bit in a shadow entry: a bug in this code.
    ShadowReserved { va: u64 },
    /// A page fault arrived before any page table was loaded: a bug in the caller.
    NoPageTable,
}

impl fmt::Display for Kill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Kill::BadRoot { gpa } => write!(
                f,
                "page table root {gpa:#x} is not a page-aligned address inside guest memory"
            ),
            Kill::BadEntry { gpa } => write!(
                f,
                "page table entry address {gpa:#x} is misaligned or outside guest memory"
            ),
            Kill::TableBeyondMemory { va, gpa } => write!(
                f,
                "guest page table maps guest-physical {gpa:#x} beyond its memory \
                 (a page table, walking {va:#x})"
            ),
            Kill::FrameBeyondMemory { va, gpa } => write!(
                f,
                "guest page table maps guest-physical {gpa:#x} beyond its memory (at {va:#x})"
            ),
            Kill::ReservedBits { va, level, entry } => write!(
                f,
                "reserved bits in level-{level} page table entry {entry:#x} (walking {va:#x})"
            ),
            Kill::GiantPage { va, entry } => write!(
                f,
                "1 GiB pages are not supported (PDPT entry {entry:#x}, walking {va:#x})"
            ),
            Kill::Switcher { va } => {
                write!(f, "touched the reserved switcher range at {va:#x}")
            }
            Kill::NonCanonical { va } => write!(f, "non-canonical address {va:#x}"),
            Kill::GuestMemory => write!(f, "guest memory is no longer accessible"),
            Kill::OutOfMemory => write!(f, "out of memory for shadow page tables"),
            Kill::HostFrame { pa } => {
                write!(f, "host returned unusable page {pa:#x} (host bug)")
            }
            Kill::ShadowReserved { va } => write!(
                f,
                "reserved-bit fault in the shadow page tables at {va:#x} (host bug)"
            ),
            Kill::NoPageTable => write!(f, "page fault with no page table loaded (host bug)"),
        }
    }
}
