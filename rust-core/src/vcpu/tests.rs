//! The vCPU against a fake world: guest memory and page tables from the shadow-paging tests'
//! fake host, and a "CPU" that replays a script of exits. Every rule of docs/abi.md §2 that the
//! host enforces has a test here; the same behaviour is checked for real in the VM scenarios.

use std::collections::VecDeque;

use super::*;
use crate::abi::{exit, hcall, trap, SharedPage};
use crate::shadow::tests::model::{Fake, GUEST_PAGES, SWITCHER_SLOT_4};
use crate::shadow::{MemFault, ShadowHost, TablePage};
use core::mem::offset_of;

const KERNEL: u64 = 0xffff_ffff_8000_0000;
const CODE: u64 = KERNEL + 0x20_0000;
const STACK_TOP: u64 = KERNEL + 0x30_0000;
const SHARED_GPA: u64 = 0x31_0000;
const BUF: u64 = KERNEL + 0x32_0000;
const HANDLER: u64 = CODE + 0x800;
const P_RW: u64 = 0x3 | 0x20 | 0x40;

type Step = Box<dyn FnMut(&mut CpuState, &mut Fake) -> Exit>;

struct FakeEnv {
    mem: Fake,
    script: VecDeque<Step>,
    /// Registers at each entry.
    entries: Vec<CpuState>,
    irqs: u32,
    timer: Option<Option<u64>>,
    waits: u32,
    /// Interrupts raised when the vCPU sleeps in HALT.
    irq_on_wait: u32,
    signal: bool,
}

impl ShadowHost for FakeEnv {
    fn read_gpa(&mut self, gpa: u64) -> Result<u64, MemFault> {
        self.mem.read_gpa(gpa)
    }
    fn write_gpa(&mut self, gpa: u64, val: u64) -> Result<(), MemFault> {
        self.mem.write_gpa(gpa, val)
    }
    fn pin(&mut self, gpa: u64) -> Result<u64, MemFault> {
        self.mem.pin(gpa)
    }
    fn unpin(&mut self, pfn: u64) {
        self.mem.unpin(pfn)
    }
    fn alloc_table(&mut self) -> Option<TablePage> {
        self.mem.alloc_table()
    }
    fn free_table(&mut self, t: TablePage) {
        self.mem.free_table(t)
    }
}

impl Env for FakeEnv {
    fn read_gpa_bytes(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let g = gpa as usize;
        buf.copy_from_slice(self.mem.mem.get(g..g + buf.len()).ok_or(MemFault)?);
        Ok(())
    }
    fn write_gpa_bytes(&mut self, gpa: u64, buf: &[u8]) -> Result<(), MemFault> {
        let g = gpa as usize;
        self.mem
            .mem
            .get_mut(g..g + buf.len())
            .ok_or(MemFault)?
            .copy_from_slice(buf);
        Ok(())
    }
    fn run_guest(&mut self, cpu: &mut CpuState, shadow: &mut Shadow) -> Exit {
        assert!(shadow.root_pa().is_some(), "entered without a page table");
        self.entries.push(*cpu);
        match self.script.pop_front() {
            Some(mut step) => step(cpu, &mut self.mem),
            // End of the script: pretend a signal arrived (an NMI exit changes nothing), so the
            // loop returns to the test with the guest alive and this entry recorded.
            None => {
                self.signal = true;
                Exit {
                    vector: u64::from(vector::NMI),
                    ..Exit::default()
                }
            }
        }
    }
    fn signal_pending(&mut self) -> bool {
        self.signal
    }
    fn break_requested(&mut self) -> bool {
        false
    }
    fn take_irqs(&mut self) -> u32 {
        std::mem::take(&mut self.irqs)
    }
    fn clear_irqs(&mut self, mask: u32) {
        self.irqs &= !mask;
    }
    fn set_timer(&mut self, ns: Option<u64>) {
        self.timer = Some(ns);
    }
    fn wait_for_irq(&mut self, mask: u32) {
        self.waits += 1;
        self.irqs |= self.irq_on_wait;
        if mask == 0 {
            // Nothing can wake this sleep but a signal: deliver one, or the test would hang.
            self.signal = true;
        }
    }
    fn yield_point(&mut self) {}
    fn realtime_ns(&mut self) -> u64 {
        1_700_000_000_000_000_000
    }
    fn dma_bind(&mut self, _: u64, _: u64, arg: u64) -> Result<u64, crate::dma::engine::DmaError> {
        if arg & 0xff > 31 {
            return Err(crate::dma::engine::DmaError::BadIrq { irq: arg & 0xff });
        }
        Ok(1)
    }
    fn dma_send(
        &mut self,
        _: u64,
        _: u64,
    ) -> Result<crate::dma::engine::Sent, crate::dma::engine::DmaError> {
        Ok(crate::dma::engine::Sent::ToLauncher)
    }
    fn dma_condemned(&mut self) -> Option<u64> {
        None
    }
    fn facts(&self) -> HostFacts {
        HostFacts {
            la57: false,
            reserved: (0xffff_c800_0000_0000, 0xffff_c880_0000_0000),
            switcher_slot: SWITCHER_SLOT_4,
            tsc_khz: 2_000_000,
            stable_tsc: true,
            fsgsbase: true,
            pku: false,
            guest_id: 7,
            phys_bits: 46,
            host_cr4: 0x3506f0 | (1 << 12),
            host_xcr0: 0x7,
        }
    }
}

/// A guest with its code, stack, shared page and a buffer mapped at kernel addresses.
fn world() -> (Box<Vcpu>, FakeEnv) {
    let mut mem = Fake::new(GUEST_PAGES);
    let cr3 = mem.guest_page();
    for (va, gpa) in [
        (CODE, 0x20_0000),
        (STACK_TOP - 0x1000, 0x2f_f000),
        (KERNEL + SHARED_GPA, SHARED_GPA),
        (BUF, 0x32_0000),
        (BUF + 0x1000, 0x32_1000),
    ] {
        mem.map(cr3, va, gpa | P_RW, P_RW);
    }
    mem.write(0x32_0000, u64::from_le_bytes(*b"hello wo"));
    let env = FakeEnv {
        mem,
        script: VecDeque::new(),
        entries: Vec::new(),
        irqs: 0,
        timer: None,
        waits: 0,
        irq_on_wait: 0,
        signal: false,
    };
    let mut v = Box::<Vcpu>::new_uninit();
    // SAFETY: a fresh, aligned allocation of the right size.
    unsafe { Vcpu::init_in_place(v.as_mut_ptr(), GUEST_PAGES, CODE, cr3, 0x1000, &env.facts()) };
    // SAFETY: fully initialized just above.
    let mut v = unsafe { v.assume_init() };
    v.cpu.regs.rsp = STACK_TOP;
    (v, env)
}

/// The guest makes hypercall `nr` (advancing RIP past `int $0x1f`).
fn hc(nr: u64, args: [u64; 5]) -> Step {
    Box::new(move |cpu, _| {
        let r = &mut cpu.regs;
        r.rax = nr;
        [r.rdx, r.rbx, r.rcx, r.rsi, r.rdi] = args;
        r.rip += 2;
        r.cs = u64::from(abi::GUEST_KERNEL_CS);
        Exit {
            vector: u64::from(vector::HYPERCALL),
            ..Exit::default()
        }
    })
}

/// The guest takes exception `v` at its current RIP.
fn trap(v: u8, err: u64, cr2: u64) -> Step {
    Box::new(move |cpu, _| {
        cpu.regs.cs = u64::from(abi::GUEST_KERNEL_CS);
        Exit {
            vector: u64::from(v),
            err,
            cr2,
            ..Exit::default()
        }
    })
}

fn init() -> Step {
    hc(hcall::INIT, [SHARED_GPA, 0, 0, 0, 0])
}

fn shared(env: &FakeEnv, field: usize) -> u64 {
    env.mem.read(SHARED_GPA + field as u64)
}

fn reason(v: &Vcpu) -> String {
    String::from_utf8_lossy(v.death().expect("dead").reason()).into_owned()
}

/// Replay `steps`, then stop at the next entry (whose registers are the last in `env.entries`).
fn run_script(v: &mut Vcpu, env: &mut FakeEnv, steps: Vec<Step>) -> Result<Record, Errno> {
    env.script.extend(steps);
    env.signal = false;
    v.run(env)
}

#[test]
fn first_hypercall_must_be_init() {
    let (mut v, mut env) = world();
    let r = run_script(
        &mut v,
        &mut env,
        vec![hc(hcall::CONSOLE_WRITE, [BUF, 5, 0, 0, 0])],
    );
    assert_eq!(r, Ok(Record::Dead));
    assert_eq!(v.death().unwrap().kind, exit::KILLED);
    assert!(reason(&v).contains("first hypercall must be INIT, not CONSOLE_WRITE"));
    assert!(env.mem.pins.is_empty(), "a dead guest keeps nothing pinned");
    assert!(env.mem.tables.is_empty());
}

#[test]
fn init_fills_the_shared_page_and_console_output_reaches_the_launcher() {
    let (mut v, mut env) = world();
    env.mem.write(SHARED_GPA + 0x100, u64::MAX - 1); // garbage ring status: INIT resets it
    let r = run_script(
        &mut v,
        &mut env,
        vec![init(), hc(hcall::CONSOLE_WRITE, [BUF + 0xffd, 8, 0, 0, 0])],
    );
    assert_eq!(r, Ok(Record::Console(8)));
    assert_eq!(
        shared(&env, offset_of!(SharedPage, paging_levels)),
        4 | (1 << 32)
    );
    assert_eq!(
        shared(&env, offset_of!(SharedPage, reserved_start)),
        0xffff_c800_0000_0000
    );
    assert_eq!(shared(&env, offset_of!(SharedPage, tsc_khz)), 2_000_000);
    assert_eq!(shared(&env, offset_of!(SharedPage, guest_id)), 7);
    assert_eq!(shared(&env, offset_of!(SharedPage, hcall_status)), u64::MAX);
    // The buffer straddled two pages: 3 bytes from one, 5 from the next.
    assert_eq!(&v.console[..3], &[0, 0, 0]);
    // A second INIT is an error.
    let r = run_script(&mut v, &mut env, vec![init()]);
    assert_eq!(r, Ok(Record::Dead));
    assert_eq!(reason(&v), "INIT called twice");
}

#[test]
fn shutdown_crash_and_unknown_calls() {
    let (mut v, mut env) = world();
    run_script(&mut v, &mut env, vec![init(), hc(hcall::SHUTDOWN, [0; 5])]).unwrap();
    assert_eq!(v.death().unwrap().kind, exit::POWEROFF);

    let (mut v, mut env) = world();
    run_script(
        &mut v,
        &mut env,
        vec![init(), hc(hcall::CRASH, [BUF, 5, 0, 0, 0])],
    )
    .unwrap();
    assert_eq!(v.death().unwrap().kind, exit::CRASHED);
    assert_eq!(reason(&v), "hello");

    for (nr, args, want) in [
        (9999, [0; 5], "unknown hypercall 9999"),
        (
            hcall::SHUTDOWN,
            [7, 0, 0, 0, 0],
            "SHUTDOWN with unknown kind 7",
        ),
        (
            hcall::CONSOLE_WRITE,
            [BUF, 4097, 0, 0, 0],
            "CONSOLE_WRITE length 4097 > 4096",
        ),
        (
            hcall::CONSOLE_WRITE,
            [KERNEL + 0x50_0000, 1, 0, 0, 0],
            "is not mapped",
        ),
        (
            hcall::CONSOLE_WRITE,
            [0x8000_0000_0000_0000, 1, 0, 0, 0],
            "non-canonical",
        ),
        (
            hcall::NEW_PGTABLE,
            [0x1234, 0, 0, 0, 0],
            "page table root 0x1234",
        ),
        (
            hcall::FLUSH_TLB,
            [2, 0, 0, 0, 0],
            "FLUSH_TLB with unknown kind 2",
        ),
        (hcall::SET_TRAP, [2, HANDLER, 1, 0, 0], "vector 2"),
        (
            hcall::SET_TRAP,
            [6, HANDLER, 0x80, 0, 0],
            "unknown flags 0x80",
        ),
        (
            hcall::SET_TRAP,
            [6, 0xffff_c800_0000_1000, 1, 0, 0],
            "inside the reserved switcher",
        ),
        (
            hcall::LOAD_TLS,
            [0x00cf_b300_0000_ffff, 0, 0, 0, 0],
            "not a DPL-3 data segment",
        ),
        (
            hcall::LOAD_GDT_ENTRY,
            [8, 0, 0, 0, 0],
            "only TLS slots 12-14",
        ),
        (
            hcall::SET_SEGMENT_BASE,
            [0, 1 << 63, 0, 0, 0],
            "non-canonical base",
        ),
        (
            hcall::BIND_DMA,
            [0x8000, 0x9000, (1 << 8) | 40, 0, 0],
            "irq 40 is not in 0..=31",
        ),
    ] {
        let (mut v, mut env) = world();
        run_script(&mut v, &mut env, vec![init(), hc(nr, args)]).unwrap();
        assert!(
            reason(&v).contains(want),
            "{nr}: {} lacks {want}",
            reason(&v)
        );
        assert!(env.mem.pins.is_empty());
    }
}

#[test]
fn exceptions_are_reflected_with_a_hardware_frame() {
    let (mut v, mut env) = world();
    let set_trap = hc(hcall::SET_TRAP, [6, HANDLER, trap::PRESENT, 0, 0]);
    let irq_on: Step = Box::new(|cpu, mem| {
        mem.write(SHARED_GPA, 0x200);
        cpu.regs.rip += 2;
        Exit {
            vector: u64::from(vector::HYPERCALL),
            ..Exit::default()
        }
    });
    let ud = trap(vector::UD, 0, 0);
    let _ = run_script(&mut v, &mut env, vec![init(), set_trap, irq_on, ud]);
    // The entry after the #UD: at the handler, on the stack, virtual IF off, ring 1.
    let at = env.entries.last().unwrap().regs;
    let before = env.entries[env.entries.len() - 2].regs;
    assert_eq!(at.rip, HANDLER);
    assert_eq!(at.cs, u64::from(abi::GUEST_KERNEL_CS));
    assert_eq!(at.rsp, (STACK_TOP & !15) - 40);
    let frame: Vec<u64> = (0..5)
        .map(|i| env.mem.read(0x2f_f000 + 0x1000 - 40 + 8 * i))
        .collect();
    assert_eq!(
        frame,
        vec![before.rip, 0x10, before.rflags | 0x200, STACK_TOP, 0x18]
    );
    assert_eq!(
        shared(&env, 0),
        0,
        "an interrupt gate clears the virtual IF"
    );
}

#[test]
fn iret_pops_the_frame_and_checks_it() {
    let (mut v, mut env) = world();
    let frame_at = STACK_TOP - 48;
    let push: Step = Box::new(move |cpu, mem| {
        let words = [0x1234u64, CODE + 0x40, 0x10, 0x202 | 0x1, STACK_TOP, 0x18];
        for (i, w) in words.iter().enumerate() {
            mem.write(0x2f_f000 + 0x1000 - 48 + 8 * i as u64, *w);
        }
        cpu.regs.rsp = frame_at;
        cpu.regs.rax = hcall::IRET;
        cpu.regs.rip += 2;
        Exit {
            vector: u64::from(vector::HYPERCALL),
            ..Exit::default()
        }
    });
    let _ = run_script(&mut v, &mut env, vec![init(), push]);
    let at = env.entries.last().unwrap();
    assert_eq!(
        (at.regs.rax, at.regs.rip, at.regs.rsp),
        (0x1234, CODE + 0x40, STACK_TOP)
    );
    assert_eq!(
        at.regs.rflags & 0x3ff,
        0x203,
        "CF kept, IF always on for the real CPU"
    );
    assert_eq!(
        shared(&env, 0),
        0x200,
        "IF in the frame turned the virtual IF on"
    );

    for (cs, ss, rip, want) in [
        (0x08, 0x18, CODE, "IRET to CS 0x8 SS 0x18"),
        (0x10, 0x2b, CODE, "IRET to CS 0x10 SS 0x2b"),
        (
            0x10,
            0x18,
            1 << 63,
            "non-canonical IRET instruction pointer",
        ),
        (
            0x10,
            0x18,
            0xffff_c800_0000_0000,
            "inside the reserved switcher range",
        ),
    ] {
        let (mut v, mut env) = world();
        let bad: Step = Box::new(move |cpu, mem| {
            for (i, w) in [0, rip, cs, 0x202, STACK_TOP, ss].iter().enumerate() {
                mem.write(0x2f_f000 + 0x1000 - 48 + 8 * i as u64, *w);
            }
            cpu.regs.rsp = STACK_TOP - 48;
            cpu.regs.rax = hcall::IRET;
            Exit {
                vector: u64::from(vector::HYPERCALL),
                ..Exit::default()
            }
        });
        run_script(&mut v, &mut env, vec![init(), bad]).unwrap();
        assert!(reason(&v).contains(want), "{}", reason(&v));
    }
}

#[test]
fn undeliverable_traps_kill_the_guest() {
    let (mut v, mut env) = world();
    run_script(&mut v, &mut env, vec![init(), trap(vector::GP, 0, 0)]).unwrap();
    assert!(
        reason(&v).starts_with("unhandled #GP (vector 13, error 0x0)"),
        "{}",
        reason(&v)
    );

    // A handler, but a stack the guest has not mapped: a real CPU would double fault.
    let (mut v, mut env) = world();
    let bad_stack: Step = Box::new(|cpu, _| {
        cpu.regs.rsp = KERNEL + 0x70_0000;
        Exit {
            vector: u64::from(vector::UD),
            ..Exit::default()
        }
    });
    let set = hc(hcall::SET_TRAP, [6, HANDLER, trap::PRESENT, 0, 0]);
    run_script(&mut v, &mut env, vec![init(), set, bad_stack]).unwrap();
    assert!(
        reason(&v).starts_with("double fault: cannot deliver #UD"),
        "{}",
        reason(&v)
    );

    // A fault inside the switcher itself (bad guest state reached the CPU).
    let (mut v, mut env) = world();
    let in_sw: Step = Box::new(|_, _| Exit {
        vector: 13,
        in_switcher: true,
        ..Exit::default()
    });
    run_script(&mut v, &mut env, vec![init(), in_sw]).unwrap();
    assert!(reason(&v).contains("the switcher faulted entering the guest"));
}

#[test]
fn page_faults_fill_the_shadow_or_reach_the_guest() {
    let (mut v, mut env) = world();
    let set = hc(hcall::SET_TRAP, [14, HANDLER, trap::PRESENT, 0, 0]);
    // A fault the guest's tables allow: fixed silently, same RIP again.
    let ok_fault = trap(vector::PF, 0x2, BUF);
    // One they do not: reflected with CR2 in the shared page.
    let bad_fault = trap(vector::PF, 0x2, KERNEL + 0x60_0000);
    let _ = run_script(&mut v, &mut env, vec![init(), set, ok_fault, bad_fault]);
    let n = env.entries.len();
    assert_eq!(
        env.entries[n - 2].regs.rip,
        env.entries[n - 3].regs.rip,
        "retried"
    );
    assert_eq!(env.entries[n - 1].regs.rip, HANDLER);
    assert_eq!(
        shared(&env, offset_of!(SharedPage, cr2)),
        KERNEL + 0x60_0000
    );
    // The error code the guest sees: not present, write.
    assert_eq!(env.mem.read(0x2f_f000 + 0x1000 - 48), 0x2);
}

#[test]
fn virtual_interrupts_honour_the_flag_the_mask_and_the_noirq_range() {
    let setup = || {
        let (mut v, mut env) = world();
        let set = hc(hcall::SET_TRAP, [32, HANDLER, trap::PRESENT, 0, 0]);
        let _ = run_script(
            &mut v,
            &mut env,
            vec![init(), set, hc(hcall::FLUSH_ASYNC, [0; 5])],
        );
        (v, env)
    };

    // IF off: posted, not delivered.
    let (mut v, mut env) = setup();
    env.irqs = 1;
    let _ = run_script(&mut v, &mut env, vec![]);
    assert_ne!(env.entries.last().unwrap().regs.rip, HANDLER);
    assert_eq!(shared(&env, offset_of!(SharedPage, irq_pending)), 1);

    // IF on: delivered through the irq vector, IF cleared.
    let (mut v, mut env) = setup();
    env.mem.write(SHARED_GPA, 0x200);
    env.irqs = 1;
    let _ = run_script(&mut v, &mut env, vec![]);
    assert_eq!(env.entries.last().unwrap().regs.rip, HANDLER);
    assert_eq!(shared(&env, 0), 0);

    // Blocked, or inside the noirq range: not delivered.
    for (blocked, noirq) in [(1, (0, 0)), (0, (CODE, CODE + 0x100))] {
        let (mut v, mut env) = setup();
        env.mem.write(SHARED_GPA, 0x200);
        env.mem.write(
            SHARED_GPA + offset_of!(SharedPage, irq_blocked) as u64,
            blocked,
        );
        env.mem.write(
            SHARED_GPA + offset_of!(SharedPage, noirq_start) as u64,
            noirq.0,
        );
        env.mem.write(
            SHARED_GPA + offset_of!(SharedPage, noirq_end) as u64,
            noirq.1,
        );
        env.irqs = 1;
        let _ = run_script(&mut v, &mut env, vec![]);
        assert_ne!(
            env.entries.last().unwrap().regs.rip,
            HANDLER,
            "{blocked} {noirq:x?}"
        );
    }

    // HALT sleeps until an interrupt arrives, then delivers it.
    let (mut v, mut env) = setup();
    env.irq_on_wait = 1;
    let _ = run_script(&mut v, &mut env, vec![hc(hcall::HALT, [0; 5])]);
    assert_eq!(env.waits, 1);
    assert_eq!(env.entries.last().unwrap().regs.rip, HANDLER);

    // A re-armed clock event withdraws the old expiry the guest has not taken.
    let (mut v, mut env) = setup();
    env.irqs = 1;
    let _ = run_script(
        &mut v,
        &mut env,
        vec![hc(hcall::SET_CLOCKEVENT, [5000, 0, 0, 0, 0])],
    );
    assert_eq!(shared(&env, offset_of!(SharedPage, irq_pending)), 0);
    assert_eq!(env.timer, Some(Some(5000)));
}

#[test]
fn the_async_ring_runs_before_the_next_call() {
    let (mut v, mut env) = world();
    let ring = SHARED_GPA + offset_of!(SharedPage, hcalls) as u64;
    let status = SHARED_GPA + offset_of!(SharedPage, hcall_status) as u64;
    let queue: Step = Box::new(move |cpu, mem| {
        // Slot 0: FLUSH_TLB(all), ready; slot 1 not ready.
        mem.write(ring, hcall::FLUSH_TLB);
        mem.write(ring + 8, hcall::FLUSH_ALL);
        let mut st = mem.read(status);
        st &= !0xff;
        mem.write(status, st);
        cpu.regs.rax = hcall::FLUSH_ASYNC;
        Exit {
            vector: u64::from(vector::HYPERCALL),
            ..Exit::default()
        }
    });
    let _ = run_script(&mut v, &mut env, vec![init(), queue]);
    assert_eq!(
        env.mem.read(status),
        u64::MAX,
        "slot 0 ran and is empty again"
    );

    // Calls that change control flow cannot be queued.
    let (mut v, mut env) = world();
    let queue: Step = Box::new(move |cpu, mem| {
        mem.write(ring, hcall::HALT);
        mem.write(status, mem.read(status) & !0xff);
        cpu.regs.rax = hcall::FLUSH_ASYNC;
        Exit {
            vector: u64::from(vector::HYPERCALL),
            ..Exit::default()
        }
    });
    run_script(&mut v, &mut env, vec![init(), queue]).unwrap();
    assert_eq!(reason(&v), "HALT (10) cannot be queued in the async ring");
}

#[test]
fn guest_state_is_checked_before_every_entry() {
    let (mut v, mut env) = world();
    // Bad selectors become null; a TLS selector survives once its slot is loaded.
    let tls = hc(hcall::LOAD_TLS, [0x00cf_f300_0000_ffff, 0, 0, 0, 0]);
    let sel: Step = Box::new(|cpu, _| {
        cpu.sel = [0x10, 0x63, 0x6b, 0x89];
        cpu.regs.rflags |= 0x3000 | 0x4000; // IOPL 3, NT
        cpu.regs.rax = hcall::FLUSH_ASYNC;
        Exit {
            vector: u64::from(vector::HYPERCALL),
            ..Exit::default()
        }
    });
    let rip: Step = Box::new(|cpu, _| {
        cpu.regs.rip = 0x0000_8000_0000_0000;
        cpu.regs.rax = hcall::FLUSH_ASYNC;
        Exit {
            vector: u64::from(vector::HYPERCALL),
            ..Exit::default()
        }
    });
    run_script(&mut v, &mut env, vec![init(), tls, sel, rip]).unwrap();
    let at = env.entries.last().unwrap();
    assert_eq!(at.sel, [0, 0x63, 0, 0x89]);
    assert_eq!(at.regs.rflags & 0x7000, 0, "IOPL and NT cleared");
    assert_eq!(
        reason(&v),
        "non-canonical instruction pointer 0x800000000000"
    );
}

#[test]
fn signals_return_to_the_launcher() {
    let (mut v, mut env) = world();
    env.signal = true;
    assert_eq!(v.run(&mut env), Err(Errno::ERESTARTSYS));
    assert!(env.entries.is_empty(), "the guest did not run");
}

/// Put `bytes` at the guest's CODE address and make the next exit happen there.
fn code_at(env: &mut FakeEnv, bytes: &[u8]) {
    env.mem.mem[0x20_0000..0x20_0000 + bytes.len()].copy_from_slice(bytes);
}

fn at_code(v: u8, user: bool) -> Step {
    Box::new(move |cpu, _| {
        cpu.regs.rip = CODE;
        cpu.regs.cs = if user {
            0x33
        } else {
            u64::from(abi::GUEST_KERNEL_CS)
        };
        if user {
            cpu.regs.rsp = 0x7fff_0000;
        }
        Exit {
            vector: u64::from(v),
            ..Exit::default()
        }
    })
}

#[test]
fn a_user_syscall_bounces_to_the_registered_entry() {
    let (mut v, mut env) = world();
    code_at(&mut env, &[0x0f, 0x05]);
    let steps = vec![
        init(),
        hc(hcall::SET_STACK, [STACK_TOP, 0, 0, 0, 0]),
        hc(hcall::SET_SYSCALL_ENTRY, [HANDLER, 0x47700, 0, 0, 0]),
        hc(
            hcall::SET_SEGMENT_BASE,
            [hcall::SEG_GS_KERNEL, 0xffff_8880_0000_1000, 0, 0, 0],
        ),
    ];
    let _ = run_script(&mut v, &mut env, steps);
    env.mem.write(SHARED_GPA, 0x200);
    // Pretend the kernel dropped to user mode (with the user GS base active).
    v.user_mode = true;
    v.swap_gs();
    v.cpu.gs_base = 0x1234;
    let _ = run_script(&mut v, &mut env, vec![at_code(vector::UD, true)]);
    let at = env.entries.last().unwrap();
    assert_eq!(at.regs.rip, HANDLER);
    assert_eq!(at.regs.cs, u64::from(abi::GUEST_KERNEL_CS));
    assert_eq!(at.regs.rcx, CODE + 2);
    assert_eq!(at.regs.r11 & 0x200, 0x200, "R11 shows the virtual IF");
    assert_eq!(at.regs.rsp, STACK_TOP - 40);
    assert_eq!(at.gs_base, 0xffff_8880_0000_1000, "kernel GS active");
    let frame: Vec<u64> = (0..5)
        .map(|i| env.mem.read(0x30_0000 - 40 + 8 * i))
        .collect();
    assert_eq!(frame, vec![CODE + 2, 0x33, at.regs.r11, 0x7fff_0000, 0x2b]);
    assert_eq!(shared(&env, 0), 0, "the mask had IF: virtual IF off");
}

#[test]
fn other_user_ud_and_missing_entry_are_reflected() {
    let (mut v, mut env) = world();
    code_at(&mut env, &[0x0f, 0x0b]); // ud2
    let steps = vec![
        init(),
        hc(hcall::SET_STACK, [STACK_TOP, 0, 0, 0, 0]),
        hc(hcall::SET_TRAP, [6, HANDLER + 0x10, trap::PRESENT, 0, 0]),
    ];
    let _ = run_script(&mut v, &mut env, steps);
    v.user_mode = true;
    let _ = run_script(&mut v, &mut env, vec![at_code(vector::UD, true)]);
    let at = env.entries.last().unwrap();
    assert_eq!(at.regs.rip, HANDLER + 0x10, "reflected as #UD");
    assert_eq!(
        env.mem.read(0x30_0000 - 40 + 8),
        0x33,
        "a user frame on the kernel stack"
    );
}

#[test]
fn privileged_instructions_linux_needs_are_emulated() {
    for (bytes, check) in [
        (&[0x0f, 0x20, 0xd8][..], "rax=cr3"),
        (&[0x41, 0x0f, 0x20, 0xc0][..], "r8=cr0"),
        (&[0x0f, 0x20, 0xe3][..], "rbx=cr4"),
        (&[0x0f, 0x09][..], "wbinvd"),
        (&[0x0f, 0x01, 0xd1][..], "xsetbv"),
    ] {
        let (mut v, mut env) = world();
        code_at(&mut env, bytes);
        let _ = run_script(&mut v, &mut env, vec![init()]);
        v.cpu.regs.rax = 7; // xsetbv: x87|SSE|AVX, a subset of the host's XCR0
        v.cpu.regs.rcx = 0;
        v.cpu.regs.rdx = 0;
        let _ = run_script(&mut v, &mut env, vec![at_code(vector::GP, false)]);
        let at = env.entries.last().unwrap().regs;
        assert_eq!(at.rip, CODE + bytes.len() as u64, "{check}: skipped");
        match check {
            "rax=cr3" => assert_eq!(at.rax, v.shadow.current_pml4().unwrap()),
            "r8=cr0" => assert_eq!(at.r8, emulate::GUEST_CR0),
            "rbx=cr4" => {
                assert_eq!(at.rbx & (1 << 7), 0, "no PGE");
                assert_eq!(at.rbx & (1 << 12), 0, "no LA57");
                assert_ne!(at.rbx & (1 << 18), 0, "OSXSAVE kept");
            }
            _ => {}
        }
    }
    // Not on the list, or not acceptable: reflected #GP (here: no handler, so killed).
    for (bytes, rax) in [(&[0x0f, 0x30][..], 0u64), (&[0x0f, 0x01, 0xd1][..], 0xff)] {
        let (mut v, mut env) = world();
        code_at(&mut env, bytes);
        let _ = run_script(&mut v, &mut env, vec![init()]);
        v.cpu.regs.rax = rax;
        run_script(&mut v, &mut env, vec![at_code(vector::GP, false)]).unwrap();
        assert!(
            reason(&v).starts_with("unhandled #GP"),
            "{bytes:x?}: {}",
            reason(&v)
        );
    }
    // From user mode nothing is emulated.
    let (mut v, mut env) = world();
    code_at(&mut env, &[0x0f, 0x20, 0xd8]);
    let _ = run_script(
        &mut v,
        &mut env,
        vec![init(), hc(hcall::SET_STACK, [STACK_TOP, 0, 0, 0, 0])],
    );
    v.user_mode = true;
    run_script(&mut v, &mut env, vec![at_code(vector::GP, true)]).unwrap();
    assert!(reason(&v).starts_with("unhandled #GP"));
}

#[test]
fn hlt_with_interrupts_off_sleeps_until_a_signal() {
    let (mut v, mut env) = world();
    code_at(&mut env, &[0xf4]);
    let _ = run_script(&mut v, &mut env, vec![init()]);
    env.irq_on_wait = 1; // an interrupt arrives, but the virtual IF is off
    env.script.push_back(at_code(vector::GP, false));
    env.signal = false;
    // The fake "CPU" raises a signal after three sleeps, or the loop would sleep forever.
    let mut waits = 0;
    for _ in 0..3 {
        let r = v.run(&mut env);
        if r == Err(Errno::ERESTARTSYS) && env.waits > waits {
            waits = env.waits;
        }
        env.signal = true;
    }
    assert!(env.waits >= 1, "it slept");
    // Entries: INIT, the end of that script, the hlt. None after it.
    assert_eq!(env.entries.len(), 3, "and never ran the guest again");
}

#[test]
fn the_kernel_stack_must_be_kernel_memory() {
    for (sp0, want) in [
        (0x7fff_0000, "upper (kernel) half"),
        (STACK_TOP - 8, "16-byte aligned"),
        (0xffff_c800_0000_1000, "inside the reserved switcher range"),
        (0x0000_8000_0000_0000, "non-canonical"),
    ] {
        let (mut v, mut env) = world();
        run_script(
            &mut v,
            &mut env,
            vec![init(), hc(hcall::SET_STACK, [sp0, 0, 0, 0, 0])],
        )
        .unwrap();
        assert!(reason(&v).contains(want), "{sp0:#x}: {}", reason(&v));
    }
}

#[test]
fn a_syscall_at_the_top_of_user_space_bounces_and_the_return_is_refused() {
    let (mut v, mut env) = world();
    let steps = vec![
        init(),
        hc(hcall::SET_STACK, [STACK_TOP, 0, 0, 0, 0]),
        hc(hcall::SET_SYSCALL_ENTRY, [HANDLER, 0x47700, 0, 0, 0]),
    ];
    let _ = run_script(&mut v, &mut env, steps);
    let cr3 = v.shadow.current_pml4().unwrap();
    let top = 0x7fff_ffff_f000u64;
    env.mem.map(cr3, top, 0x33_0000 | P_RW | 0x4, P_RW | 0x4);
    env.mem.mem[0x33_0ffe..0x33_1000].copy_from_slice(&[0x0f, 0x05]);
    v.user_mode = true;
    let at_top: Step = Box::new(move |cpu, _| {
        cpu.regs.rip = top + 0xffe;
        cpu.regs.cs = 0x33;
        Exit {
            vector: u64::from(vector::UD),
            ..Exit::default()
        }
    });
    let _ = run_script(&mut v, &mut env, vec![at_top]);
    let at = env.entries.last().unwrap().regs;
    assert_eq!(
        at.rip, HANDLER,
        "bounced, though the next byte is not canonical"
    );
    assert_eq!(at.rcx, 0x8000_0000_0000);
}
