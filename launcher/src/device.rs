//! `/dev/lguest`, the hypervisor module's only interface.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::Error;

pub const PATH: &str = "/dev/lguest";

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
