//! Event channels: every domain's ports, the operations of `event_channel_op` and the
//! hypervisor's own raising of events, with Xen 4.17's semantics and errno values
//! (xen-pv-abi.md §6, xen-control-plane.md §3.5 and §5; Xen's `event_channel.c`).
//!
//! * [`EventChannels`] owns one [`DomainEvtchn`] per domain. A domain's channels live in
//!   buckets of [`EVTCHNS_PER_BUCKET`] allocated on demand (fallibly) as ports are
//!   handed out, lowest free port first, never beyond the domain's `max_port` (Xen's
//!   `max_evtchn_port`, default [`DEFAULT_MAX_PORT`]) nor the ABI's limit: that is the
//!   per-domain quota. Port 0 is reserved. As in Xen, a port is *valid* once its bucket
//!   exists, even while free (`status` says closed, `unmask` succeeds doing nothing).
//! * A channel is free, unbound (reserved for one remote domain), interdomain, a VIRQ,
//!   or an IPI. No backend lives in the hypervisor: a domU's console and xenstore ports
//!   are allocated unbound for the control domain at boot (hv.rs `start_domain`).
//! * Delivery goes through the domain's current ABI: 2-level (`two_level.rs`, bitmaps in
//!   shared_info) until its first `init_control`, FIFO (`fifo.rs`) afterwards, back to
//!   2-level on `reset`. Both write guest memory only by byte copies.
//! * Raising an event returns [`Wakes`]: which vCPUs' `evtchn_upcall_pending` went 0->1
//!   (kick or unblock them) and whether a port became pending (re-check the domain's
//!   `SCHEDOP_poll` waiters with [`EventChannels::is_pending`]).
//!
//! Path of an event: `send(caller, p)` finds the caller's channel; for an interdomain
//! channel it raises the peer's port on the peer's `notify_vcpu`: 2-level sets the
//! pending bit in the peer's shared_info, and if the port is unmasked, the selector bit
//! in that vCPU's `vcpu_info` and then `evtchn_upcall_pending`; FIFO sets PENDING in the
//! event word and links it on the (vCPU, priority) queue, setting the queue's ready bit
//! and the upcall flag when the queue was empty. The scheduler wakes the vCPUs in the
//! returned [`Wakes`]; the vCPU takes the upcall when it next runs with events unmasked.

use super::fifo::{self, Fifo, FifoVcpu};
use super::two_level;
use crate::mmu::Frames;
use crate::platform::MachineMemory;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use xen_pv_abi::event_channel::{
    EVTCHN_FIFO_LINK_BITS, EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES, EVTCHN_FIFO_NR_CHANNELS,
    EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHN_FIFO_PRIORITY_MIN, EVTCHNSTAT_CLOSED,
    EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI, EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ, EvtchnStatus,
    Virq,
};
use xen_pv_abi::shared_info::XEN_LEGACY_MAX_VCPUS;
use xen_pv_abi::{DomId, Errno, EvtchnPort, Mfn, VcpuId};

/// Channels per bucket (Xen: a page of 64-byte `struct evtchn`).
pub const EVTCHNS_PER_BUCKET: u32 = 64;
/// Xen's default `max_evtchn_port` for a domain.
pub const DEFAULT_MAX_PORT: u32 = 1023;
/// vCPUs a domain may have here: those with a `vcpu_info` in shared_info.
pub const MAX_VCPUS: u32 = XEN_LEGACY_MAX_VCPUS as u32;
const DEFAULT_PRIORITY: u8 = EVTCHN_FIFO_PRIORITY_DEFAULT as u8;

/// What a port is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// Not in use.
    Free,
    /// Port 0: never allocated.
    Reserved,
    /// Allocated, waiting for `remote` to bind it with `bind_interdomain`.
    Unbound {
        /// The only domain allowed to bind it.
        remote: DomId,
    },
    /// Connected to `remote_port` of `remote` (possibly the same domain).
    Interdomain {
        /// Peer domain.
        remote: DomId,
        /// Peer's port.
        remote_port: EvtchnPort,
    },
    /// Bound to virtual IRQ `virq`.
    Virq {
        /// `VIRQ_*` number (< `NR_VIRQS`).
        virq: u32,
    },
    /// Inter-vCPU channel: `send` raises it on its own `notify_vcpu`.
    Ipi,
}

/// One port of a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Binding.
    pub state: ChannelState,
    /// vCPU the port's events are raised on.
    pub notify_vcpu: VcpuId,
    /// FIFO priority (0 highest ..= 15 lowest).
    pub priority: u8,
    /// FIFO: vCPU of the queue the event was last linked on.
    pub(super) last_vcpu: VcpuId,
    /// FIFO: priority of the queue the event was last linked on.
    pub(super) last_priority: u8,
    /// FIFO: raised while the port had no event word; raised again when its page comes.
    pub(super) saved_pending: bool,
}

impl Channel {
    const FREE: Channel = Channel {
        state: ChannelState::Free,
        notify_vcpu: VcpuId(0),
        priority: DEFAULT_PRIORITY,
        last_vcpu: VcpuId(0),
        last_priority: 0,
        saved_pending: false,
    };

    /// Xen's `evtchn_usable`: events can be raised on it.
    fn usable(&self) -> bool {
        !matches!(self.state, ChannelState::Free | ChannelState::Reserved)
    }
}

/// The calling side of an `event_channel_op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Calling domain.
    pub dom: DomId,
    /// Calling vCPU.
    pub vcpu: VcpuId,
    /// Whether the domain may act on other domains (Xen's XSM_TARGET for the control
    /// domain).
    pub privileged: bool,
}

/// vCPUs to wake after an event was raised, all in one domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wakes {
    dom: DomId,
    /// Bit v: vCPU v's `evtchn_upcall_pending` went 0->1.
    upcall: u32,
    /// A port of `dom` went from not pending to pending.
    poll: bool,
}

impl Wakes {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.upcall == 0 && !self.poll
    }

    /// The vCPUs whose upcall became pending: kick them, or unblock them if blocked.
    pub fn upcalls(&self) -> impl Iterator<Item = (DomId, VcpuId)> + '_ {
        // One step per set bit, lowest vCPU first.
        let (dom, mut bits) = (self.dom, self.upcall);
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let v = bits.trailing_zeros();
            bits &= bits - 1;
            Some((dom, VcpuId(v)))
        })
    }

    /// Whether every vCPU named by [`Self::upcalls`] is vCPU `vcpu` of `dom` (true when
    /// there is none).
    pub fn upcalls_only(&self, dom: DomId, vcpu: VcpuId) -> bool {
        let me = 1u32.checked_shl(vcpu.0).unwrap_or(0);
        self.upcall == 0 || (self.dom == dom && self.upcall == me)
    }

    /// The domain in which a port became pending, if any: its vCPUs blocked in
    /// `SCHEDOP_poll` should re-check their ports with [`EventChannels::is_pending`]
    /// (Xen's `evtchn_check_pollers`).
    pub fn poll_check(&self) -> Option<DomId> {
        self.poll.then_some(self.dom)
    }

    pub(super) fn add(&mut self, dom: DomId, vcpu: u32, r: Raised) {
        if r.upcall || r.newly_pending {
            self.dom = dom;
        }
        if r.upcall && vcpu < 32 {
            self.upcall |= 1 << vcpu;
        }
        self.poll |= r.newly_pending;
    }

    fn one(dom: DomId, vcpu: u32, r: Raised) -> Wakes {
        let mut w = Wakes::default();
        w.add(dom, vcpu, r);
        w
    }
}

/// What raising one event did (internal to the delivery ABIs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Raised {
    /// The vCPU's upcall must be (or was) marked pending and went 0->1.
    pub upcall: bool,
    /// The port went from not pending to pending.
    pub newly_pending: bool,
}

/// Result of `EVTCHNOP_send`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The event was raised (or dropped, for an unbound port).
    Delivered(Wakes),
}

/// The delivery ABI in use by a domain.
#[derive(Debug)]
enum Abi {
    TwoLevel,
    Fifo(Box<Fifo>),
}

/// The channel of `port` in `buckets` (a free function so the ABI state can be borrowed
/// beside it).
fn slot(buckets: &mut [Box<[Channel]>], port: u32) -> Option<&mut Channel> {
    buckets
        .get_mut((port / EVTCHNS_PER_BUCKET) as usize)?
        .get_mut((port % EVTCHNS_PER_BUCKET) as usize)
}

/// One domain's event channels.
#[derive(Debug)]
pub struct DomainEvtchn {
    shared_info: Mfn,
    nr_vcpus: u32,
    max_port: u32,
    /// Contiguous: ports `0..buckets.len() * 64` are valid.
    buckets: Vec<Box<[Channel]>>,
    /// Per vCPU: the port bound to each VIRQ (0 = none). Global VIRQs use vCPU 0's row.
    virqs: Vec<[u32; Virq::COUNT as usize]>,
    abi: Abi,
}

impl DomainEvtchn {
    fn valid_ports(&self) -> u32 {
        self.buckets.len() as u32 * EVTCHNS_PER_BUCKET
    }

    fn chan(&self, port: u32) -> Option<&Channel> {
        self.buckets
            .get((port / EVTCHNS_PER_BUCKET) as usize)?
            .get((port % EVTCHNS_PER_BUCKET) as usize)
    }

    fn chan_mut(&mut self, port: u32) -> Option<&mut Channel> {
        slot(&mut self.buckets, port)
    }

    /// Highest port the domain may use under its current ABI.
    fn port_limit(&self) -> u32 {
        let abi_max = match self.abi {
            Abi::TwoLevel => two_level::NR_CHANNELS,
            Abi::Fifo(_) => EVTCHN_FIFO_NR_CHANNELS,
        };
        self.max_port.min(abi_max - 1)
    }

    fn has_vcpu(&self, vcpu: u32) -> bool {
        vcpu < self.nr_vcpus
    }

    /// Appends one bucket of free channels; -ENOMEM if the heap says no.
    fn grow(&mut self) -> Result<(), Errno> {
        let mut bucket = Vec::new();
        bucket
            .try_reserve_exact(EVTCHNS_PER_BUCKET as usize)
            .map_err(|_| Errno::ENOMEM)?;
        bucket.resize(EVTCHNS_PER_BUCKET as usize, Channel::FREE);
        self.buckets.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        self.buckets.push(bucket.into_boxed_slice());
        Ok(())
    }

    /// Xen's `get_free_port`: the lowest free port that is not still queued (FIFO),
    /// growing the buckets if all valid ports are taken. The new channel is still free.
    fn get_free_port(&mut self, mem: &impl MachineMemory) -> Result<u32, Errno> {
        let limit = self.port_limit();
        let valid = self.valid_ports();
        for port in 0..valid.min(limit.saturating_add(1)) {
            crate::work::step(1);
            let free = self
                .chan(port)
                .is_some_and(|c| c.state == ChannelState::Free);
            if free && !self.is_busy(port, mem) {
                return Ok(port);
            }
        }
        if valid > limit {
            return Err(Errno::ENOSPC);
        }
        self.grow()?;
        Ok(valid)
    }

    fn is_busy(&self, port: u32, mem: &impl MachineMemory) -> bool {
        match &self.abi {
            Abi::TwoLevel => false,
            Abi::Fifo(f) => fifo::is_busy(f, mem, port),
        }
    }

    /// Takes free port `port` into use as `state` (Xen's `evtchn_port_init`).
    fn bind(&mut self, port: u32, state: ChannelState, vcpu: u32) {
        if let Some(c) = self.chan_mut(port) {
            c.state = state;
            c.notify_vcpu = VcpuId(vcpu);
            c.priority = DEFAULT_PRIORITY;
        }
    }

    /// Raises `port` on `vcpu` through the current ABI (`evtchn_port_set_pending`).
    fn set_pending(&mut self, mem: &impl MachineMemory, port: u32, vcpu: u32) -> Raised {
        if !self.has_vcpu(vcpu) || !self.chan(port).is_some_and(Channel::usable) {
            return Raised::default();
        }
        self.set_pending_usable(mem, port, vcpu)
    }

    /// Raises `port` on its notify vCPU; returns that vCPU and what raising did, or
    /// `None` for a port beyond the valid ones (the send path: one channel lookup where
    /// `chan` + [`Self::set_pending`] would make two).
    #[inline]
    fn raise_on_notify(&mut self, mem: &impl MachineMemory, port: u32) -> Option<(u32, Raised)> {
        let c = self.chan(port)?;
        let (vcpu, usable) = (c.notify_vcpu.0, c.usable());
        if !usable || !self.has_vcpu(vcpu) {
            return Some((vcpu, Raised::default()));
        }
        Some((vcpu, self.set_pending_usable(mem, port, vcpu)))
    }

    /// [`Self::set_pending`] once `port` is known valid and usable and `vcpu` exists.
    #[inline]
    fn set_pending_usable(&mut self, mem: &impl MachineMemory, port: u32, vcpu: u32) -> Raised {
        let si = self.shared_info;
        match &mut self.abi {
            Abi::TwoLevel => two_level::set_pending(mem, si, port, vcpu),
            Abi::Fifo(f) => {
                let Some(c) = slot(&mut self.buckets, port) else {
                    return Raised::default();
                };
                let r = fifo::set_pending(f, mem, c, port, vcpu);
                Raised {
                    upcall: r.upcall && two_level::mark_upcall_pending(mem, si, vcpu),
                    ..r
                }
            }
        }
    }

    /// Frees `port` (Xen's `evtchn_free`): pending cleared, notify vCPU back to 0.
    fn free(&mut self, mem: &impl MachineMemory, port: u32) {
        match &self.abi {
            Abi::TwoLevel => two_level::clear_pending(mem, self.shared_info, port),
            Abi::Fifo(f) => fifo::clear_pending(f, mem, port),
        }
        if let Some(c) = self.chan_mut(port) {
            c.state = ChannelState::Free;
            c.notify_vcpu = VcpuId(0);
            c.saved_pending = false;
        }
    }

    fn pending(&self, mem: &impl MachineMemory, port: u32) -> bool {
        match &self.abi {
            Abi::TwoLevel => two_level::is_pending(mem, self.shared_info, port),
            Abi::Fifo(f) => fifo::is_pending(f, mem, port),
        }
    }

    fn masked(&self, mem: &impl MachineMemory, port: u32) -> bool {
        match &self.abi {
            Abi::TwoLevel => two_level::is_masked(mem, self.shared_info, port),
            Abi::Fifo(f) => fifo::is_masked(f, mem, port),
        }
    }

    /// Drops the FIFO state and its frame references; back to 2-level.
    fn destroy_fifo(&mut self, frames: &mut Frames) {
        if let Abi::Fifo(f) = core::mem::replace(&mut self.abi, Abi::TwoLevel) {
            for mfn in f.frames() {
                fifo::release_guest_page(frames, mfn);
            }
        }
    }
}

/// Every domain's event channels.
#[derive(Debug, Default)]
pub struct EventChannels {
    domains: BTreeMap<DomId, DomainEvtchn>,
}

/// `DOMID_SELF` means the caller.
fn resolve(caller: &Caller, dom: DomId) -> DomId {
    if dom == DomId::SELF { caller.dom } else { dom }
}

impl EventChannels {
    /// No domains.
    pub const fn new() -> Self {
        EventChannels {
            domains: BTreeMap::new(),
        }
    }

    /// Registers domain `dom` (2-level ABI, only port 0, reserved): `shared_info` is its
    /// shared_info frame, `nr_vcpus` its vCPUs (1..=32), `max_port` its highest usable
    /// port (Xen's `max_evtchn_port`, [`DEFAULT_MAX_PORT`] for a domU).
    ///
    /// -EEXIST if already there, -EINVAL for a bad vCPU count or a reserved id, -ENOMEM
    /// if the heap is exhausted.
    pub fn add_domain(
        &mut self,
        dom: DomId,
        shared_info: Mfn,
        nr_vcpus: u32,
        max_port: u32,
    ) -> Result<(), Errno> {
        if !dom.is_real() || nr_vcpus == 0 || nr_vcpus > MAX_VCPUS {
            return Err(Errno::EINVAL);
        }
        if self.domains.contains_key(&dom) {
            return Err(Errno::EEXIST);
        }
        let mut virqs = Vec::new();
        virqs
            .try_reserve_exact(nr_vcpus as usize)
            .map_err(|_| Errno::ENOMEM)?;
        virqs.resize(nr_vcpus as usize, [0; Virq::COUNT as usize]);
        let mut d = DomainEvtchn {
            shared_info,
            nr_vcpus,
            max_port,
            buckets: Vec::new(),
            virqs,
            abi: Abi::TwoLevel,
        };
        d.grow()?;
        if let Some(c) = d.chan_mut(0) {
            c.state = ChannelState::Reserved;
        }
        self.domains.insert(dom, d);
        Ok(())
    }

    /// Forgets domain `dom` (Xen's `evtchn_destroy`): every port is closed, so the peers
    /// of its interdomain channels become unbound with the dead domain as remote, and its
    /// FIFO frames are released. Nothing is raised. Call before its frames are freed.
    pub fn remove_domain(&mut self, dom: DomId, frames: &mut Frames) {
        let Some(mut d) = self.domains.remove(&dom) else {
            return;
        };
        for bucket in &d.buckets {
            for c in bucket.iter() {
                if let ChannelState::Interdomain {
                    remote,
                    remote_port,
                } = c.state
                    && remote != dom
                    && let Some(peer) = self
                        .domains
                        .get_mut(&remote)
                        .and_then(|r| r.chan_mut(remote_port.0))
                {
                    peer.state = ChannelState::Unbound { remote: dom };
                }
            }
        }
        d.destroy_fifo(frames);
    }

    /// Whether `dom` is registered.
    pub fn has_domain(&self, dom: DomId) -> bool {
        self.domains.contains_key(&dom)
    }

    /// Current state of a port (`None` if the domain or the port does not exist).
    pub fn channel(&self, dom: DomId, port: EvtchnPort) -> Option<Channel> {
        self.domains.get(&dom)?.chan(port.0).copied()
    }

    /// Buckets allocated over all domains (for accounting checks).
    pub fn buckets_in_use(&self) -> usize {
        self.domains.values().map(|d| d.buckets.len()).sum()
    }

    /// Every guest frame `dom`'s FIFO state holds a writable reference on (control
    /// blocks, then event-array pages); empty under the 2-level ABI.
    pub fn fifo_frames(&self, dom: DomId) -> Vec<Mfn> {
        match self.domains.get(&dom).map(|d| &d.abi) {
            Some(Abi::Fifo(f)) => f.frames().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether `dom` uses the FIFO ABI.
    pub fn is_fifo(&self, dom: DomId) -> bool {
        self.domains
            .get(&dom)
            .is_some_and(|d| matches!(d.abi, Abi::Fifo(_)))
    }

    fn domain_mut(&mut self, dom: DomId) -> Result<&mut DomainEvtchn, Errno> {
        self.domains.get_mut(&dom).ok_or(Errno::ESRCH)
    }

    fn domain(&self, dom: DomId) -> Result<&DomainEvtchn, Errno> {
        self.domains.get(&dom).ok_or(Errno::ESRCH)
    }

    /// `EVTCHNOP_alloc_unbound`: a new port in `dom` that only `remote_dom` may bind.
    ///
    /// -ESRCH if `dom` does not exist; -ENOSPC/-ENOMEM if it has no port left; -EPERM if
    /// `dom` is not the caller and the caller is not privileged (checked after the port
    /// search, as Xen). `remote_dom` is not checked (Xen records any id).
    pub fn alloc_unbound(
        &mut self,
        caller: &Caller,
        dom: DomId,
        remote_dom: DomId,
        mem: &impl MachineMemory,
    ) -> Result<EvtchnPort, Errno> {
        let target = resolve(caller, dom);
        let remote = resolve(caller, remote_dom);
        let d = self.domain_mut(target)?;
        let port = d.get_free_port(mem)?;
        if target != caller.dom && !caller.privileged {
            return Err(Errno::EPERM);
        }
        d.bind(port, ChannelState::Unbound { remote }, 0);
        Ok(EvtchnPort(port))
    }

    /// `EVTCHNOP_bind_interdomain`: connects a new port of the caller to `remote_port` of
    /// `remote_dom`, which must be unbound and reserved for the caller (-EINVAL
    /// otherwise; -ESRCH if the domain does not exist). The new port is raised at once,
    /// in case the peer signalled before the binding.
    pub fn bind_interdomain(
        &mut self,
        caller: &Caller,
        remote_dom: DomId,
        remote_port: EvtchnPort,
        mem: &impl MachineMemory,
    ) -> Result<(EvtchnPort, Wakes), Errno> {
        let ld = caller.dom;
        let rd = resolve(caller, remote_dom);
        if !self.domains.contains_key(&rd) {
            return Err(Errno::ESRCH);
        }
        let lport = self.domain_mut(ld)?.get_free_port(mem)?;
        let remote_ok = self
            .domains
            .get(&rd)
            .and_then(|r| r.chan(remote_port.0))
            .is_some_and(|c| c.state == ChannelState::Unbound { remote: ld });
        if !remote_ok {
            return Err(Errno::EINVAL);
        }
        if let Some(rc) = self.domain_mut(rd)?.chan_mut(remote_port.0) {
            rc.state = ChannelState::Interdomain {
                remote: ld,
                remote_port: EvtchnPort(lport),
            };
        }
        let d = self.domain_mut(ld)?;
        d.bind(
            lport,
            ChannelState::Interdomain {
                remote: rd,
                remote_port,
            },
            0,
        );
        let r = d.set_pending(mem, lport, 0);
        Ok((EvtchnPort(lport), Wakes::one(ld, 0, r)))
    }

    /// `EVTCHNOP_bind_virq`: -EINVAL for `virq >= Virq::COUNT` or a global VIRQ on a vCPU
    /// other than 0, -ENOENT for a vCPU that does not exist, -EEXIST if already bound.
    pub fn bind_virq(
        &mut self,
        caller: &Caller,
        virq: u32,
        vcpu: VcpuId,
        mem: &impl MachineMemory,
    ) -> Result<EvtchnPort, Errno> {
        if virq >= Virq::COUNT || (!Virq(virq).is_per_vcpu() && vcpu.0 != 0) {
            return Err(Errno::EINVAL);
        }
        let d = self.domain_mut(caller.dom)?;
        if !d.has_vcpu(vcpu.0) {
            return Err(Errno::ENOENT);
        }
        if d.virqs[vcpu.0 as usize][virq as usize] != 0 {
            return Err(Errno::EEXIST);
        }
        let port = d.get_free_port(mem)?;
        d.bind(port, ChannelState::Virq { virq }, vcpu.0);
        d.virqs[vcpu.0 as usize][virq as usize] = port;
        Ok(EvtchnPort(port))
    }

    /// `EVTCHNOP_bind_ipi`: -ENOENT for a vCPU that does not exist.
    pub fn bind_ipi(
        &mut self,
        caller: &Caller,
        vcpu: VcpuId,
        mem: &impl MachineMemory,
    ) -> Result<EvtchnPort, Errno> {
        let d = self.domain_mut(caller.dom)?;
        if !d.has_vcpu(vcpu.0) {
            return Err(Errno::ENOENT);
        }
        let port = d.get_free_port(mem)?;
        d.bind(port, ChannelState::Ipi, vcpu.0);
        Ok(EvtchnPort(port))
    }

    /// `EVTCHNOP_close`: -EINVAL for an invalid or free port. Closing one end of an
    /// interdomain channel leaves the other end unbound, reserved for this domain.
    pub fn close(
        &mut self,
        caller: &Caller,
        port: EvtchnPort,
        mem: &impl MachineMemory,
    ) -> Result<(), Errno> {
        self.close_port(caller.dom, port.0, mem)
    }

    fn close_port(&mut self, dom: DomId, port: u32, mem: &impl MachineMemory) -> Result<(), Errno> {
        let d = self.domain_mut(dom)?;
        let c = *d.chan(port).ok_or(Errno::EINVAL)?;
        let mut peer = None;
        match c.state {
            ChannelState::Free | ChannelState::Reserved => return Err(Errno::EINVAL),
            ChannelState::Unbound { .. } | ChannelState::Ipi => {}
            ChannelState::Virq { virq } => {
                let v = if Virq(virq).is_per_vcpu() {
                    c.notify_vcpu.0
                } else {
                    0
                };
                if let Some(slot) = d
                    .virqs
                    .get_mut(v as usize)
                    .and_then(|row| row.get_mut(virq as usize))
                    && *slot == port
                {
                    *slot = 0;
                }
            }
            ChannelState::Interdomain {
                remote,
                remote_port,
            } => peer = Some((remote, remote_port)),
        }
        d.free(mem, port);
        if let Some((remote, remote_port)) = peer
            && let Some(pc) = self
                .domains
                .get_mut(&remote)
                .and_then(|r| r.chan_mut(remote_port.0))
        {
            pc.state = ChannelState::Unbound { remote: dom };
        }
        Ok(())
    }

    /// `EVTCHNOP_send`: raises the peer of an interdomain port, the port itself for an
    /// IPI, nothing for an unbound port; hands a hypervisor port to its backend. -EINVAL
    /// for an invalid, free or VIRQ port.
    pub fn send(
        &mut self,
        caller: &Caller,
        port: EvtchnPort,
        mem: &impl MachineMemory,
    ) -> Result<SendOutcome, Errno> {
        let d = self.domain_mut(caller.dom)?;
        let c = *d.chan(port.0).ok_or(Errno::EINVAL)?;
        match c.state {
            ChannelState::Interdomain {
                remote,
                remote_port,
            } => {
                // A loopback channel (both ends in the caller's domain) needs no second
                // domain lookup.
                let rd = if remote == caller.dom {
                    d
                } else {
                    let Ok(rd) = self.domain_mut(remote) else {
                        return Ok(SendOutcome::Delivered(Wakes::default()));
                    };
                    rd
                };
                let Some((rv, r)) = rd.raise_on_notify(mem, remote_port.0) else {
                    return Ok(SendOutcome::Delivered(Wakes::default()));
                };
                Ok(SendOutcome::Delivered(Wakes::one(remote, rv, r)))
            }
            ChannelState::Ipi => {
                let v = c.notify_vcpu.0;
                let r = d.set_pending(mem, port.0, v);
                Ok(SendOutcome::Delivered(Wakes::one(caller.dom, v, r)))
            }
            ChannelState::Unbound { .. } => Ok(SendOutcome::Delivered(Wakes::default())),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `EVTCHNOP_status`: -ESRCH for an unknown domain, -EINVAL for an invalid port,
    /// -EPERM for another domain's port without privilege. A hypervisor port reads as
    /// interdomain to `DOMID_XEN` port 0.
    pub fn status(
        &self,
        caller: &Caller,
        dom: DomId,
        port: EvtchnPort,
    ) -> Result<EvtchnStatus, Errno> {
        let target = resolve(caller, dom);
        let d = self.domain(target)?;
        let c = d.chan(port.0).ok_or(Errno::EINVAL)?;
        if target != caller.dom && !caller.privileged {
            return Err(Errno::EPERM);
        }
        let (status, u0, u1) = match c.state {
            ChannelState::Free | ChannelState::Reserved => (EVTCHNSTAT_CLOSED, 0, 0),
            ChannelState::Unbound { remote } => (EVTCHNSTAT_UNBOUND, u32::from(remote.0), 0),
            ChannelState::Interdomain {
                remote,
                remote_port,
            } => (EVTCHNSTAT_INTERDOMAIN, u32::from(remote.0), remote_port.0),
            ChannelState::Virq { virq } => (EVTCHNSTAT_VIRQ, virq, 0),
            ChannelState::Ipi => (EVTCHNSTAT_IPI, 0, 0),
        };
        Ok(EvtchnStatus {
            dom,
            pad: 0,
            port,
            status,
            vcpu: c.notify_vcpu.0,
            u0,
            u1,
        })
    }

    /// `EVTCHNOP_unmask`: -EINVAL for an invalid port; a free port is accepted and left
    /// alone. Raises the upcall if the port was masked and pending.
    pub fn unmask(
        &mut self,
        caller: &Caller,
        port: EvtchnPort,
        mem: &impl MachineMemory,
    ) -> Result<Wakes, Errno> {
        let dom = caller.dom;
        let d = self.domain_mut(dom)?;
        let c = *d.chan(port.0).ok_or(Errno::EINVAL)?;
        if !c.usable() || !d.has_vcpu(c.notify_vcpu.0) {
            return Ok(Wakes::default());
        }
        let v = c.notify_vcpu.0;
        let si = d.shared_info;
        let r = match &mut d.abi {
            Abi::TwoLevel => Raised {
                upcall: two_level::unmask(mem, si, port.0, v),
                newly_pending: false,
            },
            Abi::Fifo(f) => {
                let Some(ch) = slot(&mut d.buckets, port.0) else {
                    return Ok(Wakes::default());
                };
                let r = fifo::unmask(f, mem, ch, port.0);
                Raised {
                    upcall: r.upcall && two_level::mark_upcall_pending(mem, si, v),
                    ..r
                }
            }
        };
        Ok(Wakes::one(dom, v, r))
    }

    /// `EVTCHNOP_bind_vcpu`: -ENOENT for a vCPU that does not exist, -EINVAL for an
    /// invalid port or one that cannot move (IPI, per-vCPU VIRQ, free).
    pub fn bind_vcpu(
        &mut self,
        caller: &Caller,
        port: EvtchnPort,
        vcpu: VcpuId,
    ) -> Result<(), Errno> {
        let d = self.domain_mut(caller.dom)?;
        if !d.has_vcpu(vcpu.0) {
            return Err(Errno::ENOENT);
        }
        let c = d.chan_mut(port.0).ok_or(Errno::EINVAL)?;
        match c.state {
            ChannelState::Virq { virq } if !Virq(virq).is_per_vcpu() => c.notify_vcpu = vcpu,
            ChannelState::Unbound { .. } | ChannelState::Interdomain { .. } => c.notify_vcpu = vcpu,
            _ => return Err(Errno::EINVAL),
        }
        Ok(())
    }

    /// `EVTCHNOP_reset`: closes every port of `dom` and returns it to the 2-level ABI.
    /// -ESRCH for an unknown domain, -EPERM for another domain without privilege,
    /// -EINVAL for another domain that is not paused (`target_paused`, which only the
    /// caller knows).
    pub fn reset(
        &mut self,
        caller: &Caller,
        dom: DomId,
        target_paused: bool,
        mem: &impl MachineMemory,
        frames: &mut Frames,
    ) -> Result<(), Errno> {
        let target = resolve(caller, dom);
        let valid = self.domain(target)?.valid_ports();
        if target != caller.dom {
            if !caller.privileged {
                return Err(Errno::EPERM);
            }
            if !target_paused {
                return Err(Errno::EINVAL);
            }
        }
        for port in 1..valid {
            crate::work::step(1);
            // Free ports answer -EINVAL: nothing to do for them.
            let _ = self.close_port(target, port, mem);
        }
        self.domain_mut(target)?.destroy_fifo(frames);
        Ok(())
    }

    /// Raises `virq` of `dom`: a per-vCPU VIRQ on `vcpu`, a global one wherever it was
    /// bound (vCPU 0's binding, its notify vCPU; `vcpu` ignored). Nothing if unbound.
    pub fn raise_virq(
        &mut self,
        dom: DomId,
        vcpu: VcpuId,
        virq: u32,
        mem: &impl MachineMemory,
    ) -> Wakes {
        let Ok(d) = self.domain_mut(dom) else {
            return Wakes::default();
        };
        if virq >= Virq::COUNT {
            return Wakes::default();
        }
        let row = if Virq(virq).is_per_vcpu() { vcpu.0 } else { 0 };
        let Some(&port) = d.virqs.get(row as usize).and_then(|r| r.get(virq as usize)) else {
            return Wakes::default();
        };
        let Some(c) = d.chan(port).filter(|_| port != 0) else {
            return Wakes::default();
        };
        let v = c.notify_vcpu.0;
        let r = d.set_pending(mem, port, v);
        Wakes::one(dom, v, r)
    }

    /// Whether `port` of `dom` is pending, for `SCHEDOP_poll` (Xen's `evtchn_port_poll`):
    /// -EINVAL for an invalid port, -ESRCH for an unknown domain; a free port is never
    /// pending.
    pub fn is_pending(
        &self,
        dom: DomId,
        port: EvtchnPort,
        mem: &impl MachineMemory,
    ) -> Result<bool, Errno> {
        let d = self.domain(dom)?;
        let c = d.chan(port.0).ok_or(Errno::EINVAL)?;
        Ok(c.usable() && d.pending(mem, port.0))
    }

    /// Whether `port` of `dom` is masked under the domain's ABI (invalid and free ports
    /// count as masked).
    pub fn is_masked(&self, dom: DomId, port: EvtchnPort, mem: &impl MachineMemory) -> bool {
        self.domains
            .get(&dom)
            .is_none_or(|d| !d.chan(port.0).is_some_and(Channel::usable) || d.masked(mem, port.0))
    }

    /// `EVTCHNOP_init_control` (FIFO): registers vCPU `vcpu`'s control block at `offset`
    /// in frame `control_mfn` of the caller; the first success switches the domain to
    /// FIFO (already-bound ports keep their 2-level pending state, raised again when
    /// their event-array page is added). Returns `link_bits`.
    ///
    /// -ENOENT for a vCPU that does not exist; -EINVAL for an offset that is not 8-aligned
    /// or crosses the page, a frame that is not the caller's or cannot be writable, or a
    /// vCPU that already has a control block; -ENOMEM if the heap is exhausted.
    pub fn init_control(
        &mut self,
        caller: &Caller,
        control_mfn: Mfn,
        offset: u32,
        vcpu: VcpuId,
        mem: &impl MachineMemory,
        frames: &mut Frames,
    ) -> Result<u8, Errno> {
        let dom = caller.dom;
        let d = self.domain_mut(dom)?;
        if !d.has_vcpu(vcpu.0) {
            return Err(Errno::ENOENT);
        }
        if !fifo::control_offset_ok(offset) {
            return Err(Errno::EINVAL);
        }
        let v = vcpu.0 as usize;
        if let Abi::Fifo(f) = &mut d.abi {
            if f.vcpus[v].control.is_some() {
                return Err(Errno::EINVAL);
            }
            fifo::hold_guest_page(frames, dom, control_mfn)?;
            f.vcpus[v].control = Some((control_mfn, offset));
            return Ok(EVTCHN_FIFO_LINK_BITS as u8);
        }
        let mut vcpus = Vec::new();
        vcpus
            .try_reserve_exact(d.nr_vcpus as usize)
            .map_err(|_| Errno::ENOMEM)?;
        vcpus.resize(d.nr_vcpus as usize, FifoVcpu::default());
        let mut array = Vec::new();
        array
            .try_reserve_exact(EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as usize)
            .map_err(|_| Errno::ENOMEM)?;
        fifo::hold_guest_page(frames, dom, control_mfn)?;
        vcpus[v].control = Some((control_mfn, offset));
        // Xen's setup_ports: keep what was pending under 2-level, default priorities.
        let prev = d.valid_ports().min(two_level::NR_CHANNELS);
        let si = d.shared_info;
        for port in 1..prev {
            crate::work::step(1);
            let was_pending = two_level::is_pending(mem, si, port);
            if let Some(c) = d.chan_mut(port) {
                c.saved_pending |= was_pending;
                c.priority = DEFAULT_PRIORITY;
            }
        }
        d.abi = Abi::Fifo(Box::new(Fifo { vcpus, array }));
        Ok(EVTCHN_FIFO_LINK_BITS as u8)
    }

    /// `EVTCHNOP_expand_array` (FIFO): adds frame `array_mfn` of the caller as the next
    /// event-array page and raises the ports of that page that were raised while it was
    /// missing. -EOPNOTSUPP before `init_control`, -ENOSPC beyond 128 pages, -EINVAL for
    /// a frame that is not the caller's or cannot be writable.
    pub fn expand_array(
        &mut self,
        caller: &Caller,
        array_mfn: Mfn,
        mem: &impl MachineMemory,
        frames: &mut Frames,
    ) -> Result<Wakes, Errno> {
        let dom = caller.dom;
        let d = self.domain_mut(dom)?;
        let Abi::Fifo(f) = &mut d.abi else {
            return Err(Errno::EOPNOTSUPP);
        };
        if f.array.len() >= EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as usize {
            return Err(Errno::ENOSPC);
        }
        f.array.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        fifo::hold_guest_page(frames, dom, array_mfn)?;
        let first = f.num_words();
        f.array.push(array_mfn);
        let end = f.num_words().min(d.valid_ports());
        let mut wakes = Wakes::default();
        for port in first..end {
            crate::work::step(1);
            let Some(c) = d.chan_mut(port).filter(|c| c.saved_pending) else {
                continue;
            };
            c.saved_pending = false;
            let v = c.notify_vcpu.0;
            let r = d.set_pending(mem, port, v);
            wakes.add(dom, v, r);
        }
        Ok(wakes)
    }

    /// `EVTCHNOP_set_priority` (FIFO): -EINVAL for an invalid port or a priority above
    /// 15, -ENOSYS under the 2-level ABI, -EACCES for a free port. Applies to events
    /// raised from now on.
    pub fn set_priority(
        &mut self,
        caller: &Caller,
        port: EvtchnPort,
        priority: u32,
    ) -> Result<(), Errno> {
        let d = self.domain_mut(caller.dom)?;
        let fifo = matches!(d.abi, Abi::Fifo(_));
        let c = d.chan_mut(port.0).ok_or(Errno::EINVAL)?;
        if !fifo {
            return Err(Errno::ENOSYS);
        }
        if !c.usable() {
            return Err(Errno::EACCES);
        }
        if priority > EVTCHN_FIFO_PRIORITY_MIN {
            return Err(Errno::EINVAL);
        }
        c.priority = priority as u8;
        Ok(())
    }
}
