//! The block device protocol (`io/blkif.h`): ring entries and constants.
//!
//! Requests and responses travel on a [`crate::kit::ring`] ring of [`BlkifProtocol`]
//! (112-byte slots, 32 per 4 KiB page). Data moves through granted frames: each
//! segment names a grant and the 512-byte sectors `first_sect..=last_sect` inside it.

use crate::kit::ring::RingProtocol;
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes per sector: `sector_number` and `first_sect`/`last_sect` count in these.
pub const BLKIF_SECTOR_SIZE: u64 = 512;
/// Segments in one direct request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Grants of indirect segment pages in one [`BLKIF_OP_INDIRECT`] request.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segments ([`BlkifRequestSegment`]) in one indirect segment page.
pub const BLKIF_SEGMENTS_PER_INDIRECT_PAGE: usize = 4096 / size_of::<BlkifRequestSegment>();

/// `BLKIF_OP_READ`.
pub const BLKIF_OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`.
pub const BLKIF_OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER` (backend key `feature-barrier`).
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE` (backend key `feature-flush-cache`).
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_RESERVED_1`: never used.
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// `BLKIF_OP_DISCARD` (backend key `feature-discard`), see [`BlkifRequestDiscard`].
pub const BLKIF_OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT` (backend key `feature-max-indirect-segments`), see
/// [`BlkifRequestIndirect`].
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// `BLKIF_DISCARD_SECURE`: flag of a discard request.
pub const BLKIF_DISCARD_SECURE: u8 = 1;

/// `BLKIF_RSP_EOPNOTSUPP`: operation not supported.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;
/// `BLKIF_RSP_ERROR`: the operation failed.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_OKAY`.
pub const BLKIF_RSP_OKAY: i16 = 0;

/// `VDISK_CDROM` bit of the backend's `info` key.
pub const VDISK_CDROM: u32 = 1;
/// `VDISK_REMOVABLE`.
pub const VDISK_REMOVABLE: u32 = 2;
/// `VDISK_READONLY`.
pub const VDISK_READONLY: u32 = 4;

/// `struct blkif_request_segment` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifRequestSegment {
    /// Grant of the data frame.
    pub gref: u32,
    /// First 512-byte sector of the frame to transfer (0..=7).
    pub first_sect: u8,
    /// Last sector to transfer, inclusive (`first_sect..=7`).
    pub last_sect: u8,
    /// Padding.
    pub _pad: [u8; 2],
}

impl BlkifRequestSegment {
    /// Number of sectors, or `None` if the bounds are out of the frame or reversed (a
    /// backend must refuse such a request).
    pub const fn sectors(&self) -> Option<u8> {
        let per_page = (4096 / BLKIF_SECTOR_SIZE) as u8;
        if self.last_sect >= per_page || self.last_sect < self.first_sect {
            None
        } else {
            Some(self.last_sect - self.first_sect + 1)
        }
    }
}

/// `struct blkif_request` (112 bytes): read, write, barrier and flush requests; the
/// slot-sized view that [`discard`](Self::discard) and [`indirect`](Self::indirect)
/// reinterpret for the other operations.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifRequest {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Segments used in `seg` (at most [`BLKIF_MAX_SEGMENTS_PER_REQUEST`]; a flush
    /// may carry 0).
    pub nr_segments: u8,
    /// The virtual device (`blkif_vdev_t`).
    pub handle: u16,
    /// Padding.
    pub _pad: u32,
    /// Private to the frontend, echoed in the response.
    pub id: u64,
    /// Start sector on the disk, in 512-byte units.
    pub sector_number: u64,
    /// The segments.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// `struct blkif_request_discard` (32 bytes) for [`BLKIF_OP_DISCARD`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifRequestDiscard {
    /// [`BLKIF_OP_DISCARD`].
    pub operation: u8,
    /// [`BLKIF_DISCARD_SECURE`] or 0.
    pub flag: u8,
    /// The virtual device.
    pub handle: u16,
    /// Padding.
    pub _pad: u32,
    /// Echoed in the response.
    pub id: u64,
    /// First sector to discard.
    pub sector_number: u64,
    /// Number of sectors.
    pub nr_sectors: u64,
}

/// `struct blkif_request_indirect` (64 bytes on x86_64) for [`BLKIF_OP_INDIRECT`]:
/// the segments live in granted pages of [`BLKIF_SEGMENTS_PER_INDIRECT_PAGE`]
/// [`BlkifRequestSegment`]s each.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifRequestIndirect {
    /// [`BLKIF_OP_INDIRECT`].
    pub operation: u8,
    /// The real operation, [`BLKIF_OP_READ`] or [`BLKIF_OP_WRITE`].
    pub indirect_op: u8,
    /// Number of segments across the indirect pages.
    pub nr_segments: u16,
    /// Padding.
    pub _pad1: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: u64,
    /// The virtual device.
    pub handle: u16,
    /// Padding.
    pub _pad2: u16,
    /// Grants of the pages holding the segments.
    pub indirect_grefs: [u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Tail padding.
    pub _pad3: u32,
}

impl BlkifRequest {
    /// The request read as a discard (meaningful when `operation` is
    /// [`BLKIF_OP_DISCARD`]).
    pub fn discard(&self) -> BlkifRequestDiscard {
        read_prefix(self.as_bytes())
    }

    /// The request read as an indirect request (when `operation` is
    /// [`BLKIF_OP_INDIRECT`]).
    pub fn indirect(&self) -> BlkifRequestIndirect {
        read_prefix(self.as_bytes())
    }

    /// A slot-sized request carrying `d` (the rest zero).
    pub fn from_discard(d: &BlkifRequestDiscard) -> BlkifRequest {
        from_prefix(d.as_bytes())
    }

    /// A slot-sized request carrying `i` (the rest zero).
    pub fn from_indirect(i: &BlkifRequestIndirect) -> BlkifRequest {
        from_prefix(i.as_bytes())
    }

    /// The used segments, or `None` if `nr_segments` exceeds
    /// [`BLKIF_MAX_SEGMENTS_PER_REQUEST`].
    pub fn segments(&self) -> Option<&[BlkifRequestSegment]> {
        self.seg.get(..usize::from(self.nr_segments))
    }
}

fn read_prefix<T: FromBytes>(bytes: &[u8]) -> T {
    match T::read_from_prefix(bytes) {
        Ok((v, _)) => v,
        // The variants are smaller than the 112-byte request (asserted below).
        Err(_) => T::new_zeroed(),
    }
}

fn from_prefix(bytes: &[u8]) -> BlkifRequest {
    let mut r = BlkifRequest::default();
    let dst = r.as_mut_bytes();
    let n = bytes.len().min(dst.len());
    dst[..n].copy_from_slice(&bytes[..n]);
    r
}

/// `struct blkif_response` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifResponse {
    /// The request's `id`.
    pub id: u64,
    /// The request's `operation`.
    pub operation: u8,
    /// Padding.
    pub _pad1: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// Padding.
    pub _pad2: u32,
}

/// The blkif ring protocol: [`BlkifRequest`] / [`BlkifResponse`] in 112-byte slots.
#[derive(Clone, Copy, Debug)]
pub struct BlkifProtocol;

impl RingProtocol for BlkifProtocol {
    type Request = BlkifRequest;
    type Response = BlkifResponse;
    const SLOT_SIZE: usize = 112;
}

const_assert_eq!(size_of::<BlkifRequestSegment>(), 8);
const_assert_eq!(offset_of!(BlkifRequestSegment, first_sect), 4);
const_assert_eq!(offset_of!(BlkifRequestSegment, last_sect), 5);
const_assert_eq!(size_of::<BlkifRequest>(), 112);
const_assert_eq!(offset_of!(BlkifRequest, nr_segments), 1);
const_assert_eq!(offset_of!(BlkifRequest, handle), 2);
const_assert_eq!(offset_of!(BlkifRequest, id), 8);
const_assert_eq!(offset_of!(BlkifRequest, sector_number), 16);
const_assert_eq!(offset_of!(BlkifRequest, seg), 24);
const_assert_eq!(size_of::<BlkifRequestDiscard>(), 32);
const_assert_eq!(offset_of!(BlkifRequestDiscard, id), 8);
const_assert_eq!(offset_of!(BlkifRequestDiscard, nr_sectors), 24);
const_assert_eq!(size_of::<BlkifRequestIndirect>(), 64);
const_assert_eq!(offset_of!(BlkifRequestIndirect, nr_segments), 2);
const_assert_eq!(offset_of!(BlkifRequestIndirect, id), 8);
const_assert_eq!(offset_of!(BlkifRequestIndirect, handle), 24);
const_assert_eq!(offset_of!(BlkifRequestIndirect, indirect_grefs), 28);
const_assert_eq!(size_of::<BlkifResponse>(), 16);
const_assert_eq!(offset_of!(BlkifResponse, operation), 8);
const_assert_eq!(offset_of!(BlkifResponse, status), 10);
const_assert_eq!(BLKIF_SEGMENTS_PER_INDIRECT_PAGE, 512);
