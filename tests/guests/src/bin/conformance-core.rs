//! `conformance-core`: event channels (2-level; the FIFO ABI's errors before it is
//! set up), timers and scheduling, and grant-table basics not in `hostile-grant`, one
//! behaviour per case, each against Xen 4.17's answer (see `test_guests::conformance`).
//! Runs as dom0 on Xen and on ours, so both hand out the same port numbers.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::{StartInfo, VIRT_BASE};
    use test_guests::conformance::{Suite, hc};
    use xen_pv_abi::events::{AtomicPage, EventMemory};
    use xen_pv_abi::{EvtchnPort, nr};

    test_guests::standard_notes!("conformance-core");
    pv_guest::entry!(main);

    const SELF: u64 = 0x7ff0;
    const NO_DOMAIN: u64 = 1000;
    const HYPERVISOR_ADDRESS: u64 = 0xffff_8300_0010_0000;

    const EPERM: i64 = -1;
    const ENOENT: i64 = -2;
    const ESRCH: i64 = -3;
    const EFAULT: i64 = -14;
    const EEXIST: i64 = -17;
    const EINVAL: i64 = -22;
    const ENOSYS: i64 = -38;
    const EOPNOTSUPP: i64 = -95;

    /// `EVTCHNOP_*`.
    const BIND_INTERDOMAIN: u64 = 0;
    const BIND_VIRQ: u64 = 1;
    const CLOSE: u64 = 3;
    const SEND: u64 = 4;
    const STATUS: u64 = 5;
    const ALLOC_UNBOUND: u64 = 6;
    const BIND_IPI: u64 = 7;
    const BIND_VCPU: u64 = 8;
    const UNMASK: u64 = 9;
    const RESET: u64 = 10;
    const INIT_CONTROL: u64 = 11;
    const EXPAND_ARRAY: u64 = 12;
    const SET_PRIORITY: u64 = 13;

    /// `EVTCHNSTAT_*`.
    const STAT_CLOSED: i64 = 0;
    const STAT_UNBOUND: i64 = 1;
    const STAT_INTERDOMAIN: i64 = 2;
    const STAT_VIRQ: i64 = 4;
    const STAT_IPI: i64 = 5;

    /// `shared_info` offsets: the pending and mask bitmaps.
    const PENDING: usize = 2048;
    const MASK: usize = 2048 + 512;

    /// `EVENT_CHANNEL_OP(cmd, arg)` on a buffer of 32-bit words.
    fn ev(cmd: u64, arg: &mut [u32]) -> i64 {
        hc(
            nr::EVENT_CHANNEL_OP,
            [cmd, arg.as_mut_ptr() as u64, 0, 0, 0],
        )
    }

    fn alloc_unbound(dom: u64, remote: u64) -> (i64, u32) {
        let mut a = [(dom as u32) | (remote as u32) << 16, 0];
        let r = ev(ALLOC_UNBOUND, &mut a);
        (r, a[1])
    }

    fn bind_interdomain(remote: u64, port: u32) -> (i64, u32) {
        let mut a = [remote as u32, port, 0];
        let r = ev(BIND_INTERDOMAIN, &mut a);
        (r, a[2])
    }

    fn bind_virq(virq: u32, vcpu: u32) -> (i64, u32) {
        let mut a = [virq, vcpu, 0];
        let r = ev(BIND_VIRQ, &mut a);
        (r, a[2])
    }

    fn bind_ipi(vcpu: u32) -> (i64, u32) {
        let mut a = [vcpu, 0];
        let r = ev(BIND_IPI, &mut a);
        (r, a[1])
    }

    fn port_op(cmd: u64, port: u32) -> i64 {
        ev(cmd, &mut [port])
    }

    /// `EVTCHNOP_status`: (return, status, vcpu).
    fn status(dom: u64, port: u32) -> (i64, i64, i64) {
        let mut a = [dom as u32, port, 0, 0, 0, 0];
        let r = ev(STATUS, &mut a);
        (r, i64::from(a[2]), i64::from(a[3]))
    }

    fn bit(page: &AtomicPage, base: usize, port: u32) -> i64 {
        let word = page.load_u64(base + (port as usize / 64) * 8);
        ((word >> (port % 64)) & 1) as i64
    }

    fn set_bit(page: &AtomicPage, base: usize, port: u32, on: bool) {
        let off = base + (port as usize / 64) * 8;
        let m = 1u64 << (port % 64);
        if on {
            page.fetch_or_u64(off, m);
        } else {
            page.fetch_and_u64(off, !m);
        }
    }

    fn evtchn_cases(s: &mut Suite, page: &AtomicPage) -> (u32, u32) {
        s.area("evtchn");
        let (r, a) = alloc_unbound(SELF, SELF);
        s.check("alloc_unbound_self", r, 0);
        s.check_bool("alloc_unbound_port_nonzero", a != 0, true);
        s.check("status_unbound", status(SELF, a).1, STAT_UNBOUND);
        s.check(
            "alloc_unbound_absent_domain",
            alloc_unbound(NO_DOMAIN, SELF).0,
            ESRCH,
        );
        let (r, spare) = alloc_unbound(SELF, NO_DOMAIN);
        s.check("alloc_unbound_absent_remote", r, 0);
        s.check("close_unbound", port_op(CLOSE, spare), 0);
        let (r, b) = bind_interdomain(SELF, a);
        s.check("bind_interdomain_loopback", r, 0);
        s.check_bool("loopback_ports_differ", a != b, true);
        s.check("status_interdomain", status(SELF, b).1, STAT_INTERDOMAIN);
        s.check(
            "bind_interdomain_connected_port",
            bind_interdomain(SELF, a).0,
            EINVAL,
        );
        s.check(
            "bind_interdomain_port_0",
            bind_interdomain(SELF, 0).0,
            EINVAL,
        );
        s.check(
            "bind_interdomain_port_huge",
            bind_interdomain(SELF, 100_000).0,
            EINVAL,
        );
        s.check(
            "bind_interdomain_absent_domain",
            bind_interdomain(NO_DOMAIN, 1).0,
            ESRCH,
        );
        // Send: the other end's pending bit.
        set_bit(page, MASK, a, true);
        set_bit(page, PENDING, a, false);
        s.check("send_loopback", port_op(SEND, b), 0);
        s.check("send_sets_peer_pending", bit(page, PENDING, a), 1);
        s.check("send_port_0", port_op(SEND, 0), EINVAL);
        s.check("send_huge_port", port_op(SEND, 100_000), EINVAL);
        s.check("unmask", port_op(UNMASK, a), 0);
        s.check("unmask_cleared_mask", bit(page, MASK, a), 0);
        s.check("unmask_huge_port", port_op(UNMASK, 100_000), EINVAL);
        set_bit(page, MASK, a, true);
        set_bit(page, PENDING, a, false);
        // Status.
        s.check("status_port_0", status(SELF, 0).1, STAT_CLOSED);
        s.check("status_huge_port", status(SELF, 100_000).0, EINVAL);
        s.check("status_absent_domain", status(NO_DOMAIN, 1).0, ESRCH);
        s.check(
            "status_bad_pointer",
            hc(nr::EVENT_CHANNEL_OP, [STATUS, HYPERVISOR_ADDRESS, 0, 0, 0]),
            EFAULT,
        );
        // VIRQs.
        let (r, t) = bind_virq(0, 0);
        s.check("bind_virq_timer", r, 0);
        s.check("status_virq", status(SELF, t).1, STAT_VIRQ);
        s.check("bind_virq_timer_twice", bind_virq(0, 0).0, EEXIST);
        s.check("bind_virq_unknown", bind_virq(99, 0).0, EINVAL);
        s.check("bind_virq_absent_vcpu", bind_virq(1, 5).0, ENOENT);
        // A global VIRQ (VIRQ_CON_RING) only on vCPU 0.
        s.check("bind_global_virq_vcpu_1", bind_virq(8, 1).0, EINVAL);
        s.check(
            "bind_vcpu_per_vcpu_virq",
            ev(BIND_VCPU, &mut [t, 0]),
            EINVAL,
        );
        // IPIs.
        let (r, i) = bind_ipi(0);
        s.check("bind_ipi", r, 0);
        s.check("status_ipi", status(SELF, i).1, STAT_IPI);
        s.check("bind_ipi_absent_vcpu", bind_ipi(5).0, ENOENT);
        s.check("send_ipi", port_op(SEND, i), 0);
        s.check("ipi_pending", bit(page, PENDING, i), 1);
        set_bit(page, PENDING, i, false);
        // Rebinding an interdomain port to a vCPU.
        s.check("bind_vcpu_interdomain", ev(BIND_VCPU, &mut [a, 0]), 0);
        s.check("bind_vcpu_absent_vcpu", ev(BIND_VCPU, &mut [a, 5]), ENOENT);
        s.check(
            "bind_vcpu_closed_port",
            ev(BIND_VCPU, &mut [100, 0]),
            EINVAL,
        );
        // Close.
        s.check("close_ipi", port_op(CLOSE, i), 0);
        s.check("close_twice", port_op(CLOSE, i), EINVAL);
        s.check("close_port_0", port_op(CLOSE, 0), EINVAL);
        s.check("close_virq", port_op(CLOSE, t), 0);
        s.check("close_loopback_end", port_op(CLOSE, b), 0);
        s.check("other_end_unbound", status(SELF, a).1, STAT_UNBOUND);
        s.check(
            "unknown_command",
            hc(nr::EVENT_CHANNEL_OP, [99, 0, 0, 0, 0]),
            ENOSYS,
        );
        let (_, b) = bind_interdomain(SELF, a);
        // FIFO: errors while the 2-level ABI is in use.
        s.area("fifo");
        s.check(
            "expand_array_before_init",
            ev(EXPAND_ARRAY, &mut [0, 0]),
            EOPNOTSUPP,
        );
        s.check("set_priority_2level", ev(SET_PRIORITY, &mut [a, 5]), ENOSYS);
        let mut ic = [0u32; 6];
        ic[0] = 0xffff_fff0;
        s.check("init_control_bad_frame", ev(INIT_CONTROL, &mut ic), EINVAL);
        // A page of ours for the control block (a PV gfn is the machine frame).
        let gfn = mfn_of_va((&raw const CONTROL) as u64) as u32;
        ic = [gfn, 0, 1, 0, 0, 0];
        s.check(
            "init_control_misaligned_offset",
            ev(INIT_CONTROL, &mut ic),
            EINVAL,
        );
        // The 72-byte control block must fit in the page.
        ic = [gfn, 0, 4088, 0, 0, 0];
        s.check(
            "init_control_offset_past_page",
            ev(INIT_CONTROL, &mut ic),
            EINVAL,
        );
        ic = [gfn, 0, 0, 5, 0, 0];
        s.check(
            "init_control_absent_vcpu",
            ev(INIT_CONTROL, &mut ic),
            ENOENT,
        );
        (a, b)
    }

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    /// Offered as a FIFO control block page (always refused for another reason).
    static CONTROL: Page = Page([0; 4096]);

    static MFN_LIST: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

    fn mfn_of_va(va: u64) -> u64 {
        let list = MFN_LIST.load(core::sync::atomic::Ordering::Relaxed) as *const u64;
        // SAFETY: the p2m list (start_info's mfn_list) covers the kernel region, where
        // `va` lies.
        unsafe { list.add(((va - VIRT_BASE) >> 12) as usize).read_volatile() }
    }

    fn sched(cmd: u64, arg: u64) -> i64 {
        hc(nr::SCHED_OP, [cmd, arg, 0, 0, 0])
    }

    fn poll(ports: &[u32], nr: u32, timeout: u64) -> i64 {
        let arg = [ports.as_ptr() as u64, u64::from(nr), timeout];
        sched(3, arg.as_ptr() as u64)
    }

    fn timer_sched_cases(s: &mut Suite, page: &AtomicPage, a: u32, b: u32) {
        s.area("timer");
        s.check(
            "set_timer_op_cancel",
            hc(nr::SET_TIMER_OP, [0, 0, 0, 0, 0]),
            0,
        );
        s.check(
            "set_timer_op_past",
            hc(nr::SET_TIMER_OP, [1, 0, 0, 0, 0]),
            0,
        );
        s.check(
            "set_timer_op_far_future",
            hc(nr::SET_TIMER_OP, [u64::MAX, 0, 0, 0, 0]),
            0,
        );
        s.check(
            "set_timer_op_cancel_again",
            hc(nr::SET_TIMER_OP, [0, 0, 0, 0, 0]),
            0,
        );
        s.area("sched");
        s.check("yield", sched(0, 0), 0);
        s.check("compat_yield", hc(nr::SCHED_OP_COMPAT, [0, 0, 0, 0, 0]), 0);
        s.check("unknown_command", sched(99, 0), ENOSYS);
        s.check(
            "shutdown_code_poweroff",
            sched(5, [0u32].as_ptr() as u64),
            0,
        );
        s.check("shutdown_bad_pointer", sched(2, HYPERVISOR_ADDRESS), EFAULT);
        let rs = [NO_DOMAIN as u32, 0];
        s.check(
            "remote_shutdown_absent",
            sched(4, rs.as_ptr() as u64),
            ESRCH,
        );
        // Poll.
        let p64 = [0u32; 130];
        s.check("poll_129_ports", poll(&p64, 129, 0), EINVAL);
        s.check(
            "poll_bad_list",
            hc(nr::SCHED_OP, [3, HYPERVISOR_ADDRESS, 0, 0, 0]),
            EFAULT,
        );
        let bad = [100_000u32];
        s.check("poll_huge_port", poll(&bad, 1, 0), EINVAL);
        let arg = [HYPERVISOR_ADDRESS, 1, 0];
        s.check(
            "poll_list_in_hypervisor",
            sched(3, arg.as_ptr() as u64),
            EFAULT,
        );
        // A pending port: poll returns at once.
        let _ = port_op(SEND, b);
        s.check("poll_pending_port", poll(&[a], 1, 0), 0);
        set_bit(page, PENDING, a, false);
        // Nothing pending, a past timeout: returns at once.
        s.check("poll_past_timeout", poll(&[a], 1, 1), 0);
        s.check("poll_zero_ports_past_timeout", poll(&[], 0, 1), 0);
        // Block with an event pending (a timer already due) and upcalls still masked:
        // block unmasks them and returns at once, the upcall follows.
        let (_, t) = bind_virq(0, 0);
        let _ = hc(nr::SET_TIMER_OP, [1, 0, 0, 0, 0]);
        let _ = sched(0, 0);
        s.check("block_with_timer_due", sched(1, 0), 0);
        // Another pending event may have ended that block first: block until the
        // timer's upcall came (the periodic timer wakes us meanwhile), boundedly.
        for _ in 0..100 {
            if pv_guest::events::count(EvtchnPort(t)) > 0 {
                break;
            }
            let _ = hc(nr::SET_TIMER_OP, [1, 0, 0, 0, 0]);
            let _ = sched(1, 0);
        }
        pv_guest::events::disable();
        s.check_bool(
            "timer_event_delivered",
            pv_guest::events::count(EvtchnPort(t)) > 0,
            true,
        );
        let _ = port_op(CLOSE, t);
    }

    fn gnttab(cmd: u32, arg: &mut [u32], count: u64) -> i64 {
        hc(
            nr::GRANT_TABLE_OP,
            [u64::from(cmd), arg.as_mut_ptr() as u64, count, 0, 0],
        )
    }

    fn gnttab_cases(s: &mut Suite) {
        s.area("gnttab");
        // query_size: {dom u16, nr_frames u32, max_nr_frames u32, status i16}.
        let mut q = [SELF as u32, 0, 0, 0];
        s.check("query_size_self", gnttab(6, &mut q, 1), 0);
        s.check("query_size_status", i64::from(q[3] as u16 as i16), 0);
        s.check_bool("query_size_max_at_least_nr", q[2] >= q[1] && q[2] > 0, true);
        let mut q = [NO_DOMAIN as u32, 0, 0, 0];
        s.check("query_size_absent", gnttab(6, &mut q, 1), 0);
        s.check(
            "query_size_absent_status",
            i64::from(q[3] as u16 as i16),
            -2,
        );
        let mut v = [SELF as u32, 0];
        s.check("get_version", gnttab(10, &mut v, 1), 0);
        s.check("version_is_1", i64::from(v[1]), 1);
        let mut v = [NO_DOMAIN as u32, 0];
        s.check("get_version_absent", gnttab(10, &mut v, 1), ESRCH);
        s.check("set_version_3", gnttab(8, &mut [3], 1), EINVAL);
        s.check("set_version_1_again", gnttab(8, &mut [1], 1), 0);
        // setup_table: {dom u16, nr_frames u32, status i16, frame_list u64}.
        let mut frames = [0u64; 2];
        let fl = frames.as_mut_ptr() as u64;
        let mut st = [SELF as u32, 1000, 0, 0, fl as u32, (fl >> 32) as u32];
        s.check("setup_table_too_many", gnttab(2, &mut st, 1), 0);
        s.check(
            "setup_table_too_many_status",
            i64::from(st[2] as u16 as i16),
            -1,
        );
        let mut st = [NO_DOMAIN as u32, 1, 0, 0, fl as u32, (fl >> 32) as u32];
        s.check("setup_table_absent", gnttab(2, &mut st, 1), 0);
        s.check(
            "setup_table_absent_status",
            i64::from(st[2] as u16 as i16),
            -2,
        );
        let mut st = [SELF as u32, 1, 0, 0, 0x10, 0xffff_8300];
        s.check(
            "setup_table_list_in_hypervisor",
            gnttab(2, &mut st, 1),
            EFAULT,
        );
        s.check("map_count_0", gnttab(0, &mut [0], 0), 0);
        s.check("copy_count_0", gnttab(5, &mut [0], 0), 0);
        s.check("unknown_command", gnttab(99, &mut [0], 1), ENOSYS);
        s.check(
            "count_negative",
            hc(nr::GRANT_TABLE_OP, [0, 0, 0x8000_0000, 0, 0]),
            EINVAL,
        );
        let _ = EPERM;
    }

    fn main(si: &'static StartInfo) -> ! {
        MFN_LIST.store(si.mfn_list, core::sync::atomic::Ordering::Relaxed);
        let mut s = Suite::new("conformance-core", "evtchn");
        let page = match pv_guest::events::shared_info(si) {
            Ok(p) => p,
            Err(e) => {
                pv_guest::println!("conformance-core: no shared_info: {e:?}");
                s.finish()
            }
        };
        if pv_guest::events::init(si).is_err() {
            pv_guest::println!("conformance-core: no event callback");
            s.finish()
        }
        let (a, b) = evtchn_cases(&mut s, page);
        timer_sched_cases(&mut s, page, a, b);
        gnttab_cases(&mut s);
        s.area("evtchn");
        s.check(
            "reset_absent_domain",
            ev(RESET, &mut [NO_DOMAIN as u32]),
            ESRCH,
        );
        s.check("reset_self", ev(RESET, &mut [SELF as u32]), 0);
        s.check("reset_closed_loopback", status(SELF, a).1, STAT_CLOSED);
        s.finish()
    }
}
