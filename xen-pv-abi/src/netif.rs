//! The network device protocol (`io/netif.h`): tx and rx ring entries and constants.
//!
//! A vif has two [`crate::kit::ring`] rings: [`NetifTxProtocol`] (the frontend sends
//! packets: 12-byte slots, 256 per page) and [`NetifRxProtocol`] (the frontend posts
//! buffers the backend fills: 8-byte slots, 256 per page). A packet spans several
//! slots while [`NETTXF_MORE_DATA`] / [`NETRXF_MORE_DATA`] is set; a slot flagged
//! `*_EXTRA_INFO` is followed by [`NetifExtraInfo`] slots.

use crate::kit::ring::RingProtocol;
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `NETTXF_csum_blank`: the protocol checksum field is blank.
pub const NETTXF_CSUM_BLANK: u16 = 1;
/// `NETTXF_data_validated`: the packet's checksum was validated.
pub const NETTXF_DATA_VALIDATED: u16 = 2;
/// `NETTXF_more_data`: the packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 4;
/// `NETTXF_extra_info`: extra-info slots follow.
pub const NETTXF_EXTRA_INFO: u16 = 8;

/// `NETRXF_data_validated`.
pub const NETRXF_DATA_VALIDATED: u16 = 1;
/// `NETRXF_csum_blank`.
pub const NETRXF_CSUM_BLANK: u16 = 2;
/// `NETRXF_more_data`: the packet continues in the next response.
pub const NETRXF_MORE_DATA: u16 = 4;
/// `NETRXF_extra_info`: extra-info slots follow.
pub const NETRXF_EXTRA_INFO: u16 = 8;
/// `NETRXF_gso_prefix`: a GSO prefix descriptor.
pub const NETRXF_GSO_PREFIX: u16 = 16;

/// `NETIF_RSP_DROPPED`.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`.
pub const NETIF_RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`.
pub const NETIF_RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: a response to an extra-info slot, carries nothing.
pub const NETIF_RSP_NULL: i16 = 1;

/// `XEN_NETIF_EXTRA_TYPE_NONE`.
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_EXTRA_TYPE_GSO`.
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_NONE`.
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`.
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// `struct netif_tx_request` (12 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifTxRequest {
    /// Grant of the frame holding the data.
    pub gref: u32,
    /// Offset of the data in the frame.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// In the first slot of a packet the whole packet's size, else this slot's.
    pub size: u16,
}

impl NetifTxRequest {
    /// The slot read as an extra-info entry (it follows a request with
    /// [`NETTXF_EXTRA_INFO`]).
    pub fn extra(&self) -> NetifExtraInfo {
        read_prefix(self.as_bytes())
    }

    /// A slot carrying `e` (the rest zero).
    pub fn from_extra(e: &NetifExtraInfo) -> NetifTxRequest {
        let mut r = NetifTxRequest::default();
        r.as_mut_bytes()[..size_of::<NetifExtraInfo>()].copy_from_slice(e.as_bytes());
        r
    }
}

/// `struct netif_tx_response` (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifTxResponse {
    /// The request's `id`.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// `struct netif_rx_request` (8 bytes): a buffer for the backend to fill.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Padding.
    pub _pad: u16,
    /// Grant of the buffer frame.
    pub gref: u32,
}

/// `struct netif_rx_response` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifRxResponse {
    /// The request's `id`.
    pub id: u16,
    /// Offset of the data in the buffer frame.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Bytes received (> 0) or a `NETIF_RSP_*` error (< 0).
    pub status: i16,
}

impl NetifRxResponse {
    /// The slot read as an extra-info entry (after a response with
    /// [`NETRXF_EXTRA_INFO`]).
    pub fn extra(&self) -> NetifExtraInfo {
        read_prefix(self.as_bytes())
    }
}

/// `struct netif_extra_info` (8 bytes): type, flags and a 6-byte union (GSO,
/// multicast address or hash).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The union: see [`gso`](Self::gso); a multicast MAC address; or hash type,
    /// algorithm and 4 value bytes.
    pub u: [u8; 6],
}

/// The GSO member of [`NetifExtraInfo`]'s union.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifExtraGso {
    /// Maximum payload of a segment.
    pub size: u16,
    /// `XEN_NETIF_GSO_TYPE_*`.
    pub type_: u8,
    /// GSO features (none defined).
    pub features: u16,
}

impl NetifExtraInfo {
    /// The union read as GSO information (`size` u16 @2, `type` u8 @4, `features` u16
    /// @6 of the entry).
    pub fn gso(&self) -> NetifExtraGso {
        NetifExtraGso {
            size: u16::from_le_bytes([self.u[0], self.u[1]]),
            type_: self.u[2],
            features: u16::from_le_bytes([self.u[4], self.u[5]]),
        }
    }

    /// A GSO entry.
    pub fn from_gso(gso: NetifExtraGso, flags: u8) -> NetifExtraInfo {
        let s = gso.size.to_le_bytes();
        let f = gso.features.to_le_bytes();
        NetifExtraInfo {
            type_: XEN_NETIF_EXTRA_TYPE_GSO,
            flags,
            u: [s[0], s[1], gso.type_, 0, f[0], f[1]],
        }
    }
}

fn read_prefix<T: FromBytes>(bytes: &[u8]) -> T {
    match T::read_from_prefix(bytes) {
        Ok((v, _)) => v,
        // Every slot is at least 8 bytes (asserted below).
        Err(_) => T::new_zeroed(),
    }
}

/// The tx ring: [`NetifTxRequest`] / [`NetifTxResponse`] in 12-byte slots.
#[derive(Clone, Copy, Debug)]
pub struct NetifTxProtocol;

impl RingProtocol for NetifTxProtocol {
    type Request = NetifTxRequest;
    type Response = NetifTxResponse;
    const SLOT_SIZE: usize = 12;
}

/// The rx ring: [`NetifRxRequest`] / [`NetifRxResponse`] in 8-byte slots.
#[derive(Clone, Copy, Debug)]
pub struct NetifRxProtocol;

impl RingProtocol for NetifRxProtocol {
    type Request = NetifRxRequest;
    type Response = NetifRxResponse;
    const SLOT_SIZE: usize = 8;
}

const_assert_eq!(size_of::<NetifTxRequest>(), 12);
const_assert_eq!(offset_of!(NetifTxRequest, offset), 4);
const_assert_eq!(offset_of!(NetifTxRequest, flags), 6);
const_assert_eq!(offset_of!(NetifTxRequest, id), 8);
const_assert_eq!(offset_of!(NetifTxRequest, size), 10);
const_assert_eq!(size_of::<NetifTxResponse>(), 4);
const_assert_eq!(offset_of!(NetifTxResponse, status), 2);
const_assert_eq!(size_of::<NetifRxRequest>(), 8);
const_assert_eq!(offset_of!(NetifRxRequest, gref), 4);
const_assert_eq!(size_of::<NetifRxResponse>(), 8);
const_assert_eq!(offset_of!(NetifRxResponse, offset), 2);
const_assert_eq!(offset_of!(NetifRxResponse, flags), 4);
const_assert_eq!(offset_of!(NetifRxResponse, status), 6);
const_assert_eq!(size_of::<NetifExtraInfo>(), 8);
