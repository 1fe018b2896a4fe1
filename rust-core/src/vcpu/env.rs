//! What a virtual CPU needs from the world around it.
//!
//! In the module this is the kernel (through the C shim) and the switcher; in unit tests it is a
//! fake that simulates guest memory and "runs" the guest by replaying scripted exits. Everything
//! the vCPU decides is therefore testable on the host.

use crate::dma::engine::{DmaError, Sent};
use crate::shadow::{MemFault, ShadowHost};
use crate::switcher::pages::GuestRegs;

/// Why the guest stopped running, as the switcher saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    /// The vector (0..=255), or `TRAP_ABORTED`.
    pub vector: u64,
    pub err: u64,
    /// CR2 at the exit (meaningful for #PF).
    pub cr2: u64,
    /// The CPU faulted inside the switcher while entering the guest (the frame's CS had RPL 0):
    /// the guest state it was given was bad.
    pub in_switcher: bool,
    /// RIP of the frame as found (for the `in_switcher` report).
    pub rip: u64,
}

/// The guest's CPU state that crosses the switcher. Validated by the vCPU before every entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuState {
    pub regs: GuestRegs,
    pub fs_base: u64,
    pub gs_base: u64,
    pub pkru: u64,
    /// The three TLS descriptors (GDT slots 12..=14), already sanitized.
    pub tls: [u64; 3],
    /// Data segment selectors DS, ES, FS, GS.
    pub sel: [u16; 4],
}

/// Facts about the host the guest is told (and the vCPU checks against).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostFacts {
    pub la57: bool,
    /// Guest-virtual range the guest must not use, `[start, end)`; empty on 5-level hosts.
    pub reserved: (u64, u64),
    /// Top-level slot of the switcher in the shadow root.
    pub switcher_slot: usize,
    pub tsc_khz: u64,
    pub stable_tsc: bool,
    pub fsgsbase: bool,
    pub pku: bool,
    pub guest_id: u64,
    /// The host's MAXPHYADDR.
    pub phys_bits: u32,
    /// The host's CR4 and XCR0 (what `mov %cr4` and `xsetbv` are emulated against).
    pub host_cr4: u64,
    pub host_xcr0: u64,
}

pub trait Env: ShadowHost {
    /// Copy guest-physical memory (already bounds-checked by the caller) in or out.
    fn read_gpa_bytes(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemFault>;
    fn write_gpa_bytes(&mut self, gpa: u64, buf: &[u8]) -> Result<(), MemFault>;

    /// Enter the guest with `cpu` (registers already validated) on the shadow root `cr3` and run
    /// it until it exits; `cpu` then holds its new state. The switcher's top-level slot entry is
    /// installed by the implementation for whichever host CPU it runs on.
    fn run_guest(&mut self, cpu: &mut CpuState, shadow: &mut crate::shadow::Shadow) -> Exit;

    /// A signal is pending for the launcher: return to it.
    fn signal_pending(&mut self) -> bool;
    /// `LHREQ_BREAK 1` is in force.
    fn break_requested(&mut self) -> bool;
    /// Take (atomically) the interrupts raised from outside the vCPU: the timer, `LHREQ_IRQ`.
    fn take_irqs(&mut self) -> u32;
    /// Withdraw raised-but-not-taken interrupts in `mask` (after the timer was cancelled).
    fn clear_irqs(&mut self, mask: u32);
    /// Arm the one-shot clock event `ns` from now, or cancel it (`None`); a cancel waits for a
    /// timer callback that is already running.
    fn set_timer(&mut self, ns: Option<u64>);
    /// Sleep until one of the irqs in `wake_mask` is raised, a break, or a signal.
    fn wait_for_irq(&mut self, wake_mask: u32);
    /// Reschedule if the scheduler wants to, and let the freezer in.
    fn yield_point(&mut self);
    fn realtime_ns(&mut self) -> u64;
    fn facts(&self) -> HostFacts;

    /// `BIND_DMA` and `SEND_DMA` (docs/abi.md §3), done by the DMA engine with the global table.
    fn dma_bind(&mut self, key: u64, dmas: u64, arg: u64) -> Result<u64, DmaError>;
    fn dma_send(&mut self, key: u64, dma: u64) -> Result<Sent, DmaError>;
    /// Another guest found this guest's receive buffer at the returned address invalid.
    fn dma_condemned(&mut self) -> Option<u64>;
}
