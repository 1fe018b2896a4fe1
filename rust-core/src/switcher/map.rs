//! The switcher's own corner of every guest address space.
//!
//! For each host CPU the module builds, once, a small page-table subtree that maps the switcher
//! text and that CPU's guest-visible pages (regs, IST stacks, IDT, GDT/TSS) at their host virtual
//! addresses, and nothing else: not the host-only page, not other CPUs' pages. Before each entry
//! the host points the switcher's top-level slot of the guest's shadow root at the subtree of the
//! CPU it is about to run on.

/// One page-table page owned by the caller: its physical address and its entries.
pub struct Table<'a> {
    pub pa: u64,
    pub entries: &'a mut [u64; 512],
}

/// Entry bits.
pub const P: u64 = 1 << 0;
pub const RW: u64 = 1 << 1;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const NX: u64 = 1 << 63;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Flags of the non-leaf entries of the subtree and of the top-level slot entry: supervisor,
/// writable, accessed; the leaves decide the real protection.
pub const TABLE_FLAGS: u64 = P | RW | A;

/// What one switcher page is to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// Read-only, executable (switcher text).
    Text,
    /// Read-write, not executable (regs page, IST stacks).
    Data,
    /// Read-only, not executable (IDT, GDT/TSS).
    ReadOnly,
}

impl Prot {
    pub fn leaf_flags(self) -> u64 {
        match self {
            Prot::Text => P | A,
            Prot::Data => P | RW | A | D | NX,
            Prot::ReadOnly => P | A | NX,
        }
    }
}

/// Builds one CPU's subtree. `levels` is the number of levels *below* the top-level slot (3 on a
/// 4-level host: PDPT, PD, PT; 4 on a 5-level host). Tables come from `alloc` and are recorded by
/// the caller; the subtree's root is the first one allocated.
pub struct SubtreeBuilder<'a, F: FnMut() -> Option<Table<'a>>> {
    alloc: F,
    levels: u32,
    root: Option<Table<'a>>,
    /// Tables below the root; at most one per level per distinct index path, which for a switcher
    /// area of a few dozen pages is a handful.
    tables: [Option<Table<'a>>; 32],
}

#[derive(Debug, PartialEq, Eq)]
pub enum MapError {
    OutOfMemory,
    TooManyTables,
    Overlap,
}

impl<'a, F: FnMut() -> Option<Table<'a>>> SubtreeBuilder<'a, F> {
    pub fn new(levels: u32, mut alloc: F) -> Result<Self, MapError> {
        let root = alloc().ok_or(MapError::OutOfMemory)?;
        Ok(SubtreeBuilder {
            alloc,
            levels,
            root: Some(root),
            tables: [const { None }; 32],
        })
    }

    /// Physical address of the subtree root (what goes in the top-level slot, with TABLE_FLAGS).
    pub fn root_pa(&self) -> u64 {
        self.root.as_ref().map_or(0, |t| t.pa)
    }

    fn index(va: u64, level: u32) -> usize {
        ((va >> (12 + 9 * level)) & 511) as usize
    }

    fn find(&mut self, pa: u64) -> Option<&mut Table<'a>> {
        if self.root.as_ref().is_some_and(|t| t.pa == pa) {
            return self.root.as_mut();
        }
        self.tables.iter_mut().flatten().find(|t| t.pa == pa)
    }

    /// Map the 4 KiB page at `va` to host frame `pa` with protection `prot`.
    pub fn map(&mut self, va: u64, pa: u64, prot: Prot) -> Result<(), MapError> {
        let mut table_pa = self.root_pa();
        // Walk from the level just below the slot down to the page-table level.
        for level in (1..self.levels).rev() {
            let idx = Self::index(va, level);
            let entry = {
                let t = self.find(table_pa).ok_or(MapError::TooManyTables)?;
                t.entries.get(idx).copied().unwrap_or(0)
            };
            if entry & P != 0 {
                table_pa = entry & ADDR;
                continue;
            }
            let new = (self.alloc)().ok_or(MapError::OutOfMemory)?;
            let new_pa = new.pa;
            let slot = self
                .tables
                .iter_mut()
                .find(|s| s.is_none())
                .ok_or(MapError::TooManyTables)?;
            *slot = Some(new);
            let t = self.find(table_pa).ok_or(MapError::TooManyTables)?;
            if let Some(e) = t.entries.get_mut(idx) {
                *e = new_pa | TABLE_FLAGS;
            }
            table_pa = new_pa;
        }
        let t = self.find(table_pa).ok_or(MapError::TooManyTables)?;
        let e = t
            .entries
            .get_mut(Self::index(va, 0))
            .ok_or(MapError::Overlap)?;
        if *e != 0 {
            return Err(MapError::Overlap);
        }
        *e = (pa & ADDR) | prot.leaf_flags();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Walk a built subtree like the CPU would (below the slot).
    fn walk(
        tables: &HashMap<u64, Box<[u64; 512]>>,
        root: u64,
        levels: u32,
        va: u64,
    ) -> Option<u64> {
        let mut t = root;
        for level in (0..levels).rev() {
            let e = tables.get(&t)?[((va >> (12 + 9 * level)) & 511) as usize];
            if e & P == 0 {
                return None;
            }
            if level == 0 {
                return Some(e);
            }
            t = e & ADDR;
        }
        None
    }

    fn build(levels: u32, pages: &[(u64, u64, Prot)]) -> (u64, HashMap<u64, Box<[u64; 512]>>) {
        let mut store: Vec<Box<[u64; 512]>> = (0..20).map(|_| Box::new([0u64; 512])).collect();
        let ptrs: Vec<*mut [u64; 512]> = store.iter_mut().map(|b| &mut **b as *mut _).collect();
        let mut next = 0;
        let root;
        {
            let mut b = SubtreeBuilder::new(levels, || {
                let i = next;
                next += 1;
                // SAFETY (test): each box is handed out once and outlives the builder.
                ptrs.get(i).map(|p| Table {
                    pa: 0x1000 * (i as u64 + 1),
                    entries: unsafe { &mut **p },
                })
            })
            .unwrap();
            for &(va, pa, prot) in pages {
                b.map(va, pa, prot).unwrap();
            }
            root = b.root_pa();
        }
        let map = store
            .into_iter()
            .enumerate()
            .map(|(i, b)| (0x1000 * (i as u64 + 1), b))
            .collect();
        (root, map)
    }

    #[test]
    fn maps_text_and_cpu_pages() {
        let base = 0xffff_c900_0040_0000u64;
        for levels in [3, 4] {
            let pages = [
                (base, 0xa000, Prot::Text),
                (base + 0x1000, 0xb000, Prot::Text),
                (base + 0x7000, 0xc000, Prot::Data),
                (base + 0x9000, 0xd000, Prot::ReadOnly),
            ];
            let (root, tables) = build(levels, &pages);
            for (va, pa, prot) in pages {
                assert_eq!(
                    walk(&tables, root, levels, va),
                    Some(pa | prot.leaf_flags())
                );
            }
            assert_eq!(walk(&tables, root, levels, base + 0x8000), None);
            assert_eq!(walk(&tables, root, levels, base + 0x20_0000), None);
        }
    }

    #[test]
    fn crosses_a_page_table_boundary() {
        let base = 0xffff_c900_003f_f000u64; // last page of a 2 MiB region
        let pages = [
            (base, 0xa000, Prot::Text),
            (base + 0x1000, 0xb000, Prot::Data),
        ];
        let (root, tables) = build(3, &pages);
        assert_eq!(walk(&tables, root, 3, base), Some(0xa000 | P | A));
        assert_eq!(
            walk(&tables, root, 3, base + 0x1000),
            Some(0xb000 | Prot::Data.leaf_flags())
        );
    }

    #[test]
    fn protections() {
        assert_eq!(Prot::Text.leaf_flags() & (RW | NX), 0);
        assert_eq!(Prot::Data.leaf_flags() & (RW | NX), RW | NX);
        assert_eq!(Prot::ReadOnly.leaf_flags() & (RW | NX), NX);
    }
}
