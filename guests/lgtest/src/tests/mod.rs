//! The test suites, kvm-unit-tests style: one line per test, `ok N - name` or
//! `not ok N - name: detail`, then `SUMMARY: N tests, M failures`, then power off (all passed) or
//! `CRASH("suite failed")`, so the launcher's exit status tells the harness.
//!
//! `lgtest=suite` runs [`TESTS`] in order; the page-table tests build on each other's tables (the
//! `set-*` tests publish a new subtree one level lower each time), everything else is independent.
//! `lgtest=user` runs `user.rs` (processes in ring 3) and `lgtest=privileged` runs
//! `privileged.rs` (the privileged instructions the host emulates at ring 1).

#![allow(
    clippy::result_large_err,
    reason = "a failure's detail is a line of text, returned once per test"
)]

mod basics;
pub mod bench;
mod bench_mode;
mod exceptions;
mod faults;
mod interrupts;
pub mod memory;
mod privileged;
mod user;

use crate::{hcall, irq, shared, traps};
use core::sync::atomic::Ordering::Relaxed;
use lgtest::text::FixedStr;

/// Why a test failed.
pub type Detail = FixedStr<200>;
pub type TestResult = Result<(), Detail>;

/// Fail the current test with a formatted detail.
macro_rules! fail {
    ($($arg:tt)*) => {{
        let mut d = $crate::tests::Detail::new();
        let _ = core::fmt::Write::write_fmt(&mut d, format_args!($($arg)*));
        return Err(d);
    }};
}

/// Fail the current test unless `$cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::tests::fail!($($arg)*);
        }
    };
}

/// Fail the current test unless `$got == $want` (both shown in hex).
macro_rules! ensure_eq {
    ($got:expr, $want:expr, $what:expr) => {{
        let (got, want): (u64, u64) = ($got, $want);
        if got != want {
            $crate::tests::fail!("{}: got {:#x}, want {:#x}", $what, got, want);
        }
    }};
}

pub(crate) use {ensure, ensure_eq, fail};

/// A failure detail from a format string (for `map_err`).
pub fn detail(args: core::fmt::Arguments<'_>) -> Detail {
    let mut d = Detail::new();
    let _ = core::fmt::Write::write_fmt(&mut d, args);
    d
}

type Test = (&'static str, fn() -> TestResult);

const TESTS: &[Test] = &[
    ("boot-console", basics::boot_console),
    ("init-shared-page", basics::init_shared_page),
    ("get-wallclock", basics::get_wallclock),
    ("set-stack", basics::set_stack),
    ("load-tls", basics::load_tls),
    ("load-gdt-entry", basics::load_gdt_entry),
    ("trap-ud-iret", exceptions::ud_irq_off),
    ("trap-ud-irq-on", exceptions::ud_irq_on),
    ("trap-de", exceptions::divide_error),
    ("trap-bp", exceptions::breakpoint),
    ("trap-gp", exceptions::general_protection),
    (
        "iret-preserves-registers",
        exceptions::iret_preserves_registers,
    ),
    ("pf-read-unmapped", faults::read_unmapped),
    ("pf-write-unmapped-recover", faults::write_unmapped_recover),
    ("pf-write-readonly", faults::write_readonly),
    ("pf-nx-fetch", faults::nx_fetch),
    ("accessed-dirty", faults::accessed_dirty),
    ("timer-halt", interrupts::timer_halt),
    ("timer-oneshot", interrupts::timer_oneshot),
    ("clockevent-cancel", interrupts::clockevent_cancel),
    ("send-interrupts", interrupts::send_interrupts),
    ("set-p4d", memory::set_p4d),
    ("set-pud", memory::set_pud),
    ("set-pmd", memory::set_pmd),
    ("set-pte", memory::set_pte),
    ("set-pmd-large", memory::set_pmd_large),
    ("flush-one", memory::flush_one),
    ("flush-tlb-user", memory::flush_tlb_user),
    ("flush-tlb-all", memory::flush_tlb_all),
    ("new-pgtable", memory::new_pgtable),
    ("flush-async", memory::flush_async),
];

pub fn run() -> ! {
    run_suite(TESTS, || {}, bench::run)
}

/// `lgtest=user`.
pub fn run_user() -> ! {
    user::run()
}

/// `lgtest=bench`.
pub fn run_bench() -> ! {
    bench_mode::run()
}

/// `lgtest=privileged`.
pub fn run_privileged() -> ! {
    run_suite(privileged::TESTS, || {}, || {})
}

/// Run `tests` in order, each followed by the common cleanup and `after_each`; then `finally`
/// (benchmarks), the summary, and power off or crash.
fn run_suite(tests: &[Test], after_each: fn(), finally: fn()) -> ! {
    traps::install_exceptions();
    traps::install_irq();
    let mut failures = 0;
    for (n, (name, test)) in tests.iter().enumerate() {
        let result = test();
        cleanup();
        after_each();
        match result {
            Ok(()) => println!("ok {} - {}", n + 1, name),
            Err(detail) => {
                failures += 1;
                println!("not ok {} - {}: {}", n + 1, name, detail);
            }
        }
    }
    finally();
    println!("SUMMARY: {} tests, {} failures", tests.len(), failures);
    if failures == 0 {
        hcall::shutdown()
    } else {
        hcall::crash(b"suite failed")
    }
}

/// Leave no state behind for the next test, whatever this one did before it failed.
fn cleanup() {
    traps::disarm();
    irq::disable();
    hcall::set_clockevent(0);
    shared::irq_blocked().store(0, Relaxed);
    shared::irq_pending().fetch_and(!(1 << lg_core::abi::irq::TIMER), Relaxed);
}

/// Call `done` (after a hypercall, so the host gets to run and deliver) until it holds or
/// `timeout_ns` of wall-clock time pass. Returns whether it held.
pub fn wait_until(timeout_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = hcall::wallclock_ns();
    loop {
        if done() {
            return true;
        }
        if hcall::wallclock_ns().saturating_sub(start) > timeout_ns {
            return done();
        }
    }
}

/// Check a recorded trap against what the probe should have produced: the vector, the error
/// code, where it happened (`rip`), kernel-mode CS/SS, the interrupted RSP, the frame's place
/// on that stack (aligned down to 16), the virtual IF in the frame, and that the handler ran
/// with the virtual IF off (interrupt gate).
pub fn check_trap(
    probe: &traps::Probe,
    vector: u8,
    error: u64,
    rip: u64,
    irq_on: bool,
) -> TestResult {
    let Some(t) = probe.trap else {
        fail!("no trap (expected vector {vector})");
    };
    ensure_eq!(t.vector, u64::from(vector), "vector");
    ensure_eq!(t.error, error, "error code");
    ensure_eq!(t.rip, rip, "frame RIP");
    ensure_eq!(t.cs, traps::FRAME_CS, "frame CS");
    ensure_eq!(t.ss, traps::FRAME_SS, "frame SS");
    ensure_eq!(t.rsp, probe.rsp, "frame RSP");
    ensure_eq!(
        t.rip_slot,
        (probe.rsp & !15) - 40,
        "frame address (RIP slot)"
    );
    ensure_eq!(
        t.rflags & irq::ON,
        if irq_on { irq::ON } else { 0 },
        "frame RFLAGS.IF"
    );
    ensure_eq!(t.handler_irq_enabled, 0, "virtual IF inside the handler");
    Ok(())
}

/// Read a word through a test mapping.
///
/// # Safety
/// `va` must be mapped, 8-byte aligned, and hold nothing Rust has a reference to.
pub unsafe fn peek(va: u64) -> u64 {
    // SAFETY: per the caller.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

/// Write a word through a test mapping.
///
/// # Safety
/// As for [`peek`], and the mapping must be writable.
pub unsafe fn poke(va: u64, value: u64) {
    // SAFETY: per the caller.
    unsafe { core::ptr::write_volatile(va as *mut u64, value) }
}
