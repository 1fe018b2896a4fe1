//! Where each switcher page lives in the one `vmap()` area, and which guest addresses that reserves.
//!
//! ```text
//!   base ──► text pages        the position-independent switcher code (host: read-only + exec)
//!            CPU 0: regs       guest register frame, TSS.RSP0 stack       (guest: RW, NX)
//!                   ist        NMI / #MC / #DB / #DF stacks              (guest: RW, NX)
//!                   idt        the switcher IDT, 256 x 16 bytes          (guest: RO, NX)
//!                   gdt        switcher GDT, TSS, read-only switch data  (guest: RO, NX)
//!                   host       saved host state                          (never mapped in guests)
//!            CPU 1: ...
//! ```
//! Every page the CPU itself writes while delivering a trap in guest mode (the RSP0 and IST stacks)
//! must be writable in the shadow; ring 1 is a supervisor ring, so the guest can write them too.
//! Nothing there is trusted: the exit path copies it out and the host validates it.

use crate::abi::PAGE_SIZE;

/// Pages of switcher code, shared by all CPUs.
pub const TEXT_PAGES: u64 = 2;

/// Per-CPU pages, in order.
pub const REGS_PAGE: u64 = 0;
pub const IST_PAGE: u64 = 1;
pub const IDT_PAGE: u64 = 2;
pub const GDT_PAGE: u64 = 3;
pub const HOST_PAGE: u64 = 4;
pub const PAGES_PER_CPU: u64 = 5;

/// Total pages of the switcher area for `nr_cpus` possible CPUs.
pub fn total_pages(nr_cpus: u64) -> Option<u64> {
    PAGES_PER_CPU.checked_mul(nr_cpus)?.checked_add(TEXT_PAGES)
}

/// Index (in the `vmap` page array) of page `which` of CPU `cpu`.
pub fn cpu_page_index(cpu: u64, which: u64) -> u64 {
    TEXT_PAGES + cpu * PAGES_PER_CPU + which
}

/// Virtual address of page `which` of CPU `cpu`.
pub fn cpu_page_va(base: u64, cpu: u64, which: u64) -> u64 {
    base + cpu_page_index(cpu, which) * PAGE_SIZE
}

/// The guest-virtual range the guest must leave alone, `[start, end)`.
///
/// The guest's shadow gives the switcher the whole top-level slot that contains it (512 GiB on a
/// 4-level host). On a 5-level host that slot is a PML5 slot, which a 4-level guest cannot name at
/// all (its tables fill only PML5 slots 0 and 511), so nothing is reserved: the result is empty.
/// Returns `None` if the area straddles two top-level slots (the module then refuses to load).
pub fn reserved_range(base: u64, size: u64, la57: bool) -> Option<(u64, u64)> {
    let shift = if la57 { 48 } else { 39 };
    let last = base.checked_add(size.checked_sub(1)?)?;
    if base >> shift != last >> shift {
        return None;
    }
    if la57 {
        let pml5 = (base >> 48) & 511;
        // Slots 0 and 511 are where a 4-level guest lives: the switcher must never be there.
        return if pml5 == 0 || pml5 == 511 {
            None
        } else {
            Some((0, 0))
        };
    }
    let start = base & !((1u64 << 39) - 1);
    Some((start, start.wrapping_add(1 << 39)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices() {
        assert_eq!(total_pages(1), Some(7));
        assert_eq!(total_pages(u64::MAX), None);
        assert_eq!(cpu_page_index(0, REGS_PAGE), 2);
        assert_eq!(cpu_page_index(1, HOST_PAGE), 11);
        assert_eq!(
            cpu_page_va(0x1000_0000, 1, IDT_PAGE),
            0x1000_0000 + 9 * 4096
        );
    }

    #[test]
    fn reserved_slot() {
        let base = 0xffff_c900_1234_5000;
        assert_eq!(
            reserved_range(base, 7 * 4096, false),
            Some((0xffff_c900_0000_0000, 0xffff_c980_0000_0000))
        );
        // Straddles a 512 GiB boundary.
        assert_eq!(reserved_range(0xffff_c97f_ffff_f000, 2 * 4096, false), None);
        // 5-level host: vmalloc lives in PML5 slots a 4-level guest cannot reach.
        assert_eq!(
            reserved_range(0xffa0_0000_0000_0000, 4096, true),
            Some((0, 0))
        );
        assert_eq!(
            reserved_range(0xff11_0000_0000_0000, 4096, true),
            Some((0, 0))
        );
        assert_eq!(reserved_range(0xffff_c900_0000_0000, 4096, true), None);
        assert_eq!(reserved_range(0x1000, 0, false), None);
    }
}
