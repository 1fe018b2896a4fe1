//! The user-mode ABI of lgtest's small process model (`lgtest=user`): system call numbers (Linux's
//! where Linux has the call), error returns, exit statuses and the user address-space layout.
//! Shared by the kernel (`src/user/`) and the user programs' assembly (`src/user/programs.rs`).
//!
//! Calls follow Linux's convention: number in RAX, arguments in RDI, RSI, RDX, result in RAX;
//! `syscall` clobbers RCX and R11; errors are returned as `-errno`.

use lg_core::abi::PAGE_SIZE;

/// System call numbers.
pub mod sys {
    /// `write(buf, len)` to the console: returns `len`, or `-EFAULT`.
    pub const WRITE: u64 = 1;
    /// `mmap(len)`: anonymous, private, read-write memory, mapped lazily; returns its address.
    pub const MMAP: u64 = 9;
    /// `munmap(addr, len)`: exactly a region `mmap` returned.
    pub const MUNMAP: u64 = 11;
    /// `sched_yield()`: always 0.
    pub const YIELD: u64 = 24;
    pub const GETPID: u64 = 39;
    /// `fork()`: the child's pid in the parent, 0 in the child.
    pub const FORK: u64 = 57;
    /// `exit(code)`: never returns.
    pub const EXIT: u64 = 60;
    /// `waitpid(pid)`: blocks until child `pid` ends; returns its status (see [`super::status`]).
    pub const WAITPID: u64 = 61;
    /// lgtest only: `report(value)` appends `(pid, value)` to the kernel's log, which the tests
    /// read after the processes are gone. Returns 0.
    pub const REPORT: u64 = 0x1000;
}

/// Error numbers (returned negated).
pub mod errno {
    pub const ECHILD: u64 = 10;
    pub const EAGAIN: u64 = 11;
    pub const ENOMEM: u64 = 12;
    pub const EFAULT: u64 = 14;
    pub const EINVAL: u64 = 22;
    pub const ENOSYS: u64 = 38;
}

/// The `-errno` a system call returns.
pub const fn err(errno: u64) -> u64 {
    errno.wrapping_neg()
}

/// Exit statuses as `waitpid` returns them.
pub mod status {
    /// A process that called `exit(code)`: the low 8 bits of the code.
    pub const fn exited(code: u64) -> u64 {
        code & 0xff
    }
    /// A process the kernel killed for an exception it could not handle.
    pub const fn killed(vector: u64) -> u64 {
        KILLED | (vector & 0xff)
    }
    pub const KILLED: u64 = 0x100;
}

/// Where the user programs' code is mapped (read-only, executable) in every process. `link.ld`
/// links the `.user` section at this address.
pub const CODE_BASE: u64 = 0x40_0000;
/// Private, demand-paged read-write memory every process starts with.
pub const DATA_BASE: u64 = 0x60_0000;
pub const DATA_SIZE: u64 = 16 * PAGE_SIZE;
/// The user stack, demand-paged, growing down from `STACK_TOP`.
pub const STACK_TOP: u64 = 0x7fff_0000_0000;
pub const STACK_SIZE: u64 = 16 * PAGE_SIZE;
/// `mmap` hands out addresses upwards from here, with an unmapped guard page between regions.
pub const MMAP_BASE: u64 = 0x10_0000_0000;
pub const MMAP_END: u64 = 0x7000_0000_0000;
/// The last page of the lower half (its last byte is at `0x7fff_ffff_ffff`).
pub const LAST_USER_PAGE: u64 = 0x7fff_ffff_f000;
/// The lower half ends here: user addresses are below.
pub const USER_END: u64 = 0x8000_0000_0000;

// The regions do not overlap, and the last user page stays free (for the non-canonical RCX test).
const _: () = assert!(CODE_BASE < DATA_BASE && DATA_BASE + DATA_SIZE <= MMAP_BASE);
const _: () = assert!(MMAP_END <= STACK_TOP - STACK_SIZE && STACK_TOP <= LAST_USER_PAGE);

/// Each process's user GS base: a slot inside its data area, different for each pid, so a
/// process reading `%gs:0` finds what it stored at its own slot.
pub const fn user_gs_base(pid: u64) -> u64 {
    DATA_BASE + DATA_SIZE / 2 + (pid % 1024) * 16
}

/// `len` rounded up to whole pages, or `None` if that overflows.
pub const fn page_round_up(len: u64) -> Option<u64> {
    match len.checked_add(PAGE_SIZE - 1) {
        Some(l) => Some(l & !(PAGE_SIZE - 1)),
        None => None,
    }
}

/// Is `[va, va + len)` inside the user half?
pub const fn is_user_range(va: u64, len: u64) -> bool {
    match va.checked_add(len) {
        Some(end) => end <= USER_END,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_page_aligned() {
        for a in [
            CODE_BASE, DATA_BASE, DATA_SIZE, STACK_TOP, STACK_SIZE, MMAP_BASE, MMAP_END,
        ] {
            assert_eq!(a % PAGE_SIZE, 0, "{a:#x}");
        }
        assert_eq!(LAST_USER_PAGE + PAGE_SIZE, USER_END);
    }

    #[test]
    fn gs_bases_are_distinct_inside_data() {
        let a = user_gs_base(1);
        let b = user_gs_base(2);
        assert_ne!(a, b);
        for pid in [0, 1, 1023, 1024, 5000] {
            let g = user_gs_base(pid);
            assert!(g >= DATA_BASE && g + 16 <= DATA_BASE + DATA_SIZE);
        }
    }

    #[test]
    fn rounding_and_ranges() {
        assert_eq!(page_round_up(0), Some(0));
        assert_eq!(page_round_up(1), Some(PAGE_SIZE));
        assert_eq!(page_round_up(PAGE_SIZE), Some(PAGE_SIZE));
        assert_eq!(page_round_up(u64::MAX), None);
        assert!(is_user_range(0, USER_END));
        assert!(!is_user_range(USER_END - 8, 16));
        assert!(!is_user_range(u64::MAX, 2));
        assert_eq!(err(errno::EFAULT), (-14i64) as u64);
        assert_eq!(status::killed(14), 0x10e);
        assert_eq!(status::exited(0x1ff), 0xff);
    }
}
