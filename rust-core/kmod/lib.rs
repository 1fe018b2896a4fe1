//! The Rust half of `lg.ko`: the `extern "C"` entry points the C shim (`c-glue/`) calls, and the
//! few services the C shim lends back to Rust.
//!
//! Everything here is thin: it converts raw pointers from C into safe references and calls the
//! logic in `lg-core`, which is where the hypervisor actually lives (and is tested). Every function
//! C may call is `#[no_mangle] extern "C"` and named `lg_rust_*`; the build script turns their
//! signatures, and the types below, into `c-glue/generated/lg_rust.h` with cbindgen, so the boundary
//! is declared exactly once.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod dma;
mod ffi;
mod file;
mod host;
mod kernel;
mod module;
mod switcher_asm;

pub use ffi::*;
pub use file::*;
pub use module::*;

/// Last resort: a bug in our Rust code. `lg-core` is written never to panic; if it does anyway we
/// report it with its location and call the kernel's `panic()` (objtool knows it does not return).
#[cfg(not(test))]
#[panic_handler]
fn on_panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    let mut raw = [0u8; 192];
    let mut w = lg_core::fixedbuf::FixedBuf::new(&mut raw);
    let _ = write!(w, "{info}");
    let n = w.len() as i32;
    // SAFETY: the format string expects an int length and a byte pointer, which we pass; the buffer
    // outlives the call (which never returns).
    unsafe { kernel::kernel_panic(c"lg: rust panic: %.*s\n".as_ptr().cast(), n, raw.as_ptr()) }
}
