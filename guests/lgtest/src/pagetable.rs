//! x86_64 4-level page-table arithmetic: entry bits, indices, and which hypercall announces a
//! change at each level. The kernel's `paging.rs` does the memory accesses.

use lg_core::abi::hcall;

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const ACCESSED: u64 = 1 << 5;
pub const DIRTY: u64 = 1 << 6;
/// PS: a 2 MiB page in a PMD entry (the only large pages the ABI allows).
pub const LARGE: u64 = 1 << 7;
pub const NO_EXECUTE: u64 = 1 << 63;
/// The frame address bits of an entry (52-bit physical addresses).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// What an entry pointing at a lower-level table carries. The host sets A and D itself.
pub const TABLE: u64 = PRESENT | WRITABLE;

pub const ENTRIES: usize = 512;

/// The four levels, named as the hypercalls name them: `P4d` entries live in the PML4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    P4d,
    Pud,
    Pmd,
    Pte,
}

impl Level {
    /// Top to bottom.
    pub const ALL: [Level; 4] = [Level::P4d, Level::Pud, Level::Pmd, Level::Pte];

    /// How far the virtual-address bits this level indexes are shifted.
    pub const fn shift(self) -> u32 {
        match self {
            Level::P4d => 39,
            Level::Pud => 30,
            Level::Pmd => 21,
            Level::Pte => 12,
        }
    }

    /// The index of `va`'s entry in a table of this level.
    pub const fn index(self, va: u64) -> usize {
        ((va >> self.shift()) & 511) as usize
    }

    /// The hypercall telling the host that an entry of this level changed.
    pub const fn set_hcall(self) -> u64 {
        match self {
            Level::P4d => hcall::SET_P4D,
            Level::Pud => hcall::SET_PUD,
            Level::Pmd => hcall::SET_PMD,
            Level::Pte => hcall::SET_PTE,
        }
    }

    /// The level below, if any.
    pub const fn below(self) -> Option<Level> {
        match self {
            Level::P4d => Some(Level::Pud),
            Level::Pud => Some(Level::Pmd),
            Level::Pmd => Some(Level::Pte),
            Level::Pte => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Level::P4d => "P4D",
            Level::Pud => "PUD",
            Level::Pmd => "PMD",
            Level::Pte => "PTE",
        }
    }
}

/// Is `va` canonical for 4-level paging (bits 63..47 all equal)?
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == (1 << 17) - 1
}

/// Do `[a_start, a_end)` and `[b_start, b_end)` share an address? Empty ranges share nothing.
pub const fn overlaps(a_start: u64, a_end: u64, b_start: u64, b_end: u64) -> bool {
    a_start < a_end && b_start < b_end && a_start < b_end && b_start < a_end
}

/// The frame an entry points at.
pub const fn frame(entry: u64) -> u64 {
    entry & ADDR_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_of_the_kernel_base() {
        let va = crate::KERNEL_BASE + 0x20_1000;
        assert_eq!(Level::P4d.index(va), 511);
        assert_eq!(Level::Pud.index(va), 510);
        assert_eq!(Level::Pmd.index(va), 1);
        assert_eq!(Level::Pte.index(va), 1);
    }

    #[test]
    fn levels_chain_downwards_with_their_hypercalls() {
        let mut l = Some(Level::P4d);
        let mut seen = Vec::new();
        while let Some(level) = l {
            seen.push((level, level.set_hcall()));
            l = level.below();
        }
        assert_eq!(
            seen,
            [
                (Level::P4d, 18),
                (Level::Pud, 17),
                (Level::Pmd, 15),
                (Level::Pte, 14)
            ]
        );
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), Level::ALL);
    }

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0));
        assert!(is_canonical(0x0000_7fff_ffff_ffff));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(!is_canonical(0x8000_0000_0000_0000));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(is_canonical(crate::KERNEL_BASE));
    }

    #[test]
    fn range_overlap() {
        assert!(overlaps(0, 10, 9, 20));
        assert!(!overlaps(0, 10, 10, 20));
        assert!(!overlaps(0, 10, 5, 5), "an empty range overlaps nothing");
        assert!(overlaps(5, 6, 0, 10));
    }

    #[test]
    fn frame_strips_flags_and_nx() {
        assert_eq!(frame(0x8000_0000_0012_3067), 0x12_3000);
        assert_eq!(frame(LARGE | PRESENT | 0x40_0000), 0x40_0000);
    }
}
