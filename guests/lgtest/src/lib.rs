//! The pure logic of the lguest test guest: everything that does not touch the (virtual) hardware,
//! kept here so that `cargo test --target x86_64-unknown-linux-gnu --lib` can check it on the host.
//! The kernel itself (entry, hypercalls, traps, the tests) is the binary, `main.rs`.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

pub mod args;
pub mod bootparams;
pub mod devices;
pub mod digest;
pub mod mode;
pub mod pagetable;
pub mod pattern;
pub mod regions;
pub mod text;
pub mod uapi;

/// Where the kernel's direct map starts: guest-physical `p` is at virtual `KERNEL_BASE + p`.
/// It is also where the image is linked (`link.ld`), so image addresses convert the same way.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;

/// The direct map is 512 2 MiB pages (one PD) mapped by the boot page tables.
pub const DIRECT_MAP_SIZE: u64 = 1 << 30;

/// Guest-physical address of a direct-map (or image) virtual address.
pub const fn virt_to_phys(va: u64) -> u64 {
    va.wrapping_sub(KERNEL_BASE)
}

/// Direct-map virtual address of a guest-physical address (below [`DIRECT_MAP_SIZE`]).
pub const fn phys_to_virt(pa: u64) -> u64 {
    pa.wrapping_add(KERNEL_BASE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_map_round_trips() {
        assert_eq!(phys_to_virt(0x20_0000), 0xffff_ffff_8020_0000);
        assert_eq!(virt_to_phys(0xffff_ffff_8020_0000), 0x20_0000);
        assert_eq!(
            virt_to_phys(phys_to_virt(DIRECT_MAP_SIZE - 1)),
            DIRECT_MAP_SIZE - 1
        );
    }
}
