//! The virtual timer (SET_CLOCKEVENT, irq 0), HALT, and delivery rules: IF, irq_blocked,
//! SEND_INTERRUPTS.

use super::{ensure, ensure_eq, wait_until, TestResult};
use crate::{hcall, irq, shared};
use core::sync::atomic::Ordering::Relaxed;
use lg_core::abi;

const TIMER_BIT: u64 = 1 << abi::irq::TIMER;
const MS: u64 = 1_000_000;
/// Longest we wait for a timer that should fire within a millisecond (TCG hosts are slow).
const PATIENCE: u64 = 2_000 * MS;

fn pending() -> u64 {
    shared::irq_pending().load(Relaxed)
}

/// HALT sleeps until the timer fires; the irq is delivered (handler runs, clears its pending
/// bit) before HALT returns, with interrupts on.
pub fn timer_halt() -> TestResult {
    irq::disable();
    let before = irq::ticks();
    hcall::set_clockevent(MS);
    hcall::halt();
    let on = irq::enabled();
    irq::disable();
    ensure_eq!(
        irq::ticks() - before,
        1,
        "timer irqs handled by HALT's return"
    );
    ensure!(on, "virtual IF off after HALT returned");
    ensure_eq!(pending() & TIMER_BIT, 0, "timer still pending");
    ensure_eq!(irq::others(), 0, "irqs other than the timer");
    Ok(())
}

/// With interrupts on, the one-shot timer fires once, and only once.
pub fn timer_oneshot() -> TestResult {
    let before = irq::ticks();
    irq::enable();
    hcall::set_clockevent(MS / 2);
    let fired = wait_until(PATIENCE, || irq::ticks() != before);
    let settle = wait_until(5 * MS, || irq::ticks() > before + 1);
    irq::disable();
    ensure!(fired, "timer did not fire within {} ms", PATIENCE / MS);
    ensure!(
        !settle,
        "a one-shot timer fired {} times",
        irq::ticks() - before
    );
    Ok(())
}

/// SET_CLOCKEVENT(0) cancels an armed timer.
pub fn clockevent_cancel() -> TestResult {
    let before = irq::ticks();
    hcall::set_clockevent(MS);
    hcall::set_clockevent(0);
    irq::enable();
    let fired = wait_until(5 * MS, || irq::ticks() != before);
    irq::disable();
    ensure!(!fired, "a cancelled timer fired");
    ensure_eq!(pending() & TIMER_BIT, 0, "cancelled timer pending");
    Ok(())
}

/// A blocked irq stays pending (and undelivered, even with IF on); once unblocked with IF off,
/// turning IF on delivers it through SEND_INTERRUPTS (`irq::enable` runs in the noirq range, so
/// the host cannot deliver it any other way).
pub fn send_interrupts() -> TestResult {
    let before = irq::ticks();
    shared::irq_blocked().store(TIMER_BIT, Relaxed);
    shared::irq_enabled().store(irq::ON, Relaxed);
    hcall::set_clockevent(MS / 10);
    let raised = wait_until(PATIENCE, || pending() & TIMER_BIT != 0);
    irq::disable();
    ensure!(raised, "timer never became pending");
    ensure_eq!(irq::ticks(), before, "timer irqs delivered while blocked");

    shared::irq_blocked().store(0, Relaxed);
    hcall::flush_async();
    ensure_eq!(irq::ticks(), before, "timer irqs delivered with IF off");
    irq::enable();
    let after = irq::ticks();
    irq::disable();
    ensure_eq!(after - before, 1, "timer irqs delivered by SEND_INTERRUPTS");
    ensure_eq!(pending() & TIMER_BIT, 0, "timer still pending");
    Ok(())
}
