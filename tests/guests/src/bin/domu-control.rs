//! `domu-control`: an unprivileged domain tries the control domain's hypercalls on itself
//! and on its peer: `domctl` getdomaininfo, pausedomain, unpausedomain, destroydomain,
//! `sysctl` getdomaininfolist, and `EVTCHNOP_alloc_unbound` in another domain. Xen 4.17
//! refuses each with `-EPERM` (a request with the wrong interface version first with
//! `-EACCES`). Each prints `case <name>: got <ret> want <ret>`; the guest ends with
//! `domu-control: N cases, M unexpected`, after checking that the peer is still there.
//!
//! Command line: `self=<id>` (default 1) and `peer=<id>` (default 2), both domUs. The
//! peer runs this same guest with `role=waiter self=2 peer=1`: it stays alive, yielding,
//! until the first has ended, then says so and powers off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU32, Ordering};

    use pv_guest::{StartInfo, cmdline, println};
    use xen_pv_abi::domctl::{
        Domctl, GetDomainInfo, GetDomainInfoList, Sysctl, XEN_DOMCTL_DESTROYDOMAIN,
        XEN_DOMCTL_GETDOMAININFO, XEN_DOMCTL_PAUSEDOMAIN, XEN_DOMCTL_UNPAUSEDOMAIN,
        XEN_SYSCTL_GETDOMAININFOLIST,
    };
    use xen_pv_abi::event_channel::{EVTCHNOP_ALLOC_UNBOUND, EvtchnAllocUnbound};
    use xen_pv_abi::generated::call;
    use xen_pv_abi::grant_table::{GNTTABOP_QUERY_SIZE, GnttabQuerySize};
    use xen_pv_abi::sched::SCHEDOP_YIELD;
    use xen_pv_abi::{DomId, Errno, EvtchnPort};
    use zerocopy::IntoBytes;

    test_guests::standard_notes!("domu-control");
    pv_guest::entry!(main);

    /// Yields the waiter spends at most.
    const MAX_YIELDS: u32 = 1_000_000;

    static CASES: AtomicU32 = AtomicU32::new(0);
    static UNEXPECTED: AtomicU32 = AtomicU32::new(0);

    fn case(name: &str, got: i64, want: Errno) {
        let want = Errno::to_ret(want);
        CASES.fetch_add(1, Ordering::Relaxed);
        if got != want {
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
        }
        println!("case {name}: got {got} want {want}");
    }

    fn domctl(cmd: u32, dom: DomId) -> i64 {
        let mut d = Domctl::new(cmd, dom.0);
        // SAFETY: one live, correctly laid out request; the hypervisor refuses it.
        unsafe { call::domctl(&mut d) }
    }

    /// `GNTTABOP_query_size` of another domain: a domU gets `GNTST_permission_denied`
    /// (-8) while that domain lives and `GNTST_bad_domain` (-2) once it is gone.
    fn query_status(dom: DomId) -> i64 {
        let mut q = GnttabQuerySize {
            dom,
            ..GnttabQuerySize::default()
        };
        // SAFETY: one live query_size struct.
        let r = unsafe { call::grant_table_op(GNTTABOP_QUERY_SIZE, (&raw mut q).cast(), 1) };
        if r != 0 { r } else { i64::from(q.status) }
    }

    /// The `role=waiter` peer: yields until domain `dom` has ended (bounded), so it is
    /// alive for everything `dom` tries on it.
    fn wait_for_end_of(dom: DomId) {
        for _ in 0..MAX_YIELDS {
            if query_status(dom) == -2 {
                println!("domu-control: d{} has ended and I am still here", dom.0);
                return;
            }
            // SAFETY: SCHEDOP_yield takes no argument.
            let _ = unsafe { call::sched_op(SCHEDOP_YIELD, core::ptr::null()) };
        }
        println!("domu-control: d{} never ended", dom.0);
    }

    fn main(si: &'static StartInfo) -> ! {
        let cmd = si.cmd_line_bytes();
        let id = |key: &str, default: u16| {
            cmdline::value(cmd, key)
                .and_then(cmdline::parse_u64)
                .and_then(|v| u16::try_from(v).ok())
                .map_or(DomId(default), DomId)
        };
        let me = id("self", 1);
        let peer = id("peer", 2);
        if cmdline::value(cmd, "role") == Some(b"waiter") {
            wait_for_end_of(peer);
            pv_guest::poweroff()
        }
        println!("domu-control: d{} asks about d{}", me.0, peer.0);

        for (who, dom) in [("self", me), ("peer", peer)] {
            let r = domctl(XEN_DOMCTL_GETDOMAININFO, dom);
            match who {
                "self" => case("getdomaininfo_self", r, Errno::EPERM),
                _ => case("getdomaininfo_peer", r, Errno::EPERM),
            }
        }
        case(
            "pausedomain_peer",
            domctl(XEN_DOMCTL_PAUSEDOMAIN, peer),
            Errno::EPERM,
        );
        case(
            "unpausedomain_peer",
            domctl(XEN_DOMCTL_UNPAUSEDOMAIN, peer),
            Errno::EPERM,
        );
        case(
            "destroydomain_peer",
            domctl(XEN_DOMCTL_DESTROYDOMAIN, peer),
            Errno::EPERM,
        );
        case(
            "destroydomain_self",
            domctl(XEN_DOMCTL_DESTROYDOMAIN, me),
            Errno::EPERM,
        );
        let mut d = Domctl::new(XEN_DOMCTL_GETDOMAININFO, peer.0);
        d.interface_version = 0x14;
        // SAFETY: one live request (with an old interface version).
        case(
            "domctl_old_interface_version",
            unsafe { call::domctl(&mut d) },
            Errno::EACCES,
        );

        let mut infos = [GetDomainInfo::default(); 4];
        let list = GetDomainInfoList {
            first_domain: 0,
            max_domains: infos.len() as u32,
            buffer: infos.as_mut_ptr() as u64,
            ..GetDomainInfoList::default()
        };
        let mut s = Sysctl::new(XEN_SYSCTL_GETDOMAININFOLIST);
        s.u[..size_of::<GetDomainInfoList>()].copy_from_slice(list.as_bytes());
        let mut old = s;
        // SAFETY: one live request whose buffer has room for 4 entries.
        case(
            "getdomaininfolist",
            unsafe { call::sysctl(&mut s) },
            Errno::EPERM,
        );
        old.interface_version = 0x14;
        // SAFETY: as above, with an old interface version.
        case(
            "sysctl_old_interface_version",
            unsafe { call::sysctl(&mut old) },
            Errno::EACCES,
        );
        case(
            "getdomaininfolist_wrote_nothing",
            i64::from(infos.iter().any(|i| i.domain != 0 || i.flags != 0)),
            Errno(0),
        );

        let mut a = EvtchnAllocUnbound {
            dom: peer,
            remote_dom: me,
            port: EvtchnPort(0),
        };
        // SAFETY: one live alloc_unbound struct.
        let r = unsafe { call::event_channel_op(EVTCHNOP_ALLOC_UNBOUND, (&raw mut a).cast()) };
        case("alloc_unbound_in_peer", r, Errno::EPERM);

        // The peer was neither paused nor destroyed: it is still a live domain.
        println!(
            "domu-control: peer query_size status {}",
            query_status(peer)
        );

        println!(
            "domu-control: {} cases, {} unexpected",
            CASES.load(Ordering::Relaxed),
            UNEXPECTED.load(Ordering::Relaxed)
        );
        pv_guest::poweroff()
    }
}
