//! The DMA engine: lguest's I/O model (docs/abi.md §3).
//!
//! A guest *binds* arrays of receive descriptors at a key and *sends* a descriptor to a key. Keys
//! are guest-physical addresses, but the host matches them by the memory behind them (which the
//! kernel glue works out: a file and offset for a shared mapping, "private" otherwise), so two
//! guests whose launchers map the same file meet at the same key. This module is the pure part:
//! descriptors, the table of bindings shared by all guests, and the scatter-gather copy. The kernel
//! glue (rust-core/kmod/dma.rs) supplies guest memory, the lock and the wake-ups.
//!
//! Descriptors are read once into host memory and checked before use: a guest that rewrites its
//! descriptor while the host copies cannot make the host use an unchecked address.

use crate::abi::PAGE_SIZE;

pub mod engine;

pub const MAX_SECTIONS: usize = 16;
/// Size of a `struct lguest_dma` in guest memory.
pub const DMA_SIZE: u64 = 168;
/// Bindings one guest may hold.
pub const MAX_BINDINGS_PER_GUEST: usize = 32;
/// Descriptors in one bound array.
pub const MAX_ARRAY: u64 = 256;
/// Bindings all guests together may hold (the table is a fixed array: no allocation in the
/// host's hot path).
pub const TABLE_SIZE: usize = 1024;
/// Virtual irqs a binding may use (0 unbinds).
pub const MAX_IRQ: u64 = 31;

/// Guest memory could not be read or written (the launcher's memory is gone or the task exited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemFault;

/// One guest's memory, by guest-physical address.
pub trait GuestMem {
    /// Guest memory is `[0, limit)`.
    fn limit(&self) -> u64;
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemFault>;
    fn write(&mut self, gpa: u64, buf: &[u8]) -> Result<(), MemFault>;
}

/// A `struct lguest_dma`, copied into host memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dma {
    pub used_len: u32,
    pub addr: [u64; MAX_SECTIONS],
    pub len: [u16; MAX_SECTIONS],
}

/// Why a descriptor is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadDma {
    /// The descriptor itself is misaligned or outside guest memory, or cannot be read.
    Descriptor { gpa: u64 },
    /// A section leaves guest memory or crosses a page boundary.
    Section { index: usize, addr: u64, len: u16 },
}

impl core::fmt::Display for BadDma {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            BadDma::Descriptor { gpa } => write!(
                f,
                "DMA descriptor at {gpa:#x} is misaligned, outside guest memory or unreadable"
            ),
            BadDma::Section { index, addr, len } => write!(
                f,
                "DMA section {index} ({len} bytes at {addr:#x}) leaves guest memory or crosses a \
                 page boundary"
            ),
        }
    }
}

/// Is `[gpa, gpa + len)` inside `[0, limit)`?
pub fn in_memory(gpa: u64, len: u64, limit: u64) -> bool {
    gpa.checked_add(len).is_some_and(|end| end <= limit)
}

impl Dma {
    pub fn from_bytes(b: &[u8; DMA_SIZE as usize]) -> Dma {
        let word = |off: usize, n: usize| -> u64 {
            let mut v = 0u64;
            for (i, byte) in b.iter().skip(off).take(n).enumerate() {
                v |= u64::from(*byte) << (8 * i);
            }
            v
        };
        let mut d = Dma {
            used_len: word(0, 4) as u32,
            ..Dma::default()
        };
        for i in 0..MAX_SECTIONS {
            if let Some(a) = d.addr.get_mut(i) {
                *a = word(8 + 8 * i, 8);
            }
            if let Some(l) = d.len.get_mut(i) {
                *l = word(136 + 2 * i, 2) as u16;
            }
        }
        d
    }

    /// Read the descriptor at `gpa` (once) and check every section it uses.
    pub fn fetch(mem: &mut dyn GuestMem, gpa: u64) -> Result<Dma, BadDma> {
        if !gpa.is_multiple_of(8) || !in_memory(gpa, DMA_SIZE, mem.limit()) {
            return Err(BadDma::Descriptor { gpa });
        }
        let mut raw = [0u8; DMA_SIZE as usize];
        mem.read(gpa, &mut raw)
            .map_err(|_| BadDma::Descriptor { gpa })?;
        let d = Dma::from_bytes(&raw);
        d.check(mem.limit())?;
        Ok(d)
    }

    /// The sections in use: up to the first zero length.
    pub fn sections(&self) -> impl Iterator<Item = (u64, u16)> + '_ {
        self.addr
            .iter()
            .zip(self.len.iter())
            .map(|(a, l)| (*a, *l))
            .take_while(|(_, l)| *l != 0)
    }

    pub fn total(&self) -> u64 {
        self.sections().map(|(_, l)| u64::from(l)).sum()
    }

    fn check(&self, limit: u64) -> Result<(), BadDma> {
        for (index, (addr, len)) in self.sections().enumerate() {
            let crosses = (addr % PAGE_SIZE) + u64::from(len) > PAGE_SIZE;
            if crosses || !in_memory(addr, u64::from(len), limit) {
                return Err(BadDma::Section { index, addr, len });
            }
        }
        Ok(())
    }
}

/// Copy the sections of `src` (in the sender's memory) into those of `dst` (in the receiver's),
/// scatter to gather, until either list ends. Returns the bytes copied. Both lists were checked.
pub fn copy_sections(
    from: &mut dyn GuestMem,
    src: &Dma,
    to: &mut dyn GuestMem,
    dst: &Dma,
) -> Result<u64, Side> {
    let mut buf = [0u8; 256];
    let mut s = src.sections();
    let mut d = dst.sections();
    let (mut cur_s, mut cur_d) = (s.next(), d.next());
    let (mut off_s, mut off_d) = (0u64, 0u64);
    let mut total = 0u64;
    while let (Some((sa, sl)), Some((da, dl))) = (cur_s, cur_d) {
        let n = (u64::from(sl) - off_s)
            .min(u64::from(dl) - off_d)
            .min(buf.len() as u64);
        let chunk = buf.get_mut(..n as usize).unwrap_or(&mut []);
        from.read(sa + off_s, chunk).map_err(|_| Side::Sender)?;
        to.write(da + off_d, chunk).map_err(|_| Side::Receiver)?;
        total += n;
        off_s += n;
        off_d += n;
        if off_s == u64::from(sl) {
            cur_s = s.next();
            off_s = 0;
        }
        if off_d == u64::from(dl) {
            cur_d = d.next();
            off_d = 0;
        }
    }
    Ok(total)
}

/// Which guest's memory failed during a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Sender,
    Receiver,
}

/// Where a key points, as the host kernel determined from the launcher's mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyId {
    /// Memory only this guest's launcher maps: sends go to the launcher.
    Private,
    /// A shared file mapping: `file` is the host's identity of the file (stable while a binding
    /// holds a reference), `offset` the byte offset in it.
    Shared { file: u64, offset: u64 },
}

/// One binding in the shared table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The guest that bound it (its host-wide id).
    pub guest: u64,
    /// Opaque handle the kernel glue uses to reach that guest (its file context).
    pub handle: u64,
    /// The guest-physical key as that guest gave it (for GETDMA and unbinding).
    pub key: u64,
    /// The identity of the memory behind the key.
    pub id: KeyId,
    /// The descriptor array, its length, the irq, and where the round-robin scan starts.
    pub dmas: u64,
    pub num: u16,
    pub irq: u8,
    pub next: u16,
}

/// Outcome of [`Table::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindResult {
    Bound,
    /// The guest already holds [`MAX_BINDINGS_PER_GUEST`] bindings, or the table is full.
    Full,
}

/// Every binding of every guest.
pub struct Table {
    slots: [Option<Binding>; TABLE_SIZE],
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    pub const fn new() -> Table {
        Table {
            slots: [None; TABLE_SIZE],
        }
    }

    pub fn count(&self, guest: u64) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|b| b.guest == guest)
            .count()
    }

    pub fn bind(&mut self, b: Binding) -> BindResult {
        if self.count(b.guest) >= MAX_BINDINGS_PER_GUEST {
            return BindResult::Full;
        }
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(b);
                BindResult::Bound
            }
            None => BindResult::Full,
        }
    }

    /// Remove `guest`'s binding of `dmas` at `key`. Returns it (its file reference must be
    /// released by the caller).
    pub fn unbind(&mut self, guest: u64, key: u64, dmas: u64) -> Option<Binding> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.is_some_and(|b| b.guest == guest && b.key == key && b.dmas == dmas))?;
        slot.take()
    }

    /// Remove every binding of `guest`, calling `release` for each.
    pub fn unbind_all(&mut self, guest: u64, mut release: impl FnMut(Binding)) {
        for slot in self.slots.iter_mut() {
            if let Some(b) = *slot {
                if b.guest == guest {
                    *slot = None;
                    release(b);
                }
            }
        }
    }

    /// The first binding of a guest other than `sender` at shared memory `id`.
    pub fn receiver(&self, sender: u64, id: KeyId) -> Option<usize> {
        if id == KeyId::Private {
            return None;
        }
        self.slots
            .iter()
            .position(|s| s.is_some_and(|b| b.guest != sender && b.id == id))
    }

    /// `guest`'s own binding at `key` (for the launcher's GETDMA).
    pub fn own(&self, guest: u64, key: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.is_some_and(|b| b.guest == guest && b.key == key))
    }

    pub fn get(&self, i: usize) -> Option<&Binding> {
        self.slots.get(i).and_then(|s| s.as_ref())
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Binding> {
        self.slots.get_mut(i).and_then(|s| s.as_mut())
    }
}

/// Find the first free entry (`used_len == 0`) of binding `b`'s array in its guest's memory,
/// starting at its round-robin position. Returns the entry's address and its checked contents.
pub fn free_entry(mem: &mut dyn GuestMem, b: &Binding) -> Result<Option<(u64, Dma)>, BadDma> {
    let num = u64::from(b.num.max(1));
    for k in 0..num {
        let i = (u64::from(b.next) + k) % num;
        let gpa = b.dmas + i * DMA_SIZE;
        let d = Dma::fetch(mem, gpa)?;
        if d.used_len == 0 {
            return Ok(Some((gpa, d)));
        }
    }
    Ok(None)
}

/// Index of the entry at `gpa` in binding `b`'s array.
pub fn entry_index(b: &Binding, gpa: u64) -> u16 {
    (gpa.saturating_sub(b.dmas) / DMA_SIZE) as u16
}

#[cfg(test)]
pub(crate) mod fuzz_model;
#[cfg(test)]
mod tests;
