//! How a guest ends: the exit kind and the reason the launcher prints.
//!
//! Like the original lguest's `kill_guest()`, every fatal problem goes through one path: the
//! first reason is kept, the guest never runs again, and `read()` hands the reason to the launcher.

use core::fmt::{self, Write};

use crate::abi::exit;
use crate::fixedbuf::FixedBuf;

pub const REASON_MAX: usize = 256;

#[derive(Clone, Copy)]
pub struct Death {
    pub kind: u64,
    reason: [u8; REASON_MAX],
    len: usize,
}

impl Death {
    pub fn new(kind: u64, args: fmt::Arguments<'_>) -> Self {
        let mut d = Death {
            kind,
            reason: [0; REASON_MAX],
            len: 0,
        };
        let mut w = FixedBuf::new(&mut d.reason);
        let _ = w.write_fmt(args);
        d.len = w.len();
        d
    }

    /// Killed by the host for breaking the ABI.
    pub fn killed(args: fmt::Arguments<'_>) -> Self {
        Self::new(exit::KILLED, args)
    }

    /// The reason, with anything that is not printable ASCII replaced: it goes to a terminal.
    pub fn reason(&self) -> &[u8] {
        self.reason.get(..self.len).unwrap_or(&[])
    }

    pub fn from_guest_message(kind: u64, msg: &[u8]) -> Self {
        let mut d = Death {
            kind,
            reason: [0; REASON_MAX],
            len: 0,
        };
        for (dst, &b) in d.reason.iter_mut().zip(msg.iter()) {
            *dst = if b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b) {
                b
            } else {
                b'?'
            };
            d.len += 1;
        }
        while d.len > 0 && d.reason.get(d.len - 1) == Some(&b'\n') {
            d.len -= 1;
        }
        d
    }
}

impl fmt::Debug for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Death({}, {:?})",
            self.kind,
            core::str::from_utf8(self.reason())
        )
    }
}

/// `return Err(kill!("..."))` in code that returns `Result<_, Death>`.
#[macro_export]
macro_rules! kill {
    ($($t:tt)*) => { $crate::vcpu::death::Death::killed(format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_messages_are_sanitized() {
        let d = Death::from_guest_message(exit::CRASHED, b"oops\x1b[31m\x00bad\n\n");
        assert_eq!(d.reason(), b"oops?[31m?bad");
        let k = kill!("bad hypercall {}", 9999);
        assert_eq!(k.reason(), b"bad hypercall 9999");
        assert_eq!(k.kind, exit::KILLED);
    }
}
