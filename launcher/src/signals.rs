//! SIGINT, SIGTERM and SIGHUP stop the guest cleanly.
//!
//! The handlers only record the signal. They are installed without `SA_RESTART`, so a `read()` of
//! `/dev/lguest` that is running the guest returns `EINTR` (lg.ko returns `-ERESTARTSYS` on a
//! pending signal); the run loop then sees the flag, the device is closed (which destroys the
//! guest) and the launcher exits with 128 + the signal number.
//!
//! One race is left by that design: a signal that lands after the loop checked the flag but before
//! its next `read()` enters the module would go unnoticed until the guest next produced a record
//! (perhaps never, for an idle guest). So the handler also arms a one-second `alarm()`
//! (async-signal-safe); its SIGALRM, whose handler does nothing, interrupts that `read()` in turn.

use std::ffi::c_int;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::error::Error;

/// The signals that stop the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    Int,
    Term,
    Hup,
}

impl StopSignal {
    pub const ALL: [StopSignal; 3] = [StopSignal::Int, StopSignal::Term, StopSignal::Hup];

    pub fn signal(self) -> Signal {
        match self {
            StopSignal::Int => Signal::SIGINT,
            StopSignal::Term => Signal::SIGTERM,
            StopSignal::Hup => Signal::SIGHUP,
        }
    }

    /// "SIGINT", ...
    pub fn name(self) -> &'static str {
        self.signal().as_str()
    }

    /// 128 + the signal number, as a shell reports a death by that signal.
    pub fn exit_code(self) -> i32 {
        128 + self.signal() as i32
    }

    fn from_raw(signo: i32) -> Option<StopSignal> {
        StopSignal::ALL
            .into_iter()
            .find(|s| s.signal() as i32 == signo)
    }
}

/// The first stop signal received (its number), 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Seconds before the safety-net SIGALRM.
const NUDGE_SECONDS: u32 = 1;

extern "C" fn on_stop_signal(signo: c_int) {
    // The first one wins: a SIGTERM after a SIGINT does not change the exit code.
    let _ = RECEIVED.compare_exchange(0, signo, Ordering::SeqCst, Ordering::SeqCst);
    nix::unistd::alarm::set(NUDGE_SECONDS);
}

extern "C" fn on_alarm(_signo: c_int) {}

/// Installs the handlers (no `SA_RESTART`).
pub fn install() -> Result<(), Error> {
    let stop = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let alarm = SigAction::new(
        SigHandler::Handler(on_alarm),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in StopSignal::ALL {
        // SAFETY: the handler only touches an atomic and calls alarm(), both async-signal-safe.
        unsafe { sigaction(s.signal(), &stop) }.map_err(nix_errno)?;
    }
    // SAFETY: the handler does nothing.
    unsafe { sigaction(Signal::SIGALRM, &alarm) }.map_err(nix_errno)?;
    Ok(())
}

fn nix_errno(errno: nix::errno::Errno) -> Error {
    Error::SignalSetup(rustix::io::Errno::from_raw_os_error(errno as i32))
}

/// The stop signal received so far, if any.
pub fn received() -> Option<StopSignal> {
    StopSignal::from_raw(RECEIVED.load(Ordering::SeqCst))
}

/// Cancels a pending safety-net alarm (before exiting or exec'ing: an alarm survives exec).
pub fn cancel_alarm() {
    nix::unistd::alarm::cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_exit_codes() {
        assert_eq!(StopSignal::Int.name(), "SIGINT");
        assert_eq!(StopSignal::Int.exit_code(), 130);
        assert_eq!(StopSignal::Term.name(), "SIGTERM");
        assert_eq!(StopSignal::Term.exit_code(), 143);
        assert_eq!(StopSignal::Hup.name(), "SIGHUP");
        assert_eq!(StopSignal::Hup.exit_code(), 129);
        assert_eq!(StopSignal::from_raw(15), Some(StopSignal::Term));
        assert_eq!(StopSignal::from_raw(0), None);
        assert_eq!(StopSignal::from_raw(10), None);
    }

    /// The only test touching the process-wide handlers and flag: a real SIGTERM is recorded, and
    /// interrupts a blocking read() with EINTR instead of being restarted.
    #[test]
    fn a_signal_sets_the_flag_and_interrupts_reads() {
        install().expect("install");
        assert_eq!(received(), None);
        let (reader, writer) = rustix::pipe::pipe().expect("pipe");
        let thread = nix::sys::pthread::pthread_self();
        let kicker = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            nix::sys::pthread::pthread_kill(thread, Signal::SIGTERM).expect("kill");
        });
        let mut buf = [0u8; 8];
        let got = rustix::io::read(&reader, &mut buf);
        kicker.join().expect("join");
        cancel_alarm();
        drop(writer);
        assert_eq!(got, Err(rustix::io::Errno::INTR));
        assert_eq!(received(), Some(StopSignal::Term));
    }
}
