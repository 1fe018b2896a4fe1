//! A process's memory regions (what Linux calls VMAs): the ranges where a page fault means "map
//! (or copy) a page here" rather than "kill the process". Fixed capacity, no allocator.

use lg_core::abi::PAGE_SIZE;

/// `[start, end)`, page aligned, user read-write anonymous memory (the only kind there is: the
/// code mapping is not a region, so a write to it is never "fixed").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
}

impl Region {
    pub const fn contains(&self, va: u64) -> bool {
        self.start <= va && va < self.end
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    Empty,
    Unaligned,
    Overlaps,
    Full,
}

pub const MAX_REGIONS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regions {
    list: [Option<Region>; MAX_REGIONS],
}

impl Default for Regions {
    fn default() -> Self {
        Self::new()
    }
}

impl Regions {
    pub const fn new() -> Self {
        Regions {
            list: [None; MAX_REGIONS],
        }
    }

    pub fn add(&mut self, start: u64, end: u64) -> Result<(), RegionError> {
        if start >= end {
            return Err(RegionError::Empty);
        }
        if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
            return Err(RegionError::Unaligned);
        }
        if self.iter().any(|r| r.start < end && start < r.end) {
            return Err(RegionError::Overlaps);
        }
        let slot = self
            .list
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(RegionError::Full)?;
        *slot = Some(Region { start, end });
        Ok(())
    }

    /// The region holding `va`, if any.
    pub fn find(&self, va: u64) -> Option<Region> {
        self.iter().find(|r| r.contains(va))
    }

    /// Remove exactly `[start, end)` (partial unmaps are not supported). Returns whether it was
    /// there.
    pub fn remove(&mut self, start: u64, end: u64) -> bool {
        match self
            .list
            .iter_mut()
            .find(|s| **s == Some(Region { start, end }))
        {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Region> + '_ {
        self.list.iter().flatten().copied()
    }

    /// The lowest page-aligned `start >= base` such that `[start, start + len)` ends by `limit`
    /// and keeps at least `guard` bytes from every region on both sides (first fit).
    pub fn find_gap(&self, base: u64, limit: u64, len: u64, guard: u64) -> Option<u64> {
        let mut start = base;
        'retry: loop {
            let end = start.checked_add(len)?;
            if end > limit {
                return None;
            }
            for r in self.iter() {
                if r.start < end.saturating_add(guard) && start < r.end.saturating_add(guard) {
                    start = r.end.checked_add(guard)?;
                    continue 'retry;
                }
            }
            return Some(start);
        }
    }
}

/// Round robin: the first of `n` slots after `after` (wrapping around, `after` itself last) for
/// which `runnable` holds; from slot 0 when there is no `after`.
pub fn round_robin(
    n: usize,
    after: Option<usize>,
    runnable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let first = after.map_or(0, |a| a + 1);
    (0..n).map(|k| (first + k) % n).find(|&i| runnable(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PAGE_SIZE;

    #[test]
    fn add_find_remove() {
        let mut r = Regions::new();
        assert_eq!(r.add(P, 3 * P), Ok(()));
        assert_eq!(r.add(4 * P, 5 * P), Ok(()));
        assert_eq!(
            r.find(2 * P + 5),
            Some(Region {
                start: P,
                end: 3 * P
            })
        );
        assert_eq!(r.find(3 * P), None);
        assert_eq!(r.find(0), None);
        assert!(!r.remove(P, 2 * P), "partial removal is refused");
        assert!(r.remove(P, 3 * P));
        assert_eq!(r.find(2 * P), None);
        assert_eq!(r.iter().count(), 1);
    }

    #[test]
    fn refuses_bad_regions() {
        let mut r = Regions::new();
        assert_eq!(r.add(P, P), Err(RegionError::Empty));
        assert_eq!(r.add(1, P), Err(RegionError::Unaligned));
        r.add(P, 4 * P).unwrap();
        assert_eq!(r.add(3 * P, 5 * P), Err(RegionError::Overlaps));
        assert_eq!(r.add(0, 2 * P), Err(RegionError::Overlaps));
        assert_eq!(r.add(4 * P, 5 * P), Ok(()));
        for i in 2..MAX_REGIONS as u64 {
            r.add(10 * i * P, (10 * i + 1) * P).unwrap();
        }
        assert_eq!(r.add(1000 * P, 1001 * P), Err(RegionError::Full));
    }

    #[test]
    fn first_fit_gaps() {
        let mut r = Regions::new();
        assert_eq!(r.find_gap(10 * P, 100 * P, 2 * P, P), Some(10 * P));
        r.add(10 * P, 12 * P).unwrap();
        assert_eq!(r.find_gap(10 * P, 100 * P, 2 * P, P), Some(13 * P));
        r.add(13 * P, 15 * P).unwrap();
        r.add(20 * P, 21 * P).unwrap();
        assert_eq!(r.find_gap(10 * P, 100 * P, 2 * P, P), Some(16 * P));
        assert_eq!(r.find_gap(10 * P, 100 * P, 4 * P, P), Some(22 * P));
        assert_eq!(r.find_gap(10 * P, 25 * P, 4 * P, P), None);
        assert!(r.remove(10 * P, 12 * P));
        assert_eq!(
            r.find_gap(10 * P, 100 * P, 2 * P, P),
            Some(10 * P),
            "freed space is reused"
        );
        assert_eq!(r.find_gap(u64::MAX - P, u64::MAX, 2 * P, P), None);
    }

    #[test]
    fn round_robin_order() {
        let all = |_| true;
        assert_eq!(round_robin(4, None, all), Some(0));
        assert_eq!(round_robin(4, Some(1), all), Some(2));
        assert_eq!(round_robin(4, Some(3), all), Some(0));
        assert_eq!(round_robin(4, Some(2), |i| i == 2), Some(2), "self last");
        assert_eq!(round_robin(4, Some(2), |i| i == 1), Some(1));
        assert_eq!(round_robin(4, Some(0), |_| false), None);
        assert_eq!(round_robin(0, None, all), None);
    }
}
