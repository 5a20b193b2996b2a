#![allow(dead_code)]
//! The tree-based policy that `policy.rs` replaced, kept for the tests only: the new one
//! must make exactly the same decisions (`policy_tests.rs`).
//!
//! The scheduling policy: weighted fair share between domains, with caps.
//!
//! One physical CPU is shared by vCPUs named `(DomId, VcpuId)`. The policy is two-level
//! weighted fair queueing (virtual time), giving the semantics of Xen's credit
//! scheduler: the **weight** belongs to the domain, so a domain's CPU share is
//! proportional to its weight however many vCPUs it runs; the domain's vCPUs then
//! share its time equally.
//!
//! * Every active domain has a virtual time advanced by `ran_ns * 256 / weight`; among
//!   its vCPUs each has a virtual time advanced by `ran_ns`. `pick` takes the domain
//!   with the smallest virtual time, then its vCPU with the smallest one. Both levels
//!   are `BTreeSet`s of `(vruntime, id)`, so every operation is O(log n).
//! * Sleepers cannot bank time: a domain or vCPU that wakes gets its virtual time
//!   raised to at least `min_vruntime - WAKE_CREDIT_NS`, so it runs soon but cannot
//!   starve the others with the time it spent blocked.
//! * A running vCPU is preempted after [`SLICE_NS`] (the lead programs the one-shot
//!   timer with [`Scheduler::next_event`]).
//! * **Caps** (percent of one CPU; 0 = none) are enforced over [`CAP_PERIOD_NS`]
//!   windows: a slice of a capped domain never extends past its remaining budget, and a
//!   domain whose budget is used is *parked* (out of the run queue) until the next
//!   window starts.
//! * `yield_now` is Xen's yield: at the next `pick` another runnable vCPU runs if
//!   there is one; otherwise the yielder continues.
//!
//! Time is Xen system time in ns. All arithmetic saturates; a `now` older than one seen
//! before is treated as the newest seen (time never runs backwards here).

use alloc::collections::{BTreeMap, BTreeSet};
use xen_pv_abi::{DomId, Errno, VcpuId};

/// A vCPU: its domain and its number there.
pub type Vid = (DomId, VcpuId);

/// Weight of a domain nobody configured (Xen credit's default).
pub const DEFAULT_WEIGHT: u16 = 256;
/// Longest time a vCPU runs before the scheduler reconsiders (Xen credit: 30 ms
/// default `tslice`; we prefer 10 ms for latency on one CPU).
pub const SLICE_NS: u64 = 10_000_000;
/// Window over which caps are enforced (Xen credit's accounting period is 30 ms).
pub const CAP_PERIOD_NS: u64 = 30_000_000;
/// Largest head start (virtual ns) a waking domain or vCPU keeps relative to the
/// least advanced runnable one.
pub const WAKE_CREDIT_NS: u64 = SLICE_NS;
/// A woken domain preempts the running one only if it is this far (virtual ns) behind,
/// so that ping-pong wake-ups don't switch on every event.
pub const WAKEUP_GRANULARITY_NS: u64 = SLICE_NS / 4;
/// Virtual times are shifted back toward 0 once the minimum passes this, so they never
/// saturate however long the machine runs.
const REBASE_AT: u64 = 1 << 62;

/// What a vCPU is doing, as far as the scheduler knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Waiting for an event (or not yet started); never picked.
    Blocked,
    /// Wants the CPU.
    Runnable,
    /// Holds the CPU (the one returned by the last `pick`).
    Running,
}

/// The scheduler's choice: run `id` until at most `slice_end_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// The vCPU to run.
    pub id: Vid,
    /// System time at which the scheduler wants the CPU back.
    pub slice_end_ns: u64,
}

#[derive(Clone, Copy, Debug)]
struct VcpuEntry {
    state: RunState,
    vruntime: u64,
}

#[derive(Debug)]
struct DomEntry {
    weight: u16,
    cap: u16,
    vruntime: u64,
    /// Monotonic floor of the vCPU-level virtual times (wake-up clamp).
    min_vruntime: u64,
    /// CPU time used in the current cap window.
    used_ns: u64,
    parked: bool,
    /// vCPUs that are Runnable or Running.
    active: u32,
    /// Runnable (not running) vCPUs.
    queue: BTreeSet<(u64, VcpuId)>,
    /// This domain's key in the top-level queue, if it is there.
    top_key: Option<u64>,
}

impl DomEntry {
    fn budget_ns(&self) -> Option<u64> {
        (self.cap != 0).then(|| u64::from(self.cap).saturating_mul(CAP_PERIOD_NS) / 100)
    }
}

#[derive(Clone, Copy, Debug)]
struct Current {
    id: Vid,
    /// Time up to which its CPU use has been charged.
    since: u64,
    slice_end: u64,
}

/// The fair-share scheduler for one physical CPU.
#[derive(Debug)]
pub struct Scheduler {
    nr_cpus: u32,
    doms: BTreeMap<DomId, DomEntry>,
    vcpus: BTreeMap<Vid, VcpuEntry>,
    /// Domains that have a queued vCPU and are not parked, by virtual time.
    top: BTreeSet<(u64, DomId)>,
    current: Option<Current>,
    yielded: Option<Vid>,
    /// Monotonic floor of the domain-level virtual times.
    min_vruntime: u64,
    period_end: u64,
    parked: usize,
    last_now: u64,
}

/// `ran_ns * 256 / weight`, saturating.
fn weighted(ran_ns: u64, weight: u16) -> u64 {
    let w = u128::from(weight.max(1));
    let v = u128::from(ran_ns) * u128::from(DEFAULT_WEIGHT) / w;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Puts `d` into the top-level queue or takes it out, as its state now requires.
fn sync_top(top: &mut BTreeSet<(u64, DomId)>, id: DomId, d: &mut DomEntry) {
    let want = (!d.parked && !d.queue.is_empty()).then_some(d.vruntime);
    if want != d.top_key {
        if let Some(k) = d.top_key {
            top.remove(&(k, id));
        }
        if let Some(k) = want {
            top.insert((k, id));
        }
        d.top_key = want;
    }
    if let Some(&(v, _)) = d.queue.first() {
        d.min_vruntime = d.min_vruntime.max(v);
    }
}

impl Scheduler {
    /// An empty scheduler; `nr_cpus` only bounds the caps `set_params` accepts.
    pub fn new(nr_cpus: u32) -> Scheduler {
        Scheduler {
            nr_cpus: nr_cpus.max(1),
            doms: BTreeMap::new(),
            vcpus: BTreeMap::new(),
            top: BTreeSet::new(),
            current: None,
            yielded: None,
            min_vruntime: 0,
            period_end: CAP_PERIOD_NS,
            parked: 0,
            last_now: 0,
        }
    }

    fn check_params(&self, weight: u16, cap: u16) -> Result<(), Errno> {
        let max_cap = self.nr_cpus.saturating_mul(100);
        if weight == 0 || u32::from(cap) > max_cap {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Registers a vCPU, Blocked (a new vCPU runs once `wake` is called). If its domain
    /// is new it is created with `weight` (1..=65535) and `cap` (0..=100 * nr_cpus);
    /// for a known domain the parameters are left as they are (use `set_params`).
    /// `EINVAL` for bad parameters, `EEXIST` if the vCPU is already known.
    pub fn add_vcpu(&mut self, id: Vid, weight: u16, cap: u16) -> Result<(), Errno> {
        self.check_params(weight, cap)?;
        if self.vcpus.contains_key(&id) {
            return Err(Errno::EEXIST);
        }
        let min = self.min_vruntime;
        self.doms.entry(id.0).or_insert_with(|| DomEntry {
            weight,
            cap,
            vruntime: min,
            min_vruntime: 0,
            used_ns: 0,
            parked: false,
            active: 0,
            queue: BTreeSet::new(),
            top_key: None,
        });
        let vruntime = self.doms.get(&id.0).map_or(0, |d| d.min_vruntime);
        self.vcpus.insert(
            id,
            VcpuEntry {
                state: RunState::Blocked,
                vruntime,
            },
        );
        Ok(())
    }

    /// Forgets a domain and all its vCPUs. If one of them was running the CPU is free:
    /// the caller picks again.
    pub fn remove_domain(&mut self, dom: DomId) {
        if self.current.is_some_and(|c| c.id.0 == dom) {
            self.current = None;
        }
        if self.yielded.is_some_and(|y| y.0 == dom) {
            self.yielded = None;
        }
        if let Some(d) = self.doms.remove(&dom) {
            if let Some(k) = d.top_key {
                self.top.remove(&(k, dom));
            }
            if d.parked {
                self.parked = self.parked.saturating_sub(1);
            }
        }
        self.vcpus.retain(|&(d, _), _| d != dom);
    }

    /// Sets a domain's weight (1..=65535) and cap (0 = none, up to 100 * nr_cpus).
    /// `ESRCH` for an unknown domain, `EINVAL` for values out of range.
    pub fn set_params(&mut self, dom: DomId, weight: u16, cap: u16) -> Result<(), Errno> {
        self.check_params(weight, cap)?;
        let d = self.doms.get_mut(&dom).ok_or(Errno::ESRCH)?;
        d.weight = weight;
        d.cap = cap;
        let over = d.budget_ns().is_some_and(|b| d.used_ns >= b);
        if over != d.parked {
            d.parked = over;
            if over {
                self.parked += 1;
            } else {
                self.parked = self.parked.saturating_sub(1);
            }
            sync_top(&mut self.top, dom, d);
        }
        Ok(())
    }

    /// `XEN_DOMCTL_SCHEDOP_putinfo` for the credit scheduler: a weight of 0 and a cap
    /// of 0xffff mean "leave unchanged".
    pub fn put_info(&mut self, dom: DomId, weight: u16, cap: u16) -> Result<(), Errno> {
        let (w0, c0) = self.params(dom).ok_or(Errno::ESRCH)?;
        let w = if weight == 0 { w0 } else { weight };
        let c = if cap == u16::MAX { c0 } else { cap };
        self.set_params(dom, w, c)
    }

    /// A domain's `(weight, cap)`.
    pub fn params(&self, dom: DomId) -> Option<(u16, u16)> {
        self.doms.get(&dom).map(|d| (d.weight, d.cap))
    }

    /// What the scheduler thinks `id` is doing.
    pub fn state(&self, id: Vid) -> Option<RunState> {
        self.vcpus.get(&id).map(|v| v.state)
    }

    /// Whether `id` wants the CPU (runnable or running).
    pub fn is_runnable(&self, id: Vid) -> bool {
        matches!(self.state(id), Some(RunState::Runnable | RunState::Running))
    }

    /// The vCPU the last `pick` chose, unless it blocked or was removed since.
    pub fn current(&self) -> Option<Vid> {
        self.current.map(|c| c.id)
    }

    /// Makes a blocked vCPU runnable. Returns whether it should preempt the running
    /// vCPU (no vCPU is running, or the woken one's domain is well behind the running
    /// one's in virtual time); the caller then calls `pick`.
    pub fn wake(&mut self, id: Vid, now: u64) -> Result<bool, Errno> {
        // Waking a vCPU that is not blocked changes nothing: not even the accounting
        // (the running vCPU's charge is the same whenever it is settled).
        if self.vcpus.get(&id).ok_or(Errno::ENOENT)?.state != RunState::Blocked {
            return Ok(false);
        }
        self.settle(now);
        let v = self.vcpus.get_mut(&id).ok_or(Errno::ENOENT)?;
        let d = self.doms.get_mut(&id.0).ok_or(Errno::ENOENT)?;
        if d.active == 0 {
            // The domain was idle: no banking of the time it slept.
            d.vruntime = d
                .vruntime
                .max(self.min_vruntime.saturating_sub(WAKE_CREDIT_NS));
        }
        v.vruntime = v
            .vruntime
            .max(d.min_vruntime.saturating_sub(WAKE_CREDIT_NS));
        v.state = RunState::Runnable;
        d.active = d.active.saturating_add(1);
        d.queue.insert((v.vruntime, id.1));
        let (woken_v, parked) = (d.vruntime, d.parked);
        sync_top(&mut self.top, id.0, d);
        let preempt = match self.current {
            None => !parked,
            Some(c) if c.id.0 == id.0 || parked => false,
            Some(c) => self
                .doms
                .get(&c.id.0)
                .is_some_and(|cd| woken_v.saturating_add(WAKEUP_GRANULARITY_NS) < cd.vruntime),
        };
        Ok(preempt)
    }

    /// Marks a vCPU blocked (it will not be picked until `wake`). If it was running the
    /// CPU is free and the caller picks again.
    pub fn block(&mut self, id: Vid, now: u64) -> Result<(), Errno> {
        self.settle(now);
        let v = self.vcpus.get_mut(&id).ok_or(Errno::ENOENT)?;
        let d = self.doms.get_mut(&id.0).ok_or(Errno::ENOENT)?;
        match v.state {
            RunState::Blocked => return Ok(()),
            RunState::Running => self.current = None,
            RunState::Runnable => {
                d.queue.remove(&(v.vruntime, id.1));
                sync_top(&mut self.top, id.0, d);
            }
        }
        v.state = RunState::Blocked;
        d.active = d.active.saturating_sub(1);
        if self.yielded == Some(id) {
            self.yielded = None;
        }
        Ok(())
    }

    /// `SCHEDOP_yield` from the running vCPU `id`: at the next `pick`, another runnable
    /// vCPU runs if there is one. Ignored for a vCPU that is not running.
    pub fn yield_now(&mut self, id: Vid, now: u64) {
        self.settle(now);
        if self.current.is_some_and(|c| c.id == id) {
            self.yielded = Some(id);
        }
    }

    /// Charges the running vCPU up to `now`, puts it back among the runnable ones, and
    /// chooses who runs next (possibly the same vCPU). `None`: nothing can run (all
    /// blocked or parked by their cap); call again at `next_event` or on a wake-up.
    pub fn pick(&mut self, now: u64) -> Option<Pick> {
        self.settle(now);
        let now = self.last_now;
        if let Some(c) = self.current.take()
            && let (Some(v), Some(d)) = (self.vcpus.get_mut(&c.id), self.doms.get_mut(&c.id.0))
        {
            v.state = RunState::Runnable;
            d.queue.insert((v.vruntime, c.id.1));
            sync_top(&mut self.top, c.id.0, d);
        }
        self.update_min();
        let chosen = self.choose();
        self.yielded = None;
        let id = chosen?;
        let v = self.vcpus.get_mut(&id)?;
        let d = self.doms.get_mut(&id.0)?;
        d.queue.remove(&(v.vruntime, id.1));
        d.min_vruntime = d.min_vruntime.max(v.vruntime);
        v.state = RunState::Running;
        let mut slice = SLICE_NS;
        if let Some(b) = d.budget_ns() {
            slice = slice.min(b.saturating_sub(d.used_ns).max(1));
        }
        sync_top(&mut self.top, id.0, d);
        let slice_end_ns = now.saturating_add(slice);
        self.current = Some(Current {
            id,
            since: now,
            slice_end: slice_end_ns,
        });
        Some(Pick { id, slice_end_ns })
    }

    /// The next time the scheduler needs the CPU by itself: the running vCPU's slice
    /// end, or the start of the next cap window while a domain is parked. `None`: only
    /// a wake-up can change anything.
    pub fn next_event(&self, now: u64) -> Option<u64> {
        let _ = now;
        let slice = self.current.map(|c| c.slice_end);
        let refill = (self.parked > 0).then_some(self.period_end);
        match (slice, refill) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The least advanced runnable candidate, skipping the yielder if anyone else can
    /// run. Looks at no more than two domains and two vCPUs in each.
    fn choose(&self) -> Option<Vid> {
        let mut fallback = None;
        for &(_, dom) in self.top.iter().take(2) {
            let Some(d) = self.doms.get(&dom) else {
                continue;
            };
            for &(_, vcpu) in d.queue.iter().take(2) {
                let id = (dom, vcpu);
                if self.yielded != Some(id) {
                    return Some(id);
                }
                fallback.get_or_insert(id);
            }
        }
        fallback
    }

    /// Raises the domain-level floor to the least advanced active domain.
    fn update_min(&mut self) {
        let cur = self
            .current
            .and_then(|c| self.doms.get(&c.id.0))
            .map(|d| d.vruntime);
        let queued = self.top.first().map(|&(v, _)| v);
        let least = match (cur, queued) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(l) = least {
            self.min_vruntime = self.min_vruntime.max(l);
        }
        if self.min_vruntime > REBASE_AT {
            self.rebase();
        }
    }

    /// Shifts every domain's virtual time down by the floor (order is kept; domains
    /// far behind clamp at 0, which the wake-up clamp would do anyway).
    fn rebase(&mut self) {
        let base = self.min_vruntime;
        self.top.clear();
        for (&id, d) in self.doms.iter_mut() {
            d.vruntime = d.vruntime.saturating_sub(base);
            d.top_key = None;
            sync_top(&mut self.top, id, d);
        }
        self.min_vruntime = 0;
    }

    /// Starts a new cap window if `now` reached its end: budgets refill, parked domains
    /// return to the queue. Returns the start of the window `now` is in.
    fn roll_period(&mut self, now: u64) -> u64 {
        if now >= self.period_end {
            let behind = (now - self.period_end) / CAP_PERIOD_NS;
            let windows = behind.saturating_add(1);
            self.period_end = self
                .period_end
                .saturating_add(windows.saturating_mul(CAP_PERIOD_NS));
            for (&id, d) in self.doms.iter_mut() {
                d.used_ns = 0;
                if d.parked {
                    d.parked = false;
                    sync_top(&mut self.top, id, d);
                }
            }
            self.parked = 0;
        }
        self.period_end.saturating_sub(CAP_PERIOD_NS)
    }

    /// Charges the running vCPU for the time since it was last charged, and rolls the
    /// cap window.
    fn settle(&mut self, now: u64) {
        let now = now.max(self.last_now);
        self.last_now = now;
        let window_start = self.roll_period(now);
        self.charge_current(now, window_start);
        // Keep the floor fresh for wake-ups (it only ever moves forward).
        self.update_min();
    }

    fn charge_current(&mut self, now: u64, window_start: u64) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        let ran = now.saturating_sub(c.since);
        // Only the part inside the current window counts against the cap.
        let in_window = now.saturating_sub(c.since.max(window_start));
        c.since = now;
        let id = c.id;
        if let Some(v) = self.vcpus.get_mut(&id) {
            v.vruntime = v.vruntime.saturating_add(ran);
        }
        let Some(d) = self.doms.get_mut(&id.0) else {
            return;
        };
        d.vruntime = d.vruntime.saturating_add(weighted(ran, d.weight));
        d.used_ns = d.used_ns.saturating_add(in_window);
        if !d.parked && d.budget_ns().is_some_and(|b| d.used_ns >= b) {
            d.parked = true;
            self.parked += 1;
        }
        sync_top(&mut self.top, id.0, d);
    }

    /// Checks the internal invariants; panics with a description if one is broken.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut running = 0;
        for (&id, v) in &self.vcpus {
            let d = &self.doms[&id.0];
            let queued = d.queue.iter().filter(|&&(_, n)| n == id.1).count();
            match v.state {
                RunState::Runnable => {
                    assert_eq!(queued, 1, "{id:?} runnable but queued {queued} times");
                    assert!(d.queue.contains(&(v.vruntime, id.1)), "{id:?} stale key");
                }
                RunState::Running => {
                    running += 1;
                    assert_eq!(queued, 0, "{id:?} running and queued");
                    assert_eq!(self.current.map(|c| c.id), Some(id));
                }
                RunState::Blocked => assert_eq!(queued, 0, "{id:?} blocked but queued"),
            }
        }
        assert!(running <= 1);
        if running == 0 {
            assert!(self.current.is_none());
        }
        let mut parked = 0;
        for (&id, d) in &self.doms {
            let active = self
                .vcpus
                .range((id, VcpuId(0))..=(id, VcpuId(u32::MAX)))
                .filter(|(_, v)| v.state != RunState::Blocked)
                .count();
            assert_eq!(d.active as usize, active, "{id:?} active count");
            assert_eq!(
                d.queue.len(),
                d.queue
                    .iter()
                    .map(|&(_, n)| n)
                    .collect::<BTreeSet<_>>()
                    .len()
            );
            let want = (!d.parked && !d.queue.is_empty()).then_some(d.vruntime);
            assert_eq!(d.top_key, want, "{id:?} top key");
            if let Some(k) = want {
                assert!(self.top.contains(&(k, id)));
            }
            parked += usize::from(d.parked);
        }
        assert_eq!(
            self.top.len(),
            self.doms.values().filter(|d| d.top_key.is_some()).count()
        );
        assert_eq!(parked, self.parked);
    }
}
