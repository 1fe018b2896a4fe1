//! Running the guest.
//!
//! PLACEHOLDER: the next milestone replaces [`run_guest`] with the ELF loader (map the guest's
//! memory, load `config.kernel` and `config.initrd`, write `config.cmdline`), the
//! `LHREQ_INITIALIZE` write and the run loop. Nothing else in the launcher needs to change.

use crate::cli::Config;
use crate::device::Device;
use crate::error::Error;

/// Loads the guest described by `config`, runs it on `device` until it stops, and returns the
/// launcher's exit status. For now it only says that it cannot.
pub fn run_guest(config: &Config, device: Device) -> Result<i32, Error> {
    drop(device);
    Err(Error::NotImplemented {
        kernel: config.kernel.clone(),
    })
}
