//! Decoding and validating what a launcher writes to `/dev/lguest`.
//!
//! This is the first untrusted input the module sees. The C shim copies at most
//! [`abi::MAX_WRITE`] bytes into kernel memory and hands them here; nothing is acted on until the
//! whole write has been checked, so a refused write has no side effects.

use crate::abi::{self, lhreq};
use crate::errno::Errno;

/// The arguments of `LHREQ_INITIALIZE`, as the launcher wrote them (not yet validated against the
/// host: see [`InitArgs::validate`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct InitArgs {
    /// Must equal [`abi::VERSION`].
    pub abi_version: u64,
    /// Launcher virtual address of guest-physical 0. Page aligned.
    pub mem_base: u64,
    /// Guest-physical pages the guest may use (RAM plus device pages): `[0, pfn_limit)`.
    pub pfn_limit: u64,
    /// Guest-virtual address of the first instruction.
    pub entry: u64,
    /// Guest-physical address of the initial top-level page table.
    pub cr3: u64,
    /// Guest-physical address of the zero page (`struct boot_params`), passed in RSI.
    pub boot_params: u64,
}

/// One decoded request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Request {
    Initialize(InitArgs),
    GetDma { key: u64 },
    Irq { irq: u64 },
    Break { on: bool },
}

/// What the host tells the validator about itself.
#[derive(Clone, Copy, Debug)]
pub struct HostLimits {
    /// First address above the launcher's user address space (`TASK_SIZE_MAX`).
    pub user_top: u64,
    /// Guest-virtual range reserved for the switcher, `[start, end)`; the entry point may not be in it.
    pub switcher: (u64, u64),
}

impl Request {
    /// Number of `u64` arguments that follow the request word, or `None` for an unknown request.
    pub fn nr_args(req: u64) -> Option<usize> {
        match req {
            lhreq::INITIALIZE => Some(6),
            lhreq::GETDMA | lhreq::IRQ | lhreq::BREAK => Some(1),
            _ => None,
        }
    }

    /// Decode one write. Refuses (`EINVAL`) short, long, ragged and unknown writes, and
    /// arguments that are wrong in themselves (an irq past 31, a BREAK that is neither 0 nor 1).
    pub fn parse(bytes: &[u8]) -> Result<Request, Errno> {
        if bytes.len() > abi::MAX_WRITE || !bytes.len().is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        let mut words = [0u64; abi::MAX_WRITE / 8];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        let n = bytes.len() / 8;
        let (&req, args) = words
            .get(..n)
            .and_then(|w| w.split_first())
            .ok_or(Errno::EINVAL)?;
        if Self::nr_args(req) != Some(args.len()) {
            return Err(Errno::EINVAL);
        }
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        Ok(match req {
            lhreq::INITIALIZE => Request::Initialize(InitArgs {
                abi_version: arg(0),
                mem_base: arg(1),
                pfn_limit: arg(2),
                entry: arg(3),
                cr3: arg(4),
                boot_params: arg(5),
            }),
            lhreq::GETDMA => Request::GetDma { key: arg(0) },
            lhreq::IRQ if arg(0) < abi::NR_IRQS => Request::Irq { irq: arg(0) },
            lhreq::BREAK if arg(0) <= 1 => Request::Break { on: arg(0) == 1 },
            _ => return Err(Errno::EINVAL),
        })
    }
}

/// True if `va` is canonical for a guest with 4-level paging (48-bit addresses).
pub fn is_canonical_48(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == (1 << 17) - 1
}

impl InitArgs {
    /// Check the arguments against the ABI and the host. `EPROTO` means the launcher speaks
    /// another ABI version; every other problem is `EINVAL`.
    pub fn validate(&self, host: &HostLimits) -> Result<(), Errno> {
        if self.abi_version != abi::VERSION {
            return Err(Errno::EPROTO);
        }
        let page_mask = abi::PAGE_SIZE - 1;
        if self.mem_base == 0 || self.mem_base & page_mask != 0 {
            return Err(Errno::EINVAL);
        }
        if self.pfn_limit == 0 || self.pfn_limit > abi::MAX_GUEST_PAGES {
            return Err(Errno::EINVAL);
        }
        let mem_bytes = self.pfn_limit << abi::PAGE_SHIFT; // <= 2^36, cannot overflow
        let end = self.mem_base.checked_add(mem_bytes).ok_or(Errno::EINVAL)?;
        if end > host.user_top {
            return Err(Errno::EINVAL);
        }
        if self.cr3 & page_mask != 0 || self.cr3 >= mem_bytes {
            return Err(Errno::EINVAL);
        }
        if self.boot_params & page_mask != 0 || self.boot_params >= mem_bytes {
            return Err(Errno::EINVAL);
        }
        let (sw_start, sw_end) = host.switcher;
        if !is_canonical_48(self.entry) || (self.entry >= sw_start && self.entry < sw_end) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    const HOST: HostLimits = HostLimits {
        user_top: 0x0000_7fff_ffff_f000,
        switcher: (0xffff_c900_0000_0000, 0xffff_c980_0000_0000),
    };

    fn good_init() -> InitArgs {
        InitArgs {
            abi_version: abi::VERSION,
            mem_base: 0x7f00_0000_0000,
            pfn_limit: 16384,
            entry: 0xffff_ffff_8010_0000,
            cr3: 0x10_0000,
            boot_params: 0x1000,
        }
    }

    #[test]
    fn parses_every_request() {
        let i = good_init();
        let w = [
            0,
            i.abi_version,
            i.mem_base,
            i.pfn_limit,
            i.entry,
            i.cr3,
            i.boot_params,
        ];
        assert_eq!(Request::parse(&bytes(&w)), Ok(Request::Initialize(i)));
        assert_eq!(
            Request::parse(&bytes(&[1, 0x1000])),
            Ok(Request::GetDma { key: 0x1000 })
        );
        assert_eq!(
            Request::parse(&bytes(&[2, 31])),
            Ok(Request::Irq { irq: 31 })
        );
        assert_eq!(
            Request::parse(&bytes(&[3, 1])),
            Ok(Request::Break { on: true })
        );
        assert_eq!(
            Request::parse(&bytes(&[3, 0])),
            Ok(Request::Break { on: false })
        );
    }

    #[test]
    fn refuses_malformed_writes() {
        for bad in [
            vec![],
            vec![0u8; 4],
            vec![0u8; 12],
            bytes(&[0]),
            bytes(&[0, 1, 2, 3, 4, 5]),
            bytes(&[0, 1, 2, 3, 4, 5, 6, 7]),
            bytes(&[1]),
            bytes(&[1, 2, 3]),
            bytes(&[2, 32]),
            bytes(&[2, u64::MAX]),
            bytes(&[3, 2]),
            bytes(&[4, 0]),
            bytes(&[u64::MAX, 0]),
            vec![0u8; abi::MAX_WRITE + 8],
        ] {
            assert_eq!(Request::parse(&bad), Err(Errno::EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn init_validation() {
        assert_eq!(good_init().validate(&HOST), Ok(()));
        type Case = (fn(&mut InitArgs), Errno);
        let cases: &[Case] = &[
            (|i| i.abi_version = 0, Errno::EPROTO),
            (|i| i.abi_version = 2, Errno::EPROTO),
            (|i| i.mem_base = 0, Errno::EINVAL),
            (|i| i.mem_base += 1, Errno::EINVAL),
            (|i| i.mem_base = 0x7fff_ffff_f000, Errno::EINVAL),
            (|i| i.mem_base = !0xfff, Errno::EINVAL),
            (|i| i.pfn_limit = 0, Errno::EINVAL),
            (|i| i.pfn_limit = abi::MAX_GUEST_PAGES + 1, Errno::EINVAL),
            (|i| i.cr3 = 16384 << 12, Errno::EINVAL),
            (|i| i.cr3 = 0x1008, Errno::EINVAL),
            (|i| i.boot_params = 16384 << 12, Errno::EINVAL),
            (|i| i.boot_params = 0x10, Errno::EINVAL),
            (|i| i.entry = 0x0000_8000_0000_0000, Errno::EINVAL),
            (|i| i.entry = 0xffff_c900_0000_1000, Errno::EINVAL),
        ];
        for (mutate, want) in cases {
            let mut i = good_init();
            mutate(&mut i);
            assert_eq!(i.validate(&HOST), Err(*want), "{i:x?}");
        }
    }

    #[test]
    fn canonical() {
        assert!(is_canonical_48(0));
        assert!(is_canonical_48(0x7fff_ffff_ffff));
        assert!(!is_canonical_48(0x8000_0000_0000));
        assert!(is_canonical_48(0xffff_8000_0000_0000));
        assert!(!is_canonical_48(0xff7f_ffff_ffff_ffff));
    }
}
