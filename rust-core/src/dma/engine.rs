//! Binding, sending and the launcher's GETDMA, over the shared [`Table`], in terms of what the
//! host can do for us ([`DmaHost`]). The kernel glue holds the global DMA lock around every call.

use super::{
    copy_sections, entry_index, free_entry, in_memory, BadDma, BindResult, Binding, Dma, GuestMem,
    KeyId, MemFault, Side, Table, DMA_SIZE, MAX_ARRAY, MAX_IRQ,
};

/// What the engine needs from the host for one operation of one guest (the "sender").
pub trait DmaHost {
    /// The sender's id and the handle other guests' bindings use to reach it.
    fn me(&self) -> (u64, u64);
    /// The identity of the memory behind the sender's key `gpa`.
    fn identify(&mut self, gpa: u64) -> Result<KeyId, MemFault>;
    /// Keep the file behind a shared identity alive while a binding uses it, and let it go.
    fn hold(&mut self, id: KeyId);
    fn release(&mut self, id: KeyId);
    /// The sender's memory, and the memory of the guest behind binding handle `peer`.
    fn memories(&mut self, peer: u64) -> (&mut dyn GuestMem, Option<&mut dyn GuestMem>);
    /// Raise virtual irq `irq` in guest `peer` and wake it.
    fn raise(&mut self, peer: u64, irq: u8);
    /// Guest `peer`'s receive buffers are invalid: it must die with this reason.
    fn condemn(&mut self, peer: u64, why: BadDma);
}

/// A misuse by the calling guest: it dies with this reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaError {
    BadKey {
        key: u64,
    },
    BadArray {
        dmas: u64,
        num: u64,
    },
    BadIrq {
        irq: u64,
    },
    Bad(BadDma),
    /// The sender's memory failed during the copy.
    SenderMemory,
}

impl core::fmt::Display for DmaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            DmaError::BadKey { key } => {
                write!(f, "DMA key {key:#x} is misaligned or outside guest memory")
            }
            DmaError::BadArray { dmas, num } => write!(
                f,
                "DMA array of {num} descriptors at {dmas:#x} is misaligned, too long or outside \
                 guest memory"
            ),
            DmaError::BadIrq { irq } => write!(f, "BIND_DMA irq {irq} is not in 0..=31"),
            DmaError::Bad(b) => write!(f, "{b}"),
            DmaError::SenderMemory => write!(f, "guest memory failed during a DMA copy"),
        }
    }
}

fn check_key(key: u64, limit: u64) -> Result<(), DmaError> {
    if !key.is_multiple_of(8) || !in_memory(key, 8, limit) {
        return Err(DmaError::BadKey { key });
    }
    Ok(())
}

/// `BIND_DMA(key, dmas, num << 8 | irq)`. Returns the hypercall's result (1 bound/unbound, 0 not).
pub fn bind(
    t: &mut Table,
    h: &mut dyn DmaHost,
    key: u64,
    dmas: u64,
    arg: u64,
) -> Result<u64, DmaError> {
    let (num, irq) = (arg >> 8, arg & 0xff);
    if irq > MAX_IRQ {
        return Err(DmaError::BadIrq { irq });
    }
    let (guest, handle) = h.me();
    let limit = h.memories(handle).0.limit();
    check_key(key, limit)?;
    if irq == 0 {
        return Ok(match t.unbind(guest, key, dmas) {
            Some(b) => {
                h.release(b.id);
                1
            }
            None => 0,
        });
    }
    let bytes = num.saturating_mul(DMA_SIZE);
    if num == 0 || num > MAX_ARRAY || !dmas.is_multiple_of(8) || !in_memory(dmas, bytes, limit) {
        return Err(DmaError::BadArray { dmas, num });
    }
    let id = h.identify(key).map_err(|_| DmaError::BadKey { key })?;
    let b = Binding {
        guest,
        handle,
        key,
        id,
        dmas,
        num: num as u16,
        irq: irq as u8,
        next: 0,
    };
    Ok(match t.bind(b) {
        BindResult::Bound => {
            h.hold(id);
            1
        }
        BindResult::Full => 0,
    })
}

/// What `SEND_DMA` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The key is private: the launcher handles it (`read()` returns a DMA record).
    ToLauncher,
    /// Delivered to another guest: this many bytes.
    Delivered(u64),
    /// Nobody could take it (no binding, or no free buffer): the sender's `used_len` is 0.
    Dropped,
}

/// `SEND_DMA(key, dma)`.
pub fn send(t: &mut Table, h: &mut dyn DmaHost, key: u64, dma: u64) -> Result<Sent, DmaError> {
    let (me, handle) = h.me();
    check_key(key, h.memories(handle).0.limit())?;
    let id = h.identify(key).map_err(|_| DmaError::BadKey { key })?;
    // Checked for every send, including those the launcher will handle: a bad descriptor is the
    // sender's fault wherever it was going.
    let src = Dma::fetch(h.memories(handle).0, dma).map_err(DmaError::Bad)?;
    if id == KeyId::Private {
        return Ok(Sent::ToLauncher);
    }
    let set_sender_used = |h: &mut dyn DmaHost, n: u32| {
        h.memories(handle)
            .0
            .write(dma, &n.to_le_bytes())
            .map_err(|_| DmaError::SenderMemory)
    };
    let Some(i) = t.receiver(me, id) else {
        set_sender_used(h, 0)?;
        return Ok(Sent::Dropped);
    };
    let Some(b) = t.get(i).copied() else {
        set_sender_used(h, 0)?;
        return Ok(Sent::Dropped);
    };
    let (own, peer) = h.memories(b.handle);
    let Some(peer) = peer else {
        // The receiver's memory is gone (its launcher is exiting): as if nobody were bound.
        set_sender_used(h, 0)?;
        return Ok(Sent::Dropped);
    };
    let entry = match free_entry(peer, &b) {
        Ok(e) => e,
        Err(bad) => {
            // Its own buffers are broken: the receiver dies, the sender just sees a drop.
            h.condemn(b.handle, bad);
            set_sender_used(h, 0)?;
            return Ok(Sent::Dropped);
        }
    };
    let Some((gpa, dst)) = entry else {
        h.raise(b.handle, b.irq); // make it refill
        set_sender_used(h, 0)?;
        return Ok(Sent::Dropped);
    };
    let total = match copy_sections(own, &src, peer, &dst) {
        Ok(n) => n,
        Err(Side::Sender) => return Err(DmaError::SenderMemory),
        Err(Side::Receiver) => {
            h.condemn(b.handle, BadDma::Descriptor { gpa });
            set_sender_used(h, 0)?;
            return Ok(Sent::Dropped);
        }
    };
    if total == 0 && src.total() != 0 {
        set_sender_used(h, 0)?;
        return Ok(Sent::Dropped);
    }
    let used = (total.min(u64::from(u32::MAX)) as u32).to_le_bytes();
    if let Some(peer) = h.memories(b.handle).1 {
        if peer.write(gpa, &used).is_err() {
            h.condemn(b.handle, BadDma::Descriptor { gpa });
        }
    }
    if let Some(bm) = t.get_mut(i) {
        bm.next = (entry_index(&b, gpa) + 1) % b.num.max(1);
    }
    set_sender_used(h, total as u32)?;
    h.raise(b.handle, b.irq);
    Ok(Sent::Delivered(total))
}

/// `GETDMA` found no binding of this guest at the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotBound;

/// The launcher's `GETDMA(key)`: claim a free receive buffer of this guest's binding at `key`.
/// `Ok(None)`: bound, but every buffer is in use.
pub fn get(t: &mut Table, h: &mut dyn DmaHost, key: u64) -> Result<Option<u64>, NotBound> {
    let (me, handle) = h.me();
    let i = t.own(me, key).ok_or(NotBound)?;
    let b = t.get(i).copied().ok_or(NotBound)?;
    let own = h.memories(handle).0;
    match free_entry(own, &b) {
        Ok(Some((gpa, _))) => {
            // Claim it: the irq number in used_len (so the launcher learns it, and nobody else
            // takes the buffer meanwhile).
            let _ = own.write(gpa, &u32::from(b.irq).to_le_bytes());
            if let Some(bm) = t.get_mut(i) {
                bm.next = (entry_index(&b, gpa) + 1) % b.num.max(1);
            }
            Ok(Some(gpa))
        }
        Ok(None) | Err(_) => Ok(None),
    }
}

/// Drop every binding of the guest (it is going away).
pub fn forget(t: &mut Table, h: &mut dyn DmaHost) {
    let (me, _) = h.me();
    t.unbind_all(me, |b| h.release(b.id));
}
