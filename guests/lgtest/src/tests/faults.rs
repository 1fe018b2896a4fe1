//! Page faults: reflected with the right error code and CR2, skipped or repaired, and the
//! Accessed/Dirty bits the host maintains.

use super::memory::{check_marker, map_marked, marked_frame, scratch_va, usable, DATA};
use super::{check_trap, ensure, ensure_eq, fail, peek, poke, TestResult};
use crate::paging;
use crate::traps;
use lg_core::abi::{vector, PAGE_SIZE};
use lgtest::pagetable::{self as pt, Level};

const PF: u64 = vector::PF as u64;

/// Error-code bits.
const ERR_PRESENT: u64 = 1 << 0;
const ERR_WRITE: u64 = 1 << 1;
const ERR_FETCH: u64 = 1 << 4;

/// Reading an unmapped page: #PF, error 0 (not present, read, supervisor), CR2 = the address.
pub fn read_unmapped() -> TestResult {
    let va = scratch_va();
    usable(va, PAGE_SIZE)?;
    // SAFETY: the read faults and is skipped.
    let p = unsafe { probe!(PF, ["mov ({va}), {x}"], va = in(reg) va, x = out(reg) _) };
    check_trap(&p, vector::PF, 0, p.fault_rip, false)?;
    ensure_eq!(p.trap.map_or(0, |t| t.cr2), va, "CR2");
    Ok(())
}

/// Writing an unmapped page: #PF, error W; the handler maps the page and the write is retried
/// and lands.
pub fn write_unmapped_recover() -> TestResult {
    const VALUE: u64 = 0x00c0_ffee_0000_0042;
    let va = scratch_va() + 8;
    // Map and unmap it first so that the PTE exists for the handler to fill.
    let (pte, _) = map_marked(va & !(PAGE_SIZE - 1), DATA, None)?;
    pte.set(Level::Pte, 0);
    let (pa, _) = marked_frame()?;
    // SAFETY: the PTE is ours; the page it maps is a fresh frame of ours.
    let since = unsafe { traps::arm_repair(pte.gpa(), pa | DATA) };
    // SAFETY: the write faults, the handler maps `va`, the write is retried.
    let p =
        unsafe { probe!(@armed since, ["movq {v}, ({va})"], va = in(reg) va, v = in(reg) VALUE) };
    check_trap(&p, vector::PF, ERR_WRITE, p.fault_rip, false)?;
    ensure_eq!(p.trap.map_or(0, |t| t.cr2), va, "CR2");
    // SAFETY: `va` is mapped to `pa` now.
    let through_va = unsafe { peek(va) };
    ensure_eq!(through_va, VALUE, "value read back through the mapping");
    ensure_eq!(paging::read_phys(pa + 8), VALUE, "value in the frame");
    Ok(())
}

/// Writing a read-only page: #PF, error P|W, CR2 = the address, memory unchanged.
pub fn write_readonly() -> TestResult {
    let va = scratch_va();
    let (_, marker) = map_marked(va, pt::PRESENT | pt::NO_EXECUTE, None)?;
    check_marker(va, marker, "read-only page")?;
    // SAFETY: the write faults and is skipped.
    let p = unsafe { probe!(PF, ["movq $1, ({va})"], va = in(reg) va) };
    check_trap(&p, vector::PF, ERR_PRESENT | ERR_WRITE, p.fault_rip, false)?;
    ensure_eq!(p.trap.map_or(0, |t| t.cr2), va, "CR2");
    check_marker(va, marker, "read-only page after the write")
}

/// Jumping into a no-execute page: #PF, error P|I (fetch), RIP = CR2 = the page.
pub fn nx_fetch() -> TestResult {
    let va = scratch_va();
    let (pte, _) = map_marked(va, pt::PRESENT | pt::NO_EXECUTE, None)?;
    let frame = pt::frame(pte.get());
    // SAFETY: a fresh frame of ours: a `ret`, in case the fetch wrongly succeeds.
    unsafe { paging::write_phys(frame, 0xc3) };
    // SAFETY: the jump faults on the fetch and is skipped (`jmp` pushes nothing).
    let p = unsafe { probe!(PF, ["jmp *{va}"], va = in(reg) va) };
    let Some(t) = p.trap else {
        fail!("executed a no-execute page");
    };
    check_trap(&p, vector::PF, ERR_PRESENT | ERR_FETCH, va, false)?;
    ensure_eq!(t.cr2, va, "CR2");
    Ok(())
}

/// The host sets Accessed when a read fills its shadow, and Dirty before a write can land.
pub fn accessed_dirty() -> TestResult {
    let va = scratch_va();
    let (pte, marker) = map_marked(va, DATA, None)?;
    ensure!(
        pte.get() & (pt::ACCESSED | pt::DIRTY) == 0,
        "fresh PTE has A/D set: {:#x}",
        pte.get()
    );
    check_marker(va, marker, "first read")?;
    ensure!(
        pte.get() & pt::ACCESSED != 0,
        "A not set after a read: {:#x}",
        pte.get()
    );
    // SAFETY: mapped writable to a frame of ours.
    unsafe { poke(va, 7) };
    ensure!(
        pte.get() & pt::DIRTY != 0,
        "D not set after a write: {:#x}",
        pte.get()
    );
    Ok(())
}
