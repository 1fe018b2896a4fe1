//! Linux error numbers, as positive values. The C shim returns them negated to userspace.

/// A Linux errno value (positive). `Errno::EINVAL.neg()` is what a file operation returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(1);
    pub const ENOENT: Errno = Errno(2);
    pub const EINTR: Errno = Errno(4);
    pub const EIO: Errno = Errno(5);
    pub const EAGAIN: Errno = Errno(11);
    pub const ENOMEM: Errno = Errno(12);
    pub const EFAULT: Errno = Errno(14);
    pub const EBUSY: Errno = Errno(16);
    pub const EINVAL: Errno = Errno(22);
    pub const ENOSPC: Errno = Errno(28);
    pub const ENOSYS: Errno = Errno(38);
    pub const EPROTO: Errno = Errno(71);
    /// The kernel-internal "restart the system call" code returned when a signal interrupts a read.
    pub const ERESTARTSYS: Errno = Errno(512);

    /// The negative value a file operation returns for this error.
    pub const fn neg(self) -> isize {
        -(self.0 as isize)
    }
}
