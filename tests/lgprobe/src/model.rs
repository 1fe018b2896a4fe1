//! An independent model of the `/dev/lguest` rules, written from the protocol description rather
//! than from `lg_core::device`: the fuzzer predicts every result with it, and the unit tests in
//! `fuzz.rs` check it against `lg_core::device::Device` (the code the module runs).

use std::fmt;

use lg_core::abi;
use lg_core::errno::Errno;

use crate::proto::Outcome;

/// What `read()` by the owner returns on a ready device. The next milestone replaces this with
/// running the guest; the protocol suite's `read_after_init_is_enosys` is the check to change.
pub const OWNER_READ: Errno = Errno::ENOSYS;

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

/// One open file, as the model sees it: initialized or not, and by whom.
#[derive(Clone, Copy, Default, Debug)]
pub struct DevModel {
    owner: Option<u64>,
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
        match req {
            3 if arg == 1 => Expect::exactly(Effect::Block),
            3 => Expect::exactly(Effect::Ret(16)),
            _ if caller != owner => Expect::fail(Errno::EPERM),
            1 => Expect::fail(Errno::ENOENT),
            _ => Expect::exactly(Effect::Ret(16)),
        }
    }

    /// What `read()` by `caller` must get.
    pub fn expect_read(&self, caller: u64) -> Expect {
        match self.owner {
            None => Expect::fail(Errno::EINVAL),
            Some(o) if o != caller => Expect::fail(Errno::EPERM),
            Some(_) => Expect::fail(OWNER_READ),
        }
    }

    /// Follow what the device actually did: a successful INITIALIZE makes `caller` the owner.
    pub fn observe_write(&mut self, bytes: &[u8], caller: u64, got: Effect) {
        if self.owner.is_none() && got == Effect::Ret(56) && as_init(bytes).is_some() {
            self.owner = Some(caller);
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
