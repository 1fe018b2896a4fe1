//! Raw access to `/dev/lguest`: every call returns the syscall's result exactly (`Ok(bytes)` or the
//! errno), never retries, and is guarded by the watchdog.

use std::ffi::c_void;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use lg_core::abi::{self, lhreq};
use lg_core::errno::Errno;
use lg_core::protocol::InitArgs;
use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};

use crate::model::Limits;
use crate::watchdog::{self, OP_TIMEOUT};

/// The result of one `write()` or `read()`: the byte count, or the errno.
pub type Outcome = Result<usize, Errno>;

pub const DEFAULT_DEVICE: &str = "/dev/lguest";

/// Guest entry point used by every valid INITIALIZE: canonical and in the lower half, so it cannot
/// fall in the switcher's (kernel-half) range, whose exact place lgprobe does not know.
pub const GOOD_ENTRY: u64 = 0x100_0000;

/// Size of the guest memory mapped for valid INITIALIZEs.
pub const GUEST_PAGES: u64 = 256;

/// The device path: `/dev/lguest`, or `$LGPROBE_DEVICE` if set.
pub fn device_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| std::env::var("LGPROBE_DEVICE").unwrap_or_else(|_| DEFAULT_DEVICE.into()))
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

/// Open the device read-write.
pub fn open() -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDWR | OFlags::CLOEXEC;
    rustix::fs::open(device_path(), flags, Mode::empty()).map_err(errno)
}

/// Open the device, for a check: a failure becomes the check's detail.
pub fn fresh() -> Result<OwnedFd, String> {
    open().map_err(|e| format!("open {}: {}", device_path(), crate::report::errno_name(e)))
}

pub fn dup(fd: impl AsFd) -> Result<OwnedFd, String> {
    rustix::io::dup(fd).map_err(|e| format!("dup: {e}"))
}

/// Little-endian encoding of request words.
pub fn bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// One `write()` that must not block.
pub fn write(fd: impl AsFd, buf: &[u8]) -> Outcome {
    write_blocking(fd, buf, "write", OP_TIMEOUT)
}

pub fn write_words(fd: impl AsFd, words: &[u64]) -> Outcome {
    write(fd, &bytes(words))
}

/// One `write()` that may block (BREAK 1) for at most `timeout` before the watchdog aborts.
pub fn write_blocking(fd: impl AsFd, buf: &[u8], what: &str, timeout: Duration) -> Outcome {
    let _guard = watchdog::arm(
        format!("{what} ({} bytes) to {}", buf.len(), device_path()),
        timeout,
    );
    rustix::io::write(fd, buf).map_err(errno)
}

/// `write(fd, ptr, len)` from an arbitrary, possibly invalid, address: the EFAULT checks. Safe:
/// the kernel validates `ptr`, and Rust never dereferences it.
pub fn write_raw(fd: impl AsFd, ptr: *const u8, len: usize) -> Outcome {
    let _guard = watchdog::arm(format!("write from {ptr:p} ({len} bytes)"), OP_TIMEOUT);
    // SAFETY: write(2) only reads `len` bytes at `ptr` in the kernel, which reports a bad
    // address as EFAULT; no Rust reference to that memory is ever made.
    let r = unsafe { libc::write(fd.as_fd().as_raw_fd(), ptr.cast(), len) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        Err(Errno(e.raw_os_error().unwrap_or(0)))
    } else {
        Ok(r as usize)
    }
}

/// The result of one `read()`: the bytes read, or the errno.
pub type ReadOutcome = Result<Vec<u8>, Errno>;

/// A read buffer that holds any record whole (a `DEAD` record is at most 16 + 256 bytes).
pub const READ_BUF: usize = 512;

/// One `read()` into a [`READ_BUF`]-byte buffer: the byte count, or the errno.
pub fn read(fd: impl AsFd) -> Outcome {
    read_len(fd, READ_BUF).map(|b| b.len())
}

/// One `read()` into a `len`-byte buffer: the bytes read, or the errno.
pub fn read_len(fd: impl AsFd, len: usize) -> ReadOutcome {
    let _guard = watchdog::arm(
        format!("read ({len} bytes) from {}", device_path()),
        OP_TIMEOUT,
    );
    let mut buf = vec![0u8; len];
    let n = rustix::io::read(fd, &mut buf[..]).map_err(errno)?;
    buf.truncate(n);
    Ok(buf)
}

/// `read(fd, ptr, len)` into an arbitrary, possibly invalid, address: the EFAULT checks. Safe:
/// the kernel validates `ptr`, and Rust never dereferences it.
pub fn read_raw(fd: impl AsFd, ptr: *mut u8, len: usize) -> Outcome {
    let _guard = watchdog::arm(format!("read into {ptr:p} ({len} bytes)"), OP_TIMEOUT);
    // SAFETY: read(2) only writes `len` bytes at `ptr` in the kernel, which reports a bad address
    // as EFAULT; no Rust reference to that memory is ever made.
    let r = unsafe { libc::read(fd.as_fd().as_raw_fd(), ptr.cast(), len) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        Err(Errno(e.raw_os_error().unwrap_or(0)))
    } else {
        Ok(r as usize)
    }
}

/// The seven words of an INITIALIZE write.
pub fn init_words(a: &InitArgs) -> [u64; 7] {
    [
        lhreq::INITIALIZE,
        a.abi_version,
        a.mem_base,
        a.pfn_limit,
        a.entry,
        a.cr3,
        a.boot_params,
    ]
}

/// Valid INITIALIZE arguments for guest memory `mem`.
pub fn good_args(mem: &Mapping) -> InitArgs {
    InitArgs {
        abi_version: abi::VERSION,
        mem_base: mem.base(),
        pfn_limit: mem.pages(),
        entry: GOOD_ENTRY,
        cr3: 0,
        boot_params: if mem.pages() > 1 { abi::PAGE_SIZE } else { 0 },
    }
}

/// Open a fresh fd and INITIALIZE it from this thread (which becomes the owner).
pub fn ready(mem: &Mapping) -> Result<OwnedFd, String> {
    let fd = fresh()?;
    match write_words(&fd, &init_words(&good_args(mem))) {
        Ok(56) => Ok(fd),
        other => Err(format!(
            "setup: valid INITIALIZE gave {}",
            crate::report::show(other)
        )),
    }
}

/// An anonymous private mapping, unmapped on drop.
pub struct Mapping {
    addr: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is only an address range handed to the kernel; lgprobe never accesses it
// through Rust references from several threads.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `len` bytes anywhere, `MAP_NORESERVE`.
    pub fn anon(len: usize, prot: ProtFlags) -> Result<Mapping, String> {
        Self::map(std::ptr::null_mut(), len, prot, MapFlags::empty())
    }

    /// `len` bytes exactly at `addr` (`MAP_FIXED_NOREPLACE`).
    pub fn at(addr: u64, len: usize, prot: ProtFlags) -> Result<Mapping, String> {
        Self::map(addr as *mut c_void, len, prot, MapFlags::FIXED_NOREPLACE)
    }

    fn map(
        hint: *mut c_void,
        len: usize,
        prot: ProtFlags,
        extra: MapFlags,
    ) -> Result<Self, String> {
        let flags = MapFlags::PRIVATE | MapFlags::NORESERVE | extra;
        // SAFETY: a new anonymous mapping; with FIXED_NOREPLACE the kernel refuses rather than
        // replace an existing mapping.
        let addr = unsafe { rustix::mm::mmap_anonymous(hint, len, prot, flags) }
            .map_err(|e| format!("mmap {len} bytes at {hint:p}: {e}"))?;
        if !hint.is_null() && addr != hint {
            // Kernels before 4.17 treat FIXED_NOREPLACE as a hint.
            drop(Mapping { addr, len });
            return Err(format!("mmap at {hint:p} landed at {addr:p}"));
        }
        Ok(Mapping { addr, len })
    }

    /// One page at `hint` if the kernel takes the hint, else anywhere.
    fn anon_hint(hint: *mut c_void) -> Option<Mapping> {
        let flags = MapFlags::PRIVATE | MapFlags::NORESERVE;
        let len = abi::PAGE_SIZE as usize;
        // SAFETY: a new anonymous mapping; a plain hint never replaces anything.
        let addr = unsafe { rustix::mm::mmap_anonymous(hint, len, ProtFlags::empty(), flags) };
        addr.ok().map(|addr| Mapping { addr, len })
    }

    /// Guest memory for valid INITIALIZEs.
    pub fn guest() -> Result<Mapping, String> {
        Self::anon(
            (GUEST_PAGES * abi::PAGE_SIZE) as usize,
            ProtFlags::READ | ProtFlags::WRITE,
        )
    }

    pub fn base(&self) -> u64 {
        self.addr as u64
    }

    pub fn pages(&self) -> u64 {
        self.len as u64 / abi::PAGE_SIZE
    }

    pub fn ptr(&self) -> *const u8 {
        self.addr.cast()
    }

    pub fn mut_ptr(&self) -> *mut u8 {
        self.addr.cast()
    }

    /// Make page `page` of the mapping inaccessible.
    pub fn protect_none(&self, page: usize) -> Result<(), String> {
        let p = self.addr.wrapping_byte_add(page * abi::PAGE_SIZE as usize);
        // SAFETY: `p` is a page inside our own mapping, which Rust never references.
        unsafe { rustix::mm::mprotect(p, abi::PAGE_SIZE as usize, MprotectFlags::empty()) }
            .map_err(|e| format!("mprotect: {e}"))
    }

    /// Fill the start of the mapping with `data` (it must be readable and writable there).
    pub fn fill(&self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= self.len);
        // SAFETY: in bounds (checked above) of a live, writable mapping nothing else references.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.addr.cast::<u8>().add(offset),
                data.len(),
            )
        };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we created this mapping and nothing refers to it any more.
        let _ = unsafe { rustix::mm::munmap(self.addr, self.len) };
    }
}

/// What the module's INITIALIZE checks depend on, as far as lgprobe can find out.
pub fn host() -> &'static Limits {
    static HOST: OnceLock<Limits> = OnceLock::new();
    HOST.get_or_init(|| Limits {
        user_top: if five_level_paging() {
            (1 << 56) - abi::PAGE_SIZE
        } else {
            (1 << 47) - abi::PAGE_SIZE
        },
        switcher: switcher_from_env(),
    })
}

/// With 5-level paging, a mapping hinted above 47 bits is placed there; with 4 levels the hint is
/// out of range and ignored. (The module checks against `TASK_SIZE_MAX`, which differs.)
fn five_level_paging() -> bool {
    let hint = (1u64 << 52) as *mut c_void;
    match Mapping::anon_hint(hint) {
        Some(m) => m.base() >= 1 << 47,
        None => false,
    }
}

/// `LGPROBE_SWITCHER=START:END` (hex or decimal): the switcher's guest-virtual range, if known.
/// Without it, entry points in the kernel half are accepted either way.
fn switcher_from_env() -> Option<(u64, u64)> {
    let v = std::env::var("LGPROBE_SWITCHER").ok()?;
    let (a, b) = v.split_once([':', '-'])?;
    Some((parse_u64(a)?, parse_u64(b)?))
}

/// Decimal, or hex with a `0x` prefix.
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}
