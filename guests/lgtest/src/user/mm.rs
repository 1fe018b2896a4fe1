//! User address spaces: one PML4 per process sharing the kernel half (PML4 entries 256..=511,
//! copied from the boot tables), the user programs' code mapped read-only at `CODE_BASE`, and
//! private anonymous memory mapped lazily. Frames of user memory carry a reference count, so
//! that `fork` can share them copy-on-write; the code frames belong to the kernel image and are
//! never counted or freed.
//!
//! Changing the tables follows docs/abi.md §2.5: an entry that was not present is stored quietly
//! (the host's shadow has nothing derived from it); a present entry that changes is announced
//! with `SET_PTE`, or many at once with a flush, before user code runs again.

use super::programs;
use crate::paging::{self, Entry};
use crate::{boot, hcall};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use lg_core::abi::PAGE_SIZE;
use lgtest::pagetable::{self as pt, Level};
use lgtest::phys_to_virt;
use lgtest::regions::Regions;
use lgtest::uapi;

/// Private user memory: present, writable, user, not executable.
pub const DATA: u64 = pt::PRESENT | pt::WRITABLE | pt::USER | pt::NO_EXECUTE;
/// The user programs: present, user, read-only, executable.
pub const CODE: u64 = pt::PRESENT | pt::USER;
/// What a table entry of a user address carries (US must be set at every level).
const USER_TABLE: u64 = pt::TABLE | pt::USER;
/// PML4 entries below this index map user addresses.
const USER_SLOTS: usize = pt::ENTRIES / 2;

// Reference counts: one u16 per frame of the allocator's range, in frames taken at `init`.
static RC_TABLE: AtomicU64 = AtomicU64::new(0);
static RC_FIRST: AtomicU64 = AtomicU64::new(0);
static RC_FRAMES: AtomicU64 = AtomicU64::new(0);

/// Take the frames for the reference counts. Returns false when memory is short.
pub fn init() -> bool {
    let (start, end) = paging::frame_range();
    let frames = (end - start) / PAGE_SIZE;
    let Some(table) = paging::alloc_contiguous((frames * 2).div_ceil(PAGE_SIZE)) else {
        return false;
    };
    RC_TABLE.store(table, Relaxed);
    RC_FIRST.store(start, Relaxed);
    RC_FRAMES.store(frames, Relaxed);
    true
}

/// The reference count's slot, for frames of the allocator (the only ones user memory uses).
fn rc_slot(pa: u64) -> Option<*mut u16> {
    let i = pa.checked_sub(RC_FIRST.load(Relaxed))? / PAGE_SIZE;
    (i < RC_FRAMES.load(Relaxed))
        .then(|| (phys_to_virt(RC_TABLE.load(Relaxed)) + 2 * i) as *mut u16)
}

/// Is `pa` a counted frame of user memory (rather than kernel-image code)?
pub fn owned(pa: u64) -> bool {
    rc_slot(pa).is_some()
}

pub fn refcount(pa: u64) -> u16 {
    // SAFETY: inside the reference-count table, which only this module touches.
    rc_slot(pa).map_or(0, |p| unsafe { p.read() })
}

fn set_refcount(pa: u64, n: u16) {
    if let Some(p) = rc_slot(pa) {
        // SAFETY: as in `refcount`.
        unsafe { p.write(n) };
    }
}

/// One more mapping of `pa` (fork sharing it).
pub fn get_frame(pa: u64) {
    if owned(pa) {
        set_refcount(pa, refcount(pa).saturating_add(1));
    }
}

/// One mapping of `pa` fewer; the last one frees it. The caller has removed the mapping and
/// flushes it before any user code runs again.
pub fn put_frame(pa: u64) {
    if !owned(pa) {
        return;
    }
    match refcount(pa) {
        0 => {
            println!("lgtest: user frame {pa:#x} released more often than mapped");
            hcall::crash(b"lgtest: user frame reference count underflow");
        }
        1 => {
            set_refcount(pa, 0);
            // SAFETY: no mapping is left (count 0) and the caller flushes the one just removed
            // before user mode runs; the kernel only reaches the frame through the direct map.
            unsafe { paging::free_frame(pa) };
        }
        n => set_refcount(pa, n - 1),
    }
}

/// A zeroed frame for user memory, counted once.
pub fn alloc_user_frame() -> Option<u64> {
    let pa = paging::alloc_frame()?;
    set_refcount(pa, 1);
    Some(pa)
}

/// Copy one frame to another through the direct map.
pub fn copy_frame(dst: u64, src: u64) {
    // SAFETY: two distinct frames of the allocator (so inside the direct map); `dst` is a fresh
    // frame nobody else refers to, `src` is only read.
    unsafe {
        core::ptr::copy_nonoverlapping(
            phys_to_virt(src) as *const u8,
            phys_to_virt(dst) as *mut u8,
            PAGE_SIZE as usize,
        );
    }
}

/// A new address space: the kernel half of the boot tables and the user programs' code.
pub fn new_space() -> Option<u64> {
    let pml4 = paging::alloc_frame()?;
    let boot = boot::boot_pml4_gpa();
    for i in USER_SLOTS..pt::ENTRIES {
        let off = 8 * i as u64;
        // SAFETY: entries of the boot PML4 (read) and of our fresh, unused table (written).
        unsafe { Entry::at(pml4 + off) }.set_quiet(unsafe { Entry::at(boot + off) }.get());
    }
    let (start, end, load) = programs::section();
    let mut va = start;
    while va < end {
        if map(pml4, va, (load + (va - start)) | CODE).is_none() {
            destroy(pml4);
            return None;
        }
        va += PAGE_SIZE;
    }
    Some(pml4)
}

/// The PTE for user address `va` under `pml4`. With `create`, missing tables are made (stored
/// quietly: they were not present); without, `None` when a table is missing.
pub fn pte(pml4: u64, va: u64, create: bool) -> Option<Entry> {
    if va >= uapi::USER_END {
        return None;
    }
    let mut table = pml4;
    for level in [Level::P4d, Level::Pud, Level::Pmd] {
        let e = Entry::of(table, level, va);
        let v = e.get();
        if v & pt::PRESENT != 0 {
            table = pt::frame(v);
        } else if create {
            table = paging::alloc_frame()?;
            e.set_quiet(table | USER_TABLE);
        } else {
            return None;
        }
    }
    Some(Entry::of(table, Level::Pte, va))
}

/// Map `va` (not mapped yet) to `value`, quietly. `None` when a table cannot be allocated.
pub fn map(pml4: u64, va: u64, value: u64) -> Option<()> {
    let e = pte(pml4, va, true)?;
    if e.get() & pt::PRESENT != 0 {
        println!("lgtest: user address {va:#x} mapped twice");
        hcall::crash(b"lgtest: user address mapped twice");
    }
    e.set_quiet(value);
    Some(())
}

/// Map a fresh zeroed frame at `va` with `flags`; returns the frame.
pub fn map_new(pml4: u64, va: u64, flags: u64) -> Option<u64> {
    let pa = alloc_user_frame()?;
    if map(pml4, va, pa | flags).is_none() {
        put_frame(pa);
        return None;
    }
    Some(pa)
}

/// Call `f(va, pte, value)` for every present user PTE under `pml4`, stopping at an error.
pub fn for_each_leaf<E>(
    pml4: u64,
    mut f: impl FnMut(u64, Entry, u64) -> Result<(), E>,
) -> Result<(), E> {
    for_each_table(pml4, |va, table, level| {
        if level != Level::Pte {
            return Ok(());
        }
        for i in 0..pt::ENTRIES {
            let e = Entry::in_table(table, i);
            let v = e.get();
            if v & pt::PRESENT != 0 {
                f(va + ((i as u64) << Level::Pte.shift()), e, v)?;
            }
        }
        Ok(())
    })
}

/// Call `f(first va, table, level)` for every user page table below `pml4` (children before
/// their parent, so `f` may free them).
fn for_each_table<E>(
    pml4: u64,
    mut f: impl FnMut(u64, u64, Level) -> Result<(), E>,
) -> Result<(), E> {
    fn walk<E>(
        table: u64,
        level: Level,
        base: u64,
        f: &mut impl FnMut(u64, u64, Level) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(below) = level.below() else {
            return Ok(());
        };
        let slots = if level == Level::P4d {
            USER_SLOTS
        } else {
            pt::ENTRIES
        };
        for i in 0..slots {
            let v = Entry::in_table(table, i).get();
            if v & pt::PRESENT != 0 {
                let va = base + ((i as u64) << level.shift());
                walk(pt::frame(v), below, va, f)?;
                f(va, pt::frame(v), below)?;
            }
        }
        Ok(())
    }
    walk(pml4, Level::P4d, 0, &mut f)
}

/// Free everything below `pml4` in the user half, and `pml4` itself. The host must be done with
/// it: the caller switched to other tables and released this one.
pub fn destroy(pml4: u64) {
    let _ = for_each_leaf(pml4, |_, _, v| {
        put_frame(pt::frame(v));
        Ok::<(), ()>(())
    });
    let _ = for_each_table(pml4, |_, table, _| {
        // SAFETY: the tables of a released address space: nothing maps or walks them any more.
        unsafe { paging::free_frame(table) };
        Ok::<(), ()>(())
    });
    // SAFETY: as above, for the top-level table.
    unsafe { paging::free_frame(pml4) };
}

/// Unmap `[start, end)` quietly and drop the frames. Returns whether anything was mapped, in
/// which case the caller must flush before user code runs.
pub fn unmap_range(pml4: u64, start: u64, end: u64) -> bool {
    let mut any = false;
    let mut va = start;
    while va < end {
        match pte(pml4, va, false) {
            Some(e) => {
                let v = e.get();
                if v & pt::PRESENT != 0 {
                    e.set_quiet(0);
                    put_frame(pt::frame(v));
                    any = true;
                }
                va += PAGE_SIZE;
            }
            // No page table: skip to the next 2 MiB.
            None => va = (va | ((1 << Level::Pmd.shift()) - 1)) + 1,
        }
    }
    any
}

/// What a user page fault (or a kernel access on the user's behalf) turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The page was already accessible (a stale translation): nothing to do.
    Spurious,
    /// A fresh zeroed page mapped into a region.
    Demand,
    /// A copy-on-write page copied.
    CowCopy,
    /// A copy-on-write page that had no other user made writable in place.
    CowReuse,
}

/// Page-fault error-code bits.
pub const PF_WRITE: u64 = 1 << 1;
pub const PF_RSVD: u64 = 1 << 3;
pub const PF_FETCH: u64 = 1 << 4;

/// Make user address `va` accessible for a read (or a `write`) the way the process's regions
/// allow: map a fresh page, or break copy-on-write sharing. `Err` means the access is not
/// allowed (the process gets killed, or the system call fails with `EFAULT`).
pub fn resolve(pml4: u64, regions: &Regions, va: u64, write: bool) -> Result<Resolved, ()> {
    let page = va & !(PAGE_SIZE - 1);
    let Some(e) = pte(pml4, page, false) else {
        return demand(pml4, regions, page);
    };
    let v = e.get();
    if v & pt::PRESENT == 0 {
        return demand(pml4, regions, page);
    }
    if v & pt::USER == 0 {
        return Err(());
    }
    if !write || v & pt::WRITABLE != 0 {
        return Ok(Resolved::Spurious);
    }
    if regions.find(page).is_none() {
        return Err(()); // read-only by design (the code)
    }
    super::fork::break_cow(e, v)
}

fn demand(pml4: u64, regions: &Regions, page: u64) -> Result<Resolved, ()> {
    if regions.find(page).is_none() {
        return Err(());
    }
    map_new(pml4, page, DATA).ok_or(())?;
    Ok(Resolved::Demand)
}

/// The frame behind user address `va`, made accessible first (see [`resolve`]).
pub fn user_frame(pml4: u64, regions: &Regions, va: u64, write: bool) -> Result<u64, ()> {
    resolve(pml4, regions, va, write)?;
    let e = pte(pml4, va, false).ok_or(())?;
    Ok(pt::frame(e.get()))
}

/// Copy `buf.len()` bytes from user address `va` (already checked to be in the user half).
pub fn copy_from_user(pml4: u64, regions: &Regions, va: u64, buf: &mut [u8]) -> Result<(), ()> {
    let mut done = 0;
    while done < buf.len() {
        let at = va + done as u64;
        let offset = at % PAGE_SIZE;
        let n = ((PAGE_SIZE - offset) as usize).min(buf.len() - done);
        let pa = user_frame(pml4, regions, at, false)? + offset;
        let dst = buf.get_mut(done..done + n).ok_or(())?;
        // SAFETY: `pa..pa + n` lies inside one user frame of the allocator (direct map); the
        // kernel only reads it.
        let src = unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, n) };
        dst.copy_from_slice(src);
        done += n;
    }
    Ok(())
}
