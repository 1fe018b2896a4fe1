//! `fork` with copy-on-write: the child gets its own tables mapping the parent's frames, and
//! every writable page becomes read-only in both. A write fault on such a page in a writable
//! region ([`break_cow`]) copies the frame if someone else still maps it, or just makes it
//! writable again if not.

use super::process::{self, Kernel};
use super::{mm, programs};
use crate::hcall;
use crate::paging::Entry;
use lg_core::abi::hcall as nr;
use lgtest::pagetable::{self as pt, Level};
use lgtest::uapi::{err, errno};

/// `fork()` for slot `cur`: the child's pid, or `-errno`.
pub fn fork(k: &mut Kernel, cur: usize) -> u64 {
    if !process::has_free_slot(k) {
        return err(errno::EAGAIN);
    }
    let parent = k.procs[cur].pml4;
    let Some(child) = mm::new_space() else {
        return err(errno::ENOMEM);
    };
    let (code_start, code_end, _) = programs::section();
    let mut parent_changed = false;
    let shared = mm::for_each_leaf(parent, |va, e, v| {
        if (code_start..code_end).contains(&va) {
            Ok(()) // the code: `new_space` mapped it already
        } else {
            share(e, v, &mut parent_changed, child, va)
        }
    });
    if parent_changed {
        // Many PTEs lost RW quietly: one flush instead of a SET_PTE each.
        hcall::flush_tlb(nr::FLUSH_USER);
    }
    let pid = match shared {
        Ok(()) => process::add_child(k, cur, child),
        Err(()) => None,
    };
    match pid {
        Some(pid) => pid,
        None => {
            // The child never ran: nothing to release at the host.
            mm::destroy(child);
            err(errno::ENOMEM)
        }
    }
}

/// Map the parent's page at `va` (entry `e`, value `v`) into `child`, read-only if it was
/// writable (in both).
fn share(e: Entry, v: u64, parent_changed: &mut bool, child: u64, va: u64) -> Result<(), ()> {
    let shared = v & !pt::WRITABLE;
    if shared != v {
        e.set_quiet(shared);
        *parent_changed = true;
    }
    mm::map(child, va, shared).ok_or(())?;
    mm::get_frame(pt::frame(v));
    Ok(())
}

/// A write to the read-only page `e` (value `v`) of a writable region.
pub fn break_cow(e: Entry, v: u64) -> Result<mm::Resolved, ()> {
    let old = pt::frame(v);
    if !mm::owned(old) {
        return Err(());
    }
    let flags = v & !pt::ADDR_MASK;
    if mm::refcount(old) == 1 {
        e.set(Level::Pte, v | pt::WRITABLE);
        return Ok(mm::Resolved::CowReuse);
    }
    let new = mm::alloc_user_frame().ok_or(())?;
    mm::copy_frame(new, old);
    // A present entry changes: SET_PTE makes the host drop the read-only translation.
    e.set(Level::Pte, new | flags | pt::WRITABLE);
    mm::put_frame(old);
    Ok(mm::Resolved::CowCopy)
}
