//! Guest timers and the hypervisor's own deadlines, with Xen 4.17 semantics.
//!
//! Each registered vCPU owns at most [`TIMERS_PER_VCPU`] entries (its single-shot
//! timer, its periodic timer and its `SCHEDOP_poll` timeout); the scheduler owns one
//! more (the slice end). Re-programming a timer replaces its entry, so no guest can
//! grow the queue. The queue is a `BTreeSet<(deadline, key)>`: insert, remove and
//! earliest are O(log n). Two kinds of entries, re-set on every context switch, are kept
//! beside it and merged in by `earliest` and `expire`: the slice end (one value) and
//! the periodic timers, which only run while their vCPU runs, so that at most one per
//! physical CPU is armed (a short unsorted list, with room reserved for every vCPU at
//! registration: no allocation on a switch). Re-arming a timer with the deadline it
//! already has changes nothing. The lead programs the hardware one-shot timer with
//! [`TimerQueue::earliest`] and calls [`TimerQueue::expire`] when it fires.
//!
//! Semantics (Xen `common/sched/core.c`, `common/domain.c`):
//! * `set_timer_op` and `VCPUOP_set_singleshot_timer` program the same single-shot
//!   timer; `set_timer_op(0)` cancels it. `set_timer_op` replaces a negative deadline,
//!   or one 2^50 ns or more ahead, by now + 100 ms (a Linux jiffies-wrap workaround).
//!   `VCPU_SSHOTTMR_future` is ignored: a past deadline fires at once (Xen 4.17.7, which
//!   carries the 4.18 change "ignore VCPU_SSHOTTMR_future"; older 4.17s said `ETIME`).
//! * The periodic timer (10 ms for every new PV vCPU) only runs while its vCPU runs:
//!   [`TimerQueue::switch_out`] disarms it, [`TimerQueue::switch_in`] sends one event
//!   if a period elapsed meanwhile (missed ticks are not queued) and re-arms it.
//! * A single-shot or periodic expiry raises `VIRQ_TIMER` on the vCPU
//!   ([`Expired::VirqTimer`]); a poll timeout wakes the polling vCPU
//!   ([`Expired::PollTimeout`]).

use crate::sched::policy::Vid;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use xen_pv_abi::{DomId, Errno, VcpuId};

/// The period every PV vCPU starts with ("100 Hz ticker").
pub const PV_DEFAULT_PERIOD_NS: u64 = 10_000_000;
/// Shortest period `VCPUOP_set_periodic_timer` accepts.
pub const PERIOD_MIN_NS: u64 = 1_000_000;
/// Longest period `VCPUOP_set_periodic_timer` accepts (Xen's `STIME_DELTA_MAX`).
pub const PERIOD_MAX_NS: u64 = u64::MAX >> 2;
/// `set_timer_op` deadlines this far ahead (or negative) are taken as now + 100 ms.
pub const SET_TIMER_OP_HORIZON_NS: u64 = 1 << 50;
/// What replaces an unreasonable `set_timer_op` deadline, from now.
pub const SET_TIMER_OP_FALLBACK_NS: u64 = 100_000_000;
/// `vcpu_set_singleshot_timer.flags`: once "fail with `ETIME` if the deadline has
/// passed", ignored since Xen 4.17.7 (and here).
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;
/// Queue entries a vCPU can own at once.
pub const TIMERS_PER_VCPU: usize = 3;

/// The timers a vCPU owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// `set_timer_op` / `VCPUOP_set_singleshot_timer`.
    SingleShot,
    /// `VCPUOP_set_periodic_timer`.
    Periodic,
    /// The timeout of a `SCHEDOP_poll`.
    Poll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Vcpu(DomId, VcpuId, TimerKind),
}

/// A deadline that passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// Raise `VIRQ_TIMER` on this vCPU.
    VirqTimer(DomId, VcpuId),
    /// This vCPU's `SCHEDOP_poll` timed out: wake it (the poll returns 0).
    PollTimeout(DomId, VcpuId),
    /// The running vCPU's slice is over: call the scheduler.
    SliceEnd,
}

#[derive(Clone, Copy, Debug, Default)]
struct VcpuTimers {
    single: Option<u64>,
    poll: Option<u64>,
    periodic: Option<u64>,
    /// 0 = periodic timer stopped.
    period: u64,
    last_periodic: u64,
    running: bool,
}

impl VcpuTimers {
    fn slot(&mut self, kind: TimerKind) -> &mut Option<u64> {
        match kind {
            TimerKind::SingleShot => &mut self.single,
            TimerKind::Periodic => &mut self.periodic,
            TimerKind::Poll => &mut self.poll,
        }
    }
}

/// The registered vCPUs' timers, sorted by vCPU: a few entries (one per vCPU of the
/// boot configuration), looked up on every switch, where a binary search over a slice
/// beats walking tree nodes.
#[derive(Debug, Default)]
struct VcpuMap(Vec<(Vid, VcpuTimers)>);

impl VcpuMap {
    fn slot(&self, id: &Vid) -> Result<usize, usize> {
        self.0.binary_search_by_key(id, |&(v, _)| v)
    }
    fn contains_key(&self, id: &Vid) -> bool {
        self.slot(id).is_ok()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, id: &Vid) -> Option<&VcpuTimers> {
        self.slot(id).ok().map(|i| &self.0[i].1)
    }
    fn get_mut(&mut self, id: &Vid) -> Option<&mut VcpuTimers> {
        self.slot(id).ok().map(|i| &mut self.0[i].1)
    }
    /// Adds `id` (`EEXIST` if there, `ENOMEM` if the heap is exhausted).
    fn insert(&mut self, id: Vid, t: VcpuTimers) -> Result<(), Errno> {
        let at = self.slot(&id).err().ok_or(Errno::EEXIST)?;
        self.0.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        self.0.insert(at, (id, t));
        Ok(())
    }
    fn remove(&mut self, id: &Vid) -> Option<VcpuTimers> {
        self.slot(id).ok().map(|i| self.0.remove(i).1)
    }
}

/// Every pending deadline of one physical CPU.
#[derive(Debug, Default)]
pub struct TimerQueue {
    queue: BTreeSet<(u64, Key)>,
    vcpus: VcpuMap,
    slice: Option<u64>,
    /// Armed periodic timers `(deadline, vCPU)`, unsorted (as many as running vCPUs).
    pub(super) periodic: Vec<(u64, Vid)>,
}

impl TimerQueue {
    /// An empty queue.
    pub fn new() -> TimerQueue {
        TimerQueue::default()
    }

    /// Registers a vCPU with Xen's initial PV state: no single-shot timer, a 10 ms
    /// periodic timer (armed once the vCPU is switched in). `EEXIST` if known.
    pub fn add_vcpu(&mut self, id: Vid) -> Result<(), Errno> {
        if self.vcpus.contains_key(&id) {
            return Err(Errno::EEXIST);
        }
        // Room for its periodic entry, so arming it never allocates.
        let want = self.vcpus.len() + 1;
        self.periodic
            .try_reserve(want.saturating_sub(self.periodic.len()))
            .map_err(|_| Errno::ENOMEM)?;
        self.vcpus.insert(
            id,
            VcpuTimers {
                period: PV_DEFAULT_PERIOD_NS,
                ..VcpuTimers::default()
            },
        )
    }

    /// Forgets a vCPU and its timers.
    pub fn remove_vcpu(&mut self, id: Vid) {
        if let Some(mut t) = self.vcpus.remove(&id) {
            for kind in [TimerKind::SingleShot, TimerKind::Poll] {
                if let Some(d) = t.slot(kind).take() {
                    self.queue.remove(&(d, Key::Vcpu(id.0, id.1, kind)));
                }
            }
            self.periodic.retain(|&(_, v)| v != id);
        }
    }

    /// Forgets every vCPU of a domain.
    pub fn remove_domain(&mut self, dom: DomId) {
        self.vcpus.0.retain(|&((d, _), _)| d != dom);
        self.queue
            .retain(|&(_, k)| !matches!(k, Key::Vcpu(d, _, _) if d == dom));
        self.periodic.retain(|&(_, (d, _))| d != dom);
    }

    /// Arms (`Some`) or disarms (`None`) one of `id`'s timers.
    fn program(&mut self, id: Vid, kind: TimerKind, deadline: Option<u64>) -> Result<(), Errno> {
        let t = self.vcpus.get_mut(&id).ok_or(Errno::ENOENT)?;
        let key = Key::Vcpu(id.0, id.1, kind);
        let slot = t.slot(kind);
        if *slot == deadline {
            return Ok(());
        }
        if kind == TimerKind::Periodic {
            *slot = deadline;
            let at = self.periodic.iter().position(|&(_, v)| v == id);
            match (at, deadline) {
                (Some(i), Some(d)) => self.periodic[i].0 = d,
                (Some(i), None) => {
                    self.periodic.swap_remove(i);
                }
                // Room was reserved at add_vcpu: this does not allocate.
                (None, Some(d)) => self.periodic.push((d, id)),
                (None, None) => {}
            }
            return Ok(());
        }
        if let Some(old) = slot.take() {
            self.queue.remove(&(old, key));
        }
        if let Some(d) = deadline {
            self.queue.insert((d, key));
            *slot = Some(d);
        }
        Ok(())
    }

    /// `set_timer_op(timeout)` from vCPU `id` at system time `now`. Always succeeds for
    /// a known vCPU (`ENOENT` otherwise): 0 cancels; a negative value (as `s64`) or one
    /// at least 2^50 ns ahead arms now + 100 ms; anything else (including the past,
    /// which fires at the next `expire`) is the deadline.
    pub fn set_timer_op(&mut self, id: Vid, timeout: u64, now: u64) -> Result<(), Errno> {
        let deadline = if timeout == 0 {
            None
        } else {
            let signed = timeout as i64;
            let ahead = i128::from(signed) - i128::from(now);
            if signed < 0 || ahead >= i128::from(SET_TIMER_OP_HORIZON_NS) {
                Some(now.saturating_add(SET_TIMER_OP_FALLBACK_NS))
            } else {
                Some(timeout)
            }
        };
        self.program(id, TimerKind::SingleShot, deadline)
    }

    /// `VCPUOP_set_singleshot_timer` (the caller checked that `id` is the calling
    /// vCPU, else `EINVAL` as in Xen). The flags are ignored (Xen 4.17.7 ignores
    /// [`VCPU_SSHOTTMR_FUTURE`] too): a deadline before `now`, or negative as Xen's
    /// signed time, is in the past and fires at once.
    pub fn set_singleshot(
        &mut self,
        id: Vid,
        timeout_abs_ns: u64,
        _flags: u32,
        _now: u64,
    ) -> Result<(), Errno> {
        if !self.vcpus.contains_key(&id) {
            return Err(Errno::ENOENT);
        }
        let deadline = if (timeout_abs_ns as i64) < 0 {
            0
        } else {
            timeout_abs_ns
        };
        self.program(id, TimerKind::SingleShot, Some(deadline))
    }

    /// `VCPUOP_stop_singleshot_timer` (and `set_timer_op(0)`).
    pub fn stop_singleshot(&mut self, id: Vid) -> Result<(), Errno> {
        self.program(id, TimerKind::SingleShot, None)
    }

    /// `VCPUOP_set_periodic_timer`: `EINVAL` unless 1 ms <= `period_ns` <= 2^62 - 1 ns.
    /// The period counts from `now`; the timer is armed now if the vCPU is running.
    pub fn set_periodic(&mut self, id: Vid, period_ns: u64, now: u64) -> Result<(), Errno> {
        if !(PERIOD_MIN_NS..=PERIOD_MAX_NS).contains(&period_ns) {
            return Err(Errno::EINVAL);
        }
        self.set_period(id, period_ns, now)
    }

    /// `VCPUOP_stop_periodic_timer`.
    pub fn stop_periodic(&mut self, id: Vid, now: u64) -> Result<(), Errno> {
        self.set_period(id, 0, now)
    }

    fn set_period(&mut self, id: Vid, period: u64, now: u64) -> Result<(), Errno> {
        let t = self.vcpus.get_mut(&id).ok_or(Errno::ENOENT)?;
        t.period = period;
        t.last_periodic = now;
        let arm = (period != 0 && t.running).then(|| now.saturating_add(period));
        self.program(id, TimerKind::Periodic, arm)
    }

    /// The vCPU starts running at `now`: its periodic timer runs again. If a period
    /// elapsed since its last tick, one `VirqTimer` is due now (returned, not queued)
    /// and the next tick is a period from now.
    pub fn switch_in(&mut self, id: Vid, now: u64) -> Option<Expired> {
        let t = self.vcpus.get_mut(&id)?;
        t.running = true;
        if t.period == 0 {
            return None;
        }
        let mut next = t.last_periodic.saturating_add(t.period);
        let mut fired = None;
        if now >= next {
            fired = Some(Expired::VirqTimer(id.0, id.1));
            t.last_periodic = now;
            next = now.saturating_add(t.period);
        }
        self.program(id, TimerKind::Periodic, Some(next)).ok()?;
        fired
    }

    /// The vCPU stops running: its periodic timer pauses (single-shot and poll timers
    /// keep running: they wake a blocked vCPU).
    pub fn switch_out(&mut self, id: Vid) {
        if let Some(t) = self.vcpus.get_mut(&id) {
            t.running = false;
            let _ = self.program(id, TimerKind::Periodic, None);
        }
    }

    /// Arms the timeout of a `SCHEDOP_poll` (absolute; 0 = no timeout, disarms).
    pub fn set_poll_timeout(&mut self, id: Vid, deadline: u64) -> Result<(), Errno> {
        self.program(id, TimerKind::Poll, (deadline != 0).then_some(deadline))
    }

    /// Disarms a poll timeout (the poll ended because an event arrived).
    pub fn cancel_poll(&mut self, id: Vid) -> Result<(), Errno> {
        self.program(id, TimerKind::Poll, None)
    }

    /// Sets (or with `None` clears) the scheduler's slice end.
    pub fn set_slice_end(&mut self, deadline: Option<u64>) {
        self.slice = deadline;
    }

    /// The deadline of one of `id`'s timers, if armed.
    pub fn deadline(&self, id: Vid, kind: TimerKind) -> Option<u64> {
        let t = self.vcpus.get(&id)?;
        match kind {
            TimerKind::SingleShot => t.single,
            TimerKind::Periodic => t.periodic,
            TimerKind::Poll => t.poll,
        }
    }

    /// `id`'s periodic timer period in ns (0 = stopped).
    pub fn period(&self, id: Vid) -> Option<u64> {
        self.vcpus.get(&id).map(|t| t.period)
    }

    /// The earliest pending deadline: what the hardware one-shot timer should fire at.
    pub fn earliest(&self) -> Option<u64> {
        let mut best = self.queue.first().map(|&(d, _)| d);
        for d in self
            .slice
            .into_iter()
            .chain(self.periodic.iter().map(|&(d, _)| d))
        {
            if best.is_none_or(|b| d < b) {
                best = Some(d);
            }
        }
        best
    }

    /// Pending entries (at most `TIMERS_PER_VCPU` per vCPU plus one).
    pub fn len(&self) -> usize {
        self.queue.len() + usize::from(self.slice.is_some()) + self.periodic.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first periodic entry in `(deadline, key)` order, with its index.
    fn first_periodic(&self) -> Option<(usize, (u64, Key))> {
        self.periodic
            .iter()
            .map(|&(d, v)| (d, Key::Vcpu(v.0, v.1, TimerKind::Periodic)))
            .enumerate()
            .min_by_key(|&(_, e)| e)
    }

    /// Takes, in deadline order, every entry due at `now`, re-arming periodic timers a
    /// period after `now` (so each entry fires at most once per call: bounded work).
    pub fn expire(&mut self, now: u64) -> Expire<'_> {
        Expire { q: self, now }
    }

    fn pop_due(&mut self, now: u64) -> Option<Expired> {
        loop {
            // The earliest of the tree and the periodic list, in (deadline, key) order.
            let tree = self.queue.first().copied();
            let periodic = self.first_periodic();
            let first = match (tree, periodic) {
                (Some(t), Some((i, p))) if p < t => Some((Some(i), p)),
                (Some(t), _) => Some((None, t)),
                (None, Some((i, p))) => Some((Some(i), p)),
                (None, None) => None,
            };
            // The slice end goes first among equal deadlines (it sorted first as a key).
            if let Some(s) = self.slice
                && s <= now
                && first.is_none_or(|(_, (d, _))| s <= d)
            {
                self.slice = None;
                return Some(Expired::SliceEnd);
            }
            let (at, (deadline, key)) = first?;
            if deadline > now {
                return None;
            }
            match at {
                Some(i) => {
                    self.periodic.swap_remove(i);
                }
                None => {
                    self.queue.remove(&(deadline, key));
                }
            }
            let Key::Vcpu(dom, vcpu, kind) = key;
            let Some(t) = self.vcpus.get_mut(&(dom, vcpu)) else {
                continue;
            };
            *t.slot(kind) = None;
            return Some(match kind {
                TimerKind::SingleShot => Expired::VirqTimer(dom, vcpu),
                TimerKind::Poll => Expired::PollTimeout(dom, vcpu),
                TimerKind::Periodic => {
                    let next = now.saturating_add(t.period);
                    // `next > now` keeps a saturated clock from re-firing forever.
                    if t.period != 0 && t.running && next > now {
                        t.last_periodic = now;
                        t.periodic = Some(next);
                        // Its entry was just taken out: the room is there.
                        self.periodic.push((next, (dom, vcpu)));
                    }
                    Expired::VirqTimer(dom, vcpu)
                }
            });
        }
    }
}

/// The iterator of [`TimerQueue::expire`].
pub struct Expire<'a> {
    q: &'a mut TimerQueue,
    now: u64,
}

impl Iterator for Expire<'_> {
    type Item = Expired;

    fn next(&mut self) -> Option<Expired> {
        self.q.pop_due(self.now)
    }
}
