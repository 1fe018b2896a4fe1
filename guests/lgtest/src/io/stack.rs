//! smoltcp on the network driver: the `phy::Device` glue, time from the TSC, static socket
//! buffers (no heap), and waiting: when smoltcp has nothing to do before some deadline, the
//! one-shot timer is armed for it and the guest `HALT`s until then or until a frame arrives.

use super::net::{Net, Rx, Tx};
use crate::{hcall, irq, shared};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use smoltcp::iface::{Config, Interface, PollResult, SocketSet, SocketStorage};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

// ------------------------------------------------------------------------------------------------
// Time.
// ------------------------------------------------------------------------------------------------

/// 0 unknown, 1 the TSC works at ring 1, 2 it does not (use GET_WALLCLOCK).
static TSC_OK: AtomicU8 = AtomicU8::new(0);

/// Microseconds on a monotonic clock (the TSC scaled by the host's `tsc_khz`; the wall clock if
/// the TSC cannot be used).
pub fn now_us() -> u64 {
    let khz = shared::tsc_khz().load(Relaxed);
    let ok = match TSC_OK.load(Relaxed) {
        0 => {
            let ok = khz != 0 && crate::tests::bench::rdtsc_works();
            TSC_OK.store(if ok { 1 } else { 2 }, Relaxed);
            ok
        }
        v => v == 1,
    };
    if ok {
        (u128::from(crate::tests::bench::rdtsc()) * 1000 / u128::from(khz)) as u64
    } else {
        hcall::wallclock_ns() / 1000
    }
}

pub fn now() -> Instant {
    Instant::from_micros(now_us() as i64)
}

/// Sleep about `us` microseconds (the timer and HALT; device irqs may end it early).
pub fn nap(us: u64) {
    irq::disable();
    hcall::set_clockevent(us.max(1) * 1000);
    hcall::halt();
    irq::disable();
}

/// `X.YY` for `num / den` (rates and averages in the output).
pub struct Ratio(pub u64, pub u64);

impl core::fmt::Display for Ratio {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let x100 = u128::from(self.0) * 100 / u128::from(self.1.max(1));
        write!(f, "{}.{:02}", x100 / 100, x100 % 100)
    }
}

// ------------------------------------------------------------------------------------------------
// Static buffers.
// ------------------------------------------------------------------------------------------------

/// A static handed out once as `&'static mut` (socket buffers: smoltcp wants plain slices).
pub struct Take<T> {
    taken: AtomicBool,
    cell: UnsafeCell<T>,
}

// SAFETY: the contents are reachable only through the one `&'static mut` that `take` hands out.
unsafe impl<T: Send> Sync for Take<T> {}

impl<T> Take<T> {
    pub const fn new(v: T) -> Take<T> {
        Take {
            taken: AtomicBool::new(false),
            cell: UnsafeCell::new(v),
        }
    }

    /// The contents, the first time; a second call is a bug and ends the mode.
    #[allow(
        clippy::mut_from_ref,
        reason = "handed out once: `taken` guards the only `&mut` there will ever be"
    )]
    pub fn take(&'static self) -> &'static mut T {
        if self.taken.swap(true, Relaxed) {
            super::die(format_args!("a static buffer was taken twice"));
        }
        // SAFETY: `taken` was false, so no other reference exists or ever will.
        unsafe { &mut *self.cell.get() }
    }
}

static SOCKETS: Take<[SocketStorage<'static>; 8]> = Take::new([SocketStorage::EMPTY; 8]);

// ------------------------------------------------------------------------------------------------
// The device.
// ------------------------------------------------------------------------------------------------

/// The interface as smoltcp sees it.
pub struct Phy {
    pub net: Net,
}

pub struct RxTok<'a> {
    rx: &'a mut Rx,
}

pub struct TxTok<'a> {
    tx: &'a mut Tx,
}

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        // `receive` only makes a token when a good frame is waiting; if it vanished anyway, an
        // empty frame is something smoltcp drops.
        let mut f = Some(f);
        match self.rx.recv(|frame| f.take().map(|f| f(frame))) {
            Some(Some(r)) => r,
            _ => match f.take() {
                Some(f) => f(&[]),
                None => super::die(format_args!("net: receive token consumed twice")),
            },
        }
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        self.tx.send(len, f)
    }
}

impl phy::Device for Phy {
    type RxToken<'a> = RxTok<'a>;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxTok<'_>, TxTok<'_>)> {
        if !self.net.rx.ready() {
            return None;
        }
        Some((
            RxTok {
                rx: &mut self.net.rx,
            },
            TxTok {
                tx: &mut self.net.tx,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxTok<'_>> {
        Some(TxTok {
            tx: &mut self.net.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = lg_core::abi::dev::net::FRAME_MAX;
        caps.max_burst_size = None;
        if self.net.nocsum {
            caps.checksum = ChecksumCapabilities::ignored();
        }
        caps
    }
}

// ------------------------------------------------------------------------------------------------
// The stack.
// ------------------------------------------------------------------------------------------------

pub struct Stack {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub phy: Phy,
}

impl Stack {
    /// An interface on `net` with address `ip/prefix`.
    pub fn up(net: Net, ip: [u8; 4], prefix: u8) -> Stack {
        let mut phy = Phy { net };
        let mac = EthernetAddress(phy.net.mac);
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = shared::guest_id().load(Relaxed) ^ now_us();
        let mut iface = Interface::new(config, &mut phy, now());
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(
                Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]).into(),
                prefix,
            ));
        });
        Stack {
            iface,
            sockets: SocketSet::new(&mut SOCKETS.take()[..]),
            phy,
        }
    }

    /// Process what arrived and send what is due. True if a socket's state may have changed.
    pub fn poll(&mut self) -> bool {
        self.iface.poll(now(), &mut self.phy, &mut self.sockets) == PollResult::SocketStateChanged
    }

    /// Sleep until smoltcp has something to do, a frame arrives, or `max` passes.
    pub fn wait(&mut self, max: Duration) {
        let delay = self
            .iface
            .poll_delay(now(), &self.sockets)
            .map_or(max, |d| d.min(max));
        if delay == Duration::ZERO {
            return;
        }
        irq::disable();
        // With the virtual IF off, a frame that arrives after this check leaves its irq pending,
        // and HALT returns at once.
        if self.phy.net.rx.ready() {
            return;
        }
        hcall::set_clockevent(delay.total_micros().max(1) * 1000);
        hcall::halt();
        irq::disable();
    }
}
