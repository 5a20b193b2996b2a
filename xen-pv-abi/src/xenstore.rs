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

/// `XS_CONTROL` (formerly `XS_DEBUG`).
pub const XS_CONTROL: u32 = 0;
/// `XS_DIRECTORY`: `path\0` → `child\0`….
pub const XS_DIRECTORY: u32 = 1;
/// `XS_READ`: `path\0` → the value (no NUL).
pub const XS_READ: u32 = 2;
/// `XS_GET_PERMS`: `path\0` → `perm\0`….
pub const XS_GET_PERMS: u32 = 3;
/// `XS_WATCH`: `path\0token\0` → `OK\0`.
pub const XS_WATCH: u32 = 4;
/// `XS_UNWATCH`: `path\0token\0` → `OK\0`.
pub const XS_UNWATCH: u32 = 5;
/// `XS_TRANSACTION_START`: `\0` → the transaction id in decimal, `\0`-terminated.
pub const XS_TRANSACTION_START: u32 = 6;
/// `XS_TRANSACTION_END`: `T\0` (commit) or `F\0` (abort), in the transaction.
pub const XS_TRANSACTION_END: u32 = 7;
/// `XS_INTRODUCE` (toolstack).
pub const XS_INTRODUCE: u32 = 8;
/// `XS_RELEASE` (toolstack).
pub const XS_RELEASE: u32 = 9;
/// `XS_GET_DOMAIN_PATH`: `domid\0` → `/local/domain/<domid>\0`.
pub const XS_GET_DOMAIN_PATH: u32 = 10;
/// `XS_WRITE`: `path\0value` → `OK\0`.
pub const XS_WRITE: u32 = 11;
/// `XS_MKDIR`: `path\0` → `OK\0`.
pub const XS_MKDIR: u32 = 12;
/// `XS_RM`: `path\0` → `OK\0`.
pub const XS_RM: u32 = 13;
/// `XS_SET_PERMS`: `path\0perm\0`… → `OK\0`.
pub const XS_SET_PERMS: u32 = 14;
/// `XS_WATCH_EVENT`: sent by the server on its own (`req_id` and `tx_id` 0), payload
/// `path\0token\0`.
pub const XS_WATCH_EVENT: u32 = 15;
/// `XS_ERROR`: the reply to a failed request, payload an errno name like `ENOENT\0`.
pub const XS_ERROR: u32 = 16;
/// `XS_IS_DOMAIN_INTRODUCED` (toolstack).
pub const XS_IS_DOMAIN_INTRODUCED: u32 = 17;
/// `XS_RESUME` (toolstack).
pub const XS_RESUME: u32 = 18;
/// `XS_SET_TARGET` (toolstack).
pub const XS_SET_TARGET: u32 = 19;
/// `XS_RESET_WATCHES`: drops every watch of the connection.
pub const XS_RESET_WATCHES: u32 = 21;
/// `XS_DIRECTORY_PART`: a directory listing in parts.
pub const XS_DIRECTORY_PART: u32 = 22;
/// `XS_GET_FEATURE`.
pub const XS_GET_FEATURE: u32 = 23;
/// `XS_SET_FEATURE`.
pub const XS_SET_FEATURE: u32 = 24;
/// `XS_GET_QUOTA`.
pub const XS_GET_QUOTA: u32 = 25;
/// `XS_SET_QUOTA`.
pub const XS_SET_QUOTA: u32 = 26;
/// `XS_INVALID`: never a valid message type.
pub const XS_INVALID: u32 = 0xffff;

/// The state of a split-driver end, stored in decimal under `<device path>/state`
/// (`enum xenbus_state`, `io/xenbus.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XenbusState {
    /// `XenbusStateUnknown`.
    Unknown = 0,
    /// `XenbusStateInitialising`.
    Initialising = 1,
    /// `XenbusStateInitWait`: the backend waits for the frontend's details.
    InitWait = 2,
    /// `XenbusStateInitialised`: the frontend published its details.
    Initialised = 3,
    /// `XenbusStateConnected`.
    Connected = 4,
    /// `XenbusStateClosing`.
    Closing = 5,
    /// `XenbusStateClosed`.
    Closed = 6,
    /// `XenbusStateReconfiguring`.
    Reconfiguring = 7,
    /// `XenbusStateReconfigured`.
    Reconfigured = 8,
}

impl XenbusState {
    /// The state numbered `v`, if there is one.
    pub const fn from_u32(v: u32) -> Option<XenbusState> {
        Some(match v {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            _ => return None,
        })
    }

    /// Parses a `state` node's value: decimal digits, optionally followed by a NUL
    /// (some writers include it). `None` for anything else or an unknown number.
    pub fn parse(value: &[u8]) -> Option<XenbusState> {
        let digits = match value.split_last() {
            Some((0, rest)) => rest,
            _ => value,
        };
        if digits.is_empty() || digits.len() > 3 {
            return None;
        }
        let mut v = 0u32;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(d - b'0');
        }
        XenbusState::from_u32(v)
    }

    /// The value to write to a `state` node (`"4"` for `Connected`).
    pub const fn as_str(self) -> &'static str {
        match self {
            XenbusState::Unknown => "0",
            XenbusState::Initialising => "1",
            XenbusState::InitWait => "2",
            XenbusState::Initialised => "3",
            XenbusState::Connected => "4",
            XenbusState::Closing => "5",
            XenbusState::Closed => "6",
            XenbusState::Reconfiguring => "7",
            XenbusState::Reconfigured => "8",
        }
    }
}

/// Byte offset of `req[]` in [`XenstoreDomainInterface`].
pub const XS_REQ_OFFSET: usize = offset_of!(XenstoreDomainInterface, req);
/// Byte offset of `rsp[]` in [`XenstoreDomainInterface`].
pub const XS_RSP_OFFSET: usize = offset_of!(XenstoreDomainInterface, rsp);
/// Byte offset of `req_cons`.
pub const XS_REQ_CONS_OFFSET: usize = offset_of!(XenstoreDomainInterface, req_cons);
/// Byte offset of `req_prod`.
pub const XS_REQ_PROD_OFFSET: usize = offset_of!(XenstoreDomainInterface, req_prod);
/// Byte offset of `rsp_cons`.
pub const XS_RSP_CONS_OFFSET: usize = offset_of!(XenstoreDomainInterface, rsp_cons);
/// Byte offset of `rsp_prod`.
pub const XS_RSP_PROD_OFFSET: usize = offset_of!(XenstoreDomainInterface, rsp_prod);

/// Ring slot of a free-running `req[]` or `rsp[]` index.
pub const fn xs_slot(idx: u32) -> usize {
    idx as usize & (XENSTORE_RING_SIZE - 1)
}

const_assert_eq!(core::mem::size_of::<XenstoreDomainInterface>(), 2080);
const_assert_eq!(offset_of!(XenstoreDomainInterface, req_cons), 2048);
const_assert_eq!(offset_of!(XenstoreDomainInterface, rsp_prod), 2060);
const_assert_eq!(offset_of!(XenstoreDomainInterface, evtchn_port), 2076);
const_assert_eq!(core::mem::size_of::<XsdSockmsg>(), 16);
const_assert_eq!(XS_RSP_OFFSET, 1024);
const_assert_eq!(XS_RSP_CONS_OFFSET, 2056);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xenbus_states_round_trip_through_their_strings() {
        for v in 0..=8 {
            let s = XenbusState::from_u32(v).unwrap();
            assert_eq!(s as u32, v);
            assert_eq!(XenbusState::parse(s.as_str().as_bytes()), Some(s));
        }
        assert_eq!(XenbusState::parse(b"4\0"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::from_u32(9), None);
        for bad in [&b""[..], b"x", b"9", b"0004", b"-1", b"4 "] {
            assert_eq!(XenbusState::parse(bad), None, "{bad:?}");
        }
    }
}
