//! `hostile-evtchn`: abuses event channels, the scheduler's poll and the timer calls with
//! every bad argument it can think of. Each attempt prints one line
//! `case <name>: got <ret> want <ret>` (the hypercall's return and what Xen 4.17
//! returns), and the guest ends with `hostile-evtchn: N cases, M unexpected`.
//!
//! A second domain runs beside it: the `bench` guest in its ping-pong peer role
//! (`case=evtchn_ping_pong_2dom role=2 peer=1`), which binds to a port this guest
//! reserves for it early on and answers every event it receives. After the floods this
//! guest plays `PEER_ROUNDS` round trips with it (`case peer_ping_pong`), which proves
//! the hypervisor still runs the other domain and delivers its events.
//!
//! Command line: `peer=<domid>` (default 2), `rounds=<n>` (default 10, must match the
//! peer's `iterations`).
//!
//! Everything is printed with console_io: the guest resets its own event channels,
//! which closes its console port.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use core::ptr::{addr_of, addr_of_mut};
    use core::sync::atomic::{AtomicU32, Ordering};

    use xen_pv_abi::event_channel::*;

    const VIRQ_TIMER: u32 = Virq::TIMER.0;
    const VIRQ_DOM_EXC: u32 = Virq::DOM_EXC.0;
    const NR_VIRQS: u32 = Virq::COUNT;
    use pv_guest::{StartInfo, VIRT_BASE, cmdline, io_println};
    use xen_pv_abi::generated::call;
    use xen_pv_abi::generated::vcpu_op::*;
    use xen_pv_abi::hypercall::{UVMF_INVLPG, update_va_mapping};
    use xen_pv_abi::sched::{
        SCHEDOP_POLL, SCHEDOP_REMOTE_SHUTDOWN, SCHEDOP_YIELD, SchedPoll, SchedRemoteShutdown,
    };
    use xen_pv_abi::shared_info::SharedInfo;
    use xen_pv_abi::{DomId, Errno, EvtchnPort};

    test_guests::standard_notes!("hostile-evtchn");
    pv_guest::entry!(main);

    const PAGE: u64 = 4096;
    /// Inside the hypervisor's direct map: never readable by a guest.
    const HYPERVISOR_ADDRESS: u64 = 0xffff_8300_0010_0000;
    /// A domain that does not exist.
    const NO_DOMAIN: DomId = DomId(9);
    /// An MFN far beyond any RAM QEMU gives us.
    const OUT_OF_RAM_MFN: u64 = 0xf_ffff_ffff;
    /// Sends of each flood.
    const FLOOD: u32 = 100_000;
    /// Bound on the port-exhaustion loop (the quota is 1023 ports).
    const MAX_ALLOCS: u32 = 5000;
    /// Polls (of at most `POLL_SLICE_NS` each) one wait for the peer may take.
    const MAX_POLLS: u32 = 2000;
    const POLL_SLICE_NS: u64 = 10_000_000;
    const NS_PER_MS: u64 = 1_000_000;

    /// Cases run and cases whose result differed from Xen's.
    static CASES: AtomicU32 = AtomicU32::new(0);
    static UNEXPECTED: AtomicU32 = AtomicU32::new(0);

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    /// Remapped onto shared_info; accessed with volatile operations only.
    static mut SHARED_INFO_PAGE: Page = Page([0; 4096]);
    /// Own frames lent to the hypervisor as FIFO control block and event-array page.
    static mut FIFO_CONTROL: Page = Page([0; 4096]);
    static mut FIFO_ARRAY: Page = Page([0; 4096]);

    fn case(name: &str, got: i64, want: Result<i64, Errno>) {
        let want = want.unwrap_or_else(Errno::to_ret);
        CASES.fetch_add(1, Ordering::Relaxed);
        if got != want {
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
        }
        io_println!("case {name}: got {got} want {want}");
    }

    // ---- raw calls --------------------------------------------------------------------

    fn evtchn<T>(cmd: u32, arg: &mut T) -> i64 {
        // SAFETY: `arg` is a live struct the hypervisor may read and write (it is the
        // right one for `cmd`, or the point of the case is that it is not).
        unsafe { call::event_channel_op(cmd, (arg as *mut T).cast()) }
    }

    fn send(port: u32) -> i64 {
        evtchn(
            EVTCHNOP_SEND,
            &mut EvtchnSend {
                port: EvtchnPort(port),
            },
        )
    }

    fn close(port: u32) -> i64 {
        evtchn(
            EVTCHNOP_CLOSE,
            &mut EvtchnClose {
                port: EvtchnPort(port),
            },
        )
    }

    fn unmask(port: u32) -> i64 {
        evtchn(
            EVTCHNOP_UNMASK,
            &mut EvtchnUnmask {
                port: EvtchnPort(port),
            },
        )
    }

    fn status(dom: DomId, port: u32) -> (i64, EvtchnStatus) {
        let mut s = EvtchnStatus {
            dom,
            port: EvtchnPort(port),
            ..EvtchnStatus::default()
        };
        (evtchn(EVTCHNOP_STATUS, &mut s), s)
    }

    fn alloc_unbound(dom: DomId, remote: DomId) -> (i64, u32) {
        let mut a = EvtchnAllocUnbound {
            dom,
            remote_dom: remote,
            port: EvtchnPort(0),
        };
        (evtchn(EVTCHNOP_ALLOC_UNBOUND, &mut a), a.port.0)
    }

    fn bind_interdomain(remote: DomId, port: u32) -> (i64, u32) {
        let mut b = EvtchnBindInterdomain {
            remote_dom: remote,
            pad: 0,
            remote_port: EvtchnPort(port),
            local_port: EvtchnPort(0),
        };
        (evtchn(EVTCHNOP_BIND_INTERDOMAIN, &mut b), b.local_port.0)
    }

    fn bind_virq(virq: u32, vcpu: u32) -> (i64, u32) {
        let mut b = EvtchnBindVirq {
            virq,
            vcpu,
            port: EvtchnPort(0),
        };
        (evtchn(EVTCHNOP_BIND_VIRQ, &mut b), b.port.0)
    }

    fn bind_ipi(vcpu: u32) -> (i64, u32) {
        let mut b = EvtchnBindIpi {
            vcpu,
            port: EvtchnPort(0),
        };
        (evtchn(EVTCHNOP_BIND_IPI, &mut b), b.port.0)
    }

    fn bind_vcpu(port: u32, vcpu: u32) -> i64 {
        let mut b = EvtchnBindVcpu {
            port: EvtchnPort(port),
            vcpu,
        };
        evtchn(EVTCHNOP_BIND_VCPU, &mut b)
    }

    fn reset(dom: DomId) -> i64 {
        evtchn(EVTCHNOP_RESET, &mut EvtchnReset { dom })
    }

    fn init_control(mfn: u64, offset: u32, vcpu: u32) -> i64 {
        let mut c = EvtchnInitControl {
            control_gfn: mfn,
            offset,
            vcpu,
            ..EvtchnInitControl::default()
        };
        evtchn(EVTCHNOP_INIT_CONTROL, &mut c)
    }

    fn expand_array(mfn: u64) -> i64 {
        evtchn(
            EVTCHNOP_EXPAND_ARRAY,
            &mut EvtchnExpandArray { array_gfn: mfn },
        )
    }

    fn set_priority(port: u32, priority: u32) -> i64 {
        let mut p = EvtchnSetPriority {
            port: EvtchnPort(port),
            priority,
        };
        evtchn(EVTCHNOP_SET_PRIORITY, &mut p)
    }

    /// `SCHEDOP_poll` on `ports` (pointer and count as given) until `timeout` (0: none).
    fn poll_raw(ports: u64, nr_ports: u32, timeout: u64) -> i64 {
        let p = SchedPoll {
            ports,
            nr_ports,
            pad: 0,
            timeout,
        };
        // SAFETY: `p` is a live sched_poll; the port list is ours or meant to be refused.
        unsafe { call::sched_op(SCHEDOP_POLL, (&raw const p).cast()) }
    }

    fn poll(ports: &[u32], timeout: u64) -> i64 {
        poll_raw(ports.as_ptr() as u64, ports.len() as u32, timeout)
    }

    fn vcpu_op<T>(cmd: u32, vcpu: u32, arg: &mut T) -> i64 {
        // SAFETY: `arg` is a live struct of the size the command reads.
        unsafe { call::vcpu_op(cmd, vcpu, (arg as *mut T).cast()) }
    }

    fn mfn_of(si: &StartInfo, va: u64) -> u64 {
        let pfn = (va - VIRT_BASE) / PAGE;
        // SAFETY: the p2m list is mapped and has nr_pages entries; pfn is one of ours.
        unsafe {
            (si.mfn_list as *const u64)
                .add(pfn as usize)
                .read_volatile()
        }
    }

    // ---- shared_info ------------------------------------------------------------------

    /// Maps shared_info over `SHARED_INFO_PAGE` and masks event upcalls: events are
    /// only ever seen through their pending bits (SCHEDOP_poll), never delivered.
    fn map_shared_info(si: &StartInfo) -> *mut SharedInfo {
        let va = &raw mut SHARED_INFO_PAGE;
        let pte = (si.shared_info & !0xfff) | 0x7;
        // SAFETY: the page belongs to our image and no reference to it exists.
        if let Err(e) = unsafe { update_va_mapping(va as u64, pte, UVMF_INVLPG) } {
            io_println!("hostile-evtchn: cannot map shared_info: {e}");
            pv_guest::poweroff();
        }
        let shared = va.cast::<SharedInfo>();
        // SAFETY: `shared` maps shared_info; a byte store to our vCPU's mask.
        unsafe { addr_of_mut!((*shared).vcpu_info[0].evtchn_upcall_mask).write_volatile(1) };
        shared
    }

    fn is_pending(shared: *mut SharedInfo, port: u32) -> bool {
        let (w, bit) = ((port / 64) as usize % 64, port % 64);
        // SAFETY: `shared` maps shared_info; volatile read of a bitmap word.
        let word = unsafe { addr_of!((*shared).evtchn_pending[w]).read_volatile() };
        word & (1 << bit) != 0
    }

    fn clear_pending(shared: *mut SharedInfo, port: u32) {
        let (w, bit) = ((port / 64) as usize % 64, port % 64);
        // SAFETY: as above; the hypervisor only sets bits of this word, and no vCPU of
        // ours races with this store.
        unsafe {
            let p = addr_of_mut!((*shared).evtchn_pending[w]);
            p.write_volatile(p.read_volatile() & !(1 << bit));
        }
    }

    /// Xen system time of vCPU 0 now (ns): xen-pv-abi's seqlocked `vcpu_time_info` read.
    fn now_ns(shared: *mut SharedInfo) -> u64 {
        // SAFETY: `shared` is the page-aligned shared_info mapping, kept for the guest's
        // life; this guest reads it only with aligned loads (volatile or atomic), which
        // is what the hypervisor's word-sized writes expect.
        let page = unsafe { xen_pv_abi::events::AtomicPage::from_ptr(shared.cast()) };
        xen_pv_abi::time::system_time_ns(page, xen_pv_abi::VcpuId(0)).unwrap_or(0)
    }

    /// Polls `port` (10 ms at a time) until it is pending; clears it. `false` if it
    /// never came.
    fn wait_port(shared: *mut SharedInfo, port: u32) -> bool {
        for _ in 0..MAX_POLLS {
            if is_pending(shared, port) {
                clear_pending(shared, port);
                return true;
            }
            let deadline = now_ns(shared).saturating_add(POLL_SLICE_NS);
            let r = poll(&[port], deadline);
            if r != 0 {
                io_println!("hostile-evtchn: poll failed: {r}");
                return false;
            }
        }
        false
    }

    // ---- the cases ----------------------------------------------------------------------

    fn main(si: &'static StartInfo) -> ! {
        let cmd = si.cmd_line_bytes();
        let num = |key: &str, default: u64| {
            cmdline::value(cmd, key)
                .and_then(cmdline::parse_u64)
                .unwrap_or(default)
        };
        let peer = DomId(u16::try_from(num("peer", 2)).unwrap_or(2));
        let rounds = num("rounds", 10);
        let shared = map_shared_info(si);

        fifo_cases(si);
        // The port the peer binds (bench's peer role tries ports 1..=8): reserved now,
        // right after the reset freed the low ports, so the peer finds it early.
        let (r, peer_port) = alloc_unbound(DomId::SELF, peer);
        case("alloc_unbound_for_peer", r, Ok(0));
        io_println!("hostile-evtchn: port {peer_port} reserved for d{}", peer.0);

        invalid_port_cases();
        foreign_cases(peer);
        virq_cases();
        closed_port_cases();
        exhaust_cases(peer_port);
        flood_cases(shared);
        sched_cases(shared, peer);
        timer_cases(shared);
        compat_cases();

        // The peer bound our port and said "ready"; then it answers every event.
        let mut ok = wait_port(shared, peer_port);
        let mut done = 0;
        while ok && done < rounds {
            ok = send(peer_port) == 0 && wait_port(shared, peer_port);
            done += u64::from(ok);
        }
        case("peer_ping_pong", done as i64, Ok(rounds as i64));
        // Once the peer has powered off, our end is unbound again (reserved for it).
        let mut st = status(DomId::SELF, peer_port);
        for _ in 0..MAX_POLLS {
            if st.1.status != EVTCHNSTAT_INTERDOMAIN {
                break;
            }
            // SAFETY: yield takes no argument.
            unsafe { call::sched_op(SCHEDOP_YIELD, core::ptr::null()) };
            st = status(DomId::SELF, peer_port);
        }
        case("status_peer_port_after_peer_ended", st.0, Ok(0));
        case(
            "peer_port_unbound",
            st.1.status.into(),
            Ok(EVTCHNSTAT_UNBOUND.into()),
        );
        poll_timeout_case(shared);

        io_println!(
            "hostile-evtchn: {} cases, {} unexpected",
            CASES.load(Ordering::Relaxed),
            UNEXPECTED.load(Ordering::Relaxed)
        );
        io_println!("hostile-evtchn: still alive");
        pv_guest::poweroff()
    }

    /// FIFO control blocks and event-array pages in frames that are not ours, are our
    /// page tables, or do not exist; priorities; then back to 2-level with a reset.
    fn fifo_cases(si: &StartInfo) {
        let l4 = mfn_of(si, si.pt_base);
        let control = mfn_of(si, &raw const FIFO_CONTROL as u64);
        let array = mfn_of(si, &raw const FIFO_ARRAY as u64);
        // Past every frame of our p2m (and not shared_info): not ours.
        let mut max = 0;
        for pfn in 0..si.nr_pages {
            max = max.max(mfn_of(si, VIRT_BASE + pfn * PAGE));
        }
        let mut foreign = max + 1;
        let grant = test_guests::grant_frame();
        while foreign == si.shared_info >> 12 || Some(foreign) == grant {
            foreign += 1;
        }
        let (r, ipi) = bind_ipi(0);
        case("bind_ipi", r, Ok(0));
        case(
            "set_priority_2level",
            set_priority(ipi, 3),
            Err(Errno::ENOSYS),
        );
        case(
            "expand_array_before_init",
            expand_array(array),
            Err(Errno::EOPNOTSUPP),
        );
        case(
            "init_control_foreign_mfn",
            init_control(foreign, 0, 0),
            Err(Errno::EINVAL),
        );
        case(
            "init_control_out_of_ram",
            init_control(OUT_OF_RAM_MFN, 0, 0),
            Err(Errno::EINVAL),
        );
        case(
            "init_control_hypervisor_mfn",
            init_control(1, 0, 0),
            Err(Errno::EINVAL),
        );
        case(
            "init_control_own_l4",
            init_control(l4, 0, 0),
            Err(Errno::EINVAL),
        );
        case(
            "init_control_misaligned",
            init_control(control, 4, 0),
            Err(Errno::EINVAL),
        );
        case(
            "init_control_crosses_page",
            init_control(control, 4032, 0),
            Err(Errno::EINVAL),
        );
        case(
            "init_control_vcpu1",
            init_control(control, 0, 1),
            Err(Errno::ENOENT),
        );
        case("init_control", init_control(control, 64, 0), Ok(0));
        case(
            "init_control_again",
            init_control(control, 0, 0),
            Err(Errno::EINVAL),
        );
        case("expand_array_own_l4", expand_array(l4), Err(Errno::EINVAL));
        case(
            "expand_array_foreign_mfn",
            expand_array(foreign),
            Err(Errno::EINVAL),
        );
        case(
            "expand_array_out_of_ram",
            expand_array(OUT_OF_RAM_MFN),
            Err(Errno::EINVAL),
        );
        case("expand_array", expand_array(array), Ok(0));
        case("set_priority_16", set_priority(ipi, 16), Err(Errno::EINVAL));
        case(
            "set_priority_max",
            set_priority(ipi, u32::MAX),
            Err(Errno::EINVAL),
        );
        case(
            "set_priority_invalid_port",
            set_priority(4096, 1),
            Err(Errno::EINVAL),
        );
        case("set_priority_15", set_priority(ipi, 15), Ok(0));
        case("fifo_send_ipi", send(ipi), Ok(0));
        // Pending now (the event word says so): poll returns at once.
        case("fifo_poll_pending_ipi", poll(&[ipi], 0), Ok(0));
        case("reset_self", reset(DomId::SELF), Ok(0));
        case(
            "expand_array_after_reset",
            expand_array(array),
            Err(Errno::EOPNOTSUPP),
        );
        let (r, s) = status(DomId::SELF, ipi);
        case("status_after_reset", r, Ok(0));
        case(
            "ipi_closed_by_reset",
            s.status.into(),
            Ok(EVTCHNSTAT_CLOSED.into()),
        );
    }

    fn invalid_port_cases() {
        for (what, port) in [
            ("port0", 0u32),
            ("port1024", 1024),
            ("port4096", 4096),
            ("port_max", u32::MAX),
        ] {
            // Port 0 exists (reserved): sending or closing it is refused all the same.
            let want = Err(Errno::EINVAL);
            case(&name("send", what), send(port), want);
            case(&name("close", what), close(port), want);
            case(&name("bind_vcpu", what), bind_vcpu(port, 0), want);
            let valid = port == 0;
            let (r, _) = status(DomId::SELF, port);
            case(&name("status", what), r, if valid { Ok(0) } else { want });
            case(
                &name("unmask", what),
                unmask(port),
                if valid { Ok(0) } else { want },
            );
            let (r, _) = bind_interdomain(DomId::SELF, port);
            case(&name("bind_loopback", what), r, want);
        }
    }

    /// A case name `<op>_<what>` in a fixed buffer (this guest has no allocator).
    struct Name {
        buf: [u8; 48],
        len: usize,
    }

    fn name(op: &str, what: &str) -> Name {
        let mut n = Name {
            buf: [0; 48],
            len: 0,
        };
        for part in [op.as_bytes(), b"_", what.as_bytes()] {
            let take = part.len().min(n.buf.len() - n.len);
            n.buf[n.len..n.len + take].copy_from_slice(&part[..take]);
            n.len += take;
        }
        n
    }

    impl core::ops::Deref for Name {
        type Target = str;
        fn deref(&self) -> &str {
            core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
        }
    }

    /// Another domain's ports and domains that do not exist.
    fn foreign_cases(peer: DomId) {
        // The peer's port 1 is its console port: not offered to us.
        let (r, _) = bind_interdomain(peer, 1);
        case("bind_foreign_console_port", r, Err(Errno::EINVAL));
        let (r, _) = bind_interdomain(peer, u32::MAX);
        case("bind_foreign_port_max", r, Err(Errno::EINVAL));
        let (r, _) = bind_interdomain(NO_DOMAIN, 1);
        case("bind_no_domain", r, Err(Errno::ESRCH));
        let (r, _) = alloc_unbound(peer, DomId::SELF);
        case("alloc_unbound_in_other_domain", r, Err(Errno::EPERM));
        let (r, _) = alloc_unbound(NO_DOMAIN, DomId::SELF);
        case("alloc_unbound_in_no_domain", r, Err(Errno::ESRCH));
        let (r, _) = status(peer, 1);
        case("status_foreign_port", r, Err(Errno::EPERM));
        let (r, _) = status(peer, u32::MAX);
        case("status_foreign_port_max", r, Err(Errno::EINVAL));
        let (r, _) = status(NO_DOMAIN, 1);
        case("status_no_domain", r, Err(Errno::ESRCH));
        case("reset_other_domain", reset(peer), Err(Errno::EPERM));
        case("reset_no_domain", reset(NO_DOMAIN), Err(Errno::ESRCH));
    }

    fn virq_cases() {
        let (r, timer) = bind_virq(VIRQ_TIMER, 0);
        case("bind_virq_timer", r, Ok(0));
        let (r, _) = bind_virq(VIRQ_TIMER, 0);
        case("bind_virq_timer_twice", r, Err(Errno::EEXIST));
        let (r, _) = bind_virq(VIRQ_DOM_EXC, 1);
        case("bind_global_virq_vcpu1", r, Err(Errno::EINVAL));
        let (r, _) = bind_virq(VIRQ_TIMER, 5);
        case("bind_virq_timer_vcpu5", r, Err(Errno::ENOENT));
        let (r, _) = bind_virq(NR_VIRQS, 0);
        case("bind_virq_24", r, Err(Errno::EINVAL));
        let (r, _) = bind_virq(u32::MAX, 0);
        case("bind_virq_max", r, Err(Errno::EINVAL));
        case("send_virq_port", send(timer), Err(Errno::EINVAL));
        case(
            "bind_vcpu_per_vcpu_virq",
            bind_vcpu(timer, 0),
            Err(Errno::EINVAL),
        );
        case("bind_vcpu_vcpu1", bind_vcpu(timer, 1), Err(Errno::ENOENT));
        let (r, _) = bind_ipi(1);
        case("bind_ipi_vcpu1", r, Err(Errno::ENOENT));
        case("close_virq_timer", close(timer), Ok(0));
        let (r, again) = bind_virq(VIRQ_TIMER, 0);
        case("bind_virq_timer_after_close", r, Ok(0));
        case("close_virq_timer_again", close(again), Ok(0));
    }

    fn closed_port_cases() {
        let (r, port) = alloc_unbound(DomId::SELF, DomId::SELF);
        case("alloc_unbound_self", r, Ok(0));
        case("close_unbound", close(port), Ok(0));
        case("send_closed", send(port), Err(Errno::EINVAL));
        case("close_closed", close(port), Err(Errno::EINVAL));
        case("bind_vcpu_closed", bind_vcpu(port, 0), Err(Errno::EINVAL));
        case("unmask_closed", unmask(port), Ok(0));
        let (r, s) = status(DomId::SELF, port);
        case("status_closed", r, Ok(0));
        case(
            "status_closed_is_closed",
            s.status.into(),
            Ok(EVTCHNSTAT_CLOSED.into()),
        );
        let (r, _) = bind_interdomain(DomId::SELF, port);
        case("bind_loopback_closed", r, Err(Errno::EINVAL));
    }

    /// Allocates ports until the quota says no, then frees them all.
    fn exhaust_cases(keep: u32) {
        let (mut first, mut last, mut n, mut r) = (0, 0, 0, 0);
        while n < MAX_ALLOCS {
            let (ret, port) = alloc_unbound(DomId::SELF, DomId::SELF);
            r = ret;
            if r != 0 {
                break;
            }
            if n == 0 {
                first = port;
            }
            last = port;
            n += 1;
        }
        io_println!("hostile-evtchn: allocated {n} ports ({first}..={last})");
        case("exhaust_ports", r, Err(Errno::ENOSPC));
        case("exhausted_at_1023", last.into(), Ok(1023));
        let (r, _) = bind_ipi(0);
        case("bind_ipi_exhausted", r, Err(Errno::ENOSPC));
        let mut bad = 0;
        for port in (first..=last).filter(|&p| p != keep) {
            let r = close(port);
            if r != 0 && bad == 0 {
                bad = r;
            }
        }
        case("close_all", bad, Ok(0));
        let (r, port) = alloc_unbound(DomId::SELF, DomId::SELF);
        case("alloc_after_close_all", r, Ok(0));
        case("close_again", close(port), Ok(0));
    }

    /// `n` sends on `port`: the first return that is not `want` (else `want`).
    fn flood(port: u32, want: i64) -> i64 {
        let mut got = want;
        for _ in 0..FLOOD {
            let r = send(port);
            if r != want && got == want {
                got = r;
            }
        }
        got
    }

    fn flood_cases(shared: *mut SharedInfo) {
        let (r, a) = alloc_unbound(DomId::SELF, DomId::SELF);
        case("loopback_alloc", r, Ok(0));
        let (r, b) = bind_interdomain(DomId::SELF, a);
        case("loopback_bind", r, Ok(0));
        let (r, unbound) = alloc_unbound(DomId::SELF, DomId::SELF);
        case("unbound_alloc", r, Ok(0));
        case("flood_loopback", flood(a, 0), Ok(0));
        case("flood_unbound", flood(unbound, 0), Ok(0));
        case("flood_invalid_port", flood(4096, -22), Err(Errno::EINVAL));
        // A hundred thousand sends leave one pending bit, nothing more.
        case("loopback_pending", i64::from(is_pending(shared, b)), Ok(1));
        case("poll_pending_port", poll(&[unbound, b], 0), Ok(0));
        clear_pending(shared, b);
        let (r, s) = status(DomId::SELF, a);
        case("status_after_flood", r, Ok(0));
        case("loopback_peer_port", s.u1.into(), Ok(b.into()));
        case("close_loopback_end", close(b), Ok(0));
        let (_, s) = status(DomId::SELF, a);
        case(
            "other_end_unbound",
            s.status.into(),
            Ok(EVTCHNSTAT_UNBOUND.into()),
        );
        case("send_half_closed", send(a), Ok(0));
        for p in [a, unbound] {
            close(p);
        }
    }

    fn sched_cases(shared: *mut SharedInfo, peer: DomId) {
        let ports = [0u32; 129];
        case("poll_129_ports", poll(&ports, 0), Err(Errno::EINVAL));
        case(
            "poll_bad_port_list",
            poll_raw(HYPERVISOR_ADDRESS, 1, 0),
            Err(Errno::EFAULT),
        );
        // SAFETY: the hypervisor must refuse to read the argument from its own memory.
        let r = unsafe { call::sched_op(SCHEDOP_POLL, HYPERVISOR_ADDRESS as *const _) };
        case("poll_bad_argument", r, Err(Errno::EFAULT));
        case("poll_invalid_port", poll(&[4096], 0), Err(Errno::EINVAL));
        // Port 0 is valid and never pending, so the list is read on to the bad port.
        case("poll_port_max", poll(&[0, u32::MAX], 0), Err(Errno::EINVAL));
        let past = now_ns(shared).saturating_sub(1);
        let (r, unbound) = alloc_unbound(DomId::SELF, DomId::SELF);
        case("poll_port_alloc", r, Ok(0));
        case("poll_past_timeout", poll(&[unbound], past.max(1)), Ok(0));
        close(unbound);
        let mut rs = SchedRemoteShutdown {
            domain_id: peer,
            pad: 0,
            reason: 0,
        };
        // SAFETY: a live sched_remote_shutdown.
        let r = unsafe { call::sched_op(SCHEDOP_REMOTE_SHUTDOWN, (&raw mut rs).cast()) };
        case("remote_shutdown_peer", r, Err(Errno::EPERM));
    }

    fn poll_timeout_case(shared: *mut SharedInfo) {
        let (r, unbound) = alloc_unbound(DomId::SELF, DomId::SELF);
        case("poll_timeout_alloc", r, Ok(0));
        let start = now_ns(shared);
        let r = poll(&[unbound], start + NS_PER_MS);
        let waited = now_ns(shared).saturating_sub(start);
        case("poll_timeout", r, Ok(0));
        case(
            "poll_timeout_waited_1ms",
            i64::from(waited >= NS_PER_MS),
            Ok(1),
        );
        close(unbound);
    }

    fn timer_cases(shared: *mut SharedInfo) {
        case(
            "vcpu_op_vcpu1",
            vcpu_op(VCPUOP_IS_UP, 1, &mut 0u64),
            Err(Errno::ENOENT),
        );
        case(
            "vcpu_op_vcpu_max",
            vcpu_op(VCPUOP_IS_UP, u32::MAX, &mut 0u64),
            Err(Errno::ENOENT),
        );
        let mut period = NS_PER_MS - 1;
        case(
            "periodic_below_1ms",
            vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 0, &mut period),
            Err(Errno::EINVAL),
        );
        let mut period = 0u64;
        case(
            "periodic_zero",
            vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 0, &mut period),
            Err(Errno::EINVAL),
        );
        let mut period = NS_PER_MS;
        case(
            "periodic_1ms",
            vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 0, &mut period),
            Ok(0),
        );
        case(
            "periodic_stop",
            vcpu_op(VCPUOP_STOP_PERIODIC_TIMER, 0, &mut 0u64),
            Ok(0),
        );
        /// `struct vcpu_set_singleshot_timer`.
        #[repr(C)]
        struct Singleshot {
            timeout_abs_ns: u64,
            flags: u32,
            pad: u32,
        }
        let mut past = Singleshot {
            timeout_abs_ns: now_ns(shared) / 2,
            flags: 1,
            pad: 0,
        };
        case(
            "singleshot_future_in_past",
            vcpu_op(VCPUOP_SET_SINGLESHOT_TIMER, 0, &mut past),
            Ok(0),
        );
        case(
            "singleshot_stop",
            vcpu_op(VCPUOP_STOP_SINGLESHOT_TIMER, 0, &mut 0u64),
            Ok(0),
        );
        // SAFETY: set_timer_op takes a time, no pointer.
        let r = unsafe { call::set_timer_op(u64::MAX) };
        case("set_timer_op_huge", r, Ok(0));
        // SAFETY: as above.
        let r = unsafe { call::set_timer_op(0) };
        case("set_timer_op_cancel", r, Ok(0));
    }

    /// The pre-3.2 `event_channel_op_compat` (16): command word, then the struct.
    fn compat_cases() {
        #[repr(C)]
        struct CompatOp {
            cmd: u32,
            arg: [u32; 6],
        }
        let mut op = CompatOp {
            cmd: EVTCHNOP_SEND,
            arg: [4096, 0, 0, 0, 0, 0],
        };
        // SAFETY: a live evtchn_op.
        let r = unsafe { call::event_channel_op_compat((&raw mut op).cast()) };
        case("compat_send_invalid", r, Err(Errno::EINVAL));
        let mut op = CompatOp {
            cmd: EVTCHNOP_STATUS,
            arg: [u32::from(DomId::SELF.0), 0, 0, 0, 0, 0],
        };
        // SAFETY: as above.
        let r = unsafe { call::event_channel_op_compat((&raw mut op).cast()) };
        case("compat_status_port0", r, Ok(0));
        let mut op = CompatOp {
            cmd: 99,
            arg: [0; 6],
        };
        // SAFETY: as above.
        let r = unsafe { call::event_channel_op_compat((&raw mut op).cast()) };
        case("compat_unknown_cmd", r, Err(Errno::ENOSYS));
        // SAFETY: the hypervisor must refuse to read its own memory.
        let r = unsafe { call::event_channel_op_compat(HYPERVISOR_ADDRESS as *mut _) };
        case("compat_bad_pointer", r, Err(Errno::EFAULT));
        case(
            "evtchn_unknown_cmd",
            evtchn(99, &mut [0u64; 4]),
            Err(Errno::ENOSYS),
        );
    }
}
