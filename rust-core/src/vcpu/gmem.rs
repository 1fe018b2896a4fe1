//! Reaching guest memory from the host: by guest-physical address (bounds-checked against the
//! guest's limit) and by guest-virtual address (translated through the guest's own page tables,
//! page by page, exactly as the guest's CPU would see it).

use core::ops::Range;

use super::{Stop, Vcpu};
use crate::abi::PAGE_SIZE;
use crate::kill;
use crate::shadow::Translation;

use super::Env;

/// Is `va` canonical for a 4-level guest?
pub fn canonical(va: u64) -> bool {
    (((va << 16) as i64) >> 16) as u64 == va
}

/// Why a guest-virtual access failed.
pub enum GvaFault {
    /// The guest's tables do not allow it: the guest would take this #PF.
    PageFault {
        va: u64,
    },
    Stop(Stop),
}

impl From<Stop> for GvaFault {
    fn from(s: Stop) -> Self {
        GvaFault::Stop(s)
    }
}

impl GvaFault {
    /// For a hypercall's buffer (`what`): an unmapped address is the guest's bug and kills it.
    fn fatal(self, what: &str) -> Stop {
        match self {
            GvaFault::Stop(s) => s,
            GvaFault::PageFault { va } => {
                kill!("{what}: guest address {va:#x} is not mapped").into()
            }
        }
    }
}

impl Vcpu {
    /// Is `[gpa, gpa + len)` inside guest memory?
    pub(super) fn gpa_ok(&self, gpa: u64, len: u64) -> bool {
        gpa.checked_add(len)
            .is_some_and(|end| end <= self.pfn_limit.saturating_mul(PAGE_SIZE))
    }

    pub(super) fn read_gpa<E: Env>(
        &self,
        env: &mut E,
        gpa: u64,
        buf: &mut [u8],
    ) -> Result<(), Stop> {
        if !self.gpa_ok(gpa, buf.len() as u64) {
            return Err(kill!("access to guest-physical {gpa:#x} beyond guest memory").into());
        }
        env.read_gpa_bytes(gpa, buf)
            .map_err(|_| kill!("guest memory at {gpa:#x} is no longer accessible").into())
    }

    pub(super) fn write_gpa<E: Env>(&self, env: &mut E, gpa: u64, buf: &[u8]) -> Result<(), Stop> {
        if !self.gpa_ok(gpa, buf.len() as u64) {
            return Err(kill!("access to guest-physical {gpa:#x} beyond guest memory").into());
        }
        env.write_gpa_bytes(gpa, buf)
            .map_err(|_| kill!("guest memory at {gpa:#x} is no longer accessible").into())
    }

    pub(super) fn read_u64_gpa<E: Env>(&self, env: &mut E, gpa: u64) -> Result<u64, Stop> {
        let mut b = [0u8; 8];
        self.read_gpa(env, gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub(super) fn write_u64_gpa<E: Env>(&self, env: &mut E, gpa: u64, v: u64) -> Result<(), Stop> {
        self.write_gpa(env, gpa, &v.to_le_bytes())
    }

    /// Translate one guest-virtual address for a host access.
    fn gva_to_gpa<E: Env>(&self, env: &mut E, va: u64, write: bool) -> Result<u64, GvaFault> {
        if !canonical(va) {
            return Err(Stop::from(kill!("non-canonical address {va:#x}")).into());
        }
        if self.in_reserved(va) {
            return Err(Stop::from(kill!("address {va:#x} is inside the switcher range")).into());
        }
        match self.shadow.translate(env, va, write) {
            Ok(Translation::Mapped(gpa)) => Ok(gpa),
            Ok(Translation::Fault { .. }) => Err(GvaFault::PageFault { va }),
            Err(k) => Err(Stop::from(k).into()),
        }
    }

    /// Copy `buf.len()` bytes from guest-virtual `va`.
    pub(super) fn read_gva<E: Env>(
        &mut self,
        env: &mut E,
        va: u64,
        buf: &mut [u8],
    ) -> Result<(), GvaFault> {
        let mut pages = GvaPages::new(va, buf.len(), false);
        while let Some((gpa, chunk)) = pages.next(self, env)? {
            self.read_gpa(env, gpa, buf.get_mut(chunk).unwrap_or(&mut []))?;
        }
        Ok(())
    }

    /// Copy `buf` to guest-virtual `va` (the guest's tables must allow writing).
    pub(super) fn write_gva<E: Env>(
        &mut self,
        env: &mut E,
        va: u64,
        buf: &[u8],
    ) -> Result<(), GvaFault> {
        let mut pages = GvaPages::new(va, buf.len(), true);
        while let Some((gpa, chunk)) = pages.next(self, env)? {
            self.write_gpa(env, gpa, buf.get(chunk).unwrap_or(&[]))?;
        }
        Ok(())
    }

    /// Copy `len` bytes from guest-virtual `va` into `self.console` (hypercall buffers: the
    /// console text, a crash message), without a second buffer on the kernel stack. A fault is
    /// the guest's bug and kills it.
    pub(super) fn read_gva_to_console<E: Env>(
        &mut self,
        env: &mut E,
        what: &str,
        va: u64,
        len: usize,
    ) -> Result<(), Stop> {
        let mut pages = GvaPages::new(va, len.min(self.console.len()), false);
        while let Some((gpa, chunk)) = pages.next(self, env).map_err(|f| f.fatal(what))? {
            if !self.gpa_ok(gpa, chunk.len() as u64) {
                return Err(kill!("{what}: guest-physical {gpa:#x} beyond guest memory").into());
            }
            let dst = self.console.get_mut(chunk).unwrap_or(&mut []);
            env.read_gpa_bytes(gpa, dst).map_err(|_| {
                Stop::from(kill!("guest memory at {gpa:#x} is no longer accessible"))
            })?;
        }
        Ok(())
    }

    /// Read a hypercall's buffer argument: a fault is the guest's bug, and kills it.
    pub(super) fn read_gva_arg<E: Env>(
        &mut self,
        env: &mut E,
        what: &str,
        va: u64,
        buf: &mut [u8],
    ) -> Result<(), Stop> {
        self.read_gva(env, va, buf).map_err(|f| f.fatal(what))
    }
}

/// A guest-virtual range `[va, va + len)` walked page by page, as the guest's CPU would: each
/// step translates the next piece's first address and yields its guest-physical address and the
/// piece's range in `0..len` (the caller's buffer). The first address that does not translate
/// ends the walk with the fault.
struct GvaPages {
    va: u64,
    len: usize,
    done: usize,
    /// Translate for writing (the guest's tables must allow it).
    write: bool,
}

impl GvaPages {
    fn new(va: u64, len: usize, write: bool) -> GvaPages {
        GvaPages {
            va,
            len,
            done: 0,
            write,
        }
    }

    /// The next piece: `Ok(None)` once the range is done.
    fn next<E: Env>(
        &mut self,
        vcpu: &Vcpu,
        env: &mut E,
    ) -> Result<Option<(u64, Range<usize>)>, GvaFault> {
        if self.done >= self.len {
            return Ok(None);
        }
        let cur = self.va.wrapping_add(self.done as u64);
        let in_page = (PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize;
        let piece = self.done..self.done + in_page.min(self.len - self.done);
        let gpa = vcpu.gva_to_gpa(env, cur, self.write)?;
        self.done = piece.end;
        Ok(Some((gpa, piece)))
    }
}
