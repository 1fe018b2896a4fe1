//! Types shared with the C shim. cbindgen copies them into `c-glue/generated/lg_rust.h`.

use core::ffi::c_void;

/// Services the C shim lends to Rust, filled in by C at module load. A table rather than loose
/// `extern` functions so that the C compiler checks every signature against this one definition.
/// `ctx` is always the shim's per-file context (`struct lg_file *`).
#[repr(C)]
pub struct LgKernelOps {
    /// printk `len` bytes of `msg` at a kernel log level (0 = KERN_EMERG .. 7 = KERN_DEBUG),
    /// prefixed with "lg: ".
    pub log: unsafe extern "C" fn(level: u32, msg: *const u8, len: usize),
    /// A zeroed page: returns its kernel address and stores its physical address; NULL if none.
    pub alloc_page: unsafe extern "C" fn(pa: *mut u64) -> *mut u8,
    pub free_page: unsafe extern "C" fn(va: *mut u8),
    /// `copy_from_user` / `copy_to_user` on the current task: 0 or -EFAULT.
    pub copy_from_user: unsafe extern "C" fn(dst: *mut u8, uaddr: u64, len: usize) -> i32,
    pub copy_to_user: unsafe extern "C" fn(uaddr: u64, src: *const u8, len: usize) -> i32,
    /// Pin the current task's page at `uaddr` for writing; stores its page frame number.
    pub pin_page: unsafe extern "C" fn(uaddr: u64, pfn: *mut u64) -> i32,
    pub unpin_page: unsafe extern "C" fn(pfn: u64),
    /// Address of CPU `cpu`'s writable GDT (`get_cpu_gdt_rw`).
    pub cpu_gdt_rw: unsafe extern "C" fn(cpu: u32) -> u64,
    /// Disable preemption and interrupts and park host state the switcher does not handle
    /// (debug registers, EFER.SCE, SYSENTER_CS). Returns the CPU we are on.
    pub guest_enter_begin: unsafe extern "C" fn(ctx: *mut c_void) -> u32,
    /// Undo `guest_enter_begin`, first running the host handlers for what interrupted the guest:
    /// a host interrupt (the exit `vector` is 32..=255), an NMI, a machine check. A `vector`
    /// of 256 or more means "no exception" (an aborted entry, or a fault inside the switcher).
    pub guest_enter_end: unsafe extern "C" fn(ctx: *mut c_void, vector: u64, nmi: bool, mce: bool),
    pub signal_pending: unsafe extern "C" fn() -> bool,
    /// `cond_resched()` and `try_to_freeze()`.
    pub yield_point: unsafe extern "C" fn(),
    /// Arm the guest's one-shot clock event `ns` from now (0 = cancel).
    pub set_timer: unsafe extern "C" fn(ctx: *mut c_void, ns: u64),
    /// Sleep (interruptibly) until `lg_rust_should_wake(dev, mask)` is true.
    pub wait_for_irq: unsafe extern "C" fn(ctx: *mut c_void, mask: u32),
    /// CLOCK_REALTIME in nanoseconds.
    pub realtime_ns: unsafe extern "C" fn() -> u64,
    /// The global DMA lock (a mutex: held across copies that may sleep).
    pub dma_lock: unsafe extern "C" fn(),
    pub dma_unlock: unsafe extern "C" fn(),
    /// What backs the current task's user address `uaddr`: 0 private memory, 1 a shared file
    /// mapping (then `file` and `offset` identify it), negative if nothing is mapped there.
    pub dma_identify: unsafe extern "C" fn(uaddr: u64, file: *mut u64, offset: *mut u64) -> i32,
    /// Take / drop a reference on a file identity from `dma_identify`.
    pub dma_hold: unsafe extern "C" fn(file: u64),
    pub dma_release: unsafe extern "C" fn(file: u64),
    /// Copy to or from another guest's launcher memory (`ctx` is that guest's file context).
    /// Returns the bytes copied.
    pub access_remote: unsafe extern "C" fn(
        ctx: *mut c_void,
        uaddr: u64,
        buf: *mut u8,
        len: usize,
        write: bool,
    ) -> i64,
    /// The Rust device state of another guest's file context.
    pub file_device: unsafe extern "C" fn(ctx: *mut c_void) -> *const LgDevice,
    /// Wake another guest (it may be halted, or running on another CPU) to see a new interrupt.
    pub wake: unsafe extern "C" fn(ctx: *mut c_void),
}

/// What the C shim tells Rust about the host at module load.
#[repr(C)]
pub struct LgHostInfo {
    /// Number of possible CPU ids (`nr_cpu_ids`): per-CPU switcher pages exist for each.
    pub nr_cpus: u32,
    /// True if the host runs 5-level paging (CR4.LA57).
    pub la57: bool,
    /// CR4.FSGSBASE, CR4.PKE, and IBPB available.
    pub fsgsbase: bool,
    pub pku: bool,
    pub ibpb: bool,
    /// The TSC is invariant and `tsc_khz` is its rate.
    pub stable_tsc: bool,
    /// The CPU's physical address width (MAXPHYADDR).
    pub phys_bits: u32,
    /// The host's CR4 (its shadow copy) and XCR0 (0 without OSXSAVE), for what the guest sees.
    pub cr4: u64,
    pub xcr0: u64,
    pub tsc_khz: u64,
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
