//! The descriptor tables the CPU uses while a guest runs: one IDT, GDT and TSS per host CPU,
//! built once when the module loads (only the guest's three TLS slots change afterwards).
//!
//! The GDT copies the host's selector layout for entries 0..=15, so the switcher's code segment is
//! the host's `__KERNEL_CS` (0x10) on both sides of `lgdt` and no far jump is needed. Entries 16 and
//! 17 are the guest kernel's ring-1 code and data segments. Every descriptor has its accessed bit
//! preset: the GDT page is read-only in the guest, and a CPU that had to set the bit would fault.
//! There is no call gate, no LDT and no 32-bit user code segment.

use crate::abi::{vector, GUEST_KERNEL_CS, GUEST_KERNEL_DS, TLS_ENTRIES, TLS_FIRST_ENTRY};
use crate::switcher::pages::{Tss, GDT_ENTRIES, GDT_ENTRY_TSS};

pub const KERNEL32_CS: u64 = 0x00cf_9b00_0000_ffff;
pub const KERNEL_CS: u64 = 0x00af_9b00_0000_ffff;
pub const KERNEL_DS: u64 = 0x00cf_9300_0000_ffff;
pub const USER_DS: u64 = 0x00cf_f300_0000_ffff;
pub const USER_CS: u64 = 0x00af_fb00_0000_ffff;
/// Guest kernel: 64-bit code, DPL 1, accessed.
pub const GUEST_CS: u64 = 0x00af_bb00_0000_ffff;
/// Guest kernel: data, DPL 1, accessed.
pub const GUEST_DS: u64 = 0x00cf_b300_0000_ffff;

/// The host selector of the switcher's own code.
pub const SWITCHER_CS: u16 = 0x10;

/// Interrupt-stack-table slots, the same as the host's (arch/x86/include/asm/page_64_types.h), so
/// that an NMI arriving while TR still names the host TSS lands on a valid host stack.
pub const IST_DF: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_DB: u8 = 3;
pub const IST_MC: u8 = 4;

/// The switcher GDT for one CPU, whose TSS lives at `tss_va`.
pub fn build_gdt(tss_va: u64) -> [u64; GDT_ENTRIES] {
    let mut gdt = [0u64; GDT_ENTRIES];
    let set = |gdt: &mut [u64; GDT_ENTRIES], i: usize, v: u64| {
        if let Some(e) = gdt.get_mut(i) {
            *e = v;
        }
    };
    set(&mut gdt, 1, KERNEL32_CS);
    set(&mut gdt, 2, KERNEL_CS);
    set(&mut gdt, 3, KERNEL_DS);
    set(&mut gdt, 5, USER_DS);
    set(&mut gdt, 6, USER_CS);
    let (lo, hi) = tss_descriptor(tss_va);
    set(&mut gdt, GDT_ENTRY_TSS, lo);
    set(&mut gdt, GDT_ENTRY_TSS + 1, hi);
    set(&mut gdt, usize::from(GUEST_KERNEL_CS >> 3), GUEST_CS);
    set(&mut gdt, usize::from(GUEST_KERNEL_DS >> 3), GUEST_DS);
    gdt
}

/// A 64-bit "available TSS" descriptor (two GDT slots) for a 104-byte TSS at `base`.
pub fn tss_descriptor(base: u64) -> (u64, u64) {
    let limit = (core::mem::size_of::<Tss>() - 1) as u64;
    let lo = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    (lo, base >> 32)
}

/// The TSS: RSP0 (traps from the guest land on the regs page) and the four IST stacks. The I/O
/// bitmap offset points past the limit, so every port access from ring 1 or 3 faults.
pub fn build_tss(rsp0: u64, ist_tops: [u64; 4]) -> Tss {
    let mut ist = [0u64; 7];
    for (slot, top) in [IST_DF, IST_NMI, IST_DB, IST_MC].iter().zip(ist_tops) {
        if let Some(e) = ist.get_mut(usize::from(*slot) - 1) {
            *e = top;
        }
    }
    Tss {
        rsp: [rsp0, 0, 0],
        ist,
        iomap_base: core::mem::size_of::<Tss>() as u16,
        ..Tss::default()
    }
}

/// One 16-byte interrupt gate.
pub fn gate(handler: u64, ist: u8, dpl: u8) -> u128 {
    let h = u128::from(handler);
    let attr = 0x80u128 | (u128::from(dpl & 3) << 5) | 0xe; // present, DPL, 64-bit interrupt gate
    (h & 0xffff)
        | (u128::from(SWITCHER_CS) << 16)
        | (u128::from(ist & 7) << 32)
        | (attr << 40)
        | (((h >> 16) & 0xffff) << 48)
        | ((h >> 32) << 64)
}

/// The handler address a gate points to.
pub fn gate_target(g: u128) -> u64 {
    ((g & 0xffff) | (((g >> 48) & 0xffff) << 16) | (((g >> 64) & 0xffff_ffff) << 32)) as u64
}

/// Size of each interrupt stub in the switcher text (they are laid out back to back).
pub const STUB_SIZE: u64 = 16;

/// The switcher IDT: every vector enters its stub at CPL0 through an interrupt gate. Only `int3`,
/// `into` (DPL 3, so they are exceptions rather than #GP) and the hypercall (DPL 1, guest kernel
/// only) can be raised by software; NMI, #DF, #DB and #MC get their own stacks.
pub fn build_idt(stubs_va: u64) -> [u128; 256] {
    let mut idt = [0u128; 256];
    for (v, g) in idt.iter_mut().enumerate() {
        let v = v as u8;
        let ist = match v {
            vector::DF => IST_DF,
            vector::NMI => IST_NMI,
            vector::DB => IST_DB,
            vector::MC => IST_MC,
            _ => 0,
        };
        let dpl = match v {
            vector::BP | vector::OF => 3,
            vector::HYPERCALL => 1,
            _ => 0,
        };
        *g = gate(stubs_va + u64::from(v) * STUB_SIZE, ist, dpl);
    }
    idt
}

/// Check and normalize one guest TLS descriptor: 0 (unused), or a present DPL-3 data segment.
/// The accessed bit is forced on (the GDT is read-only to the guest). `None` = refused.
pub fn sanitize_tls(desc: u64) -> Option<u64> {
    if desc == 0 {
        return Some(0);
    }
    let access = (desc >> 40) & 0xff;
    let present = access & 0x80 != 0;
    let dpl = (access >> 5) & 3;
    let code_or_data = access & 0x10 != 0;
    let is_code = access & 0x08 != 0;
    if !present || dpl != 3 || !code_or_data || is_code {
        return None;
    }
    Some(desc | (1 << 40))
}

/// GDT slot index of TLS entry `i` (0..3).
pub fn tls_slot(i: u64) -> Option<usize> {
    (i < TLS_ENTRIES).then(|| (TLS_FIRST_ENTRY + i) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_layout() {
        let g = build_gdt(0xffff_c900_1234_5678);
        assert_eq!(g[0], 0);
        assert_eq!(g[2], KERNEL_CS);
        assert_eq!(g[4], 0, "no 32-bit user code segment");
        assert_eq!(g[16], GUEST_CS);
        assert_eq!(g[17], GUEST_DS);
        // TSS descriptor decodes back to its base and limit.
        let (lo, hi) = (g[8], g[9]);
        let base = ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | (hi << 32);
        assert_eq!(base, 0xffff_c900_1234_5678);
        assert_eq!(lo & 0xffff, 103);
        assert_eq!((lo >> 40) & 0xff, 0x89);
        // Every code/data descriptor: accessed bit set.
        for e in [1, 2, 3, 5, 6, 16, 17] {
            assert_ne!(g[e] & (1 << 40), 0, "entry {e}");
        }
        // Guest segments are DPL 1.
        assert_eq!((GUEST_CS >> 45) & 3, 1);
        assert_eq!((GUEST_DS >> 45) & 3, 1);
    }

    #[test]
    fn idt_gates() {
        let base = 0xffff_c900_0000_1000;
        let idt = build_idt(base);
        for (v, g) in idt.iter().enumerate() {
            assert_eq!(gate_target(*g), base + v as u64 * 16);
            assert_eq!((g >> 16) & 0xffff, 0x10);
            assert_eq!((g >> 47) & 1, 1, "present");
            assert_eq!((g >> 40) & 0xf, 0xe, "interrupt gate");
        }
        let dpl = |v: usize| ((idt[v] >> 45) & 3) as u8;
        let ist = |v: usize| ((idt[v] >> 32) & 7) as u8;
        assert_eq!(dpl(3), 3);
        assert_eq!(dpl(4), 3);
        assert_eq!(dpl(0x1f), 1);
        assert_eq!(dpl(0x80), 0);
        assert_eq!(dpl(2), 0);
        assert_eq!((ist(8), ist(2), ist(1), ist(18), ist(14)), (1, 2, 3, 4, 0));
    }

    #[test]
    fn tss_fields() {
        let t = build_tss(0x1000, [0x2000, 0x3000, 0x4000, 0x5000]);
        let (rsp, ist, io) = (t.rsp, t.ist, t.iomap_base);
        assert_eq!(rsp[0], 0x1000);
        assert_eq!(&ist[..4], &[0x2000, 0x3000, 0x4000, 0x5000]);
        assert_eq!(io, 104);
    }

    #[test]
    fn tls_rules() {
        assert_eq!(sanitize_tls(0), Some(0));
        // DPL-3 data, accessed bit forced.
        assert_eq!(
            sanitize_tls(0x00cf_f200_0000_ffff),
            Some(0x00cf_f300_0000_ffff)
        );
        assert_eq!(sanitize_tls(0x00cf_b300_0000_ffff), None, "DPL 1");
        assert_eq!(sanitize_tls(0x00cf_7300_0000_ffff), None, "not present");
        assert_eq!(sanitize_tls(0x00af_fb00_0000_ffff), None, "code");
        assert_eq!(
            sanitize_tls(0x0000_ec00_0010_0000),
            None,
            "system (call gate)"
        );
        assert_eq!(tls_slot(0), Some(12));
        assert_eq!(tls_slot(3), None);
    }
}
