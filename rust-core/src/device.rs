//! The state machine behind one open `/dev/lguest` file.
//!
//! A file starts uninitialized; `LHREQ_INITIALIZE` from some task makes that task the guest's owner
//! and the file ready. After that only the owner may run the guest (`read`) or send requests, with
//! one exception: `LHREQ_BREAK` may come from any thread, since its whole purpose is to kick a
//! running owner out of `read`. Each transition is a single atomic step, so two threads racing to
//! initialize get one success and one `EBUSY`, and a refused write changes nothing.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::errno::Errno;
use crate::protocol::{HostLimits, InitArgs, Request};

const UNINIT: u32 = 0;
const INITIALIZING: u32 = 1;
const READY: u32 = 2;

/// What the kernel side must do to finish a successful write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WriteOutcome {
    /// Return this value from `write()` (the byte count, or the address `GETDMA` found).
    Return(u64),
    /// `BREAK 1`: wake the owner if it is running the guest, then block (interruptibly) until
    /// [`Device::break_requested`] is false again; `write()` then returns the byte count.
    WaitForBreakOff,
    /// `BREAK 0`: wake whoever waits for the break to end; `write()` returns the byte count.
    WakeBreakWaiters,
    /// `INITIALIZE` succeeded: the caller is now the owner; `write()` returns the byte count.
    Initialized,
}

/// One open `/dev/lguest`.
pub struct Device {
    state: AtomicU32,
    /// Opaque identity of the owner task (its `task_struct` address), 0 before initialization.
    owner: AtomicU64,
    /// Written once, by the initializing thread, before `state` becomes READY (Release); read only
    /// after observing READY (Acquire).
    args: UnsafeCell<InitArgs>,
    pending_irqs: AtomicU32,
    break_out: AtomicBool,
}

// SAFETY: `args` is the only non-atomic field. It is written exactly once, by the one thread that
// won the UNINIT -> INITIALIZING compare-exchange, and published by the Release store of READY;
// every reader first observes READY with Acquire, so no read can race with that write.
unsafe impl Sync for Device {}

impl Default for Device {
    fn default() -> Self {
        Self::new()
    }
}

impl Device {
    pub const fn new() -> Self {
        Device {
            state: AtomicU32::new(UNINIT),
            owner: AtomicU64::new(0),
            args: UnsafeCell::new(InitArgs {
                abi_version: 0,
                mem_base: 0,
                pfn_limit: 0,
                entry: 0,
                cr3: 0,
                boot_params: 0,
            }),
            pending_irqs: AtomicU32::new(0),
            break_out: AtomicBool::new(false),
        }
    }

    /// The initialization arguments, once the device is ready.
    pub fn init_args(&self) -> Option<InitArgs> {
        if self.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: READY was observed with Acquire, so the single write to `args` happened before
        // and no write can follow (see the `Sync` impl).
        Some(unsafe { *self.args.get() })
    }

    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY
    }

    /// True while a `BREAK 1` is in force.
    pub fn break_requested(&self) -> bool {
        self.break_out.load(Ordering::Acquire)
    }

    /// The pending virtual interrupt bitmap.
    pub fn pending_irqs(&self) -> u32 {
        self.pending_irqs.load(Ordering::Acquire)
    }

    /// Handle one `write()` of `bytes` by task `caller`.
    pub fn write(
        &self,
        bytes: &[u8],
        caller: u64,
        host: &HostLimits,
    ) -> Result<WriteOutcome, Errno> {
        let req = Request::parse(bytes)?;
        let len = bytes.len() as u64;
        if let Request::Initialize(args) = req {
            return self
                .initialize(&args, caller, host)
                .map(|_| WriteOutcome::Return(len));
        }
        if !self.is_ready() {
            return Err(Errno::EINVAL);
        }
        if let Request::Break { on } = req {
            self.break_out.store(on, Ordering::Release);
            return Ok(if on {
                WriteOutcome::WaitForBreakOff
            } else {
                WriteOutcome::WakeBreakWaiters
            });
        }
        if self.owner.load(Ordering::Relaxed) != caller {
            return Err(Errno::EPERM);
        }
        match req {
            // Nothing can be bound before the guest runs: DMA arrives with the I/O issue.
            Request::GetDma { .. } => Err(Errno::ENOENT),
            Request::Irq { irq } => {
                self.pending_irqs.fetch_or(1 << irq, Ordering::AcqRel);
                Ok(WriteOutcome::Return(len))
            }
            Request::Initialize(_) | Request::Break { .. } => Err(Errno::EINVAL),
        }
    }

    fn initialize(&self, args: &InitArgs, caller: u64, host: &HostLimits) -> Result<(), Errno> {
        if self.state.load(Ordering::Acquire) != UNINIT {
            return Err(Errno::EBUSY);
        }
        args.validate(host)?;
        if self
            .state
            .compare_exchange(UNINIT, INITIALIZING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Errno::EBUSY);
        }
        // SAFETY: we won the compare-exchange, so we are the only writer, and nobody reads `args`
        // before READY is published below.
        unsafe { *self.args.get() = *args };
        self.owner.store(caller, Ordering::Relaxed);
        self.state.store(READY, Ordering::Release);
        Ok(())
    }

    /// May task `caller` run the guest now? Running itself arrives with the switcher; until then
    /// a valid caller gets `ENOSYS`, never a fake success.
    pub fn read(&self, caller: u64) -> Result<usize, Errno> {
        if !self.is_ready() {
            return Err(Errno::EINVAL);
        }
        if self.owner.load(Ordering::Relaxed) != caller {
            return Err(Errno::EPERM);
        }
        Err(Errno::ENOSYS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi;

    const HOST: HostLimits = HostLimits {
        user_top: 0x0000_7fff_ffff_f000,
        switcher: (0xffff_c900_0000_0000, 0xffff_c980_0000_0000),
    };

    fn w(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn init_words() -> Vec<u8> {
        w(&[
            0,
            abi::VERSION,
            0x7f00_0000_0000,
            256,
            0xffff_ffff_8000_0000,
            0x1000,
            0x2000,
        ])
    }

    #[test]
    fn lifecycle() {
        let d = Device::new();
        assert_eq!(d.read(7), Err(Errno::EINVAL));
        assert_eq!(d.write(&w(&[2, 3]), 7, &HOST), Err(Errno::EINVAL));
        assert_eq!(d.write(&w(&[3, 1]), 7, &HOST), Err(Errno::EINVAL));
        assert_eq!(
            d.write(&init_words(), 7, &HOST),
            Ok(WriteOutcome::Return(56))
        );
        assert_eq!(d.write(&init_words(), 7, &HOST), Err(Errno::EBUSY));
        assert_eq!(d.write(&init_words(), 8, &HOST), Err(Errno::EBUSY));
        assert_eq!(d.read(8), Err(Errno::EPERM));
        assert_eq!(d.read(7), Err(Errno::ENOSYS));
        assert_eq!(d.write(&w(&[2, 3]), 8, &HOST), Err(Errno::EPERM));
        assert_eq!(d.write(&w(&[2, 3]), 7, &HOST), Ok(WriteOutcome::Return(16)));
        assert_eq!(d.pending_irqs(), 8);
        assert_eq!(d.write(&w(&[1, 0]), 7, &HOST), Err(Errno::ENOENT));
        assert_eq!(
            d.write(&w(&[3, 1]), 8, &HOST),
            Ok(WriteOutcome::WaitForBreakOff)
        );
        assert!(d.break_requested());
        assert_eq!(
            d.write(&w(&[3, 0]), 7, &HOST),
            Ok(WriteOutcome::WakeBreakWaiters)
        );
        assert!(!d.break_requested());
    }

    #[test]
    fn refused_init_has_no_side_effects() {
        let d = Device::new();
        let mut bad = init_words();
        bad[8] = 99; // ABI version
        assert_eq!(d.write(&bad, 7, &HOST), Err(Errno::EPROTO));
        assert!(!d.is_ready());
        assert_eq!(
            d.write(&init_words(), 9, &HOST),
            Ok(WriteOutcome::Return(56))
        );
        assert_eq!(d.read(9), Err(Errno::ENOSYS));
    }

    #[test]
    fn racing_initializers_get_one_success() {
        use std::sync::Arc;
        for _ in 0..50 {
            let d = Arc::new(Device::new());
            let hs: Vec<_> = (1..=4u64)
                .map(|t| {
                    let d = d.clone();
                    std::thread::spawn(move || d.write(&init_words(), t, &HOST))
                })
                .collect();
            let rs: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(rs.iter().filter(|r| r.is_ok()).count(), 1);
            assert!(rs.iter().all(|r| r.is_ok() || *r == Err(Errno::EBUSY)));
        }
    }
}
