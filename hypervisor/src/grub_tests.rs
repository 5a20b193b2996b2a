//! Host tests of what GRUB and the control domain need beyond the foundation:
//! grant-table setup (the first frame seeded at boot), serial input for the control
//! domain (the input ring, VIRQ_CONSOLE, `CONSOLEIO_read`) and the timer tick. They reuse
//! the hand-built domains of `hv_tests.rs` (this is a child module of it).

use super::*;
use xen_pv_abi::Errno;
use xen_pv_abi::grant_table::{
    GNTST_BAD_DOMAIN, GNTST_BAD_VIRT_ADDR, GNTST_GENERAL_ERROR, GNTST_PERMISSION_DENIED,
    GNTTABOP_GET_VERSION, GNTTABOP_QUERY_SIZE, GNTTABOP_SET_VERSION, GNTTABOP_SETUP_TABLE,
    GTF_PERMIT_ACCESS, GnttabQuerySize, GnttabSetupTable, GrantEntryV1,
};
use zerocopy::IntoBytes;

const GNTTAB: u64 = 20;

fn setup_table(hv: &mut Hv, g: &TestDomain, f: &mut GuestFrame, dom: DomId, n: u32) -> i16 {
    let op = GnttabSetupTable {
        dom,
        nr_frames: n,
        status: 0x55,
        frame_list: DATA_VA + 0x100,
        ..Default::default()
    };
    put(hv, g, 0, op.as_bytes());
    call(hv, f, GNTTAB, GNTTABOP_SETUP_TABLE as u64, DATA_VA, 1);
    assert_eq!(ret(f), 0, "setup_table itself succeeds");
    let status = get(hv, g, 8, 2);
    i16::from_le_bytes([status[0], status[1]])
}

fn frame_list(hv: &Hv, g: &TestDomain, n: usize) -> std::vec::Vec<u64> {
    get(hv, g, 0x100, 8 * n)
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn grant_version_1_only() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    for (version, expect) in [(1u32, 0i64), (2, -38), (0, -22), (3, -22), (u32::MAX, -22)] {
        put(&hv, &g, 0, &version.to_le_bytes());
        call(
            &mut hv,
            &mut f,
            GNTTAB,
            GNTTABOP_SET_VERSION as u64,
            DATA_VA,
            1,
        );
        assert_eq!(ret(&f), expect, "version {version}");
        // The version in force is written back.
        assert_eq!(get(&hv, &g, 0, 4), 1u32.to_le_bytes());
    }
    // Exactly one op per call, as in Xen; unknown ops are ENOSYS; bad pointers EFAULT.
    call(
        &mut hv,
        &mut f,
        GNTTAB,
        GNTTABOP_SET_VERSION as u64,
        DATA_VA,
        2,
    );
    assert_eq!(ret(&f), -22);
    call(&mut hv, &mut f, GNTTAB, 99, DATA_VA, 1);
    assert_eq!(ret(&f), -38);
    call(
        &mut hv,
        &mut f,
        GNTTAB,
        GNTTABOP_SET_VERSION as u64,
        HV_ADDRESS,
        1,
    );
    assert_eq!(ret(&f), -14);
    // get_version of self.
    put(&hv, &g, 0, &[0xf0, 0x7f, 0, 0, 9, 9, 9, 9]);
    call(
        &mut hv,
        &mut f,
        GNTTAB,
        GNTTABOP_GET_VERSION as u64,
        DATA_VA,
        1,
    );
    assert_eq!(ret(&f), 0);
    assert_eq!(get(&hv, &g, 4, 4), 1u32.to_le_bytes());
}

#[test]
fn setup_table_gives_owned_zeroed_frames_with_seeded_refs() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    // The first frame exists from the start (the control domain maps refs 0 and 1
    // before the domU asks): setup_table hands it out without allocating.
    let owned_before = hv.frames.count_of(DomId(1));
    let seeded = hv.domains[g.idx].grant.frames()[0];
    assert_eq!(setup_table(&mut hv, &g, &mut f, DomId::SELF, 1), 0);
    let first = frame_list(&hv, &g, 1)[0];
    assert_eq!(first, seeded.0);
    assert_eq!(hv.frames.owner(Mfn(first)), Some(DomId(1)));
    assert_eq!(hv.frames.count_of(DomId(1)), owned_before);
    // Refs 0 and 1 grant the console and xenstore rings to dom0, as the toolstack does.
    let d = &hv.domains[g.idx];
    let (console, store) = (d.console_ring.unwrap().0, d.store_ring.unwrap().0);
    let mut e = GrantEntryV1::default();
    hv.mem.read(Mfn(first).maddr(), e.as_mut_bytes()).unwrap();
    assert_eq!(
        (e.flags, e.domid, e.frame as u64),
        (GTF_PERMIT_ACCESS, DomId(0), console.0)
    );
    hv.mem
        .read(Mfn(first).maddr() + 8, e.as_mut_bytes())
        .unwrap();
    assert_eq!(e.frame as u64, store.0);
    let mut rest = [0xffu8; 64];
    hv.mem.read(Mfn(first).maddr() + 16, &mut rest).unwrap();
    assert!(rest.iter().all(|&b| b == 0), "grant frame not zeroed");

    // Asking again (own id this time) returns the same frame first, grows to 3.
    assert_eq!(setup_table(&mut hv, &g, &mut f, DomId(1), 3), 0);
    let three = frame_list(&hv, &g, 3);
    assert_eq!(three[0], first);
    assert!(three[1] != first && three[2] != three[1]);
    assert_eq!(hv.frames.count_of(DomId(1)), owned_before + 2);

    // query_size reports them.
    let q = GnttabQuerySize {
        dom: DomId::SELF,
        ..Default::default()
    };
    put(&hv, &g, 0, q.as_bytes());
    call(
        &mut hv,
        &mut f,
        GNTTAB,
        GNTTABOP_QUERY_SIZE as u64,
        DATA_VA,
        1,
    );
    assert_eq!(ret(&f), 0);
    assert_eq!(get(&hv, &g, 4, 8), [3, 0, 0, 0, 4, 0, 0, 0]);

    // The frames go back to the allocator with the domain.
    let free_before = hv.frames.free_count();
    put(&hv, &g, 0, &0u32.to_le_bytes());
    call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert_eq!(hv.frames.count_of(DomId(1)), 0);
    assert_eq!(hv.frames.free_count(), free_before + owned_before + 2);
}

#[test]
fn setup_table_refuses_hostile_requests_in_status() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    add_domain(&mut hv, 2, "other", false);
    let mut f = started(&mut hv);
    let owned = hv.frames.count_of(DomId(1));
    for n in [5, 1000, u32::MAX] {
        assert_eq!(
            setup_table(&mut hv, &g, &mut f, DomId::SELF, n),
            GNTST_GENERAL_ERROR
        );
    }
    assert_eq!(
        setup_table(&mut hv, &g, &mut f, DomId(2), 1),
        GNTST_PERMISSION_DENIED
    );
    assert_eq!(
        setup_table(&mut hv, &g, &mut f, DomId(77), 1),
        GNTST_BAD_DOMAIN
    );
    assert_eq!(hv.frames.count_of(DomId(1)), owned, "nothing allocated");
    // A frame_list pointing into the hypervisor: status, not a crash.
    let op = GnttabSetupTable {
        dom: DomId::SELF,
        nr_frames: 1,
        frame_list: HV_ADDRESS,
        ..Default::default()
    };
    put(&hv, &g, 0, op.as_bytes());
    call(
        &mut hv,
        &mut f,
        GNTTAB,
        GNTTABOP_SETUP_TABLE as u64,
        DATA_VA,
        1,
    );
    assert_eq!(ret(&f), 0);
    assert_eq!(get(&hv, &g, 8, 2), GNTST_BAD_VIRT_ADDR.to_le_bytes());
    // An unreadable op is EFAULT; a wrong count EINVAL.
    call(&mut hv, &mut f, GNTTAB, GNTTABOP_SETUP_TABLE as u64, 0, 1);
    assert_eq!(ret(&f), -14);
    call(
        &mut hv,
        &mut f,
        GNTTAB,
        GNTTABOP_SETUP_TABLE as u64,
        DATA_VA,
        0,
    );
    assert_eq!(ret(&f), -22);
    call(
        &mut hv,
        &mut f,
        GNTTAB,
        GNTTABOP_QUERY_SIZE as u64,
        HV_ADDRESS,
        1,
    );
    assert_eq!(ret(&f), -14);
    assert_eq!(hv.domains[g.idx].state, DomainState::Runnable);
}

/// A timer interrupt one scheduler slice after the last one (so every tick ends the
/// running vCPU's slice).
fn tick(hv: &mut Hv, f: &mut GuestFrame) -> Resume {
    f.vector = 0xf0;
    let now = hv.platform.tsc.get();
    hv.platform
        .tsc
        .set(now + crate::sched::policy::SLICE_NS * hv.platform.tsc_hz / 1_000_000_000);
    hv.timer_tick(f)
}

const CONSOLE_IO: u64 = 18;

/// Binds VIRQ_CONSOLE for domain `dom` (as the control domain does at start).
fn bind_console_virq(hv: &mut Hv, dom: u16) -> EvtchnPort {
    let caller = crate::evtchn::Caller {
        dom: DomId(dom),
        vcpu: VcpuId(0),
        privileged: true,
    };
    hv.evtchn
        .bind_virq(
            &caller,
            xen_pv_abi::event_channel::Virq::CONSOLE.0,
            VcpuId(0),
            &hv.mem,
        )
        .unwrap()
}

/// `console_io(CONSOLEIO_read, count, DATA_VA)` from the running domain; the result.
fn console_read(hv: &mut Hv, f: &mut GuestFrame, count: u64) -> i64 {
    call(hv, f, CONSOLE_IO, 1, count, DATA_VA);
    ret(f)
}

#[test]
fn typed_bytes_wait_for_the_control_domain_and_raise_virq_console() {
    let mut hv = new_hv();
    let d0 = add_domain(&mut hv, 0, "control", true);
    add_domain(&mut hv, 1, "grub", false);
    let port = bind_console_virq(&mut hv, 0);
    let mut f = started(&mut hv);
    assert_eq!(f.rbx, 0, "the control domain runs first");
    hv.platform.input.extend(b"echo PV-INPUT-OK\r");
    tick(&mut hv, &mut f);
    assert!(hv.platform.input.is_empty());
    assert_eq!(hv.evtchn.is_pending(DomId(0), port, &hv.mem), Ok(true));
    if f.rbx != 0 {
        tick(&mut hv, &mut f);
    }
    assert_eq!(f.rbx, 0);
    // A short read takes the oldest bytes, the next one the rest, then nothing.
    put(&hv, &d0, 0, &[0xaa; 32]);
    assert_eq!(console_read(&mut hv, &mut f, 5), 5);
    assert_eq!(get(&hv, &d0, 0, 6), b"echo \xaa");
    assert_eq!(console_read(&mut hv, &mut f, 100), 12);
    assert_eq!(get(&hv, &d0, 0, 12), b"PV-INPUT-OK\r");
    assert_eq!(console_read(&mut hv, &mut f, 100), 0);
    // More than the ring holds: the overflow is dropped (the UART is still emptied, at
    // INPUT_PER_TICK bytes per interrupt).
    let typed: std::vec::Vec<u8> = (0..200u32).map(|i| b'a' + (i % 26) as u8).collect();
    hv.platform.input.extend(&typed);
    for _ in 0..4 {
        tick(&mut hv, &mut f);
    }
    assert!(hv.platform.input.is_empty());
    if f.rbx != 0 {
        tick(&mut hv, &mut f);
    }
    assert_eq!(console_read(&mut hv, &mut f, 1000), 128);
    assert_eq!(get(&hv, &d0, 0, 128), typed[..128]);
}

#[test]
fn console_read_is_the_control_domains_with_xen_errors() {
    let mut hv = new_hv();
    let d0 = add_domain(&mut hv, 0, "control", true);
    add_domain(&mut hv, 1, "guest", false);
    let mut f = started(&mut hv);
    assert_eq!(f.rbx, 0);
    hv.platform.input.extend(b"xyz");
    tick(&mut hv, &mut f);
    if f.rbx != 1 {
        tick(&mut hv, &mut f);
    }
    // A domU may not read (even with a bad count or pointer: privilege first).
    assert_eq!(f.rbx, 1);
    assert_eq!(console_read(&mut hv, &mut f, 3), Errno::EPERM.to_ret());
    call(&mut hv, &mut f, CONSOLE_IO, 1, 1 << 31, 0);
    assert_eq!(ret(&f), Errno::EPERM.to_ret());
    tick(&mut hv, &mut f);
    assert_eq!(f.rbx, 0);
    // A count that is negative as a C int: -E2BIG; INT_MAX itself is fine.
    assert_eq!(
        console_read(&mut hv, &mut f, 0x8000_0000),
        Errno::E2BIG.to_ret()
    );
    assert_eq!(
        console_read(&mut hv, &mut f, 0xffff_ffff),
        Errno::E2BIG.to_ret()
    );
    // The count is a 32-bit argument: high bits are ignored.
    assert_eq!(console_read(&mut hv, &mut f, 1 << 32), 0);
    // A bad buffer: -EFAULT, the bytes stay.
    call(&mut hv, &mut f, CONSOLE_IO, 1, 3, 0x1000);
    assert_eq!(ret(&f), Errno::EFAULT.to_ret());
    assert_eq!(console_read(&mut hv, &mut f, 0x7fff_ffff), 3);
    assert_eq!(get(&hv, &d0, 0, 3), b"xyz");
    // Zero bytes asked: 0, nothing consumed.
    hv.platform.input.extend(b"q");
    tick(&mut hv, &mut f);
    if f.rbx != 0 {
        tick(&mut hv, &mut f);
    }
    assert_eq!(console_read(&mut hv, &mut f, 0), 0);
    assert_eq!(console_read(&mut hv, &mut f, 1), 1);
}

#[test]
fn without_a_control_domain_typed_bytes_are_dropped() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "grub", false);
    let mut f = started(&mut hv);
    hv.platform.input.extend(b"hello");
    tick(&mut hv, &mut f);
    assert!(hv.platform.input.is_empty(), "read, so the UART quiets");
    assert!(hv.console_input.is_empty());
    // Nothing reaches the domU's console ring: the hypervisor is not its backend.
    let prod = core::mem::offset_of!(XenconsInterface, in_prod) as u64;
    let mut b = [0u8; 4];
    hv.mem.read(g.ring.maddr() + prod, &mut b).unwrap();
    assert_eq!(b, [0; 4]);
}

#[test]
fn slice_ends_preempt_and_guest_rings_are_left_alone() {
    let mut hv = new_hv();
    let g1 = add_domain(&mut hv, 1, "spin", false);
    add_domain(&mut hv, 2, "b", false);
    let mut f = started(&mut hv);
    assert_eq!(f.rbx, 1);
    // Domain 1 spins: its registers are kept across the switch.
    f.rip = ENTRY_RIP + 0x40;
    f.rax = 0x1234;
    ring_produce(&hv, g1.ring, 0, b"line\n");
    let r = tick(&mut hv, &mut f);
    assert!(matches!(r, Resume::Guest { .. }));
    assert_eq!(f.rbx, 2, "preempted in favour of domain 2");
    assert_eq!(
        console(&hv),
        "",
        "the ring is the control domain's to drain"
    );
    tick(&mut hv, &mut f);
    assert_eq!((f.rbx, f.rip, f.rax), (1, ENTRY_RIP + 0x40, 0x1234));
}
