//! lguest's hypervisor logic, written so that most of it runs (and is tested) as ordinary host code.
//!
//! This crate is `no_std` and panic-free: everything a guest or a launcher hands us is untrusted, so
//! every guest-supplied number goes through checked arithmetic and every table lookup through `get()`.
//! The kernel-only glue (entry points called by the C shim, the panic handler) lives in the `lg-kmod`
//! staticlib at `rust-core/kmod/`; the launcher and the guests use [`abi`] from here too, so the
//! guest ABI is written down exactly once.
//!
//! Map of the crate, in the order a guest meets it:
//! - [`abi`]: numbers and layouts shared with the launcher and the guests (docs/abi.md).
//! - [`protocol`]: decoding and validating the writes a launcher makes to `/dev/lguest`.
//! - [`device`]: the state machine behind one open `/dev/lguest` file.
//! - [`errno`]: the Linux error numbers we return.
//! - [`switcher`]: the pages shared by host and guest, and the code that switches worlds.
//! - [`fixedbuf`]: `core::fmt` into a fixed byte buffer, for kill reasons and log lines.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod device;
pub mod dma;
pub mod errno;
pub mod fixedbuf;
pub mod protocol;
pub mod shadow;
pub mod switcher;
pub mod vcpu;
