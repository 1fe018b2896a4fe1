//! The guest's devices (docs/abi.md §3): where they live in guest-physical memory, the device page
//! that describes them, and the dispatch of the guest's DMA to the launcher.
//!
//! Layout: RAM `[0, mem)`, the **device page** at `mem`, then one page per device. The device page
//! holds a 24-byte descriptor per device, in command-line order (`--block`, `--tunnet`,
//! `--sharenet` as given), the console last; device `i` has irq `i + 1` and the page at
//! `mem + (1 + i) * 4096`. e820 marks everything from `mem` up as reserved.
//!
//! At run time the launcher sees the guest's I/O in two ways:
//! - a `DMA` record `[dma, key]` from `read()`: the guest sent to a key in its private memory, so
//!   one of our devices serves it ([`Devices::dma`] routes it by key: console output, a block
//!   request, a frame for the TAP device);
//! - a break (`read()` fails with `EAGAIN`): the waker thread saw input on stdin or a TAP device,
//!   and [`Devices::service`] hands it to the guest with `LHREQ_GETDMA` and `LHREQ_IRQ`.
//!
//! Everything read from guest memory is untrusted: descriptors go through
//! [`lg_core::dma::Dma::fetch`] (every section inside guest memory and inside one page) and block
//! requests through [`block::parse_request`] before any of it is used. A guest that sends nonsense
//! gets an error result or a dropped frame, and the launcher prints one warning; it never stops
//! the launcher.

pub mod block;
pub mod console;
pub mod net;

use std::collections::HashSet;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use rustix::io::Errno;

use crate::bootparams::{self, E820Entry};
use crate::cli::{block_device_name, Config, DeviceSpec};
use crate::device::{Device, LguestDevice};
use crate::error::Error;
use crate::memory::GuestMemory;
use crate::run::{Io, Outcome};
use crate::signals::StopSignal;
use crate::waker::{Plan, Waker};
use lg_core::abi::dev::{kind, Descriptor, DESC_SIZE, MAX_DEVICES};
use lg_core::abi::PAGE_SIZE;
use lg_core::dma::{in_memory, Dma, GuestMem, MemFault};

use self::block::Block;
use self::console::Console;
use self::net::Net;

/// Where the devices are in guest-physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of RAM: the device page is at this address.
    pub mem_bytes: u64,
    /// Devices, the console included.
    pub count: usize,
}

impl Layout {
    /// The layout for `config`'s devices plus the console.
    pub fn for_config(config: &Config) -> Layout {
        Layout {
            mem_bytes: config.mem_bytes,
            count: config.devices.len() + 1,
        }
    }

    /// Guest-physical address of the device page.
    pub fn device_page(&self) -> u64 {
        self.mem_bytes
    }

    /// Guest-physical address of device `index`'s (one-page) area.
    pub fn area(&self, index: usize) -> u64 {
        self.mem_bytes + (1 + index as u64) * PAGE_SIZE
    }

    /// Pages above RAM: the device page and one per device.
    pub fn device_pages(&self) -> u64 {
        1 + self.count as u64
    }

    /// End of guest-physical memory.
    pub fn top(&self) -> u64 {
        self.mem_bytes + self.device_pages() * PAGE_SIZE
    }

    /// `pfn_limit` for `LHREQ_INITIALIZE`: RAM and every device page.
    pub fn pfn_limit(&self) -> u64 {
        self.top() / PAGE_SIZE
    }

    /// The guest's memory map: RAM, then the device pages as reserved.
    pub fn e820(&self) -> Vec<E820Entry> {
        bootparams::memory_map(self.mem_bytes, self.top())
    }

    /// Device `index`'s virtual irq (irq 0 is the clock).
    pub fn irq(index: usize) -> u32 {
        index as u32 + 1
    }
}

/// The device page's bytes: the descriptors in order, then zeros (type 0: no device).
pub fn device_page(descriptors: &[Descriptor]) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    for (slot, d) in page
        .chunks_exact_mut(DESC_SIZE)
        .zip(descriptors.iter().take(MAX_DEVICES))
    {
        slot.copy_from_slice(&d.to_bytes());
    }
    page
}

// ------------------------------------------------------------------------------------------------
// Guest memory as the devices see it, and the DMA helpers.
// ------------------------------------------------------------------------------------------------

/// Guest memory (RAM and device pages) for the DMA helpers.
pub struct MemView<'m>(pub &'m GuestMemory);

impl GuestMem for MemView<'_> {
    fn limit(&self) -> u64 {
        self.0.limit()
    }

    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.0.read(gpa, buf).map_err(|_| MemFault)
    }

    fn write(&mut self, gpa: u64, buf: &[u8]) -> Result<(), MemFault> {
        self.0.write(gpa, buf).map_err(|_| MemFault)
    }
}

/// The bytes of a (checked) descriptor's sections, in order.
pub fn gather(mem: &mut dyn GuestMem, dma: &Dma) -> Result<Vec<u8>, MemFault> {
    let mut data = vec![0u8; dma.total() as usize];
    let mut at = 0usize;
    for (addr, len) in dma.sections() {
        let len = usize::from(len);
        let chunk = data.get_mut(at..at + len).ok_or(MemFault)?;
        mem.read(addr, chunk)?;
        at += len;
    }
    Ok(data)
}

/// Copies `data` into a (checked) descriptor's sections, in order, until either runs out. Returns
/// the bytes placed.
pub fn scatter(mem: &mut dyn GuestMem, dma: &Dma, data: &[u8]) -> Result<usize, MemFault> {
    let mut at = 0usize;
    for (addr, len) in dma.sections() {
        if at == data.len() {
            break;
        }
        let n = usize::from(len).min(data.len() - at);
        mem.write(addr, &data[at..at + n])?;
        at += n;
    }
    Ok(at)
}

/// Sets `used_len` of the descriptor at `gpa` (the guest's, so only if it lies in guest memory).
pub fn set_used(mem: &mut dyn GuestMem, gpa: u64, used: u32) -> Result<(), MemFault> {
    if !gpa.is_multiple_of(8) || !in_memory(gpa, 4, mem.limit()) {
        return Err(MemFault);
    }
    mem.write(gpa, &used.to_le_bytes())
}

/// A little-endian `u32` of guest memory.
pub fn read_u32(mem: &mut dyn GuestMem, gpa: u64) -> Result<u32, MemFault> {
    let mut b = [0u8; 4];
    mem.read(gpa, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// `LHREQ_IRQ`; a guest that is gone (`ENOENT`) is not an error here: the next `read()` reports it.
pub fn raise(dev: &mut dyn LguestDevice, irq: u32) -> Result<(), Error> {
    match dev.irq(irq) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(errno) => Err(Error::DeviceRequest {
            request: "LHREQ_IRQ",
            errno,
        }),
    }
}

/// `LHREQ_GETDMA`: `Ok(None)` when the guest has no free buffer there (`ENOENT`: nothing bound,
/// or the guest is gone; `ENOSPC`: all in use).
pub fn claim(dev: &mut dyn LguestDevice, key: u64) -> Result<Option<u64>, Error> {
    match dev.get_dma(key) {
        Ok(gpa) => Ok(Some(gpa)),
        Err(Errno::NOENT | Errno::NOSPC) => Ok(None),
        Err(errno) => Err(Error::DeviceRequest {
            request: "LHREQ_GETDMA",
            errno,
        }),
    }
}

// ------------------------------------------------------------------------------------------------
// The devices.
// ------------------------------------------------------------------------------------------------

/// One device of the guest.
pub enum Dev {
    Block(Block),
    Net(Net),
    Console(Console),
}

/// What a DMA record's key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Console output (key = the console's page).
    ConsoleOutput,
    /// A block request (key = the block device's page).
    Block,
    /// A frame for the host (key = slot 0 of a tunnet page): write it to the TAP device.
    TapTransmit,
}

impl Dev {
    fn descriptor(&self, layout: &Layout, index: usize) -> Descriptor {
        let (kind, features) = match self {
            Dev::Block(_) => (kind::BLOCK, 0),
            Dev::Net(n) => (kind::NET, n.features()),
            Dev::Console(_) => (kind::CONSOLE, 0),
        };
        Descriptor {
            kind,
            features,
            status: 0,
            num_pages: 1,
            irq: Layout::irq(index),
            pfn: layout.area(index) / PAGE_SIZE,
        }
    }

    /// Whether this device serves DMA sent to `key`, and how.
    pub fn serves(&self, key: u64) -> Option<Route> {
        match self {
            Dev::Console(c) if key == c.page => Some(Route::ConsoleOutput),
            Dev::Block(b) if key == b.page => Some(Route::Block),
            Dev::Net(n) if n.is_tap() && key == net::slot_key(n.page, net::HOST_SLOT) => {
                Some(Route::TapTransmit)
            }
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Dev::Block(b) => b.describe(),
            Dev::Net(n) => n.describe(),
            Dev::Console(c) => c.describe(),
        }
    }
}

/// The device serving `key`, if any: its index and what the key is for.
pub fn route(devices: &[Dev], key: u64) -> Option<(usize, Route)> {
    devices
        .iter()
        .enumerate()
        .find_map(|(i, d)| d.serves(key).map(|r| (i, r)))
}

/// What the waker thread watches, by its index in the waker's fd list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    ConsoleInput,
    Net(usize),
}

/// All the guest's devices, the console last.
pub struct Devices<'m> {
    mem: Box<dyn GuestMem + 'm>,
    layout: Layout,
    list: Vec<Dev>,
    waker: Option<Waker>,
    watches: Vec<Watch>,
    /// Devices whose DMA descriptor problems were reported already.
    warned: HashSet<usize>,
}

impl<'m> Devices<'m> {
    /// Opens every device `config` asks for (block files, TAP device, sharenet files, in
    /// command-line order) plus the console, and writes the device page and the devices' pages
    /// into `memory`, which must have been mapped with `layout`'s device pages.
    pub fn open(
        config: &Config,
        layout: Layout,
        memory: &'m GuestMemory,
    ) -> Result<Devices<'m>, Error> {
        let mut list = Vec::with_capacity(layout.count);
        let mut blocks = 0;
        for (index, spec) in config.devices.iter().enumerate() {
            let page = layout.area(index);
            let irq = Layout::irq(index);
            list.push(match spec {
                DeviceSpec::Block(path) => {
                    let name = block_device_name(blocks);
                    blocks += 1;
                    Dev::Block(Block::open(path, name, page, irq)?)
                }
                DeviceSpec::Tunnet(tunnet) => Dev::Net(Net::tap(tunnet, page, irq)?),
                DeviceSpec::Sharenet(path) => Dev::Net(Net::sharenet(path, page, irq, memory)?),
            });
        }
        let index = list.len();
        list.push(Dev::Console(Console::stdio(
            layout.area(index),
            Layout::irq(index),
        )));
        let mut devices = Devices::from_parts(Box::new(MemView(memory)), layout, list);
        devices.write_pages()?;
        Ok(devices)
    }

    /// Devices over any guest memory (the tests' fake one).
    pub fn from_parts(mem: Box<dyn GuestMem + 'm>, layout: Layout, list: Vec<Dev>) -> Devices<'m> {
        Devices {
            mem,
            layout,
            list,
            waker: None,
            watches: Vec::new(),
            warned: HashSet::new(),
        }
    }

    /// The device page, and what each device's own page starts with.
    fn write_pages(&mut self) -> Result<(), Error> {
        let descriptors: Vec<Descriptor> = self
            .list
            .iter()
            .enumerate()
            .map(|(i, d)| d.descriptor(&self.layout, i))
            .collect();
        let page = device_page(&descriptors);
        let gpa = self.layout.device_page();
        let fail = |_| {
            Error::GuestRange(crate::memory::OutOfRange {
                gpa,
                len: PAGE_SIZE,
                size: self.layout.top(),
            })
        };
        self.mem.write(gpa, &page).map_err(fail)?;
        for dev in &self.list {
            let done = match dev {
                Dev::Block(b) => b.init_page(self.mem.as_mut()),
                Dev::Net(n) => n.init_page(self.mem.as_mut()),
                Dev::Console(_) => Ok(()),
            };
            done.map_err(fail)?;
        }
        Ok(())
    }

    /// The device page's descriptors (for `--verbose` and the tests).
    pub fn descriptors(&self) -> Vec<Descriptor> {
        self.list
            .iter()
            .enumerate()
            .map(|(i, d)| d.descriptor(&self.layout, i))
            .collect()
    }

    /// `--verbose` lines: the device page and one line per device.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "device page: guest-physical {:#x} (pfn {:#x}), {} device{}; pfn limit {:#x}",
            self.layout.device_page(),
            self.layout.device_page() / PAGE_SIZE,
            self.list.len(),
            if self.list.len() == 1 { "" } else { "s" },
            self.layout.pfn_limit()
        )];
        for (index, (dev, d)) in self.list.iter().zip(self.descriptors()).enumerate() {
            lines.push(format!(
                "device {index}: {}, irq {}, pfn {:#x}: {}",
                kind::name(d.kind),
                d.irq,
                d.pfn,
                dev.describe()
            ));
        }
        lines
    }

    /// Once the guest exists: put a terminal on stdin in raw mode and start the waker thread that
    /// watches stdin and the TAP device.
    pub fn start(&mut self, device: &Device, warn: &mut dyn Write) -> Result<(), Error> {
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut watches = Vec::new();
        for (index, dev) in self.list.iter_mut().enumerate() {
            match dev {
                Dev::Console(c) => {
                    c.enter_raw_mode(warn);
                    if let Some(fd) = c.input_fd() {
                        fds.push(fd.try_clone_to_owned().map_err(Error::InputThread)?);
                        watches.push(Watch::ConsoleInput);
                    }
                }
                Dev::Net(n) => {
                    if let Some(fd) = n.input_fd() {
                        fds.push(fd.try_clone_to_owned().map_err(Error::InputThread)?);
                        watches.push(Watch::Net(index));
                    }
                }
                Dev::Block(_) => {}
            }
        }
        self.watches = watches;
        if fds.is_empty() {
            return Ok(());
        }
        let plan = self.plan();
        self.waker = Some(Waker::spawn(device.as_fd(), fds, plan).map_err(Error::InputThread)?);
        Ok(())
    }

    /// What the waker should watch next: every input still open, and a retry while console input
    /// waits for the guest to bind a buffer.
    fn plan(&self) -> Plan {
        let mut plan = Plan::default();
        for (bit, watch) in self.watches.iter().enumerate() {
            let open = match *watch {
                Watch::ConsoleInput => self.console().is_some_and(|c| c.input_open()),
                Watch::Net(i) => {
                    matches!(self.list.get(i), Some(Dev::Net(n)) if n.input_fd().is_some())
                }
            };
            if open {
                plan.watch |= 1 << bit;
            }
        }
        plan.retry = self.console().and_then(|c| c.retry());
        plan
    }

    fn console(&self) -> Option<&Console> {
        self.list.iter().find_map(|d| match d {
            Dev::Console(c) => Some(c),
            _ => None,
        })
    }

    fn warn_bad(&mut self, index: usize, warn: &mut dyn Write, what: &str) {
        if self.warned.insert(index) {
            let _ = writeln!(
                warn,
                "lguest: device {index}: {what} (further problems with this device are not reported)"
            );
        }
    }
}

impl Io for Devices<'_> {
    fn console(
        &mut self,
        bytes: &[u8],
        warn: &mut dyn Write,
        stop: &dyn Fn() -> Option<StopSignal>,
    ) {
        if let Some(Dev::Console(c)) = self.list.last_mut() {
            c.out.write(bytes, warn, stop);
        }
    }

    fn dma(
        &mut self,
        dev: &mut dyn LguestDevice,
        gpa: u64,
        key: u64,
        warn: &mut dyn Write,
        stop: &dyn Fn() -> Option<StopSignal>,
    ) -> Result<bool, Error> {
        let Some((index, route)) = route(&self.list, key) else {
            // Nobody took it, as with a shared key nobody has bound.
            let _ = set_used(self.mem.as_mut(), gpa, 0);
            return Ok(false);
        };
        let mem = self.mem.as_mut();
        let problem = match (route, self.list.get_mut(index)) {
            (Route::ConsoleOutput, Some(Dev::Console(c))) => c.output(mem, gpa, warn, stop),
            (Route::Block, Some(Dev::Block(b))) => b.handle(mem, dev, gpa)?,
            (Route::TapTransmit, Some(Dev::Net(n))) => n.transmit(mem, gpa),
            _ => None,
        };
        if let Some(problem) = problem {
            self.warn_bad(index, warn, &problem);
        }
        Ok(true)
    }

    fn service(
        &mut self,
        dev: &mut dyn LguestDevice,
        warn: &mut dyn Write,
    ) -> Result<Option<Outcome>, Error> {
        let mut outcome = None;
        for index in 0..self.list.len() {
            let mem = self.mem.as_mut();
            let problem = match self.list.get_mut(index) {
                Some(Dev::Console(c)) => {
                    if c.read_input(warn) {
                        outcome = Some(Outcome::ConsoleInterrupt);
                    }
                    c.deliver(mem, dev)?
                }
                Some(Dev::Net(n)) => n.receive(mem, dev, warn)?,
                _ => None,
            };
            if let Some(problem) = problem {
                self.warn_bad(index, warn, &problem);
            }
        }
        if outcome.is_none() {
            let plan = self.plan();
            if let Some(waker) = self.waker.as_mut() {
                waker.plan(plan).map_err(Error::InputThread)?;
            }
        }
        Ok(outcome)
    }
}

impl Drop for Devices<'_> {
    fn drop(&mut self) {
        // The waker first: it may be blocked in LHREQ_BREAK; then the terminal is restored (by the
        // console's own drop), then files close.
        self.waker = None;
    }
}

/// Something went wrong with one request; the device goes on. The text is for a warning line.
pub type Problem = Option<String>;

#[cfg(test)]
pub mod testing {
    //! A fake guest memory and a fake `/dev/lguest` for the device tests.
    use super::*;
    use crate::device::InitArgs;
    use std::collections::VecDeque;

    /// Guest memory in a `Vec`.
    pub struct FakeMem(pub Vec<u8>);

    impl FakeMem {
        pub fn new(bytes: u64) -> FakeMem {
            FakeMem(vec![0; bytes as usize])
        }

        pub fn put(&mut self, gpa: u64, bytes: &[u8]) {
            self.0[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
        }

        pub fn get(&self, gpa: u64, len: usize) -> &[u8] {
            &self.0[gpa as usize..gpa as usize + len]
        }

        pub fn u32_at(&self, gpa: u64) -> u32 {
            u32::from_le_bytes(self.get(gpa, 4).try_into().expect("4 bytes"))
        }

        /// Writes a `struct lguest_dma` at `gpa` with these sections and `used_len`.
        pub fn put_dma(&mut self, gpa: u64, used_len: u32, sections: &[(u64, u16)]) {
            let mut raw = [0u8; 168];
            raw[0..4].copy_from_slice(&used_len.to_le_bytes());
            for (i, (addr, len)) in sections.iter().enumerate() {
                raw[8 + 8 * i..16 + 8 * i].copy_from_slice(&addr.to_le_bytes());
                raw[136 + 2 * i..138 + 2 * i].copy_from_slice(&len.to_le_bytes());
            }
            self.put(gpa, &raw);
        }
    }

    impl GuestMem for FakeMem {
        fn limit(&self) -> u64 {
            self.0.len() as u64
        }

        fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
            let start = usize::try_from(gpa).map_err(|_| MemFault)?;
            let src = self
                .0
                .get(start..start.checked_add(buf.len()).ok_or(MemFault)?)
                .ok_or(MemFault)?;
            buf.copy_from_slice(src);
            Ok(())
        }

        fn write(&mut self, gpa: u64, buf: &[u8]) -> Result<(), MemFault> {
            let start = usize::try_from(gpa).map_err(|_| MemFault)?;
            let dst = self
                .0
                .get_mut(start..start.checked_add(buf.len()).ok_or(MemFault)?)
                .ok_or(MemFault)?;
            dst.copy_from_slice(buf);
            Ok(())
        }
    }

    /// A `/dev/lguest` whose GETDMA answers come from a script; it records the requests.
    #[derive(Default)]
    pub struct FakeLguest {
        pub getdma: VecDeque<Result<u64, Errno>>,
        pub keys: Vec<u64>,
        pub irqs: Vec<u32>,
        pub breaks: usize,
    }

    impl LguestDevice for FakeLguest {
        fn initialize(&mut self, _args: &InitArgs) -> Result<(), Error> {
            Ok(())
        }

        fn read_record(&mut self, _buf: &mut [u8]) -> Result<usize, Errno> {
            Err(Errno::INVAL)
        }

        fn get_dma(&mut self, key: u64) -> Result<u64, Errno> {
            self.keys.push(key);
            self.getdma.pop_front().unwrap_or(Err(Errno::NOENT))
        }

        fn irq(&mut self, irq: u32) -> Result<(), Errno> {
            self.irqs.push(irq);
            Ok(())
        }

        fn break_off(&mut self) -> Result<(), Errno> {
            self.breaks += 1;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use lg_core::dma::BadDma;

    const MIB: u64 = 1 << 20;

    #[test]
    fn layout_puts_devices_above_ram() {
        let l = Layout {
            mem_bytes: 64 * MIB,
            count: 3,
        };
        assert_eq!(l.device_page(), 0x400_0000);
        assert_eq!(l.area(0), 0x400_1000);
        assert_eq!(l.area(2), 0x400_3000);
        assert_eq!(l.top(), 0x400_4000);
        assert_eq!(l.pfn_limit(), 0x4004);
        assert_eq!(Layout::irq(0), 1);
        assert_eq!(Layout::irq(2), 3);
        let e820 = l.e820();
        assert_eq!(e820.len(), 2);
        assert_eq!(
            e820[1],
            E820Entry {
                addr: 0x400_0000,
                size: 0x4000,
                kind: lg_core::abi::zero_page::E820_RESERVED
            }
        );
    }

    #[test]
    fn descriptor_bytes() {
        let d = Descriptor {
            kind: kind::NET,
            features: 3 | 0x4000,
            status: 0,
            num_pages: 1,
            irq: 2,
            pfn: 0x4002,
        };
        assert_eq!(
            d.to_bytes(),
            [2, 0, 3, 0x40, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x40, 0, 0, 0, 0, 0, 0]
        );
        let page = device_page(&[d, Descriptor::default(), d]);
        assert_eq!(page.len(), 4096);
        assert_eq!(&page[..24], &d.to_bytes());
        assert!(page[24..48].iter().all(|&b| b == 0));
        assert_eq!(&page[48..72], &d.to_bytes());
        assert!(page[72..].iter().all(|&b| b == 0));
        // Never more than 16.
        let many = device_page(&[d; 20]);
        assert!(many[16 * 24..].iter().all(|&b| b == 0));
    }

    /// A block file, a TAP device (over a socket pair) and the console: the device page in
    /// command-line order, the console last, each page initialised.
    #[test]
    fn device_page_in_memory() {
        let dir = tempdir("page");
        let img = dir.join("disk.img");
        std::fs::write(&img, vec![0u8; 3 * 512 + 100]).expect("write");
        let layout = Layout {
            mem_bytes: 64 * 4096,
            count: 3,
        };
        let block = Block::open(&img, "lgba".into(), layout.area(0), 1).expect("open");
        let (tap, _host) = net::tests::fake_tap(layout.area(1), 2);
        let (console, _) = console::tests::console(layout.area(2), 3, None);
        let mem = FakeMem::new(layout.top());
        let mut devices = Devices::from_parts(
            Box::new(mem),
            layout,
            vec![Dev::Block(block), Dev::Net(tap), Dev::Console(console)],
        );
        devices.write_pages().expect("pages");
        let mut page = vec![0u8; 4096];
        devices
            .mem
            .read(layout.device_page(), &mut page)
            .expect("read");
        let want = [
            (kind::BLOCK, 0u16, 1u32, 0x41u64),
            (kind::NET, 1, 2, 0x42),
            (kind::CONSOLE, 0, 3, 0x43),
        ];
        for (i, (k, features, irq, pfn)) in want.into_iter().enumerate() {
            let d = &page[24 * i..24 * i + 24];
            assert_eq!(u16::from_le_bytes([d[0], d[1]]), k, "device {i}");
            assert_eq!(u16::from_le_bytes([d[2], d[3]]), features, "device {i}");
            assert_eq!(u16::from_le_bytes([d[6], d[7]]), 1, "device {i}");
            assert_eq!(u32::from_le_bytes(d[8..12].try_into().unwrap()), irq);
            assert_eq!(u64::from_le_bytes(d[16..24].try_into().unwrap()), pfn);
        }
        assert!(page[72..].iter().all(|&b| b == 0));
        // The block page says how big the disk is (the partial sector does not count).
        let mut sectors = [0u8; 8];
        devices
            .mem
            .read(layout.area(0) + 24, &mut sectors)
            .expect("read");
        assert_eq!(u64::from_le_bytes(sectors), 3);
        // The TAP's MAC is slot 0, promiscuous.
        let mut slot = [0u8; 8];
        devices.mem.read(layout.area(1), &mut slot).expect("read");
        assert_eq!(slot, [0x02, 0, 0, 0, 0, 0x01, 1, 0]);
        let lines = devices.describe();
        assert_eq!(
            lines[0],
            "device page: guest-physical 0x40000 (pfn 0x40), 3 devices; pfn limit 0x44"
        );
        assert_eq!(
            lines[1],
            format!(
                "device 0: block, irq 1, pfn 0x41: lgba: '{}', 3 sectors (1536 bytes)",
                img.display()
            )
        );
        assert_eq!(
            lines[3],
            "device 2: console, irq 3, pfn 0x43: output to stdout (no stdin)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn routing_by_key() {
        let layout = Layout {
            mem_bytes: 64 * 4096,
            count: 4,
        };
        let dir = tempdir("route");
        let img = dir.join("disk.img");
        std::fs::write(&img, vec![0u8; 512]).expect("write");
        let block = Block::open(&img, "lgba".into(), layout.area(0), 1).expect("open");
        let (tap, _host) = net::tests::fake_tap(layout.area(1), 2);
        let share = net::tests::fake_share(layout.area(2), 3, &dir.join("lan"));
        let (console, _) = console::tests::console(layout.area(3), 4, None);
        let list = vec![
            Dev::Block(block),
            Dev::Net(tap),
            Dev::Net(share),
            Dev::Console(console),
        ];
        let p = |i| layout.area(i);
        assert_eq!(route(&list, p(0)), Some((0, Route::Block)));
        // Slot 0 of the tunnet page is the host: frames for it go to the TAP device.
        assert_eq!(route(&list, p(1)), Some((1, Route::TapTransmit)));
        // The guest's own slot (receive only) and other slots are nobody's.
        assert_eq!(route(&list, p(1) + 8), None);
        assert_eq!(route(&list, p(1) + 8 * 7), None);
        // A sharenet page is lg.ko's business, never the launcher's.
        assert_eq!(route(&list, p(2)), None);
        assert_eq!(route(&list, p(2) + 8), None);
        assert_eq!(route(&list, p(3)), Some((3, Route::ConsoleOutput)));
        // Console input is bound at page + 8: only GETDMA uses it.
        assert_eq!(route(&list, p(3) + 8), None);
        assert_eq!(route(&list, 0), None);
        assert_eq!(route(&list, layout.device_page()), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gathering_sections() {
        let mut mem = FakeMem::new(4 * 4096);
        mem.put(0x1ffa, b"hello ");
        mem.put(0x3000, b"world");
        mem.put_dma(
            0x100,
            0,
            &[(0x1ffa, 6), (0x3000, 5), (0x2000, 0), (0x2800, 9)],
        );
        let dma = Dma::fetch(&mut mem, 0x100).expect("good");
        assert_eq!(dma.total(), 11);
        assert_eq!(gather(&mut mem, &dma).expect("gather"), b"hello world");
        // Scatter stops at the end of the data or of the sections.
        assert_eq!(scatter(&mut mem, &dma, b"HELLO").expect("scatter"), 5);
        assert_eq!(mem.get(0x1ffa, 6), b"HELLO ");
        assert_eq!(
            scatter(&mut mem, &dma, b"0123456789abcdef").expect("scatter"),
            11
        );
        assert_eq!(mem.get(0x3000, 5), b"6789a");
        set_used(&mut mem, 0x100, 11).expect("used");
        assert_eq!(mem.u32_at(0x100), 11);
        assert!(set_used(&mut mem, 0x101, 1).is_err());
        assert!(set_used(&mut mem, 4 * 4096, 1).is_err());
    }

    #[test]
    fn bad_sections_are_rejected() {
        let mut mem = FakeMem::new(4 * 4096);
        // Crosses a page boundary.
        mem.put_dma(0x100, 0, &[(0x1000, 16), (0x1ff0, 17)]);
        assert_eq!(
            Dma::fetch(&mut mem, 0x100),
            Err(BadDma::Section {
                index: 1,
                addr: 0x1ff0,
                len: 17
            })
        );
        // Leaves guest memory.
        mem.put_dma(0x100, 0, &[(4 * 4096 - 8, 8), (4 * 4096, 1)]);
        assert!(matches!(
            Dma::fetch(&mut mem, 0x100),
            Err(BadDma::Section { index: 1, .. })
        ));
        // Wraps around.
        mem.put_dma(0x100, 0, &[(u64::MAX - 1, 4)]);
        assert!(Dma::fetch(&mut mem, 0x100).is_err());
        // The descriptor itself outside memory or misaligned.
        assert!(Dma::fetch(&mut mem, 4 * 4096 - 100).is_err());
        assert!(Dma::fetch(&mut mem, 0x104).is_err());
        // Sections after a zero length are not looked at.
        mem.put_dma(0x100, 0, &[(0x1000, 4), (0, 0), (u64::MAX, 100)]);
        assert_eq!(Dma::fetch(&mut mem, 0x100).expect("good").total(), 4);
    }

    /// A DMA to a key nobody serves is reported as such; console output reaches stdout.
    #[test]
    fn dispatch_through_io() {
        let layout = Layout {
            mem_bytes: 4 * 4096,
            count: 1,
        };
        let (console, out) = console::tests::console(layout.area(0), 1, None);
        let mut mem = FakeMem::new(layout.top());
        mem.put(0x2000, b"boot ok\n");
        mem.put_dma(0x1000, 0, &[(0x2000, 8)]);
        let mut devices = Devices::from_parts(Box::new(mem), layout, vec![Dev::Console(console)]);
        let mut dev = FakeLguest::default();
        let mut warn = Vec::new();
        let never = || None;
        assert!(devices
            .dma(&mut dev, 0x1000, layout.area(0), &mut warn, &never)
            .expect("ok"));
        let dropped = 0x1800;
        devices.mem.write(dropped, &[9, 9, 9, 9]).expect("write");
        assert!(!devices
            .dma(&mut dev, dropped, 0x3000, &mut warn, &never)
            .expect("ok"));
        assert_eq!(read_u32(devices.mem.as_mut(), dropped), Ok(0));
        assert_eq!(out.bytes(), b"boot ok\n");
        assert_eq!(read_u32(devices.mem.as_mut(), 0x1000), Ok(8));
        assert!(warn.is_empty());
    }

    /// The real thing: a config with two block files around a sharenet file, in real guest
    /// memory with its device pages.
    #[test]
    fn open_from_a_config() {
        let dir = tempdir("open");
        let (a, lan, b) = (dir.join("a.img"), dir.join("lan"), dir.join("b.img"));
        std::fs::write(&a, vec![0u8; 1 << 20]).expect("write");
        std::fs::write(&b, vec![0u8; 4096]).expect("write");
        let config = Config {
            mem_bytes: 4 * MIB,
            kernel: "vmlinux".into(),
            devices: vec![
                DeviceSpec::Block(a.clone()),
                DeviceSpec::Sharenet(lan.clone()),
                DeviceSpec::Block(b.clone()),
            ],
            initrd: None,
            cmdline: String::new(),
            verbose: false,
        };
        let layout = Layout::for_config(&config);
        assert_eq!(layout.count, 4);
        let memory =
            GuestMemory::with_device_pages(config.mem_bytes, layout.device_pages()).expect("map");
        let devices = Devices::open(&config, layout, &memory).expect("open");
        let mut page = vec![0u8; 4096];
        memory.read(4 * MIB, &mut page).expect("read");
        let kinds: Vec<u16> = (0..5)
            .map(|i| u16::from_le_bytes([page[24 * i], page[24 * i + 1]]))
            .collect();
        assert_eq!(
            kinds,
            [kind::BLOCK, kind::NET, kind::BLOCK, kind::CONSOLE, 0]
        );
        // The sharenet's features: its slot and NOCSUM.
        assert_eq!(u16::from_le_bytes([page[26], page[27]]), 1 | 0x4000);
        let lines = devices.describe();
        assert!(lines[1].contains("lgba: "), "{lines:?}");
        assert!(
            lines[1].ends_with("2048 sectors (1048576 bytes)"),
            "{lines:?}"
        );
        assert_eq!(
            lines[2],
            format!(
                "device 1: net, irq 2, pfn 0x402: sharenet '{}' slot 1",
                lan.display()
            )
        );
        assert!(lines[3].contains("lgbb: "), "{lines:?}");
        assert!(lines[4].starts_with("device 3: console, irq 4, pfn 0x404: "));
        // The sharenet page is the file's.
        memory
            .write(layout.area(1) + 8, &[0x02, 0, 0, 0, 0, 0x11, 0, 0])
            .expect("write");
        let file = std::fs::read(&lan).expect("read");
        assert_eq!(file[13], 0x11);
        drop(devices);
        // Our slot is cleared when the device goes.
        let file = std::fs::read(&lan).expect("read");
        assert_eq!(&file[8..16], &[0; 8]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    pub fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lguest-devices-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
