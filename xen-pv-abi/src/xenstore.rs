//! The xenstore ring (`io/xs_wire.h`) and message header.

use core::mem::offset_of;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of each of `req[]` and `rsp[]`.
pub const XENSTORE_RING_SIZE: usize = 1024;
/// Largest payload of one message.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;

/// `struct xenstore_domain_interface` (2080 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XenstoreDomainInterface {
    /// Requests (guest → xenstored).
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and watch events (xenstored → guest).
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// Request consumer index.
    pub req_cons: u32,
    /// Request producer index.
    pub req_prod: u32,
    /// Reply consumer index.
    pub rsp_cons: u32,
    /// Reply producer index.
    pub rsp_prod: u32,
    /// Features the server offers.
    pub server_features: u32,
    /// Connection state.
    pub connection: u32,
    /// Error state.
    pub error: u32,
    /// Event channel (only filled for dom0less domains).
    pub evtchn_port: u32,
}

/// `struct xsd_sockmsg` (16 bytes), followed by `len` bytes of payload.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XsdSockmsg {
    /// `XS_*` message type.
    pub type_: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, echoed in the reply.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

/// `XS_DIRECTORY`.
pub const XS_DIRECTORY: u32 = 1;
/// `XS_READ`.
pub const XS_READ: u32 = 2;
/// `XS_WRITE`.
pub const XS_WRITE: u32 = 11;
/// `XS_ERROR`.
pub const XS_ERROR: u32 = 16;

const_assert_eq!(core::mem::size_of::<XenstoreDomainInterface>(), 2080);
const_assert_eq!(offset_of!(XenstoreDomainInterface, req_cons), 2048);
const_assert_eq!(offset_of!(XenstoreDomainInterface, rsp_prod), 2060);
const_assert_eq!(offset_of!(XenstoreDomainInterface, evtchn_port), 2076);
const_assert_eq!(core::mem::size_of::<XsdSockmsg>(), 16);
