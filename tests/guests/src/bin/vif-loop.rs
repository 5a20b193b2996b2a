//! `vif-loop`: a bare netfront on four vifs of its own, against the control domain's
//! netback and switch (the QEMU test `vif` gives it `vif.<id>=…` words for devids 0..3:
//! 0 and 1 untagged, 2 an access port of another VLAN, 3 the one it connects wrongly).
//!
//! It checks each backend is in InitWait with `feature-rx-copy = 1`, writes the ring
//! keys and goes straight to Connected as Linux netfront does (devid 3 without
//! `request-rx-copy`, which the backend must refuse by closing), posts one rx buffer on
//! devids 1 and 2, sends one broadcast frame on devid 0, and expects it on devid 1 only.
//! Then it closes devids 0..2 (Closing, then Closed once the backend is Closing) and
//! reads the counters the backend published. One line per step, `vif-loop: ` first;
//! waits are bounded (yields).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::paging::mfn_of;
    use pv_guest::split::Path;
    use pv_guest::xenbus::{self, Client};
    use pv_guest::{StartInfo, bytes_str, events, println};
    use test_guests::grant::{Table, yield_cpu};
    use xen_pv_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READONLY};
    use xen_pv_abi::kit::TxId;
    use xen_pv_abi::kit::ring::{FrontRing, RawRingPage};
    use xen_pv_abi::netif::{NetifRxProtocol, NetifRxRequest, NetifTxProtocol, NetifTxRequest};
    use xen_pv_abi::{DomId, Errno, EvtchnPort, evtchn};

    test_guests::standard_notes!("vif-loop");
    pv_guest::entry!(main);

    const PAGE: usize = 4096;
    const VIFS: usize = 4;
    /// The frame: broadcast from devid 0's MAC (the test's words), a local EtherType.
    const SRC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];
    const FRAME_LEN: usize = 60;
    /// First grant reference used (0..7 are reserved).
    const GREF0: u32 = 8;
    /// Yields one wait may take.
    const MAX_YIELDS: u32 = 200_000;

    #[repr(C, align(4096))]
    struct Page([u8; PAGE]);

    /// Replaced by our grant frame's mapping.
    static mut TABLE_PAGE: Page = Page([0; PAGE]);
    /// Per vif: tx ring, rx ring, data page (tx frame for devid 0, rx buffer else).
    /// Only accessed through raw pointers.
    static mut PAGES: [Page; 3 * VIFS] = [const { Page([0; PAGE]) }; 3 * VIFS];

    fn page(i: usize) -> *mut u8 {
        assert!(i < 3 * VIFS);
        // SAFETY: in bounds (asserted); only a pointer is made.
        unsafe { (&raw mut PAGES).cast::<Page>().add(i).cast::<u8>() }
    }

    struct Vif {
        tx: FrontRing<NetifTxProtocol, RawRingPage>,
        rx: FrontRing<NetifRxProtocol, RawRingPage>,
        port: EvtchnPort,
        back: Path,
    }

    type Step = (&'static str, usize, Errno);

    fn main(si: &'static StartInfo) -> ! {
        if let Err(e) = events::init(si) {
            println!("vif-loop: cannot set up event delivery: {e}");
            pv_guest::poweroff()
        }
        let mut xs = match xenbus::connect(si) {
            Ok(xs) => xs,
            Err(e) => {
                println!("vif-loop: no xenstore connection: {e}");
                pv_guest::poweroff()
            }
        };
        match run(si, &mut xs) {
            Ok(()) => println!("vif-loop: done"),
            Err((what, i, e)) => println!("vif-loop: failed: {what} (devid {i}): {e}"),
        }
        pv_guest::poweroff()
    }

    fn read_u32(xs: &mut Client, path: &Path) -> Option<u32> {
        let v = xs.read(TxId::NONE, path.as_str()).ok()?;
        bytes_str(v).trim().parse().ok()
    }

    /// Waits until `path` reads `want`.
    fn wait_for(xs: &mut Client, path: &Path, want: u32) -> Result<(), Errno> {
        for _ in 0..MAX_YIELDS {
            if read_u32(xs, path) == Some(want) {
                return Ok(());
            }
            yield_cpu();
        }
        Err(Errno::ETIME)
    }

    fn run(si: &StartInfo, xs: &mut Client) -> Result<(), Step> {
        // SAFETY: TABLE_PAGE is ours, never referenced, and used for nothing else.
        let table = unsafe { Table::setup((&raw const TABLE_PAGE) as u64) }
            .map_err(|_| ("grant table", 0, Errno::EFAULT))?;
        let mut vifs: [Option<Vif>; VIFS] = [const { None }; VIFS];
        for (i, slot) in vifs.iter_mut().enumerate() {
            let fe = Path::of(format_args!("device/vif/{i}"));
            let back = {
                let b = xs
                    .read(TxId::NONE, fe.join("backend").as_str())
                    .map_err(|e| ("backend path", i, e))?;
                Path::of(format_args!("{}", bytes_str(b)))
            };
            if read_u32(xs, &back.join("state")) != Some(2)
                || read_u32(xs, &back.join("feature-rx-copy")) != Some(1)
            {
                return Err(("backend not in InitWait with rx-copy", i, Errno::EINVAL));
            }
            let grefs = [0, 1, 2].map(|k| GREF0 + (3 * i + k) as u32);
            for (k, &gref) in grefs.iter().enumerate() {
                let flags = if i == 0 && k == 2 {
                    GTF_PERMIT_ACCESS | GTF_READONLY
                } else {
                    GTF_PERMIT_ACCESS
                };
                table.set(gref, flags, DomId(0), mfn_of(si, page(3 * i + k) as u64));
            }
            // SAFETY: our own pages, used for nothing else, accessed by the kit's ring
            // only atomically or volatile (the backend writes them concurrently).
            let (tx_mem, rx_mem) = unsafe {
                (
                    RawRingPage::new(page(3 * i), PAGE),
                    RawRingPage::new(page(3 * i + 1), PAGE),
                )
            };
            let tx = FrontRing::init(tx_mem).map_err(|e| ("tx ring", i, e))?;
            let rx = FrontRing::init(rx_mem).map_err(|e| ("rx ring", i, e))?;
            let port = evtchn::alloc_unbound(DomId(0)).map_err(|e| ("event channel", i, e))?;
            let mut put = |k: &str, v: &str| {
                xs.write(TxId::NONE, fe.join(k).as_str(), v.as_bytes())
                    .map_err(|e| ("write keys", i, e))
            };
            put(
                "tx-ring-ref",
                Path::of(format_args!("{}", grefs[0])).as_str(),
            )?;
            put(
                "rx-ring-ref",
                Path::of(format_args!("{}", grefs[1])).as_str(),
            )?;
            put(
                "event-channel",
                Path::of(format_args!("{}", port.0)).as_str(),
            )?;
            if i != 3 {
                put("request-rx-copy", "1")?;
            }
            put("state", "4")?;
            *slot = Some(Vif { tx, rx, port, back });
        }
        for (i, v) in vifs.iter().enumerate() {
            let Some(v) = v else { continue };
            let want = if i == 3 { 6 } else { 4 };
            wait_for(xs, &v.back.join("state"), want).map_err(|e| ("backend state", i, e))?;
        }
        println!("vif-loop: backends connected, devid 3 refused");

        // An rx buffer on devids 1 and 2.
        for i in [1, 2] {
            let Some(v) = vifs[i].as_mut() else { continue };
            let req = NetifRxRequest {
                id: 40 + i as u16,
                _pad: 0,
                gref: GREF0 + (3 * i + 2) as u32,
            };
            v.rx.push_request(&req)
                .map_err(|_| ("post rx", i, Errno::ENOSPC))?;
            if v.rx.push_requests_and_check_notify() {
                let _ = evtchn::send(v.port);
            }
        }
        // The frame on devid 0.
        let data = page(2);
        for k in 0..FRAME_LEN {
            let b = match k {
                0..6 => 0xff,
                6..12 => SRC[k - 6],
                12 => 0x88,
                13 => 0xb5,
                _ => k as u8,
            };
            // SAFETY: inside our own data page.
            unsafe { data.add(k).write_volatile(b) };
        }
        let sender = vifs[0].as_mut().ok_or(("sender", 0, Errno::ENODEV))?;
        let req = NetifTxRequest {
            gref: GREF0 + 2,
            offset: 0,
            flags: 0,
            id: 7,
            size: FRAME_LEN as u16,
        };
        sender
            .tx
            .push_request(&req)
            .map_err(|_| ("send", 0, Errno::ENOSPC))?;
        if sender.tx.push_requests_and_check_notify() {
            let _ = evtchn::send(sender.port);
        }
        let mut answered = None;
        for _ in 0..MAX_YIELDS {
            if let Ok(Some(r)) = sender.tx.next_response() {
                answered = Some(r);
                break;
            }
            yield_cpu();
        }
        let r = answered.ok_or(("tx response", 0, Errno::ETIME))?;
        println!("vif-loop: tx response id {} status {}", r.id, r.status);
        let receiver = vifs[1].as_mut().ok_or(("receiver", 1, Errno::ENODEV))?;
        let mut got = None;
        for _ in 0..MAX_YIELDS {
            if let Ok(Some(r)) = receiver.rx.next_response() {
                got = Some(r);
                break;
            }
            yield_cpu();
        }
        let r = got.ok_or(("rx response", 1, Errno::ETIME))?;
        let buf = page(3 + 2);
        let same = (0..FRAME_LEN).all(|k| {
            // SAFETY: inside our own rx page (the backend's copy is complete: the
            // response was published after it).
            let b = unsafe { buf.add(usize::from(r.offset) + k).read_volatile() };
            // SAFETY: inside our own data page.
            b == unsafe { data.add(k).read_volatile() }
        });
        println!(
            "vif-loop: devid 1 got id {} status {} same {same}",
            r.id, r.status
        );
        let other = vifs[2].as_mut().ok_or(("other vlan", 2, Errno::ENODEV))?;
        match other.rx.next_response() {
            Ok(None) => println!("vif-loop: devid 2 got nothing"),
            _ => println!("vif-loop: devid 2 got a frame"),
        }

        // Close 0..2 and read the counters.
        for (i, v) in vifs.iter().enumerate().take(3) {
            let Some(v) = v else { continue };
            let fe = Path::of(format_args!("device/vif/{i}/state"));
            xs.write(TxId::NONE, fe.as_str(), b"5")
                .map_err(|e| ("close", i, e))?;
            wait_for(xs, &v.back.join("state"), 5).map_err(|e| ("backend closing", i, e))?;
            xs.write(TxId::NONE, fe.as_str(), b"6")
                .map_err(|e| ("close", i, e))?;
            wait_for(xs, &v.back.join("state"), 6).map_err(|e| ("backend closed", i, e))?;
            let stat = |xs: &mut Client, k: &str| {
                read_u32(
                    xs,
                    &v.back
                        .join(Path::of(format_args!("statistics/{k}")).as_str()),
                )
                .map_or(-1, i64::from)
            };
            let (tx, rx) = (stat(xs, "tx-frames"), stat(xs, "rx-frames"));
            let (txd, rxd) = (stat(xs, "tx-dropped"), stat(xs, "rx-dropped"));
            println!(
                "vif-loop: devid {i} closed: tx-frames {tx} rx-frames {rx} tx-dropped {txd} rx-dropped {rxd}"
            );
        }
        Ok(())
    }
}
