//! End-to-end checks of the `lguest` binary: exit codes, stdout versus stderr, and the promise that
//! every failure is exactly one `lguest: ` line.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const LGUEST: &str = env!("CARGO_BIN_EXE_lguest");

fn lguest(args: &[&str]) -> Output {
    Command::new(LGUEST)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lguest")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts `args` fail with exit code `code` and exactly one stderr line starting with `prefix`.
fn fails(args: &[&str], code: i32, prefix: &str) -> String {
    let out = lguest(args);
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {lines:?}");
    assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
    assert_eq!(lines.len(), 1, "{args:?} printed {lines:?}");
    assert!(
        lines[0].starts_with(&format!("lguest: {prefix}")),
        "{args:?}: {:?} does not start with 'lguest: {prefix}'",
        lines[0]
    );
    lines[0].clone()
}

/// A directory of test files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("lguest-e2e-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).expect("mkdir");
        Scratch(path)
    }

    fn file(&self, name: &str, mode: u32) -> String {
        let path = self.0.join(name);
        fs::write(&path, b"not really a kernel").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path.to_str().expect("temp paths are UTF-8").to_owned()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("UTF-8").to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn help_goes_to_stdout() {
    let out = lguest(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty());
    let text = String::from_utf8(out.stdout).expect("UTF-8 help");
    assert!(text.contains("Usage: lguest [OPTIONS] MEM KERNEL [KERNEL-ARGS...]"));
    assert!(
        text.contains("lguest 64m vmlinux --block=rootfile --tunnet=192.168.19.1 root=/dev/lgba")
    );
}

#[test]
fn version_goes_to_stdout() {
    let out = lguest(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("lguest {} (guest ABI 1)\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn closed_stdout_is_one_line_not_a_panic() {
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(LGUEST)
        .arg("--help")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run lguest");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&out),
        ["lguest: cannot write to stdout: Broken pipe"]
    );
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    fails(
        &[],
        2,
        "missing MEM and KERNEL arguments (try 'lguest --help')",
    );
    fails(&["64m"], 2, "missing KERNEL argument");
    fails(
        &["--foo", "64m", "k"],
        2,
        "unknown option '--foo' (try 'lguest --help')",
    );
    fails(&["-x"], 2, "unknown option '-x'");
    fails(&["--block"], 2, "option '--block' needs a value");
    fails(&["--verbose=1", "64m", "k"], 2, "");
    fails(
        &["64x", "k"],
        2,
        "bad memory size '64x': expected a number of bytes",
    );
    fails(&["4097k", "k"], 2, "bad memory size '4097k'");
    fails(&["99999999999999999999g", "k"], 2, "bad memory size");
    fails(&["0", "k"], 2, "bad memory size '0'");
    fails(
        &["64m", "--block", "x", "k"],
        2,
        "'--block' found where KERNEL was expected",
    );
    fails(
        &["--tunnet=1.2.3.4", "--tunnet=5.6.7.8", "64m", "k"],
        2,
        "--tunnet given twice",
    );
    fails(
        &["--tunnet=bridge:a b", "64m", "k"],
        2,
        "bad bridge name 'a b'",
    );
    fails(&["--tunnet=nope", "64m", "k"], 2, "bad --tunnet 'nope'");
    fails(
        &["--initrd=a", "--initrd=b", "64m", "k"],
        2,
        "--initrd given twice",
    );
    // A newline in a value cannot forge a second line.
    fails(
        &["--tunnet=bridge:a\nlguest: forged", "64m", "k"],
        2,
        "bad bridge name",
    );
}

#[test]
fn file_errors_are_one_line_and_exit_1() {
    let dir = Scratch::new("files");
    let kernel = dir.file("vmlinux", 0o644);
    let missing = dir.path("missing");
    let line = fails(&["64m", &missing], 1, "cannot open kernel");
    assert!(line.ends_with(": No such file or directory"), "{line}");
    fails(&["64m", &dir.0.to_string_lossy()], 1, "kernel");
    fails(
        &["--initrd", &missing, "64m", &kernel],
        1,
        "cannot open initrd",
    );
    fails(
        &["--block", &missing, "64m", &kernel],
        1,
        "cannot open block file",
    );
    let nodir = dir.path("no-such-dir/net");
    fails(
        &["--sharenet", &nodir, "64m", &kernel],
        1,
        "cannot create sharenet file",
    );
    if !rustix::process::geteuid().is_root() {
        let ro = dir.file("ro.img", 0o444);
        let line = fails(&["--block", &ro, "64m", &kernel], 1, "block file");
        assert!(
            line.ends_with("is not writable: Permission denied"),
            "{line}"
        );
    }
}

#[test]
fn valid_command_line_reaches_the_device() {
    let dir = Scratch::new("device");
    let kernel = dir.file("vmlinux", 0o644);
    let block = dir.file("root.img", 0o600);
    let out = lguest(&[
        "-v",
        "--block",
        &block,
        "--tunnet=192.168.19.1",
        "64m",
        &kernel,
        "root=/dev/lgba",
        "--foo",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let lines = stderr_lines(&out);
    assert!(lines.iter().all(|l| l.starts_with("lguest: ")), "{lines:?}");
    assert!(lines.contains(&"lguest: memory: 67108864 bytes (64m, 16384 pages)".to_owned()));
    assert!(lines.contains(&"lguest: kernel command line: \"root=/dev/lgba --foo\"".to_owned()));
    let last = lines.last().expect("an error line");
    if Path::new("/dev/lguest").exists() {
        // Either we may not open it, or we get as far as loading the (fake) kernel.
        assert!(
            last.starts_with("lguest: cannot open /dev/lguest")
                || last.ends_with("is not an ELF file: lguest needs the uncompressed vmlinux ELF"),
            "{last}"
        );
    } else {
        assert_eq!(
            last,
            "lguest: /dev/lguest does not exist: is lg.ko loaded? run: sudo modprobe lg"
        );
    }
    // Without -v, only that one line.
    let quiet = lguest(&["64m", &kernel]);
    assert_eq!(stderr_lines(&quiet).len(), 1);
}
