//! `lgprobe fuzz [N] [SEED]`: N random writes (and some reads) over a handful of fds, from two
//! threads, each result checked against the model in `model.rs`. The owner's first read with a
//! big enough buffer runs the (garbage) guest, which dies: from then on that fd is dead.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lg_core::abi::{self, lhreq};

use crate::model::{describe_record, read_effect, DevModel, Effect, Expect, Limits, ReadExpect};
use crate::proto::{self, Mapping, Outcome, ReadOutcome};
use crate::report::{hex, Report};
use crate::watchdog;

/// Open files the writes are spread over.
const SLOTS: usize = 4;
/// Each operation replaces its slot's file with a fresh one with probability 1/this, so that
/// uninitialized files (where INITIALIZE is validated) keep coming back.
const REOPEN_ONE_IN: u64 = 40;
/// Model identities of the threads that write.
const MAIN: u64 = 1;
const HELPER: u64 = 2;
const BREAKER: u64 = 3;

/// splitmix64: small, fast, and reproducible from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn pick(&mut self, items: &[u64]) -> u64 {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What the generator needs to make valid-looking INITIALIZEs.
#[derive(Clone, Copy)]
pub struct GenCtx {
    /// Base and size of a real guest-memory mapping.
    pub mem_base: u64,
    pub pfn_limit: u64,
    pub user_top: u64,
}

const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    31,
    32,
    0xfff,
    0x1000,
    0x1001,
    1 << 32,
    (1 << 32) | 1,
    (1 << 47) - 1,
    1 << 47,
    0xffff_8000_0000_0000,
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
];

/// One random write body, 0..=80 bytes, biased toward well-formed requests with plausible
/// arguments. A well-formed BREAK 1 comes out rarely: each one costs a thread and a release.
pub fn gen_write(rng: &mut Rng, ctx: &GenCtx) -> Vec<u8> {
    let any = rng.next_u64();
    let req = match rng.below(100) {
        0..25 => lhreq::INITIALIZE,
        25..40 => lhreq::GETDMA,
        40..65 => lhreq::IRQ,
        65..85 => lhreq::BREAK,
        _ => rng.pick(&[4, 5, 255, 256, 1 << 32, u64::MAX, any]),
    };
    let mut words = vec![req];
    match req {
        lhreq::INITIALIZE => words.extend(gen_init(rng, ctx)),
        lhreq::GETDMA => words.push(gen_word(rng)),
        lhreq::IRQ => words.push(match rng.below(3) {
            0 => rng.below(abi::NR_IRQS),
            1 => rng.below(40),
            _ => gen_word(rng),
        }),
        lhreq::BREAK => words.push(match rng.below(10) {
            0 if rng.one_in(4) => 1,
            0..6 => 0,
            _ => rng.pick(&[2, 3, 1 << 32, (1 << 32) | 1, u64::MAX, any]),
        }),
        _ => words.extend((0..rng.below(7)).map(|_| gen_word(rng))),
    }
    match rng.below(20) {
        // Too few or too many words.
        0..2 => words.resize_with(rng.below(11) as usize, || rng.pick(INTERESTING)),
        // A ragged (or just random) length, padded with random bytes.
        2..4 => {
            let mut b = proto::bytes(&words);
            b.resize_with(rng.below(81) as usize, || rng.next_u64() as u8);
            return b;
        }
        // Noise.
        4 => return (0..rng.below(81)).map(|_| rng.next_u64() as u8).collect(),
        _ => {}
    }
    proto::bytes(&words)
}

fn gen_word(rng: &mut Rng) -> u64 {
    if rng.one_in(2) {
        rng.pick(INTERESTING)
    } else {
        rng.next_u64()
    }
}

/// INITIALIZE arguments: valid, valid with one or two fields broken, or junk. Valid ones always
/// use the real mapping, and broken ones never turn into a success with memory lgprobe has not
/// mapped (except where a broken entry point happens to be accepted).
fn gen_init(rng: &mut Rng, ctx: &GenCtx) -> [u64; 6] {
    let mut a = [
        abi::VERSION,
        ctx.mem_base,
        ctx.pfn_limit,
        proto::GOOD_ENTRY,
        0,
        abi::PAGE_SIZE,
    ];
    match rng.below(10) {
        0..4 => {}
        4..9 => {
            for _ in 0..=rng.below(2) {
                let field = rng.below(6) as usize;
                a[field] = bad_field(rng, field, ctx);
            }
        }
        _ => a = [0; 6].map(|_| gen_word(rng)),
    }
    a
}

fn bad_field(rng: &mut Rng, field: usize, ctx: &GenCtx) -> u64 {
    let size = ctx.pfn_limit * abi::PAGE_SIZE;
    let any = rng.next_u64();
    let cands: &[u64] = match field {
        0 => &[0, abi::VERSION + 1, u64::MAX, any],
        1 => &[
            0,
            ctx.mem_base + 1,
            ctx.mem_base + 0x800,
            ctx.user_top,
            ctx.user_top + abi::PAGE_SIZE,
            !0xfff_u64,
            0xffff_8000_0000_0000,
        ],
        2 => &[
            0,
            1 + rng.below(ctx.pfn_limit),
            abi::MAX_GUEST_PAGES + 1,
            1 << 52,
            u64::MAX,
            any,
        ],
        3 => &[
            0,
            (1 << 47) - 1,
            1 << 47,
            0xff7f_ffff_ffff_ffff,
            0xffff_ffff_8000_0000,
            u64::MAX,
            any,
        ],
        _ => &[
            1,
            0x1008,
            size,
            size - abi::PAGE_SIZE,
            size + abi::PAGE_SIZE,
            u64::MAX,
            any,
        ],
    };
    rng.pick(cands)
}

/// A read buffer size: mostly big enough for the whole record, often too small (EINVAL) or
/// cutting the record short.
pub fn gen_read_len(rng: &mut Rng) -> usize {
    let min = abi::MIN_READ;
    match rng.below(10) {
        0..2 => rng.pick(&[0, 1, 8, 16, min as u64 - 1]) as usize,
        2..4 => min + rng.below(48) as usize,
        _ => proto::READ_BUF,
    }
}

/// Is this write exactly BREAK 1, which blocks its writer on a ready device?
fn is_break_on(bytes: &[u8]) -> bool {
    bytes == proto::bytes(&[lhreq::BREAK, 1]).as_slice()
}

/// One open file and what the model thinks of it.
struct Slot {
    fd: Arc<OwnedFd>,
    model: DevModel,
}

enum Job {
    Write(Arc<OwnedFd>, Vec<u8>),
    Read(Arc<OwnedFd>, usize),
}

enum Done {
    Wrote(Outcome),
    Read(ReadOutcome),
}

/// A second thread that writes and reads on request, so that ownership (EPERM) is exercised.
struct Helper {
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Done>,
}

impl Helper {
    fn start() -> Helper {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (res_tx, results) = mpsc::channel();
        std::thread::spawn(move || {
            for job in job_rx {
                let r = match job {
                    Job::Write(fd, b) => Done::Wrote(proto::write(&*fd, &b)),
                    Job::Read(fd, len) => Done::Read(proto::read_len(&*fd, len)),
                };
                if res_tx.send(r).is_err() {
                    break;
                }
            }
        });
        Helper { jobs, results }
    }

    fn run(&self, job: Job) -> Done {
        if self.jobs.send(job).is_err() {
            watchdog::fatal("fuzz helper thread died");
        }
        match self
            .results
            .recv_timeout(watchdog::OP_TIMEOUT + Duration::from_secs(1))
        {
            Ok(r) => r,
            Err(_) => watchdog::fatal("fuzz helper thread did not answer"),
        }
    }

    fn write(&self, fd: &Arc<OwnedFd>, b: &[u8]) -> Outcome {
        match self.run(Job::Write(fd.clone(), b.to_vec())) {
            Done::Wrote(r) => r,
            Done::Read(_) => watchdog::fatal("fuzz helper thread answered a write with a read"),
        }
    }

    fn read(&self, fd: &Arc<OwnedFd>, len: usize) -> ReadOutcome {
        match self.run(Job::Read(fd.clone(), len)) {
            Done::Read(r) => r,
            Done::Wrote(_) => watchdog::fatal("fuzz helper thread answered a read with a write"),
        }
    }
}

struct Fuzzer<'a> {
    rep: &'a mut Report,
    limits: Limits,
    helper: Helper,
    tally: BTreeMap<String, u64>,
    ops: u64,
    /// A dead guest's reason has been printed.
    noted: bool,
    /// Guests run (by a read) until they died.
    deaths: u64,
}

impl Fuzzer<'_> {
    /// Compare one result with the model's prediction and count it.
    fn judge(&mut self, what: impl FnOnce() -> String, want: Expect, got: Effect) {
        let n = self.ops;
        self.ops += 1;
        *self.tally.entry(got.to_string()).or_default() += 1;
        self.rep
            .quiet(|| format!("fuzz op {n}: {}", what()), want.judge(got));
    }

    /// One write by `caller`; a BREAK 1 is always made by a thread of its own.
    fn write(&mut self, slot: &mut Slot, caller: u64, b: &[u8]) {
        let who = if is_break_on(b) { BREAKER } else { caller };
        let want = slot.model.expect_write(b, who, &self.limits);
        let got = if who == BREAKER {
            self.break_on(slot)
        } else if who == MAIN {
            proto::write(&*slot.fd, b).into()
        } else {
            self.helper.write(&slot.fd, b).into()
        };
        self.judge(|| format!("thread {who} writes [{}]", hex(b)), want, got);
        slot.model.observe_write(b, who, got);
    }

    /// One read by `caller` into a `len`-byte buffer.
    fn read(&mut self, slot: &mut Slot, caller: u64, len: usize) {
        let want = slot.model.expect_read(caller, len);
        let got = if caller == MAIN {
            proto::read_len(&*slot.fd, len)
        } else {
            self.helper.read(&slot.fd, len)
        };
        if let (Ok(b), ReadExpect::Dead { .. }, false) = (&got, &want, self.noted) {
            self.noted = true;
            self.rep
                .note(&format!("fuzz: guests die with {}", describe_record(b)));
        }
        let n = self.ops;
        self.ops += 1;
        *self.tally.entry(read_effect(&got)).or_default() += 1;
        self.rep.quiet(
            || format!("fuzz op {n}: thread {caller} reads {len} bytes"),
            want.judge(&got),
        );
        let was_dead = slot.model.is_dead();
        slot.model.observe_read(caller, len, &got);
        if !was_dead && slot.model.is_dead() {
            self.deaths += 1;
        }
    }

    /// BREAK 1 from a fresh thread. If it has not returned after a moment, release it with
    /// BREAK 0s from this thread (each one checked) until it does; it then counts as `Block`.
    fn break_on(&mut self, slot: &Slot) -> Effect {
        let (tx, rx) = mpsc::channel();
        let fd = slot.fd.clone();
        let on = proto::bytes(&[lhreq::BREAK, 1]);
        let t = std::thread::spawn(move || {
            let r = proto::write_blocking(&*fd, &on, "BREAK 1", Duration::from_secs(5));
            let _ = tx.send(r);
        });
        let mut released = false;
        let start = Instant::now();
        let got = loop {
            if let Ok(r) = rx.recv_timeout(Duration::from_millis(if released { 5 } else { 30 })) {
                break r;
            }
            if start.elapsed() > Duration::from_secs(2) {
                watchdog::fatal("fuzz: a BREAK 1 writer was not released by BREAK 0 within 2 s");
            }
            released = true;
            let off = proto::bytes(&[lhreq::BREAK, 0]);
            let want = slot.model.expect_write(&off, MAIN, &self.limits);
            let got = proto::write(&*slot.fd, &off).into();
            self.judge(|| "main releases BREAK 1 with BREAK 0".into(), want, got);
        };
        let _ = t.join();
        match got {
            Ok(16) if released => Effect::Block,
            other => other.into(),
        }
    }
}

/// Run `n` fuzz operations from `seed`.
pub fn run(rep: &mut Report, n: u64, seed: u64) -> Result<(), String> {
    rep.note(&format!(
        "fuzz: {n} operations, seed {seed:#x} (rerun: lgprobe fuzz {n} {seed:#x})"
    ));
    let limits = *proto::host();
    let mems = (0..SLOTS)
        .map(|_| Mapping::guest())
        .collect::<Result<Vec<_>, _>>()?;
    let open = || {
        proto::fresh().map(|fd| Slot {
            fd: Arc::new(fd),
            model: DevModel::default(),
        })
    };
    let mut slots = (0..SLOTS).map(|_| open()).collect::<Result<Vec<_>, _>>()?;
    let mut rng = Rng::new(seed);
    let mut fz = Fuzzer {
        rep,
        limits,
        helper: Helper::start(),
        tally: BTreeMap::new(),
        ops: 0,
        noted: false,
        deaths: 0,
    };
    for _ in 0..n {
        let i = rng.below(SLOTS as u64) as usize;
        if rng.one_in(REOPEN_ONE_IN) {
            slots[i] = open()?;
        }
        let caller = if rng.one_in(5) { HELPER } else { MAIN };
        if rng.one_in(12) {
            let len = gen_read_len(&mut rng);
            fz.read(&mut slots[i], caller, len);
        } else {
            let ctx = GenCtx {
                mem_base: mems[i].base(),
                pfn_limit: mems[i].pages(),
                user_top: limits.user_top,
            };
            let b = gen_write(&mut rng, &ctx);
            fz.write(&mut slots[i], caller, &b);
        }
    }
    let tally: Vec<String> = fz.tally.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    fz.rep.note(&format!(
        "fuzz: {} results; {}; {} guests ran until they died",
        fz.ops,
        tally.join(", "),
        fz.deaths
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::NonNull;

    use lg_core::abi::{exit, record};
    use lg_core::device::{Device, WriteOutcome};
    use lg_core::errno::Errno;
    use lg_core::protocol::HostLimits;
    use lg_core::shadow::{MemFault, Shadow, ShadowHost, TablePage};
    use lg_core::vcpu::{CpuState, Env, Exit, HostFacts};

    use crate::model::check_dead_record;

    const HOST: HostLimits = HostLimits {
        user_top: 0x0000_7fff_ffff_f000,
        switcher: (0xffff_c900_0000_0000, 0xffff_c980_0000_0000),
    };
    const CTX: GenCtx = GenCtx {
        mem_base: 0x7f12_3456_0000,
        pfn_limit: 256,
        user_top: HOST.user_top,
    };
    /// The page-fault vector and the error code of a supervisor instruction fetch from a
    /// not-present page.
    const PF: u64 = 14;
    const PF_FETCH: u64 = 0x10;
    /// Fake host frames and table pages live far above anything a test guest has.
    const PIN_OFFSET: u64 = 0x10_0000;
    const TABLE_PA_BASE: u64 = 0x40_0000_0000;

    /// The host side of the fake: shadow table pages and pins, which a vCPU may keep from one
    /// read to the next, and the number of guest entries. Everything must be handed back by the
    /// time every device is torn down.
    #[derive(Default)]
    struct FakeHost {
        tables: BTreeMap<u64, NonNull<[u64; 512]>>,
        next_table: u64,
        pins: BTreeMap<u64, u64>,
        entries: u64,
    }

    impl FakeHost {
        fn assert_empty(&self) {
            assert!(self.tables.is_empty(), "shadow tables leaked");
            assert!(self.pins.is_empty(), "pins leaked: {:?}", self.pins);
        }
    }

    /// What a vCPU of `dev` sees during one read (or its teardown): guest memory is all zeros
    /// (reads give zeros, writes are dropped), so the guest's first instruction fetch faults, the
    /// shadow walk of the zeroed guest tables finds nothing present, and the vCPU kills the guest
    /// before it ever made `LHCALL_INIT`, exactly what the module does to lgprobe's guests.
    struct FakeEnv<'a> {
        host: &'a mut FakeHost,
        dev: &'a Device,
    }

    impl ShadowHost for FakeEnv<'_> {
        fn read_gpa(&mut self, gpa: u64) -> Result<u64, MemFault> {
            assert!(gpa.is_multiple_of(8), "misaligned read_gpa {gpa:#x}");
            Ok(0)
        }

        fn write_gpa(&mut self, gpa: u64, _val: u64) -> Result<(), MemFault> {
            assert!(gpa.is_multiple_of(8), "misaligned write_gpa {gpa:#x}");
            Ok(())
        }

        fn pin(&mut self, gpa: u64) -> Result<u64, MemFault> {
            assert!(gpa.is_multiple_of(4096), "pin of unaligned {gpa:#x}");
            let pfn = (gpa >> 12) + PIN_OFFSET;
            *self.host.pins.entry(pfn).or_default() += 1;
            Ok(pfn)
        }

        fn unpin(&mut self, host_pfn: u64) {
            let n = self
                .host
                .pins
                .get_mut(&host_pfn)
                .expect("unpin of a frame that is not pinned");
            *n -= 1;
            if *n == 0 {
                self.host.pins.remove(&host_pfn);
            }
        }

        fn alloc_table(&mut self) -> Option<TablePage> {
            let ptr = NonNull::from(Box::leak(Box::new([0u64; 512])));
            let pa = TABLE_PA_BASE + 4096 * self.host.next_table;
            self.host.next_table += 1;
            self.host.tables.insert(pa, ptr);
            Some(TablePage { pa, ptr })
        }

        fn free_table(&mut self, table: TablePage) {
            let ptr = self
                .host
                .tables
                .remove(&table.pa)
                .expect("free of a table that was not allocated");
            assert_eq!(ptr, table.ptr);
            // SAFETY (test): from Box::leak in alloc_table, removed from the map: freed once.
            drop(unsafe { Box::from_raw(ptr.as_ptr()) });
        }
    }

    use lg_core::dma::engine::{DmaError, Sent};

    impl Env for FakeEnv<'_> {
        fn read_gpa_bytes(
            &mut self,
            _gpa: u64,
            buf: &mut [u8],
        ) -> Result<(), lg_core::shadow::MemFault> {
            buf.fill(0);
            Ok(())
        }

        fn write_gpa_bytes(
            &mut self,
            _gpa: u64,
            _buf: &[u8],
        ) -> Result<(), lg_core::shadow::MemFault> {
            Ok(())
        }

        /// The shadow is empty and the guest memory zero: the CPU faults on the first fetch.
        fn run_guest(&mut self, cpu: &mut CpuState, shadow: &mut Shadow) -> Exit {
            assert!(shadow.root_pa().is_some(), "entered with no shadow root");
            assert_eq!(cpu.regs.cs & 3, 1, "entered outside ring 1");
            self.host.entries += 1;
            Exit {
                vector: PF,
                err: PF_FETCH,
                cr2: cpu.regs.rip,
                in_switcher: false,
                rip: cpu.regs.rip,
            }
        }

        fn signal_pending(&mut self) -> bool {
            false
        }

        fn break_requested(&mut self) -> bool {
            self.dev.break_requested()
        }

        fn take_irqs(&mut self) -> u32 {
            self.dev.take_irqs()
        }

        fn clear_irqs(&mut self, mask: u32) {
            self.dev.clear_irqs(mask);
        }

        fn set_timer(&mut self, _ns: Option<u64>) {}

        fn wait_for_irq(&mut self, _wake_mask: u32) {
            panic!("a guest that never made LHCALL_INIT cannot halt");
        }

        fn yield_point(&mut self) {}

        fn realtime_ns(&mut self) -> u64 {
            0
        }

        // These garbage guests die before any hypercall.
        fn dma_bind(&mut self, _: u64, _: u64, _: u64) -> Result<u64, DmaError> {
            unreachable!("a garbage guest made a hypercall")
        }
        fn dma_send(&mut self, _: u64, _: u64) -> Result<Sent, DmaError> {
            unreachable!("a garbage guest made a hypercall")
        }
        fn dma_condemned(&mut self) -> Option<u64> {
            None
        }
        fn facts(&self) -> HostFacts {
            HostFacts {
                la57: false,
                reserved: HOST.switcher,
                switcher_slot: ((HOST.switcher.0 >> 39) & 511) as usize,
                tsc_khz: 1_000_000,
                stable_tsc: true,
                guest_id: self.dev.id(),
                phys_bits: 46,
                ..HostFacts::default()
            }
        }
    }

    /// One write to the real state machine. A BREAK 1 is released at once with BREAK 0, as the
    /// fuzzer does in the VM, so no break is in force when the owner next reads.
    fn device_write(d: &Device, b: &[u8], caller: u64) -> Effect {
        match d.write(b, caller, &HOST) {
            Ok(WriteOutcome::Return(n)) => Effect::Ret(n),
            Ok(WriteOutcome::WaitForBreakOff) => {
                let off = proto::bytes(&[lhreq::BREAK, 0]);
                assert_eq!(
                    d.write(&off, caller, &HOST),
                    Ok(WriteOutcome::WakeBreakWaiters)
                );
                Effect::Block
            }
            // Nothing is ever bound in this world: the kernel glue answers GETDMA with ENOENT.
            Ok(WriteOutcome::GetDma { .. }) => Effect::Fail(Errno::ENOENT),
            Ok(WriteOutcome::WakeBreakWaiters | WriteOutcome::Initialized) => {
                Effect::Ret(b.len() as u64)
            }
            Err(e) => Effect::Fail(e),
        }
    }

    /// One read of a `len`-byte buffer from the real state machine: the bytes it hands out.
    fn device_read(d: &Device, host: &mut FakeHost, caller: u64, len: usize) -> ReadOutcome {
        let mut out = Vec::new();
        let mut env = FakeEnv { host, dev: d };
        let n = d.read(caller, &mut env, len, |header, payload| {
            out.extend_from_slice(header);
            out.extend_from_slice(payload);
            Ok(())
        })?;
        assert_eq!(
            n,
            out.len(),
            "read returned {n} but handed out {}",
            out.len()
        );
        assert!(
            n <= len,
            "read handed out {n} bytes for a {len}-byte buffer"
        );
        Ok(out)
    }

    fn teardown(d: &Device, host: &mut FakeHost) {
        d.teardown(&mut FakeEnv { host, dev: d });
    }

    /// Drive the model and the real state machine with the same random operations; every result
    /// must be allowed by the model, and the guest must be entered exactly once per death.
    /// Returns how often each result occurred.
    fn agree(seed: u64, n: usize, switcher: Option<(u64, u64)>) -> BTreeMap<String, u64> {
        let limits = Limits {
            user_top: HOST.user_top,
            switcher,
        };
        let mut rng = Rng::new(seed);
        let mut host = FakeHost::default();
        let mut devs: Vec<(Device, DevModel)> = (0..SLOTS)
            .map(|_| (Device::new(), DevModel::default()))
            .collect();
        let mut tally = BTreeMap::new();
        for op in 0..n {
            let i = rng.below(SLOTS as u64) as usize;
            if rng.one_in(REOPEN_ONE_IN) {
                teardown(&devs[i].0, &mut host);
                devs[i] = (Device::new(), DevModel::default());
            }
            let caller = 1 + rng.below(3);
            let (dev, model) = &mut devs[i];
            let (verdict, key, what) = if rng.one_in(12) {
                let len = gen_read_len(&mut rng);
                let want = model.expect_read(caller, len);
                let (was_dead, entries) = (model.is_dead(), host.entries);
                let got = device_read(dev, &mut host, caller, len);
                let entered = host.entries - entries;
                let dies = !was_dead && got.is_ok();
                assert_eq!(
                    entered,
                    u64::from(dies),
                    "seed {seed:#x} op {op}: guest entered {entered} times by a read of {len}"
                );
                model.observe_read(caller, len, &got);
                (
                    want.judge(&got),
                    read_effect(&got),
                    format!("read of {len} bytes"),
                )
            } else {
                let b = gen_write(&mut rng, &CTX);
                let want = model.expect_write(&b, caller, &limits);
                let got = device_write(dev, &b, caller);
                model.observe_write(&b, caller, got);
                (want.judge(got), got.to_string(), hex(&b))
            };
            if let Err(e) = verdict {
                panic!("seed {seed:#x} op {op} caller {caller} {what}: {e}");
            }
            *tally.entry(key).or_default() += 1;
        }
        for (dev, _) in &devs {
            teardown(dev, &mut host);
        }
        host.assert_empty();
        tally
    }

    #[test]
    fn model_agrees_with_device_exactly() {
        for seed in [1, 2, 0xdead_beef, 0x1234_5678_9abc_def0] {
            agree(seed, 10_000, Some(HOST.switcher));
        }
    }

    #[test]
    fn model_allows_device_with_unknown_switcher() {
        agree(7, 10_000, None);
    }

    #[test]
    fn generator_reaches_every_outcome() {
        let tally = agree(42, 10_000, Some(HOST.switcher));
        let block = Effect::Block.to_string();
        for want in [
            "16",
            "56",
            "EINVAL",
            "EPROTO",
            "EBUSY",
            "EPERM",
            "ENOENT",
            "DEAD record",
            &block,
        ] {
            assert!(
                tally.get(want).copied().unwrap_or(0) > 0,
                "{want} never seen: {tally:?}"
            );
        }
        // Mostly well-formed, but plenty of refusals too.
        assert!(
            tally["EINVAL"] > 1000 && tally["EINVAL"] < 7000,
            "{tally:?}"
        );
    }

    #[test]
    fn generator_lengths_stay_in_range() {
        let mut rng = Rng::new(9);
        let mut seen = [false; 81];
        for _ in 0..20_000 {
            let b = gen_write(&mut rng, &CTX);
            assert!(b.len() <= 80);
            seen[b.len()] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "some length in 0..=80 never generated"
        );
        let lens: Vec<usize> = (0..1000).map(|_| gen_read_len(&mut rng)).collect();
        assert!(lens.iter().any(|&l| l < abi::MIN_READ));
        assert!(lens.contains(&abi::MIN_READ));
        assert!(lens.contains(&proto::READ_BUF));
    }

    /// The garbage guest's life on the real state machine, step by step, with the model's
    /// prediction for each step.
    #[test]
    fn garbage_guest_dies_on_first_read() {
        let limits = Limits {
            user_top: HOST.user_top,
            switcher: Some(HOST.switcher),
        };
        let init = proto::bytes(&[0, abi::VERSION, CTX.mem_base, 256, GOOD, 0, 0x1000]);
        let mut host = FakeHost::default();
        let d = Device::new();
        let mut m = DevModel::default();
        let read = |m: &mut DevModel, host: &mut FakeHost, caller, len| {
            let got = device_read(&d, host, caller, len);
            m.expect_read(caller, len).judge(&got).unwrap();
            m.observe_read(caller, len, &got);
            got
        };
        assert_eq!(read(&mut m, &mut host, 1, 512), Err(Errno::EINVAL));
        assert_eq!(device_write(&d, &init, 1), Effect::Ret(56));
        m.observe_write(&init, 1, Effect::Ret(56));
        assert_eq!(device_write(&d, &proto::bytes(&[2, 7]), 1), Effect::Ret(16));
        // Refusals run nothing: not the owner, then a buffer under MIN_READ.
        assert_eq!(read(&mut m, &mut host, 2, 16), Err(Errno::EPERM));
        assert_eq!(read(&mut m, &mut host, 1, 16), Err(Errno::EINVAL));
        assert_eq!(read(&mut m, &mut host, 1, 23), Err(Errno::EINVAL));
        assert_eq!(host.entries, 0);
        assert!(!m.is_dead());
        // The first real read enters the guest once; it faults and dies.
        let short = read(&mut m, &mut host, 1, 24).unwrap();
        assert_eq!(host.entries, 1);
        assert!(m.is_dead());
        assert_eq!(short.len(), 24);
        assert_eq!(&short[..8], &record::DEAD.to_le_bytes());
        assert_eq!(&short[8..16], &exit::KILLED.to_le_bytes());
        let full = read(&mut m, &mut host, 1, 512).unwrap();
        check_dead_record(&full, 512).unwrap();
        assert!(full.starts_with(&short));
        let reason = String::from_utf8_lossy(&full[16..]).into_owned();
        assert!(
            reason.contains("page fault") && reason.contains("before INIT"),
            "{reason}"
        );
        assert_eq!(read(&mut m, &mut host, 1, 4096).unwrap(), full);
        assert_eq!(read(&mut m, &mut host, 1, 16), Err(Errno::EINVAL));
        assert_eq!(read(&mut m, &mut host, 3, 512), Err(Errno::EPERM));
        assert_eq!(host.entries, 1, "a dead guest was entered again");
        // A dead guest keeps nothing.
        host.assert_empty();
        // Writes: parsing first (EINVAL), INITIALIZE is EBUSY, everything else ENOENT, from
        // anyone; BREAK 1 does not block.
        for (words, caller, want) in [
            (vec![2, 0], 1, Effect::Fail(Errno::ENOENT)),
            (vec![2, 0], 2, Effect::Fail(Errno::ENOENT)),
            (vec![1, 0], 1, Effect::Fail(Errno::ENOENT)),
            (vec![3, 0], 2, Effect::Fail(Errno::ENOENT)),
            (vec![3, 1], 2, Effect::Fail(Errno::ENOENT)),
            (vec![3, 1], 1, Effect::Fail(Errno::ENOENT)),
            (vec![2, 32], 1, Effect::Fail(Errno::EINVAL)),
            (vec![3, 2], 2, Effect::Fail(Errno::EINVAL)),
            (vec![2], 1, Effect::Fail(Errno::EINVAL)),
        ] {
            let b = proto::bytes(&words);
            assert_eq!(device_write(&d, &b, caller), want, "{words:?} by {caller}");
            assert_eq!(m.expect_write(&b, caller, &limits), Expect::exactly(want));
        }
        assert_eq!(device_write(&d, &init, 1), Effect::Fail(Errno::EBUSY));
        assert_eq!(
            m.expect_write(&init, 2, &limits),
            Expect::exactly(Effect::Fail(Errno::EBUSY))
        );
        teardown(&d, &mut host);
        host.assert_empty();
    }

    #[test]
    fn hand_picked_cases() {
        let limits = Limits {
            user_top: HOST.user_top,
            switcher: Some(HOST.switcher),
        };
        let init =
            |entry: u64| proto::bytes(&[0, abi::VERSION, CTX.mem_base, 256, entry, 0, 0x1000]);
        let mut m = DevModel::default();
        let w = |m: &DevModel, words: &[u64], caller| {
            m.expect_write(&proto::bytes(words), caller, &limits).want
        };
        assert_eq!(m.expect_read(1, 512), ReadExpect::Fail(Errno::EINVAL));
        assert_eq!(m.expect_read(1, 0), ReadExpect::Fail(Errno::EINVAL));
        assert_eq!(w(&m, &[3, 1], 1), Effect::Fail(Errno::EINVAL));
        assert_eq!(w(&m, &[2, 32], 1), Effect::Fail(Errno::EINVAL));
        let bad = m.expect_write(&init(HOST.switcher.0), 1, &limits);
        assert_eq!(bad.want, Effect::Fail(Errno::EINVAL));
        assert_eq!(
            m.expect_write(&init(GOOD), 1, &limits).want,
            Effect::Ret(56)
        );
        m.observe_write(&init(GOOD), 1, Effect::Ret(56));
        assert_eq!(
            m.expect_write(&init(GOOD), 2, &limits).want,
            Effect::Fail(Errno::EBUSY)
        );
        assert_eq!(w(&m, &[2, 31], 1), Effect::Ret(16));
        assert_eq!(w(&m, &[2, 31], 2), Effect::Fail(Errno::EPERM));
        assert_eq!(w(&m, &[2, 32], 2), Effect::Fail(Errno::EINVAL));
        assert_eq!(w(&m, &[3, 0], 2), Effect::Ret(16));
        assert_eq!(w(&m, &[3, 1], 2), Effect::Block);
        assert_eq!(w(&m, &[3, (1 << 32) | 1], 2), Effect::Fail(Errno::EINVAL));
        assert_eq!(w(&m, &[1, 5], 1), Effect::Fail(Errno::ENOENT));
        // Reads: ownership before length, length before running.
        assert_eq!(m.expect_read(2, 16), ReadExpect::Fail(Errno::EPERM));
        assert_eq!(m.expect_read(2, 512), ReadExpect::Fail(Errno::EPERM));
        assert_eq!(m.expect_read(1, 23), ReadExpect::Fail(Errno::EINVAL));
        assert!(matches!(
            m.expect_read(1, 24),
            ReadExpect::Dead { len: 24, .. }
        ));
        // A refused read kills nothing.
        m.observe_read(1, 16, &Err(Errno::EINVAL));
        m.observe_read(2, 512, &Err(Errno::EPERM));
        assert!(!m.is_dead());
        // The first record: the guest is dead, and the record must never change.
        let mut rec = proto::bytes(&[record::DEAD, exit::KILLED]);
        rec.extend_from_slice(b"page fault before INIT");
        let want = m.expect_read(1, 24);
        assert_eq!(want.judge(&Ok(rec[..24].to_vec())), Ok(()));
        assert!(want.judge(&Ok(rec.clone())).is_err(), "longer than 24");
        assert!(want.judge(&Err(Errno::ENOSYS)).is_err());
        m.observe_read(1, 24, &Ok(rec[..24].to_vec()));
        assert!(m.is_dead());
        let want = m.expect_read(1, 512);
        assert_eq!(want.judge(&Ok(rec.clone())), Ok(()));
        let mut other = rec.clone();
        other[16] = b'P';
        assert!(
            want.judge(&Ok(other)).is_err(),
            "differs from the prefix seen"
        );
        m.observe_read(1, 512, &Ok(rec.clone()));
        let want = m.expect_read(1, 512);
        assert_eq!(want.judge(&Ok(rec.clone())), Ok(()));
        let mut longer = rec.clone();
        longer.push(b'!');
        assert!(
            want.judge(&Ok(longer)).is_err(),
            "longer than the whole record"
        );
        assert!(want.judge(&Ok(rec[..30].to_vec())).is_err(), "shorter");
        assert_eq!(m.expect_read(1, 30).judge(&Ok(rec[..30].to_vec())), Ok(()));
        // Malformed records.
        let bad = |b: &[u8]| check_dead_record(b, 512).is_err();
        assert!(bad(&rec[..16]), "no reason");
        assert!(bad(&proto::bytes(&[record::CONSOLE, exit::KILLED, 0x4141])));
        assert!(bad(&proto::bytes(&[record::DEAD, exit::CRASHED, 0x4141])));
        let mut unprintable = rec.clone();
        unprintable.push(0);
        assert!(bad(&unprintable));
        assert!(
            check_dead_record(&rec, 24).is_err(),
            "longer than the buffer"
        );
        // After death: writes ENOENT from anyone (parsing and INITIALIZE first), reads EPERM for
        // others and EINVAL for short buffers, as before.
        assert_eq!(w(&m, &[2, 31], 1), Effect::Fail(Errno::ENOENT));
        assert_eq!(w(&m, &[2, 31], 2), Effect::Fail(Errno::ENOENT));
        assert_eq!(w(&m, &[3, 1], 2), Effect::Fail(Errno::ENOENT));
        assert_eq!(w(&m, &[3, 0], 1), Effect::Fail(Errno::ENOENT));
        assert_eq!(w(&m, &[1, 0], 1), Effect::Fail(Errno::ENOENT));
        assert_eq!(w(&m, &[2, 32], 1), Effect::Fail(Errno::EINVAL));
        assert_eq!(
            m.expect_write(&init(GOOD), 1, &limits).want,
            Effect::Fail(Errno::EBUSY)
        );
        assert_eq!(m.expect_read(2, 512), ReadExpect::Fail(Errno::EPERM));
        assert_eq!(m.expect_read(1, 16), ReadExpect::Fail(Errno::EINVAL));
        // Unknown switcher: a kernel-half entry may go either way, a user-half one may not.
        let unknown = Limits {
            switcher: None,
            ..limits
        };
        let fresh = DevModel::default();
        let e = fresh.expect_write(&init(0xffff_ffff_8000_0000), 1, &unknown);
        assert!(e.allows(Effect::Ret(56)) && e.allows(Effect::Fail(Errno::EINVAL)));
        assert_eq!(
            fresh.expect_write(&init(GOOD), 1, &unknown),
            Expect::exactly(Effect::Ret(56))
        );
    }

    const GOOD: u64 = proto::GOOD_ENTRY;
}
