//! `/dev/lguest`, the hypervisor module's only interface (docs/abi.md §1).
//!
//! The run loop talks to it through [`LguestDevice`], so that it can be tested against a fake.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::Error;
use lg_core::abi::{self, lhreq};

pub const PATH: &str = "/dev/lguest";

/// The arguments of `LHREQ_INITIALIZE` (the ABI version is always ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitArgs {
    /// Launcher virtual address of guest-physical 0.
    pub mem_base: u64,
    /// Guest pages: guest-physical `[0, pfn_limit * 4096)`.
    pub pfn_limit: u64,
    /// Guest-virtual address of the first instruction.
    pub entry: u64,
    /// Guest-physical address of the initial PML4.
    pub cr3: u64,
    /// Guest-physical address of the zero page.
    pub boot_params: u64,
}

/// Request word, ABI version and five arguments.
const INIT_WORDS: usize = 7;
const INIT_BYTES: usize = INIT_WORDS * 8;
const _: () = assert!(INIT_BYTES == abi::MAX_WRITE);

impl InitArgs {
    /// The `write()` that creates the guest: little-endian `u64` words.
    pub fn to_bytes(self) -> [u8; INIT_BYTES] {
        let words: [u64; INIT_WORDS] = [
            lhreq::INITIALIZE,
            abi::VERSION,
            self.mem_base,
            self.pfn_limit,
            self.entry,
            self.cr3,
            self.boot_params,
        ];
        let mut bytes = [0u8; INIT_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }
}

/// What the launcher needs from `/dev/lguest`.
pub trait LguestDevice {
    /// `LHREQ_INITIALIZE`: create the guest.
    fn initialize(&mut self, args: &InitArgs) -> Result<(), Error>;
    /// One `read()`: runs the guest until it has a record for us, which lands in `buf`; returns
    /// its length. Errors are raw, for the run loop to sort out (`EINTR`, `EAGAIN`, ...).
    fn read_record(&mut self, buf: &mut [u8]) -> Result<usize, Errno>;
    /// `LHREQ_GETDMA(key)`: claim a free receive buffer the guest bound at `key`; its
    /// guest-physical address. `ENOENT`: nothing bound there; `ENOSPC`: every buffer is in use.
    fn get_dma(&mut self, key: u64) -> Result<u64, Errno>;
    /// `LHREQ_IRQ(irq)`: make virtual interrupt `irq` pending.
    fn irq(&mut self, irq: u32) -> Result<(), Errno>;
    /// `LHREQ_BREAK(0)`: end a break, releasing the waker thread blocked in its `BREAK 1`.
    fn break_off(&mut self) -> Result<(), Errno>;
}

/// One two-word request (`GETDMA`, `IRQ`, `BREAK`); the `write()`'s return value. A signal that
/// interrupts it before anything happened just asks again.
pub fn request(fd: BorrowedFd<'_>, req: u64, arg: u64) -> Result<u64, Errno> {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&req.to_le_bytes());
    bytes[8..].copy_from_slice(&arg.to_le_bytes());
    loop {
        match rustix::io::write(fd, &bytes) {
            Ok(n) => return Ok(n as u64),
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

/// The one-line explanation of a failed `LHREQ_INITIALIZE`.
pub fn initialize_error(errno: Errno) -> Error {
    match errno {
        Errno::PROTO => Error::InitVersion,
        Errno::INVAL => Error::InitRefused,
        Errno::BUSY => Error::InitBusy,
        Errno::NOSYS => Error::InitNotImplemented,
        other => Error::InitFailed(other),
    }
}

/// An open `/dev/lguest`: one guest's worth of hypervisor state lives behind this file.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
}

impl Device {
    /// Opens `/dev/lguest` read-write, explaining the usual failures (module not loaded, not root).
    pub fn open() -> Result<Device, Error> {
        open_path(Path::new(PATH))
    }
}

impl LguestDevice for Device {
    fn initialize(&mut self, args: &InitArgs) -> Result<(), Error> {
        let bytes = args.to_bytes();
        loop {
            match rustix::io::write(&self.fd, &bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => return Err(Error::InitShortWrite(n)),
                // Interrupted before anything happened: nothing to undo, so ask again.
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(initialize_error(errno)),
            }
        }
    }

    fn read_record(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        rustix::io::read(&self.fd, buf)
    }

    fn get_dma(&mut self, key: u64) -> Result<u64, Errno> {
        request(self.fd.as_fd(), lhreq::GETDMA, key)
    }

    fn irq(&mut self, irq: u32) -> Result<(), Errno> {
        request(self.fd.as_fd(), lhreq::IRQ, u64::from(irq)).map(drop)
    }

    fn break_off(&mut self) -> Result<(), Errno> {
        request(self.fd.as_fd(), lhreq::BREAK, 0).map(drop)
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn open_path(path: &Path) -> Result<Device, Error> {
    rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map(|fd| Device { fd })
        .map_err(open_error)
}

fn open_error(errno: Errno) -> Error {
    match errno {
        // lg.ko registers a misc device, so the node only exists while the module is loaded.
        Errno::NOENT => Error::DeviceMissing,
        // A node left behind (e.g. a static /dev) with no driver behind it.
        Errno::NODEV | Errno::NXIO => Error::DeviceNoDriver(errno.into()),
        Errno::ACCESS | Errno::PERM => Error::DevicePermission,
        other => Error::DeviceOpen(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_explained() {
        assert!(matches!(open_error(Errno::NOENT), Error::DeviceMissing));
        assert!(matches!(open_error(Errno::ACCESS), Error::DevicePermission));
        assert!(matches!(open_error(Errno::PERM), Error::DevicePermission));
        let e = open_error(Errno::NODEV);
        assert!(matches!(e, Error::DeviceNoDriver(_)));
        assert_eq!(
            e.to_string(),
            "cannot open /dev/lguest: No such device: is lg.ko loaded? run: sudo modprobe lg"
        );
        let e = open_error(Errno::BUSY);
        assert_eq!(
            e.to_string(),
            "cannot open /dev/lguest: Device or resource busy"
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_FAILURE);
    }

    #[test]
    fn initialize_bytes() {
        let args = InitArgs {
            mem_base: 0x7f00_0000_0000,
            pfn_limit: 16384,
            entry: 0xffff_ffff_8100_0000,
            cr3: 0x0100_0000,
            boot_params: abi::ZERO_PAGE_GPA,
        };
        let bytes = args.to_bytes();
        assert_eq!(bytes.len(), 56);
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        assert_eq!(
            words,
            [
                0,
                1,
                0x7f00_0000_0000,
                16384,
                0xffff_ffff_8100_0000,
                0x0100_0000,
                0x1000
            ]
        );
    }

    #[test]
    fn initialize_errors_are_explained() {
        assert_eq!(
            initialize_error(Errno::PROTO).to_string(),
            "lg.ko speaks another lguest ABI than this launcher (ABI 1): rebuild them together"
        );
        assert_eq!(
            initialize_error(Errno::INVAL).to_string(),
            "lg.ko refused the guest (bad memory layout or entry point)"
        );
        assert!(matches!(initialize_error(Errno::BUSY), Error::InitBusy));
        assert_eq!(
            initialize_error(Errno::NOSYS).to_string(),
            "lg.ko cannot run guests yet: LHREQ_INITIALIZE is not implemented (ENOSYS)"
        );
        assert_eq!(
            initialize_error(Errno::FAULT).to_string(),
            "LHREQ_INITIALIZE failed: Bad address (EFAULT)"
        );
        assert_eq!(initialize_error(Errno::NOMEM).exit_code(), 1);
    }

    /// A plain file stands in for the device: the write goes through whole.
    #[test]
    fn initialize_writes_one_request() {
        let path =
            std::env::temp_dir().join(format!("lguest-device-test-{}-init", std::process::id()));
        std::fs::write(&path, b"").expect("create");
        let device = open_path(&path);
        let mut device = device.expect("a writable file opens");
        let args = InitArgs {
            mem_base: 0x1000,
            pfn_limit: 1,
            entry: 2,
            cr3: 3,
            boot_params: 4,
        };
        device.initialize(&args).expect("write");
        let written = std::fs::read(&path).expect("read back");
        let _ = std::fs::remove_file(&path);
        assert_eq!(written, args.to_bytes());
    }

    /// Requests are one 16-byte write each: request word, argument.
    #[test]
    fn requests_are_two_words() {
        let path =
            std::env::temp_dir().join(format!("lguest-device-test-{}-req", std::process::id()));
        std::fs::write(&path, b"").expect("create");
        let mut device = open_path(&path).expect("opens");
        assert_eq!(device.get_dma(0x4000_0008), Ok(16));
        device.irq(3).expect("irq");
        device.break_off().expect("break");
        let written = std::fs::read(&path).expect("read back");
        let _ = std::fs::remove_file(&path);
        let words: Vec<u64> = written
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        assert_eq!(words, [1, 0x4000_0008, 2, 3, 3, 0]);
    }

    #[test]
    fn missing_node_is_reported_as_missing() {
        let path =
            std::env::temp_dir().join(format!("lguest-device-test-{}-missing", std::process::id()));
        assert!(matches!(open_path(&path), Err(Error::DeviceMissing)));
    }

    #[test]
    fn opens_read_write() {
        let path =
            std::env::temp_dir().join(format!("lguest-device-test-{}-file", std::process::id()));
        std::fs::write(&path, b"").expect("create");
        let device = open_path(&path);
        let _ = std::fs::remove_file(&path);
        let device = device.expect("a writable file opens");
        let flags = rustix::fs::fcntl_getfl(device.as_fd()).expect("getfl");
        assert!(flags.contains(OFlags::RDWR));
    }
}
