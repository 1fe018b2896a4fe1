//! Page tables through the direct map (guest-physical `p` at `KERNEL_BASE + p`), a frame
//! allocator for the RAM above the image (a bump pointer plus a free list, which only user mode
//! uses), and a mapper that publishes new subtrees the way the host's shadow paging wants
//! (docs/abi.md §2.5): build privately, store, then tell the host.

use crate::{boot, hcall, shared};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use lg_core::abi::{hcall as nr, PAGE_SIZE};
use lgtest::pagetable::{self as pt, Level};
use lgtest::{phys_to_virt, KERNEL_BASE};

/// Guest-physical memory below this is reachable through the direct map.
static DIRECT_TOP: AtomicU64 = AtomicU64::new(0);
/// The frame allocator: `[START, END)` is what it manages, `[NEXT, END)` has never been handed
/// out, and `FREE_LIST` chains the frames given back (each holds the next one's address in its
/// first word; 0 ends the list).
static START: AtomicU64 = AtomicU64::new(0);
static NEXT: AtomicU64 = AtomicU64::new(0);
static END: AtomicU64 = AtomicU64::new(0);
static FREE_LIST: AtomicU64 = AtomicU64::new(0);
static FREE_COUNT: AtomicU64 = AtomicU64::new(0);

/// Set up the allocator over `free` and unmap the direct map above `direct_top` (the boot tables
/// map a whole GiB; only RAM should be reachable, so a stray pointer faults in the guest instead
/// of getting it killed).
pub fn init(free: (u64, u64), direct_top: u64) {
    DIRECT_TOP.store(direct_top, Relaxed);
    START.store(free.0, Relaxed);
    NEXT.store(free.0, Relaxed);
    END.store(free.1, Relaxed);
    let root = boot::boot_pml4_gpa();
    let mut pa = direct_top;
    while pa < lgtest::DIRECT_MAP_SIZE {
        if let Some(e) = lookup(root, KERNEL_BASE + pa, Level::Pmd) {
            e.set_quiet(0);
        }
        pa += 1 << 21;
    }
    hcall::flush_tlb(nr::FLUSH_ALL);
}

/// The end of guest RAM (the e820 map's highest RAM address), which may be beyond the direct map.
static RAM_TOP: AtomicU64 = AtomicU64::new(0);

pub fn set_ram_top(top: u64) {
    RAM_TOP.store(top, Relaxed);
}

pub fn ram_top() -> u64 {
    RAM_TOP.load(Relaxed)
}

pub fn direct_top() -> u64 {
    DIRECT_TOP.load(Relaxed)
}

/// Frames left in the allocator.
pub fn free_frames() -> u64 {
    END.load(Relaxed).saturating_sub(NEXT.load(Relaxed)) / PAGE_SIZE + FREE_COUNT.load(Relaxed)
}

/// The guest-physical range the allocator hands frames out of.
pub fn frame_range() -> (u64, u64) {
    (START.load(Relaxed), END.load(Relaxed))
}

/// A zeroed page frame (guest-physical), or `None` when memory is exhausted.
pub fn alloc_frame() -> Option<u64> {
    let pa = match FREE_LIST.load(Relaxed) {
        0 => bump(1)?,
        pa => {
            FREE_LIST.store(read_phys(pa), Relaxed);
            FREE_COUNT.fetch_sub(1, Relaxed);
            pa
        }
    };
    // SAFETY: a frame of the allocator's range that nobody owns any more (never handed out, or
    // given back with `free_frame`), so nothing else refers to it.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
    Some(pa)
}

/// `pages` zeroed, physically contiguous frames (never from the free list).
pub fn alloc_contiguous(pages: u64) -> Option<u64> {
    let pa = bump(pages)?;
    let len = pages * PAGE_SIZE;
    // SAFETY: as in `alloc_frame`: fresh frames handed out exactly once.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, 0, len as usize) };
    Some(pa)
}

fn bump(pages: u64) -> Option<u64> {
    let pa = NEXT.load(Relaxed);
    let end = pa.checked_add(pages.checked_mul(PAGE_SIZE)?)?;
    if end > END.load(Relaxed) {
        return None;
    }
    NEXT.store(end, Relaxed);
    Some(pa)
}

/// Give a frame from [`alloc_frame`] back.
///
/// # Safety
/// Nothing may use the frame any more: no mapping the host could still translate through (the
/// caller has flushed), no table entry, no reference.
pub unsafe fn free_frame(pa: u64) {
    let (start, end) = frame_range();
    if !pa.is_multiple_of(PAGE_SIZE) || pa < start || pa >= end {
        println!("lgtest: freeing {pa:#x}, not a frame of the allocator");
        hcall::crash(b"lgtest: bad free_frame");
    }
    // SAFETY: the frame is ours again (the caller's promise), so its first word is free to use.
    unsafe { write_phys(pa, FREE_LIST.load(Relaxed)) };
    FREE_LIST.store(pa, Relaxed);
    FREE_COUNT.fetch_add(1, Relaxed);
}

/// Read a word of a frame through the direct map.
pub fn read_phys(pa: u64) -> u64 {
    check_direct(pa, 8);
    // SAFETY: inside the direct map (checked), aligned by every caller (page-table entries,
    // frame words).
    unsafe { core::ptr::read_volatile(phys_to_virt(pa) as *const u64) }
}

/// Write a word of a frame through the direct map.
///
/// # Safety
/// Nothing Rust relies on may live at `pa` (the frame is one of ours: a test page or a table).
pub unsafe fn write_phys(pa: u64, value: u64) {
    check_direct(pa, 8);
    // SAFETY: inside the direct map (checked); the caller vouches for the contents.
    unsafe { core::ptr::write_volatile(phys_to_virt(pa) as *mut u64, value) };
}

fn check_direct(pa: u64, len: u64) {
    if !pa.is_multiple_of(8) || pa.saturating_add(len) > direct_top() {
        println!("lgtest: physical access at {pa:#x} outside the direct map");
        hcall::crash(b"lgtest: physical access outside the direct map");
    }
}

/// One page-table entry, by guest-physical address (what the `SET_*` hypercalls take).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry(u64);

impl Entry {
    /// The entry at guest-physical `gpa`.
    ///
    /// # Safety
    /// `gpa` must be an entry of a page table this kernel owns (the boot tables or a table built
    /// by [`map`]), since [`Entry::set`] will write it.
    pub unsafe fn at(gpa: u64) -> Entry {
        Entry(gpa)
    }

    /// `va`'s entry in the `level` table at `table` (a table this kernel owns).
    pub fn of(table: u64, level: Level, va: u64) -> Entry {
        Entry(table + 8 * level.index(va) as u64)
    }

    /// Entry `i` (< 512) of the table at `table` (a table this kernel owns).
    pub fn in_table(table: u64, i: usize) -> Entry {
        Entry(table + 8 * (i % pt::ENTRIES) as u64)
    }

    pub fn gpa(self) -> u64 {
        self.0
    }

    pub fn get(self) -> u64 {
        read_phys(self.0)
    }

    /// Store without telling the host: its shadow may keep the old translation until a flush
    /// (fine for an entry that was not present, or in a table not in use).
    pub fn set_quiet(self, value: u64) {
        // SAFETY: page-table entries are in the boot tables or frames from `alloc_frame`.
        unsafe { write_phys(self.0, value) };
    }

    /// Store, then tell the host (`SET_PTE`/`SET_PMD`/`SET_PUD`/`SET_P4D` for `level`).
    pub fn set(self, level: Level, value: u64) {
        self.set_quiet(value);
        hcall::set_entry(level, self.0, value);
    }
}

/// The `level` entry for `va` under the PML4 at `root`, if the tables above it exist.
pub fn lookup(root: u64, va: u64, level: Level) -> Option<Entry> {
    let mut table = root;
    for l in Level::ALL {
        let e = Entry::of(table, l, va);
        if l == level {
            return Some(e);
        }
        let v = e.get();
        if v & pt::PRESENT == 0 || v & pt::LARGE != 0 {
            return None;
        }
        table = pt::frame(v);
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    OutOfFrames,
    /// A 2 MiB page already covers the address.
    LargePage,
    /// The leaf entry is already present.
    AlreadyMapped,
}

/// Map `va` with the leaf entry `leaf_value` at level `leaf` (`Pte`, or `Pmd` for a 2 MiB page
/// with `LARGE` set) under the PML4 at `root`.
///
/// Missing tables are built bottom-up in fresh frames that nothing points at yet, then the
/// whole subtree is published with one store and one `SET_*` at the highest missing level,
/// which is returned.
pub fn map(root: u64, va: u64, leaf: Level, leaf_value: u64) -> Result<Level, MapError> {
    let mut table = root;
    let mut level = Level::P4d;
    loop {
        let e = Entry::of(table, level, va);
        let cur = e.get();
        if level == leaf {
            if cur & pt::PRESENT != 0 {
                return Err(MapError::AlreadyMapped);
            }
            e.set(level, leaf_value);
            return Ok(level);
        }
        if cur & pt::PRESENT == 0 {
            let sub = build(level.below(), leaf, va, leaf_value)?;
            e.set(level, sub | pt::TABLE);
            return Ok(level);
        }
        if cur & pt::LARGE != 0 {
            return Err(MapError::LargePage);
        }
        table = pt::frame(cur);
        level = level.below().ok_or(MapError::LargePage)?;
    }
}

/// A fresh table of `level` (and everything below it down to `leaf`) mapping `va`.
fn build(level: Option<Level>, leaf: Level, va: u64, leaf_value: u64) -> Result<u64, MapError> {
    let level = level.ok_or(MapError::LargePage)?;
    let table = alloc_frame().ok_or(MapError::OutOfFrames)?;
    let value = if level == leaf {
        leaf_value
    } else {
        build(level.below(), leaf, va, leaf_value)? | pt::TABLE
    };
    Entry::of(table, level, va).set_quiet(value);
    Ok(table)
}

/// Does `[va, va + len)` touch the switcher's reserved range (which must never be mapped)?
pub fn in_reserved(va: u64, len: u64) -> bool {
    let (start, end) = reserved();
    pt::overlaps(va, va.saturating_add(len), start, end)
}

/// The reserved range from the shared page (empty on a 5-level host).
pub fn reserved() -> (u64, u64) {
    (
        shared::reserved_start().load(Relaxed),
        shared::reserved_end().load(Relaxed),
    )
}
