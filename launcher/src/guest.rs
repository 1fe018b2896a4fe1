//! Running the guest: map its memory (RAM and the device pages above it), load the kernel (and
//! initrd), write the zero page and the command line, open the devices, create the guest with
//! `LHREQ_INITIALIZE`, then run it until it stops.

use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::bootparams;
use crate::cli::{human_size, Config};
use crate::device::{Device, InitArgs, LguestDevice};
use crate::devices::{Devices, Layout};
use crate::error::{Error, Role};
use crate::loader::{self, FileImage, Initrd, Kernel};
use crate::memory::GuestMemory;
use crate::run::{self, Outcome};
use crate::signals;
use lg_core::abi::{self, PAGE_SIZE};

/// Loads the guest described by `config`, runs it on `device` until it stops, and returns the
/// launcher's exit status. A guest that asks to restart gets a fresh launcher (this one
/// re-executed with the same arguments), so this returns only on failure in that case.
pub fn run_guest(config: &Config, mut device: Device) -> Result<i32, Error> {
    let guest = load_guest(config)?;
    let mut devices = Devices::open(config, guest.layout, &guest.memory)?;
    if config.verbose {
        let mut stderr = io::stderr().lock();
        for line in guest.describe().into_iter().chain(devices.describe()) {
            let _ = writeln!(stderr, "lguest: {line}");
        }
    }
    signals::install()?;
    device.initialize(&guest.init_args())?;
    let outcome = devices.start(&device, &mut io::stderr()).and_then(|()| {
        run::run(
            &mut device,
            &mut devices,
            &mut io::stderr(),
            &signals::received,
        )
    });
    signals::cancel_alarm();
    // The devices first: that stops the waker thread (which holds /dev/lguest open) and restores
    // the terminal. Closing the device then destroys the guest; only then may its memory go.
    drop(devices);
    drop(device);
    drop(guest);
    let outcome = outcome?;
    if let Some(message) = outcome.message(config.verbose) {
        let _ = writeln!(io::stderr(), "lguest: {message}");
    }
    if outcome == Outcome::Restart {
        return Err(restart());
    }
    Ok(outcome.exit_code())
}

/// A guest in memory, ready to be created.
struct LoadedGuest {
    layout: Layout,
    memory: GuestMemory,
    kernel: Kernel,
    initrd: Option<Initrd>,
    cmdline_len: usize,
    e820: Vec<bootparams::E820Entry>,
}

fn load_guest(config: &Config) -> Result<LoadedGuest, Error> {
    // The cheap check first.
    let cmdline = bootparams::cmdline_bytes(&config.cmdline)?;
    let layout = Layout::for_config(config);
    let memory = GuestMemory::with_device_pages(config.mem_bytes, layout.device_pages())?;
    let mut image = open(Role::Kernel, &config.kernel)?;
    let kernel = loader::load_kernel(&mut image, &config.kernel, &memory)?;
    drop(image);
    let initrd = match &config.initrd {
        Some(path) => {
            let mut image = open(Role::Initrd, path)?;
            Some(loader::load_initrd(&mut image, path, &memory, kernel.end)?)
        }
        None => None,
    };
    let e820 = layout.e820();
    bootparams::write(&memory, &cmdline, &e820, initrd)?;
    Ok(LoadedGuest {
        layout,
        memory,
        kernel,
        initrd,
        cmdline_len: cmdline.len() - 1,
        e820,
    })
}

fn open(role: Role, path: &Path) -> Result<FileImage, Error> {
    FileImage::open(path).map_err(|err| Error::CannotOpen {
        role,
        path: path.to_owned(),
        err,
    })
}

impl LoadedGuest {
    fn init_args(&self) -> InitArgs {
        InitArgs {
            mem_base: self.memory.host_base(),
            pfn_limit: self.layout.pfn_limit(),
            entry: self.kernel.entry,
            cr3: self.kernel.cr3,
            boot_params: abi::ZERO_PAGE_GPA,
        }
    }

    /// `--verbose` lines.
    fn describe(&self) -> Vec<String> {
        let args = self.init_args();
        let mut lines = vec![format!(
            "guest memory: guest-physical 0x0-{:#x} ({}, {} pages) at launcher address {:#x}, \
             device pages up to {:#x}",
            self.memory.size(),
            human_size(self.memory.size()),
            self.memory.size() / PAGE_SIZE,
            args.mem_base,
            self.memory.limit()
        )];
        lines.push(format!(
            "zero page at {:#x}, command line at {:#x} ({} bytes)",
            abi::ZERO_PAGE_GPA,
            abi::CMDLINE_GPA,
            self.cmdline_len
        ));
        lines.extend(self.kernel.describe());
        if let Some(initrd) = self.initrd {
            lines.push(format!(
                "initrd: guest-physical {:#x}-{:#x} ({} bytes)",
                initrd.gpa,
                initrd.gpa + initrd.size,
                initrd.size
            ));
        }
        for entry in &self.e820 {
            lines.push(format!(
                "e820: {:#x}-{:#x} type {}",
                entry.addr,
                entry.addr.saturating_add(entry.size),
                entry.kind
            ));
        }
        lines
    }
}

/// Re-executes the launcher with the same arguments; returns only if that fails.
fn restart() -> Error {
    signals::cancel_alarm();
    let _ = io::stdout().flush();
    let mut args = std::env::args_os();
    let mut command = Command::new("/proc/self/exe");
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    Error::Restart(command.args(args).exec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::tests::{good_phs, ElfBuilder};
    use std::path::PathBuf;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("lguest-guest-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).expect("mkdir");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config(kernel: PathBuf, initrd: Option<PathBuf>, cmdline: &str) -> Config {
        Config {
            mem_bytes: 16 << 20,
            kernel,
            devices: Vec::new(),
            initrd,
            cmdline: cmdline.to_owned(),
            verbose: true,
        }
    }

    #[test]
    fn loads_a_whole_guest() {
        let dir = Scratch::new("whole");
        let kernel = dir.0.join("vmlinux");
        std::fs::write(&kernel, ElfBuilder::new(good_phs()).build()).expect("write");
        let initrd = dir.0.join("initrd");
        std::fs::write(&initrd, vec![7u8; 5000]).expect("write");
        let guest = load_guest(&config(kernel, Some(initrd), "root=/dev/lgba")).expect("loads");
        let args = guest.init_args();
        // RAM, the device page and the console's page.
        assert_eq!(args.pfn_limit, 4096 + 2);
        assert_eq!(args.mem_base, guest.memory.host_base());
        assert_eq!(args.entry, crate::loader::tests::ENTRY);
        assert_eq!(args.cr3, 0x10_1000);
        assert_eq!(args.boot_params, 0x1000);
        let initrd = guest.initrd.expect("initrd");
        assert_eq!(initrd.gpa, (16 << 20) - 2 * PAGE_SIZE);
        let mut word = [0u8; 4];
        guest
            .memory
            .read(
                abi::ZERO_PAGE_GPA + abi::zero_page::RAMDISK_IMAGE as u64,
                &mut word,
            )
            .expect("read");
        assert_eq!(u32::from_le_bytes(word) as u64, initrd.gpa);
        let mut line = [0u8; 15];
        guest
            .memory
            .read(abi::CMDLINE_GPA, &mut line)
            .expect("read");
        assert_eq!(&line, b"root=/dev/lgba\0");
        let lines = guest.describe();
        assert!(
            lines[0].starts_with("guest memory: guest-physical 0x0-0x1000000 (16m, 4096 pages)")
        );
        assert!(
            lines.iter().any(|l| l == "e820: 0x0-0x1000000 type 1"),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "e820: 0x1000000-0x1002000 type 2"),
            "{lines:?}"
        );
        assert!(lines
            .iter()
            .any(|l| l.starts_with("initrd: guest-physical 0xffe000-")));
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = Scratch::new("errors");
        let kernel = dir.0.join("vmlinux");
        std::fs::write(&kernel, b"\x7fELF").expect("write");
        let err = load_guest(&config(kernel.clone(), None, ""))
            .err()
            .expect("fails");
        assert!(err.to_string().contains("vmlinux' is truncated"), "{err}");

        let mut phs = good_phs();
        phs.remove(1);
        std::fs::write(&kernel, ElfBuilder::new(phs).build()).expect("write");
        let err = load_guest(&config(kernel.clone(), None, ""))
            .err()
            .expect("fails");
        assert_eq!(
            err.to_string(),
            format!(
                "'{}' is not an lguest guest kernel: no lguest boot note",
                kernel.display()
            )
        );
        assert_eq!(err.exit_code(), 1);

        let long = "x".repeat(abi::CMDLINE_MAX);
        let err = load_guest(&config(kernel.clone(), None, &long))
            .err()
            .expect("fails");
        assert!(matches!(err, Error::CmdlineTooLong { .. }));

        std::fs::write(&kernel, ElfBuilder::new(good_phs()).build()).expect("write");
        let initrd = dir.0.join("initrd");
        std::fs::write(&initrd, vec![0u8; 15 << 20]).expect("write");
        let err = load_guest(&config(kernel.clone(), Some(initrd), ""))
            .err()
            .expect("fails");
        assert!(matches!(err, Error::InitrdTooBig { .. }), "{err}");

        let missing = dir.0.join("missing");
        let err = load_guest(&config(missing, None, "")).err().expect("fails");
        assert!(matches!(
            err,
            Error::CannotOpen {
                role: Role::Kernel,
                ..
            }
        ));
    }
}
