//! Stress modes the guest must SURVIVE (each ends with `ok: ...` and `SHUTDOWN(0)`; a broken
//! expectation crashes with a message saying what was seen):
//!
//! - `shadow-thrash`: 10,000 address-space switches, each to a freshly written PML4 (a ring of
//!   tables, half of them released before reuse, half left cached), reading a page only that
//!   PML4 maps and touching kernel memory through it.
//! - `alias-perms`: one frame at two addresses, read-only and writable: writes through one are
//!   seen through the other; a write through the read-only one faults; then the roles swap.
//! - `pte-race`: for 3 s, flip a PTE between two frames (SET_PTE, or a quiet store and
//!   FLUSH_ONE, or the async ring) while a fast timer interrupts; every read must see one of the
//!   two markers, and after each change the new one.
//! - `memory-top`: map the last page of guest RAM (from e820) and write and read it.
//! - `idle`: HALT with no timer armed, forever (the harness measures host CPU time, then
//!   sends SIGINT).
//! - `user-ud-at-top`: a user process runs `ud2` in the last two bytes of the lower half; the
//!   #UD must reach the guest kernel (which kills the process) like any other: the host looks
//!   at the instruction to see whether it is a `syscall`, and must not trip over the
//!   non-canonical addresses right after it.

use crate::paging::{self, Entry};
use crate::tests::bench::Snapshot;
use crate::tests::memory::{marked_frame, root, scratch_va, DATA};
use crate::tests::{peek, poke};
use crate::user::{self, programs, Program};
use crate::{boot, hcall, irq, shared, traps};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use lg_core::abi::{hcall as nr, vector, PAGE_SIZE};
use lgtest::mode::Mode;
use lgtest::pagetable::{self as pt, Level};

pub fn run(mode: Mode) -> ! {
    traps::install_exceptions();
    traps::install_irq();
    match mode {
        Mode::ShadowThrash => shadow_thrash(),
        Mode::AliasPerms => alias_perms(),
        Mode::PteRace => pte_race(),
        Mode::MemoryTop => memory_top(),
        Mode::Idle => idle(),
        Mode::UserUdAtTop => user_ud_at_top(),
        _ => crate::crash_fmt(format_args!("lgtest: {} is not a stress mode", mode.name())),
    }
}

fn die(args: core::fmt::Arguments<'_>) -> ! {
    println!("FAIL: {args}");
    crate::crash_fmt(args)
}

fn frame() -> u64 {
    paging::alloc_frame().unwrap_or_else(|| die(format_args!("out of memory")))
}

fn survived(name: &str) -> ! {
    println!("ok: survived {name}");
    hcall::shutdown()
}

// ---------------------------------------------------------------------------------------------

/// PML4[1]: the page each thrash address space maps for itself.
const THRASH_VA: u64 = 0x0000_0080_0000_0000;
const THRASH_SWITCHES: u64 = 10_000;
const THRASH_RING: usize = 64;
/// Every other thousand switches use only this many slots: fewer than the host caches, so
/// those PML4s are found in its cache (and rewritten behind its back while not current).
const THRASH_SMALL_RING: usize = 6;

/// One address space of the ring: its PML4, the tables down to the PTE, two data frames.
#[derive(Clone, Copy)]
struct Space {
    pml4: u64,
    pte: Entry,
    data: [u64; 2],
}

/// Written through each address space (a static in the kernel half: its shadow must be rebuilt
/// for every new root).
static TOUCHED: AtomicU64 = AtomicU64::new(0);

fn shadow_thrash() -> ! {
    let boot = boot::boot_pml4_gpa();
    let mut ring = [None::<Space>; THRASH_RING];
    let mut uses = [0u64; THRASH_RING];
    let mut released = 0u64;
    let mut prev = usize::MAX;
    let start = Snapshot::now();
    for i in 0..THRASH_SWITCHES {
        let size = if (i / 1000) % 2 == 0 {
            THRASH_RING
        } else {
            THRASH_SMALL_RING
        };
        let mut s = (i % size as u64) as usize;
        if s == prev {
            s = (s + 1) % size; // never rewrite the current PML4
        }
        prev = s;
        uses[s] += 1;
        let space = match ring[s] {
            Some(space) => {
                // Odd slots are released before reuse (the host must forget them); even ones
                // stay cached at the host, rewritten while not current (NEW_PGTABLE flushes
                // their user half).
                if s % 2 == 1 {
                    hcall::release_pgtable(space.pml4);
                    released += 1;
                }
                space
            }
            None => {
                let pml4 = frame();
                let (pud, pmd, ptt) = (frame(), frame(), frame());
                Entry::of(pml4, Level::P4d, THRASH_VA).set_quiet(pud | pt::TABLE);
                Entry::of(pud, Level::Pud, THRASH_VA).set_quiet(pmd | pt::TABLE);
                Entry::of(pmd, Level::Pmd, THRASH_VA).set_quiet(ptt | pt::TABLE);
                Space {
                    pml4,
                    pte: Entry::of(ptt, Level::Pte, THRASH_VA),
                    data: [frame(), frame()],
                }
            }
        };
        ring[s] = Some(space);
        // A fresh copy of the kernel half.
        for k in pt::ENTRIES / 2..pt::ENTRIES {
            Entry::in_table(space.pml4, k).set_quiet(Entry::in_table(boot, k).get());
        }
        // Alternate the data frame, quietly: this PML4 is not current, and switching to it
        // must drop whatever user translation the host kept for it.
        let data = space.data[(uses[s] % 2) as usize];
        space.pte.set_quiet(data | DATA);
        // SAFETY: one of our data frames.
        unsafe { paging::write_phys(data, i) };
        // SAFETY: the PML4 maps the kernel half exactly as the boot tables do.
        unsafe { hcall::new_pgtable(space.pml4) };
        // SAFETY: THRASH_VA maps `data` in this address space.
        let seen = unsafe { peek(THRASH_VA) };
        // SAFETY: as above (writable).
        unsafe { poke(THRASH_VA + 8, !i) };
        TOUCHED.store(i, Relaxed);
        if seen != i || paging::read_phys(data + 8) != !i {
            // SAFETY: back to the boot tables before crashing.
            unsafe { hcall::new_pgtable(boot) };
            die(format_args!(
                "shadow-thrash: switch {i} (PML4 {:#x}) read {seen:#x} at {THRASH_VA:#x}, want {i:#x}",
                space.pml4
            ));
        }
        if (i + 1) % 2000 == 0 {
            println!(
                "shadow-thrash: {} switches, {released} PML4s released",
                i + 1
            );
        }
    }
    start.report("shadow-thrash-switch", THRASH_SWITCHES);
    // SAFETY: the boot tables.
    unsafe { hcall::new_pgtable(boot) };
    for space in ring.iter().flatten() {
        hcall::release_pgtable(space.pml4);
    }
    survived("shadow-thrash")
}

// ---------------------------------------------------------------------------------------------

const PF: u64 = vector::PF as u64;
const RO: u64 = pt::PRESENT | pt::NO_EXECUTE;

fn alias_perms() -> ! {
    let (pa, marker) = marked_frame().unwrap_or_else(|d| die(format_args!("{d}")));
    let (ro, rw) = (scratch_va(), scratch_va());
    for (va, flags) in [(ro, RO), (rw, DATA)] {
        if let Err(e) = paging::map(root(), va, Level::Pte, pa | flags) {
            die(format_args!("alias-perms: mapping {va:#x}: {e:?}"));
        }
    }
    let pte = |va| {
        paging::lookup(root(), va, Level::Pte)
            .unwrap_or_else(|| die(format_args!("alias-perms: no PTE for {va:#x}")))
    };
    let expect = |va: u64, want: u64, what: &str| {
        // SAFETY: both aliases map our frame `pa`, readable.
        let got = unsafe { peek(va) };
        if got != want {
            die(format_args!(
                "alias-perms: {what}: read {got:#x} at {va:#x}, want {want:#x}"
            ));
        }
    };
    expect(ro, marker, "first read through the read-only alias");
    for (round, (ro, rw)) in [(ro, rw), (rw, ro)].into_iter().enumerate() {
        let value = 0xa11a_5000 + round as u64;
        // SAFETY: `rw` is the writable alias of our frame.
        unsafe { poke(rw, value) };
        expect(
            ro,
            value,
            "read-only alias after a write through the writable one",
        );
        // SAFETY: the write faults (read-only) and is skipped.
        let p = unsafe { probe!(PF, ["movq $0xbad, ({va})"], va = in(reg) ro) };
        match p.trap {
            Some(t) if t.error == 0x3 && t.cr2 == ro => {}
            Some(t) => die(format_args!(
                "alias-perms: write through the read-only alias: #PF error {:#x} cr2 {:#x}",
                t.error, t.cr2
            )),
            None => die(format_args!(
                "alias-perms: a write through the read-only alias worked"
            )),
        }
        expect(rw, value, "writable alias after the refused write");
        // Swap the roles: the read-only alias becomes writable and the other read-only.
        pte(ro).set(Level::Pte, pa | DATA);
        pte(rw).set(Level::Pte, pa | RO);
    }
    survived("alias-perms")
}

// ---------------------------------------------------------------------------------------------

const RACE_NS: u64 = 3_000_000_000;
const RACE_TIMER_NS: u64 = 50_000;

fn pte_race() -> ! {
    let (a, ma) = marked_frame().unwrap_or_else(|d| die(format_args!("{d}")));
    let (b, mb) = marked_frame().unwrap_or_else(|d| die(format_args!("{d}")));
    let va = scratch_va();
    if let Err(e) = paging::map(root(), va, Level::Pte, a | DATA) {
        die(format_args!("pte-race: mapping {va:#x}: {e:?}"));
    }
    let pte = paging::lookup(root(), va, Level::Pte)
        .unwrap_or_else(|| die(format_args!("pte-race: no PTE")));
    let frames = [(a, ma), (b, mb)];
    let start = hcall::wallclock_ns();
    let mut ticks = irq::ticks();
    irq::enable();
    hcall::set_clockevent(RACE_TIMER_NS);
    let mut changes = 0u64;
    let mut cur = 0usize;
    while hcall::wallclock_ns() - start < RACE_NS {
        // SAFETY: `va` maps frame a or b, both ours.
        let seen = unsafe { peek(va) };
        if seen != ma && seen != mb {
            irq::disable();
            die(format_args!(
                "pte-race: read {seen:#x}, neither marker ({ma:#x}, {mb:#x})"
            ));
        }
        cur ^= 1;
        let (pa, marker) = frames[cur];
        match changes % 3 {
            0 => pte.set(Level::Pte, pa | DATA),
            1 => {
                pte.set_quiet(pa | DATA);
                hcall::flush_one(va);
            }
            _ => {
                pte.set_quiet(pa | DATA);
                shared::queue_async(nr::SET_PTE, [pte.gpa(), pa | DATA, 0, 0, 0]);
                hcall::flush_async();
            }
        }
        changes += 1;
        // SAFETY: as above.
        let seen = unsafe { peek(va) };
        if seen != marker {
            irq::disable();
            die(format_args!(
                "pte-race: change {changes} (method {}): read {seen:#x}, want {marker:#x}",
                (changes - 1) % 3
            ));
        }
        if irq::ticks() != ticks {
            ticks = irq::ticks();
            hcall::set_clockevent(RACE_TIMER_NS);
        }
    }
    irq::disable();
    hcall::set_clockevent(0);
    println!(
        "pte-race: {changes} changes, {} timer interrupts in 3 s",
        irq::ticks()
    );
    survived("pte-race")
}

// ---------------------------------------------------------------------------------------------

fn memory_top() -> ! {
    let top = paging::ram_top();
    if top < 2 * PAGE_SIZE {
        die(format_args!("memory-top: no RAM in the e820 map"));
    }
    let pa = (top - PAGE_SIZE) & !(PAGE_SIZE - 1);
    println!("memory-top: e820 RAM ends at {top:#x} ({} MiB)", top >> 20);
    let va = scratch_va();
    if let Err(e) = paging::map(root(), va, Level::Pte, pa | DATA) {
        die(format_args!(
            "memory-top: mapping {pa:#x} at {va:#x}: {e:?}"
        ));
    }
    for (i, off) in [0, PAGE_SIZE / 2, PAGE_SIZE - 8].into_iter().enumerate() {
        let value = 0x70_9000_0000 ^ pa ^ i as u64;
        // SAFETY: `va` maps the last page of RAM, which nothing else uses (the allocator and the
        // direct map stop at 1 GiB or the end of RAM, and this page is only ever ours).
        let seen = unsafe {
            poke(va + off, value);
            peek(va + off)
        };
        if seen != value {
            die(format_args!(
                "memory-top: {:#x}: wrote {value:#x}, read {seen:#x}",
                pa + off
            ));
        }
        // Below the direct map's end the page is also visible there.
        if pa + PAGE_SIZE <= paging::direct_top() && paging::read_phys(pa + off) != value {
            die(format_args!(
                "memory-top: {:#x} differs through the direct map",
                pa + off
            ));
        }
    }
    println!("ok: memory-top at {pa:#x}");
    hcall::shutdown()
}

// ---------------------------------------------------------------------------------------------

fn user_ud_at_top() -> ! {
    if !user::init() {
        die(format_args!("user-ud-at-top: out of memory for user mode"));
    }
    let pid = user::spawn(Program::AtTop(0x0b0f), [0; 3]) // ud2
        .unwrap_or_else(|e| die(format_args!("user-ud-at-top: spawn: {e:?}")));
    user::run(user::Limits::DEFAULT);
    match user::exit_of(pid) {
        Some(user::Exit::Killed(f))
            if f.vector == u64::from(vector::UD) && f.rip == programs::TOP_INSN => {}
        other => die(format_args!(
            "user-ud-at-top: the process ended {other:?}, want killed by #UD at {:#x}",
            programs::TOP_INSN
        )),
    }
    survived("user-ud-at-top")
}

// ---------------------------------------------------------------------------------------------

fn idle() -> ! {
    hcall::set_clockevent(0);
    println!("idle: HALT with no timer armed");
    loop {
        hcall::halt();
        irq::disable();
    }
}
