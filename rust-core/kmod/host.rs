//! The vCPU's world inside the kernel: `lg_core::vcpu::Env` over the C shim's services, and the
//! one place that enters the switcher.

use core::ffi::c_void;
use core::ptr::NonNull;

use lg_core::device::Device;
use lg_core::dma::engine::{DmaError, Sent};
use lg_core::shadow::{MemFault, Shadow, ShadowHost, TablePage};
use lg_core::switcher::layout::{GDT_PAGE, HOST_PAGE, REGS_PAGE};
use lg_core::switcher::pages::{off, GdtPage, GuestExtra, GuestRegs, HostPage, TRAP_ABORTED};
use lg_core::switcher::tables::tls_slot;
use lg_core::vcpu::{CpuState, Env, Exit, HostFacts};

use crate::dma::KernelDma;
use crate::kernel::ops;
use crate::module;

/// One run of `read()` (or the teardown at `close()`), in the owner's context.
pub struct KernelEnv<'a> {
    pub ctx: *mut c_void,
    pub dev: &'a Device,
    /// Launcher address of guest-physical 0.
    pub mem_base: u64,
    pub facts: HostFacts,
}

impl KernelEnv<'_> {
    fn uaddr(&self, gpa: u64) -> u64 {
        self.mem_base.wrapping_add(gpa)
    }
}

impl ShadowHost for KernelEnv<'_> {
    fn read_gpa(&mut self, gpa: u64) -> Result<u64, MemFault> {
        let mut b = [0u8; 8];
        self.read_gpa_bytes(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn write_gpa(&mut self, gpa: u64, val: u64) -> Result<(), MemFault> {
        self.write_gpa_bytes(gpa, &val.to_le_bytes())
    }

    fn pin(&mut self, gpa: u64) -> Result<u64, MemFault> {
        let mut pfn = 0;
        // SAFETY: the shim pins a page of the current task (the owner: only `read` pins) and
        // writes the frame number to a valid local.
        match unsafe { (ops().pin_page)(self.uaddr(gpa), &mut pfn) } {
            0 => Ok(pfn),
            _ => Err(MemFault),
        }
    }

    fn unpin(&mut self, host_pfn: u64) {
        // SAFETY: `host_pfn` came from a successful `pin` (shadow paging balances them).
        unsafe { (ops().unpin_page)(host_pfn) }
    }

    fn alloc_table(&mut self) -> Option<TablePage> {
        let mut pa = 0;
        // SAFETY: the shim returns a zeroed page (or NULL) and its physical address.
        let p = unsafe { (ops().alloc_page)(&mut pa) };
        NonNull::new(p.cast::<[u64; 512]>()).map(|ptr| TablePage { pa, ptr })
    }

    fn free_table(&mut self, table: TablePage) {
        // SAFETY: the page came from `alloc_table` and shadow paging no longer uses it.
        unsafe { (ops().free_page)(table.ptr.as_ptr().cast()) }
    }
}

impl Env for KernelEnv<'_> {
    fn read_gpa_bytes(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        // SAFETY: copy_from_user checks the user address itself; `buf` is a valid kernel buffer.
        match unsafe { (ops().copy_from_user)(buf.as_mut_ptr(), self.uaddr(gpa), buf.len()) } {
            0 => Ok(()),
            _ => Err(MemFault),
        }
    }

    fn write_gpa_bytes(&mut self, gpa: u64, buf: &[u8]) -> Result<(), MemFault> {
        // SAFETY: as above.
        match unsafe { (ops().copy_to_user)(self.uaddr(gpa), buf.as_ptr(), buf.len()) } {
            0 => Ok(()),
            _ => Err(MemFault),
        }
    }

    fn run_guest(&mut self, cpu: &mut CpuState, shadow: &mut Shadow) -> Exit {
        let Some(root) = shadow.root_pa() else {
            return Exit {
                in_switcher: true,
                vector: u64::MAX,
                ..Exit::default()
            };
        };
        // SAFETY: the shim disables preemption and interrupts; until `guest_enter_end` this CPU
        // and its switcher pages are ours alone.
        let cpu_id = unsafe { (ops().guest_enter_begin)(self.ctx) };
        let Some(base) = module::cpu_base(cpu_id) else {
            // SAFETY: undoes `guest_enter_begin` (nothing happened in between).
            unsafe { (ops().guest_enter_end)(self.ctx, 0, false, false) };
            return Exit {
                in_switcher: true,
                vector: u64::MAX,
                ..Exit::default()
            };
        };
        // SAFETY: `base` is this CPU's switcher area; with preemption and interrupts off nothing
        // else reads or writes these pages (other CPUs use their own) until we are done.
        let exit = unsafe { switch(base, cpu, root, shadow) };
        // SAFETY: see above; re-enables preemption and interrupts after running host handlers.
        let (nmi, mce) = unsafe { take_pending(base) };
        let host_vector = if exit.in_switcher { 256 } else { exit.vector };
        // SAFETY: pairs with `guest_enter_begin`.
        unsafe {
            (ops().guest_enter_end)(
                self.ctx,
                host_vector,
                nmi || (!exit.in_switcher && exit.vector == 2),
                mce || (!exit.in_switcher && exit.vector == 18),
            )
        };
        exit
    }

    fn signal_pending(&mut self) -> bool {
        // SAFETY: a query of the current task.
        unsafe { (ops().signal_pending)() }
    }

    fn break_requested(&mut self) -> bool {
        self.dev.break_requested()
    }

    fn take_irqs(&mut self) -> u32 {
        self.dev.take_irqs()
    }

    fn clear_irqs(&mut self, mask: u32) {
        self.dev.clear_irqs(mask)
    }

    fn set_timer(&mut self, ns: Option<u64>) {
        // SAFETY: `ctx` is this file's context, alive for the whole file operation.
        unsafe { (ops().set_timer)(self.ctx, ns.unwrap_or(0)) }
    }

    fn wait_for_irq(&mut self, wake_mask: u32) {
        // SAFETY: as above; sleeps interruptibly.
        unsafe { (ops().wait_for_irq)(self.ctx, wake_mask) }
    }

    fn yield_point(&mut self) {
        // SAFETY: process context, no locks held.
        unsafe { (ops().yield_point)() }
    }

    fn realtime_ns(&mut self) -> u64 {
        // SAFETY: a clock read.
        unsafe { (ops().realtime_ns)() }
    }

    fn facts(&self) -> HostFacts {
        self.facts
    }

    fn dma_bind(&mut self, key: u64, dmas: u64, arg: u64) -> Result<u64, DmaError> {
        KernelDma::new(self.ctx, self.dev).bind(key, dmas, arg)
    }

    fn dma_send(&mut self, key: u64, dma: u64) -> Result<Sent, DmaError> {
        KernelDma::new(self.ctx, self.dev).send(key, dma)
    }

    fn dma_condemned(&mut self) -> Option<u64> {
        self.dev.condemned()
    }
}

/// Load the guest's state into this CPU's switcher pages, run it, and read its state back.
///
/// # Safety
/// Preemption and interrupts are off and `base` is this CPU's switcher area.
unsafe fn switch(base: u64, cpu: &mut CpuState, root: u64, shadow: &mut Shadow) -> Exit {
    let page = |which: u64| base + (which - REGS_PAGE) * lg_core::abi::PAGE_SIZE;
    // SAFETY: the caller guarantees exclusive use of these pages; their layouts are fixed by
    // lg_core::switcher::pages, which the switcher assembly shares.
    let (extra, regs, gdtp, host) = unsafe {
        (
            &mut *(base as *mut GuestExtra),
            &mut *((base + off::REGS as u64) as *mut GuestRegs),
            &mut *(page(GDT_PAGE) as *mut GdtPage),
            &*(page(HOST_PAGE) as *const HostPage),
        )
    };
    *regs = cpu.regs;
    extra.fs_base = cpu.fs_base;
    extra.gs_base = cpu.gs_base;
    extra.pkru = cpu.pkru;
    extra.ds = u64::from(cpu.sel[0]);
    extra.es = u64::from(cpu.sel[1]);
    extra.fs = u64::from(cpu.sel[2]);
    extra.gs = u64::from(cpu.sel[3]);
    for (i, d) in cpu.tls.iter().enumerate() {
        if let Some(e) = tls_slot(i as u64).and_then(|s| gdtp.gdt.get_mut(s)) {
            *e = *d;
        }
    }
    gdtp.guest_cr3 = root;
    shadow.set_switcher_entry(host.subtree_root);

    let enter: unsafe extern "C" fn(u64) = {
        let addr = module::enter_address();
        // SAFETY: the switcher's entry point, copied into the executable text pages at load.
        unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(u64)>(addr as usize) }
    };
    // SAFETY: the switcher saves and restores all host state it touches and returns here; the
    // guest state it loads was validated by the vCPU.
    unsafe { enter(base) };

    let exit = Exit {
        vector: extra.exit_vector,
        err: extra.exit_err,
        cr2: extra.cr2,
        in_switcher: extra.exit_cs & 3 == 0 && extra.exit_vector != TRAP_ABORTED,
        rip: extra.exit_rip,
    };
    if !exit.in_switcher {
        cpu.regs = *regs;
    }
    cpu.fs_base = extra.fs_base;
    cpu.gs_base = extra.gs_base;
    cpu.pkru = extra.pkru;
    if !exit.in_switcher {
        cpu.sel = [extra.ds, extra.es, extra.fs, extra.gs].map(|s| s as u16);
    }
    exit
}

/// Collect (and clear) an NMI or machine check the switcher noted while switching.
///
/// # Safety
/// As for `switch`.
unsafe fn take_pending(base: u64) -> (bool, bool) {
    let host = (base + (HOST_PAGE - REGS_PAGE) * lg_core::abi::PAGE_SIZE) as *mut HostPage;
    // SAFETY: this CPU's host page, exclusively ours (caller); the switcher is not running.
    unsafe {
        let nmi = core::mem::replace(&mut (*host).nmi_pending, 0) != 0;
        let mce = core::mem::replace(&mut (*host).mce_pending, 0) != 0;
        (nmi, mce)
    }
}
