//! Host tests of the event-channel table: every operation and its errno values, the
//! 2-level and FIFO delivery bits in (fake) guest memory, and a property test of random
//! interleaved operations from several domains checking invariants after every step.

extern crate std;

use super::table::ChannelState;
use super::table::*;
use crate::mmu::{FrameInfo, Frames, PageType, TypeState};
use crate::platform::MachineMemory;
use crate::testutil::Rng;
use crate::testutil::{FakeMemory, leak};
use core::mem::offset_of;
use std::collections::BTreeMap;
use std::vec::Vec;
use xen_pv_abi::event_channel::*;
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::shared_info::{SharedInfo, VcpuInfo};
use xen_pv_abi::{DomId, Errno, EvtchnPort, Mfn, VcpuId};

// The VIRQ numbers as plain integers, as the table takes them.
const VIRQ_TIMER: u32 = Virq::TIMER.0;
const VIRQ_DEBUG: u32 = Virq::DEBUG.0;
const VIRQ_CONSOLE: u32 = Virq::CONSOLE.0;
const VIRQ_ARCH_0: u32 = Virq::MCA.0;
const NR_VIRQS: u32 = Virq::COUNT;

const FRAMES: usize = 96;

struct Fx {
    mem: FakeMemory,
    frames: Frames,
    ev: EventChannels,
    si: BTreeMap<DomId, Mfn>,
}

fn d(id: u16) -> DomId {
    DomId(id)
}
fn p(n: u32) -> EvtchnPort {
    EvtchnPort(n)
}
fn v(n: u32) -> VcpuId {
    VcpuId(n)
}
/// Domain `id` calling from vCPU 0, unprivileged.
fn me(id: u16) -> Caller {
    Caller {
        dom: DomId(id),
        vcpu: VcpuId(0),
        privileged: false,
    }
}
fn privileged(id: u16) -> Caller {
    Caller {
        privileged: true,
        ..me(id)
    }
}

impl Fx {
    /// Domains `(id, vcpus)` with the default port limit.
    fn new(doms: &[(u16, u32)]) -> Fx {
        Fx::with_max_port(doms, DEFAULT_MAX_PORT)
    }

    fn with_max_port(doms: &[(u16, u32)], max_port: u32) -> Fx {
        let ram = PAGE_SIZE as u64..(FRAMES * PAGE_SIZE) as u64;
        let mut fx = Fx {
            mem: FakeMemory::new(FRAMES * PAGE_SIZE),
            frames: Frames::new(
                leak(FrameInfo::UNUSABLE, FRAMES),
                leak(0, FRAMES),
                core::slice::from_ref(&ram),
            ),
            ev: EventChannels::new(),
            si: BTreeMap::new(),
        };
        for &(id, vcpus) in doms {
            fx.add(id, vcpus, max_port);
        }
        fx
    }

    fn add(&mut self, id: u16, vcpus: u32, max_port: u32) {
        let si = self.frames.alloc(d(id)).unwrap();
        self.mem.fill(si.maddr(), 0, PAGE_SIZE).unwrap();
        self.ev.add_domain(d(id), si, vcpus, max_port).unwrap();
        self.si.insert(d(id), si);
    }

    fn si(&self, id: u16) -> u64 {
        self.si[&d(id)].maddr()
    }

    fn bit(&self, addr: u64, bit: u32) -> bool {
        let mut b = [0u8];
        self.mem.read(addr + u64::from(bit / 8), &mut b).unwrap();
        b[0] & (1 << (bit % 8)) != 0
    }
    fn set_bit(&self, addr: u64, bit: u32, on: bool) {
        let a = addr + u64::from(bit / 8);
        let mut b = [0u8];
        self.mem.read(a, &mut b).unwrap();
        let m = 1u8 << (bit % 8);
        b[0] = if on { b[0] | m } else { b[0] & !m };
        self.mem.write(a, &b).unwrap();
    }

    fn pending(&self, id: u16, port: u32) -> bool {
        self.bit(
            self.si(id) + offset_of!(SharedInfo, evtchn_pending) as u64,
            port,
        )
    }
    fn masked(&self, id: u16, port: u32) -> bool {
        self.bit(
            self.si(id) + offset_of!(SharedInfo, evtchn_mask) as u64,
            port,
        )
    }
    fn mask(&self, id: u16, port: u32, on: bool) {
        self.set_bit(
            self.si(id) + offset_of!(SharedInfo, evtchn_mask) as u64,
            port,
            on,
        );
    }
    fn vcpu_info(&self, id: u16, vcpu: u32) -> u64 {
        self.si(id) + u64::from(vcpu) * 64
    }
    fn sel(&self, id: u16, vcpu: u32) -> u64 {
        self.mem
            .read_u64(self.vcpu_info(id, vcpu) + offset_of!(VcpuInfo, evtchn_pending_sel) as u64)
            .unwrap()
    }
    fn upcall(&self, id: u16, vcpu: u32) -> u8 {
        let mut b = [0u8];
        self.mem
            .read(
                self.vcpu_info(id, vcpu) + offset_of!(VcpuInfo, evtchn_upcall_pending) as u64,
                &mut b,
            )
            .unwrap();
        b[0]
    }
    /// The guest's upcall handler: takes every unmasked pending event (2-level).
    fn consume(&self, id: u16, vcpus: u32) {
        for vc in 0..vcpus {
            let vi = self.vcpu_info(id, vc);
            self.mem.write(vi, &[0]).unwrap();
            self.mem.write_u64(vi + 8, 0).unwrap();
        }
        for w in 0..64u64 {
            let pa = self.si(id) + offset_of!(SharedInfo, evtchn_pending) as u64 + w * 8;
            let ma = self.si(id) + offset_of!(SharedInfo, evtchn_mask) as u64 + w * 8;
            let pend = self.mem.read_u64(pa).unwrap();
            let mask = self.mem.read_u64(ma).unwrap();
            self.mem.write_u64(pa, pend & mask).unwrap();
        }
    }

    fn send(&mut self, c: Caller, port: u32) -> Result<SendOutcome, Errno> {
        self.ev.send(&c, p(port), &self.mem)
    }
    fn delivered(&mut self, c: Caller, port: u32) -> Wakes {
        match self.send(c, port) {
            Ok(SendOutcome::Delivered(w)) => w,
            other => panic!("send {port}: {other:?}"),
        }
    }
    fn unbound(&mut self, c: Caller, dom: u16, remote: u16) -> Result<u32, Errno> {
        self.ev
            .alloc_unbound(&c, d(dom), d(remote), &self.mem)
            .map(|p| p.0)
    }
    fn interdomain(&mut self, c: Caller, rdom: u16, rport: u32) -> Result<u32, Errno> {
        self.ev
            .bind_interdomain(&c, d(rdom), p(rport), &self.mem)
            .map(|(p, _)| p.0)
    }
    /// A channel between `a` and `b`: (a's port, b's port).
    fn connect(&mut self, a: u16, b: u16) -> (u32, u32) {
        let pa = self.unbound(me(a), 0x7ff0, b).unwrap();
        let pb = self.interdomain(me(b), a, pa).unwrap();
        (pa, pb)
    }
    fn state(&self, id: u16, port: u32) -> ChannelState {
        self.ev.channel(d(id), p(port)).unwrap().state
    }
}

fn upcalls(w: &Wakes) -> Vec<(DomId, VcpuId)> {
    w.upcalls().collect()
}

// ---- domains and ports ------------------------------------------------------------------

#[test]
fn add_domain_checks_arguments() {
    let mut fx = Fx::new(&[(1, 1)]);
    let si = Mfn(5);
    assert_eq!(fx.ev.add_domain(d(2), si, 0, 1023), Err(Errno::EINVAL));
    assert_eq!(fx.ev.add_domain(d(2), si, 33, 1023), Err(Errno::EINVAL));
    assert_eq!(
        fx.ev.add_domain(DomId::SELF, si, 1, 1023),
        Err(Errno::EINVAL)
    );
    assert_eq!(fx.ev.add_domain(d(1), si, 1, 1023), Err(Errno::EEXIST));
    assert_eq!(fx.ev.add_domain(d(2), si, 32, 1023), Ok(()));
    // Port 0 is reserved, reported closed; the first bucket exists from the start.
    assert_eq!(fx.state(1, 0), ChannelState::Reserved);
    assert_eq!(fx.ev.buckets_in_use(), 2);
}

#[test]
fn alloc_unbound_ports_and_permissions() {
    let mut fx = Fx::new(&[(1, 1), (2, 1)]);
    assert_eq!(fx.unbound(me(1), 0x7ff0, 2), Ok(1));
    assert_eq!(fx.unbound(me(1), 1, 0x7ff0), Ok(2));
    assert_eq!(fx.state(1, 1), ChannelState::Unbound { remote: d(2) });
    assert_eq!(fx.state(1, 2), ChannelState::Unbound { remote: d(1) });
    // Another domain's port needs privilege; an unknown domain is -ESRCH.
    assert_eq!(fx.unbound(me(1), 2, 1), Err(Errno::EPERM));
    assert_eq!(
        fx.state(2, 1),
        ChannelState::Free,
        "refused port stays free"
    );
    assert_eq!(fx.unbound(me(1), 9, 1), Err(Errno::ESRCH));
    assert_eq!(fx.unbound(privileged(1), 2, 1), Ok(1));
    assert_eq!(fx.state(2, 1), ChannelState::Unbound { remote: d(1) });
    // As Xen, the remote domain is recorded without a check.
    assert_eq!(fx.unbound(me(1), 0x7ff0, 77), Ok(3));
    assert_eq!(fx.state(1, 3), ChannelState::Unbound { remote: d(77) });
}

#[test]
fn ports_are_limited_by_max_port_and_reused() {
    let mut fx = Fx::with_max_port(&[(1, 1)], 70);
    for want in 1..=70 {
        assert_eq!(fx.unbound(me(1), 0x7ff0, 1), Ok(want));
    }
    assert_eq!(fx.unbound(me(1), 0x7ff0, 1), Err(Errno::ENOSPC));
    assert_eq!(fx.ev.buckets_in_use(), 2);
    fx.ev.close(&me(1), p(33), &fx.mem).unwrap();
    assert_eq!(
        fx.unbound(me(1), 0x7ff0, 1),
        Ok(33),
        "lowest free port first"
    );
    // Ports beyond the buckets are invalid; free ports inside them are merely closed.
    assert!(fx.ev.channel(d(1), p(128)).is_none());
    let st = |port| fx.ev.status(&me(1), DomId::SELF, p(port)).map(|s| s.status);
    assert_eq!(st(127), Ok(EVTCHNSTAT_CLOSED));
    assert_eq!(st(128), Err(Errno::EINVAL));
}

#[test]
fn default_limit_is_1023_ports() {
    let mut fx = Fx::new(&[(1, 1)]);
    for want in 1..=1023 {
        assert_eq!(fx.ev.bind_ipi(&me(1), v(0), &fx.mem), Ok(p(want)));
    }
    assert_eq!(fx.ev.bind_ipi(&me(1), v(0), &fx.mem), Err(Errno::ENOSPC));
    assert_eq!(fx.ev.buckets_in_use(), 16);
}

#[test]
fn bind_interdomain_rules() {
    let mut fx = Fx::new(&[(1, 2), (2, 1), (3, 1)]);
    let for3 = fx.unbound(me(1), 0x7ff0, 3).unwrap();
    assert_eq!(
        fx.interdomain(me(2), 1, for3),
        Err(Errno::EINVAL),
        "reserved for 3"
    );
    assert_eq!(
        fx.interdomain(me(2), 1, 500),
        Err(Errno::EINVAL),
        "invalid port"
    );
    assert_eq!(
        fx.interdomain(me(2), 1, 40),
        Err(Errno::EINVAL),
        "free port"
    );
    assert_eq!(
        fx.interdomain(me(2), 1, 0),
        Err(Errno::EINVAL),
        "reserved port 0"
    );
    assert_eq!(fx.interdomain(me(2), 9, for3), Err(Errno::ESRCH));
    let for2 = fx.unbound(me(1), 0x7ff0, 2).unwrap();
    let (local, wakes) = fx
        .ev
        .bind_interdomain(&me(2), d(1), p(for2), &fx.mem)
        .unwrap();
    assert_eq!(
        fx.state(2, local.0),
        ChannelState::Interdomain {
            remote: d(1),
            remote_port: p(for2)
        }
    );
    assert_eq!(
        fx.state(1, for2),
        ChannelState::Interdomain {
            remote: d(2),
            remote_port: local
        }
    );
    // The new local port is raised at once.
    assert!(fx.pending(2, local.0));
    assert_eq!(upcalls(&wakes), [(d(2), v(0))]);
    assert_eq!(wakes.poll_check(), Some(d(2)));
    // Bound ports cannot be bound again.
    assert_eq!(fx.interdomain(me(2), 1, for2), Err(Errno::EINVAL));
    // Loopback: a domain binds its own unbound port.
    let own = fx.unbound(me(3), 0x7ff0, 0x7ff0).unwrap();
    let back = fx.interdomain(me(3), 0x7ff0, own).unwrap();
    assert_ne!(own, back);
    assert_eq!(
        fx.state(3, own),
        ChannelState::Interdomain {
            remote: d(3),
            remote_port: p(back)
        }
    );
    fx.consume(3, 1);
    fx.delivered(me(3), own);
    assert!(fx.pending(3, back) && !fx.pending(3, own));
}

// ---- 2-level delivery -------------------------------------------------------------------

#[test]
fn send_sets_pending_selector_and_upcall_once() {
    let mut fx = Fx::new(&[(1, 1), (2, 2)]);
    let (pa, pb) = fx.connect(1, 2);
    fx.consume(2, 2);
    fx.ev.bind_vcpu(&me(2), p(pb), v(1)).unwrap();
    let w = fx.delivered(me(1), pa);
    assert!(fx.pending(2, pb));
    assert_eq!(fx.sel(2, 1), 1 << (pb / 64));
    assert_eq!(fx.upcall(2, 1), 1);
    assert_eq!(fx.sel(2, 0), 0, "only the notify vCPU");
    assert_eq!(upcalls(&w), [(d(2), v(1))]);
    assert_eq!(w.poll_check(), Some(d(2)));
    // Already pending: nothing new.
    let w = fx.delivered(me(1), pa);
    assert!(w.is_empty());
    // The guest took it; the next send raises again.
    fx.consume(2, 2);
    assert!(!fx.delivered(me(1), pa).is_empty());
    // The sender's side is untouched.
    assert!(!fx.pending(1, pa));
}

#[test]
fn masked_port_pends_without_upcall_until_unmask() {
    let mut fx = Fx::new(&[(1, 1), (2, 1)]);
    let (pa, pb) = fx.connect(1, 2);
    fx.consume(2, 1);
    fx.mask(2, pb, true);
    let w = fx.delivered(me(1), pa);
    assert!(fx.pending(2, pb));
    assert_eq!((fx.sel(2, 0), fx.upcall(2, 0)), (0, 0));
    assert_eq!(upcalls(&w), []);
    assert_eq!(
        w.poll_check(),
        Some(d(2)),
        "a poller wakes even for a masked port"
    );
    let w = fx.ev.unmask(&me(2), p(pb), &fx.mem).unwrap();
    assert!(!fx.masked(2, pb));
    assert_eq!((fx.sel(2, 0), fx.upcall(2, 0)), (1 << (pb / 64), 1));
    assert_eq!(upcalls(&w), [(d(2), v(0))]);
    // Unmasking an unmasked port does nothing (Xen tests and clears the mask bit).
    fx.consume(2, 1);
    fx.ev.unmask(&me(2), p(pb), &fx.mem).unwrap();
    assert_eq!(fx.upcall(2, 0), 0);
    // Unmask errors: invalid port; a free port is accepted.
    assert_eq!(fx.ev.unmask(&me(2), p(4000), &fx.mem), Err(Errno::EINVAL));
    assert_eq!(fx.ev.unmask(&me(2), p(50), &fx.mem), Ok(Wakes::default()));
}

#[test]
fn send_errors_and_unbound_drop() {
    let mut fx = Fx::new(&[(1, 2)]);
    let virq = fx.ev.bind_virq(&me(1), VIRQ_TIMER, v(0), &fx.mem).unwrap();
    assert_eq!(fx.send(me(1), virq.0), Err(Errno::EINVAL));
    assert_eq!(fx.send(me(1), 0), Err(Errno::EINVAL));
    assert_eq!(fx.send(me(1), 20), Err(Errno::EINVAL), "free port");
    assert_eq!(fx.send(me(1), 1 << 20), Err(Errno::EINVAL), "invalid port");
    assert_eq!(fx.send(me(1), u32::MAX), Err(Errno::EINVAL));
    let ub = fx.unbound(me(1), 0x7ff0, 5).unwrap();
    assert_eq!(fx.delivered(me(1), ub), Wakes::default());
    assert!(!fx.pending(1, ub));
    // IPI: raised on its own vCPU.
    let ipi = fx.ev.bind_ipi(&me(1), v(1), &fx.mem).unwrap();
    assert_eq!(fx.ev.bind_ipi(&me(1), v(2), &fx.mem), Err(Errno::ENOENT));
    let w = fx.delivered(me(1), ipi.0);
    assert_eq!(upcalls(&w), [(d(1), v(1))]);
    assert!(fx.pending(1, ipi.0));
}

#[test]
fn close_unbinds_the_peer_and_clears_pending() {
    let mut fx = Fx::new(&[(1, 1), (2, 1)]);
    let (pa, pb) = fx.connect(1, 2);
    fx.delivered(me(1), pa);
    assert!(fx.pending(2, pb));
    fx.ev.close(&me(2), p(pb), &fx.mem).unwrap();
    assert_eq!(fx.state(2, pb), ChannelState::Free);
    assert!(!fx.pending(2, pb), "pending cleared on close");
    assert_eq!(fx.state(1, pa), ChannelState::Unbound { remote: d(2) });
    // The unbound end can be bound again by the same domain.
    assert_eq!(fx.delivered(me(1), pa), Wakes::default());
    let pb2 = fx.interdomain(me(2), 1, pa).unwrap();
    assert_eq!(pb2, pb, "lowest free port");
    assert_eq!(fx.ev.close(&me(2), p(0), &fx.mem), Err(Errno::EINVAL));
    assert_eq!(fx.ev.close(&me(2), p(40), &fx.mem), Err(Errno::EINVAL));
    assert_eq!(fx.ev.close(&me(2), p(64), &fx.mem), Err(Errno::EINVAL));
    // Closing the notify vCPU's binding resets it to vCPU 0 for the next user.
    assert_eq!(fx.ev.channel(d(2), p(pb)).unwrap().notify_vcpu, v(0));
}

#[test]
fn virq_binding_rules_and_raising() {
    let mut fx = Fx::new(&[(1, 2)]);
    let c = me(1);
    let bind = |fx: &mut Fx, virq, vc| fx.ev.bind_virq(&c, virq, v(vc), &fx.mem);
    assert_eq!(bind(&mut fx, NR_VIRQS, 0), Err(Errno::EINVAL));
    assert_eq!(bind(&mut fx, u32::MAX, 0), Err(Errno::EINVAL));
    assert_eq!(
        bind(&mut fx, VIRQ_CONSOLE, 1),
        Err(Errno::EINVAL),
        "global on vCPU 1"
    );
    assert_eq!(bind(&mut fx, VIRQ_ARCH_0, 1), Err(Errno::EINVAL));
    assert_eq!(bind(&mut fx, VIRQ_TIMER, 2), Err(Errno::ENOENT));
    assert_eq!(
        bind(&mut fx, VIRQ_CONSOLE, 5),
        Err(Errno::EINVAL),
        "EINVAL before ENOENT"
    );
    let t0 = bind(&mut fx, VIRQ_TIMER, 0).unwrap();
    let t1 = bind(&mut fx, VIRQ_TIMER, 1).unwrap();
    assert_eq!(bind(&mut fx, VIRQ_TIMER, 1), Err(Errno::EEXIST));
    let con = bind(&mut fx, VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(bind(&mut fx, VIRQ_CONSOLE, 0), Err(Errno::EEXIST));
    assert_eq!(fx.state(1, t1.0), ChannelState::Virq { virq: VIRQ_TIMER });
    assert_eq!(fx.ev.channel(d(1), t1).unwrap().notify_vcpu, v(1));

    let w = fx.ev.raise_virq(d(1), v(1), VIRQ_TIMER, &fx.mem);
    assert_eq!(upcalls(&w), [(d(1), v(1))]);
    assert!(fx.pending(1, t1.0) && !fx.pending(1, t0.0));
    // Unbound VIRQs, bad numbers, unknown domains: nothing.
    assert!(fx.ev.raise_virq(d(1), v(0), VIRQ_DEBUG, &fx.mem).is_empty());
    assert!(fx.ev.raise_virq(d(1), v(0), 99, &fx.mem).is_empty());
    assert!(fx.ev.raise_virq(d(1), v(7), VIRQ_TIMER, &fx.mem).is_empty());
    assert!(fx.ev.raise_virq(d(9), v(0), VIRQ_TIMER, &fx.mem).is_empty());

    // A global VIRQ can move; a per-vCPU one cannot.
    assert_eq!(fx.ev.bind_vcpu(&c, t0, v(1)), Err(Errno::EINVAL));
    fx.ev.bind_vcpu(&c, con, v(1)).unwrap();
    fx.consume(1, 2);
    let w = fx.ev.raise_virq(d(1), v(0), VIRQ_CONSOLE, &fx.mem);
    assert_eq!(upcalls(&w), [(d(1), v(1))]);
    // Closing frees the slot for a new binding; closing the moved global one works too.
    fx.ev.close(&c, t1, &fx.mem).unwrap();
    fx.ev.close(&c, con, &fx.mem).unwrap();
    assert!(bind(&mut fx, VIRQ_TIMER, 1).is_ok());
    assert!(bind(&mut fx, VIRQ_CONSOLE, 0).is_ok());
}

#[test]
fn bind_vcpu_rules() {
    let mut fx = Fx::new(&[(1, 2), (2, 1)]);
    let (pa, _) = fx.connect(1, 2);
    let ipi = fx.ev.bind_ipi(&me(1), v(0), &fx.mem).unwrap();
    let ub = fx.unbound(me(1), 0x7ff0, 2).unwrap();
    assert_eq!(
        fx.ev.bind_vcpu(&me(1), p(999), v(5)),
        Err(Errno::ENOENT),
        "vCPU first"
    );
    assert_eq!(fx.ev.bind_vcpu(&me(1), p(999), v(1)), Err(Errno::EINVAL));
    assert_eq!(fx.ev.bind_vcpu(&me(1), ipi, v(1)), Err(Errno::EINVAL));
    assert_eq!(
        fx.ev.bind_vcpu(&me(1), p(30), v(1)),
        Err(Errno::EINVAL),
        "free"
    );
    assert_eq!(fx.ev.bind_vcpu(&me(1), p(pa), v(1)), Ok(()));
    assert_eq!(fx.ev.bind_vcpu(&me(1), p(ub), v(1)), Ok(()));
    assert_eq!(fx.ev.channel(d(1), p(ub)).unwrap().notify_vcpu, v(1));
}

#[test]
fn status_reports_every_state() {
    let mut fx = Fx::new(&[(1, 2), (2, 1)]);
    let (pa, pb) = fx.connect(1, 2);
    let ub = fx.unbound(me(1), 0x7ff0, 2).unwrap();
    let virq = fx.ev.bind_virq(&me(1), VIRQ_DEBUG, v(1), &fx.mem).unwrap();
    let ipi = fx.ev.bind_ipi(&me(1), v(1), &fx.mem).unwrap();
    let st = |fx: &Fx, port: u32| fx.ev.status(&me(1), DomId::SELF, p(port)).unwrap();
    let s = st(&fx, pa);
    assert_eq!(
        (s.status, s.vcpu, s.u0, s.u1),
        (EVTCHNSTAT_INTERDOMAIN, 0, 2, pb)
    );
    assert_eq!((s.dom, s.port), (DomId::SELF, p(pa)), "inputs echoed");
    assert_eq!(
        (st(&fx, ub).status, st(&fx, ub).u0),
        (EVTCHNSTAT_UNBOUND, 2)
    );
    let s = st(&fx, virq.0);
    assert_eq!((s.status, s.vcpu, s.u0), (EVTCHNSTAT_VIRQ, 1, VIRQ_DEBUG));
    assert_eq!(
        (st(&fx, ipi.0).status, st(&fx, ipi.0).vcpu),
        (EVTCHNSTAT_IPI, 1)
    );
    assert_eq!(st(&fx, 0).status, EVTCHNSTAT_CLOSED);
    assert_eq!(st(&fx, 63).status, EVTCHNSTAT_CLOSED);
    let err = |c: Caller, dom: u16, port: u32| fx.ev.status(&c, d(dom), p(port)).err();
    assert_eq!(err(me(1), 1, 64), Some(Errno::EINVAL));
    assert_eq!(err(me(1), 2, pb), Some(Errno::EPERM));
    assert_eq!(
        err(me(1), 2, 64),
        Some(Errno::EINVAL),
        "port checked before privilege"
    );
    assert_eq!(err(me(1), 8, 1), Some(Errno::ESRCH));
    assert_eq!(err(privileged(1), 2, pb), None);
}

#[test]
fn is_pending_for_poll() {
    let mut fx = Fx::new(&[(1, 1), (2, 1)]);
    let (pa, pb) = fx.connect(1, 2);
    fx.consume(2, 1);
    assert_eq!(fx.ev.is_pending(d(2), p(pb), &fx.mem), Ok(false));
    fx.delivered(me(1), pa);
    assert_eq!(fx.ev.is_pending(d(2), p(pb), &fx.mem), Ok(true));
    assert_eq!(fx.ev.is_pending(d(2), p(64), &fx.mem), Err(Errno::EINVAL));
    assert_eq!(fx.ev.is_pending(d(5), p(1), &fx.mem), Err(Errno::ESRCH));
    // A free port is never pending, whatever the guest wrote into the bitmap.
    fx.set_bit(
        fx.si(2) + offset_of!(SharedInfo, evtchn_pending) as u64,
        40,
        true,
    );
    assert_eq!(fx.ev.is_pending(d(2), p(40), &fx.mem), Ok(false));
    assert!(fx.ev.is_masked(d(2), p(40), &fx.mem));
    assert!(!fx.ev.is_masked(d(2), p(pb), &fx.mem));
}

#[test]
fn remove_domain_unbinds_peers_and_frees_buckets() {
    let mut fx = Fx::new(&[(1, 1), (2, 1), (3, 1)]);
    let (p12, p21) = fx.connect(1, 2);
    let (p13, p31) = fx.connect(1, 3);
    for _ in 0..100 {
        fx.ev.bind_ipi(&me(1), v(0), &fx.mem).unwrap();
    }
    assert_eq!(fx.ev.buckets_in_use(), 2 + 1 + 1);
    fx.ev.remove_domain(d(1), &mut fx.frames);
    assert_eq!(fx.ev.buckets_in_use(), 2);
    assert!(!fx.ev.has_domain(d(1)));
    assert_eq!(fx.state(2, p21), ChannelState::Unbound { remote: d(1) });
    assert_eq!(fx.state(3, p31), ChannelState::Unbound { remote: d(1) });
    assert_eq!(fx.delivered(me(2), p21), Wakes::default());
    assert_eq!(fx.send(me(1), p12), Err(Errno::ESRCH));
    assert_eq!(fx.unbound(me(2), 1, 2), Err(Errno::ESRCH));
    assert_eq!(fx.interdomain(me(2), 1, p13), Err(Errno::ESRCH));
    fx.ev.remove_domain(d(1), &mut fx.frames); // twice: harmless
    fx.ev.remove_domain(d(2), &mut fx.frames);
    fx.ev.remove_domain(d(3), &mut fx.frames);
    assert_eq!(fx.ev.buckets_in_use(), 0);
}

#[test]
fn reset_closes_everything_with_permission() {
    let mut fx = Fx::new(&[(1, 1), (2, 1)]);
    let (p12, p21) = fx.connect(1, 2);
    fx.ev.bind_virq(&me(2), VIRQ_TIMER, v(0), &fx.mem).unwrap();
    let reset = |fx: &mut Fx, c: Caller, dom: u16, paused: bool| {
        fx.ev.reset(&c, d(dom), paused, &fx.mem, &mut fx.frames)
    };
    assert_eq!(reset(&mut fx, me(1), 2, true), Err(Errno::EPERM));
    assert_eq!(reset(&mut fx, privileged(1), 2, false), Err(Errno::EINVAL));
    assert_eq!(reset(&mut fx, me(1), 7, true), Err(Errno::ESRCH));
    assert_eq!(
        fx.state(2, p21),
        ChannelState::Interdomain {
            remote: d(1),
            remote_port: p(p12)
        }
    );
    assert_eq!(reset(&mut fx, privileged(1), 2, true), Ok(()));
    for port in 1..64 {
        assert_eq!(fx.state(2, port), ChannelState::Free, "port {port}");
    }
    assert_eq!(fx.state(1, p12), ChannelState::Unbound { remote: d(2) });
    // The VIRQ slot is free again.
    assert!(fx.ev.bind_virq(&me(2), VIRQ_TIMER, v(0), &fx.mem).is_ok());
    assert_eq!(
        reset(&mut fx, me(1), 0x7ff0, false),
        Ok(()),
        "self needs no pause"
    );
}

// ---- FIFO -------------------------------------------------------------------------------

const CB_OFF: u32 = 64;

impl Fx {
    /// Switches `id` to FIFO with control blocks for `vcpus` vCPUs and one event-array
    /// page whose words the guest initialised to MASKED=0 (all unmasked, as a test
    /// convenience). Returns (control frame, array frame).
    fn fifo(&mut self, id: u16, vcpus: u32) -> (Mfn, Mfn) {
        let cb = self.frames.alloc(d(id)).unwrap();
        let arr = self.frames.alloc(d(id)).unwrap();
        self.mem.fill(cb.maddr(), 0, PAGE_SIZE).unwrap();
        self.mem.fill(arr.maddr(), 0, PAGE_SIZE).unwrap();
        for vc in 0..vcpus {
            let off = CB_OFF + vc * 80;
            let r = self
                .ev
                .init_control(&me(id), cb, off, v(vc), &self.mem, &mut self.frames);
            assert_eq!(r, Ok(17));
        }
        self.ev
            .expand_array(&me(id), arr, &self.mem, &mut self.frames)
            .unwrap();
        (cb, arr)
    }
    fn word(&self, arr: Mfn, port: u32) -> u32 {
        let mut b = [0u8; 4];
        self.mem
            .read(arr.maddr() + u64::from(port) * 4, &mut b)
            .unwrap();
        u32::from_le_bytes(b)
    }
    fn set_word(&self, arr: Mfn, port: u32, w: u32) {
        self.mem
            .write(arr.maddr() + u64::from(port) * 4, &w.to_le_bytes())
            .unwrap();
    }
    fn cb_u32(&self, cb: Mfn, vcpu: u32, index: u32) -> u32 {
        let mut b = [0u8; 4];
        let a = cb.maddr() + u64::from(CB_OFF + vcpu * 80 + index * 4);
        self.mem.read(a, &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    fn ready(&self, cb: Mfn, vcpu: u32) -> u32 {
        self.cb_u32(cb, vcpu, 0)
    }
    fn head(&self, cb: Mfn, vcpu: u32, q: u32) -> u32 {
        self.cb_u32(cb, vcpu, 2 + q)
    }
    /// The guest's FIFO consumer (Linux's algorithm, one vCPU): every port it would
    /// handle, in order. Bounded so a broken queue fails the test instead of hanging.
    fn drain(&self, cb: Mfn, arr: Mfn, vcpu: u32) -> Vec<u32> {
        let ra = cb.maddr() + u64::from(CB_OFF + vcpu * 80);
        let mut ready = self.ready(cb, vcpu) & 0xffff;
        self.mem.write(ra, &0u32.to_le_bytes()).unwrap();
        let mut heads = [0u32; 16];
        let mut out = Vec::new();
        for _ in 0..10_000 {
            if ready == 0 {
                break;
            }
            let q = ready.trailing_zeros();
            let mut port = heads[q as usize];
            if port == 0 {
                port = self.head(cb, vcpu, q);
            }
            if port == 0 || port >= EVTCHN_FIFO_EVENT_WORDS_PER_PAGE {
                // A queue the (scribbling) guest broke: give it up.
                ready &= !(1 << q);
                heads[q as usize] = 0;
                continue;
            }
            let w = self.word(arr, port);
            let next = w & EVTCHN_FIFO_LINK_MASK;
            self.set_word(arr, port, w & !(EVTCHN_FIFO_LINKED | EVTCHN_FIFO_LINK_MASK));
            if next == 0 {
                ready &= !(1 << q);
            }
            let w = self.word(arr, port);
            if w & EVTCHN_FIFO_PENDING != 0 && w & EVTCHN_FIFO_MASKED == 0 {
                self.set_word(arr, port, w & !EVTCHN_FIFO_PENDING);
                out.push(port);
            }
            heads[q as usize] = next;
            let more = self.ready(cb, vcpu) & 0xffff;
            self.mem.write(ra, &0u32.to_le_bytes()).unwrap();
            ready |= more;
        }
        assert_eq!(ready, 0, "drain did not finish");
        out
    }
}

#[test]
fn init_control_checks() {
    let mut fx = Fx::new(&[(1, 2), (2, 1)]);
    let mine = fx.frames.alloc(d(1)).unwrap();
    let theirs = fx.frames.alloc(d(2)).unwrap();
    let table = fx.frames.alloc(d(1)).unwrap();
    fx.frames.set_type_state(
        table,
        TypeState {
            ty: PageType::L1,
            count: 1,
            pinned: false,
        },
    );
    let init = |fx: &mut Fx, mfn: Mfn, off: u32, vc: u32| {
        fx.ev
            .init_control(&me(1), mfn, off, v(vc), &fx.mem, &mut fx.frames)
    };
    assert_eq!(
        fx.ev.expand_array(&me(1), mine, &fx.mem, &mut fx.frames),
        Err(Errno::EOPNOTSUPP)
    );
    assert_eq!(fx.ev.set_priority(&me(1), p(0), 3), Err(Errno::ENOSYS));
    assert_eq!(init(&mut fx, mine, 0, 2), Err(Errno::ENOENT));
    assert_eq!(init(&mut fx, mine, 4096 - 72 + 8, 0), Err(Errno::EINVAL));
    assert_eq!(init(&mut fx, mine, 4, 0), Err(Errno::EINVAL));
    assert_eq!(init(&mut fx, mine, u32::MAX, 0), Err(Errno::EINVAL));
    assert_eq!(
        init(&mut fx, theirs, 0, 0),
        Err(Errno::EINVAL),
        "not the caller's"
    );
    assert_eq!(
        init(&mut fx, table, 0, 0),
        Err(Errno::EINVAL),
        "a page table"
    );
    assert_eq!(init(&mut fx, Mfn(1 << 40), 0, 0), Err(Errno::EINVAL));
    assert!(!fx.ev.is_fifo(d(1)), "failures leave the domain on 2-level");
    assert_eq!(fx.frames.ref_count(theirs), Some(0));
    assert_eq!(init(&mut fx, mine, 4096 - 72, 0), Ok(17));
    assert!(fx.ev.is_fifo(d(1)));
    let st = fx.frames.type_state(mine).unwrap();
    assert_eq!((st.ty, st.count), (PageType::Writable, 1));
    assert_eq!(
        init(&mut fx, mine, 0, 0),
        Err(Errno::EINVAL),
        "vCPU 0 again"
    );
    assert_eq!(init(&mut fx, mine, 0, 1), Ok(17));
    assert_eq!(fx.frames.type_state(mine).unwrap().count, 2);
    assert_eq!(fx.frames.ref_count(mine), Some(2));
    // A held frame cannot become a page table meanwhile (the frame table's rule).
    assert!(!fx.frames.hold_writable(table));
    // expand_array: page limit and frame checks.
    assert_eq!(
        fx.ev.expand_array(&me(1), theirs, &fx.mem, &mut fx.frames),
        Err(Errno::EINVAL)
    );
    for _ in 0..EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES {
        fx.ev
            .expand_array(&me(1), mine, &fx.mem, &mut fx.frames)
            .unwrap();
    }
    assert_eq!(
        fx.ev.expand_array(&me(1), mine, &fx.mem, &mut fx.frames),
        Err(Errno::ENOSPC)
    );
    assert_eq!(fx.frames.ref_count(mine), Some(130));
    // Reset releases every reference and goes back to 2-level.
    fx.ev
        .reset(&me(1), DomId::SELF, false, &fx.mem, &mut fx.frames)
        .unwrap();
    assert!(!fx.ev.is_fifo(d(1)));
    assert_eq!(fx.frames.ref_count(mine), Some(0));
    assert_eq!(fx.frames.type_state(mine).unwrap().count, 0);
}

#[test]
fn fifo_queues_by_priority_and_links_in_order() {
    let mut fx = Fx::new(&[(1, 1)]);
    let (cb, arr) = fx.fifo(1, 1);
    let ports: Vec<u32> = (0..4)
        .map(|_| fx.ev.bind_ipi(&me(1), v(0), &fx.mem).unwrap().0)
        .collect();
    fx.ev.set_priority(&me(1), p(ports[3]), 2).unwrap();
    assert_eq!(
        fx.ev.set_priority(&me(1), p(ports[3]), 16),
        Err(Errno::EINVAL)
    );
    assert_eq!(fx.ev.set_priority(&me(1), p(60), 1), Err(Errno::EACCES));
    assert_eq!(fx.ev.set_priority(&me(1), p(5000), 1), Err(Errno::EINVAL));
    let w = fx.delivered(me(1), ports[0]);
    assert_eq!(upcalls(&w), [(d(1), v(0))]);
    assert_eq!(fx.upcall(1, 0), 1);
    assert_eq!(fx.ready(cb, 0), 1 << 7);
    assert_eq!(fx.head(cb, 0, 7), ports[0]);
    // Further events on the same queue link behind it without a new upcall.
    assert!(upcalls(&fx.delivered(me(1), ports[1])).is_empty());
    assert!(upcalls(&fx.delivered(me(1), ports[2])).is_empty());
    let w0 = fx.word(arr, ports[0]);
    assert_eq!(w0 & EVTCHN_FIFO_LINK_MASK, ports[1]);
    assert_ne!(w0 & EVTCHN_FIFO_LINKED, 0);
    assert_ne!(w0 & EVTCHN_FIFO_PENDING, 0);
    // A higher-priority queue sets its own ready bit.
    fx.delivered(me(1), ports[3]);
    assert_eq!(fx.ready(cb, 0), (1 << 7) | (1 << 2));
    assert_eq!(fx.head(cb, 0, 2), ports[3]);
    assert_eq!(
        fx.drain(cb, arr, 0),
        [ports[3], ports[0], ports[1], ports[2]]
    );
    // Drained: the next event starts a fresh queue (the stale tail is unlinked).
    fx.delivered(me(1), ports[1]);
    assert_eq!(fx.head(cb, 0, 7), ports[1]);
    assert_eq!(fx.drain(cb, arr, 0), [ports[1]]);
    // Sending twice while pending queues it once.
    fx.delivered(me(1), ports[2]);
    fx.delivered(me(1), ports[2]);
    assert_eq!(fx.drain(cb, arr, 0), [ports[2]]);
}

#[test]
fn fifo_mask_unmask_and_poll() {
    let mut fx = Fx::new(&[(1, 2), (2, 1)]);
    let (cb, arr) = fx.fifo(1, 2);
    let (p2, p1) = fx.connect(2, 1);
    fx.drain(cb, arr, 0); // the bind's own event
    fx.ev.bind_vcpu(&me(1), p(p1), v(1)).unwrap();
    fx.set_word(arr, p1, EVTCHN_FIFO_MASKED);
    let w = fx.delivered(me(2), p2);
    assert!(upcalls(&w).is_empty());
    assert_eq!(w.poll_check(), Some(d(1)));
    assert_eq!(fx.word(arr, p1), EVTCHN_FIFO_MASKED | EVTCHN_FIFO_PENDING);
    assert_eq!(fx.ev.is_pending(d(1), p(p1), &fx.mem), Ok(true));
    assert!(fx.ev.is_masked(d(1), p(p1), &fx.mem));
    let w = fx.ev.unmask(&me(1), p(p1), &fx.mem).unwrap();
    assert_eq!(upcalls(&w), [(d(1), v(1))]);
    assert_eq!(w.poll_check(), None, "already pending");
    assert_eq!(fx.drain(cb, arr, 1), [p1]);
    assert_eq!(fx.drain(cb, arr, 0), []);
    // Closing clears PENDING only.
    fx.delivered(me(2), p2);
    fx.ev.close(&me(1), p(p1), &fx.mem).unwrap();
    let w = fx.word(arr, p1);
    assert_eq!(w & EVTCHN_FIFO_PENDING, 0);
    assert_ne!(w & EVTCHN_FIFO_LINKED, 0);
    // ... and a still-linked port is not handed out again until the guest unlinks it.
    let next = fx.ev.bind_ipi(&me(1), v(0), &fx.mem).unwrap();
    assert_ne!(next.0, p1);
    assert_eq!(fx.drain(cb, arr, 1), []);
    assert_eq!(fx.ev.bind_ipi(&me(1), v(0), &fx.mem), Ok(p(p1)));
}

#[test]
fn fifo_switch_keeps_pending_events_until_their_page_arrives() {
    let mut fx = Fx::new(&[(1, 1)]);
    let a = fx.ev.bind_ipi(&me(1), v(0), &fx.mem).unwrap();
    let b = fx.ev.bind_ipi(&me(1), v(0), &fx.mem).unwrap();
    fx.delivered(me(1), a.0);
    fx.consume(1, 1);
    fx.mask(1, a.0, true); // keep `a` pending under 2-level
    fx.delivered(me(1), a.0);
    assert!(fx.pending(1, a.0));
    let cb = fx.frames.alloc(d(1)).unwrap();
    fx.mem.fill(cb.maddr(), 0, PAGE_SIZE).unwrap();
    fx.ev
        .init_control(&me(1), cb, CB_OFF, v(0), &fx.mem, &mut fx.frames)
        .unwrap();
    // No event array yet: events are remembered.
    assert!(fx.delivered(me(1), b.0).is_empty());
    assert_eq!(fx.ev.is_pending(d(1), b, &fx.mem), Ok(false));
    assert!(fx.ev.is_masked(d(1), b, &fx.mem));
    let arr = fx.frames.alloc(d(1)).unwrap();
    fx.mem.fill(arr.maddr(), 0, PAGE_SIZE).unwrap();
    let w = fx
        .ev
        .expand_array(&me(1), arr, &fx.mem, &mut fx.frames)
        .unwrap();
    assert_eq!(upcalls(&w), [(d(1), v(0))]);
    assert_eq!(w.poll_check(), Some(d(1)));
    let mut got = fx.drain(cb, arr, 0);
    got.sort();
    assert_eq!(got, [a.0, b.0]);
}

#[test]
fn fifo_ports_beyond_the_first_page() {
    let mut fx = Fx::with_max_port(&[(1, 1)], 2047);
    let (cb, arr) = fx.fifo(1, 1);
    let mut last = 0;
    for _ in 0..1100 {
        last = fx.ev.bind_ipi(&me(1), v(0), &fx.mem).unwrap().0;
    }
    assert_eq!(last, 1100);
    assert!(fx.delivered(me(1), last).is_empty(), "no word yet");
    let arr2 = fx.frames.alloc(d(1)).unwrap();
    fx.mem.fill(arr2.maddr(), 0, PAGE_SIZE).unwrap();
    let w = fx
        .ev
        .expand_array(&me(1), arr2, &fx.mem, &mut fx.frames)
        .unwrap();
    assert!(!w.is_empty());
    assert_eq!(fx.head(cb, 0, 7), last);
    let word = fx.word(arr2, last - 1024);
    assert_ne!(word & EVTCHN_FIFO_PENDING, 0);
    let _ = arr;
}

#[test]
fn fifo_frames_released_on_domain_removal() {
    let mut fx = Fx::new(&[(1, 2)]);
    let (cb, arr) = fx.fifo(1, 2);
    assert_eq!(fx.frames.ref_count(cb), Some(2));
    assert_eq!(fx.frames.ref_count(arr), Some(1));
    fx.ev.remove_domain(d(1), &mut fx.frames);
    for m in [cb, arr] {
        assert_eq!(fx.frames.ref_count(m), Some(0));
        assert_eq!(fx.frames.type_state(m).unwrap().count, 0);
    }
}

// ---- hostile guests and random interleavings ---------------------------------------------

#[test]
fn fifo_survives_a_scribbling_guest() {
    let mut fx = Fx::new(&[(1, 2), (2, 1)]);
    let (cb, arr) = fx.fifo(1, 2);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut ports = Vec::new();
    for _ in 0..40 {
        ports.push(
            fx.ev
                .bind_ipi(&me(1), v(rng.below(2) as u32), &fx.mem)
                .unwrap()
                .0,
        );
    }
    for _ in 0..20_000 {
        match rng.below(6) {
            0 => {
                let port = rng.below(1100) as u32;
                fx.set_word(arr, port % 1024, rng.next() as u32);
            }
            1 => {
                let off = rng.below(2 * 80) as u32;
                let a = cb.maddr() + u64::from(CB_OFF + off);
                fx.mem.write(a, &(rng.next() as u32).to_le_bytes()).unwrap();
            }
            2 => {
                let port = ports[rng.below(ports.len() as u64) as usize];
                let _ = fx.ev.set_priority(&me(1), p(port), rng.below(16) as u32);
            }
            3 => {
                let port = ports[rng.below(ports.len() as u64) as usize];
                let _ = fx.ev.unmask(&me(1), p(port), &fx.mem);
            }
            4 => {
                let vc = rng.below(2) as u32;
                let _ = fx.drain(cb, arr, vc).len();
            }
            _ => {
                let port = ports[rng.below(ports.len() as u64) as usize];
                let w = fx.delivered(me(1), port);
                for (_, vc) in w.upcalls() {
                    assert_eq!(fx.upcall(1, vc.0) & 1, 1);
                }
            }
        }
    }
    // Whatever the guest did, a clean restart of its queues works.
    for vc in 0..2 {
        let _ = fx.drain(cb, arr, vc);
    }
}

/// Shadow of what the test expects of the table (independent of its internals).
struct Model {
    live: BTreeMap<u16, u32>, // dom -> vCPUs
    removed: Vec<u16>,
}

const MAX_PORT: u32 = 100;

fn check_invariants(fx: &Fx, m: &Model) {
    let mut buckets = 0;
    for (&id, &vcpus) in &m.live {
        let dom = d(id);
        // Valid ports form whole buckets within the quota.
        let mut valid = 0;
        while fx.ev.channel(dom, p(valid)).is_some() {
            valid += 1;
        }
        assert!(
            valid > 0 && valid % EVTCHNS_PER_BUCKET == 0,
            "dom {id}: {valid}"
        );
        assert!(valid <= (MAX_PORT / EVTCHNS_PER_BUCKET + 1) * EVTCHNS_PER_BUCKET);
        buckets += (valid / EVTCHNS_PER_BUCKET) as usize;
        assert_eq!(fx.state(id, 0), ChannelState::Reserved);
        let mut virq_ports = Vec::new();
        for port in 1..valid {
            let c = fx.ev.channel(dom, p(port)).unwrap();
            assert!(c.notify_vcpu.0 < vcpus);
            if c.state != ChannelState::Free {
                assert!(port <= MAX_PORT, "port {port} beyond the limit");
            }
            match c.state {
                ChannelState::Interdomain {
                    remote,
                    remote_port,
                } => {
                    assert!(m.live.contains_key(&remote.0), "peer {remote:?} is dead");
                    assert_eq!(
                        fx.state(remote.0, remote_port.0),
                        ChannelState::Interdomain {
                            remote: dom,
                            remote_port: p(port)
                        },
                        "dom {id} port {port}: asymmetric"
                    );
                }
                ChannelState::Unbound { remote } => {
                    // Anything recorded; a removed peer is the only possible dead id.
                    let _ = remote;
                }
                ChannelState::Virq { virq } => {
                    assert!(virq < NR_VIRQS);
                    virq_ports.push((port, virq, c.notify_vcpu.0));
                }
                _ => {}
            }
            // 2-level: an unmasked pending port has been announced to some vCPU.
            if c.state != ChannelState::Free && fx.pending(id, port) && !fx.masked(id, port) {
                let announced = (0..vcpus)
                    .any(|vc| fx.sel(id, vc) & (1 << (port / 64)) != 0 && fx.upcall(id, vc) == 1);
                assert!(
                    announced,
                    "dom {id} port {port} pending, unmasked, not announced"
                );
            }
        }
        // Each VIRQ port is bound once, in its vCPU's slot: raising the VIRQ hits it.
        for (i, &(port, virq, vc)) in virq_ports.iter().enumerate() {
            for &(other, virq2, vc2) in &virq_ports[i + 1..] {
                let same_slot = virq == virq2 && (!Virq(virq).is_per_vcpu() || vc == vc2);
                assert!(!same_slot, "ports {port} and {other} share VIRQ {virq}");
            }
        }
    }
    for &gone in &m.removed {
        if !m.live.contains_key(&gone) {
            assert!(!fx.ev.has_domain(d(gone)));
        }
    }
    assert_eq!(fx.ev.buckets_in_use(), buckets, "bucket accounting");
}

#[test]
fn random_interleavings_keep_the_invariants() {
    for seed in 1..=6u64 {
        run_random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, 3000);
    }
}

/// Mostly a port of `id` whose state passes `want`, else any number up to 140.
fn pick_port(fx: &Fx, rng: &mut Rng, id: u16, want: impl Fn(ChannelState) -> bool) -> u32 {
    if rng.below(4) != 0 {
        let hits: Vec<u32> = (1..140)
            .filter(|&port| {
                fx.ev
                    .channel(d(id), p(port))
                    .is_some_and(|c| c.state != ChannelState::Free && want(c.state))
            })
            .collect();
        if !hits.is_empty() {
            return hits[rng.below(hits.len() as u64) as usize];
        }
    }
    rng.below(140) as u32
}

fn run_random(seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let mut fx = Fx::with_max_port(&[], MAX_PORT);
    let mut m = Model {
        live: BTreeMap::new(),
        removed: Vec::new(),
    };
    for id in 1..=4u16 {
        let vcpus = 1 + (id as u32 % 3);
        fx.add(id, vcpus, MAX_PORT);
        m.live.insert(id, vcpus);
    }
    let mut bound = 0;
    let mut woken = 0;
    let mut removed = 0;
    for step in 0..steps {
        let ids: Vec<u16> = m.live.keys().copied().collect();
        if ids.is_empty() {
            break;
        }
        let id = ids[rng.below(ids.len() as u64) as usize];
        let vcpus = m.live[&id];
        let any_dom = |rng: &mut Rng| match rng.below(6) {
            0 => 0x7ff0,
            1 => 9, // never exists
            n => n as u16 - 1,
        };
        let c = Caller {
            privileged: rng.below(4) == 0,
            ..me(id)
        };
        let port = pick_port(&fx, &mut rng, id, |_| true);
        let vc = rng.below(u64::from(vcpus) + 1) as u32;
        let mut wakes = None;
        match rng.below(14) {
            0 | 1 => {
                let (a, b) = (any_dom(&mut rng), any_dom(&mut rng));
                if let Ok(got) = fx.unbound(c, a, b) {
                    assert!((1..=MAX_PORT).contains(&got));
                }
            }
            2 | 3 => {
                let r = any_dom(&mut rng);
                let rid = if r == 0x7ff0 { id } else { r };
                let port = if m.live.contains_key(&rid) {
                    let want = ChannelState::Unbound { remote: d(id) };
                    pick_port(&fx, &mut rng, rid, |s| s == want)
                } else {
                    port
                };
                if let Ok((got, w)) = fx.ev.bind_interdomain(&c, d(r), p(port), &fx.mem) {
                    assert!((1..=MAX_PORT).contains(&got.0));
                    bound += 1;
                    wakes = Some(w);
                }
            }
            4 => {
                let _ = fx.ev.bind_virq(&c, rng.below(26) as u32, v(vc), &fx.mem);
            }
            5 => {
                let _ = fx.ev.bind_ipi(&c, v(vc), &fx.mem);
            }
            6 | 7 => {
                let _ = fx.ev.close(&c, p(port), &fx.mem);
            }
            8 | 9 => {
                if let Ok(SendOutcome::Delivered(w)) = fx.send(c, port) {
                    wakes = Some(w);
                }
            }
            10 => {
                if let Ok(w) = fx.ev.unmask(&c, p(port), &fx.mem) {
                    wakes = Some(w);
                }
            }
            11 => match rng.below(3) {
                // The guest masks a port, takes its events, or moves a port.
                0 => fx.mask(id, port, true),
                1 => fx.consume(id, vcpus),
                _ => {
                    let _ = fx.ev.bind_vcpu(&c, p(port), v(vc));
                }
            },
            12 => {
                let virq = rng.below(NR_VIRQS as u64) as u32;
                wakes = Some(fx.ev.raise_virq(d(id), v(vc), virq, &fx.mem));
            }
            _ => {
                let dead: Vec<u16> = (1..=4).filter(|i| !m.live.contains_key(i)).collect();
                if rng.below(12) == 0 && m.live.len() > 1 {
                    fx.ev.remove_domain(d(id), &mut fx.frames);
                    removed += 1;
                    m.live.remove(&id);
                    m.removed.push(id);
                } else if rng.below(4) == 0 && !dead.is_empty() {
                    // A later domain may reuse the id, as in Xen.
                    let back = dead[rng.below(dead.len() as u64) as usize];
                    fx.frames.free_all_of(d(back));
                    let vcpus = 1 + (u32::from(back) % 3);
                    fx.add(back, vcpus, MAX_PORT);
                    m.live.insert(back, vcpus);
                } else {
                    let _ = fx.ev.status(&c, d(any_dom(&mut rng)), p(port));
                }
            }
        }
        if let Some(w) = wakes {
            for (wd, wv) in w.upcalls() {
                assert_eq!(
                    fx.upcall(wd.0, wv.0),
                    1,
                    "step {step}: woken without upcall"
                );
                woken += 1;
            }
        }
        check_invariants(&fx, &m);
    }
    // The run must have exercised the interesting paths, not only errors.
    assert!(
        bound > 20 && woken > 20 && removed > 0,
        "{bound} {woken} {removed}"
    );
    for id in m.live.keys().copied().collect::<Vec<_>>() {
        fx.ev.remove_domain(d(id), &mut fx.frames);
    }
    assert_eq!(fx.ev.buckets_in_use(), 0, "every bucket returned");
}

/// `Wakes::upcalls_only` (the send-to-oneself shortcut of `apply_wakes`) answers true
/// exactly when every vCPU `upcalls` names is the given one.
#[test]
fn wakes_upcalls_only_matches_upcalls() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut w = Wakes::default();
        for i in 0..(x % 3) {
            let dom = DomId(((x >> (8 + i)) % 2) as u16);
            let vcpu = ((x >> (16 + 4 * i)) % 4) as u32;
            let r = super::table::Raised {
                upcall: (x >> (40 + i)) & 1 == 1,
                newly_pending: (x >> (50 + i)) & 1 == 1,
            };
            w.add(dom, vcpu, r);
        }
        let (dom, vcpu) = (DomId((x >> 60) as u16 % 2), VcpuId(((x >> 61) % 4) as u32));
        let want = w.upcalls().all(|id| id == (dom, vcpu));
        assert_eq!(w.upcalls_only(dom, vcpu), want, "{w:?} {dom:?} {vcpu:?}");
    }
}
