//! `lgprobe threads`: concurrency. Reads racing a close, BREAK blocking and waking (and keeping
//! the owner out of the guest), a signal interrupting BREAK 1, and INITIALIZE races.

use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use lg_core::abi::lhreq;
use lg_core::errno::Errno;

use crate::model::{check_dead_record, describe_record, show_read};
use crate::proto::{self, bytes, good_args, init_words, Mapping, Outcome, ReadOutcome, READ_BUF};
use crate::report::{hex, same, show, Report};

/// How long a BREAK 1 writer is given to show it is blocked, and to wake once released.
const STILL_BLOCKED: Duration = Duration::from_millis(200);
const WAKE_WITHIN: Duration = Duration::from_secs(2);
/// Not among `lg_core::errno`'s constants: the VFS, not the module, returns it.
const EBADF: i32 = 9;

pub fn run(rep: &mut Report) -> Result<(), String> {
    let mem = Mapping::guest()?;
    let (r, record) = match read_while_dup_closed(&mem) {
        Ok(record) => (Ok(()), Some(record)),
        Err(e) => (Err(e), None),
    };
    if let Some(record) = record {
        rep.note(&format!(
            "threads: the guest died with {}",
            describe_record(&record)
        ));
    }
    rep.check("read_loop_while_dup_closed", r);
    rep.check("read_loop_while_fd_closed", read_while_fd_closed(&mem));
    rep.check(
        "read_during_break1_eagain_guest_not_run",
        read_during_break(&mem),
    );
    rep.check("break1_blocks_until_break0", break_blocks(&mem));
    rep.check(
        "break1_by_owner_released_by_other_thread",
        owner_break(&mem),
    );
    rep.check("break0_wakes_every_break1_writer", two_waiters(&mem));
    rep.check("break1_interrupted_by_signal_eintr", break_signal(&mem));
    rep.check(
        "break1_signal_with_sa_restart_keeps_waiting",
        break_signal_restart(&mem),
    );
    rep.check("init_race_one_winner_100_rounds", init_race(&mem));
    Ok(())
}

/// BREAK 1 from a new thread, whose result arrives on the returned channel.
fn spawn_break_on(fd: &Arc<OwnedFd>) -> (std::thread::JoinHandle<()>, mpsc::Receiver<Outcome>) {
    let (tx, rx) = mpsc::channel();
    let fd = fd.clone();
    let t = std::thread::spawn(move || {
        let b1 = bytes(&[lhreq::BREAK, 1]);
        let _ = tx.send(proto::write_blocking(
            &*fd,
            &b1,
            "BREAK 1",
            Duration::from_secs(10),
        ));
    });
    (t, rx)
}

fn break_off(fd: impl AsFd) -> Result<(), String> {
    same(proto::write_words(fd, &[lhreq::BREAK, 0]), Ok(16)).map_err(|e| format!("BREAK 0: {e}"))
}

/// The writer must still be blocked: nothing on `rx` for a while.
fn expect_blocked(rx: &mpsc::Receiver<Outcome>) -> Result<(), String> {
    match rx.recv_timeout(STILL_BLOCKED) {
        Err(RecvTimeoutError::Timeout) => Ok(()),
        Ok(r) => Err(format!("BREAK 1 returned {} without a BREAK 0", show(r))),
        Err(RecvTimeoutError::Disconnected) => Err("BREAK 1 thread died".into()),
    }
}

fn expect_woken(rx: &mpsc::Receiver<Outcome>, want: Outcome) -> Result<(), String> {
    match rx.recv_timeout(WAKE_WITHIN) {
        Ok(r) => same(r, want).map_err(|e| format!("BREAK 1 writer: {e}")),
        Err(_) => Err(format!("BREAK 1 writer not woken within {WAKE_WITHIN:?}")),
    }
}

/// The owner's reads in a loop: the first kills the (garbage) guest and returns a DEAD/KILLED
/// record, every later one the identical record. `first` holds the record once read.
fn check_loop_read(i: usize, got: ReadOutcome, first: &mut Option<Vec<u8>>) -> Result<(), String> {
    let b = got.map_err(|e| format!("read {i}: got {}", show_read(&Err(e))))?;
    match first {
        None => {
            check_dead_record(&b, READ_BUF).map_err(|e| format!("read {i}: {e}"))?;
            *first = Some(b);
            Ok(())
        }
        Some(rec) if *rec == b => Ok(()),
        Some(rec) => Err(format!(
            "read {i}: got [{}], want the same record as read 1 [{}]",
            hex(&b),
            hex(rec)
        )),
    }
}

/// Wait (yielding, at most 5 s) until `cond` holds.
fn wait_until(cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() && start.elapsed() < Duration::from_secs(5) {
        std::thread::yield_now();
    }
}

/// (a) The owner reads in a loop while another thread closes its own dup: all reads still get
/// the owner's result (the first runs the guest to its death, the rest return its record).
/// Returns the record.
fn read_while_dup_closed(mem: &Mapping) -> Result<Vec<u8>, String> {
    let fd = proto::fresh()?;
    let dup = proto::dup(&fd)?;
    let (reads, finished) = (&AtomicUsize::new(0), &AtomicBool::new(false));
    std::thread::scope(|s| {
        let owner = s.spawn(|| {
            let r = (|| {
                let init = proto::write_words(&fd, &init_words(&good_args(mem)));
                same(init, Ok(56)).map_err(|e| format!("INITIALIZE: {e}"))?;
                let mut first = None;
                for i in 1..=1000 {
                    reads.store(i, Ordering::Relaxed);
                    check_loop_read(i, proto::read_len(&fd, READ_BUF), &mut first)?;
                }
                first.ok_or_else(|| "no read".to_string())
            })();
            finished.store(true, Ordering::Release);
            r
        });
        s.spawn(move || {
            wait_until(|| reads.load(Ordering::Relaxed) >= 100 || finished.load(Ordering::Acquire));
            drop(dup);
        });
        owner
            .join()
            .unwrap_or_else(|_| Err("owner thread panicked".into()))
    })
}

/// (a') The owner reads in a loop while another thread closes the very fd it reads: each read
/// gets the owner's result until the fd is gone, then EBADF.
fn read_while_fd_closed(mem: &Mapping) -> Result<(), String> {
    let raw = proto::fresh()?.into_raw_fd();
    let (reads, finished) = (&AtomicUsize::new(0), &AtomicBool::new(false));
    std::thread::scope(|s| {
        let owner = s.spawn(|| {
            // SAFETY: `raw` stays open until the main thread closes it; after that the calls
            // fail with EBADF, which is what this check looks for (nothing else opens files now).
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            let r = (|| {
                let init = proto::write_words(fd, &init_words(&good_args(mem)));
                same(init, Ok(56)).map_err(|e| format!("INITIALIZE: {e}"))?;
                let mut first = None;
                for i in 1..=1000 {
                    reads.store(i, Ordering::Relaxed);
                    match proto::read_len(fd, READ_BUF) {
                        Err(Errno(EBADF)) => break,
                        r => check_loop_read(i, r, &mut first)?,
                    }
                }
                Ok(())
            })();
            finished.store(true, Ordering::Release);
            r
        });
        wait_until(|| reads.load(Ordering::Relaxed) >= 100 || finished.load(Ordering::Acquire));
        // SAFETY: `raw` is ours and closed exactly once, here.
        unsafe { rustix::io::close(raw) };
        owner
            .join()
            .unwrap_or_else(|_| Err("owner thread panicked".into()))
    })
}

/// (a'') While a BREAK 1 is in force the owner's read returns EAGAIN without entering the guest,
/// which is therefore still alive after BREAK 0: IRQ works, and the next read kills it.
fn read_during_break(mem: &Mapping) -> Result<(), String> {
    let fd = Arc::new(proto::ready(mem)?);
    let (t, rx) = spawn_break_on(&fd);
    let r = (|| {
        expect_blocked(&rx)?;
        same(proto::read(&*fd), Err(Errno::EAGAIN))
            .map_err(|e| format!("owner read during BREAK 1: {e}"))?;
        break_off(&*fd)?;
        expect_woken(&rx, Ok(16))?;
        same(proto::write_words(&*fd, &[lhreq::IRQ, 3]), Ok(16))
            .map_err(|e| format!("IRQ 3 after BREAK 0: {e}"))?;
        let got = proto::read_len(&*fd, READ_BUF);
        let b = got
            .as_ref()
            .map_err(|_| format!("owner read after BREAK 0: got {}", show_read(&got)))?;
        check_dead_record(b, READ_BUF).map_err(|e| format!("owner read after BREAK 0: {e}"))
    })();
    release(&fd, &rx, t);
    r
}

/// (b) BREAK 1 blocks its writer until BREAK 0 from another thread; then it returns 16.
fn break_blocks(mem: &Mapping) -> Result<(), String> {
    let fd = Arc::new(proto::ready(mem)?);
    let (t, rx) = spawn_break_on(&fd);
    let r = expect_blocked(&rx).and_then(|()| break_off(&*fd));
    let r = r.and_then(|()| expect_woken(&rx, Ok(16)));
    release(&fd, &rx, t);
    r
}

/// Make sure a BREAK 1 thread is gone before moving on, whatever happened.
fn release(fd: &OwnedFd, rx: &mpsc::Receiver<Outcome>, t: std::thread::JoinHandle<()>) {
    let start = Instant::now();
    while !t.is_finished() && start.elapsed() < Duration::from_secs(3) {
        let _ = proto::write_words(fd, &[lhreq::BREAK, 0]);
        let _ = rx.recv_timeout(Duration::from_millis(20));
    }
    if !t.is_finished() {
        crate::watchdog::fatal("a BREAK 1 writer could not be released by BREAK 0");
    }
    let _ = t.join();
}

/// (b') The owner itself blocks in BREAK 1 and another thread releases it.
fn owner_break(mem: &Mapping) -> Result<(), String> {
    let fd = proto::ready(mem)?;
    let (done, sent_off) = (&AtomicBool::new(false), &AtomicBool::new(false));
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(STILL_BLOCKED);
            // Repeat until the owner is out: the first BREAK 0 may come before its BREAK 1.
            let start = Instant::now();
            while !done.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(5) {
                sent_off.store(true, Ordering::Release);
                let _ = proto::write_words(&fd, &[lhreq::BREAK, 0]);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let b1 = bytes(&[lhreq::BREAK, 1]);
        let got = proto::write_blocking(&fd, &b1, "owner BREAK 1", Duration::from_secs(5));
        let released = sent_off.load(Ordering::Acquire);
        done.store(true, Ordering::Release);
        same(got, Ok(16)).map_err(|e| format!("owner BREAK 1: {e}"))?;
        if released {
            Ok(())
        } else {
            Err("owner BREAK 1 returned before any BREAK 0".into())
        }
    })
}

/// (b'') Two writers blocked in BREAK 1 are both woken by one BREAK 0.
fn two_waiters(mem: &Mapping) -> Result<(), String> {
    let fd = Arc::new(proto::ready(mem)?);
    let (t1, rx1) = spawn_break_on(&fd);
    let (t2, rx2) = spawn_break_on(&fd);
    let r = (|| {
        expect_blocked(&rx1)?;
        expect_blocked(&rx2)?;
        break_off(&*fd)?;
        expect_woken(&rx1, Ok(16))?;
        expect_woken(&rx2, Ok(16))
    })();
    release(&fd, &rx1, t1);
    release(&fd, &rx2, t2);
    r
}

/// Signals handled so far, by number.
static SIGNALS: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];

extern "C" fn on_signal(sig: libc::c_int) {
    if let Some(n) = SIGNALS.get(sig as usize) {
        n.fetch_add(1, Ordering::Relaxed);
    }
}

fn handled(sig: libc::c_int) -> usize {
    SIGNALS[sig as usize].load(Ordering::Relaxed)
}

/// Install `on_signal` for `sig`, with or without SA_RESTART.
fn install_handler(sig: libc::c_int, restart: bool) -> Result<(), String> {
    // SAFETY: a zeroed sigaction is valid; the handler only touches atomics.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!("sigaction: {}", std::io::Error::last_os_error()))
    }
}

fn signal(t: &std::thread::JoinHandle<()>, sig: libc::c_int) -> Result<(), String> {
    // SAFETY: `t` has not been joined, so its pthread_t is valid.
    match unsafe { libc::pthread_kill(t.as_pthread_t(), sig) } {
        0 => Ok(()),
        e => Err(format!("pthread_kill: errno {e}")),
    }
}

/// (c) A signal whose handler has no SA_RESTART interrupts a blocked BREAK 1: EINTR.
fn break_signal(mem: &Mapping) -> Result<(), String> {
    install_handler(libc::SIGUSR1, false)?;
    let fd = Arc::new(proto::ready(mem)?);
    let (t, rx) = spawn_break_on(&fd);
    let r = (|| {
        expect_blocked(&rx)?;
        // Resend if the first signal landed before the thread entered write().
        for _ in 0..5 {
            signal(&t, libc::SIGUSR1)?;
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(r) => return same(r, Err(Errno::EINTR)).map_err(|e| format!("BREAK 1: {e}")),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Err("BREAK 1 thread died".into()),
            }
        }
        let n = handled(libc::SIGUSR1);
        Err(format!(
            "BREAK 1 still blocked after 5 signals ({n} handled)"
        ))
    })();
    release(&fd, &rx, t);
    r.and_then(|()| break_off(&*fd))
}

/// (c') With SA_RESTART the interrupted BREAK 1 is restarted: the handler runs, the writer keeps
/// waiting, and BREAK 0 releases it with 16 (docs/abi.md: "EINTR/restart").
fn break_signal_restart(mem: &Mapping) -> Result<(), String> {
    install_handler(libc::SIGUSR2, true)?;
    let fd = Arc::new(proto::ready(mem)?);
    let (t, rx) = spawn_break_on(&fd);
    let r = (|| {
        expect_blocked(&rx)?;
        let before = handled(libc::SIGUSR2);
        signal(&t, libc::SIGUSR2)?;
        let start = Instant::now();
        while handled(libc::SIGUSR2) == before && start.elapsed() < WAKE_WITHIN {
            std::thread::sleep(Duration::from_millis(5));
        }
        if handled(libc::SIGUSR2) == before {
            return Err("the signal handler never ran".into());
        }
        expect_blocked(&rx)?;
        break_off(&*fd)?;
        expect_woken(&rx, Ok(16))
    })();
    release(&fd, &rx, t);
    r
}

/// (d) Two threads race INITIALIZE on one fresh fd, 100 times: one 56, one EBUSY, every time.
fn init_race(mem: &Mapping) -> Result<(), String> {
    let words = init_words(&good_args(mem));
    let mut failed = Vec::new();
    for round in 0..100 {
        let fd = proto::fresh()?;
        let gate = Barrier::new(2);
        let race = || {
            gate.wait();
            proto::write_words(&fd, &words)
        };
        let (a, b) = std::thread::scope(|s| {
            let (a, b) = (s.spawn(race), s.spawn(race));
            (a.join(), b.join())
        });
        let (Ok(a), Ok(b)) = (a, b) else {
            return Err("a racing thread panicked".into());
        };
        match (a, b) {
            (Ok(56), Err(Errno::EBUSY)) | (Err(Errno::EBUSY), Ok(56)) => {}
            _ => failed.push(format!("round {round}: {} and {}", show(a), show(b))),
        }
    }
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(format!("{} of 100 rounds failed; {first}", failed.len())),
    }
}
