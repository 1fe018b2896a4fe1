//! Random DMA traffic among three fake guests, steered by a byte string (the unit tests use a
//! seeded generator, `rust-core/fuzz` uses libFuzzer). After every operation the invariants are
//! checked: no panic, a delivery copies exactly the bytes it reports, a refused send leaves the
//! sender's `used_len` at 0, bindings per guest stay within the limit, and every file reference a
//! binding took is given back when the bindings go.

use std::collections::HashMap;

use super::engine::{self, DmaError, DmaHost, Sent};
use super::{
    free_entry, BadDma, Dma, GuestMem, KeyId, MemFault, Table, DMA_SIZE, MAX_BINDINGS_PER_GUEST,
};

const MEM: usize = 0x10000;
/// Keys in 0x8000..0x9000 are a shared file (offset = key - 0x8000); the rest private.
const SHARED: std::ops::Range<u64> = 0x8000..0x9000;

/// One fake guest's memory, `[0, len)` (the unit tests in `tests.rs` use it too).
pub struct Mem(pub Vec<u8>);

impl GuestMem for Mem {
    fn limit(&self) -> u64 {
        self.0.len() as u64
    }
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let g = gpa as usize;
        buf.copy_from_slice(self.0.get(g..g + buf.len()).ok_or(MemFault)?);
        Ok(())
    }
    fn write(&mut self, gpa: u64, buf: &[u8]) -> Result<(), MemFault> {
        let g = gpa as usize;
        self.0
            .get_mut(g..g + buf.len())
            .ok_or(MemFault)?
            .copy_from_slice(buf);
        Ok(())
    }
}

struct World {
    mems: HashMap<u64, Mem>,
    me: u64,
    held: i64,
    condemned: Vec<u64>,
}

impl DmaHost for World {
    fn me(&self) -> (u64, u64) {
        (self.me, self.me)
    }
    fn identify(&mut self, gpa: u64) -> Result<KeyId, MemFault> {
        Ok(if SHARED.contains(&gpa) {
            KeyId::Shared {
                file: 1,
                offset: gpa - SHARED.start,
            }
        } else {
            KeyId::Private
        })
    }
    fn hold(&mut self, id: KeyId) {
        if id != KeyId::Private {
            self.held += 1;
        }
    }
    fn release(&mut self, id: KeyId) {
        if id != KeyId::Private {
            self.held -= 1;
        }
    }
    fn memories(&mut self, peer: u64) -> (&mut dyn GuestMem, Option<&mut dyn GuestMem>) {
        let me = self.me;
        if peer == me {
            return (self.mems.get_mut(&me).expect("me"), None);
        }
        let [a, b] = self.mems.get_disjoint_mut([&me, &peer]);
        (a.expect("me"), b.map(|m| m as &mut dyn GuestMem))
    }
    fn raise(&mut self, _: u64, _: u8) {}
    fn condemn(&mut self, peer: u64, _: BadDma) {
        self.condemned.push(peer);
    }
}

/// A byte stream as a source of choices.
struct Src<'a>(&'a [u8]);

impl Src<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn word(&mut self) -> u64 {
        u64::from(self.byte()) | u64::from(self.byte()) << 8
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn write_dma(m: &mut Mem, gpa: u64, used: u32, sections: &[(u64, u16)]) {
    let mut raw = [0u8; DMA_SIZE as usize];
    raw[..4].copy_from_slice(&used.to_le_bytes());
    for (i, (a, l)) in sections.iter().enumerate().take(16) {
        raw[8 + 8 * i..16 + 8 * i].copy_from_slice(&a.to_le_bytes());
        raw[136 + 2 * i..138 + 2 * i].copy_from_slice(&l.to_le_bytes());
    }
    let _ = m.write(gpa, &raw);
}

/// Do `d`'s sections overlap each other or the descriptor itself (at `gpa`)?
fn overlaps(d: &Dma, gpa: u64) -> bool {
    let mut ranges: Vec<(u64, u64)> = d.sections().map(|(a, l)| (a, a + u64::from(l))).collect();
    ranges.push((gpa, gpa + DMA_SIZE));
    ranges.sort();
    ranges.windows(2).any(|w| w[1].0 < w[0].1)
}

/// The bytes a descriptor's sections hold, concatenated.
fn gather(m: &mut Mem, d: &Dma, max: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (a, l) in d.sections() {
        let mut b = vec![0u8; usize::from(l)];
        if m.read(a, &mut b).is_err() {
            break;
        }
        out.extend(b);
    }
    out.truncate(max as usize);
    out
}

/// Run the operations `data` describes. Returns how many sends were delivered, dropped and
/// refused (so a test can check the stream exercised every path).
pub fn run(data: &[u8]) -> [u64; 3] {
    let mut stats = [0u64; 3];
    let mut w = World {
        mems: (1..=3u64).map(|g| (g, Mem(vec![0; MEM]))).collect(),
        me: 1,
        held: 0,
        condemned: vec![],
    };
    let mut t = Table::new();
    let mut s = Src(data);
    while !s.done() {
        let g = 1 + u64::from(s.byte() % 3);
        w.me = g;
        let key = if s.byte() & 1 == 0 {
            SHARED.start + 8 * (s.word() % 8)
        } else {
            s.word() & !7
        };
        match s.byte() % 6 {
            0 => {
                let dmas = (s.word() % (MEM as u64)) & !7;
                let arg = (u64::from(s.byte() % 4) << 8) | u64::from(s.byte() % 34);
                let _ = engine::bind(&mut t, &mut w, key, dmas, arg);
            }
            1 | 2 => {
                // Build a descriptor (sometimes a broken one) and send it.
                let at = 0x100 + 8 * (s.word() % 64);
                let n = usize::from(s.byte() % 5);
                let secs: Vec<(u64, u16)> = (0..n)
                    .map(|_| {
                        let a = if s.byte() < 250 {
                            s.word() % (MEM as u64)
                        } else {
                            s.word() << 16
                        };
                        (a, (s.word() % 600) as u16)
                    })
                    .collect();
                write_dma(w.mems.get_mut(&g).expect("g"), at, 0, &secs);
                let src = Dma::fetch(w.mems.get_mut(&g).expect("g"), at);
                // What the sender offers, read before the send writes its used_len (which the
                // sender's own sections may cover).
                let offered = src
                    .as_ref()
                    .map(|d| gather(w.mems.get_mut(&g).expect("g"), d, u64::MAX))
                    .unwrap_or_default();
                // Where the engine should deliver, worked out beforehand from the same rules.
                let target = w.identify(key).ok().and_then(|id| {
                    let b = t.receiver(g, id).and_then(|i| t.get(i).copied())?;
                    let m = w.mems.get_mut(&b.guest)?;
                    free_entry(m, &b)
                        .ok()
                        .flatten()
                        .map(|(gpa, d)| (b.guest, gpa, d))
                });
                match engine::send(&mut t, &mut w, key, at) {
                    Ok(Sent::Delivered(n)) => {
                        stats[0] += 1;
                        let src = src.expect("a delivered descriptor was valid");
                        assert!(n <= src.total());
                        let mut used = [0u8; 4];
                        w.mems
                            .get_mut(&g)
                            .expect("g")
                            .read(at, &mut used)
                            .expect("in memory");
                        assert_eq!(u64::from(u32::from_le_bytes(used)), n, "sender used_len");
                        // Find the receiver's entry that just took n bytes and compare contents.
                        let sent = offered.get(..n as usize).unwrap_or(&[]).to_vec();
                        assert_eq!(sent.len() as u64, n);
                        // The receive entry chosen beforehand now holds the data, unless the
                        // receiver's sections overlap each other or the descriptor itself (then
                        // it asked for its data to be overwritten).
                        let (peer, gpa, d) = target.expect("a delivery had a receiver");
                        let m = w.mems.get_mut(&peer).expect("peer");
                        let mut used = [0u8; 4];
                        m.read(gpa, &mut used).expect("in memory");
                        if !overlaps(&d, gpa) {
                            assert_eq!(u64::from(u32::from_le_bytes(used)), n, "receiver used_len");
                            assert_eq!(gather(m, &d, n), sent, "receiver's bytes");
                        }
                    }
                    Ok(Sent::Dropped) => {
                        stats[1] += 1;
                        let mut used = [0u8; 4];
                        w.mems
                            .get_mut(&g)
                            .expect("g")
                            .read(at, &mut used)
                            .expect("in memory");
                        assert_eq!(used, [0; 4], "a dropped send leaves used_len 0");
                    }
                    Ok(Sent::ToLauncher) => assert!(!SHARED.contains(&key)),
                    Err(DmaError::Bad(_)) => {
                        stats[2] += 1;
                        assert!(src.is_err(), "refused a valid descriptor");
                    }
                    Err(_) => {}
                }
            }
            3 => {
                let _ = engine::get(&mut t, &mut w, key);
            }
            4 => engine::forget(&mut t, &mut w),
            _ => {
                // The guest scribbles over its memory (descriptors included).
                let at = s.word() % (MEM as u64 - 8);
                let v = s.word().to_le_bytes();
                let _ = w.mems.get_mut(&g).expect("g").write(at, &v);
            }
        }
        for g in 1..=3 {
            assert!(t.count(g) <= MAX_BINDINGS_PER_GUEST);
        }
        assert!(w.held >= 0);
    }
    for g in 1..=3 {
        w.me = g;
        engine::forget(&mut t, &mut w);
    }
    assert_eq!(w.held, 0, "file references outlived their bindings");
    stats
}
