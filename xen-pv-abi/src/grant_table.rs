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
/// `GNTST_address_too_big`: a transferred frame is above what the receiver can use.
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// `GNTST_eagain`: the entry is in use; try again later.
pub const GNTST_EAGAIN: i16 = -12;
/// `GNTST_no_space`: no maptrack handle left.
pub const GNTST_NO_SPACE: i16 = -13;

/// `GNTTAB_NR_RESERVED_ENTRIES`: the entries the toolstack may use (kept across
/// `set_version`).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;

/// Grant reference the toolstack reserves for the console ring.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// Grant reference the toolstack reserves for the xenstore ring.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

/// `GTF_permit_access` in [`GrantEntryV1::flags`].
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_accept_transfer`: the entry accepts a page transfer from `domid`.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// `GTF_transitive` (v2 only): access to `domid` through another domain's grant.
pub const GTF_TRANSITIVE: u16 = 3;
/// `GTF_type_mask`: the entry-type bits of [`GrantEntryV1::flags`].
pub const GTF_TYPE_MASK: u16 = 3;
/// `GTF_transfer_committed`: set by the hypervisor when a transfer into the entry starts.
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
/// `GTF_transfer_completed`: set when the transferred frame is in the entry.
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;
/// `GTF_PWT`: map write-through.
pub const GTF_PWT: u16 = 1 << 5;
/// `GTF_PCD`: map uncached.
pub const GTF_PCD: u16 = 1 << 6;
/// `GTF_PAT`: map with the PAT bit.
pub const GTF_PAT: u16 = 1 << 7;
/// `GTF_sub_page` (v2): only `length` bytes at `page_off` are granted (copy only).
pub const GTF_SUB_PAGE: u16 = 1 << 8;
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

/// `GNTMAP_guest_avail_mask`: PTE bits the guest may ask for in a host mapping.
pub const GNTMAP_GUEST_AVAIL_MASK: u32 = 0xffff_0000;

/// `GNTTAB_CACHE_CLEAN` in [`GnttabCacheFlush::op`].
pub const GNTTAB_CACHE_CLEAN: u32 = 1 << 0;
/// `GNTTAB_CACHE_INVAL` in [`GnttabCacheFlush::op`].
pub const GNTTAB_CACHE_INVAL: u32 = 1 << 1;
/// `GNTTAB_CACHE_SOURCE_GREF` in [`GnttabCacheFlush::op`]: `a` is a grant reference.
pub const GNTTAB_CACHE_SOURCE_GREF: u32 = 1 << 31;

/// `GNTTABOP_CMD_MASK`: the command bits of `grant_table_op`'s `cmd`; the bits above are
/// a continuation argument (only `GNTTABOP_cache_flush` accepts them).
pub const GNTTABOP_CMD_MASK: u32 = (1 << 12) - 1;

/// `XENMAPSPACE_shared_info` for [`XenAddToPhysmap::space`].
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// `XENMAPSPACE_grant_table`: `idx` is a grant frame (with
/// [`XENMAPIDX_GRANT_TABLE_STATUS`]: a status frame).
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// `XENMAPSPACE_gmfn`.
pub const XENMAPSPACE_GMFN: u32 = 2;
/// `XENMAPSPACE_gmfn_range`.
pub const XENMAPSPACE_GMFN_RANGE: u32 = 3;
/// `XENMAPSPACE_gmfn_foreign` (only through `add_to_physmap_batch`).
pub const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
/// `XENMAPIDX_grant_table_status` in [`XenAddToPhysmap::idx`].
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;

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

/// `union grant_entry_v2` (16 bytes): one entry of a version-2 grant table. The union's
/// arms share the header; the accessors read them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GrantEntryV2 {
    /// `GTF_*` (no `GTF_reading`/`GTF_writing`: those are in the status frames).
    pub flags: u16,
    /// Domain being granted access.
    pub domid: DomId,
    /// `full_page`: padding; `sub_page`: `page_off` (low half) and `length` (high
    /// half); `transitive`: `trans_domid` (low half) and padding.
    pub word1: u32,
    /// `full_page`/`sub_page`: the frame (MFN for PV); `transitive`: the grant
    /// reference in `trans_domid`'s table (low 32 bits).
    pub word2: u64,
}

impl GrantEntryV2 {
    /// `sub_page.page_off`.
    pub const fn page_off(&self) -> u16 {
        self.word1 as u16
    }
    /// `sub_page.length`.
    pub const fn length(&self) -> u16 {
        (self.word1 >> 16) as u16
    }
    /// `transitive.trans_domid`.
    pub const fn trans_domid(&self) -> DomId {
        DomId(self.word1 as u16)
    }
    /// `transitive.gref`.
    pub const fn trans_gref(&self) -> u32 {
        self.word2 as u32
    }
    /// A `full_page` entry.
    pub const fn full_page(flags: u16, domid: DomId, frame: u64) -> Self {
        GrantEntryV2 {
            flags,
            domid,
            word1: 0,
            word2: frame,
        }
    }
    /// A `sub_page` entry (`flags` should include [`GTF_SUB_PAGE`]).
    pub const fn sub_page(flags: u16, domid: DomId, frame: u64, off: u16, len: u16) -> Self {
        GrantEntryV2 {
            flags,
            domid,
            word1: off as u32 | (len as u32) << 16,
            word2: frame,
        }
    }
    /// A `transitive` entry (`flags` should have type [`GTF_TRANSITIVE`]).
    pub const fn transitive(flags: u16, domid: DomId, trans_domid: DomId, gref: u32) -> Self {
        GrantEntryV2 {
            flags,
            domid,
            word1: trans_domid.0 as u32,
            word2: gref as u64,
        }
    }
}

/// `struct gnttab_dump_table` (4 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabDumpTable {
    /// IN: domain.
    pub dom: DomId,
    /// OUT: `GNTST_*`.
    pub status: i16,
}

/// `struct gnttab_transfer` (24 bytes): one element of `GNTTABOP_transfer`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabTransfer {
    /// IN: the caller's frame to give away (MFN for PV).
    pub mfn: u64,
    /// IN: the receiving domain.
    pub domid: DomId,
    /// Padding.
    pub _pad0: u16,
    /// IN: the receiver's `GTF_accept_transfer` entry.
    pub r#ref: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: [u8; 6],
}

/// `struct gnttab_unmap_and_replace` (24 bytes): one element of
/// `GNTTABOP_unmap_and_replace`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabUnmapAndReplace {
    /// IN: the address the mapping was made at.
    pub host_addr: u64,
    /// IN: an address whose PTE moves to `host_addr` (0: `host_addr` is cleared).
    pub new_addr: u64,
    /// IN: the map's handle.
    pub handle: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad: u16,
}

/// `struct gnttab_get_status_frames` (16 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabGetStatusFrames {
    /// IN: number of status frames wanted.
    pub nr_frames: u32,
    /// IN: domain.
    pub dom: DomId,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// IN: guest pointer to `nr_frames` u64 slots; OUT there: the frames (MFNs for PV).
    pub frame_list: u64,
}

/// `struct gnttab_swap_grant_ref` (12 bytes): one element of `GNTTABOP_swap_grant_ref`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabSwapGrantRef {
    /// IN: first entry.
    pub ref_a: u32,
    /// IN: second entry.
    pub ref_b: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad: u16,
}

/// `struct gnttab_cache_flush` (16 bytes): one element of `GNTTABOP_cache_flush`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabCacheFlush {
    /// IN: the union `a`: `dev_bus_addr` (or `ref`, low 32 bits, with
    /// [`GNTTAB_CACHE_SOURCE_GREF`]).
    pub a: u64,
    /// IN: offset in the page.
    pub offset: u16,
    /// IN: bytes to flush.
    pub length: u16,
    /// IN: `GNTTAB_CACHE_*`.
    pub op: u32,
}

/// `struct xen_add_to_physmap` (24 bytes, `memory_op(XENMEM_add_to_physmap)`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XenAddToPhysmap {
    /// IN: the domain whose physmap changes.
    pub domid: DomId,
    /// IN: number of pages (`XENMAPSPACE_gmfn_range` only).
    pub size: u16,
    /// IN: `XENMAPSPACE_*`.
    pub space: u32,
    /// IN: index into the space.
    pub idx: u64,
    /// IN: the GPFN where the frame appears.
    pub gpfn: u64,
}

const_assert_eq!(size_of::<GrantEntryV2>(), 16);
const_assert_eq!(offset_of!(GrantEntryV2, word1), 4);
const_assert_eq!(offset_of!(GrantEntryV2, word2), 8);
const_assert_eq!(size_of::<GnttabDumpTable>(), 4);
const_assert_eq!(offset_of!(GnttabDumpTable, status), 2);
const_assert_eq!(size_of::<GnttabTransfer>(), 24);
const_assert_eq!(offset_of!(GnttabTransfer, domid), 8);
const_assert_eq!(offset_of!(GnttabTransfer, r#ref), 12);
const_assert_eq!(offset_of!(GnttabTransfer, status), 16);
const_assert_eq!(size_of::<GnttabUnmapAndReplace>(), 24);
const_assert_eq!(offset_of!(GnttabUnmapAndReplace, new_addr), 8);
const_assert_eq!(offset_of!(GnttabUnmapAndReplace, handle), 16);
const_assert_eq!(offset_of!(GnttabUnmapAndReplace, status), 20);
const_assert_eq!(size_of::<GnttabGetStatusFrames>(), 16);
const_assert_eq!(offset_of!(GnttabGetStatusFrames, dom), 4);
const_assert_eq!(offset_of!(GnttabGetStatusFrames, status), 6);
const_assert_eq!(offset_of!(GnttabGetStatusFrames, frame_list), 8);
const_assert_eq!(size_of::<GnttabSwapGrantRef>(), 12);
const_assert_eq!(offset_of!(GnttabSwapGrantRef, status), 8);
const_assert_eq!(size_of::<GnttabCacheFlush>(), 16);
const_assert_eq!(offset_of!(GnttabCacheFlush, offset), 8);
const_assert_eq!(offset_of!(GnttabCacheFlush, length), 10);
const_assert_eq!(offset_of!(GnttabCacheFlush, op), 12);
const_assert_eq!(size_of::<XenAddToPhysmap>(), 24);
const_assert_eq!(offset_of!(XenAddToPhysmap, space), 4);
const_assert_eq!(offset_of!(XenAddToPhysmap, idx), 8);
const_assert_eq!(offset_of!(XenAddToPhysmap, gpfn), 16);
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
