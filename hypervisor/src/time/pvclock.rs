//! Publishing time to guests: the per-vCPU `vcpu_time_info` records and the wall clock
//! in `shared_info`, both under Xen's version protocol.
//!
//! A reader copies `version`, reads the fields, and retries while the version is odd
//! or changed. The writer therefore sets `version` to `(v + 1) | 1` (odd), writes the
//! fields, then sets it to that value + 1 (even). The guest can scribble on `version`;
//! the rule still leaves it odd during the update and even after.
//!
//! The guest pages are reached only through byte copies ([`MachineMemory`]).

use super::Clock;
use crate::platform::{BadMaddr, MachineMemory};
use core::mem::{offset_of, size_of};
use core::sync::atomic::{Ordering, compiler_fence};
use xen_pv_abi::shared_info::{SharedInfo, VcpuInfo, VcpuTimeInfo, XEN_LEGACY_MAX_VCPUS};
use xen_pv_abi::{Mfn, VcpuId};
use zerocopy::{FromBytes, IntoBytes};

const NS_PER_SEC: u64 = 1_000_000_000;
const VERSION_LEN: usize = size_of::<u32>();
const WC_VERSION: u64 = offset_of!(SharedInfo, wc_version) as u64;
const WC_SEC: u64 = offset_of!(SharedInfo, wc_sec) as u64;
const WC_NSEC: u64 = offset_of!(SharedInfo, wc_nsec) as u64;
const WC_SEC_HI: u64 = offset_of!(SharedInfo, wc_sec_hi) as u64;

/// The version a record gets while it is being rewritten (always odd).
pub const fn version_update_begin(v: u32) -> u32 {
    v.wrapping_add(1) | 1
}

/// The version a record gets once rewritten (even after `version_update_begin`).
pub const fn version_update_end(v: u32) -> u32 {
    v.wrapping_add(1)
}

/// The record a vCPU should see: calibration stamp `tsc` and the clock's scale.
/// `version` is left 0 (the writer sets it).
pub fn time_record(clock: &Clock, tsc: u64, flags: u8) -> VcpuTimeInfo {
    VcpuTimeInfo {
        tsc_timestamp: tsc,
        system_time: clock.system_time_ns(tsc),
        tsc_to_system_mul: clock.scale.mul,
        tsc_shift: clock.scale.shift,
        flags,
        ..VcpuTimeInfo::default()
    }
}

/// Machine address of `vcpu_info[vcpu].time` in the shared_info page `shared_info`;
/// `None` for vCPUs without a slot there (>= 32: they register their own `vcpu_info`).
pub fn vcpu_time_maddr(shared_info: Mfn, vcpu: VcpuId) -> Option<u64> {
    let idx = usize::try_from(vcpu.0).ok()?;
    if idx >= XEN_LEGACY_MAX_VCPUS {
        return None;
    }
    let off = offset_of!(SharedInfo, vcpu_info)
        + idx * size_of::<VcpuInfo>()
        + offset_of!(VcpuInfo, time);
    shared_info.maddr().checked_add(off as u64)
}

fn write_u32<M: MachineMemory>(mem: &M, maddr: u64, v: u32) -> Result<(), BadMaddr> {
    mem.write(maddr, &v.to_le_bytes())
}

fn read_u32<M: MachineMemory>(mem: &M, maddr: u64) -> Result<u32, BadMaddr> {
    let mut b = [0u8; 4];
    mem.read(maddr, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Writes `rec` (its `version` ignored) into the `vcpu_time_info` at `maddr` (in
/// shared_info, a registered `vcpu_info`, or a secondary time area). Unless `force`,
/// nothing is written if the fields there already equal `rec`'s. Returns whether it
/// wrote. Afterwards `version` is even and larger (mod 2^32) than before.
pub fn write_vcpu_time<M: MachineMemory>(
    mem: &M,
    maddr: u64,
    rec: &VcpuTimeInfo,
    force: bool,
) -> Result<bool, BadMaddr> {
    let mut raw = [0u8; size_of::<VcpuTimeInfo>()];
    mem.read(maddr, &mut raw)?;
    let old = VcpuTimeInfo::read_from_bytes(&raw).map_err(|_| BadMaddr(maddr))?;
    let mut new = *rec;
    new.version = old.version;
    if !force && new == old {
        return Ok(false);
    }
    let begin = version_update_begin(old.version);
    new.version = begin;
    let fields = maddr
        .checked_add(VERSION_LEN as u64)
        .ok_or(BadMaddr(maddr))?;
    write_u32(mem, maddr, begin)?;
    // x86 keeps stores in order; this keeps the compiler from reordering them.
    compiler_fence(Ordering::SeqCst);
    mem.write(fields, &new.as_bytes()[VERSION_LEN..])?;
    compiler_fence(Ordering::SeqCst);
    write_u32(mem, maddr, version_update_end(begin))?;
    Ok(true)
}

/// [`write_vcpu_time`] for the slot of `vcpu` inside the shared_info page. `Ok(false)`
/// for a vCPU without a slot there.
pub fn write_shared_vcpu_time<M: MachineMemory>(
    mem: &M,
    shared_info: Mfn,
    vcpu: VcpuId,
    rec: &VcpuTimeInfo,
    force: bool,
) -> Result<bool, BadMaddr> {
    match vcpu_time_maddr(shared_info, vcpu) {
        Some(maddr) => write_vcpu_time(mem, maddr, rec, force),
        None => Ok(false),
    }
}

/// Publishes the wall-clock time at system time 0 (`sec` since 1970, `nsec`; excess
/// nanoseconds carry into seconds) in `shared_info.wc_*` under `wc_version`.
pub fn write_wallclock<M: MachineMemory>(
    mem: &M,
    shared_info: Mfn,
    sec: u64,
    nsec: u32,
) -> Result<(), BadMaddr> {
    let sec = sec.saturating_add(u64::from(nsec) / NS_PER_SEC);
    let nsec = (u64::from(nsec) % NS_PER_SEC) as u32;
    let base = shared_info.maddr();
    let at = |off: u64| base.checked_add(off).ok_or(BadMaddr(base));
    let v = read_u32(mem, at(WC_VERSION)?)?;
    let begin = version_update_begin(v);
    write_u32(mem, at(WC_VERSION)?, begin)?;
    compiler_fence(Ordering::SeqCst);
    write_u32(mem, at(WC_SEC)?, sec as u32)?;
    write_u32(mem, at(WC_NSEC)?, nsec)?;
    write_u32(mem, at(WC_SEC_HI)?, (sec >> 32) as u32)?;
    compiler_fence(Ordering::SeqCst);
    write_u32(mem, at(WC_VERSION)?, version_update_end(begin))
}

/// The wall clock at system time 0, given that the RTC read `rtc_unix_secs` at system
/// time `read_at_ns` (the RTC has whole seconds only, so this is exact to a second).
/// Returns `(sec, nsec)`; a reading taken before 1970 + `read_at_ns` clamps to 0.
pub fn boot_wallclock(rtc_unix_secs: u64, read_at_ns: u64) -> (u64, u32) {
    let total = u128::from(rtc_unix_secs) * u128::from(NS_PER_SEC);
    let at0 = total.saturating_sub(u128::from(read_at_ns));
    let sec = u64::try_from(at0 / u128::from(NS_PER_SEC)).unwrap_or(u64::MAX);
    (sec, (at0 % u128::from(NS_PER_SEC)) as u32)
}
