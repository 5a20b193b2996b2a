//! Host tests of the run loop through its entry points: slices and the one-shot timer,
//! blocking and idling, guest timers and VIRQ_TIMER, event channels between domains,
//! polling, and a dying domain's peers.

extern crate std;

use super::*;
use crate::sched::policy::SLICE_NS;
use crate::testutil::{
    TestHv, hypercall, insert_domain, kernel_frame, map_pages, ret, runnable_domain, test_hv,
};
use xen_pv_abi::event_channel::*;
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::sched::{SCHEDOP_BLOCK, SCHEDOP_POLL, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SchedPoll};
use xen_pv_abi::shared_info::SharedInfo;
use xen_pv_abi::{DomId, EvtchnPort, Mfn, nr};
use zerocopy::{FromBytes, IntoBytes};

const RIP: u64 = 0xffff_ffff_8000_1000;
/// Where each test domain maps its one data page (hypercall arguments live there).
const DATA_VA: u64 = 0xffff_ffff_8000_0000;

struct Dom {
    data: Mfn,
    shared: Mfn,
}

/// A hypervisor with `n` hand-built runnable domains (ids 1..=n, `rbx` = id), each with a
/// data page at `DATA_VA` and its own zeroed shared_info; TSC at 1 GHz from 0.
fn hv_with(n: u16) -> (TestHv, std::vec::Vec<Dom>) {
    let mut hv = test_hv(256);
    let mut doms = std::vec::Vec::new();
    for id in 1..=n {
        let dom = DomId(id);
        let l4 = hv.frames.alloc(dom).unwrap();
        let shared = hv.frames.alloc(dom).unwrap();
        let data = hv.frames.alloc(dom).unwrap();
        for f in [l4, shared, data] {
            hv.mem.fill(f.maddr(), 0, PAGE_SIZE).unwrap();
        }
        map_pages(&mut hv, dom, l4, DATA_VA, &[data]);
        let frame = GuestFrame {
            rbx: u64::from(id),
            ..kernel_frame(RIP, DATA_VA + 0x800)
        };
        let mut d = runnable_domain(dom, "t", false, l4, frame);
        d.shared_info = shared;
        insert_domain(&mut hv, d);
        doms.push(Dom { data, shared });
    }
    (hv, doms)
}

fn start(hv: &mut TestHv) -> GuestFrame {
    let mut f = GuestFrame::default();
    assert!(matches!(hv.start(&mut f), Resume::Guest { .. }));
    f
}

fn at_ns(hv: &TestHv, ns: u64) {
    hv.platform.tsc.set(ns); // 1 GHz from TSC 0: one tick is one ns.
}

/// Writes `arg` at DATA_VA of `d` and makes event_channel_op(cmd, DATA_VA).
fn evtchn_op<T: IntoBytes + FromBytes + zerocopy::Immutable>(
    hv: &mut TestHv,
    f: &mut GuestFrame,
    d: &Dom,
    cmd: u32,
    arg: T,
) -> (i64, T) {
    hv.mem.write(d.data.maddr(), arg.as_bytes()).unwrap();
    hypercall(
        hv,
        f,
        u64::from(nr::EVENT_CHANNEL_OP),
        &[u64::from(cmd), DATA_VA],
    );
    let mut back = T::new_zeroed();
    hv.mem.read(d.data.maddr(), back.as_mut_bytes()).unwrap();
    (ret(f), back)
}

fn port_pending(hv: &TestHv, d: &Dom, port: EvtchnPort) -> bool {
    let off = core::mem::offset_of!(SharedInfo, evtchn_pending) as u64 + u64::from(port.0 / 64) * 8;
    hv.mem.read_u64(d.shared.maddr() + off).unwrap() & (1 << (port.0 % 64)) != 0
}

#[test]
fn start_arms_the_slice_end() {
    let (mut hv, _) = hv_with(2);
    let f = start(&mut hv);
    assert_eq!(f.rbx, 1, "the lowest id runs first");
    // The slice end is the only deadline: nothing is polled.
    assert_eq!(hv.platform.timer, Some(SLICE_NS));
}

#[test]
fn spinning_domains_share_the_cpu_by_slices() {
    let (mut hv, _) = hv_with(2);
    let mut f = start(&mut hv);
    let mut runs = [0u32; 3];
    for k in 1..=20u64 {
        // A tick before the slice end keeps the same domain.
        let before = f.rbx;
        at_ns(&hv, k * SLICE_NS - SLICE_NS / 2);
        assert!(matches!(hv.timer_tick(&mut f), Resume::Guest { .. }));
        assert_eq!(f.rbx, before, "mid-slice tick {k}");
        at_ns(&hv, k * SLICE_NS);
        assert!(matches!(hv.timer_tick(&mut f), Resume::Guest { .. }));
        runs[f.rbx as usize] += 1;
    }
    assert_eq!(runs[1], 10);
    assert_eq!(runs[2], 10);
}

#[test]
fn a_blocked_domain_idles_the_cpu_until_its_timer_raises_virq_timer() {
    let (mut hv, doms) = hv_with(1);
    let mut f = start(&mut hv);
    let (r, b) = evtchn_op(
        &mut hv,
        &mut f,
        &doms[0],
        EVTCHNOP_BIND_VIRQ,
        EvtchnBindVirq {
            virq: Virq::TIMER.0,
            vcpu: 0,
            port: EvtchnPort(0),
        },
    );
    assert_eq!(r, 0);
    let port = b.port;
    // Stop the 10 ms periodic tick, arm a one-shot 5 ms ahead, block.
    hypercall(&mut hv, &mut f, u64::from(nr::VCPU_OP), &[7, 0, 0]);
    assert_eq!(ret(&f), 0);
    hypercall(&mut hv, &mut f, u64::from(nr::SET_TIMER_OP), &[5_000_000]);
    assert_eq!(ret(&f), 0);
    let r = hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_BLOCK), 0],
    );
    assert_eq!(r, Resume::Idle, "nothing else can run");
    assert_eq!(
        hv.platform.timer,
        Some(5_000_000),
        "idle until the guest's deadline only"
    );
    assert!(!port_pending(&hv, &doms[0], port));
    // An early wake-up (typed input) idles again.
    at_ns(&hv, 1_000_000);
    assert_eq!(hv.idle_wakeup(&mut f), Resume::Idle);
    // At the deadline VIRQ_TIMER is raised and the domain resumes after its block.
    at_ns(&hv, 5_000_000);
    assert!(matches!(hv.idle_wakeup(&mut f), Resume::Guest { .. }));
    assert!(port_pending(&hv, &doms[0], port));
    assert_eq!((f.rbx, ret(&f)), (1, 0));
}

#[test]
fn block_returns_at_once_when_an_event_is_pending() {
    let (mut hv, doms) = hv_with(1);
    let mut f = start(&mut hv);
    let (_, b) = evtchn_op(
        &mut hv,
        &mut f,
        &doms[0],
        EVTCHNOP_BIND_IPI,
        EvtchnBindIpi {
            vcpu: 0,
            port: EvtchnPort(0),
        },
    );
    let (r, _) = evtchn_op(
        &mut hv,
        &mut f,
        &doms[0],
        EVTCHNOP_SEND,
        EvtchnSend { port: b.port },
    );
    assert_eq!(r, 0);
    let r = hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_BLOCK), 0],
    );
    assert!(matches!(r, Resume::Guest { .. }));
    assert_eq!(ret(&f), 0);
}

#[test]
fn an_interdomain_send_wakes_the_blocked_peer() {
    let (mut hv, doms) = hv_with(2);
    let mut f = start(&mut hv);
    assert_eq!(f.rbx, 1);
    let (r, a) = evtchn_op(
        &mut hv,
        &mut f,
        &doms[0],
        EVTCHNOP_ALLOC_UNBOUND,
        EvtchnAllocUnbound {
            dom: DomId::SELF,
            remote_dom: DomId(2),
            port: EvtchnPort(0),
        },
    );
    assert_eq!(r, 0);
    hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_YIELD), 0],
    );
    assert_eq!(f.rbx, 2, "yield lets d2 run");
    let (r, b) = evtchn_op(
        &mut hv,
        &mut f,
        &doms[1],
        EVTCHNOP_BIND_INTERDOMAIN,
        EvtchnBindInterdomain {
            remote_dom: DomId(1),
            pad: 0,
            remote_port: a.port,
            local_port: EvtchnPort(0),
        },
    );
    assert_eq!(r, 0);
    // Binding marks the new port pending (Xen): clear it, then wait.
    let off = core::mem::offset_of!(SharedInfo, evtchn_pending) as u64;
    hv.mem.write_u64(doms[1].shared.maddr() + off, 0).unwrap();
    // upcall_pending and the selector, as the guest's upcall handler leaves them.
    hv.mem.write(doms[1].shared.maddr(), &[0]).unwrap();
    hv.mem.write_u64(doms[1].shared.maddr() + 8, 0).unwrap();
    let r = hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_BLOCK), 0],
    );
    assert!(matches!(r, Resume::Guest { .. }));
    assert_eq!(f.rbx, 1, "d2 blocked: d1 runs");
    let (r, _) = evtchn_op(
        &mut hv,
        &mut f,
        &doms[0],
        EVTCHNOP_SEND,
        EvtchnSend { port: a.port },
    );
    assert_eq!(r, 0);
    assert!(port_pending(&hv, &doms[1], b.local_port));
    // d1 blocks in turn: d2, woken by the event, runs.
    let r = hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_BLOCK), 0],
    );
    assert!(matches!(r, Resume::Guest { .. }));
    assert_eq!((f.rbx, ret(&f)), (2, 0));
}

#[test]
fn poll_waits_for_its_timeout_without_unmasking_events() {
    let (mut hv, doms) = hv_with(1);
    let mut f = start(&mut hv);
    let (_, b) = evtchn_op(
        &mut hv,
        &mut f,
        &doms[0],
        EVTCHNOP_BIND_IPI,
        EvtchnBindIpi {
            vcpu: 0,
            port: EvtchnPort(0),
        },
    );
    hypercall(&mut hv, &mut f, u64::from(nr::VCPU_OP), &[7, 0, 0]);
    // The port list after the sched_poll struct.
    let list = DATA_VA + 0x100;
    hv.mem
        .write(doms[0].data.maddr() + 0x100, &b.port.0.to_le_bytes())
        .unwrap();
    let poll = SchedPoll {
        ports: list,
        nr_ports: 1,
        pad: 0,
        timeout: 3_000_000,
    };
    hv.mem.write(doms[0].data.maddr(), poll.as_bytes()).unwrap();
    hv.mem.write(doms[0].shared.maddr() + 1, &[1]).unwrap(); // events masked
    let r = hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_POLL), DATA_VA],
    );
    assert_eq!(r, Resume::Idle);
    assert_eq!(hv.platform.timer, Some(3_000_000));
    at_ns(&hv, 3_000_000);
    assert!(matches!(hv.idle_wakeup(&mut f), Resume::Guest { .. }));
    assert_eq!(ret(&f), 0);
    let mut mask = [0u8];
    hv.mem.read(doms[0].shared.maddr() + 1, &mut mask).unwrap();
    assert_eq!(mask[0], 1, "poll leaves events masked");
    // Too many ports: -EINVAL at once.
    let poll = SchedPoll {
        ports: list,
        nr_ports: 129,
        pad: 0,
        timeout: 0,
    };
    hv.mem.write(doms[0].data.maddr(), poll.as_bytes()).unwrap();
    hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_POLL), DATA_VA],
    );
    assert_eq!(ret(&f), -22);
}

#[test]
fn a_dying_domain_leaves_its_peers_ports_unbound() {
    let (mut hv, doms) = hv_with(2);
    let mut f = start(&mut hv);
    let (_, a) = evtchn_op(
        &mut hv,
        &mut f,
        &doms[0],
        EVTCHNOP_ALLOC_UNBOUND,
        EvtchnAllocUnbound {
            dom: DomId::SELF,
            remote_dom: DomId(2),
            port: EvtchnPort(0),
        },
    );
    hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_YIELD), 0],
    );
    evtchn_op(
        &mut hv,
        &mut f,
        &doms[1],
        EVTCHNOP_BIND_INTERDOMAIN,
        EvtchnBindInterdomain {
            remote_dom: DomId(1),
            pad: 0,
            remote_port: a.port,
            local_port: EvtchnPort(0),
        },
    );
    // d2 powers off.
    hv.mem
        .write(doms[1].data.maddr(), &0u32.to_le_bytes())
        .unwrap();
    hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_SHUTDOWN), DATA_VA],
    );
    assert_eq!(f.rbx, 1);
    let (r, st) = evtchn_op(
        &mut hv,
        &mut f,
        &doms[0],
        EVTCHNOP_STATUS,
        EvtchnStatus {
            dom: DomId::SELF,
            port: a.port,
            ..Default::default()
        },
    );
    assert_eq!(r, 0);
    assert_eq!((st.status, st.u0 & 0xffff), (EVTCHNSTAT_UNBOUND, 2));
    // Sending on it is harmless.
    let (r, _) = evtchn_op(
        &mut hv,
        &mut f,
        &doms[0],
        EVTCHNOP_SEND,
        EvtchnSend { port: a.port },
    );
    assert_eq!(r, 0);
}

#[test]
fn idle_wakeup_ends_without_domains_and_refuses_a_loaded_vcpu() {
    let (mut hv, _) = hv_with(0);
    let mut f = GuestFrame::default();
    assert!(matches!(hv.idle_wakeup(&mut f), Resume::Exit(_)));
    let (mut hv, _) = hv_with(1);
    let mut f = start(&mut hv);
    assert_eq!(
        hv.idle_wakeup(&mut f),
        Resume::Exit(crate::platform::ExitStatus::HypervisorFailure)
    );
}

#[test]
fn remote_shutdown_is_for_the_control_domain_only() {
    use crate::domain::runtime::DomainState;
    use xen_pv_abi::sched::{SCHEDOP_REMOTE_SHUTDOWN, SchedRemoteShutdown, ShutdownReason};
    let (mut hv, doms) = hv_with(3);
    // d1 plays the control domain.
    hv.domains[0].dom0 = true;
    let mut f = start(&mut hv);
    assert_eq!(f.rbx, 1);
    let shut_code = |hv: &mut TestHv, f: &mut GuestFrame, d: &Dom, target: DomId, reason| {
        let op = SchedRemoteShutdown {
            domain_id: target,
            pad: 0,
            reason,
        };
        hv.mem.write(d.data.maddr(), op.as_bytes()).unwrap();
        hypercall(
            hv,
            f,
            u64::from(nr::SCHED_OP),
            &[u64::from(SCHEDOP_REMOTE_SHUTDOWN), DATA_VA],
        )
    };
    let shut = |hv: &mut TestHv, f: &mut GuestFrame, d: &Dom, target: DomId| {
        shut_code(hv, f, d, target, 0)
    };
    // Unknown domain: -ESRCH; d3 is shut down by d1 and d1 keeps running.
    shut(&mut hv, &mut f, &doms[0], DomId(9));
    assert_eq!(ret(&f), -3);
    shut(&mut hv, &mut f, &doms[0], DomId(3));
    assert_eq!((ret(&f), f.rbx), (0, 1));
    assert!(
        hv.platform
            .console
            .contains("(hv) d3 t: shut down: poweroff (by d1)")
    );
    // A domain that already ended: 0 and nothing changes (Xen: shut down, not destroyed).
    shut_code(&mut hv, &mut f, &doms[0], DomId(3), 1);
    assert_eq!(ret(&f), 0);
    assert_eq!(
        hv.domains[2].state,
        DomainState::Shutdown(ShutdownReason::Poweroff)
    );
    // DOMID_SELF names no domain (Xen looks the id up as it is): -ESRCH, even for the
    // control domain.
    shut(&mut hv, &mut f, &doms[0], DomId::SELF);
    assert_eq!(ret(&f), -3);
    // A domU may not: -EPERM, but only once the target exists (Xen's order: -ESRCH
    // first), and the argument is read first of all (-EFAULT).
    hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_YIELD), 0],
    );
    assert_eq!(f.rbx, 2);
    shut(&mut hv, &mut f, &doms[1], DomId(1));
    assert_eq!(ret(&f), -1);
    shut_code(&mut hv, &mut f, &doms[1], DomId(1), 77);
    assert_eq!(ret(&f), -1);
    shut(&mut hv, &mut f, &doms[1], DomId(9));
    assert_eq!(ret(&f), -3);
    shut(&mut hv, &mut f, &doms[1], DomId::SELF);
    assert_eq!(ret(&f), -3);
    hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_REMOTE_SHUTDOWN), 0x10],
    );
    assert_eq!(ret(&f), -14);
    assert!(hv.domains[0].is_runnable() && hv.domains[1].is_runnable());
    // The control domain may shut itself down; that ends the run, and d2, still
    // running, is killed and counts as failed.
    hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_YIELD), 0],
    );
    assert_eq!(f.rbx, 1);
    let r = shut(&mut hv, &mut f, &doms[0], DomId(1));
    assert_eq!(
        r,
        Resume::Exit(crate::platform::ExitStatus::SomeDomainFailed)
    );
    assert!(hv.platform.console.ends_with(
        "(hv) d1 t: shut down: poweroff\n\
         (hv) d2 t: killed at exit: the control domain ended\n\
         (hv) d1 t: poweroff\n(hv) d2 t: killed at exit\n(hv) d3 t: poweroff\n\
         (hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended: 2 powered off, 1 failed\n"
    ));
}

#[test]
fn remote_shutdown_keeps_any_code() {
    use crate::domain::runtime::DomainState;
    use xen_pv_abi::sched::{SCHEDOP_REMOTE_SHUTDOWN, SchedRemoteShutdown};
    let (mut hv, doms) = hv_with(2);
    hv.domains[0].dom0 = true;
    let mut f = start(&mut hv);
    assert_eq!(f.rbx, 1);
    // Xen 4.17 passes the reason on as its low byte, known or not: 0x107 is code 7.
    let op = SchedRemoteShutdown {
        domain_id: DomId(2),
        pad: 0,
        reason: 0x107,
    };
    hv.mem.write(doms[0].data.maddr(), op.as_bytes()).unwrap();
    hypercall(
        &mut hv,
        &mut f,
        u64::from(nr::SCHED_OP),
        &[u64::from(SCHEDOP_REMOTE_SHUTDOWN), DATA_VA],
    );
    assert_eq!((ret(&f), f.rbx), (0, 1));
    assert_eq!(hv.domains[1].state, DomainState::ShutdownOther(7));
    assert!(
        hv.platform
            .console
            .contains("(hv) d2 t: shut down: unknown reason 7 (by d1)\n")
    );
}
