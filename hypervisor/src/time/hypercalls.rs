//! Time as guests see it: `vcpu_time_info` and the wall clock published in shared_info,
//! and the timer hypercalls — `set_timer_op` (15) and the timer commands of `vcpu_op`
//! (24) — as thin adapters to [`super::timers::TimerQueue`].

use super::pvclock::{time_record, write_shared_vcpu_time, write_wallclock};
use crate::hv::Hypervisor;
use crate::hypercall::HcResult;
use crate::hypercall::handle::{Call, GuestHandle, Untyped};
use crate::platform::{MachineMemory, Platform};
use crate::sched::policy::Vid;
use xen_pv_abi::generated::vcpu_op::*;
use xen_pv_abi::shared_info::XEN_PVCLOCK_TSC_STABLE_BIT;
use xen_pv_abi::{Errno, VcpuId};

/// How often the running vCPU's `vcpu_time_info` is refreshed at the latest (Xen's
/// calibration epoch).
pub const TIME_REFRESH_NS: u64 = 1_000_000_000;

/// Offset of `flags` in `vcpu_set_singleshot_timer` (`timeout_abs_ns` is at 0).
const SINGLESHOT_FLAGS_OFF: u64 = 8;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Refreshes the running vCPU's `vcpu_time_info` in domain `idx`'s shared_info
    /// (Xen's version protocol: odd while the fields change).
    pub(crate) fn publish_time(&mut self, idx: usize) {
        let v = self.cur_vcpu(idx);
        let tsc = self.platform.rdtsc();
        let rec = time_record(&self.clock, tsc, XEN_PVCLOCK_TSC_STABLE_BIT);
        let d = &mut self.domains[idx];
        d.vcpu_mut(v).time_published_ns = Some(rec.system_time);
        // shared_info is the domain's own frame, so this cannot fail; if it did, the
        // guest would merely see a stale clock.
        let _ = write_shared_vcpu_time(&self.mem, d.shared_info, v, &rec, true);
    }

    /// Refreshes the running vCPU's time if it was never published or the last refresh
    /// is older than [`TIME_REFRESH_NS`]. Called on every switch-in and timer tick: the
    /// record (`tsc_timestamp`, `system_time`, scale) describes one linear function of
    /// the TSC that never changes here (constant TSC, `XEN_PVCLOCK_TSC_STABLE_BIT`), so
    /// a published record stays exact; it is refreshed only to keep the TSC delta a
    /// guest scales small (Xen rewrites it on every context switch).
    pub(crate) fn refresh_time_if_stale(&mut self, idx: usize) {
        let now = self.now_ns();
        self.refresh_time_if_stale_at(idx, now);
    }

    /// [`Self::refresh_time_if_stale`] with system time `now` already read.
    pub(crate) fn refresh_time_if_stale_at(&mut self, idx: usize, now: u64) {
        let stale = self
            .cur(idx)
            .time_published_ns
            .is_none_or(|t| now.saturating_sub(t) >= TIME_REFRESH_NS);
        if stale {
            self.publish_time(idx);
        }
    }

    /// Writes the wall clock at system time 0 into domain `idx`'s shared_info.
    pub(crate) fn publish_wallclock(&mut self, idx: usize) {
        let (sec, nsec) = self.wallclock;
        let _ = write_wallclock(&self.mem, self.domains[idx].shared_info, sec, nsec);
    }

    /// Whether a whole `vcpu_guest_context` at guest address `at` of domain `idx` can be
    /// read: one word of each page it touches, and its last one (bounded: at most three
    /// pages; nothing is copied).
    fn context_readable(&self, idx: usize, at: u64) -> HcResult {
        const SIZE: u64 = core::mem::size_of::<xen_pv_abi::vcpu::VcpuGuestContext>() as u64;
        let last = at.checked_add(SIZE - 8).ok_or(Errno::EFAULT)?;
        let mut probe = at;
        while probe < last {
            self.read_guest::<u64>(idx, probe)?;
            probe = (probe | 0xfff).checked_add(1).ok_or(Errno::EFAULT)?;
        }
        self.read_guest::<u64>(idx, last)?;
        Ok(0)
    }

    /// `set_timer_op(timeout)` (15): the calling vCPU `id`'s single-shot timer at
    /// absolute system time `timeout` (0 cancels).
    pub(crate) fn do_set_timer_op(&mut self, id: Vid, timeout: u64) -> HcResult {
        let now = self.now_ns();
        self.timers.set_timer_op(id, timeout, now)?;
        self.arm_timer();
        Ok(0)
    }

    /// `vcpu_op(cmd, vcpuid, arg)` (24): the timer commands, `up` and `is_up`, on the
    /// caller's vCPU `vcpuid`; one it does not have is -ENOENT as in Xen (every domain
    /// has one vCPU, 0, today).
    pub(crate) fn do_vcpu_op(
        &mut self,
        call: &Call<'_>,
        cmd: u32,
        vcpuid: u32,
        arg: GuestHandle<Untyped>,
    ) -> HcResult {
        let idx = call.idx;
        let target = VcpuId(vcpuid);
        if self.domains[idx].vcpu_get(target).is_none() {
            return Err(Errno::ENOENT);
        }
        let id = (call.dom, target);
        let now = self.now_ns();
        let ret = match cmd {
            // Every vCPU here is built and running from boot. Xen 4.17 copies the
            // context in first (-EFAULT if it cannot), then refuses an initialised vCPU
            // with -EEXIST.
            VCPUOP_INITIALISE => self
                .context_readable(idx, arg.addr())
                .and(Err(Errno::EEXIST)),
            // vcpu_info stays in shared_info here; Xen 4.17's argument checks come
            // first: an unreadable argument -EFAULT, an offset whose vcpu_info would
            // cross the page end -ENXIO.
            VCPUOP_REGISTER_VCPU_INFO => {
                // The whole argument (mfn, offset, reserved) is read, as Xen copies it.
                let offset = self.read_handle::<[u32; 4]>(idx, arg.cast())?[2];
                if u64::from(offset) > 4096 - 64 {
                    Err(Errno::ENXIO)
                } else {
                    Err(Errno::ENOSYS)
                }
            }
            VCPUOP_UP => Ok(0),
            VCPUOP_IS_UP => Ok(1),
            VCPUOP_SET_PERIODIC_TIMER => {
                let period = self.read_handle::<u64>(idx, arg.cast())?;
                self.timers.set_periodic(id, period, now).map(|()| 0)
            }
            VCPUOP_STOP_PERIODIC_TIMER => self.timers.stop_periodic(id, now).map(|()| 0),
            VCPUOP_SET_SINGLESHOT_TIMER => {
                let timeout = self.read_handle::<u64>(idx, arg.cast())?;
                let flags_at = arg
                    .addr()
                    .checked_add(SINGLESHOT_FLAGS_OFF)
                    .ok_or(Errno::EFAULT)?;
                let flags = self.read_handle::<u32>(idx, GuestHandle::new(flags_at))?;
                self.timers
                    .set_singleshot(id, timeout, flags, now)
                    .map(|()| 0)
            }
            VCPUOP_STOP_SINGLESHOT_TIMER => self.timers.stop_singleshot(id).map(|()| 0),
            _ => Err(Errno::ENOSYS),
        };
        self.arm_timer();
        ret
    }
}
