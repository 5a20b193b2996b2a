//! PV memory management: `mmu_update` (1), `mmuext_op` (26), `update_va_mapping` (14)
//! flags, `multicall` (13) entries, `vm_assist` (21) and the `memory_op` (12) basics
//! (`xen/include/public/xen.h`, `xen/include/public/memory.h`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `mmu_update` command (`ptr & 7`): write a validated page-table entry.
pub const MMU_NORMAL_PT_UPDATE: u64 = 0;
/// `mmu_update` command: set the m2p entry of the frame containing `ptr` to `val`.
pub const MMU_MACHPHYS_UPDATE: u64 = 1;
/// `mmu_update` command: as `MMU_NORMAL_PT_UPDATE`, keeping the entry's A/D bits.
pub const MMU_PT_UPDATE_PRESERVE_AD: u64 = 2;
/// `mmu_update` command: as `MMU_NORMAL_PT_UPDATE`, `val` never translated.
pub const MMU_PT_UPDATE_NO_TRANSLATE: u64 = 3;

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

/// `mmuext_op` command: pin (and validate) an L1 table.
pub const MMUEXT_PIN_L1_TABLE: u32 = 0;
/// `mmuext_op` command: pin an L2 table.
pub const MMUEXT_PIN_L2_TABLE: u32 = 1;
/// `mmuext_op` command: pin an L3 table.
pub const MMUEXT_PIN_L3_TABLE: u32 = 2;
/// `mmuext_op` command: pin an L4 table.
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
/// `mmuext_op` command: unpin a table.
pub const MMUEXT_UNPIN_TABLE: u32 = 4;
/// `mmuext_op` command: load a new kernel-mode L4.
pub const MMUEXT_NEW_BASEPTR: u32 = 5;
/// `mmuext_op` command: flush this vCPU's TLB.
pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;
/// `mmuext_op` command: invalidate one page in this vCPU's TLB.
pub const MMUEXT_INVLPG_LOCAL: u32 = 7;
/// `mmuext_op` command: flush the TLBs of the vCPUs in a mask.
pub const MMUEXT_TLB_FLUSH_MULTI: u32 = 8;
/// `mmuext_op` command: invalidate one page on the vCPUs in a mask.
pub const MMUEXT_INVLPG_MULTI: u32 = 9;
/// `mmuext_op` command: flush every vCPU's TLB.
pub const MMUEXT_TLB_FLUSH_ALL: u32 = 10;
/// `mmuext_op` command: invalidate one page on every vCPU.
pub const MMUEXT_INVLPG_ALL: u32 = 11;
/// `mmuext_op` command: write back and invalidate caches (privileged).
pub const MMUEXT_FLUSH_CACHE: u32 = 12;
/// `mmuext_op` command: set the LDT (linear address, number of entries).
pub const MMUEXT_SET_LDT: u32 = 13;
/// `mmuext_op` command: load a new user-mode L4 (0 = none).
pub const MMUEXT_NEW_USER_BASEPTR: u32 = 15;
/// `mmuext_op` command: zero a frame.
pub const MMUEXT_CLEAR_PAGE: u32 = 16;
/// `mmuext_op` command: copy a frame (`arg1` destination, `arg2` source).
pub const MMUEXT_COPY_PAGE: u32 = 17;
/// `mmuext_op` command: flush caches on every CPU (privileged).
pub const MMUEXT_FLUSH_CACHE_GLOBAL: u32 = 18;

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

/// `update_va_mapping` flush type: none.
pub const UVMF_NONE: u64 = 0;
/// `update_va_mapping` flush type: whole TLB.
pub const UVMF_TLB_FLUSH: u64 = 1;
/// `update_va_mapping` flush type: the one page.
pub const UVMF_INVLPG: u64 = 2;
/// Mask of the flush type in the flags.
pub const UVMF_FLUSHTYPE_MASK: u64 = 3;
/// Flush scope: this vCPU (also the `UVMF_MULTI` marker when a mask pointer is OR-ed in).
pub const UVMF_LOCAL: u64 = 0;
/// Flush scope: every vCPU of the domain.
pub const UVMF_ALL: u64 = 1 << 2;

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

/// `vm_assist` command: enable an assist.
pub const VMASST_CMD_ENABLE: u32 = 0;
/// `vm_assist` command: disable an assist.
pub const VMASST_CMD_DISABLE: u32 = 1;
/// `vm_assist` type: 4 GiB segments (32-bit only).
pub const VMASST_TYPE_4GB_SEGMENTS: u32 = 0;
/// `vm_assist` type: emulate direct writes to L1 page tables.
pub const VMASST_TYPE_WRITABLE_PAGETABLES: u32 = 2;
/// `vm_assist` type: runstate update flag.
pub const VMASST_TYPE_RUNSTATE_UPDATE_FLAG: u32 = 5;
/// `vm_assist` type: hide the m2p from user-mode page tables.
pub const VMASST_TYPE_M2P_STRICT: u32 = 32;

/// `memory_op` sub-op: highest machine frame of host RAM.
pub const XENMEM_MAXIMUM_RAM_PAGE: u32 = 2;
/// `memory_op` sub-op: pages the domain has.
pub const XENMEM_CURRENT_RESERVATION: u32 = 3;
/// `memory_op` sub-op: pages the domain may have.
pub const XENMEM_MAXIMUM_RESERVATION: u32 = 4;
/// `memory_op` sub-op: the domain's E820 map (`-ENOSYS` if none was set).
pub const XENMEM_MEMORY_MAP: u32 = 9;
/// `memory_op` sub-op: where the m2p is mapped.
pub const XENMEM_MACHPHYS_MAPPING: u32 = 12;

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
