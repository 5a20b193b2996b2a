//! `vif-loop`: a bare netfront on four vifs of its own, against the control domain's
//! netback and switch (the QEMU test `vif` gives it `vif.<id>=…` words for devids 0..3:
//! 0 and 1 untagged, 2 an access port of another VLAN, 3 the one it connects wrongly).
//!
//! It checks each backend is in InitWait with `feature-rx-copy = 1`, writes the ring
//! keys and goes straight to Connected as Linux netfront does (devid 3 without
//! `request-rx-copy`, which the backend must refuse by closing). Then:
//!
//! 1. devid 0 broadcasts a frame: devid 1 (same VLAN) gets it, devid 2 does not;
//! 2. devid 2 sends a frame tagged with its own VLAN (dropped: tagged on an access
//!    port), then a two-slot frame whose second slot crosses its page: the backend
//!    closes devid 2 alone;
//! 3. devid 1 sends a frame to devid 0's MAC (learned in step 1): devid 0 gets it.
//!
//! It closes devids 0 and 1 (Closing, then Closed once the backend is Closing) and
//! prints the counters the backends published. One line per step, `vif-loop: ` first;
//! waits are bounded (yields).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::split::Path;
    use pv_guest::xenbus::{self, Client};
    use pv_guest::{StartInfo, events, println};
    use test_guests::bare_netfront::{
        MAX_YIELDS, PAGE, PER_VIF, Page, RX_DATA, Rings, TX_DATA, backend_of, grant_and_init,
        read_u32, wait_for,
    };
    use test_guests::grant::{Table, yield_cpu};
    use xen_pv_abi::kit::TxId;
    use xen_pv_abi::kit::ring::{FrontRing, RawRingPage};
    use xen_pv_abi::netif::{
        NETTXF_MORE_DATA, NetifRxProtocol, NetifRxRequest, NetifTxProtocol, NetifTxRequest,
    };
    use xen_pv_abi::{Errno, EvtchnPort, evtchn};

    test_guests::standard_notes!("vif-loop");
    pv_guest::entry!(main);

    const VIFS: usize = 4;
    /// MACs of devids 0 and 1 (the test's words).
    const MAC0: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];
    const MAC1: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x02];
    const MAC2: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x03];
    const BROADCAST: [u8; 6] = [0xff; 6];
    const FRAME_LEN: usize = 60;
    /// First grant reference used (0..7 are reserved).
    const GREF0: u32 = 8;

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

    /// Writes a frame `dst`, `src`, optional 802.1Q tag, EtherType 0x88b5, then a
    /// pattern, `len` bytes in all, into `vif`'s tx data page.
    fn write_frame(vif: usize, dst: [u8; 6], src: [u8; 6], tag: Option<u16>, len: usize) {
        let p = page(vif, TX_DATA);
        let mut head = [0u8; 18];
        head[..6].copy_from_slice(&dst);
        head[6..12].copy_from_slice(&src);
        let n = match tag {
            Some(vid) => {
                head[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
                head[14..16].copy_from_slice(&vid.to_be_bytes());
                head[16..18].copy_from_slice(&0x88b5u16.to_be_bytes());
                18
            }
            None => {
                head[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
                14
            }
        };
        for k in 0..len.min(PAGE) {
            let b = head[..n].get(k).copied().unwrap_or((k as u8) ^ 0x5a);
            // SAFETY: inside our own data page.
            unsafe { p.add(k).write_volatile(b) };
        }
    }

    /// Whether `vif`'s rx buffer holds what its tx data page held for `from`.
    fn same_frame(from: usize, to: usize, offset: u16, len: usize) -> bool {
        let (src, dst) = (page(from, TX_DATA), page(to, RX_DATA));
        (0..len).all(|k| {
            // SAFETY: inside our own pages (offset + len checked by the caller).
            unsafe {
                dst.add(usize::from(offset) + k).read_volatile() == src.add(k).read_volatile()
            }
        })
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

    fn run(si: &StartInfo, xs: &mut Client) -> Result<(), Step> {
        // SAFETY: TABLE_PAGE is ours, never referenced, and used for nothing else.
        let table = unsafe { Table::setup((&raw const TABLE_PAGE) as u64) }
            .map_err(|_| ("grant table", 0, Errno::EFAULT))?;
        let mut vifs: [Option<Vif>; VIFS] = [const { None }; VIFS];
        for (i, slot) in vifs.iter_mut().enumerate() {
            let fe = Path::of(format_args!("device/vif/{i}"));
            let back = backend_of(xs, &fe).map_err(|e| ("backend path", i, e))?;
            if read_u32(xs, &back.join("state")) != Some(2)
                || read_u32(xs, &back.join("feature-rx-copy")) != Some(1)
            {
                return Err(("backend not in InitWait with rx-copy", i, Errno::EINVAL));
            }
            // SAFETY: vif `i`'s pages of PAGES, used for nothing else and only by raw
            // pointer.
            let Rings { tx, rx, port } =
                unsafe { grant_and_init(si, &table, |k| page(i, k), |k| gref(i, k)) }
                    .map_err(|(what, e)| (what, i, e))?;
            let mut put = |k: &str, v: &str| {
                xs.write(TxId::NONE, fe.join(k).as_str(), v.as_bytes())
                    .map_err(|e| ("write keys", i, e))
            };
            put(
                "tx-ring-ref",
                Path::of(format_args!("{}", gref(i, 0))).as_str(),
            )?;
            put(
                "rx-ring-ref",
                Path::of(format_args!("{}", gref(i, 1))).as_str(),
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

        let v = &mut vifs;

        // 1. A broadcast from devid 0: devid 1 gets it, devid 2 (VLAN 5) does not.
        post_rx(v, 1, 41)?;
        post_rx(v, 2, 42)?;
        write_frame(0, BROADCAST, MAC0, None, FRAME_LEN);
        let st = send(v, 0, &[(0, FRAME_LEN as u16, 0)])?;
        println!("vif-loop: devid 0 sent, status {st}");
        let (id, offset, len) = receive(v, 1)?;
        let same = len as usize == FRAME_LEN && same_frame(0, 1, offset, FRAME_LEN);
        println!("vif-loop: devid 1 got id {id} status {len} same {same}");
        match vif(v, 2)?.rx.next_response() {
            Ok(None) => println!("vif-loop: devid 2 got nothing"),
            _ => println!("vif-loop: devid 2 got a frame"),
        }

        // 2. devid 2: a tagged frame on its access port, then a broken frame.
        write_frame(2, BROADCAST, MAC2, Some(5), 64);
        let st = send(v, 2, &[(0, 64, 0)])?;
        println!("vif-loop: devid 2 sent a tagged frame, status {st}");
        {
            let d2 = vif(v, 2)?;
            let first = NetifTxRequest {
                gref: gref(2, TX_DATA),
                offset: 0,
                flags: NETTXF_MORE_DATA,
                id: 1,
                size: 300,
            };
            let second = NetifTxRequest {
                gref: gref(2, TX_DATA),
                offset: 4000,
                flags: 0,
                id: 2,
                size: 200,
            };
            for r in [first, second] {
                d2.tx
                    .push_request(&r)
                    .map_err(|_| ("send", 2, Errno::ENOSPC))?;
            }
            d2.tx.push_requests();
            let _ = evtchn::send(d2.port);
            let back = d2.back.join("state");
            wait_for(xs, &back, 6).map_err(|e| ("backend closed after a breach", 2, e))?;
        }
        println!("vif-loop: devid 2 closed by the backend");
        print_stats(xs, v, 2)?;

        // 3. devid 1 to devid 0's learned MAC.
        post_rx(v, 0, 40)?;
        write_frame(1, MAC0, MAC1, None, FRAME_LEN + 2);
        let st = send(v, 1, &[(0, (FRAME_LEN + 2) as u16, 0)])?;
        println!("vif-loop: devid 1 sent, status {st}");
        let (id, offset, len) = receive(v, 0)?;
        let same = len as usize == FRAME_LEN + 2 && same_frame(1, 0, offset, FRAME_LEN + 2);
        println!("vif-loop: devid 0 got id {id} status {len} same {same}");

        // Close 0 and 1 and read the counters.
        for i in [0, 1] {
            let fe = Path::of(format_args!("device/vif/{i}/state"));
            let back = vif(v, i)?.back.join("state");
            xs.write(TxId::NONE, fe.as_str(), b"5")
                .map_err(|e| ("close", i, e))?;
            wait_for(xs, &back, 5).map_err(|e| ("backend closing", i, e))?;
            xs.write(TxId::NONE, fe.as_str(), b"6")
                .map_err(|e| ("close", i, e))?;
            wait_for(xs, &back, 6).map_err(|e| ("backend closed", i, e))?;
            print_stats(xs, v, i)?;
        }
        Ok(())
    }

    fn vif(v: &mut [Option<Vif>; VIFS], i: usize) -> Result<&mut Vif, Step> {
        v[i].as_mut().ok_or(("vif", i, Errno::ENODEV))
    }

    /// Posts `vif`'s rx buffer as request `id`.
    fn post_rx(v: &mut [Option<Vif>; VIFS], i: usize, id: u16) -> Result<(), Step> {
        let d = vif(v, i)?;
        let req = NetifRxRequest {
            id,
            _pad: 0,
            gref: gref(i, RX_DATA),
        };
        d.rx.push_request(&req)
            .map_err(|_| ("post rx", i, Errno::ENOSPC))?;
        if d.rx.push_requests_and_check_notify() {
            let _ = evtchn::send(d.port);
        }
        Ok(())
    }

    /// Sends one frame of `(offset, size, flags)` slots of `vif`'s tx data page
    /// (`size` of the first slot is the frame's); the first slot's response status.
    fn send(v: &mut [Option<Vif>; VIFS], i: usize, slots: &[(u16, u16, u16)]) -> Result<i16, Step> {
        let d = vif(v, i)?;
        for (n, &(offset, size, flags)) in slots.iter().enumerate() {
            let req = NetifTxRequest {
                gref: gref(i, TX_DATA),
                offset,
                flags,
                id: 7 + n as u16,
                size,
            };
            d.tx.push_request(&req)
                .map_err(|_| ("send", i, Errno::ENOSPC))?;
        }
        if d.tx.push_requests_and_check_notify() {
            let _ = evtchn::send(d.port);
        }
        for _ in 0..MAX_YIELDS {
            if let Ok(Some(r)) = d.tx.next_response() {
                // Later slots' responses follow; only the first is reported.
                while let Ok(Some(_)) = d.tx.next_response() {}
                return Ok(r.status);
            }
            yield_cpu();
        }
        Err(("tx response", i, Errno::ETIME))
    }

    /// Waits for `vif`'s rx response: (id, offset, status).
    fn receive(v: &mut [Option<Vif>; VIFS], i: usize) -> Result<(u16, u16, i16), Step> {
        let d = vif(v, i)?;
        for _ in 0..MAX_YIELDS {
            if let Ok(Some(r)) = d.rx.next_response() {
                if r.status > 0 && usize::from(r.offset) + r.status as usize > PAGE {
                    return Err(("rx response out of the page", i, Errno::EINVAL));
                }
                return Ok((r.id, r.offset, r.status));
            }
            yield_cpu();
        }
        Err(("rx response", i, Errno::ETIME))
    }

    fn print_stats(xs: &mut Client, v: &mut [Option<Vif>; VIFS], i: usize) -> Result<(), Step> {
        let back = vif(v, i)?.back.join("statistics");
        let mut stat = |k: &str| read_u32(xs, &back.join(k)).map_or(-1, i64::from);
        let (tx, rx) = (stat("tx-frames"), stat("rx-frames"));
        let (txd, vlan, rxd) = (stat("tx-dropped"), stat("vlan-dropped"), stat("rx-dropped"));
        println!(
            "vif-loop: devid {i} counters: tx-frames {tx} rx-frames {rx} tx-dropped {txd} \
             vlan-dropped {vlan} rx-dropped {rxd}"
        );
        Ok(())
    }
}
