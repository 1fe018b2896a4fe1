//! The DMA engine inside the kernel: the global binding table under the shim's mutex, and
//! `lg_core::dma::engine::DmaHost` over the launcher's memory (the current task's, by
//! `copy_{from,to}_user`) and other guests' memory (their launchers', by `access_process_vm`).
//!
//! Lock order: the global DMA mutex first, then — taken and dropped inside the copies — the
//! sender's mmap lock (page faults of `copy_{from,to}_user`, `dma_identify`) and the receiver's
//! (`access_process_vm`). Nothing takes the DMA mutex while holding an mmap lock, and no guest path
//! holds one guest's lock while waiting for another's, so two guests sending to each other at the
//! same time cannot deadlock: the mutex orders them. A binding is removed under the mutex before its
//! guest's file is freed, so a receiver found in the table stays valid for the whole send.

use core::cell::UnsafeCell;
use core::ffi::c_void;

use lg_core::abi::PAGE_SIZE;
use lg_core::device::Device;
use lg_core::dma::engine::{self, DmaError, DmaHost, NotBound, Sent};
use lg_core::dma::{BadDma, GuestMem, KeyId, MemFault, Table};

use crate::kernel::ops;

/// Every binding of every guest. Only touched with the DMA mutex held ([`with_table`]).
struct GlobalTable(UnsafeCell<Table>);

// SAFETY: the table is only reached through `with_table`, which holds the shim's DMA mutex for
// the whole access, so no two threads touch it at once.
unsafe impl Sync for GlobalTable {}

static TABLE: GlobalTable = GlobalTable(UnsafeCell::new(Table::new()));

/// Run `f` with the binding table, under the global DMA mutex.
fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    // SAFETY: plain calls into the shim; the mutex serializes every access to TABLE.
    unsafe { (ops().dma_lock)() };
    // SAFETY: we hold the mutex (see `GlobalTable`).
    let r = f(unsafe { &mut *TABLE.0.get() });
    // SAFETY: pairs with the lock above.
    unsafe { (ops().dma_unlock)() };
    r
}

/// The calling guest's memory: its launcher is the current task.
struct OwnMem {
    base: u64,
    limit: u64,
}

impl GuestMem for OwnMem {
    fn limit(&self) -> u64 {
        self.limit
    }
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        // SAFETY: copy_from_user checks the user range; `buf` is a kernel buffer.
        match unsafe { (ops().copy_from_user)(buf.as_mut_ptr(), self.base + gpa, buf.len()) } {
            0 => Ok(()),
            _ => Err(MemFault),
        }
    }
    fn write(&mut self, gpa: u64, buf: &[u8]) -> Result<(), MemFault> {
        // SAFETY: as above.
        match unsafe { (ops().copy_to_user)(self.base + gpa, buf.as_ptr(), buf.len()) } {
            0 => Ok(()),
            _ => Err(MemFault),
        }
    }
}

/// Another guest's memory, through its launcher's address space.
struct PeerMem {
    ctx: *mut c_void,
    base: u64,
    limit: u64,
}

impl PeerMem {
    fn access(&mut self, gpa: u64, ptr: *mut u8, len: usize, write: bool) -> Result<(), MemFault> {
        // SAFETY: `ctx` is a live guest file (its binding exists, and bindings go before their
        // file is freed, under the mutex we hold); `ptr` is a kernel buffer of `len` bytes.
        let n = unsafe { (ops().access_remote)(self.ctx, self.base + gpa, ptr, len, write) };
        if n == len as i64 {
            Ok(())
        } else {
            Err(MemFault)
        }
    }
}

impl GuestMem for PeerMem {
    fn limit(&self) -> u64 {
        self.limit
    }
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.access(gpa, buf.as_mut_ptr(), buf.len(), false)
    }
    fn write(&mut self, gpa: u64, buf: &[u8]) -> Result<(), MemFault> {
        // access_process_vm does not write through its buffer when writing.
        self.access(gpa, buf.as_ptr().cast_mut(), buf.len(), true)
    }
}

/// The device of a guest's file context.
fn device_of<'a>(ctx: *mut c_void) -> Option<&'a Device> {
    // SAFETY: `ctx` is a live guest file (see `PeerMem`); its device lives as long as it.
    unsafe { (ops().file_device)(ctx).cast::<Device>().as_ref() }
}

/// One DMA operation by the guest of file `ctx` (whose launcher is the current task).
pub struct KernelDma<'a> {
    pub ctx: *mut c_void,
    pub dev: &'a Device,
    own: OwnMem,
    peer: Option<PeerMem>,
}

impl<'a> KernelDma<'a> {
    pub fn new(ctx: *mut c_void, dev: &'a Device) -> Self {
        let (base, limit) = dev
            .init_args()
            .map_or((0, 0), |a| (a.mem_base, a.pfn_limit * PAGE_SIZE));
        KernelDma {
            ctx,
            dev,
            own: OwnMem { base, limit },
            peer: None,
        }
    }

    pub fn bind(&mut self, key: u64, dmas: u64, arg: u64) -> Result<u64, DmaError> {
        with_table(|t| engine::bind(t, self, key, dmas, arg))
    }

    pub fn send(&mut self, key: u64, dma: u64) -> Result<Sent, DmaError> {
        with_table(|t| engine::send(t, self, key, dma))
    }

    pub fn get(&mut self, key: u64) -> Result<Option<u64>, NotBound> {
        with_table(|t| engine::get(t, self, key))
    }

    /// Drop every binding of this guest (its file is being released).
    pub fn forget(&mut self) {
        with_table(|t| engine::forget(t, self))
    }
}

impl DmaHost for KernelDma<'_> {
    fn me(&self) -> (u64, u64) {
        (self.dev.id(), self.ctx as u64)
    }

    fn identify(&mut self, gpa: u64) -> Result<KeyId, MemFault> {
        let (mut file, mut offset) = (0u64, 0u64);
        // SAFETY: looks up the current task's mapping at the address; writes two locals.
        match unsafe { (ops().dma_identify)(self.own.base + gpa, &mut file, &mut offset) } {
            0 => Ok(KeyId::Private),
            1 => Ok(KeyId::Shared { file, offset }),
            _ => Err(MemFault),
        }
    }

    fn hold(&mut self, id: KeyId) {
        if let KeyId::Shared { file, .. } = id {
            // SAFETY: `file` came from `dma_identify` on a mapping that still exists.
            unsafe { (ops().dma_hold)(file) }
        }
    }

    fn release(&mut self, id: KeyId) {
        if let KeyId::Shared { file, .. } = id {
            // SAFETY: balances the `hold` taken when the binding was made.
            unsafe { (ops().dma_release)(file) }
        }
    }

    fn memories(&mut self, peer: u64) -> (&mut dyn GuestMem, Option<&mut dyn GuestMem>) {
        if peer == self.ctx as u64 {
            return (&mut self.own, None);
        }
        let ctx = peer as *mut c_void;
        self.peer = device_of(ctx).and_then(|d| d.init_args()).map(|a| PeerMem {
            ctx,
            base: a.mem_base,
            limit: a.pfn_limit * PAGE_SIZE,
        });
        (
            &mut self.own,
            self.peer.as_mut().map(|p| p as &mut dyn GuestMem),
        )
    }

    fn raise(&mut self, peer: u64, irq: u8) {
        let ctx = peer as *mut c_void;
        if let Some(d) = device_of(ctx) {
            d.raise_irq(u32::from(irq));
            // SAFETY: a live guest file (see `PeerMem`).
            unsafe { (ops().wake)(ctx) };
        }
    }

    fn condemn(&mut self, peer: u64, why: BadDma) {
        let ctx = peer as *mut c_void;
        if let Some(d) = device_of(ctx) {
            let gpa = match why {
                BadDma::Descriptor { gpa } => gpa,
                BadDma::Section { addr, .. } => addr,
            };
            d.condemn(gpa);
            // SAFETY: as in `raise`.
            unsafe { (ops().wake)(ctx) };
        }
    }
}
