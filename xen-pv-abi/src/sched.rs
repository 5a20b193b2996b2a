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

#[cfg(target_arch = "x86_64")]
pub use self::calls::*;

#[cfg(target_arch = "x86_64")]
mod calls {
    use super::{
        SCHED_POLL_MAX_PORTS, SCHEDOP_BLOCK, SCHEDOP_POLL, SCHEDOP_REMOTE_SHUTDOWN,
        SCHEDOP_SHUTDOWN_CODE, SchedPoll, SchedRemoteShutdown, SchedShutdown, ShutdownReason,
    };
    use crate::errno::Errno;
    use crate::generated::call_on;
    use crate::ids::{DomId, EvtchnPort};
    use crate::transport::{Native, Transport};

    /// `SCHEDOP_block`: enables event delivery (clears `evtchn_upcall_mask`) and sleeps
    /// until an event is pending for this vCPU; returns at once if one already is. The
    /// event itself arrives as an upcall. Typical idle loop: [`crate::time::set_timer`],
    /// then `block`.
    pub fn block() -> Result<(), Errno> {
        block_on(&Native)
    }

    /// [`block`] through `t`.
    pub fn block_on<T: Transport + ?Sized>(t: &T) -> Result<(), Errno> {
        // SAFETY: SCHEDOP_block takes no argument buffer.
        Errno::check(unsafe { call_on::sched_op(t, SCHEDOP_BLOCK, core::ptr::null()) }).map(drop)
    }

    /// `SCHEDOP_poll`: sleeps until one of `ports` is pending or system time reaches
    /// `timeout_ns` (0 = no timeout), without enabling event delivery. Returns at once if
    /// a port is already pending. `EINVAL` for more than 128 ports or an invalid port.
    ///
    /// ```no_run
    /// use xen_pv_abi::EvtchnPort;
    /// // Wait for the console port, at most until system time 5 s.
    /// xen_pv_abi::sched::poll(&[EvtchnPort(2)], 5_000_000_000).unwrap();
    /// ```
    pub fn poll(ports: &[EvtchnPort], timeout_ns: u64) -> Result<(), Errno> {
        poll_on(&Native, ports, timeout_ns)
    }

    /// [`poll`] through `t`.
    pub fn poll_on<T: Transport + ?Sized>(
        t: &T,
        ports: &[EvtchnPort],
        timeout_ns: u64,
    ) -> Result<(), Errno> {
        if ports.len() > SCHED_POLL_MAX_PORTS {
            return Err(Errno::EINVAL);
        }
        let arg = SchedPoll {
            ports: ports.as_ptr() as u64,
            nr_ports: ports.len() as u32,
            pad: 0,
            timeout: timeout_ns,
        };
        // SAFETY: the hypervisor reads the 24-byte argument and `nr_ports` ports from
        // `ports` (EvtchnPort is a transparent u32), both alive across the call.
        let ret = unsafe { call_on::sched_op(t, SCHEDOP_POLL, core::ptr::from_ref(&arg).cast()) };
        Errno::check(ret).map(drop)
    }

    /// `SCHEDOP_yield`: lets other vCPUs run.
    pub fn yield_now() -> Result<(), Errno> {
        yield_now_on(&Native)
    }

    /// [`yield_now`] through `t`.
    pub fn yield_now_on<T: Transport + ?Sized>(t: &T) -> Result<(), Errno> {
        crate::hypercall::sched_yield_on(t)
    }

    /// `SCHEDOP_shutdown`: see [`crate::hypercall::sched_shutdown`].
    pub fn shutdown(reason: ShutdownReason) -> Result<(), Errno> {
        shutdown_on(&Native, reason)
    }

    /// [`shutdown`] through `t`.
    pub fn shutdown_on<T: Transport + ?Sized>(t: &T, reason: ShutdownReason) -> Result<(), Errno> {
        crate::hypercall::sched_shutdown_on(t, reason)
    }

    /// Powers the domain off; if the hypervisor refuses, crashes it; never returns.
    pub fn poweroff() -> ! {
        let _ = shutdown(ShutdownReason::Poweroff);
        crash()
    }

    /// Reports a crash (`SHUTDOWN_crash`); never returns (spins if the hypervisor
    /// refuses).
    pub fn crash() -> ! {
        loop {
            let _ = shutdown(ShutdownReason::Crash);
            core::hint::spin_loop();
        }
    }

    /// `SCHEDOP_shutdown_code`: records the reason a later shutdown will report, without
    /// shutting down.
    pub fn shutdown_code(reason: ShutdownReason) -> Result<(), Errno> {
        shutdown_code_on(&Native, reason)
    }

    /// [`shutdown_code`] through `t`.
    pub fn shutdown_code_on<T: Transport + ?Sized>(
        t: &T,
        reason: ShutdownReason,
    ) -> Result<(), Errno> {
        let arg = SchedShutdown {
            reason: reason as u32,
        };
        // SAFETY: the hypervisor reads the 4-byte argument.
        let ret = unsafe {
            call_on::sched_op(t, SCHEDOP_SHUTDOWN_CODE, core::ptr::from_ref(&arg).cast())
        };
        Errno::check(ret).map(drop)
    }

    /// `SCHEDOP_remote_shutdown`: shuts down another domain (privileged).
    pub fn remote_shutdown(domain: DomId, reason: ShutdownReason) -> Result<(), Errno> {
        remote_shutdown_on(&Native, domain, reason)
    }

    /// [`remote_shutdown`] through `t` (e.g. `Privcmd` in a dom0 process).
    pub fn remote_shutdown_on<T: Transport + ?Sized>(
        t: &T,
        domain: DomId,
        reason: ShutdownReason,
    ) -> Result<(), Errno> {
        let arg = SchedRemoteShutdown {
            domain_id: domain,
            pad: 0,
            reason: reason as u32,
        };
        // SAFETY: the hypervisor reads the 8-byte argument.
        let ret = unsafe {
            call_on::sched_op(t, SCHEDOP_REMOTE_SHUTDOWN, core::ptr::from_ref(&arg).cast())
        };
        Errno::check(ret).map(drop)
    }
}
