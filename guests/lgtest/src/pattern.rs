//! Deterministic data the I/O modes write and check.
//!
//! - Block: sector `i` holds the 64 little-endian `u64`s `64 i, 64 i + 1, ..., 64 i + 63`, so a
//!   whole device written with the pattern is one counter of `u64`s: `od -t u8` of the file must
//!   print 0, 1, 2, ... (a misplaced, stale or torn sector shows at once).
//! - TCP: a byte stream from a xorshift generator, the same for any chunking, so sender and
//!   receiver need not agree on anything but the length.

pub const SECTOR: usize = lg_core::abi::dev::block::SECTOR as usize;
const WORDS_PER_SECTOR: u64 = (SECTOR / 8) as u64;

/// Word `j` (0..64) of sector `sector`.
pub fn sector_word(sector: u64, j: u64) -> u64 {
    sector.wrapping_mul(WORDS_PER_SECTOR).wrapping_add(j)
}

/// Fill `buf` (a whole number of sectors) with the pattern of the sectors from `first` on.
pub fn fill_sectors(first: u64, buf: &mut [u8]) {
    for (i, sector) in buf.chunks_mut(SECTOR).enumerate() {
        let s = first.wrapping_add(i as u64);
        for (j, word) in sector.chunks_mut(8).enumerate() {
            let v = sector_word(s, j as u64).to_le_bytes();
            let n = word.len();
            word.copy_from_slice(v.get(..n).unwrap_or(&[]));
        }
    }
}

/// The TCP modes' byte stream: xorshift64*, eight bytes per step, low byte first.
#[derive(Clone, Debug)]
pub struct Stream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Stream {
    pub const fn new(seed: u64) -> Stream {
        // One splitmix64 step, so that nearby seeds give unrelated streams (and never 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Stream {
            state: if z == 0 { 1 } else { z },
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.word = self.next_word();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_are_one_counter() {
        let mut buf = vec![0u8; 3 * SECTOR];
        fill_sectors(7, &mut buf);
        for (k, w) in buf.chunks(8).enumerate() {
            let v = u64::from_le_bytes(w.try_into().unwrap());
            assert_eq!(v, 7 * 64 + k as u64);
        }
        let mut one = vec![0u8; SECTOR];
        fill_sectors(8, &mut one);
        assert_eq!(&one[..], &buf[SECTOR..2 * SECTOR]);
    }

    #[test]
    fn stream_is_independent_of_chunking() {
        let mut a = Stream::new(42);
        let mut whole = vec![0u8; 1000];
        a.fill(&mut whole);
        let mut b = Stream::new(42);
        let mut pieces = vec![0u8; 1000];
        for chunk in pieces.chunks_mut(7) {
            b.fill(chunk);
        }
        assert_eq!(whole, pieces);
        assert_ne!(&whole[..8], &whole[8..16]);
        let mut c = Stream::new(43);
        let mut other = vec![0u8; 16];
        c.fill(&mut other);
        assert_ne!(&whole[..16], &other[..]);
    }
}
