//! `lgprobe lifecycle N`: N guests created, run and destroyed in the ways a host sees in real life,
//! to prove nothing leaks and nothing breaks:
//! - the launcher is SIGKILLed while its guest runs (a forked child that spins in the guest);
//! - `/dev/lguest` is closed by another thread while the owner is inside `read()`, and a signal
//!   then ends the read (the file is released only after that);
//! - the guest dies by itself (its first hypercall is not INIT) and the file is closed normally.
//!
//! The guests are ten lines of machine code on hand-built page tables: lgprobe does not need the
//! launcher or an ELF image for this.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lg_core::abi::{self, record, PAGE_SIZE};
use rustix::mm::ProtFlags;

use crate::proto::{self, Mapping};
use crate::report::Report;

/// Guest-physical layout: page tables at 0x1000..0x5000, code at 0x5000, mapped at 0x40_0000.
const PAGES: u64 = 8;
const ENTRY: u64 = 0x40_0000;
const CODE_GPA: u64 = 0x5000;
/// `jmp .`: spins until the host takes the CPU away.
const SPIN: &[u8] = &[0xeb, 0xfe];
/// `mov $9999, %eax; int $0x1f`: a first hypercall that is not INIT, so the host kills it.
const DIE: &[u8] = &[0xb8, 0x0f, 0x27, 0x00, 0x00, 0xcd, 0x1f];

/// Guest memory with 4-level tables mapping ENTRY to the code page, and `code` in it.
fn guest(code: &[u8]) -> Result<Mapping, String> {
    let mem = Mapping::anon(
        (PAGES * PAGE_SIZE) as usize,
        ProtFlags::READ | ProtFlags::WRITE,
    )?;
    let p = 0x3 | 0x20; // present, writable, accessed
    for (table, index, next) in [
        (0x1000u64, 0u64, 0x2000u64), // PML4[0] -> PDPT
        (0x2000, 0, 0x3000),          // PDPT[0] -> PD
        (0x3000, 2, 0x4000),          // PD[2] (2 MiB..4 MiB) -> PT
        (0x4000, 0, CODE_GPA),        // PT[0] -> code
    ] {
        mem.fill((table + 8 * index) as usize, &(next | p).to_le_bytes());
    }
    mem.fill(CODE_GPA as usize, code);
    Ok(mem)
}

fn start(code: &[u8]) -> Result<(Mapping, OwnedFd), String> {
    let mem = guest(code)?;
    let mut args = proto::good_args(&mem);
    args.entry = ENTRY;
    args.cr3 = 0x1000;
    args.boot_params = 0;
    args.pfn_limit = PAGES;
    let fd = proto::fresh()?;
    match proto::write_words(&fd, &proto::init_words(&args)) {
        Ok(56) => Ok((mem, fd)),
        other => Err(format!("INITIALIZE gave {}", crate::report::show(other))),
    }
}

/// A forked child runs a spinning guest; we SIGKILL it at a random moment.
fn sigkill_while_running(delay_us: u64) -> Result<(), String> {
    // SAFETY: fork in a process whose other threads (the watchdog) hold no locks the child needs:
    // the child only makes raw system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        let code = match start(SPIN) {
            Ok((_mem, fd)) => {
                let mut buf = [0u8; 64];
                // Runs the guest until the parent's SIGKILL.
                // SAFETY: a read into a local buffer.
                unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                3
            }
            Err(_) => 2,
        };
        // SAFETY: leave the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    std::thread::sleep(Duration::from_micros(delay_us));
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        if libc::WIFEXITED(status) {
            return Err(format!(
                "child exited with {} before the kill",
                libc::WEXITSTATUS(status)
            ));
        }
    }
    Ok(())
}

static GOT_SIGNAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GOT_SIGNAL.store(true, Ordering::SeqCst);
}

/// The owner thread spins in the guest; another thread closes the fd, then signals the owner.
/// Returns whether the close really happened while the owner was inside `read()` (the close can
/// also win the race, and then the read fails with EBADF: legal, and still a clean teardown).
fn close_from_other_thread() -> Result<bool, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owner = std::thread::spawn(move || -> Result<bool, String> {
        let (mem, fd) = start(SPIN)?;
        // SAFETY: pthread_self of this thread, sent to the closer.
        let me = unsafe { libc::pthread_self() };
        let raw = fd.as_raw_fd();
        tx.send((me, raw)).map_err(|e| e.to_string())?;
        // `fd` is closed by the other thread while we are inside read(): forget our copy.
        std::mem::forget(fd);
        let mut buf = [0u8; 64];
        // SAFETY: a read into a local buffer; the kernel keeps the file alive for the read.
        let r = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) };
        let err = std::io::Error::last_os_error().raw_os_error();
        drop(mem);
        match (r, err) {
            (-1, Some(libc::EINTR)) => Ok(true),
            (-1, Some(libc::EBADF)) => Ok(false),
            _ => Err(format!(
                "read ended with {r} ({err:?}), want EINTR (or EBADF)"
            )),
        }
    });
    let (thread, raw) = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(2));
    // SAFETY: closing the descriptor the owner forgot, then interrupting its read.
    unsafe {
        libc::close(raw);
        std::thread::sleep(Duration::from_millis(1));
        libc::pthread_kill(thread, libc::SIGUSR1);
    }
    owner
        .join()
        .map_err(|_| "owner thread panicked".to_string())?
}

/// A guest that dies at once: the record says so, and the file closes normally.
fn dies_by_itself() -> Result<(), String> {
    let (_mem, fd) = start(DIE)?;
    let mut buf = [0u8; 256];
    let n = proto::read_raw(&fd, buf.as_mut_ptr(), buf.len()).map_err(|e| format!("{e:?}"))?;
    let word = |i: usize| u64::from_le_bytes(buf[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
    if n < 16 || word(0) != record::DEAD || word(1) != abi::exit::KILLED {
        return Err(format!("record {:x?}", &buf[..n.min(64)]));
    }
    let reason = String::from_utf8_lossy(&buf[16..n]);
    if !reason.contains("first hypercall must be INIT") {
        return Err(format!("reason {reason:?}"));
    }
    Ok(())
}

pub fn run(rep: &mut Report, n: u64) -> Result<(), String> {
    // SAFETY: installing a handler that only stores to an atomic; no SA_RESTART, so the blocked
    // read() returns EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let mut counts = [0u64; 3];
    let mut during_read = 0u64;
    for i in 0..n {
        let (kind, result) = match i % 10 {
            0..=3 => (0, sigkill_while_running(2000 + (i * 7919) % 20_000)),
            4..=6 => (
                1,
                close_from_other_thread().map(|in_read| during_read += u64::from(in_read)),
            ),
            _ => (2, dies_by_itself()),
        };
        counts[kind] += 1;
        rep.quiet(|| format!("lifecycle_{i}"), result);
    }
    rep.note(&format!(
        "lifecycle: {} killed while running, {} closed from another thread ({} during read()), \
         {} died by themselves",
        counts[0], counts[1], during_read, counts[2]
    ));
    rep.check(
        "lifecycle_closes_mostly_during_read",
        if during_read * 2 >= counts[1] {
            Ok(())
        } else {
            Err(format!(
                "only {during_read} of {} closes happened during read()",
                counts[1]
            ))
        },
    );
    Ok(())
}
