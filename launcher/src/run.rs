//! The run loop: `read()` `/dev/lguest` (which runs the guest) and act on each record it returns
//! (docs/abi.md §1, "Reads") until the guest is gone or a signal stops us.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Write;

use rustix::io::Errno;

use crate::device::LguestDevice;
use crate::error::{Error, Quoted, RecordProblem};
use crate::signals::StopSignal;
use lg_core::abi::{exit, record};

/// Room for any record: console writes are at most 4 KiB, crash reasons 1 KiB.
pub const READ_BUFFER: usize = 64 * 1024;

/// One decoded record.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Console(&'a [u8]),
    Dma { gpa: u64, key: u64 },
    Dead { kind: u64, reason: &'a [u8] },
}

fn word(buf: &[u8], index: usize) -> Option<u64> {
    let bytes = buf.get(index * 8..index * 8 + 8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    Some(u64::from_le_bytes(word))
}

/// Decodes the `len` bytes a `read()` returned.
pub fn decode(buf: &[u8]) -> Result<Record<'_>, RecordProblem> {
    let kind = word(buf, 0).ok_or(RecordProblem::Short {
        kind: None,
        len: buf.len(),
    })?;
    let short = RecordProblem::Short {
        kind: Some(kind),
        len: buf.len(),
    };
    match kind {
        record::CONSOLE => Ok(Record::Console(&buf[8..])),
        record::DMA => Ok(Record::Dma {
            gpa: word(buf, 1).ok_or(short.clone())?,
            key: word(buf, 2).ok_or(short)?,
        }),
        record::DEAD => Ok(Record::Dead {
            kind: word(buf, 1).ok_or(short)?,
            reason: &buf[16..],
        }),
        other => Err(RecordProblem::UnknownKind(other)),
    }
}

/// How the run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest powered off.
    PowerOff,
    /// The guest asked to be restarted.
    Restart,
    /// The guest reported a crash; its message.
    Crashed(String),
    /// lg.ko killed the guest for breaking the ABI; its reason.
    Killed(String),
    /// A signal stopped us.
    Stopped(StopSignal),
    /// Three ^C on the console (a terminal in raw mode sends ^C to the guest, not as SIGINT).
    ConsoleInterrupt,
}

impl Outcome {
    /// The launcher's exit status (a restart never exits: it re-executes the launcher).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::PowerOff | Outcome::Restart => 0,
            Outcome::Crashed(_) | Outcome::Killed(_) => 1,
            Outcome::Stopped(signal) => signal.exit_code(),
            Outcome::ConsoleInterrupt => StopSignal::Int.exit_code(),
        }
    }

    /// The line to print (without the `lguest: ` prefix), if any.
    pub fn message(&self, verbose: bool) -> Option<String> {
        let one_line = |text: &str| Quoted::bare(OsStr::new(text)).to_string();
        match self {
            Outcome::PowerOff => verbose.then(|| "the guest powered off".to_owned()),
            Outcome::Restart => {
                verbose.then(|| "the guest asked to restart: restarting".to_owned())
            }
            Outcome::Crashed(reason) => Some(format!("guest crashed: {}", one_line(reason))),
            Outcome::Killed(reason) => Some(format!("guest killed: {}", one_line(reason))),
            Outcome::Stopped(signal) => Some(format!("stopped by {}", signal.name())),
            Outcome::ConsoleInterrupt => Some("stopped by ^C ^C ^C on the console".to_owned()),
        }
    }
}

/// The reason text of a `DEAD` record: lossy UTF-8 without trailing newlines or NULs.
fn reason_text(reason: &[u8]) -> String {
    String::from_utf8_lossy(reason)
        .trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_owned()
}

/// What the run loop needs from the guest's devices (src/devices): each record the module returns
/// is handed to them, and so is every break.
pub trait Io {
    /// Early console output (a `CONSOLE` record).
    fn console(
        &mut self,
        bytes: &[u8],
        warn: &mut dyn Write,
        stop: &dyn Fn() -> Option<StopSignal>,
    );
    /// A `DMA` record: the guest sent the descriptor at `gpa` to `key`, a key in its private
    /// memory. Returns false if no device serves `key`. The guest continues at the next `read()`.
    fn dma(
        &mut self,
        dev: &mut dyn LguestDevice,
        gpa: u64,
        key: u64,
        warn: &mut dyn Write,
        stop: &dyn Fn() -> Option<StopSignal>,
    ) -> Result<bool, Error>;
    /// A break (`read()` failed with `EAGAIN`): the waker saw input. Hand it to the guest. `Some`
    /// stops the launcher (three ^C on a raw terminal).
    fn service(
        &mut self,
        dev: &mut dyn LguestDevice,
        warn: &mut dyn Write,
    ) -> Result<Option<Outcome>, Error>;
}

/// Runs the guest on `device` until it dies or `stop` reports a signal. Records go to `io` (the
/// devices), warnings (`lguest: ...` lines) to `warn`.
pub fn run(
    device: &mut dyn LguestDevice,
    io: &mut dyn Io,
    warn: &mut dyn Write,
    stop: &dyn Fn() -> Option<StopSignal>,
) -> Result<Outcome, Error> {
    let mut unserved_keys = HashSet::new();
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        if let Some(signal) = stop() {
            return Ok(Outcome::Stopped(signal));
        }
        let len = match device.read_record(&mut buf) {
            Ok(len) => len,
            // A signal: the loop head looks at what it was.
            Err(Errno::INTR) => continue,
            // LHREQ_BREAK in force: the waker saw input. Service it, then let the waker go.
            Err(Errno::AGAIN) => {
                let outcome = io.service(device, warn)?;
                end_break(device)?;
                match outcome {
                    Some(outcome) => return Ok(outcome),
                    None => continue,
                }
            }
            Err(errno) => return Err(Error::DeviceRead(errno)),
        };
        match decode(&buf[..len.min(buf.len())]).map_err(Error::BadRecord)? {
            Record::Console(bytes) => io.console(bytes, warn, stop),
            Record::Dma { gpa, key } => {
                if !io.dma(device, gpa, key, warn, stop)? && unserved_keys.insert(key) {
                    let _ = writeln!(
                        warn,
                        "lguest: guest sent DMA to key {key:#x} that no device serves"
                    );
                }
            }
            Record::Dead { kind, reason } => {
                let reason = reason_text(reason);
                return match kind {
                    exit::POWEROFF => Ok(Outcome::PowerOff),
                    // A stop signal wins over a restart.
                    exit::RESTART => Ok(stop().map_or(Outcome::Restart, Outcome::Stopped)),
                    exit::CRASHED => Ok(Outcome::Crashed(reason)),
                    exit::KILLED => Ok(Outcome::Killed(reason)),
                    other => Err(Error::BadRecord(RecordProblem::UnknownExitKind(other))),
                };
            }
        }
    }
}

/// `LHREQ_BREAK 0`. A guest that died meanwhile (`ENOENT`) is reported by the next `read()`.
fn end_break(device: &mut dyn LguestDevice) -> Result<(), Error> {
    match device.break_off() {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(errno) => Err(Error::DeviceRequest {
            request: "LHREQ_BREAK 0",
            errno,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::InitArgs;
    use crate::devices::console::ConsoleOut;
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::io;

    /// Plays back a script of read() results.
    struct FakeDevice {
        script: VecDeque<Result<Vec<u8>, Errno>>,
        reads: usize,
        buffer_sizes: Vec<usize>,
        breaks_off: usize,
    }

    impl FakeDevice {
        fn new(script: Vec<Result<Vec<u8>, Errno>>) -> FakeDevice {
            FakeDevice {
                script: script.into(),
                reads: 0,
                buffer_sizes: Vec::new(),
                breaks_off: 0,
            }
        }
    }

    /// Devices that only print: console records to `out`; DMA to `served` keys is accepted.
    struct TestIo<W: Write> {
        out: ConsoleOut<W>,
        served: Vec<u64>,
        dmas: Vec<(u64, u64)>,
        services: usize,
        /// What service() returns on its n-th call (1-based); None otherwise.
        stop_at_service: Option<usize>,
    }

    impl<W: Write> TestIo<W> {
        fn new(out: W) -> TestIo<W> {
            TestIo {
                out: ConsoleOut::new(out),
                served: Vec::new(),
                dmas: Vec::new(),
                services: 0,
                stop_at_service: None,
            }
        }
    }

    impl<W: Write> Io for TestIo<W> {
        fn console(
            &mut self,
            bytes: &[u8],
            warn: &mut dyn Write,
            stop: &dyn Fn() -> Option<StopSignal>,
        ) {
            self.out.write(bytes, warn, stop);
        }

        fn dma(
            &mut self,
            _dev: &mut dyn LguestDevice,
            gpa: u64,
            key: u64,
            _warn: &mut dyn Write,
            _stop: &dyn Fn() -> Option<StopSignal>,
        ) -> Result<bool, Error> {
            self.dmas.push((gpa, key));
            Ok(self.served.contains(&key))
        }

        fn service(
            &mut self,
            _dev: &mut dyn LguestDevice,
            _warn: &mut dyn Write,
        ) -> Result<Option<Outcome>, Error> {
            self.services += 1;
            Ok((self.stop_at_service == Some(self.services)).then_some(Outcome::ConsoleInterrupt))
        }
    }

    impl LguestDevice for FakeDevice {
        fn initialize(&mut self, _args: &InitArgs) -> Result<(), Error> {
            Ok(())
        }

        fn read_record(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
            self.reads += 1;
            self.buffer_sizes.push(buf.len());
            let next = self
                .script
                .pop_front()
                .expect("the loop read past the script");
            let rec = next?;
            let n = rec.len().min(buf.len());
            buf[..n].copy_from_slice(&rec[..n]);
            Ok(n)
        }

        fn get_dma(&mut self, _key: u64) -> Result<u64, Errno> {
            Err(Errno::NOENT)
        }

        fn irq(&mut self, _irq: u32) -> Result<(), Errno> {
            Ok(())
        }

        fn break_off(&mut self) -> Result<(), Errno> {
            self.breaks_off += 1;
            Ok(())
        }
    }

    fn rec(kind: u64, payload: &[u8]) -> Result<Vec<u8>, Errno> {
        let mut v = kind.to_le_bytes().to_vec();
        v.extend_from_slice(payload);
        Ok(v)
    }

    fn console(text: &str) -> Result<Vec<u8>, Errno> {
        rec(record::CONSOLE, text.as_bytes())
    }

    fn dead(kind: u64, reason: &str) -> Result<Vec<u8>, Errno> {
        let mut payload = kind.to_le_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        rec(record::DEAD, &payload)
    }

    fn dma(gpa: u64, key: u64) -> Result<Vec<u8>, Errno> {
        let mut payload = gpa.to_le_bytes().to_vec();
        payload.extend_from_slice(&key.to_le_bytes());
        rec(record::DMA, &payload)
    }

    fn never() -> Option<StopSignal> {
        None
    }

    /// Runs `script`; returns the outcome, what reached stdout and what reached stderr.
    fn run_script(
        script: Vec<Result<Vec<u8>, Errno>>,
    ) -> (Result<Outcome, Error>, Vec<u8>, String) {
        let mut dev = FakeDevice::new(script);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let outcome = run(&mut dev, &mut TestIo::new(&mut out), &mut err, &never);
        assert!(dev.buffer_sizes.iter().all(|&n| n == READ_BUFFER));
        (outcome, out, String::from_utf8(err).expect("UTF-8"))
    }

    #[test]
    fn console_records_reach_stdout() {
        let (outcome, out, err) = run_script(vec![
            console("Linux version 6.1\n"),
            console(""),
            Err(Errno::AGAIN),
            console("\u{1b}[0mbinary\0ok\n"),
            dead(exit::POWEROFF, ""),
        ]);
        assert_eq!(outcome.expect("runs"), Outcome::PowerOff);
        assert_eq!(out, b"Linux version 6.1\n\x1b[0mbinary\0ok\n");
        assert_eq!(err, "");
    }

    #[test]
    fn dead_records_give_exit_codes_and_messages() {
        let cases = [
            (dead(exit::POWEROFF, ""), Outcome::PowerOff, 0, None),
            (dead(exit::RESTART, ""), Outcome::Restart, 0, None),
            (
                dead(exit::CRASHED, "Kernel panic - not syncing: VFS\n"),
                Outcome::Crashed("Kernel panic - not syncing: VFS".into()),
                1,
                Some("guest crashed: Kernel panic - not syncing: VFS"),
            ),
            (
                dead(exit::KILLED, "SET_PTE: gpa 0x9000000 outside guest memory"),
                Outcome::Killed("SET_PTE: gpa 0x9000000 outside guest memory".into()),
                1,
                Some("guest killed: SET_PTE: gpa 0x9000000 outside guest memory"),
            ),
        ];
        for (record, want, code, message) in cases {
            let (outcome, _, err) = run_script(vec![console("hi\n"), record]);
            let outcome = outcome.expect("runs");
            assert_eq!(outcome, want);
            assert_eq!(outcome.exit_code(), code);
            assert_eq!(outcome.message(false).as_deref(), message);
            assert_eq!(err, "");
        }
        assert_eq!(
            Outcome::PowerOff.message(true).as_deref(),
            Some("the guest powered off")
        );
        assert!(Outcome::Restart.message(true).is_some());
    }

    #[test]
    fn reasons_stay_on_one_line() {
        let outcome = Outcome::Crashed(reason_text(b"line one\nlguest: forged\n\0\0"));
        assert_eq!(
            outcome.message(false).as_deref(),
            Some("guest crashed: line one\\nlguest: forged")
        );
        let lossy = reason_text(b"bad \xff byte");
        assert_eq!(lossy, "bad \u{fffd} byte");
    }

    #[test]
    fn eintr_with_a_signal_stops_with_130() {
        let mut dev = FakeDevice::new(vec![console("booting\n"), Err(Errno::INTR)]);
        let checks = Cell::new(0);
        // The signal arrives during the second read.
        let stop = || {
            checks.set(checks.get() + 1);
            (checks.get() > 2).then_some(StopSignal::Int)
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let outcome = run(&mut dev, &mut TestIo::new(&mut out), &mut err, &stop).expect("runs");
        assert_eq!(outcome, Outcome::Stopped(StopSignal::Int));
        assert_eq!(outcome.exit_code(), 130);
        assert_eq!(outcome.message(false).as_deref(), Some("stopped by SIGINT"));
        assert_eq!(dev.reads, 2);
        assert_eq!(out, b"booting\n");
        assert_eq!(Outcome::Stopped(StopSignal::Term).exit_code(), 143);
        assert_eq!(Outcome::Stopped(StopSignal::Hup).exit_code(), 129);
    }

    #[test]
    fn eintr_without_a_signal_keeps_running() {
        let (outcome, out, _) = run_script(vec![
            Err(Errno::INTR),
            console("a"),
            Err(Errno::INTR),
            console("b"),
            dead(exit::POWEROFF, ""),
        ]);
        assert_eq!(outcome.expect("runs"), Outcome::PowerOff);
        assert_eq!(out, b"ab");
    }

    #[test]
    fn a_signal_wins_over_a_restart() {
        let mut dev = FakeDevice::new(vec![dead(exit::RESTART, "")]);
        let checks = Cell::new(0);
        let stop = || {
            checks.set(checks.get() + 1);
            (checks.get() > 1).then_some(StopSignal::Term)
        };
        let outcome = run(
            &mut dev,
            &mut TestIo::new(Vec::new()),
            &mut Vec::new(),
            &stop,
        )
        .expect("runs");
        assert_eq!(outcome, Outcome::Stopped(StopSignal::Term));
    }

    #[test]
    fn dma_warns_once_per_key() {
        let (outcome, _, err) = run_script(vec![
            dma(0x5000, 0x100),
            dma(0x6000, 0x100),
            dma(0x5000, 0x200),
            dead(exit::POWEROFF, ""),
        ]);
        assert_eq!(outcome.expect("runs"), Outcome::PowerOff);
        assert_eq!(
            err,
            "lguest: guest sent DMA to key 0x100 that no device serves\n\
             lguest: guest sent DMA to key 0x200 that no device serves\n"
        );
    }

    #[test]
    fn unknown_kinds_and_short_records_are_errors() {
        let (outcome, _, _) = run_script(vec![rec(9, b"x")]);
        let e = outcome.unwrap_err();
        assert!(matches!(e, Error::BadRecord(RecordProblem::UnknownKind(9))));
        assert_eq!(
            e.to_string(),
            "lg.ko returned a record of unknown kind 9 (is it newer than this launcher?)"
        );
        let (outcome, _, _) = run_script(vec![dead(7, "??")]);
        assert!(matches!(
            outcome,
            Err(Error::BadRecord(RecordProblem::UnknownExitKind(7)))
        ));
        let (outcome, _, _) = run_script(vec![Ok(vec![1, 0, 0])]);
        assert!(matches!(
            outcome,
            Err(Error::BadRecord(RecordProblem::Short {
                kind: None,
                len: 3
            }))
        ));
        let (outcome, _, _) = run_script(vec![rec(record::DMA, &[0; 12])]);
        assert!(matches!(
            outcome,
            Err(Error::BadRecord(RecordProblem::Short {
                kind: Some(record::DMA),
                len: 20
            }))
        ));
        let (outcome, _, _) = run_script(vec![rec(record::DEAD, &[0; 4])]);
        assert!(matches!(
            outcome,
            Err(Error::BadRecord(RecordProblem::Short { .. }))
        ));
    }

    #[test]
    fn read_errors_name_the_errno() {
        for (errno, text) in [
            (
                Errno::NOENT,
                "reading /dev/lguest failed: No such file or directory (ENOENT)",
            ),
            (
                Errno::INVAL,
                "reading /dev/lguest failed: Invalid argument (EINVAL)",
            ),
            (
                Errno::PERM,
                "reading /dev/lguest failed: Operation not permitted (EPERM)",
            ),
        ] {
            let (outcome, _, _) = run_script(vec![console("x"), Err(errno)]);
            let e = outcome.unwrap_err();
            assert_eq!(e.to_string(), text);
            assert_eq!(e.exit_code(), 1);
        }
    }

    /// Fails every write, like stdout on a closed pipe.
    struct ClosedPipe {
        attempts: usize,
    }

    impl Write for ClosedPipe {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            self.attempts += 1;
            Err(io::Error::from_raw_os_error(Errno::PIPE.raw_os_error()))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stdout_is_not_fatal() {
        let mut dev = FakeDevice::new(vec![
            console("one"),
            console("two"),
            console("three"),
            dead(exit::POWEROFF, ""),
        ]);
        let mut pipe = ClosedPipe { attempts: 0 };
        let mut err = Vec::new();
        let outcome =
            run(&mut dev, &mut TestIo::new(&mut pipe), &mut err, &never).expect("keeps running");
        assert_eq!(outcome, Outcome::PowerOff);
        assert_eq!(pipe.attempts, 1, "stops writing after the first failure");
        assert_eq!(
            String::from_utf8(err).expect("UTF-8"),
            "lguest: cannot write the guest's console output to stdout (Broken pipe): dropping it \
             from now on\n"
        );
    }

    /// A write interrupted by a stop signal is abandoned; one interrupted by anything else is
    /// retried.
    #[test]
    fn interrupted_console_writes() {
        struct Interrupting {
            interrupts: usize,
            got: Vec<u8>,
        }
        impl Write for Interrupting {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.interrupts > 0 {
                    self.interrupts -= 1;
                    return Err(io::ErrorKind::Interrupted.into());
                }
                self.got.extend_from_slice(&buf[..1]);
                Ok(1)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = Interrupting {
            interrupts: 2,
            got: Vec::new(),
        };
        let mut dev = FakeDevice::new(vec![console("abc"), dead(exit::POWEROFF, "")]);
        let outcome = run(
            &mut dev,
            &mut TestIo::new(&mut out),
            &mut Vec::new(),
            &never,
        )
        .expect("runs");
        assert_eq!(outcome, Outcome::PowerOff);
        assert_eq!(out.got, b"abc");

        let mut out = Interrupting {
            interrupts: 1,
            got: Vec::new(),
        };
        let mut dev = FakeDevice::new(vec![console("abc")]);
        let checks = Cell::new(0);
        // The loop head, then the interrupted write: stop.
        let stop = || {
            checks.set(checks.get() + 1);
            (checks.get() > 1).then_some(StopSignal::Hup)
        };
        let outcome =
            run(&mut dev, &mut TestIo::new(&mut out), &mut Vec::new(), &stop).expect("runs");
        assert_eq!(outcome, Outcome::Stopped(StopSignal::Hup));
        assert!(out.got.is_empty());
    }

    /// EAGAIN is a break: the devices service their input, then BREAK 0 releases the waker.
    #[test]
    fn breaks_are_serviced_then_ended() {
        let mut dev = FakeDevice::new(vec![
            Err(Errno::AGAIN),
            console("a"),
            Err(Errno::AGAIN),
            Err(Errno::AGAIN),
            dead(exit::POWEROFF, ""),
        ]);
        let mut io = TestIo::new(Vec::new());
        let outcome = run(&mut dev, &mut io, &mut Vec::new(), &never).expect("runs");
        assert_eq!(outcome, Outcome::PowerOff);
        assert_eq!(io.services, 3);
        assert_eq!(dev.breaks_off, 3);
    }

    #[test]
    fn three_ctrl_c_stop_with_130() {
        let mut dev = FakeDevice::new(vec![Err(Errno::AGAIN), Err(Errno::AGAIN)]);
        let mut io = TestIo::new(Vec::new());
        io.stop_at_service = Some(2);
        let outcome = run(&mut dev, &mut io, &mut Vec::new(), &never).expect("runs");
        assert_eq!(outcome, Outcome::ConsoleInterrupt);
        // The waker is released even then.
        assert_eq!(dev.breaks_off, 2);
        assert_eq!(outcome.exit_code(), 130);
        assert_eq!(
            outcome.message(false).as_deref(),
            Some("stopped by ^C ^C ^C on the console")
        );
    }

    #[test]
    fn served_dma_is_not_reported() {
        let mut dev = FakeDevice::new(vec![
            dma(0x5000, 0x100),
            dma(0x6000, 0x200),
            dead(exit::POWEROFF, ""),
        ]);
        let mut io = TestIo::new(Vec::new());
        io.served.push(0x100);
        let mut err = Vec::new();
        run(&mut dev, &mut io, &mut err, &never).expect("runs");
        assert_eq!(io.dmas, [(0x5000, 0x100), (0x6000, 0x200)]);
        assert_eq!(
            String::from_utf8(err).expect("utf8"),
            "lguest: guest sent DMA to key 0x200 that no device serves\n"
        );
    }

    #[test]
    fn decode_records() {
        assert_eq!(
            decode(&rec(record::CONSOLE, b"hi").expect("ok")),
            Ok(Record::Console(b"hi"))
        );
        assert_eq!(
            decode(&dma(0x1000, 42).expect("ok")),
            Ok(Record::Dma {
                gpa: 0x1000,
                key: 42
            })
        );
        assert_eq!(
            decode(&dead(exit::KILLED, "why").expect("ok")),
            Ok(Record::Dead {
                kind: exit::KILLED,
                reason: b"why"
            })
        );
        assert_eq!(
            decode(&[]),
            Err(RecordProblem::Short { kind: None, len: 0 })
        );
    }
}
