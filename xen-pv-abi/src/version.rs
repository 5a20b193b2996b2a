//! `xen_version` (hypercall 17) commands and result types.

use core::mem::offset_of;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The `XENVER_*` commands, generated from `hypercall-gen/hypercalls.toml`.
pub use crate::generated::xen_version::*;

/// `xen_extraversion_t`.
pub type ExtraVersion = [u8; 16];
/// `xen_capabilities_info_t`.
pub type CapabilitiesInfo = [u8; 1024];
/// `xen_changeset_info_t`.
pub type ChangesetInfo = [u8; 64];
/// `xen_domain_handle_t`.
pub type DomainHandle = [u8; 16];

/// The capability every 64-bit PV kernel needs to find in `XENVER_capabilities`.
pub const CAPABILITY_X86_64_PV: &str = "xen-3.0-x86_64";

/// `struct xen_compile_info` (144 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CompileInfo {
    /// Compiler.
    pub compiler: [u8; 64],
    /// Who built it.
    pub compile_by: [u8; 16],
    /// Build domain.
    pub compile_domain: [u8; 32],
    /// Build date.
    pub compile_date: [u8; 32],
}

/// `struct xen_platform_parameters`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PlatformParameters {
    /// Start of the hypervisor's reserved virtual range.
    pub virt_start: u64,
}

/// `struct xen_feature_info`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FeatureInfo {
    /// Which 32-bit submap (IN).
    pub submap_idx: u32,
    /// Feature bits of that submap (OUT).
    pub submap: u32,
}

/// XENFEAT bit numbers.
pub mod feature {
    #![allow(missing_docs)]
    pub const WRITABLE_PAGE_TABLES: u32 = 0;
    pub const WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
    pub const AUTO_TRANSLATED_PHYSMAP: u32 = 2;
    pub const SUPERVISOR_MODE_KERNEL: u32 = 3;
    pub const PAE_PGDIR_ABOVE_4GB: u32 = 4;
    pub const MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
    pub const HIGHMEM_ASSIST: u32 = 6;
    pub const GNTTAB_MAP_AVAIL_BITS: u32 = 7;
    pub const HVM_CALLBACK_VECTOR: u32 = 8;
    pub const HVM_SAFE_PVCLOCK: u32 = 9;
    pub const HVM_PIRQS: u32 = 10;
    pub const DOM0: u32 = 11;
    pub const GRANT_MAP_IDENTITY: u32 = 12;
    pub const MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
    pub const ARM_SMCCC_SUPPORTED: u32 = 14;
    pub const LINUX_RSDP_UNRESTRICTED: u32 = 15;
    pub const NOT_DIRECT_MAPPED: u32 = 16;
    pub const DIRECT_MAPPED: u32 = 17;
    pub const RUNSTATE_PHYS_AREA: u32 = 18;
    pub const VCPU_TIME_PHYS_AREA: u32 = 19;
    pub const DM_MSIX_ALL_WRITES: u32 = 20;
}

const_assert_eq!(core::mem::size_of::<CompileInfo>(), 144);
const_assert_eq!(offset_of!(CompileInfo, compile_by), 64);
const_assert_eq!(offset_of!(CompileInfo, compile_domain), 80);
const_assert_eq!(offset_of!(CompileInfo, compile_date), 112);
const_assert_eq!(core::mem::size_of::<FeatureInfo>(), 8);
