//! Rough costs, printed as `bench: <name> <cycles per op> cycles` (not tests: nothing fails).

use super::memory::{map_marked, scratch_va, DATA};
use crate::{hcall, shared, traps};
use core::arch::asm;
use lg_core::abi::vector;
use lgtest::pagetable::{self as pt, Level};

pub fn exits() -> u64 {
    shared::exits().load(core::sync::atomic::Ordering::Relaxed)
}

/// `bench: <name> <cycles> cycles <exits> exits`, both per operation.
pub fn report(name: &str, cycles: u64, exits: u64, n: u64) {
    let x100 = exits * 100 / n;
    println!(
        "bench: {name} {} cycles {}.{:02} exits",
        cycles / n,
        x100 / 100,
        x100 % 100
    );
}

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads the time-stamp counter (checked to work at ring 1 in `run`).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Can we read the TSC at ring 1? (CR4.TSD would make rdtsc fault.) Needs the trap handlers.
pub fn rdtsc_works() -> bool {
    // SAFETY: rdtsc either works or traps and is skipped.
    let p = unsafe { probe!(traps::ANY, ["rdtsc"], out("rax") _, out("rdx") _) };
    p.trap.is_none()
}

/// TSC, exits and wall-clock time at one moment, to report what happened since.
pub struct Snapshot {
    tsc: Option<u64>,
    exits: u64,
    ns: u64,
}

impl Snapshot {
    pub fn now() -> Snapshot {
        Snapshot {
            tsc: rdtsc_works().then(rdtsc),
            exits: exits(),
            ns: hcall::wallclock_ns(),
        }
    }

    /// `bench: <name> <cycles> cycles <exits> exits <ns> ns`, each per operation, for the `n`
    /// operations since the snapshot.
    pub fn report(&self, name: &str, n: u64) {
        let cycles = self.tsc.map_or(0, |t| rdtsc() - t);
        self.report_cycles(name, n, cycles / n.max(1));
    }

    /// Like [`Snapshot::report`], with the cycles per operation measured by the caller.
    pub fn report_cycles(&self, name: &str, n: u64, cycles: u64) {
        let n = n.max(1);
        let x100 = (exits() - self.exits) * 100 / n;
        println!(
            "bench: {name} {cycles} cycles {}.{:02} exits {} ns",
            x100 / 100,
            x100 % 100,
            (hcall::wallclock_ns() - self.ns) / n
        );
    }
}

pub fn run() {
    if !rdtsc_works() {
        println!("bench: skipped (rdtsc traps at ring 1)");
        return;
    }
    hypercall();
    trap_iret();
    page_fault();
}

/// The cheapest hypercall, FLUSH_ASYNC with an empty ring: one exit to the host and back.
pub fn hypercall() {
    const N: u64 = 1000;
    let (start, x) = (rdtsc(), exits());
    for _ in 0..N {
        hcall::flush_async();
    }
    report("hypercall", rdtsc() - start, exits() - x, N);
}

/// An exception reflected to the guest and returned from with IRET (#UD, skipped).
fn trap_iret() {
    const N: u64 = 200;
    let (start, x) = (rdtsc(), exits());
    for _ in 0..N {
        // SAFETY: ud2 traps and is skipped.
        let _ = unsafe { probe!(u64::from(vector::UD), ["ud2"]) };
    }
    report("trap-iret", rdtsc() - start, exits() - x, N);
}

/// A page fault reflected to the guest, repaired (PTE + SET_PTE) and retried.
fn page_fault() {
    const N: u64 = 200;
    let va = scratch_va();
    let Ok((pte, _)) = map_marked(va, DATA, None) else {
        println!("bench: page-fault skipped (out of memory)");
        return;
    };
    let mapped = pte.get() & !(pt::ACCESSED | pt::DIRTY);
    let mut total = 0;
    let mut total_exits = 0;
    for _ in 0..N {
        pte.set(Level::Pte, 0);
        // SAFETY: the PTE and its frame are ours.
        let since = unsafe { traps::arm_repair(pte.gpa(), mapped) };
        let (start, x) = (rdtsc(), exits());
        // SAFETY: the read faults, is repaired, and is retried.
        let _ =
            unsafe { probe!(@armed since, ["mov ({va}), {x}"], va = in(reg) va, x = out(reg) _) };
        total += rdtsc() - start;
        total_exits += exits() - x;
    }
    report("page-fault", total, total_exits, N);
}
