//! Reading the zero page (Linux's `struct boot_params`) the launcher leaves at guest-physical
//! `0x1000`: the command line's address, the e820 memory map and the initrd. The kernel hands us
//! the page as a byte slice; nothing here trusts its contents beyond bounds-checked reads.

use lg_core::abi::zero_page as zp;

/// 2 MiB: the direct map's page size.
pub const LARGE_PAGE: u64 = 1 << 21;
const PAGE: u64 = lg_core::abi::PAGE_SIZE;

fn read_u32(page: &[u8], off: usize) -> u32 {
    page.get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn read_u64(page: &[u8], off: usize) -> u64 {
    page.get(off..off + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Guest-physical address of the NUL-terminated command line (0: none).
pub fn cmdline_gpa(page: &[u8]) -> u64 {
    u64::from(read_u32(page, zp::CMD_LINE_PTR))
        | u64::from(read_u32(page, zp::EXT_CMD_LINE_PTR)) << 32
}

/// The initrd as `(start, size)` guest-physical, if there is one.
pub fn ramdisk(page: &[u8]) -> Option<(u64, u64)> {
    let start = u64::from(read_u32(page, zp::RAMDISK_IMAGE))
        | u64::from(read_u32(page, zp::EXT_RAMDISK_IMAGE)) << 32;
    let size = u64::from(read_u32(page, zp::RAMDISK_SIZE))
        | u64::from(read_u32(page, zp::EXT_RAMDISK_SIZE)) << 32;
    (size != 0).then_some((start, size))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

impl E820Entry {
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }
    fn is_ram(&self) -> bool {
        self.kind == zp::E820_RAM && self.size != 0
    }
}

/// The e820 entries (at most [`zp::E820_MAX_ENTRIES`], whatever the count byte claims).
pub fn e820(page: &[u8]) -> impl Iterator<Item = E820Entry> + '_ {
    let count = usize::from(page.get(zp::E820_ENTRIES).copied().unwrap_or(0));
    (0..count.min(zp::E820_MAX_ENTRIES)).map(move |i| {
        let off = zp::E820_TABLE + i * 20;
        E820Entry {
            addr: read_u64(page, off),
            size: read_u64(page, off + 8),
            kind: read_u32(page, off + 16),
        }
    })
}

/// The highest end of any RAM entry: the guest's memory limit.
pub fn ram_top(page: &[u8]) -> u64 {
    e820(page)
        .filter(E820Entry::is_ram)
        .map(|e| e.end())
        .max()
        .unwrap_or(0)
}

/// The device region (docs/abi.md §3.4): the first reserved range at or above the end of RAM,
/// as `[start, end)`. Its first page is the device page.
pub fn device_area(page: &[u8]) -> Option<(u64, u64)> {
    let top = ram_top(page);
    e820(page)
        .filter(|e| e.kind == zp::E820_RESERVED && e.size != 0 && e.addr >= top)
        .min_by_key(|e| e.addr)
        .map(|e| (e.addr, e.end()))
}

/// The end of the run of RAM (adjacent or overlapping RAM entries) that contains `addr`.
fn ram_run_end(page: &[u8], addr: u64) -> Option<u64> {
    let mut end = None::<u64>;
    let mut probe = addr;
    // Each pass extends the run by at least one entry, so E820_MAX_ENTRIES passes suffice.
    for _ in 0..=zp::E820_MAX_ENTRIES {
        let next = e820(page)
            .filter(|e| e.is_ram() && e.addr <= probe && probe < e.end())
            .map(|e| e.end())
            .max();
        match next {
            Some(n) if Some(n) != end => {
                end = Some(n);
                probe = n;
            }
            _ => break,
        }
    }
    end
}

/// Top of the direct map we may touch: whole 2 MiB pages of RAM, at most 1 GiB (what the boot
/// page tables map). A partial last 2 MiB page is left out so that no direct-map page ever
/// reaches past the end of guest memory.
pub fn direct_map_top(page: &[u8]) -> u64 {
    (ram_top(page) & !(LARGE_PAGE - 1)).min(crate::DIRECT_MAP_SIZE)
}

/// The guest-physical range `[start, end)` of free page frames: from the end of the kernel image
/// to the end of its RAM run, below the initrd and inside the direct map. `None` if empty.
pub fn free_frames(page: &[u8], image_end: u64) -> Option<(u64, u64)> {
    let start = image_end.checked_add(PAGE - 1)? & !(PAGE - 1);
    let mut end = ram_run_end(page, image_end)?.min(direct_map_top(page));
    if let Some((rd_start, _)) = ramdisk(page) {
        if rd_start >= start {
            end = end.min(rd_start);
        }
    }
    let end = end & !(PAGE - 1);
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_with(entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[zp::E820_ENTRIES] = entries.len() as u8;
        for (i, &(addr, size, kind)) in entries.iter().enumerate() {
            let off = zp::E820_TABLE + i * 20;
            p[off..off + 8].copy_from_slice(&addr.to_le_bytes());
            p[off + 8..off + 16].copy_from_slice(&size.to_le_bytes());
            p[off + 16..off + 20].copy_from_slice(&kind.to_le_bytes());
        }
        p
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn reads_cmdline_pointer_with_ext_bits() {
        let mut p = page_with(&[]);
        p[zp::CMD_LINE_PTR..zp::CMD_LINE_PTR + 4].copy_from_slice(&0x2000u32.to_le_bytes());
        assert_eq!(cmdline_gpa(&p), 0x2000);
        p[zp::EXT_CMD_LINE_PTR] = 1;
        assert_eq!(cmdline_gpa(&p), 0x1_0000_2000);
        assert_eq!(cmdline_gpa(&[]), 0, "short page reads as zeros");
    }

    #[test]
    fn ram_top_ignores_reserved_entries() {
        let p = page_with(&[(0, 64 * MIB, 1), (64 * MIB, MIB, zp::E820_RESERVED)]);
        assert_eq!(ram_top(&p), 64 * MIB);
        assert_eq!(direct_map_top(&p), 64 * MIB);
    }

    #[test]
    fn direct_map_top_is_whole_large_pages_below_1g() {
        let p = page_with(&[(0, 17 * MIB, 1)]);
        assert_eq!(direct_map_top(&p), 16 * MIB);
        let p = page_with(&[(0, 4096 * MIB, 1)]);
        assert_eq!(direct_map_top(&p), 1024 * MIB);
    }

    #[test]
    fn free_frames_stop_at_holes_initrd_and_direct_map() {
        let image_end = 0x20_0000 + 0x1_2345;
        let p = page_with(&[(0, 16 * MIB, 1)]);
        assert_eq!(free_frames(&p, image_end), Some((0x21_3000, 16 * MIB)));

        // Two adjacent entries form one run; a hole ends it.
        let p = page_with(&[
            (0, 8 * MIB, 1),
            (8 * MIB, 8 * MIB, 1),
            (32 * MIB, 8 * MIB, 1),
        ]);
        assert_eq!(free_frames(&p, image_end), Some((0x21_3000, 16 * MIB)));

        let mut p = page_with(&[(0, 16 * MIB, 1)]);
        p[zp::RAMDISK_IMAGE..zp::RAMDISK_IMAGE + 4]
            .copy_from_slice(&(12 * MIB as u32).to_le_bytes());
        p[zp::RAMDISK_SIZE..zp::RAMDISK_SIZE + 4].copy_from_slice(&(MIB as u32).to_le_bytes());
        assert_eq!(free_frames(&p, image_end), Some((0x21_3000, 12 * MIB)));

        assert_eq!(free_frames(&page_with(&[]), image_end), None);
        assert_eq!(free_frames(&page_with(&[(0, 2 * MIB, 1)]), image_end), None);
    }

    #[test]
    fn device_area_is_the_first_reserved_range_above_ram() {
        let p = page_with(&[
            (0, 0x9f000, zp::E820_RESERVED),
            (0, 64 * MIB, 1),
            (64 * MIB + 0x8000, 0x1000, zp::E820_RESERVED),
            (64 * MIB, 0x4000, zp::E820_RESERVED),
        ]);
        assert_eq!(device_area(&p), Some((64 * MIB, 64 * MIB + 0x4000)));
        assert_eq!(device_area(&page_with(&[(0, 64 * MIB, 1)])), None);
    }

    #[test]
    fn e820_count_is_capped() {
        let mut p = page_with(&[(0, 16 * MIB, 1)]);
        p[zp::E820_ENTRIES] = 255;
        assert_eq!(e820(&p).count(), zp::E820_MAX_ENTRIES);
        assert_eq!(ram_top(&p), 16 * MIB);
    }
}
