//! `sched_op` (hypercall 29) commands and arguments.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The `SCHEDOP_*` commands, generated from `hypercall-gen/hypercalls.toml`.
pub use crate::generated::sched_op::*;

/// Why a domain shut down (`SHUTDOWN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    /// Clean power off.
    Poweroff = 0,
    /// Reboot request.
    Reboot = 1,
    /// Suspend (save) request.
    Suspend = 2,
    /// The guest crashed itself.
    Crash = 3,
    /// Watchdog fired.
    Watchdog = 4,
    /// Soft reset.
    SoftReset = 5,
}

impl ShutdownReason {
    /// Decodes a `SHUTDOWN_*` value.
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Poweroff,
            1 => Self::Reboot,
            2 => Self::Suspend,
            3 => Self::Crash,
            4 => Self::Watchdog,
            5 => Self::SoftReset,
            _ => return None,
        })
    }
    /// Lower-case name, as in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Suspend => "suspend",
            Self::Crash => "crash",
            Self::Watchdog => "watchdog",
            Self::SoftReset => "soft_reset",
        }
    }
}

/// `struct sched_shutdown`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SchedShutdown {
    /// A `SHUTDOWN_*` value.
    pub reason: u32,
}

const_assert_eq!(core::mem::size_of::<SchedShutdown>(), 4);

/// Most ports one `SCHEDOP_poll` may wait on.
pub const SCHED_POLL_MAX_PORTS: usize = 128;

/// `struct sched_poll` (`SCHEDOP_poll`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SchedPoll {
    /// Guest address of an array of `evtchn_port_t`.
    pub ports: u64,
    /// Entries in `ports` (≤ 128).
    pub nr_ports: u32,
    /// Padding.
    pub pad: u32,
    /// Absolute system time (ns) to give up at; 0 = no timeout.
    pub timeout: u64,
}

/// `struct sched_remote_shutdown` (`SCHEDOP_remote_shutdown`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SchedRemoteShutdown {
    /// Domain to shut down.
    pub domain_id: crate::ids::DomId,
    /// Padding.
    pub pad: u16,
    /// A `SHUTDOWN_*` value.
    pub reason: u32,
}

const_assert_eq!(core::mem::size_of::<SchedPoll>(), 24);
const_assert_eq!(core::mem::offset_of!(SchedPoll, nr_ports), 8);
const_assert_eq!(core::mem::offset_of!(SchedPoll, timeout), 16);
const_assert_eq!(core::mem::size_of::<SchedRemoteShutdown>(), 8);
const_assert_eq!(core::mem::offset_of!(SchedRemoteShutdown, reason), 4);
