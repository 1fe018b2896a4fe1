//! Module-wide state: what we learned about the host at load time and where the switcher lives.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use lg_core::abi::PAGE_SIZE;
use lg_core::errno::Errno;
use lg_core::protocol::HostLimits;
use lg_core::switcher::layout;

use crate::ffi::{LgHostInfo, LgKernelOps, LgSwitcherLayout};
use crate::kernel::{self, pr_err, pr_info};

static NR_CPUS: AtomicU32 = AtomicU32::new(0);
static LA57: AtomicBool = AtomicBool::new(false);
static USER_TOP: AtomicU64 = AtomicU64::new(0);
static SWITCHER_BASE: AtomicU64 = AtomicU64::new(0);
static RESERVED_START: AtomicU64 = AtomicU64::new(0);
static RESERVED_END: AtomicU64 = AtomicU64::new(0);

/// The host limits every launcher request is checked against.
pub fn host_limits() -> HostLimits {
    HostLimits {
        user_top: USER_TOP.load(Ordering::Relaxed),
        switcher: (
            RESERVED_START.load(Ordering::Relaxed),
            RESERVED_END.load(Ordering::Relaxed),
        ),
    }
}

/// First call at module load: take the shim's services and the host facts.
///
/// # Safety
/// `ops` must point to a table that lives as long as the module; `info` must be valid for reads.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_init(ops: *const LgKernelOps, info: *const LgHostInfo) -> i32 {
    // SAFETY: the caller guarantees both pointers (the shim passes a static table and a local).
    let (Some(ops), Some(info)) = (unsafe { ops.as_ref() }, unsafe { info.as_ref() }) else {
        return -Errno::EINVAL.0;
    };
    kernel::set_ops(ops);
    if info.nr_cpus == 0 {
        pr_err!("no possible CPUs reported");
        return -Errno::EINVAL.0;
    }
    NR_CPUS.store(info.nr_cpus, Ordering::Relaxed);
    LA57.store(info.la57, Ordering::Relaxed);
    USER_TOP.store(info.user_top, Ordering::Relaxed);
    0
}

/// How many pages the shim must allocate and map for the switcher.
///
/// # Safety
/// `out` must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_switcher_layout(out: *mut LgSwitcherLayout) -> i32 {
    let nr_cpus = u64::from(NR_CPUS.load(Ordering::Relaxed));
    let Some(nr_pages) = layout::total_pages(nr_cpus) else {
        return -Errno::ENOMEM.0;
    };
    // SAFETY: the caller guarantees `out` is writable.
    if let Some(out) = unsafe { out.as_mut() } {
        out.nr_pages = nr_pages;
        out.text_pages = layout::TEXT_PAGES;
        0
    } else {
        -Errno::EINVAL.0
    }
}

/// The shim mapped the switcher area at `base`. Refuses (and the module does not load) if the area
/// cannot be reserved cleanly in guests.
#[no_mangle]
pub extern "C" fn lg_rust_switcher_mapped(base: u64) -> i32 {
    let nr_cpus = u64::from(NR_CPUS.load(Ordering::Relaxed));
    let la57 = LA57.load(Ordering::Relaxed);
    let size = layout::total_pages(nr_cpus).unwrap_or(0) * PAGE_SIZE;
    let Some((start, end)) = layout::reserved_range(base, size, la57) else {
        pr_err!("switcher area straddles a top-level page-table slot; cannot reserve it in guests");
        return -Errno::ENOMEM.0;
    };
    SWITCHER_BASE.store(base, Ordering::Relaxed);
    RESERVED_START.store(start, Ordering::Relaxed);
    RESERVED_END.store(end, Ordering::Relaxed);
    pr_info!(
        "{}-level host paging, {} possible CPUs, {} switcher pages",
        if la57 { 5 } else { 4 },
        nr_cpus,
        size / PAGE_SIZE
    );
    0
}
