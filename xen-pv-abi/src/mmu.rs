//! PV memory management: `mmu_update` (1), `mmuext_op` (26), `update_va_mapping` (14)
//! flags, `multicall` (13) entries, `vm_assist` (21) and the `memory_op` (12) basics
//! (`xen/include/public/xen.h`, `xen/include/public/memory.h`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Command, flag and sub-op numbers, generated from `hypercall-gen/hypercalls.toml`.
pub use crate::generated::{
    memory_op::*, mmu_update::*, mmuext_op::*, update_va_mapping::*, vm_assist::*,
};

/// One `mmu_update` request (`mmu_update_t`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MmuUpdate {
    /// Machine address of the entry (low 3 bits: the command).
    pub ptr: u64,
    /// New entry value (or pfn for `MMU_MACHPHYS_UPDATE`).
    pub val: u64,
}

const_assert_eq!(core::mem::size_of::<MmuUpdate>(), 16);
const_assert_eq!(core::mem::offset_of!(MmuUpdate, val), 8);

/// One `mmuext_op` request (`struct mmuext_op`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MmuextOp {
    /// `MMUEXT_*`.
    pub cmd: u32,
    /// Padding (C alignment of the union that follows).
    pub pad: u32,
    /// Frame number or linear address.
    pub arg1: u64,
    /// Entry count, vCPU mask pointer or source frame.
    pub arg2: u64,
}

const_assert_eq!(core::mem::size_of::<MmuextOp>(), 24);
const_assert_eq!(core::mem::offset_of!(MmuextOp, arg1), 8);
const_assert_eq!(core::mem::offset_of!(MmuextOp, arg2), 16);

/// Mask of the flush type in the flags.
pub const UVMF_FLUSHTYPE_MASK: u64 = 3;
/// Flush scope: this vCPU (also the `UVMF_MULTI` marker when a mask pointer is OR-ed in).
pub const UVMF_LOCAL: u64 = 0;

/// One `multicall` entry (`multicall_entry_t`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MulticallEntry {
    /// Hypercall number.
    pub op: u64,
    /// Return value, written by the hypervisor.
    pub result: u64,
    /// Arguments (Xen uses the first five).
    pub args: [u64; 6],
}

const_assert_eq!(core::mem::size_of::<MulticallEntry>(), 64);
const_assert_eq!(core::mem::offset_of!(MulticallEntry, result), 8);
const_assert_eq!(core::mem::offset_of!(MulticallEntry, args), 16);

/// `struct xen_machphys_mapping` (OUT of `XENMEM_machphys_mapping`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MachphysMapping {
    /// First VA of the m2p.
    pub v_start: u64,
    /// End (exclusive) of the m2p.
    pub v_end: u64,
    /// Highest machine frame number the m2p covers.
    pub max_mfn: u64,
}

const_assert_eq!(core::mem::size_of::<MachphysMapping>(), 24);
