//! `hostile-blkfront`: a block frontend that breaks the blkif rules against the control
//! domain's blkback. It does the xenbus handshake itself (the kit's [`blkfront::probe`]
//! / [`blkfront::connect`], its own ring page, grants and event channel per vbd) and
//! then writes raw requests and ring indices.
//!
//! Default mode, eight vbds (`vbd.<me>=<disk>,xvda`, `xvdb,ro`, `xvdc` .. `xvdh`):
//!
//! * on xvda, requests the backend must refuse one by one, each printed as
//!   `case <name>: got <status> want <status>` (`BLKIF_RSP_ERROR` = -1, or
//!   `BLKIF_RSP_EOPNOTSUPP` = -2 where Xen's blkback answers that): past the end, a
//!   sector range overflowing u64, 0 and 12 segments, reversed and page-crossing
//!   segments, grants never made / beyond the table / for another domain / revoked /
//!   read-only for a read, unknown operations, bad indirect requests, a discard that is
//!   not advertised; on xvdb (read-only) a write;
//! * ring violations, one per vbd (each ends that vbd's service): xvdb a producer index
//!   far ahead, xvdc a flood of two rings' worth of requests published at once, xvdd a
//!   producer index moved backwards. The guest then reads each backend's state (Closed
//!   = 6) and ends the ring grant, which succeeds only once the backend unmapped it:
//!   `violation <name> on <vdev>: backend state <n>, ring grant ended: <bool>`;
//! * xvda still serves afterwards (`case read_after_violations`) and is closed normally;
//! * broken handshakes, one vbd each (xvde..xvdh), each tried a few times: a `ring-ref`
//!   never granted, a ring granted read-only, an `event-channel` never allocated, the
//!   32-bit `protocol`; each printed as `handshake <how> on <vdev>: backend state <n>,
//!   ring grant ended: <bool or "no grant">`;
//! * the guest prints `hostile-blkfront: N cases, M unexpected` and powers off.
//!
//! The default mode publishes `data/phase` (readable by every domain): `started` before
//! its first case, `done` after the last handshake. `mode=good peer=<id>`, one vbd, is
//! the well-behaved domain that runs alongside: it waits for the peer's `started`, then
//! writes a pattern, reads it back and compares, round after round, until the peer's
//! `done`: `good: <n> rounds while the hostile domain ran, <m> failed` (at most
//! [`MAX_GOOD_ROUNDS`]).
//!
//! `mode=crash`, one vbd: posts a full ring of 11-segment writes, notifies the backend
//! and crashes itself (`SCHEDOP_shutdown` crash) before reading any response, so the
//! control domain must clean up a ring whose frontend vanished mid-I/O.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU32, Ordering};

    use pv_guest::split::Path;
    use pv_guest::split_demo::{GRANT_ENTRIES, setup_grant_table};
    use pv_guest::xenbus::{self, Client, StoreWait};
    use pv_guest::{StartInfo, cmdline, events, println};
    use test_guests::grant::yield_cpu;
    use xen_pv_abi::blkif::{
        BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE,
        BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_RESERVED_1, BLKIF_OP_WRITE,
        BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, BlkifProtocol, BlkifRequest,
        BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment,
    };
    use xen_pv_abi::kit::blkfront::{self, Backend, DiskInfo};
    use xen_pv_abi::kit::ring::{
        FrontRing, REQ_PROD_OFFSET, RING_HEADER_SIZE, RawRingPage, RingMemory,
    };
    use xen_pv_abi::kit::{Grant, GrantTable, TxId};
    use xen_pv_abi::sched::ShutdownReason;
    use xen_pv_abi::xenstore::XenbusState;
    use xen_pv_abi::{DomId, EvtchnPort, GrantRef, Mfn, evtchn};
    use zerocopy::IntoBytes;

    test_guests::standard_notes!("hostile-blkfront");
    pv_guest::entry!(main);

    const PAGE: usize = 4096;
    /// xvda, xvdb, xvdc, xvdd as xl encodes them.
    const DEVIDS: [u32; 4] = [51712, 51728, 51744, 51760];
    const NAMES: [&str; 4] = ["xvda", "xvdb", "xvdc", "xvdd"];
    /// Data pages: one full request, plus pages granted the wrong way.
    const DATA_PAGES: usize = BLKIF_MAX_SEGMENTS_PER_REQUEST + 3;
    /// The spare pages: read-only to the backend, granted to another domain, revoked.
    const RO_PAGE: usize = BLKIF_MAX_SEGMENTS_PER_REQUEST;
    const OTHER_PAGE: usize = RO_PAGE + 1;
    const REVOKED_PAGE: usize = RO_PAGE + 2;
    /// A domain that is not the backend (and does not exist): its grants are not ours
    /// to give to the backend.
    const OTHER_DOMAIN: DomId = DomId(7);
    /// A grant entry of our table that nothing uses (the kit hands out low ones first).
    const NEVER_GRANTED: u32 = 400;
    /// Past the end of our one-frame table.
    const BEYOND_TABLE: u32 = 100_000;
    /// Yields one response may take.
    const MAX_POLLS: u32 = 200_000;
    /// Store round trips a state wait may take.
    const MAX_STATE_WAITS: u32 = 100_000;
    /// Broken handshakes, one vbd each (xvde..xvdh): devid, vdev, case.
    const HANDSHAKES: [(u32, &str, BadConnect); 4] = [
        (51776, "xvde", BadConnect::RingNeverGranted),
        (51792, "xvdf", BadConnect::RingGrantedReadOnly),
        (51808, "xvdg", BadConnect::BadEventChannel),
        (51824, "xvdh", BadConnect::ForeignProtocol),
    ];
    /// Attempts of each broken handshake (each maps and must unmap the ring).
    const HANDSHAKE_TRIES: u32 = 3;
    /// An event channel port we never allocated.
    const NO_PORT: u32 = 4000;
    /// Rounds of `mode=good` at most (it stops earlier when the peer is done).
    const MAX_GOOD_ROUNDS: u32 = 5000;
    /// Slots of a one-page blkif ring.
    const RING_SLOTS: u32 = 32;
    /// Bytes of a ring slot.
    const SLOT: usize = 112;

    #[repr(C, align(4096))]
    struct Page([u8; PAGE]);

    /// One ring page per vbd (only accessed through [`RawRingPage`]).
    static mut RINGS: [Page; 8] = [const { Page([0; PAGE]) }; 8];
    /// The data pages (the backend copies in and out; we never read them as values).
    static mut DATA: [Page; DATA_PAGES] = [const { Page([0; PAGE]) }; DATA_PAGES];

    /// Cases run and cases that did not get what they want.
    static RUN: AtomicU32 = AtomicU32::new(0);
    static UNEXPECTED: AtomicU32 = AtomicU32::new(0);

    fn data_va(i: usize) -> u64 {
        // SAFETY: only the address of an element of the static is taken.
        unsafe { (&raw mut DATA).cast::<Page>().add(i) as u64 }
    }

    /// How a broken handshake is broken.
    #[derive(Clone, Copy, Debug)]
    enum BadConnect {
        /// `ring-ref` names an entry we never granted.
        RingNeverGranted,
        /// The ring is granted read-only: the backend cannot map it writable.
        RingGrantedReadOnly,
        /// `event-channel` names a port we never allocated.
        BadEventChannel,
        /// `protocol` is the 32-bit layout, which the backend does not serve.
        ForeignProtocol,
    }

    /// One connected vbd: its device path, backend, ring and event channel.
    struct Vbd<'t> {
        name: &'static str,
        dev: Path,
        backend: Backend,
        ring: FrontRing<BlkifProtocol, RawRingPage>,
        ring_grant: Option<Grant<'t, GRANT_ENTRIES>>,
        port: EvtchnPort,
        info: DiskInfo,
        next_id: u64,
    }

    fn report(name: &str, got: i64, want: i64) {
        RUN.fetch_add(1, Ordering::Relaxed);
        if got != want {
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
        }
        println!("case {name}: got {got} want {want}");
    }

    /// Connects `device/vbd/<devid>` (ring page `slot`).
    fn connect<'t>(
        si: &StartInfo,
        xs: &mut Client,
        wait: &mut StoreWait,
        table: &'t GrantTable<GRANT_ENTRIES>,
        slot: usize,
        devid: u32,
        name: &'static str,
    ) -> Result<Vbd<'t>, (&'static str, xen_pv_abi::Errno)> {
        let dev = Path::of(format_args!("device/vbd/{devid}"));
        let backend = blkfront::probe(xs, dev.as_str()).map_err(|e| ("probe", e))?;
        // SAFETY: only the address of an element of the static is taken.
        let ring_va = unsafe { (&raw mut RINGS).cast::<Page>().add(slot).cast::<u8>() };
        // SAFETY: the page is this vbd's ring only, accessed through this view (and the
        // backend's mapping of its grant), never as a Rust value.
        let mem = unsafe { RawRingPage::new(ring_va, PAGE) };
        let ring = FrontRing::<BlkifProtocol, _>::init(mem).map_err(|e| ("ring", e))?;
        let mfn = Mfn(pv_guest::paging::mfn_of(si, ring_va as u64));
        let ring_grant = table
            .grant_access(backend.domid, mfn, false)
            .map_err(|e| ("grant ring", e))?;
        events::disable();
        let port = evtchn::alloc_unbound(backend.domid);
        events::enable();
        let port = port.map_err(|e| ("alloc_unbound", e))?;
        let info = blkfront::connect(
            xs,
            dev.as_str(),
            &backend,
            ring_grant.gref(),
            port,
            wait,
            MAX_STATE_WAITS,
        )
        .map_err(|e| ("connect", e))?;
        println!(
            "hostile-blkfront: {name} connected: {} sectors, info {:#x}",
            info.sectors, info.info
        );
        Ok(Vbd {
            name,
            dev,
            backend,
            ring,
            ring_grant: Some(ring_grant),
            port,
            info,
            next_id: 1,
        })
    }

    /// Posts `req` (with a fresh id), notifies and waits for its response: its status,
    /// or `None` when none came (or the backend broke the ring).
    fn exchange(v: &mut Vbd<'_>, req: &mut BlkifRequest) -> Option<i16> {
        let id = v.next_id;
        v.next_id += 1;
        // `id` sits at the same offset in every request layout.
        req.id = id;
        v.ring.push_request(req).ok()?;
        v.ring.push_requests();
        let _ = evtchn::send(v.port);
        for _ in 0..MAX_POLLS {
            match v.ring.next_response() {
                Ok(Some(r)) if r.id == id => return Some(r.status),
                Ok(Some(r)) => {
                    println!("hostile-blkfront: response for id {} instead of {id}", r.id);
                    return None;
                }
                Ok(None) => yield_cpu(),
                Err(_) => return None,
            }
        }
        None
    }

    /// Runs one request case.
    fn case(v: &mut Vbd<'_>, name: &str, mut req: BlkifRequest, want: i16) {
        let got = exchange(v, &mut req).map_or(i64::MIN, i64::from);
        report(name, got, i64::from(want));
    }

    fn seg(gref: GrantRef, first: u8, last: u8) -> BlkifRequestSegment {
        BlkifRequestSegment {
            gref: gref.0,
            first_sect: first,
            last_sect: last,
            ..Default::default()
        }
    }

    /// A request of `op` at `sector` over `segs`.
    fn rw(op: u8, sector: u64, segs: &[BlkifRequestSegment]) -> BlkifRequest {
        let mut r = BlkifRequest {
            operation: op,
            nr_segments: segs.len() as u8,
            sector_number: sector,
            ..Default::default()
        };
        r.seg[..segs.len()].copy_from_slice(segs);
        r
    }

    fn main(si: &'static StartInfo) -> ! {
        if let Err(e) = events::init(si) {
            println!("hostile-blkfront: cannot set up event delivery: {e}");
            pv_guest::poweroff()
        }
        let mut xs = match xenbus::connect(si) {
            Ok(xs) => xs,
            Err(e) => {
                println!("hostile-blkfront: no xenstore connection: {e}");
                pv_guest::poweroff()
            }
        };
        let Some((_, store_port)) = si.xenstore() else {
            println!("hostile-blkfront: no xenstore ring");
            pv_guest::poweroff()
        };
        let mut wait = StoreWait(store_port);
        let table = match setup_grant_table() {
            Ok(t) => t,
            Err(e) => {
                println!("hostile-blkfront: no grant table: {e:?}");
                pv_guest::poweroff()
            }
        };
        let mode = cmdline::value(si.cmd_line_bytes(), "mode");
        if mode == Some(b"crash".as_slice()) {
            crash_mid_io(si, &mut xs, &mut wait, &table)
        }
        if mode == Some(b"good".as_slice()) {
            let peer = cmdline::value(si.cmd_line_bytes(), "peer").and_then(cmdline::parse_u64);
            match peer {
                Some(p) => good(si, &mut xs, &mut wait, &table, p),
                None => println!("hostile-blkfront: mode=good without peer="),
            }
            pv_guest::poweroff()
        }
        // Owned by us, readable by every other domain.
        let own = xs
            .read(TxId::NONE, "domid")
            .ok()
            .and_then(cmdline::parse_u64)
            .unwrap_or(0);
        let perm = Path::of(format_args!("r{own}"));
        let published = xs
            .write(TxId::NONE, "data/phase", b"started")
            .and_then(|()| xenbus::set_perms(&mut xs, TxId::NONE, "data/phase", &[perm.as_str()]));
        if let Err(e) = published {
            println!("hostile-blkfront: cannot publish data/phase: {e}");
        }
        hostile(si, &mut xs, &mut wait, &table);
        let _ = xs.write(TxId::NONE, "data/phase", b"done");
        println!(
            "hostile-blkfront: {} cases, {} unexpected",
            RUN.load(Ordering::Relaxed),
            UNEXPECTED.load(Ordering::Relaxed)
        );
        pv_guest::poweroff()
    }

    /// Grants data page `i` to `to`.
    fn grant_page(
        si: &StartInfo,
        table: &GrantTable<GRANT_ENTRIES>,
        i: usize,
        to: DomId,
        readonly: bool,
    ) -> Option<GrantRef> {
        let mfn = Mfn(pv_guest::paging::mfn_of(si, data_va(i)));
        match table.grant_access(to, mfn, readonly) {
            // Kept for the guest's life: the backend may use it any time.
            Ok(g) => Some(g.leak()),
            Err(e) => {
                println!("hostile-blkfront: cannot grant page {i}: {e}");
                None
            }
        }
    }

    fn hostile(
        si: &StartInfo,
        xs: &mut Client,
        wait: &mut StoreWait,
        table: &GrantTable<GRANT_ENTRIES>,
    ) {
        let mut vbds: [Option<Vbd<'_>>; 4] = [None, None, None, None];
        for (i, slot) in vbds.iter_mut().enumerate() {
            match connect(si, xs, wait, table, i, DEVIDS[i], NAMES[i]) {
                Ok(v) => *slot = Some(v),
                Err((step, e)) => println!("hostile-blkfront: {}: {step}: {e}", NAMES[i]),
            }
        }
        let [Some(a), Some(b), Some(c), Some(d)] = &mut vbds else {
            println!("hostile-blkfront: not every vbd connected");
            return;
        };
        let be = a.backend.domid;
        let mut grefs = [GrantRef(0); BLKIF_MAX_SEGMENTS_PER_REQUEST];
        for (i, g) in grefs.iter_mut().enumerate() {
            let Some(r) = grant_page(si, table, i, be, false) else {
                return;
            };
            *g = r;
        }
        let (Some(ro), Some(other)) = (
            grant_page(si, table, RO_PAGE, be, true),
            grant_page(si, table, OTHER_PAGE, OTHER_DOMAIN, false),
        ) else {
            return;
        };
        let mfn = Mfn(pv_guest::paging::mfn_of(si, data_va(REVOKED_PAGE)));
        let revoked = match table.grant_access(be, mfn, false).map(|g| g.end()) {
            Ok(Ok(r)) => r,
            _ => {
                println!("hostile-blkfront: cannot grant and revoke a page");
                return;
            }
        };
        let g = grefs[0];
        let sectors = a.info.sectors;
        let full = seg(g, 0, 7);
        let err = BLKIF_RSP_ERROR;

        case(
            a,
            "good_read",
            rw(BLKIF_OP_READ, 0, &[full]),
            BLKIF_RSP_OKAY,
        );
        case(
            a,
            "read_past_end",
            rw(BLKIF_OP_READ, sectors - 4, &[full]),
            err,
        );
        case(
            a,
            "read_at_end",
            rw(BLKIF_OP_READ, sectors, &[seg(g, 0, 0)]),
            err,
        );
        case(
            a,
            "write_past_end",
            rw(BLKIF_OP_WRITE, sectors - 1, &[seg(g, 0, 1)]),
            err,
        );
        case(
            a,
            "sector_overflows_u64",
            rw(BLKIF_OP_READ, u64::MAX - 3, &[full]),
            err,
        );
        case(
            a,
            "sector_u64_max",
            rw(BLKIF_OP_READ, u64::MAX, &[seg(g, 0, 0)]),
            err,
        );
        case(a, "zero_segments", rw(BLKIF_OP_READ, 0, &[]), err);
        let mut twelve = rw(BLKIF_OP_READ, 0, &[full]);
        twelve.nr_segments = 12;
        case(a, "twelve_segments", twelve, err);
        let mut many = rw(BLKIF_OP_WRITE, 0, &[full]);
        many.nr_segments = 255;
        case(a, "255_segments", many, err);
        case(
            a,
            "first_after_last",
            rw(BLKIF_OP_READ, 0, &[seg(g, 5, 3)]),
            err,
        );
        case(
            a,
            "last_sect_crosses_page",
            rw(BLKIF_OP_READ, 0, &[seg(g, 0, 8)]),
            err,
        );
        case(
            a,
            "first_sect_past_page",
            rw(BLKIF_OP_WRITE, 0, &[seg(g, 9, 9)]),
            err,
        );
        case(
            a,
            "never_granted_ref",
            rw(BLKIF_OP_READ, 0, &[seg(GrantRef(NEVER_GRANTED), 0, 7)]),
            err,
        );
        case(
            a,
            "ref_beyond_table",
            rw(BLKIF_OP_WRITE, 0, &[seg(GrantRef(BEYOND_TABLE), 0, 7)]),
            err,
        );
        case(
            a,
            "grant_for_another_domain",
            rw(BLKIF_OP_WRITE, 0, &[seg(other, 0, 7)]),
            err,
        );
        case(
            a,
            "revoked_grant",
            rw(BLKIF_OP_READ, 0, &[seg(revoked, 0, 7)]),
            err,
        );
        case(
            a,
            "read_into_read_only_grant",
            rw(BLKIF_OP_READ, 0, &[seg(ro, 0, 7)]),
            err,
        );
        // The bad grant is the last segment: the earlier ones are fine.
        let mut mixed = [full; 3];
        mixed[2] = seg(GrantRef(NEVER_GRANTED), 0, 7);
        case(
            a,
            "bad_grant_in_last_segment",
            rw(BLKIF_OP_WRITE, 16, &mixed),
            err,
        );
        case(
            a,
            "unknown_operation_99",
            rw(99, 0, &[full]),
            BLKIF_RSP_EOPNOTSUPP,
        );
        case(
            a,
            "reserved_operation_4",
            rw(BLKIF_OP_RESERVED_1, 0, &[full]),
            BLKIF_RSP_EOPNOTSUPP,
        );
        case(
            a,
            "flush_with_bad_segment",
            rw(BLKIF_OP_FLUSH_DISKCACHE, 0, &[seg(g, 7, 6)]),
            err,
        );
        let discard = BlkifRequestDiscard {
            operation: BLKIF_OP_DISCARD,
            sector_number: 0,
            nr_sectors: 8,
            ..Default::default()
        };
        // The copy-on-write disk of a writable vbd does not advertise feature-discard.
        case(
            a,
            "discard_not_advertised",
            BlkifRequest::from_discard(&discard),
            BLKIF_RSP_EOPNOTSUPP,
        );
        let indirect = |op: u8, n: u16, page: GrantRef| {
            let mut i = BlkifRequestIndirect {
                operation: BLKIF_OP_INDIRECT,
                indirect_op: op,
                nr_segments: n,
                ..Default::default()
            };
            i.indirect_grefs[0] = page.0;
            BlkifRequest::from_indirect(&i)
        };
        case(
            a,
            "indirect_zero_segments",
            indirect(BLKIF_OP_READ, 0, g),
            err,
        );
        // 33 > the advertised feature-max-indirect-segments (32).
        case(
            a,
            "indirect_over_max_segments",
            indirect(BLKIF_OP_READ, 33, g),
            err,
        );
        case(
            a,
            "indirect_flush",
            indirect(BLKIF_OP_FLUSH_DISKCACHE, 1, g),
            err,
        );
        case(
            a,
            "indirect_page_never_granted",
            indirect(BLKIF_OP_READ, 1, GrantRef(NEVER_GRANTED)),
            err,
        );
        case(
            b,
            "write_to_read_only_vbd",
            rw(BLKIF_OP_WRITE, 0, &[full]),
            err,
        );
        case(
            b,
            "read_from_read_only_vbd",
            rw(BLKIF_OP_READ, 0, &[full]),
            BLKIF_RSP_OKAY,
        );

        // Ring violations, one vbd each.
        let ahead = b.ring.req_prod_pvt().wrapping_add(100_000);
        violate(xs, b, "producer_far_ahead", |v| {
            v.ring.memory().store_u32(REQ_PROD_OFFSET, ahead);
        });
        violate(xs, c, "flood_of_two_rings", |v| {
            // Two rings' worth of valid reads in the 32 slots, published at once.
            let mut req = rw(BLKIF_OP_READ, 0, &[full]);
            let start = v.ring.req_prod_pvt();
            for k in 0..2 * RING_SLOTS {
                req.id = u64::from(k) + 1000;
                let idx = start.wrapping_add(k) & (RING_SLOTS - 1);
                v.ring
                    .memory()
                    .write(RING_HEADER_SIZE + idx as usize * SLOT, req.as_bytes());
            }
            v.ring
                .memory()
                .store_u32(REQ_PROD_OFFSET, start.wrapping_add(2 * RING_SLOTS));
        });
        // Four good reads answered first, then the producer goes back by two.
        for k in 0..4 {
            let mut req = rw(BLKIF_OP_READ, k * 8, &[full]);
            if exchange(d, &mut req) != Some(BLKIF_RSP_OKAY) {
                println!("hostile-blkfront: xvdd read {k} failed");
            }
        }
        let back = d.ring.req_prod_pvt().wrapping_sub(2);
        violate(xs, d, "producer_backwards", |v| {
            v.ring.memory().store_u32(REQ_PROD_OFFSET, back);
        });

        // The other vbd still serves.
        case(
            a,
            "read_after_violations",
            rw(BLKIF_OP_READ, 8, &[full]),
            BLKIF_RSP_OKAY,
        );
        let closed = blkfront::close(xs, a.dev.as_str(), &a.backend, wait, MAX_STATE_WAITS);
        let ended = a.ring_grant.take().map(|g| g.end().is_ok());
        let _ = evtchn::close(a.port);
        println!(
            "hostile-blkfront: {} closed ({closed:?}), ring grant ended: {ended:?}",
            a.name
        );
        for (i, (devid, vdev, how)) in HANDSHAKES.iter().enumerate() {
            bad_handshake(si, xs, table, 4 + i, *devid, vdev, *how);
        }
    }

    /// Reads the backend's state, waiting until it is `want` (bounded): the last value.
    fn backend_state(xs: &mut Client, backend: &Backend, want: XenbusState) -> Option<u64> {
        let state = Path::of(format_args!("{}/state", backend.path()));
        let mut seen = None;
        for _ in 0..MAX_POLLS {
            seen = xs
                .read(TxId::NONE, state.as_str())
                .ok()
                .and_then(cmdline::parse_u64);
            if seen == Some(want as u64) {
                break;
            }
            yield_cpu();
        }
        seen
    }

    /// A handshake broken as `how`, tried [`HANDSHAKE_TRIES`] times (Closed →
    /// Initialising → Initialised, which the backend answers with InitWait, then
    /// Closed when it cannot connect): prints the backend's last state and whether the
    /// ring grant could be ended afterwards (the backend unmapped the ring each time).
    fn bad_handshake(
        si: &StartInfo,
        xs: &mut Client,
        table: &GrantTable<GRANT_ENTRIES>,
        slot: usize,
        devid: u32,
        vdev: &str,
        how: BadConnect,
    ) {
        let dev = Path::of(format_args!("device/vbd/{devid}"));
        let backend = match blkfront::probe(xs, dev.as_str()) {
            Ok(b) => b,
            Err(e) => {
                println!("hostile-blkfront: {vdev}: probe: {e}");
                return;
            }
        };
        // SAFETY: only the address of an element of the static is taken.
        let ring_va = unsafe { (&raw mut RINGS).cast::<Page>().add(slot).cast::<u8>() };
        // SAFETY: the page is this vbd's ring only, accessed through this view.
        let mem = unsafe { RawRingPage::new(ring_va, PAGE) };
        if FrontRing::<BlkifProtocol, _>::init(mem).is_err() {
            return;
        }
        let mfn = Mfn(pv_guest::paging::mfn_of(si, ring_va as u64));
        let be = backend.domid;
        let grant = match how {
            BadConnect::RingNeverGranted => None,
            BadConnect::RingGrantedReadOnly => table.grant_access(be, mfn, true).ok(),
            _ => table.grant_access(be, mfn, false).ok(),
        };
        let ring_ref = grant.as_ref().map_or(NEVER_GRANTED, |g| g.gref().0);
        let port = match how {
            BadConnect::BadEventChannel => None,
            _ => {
                events::disable();
                let p = evtchn::alloc_unbound(be).ok();
                events::enable();
                p
            }
        };
        let port_no = port.map_or(NO_PORT, |p| p.0);
        let protocol: &[u8] = match how {
            BadConnect::ForeignProtocol => b"x86_32-abi",
            _ => b"x86_64-abi",
        };
        let key = |k: &str| Path::of(format_args!("{}/{k}", dev.as_str()));
        let mut last = None;
        for _ in 0..HANDSHAKE_TRIES {
            let _ = xs.write(TxId::NONE, key("state").as_str(), b"1");
            if backend_state(xs, &backend, XenbusState::InitWait) != Some(2) {
                break;
            }
            let r = Path::of(format_args!("{ring_ref}"));
            let p = Path::of(format_args!("{port_no}"));
            let _ = xs.write(TxId::NONE, key("ring-ref").as_str(), r.as_str().as_bytes());
            let _ = xs.write(
                TxId::NONE,
                key("event-channel").as_str(),
                p.as_str().as_bytes(),
            );
            let _ = xs.write(TxId::NONE, key("protocol").as_str(), protocol);
            let _ = xs.write(TxId::NONE, key("state").as_str(), b"3");
            last = backend_state(xs, &backend, XenbusState::Closed);
            let _ = xs.write(TxId::NONE, key("state").as_str(), b"6");
        }
        let ended = match grant.map(|g| g.end()) {
            None => "no grant",
            Some(Ok(_)) => "true",
            Some(Err(g)) => {
                let _ = g.leak();
                "false"
            }
        };
        if let Some(p) = port {
            let _ = evtchn::close(p);
        }
        println!(
            "handshake {how:?} on {vdev}: backend state {}, ring grant ended: {}",
            last.map_or(-1, |s| s as i64),
            ended
        );
    }

    /// Breaks `v`'s ring with `how`, notifies, and waits for the backend to close:
    /// prints the backend's state and whether the ring grant could be ended (only once
    /// the backend has unmapped the ring).
    fn violate(xs: &mut Client, v: &mut Vbd<'_>, name: &str, how: impl FnOnce(&Vbd<'_>)) {
        how(v);
        let _ = evtchn::send(v.port);
        let state = Path::of(format_args!("{}/state", v.backend.path()));
        let mut seen = None;
        for _ in 0..MAX_POLLS {
            seen = xs
                .read(TxId::NONE, state.as_str())
                .ok()
                .and_then(cmdline::parse_u64);
            if seen == Some(XenbusState::Closed as u64) {
                break;
            }
            yield_cpu();
        }
        // The frontend follows: Closed too.
        let fe_state = Path::of(format_args!("{}/state", v.dev.as_str()));
        let _ = xs.write(TxId::NONE, fe_state.as_str(), b"6");
        let mut ended = false;
        if let Some(g) = v.ring_grant.take() {
            match g.end() {
                Ok(_) => ended = true,
                // Still mapped: keep the entry (a leak we report, not a reuse).
                Err(g) => {
                    let _ = g.leak();
                }
            }
        }
        let _ = evtchn::close(v.port);
        println!(
            "violation {name} on {}: backend state {}, ring grant ended: {ended}",
            v.name,
            seen.map_or(-1, |s| s as i64)
        );
    }

    /// Fills data page `i` with the pattern of `round`.
    fn fill(i: usize, round: u32) {
        let p = data_va(i) as *mut u8;
        for k in 0..PAGE {
            // SAFETY: inside data page `i`; volatile as the backend may read it.
            unsafe {
                p.add(k)
                    .write_volatile((k as u32 ^ round.wrapping_mul(0x9e37)) as u8)
            };
        }
    }

    /// Whether data pages `a` and `b` hold the same bytes.
    fn same(a: usize, b: usize) -> bool {
        let (pa, pb) = (data_va(a) as *const u8, data_va(b) as *const u8);
        // SAFETY: inside the two data pages; volatile as the backend writes them.
        (0..PAGE).all(|k| unsafe { pa.add(k).read_volatile() == pb.add(k).read_volatile() })
    }

    /// The peer's `data/phase`.
    fn peer_phase(xs: &mut Client, peer: u64) -> Option<[u8; 7]> {
        let path = Path::of(format_args!("/local/domain/{peer}/data/phase"));
        let v = xs.read(TxId::NONE, path.as_str()).ok()?;
        let mut out = [0u8; 7];
        let n = v.len().min(7);
        out[..n].copy_from_slice(&v[..n]);
        Some(out)
    }

    /// `mode=good`: write, read back and compare while the peer is hostile.
    fn good(
        si: &StartInfo,
        xs: &mut Client,
        wait: &mut StoreWait,
        table: &GrantTable<GRANT_ENTRIES>,
        peer: u64,
    ) {
        let mut v = match connect(si, xs, wait, table, 0, DEVIDS[0], NAMES[0]) {
            Ok(v) => v,
            Err((step, e)) => {
                println!("good: {step}: {e}");
                return;
            }
        };
        let be = v.backend.domid;
        let (Some(src), Some(dst)) = (
            grant_page(si, table, 0, be, true),
            grant_page(si, table, 1, be, false),
        ) else {
            return;
        };
        let mut started = false;
        for _ in 0..MAX_POLLS {
            if peer_phase(xs, peer).is_some() {
                started = true;
                break;
            }
            yield_cpu();
        }
        if !started {
            println!("good: the peer never started");
        }
        let (mut rounds, mut failed) = (0u32, 0u32);
        while rounds < MAX_GOOD_ROUNDS {
            if peer_phase(xs, peer) == Some(*b"done\0\0\0") {
                break;
            }
            let sector = 64 + u64::from(rounds % 64) * 8;
            fill(0, rounds);
            fill(1, !rounds);
            let mut w = rw(BLKIF_OP_WRITE, sector, &[seg(src, 0, 7)]);
            let mut r = rw(BLKIF_OP_READ, sector, &[seg(dst, 0, 7)]);
            let ok = exchange(&mut v, &mut w) == Some(BLKIF_RSP_OKAY)
                && exchange(&mut v, &mut r) == Some(BLKIF_RSP_OKAY)
                && same(0, 1);
            if !ok {
                failed += 1;
            }
            rounds += 1;
        }
        println!("good: {rounds} rounds while the hostile domain ran, {failed} failed");
        let closed = blkfront::close(xs, v.dev.as_str(), &v.backend, wait, MAX_STATE_WAITS);
        let ended = v.ring_grant.take().map(|g| g.end().is_ok());
        let _ = evtchn::close(v.port);
        println!("good: closed ({closed:?}), ring grant ended: {ended:?}");
    }

    /// `mode=crash`: a full ring of writes, a notify, and a crash before any response.
    fn crash_mid_io(
        si: &StartInfo,
        xs: &mut Client,
        wait: &mut StoreWait,
        table: &GrantTable<GRANT_ENTRIES>,
    ) -> ! {
        let mut v = match connect(si, xs, wait, table, 0, DEVIDS[0], NAMES[0]) {
            Ok(v) => v,
            Err((step, e)) => {
                println!("hostile-blkfront: crash mode: {step}: {e}");
                pv_guest::poweroff()
            }
        };
        let be = v.backend.domid;
        let mut segs = [BlkifRequestSegment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
        for (i, s) in segs.iter_mut().enumerate() {
            let Some(r) = grant_page(si, table, i, be, true) else {
                pv_guest::poweroff()
            };
            *s = seg(r, 0, 7);
        }
        let per_req = (BLKIF_MAX_SEGMENTS_PER_REQUEST * 8) as u64;
        let span = v.info.sectors.saturating_sub(per_req).max(1);
        let mut posted = 0u32;
        while !v.ring.is_full() {
            let mut req = rw(BLKIF_OP_WRITE, u64::from(posted) * per_req % span, &segs);
            req.id = u64::from(posted) + 1;
            if v.ring.push_request(&req).is_err() {
                break;
            }
            posted += 1;
        }
        v.ring.push_requests();
        println!(
            "hostile-blkfront: posted {posted} writes of {} segments, crashing before any response",
            BLKIF_MAX_SEGMENTS_PER_REQUEST
        );
        let _ = evtchn::send(v.port);
        pv_guest::shutdown(ShutdownReason::Crash)
    }
}
