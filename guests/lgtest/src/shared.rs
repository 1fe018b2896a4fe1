//! The shared page (`abi::SharedPage`): one page of guest memory the host reads and writes, the
//! home of the virtual interrupt flag, the pending-irq bits, CR2 and the async hypercall ring.
//!
//! The host writes it only while this vCPU is stopped, but from the compiler's point of view
//! that is "at any time", so every access goes through an atomic: no Rust reference to the page
//! ever exists, and a value read twice is really read twice.

use crate::hcall::{self, hcall};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use lg_core::abi::{self, SharedPage};

#[repr(C, align(4096))]
pub(crate) struct Page(UnsafeCell<SharedPage>);

// SAFETY: the page is only ever accessed through the atomics handed out below (one vCPU).
unsafe impl Sync for Page {}

// SAFETY: all-zero is a valid `SharedPage` (it is plain integers).
pub(crate) static PAGE: Page = Page(UnsafeCell::new(unsafe { core::mem::zeroed() }));

/// Guest-physical address of the shared page (it lives in the image's .bss).
pub fn gpa() -> u64 {
    lgtest::virt_to_phys(PAGE.0.get() as u64)
}

/// One accessor per field, each an atomic view of that field in the static page.
macro_rules! fields {
    ($($(#[$doc:meta])* $name:ident: $atomic:ty;)*) => {$(
        $(#[$doc])*
        pub fn $name() -> &'static $atomic {
            // SAFETY: the field is inside a static (valid forever), naturally aligned
            // (`SharedPage` is repr(C) with aligned fields), and only ever accessed atomically.
            unsafe { <$atomic>::from_ptr(&raw mut (*PAGE.0.get()).$name) }
        }
    )*};
}

fields! {
    /// The virtual interrupt flag: `0x200` enabled, 0 disabled.
    irq_enabled: AtomicU64;
    /// Bit N: irq N pending (the host sets, the handler clears).
    irq_pending: AtomicU64;
    /// Bit N: irq N masked.
    irq_blocked: AtomicU64;
    /// The faulting address of the last page fault delivered.
    cr2: AtomicU64;
    reserved_start: AtomicU64;
    reserved_end: AtomicU64;
    paging_levels: AtomicU32;
    abi_version: AtomicU32;
    tsc_khz: AtomicU64;
    wallclock_ns: AtomicU64;
    kernel_cs: AtomicU16;
    kernel_ds: AtomicU16;
    user_cs: AtomicU16;
    user_ds: AtomicU16;
    features: AtomicU64;
    noirq_start: AtomicU64;
    noirq_end: AtomicU64;
    irq_vector: AtomicU64;
    guest_id: AtomicU64;
    /// How many times the guest has exited to the host (world switches) so far.
    exits: AtomicU64;
}

/// Status byte of async ring slot `i` (< `ASYNC_RING`).
fn slot_status(i: usize) -> &'static AtomicU8 {
    let i = i % abi::ASYNC_RING;
    // SAFETY: in-bounds element of a static array inside the page, only accessed atomically.
    unsafe { AtomicU8::from_ptr((&raw mut (*PAGE.0.get()).hcall_status).cast::<u8>().add(i)) }
}

/// Word `w` (0 = nr, 1..=5 = args) of async ring slot `i`.
fn slot_word(i: usize, w: usize) -> &'static AtomicU64 {
    let (i, w) = (i % abi::ASYNC_RING, w % 6);
    // SAFETY: `AsyncCall` is repr(C) { nr: u64, args: [u64; 5] }, six aligned u64s; `i` and `w` are
    // in bounds, and the ring is only ever accessed atomically.
    unsafe {
        let call = (&raw mut (*PAGE.0.get()).hcalls)
            .cast::<abi::AsyncCall>()
            .add(i);
        AtomicU64::from_ptr(call.cast::<u64>().add(w))
    }
}

/// Fill the guest-owned fields the host reads at `INIT`, then register the page.
/// Must be the very first hypercall.
pub fn init(irq_vector: u64, noirq: (u64, u64)) {
    // Zero means "ready" in the async ring: mark every slot empty before the host looks.
    for i in 0..abi::ASYNC_RING {
        slot_status(i).store(abi::ASYNC_EMPTY, Ordering::Relaxed);
    }
    self::irq_vector().store(irq_vector, Ordering::Relaxed);
    noirq_start().store(noirq.0, Ordering::Relaxed);
    noirq_end().store(noirq.1, Ordering::Relaxed);
    // SAFETY: INIT only makes the host fill host fields of our own page.
    unsafe { hcall(abi::hcall::INIT, gpa(), 0, 0, 0, 0) };
}

/// Next ring slot the guest fills; the host keeps its own cursor and both start at 0.
static RING_CURSOR: AtomicUsize = AtomicUsize::new(0);

/// Queue `nr(args)` in the async ring; the host runs it at the next exit, in order. Only calls
/// without a result belong there. Returns the slot used.
pub fn queue_async(nr: u64, args: [u64; 5]) -> usize {
    let slot = RING_CURSOR.load(Ordering::Relaxed);
    if slot_status(slot).load(Ordering::Relaxed) != abi::ASYNC_EMPTY {
        // Full: any hypercall drains it.
        hcall::flush_async();
        if slot_status(slot).load(Ordering::Relaxed) != abi::ASYNC_EMPTY {
            hcall::crash(b"async ring not drained by FLUSH_ASYNC");
        }
    }
    slot_word(slot, 0).store(nr, Ordering::Relaxed);
    for (w, arg) in args.into_iter().enumerate() {
        slot_word(slot, w + 1).store(arg, Ordering::Relaxed);
    }
    // Release: the arguments are in memory before the slot says "ready".
    slot_status(slot).store(abi::ASYNC_READY, Ordering::Release);
    RING_CURSOR.store((slot + 1) % abi::ASYNC_RING, Ordering::Relaxed);
    slot
}

/// Has the host consumed ring slot `slot`?
pub fn async_slot_done(slot: usize) -> bool {
    slot_status(slot).load(Ordering::Acquire) == abi::ASYNC_EMPTY
}
