//! `event_channel_op` (hypercall 32) commands and arguments, VIRQ numbers and the FIFO
//! event-channel constants (`xen/include/public/event_channel.h`, `xen.h`).
//!
//! Every argument struct has Xen's layout (checked below); the safe wrappers that use them
//! are in [`crate::evtchn`], the upcall dispatchers in [`crate::events`].

use crate::ids::{DomId, EvtchnPort};
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The `EVTCHNOP_*` commands, generated from `hypercall-gen/hypercalls.toml`.
pub use crate::generated::event_channel_op::*;

/// `EVTCHNSTAT_closed`: the port is free.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
/// `EVTCHNSTAT_unbound`: allocated, waiting for a remote domain to bind.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// `EVTCHNSTAT_interdomain`: connected to a port of another (or the same) domain.
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
/// `EVTCHNSTAT_pirq`: bound to a physical IRQ.
pub const EVTCHNSTAT_PIRQ: u32 = 3;
/// `EVTCHNSTAT_virq`: bound to a virtual IRQ.
pub const EVTCHNSTAT_VIRQ: u32 = 4;
/// `EVTCHNSTAT_ipi`: an inter-vCPU channel of this domain.
pub const EVTCHNSTAT_IPI: u32 = 5;

/// `EVTCHN_FIFO_PRIORITY_MAX`: the most urgent FIFO queue.
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// `EVTCHN_FIFO_PRIORITY_DEFAULT`: queue of a newly bound port.
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// `EVTCHN_FIFO_PRIORITY_MIN`: the least urgent FIFO queue.
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// `EVTCHN_FIFO_MAX_QUEUES`: one queue per priority.
pub const EVTCHN_FIFO_MAX_QUEUES: usize = 16;
/// `EVTCHN_FIFO_LINK_BITS`: width of the LINK field of an event word.
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
/// `EVTCHN_FIFO_NR_CHANNELS`: ports of the FIFO ABI.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;
/// Event word bit: the event is pending.
pub const EVTCHN_FIFO_PENDING: u32 = 1 << 31;
/// Event word bit: the event is masked.
pub const EVTCHN_FIFO_MASKED: u32 = 1 << 30;
/// Event word bit: the event is on a queue.
pub const EVTCHN_FIFO_LINKED: u32 = 1 << 29;
/// Event word bit: the hypervisor is updating LINK; the guest must not unmask.
pub const EVTCHN_FIFO_BUSY: u32 = 1 << 28;
/// Event word bits 16:0: the next port of the queue (0 = end).
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// Event words in one event-array page.
pub const EVTCHN_FIFO_EVENT_WORDS_PER_PAGE: u32 = 1024;
/// Event-array pages a domain may add with `expand_array`.
pub const EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES: u32 =
    EVTCHN_FIFO_NR_CHANNELS / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;

/// A virtual IRQ number (`VIRQ_*`), the source of a port bound with `bind_virq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Virq(pub u32);

impl Virq {
    /// Per-vCPU timer: `set_timer_op`, single-shot and periodic timers.
    pub const TIMER: Virq = Virq(0);
    /// Per-vCPU debug request.
    pub const DEBUG: Virq = Virq(1);
    /// Global: emergency console input (hardware domain).
    pub const CONSOLE: Virq = Virq(2);
    /// Global: a domain changed state (exited, crashed...).
    pub const DOM_EXC: Virq = Virq(3);
    /// Global: trace buffer has records.
    pub const TBUF: Virq = Virq(4);
    /// Global: a debugger event.
    pub const DEBUGGER: Virq = Virq(6);
    /// Per-vCPU: oprofile.
    pub const XENOPROF: Virq = Virq(7);
    /// Global: the hypervisor console ring has data.
    pub const CON_RING: Virq = Virq(8);
    /// Global: physical CPU state changed.
    pub const PCPU_STATE: Virq = Virq(9);
    /// Global: memory event.
    pub const MEM_EVENT: Virq = Virq(10);
    /// Per-domain: Argo.
    pub const ARGO: Virq = Virq(11);
    /// Global: the hypervisor is low on memory.
    pub const ENOMEM: Virq = Virq(12);
    /// Per-vCPU: PMU interrupt.
    pub const XENPMU: Virq = Virq(13);
    /// x86: machine-check (`VIRQ_ARCH_0`).
    pub const MCA: Virq = Virq(16);
    /// `NR_VIRQS`: VIRQ numbers are below this.
    pub const COUNT: u32 = 24;

    /// Whether it is per-vCPU (bound separately on each vCPU) rather than global (bound
    /// once, on vCPU 0): Xen 4.17's `!virq_is_global` for x86.
    pub const fn is_per_vcpu(self) -> bool {
        matches!(
            self,
            Virq::TIMER | Virq::DEBUG | Virq::XENOPROF | Virq::XENPMU
        )
    }
}

/// `struct evtchn_alloc_unbound` (`EVTCHNOP_alloc_unbound`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    /// Domain that owns the new port (`DOMID_SELF` for unprivileged callers).
    pub dom: DomId,
    /// Domain allowed to bind to it.
    pub remote_dom: DomId,
    /// OUT: the allocated port.
    pub port: EvtchnPort,
}

/// `struct evtchn_bind_interdomain` (`EVTCHNOP_bind_interdomain`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    /// Domain of the unbound remote port.
    pub remote_dom: DomId,
    /// Padding.
    pub pad: u16,
    /// The remote port.
    pub remote_port: EvtchnPort,
    /// OUT: the local port now connected to it.
    pub local_port: EvtchnPort,
}

/// `struct evtchn_bind_virq` (`EVTCHNOP_bind_virq`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindVirq {
    /// `VIRQ_*` number.
    pub virq: u32,
    /// vCPU to notify (0 for global and per-domain VIRQs).
    pub vcpu: u32,
    /// OUT: the bound port.
    pub port: EvtchnPort,
}

/// `struct evtchn_bind_pirq` (`EVTCHNOP_bind_pirq`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindPirq {
    /// Physical IRQ.
    pub pirq: u32,
    /// `BIND_PIRQ__WILL_SHARE` (1) or 0.
    pub flags: u32,
    /// OUT: the bound port.
    pub port: EvtchnPort,
}

/// `struct evtchn_bind_ipi` (`EVTCHNOP_bind_ipi`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindIpi {
    /// vCPU to notify.
    pub vcpu: u32,
    /// OUT: the bound port.
    pub port: EvtchnPort,
}

/// `struct evtchn_close` (`EVTCHNOP_close`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnClose {
    /// Port to close.
    pub port: EvtchnPort,
}

/// `struct evtchn_send` (`EVTCHNOP_send`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnSend {
    /// Port to notify.
    pub port: EvtchnPort,
}

/// `struct evtchn_status` (`EVTCHNOP_status`). The union at offset 16 is kept as two raw
/// words; [`EvtchnStatus::decode`] interprets it.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnStatus {
    /// Domain owning the port (`DOMID_SELF` for unprivileged callers).
    pub dom: DomId,
    /// Padding.
    pub pad: u16,
    /// Port to query.
    pub port: EvtchnPort,
    /// OUT: an `EVTCHNSTAT_*` value.
    pub status: u32,
    /// OUT: vCPU the port notifies.
    pub vcpu: u32,
    /// OUT: union word 0 (`unbound.dom`, `interdomain.dom`, `pirq` or `virq`).
    pub u0: u32,
    /// OUT: union word 1 (`interdomain.port`).
    pub u1: u32,
}

/// A decoded `EVTCHNOP_status` result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// Free port.
    Closed,
    /// Allocated; `remote` may bind to it.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected.
    Interdomain {
        /// The peer domain.
        remote: DomId,
        /// The peer's port.
        remote_port: EvtchnPort,
    },
    /// Bound to a physical IRQ.
    Pirq(u32),
    /// Bound to a virtual IRQ.
    Virq(Virq),
    /// An IPI channel.
    Ipi,
}

impl EvtchnStatus {
    /// Decodes the OUT fields; `None` for a status value Xen does not define.
    pub const fn decode(&self) -> Option<ChannelState> {
        // Both union members that hold a domid put it in the low 16 bits of word 0.
        let dom = DomId(self.u0 as u16);
        Some(match self.status {
            EVTCHNSTAT_CLOSED => ChannelState::Closed,
            EVTCHNSTAT_UNBOUND => ChannelState::Unbound { remote: dom },
            EVTCHNSTAT_INTERDOMAIN => ChannelState::Interdomain {
                remote: dom,
                remote_port: EvtchnPort(self.u1),
            },
            EVTCHNSTAT_PIRQ => ChannelState::Pirq(self.u0),
            EVTCHNSTAT_VIRQ => ChannelState::Virq(Virq(self.u0)),
            EVTCHNSTAT_IPI => ChannelState::Ipi,
            _ => return None,
        })
    }
}

/// `struct evtchn_bind_vcpu` (`EVTCHNOP_bind_vcpu`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindVcpu {
    /// Port to move.
    pub port: EvtchnPort,
    /// vCPU that will be notified.
    pub vcpu: u32,
}

/// `struct evtchn_unmask` (`EVTCHNOP_unmask`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnUnmask {
    /// Port to unmask.
    pub port: EvtchnPort,
}

/// `struct evtchn_reset` (`EVTCHNOP_reset`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnReset {
    /// Domain whose ports are all closed (`DOMID_SELF`).
    pub dom: DomId,
}

/// `struct evtchn_init_control` (`EVTCHNOP_init_control`, FIFO ABI).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnInitControl {
    /// Frame holding the control block (the MFN for a PV guest).
    pub control_gfn: u64,
    /// Byte offset of the control block in that frame (8-aligned, ≤ 4096 − 72).
    pub offset: u32,
    /// vCPU the control block belongs to.
    pub vcpu: u32,
    /// OUT: `EVTCHN_FIFO_LINK_BITS` of the hypervisor.
    pub link_bits: u8,
    /// Padding.
    pub pad: [u8; 7],
}

/// `struct evtchn_expand_array` (`EVTCHNOP_expand_array`, FIFO ABI).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnExpandArray {
    /// Frame of the next event-array page (the MFN for a PV guest).
    pub array_gfn: u64,
}

/// `struct evtchn_set_priority` (`EVTCHNOP_set_priority`, FIFO ABI).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnSetPriority {
    /// Port to change.
    pub port: EvtchnPort,
    /// 0 (most urgent) ..= 15.
    pub priority: u32,
}

/// `struct evtchn_fifo_control_block`: one per vCPU, in guest memory.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnFifoControlBlock {
    /// Bit q set: queue q is not empty.
    pub ready: u32,
    /// Reserved.
    pub rsvd: u32,
    /// First port of each priority queue (0 = empty).
    pub head: [u32; EVTCHN_FIFO_MAX_QUEUES],
}

const_assert_eq!(size_of::<EvtchnAllocUnbound>(), 8);
const_assert_eq!(offset_of!(EvtchnAllocUnbound, remote_dom), 2);
const_assert_eq!(offset_of!(EvtchnAllocUnbound, port), 4);
const_assert_eq!(size_of::<EvtchnBindInterdomain>(), 12);
const_assert_eq!(offset_of!(EvtchnBindInterdomain, remote_port), 4);
const_assert_eq!(offset_of!(EvtchnBindInterdomain, local_port), 8);
const_assert_eq!(size_of::<EvtchnBindVirq>(), 12);
const_assert_eq!(offset_of!(EvtchnBindVirq, vcpu), 4);
const_assert_eq!(offset_of!(EvtchnBindVirq, port), 8);
const_assert_eq!(size_of::<EvtchnBindPirq>(), 12);
const_assert_eq!(offset_of!(EvtchnBindPirq, port), 8);
const_assert_eq!(size_of::<EvtchnBindIpi>(), 8);
const_assert_eq!(offset_of!(EvtchnBindIpi, port), 4);
const_assert_eq!(size_of::<EvtchnClose>(), 4);
const_assert_eq!(size_of::<EvtchnSend>(), 4);
const_assert_eq!(size_of::<EvtchnStatus>(), 24);
const_assert_eq!(offset_of!(EvtchnStatus, port), 4);
const_assert_eq!(offset_of!(EvtchnStatus, status), 8);
const_assert_eq!(offset_of!(EvtchnStatus, vcpu), 12);
const_assert_eq!(offset_of!(EvtchnStatus, u0), 16);
const_assert_eq!(offset_of!(EvtchnStatus, u1), 20);
const_assert_eq!(size_of::<EvtchnBindVcpu>(), 8);
const_assert_eq!(offset_of!(EvtchnBindVcpu, vcpu), 4);
const_assert_eq!(size_of::<EvtchnUnmask>(), 4);
const_assert_eq!(size_of::<EvtchnReset>(), 2);
const_assert_eq!(size_of::<EvtchnInitControl>(), 24);
const_assert_eq!(offset_of!(EvtchnInitControl, offset), 8);
const_assert_eq!(offset_of!(EvtchnInitControl, vcpu), 12);
const_assert_eq!(offset_of!(EvtchnInitControl, link_bits), 16);
const_assert_eq!(size_of::<EvtchnExpandArray>(), 8);
const_assert_eq!(size_of::<EvtchnSetPriority>(), 8);
const_assert_eq!(offset_of!(EvtchnSetPriority, priority), 4);
const_assert_eq!(size_of::<EvtchnFifoControlBlock>(), 72);
const_assert_eq!(offset_of!(EvtchnFifoControlBlock, head), 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decoding() {
        let mut s = EvtchnStatus {
            status: EVTCHNSTAT_INTERDOMAIN,
            u0: 0xdead_0005,
            u1: 9,
            ..Default::default()
        };
        assert_eq!(
            s.decode(),
            Some(ChannelState::Interdomain {
                remote: DomId(5),
                remote_port: EvtchnPort(9)
            })
        );
        s.status = EVTCHNSTAT_UNBOUND;
        assert_eq!(s.decode(), Some(ChannelState::Unbound { remote: DomId(5) }));
        s.status = EVTCHNSTAT_VIRQ;
        s.u0 = 0;
        assert_eq!(s.decode(), Some(ChannelState::Virq(Virq::TIMER)));
        s.status = 6;
        assert_eq!(s.decode(), None);
    }

    #[test]
    fn fifo_word_bits_do_not_overlap() {
        let flags = [
            EVTCHN_FIFO_PENDING,
            EVTCHN_FIFO_MASKED,
            EVTCHN_FIFO_LINKED,
            EVTCHN_FIFO_BUSY,
        ];
        let mut seen = EVTCHN_FIFO_LINK_MASK;
        for f in flags {
            assert_eq!(seen & f, 0);
            seen |= f;
        }
        assert_eq!(EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES, 128);
    }
}
