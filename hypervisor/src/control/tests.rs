//! Host tests of domctl and sysctl: every operation's result and errno, privilege,
//! interface versions, pause keeping a domain off the CPU, destroy freeing its frames
//! and raising VIRQ_DOM_EXC in the control domain.

extern crate std;

use crate::domain::runtime::DomainState;
use crate::platform::{GuestFrame, MachineMemory, Resume};
use crate::testutil::{
    TestHv, hypercall, insert_domain, kernel_frame, map_pages, ret, runnable_domain, started,
    test_hv,
};
use std::vec::Vec;
use xen_pv_abi::domctl::*;
use xen_pv_abi::event_channel::{EVTCHNOP_BIND_VIRQ, EvtchnBindVirq, Virq};
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::sched::{SCHEDOP_BLOCK, SCHEDOP_YIELD};
use xen_pv_abi::{DomId, Errno, EvtchnPort, Mfn};
use zerocopy::{FromBytes, IntoBytes};

const NR_FRAMES: usize = 512;
const DATA_VA: u64 = 0xffff_ffff_8000_0000;
const ENTRY_RIP: u64 = 0xffff_ffff_8000_1000;
/// Where a request sits in the caller's data page, and where list buffers go.
const REQ_OFF: u64 = 0;
const BUF_OFF: u64 = 0x200;
const SYSCTL: u64 = 35;
const DOMCTL: u64 = 36;
const FRAMES_PER_DOMAIN: usize = 6;

struct Setup {
    hv: TestHv,
    data: Vec<(DomId, Mfn)>,
}

impl Setup {
    /// Domains `ids` (id 0 is the control domain), each with one data page at DATA_VA
    /// and a zeroed shared_info; `rbx` holds the id so the tests see who runs.
    fn new(ids: &[u16]) -> Setup {
        let mut hv = test_hv(NR_FRAMES);
        let mut data = Vec::new();
        for &id in ids {
            let dom = DomId(id);
            let mut alloc = || hv.frames.alloc(dom).unwrap();
            let (l4, page, shared) = (alloc(), alloc(), alloc());
            for f in [l4, page, shared] {
                hv.mem.fill(f.maddr(), 0, PAGE_SIZE).unwrap();
            }
            map_pages(&mut hv, dom, l4, DATA_VA, &[page]);
            let frame = GuestFrame {
                rbx: u64::from(id),
                ..kernel_frame(ENTRY_RIP, DATA_VA + 0x800)
            };
            let mut d = runnable_domain(dom, "g", id == 0, l4, frame);
            d.name = crate::domain::runtime::sanitize_name(std::format!("g{id}").as_bytes());
            d.nr_pages = FRAMES_PER_DOMAIN as u64;
            d.shared_info = shared;
            insert_domain(&mut hv, d);
            data.push((dom, page));
        }
        Setup { hv, data }
    }

    fn page(&self, dom: u16) -> Mfn {
        self.data.iter().find(|d| d.0 == DomId(dom)).unwrap().1
    }

    fn put(&self, dom: u16, off: u64, bytes: &[u8]) {
        self.hv
            .mem
            .write(self.page(dom).maddr() + off, bytes)
            .unwrap();
    }

    fn get<T: FromBytes>(&self, dom: u16, off: u64) -> T {
        let mut buf = std::vec![0u8; size_of::<T>()];
        self.hv
            .mem
            .read(self.page(dom).maddr() + off, &mut buf)
            .unwrap();
        T::read_from_bytes(&buf).unwrap()
    }
}

/// The running domain (`caller`) issues `req`; returns the result and the request as
/// copied back.
fn domctl(s: &mut Setup, f: &mut GuestFrame, req: Domctl) -> (i64, Domctl) {
    let caller = f.rbx as u16;
    s.put(caller, REQ_OFF, req.as_bytes());
    let r = hypercall(&mut s.hv, f, DOMCTL, &[DATA_VA + REQ_OFF]);
    assert!(matches!(r, Resume::Guest { .. }), "{r:?}");
    assert_eq!(f.rbx as u16, caller, "domctl returns to its caller");
    (ret(f), s.get(caller, REQ_OFF))
}

fn sysctl(s: &mut Setup, f: &mut GuestFrame, req: Sysctl) -> (i64, Sysctl) {
    let caller = f.rbx as u16;
    s.put(caller, REQ_OFF, req.as_bytes());
    hypercall(&mut s.hv, f, SYSCTL, &[DATA_VA + REQ_OFF]);
    (ret(f), s.get(caller, REQ_OFF))
}

fn err(e: Errno) -> i64 {
    e.to_ret()
}

fn info_of(req: &Domctl) -> GetDomainInfo {
    GetDomainInfo::read_from_prefix(&req.u).unwrap().0
}

fn info(s: &mut Setup, f: &mut GuestFrame, dom: u16) -> Result<GetDomainInfo, i64> {
    let (r, out) = domctl(s, f, Domctl::new(XEN_DOMCTL_GETDOMAININFO, dom));
    if r != 0 {
        return Err(r);
    }
    assert_eq!(out.domain, info_of(&out).domain, "domain is written back");
    Ok(info_of(&out))
}

fn list_req(first: u16, max: u32) -> Sysctl {
    let mut req = Sysctl::new(XEN_SYSCTL_GETDOMAININFOLIST);
    let list = GetDomainInfoList {
        first_domain: first,
        max_domains: max,
        buffer: DATA_VA + BUF_OFF,
        ..Default::default()
    };
    req.u[..24].copy_from_slice(list.as_bytes());
    req
}

const OPS: [u32; 4] = [
    XEN_DOMCTL_GETDOMAININFO,
    XEN_DOMCTL_PAUSEDOMAIN,
    XEN_DOMCTL_UNPAUSEDOMAIN,
    XEN_DOMCTL_DESTROYDOMAIN,
];

#[test]
fn a_domu_is_refused_every_op() {
    let mut s = Setup::new(&[1, 2]);
    let mut f = started(&mut s.hv);
    assert_eq!(f.rbx, 1);
    for cmd in OPS.into_iter().chain([999, XEN_DOMCTL_CREATEDOMAIN]) {
        for target in [1, 2, 7] {
            let (r, _) = domctl(&mut s, &mut f, Domctl::new(cmd, target));
            assert_eq!(r, err(Errno::EPERM), "cmd {cmd} on d{target}");
        }
    }
    let (r, _) = sysctl(&mut s, &mut f, list_req(0, 4));
    assert_eq!(r, err(Errno::EPERM));
    assert_eq!(s.get::<u32>(1, BUF_OFF), 0, "nothing written");
    // The version is checked first, as in Xen.
    let mut bad = Domctl::new(XEN_DOMCTL_GETDOMAININFO, 1);
    bad.interface_version = 0x14;
    assert_eq!(domctl(&mut s, &mut f, bad).0, err(Errno::EACCES));
    // Nothing happened to d2.
    let d2 = &s.hv.domains[1];
    assert!(d2.is_runnable() && d2.pause_count == 0 && !d2.destroyed);
}

#[test]
fn versions_unknown_commands_and_bad_pointers() {
    let mut s = Setup::new(&[0, 1]);
    let mut f = started(&mut s.hv);
    assert_eq!(f.rbx, 0, "the control domain runs first");
    for v in [0, 0x14, 0x16, 0x18, u32::MAX] {
        let mut req = Domctl::new(XEN_DOMCTL_GETDOMAININFO, 1);
        req.interface_version = v;
        assert_eq!(domctl(&mut s, &mut f, req).0, err(Errno::EACCES));
        let mut req = list_req(0, 4);
        req.interface_version = v;
        assert_eq!(sysctl(&mut s, &mut f, req).0, err(Errno::EACCES));
    }
    for cmd in [
        0,
        XEN_DOMCTL_CREATEDOMAIN,
        XEN_DOMCTL_MAX_MEM,
        999,
        u32::MAX,
    ] {
        assert_eq!(
            domctl(&mut s, &mut f, Domctl::new(cmd, 1)).0,
            err(Errno::ENOSYS)
        );
    }
    for cmd in [0, XEN_SYSCTL_READCONSOLE, XEN_SYSCTL_PHYSINFO, u32::MAX] {
        assert_eq!(
            sysctl(&mut s, &mut f, Sysctl::new(cmd)).0,
            err(Errno::ENOSYS)
        );
    }
    for addr in [
        0,
        0x1000,
        0xffff_8300_0000_0000,
        DATA_VA + PAGE_SIZE as u64 - 8,
    ] {
        hypercall(&mut s.hv, &mut f, DOMCTL, &[addr]);
        assert_eq!(ret(&f), err(Errno::EFAULT), "{addr:#x}");
        hypercall(&mut s.hv, &mut f, SYSCTL, &[addr]);
        assert_eq!(ret(&f), err(Errno::EFAULT), "{addr:#x}");
    }
    // A list buffer the caller cannot write.
    let mut req = list_req(0, 4);
    req.u[8..16].copy_from_slice(&0xffff_8300_0000_0000u64.to_le_bytes());
    assert_eq!(sysctl(&mut s, &mut f, req).0, err(Errno::EFAULT));
}

#[test]
fn getdomaininfo_describes_the_domain_or_the_next_one() {
    let mut s = Setup::new(&[0, 1, 3]);
    let mut f = started(&mut s.hv);
    let me = info(&mut s, &mut f, 0).unwrap();
    assert_eq!(me.domain, 0);
    assert_eq!(
        me.flags & dominf::RUNNING,
        dominf::RUNNING,
        "{:#x}",
        me.flags
    );
    let d1 = info(&mut s, &mut f, 1).unwrap();
    assert_eq!(d1.domain, 1);
    // Runnable, not running, not paused; no shutdown reason: bits 31:16 all ones.
    assert_eq!(d1.flags, 0xffff_0000, "{:#x}", d1.flags);
    assert_eq!(d1.tot_pages, s.hv.frames.count_of(DomId(1)) as u64);
    assert!(d1.tot_pages >= FRAMES_PER_DOMAIN as u64);
    assert!(d1.max_pages >= d1.tot_pages);
    assert_eq!(d1.shared_info_frame, s.hv.domains[1].shared_info.0);
    assert_eq!((d1.nr_online_vcpus, d1.max_vcpu_id), (1, 0));
    assert_eq!((d1.handle, d1.cpupool, d1.ssidref), ([0; 16], 0, 0));
    // Xen 4.17: a missing id gives the next domain up, and says which.
    let d3 = info(&mut s, &mut f, 2).unwrap();
    assert_eq!(d3.domain, 3);
    assert_eq!(info(&mut s, &mut f, 4), Err(err(Errno::ESRCH)));
    assert_eq!(info(&mut s, &mut f, u16::MAX), Err(err(Errno::ESRCH)));
}

#[test]
fn shutdown_and_blocked_domains_are_flagged() {
    let mut s = Setup::new(&[0, 1, 2]);
    let mut f = started(&mut s.hv);
    // d0 yields to d1, d1 blocks, d2 shuts down with reason reboot.
    hypercall(&mut s.hv, &mut f, 29, &[SCHEDOP_YIELD.into()]);
    assert_eq!(f.rbx, 1);
    hypercall(&mut s.hv, &mut f, 29, &[SCHEDOP_BLOCK.into()]);
    while f.rbx != 2 {
        yields(&mut s, &mut f, 1);
    }
    s.put(2, 0x100, &1u32.to_le_bytes());
    hypercall(&mut s.hv, &mut f, 29, &[2, DATA_VA + 0x100]);
    assert_eq!(f.rbx, 0, "d1 is blocked: only d0 is left");
    let d1 = info(&mut s, &mut f, 1).unwrap();
    assert_eq!(d1.flags & 0xffff, dominf::BLOCKED, "{:#x}", d1.flags);
    let d2 = info(&mut s, &mut f, 2).unwrap();
    assert_eq!(d2.flags, dominf::SHUTDOWN | 1 << dominf::SHUTDOWN_SHIFT);
    assert_eq!((d2.tot_pages, d2.nr_online_vcpus), (0, 0));
    // Destroying a domain that already ended: it disappears, its report stays.
    let destroy = Domctl::new(XEN_DOMCTL_DESTROYDOMAIN, 2);
    assert_eq!(domctl(&mut s, &mut f, destroy).0, 0);
    assert_eq!(info(&mut s, &mut f, 2), Err(err(Errno::ESRCH)));
    assert_eq!(domctl(&mut s, &mut f, destroy).0, err(Errno::ESRCH));
    assert_eq!(s.hv.domains[2].state.report_word(), "reboot");
}

/// Yields from the running domain `n` times; returns the ids that ran after each.
fn yields(s: &mut Setup, f: &mut GuestFrame, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            hypercall(&mut s.hv, f, 29, &[SCHEDOP_YIELD.into()]);
            assert_eq!(ret(f), 0);
            f.rbx
        })
        .collect()
}

#[test]
fn a_paused_domain_stays_off_the_cpu_until_unpaused() {
    let mut s = Setup::new(&[0, 1]);
    let mut f = started(&mut s.hv);
    let pause = Domctl::new(XEN_DOMCTL_PAUSEDOMAIN, 1);
    let unpause = Domctl::new(XEN_DOMCTL_UNPAUSEDOMAIN, 1);
    // Not paused yet: unpause is refused.
    assert_eq!(domctl(&mut s, &mut f, unpause).0, err(Errno::EINVAL));
    // Paused twice (counted).
    assert_eq!(domctl(&mut s, &mut f, pause).0, 0);
    assert_eq!(domctl(&mut s, &mut f, pause).0, 0);
    let d1 = info(&mut s, &mut f, 1).unwrap();
    assert_eq!(d1.flags & 0xffff, dominf::PAUSED, "{:#x}", d1.flags);
    assert_eq!(yields(&mut s, &mut f, 20), [0; 20]);
    // An event for it while paused does not run it either.
    s.hv.wake_vcpu((DomId(1), xen_pv_abi::VcpuId(0)));
    assert_eq!(yields(&mut s, &mut f, 5), [0; 5]);
    assert_eq!(domctl(&mut s, &mut f, unpause).0, 0);
    assert_eq!(yields(&mut s, &mut f, 5), [0; 5], "still paused once");
    assert_eq!(domctl(&mut s, &mut f, unpause).0, 0);
    let d1 = info(&mut s, &mut f, 1).unwrap();
    assert_eq!(d1.flags & dominf::PAUSED, 0);
    assert!(yields(&mut s, &mut f, 1).contains(&1), "d1 runs again");
    // Self: -EINVAL (d1 is not privileged, so d0 again).
    while f.rbx != 0 {
        yields(&mut s, &mut f, 1);
    }
    let me = Domctl::new(XEN_DOMCTL_PAUSEDOMAIN, 0);
    assert_eq!(domctl(&mut s, &mut f, me).0, err(Errno::EINVAL));
    for cmd in [XEN_DOMCTL_PAUSEDOMAIN, XEN_DOMCTL_UNPAUSEDOMAIN] {
        assert_eq!(
            domctl(&mut s, &mut f, Domctl::new(cmd, 9)).0,
            err(Errno::ESRCH)
        );
    }
}

#[test]
fn a_blocked_domain_paused_and_unpaused_stays_blocked() {
    let mut s = Setup::new(&[0, 1]);
    let mut f = started(&mut s.hv);
    hypercall(&mut s.hv, &mut f, 29, &[SCHEDOP_YIELD.into()]);
    hypercall(&mut s.hv, &mut f, 29, &[SCHEDOP_BLOCK.into()]);
    assert_eq!(f.rbx, 0);
    let pause = Domctl::new(XEN_DOMCTL_PAUSEDOMAIN, 1);
    let unpause = Domctl::new(XEN_DOMCTL_UNPAUSEDOMAIN, 1);
    assert_eq!(domctl(&mut s, &mut f, pause).0, 0);
    assert_eq!(domctl(&mut s, &mut f, unpause).0, 0);
    assert_eq!(yields(&mut s, &mut f, 5), [0; 5], "no spurious wake");
    let d1 = info(&mut s, &mut f, 1).unwrap();
    assert_eq!(d1.flags & 0xffff, dominf::BLOCKED);
}

#[test]
fn destroy_frees_frames_and_raises_dom_exc() {
    let mut s = Setup::new(&[0, 1, 2]);
    let mut f = started(&mut s.hv);
    // The control domain binds VIRQ_DOM_EXC.
    let bind = EvtchnBindVirq {
        virq: Virq::DOM_EXC.0,
        vcpu: 0,
        port: EvtchnPort(0),
    };
    s.put(0, 0x100, bind.as_bytes());
    hypercall(
        &mut s.hv,
        &mut f,
        32,
        &[EVTCHNOP_BIND_VIRQ.into(), DATA_VA + 0x100],
    );
    assert_eq!(ret(&f), 0);
    let port = s.get::<EvtchnBindVirq>(0, 0x100).port;
    assert!(!s.hv.evtchn.is_pending(DomId(0), port, &s.hv.mem).unwrap());
    let free = s.hv.frames.free_count();
    let owned = s.hv.frames.count_of(DomId(1));
    assert!(owned >= FRAMES_PER_DOMAIN);
    // Paused first: destroy still works and the pause goes with the domain.
    assert_eq!(
        domctl(&mut s, &mut f, Domctl::new(XEN_DOMCTL_PAUSEDOMAIN, 1)).0,
        0
    );
    assert_eq!(
        domctl(&mut s, &mut f, Domctl::new(XEN_DOMCTL_DESTROYDOMAIN, 1)).0,
        0
    );
    assert_eq!(s.hv.frames.count_of(DomId(1)), 0);
    assert_eq!(s.hv.frames.free_count(), free + owned);
    assert!(s.hv.evtchn.is_pending(DomId(0), port, &s.hv.mem).unwrap());
    assert_eq!(s.hv.domains[1].state, DomainState::Destroyed);
    assert!(
        s.hv.platform
            .console
            .contains("(hv) d1 g1: destroyed by the control domain\n"),
        "{}",
        s.hv.platform.console
    );
    // Gone: every op on it is -ESRCH; getdomaininfo moves on to d2.
    for cmd in OPS.into_iter().skip(1) {
        assert_eq!(
            domctl(&mut s, &mut f, Domctl::new(cmd, 1)).0,
            err(Errno::ESRCH)
        );
    }
    assert_eq!(info(&mut s, &mut f, 1).unwrap().domain, 2);
    assert_eq!(yields(&mut s, &mut f, 4), [2, 0, 2, 0], "d1 never runs");
    // Self: -EINVAL; a domain that already ended can be destroyed (it disappears).
    assert_eq!(
        domctl(&mut s, &mut f, Domctl::new(XEN_DOMCTL_DESTROYDOMAIN, 0)).0,
        err(Errno::EINVAL)
    );
    assert!(s.hv.domains[0].is_runnable());
}

#[test]
fn getdomaininfolist_lists_existing_domains_in_order() {
    let mut s = Setup::new(&[0, 1, 2, 5]);
    let mut f = started(&mut s.hv);
    let list = |s: &mut Setup, f: &mut GuestFrame, first: u16, max: u32| -> Vec<u16> {
        // Poison the buffer so stale records would show.
        s.put(0, BUF_OFF, &[0xaa; 8 * 112]);
        let (r, out) = sysctl(s, f, list_req(first, max));
        assert_eq!(r, 0);
        let n = GetDomainInfoList::read_from_prefix(&out.u)
            .unwrap()
            .0
            .num_domains;
        assert!(n <= max);
        (0..u64::from(n))
            .map(|i| s.get::<GetDomainInfo>(0, BUF_OFF + i * 112).domain)
            .collect()
    };
    assert_eq!(list(&mut s, &mut f, 0, 8), [0, 1, 2, 5]);
    assert_eq!(list(&mut s, &mut f, 1, 8), [1, 2, 5]);
    assert_eq!(list(&mut s, &mut f, 3, 8), [5]);
    assert_eq!(list(&mut s, &mut f, 6, 8), [] as [u16; 0]);
    assert_eq!(list(&mut s, &mut f, 0, 2), [0, 1]);
    assert_eq!(list(&mut s, &mut f, 0, 0), [] as [u16; 0]);
    assert_eq!(list(&mut s, &mut f, 0, u32::MAX), [0, 1, 2, 5]);
    // The records are the getdomaininfo answers.
    list(&mut s, &mut f, 2, 1);
    let rec = s.get::<GetDomainInfo>(0, BUF_OFF);
    assert_eq!(
        Ok(rec.as_bytes().to_vec()),
        info(&mut s, &mut f, 2).map(|i| i.as_bytes().to_vec())
    );
    // A destroyed domain is not listed.
    assert_eq!(
        domctl(&mut s, &mut f, Domctl::new(XEN_DOMCTL_DESTROYDOMAIN, 2)).0,
        0
    );
    assert_eq!(list(&mut s, &mut f, 0, 8), [0, 1, 5]);
}

const HVM_OP: u64 = 34;

/// `hvm_op(op, &param)` from the running domain: the result and the param copied back.
fn hvm(
    s: &mut Setup,
    f: &mut GuestFrame,
    op: u64,
    domid: u16,
    index: u32,
) -> (i64, xen_pv_abi::hvm::XenHvmParam) {
    let caller = f.rbx as u16;
    let req = xen_pv_abi::hvm::XenHvmParam {
        domid: DomId(domid),
        index,
        value: 0x5555,
        ..Default::default()
    };
    s.put(caller, REQ_OFF, req.as_bytes());
    hypercall(&mut s.hv, f, HVM_OP, &[op, DATA_VA + REQ_OFF]);
    (ret(f), s.get(caller, REQ_OFF))
}

#[test]
fn hvm_get_param_gives_the_control_domain_the_rings_and_ports() {
    use xen_pv_abi::hvm::*;
    let mut s = Setup::new(&[0, 1, 2]);
    s.hv.domains[1].store_ring = Some((Mfn(0x1234), EvtchnPort(1)));
    s.hv.domains[1].console_ring = Some((Mfn(0x1235), EvtchnPort(2)));
    let mut f = started(&mut s.hv);
    assert_eq!(f.rbx, 0);
    for (index, want) in [
        (HVM_PARAM_STORE_PFN, 0x1234),
        (HVM_PARAM_STORE_EVTCHN, 1),
        (HVM_PARAM_CONSOLE_PFN, 0x1235),
        (HVM_PARAM_CONSOLE_EVTCHN, 2),
    ] {
        let (r, p) = hvm(&mut s, &mut f, HVMOP_GET_PARAM, 1, index);
        assert_eq!((r, p.value, p.index, p.domid), (0, want, index, DomId(1)));
    }
    // Other indices, and domains without rings (the caller itself): -EINVAL, the
    // request untouched.
    for (dom, index) in [
        (1, 0),
        (1, 3),
        (1, 16),
        (1, 19),
        (1, HVM_NR_PARAMS),
        (1, u32::MAX),
        (2, HVM_PARAM_STORE_PFN),
        (0, HVM_PARAM_CONSOLE_EVTCHN),
        (DomId::SELF.0, HVM_PARAM_STORE_PFN),
    ] {
        let (r, p) = hvm(&mut s, &mut f, HVMOP_GET_PARAM, dom, index);
        assert_eq!((r, p.value), (err(Errno::EINVAL), 0x5555), "d{dom} {index}");
    }
    // Unknown domains: -ESRCH.
    for dom in [3, 0x7fef, DomId::XEN.0] {
        let (r, _) = hvm(&mut s, &mut f, HVMOP_GET_PARAM, dom, HVM_PARAM_STORE_PFN);
        assert_eq!(r, err(Errno::ESRCH), "d{dom}");
    }
    // set_param: as Xen for a PV target; unknown operations: -ENOSYS.
    let (r, _) = hvm(&mut s, &mut f, HVMOP_SET_PARAM, 1, HVM_PARAM_STORE_PFN);
    assert_eq!(r, err(Errno::EINVAL));
    let (r, _) = hvm(&mut s, &mut f, HVMOP_SET_PARAM, 9, HVM_PARAM_STORE_PFN);
    assert_eq!(r, err(Errno::ESRCH));
    for op in [2, 0x10, u64::MAX] {
        let (r, _) = hvm(&mut s, &mut f, op, 1, HVM_PARAM_STORE_PFN);
        assert_eq!(r, err(Errno::ENOSYS), "op {op}");
    }
    // A bad pointer: -EFAULT.
    hypercall(&mut s.hv, &mut f, HVM_OP, &[HVMOP_GET_PARAM, 0x1000]);
    assert_eq!(ret(&f), err(Errno::EFAULT));
    // A domU may not ask, whatever it names: -EPERM.
    hypercall(&mut s.hv, &mut f, 29, &[SCHEDOP_YIELD as u64, 0]);
    assert_eq!(f.rbx, 1);
    for dom in [0, 1, 2, 9, DomId::SELF.0] {
        let (r, p) = hvm(&mut s, &mut f, HVMOP_GET_PARAM, dom, HVM_PARAM_STORE_PFN);
        assert_eq!((r, p.value), (err(Errno::EPERM), 0x5555), "d{dom}");
    }
}
