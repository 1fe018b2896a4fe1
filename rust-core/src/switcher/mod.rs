//! The switcher: the few pages that exist at the same virtual address in the host and in every
//! guest, through which every entry to and exit from guest mode passes.
//!
//! The module maps them once, at load, with a single `vmap()` (x86_64-hazards.md §1): vmalloc
//! space is shared by every host address space, so the host reaches them from any launcher, and the
//! shadow page tables map the same virtual addresses for the guest.

pub mod layout;
pub mod map;
pub mod pages;
pub mod tables;
