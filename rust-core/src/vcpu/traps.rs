//! Reflecting exceptions into the guest, and the guest's way back (`LHCALL_IRET`).
//!
//! The guest's trap handlers expect what hardware would give them: a 64-bit interrupt frame on the
//! kernel stack. We build exactly that, except that a kernel-mode frame shows Linux's RPL-0
//! `__KERNEL_CS`/`__KERNEL_DS` (0x10/0x18) where the CPU really ran ring-1 0x81/0x89, and RFLAGS.IF
//! shows the virtual interrupt flag. If the frame cannot be written — the stack is unmapped or
//! read-only — a real CPU would double fault; we kill the guest instead.

use super::gmem::GvaFault;
use super::{Env, Stop, TrapEntry, Vcpu};
use crate::abi::{self, rflags, trap, vector};
use crate::kill;

/// A short name for a vector, for kill reasons.
pub fn vector_name(v: u8) -> &'static str {
    match v {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        _ => "interrupt",
    }
}

impl Vcpu {
    /// Deliver exception `v` (with its error code, if it has one) to the guest's handler.
    pub(super) fn reflect<E: Env>(
        &mut self,
        env: &mut E,
        v: u8,
        err: Option<u64>,
    ) -> Result<(), Stop> {
        let entry = self
            .trap_table
            .get(usize::from(v))
            .copied()
            .unwrap_or_default();
        // int3/into from user mode need a gate the user may use, else they are a #GP.
        if self.user_mode && (v == vector::BP || v == vector::OF) {
            let dpl = (entry.flags & trap::DPL_MASK) >> trap::DPL_SHIFT;
            if entry.present() && dpl < 3 {
                return self.reflect(env, vector::GP, Some(u64::from(v) * 8 + 2));
            }
        }
        if !entry.present() {
            let rip = self.cpu.regs.rip;
            return Err(kill!(
                "unhandled {} (vector {v}, error {:#x}) at {rip:#x}: the guest has no handler",
                vector_name(v),
                err.unwrap_or(0)
            )
            .into());
        }
        self.push_trap_frame(env, v, err, entry, false)
    }

    /// Build the frame and enter `entry.handler` at ring 1.
    pub(super) fn push_trap_frame<E: Env>(
        &mut self,
        env: &mut E,
        v: u8,
        err: Option<u64>,
        entry: TrapEntry,
        is_irq: bool,
    ) -> Result<(), Stop> {
        let r = self.cpu.regs;
        let (stack, cs, ss) = if self.user_mode {
            if self.sp0 == 0 {
                return Err(kill!(
                    "{} from user mode, but no kernel stack was set (SET_STACK)",
                    vector_name(v)
                )
                .into());
            }
            (self.sp0, abi::USER_CS, abi::USER_DS)
        } else {
            (r.rsp, abi::FRAME_KERNEL_CS, abi::FRAME_KERNEL_DS)
        };
        let vif = if self.virtual_if(env)? { rflags::IF } else { 0 };
        let shown_flags = (r.rflags & !rflags::IF) | vif;
        let mut words = [0u64; 6];
        let mut n = 0;
        if let Some(e) = err {
            words[0] = e;
            n = 1;
        }
        for w in [r.rip, u64::from(cs), shown_flags, r.rsp, u64::from(ss)] {
            if let Some(slot) = words.get_mut(n) {
                *slot = w;
            }
            n += 1;
        }
        let mut bytes = [0u8; 48];
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(words.iter()) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let frame = (stack & !15).wrapping_sub(8 * n as u64);
        match self.write_gva(env, frame, bytes.get(..8 * n).unwrap_or(&[])) {
            Ok(()) => {}
            Err(GvaFault::Stop(s)) => return Err(s),
            Err(GvaFault::PageFault { va }) => {
                return Err(kill!(
                    "double fault: cannot deliver {} (vector {v}) at {:#x}: the guest stack at \
                     {va:#x} is not mapped writable",
                    if is_irq {
                        "an interrupt"
                    } else {
                        vector_name(v)
                    },
                    r.rip
                )
                .into())
            }
        }
        if self.user_mode {
            self.swap_gs();
            self.user_mode = false;
        }
        let regs = &mut self.cpu.regs;
        regs.rsp = frame;
        regs.rip = entry.handler;
        regs.rflags &= !(rflags::TF | rflags::NT | rflags::RF | rflags::VM);
        if is_irq || entry.flags & trap::TRAP_GATE == 0 {
            self.set_virtual_if(env, false)?;
        }
        Ok(())
    }

    /// Kernel and user GS bases trade places on every ring change (the guest cannot `swapgs`).
    pub(super) fn swap_gs(&mut self) {
        core::mem::swap(&mut self.cpu.gs_base, &mut self.gs_other);
    }

    /// `LHCALL_IRET`: pop `RAX, RIP, CS, RFLAGS, RSP, SS` from the guest stack.
    pub(super) fn iret<E: Env>(&mut self, env: &mut E) -> Result<(), Stop> {
        let mut raw = [0u8; 48];
        let sp = self.cpu.regs.rsp;
        self.read_gva_arg(env, "IRET frame", sp, &mut raw)?;
        let mut w = [0u64; 6];
        for (x, c) in w.iter_mut().zip(raw.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            *x = u64::from_le_bytes(b);
        }
        let [rax, rip, cs, rfl, rsp, ss] = w;
        let to_user = match (cs, ss) {
            (c, s)
                if c == u64::from(abi::FRAME_KERNEL_CS) && s == u64::from(abi::FRAME_KERNEL_DS) =>
            {
                false
            }
            (c, s) if c == u64::from(abi::USER_CS) && s == u64::from(abi::USER_DS) => true,
            _ => {
                return Err(kill!(
                    "IRET to CS {cs:#x} SS {ss:#x}: only 0x10/0x18 (kernel) and 0x33/0x2b (user) \
                     are allowed"
                )
                .into())
            }
        };
        self.check_code_address(rip, "IRET instruction pointer")?;
        if !super::gmem::canonical(rsp) {
            return Err(kill!("IRET to non-canonical stack pointer {rsp:#x}").into());
        }
        self.set_virtual_if(env, rfl & rflags::IF != 0)?;
        if to_user && !self.user_mode {
            self.swap_gs();
        }
        self.user_mode = to_user;
        let regs = &mut self.cpu.regs;
        regs.rax = rax;
        regs.rip = rip;
        regs.rsp = rsp;
        regs.rflags = rfl;
        Ok(())
    }

    /// A page fault in guest mode: first the shadow tables' business, else the guest's.
    pub(super) fn page_fault<E: Env>(
        &mut self,
        env: &mut E,
        cr2: u64,
        err: u64,
    ) -> Result<(), Stop> {
        if !super::gmem::canonical(cr2) {
            // Only possible on a 5-level host; a 4-level CPU would have raised #GP(0).
            return self.reflect(env, vector::GP, Some(0));
        }
        if self.in_reserved(cr2) {
            return Err(kill!("touched the reserved switcher range at {cr2:#x}").into());
        }
        match self.shadow.page_fault(env, cr2, err)? {
            crate::shadow::Fault::Fixed => Ok(()),
            crate::shadow::Fault::GeneralProtection => self.reflect(env, vector::GP, Some(0)),
            crate::shadow::Fault::Reflect { err } => {
                if self.shared.is_none() {
                    return Err(kill!(
                        "page fault at {cr2:#x} (error {err:#x}, rip {:#x}) before INIT",
                        self.cpu.regs.rip
                    )
                    .into());
                }
                self.last_cr2 = cr2;
                self.write_shared(env, core::mem::offset_of!(abi::SharedPage, cr2), cr2)?;
                self.reflect(env, vector::PF, Some(err))
            }
        }
    }
}
