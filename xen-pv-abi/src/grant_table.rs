//! `grant_table_op` (hypercall 20): the commands a PV guest uses to set up its grant
//! table, and the version-1 grant entry (`xen/include/public/grant_table.h`).

use crate::ids::DomId;
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The `GNTTABOP_*` commands, generated from `hypercall-gen/hypercalls.toml`.
pub use crate::generated::grant_table_op::*;

/// `GNTST_okay`.
pub const GNTST_OKAY: i16 = 0;
/// `GNTST_general_error`.
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// `GNTST_bad_domain`.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// `GNTST_bad_virt_addr`.
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// `GNTST_permission_denied`.
pub const GNTST_PERMISSION_DENIED: i16 = -8;

/// Grant reference the toolstack reserves for the console ring.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// Grant reference the toolstack reserves for the xenstore ring.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

/// `GTF_permit_access` in [`GrantEntryV1::flags`].
pub const GTF_PERMIT_ACCESS: u16 = 1;

/// `struct gnttab_setup_table` (24 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabSetupTable {
    /// IN: domain (normally `DOMID_SELF`).
    pub dom: DomId,
    /// Padding.
    pub _pad0: u16,
    /// IN: number of grant frames wanted.
    pub nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: [u8; 6],
    /// IN: guest pointer to `nr_frames` u64 slots; OUT there: the frames (MFNs for PV).
    pub frame_list: u64,
}

/// `struct gnttab_query_size` (16 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabQuerySize {
    /// IN: domain.
    pub dom: DomId,
    /// Padding.
    pub _pad0: u16,
    /// OUT: frames in use.
    pub nr_frames: u32,
    /// OUT: most frames the domain may have.
    pub max_nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: u16,
}

/// `struct gnttab_set_version` (4 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabSetVersion {
    /// IN: version wanted; OUT: version in force.
    pub version: u32,
}

/// `struct gnttab_get_version` (8 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabGetVersion {
    /// IN: domain.
    pub dom: DomId,
    /// Padding.
    pub _pad: u16,
    /// OUT: version.
    pub version: u32,
}

/// `struct grant_entry_v1` (8 bytes): one entry of a version-1 grant table.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*`.
    pub flags: u16,
    /// Domain being granted access.
    pub domid: DomId,
    /// Frame being granted (MFN for a PV guest).
    pub frame: u32,
}

const_assert_eq!(size_of::<GnttabSetupTable>(), 24);
const_assert_eq!(offset_of!(GnttabSetupTable, nr_frames), 4);
const_assert_eq!(offset_of!(GnttabSetupTable, status), 8);
const_assert_eq!(offset_of!(GnttabSetupTable, frame_list), 16);
const_assert_eq!(size_of::<GnttabQuerySize>(), 16);
const_assert_eq!(offset_of!(GnttabQuerySize, max_nr_frames), 8);
const_assert_eq!(offset_of!(GnttabQuerySize, status), 12);
const_assert_eq!(size_of::<GnttabSetVersion>(), 4);
const_assert_eq!(size_of::<GnttabGetVersion>(), 8);
const_assert_eq!(offset_of!(GnttabGetVersion, version), 4);
const_assert_eq!(size_of::<GrantEntryV1>(), 8);
