//! The guest ABI and the `/dev/lguest` protocol: every number here is documented in docs/abi.md and
//! is shared, from this one definition, by the module, the launcher and the guests.

/// Version of the whole ABI (launcher <-> module and guest <-> host). The launcher passes it in
/// `LHREQ_INITIALIZE`; the guest's ELF note carries it too. Bumped on any incompatible change.
pub const VERSION: u64 = 1;

/// Guest pages are always 4 KiB.
pub const PAGE_SIZE: u64 = 4096;
pub const PAGE_SHIFT: u32 = 12;

/// Number of virtual interrupt lines a guest has (the pending bitmap is one `u32`).
pub const NR_IRQS: u64 = 32;

/// Largest guest "physical" memory a launcher may declare, in pages (64 GiB). The original's
/// HIGHMEM64G limit is gone; this bound only keeps the page-frame arithmetic comfortably small.
pub const MAX_GUEST_PAGES: u64 = 1 << 24;

/// Requests written to `/dev/lguest`. Every write is one little-endian `u64` request word followed
/// by exactly [`Request::nr_args`] `u64` arguments; anything else is `-EINVAL`.
pub mod lhreq {
    /// `[abi_version, mem_base, pfn_limit, entry, cr3, boot_params]`: create the guest.
    pub const INITIALIZE: u64 = 0;
    /// `[key]`: find a free receive buffer bound by this guest at `key` (the launcher delivering
    /// input to the guest). Returns its guest-physical address.
    pub const GETDMA: u64 = 1;
    /// `[irq]`: make virtual interrupt `irq` (< 32) pending.
    pub const IRQ: u64 = 2;
    /// `[on]`: 1 = kick the running guest out to the launcher and block until a `BREAK 0`;
    /// 0 = release the blocked writer. The only request another thread may make.
    pub const BREAK: u64 = 3;
}

/// Largest write the module accepts, in bytes: the request word plus the most arguments any request
/// takes. Longer writes are refused before anything is copied.
pub const MAX_WRITE: usize = 8 * 7;
