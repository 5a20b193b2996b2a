//! `sched_op` (29) and the legacy `sched_op_compat` (6): yield and shutdown.

use super::to_rax;
use crate::domain::runtime::DomainState;
use crate::hv::Hypervisor;
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use guest_abi::Errno;
use guest_abi::sched::{
    SCHEDOP_SHUTDOWN, SCHEDOP_SHUTDOWN_CODE, SCHEDOP_YIELD, SchedShutdown, ShutdownReason,
};

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    pub(crate) fn sched_op(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        let (cmd, arg) = (frame.rdi as u32, frame.rsi);
        let ret = match cmd {
            SCHEDOP_YIELD => return self.sched_yield(idx, frame),
            SCHEDOP_SHUTDOWN => match self.read_shutdown_reason(idx, arg) {
                Ok(reason) => return self.shutdown(idx, reason, frame),
                Err(e) => Err(e),
            },
            SCHEDOP_SHUTDOWN_CODE => self.read_shutdown_reason(idx, arg).map(|reason| {
                // As in Xen, the first recorded code wins.
                let d = &mut self.domains[idx];
                d.shutdown_code.get_or_insert(reason);
                0
            }),
            // BLOCK and POLL come with event channels.
            _ => Err(Errno::ENOSYS),
        };
        frame.rax = to_rax(ret);
        self.resume_current()
    }

    /// The pre-3.0.2 form: the shutdown reason is the argument itself.
    pub(crate) fn sched_op_compat(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        let (cmd, arg) = (frame.rdi as u32, frame.rsi);
        let ret = match cmd {
            SCHEDOP_YIELD => return self.sched_yield(idx, frame),
            SCHEDOP_SHUTDOWN => match u32::try_from(arg).ok().and_then(ShutdownReason::from_u32) {
                Some(reason) => return self.shutdown(idx, reason, frame),
                None => Err(Errno::EINVAL),
            },
            _ => Err(Errno::ENOSYS),
        };
        frame.rax = to_rax(ret);
        self.resume_current()
    }

    fn read_shutdown_reason(&self, idx: usize, arg: u64) -> Result<ShutdownReason, Errno> {
        let s: SchedShutdown = self.read_guest(idx, arg)?;
        ShutdownReason::from_u32(s.reason).ok_or(Errno::EINVAL)
    }

    fn sched_yield(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        frame.rax = 0;
        self.yield_current(idx, frame)
    }

    fn shutdown(&mut self, idx: usize, reason: ShutdownReason, frame: &mut GuestFrame) -> Resume {
        let reason = self.domains[idx].shutdown_code.unwrap_or(reason);
        self.end_domain(
            idx,
            DomainState::Shutdown(reason),
            format_args!("shut down: {}", reason.name()),
        );
        self.run_next(Some(idx), frame)
    }
}
