//! Scheduling: the policy (`policy.rs`: weighted fair share with caps), the run loop
//! (`run.rs`: schedule, block, poll, wake, idle), and the `sched_op` (29) and legacy
//! `sched_op_compat` (6) hypercalls as thin adapters.

pub mod policy;
mod run;

#[cfg(test)]
mod policy_ref;
#[cfg(test)]
mod policy_tests;

use crate::domain::runtime::DomainState;
use crate::hv::Hypervisor;
use crate::hypercall::handle::GuestArray;
use crate::hypercall::handle::{Call, GuestHandle, Outcome, Untyped};
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use alloc::vec::Vec;
use xen_pv_abi::sched::{
    SCHEDOP_BLOCK, SCHEDOP_POLL, SCHEDOP_REMOTE_SHUTDOWN, SCHEDOP_SHUTDOWN, SCHEDOP_SHUTDOWN_CODE,
    SCHEDOP_YIELD, SchedPoll, SchedRemoteShutdown, SchedShutdown, ShutdownReason,
};
use xen_pv_abi::{Errno, EvtchnPort};

/// Most ports one `SCHEDOP_poll` may wait on (Xen's limit).
pub const MAX_POLL_PORTS: u32 = 128;

/// Xen's `SHUTDOWN_CODE_INVALID` as a byte: no shutdown code recorded.
const SHUTDOWN_CODE_NONE: u8 = 0xff;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    pub(crate) fn do_sched_op(
        &mut self,
        call: &mut Call<'_>,
        cmd: u32,
        arg: GuestHandle<Untyped>,
    ) -> Outcome {
        let idx = call.idx;
        let ret = match cmd {
            SCHEDOP_YIELD => return Outcome::Yield,
            // Xen 4.17 shuts down with any code, kept as its low byte.
            SCHEDOP_SHUTDOWN => match self.read_handle(idx, arg.cast::<SchedShutdown>()) {
                Ok(s) => return Outcome::Shutdown(s.reason as u8),
                Err(e) => Err(e),
            },
            SCHEDOP_SHUTDOWN_CODE => self.read_handle(idx, arg.cast::<SchedShutdown>()).map(|s| {
                // As in Xen 4.17: any code is kept as its low byte (0xff is Xen's "none
                // recorded"), the first one recorded wins, and the call succeeds.
                let code = s.reason as u8;
                let d = &mut self.domains[idx];
                if code != SHUTDOWN_CODE_NONE && d.shutdown_code.is_none() {
                    d.shutdown_code = Some(code);
                }
                0
            }),
            SCHEDOP_BLOCK => return Outcome::Block,
            SCHEDOP_POLL => return self.sched_poll(call, arg.cast()),
            SCHEDOP_REMOTE_SHUTDOWN => return self.remote_shutdown(call, arg.cast()),
            _ => Err(Errno::ENOSYS),
        };
        ret.into()
    }

    /// The pre-3.0.2 form: the shutdown reason is the argument itself.
    pub(crate) fn do_sched_op_compat(&mut self, cmd: u32, arg: u64) -> Outcome {
        let ret = match cmd {
            SCHEDOP_YIELD => return Outcome::Yield,
            SCHEDOP_BLOCK => return Outcome::Block,
            // Any code, as its low byte (Xen 4.17).
            SCHEDOP_SHUTDOWN => return Outcome::Shutdown(arg as u8),
            _ => Err(Errno::ENOSYS),
        };
        ret.into()
    }

    /// `SCHEDOP_poll`: returns at once (0) if one of the ports is pending or an upcall is
    /// due; otherwise the vCPU waits for one of them, or for the absolute system time
    /// `timeout` (0: none). Events are not unmasked (unlike block).
    fn sched_poll(&mut self, call: &Call<'_>, arg: GuestHandle<SchedPoll>) -> Outcome {
        let idx = call.idx;
        let poll = match self.read_handle(idx, arg) {
            Ok(p) => p,
            Err(e) => return Outcome::Return(Err(e)),
        };
        if poll.nr_ports > MAX_POLL_PORTS {
            return Outcome::Return(Err(Errno::EINVAL));
        }
        let ports = GuestArray::<EvtchnPort>::new(poll.ports, u64::from(poll.nr_ports));
        let mut list = Vec::new();
        if list.try_reserve_exact(poll.nr_ports as usize).is_err() {
            return Outcome::Return(Err(Errno::ENOMEM));
        }
        let dom = call.dom;
        for i in 0..ports.len() {
            crate::work::step(1);
            let port = match ports.get(i).map(|h| self.read_handle(idx, h)) {
                Some(Ok(p)) => p,
                Some(Err(e)) => return Outcome::Return(Err(e)),
                None => return Outcome::Return(Err(Errno::EFAULT)),
            };
            match self.evtchn.is_pending(dom, port, &self.mem) {
                Ok(true) => return Outcome::Return(Ok(0)),
                Ok(false) => list.push(port),
                Err(e) => return Outcome::Return(Err(e)),
            }
        }
        if self.upcall_pending(idx) && self.upcall_mask(idx) == 0 {
            return Outcome::Return(Ok(0));
        }
        if poll.timeout != 0
            && let Err(e) = self.timers.set_poll_timeout((dom, call.vcpu), poll.timeout)
        {
            return Outcome::Return(Err(e));
        }
        self.domains[idx].vcpu_mut(call.vcpu).poll = Some(list);
        Outcome::Poll
    }

    /// `SCHEDOP_remote_shutdown`, in Xen 4.17's order: the argument (-EFAULT), the
    /// target by its id (-ESRCH: unknown, refused or destroyed; `DOMID_SELF` is no id),
    /// then the permission (-EPERM unless the caller is the control domain, XSM's
    /// default), then the target shuts down with the reason's low byte, whatever it is
    /// (its own recorded code wins); a target that already ended stays as it is (0, as
    /// Xen for a domain shut down but not yet destroyed). The control domain may name
    /// itself.
    fn remote_shutdown(
        &mut self,
        call: &Call<'_>,
        arg: GuestHandle<SchedRemoteShutdown>,
    ) -> Outcome {
        let idx = call.idx;
        let op = match self.read_handle(idx, arg) {
            Ok(op) => op,
            Err(e) => return Outcome::Return(Err(e)),
        };
        let Some(target) = self.existing_slot(op.domain_id) else {
            return Outcome::Return(Err(Errno::ESRCH));
        };
        if !self.domains[idx].dom0 {
            return Outcome::Return(Err(Errno::EPERM));
        }
        if !self.domains[target].is_runnable() {
            return Outcome::Return(Ok(0));
        }
        let code = op.reason as u8;
        if target == idx {
            return Outcome::Shutdown(code);
        }
        let by = call.dom.0;
        self.end_shutdown(target, code, format_args!(" (by d{by})"));
        Outcome::Return(Ok(0))
    }

    /// Ends domain `idx` for a shutdown with Xen's byte `code` (a recorded
    /// shutdown_code wins).
    pub(crate) fn shutdown(&mut self, idx: usize, code: u8, frame: &mut GuestFrame) -> Resume {
        self.end_shutdown(idx, code, format_args!(""));
        self.schedule(frame)
    }

    /// Ends domain `idx` for a shutdown with Xen's byte `code`; a code recorded by
    /// `SCHEDOP_shutdown_code` wins. A code that is no `SHUTDOWN_*` reason ends it as
    /// [`DomainState::ShutdownOther`] (Xen reports it to the toolstack as it is).
    fn end_shutdown(&mut self, idx: usize, code: u8, by: core::fmt::Arguments<'_>) {
        let code = self.domains[idx].shutdown_code.unwrap_or(code);
        match ShutdownReason::from_u32(u32::from(code)) {
            Some(r) => self.end_domain(
                idx,
                DomainState::Shutdown(r),
                format_args!("shut down: {}{by}", r.name()),
            ),
            None => self.end_domain(
                idx,
                DomainState::ShutdownOther(code),
                format_args!("shut down: unknown reason {code}{by}"),
            ),
        }
    }
}
