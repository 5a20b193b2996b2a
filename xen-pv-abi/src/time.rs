//! Time: Xen system time from `vcpu_time_info`, the wall clock from `shared_info`, and the
//! per-vCPU timers (`set_timer_op`, `VCPUOP_*_timer`) (`xen-pv-abi.md` §5.1, §9.2, §9.3;
//! `xen-control-plane.md` §6).
//!
//! *System time* is nanoseconds since the host booted, the clock of every timer deadline.
//! The hypervisor publishes, per vCPU, a TSC stamp, the system time at that stamp and the
//! TSC scale; readers use the seqlock protocol: read `version`, the fields and `version`
//! again, and retry while it was odd (update in progress) or changed. The wall clock is
//! the time of day at system time 0, under `wc_version`.
//!
//! The readers take the `shared_info` page as an [`EventMemory`] (see
//! [`crate::events`]) and the TSC as a closure, so that they run in host tests; the
//! `x86_64` conveniences use `rdtsc`.

use crate::errno::Errno;
use crate::events::EventMemory;
use crate::ids::VcpuId;
use crate::shared_info::{SharedInfo, VcpuInfo, VcpuTimeInfo, XEN_LEGACY_MAX_VCPUS};
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `VCPU_SSHOTTMR_future`: fail with `ETIME` if the deadline has passed (Xen up to
/// 4.17.2; 4.17.7 and 4.18+ ignore it).
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;
/// Smallest period `VCPUOP_set_periodic_timer` accepts (1 ms).
pub const MIN_PERIODIC_TIMER_NS: u64 = 1_000_000;
/// Nanoseconds per second.
pub const NSEC_PER_SEC: u64 = 1_000_000_000;

/// Seqlock retries before a reader gives up with `EAGAIN` (the writer holds the record
/// odd for a few hundred cycles; this only guards against a hypervisor that never
/// finishes an update).
const SEQLOCK_RETRIES: u32 = 1 << 20;

/// `struct vcpu_set_singleshot_timer` (`VCPUOP_set_singleshot_timer`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute system time of expiry (ns).
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*` flags.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct vcpu_set_periodic_timer` (`VCPUOP_set_periodic_timer`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct VcpuSetPeriodicTimer {
    /// Period in ns (1 ms ..= 2^62 ns).
    pub period_ns: u64,
}

const_assert_eq!(size_of::<VcpuSetSingleshotTimer>(), 16);
const_assert_eq!(offset_of!(VcpuSetSingleshotTimer, flags), 8);
const_assert_eq!(size_of::<VcpuSetPeriodicTimer>(), 8);

/// A time of day: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallClock {
    /// Seconds since 1970-01-01 00:00 UTC.
    pub sec: u64,
    /// Nanoseconds, `< 1_000_000_000`.
    pub nsec: u32,
}

impl WallClock {
    /// This time plus `ns` nanoseconds; `None` on overflow.
    pub fn checked_add_ns(self, ns: u64) -> Option<WallClock> {
        let total = u64::from(self.nsec).checked_add(ns)?;
        Some(WallClock {
            sec: self.sec.checked_add(total / NSEC_PER_SEC)?,
            nsec: (total % NSEC_PER_SEC) as u32,
        })
    }
}

const TIME: usize = offset_of!(VcpuInfo, time);
const T_VERSION: usize = offset_of!(VcpuTimeInfo, version);
const T_TSC: usize = offset_of!(VcpuTimeInfo, tsc_timestamp);
const T_SYSTEM: usize = offset_of!(VcpuTimeInfo, system_time);
const T_MUL: usize = offset_of!(VcpuTimeInfo, tsc_to_system_mul);
/// `tsc_shift` and `flags` share the `u32` at offset 28 (with `pad1`).
const T_SHIFT_FLAGS: usize = offset_of!(VcpuTimeInfo, tsc_shift);
const_assert_eq!(T_SHIFT_FLAGS % 4, 0);
const_assert_eq!(offset_of!(VcpuTimeInfo, flags), T_SHIFT_FLAGS + 1);
const WC_VERSION: usize = offset_of!(SharedInfo, wc_version);
const WC_SEC: usize = offset_of!(SharedInfo, wc_sec);
const WC_NSEC: usize = offset_of!(SharedInfo, wc_nsec);
const WC_SEC_HI: usize = offset_of!(SharedInfo, wc_sec_hi);

/// Runs `read` under the seqlock at `version_off`: returns its result from a pass during
/// which the version was even and unchanged.
fn seqlock_read<M: EventMemory + ?Sized, T>(
    mem: &M,
    version_off: usize,
    mut read: impl FnMut(&M) -> T,
) -> Result<(T, u32), Errno> {
    for _ in 0..SEQLOCK_RETRIES {
        let v1 = mem.load_u32(version_off);
        if v1 & 1 == 0 {
            // All loads are SeqCst (see `EventMemory`): the field loads cannot move
            // before the first version load nor after the second.
            let value = read(mem);
            if mem.load_u32(version_off) == v1 {
                return Ok((value, v1));
            }
        }
        core::hint::spin_loop();
    }
    Err(Errno::EAGAIN)
}

fn time_info_offset(vcpu: VcpuId) -> Result<usize, Errno> {
    let v = vcpu.0 as usize;
    if v < XEN_LEGACY_MAX_VCPUS {
        Ok(v * size_of::<VcpuInfo>() + TIME)
    } else {
        Err(Errno::EINVAL)
    }
}

fn load_time_info<M: EventMemory + ?Sized>(m: &M, base: usize) -> VcpuTimeInfo {
    let shift_flags = m.load_u32(base + T_SHIFT_FLAGS).to_le_bytes();
    VcpuTimeInfo {
        version: 0,
        pad0: 0,
        tsc_timestamp: m.load_u64(base + T_TSC),
        system_time: m.load_u64(base + T_SYSTEM),
        tsc_to_system_mul: m.load_u32(base + T_MUL),
        tsc_shift: shift_flags[0] as i8,
        flags: shift_flags[1],
        pad1: [shift_flags[2], shift_flags[3]],
    }
}

/// A consistent copy of `vcpu_info[vcpu].time` (with the even `version` it was read at).
/// `EINVAL` for a vCPU without a slot in `shared_info`, `EAGAIN` if the record never
/// became stable.
pub fn read_time_info<M: EventMemory + ?Sized>(
    shared_info: &M,
    vcpu: VcpuId,
) -> Result<VcpuTimeInfo, Errno> {
    let base = time_info_offset(vcpu)?;
    let (mut info, version) =
        seqlock_read(shared_info, base + T_VERSION, |m| load_time_info(m, base))?;
    info.version = version;
    Ok(info)
}

/// Current system time (ns) of `vcpu`, with `read_tsc` called inside the seqlock so that
/// the TSC value and the record belong together.
///
/// ```
/// use xen_pv_abi::events::{AtomicPage, EventMemory};
/// use xen_pv_abi::time::system_time_ns_with;
/// use xen_pv_abi::VcpuId;
///
/// let shared_info = AtomicPage::new();
/// shared_info.store_u32(32, 2); // vcpu_info[0].time.version
/// shared_info.store_u64(40, 1_000); // tsc_timestamp
/// shared_info.store_u64(48, 5_000_000); // system_time
/// shared_info.store_u32(56, 0x8000_0000); // tsc_to_system_mul: 1 ns per tick...
/// shared_info.store_u32(60, 1); // ...with tsc_shift 1
/// let now = system_time_ns_with(&shared_info, VcpuId(0), || 3_000).unwrap();
/// assert_eq!(now, 5_002_000);
/// ```
pub fn system_time_ns_with<M: EventMemory + ?Sized>(
    shared_info: &M,
    vcpu: VcpuId,
    mut read_tsc: impl FnMut() -> u64,
) -> Result<u64, Errno> {
    let base = time_info_offset(vcpu)?;
    let ((info, tsc), _) = seqlock_read(shared_info, base + T_VERSION, |m| {
        (load_time_info(m, base), read_tsc())
    })?;
    Ok(info.system_time_at(tsc))
}

/// The wall clock at system time 0 (`wc_sec_hi:wc_sec`, `wc_nsec`) under `wc_version`.
pub fn read_wallclock<M: EventMemory + ?Sized>(shared_info: &M) -> Result<WallClock, Errno> {
    let ((lo, hi, nsec), _) = seqlock_read(shared_info, WC_VERSION, |m| {
        (
            m.load_u32(WC_SEC),
            m.load_u32(WC_SEC_HI),
            m.load_u32(WC_NSEC),
        )
    })?;
    // A hypervisor bug must not produce nsec ≥ 1e9: normalise through checked_add_ns.
    WallClock {
        sec: (u64::from(hi) << 32) | u64::from(lo),
        nsec: 0,
    }
    .checked_add_ns(u64::from(nsec))
    .ok_or(Errno::EOVERFLOW)
}

/// Time of day now: the wall clock plus the current system time of `vcpu`.
pub fn wallclock_now_with<M: EventMemory + ?Sized>(
    shared_info: &M,
    vcpu: VcpuId,
    read_tsc: impl FnMut() -> u64,
) -> Result<WallClock, Errno> {
    let base = read_wallclock(shared_info)?;
    let now = system_time_ns_with(shared_info, vcpu, read_tsc)?;
    base.checked_add_ns(now).ok_or(Errno::EOVERFLOW)
}

/// The TSC, ordered after earlier loads (`lfence; rdtsc`).
#[cfg(target_arch = "x86_64")]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: `lfence` and `rdtsc` only read the time-stamp counter (a PV guest kernel may
    // execute `rdtsc`; Xen leaves CR4.TSD clear for PV guests unless configured to
    // emulate it, in which case it is emulated); no memory is accessed.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi,
                         options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Current Xen system time (ns) of `vcpu` (the calling vCPU) from `shared_info`.
///
/// ```no_run
/// use xen_pv_abi::events::AtomicPage;
/// use xen_pv_abi::VcpuId;
/// # let shared_info_va = 0usize as *mut u8;
/// // SAFETY (example): shared_info is mapped at `shared_info_va` for good.
/// let shared_info = unsafe { AtomicPage::from_ptr(shared_info_va) };
/// let now = xen_pv_abi::time::system_time_ns(shared_info, VcpuId(0)).unwrap();
/// // Wake up in 10 ms (VIRQ_TIMER must be bound to see it).
/// xen_pv_abi::time::set_timer(now + 10_000_000).unwrap();
/// xen_pv_abi::sched::block().unwrap();
/// ```
#[cfg(target_arch = "x86_64")]
pub fn system_time_ns<M: EventMemory + ?Sized>(
    shared_info: &M,
    vcpu: VcpuId,
) -> Result<u64, Errno> {
    system_time_ns_with(shared_info, vcpu, rdtsc)
}

/// Time of day now, read on `vcpu` (the calling vCPU).
#[cfg(target_arch = "x86_64")]
pub fn wallclock_now<M: EventMemory + ?Sized>(
    shared_info: &M,
    vcpu: VcpuId,
) -> Result<WallClock, Errno> {
    wallclock_now_with(shared_info, vcpu, rdtsc)
}

#[cfg(target_arch = "x86_64")]
pub use self::calls::*;

#[cfg(target_arch = "x86_64")]
mod calls {
    use super::{VCPU_SSHOTTMR_FUTURE, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer};
    use crate::errno::Errno;
    use crate::generated::call_on;
    use crate::generated::vcpu_op::{
        VCPUOP_SET_PERIODIC_TIMER, VCPUOP_SET_SINGLESHOT_TIMER, VCPUOP_STOP_PERIODIC_TIMER,
        VCPUOP_STOP_SINGLESHOT_TIMER,
    };
    use crate::ids::VcpuId;
    use crate::transport::{Native, Transport};

    /// `set_timer_op(deadline_ns)`: one-shot timer of the calling vCPU at absolute system
    /// time `deadline_ns`; expiry raises `VIRQ_TIMER`. A past deadline fires at once. Use
    /// [`cancel_timer`] rather than a deadline of 0.
    pub fn set_timer(deadline_ns: u64) -> Result<(), Errno> {
        set_timer_on(&Native, deadline_ns)
    }

    /// [`set_timer`] through `t`.
    pub fn set_timer_on<T: Transport + ?Sized>(t: &T, deadline_ns: u64) -> Result<(), Errno> {
        // SAFETY: set_timer_op takes no pointer.
        Errno::check(unsafe { call_on::set_timer_op(t, deadline_ns) }).map(drop)
    }

    /// `set_timer_op(0)`: cancels the one-shot timer of the calling vCPU.
    pub fn cancel_timer() -> Result<(), Errno> {
        cancel_timer_on(&Native)
    }

    /// [`cancel_timer`] through `t`.
    pub fn cancel_timer_on<T: Transport + ?Sized>(t: &T) -> Result<(), Errno> {
        // SAFETY: as in `set_timer`.
        Errno::check(unsafe { call_on::set_timer_op(t, 0) }).map(drop)
    }

    /// `VCPUOP_set_singleshot_timer`: one-shot timer of `vcpu` (must be the calling
    /// vCPU) at `deadline_ns`, the same timer as [`set_timer`]. With `future_only`, Xen
    /// up to 4.17.2 fails with `ETIME` for a past deadline; 4.17.7 and 4.18+ ignore the
    /// flag and fire it at once.
    pub fn set_singleshot_timer(
        vcpu: VcpuId,
        deadline_ns: u64,
        future_only: bool,
    ) -> Result<(), Errno> {
        set_singleshot_timer_on(&Native, vcpu, deadline_ns, future_only)
    }

    /// [`set_singleshot_timer`] through `t`.
    pub fn set_singleshot_timer_on<T: Transport + ?Sized>(
        t: &T,
        vcpu: VcpuId,
        deadline_ns: u64,
        future_only: bool,
    ) -> Result<(), Errno> {
        let mut arg = VcpuSetSingleshotTimer {
            timeout_abs_ns: deadline_ns,
            flags: if future_only { VCPU_SSHOTTMR_FUTURE } else { 0 },
            pad: 0,
        };
        // SAFETY: the hypervisor reads the 16-byte argument, which lives across the call.
        let ret = unsafe {
            call_on::vcpu_op(
                t,
                VCPUOP_SET_SINGLESHOT_TIMER,
                vcpu.0,
                core::ptr::from_mut(&mut arg).cast(),
            )
        };
        Errno::check(ret).map(drop)
    }

    /// `VCPUOP_stop_singleshot_timer` for `vcpu` (the calling vCPU).
    pub fn stop_singleshot_timer(vcpu: VcpuId) -> Result<(), Errno> {
        stop_singleshot_timer_on(&Native, vcpu)
    }

    /// [`stop_singleshot_timer`] through `t`.
    pub fn stop_singleshot_timer_on<T: Transport + ?Sized>(
        t: &T,
        vcpu: VcpuId,
    ) -> Result<(), Errno> {
        // SAFETY: the command takes no argument buffer.
        let ret = unsafe {
            call_on::vcpu_op(
                t,
                VCPUOP_STOP_SINGLESHOT_TIMER,
                vcpu.0,
                core::ptr::null_mut(),
            )
        };
        Errno::check(ret).map(drop)
    }

    /// `VCPUOP_set_periodic_timer`: a `VIRQ_TIMER` every `period_ns` on `vcpu`
    /// (1 ms ..= 2^62 ns, else `EINVAL`). PV vCPUs start with a 10 ms period.
    pub fn set_periodic_timer(vcpu: VcpuId, period_ns: u64) -> Result<(), Errno> {
        set_periodic_timer_on(&Native, vcpu, period_ns)
    }

    /// [`set_periodic_timer`] through `t`.
    pub fn set_periodic_timer_on<T: Transport + ?Sized>(
        t: &T,
        vcpu: VcpuId,
        period_ns: u64,
    ) -> Result<(), Errno> {
        let mut arg = VcpuSetPeriodicTimer { period_ns };
        // SAFETY: the hypervisor reads the 8-byte argument, which lives across the call.
        let ret = unsafe {
            call_on::vcpu_op(
                t,
                VCPUOP_SET_PERIODIC_TIMER,
                vcpu.0,
                core::ptr::from_mut(&mut arg).cast(),
            )
        };
        Errno::check(ret).map(drop)
    }

    /// `VCPUOP_stop_periodic_timer` for `vcpu`.
    pub fn stop_periodic_timer(vcpu: VcpuId) -> Result<(), Errno> {
        stop_periodic_timer_on(&Native, vcpu)
    }

    /// [`stop_periodic_timer`] through `t`.
    pub fn stop_periodic_timer_on<T: Transport + ?Sized>(t: &T, vcpu: VcpuId) -> Result<(), Errno> {
        // SAFETY: the command takes no argument buffer.
        let ret = unsafe {
            call_on::vcpu_op(t, VCPUOP_STOP_PERIODIC_TIMER, vcpu.0, core::ptr::null_mut())
        };
        Errno::check(ret).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::AtomicPage;
    use core::cell::Cell;

    /// `shared_info` whose time and wall-clock versions read odd, then change, before they
    /// settle: a hypervisor updating the records while the guest reads them.
    struct Updating<'a> {
        page: &'a AtomicPage,
        version_loads: Cell<u32>,
        /// Versions returned for the first loads of the version word, then the page's.
        script: &'a [u32],
        version_off: usize,
    }

    impl EventMemory for Updating<'_> {
        fn size(&self) -> usize {
            self.page.size()
        }
        fn load_u32(&self, off: usize) -> u32 {
            if off == self.version_off {
                let n = self.version_loads.get();
                self.version_loads.set(n + 1);
                if let Some(v) = self.script.get(n as usize) {
                    return *v;
                }
            }
            self.page.load_u32(off)
        }
        fn load_u8(&self, off: usize) -> u8 {
            self.page.load_u8(off)
        }
        fn store_u8(&self, off: usize, v: u8) {
            self.page.store_u8(off, v)
        }
        fn store_u32(&self, off: usize, v: u32) {
            self.page.store_u32(off, v)
        }
        fn swap_u32(&self, off: usize, v: u32) -> u32 {
            self.page.swap_u32(off, v)
        }
        fn compare_exchange_u32(&self, off: usize, c: u32, n: u32) -> Result<u32, u32> {
            self.page.compare_exchange_u32(off, c, n)
        }
        fn fetch_or_u32(&self, off: usize, v: u32) -> u32 {
            self.page.fetch_or_u32(off, v)
        }
        fn fetch_and_u32(&self, off: usize, v: u32) -> u32 {
            self.page.fetch_and_u32(off, v)
        }
        fn load_u64(&self, off: usize) -> u64 {
            self.page.load_u64(off)
        }
        fn store_u64(&self, off: usize, v: u64) {
            self.page.store_u64(off, v)
        }
        fn swap_u64(&self, off: usize, v: u64) -> u64 {
            self.page.swap_u64(off, v)
        }
        fn fetch_or_u64(&self, off: usize, v: u64) -> u64 {
            self.page.fetch_or_u64(off, v)
        }
        fn fetch_and_u64(&self, off: usize, v: u64) -> u64 {
            self.page.fetch_and_u64(off, v)
        }
    }

    fn time_page(vcpu: usize) -> AtomicPage {
        let page = AtomicPage::new();
        let info = VcpuTimeInfo {
            version: 4,
            pad0: 0,
            tsc_timestamp: 1_000,
            system_time: 7_000_000_000,
            tsc_to_system_mul: 0x8000_0000, // 0.5 ns per (unshifted) tick
            tsc_shift: -1,
            flags: 1,
            pad1: [0; 2],
        };
        page.write_bytes(vcpu * 64 + TIME, info.as_bytes());
        page
    }

    #[test]
    fn time_record_read_retries_while_odd_or_changed() {
        let page = time_page(3);
        let version_off = 3 * 64 + TIME;
        // odd (skipped), then 2 → 4 (changed during the read), then 4 → 4.
        let mem = Updating {
            page: &page,
            version_loads: Cell::new(0),
            script: &[3, 2],
            version_off,
        };
        let mut tsc_reads = 0;
        let now = system_time_ns_with(&mem, VcpuId(3), || {
            tsc_reads += 1;
            9_000
        })
        .unwrap();
        // (9000 - 1000) >> 1 = 4000 ticks * 0.5 ns = 2000 ns.
        assert_eq!(now, 7_000_002_000);
        assert_eq!(mem.version_loads.get(), 5, "odd, changed, then stable");
        assert_eq!(tsc_reads, 2, "the TSC is re-read with each attempt");

        let info = read_time_info(&page, VcpuId(3)).unwrap();
        assert_eq!(info.version, 4);
        assert_eq!(info.tsc_shift, -1);
        assert_eq!(info.flags, 1);
        assert_eq!(info.system_time, 7_000_000_000);
    }

    #[test]
    fn a_record_that_stays_odd_is_an_error() {
        let page = time_page(0);
        page.store_u32(TIME, 5);
        assert_eq!(read_time_info(&page, VcpuId(0)), Err(Errno::EAGAIN));
        assert_eq!(read_time_info(&page, VcpuId(32)), Err(Errno::EINVAL));
    }

    #[test]
    fn wallclock_under_its_version() {
        let page = time_page(0);
        page.store_u32(WC_VERSION, 6);
        page.store_u32(WC_SEC, 0x0000_0010);
        page.store_u32(WC_SEC_HI, 1);
        page.store_u32(WC_NSEC, 900_000_000);
        let mem = Updating {
            page: &page,
            version_loads: Cell::new(0),
            script: &[7, 4],
            version_off: WC_VERSION,
        };
        let base = read_wallclock(&mem).unwrap();
        assert_eq!(mem.version_loads.get(), 5);
        assert_eq!(
            base,
            WallClock {
                sec: (1 << 32) + 0x10,
                nsec: 900_000_000
            }
        );
        // + 7.0000002 s of system time: nanoseconds carry into seconds.
        let now = wallclock_now_with(&page, VcpuId(0), || 1_400).unwrap();
        assert_eq!(
            now,
            WallClock {
                sec: (1 << 32) + 0x10 + 7,
                nsec: 900_000_100
            }
        );
        let now = wallclock_now_with(&page, VcpuId(0), || 1_000 + 400_000_000).unwrap();
        assert_eq!(now.sec, (1 << 32) + 0x10 + 8);
        assert_eq!(now.nsec, 0);
    }

    #[test]
    fn wallclock_arithmetic_is_checked() {
        let t = WallClock {
            sec: u64::MAX,
            nsec: 999_999_999,
        };
        assert_eq!(t.checked_add_ns(0), Some(t));
        assert_eq!(t.checked_add_ns(1), None);
        let page = AtomicPage::new();
        page.store_u32(WC_NSEC, u32::MAX); // out of range: normalised, not trusted
        assert_eq!(
            read_wallclock(&page).unwrap(),
            WallClock {
                sec: 4,
                nsec: 294_967_295
            }
        );
    }
}
