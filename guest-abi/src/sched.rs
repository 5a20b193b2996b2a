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
