//! Frames through the control domain's switch: xen-pv-abi's kit netfront in two bench
//! domains, each on a vif of the same VLAN (xtask's `bench::NET_VIFS`).
//!
//! `net_frame_1500_2dom`: role 2 echoes every frame it receives back to its sender;
//! role 1 sends a 1500-byte frame to role 2's MAC and waits for the echo, `iterations`
//! times. One iteration delivers two frames from one domain to the other (each through
//! both netbacks and the switch, with a grant copy out of the sender and one into the
//! receiver), so the BENCH line counts `2 × iterations` frames: under `-icount` its
//! figure is the instructions of everything one frame costs, both guests included.
//!
//! Ordering without timing: role 2 publishes `data/bench-net` (readable by every domain)
//! once its receive buffers are posted, and role 1 sends nothing before it reads it;
//! one untimed broadcast exchange first teaches role 1 the peer's MAC and the switch
//! both MACs, so the timed frames are unicast.

use pv_guest::events::{self, count, wait_until};
use pv_guest::front::{self, NoDevice};
use pv_guest::split_demo::{GRANT_ENTRIES, setup_grant_table};
use pv_guest::xenbus::{self, StoreWait};
use xen_pv_abi::console::EvtchnNotifier;
use xen_pv_abi::kit::TxId;
use xen_pv_abi::kit::netfront::{self, Mac, Netfront, PAGE_SIZE};
use xen_pv_abi::kit::ring::{FrontRing, RawRingPage};
use xen_pv_abi::netif::{NetifRxProtocol, NetifTxProtocol};
use xen_pv_abi::{EvtchnPort, evtchn, sched};

use crate::{Ctx, Failure, Figures, rdtsc, timed_empty};

const TX_PAGES: usize = 4;
const RX_PAGES: usize = 8;
const DATA_PAGES: usize = TX_PAGES + RX_PAGES;
/// Store round trips one handshake state wait may take.
const MAX_STATE_WAITS: u32 = 100_000;
/// Yields role 1 may wait for the peer's node.
const MAX_YIELDS: u32 = 1_000_000;
/// Most iterations: each goes through the control domain twice.
const MAX_ITERATIONS: u64 = 2_000;
/// Bytes of a measured frame (an Ethernet MTU's payload plus its header would be 1514;
/// the case is named by the usual 1500).
const FRAME: usize = 1500;
/// The node role 2 publishes when it is receiving.
const READY: &str = "data/bench-net";

/// Page `k` of the block cases' statics, which this case borrows (a case runs alone
/// in its run): the tx ring, the rx ring, then the buffers. Borrowing rather than
/// adding pages keeps the bench guest's layout, which the other cases' figures
/// depend on by a few hundred instructions.
fn page(k: usize) -> *mut u8 {
    crate::blk::scratch_page(k)
}

/// Pages 2.. of [`page`] as the frontend's buffer pages (a plain copy, as the blk
/// cases: the netfront reads a page only after its grant ended and writes it before
/// granting it).
type StaticPages<'a> = front::StaticPages<'a, false>;

type Nic<'t, 's> =
    Netfront<'t, RawRingPage, RawRingPage, GRANT_ENTRIES, StaticPages<'s>, EvtchnNotifier>;

fn wrong(what: &'static str) -> impl FnOnce(xen_pv_abi::Errno) -> Failure {
    move |e| {
        pv_guest::io_println!("bench: net: {what}: {e}");
        Failure::Errno(e)
    }
}

/// Blocks until a frame arrives and returns its length, copied into `out`.
fn receive(
    nic: &mut Nic<'_, '_>,
    port: EvtchnPort,
    out: &mut [u8; PAGE_SIZE],
) -> Result<usize, Failure> {
    loop {
        let mut len = 0;
        nic.poll_rx(|f| {
            out[..f.len()].copy_from_slice(f);
            len = f.len();
        })?;
        nic.reclaim_tx()?;
        if len > 0 {
            return Ok(len);
        }
        // Seen before the check: an event after it ends the wait at once.
        let seen = count(port);
        if !nic.has_work()? {
            wait_until(|| count(port) != seen);
        }
    }
}

/// Transmits `f`, first waiting for a free tx buffer if all are in flight.
fn send(nic: &mut Nic<'_, '_>, port: EvtchnPort, f: &[u8]) -> Result<(), Failure> {
    loop {
        let seen = count(port);
        nic.reclaim_tx()?;
        if nic.can_transmit() {
            return Ok(nic.transmit(f)?);
        }
        if !nic.has_work()? {
            wait_until(|| count(port) != seen);
        }
    }
}

/// `net_frame_1500_2dom` (both roles; role 1's figures are reported).
pub fn net_frame_1500_2dom(ctx: &Ctx) -> Figures {
    let si = ctx.si;
    if si.xenstore().is_none() {
        return Err(Failure::Wrong("no_xenstore"));
    }
    events::init(si)?;
    let r = connected(ctx);
    events::disable();
    r
}

fn connected(ctx: &Ctx) -> Figures {
    let si = ctx.si;
    let mut xs = xenbus::connect(si)?;
    let (_, store_port) = si.xenstore().ok_or(Failure::Wrong("no_xenstore"))?;
    let mut store_wait = StoreWait(store_port);
    let dev = front::first_device(&mut xs, "vif").map_err(|e| match e {
        NoDevice::List(_) | NoDevice::Empty => Failure::Wrong("no_vif"),
        NoDevice::Name => Failure::Wrong("vif_name"),
    })?;
    let dev = dev.as_str();
    let backend = netfront::probe(&mut xs, dev).map_err(wrong("probe"))?;
    let table = setup_grant_table().map_err(|_| Failure::Wrong("grant_table"))?;
    let (tx_va, rx_va) = (page(0), page(1));
    // SAFETY: pages of this kernel that only this case uses while it runs, only accessed
    // through these views (and the backend's mappings of their grants).
    let (tx_mem, rx_mem) = unsafe {
        (
            RawRingPage::new(tx_va, PAGE_SIZE),
            RawRingPage::new(rx_va, PAGE_SIZE),
        )
    };
    let tx = FrontRing::<NetifTxProtocol, _>::init(tx_mem)?;
    let rx = FrontRing::<NetifRxProtocol, _>::init(rx_mem)?;
    let tx_grant = front::grant_page(si, &table, backend.domid, tx_va)?;
    let rx_grant = front::grant_page(si, &table, backend.domid, rx_va)?;
    let port = front::backend_port(backend.domid)?;

    let mac = netfront::connect(
        &mut xs,
        dev,
        &backend,
        tx_grant.gref(),
        rx_grant.gref(),
        port,
        &mut store_wait,
        MAX_STATE_WAITS,
    )
    .map_err(wrong("connect"))?;
    let mut nic = Netfront::new(
        tx,
        rx,
        &table,
        backend.domid,
        // SAFETY: pages 2 .. 2 + DATA_PAGES of the block cases' statics (consecutive),
        // which only this case uses while it runs.
        unsafe { StaticPages::new(si, page(2), DATA_PAGES) },
        TX_PAGES,
        EvtchnNotifier(port),
        mac,
    );
    nic.fill_rx()?;
    let n = ctx.n.clamp(1, MAX_ITERATIONS);
    let r = if ctx.role == 1 {
        measure(ctx, &mut xs, &mut nic, port, n)
    } else {
        publish_ready(&mut xs).and_then(|()| echo(&mut nic, port, n + 1).map(|()| (0, 0, 0)))
    };
    drop(nic);
    let closed = netfront::close(&mut xs, dev, &backend, &mut store_wait, MAX_STATE_WAITS);
    let _ = tx_grant.end();
    let _ = rx_grant.end();
    let _ = evtchn::close(port);
    let r = r?;
    closed.map_err(wrong("close"))?;
    Ok(r)
}

/// Writes [`READY`], owned by this domain and readable by every other one.
fn publish_ready(xs: &mut xenbus::Client) -> Result<(), Failure> {
    let own = xs
        .read(TxId::NONE, "domid")
        .ok()
        .and_then(pv_guest::cmdline::parse_u64)
        .ok_or(Failure::Wrong("no_domid"))?;
    let perm = pv_guest::split::Path::of(format_args!("r{own}"));
    xs.write(TxId::NONE, READY, b"1")?;
    xenbus::set_perms(xs, TxId::NONE, READY, &[perm.as_str()])?;
    Ok(())
}

/// Role 2: sends each of `frames` frames back to its source.
fn echo(nic: &mut Nic<'_, '_>, port: EvtchnPort, frames: u64) -> Result<(), Failure> {
    let mut buf = [0u8; PAGE_SIZE];
    let mac = nic.mac();
    for _ in 0..frames {
        let len = receive(nic, port, &mut buf)?;
        if len < 14 {
            return Err(Failure::Wrong("runt"));
        }
        let (dst, src) = buf.split_at_mut(6);
        dst.copy_from_slice(&src[..6]);
        src[..6].copy_from_slice(&mac);
        send(nic, port, &buf[..len])?;
    }
    // The last echo's response, so nothing is in flight when the vif closes.
    while nic.tx_in_flight() > 0 {
        let seen = count(port);
        nic.reclaim_tx()?;
        if nic.tx_in_flight() > 0 && !nic.has_work()? {
            wait_until(|| count(port) != seen);
        }
    }
    Ok(())
}

/// A frame of [`FRAME`] bytes from `src` to `dst`.
fn frame(dst: Mac, src: Mac) -> [u8; FRAME] {
    let mut f = [0u8; FRAME];
    for (i, b) in f.iter_mut().enumerate() {
        *b = i as u8;
    }
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

/// Role 1: one broadcast exchange to learn the peer, then `n` timed round trips.
fn measure(
    ctx: &Ctx,
    xs: &mut xenbus::Client,
    nic: &mut Nic<'_, '_>,
    port: EvtchnPort,
    n: u64,
) -> Figures {
    let ready = pv_guest::split::Path::of(format_args!("/local/domain/{}/{READY}", ctx.peer.0));
    let mut up = false;
    for _ in 0..MAX_YIELDS {
        if xs.read(TxId::NONE, ready.as_str()).is_ok() {
            up = true;
            break;
        }
        let _ = sched::yield_now();
    }
    if !up {
        return Err(Failure::PeerNotReady);
    }
    let mac = nic.mac();
    let mut buf = [0u8; PAGE_SIZE];
    send(nic, port, &frame([0xff; 6], mac))?;
    let len = receive(nic, port, &mut buf)?;
    if len != FRAME {
        return Err(Failure::Wrong("echo_length"));
    }
    let mut peer = [0u8; 6];
    peer.copy_from_slice(&buf[6..12]);
    let out = frame(peer, mac);
    let start = rdtsc();
    for _ in 0..n {
        send(nic, port, &out)?;
        if receive(nic, port, &mut buf)? != FRAME {
            return Err(Failure::Wrong("echo_length"));
        }
    }
    let total = rdtsc().wrapping_sub(start);
    Ok((2 * n, total, timed_empty(n)))
}
