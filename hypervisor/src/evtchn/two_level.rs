//! The 2-level delivery ABI: pending and mask bitmaps in `shared_info`, one selector word
//! and the upcall flag in each `vcpu_info` (xen-pv-abi.md §6.3, Xen's `event_2l.c`).
//!
//! Every access is a byte copy through [`MachineMemory`]; bits are read and written one
//! byte at a time, so a guest writing the neighbouring bits of the same word concurrently
//! loses nothing to a wider read-modify-write. A machine address that cannot be accessed
//! (never the case for a domain's own shared_info) reads as "bit set" for test-and-set,
//! so nothing further is raised from garbage.

use super::table::Raised;
use crate::platform::MachineMemory;
use core::mem::{offset_of, size_of};
use xen_pv_abi::Mfn;
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::shared_info::{EVTCHN_2L_NR_CHANNELS, SharedInfo, VcpuInfo, XEN_LEGACY_MAX_VCPUS};

/// Ports of the 2-level ABI.
pub const NR_CHANNELS: u32 = EVTCHN_2L_NR_CHANNELS as u32;
/// Ports per selector bit (one `u64` word of the bitmaps).
const BITS_PER_WORD: u32 = 64;

const PENDING: u64 = offset_of!(SharedInfo, evtchn_pending) as u64;
const MASK: u64 = offset_of!(SharedInfo, evtchn_mask) as u64;
const VCPU_INFO: u64 = offset_of!(SharedInfo, vcpu_info) as u64;
const VCPU_INFO_SIZE: u64 = size_of::<VcpuInfo>() as u64;
const UPCALL_PENDING: u64 = offset_of!(VcpuInfo, evtchn_upcall_pending) as u64;
const PENDING_SEL: u64 = offset_of!(VcpuInfo, evtchn_pending_sel) as u64;

/// Byte address and bit mask of bit `bit` of the little-endian bitmap at `base`.
#[inline(always)]
fn locate(base: u64, bit: u32) -> (u64, u8) {
    (base + u64::from(bit / 8), 1u8 << (bit % 8))
}

/// Machine address of byte `offset` of the shared_info frame `si`. Every offset used
/// here lies inside the page (bitmaps of [`NR_CHANNELS`] bits, `vcpu_info` of a vCPU below
/// `XEN_LEGACY_MAX_VCPUS`), and a frame's address is page-aligned: the sum is an OR and
/// cannot overflow, so the hot path needs no overflow check for it.
#[inline(always)]
fn in_page(si: Mfn, offset: u64) -> u64 {
    debug_assert!(
        offset < PAGE_SIZE as u64,
        "offset {offset:#x} outside shared_info"
    );
    si.maddr() | offset
}

#[inline(always)]
fn read_byte(mem: &impl MachineMemory, addr: u64) -> Option<u8> {
    mem.read_u8(addr).ok()
}

/// Bit `bit` of the bitmap at `base` (`false` if unreadable).
#[inline(always)]
pub(super) fn test_bit(mem: &impl MachineMemory, base: u64, bit: u32) -> bool {
    let (addr, m) = locate(base, bit);
    read_byte(mem, addr).is_some_and(|b| b & m != 0)
}

/// Sets bit `bit`; returns its old value (`true` if the byte is not accessible).
#[inline(always)]
pub(super) fn test_and_set_bit(mem: &impl MachineMemory, base: u64, bit: u32) -> bool {
    let (addr, m) = locate(base, bit);
    !matches!(mem.fetch_or_u8(addr, m), Ok(old) if old & m == 0)
}

/// Clears bit `bit`; returns its old value (`false` if the byte is not accessible).
pub(super) fn test_and_clear_bit(mem: &impl MachineMemory, base: u64, bit: u32) -> bool {
    let (addr, m) = locate(base, bit);
    match read_byte(mem, addr) {
        Some(b) if b & m != 0 => mem.write_u8(addr, b & !m).is_ok(),
        _ => false,
    }
}

/// Machine address of vCPU `vcpu`'s `vcpu_info` inside shared_info.
#[inline(always)]
fn vcpu_info(si: Mfn, vcpu: u32) -> Option<u64> {
    (vcpu < XEN_LEGACY_MAX_VCPUS as u32)
        .then(|| in_page(si, VCPU_INFO + u64::from(vcpu) * VCPU_INFO_SIZE))
}

/// Sets `vcpu_info[vcpu].evtchn_upcall_pending` (bit 0, as Xen); `true` if it went 0->1,
/// i.e. the vCPU must be kicked (`vcpu_mark_events_pending`).
#[inline]
pub(super) fn mark_upcall_pending(mem: &impl MachineMemory, si: Mfn, vcpu: u32) -> bool {
    vcpu_info(si, vcpu).is_some_and(|vi| !test_and_set_bit(mem, vi + UPCALL_PENDING, 0))
}

/// Marks `port` pending for `vcpu` (`evtchn_2l_set_pending`): one byte read-modify-write
/// per bit, and only as far as needed (an already pending port stops after the first).
#[inline]
pub(super) fn set_pending(mem: &impl MachineMemory, si: Mfn, port: u32, vcpu: u32) -> Raised {
    let Some(vi) = vcpu_info(si, vcpu) else {
        return Raised::default();
    };
    if port >= NR_CHANNELS {
        return Raised::default();
    }
    // Byte addresses inside the page: port / 8 < 512 bytes past each bitmap.
    let byte = u64::from(port / 8);
    let (pending, mask) = (in_page(si, PENDING + byte), in_page(si, MASK + byte));
    if test_and_set_bit(mem, pending, port % 8) {
        return Raised::default();
    }
    let upcall = !test_bit(mem, mask, port % 8)
        && !test_and_set_bit(mem, vi + PENDING_SEL, port / BITS_PER_WORD)
        && !test_and_set_bit(mem, vi + UPCALL_PENDING, 0);
    Raised {
        upcall,
        newly_pending: true,
    }
}

/// Clears `port`'s pending bit (on close, so a re-bound port starts quiet).
pub(super) fn clear_pending(mem: &impl MachineMemory, si: Mfn, port: u32) {
    if port < NR_CHANNELS {
        test_and_clear_bit(mem, si.maddr() + PENDING, port);
    }
}

/// `EVTCHNOP_unmask` (`evtchn_2l_unmask`): only if the mask bit was set and the port is
/// pending does it set the selector bit and the upcall. `true` if the upcall went 0->1.
pub(super) fn unmask(mem: &impl MachineMemory, si: Mfn, port: u32, vcpu: u32) -> bool {
    let Some(vi) = vcpu_info(si, vcpu) else {
        return false;
    };
    port < NR_CHANNELS
        && test_and_clear_bit(mem, si.maddr() + MASK, port)
        && test_bit(mem, si.maddr() + PENDING, port)
        && !test_and_set_bit(mem, vi + PENDING_SEL, port / BITS_PER_WORD)
        && mark_upcall_pending(mem, si, vcpu)
}

/// Whether `port`'s pending bit is set.
pub(super) fn is_pending(mem: &impl MachineMemory, si: Mfn, port: u32) -> bool {
    port < NR_CHANNELS && test_bit(mem, si.maddr() + PENDING, port)
}

/// Whether `port`'s mask bit is set (ports beyond the bitmap count as masked).
pub(super) fn is_masked(mem: &impl MachineMemory, si: Mfn, port: u32) -> bool {
    port >= NR_CHANNELS || test_bit(mem, si.maddr() + MASK, port)
}
