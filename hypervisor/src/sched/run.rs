//! The run loop: which vCPU the CPU runs next, and how vCPUs block, poll, yield and
//! wake. Policy (who deserves the CPU) is `policy.rs`; this file applies it to the
//! hypervisor's domains, their timers (`time/timers.rs`) and event channels.
//!
//! Every path that leaves a vCPU — yield, block, poll, the end of a slice, the end of a
//! domain — saves its registers and calls [`Hypervisor::schedule`], which asks the policy
//! for the next vCPU, loads it into the entry frame and arms the one-shot timer for the
//! earliest deadline. With nothing runnable it returns [`Resume::Idle`]: the CPU halts
//! until that deadline or an interrupt (no periodic tick while idle).

use super::policy::Vid;
use crate::dlog::{hv_debug, hv_trace};
use crate::domain::runtime::DomainState;
use crate::evtchn::Wakes;
use crate::hv::{Hypervisor, sanitize_for_iret};
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use crate::time::timers::Expired;
use xen_pv_abi::event_channel::Virq;
use xen_pv_abi::{DomId, VcpuId};

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// The running vCPU of domain `idx` (the running domain), as the scheduler and the
    /// timers name it.
    pub(crate) fn vid(&self, idx: usize) -> Vid {
        (self.domains[idx].id, self.cur_vcpu(idx))
    }

    /// Index of domain `dom` in `domains`.
    pub(crate) fn slot_of(&self, dom: DomId) -> Option<usize> {
        self.domains.binary_search_by_key(&dom, |d| d.id).ok()
    }

    /// The slot of domain `dom` if it exists ([`Domain::exists`](crate::domain::Domain::exists)).
    pub(crate) fn existing_slot(&self, dom: DomId) -> Option<usize> {
        self.slot_of(dom).filter(|&t| self.domains[t].exists())
    }

    /// Saves the running vCPU's registers (it is being switched out).
    fn save_current(&mut self, idx: usize, frame: &GuestFrame) {
        self.cur_mut(idx).frame = *frame;
    }

    /// `SCHEDOP_yield`: the running vCPU (registers in `frame`, result already in `rax`)
    /// lets another runnable vCPU go first, if there is one.
    pub(crate) fn yield_current(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        let now = self.now_ns();
        let id = self.vid(idx);
        if let Some(pick) = self.sched.yield_in_place(id, now) {
            // Nobody else wants the CPU: the yielder goes on with a fresh slice, as if
            // `schedule` had picked it again, but nothing of it is saved or reloaded (its
            // registers are in `frame`, its state on the CPU).
            self.timers.set_slice_end(Some(pick.slice_end_ns));
            self.arm_timer();
            return self.enter_current(frame);
        }
        // Someone else may run. Saved, then chosen at the yield's time, whose accounting
        // is settled: the pick settles nothing more.
        self.save_current(idx, frame);
        let pick = self.sched.pick(now);
        self.schedule_from(frame, Some((now, pick)))
    }

    /// The `SCHEDOP_yield` fast path of [`Hypervisor::hypercall`]: what the generic
    /// dispatch does for `sched_op(SCHEDOP_yield)` (result 0, then the yield), without
    /// building a call. The caller checked that the RIP after the `syscall` is one the
    /// generic path would resume at (canonical, not a 32-bit code segment), so its final
    /// check has nothing to do.
    #[inline]
    pub(crate) fn sched_yield_fast(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.cpu.current else {
            return self.no_current_domain();
        };
        // The generic path's trace line, so a trace shows every yield.
        hv_trace!(
            "hypercall d{=u16} nr={=u64} args={:#x} -> {}",
            self.domains[idx].id.0,
            frame.rax,
            [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8],
            "yielded"
        );
        frame.rax = 0;
        self.yield_current(idx, frame)
    }

    /// `SCHEDOP_block`: enables event delivery (as Xen) and waits until an event is
    /// pending for the vCPU; returns at once (into the upcall) if one already is.
    pub(crate) fn block_current(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        self.set_upcall_mask(idx, 0);
        if self.upcall_pending(idx) {
            return self.resume_current();
        }
        self.block_vcpu(idx, frame)
    }

    /// Takes the running vCPU off the CPU until [`Hypervisor::wake_vcpu`].
    pub(crate) fn block_vcpu(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        let id = self.vid(idx);
        self.save_current(idx, frame);
        let now = self.now_ns();
        // It is running, so it is known to the policy.
        let _ = self.sched.block(id, now);
        // Blocked first, then checked (Xen's vcpu_block): an event raised since the
        // caller looked is not lost.
        if self.wake_due(idx, id.1) {
            self.wake_vcpu(id);
        }
        self.schedule(frame)
    }

    /// Whether blocked or polling vCPU `v` of domain `idx` must run again: an upcall is
    /// due (pending and unmasked), or one of the ports it polls is pending.
    fn wake_due(&self, idx: usize, v: VcpuId) -> bool {
        if self.upcall_pending(idx) && self.upcall_mask(idx) == 0 {
            return true;
        }
        let dom = self.domains[idx].id;
        self.domains[idx]
            .vcpu(v)
            .poll
            .as_ref()
            .is_some_and(|ports| {
                ports
                    .iter()
                    .any(|&p| self.evtchn.is_pending(dom, p, &self.mem).unwrap_or(false))
            })
    }

    /// Makes a blocked (or polling) vCPU runnable again.
    pub(crate) fn wake_vcpu(&mut self, id: Vid) {
        let Some(idx) = self.slot_of(id.0) else {
            return;
        };
        if !self.domains[idx].is_runnable() {
            return;
        }
        let on_cpu = self.cpu.current == Some(idx) && self.cpu.vcpu == id.1;
        let paused = self.domains[idx].pause_count > 0;
        let Some(v) = self.domains[idx].vcpu_get_mut(id.1) else {
            return;
        };
        // The vCPU on the CPU is neither blocked nor polling: nothing to wake, and the
        // policy need not be asked (a send to oneself).
        if on_cpu && v.poll.is_none() {
            return;
        }
        let polled = v.poll.take().is_some();
        if paused {
            // Kept off the CPU by the controller: it runs at unpause (control/mod.rs).
            v.wake_on_unpause = true;
        }
        if polled {
            let _ = self.timers.cancel_poll(id);
        }
        if paused {
            return;
        }
        let now = self.now_ns();
        // Waking a vCPU that is not blocked changes nothing.
        let _ = self.sched.wake(id, now);
    }

    /// Acts on what raising an event did: vCPUs whose upcall became pending are woken
    /// (a blocked or polling vCPU returns from its hypercall), and vCPUs polling a port
    /// that became pending too.
    pub(crate) fn apply_wakes(&mut self, wakes: Wakes) {
        if self.wakes_nothing(&wakes) {
            return;
        }
        for id in wakes.upcalls() {
            self.wake_vcpu(id);
        }
        if let Some(dom) = wakes.poll_check() {
            self.check_pollers(dom);
        }
    }

    /// Whether `apply_wakes(wakes)` would change nothing, told cheaply for the common
    /// send to oneself: every upcall is the running vCPU's (`wake_vcpu` leaves a vCPU on
    /// the CPU that does not poll alone) and no vCPU of the running domain polls (so
    /// `check_pollers` finds none). Any other case answers `false` and takes the loop.
    #[inline(always)]
    pub(crate) fn wakes_nothing(&self, wakes: &Wakes) -> bool {
        let Some(idx) = self.cpu.current else {
            return wakes.is_empty();
        };
        let d = &self.domains[idx];
        let poll_dom = wakes.poll_check();
        (poll_dom.is_none() || poll_dom == Some(d.id))
            && wakes.upcalls_only(d.id, self.cpu.vcpu)
            && d.vcpus.iter().all(|v| v.poll.is_none())
    }

    /// Wakes the vCPUs of `dom` that poll a port that is now pending.
    fn check_pollers(&mut self, dom: DomId) {
        let Some(idx) = self.slot_of(dom) else {
            return;
        };
        for i in 0..self.domains[idx].vcpus.len() {
            let v = &self.domains[idx].vcpus[i];
            let Some(ports) = &v.poll else {
                continue;
            };
            let hit = ports
                .iter()
                .any(|&p| self.evtchn.is_pending(dom, p, &self.mem).unwrap_or(false));
            if hit {
                let id = (dom, v.id);
                self.wake_vcpu(id);
            }
        }
    }

    /// Handles every timer that is due: VIRQ_TIMER for guest timers, wake-ups for poll
    /// timeouts. Returns whether the running vCPU's slice ended.
    pub(crate) fn expire_timers(&mut self) -> bool {
        let now = self.now_ns();
        let mut slice_ended = false;
        // Collected first: raising events needs `self` while the queue is borrowed.
        let mut fired = alloc::vec::Vec::new();
        for e in self.timers.expire(now) {
            if fired.try_reserve(1).is_err() {
                break;
            }
            fired.push(e);
        }
        for e in fired {
            match e {
                Expired::VirqTimer(dom, vcpu) => {
                    let wakes = self.evtchn.raise_virq(dom, vcpu, Virq::TIMER.0, &self.mem);
                    self.apply_wakes(wakes);
                }
                Expired::PollTimeout(dom, vcpu) => self.wake_vcpu((dom, vcpu)),
                Expired::SliceEnd => slice_ended = true,
            }
        }
        slice_ended
    }

    /// Chooses the next vCPU and loads it into `frame` (the previous one's registers are
    /// saved, or its domain ended). With no domain left: the final report and `Exit`;
    /// with domains but none runnable: `Idle` until the earliest deadline.
    pub(crate) fn schedule(&mut self, frame: &mut GuestFrame) -> Resume {
        self.schedule_from(frame, None)
    }

    /// [`Self::schedule`], with the policy's first choice already made at system time
    /// `now` (`first`); later rounds (a chosen domain that cannot run) pick again.
    fn schedule_from(
        &mut self,
        frame: &mut GuestFrame,
        mut first: Option<(u64, Option<super::policy::Pick>)>,
    ) -> Resume {
        if let Some(prev) = self.cpu.current.take()
            && prev < self.domains.len()
        {
            // The vCPU that was on the CPU (`cpu.vcpu` still names it).
            let id = (self.domains[prev].id, self.cpu.vcpu);
            self.timers.switch_out(id);
        }
        loop {
            let (now, picked) = match first.take() {
                Some(made) => made,
                None => {
                    let now = self.now_ns();
                    (now, self.sched.pick(now))
                }
            };
            let Some(pick) = picked else {
                if !self.domains.iter().any(|d| d.is_runnable()) {
                    return self.final_report();
                }
                self.arm_timer();
                return Resume::Idle;
            };
            let Some(idx) = self
                .slot_of(pick.id.0)
                .filter(|&i| self.domains[i].is_runnable())
            else {
                // A domain that ended is no longer the policy's (defensive).
                self.sched.remove_domain(pick.id.0);
                continue;
            };
            let v = pick.id.1;
            let Some(next) = self.domains[idx].vcpu_get_mut(v).map(|v| &mut v.frame) else {
                // A vCPU the domain does not have (defensive).
                self.sched.remove_domain(pick.id.0);
                continue;
            };
            // Sanitised where it is saved, then copied once into the entry frame.
            if let Err(why) = sanitize_for_iret(next) {
                let (rip, rsp) = (next.rip, next.rsp);
                self.end_domain(
                    idx,
                    DomainState::Crashed,
                    format_args!("crashed: cannot resume: {why} (rip={rip:#x} rsp={rsp:#x})"),
                );
                continue;
            }
            *frame = *next;
            hv_debug!(
                "switch to d{=u16} rip={=u64:#x} rsp={=u64:#x}",
                self.domains[idx].id.0,
                frame.rip,
                frame.rsp
            );
            self.cpu.current = Some(idx);
            self.cpu.vcpu = v;
            let switched = self.cpu.fpu_owner != Some((idx, v));
            self.load_vcpu_state(idx);
            self.load_guest_gdt(idx, false);
            self.load_guest_ldt(idx, false);
            // Data selectors only change with the vCPU (traps/segments.rs); a failed
            // load may end the domain.
            if switched && !self.load_segments(idx, frame) {
                continue;
            }
            self.refresh_time_if_stale_at(idx, now);
            self.timers.set_slice_end(Some(pick.slice_end_ns));
            // Its periodic timer runs only while it runs; one missed tick is sent now.
            if let Some(Expired::VirqTimer(dom, vcpu)) = self.timers.switch_in(pick.id, now) {
                let wakes = self.evtchn.raise_virq(dom, vcpu, Virq::TIMER.0, &self.mem);
                self.apply_wakes(wakes);
            }
            self.arm_timer();
            // Into its event callback if an upcall is due; a bad guest stack there ends
            // the domain, and the loop picks again (no recursion, however many fail).
            self.deliver_event_upcall(idx, frame);
            if self.cpu.current.is_none() {
                continue;
            }
            return self.resume_current();
        }
    }

    /// Resumes the current vCPU, through its event callback if an upcall is pending and
    /// unmasked. The one place a guest is entered with events: schedule, interrupts and
    /// the slow hypercall path all end here.
    pub(crate) fn enter_current(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.cpu.current else {
            return self.schedule(frame);
        };
        self.deliver_event_upcall(idx, frame);
        if self.cpu.current.is_none() {
            // The upcall could not be delivered (bad guest stack): the domain ended.
            return self.schedule(frame);
        }
        self.resume_current()
    }

    /// Programs the one-shot timer for the earliest deadline: guest timers and the
    /// slice end (nothing is polled). The hardware is left alone when it already holds
    /// that deadline and it has not passed yet (a passed one may have fired and is
    /// programmed again).
    pub(crate) fn arm_timer(&mut self) {
        let deadline = self.timers.earliest();
        match (deadline, self.cpu.timer) {
            (None, None) => return,
            (Some(ns), Some((armed_ns, tsc))) if ns == armed_ns && tsc > self.platform.rdtsc() => {
                return;
            }
            _ => {}
        }
        let tsc = deadline.map(|ns| self.tsc_at_memo(ns));
        self.cpu.timer = deadline.zip(tsc);
        self.platform.set_timer(tsc);
    }

    /// `clock.tsc_at(ns)` (a 128-bit division) remembered for the last two deadlines:
    /// between two vCPUs taking turns the earliest deadline alternates between their
    /// periodic timers.
    fn tsc_at_memo(&mut self, ns: u64) -> u64 {
        if let Some(&(_, tsc)) = self.cpu.tsc_memo.iter().flatten().find(|&&(n, _)| n == ns) {
            return tsc;
        }
        let tsc = self.clock.tsc_at(ns);
        self.cpu.tsc_memo = [Some((ns, tsc)), self.cpu.tsc_memo[0]];
        tsc
    }
}
