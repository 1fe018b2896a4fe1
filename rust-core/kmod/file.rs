//! The file operations of `/dev/lguest`, after the C shim has done the kernel-specific part
//! (copying the user buffer in, waiting, waking).

use core::ffi::c_void;

use lg_core::device::{Device, WriteOutcome};
use lg_core::errno::Errno;
use lg_core::vcpu::HostFacts;

use crate::dma::KernelDma;
use crate::ffi::{LgDevice, LgWriteAction};
use crate::host::KernelEnv;
use crate::kernel::ops;
use crate::module::{self, host_limits};

/// Size of the per-file state the shim allocates for us.
#[no_mangle]
pub extern "C" fn lg_rust_device_size() -> usize {
    core::mem::size_of::<Device>()
}

/// Alignment of the per-file state.
#[no_mangle]
pub extern "C" fn lg_rust_device_align() -> usize {
    core::mem::align_of::<Device>()
}

/// Construct the per-file state in memory the shim allocated.
///
/// # Safety
/// `dev` must point to `lg_rust_device_size()` writable bytes aligned to `lg_rust_device_align()`.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_device_init(dev: *mut LgDevice) {
    // SAFETY: the caller guarantees size and alignment; the memory holds no live value yet.
    unsafe { Device::init_in_place(dev.cast::<Device>()) }
}

/// Tear down the per-file state before the shim frees its memory (the last close): unpin every
/// guest page, free the shadow tables, cancel the timer. Touches no user memory.
///
/// # Safety
/// `dev` must have been initialized by `lg_rust_device_init` and not be used afterwards; `ctx`
/// is the file's shim context.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_device_drop(dev: *mut LgDevice, ctx: *mut c_void) {
    {
        // SAFETY: the caller guarantees `dev` is live and that no other operation runs.
        let d = unsafe { device(dev) };
        KernelDma::new(ctx, d).forget();
        let mut env = KernelEnv {
            ctx,
            dev: d,
            mem_base: d.init_args().map_or(0, |a| a.mem_base),
            facts: HostFacts::default(),
        };
        d.teardown(&mut env);
    }
    // SAFETY: the caller guarantees `dev` holds a live `Device` that nobody uses any more.
    unsafe { core::ptr::drop_in_place(dev.cast::<Device>()) }
}

/// # Safety
/// `dev` must be a live device from `lg_rust_device_init`.
unsafe fn device<'a>(dev: *const LgDevice) -> &'a Device {
    // SAFETY: the caller guarantees `dev` is live; `Device` is `Sync`, so shared use is fine.
    unsafe { &*dev.cast::<Device>() }
}

/// One `write()`: `buf[..len]` is already a kernel copy of the user's bytes. Returns an
/// `LgWriteAction` (and for `Return`, the value in `*ret`), or `-errno`.
///
/// # Safety
/// `dev` must be live and `ctx` its shim context, `buf` valid for `len` bytes, `ret` valid for
/// writes.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_write(
    dev: *const LgDevice,
    ctx: *mut c_void,
    buf: *const u8,
    len: usize,
    caller: u64,
    ret: *mut u64,
) -> i64 {
    // SAFETY: guaranteed by the caller; `len` is bounded by the shim's stack buffer.
    let (dev, bytes) = unsafe { (device(dev), core::slice::from_raw_parts(buf, len)) };
    match dev.write(bytes, caller, &host_limits()) {
        Ok(WriteOutcome::Return(v)) => {
            // SAFETY: guaranteed by the caller.
            unsafe { ret.write(v) };
            LgWriteAction::Return as i64
        }
        Ok(WriteOutcome::WaitForBreakOff) => LgWriteAction::WaitBreakOff as i64,
        Ok(WriteOutcome::WakeBreakWaiters) => LgWriteAction::WakeBreak as i64,
        Ok(WriteOutcome::Initialized) => LgWriteAction::Initialized as i64,
        Ok(WriteOutcome::GetDma { key }) => match KernelDma::new(ctx, dev).get(key) {
            Ok(Some(gpa)) => {
                // SAFETY: guaranteed by the caller.
                unsafe { ret.write(gpa) };
                LgWriteAction::Return as i64
            }
            Ok(None) => -i64::from(Errno::ENOSPC.0),
            Err(_) => -i64::from(Errno::ENOENT.0),
        },
        Err(e) => -i64::from(e.0),
    }
}

/// Will a `read()` by `caller` run the guest? (Otherwise it fails or reports a death at once,
/// and the shim skips its FPU preparations.)
///
/// # Safety
/// `dev` must be live.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_will_run(dev: *const LgDevice, caller: u64) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { device(dev) }.will_run(caller)
}

/// One `read()` by task `caller` into the user buffer `ubuf[..len]`: runs the guest until
/// something needs the launcher. Returns the record's length or `-errno`.
///
/// # Safety
/// `dev` must be live and `ctx` its shim context; `ubuf` is a user address (checked by the copy).
#[no_mangle]
pub unsafe extern "C" fn lg_rust_read(
    dev: *const LgDevice,
    ctx: *mut c_void,
    caller: u64,
    ubuf: u64,
    len: usize,
) -> i64 {
    // SAFETY: guaranteed by the caller.
    let dev = unsafe { device(dev) };
    let mut env = KernelEnv {
        ctx,
        dev,
        mem_base: dev.init_args().map_or(0, |a| a.mem_base),
        facts: module::guest_facts(dev.id()),
    };
    let emit = |header: &[u8], payload: &[u8]| -> Result<(), Errno> {
        // SAFETY: copy_to_user validates the user range; the sources are valid kernel buffers.
        let ok = unsafe {
            (ops().copy_to_user)(ubuf, header.as_ptr(), header.len()) == 0
                && (ops().copy_to_user)(ubuf + header.len() as u64, payload.as_ptr(), payload.len())
                    == 0
        };
        if ok {
            Ok(())
        } else {
            Err(Errno::EFAULT)
        }
    };
    match dev.read(caller, &mut env, len, emit) {
        Ok(n) => n as i64,
        Err(Errno(e)) => -i64::from(e),
    }
}

/// Raise virtual irq `irq` from interrupt context (the guest's timer).
///
/// # Safety
/// `dev` must be live.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_raise_irq(dev: *const LgDevice, irq: u32) {
    // SAFETY: guaranteed by the caller; `raise_irq` is a single atomic operation.
    unsafe { device(dev) }.raise_irq(irq)
}

/// Should a halted guest waiting for the irqs in `mask` wake? Never sleeps.
///
/// # Safety
/// `dev` must be live.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_should_wake(dev: *const LgDevice, mask: u32) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { device(dev) }.should_wake(mask)
}

/// Is a `BREAK 1` in force? (The condition the shim's break waiters sleep on.)
///
/// # Safety
/// `dev` must be live.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_break_requested(dev: *const LgDevice) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { device(dev) }.break_requested()
}
