//! Host tests: a fake backend serves both rings out of `PageBuffer`s, resolving the
//! frontend's grants through the entries of a local grant table, and loops sent
//! frames back into the receive buffers.

extern crate std;

use super::*;
use crate::kit::ring::{BackRing, PageBuffer};
use crate::kit::test_support::*;
use crate::netif::{NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NetifRxResponse, NetifTxResponse};
use std::cell::Cell;
use std::collections::VecDeque;
use std::string::String;
use std::vec;
use std::vec::Vec;

const MAC: Mac = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];

/// A backend that loops every sent frame back into the next posted buffer.
struct FakeBack<'a> {
    tx: BackRing<NetifTxProtocol, &'a PageBuffer>,
    rx: BackRing<NetifRxProtocol, &'a PageBuffer>,
    frames: &'a Frames,
    pages: &'a Pages,
    /// Frames waiting for an rx buffer.
    queue: VecDeque<Vec<u8>>,
    /// Posted buffers not answered yet: (id, page).
    posted: VecDeque<(u16, usize)>,
}

impl<'a> FakeBack<'a> {
    fn new(tx: &'a PageBuffer, rx: &'a PageBuffer, frames: &'a Frames, pages: &'a Pages) -> Self {
        FakeBack {
            tx: BackRing::new(tx).unwrap(),
            rx: BackRing::new(rx).unwrap(),
            frames,
            pages,
            queue: VecDeque::new(),
            posted: VecDeque::new(),
        }
    }

    fn page(&self, gref: u32, write: bool) -> Option<usize> {
        let (p, read_only) = self.frames.granted(gref, self.pages)?;
        // Tx pages must be read-only, rx pages writable.
        (write != read_only).then_some(p)
    }

    /// Takes sent frames and posted buffers.
    fn take_requests(&mut self) {
        while let Some(req) = self.tx.next_request().unwrap() {
            let status = match self.page(req.gref, false) {
                Some(p) if usize::from(req.offset) + usize::from(req.size) <= PAGE_SIZE => {
                    let mut f = vec![0u8; usize::from(req.size)];
                    self.pages.read(p, usize::from(req.offset), &mut f);
                    self.queue.push_back(f);
                    NETIF_RSP_OKAY
                }
                _ => NETIF_RSP_ERROR,
            };
            self.tx
                .push_response(&NetifTxResponse { id: req.id, status })
                .unwrap();
        }
        self.tx.push_responses();
        while let Some(req) = self.rx.next_request().unwrap() {
            let p = self
                .page(req.gref, true)
                .expect("rx buffer granted writable");
            self.posted.push_back((req.id, p));
        }
    }

    /// Copies queued frames into posted buffers.
    fn deliver(&mut self) {
        while !self.queue.is_empty() && !self.posted.is_empty() {
            let f = self.queue.pop_front().unwrap();
            let (id, p) = self.posted.pop_front().unwrap();
            self.pages.write(p, 0, &f);
            self.rx
                .push_response(&NetifRxResponse {
                    id,
                    offset: 0,
                    flags: 0,
                    status: f.len() as i16,
                })
                .unwrap();
        }
        self.rx.push_responses();
    }

    fn answer_rx(&mut self, rsp: NetifRxResponse) {
        self.rx.push_response(&rsp).unwrap();
        self.rx.push_responses();
    }
}

type Front<'a> = Netfront<'a, &'a PageBuffer, &'a PageBuffer, 128, &'a Pages, fn()>;

fn front<'a>(
    tx: &'a PageBuffer,
    rx: &'a PageBuffer,
    table: &'a GrantTable<128>,
    pages: &'a Pages,
    tx_pages: usize,
) -> Front<'a> {
    fn kick() {}
    Netfront::new(
        FrontRing::init(tx).unwrap(),
        FrontRing::init(rx).unwrap(),
        table,
        BACKEND,
        pages,
        tx_pages,
        kick as fn(),
        MAC,
    )
}

#[test]
fn frames_loop_back_intact_and_grants_are_ended() {
    let g = Granted::<128>::new();
    let (table, frames) = (&g.table, &g.frames);
    let (tpage, rpage) = (PageBuffer::new(), PageBuffer::new());
    let pages = Pages::new(12);
    let mut nic = front(&tpage, &rpage, table, &pages, 4);
    assert_eq!(nic.buffers(), (4, 8));
    let free0 = table.free_count();
    assert_eq!(nic.fill_rx().unwrap(), 8);
    assert_eq!(table.free_count(), free0 - 8);
    let mut back = FakeBack::new(&tpage, &rpage, frames, &pages);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut sent = VecDeque::new();
    for round in 0..300 {
        // Up to 4 frames of random sizes, then the backend runs.
        let n = 1 + (rng.next() % 4) as usize;
        for _ in 0..n {
            let len = 1 + (rng.next() % MAX_FRAME as u64) as usize;
            let f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            match nic.transmit(&f) {
                Ok(()) => sent.push_back(f),
                Err(Errno::EBUSY) => assert_eq!(nic.tx_in_flight(), 4, "round {round}"),
                Err(e) => panic!("transmit: {e:?}"),
            }
        }
        back.take_requests();
        back.deliver();
        nic.reclaim_tx().unwrap();
        nic.poll_rx(|f| assert_eq!(Some(f.to_vec()), sent.pop_front(), "round {round}"))
            .unwrap();
        assert_eq!(nic.tx_in_flight(), 0);
    }
    // Whatever the backend still holds arrives once buffers are back.
    for _ in 0..4 {
        back.take_requests();
        back.deliver();
        nic.poll_rx(|f| assert_eq!(Some(f.to_vec()), sent.pop_front()))
            .unwrap();
    }
    assert!(sent.is_empty());
    let st = nic.stats();
    assert_eq!(st.tx_frames, st.rx_frames);
    assert_eq!((st.tx_errors, st.rx_errors), (0, 0));
    // Only the posted rx buffers hold grants.
    assert_eq!(nic.rx_posted(), 8);
    assert_eq!(table.free_count(), free0 - 8);
}

#[test]
fn frame_sizes_are_checked_and_tx_buffers_run_out() {
    let g = Granted::<128>::new();
    let (table, frames) = (&g.table, &g.frames);
    let (tpage, rpage) = (PageBuffer::new(), PageBuffer::new());
    let pages = Pages::new(3);
    let mut nic = front(&tpage, &rpage, table, &pages, 2);
    assert_eq!(nic.transmit(&[]), Err(Errno::EINVAL));
    assert_eq!(nic.transmit(&[0; MAX_FRAME + 1]), Err(Errno::EINVAL));
    nic.transmit(&[1; MAX_FRAME]).unwrap();
    assert!(nic.can_transmit());
    nic.transmit(&[2; 60]).unwrap();
    assert!(!nic.can_transmit());
    assert_eq!(nic.transmit(&[3; 60]), Err(Errno::EBUSY));
    let mut back = FakeBack::new(&tpage, &rpage, frames, &pages);
    back.take_requests();
    assert_eq!(back.queue[0].len(), MAX_FRAME);
    assert_eq!(nic.reclaim_tx().unwrap(), 2);
    assert!(nic.can_transmit());
    assert!(!nic.is_broken());
}

#[test]
fn a_tx_response_for_an_id_not_in_flight_breaks_the_device() {
    let g = Granted::<128>::new();
    let table = &g.table;
    let (tpage, rpage) = (PageBuffer::new(), PageBuffer::new());
    let pages = Pages::new(4);
    for bad in [1u16, 2, 255, u16::MAX] {
        let mut nic = front(&tpage, &rpage, table, &pages, 2);
        nic.transmit(&[0; 60]).unwrap();
        let mut tx = BackRing::<NetifTxProtocol, _>::new(&tpage).unwrap();
        tx.next_request().unwrap().unwrap();
        // id 1 is a tx buffer, but not in flight; the others are not buffers.
        tx.push_response(&NetifTxResponse {
            id: bad,
            status: NETIF_RSP_OKAY,
        })
        .unwrap();
        tx.push_responses();
        assert_eq!(nic.reclaim_tx(), Err(Errno::EIO), "id {bad}");
        assert!(nic.is_broken());
        assert_eq!(nic.transmit(&[0; 60]), Err(Errno::EIO));
        assert_eq!(nic.poll_rx(|_| {}), Err(Errno::EIO));
    }
    // The same id twice.
    let mut nic = front(&tpage, &rpage, table, &pages, 2);
    nic.transmit(&[0; 60]).unwrap();
    nic.transmit(&[0; 60]).unwrap();
    let mut tx = BackRing::<NetifTxProtocol, _>::new(&tpage).unwrap();
    let req = tx.next_request().unwrap().unwrap();
    tx.next_request().unwrap().unwrap();
    for _ in 0..2 {
        tx.push_response(&NetifTxResponse {
            id: req.id,
            status: NETIF_RSP_OKAY,
        })
        .unwrap();
    }
    tx.push_responses();
    assert_eq!(nic.reclaim_tx(), Err(Errno::EIO));
}

#[test]
fn hostile_rx_responses_break_the_device_and_errors_are_counted() {
    let g = Granted::<128>::new();
    let (table, frames) = (&g.table, &g.frames);
    let (tpage, rpage) = (PageBuffer::new(), PageBuffer::new());
    let pages = Pages::new(4);
    let ok = |id| NetifRxResponse {
        id,
        offset: 0,
        flags: 0,
        status: 60,
    };
    let cases: [(&str, Vec<NetifRxResponse>); 6] = [
        ("id past the buffers", vec![ok(3)]),
        ("same id twice", vec![ok(0), ok(0)]),
        (
            "data past the page",
            vec![NetifRxResponse {
                offset: 4000,
                status: 200,
                ..ok(0)
            }],
        ),
        (
            "more data",
            vec![NetifRxResponse {
                flags: NETRXF_MORE_DATA,
                ..ok(0)
            }],
        ),
        (
            "extra info",
            vec![NetifRxResponse {
                flags: NETRXF_EXTRA_INFO,
                ..ok(1)
            }],
        ),
        ("id 0xffff", vec![ok(0xffff)]),
    ];
    for (what, rsps) in cases {
        let mut nic = front(&tpage, &rpage, table, &pages, 1);
        assert_eq!(nic.fill_rx().unwrap(), 3);
        let mut back = FakeBack::new(&tpage, &rpage, frames, &pages);
        back.take_requests();
        for r in rsps {
            back.answer_rx(r);
        }
        let mut seen = 0;
        // A valid response before the bad one may be delivered; the call still fails.
        assert_eq!(nic.poll_rx(|_| seen += 1), Err(Errno::EIO), "{what}");
        assert!(seen <= 1, "{what}");
        assert!(nic.is_broken(), "{what}");
    }
    // Error statuses and empty frames are counted and the buffer is posted again.
    let mut nic = front(&tpage, &rpage, table, &pages, 1);
    nic.fill_rx().unwrap();
    let mut back = FakeBack::new(&tpage, &rpage, frames, &pages);
    back.take_requests();
    for (id, status) in [(0, NETIF_RSP_DROPPED), (1, NETIF_RSP_ERROR), (2, 0)] {
        back.answer_rx(NetifRxResponse { status, ..ok(id) });
    }
    assert_eq!(nic.poll_rx(|_| panic!("no frame")).unwrap(), 0);
    assert_eq!(nic.stats().rx_errors, 3);
    assert_eq!(nic.rx_posted(), 3);
    back.take_requests();
    assert_eq!(
        back.posted.len(),
        6,
        "three more posts after the three first"
    );
}

#[test]
fn has_work_sees_responses_and_kicks_happen() {
    let g = Granted::<128>::new();
    let (table, frames) = (&g.table, &g.frames);
    let (tpage, rpage) = (PageBuffer::new(), PageBuffer::new());
    let pages = Pages::new(4);
    let kicks = Cell::new(0);
    let mut nic = Netfront::new(
        FrontRing::init(&tpage).unwrap(),
        FrontRing::init(&rpage).unwrap(),
        table,
        BACKEND,
        &pages,
        2,
        || kicks.set(kicks.get() + 1),
        MAC,
    );
    nic.fill_rx().unwrap();
    assert_eq!(kicks.get(), 1, "first post kicks (fresh ring)");
    assert!(!nic.has_work().unwrap());
    nic.transmit(&[9; 100]).unwrap();
    assert_eq!(kicks.get(), 2);
    let mut back = FakeBack::new(&tpage, &rpage, frames, &pages);
    back.take_requests();
    back.deliver();
    assert!(nic.has_work().unwrap());
    assert_eq!(nic.reclaim_tx().unwrap(), 1);
    let mut got = Vec::new();
    assert_eq!(nic.poll_rx(|f| got = f.to_vec()).unwrap(), 1);
    assert_eq!(got, [9; 100]);
    assert!(!nic.has_work().unwrap());
    assert_eq!(nic.mac(), MAC);
}

#[test]
fn parses_macs() {
    assert_eq!(
        parse_mac(b"00:16:3e:00:00:0A"),
        Some([0, 0x16, 0x3e, 0, 0, 0x0a])
    );
    assert_eq!(
        parse_mac(b"00:16:3e:00:00:01\0"),
        Some([0, 0x16, 0x3e, 0, 0, 1])
    );
    for bad in [
        &b"00:16:3e:00:00"[..],
        b"00:16:3e:00:00:0g",
        b"00-16-3e-00-00-01",
        b"00:16:3e:00:00:001",
        b"",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad:?}");
    }
}

/// A store whose backend goes InitWait when the frontend is Initialising and
/// Connected when it is Connected with all keys written.
fn net_store(rx_copy: Option<&str>, mac: &str) -> FakeStore {
    let mut s = FakeStore::new(step_backend);
    s.put("device/vif/0/backend", BE);
    s.put("device/vif/0/backend-id", "0");
    s.put("device/vif/0/mac", mac);
    s.put("device/vif/0/state", "1");
    s.put(&format(BE, "state"), "1");
    if let Some(v) = rx_copy {
        s.put(&format(BE, "feature-rx-copy"), v);
    }
    s
}

const DEV: &str = "device/vif/0";
const BE: &str = "/local/domain/0/backend/vif/1/0";

fn get<'s>(s: &'s FakeStore, k: &str) -> Option<&'s str> {
    s.nodes.get(k).map(|v| core::str::from_utf8(v).unwrap())
}

fn step_backend(s: &mut FakeStore) {
    let fe = get(s, "device/vif/0/state").unwrap_or("").to_string();
    let be = format(BE, "state");
    let keys = [
        "tx-ring-ref",
        "rx-ring-ref",
        "event-channel",
        "request-rx-copy",
    ];
    let now = get(s, &be).unwrap_or("").to_string();
    let next = match fe.as_str() {
        "1" if now == "1" => "2",
        "4" if keys.iter().all(|k| s.nodes.contains_key(&format(DEV, k))) => "4",
        _ => return,
    };
    s.put(&be, next);
}

fn format(base: &str, key: &str) -> String {
    std::format!("{base}/{key}")
}

use std::string::ToString;

/// [`connect`] with rings 8 and 9 and port 5, a wait that returns at once.
fn connect_dev(store: &mut FakeStore, backend: &Backend, max_waits: u32) -> Result<Mac, Errno> {
    let r = (GrantRef(8), GrantRef(9));
    connect(
        store,
        DEV,
        backend,
        r.0,
        r.1,
        EvtchnPort(5),
        &mut || Ok(()),
        max_waits,
    )
}

#[test]
fn handshake_writes_the_keys_and_returns_the_mac() {
    let mut store = net_store(Some("1"), "00:16:3e:00:00:02");
    let backend = probe(&mut store, DEV).unwrap();
    let mac = connect_dev(&mut store, &backend, 10).unwrap();
    assert_eq!(mac, [0, 0x16, 0x3e, 0, 0, 2]);
    for (k, v) in [
        ("tx-ring-ref", "8"),
        ("rx-ring-ref", "9"),
        ("event-channel", "5"),
        ("request-rx-copy", "1"),
        ("feature-rx-notify", "1"),
        ("state", "4"),
    ] {
        assert_eq!(get(&store, &format(DEV, k)), Some(v), "{k}");
    }
    assert_eq!(get(&store, &format(BE, "state")), Some("4"));
}

#[test]
fn handshake_refuses_backends_without_rx_copy_and_bad_macs() {
    for copy in [
        None,
        Some("0"),
        Some("x"),
        Some("01234567890123456789012345"),
    ] {
        let mut store = net_store(copy, "00:16:3e:00:00:02");
        let backend = probe(&mut store, DEV).unwrap();
        let r = connect_dev(&mut store, &backend, 10);
        assert_eq!(r, Err(Errno::EOPNOTSUPP), "{copy:?}");
        assert_eq!(get(&store, &format(DEV, "tx-ring-ref")), None);
    }
    for mac in [
        "00:16:3e",
        "zz:16:3e:00:00:02",
        "00:16:3e:00:00:02:00:00:00:00:00",
    ] {
        let mut store = net_store(Some("1"), mac);
        let backend = probe(&mut store, DEV).unwrap();
        let r = connect_dev(&mut store, &backend, 10);
        assert_eq!(r, Err(Errno::EINVAL), "{mac}");
    }
    // A backend that never gets to InitWait times out after the wait budget.
    let mut store = net_store(Some("1"), "00:16:3e:00:00:02");
    store
        .nodes
        .insert("device/vif/0/state".into(), b"1".to_vec());
    let backend = probe(&mut store, DEV).unwrap();
    store.nodes.insert(format(BE, "state"), b"5".to_vec());
    let r = connect_dev(&mut store, &backend, 3);
    assert_eq!(r, Err(Errno::ENODEV), "a Closing backend");
}
