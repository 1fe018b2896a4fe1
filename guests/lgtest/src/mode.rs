//! What the guest was asked to do: `lgtest=<mode>` on the kernel command line.
//!
//! `suite` (the default), `user` and `privileged` run self-checking test suites, `bench` prints
//! the benchmarks `make bench` tabulates against native ones; the I/O modes ([`Mode::is_io`],
//! `io/` in the kernel) drive the console, block and network devices, or misuse DMA; every other
//! mode performs one hostile action against the host (`adversary.rs` in the kernel) and is
//! expected to get the guest killed, except the stress modes (`stress.rs`), which must survive.
//! I/O modes take `key=value` parameters from the rest of the command line (`args.rs`).

/// The command-line key selecting the mode.
pub const KEY: &[u8] = b"lgtest=";

/// Every mode, in the order `--help`-style listings show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Suite,
    BadHcallNr,
    BadHcallNoncanonical,
    BadHcallOob,
    BadHcallUnaligned,
    TrapBadFlags,
    TrapNoncanonical,
    TrapInSwitcher,
    PtSwitcher,
    PtBeyondMemory,
    IretRing0,
    IretNoncanonical,
    NativeIretRing0,
    Syscall,
    Sysenter,
    Int80,
    IntHostVector,
    IntNmi,
    Cli,
    Sti,
    Hlt,
    Wrmsr,
    MovCr3,
    Lgdt,
    Swapgs,
    AcDf,
    IrqOffLoop,
    DoubleFault,
    StackInSwitcher,
    Crash,
    UnhandledUd,
    User,
    Privileged,
    UserSyscallNoncanonicalRcx,
    UserHypercall,
    StackUser,
    SetStackSwitcher,
    StackUnaligned,
    ShadowThrash,
    AliasPerms,
    PteRace,
    MemoryTop,
    Idle,
    UserUdAtTop,
    Bench,
    ConsoleEcho,
    BlockWritePattern,
    BlockReadChecksum,
    BlockAckLoop,
    BlockEdges,
    NetEcho,
    NetPing,
    NetTcpServer,
    NetTcpClient,
    NetBcast,
    DmaOutsideMemory,
    DmaCrossPage,
    DmaHugeLen,
    DmaZeroLen,
    DmaOverlap,
    DmaBind33,
    DmaIrq32,
    DmaBindTop,
    DmaStorm,
    DmaBindAndDie,
    DmaRebindStorm,
    DmaRxOutsideMemory,
}

impl Mode {
    pub const ALL: [Mode; 67] = [
        Mode::Suite,
        Mode::BadHcallNr,
        Mode::BadHcallNoncanonical,
        Mode::BadHcallOob,
        Mode::BadHcallUnaligned,
        Mode::TrapBadFlags,
        Mode::TrapNoncanonical,
        Mode::TrapInSwitcher,
        Mode::PtSwitcher,
        Mode::PtBeyondMemory,
        Mode::IretRing0,
        Mode::IretNoncanonical,
        Mode::NativeIretRing0,
        Mode::Syscall,
        Mode::Sysenter,
        Mode::Int80,
        Mode::IntHostVector,
        Mode::IntNmi,
        Mode::Cli,
        Mode::Sti,
        Mode::Hlt,
        Mode::Wrmsr,
        Mode::MovCr3,
        Mode::Lgdt,
        Mode::Swapgs,
        Mode::AcDf,
        Mode::IrqOffLoop,
        Mode::DoubleFault,
        Mode::StackInSwitcher,
        Mode::Crash,
        Mode::UnhandledUd,
        Mode::User,
        Mode::Privileged,
        Mode::UserSyscallNoncanonicalRcx,
        Mode::UserHypercall,
        Mode::StackUser,
        Mode::SetStackSwitcher,
        Mode::StackUnaligned,
        Mode::ShadowThrash,
        Mode::AliasPerms,
        Mode::PteRace,
        Mode::MemoryTop,
        Mode::Idle,
        Mode::UserUdAtTop,
        Mode::Bench,
        Mode::ConsoleEcho,
        Mode::BlockWritePattern,
        Mode::BlockReadChecksum,
        Mode::BlockAckLoop,
        Mode::BlockEdges,
        Mode::NetEcho,
        Mode::NetPing,
        Mode::NetTcpServer,
        Mode::NetTcpClient,
        Mode::NetBcast,
        Mode::DmaOutsideMemory,
        Mode::DmaCrossPage,
        Mode::DmaHugeLen,
        Mode::DmaZeroLen,
        Mode::DmaOverlap,
        Mode::DmaBind33,
        Mode::DmaIrq32,
        Mode::DmaBindTop,
        Mode::DmaStorm,
        Mode::DmaBindAndDie,
        Mode::DmaRebindStorm,
        Mode::DmaRxOutsideMemory,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Mode::Suite => "suite",
            Mode::BadHcallNr => "bad-hcall-nr",
            Mode::BadHcallNoncanonical => "bad-hcall-noncanonical",
            Mode::BadHcallOob => "bad-hcall-oob",
            Mode::BadHcallUnaligned => "bad-hcall-unaligned",
            Mode::TrapBadFlags => "trap-bad-flags",
            Mode::TrapNoncanonical => "trap-noncanonical",
            Mode::TrapInSwitcher => "trap-in-switcher",
            Mode::PtSwitcher => "pt-switcher",
            Mode::PtBeyondMemory => "pt-beyond-memory",
            Mode::IretRing0 => "iret-ring0",
            Mode::IretNoncanonical => "iret-noncanonical",
            Mode::NativeIretRing0 => "native-iret-ring0",
            Mode::Syscall => "syscall",
            Mode::Sysenter => "sysenter",
            Mode::Int80 => "int80",
            Mode::IntHostVector => "int-host-vector",
            Mode::IntNmi => "int-nmi",
            Mode::Cli => "cli",
            Mode::Sti => "sti",
            Mode::Hlt => "hlt",
            Mode::Wrmsr => "wrmsr",
            Mode::MovCr3 => "mov-cr3",
            Mode::Lgdt => "lgdt",
            Mode::Swapgs => "swapgs",
            Mode::AcDf => "ac-df",
            Mode::IrqOffLoop => "irq-off-loop",
            Mode::DoubleFault => "double-fault",
            Mode::StackInSwitcher => "stack-in-switcher",
            Mode::Crash => "crash",
            Mode::UnhandledUd => "unhandled-ud",
            Mode::User => "user",
            Mode::Privileged => "privileged",
            Mode::UserSyscallNoncanonicalRcx => "user-syscall-noncanonical-rcx",
            Mode::UserHypercall => "user-hypercall",
            Mode::StackUser => "stack-user",
            Mode::SetStackSwitcher => "set-stack-switcher",
            Mode::StackUnaligned => "stack-unaligned",
            Mode::ShadowThrash => "shadow-thrash",
            Mode::AliasPerms => "alias-perms",
            Mode::PteRace => "pte-race",
            Mode::MemoryTop => "memory-top",
            Mode::Idle => "idle",
            Mode::UserUdAtTop => "user-ud-at-top",
            Mode::Bench => "bench",
            Mode::ConsoleEcho => "console-echo",
            Mode::BlockWritePattern => "block-write-pattern",
            Mode::BlockReadChecksum => "block-read-checksum",
            Mode::BlockAckLoop => "block-ack-loop",
            Mode::BlockEdges => "block-edges",
            Mode::NetEcho => "net-echo",
            Mode::NetPing => "net-ping",
            Mode::NetTcpServer => "net-tcp-server",
            Mode::NetTcpClient => "net-tcp-client",
            Mode::NetBcast => "net-bcast",
            Mode::DmaOutsideMemory => "dma-outside-memory",
            Mode::DmaCrossPage => "dma-cross-page",
            Mode::DmaHugeLen => "dma-huge-len",
            Mode::DmaZeroLen => "dma-zero-len",
            Mode::DmaOverlap => "dma-overlap",
            Mode::DmaBind33 => "dma-bind-33",
            Mode::DmaIrq32 => "dma-irq-32",
            Mode::DmaBindTop => "dma-bind-top",
            Mode::DmaStorm => "dma-storm",
            Mode::DmaBindAndDie => "dma-bind-and-die",
            Mode::DmaRebindStorm => "dma-rebind-storm",
            Mode::DmaRxOutsideMemory => "dma-rx-outside-memory",
        }
    }

    /// The I/O modes (`io/` in the kernel): they drive the devices of docs/abi.md §3.
    pub const fn is_io(self) -> bool {
        matches!(
            self,
            Mode::ConsoleEcho
                | Mode::BlockWritePattern
                | Mode::BlockReadChecksum
                | Mode::BlockAckLoop
                | Mode::BlockEdges
                | Mode::NetEcho
                | Mode::NetPing
                | Mode::NetTcpServer
                | Mode::NetTcpClient
                | Mode::NetBcast
                | Mode::DmaOutsideMemory
                | Mode::DmaCrossPage
                | Mode::DmaHugeLen
                | Mode::DmaZeroLen
                | Mode::DmaOverlap
                | Mode::DmaBind33
                | Mode::DmaIrq32
                | Mode::DmaBindTop
                | Mode::DmaStorm
                | Mode::DmaBindAndDie
                | Mode::DmaRebindStorm
                | Mode::DmaRxOutsideMemory
        )
    }

    pub fn from_name(name: &[u8]) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name().as_bytes() == name)
    }
}

/// The value of the last `lgtest=` word of a command line (like Linux, the last one wins), or
/// `suite` if there is none. The command line ends at the first NUL, if any.
pub fn requested(cmdline: &[u8]) -> &[u8] {
    let end = cmdline
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmdline.len());
    cmdline
        .get(..end)
        .unwrap_or(&[])
        .split(|b| b.is_ascii_whitespace())
        .filter_map(|word| word.strip_prefix(KEY))
        .next_back()
        .unwrap_or(Mode::Suite.name().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for (i, m) in Mode::ALL.iter().enumerate() {
            assert_eq!(Mode::from_name(m.name().as_bytes()), Some(*m));
            for other in &Mode::ALL[i + 1..] {
                assert_ne!(m.name(), other.name());
            }
        }
        assert_eq!(Mode::from_name(b"nope"), None);
        assert_eq!(Mode::from_name(b""), None);
    }

    #[test]
    fn picks_the_last_lgtest_word() {
        assert_eq!(requested(b""), b"suite");
        assert_eq!(requested(b"console=hvc0 quiet"), b"suite");
        assert_eq!(requested(b"lgtest=crash"), b"crash");
        assert_eq!(requested(b"a lgtest=cli\tb lgtest=sti\n"), b"sti");
        assert_eq!(requested(b"lgtest=hlt\0lgtest=cli"), b"hlt");
        assert_eq!(requested(b"xlgtest=cli"), b"suite");
        assert_eq!(requested(b"lgtest="), b"");
    }
}
