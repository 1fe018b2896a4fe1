//! Virtual interrupts (docs/abi.md §2.3): the virtual IF is `irq_enabled` in the shared page, the
//! host ORs raised irqs into `irq_pending` and delivers them through trap vector [`VECTOR`].

use crate::shared;
use core::arch::global_asm;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use lg_core::abi::{self, hcall as nr, SharedPage};

/// The trap vector irqs arrive on (told to the host in the shared page before `INIT`).
pub const VECTOR: u64 = abi::DEFAULT_IRQ_VECTOR;
/// `irq_enabled` value meaning "on" (RFLAGS.IF).
pub const ON: u64 = 0x200;

/// Timer (irq 0) interrupts handled so far.
static TICKS: AtomicU64 = AtomicU64::new(0);
/// Any other irqs handled so far (device irqs: none are expected in the suites).
static OTHERS: AtomicU64 = AtomicU64::new(0);
/// Per-irq counts (device irqs; irq 0 is `TICKS`).
static COUNTS: [AtomicU64; abi::NR_IRQS as usize] =
    [const { AtomicU64::new(0) }; abi::NR_IRQS as usize];

// Enabling interrupts: store IF, then ask for delivery only if something unblocked is pending.
// The whole sequence up to and including the `int` is the shared page's noirq range, so the
// host never injects in the middle of it: an irq that arrives meanwhile is delivered by
// SEND_INTERRUPTS itself, whose return address (`lg_noirq_end`) is outside the range.
global_asm!(
    r#"
    .section .text.irq, "ax", @progbits
    .global lg_irq_enable
lg_irq_enable:
lg_noirq_start:
    movq ${on}, {page}+{enabled}(%rip)
    mov {page}+{pending}(%rip), %rax
    mov {page}+{blocked}(%rip), %rcx
    not %rcx
    test %rcx, %rax
    jz lg_noirq_end
    mov ${send}, %eax
    int $0x1f
lg_noirq_end:
    ret
"#,
    on = const ON,
    page = sym shared::PAGE,
    enabled = const offset_of!(SharedPage, irq_enabled),
    pending = const offset_of!(SharedPage, irq_pending),
    blocked = const offset_of!(SharedPage, irq_blocked),
    send = const nr::SEND_INTERRUPTS,
    options(att_syntax)
);

unsafe extern "C" {
    /// Clobbers RAX and RCX only (both caller-saved).
    fn lg_irq_enable();
    #[link_name = "lg_noirq_start"]
    static NOIRQ_START: u8;
    #[link_name = "lg_noirq_end"]
    static NOIRQ_END: u8;
}

/// `[start, end)` RIPs where the host must not inject (see `lg_irq_enable`).
pub fn noirq_range() -> (u64, u64) {
    (&raw const NOIRQ_START as u64, &raw const NOIRQ_END as u64)
}

/// Turn the virtual IF on; anything pending and unblocked is delivered before this returns.
pub fn enable() {
    // SAFETY: an ordinary C-ABI function that only touches the shared page.
    unsafe { lg_irq_enable() };
}

/// Turn the virtual IF off.
pub fn disable() {
    shared::irq_enabled().store(0, Relaxed);
}

pub fn enabled() -> bool {
    shared::irq_enabled().load(Relaxed) & ON != 0
}

pub fn ticks() -> u64 {
    TICKS.load(Relaxed)
}

pub fn others() -> u64 {
    OTHERS.load(Relaxed)
}

/// How many times irq `n` was handled.
pub fn count(n: u32) -> u64 {
    COUNTS.get(n as usize).map_or(0, |c| c.load(Relaxed))
}

/// Run `f` with the virtual IF off, then restore it as it was.
pub fn without<R>(f: impl FnOnce() -> R) -> R {
    let was = enabled();
    disable();
    let r = f();
    if was {
        enable();
    }
    r
}

/// The irq vector's handler (virtual IF off): count what is pending and unblocked, clear
/// exactly those bits, then hand each device irq to its driver (`io::on_irq`). `fetch_and` is one
/// locked instruction, so a bit the host sets at an exit between our read and our write is never
/// lost; clearing before the drivers look means an irq raised while they work is not lost either.
pub fn handle() {
    let pending = shared::irq_pending().load(Relaxed);
    let mine = pending & !shared::irq_blocked().load(Relaxed);
    let timer = 1 << abi::irq::TIMER;
    if mine & timer != 0 {
        TICKS.fetch_add(1, Relaxed);
    }
    OTHERS.fetch_add(u64::from((mine & !timer).count_ones()), Relaxed);
    shared::irq_pending().fetch_and(!mine, Relaxed);
    let mut devices = mine & !timer & 0xffff_ffff;
    while devices != 0 {
        let n = devices.trailing_zeros();
        devices &= devices - 1;
        if let Some(c) = COUNTS.get(n as usize) {
            c.fetch_add(1, Relaxed);
        }
        crate::io::on_irq(n);
    }
}
