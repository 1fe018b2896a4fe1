//! An independent model of the `/dev/lguest` rules, written from the protocol description rather
//! than from `lg_core::device`: the fuzzer predicts every result with it, and the unit tests in
//! `fuzz.rs` check it against `lg_core::device::Device` (the code the module runs).

use std::fmt;

use lg_core::abi::{self, exit, record};
use lg_core::errno::Errno;

use crate::proto::{Outcome, ReadOutcome};
use crate::report::{hex, show};

/// What INITIALIZE validation depends on.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// First address above the user address space (`TASK_SIZE_MAX`).
    pub user_top: u64,
    /// The switcher's guest-virtual range, if known. When unknown, an entry point in the kernel
    /// half may be accepted or refused (`EINVAL`).
    pub switcher: Option<(u64, u64)>,
}

/// Everything a write or read can do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Effect {
    /// Returned this value.
    Ret(u64),
    /// Failed with this errno.
    Fail(Errno),
    /// BREAK 1: blocked until a BREAK 0, then returned 16.
    Block,
}

impl From<Outcome> for Effect {
    fn from(o: Outcome) -> Effect {
        match o {
            Ok(n) => Effect::Ret(n as u64),
            Err(e) => Effect::Fail(e),
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Ret(n) => write!(f, "{n}"),
            Effect::Fail(e) => f.write_str(&crate::report::errno_name(*e)),
            Effect::Block => f.write_str("blocks until BREAK 0, then 16"),
        }
    }
}

/// The result the model predicts: exactly one, or (for an entry point that may be the switcher's)
/// one of two.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Expect {
    pub want: Effect,
    pub alt: Option<Effect>,
}

impl Expect {
    pub fn exactly(want: Effect) -> Expect {
        Expect { want, alt: None }
    }

    fn fail(e: Errno) -> Expect {
        Self::exactly(Effect::Fail(e))
    }

    pub fn allows(&self, got: Effect) -> bool {
        got == self.want || Some(got) == self.alt
    }

    /// `Ok(())` if `got` is allowed, else a "got X, want Y" detail.
    pub fn judge(&self, got: Effect) -> Result<(), String> {
        if self.allows(got) {
            Ok(())
        } else {
            Err(format!("got {got}, want {self}"))
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.alt {
            None => write!(f, "{}", self.want),
            Some(alt) => write!(f, "{} or {}", self.want, alt),
        }
    }
}

/// One open file, as the model sees it: initialized or not, by whom, and whether its guest has
/// died.
///
/// lgprobe's guests are garbage (zeroed or inaccessible memory), so the owner's first `read()`
/// that gets as far as running the guest kills it: the guest faults on its first instruction
/// before `LHCALL_INIT`. From then on every read returns the same `DEAD`/`KILLED` record and every
/// valid write but `INITIALIZE` fails with `ENOENT`.
#[derive(Clone, Default, Debug)]
pub struct DevModel {
    owner: Option<u64>,
    /// Set once the guest has died: as much of its record as the reads so far have seen.
    dead: Option<Known>,
}

/// What the reads so far have seen of a dead guest's record.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Known {
    /// The longest prefix of the record read so far.
    pub bytes: Vec<u8>,
    /// Some read had room to spare, so `bytes` is the whole record.
    pub complete: bool,
}

/// What a `read()` must return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadExpect {
    Fail(Errno),
    /// The `DEAD`/`KILLED` record (see [`check_dead_record`]), cut to the `len`-byte buffer, and
    /// agreeing with what earlier reads saw of it.
    Dead {
        len: usize,
        known: Known,
    },
}

impl ReadExpect {
    /// `Ok(())` if `got` is allowed, else a "got X, want Y" detail.
    pub fn judge(&self, got: &ReadOutcome) -> Result<(), String> {
        match (self, got) {
            (ReadExpect::Fail(want), Err(e)) if e == want => Ok(()),
            (ReadExpect::Dead { len, known }, Ok(b)) => {
                check_dead_record(b, *len)?;
                let n = (*len).min(known.bytes.len());
                let agrees = b.get(..n) == known.bytes.get(..n);
                if !agrees || (known.complete && b.len() != n) {
                    let want = known.bytes.get(..n).unwrap_or(&[]);
                    return Err(format!(
                        "the record changed: got [{}], earlier [{}]{}",
                        hex(b),
                        hex(want),
                        if known.complete { "" } else { "..." }
                    ));
                }
                Ok(())
            }
            (want, got) => Err(format!("got {}, want {want}", show_read(got))),
        }
    }
}

impl fmt::Display for ReadExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadExpect::Fail(e) => f.write_str(&crate::report::errno_name(*e)),
            ReadExpect::Dead { len, .. } => {
                write!(f, "a DEAD/KILLED record (buffer of {len} bytes)")
            }
        }
    }
}

/// `EINVAL` for a failed read, `DEAD record` for one that returned a record (the fuzzer's tally).
pub fn read_effect(got: &ReadOutcome) -> String {
    match got {
        Ok(_) => "DEAD record".into(),
        Err(e) => crate::report::errno_name(*e),
    }
}

/// A read's result for a failure message: the errno, or the length and the bytes.
pub fn show_read(got: &ReadOutcome) -> String {
    match got {
        Ok(b) => format!("{} bytes [{}]", b.len(), hex(b)),
        Err(e) => show(Err(*e)),
    }
}

/// Check `b`, what a read into a `len`-byte buffer returned, as the record of a guest the host
/// killed: `u64 record::DEAD`, `u64 exit::KILLED`, then a non-empty reason of printable ASCII, all
/// cut to the buffer.
pub fn check_dead_record(b: &[u8], len: usize) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{why}: {} bytes [{}]", b.len(), hex(b)));
    if b.len() > len {
        return bad(&format!("more than the {len}-byte buffer"));
    }
    if b.len() <= 16 {
        return bad("not a DEAD record with a reason (at most 16 bytes)");
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[8 * i..8 * i + 8]);
        u64::from_le_bytes(w)
    };
    if word(0) != record::DEAD {
        return bad(&format!(
            "record kind {} is not DEAD ({})",
            word(0),
            record::DEAD
        ));
    }
    if word(1) != exit::KILLED {
        return bad(&format!(
            "exit kind {} is not KILLED ({})",
            word(1),
            exit::KILLED
        ));
    }
    if let Some(i) = b[16..].iter().position(|c| !(0x20..0x7f).contains(c)) {
        return bad(&format!(
            "reason byte {i} ({:#04x}) is not printable",
            b[16 + i]
        ));
    }
    Ok(())
}

/// "KILLED: <reason>" for the log.
pub fn describe_record(b: &[u8]) -> String {
    let reason = b.get(16..).unwrap_or(&[]);
    format!("KILLED: {}", String::from_utf8_lossy(reason))
}

/// The words of a write, if its length is a whole number of words no longer than the longest
/// request.
fn words(bytes: &[u8]) -> Option<Vec<u64>> {
    if !bytes.len().is_multiple_of(8) || bytes.len() > abi::MAX_WRITE {
        return None;
    }
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    Some(bytes.chunks_exact(8).map(word).collect())
}

/// Is this write an INITIALIZE with the right number of arguments?
fn as_init(bytes: &[u8]) -> Option<[u64; 6]> {
    let w = words(bytes)?;
    match w.as_slice() {
        [0, args @ ..] => args.try_into().ok(),
        _ => None,
    }
}

impl DevModel {
    /// What `caller` writing `bytes` must get.
    pub fn expect_write(&self, bytes: &[u8], caller: u64, limits: &Limits) -> Expect {
        let einval = Expect::fail(Errno::EINVAL);
        let Some(w) = words(bytes) else { return einval };
        // Shape: request word plus exactly the request's argument count.
        let (req, arg) = match w.as_slice() {
            [0, _, _, _, _, _, _] => (0, 0),
            &[req @ 1..=3, arg] => (req, arg),
            _ => return einval,
        };
        // Arguments wrong in themselves, refused whatever the state.
        if (req == 2 && arg >= abi::NR_IRQS) || (req == 3 && arg > 1) {
            return einval;
        }
        if let Some(args) = as_init(bytes) {
            if self.owner.is_some() {
                return Expect::fail(Errno::EBUSY);
            }
            return expect_init(&args, limits);
        }
        let Some(owner) = self.owner else {
            return einval;
        };
        // Death comes before the owner check: even a non-owner's BREAK or IRQ gets ENOENT.
        if self.dead.is_some() {
            return Expect::fail(Errno::ENOENT);
        }
        match req {
            3 if arg == 1 => Expect::exactly(Effect::Block),
            3 => Expect::exactly(Effect::Ret(16)),
            _ if caller != owner => Expect::fail(Errno::EPERM),
            1 => Expect::fail(Errno::ENOENT),
            _ => Expect::exactly(Effect::Ret(16)),
        }
    }

    /// What `read()` by `caller` into a `len`-byte buffer must get: EINVAL before initialization,
    /// EPERM for anyone but the owner, EINVAL for a buffer under `MIN_READ` (before anything
    /// runs), else the dead guest's record (the first such read is what kills it).
    pub fn expect_read(&self, caller: u64, len: usize) -> ReadExpect {
        match self.owner {
            None => ReadExpect::Fail(Errno::EINVAL),
            Some(o) if o != caller => ReadExpect::Fail(Errno::EPERM),
            Some(_) if len < abi::MIN_READ => ReadExpect::Fail(Errno::EINVAL),
            Some(_) => ReadExpect::Dead {
                len,
                known: self.dead.clone().unwrap_or_default(),
            },
        }
    }

    /// Is the guest dead (as far as the reads so far show)?
    pub fn is_dead(&self) -> bool {
        self.dead.is_some()
    }

    /// Follow what the device actually did: a successful INITIALIZE makes `caller` the owner.
    pub fn observe_write(&mut self, bytes: &[u8], caller: u64, got: Effect) {
        if self.owner.is_none() && got == Effect::Ret(56) && as_init(bytes).is_some() {
            self.owner = Some(caller);
        }
    }

    /// Follow a read: the owner reading a record means the guest is dead; remember the record.
    pub fn observe_read(&mut self, caller: u64, len: usize, got: &ReadOutcome) {
        let Ok(b) = got else { return };
        if self.owner != Some(caller) || len < abi::MIN_READ {
            return;
        }
        let known = self.dead.get_or_insert_with(Known::default);
        if !known.complete && b.len() >= known.bytes.len() {
            known.bytes.clone_from(b);
            known.complete = b.len() < len;
        }
    }
}

/// INITIALIZE on an uninitialized file: the version first (EPROTO), then each argument (EINVAL).
fn expect_init(a: &[u64; 6], limits: &Limits) -> Expect {
    let [version, mem_base, pfn_limit, entry, cr3, boot_params] = *a;
    let einval = Expect::fail(Errno::EINVAL);
    if version != abi::VERSION {
        return Expect::fail(Errno::EPROTO);
    }
    let page = abi::PAGE_SIZE;
    if mem_base == 0 || mem_base % page != 0 {
        return einval;
    }
    if pfn_limit == 0 || pfn_limit > abi::MAX_GUEST_PAGES {
        return einval;
    }
    let size = pfn_limit * page;
    if mem_base
        .checked_add(size)
        .is_none_or(|end| end > limits.user_top)
    {
        return einval;
    }
    if cr3 % page != 0 || cr3 >= size || boot_params % page != 0 || boot_params >= size {
        return einval;
    }
    let top17 = entry >> 47;
    if top17 != 0 && top17 != 0x1_ffff {
        return einval; // not canonical
    }
    let ok = Effect::Ret(56);
    match limits.switcher {
        Some((start, end)) if (start..end).contains(&entry) => einval,
        Some(_) => Expect::exactly(ok),
        None if entry >= 0xffff_8000_0000_0000 => Expect {
            want: ok,
            alt: Some(Effect::Fail(Errno::EINVAL)),
        },
        None => Expect::exactly(ok),
    }
}
