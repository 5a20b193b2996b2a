//! `event_channel_op` (32): only `EVTCHNOP_send`, the kick of the console and xenstore
//! rings. There are no real event channels yet: the console backend drains on the kick,
//! and the hypervisor's xenstore answers the queued requests on its kick.

mod fifo;
pub mod table;
#[cfg(test)]
mod tests;
mod two_level;

pub use table::{
    Caller, Channel, ChannelState, DEFAULT_MAX_PORT, DomainEvtchn, EVTCHNS_PER_BUCKET,
    EventChannels, MAX_VCPUS, SendOutcome, Wakes,
};

use crate::hv::{Hypervisor, console_ring_crash};
use crate::hypercall::handle::{Call, GuestHandle, Outcome, Untyped};
use crate::platform::{MachineMemory, Platform};
use guest_abi::Errno;
use guest_abi::event_channel::{EVTCHNOP_SEND, EvtchnSend};

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    pub(crate) fn do_event_channel_op(
        &mut self,
        call: &mut Call<'_>,
        cmd: u32,
        arg: GuestHandle<Untyped>,
    ) -> Outcome {
        let idx = call.idx;
        let ret = match cmd {
            EVTCHNOP_SEND => match self.read_handle::<EvtchnSend>(idx, arg.cast()) {
                Err(e) => Err(e),
                Ok(send) => {
                    let d = &self.domains[idx];
                    if d.console_ring.is_some_and(|(_, port)| port == send.port) {
                        if let Err(e) = self.drain_console(idx) {
                            return Outcome::Crash(console_ring_crash(e));
                        }
                        Ok(0)
                    } else if d.store_ring.is_some_and(|(_, port)| port == send.port) {
                        // The kick of the hypervisor's xenstore: answer what is queued.
                        if let Err(e) = self.service_xenstore(idx) {
                            return Outcome::Crash(e.crash_reason());
                        }
                        Ok(0)
                    } else {
                        // Xen's answer for a port that is not bound.
                        Err(Errno::EINVAL)
                    }
                }
            },
            _ => Err(Errno::ENOSYS),
        };
        ret.into()
    }
}
