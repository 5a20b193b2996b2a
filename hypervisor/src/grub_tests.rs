//! Host tests of what GRUB needs beyond the foundation: grant-table setup, the xenstore
//! responder, console input and the timer tick. They reuse the hand-built domains of
//! `hv_tests.rs` (this is a child module of it).

use super::*;
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
fn grant_set_version_as_xen() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    // (asked, return, version in force after).
    let cases = [
        (1u32, 0i64, 1u32),
        (2, 0, 2),
        (0, -22, 2),
        (3, -22, 2),
        (u32::MAX, -22, 2),
        (1, 0, 1),
    ];
    for (version, expect, after) in cases {
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
        assert_eq!(get(&hv, &g, 0, 4), after.to_le_bytes());
    }
    // set_version reads one op whatever the count (Xen does not look at it); unknown
    // ops are ENOSYS; bad pointers EFAULT.
    put(&hv, &g, 0, &1u32.to_le_bytes());
    call(
        &mut hv,
        &mut f,
        GNTTAB,
        GNTTABOP_SET_VERSION as u64,
        DATA_VA,
        2,
    );
    assert_eq!(ret(&f), 0);
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
    let owned_before = hv.frames.count_of(DomId(1));
    assert_eq!(setup_table(&mut hv, &g, &mut f, DomId::SELF, 1), 0);
    let first = frame_list(&hv, &g, 1)[0];
    assert_eq!(hv.frames.owner(Mfn(first)), Some(DomId(1)));
    assert_eq!(hv.frames.count_of(DomId(1)), owned_before + 1);
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
    assert_eq!(hv.frames.count_of(DomId(1)), owned_before + 3);

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
    // Xen's default limit: 64 frames.
    assert_eq!(get(&hv, &g, 4, 8), [3, 0, 0, 0, 64, 0, 0, 0]);

    // The frames go back to the allocator with the domain.
    let free_before = hv.frames.free_count();
    put(&hv, &g, 0, &0u32.to_le_bytes());
    call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert_eq!(hv.frames.count_of(DomId(1)), 0);
    assert_eq!(hv.frames.free_count(), free_before + owned_before + 3);
}

#[test]
fn setup_table_refuses_hostile_requests_in_status() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    add_domain(&mut hv, 2, "other", false);
    let mut f = started(&mut hv);
    let owned = hv.frames.count_of(DomId(1));
    for n in [65, 1000] {
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
    // A frame_list pointing into the hypervisor, or one too long for the address space:
    // -EFAULT before anything else (Xen's guest_handle_okay).
    for (list, n) in [(HV_ADDRESS, 1), (DATA_VA + 0x100, u32::MAX)] {
        let op = GnttabSetupTable {
            dom: DomId::SELF,
            nr_frames: n,
            frame_list: list,
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
        assert_eq!(ret(&f), -14);
    }
    // A list the guest has not mapped: the status says so.
    let op = GnttabSetupTable {
        dom: DomId::SELF,
        nr_frames: 1,
        frame_list: 0x4000_0000,
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

fn store_ring(hv: &Hv, g: &TestDomain) -> Mfn {
    hv.domains[g.idx].store_ring.unwrap().0
}

#[test]
fn xenstore_kick_answers_requests_of_the_domain() {
    use xen_pv_abi::xenstore::{XS_DIRECTORY, XS_ERROR, XenstoreDomainInterface, XsdSockmsg};
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "grub", false);
    let mut f = started(&mut hv);
    let ring = store_ring(&hv, &g).maddr();
    let req = XsdSockmsg {
        type_: XS_DIRECTORY,
        req_id: 9,
        tx_id: 0,
        len: 11,
    };
    hv.mem.write(ring, req.as_bytes()).unwrap();
    hv.mem.write(ring + 16, b"device/vbd\0").unwrap();
    let prod = core::mem::offset_of!(XenstoreDomainInterface, req_prod) as u64;
    hv.mem.write_u64(ring + prod, 27).unwrap(); // req_prod = 27, rsp_cons = 0
    put(&hv, &g, 0, &STORE_PORT.0.to_le_bytes());
    call(&mut hv, &mut f, 32, EVTCHNOP_SEND as u64, DATA_VA, 0);
    assert_eq!(ret(&f), 0);
    let rsp = core::mem::offset_of!(XenstoreDomainInterface, rsp) as u64;
    let mut h = XsdSockmsg::default();
    hv.mem.read(ring + rsp, h.as_mut_bytes()).unwrap();
    assert_eq!((h.type_, h.req_id, h.len), (XS_ERROR, 9, 7));
    let mut body = [0u8; 7];
    hv.mem.read(ring + rsp + 16, &mut body).unwrap();
    assert_eq!(&body, b"ENOENT\0");
}

#[test]
fn hostile_xenstore_ring_crashes_only_that_domain() {
    use xen_pv_abi::xenstore::XenstoreDomainInterface;
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "evil", false);
    add_domain(&mut hv, 2, "good", false);
    let mut f = started(&mut hv);
    let prod = core::mem::offset_of!(XenstoreDomainInterface, req_prod) as u64;
    hv.mem
        .write(store_ring(&hv, &g).maddr() + prod, &5000u32.to_le_bytes())
        .unwrap();
    put(&hv, &g, 0, &STORE_PORT.0.to_le_bytes());
    let r = call(&mut hv, &mut f, 32, EVTCHNOP_SEND as u64, DATA_VA, 0);
    assert!(matches!(r, Resume::Guest { .. }));
    assert_eq!(f.rbx, 2, "the other domain runs on");
    assert!(
        console(&hv).contains(
            "(hv) d1 evil: crashed: xenstore ring protocol violation (req_prod=0x1388)\n"
        ),
        "{}",
        console(&hv)
    );
    assert_eq!(hv.domains[g.idx].state, DomainState::Crashed);
}

fn in_indices(hv: &Hv, ring: Mfn) -> (u32, u32) {
    let cons = core::mem::offset_of!(XenconsInterface, in_cons) as u64;
    let mut b = [0u8; 8];
    hv.mem.read(ring.maddr() + cons, &mut b).unwrap();
    (
        u32::from_le_bytes(b[..4].try_into().unwrap()),
        u32::from_le_bytes(b[4..].try_into().unwrap()),
    )
}

fn in_bytes(hv: &Hv, ring: Mfn, from: u32, len: usize) -> std::vec::Vec<u8> {
    (0..len)
        .map(|i| {
            let slot = xen_pv_abi::console::in_slot(from.wrapping_add(i as u32)) as u64;
            let mut b = [0u8];
            hv.mem.read(ring.maddr() + slot, &mut b).unwrap();
            b[0]
        })
        .collect()
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

#[test]
fn typed_bytes_reach_the_first_domu_console_ring() {
    let mut hv = new_hv();
    add_domain(&mut hv, 0, "dom0", true);
    let g = add_domain(&mut hv, 1, "grub", false);
    add_domain(&mut hv, 2, "other", false);
    let mut f = started(&mut hv);
    hv.platform.input.extend(b"echo PV-INPUT-OK\r");
    tick(&mut hv, &mut f);
    assert_eq!(in_indices(&hv, g.ring), (0, 17));
    assert_eq!(in_bytes(&hv, g.ring, 0, 17), b"echo PV-INPUT-OK\r");
    assert!(hv.platform.input.is_empty());
    // A full ring takes only what fits; the rest waits in the UART.
    let cons = core::mem::offset_of!(XenconsInterface, in_cons) as u64;
    hv.mem
        .write(
            g.ring.maddr() + cons,
            &(17u32 + 10).wrapping_sub(1024).to_le_bytes(),
        )
        .unwrap();
    hv.platform.input.extend([b'x'; 20]);
    tick(&mut hv, &mut f);
    assert_eq!(in_indices(&hv, g.ring).1, 27);
    assert_eq!(hv.platform.input.len(), 10);
    // Index wrap: in_prod near 2^32 crosses both the counter and the slot end.
    let start = u32::MAX - 1;
    let prod = core::mem::offset_of!(XenconsInterface, in_prod) as u64;
    hv.mem
        .write(g.ring.maddr() + cons, &start.to_le_bytes())
        .unwrap();
    hv.mem
        .write(g.ring.maddr() + prod, &start.to_le_bytes())
        .unwrap();
    hv.platform.input.clear();
    hv.platform.input.extend(b"wrap");
    tick(&mut hv, &mut f);
    assert_eq!(in_indices(&hv, g.ring), (start, 2));
    assert_eq!(in_bytes(&hv, g.ring, start, 4), b"wrap");
}

#[test]
fn hostile_input_indices_crash_the_domain() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "evil", false);
    add_domain(&mut hv, 2, "good", false);
    let mut f = started(&mut hv);
    let cons = core::mem::offset_of!(XenconsInterface, in_cons) as u64;
    hv.mem
        .write(g.ring.maddr() + cons, &5000u32.to_le_bytes())
        .unwrap();
    hv.platform.input.extend(b"x");
    let r = tick(&mut hv, &mut f);
    assert!(matches!(r, Resume::Guest { .. }));
    assert_eq!(f.rbx, 2, "the other domain runs on");
    assert!(console(&hv).contains(
        "(hv) d1 evil: crashed: console ring protocol violation (in_cons=0x1388 in_prod=0x0)\n"
    ));
}

#[test]
fn slice_ends_preempt_and_serve_backends() {
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
    assert_eq!(console(&hv), "[d1 spin] line\n", "ring drained by the tick");
    tick(&mut hv, &mut f);
    assert_eq!((f.rbx, f.rip, f.rax), (1, ENTRY_RIP + 0x40, 0x1234));
}

#[test]
fn a_waiting_prompt_is_shown_and_continued_without_prefix() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "grub", false);
    let mut f = started(&mut hv);
    ring_produce(&hv, g.ring, 0, b"Welcome\ngrub> ");
    tick(&mut hv, &mut f);
    // New output this tick: the partial line waits.
    assert_eq!(console(&hv), "[d1 grub] Welcome\n");
    tick(&mut hv, &mut f);
    assert_eq!(console(&hv), "[d1 grub] Welcome\n[d1 grub] grub> ");
    // The echo of typed input and the rest of the line follow on the same line.
    ring_produce(&hv, g.ring, 14, b"echo hi\x08\n");
    tick(&mut hv, &mut f);
    assert_eq!(
        console(&hv),
        "[d1 grub] Welcome\n[d1 grub] grub> echo hi\x08\n"
    );
    // A prompt left open at shutdown is ended with a newline before the report.
    ring_produce(&hv, g.ring, 23, b"grub> ");
    tick(&mut hv, &mut f);
    tick(&mut hv, &mut f);
    put(&hv, &g, 0, &0u32.to_le_bytes());
    call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert!(
        console(&hv).ends_with("[d1 grub] grub> \n(hv) d1 grub: shut down: poweroff\n(hv) d1 grub: poweroff\n(hv) all domains ended: 1 powered off, 0 failed\n"),
        "{}",
        console(&hv)
    );
}

#[test]
fn console_raw_passes_the_input_domains_ring_through() {
    let mut hv = new_hv();
    hv.cmdline.clear();
    hv.cmdline.extend_from_slice(b"console=com1,raw").unwrap();
    let grub = add_domain(&mut hv, 1, "grub", false);
    let other = add_domain(&mut hv, 2, "other", false);
    let mut f = started(&mut hv);
    assert!(hv.domains[grub.idx].console.is_raw());
    assert!(!hv.domains[other.idx].console.is_raw());
    // GRUB's screen reaches the serial port as it is, prompt included, on the next tick.
    let screen = b"\x1b[2J\x1b[1;1HGNU GRUB\r\ngrub> ";
    ring_produce(&hv, grub.ring, 0, screen);
    tick(&mut hv, &mut f);
    assert_eq!(console(&hv).as_bytes(), screen);
    // The other domain keeps its prefix, on a line of its own.
    ring_produce(&hv, other.ring, 0, b"hello\n");
    tick(&mut hv, &mut f);
    assert!(console(&hv).ends_with("grub> \n[d2 other] hello\n"));
    // Typed echo, then the hypervisor's own lines start on a fresh line too.
    ring_produce(&hv, grub.ring, screen.len() as u32, b"ha");
    tick(&mut hv, &mut f);
    assert!(console(&hv).ends_with("[d2 other] hello\nha"));
    put(&hv, &grub, 0, &0u32.to_le_bytes());
    if f.rbx != 1 {
        tick(&mut hv, &mut f);
    }
    assert_eq!(f.rbx, 1, "grub runs");
    call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert!(
        console(&hv).ends_with("hello\nha\n(hv) d1 grub: shut down: poweroff\n"),
        "{}",
        console(&hv)
    );
}
