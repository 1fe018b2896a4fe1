//! Network devices (type 2, docs/abi.md §3.4): 512 slots of `{mac[6], flags, reserved}` in the
//! device's page `P`; `features & 0x1ff` is our slot. Bringing the interface up writes our MAC
//! (`02:00` and the guest id) into the slot and binds 8 receive buffers of 1514 bytes at
//! `P + 8 × slot`; a frame goes out by `SEND_DMA(P + 8 × n)` to every other non-empty slot `n`
//! that wants it (its MAC, promiscuous, or a broadcast/multicast destination).
//!
//! On a sharenet the page is a file shared with other guests, and their frames land in our
//! buffers from another CPU at any time: a buffer is ours again (to read) once its `used_len` is
//! non-zero, and the host's again once we store 0.

use super::dma::{self, Dma, DmaBuf};
use super::mem;
use crate::shared;
use core::sync::atomic::Ordering::Relaxed;
use lg_core::abi::dev::net::{slot_key, FRAME_MAX, FRAME_MIN, NOCSUM, SLOTS, SLOT_MASK};
use lg_core::abi::dev::{kind, status};
use lgtest::devices::{frame_for_slot, mac_for, slot_empty};

pub const RX_BUFFERS: usize = 8;
/// Each receive buffer gets 2 KiB (so that 1514 bytes never cross a page).
const RX_STRIDE: usize = 2048;

static RX: [Dma; RX_BUFFERS] = [Dma::NEW; RX_BUFFERS];
static RX_BUF: DmaBuf<{ RX_BUFFERS * RX_STRIDE }> = DmaBuf::new();
static TX: Dma = Dma::new();
static TX_BUF: DmaBuf<RX_STRIDE> = DmaBuf::new();

/// Counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_frames: u64,
    /// Frames handed to a peer (one frame may go to several).
    pub tx_sends: u64,
    /// Sends the peer could not take (no free buffer, or gone).
    pub tx_undelivered: u64,
}

/// The receive side.
pub struct Rx {
    next: usize,
    pub stats: Stats,
}

/// The transmit side.
pub struct Tx {
    pub page: u64,
    pub slot: u16,
    pub stats: Stats,
}

pub struct Net {
    pub page: u64,
    pub slot: u16,
    pub irq: u32,
    pub mac: [u8; 6],
    /// No checksums needed (a sharenet).
    pub nocsum: bool,
    pub rx: Rx,
    pub tx: Tx,
}

impl Net {
    /// Bring up the `nth` network device: MAC in our slot, receive buffers bound.
    pub fn open(nth: usize) -> Option<Net> {
        let dev = super::find(kind::NET, nth)?;
        let page = dev.area();
        let slot = dev.desc.features & SLOT_MASK;
        if u64::from(slot) >= SLOTS {
            dev.set_status(status::FAILED);
            return None;
        }
        let mac = mac_for(shared::guest_id().load(Relaxed));
        let irq = dev.desc.irq;
        for (i, d) in RX.iter().enumerate() {
            if d.arm(RX_BUF.va(i * RX_STRIDE), FRAME_MAX).is_err() {
                return None;
            }
        }
        super::claim_irq_net(irq);
        let key = slot_key(page, slot);
        // Buffers first, then the MAC (one 8-byte store, flags 0): a peer that sees us can send.
        if !dma::bind(key, &RX, irq) {
            dev.set_status(status::FAILED);
            return None;
        }
        let mut entry = [0u8; 8];
        entry[..6].copy_from_slice(&mac);
        mem::write_u64(key, u64::from_le_bytes(entry));
        dev.set_status(status::DRIVER | status::DRIVER_OK);
        Some(Net {
            page,
            slot,
            irq,
            mac,
            nocsum: dev.desc.features & NOCSUM != 0,
            rx: Rx {
                next: 0,
                stats: Stats::default(),
            },
            tx: Tx {
                page,
                slot,
                stats: Stats::default(),
            },
        })
    }

    /// Take the interface down: clear our slot, unbind the buffers.
    pub fn close(&self) {
        let key = self.key();
        mem::write_u64(key, 0);
        dma::unbind(key, &RX);
    }

    /// The receive key (our slot).
    pub fn key(&self) -> u64 {
        slot_key(self.page, self.slot)
    }
}

/// The receive descriptors (the DMA modes rebind and rewrite them).
pub fn rx_descriptors() -> &'static [Dma; RX_BUFFERS] {
    &RX
}

/// Where receive buffer `i` normally is.
pub fn rx_buffer_va(i: usize) -> u64 {
    RX_BUF.va(i * RX_STRIDE)
}

/// Slot `n` of the page at `page`: its MAC and flags (one 8-byte read: a peer rewriting its
/// slot meanwhile is seen before or after, never half-way).
pub fn slot(page: u64, n: u16) -> ([u8; 6], u8) {
    let b = mem::read_u64(slot_key(page, n)).to_le_bytes();
    ([b[0], b[1], b[2], b[3], b[4], b[5]], b[6])
}

/// The first other non-empty slot, if any.
pub fn first_peer(page: u64, me: u16) -> Option<u16> {
    (0..SLOTS as u16).find(|&n| n != me && !slot_empty(&slot(page, n).0))
}

impl Rx {
    /// Is a received frame waiting?
    pub fn ready(&self) -> bool {
        RX.iter().any(|d| d.used() != 0)
    }

    /// Pass the next received frame to `f` and give its buffer back. Frames of impossible
    /// lengths are dropped.
    pub fn recv<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        for k in 0..RX_BUFFERS {
            let i = (self.next + k) % RX_BUFFERS;
            let Some(d) = RX.get(i) else { continue };
            let used = d.used() as usize;
            if used == 0 {
                continue;
            }
            self.next = (i + 1) % RX_BUFFERS;
            if !(FRAME_MIN..=FRAME_MAX).contains(&used) {
                self.stats.rx_dropped += 1;
                d.set_used(0);
                continue;
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += used as u64;
            // SAFETY: `used_len` is non-zero, so the host is done with this buffer and will not
            // touch it until we store 0 below; this is the only slice of it.
            let r = unsafe { RX_BUF.with_slice(i * RX_STRIDE, used, |s| f(s)) };
            d.set_used(0);
            return Some(r);
        }
        None
    }
}

impl Tx {
    /// Send `len` bytes built by `build` in the transmit buffer to every slot that wants them.
    pub fn send<R>(&mut self, len: usize, build: impl FnOnce(&mut [u8]) -> R) -> R {
        let len = len.min(FRAME_MAX);
        // SAFETY: the transmit buffer is only read by the host during our own SEND_DMA calls
        // below, after `build` is done with it.
        let r = unsafe { TX_BUF.with_slice(0, len, build) };
        self.transmit(len);
        r
    }

    /// Send the first `len` bytes of the transmit buffer.
    fn transmit(&mut self, len: usize) {
        if len < FRAME_MIN {
            return;
        }
        let mut dest = [0u8; 6];
        TX_BUF.read(0, &mut dest);
        if TX.describe(TX_BUF.va(0), len).is_err() {
            return;
        }
        self.stats.tx_frames += 1;
        for n in 0..SLOTS as u16 {
            if n == self.slot {
                continue;
            }
            let (mac, flags) = slot(self.page, n);
            if !frame_for_slot(&dest, &mac, flags) {
                continue;
            }
            self.stats.tx_sends += 1;
            if dma::send(slot_key(self.page, n), &TX) as usize != len {
                self.stats.tx_undelivered += 1;
            }
        }
    }
}
