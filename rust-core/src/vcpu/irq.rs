//! Virtual interrupts: the shared page's flags, delivery, and halting.
//!
//! The guest never really disables interrupts (the CPU's IF is always on in guest mode); it keeps
//! a virtual flag in the shared page instead, which the host honours: an interrupt is delivered
//! only when `irq_enabled` is on, the irq is not blocked, and the guest is not inside its
//! no-interrupt RIP range. Delivery looks like an interrupt gate: a frame on the kernel stack and
//! the virtual flag cleared, restored by `IRET`.

use core::mem::offset_of;

use super::{Env, Stop, Vcpu};
use crate::abi::{rflags, SharedPage};
use crate::kill;

/// The first part of the shared page, which the host reads before every entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct IrqState {
    pub enabled: bool,
    pub pending: u64,
    pub blocked: u64,
    pub noirq: (u64, u64),
}

impl IrqState {
    pub fn deliverable(&self) -> u64 {
        self.pending & !self.blocked & 0xffff_ffff
    }
}

impl Vcpu {
    pub(super) fn shared_gpa(&self, field: usize) -> Option<u64> {
        self.shared.map(|s| s + field as u64)
    }

    pub(super) fn read_shared<E: Env>(&self, env: &mut E, field: usize) -> Result<u64, Stop> {
        match self.shared_gpa(field) {
            Some(gpa) => self.read_u64_gpa(env, gpa),
            None => Ok(0),
        }
    }

    pub(super) fn write_shared<E: Env>(
        &self,
        env: &mut E,
        field: usize,
        v: u64,
    ) -> Result<(), Stop> {
        match self.shared_gpa(field) {
            Some(gpa) => self.write_u64_gpa(env, gpa, v),
            None => Ok(()),
        }
    }

    fn irq_state<E: Env>(&self, env: &mut E) -> Result<IrqState, Stop> {
        let Some(base) = self.shared else {
            return Ok(IrqState::default());
        };
        let mut raw = [0u8; 0x68];
        self.read_gpa(env, base, &mut raw)?;
        let word = |off: usize| {
            let mut b = [0u8; 8];
            if let Some(s) = raw.get(off..off + 8) {
                b.copy_from_slice(s);
            }
            u64::from_le_bytes(b)
        };
        Ok(IrqState {
            enabled: word(offset_of!(SharedPage, irq_enabled)) & rflags::IF != 0,
            pending: word(offset_of!(SharedPage, irq_pending)),
            blocked: word(offset_of!(SharedPage, irq_blocked)),
            noirq: (
                word(offset_of!(SharedPage, noirq_start)),
                word(offset_of!(SharedPage, noirq_end)),
            ),
        })
    }

    /// The virtual interrupt flag as the guest last left it.
    pub(super) fn virtual_if<E: Env>(&self, env: &mut E) -> Result<bool, Stop> {
        Ok(self.read_shared(env, offset_of!(SharedPage, irq_enabled))? & rflags::IF != 0)
    }

    pub(super) fn set_virtual_if<E: Env>(&self, env: &mut E, on: bool) -> Result<(), Stop> {
        let v = if on { rflags::IF } else { 0 };
        self.write_shared(env, offset_of!(SharedPage, irq_enabled), v)
    }

    /// Move interrupts raised from outside (timer, launcher) into the guest's pending bitmap.
    pub(super) fn gather_irqs<E: Env>(&mut self, env: &mut E) -> Result<(), Stop> {
        self.unposted_irqs |= env.take_irqs();
        if self.unposted_irqs == 0 || self.shared.is_none() {
            return Ok(());
        }
        let field = offset_of!(SharedPage, irq_pending);
        let pending = self.read_shared(env, field)?;
        self.write_shared(env, field, pending | u64::from(self.unposted_irqs))?;
        self.unposted_irqs = 0;
        Ok(())
    }

    /// A halted guest wakes for any unblocked pending irq (HALT itself turned the flag on).
    pub(super) fn irq_deliverable_when_halted<E: Env>(&self, env: &mut E) -> Result<bool, Stop> {
        Ok(self.irq_state(env)?.deliverable() != 0)
    }

    /// The irqs whose arrival should wake a halted guest.
    pub(super) fn wake_mask<E: Env>(&self, env: &mut E) -> Result<u32, Stop> {
        Ok(!(self.irq_state(env)?.blocked as u32))
    }

    /// Deliver the virtual interrupt upcall if one is due and the guest can take it now.
    pub(super) fn maybe_deliver_irq<E: Env>(&mut self, env: &mut E) -> Result<(), Stop> {
        if self.shared.is_none() {
            return Ok(());
        }
        let st = self.irq_state(env)?;
        if !st.enabled || st.deliverable() == 0 {
            return Ok(());
        }
        let rip = self.cpu.regs.rip;
        if rip >= st.noirq.0 && rip < st.noirq.1 {
            return Ok(());
        }
        let vector = self.irq_vector;
        let Some(entry) = self.trap_table.get(usize::from(vector)).copied() else {
            return Ok(());
        };
        if !entry.present() {
            // Nobody to take it yet: it stays pending, as on a CPU with the vector masked.
            return Ok(());
        }
        let now = env.realtime_ns();
        self.write_shared(env, offset_of!(SharedPage, wallclock_ns), now)?;
        self.push_trap_frame(env, vector, None, entry, true)
    }

    /// `LHCALL_HALT`: interrupts on, and sleep until one is pending.
    pub(super) fn halt<E: Env>(&mut self, env: &mut E) -> Result<(), Stop> {
        if self.shared.is_none() {
            return Err(kill!("HALT before INIT").into());
        }
        self.set_virtual_if(env, true)?;
        self.halted = true;
        Ok(())
    }
}
