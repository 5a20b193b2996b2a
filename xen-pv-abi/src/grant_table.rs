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
/// `GNTST_bad_gntref`.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// `GNTST_bad_handle`.
pub const GNTST_BAD_HANDLE: i16 = -4;
/// `GNTST_bad_virt_addr`.
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// `GNTST_bad_dev_addr`.
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// `GNTST_no_device_space`: no maptrack handle left.
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// `GNTST_permission_denied`.
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// `GNTST_bad_page`.
pub const GNTST_BAD_PAGE: i16 = -9;
/// `GNTST_bad_copy_arg`.
pub const GNTST_BAD_COPY_ARG: i16 = -10;

/// Grant reference the toolstack reserves for the console ring.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// Grant reference the toolstack reserves for the xenstore ring.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

/// `GTF_permit_access` in [`GrantEntryV1::flags`].
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_type_mask`: the entry-type bits of [`GrantEntryV1::flags`].
pub const GTF_TYPE_MASK: u16 = 3;
/// `GTF_readonly`: the grantee may only read the frame.
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading`: set by the hypervisor while the frame is being read (or mapped).
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`: set by the hypervisor while the frame is being written (or mapped
/// writable).
pub const GTF_WRITING: u16 = 1 << 4;

/// `GNTMAP_device_map`: also report a bus address for the frame.
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// `GNTMAP_host_map`: map the frame at `host_addr`.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`: map it read-only.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// `GNTMAP_application_map`: a user-accessible mapping.
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// `GNTMAP_contains_pte`: `host_addr` is the machine address of the PTE to write.
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;

/// `GNTCOPY_source_gref` in [`GnttabCopy::flags`]: the source is a grant reference.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref` in [`GnttabCopy::flags`]: the destination is a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

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

/// One side of a [`GnttabCopy`] (16 bytes): a grant reference of `domid` or, for the
/// caller's own memory (`domid = DOMID_SELF`), a frame number (MFN for a PV guest).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabCopyPtr {
    /// The union `u`: `ref` (grant_ref_t, low 32 bits) or `gmfn` (xen_pfn_t).
    pub u: u64,
    /// Granting domain (gref) or `DOMID_SELF` (frame).
    pub domid: DomId,
    /// Byte offset in the page.
    pub offset: u16,
    /// Padding.
    pub _pad: u32,
}

impl GnttabCopyPtr {
    /// The union read as a grant reference.
    pub const fn gref(&self) -> u32 {
        self.u as u32
    }
}

/// `struct gnttab_copy` (40 bytes): one element of `GNTTABOP_copy`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabCopy {
    /// IN: where the bytes come from.
    pub source: GnttabCopyPtr,
    /// IN: where they go.
    pub dest: GnttabCopyPtr,
    /// IN: bytes to copy (offset + len within the page on both sides).
    pub len: u16,
    /// IN: `GNTCOPY_*`.
    pub flags: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad: u16,
}

/// `struct gnttab_map_grant_ref` (32 bytes): one element of `GNTTABOP_map_grant_ref`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabMapGrantRef {
    /// IN: virtual address to map at (or PTE machine address with `GNTMAP_contains_pte`).
    pub host_addr: u64,
    /// IN: `GNTMAP_*`.
    pub flags: u32,
    /// IN: grant reference in `dom`'s table.
    pub r#ref: u32,
    /// IN: the granting domain.
    pub dom: DomId,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// OUT: handle for the unmap.
    pub handle: u32,
    /// OUT: bus address of the frame (`GNTMAP_device_map`).
    pub dev_bus_addr: u64,
}

/// `struct gnttab_unmap_grant_ref` (24 bytes): one element of `GNTTABOP_unmap_grant_ref`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabUnmapGrantRef {
    /// IN: the address the mapping was made at (0: no host mapping to remove).
    pub host_addr: u64,
    /// IN: the bus address returned by the map (0: none).
    pub dev_bus_addr: u64,
    /// IN: the map's handle.
    pub handle: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad: u16,
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
const_assert_eq!(size_of::<GnttabMapGrantRef>(), 32);
const_assert_eq!(offset_of!(GnttabMapGrantRef, flags), 8);
const_assert_eq!(offset_of!(GnttabMapGrantRef, r#ref), 12);
const_assert_eq!(offset_of!(GnttabMapGrantRef, dom), 16);
const_assert_eq!(offset_of!(GnttabMapGrantRef, status), 18);
const_assert_eq!(offset_of!(GnttabMapGrantRef, handle), 20);
const_assert_eq!(offset_of!(GnttabMapGrantRef, dev_bus_addr), 24);
const_assert_eq!(size_of::<GnttabUnmapGrantRef>(), 24);
const_assert_eq!(offset_of!(GnttabUnmapGrantRef, dev_bus_addr), 8);
const_assert_eq!(offset_of!(GnttabUnmapGrantRef, handle), 16);
const_assert_eq!(offset_of!(GnttabUnmapGrantRef, status), 20);
const_assert_eq!(size_of::<GnttabCopyPtr>(), 16);
const_assert_eq!(offset_of!(GnttabCopyPtr, domid), 8);
const_assert_eq!(offset_of!(GnttabCopyPtr, offset), 10);
const_assert_eq!(size_of::<GnttabCopy>(), 40);
const_assert_eq!(offset_of!(GnttabCopy, dest), 16);
const_assert_eq!(offset_of!(GnttabCopy, len), 32);
const_assert_eq!(offset_of!(GnttabCopy, flags), 34);
const_assert_eq!(offset_of!(GnttabCopy, status), 36);
