//! Module-wide state: what we learned about the host at load time, and the switcher pages.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use lg_core::abi::PAGE_SIZE;
use lg_core::errno::Errno;
use lg_core::protocol::HostLimits;
use lg_core::switcher::layout::{self, GDT_PAGE, HOST_PAGE, IDT_PAGE, IST_PAGE, REGS_PAGE};
use lg_core::switcher::map::{Prot, SubtreeBuilder, Table, TABLE_FLAGS};
use lg_core::switcher::pages::{flag, DescPtr, GdtPage, HostPage, GDT_ENTRIES};
use lg_core::switcher::tables::{build_gdt, build_idt, build_tss};
use lg_core::vcpu::HostFacts;

use crate::ffi::{LgHostInfo, LgKernelOps, LgSwitcherLayout};
use crate::kernel::{self, ops, pr_err, pr_info};
use crate::switcher_asm;

static NR_CPUS: AtomicU32 = AtomicU32::new(0);
static LA57: AtomicBool = AtomicBool::new(false);
static FSGSBASE: AtomicBool = AtomicBool::new(false);
static PKU: AtomicBool = AtomicBool::new(false);
static IBPB: AtomicBool = AtomicBool::new(false);
static STABLE_TSC: AtomicBool = AtomicBool::new(false);
static PHYS_BITS: AtomicU32 = AtomicU32::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
static CR4: AtomicU64 = AtomicU64::new(0);
static XCR0: AtomicU64 = AtomicU64::new(0);
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

/// The facts guest `guest_id` is told.
pub fn guest_facts(guest_id: u64) -> HostFacts {
    let la57 = LA57.load(Ordering::Relaxed);
    let base = SWITCHER_BASE.load(Ordering::Relaxed);
    HostFacts {
        la57,
        reserved: (
            RESERVED_START.load(Ordering::Relaxed),
            RESERVED_END.load(Ordering::Relaxed),
        ),
        switcher_slot: if la57 {
            ((base >> 48) & 511) as usize
        } else {
            ((base >> 39) & 511) as usize
        },
        tsc_khz: TSC_KHZ.load(Ordering::Relaxed),
        stable_tsc: STABLE_TSC.load(Ordering::Relaxed),
        fsgsbase: FSGSBASE.load(Ordering::Relaxed),
        pku: PKU.load(Ordering::Relaxed),
        guest_id,
        phys_bits: PHYS_BITS.load(Ordering::Relaxed),
        host_cr4: CR4.load(Ordering::Relaxed),
        host_xcr0: XCR0.load(Ordering::Relaxed),
    }
}

/// The switcher base (regs page) of host CPU `cpu`, if it exists.
pub fn cpu_base(cpu: u32) -> Option<u64> {
    let base = SWITCHER_BASE.load(Ordering::Acquire);
    (base != 0 && cpu < NR_CPUS.load(Ordering::Relaxed))
        .then(|| layout::cpu_page_va(base, u64::from(cpu), REGS_PAGE))
}

/// Address of the switcher's entry point.
pub fn enter_address() -> u64 {
    SWITCHER_BASE.load(Ordering::Acquire) + switcher_asm::blob().enter
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
    FSGSBASE.store(info.fsgsbase, Ordering::Relaxed);
    PKU.store(info.pku, Ordering::Relaxed);
    IBPB.store(info.ibpb, Ordering::Relaxed);
    STABLE_TSC.store(info.stable_tsc, Ordering::Relaxed);
    PHYS_BITS.store(info.phys_bits, Ordering::Relaxed);
    TSC_KHZ.store(info.tsc_khz, Ordering::Relaxed);
    CR4.store(info.cr4, Ordering::Relaxed);
    XCR0.store(info.xcr0, Ordering::Relaxed);
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

/// The switcher code the shim copies into the text pages.
///
/// # Safety
/// Both pointers must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_switcher_code(code: *mut *const u8, len: *mut usize) {
    let blob = switcher_asm::blob();
    // SAFETY: the caller guarantees both pointers are writable.
    unsafe {
        code.write(blob.bytes.as_ptr());
        len.write(blob.bytes.len());
    }
}

/// The shim mapped the switcher area at `base` (its pages' frame numbers in `pfns`): fill in every
/// CPU's descriptor tables and build the page tables that map it into guests. Refuses (and the
/// module does not load) if the area cannot be reserved cleanly in guests.
///
/// # Safety
/// `base` must be the fresh vmap of `n` zeroed pages whose frames are `pfns[..n]`, laid out as
/// `lg_rust_switcher_layout` said.
#[no_mangle]
pub unsafe extern "C" fn lg_rust_switcher_mapped(base: u64, pfns: *const u64, n: u64) -> i32 {
    let nr_cpus = u64::from(NR_CPUS.load(Ordering::Relaxed));
    let la57 = LA57.load(Ordering::Relaxed);
    let total = layout::total_pages(nr_cpus).unwrap_or(0);
    if n != total || pfns.is_null() {
        return -Errno::EINVAL.0;
    }
    // SAFETY: the caller guarantees `pfns` holds `n` entries.
    let pfns = unsafe { core::slice::from_raw_parts(pfns, n as usize) };
    let Some((start, end)) = layout::reserved_range(base, total * PAGE_SIZE, la57) else {
        pr_err!("switcher area straddles a top-level page-table slot; cannot reserve it in guests");
        return -Errno::ENOMEM.0;
    };
    RESERVED_START.store(start, Ordering::Relaxed);
    RESERVED_END.store(end, Ordering::Relaxed);
    let blob = switcher_asm::blob();
    for cpu in 0..nr_cpus {
        // SAFETY: forwarded from our caller; each CPU's pages are distinct and nothing else uses
        // them yet (the device is not registered).
        if let Err(e) = unsafe { setup_cpu(base, cpu, pfns, &blob, la57) } {
            pr_err!("cannot build the switcher page tables of CPU {cpu}: {e:?}");
            // SAFETY: as above; frees what was built so far.
            unsafe { free_subtrees(base, nr_cpus) };
            return -Errno::ENOMEM.0;
        }
    }
    SWITCHER_BASE.store(base, Ordering::Release);
    pr_info!(
        "{}-level host paging, {} possible CPUs, {} switcher pages",
        if la57 { 5 } else { 4 },
        nr_cpus,
        total
    );
    0
}

/// Free the per-CPU switcher page tables (module unload, or a failed load).
#[no_mangle]
pub extern "C" fn lg_rust_switcher_unmapped() {
    let base = SWITCHER_BASE.swap(0, Ordering::AcqRel);
    if base != 0 {
        // SAFETY: the switcher was fully set up at `base` and no guest can run any more (the
        // device is unregistered before the shim calls us).
        unsafe { free_subtrees(base, u64::from(NR_CPUS.load(Ordering::Relaxed))) };
    }
}

/// Fill in CPU `cpu`'s IDT, GDT, TSS and host page, and map its pages for guests.
///
/// # Safety
/// See `lg_rust_switcher_mapped`.
unsafe fn setup_cpu(
    base: u64,
    cpu: u64,
    pfns: &[u64],
    blob: &switcher_asm::Blob,
    la57: bool,
) -> Result<(), lg_core::switcher::map::MapError> {
    let va = |which| layout::cpu_page_va(base, cpu, which);
    let idt_va = va(IDT_PAGE);
    let gdt_va = va(GDT_PAGE);
    let ist_va = va(IST_PAGE);
    // SAFETY: these are this CPU's zeroed, mapped, page-aligned switcher pages (caller).
    let (idt, gdtp, host) = unsafe {
        (
            &mut *(idt_va as *mut [u128; 256]),
            &mut *(gdt_va as *mut GdtPage),
            &mut *(va(HOST_PAGE) as *mut HostPage),
        )
    };
    *idt = build_idt(base + blob.stubs);
    let tss_va = gdt_va + core::mem::offset_of!(GdtPage, tss) as u64;
    gdtp.gdt = build_gdt(tss_va);
    gdtp.tss = build_tss(
        va(REGS_PAGE) + PAGE_SIZE,
        [ist_va + 1024, ist_va + 2048, ist_va + 3072, ist_va + 4096],
    );
    gdtp.idt_desc = DescPtr {
        limit: 4095,
        base: idt_va,
        ..DescPtr::default()
    };
    gdtp.gdt_desc = DescPtr {
        limit: (GDT_ENTRIES * 8 - 1) as u16,
        base: gdt_va,
        ..DescPtr::default()
    };
    let mut flags = 0;
    if PKU.load(Ordering::Relaxed) {
        flags |= flag::PKU;
    }
    if IBPB.load(Ordering::Relaxed) {
        flags |= flag::IBPB;
    }
    gdtp.flags = flags;
    host.gdt_rw = DescPtr {
        limit: 16 * 8 - 1,
        // SAFETY: a plain query of the shim.
        base: unsafe { (ops().cpu_gdt_rw)(cpu as u32) },
        ..DescPtr::default()
    };

    // The page tables that map this CPU's switcher pages into every guest it runs.
    let mut pages = [0u64; 8];
    let mut count = 0usize;
    let alloc = || {
        let mut pa = 0u64;
        // SAFETY: the shim returns a zeroed page or NULL.
        let p = unsafe { (ops().alloc_page)(&mut pa) };
        if p.is_null() || count >= pages.len() {
            if !p.is_null() {
                // SAFETY: the page we just got and will not use.
                unsafe { (ops().free_page)(p) };
            }
            return None;
        }
        if let Some(slot) = pages.get_mut(count) {
            *slot = p as u64;
        }
        count += 1;
        // SAFETY: a fresh page of 512 u64s owned by this subtree until unload.
        Some(Table {
            pa,
            entries: unsafe { &mut *(p as *mut [u64; 512]) },
        })
    };
    let mut b = SubtreeBuilder::new(if la57 { 4 } else { 3 }, alloc)?;
    let frame = |i: u64| pfns.get(i as usize).copied().unwrap_or(0) << 12;
    let mut result = Ok(());
    for t in 0..layout::TEXT_PAGES {
        result = result.and_then(|_| b.map(base + t * PAGE_SIZE, frame(t), Prot::Text));
    }
    for (which, prot) in [
        (REGS_PAGE, Prot::Data),
        (IST_PAGE, Prot::Data),
        (IDT_PAGE, Prot::ReadOnly),
        (GDT_PAGE, Prot::ReadOnly),
    ] {
        let idx = layout::cpu_page_index(cpu, which);
        result = result.and_then(|_| b.map(va(which), frame(idx), prot));
    }
    let root = b.root_pa();
    host.subtree_pages = pages;
    host.subtree_root = root | TABLE_FLAGS;
    result
}

/// # Safety
/// `base` must be the switcher area and no guest may be running on any CPU.
unsafe fn free_subtrees(base: u64, nr_cpus: u64) {
    for cpu in 0..nr_cpus {
        // SAFETY: the host page of a CPU of the area (caller).
        let host = unsafe { &mut *(layout::cpu_page_va(base, cpu, HOST_PAGE) as *mut HostPage) };
        for p in host.subtree_pages.iter_mut().filter(|p| **p != 0) {
            // SAFETY: a page we allocated for this subtree and nobody references any more.
            unsafe { (ops().free_page)(*p as *mut u8) };
            *p = 0;
        }
        host.subtree_root = 0;
    }
}
