//! DMA modes a hostile or broken guest might run (docs/abi.md §3). Each either gets the guest
//! killed by the host with a reason (then it never returns: a guest still running afterwards
//! prints `UNEXPECTED: survived <mode>` and crashes), or must be survived, and ends with
//! `ok: survived <mode>`:
//!
//! | mode | expected |
//! |---|---|
//! | `dma-outside-memory` | `SEND_DMA` with a section beyond guest memory: killed |
//! | `dma-cross-page` | a section crossing a page boundary: killed |
//! | `dma-huge-len` | a section of 65535 bytes: killed |
//! | `dma-irq-32` | `BIND_DMA` with irq 32: killed |
//! | `dma-zero-len` | empty descriptors sent to the console and to an unserved key: survives |
//! | `dma-overlap` | overlapping sections sent to the console: survives (the bytes are printed) |
//! | `dma-bind-33` | 32 bindings accepted, the 33rd refused with 0, all undone: survives |
//! | `dma-bind-top` | a key in the last 8 bytes of guest memory, an array ending there: survives |
//! | `dma-storm peer=N\|any` | `SEND_DMA` to a sharenet peer for 5 s: survives, prints sends/s |
//! | `dma-bind-and-die` | binds receive buffers on a sharenet, waits for a frame, crashes |
//! | `dma-rebind-storm` | rebinds and rewrites its receive buffers for 6 s under a storm: survives |
//! | `dma-rx-outside-memory [wait=halt]` | receive buffers beyond memory: the first sender condemns it: killed |

use super::dma::{self, Dma, DmaBuf};
use super::net::{self, Net};
use super::stack::{nap, now_us, Ratio};
use super::{die, done, param};
use crate::{hcall, shared};
use core::sync::atomic::Ordering::Relaxed;
use lg_core::abi::dev::kind;
use lg_core::abi::dev::net::{slot_key, FRAME_MAX, SLOTS};
use lgtest::mode::Mode;
use lgtest::virt_to_phys;

/// Far beyond any guest memory.
const BEYOND_MEMORY: u64 = 1 << 40;
/// An unused Ethertype (IEEE 802 local experimental): peers' stacks drop the storm's frames.
const ETHERTYPE_STORM: u16 = 0x88b5;

static BUF: DmaBuf<8192> = DmaBuf::new();
static KEYS: DmaBuf<4096> = DmaBuf::new();
static ARRAY: [Dma; 1] = [Dma::NEW];
static ALT: [Dma; 8] = [Dma::NEW; 8];
static ALT_BUF: DmaBuf<{ 8 * 2048 }> = DmaBuf::new();
static SMALL: [Dma; 1] = [Dma::NEW];

pub fn run(mode: Mode) -> ! {
    match mode {
        Mode::DmaOutsideMemory => send_one(&[(BEYOND_MEMORY, 16)]),
        Mode::DmaCrossPage => send_one(&[(buf_gpa() + 4000, 200)]),
        Mode::DmaHugeLen => send_one(&[(buf_gpa(), 65535)]),
        Mode::DmaIrq32 => {
            // SAFETY: the hostile action; ARRAY is a static descriptor nothing else uses.
            unsafe { dma::bind_raw(key_gpa(0), ARRAY[0].gpa(), 1, 32) };
        }
        Mode::DmaZeroLen => zero_len(),
        Mode::DmaOverlap => overlap(),
        Mode::DmaBind33 => bind_33(),
        Mode::DmaBindTop => bind_top(),
        Mode::DmaStorm => storm(),
        Mode::DmaBindAndDie => bind_and_die(),
        Mode::DmaRebindStorm => rebind_storm(),
        Mode::DmaRxOutsideMemory => rx_outside_memory(),
        _ => die(format_args!("lgtest: {} is not a DMA mode", mode.name())),
    }
    println!("UNEXPECTED: survived {}", mode.name());
    crate::crash_fmt(format_args!("UNEXPECTED: survived {}", mode.name()))
}

fn survived(mode: Mode) -> ! {
    println!("ok: survived {}", mode.name());
    done()
}

fn buf_gpa() -> u64 {
    virt_to_phys(BUF.va(0))
}

/// Private keys in our own RAM (the launcher serves none of them).
fn key_gpa(i: u64) -> u64 {
    virt_to_phys(KEYS.va(0)) + 8 * (i % 512)
}

/// The console's page, where a send reaches the launcher (which prints what it gets).
fn console_key() -> u64 {
    super::find(kind::CONSOLE, 0).map_or_else(|| key_gpa(0), |d| d.area())
}

/// Send one descriptor with these sections to the console.
fn send_one(sections: &[(u64, u16)]) {
    let d = Dma::new();
    for (i, &(a, l)) in sections.iter().enumerate() {
        d.set_section(i, a, l);
    }
    dma::send(console_key(), &d);
}

fn zero_len() -> ! {
    let d = Dma::new();
    let to_console = dma::send(console_key(), &d);
    let to_nobody = dma::send(key_gpa(7), &d);
    // Zero-length sections with addresses: the list ends at the first 0, so nothing is checked.
    d.set_section(1, BEYOND_MEMORY, 100);
    let ended = dma::send(console_key(), &d);
    println!("dma-zero-len: used_len {to_console} (console), {to_nobody} (unserved key), {ended} (list ended early)");
    if (to_console, to_nobody, ended) != (0, 0, 0) {
        die(format_args!(
            "dma-zero-len: a send of nothing reported bytes"
        ));
    }
    survived(Mode::DmaZeroLen)
}

fn overlap() -> ! {
    const TEXT: &[u8] = b"dma-overlap: 0123456789abcdefghijklmnopqrstuvwxyz\n";
    BUF.write(0, TEXT);
    let g = buf_gpa();
    let d = Dma::new();
    // "dma-overlap: " + "0123456789" + "0123456789abc...xyz\n": the second and third sections
    // overlap the same bytes.
    d.set_section(0, g, 13);
    d.set_section(1, g + 13, 10);
    d.set_section(2, g + 13, (TEXT.len() - 13) as u16);
    let used = dma::send(console_key(), &d);
    println!("dma-overlap: console took {used} bytes");
    // And a block device, if there is one: a write whose sections overlap.
    if let Some(b) = super::block::Block::open(0) {
        let w = Dma::new();
        w.set_section(0, g, 512);
        w.set_section(1, g + 256, 512);
        let (result, used) = b.raw(super::block::WRITE, 0, 1024, &w);
        println!("dma-overlap: block write of overlapping sections: result {result} used {used}");
    }
    survived(Mode::DmaOverlap)
}

fn bind_33() -> ! {
    let arr = ARRAY[0].gpa();
    let mut accepted = 0u64;
    let mut refused_at = None;
    for i in 0..33 {
        // SAFETY: ARRAY is a static descriptor nothing else uses; its one section is empty.
        let r = unsafe { dma::bind_raw(key_gpa(i), arr, 1, 5) };
        match r {
            1 => accepted += 1,
            0 => {
                refused_at = Some(i);
                break;
            }
            other => die(format_args!("dma-bind-33: BIND_DMA returned {other}")),
        }
    }
    println!(
        "dma-bind-33: {accepted} bindings accepted, refused at bind {}",
        refused_at.map_or(0, |i| i + 1)
    );
    if accepted != 32 || refused_at != Some(32) {
        die(format_args!(
            "dma-bind-33: want 32 accepted and the 33rd refused"
        ));
    }
    let mut undone = 0;
    for i in 0..32 {
        // SAFETY: unbinding only makes the host forget the array.
        undone += unsafe { dma::bind_raw(key_gpa(i), arr, 0, 0) };
    }
    // SAFETY: as above: bind and unbind once more, now that there is room again.
    let again = unsafe { dma::bind_raw(key_gpa(40), arr, 1, 5) };
    // SAFETY: as above.
    let gone = unsafe { dma::bind_raw(key_gpa(40), arr, 0, 0) };
    // SAFETY: as above: unbinding what is not bound returns 0.
    let twice = unsafe { dma::bind_raw(key_gpa(40), arr, 0, 0) };
    println!(
        "dma-bind-33: {undone} unbound, bind after {again}, unbind {gone}, unbind again {twice}"
    );
    if (undone, again, gone, twice) != (32, 1, 1, 0) {
        die(format_args!("dma-bind-33: unexpected results"));
    }
    survived(Mode::DmaBind33)
}

fn bind_top() -> ! {
    let top = super::memory_top();
    if top == 0 {
        die(format_args!(
            "dma-bind-top: no device region, so no known top"
        ));
    }
    let arr = ARRAY[0].gpa();
    // SAFETY: ARRAY is a static descriptor nothing else uses.
    let at_top = unsafe { dma::bind_raw(top - 8, arr, 1, 5) };
    // SAFETY: unbinding only makes the host forget the array.
    let un1 = unsafe { dma::bind_raw(top - 8, arr, 0, 0) };
    // An array whose one descriptor ends exactly at the top of guest memory (the console's page:
    // the launcher's memory, nothing of ours).
    // SAFETY: the array is in the launcher's device page, which Rust never refers to.
    let arr_top = unsafe { dma::bind_raw(key_gpa(1), top - 168, 1, 5) };
    // SAFETY: as above.
    let un2 = unsafe { dma::bind_raw(key_gpa(1), top - 168, 0, 0) };
    // A send to the last 8 bytes: a private key no device serves.
    let used = dma::send(top - 8, &Dma::new());
    println!(
        "dma-bind-top: top {top:#x}: key at top-8 {at_top}/{un1}, array at top-168 {arr_top}/{un2}, send to top-8 used {used}"
    );
    if (at_top, un1, arr_top, un2) != (1, 1, 1, 1) {
        die(format_args!(
            "dma-bind-top: a valid binding at the top was refused"
        ));
    }
    survived(Mode::DmaBindTop)
}

// ------------------------------------------------------------------------------------------------
// Against a sharenet peer.
// ------------------------------------------------------------------------------------------------

fn open_net() -> Net {
    let Some(n) = Net::open(0) else {
        super::print_devices();
        die(format_args!("no usable network device"))
    };
    super::print_devices();
    println!(
        "dma: interface up in slot {} mac {}",
        n.slot,
        core::str::from_utf8(&lgtest::devices::mac_text(&n.mac)).unwrap_or("?")
    );
    n
}

/// The slot to storm: `peer=N`, or `peer=any` (default): the first other non-empty slot,
/// waited for up to 30 s.
fn pick_peer(n: &Net) -> u16 {
    let want = param("peer").unwrap_or(b"any");
    if want != b"any" {
        return lgtest::args::parse_u64(want)
            .and_then(|v| u16::try_from(v).ok())
            .filter(|&v| u64::from(v) < SLOTS)
            .unwrap_or_else(|| die(format_args!("bad peer=")));
    }
    let start = now_us();
    loop {
        if let Some(p) = net::first_peer(n.page, n.slot) {
            return p;
        }
        if now_us() - start > 30_000_000 {
            die(format_args!("no peer appeared on the network"));
        }
        nap(20_000);
    }
}

fn storm() -> ! {
    let mut n = open_net();
    let peer = pick_peer(&n);
    let (mac, _) = net::slot(n.page, peer);
    let key = slot_key(n.page, peer);
    // A frame for the peer's MAC with an Ethertype nobody speaks.
    let mut frame = [0u8; 128];
    frame[..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&n.mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_STORM.to_be_bytes());
    BUF.write(0, &frame);
    let d = Dma::new();
    let _ = d.describe(BUF.va(0), frame.len());
    println!(
        "dma-storm: storming slot {peer} ({}) for 5 s",
        core::str::from_utf8(&lgtest::devices::mac_text(&mac)).unwrap_or("?")
    );
    let (start, x0) = (now_us(), shared::exits().load(Relaxed));
    let (mut sends, mut delivered) = (0u64, 0u64);
    let mut elapsed = 0;
    while elapsed < 5_000_000 {
        for _ in 0..64 {
            if dma::send(key, &d) as usize == frame.len() {
                delivered += 1;
            }
            sends += 1;
        }
        // Our own buffers: whatever the peer sent us goes back unread.
        while n.rx.recv(|_| ()).is_some() {}
        elapsed = now_us() - start;
    }
    let exits = shared::exits().load(Relaxed) - x0;
    println!(
        "dma-storm: {sends} sends in {} ms: {} sends/s, {delivered} delivered, {} not taken, {} exits per send",
        elapsed / 1000,
        sends * 1_000_000 / elapsed.max(1),
        sends - delivered,
        Ratio(exits, sends)
    );
    n.close();
    survived(Mode::DmaStorm)
}

fn bind_and_die() -> ! {
    let n = open_net();
    println!(
        "dma-bind-and-die: {} receive buffers bound at slot {}, waiting for a frame",
        net::RX_BUFFERS,
        n.slot
    );
    let start = now_us();
    while !n.rx.ready() && now_us() - start < 30_000_000 {
        nap(10_000);
    }
    println!(
        "dma-bind-and-die: {}, crashing with the buffers bound",
        if n.rx.ready() {
            "a frame arrived"
        } else {
            "no frame came"
        }
    );
    hcall::crash(b"dma-bind-and-die: crashing with receive buffers bound")
}

fn rebind_storm() -> ! {
    let mut n = open_net();
    let key = n.key();
    let rx = net::rx_descriptors();
    for (i, d) in ALT.iter().enumerate() {
        let _ = d.arm(ALT_BUF.va(i * 2048), FRAME_MAX);
    }
    let _ = SMALL[0].arm(ALT_BUF.va(0), 64);
    println!("dma-rebind-storm: rebinding at slot {} for 6 s", n.slot);
    let start = now_us();
    let (mut rebinds, mut frames, mut i) = (0u64, 0u64, 0u64);
    let mut on_alt = false;
    while now_us() - start < 6_000_000 {
        match i % 4 {
            // Swap the whole array for another one.
            0 => {
                let (from, to): (&'static [Dma], &'static [Dma]) =
                    if on_alt { (&ALT, rx) } else { (rx, &ALT) };
                dma::unbind(key, from);
                if !dma::bind(key, to, n.irq) {
                    die(format_args!("dma-rebind-storm: rebinding refused"));
                }
                on_alt = !on_alt;
            }
            // Point the bound descriptors at the other buffers while frames may be arriving.
            1 => {
                let (arr, bufs): (&'static [Dma], &DmaBuf<{ 8 * 2048 }>) = if on_alt {
                    (&ALT, &ALT_BUF)
                } else {
                    (rx, &ALT_BUF)
                };
                for (k, d) in arr.iter().enumerate() {
                    let _ = d.describe(bufs.va(((k + i as usize) % 8) * 2048), FRAME_MAX);
                    d.set_used(0);
                }
            }
            // A second, tiny binding at the same key, bound and unbound.
            2 => {
                dma::bind(key, &SMALL, n.irq);
                dma::unbind(key, &SMALL);
            }
            // Give every buffer back unread.
            _ => {
                for d in rx.iter().chain(ALT.iter()) {
                    if d.used() != 0 {
                        frames += 1;
                        d.set_used(0);
                    }
                }
            }
        }
        rebinds += 1;
        i += 1;
        while n.rx.recv(|_| ()).is_some() {
            frames += 1;
        }
    }
    // Leave things as the driver had them, then take the interface down.
    if on_alt {
        dma::unbind(key, &ALT);
        dma::bind(key, rx, n.irq);
    }
    for (k, d) in rx.iter().enumerate() {
        let _ = d.arm(net::rx_buffer_va(k), FRAME_MAX);
    }
    println!("dma-rebind-storm: {rebinds} rebinds, {frames} frames taken in 6 s");
    n.close();
    survived(Mode::DmaRebindStorm)
}

fn rx_outside_memory() -> ! {
    let n = open_net();
    for d in net::rx_descriptors() {
        d.set_section(0, BEYOND_MEMORY, FRAME_MAX as u16);
        d.set_used(0);
    }
    // `wait=halt`: HALT with no timer, so only the host can end the wait (by waking and killing
    // us when a sender condemns our buffers). Otherwise 10 ms naps: any exit lets it kill us.
    let halt_only = param("wait") == Some(b"halt");
    println!(
        "dma-rx-outside-memory: receive buffers point beyond memory, waiting for a sender ({})",
        if halt_only {
            "HALT without a timer"
        } else {
            "10 ms naps"
        }
    );
    let start = now_us();
    while now_us() - start < 30_000_000 {
        if halt_only {
            crate::irq::disable();
            hcall::halt();
        } else {
            nap(10_000);
        }
    }
    let _ = n;
    die(format_args!(
        "dma-rx-outside-memory: nobody sent anything in 30 s"
    ))
}
