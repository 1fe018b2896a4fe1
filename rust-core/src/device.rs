//! The state machine behind one open `/dev/lguest` file.
//!
//! A file starts uninitialized; `LHREQ_INITIALIZE` from some task makes that task the guest's owner
//! and the file ready. After that only the owner may run the guest (`read`) or send requests, with
//! one exception: `LHREQ_BREAK` may come from any thread, since its whole purpose is to kick a
//! running owner out of `read`. Each transition is a single atomic step, so two threads racing to
//! initialize get one success and one `EBUSY`, and a refused write changes nothing.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::abi::{self, record};
use crate::errno::Errno;
use crate::protocol::{HostLimits, InitArgs, Request};
use crate::vcpu::{Env, Record, Vcpu};

/// Guest ids, unique while the module is loaded (logs, MAC addresses).
static NEXT_GUEST_ID: AtomicU64 = AtomicU64::new(1);

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
    /// `GETDMA(key)`: the kernel glue looks the binding up (it holds the DMA table).
    GetDma { key: u64 },
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
    /// This guest's id, from `INITIALIZE` on.
    id: AtomicU64,
    /// Set once the guest is gone for good (writes then fail with `ENOENT`).
    dead: AtomicBool,
    /// Another guest found this guest's DMA receive buffers invalid: the guest-physical address
    /// of the broken descriptor, plus 1 (0 = nothing). The vCPU dies on it at its next turn.
    condemned: AtomicU64,
    /// The virtual CPU, built in place by the owner's first `read()` (`vcpu_made` says so). Only
    /// the owner thread touches it (inside `read`), and teardown happens when no file operation
    /// can run any more.
    vcpu_made: AtomicBool,
    vcpu: UnsafeCell<MaybeUninit<Vcpu>>,
}

// SAFETY: `args` is written exactly once, by the one thread that won the UNINIT -> INITIALIZING
// compare-exchange, and published by the Release store of READY; every reader first observes READY
// with Acquire, so no read can race with that write. `vcpu` is only reached through `read` after
// checking that the caller is the owner (a single thread, which cannot be in two reads at once),
// and through `teardown`, which the shim calls from `release` when no other file operation exists.
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
            id: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            condemned: AtomicU64::new(0),
            vcpu_made: AtomicBool::new(false),
            vcpu: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Build a device in place (a `Device` holds a whole vCPU: far too big for a kernel stack, so
    /// it is never built as a temporary).
    ///
    /// # Safety
    /// `this` must be valid for writes of a `Device` and properly aligned.
    pub unsafe fn init_in_place(this: *mut Device) {
        use core::ptr::addr_of_mut;
        // SAFETY: the caller guarantees `this`; each field is written once; `vcpu` may stay
        // uninitialized (`vcpu_made` is false).
        unsafe {
            addr_of_mut!((*this).state).write(AtomicU32::new(UNINIT));
            addr_of_mut!((*this).owner).write(AtomicU64::new(0));
            addr_of_mut!((*this).args).write(UnsafeCell::new(InitArgs::default()));
            addr_of_mut!((*this).pending_irqs).write(AtomicU32::new(0));
            addr_of_mut!((*this).break_out).write(AtomicBool::new(false));
            addr_of_mut!((*this).id).write(AtomicU64::new(0));
            addr_of_mut!((*this).dead).write(AtomicBool::new(false));
            addr_of_mut!((*this).condemned).write(AtomicU64::new(0));
            addr_of_mut!((*this).vcpu_made).write(AtomicBool::new(false));
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
                .map(|_| WriteOutcome::Initialized);
        }
        if !self.is_ready() {
            return Err(Errno::EINVAL);
        }
        if self.dead.load(Ordering::Acquire) {
            return Err(Errno::ENOENT);
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
            Request::GetDma { key } => Ok(WriteOutcome::GetDma { key }),
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
        self.id.store(
            NEXT_GUEST_ID.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.state.store(READY, Ordering::Release);
        Ok(())
    }

    /// The guest's id (0 before initialization).
    pub fn id(&self) -> u64 {
        self.id.load(Ordering::Relaxed)
    }

    /// Raise virtual interrupt `irq` from outside the vCPU (the guest's timer).
    pub fn raise_irq(&self, irq: u32) {
        if irq < 32 {
            self.pending_irqs.fetch_or(1 << irq, Ordering::AcqRel);
        }
    }

    /// Take the interrupts raised from outside since the last time.
    pub fn take_irqs(&self) -> u32 {
        self.pending_irqs.swap(0, Ordering::AcqRel)
    }

    /// Another guest found our receive buffer at `gpa` invalid (see [`crate::dma`]).
    pub fn condemn(&self, gpa: u64) {
        let _ = self.condemned.compare_exchange(
            0,
            gpa.wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The receive buffer another guest found invalid, if any.
    pub fn condemned(&self) -> Option<u64> {
        match self.condemned.load(Ordering::Acquire) {
            0 => None,
            v => Some(v.wrapping_sub(1)),
        }
    }

    /// Withdraw interrupts in `mask` that were raised but not taken yet.
    pub fn clear_irqs(&self, mask: u32) {
        self.pending_irqs.fetch_and(!mask, Ordering::AcqRel);
    }

    /// Should a halted guest waiting for `mask` wake up? (Evaluated by the shim's sleeping loop:
    /// must not sleep or touch user memory.)
    pub fn should_wake(&self, mask: u32) -> bool {
        self.pending_irqs.load(Ordering::Acquire) & mask != 0
            || self.break_requested()
            || self.condemned().is_some()
    }

    fn check_reader(&self, caller: u64) -> Result<(), Errno> {
        if !self.is_ready() {
            return Err(Errno::EINVAL);
        }
        if self.owner.load(Ordering::Relaxed) != caller {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// Will a `read()` by `caller` enter the guest (rather than fail or report a death at once)?
    pub fn will_run(&self, caller: u64) -> bool {
        self.check_reader(caller).is_ok() && !self.dead.load(Ordering::Acquire)
    }

    /// One `read()` by task `caller`: run the guest until something needs the launcher, then
    /// hand the record to `emit(header, payload)`, which copies (at most `len` bytes of) it out.
    pub fn read<E: Env>(
        &self,
        caller: u64,
        env: &mut E,
        len: usize,
        emit: impl FnOnce(&[u8], &[u8]) -> Result<(), Errno>,
    ) -> Result<usize, Errno> {
        self.check_reader(caller)?;
        if len < abi::MIN_READ {
            return Err(Errno::EINVAL);
        }
        let args = self.init_args().ok_or(Errno::EINVAL)?;
        let slot = self.vcpu.get().cast::<Vcpu>();
        if !self.vcpu_made.load(Ordering::Acquire) {
            // SAFETY: `check_reader` proved the caller is the owner, the only thread that reaches
            // the vCPU (see the `Sync` impl); the slot is uninitialized until `vcpu_made`.
            unsafe {
                Vcpu::init_in_place(
                    slot,
                    args.pfn_limit,
                    args.entry,
                    args.cr3,
                    args.boot_params,
                    &env.facts(),
                )
            };
            self.vcpu_made.store(true, Ordering::Release);
        }
        // SAFETY: built above or by an earlier read of this (only) owner thread.
        let vcpu = unsafe { &mut *slot };
        let rec = vcpu.run(env)?;
        let mut header = [0u8; 16];
        let (hlen, payload): (usize, &[u8]) = match rec {
            Record::Console(n) => {
                header[..8].copy_from_slice(&record::CONSOLE.to_le_bytes());
                (8, vcpu.console.get(..n).unwrap_or(&[]))
            }
            Record::Dma { dma, key } => {
                header[..8].copy_from_slice(&record::DMA.to_le_bytes());
                header[8..].copy_from_slice(&dma.to_le_bytes());
                let k = key.to_le_bytes();
                emit(&header, &k)?;
                return Ok(24);
            }
            Record::Dead => {
                self.dead.store(true, Ordering::Release);
                let (kind, reason) = match vcpu.death() {
                    Some(d) => (d.kind, d.reason()),
                    None => (abi::exit::KILLED, &b"unknown"[..]),
                };
                header[..8].copy_from_slice(&record::DEAD.to_le_bytes());
                header[8..].copy_from_slice(&kind.to_le_bytes());
                (16, reason)
            }
        };
        let payload = payload.get(..payload.len().min(len - hlen)).unwrap_or(&[]);
        emit(header.get(..hlen).unwrap_or(&[]), payload)?;
        Ok(hlen + payload.len())
    }

    /// Release everything the guest holds. Called once, from the last `close()`.
    pub fn teardown<E: Env>(&self, env: &mut E) {
        if self.vcpu_made.swap(false, Ordering::AcqRel) {
            // SAFETY: the shim calls this from `release`, when no other file operation on this
            // file can be running or start (see the `Sync` impl); `vcpu_made` says it is built.
            unsafe { (*self.vcpu.get().cast::<Vcpu>()).destroy(env) };
        }
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
        assert!(!d.will_run(7));
        assert_eq!(d.write(&w(&[2, 3]), 7, &HOST), Err(Errno::EINVAL));
        assert_eq!(d.write(&w(&[3, 1]), 7, &HOST), Err(Errno::EINVAL));
        assert_eq!(
            d.write(&init_words(), 7, &HOST),
            Ok(WriteOutcome::Initialized)
        );
        assert_eq!(d.write(&init_words(), 7, &HOST), Err(Errno::EBUSY));
        assert_eq!(d.write(&init_words(), 8, &HOST), Err(Errno::EBUSY));
        assert!(!d.will_run(8));
        assert!(d.will_run(7));
        assert_eq!(d.write(&w(&[2, 3]), 8, &HOST), Err(Errno::EPERM));
        assert_eq!(d.write(&w(&[2, 3]), 7, &HOST), Ok(WriteOutcome::Return(16)));
        assert_eq!(d.pending_irqs(), 8);
        assert_eq!(
            d.write(&w(&[1, 0]), 7, &HOST),
            Ok(WriteOutcome::GetDma { key: 0 })
        );
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
    fn a_condemned_guest_wakes_from_halt() {
        let d = Device::new();
        assert_eq!(
            d.write(&init_words(), 7, &HOST),
            Ok(WriteOutcome::Initialized)
        );
        assert!(!d.should_wake(0));
        d.condemn(0x2000);
        assert!(d.should_wake(0), "its death must not wait for an interrupt");
        assert_eq!(d.condemned(), Some(0x2000));
        d.condemn(0x3000);
        assert_eq!(d.condemned(), Some(0x2000), "the first reason stays");
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
            Ok(WriteOutcome::Initialized)
        );
        assert!(d.will_run(9));
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
