//! Reaching guest memory from the host: by guest-physical address (bounds-checked against the
//! guest's limit) and by guest-virtual address (translated through the guest's own page tables,
//! page by page, exactly as the guest's CPU would see it).

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
        let mut done = 0usize;
        while done < buf.len() {
            let cur = va.wrapping_add(done as u64);
            let in_page = (PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize;
            let n = in_page.min(buf.len() - done);
            let gpa = self.gva_to_gpa(env, cur, false)?;
            let chunk = buf.get_mut(done..done + n).unwrap_or(&mut []);
            self.read_gpa(env, gpa, chunk)?;
            done += n;
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
        let mut done = 0usize;
        while done < buf.len() {
            let cur = va.wrapping_add(done as u64);
            let in_page = (PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize;
            let n = in_page.min(buf.len() - done);
            let gpa = self.gva_to_gpa(env, cur, true)?;
            let chunk = buf.get(done..done + n).unwrap_or(&[]);
            self.write_gpa(env, gpa, chunk)?;
            done += n;
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
        let len = len.min(self.console.len());
        let mut done = 0usize;
        while done < len {
            let cur = va.wrapping_add(done as u64);
            let in_page = (PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize;
            let n = in_page.min(len - done);
            let gpa = match self.gva_to_gpa(env, cur, false) {
                Ok(g) => g,
                Err(GvaFault::Stop(s)) => return Err(s),
                Err(GvaFault::PageFault { va: at, .. }) => {
                    return Err(kill!("{what}: guest address {at:#x} is not mapped").into())
                }
            };
            if !self.gpa_ok(gpa, n as u64) {
                return Err(kill!("{what}: guest-physical {gpa:#x} beyond guest memory").into());
            }
            let chunk = self.console.get_mut(done..done + n).unwrap_or(&mut []);
            env.read_gpa_bytes(gpa, chunk).map_err(|_| {
                Stop::from(kill!("guest memory at {gpa:#x} is no longer accessible"))
            })?;
            done += n;
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
        match self.read_gva(env, va, buf) {
            Ok(()) => Ok(()),
            Err(GvaFault::Stop(s)) => Err(s),
            Err(GvaFault::PageFault { va: at, .. }) => {
                Err(kill!("{what}: guest address {at:#x} is not mapped").into())
            }
        }
    }
}
