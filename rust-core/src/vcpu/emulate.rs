//! What the host does for the guest's CPU that the CPU will not do at ring 1 or with SYSCALL off:
//! bouncing a user `syscall` to the guest kernel, and emulating the few privileged instructions
//! Linux executes outside its paravirt hooks (docs/abi.md §2.6–2.7). Everything else privileged
//! stays a #GP for the guest.

use super::gmem::GvaFault;
use super::{Env, Stop, Vcpu};
use crate::abi::{self, rflags, PAGE_SIZE};
use crate::kill;

/// What the guest sees in CR0: PE, MP, ET, NE, WP, AM, PG.
pub const GUEST_CR0: u64 = 0x8005_0033;

/// CR4 bits the guest does not get: global pages, user RDPMC, SMAP (all off in guest mode),
/// PCID, 5-level paging (the guest is 4-level), VMX/SMX.
const CR4_HIDDEN: u64 =
    (1 << 7) | (1 << 8) | (1 << 21) | (1 << 17) | (1 << 12) | (1 << 13) | (1 << 14);

const MAX_INSN: usize = 15;

impl Vcpu {
    /// Up to 15 instruction bytes at guest-virtual `rip` (fewer if the next page is unmapped).
    fn fetch<E: Env>(&mut self, env: &mut E, rip: u64) -> Result<([u8; MAX_INSN], usize), Stop> {
        let mut buf = [0u8; MAX_INSN];
        let first = ((PAGE_SIZE - (rip & (PAGE_SIZE - 1))) as usize).min(MAX_INSN);
        let mut n = 0;
        for (start, len) in [(0, first), (first, MAX_INSN - first)] {
            // The bytes after the last canonical page do not exist: the instruction ends there.
            if len == 0 || !super::gmem::canonical(rip.wrapping_add(start as u64)) {
                break;
            }
            let chunk = buf.get_mut(start..start + len).unwrap_or(&mut []);
            match self.read_gva(env, rip.wrapping_add(start as u64), chunk) {
                Ok(()) => n += len,
                Err(GvaFault::PageFault { .. }) => break,
                Err(GvaFault::Stop(s)) => return Err(s),
            }
        }
        Ok((buf, n))
    }

    /// A #UD from user mode: if it is `syscall`, enter the guest kernel's system call entry.
    /// Returns false if the #UD should be reflected instead.
    pub(super) fn try_syscall<E: Env>(&mut self, env: &mut E) -> Result<bool, Stop> {
        let rip = self.cpu.regs.rip;
        let (insn, n) = self.fetch(env, rip)?;
        if n < 2 || insn[..2] != [0x0f, 0x05] || self.syscall_entry == 0 || self.sp0 == 0 {
            return Ok(false);
        }
        let rcx = rip.wrapping_add(2);
        let vif = if self.virtual_if(env)? { rflags::IF } else { 0 };
        let r11 = (self.cpu.regs.rflags & !rflags::IF) | vif;
        let words = [
            rcx,
            u64::from(abi::USER_CS),
            r11,
            self.cpu.regs.rsp,
            u64::from(abi::USER_DS),
        ];
        let mut bytes = [0u8; 40];
        for (c, w) in bytes.chunks_exact_mut(8).zip(words) {
            c.copy_from_slice(&w.to_le_bytes());
        }
        let frame = self.sp0.wrapping_sub(40);
        match self.write_gva(env, frame, &bytes) {
            Ok(()) => {}
            Err(GvaFault::Stop(s)) => return Err(s),
            Err(GvaFault::PageFault { va }) => {
                return Err(kill!(
                    "double fault: cannot deliver a system call from {rip:#x}: the kernel stack at \
                     {va:#x} is not mapped writable"
                )
                .into())
            }
        }
        self.swap_gs();
        self.user_mode = false;
        let mask = self.syscall_mask;
        let r = &mut self.cpu.regs;
        r.rcx = rcx;
        r.r11 = r11;
        r.rsp = frame;
        r.rip = self.syscall_entry;
        r.rflags &= !(mask & !rflags::IF);
        if mask & rflags::IF != 0 {
            self.set_virtual_if(env, false)?;
        }
        Ok(true)
    }

    /// A #GP(0) in guest kernel mode: emulate the instruction if it is one of docs/abi.md §2.7.
    /// Returns false if the #GP should be reflected instead.
    pub(super) fn try_emulate<E: Env>(&mut self, env: &mut E) -> Result<bool, Stop> {
        let rip = self.cpu.regs.rip;
        let (insn, n) = self.fetch(env, rip)?;
        let b = |i: usize| if i < n { insn.get(i).copied() } else { None };
        // One optional REX prefix (for `mov %crN, %r8..r15`).
        let (rex, at) = match b(0) {
            Some(r @ 0x40..=0x4f) => (r, 1),
            _ => (0, 0),
        };
        let len = match (b(at), b(at + 1), b(at + 2)) {
            (Some(0xf4), _, _) if rex == 0 => {
                self.hlt(env)?;
                1
            }
            (Some(0x0f), Some(0x09), _) if rex == 0 => 2, // wbinvd: nothing to write back
            (Some(0x0f), Some(0x01), Some(0xd1)) if rex == 0 => {
                if !self.xsetbv_ok() {
                    return Ok(false);
                }
                3
            }
            (Some(0x0f), Some(0x20), Some(modrm)) if modrm >> 6 == 3 && rex & 0x4 == 0 => {
                let cr = (modrm >> 3) & 7;
                let value = match cr {
                    0 => GUEST_CR0,
                    2 => self.last_cr2,
                    3 => self.shadow.current_pml4().unwrap_or(0),
                    4 => self.host_cr4 & !CR4_HIDDEN,
                    _ => return Ok(false),
                };
                let reg = (modrm & 7) | ((rex & 1) << 3);
                *self.gpr(reg) = value;
                at + 3
            }
            _ => return Ok(false),
        };
        self.cpu.regs.rip = rip.wrapping_add(len as u64);
        Ok(true)
    }

    /// `xsetbv` is harmless when it asks for what the host's XCR0 already enables.
    fn xsetbv_ok(&self) -> bool {
        let r = &self.cpu.regs;
        let value = (r.rdx & 0xffff_ffff) << 32 | (r.rax & 0xffff_ffff);
        r.rcx & 0xffff_ffff == 0 && value & 1 != 0 && value & !self.host_xcr0 == 0
    }

    /// `hlt` at ring 1: like `HALT`, but without turning interrupts on — with the virtual IF off,
    /// only a signal ends it (Linux halts that way to stop for good).
    fn hlt<E: Env>(&mut self, env: &mut E) -> Result<(), Stop> {
        self.halted = true;
        self.halt_forever = !self.virtual_if(env)?;
        Ok(())
    }

    /// General register number `n` (0 = RAX .. 15 = R15, the x86 encoding).
    fn gpr(&mut self, n: u8) -> &mut u64 {
        let r = &mut self.cpu.regs;
        match n {
            0 => &mut r.rax,
            1 => &mut r.rcx,
            2 => &mut r.rdx,
            3 => &mut r.rbx,
            4 => &mut r.rsp,
            5 => &mut r.rbp,
            6 => &mut r.rsi,
            7 => &mut r.rdi,
            8 => &mut r.r8,
            9 => &mut r.r9,
            10 => &mut r.r10,
            11 => &mut r.r11,
            12 => &mut r.r12,
            13 => &mut r.r13,
            14 => &mut r.r14,
            _ => &mut r.r15,
        }
    }
}
