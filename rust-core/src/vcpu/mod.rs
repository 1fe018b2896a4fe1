//! One virtual CPU: the loop behind `read()` on `/dev/lguest`.
//!
//! Each turn of the loop does what the original lguest's `run_guest()` did, in the same order:
//! finish the hypercall the guest made last time (and its queue of async calls), return to the
//! launcher if something is for it (console output, a death, a signal, a break), deliver a
//! virtual interrupt if one is due, sleep if the guest halted, and otherwise switch into the guest
//! and deal with whatever brought it back: a page fault for the shadow tables, an exception to
//! reflect, a host interrupt (already handled by then), or the next hypercall.
//!
//! Errors here carry a [`Death`] by value (a reason of a few hundred bytes: there is no allocator
//! to box it in). The path is cold — it ends the guest — so the size is accepted.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

pub mod death;
mod emulate;
pub mod env;
mod gmem;
mod hypercalls;
mod irq;
mod traps;

#[cfg(test)]
mod tests;

use crate::abi::{self, rflags, vector};
use crate::errno::Errno;
use crate::kill;
use crate::shadow::{Config as ShadowConfig, Shadow};
use crate::switcher::pages::{GuestRegs, TRAP_ABORTED};
use death::Death;
pub use env::{CpuState, Env, Exit, HostFacts};

/// One entry of the guest's trap table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapEntry {
    pub handler: u64,
    /// `abi::trap` flags; 0 = not present.
    pub flags: u64,
}

impl TrapEntry {
    pub fn present(&self) -> bool {
        self.flags & abi::trap::PRESENT != 0
    }
}

/// What `read()` hands back to the launcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// `console[..len]` holds early-console output.
    Console(usize),
    /// A DMA for the launcher: `[dma_gpa, key]`.
    Dma { dma: u64, key: u64 },
    /// The guest is gone; see [`Vcpu::death`].
    Dead,
}

/// The guest-visible state of one vCPU.
pub struct Vcpu {
    pub cpu: CpuState,
    /// Guest user mode (ring 3) rather than kernel mode (ring 1).
    pub user_mode: bool,
    pub trap_table: [TrapEntry; 256],
    pub shadow: Shadow,
    /// Guest-physical pages: `[0, pfn_limit)`.
    pfn_limit: u64,
    /// The page table the guest boots with, loaded before the first entry.
    initial_cr3: Option<u64>,
    /// The switcher's range the guest may not use.
    reserved: (u64, u64),
    /// Guest-physical address of the shared page, once `LHCALL_INIT` ran.
    shared: Option<u64>,
    irq_vector: u8,
    /// Interrupts raised before the shared page existed to post them in.
    unposted_irqs: u32,
    /// The guest is in `HALT`, waiting for an interrupt.
    halted: bool,
    /// ... or in `hlt` with interrupts off: only a signal ends that.
    halt_forever: bool,
    /// The last page-fault address delivered (what `mov %cr2` reads).
    last_cr2: u64,
    /// The host's CR4 and XCR0, for emulating `mov %cr4` and `xsetbv`.
    host_cr4: u64,
    host_xcr0: u64,
    /// The last exit was a hypercall that still needs handling.
    hypercall_pending: bool,
    /// Next async ring slot to look at.
    async_cursor: usize,
    /// Kernel stack for traps from user mode (`SET_STACK`).
    sp0: u64,
    /// `SET_SYSCALL_ENTRY`.
    syscall_entry: u64,
    syscall_mask: u64,
    /// The inactive GS base (user's while in kernel mode and the other way round).
    gs_other: u64,
    death: Option<Death>,
    pub console: [u8; abi::hcall::CONSOLE_MAX as usize],
    /// Exits seen, for statistics (world switches).
    pub exits: u64,
}

impl Vcpu {
    /// Build, in place, a vCPU about to run its first instruction at `entry` with `cr3` loaded
    /// and RSI = `rsi`. In place because a `Vcpu` is far too big for a kernel stack (the shadow
    /// page-table metadata alone is tens of KiB): no temporary of the whole struct is ever made.
    ///
    /// # Safety
    /// `this` must be valid for writes of a `Vcpu` and properly aligned; whatever it held is
    /// overwritten without being dropped.
    pub unsafe fn init_in_place(
        this: *mut Vcpu,
        pfn_limit: u64,
        entry: u64,
        cr3: u64,
        rsi: u64,
        facts: &HostFacts,
    ) {
        use core::ptr::addr_of_mut;
        let regs = GuestRegs {
            rip: entry,
            rsi,
            rflags: rflags::FIXED | rflags::IF,
            ..GuestRegs::default()
        };
        // SAFETY: the caller guarantees `this` is writable and aligned; every field is written
        // exactly once below through its own pointer, arrays element by element.
        unsafe {
            addr_of_mut!((*this).cpu).write(CpuState {
                regs,
                ..CpuState::default()
            });
            addr_of_mut!((*this).user_mode).write(false);
            let table = addr_of_mut!((*this).trap_table).cast::<TrapEntry>();
            for i in 0..256 {
                table.add(i).write(TrapEntry::default());
            }
            Shadow::init_in_place(
                addr_of_mut!((*this).shadow),
                ShadowConfig {
                    host_la57: facts.la57,
                    switcher_slot: facts.switcher_slot,
                    pfn_limit,
                    host_phys_bits: facts.phys_bits,
                    max_tables: 2048,
                },
            );
            addr_of_mut!((*this).pfn_limit).write(pfn_limit);
            addr_of_mut!((*this).initial_cr3).write(Some(cr3));
            addr_of_mut!((*this).reserved).write(facts.reserved);
            addr_of_mut!((*this).shared).write(None);
            addr_of_mut!((*this).irq_vector).write(abi::DEFAULT_IRQ_VECTOR as u8);
            addr_of_mut!((*this).unposted_irqs).write(0);
            addr_of_mut!((*this).halted).write(false);
            addr_of_mut!((*this).halt_forever).write(false);
            addr_of_mut!((*this).last_cr2).write(0);
            addr_of_mut!((*this).host_cr4).write(facts.host_cr4);
            addr_of_mut!((*this).host_xcr0).write(facts.host_xcr0);
            addr_of_mut!((*this).hypercall_pending).write(false);
            addr_of_mut!((*this).async_cursor).write(0);
            addr_of_mut!((*this).sp0).write(0);
            addr_of_mut!((*this).syscall_entry).write(0);
            addr_of_mut!((*this).syscall_mask).write(0);
            addr_of_mut!((*this).gs_other).write(0);
            addr_of_mut!((*this).death).write(None);
            addr_of_mut!((*this).console)
                .cast::<u8>()
                .write_bytes(0, abi::hcall::CONSOLE_MAX as usize);
            addr_of_mut!((*this).exits).write(0);
        }
    }

    pub fn death(&self) -> Option<&Death> {
        self.death.as_ref()
    }

    /// Release everything the guest holds (pinned pages, shadow tables, the timer).
    pub fn destroy<E: Env>(&mut self, env: &mut E) {
        env.set_timer(None);
        self.shadow.destroy(env);
    }

    fn die(&mut self, d: Death) {
        if self.death.is_none() {
            self.death = Some(d);
        }
    }

    /// Run the guest until something needs the launcher.
    pub fn run<E: Env>(&mut self, env: &mut E) -> Result<Record, Errno> {
        loop {
            if self.death.is_some() {
                return Ok(Record::Dead);
            }
            match self.step(env) {
                Ok(Some(rec)) => return Ok(rec),
                Ok(None) => {}
                Err(Stop::Errno(e)) => return Err(e),
                Err(Stop::Death(d)) => {
                    self.die(d);
                    self.destroy_after_death(env);
                    return Ok(Record::Dead);
                }
            }
        }
    }

    /// A dead guest keeps nothing pinned: its memory may be the launcher's to reuse at once.
    fn destroy_after_death<E: Env>(&mut self, env: &mut E) {
        self.destroy(env);
    }

    /// One turn of the loop. `Ok(Some(_))`: return this record; `Ok(None)`: go round again.
    fn step<E: Env>(&mut self, env: &mut E) -> Result<Option<Record>, Stop> {
        if self.hypercall_pending {
            self.hypercall_pending = false;
            self.run_async_ring(env)?;
            if let Some(rec) = self.hypercall(env)? {
                return Ok(Some(rec));
            }
            if self.death.is_some() {
                return Ok(Some(Record::Dead));
            }
        }
        if let Some(gpa) = env.dma_condemned() {
            return Err(kill!(
                "another guest found this guest's DMA receive buffer at {gpa:#x} invalid"
            )
            .into());
        }
        if env.signal_pending() {
            return Err(Stop::Errno(Errno::ERESTARTSYS));
        }
        if env.break_requested() {
            return Err(Stop::Errno(Errno::EAGAIN));
        }
        env.yield_point();
        self.gather_irqs(env)?;
        if self.halted && self.halt_forever {
            env.wait_for_irq(0);
            return Ok(None);
        }
        if self.halted {
            if !self.irq_deliverable_when_halted(env)? {
                let mask = self.wake_mask(env)?;
                env.wait_for_irq(mask);
                return Ok(None);
            }
            self.halted = false;
        }
        self.maybe_deliver_irq(env)?;

        if let Some(cr3) = self.initial_cr3.take() {
            self.shadow.set_cr3(env, cr3)?;
        }
        self.validate_for_entry()?;
        let exit = env.run_guest(&mut self.cpu, &mut self.shadow);
        self.exits += 1;
        self.after_exit(env, exit)
    }

    fn after_exit<E: Env>(&mut self, env: &mut E, exit: Exit) -> Result<Option<Record>, Stop> {
        if exit.in_switcher {
            return Err(kill!(
                "the switcher faulted entering the guest (vector {}, error {:#x} at {:#x}): \
                 bad guest state",
                exit.vector,
                exit.err,
                exit.rip
            )
            .into());
        }
        if exit.vector != TRAP_ABORTED {
            self.user_mode = match self.cpu.regs.cs & 3 {
                1 => false,
                3 => true,
                _ => return Err(kill!("exit with impossible CS {:#x}", self.cpu.regs.cs).into()),
            };
        }
        if self.shared.is_some() {
            let exits = self.exits;
            self.write_shared(env, core::mem::offset_of!(abi::SharedPage, exits), exits)?;
        }
        if self.shared.is_some() && exit.vector != u64::from(vector::HYPERCALL) {
            // Queued calls run before anything else the guest did (docs/abi.md §2.2).
            self.run_async_ring(env)?;
        }
        match exit.vector {
            v if v == u64::from(vector::HYPERCALL) => {
                self.hypercall_pending = true;
                Ok(None)
            }
            v if v == u64::from(vector::PF) => {
                self.page_fault(env, exit.cr2, exit.err)?;
                Ok(None)
            }
            v if v == u64::from(vector::NMI) || v == u64::from(vector::MC) => Ok(None),
            v if v == u64::from(vector::DF) => {
                Err(kill!("double fault in guest mode at {:#x}", self.cpu.regs.rip).into())
            }
            v if v >= u64::from(vector::FIRST_EXTERNAL) => Ok(None), // host interrupt, handled
            v if v == u64::from(vector::UD) && self.user_mode && self.try_syscall(env)? => Ok(None),
            v if v == u64::from(vector::GP)
                && !self.user_mode
                && exit.err == 0
                && self.try_emulate(env)? =>
            {
                Ok(None)
            }
            v => {
                let v = v as u8;
                let err = vector::has_error_code(v).then_some(exit.err);
                self.reflect(env, v, err)?;
                Ok(None)
            }
        }
    }

    /// Force every register the guest controls into a shape the switcher's `iretq` accepts.
    fn validate_for_entry(&mut self) -> Result<(), Stop> {
        let r = &mut self.cpu.regs;
        if self.user_mode {
            r.cs = u64::from(abi::USER_CS);
            r.ss = u64::from(abi::USER_DS);
        } else {
            r.cs = u64::from(abi::GUEST_KERNEL_CS);
            r.ss = u64::from(abi::GUEST_KERNEL_DS);
        }
        r.rflags = (r.rflags & rflags::GUEST_MASK) | rflags::FIXED | rflags::IF;
        r.trapnum = 0;
        r.errcode = 0;
        let rip = r.rip;
        let rsp = r.rsp;
        self.check_code_address(rip, "instruction pointer")?;
        if !gmem::canonical(rsp) {
            return Err(kill!("non-canonical stack pointer {rsp:#x}").into());
        }
        for (what, base) in [("FS", self.cpu.fs_base), ("GS", self.cpu.gs_base)] {
            if !gmem::canonical(base) {
                return Err(kill!("non-canonical {what} base {base:#x}").into());
            }
        }
        self.cpu.pkru &= 0xffff_ffff;
        // The switcher reloads the data selectors at ring 0, where a bad one would fault inside
        // it: anything but null, the user data segment, the guest kernel's, or a present TLS slot
        // becomes null (what the CPU itself does to selectors the new ring may not use).
        let tls = self.cpu.tls;
        for sel in self.cpu.sel.iter_mut() {
            let ok = match *sel {
                0 => true,
                s if s == abi::USER_DS || s == abi::GUEST_KERNEL_DS => true,
                s if s & 3 == 3 && (12..15).contains(&(s >> 3)) => {
                    tls.get(usize::from(s >> 3) - 12).is_some_and(|d| *d != 0)
                }
                _ => false,
            };
            if !ok {
                *sel = 0;
            }
        }
        Ok(())
    }

    /// A guest-virtual code address must be canonical and outside the switcher.
    fn check_code_address(&self, va: u64, what: &str) -> Result<(), Stop> {
        if !gmem::canonical(va) {
            return Err(kill!("non-canonical {what} {va:#x}").into());
        }
        if self.in_reserved(va) {
            return Err(kill!("{what} {va:#x} is inside the reserved switcher range").into());
        }
        Ok(())
    }

    fn in_reserved(&self, va: u64) -> bool {
        let (s, e) = self.reserved;
        va >= s && va < e
    }
}

/// Why a turn of the loop stops early.
#[derive(Debug)]
pub enum Stop {
    Errno(Errno),
    Death(Death),
}

impl From<Death> for Stop {
    fn from(d: Death) -> Self {
        Stop::Death(d)
    }
}

impl From<crate::shadow::Kill> for Stop {
    fn from(k: crate::shadow::Kill) -> Self {
        Stop::Death(kill!("{k}"))
    }
}
