//! A PV network interface through the kit's [`netfront`] (`demo=net`), with smoltcp
//! for TCP. It connects to the first `device/vif/*` the toolstack created and plays
//! the role the command line names:
//!
//! * `net=server ip=10.0.0.1/24`: accepts one TCP connection on port 5001, receives
//!   1 MiB and prints its byte count and FNV-1a checksum;
//! * `net=client ip=10.0.0.2/24 peer=10.0.0.1`: connects to the peer's port 5001,
//!   sends 1 MiB of xorshift bytes and prints their checksum;
//! * `net=probe ip=10.0.0.3/24 peer=10.0.0.1 [tries=N]`: broadcasts N ARP requests
//!   for the peer, 500 ms apart, and prints whether one was answered;
//! * every role publishes `data/net` (readable by every domain): `started` once its
//!   receive buffers are posted, `done` when the role ended (also when it failed);
//! * `after=<domid>` makes a role send nothing before that domain's `data/net` exists
//!   (an ordering, not a delay: a sniffer then sees every broadcast); a client also
//!   broadcasts a gratuitous ARP before it connects and another after its transfer;
//! * `net=sniff [until=<vid>:<n>,...]`: on a trunk port, counts received frames per
//!   802.1Q VLAN id until every `until` VLAN had its count (without
//!   `until`: until two VLANs were seen) or a time limit passes, then prints
//!   `net: vlan <vid> frames <n>` lines.
//!
//! Every line starts with `net: `; every role ends with a `net: ... done` or
//! `net: failed: ...` line. Waits block on the device's event channel with
//! `SCHEDOP_poll` and a deadline in system time (events masked meanwhile, so no
//! notification is lost between the ring check and the block).

use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint};
use xen_pv_abi::console::EvtchnNotifier;
use xen_pv_abi::kit::TxId;
use xen_pv_abi::kit::netfront::{self, MAX_FRAME, Mac, Netfront, PAGE_SIZE};
use xen_pv_abi::kit::ring::{FrontRing, RawRingPage};
use xen_pv_abi::netif::{NetifRxProtocol, NetifTxProtocol};
use xen_pv_abi::{Errno, EvtchnPort, VcpuId, evtchn, sched};

use crate::front::{self, NoDevice, Page};
use crate::net_args::{Args, Role, parse_args};
use crate::split_demo::{GRANT_ENTRIES, setup_grant_table};
use crate::xenbus::{self, Client, StoreWait};
use crate::{StartInfo, events, println};

/// Tx buffer pages, then rx buffer pages.
const TX_PAGES: usize = 8;
const RX_PAGES: usize = 24;
const DATA_PAGES: usize = TX_PAGES + RX_PAGES;
/// Store round trips a state wait may take.
const MAX_STATE_WAITS: u32 = 100_000;
/// Bytes the client sends.
const TRANSFER: usize = 1 << 20;
const PORT: u16 = 5001;
/// How long a role may take, in system time.
const ROLE_LIMIT_NS: u64 = 120_000_000_000;
/// Longest block between two polls of the stack.
const TICK_NS: u64 = 50_000_000;

/// The rings (only accessed through [`RawRingPage`]).
static mut TX_RING: Page = Page([0; PAGE_SIZE]);
static mut RX_RING: Page = Page([0; PAGE_SIZE]);
/// The buffer pages (only accessed through [`StaticPages`], by raw pointer).
static mut DATA: [Page; DATA_PAGES] = [const { Page([0; PAGE_SIZE]) }; DATA_PAGES];

/// Received frames waiting for smoltcp: at least as many as rx buffers, so a poll of
/// the rx ring never has to drop one.
const QUEUE: usize = RX_PAGES;

struct RxQueue {
    frames: [[u8; MAX_FRAME]; QUEUE],
    lens: [usize; QUEUE],
    head: usize,
    len: usize,
    dropped: u64,
}

impl RxQueue {
    fn push(&mut self, f: &[u8]) {
        if self.len == QUEUE || f.len() > MAX_FRAME {
            self.dropped += 1;
            return;
        }
        let i = (self.head + self.len) % QUEUE;
        self.frames[i][..f.len()].copy_from_slice(f);
        self.lens[i] = f.len();
        self.len += 1;
    }
}

/// The demo's large buffers: not on the kernel's 64 KiB boot stack.
struct Buffers {
    rxq: RxQueue,
    scratch: [u8; MAX_FRAME],
    tcp_rx: [u8; 16384],
    tcp_tx: [u8; 16384],
}

static BUFFERS: spin::Mutex<Buffers> = spin::Mutex::new(Buffers {
    rxq: RxQueue {
        frames: [[0; MAX_FRAME]; QUEUE],
        lens: [0; QUEUE],
        head: 0,
        len: 0,
        dropped: 0,
    },
    scratch: [0; MAX_FRAME],
    tcp_rx: [0; 16384],
    tcp_tx: [0; 16384],
});

/// [`DATA`] as the frontend's buffer pages.
type StaticPages<'a> = front::StaticPages<'a, true>;

type Nic<'a> =
    Netfront<'a, RawRingPage, RawRingPage, GRANT_ENTRIES, StaticPages<'a>, EvtchnNotifier>;

/// FNV-1a, continued from `h`.
fn fnv1a(h: u32, b: &[u8]) -> u32 {
    b.iter()
        .fold(h, |h, &x| (h ^ u32::from(x)).wrapping_mul(0x0100_0193))
}
const FNV_START: u32 = 0x811c_9dc5;

/// The client's byte stream: xorshift64 output, 8 little-endian bytes per step.
struct Stream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Stream {
    fn new() -> Self {
        Stream {
            state: 0x9e37_79b9_7f4a_7c15,
            word: [0; 8],
            used: 8,
        }
    }
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used == 8 {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.word = self.state.to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

type Step = (&'static str, Errno);

fn at(step: &'static str) -> impl FnOnce(Errno) -> Step {
    move |e| (step, e)
}

/// Runs the demo; prints every step or where it failed.
pub fn run(si: &StartInfo) {
    let Some(args) = parse_args(si.cmd_line_bytes()) else {
        println!(
            "net: failed: bad command line (net=server|client|probe|sniff ip=a.b.c.d/n peer=a.b.c.d)"
        );
        return;
    };
    if let Err(e) = events::init(si) {
        println!("net: failed: event delivery: {e}");
        return;
    }
    match demo(si, &args) {
        Ok(()) => println!("net: done"),
        Err((step, e)) => println!("net: failed: {step}: {e}"),
    }
    events::disable();
}

/// System time in ns (0 if shared_info is unreadable: every deadline then passes at
/// once and the role gives up rather than hang).
fn now_ns(si: &StartInfo) -> u64 {
    events::shared_info(si)
        .ok()
        .and_then(|s| xen_pv_abi::time::system_time_ns(s, VcpuId(0)).ok())
        .unwrap_or(u64::MAX)
}

fn demo(si: &StartInfo, args: &Args) -> Result<(), Step> {
    let mut xs = xenbus::connect(si).map_err(at("xenstore"))?;
    let (_, store_port) = si.xenstore().ok_or(("xenstore", Errno::ENODEV))?;
    let mut store_wait = StoreWait(store_port);

    let dev = front::first_device(&mut xs, "vif").map_err(|e| match e {
        NoDevice::List(e) => ("list device/vif", e),
        NoDevice::Empty => ("list device/vif", Errno::ENODEV),
        NoDevice::Name => ("device name", Errno::EINVAL),
    })?;
    let dev = dev.as_str();
    let backend = netfront::probe(&mut xs, dev).map_err(at("probe"))?;

    let table = setup_grant_table().map_err(|_| ("grant table", Errno::EIO))?;
    let tx_va = (&raw mut TX_RING).cast::<u8>();
    let rx_va = (&raw mut RX_RING).cast::<u8>();
    // SAFETY: the ring statics are pages of this kernel reserved for the rings and only
    // accessed through these views (and the backend's mappings of their grants).
    let (tx_mem, rx_mem) = unsafe {
        (
            RawRingPage::new(tx_va, PAGE_SIZE),
            RawRingPage::new(rx_va, PAGE_SIZE),
        )
    };
    let tx = FrontRing::<NetifTxProtocol, _>::init(tx_mem).map_err(at("tx ring"))?;
    let rx = FrontRing::<NetifRxProtocol, _>::init(rx_mem).map_err(at("rx ring"))?;
    let tx_grant =
        front::grant_page(si, &table, backend.domid, tx_va).map_err(at("grant tx ring"))?;
    let rx_grant =
        front::grant_page(si, &table, backend.domid, rx_va).map_err(at("grant rx ring"))?;
    let port = front::backend_port(backend.domid).map_err(at("alloc_unbound"))?;

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
    .map_err(at("connect"))?;
    println!(
        "net: {dev}: connected to d{}, mac {}",
        backend.domid.0,
        MacFmt(mac)
    );
    let mut nic = Netfront::new(
        tx,
        rx,
        &table,
        backend.domid,
        // SAFETY: DATA is reserved for the buffer pages and only accessed through this
        // view.
        unsafe { StaticPages::new(si, (&raw mut DATA).cast::<u8>(), DATA_PAGES) },
        TX_PAGES,
        EvtchnNotifier(port),
        mac,
    );
    nic.fill_rx().map_err(at("post rx buffers"))?;
    let mut bufs = BUFFERS.try_lock().ok_or(("buffers", Errno::EBUSY))?;
    let r = (|| {
        publish_started(&mut xs)?;
        if let Some(d) = args.after {
            wait_for_node(si, &mut xs, store_port, d)?;
        }
        match args.role {
            Role::Server | Role::Client => tcp_role(si, args, &mut nic, port, &mut bufs),
            Role::Probe => probe(si, args, &mut nic, port),
            Role::Sniff => sniff(si, args, &mut nic, port),
        }
    })();
    // Whatever happened: a domain waiting on this one must not wait for ever.
    let _ = xs.write(TxId::NONE, STATUS, b"done");
    let st = nic.stats();
    println!(
        "net: frames sent {} received {} (errors {} / {})",
        st.tx_frames, st.rx_frames, st.tx_errors, st.rx_errors
    );
    drop(nic);
    let closed = netfront::close(&mut xs, dev, &backend, &mut store_wait, MAX_STATE_WAITS);
    // The backend has unmapped the rings once it is Closed.
    let ended = tx_grant.end().is_ok() && rx_grant.end().is_ok();
    let _ = evtchn::close(port);
    println!("net: closed ({closed:?}), ring grants ended: {ended}");
    r
}

/// Where a role says it started or ended (relative to its home path).
const STATUS: &str = "data/net";
/// Longest wait for another domain's node.
const AFTER_LIMIT_NS: u64 = 60_000_000_000;
/// Longest block between two reads of that node (a store event ends it earlier).
const AFTER_TICK_NS: u64 = 100_000_000;

/// Writes [`STATUS`] `started`, owned by this domain and readable by every other one.
fn publish_started(xs: &mut Client) -> Result<(), Step> {
    let own = xs
        .read(TxId::NONE, "domid")
        .ok()
        .and_then(crate::cmdline::parse_u64)
        .ok_or(("read domid", Errno::ENOENT))?;
    let perm = crate::split::Path::of(format_args!("r{own}"));
    xs.write(TxId::NONE, STATUS, b"started")
        .map_err(at("write data/net"))?;
    xenbus::set_perms(xs, TxId::NONE, STATUS, &[perm.as_str()]).map_err(at("publish data/net"))
}

/// Blocks until domain `dom`'s [`STATUS`] node is readable: re-read on every store
/// event (a watch on the node fires when it is written or its permissions change) and
/// at least every [`AFTER_TICK_NS`]; `ETIMEDOUT` after [`AFTER_LIMIT_NS`].
fn wait_for_node(si: &StartInfo, xs: &mut Client, store: EvtchnPort, dom: u16) -> Result<(), Step> {
    let path = crate::split::Path::of(format_args!("/local/domain/{dom}/{STATUS}"));
    let path = path.as_str();
    // Without the watch the ticks still bound the wait.
    let watched = xs.watch(path, "after").is_ok();
    let limit = now_ns(si).saturating_add(AFTER_LIMIT_NS);
    let r = loop {
        if xs.read(TxId::NONE, path).is_ok() {
            break Ok(());
        }
        while let Ok(Some(_)) = xs.next_watch_event() {}
        let now = now_ns(si);
        if now >= limit {
            break Err(("wait for the other domain", Errno::ETIMEDOUT));
        }
        // Masked: an event from here on stays pending and ends the poll at once.
        events::disable();
        let _ = sched::poll(&[store], now.saturating_add(AFTER_TICK_NS).min(limit));
        events::enable();
    };
    if watched {
        let _ = xs.unwatch(path, "after");
    }
    if r.is_ok() {
        println!("net: d{dom} started");
    }
    r
}

struct MacFmt(Mac);

impl core::fmt::Display for MacFmt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Blocks until the device has responses, `port` fires or system time reaches
/// `deadline`. Events are masked from the ring check to the end of the poll, so an
/// event in between stays pending and ends the poll at once.
fn wait(nic: &mut Nic<'_>, port: EvtchnPort, deadline: u64) {
    events::disable();
    let work = nic.has_work().unwrap_or(true);
    if !work {
        let _ = sched::poll(&[port], deadline);
    }
    events::enable();
}

/// Takes tx responses and received frames into `q`.
fn pump(nic: &mut Nic<'_>, q: &mut RxQueue) {
    let _ = nic.reclaim_tx();
    let _ = nic.poll_rx(|f| q.push(f));
}

/// smoltcp's view of the netfront.
struct Dev<'n, 'a> {
    nic: &'n mut Nic<'a>,
    q: &'n mut RxQueue,
    scratch: &'n mut [u8; MAX_FRAME],
}

struct RxTok<'b>(&'b [u8]);
struct TxTok<'b, 'a> {
    nic: &'b mut Nic<'a>,
    scratch: &'b mut [u8; MAX_FRAME],
}

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TxTok<'_, '_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MAX_FRAME);
        let r = f(&mut self.scratch[..len]);
        // A full ring or a broken device drops the frame: TCP sends it again.
        let _ = self.nic.transmit(&self.scratch[..len]);
        r
    }
}

impl<'a> Device for Dev<'_, 'a> {
    type RxToken<'b>
        = RxTok<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b, 'a>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(RxTok<'_>, TxTok<'_, 'a>)> {
        if self.q.len == 0 {
            pump(self.nic, self.q);
        }
        if self.q.len == 0 || !self.nic.can_transmit() {
            return None;
        }
        let i = self.q.head;
        self.q.head = (i + 1) % QUEUE;
        self.q.len -= 1;
        let len = self.q.lens[i];
        Some((
            RxTok(&self.q.frames[i][..len]),
            TxTok {
                nic: self.nic,
                scratch: self.scratch,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxTok<'_, 'a>> {
        if !self.nic.can_transmit() {
            let _ = self.nic.reclaim_tx();
        }
        self.nic.can_transmit().then_some(TxTok {
            nic: self.nic,
            scratch: self.scratch,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

fn tcp_role(
    si: &StartInfo,
    args: &Args,
    nic: &mut Nic<'_>,
    port: EvtchnPort,
    bufs: &mut Buffers,
) -> Result<(), Step> {
    let Buffers {
        rxq,
        scratch,
        tcp_rx,
        tcp_tx,
    } = bufs;
    let (ip, prefix) = args.ip.ok_or(("ip", Errno::EINVAL))?;
    let start = now_ns(si);
    let stamp = |ns: u64| Instant::from_micros((ns.saturating_sub(start) / 1000) as i64);
    let mac = nic.mac();
    let mut config = Config::new(EthernetAddress(mac).into());
    config.random_seed = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 1]);
    if args.role == Role::Client {
        // Announces the client on its VLAN (a sniffer on a trunk counts it).
        nic.transmit(&arp_request(mac, ip, ip))
            .map_err(at("gratuitous ARP"))?;
    }
    let mut dev = Dev {
        nic,
        q: rxq,
        scratch,
    };
    let mut iface = Interface::new(config, &mut dev, stamp(start));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), prefix));
    });
    let mut storage = [SocketStorage::EMPTY; 1];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let sock = tcp::Socket::new(
        tcp::SocketBuffer::new(&mut tcp_rx[..]),
        tcp::SocketBuffer::new(&mut tcp_tx[..]),
    );
    let handle = sockets.add(sock);
    let server = args.role == Role::Server;
    let peer = args.peer.map(|p| IpEndpoint::new(IpAddress::Ipv4(p), PORT));
    if server {
        sockets
            .get_mut::<tcp::Socket>(handle)
            .listen(PORT)
            .map_err(|_| ("listen", Errno::EINVAL))?;
    }
    let mut stream = Stream::new();
    let mut sum = FNV_START;
    let mut bytes = 0usize;
    let mut chunk = [0u8; 1024];
    let mut connects = 0u32;
    let mut next_connect = start;
    let mut closing_since: Option<u64> = None;
    let limit = start.saturating_add(ROLE_LIMIT_NS);
    loop {
        let now = now_ns(si);
        if now >= limit {
            println!("net: timed out after {bytes} bytes");
            return Err(("transfer", Errno::ETIMEDOUT));
        }
        iface.poll(stamp(now), &mut dev, &mut sockets);
        if dev.nic.is_broken() {
            return Err(("device", Errno::EIO));
        }
        let s = sockets.get_mut::<tcp::Socket>(handle);
        if server {
            while s.can_recv() && bytes < TRANSFER {
                let want = chunk.len().min(TRANSFER - bytes);
                let n = s
                    .recv_slice(&mut chunk[..want])
                    .map_err(|_| ("recv", Errno::EIO))?;
                if n == 0 {
                    break;
                }
                sum = fnv1a(sum, &chunk[..n]);
                bytes += n;
            }
            if bytes == TRANSFER && closing_since.is_none() {
                println!("net: server received {bytes} bytes, checksum {sum:#010x}");
                s.close();
                closing_since = Some(now);
            }
        } else {
            if !s.is_open() && bytes == 0 && now >= next_connect {
                // Not connected yet, or refused (the server was not listening): retry.
                let peer = peer.ok_or(("peer", Errno::EINVAL))?;
                let local = 49152 + (connects % 1000) as u16;
                connects += 1;
                s.connect(iface.context(), peer, local)
                    .map_err(|_| ("connect", Errno::EINVAL))?;
                next_connect = now + 500_000_000;
            }
            while s.can_send() && bytes < TRANSFER {
                // Only offer what fits: the stream cannot be rewound.
                let room = s.send_capacity() - s.send_queue();
                let want = chunk.len().min(TRANSFER - bytes).min(room);
                if want == 0 {
                    break;
                }
                stream.fill(&mut chunk[..want]);
                let n = s
                    .send_slice(&chunk[..want])
                    .map_err(|_| ("send", Errno::EIO))?;
                if n < want {
                    return Err(("send", Errno::EIO));
                }
                sum = fnv1a(sum, &chunk[..n]);
                bytes += n;
            }
            if bytes == TRANSFER && closing_since.is_none() {
                s.close();
                closing_since = Some(now);
            }
        }
        if let Some(t) = closing_since {
            let s = sockets.get_mut::<tcp::Socket>(handle);
            let settled = matches!(
                s.state(),
                tcp::State::Closed | tcp::State::TimeWait | tcp::State::FinWait2
            ) && s.send_queue() == 0;
            if settled || now.saturating_sub(t) > 10_000_000_000 {
                if !server {
                    // The transfer's end, announced like its start.
                    let _ = dev.nic.reclaim_tx();
                    dev.nic
                        .transmit(&arp_request(mac, ip, ip))
                        .map_err(at("gratuitous ARP"))?;
                    println!(
                        "net: client sent {bytes} bytes, checksum {sum:#010x} ({:?})",
                        s.state()
                    );
                }
                return Ok(());
            }
        }
        let delay = iface
            .poll_delay(stamp(now), &sockets)
            .map_or(TICK_NS, |d| (d.total_micros() * 1000).min(TICK_NS));
        if delay > 0 {
            wait(dev.nic, port, now.saturating_add(delay));
        }
    }
}

const ETH_ARP: [u8; 2] = [0x08, 0x06];
const ETH_VLAN: [u8; 2] = [0x81, 0x00];

/// A broadcast ARP request from `mac`/`ip` for `target` (a gratuitous one when they
/// are equal), padded to the 60-byte minimum.
fn arp_request(
    mac: Mac,
    ip: smoltcp::wire::Ipv4Address,
    target: smoltcp::wire::Ipv4Address,
) -> [u8; 60] {
    let mut req = [0u8; 60];
    req[..6].fill(0xff);
    req[6..12].copy_from_slice(&mac);
    req[12..14].copy_from_slice(&ETH_ARP);
    // Ethernet, IPv4, 6-byte and 4-byte addresses, request.
    req[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    req[22..28].copy_from_slice(&mac);
    req[28..32].copy_from_slice(&ip.octets());
    req[38..42].copy_from_slice(&target.octets());
    req
}

/// Broadcasts `tries` ARP requests for the peer, 500 ms apart, and listens for the
/// answer.
fn probe(si: &StartInfo, args: &Args, nic: &mut Nic<'_>, port: EvtchnPort) -> Result<(), Step> {
    let (ip, _) = args.ip.ok_or(("ip", Errno::EINVAL))?;
    let peer = args.peer.ok_or(("peer", Errno::EINVAL))?;
    let req = arp_request(nic.mac(), ip, peer);
    for _ in 0..args.tries {
        let _ = nic.reclaim_tx();
        nic.transmit(&req).map_err(at("send ARP request"))?;
        let deadline = now_ns(si).saturating_add(500_000_000);
        while now_ns(si) < deadline {
            let mut reply = None;
            nic.reclaim_tx().map_err(at("tx"))?;
            nic.poll_rx(|f| {
                if f.len() >= 42
                    && f[12..14] == ETH_ARP
                    && f[20..22] == [0, 2]
                    && f[28..32] == peer.octets()
                {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&f[22..28]);
                    reply = Some(m);
                }
            })
            .map_err(at("rx"))?;
            if let Some(m) = reply {
                println!("net: ARP reply from {}", MacFmt(m));
                return Ok(());
            }
            wait(nic, port, deadline);
        }
    }
    println!("net: no ARP reply for {peer} after {} tries", args.tries);
    Ok(())
}

/// Counts received frames per 802.1Q VLAN id (0xffff: untagged) until every `until`
/// VLAN reached its count (without `until`: two VLANs were seen and one more second
/// passed), or 60 s.
fn sniff(si: &StartInfo, args: &Args, nic: &mut Nic<'_>, port: EvtchnPort) -> Result<(), Step> {
    let until = &args.until[..args.until_len];
    let mut seen: [(u16, u64); 8] = [(0, 0); 8];
    let mut kinds = 0usize;
    let start = now_ns(si);
    let mut end = start.saturating_add(60_000_000_000);
    let mut both = false;
    loop {
        let now = now_ns(si);
        if now >= end {
            break;
        }
        nic.poll_rx(|f| {
            let vid = if f.len() >= 18 && f[12..14] == ETH_VLAN {
                u16::from_be_bytes([f[14], f[15]]) & 0xfff
            } else {
                0xffff
            };
            if let Some(e) = seen[..kinds].iter_mut().find(|e| e.0 == vid) {
                e.1 += 1;
            } else if kinds < seen.len() {
                seen[kinds] = (vid, 1);
                kinds += 1;
            }
        })
        .map_err(at("rx"))?;
        if !until.is_empty() {
            let reached = until.iter().all(|&(vid, n)| {
                seen[..kinds]
                    .iter()
                    .any(|e| e.0 == vid && e.1 >= u64::from(n))
            });
            if reached {
                break;
            }
        } else if seen[..kinds].iter().filter(|e| e.0 != 0xffff).count() >= 2 && !both {
            both = true;
            end = now.saturating_add(1_000_000_000);
        }
        wait(nic, port, end.min(now.saturating_add(TICK_NS * 4)));
    }
    if now_ns(si) >= end && !until.is_empty() {
        println!("net: sniffing timed out");
    }
    seen[..kinds].sort_unstable();
    for (vid, n) in &seen[..kinds] {
        if *vid == 0xffff {
            println!("net: untagged frames {n}");
        } else {
            println!("net: vlan {vid} frames {n}");
        }
    }
    Ok(())
}
