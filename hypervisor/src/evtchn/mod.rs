//! Event channels: the hypervisor's table of every domain's ports (`table.rs`), the two
//! delivery ABIs (`two_level.rs`: shared_info bitmaps; `fifo.rs`: guest event arrays and
//! per-vCPU queues), and the `event_channel_op` hypercall (32, and the pre-3.2 form 16)
//! as a thin adapter from the generated typed arguments to the table.
//!
//! Path of an event: `send(p)` looks up the caller's channel `p`; an interdomain channel
//! raises the peer's port on the peer's notify vCPU, an IPI its own (the guests' console
//! and xenstore backends are the control domain's: a domU's ring ports are interdomain
//! channels to it). Raising goes through the receiving domain's
//! ABI and returns [`Wakes`]: the vCPUs whose `evtchn_upcall_pending` went 0 -> 1, which
//! the scheduler unblocks, and whether pollers must re-check their ports. When such a
//! vCPU next runs with events unmasked, the trap layer bounces it into its event
//! callback (`traps/mod.rs`, `deliver_event_upcall`).

mod fifo;
pub mod table;
#[cfg(test)]
mod tests;
mod two_level;

pub use table::{
    Caller, Channel, ChannelState, DEFAULT_MAX_PORT, DomainEvtchn, EVTCHNS_PER_BUCKET,
    EventChannels, MAX_VCPUS, SendOutcome, Wakes,
};

use crate::dlog::hv_trace;
use crate::hv::Hypervisor;
use crate::hypercall::handle::{Call, GuestHandle, Outcome, Untyped};
use crate::hypercall::{HcResult, to_rax};
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use xen_pv_abi::event_channel::*;
use xen_pv_abi::{Errno, EvtchnPort, VcpuId, nr};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

/// Where the argument of the legacy hypercall 16 (`struct evtchn_op { u32 cmd; union }`)
/// keeps the sub-operation's struct.
const COMPAT_ARG_OFFSET: u64 = 4;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// The calling side of an event-channel operation: the vCPU that made `call`.
    pub(crate) fn evtchn_caller(&self, call: &Call<'_>) -> Caller {
        Caller {
            dom: call.dom,
            vcpu: call.vcpu,
            privileged: self.domains[call.idx].dom0,
        }
    }

    /// `event_channel_op(cmd, arg)` (32).
    pub(crate) fn do_event_channel_op(
        &mut self,
        call: &mut Call<'_>,
        cmd: u32,
        arg: GuestHandle<Untyped>,
    ) -> Outcome {
        let idx = call.idx;
        let caller = self.evtchn_caller(call);
        let ret = match cmd {
            EVTCHNOP_ALLOC_UNBOUND => {
                self.evtchn_inout(idx, arg, |hv, op: &mut EvtchnAllocUnbound| {
                    op.port = hv
                        .evtchn
                        .alloc_unbound(&caller, op.dom, op.remote_dom, &hv.mem)?;
                    Ok(())
                })
            }
            EVTCHNOP_BIND_INTERDOMAIN => {
                self.evtchn_inout(idx, arg, |hv, op: &mut EvtchnBindInterdomain| {
                    let (port, wakes) = hv.evtchn.bind_interdomain(
                        &caller,
                        op.remote_dom,
                        op.remote_port,
                        &hv.mem,
                    )?;
                    op.local_port = port;
                    hv.apply_wakes(wakes);
                    Ok(())
                })
            }
            EVTCHNOP_BIND_VIRQ => self.evtchn_inout(idx, arg, |hv, op: &mut EvtchnBindVirq| {
                op.port = hv
                    .evtchn
                    .bind_virq(&caller, op.virq, VcpuId(op.vcpu), &hv.mem)?;
                Ok(())
            }),
            EVTCHNOP_BIND_IPI => self.evtchn_inout(idx, arg, |hv, op: &mut EvtchnBindIpi| {
                op.port = hv.evtchn.bind_ipi(&caller, VcpuId(op.vcpu), &hv.mem)?;
                Ok(())
            }),
            EVTCHNOP_CLOSE => self
                .read_handle::<EvtchnClose>(idx, arg.cast())
                .and_then(|op| self.evtchn.close(&caller, op.port, &self.mem))
                .map(|()| 0),
            EVTCHNOP_SEND => match self.read_handle::<EvtchnSend>(idx, arg.cast()) {
                Err(e) => Err(e),
                Ok(op) => return self.evtchn_send(&caller, op.port),
            },
            EVTCHNOP_STATUS => self.evtchn_inout(idx, arg, |hv, op: &mut EvtchnStatus| {
                *op = hv.evtchn.status(&caller, op.dom, op.port)?;
                Ok(())
            }),
            EVTCHNOP_UNMASK => match self.read_handle::<EvtchnUnmask>(idx, arg.cast()) {
                Err(e) => Err(e),
                Ok(op) => self
                    .evtchn
                    .unmask(&caller, op.port, &self.mem)
                    .map(|wakes| self.apply_wakes(wakes))
                    .map(|()| 0),
            },
            EVTCHNOP_BIND_VCPU => self
                .read_handle::<EvtchnBindVcpu>(idx, arg.cast())
                .and_then(|op| self.evtchn.bind_vcpu(&caller, op.port, VcpuId(op.vcpu)))
                .map(|()| 0),
            EVTCHNOP_RESET => match self.read_handle::<EvtchnReset>(idx, arg.cast()) {
                Err(e) => Err(e),
                // Resetting another domain is -EINVAL, as in Xen for a running domain
                // (Xen allows it once that domain is paused; not yet here).
                Ok(op) => self
                    .evtchn
                    .reset(&caller, op.dom, false, &self.mem, &mut self.frames)
                    .map(|()| 0),
            },
            EVTCHNOP_INIT_CONTROL => {
                self.evtchn_inout(idx, arg, |hv, op: &mut EvtchnInitControl| {
                    op.link_bits = hv.evtchn.init_control(
                        &caller,
                        xen_pv_abi::Mfn(op.control_gfn),
                        op.offset,
                        VcpuId(op.vcpu),
                        &hv.mem,
                        &mut hv.frames,
                    )?;
                    Ok(())
                })
            }
            EVTCHNOP_EXPAND_ARRAY => match self.read_handle::<EvtchnExpandArray>(idx, arg.cast()) {
                Err(e) => Err(e),
                Ok(op) => self
                    .evtchn
                    .expand_array(
                        &caller,
                        xen_pv_abi::Mfn(op.array_gfn),
                        &self.mem,
                        &mut self.frames,
                    )
                    .map(|wakes| self.apply_wakes(wakes))
                    .map(|()| 0),
            },
            EVTCHNOP_SET_PRIORITY => self
                .read_handle::<EvtchnSetPriority>(idx, arg.cast())
                .and_then(|op| self.evtchn.set_priority(&caller, op.port, op.priority))
                .map(|()| 0),
            // No physical IRQs are passed to guests.
            _ => Err(Errno::ENOSYS),
        };
        ret.into()
    }

    /// The legacy `event_channel_op_compat(op)` (16): `op` holds the command and, from
    /// byte 4, the sub-operation's struct, read and written in place.
    pub(crate) fn do_event_channel_op_compat(
        &mut self,
        call: &mut Call<'_>,
        op: GuestHandle<Untyped>,
    ) -> Outcome {
        let cmd = match self.read_handle::<u32>(call.idx, op.cast()) {
            Ok(cmd) => cmd,
            Err(e) => return Outcome::Return(Err(e)),
        };
        let Some(arg) = op.addr().checked_add(COMPAT_ARG_OFFSET) else {
            return Outcome::Return(Err(Errno::EFAULT));
        };
        self.do_event_channel_op(call, cmd, GuestHandle::new(arg))
    }

    /// Reads the sub-operation's struct, lets `f` fill in its results, and writes it back
    /// (only on success, as Xen).
    fn evtchn_inout<T: FromBytes + IntoBytes + Immutable>(
        &mut self,
        idx: usize,
        arg: GuestHandle<Untyped>,
        f: impl FnOnce(&mut Self, &mut T) -> Result<(), Errno>,
    ) -> HcResult {
        let h = arg.cast::<T>();
        let mut op = self.read_handle(idx, h)?;
        f(self, &mut op)?;
        self.write_handle(idx, h, &op)?;
        Ok(0)
    }

    /// `event_channel_op(EVTCHNOP_send, arg)` straight from the hypercall entry
    /// ([`Hypervisor::hypercall`] calls it for `rax = 32`, `(u32)rdi = EVTCHNOP_send`
    /// and a RIP the return path can use), skipping the generic dispatcher: no
    /// [`Call`], no argument decoding, no [`Outcome`] match for the common result.
    /// Everything the guest can observe is what [`Hypervisor::dispatch`] gives (the
    /// same checked 4-byte copy of `struct evtchn_send`, the same [`Self::evtchn_send`],
    /// the same trace line, upcall and crash decisions); `hv_tests.rs` runs both on the
    /// same random inputs and compares them.
    #[inline(never)]
    pub(crate) fn evtchn_send_fast(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.cpu.current else {
            return self.no_current_domain();
        };
        let caller = Caller {
            dom: self.domains[idx].id,
            vcpu: self.cur_vcpu(idx),
            privileged: self.domains[idx].dom0,
        };
        // `read_guest`'s copy, inlined: a 4-byte read of a known size.
        let mut op = EvtchnSend::new_zeroed();
        let read = crate::mmu::guest::copy_from_guest_inline(
            &self.mem,
            &self.frames,
            self.current_space(idx),
            frame.rsi,
            op.as_mut_bytes(),
        )
        .map(|()| op);
        let outcome = match read {
            // The common case inline: an event raised (or dropped) in a domain.
            Ok(op) => match self.evtchn.send(&caller, op.port, &self.mem) {
                Ok(SendOutcome::Delivered(wakes)) => {
                    // A send to oneself wakes nobody: told here, without the call.
                    if !self.wakes_nothing(&wakes) {
                        self.apply_wakes(wakes);
                    }
                    Outcome::Return(Ok(0))
                }
                Err(e) => Outcome::Return(Err(e)),
            },
            Err(e) => Outcome::Return(Err(e)),
        };
        let number = nr::EVENT_CHANNEL_OP as u64;
        if let Outcome::Return(r) = outcome {
            frame.rax = to_rax(r);
            hv_trace!(
                "hypercall d{=u16} nr={=u64} args={:#x} -> {=i64}",
                caller.dom.0,
                number,
                [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8],
                frame.rax as i64
            );
            // What `resume_if_returnable` decides for a plain return: the syscall entry
            // set cs to the 64-bit guest selector and rip was checked by the caller;
            // neither changed, so only an upcall can be due.
            return if self.cpu.current.is_some() {
                self.enter_current(frame)
            } else {
                self.resume_current()
            };
        }
        hv_trace!(
            "hypercall d{=u16} nr={=u64} args={:#x} -> {}",
            caller.dom.0,
            number,
            [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8],
            outcome.trace_word()
        );
        let resume = self.apply_outcome(idx, number, frame, outcome);
        self.resume_if_returnable(frame, resume)
    }

    /// `EVTCHNOP_send` on `port` of the caller: wakes the receiver.
    fn evtchn_send(&mut self, caller: &Caller, port: EvtchnPort) -> Outcome {
        match self.evtchn.send(caller, port, &self.mem) {
            Err(e) => Outcome::Return(Err(e)),
            Ok(SendOutcome::Delivered(wakes)) => {
                self.apply_wakes(wakes);
                Outcome::Return(Ok(0))
            }
        }
    }
}
