//! `lguest`: the launcher that runs a guest through the lg.ko hypervisor module.
//!
//! Flow: parse the command line ([`cli::parse`]), check the files it names ([`cli::check_files`]),
//! open `/dev/lguest` ([`device::Device::open`]) and hand over to [`guest::run_guest`], which loads
//! the guest and runs it. Any failure is one `lguest: ...` line on stderr and exit code 2 (bad
//! command line) or 1 (anything else); a guest that stops gives 0 (powered off), 1 (crashed or
//! killed) or 128 + the signal number (stopped by SIGINT, SIGTERM or SIGHUP).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod bootparams;
mod cli;
mod device;
mod devices;
mod error;
mod guest;
mod loader;
mod memory;
mod run;
mod signals;
mod waker;

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

use crate::cli::Parsed;
use crate::error::{Error, EXIT_FAILURE};

fn main() -> ExitCode {
    match run(std::env::args_os().collect()) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXIT_FAILURE)),
        Err(err) => {
            // Nowhere left to report a failure to write to stderr.
            let _ = writeln!(io::stderr(), "lguest: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(args: Vec<OsString>) -> Result<i32, Error> {
    let config = match cli::parse(args)? {
        Parsed::Help(text) | Parsed::Version(text) => {
            // Not print!: that panics (a multi-line report) when stdout is a closed pipe.
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(Error::Stdout)?;
            return Ok(0);
        }
        Parsed::Run(config) => config,
    };
    if config.verbose {
        let mut stderr = io::stderr().lock();
        for line in config.describe() {
            let _ = writeln!(stderr, "lguest: {line}");
        }
    }
    cli::check_files(&config)?;
    let device = device::Device::open()?;
    guest::run_guest(&config, device)
}
