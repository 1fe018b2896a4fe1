//! Shadow page tables: how the guest's page tables become ones the CPU can use.
//!
//! A guest keeps ordinary x86_64 4-level page tables in its own memory. They name *guest-physical*
//! frames, which mean nothing to the CPU: guest-physical page N is whatever host page backs the
//! launcher's memory at offset N * 4096. And even if they named host pages we could not let the
//! CPU use them, because the guest could then map any host page it liked. So, as lguest always
//! did (drivers/lguest/page_tables.c), the host keeps a second set of tables for each guest, the
//! **shadow**, which the CPU really walks while the guest runs. Shadow entries name host frames,
//! and the host writes every one of them itself, after checking the guest's entry.
//!
//! ## A TLB, not a copy
//!
//! The shadow starts empty. When the guest touches an address the shadow does not map, the CPU
//! raises a page fault, the switcher brings us back to the host, and [`Shadow::page_fault`] walks
//! the *guest's* tables for that address, as the CPU would. If the guest's tables do not allow the
//! access either, the fault was the guest's own business and we reflect it to the guest with the
//! error code its hardware would have produced. If they do, we install a shadow entry for that one
//! page and let the guest retry. So the shadow behaves like a TLB: it only ever holds translations
//! the guest's tables gave at some point, and the guest must flush after changing an entry that
//! was present (`FLUSH_ONE`, `FLUSH_TLB`, `NEW_PGTABLE`), exactly as on hardware. The `SET_PTE`
//! family tells us precisely which guest entry changed ([`Shadow::entry_changed`]).
//!
//! A shadow tree is indexed by guest *virtual* address and is a tree, not a copy of the guest's
//! table DAG: a guest page table reachable through two PD entries gets two shadow tables. Each
//! shadow table therefore has exactly one parent, which lets us make every intermediate shadow
//! entry fully permissive and fold the permissions of the whole guest walk into the leaf: RW and
//! US are the AND of all levels, NX the OR. Guest 2 MiB pages become 512 4 KiB shadow leaves (a
//! "split" page table); 1 GiB pages are not supported and kill the guest.
//!
//! ## Accessed and Dirty
//!
//! The CPU sets A and D in the tables it walks, which are the shadow ones, so the guest would never
//! see them. We set them in the guest's entries ourselves when we fill a shadow entry: A in every
//! entry of the walk, D in the leaf on a write. To notice the first write to a clean page, a read
//! fault installs a read-only leaf even if the guest allows writes; the write faults again, and
//! that fault sets D and upgrades the leaf. When the guest clears D it must flush, which drops our
//! writable leaf, so the next write is seen again.
//!
//! ## Frames and pins
//!
//! Every present shadow leaf holds one pin ([`ShadowHost::pin`]) on the host page behind it, so the
//! launcher cannot make that page go away (munmap, swap) while the guest can still reach it. A
//! leaf's pin is dropped when the leaf is. [`Shadow::pinned_pages`] always equals the number of
//! present leaves.
//!
//! ## The address spaces we keep
//!
//! We cache up to [`MAX_ROOTS`] shadow roots, one per guest PML4 (tagged by its guest-physical
//! address), so switching between processes does not rebuild the kernel half every time. Switching
//! (`NEW_PGTABLE`) drops the user half of the root switched to, as `mov %cr3` would; the kernel
//! half (PML4 slots 256..=511) stays, which is why flushes of kernel addresses and
//! [`Shadow::entry_changed`] apply to every cached root.
//!
//! On a 4-level host the root is a PML4 whose entries mirror the guest's. On a 5-level host it is a
//! PML5: a 4-level guest's canonical addresses land in PML5 slot 0 (lower half) and 511 (upper
//! half), each with its own shadow PML4, so guest PML4 slot 0 and slot 256 can never alias.
//!
//! One top-level slot belongs to the switcher, whose pages must be mapped at the same address in
//! the host and in every guest: [`Shadow::set_switcher_entry`] writes the host's entry into it and
//! nothing here ever fills, flushes or frees it. On a 4-level host it is a PML4 slot, and the
//! guest kernel touching it is fatal. On a 5-level host it is a PML5 slot a 4-level guest cannot
//! even name.
//!
//! ## Remembering where entries came from
//!
//! Every shadow table records the guest table it was derived from (its "source"): a shadow PDPT
//! records the guest PDPT, and so on; the PML5 of a 5-level host and the split page table of a
//! 2 MiB page derive from no guest table. Shadow entry `i` of a table with source `S` is derived
//! from the guest entry at `S + 8 * i`, which is how `entry_changed` finds what to drop: it scans
//! the (small, fixed) table of table metadata. When a fault finds an intermediate shadow table
//! whose source is no longer what the guest's tables point to, it throws that subtree away and
//! builds a new one, so a source is always truthful.
//!
//! ## Limits
//!
//! No allocator: the metadata lives in fixed arrays inside [`Shadow`] and the tables in pages the
//! host lends us ([`ShadowHost::alloc_table`]). A guest may use at most [`Config::max_tables`]
//! table pages; when a fault needs more, we flush everything, like a full TLB, and carry on.

mod kill;
mod table;
mod walk;

#[cfg(test)]
pub(crate) mod tests;

pub use kill::Kill;
pub use table::TablePage;

use table::{TableRef, A, ADDR, CHILD_MASK, CHILD_SHIFT, D, ENTRIES, NX, P, RW, TABLE_FLAGS, US};
use walk::{canonical, index, Access, Outcome, Walk, PF_PK, PF_RSVD};

/// Most shadow table pages one guest may have (8 MiB of page tables). Also the size of the
/// metadata array, and it must fit the 11 bits a non-leaf entry has for a slot number.
pub const MAX_TABLES: usize = 2048;
/// Fewest table pages a guest may be limited to: every cached root plus a full path below one.
pub const MIN_TABLES: usize = MAX_ROOTS + 8;
/// Shadow roots (guest address spaces) kept at once.
pub const MAX_ROOTS: usize = 8;

static_assertions::const_assert!(MAX_TABLES <= CHILD_MASK as usize + 1);

/// The source of a shadow table derived from no guest table (a 5-level host's PML5, the split page
/// table of a 2 MiB page). Not page aligned, so no guest entry address ever matches it.
const NO_SRC: u64 = u64::MAX;

/// Guest memory could not be read or written: the launcher's mapping is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemFault;

/// What shadow paging needs from the host kernel (or from a test's fake).
pub trait ShadowHost {
    /// Read one `u64` of guest-physical memory. `gpa` is 8-aligned and already checked against
    /// the guest's memory limit; an error means the launcher's memory is gone.
    fn read_gpa(&mut self, gpa: u64) -> Result<u64, MemFault>;
    /// Write one `u64` of guest-physical memory (same rules as `read_gpa`).
    fn write_gpa(&mut self, gpa: u64, val: u64) -> Result<(), MemFault>;
    /// Pin the guest page at `gpa` (page aligned, inside guest memory) for writing and return its
    /// host page frame number. Each successful call is balanced by one `unpin`.
    fn pin(&mut self, gpa: u64) -> Result<u64, MemFault>;
    fn unpin(&mut self, host_pfn: u64);
    /// A zeroed, page-aligned host page for a shadow table; `None` when memory is short.
    fn alloc_table(&mut self) -> Option<TablePage>;
    fn free_table(&mut self, table: TablePage);
}

/// Fixed facts about one guest, given at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The host runs 5-level paging: the shadow root is a PML5.
    pub host_la57: bool,
    /// The top-level slot (PML4 index on a 4-level host, PML5 index on a 5-level one) that holds
    /// the switcher. Anything outside 0..=511 reserves nothing.
    pub switcher_slot: usize,
    /// Guest-physical memory is `[0, pfn_limit * 4096)`.
    pub pfn_limit: u64,
    /// The host's MAXPHYADDR (clamped to 20..=52): host frames and table pages must lie below it.
    pub host_phys_bits: u32,
    /// Most shadow table pages this guest may use (clamped to `MIN_TABLES..=MAX_TABLES`).
    pub max_tables: usize,
}

/// What to do about a page fault the guest took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The shadow now maps the address: resume the guest, which retries the access.
    Fixed,
    /// The guest's own tables forbid the access: deliver #PF to the guest with this error code
    /// (and the faulting address in the shared page's `cr2`).
    Reflect { err: u64 },
    /// The address is not canonical for a 4-level guest (only a 5-level host reports those as page
    /// faults): deliver #GP(0), which is what 4-level hardware raises.
    GeneralProtection,
}

/// The result of [`Shadow::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation {
    /// The guest-physical address (inside guest memory).
    Mapped(u64),
    /// The guest's tables do not allow the access; `err` is the #PF error code it would get.
    Fault { err: u64 },
}

/// What we know about one slot of the table metadata array.
struct Meta {
    /// The table page; `None` = the slot is free.
    page: Option<TablePage>,
    /// The guest table this shadow table is derived from, or [`NO_SRC`].
    src: u64,
    /// Paging level of the table: 1 = page table .. 4 = PML4, 5 = PML5.
    level: u8,
    /// It is the top of a cached address space (owns the switcher slot).
    root: bool,
}

const FREE: Meta = Meta {
    page: None,
    src: NO_SRC,
    level: 0,
    root: false,
};

/// One cached address space.
#[derive(Clone, Copy, Debug)]
struct Root {
    /// Guest-physical address of the guest PML4 it shadows.
    gpa: u64,
    /// Metadata slot of its top-level table.
    slot: usize,
    /// When it was last switched to (for LRU eviction).
    used: u64,
}

/// The shadow page tables of one guest.
///
/// It holds its metadata inline (about 64 KiB): keep it in heap memory, not on a kernel stack
/// ([`Shadow::init_in_place`] builds it there).
/// Tables and pins are only given back by [`Shadow::destroy`] (or the calls that drop entries),
/// which need the host: dropping a `Shadow` without `destroy` leaks them.
pub struct Shadow {
    la57: bool,
    switcher_slot: usize,
    /// Guest memory size in bytes: every guest-physical address we use must be below it.
    limit: u64,
    /// 1 << host MAXPHYADDR.
    phys_limit: u64,
    max_tables: usize,
    meta: [Meta; MAX_TABLES],
    /// Where to start looking for a free metadata slot.
    free_hint: usize,
    tables: usize,
    pinned: u64,
    roots: [Option<Root>; MAX_ROOTS],
    current: Option<usize>,
    clock: u64,
    switcher_entry: u64,
}

impl Shadow {
    /// Shadow paging for a new guest. Nothing is allocated until the first [`Shadow::set_cr3`].
    /// The result is big (see the type's comment): in the kernel, use [`Shadow::init_in_place`].
    pub fn new(cfg: Config) -> Self {
        let mut s = core::mem::MaybeUninit::<Shadow>::uninit();
        // SAFETY: `s` is writable and aligned, and `init_in_place` initializes every field.
        unsafe {
            Self::init_in_place(s.as_mut_ptr(), cfg);
            s.assume_init()
        }
    }

    /// Build a `Shadow` directly in memory the caller provides, field by field, so that no
    /// temporary of the whole (about 64 KiB) struct ever lands on a kernel stack.
    ///
    /// # Safety
    /// `this` must be valid for writes and aligned for a `Shadow`. Its old contents are
    /// overwritten without being dropped.
    pub unsafe fn init_in_place(this: *mut Shadow, cfg: Config) {
        let bits = cfg.host_phys_bits.clamp(20, 52);
        let limit = cfg
            .pfn_limit
            .checked_mul(crate::abi::PAGE_SIZE)
            .map_or(1 << 52, |l| l.min(1 << 52));
        // SAFETY: the caller guarantees `this` is valid for writes and aligned; every field is
        // written exactly once through its own raw pointer (the metadata array element by
        // element), and no reference to the uninitialized struct is ever made.
        unsafe {
            (&raw mut (*this).la57).write(cfg.host_la57);
            (&raw mut (*this).switcher_slot).write(cfg.switcher_slot);
            (&raw mut (*this).limit).write(limit);
            (&raw mut (*this).phys_limit).write(1 << bits);
            (&raw mut (*this).max_tables).write(cfg.max_tables.clamp(MIN_TABLES, MAX_TABLES));
            let meta = (&raw mut (*this).meta).cast::<Meta>();
            for i in 0..MAX_TABLES {
                meta.add(i).write(FREE);
            }
            (&raw mut (*this).free_hint).write(0);
            (&raw mut (*this).tables).write(0);
            (&raw mut (*this).pinned).write(0);
            (&raw mut (*this).roots).write([None; MAX_ROOTS]);
            (&raw mut (*this).current).write(None);
            (&raw mut (*this).clock).write(0);
            (&raw mut (*this).switcher_entry).write(0);
        }
    }

    /// Host-physical address of the current root: what CR3 holds while the guest runs.
    pub fn root_pa(&self) -> Option<u64> {
        let root = self.current_root()?;
        Some(self.page(root.slot)?.pa)
    }

    /// Guest-physical address of the guest PML4 currently in use.
    pub fn current_pml4(&self) -> Option<u64> {
        Some(self.current_root()?.gpa)
    }

    /// Present shadow leaves, each holding one pin.
    pub fn pinned_pages(&self) -> u64 {
        self.pinned
    }

    /// Shadow table pages borrowed from the host.
    pub fn table_pages(&self) -> u64 {
        self.tables as u64
    }

    /// Address spaces currently cached.
    pub fn cached_roots(&self) -> usize {
        self.roots.iter().flatten().count()
    }

    /// Set the entry of the switcher slot in the current root (before every entry to the guest;
    /// roots switched to later get it too).
    pub fn set_switcher_entry(&mut self, val: u64) {
        self.switcher_entry = val;
        if let Some(root) = self.current_root() {
            self.set_entry(root.slot, self.switcher_slot, val);
        }
    }

    /// Switch to the address space whose guest PML4 is at `gpa` (`NEW_PGTABLE`, and the boot CR3):
    /// reuse its cached root or build an empty one, then drop its user half, as `mov %cr3` without
    /// PCID drops every non-global translation.
    pub fn set_cr3<H: ShadowHost>(&mut self, host: &mut H, gpa: u64) -> Result<(), Kill> {
        self.check_pml4(gpa)?;
        let r = match self.find_root(gpa) {
            Some(r) => r,
            None => self.new_root(host, gpa)?,
        };
        self.clock = self.clock.wrapping_add(1);
        let Some(root) = self.roots.get_mut(r).and_then(Option::as_mut) else {
            return Err(Kill::NoPageTable);
        };
        root.used = self.clock;
        let slot = root.slot;
        self.current = Some(r);
        self.empty_root(host, slot, true);
        self.set_switcher_entry(self.switcher_entry);
        Ok(())
    }

    /// Handle a page fault the guest took at `va` with CPU error code `err`.
    pub fn page_fault<H: ShadowHost>(
        &mut self,
        host: &mut H,
        va: u64,
        err: u64,
    ) -> Result<Fault, Kill> {
        if err & PF_RSVD != 0 {
            return Err(Kill::ShadowReserved { va });
        }
        if !canonical(va) {
            return Ok(Fault::GeneralProtection);
        }
        let access = Access::from_err(err);
        if self.in_switcher_slot(va) {
            // Guest user code poking at kernel addresses is the guest kernel's problem (it sees an
            // unmapped page); the guest kernel itself must keep out.
            return if access.user {
                Ok(Fault::Reflect {
                    err: access.code(false),
                })
            } else {
                Err(Kill::Switcher { va })
            };
        }
        let root = self.current_root().ok_or(Kill::NoPageTable)?;
        let mut w = match walk::walk(host, self.limit, root.gpa, va)? {
            Outcome::NotPresent => {
                return Ok(Fault::Reflect {
                    err: access.code(false),
                })
            }
            Outcome::Mapped(w) => w,
        };
        if !w.permits(access) {
            return Ok(Fault::Reflect {
                err: access.code(true),
            });
        }
        if w.frame >= self.limit {
            return Err(Kill::FrameBeyondMemory { va, gpa: w.frame });
        }
        w.mark(host, access.write)?;
        // Building the path may find the table budget (or the host) exhausted: then flush
        // everything, like a full TLB, and build again from the (now empty) root.
        for _ in 0..2 {
            if let Some(pt) = self.build_path(host, root.slot, va, &w)? {
                return self.set_leaf(host, pt, va, &w, err);
            }
            self.flush_all(host);
        }
        Err(Kill::OutOfMemory)
    }

    /// Translate `va` through the guest's current tables for a supervisor access (the host reading
    /// a hypercall buffer or writing a trap frame), setting A (and D for a write) as the CPU would.
    /// Does not touch the shadow.
    pub fn translate<H: ShadowHost>(
        &self,
        host: &mut H,
        va: u64,
        write: bool,
    ) -> Result<Translation, Kill> {
        if !canonical(va) {
            return Err(Kill::NonCanonical { va });
        }
        if self.in_switcher_slot(va) {
            return Err(Kill::Switcher { va });
        }
        let root = self.current_root().ok_or(Kill::NoPageTable)?;
        let access = Access {
            write,
            user: false,
            fetch: false,
        };
        let mut w = match walk::walk(host, self.limit, root.gpa, va)? {
            Outcome::NotPresent => {
                return Ok(Translation::Fault {
                    err: access.code(false),
                })
            }
            Outcome::Mapped(w) => w,
        };
        if !w.permits(access) {
            return Ok(Translation::Fault {
                err: access.code(true),
            });
        }
        if w.frame >= self.limit {
            return Err(Kill::FrameBeyondMemory { va, gpa: w.frame });
        }
        w.mark(host, write)?;
        Ok(Translation::Mapped(w.frame | (va & 0xfff)))
    }

    /// `FLUSH_TLB(1)`: drop every translation of every cached address space.
    pub fn flush_all<H: ShadowHost>(&mut self, host: &mut H) {
        for r in 0..MAX_ROOTS {
            if let Some(root) = self.root(r) {
                self.empty_root(host, root.slot, false);
            }
        }
    }

    /// `FLUSH_TLB(0)`: drop the user (lower-half) translations of the current address space.
    pub fn flush_user<H: ShadowHost>(&mut self, host: &mut H) {
        if let Some(root) = self.current_root() {
            self.empty_root(host, root.slot, true);
        }
    }

    /// `FLUSH_ONE`: drop the translation of the page at `va` (of the whole 2 MiB page if the guest
    /// mapped it with one, as `invlpg` would): in every cached address space for a kernel address,
    /// in the current one for a user address.
    pub fn flush_one<H: ShadowHost>(&mut self, host: &mut H, va: u64) {
        if !canonical(va) || self.in_switcher_slot(va) {
            return;
        }
        if va >> 47 != 0 {
            for r in 0..MAX_ROOTS {
                if let Some(root) = self.root(r) {
                    self.flush_va(host, root.slot, va);
                }
            }
        } else if let Some(root) = self.current_root() {
            self.flush_va(host, root.slot, va);
        }
    }

    /// `SET_PTE`/`SET_PMD`/`SET_PUD`/`SET_P4D`: the guest entry at `entry_gpa` changed. Drop every
    /// shadow entry derived from it, in every cached address space, with everything below.
    ///
    /// The level the guest names is deliberately not used: one guest page can serve as a table at
    /// several levels, and Linux updates 2 MiB hugetlb entries with `set_pte`.
    pub fn entry_changed<H: ShadowHost>(
        &mut self,
        host: &mut H,
        entry_gpa: u64,
    ) -> Result<(), Kill> {
        if entry_gpa & 7 != 0 || entry_gpa >= self.limit {
            return Err(Kill::BadEntry { gpa: entry_gpa });
        }
        let table = entry_gpa & !0xfff;
        let i = ((entry_gpa & 0xfff) >> 3) as usize;
        // Dropping an entry can free later slots (its subtree): each slot is checked when reached.
        for slot in 0..MAX_TABLES {
            if self
                .meta
                .get(slot)
                .is_some_and(|m| m.page.is_some() && m.src == table)
            {
                self.drop_entry(host, slot, i);
            }
        }
        Ok(())
    }

    /// `RELEASE_PGTABLE`: the guest freed the PML4 at `gpa`; forget its address space. The current
    /// one is emptied instead (the guest is still running on it).
    pub fn release<H: ShadowHost>(&mut self, host: &mut H, gpa: u64) -> Result<(), Kill> {
        self.check_pml4(gpa)?;
        let Some(r) = self.find_root(gpa) else {
            return Ok(());
        };
        if self.current == Some(r) {
            if let Some(root) = self.root(r) {
                self.empty_root(host, root.slot, false);
            }
        } else {
            self.evict(host, r);
        }
        Ok(())
    }

    /// Give every table and pin back to the host. Afterwards `table_pages()` and `pinned_pages()`
    /// are 0; the guest needs a new `set_cr3` before it can run again.
    pub fn destroy<H: ShadowHost>(&mut self, host: &mut H) {
        for r in 0..MAX_ROOTS {
            self.evict(host, r);
        }
        self.current = None;
    }
}

// ------------------------------------------------------------------------------------------------
// Address spaces.
// ------------------------------------------------------------------------------------------------

impl Shadow {
    fn check_pml4(&self, gpa: u64) -> Result<(), Kill> {
        if gpa & 0xfff != 0 || gpa >= self.limit {
            return Err(Kill::BadRoot { gpa });
        }
        Ok(())
    }

    fn root(&self, r: usize) -> Option<Root> {
        self.roots.get(r).copied().flatten()
    }

    fn current_root(&self) -> Option<Root> {
        self.root(self.current?)
    }

    fn find_root(&self, gpa: u64) -> Option<usize> {
        (0..MAX_ROOTS).find(|&r| self.root(r).is_some_and(|root| root.gpa == gpa))
    }

    /// Cache a new, empty root for the guest PML4 at `gpa`, evicting the least recently used one
    /// if the cache is full.
    fn new_root<H: ShadowHost>(&mut self, host: &mut H, gpa: u64) -> Result<usize, Kill> {
        let r = match (0..MAX_ROOTS).find(|&r| self.root(r).is_none()) {
            Some(r) => r,
            None => {
                let victim = (0..MAX_ROOTS)
                    .filter(|&r| Some(r) != self.current)
                    .min_by_key(|&r| self.root(r).map_or(0, |root| root.used))
                    .unwrap_or(0);
                self.evict(host, victim);
                victim
            }
        };
        let (level, src) = if self.la57 { (5, NO_SRC) } else { (4, gpa) };
        let slot = match self.alloc(host, level, src, true)? {
            Some(slot) => slot,
            None => {
                self.flush_all(host);
                self.alloc(host, level, src, true)?
                    .ok_or(Kill::OutOfMemory)?
            }
        };
        if let Some(entry) = self.roots.get_mut(r) {
            *entry = Some(Root { gpa, slot, used: 0 });
        }
        Ok(r)
    }

    /// Tear down cached root `r` completely.
    fn evict<H: ShadowHost>(&mut self, host: &mut H, r: usize) {
        let Some(root) = self.roots.get_mut(r).and_then(Option::take) else {
            return;
        };
        self.free_tree(host, root.slot);
        if self.current == Some(r) {
            self.current = None;
        }
    }

    /// Drop the guest-owned entries of a root (only the user half if `user_only`).
    fn empty_root<H: ShadowHost>(&mut self, host: &mut H, slot: usize, user_only: bool) {
        for i in 0..ENTRIES {
            if !user_only || self.user_index(i) {
                self.drop_entry(host, slot, i);
            }
        }
    }

    /// Does root entry `i` hold guest user (lower-half) addresses?
    fn user_index(&self, i: usize) -> bool {
        if self.la57 {
            i == 0
        } else {
            i < 256
        }
    }

    /// Top-level index of `va` (canonical): its PML4 slot, or on a 5-level host its PML5 slot,
    /// which is 0 for the lower half and 511 for the (sign-extended) upper half.
    fn top_index(&self, va: u64) -> usize {
        self.index_at(va, self.top_level())
    }

    fn top_level(&self) -> u8 {
        if self.la57 {
            5
        } else {
            4
        }
    }

    /// Index of `va` in a shadow table of paging level `level`.
    fn index_at(&self, va: u64, level: u8) -> usize {
        if level == 5 {
            if va >> 47 == 0 {
                0
            } else {
                511
            }
        } else {
            index(va, u32::from(level))
        }
    }

    fn in_switcher_slot(&self, va: u64) -> bool {
        self.top_index(va) == self.switcher_slot
    }
}

// ------------------------------------------------------------------------------------------------
// Filling and dropping entries.
// ------------------------------------------------------------------------------------------------

impl Shadow {
    /// Make sure the shadow tables for `va` exist down to the page table, each derived from the
    /// table the guest walk `w` went through. Returns the page table's slot, or `None` if we ran
    /// out of table pages on the way.
    fn build_path<H: ShadowHost>(
        &mut self,
        host: &mut H,
        root: usize,
        va: u64,
        w: &Walk,
    ) -> Result<Option<usize>, Kill> {
        let mut slot = root;
        for level in (2..=self.top_level()).rev() {
            let i = self.index_at(va, level);
            if !self.owned(slot, i) {
                return Err(Kill::Switcher { va });
            }
            // The child is a level-(level - 1) table; the guest walk found that level's table at
            // tables[4 - (level - 1)] (the PML4 first).
            let src = w
                .tables
                .get(5usize.saturating_sub(usize::from(level)))
                .copied()
                .unwrap_or(NO_SRC);
            let e = self.entry(slot, i);
            match self.child(e) {
                Some(c) if self.meta.get(c).is_some_and(|m| m.src == src) => slot = c,
                _ => {
                    // Missing, or derived from a table the guest no longer uses here.
                    self.drop_entry(host, slot, i);
                    let Some(c) = self.alloc(host, level - 1, src, false)? else {
                        return Ok(None);
                    };
                    let pa = self.page(c).map_or(0, |p| p.pa);
                    self.set_entry(slot, i, pa | TABLE_FLAGS | ((c as u64) << CHILD_SHIFT));
                    slot = c;
                }
            }
        }
        Ok(Some(slot))
    }

    /// Install the leaf for `va` in page table `pt` from the (permitted, already marked) walk.
    fn set_leaf<H: ShadowHost>(
        &mut self,
        host: &mut H,
        pt: usize,
        va: u64,
        w: &Walk,
        err: u64,
    ) -> Result<Fault, Kill> {
        let pfn = host.pin(w.frame).map_err(|_| Kill::GuestMemory)?;
        if pfn >= self.phys_limit >> 12 {
            host.unpin(pfn);
            return Err(Kill::HostFrame { pa: pfn << 12 });
        }
        // No G (a global entry would survive our CR3 switches), no PWT/PCD/PAT (guest memory is
        // ordinary write-back host memory, and a second, uncached mapping of it is not allowed),
        // protection key 0. Writable only once the guest's entry is dirty: see the module comment.
        let mut want = (pfn << 12) | P | A;
        if w.rw && w.dirty() {
            want |= RW | D;
        }
        if w.us {
            want |= US;
        }
        if w.nx {
            want |= NX;
        }
        let i = index(va, 1);
        let old = self.entry(pt, i);
        if old == want {
            // The shadow already allowed this access, so the CPU faulted for a reason outside the
            // tables: SMEP/SMAP (ring 1 is a supervisor ring, touching a user page) or a protection
            // key. The guest sees the fault its hardware would give. Anything else was spurious
            // (the shadow changed since the fault): just retry.
            host.unpin(pfn);
            let access = Access::from_err(err);
            return Ok(if (!access.user && w.us) || err & PF_PK != 0 {
                Fault::Reflect {
                    err: access.code(true) | (err & PF_PK),
                }
            } else {
                Fault::Fixed
            });
        }
        if old & P != 0 {
            self.unpin_leaf(host, old);
        }
        self.set_entry(pt, i, want);
        self.pinned += 1;
        Ok(Fault::Fixed)
    }

    /// Drop the leaf for `va` under `root` (the whole split page table for a 2 MiB guest page).
    fn flush_va<H: ShadowHost>(&mut self, host: &mut H, root: usize, va: u64) {
        let mut slot = root;
        let mut parent = (root, 0);
        for level in (2..=self.top_level()).rev() {
            let i = self.index_at(va, level);
            let Some(c) = self.child(self.entry(slot, i)) else {
                return;
            };
            parent = (slot, i);
            slot = c;
        }
        if self.meta.get(slot).is_some_and(|m| m.src == NO_SRC) {
            self.drop_entry(host, parent.0, parent.1);
        } else {
            self.drop_entry(host, slot, index(va, 1));
        }
    }

    /// Clear entry `i` of table `slot`, unpinning a leaf or freeing the table below. The switcher
    /// slot of a root (and on a 5-level host, the PML5 slots no guest address uses) is left alone.
    fn drop_entry<H: ShadowHost>(&mut self, host: &mut H, slot: usize, i: usize) {
        if !self.owned(slot, i) {
            return;
        }
        let e = self.entry(slot, i);
        if e & P == 0 {
            return;
        }
        self.set_entry(slot, i, 0);
        if self.meta.get(slot).is_some_and(|m| m.level == 1) {
            self.unpin_leaf(host, e);
        } else if let Some(c) = self.child(e) {
            self.free_tree(host, c);
        }
    }

    /// Drop every entry of table `slot` and give the page back.
    fn free_tree<H: ShadowHost>(&mut self, host: &mut H, slot: usize) {
        for i in 0..ENTRIES {
            self.drop_entry(host, slot, i);
        }
        if let Some(m) = self.meta.get_mut(slot) {
            if let Some(page) = m.page.take() {
                host.free_table(page);
                self.tables = self.tables.saturating_sub(1);
            }
            *m = FREE;
        }
    }

    fn unpin_leaf<H: ShadowHost>(&mut self, host: &mut H, e: u64) {
        host.unpin((e & ADDR) >> 12);
        self.pinned = self.pinned.saturating_sub(1);
    }

    /// May we fill or drop entry `i` of table `slot`? Everything except a root's slots that do not
    /// hold guest addresses: the switcher slot, and on a 5-level host all but 0 and 511.
    fn owned(&self, slot: usize, i: usize) -> bool {
        if !self.meta.get(slot).is_some_and(|m| m.root) {
            return true;
        }
        if self.la57 {
            i == 0 || i == 511
        } else {
            i != self.switcher_slot
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Table pages and their metadata.
// ------------------------------------------------------------------------------------------------

impl Shadow {
    fn page(&self, slot: usize) -> Option<&TablePage> {
        self.meta.get(slot)?.page.as_ref()
    }

    fn entry(&self, slot: usize, i: usize) -> u64 {
        self.page(slot).map_or(0, |p| TableRef::new(p).get(i))
    }

    fn set_entry(&mut self, slot: usize, i: usize, val: u64) {
        if let Some(p) = self.page(slot) {
            TableRef::new(p).set(i, val);
        }
    }

    /// The slot of the table a present non-leaf entry points to. The slot number comes from the
    /// entry's ignored bits and is checked against the address, so a mismatch (which would be a bug
    /// here) reads as "no table" rather than as someone else's table.
    fn child(&self, e: u64) -> Option<usize> {
        if e & P == 0 {
            return None;
        }
        let slot = ((e >> CHILD_SHIFT) & CHILD_MASK) as usize;
        (self.page(slot)?.pa == e & ADDR).then_some(slot)
    }

    /// Borrow a zeroed table page from the host for a level-`level` table derived from `src`.
    /// `None` when the guest's budget or the host's memory is exhausted.
    fn alloc<H: ShadowHost>(
        &mut self,
        host: &mut H,
        level: u8,
        src: u64,
        root: bool,
    ) -> Result<Option<usize>, Kill> {
        if self.tables >= self.max_tables {
            return Ok(None);
        }
        let Some(slot) = (0..MAX_TABLES)
            .map(|k| (self.free_hint + k) % MAX_TABLES)
            .find(|&s| self.meta.get(s).is_some_and(|m| m.page.is_none()))
        else {
            return Ok(None);
        };
        let Some(page) = host.alloc_table() else {
            return Ok(None);
        };
        if page.pa & 0xfff != 0 || page.pa >= self.phys_limit {
            let pa = page.pa;
            host.free_table(page);
            return Err(Kill::HostFrame { pa });
        }
        // The host promised a zeroed page; a stale entry would hand the guest a host page, so we
        // do not take that on trust.
        let t = TableRef::new(&page);
        for i in 0..ENTRIES {
            t.set(i, 0);
        }
        let Some(m) = self.meta.get_mut(slot) else {
            host.free_table(page);
            return Ok(None);
        };
        *m = Meta {
            page: Some(page),
            src,
            level,
            root,
        };
        self.tables += 1;
        self.free_hint = slot + 1;
        Ok(Some(slot))
    }
}
