//! The command line: `lguest [OPTIONS] MEM KERNEL [KERNEL-ARGS...]`.
//!
//! Two stages, kept apart so the first can be tested without a filesystem:
//! - [`parse`] turns argv into a [`Config`] (pure: clap plus our own value checks);
//! - [`check_files`] makes sure every file the config names can be used as intended.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use clap::builder::Arg;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Command, CommandFactory, FromArgMatches, Parser};
use lg_core::abi::{dev, MAX_GUEST_PAGES, PAGE_SIZE};

use crate::error::{BridgeNameProblem, Error, MemSizeProblem, Quoted, Role};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Smallest guest we accept: less cannot hold a kernel and its early page tables.
pub const MIN_MEM_BYTES: u64 = 2 * MIB;
/// Guest-physical space kept above RAM for the device page and the devices' pages (docs/abi.md
/// §3.4), so that any MEM we accept still fits in the ABI's limit with every device.
pub const DEVICE_RESERVE_BYTES: u64 = MIB;
/// Largest guest RAM we accept: the ABI's limit less [`DEVICE_RESERVE_BYTES`].
pub const MAX_MEM_BYTES: u64 = MAX_GUEST_PAGES * PAGE_SIZE - DEVICE_RESERVE_BYTES;
/// Devices the command line may ask for: the console takes the last place in the device page.
pub const MAX_DEVICES: usize = dev::MAX_DEVICES - 1;
// The device page and a page per device, the console's included.
const _: () = assert!((1 + dev::MAX_DEVICES as u64) * PAGE_SIZE <= DEVICE_RESERVE_BYTES);

/// Linux's IFNAMSIZ minus the terminating NUL.
const MAX_IFNAME_BYTES: usize = 15;

const EXAMPLE: &str = "\
Example:
  lguest 64m vmlinux --block=rootfile --tunnet=192.168.19.1 root=/dev/lgba

  As in the original lguest, lguest's own options may also follow MEM and KERNEL when written
  as --name=value (or --verbose); every other argument after KERNEL goes to the guest, and
  after '--' everything does.";

/// The clap view of the command line. Values are checked afterwards, in [`parse`], so that every
/// problem gets our own one-line message rather than clap's multi-line report.
#[derive(Parser, Debug)]
#[command(
    name = "lguest",
    bin_name = "lguest",
    about = "Run a Linux guest under the lguest hypervisor (lg.ko, through /dev/lguest)",
    override_usage = "lguest [OPTIONS] MEM KERNEL [KERNEL-ARGS...]",
    // clap's own -V/--version; parse() prints version_text() instead of clap's rendering.
    version = abi_version(),
    after_long_help = EXAMPLE
)]
struct Args {
    /// Print the configuration and progress to stderr
    #[arg(short, long, overrides_with = "verbose")]
    verbose: bool,

    /// Add a block device backed by FILE (repeatable)
    ///
    /// The first --block is the guest's /dev/lgba, the second /dev/lgbb, and so on.
    /// FILE must be a regular file or a block device that you can read and write.
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    block: Vec<PathBuf>,

    /// Add a network device on a new host TAP device (at most once)
    ///
    /// IP (an IPv4 address such as 192.168.19.1) is given to the host side of the
    /// TAP device; bridge:NAME adds the TAP device to the existing bridge NAME instead.
    #[arg(long, value_name = "IP|bridge:NAME", verbatim_doc_comment)]
    tunnet: Vec<String>,

    /// Add a network device shared through FILE with other guests (repeatable)
    ///
    /// Every guest started with the same FILE is on the same network. FILE is
    /// created if it does not exist yet; its directory must exist.
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    sharenet: Vec<PathBuf>,

    /// Load FILE as the guest's initial ramdisk (at most once)
    #[arg(long, value_name = "FILE")]
    initrd: Vec<PathBuf>,

    /// Guest memory size, e.g. 64m, 1g or 65536k
    ///
    /// A number of bytes with an optional k, m or g suffix (either case); a bare
    /// number means megabytes, as in the original lguest. It must be a whole number
    /// of 4k pages, at least 2m and at most 65535m (64g less 1m kept for devices).
    #[arg(value_name = "MEM", verbatim_doc_comment)]
    mem: String,

    /// Guest kernel image
    #[arg(value_name = "KERNEL")]
    kernel: PathBuf,

    /// Guest kernel command line (every argument after KERNEL, verbatim)
    ///
    /// Everything after KERNEL is joined with spaces and passed to the guest,
    /// including words that start with '-', except lguest's own --name=value options
    /// (and --verbose); after '--' everything goes to the guest.
    #[arg(value_name = "KERNEL-ARGS", num_args = 0.., verbatim_doc_comment)]
    kernel_args: Vec<String>,
}

/// A guest network device on a host TAP device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunNet {
    /// Host side address of the TAP device.
    Ip(Ipv4Addr),
    /// Bridge the TAP device is added to.
    Bridge(String),
}

/// One device option (`--block`, `--tunnet`, `--sharenet`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Block(PathBuf),
    Tunnet(TunNet),
    Sharenet(PathBuf),
}

/// Everything the launcher was asked to do, validated as far as possible without touching files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Guest memory: a whole number of pages in `MIN_MEM_BYTES..=MAX_MEM_BYTES`.
    pub mem_bytes: u64,
    pub kernel: PathBuf,
    /// The device options in command-line order, which is the guest's device order (the console,
    /// which needs no option, comes last). At most `MAX_DEVICES`, at most one tunnet.
    pub devices: Vec<DeviceSpec>,
    pub initrd: Option<PathBuf>,
    /// The guest's kernel command line.
    pub cmdline: String,
    pub verbose: bool,
}

impl Config {
    pub fn mem_pages(&self) -> u64 {
        self.mem_bytes / PAGE_SIZE
    }

    /// The block files, in guest order: `/dev/lgba`, `/dev/lgbb`, ...
    pub fn blocks(&self) -> Vec<&Path> {
        self.devices
            .iter()
            .filter_map(|d| match d {
                DeviceSpec::Block(p) => Some(p.as_path()),
                _ => None,
            })
            .collect()
    }

    pub fn tunnet(&self) -> Option<&TunNet> {
        self.devices.iter().find_map(|d| match d {
            DeviceSpec::Tunnet(t) => Some(t),
            _ => None,
        })
    }

    pub fn sharenets(&self) -> Vec<&Path> {
        self.devices
            .iter()
            .filter_map(|d| match d {
                DeviceSpec::Sharenet(p) => Some(p.as_path()),
                _ => None,
            })
            .collect()
    }

    /// Human-readable lines (without the `lguest: ` prefix) for `--verbose`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "memory: {} bytes ({}, {} pages)",
                self.mem_bytes,
                human_size(self.mem_bytes),
                self.mem_pages()
            ),
            format!("kernel: {}", quoted(&self.kernel)),
        ];
        match &self.initrd {
            Some(initrd) => lines.push(format!("initrd: {}", quoted(initrd))),
            None => lines.push("initrd: none".to_owned()),
        }
        let blocks = self.blocks();
        if blocks.is_empty() {
            lines.push("block devices: none".to_owned());
        }
        for (index, block) in blocks.into_iter().enumerate() {
            lines.push(format!(
                "block device /dev/{}: {}",
                block_device_name(index),
                quoted(block)
            ));
        }
        match self.tunnet() {
            Some(TunNet::Ip(ip)) => lines.push(format!("tunnet: TAP device, host address {ip}")),
            Some(TunNet::Bridge(name)) => lines.push(format!(
                "tunnet: TAP device on bridge {}",
                Quoted::new(OsStr::new(name))
            )),
            None => lines.push("tunnet: none".to_owned()),
        }
        let sharenets = self.sharenets();
        if sharenets.is_empty() {
            lines.push("sharenet: none".to_owned());
        }
        for sharenet in sharenets {
            lines.push(format!("sharenet: {}", quoted(sharenet)));
        }
        lines.push(format!("kernel command line: {:?}", self.cmdline));
        lines
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// `--help`: print this text to stdout and exit 0.
    Help(String),
    /// `--version`: likewise.
    Version(String),
    Run(Config),
}

/// Parses a whole argv (program name first). Pure: no file is looked at.
pub fn parse<I, T>(args: I) -> Result<Parsed, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut cmd = Args::command();
    cmd.build();
    let args = end_options_at_mem(&cmd, args.into_iter().map(Into::into).collect());
    let matches = match cmd.try_get_matches_from_mut(args) {
        Ok(matches) => matches,
        // -h gives clap's summary, --help the full text: either way what clap rendered.
        Err(e) if e.kind() == ErrorKind::DisplayHelp => {
            return Ok(Parsed::Help(e.render().to_string()));
        }
        Err(e) if e.kind() == ErrorKind::DisplayVersion => {
            return Ok(Parsed::Version(version_text()));
        }
        Err(e) => return Err(clap_error(&e)),
    };
    let args = Args::from_arg_matches(&matches).map_err(|e| clap_error(&e))?;
    let (mem, kernel) = (args.mem, args.kernel);
    // After MEM everything is positional, so an option written between MEM and KERNEL lands here.
    if kernel.as_os_str().as_encoded_bytes().starts_with(b"-") {
        return Err(Error::OptionAfterMem {
            arg: kernel.to_string_lossy().into_owned(),
        });
    }
    let mem_bytes = parse_mem_size(&mem).map_err(|problem| Error::BadMemSize {
        arg: mem.clone(),
        problem,
    })?;

    if let [first, second, ..] = args.tunnet.as_slice() {
        return Err(Error::DuplicateTunnet {
            first: first.clone(),
            second: second.clone(),
        });
    }
    let initrd = match args.initrd.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        [first, second, ..] => {
            return Err(Error::DuplicateInitrd {
                first: first.clone(),
                second: second.clone(),
            })
        }
    };

    // The guest's devices are numbered in command-line order across the three options: clap keeps
    // each option's values in order, and its argument indices interleave them.
    let positions = |id: &str| -> Vec<usize> {
        matches
            .indices_of(id)
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    let mut ordered: Vec<(usize, DeviceSpec)> = Vec::new();
    for (at, path) in positions("block").into_iter().zip(args.block) {
        ordered.push((at, DeviceSpec::Block(path)));
    }
    for (at, value) in positions("tunnet").into_iter().zip(&args.tunnet) {
        ordered.push((at, DeviceSpec::Tunnet(parse_tunnet(value)?)));
    }
    for (at, path) in positions("sharenet").into_iter().zip(args.sharenet) {
        ordered.push((at, DeviceSpec::Sharenet(path)));
    }
    ordered.sort_by_key(|(at, _)| *at);
    let devices: Vec<DeviceSpec> = ordered.into_iter().map(|(_, d)| d).collect();
    if devices.len() > MAX_DEVICES {
        return Err(Error::TooManyDevices {
            count: devices.len(),
        });
    }

    Ok(Parsed::Run(Config {
        mem_bytes,
        kernel,
        devices,
        initrd,
        cmdline: args.kernel_args.join(" "),
        verbose: args.verbose,
    }))
}

/// Reorders argv for clap. Before MEM, options are options (and `--block FILE` takes the next word).
/// From MEM on, words are positional (MEM, KERNEL, then the guest's command line) except our own
/// options written as `--name=value` or `--verbose`, which are hoisted in front: the original
/// lguest's documented form `lguest 64m vmlinux --block=rootfile root=/dev/lgba` works, while a guest
/// argument such as `-s` or `--foo` is never taken for ours. `--` ends all option processing.
fn end_options_at_mem(cmd: &Command, args: Vec<OsString>) -> Vec<OsString> {
    let mut opts = Vec::with_capacity(args.len() + 1);
    let mut positional = Vec::new();
    let mut rest = args.into_iter();
    opts.extend(rest.next()); // the program name
    while let Some(arg) = rest.next() {
        let bytes = arg.as_encoded_bytes();
        if bytes == b"--" {
            positional.extend(rest.by_ref());
            break;
        }
        if bytes.len() < 2 || !bytes.starts_with(b"-") {
            // "-" on its own is a value by convention.
            positional.push(arg);
            break;
        }
        let value_follows = takes_separate_value(cmd, &arg);
        opts.push(arg);
        if value_follows {
            opts.extend(rest.next());
        }
    }
    while let Some(arg) = rest.next() {
        if arg.as_encoded_bytes() == b"--" {
            positional.extend(rest.by_ref());
            break;
        }
        if is_hoistable_option(cmd, &arg) {
            opts.push(arg);
        } else {
            positional.push(arg);
        }
    }
    opts.push(OsString::from("--"));
    opts.extend(positional);
    opts
}

/// `--name=value` for one of our value-taking options, or `--verbose`.
fn is_hoistable_option(cmd: &Command, arg: &OsStr) -> bool {
    let Some(long) = arg.to_str().and_then(|w| w.strip_prefix("--")) else {
        return false;
    };
    if long == "verbose" {
        return true;
    }
    let Some((name, _)) = long.split_once('=') else {
        return false;
    };
    cmd.get_arguments()
        .any(|a| a.get_long() == Some(name) && a.get_action().takes_values())
}

/// Whether option word `arg` (starting with '-') is an option whose value is the next argument,
/// as in `--block FILE`. Unknown options say no: clap reports them.
fn takes_separate_value(cmd: &Command, arg: &OsStr) -> bool {
    let takes_value = |a: &Arg| a.get_action().takes_values();
    let Some(word) = arg.to_str() else {
        return false;
    };
    if let Some(long) = word.strip_prefix("--") {
        return !long.contains('=')
            && cmd
                .get_arguments()
                .any(|a| a.get_long() == Some(long) && takes_value(a));
    }
    // A cluster like "-vX": the first letter that takes a value uses the rest of the word, or the
    // next argument when it is the last letter.
    let cluster = word.strip_prefix('-').unwrap_or(word);
    for (at, letter) in cluster.char_indices() {
        match cmd.get_arguments().find(|a| a.get_short() == Some(letter)) {
            Some(a) if takes_value(a) => return at + letter.len_utf8() == cluster.len(),
            Some(_) => {}
            None => return false,
        }
    }
    false
}

/// One of our one-line errors for a clap error (never clap's own multi-line report).
fn clap_error(e: &clap::Error) -> Error {
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match e.kind() {
        ErrorKind::UnknownArgument => Error::UnknownOption {
            option: context(ContextKind::InvalidArg).unwrap_or_default(),
            suggestion: context(ContextKind::SuggestedArg),
        },
        // clap says "--block <FILE>" for the argument; a value it rejected is always empty here,
        // since no option of ours restricts its values.
        ErrorKind::InvalidValue | ErrorKind::NoEquals
            if context(ContextKind::InvalidValue)
                .unwrap_or_default()
                .is_empty() =>
        {
            let arg = context(ContextKind::InvalidArg).unwrap_or_default();
            let (option, value_name) = arg.split_once(' ').unwrap_or((&arg, "VALUE"));
            Error::MissingValue {
                option: option.to_owned(),
                value_name: value_name
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned(),
            }
        }
        ErrorKind::MissingRequiredArgument => match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::Strings(missing)) if missing.iter().any(|m| m.contains("MEM")) => {
                Error::MissingMemAndKernel
            }
            _ => Error::MissingKernel,
        },
        ErrorKind::InvalidUtf8 => Error::NotUtf8,
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            Error::Usage(first.trim_start_matches("error: ").to_owned())
        }
    }
}

/// `--version` text.
pub fn version_text() -> String {
    format!("lguest {}\n", abi_version())
}

fn abi_version() -> String {
    format!(
        "{} (guest ABI {})",
        env!("CARGO_PKG_VERSION"),
        lg_core::abi::VERSION
    )
}

/// Parses MEM: digits and an optional k/m/g (either case); no suffix means MiB, as the original's
/// bare megabyte count did. Overflow is "too large", never a wrap.
pub fn parse_mem_size(arg: &str) -> Result<u64, MemSizeProblem> {
    let (digits, unit) = if let Some(d) = arg.strip_suffix(['k', 'K']) {
        (d, KIB)
    } else if let Some(d) = arg.strip_suffix(['m', 'M']) {
        (d, MIB)
    } else if let Some(d) = arg.strip_suffix(['g', 'G']) {
        (d, GIB)
    } else {
        (arg, MIB)
    };
    // Checked by hand because u64's FromStr also takes a leading '+'.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MemSizeProblem::Syntax);
    }
    // Only digits are left, so the parse can fail only by overflowing.
    let count: u64 = digits.parse().map_err(|_| MemSizeProblem::TooLarge)?;
    let bytes = count.checked_mul(unit).ok_or(MemSizeProblem::TooLarge)?;
    if bytes < MIN_MEM_BYTES {
        Err(MemSizeProblem::TooSmall)
    } else if bytes > MAX_MEM_BYTES {
        Err(MemSizeProblem::TooLarge)
    } else if !bytes.is_multiple_of(PAGE_SIZE) {
        Err(MemSizeProblem::NotPageMultiple)
    } else {
        Ok(bytes)
    }
}

/// Parses `--tunnet`: `bridge:NAME` or the host side's IPv4 address.
pub fn parse_tunnet(arg: &str) -> Result<TunNet, Error> {
    if let Some(name) = arg.strip_prefix("bridge:") {
        check_bridge_name(name).map_err(|problem| Error::BadBridgeName {
            name: name.to_owned(),
            problem,
        })?;
        return Ok(TunNet::Bridge(name.to_owned()));
    }
    let ip: Ipv4Addr = arg.parse().map_err(|_| Error::BadTunnet {
        arg: arg.to_owned(),
    })?;
    // These would be accepted by the TAP setup ioctls and then give a network nobody can reach.
    let why = if ip.is_unspecified() {
        "0.0.0.0 is not a host address"
    } else if ip.is_broadcast() {
        "the broadcast address is not a host address"
    } else if ip.is_multicast() {
        "a multicast address is not a host address"
    } else {
        return Ok(TunNet::Ip(ip));
    };
    Err(Error::BadTunnetIp { ip, why })
}

/// The kernel's `dev_valid_name()` rules (which also forbid ':'), plus no control characters.
pub fn check_bridge_name(name: &str) -> Result<(), BridgeNameProblem> {
    if name.is_empty() {
        return Err(BridgeNameProblem::Empty);
    }
    if name.len() > MAX_IFNAME_BYTES {
        return Err(BridgeNameProblem::TooLong);
    }
    if name == "." || name == ".." {
        return Err(BridgeNameProblem::DotName);
    }
    match name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some(c) => Err(BridgeNameProblem::BadChar(c)),
        None => Ok(()),
    }
}

/// The guest's name for block device number `index`: lgba..lgbz, then lgbaa, ... like sd names.
pub fn block_device_name(index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index;
    loop {
        letters.push(char::from(b'a' + (n % 26) as u8));
        match (n / 26).checked_sub(1) {
            Some(next) => n = next,
            None => break,
        }
    }
    letters
        .into_iter()
        .rev()
        .fold("lgb".to_owned(), |mut s, c| {
            s.push(c);
            s
        })
}

/// `bytes` in the largest k/m/g unit that divides it exactly, as MEM would be written.
pub fn human_size(bytes: u64) -> String {
    let mut s = String::new();
    let _ = match bytes {
        0 => write!(s, "0"),
        b if b.is_multiple_of(GIB) => write!(s, "{}g", b / GIB),
        b if b.is_multiple_of(MIB) => write!(s, "{}m", b / MIB),
        b if b.is_multiple_of(KIB) => write!(s, "{}k", b / KIB),
        b => write!(s, "{b} bytes"),
    };
    s
}

fn quoted(path: &Path) -> Quoted<'_> {
    Quoted::new(path.as_os_str())
}

// ---- Checking files: everything below touches the filesystem. ----

/// Checks every file named in `config` can be used as intended. Each file is stat()ed before it is
/// opened, so a FIFO or device node given by mistake is refused without being opened.
pub fn check_files(config: &Config) -> Result<(), Error> {
    check_readable_file(Role::Kernel, &config.kernel)?;
    if let Some(initrd) = &config.initrd {
        check_readable_file(Role::Initrd, initrd)?;
    }
    for device in &config.devices {
        match device {
            DeviceSpec::Block(path) => check_block_file(path)?,
            DeviceSpec::Sharenet(path) => check_sharenet_file(path)?,
            DeviceSpec::Tunnet(_) => {}
        }
    }
    Ok(())
}

/// A regular file we can read (kernel, initrd). A directory is not a regular file.
pub fn check_readable_file(role: Role, path: &Path) -> Result<(), Error> {
    let cannot_open = |err| Error::CannotOpen {
        role,
        path: path.to_owned(),
        err,
    };
    let meta = fs::metadata(path).map_err(cannot_open)?;
    if !meta.is_file() {
        return Err(Error::NotRegularFile {
            role,
            path: path.to_owned(),
        });
    }
    File::open(path).map_err(cannot_open)?;
    Ok(())
}

/// A regular file or block device we can read and write (a guest disk).
pub fn check_block_file(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let role = Role::Block;
    let cannot_open = |err| Error::CannotOpen {
        role,
        path: path.to_owned(),
        err,
    };
    let meta = fs::metadata(path).map_err(cannot_open)?;
    if !meta.is_file() && !meta.file_type().is_block_device() {
        return Err(Error::NotFileOrBlockDevice {
            role,
            path: path.to_owned(),
        });
    }
    File::open(path).map_err(cannot_open)?;
    open_read_write(path).map_err(|err| Error::NotWritable {
        role,
        path: path.to_owned(),
        err,
    })
}

/// A sharenet file: created later if missing, so only its directory has to exist; if it does
/// exist it must be a regular file we can read and write.
pub fn check_sharenet_file(path: &Path) -> Result<(), Error> {
    let role = Role::ShareNet;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match fs::metadata(dir) {
        Err(err) => {
            return Err(Error::NoParentDir {
                path: path.to_owned(),
                dir: dir.to_owned(),
                err,
            })
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(Error::ParentNotDir {
                path: path.to_owned(),
                dir: dir.to_owned(),
            })
        }
        Ok(_) => {}
    }
    match fs::metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::CannotOpen {
            role,
            path: path.to_owned(),
            err,
        }),
        Ok(meta) if !meta.is_file() => Err(Error::NotRegularFile {
            role,
            path: path.to_owned(),
        }),
        Ok(_) => open_read_write(path).map_err(|err| Error::NotWritable {
            role,
            path: path.to_owned(),
            err,
        }),
    }
}

fn open_read_write(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn parse_ok(args: &[&str]) -> Config {
        let argv = std::iter::once("lguest").chain(args.iter().copied());
        match parse(argv) {
            Ok(Parsed::Run(config)) => config,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn parse_err(args: &[&str]) -> Error {
        let argv = std::iter::once("lguest").chain(args.iter().copied());
        match parse(argv) {
            Err(e) => e,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn mem(arg: &str) -> Result<u64, MemSizeProblem> {
        parse_mem_size(arg)
    }

    // ---- MEM ----

    #[test]
    fn mem_sizes_with_suffixes() {
        assert_eq!(mem("64m"), Ok(64 * MIB));
        assert_eq!(mem("64M"), Ok(64 * MIB));
        assert_eq!(mem("1g"), Ok(GIB));
        assert_eq!(mem("1G"), Ok(GIB));
        assert_eq!(mem("65536k"), Ok(64 * MIB));
        assert_eq!(mem("65536K"), Ok(64 * MIB));
        assert_eq!(mem("064m"), Ok(64 * MIB));
    }

    #[test]
    fn bare_number_means_megabytes() {
        assert_eq!(mem("64"), Ok(64 * MIB));
        assert_eq!(mem("2"), Ok(2 * MIB));
    }

    #[test]
    fn mem_limits() {
        assert_eq!(mem("0"), Err(MemSizeProblem::TooSmall));
        assert_eq!(mem("0m"), Err(MemSizeProblem::TooSmall));
        assert_eq!(mem("1m"), Err(MemSizeProblem::TooSmall));
        assert_eq!(mem("2047k"), Err(MemSizeProblem::TooSmall));
        assert_eq!(mem("2048k"), Ok(MIN_MEM_BYTES));
        assert_eq!(mem("65535m"), Ok(MAX_MEM_BYTES));
        assert_eq!(mem("64g"), Err(MemSizeProblem::TooLarge));
        assert_eq!(mem("65537m"), Err(MemSizeProblem::TooLarge));
        assert_eq!(mem("65g"), Err(MemSizeProblem::TooLarge));
    }

    #[test]
    fn mem_overflow_is_too_large() {
        // Does not fit in a u64 at all.
        assert_eq!(mem("99999999999999999999g"), Err(MemSizeProblem::TooLarge));
        assert_eq!(mem("99999999999999999999"), Err(MemSizeProblem::TooLarge));
        // Fits, but the multiplication by the unit overflows.
        assert_eq!(mem("17179869184g"), Err(MemSizeProblem::TooLarge));
        assert_eq!(
            mem(&format!("{}k", u64::MAX)),
            Err(MemSizeProblem::TooLarge)
        );
    }

    #[test]
    fn mem_must_be_whole_pages() {
        assert_eq!(mem("4097k"), Err(MemSizeProblem::NotPageMultiple));
        assert_eq!(mem("4100k"), Ok(4100 * KIB));
        assert_eq!(mem("4099k"), Err(MemSizeProblem::NotPageMultiple));
    }

    #[test]
    fn mem_syntax_errors() {
        for bad in [
            "64x", "", "m", "k", "-64m", "+64m", " 64m", "64m ", "6 4m", "64mb", "64MiB", "0x40m",
            "1.5g", "64mm", "٤m",
        ] {
            assert_eq!(mem(bad), Err(MemSizeProblem::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn bad_mem_message_names_the_argument() {
        let e = parse_err(&["64x", "vmlinux"]);
        assert!(
            matches!(e, Error::BadMemSize { ref arg, problem: MemSizeProblem::Syntax } if arg == "64x")
        );
        assert_eq!(
            e.to_string(),
            "bad memory size '64x': expected a number of bytes with an optional k, m or g suffix, e.g. 64m"
        );
        assert_eq!(
            parse_err(&["4097k", "vmlinux"]).to_string(),
            "bad memory size '4097k': not a whole number of 4k pages"
        );
        assert_eq!(
            parse_err(&["1m", "vmlinux"]).to_string(),
            "bad memory size '1m': too small: a guest needs at least 2m"
        );
        assert_eq!(
            parse_err(&["99999999999999999999g", "vmlinux"]).to_string(),
            "bad memory size '99999999999999999999g': too large: at most 65535m is supported"
        );
    }

    // ---- the shape of the command line ----

    #[test]
    fn minimal_command_line() {
        let c = parse_ok(&["64m", "vmlinux"]);
        assert_eq!(
            c,
            Config {
                mem_bytes: 64 * MIB,
                kernel: PathBuf::from("vmlinux"),
                devices: vec![],
                initrd: None,
                cmdline: String::new(),
                verbose: false,
            }
        );
        assert_eq!(c.mem_pages(), 16384);
    }

    #[test]
    fn everything_together() {
        let c = parse_ok(&[
            "-v",
            "--block=root.img",
            "--tunnet=192.168.19.1",
            "--sharenet=/tmp/net",
            "--initrd=initrd.img",
            "1g",
            "vmlinux",
            "root=/dev/lgba",
            "console=hvc0",
        ]);
        assert!(c.verbose);
        assert_eq!(c.mem_bytes, GIB);
        assert_eq!(c.blocks(), [Path::new("root.img")]);
        assert_eq!(
            c.tunnet(),
            Some(&TunNet::Ip(Ipv4Addr::new(192, 168, 19, 1)))
        );
        assert_eq!(c.sharenets(), [Path::new("/tmp/net")]);
        assert_eq!(c.initrd, Some(PathBuf::from("initrd.img")));
        assert_eq!(c.cmdline, "root=/dev/lgba console=hvc0");
    }

    #[test]
    fn option_values_may_be_separate_words() {
        let c = parse_ok(&[
            "--block",
            "a.img",
            "--tunnet",
            "bridge:br0",
            "--initrd",
            "rd",
            "--verbose",
            "64m",
            "vmlinux",
        ]);
        assert_eq!(c.blocks(), [Path::new("a.img")]);
        assert_eq!(c.tunnet(), Some(&TunNet::Bridge("br0".into())));
        assert_eq!(c.initrd, Some(PathBuf::from("rd")));
        assert!(c.verbose);
    }

    #[test]
    fn option_order_among_options_does_not_matter() {
        let a = parse_ok(&["--initrd=rd", "-v", "--block=a", "64m", "k"]);
        let b = parse_ok(&["--block=a", "--initrd=rd", "-v", "64m", "k"]);
        assert_eq!(a, b);
        // Repeating a flag is harmless.
        assert!(parse_ok(&["-v", "-v", "--verbose", "64m", "k"]).verbose);
        assert!(parse_ok(&["-vv", "64m", "k"]).verbose);
    }

    #[test]
    fn blocks_keep_their_order() {
        let c = parse_ok(&[
            "--block=first",
            "--sharenet=n1",
            "--block",
            "second",
            "--block=third",
            "--sharenet=n2",
            "64m",
            "vmlinux",
        ]);
        assert_eq!(
            c.blocks(),
            [Path::new("first"), Path::new("second"), Path::new("third")]
        );
        assert_eq!(c.sharenets(), [Path::new("n1"), Path::new("n2")]);
        // The device order interleaves the options as given.
        let kinds: Vec<&str> = c
            .devices
            .iter()
            .map(|d| match d {
                DeviceSpec::Block(_) => "block",
                DeviceSpec::Tunnet(_) => "tunnet",
                DeviceSpec::Sharenet(_) => "sharenet",
            })
            .collect();
        assert_eq!(kinds, ["block", "sharenet", "block", "block", "sharenet"]);
        assert_eq!(c.devices[1], DeviceSpec::Sharenet("n1".into()));
        let names: Vec<String> = (0..3).map(block_device_name).collect();
        assert_eq!(names, ["lgba", "lgbb", "lgbc"]);
    }

    #[test]
    fn kernel_args_are_verbatim_even_with_hyphens() {
        let c = parse_ok(&["64m", "vmlinux", "root=/dev/lgba", "--foo"]);
        assert_eq!(c.cmdline, "root=/dev/lgba --foo");
        // Short options, unknown options and --help/--version after KERNEL belong to the guest;
        // after "--" even our own --name=value options do.
        let c = parse_ok(&[
            "64m",
            "vmlinux",
            "-v",
            "--help",
            "--version",
            "--",
            "--block=x",
            "-",
            "a  b",
        ]);
        assert_eq!(c.cmdline, "-v --help --version --block=x - a  b");
        assert!(c.blocks().is_empty());
        assert!(!c.verbose);
    }

    #[test]
    fn explicit_double_dash_ends_options() {
        let c = parse_ok(&["-v", "--", "64m", "vmlinux", "--", "x"]);
        assert!(c.verbose);
        assert_eq!(c.cmdline, "-- x");
    }

    #[test]
    fn seed_command_line_with_options_after_kernel() {
        let c = parse_ok(&[
            "64m",
            "vmlinux",
            "--block=rootfile",
            "--tunnet=192.168.19.1",
            "--sharenet=/tmp/lan0",
            "root=/dev/lgba",
            "-s",
            "--foo",
        ]);
        assert_eq!(c.blocks(), [Path::new("rootfile")]);
        assert_eq!(
            c.tunnet(),
            Some(&TunNet::Ip("192.168.19.1".parse().unwrap()))
        );
        assert_eq!(c.sharenets(), [Path::new("/tmp/lan0")]);
        assert_eq!(c.cmdline, "root=/dev/lgba -s --foo");
        // Between MEM and KERNEL too; and --verbose anywhere.
        let c = parse_ok(&["64m", "--block=a", "vmlinux", "--verbose", "--block=b", "x"]);
        assert_eq!(c.blocks(), [Path::new("a"), Path::new("b")]);
        assert!(c.verbose);
        assert_eq!(c.cmdline, "x");
        // After "--" nothing is ours.
        let c = parse_ok(&["64m", "vmlinux", "--", "--block=x"]);
        assert!(c.blocks().is_empty());
        assert_eq!(c.cmdline, "--block=x");
    }

    #[test]
    fn separate_value_options_after_mem_are_refused() {
        let e = parse_err(&["64m", "--block", "x", "vmlinux"]);
        assert!(
            matches!(e, Error::OptionAfterMem { ref arg } if arg == "--block"),
            "{e:?}"
        );
        assert!(matches!(
            parse_err(&["64m", "-v", "vmlinux"]),
            Error::OptionAfterMem { .. }
        ));
        assert!(matches!(
            parse_err(&["64m", "--bogus"]),
            Error::OptionAfterMem { .. }
        ));
    }

    #[test]
    fn missing_positionals() {
        let e = parse_err(&[]);
        assert!(matches!(e, Error::MissingMemAndKernel));
        assert_eq!(
            e.to_string(),
            "missing MEM and KERNEL arguments (try 'lguest --help')"
        );
        assert!(matches!(
            parse_err(&["-v", "--block=x"]),
            Error::MissingMemAndKernel
        ));
        let e = parse_err(&["64m"]);
        assert!(matches!(e, Error::MissingKernel));
        assert_eq!(
            e.to_string(),
            "missing KERNEL argument (try 'lguest --help')"
        );
        // The value of --block is not MEM.
        assert!(matches!(
            parse_err(&["--block", "64m", "vmlinux"]),
            Error::MissingKernel
        ));
    }

    #[test]
    fn unknown_options() {
        let e = parse_err(&["--foo", "64m", "vmlinux"]);
        assert_eq!(
            e.to_string(),
            "unknown option '--foo' (try 'lguest --help')"
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        let e = parse_err(&["--foo=bar", "64m", "vmlinux"]);
        assert!(
            matches!(e, Error::UnknownOption { ref option, .. } if option == "--foo"),
            "{e:?}"
        );
        let e = parse_err(&["-x", "64m", "vmlinux"]);
        assert!(
            matches!(e, Error::UnknownOption { ref option, .. } if option == "-x"),
            "{e:?}"
        );
        let e = parse_err(&["--blok=a", "64m", "vmlinux"]);
        assert_eq!(
            e.to_string(),
            "unknown option '--blok' (did you mean '--block'? try 'lguest --help')"
        );
    }

    #[test]
    fn options_without_values() {
        let e = parse_err(&["--block"]);
        assert!(
            matches!(e, Error::MissingValue { ref option, ref value_name } if option == "--block" && value_name == "FILE"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "option '--block' needs a value: --block=FILE (try 'lguest --help')"
        );
        let e = parse_err(&["--initrd=", "64m", "vmlinux"]);
        assert!(
            matches!(e, Error::MissingValue { ref option, .. } if option == "--initrd"),
            "{e:?}"
        );
        let e = parse_err(&["--tunnet"]);
        assert!(
            matches!(e, Error::MissingValue { ref value_name, .. } if value_name == "IP|bridge:NAME"),
            "{e:?}"
        );
    }

    #[test]
    fn other_clap_errors_are_one_line() {
        let e = parse_err(&["--verbose=yes", "64m", "vmlinux"]);
        assert!(matches!(e, Error::Usage(_)), "{e:?}");
        let line = e.to_string();
        assert!(!line.contains('\n') && !line.starts_with("error"), "{line}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_kernel_args_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        let argv = vec![
            OsString::from("lguest"),
            OsString::from("64m"),
            OsString::from("vmlinux"),
            OsString::from_vec(vec![0xff, b'x']),
        ];
        assert!(matches!(parse(argv), Err(Error::NotUtf8)));
    }

    // ---- --tunnet and --initrd ----

    #[test]
    fn tunnet_values() {
        assert_eq!(
            parse_tunnet("10.0.0.1").ok(),
            Some(TunNet::Ip(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(
            parse_tunnet("bridge:br0").ok(),
            Some(TunNet::Bridge("br0".into()))
        );
        assert_eq!(
            parse_tunnet("bridge:abcdefghijklmno").ok(),
            Some(TunNet::Bridge("abcdefghijklmno".into()))
        );
        for bad in [
            "",
            "10.0.0",
            "10.0.0.256",
            "::1",
            "host.example",
            "bridge",
            "Bridge:br0",
        ] {
            assert!(
                matches!(parse_tunnet(bad), Err(Error::BadTunnet { .. })),
                "{bad:?}"
            );
        }
        for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1"] {
            assert!(
                matches!(parse_tunnet(bad), Err(Error::BadTunnetIp { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_err(&["--tunnet=10.0.0", "64m", "k"]).to_string(),
            "bad --tunnet '10.0.0': expected an IPv4 address (e.g. 192.168.19.1) or bridge:NAME"
        );
    }

    #[test]
    fn bad_bridge_names() {
        use BridgeNameProblem::*;
        assert_eq!(check_bridge_name(""), Err(Empty));
        assert_eq!(check_bridge_name("abcdefghijklmnop"), Err(TooLong));
        // 15 bytes but more characters would not fit either: the limit is in bytes.
        assert_eq!(check_bridge_name("ééééééééé"), Err(TooLong));
        assert_eq!(check_bridge_name("."), Err(DotName));
        assert_eq!(check_bridge_name(".."), Err(DotName));
        assert_eq!(check_bridge_name("br/0"), Err(BadChar('/')));
        assert_eq!(check_bridge_name("br 0"), Err(BadChar(' ')));
        assert_eq!(check_bridge_name("br\t0"), Err(BadChar('\t')));
        assert_eq!(check_bridge_name("br:0"), Err(BadChar(':')));
        assert_eq!(check_bridge_name("..."), Ok(()));
        assert_eq!(check_bridge_name("br-lan.10"), Ok(()));
        let e = parse_err(&["--tunnet=bridge:a/b", "64m", "k"]);
        assert_eq!(
            e.to_string(),
            "bad bridge name 'a/b': '/' is not allowed in an interface name"
        );
        assert!(matches!(
            parse_err(&["--tunnet=bridge:", "64m", "k"]),
            Error::BadBridgeName { problem: Empty, .. }
        ));
    }

    #[test]
    fn double_tunnet_is_refused() {
        let e = parse_err(&["--tunnet=10.0.0.1", "--tunnet=bridge:br0", "64m", "k"]);
        assert!(matches!(e, Error::DuplicateTunnet { .. }));
        assert_eq!(
            e.to_string(),
            "--tunnet given twice ('10.0.0.1' and 'bridge:br0'): a guest has at most one tunnet device"
        );
        // Even the same value twice.
        assert!(matches!(
            parse_err(&["--tunnet=10.0.0.1", "--tunnet", "10.0.0.1", "64m", "k"]),
            Error::DuplicateTunnet { .. }
        ));
    }

    #[test]
    fn at_most_fifteen_devices() {
        let mut args: Vec<String> = (0..15).map(|i| format!("--block=b{i}")).collect();
        args.extend(["64m".to_owned(), "k".to_owned()]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(parse_ok(&argv).devices.len(), 15);
        let mut args: Vec<String> = (0..15).map(|i| format!("--sharenet=n{i}")).collect();
        args.extend([
            "--tunnet=10.0.0.1".to_owned(),
            "64m".to_owned(),
            "k".to_owned(),
        ]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = parse_err(&argv);
        assert!(matches!(e, Error::TooManyDevices { count: 16 }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "too many devices: 16 given, at most 15 (the console takes the 16th place in the \
             device page)"
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
    }

    #[test]
    fn tunnet_takes_its_place_in_the_order() {
        let c = parse_ok(&[
            "--sharenet=a",
            "64m",
            "k",
            "--tunnet=10.0.0.1",
            "--block=x",
            "root=/dev/lgba",
        ]);
        assert_eq!(
            c.devices,
            [
                DeviceSpec::Sharenet("a".into()),
                DeviceSpec::Tunnet(TunNet::Ip(Ipv4Addr::new(10, 0, 0, 1))),
                DeviceSpec::Block("x".into()),
            ]
        );
    }

    #[test]
    fn double_initrd_is_refused() {
        let e = parse_err(&["--initrd=a", "--initrd=b", "64m", "k"]);
        assert!(matches!(e, Error::DuplicateInitrd { .. }));
        assert!(e
            .to_string()
            .starts_with("--initrd given twice ('a' and 'b')"));
    }

    // ---- --help, --version, --verbose ----

    #[test]
    fn version_text_names_the_abi() {
        let expected = format!(
            "lguest {} (guest ABI {})\n",
            env!("CARGO_PKG_VERSION"),
            lg_core::abi::VERSION
        );
        assert_eq!(
            parse(["lguest", "--version"]).ok(),
            Some(Parsed::Version(expected.clone()))
        );
        assert_eq!(
            parse(["lguest", "-V"]).ok(),
            Some(Parsed::Version(expected))
        );
        assert!(version_text().starts_with("lguest 0."));
    }

    #[test]
    fn help_describes_every_option() {
        let Ok(Parsed::Help(text)) = parse(["lguest", "--help"]) else {
            panic!("--help did not give help");
        };
        for needle in [
            "--verbose",
            "--block",
            "--tunnet",
            "bridge:NAME",
            "--sharenet",
            "--initrd",
            "--version",
            "MEM",
            "KERNEL",
            "KERNEL-ARGS",
            "lguest 64m vmlinux --block=rootfile --tunnet=192.168.19.1 root=/dev/lgba",
        ] {
            assert!(text.contains(needle), "help lacks {needle:?}:\n{text}");
        }
        // --help wins even with other arguments.
        assert_eq!(
            parse(["lguest", "-v", "--help", "64m"]).ok(),
            Some(Parsed::Help(text.clone()))
        );
        // -h is the summary: every option, without the long descriptions and the example.
        let Ok(Parsed::Help(short)) = parse(["lguest", "-h"]) else {
            panic!("-h did not give help");
        };
        assert!(short.len() < text.len());
        for needle in [
            "--verbose",
            "--block",
            "--tunnet",
            "--sharenet",
            "--initrd",
            "MEM",
        ] {
            assert!(short.contains(needle), "-h lacks {needle:?}:\n{short}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn describe_lists_the_configuration() {
        let c = parse_ok(&[
            "--block=a.img",
            "--block=b.img",
            "--tunnet=bridge:br0",
            "64m",
            "vmlinux",
            "root=/dev/lgba",
        ]);
        let text = c.describe().join("\n");
        for needle in [
            "memory: 67108864 bytes (64m, 16384 pages)",
            "kernel: 'vmlinux'",
            "initrd: none",
            "block device /dev/lgba: 'a.img'",
            "block device /dev/lgbb: 'b.img'",
            "tunnet: TAP device on bridge 'br0'",
            "sharenet: none",
            "kernel command line: \"root=/dev/lgba\"",
        ] {
            assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
        }
    }

    #[test]
    fn block_device_names_go_past_z() {
        assert_eq!(block_device_name(0), "lgba");
        assert_eq!(block_device_name(25), "lgbz");
        assert_eq!(block_device_name(26), "lgbaa");
        assert_eq!(block_device_name(27), "lgbab");
        assert_eq!(block_device_name(26 + 26 * 26), "lgbaaa");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(64 * MIB), "64m");
        assert_eq!(human_size(GIB), "1g");
        assert_eq!(human_size(4100 * KIB), "4100k");
        assert_eq!(human_size(5), "5 bytes");
        assert_eq!(human_size(0), "0");
    }

    // ---- checking files ----

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "lguest-cli-test-{}-{}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir(&path).expect("create temp dir");
            TempDir(path)
        }

        fn file(&self, name: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, b"contents").expect("write temp file");
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn config_with_kernel(kernel: PathBuf) -> Config {
        Config {
            mem_bytes: 64 * MIB,
            kernel,
            devices: vec![],
            initrd: None,
            cmdline: String::new(),
            verbose: false,
        }
    }

    #[test]
    fn good_files_pass() {
        let dir = TempDir::new();
        let mut c = config_with_kernel(dir.file("vmlinux", 0o644));
        c.initrd = Some(dir.file("initrd", 0o444));
        c.devices = vec![
            DeviceSpec::Block(dir.file("a.img", 0o600)),
            DeviceSpec::Sharenet(dir.0.join("net-not-yet")),
            DeviceSpec::Block(dir.file("b.img", 0o600)),
            DeviceSpec::Sharenet(dir.file("net-exists", 0o600)),
        ];
        check_files(&c).expect("all files are fine");
    }

    #[test]
    fn missing_kernel() {
        let dir = TempDir::new();
        let kernel = dir.0.join("vmlinux");
        let e = check_files(&config_with_kernel(kernel.clone())).expect_err("no kernel");
        assert!(
            matches!(
                e,
                Error::CannotOpen {
                    role: Role::Kernel,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "cannot open kernel '{}': No such file or directory",
                kernel.display()
            )
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_FAILURE);
    }

    #[test]
    fn kernel_that_is_a_directory() {
        let dir = TempDir::new();
        let e = check_files(&config_with_kernel(dir.0.clone())).expect_err("dir");
        assert!(
            matches!(
                e,
                Error::NotRegularFile {
                    role: Role::Kernel,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().ends_with("is not a regular file"));
    }

    #[test]
    fn kernel_that_is_unreadable() {
        let dir = TempDir::new();
        let kernel = dir.file("vmlinux", 0o000);
        let result = check_readable_file(Role::Kernel, &kernel);
        if is_root() {
            // Permission bits do not stop root.
            assert!(result.is_ok());
        } else {
            let e = result.expect_err("unreadable");
            assert_eq!(
                e.to_string(),
                format!(
                    "cannot open kernel '{}': Permission denied",
                    kernel.display()
                )
            );
        }
    }

    #[test]
    fn initrd_is_checked() {
        let dir = TempDir::new();
        let mut c = config_with_kernel(dir.file("vmlinux", 0o644));
        c.initrd = Some(dir.0.join("nope"));
        let e = check_files(&c).expect_err("no initrd");
        assert!(
            matches!(
                e,
                Error::CannotOpen {
                    role: Role::Initrd,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn block_files() {
        let dir = TempDir::new();
        let ro = dir.file("ro.img", 0o444);
        let result = check_block_file(&ro);
        if is_root() {
            assert!(result.is_ok());
        } else {
            let e = result.expect_err("read-only block file");
            assert!(
                matches!(
                    e,
                    Error::NotWritable {
                        role: Role::Block,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "block file '{}' is not writable: Permission denied",
                    ro.display()
                )
            );
        }
        let e = check_block_file(&dir.0.join("missing.img")).expect_err("missing");
        assert!(
            matches!(
                e,
                Error::CannotOpen {
                    role: Role::Block,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = check_block_file(&dir.0).expect_err("directory");
        assert!(matches!(e, Error::NotFileOrBlockDevice { .. }), "{e:?}");
        // A character device is not a disk.
        let e = check_block_file(Path::new("/dev/null")).expect_err("char device");
        assert!(matches!(e, Error::NotFileOrBlockDevice { .. }), "{e:?}");
    }

    #[test]
    fn block_files_are_checked_in_order() {
        let dir = TempDir::new();
        let mut c = config_with_kernel(dir.file("vmlinux", 0o644));
        c.devices = vec![
            DeviceSpec::Block(dir.file("ok.img", 0o600)),
            DeviceSpec::Block(dir.0.join("first-bad")),
            DeviceSpec::Block(dir.0.join("second-bad")),
        ];
        let e = check_files(&c).expect_err("bad block");
        assert!(e.to_string().contains("first-bad"), "{e}");
    }

    #[test]
    fn sharenet_files() {
        let dir = TempDir::new();
        // Not there yet: fine, it is created when the guest starts.
        check_sharenet_file(&dir.0.join("net")).expect("creatable");
        let e = check_sharenet_file(&dir.0.join("no-such-dir/net")).expect_err("no dir");
        assert!(matches!(e, Error::NoParentDir { .. }), "{e:?}");
        assert!(e.to_string().ends_with("No such file or directory"), "{e}");
        let file = dir.file("plain", 0o644);
        let e = check_sharenet_file(&file.join("net")).expect_err("parent is a file");
        assert!(matches!(e, Error::ParentNotDir { .. }), "{e:?}");
        let e = check_sharenet_file(&dir.0).expect_err("a directory");
        assert!(
            matches!(
                e,
                Error::NotRegularFile {
                    role: Role::ShareNet,
                    ..
                }
            ),
            "{e:?}"
        );
        // A bare file name lives in the current directory, which exists.
        check_sharenet_file(Path::new("lguest-test-sharenet-that-does-not-exist"))
            .expect("relative name");
    }
}
