//! `event_channel_op` (hypercall 32) commands and arguments.

use crate::ids::EvtchnPort;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `EVTCHNOP_bind_interdomain`.
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
/// `EVTCHNOP_bind_virq`.
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
/// `EVTCHNOP_bind_pirq`.
pub const EVTCHNOP_BIND_PIRQ: u32 = 2;
/// `EVTCHNOP_close`.
pub const EVTCHNOP_CLOSE: u32 = 3;
/// `EVTCHNOP_send`.
pub const EVTCHNOP_SEND: u32 = 4;
/// `EVTCHNOP_status`.
pub const EVTCHNOP_STATUS: u32 = 5;
/// `EVTCHNOP_alloc_unbound`.
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
/// `EVTCHNOP_bind_ipi`.
pub const EVTCHNOP_BIND_IPI: u32 = 7;
/// `EVTCHNOP_bind_vcpu`.
pub const EVTCHNOP_BIND_VCPU: u32 = 8;
/// `EVTCHNOP_unmask`.
pub const EVTCHNOP_UNMASK: u32 = 9;
/// `EVTCHNOP_reset`.
pub const EVTCHNOP_RESET: u32 = 10;

/// `struct evtchn_send`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnSend {
    /// Port to notify.
    pub port: EvtchnPort,
}

const_assert_eq!(core::mem::size_of::<EvtchnSend>(), 4);
