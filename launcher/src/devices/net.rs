//! Network devices (type 2, docs/abi.md §3.4): `--tunnet` (a host TAP device) and `--sharenet`
//! (a file shared with other guests).
//!
//! The device's page is 512 slots of 8 bytes, `{mac[6], flags, reserved}`, one per interface on
//! that network; `features & 0x1ff` is the guest's own slot. A guest receives in buffers bound at
//! `page + 8 * its slot` and transmits by sending to `page + 8 * n` for every slot `n` the frame
//! is for.
//!
//! - **tunnet**: the page is the guest's private memory. Slot 0 is the host's TAP device
//!   (promiscuous, so every frame the guest sends is also sent to it), slot 1 the guest's. A send
//!   to slot 0 is a private key, so it comes to us as a DMA record and we write the frame to the
//!   TAP device; a frame the TAP device gives us goes into a buffer the guest bound at slot 1.
//! - **sharenet**: the page is the first page of FILE, mapped shared into guest memory, so every
//!   guest on FILE sees the same slots and lg.ko matches their keys by file offset: frames go from
//!   guest to guest inside the kernel and the launcher never sees one. Its only work is to claim a
//!   free slot: a write lock on byte `n` of FILE. It is an open-file-description lock
//!   (`F_OFD_SETLK`), so it belongs to this launcher's open file: another launcher (or another
//!   `--sharenet` of the same file in this one) cannot take it, and it vanishes when the launcher
//!   exits however it exits.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{Opcode, Updater};
use rustix::net::{AddressFamily, SocketType};

use super::{claim, gather, raise, read_u32, scatter, set_used, Problem};
use crate::cli::TunNet;
use crate::device::LguestDevice;
use crate::error::{os_msg, Error, Quoted, Role};
use crate::memory::GuestMemory;
pub use lg_core::abi::dev::net::{
    slot_key, HOST_SLOT, NOCSUM, PROMISC, SLOTS, SLOT_SIZE, TAP_GUEST_SLOT,
};
use lg_core::abi::{NR_IRQS, PAGE_SIZE};
use lg_core::dma::{Dma, GuestMem, MemFault};

/// Frames taken from the TAP device per break, so that a flood cannot starve the guest.
const FRAMES_PER_BREAK: usize = 64;
/// Largest frame the TAP device can hand us (64 KiB: it is bounded by the TAP's MTU).
const MAX_FRAME: usize = 65536;

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The guest's address on a tunnet network by convention: the host's /24 with the next host
/// number (192.168.19.1 gives 192.168.19.2).
pub fn conventional_guest_ip(host: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, d] = host.octets();
    Ipv4Addr::new(a, b, c, d % 254 + 1)
}

/// One network device.
pub struct Net {
    /// Guest-physical address of its page.
    pub page: u64,
    pub irq: u32,
    /// The guest's slot.
    pub slot: u16,
    kind: Kind,
}

enum Kind {
    Tap(Tap),
    Share(Share),
}

/// The host end of a tunnet device.
pub struct Tap {
    /// Non-blocking; `None` after a read error (no more frames from the host).
    fd: Option<OwnedFd>,
    name: String,
    mac: [u8; 6],
    setup: TunNet,
    /// Whether the guest has sent a frame yet (before, dropped input is no news: its interface is
    /// simply not up).
    sent: bool,
    drop_warned: bool,
}

/// A sharenet file whose slot we hold.
pub struct Share {
    file: File,
    path: PathBuf,
}

impl Net {
    /// A tunnet device: a new TAP device set up as `setup` says.
    pub fn tap(setup: &TunNet, page: u64, irq: u32) -> Result<Net, Error> {
        let tap = Tap::create(setup)?;
        Ok(Net {
            page,
            irq,
            slot: TAP_GUEST_SLOT,
            kind: Kind::Tap(tap),
        })
    }

    /// A sharenet device: FILE's first page, mapped over this device's page in `memory`.
    pub fn sharenet(path: &Path, page: u64, irq: u32, memory: &GuestMemory) -> Result<Net, Error> {
        let (file, slot) = open_share(path)?;
        memory
            .map_shared_page(page, file.as_fd())
            .map_err(|err| Error::SharenetMap {
                path: path.to_owned(),
                err,
            })?;
        Ok(Net {
            page,
            irq,
            slot,
            kind: Kind::Share(Share {
                file,
                path: path.to_owned(),
            }),
        })
    }

    pub fn is_tap(&self) -> bool {
        matches!(self.kind, Kind::Tap(_))
    }

    /// The descriptor's `features`: the guest's slot, and no checksums on a sharenet (frames never
    /// leave this host's memory; TAP frames may leave the host).
    pub fn features(&self) -> u16 {
        match self.kind {
            Kind::Tap(_) => self.slot,
            Kind::Share(_) => self.slot | NOCSUM,
        }
    }

    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Tap(t) => {
                let how = match &t.setup {
                    TunNet::Ip(ip) => format!(
                        "{} {ip} (guest is {} by convention)",
                        t.name,
                        conventional_guest_ip(*ip)
                    ),
                    TunNet::Bridge(br) => format!(
                        "{} on bridge {}",
                        t.name,
                        Quoted::new(std::ffi::OsStr::new(br))
                    ),
                };
                format!(
                    "tunnet: {how}, host MAC {}, guest slot {}",
                    mac_text(&t.mac),
                    self.slot
                )
            }
            Kind::Share(s) => format!(
                "sharenet {} slot {}",
                Quoted::new(s.path.as_os_str()),
                self.slot
            ),
        }
    }

    /// The page as the guest first sees it. A tunnet page: the TAP device in slot 0,
    /// promiscuous. A sharenet page is the file's: left alone.
    pub fn init_page(&self, mem: &mut dyn GuestMem) -> Result<(), MemFault> {
        match &self.kind {
            Kind::Tap(t) => {
                let mut slot = [0u8; SLOT_SIZE as usize];
                slot[..6].copy_from_slice(&t.mac);
                slot[6] = PROMISC;
                mem.write(slot_key(self.page, HOST_SLOT), &slot)
            }
            Kind::Share(_) => Ok(()),
        }
    }

    /// What the waker should watch: the TAP device.
    pub fn input_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.kind {
            Kind::Tap(t) => t.fd.as_ref().map(|fd| fd.as_fd()),
            Kind::Share(_) => None,
        }
    }

    /// The guest sent the descriptor at `gpa` to the host's slot: one frame for the TAP device.
    pub fn transmit(&mut self, mem: &mut dyn GuestMem, gpa: u64) -> Problem {
        let Kind::Tap(tap) = &mut self.kind else {
            return None;
        };
        tap.sent = true;
        let frame = match Dma::fetch(mem, gpa) {
            Ok(dma) => gather(mem, &dma),
            Err(bad) => {
                let _ = set_used(mem, gpa, 0);
                return Some(format!("{}: frame from the guest: {bad}", tap.name));
            }
        };
        let Ok(frame) = frame else {
            let _ = set_used(mem, gpa, 0);
            return Some(format!("{}: frame from the guest unreadable", tap.name));
        };
        let Some(fd) = &tap.fd else {
            let _ = set_used(mem, gpa, 0);
            return None;
        };
        match rustix::io::write(fd, &frame) {
            Ok(n) => {
                let _ = set_used(mem, gpa, n as u32);
                None
            }
            // The TAP queue is full: dropped, as a congested wire would.
            Err(Errno::AGAIN) => {
                let _ = set_used(mem, gpa, 0);
                None
            }
            Err(errno) => {
                let _ = set_used(mem, gpa, 0);
                Some(format!(
                    "{}: cannot send a {}-byte frame: {}",
                    tap.name,
                    frame.len(),
                    os_msg(&errno.into())
                ))
            }
        }
    }

    /// Moves the frames waiting on the TAP device into the guest's receive buffers, one irq at
    /// the end. With no free buffer a frame is dropped.
    pub fn receive(
        &mut self,
        mem: &mut dyn GuestMem,
        dev: &mut dyn LguestDevice,
        warn: &mut dyn Write,
    ) -> Result<Problem, Error> {
        let key = slot_key(self.page, self.slot);
        let default_irq = self.irq;
        let Kind::Tap(tap) = &mut self.kind else {
            return Ok(None);
        };
        let mut problem = None;
        let mut irqs = 0u64;
        let mut buf = vec![0u8; MAX_FRAME];
        for _ in 0..FRAMES_PER_BREAK {
            let Some(fd) = &tap.fd else { break };
            let len = match rustix::io::read(fd, &mut buf) {
                Ok(0) | Err(Errno::AGAIN | Errno::INTR) => break,
                Ok(n) => n,
                Err(errno) => {
                    tap.fd = None;
                    problem = Some(format!(
                        "{}: cannot read from it: {}: no more frames from the host",
                        tap.name,
                        os_msg(&errno.into())
                    ));
                    break;
                }
            };
            let frame = &buf[..len];
            let Some(gpa) = claim(dev, key)? else {
                if tap.sent && !tap.drop_warned {
                    tap.drop_warned = true;
                    let _ = writeln!(
                        warn,
                        "lguest: {}: the guest has no free receive buffer: dropping frames from \
                         the host (reported once)",
                        tap.name
                    );
                }
                continue;
            };
            let irq = match read_u32(mem, gpa) {
                Ok(irq) if u64::from(irq) < NR_IRQS => irq,
                _ => default_irq,
            };
            let placed = match Dma::fetch(mem, gpa) {
                Ok(dma) if dma.total() >= len as u64 => scatter(mem, &dma, frame)
                    .map_err(|_| format!("{}: receive buffer at {gpa:#x} unwritable", tap.name)),
                Ok(dma) => Err(format!(
                    "{}: a {len}-byte frame does not fit the guest's {}-byte receive buffer",
                    tap.name,
                    dma.total()
                )),
                Err(bad) => Err(format!("{}: receive buffer: {bad}", tap.name)),
            };
            match placed {
                Ok(n) => {
                    let _ = set_used(mem, gpa, n as u32);
                    irqs |= 1 << irq;
                }
                Err(why) => {
                    // Dropped; the buffer goes back to the guest unused.
                    let _ = set_used(mem, gpa, 0);
                    problem = Some(why);
                }
            }
        }
        for irq in 0..NR_IRQS as u32 {
            if irqs & (1 << irq) != 0 {
                raise(dev, irq)?;
            }
        }
        Ok(problem)
    }
}

// ------------------------------------------------------------------------------------------------
// sharenet: the file and its slots.
// ------------------------------------------------------------------------------------------------

/// Opens (or creates, 0600, one zero page) a sharenet file and claims a free slot in it, which it
/// clears (a launcher that died may have left its guest's MAC there).
fn open_share(path: &Path) -> Result<(File, u16), Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        // Another launcher may be using it: never truncate.
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|err| Error::CannotOpen {
            role: Role::ShareNet,
            path: path.to_owned(),
            err,
        })?;
    let setup = |err| Error::SharenetSetup {
        path: path.to_owned(),
        err,
    };
    // Only ever grown: another guest may be using a page that is already there.
    let len = file.metadata().map_err(setup)?.len();
    if len < PAGE_SIZE {
        file.set_len(PAGE_SIZE).map_err(setup)?;
    }
    let slot = claim_slot(&file)
        .map_err(|err| Error::SharenetLock {
            path: path.to_owned(),
            err,
        })?
        .ok_or_else(|| Error::SharenetFull {
            path: path.to_owned(),
        })?;
    file.write_all_at(&[0u8; SLOT_SIZE as usize], SLOT_SIZE * u64::from(slot))
        .map_err(setup)?;
    Ok((file, slot))
}

/// Takes the first free slot `1..512` of a sharenet file: a non-blocking write lock on byte
/// `slot`, held by this open file description. `Ok(None)`: all taken.
pub fn claim_slot(file: &File) -> io::Result<Option<u16>> {
    for slot in 1..SLOTS as u16 {
        match lock_byte(file, u64::from(slot), 1) {
            Ok(()) => return Ok(Some(slot)),
            Err(Errno::AGAIN | Errno::ACCESS) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(None)
}

/// A non-blocking open-file-description write lock on `[start, start + len)`.
fn lock_byte(file: &File, start: u64, len: u64) -> Result<(), Errno> {
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::libc;
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start as libc::off_t,
        l_len: len as libc::off_t,
        // Must be 0 for open file description locks.
        l_pid: 0,
    };
    fcntl(file, FcntlArg::F_OFD_SETLK(&lock))
        .map(drop)
        .map_err(|e| Errno::from_raw_os_error(e as i32))
}

impl Drop for Net {
    fn drop(&mut self) {
        // Leave our sharenet slot empty for the next launcher (the guest clears it when its
        // interface goes down; not if it crashed). The lock goes with the file.
        if let Kind::Share(s) = &self.kind {
            let _ = s
                .file
                .write_all_at(&[0u8; SLOT_SIZE as usize], SLOT_SIZE * u64::from(self.slot));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// tunnet: the TAP device.
// ------------------------------------------------------------------------------------------------

const IFNAMSIZ: usize = 16;

/// Linux's `struct ifreq`: an interface name and a 24-byte union (flags, an address, an index).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    data: [u8; 24],
}
const _: () = assert!(core::mem::size_of::<IfReq>() == 40);

impl IfReq {
    /// For interface `name` (at most 15 bytes: the command line checked bridge names).
    fn new(name: &str) -> IfReq {
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            data: [0; 24],
        };
        let n = name.len().min(IFNAMSIZ - 1);
        req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        req
    }

    fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    fn set_short(&mut self, v: u16) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }

    fn short(&self) -> u16 {
        u16::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn set_int(&mut self, v: i32) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }

    fn int(&self) -> i32 {
        i32::from_ne_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
    }

    /// A `struct sockaddr_in` for `ip`.
    fn set_inet(&mut self, ip: Ipv4Addr) {
        self.data = [0; 24];
        self.data[..2].copy_from_slice(&(libc_af_inet()).to_ne_bytes());
        self.data[4..8].copy_from_slice(&ip.octets());
    }

    /// The hardware address of a `struct sockaddr` (after its 2-byte family).
    fn hwaddr(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.data[2..8]);
        mac
    }
}

fn libc_af_inet() -> u16 {
    AddressFamily::INET.as_raw()
}

/// `_IOW('T', 202, int)`.
const TUNSETIFF: Opcode = 0x4004_54ca;
const SIOCGIFFLAGS: Opcode = 0x8913;
const SIOCSIFFLAGS: Opcode = 0x8914;
const SIOCSIFADDR: Opcode = 0x8916;
const SIOCSIFNETMASK: Opcode = 0x891c;
const SIOCGIFHWADDR: Opcode = 0x8927;
const SIOCGIFINDEX: Opcode = 0x8933;
const SIOCBRADDIF: Opcode = 0x89a2;
const IFF_UP: u16 = 0x1;
const IFF_TAP: u16 = 0x0002;
const IFF_NO_PI: u16 = 0x1000;

/// One `struct ifreq` ioctl.
fn ifreq_ioctl<const OP: Opcode>(fd: BorrowedFd<'_>, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: every OP used here (TUNSETIFF and the SIOC* interface requests) takes a pointer to
    // a `struct ifreq`, which `IfReq` is (same size, layout and alignment); the kernel writes at
    // most its 40 bytes.
    unsafe { rustix::ioctl::ioctl(fd, Updater::<OP, IfReq>::new(req)) }.map_err(io::Error::from)
}

impl Tap {
    fn create(setup: &TunNet) -> Result<Tap, Error> {
        let fd = rustix::fs::open(
            "/dev/net/tun",
            OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| Error::TunOpen(e.into()))?;
        let mut req = IfReq::new("tap%d");
        req.set_short(IFF_TAP | IFF_NO_PI);
        ifreq_ioctl::<TUNSETIFF>(fd.as_fd(), &mut req).map_err(Error::TapCreate)?;
        let name = req.name();
        let step = |step: String| {
            let name = name.clone();
            move |err| Error::TapSetup { name, step, err }
        };
        let sock = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)
            .map_err(|e| step("opening a socket to configure it".into())(e.into()))?;
        let sock = sock.as_fd();
        match setup {
            TunNet::Ip(ip) => {
                let mut req = IfReq::new(&name);
                req.set_inet(*ip);
                ifreq_ioctl::<SIOCSIFADDR>(sock, &mut req)
                    .map_err(step(format!("setting its address {ip}")))?;
                let mut req = IfReq::new(&name);
                req.set_inet(Ipv4Addr::new(255, 255, 255, 0));
                ifreq_ioctl::<SIOCSIFNETMASK>(sock, &mut req)
                    .map_err(step("setting its netmask 255.255.255.0".into()))?;
            }
            TunNet::Bridge(bridge) => add_to_bridge(sock, &name, bridge)?,
        }
        let mut req = IfReq::new(&name);
        ifreq_ioctl::<SIOCGIFFLAGS>(sock, &mut req).map_err(step("reading its flags".into()))?;
        let flags = req.short() | IFF_UP;
        req.set_short(flags);
        ifreq_ioctl::<SIOCSIFFLAGS>(sock, &mut req).map_err(step("bringing it up".into()))?;
        let mut req = IfReq::new(&name);
        ifreq_ioctl::<SIOCGIFHWADDR>(sock, &mut req)
            .map_err(step("reading its MAC address".into()))?;
        Ok(Tap {
            fd: Some(fd),
            name,
            mac: req.hwaddr(),
            setup: setup.clone(),
            sent: false,
            drop_warned: false,
        })
    }
}

/// `SIOCBRADDIF`: adds interface `tap` to bridge `bridge`.
fn add_to_bridge(sock: BorrowedFd<'_>, tap: &str, bridge: &str) -> Result<(), Error> {
    let mut req = IfReq::new(tap);
    ifreq_ioctl::<SIOCGIFINDEX>(sock, &mut req).map_err(|err| Error::TapSetup {
        name: tap.to_owned(),
        step: "finding its interface index".into(),
        err,
    })?;
    let index = req.int();
    let mut req = IfReq::new(bridge);
    req.set_int(index);
    ifreq_ioctl::<SIOCBRADDIF>(sock, &mut req).map_err(|err| match Errno::from_io_error(&err) {
        Some(Errno::NODEV) => Error::NoBridge {
            bridge: bridge.to_owned(),
        },
        Some(Errno::OPNOTSUPP | Errno::INVAL) => Error::NotABridge {
            bridge: bridge.to_owned(),
        },
        _ => Error::BridgeAdd {
            tap: tap.to_owned(),
            bridge: bridge.to_owned(),
            err,
        },
    })
}

#[cfg(test)]
pub mod tests {
    use super::super::testing::{FakeLguest, FakeMem};
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// A tunnet device whose "TAP device" is one end of a datagram socket pair (frames keep their
    /// boundaries, as on a TAP device); the other end is the host's.
    pub fn fake_tap(page: u64, irq: u32) -> (Net, UnixDatagram) {
        let (ours, host) = UnixDatagram::pair().expect("socketpair");
        ours.set_nonblocking(true).expect("nonblocking");
        let tap = Tap {
            fd: Some(OwnedFd::from(ours)),
            name: "tap7".into(),
            mac: [0x02, 0, 0, 0, 0, 0x01],
            setup: TunNet::Ip(Ipv4Addr::new(192, 168, 19, 1)),
            sent: false,
            drop_warned: false,
        };
        let net = Net {
            page,
            irq,
            slot: TAP_GUEST_SLOT,
            kind: Kind::Tap(tap),
        };
        (net, host)
    }

    /// A sharenet device on `path`, without mapping it into any memory.
    pub fn fake_share(page: u64, irq: u32, path: &Path) -> Net {
        let (file, slot) = open_share(path).expect("open");
        Net {
            page,
            irq,
            slot,
            kind: Kind::Share(Share {
                file,
                path: path.to_owned(),
            }),
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        super::super::tests::tempdir(&format!("net-{name}"))
    }

    fn reopen(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open")
    }

    /// Each open of the file is its own claimant (open-file-description locks), so one process
    /// can test what two launchers do.
    #[test]
    fn slots_are_claimed_with_locks() {
        let dir = tempdir("slots");
        let path = dir.join("lan");
        std::fs::write(&path, vec![0u8; 4096]).expect("write");
        let a = reopen(&path);
        let b = reopen(&path);
        assert_eq!(claim_slot(&a).expect("claim"), Some(1));
        assert_eq!(claim_slot(&b).expect("claim"), Some(2));
        // A lock is its owner's: the same open file asking again gets its own slot back (each
        // --sharenet opens the file afresh, so two on one file get two slots).
        assert_eq!(claim_slot(&a).expect("claim"), Some(1));
        // Closing a file (a launcher exiting) frees its slots.
        drop(a);
        let c = reopen(&path);
        assert_eq!(claim_slot(&c).expect("claim"), Some(1));
        // Everything locked elsewhere: full.
        let hog = reopen(&path);
        lock_byte(&hog, 4, SLOTS - 4).expect("lock the rest");
        let d = reopen(&path);
        assert_eq!(claim_slot(&d).expect("claim"), Some(3));
        let e = reopen(&path);
        assert_eq!(claim_slot(&e).expect("claim"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The lock is a kernel record lock on byte `slot` of the file, which every other process
    /// (every other launcher) sees: /proc/locks lists it.
    #[test]
    fn slot_locks_are_host_wide() {
        let dir = tempdir("locks");
        let path = dir.join("lan");
        std::fs::write(&path, vec![0u8; 4096]).expect("write");
        let ours = reopen(&path);
        assert_eq!(claim_slot(&ours).expect("claim"), Some(1));
        // /proc/locks lists it as an OFD lock on byte 1 of this inode.
        let ino = std::os::unix::fs::MetadataExt::ino(&ours.metadata().expect("stat"));
        let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
        assert!(
            locks.lines().any(|l| l.contains("OFDLCK")
                && l.contains("WRITE")
                && l.contains(&format!(":{ino} 1 1"))),
            "{locks}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sharenet_files_are_created_and_slots_cleared() {
        let dir = tempdir("share");
        let path = dir.join("lan0");
        let net = fake_share(0x5000, 3, &path);
        assert_eq!(net.slot, 1);
        assert_eq!(net.features(), 1 | NOCSUM);
        assert_eq!(
            net.describe(),
            format!("sharenet '{}' slot 1", path.display())
        );
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(meta.len(), 4096);
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        // A stale MAC in slot 2 (a crashed launcher): the next claimant clears it; others stay.
        let f = reopen(&path);
        f.write_all_at(&[0x02, 0, 0, 0, 0, 9, 0, 0], 16)
            .expect("write");
        f.write_all_at(&[0x02, 0, 0, 0, 0, 8, 0, 0], 24)
            .expect("write");
        let second = fake_share(0x5000, 3, &path);
        assert_eq!(second.slot, 2);
        let mut slots = [0u8; 32];
        f.read_exact_at(&mut slots, 0).expect("read");
        assert_eq!(&slots[16..24], &[0; 8]);
        assert_eq!(slots[29], 8);
        // Dropping a device clears its slot too.
        f.write_all_at(&[0x02, 0, 0, 0, 0, 7, 0, 0], 8)
            .expect("write");
        drop(net);
        f.read_exact_at(&mut slots, 0).expect("read");
        assert_eq!(&slots[8..16], &[0; 8]);
        // A longer existing file is left as long as it is.
        let big = dir.join("big");
        std::fs::write(&big, vec![0u8; 3 * 4096]).expect("write");
        drop(fake_share(0x5000, 3, &big));
        assert_eq!(std::fs::metadata(&big).expect("stat").len(), 3 * 4096);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sharenet_mapping_shares_the_page() {
        let dir = tempdir("map");
        let path = dir.join("lan");
        let memory = GuestMemory::with_device_pages(2 << 20, 2).expect("map");
        let page = (2 << 20) + 4096;
        let net = Net::sharenet(&path, page, 2, &memory).expect("sharenet");
        // The guest writes its MAC in its slot: another launcher's open of the file sees it.
        memory
            .write(slot_key(page, net.slot), &[0x02, 0, 0, 0, 0, 0x2a, 0, 0])
            .expect("write");
        let mut slot = [0u8; 8];
        reopen(&path)
            .read_exact_at(&mut slot, 8 * u64::from(net.slot))
            .expect("read");
        assert_eq!(slot[5], 0x2a);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn transmit_writes_one_frame() {
        let page = 0x5000;
        let (mut net, host) = fake_tap(page, 2);
        let mut mem = FakeMem::new(0x9000);
        net.init_page(&mut mem).expect("page");
        assert_eq!(mem.get(page, 8), [0x02, 0, 0, 0, 0, 0x01, PROMISC, 0]);
        mem.put(0x1000, &[0xff; 6]);
        mem.put(0x2000, b"payload of the frame");
        mem.put_dma(0x100, 0, &[(0x1000, 6), (0x2000, 20)]);
        assert_eq!(net.transmit(&mut mem, 0x100), None);
        let mut got = [0u8; 100];
        let n = host.recv(&mut got).expect("a frame");
        assert_eq!(n, 26);
        assert_eq!(&got[6..26], b"payload of the frame");
        assert_eq!(mem.u32_at(0x100), 26);
        // A bad descriptor: nothing sent, used_len 0.
        mem.put_dma(0x100, 0, &[(0x2ff0, 20)]);
        assert!(net.transmit(&mut mem, 0x100).is_some());
        assert_eq!(mem.u32_at(0x100), 0);
        host.set_nonblocking(true).expect("nonblocking");
        assert!(host.recv(&mut got).is_err());
    }

    #[test]
    fn receive_fills_guest_buffers() {
        let page = 0x5000;
        let (mut net, host) = fake_tap(page, 2);
        let mut mem = FakeMem::new(0x9000);
        mem.put_dma(0x100, 2, &[(0x1000, 1514)]);
        mem.put_dma(0x200, 2, &[(0x2000, 1514)]);
        let mut dev = FakeLguest::default();
        dev.getdma.push_back(Ok(0x100));
        dev.getdma.push_back(Ok(0x200));
        host.send(b"first frame").expect("send");
        host.send(b"second").expect("send");
        let mut warn = Vec::new();
        assert_eq!(
            net.receive(&mut mem, &mut dev, &mut warn).expect("ok"),
            None
        );
        assert_eq!(dev.keys, [page + 8, page + 8]);
        assert_eq!(mem.get(0x1000, 11), b"first frame");
        assert_eq!(mem.u32_at(0x100), 11);
        assert_eq!(mem.get(0x2000, 6), b"second");
        assert_eq!(mem.u32_at(0x200), 6);
        assert_eq!(dev.irqs, [2]);
        assert!(warn.is_empty());
    }

    #[test]
    fn frames_without_buffers_are_dropped() {
        let page = 0x5000;
        let (mut net, host) = fake_tap(page, 2);
        let mut mem = FakeMem::new(0x9000);
        let mut dev = FakeLguest::default();
        let mut warn = Vec::new();
        // Before the guest sent anything: dropped quietly (its interface is not up yet).
        host.send(b"early").expect("send");
        net.receive(&mut mem, &mut dev, &mut warn).expect("ok");
        assert!(warn.is_empty());
        // Once it has: one warning, however many frames.
        mem.put_dma(0x100, 0, &[(0x1000, 60)]);
        net.transmit(&mut mem, 0x100);
        let _ = host.recv(&mut [0u8; 100]);
        for _ in 0..3 {
            host.send(b"late").expect("send");
            dev.getdma.push_back(Err(Errno::NOSPC));
        }
        net.receive(&mut mem, &mut dev, &mut warn).expect("ok");
        let text = String::from_utf8(warn).expect("utf8");
        assert_eq!(
            text,
            "lguest: tap7: the guest has no free receive buffer: dropping frames from the host \
             (reported once)\n"
        );
        assert!(dev.irqs.is_empty());
        // A frame bigger than the buffer: dropped, the buffer given back.
        mem.put_dma(0x300, 2, &[(0x3000, 8)]);
        dev.getdma.push_back(Ok(0x300));
        host.send(b"nine byte").expect("send");
        let problem = net
            .receive(&mut mem, &mut dev, &mut Vec::new())
            .expect("ok");
        assert!(problem.is_some_and(|p| p.contains("does not fit")));
        assert_eq!(mem.u32_at(0x300), 0);
        assert!(dev.irqs.is_empty());
    }

    #[test]
    fn names_and_addresses() {
        assert_eq!(slot_key(0x4000_0000, 0), 0x4000_0000);
        assert_eq!(slot_key(0x4000_0000, 511), 0x4000_0ff8);
        assert_eq!(mac_text(&[0x02, 0, 0xab, 0, 0, 0x1f]), "02:00:ab:00:00:1f");
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert_eq!(
            conventional_guest_ip(ip("192.168.19.1")),
            ip("192.168.19.2")
        );
        assert_eq!(conventional_guest_ip(ip("10.0.0.254")), ip("10.0.0.1"));
        let (net, _host) = fake_tap(0x5000, 2);
        assert_eq!(net.features(), 1);
        assert_eq!(
            net.describe(),
            "tunnet: tap7 192.168.19.1 (guest is 192.168.19.2 by convention), host MAC \
             02:00:00:00:00:01, guest slot 1"
        );
        let mut req = IfReq::new("tap%d");
        req.set_short(IFF_TAP | IFF_NO_PI);
        assert_eq!(&req.name[..6], b"tap%d\0");
        assert_eq!(req.data[..2], 0x1002u16.to_ne_bytes());
        req.set_inet(ip("192.168.19.1"));
        assert_eq!(req.data[..8], [2, 0, 0, 0, 192, 168, 19, 1]);
        assert_eq!(IfReq::new("abcdefghijklmnopq").name(), "abcdefghijklmno");
    }

    /// A real TAP device (needs root and the tun module; it creates an interface, so it only runs
    /// when asked: cargo test -p launcher -- --ignored real_tap).
    #[test]
    #[ignore]
    fn real_tap() {
        let ip = Ipv4Addr::new(10, 213, 77, 1);
        let net = Net::tap(&TunNet::Ip(ip), 0x5000, 1).expect("tap");
        let Kind::Tap(tap) = &net.kind else {
            panic!("a tap")
        };
        assert!(tap.name.starts_with("tap"), "{}", tap.name);
        assert_ne!(tap.mac, [0; 6]);
        let shown = std::process::Command::new("ip")
            .args(["-4", "-o", "addr", "show", "dev", &tap.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert!(shown.contains("10.213.77.1/24"), "{shown}");
        let flags =
            std::fs::read_to_string(format!("/sys/class/net/{}/flags", tap.name)).expect("flags");
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).expect("hex");
        assert_eq!(flags & 1, 1, "IFF_UP");
        let err = Net::tap(&TunNet::Bridge("lgnobr9".into()), 0x5000, 1)
            .err()
            .expect("no such bridge");
        assert_eq!(err.to_string(), "bridge 'lgnobr9' does not exist");
        let err = Net::tap(&TunNet::Bridge("lo".into()), 0x5000, 1)
            .err()
            .expect("not a bridge");
        assert_eq!(err.to_string(), "'lo' is not a bridge");
        // A real bridge, if iproute2 can make one.
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if ip(&["link", "add", "lgtestbr9", "type", "bridge"]) {
            let bridged = Net::tap(&TunNet::Bridge("lgtestbr9".into()), 0x5000, 1);
            let master = bridged.as_ref().ok().map(|n| {
                let Kind::Tap(t) = &n.kind else {
                    panic!("a tap")
                };
                std::fs::read_link(format!("/sys/class/net/{}/master", t.name))
            });
            ip(&["link", "del", "lgtestbr9"]);
            let master = master.expect("bridged").expect("has a master");
            assert!(master.ends_with("lgtestbr9"), "{master:?}");
        }
    }
}
