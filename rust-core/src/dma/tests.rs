//! The DMA engine against two fake guests' memories.

use super::fuzz_model::Mem;
use super::*;

fn put_dma(m: &mut Mem, gpa: u64, used: u32, sections: &[(u64, u16)]) {
    let mut raw = [0u8; DMA_SIZE as usize];
    raw[..4].copy_from_slice(&used.to_le_bytes());
    for (i, (a, l)) in sections.iter().enumerate() {
        raw[8 + 8 * i..16 + 8 * i].copy_from_slice(&a.to_le_bytes());
        raw[136 + 2 * i..138 + 2 * i].copy_from_slice(&l.to_le_bytes());
    }
    m.write(gpa, &raw).unwrap();
}

fn binding(guest: u64, dmas: u64, num: u16) -> Binding {
    Binding {
        guest,
        handle: guest * 100,
        key: 0x9000,
        id: KeyId::Shared {
            file: 0xf11e,
            offset: 8,
        },
        dmas,
        num,
        irq: 3,
        next: 0,
    }
}

#[test]
fn descriptors_are_checked() {
    let mut m = Mem(vec![0; 0x10000]);
    put_dma(&mut m, 0x100, 0, &[(0x1000, 4096), (0x2ff0, 16)]);
    let d = Dma::fetch(&mut m, 0x100).unwrap();
    assert_eq!(
        d.sections().collect::<Vec<_>>(),
        vec![(0x1000, 4096), (0x2ff0, 16)]
    );
    assert_eq!(d.total(), 4112);
    // A zero length ends the list, whatever follows.
    put_dma(&mut m, 0x200, 0, &[(0x1000, 8), (0, 0), (0xdead_0000, 8)]);
    assert_eq!(Dma::fetch(&mut m, 0x200).unwrap().sections().count(), 1);
    for (secs, bad) in [
        (vec![(0x1ff0, 17)], "crosses a page"),
        (vec![(0xf000, 0x1000), (0x10000, 1)], "outside memory"),
        (vec![(u64::MAX - 3, 8)], "wraps"),
    ] {
        put_dma(&mut m, 0x300, 0, &secs);
        assert!(
            matches!(Dma::fetch(&mut m, 0x300), Err(BadDma::Section { .. })),
            "{bad}"
        );
    }
    assert_eq!(
        Dma::fetch(&mut m, 0x301),
        Err(BadDma::Descriptor { gpa: 0x301 })
    );
    assert_eq!(
        Dma::fetch(&mut m, 0xfff8),
        Err(BadDma::Descriptor { gpa: 0xfff8 })
    );
}

#[test]
fn scatter_gather_copy_stops_at_the_shorter_list() {
    let mut a = Mem(vec![0; 0x10000]);
    let mut b = Mem(vec![0; 0x10000]);
    for i in 0..300u64 {
        a.0[0x1000 + i as usize] = i as u8;
    }
    let src = Dma {
        addr: [
            0x1000, 0x1064, 0x10c8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        len: [100, 100, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        used_len: 0,
    };
    let dst = Dma {
        addr: [0x5000, 0x6000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        len: [7, 250, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        used_len: 0,
    };
    let n = copy_sections(&mut a, &src, &mut b, &dst).unwrap();
    assert_eq!(n, 257);
    let got: Vec<u8> = b.0[0x5000..0x5007]
        .iter()
        .chain(&b.0[0x6000..0x60fa])
        .copied()
        .collect();
    let want: Vec<u8> = (0..257u64).map(|i| i as u8).collect();
    assert_eq!(got, want);
    // A fault names the side it came from.
    let far = Dma {
        addr: [0xffff_0000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        len: [8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        used_len: 0,
    };
    assert_eq!(copy_sections(&mut a, &far, &mut b, &dst), Err(Side::Sender));
    assert_eq!(
        copy_sections(&mut a, &src, &mut b, &far),
        Err(Side::Receiver)
    );
}

#[test]
fn the_table_limits_bindings_and_never_matches_the_sender() {
    let mut t = Table::new();
    for i in 0..MAX_BINDINGS_PER_GUEST as u64 {
        assert_eq!(
            t.bind(binding(1, 0x1000 + i * 0x1000, 1)),
            BindResult::Bound
        );
    }
    assert_eq!(
        t.bind(binding(1, 0x100_000, 1)),
        BindResult::Full,
        "33rd binding"
    );
    let id = KeyId::Shared {
        file: 0xf11e,
        offset: 8,
    };
    assert_eq!(
        t.receiver(1, id),
        None,
        "a guest's own bindings are ignored"
    );
    assert_eq!(t.bind(binding(2, 0x1000, 1)), BindResult::Bound);
    let r = t.receiver(1, id).unwrap();
    assert_eq!(t.get(r).unwrap().guest, 2);
    assert_eq!(t.receiver(2, id).map(|i| t.get(i).unwrap().guest), Some(1));
    assert_eq!(t.receiver(1, KeyId::Private), None);
    assert_eq!(
        t.receiver(
            1,
            KeyId::Shared {
                file: 0xf11e,
                offset: 16
            }
        ),
        None
    );
    assert!(t.unbind(2, 0x9000, 0x1000).is_some());
    assert!(t.unbind(2, 0x9000, 0x1000).is_none());
    let mut released = 0;
    t.unbind_all(1, |_| released += 1);
    assert_eq!(released, MAX_BINDINGS_PER_GUEST);
    assert_eq!(t.count(1), 0);
}

#[test]
fn free_entries_are_found_round_robin() {
    let mut m = Mem(vec![0; 0x10000]);
    let mut b = binding(1, 0x2000, 3);
    for i in 0..3 {
        put_dma(
            &mut m,
            0x2000 + i * DMA_SIZE,
            0,
            &[(0x4000 + i * 0x100, 64)],
        );
    }
    put_dma(&mut m, 0x2000, 99, &[(0x4000, 64)]);
    let (gpa, _) = free_entry(&mut m, &b).unwrap().unwrap();
    assert_eq!(gpa, 0x2000 + DMA_SIZE);
    b.next = 2;
    assert_eq!(
        free_entry(&mut m, &b).unwrap().unwrap().0,
        0x2000 + 2 * DMA_SIZE
    );
    for i in 0..3 {
        put_dma(&mut m, 0x2000 + i * DMA_SIZE, 1, &[(0x4000, 64)]);
    }
    assert_eq!(
        free_entry(&mut m, &b).unwrap(),
        None,
        "all busy: none, never a busy one"
    );
    // An array reaching past memory is the receiver's fault.
    let far = binding(1, 0xffc0, 3);
    assert!(free_entry(&mut m, &far).is_err());
    assert_eq!(entry_index(&b, 0x2000 + 2 * DMA_SIZE), 2);
}

mod engine {
    use super::super::engine::*;
    use super::*;
    use std::collections::HashMap;

    /// Several guests; guest ids 1.. with handle = id. Guest memory 64 KiB each. Keys at
    /// 0x8000..0x9000 are "shared" (file 0xf11e at offset key - 0x8000), the rest private.
    struct World {
        mems: HashMap<u64, Mem>,
        me: u64,
        raised: Vec<(u64, u8)>,
        condemned: Vec<u64>,
        held: i64,
    }

    impl World {
        fn new(n: u64) -> World {
            World {
                mems: (1..=n).map(|g| (g, Mem(vec![0; 0x10000]))).collect(),
                me: 1,
                raised: vec![],
                condemned: vec![],
                held: 0,
            }
        }
        fn as_(&mut self, g: u64) -> &mut World {
            self.me = g;
            self
        }
        fn mem(&mut self, g: u64) -> &mut Mem {
            self.mems.get_mut(&g).unwrap()
        }
    }

    impl DmaHost for World {
        fn me(&self) -> (u64, u64) {
            (self.me, self.me)
        }
        fn identify(&mut self, gpa: u64) -> Result<KeyId, MemFault> {
            Ok(if (0x8000..0x9000).contains(&gpa) {
                KeyId::Shared {
                    file: 0xf11e,
                    offset: gpa - 0x8000,
                }
            } else {
                KeyId::Private
            })
        }
        fn hold(&mut self, _: KeyId) {
            self.held += 1;
        }
        fn release(&mut self, _: KeyId) {
            self.held -= 1;
        }
        fn memories(&mut self, peer: u64) -> (&mut dyn GuestMem, Option<&mut dyn GuestMem>) {
            let me = self.me;
            if peer == me {
                return (self.mems.get_mut(&me).unwrap(), None);
            }
            let [a, b] = self.mems.get_disjoint_mut([&me, &peer]);
            (a.unwrap(), b.map(|m| m as &mut dyn GuestMem))
        }
        fn raise(&mut self, peer: u64, irq: u8) {
            self.raised.push((peer, irq));
        }
        fn condemn(&mut self, peer: u64, _: BadDma) {
            self.condemned.push(peer);
        }
    }

    fn used(m: &mut Mem, gpa: u64) -> u32 {
        let mut b = [0u8; 4];
        m.read(gpa, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    #[test]
    fn two_guests_meet_at_a_shared_key() {
        let mut w = World::new(2);
        let mut t = Table::new();
        // Guest 2 binds two receive buffers at shared key 0x8010, irq 5.
        put_dma(w.mem(2), 0x2000, 0, &[(0x4000, 1000)]);
        put_dma(w.mem(2), 0x2000 + DMA_SIZE, 0, &[(0x5000, 1000)]);
        assert_eq!(bind(&mut t, w.as_(2), 0x8010, 0x2000, (2 << 8) | 5), Ok(1));
        // Guest 1 sends 600 bytes there (its own binding at the key would be ignored).
        w.mem(1).0[0x3000..0x3258].fill(0xab);
        put_dma(w.mem(1), 0x100, 77, &[(0x3000, 600)]);
        assert_eq!(bind(&mut t, w.as_(1), 0x8010, 0x2000, (1 << 8) | 6), Ok(1));
        assert_eq!(
            send(&mut t, w.as_(1), 0x8010, 0x100),
            Ok(Sent::Delivered(600))
        );
        assert_eq!(used(w.mem(1), 0x100), 600);
        assert_eq!(used(w.mem(2), 0x2000), 600);
        assert!(w.mem(2).0[0x4000..0x4258].iter().all(|b| *b == 0xab));
        assert_eq!(w.raised, vec![(2, 5)]);
        // The next send takes the next buffer (round robin), then there are none.
        assert_eq!(
            send(&mut t, w.as_(1), 0x8010, 0x100),
            Ok(Sent::Delivered(600))
        );
        assert_eq!(used(w.mem(2), 0x2000 + DMA_SIZE), 600);
        assert_eq!(send(&mut t, w.as_(1), 0x8010, 0x100), Ok(Sent::Dropped));
        assert_eq!(used(w.mem(1), 0x100), 0);
        assert_eq!(
            w.raised.len(),
            3,
            "a full receiver is still poked to refill"
        );
        // Nobody at another offset; private keys go to the launcher.
        assert_eq!(send(&mut t, w.as_(1), 0x8018, 0x100), Ok(Sent::Dropped));
        assert_eq!(send(&mut t, w.as_(1), 0x100, 0x100), Ok(Sent::ToLauncher));
        forget(&mut t, w.as_(1));
        forget(&mut t, w.as_(2));
        assert_eq!(w.held, 0);
    }

    #[test]
    fn bad_arguments_kill_the_caller_bad_buffers_the_owner() {
        let mut w = World::new(2);
        let mut t = Table::new();
        for (key, dmas, arg, want) in [
            (0x8001, 0x2000, (1 << 8) | 1, "key"),
            (0x1_0000, 0x2000, (1 << 8) | 1, "key"),
            (0x8000, 0x2001, (1 << 8) | 1, "array"),
            (0x8000, 0xff00, (2 << 8) | 1, "array"),
            (0x8000, 0x2000, 1, "array"),
            (0x8000, 0x2000, (257 << 8) | 1, "array"),
            (0x8000, 0x2000, (1 << 8) | 32, "irq"),
        ] {
            let e = bind(&mut t, w.as_(1), key, dmas, arg).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
        // 33 bindings: the last returns 0.
        for i in 0..32 {
            assert_eq!(
                bind(&mut t, w.as_(1), 0x8000 + 8 * i, 0x2000, (1 << 8) | 1),
                Ok(1)
            );
        }
        assert_eq!(bind(&mut t, w.as_(1), 0x8000, 0x2000, (1 << 8) | 1), Ok(0));
        // Guest 2 sends a descriptor with a section crossing a page: guest 2 dies.
        put_dma(w.mem(2), 0x100, 0, &[(0x3ff0, 32)]);
        assert!(matches!(
            send(&mut t, w.as_(2), 0x8000, 0x100),
            Err(DmaError::Bad(BadDma::Section { .. }))
        ));
        // Guest 1's own receive buffer is broken: guest 1 is condemned, guest 2 sees a drop.
        put_dma(w.mem(1), 0x2000, 0, &[(0xfff8, 16)]);
        put_dma(w.mem(2), 0x100, 0, &[(0x3000, 32)]);
        assert_eq!(send(&mut t, w.as_(2), 0x8000, 0x100), Ok(Sent::Dropped));
        assert_eq!(w.condemned, vec![1]);
    }

    #[test]
    fn the_launcher_claims_free_buffers_and_never_a_busy_one() {
        let mut w = World::new(1);
        let mut t = Table::new();
        put_dma(w.mem(1), 0x2000, 0, &[(0x4000, 100)]);
        assert_eq!(get(&mut t, w.as_(1), 0x8), Err(NotBound), "nothing bound");
        assert_eq!(bind(&mut t, w.as_(1), 0x8, 0x2000, (1 << 8) | 4), Ok(1));
        assert_eq!(get(&mut t, w.as_(1), 0x8), Ok(Some(0x2000)));
        assert_eq!(used(w.mem(1), 0x2000), 4, "claimed with the irq number");
        assert_eq!(get(&mut t, w.as_(1), 0x8), Ok(None), "busy: none");
        assert_eq!(
            bind(&mut t, w.as_(1), 0x8, 0x2000, 0),
            Ok(1),
            "irq 0 unbinds"
        );
        assert_eq!(bind(&mut t, w.as_(1), 0x8, 0x2000, 0), Ok(0));
    }
}

#[test]
fn random_traffic_keeps_the_invariants() {
    // A cheap xorshift stream of operations; rust-core/fuzz runs the same model under libFuzzer.
    let mut total = [0u64; 3];
    for seed in 1..=40u64 {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let data: Vec<u8> = (0..6000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let s = super::fuzz_model::run(&data);
        for (t, v) in total.iter_mut().zip(s) {
            *t += v;
        }
    }
    assert!(
        total.iter().all(|n| *n > 20),
        "delivered/dropped/refused {total:?}: the stream must exercise every path"
    );
}
