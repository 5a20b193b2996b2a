//! `hostile-netfront`: a netfront that abuses the control domain's netback and switch
//! (the QEMU test `net_hostile`).
//!
//! The default mode has two vifs (devids 0 and 1, both access ports of one VLAN only
//! they are on). With `peer=<domid>` (a pv-guest `demo=net` domain) it waits for the
//! peer's `data/net` and then floods in rounds until that node says `done` (at least
//! one round, at most [`MAX_ROUNDS`]), so the flood runs while the peer does its I/O.
//! Each round sends through devid 0 [`FRAMES`] frames of each broken kind, a full tx
//! ring at a time: runts (1 to 13 bytes), oversized frames (1519 bytes to
//! 64 KiB), slots naming grant references never granted (one unset inside its table,
//! one past it), and badly tagged frames (tagged on an access port, VLAN 0 and 4095, a
//! truncated tag). It prints the statuses each kind got (`NETIF_RSP_ERROR` for the
//! first three, `OKAY` then a switch drop for the tagged ones), closes devid 0 and
//! prints the counters the backend published. Then devid 1's tx producer index jumps
//! far ahead of the ring: the backend closes devid 1 alone.
//!
//! `mode=crash`, one vif: posts a full rx ring and a full tx ring of good frames,
//! notifies the backend and crashes (`SCHEDOP_shutdown` crash) before reading any
//! response, so the control domain must drop the rings of a domain that died mid-I/O.
//!
//! One line per step, `hostile-netfront: ` first; waits are bounded (yields).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::split::Path;
    use pv_guest::xenbus::{self, Client};
    use pv_guest::{StartInfo, bytes_str, cmdline, events, println};
    use test_guests::bare_netfront::{
        MAX_YIELDS, PAGE, PER_VIF, Page, RX_DATA, Rings, TX_DATA, backend_of, grant_and_init,
        read_u32, wait_for,
    };
    use test_guests::grant::{Table, yield_cpu};
    use xen_pv_abi::kit::TxId;
    use xen_pv_abi::kit::ring::{FrontRing, REQ_PROD_OFFSET, RawRingPage, RingMemory};
    use xen_pv_abi::netif::{
        NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_OKAY, NetifRxProtocol, NetifRxRequest,
        NetifTxProtocol, NetifTxRequest,
    };
    use xen_pv_abi::sched::ShutdownReason;
    use xen_pv_abi::{Errno, EvtchnPort, evtchn};

    test_guests::standard_notes!("hostile-netfront");
    pv_guest::entry!(main);

    const VIFS: usize = 2;
    /// First grant reference used (0..7 are reserved).
    const GREF0: u32 = 8;
    /// Never granted: an unset entry of our one-frame table, and one past its end.
    const UNGRANTED: [u32; 2] = [400, 4000];
    /// Frames of each broken kind.
    const FRAMES: u16 = 64;
    /// Most flood rounds.
    const MAX_ROUNDS: u32 = 500;
    /// Where the tagged frames lie in the tx data page, and their lengths.
    const TAGGED: [(u16, u16); 4] = [(0, 60), (128, 60), (256, 60), (384, 16)];

    /// Replaced by our grant frame's mapping.
    static mut TABLE_PAGE: Page = Page([0; PAGE]);
    /// Per vif: [`PER_VIF`] pages. Only accessed through raw pointers.
    static mut PAGES: [Page; PER_VIF * VIFS] = [const { Page([0; PAGE]) }; PER_VIF * VIFS];

    fn page(vif: usize, k: usize) -> *mut u8 {
        let i = PER_VIF * vif + k;
        assert!(k < PER_VIF && i < PER_VIF * VIFS);
        // SAFETY: in bounds (asserted); only a pointer is made.
        unsafe { (&raw mut PAGES).cast::<Page>().add(i).cast::<u8>() }
    }

    fn gref(vif: usize, k: usize) -> u32 {
        GREF0 + (PER_VIF * vif + k) as u32
    }

    /// Writes `bytes` at `offset` of `vif`'s tx data page.
    fn put(vif: usize, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= PAGE);
        let p = page(vif, TX_DATA);
        for (k, b) in bytes.iter().enumerate() {
            // SAFETY: inside our own data page (asserted).
            unsafe { p.add(offset + k).write_volatile(*b) };
        }
    }

    /// A 60-byte broadcast from `src`, with an 802.1Q tag `tci` if given.
    fn frame(src: [u8; 6], tag: Option<u16>) -> [u8; 60] {
        let mut f = [0x5au8; 60];
        f[..6].fill(0xff);
        f[6..12].copy_from_slice(&src);
        match tag {
            Some(tci) => {
                f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
                f[14..16].copy_from_slice(&tci.to_be_bytes());
                f[16..18].copy_from_slice(&0x88b5u16.to_be_bytes());
            }
            None => f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()),
        }
        f
    }

    struct Vif {
        tx: FrontRing<NetifTxProtocol, RawRingPage>,
        rx: FrontRing<NetifRxProtocol, RawRingPage>,
        port: EvtchnPort,
        back: Path,
        mac: [u8; 6],
    }

    type Step = (&'static str, usize, Errno);

    fn main(si: &'static StartInfo) -> ! {
        if let Err(e) = events::init(si) {
            println!("hostile-netfront: cannot set up event delivery: {e}");
            pv_guest::poweroff()
        }
        let mut xs = match xenbus::connect(si) {
            Ok(xs) => xs,
            Err(e) => {
                println!("hostile-netfront: no xenstore connection: {e}");
                pv_guest::poweroff()
            }
        };
        // SAFETY: TABLE_PAGE is ours, never referenced, and used for nothing else.
        let table = match unsafe { Table::setup((&raw const TABLE_PAGE) as u64) } {
            Ok(t) => t,
            Err(_) => {
                println!("hostile-netfront: no grant table");
                pv_guest::poweroff()
            }
        };
        let crash = cmdline::value(si.cmd_line_bytes(), "mode") == Some(b"crash".as_slice());
        let r = if crash {
            crash_mid_io(si, &mut xs, &table)
        } else {
            let peer = cmdline::value(si.cmd_line_bytes(), "peer").and_then(cmdline::parse_u64);
            run(si, &mut xs, &table, peer)
        };
        match r {
            Ok(()) => println!("hostile-netfront: done"),
            Err((what, i, e)) => println!("hostile-netfront: failed: {what} (devid {i}): {e}"),
        }
        pv_guest::poweroff()
    }

    /// Grants vif `i`'s pages, writes its keys, goes Connected and waits for the
    /// backend to be Connected too.
    fn connect(si: &StartInfo, xs: &mut Client, table: &Table, i: usize) -> Result<Vif, Step> {
        let fe = Path::of(format_args!("device/vif/{i}"));
        let back = backend_of(xs, &fe).map_err(|e| ("backend path", i, e))?;
        let mut mac = [0u8; 6];
        {
            let m = xs
                .read(TxId::NONE, fe.join("mac").as_str())
                .map_err(|e| ("mac", i, e))?;
            let m = bytes_str(m);
            for (k, part) in m.split(':').enumerate() {
                let b = u8::from_str_radix(part, 16).map_err(|_| ("mac", i, Errno::EINVAL))?;
                *mac.get_mut(k).ok_or(("mac", i, Errno::EINVAL))? = b;
            }
        }
        wait_for(xs, &back.join("state"), 2).map_err(|e| ("backend InitWait", i, e))?;
        // SAFETY: vif `i`'s pages of PAGES, used for nothing else and only by raw pointer.
        let Rings { tx, rx, port } =
            unsafe { grant_and_init(si, table, |k| page(i, k), |k| gref(i, k)) }
                .map_err(|(what, e)| (what, i, e))?;
        let keys = [
            ("tx-ring-ref", Path::of(format_args!("{}", gref(i, 0)))),
            ("rx-ring-ref", Path::of(format_args!("{}", gref(i, 1)))),
            ("event-channel", Path::of(format_args!("{}", port.0))),
            ("request-rx-copy", Path::of(format_args!("1"))),
            ("state", Path::of(format_args!("4"))),
        ];
        for (k, v) in &keys {
            xs.write(TxId::NONE, fe.join(k).as_str(), v.as_str().as_bytes())
                .map_err(|e| ("write keys", i, e))?;
        }
        wait_for(xs, &back.join("state"), 4).map_err(|e| ("backend Connected", i, e))?;
        Ok(Vif {
            tx,
            rx,
            port,
            back,
            mac,
        })
    }

    /// Statuses of a flood: (okay, error, dropped, other).
    type Tally = [u32; 4];

    /// Sends `FRAMES` tx requests `make(k)`, as many at a time as the ring holds, and
    /// tallies their responses' statuses.
    fn flood(v: &mut Vif, i: usize, make: impl Fn(u16) -> NetifTxRequest) -> Result<Tally, Step> {
        let mut tally = [0u32; 4];
        let (mut sent, mut answered) = (0u16, 0u16);
        let mut idle = 0u32;
        while answered < FRAMES {
            while sent < FRAMES && !v.tx.is_full() {
                v.tx.push_request(&make(sent))
                    .map_err(|_| ("flood", i, Errno::ENOSPC))?;
                sent += 1;
            }
            if v.tx.push_requests_and_check_notify() {
                let _ = evtchn::send(v.port);
            }
            let mut got = false;
            while let Some(r) =
                v.tx.next_response()
                    .map_err(|_| ("tx response", i, Errno::EIO))?
            {
                let k = match r.status {
                    NETIF_RSP_OKAY => 0,
                    NETIF_RSP_ERROR => 1,
                    NETIF_RSP_DROPPED => 2,
                    _ => 3,
                };
                tally[k] += 1;
                answered += 1;
                got = true;
            }
            if got {
                idle = 0;
            } else {
                idle += 1;
                if idle > MAX_YIELDS {
                    return Err(("tx responses", i, Errno::ETIME));
                }
                yield_cpu();
            }
        }
        Ok(tally)
    }

    fn report(kind: &str, rounds: u32, t: Tally) {
        println!(
            "hostile-netfront: {} {kind}: okay {} error {} dropped {} other {}",
            u32::from(FRAMES) * rounds,
            t[0],
            t[1],
            t[2],
            t[3]
        );
    }

    fn add(total: &mut Tally, t: Tally) {
        for (a, b) in total.iter_mut().zip(t) {
            *a += b;
        }
    }

    /// The peer's `data/net` (`started`, `done`), if readable.
    fn peer_status(xs: &mut Client, peer: u64) -> Option<[u8; 7]> {
        let path = Path::of(format_args!("/local/domain/{peer}/data/net"));
        let v = xs.read(TxId::NONE, path.as_str()).ok()?;
        let mut out = [0u8; 7];
        let n = v.len().min(7);
        out[..n].copy_from_slice(&v[..n]);
        Some(out)
    }

    fn run(si: &StartInfo, xs: &mut Client, table: &Table, peer: Option<u64>) -> Result<(), Step> {
        let mut v0 = connect(si, xs, table, 0)?;
        let v1 = connect(si, xs, table, 1)?;
        println!("hostile-netfront: devids 0 and 1 connected");
        if let Some(p) = peer {
            let mut up = false;
            for _ in 0..MAX_YIELDS {
                if peer_status(xs, p).is_some() {
                    up = true;
                    break;
                }
                yield_cpu();
            }
            if !up {
                return Err(("the peer never started", 0, Errno::ETIME));
            }
        }
        let done = *b"done\0\0\0";
        let overlapped = peer.is_some_and(|p| peer_status(xs, p) != Some(done));
        let mut totals = [[0u32; 4]; 4];
        let mut rounds = 0;
        while rounds < MAX_ROUNDS {
            let t = flood_round(&mut v0)?;
            for (total, t) in totals.iter_mut().zip(t) {
                add(total, t);
            }
            rounds += 1;
            if peer.is_none_or(|p| peer_status(xs, p) == Some(done)) {
                break;
            }
        }
        if let Some(p) = peer {
            println!(
                "hostile-netfront: flooded {rounds} rounds, the first while d{p} was running: \
                 {overlapped}"
            );
        }
        for (kind, t) in ["runts", "oversized", "ungranted", "badly tagged"]
            .iter()
            .zip(totals)
        {
            report(kind, rounds, t);
        }

        v1_breach(xs, &mut v0, v1)
    }

    /// One round of the flood through devid 0: the tallies of the four kinds.
    fn flood_round(v0: &mut Vif) -> Result<[Tally; 4], Step> {
        let data = gref(0, TX_DATA);
        let slot = |gref: u32, offset: u16, size: u16, id: u16| NetifTxRequest {
            gref,
            offset,
            flags: 0,
            id,
            size,
        };
        put(0, 0, &frame(v0.mac, None));
        let runts = flood(v0, 0, |k| slot(data, 0, 1 + k % 13, k))?;
        const BIG: [u16; 4] = [1519, 1600, 4096, 65535];
        let big = flood(v0, 0, |k| slot(data, 0, BIG[usize::from(k % 4)], k))?;
        let ungranted = flood(v0, 0, |k| slot(UNGRANTED[usize::from(k % 2)], 0, 60, k))?;
        // Tagged with our own VLAN on an access port, VLAN 0 and 4095 (not VLANs), and
        // a tag cut short.
        for ((offset, len), tci) in TAGGED.iter().zip([30u16, 0, 4095, 30]) {
            let f = frame(v0.mac, Some(tci));
            put(0, usize::from(*offset), &f[..usize::from(*len)]);
        }
        let tagged = flood(v0, 0, |k| {
            let (offset, len) = TAGGED[usize::from(k % 4)];
            slot(data, offset, len, k)
        })?;
        Ok([runts, big, ungranted, tagged])
    }

    /// Closes devid 0 and prints its counters, then breaks devid 1's ring.
    fn v1_breach(xs: &mut Client, v0: &mut Vif, v1: Vif) -> Result<(), Step> {
        // Close devid 0; the backend publishes its counters when it disconnects.
        let fe = Path::of(format_args!("device/vif/0/state"));
        let back = v0.back.join("state");
        xs.write(TxId::NONE, fe.as_str(), b"5")
            .map_err(|e| ("close", 0, e))?;
        wait_for(xs, &back, 5).map_err(|e| ("backend closing", 0, e))?;
        xs.write(TxId::NONE, fe.as_str(), b"6")
            .map_err(|e| ("close", 0, e))?;
        wait_for(xs, &back, 6).map_err(|e| ("backend closed", 0, e))?;
        let stats = v0.back.join("statistics");
        let mut stat = |k: &str| read_u32(xs, &stats.join(k)).map_or(-1, i64::from);
        let (tx, err) = (stat("tx-frames"), stat("tx-errors"));
        let (drop, vlan, rx) = (stat("tx-dropped"), stat("vlan-dropped"), stat("rx-frames"));
        println!(
            "hostile-netfront: devid 0 counters: tx-frames {tx} tx-errors {err} tx-dropped \
             {drop} vlan-dropped {vlan} rx-frames {rx}"
        );

        // devid 1: a tx producer index far ahead of anything posted.
        let ahead = v1.tx.req_prod_pvt().wrapping_add(0x0001_0000);
        v1.tx.memory().store_u32(REQ_PROD_OFFSET, ahead);
        let _ = evtchn::send(v1.port);
        wait_for(xs, &v1.back.join("state"), 6).map_err(|e| ("backend closed", 1, e))?;
        println!("hostile-netfront: devid 1 closed by the backend after its producer jumped");
        Ok(())
    }

    /// `mode=crash`: full rings, a notify, and a crash before any response.
    fn crash_mid_io(si: &StartInfo, xs: &mut Client, table: &Table) -> Result<(), Step> {
        let mut v = connect(si, xs, table, 0)?;
        let mut rx = 0u32;
        while !v.rx.is_full() {
            let req = NetifRxRequest {
                id: rx as u16,
                _pad: 0,
                gref: gref(0, RX_DATA),
            };
            v.rx.push_request(&req)
                .map_err(|_| ("post rx", 0, Errno::ENOSPC))?;
            rx += 1;
        }
        v.rx.push_requests();
        put(0, 0, &frame(v.mac, None));
        let mut tx = 0u32;
        while !v.tx.is_full() {
            let req = NetifTxRequest {
                gref: gref(0, TX_DATA),
                offset: 0,
                flags: 0,
                id: tx as u16,
                size: 60,
            };
            v.tx.push_request(&req)
                .map_err(|_| ("send", 0, Errno::ENOSPC))?;
            tx += 1;
        }
        v.tx.push_requests();
        println!("hostile-netfront: posted {tx} tx and {rx} rx requests, crashing");
        let _ = evtchn::send(v.port);
        pv_guest::shutdown(ShutdownReason::Crash)
    }
}
