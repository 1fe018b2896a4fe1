//! The console (type 1, docs/abi.md §3.4): the guest's output to our stdout, our stdin to the
//! guest.
//!
//! Output: the guest sends a descriptor to its console page `P`; we write the sections' bytes to
//! stdout and set its `used_len`. The early console (`CONSOLE` records, before the guest's driver
//! is up) goes to the same place.
//!
//! Input: the guest binds receive buffers at `P + 8`. When the waker thread says stdin is readable
//! we read what is there, claim a buffer with `LHREQ_GETDMA`, fill it and raise the irq. Until the
//! guest has bound a buffer (early boot) input waits here, up to [`INPUT_MAX`] bytes; more is
//! dropped, with one warning.
//!
//! A terminal on stdin is put in raw mode (no echo, no line editing, no signals: ^C goes to the
//! guest) as the original launcher did, and restored on every way out: normal exit, error, a stop
//! signal (the run loop returns and this is dropped) and even a panic (a panic hook). Since ^C no
//! longer stops the launcher, three ^C, each on its own, within a second do.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::termios::{LocalModes, OptionalActions, SpecialCodeIndex, Termios};

use super::{claim, gather, raise, read_u32, scatter, set_used, Problem};
use crate::device::LguestDevice;
use crate::error::{os_msg, Error};
use crate::signals::StopSignal;
use lg_core::abi::dev::console::INPUT_OFFSET;
use lg_core::abi::NR_IRQS;
use lg_core::dma::{Dma, GuestMem};

/// Input kept while the guest has no buffer for it.
pub const INPUT_MAX: usize = 4096;
/// First and longest wait before offering waiting input again.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Three lone ^C within this long stop the launcher.
const CTRL_C_WINDOW: Duration = Duration::from_secs(1);

/// Where console output goes. A write error (a closed stdout) is not fatal: the guest keeps
/// running and its output is dropped from then on, after one warning.
pub struct ConsoleOut<W: Write> {
    out: W,
    open: bool,
}

impl<W: Write> ConsoleOut<W> {
    pub fn new(out: W) -> ConsoleOut<W> {
        ConsoleOut { out, open: true }
    }

    pub fn write(
        &mut self,
        mut bytes: &[u8],
        warn: &mut dyn Write,
        stop: &dyn Fn() -> Option<StopSignal>,
    ) {
        if !self.open {
            return;
        }
        // By hand rather than write_all, which retries EINTR forever: a signal must also get us
        // out of a write blocked on a full pipe.
        while !bytes.is_empty() {
            match self.out.write(bytes) {
                Ok(0) => return self.close(io::ErrorKind::WriteZero.into(), warn),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if stop().is_some() {
                        return;
                    }
                }
                Err(e) => return self.close(e, warn),
            }
        }
        loop {
            match self.out.flush() {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if stop().is_some() {
                        return;
                    }
                }
                Err(e) => return self.close(e, warn),
            }
        }
    }

    fn close(&mut self, err: io::Error, warn: &mut dyn Write) {
        self.open = false;
        let _ = writeln!(
            warn,
            "lguest: cannot write the guest's console output to stdout ({}): dropping it from now on",
            os_msg(&err)
        );
    }
}

/// Counts lone ^C reads.
#[derive(Default)]
struct CtrlC {
    count: u8,
    first: Option<Instant>,
}

impl CtrlC {
    /// Notes one read of stdin; true on the third lone ^C within [`CTRL_C_WINDOW`].
    fn note(&mut self, data: &[u8], now: Instant) -> bool {
        if data != [3] {
            self.count = 0;
            return false;
        }
        match self.first {
            Some(first) if self.count > 0 && now.duration_since(first) <= CTRL_C_WINDOW => {
                self.count += 1;
            }
            _ => {
                self.first = Some(now);
                self.count = 1;
            }
        }
        self.count >= 3
    }
}

/// The console device.
pub struct Console {
    /// Guest-physical address of its page (the output key; input is bound at `+ 8`).
    pub page: u64,
    pub irq: u32,
    pub out: ConsoleOut<Box<dyn Write>>,
    /// Our own descriptor of stdin; `None` once it ended (or if there is no stdin).
    input: Option<OwnedFd>,
    /// Input the guest has not taken yet.
    pending: Vec<u8>,
    overflow_warned: bool,
    raw: Option<RawMode>,
    ctrl_c: CtrlC,
    /// How long the waker should wait before offering `pending` again.
    retry: Option<Duration>,
}

impl Console {
    /// The console on the launcher's stdin and stdout.
    pub fn stdio(page: u64, irq: u32) -> Console {
        // No stdin at all (fd 0 closed) simply means no input.
        let input = io::stdin().as_fd().try_clone_to_owned().ok();
        Console::new(page, irq, Box::new(io::stdout()), input)
    }

    pub fn new(page: u64, irq: u32, out: Box<dyn Write>, input: Option<OwnedFd>) -> Console {
        Console {
            page,
            irq,
            out: ConsoleOut::new(out),
            input,
            pending: Vec::new(),
            overflow_warned: false,
            raw: None,
            ctrl_c: CtrlC::default(),
            retry: None,
        }
    }

    pub fn describe(&self) -> String {
        let tty = self.input.as_ref().is_some_and(rustix::termios::isatty);
        match (&self.input, tty) {
            (None, _) => "output to stdout (no stdin)".to_owned(),
            (Some(_), false) => "output to stdout, input from stdin".to_owned(),
            (Some(_), true) => "output to stdout, input from the terminal in raw mode \
                                (^C goes to the guest; three ^C within a second stop it)"
                .to_owned(),
        }
    }

    /// Raw mode if stdin is a terminal. A failure only costs line editing: warn and go on.
    ///
    /// A launcher started in the background (`lguest ... &` from an interactive shell) does not
    /// own its terminal: changing its settings or reading it would stop the launcher (SIGTTOU,
    /// SIGTTIN). It takes no console input then, and says so.
    pub fn enter_raw_mode(&mut self, warn: &mut dyn Write) {
        let Some(fd) = &self.input else { return };
        if !rustix::termios::isatty(fd) {
            return;
        }
        if !in_foreground(fd.as_fd()) {
            self.input = None;
            let _ = writeln!(
                warn,
                "lguest: stdin is a terminal but lguest runs in the background: no console input"
            );
            return;
        }
        match RawMode::enter(fd.as_fd()) {
            Ok(raw) => self.raw = raw,
            Err(err) => {
                let _ = writeln!(
                    warn,
                    "lguest: cannot put the terminal in raw mode ({}): console input is line by line",
                    os_msg(&err)
                );
            }
        }
    }

    /// What the waker should watch for input.
    pub fn input_fd(&self) -> Option<BorrowedFd<'_>> {
        self.input.as_ref().map(|fd| fd.as_fd())
    }

    pub fn input_open(&self) -> bool {
        self.input.is_some()
    }

    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The guest sent the descriptor at `gpa` to the console page: print it.
    pub fn output(
        &mut self,
        mem: &mut dyn GuestMem,
        gpa: u64,
        warn: &mut dyn Write,
        stop: &dyn Fn() -> Option<StopSignal>,
    ) -> Problem {
        let dma = match Dma::fetch(mem, gpa) {
            Ok(dma) => dma,
            Err(bad) => {
                let _ = set_used(mem, gpa, 0);
                return Some(format!("console output: {bad}"));
            }
        };
        let data = match gather(mem, &dma) {
            Ok(data) => data,
            Err(_) => return Some(format!("console output at {gpa:#x}: unreadable")),
        };
        self.out.write(&data, warn, stop);
        // The guest's output is taken even if stdout is gone: it must not wait for us.
        let _ = set_used(mem, gpa, data.len() as u32);
        None
    }

    /// Reads what stdin has (without blocking). True when the user asked to stop (three ^C).
    pub fn read_input(&mut self, warn: &mut dyn Write) -> bool {
        let Some(fd) = &self.input else {
            return false;
        };
        let mut pfd = [PollFd::new(fd, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut pfd, Some(&zero)) {
            Ok(0) | Err(Errno::INTR) => return false,
            Ok(_) => {}
            Err(errno) => {
                self.stop_input(warn, &io::Error::from(errno));
                return false;
            }
        }
        let mut buf = [0u8; INPUT_MAX];
        match rustix::io::read(fd, &mut buf) {
            // End of input: stop watching it (the guest keeps running).
            Ok(0) => self.input = None,
            Ok(n) => {
                let data = &buf[..n];
                if self.raw.is_some() && self.ctrl_c.note(data, Instant::now()) {
                    return true;
                }
                self.queue(data, warn);
            }
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(errno) => self.stop_input(warn, &io::Error::from(errno)),
        }
        false
    }

    fn stop_input(&mut self, warn: &mut dyn Write, err: &io::Error) {
        self.input = None;
        let _ = writeln!(
            warn,
            "lguest: cannot read stdin ({}): no more console input",
            os_msg(err)
        );
    }

    /// Keeps `data` for the guest, up to [`INPUT_MAX`] bytes in all.
    fn queue(&mut self, data: &[u8], warn: &mut dyn Write) {
        let room = INPUT_MAX.saturating_sub(self.pending.len());
        let keep = data.len().min(room);
        self.pending.extend_from_slice(&data[..keep]);
        if keep < data.len() && !self.overflow_warned {
            self.overflow_warned = true;
            let _ = writeln!(
                warn,
                "lguest: the guest is not taking console input: dropping what does not fit in \
                 {INPUT_MAX} bytes (reported once)"
            );
        }
    }

    /// Hands waiting input to the guest: as many bound buffers as it takes, one irq at the end.
    pub fn deliver(
        &mut self,
        mem: &mut dyn GuestMem,
        dev: &mut dyn LguestDevice,
    ) -> Result<Problem, Error> {
        let mut problem = None;
        let mut irqs = 0u64;
        while !self.pending.is_empty() {
            let Some(gpa) = claim(dev, self.page + INPUT_OFFSET)? else {
                break;
            };
            // GETDMA left the binding's irq in used_len.
            let irq = match read_u32(mem, gpa) {
                Ok(irq) if u64::from(irq) < NR_IRQS => irq,
                _ => self.irq,
            };
            let placed = Dma::fetch(mem, gpa)
                .map_err(|bad| bad.to_string())
                .and_then(|dma| {
                    scatter(mem, &dma, &self.pending).map_err(|_| "unwritable".to_owned())
                });
            match placed {
                Ok(n) if n > 0 => {
                    let _ = set_used(mem, gpa, n as u32);
                    self.pending.drain(..n);
                    irqs |= 1 << irq;
                }
                Ok(_) | Err(_) => {
                    // Give the buffer back rather than leave it claimed and empty.
                    let _ = set_used(mem, gpa, 0);
                    let why = placed.err().unwrap_or_else(|| "it has no room".to_owned());
                    problem = Some(format!("console input buffer at {gpa:#x}: {why}"));
                    break;
                }
            }
        }
        for irq in 0..NR_IRQS as u32 {
            if irqs & (1 << irq) != 0 {
                raise(dev, irq)?;
            }
        }
        self.retry = if self.pending.is_empty() {
            None
        } else {
            Some(self.retry.map_or(RETRY_FIRST, |r| (r * 2).min(RETRY_MAX)))
        };
        Ok(problem)
    }
}

// ------------------------------------------------------------------------------------------------
// Raw mode.
// ------------------------------------------------------------------------------------------------

/// Is our process group the terminal's foreground group? A terminal that is not our controlling
/// terminal cannot stop us: yes.
fn in_foreground(tty: BorrowedFd<'_>) -> bool {
    match rustix::termios::tcgetpgrp(tty) {
        Ok(group) => group == rustix::process::getpgrp(),
        Err(_) => true,
    }
}

/// The terminal settings to put back if we panic: the descriptor (valid while the [`RawMode`]
/// lives) and the settings.
static SAVED: Mutex<Option<(RawFd, Termios)>> = Mutex::new(None);
static PANIC_HOOK: Once = Once::new();

fn restore_saved() {
    // try_lock: a panic while the lock is held must not deadlock in its own hook.
    if let Ok(saved) = SAVED.try_lock() {
        if let Some((fd, termios)) = saved.as_ref() {
            // SAFETY: the descriptor stays open for as long as it is recorded in SAVED (RawMode
            // removes it before closing it).
            let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
            let _ = rustix::termios::tcsetattr(fd, OptionalActions::Now, termios);
        }
    }
}

/// A terminal in raw mode; dropping it restores the settings it found.
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on `fd` if it is a terminal (`Ok(None)` if not): no echo, no canonical line
    /// editing, no signal characters, one byte at a time. Output processing stays, so the
    /// launcher's own messages still start at the left margin.
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<Option<RawMode>> {
        if !rustix::termios::isatty(fd) {
            return Ok(None);
        }
        let saved = rustix::termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.local_modes
            .remove(LocalModes::ISIG | LocalModes::ICANON | LocalModes::ECHO);
        raw.special_codes[SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        let fd = fd.try_clone_to_owned()?;
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_saved();
                previous(info);
            }));
        });
        rustix::termios::tcsetattr(&fd, OptionalActions::Now, &raw)?;
        if let Ok(mut s) = SAVED.lock() {
            *s = Some((std::os::fd::AsRawFd::as_raw_fd(&fd), saved.clone()));
        }
        Ok(Some(RawMode { fd, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Drain: output already written still goes out with the settings it was written under.
        let _ = rustix::termios::tcsetattr(&self.fd, OptionalActions::Drain, &self.saved);
        if let Ok(mut s) = SAVED.lock() {
            *s = None;
        }
    }
}

// ------------------------------------------------------------------------------------------------

#[cfg(test)]
pub mod tests {
    use super::super::testing::{FakeLguest, FakeMem};
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A writer whose bytes the test can still see after handing it over.
    #[derive(Clone, Default)]
    pub struct SharedBuf(pub Rc<RefCell<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuf {
        pub fn bytes(&self) -> Vec<u8> {
            self.0.borrow().clone()
        }
    }

    /// A console writing to a [`SharedBuf`], reading from `input`.
    pub fn console(page: u64, irq: u32, input: Option<OwnedFd>) -> (Console, SharedBuf) {
        let out = SharedBuf::default();
        (Console::new(page, irq, Box::new(out.clone()), input), out)
    }

    fn never() -> Option<StopSignal> {
        None
    }

    const PAGE: u64 = 0x8000;

    #[test]
    fn output_reaches_stdout_and_sets_used_len() {
        let (mut c, out) = console(PAGE, 2, None);
        let mut mem = FakeMem::new(0x9000);
        mem.put(0x1ff8, b"Linux ve");
        mem.put(0x2000, b"rsion 6.1\n");
        mem.put_dma(0x400, 0, &[(0x1ff8, 8), (0x2000, 10)]);
        let mut warn = Vec::new();
        assert_eq!(c.output(&mut mem, 0x400, &mut warn, &never), None);
        assert_eq!(out.bytes(), b"Linux version 6.1\n");
        assert_eq!(mem.u32_at(0x400), 18);
        assert!(warn.is_empty());
    }

    #[test]
    fn bad_output_descriptors_are_refused() {
        let (mut c, out) = console(PAGE, 2, None);
        let mut mem = FakeMem::new(0x9000);
        mem.put_dma(0x400, 77, &[(0x1ff8, 9)]);
        let mut warn = Vec::new();
        let problem = c.output(&mut mem, 0x400, &mut warn, &never);
        assert!(
            problem
                .as_deref()
                .is_some_and(|p| p.starts_with("console output: DMA section 0")),
            "{problem:?}"
        );
        assert!(out.bytes().is_empty());
        assert_eq!(mem.u32_at(0x400), 0);
        // A descriptor outside memory: nothing written anywhere.
        assert!(c.output(&mut mem, 0x9000, &mut warn, &never).is_some());
    }

    #[test]
    fn early_console_and_closed_stdout() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(32))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = ConsoleOut::new(Closed);
        let mut warn = Vec::new();
        out.write(b"one", &mut warn, &never);
        out.write(b"two", &mut warn, &never);
        assert_eq!(
            String::from_utf8(warn).expect("utf8"),
            "lguest: cannot write the guest's console output to stdout (Broken pipe): dropping it from now on\n"
        );
    }

    fn pipe_with(data: &[u8]) -> (OwnedFd, OwnedFd) {
        let (r, w) = rustix::pipe::pipe().expect("pipe");
        rustix::io::write(&w, data).expect("write");
        (r, w)
    }

    #[test]
    fn input_goes_into_a_claimed_buffer() {
        let (r, _w) = pipe_with(b"ls -l\n");
        let (mut c, _) = console(PAGE, 2, Some(r));
        let mut mem = FakeMem::new(0x9000);
        // The guest's buffer, as GETDMA leaves it: used_len = the binding's irq.
        mem.put_dma(0x600, 2, &[(0x3000, 4), (0x4000, 64)]);
        let mut dev = FakeLguest::default();
        dev.getdma.push_back(Ok(0x600));
        let mut warn = Vec::new();
        assert!(!c.read_input(&mut warn));
        assert_eq!(c.deliver(&mut mem, &mut dev).expect("ok"), None);
        assert_eq!(dev.keys, [PAGE + 8]);
        assert_eq!(mem.get(0x3000, 4), b"ls -");
        assert_eq!(mem.get(0x4000, 2), b"l\n");
        assert_eq!(mem.u32_at(0x600), 6);
        assert_eq!(dev.irqs, [2]);
        assert_eq!(c.retry(), None);
        assert!(warn.is_empty());
    }

    #[test]
    fn input_waits_for_a_buffer() {
        let (r, w) = pipe_with(b"abc");
        let (mut c, _) = console(PAGE, 5, Some(r));
        let mut mem = FakeMem::new(0x9000);
        let mut dev = FakeLguest::default();
        let mut warn = Vec::new();
        c.read_input(&mut warn);
        // Nothing bound yet, then every buffer busy: the input waits, retried later and later.
        dev.getdma.push_back(Err(Errno::NOENT));
        assert_eq!(c.deliver(&mut mem, &mut dev).expect("ok"), None);
        assert_eq!(c.retry(), Some(RETRY_FIRST));
        dev.getdma.push_back(Err(Errno::NOSPC));
        c.deliver(&mut mem, &mut dev).expect("ok");
        assert_eq!(c.retry(), Some(RETRY_FIRST * 2));
        assert!(dev.irqs.is_empty());
        // More input arrives; a small buffer takes part of it, a second one the rest.
        rustix::io::write(&w, b"def").expect("write");
        c.read_input(&mut warn);
        mem.put_dma(0x600, 5, &[(0x3000, 4)]);
        mem.put_dma(0x700, 5, &[(0x3100, 4)]);
        dev.getdma.push_back(Ok(0x600));
        dev.getdma.push_back(Ok(0x700));
        c.deliver(&mut mem, &mut dev).expect("ok");
        assert_eq!(mem.get(0x3000, 4), b"abcd");
        assert_eq!(mem.get(0x3100, 2), b"ef");
        assert_eq!(mem.u32_at(0x600), 4);
        assert_eq!(mem.u32_at(0x700), 2);
        // One irq for both buffers.
        assert_eq!(dev.irqs, [5]);
        assert_eq!(c.retry(), None);
        // End of input: no longer watched.
        drop(w);
        c.read_input(&mut warn);
        assert!(!c.input_open());
        assert!(warn.is_empty());
    }

    #[test]
    fn too_much_waiting_input_is_dropped_once() {
        let (r, w) = rustix::pipe::pipe().expect("pipe");
        let (mut c, _) = console(PAGE, 2, Some(r));
        let mut warn = Vec::new();
        for _ in 0..3 {
            rustix::io::write(&w, &[b'x'; 3000]).expect("write");
            c.read_input(&mut warn);
        }
        assert_eq!(c.pending.len(), INPUT_MAX);
        let text = String::from_utf8(warn).expect("utf8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("lguest: the guest is not taking console input"));
    }

    #[test]
    fn a_bad_input_buffer_is_given_back() {
        let (r, _w) = pipe_with(b"q");
        let (mut c, _) = console(PAGE, 2, Some(r));
        let mut mem = FakeMem::new(0x9000);
        mem.put_dma(0x600, 2, &[(0x3ffc, 8)]);
        let mut dev = FakeLguest::default();
        dev.getdma.push_back(Ok(0x600));
        c.read_input(&mut Vec::new());
        let problem = c.deliver(&mut mem, &mut dev).expect("ok");
        assert!(problem.is_some_and(|p| p.contains("crosses a page")));
        assert_eq!(mem.u32_at(0x600), 0);
        assert!(dev.irqs.is_empty());
        // Still waiting for a good one.
        assert_eq!(c.pending, b"q");
    }

    #[test]
    fn three_lone_ctrl_c_within_a_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = CtrlC::default();
        assert!(!c.note(b"\x03", ms(0)));
        assert!(!c.note(b"\x03", ms(300)));
        assert!(c.note(b"\x03", ms(600)));
        // Too slow: the count starts again.
        let mut c = CtrlC::default();
        assert!(!c.note(b"\x03", ms(0)));
        assert!(!c.note(b"\x03", ms(900)));
        assert!(!c.note(b"\x03", ms(1100)));
        assert!(!c.note(b"\x03", ms(1500)));
        assert!(c.note(b"\x03", ms(1800)));
        // Anything else in between, or a ^C with other bytes, resets it.
        let mut c = CtrlC::default();
        assert!(!c.note(b"\x03", ms(0)));
        assert!(!c.note(b"\x03", ms(10)));
        assert!(!c.note(b"a", ms(20)));
        assert!(!c.note(b"\x03\x03\x03", ms(30)));
        assert!(!c.note(b"\x03", ms(40)));
    }

    #[test]
    fn raw_mode_only_on_a_terminal() {
        let (r, _w) = rustix::pipe::pipe().expect("pipe");
        assert!(RawMode::enter(r.as_fd()).expect("not a tty").is_none());
    }

    /// On a pseudo-terminal: raw mode clears ECHO, ICANON and ISIG, and dropping it restores them.
    #[test]
    fn raw_mode_is_restored() {
        use rustix::fs::{Mode, OFlags};
        let Ok(master) =
            rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
        else {
            return; // no ptys here
        };
        rustix::pty::grantpt(&master).expect("grantpt");
        rustix::pty::unlockpt(&master).expect("unlockpt");
        let name = rustix::pty::ptsname(&master, Vec::new()).expect("ptsname");
        let slave = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY,
            Mode::empty(),
        )
        .expect("open slave");
        let before = rustix::termios::tcgetattr(&slave).expect("tcgetattr");
        assert!(before
            .local_modes
            .contains(LocalModes::ECHO | LocalModes::ICANON));
        let raw = RawMode::enter(slave.as_fd()).expect("raw").expect("a tty");
        let during = rustix::termios::tcgetattr(&slave).expect("tcgetattr");
        assert!(!during
            .local_modes
            .intersects(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG));
        assert!(SAVED.lock().expect("lock").is_some());
        drop(raw);
        let after = rustix::termios::tcgetattr(&slave).expect("tcgetattr");
        assert_eq!(after.local_modes, before.local_modes);
        assert!(SAVED.lock().expect("lock").is_none());
    }
}
