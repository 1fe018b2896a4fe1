//! Block devices (type 3, docs/abi.md §3.4): `lgba` is the first, `lgbb` the second, ...
//!
//! The device's page holds one request: `u32 type` (0 read, 1 write, 2 flush), `u32 result`
//! (the launcher's: 1 done, 2 error), `u64 sector`, `u32 bytes`, and at 24 the device's size in
//! sectors. One request is in flight at a time, and it is synchronous: `SEND_DMA(P, ...)` returns
//! once the launcher has done it. A write sends the data; a read describes its destination in the
//! one-entry reply array bound at `P` and sends an empty descriptor.

use super::dma::{self, Dma};
use super::mem;
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};
pub use lg_core::abi::dev::block::{DONE, FAILED, FLUSH, READ, SECTOR, WRITE};
use lg_core::abi::dev::block::{OFF_BYTES, OFF_NUM_SECTORS, OFF_RESULT, OFF_SECTOR, OFF_TYPE};
use lg_core::abi::dev::{kind, status};
use lg_core::abi::PAGE_SIZE;
use lg_core::dma::MAX_SECTIONS;

/// The most one request can carry: a page in each section of a descriptor.
pub const MAX_BYTES: usize = MAX_SECTIONS * PAGE_SIZE as usize;

/// Devices we drive at once (`lgba`..`lgbd`), each with its own one-entry reply array.
const MAX_BLOCKS: usize = 4;
static REPLY: [[Dma; 1]; MAX_BLOCKS] = [const { [Dma::NEW] }; MAX_BLOCKS];
static OPEN: [AtomicU8; MAX_BLOCKS] = [const { AtomicU8::new(0) }; MAX_BLOCKS];

/// An open block device.
pub struct Block {
    pub page: u64,
    pub irq: u32,
    pub num_sectors: u64,
    /// Device-name letter index (0: `lgba`).
    pub nth: usize,
}

/// A request failed: the launcher's `result`, and `used_len` of the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failed {
    pub result: u32,
    pub used: u32,
}

impl Block {
    /// Take the `nth` block device: bind its reply array, mark it ready.
    pub fn open(nth: usize) -> Option<Block> {
        let dev = super::find(kind::BLOCK, nth)?;
        let (reply, open) = (REPLY.get(nth)?, OPEN.get(nth)?);
        if open.swap(1, Relaxed) != 0 {
            return None;
        }
        let page = dev.area();
        let irq = dev.desc.irq;
        super::claim_irq_block(irq);
        if !dma::bind(page, reply, irq) {
            dev.set_status(status::FAILED);
            return None;
        }
        dev.set_status(status::DRIVER | status::DRIVER_OK);
        Some(Block {
            page,
            irq,
            num_sectors: mem::read_u64(page + OFF_NUM_SECTORS),
            nth,
        })
    }

    /// `lgba`, `lgbb`, ...
    pub fn name(&self) -> [u8; 4] {
        [b'l', b'g', b'b', b'a' + self.nth as u8]
    }

    fn reply(&self) -> &'static Dma {
        &REPLY[self.nth % MAX_BLOCKS][0]
    }

    /// Fill the request fields (result cleared).
    fn request(&self, kind: u32, sector: u64, bytes: u32) {
        mem::write_u32(self.page + OFF_TYPE, kind);
        mem::write_u32(self.page + OFF_RESULT, 0);
        mem::write_u64(self.page + OFF_SECTOR, sector);
        mem::write_u32(self.page + OFF_BYTES, bytes);
    }

    fn result(&self) -> u32 {
        mem::read_u32(self.page + OFF_RESULT)
    }

    /// Any request: `kind`, `sector`, `bytes` as given, the data descriptor `data` sent as is.
    /// Returns the launcher's result and the descriptor's `used_len`.
    pub fn raw(&self, kind: u32, sector: u64, bytes: u32, data: &Dma) -> (u32, u32) {
        self.request(kind, sector, bytes);
        let used = dma::send(self.page, data);
        (self.result(), used)
    }

    /// Write `len` bytes (whole sectors, at most [`MAX_BYTES`]) from kernel address `va`.
    pub fn write(&self, sector: u64, va: u64, len: usize) -> Result<(), Failed> {
        let d = Dma::new();
        if d.describe(va, len).is_err() {
            return Err(Failed { result: 0, used: 0 });
        }
        let (result, used) = self.raw(WRITE, sector, len as u32, &d);
        if result == DONE && used as usize == len {
            Ok(())
        } else {
            Err(Failed { result, used })
        }
    }

    /// Read `len` bytes (whole sectors, at most [`MAX_BYTES`]) into kernel address `va`.
    pub fn read(&self, sector: u64, va: u64, len: usize) -> Result<(), Failed> {
        let reply = self.reply();
        if reply.arm(va, len).is_err() {
            return Err(Failed { result: 0, used: 0 });
        }
        let ping = Dma::new();
        self.request(READ, sector, len as u32);
        dma::send(self.page, &ping);
        let (result, used) = (self.result(), reply.used());
        // The entry stays ours until the next read re-arms it.
        if result == DONE && used as usize == len {
            Ok(())
        } else {
            Err(Failed { result, used })
        }
    }

    /// Read with the reply entry described by the caller (for the edge cases).
    pub fn read_into(&self, sector: u64, bytes: u32, va: u64, len: usize) -> (u32, u32) {
        let reply = self.reply();
        let _ = reply.arm(va, len);
        let ping = Dma::new();
        self.request(READ, sector, bytes);
        dma::send(self.page, &ping);
        (self.result(), reply.used())
    }

    /// `fsync` the backing file.
    pub fn flush(&self) -> Result<(), Failed> {
        let (result, used) = self.raw(FLUSH, 0, 0, &Dma::new());
        if result == DONE {
            Ok(())
        } else {
            Err(Failed { result, used })
        }
    }

    /// Unbind the reply array (then reads have nowhere to go).
    pub fn unbind_reply(&self) -> bool {
        dma::unbind(self.page, &REPLY[self.nth % MAX_BLOCKS])
    }

    pub fn rebind_reply(&self) -> bool {
        dma::bind(self.page, &REPLY[self.nth % MAX_BLOCKS], self.irq)
    }
}
