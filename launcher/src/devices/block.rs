//! Block devices (type 3, docs/abi.md §3.4): `--block=FILE` is the guest's `/dev/lgba`, the next
//! `/dev/lgbb`, and so on.
//!
//! The device's page holds one request at a time:
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | `u32 type` | 0 read, 1 write, 2 flush |
//! | 4 | `u32 result` | we set 1 done, 2 error |
//! | 8 | `u64 sector` | first 512-byte sector |
//! | 16 | `u32 bytes` | length, a multiple of 512 |
//! | 24 | `u64 num_sectors` | we set the device's size |
//!
//! The guest fills the request and sends to the page: a write carries the data, a read sends an
//! empty descriptor and has bound a reply entry at the page, which we claim with `LHREQ_GETDMA`
//! and fill. `SEND_DMA` is synchronous: when the guest continues, the data has reached the file
//! (`pwrite` done; a flush is an `fdatasync`) or is in its memory, and `result` says how it went.
//!
//! The request is the guest's and never trusted: the type, the alignment, the length (at most 16
//! pages, what one descriptor can carry) and the range (checked arithmetic: a sector of 2^63 is
//! just out of range) are checked first; the data's descriptor like every other one.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{claim, gather, raise, scatter, set_used, Problem};
use crate::device::LguestDevice;
use crate::error::{os_msg, Error, Quoted, Role};
use lg_core::abi::dev::block::{
    DONE, FAILED, FLUSH, OFF_BYTES, OFF_NUM_SECTORS, OFF_RESULT, OFF_SECTOR, OFF_TYPE, READ,
    REQUEST_SIZE, SECTOR, WRITE,
};
use lg_core::abi::PAGE_SIZE;
use lg_core::dma::{Dma, GuestMem, MemFault, MAX_SECTIONS};

/// The largest request: what one descriptor's sections can hold.
pub const MAX_BYTES: u32 = (MAX_SECTIONS as u64 * PAGE_SIZE) as u32;

/// A checked request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read { offset: u64, len: u32 },
    Write { offset: u64, len: u32 },
    Flush,
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    UnknownType(u32),
    Empty,
    Unaligned(u32),
    TooLong(u32),
    PastEnd {
        sector: u64,
        bytes: u32,
        num_sectors: u64,
    },
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            BadRequest::UnknownType(t) => write!(f, "unknown request type {t}"),
            BadRequest::Empty => f.write_str("a request for 0 bytes"),
            BadRequest::Unaligned(b) => write!(f, "{b} bytes is not a multiple of {SECTOR}"),
            BadRequest::TooLong(b) => write!(f, "{b} bytes is more than {MAX_BYTES} per request"),
            BadRequest::PastEnd {
                sector,
                bytes,
                num_sectors,
            } => write!(
                f,
                "{bytes} bytes at sector {sector} lie beyond the end of the device ({num_sectors} \
                 sectors)"
            ),
        }
    }
}

/// Checks the request in the first [`REQUEST_SIZE`] bytes of the page against a device of
/// `num_sectors` sectors.
pub fn parse_request(raw: &[u8; REQUEST_SIZE], num_sectors: u64) -> Result<Op, BadRequest> {
    let u32_at = |off: u64| {
        let at = off as usize;
        u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]])
    };
    let kind = u32_at(OFF_TYPE);
    let mut sector_bytes = [0u8; 8];
    let at = OFF_SECTOR as usize;
    sector_bytes.copy_from_slice(&raw[at..at + 8]);
    let sector = u64::from_le_bytes(sector_bytes);
    let bytes = u32_at(OFF_BYTES);
    if kind == FLUSH {
        return Ok(Op::Flush);
    }
    if kind != READ && kind != WRITE {
        return Err(BadRequest::UnknownType(kind));
    }
    if bytes == 0 {
        return Err(BadRequest::Empty);
    }
    if !u64::from(bytes).is_multiple_of(SECTOR) {
        return Err(BadRequest::Unaligned(bytes));
    }
    if bytes > MAX_BYTES {
        return Err(BadRequest::TooLong(bytes));
    }
    let past_end = BadRequest::PastEnd {
        sector,
        bytes,
        num_sectors,
    };
    let end_sector = sector
        .checked_add(u64::from(bytes) / SECTOR)
        .ok_or(past_end)?;
    if end_sector > num_sectors {
        return Err(past_end);
    }
    // Cannot overflow: sector < num_sectors, which came from a file size.
    let offset = sector.checked_mul(SECTOR).ok_or(past_end)?;
    Ok(if kind == READ {
        Op::Read { offset, len: bytes }
    } else {
        Op::Write { offset, len: bytes }
    })
}

/// One block device.
pub struct Block {
    /// Guest-physical address of its page: the request, and the key.
    pub page: u64,
    pub irq: u32,
    /// The guest's name for it (`lgba`, ...).
    name: String,
    path: PathBuf,
    file: File,
    num_sectors: u64,
}

impl Block {
    /// Opens `path` read-write (a regular file or a block device): the device is its size in whole
    /// sectors.
    pub fn open(path: &Path, name: String, page: u64, irq: u32) -> Result<Block, Error> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|err| Error::CannotOpen {
                role: Role::Block,
                path: path.to_owned(),
                err,
            })?;
        // Seeking works for block devices too, whose metadata says 0 bytes.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|err| Error::BlockSize {
                path: path.to_owned(),
                err,
            })?;
        Ok(Block {
            page,
            irq,
            name,
            path: path.to_owned(),
            file,
            num_sectors: size / SECTOR,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{}: {}, {} sectors ({} bytes)",
            self.name,
            Quoted::new(self.path.as_os_str()),
            self.num_sectors,
            self.num_sectors * SECTOR
        )
    }

    /// The page as the guest first sees it: no request, the size.
    pub fn init_page(&self, mem: &mut dyn GuestMem) -> Result<(), MemFault> {
        mem.write(self.page, &[0u8; REQUEST_SIZE])?;
        mem.write(self.page + OFF_NUM_SECTORS, &self.num_sectors.to_le_bytes())
    }

    /// The guest sent the descriptor at `gpa` to our page: carry out the request in the page, set
    /// `result` and the sender's `used_len`, raise our irq.
    pub fn handle(
        &mut self,
        mem: &mut dyn GuestMem,
        dev: &mut dyn LguestDevice,
        gpa: u64,
    ) -> Result<Problem, Error> {
        let mut raw = [0u8; REQUEST_SIZE];
        let outcome = match mem.read(self.page, &mut raw) {
            Ok(()) => match parse_request(&raw, self.num_sectors) {
                Ok(op) => self.perform(op, mem, dev, gpa)?,
                Err(bad) => Err(bad.to_string()),
            },
            Err(_) => Err("its page is unreadable".to_owned()),
        };
        let (result, used, problem) = match outcome {
            Ok(bytes) => (DONE, bytes, None),
            Err(why) => (
                FAILED,
                0,
                Some(format!("{}: {why}: request failed", self.name)),
            ),
        };
        let _ = mem.write(self.page + OFF_RESULT, &result.to_le_bytes());
        let _ = set_used(mem, gpa, used);
        raise(dev, self.irq)?;
        Ok(problem)
    }

    /// Does `op`; the bytes transferred, or why not.
    fn perform(
        &mut self,
        op: Op,
        mem: &mut dyn GuestMem,
        dev: &mut dyn LguestDevice,
        gpa: u64,
    ) -> Result<Result<u32, String>, Error> {
        Ok(match op {
            Op::Flush => self
                .file
                .sync_data()
                .map(|()| 0)
                .map_err(|e| format!("flush: {}", os_msg(&e))),
            Op::Write { offset, len } => self.write(mem, gpa, offset, len),
            Op::Read { offset, len } => {
                let Some(reply) = claim(dev, self.page)? else {
                    return Ok(Err("read with no reply buffer bound".to_owned()));
                };
                let done = self.read(mem, reply, offset, len);
                // Filled: used_len says how much. Failed: give the entry back unused.
                let used = *done.as_ref().unwrap_or(&0);
                let _ = set_used(mem, reply, used);
                done
            }
        })
    }

    fn write(
        &mut self,
        mem: &mut dyn GuestMem,
        gpa: u64,
        offset: u64,
        len: u32,
    ) -> Result<u32, String> {
        let dma = Dma::fetch(mem, gpa).map_err(|bad| format!("write data: {bad}"))?;
        if dma.total() != u64::from(len) {
            return Err(format!(
                "write of {len} bytes carries {} bytes of data",
                dma.total()
            ));
        }
        let data = gather(mem, &dma).map_err(|_| "write data unreadable".to_owned())?;
        self.file
            .write_all_at(&data, offset)
            .map_err(|e| format!("write at byte {offset}: {}", os_msg(&e)))?;
        Ok(len)
    }

    fn read(
        &mut self,
        mem: &mut dyn GuestMem,
        reply: u64,
        offset: u64,
        len: u32,
    ) -> Result<u32, String> {
        let dma = Dma::fetch(mem, reply).map_err(|bad| format!("read buffer: {bad}"))?;
        if dma.total() < u64::from(len) {
            return Err(format!(
                "read of {len} bytes into a buffer of {} bytes",
                dma.total()
            ));
        }
        let mut data = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut data, offset)
            .map_err(|e| format!("read at byte {offset}: {}", os_msg(&e)))?;
        match scatter(mem, &dma, &data) {
            Ok(n) if n == data.len() => Ok(len),
            _ => Err("read buffer unwritable".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{FakeLguest, FakeMem};
    use super::*;
    use rustix::io::Errno;

    fn request(kind: u32, sector: u64, bytes: u32) -> [u8; REQUEST_SIZE] {
        let mut r = [0u8; REQUEST_SIZE];
        r[0..4].copy_from_slice(&kind.to_le_bytes());
        r[4..8].copy_from_slice(&7u32.to_le_bytes()); // a stale result: ignored
        r[8..16].copy_from_slice(&sector.to_le_bytes());
        r[16..20].copy_from_slice(&bytes.to_le_bytes());
        r
    }

    #[test]
    fn requests_are_validated() {
        let n = 2048; // 1 MiB
        assert_eq!(
            parse_request(&request(READ, 0, 512), n),
            Ok(Op::Read {
                offset: 0,
                len: 512
            })
        );
        assert_eq!(
            parse_request(&request(WRITE, 2040, 4096), n),
            Ok(Op::Write {
                offset: 2040 * 512,
                len: 4096
            })
        );
        assert_eq!(
            parse_request(&request(READ, 0, MAX_BYTES), n),
            Ok(Op::Read {
                offset: 0,
                len: 65536
            })
        );
        assert_eq!(
            parse_request(&request(FLUSH, u64::MAX, 3), n),
            Ok(Op::Flush)
        );
        // Past the end, by one sector or by a lot.
        assert!(matches!(
            parse_request(&request(READ, 2041, 4096), n),
            Err(BadRequest::PastEnd { sector: 2041, .. })
        ));
        assert!(matches!(
            parse_request(&request(WRITE, 2048, 512), n),
            Err(BadRequest::PastEnd { .. })
        ));
        // Sectors whose byte offset or end would overflow.
        for sector in [1 << 63, u64::MAX, u64::MAX - 1, (u64::MAX / 512) + 1] {
            assert!(
                matches!(
                    parse_request(&request(READ, sector, 512), n),
                    Err(BadRequest::PastEnd { .. })
                ),
                "{sector:#x}"
            );
            assert!(matches!(
                parse_request(&request(WRITE, sector, 512), u64::MAX),
                Err(BadRequest::PastEnd { .. }) | Ok(_)
            ));
        }
        // Even on a device as big as a u64 allows, 2^63 * 512 does not wrap into range.
        assert!(parse_request(&request(READ, 1 << 63, 512), u64::MAX).is_err());
        assert_eq!(
            parse_request(&request(READ, 0, 100), n),
            Err(BadRequest::Unaligned(100))
        );
        assert_eq!(
            parse_request(&request(WRITE, 0, 513), n),
            Err(BadRequest::Unaligned(513))
        );
        assert_eq!(
            parse_request(&request(READ, 0, MAX_BYTES + 512), n),
            Err(BadRequest::TooLong(66048))
        );
        assert_eq!(
            parse_request(&request(READ, 0, u32::MAX - 511), n),
            Err(BadRequest::TooLong(u32::MAX - 511))
        );
        assert_eq!(
            parse_request(&request(READ, 0, 0), n),
            Err(BadRequest::Empty)
        );
        assert_eq!(
            parse_request(&request(3, 0, 512), n),
            Err(BadRequest::UnknownType(3))
        );
        assert_eq!(
            BadRequest::PastEnd {
                sector: 9,
                bytes: 1024,
                num_sectors: 8
            }
            .to_string(),
            "1024 bytes at sector 9 lie beyond the end of the device (8 sectors)"
        );
    }

    const PAGE: u64 = 0x8000;
    const SEND: u64 = 0x100;
    const REPLY: u64 = 0x300;

    struct Disk {
        dir: PathBuf,
        block: Block,
        mem: FakeMem,
        dev: FakeLguest,
    }

    impl Drop for Disk {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn disk(name: &str, contents: Vec<u8>) -> Disk {
        let dir = super::super::tests::tempdir(&format!("block-{name}"));
        let path = dir.join("disk.img");
        std::fs::write(&path, contents).expect("write");
        let block = Block::open(&path, "lgba".into(), PAGE, 4).expect("open");
        let mut mem = FakeMem::new(0x9000);
        block.init_page(&mut mem).expect("page");
        Disk {
            dir,
            block,
            mem,
            dev: FakeLguest::default(),
        }
    }

    impl Disk {
        fn submit(&mut self, kind: u32, sector: u64, bytes: u32) -> Problem {
            let r = request(kind, sector, bytes);
            self.mem.put(PAGE, &r[..OFF_RESULT as usize]);
            self.mem.put(PAGE + OFF_RESULT, &0u32.to_le_bytes());
            self.mem.put(PAGE + 8, &r[8..]);
            self.block
                .handle(&mut self.mem, &mut self.dev, SEND)
                .expect("no device error")
        }

        fn result(&self) -> u32 {
            self.mem.u32_at(PAGE + OFF_RESULT)
        }

        fn file(&self) -> Vec<u8> {
            std::fs::read(self.dir.join("disk.img")).expect("read")
        }
    }

    #[test]
    fn page_holds_the_size() {
        let d = disk("size", vec![0; 4 * 512 + 511]);
        assert_eq!(
            u64::from_le_bytes(d.mem.get(PAGE + 24, 8).try_into().unwrap()),
            4
        );
        assert!(d.block.describe().starts_with("lgba: '"));
        assert!(d
            .block
            .describe()
            .ends_with("disk.img', 4 sectors (2048 bytes)"));
    }

    #[test]
    fn write_then_read_back() {
        let mut d = disk("rw", vec![0; 8 * 512]);
        // 1024 bytes from two pages' worth of sections.
        d.mem.put(0x1e00, &[0xaa; 512]);
        d.mem.put(0x2000, &[0xbb; 512]);
        d.mem.put_dma(SEND, 0, &[(0x1e00, 512), (0x2000, 512)]);
        assert_eq!(d.submit(WRITE, 3, 1024), None);
        assert_eq!(d.result(), DONE);
        assert_eq!(d.mem.u32_at(SEND), 1024);
        assert_eq!(d.dev.irqs, [4]);
        let file = d.file();
        assert!(file[3 * 512..4 * 512].iter().all(|&b| b == 0xaa));
        assert!(file[4 * 512..5 * 512].iter().all(|&b| b == 0xbb));
        assert!(file[..3 * 512].iter().all(|&b| b == 0));

        // Read it back into the reply entry the guest bound at the page.
        d.mem.put_dma(SEND, 0, &[]);
        d.mem.put_dma(REPLY, 4, &[(0x4000, 700), (0x5000, 1000)]);
        d.dev.getdma.push_back(Ok(REPLY));
        assert_eq!(d.submit(READ, 3, 1024), None);
        assert_eq!(d.dev.keys, [PAGE]);
        assert_eq!(d.result(), DONE);
        assert_eq!(d.mem.u32_at(REPLY), 1024);
        assert!(d.mem.get(0x4000, 512).iter().all(|&b| b == 0xaa));
        assert!(d.mem.get(0x4200, 188).iter().all(|&b| b == 0xbb));
        assert!(d.mem.get(0x5000, 324).iter().all(|&b| b == 0xbb));
        assert!(d.mem.get(0x5000 + 324, 10).iter().all(|&b| b == 0));

        assert_eq!(d.submit(FLUSH, 0, 0), None);
        assert_eq!(d.result(), DONE);
        assert_eq!(d.dev.irqs, [4, 4, 4]);
    }

    #[test]
    fn bad_requests_fail_without_touching_the_file() {
        let mut d = disk("bad", vec![0x11; 4 * 512]);
        d.mem.put(0x2000, &[0xee; 512]);
        d.mem.put_dma(SEND, 0, &[(0x2000, 512)]);
        for (kind, sector, bytes) in [
            (WRITE, 4, 512),
            (WRITE, 1 << 63, 512),
            (WRITE, u64::MAX, 512),
            (WRITE, 0, 100),
            (WRITE, 0, MAX_BYTES + 512),
            (9, 0, 512),
        ] {
            let problem = d.submit(kind, sector, bytes);
            assert!(problem.is_some_and(|p| p.starts_with("lgba: ")));
            assert_eq!(d.result(), FAILED, "{kind} {sector} {bytes}");
            assert_eq!(d.mem.u32_at(SEND), 0);
        }
        // The data does not match the request.
        assert!(d.submit(WRITE, 0, 1024).is_some());
        assert_eq!(d.result(), FAILED);
        // Data in a section that crosses a page.
        d.mem.put_dma(SEND, 0, &[(0x2f00, 512)]);
        assert!(d
            .submit(WRITE, 0, 512)
            .is_some_and(|p| p.contains("crosses a page")));
        assert!(d.file().iter().all(|&b| b == 0x11));
        // Every request still raised the irq: the guest is never left waiting.
        assert_eq!(d.dev.irqs.len(), 8);
    }

    #[test]
    fn reads_need_a_good_reply_buffer() {
        let mut d = disk("reply", vec![0x22; 4 * 512]);
        d.mem.put_dma(SEND, 0, &[]);
        // None bound, or all busy.
        d.dev.getdma.push_back(Err(Errno::NOENT));
        assert!(d.submit(READ, 0, 512).is_some());
        assert_eq!(d.result(), FAILED);
        d.dev.getdma.push_back(Err(Errno::NOSPC));
        assert!(d.submit(READ, 0, 512).is_some());
        // Too small: failed, and the entry is given back (used_len 0).
        d.mem.put_dma(REPLY, 4, &[(0x4000, 256)]);
        d.dev.getdma.push_back(Ok(REPLY));
        assert!(d.submit(READ, 0, 512).is_some());
        assert_eq!(d.result(), FAILED);
        assert_eq!(d.mem.u32_at(REPLY), 0);
        assert!(d.mem.get(0x4000, 256).iter().all(|&b| b == 0));
        // A section outside guest memory.
        d.mem.put_dma(REPLY, 4, &[(0x9000, 512)]);
        d.dev.getdma.push_back(Ok(REPLY));
        assert!(d.submit(READ, 0, 512).is_some());
        assert_eq!(d.mem.u32_at(REPLY), 0);
        // A read past the end never even asks for the buffer.
        let asked = d.dev.keys.len();
        assert!(d.submit(READ, 4, 512).is_some());
        assert_eq!(d.dev.keys.len(), asked);
    }

    #[test]
    fn open_errors_name_the_file() {
        let dir = super::super::tests::tempdir("block-open");
        let path = dir.join("missing.img");
        let err = Block::open(&path, "lgba".into(), PAGE, 1)
            .err()
            .expect("fails");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot open block file '{}': No such file or directory",
                path.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
