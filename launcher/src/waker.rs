//! The waker: a thread that watches the guest's inputs (stdin, TAP devices) while the main thread
//! is inside `read()` running the guest, and gets the main thread out when one has data.
//!
//! The original launcher forked a process for this; a thread does the same job. It `poll()`s the
//! inputs it was told to watch and a control pipe. When an input is readable (or a retry timeout
//! expires) it writes `LHREQ_BREAK 1` to `/dev/lguest`: the guest is kicked out (even out of a
//! halt), the main thread's `read()` fails with `EAGAIN`, and the waker blocks in that write. The
//! main thread reads what is waiting, sends the waker its next [`Plan`] through the pipe and writes
//! `BREAK 0`, which releases the waker; only then does the waker read the plan and poll again.
//! The two run in lockstep, so the waker never polls an input the main thread has not drained yet
//! and cannot spin: an input that ended (stdin at EOF) is simply left out of the next plan.
//!
//! Shutting down ([`Drop`]): a stop message on the pipe, and `BREAK 0` until the thread is gone,
//! since it may be blocked in (or about to make) a `BREAK 1` that nobody would answer otherwise.
//!
//! The waker blocks every signal: SIGINT and friends must interrupt the main thread's `read()`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::device::request;
use lg_core::abi::lhreq;

/// What to watch next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Bit `i`: watch the waker's fd `i`.
    pub watch: u64,
    /// Break anyway after this long (input waiting for the guest to bind a buffer).
    pub retry: Option<Duration>,
}

/// Control messages: three little-endian words (kind, watch, retry in µs or `NO_RETRY`). Each is
/// one write of less than `PIPE_BUF`, so it arrives whole.
const MSG_PLAN: u64 = 1;
const MSG_STOP: u64 = 2;
const MSG_SIZE: usize = 24;
const NO_RETRY: u64 = u64::MAX;
/// How long shutting down may take before we give up on joining the thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, PartialEq, Eq)]
enum Msg {
    Plan(Plan),
    Stop,
}

fn encode(msg: &Msg) -> [u8; MSG_SIZE] {
    let words = match msg {
        Msg::Plan(p) => [
            MSG_PLAN,
            p.watch,
            p.retry.map_or(NO_RETRY, |d| {
                u64::try_from(d.as_micros()).unwrap_or(NO_RETRY - 1)
            }),
        ],
        Msg::Stop => [MSG_STOP, 0, 0],
    };
    let mut b = [0u8; MSG_SIZE];
    for (chunk, w) in b.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    b
}

fn decode(b: &[u8; MSG_SIZE]) -> Msg {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[8 * i..8 * i + 8]);
        u64::from_le_bytes(w)
    };
    match word(0) {
        MSG_PLAN => Msg::Plan(Plan {
            watch: word(1),
            retry: (word(2) != NO_RETRY).then(|| Duration::from_micros(word(2))),
        }),
        _ => Msg::Stop,
    }
}

/// The main thread's handle on the waker thread.
pub struct Waker {
    ctl: Option<OwnedFd>,
    /// Our own descriptor of `/dev/lguest`, for the `BREAK 0`s that release the thread on stop.
    lguest: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Waker {
    /// Starts the thread on `fds` (the waker's own descriptors), watching as `plan` says.
    /// `lguest` is the initialized `/dev/lguest`.
    pub fn spawn(lguest: BorrowedFd<'_>, fds: Vec<OwnedFd>, plan: Plan) -> io::Result<Waker> {
        let (ctl_rx, ctl_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let thread_lguest = lguest.try_clone_to_owned()?;
        let lguest = lguest.try_clone_to_owned()?;
        // Block every signal while spawning: the thread inherits the mask, so no signal is ever
        // delivered to it; then restore ours.
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old))
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        let spawned = std::thread::Builder::new()
            .name("lguest-waker".into())
            .spawn(move || watch(thread_lguest, ctl_rx, fds, plan));
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        Ok(Waker {
            ctl: Some(ctl_tx),
            lguest,
            thread: Some(spawned?),
        })
    }

    /// Tells the thread what to watch after the current break (call before `BREAK 0`).
    pub fn plan(&mut self, plan: Plan) -> io::Result<()> {
        self.send(&Msg::Plan(plan))
    }

    fn send(&mut self, msg: &Msg) -> io::Result<()> {
        let Some(ctl) = &self.ctl else {
            return Ok(());
        };
        let bytes = encode(msg);
        loop {
            match rustix::io::write(ctl, &bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
                Err(Errno::INTR) => continue,
                // The thread is gone (it stops when the guest is dead): nothing to tell.
                Err(Errno::PIPE) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        let _ = self.send(&Msg::Stop);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !thread.is_finished() && Instant::now() < deadline {
            // Releases a BREAK 1 in progress; harmless otherwise.
            let _ = request(self.lguest.as_fd(), lhreq::BREAK, 0);
            std::thread::sleep(Duration::from_millis(1));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
        // Otherwise leave it: the process is about to exit anyway.
        self.ctl = None;
    }
}

/// Reads one control message; `Stop` for end of file or an error (the main thread is gone).
fn read_msg(ctl: BorrowedFd<'_>) -> Msg {
    let mut b = [0u8; MSG_SIZE];
    let mut got = 0;
    while got < MSG_SIZE {
        match rustix::io::read(ctl, &mut b[got..]) {
            Ok(0) => return Msg::Stop,
            Ok(n) => got += n,
            Err(Errno::INTR) => continue,
            Err(_) => return Msg::Stop,
        }
    }
    decode(&b)
}

/// The thread.
fn watch(lguest: OwnedFd, ctl: OwnedFd, fds: Vec<OwnedFd>, mut plan: Plan) {
    loop {
        let mut pollfds = vec![PollFd::new(&ctl, PollFlags::IN)];
        for (i, fd) in fds.iter().enumerate() {
            if i < 64 && plan.watch & (1 << i) != 0 {
                pollfds.push(PollFd::new(fd, PollFlags::IN));
            }
        }
        let timeout = plan.retry.map(|d| Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        match rustix::event::poll(&mut pollfds, timeout.as_ref()) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            // Cannot watch anything (should not happen): stop rather than spin.
            Err(_) => return,
        }
        if !pollfds[0].revents().is_empty() {
            // Outside a break only a stop (or the main thread closing the pipe) comes.
            match read_msg(ctl.as_fd()) {
                Msg::Plan(p) => {
                    plan = p;
                    continue;
                }
                Msg::Stop => return,
            }
        }
        drop(pollfds);
        // An input is ready, or the retry time is up: break the guest out. This returns when the
        // main thread has serviced everything and written BREAK 0; an error means the guest is
        // gone.
        if request(lguest.as_fd(), lhreq::BREAK, 1).is_err() {
            return;
        }
        match read_msg(ctl.as_fd()) {
            Msg::Plan(p) => plan = p,
            Msg::Stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Read;

    #[test]
    fn messages_round_trip() {
        for msg in [
            Msg::Plan(Plan {
                watch: 0b101,
                retry: None,
            }),
            Msg::Plan(Plan {
                watch: 0,
                retry: Some(Duration::from_millis(40)),
            }),
            Msg::Stop,
        ] {
            assert_eq!(decode(&encode(&msg)), msg);
        }
    }

    /// With a plain file for `/dev/lguest` the BREAK writes land in the file: the thread breaks
    /// once per readable input and waits for the next plan in between, so it never spins.
    #[test]
    fn breaks_once_per_input_and_stops() {
        let path = std::env::temp_dir().join(format!("lguest-waker-{}", std::process::id()));
        let lguest = File::create(&path).expect("create");
        let (input_rx, input_tx) = rustix::pipe::pipe().expect("pipe");
        let mut waker = Waker::spawn(
            lguest.as_fd(),
            vec![input_rx],
            Plan {
                watch: 1,
                retry: None,
            },
        )
        .expect("spawn");
        let breaks = || {
            let mut bytes = Vec::new();
            File::open(&path)
                .expect("open")
                .read_to_end(&mut bytes)
                .expect("read");
            bytes
                .chunks_exact(16)
                .filter(|c| c[..8] == lhreq::BREAK.to_le_bytes() && c[8] == 1)
                .count()
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(breaks(), 0);
        rustix::io::write(&input_tx, b"x").expect("write");
        let until = Instant::now() + Duration::from_secs(5);
        while breaks() == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The input is still unread, but until a plan comes the thread waits.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(breaks(), 1);
        // Next plan: not watching it any more; a retry timer instead.
        waker
            .plan(Plan {
                watch: 0,
                retry: Some(Duration::from_millis(10)),
            })
            .expect("plan");
        while breaks() < 2 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(breaks(), 2);
        waker.plan(Plan::default()).expect("plan");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(breaks(), 2);
        let started = Instant::now();
        drop(waker);
        assert!(started.elapsed() < Duration::from_secs(1));
        let _ = std::fs::remove_file(&path);
    }
}
