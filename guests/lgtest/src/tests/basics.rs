//! Boot, the console, the shared page, the clock, the kernel stack and the TLS segments.

use super::{check_trap, ensure, ensure_eq, fail, TestResult};
use crate::{hcall, paging, shared, traps};
use core::arch::asm;
use core::sync::atomic::Ordering::Relaxed;
use lg_core::abi::{self, vector, PAGE_SIZE};
use lgtest::pagetable::{is_canonical, overlaps};
use lgtest::{phys_to_virt, DIRECT_MAP_SIZE, KERNEL_BASE};

/// We are running and printing; also send a line whose bytes straddle a page boundary, so the
/// host's copy has to translate two pages.
pub fn boot_console() -> TestResult {
    const LINE: &[u8] = b"console: this line straddles a page boundary\n";
    let (Some(first), Some(second)) = (paging::alloc_frame(), paging::alloc_frame()) else {
        fail!("out of memory");
    };
    ensure!(second == first + PAGE_SIZE, "frames not contiguous");
    let start = phys_to_virt(first) + PAGE_SIZE - 20;
    // SAFETY: two fresh, contiguous frames of ours in the direct map; `LINE` fits across them.
    let buf = unsafe {
        core::ptr::copy_nonoverlapping(LINE.as_ptr(), start as *mut u8, LINE.len());
        core::slice::from_raw_parts(start as *const u8, LINE.len())
    };
    hcall::console_write(buf);
    Ok(())
}

/// The host filled its fields of the shared page at INIT.
pub fn init_shared_page() -> TestResult {
    ensure_eq!(
        u64::from(shared::abi_version().load(Relaxed)),
        abi::VERSION,
        "abi_version"
    );
    ensure_eq!(
        u64::from(shared::paging_levels().load(Relaxed)),
        4,
        "paging_levels"
    );
    ensure_eq!(
        u64::from(shared::kernel_cs().load(Relaxed)),
        u64::from(abi::GUEST_KERNEL_CS),
        "kernel_cs"
    );
    ensure_eq!(
        u64::from(shared::kernel_ds().load(Relaxed)),
        u64::from(abi::GUEST_KERNEL_DS),
        "kernel_ds"
    );
    ensure_eq!(
        u64::from(shared::user_cs().load(Relaxed)),
        u64::from(abi::USER_CS),
        "user_cs"
    );
    ensure_eq!(
        u64::from(shared::user_ds().load(Relaxed)),
        u64::from(abi::USER_DS),
        "user_ds"
    );
    ensure_eq!(
        shared::irq_vector().load(Relaxed),
        crate::irq::VECTOR,
        "irq_vector"
    );
    ensure!(
        shared::wallclock_ns().load(Relaxed) != 0,
        "wallclock_ns is 0"
    );
    let (start, end) = paging::reserved();
    ensure!(
        start <= end,
        "reserved range [{start:#x}, {end:#x}) is inverted"
    );
    if start != end {
        ensure!(
            is_canonical(start) && is_canonical(end - 1),
            "reserved range [{start:#x}, {end:#x}) not canonical"
        );
        ensure!(
            !overlaps(start, end, KERNEL_BASE, KERNEL_BASE + DIRECT_MAP_SIZE),
            "reserved range [{start:#x}, {end:#x}) overlaps the kernel's direct map"
        );
    }
    Ok(())
}

/// GET_WALLCLOCK is the real time: after 2020-01-01, not before the value INIT stored, and not
/// going backwards.
pub fn get_wallclock() -> TestResult {
    const JAN_2020_NS: u64 = 1_577_836_800 * 1_000_000_000;
    let t1 = hcall::wallclock_ns();
    let t2 = hcall::wallclock_ns();
    ensure!(t1 > JAN_2020_NS, "wallclock {t1} ns is before 2020");
    ensure!(t2 >= t1, "wallclock went backwards: {t1} then {t2}");
    let at_init = shared::wallclock_ns().load(Relaxed);
    ensure!(
        t1 >= at_init,
        "wallclock {t1} is before the shared page's {at_init}"
    );
    Ok(())
}

/// SET_STACK accepts a valid kernel stack (this guest never enters user mode to use it).
pub fn set_stack() -> TestResult {
    let Some(frame) = paging::alloc_frame() else {
        fail!("out of memory");
    };
    hcall::set_stack(phys_to_virt(frame) + PAGE_SIZE);
    Ok(())
}

/// A present, 32-bit, 4 GiB, DPL-3 read/write data segment (accessed bit set).
const TLS_DATA: u64 = 0x00cf_f300_0000_ffff;
const fn tls_selector(index: u64) -> u64 {
    index << 3 | 3
}

/// LOAD_TLS installs a descriptor that `%fs` can then load at ring 1 without faulting, and the
/// selector survives a trip through the host.
pub fn load_tls() -> TestResult {
    let sel = tls_selector(abi::TLS_FIRST_ENTRY);
    hcall::load_tls([TLS_DATA, 0, 0]);
    // SAFETY: loads %fs, which Rust does not use (no TLS in this kernel).
    let p = unsafe { probe!(traps::ANY, ["mov {sel:x}, %fs"], sel = in(reg) sel) };
    if let Some(t) = p.trap {
        fail!(
            "loading {sel:#x} into %fs raised vector {} error {:#x}",
            t.vector,
            t.error
        );
    }
    hcall::flush_async();
    let fs: u64;
    // SAFETY: reads a segment register.
    unsafe { asm!("mov %fs, {fs}", fs = out(reg) fs, options(att_syntax, nomem, nostack)) };
    // SAFETY: the null selector is always loadable.
    unsafe { asm!("mov {z:x}, %fs", z = in(reg) 0u64, options(att_syntax, nostack)) };
    hcall::load_tls([0; 3]);
    ensure_eq!(fs, sel, "%fs after a hypercall");
    Ok(())
}

/// LOAD_GDT_ENTRY sets one TLS slot (loadable into `%es`); setting it to 0 makes loading the
/// selector raise #GP with the selector as error code.
pub fn load_gdt_entry() -> TestResult {
    let index = abi::TLS_FIRST_ENTRY + 1;
    let sel = tls_selector(index);
    hcall::load_gdt_entry(index, TLS_DATA);
    // SAFETY: loads %es, which 64-bit code does not use for addressing.
    let p = unsafe { probe!(traps::ANY, ["mov {sel:x}, %es"], sel = in(reg) sel) };
    if let Some(t) = p.trap {
        fail!(
            "loading {sel:#x} into %es raised vector {} error {:#x}",
            t.vector,
            t.error
        );
    }
    hcall::flush_async();
    let es: u64;
    // SAFETY: reads a segment register; then back to the null selector before the slot goes.
    unsafe {
        asm!("mov %es, {es}", es = out(reg) es, options(att_syntax, nomem, nostack));
        asm!("mov {z:x}, %es", z = in(reg) 0u64, options(att_syntax, nostack));
    }
    ensure_eq!(es, sel, "%es after a hypercall");

    hcall::load_gdt_entry(index, 0);
    // SAFETY: as above; the load faults and is skipped.
    let p = unsafe { probe!(u64::from(vector::GP), ["mov {sel:x}, %es"], sel = in(reg) sel) };
    check_trap(&p, vector::GP, sel & !3, p.fault_rip, false)
}
