//! Walking the guest's own page tables, as the CPU would if it could read guest-physical memory.

use super::table::{A, ADDR, D, GUEST_RESERVED, HUGE_OFFSET, HUGE_RESERVED, NX, P, PS, RW, US};
use super::{Kill, ShadowHost, NO_SRC};

// Page-fault error code bits (SDM vol. 3, §4.7).
pub const PF_P: u64 = 1 << 0;
pub const PF_W: u64 = 1 << 1;
pub const PF_U: u64 = 1 << 2;
pub const PF_RSVD: u64 = 1 << 3;
pub const PF_I: u64 = 1 << 4;
pub const PF_PK: u64 = 1 << 5;

/// What an access wants, decoded from a #PF error code.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub write: bool,
    /// From guest user mode (ring 3); ring 1 is a supervisor ring, as ring 0 would be.
    pub user: bool,
    pub fetch: bool,
}

impl Access {
    pub fn from_err(err: u64) -> Self {
        Access {
            write: err & PF_W != 0,
            user: err & PF_U != 0,
            fetch: err & PF_I != 0,
        }
    }

    /// The error code the guest sees for this access: P says whether its translation was present.
    pub fn code(self, present: bool) -> u64 {
        let mut err = if present { PF_P } else { 0 };
        if self.write {
            err |= PF_W;
        }
        if self.user {
            err |= PF_U;
        }
        if self.fetch {
            err |= PF_I;
        }
        err
    }
}

/// Is `va` canonical for a 4-level guest (bits 63..=47 all equal)?
pub fn canonical(va: u64) -> bool {
    (((va << 16) as i64) >> 16) as u64 == va
}

/// Index into the table of paging level `level` (1 = PT .. 4 = PML4) for `va`.
pub fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level.saturating_sub(1) & 3))) & 511) as usize
}

/// A complete guest translation: every level present.
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    /// The guest tables the walk read, PML4 first. For a 2 MiB page the last is [`NO_SRC`]: the
    /// shadow's page table for it is derived from the PD entry, not from a guest page table.
    pub tables: [u64; 4],
    /// `(gpa, value)` of each entry used, PML4 entry first; `depth` of them (3 for a 2 MiB page).
    entries: [(u64, u64); 4],
    depth: usize,
    /// The guest-physical page the address lands in (not yet checked against the memory limit).
    pub frame: u64,
    /// Effective permissions: RW and US are ANDed over the levels, NX is ORed.
    pub rw: bool,
    pub us: bool,
    pub nx: bool,
}

pub enum Outcome {
    Mapped(Walk),
    /// Some level is not present.
    NotPresent,
}

/// Walk the guest tables rooted at `cr3` (already checked to be inside guest memory) for `va`.
///
/// Present entries are checked as the CPU would check them, but a violation kills the guest
/// instead of raising a reserved-bit fault: the ABI promises that no valid guest produces one.
/// Every table the walk moves to must lie inside guest memory (`limit` bytes).
pub fn walk<H: ShadowHost>(host: &mut H, limit: u64, cr3: u64, va: u64) -> Result<Outcome, Kill> {
    let mut w = Walk {
        tables: [cr3, NO_SRC, NO_SRC, NO_SRC],
        entries: [(0, 0); 4],
        depth: 0,
        frame: 0,
        rw: true,
        us: true,
        nx: false,
    };
    let mut table = cr3;
    for level in (1..=4u32).rev() {
        let gpa = table | ((index(va, level) as u64) << 3);
        let e = host.read_gpa(gpa).map_err(|_| Kill::GuestMemory)?;
        if e & P == 0 {
            return Ok(Outcome::NotPresent);
        }
        let ps = e & PS != 0 && level > 1;
        if e & GUEST_RESERVED != 0
            || (ps && level == 4)
            || (ps && level == 2 && e & HUGE_RESERVED != 0)
        {
            return Err(Kill::ReservedBits {
                va,
                level: level as u8,
                entry: e,
            });
        }
        if ps && level == 3 {
            return Err(Kill::GiantPage { va, entry: e });
        }
        if let Some(slot) = w.entries.get_mut(w.depth) {
            *slot = (gpa, e);
        }
        w.depth += 1;
        w.rw &= e & RW != 0;
        w.us &= e & US != 0;
        w.nx |= e & NX != 0;
        if level == 1 || ps {
            w.frame = if ps {
                (e & ADDR & !(HUGE_OFFSET | 0xfff)) | (va & HUGE_OFFSET)
            } else {
                e & ADDR
            };
            return Ok(Outcome::Mapped(w));
        }
        table = e & ADDR;
        if table >= limit {
            return Err(Kill::TableBeyondMemory { va, gpa: table });
        }
        // tables[0] is the PML4; the table found in a level-`level` entry is tables[4 - level + 1].
        if let Some(t) = w.tables.get_mut(5 - level as usize) {
            *t = table;
        }
    }
    // Unreachable: level 1 always returns above.
    Ok(Outcome::NotPresent)
}

impl Walk {
    /// Would the CPU allow `a` through this translation? CR0.WP is set, so supervisor writes need
    /// RW too.
    pub fn permits(&self, a: Access) -> bool {
        !((a.write && !self.rw) || (a.user && !self.us) || (a.fetch && self.nx))
    }

    /// Is the leaf entry's Dirty bit set?
    pub fn dirty(&self) -> bool {
        self.leaf().1 & D != 0
    }

    fn leaf(&self) -> (u64, u64) {
        self.entries
            .get(self.depth.wrapping_sub(1))
            .copied()
            .unwrap_or((0, 0))
    }

    /// Do what the CPU does on a successful walk: set Accessed in every entry, and Dirty in the
    /// leaf for a write. Only entries whose value changes are written back.
    pub fn mark<H: ShadowHost>(&mut self, host: &mut H, write: bool) -> Result<(), Kill> {
        let depth = self.depth;
        for (i, (gpa, val)) in self.entries.iter_mut().take(depth).enumerate() {
            let mut new = *val | A;
            if write && i + 1 == depth {
                new |= D;
            }
            if new != *val {
                host.write_gpa(*gpa, new).map_err(|_| Kill::GuestMemory)?;
                *val = new;
            }
        }
        Ok(())
    }
}
