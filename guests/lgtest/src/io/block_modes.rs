//! The block modes, on `lgba`:
//!
//! - `block-write-pattern`: every sector `i` gets the counter pattern (`lgtest::pattern`), then a
//!   flush: `block: wrote N sectors`.
//! - `block-read-checksum`: read everything: `block: N sectors md5 <hex> fnv64 0x<hex>` (the MD5
//!   is what `md5sum` says of the backing file).
//! - `block-ack-loop`: forever, write sector k with its pattern and print `acked k` once the
//!   write has completed (the data is in the file: the scenario kills the launcher and checks).
//! - `block-edges`: requests the launcher must refuse with `result = 2` (past the end, sector
//!   2^63, unaligned or zero length, ...), suite-style, and the device still works afterwards.

#![allow(
    clippy::result_large_err,
    reason = "a failure's detail is a line of text, returned once per test"
)]

use super::block::{self, Block, Failed, FAILED, MAX_BYTES, SECTOR};
use super::dma::{Dma, DmaBuf};
use super::{die, done};
use crate::hcall;
use crate::tests::bench::exits;
use lgtest::digest::{hex, Fnv64, Md5};
use lgtest::mode::Mode;
use lgtest::pattern::fill_sectors;
use lgtest::text::FixedStr;

/// The data of one request.
static IOBUF: DmaBuf<MAX_BYTES> = DmaBuf::new();
/// A second buffer for the edge cases' read-backs.
static CHECKBUF: DmaBuf<4096> = DmaBuf::new();

pub fn run(mode: Mode) -> ! {
    let Some(b) = Block::open(0) else {
        super::print_devices();
        die(format_args!("block: no block device (lgba)"))
    };
    super::print_devices();
    println!(
        "block: {} has {} sectors",
        core::str::from_utf8(&b.name()).unwrap_or("?"),
        b.num_sectors
    );
    match mode {
        Mode::BlockWritePattern => write_pattern(&b),
        Mode::BlockReadChecksum => read_checksum(&b),
        Mode::BlockAckLoop => ack_loop(&b),
        _ => edges(&b),
    }
}

fn fail_req(what: &str, sector: u64, f: Failed) -> ! {
    die(format_args!(
        "block: {what} at sector {sector} failed: result {} used {}",
        f.result, f.used
    ))
}

/// `bytes in T ms (X MB/s), N requests, E exits per request`.
fn rate(what: &str, bytes: u64, ns: u64, requests: u64, exits: u64) {
    let ns = ns.max(1);
    let mbps100 = u128::from(bytes) * 100_000 / u128::from(ns);
    let x100 = exits * 100 / requests.max(1);
    println!(
        "block: {what} {bytes} bytes in {} ms ({}.{:02} MB/s), {requests} requests, {}.{:02} exits per request",
        ns / 1_000_000,
        mbps100 / 100,
        mbps100 % 100,
        x100 / 100,
        x100 % 100
    );
}

fn write_pattern(b: &Block) -> ! {
    let per = (MAX_BYTES as u64) / SECTOR;
    let (t0, x0) = (hcall::wallclock_ns(), exits());
    let mut s = 0;
    let mut requests = 0;
    while s < b.num_sectors {
        let count = per.min(b.num_sectors - s);
        let len = (count * SECTOR) as usize;
        // SAFETY: IOBUF is this mode's alone and no request is in flight.
        unsafe { IOBUF.with_slice(0, len, |buf| fill_sectors(s, buf)) };
        if let Err(f) = b.write(s, IOBUF.va(0), len) {
            fail_req("write", s, f);
        }
        s += count;
        requests += 1;
    }
    if let Err(f) = b.flush() {
        fail_req("flush", 0, f);
    }
    let (ns, x) = (hcall::wallclock_ns() - t0, exits() - x0);
    println!("block: wrote {} sectors", b.num_sectors);
    rate("write", b.num_sectors * SECTOR, ns, requests + 1, x);
    done()
}

fn read_checksum(b: &Block) -> ! {
    let per = (MAX_BYTES as u64) / SECTOR;
    let (mut md5, mut fnv) = (Md5::new(), Fnv64::new());
    let (t0, x0) = (hcall::wallclock_ns(), exits());
    let mut s = 0;
    let mut requests = 0;
    while s < b.num_sectors {
        let count = per.min(b.num_sectors - s);
        let len = (count * SECTOR) as usize;
        if let Err(f) = b.read(s, IOBUF.va(0), len) {
            fail_req("read", s, f);
        }
        // SAFETY: the read has completed; nobody writes IOBUF until the next request.
        unsafe {
            IOBUF.with_slice(0, len, |buf| {
                md5.update(buf);
                fnv.update(buf);
            });
        }
        s += count;
        requests += 1;
    }
    let (ns, x) = (hcall::wallclock_ns() - t0, exits() - x0);
    let mut text = [0u8; 32];
    println!(
        "block: {} sectors md5 {} fnv64 {:#018x}",
        b.num_sectors,
        hex(&md5.finish(), &mut text),
        fnv.value()
    );
    rate("read", b.num_sectors * SECTOR, ns, requests, x);
    done()
}

fn ack_loop(b: &Block) -> ! {
    if b.num_sectors == 0 {
        die(format_args!("block: empty device"));
    }
    let mut k = 0u64;
    loop {
        // SAFETY: IOBUF is this mode's alone and no request is in flight.
        unsafe { IOBUF.with_slice(0, SECTOR as usize, |buf| fill_sectors(k, buf)) };
        if let Err(f) = b.write(k, IOBUF.va(0), SECTOR as usize) {
            fail_req("write", k, f);
        }
        println!("acked {k}");
        k = (k + 1) % b.num_sectors;
    }
}

// ------------------------------------------------------------------------------------------------

type Detail = FixedStr<160>;
type Test<'a> = (&'static str, &'a dyn Fn() -> Result<(), Detail>);

macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            let mut d = Detail::new();
            let _ = core::fmt::Write::write_fmt(&mut d, format_args!($($arg)*));
            return Err(d);
        }
    };
}

/// A request the launcher must refuse: result 2, nothing transferred.
fn refused(got: (u32, u32)) -> Result<(), Detail> {
    check!(
        got == (FAILED, 0),
        "result {} used {}, want result 2 used 0",
        got.0,
        got.1
    );
    Ok(())
}

/// Write sector `s`'s pattern (through IOBUF) and check it reads back (through CHECKBUF).
fn write_and_verify(b: &Block, s: u64) -> Result<(), Detail> {
    // SAFETY: IOBUF is this mode's alone and no request is in flight.
    unsafe { IOBUF.with_slice(0, 512, |buf| fill_sectors(s, buf)) };
    if let Err(f) = b.write(s, IOBUF.va(0), 512) {
        check!(
            false,
            "write sector {s}: result {} used {}",
            f.result,
            f.used
        );
    }
    verify(b, s)
}

/// Sector `s` holds its pattern.
fn verify(b: &Block, s: u64) -> Result<(), Detail> {
    if let Err(f) = b.read(s, CHECKBUF.va(0), 512) {
        check!(
            false,
            "read sector {s}: result {} used {}",
            f.result,
            f.used
        );
    }
    let mut want = [0u8; 512];
    fill_sectors(s, &mut want);
    let mut got = [0u8; 512];
    CHECKBUF.read(0, &mut got);
    check!(got == want, "sector {s} does not hold its pattern");
    Ok(())
}

fn edges(b: &Block) -> ! {
    let n = b.num_sectors;
    let one = || {
        let d = Dma::new();
        let _ = d.describe(IOBUF.va(0), 512);
        d
    };
    let tests: &[Test<'_>] = &[
        ("device-has-sectors", &|| {
            check!(n >= 2, "{n} sectors");
            Ok(())
        }),
        ("last-sector-before", &|| write_and_verify(b, n - 1)),
        ("read-past-end", &|| {
            refused(b.read_into(n, 512, CHECKBUF.va(0), 512))
        }),
        ("write-past-end", &|| {
            refused(b.raw(block::WRITE, n, 512, &one()))
        }),
        ("write-straddling-end", &|| {
            let d = Dma::new();
            let _ = d.describe(IOBUF.va(0), 1024);
            refused(b.raw(block::WRITE, n - 1, 1024, &d))
        }),
        ("read-sector-2^63", &|| {
            refused(b.read_into(1 << 63, 512, CHECKBUF.va(0), 512))
        }),
        ("write-sector-2^63", &|| {
            refused(b.raw(block::WRITE, 1 << 63, 512, &one()))
        }),
        ("read-sector-max", &|| {
            refused(b.read_into(u64::MAX, 512, CHECKBUF.va(0), 512))
        }),
        ("write-unaligned-length", &|| {
            let d = Dma::new();
            let _ = d.describe(IOBUF.va(0), 100);
            refused(b.raw(block::WRITE, 0, 100, &d))
        }),
        ("read-unaligned-length", &|| {
            refused(b.read_into(0, 100, CHECKBUF.va(0), 512))
        }),
        ("write-zero-length", &|| {
            refused(b.raw(block::WRITE, 0, 0, &Dma::new()))
        }),
        ("read-zero-length", &|| {
            refused(b.read_into(0, 0, CHECKBUF.va(0), 512))
        }),
        ("write-too-long", &|| {
            let d = Dma::new();
            let _ = d.describe(IOBUF.va(0), MAX_BYTES);
            refused(b.raw(block::WRITE, 0, (MAX_BYTES + 512) as u32, &d))
        }),
        ("unknown-type", &|| refused(b.raw(7, 0, 512, &one()))),
        ("write-length-mismatch", &|| {
            refused(b.raw(block::WRITE, 0, 1024, &one()))
        }),
        ("read-buffer-too-small", &|| {
            refused(b.read_into(0, 1024, CHECKBUF.va(0), 512))
        }),
        ("read-no-reply-bound", &|| {
            check!(b.unbind_reply(), "unbinding the reply array failed");
            let got = b.read_into(0, 512, CHECKBUF.va(0), 512);
            check!(b.rebind_reply(), "binding the reply array again failed");
            // The entry was not bound: the launcher cannot have touched it.
            check!(got.0 == FAILED, "result {}, want 2", got.0);
            Ok(())
        }),
        ("failed-writes-changed-nothing", &|| verify(b, n - 1)),
        ("first-sector", &|| write_and_verify(b, 0)),
        ("flush", &|| {
            if let Err(f) = b.flush() {
                check!(false, "result {} used {}", f.result, f.used);
            }
            Ok(())
        }),
    ];
    let mut failures = 0;
    for (i, (name, test)) in tests.iter().enumerate() {
        match test() {
            Ok(()) => println!("ok {} - {}", i + 1, name),
            Err(d) => {
                failures += 1;
                println!("not ok {} - {}: {}", i + 1, name, d);
            }
        }
    }
    println!("SUMMARY: {} tests, {} failures", tests.len(), failures);
    if failures == 0 {
        done()
    } else {
        hcall::crash(b"block-edges failed")
    }
}
