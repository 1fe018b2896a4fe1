//! I/O (docs/abi.md §3): the device page, the drivers and the modes that use them.
//!
//! At boot [`init`] finds the device page (the first e820 reserved range above RAM), maps the
//! whole device region into the direct map with 4 KiB pages (the boot tables' 2 MiB pages stop
//! at the end of RAM; a guest of more than 1 GiB gets a window of its own), acknowledges every device it understands and takes the console, whose
//! driver then carries all output (`println!`) by `SEND_DMA`. The other drivers are taken by the
//! modes that use them:
//!
//! - `console.rs`: output, and input in buffers bound at the console page + 8;
//! - `block.rs`: `lgba`, `lgbb`, ... (one request in flight, synchronous);
//! - `net.rs`: a network interface on a tunnet or sharenet page (slots, MACs, 8 receive
//!   buffers), and `stack.rs` puts smoltcp on it;
//! - `block_modes.rs`, `net_modes.rs`, `hostile.rs`: the modes.
//!
//! Device interrupts arrive through the ordinary virtual irq path (`irq.rs`), which calls
//! [`on_irq`] for every pending device irq; the drivers mostly poll their descriptors and use
//! the irq to wake from `HALT`.

pub mod block;
mod block_modes;
pub mod console;
pub mod dma;
mod hostile;
pub mod net;
mod net_modes;
pub mod stack;

use crate::{hcall, paging};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use lg_core::abi::dev::{kind, status, Descriptor, DESC_SIZE, MAX_DEVICES, STATUS_OFFSET};
use lg_core::abi::{NR_IRQS, PAGE_SIZE};
use lgtest::devices::usable;
use lgtest::mode::Mode;
use lgtest::pagetable::Level;
use lgtest::{bootparams, phys_to_virt, DIRECT_MAP_SIZE};

/// The device region `[AREA_START, AREA_END)` (0, 0: none found); its first page is the
/// device page. `AREA_END` is also the end of guest memory.
static AREA_START: AtomicU64 = AtomicU64::new(0);
static AREA_END: AtomicU64 = AtomicU64::new(0);
/// Kernel virtual address of `AREA_START`.
static AREA_VA: AtomicU64 = AtomicU64::new(0);

/// Which driver owns each irq (for [`on_irq`]).
static IRQ_OWNER: [AtomicU8; NR_IRQS as usize] =
    [const { AtomicU8::new(OWNER_NONE) }; NR_IRQS as usize];
const OWNER_NONE: u8 = 0;
const OWNER_CONSOLE: u8 = 1;
const OWNER_NET: u8 = 2;
const OWNER_BLOCK: u8 = 3;

/// Where the device region is mapped when it lies beyond the direct map (a guest of more than
/// 1 GiB): a PML4 slot of its own, far from the image and the switcher.
const FAR_WINDOW: u64 = 0xffff_c000_0000_0000;
/// The most device memory we map (the launcher's 16 devices need 17 pages).
const MAX_REGION: u64 = 1 << 20;

/// Find and map the device region, acknowledge the devices, take the console.
pub fn init(zero_page: &[u8]) {
    let Some((start, end)) = bootparams::device_area(zero_page) else {
        return;
    };
    if !start.is_multiple_of(PAGE_SIZE) || end <= start || end - start > MAX_REGION {
        println!("io: device region [{start:#x}, {end:#x}) is unusable: no devices");
        return;
    }
    // The direct map when it reaches that far (then device memory is at phys_to_virt like RAM),
    // the far window otherwise.
    let va = if end <= DIRECT_MAP_SIZE {
        phys_to_virt(start)
    } else {
        FAR_WINDOW
    };
    if paging::in_reserved(va, end - start) {
        println!("io: the device window {va:#x} is in the switcher's range: no devices");
        return;
    }
    let root = crate::boot::boot_pml4_gpa();
    let mut pa = start;
    while pa < end {
        let flags = lgtest::pagetable::PRESENT
            | lgtest::pagetable::WRITABLE
            | lgtest::pagetable::NO_EXECUTE;
        match paging::map(root, va + (pa - start), Level::Pte, pa | flags) {
            Ok(_) | Err(paging::MapError::AlreadyMapped) => {}
            Err(e) => {
                println!("io: cannot map device page {pa:#x}: {e:?}: no devices");
                return;
            }
        }
        pa += PAGE_SIZE;
    }
    AREA_VA.store(va, Relaxed);
    AREA_START.store(start, Relaxed);
    AREA_END.store(end, Relaxed);
    for dev in devices() {
        dev.set_status(status::ACKNOWLEDGE);
    }
    if let Some(con) = find(kind::CONSOLE, 0) {
        console::init(con);
    }
}

/// End of guest memory (RAM and device pages), or 0 if there is no device region.
pub fn memory_top() -> u64 {
    AREA_END.load(Relaxed)
}

/// One device of the device page.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    pub index: usize,
    pub desc: Descriptor,
}

impl Device {
    /// Guest-physical address of its (first) page.
    pub fn area(&self) -> u64 {
        self.desc.area()
    }

    /// OR `bits` into the descriptor's status.
    pub fn set_status(&self, bits: u16) {
        let gpa = device_page_gpa() + (self.index * DESC_SIZE) as u64 + STATUS_OFFSET;
        let now = mem::read_u16(gpa);
        mem::write_u16(gpa, now | bits);
    }

    pub fn status(&self) -> u16 {
        mem::read_u16(device_page_gpa() + (self.index * DESC_SIZE) as u64 + STATUS_OFFSET)
    }
}

fn device_page_gpa() -> u64 {
    AREA_START.load(Relaxed)
}

/// Descriptor `i` of the device page, if it describes a device we can use.
fn descriptor(i: usize) -> Option<Descriptor> {
    let start = AREA_START.load(Relaxed);
    if start == 0 || i >= MAX_DEVICES {
        return None;
    }
    let mut raw = [0u8; DESC_SIZE];
    mem::read(start + (i * DESC_SIZE) as u64, &mut raw);
    let d = Descriptor::parse(&raw);
    usable(&d, start + PAGE_SIZE, AREA_END.load(Relaxed)).then_some(d)
}

/// Every usable device, in device-page order.
pub fn devices() -> impl Iterator<Item = Device> {
    (0..MAX_DEVICES).filter_map(|index| descriptor(index).map(|desc| Device { index, desc }))
}

/// The `nth` device of type `kind` (0: the first).
pub fn find(kind: u16, nth: usize) -> Option<Device> {
    devices().filter(|d| d.desc.kind == kind).nth(nth)
}

/// `io: device N: ...` for each device (the I/O modes print it first).
pub fn print_devices() {
    for d in devices() {
        println!(
            "io: device {}: {} irq {} pfn {:#x} features {:#x} status {:#x}",
            d.index,
            kind::name(d.desc.kind),
            d.desc.irq,
            d.desc.pfn,
            d.desc.features,
            d.status()
        );
    }
}

fn set_owner(irq: u32, owner: u8) {
    if let Some(o) = IRQ_OWNER.get(irq as usize) {
        o.store(owner, Relaxed);
    }
}

/// A device irq is pending (called by the irq handler, virtual IF off).
pub fn on_irq(irq: u32) {
    // Network and block drivers poll their descriptors: their irqs only wake a HALT.
    if IRQ_OWNER.get(irq as usize).map(|o| o.load(Relaxed)) == Some(OWNER_CONSOLE) {
        console::on_irq();
    }
}

/// The I/O modes.
pub fn run(mode: Mode) -> ! {
    crate::traps::install_exceptions();
    crate::traps::install_irq();
    match mode {
        Mode::ConsoleEcho => console::echo_mode(),
        Mode::BlockWritePattern
        | Mode::BlockReadChecksum
        | Mode::BlockAckLoop
        | Mode::BlockEdges => block_modes::run(mode),
        Mode::NetEcho
        | Mode::NetPing
        | Mode::NetTcpServer
        | Mode::NetTcpClient
        | Mode::NetBcast => net_modes::run(mode),
        _ => hostile::run(mode),
    }
}

/// Fail an I/O mode: a `FAIL:` line and a crash with the same text.
pub fn die(args: core::fmt::Arguments<'_>) -> ! {
    println!("FAIL: {args}");
    crate::crash_fmt(args)
}

/// The end of a mode that worked.
pub fn done() -> ! {
    hcall::shutdown()
}

/// Device memory (the device region, mapped by [`init`]) by guest-physical address: volatile
/// accesses, checked against the region (anything else is a driver bug and crashes).
pub mod mem {
    use super::{AREA_END, AREA_START, AREA_VA};
    use core::sync::atomic::Ordering::Relaxed;

    fn check(gpa: u64, len: u64, align: u64) -> u64 {
        let (start, end) = (AREA_START.load(Relaxed), AREA_END.load(Relaxed));
        if start == 0 || gpa < start || gpa.saturating_add(len) > end || !gpa.is_multiple_of(align)
        {
            crate::crash_fmt(format_args!(
                "io: device memory access at {gpa:#x} outside the device region"
            ));
        }
        AREA_VA.load(Relaxed) + (gpa - start)
    }

    macro_rules! accessors {
        ($($read:ident, $write:ident: $t:ty;)*) => {$(
            pub fn $read(gpa: u64) -> $t {
                let va = check(gpa, size_of::<$t>() as u64, align_of::<$t>() as u64);
                // SAFETY: mapped device memory (checked), naturally aligned.
                unsafe { core::ptr::read_volatile(va as *const $t) }
            }
            pub fn $write(gpa: u64, v: $t) {
                let va = check(gpa, size_of::<$t>() as u64, align_of::<$t>() as u64);
                // SAFETY: mapped device memory (checked), naturally aligned; nothing in Rust
                // refers to it.
                unsafe { core::ptr::write_volatile(va as *mut $t, v) }
            }
        )*};
    }

    accessors! {
        read_u8, _write_u8: u8;
        read_u16, write_u16: u16;
        read_u32, write_u32: u32;
        read_u64, write_u64: u64;
    }

    pub fn read(gpa: u64, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = read_u8(gpa + i as u64);
        }
    }
}

/// Record which driver handles `irq`.
pub fn claim_irq_console(irq: u32) {
    set_owner(irq, OWNER_CONSOLE);
}
pub fn claim_irq_net(irq: u32) {
    set_owner(irq, OWNER_NET);
}
pub fn claim_irq_block(irq: u32) {
    set_owner(irq, OWNER_BLOCK);
}

/// The kernel command line (`key=value` parameters of the I/O modes).
static CMDLINE: AtomicU64 = AtomicU64::new(0);
static CMDLINE_LEN: AtomicU64 = AtomicU64::new(0);

pub fn set_cmdline(cmdline: &'static [u8]) {
    CMDLINE.store(cmdline.as_ptr() as u64, Relaxed);
    CMDLINE_LEN.store(cmdline.len() as u64, Relaxed);
}

pub fn cmdline() -> &'static [u8] {
    let (ptr, len) = (CMDLINE.load(Relaxed), CMDLINE_LEN.load(Relaxed));
    if ptr == 0 {
        return &[];
    }
    // SAFETY: set from a `&'static [u8]` by `set_cmdline`.
    unsafe { core::slice::from_raw_parts(ptr as *const u8, len as usize) }
}

/// A `key=value` parameter of the command line.
pub fn param(key: &str) -> Option<&'static [u8]> {
    lgtest::args::value(cmdline(), key)
}

/// A numeric parameter, or `default` if absent; a malformed one ends the mode.
pub fn param_u64(key: &str, default: u64) -> u64 {
    match param(key) {
        None => default,
        Some(v) => lgtest::args::parse_u64(v).unwrap_or_else(|| {
            die(format_args!(
                "bad {key}={}",
                core::str::from_utf8(v).unwrap_or("?")
            ))
        }),
    }
}
