//! lgtest: the lguest test guest. A tiny x86_64 kernel that boots under the lguest host (ring 1,
//! paravirtual: docs/abi.md §2) and either runs a self-checking test suite of the guest ABI
//! (`lgtest=suite`, the default; `lgtest=user`, processes in ring 3 on a small user space in
//! `user/`; `lgtest=privileged`, the emulated privileged instructions), performs one hostile
//! action the host must survive (`lgtest=<mode>`, see `adversary.rs`), stresses the host in a
//! way the guest must survive (`stress.rs`), or drives the devices of docs/abi.md §3 (`io/`:
//! console, block and network drivers with smoltcp on top, and hostile DMA).
//!
//! Boot order: `boot.rs` (`_start`: stack, .bss) -> [`kmain`]: `INIT` the shared page (it must be
//! the first hypercall), read the zero page, set up paging, find the devices (from then on the
//! console device carries all output), pick the mode.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod console;
#[macro_use]
mod traps;
mod adversary;
mod boot;
mod hcall;
mod io;
mod irq;
mod paging;
mod shared;
mod stress;
mod tests;
mod user;

use core::fmt::Write;
use core::sync::atomic::Ordering::Relaxed;
use lg_core::abi;
use lgtest::mode::{self, Mode};
use lgtest::text::FixedStr;
use lgtest::{bootparams, phys_to_virt};

/// The Rust entry point, called by `_start` on the boot stack with the zero page's gpa (RSI).
extern "C" fn kmain(zero_page_gpa: u64) -> ! {
    shared::init(irq::VECTOR, irq::noirq_range());

    if !zero_page_gpa.is_multiple_of(abi::PAGE_SIZE) || zero_page_gpa >= abi::LOW_RESERVED {
        hcall::crash(b"lgtest: zero page pointer (RSI) is not a low page");
    }
    // SAFETY: the zero page is one page of guest RAM below 1 MiB, inside the direct map; the
    // launcher wrote it before boot and nobody writes it now.
    let zero_page = unsafe {
        core::slice::from_raw_parts(
            phys_to_virt(zero_page_gpa) as *const u8,
            abi::PAGE_SIZE as usize,
        )
    };
    let direct_top = bootparams::direct_map_top(zero_page);
    let Some(free) = bootparams::free_frames(zero_page, boot::image_end_gpa()) else {
        hcall::crash(b"lgtest: no free RAM after the kernel image (e820)");
    };
    paging::init(free, direct_top);
    paging::set_ram_top(bootparams::ram_top(zero_page));
    // From here on the console device carries println! (CONSOLE_WRITE only until then).
    io::init(zero_page);

    let cmdline = cmdline(zero_page, direct_top);
    io::set_cmdline(cmdline);
    let name = mode::requested(cmdline);
    let name_str = core::str::from_utf8(name).unwrap_or("?");
    let (rs, re) = paging::reserved();
    println!(
        "lgtest: abi {} mode {} ram {} MiB reserved [{:#x}, {:#x})",
        shared::abi_version().load(Relaxed),
        name_str,
        bootparams::ram_top(zero_page) >> 20,
        rs,
        re
    );
    println!(
        "lgtest: guest {} features {:#x} tsc {} kHz, {} free pages",
        shared::guest_id().load(Relaxed),
        shared::features().load(Relaxed),
        shared::tsc_khz().load(Relaxed),
        paging::free_frames()
    );
    match Mode::from_name(name) {
        Some(Mode::Suite) => tests::run(),
        Some(Mode::User) => tests::run_user(),
        Some(Mode::Privileged) => tests::run_privileged(),
        Some(Mode::Bench) => tests::run_bench(),
        Some(m) if m.is_io() => io::run(m),
        Some(hostile) => adversary::run(hostile),
        None => {
            println!("lgtest: unknown mode '{name_str}'");
            hcall::crash(b"lgtest: unknown mode")
        }
    }
}

/// The command line (up to its NUL, at most `CMDLINE_MAX` bytes and never past the direct map).
fn cmdline(zero_page: &[u8], direct_top: u64) -> &'static [u8] {
    let gpa = bootparams::cmdline_gpa(zero_page);
    if gpa == 0 || gpa >= direct_top {
        return &[];
    }
    let len = (direct_top - gpa).min(abi::CMDLINE_MAX as u64) as usize;
    // SAFETY: `[gpa, gpa + len)` is guest RAM inside the direct map that nothing writes.
    let bytes = unsafe { core::slice::from_raw_parts(phys_to_virt(gpa) as *const u8, len) };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(len);
    bytes.get(..end).unwrap_or(&[])
}

/// Format a crash message and report it.
pub fn crash_fmt(args: core::fmt::Arguments<'_>) -> ! {
    let mut msg = FixedStr::<256>::new();
    let _ = msg.write_fmt(args);
    hcall::crash(msg.as_bytes())
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("PANIC: {info}");
    crash_fmt(format_args!("lgtest: panic: {}", info.message()))
}
