//! `shared_info`, `vcpu_info` and `vcpu_time_info` (x86_64).

use core::mem::offset_of;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// vCPUs that have a `vcpu_info` slot inside shared_info (`XEN_LEGACY_MAX_VCPUS`).
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;
/// Ports of the 2-level event channel ABI (64 words of 64 bits).
pub const EVTCHN_2L_NR_CHANNELS: usize = 64 * 64;
/// `vcpu_time_info.flags`: the TSC is stable across vCPUs.
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `vcpu_time_info.flags`: the guest was stopped.
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// `struct vcpu_time_info` (32 bytes): converts TSC readings to Xen system time.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuTimeInfo {
    /// Seqlock: odd while an update is in progress.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC at the last update.
    pub tsc_timestamp: u64,
    /// System time (ns since boot) at `tsc_timestamp`.
    pub system_time: u64,
    /// 32.32 fixed-point multiplier from (shifted) TSC ticks to ns.
    pub tsc_to_system_mul: u32,
    /// Shift applied to the TSC delta before multiplying (negative = right shift).
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}

impl VcpuTimeInfo {
    /// Converts a TSC delta to nanoseconds with this record's scale.
    pub const fn delta_ns(&self, tsc_delta: u64) -> u64 {
        scale_delta(tsc_delta, self.tsc_to_system_mul, self.tsc_shift)
    }

    /// System time (ns) at TSC value `tsc`, per this (consistent) snapshot.
    pub const fn system_time_at(&self, tsc: u64) -> u64 {
        self.system_time
            .wrapping_add(self.delta_ns(tsc.wrapping_sub(self.tsc_timestamp)))
    }
}

/// `(delta shifted by shift) * mul >> 32`, the pvclock formula.
pub const fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 {
        delta << shift
    } else {
        delta >> (-shift)
    };
    ((d as u128 * mul as u128) >> 32) as u64
}

/// `struct arch_vcpu_info` (x86_64).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ArchVcpuInfo {
    /// Faulting address of a page fault delivered to the guest.
    pub cr2: u64,
    /// Padding.
    pub pad: u64,
}

/// `struct vcpu_info` (64 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct VcpuInfo {
    /// Set by the hypervisor when an event is pending; cleared by the guest.
    pub evtchn_upcall_pending: u8,
    /// Non-zero blocks upcalls (the guest's virtual "interrupts disabled").
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub pad: [u8; 6],
    /// One bit per word of `evtchn_pending` that has pending ports.
    pub evtchn_pending_sel: u64,
    /// Architecture part.
    pub arch: ArchVcpuInfo,
    /// Time record for this vCPU.
    pub time: VcpuTimeInfo,
}

/// `struct arch_shared_info` (x86_64, 48 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ArchSharedInfo {
    /// Entries in the p2m (for tools).
    pub max_pfn: u64,
    /// 3-level p2m root frame list list.
    pub pfn_to_mfn_frame_list_list: u64,
    /// NMI reason bits.
    pub nmi_reason: u64,
    /// Root of the address space holding a linear p2m.
    pub p2m_cr3: u64,
    /// VA of the linear p2m list.
    pub p2m_vaddr: u64,
    /// Incremented around p2m mapping changes.
    pub p2m_generation: u64,
}

/// `struct shared_info` (3136 bytes used of its page).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SharedInfo {
    /// Per-vCPU event and time state.
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// Pending bit per port.
    pub evtchn_pending: [u64; 64],
    /// Mask bit per port.
    pub evtchn_mask: [u64; 64],
    /// Seqlock of the wall clock fields.
    pub wc_version: u32,
    /// Wall-clock seconds at system time 0 (low 32 bits).
    pub wc_sec: u32,
    /// Wall-clock nanoseconds at system time 0.
    pub wc_nsec: u32,
    /// Wall-clock seconds, high 32 bits.
    pub wc_sec_hi: u32,
    /// Architecture part.
    pub arch: ArchSharedInfo,
}

const_assert_eq!(core::mem::size_of::<VcpuTimeInfo>(), 32);
const_assert_eq!(offset_of!(VcpuTimeInfo, tsc_timestamp), 8);
const_assert_eq!(offset_of!(VcpuTimeInfo, system_time), 16);
const_assert_eq!(offset_of!(VcpuTimeInfo, tsc_to_system_mul), 24);
const_assert_eq!(offset_of!(VcpuTimeInfo, tsc_shift), 28);
const_assert_eq!(offset_of!(VcpuTimeInfo, flags), 29);
const_assert_eq!(core::mem::size_of::<VcpuInfo>(), 64);
const_assert_eq!(offset_of!(VcpuInfo, evtchn_upcall_mask), 1);
const_assert_eq!(offset_of!(VcpuInfo, evtchn_pending_sel), 8);
const_assert_eq!(offset_of!(VcpuInfo, arch), 16);
const_assert_eq!(offset_of!(VcpuInfo, time), 32);
const_assert_eq!(core::mem::size_of::<ArchSharedInfo>(), 48);
const_assert_eq!(core::mem::size_of::<SharedInfo>(), 3136);
const_assert_eq!(offset_of!(SharedInfo, evtchn_pending), 2048);
const_assert_eq!(offset_of!(SharedInfo, evtchn_mask), 2560);
const_assert_eq!(offset_of!(SharedInfo, wc_version), 3072);
const_assert_eq!(offset_of!(SharedInfo, wc_sec), 3076);
const_assert_eq!(offset_of!(SharedInfo, wc_nsec), 3080);
const_assert_eq!(offset_of!(SharedInfo, wc_sec_hi), 3084);
const_assert_eq!(offset_of!(SharedInfo, arch), 3088);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvclock_scaling() {
        // 1 GHz TSC: mul = 2^32 >> 1 with shift 1 gives 1 ns per tick.
        assert_eq!(scale_delta(1000, 0x8000_0000, 1), 1000);
        // 2 GHz TSC: 0.5 ns per tick.
        assert_eq!(scale_delta(1000, 0x8000_0000, 0), 500);
        let t = VcpuTimeInfo {
            tsc_timestamp: 100,
            system_time: 5_000,
            tsc_to_system_mul: 0x8000_0000,
            tsc_shift: 1,
            ..Default::default()
        };
        assert_eq!(t.system_time_at(1100), 6_000);
        assert_eq!(scale_delta(1 << 20, 0x8000_0000, -1), 1 << 18);
    }
}
