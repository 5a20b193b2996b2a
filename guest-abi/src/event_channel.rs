//! `event_channel_op` (hypercall 32) commands and arguments.

use crate::ids::EvtchnPort;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The `EVTCHNOP_*` commands, generated from `hypercall-gen/hypercalls.toml`.
pub use crate::generated::event_channel_op::*;

/// `struct evtchn_send`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnSend {
    /// Port to notify.
    pub port: EvtchnPort,
}

const_assert_eq!(core::mem::size_of::<EvtchnSend>(), 4);
