//! Check bookkeeping and the output format: one `ok - <name>` / `not ok - <name>: <detail>` line
//! per check, `# ...` comment lines, and a closing `lgprobe <subcommand>: N checks, M failures`.

use lg_core::errno::Errno;

use crate::proto::Outcome;

/// Failures of quiet checks (the per-operation checks of the loops) printed before going silent.
const QUIET_FAILURES_PRINTED: u64 = 40;

#[derive(Default)]
pub struct Report {
    checks: u64,
    failures: u64,
    quiet_failures_printed: u64,
}

impl Report {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Record and print one check.
    pub fn check(&mut self, name: &str, result: Result<(), String>) -> bool {
        self.checks += 1;
        match result {
            Ok(()) => {
                println!("ok - {name}");
                true
            }
            Err(detail) => {
                self.failures += 1;
                println!("not ok - {name}: {detail}");
                false
            }
        }
    }

    /// Record one check of a loop: counted always, printed only when it fails (and only the first
    /// few failures, so a broken module cannot flood a serial console).
    pub fn quiet(&mut self, name: impl FnOnce() -> String, result: Result<(), String>) -> bool {
        self.checks += 1;
        let Err(detail) = result else { return true };
        self.failures += 1;
        if self.quiet_failures_printed < QUIET_FAILURES_PRINTED {
            self.quiet_failures_printed += 1;
            println!("not ok - {}: {detail}", name());
        } else if self.quiet_failures_printed == QUIET_FAILURES_PRINTED {
            self.quiet_failures_printed += 1;
            println!("# further loop failures are counted but not printed");
        }
        false
    }

    /// A check that could not be carried out here; counted as passing and marked `# SKIP`.
    pub fn skip(&mut self, name: &str, why: &str) {
        self.checks += 1;
        println!("ok - {name} # SKIP {why}");
    }

    pub fn note(&self, msg: &str) {
        println!("# {msg}");
    }

    /// The closing line.
    pub fn summary(&self, subcommand: &str) -> String {
        format!(
            "lgprobe {subcommand}: {} checks, {} failures",
            self.checks, self.failures
        )
    }

    /// (checks, failures) so far, for per-section subtotals.
    pub fn counts(&self) -> (u64, u64) {
        (self.checks, self.failures)
    }
}

/// `Ok(())` if `got == want`, else a "got X, want Y" detail.
pub fn same(got: Outcome, want: Outcome) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("got {}, want {}", show(got), show(want)))
    }
}

/// `56` for a success returning 56, `EINVAL` for a failure.
pub fn show(o: Outcome) -> String {
    match o {
        Ok(n) => n.to_string(),
        Err(e) => errno_name(e),
    }
}

pub fn errno_name(e: Errno) -> String {
    let name = match e.0 {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        5 => "EIO",
        6 => "ENXIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        19 => "ENODEV",
        22 => "EINVAL",
        25 => "ENOTTY",
        28 => "ENOSPC",
        38 => "ENOSYS",
        71 => "EPROTO",
        512 => "ERESTARTSYS",
        n => return format!("errno {n}"),
    };
    name.to_string()
}

/// Bytes as hex, for reproducing a failed write by hand.
pub fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".into();
    }
    bytes
        .chunks(8)
        .map(|c| {
            c.iter()
                .rev()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(show(Ok(56)), "56");
        assert_eq!(show(Err(Errno::EPROTO)), "EPROTO");
        assert_eq!(show(Err(Errno(999))), "errno 999");
        assert_eq!(hex(&[]), "(empty)");
        // Little-endian words print most significant byte first; a ragged tail prints as is.
        assert_eq!(
            hex(&[3, 0, 0, 0, 0, 0, 0, 0, 1, 2]),
            "0000000000000003 0201"
        );
        assert_eq!(
            same(Ok(16), Err(Errno::EINVAL)),
            Err("got 16, want EINVAL".into())
        );
    }
}
