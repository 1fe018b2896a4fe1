//! `lgprobe fuzz [N] [SEED]`: N random writes (and some reads) over a handful of fds, from two
//! threads, each result checked against the model in `model.rs`.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lg_core::abi::{self, lhreq};

use crate::model::{DevModel, Effect, Expect, Limits};
use crate::proto::{self, Mapping, Outcome};
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
    Read(Arc<OwnedFd>),
}

/// A second thread that writes and reads on request, so that ownership (EPERM) is exercised.
struct Helper {
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Outcome>,
}

impl Helper {
    fn start() -> Helper {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (res_tx, results) = mpsc::channel();
        std::thread::spawn(move || {
            for job in job_rx {
                let r = match job {
                    Job::Write(fd, b) => proto::write(&*fd, &b),
                    Job::Read(fd) => proto::read(&*fd),
                };
                if res_tx.send(r).is_err() {
                    break;
                }
            }
        });
        Helper { jobs, results }
    }

    fn run(&self, job: Job) -> Outcome {
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
}

struct Fuzzer<'a> {
    rep: &'a mut Report,
    limits: Limits,
    helper: Helper,
    tally: BTreeMap<String, u64>,
    ops: u64,
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
            self.helper
                .run(Job::Write(slot.fd.clone(), b.to_vec()))
                .into()
        };
        self.judge(|| format!("thread {who} writes [{}]", hex(b)), want, got);
        slot.model.observe_write(b, who, got);
    }

    fn read(&mut self, slot: &Slot, caller: u64) {
        let want = slot.model.expect_read(caller);
        let got = if caller == MAIN {
            proto::read(&*slot.fd)
        } else {
            self.helper.run(Job::Read(slot.fd.clone()))
        };
        self.judge(|| format!("thread {caller} reads"), want, got.into());
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
    };
    for _ in 0..n {
        let i = rng.below(SLOTS as u64) as usize;
        if rng.one_in(REOPEN_ONE_IN) {
            slots[i] = open()?;
        }
        let caller = if rng.one_in(5) { HELPER } else { MAIN };
        if rng.one_in(12) {
            fz.read(&slots[i], caller);
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
    fz.rep
        .note(&format!("fuzz: {} results; {}", fz.ops, tally.join(", ")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lg_core::device::{Device, WriteOutcome};
    use lg_core::errno::Errno;
    use lg_core::protocol::HostLimits;

    const HOST: HostLimits = HostLimits {
        user_top: 0x0000_7fff_ffff_f000,
        switcher: (0xffff_c900_0000_0000, 0xffff_c980_0000_0000),
    };
    const CTX: GenCtx = GenCtx {
        mem_base: 0x7f12_3456_0000,
        pfn_limit: 256,
        user_top: HOST.user_top,
    };

    fn device_write(d: &Device, b: &[u8], caller: u64) -> Effect {
        match d.write(b, caller, &HOST) {
            Ok(WriteOutcome::Return(n)) => Effect::Ret(n),
            Ok(WriteOutcome::WaitForBreakOff) => Effect::Block,
            Ok(WriteOutcome::WakeBreakWaiters | WriteOutcome::Initialized) => {
                Effect::Ret(b.len() as u64)
            }
            Err(e) => Effect::Fail(e),
        }
    }

    /// Drive the model and the real state machine with the same random operations; every result
    /// must be allowed by the model. Returns how often each result occurred.
    fn agree(seed: u64, n: usize, switcher: Option<(u64, u64)>) -> BTreeMap<String, u64> {
        let limits = Limits {
            user_top: HOST.user_top,
            switcher,
        };
        let mut rng = Rng::new(seed);
        let mut devs: Vec<(Device, DevModel)> = (0..SLOTS)
            .map(|_| (Device::new(), DevModel::default()))
            .collect();
        let mut tally = BTreeMap::new();
        for op in 0..n {
            let i = rng.below(SLOTS as u64) as usize;
            if rng.one_in(REOPEN_ONE_IN) {
                devs[i] = (Device::new(), DevModel::default());
            }
            let caller = 1 + rng.below(3);
            let (dev, model) = &mut devs[i];
            let (want, got, what) = if rng.one_in(12) {
                (
                    model.expect_read(caller),
                    dev.read(caller).into(),
                    "read".to_string(),
                )
            } else {
                let b = gen_write(&mut rng, &CTX);
                let want = model.expect_write(&b, caller, &limits);
                let got = device_write(dev, &b, caller);
                model.observe_write(&b, caller, got);
                (want, got, hex(&b))
            };
            assert!(
                want.allows(got),
                "seed {seed:#x} op {op} caller {caller} {what}: got {got}, want {want}"
            );
            *tally.entry(got.to_string()).or_default() += 1;
        }
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
            "16", "56", "EINVAL", "EPROTO", "EBUSY", "EPERM", "ENOENT", "ENOSYS", &block,
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
        assert_eq!(m.expect_read(1).want, Effect::Fail(Errno::EINVAL));
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
        assert_eq!(m.expect_read(2).want, Effect::Fail(Errno::EPERM));
        assert_eq!(
            m.expect_read(1).want,
            Effect::Fail(crate::model::OWNER_READ)
        );
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
