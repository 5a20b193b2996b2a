//! `sched_op` (29) and the legacy `sched_op_compat` (6): yield and shutdown.

pub mod policy;
#[cfg(test)]
mod policy_tests;

use crate::domain::runtime::DomainState;
use crate::hv::Hypervisor;
use crate::hypercall::handle::{Call, GuestHandle, Outcome, Untyped};
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use guest_abi::Errno;
use guest_abi::sched::{
    SCHEDOP_SHUTDOWN, SCHEDOP_SHUTDOWN_CODE, SCHEDOP_YIELD, SchedShutdown, ShutdownReason,
};

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
            SCHEDOP_SHUTDOWN => match self.read_shutdown_reason(idx, arg.cast()) {
                Ok(reason) => return Outcome::Shutdown(reason),
                Err(e) => Err(e),
            },
            SCHEDOP_SHUTDOWN_CODE => self.read_shutdown_reason(idx, arg.cast()).map(|reason| {
                // As in Xen, the first recorded code wins.
                let d = &mut self.domains[idx];
                d.shutdown_code.get_or_insert(reason);
                0
            }),
            // BLOCK and POLL come with event channels.
            _ => Err(Errno::ENOSYS),
        };
        ret.into()
    }

    /// The pre-3.0.2 form: the shutdown reason is the argument itself.
    pub(crate) fn do_sched_op_compat(&mut self, cmd: u32, arg: u64) -> Outcome {
        let ret = match cmd {
            SCHEDOP_YIELD => return Outcome::Yield,
            SCHEDOP_SHUTDOWN => match u32::try_from(arg).ok().and_then(ShutdownReason::from_u32) {
                Some(reason) => return Outcome::Shutdown(reason),
                None => Err(Errno::EINVAL),
            },
            _ => Err(Errno::ENOSYS),
        };
        ret.into()
    }

    fn read_shutdown_reason(
        &self,
        idx: usize,
        arg: GuestHandle<SchedShutdown>,
    ) -> Result<ShutdownReason, Errno> {
        let s = self.read_handle(idx, arg)?;
        ShutdownReason::from_u32(s.reason).ok_or(Errno::EINVAL)
    }

    /// Ends domain `idx` for a shutdown with `reason` (a recorded shutdown_code wins).
    pub(crate) fn shutdown(
        &mut self,
        idx: usize,
        reason: ShutdownReason,
        frame: &mut GuestFrame,
    ) -> Resume {
        let reason = self.domains[idx].shutdown_code.unwrap_or(reason);
        self.end_domain(
            idx,
            DomainState::Shutdown(reason),
            format_args!("shut down: {}", reason.name()),
        );
        self.run_next(Some(idx), frame)
    }
}
