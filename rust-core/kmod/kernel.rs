//! Access to the services of the C shim (`LgKernelOps`) and to the kernel symbols Rust calls
//! directly.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicPtr, Ordering};

use lg_core::fixedbuf::FixedBuf;

use crate::ffi::LgKernelOps;

unsafe extern "C" {
    /// The kernel's `panic()`: objtool knows it never returns.
    #[link_name = "panic"]
    pub fn kernel_panic(fmt: *const u8, ...) -> !;
}

static OPS: AtomicPtr<LgKernelOps> = AtomicPtr::new(core::ptr::null_mut());

/// Install the shim's service table (module load, before anything else runs).
pub fn set_ops(ops: &'static LgKernelOps) {
    OPS.store(
        ops as *const LgKernelOps as *mut LgKernelOps,
        Ordering::Release,
    );
}

fn try_ops() -> Option<&'static LgKernelOps> {
    let p = OPS.load(Ordering::Acquire);
    // SAFETY: the only non-null value ever stored is a `&'static LgKernelOps`.
    unsafe { p.as_ref() }
}

/// The shim's services. Every entry point but `lg_rust_init` runs after they were installed.
pub fn ops() -> &'static LgKernelOps {
    match try_ops() {
        Some(o) => o,
        // Unreachable: the shim calls lg_rust_init first and fails the load if it fails.
        None => {
            // SAFETY: a plain kernel panic with a constant message.
            unsafe { kernel_panic(c"lg: rust called before lg_rust_init\n".as_ptr().cast()) }
        }
    }
}

pub(crate) const KERN_ERR: u32 = 3;
pub(crate) const KERN_INFO: u32 = 6;

/// printk a formatted line (truncated to 256 bytes).
pub fn log(level: u32, args: fmt::Arguments<'_>) {
    let mut raw = [0u8; 256];
    let mut w = FixedBuf::new(&mut raw);
    let _ = w.write_fmt(args);
    if let Some(ops) = try_ops() {
        // SAFETY: `log` reads exactly `len` bytes from a buffer that lives across the call.
        unsafe { (ops.log)(level, w.as_bytes().as_ptr(), w.len()) }
    }
}

macro_rules! pr_info { ($($t:tt)*) => { $crate::kernel::log($crate::kernel::KERN_INFO, format_args!($($t)*)) } }
macro_rules! pr_err { ($($t:tt)*) => { $crate::kernel::log($crate::kernel::KERN_ERR, format_args!($($t)*)) } }
pub(crate) use {pr_err, pr_info};
