//! The client against a small xenstored that answers over a ring in host memory.

extern crate std;

use super::*;
use crate::xenstore::XS_GET_DOMAIN_PATH;
use core::cell::{Cell, RefCell};
use std::boxed::Box;
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;
use zerocopy::FromZeros;

/// A fake xenstored: a flat map of nodes, served over `ring` whenever the client waits.
struct Server {
    ring: RawStoreRing,
    nodes: BTreeMap<String, Vec<u8>>,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    /// Request ids seen, in order.
    req_ids: Vec<u32>,
    /// Watch events to send before the reply to each of the next requests.
    events_before_reply: usize,
    /// Transaction ends to refuse with EAGAIN.
    eagain: u32,
    /// Also send a reply with a wrong request id before each reply.
    stale_first: bool,
    /// Bytes of reply released per wait (to split messages over many waits).
    chunk: usize,
    next_tx: u32,
}

fn msg(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let h = XsdSockmsg {
        type_: ty,
        req_id,
        tx_id,
        len: payload.len() as u32,
    };
    let mut m = h.as_bytes().to_vec();
    m.extend_from_slice(payload);
    m
}

fn event(path: &str, token: &str) -> Vec<u8> {
    msg(
        XS_WATCH_EVENT,
        0,
        0,
        std::format!("{path}\0{token}\0").as_bytes(),
    )
}

impl Server {
    fn new(ring: RawStoreRing) -> Self {
        Server {
            ring,
            nodes: BTreeMap::new(),
            inbox: Vec::new(),
            outbox: Vec::new(),
            req_ids: Vec::new(),
            events_before_reply: 0,
            eagain: 0,
            stale_first: false,
            chunk: usize::MAX,
            next_tx: 40,
        }
    }

    /// One round: take requests, answer complete ones, push out what fits.
    fn serve(&mut self) {
        let r = self.ring;
        let (cons, prod) = (
            r.load_u32(XS_REQ_CONS_OFFSET),
            r.load_u32(XS_REQ_PROD_OFFSET),
        );
        let mut c = cons;
        while c != prod {
            self.inbox.push(r.load_u8(XS_REQ_OFFSET + xs_slot(c)));
            c = c.wrapping_add(1);
        }
        r.store_u32(XS_REQ_CONS_OFFSET, prod);
        while self.inbox.len() >= HDR {
            let h = XsdSockmsg::read_from_bytes(&self.inbox[..HDR]).unwrap();
            let end = HDR + h.len as usize;
            if self.inbox.len() < end {
                break;
            }
            let payload: Vec<u8> = self.inbox[HDR..end].to_vec();
            self.inbox.drain(..end);
            self.handle(h, &payload);
        }
        self.flush();
    }

    fn flush(&mut self) {
        let r = self.ring;
        let (cons, prod) = (
            r.load_u32(XS_RSP_CONS_OFFSET),
            r.load_u32(XS_RSP_PROD_OFFSET),
        );
        let room = (RING - prod.wrapping_sub(cons)) as usize;
        let n = room.min(self.outbox.len()).min(self.chunk);
        for (i, b) in self.outbox.drain(..n).enumerate() {
            r.store_u8(XS_RSP_OFFSET + xs_slot(prod.wrapping_add(i as u32)), b);
        }
        r.store_u32(XS_RSP_PROD_OFFSET, prod.wrapping_add(n as u32));
    }

    fn handle(&mut self, h: XsdSockmsg, payload: &[u8]) {
        self.req_ids.push(h.req_id);
        for i in 0..self.events_before_reply {
            self.outbox
                .extend(event(&std::format!("before/{}/{i}", h.req_id), "tok"));
        }
        if self.stale_first {
            self.outbox
                .extend(msg(h.type_, h.req_id.wrapping_sub(1), h.tx_id, b"stale"));
        }
        let (path, rest) = split_nul(payload);
        let path = String::from_utf8(path.to_vec()).unwrap();
        let reply: Result<Vec<u8>, &str> = match h.type_ {
            XS_READ => self.nodes.get(&path).cloned().ok_or("ENOENT"),
            XS_WRITE => {
                self.nodes.insert(path, rest.to_vec());
                Ok(b"OK\0".to_vec())
            }
            XS_MKDIR => {
                self.nodes.entry(path).or_default();
                Ok(b"OK\0".to_vec())
            }
            XS_RM => {
                let prefix = std::format!("{path}/");
                self.nodes
                    .retain(|k, _| *k != path && !k.starts_with(&prefix));
                Ok(b"OK\0".to_vec())
            }
            XS_DIRECTORY => {
                let prefix = std::format!("{path}/");
                // Parents exist implicitly in this flat map.
                let children: std::collections::BTreeSet<&str> = self
                    .nodes
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(|c| c.split('/').next().unwrap())
                    .collect();
                let mut out = Vec::new();
                for c in children {
                    out.extend_from_slice(c.as_bytes());
                    out.push(0);
                }
                Ok(out)
            }
            XS_WATCH => {
                let (token, _) = split_nul(rest);
                let token = String::from_utf8(token.to_vec()).unwrap();
                // Reply first, then the initial firing, as xenstored does.
                self.outbox.extend(msg(XS_WATCH, h.req_id, 0, b"OK\0"));
                self.outbox.extend(event(&path, &token));
                return;
            }
            XS_UNWATCH => Ok(b"OK\0".to_vec()),
            XS_TRANSACTION_START => {
                self.next_tx += 1;
                Ok(std::format!("{}\0", self.next_tx).into_bytes())
            }
            XS_TRANSACTION_END => {
                if self.eagain > 0 {
                    self.eagain -= 1;
                    Err("EAGAIN")
                } else {
                    Ok(b"OK\0".to_vec())
                }
            }
            _ => Err("ENOSYS"),
        };
        let out = match reply {
            Ok(p) => msg(h.type_, h.req_id, h.tx_id, &p),
            Err(e) => msg(
                XS_ERROR,
                h.req_id,
                h.tx_id,
                std::format!("{e}\0").as_bytes(),
            ),
        };
        self.outbox.extend(out);
    }
}

/// A zeroed ring page on the heap, freed at the end of the test.
struct Page(*mut XenstoreDomainInterface);

impl Page {
    fn new() -> Self {
        Page(Box::into_raw(Box::new(
            XenstoreDomainInterface::new_zeroed(),
        )))
    }
    fn ring(&self) -> RawStoreRing {
        // SAFETY: the box lives until `drop`, and is only accessed through rings.
        unsafe { RawStoreRing::new(self.0) }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw` in `new`, freed once.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

type Client<'a> =
    XenbusClient<RawStoreRing, Box<dyn FnMut() + 'a>, Box<dyn FnMut() -> Result<(), Errno> + 'a>>;

fn client<'a>(page: &Page, server: &'a RefCell<Server>, kicks: &'a Cell<u32>) -> Client<'a> {
    XenbusClient::new(
        page.ring(),
        Box::new(move || kicks.set(kicks.get() + 1)),
        Box::new(move || {
            server.borrow_mut().serve();
            Ok(())
        }),
    )
}

#[test]
fn read_write_mkdir_directory_rm() {
    let page = Page::new();
    let server = RefCell::new(Server::new(page.ring()));
    let kicks = Cell::new(0);
    let mut xs = client(&page, &server, &kicks);
    let t = TxId::NONE;
    xs.write(t, "device/vif/0/state", b"1").unwrap();
    xs.write(t, "device/vif/0/mac", b"00:16:3e:00:00:01")
        .unwrap();
    xs.mkdir(t, "device/vif/1").unwrap();
    assert_eq!(xs.read(t, "device/vif/0/state").unwrap(), b"1");
    let names: Vec<Vec<u8>> = xs
        .directory(t, "device/vif")
        .unwrap()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(names, [b"0".to_vec(), b"1".to_vec()]);
    xs.rm(t, "device/vif/0").unwrap();
    assert_eq!(xs.read(t, "device/vif/0/mac").unwrap_err(), Errno::ENOENT);
    assert_eq!(xs.directory(t, "nothing").unwrap().count(), 0);
    // Unknown request types come back as the server's errno.
    assert_eq!(
        xs.request(XS_GET_DOMAIN_PATH, t, &[b"0\0"]).unwrap_err(),
        Errno::ENOSYS
    );
    assert!(kicks.get() > 0, "the server was notified");
    // Every request had its own id.
    let ids = server.borrow().req_ids.clone();
    let mut uniq = ids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), ids.len());
    assert!(!xs.is_broken());
}

#[test]
fn payloads_larger_than_the_ring_stream_through_it_and_indices_may_start_anywhere() {
    let page = Page::new();
    // Indices near wrap-around: guests must not assume they start at 0.
    for off in [
        XS_REQ_CONS_OFFSET,
        XS_REQ_PROD_OFFSET,
        XS_RSP_CONS_OFFSET,
        XS_RSP_PROD_OFFSET,
    ] {
        page.ring().store_u32(off, u32::MAX - 100);
    }
    let server = RefCell::new(Server::new(page.ring()));
    server.borrow_mut().chunk = 700;
    let kicks = Cell::new(0);
    let mut xs = client(&page, &server, &kicks);
    let value: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    xs.write(TxId::NONE, "big", &value).unwrap();
    assert_eq!(xs.read(TxId::NONE, "big").unwrap(), &value[..]);
    // The payload limit counts the path and its NUL too.
    let too_big = std::vec![b'x'; XENSTORE_PAYLOAD_MAX];
    assert_eq!(
        xs.write(TxId::NONE, "p", &too_big).unwrap_err(),
        Errno::E2BIG
    );
    assert_eq!(xs.read(TxId::NONE, "").unwrap_err(), Errno::EINVAL);
    assert_eq!(xs.read(TxId::NONE, "a\0b").unwrap_err(), Errno::EINVAL);
    assert!(!xs.is_broken());
    assert_eq!(xs.read(TxId::NONE, "big").unwrap().len(), 4000);
}

#[test]
fn watch_events_before_a_reply_are_buffered_and_delivered_in_order() {
    let page = Page::new();
    let server = RefCell::new(Server::new(page.ring()));
    let kicks = Cell::new(0);
    let mut xs = client(&page, &server, &kicks);
    xs.watch("backend/vif/1/0", "be").unwrap();
    server.borrow_mut().nodes.insert("a".into(), b"v".to_vec());
    server.borrow_mut().events_before_reply = 2;
    assert_eq!(xs.read(TxId::NONE, "a").unwrap(), b"v");
    server.borrow_mut().events_before_reply = 0;
    let read_id = *server.borrow().req_ids.last().unwrap();
    let mut seen = Vec::new();
    while let Some(ev) = xs.next_watch_event().unwrap() {
        seen.push((ev.path.to_vec(), ev.token.to_vec()));
    }
    let p = |s: String| s.into_bytes();
    assert_eq!(
        seen,
        [
            (b"backend/vif/1/0".to_vec(), b"be".to_vec()),
            (p(std::format!("before/{read_id}/0")), b"tok".to_vec()),
            (p(std::format!("before/{read_id}/1")), b"tok".to_vec()),
        ]
    );
    // Events arriving while idle are picked up without a request.
    {
        let mut s = server.borrow_mut();
        s.outbox.extend(event("late", "t2"));
        s.flush();
    }
    let ev = xs.next_watch_event().unwrap().unwrap();
    assert_eq!((ev.path, ev.token), (&b"late"[..], &b"t2"[..]));
    assert_eq!(xs.next_watch_event().unwrap(), None);
    xs.unwatch("backend/vif/1/0", "be").unwrap();
}

#[test]
fn too_many_buffered_events_are_reported_once_as_enobufs() {
    let page = Page::new();
    let server = RefCell::new(Server::new(page.ring()));
    let kicks = Cell::new(0);
    let mut xs = client(&page, &server, &kicks);
    server.borrow_mut().nodes.insert("a".into(), b"v".to_vec());
    // ~30-byte events: 300 of them exceed the 4 KiB buffer.
    server.borrow_mut().events_before_reply = 300;
    assert_eq!(xs.read(TxId::NONE, "a").unwrap(), b"v");
    assert_eq!(xs.next_watch_event().unwrap_err(), Errno::ENOBUFS);
    let mut n = 0;
    while xs.next_watch_event().unwrap().is_some() {
        n += 1;
    }
    assert!(n > 50 && n < 300, "{n} events kept");
}

#[test]
fn transaction_end_surfaces_eagain_and_a_retry_commits() {
    let page = Page::new();
    let server = RefCell::new(Server::new(page.ring()));
    server.borrow_mut().eagain = 1;
    let kicks = Cell::new(0);
    let mut xs = client(&page, &server, &kicks);
    let mut attempts = 0;
    let tx = loop {
        attempts += 1;
        let tx = xs.transaction_start().unwrap();
        xs.write(tx, "device/vbd/0/state", b"3").unwrap();
        match xs.transaction_end(tx, true) {
            Err(Errno::EAGAIN) => continue,
            r => {
                r.unwrap();
                break tx;
            }
        }
    };
    assert_eq!((attempts, tx), (2, TxId(42)));
    let tx = xs.transaction_start().unwrap();
    xs.transaction_end(tx, false).unwrap();
    assert_eq!(errno_from_xs_error(b"EAGAIN\0"), Errno::EAGAIN);
    assert_eq!(errno_from_xs_error(b"ENOENT"), Errno::ENOENT);
    assert_eq!(errno_from_xs_error(b"EWHATEVER\0"), Errno::EINVAL);
    assert_eq!(errno_from_xs_error(b""), Errno::EINVAL);
}

#[test]
fn stale_replies_with_another_request_id_are_discarded() {
    let page = Page::new();
    let server = RefCell::new(Server::new(page.ring()));
    server.borrow_mut().stale_first = true;
    server
        .borrow_mut()
        .nodes
        .insert("a".into(), b"fresh".to_vec());
    let kicks = Cell::new(0);
    let mut xs = client(&page, &server, &kicks);
    assert_eq!(xs.read(TxId::NONE, "a").unwrap(), b"fresh");
    assert_eq!(xs.read(TxId::NONE, "a").unwrap(), b"fresh");
}

#[test]
fn a_bogus_rsp_prod_breaks_the_connection_without_reading_out_of_bounds() {
    let page = Page::new();
    let ring = page.ring();
    let kicks = Cell::new(0);
    let waits = Cell::new(0);
    let mut xs = XenbusClient::new(
        ring,
        || kicks.set(kicks.get() + 1),
        || {
            waits.set(waits.get() + 1);
            // The "server" claims 5000 bytes of reply.
            let cons = ring.load_u32(XS_RSP_CONS_OFFSET);
            ring.store_u32(XS_RSP_PROD_OFFSET, cons.wrapping_add(5000));
            Ok(())
        },
    );
    assert_eq!(xs.read(TxId::NONE, "x").unwrap_err(), Errno::EIO);
    assert!(xs.is_broken());
    assert_eq!(waits.get(), 1);
    assert_eq!(xs.read(TxId::NONE, "x").unwrap_err(), Errno::EIO);
    assert_eq!(xs.next_watch_event().unwrap_err(), Errno::EIO);
    assert_eq!(waits.get(), 1, "no further waiting once broken");
}

#[test]
fn bogus_req_cons_and_oversized_headers_also_break_it() {
    // req_cons ahead of req_prod: the ring would look more than full.
    let page = Page::new();
    let ring = page.ring();
    ring.store_u32(XS_REQ_CONS_OFFSET, 2000);
    let mut xs = XenbusClient::new(ring, || {}, || Ok(()));
    assert_eq!(xs.read(TxId::NONE, "x").unwrap_err(), Errno::EIO);

    // A reply header announcing more than XENSTORE_PAYLOAD_MAX bytes.
    let page = Page::new();
    let ring = page.ring();
    let mut xs = XenbusClient::new(
        ring,
        || {},
        || {
            let h = msg(XS_READ, 1, 0, b"");
            let mut h = XsdSockmsg::read_from_bytes(&h[..]).unwrap();
            h.len = 5000;
            for (i, b) in h.as_bytes().iter().enumerate() {
                ring.store_u8(XS_RSP_OFFSET + i, *b);
            }
            ring.store_u32(XS_RSP_PROD_OFFSET, HDR as u32);
            Ok(())
        },
    );
    assert_eq!(xs.read(TxId::NONE, "x").unwrap_err(), Errno::EIO);
    assert!(xs.is_broken());

    // A reply of the wrong type to our request.
    let page = Page::new();
    let ring = page.ring();
    let mut xs = XenbusClient::new(
        ring,
        || {},
        || {
            for (i, b) in msg(XS_WRITE, 1, 0, b"OK\0").iter().enumerate() {
                ring.store_u8(XS_RSP_OFFSET + i, *b);
            }
            ring.store_u32(XS_RSP_PROD_OFFSET, HDR as u32 + 3);
            Ok(())
        },
    );
    assert_eq!(xs.read(TxId::NONE, "x").unwrap_err(), Errno::EIO);
}

#[test]
fn a_silent_server_times_out_after_the_wait_budget() {
    let page = Page::new();
    let waits = Cell::new(0u32);
    let mut xs = XenbusClient::new(
        page.ring(),
        || {},
        || {
            waits.set(waits.get() + 1);
            Ok(())
        },
    );
    xs.set_max_waits(10);
    assert_eq!(xs.read(TxId::NONE, "x").unwrap_err(), Errno::ETIMEDOUT);
    assert_eq!(waits.get(), 10);
    // The request was sent whole, so the connection is still usable; a waiter's own
    // error is passed through.
    assert!(!xs.is_broken());
    let mut xs = XenbusClient::new(page.ring(), || {}, || Err(Errno::EINTR));
    assert_eq!(xs.read(TxId::NONE, "x").unwrap_err(), Errno::EINTR);
}

#[test]
fn a_server_that_never_consumes_requests_times_out_and_breaks_the_half_sent_one() {
    let page = Page::new();
    let mut xs = XenbusClient::new(page.ring(), || {}, || Ok(()));
    xs.set_max_waits(3);
    let big = std::vec![b'v'; 2000];
    assert_eq!(
        xs.write(TxId::NONE, "p", &big).unwrap_err(),
        Errno::ETIMEDOUT
    );
    assert!(xs.is_broken());
}

#[test]
fn a_flooding_server_cannot_keep_a_request_busy() {
    let page = Page::new();
    let ring = page.ring();
    let mut xs = XenbusClient::new(
        ring,
        || {},
        || {
            // Endless stale replies (request id 999), one per wait.
            let prod = ring.load_u32(XS_RSP_PROD_OFFSET);
            for (i, b) in msg(XS_READ, 999, 0, b"").iter().enumerate() {
                ring.store_u8(XS_RSP_OFFSET + xs_slot(prod.wrapping_add(i as u32)), *b);
            }
            ring.store_u32(XS_RSP_PROD_OFFSET, prod.wrapping_add(HDR as u32));
            Ok(())
        },
    );
    assert_eq!(xs.read(TxId::NONE, "x").unwrap_err(), Errno::ETIMEDOUT);
}

#[test]
fn directory_skips_empty_names_and_parse_rejects_junk() {
    let d = Directory {
        rest: b"a\0\0bc\0d",
    };
    assert_eq!(d.collect::<Vec<_>>(), [&b"a"[..], b"bc", b"d"]);
    assert_eq!(parse_u32(b"17\0"), Some(17));
    assert_eq!(parse_u32(b"4294967296"), None);
    assert_eq!(parse_u32(b"1x"), None);
    assert_eq!(parse_u32(b"\0"), None);
}

/// Deterministic xorshift for the randomized test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_chunking_and_interleaved_events_keep_replies_and_event_order_intact() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let page = Page::new();
        let start = rng.next() as u32;
        for off in [XS_REQ_CONS_OFFSET, XS_REQ_PROD_OFFSET] {
            page.ring().store_u32(off, start);
        }
        for off in [XS_RSP_CONS_OFFSET, XS_RSP_PROD_OFFSET] {
            page.ring().store_u32(off, start.wrapping_add(77));
        }
        let server = RefCell::new(Server::new(page.ring()));
        let kicks = Cell::new(0);
        let mut xs = client(&page, &server, &kicks);
        let mut expected_events = Vec::new();
        for i in 0..30 {
            let n_events = rng.below(3) as usize;
            {
                let mut s = server.borrow_mut();
                s.chunk = 1 + rng.below(400) as usize;
                s.events_before_reply = n_events;
            }
            let len = rng.below(3000) as usize;
            let value: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let path = std::format!("k/{i}");
            xs.write(TxId::NONE, &path, &value).unwrap();
            let write_id = *server.borrow().req_ids.last().unwrap();
            for e in 0..n_events {
                expected_events.push(std::format!("before/{write_id}/{e}").into_bytes());
            }
            server.borrow_mut().events_before_reply = 0;
            assert_eq!(
                xs.read(TxId::NONE, &path).unwrap(),
                &value[..],
                "seed {seed}"
            );
            if rng.below(4) == 0 {
                while let Some(ev) = xs.next_watch_event().unwrap() {
                    assert_eq!(ev.path, &expected_events.remove(0)[..], "seed {seed}");
                }
            }
        }
        while let Some(ev) = xs.next_watch_event().unwrap() {
            assert_eq!(ev.path, &expected_events.remove(0)[..]);
        }
        assert!(expected_events.is_empty(), "seed {seed}");
        assert!(!xs.is_broken());
    }
}
