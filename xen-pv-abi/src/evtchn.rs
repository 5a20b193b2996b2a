//! Event channels: a safe wrapper per `EVTCHNOP_*` command, and [`Port`], an owned
//! channel closed on drop (`xen-pv-abi.md` §6.1, `xen-control-plane.md` §5.2).
//!
//! Every wrapper passes the hypervisor a pointer to a local argument struct with Xen's
//! layout ([`crate::event_channel`]) and nothing else, so none can break memory safety.
//! Commands that act on "a domain" take `DomId::SELF` unless the caller is privileged.
//!
//! Delivery (the upcall, masking) is in [`crate::events`].
//!
//! Each function has an `_on` form taking the [`Transport`] (see [`crate::transport`]);
//! [`Port`] uses [`Native`].
//!
//! ```no_run
//! use xen_pv_abi::evtchn::Port;
//! use xen_pv_abi::event_channel::Virq;
//! use xen_pv_abi::{DomId, VcpuId};
//!
//! // Timer interrupts on vCPU 0.
//! let timer = Port::bind_virq(Virq::TIMER, VcpuId(0))?;
//! // A channel dom0 can connect to; its number goes to xenstore.
//! let chan = Port::alloc_unbound(DomId(0))?;
//! let number = chan.number();
//! chan.send()?;
//! // Keep the timer channel for the life of the kernel.
//! let timer_port = timer.into_raw();
//! # let _ = (number, timer_port);
//! # Ok::<(), xen_pv_abi::Errno>(())
//! ```

use crate::errno::Errno;
use crate::event_channel::*;
use crate::generated::call_on;
use crate::ids::{DomId, EvtchnPort, Mfn, VcpuId};
use crate::transport::{Native, Transport};
use zerocopy::{FromBytes, IntoBytes};

/// Issues `event_channel_op(cmd, &mut arg)` through `t`; `arg` is the argument struct of
/// `cmd`.
fn op<T: Transport + ?Sized, A: IntoBytes + FromBytes>(
    t: &T,
    cmd: u32,
    arg: &mut A,
) -> Result<u64, Errno> {
    // SAFETY: `A` is the argument struct of `cmd` (each caller pairs them), so the
    // hypervisor reads and writes only `size_of::<A>()` bytes of `arg`, and any bytes it
    // writes are a valid `A` (FromBytes).
    let ret = unsafe { call_on::event_channel_op(t, cmd, core::ptr::from_mut(arg).cast()) };
    Errno::check(ret)
}

/// `EVTCHNOP_alloc_unbound`: a new port of this domain that `remote` may bind to.
pub fn alloc_unbound(remote: DomId) -> Result<EvtchnPort, Errno> {
    alloc_unbound_on(&Native, remote)
}

/// [`alloc_unbound`] through `t`.
pub fn alloc_unbound_on<T: Transport + ?Sized>(t: &T, remote: DomId) -> Result<EvtchnPort, Errno> {
    let mut a = EvtchnAllocUnbound {
        dom: DomId::SELF,
        remote_dom: remote,
        port: EvtchnPort(0),
    };
    op(t, EVTCHNOP_ALLOC_UNBOUND, &mut a)?;
    Ok(a.port)
}

/// `EVTCHNOP_bind_interdomain`: connects a new local port to the unbound `remote_port` of
/// `remote`. The new port starts pending.
pub fn bind_interdomain(remote: DomId, remote_port: EvtchnPort) -> Result<EvtchnPort, Errno> {
    bind_interdomain_on(&Native, remote, remote_port)
}

/// [`bind_interdomain`] through `t`.
pub fn bind_interdomain_on<T: Transport + ?Sized>(
    t: &T,
    remote: DomId,
    remote_port: EvtchnPort,
) -> Result<EvtchnPort, Errno> {
    let mut a = EvtchnBindInterdomain {
        remote_dom: remote,
        pad: 0,
        remote_port,
        local_port: EvtchnPort(0),
    };
    op(t, EVTCHNOP_BIND_INTERDOMAIN, &mut a)?;
    Ok(a.local_port)
}

/// `EVTCHNOP_bind_virq`: a port for `virq`, notifying `vcpu` (vCPU 0 for global and
/// per-domain VIRQs).
pub fn bind_virq(virq: Virq, vcpu: VcpuId) -> Result<EvtchnPort, Errno> {
    bind_virq_on(&Native, virq, vcpu)
}

/// [`bind_virq`] through `t`.
pub fn bind_virq_on<T: Transport + ?Sized>(
    t: &T,
    virq: Virq,
    vcpu: VcpuId,
) -> Result<EvtchnPort, Errno> {
    let mut a = EvtchnBindVirq {
        virq: virq.0,
        vcpu: vcpu.0,
        port: EvtchnPort(0),
    };
    op(t, EVTCHNOP_BIND_VIRQ, &mut a)?;
    Ok(a.port)
}

/// `EVTCHNOP_bind_ipi`: a port that notifies `vcpu` of this domain.
pub fn bind_ipi(vcpu: VcpuId) -> Result<EvtchnPort, Errno> {
    bind_ipi_on(&Native, vcpu)
}

/// [`bind_ipi`] through `t`.
pub fn bind_ipi_on<T: Transport + ?Sized>(t: &T, vcpu: VcpuId) -> Result<EvtchnPort, Errno> {
    let mut a = EvtchnBindIpi {
        vcpu: vcpu.0,
        port: EvtchnPort(0),
    };
    op(t, EVTCHNOP_BIND_IPI, &mut a)?;
    Ok(a.port)
}

/// `EVTCHNOP_close`: frees `port` (an interdomain peer goes back to unbound).
pub fn close(port: EvtchnPort) -> Result<(), Errno> {
    close_on(&Native, port)
}

/// [`close`] through `t`.
pub fn close_on<T: Transport + ?Sized>(t: &T, port: EvtchnPort) -> Result<(), Errno> {
    op(t, EVTCHNOP_CLOSE, &mut EvtchnClose { port }).map(drop)
}

/// `EVTCHNOP_send`: notifies the other end of `port`.
pub fn send(port: EvtchnPort) -> Result<(), Errno> {
    send_on(&Native, port)
}

/// [`send`] through `t`.
pub fn send_on<T: Transport + ?Sized>(t: &T, port: EvtchnPort) -> Result<(), Errno> {
    op(t, EVTCHNOP_SEND, &mut EvtchnSend { port }).map(drop)
}

/// `EVTCHNOP_status` of `port` of domain `dom` (`DomId::SELF` unless privileged): the
/// vCPU it notifies and its state.
pub fn status(dom: DomId, port: EvtchnPort) -> Result<(VcpuId, ChannelState), Errno> {
    status_on(&Native, dom, port)
}

/// [`status`] through `t`.
pub fn status_on<T: Transport + ?Sized>(
    t: &T,
    dom: DomId,
    port: EvtchnPort,
) -> Result<(VcpuId, ChannelState), Errno> {
    let mut a = EvtchnStatus {
        dom,
        port,
        ..Default::default()
    };
    op(t, EVTCHNOP_STATUS, &mut a)?;
    // A status value Xen does not define means a hypervisor we do not understand.
    let state = a.decode().ok_or(Errno::EINVAL)?;
    Ok((VcpuId(a.vcpu), state))
}

/// `EVTCHNOP_unmask`: the hypervisor clears the mask and, if the port is pending,
/// delivers it (to whichever vCPU it notifies).
pub fn unmask(port: EvtchnPort) -> Result<(), Errno> {
    unmask_on(&Native, port)
}

/// [`unmask`] through `t`.
pub fn unmask_on<T: Transport + ?Sized>(t: &T, port: EvtchnPort) -> Result<(), Errno> {
    op(t, EVTCHNOP_UNMASK, &mut EvtchnUnmask { port }).map(drop)
}

/// `EVTCHNOP_bind_vcpu`: `port` notifies `vcpu` from now on (not for per-vCPU VIRQs or
/// IPIs).
pub fn bind_vcpu(port: EvtchnPort, vcpu: VcpuId) -> Result<(), Errno> {
    bind_vcpu_on(&Native, port, vcpu)
}

/// [`bind_vcpu`] through `t`.
pub fn bind_vcpu_on<T: Transport + ?Sized>(
    t: &T,
    port: EvtchnPort,
    vcpu: VcpuId,
) -> Result<(), Errno> {
    op(
        t,
        EVTCHNOP_BIND_VCPU,
        &mut EvtchnBindVcpu { port, vcpu: vcpu.0 },
    )
    .map(drop)
}

/// `EVTCHNOP_reset`: closes every port of `dom` (`DomId::SELF`); under FIFO, reverts to
/// the 2-level ABI if that succeeds. Outstanding [`Port`]s then close stale numbers:
/// [`Port::into_raw`] them first.
pub fn reset(dom: DomId) -> Result<(), Errno> {
    reset_on(&Native, dom)
}

/// [`reset`] through `t`.
pub fn reset_on<T: Transport + ?Sized>(t: &T, dom: DomId) -> Result<(), Errno> {
    op(t, EVTCHNOP_RESET, &mut EvtchnReset { dom }).map(drop)
}

/// `EVTCHNOP_init_control`: registers the FIFO control block of `vcpu` at byte `offset`
/// of frame `control` (for a PV guest, the MFN of a zeroed page). The first success
/// switches the domain to the FIFO ABI. Returns the hypervisor's link bits (17).
pub fn init_control(control: Mfn, offset: u32, vcpu: VcpuId) -> Result<u8, Errno> {
    init_control_on(&Native, control, offset, vcpu)
}

/// [`init_control`] through `t`.
pub fn init_control_on<T: Transport + ?Sized>(
    t: &T,
    control: Mfn,
    offset: u32,
    vcpu: VcpuId,
) -> Result<u8, Errno> {
    let mut a = EvtchnInitControl {
        control_gfn: control.0,
        offset,
        vcpu: vcpu.0,
        ..Default::default()
    };
    op(t, EVTCHNOP_INIT_CONTROL, &mut a)?;
    Ok(a.link_bits)
}

/// `EVTCHNOP_expand_array`: adds frame `page` (for a PV guest, its MFN) as the next
/// event-array page. Prepare it with [`crate::events::fifo::init_array_page`] first.
pub fn expand_array(page: Mfn) -> Result<(), Errno> {
    expand_array_on(&Native, page)
}

/// [`expand_array`] through `t`.
pub fn expand_array_on<T: Transport + ?Sized>(t: &T, page: Mfn) -> Result<(), Errno> {
    op(
        t,
        EVTCHNOP_EXPAND_ARRAY,
        &mut EvtchnExpandArray { array_gfn: page.0 },
    )
    .map(drop)
}

/// `EVTCHNOP_set_priority`: FIFO queue of `port` for future events, 0 (most urgent) ..=
/// 15. Checked here too: `EINVAL` above 15.
pub fn set_priority(port: EvtchnPort, priority: u32) -> Result<(), Errno> {
    set_priority_on(&Native, port, priority)
}

/// [`set_priority`] through `t`.
pub fn set_priority_on<T: Transport + ?Sized>(
    t: &T,
    port: EvtchnPort,
    priority: u32,
) -> Result<(), Errno> {
    if priority > EVTCHN_FIFO_PRIORITY_MIN {
        return Err(Errno::EINVAL);
    }
    op(
        t,
        EVTCHNOP_SET_PRIORITY,
        &mut EvtchnSetPriority { port, priority },
    )
    .map(drop)
}

/// An event channel this code owns: closed (`EVTCHNOP_close`) when dropped.
///
/// Obtain one from a `bind_*`/`alloc_unbound` constructor; keep the channel past the
/// value's life with [`into_raw`](Port::into_raw) (or [`leak`](Port::leak)).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "dropping a Port closes the channel"]
pub struct Port {
    port: EvtchnPort,
}

impl Port {
    /// [`alloc_unbound`]: a new port that `remote` may bind to.
    pub fn alloc_unbound(remote: DomId) -> Result<Port, Errno> {
        alloc_unbound(remote).map(Port::from_raw)
    }

    /// [`bind_interdomain`]: connects to `remote_port` of `remote`.
    pub fn bind_interdomain(remote: DomId, remote_port: EvtchnPort) -> Result<Port, Errno> {
        bind_interdomain(remote, remote_port).map(Port::from_raw)
    }

    /// [`bind_virq`]: `virq` delivered to `vcpu`.
    pub fn bind_virq(virq: Virq, vcpu: VcpuId) -> Result<Port, Errno> {
        bind_virq(virq, vcpu).map(Port::from_raw)
    }

    /// [`bind_ipi`]: an IPI channel to `vcpu`.
    pub fn bind_ipi(vcpu: VcpuId) -> Result<Port, Errno> {
        bind_ipi(vcpu).map(Port::from_raw)
    }

    /// Takes ownership of an open port (e.g. the console or xenstore port from
    /// `start_info`, or one from [`into_raw`](Port::into_raw)): it is closed on drop.
    pub const fn from_raw(port: EvtchnPort) -> Port {
        Port { port }
    }

    /// The port number (for xenstore, the dispatcher, `poll`...).
    pub const fn number(&self) -> EvtchnPort {
        self.port
    }

    /// Notifies the other end.
    pub fn send(&self) -> Result<(), Errno> {
        send(self.port)
    }

    /// Unmasks through the hypervisor ([`unmask`]); a pending event is delivered.
    pub fn unmask(&self) -> Result<(), Errno> {
        unmask(self.port)
    }

    /// Moves notifications to `vcpu` ([`bind_vcpu`]).
    pub fn bind_vcpu(&self, vcpu: VcpuId) -> Result<(), Errno> {
        bind_vcpu(self.port, vcpu)
    }

    /// Sets the FIFO priority ([`set_priority`]).
    pub fn set_priority(&self, priority: u32) -> Result<(), Errno> {
        set_priority(self.port, priority)
    }

    /// The channel's state ([`status`]).
    pub fn status(&self) -> Result<(VcpuId, ChannelState), Errno> {
        status(DomId::SELF, self.port)
    }

    /// Gives up ownership without closing: the channel stays open.
    pub fn into_raw(self) -> EvtchnPort {
        let port = self.port;
        core::mem::forget(self);
        port
    }

    /// Keeps the channel open for good (same as [`into_raw`](Port::into_raw)).
    pub fn leak(self) -> EvtchnPort {
        self.into_raw()
    }

    /// Closes now, reporting failure (drop ignores it).
    pub fn close(self) -> Result<(), Errno> {
        close(self.into_raw())
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // Nothing useful can be done about a failure here; `close` reports it.
        let _ = close(self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::fake::Fake;

    #[test]
    fn alloc_unbound_passes_its_struct_and_reads_the_port_back() {
        let t = Fake::new(|call| {
            assert_eq!(call.op, crate::nr::EVENT_CHANNEL_OP);
            assert_eq!(call.args[0], u64::from(EVTCHNOP_ALLOC_UNBOUND));
            // SAFETY: EVTCHNOP_alloc_unbound passes a live EvtchnAllocUnbound.
            let a = unsafe { &mut *(call.args[1] as *mut EvtchnAllocUnbound) };
            assert_eq!((a.dom, a.remote_dom), (DomId::SELF, DomId(0)));
            a.port = EvtchnPort(5);
            0
        });
        assert_eq!(alloc_unbound_on(&t, DomId(0)), Ok(EvtchnPort(5)));
    }

    #[test]
    fn errors_come_back_as_errnos_and_local_checks_make_no_call() {
        let t = Fake::new(|_| Errno::ENOSPC.to_ret());
        assert_eq!(bind_ipi_on(&t, VcpuId(0)), Err(Errno::ENOSPC));
        assert_eq!(t.count(), 1);
        assert_eq!(set_priority_on(&t, EvtchnPort(1), 16), Err(Errno::EINVAL));
        assert_eq!(t.count(), 1, "priority 16 is refused before any hypercall");
    }

    #[test]
    fn status_decodes_or_refuses_an_unknown_state() {
        let t = Fake::new(|call| {
            // SAFETY: EVTCHNOP_status passes a live EvtchnStatus.
            let a = unsafe { &mut *(call.args[1] as *mut EvtchnStatus) };
            a.status = 99;
            0
        });
        assert_eq!(
            status_on(&t, DomId::SELF, EvtchnPort(3)),
            Err(Errno::EINVAL)
        );
    }
}
