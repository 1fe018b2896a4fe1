//! lgprobe must never hang, whatever the module does. Every operation that could block is armed
//! here with a deadline; one background thread aborts the whole process, with a message naming
//! the operation, when a deadline passes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// Deadline of one ordinary device operation (a write or read that must not block).
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

static ARMED: Mutex<Vec<(u64, Instant, String)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static START: Once = Once::new();

/// Disarms its deadline when dropped.
#[must_use = "the deadline is disarmed as soon as the guard is dropped"]
pub struct Guard(u64);

/// Abort the process unless the returned guard is dropped within `timeout`.
pub fn arm(label: impl Into<String>, timeout: Duration) -> Guard {
    START.call_once(|| {
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(watch)
            .unwrap_or_else(|e| fatal(&format!("cannot start the watchdog thread: {e}")));
    });
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock().push((id, Instant::now() + timeout, label.into()));
    Guard(id)
}

impl Drop for Guard {
    fn drop(&mut self) {
        lock().retain(|(id, _, _)| *id != self.0);
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(u64, Instant, String)>> {
    // A panic while holding the lock cannot leave the list inconsistent: keep going.
    ARMED.lock().unwrap_or_else(|p| p.into_inner())
}

fn watch() {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let expired = lock()
            .iter()
            .find(|(_, deadline, _)| *deadline <= now)
            .map(|(_, _, label)| label.clone());
        if let Some(label) = expired {
            fatal(&format!("watchdog: {label} did not finish in time"));
        }
    }
}

/// Print `msg` as a failed check and abort. Writes with write(2) directly so that no lock another
/// thread might hold (stdout's) can stop the message.
pub fn fatal(msg: &str) -> ! {
    let lines = [
        (1, format!("not ok - {msg}\n")),
        (2, format!("lgprobe: aborted: {msg}\n")),
    ];
    for (fd, text) in lines {
        // SAFETY: writing an owned, live buffer to a standard stream.
        unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
    }
    std::process::abort()
}
