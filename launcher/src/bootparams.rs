//! The zero page (Linux's `struct boot_params`) and the kernel command line: what the guest finds
//! at `RSI` when it starts (docs/abi.md §2.1).
//!
//! The struct is linux-loader's (`bootparam::boot_params`, Linux's layout) and its
//! `LinuxBootConfigurator` writes it into guest memory; the compile-time checks below pin its field
//! offsets to the ones `lg_core::abi::zero_page` documents, which the guests read.

use core::mem::{offset_of, size_of};

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use vm_memory::GuestAddress;

use crate::error::Error;
use crate::loader::Initrd;
use crate::memory::{GuestMemory, MemError};
use lg_core::abi::{self, zero_page, PAGE_SIZE};

/// `boot_flag`: the boot sector signature.
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `header`: "HdrS", the setup header's magic.
const HEADER_MAGIC: u32 = u32::from_le_bytes(*b"HdrS");
/// `version`: boot protocol 2.15 (the one with every field we fill).
const BOOT_PROTOCOL_VERSION: u16 = 0x020f;
/// `type_of_loader`: "undefined" loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;

// linux-loader's struct is Linux's, and Linux's is what abi::zero_page describes.
const _: () = {
    assert!(size_of::<boot_params>() == PAGE_SIZE as usize);
    assert!(offset_of!(boot_params, ext_ramdisk_image) == zero_page::EXT_RAMDISK_IMAGE);
    assert!(offset_of!(boot_params, ext_ramdisk_size) == zero_page::EXT_RAMDISK_SIZE);
    assert!(offset_of!(boot_params, ext_cmd_line_ptr) == zero_page::EXT_CMD_LINE_PTR);
    assert!(offset_of!(boot_params, e820_entries) == zero_page::E820_ENTRIES);
    assert!(offset_of!(boot_params, hdr.boot_flag) == zero_page::BOOT_FLAG);
    assert!(offset_of!(boot_params, hdr.header) == zero_page::HEADER);
    assert!(offset_of!(boot_params, hdr.version) == zero_page::VERSION);
    assert!(offset_of!(boot_params, hdr.type_of_loader) == zero_page::TYPE_OF_LOADER);
    assert!(offset_of!(boot_params, hdr.ramdisk_image) == zero_page::RAMDISK_IMAGE);
    assert!(offset_of!(boot_params, hdr.ramdisk_size) == zero_page::RAMDISK_SIZE);
    assert!(offset_of!(boot_params, hdr.cmd_line_ptr) == zero_page::CMD_LINE_PTR);
    assert!(offset_of!(boot_params, hdr.cmdline_size) == zero_page::CMDLINE_SIZE);
    assert!(offset_of!(boot_params, hdr.hardware_subarch) == zero_page::HARDWARE_SUBARCH);
    assert!(offset_of!(boot_params, e820_table) == zero_page::E820_TABLE);
    assert!(size_of::<boot_e820_entry>() == 20);
    // The zero page and the command line fit below the kernel, without overlapping.
    assert!(abi::ZERO_PAGE_GPA + PAGE_SIZE <= abi::CMDLINE_GPA);
    assert!(abi::CMDLINE_GPA + abi::CMDLINE_MAX as u64 <= abi::LOW_RESERVED);
};

/// One entry of the guest's e820 memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    /// `zero_page::E820_RAM` or `zero_page::E820_RESERVED`.
    pub kind: u32,
}

/// The guest's memory map: RAM `[0, mem_bytes)`, then the device page and the devices' pages
/// `[mem_bytes, top)` as reserved (docs/abi.md §3.4), so the guest never takes them for RAM.
pub fn memory_map(mem_bytes: u64, top: u64) -> Vec<E820Entry> {
    let mut map = vec![E820Entry {
        addr: 0,
        size: mem_bytes,
        kind: zero_page::E820_RAM,
    }];
    if top > mem_bytes {
        map.push(E820Entry {
            addr: mem_bytes,
            size: top - mem_bytes,
            kind: zero_page::E820_RESERVED,
        });
    }
    map
}

/// The command line as written to guest memory: its bytes and a NUL, at most `CMDLINE_MAX`.
pub fn cmdline_bytes(cmdline: &str) -> Result<Vec<u8>, Error> {
    let max = abi::CMDLINE_MAX - 1;
    if cmdline.len() > max {
        return Err(Error::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    Ok(bytes)
}

/// Builds the zero page for a guest with memory map `e820` and an optional initrd; the command
/// line goes at `abi::CMDLINE_GPA`.
pub fn zero_page(e820: &[E820Entry], initrd: Option<Initrd>) -> Result<boot_params, Error> {
    let mut params = boot_params::default();
    if e820.len() > zero_page::E820_MAX_ENTRIES || e820.len() > params.e820_table.len() {
        return Err(Error::TooManyE820 { count: e820.len() });
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    // Checked against E820_MAX_ENTRIES (128) above.
    params.e820_entries = e820.len() as u8;

    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HEADER_MAGIC;
    params.hdr.version = BOOT_PROTOCOL_VERSION;
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.hardware_subarch = zero_page::SUBARCH_LGUEST;
    let (low, high) = split(abi::CMDLINE_GPA);
    params.hdr.cmd_line_ptr = low;
    params.ext_cmd_line_ptr = high;
    // As in Linux's boot protocol: the most the command line area holds, without its NUL.
    params.hdr.cmdline_size = (abi::CMDLINE_MAX - 1) as u32;
    if let Some(initrd) = initrd {
        let (low, high) = split(initrd.gpa);
        params.hdr.ramdisk_image = low;
        params.ext_ramdisk_image = high;
        let (low, high) = split(initrd.size);
        params.hdr.ramdisk_size = low;
        params.ext_ramdisk_size = high;
    }
    Ok(params)
}

/// A 64-bit value as the zero page's (low 32 bits, `ext_` high 32 bits) pair.
fn split(value: u64) -> (u32, u32) {
    (value as u32, (value >> 32) as u32)
}

/// Writes the command line and the zero page into guest memory.
pub fn write(
    mem: &GuestMemory,
    cmdline: &[u8],
    e820: &[E820Entry],
    initrd: Option<Initrd>,
) -> Result<(), Error> {
    mem.write(abi::CMDLINE_GPA, cmdline).map_err(mem_error)?;
    let params = zero_page(e820, initrd)?;
    let boot = BootParams::new(&params, GuestAddress(abi::ZERO_PAGE_GPA));
    LinuxBootConfigurator::write_bootparams(&boot, mem.backend())
        .map_err(|e| Error::ZeroPage(e.to_string()))
}

fn mem_error(err: MemError) -> Error {
    match err {
        MemError::OutOfRange(r) => Error::GuestRange(r),
        MemError::Io(e) => Error::ZeroPage(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn page(mem: &GuestMemory) -> Vec<u8> {
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        mem.read(abi::ZERO_PAGE_GPA, &mut buf).expect("read");
        buf
    }

    fn u16_at(p: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(p[at..at + 2].try_into().expect("2 bytes"))
    }
    fn u32_at(p: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(p[at..at + 4].try_into().expect("4 bytes"))
    }
    fn u64_at(p: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(p[at..at + 8].try_into().expect("8 bytes"))
    }

    #[test]
    fn zero_page_fields_at_the_documented_offsets() {
        let mem = GuestMemory::new(64 * MIB).expect("map");
        let cmdline = cmdline_bytes("console=hvc0 root=/dev/lgba").expect("fits");
        let initrd = Initrd {
            gpa: 60 * MIB,
            size: 12345,
        };
        write(
            &mem,
            &cmdline,
            &memory_map(64 * MIB, 64 * MIB),
            Some(initrd),
        )
        .expect("write");
        let p = page(&mem);
        assert_eq!(u16_at(&p, zero_page::BOOT_FLAG), 0xaa55);
        assert_eq!(&p[zero_page::HEADER..zero_page::HEADER + 4], b"HdrS");
        assert_eq!(u16_at(&p, zero_page::VERSION), 0x020f);
        assert_eq!(p[zero_page::TYPE_OF_LOADER], 0xff);
        assert_eq!(u32_at(&p, zero_page::HARDWARE_SUBARCH), 1);
        assert_eq!(u32_at(&p, zero_page::CMD_LINE_PTR), 0x2000);
        assert_eq!(u32_at(&p, zero_page::EXT_CMD_LINE_PTR), 0);
        assert_eq!(u32_at(&p, zero_page::CMDLINE_SIZE), 2047);
        assert_eq!(u32_at(&p, zero_page::RAMDISK_IMAGE), 60 * MIB as u32);
        assert_eq!(u32_at(&p, zero_page::RAMDISK_SIZE), 12345);
        assert_eq!(u32_at(&p, zero_page::EXT_RAMDISK_IMAGE), 0);
        assert_eq!(u32_at(&p, zero_page::EXT_RAMDISK_SIZE), 0);
        assert_eq!(p[zero_page::E820_ENTRIES], 1);
        let e = zero_page::E820_TABLE;
        assert_eq!(u64_at(&p, e), 0);
        assert_eq!(u64_at(&p, e + 8), 64 * MIB);
        assert_eq!(u32_at(&p, e + 16), zero_page::E820_RAM);
        // Nothing else in the page is set.
        let mut rest = p.clone();
        for (at, len) in [
            (zero_page::BOOT_FLAG, 2),
            (zero_page::HEADER, 4),
            (zero_page::VERSION, 2),
            (zero_page::TYPE_OF_LOADER, 1),
            (zero_page::HARDWARE_SUBARCH, 4),
            (zero_page::CMD_LINE_PTR, 4),
            (zero_page::CMDLINE_SIZE, 4),
            (zero_page::RAMDISK_IMAGE, 4),
            (zero_page::RAMDISK_SIZE, 4),
            (zero_page::E820_ENTRIES, 1),
            (zero_page::E820_TABLE, 20),
        ] {
            rest[at..at + len].fill(0);
        }
        assert!(rest.iter().all(|&b| b == 0));

        let mut line = vec![0u8; cmdline.len() + 1];
        mem.read(abi::CMDLINE_GPA, &mut line).expect("read");
        assert_eq!(&line[..cmdline.len()], b"console=hvc0 root=/dev/lgba\0");
    }

    #[test]
    fn high_initrd_uses_the_ext_fields() {
        let params = zero_page(
            &memory_map(8 << 30, 8 << 30),
            Some(Initrd {
                gpa: 0x1_2345_6000,
                size: 0x1_0000_0010,
            }),
        )
        .expect("builds");
        let mem = GuestMemory::new(2 * MIB).expect("map");
        let boot = BootParams::new(&params, GuestAddress(abi::ZERO_PAGE_GPA));
        LinuxBootConfigurator::write_bootparams(&boot, mem.backend()).expect("write");
        let p = page(&mem);
        assert_eq!(u32_at(&p, zero_page::RAMDISK_IMAGE), 0x2345_6000);
        assert_eq!(u32_at(&p, zero_page::EXT_RAMDISK_IMAGE), 1);
        assert_eq!(u32_at(&p, zero_page::RAMDISK_SIZE), 0x10);
        assert_eq!(u32_at(&p, zero_page::EXT_RAMDISK_SIZE), 1);
        // No initrd: all zero.
        let none = zero_page(&memory_map(2 * MIB, 2 * MIB), None).expect("builds");
        assert_eq!({ none.hdr.ramdisk_image }, 0);
        assert_eq!({ none.hdr.ramdisk_size }, 0);
    }

    #[test]
    fn e820_reserves_the_device_pages() {
        let map = memory_map(64 * MIB, 64 * MIB + 3 * PAGE_SIZE);
        assert_eq!(
            map,
            [
                E820Entry {
                    addr: 0,
                    size: 64 * MIB,
                    kind: zero_page::E820_RAM
                },
                E820Entry {
                    addr: 64 * MIB,
                    size: 3 * PAGE_SIZE,
                    kind: zero_page::E820_RESERVED
                },
            ]
        );
        let params = zero_page(&map, None).expect("builds");
        assert_eq!(params.e820_entries, 2);
        let reserved = params.e820_table[1];
        assert_eq!({ reserved.addr }, 0x400_0000);
        assert_eq!({ reserved.size }, 0x3000);
        assert_eq!({ reserved.r#type }, 2);
        // Nothing above RAM: RAM only.
        assert_eq!(memory_map(2 * MIB, 2 * MIB).len(), 1);
    }

    #[test]
    fn e820_takes_a_list() {
        let map = [
            E820Entry {
                addr: 0,
                size: 60 * MIB,
                kind: zero_page::E820_RAM,
            },
            E820Entry {
                addr: 60 * MIB,
                size: 4 * MIB,
                kind: zero_page::E820_RESERVED,
            },
        ];
        let params = zero_page(&map, None).expect("builds");
        assert_eq!(params.e820_entries, 2);
        let second = params.e820_table[1];
        assert_eq!({ second.addr }, 60 * MIB);
        assert_eq!({ second.size }, 4 * MIB);
        assert_eq!({ second.r#type }, zero_page::E820_RESERVED);

        let full = vec![map[0]; zero_page::E820_MAX_ENTRIES];
        assert!(zero_page(&full, None).is_ok());
        let over = vec![map[0]; zero_page::E820_MAX_ENTRIES + 1];
        assert!(matches!(
            zero_page(&over, None),
            Err(Error::TooManyE820 { count: 129 })
        ));
    }

    #[test]
    fn cmdline_limits() {
        assert_eq!(cmdline_bytes("").expect("empty"), b"\0");
        let longest = "x".repeat(abi::CMDLINE_MAX - 1);
        let bytes = cmdline_bytes(&longest).expect("fits");
        assert_eq!(bytes.len(), abi::CMDLINE_MAX);
        assert_eq!(bytes.last(), Some(&0));
        let too_long = "x".repeat(abi::CMDLINE_MAX);
        let err = cmdline_bytes(&too_long).unwrap_err();
        assert!(matches!(
            err,
            Error::CmdlineTooLong {
                len: 2048,
                max: 2047
            }
        ));
        assert_eq!(
            err.to_string(),
            "the kernel command line is 2048 bytes long, at most 2047 fit"
        );
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
        // Multi-byte characters count as bytes.
        assert!(cmdline_bytes(&"é".repeat(1024)).is_err());
    }
}
