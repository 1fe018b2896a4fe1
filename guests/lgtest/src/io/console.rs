//! The console (type 1, docs/abi.md §3.4): output by `SEND_DMA` to its page `P` (synchronous:
//! when the call returns the launcher has written the bytes), input in buffers bound at `P + 8`
//! with the console's irq, which the launcher fills from its stdin.
//!
//! Until [`init`] has found the device, output goes through the early `CONSOLE_WRITE` hypercall.
//! Output needs no shared state (the descriptor lives on the caller's stack), so a trap handler
//! may print in the middle of another line's send.

use super::dma::{self, Dma, DmaBuf};
use super::Device;
use crate::{hcall, irq};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use lg_core::abi::dev::console::INPUT_OFFSET;
use lg_core::abi::dev::status;
use lg_core::abi::PAGE_SIZE;

/// The console page (its output key), 0 until the device is found.
static PAGE: AtomicU64 = AtomicU64::new(0);
static IRQ: AtomicU32 = AtomicU32::new(0);

pub fn init(dev: Device) {
    PAGE.store(dev.area(), Relaxed);
    IRQ.store(dev.desc.irq, Relaxed);
    dev.set_status(status::READY);
}

/// Write bytes to the console.
pub fn write(bytes: &[u8]) {
    let key = PAGE.load(Relaxed);
    if key == 0 {
        hcall::console_write(bytes);
        return;
    }
    // 15 pages starting anywhere need at most 16 sections.
    for chunk in bytes.chunks(15 * PAGE_SIZE as usize) {
        let d = Dma::new();
        if d.describe(chunk.as_ptr() as u64, chunk.len()).is_ok() {
            dma::send(key, &d);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Input.
// ------------------------------------------------------------------------------------------------

const IN_BUFS: usize = 2;
const IN_SIZE: usize = 256;
static IN_DMA: [Dma; IN_BUFS] = [Dma::NEW; IN_BUFS];
static IN_BUF: DmaBuf<{ IN_BUFS * IN_SIZE }> = DmaBuf::new();
/// Bytes received and not read yet (single producer: `drain`, with the virtual IF off; single
/// consumer: `read_byte`).
static RING: [AtomicU8; 1024] = [const { AtomicU8::new(0) }; 1024];
static HEAD: AtomicUsize = AtomicUsize::new(0);
static TAIL: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Bind the input buffers. False if there is no console or the host refused.
pub fn enable_input() -> bool {
    let (page, irq) = (PAGE.load(Relaxed), IRQ.load(Relaxed));
    if page == 0 {
        return false;
    }
    for (i, d) in IN_DMA.iter().enumerate() {
        if d.arm(IN_BUF.va(i * IN_SIZE), IN_SIZE).is_err() {
            return false;
        }
    }
    super::claim_irq_console(irq);
    dma::bind(page + INPUT_OFFSET, &IN_DMA, irq)
}

/// Move filled input buffers into the ring and give them back (virtual IF off).
fn drain() {
    for (i, d) in IN_DMA.iter().enumerate() {
        let n = (d.used() as usize).min(IN_SIZE);
        if n == 0 {
            continue;
        }
        let mut bytes = [0u8; IN_SIZE];
        IN_BUF.read(i * IN_SIZE, &mut bytes[..n]);
        for &b in &bytes[..n] {
            let head = HEAD.load(Relaxed);
            if head.wrapping_sub(TAIL.load(Relaxed)) >= RING.len() {
                DROPPED.fetch_add(1, Relaxed);
                continue;
            }
            RING[head % RING.len()].store(b, Relaxed);
            HEAD.store(head.wrapping_add(1), Relaxed);
        }
        d.set_used(0);
    }
}

/// The console's irq (virtual IF off).
pub fn on_irq() {
    drain();
}

/// The next input byte, if any.
pub fn read_byte() -> Option<u8> {
    irq::without(drain);
    let tail = TAIL.load(Relaxed);
    if tail == HEAD.load(Relaxed) {
        return None;
    }
    let b = RING[tail % RING.len()].load(Relaxed);
    TAIL.store(tail.wrapping_add(1), Relaxed);
    Some(b)
}

/// `console-echo`: print every input line as `console: got '<line>'`; a line `quit` ends it.
pub fn echo_mode() -> ! {
    if !enable_input() {
        super::die(format_args!("console: cannot bind input buffers"));
    }
    super::print_devices();
    println!("console: ready");
    let mut line = [0u8; 128];
    let mut len = 0;
    let mut lines = 0u64;
    loop {
        irq::disable();
        let Some(b) = read_byte() else {
            // Nothing yet: sleep until the console's irq (HALT enables interrupts).
            hcall::halt();
            continue;
        };
        if b == b'\n' || b == b'\r' {
            let text = core::str::from_utf8(line.get(..len).unwrap_or(&[])).unwrap_or("?");
            if len != 0 || b == b'\n' {
                println!("console: got '{text}'");
                lines += 1;
            }
            if text == "quit" {
                println!(
                    "console: {lines} lines, {} bytes dropped",
                    DROPPED.load(Relaxed)
                );
                super::done();
            }
            len = 0;
        } else if let Some(slot) = line.get_mut(len) {
            *slot = b;
            len += 1;
        }
    }
}
