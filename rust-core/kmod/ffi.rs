//! Types shared with the C shim. cbindgen copies them into `c-glue/generated/lg_rust.h`.

/// Services the C shim lends to Rust, filled in by C at module load. A table rather than loose
/// `extern` functions so that the C compiler checks every signature against this one definition.
#[repr(C)]
pub struct LgKernelOps {
    /// printk `len` bytes of `msg` at a kernel log level (0 = KERN_EMERG .. 7 = KERN_DEBUG),
    /// prefixed with "lg: ".
    pub log: unsafe extern "C" fn(level: u32, msg: *const u8, len: usize),
}

/// What the C shim tells Rust about the host at module load.
#[repr(C)]
pub struct LgHostInfo {
    /// Number of possible CPU ids (`nr_cpu_ids`): per-CPU switcher pages exist for each.
    pub nr_cpus: u32,
    /// True if the host runs 5-level paging (CR4.LA57).
    pub la57: bool,
    /// `TASK_SIZE_MAX`: the top of user address space.
    pub user_top: u64,
}

/// The switcher area the C shim must allocate and map with one `vmap()`.
#[repr(C)]
pub struct LgSwitcherLayout {
    /// Total pages, in `vmap` order.
    pub nr_pages: u64,
    /// The first `text_pages` hold code: the shim maps them read-only and executable.
    pub text_pages: u64,
}

/// The longest write the shim copies in; longer writes are refused before user memory is read.
pub const LG_MAX_WRITE: usize = 56;
// cbindgen can only copy literals, so the value is repeated here and checked against the ABI.
const _: () = assert!(LG_MAX_WRITE == lg_core::abi::MAX_WRITE);

/// What `lg_rust_write` asks the C shim to do next (non-negative results), or `-errno`.
#[repr(C)]
#[derive(Clone, Copy)]
pub enum LgWriteAction {
    /// Return the value stored in `*ret` from `write()`.
    Return = 0,
    /// Wake the owner and block until `lg_rust_break_requested()` is false; return the length.
    WaitBreakOff = 1,
    /// Wake the waiters of the break; return the length.
    WakeBreak = 2,
    /// The write initialized the guest: the calling task is now its owner, and the shim takes a
    /// reference on it (so its address can never be reused by another task while we use it as
    /// the owner's identity); return the length.
    Initialized = 3,
}

/// Opaque per-file state, allocated by C with the size and alignment Rust reports (C only ever
/// holds a pointer to it).
pub struct LgDevice {
    _opaque: [u8; 0],
}
