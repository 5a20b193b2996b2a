//! Host tests: frontends over `PageBuffer` rings, grants held by a fake `GrantIo`.

use super::*;
use crate::vswitch::{Forward, PortConfig, Switch, SwitchConfig, VlanId};
use std::collections::{HashMap, HashSet};
use xen_pv_abi::grant_table::GNTST_BAD_GNTREF;
use xen_pv_abi::kit::ring::{FrontRing, PageBuffer, REQ_PROD_OFFSET};
use xen_pv_abi::netif::{NetifExtraGso, NetifExtraInfo, NetifRxRequest, XEN_NETIF_GSO_TYPE_TCPV4};

const FRONT: DomId = DomId(7);

/// Frames a frontend granted, by grant reference.
#[derive(Default)]
struct FakeGrants {
    dom: Option<DomId>,
    pages: HashMap<u32, Vec<u8>>,
    bad: HashSet<u32>,
    broken: bool,
    calls: usize,
}

impl FakeGrants {
    fn for_dom(dom: DomId) -> Self {
        FakeGrants {
            dom: Some(dom),
            ..Default::default()
        }
    }
    fn grant(&mut self, gref: u32, offset: usize, data: &[u8]) {
        let mut page = vec![0u8; PAGE];
        page[offset..offset + data.len()].copy_from_slice(data);
        self.pages.insert(gref, page);
    }
}

impl GrantIo for FakeGrants {
    fn copy(
        &mut self,
        domid: DomId,
        dir: Direction,
        segs: &[GrantSegment],
        buf: &mut [u8],
        status: &mut [i16],
    ) -> Result<(), Errno> {
        self.calls += 1;
        assert_eq!(segs.len(), status.len());
        assert_eq!(buf.as_ptr() as usize % PAGE, 0);
        if self.broken {
            return Err(Errno::EFAULT);
        }
        for (s, st) in segs.iter().zip(status.iter_mut()) {
            assert!(usize::from(s.offset) + usize::from(s.len) <= PAGE);
            assert!(s.buf_offset + usize::from(s.len) <= buf.len());
            assert_eq!(s.buf_offset % PAGE, usize::from(s.offset));
            let page = match self.pages.get_mut(&s.gref.0) {
                Some(p)
                    if Some(domid) == self.dom.or(Some(FRONT)) && !self.bad.contains(&s.gref.0) =>
                {
                    p
                }
                _ => {
                    *st = GNTST_BAD_GNTREF;
                    continue;
                }
            };
            let (f, b, n) = (usize::from(s.offset), s.buf_offset, usize::from(s.len));
            match dir {
                Direction::FromFrontend => buf[b..b + n].copy_from_slice(&page[f..f + n]),
                Direction::ToFrontend => page[f..f + n].copy_from_slice(&buf[b..b + n]),
            }
            *st = 0;
        }
        Ok(())
    }
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

fn slot(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> NetifTxRequest {
    NetifTxRequest {
        gref,
        offset,
        flags,
        id,
        size,
    }
}

struct Tx<'a> {
    front: FrontRing<NetifTxProtocol, &'a PageBuffer>,
    back: BackRing<NetifTxProtocol, &'a PageBuffer>,
}

impl<'a> Tx<'a> {
    fn new(page: &'a PageBuffer) -> Self {
        Tx {
            front: FrontRing::init(page).unwrap(),
            back: BackRing::new(page).unwrap(),
        }
    }
    fn push(&mut self, reqs: &[NetifTxRequest]) {
        for r in reqs {
            self.front.push_request(r).unwrap();
        }
        self.front.push_requests();
    }
    fn responses(&mut self) -> Vec<(u16, i16)> {
        let mut v = Vec::new();
        while let Some(r) = self.front.next_response().unwrap() {
            v.push((r.id, r.status));
        }
        v
    }
}

/// Frames a sink received.
type Sent = Vec<(Vec<u8>, FrameMeta)>;

/// Services `tx` once, collecting the frames.
fn service(
    nb: &mut Netback,
    tx: &mut Tx<'_>,
    gio: &mut FakeGrants,
) -> (Result<TxServiced, Disconnect>, Sent) {
    let mut frames = Vec::new();
    let r = nb.service_tx(&mut tx.back, gio, |f, m| {
        frames.push((f.to_vec(), m));
        true
    });
    (r, frames)
}

fn netback() -> Netback {
    Netback::new(FRONT, NetbackConfig::default()).unwrap()
}

#[test]
fn single_slot_frame() {
    let page = PageBuffer::new();
    let mut tx = Tx::new(&page);
    let mut gio = FakeGrants::default();
    let mut nb = netback();
    let data = bytes(60, 1);
    gio.grant(5, 100, &data);
    tx.push(&[slot(5, 100, NETTXF_CSUM_BLANK, 9, 60)]);
    let (r, frames) = service(&mut nb, &mut tx, &mut gio);
    let r = r.unwrap();
    assert_eq!((r.slots, r.frames, r.more), (1, 1, false));
    assert!(r.notify);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, data);
    assert!(frames[0].1.csum_blank);
    assert_eq!(tx.responses(), vec![(9, NETIF_RSP_OKAY)]);
    assert_eq!(nb.stats().tx_frames, 1);
    assert_eq!(nb.stats().tx_bytes, 60);
}

#[test]
fn multi_slot_frame_with_extras() {
    let page = PageBuffer::new();
    let mut tx = Tx::new(&page);
    let mut gio = FakeGrants::default();
    let mut nb = netback();
    let data = bytes(1514, 3);
    // 1000 bytes at offset 3000, then 14 at 0, then 500 at 4096-500.
    gio.grant(1, 3000, &data[..1000]);
    gio.grant(2, 0, &data[1000..1014]);
    gio.grant(3, 3596, &data[1014..]);
    let mcast = NetifExtraInfo {
        type_: XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
        flags: XEN_NETIF_EXTRA_FLAG_MORE,
        u: [1, 0, 0x5e, 0, 0, 1],
    };
    let hash = NetifExtraInfo {
        type_: XEN_NETIF_EXTRA_TYPE_HASH,
        flags: 0,
        u: [0; 6],
    };
    tx.push(&[
        slot(1, 3000, NETTXF_EXTRA_INFO | NETTXF_MORE_DATA, 10, 1514),
        NetifTxRequest::from_extra(&mcast),
        NetifTxRequest::from_extra(&hash),
        slot(2, 0, NETTXF_MORE_DATA, 11, 14),
        slot(3, 3596, 0, 12, 500),
    ]);
    let (r, frames) = service(&mut nb, &mut tx, &mut gio);
    assert_eq!(r.unwrap().frames, 1);
    assert_eq!(frames[0].0, data);
    let mut rsp = tx.responses();
    rsp.sort();
    assert_eq!(
        rsp,
        vec![
            (0, NETIF_RSP_NULL),
            (0, NETIF_RSP_NULL),
            (10, NETIF_RSP_OKAY),
            (11, NETIF_RSP_OKAY),
            (12, NETIF_RSP_OKAY)
        ]
    );
}

#[test]
fn frame_split_across_calls_stays_pending() {
    let page = PageBuffer::new();
    let mut tx = Tx::new(&page);
    let mut gio = FakeGrants::default();
    let mut nb = netback();
    let data = bytes(100, 5);
    gio.grant(1, 0, &data[..40]);
    gio.grant(2, 0, &data[40..]);
    tx.push(&[slot(1, 0, NETTXF_MORE_DATA, 1, 100)]);
    let (r, frames) = service(&mut nb, &mut tx, &mut gio);
    let r = r.unwrap();
    assert_eq!((r.slots, r.frames, r.more), (1, 0, false));
    assert!(frames.is_empty());
    assert!(tx.responses().is_empty());
    tx.push(&[slot(2, 0, 0, 2, 60)]);
    let (r, frames) = service(&mut nb, &mut tx, &mut gio);
    assert_eq!(r.unwrap().frames, 1);
    assert_eq!(frames[0].0, data);
    assert_eq!(tx.responses(), vec![(1, 0), (2, 0)]);
}

#[test]
fn budget_bounds_work_per_call() {
    let page = PageBuffer::new();
    let mut tx = Tx::new(&page);
    let mut gio = FakeGrants::default();
    let mut nb = Netback::new(FRONT, NetbackConfig { slots_per_call: 3 }).unwrap();
    gio.grant(1, 0, &bytes(64, 0));
    let reqs: Vec<_> = (0..7).map(|i| slot(1, 0, 0, i, 64)).collect();
    tx.push(&reqs);
    let mut total = 0;
    for _ in 0..3 {
        let (r, frames) = service(&mut nb, &mut tx, &mut gio);
        let r = r.unwrap();
        assert!(r.slots <= 3);
        assert_eq!(frames.len() as u32, r.slots);
        total += r.slots;
        assert_eq!(r.more, total < 7);
    }
    assert_eq!(total, 7);
    assert_eq!(tx.responses().len(), 7);
}

#[test]
fn frame_errors_answer_error_and_keep_vif() {
    let cases: Vec<(&str, Vec<NetifTxRequest>, bool)> = vec![
        ("runt", vec![slot(1, 0, 0, 1, 13)], false),
        ("oversize", vec![slot(1, 0, 0, 1, 1519)], false),
        (
            "first smaller than rest",
            vec![slot(1, 0, NETTXF_MORE_DATA, 1, 20), slot(2, 0, 0, 2, 30)],
            false,
        ),
        (
            "first slot crosses page",
            vec![slot(1, 4000, 0, 1, 200)],
            false,
        ),
        ("bad gref", vec![slot(99, 0, 0, 1, 64)], false),
        ("copy fails", vec![slot(1, 0, 0, 1, 64)], true),
        (
            "gso extra",
            vec![
                slot(1, 0, NETTXF_EXTRA_INFO, 1, 64),
                NetifTxRequest::from_extra(&NetifExtraInfo::from_gso(
                    NetifExtraGso {
                        size: 1400,
                        type_: XEN_NETIF_GSO_TYPE_TCPV4,
                        features: 0,
                    },
                    0,
                )),
            ],
            false,
        ),
        (
            "unknown extra",
            vec![
                slot(1, 0, NETTXF_EXTRA_INFO, 1, 64),
                NetifTxRequest::from_extra(&NetifExtraInfo {
                    type_: 9,
                    flags: 0,
                    u: [0; 6],
                }),
            ],
            false,
        ),
    ];
    for (name, reqs, broken) in cases {
        let page = PageBuffer::new();
        let mut tx = Tx::new(&page);
        let mut gio = FakeGrants::default();
        gio.grant(1, 0, &bytes(4096, 1));
        gio.grant(2, 0, &bytes(4096, 2));
        gio.broken = broken;
        let mut nb = netback();
        tx.push(&reqs);
        let (r, frames) = service(&mut nb, &mut tx, &mut gio);
        assert!(r.is_ok(), "{name}");
        assert!(frames.is_empty(), "{name}");
        let rsp = tx.responses();
        assert_eq!(rsp.len(), reqs.len(), "{name}");
        for (id, st) in rsp {
            if id != 0 {
                assert_eq!(st, NETIF_RSP_ERROR, "{name}");
            } else {
                assert_eq!(st, NETIF_RSP_NULL, "{name}");
            }
        }
        assert_eq!(nb.stats().tx_errors, 1, "{name}");
        // The vif still works.
        gio.broken = false;
        tx.push(&[slot(1, 0, 0, 42, 64)]);
        let (r, frames) = service(&mut nb, &mut tx, &mut gio);
        assert_eq!(r.unwrap().frames, 1, "{name}");
        assert_eq!(frames[0].0, bytes(4096, 1)[..64].to_vec(), "{name}");
        assert_eq!(tx.responses(), vec![(42, NETIF_RSP_OKAY)], "{name}");
    }
}

#[test]
fn sink_refusal_answers_dropped() {
    let page = PageBuffer::new();
    let mut tx = Tx::new(&page);
    let mut gio = FakeGrants::default();
    let mut nb = netback();
    gio.grant(1, 0, &bytes(64, 0));
    tx.push(&[slot(1, 0, 0, 3, 64)]);
    let r = nb.service_tx(&mut tx.back, &mut gio, |_, _| false).unwrap();
    assert_eq!(r.frames, 0);
    assert_eq!(tx.responses(), vec![(3, NETIF_RSP_DROPPED)]);
    assert_eq!(nb.stats().tx_dropped, 1);
}

fn expect_disconnect(reqs: &[NetifTxRequest], want: Disconnect) {
    let page = PageBuffer::new();
    let mut tx = Tx::new(&page);
    let mut gio = FakeGrants::default();
    gio.grant(1, 0, &bytes(4096, 1));
    let mut nb = netback();
    tx.push(reqs);
    let (r, frames) = service(&mut nb, &mut tx, &mut gio);
    assert_eq!(r, Err(want));
    assert!(frames.is_empty());
    assert_eq!(nb.disconnected(), Some(want));
    // Sticky: later calls fail too, rx included.
    let (r, _) = service(&mut nb, &mut tx, &mut gio);
    assert_eq!(r, Err(want));
    let rxpage: PageBuffer = PageBuffer::new();
    let mut rx = BackRing::<NetifRxProtocol, _>::new(&rxpage).unwrap();
    assert_eq!(
        nb.deliver_rx(&mut rx, &bytes(60, 0), FrameMeta::default(), &mut gio),
        Err(RxError::Disconnect(want))
    );
}

#[test]
fn later_slot_crossing_page_disconnects() {
    expect_disconnect(
        &[
            slot(1, 0, NETTXF_MORE_DATA, 1, 200),
            slot(1, 4000, 0, 2, 100),
        ],
        Disconnect::SlotCrossesPage,
    );
    expect_disconnect(&[slot(1, 4097, 0, 1, 0)], Disconnect::SlotCrossesPage);
}

#[test]
fn too_many_slots_disconnects() {
    let mut reqs: Vec<_> = (0..MAX_TX_SLOTS as u16 + 1)
        .map(|i| slot(1, 0, NETTXF_MORE_DATA, i, 10))
        .collect();
    reqs[0].size = 1000;
    expect_disconnect(&reqs, Disconnect::TooManySlots);
    // Exactly MAX_TX_SLOTS is fine.
    let page = PageBuffer::new();
    let mut tx = Tx::new(&page);
    let mut gio = FakeGrants::default();
    gio.grant(1, 0, &bytes(4096, 1));
    let mut nb = netback();
    let mut reqs: Vec<_> = (0..MAX_TX_SLOTS as u16)
        .map(|i| slot(1, 0, NETTXF_MORE_DATA, i, 10))
        .collect();
    reqs[0].size = 10 * MAX_TX_SLOTS as u16;
    reqs.last_mut().unwrap().flags = 0;
    tx.push(&reqs);
    let (r, frames) = service(&mut nb, &mut tx, &mut gio);
    assert_eq!(r.unwrap().frames, 1);
    assert_eq!(frames[0].0.len(), 10 * MAX_TX_SLOTS);
}

#[test]
fn too_many_extras_disconnects() {
    let more = NetifExtraInfo {
        type_: XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
        flags: XEN_NETIF_EXTRA_FLAG_MORE,
        u: [0; 6],
    };
    let mut reqs = vec![slot(1, 0, NETTXF_EXTRA_INFO, 1, 64)];
    reqs.extend((0..=MAX_TX_EXTRAS).map(|_| NetifTxRequest::from_extra(&more)));
    expect_disconnect(&reqs, Disconnect::TooManyExtras);
}

#[test]
fn hostile_tx_producer_disconnects() {
    for prod in [300u32, u32::MAX, 257] {
        let page = PageBuffer::new();
        let mut tx = Tx::new(&page);
        let mut gio = FakeGrants::default();
        let mut nb = netback();
        page.store_u32(REQ_PROD_OFFSET, prod);
        let (r, _) = service(&mut nb, &mut tx, &mut gio);
        assert_eq!(
            r,
            Err(Disconnect::Ring(RingError::ProducerOverflow { prod }))
        );
    }
}

#[test]
fn hostile_tx_producer_going_backwards_disconnects() {
    let page = PageBuffer::new();
    let mut tx = Tx::new(&page);
    let mut gio = FakeGrants::default();
    let mut nb = netback();
    // An unfinished frame: consumed, not answered.
    tx.push(&[
        slot(1, 0, NETTXF_MORE_DATA, 1, 100),
        slot(1, 0, NETTXF_MORE_DATA, 2, 10),
    ]);
    assert!(service(&mut nb, &mut tx, &mut gio).0.is_ok());
    page.store_u32(REQ_PROD_OFFSET, 1);
    let (r, _) = service(&mut nb, &mut tx, &mut gio);
    assert!(matches!(
        r,
        Err(Disconnect::Ring(RingError::ProducerOverflow { prod: 1 }))
    ));
}

/// An rx ring pair.
struct Rx<'a> {
    front: FrontRing<NetifRxProtocol, &'a PageBuffer>,
    back: BackRing<NetifRxProtocol, &'a PageBuffer>,
}

impl<'a> Rx<'a> {
    fn new(page: &'a PageBuffer) -> Self {
        Rx {
            front: FrontRing::init(page).unwrap(),
            back: BackRing::new(page).unwrap(),
        }
    }
    fn post(&mut self, gio: &mut FakeGrants, id: u16, gref: u32) {
        gio.grant(gref, 0, &[]);
        self.front
            .push_request(&NetifRxRequest { id, _pad: 0, gref })
            .unwrap();
        self.front.push_requests();
    }
    fn next(&mut self) -> Option<NetifRxResponse> {
        self.front.next_response().unwrap()
    }
}

#[test]
fn rx_delivery_copies_and_answers() {
    let page = PageBuffer::new();
    let mut rx = Rx::new(&page);
    let mut gio = FakeGrants::default();
    let mut nb = netback();
    rx.post(&mut gio, 4, 40);
    rx.post(&mut gio, 5, 41);
    let f1 = bytes(1518, 9);
    let d = nb
        .deliver_rx(
            &mut rx.back,
            &f1,
            FrameMeta {
                csum_blank: true,
                data_validated: false,
            },
            &mut gio,
        )
        .unwrap();
    assert_eq!(d.status, 1518);
    assert!(d.notify);
    let r = rx.next().unwrap();
    assert_eq!((r.id, r.offset, r.status), (4, 0, 1518));
    assert_eq!(r.flags, NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED);
    assert_eq!(&gio.pages[&40][..1518], &f1[..]);
    // The second buffer, plain flags; frontend did not ask for an event: no notify.
    let f2 = bytes(60, 1);
    let d = nb
        .deliver_rx(&mut rx.back, &f2, FrameMeta::default(), &mut gio)
        .unwrap();
    assert!(!d.notify);
    let r = rx.front.next_response().unwrap().unwrap();
    assert_eq!((r.id, r.flags, r.status), (5, 0, 60));
    assert_eq!(&gio.pages[&41][..60], &f2[..]);
    assert_eq!(nb.stats().rx_frames, 2);
    assert_eq!(nb.stats().rx_bytes, 1578);
}

#[test]
fn rx_without_buffer_drops_and_counts() {
    let page = PageBuffer::new();
    let mut rx = Rx::new(&page);
    let mut gio = FakeGrants::default();
    let mut nb = netback();
    for _ in 0..3 {
        assert_eq!(
            nb.deliver_rx(&mut rx.back, &bytes(60, 0), FrameMeta::default(), &mut gio),
            Err(RxError::NoBuffer)
        );
    }
    assert_eq!(nb.stats().rx_no_buffer, 3);
    assert_eq!(gio.calls, 0);
    assert!(rx.next().is_none());
}

#[test]
fn rx_bad_length_and_copy_failure() {
    let page = PageBuffer::new();
    let mut rx = Rx::new(&page);
    let mut gio = FakeGrants::default();
    let mut nb = netback();
    rx.post(&mut gio, 1, 10);
    for len in [0, 13, MAX_FRAME + 1] {
        assert_eq!(
            nb.deliver_rx(&mut rx.back, &vec![0; len], FrameMeta::default(), &mut gio),
            Err(RxError::BadLength)
        );
    }
    assert_eq!(nb.stats().rx_bad_length, 3);
    // The buffer was not used by those; a bad grant uses it up with an error.
    gio.bad.insert(10);
    let d = nb
        .deliver_rx(&mut rx.back, &bytes(60, 0), FrameMeta::default(), &mut gio)
        .unwrap();
    assert_eq!(d.status, NETIF_RSP_ERROR);
    let r = rx.next().unwrap();
    assert_eq!((r.id, r.status), (1, NETIF_RSP_ERROR));
    assert_eq!(nb.stats().rx_errors, 1);
    // A broken copier likewise.
    rx.post(&mut gio, 2, 11);
    gio.broken = true;
    let d = nb
        .deliver_rx(&mut rx.back, &bytes(60, 0), FrameMeta::default(), &mut gio)
        .unwrap();
    assert_eq!(d.status, NETIF_RSP_ERROR);
}

#[test]
fn hostile_rx_producer_disconnects() {
    let page = PageBuffer::new();
    let mut rx = Rx::new(&page);
    let mut gio = FakeGrants::default();
    let mut nb = netback();
    page.store_u32(REQ_PROD_OFFSET, 1000);
    let want = Disconnect::Ring(RingError::ProducerOverflow { prod: 1000 });
    assert_eq!(
        nb.deliver_rx(&mut rx.back, &bytes(60, 0), FrameMeta::default(), &mut gio),
        Err(RxError::Disconnect(want))
    );
    // The tx side of the vif is closed too.
    let txpage = PageBuffer::new();
    let mut tx = Tx::new(&txpage);
    assert_eq!(service(&mut nb, &mut tx, &mut gio).0, Err(want));
}

#[test]
fn keys_are_conservative() {
    let keys = backend_keys(&[0x00, 0x16, 0x3e, 0x0a, 0xbc, 0x01]);
    let get = |k: &str| keys.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("mac"), Some("00:16:3e:0a:bc:01"));
    assert_eq!(get("feature-rx-copy"), Some("1"));
    assert_eq!(get("feature-rx-flip"), Some("0"));
    assert_eq!(get("feature-sg"), Some("0"));
    assert_eq!(get("feature-gso-tcpv4"), Some("0"));
    assert_eq!(get("feature-gso-tcpv6"), Some("0"));
    assert_eq!(get("multi-queue-max-queues"), None);
}

/// xorshift for deterministic fuzzing.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_slots_never_panic_and_stay_bounded() {
    let mut s = 0x1234_5678_9abc_def1u64;
    for _ in 0..300 {
        let page = PageBuffer::new();
        let mut tx = Tx::new(&page);
        let mut gio = FakeGrants::default();
        for g in 0..4 {
            gio.grant(g, 0, &bytes(4096, g as u8));
        }
        let mut nb = Netback::new(FRONT, NetbackConfig { slots_per_call: 16 }).unwrap();
        let n = rng(&mut s) % 200;
        for _ in 0..n {
            let r = rng(&mut s);
            let req = slot(
                (r % 5) as u32,
                (r >> 8) as u16 % 4200,
                (r >> 24) as u16 & 0xf,
                (r >> 32) as u16,
                ((r >> 48) as u16) % 2000,
            );
            if tx.front.is_full() {
                break;
            }
            tx.push(&[req]);
            let (res, frames) = service(&mut nb, &mut tx, &mut gio);
            for (f, _) in &frames {
                assert!((MIN_FRAME..=MAX_FRAME).contains(&f.len()));
            }
            match res {
                Ok(r) => assert!(r.slots <= 16),
                Err(_) => break,
            }
            tx.responses();
        }
    }
}

fn v(n: u16) -> VlanId {
    VlanId::new(n).unwrap()
}

fn eth(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = bytes(len, src[5]);
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

/// Vif A's tx → switch → vif B's rx, bytes and VLAN behaviour.
#[test]
fn two_vifs_through_the_switch() {
    for (vlan_a, vlan_b) in [(10, 10), (10, 20)] {
        let (dom_a, dom_b) = (DomId(1), DomId(2));
        let mut sw = Switch::new(SwitchConfig::default()).unwrap();
        let pa = sw.add_port(PortConfig::Access(v(vlan_a))).unwrap();
        let pb = sw.add_port(PortConfig::Access(v(vlan_b))).unwrap();
        let mut nba = Netback::new(dom_a, NetbackConfig::default()).unwrap();
        let mut nbb = Netback::new(dom_b, NetbackConfig::default()).unwrap();
        let (txpage, rxpage) = (PageBuffer::new(), PageBuffer::new());
        let mut tx = Tx::new(&txpage);
        let mut rx = Rx::new(&rxpage);
        let mut gio_a = FakeGrants::for_dom(dom_a);
        let mut gio_b = FakeGrants::for_dom(dom_b);
        for i in 0..4 {
            rx.post(&mut gio_b, i, 100 + u32::from(i));
        }
        let mac_a = [2, 0, 0, 0, 0, 0xa];
        let mac_b = [2, 0, 0, 0, 0, 0xb];
        // A broadcast, then a unicast to B, the latter in two slots.
        let f1 = eth([0xff; 6], mac_a, 60);
        let f2 = eth(mac_b, mac_a, 1514);
        gio_a.grant(1, 0, &f1);
        gio_a.grant(2, 500, &f2[..1000]);
        gio_a.grant(3, 0, &f2[1000..]);
        tx.push(&[
            slot(1, 0, 0, 1, 60),
            slot(2, 500, NETTXF_MORE_DATA, 2, 1514),
            slot(3, 0, 0, 3, 514),
        ]);
        let mut sent = Vec::new();
        let r = nba
            .service_tx(&mut tx.back, &mut gio_a, |f, m| {
                sent.push((f.to_vec(), m));
                true
            })
            .unwrap();
        assert_eq!(r.frames, 2);
        let mut out = [0u8; MAX_FRAME];
        let mut delivered = 0;
        for (f, m) in &sent {
            let to: Vec<_> = match sw.forward(pa, f, 0) {
                Forward::Drop(_) => Vec::new(),
                Forward::Deliver { to, .. } => to.to_vec(),
            };
            for d in to {
                assert_eq!(d.port, pb);
                let n = d.egress.write(f, &mut out).unwrap();
                nbb.deliver_rx(&mut rx.back, &out[..n], *m, &mut gio_b)
                    .unwrap();
                delivered += 1;
            }
        }
        if vlan_a == vlan_b {
            assert_eq!(delivered, 2);
            let r0 = rx.next().unwrap();
            assert_eq!((r0.id, r0.status), (0, 60));
            assert_eq!(&gio_b.pages[&100][..60], &f1[..]);
            let r1 = rx.next().unwrap();
            assert_eq!((r1.id, r1.status), (1, 1514));
            assert_eq!(&gio_b.pages[&101][..1514], &f2[..]);
        } else {
            assert_eq!(delivered, 0);
            assert!(rx.next().is_none());
            assert_eq!(nbb.stats().rx_frames, 0);
        }
        assert_eq!(tx.responses(), vec![(1, 0), (2, 0), (3, 0)]);
    }
}

/// An access-port frame reaches a trunk vif tagged with the access VLAN.
#[test]
fn access_to_trunk_vif_is_tagged() {
    let (dom_a, dom_b) = (DomId(1), DomId(2));
    let mut sw = Switch::new(SwitchConfig::default()).unwrap();
    let pa = sw.add_port(PortConfig::Access(v(10))).unwrap();
    sw.add_port(PortConfig::Trunk {
        allowed: [v(10)].into_iter().collect(),
        native: None,
    })
    .unwrap();
    let mut nba = Netback::new(dom_a, NetbackConfig::default()).unwrap();
    let mut nbb = Netback::new(dom_b, NetbackConfig::default()).unwrap();
    let (txpage, rxpage) = (PageBuffer::new(), PageBuffer::new());
    let mut tx = Tx::new(&txpage);
    let mut rx = Rx::new(&rxpage);
    let mut gio_a = FakeGrants::for_dom(dom_a);
    let mut gio_b = FakeGrants::for_dom(dom_b);
    rx.post(&mut gio_b, 7, 100);
    let f = eth([0xff; 6], [2, 0, 0, 0, 0, 0xa], 1514);
    gio_a.grant(1, 0, &f);
    tx.push(&[slot(1, 0, 0, 1, 1514)]);
    let mut sent = Vec::new();
    nba.service_tx(&mut tx.back, &mut gio_a, |f, m| {
        sent.push((f.to_vec(), m));
        true
    })
    .unwrap();
    let mut out = [0u8; MAX_FRAME];
    let Forward::Deliver { to, .. } = sw.forward(pa, &sent[0].0, 0) else {
        panic!("dropped");
    };
    let n = to[0].egress.write(&sent[0].0, &mut out).unwrap();
    nbb.deliver_rx(&mut rx.back, &out[..n], sent[0].1, &mut gio_b)
        .unwrap();
    let r = rx.next().unwrap();
    assert_eq!((r.id, r.status), (7, 1518));
    let got = &gio_b.pages[&100][..1518];
    assert_eq!(&got[..12], &f[..12]);
    assert_eq!(&got[12..16], &[0x81, 0x00, 0x00, 10]);
    assert_eq!(&got[16..], &f[12..]);
}

#[test]
fn reset_forgets_a_half_sent_frame() {
    let mut gio = FakeGrants::default();
    let mut nb = netback();
    let data = bytes(100, 4);
    gio.grant(1, 0, &data[..50]);
    gio.grant(2, 0, &data[50..]);
    let old = PageBuffer::new();
    let mut tx = Tx::new(&old);
    // The first slot of a two-slot frame, then the rings go away.
    tx.push(&[slot(1, 0, NETTXF_MORE_DATA | NETTXF_EXTRA_INFO, 1, 100)]);
    let (r, frames) = service(&mut nb, &mut tx, &mut gio);
    assert_eq!((r.unwrap().frames, frames.len()), (0, 0));
    nb.reset();
    // New rings: a one-slot frame is a whole frame, answered alone.
    let new = PageBuffer::new();
    let mut tx = Tx::new(&new);
    let one = bytes(60, 5);
    gio.grant(3, 0, &one);
    tx.push(&[slot(3, 0, 0, 7, 60)]);
    let (r, frames) = service(&mut nb, &mut tx, &mut gio);
    assert_eq!(r.unwrap().frames, 1);
    assert_eq!(frames[0].0, one);
    assert_eq!(tx.responses(), vec![(7, NETIF_RSP_OKAY)]);
    assert_eq!(nb.stats().tx_frames, 1);
}

// ---- proptest fuzzing from the seed corpus (fuzz-seeds/netif) ------------------------

/// The generated netif seeds: tx request slots (12 bytes each) of well-formed packets
/// over grants 0..4.
fn netif_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let slots = |reqs: &[NetifTxRequest]| -> Vec<u8> {
        reqs.iter()
            .flat_map(|r| zerocopy::IntoBytes::as_bytes(r).to_vec())
            .collect()
    };
    vec![
        (
            "one-slot-packets.bin",
            slots(&[slot(0, 0, 0, 1, 60), slot(1, 100, 0, 2, 1514)]),
        ),
        (
            "chained-packet.bin",
            slots(&[
                // The first slot's size is the whole packet's.
                slot(2, 0, NETTXF_MORE_DATA | NETTXF_CSUM_BLANK, 3, 1400),
                slot(3, 0, 0, 4, 400),
            ]),
        ),
    ]
}

fn netif_seed_set() -> Vec<Vec<u8>> {
    crate::mutate::seed_set("netif", netif_seeds())
}

/// `FUZZ_SEEDS_WRITE=1` rewrites `fuzz-seeds/netif/` from [`netif_seeds`].
#[test]
fn write_netif_seeds() {
    crate::mutate::write_seeds("netif", netif_seeds());
}

/// Publishes `bytes` as tx slots and services until idle or a disconnect: frames in
/// bounds, at most `slots_per_call` slots per call, at most one service call per slot
/// plus one, never more slots consumed or answered than published. Returns the response
/// statuses and frame count, or `None` on a disconnect.
#[allow(clippy::type_complexity)]
fn netif_feed(
    bytes: &[u8],
) -> Result<Option<(Vec<i16>, usize)>, proptest::test_runner::TestCaseError> {
    use proptest::prop_assert;
    const PER_CALL: u32 = 8;
    let page = PageBuffer::new();
    let mut tx = Tx::new(&page);
    let mut gio = FakeGrants::default();
    for g in 0..4 {
        gio.grant(g, 0, &bytes_of(g));
    }
    let mut nb = Netback::new(
        FRONT,
        NetbackConfig {
            slots_per_call: PER_CALL,
        },
    )
    .unwrap();
    let reqs: Vec<NetifTxRequest> = bytes
        .chunks(12)
        .map(|c| {
            let mut b = [0u8; 12];
            b[..c.len()].copy_from_slice(c);
            zerocopy::FromBytes::read_from_bytes(&b[..]).unwrap()
        })
        .collect();
    let mut pushed = 0usize;
    for r in &reqs {
        if tx.front.is_full() {
            break;
        }
        tx.front.push_request(r).unwrap();
        pushed += 1;
    }
    tx.front.push_requests();
    let (mut consumed, mut frames) = (0usize, 0usize);
    let mut statuses = Vec::new();
    for call in 0.. {
        prop_assert!(
            call <= pushed + 1,
            "{call} service calls for {pushed} slots"
        );
        let (r, sent) = service(&mut nb, &mut tx, &mut gio);
        for (f, _) in &sent {
            prop_assert!((MIN_FRAME..=MAX_FRAME).contains(&f.len()));
        }
        frames += sent.len();
        statuses.extend(tx.responses().into_iter().map(|(_, s)| s));
        let Ok(r) = r else {
            return Ok(None);
        };
        prop_assert!(r.slots <= PER_CALL);
        consumed += r.slots as usize;
        prop_assert!(consumed <= pushed && statuses.len() <= consumed);
        if !r.more {
            break;
        }
    }
    Ok(Some((statuses, frames)))
}

fn bytes_of(g: u32) -> Vec<u8> {
    bytes(PAGE, g as u8)
}

/// Hostile tx slots from mutated valid packets and random bytes.
#[test]
fn netif_requests_fuzz() {
    let seeds = netif_seed_set();
    for s in &seeds {
        let (st, frames) = netif_feed(s).unwrap().expect("a seed disconnected");
        assert!(frames >= 1, "{st:?}");
        assert!(st.iter().all(|&s| s == 0), "{st:?}");
    }
    crate::mutate::run("netif", 2000, crate::mutate::recipe(40 * 12), |r| {
        netif_feed(&r.bytes(&seeds)).map(drop)
    });
}
