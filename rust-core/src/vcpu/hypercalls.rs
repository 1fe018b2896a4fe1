//! Hypercalls: the guest kernel's requests, `int $0x1f` with the number in RAX and arguments in
//! RDX, RBX, RCX, RSI, RDI (docs/abi.md §2.2).
//!
//! Every argument is checked; any misuse kills the guest with a reason that names the call, so a
//! guest developer sees exactly what was wrong instead of a silently ignored request.

use core::mem::offset_of;

use super::{Env, Record, Stop, Vcpu};
use crate::abi::{self, hcall, trap, AsyncCall, SharedPage, ASYNC_EMPTY, ASYNC_READY, ASYNC_RING};
use crate::kill;
use crate::switcher::tables::{sanitize_tls, tls_slot};

/// Largest one-shot timer delay we accept (about 68 years: anything longer is "never").
const MAX_TIMER_NS: u64 = 1 << 61;
/// Shortest: a guest asking for less gets this (its interrupt cannot come sooner anyway).
const MIN_TIMER_NS: u64 = 1000;

fn name(nr: u64) -> &'static str {
    match nr {
        hcall::FLUSH_ASYNC => "FLUSH_ASYNC",
        hcall::INIT => "INIT",
        hcall::CRASH => "CRASH",
        hcall::LOAD_GDT_ENTRY => "LOAD_GDT_ENTRY",
        hcall::NEW_PGTABLE => "NEW_PGTABLE",
        hcall::FLUSH_TLB => "FLUSH_TLB",
        hcall::SET_TRAP => "SET_TRAP",
        hcall::SET_STACK => "SET_STACK",
        hcall::SHUTDOWN => "SHUTDOWN",
        hcall::SET_CLOCKEVENT => "SET_CLOCKEVENT",
        hcall::HALT => "HALT",
        hcall::GET_WALLCLOCK => "GET_WALLCLOCK",
        hcall::BIND_DMA => "BIND_DMA",
        hcall::SEND_DMA => "SEND_DMA",
        hcall::SET_PTE => "SET_PTE",
        hcall::SET_PMD => "SET_PMD",
        hcall::LOAD_TLS => "LOAD_TLS",
        hcall::SET_PUD => "SET_PUD",
        hcall::SET_P4D => "SET_P4D",
        hcall::FLUSH_ONE => "FLUSH_ONE",
        hcall::RELEASE_PGTABLE => "RELEASE_PGTABLE",
        hcall::IRET => "IRET",
        hcall::SEND_INTERRUPTS => "SEND_INTERRUPTS",
        hcall::SET_SYSCALL_ENTRY => "SET_SYSCALL_ENTRY",
        hcall::SET_SEGMENT_BASE => "SET_SEGMENT_BASE",
        hcall::CONSOLE_WRITE => "CONSOLE_WRITE",
        _ => "unknown",
    }
}

/// Calls that may sit in the async ring: no result, no change of control flow.
fn queueable(nr: u64) -> bool {
    matches!(
        nr,
        hcall::FLUSH_ASYNC
            | hcall::LOAD_GDT_ENTRY
            | hcall::NEW_PGTABLE
            | hcall::FLUSH_TLB
            | hcall::SET_STACK
            | hcall::SET_PTE
            | hcall::SET_PMD
            | hcall::LOAD_TLS
            | hcall::SET_PUD
            | hcall::SET_P4D
            | hcall::FLUSH_ONE
            | hcall::RELEASE_PGTABLE
            | hcall::SET_SEGMENT_BASE
    )
}

impl Vcpu {
    /// The hypercall the guest just made (from its registers).
    pub(super) fn hypercall<E: Env>(&mut self, env: &mut E) -> Result<Option<Record>, Stop> {
        let r = self.cpu.regs;
        let args = [r.rdx, r.rbx, r.rcx, r.rsi, r.rdi];
        if self.shared.is_none() && r.rax != hcall::INIT {
            return Err(kill!(
                "the first hypercall must be INIT, not {} ({})",
                name(r.rax),
                r.rax
            )
            .into());
        }
        self.call(env, r.rax, args)
    }

    /// Run the async ring from our cursor until the first slot that is not ready.
    pub(super) fn run_async_ring<E: Env>(&mut self, env: &mut E) -> Result<(), Stop> {
        let Some(base) = self.shared else {
            return Ok(());
        };
        let status_gpa = base + offset_of!(SharedPage, hcall_status) as u64;
        let calls_gpa = base + offset_of!(SharedPage, hcalls) as u64;
        let mut status = [0u8; ASYNC_RING];
        self.read_gpa(env, status_gpa, &mut status)?;
        for _ in 0..ASYNC_RING {
            let i = self.async_cursor % ASYNC_RING;
            if status.get(i).copied() != Some(ASYNC_READY) {
                break;
            }
            let mut raw = [0u8; core::mem::size_of::<AsyncCall>()];
            let slot_gpa = calls_gpa + (i * raw.len()) as u64;
            self.read_gpa(env, slot_gpa, &mut raw)?;
            let mut w = [0u64; 6];
            for (x, c) in w.iter_mut().zip(raw.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                *x = u64::from_le_bytes(b);
            }
            let [nr, a0, a1, a2, a3, a4] = w;
            if !queueable(nr) {
                return Err(kill!("{} ({nr}) cannot be queued in the async ring", name(nr)).into());
            }
            self.call(env, nr, [a0, a1, a2, a3, a4])?;
            self.write_gpa(env, status_gpa + i as u64, &[ASYNC_EMPTY])?;
            self.async_cursor = (i + 1) % ASYNC_RING;
        }
        Ok(())
    }

    /// Execute one call. Returns a record when the launcher must see something.
    fn call<E: Env>(&mut self, env: &mut E, nr: u64, a: [u64; 5]) -> Result<Option<Record>, Stop> {
        let [a0, a1, a2, ..] = a;
        match nr {
            hcall::FLUSH_ASYNC | hcall::SEND_INTERRUPTS => {}
            hcall::INIT => self.init(env, a0)?,
            hcall::CRASH => {
                let len = a1;
                if len > hcall::CRASH_MAX {
                    return Err(kill!("CRASH message length {len} > {}", hcall::CRASH_MAX).into());
                }
                self.read_gva_to_console(env, "CRASH message", a0, len as usize)?;
                let msg = self.console.get(..len as usize).unwrap_or(&[]);
                return Err(Stop::Death(super::death::Death::from_guest_message(
                    abi::exit::CRASHED,
                    msg,
                )));
            }
            hcall::SHUTDOWN => {
                let (kind, what) = match a0 {
                    hcall::SHUTDOWN_POWEROFF => (abi::exit::POWEROFF, "power off"),
                    hcall::SHUTDOWN_RESTART => (abi::exit::RESTART, "restart"),
                    k => return Err(kill!("SHUTDOWN with unknown kind {k}").into()),
                };
                return Err(Stop::Death(super::death::Death::new(
                    kind,
                    format_args!("{what}"),
                )));
            }
            hcall::CONSOLE_WRITE => {
                let len = a1;
                if len > hcall::CONSOLE_MAX {
                    return Err(kill!("CONSOLE_WRITE length {len} > {}", hcall::CONSOLE_MAX).into());
                }
                let n = len as usize;
                self.read_gva_to_console(env, "CONSOLE_WRITE buffer", a0, n)?;
                return Ok(Some(Record::Console(n)));
            }
            hcall::LOAD_GDT_ENTRY => {
                let i = a0.wrapping_sub(abi::TLS_FIRST_ENTRY);
                let (Some(_), Some(d)) = (tls_slot(i), sanitize_tls(a1)) else {
                    return Err(kill!(
                        "LOAD_GDT_ENTRY {a0} with descriptor {a1:#x}: only TLS slots 12-14 with \
                         DPL-3 data segments (or 0)"
                    )
                    .into());
                };
                if let Some(t) = self.cpu.tls.get_mut(i as usize) {
                    *t = d;
                }
            }
            hcall::LOAD_TLS => {
                for (i, d) in [a0, a1, a2].into_iter().enumerate() {
                    let Some(d) = sanitize_tls(d) else {
                        return Err(kill!(
                            "LOAD_TLS descriptor {i} ({d:#x}) is not a DPL-3 data segment"
                        )
                        .into());
                    };
                    if let Some(t) = self.cpu.tls.get_mut(i) {
                        *t = d;
                    }
                }
            }
            hcall::NEW_PGTABLE => self.shadow.set_cr3(env, a0)?,
            hcall::RELEASE_PGTABLE => self.shadow.release(env, a0)?,
            hcall::FLUSH_TLB => match a0 {
                hcall::FLUSH_USER => self.shadow.flush_user(env),
                hcall::FLUSH_ALL => self.shadow.flush_all(env),
                k => return Err(kill!("FLUSH_TLB with unknown kind {k}").into()),
            },
            hcall::FLUSH_ONE => {
                if !super::gmem::canonical(a0) {
                    return Err(kill!("FLUSH_ONE of non-canonical address {a0:#x}").into());
                }
                self.shadow.flush_one(env, a0);
            }
            hcall::SET_PTE | hcall::SET_PMD | hcall::SET_PUD | hcall::SET_P4D => {
                self.shadow.entry_changed(env, a0)?;
            }
            hcall::SET_TRAP => self.set_trap(a0, a1, a2)?,
            hcall::SET_STACK => {
                // Traps from user mode push their frame here: it must be kernel memory the
                // guest's own tables decide about, never the switcher's.
                self.check_code_address(a0, "SET_STACK stack pointer")?;
                if a0 & 15 != 0 || a0 < 0xffff_8000_0000_0000 {
                    return Err(kill!(
                        "SET_STACK {a0:#x}: the kernel stack must be 16-byte aligned and in the upper \
                         (kernel) half"
                    )
                    .into());
                }
                self.sp0 = a0;
            }
            hcall::SET_SYSCALL_ENTRY => {
                self.check_code_address(a0, "SET_SYSCALL_ENTRY entry")?;
                self.syscall_entry = a0;
                self.syscall_mask = a1;
            }
            hcall::SET_SEGMENT_BASE => {
                if !super::gmem::canonical(a1) {
                    return Err(kill!("SET_SEGMENT_BASE with non-canonical base {a1:#x}").into());
                }
                // GS: the active base is the user's while in user mode, the kernel's otherwise.
                let (kernel_gs, user_gs) = if self.user_mode {
                    (&mut self.gs_other, &mut self.cpu.gs_base)
                } else {
                    (&mut self.cpu.gs_base, &mut self.gs_other)
                };
                match a0 {
                    hcall::SEG_FS => self.cpu.fs_base = a1,
                    hcall::SEG_GS_KERNEL => *kernel_gs = a1,
                    hcall::SEG_GS_USER => *user_gs = a1,
                    w => return Err(kill!("SET_SEGMENT_BASE of unknown segment {w}").into()),
                }
            }
            hcall::SET_CLOCKEVENT => {
                // An expiry the guest has not taken yet belongs to the old setting: withdraw it,
                // so a clock event fires at most once, for the latest setting.
                env.set_timer(None);
                let timer = 1u32 << abi::irq::TIMER;
                env.clear_irqs(timer);
                self.unposted_irqs &= !timer;
                let field = offset_of!(SharedPage, irq_pending);
                let pending = self.read_shared(env, field)?;
                if pending & u64::from(timer) != 0 {
                    self.write_shared(env, field, pending & !u64::from(timer))?;
                }
                if a0 != 0 {
                    env.set_timer(Some(a0.clamp(MIN_TIMER_NS, MAX_TIMER_NS)));
                }
            }
            hcall::HALT => self.halt(env)?,
            hcall::GET_WALLCLOCK => self.cpu.regs.rax = env.realtime_ns(),
            hcall::IRET => self.iret(env)?,
            hcall::BIND_DMA => match env.dma_bind(a0, a1, a2) {
                Ok(r) => self.cpu.regs.rax = r,
                Err(e) => return Err(kill!("BIND_DMA: {e}").into()),
            },
            hcall::SEND_DMA => match env.dma_send(a0, a1) {
                Ok(crate::dma::engine::Sent::ToLauncher) => {
                    return Ok(Some(Record::Dma { dma: a1, key: a0 }))
                }
                Ok(_) => {}
                Err(e) => return Err(kill!("SEND_DMA: {e}").into()),
            },
            _ => return Err(kill!("unknown hypercall {nr}").into()),
        }
        Ok(None)
    }

    fn init<E: Env>(&mut self, env: &mut E, gpa: u64) -> Result<(), Stop> {
        if self.shared.is_some() {
            return Err(kill!("INIT called twice").into());
        }
        if !gpa.is_multiple_of(abi::PAGE_SIZE) || !self.gpa_ok(gpa, abi::PAGE_SIZE) {
            return Err(kill!(
                "INIT: shared page {gpa:#x} is not a page-aligned address inside guest memory"
            )
            .into());
        }
        let facts = env.facts();
        let vector = self.read_u64_gpa(env, gpa + offset_of!(SharedPage, irq_vector) as u64)?;
        self.irq_vector = match vector {
            0 => abi::DEFAULT_IRQ_VECTOR as u8,
            32..=255 => vector as u8,
            v => return Err(kill!("INIT: irq_vector {v} is not in 32..=255").into()),
        };
        self.shared = Some(gpa);
        let mut features = 0;
        if facts.fsgsbase {
            features |= abi::feature::FSGSBASE;
        }
        if facts.la57 {
            features |= abi::feature::HOST_LA57;
        }
        if facts.pku {
            features |= abi::feature::PKU;
        }
        if facts.stable_tsc {
            features |= abi::feature::STABLE_TSC;
        }
        let now = env.realtime_ns();
        let u64s: [(usize, u64); 9] = [
            (offset_of!(SharedPage, reserved_start), facts.reserved.0),
            (offset_of!(SharedPage, reserved_end), facts.reserved.1),
            (offset_of!(SharedPage, tsc_khz), facts.tsc_khz),
            (offset_of!(SharedPage, wallclock_ns), now),
            (offset_of!(SharedPage, features), features),
            (offset_of!(SharedPage, guest_id), facts.guest_id),
            (offset_of!(SharedPage, cr2), 0),
            (
                offset_of!(SharedPage, irq_pending),
                u64::from(self.unposted_irqs),
            ),
            (
                offset_of!(SharedPage, paging_levels),
                4 | (abi::VERSION << 32),
            ),
        ];
        for (off, v) in u64s {
            self.write_u64_gpa(env, gpa + off as u64, v)?;
        }
        self.unposted_irqs = 0;
        let sel = u64::from(abi::GUEST_KERNEL_CS)
            | u64::from(abi::GUEST_KERNEL_DS) << 16
            | u64::from(abi::USER_CS) << 32
            | u64::from(abi::USER_DS) << 48;
        self.write_u64_gpa(env, gpa + offset_of!(SharedPage, kernel_cs) as u64, sel)?;
        let empty = [ASYNC_EMPTY; ASYNC_RING];
        self.write_gpa(
            env,
            gpa + offset_of!(SharedPage, hcall_status) as u64,
            &empty,
        )?;
        Ok(())
    }

    fn set_trap(&mut self, vector: u64, handler: u64, flags: u64) -> Result<(), Stop> {
        if vector > 255 || vector == 2 || vector == u64::from(abi::vector::HYPERCALL) {
            return Err(
                kill!("SET_TRAP for vector {vector}: not a vector the guest can handle").into(),
            );
        }
        if flags & !trap::VALID != 0 {
            return Err(kill!("SET_TRAP vector {vector}: unknown flags {flags:#x}").into());
        }
        if flags & trap::PRESENT != 0 {
            self.check_code_address(handler, "SET_TRAP handler")?;
        }
        if let Some(e) = self.trap_table.get_mut(vector as usize) {
            *e = if flags & trap::PRESENT != 0 {
                super::TrapEntry { handler, flags }
            } else {
                super::TrapEntry::default()
            };
        }
        Ok(())
    }
}
