//! Every way the launcher can fail, each with the one line it prints and its exit code.
//!
//! `main` prints `lguest: {error}`; nothing in here may produce more than one line, so every piece
//! of user input shown in a message goes through [`Quoted`], which escapes control characters.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use rustix::io::Errno;

use crate::cli::{human_size, MAX_MEM_BYTES, MIN_MEM_BYTES};
use crate::memory::OutOfRange;
use lg_core::abi::{self, PAGE_SIZE};

/// Exit code for a bad command line (the conventional one for usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code for everything else: missing files, no `/dev/lguest`, a guest we cannot run.
pub const EXIT_FAILURE: u8 = 1;

/// What a file named on the command line is for, as messages call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Kernel,
    Initrd,
    Block,
    ShareNet,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Kernel => "kernel",
            Role::Initrd => "initrd",
            Role::Block => "block file",
            Role::ShareNet => "sharenet file",
        })
    }
}

/// Why a MEM argument was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemSizeProblem {
    /// Not digits followed by an optional k/m/g.
    Syntax,
    /// Below [`crate::cli::MIN_MEM_BYTES`] (includes 0).
    TooSmall,
    /// Above the ABI's limit, or too big to even represent.
    TooLarge,
    /// Not a whole number of guest pages.
    NotPageMultiple,
}

/// Why a `--tunnet=bridge:NAME` name is not a valid Linux interface name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeNameProblem {
    Empty,
    TooLong,
    DotName,
    BadChar(char),
}

/// Why a kernel image cannot be loaded. Shown after the file name: `'vmlinux' {problem}`.
/// Segments are numbered by their index in the program header table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelProblem {
    /// A compressed kernel (boot sector magic "HdrS" at 0x202) rather than the ELF vmlinux.
    BzImage,
    NotElf,
    NotElf64,
    BigEndian,
    WrongMachine(u16),
    NotExecutable(u16),
    /// `e_phentsize` is not the size of an ELF64 program header.
    BadProgramHeaderSize(u16),
    /// Some part of the file that the headers point at lies (partly) past its end.
    Truncated {
        what: String,
        end: u64,
        file_size: u64,
    },
    NoLoadSegments,
    FileszOverMemsz {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
    SegmentBelowReserved {
        index: usize,
        start: u64,
    },
    SegmentOutsideMemory {
        index: usize,
        start: u64,
        memsz: u64,
        mem: u64,
    },
    SegmentsOverlap {
        first: usize,
        second: usize,
    },
    /// A PT_NOTE segment whose notes do not add up.
    BadNoteSegment {
        index: usize,
    },
    NoBootNote,
    DuplicateBootNote,
    BootNoteSize(u32),
    WrongAbi(u64),
    EntryNotCanonical(u64),
    Cr3NotAligned(u64),
    Cr3OutsideMemory {
        cr3: u64,
        mem: u64,
    },
    Cr3OutsideImage(u64),
}

impl fmt::Display for KernelProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use KernelProblem::*;
        const NEED: &str = "lguest needs the uncompressed vmlinux ELF";
        match self {
            BzImage => write!(
                f,
                "is a bzImage (compressed kernel): {NEED} (the 'vmlinux' at the top of the kernel \
                 build tree, not arch/x86/boot/bzImage)"
            ),
            NotElf => write!(f, "is not an ELF file: {NEED}"),
            NotElf64 => write!(f, "is a 32-bit ELF: {NEED} of an x86_64 kernel"),
            BigEndian => write!(f, "is a big-endian ELF: {NEED} of an x86_64 kernel"),
            WrongMachine(m) => write!(f, "is an ELF for machine {m}, not x86_64 (62)"),
            NotExecutable(t) => write!(
                f,
                "is not an ELF executable (e_type {t}, expected ET_EXEC 2): {NEED}"
            ),
            BadProgramHeaderSize(n) => write!(
                f,
                "has {n}-byte program headers: ELF64 ones are 56 bytes (a corrupt file?)"
            ),
            Truncated {
                what,
                end,
                file_size,
            } => write!(
                f,
                "is truncated: its {what} ends at byte {end:#x}, past the end of the file ({file_size:#x} bytes)"
            ),
            NoLoadSegments => f.write_str("has no PT_LOAD segment: nothing to load"),
            FileszOverMemsz {
                index,
                filesz,
                memsz,
            } => write!(
                f,
                "is corrupt: segment {index} has p_filesz {filesz:#x} larger than p_memsz {memsz:#x}"
            ),
            SegmentBelowReserved { index, start } => write!(
                f,
                "has segment {index} at guest-physical {start:#x}, below {:#x}: the first {} belong \
                 to the launcher (zero page, command line)",
                abi::LOW_RESERVED,
                human_size(abi::LOW_RESERVED)
            ),
            SegmentOutsideMemory {
                index,
                start,
                memsz,
                mem,
            } => {
                write!(f, "has segment {index} at guest-physical {start:#x}, ")?;
                match start.checked_add(*memsz) {
                    Some(end) => write!(f, "ending at {end:#x}")?,
                    None => write!(f, "{memsz:#x} bytes long")?,
                }
                write!(
                    f,
                    ", outside the guest's {} of memory (give the guest more memory?)",
                    human_size(*mem)
                )
            }
            SegmentsOverlap { first, second } => write!(
                f,
                "is corrupt: segments {first} and {second} load at overlapping guest-physical addresses"
            ),
            BadNoteSegment { index } => {
                write!(f, "is corrupt: its PT_NOTE segment {index} is malformed")
            }
            NoBootNote => f.write_str("is not an lguest guest kernel: no lguest boot note"),
            DuplicateBootNote => f.write_str("has more than one lguest boot note"),
            BootNoteSize(n) => write!(
                f,
                "has an lguest boot note of {n} bytes, expected {}",
                core::mem::size_of::<abi::BootNote>()
            ),
            WrongAbi(v) => write!(
                f,
                "was built for lguest ABI {v}, this launcher speaks {}",
                abi::VERSION
            ),
            EntryNotCanonical(e) => write!(
                f,
                "has an entry point {e:#x} that is not a canonical x86_64 address"
            ),
            Cr3NotAligned(c) => write!(
                f,
                "has a boot note cr3 {c:#x} that is not page aligned"
            ),
            Cr3OutsideMemory { cr3, mem } => write!(
                f,
                "has a boot note cr3 {cr3:#x} outside the guest's {} of memory",
                human_size(*mem)
            ),
            Cr3OutsideImage(c) => write!(
                f,
                "has a boot note cr3 {c:#x} outside its PT_LOAD segments: the image must contain its \
                 initial page table"
            ),
        }
    }
}

/// Why the module's record stream made no sense.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordProblem {
    /// Fewer bytes than the record kind needs.
    Short {
        kind: Option<u64>,
        len: usize,
    },
    UnknownKind(u64),
    UnknownExitKind(u64),
}

#[derive(Debug)]
pub enum Error {
    // ---- usage errors (exit 2): the command line itself is wrong ----
    UnknownOption {
        option: String,
        suggestion: Option<String>,
    },
    MissingValue {
        option: String,
        value_name: String,
    },
    MissingMemAndKernel,
    MissingKernel,
    /// Something option-like where KERNEL should be: options were put after MEM.
    OptionAfterMem {
        arg: String,
    },
    NotUtf8,
    BadMemSize {
        arg: String,
        problem: MemSizeProblem,
    },
    BadTunnet {
        arg: String,
    },
    BadTunnetIp {
        ip: Ipv4Addr,
        why: &'static str,
    },
    BadBridgeName {
        name: String,
        problem: BridgeNameProblem,
    },
    DuplicateTunnet {
        first: String,
        second: String,
    },
    DuplicateInitrd {
        first: PathBuf,
        second: PathBuf,
    },
    /// More device options than the device page has room for (the console takes one place).
    TooManyDevices {
        count: usize,
    },
    /// A clap error we have no dedicated variant for: its first line, already without "error: ".
    Usage(String),

    // ---- runtime / environment errors (exit 1) ----
    CannotOpen {
        role: Role,
        path: PathBuf,
        err: io::Error,
    },
    NotRegularFile {
        role: Role,
        path: PathBuf,
    },
    NotFileOrBlockDevice {
        role: Role,
        path: PathBuf,
    },
    NotWritable {
        role: Role,
        path: PathBuf,
        err: io::Error,
    },
    /// The directory a sharenet file would be created in is missing or unusable.
    NoParentDir {
        path: PathBuf,
        dir: PathBuf,
        err: io::Error,
    },
    ParentNotDir {
        path: PathBuf,
        dir: PathBuf,
    },
    DeviceMissing,
    /// The node exists but no driver answers it (a stale node, module unloaded).
    DeviceNoDriver(io::Error),
    DevicePermission,
    DeviceOpen(io::Error),
    /// Writing --help or --version to stdout failed (e.g. a closed pipe).
    Stdout(io::Error),
    /// The kernel command line does not fit in the space the boot protocol gives it.
    CmdlineTooLong {
        len: usize,
        max: usize,
    },
    /// mmap of guest memory failed.
    GuestMemory {
        size: u64,
        err: io::Error,
    },
    /// Reading a file named on the command line failed after it was opened.
    CannotRead {
        role: Role,
        path: PathBuf,
        err: io::Error,
    },
    BadKernel {
        path: PathBuf,
        problem: KernelProblem,
    },
    InitrdTooBig {
        path: PathBuf,
        size: u64,
        /// The largest initrd that would fit.
        room: u64,
    },
    /// A launcher bug: something it placed itself falls outside guest memory.
    GuestRange(OutOfRange),
    /// More e820 entries than the zero page holds (a launcher bug).
    TooManyE820 {
        count: usize,
    },
    /// linux-loader could not write the zero page.
    ZeroPage(String),
    SignalSetup(Errno),
    // ---- LHREQ_INITIALIZE ----
    InitVersion,
    InitRefused,
    InitBusy,
    InitNotImplemented,
    InitFailed(Errno),
    InitShortWrite(usize),
    // ---- the run loop ----
    DeviceRead(Errno),
    BadRecord(RecordProblem),
    /// The guest asked to restart and exec'ing the launcher again failed.
    Restart(io::Error),

    // ---- devices ----
    /// The size of a block file could not be found (seek to its end failed).
    BlockSize {
        path: PathBuf,
        err: io::Error,
    },
    /// `/dev/net/tun` could not be opened.
    TunOpen(io::Error),
    /// `TUNSETIFF` refused to create the TAP device.
    TapCreate(io::Error),
    /// Configuring the new TAP device failed at `step`.
    TapSetup {
        name: String,
        step: String,
        err: io::Error,
    },
    NoBridge {
        bridge: String,
    },
    NotABridge {
        bridge: String,
    },
    BridgeAdd {
        tap: String,
        bridge: String,
        err: io::Error,
    },
    /// Every guest slot of a sharenet file is locked by a running launcher.
    SharenetFull {
        path: PathBuf,
    },
    SharenetLock {
        path: PathBuf,
        err: io::Error,
    },
    /// Growing a new sharenet file to its page, or clearing our slot, failed.
    SharenetSetup {
        path: PathBuf,
        err: io::Error,
    },
    SharenetMap {
        path: PathBuf,
        err: io::Error,
    },
    /// The thread that watches stdin and the TAP device could not be started.
    InputThread(io::Error),
    /// An `LHREQ_GETDMA`, `LHREQ_IRQ` or `LHREQ_BREAK` failed in a way that means lg.ko and the
    /// launcher disagree (not merely "the guest is gone").
    DeviceRequest {
        request: &'static str,
        errno: Errno,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use Error::*;
        match self {
            UnknownOption { .. }
            | MissingValue { .. }
            | MissingMemAndKernel
            | MissingKernel
            | OptionAfterMem { .. }
            | NotUtf8
            | BadMemSize { .. }
            | BadTunnet { .. }
            | BadTunnetIp { .. }
            | BadBridgeName { .. }
            | DuplicateTunnet { .. }
            | DuplicateInitrd { .. }
            | TooManyDevices { .. }
            | Usage(_)
            | CmdlineTooLong { .. } => EXIT_USAGE,
            CannotOpen { .. }
            | NotRegularFile { .. }
            | NotFileOrBlockDevice { .. }
            | NotWritable { .. }
            | NoParentDir { .. }
            | ParentNotDir { .. }
            | DeviceMissing
            | DeviceNoDriver(_)
            | DevicePermission
            | DeviceOpen(_)
            | Stdout(_)
            | GuestMemory { .. }
            | CannotRead { .. }
            | BadKernel { .. }
            | InitrdTooBig { .. }
            | GuestRange(_)
            | TooManyE820 { .. }
            | ZeroPage(_)
            | SignalSetup(_)
            | InitVersion
            | InitRefused
            | InitBusy
            | InitNotImplemented
            | InitFailed(_)
            | InitShortWrite(_)
            | DeviceRead(_)
            | BadRecord(_)
            | Restart(_)
            | BlockSize { .. }
            | TunOpen(_)
            | TapCreate(_)
            | TapSetup { .. }
            | NoBridge { .. }
            | NotABridge { .. }
            | BridgeAdd { .. }
            | SharenetFull { .. }
            | SharenetLock { .. }
            | SharenetSetup { .. }
            | SharenetMap { .. }
            | InputThread(_)
            | DeviceRequest { .. } => EXIT_FAILURE,
        }
    }
}

const TRY_HELP: &str = "try 'lguest --help'";

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            UnknownOption {
                option,
                suggestion: Some(s),
            } => write!(
                f,
                "unknown option {} (did you mean {}? {TRY_HELP})",
                q(option),
                q(s)
            ),
            UnknownOption {
                option,
                suggestion: None,
            } => write!(f, "unknown option {} ({TRY_HELP})", q(option)),
            MissingValue { option, value_name } => write!(
                f,
                "option {} needs a value: {}={} ({TRY_HELP})",
                q(option),
                Quoted::bare(OsStr::new(option)),
                Quoted::bare(OsStr::new(value_name))
            ),
            MissingMemAndKernel => write!(f, "missing MEM and KERNEL arguments ({TRY_HELP})"),
            MissingKernel => write!(f, "missing KERNEL argument ({TRY_HELP})"),
            OptionAfterMem { arg } => write!(
                f,
                "{} found where KERNEL was expected: after MEM write options as --name=value \
                 (lguest [OPTIONS] MEM KERNEL [KERNEL-ARGS...])",
                q(arg)
            ),
            NotUtf8 => write!(f, "an argument is not valid UTF-8 ({TRY_HELP})"),
            BadMemSize { arg, problem } => {
                write!(f, "bad memory size {}: ", q(arg))?;
                match problem {
                    MemSizeProblem::Syntax => f.write_str(
                        "expected a number of bytes with an optional k, m or g suffix, e.g. 64m",
                    ),
                    MemSizeProblem::TooSmall => write!(
                        f,
                        "too small: a guest needs at least {}",
                        human_size(MIN_MEM_BYTES)
                    ),
                    MemSizeProblem::TooLarge => write!(
                        f,
                        "too large: at most {} is supported",
                        human_size(MAX_MEM_BYTES)
                    ),
                    MemSizeProblem::NotPageMultiple => {
                        write!(f, "not a whole number of {} pages", human_size(PAGE_SIZE))
                    }
                }
            }
            BadTunnet { arg } => write!(
                f,
                "bad --tunnet {}: expected an IPv4 address (e.g. 192.168.19.1) or bridge:NAME",
                q(arg)
            ),
            BadTunnetIp { ip, why } => {
                write!(f, "bad --tunnet address {ip}: {why}")
            }
            BadBridgeName { name, problem } => {
                write!(f, "bad bridge name {}: ", q(name))?;
                match problem {
                    BridgeNameProblem::Empty => f.write_str("it is empty"),
                    BridgeNameProblem::TooLong => {
                        f.write_str("interface names are at most 15 bytes")
                    }
                    BridgeNameProblem::DotName => f.write_str("'.' and '..' are not allowed"),
                    BridgeNameProblem::BadChar(c) => {
                        write!(
                            f,
                            "'{}' is not allowed in an interface name",
                            c.escape_debug()
                        )
                    }
                }
            }
            DuplicateTunnet { first, second } => write!(
                f,
                "--tunnet given twice ({} and {}): a guest has at most one tunnet device",
                q(first),
                q(second)
            ),
            DuplicateInitrd { first, second } => write!(
                f,
                "--initrd given twice ({} and {}): a guest has at most one initrd",
                qp(first),
                qp(second)
            ),
            TooManyDevices { count } => write!(
                f,
                "too many devices: {count} given, at most {} (the console takes the {}th place \
                 in the device page)",
                crate::cli::MAX_DEVICES,
                crate::cli::MAX_DEVICES + 1
            ),
            Usage(msg) => write!(f, "{} ({TRY_HELP})", Quoted::bare(OsStr::new(msg))),
            CannotOpen { role, path, err } => {
                write!(f, "cannot open {role} {}: {}", qp(path), os_msg(err))
            }
            NotRegularFile { role, path } => {
                write!(f, "{role} {} is not a regular file", qp(path))
            }
            NotFileOrBlockDevice { role, path } => write!(
                f,
                "{role} {} is not a regular file or block device",
                qp(path)
            ),
            NotWritable { role, path, err } => {
                write!(f, "{role} {} is not writable: {}", qp(path), os_msg(err))
            }
            NoParentDir { path, dir, err } => write!(
                f,
                "cannot create sharenet file {}: directory {}: {}",
                qp(path),
                qp(dir),
                os_msg(err)
            ),
            ParentNotDir { path, dir } => write!(
                f,
                "cannot create sharenet file {}: {} is not a directory",
                qp(path),
                qp(dir)
            ),
            DeviceMissing => {
                f.write_str("/dev/lguest does not exist: is lg.ko loaded? run: sudo modprobe lg")
            }
            DeviceNoDriver(err) => write!(
                f,
                "cannot open /dev/lguest: {}: is lg.ko loaded? run: sudo modprobe lg",
                os_msg(err)
            ),
            DevicePermission => f.write_str(
                "cannot open /dev/lguest: permission denied (it is root-only; run lguest as root)",
            ),
            DeviceOpen(err) => write!(f, "cannot open /dev/lguest: {}", os_msg(err)),
            Stdout(err) => write!(f, "cannot write to stdout: {}", os_msg(err)),
            CmdlineTooLong { len, max } => write!(
                f,
                "the kernel command line is {len} bytes long, at most {max} fit"
            ),
            GuestMemory { size, err } => write!(
                f,
                "cannot map {} of guest memory: {}",
                human_size(*size),
                os_msg(err)
            ),
            CannotRead { role, path, err } => {
                write!(f, "cannot read {role} {}: {}", qp(path), os_msg(err))
            }
            BadKernel { path, problem } => write!(f, "{} {problem}", qp(path)),
            InitrdTooBig { path, size, room } => write!(
                f,
                "initrd {} ({size} bytes) does not fit in guest memory: at most {room} bytes fit \
                 above the kernel and the {} kept free after it (give the guest more memory)",
                qp(path),
                human_size(crate::loader::INITRD_GAP)
            ),
            GuestRange(r) => write!(
                f,
                "internal error: guest-physical range {:#x}+{:#x} is outside guest memory ({})",
                r.gpa,
                r.len,
                human_size(r.size)
            ),
            TooManyE820 { count } => write!(
                f,
                "internal error: {count} memory map entries, the zero page holds at most {}",
                abi::zero_page::E820_MAX_ENTRIES
            ),
            ZeroPage(msg) => write!(
                f,
                "cannot write the zero page: {}",
                Quoted::bare(OsStr::new(msg))
            ),
            SignalSetup(errno) => {
                write!(f, "cannot install signal handlers: {}", errno_text(*errno))
            }
            InitVersion => write!(
                f,
                "lg.ko speaks another lguest ABI than this launcher (ABI {}): rebuild them together",
                abi::VERSION
            ),
            InitRefused => f.write_str("lg.ko refused the guest (bad memory layout or entry point)"),
            InitBusy => f.write_str(
                "lg.ko refused the guest: this /dev/lguest file already runs one (EBUSY)",
            ),
            InitNotImplemented => f.write_str(
                "lg.ko cannot run guests yet: LHREQ_INITIALIZE is not implemented (ENOSYS)",
            ),
            InitFailed(errno) => {
                write!(f, "LHREQ_INITIALIZE failed: {}", errno_text(*errno))
            }
            InitShortWrite(n) => write!(
                f,
                "LHREQ_INITIALIZE failed: lg.ko took {n} of {} bytes",
                abi::MAX_WRITE
            ),
            DeviceRead(errno) => {
                write!(f, "reading /dev/lguest failed: {}", errno_text(*errno))
            }
            BadRecord(RecordProblem::Short { kind: None, len }) => write!(
                f,
                "lg.ko returned a {len}-byte record, too short to hold its kind"
            ),
            BadRecord(RecordProblem::Short {
                kind: Some(kind),
                len,
            }) => write!(
                f,
                "lg.ko returned a {len}-byte record of kind {kind}, too short for its payload"
            ),
            BadRecord(RecordProblem::UnknownKind(kind)) => write!(
                f,
                "lg.ko returned a record of unknown kind {kind} (is it newer than this launcher?)"
            ),
            BadRecord(RecordProblem::UnknownExitKind(kind)) => write!(
                f,
                "lg.ko reported the guest dead with unknown exit kind {kind} (is it newer than this launcher?)"
            ),
            Restart(err) => write!(
                f,
                "the guest asked to restart, but re-executing the launcher failed: {}",
                os_msg(err)
            ),
            BlockSize { path, err } => write!(
                f,
                "cannot find the size of block file {}: {}",
                qp(path),
                os_msg(err)
            ),
            TunOpen(err) => {
                write!(f, "cannot create TAP device: /dev/net/tun: {}", os_msg(err))?;
                match Errno::from_io_error(err) {
                    Some(Errno::NOENT | Errno::NODEV | Errno::NXIO) => {
                        f.write_str(" (is the tun module loaded? modprobe tun)")
                    }
                    Some(Errno::ACCESS | Errno::PERM) => f.write_str(" (run lguest as root)"),
                    _ => Ok(()),
                }
            }
            TapCreate(err) => {
                write!(f, "cannot create TAP device: {}", os_msg(err))?;
                match Errno::from_io_error(err) {
                    Some(Errno::ACCESS | Errno::PERM) => {
                        f.write_str(" (it needs CAP_NET_ADMIN: run lguest as root)")
                    }
                    _ => Ok(()),
                }
            }
            TapSetup { name, step, err } => write!(
                f,
                "cannot set up TAP device {}: {}: {}",
                q(name),
                Quoted::bare(OsStr::new(step)),
                os_msg(err)
            ),
            NoBridge { bridge } => write!(f, "bridge {} does not exist", q(bridge)),
            NotABridge { bridge } => write!(f, "{} is not a bridge", q(bridge)),
            BridgeAdd { tap, bridge, err } => write!(
                f,
                "cannot add TAP device {} to bridge {}: {}",
                q(tap),
                q(bridge),
                os_msg(err)
            ),
            SharenetFull { path } => write!(
                f,
                "sharenet file {} is full: all {} guest slots are taken by running launchers",
                qp(path),
                abi::dev::net::SLOTS - 1
            ),
            SharenetLock { path, err } => write!(
                f,
                "cannot lock a slot of sharenet file {}: {}",
                qp(path),
                os_msg(err)
            ),
            SharenetSetup { path, err } => write!(
                f,
                "cannot prepare sharenet file {}: {}",
                qp(path),
                os_msg(err)
            ),
            SharenetMap { path, err } => write!(
                f,
                "cannot map sharenet file {} into guest memory: {}",
                qp(path),
                os_msg(err)
            ),
            InputThread(err) => write!(f, "cannot start the input thread: {}", os_msg(err)),
            DeviceRequest { request, errno } => {
                write!(f, "{request} failed: {}", errno_text(*errno))
            }
        }
    }
}

impl std::error::Error for Error {}

/// The OS's description of an error without std's " (os error N)" suffix, which the messages do
/// not need and the original lguest did not print.
pub fn os_msg(err: &io::Error) -> String {
    let text = err.to_string();
    match (err.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_owned(),
        _ => text,
    }
}

/// An errno as `Description (ENAME)`, e.g. `No such file or directory (ENOENT)`.
pub fn errno_text(errno: Errno) -> String {
    let msg = os_msg(&io::Error::from(errno));
    match errno_name(errno) {
        Some(name) => format!("{msg} ({name})"),
        None => format!("{msg} (errno {})", errno.raw_os_error()),
    }
}

/// Names of the errnos /dev/lguest is documented to return, and a few more.
fn errno_name(errno: Errno) -> Option<&'static str> {
    Some(match errno {
        Errno::PERM => "EPERM",
        Errno::NOENT => "ENOENT",
        Errno::INTR => "EINTR",
        Errno::IO => "EIO",
        Errno::BADF => "EBADF",
        Errno::AGAIN => "EAGAIN",
        Errno::NOMEM => "ENOMEM",
        Errno::ACCESS => "EACCES",
        Errno::FAULT => "EFAULT",
        Errno::BUSY => "EBUSY",
        Errno::INVAL => "EINVAL",
        Errno::NOSYS => "ENOSYS",
        Errno::PROTO => "EPROTO",
        Errno::NODEV => "ENODEV",
        Errno::NXIO => "ENXIO",
        Errno::OVERFLOW => "EOVERFLOW",
        Errno::SRCH => "ESRCH",
        Errno::NOSPC => "ENOSPC",
        _ => return None,
    })
}

/// User-supplied text for a one-line message: `'...'` with control characters (newlines above all)
/// escaped and invalid UTF-8 replaced, so a hostile file name cannot forge extra output lines.
pub struct Quoted<'a> {
    text: &'a OsStr,
    quotes: bool,
}

impl<'a> Quoted<'a> {
    pub fn new(text: &'a OsStr) -> Self {
        Quoted { text, quotes: true }
    }

    /// Escaped but without the surrounding quotes.
    pub fn bare(text: &'a OsStr) -> Self {
        Quoted {
            text,
            quotes: false,
        }
    }
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quotes {
            f.write_str("'")?;
        }
        for c in self.text.to_string_lossy().chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        if self.quotes {
            f.write_str("'")?;
        }
        Ok(())
    }
}

fn q(s: &str) -> Quoted<'_> {
    Quoted::new(OsStr::new(s))
}

fn qp(p: &std::path::Path) -> Quoted<'_> {
    Quoted::new(p.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_msg_drops_the_errno_suffix() {
        let err = io::Error::from_raw_os_error(2);
        assert_eq!(os_msg(&err), "No such file or directory");
        let custom = io::Error::other("plain");
        assert_eq!(os_msg(&custom), "plain");
    }

    #[test]
    fn quoted_escapes_control_characters() {
        let shown = Quoted::new(OsStr::new("a\nb\tc'd")).to_string();
        assert_eq!(shown, "'a\\nb\\tc'd'");
        assert!(!shown.contains('\n'));
    }

    #[test]
    fn every_message_is_one_line() {
        let nasty = PathBuf::from("evil\nlguest: forged");
        let errors = [
            Error::UnknownOption {
                option: "--x\ny".into(),
                suggestion: Some("--block".into()),
            },
            Error::MissingValue {
                option: "--block".into(),
                value_name: "FILE".into(),
            },
            Error::MissingMemAndKernel,
            Error::MissingKernel,
            Error::OptionAfterMem { arg: "-v\n".into() },
            Error::NotUtf8,
            Error::BadMemSize {
                arg: "1\n".into(),
                problem: MemSizeProblem::Syntax,
            },
            Error::BadTunnet { arg: "\n".into() },
            Error::BadBridgeName {
                name: "a\nb".into(),
                problem: BridgeNameProblem::BadChar('\n'),
            },
            Error::DuplicateTunnet {
                first: "a".into(),
                second: "b\n".into(),
            },
            Error::DuplicateInitrd {
                first: nasty.clone(),
                second: nasty.clone(),
            },
            Error::Usage("bad\nthing".into()),
            Error::CannotOpen {
                role: Role::Kernel,
                path: nasty.clone(),
                err: io::Error::from_raw_os_error(2),
            },
            Error::NotRegularFile {
                role: Role::Initrd,
                path: nasty.clone(),
            },
            Error::NotWritable {
                role: Role::Block,
                path: nasty.clone(),
                err: io::Error::from_raw_os_error(13),
            },
            Error::NoParentDir {
                path: nasty.clone(),
                dir: nasty.clone(),
                err: io::Error::from_raw_os_error(2),
            },
            Error::DeviceMissing,
            Error::DevicePermission,
            Error::BadKernel {
                path: nasty.clone(),
                problem: KernelProblem::Truncated {
                    what: "segment 1".into(),
                    end: 1,
                    file_size: 0,
                },
            },
            Error::CannotRead {
                role: Role::Kernel,
                path: nasty.clone(),
                err: io::Error::from_raw_os_error(5),
            },
            Error::InitrdTooBig {
                path: nasty.clone(),
                size: 1,
                room: 0,
            },
            Error::ZeroPage("a\nb".into()),
            Error::DeviceRead(Errno::NOENT),
            Error::InitFailed(Errno::from_raw_os_error(4095)),
            Error::Restart(io::Error::from_raw_os_error(2)),
            Error::TooManyDevices { count: 16 },
            Error::BlockSize {
                path: nasty.clone(),
                err: io::Error::from_raw_os_error(29),
            },
            Error::TunOpen(io::Error::from_raw_os_error(2)),
            Error::TapCreate(io::Error::from_raw_os_error(1)),
            Error::TapSetup {
                name: "tap0".into(),
                step: "bringing it up\n".into(),
                err: io::Error::from_raw_os_error(1),
            },
            Error::NoBridge {
                bridge: "br\n".into(),
            },
            Error::NotABridge {
                bridge: "lo".into(),
            },
            Error::BridgeAdd {
                tap: "tap0".into(),
                bridge: "br0".into(),
                err: io::Error::from_raw_os_error(1),
            },
            Error::SharenetFull {
                path: nasty.clone(),
            },
            Error::SharenetLock {
                path: nasty.clone(),
                err: io::Error::from_raw_os_error(37),
            },
            Error::SharenetSetup {
                path: nasty.clone(),
                err: io::Error::from_raw_os_error(28),
            },
            Error::SharenetMap {
                path: nasty.clone(),
                err: io::Error::from_raw_os_error(19),
            },
            Error::InputThread(io::Error::from_raw_os_error(11)),
            Error::DeviceRequest {
                request: "LHREQ_IRQ",
                errno: Errno::INVAL,
            },
        ];
        for e in &errors {
            let line = e.to_string();
            assert!(!line.contains('\n'), "{line:?}");
            assert!(!line.is_empty());
        }
    }

    #[test]
    fn device_messages() {
        let cases: [(Error, &str); 9] = [
            (
                Error::TunOpen(io::Error::from_raw_os_error(2)),
                "cannot create TAP device: /dev/net/tun: No such file or directory (is the tun \
                 module loaded? modprobe tun)",
            ),
            (
                Error::TunOpen(io::Error::from_raw_os_error(13)),
                "cannot create TAP device: /dev/net/tun: Permission denied (run lguest as root)",
            ),
            (
                Error::TapCreate(io::Error::from_raw_os_error(1)),
                "cannot create TAP device: Operation not permitted (it needs CAP_NET_ADMIN: run \
                 lguest as root)",
            ),
            (
                Error::TapSetup {
                    name: "tap0".into(),
                    step: "setting its address 10.0.0.1".into(),
                    err: io::Error::from_raw_os_error(99),
                },
                "cannot set up TAP device 'tap0': setting its address 10.0.0.1: Cannot assign \
                 requested address",
            ),
            (
                Error::NoBridge {
                    bridge: "br9".into(),
                },
                "bridge 'br9' does not exist",
            ),
            (
                Error::NotABridge {
                    bridge: "eth0".into(),
                },
                "'eth0' is not a bridge",
            ),
            (
                Error::SharenetFull {
                    path: "/tmp/lan0".into(),
                },
                "sharenet file '/tmp/lan0' is full: all 511 guest slots are taken by running \
                 launchers",
            ),
            (
                Error::CannotOpen {
                    role: Role::Block,
                    path: "x".into(),
                    err: io::Error::from_raw_os_error(2),
                },
                "cannot open block file 'x': No such file or directory",
            ),
            (
                Error::DeviceRequest {
                    request: "LHREQ_GETDMA",
                    errno: Errno::INVAL,
                },
                "LHREQ_GETDMA failed: Invalid argument (EINVAL)",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
            assert_eq!(e.exit_code(), EXIT_FAILURE);
        }
        assert_eq!(Error::TooManyDevices { count: 20 }.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn exit_codes_split_usage_from_environment() {
        assert_eq!(Error::MissingKernel.exit_code(), EXIT_USAGE);
        assert_eq!(
            Error::BadMemSize {
                arg: "x".into(),
                problem: MemSizeProblem::Syntax
            }
            .exit_code(),
            EXIT_USAGE
        );
        assert_eq!(Error::DeviceMissing.exit_code(), EXIT_FAILURE);
        assert_eq!(
            Error::BadKernel {
                path: "k".into(),
                problem: KernelProblem::NoBootNote
            }
            .exit_code(),
            EXIT_FAILURE
        );
        assert_eq!(Error::InitVersion.exit_code(), EXIT_FAILURE);
        assert_eq!(
            Error::CmdlineTooLong {
                len: 3000,
                max: 2047
            }
            .exit_code(),
            EXIT_USAGE
        );
    }

    #[test]
    fn messages_match_the_documented_wording() {
        let e = Error::BadMemSize {
            arg: "64x".into(),
            problem: MemSizeProblem::Syntax,
        };
        assert_eq!(
            e.to_string(),
            "bad memory size '64x': expected a number of bytes with an optional k, m or g suffix, e.g. 64m"
        );
        let e = Error::CannotOpen {
            role: Role::Kernel,
            path: "vmlinux".into(),
            err: io::Error::from_raw_os_error(2),
        };
        assert_eq!(
            e.to_string(),
            "cannot open kernel 'vmlinux': No such file or directory"
        );
        let e = Error::NotWritable {
            role: Role::Block,
            path: "root.img".into(),
            err: io::Error::from_raw_os_error(13),
        };
        assert_eq!(
            e.to_string(),
            "block file 'root.img' is not writable: Permission denied"
        );
        assert_eq!(
            Error::DeviceMissing.to_string(),
            "/dev/lguest does not exist: is lg.ko loaded? run: sudo modprobe lg"
        );
        assert_eq!(
            Error::DevicePermission.to_string(),
            "cannot open /dev/lguest: permission denied (it is root-only; run lguest as root)"
        );
        assert_eq!(
            Error::UnknownOption {
                option: "--foo".into(),
                suggestion: None
            }
            .to_string(),
            "unknown option '--foo' (try 'lguest --help')"
        );
        assert_eq!(
            Error::MissingMemAndKernel.to_string(),
            "missing MEM and KERNEL arguments (try 'lguest --help')"
        );
    }
}
