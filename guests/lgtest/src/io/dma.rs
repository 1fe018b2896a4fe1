//! `struct lguest_dma` (docs/abi.md §3.1) and the two DMA hypercalls.
//!
//! Descriptors and the buffers they describe are memory the host (or, on a sharenet, another
//! guest's sender, from another CPU) writes behind the compiler's back, so no Rust reference to
//! their contents ever exists: descriptors are made of atomics, buffers ([`DmaBuf`]) are reached
//! through raw pointers and copied in and out only while the host has no claim on them.

use crate::hcall::hcall;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use lg_core::abi::hcall as nr;
use lg_core::dma::{DMA_SIZE, MAX_SECTIONS};
use lgtest::devices::page_sections;
use lgtest::virt_to_phys;

/// One `struct lguest_dma`: 168 bytes, 8-byte aligned.
#[repr(C, align(8))]
pub struct Dma {
    used_len: AtomicU32,
    reserved: AtomicU32,
    addr: [AtomicU64; MAX_SECTIONS],
    len: [AtomicU16; MAX_SECTIONS],
}

const _: () = assert!(core::mem::size_of::<Dma>() == DMA_SIZE as usize);
const _: () = assert!(core::mem::offset_of!(Dma, addr) == 8);
const _: () = assert!(core::mem::offset_of!(Dma, len) == 136);

/// The describe call needed more sections than a descriptor has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong;

impl Dma {
    #[allow(
        clippy::declare_interior_mutable_const,
        reason = "an initializer for arrays"
    )]
    pub const NEW: Dma = Dma::new();

    pub const fn new() -> Dma {
        Dma {
            used_len: AtomicU32::new(0),
            reserved: AtomicU32::new(0),
            addr: [const { AtomicU64::new(0) }; MAX_SECTIONS],
            len: [const { AtomicU16::new(0) }; MAX_SECTIONS],
        }
    }

    /// Guest-physical address (descriptors live in the image or the direct map).
    pub fn gpa(&self) -> u64 {
        virt_to_phys(core::ptr::from_ref(self) as u64)
    }

    /// `used_len`, with acquire ordering: the data it announces is visible after it.
    pub fn used(&self) -> u32 {
        self.used_len.load(Ordering::Acquire)
    }

    /// Set `used_len` with release ordering: the sections are written before it (0 hands a
    /// receive buffer to the host).
    pub fn set_used(&self, v: u32) {
        self.used_len.store(v, Ordering::Release);
    }

    /// Section `i` (any address and length: the hostile modes want bad ones).
    pub fn set_section(&self, i: usize, gpa: u64, len: u16) {
        if let (Some(a), Some(l)) = (self.addr.get(i), self.len.get(i)) {
            a.store(gpa, Ordering::Relaxed);
            l.store(len, Ordering::Relaxed);
        }
    }

    /// Describe `len` bytes at kernel virtual address `va` (image or direct map), split at page
    /// boundaries; the rest of the list is cleared.
    pub fn describe(&self, va: u64, len: usize) -> Result<(), TooLong> {
        let (sections, n) = page_sections(virt_to_phys(va), len).ok_or(TooLong)?;
        for (i, (gpa, l)) in sections.iter().enumerate() {
            if i < n {
                self.set_section(i, *gpa, *l);
            } else {
                self.set_section(i, 0, 0);
            }
        }
        Ok(())
    }

    /// Describe a buffer and hand it to the host as a free receive buffer.
    pub fn arm(&self, va: u64, len: usize) -> Result<(), TooLong> {
        self.describe(va, len)?;
        self.set_used(0);
        Ok(())
    }
}

impl Default for Dma {
    fn default() -> Self {
        Self::new()
    }
}

/// `SEND_DMA(key, dma)` with whatever the descriptor holds: `used_len` is cleared first, the
/// value the host (or launcher) left is returned.
pub fn send(key: u64, dma: &Dma) -> u32 {
    dma.set_used(0);
    // SAFETY: the host reads the descriptor and its sections and writes only `used_len` (an
    // atomic) and, for a launcher request such as a block read, the buffers a bound reply
    // describes, which are `DmaBuf`s no reference points into. An invalid descriptor kills the
    // guest, which is memory-safe.
    unsafe { hcall(nr::SEND_DMA, key, dma.gpa(), 0, 0, 0) };
    dma.used()
}

/// `BIND_DMA(key, array, len << 8 | irq)`: true if bound (false: this guest has 32 bindings).
pub fn bind(key: u64, array: &'static [Dma], irq: u32) -> bool {
    let Some(first) = array.first() else {
        return false;
    };
    // SAFETY: the array is static, so it outlives the binding; the host writes only the
    // descriptors' `used_len` (atomics) and the buffers they describe (`DmaBuf`s).
    let r = unsafe { bind_raw(key, first.gpa(), array.len() as u64, u64::from(irq)) };
    r == 1
}

/// Undo [`bind`] (`irq = 0`): true if there was such a binding.
pub fn unbind(key: u64, array: &'static [Dma]) -> bool {
    let Some(first) = array.first() else {
        return false;
    };
    // SAFETY: unbinding only makes the host forget the array.
    unsafe { bind_raw(key, first.gpa(), 0, 0) == 1 }
}

/// `BIND_DMA` with raw arguments; returns RAX.
///
/// # Safety
/// The array at `dmas_gpa` and the buffers its descriptors describe may be written by the host
/// from now on, whenever data arrives: nothing Rust relies on may live there.
pub unsafe fn bind_raw(key: u64, dmas_gpa: u64, num: u64, irq: u64) -> u64 {
    // SAFETY: per the caller.
    unsafe { hcall(nr::BIND_DMA, key, dmas_gpa, num << 8 | irq, 0, 0) }
}

/// Static memory that DMA reads and writes: only ever reached through raw pointers, so the host
/// writing it behind our back breaks no Rust reference.
#[repr(C, align(4096))]
pub struct DmaBuf<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the contents are only accessed through raw pointers, by one vCPU; who may touch which
// bytes when (the driver or the host) is the DMA protocol's business, not Rust's.
unsafe impl<const N: usize> Sync for DmaBuf<N> {}

impl<const N: usize> DmaBuf<N> {
    pub const fn new() -> Self {
        DmaBuf(UnsafeCell::new([0; N]))
    }

    /// Kernel virtual address of byte `off` (clamped to the end).
    pub fn va(&self, off: usize) -> u64 {
        self.0.get() as u64 + off.min(N) as u64
    }

    /// Copy `src` in at `off` (clamped to the buffer).
    pub fn write(&self, off: usize, src: &[u8]) {
        let off = off.min(N);
        let n = src.len().min(N - off);
        // SAFETY: in bounds (clamped); the caller owns these bytes now (the host has no claim).
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), self.0.get().cast::<u8>().add(off), n);
        }
    }

    /// Copy out `dst.len()` bytes from `off` (clamped to the buffer).
    pub fn read(&self, off: usize, dst: &mut [u8]) {
        let off = off.min(N);
        let n = dst.len().min(N - off);
        // SAFETY: in bounds (clamped); the host has finished with these bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(self.0.get().cast::<u8>().add(off), dst.as_mut_ptr(), n);
        }
    }

    /// Run `f` on `[off, off + len)` (clamped) as a slice.
    ///
    /// # Safety
    /// Nobody (host, launcher or peer) may write those bytes while `f` runs, and no other slice of
    /// them may exist.
    pub unsafe fn with_slice<R>(
        &self,
        off: usize,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        let off = off.min(N);
        let len = len.min(N - off);
        // SAFETY: in bounds; exclusive for the duration of `f` per the caller.
        let s = unsafe { core::slice::from_raw_parts_mut(self.0.get().cast::<u8>().add(off), len) };
        f(s)
    }
}

impl<const N: usize> Default for DmaBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}
