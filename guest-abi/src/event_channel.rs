//! `event_channel_op` (hypercall 32) commands and arguments.

use crate::ids::{DomId, EvtchnPort};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The `EVTCHNOP_*` commands, generated from `hypercall-gen/hypercalls.toml`.
pub use crate::generated::event_channel_op::*;

/// `struct evtchn_send`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnSend {
    /// Port to notify.
    pub port: EvtchnPort,
}

const_assert_eq!(core::mem::size_of::<EvtchnSend>(), 4);

/// `struct evtchn_alloc_unbound` (8 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    /// Domain the port is allocated in (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// The only domain allowed to bind the port (`DOMID_SELF` = the caller).
    pub remote_dom: DomId,
    /// OUT: the new port.
    pub port: EvtchnPort,
}

/// `struct evtchn_bind_interdomain` (12 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    /// Domain holding the unbound port (`DOMID_SELF` for loopback).
    pub remote_dom: DomId,
    /// Padding.
    pub pad: u16,
    /// The unbound port of `remote_dom`.
    pub remote_port: EvtchnPort,
    /// OUT: the caller's new port.
    pub local_port: EvtchnPort,
}

/// `struct evtchn_bind_virq` (12 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindVirq {
    /// `VIRQ_*` number.
    pub virq: u32,
    /// vCPU to bind it on (0 for global VIRQs).
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: EvtchnPort,
}

/// `struct evtchn_bind_ipi` (8 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindIpi {
    /// vCPU notified when the port is signalled.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: EvtchnPort,
}

/// `struct evtchn_close`, `struct evtchn_unmask` (4 bytes): just a port.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnPortArg {
    /// The port.
    pub port: EvtchnPort,
}

/// `struct evtchn_bind_vcpu` (8 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindVcpu {
    /// The port to move.
    pub port: EvtchnPort,
    /// vCPU notified from now on.
    pub vcpu: u32,
}

/// `struct evtchn_reset` (2 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnReset {
    /// Domain whose ports are all closed (`DOMID_SELF` unless privileged).
    pub dom: DomId,
}

/// `EvtchnStatus::status`: the port is free.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
/// `EvtchnStatus::status`: waiting for `remote_dom` to bind it.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// `EvtchnStatus::status`: connected to a port of another (or the same) domain.
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
/// `EvtchnStatus::status`: bound to a physical IRQ.
pub const EVTCHNSTAT_PIRQ: u32 = 3;
/// `EvtchnStatus::status`: bound to a virtual IRQ.
pub const EVTCHNSTAT_VIRQ: u32 = 4;
/// `EvtchnStatus::status`: an inter-vCPU channel.
pub const EVTCHNSTAT_IPI: u32 = 5;

/// `struct evtchn_status` (24 bytes). The union at 16 is `u0`/`u1`: `unbound.dom` and
/// `interdomain.dom` are the low 16 bits of `u0`, `interdomain.port` is `u1`, `pirq` and
/// `virq` are `u0`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnStatus {
    /// IN: domain whose port is queried (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// Padding.
    pub pad: u16,
    /// IN: the port.
    pub port: EvtchnPort,
    /// OUT: `EVTCHNSTAT_*`.
    pub status: u32,
    /// OUT: vCPU the port notifies.
    pub vcpu: u32,
    /// OUT: first word of the union.
    pub u0: u32,
    /// OUT: second word of the union.
    pub u1: u32,
}

/// `struct evtchn_init_control` (24 bytes, FIFO ABI).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnInitControl {
    /// Frame of the control block (the MFN for a PV guest).
    pub control_gfn: u64,
    /// Byte offset of the control block in that frame (8-aligned).
    pub offset: u32,
    /// vCPU the control block belongs to.
    pub vcpu: u32,
    /// OUT: `EVTCHN_FIFO_LINK_BITS`.
    pub link_bits: u8,
    /// Padding.
    pub pad: [u8; 7],
}

/// `struct evtchn_expand_array` (8 bytes, FIFO ABI).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnExpandArray {
    /// Frame of the next event-array page (the MFN for a PV guest).
    pub array_gfn: u64,
}

/// `struct evtchn_set_priority` (8 bytes, FIFO ABI).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnSetPriority {
    /// The port.
    pub port: EvtchnPort,
    /// 0 (highest) ..= 15 (lowest).
    pub priority: u32,
}

/// `struct evtchn_fifo_control_block` (72 bytes, one per vCPU).
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

/// Bits of a FIFO event word's LINK field (ports < 2^17).
pub const EVTCHN_FIFO_LINK_BITS: u8 = 17;
/// Mask of the LINK field of an event word.
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// Ports of the FIFO ABI.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;
/// Event word bit: the event is pending.
pub const EVTCHN_FIFO_PENDING: u32 = 31;
/// Event word bit: the event is masked.
pub const EVTCHN_FIFO_MASKED: u32 = 30;
/// Event word bit: the event is on a queue.
pub const EVTCHN_FIFO_LINKED: u32 = 29;
/// Event word bit: the hypervisor is updating LINK.
pub const EVTCHN_FIFO_BUSY: u32 = 28;
/// Highest priority.
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// Priority of a newly bound port.
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// Lowest priority.
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// Queues per vCPU (one per priority).
pub const EVTCHN_FIFO_MAX_QUEUES: usize = 16;
/// Event words per event-array page.
pub const EVTCHN_FIFO_EVENT_WORDS_PER_PAGE: u32 = 1024;
/// Event-array pages at most.
pub const EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES: u32 = 128;

/// Per-vCPU timer (`set_timer_op`, periodic timer).
pub const VIRQ_TIMER: u32 = 0;
/// Per-vCPU debug request.
pub const VIRQ_DEBUG: u32 = 1;
/// Global: emergency console input (for the console domain).
pub const VIRQ_CONSOLE: u32 = 2;
/// Global: a domain exited or crashed (for the control domain).
pub const VIRQ_DOM_EXC: u32 = 3;
/// Global: trace buffer.
pub const VIRQ_TBUF: u32 = 4;
/// Global: debugger.
pub const VIRQ_DEBUGGER: u32 = 6;
/// Per-vCPU: oprofile.
pub const VIRQ_XENOPROF: u32 = 7;
/// Global: the hypervisor console ring has new output.
pub const VIRQ_CON_RING: u32 = 8;
/// Global: physical CPU state changed.
pub const VIRQ_PCPU_STATE: u32 = 9;
/// Global: memory event.
pub const VIRQ_MEM_EVENT: u32 = 10;
/// Per-domain: Argo.
pub const VIRQ_ARGO: u32 = 11;
/// Global: low on memory.
pub const VIRQ_ENOMEM: u32 = 12;
/// Per-vCPU: PMU.
pub const VIRQ_XENPMU: u32 = 13;
/// First architecture VIRQ (x86: machine check); the 8 arch VIRQs are global on x86.
pub const VIRQ_ARCH_0: u32 = 16;
/// VIRQs: valid numbers are `0..NR_VIRQS`.
pub const NR_VIRQS: u32 = 24;

/// Whether `virq` is per-vCPU (bound separately on each vCPU) rather than global (bound
/// once, on vCPU 0). Xen 4.17's `virq_is_global` for x86.
pub const fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU)
}

const_assert_eq!(core::mem::size_of::<EvtchnAllocUnbound>(), 8);
const_assert_eq!(core::mem::offset_of!(EvtchnAllocUnbound, remote_dom), 2);
const_assert_eq!(core::mem::offset_of!(EvtchnAllocUnbound, port), 4);
const_assert_eq!(core::mem::size_of::<EvtchnBindInterdomain>(), 12);
const_assert_eq!(core::mem::offset_of!(EvtchnBindInterdomain, remote_port), 4);
const_assert_eq!(core::mem::offset_of!(EvtchnBindInterdomain, local_port), 8);
const_assert_eq!(core::mem::size_of::<EvtchnBindVirq>(), 12);
const_assert_eq!(core::mem::offset_of!(EvtchnBindVirq, port), 8);
const_assert_eq!(core::mem::size_of::<EvtchnBindIpi>(), 8);
const_assert_eq!(core::mem::size_of::<EvtchnPortArg>(), 4);
const_assert_eq!(core::mem::size_of::<EvtchnBindVcpu>(), 8);
const_assert_eq!(core::mem::size_of::<EvtchnReset>(), 2);
const_assert_eq!(core::mem::size_of::<EvtchnStatus>(), 24);
const_assert_eq!(core::mem::offset_of!(EvtchnStatus, port), 4);
const_assert_eq!(core::mem::offset_of!(EvtchnStatus, status), 8);
const_assert_eq!(core::mem::offset_of!(EvtchnStatus, vcpu), 12);
const_assert_eq!(core::mem::offset_of!(EvtchnStatus, u0), 16);
const_assert_eq!(core::mem::offset_of!(EvtchnStatus, u1), 20);
const_assert_eq!(core::mem::size_of::<EvtchnInitControl>(), 24);
const_assert_eq!(core::mem::offset_of!(EvtchnInitControl, offset), 8);
const_assert_eq!(core::mem::offset_of!(EvtchnInitControl, vcpu), 12);
const_assert_eq!(core::mem::offset_of!(EvtchnInitControl, link_bits), 16);
const_assert_eq!(core::mem::size_of::<EvtchnExpandArray>(), 8);
const_assert_eq!(core::mem::size_of::<EvtchnSetPriority>(), 8);
const_assert_eq!(core::mem::size_of::<EvtchnFifoControlBlock>(), 72);
const_assert_eq!(core::mem::offset_of!(EvtchnFifoControlBlock, head), 8);
