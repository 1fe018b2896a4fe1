//! The guest ABI and the `/dev/lguest` protocol: every number here is documented in docs/abi.md and
//! is shared, from this one definition, by the module, the launcher and the guests.

/// Version of the whole ABI (launcher <-> module and guest <-> host). The launcher passes it in
/// `LHREQ_INITIALIZE`; the guest's ELF note carries it too. Bumped on any incompatible change.
pub const VERSION: u64 = 1;

/// Guest pages are always 4 KiB.
pub const PAGE_SIZE: u64 = 4096;
pub const PAGE_SHIFT: u32 = 12;

/// Number of virtual interrupt lines a guest has (the pending bitmap is one `u32`).
pub const NR_IRQS: u64 = 32;

/// Largest guest "physical" memory a launcher may declare, in pages (64 GiB). The original's
/// HIGHMEM64G limit is gone; this bound only keeps the page-frame arithmetic comfortably small.
pub const MAX_GUEST_PAGES: u64 = 1 << 24;

/// Requests written to `/dev/lguest`. Every write is one little-endian `u64` request word followed
/// by exactly [`Request::nr_args`] `u64` arguments; anything else is `-EINVAL`.
pub mod lhreq {
    /// `[abi_version, mem_base, pfn_limit, entry, cr3, boot_params]`: create the guest.
    pub const INITIALIZE: u64 = 0;
    /// `[key]`: find a free receive buffer bound by this guest at `key` (the launcher delivering
    /// input to the guest). Returns its guest-physical address.
    pub const GETDMA: u64 = 1;
    /// `[irq]`: make virtual interrupt `irq` (< 32) pending.
    pub const IRQ: u64 = 2;
    /// `[on]`: 1 = kick the running guest out to the launcher and block until a `BREAK 0`;
    /// 0 = release the blocked writer. The only request another thread may make.
    pub const BREAK: u64 = 3;
}

/// Largest write the module accepts, in bytes: the request word plus the most arguments any request
/// takes. Longer writes are refused before anything is copied.
pub const MAX_WRITE: usize = 8 * 7;

// ------------------------------------------------------------------------------------------------
// What read() on /dev/lguest returns: one record per call.
// ------------------------------------------------------------------------------------------------

/// Every successful `read()` returns one record: a `u64` record kind followed by its payload.
pub mod record {
    /// The guest wrote to the early console: payload = the bytes.
    pub const CONSOLE: u64 = 1;
    /// The guest sent DMA to a key only the launcher serves: payload = `[dma_gpa, key]` (u64s).
    pub const DMA: u64 = 2;
    /// The guest is gone for good: payload = `[exit kind (u64)]` then the reason as text.
    /// Every later `read()` returns the same record; writes fail with `ENOENT`.
    pub const DEAD: u64 = 3;
}

/// How a guest ended (the first payload word of a [`record::DEAD`] record).
pub mod exit {
    /// The guest asked to power off (`LHCALL_SHUTDOWN(SHUTDOWN_POWEROFF)`).
    pub const POWEROFF: u64 = 0;
    /// The guest asked to restart.
    pub const RESTART: u64 = 1;
    /// The guest reported a crash (`LHCALL_CRASH`): the reason is its message.
    pub const CRASHED: u64 = 2;
    /// The host killed the guest for breaking the ABI: the reason says how.
    pub const KILLED: u64 = 3;
}

/// Smallest buffer `read()` accepts (the largest fixed part of a record); `EINVAL` below it.
pub const MIN_READ: usize = 24;

// ------------------------------------------------------------------------------------------------
// Boot protocol.
// ------------------------------------------------------------------------------------------------

/// The ELF note a guest image must carry (in a `PT_NOTE` segment): name "lguest", type
/// [`NOTE_TYPE_BOOT`], descriptor [`BootNote`].
pub const NOTE_NAME: &[u8] = b"lguest";
pub const NOTE_TYPE_BOOT: u32 = 0x4c47_0001;

/// Descriptor of the boot note: everything the launcher needs to start the guest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootNote {
    /// Must equal [`VERSION`].
    pub abi_version: u64,
    /// Guest-virtual address of the first instruction.
    pub entry: u64,
    /// Guest-physical address of the initial top-level (PML4) page table, which the image itself
    /// contains: it must map `entry` and whatever the entry code touches first.
    pub cr3: u64,
}
static_assertions::const_assert_eq!(core::mem::size_of::<BootNote>(), 24);

/// Where the launcher puts the zero page (`struct boot_params`, 4 KiB), passed in RSI.
pub const ZERO_PAGE_GPA: u64 = 0x1000;
/// Where the launcher puts the kernel command line (NUL-terminated, at most [`CMDLINE_MAX`]).
pub const CMDLINE_GPA: u64 = 0x2000;
pub const CMDLINE_MAX: usize = 2048;
/// Guest physical memory below this is the launcher's (zero page, command line); images must
/// load above it.
pub const LOW_RESERVED: u64 = 0x10_0000;

/// Offsets inside the zero page, as in Linux's `struct boot_params` (arch/x86/include/uapi/asm/bootparam.h).
pub mod zero_page {
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    pub const E820_ENTRIES: usize = 0x1e8;
    pub const BOOT_FLAG: usize = 0x1fe;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const HARDWARE_SUBARCH: usize = 0x23c;
    pub const E820_TABLE: usize = 0x2d0;
    pub const E820_MAX_ENTRIES: usize = 128;
    /// `hardware_subarch` value: `X86_SUBARCH_LGUEST`.
    pub const SUBARCH_LGUEST: u32 = 1;
    /// e820 entry types.
    pub const E820_RAM: u32 = 1;
    pub const E820_RESERVED: u32 = 2;
}

// ------------------------------------------------------------------------------------------------
// Segments and frames.
// ------------------------------------------------------------------------------------------------

/// The selectors the guest kernel really runs with (ring 1): `CS = 0x81`, `SS = 0x89`. The guest
/// never needs to load them itself: the host sets them on every entry.
pub const GUEST_KERNEL_CS: u16 = (16 << 3) | 1;
pub const GUEST_KERNEL_DS: u16 = (17 << 3) | 1;
/// Guest user mode (ring 3) uses the ordinary Linux user selectors.
pub const USER_CS: u16 = 0x33;
pub const USER_DS: u16 = 0x2b;
/// What trap frames show for guest kernel mode: Linux's `__KERNEL_CS` / `__KERNEL_DS` (RPL 0,
/// because 64-bit Linux treats any RPL != 0 as user mode). The host translates both ways.
pub const FRAME_KERNEL_CS: u16 = 0x10;
pub const FRAME_KERNEL_DS: u16 = 0x18;
/// GDT slots the guest may fill with `LHCALL_LOAD_TLS` (Linux's GDT_ENTRY_TLS_MIN..=MAX).
pub const TLS_FIRST_ENTRY: u64 = 12;
pub const TLS_ENTRIES: u64 = 3;

/// RFLAGS bits.
pub mod rflags {
    pub const CF: u64 = 1 << 0;
    pub const FIXED: u64 = 1 << 1;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const IOPL: u64 = 3 << 12;
    pub const NT: u64 = 1 << 14;
    pub const RF: u64 = 1 << 16;
    pub const VM: u64 = 1 << 17;
    pub const AC: u64 = 1 << 18;
    pub const VIF: u64 = 1 << 19;
    pub const VIP: u64 = 1 << 20;
    pub const ID: u64 = 1 << 21;
    /// The bits a guest may control; everything else is forced by the host (IOPL=0, NT=0, ...).
    pub const GUEST_MASK: u64 = CF | PF | AF | ZF | SF | TF | DF | OF | AC | ID;
}

/// Exception vectors.
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
    pub const XM: u8 = 19;
    pub const VE: u8 = 20;
    pub const CP: u8 = 21;
    /// The hypercall vector (`int $0x1f`, usable from guest ring 1 only).
    pub const HYPERCALL: u8 = 0x1f;
    /// First vector that is never an exception.
    pub const FIRST_EXTERNAL: u8 = 32;

    /// Does the CPU push an error code for this exception vector?
    pub const fn has_error_code(v: u8) -> bool {
        matches!(v, 8 | 10..=14 | 17 | 21 | 29 | 30)
    }
}

// ------------------------------------------------------------------------------------------------
// Hypercalls: `int $0x1f` with the call number in RAX, arguments in RDX, RBX, RCX, RSI, RDI and
// the result (if any) in RAX. Every other register is preserved. Any invalid use kills the guest
// with a reason the launcher prints.
// ------------------------------------------------------------------------------------------------

pub mod hcall {
    /// Drain the async ring (any hypercall does; this one does nothing else).
    pub const FLUSH_ASYNC: u64 = 0;
    /// `(shared_page_gpa)`: must be the first call, exactly once.
    pub const INIT: u64 = 1;
    /// `(msg_gva, len)`: the guest crashed; `len` <= 1024.
    pub const CRASH: u64 = 2;
    /// `(index, descriptor)`: set one GDT entry; only the TLS slots 12..=14.
    pub const LOAD_GDT_ENTRY: u64 = 3;
    /// `(pml4_gpa)`: switch to another top-level page table (like `mov %cr3`, always flushing).
    pub const NEW_PGTABLE: u64 = 4;
    /// `(kind)`: [`FLUSH_USER`] or [`FLUSH_ALL`].
    pub const FLUSH_TLB: u64 = 5;
    /// `(vector, handler_gva, flags)`: set one entry of the guest's trap table ([`trap`]).
    pub const SET_TRAP: u64 = 6;
    /// `(sp0)`: the kernel stack used when a trap arrives from guest user mode.
    pub const SET_STACK: u64 = 7;
    /// `(kind)`: [`SHUTDOWN_POWEROFF`] or [`SHUTDOWN_RESTART`].
    pub const SHUTDOWN: u64 = 8;
    /// `(delta_ns)`: one-shot timer raising irq 0 after `delta_ns`; 0 cancels.
    pub const SET_CLOCKEVENT: u64 = 9;
    /// Set the virtual IF and wait until an interrupt is pending (`sti; hlt`).
    pub const HALT: u64 = 10;
    /// Returns the host's wall clock (CLOCK_REALTIME) in nanoseconds since the epoch.
    pub const GET_WALLCLOCK: u64 = 11;
    /// `(key, dmas_gpa, num << 8 | irq)`: bind receive buffers (I/O milestone).
    pub const BIND_DMA: u64 = 12;
    /// `(key, dma_gpa)`: send (I/O milestone).
    pub const SEND_DMA: u64 = 13;
    /// `(entry_gpa, value)`: the guest changed a PTE / PMD / PUD / P4D (PML4) entry.
    pub const SET_PTE: u64 = 14;
    pub const SET_PMD: u64 = 15;
    /// `(desc0, desc1, desc2)`: all three TLS descriptors at once.
    pub const LOAD_TLS: u64 = 16;
    pub const SET_PUD: u64 = 17;
    pub const SET_P4D: u64 = 18;
    /// `(va)`: drop the translation of one page.
    pub const FLUSH_ONE: u64 = 19;
    /// `(pml4_gpa)`: the guest freed this top-level table.
    pub const RELEASE_PGTABLE: u64 = 20;
    /// Return from a trap or interrupt: pops `RAX, RIP, CS, RFLAGS, RSP, SS` from the guest
    /// stack (the interrupted RAX first, since RAX carries the call number).
    pub const IRET: u64 = 21;
    /// Interrupts were re-enabled with some pending: deliver them now.
    pub const SEND_INTERRUPTS: u64 = 22;
    /// `(entry, rflags_mask)`: where guest-user `syscall` lands (CPU milestone).
    pub const SET_SYSCALL_ENTRY: u64 = 23;
    /// `(which, base)`: [`SEG_FS`], [`SEG_GS_KERNEL`] or [`SEG_GS_USER`].
    pub const SET_SEGMENT_BASE: u64 = 24;
    /// `(gva, len)`: early console output, `len` <= [`CONSOLE_MAX`].
    pub const CONSOLE_WRITE: u64 = 25;
    /// Numbers 32 and up are reserved for SMP (vCPU bring-up, IPIs).
    pub const NR_CALLS: u64 = 26;

    pub const FLUSH_USER: u64 = 0;
    pub const FLUSH_ALL: u64 = 1;
    pub const SHUTDOWN_POWEROFF: u64 = 0;
    pub const SHUTDOWN_RESTART: u64 = 1;
    pub const SEG_FS: u64 = 0;
    pub const SEG_GS_KERNEL: u64 = 1;
    pub const SEG_GS_USER: u64 = 2;
    pub const CONSOLE_MAX: u64 = 4096;
    pub const CRASH_MAX: u64 = 1024;
}

/// `LHCALL_SET_TRAP` flags.
pub mod trap {
    /// The entry is present (otherwise it is cleared).
    pub const PRESENT: u64 = 1 << 0;
    /// Trap gate: the virtual IF is left alone. Without it (interrupt gate) delivery clears it.
    pub const TRAP_GATE: u64 = 1 << 1;
    /// Lowest privilege that may raise this vector with `int3`/`into` (0 or 3), bits 2-3.
    pub const DPL_SHIFT: u32 = 2;
    pub const DPL_MASK: u64 = 3 << DPL_SHIFT;
    pub const VALID: u64 = PRESENT | TRAP_GATE | DPL_MASK;
}

// ------------------------------------------------------------------------------------------------
// The shared page: one page of guest memory per vCPU, registered by LHCALL_INIT. The guest can
// write any of it at any time; the host never trusts what it reads there.
// ------------------------------------------------------------------------------------------------

/// Slots in the async hypercall ring.
pub const ASYNC_RING: usize = 64;
/// `hcall_status` of a free ring slot; a guest sets 0 once the slot's arguments are written.
pub const ASYNC_EMPTY: u8 = 0xff;
pub const ASYNC_READY: u8 = 0;

/// One queued hypercall: the registers it would have had.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsyncCall {
    pub nr: u64,
    pub args: [u64; 5],
}

/// Feature bits in [`SharedPage::features`].
pub mod feature {
    /// RDFSBASE/WRFSBASE/RDGSBASE/WRGSBASE work (CR4.FSGSBASE).
    pub const FSGSBASE: u64 = 1 << 0;
    /// The host runs 5-level paging (the guest still uses 4 levels).
    pub const HOST_LA57: u64 = 1 << 1;
    /// RDPKRU/WRPKRU work (CR4.PKE).
    pub const PKU: u64 = 1 << 2;
    /// The TSC is invariant: `tsc_khz` is trustworthy.
    pub const STABLE_TSC: u64 = 1 << 3;
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SharedPage {
    /// Guest: the virtual interrupt flag, `0x200` (RFLAGS.IF) = enabled. Host clears it when it
    /// delivers through an interrupt gate and sets it in `HALT`.
    pub irq_enabled: u64,
    /// Host sets bit N when virtual irq N is pending; the guest clears bits it has handled.
    pub irq_pending: u64,
    /// Guest: bit N set = irq N masked (not delivered; stays pending).
    pub irq_blocked: u64,
    /// Host: the faulting address of the last page fault delivered.
    pub cr2: u64,
    /// Host: guest-virtual range `[start, end)` the guest must never map (the switcher).
    pub reserved_start: u64,
    pub reserved_end: u64,
    /// Host: paging depth the guest must use (4).
    pub paging_levels: u32,
    /// Host: the ABI version.
    pub abi_version: u32,
    /// Host: TSC frequency in kHz. [`feature::STABLE_TSC`] says whether it is also invariant
    /// (constant rate, not stopping in idle).
    pub tsc_khz: u64,
    /// Host: CLOCK_REALTIME in ns, refreshed at init and on every interrupt delivery.
    pub wallclock_ns: u64,
    /// Host: the real ring-1 selectors (informational; frames show RPL-0 ones).
    pub kernel_cs: u16,
    pub kernel_ds: u16,
    pub user_cs: u16,
    pub user_ds: u16,
    /// Host: [`feature`] bits.
    pub features: u64,
    /// Guest: `[noirq_start, noirq_end)`: RIPs where the host must not inject interrupts.
    pub noirq_start: u64,
    pub noirq_end: u64,
    /// Guest, read at `LHCALL_INIT`: the trap vector virtual interrupts are delivered through
    /// (32..=255; 0 means [`DEFAULT_IRQ_VECTOR`]).
    pub irq_vector: u64,
    /// Host: a number unique to this guest (MAC addresses, logs).
    pub guest_id: u64,
    /// Host: how many times this guest has exited to the host so far (world switches), updated
    /// at every exit once the shared page exists. For measuring what an operation costs.
    pub exits: u64,
    pub _reserved: [u64; 16],
    /// Async ring status bytes ([`ASYNC_EMPTY`] / [`ASYNC_READY`]).
    pub hcall_status: [u8; ASYNC_RING],
    pub hcalls: [AsyncCall; ASYNC_RING],
}

/// The default vector of the virtual interrupt upcall.
pub const DEFAULT_IRQ_VECTOR: u64 = 32;

static_assertions::const_assert!(core::mem::size_of::<SharedPage>() <= PAGE_SIZE as usize);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, irq_enabled), 0x00);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, irq_pending), 0x08);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, irq_blocked), 0x10);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, cr2), 0x18);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, paging_levels), 0x30);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, tsc_khz), 0x38);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, kernel_cs), 0x48);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, features), 0x50);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, irq_vector), 0x68);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, guest_id), 0x70);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, exits), 0x78);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, hcall_status), 0x100);
static_assertions::const_assert_eq!(core::mem::offset_of!(SharedPage, hcalls), 0x140);

/// Virtual irq numbers.
pub mod irq {
    /// The one-shot clock event.
    pub const TIMER: u64 = 0;
}

// ------------------------------------------------------------------------------------------------
// Devices (docs/abi.md §3.4): the device page and the layouts of each device's area.
// ------------------------------------------------------------------------------------------------

pub mod dev {
    use super::PAGE_SIZE;

    /// Descriptors the device page holds, and the size of each.
    pub const MAX_DEVICES: usize = 16;
    pub const DESC_SIZE: usize = 24;
    /// Offset of `status` in a descriptor (the one field the guest writes).
    pub const STATUS_OFFSET: u64 = 4;
    static_assertions::const_assert!(MAX_DEVICES * DESC_SIZE <= PAGE_SIZE as usize);

    /// Device types (a descriptor's `type`).
    pub mod kind {
        pub const NONE: u16 = 0;
        pub const CONSOLE: u16 = 1;
        pub const NET: u16 = 2;
        pub const BLOCK: u16 = 3;

        pub const fn name(kind: u16) -> &'static str {
            match kind {
                CONSOLE => "console",
                NET => "net",
                BLOCK => "block",
                _ => "unknown",
            }
        }
    }

    /// `status` bits, written by the guest.
    pub mod status {
        pub const ACKNOWLEDGE: u16 = 1;
        pub const DRIVER: u16 = 2;
        pub const DRIVER_OK: u16 = 4;
        pub const FAILED: u16 = 128;
        /// A driver took the device and it works.
        pub const READY: u16 = ACKNOWLEDGE | DRIVER | DRIVER_OK;
    }

    /// One descriptor of the device page.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Descriptor {
        pub kind: u16,
        pub features: u16,
        pub status: u16,
        pub num_pages: u16,
        pub irq: u32,
        pub pfn: u64,
    }

    impl Descriptor {
        pub fn to_bytes(self) -> [u8; DESC_SIZE] {
            let mut b = [0u8; DESC_SIZE];
            let fields: [(usize, &[u8]); 6] = [
                (0, &self.kind.to_le_bytes()),
                (2, &self.features.to_le_bytes()),
                (4, &self.status.to_le_bytes()),
                (6, &self.num_pages.to_le_bytes()),
                (8, &self.irq.to_le_bytes()),
                (16, &self.pfn.to_le_bytes()),
            ];
            for (off, bytes) in fields {
                if let Some(dst) = b.get_mut(off..off + bytes.len()) {
                    dst.copy_from_slice(bytes);
                }
            }
            b
        }

        /// Parse one descriptor (a short slice reads as zeros).
        pub fn parse(b: &[u8]) -> Descriptor {
            let le = |o: usize, n: usize| -> u64 {
                b.iter()
                    .skip(o)
                    .take(n)
                    .enumerate()
                    .fold(0, |v, (i, x)| v | u64::from(*x) << (8 * i))
            };
            Descriptor {
                kind: le(0, 2) as u16,
                features: le(2, 2) as u16,
                status: le(4, 2) as u16,
                num_pages: le(6, 2) as u16,
                irq: le(8, 4) as u32,
                pfn: le(16, 8),
            }
        }

        /// Guest-physical address of the device's area.
        pub fn area(&self) -> u64 {
            self.pfn.wrapping_mul(PAGE_SIZE)
        }
    }

    /// The console's page: output is sent to the page itself, input buffers are bound beside it.
    pub mod console {
        /// Where the guest binds its input buffers: the console page + 8.
        pub const INPUT_OFFSET: u64 = 8;
    }

    /// The block device's page: a request and the device's size.
    pub mod block {
        pub const SECTOR: u64 = 512;
        /// Request types.
        pub const READ: u32 = 0;
        pub const WRITE: u32 = 1;
        pub const FLUSH: u32 = 2;
        /// `result` values (the guest sets 0 when it makes a request).
        pub const PENDING: u32 = 0;
        pub const DONE: u32 = 1;
        pub const FAILED: u32 = 2;
        /// Field offsets.
        pub const OFF_TYPE: u64 = 0;
        pub const OFF_RESULT: u64 = 4;
        pub const OFF_SECTOR: u64 = 8;
        pub const OFF_BYTES: u64 = 16;
        pub const OFF_NUM_SECTORS: u64 = 24;
        /// Bytes of the request the guest fills (type, result, sector, bytes, reserved).
        pub const REQUEST_SIZE: usize = 24;
    }

    /// The network device's page: one slot per guest on the LAN.
    pub mod net {
        /// Slots of 8 bytes: `mac[6], flags, reserved`.
        pub const SLOTS: u64 = 512;
        pub const SLOT_SIZE: u64 = 8;
        /// `features & SLOT_MASK`: this guest's slot.
        pub const SLOT_MASK: u16 = 0x1ff;
        /// `features` bit: no checksums needed (a shared LAN: frames never leave the host).
        pub const NOCSUM: u16 = 0x4000;
        /// Slot flag: promiscuous (receives every frame).
        pub const PROMISC: u8 = 1;
        /// The TAP device's slot, and the guest's slot beside a TAP.
        pub const HOST_SLOT: u16 = 0;
        pub const TAP_GUEST_SLOT: u16 = 1;
        /// Ethernet frame sizes the drivers exchange (no FCS).
        pub const FRAME_MIN: usize = 14;
        pub const FRAME_MAX: usize = 1514;
        static_assertions::const_assert!(SLOTS * SLOT_SIZE == super::PAGE_SIZE);

        /// The key of `slot` on the network page at `page`: where that interface receives.
        pub const fn slot_key(page: u64, slot: u16) -> u64 {
            page + SLOT_SIZE * slot as u64
        }
    }
}
