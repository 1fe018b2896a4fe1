//! Guest "physical" memory: one anonymous mapping in the launcher, guest-physical 0 at its start.
//! RAM comes first, then the device pages (docs/abi.md §3.4): one mapping for all of it, so that
//! `mem_base + gpa` is valid for every guest-physical address the module accepts. A sharenet
//! device's page is then replaced, inside that mapping, by a shared mapping of its file
//! ([`GuestMemory::map_shared_page`]).
//!
//! The module reaches it through the launcher's address space (`mem_base` in `LHREQ_INITIALIZE`),
//! so it must stay mapped for as long as `/dev/lguest` is open: drop the device first.
//!
//! vm-memory does the mapping and the bounds-checked copies; [`GuestMemory`] adds the one-region
//! layout we use and errors that name the guest-physical range.

use std::io;
use std::os::fd::BorrowedFd;

use rustix::mm::{MapFlags, ProtFlags};

use vm_memory::mmap::MmapRegionError;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, GuestRegionMmap,
    MmapRegion, ReadVolatile,
};

use crate::error::Error;
use lg_core::abi::PAGE_SIZE;

/// A guest-physical range that is not inside guest memory (or whose end overflows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    pub gpa: u64,
    pub len: u64,
    pub size: u64,
}

/// What went wrong copying into guest memory.
#[derive(Debug)]
pub enum MemError {
    OutOfRange(OutOfRange),
    /// Reading the source (a kernel or initrd file) failed part-way.
    Io(io::Error),
}

/// The guest's memory: `size` bytes of RAM, guest-physical `[0, size)`, followed by the device
/// pages up to `limit`.
pub struct GuestMemory {
    mem: GuestMemoryMmap,
    size: u64,
    limit: u64,
}

impl GuestMemory {
    /// RAM only (no device pages).
    #[cfg(test)]
    pub fn new(size: u64) -> Result<GuestMemory, Error> {
        GuestMemory::with_device_pages(size, 0)
    }

    /// Maps `size` bytes of RAM (a non-zero whole number of pages) and `device_pages` pages above
    /// it, all zeroed, private and anonymous. `MmapRegion::new` maps with `PROT_READ | PROT_WRITE`
    /// and `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`: pages cost nothing until the guest
    /// touches them, so a large guest does not need the host to have that much free at start.
    pub fn with_device_pages(size: u64, device_pages: u64) -> Result<GuestMemory, Error> {
        let fail = |err: io::Error| Error::GuestMemory { size, err };
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
            return Err(fail(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        let limit = device_pages
            .checked_mul(PAGE_SIZE)
            .and_then(|d| d.checked_add(size))
            .ok_or_else(|| fail(io::ErrorKind::OutOfMemory.into()))?;
        let len = usize::try_from(limit).map_err(|_| fail(io::ErrorKind::OutOfMemory.into()))?;
        let region = MmapRegion::<()>::new(len).map_err(|e| match e {
            MmapRegionError::Mmap(err) => fail(err),
            other => fail(io::Error::other(other)),
        })?;
        let region = GuestRegionMmap::new(region, GuestAddress(0))
            .ok_or_else(|| fail(io::ErrorKind::OutOfMemory.into()))?;
        let mem =
            GuestMemoryMmap::from_regions(vec![region]).map_err(|e| fail(io::Error::other(e)))?;
        Ok(GuestMemory { mem, size, limit })
    }

    /// Size of RAM in bytes (guest-physical addresses `[0, size)`): where kernels and initrds go.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// End of all guest-physical memory, RAM and device pages: `pfn_limit * 4096`.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Replaces the device page at `gpa` (above RAM, page aligned) by a shared mapping of the
    /// first page of `file`: the guest and every other launcher mapping that file then see the
    /// same page, and lg.ko matches DMA keys in it by file and offset (docs/abi.md §3).
    pub fn map_shared_page(&self, gpa: u64, file: BorrowedFd<'_>) -> io::Result<()> {
        let inside = gpa >= self.size
            && gpa.is_multiple_of(PAGE_SIZE)
            && gpa
                .checked_add(PAGE_SIZE)
                .is_some_and(|end| end <= self.limit);
        if !inside {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let addr = self
            .mem
            .get_host_address(GuestAddress(gpa))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `[addr, addr + 4096)` lies inside the one region vm-memory mapped for us (checked
        // above), which stays mapped, with the same size and protection, for as long as `self`
        // lives: MAP_FIXED only swaps the backing of that page. Nothing holds a Rust reference into
        // guest memory (every access is a volatile copy through vm-memory), so no reference sees
        // its contents change underneath it. When the region is unmapped the page goes with it.
        let mapped = unsafe {
            rustix::mm::mmap(
                addr.cast(),
                PAGE_SIZE as usize,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                file,
                0,
            )
        }?;
        if mapped != addr.cast() {
            // MAP_FIXED never moves a mapping; anything else is a kernel we do not understand.
            return Err(io::Error::other("mmap(MAP_FIXED) mapped elsewhere"));
        }
        Ok(())
    }

    /// The launcher virtual address of guest-physical 0 (`mem_base`), page aligned.
    pub fn host_base(&self) -> u64 {
        // Guest-physical 0 is always inside the one region.
        self.mem
            .get_host_address(GuestAddress(0))
            .map_or(0, |p| p as u64)
    }

    /// The vm-memory view, for code that writes through vm-memory traits (linux-loader).
    pub fn backend(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// `Ok` when `[gpa, gpa + len)` lies inside guest memory (RAM or device pages).
    pub fn check_range(&self, gpa: u64, len: u64) -> Result<(), OutOfRange> {
        match gpa.checked_add(len) {
            Some(end) if end <= self.limit => Ok(()),
            _ => Err(OutOfRange {
                gpa,
                len,
                size: self.limit,
            }),
        }
    }

    pub fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), MemError> {
        self.check_range(gpa, bytes.len() as u64)
            .map_err(MemError::OutOfRange)?;
        self.mem
            .write_slice(bytes, GuestAddress(gpa))
            .map_err(|e| self.backend_error(gpa, bytes.len() as u64, e))
    }

    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check_range(gpa, buf.len() as u64)
            .map_err(MemError::OutOfRange)?;
        self.mem
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|e| self.backend_error(gpa, buf.len() as u64, e))
    }

    /// Zeroes `[gpa, gpa + len)`.
    pub fn zero(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        self.check_range(gpa, len).map_err(MemError::OutOfRange)?;
        const CHUNK: u64 = 64 * 1024;
        let zeros = [0u8; CHUNK as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            // In range: checked above, and n <= CHUNK.
            self.write(gpa + done, &zeros[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// Copies exactly `len` bytes from `src` (at its current position) to `[gpa, gpa + len)`.
    pub fn load_from<R: ReadVolatile>(
        &self,
        gpa: u64,
        src: &mut R,
        len: u64,
    ) -> Result<(), MemError> {
        self.check_range(gpa, len).map_err(MemError::OutOfRange)?;
        let count = usize::try_from(len).map_err(|_| {
            MemError::OutOfRange(OutOfRange {
                gpa,
                len,
                size: self.limit,
            })
        })?;
        self.mem
            .read_exact_volatile_from(GuestAddress(gpa), src, count)
            .map_err(|e| self.backend_error(gpa, len, e))
    }

    fn backend_error(&self, gpa: u64, len: u64, err: GuestMemoryError) -> MemError {
        match err {
            GuestMemoryError::IOError(e) => MemError::Io(e),
            // A source that ended early.
            GuestMemoryError::PartialBuffer { .. } => {
                MemError::Io(io::Error::from(io::ErrorKind::UnexpectedEof))
            }
            // Only out-of-range accesses fail otherwise, and check_range caught those.
            _ => MemError::OutOfRange(OutOfRange {
                gpa,
                len,
                size: self.limit,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn fresh_memory_is_zero_and_page_aligned() {
        let mem = GuestMemory::new(2 * MIB).expect("map");
        assert_eq!(mem.size(), 2 * MIB);
        assert_ne!(mem.host_base(), 0);
        assert_eq!(mem.host_base() % PAGE_SIZE, 0);
        let mut buf = [0xffu8; 16];
        mem.read(2 * MIB - 16, &mut buf).expect("read");
        assert_eq!(buf, [0; 16]);
    }

    #[test]
    fn accesses_are_bounds_checked() {
        let mem = GuestMemory::new(2 * MIB).expect("map");
        mem.write(0x1000, b"hello").expect("write");
        let mut buf = [0u8; 5];
        mem.read(0x1000, &mut buf).expect("read");
        assert_eq!(&buf, b"hello");
        assert!(matches!(
            mem.write(2 * MIB - 2, b"abc"),
            Err(MemError::OutOfRange(OutOfRange { gpa, len: 3, size })) if gpa == 2 * MIB - 2 && size == 2 * MIB
        ));
        assert!(matches!(
            mem.read(u64::MAX, &mut buf),
            Err(MemError::OutOfRange(_))
        ));
        assert!(mem.check_range(u64::MAX - 1, 4).is_err());
        assert!(mem.check_range(0, 2 * MIB).is_ok());
        assert!(mem.check_range(2 * MIB, 0).is_ok());
        assert!(mem.zero(MIB, MIB + 1).is_err());
    }

    #[test]
    fn zero_and_load_from() {
        let mem = GuestMemory::new(2 * MIB).expect("map");
        mem.write(MIB, &[0xaa; 200_000]).expect("fill");
        mem.zero(MIB + 10, 199_980).expect("zero");
        let mut buf = vec![0u8; 200_000];
        mem.read(MIB, &mut buf).expect("read");
        assert!(buf[..10].iter().all(|&b| b == 0xaa));
        assert!(buf[10..199_990].iter().all(|&b| b == 0));
        assert!(buf[199_990..].iter().all(|&b| b == 0xaa));

        let mut src: &[u8] = b"0123456789";
        mem.load_from(0x3000, &mut src, 4).expect("load");
        let mut got = [0u8; 4];
        mem.read(0x3000, &mut got).expect("read");
        assert_eq!(&got, b"0123");
        let mut short: &[u8] = b"ab";
        assert!(matches!(
            mem.load_from(0x3000, &mut short, 4),
            Err(MemError::Io(_))
        ));
    }

    #[test]
    fn device_pages_follow_ram() {
        let mem = GuestMemory::with_device_pages(2 * MIB, 3).expect("map");
        assert_eq!(mem.size(), 2 * MIB);
        assert_eq!(mem.limit(), 2 * MIB + 3 * PAGE_SIZE);
        mem.write(2 * MIB + 2 * PAGE_SIZE, b"device")
            .expect("device pages are memory");
        assert!(mem.check_range(2 * MIB, 3 * PAGE_SIZE).is_ok());
        assert!(mem.check_range(2 * MIB, 3 * PAGE_SIZE + 1).is_err());
    }

    /// A file's page mapped over a device page: writes through either side show on the other,
    /// RAM around it is untouched, and the mapping is shared (what lg.ko's key matching needs).
    #[test]
    fn shared_page_replaces_a_device_page() {
        use std::io::{Read, Seek, SeekFrom, Write};
        use std::os::fd::AsFd;
        let path = std::env::temp_dir().join(format!("lguest-mem-shared-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        file.write_all(&[0u8; PAGE_SIZE as usize]).expect("fill");
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.write_all(b"from the file").expect("write");
        let mem = GuestMemory::with_device_pages(2 * MIB, 2).expect("map");
        mem.write(2 * MIB - 4, b"ram!").expect("ram");
        let gpa = 2 * MIB + PAGE_SIZE;
        // Not RAM, not unaligned, not past the end.
        assert!(mem.map_shared_page(0, file.as_fd()).is_err());
        assert!(mem.map_shared_page(gpa + 8, file.as_fd()).is_err());
        assert!(mem.map_shared_page(gpa + PAGE_SIZE, file.as_fd()).is_err());
        mem.map_shared_page(gpa, file.as_fd()).expect("mmap");
        let _ = std::fs::remove_file(&path);
        let mut got = [0u8; 13];
        mem.read(gpa, &mut got).expect("read");
        assert_eq!(&got, b"from the file");
        mem.write(gpa + 100, b"from the guest").expect("write");
        let mut back = vec![0u8; 114];
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.read_exact(&mut back).expect("read back");
        assert_eq!(&back[100..], b"from the guest");
        let mut ram = [0u8; 4];
        mem.read(2 * MIB - 4, &mut ram).expect("ram");
        assert_eq!(&ram, b"ram!");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let start = format!("{:x}-", mem.host_base() + gpa);
        let header = smaps
            .lines()
            .find(|l| l.starts_with(&start))
            .expect("the page is its own mapping");
        assert_eq!(header.split_whitespace().nth(1), Some("rw-s"), "{header}");
    }

    #[test]
    fn refuses_bad_sizes() {
        assert!(GuestMemory::new(0).is_err());
        assert!(GuestMemory::new(4097).is_err());
        // More than any address space: mmap itself fails, and says why in one line.
        let err = GuestMemory::new(1 << 62).err().expect("too big");
        assert_eq!(
            err.to_string(),
            "cannot map 4294967296g of guest memory: Cannot allocate memory"
        );
    }

    /// The mapping is private and anonymous, and MAP_NORESERVE when the host honours it.
    #[test]
    fn mapping_flags() {
        let mem = GuestMemory::new(4 * MIB).expect("map");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let start = format!("{:x}-", mem.host_base());
        let block: Vec<&str> = smaps
            .lines()
            .skip_while(|l| !l.starts_with(&start))
            .take_while(|l| !l.starts_with("VmFlags"))
            .collect();
        let header = block.first().expect("our mapping is listed");
        let fields: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(fields[1], "rw-p", "{header}");
        assert_eq!(fields[4], "0", "anonymous: no inode: {header}");
        let after = smaps
            .lines()
            .skip_while(|l| !l.starts_with(&start))
            .find(|l| l.starts_with("VmFlags"))
            .expect("VmFlags");
        let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory")
            .unwrap_or_default()
            .trim()
            .to_owned();
        // With overcommit_memory=2 the kernel ignores MAP_NORESERVE.
        if overcommit != "2" {
            assert!(after.split_whitespace().any(|f| f == "nr"), "{after}");
        }
    }
}
