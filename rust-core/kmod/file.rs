//! The file operations of `/dev/lguest`, after the C shim has done the kernel-specific part
//! (copying the user buffer in, waiting, waking).

use lg_core::device::{Device, WriteOutcome};
use lg_core::errno::Errno;

use crate::ffi::{LgDevice, LgWriteAction};
use crate::module::host_limits;

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
    unsafe { dev.cast::<Device>().write(Device::new()) }
}

/// Tear down the per-file state before the shim frees its memory (the last close).
///
/// # Safety
/// `dev` must have been initialized by `lg_rust_device_init` and not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_device_drop(dev: *mut LgDevice) {
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
/// `dev` must be live, `buf` valid for `len` bytes, `ret` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_write(
    dev: *const LgDevice,
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
        Err(e) => -i64::from(e.0),
    }
}

/// One `read()` by task `caller`: runs the guest (from the next milestone on). Returns bytes
/// read or `-errno`.
///
/// # Safety
/// `dev` must be live.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_read(dev: *const LgDevice, caller: u64) -> i64 {
    // SAFETY: guaranteed by the caller.
    let dev = unsafe { device(dev) };
    match dev.read(caller) {
        Ok(n) => n as i64,
        Err(Errno(e)) => -i64::from(e),
    }
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
