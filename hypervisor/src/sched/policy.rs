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
//!   with the smallest virtual time, then its vCPU with the smallest one (ties: the
//!   smaller id).
//! * The run queue is implicit: domains live in a `Vec` sorted by id, each with its
//!   vCPUs in a `Vec`, and `pick` scans them for the least advanced runnable ones. The
//!   lists are as long as the boot configuration made them (guests create no domains
//!   or vCPUs): a handful on one CPU, where scanning a few cache lines is far cheaper
//!   than keeping ordered trees up to date on every switch (no allocation, no node
//!   shuffling). [`Scheduler::yield_in_place`] handles a yield with nobody else
//!   runnable without the re-queueing `pick` does.
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

use alloc::vec::Vec;
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
    id: VcpuId,
    state: RunState,
    vruntime: u64,
}

#[derive(Clone, Debug)]
struct DomEntry {
    id: DomId,
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
    /// Runnable (not running) vCPUs: the domain competes for the CPU if this is not 0
    /// and it is not parked.
    queued: u32,
    /// Its vCPUs, sorted by id.
    vcpus: Vec<VcpuEntry>,
}

impl DomEntry {
    fn budget_ns(&self) -> Option<u64> {
        (self.cap != 0).then(|| u64::from(self.cap).saturating_mul(CAP_PERIOD_NS) / 100)
    }

    /// Whether it competes for the CPU (it would be in a run queue).
    fn eligible(&self) -> bool {
        !self.parked && self.queued != 0
    }

    fn vcpu_slot(&self, v: VcpuId) -> Option<usize> {
        self.vcpus.binary_search_by_key(&v, |e| e.id).ok()
    }

    /// Its two least advanced runnable vCPUs, by `(vruntime, id)`, as indices.
    fn least_two(&self) -> [Option<usize>; 2] {
        let mut best: [Option<usize>; 2] = [None, None];
        let key = |i: usize| (self.vcpus[i].vruntime, self.vcpus[i].id);
        for (i, v) in self.vcpus.iter().enumerate() {
            if v.state != RunState::Runnable {
                continue;
            }
            if best[0].is_none_or(|b| key(i) < key(b)) {
                best[1] = best[0];
                best[0] = Some(i);
            } else if best[1].is_none_or(|b| key(i) < key(b)) {
                best[1] = Some(i);
            }
        }
        best
    }

    /// Raises the vCPU-level floor to the least advanced runnable vCPU (what the queue's
    /// head was in the tree version, looked at whenever the queue changed).
    fn raise_floor(&mut self) {
        if let Some(least) = self
            .vcpus
            .iter()
            .filter(|v| v.state == RunState::Runnable)
            .map(|v| v.vruntime)
            .min()
        {
            self.min_vruntime = self.min_vruntime.max(least);
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Current {
    id: Vid,
    /// Where it is: `doms[di].vcpus[vi]` (kept up to date when the lists change).
    di: usize,
    vi: usize,
    /// Time up to which its CPU use has been charged.
    since: u64,
    slice_end: u64,
}

/// The fair-share scheduler for one physical CPU.
#[derive(Clone, Debug)]
pub struct Scheduler {
    nr_cpus: u32,
    /// Every domain, sorted by id.
    doms: Vec<DomEntry>,
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
    // In 64 bits when it fits (the common case, and the same quotient).
    if let Some(x) = ran_ns.checked_mul(u64::from(DEFAULT_WEIGHT)) {
        return x / u64::from(weight.max(1));
    }
    let w = u128::from(weight.max(1));
    let v = u128::from(ran_ns) * u128::from(DEFAULT_WEIGHT) / w;
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Scheduler {
    /// An empty scheduler; `nr_cpus` only bounds the caps `set_params` accepts.
    pub fn new(nr_cpus: u32) -> Scheduler {
        Scheduler {
            nr_cpus: nr_cpus.max(1),
            doms: Vec::new(),
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

    fn dom_slot(&self, dom: DomId) -> Option<usize> {
        self.doms.binary_search_by_key(&dom, |d| d.id).ok()
    }

    fn dom(&self, dom: DomId) -> Option<&DomEntry> {
        self.dom_slot(dom).map(|i| &self.doms[i])
    }

    /// The domain of `id` and the index of `id` among its vCPUs.
    fn find(&self, id: Vid) -> Option<(usize, usize)> {
        let d = self.dom_slot(id.0)?;
        let v = self.doms[d].vcpu_slot(id.1)?;
        Some((d, v))
    }

    /// Registers a vCPU, Blocked (a new vCPU runs once `wake` is called). If its domain
    /// is new it is created with `weight` (1..=65535) and `cap` (0..=100 * nr_cpus);
    /// for a known domain the parameters are left as they are (use `set_params`).
    /// `EINVAL` for bad parameters, `EEXIST` if the vCPU is already known, `ENOMEM` if
    /// the heap is exhausted.
    pub fn add_vcpu(&mut self, id: Vid, weight: u16, cap: u16) -> Result<(), Errno> {
        self.check_params(weight, cap)?;
        let d = match self.doms.binary_search_by_key(&id.0, |d| d.id) {
            Ok(d) => d,
            Err(at) => {
                self.doms.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
                self.doms.insert(
                    at,
                    DomEntry {
                        id: id.0,
                        weight,
                        cap,
                        vruntime: self.min_vruntime,
                        min_vruntime: 0,
                        used_ns: 0,
                        parked: false,
                        active: 0,
                        queued: 0,
                        vcpus: Vec::new(),
                    },
                );
                at
            }
        };
        let dom = &mut self.doms[d];
        let at = match dom.vcpus.binary_search_by_key(&id.1, |v| v.id) {
            Ok(_) => return Err(Errno::EEXIST),
            Err(at) => at,
        };
        dom.vcpus.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        let vruntime = dom.min_vruntime;
        dom.vcpus.insert(
            at,
            VcpuEntry {
                id: id.1,
                state: RunState::Blocked,
                vruntime,
            },
        );
        self.relocate_current();
        Ok(())
    }

    /// Finds the running vCPU again after the lists changed shape.
    fn relocate_current(&mut self) {
        if let Some(c) = self.current {
            self.current = self.find(c.id).map(|(di, vi)| Current { di, vi, ..c });
        }
    }

    /// The running vCPU's domain index.
    fn current_dom(&self) -> Option<&DomEntry> {
        self.current.map(|c| &self.doms[c.di])
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
        if let Some(i) = self.dom_slot(dom) {
            let d = self.doms.remove(i);
            if d.parked {
                self.parked = self.parked.saturating_sub(1);
            }
            self.relocate_current();
        }
    }

    /// Sets a domain's weight (1..=65535) and cap (0 = none, up to 100 * nr_cpus).
    /// `ESRCH` for an unknown domain, `EINVAL` for values out of range.
    pub fn set_params(&mut self, dom: DomId, weight: u16, cap: u16) -> Result<(), Errno> {
        self.check_params(weight, cap)?;
        let i = self.dom_slot(dom).ok_or(Errno::ESRCH)?;
        let d = &mut self.doms[i];
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
        self.dom(dom).map(|d| (d.weight, d.cap))
    }

    /// What the scheduler thinks `id` is doing.
    pub fn state(&self, id: Vid) -> Option<RunState> {
        self.find(id).map(|(d, v)| self.doms[d].vcpus[v].state)
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
        let (di, vi) = self.find(id).ok_or(Errno::ENOENT)?;
        // Waking a vCPU that is not blocked changes nothing: not even the accounting
        // (the running vCPU's charge is the same whenever it is settled).
        if self.doms[di].vcpus[vi].state != RunState::Blocked {
            return Ok(false);
        }
        self.settle(now);
        let floor = self.min_vruntime.saturating_sub(WAKE_CREDIT_NS);
        let d = &mut self.doms[di];
        if d.active == 0 {
            // The domain was idle: no banking of the time it slept.
            d.vruntime = d.vruntime.max(floor);
        }
        let v = &mut d.vcpus[vi];
        v.vruntime = v
            .vruntime
            .max(d.min_vruntime.saturating_sub(WAKE_CREDIT_NS));
        v.state = RunState::Runnable;
        d.active = d.active.saturating_add(1);
        d.queued = d.queued.saturating_add(1);
        d.raise_floor();
        let (woken_v, parked) = (d.vruntime, d.parked);
        let preempt = match self.current {
            None => !parked,
            Some(c) if c.id.0 == id.0 || parked => false,
            Some(_) => self
                .current_dom()
                .is_some_and(|cd| woken_v.saturating_add(WAKEUP_GRANULARITY_NS) < cd.vruntime),
        };
        Ok(preempt)
    }

    /// Marks a vCPU blocked (it will not be picked until `wake`). If it was running the
    /// CPU is free and the caller picks again.
    pub fn block(&mut self, id: Vid, now: u64) -> Result<(), Errno> {
        self.settle(now);
        let (di, vi) = self.find(id).ok_or(Errno::ENOENT)?;
        let d = &mut self.doms[di];
        match d.vcpus[vi].state {
            RunState::Blocked => return Ok(()),
            RunState::Running => self.current = None,
            RunState::Runnable => {
                d.queued = d.queued.saturating_sub(1);
                d.vcpus[vi].state = RunState::Blocked;
                d.raise_floor();
            }
        }
        d.vcpus[vi].state = RunState::Blocked;
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

    /// `yield_now(id, now)` followed, if nobody else can run, by the `pick` that would
    /// choose `id` again: returns that pick (a fresh slice for the yielder). `None`:
    /// another vCPU may run (or `id` may not: its cap ran out); `yield_now` was done and
    /// the caller calls `pick`. The state afterwards is exactly that of `yield_now` and
    /// `pick`, without the switch around it.
    pub fn yield_in_place(&mut self, id: Vid, now: u64) -> Option<Pick> {
        self.yield_now(id, now);
        let c = self.current.filter(|c| c.id == id)?;
        if self.doms.iter().any(|d| d.eligible()) {
            return None;
        }
        let (di, vi) = (c.di, c.vi);
        if self.doms[di].parked {
            return None;
        }
        // What `pick` does when the yielder is the only candidate: it goes back to the
        // queue (raising the floor to its time), is chosen as the fallback and leaves it.
        let d = &mut self.doms[di];
        let vr = d.vcpus[vi].vruntime;
        d.min_vruntime = d.min_vruntime.max(vr);
        self.update_min();
        self.yielded = None;
        let now = self.last_now;
        let d = &self.doms[di];
        let slice_end = now.saturating_add(Self::slice_of(d));
        self.current = Some(Current {
            since: now,
            slice_end,
            ..c
        });
        Some(Pick {
            id,
            slice_end_ns: slice_end,
        })
    }

    fn slice_of(d: &DomEntry) -> u64 {
        let mut slice = SLICE_NS;
        if let Some(b) = d.budget_ns() {
            slice = slice.min(b.saturating_sub(d.used_ns).max(1));
        }
        slice
    }

    /// Charges the running vCPU up to `now`, puts it back among the runnable ones, and
    /// chooses who runs next (possibly the same vCPU). `None`: nothing can run (all
    /// blocked or parked by their cap); call again at `next_event` or on a wake-up.
    pub fn pick(&mut self, now: u64) -> Option<Pick> {
        self.charge_to(now);
        // The floor is raised below, with the running vCPU back among the queued; while
        // its domain competes that is the same set of candidates, so raising it here too
        // would change nothing (with its domain parked by its cap, it would).
        if self.current.is_none_or(|c| self.doms[c.di].parked) {
            self.update_min();
        }
        let now = self.last_now;
        if let Some(c) = self.current.take() {
            let d = &mut self.doms[c.di];
            d.vcpus[c.vi].state = RunState::Runnable;
            d.queued = d.queued.saturating_add(1);
            d.raise_floor();
        }
        self.update_min();
        let chosen = self.choose();
        self.yielded = None;
        let (id, di, vi) = chosen?;
        let d = &mut self.doms[di];
        let v = &mut d.vcpus[vi];
        v.state = RunState::Running;
        let vr = v.vruntime;
        d.queued = d.queued.saturating_sub(1);
        d.min_vruntime = d.min_vruntime.max(vr);
        d.raise_floor();
        let slice_end_ns = now.saturating_add(Self::slice_of(d));
        self.current = Some(Current {
            id,
            di,
            vi,
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

    /// The two least advanced competing domains, by `(vruntime, id)`, as indices.
    fn least_two_doms(&self) -> [Option<usize>; 2] {
        let mut best: [Option<usize>; 2] = [None, None];
        let key = |i: usize| (self.doms[i].vruntime, self.doms[i].id);
        for (i, d) in self.doms.iter().enumerate() {
            if !d.eligible() {
                continue;
            }
            if best[0].is_none_or(|b| key(i) < key(b)) {
                best[1] = best[0];
                best[0] = Some(i);
            } else if best[1].is_none_or(|b| key(i) < key(b)) {
                best[1] = Some(i);
            }
        }
        best
    }

    /// The least advanced runnable candidate, skipping the yielder if anyone else can
    /// run, with its place (`doms[di].vcpus[vi]`). Looks at no more than two domains
    /// and two vCPUs in each.
    fn choose(&self) -> Option<(Vid, usize, usize)> {
        let mut fallback = None;
        for di in self.least_two_doms().into_iter().flatten() {
            let d = &self.doms[di];
            for vi in d.least_two().into_iter().flatten() {
                let id = (d.id, d.vcpus[vi].id);
                if self.yielded != Some(id) {
                    return Some((id, di, vi));
                }
                fallback.get_or_insert((id, di, vi));
            }
        }
        fallback
    }

    /// Raises the domain-level floor to the least advanced active domain.
    fn update_min(&mut self) {
        let cur = self.current_dom().map(|d| d.vruntime);
        let queued = self
            .doms
            .iter()
            .filter(|d| d.eligible())
            .map(|d| d.vruntime)
            .min();
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
        for d in self.doms.iter_mut() {
            d.vruntime = d.vruntime.saturating_sub(base);
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
            for d in self.doms.iter_mut() {
                d.used_ns = 0;
                d.parked = false;
            }
            self.parked = 0;
        }
        self.period_end.saturating_sub(CAP_PERIOD_NS)
    }

    /// Charges the running vCPU for the time since it was last charged, and rolls the
    /// cap window.
    fn settle(&mut self, now: u64) {
        self.charge_to(now);
        // Keep the floor fresh for wake-ups (it only ever moves forward).
        self.update_min();
    }

    /// `settle` without raising the floor.
    fn charge_to(&mut self, now: u64) {
        let now = now.max(self.last_now);
        self.last_now = now;
        let window_start = self.roll_period(now);
        self.charge_current(now, window_start);
    }

    fn charge_current(&mut self, now: u64, window_start: u64) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        let ran = now.saturating_sub(c.since);
        // Only the part inside the current window counts against the cap.
        let in_window = now.saturating_sub(c.since.max(window_start));
        c.since = now;
        let d = &mut self.doms[c.di];
        let v = &mut d.vcpus[c.vi];
        v.vruntime = v.vruntime.saturating_add(ran);
        d.vruntime = d.vruntime.saturating_add(weighted(ran, d.weight));
        d.used_ns = d.used_ns.saturating_add(in_window);
        if !d.parked && d.budget_ns().is_some_and(|b| d.used_ns >= b) {
            d.parked = true;
            self.parked += 1;
        }
    }

    /// Checks the internal invariants; panics with a description if one is broken.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut running = 0;
        assert!(
            self.doms.windows(2).all(|w| w[0].id < w[1].id),
            "doms unsorted"
        );
        let mut parked = 0;
        for d in &self.doms {
            assert!(
                d.vcpus.windows(2).all(|w| w[0].id < w[1].id),
                "vcpus unsorted"
            );
            let mut queued = 0;
            let mut active = 0;
            for v in &d.vcpus {
                let id = (d.id, v.id);
                match v.state {
                    RunState::Runnable => {
                        queued += 1;
                        active += 1;
                    }
                    RunState::Running => {
                        running += 1;
                        active += 1;
                        assert_eq!(self.current.map(|c| c.id), Some(id));
                        let c = self.current.unwrap();
                        assert_eq!((self.doms[c.di].id, self.doms[c.di].vcpus[c.vi].id), id);
                    }
                    RunState::Blocked => {}
                }
            }
            assert_eq!(d.queued, queued, "{:?} queued count", d.id);
            assert_eq!(d.active, active, "{:?} active count", d.id);
            parked += usize::from(d.parked);
        }
        assert!(running <= 1);
        if running == 0 {
            assert!(self.current.is_none());
        }
        assert_eq!(parked, self.parked);
    }
}
