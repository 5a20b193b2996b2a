//! The xenstore ring of one domain (`struct xenstore_domain_interface`). The guest side
//! of the connection is hostile: indices are read once per pass, checked, and never
//! trusted to stay put.

use super::Xenstored;
use alloc::vec::Vec;
use xen_pv_abi::DomId;
use xen_pv_abi::xenstore::{XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE, XsdSockmsg};
use zerocopy::FromBytes;

/// Offset of `req[]`.
pub const REQ_OFF: usize = 0;
/// Offset of `rsp[]`.
pub const RSP_OFF: usize = 1024;
/// Offset of `req_cons`.
pub const REQ_CONS: usize = 2048;
/// Offset of `req_prod`.
pub const REQ_PROD: usize = 2052;
/// Offset of `rsp_cons`.
pub const RSP_CONS: usize = 2056;
/// Offset of `rsp_prod`.
pub const RSP_PROD: usize = 2060;
/// Offset of `error`.
pub const ERROR: usize = 2072;
/// `XENSTORE_ERROR_RINGIDX`: the guest's indices were impossible.
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `XENSTORE_ERROR_PROTO`: the guest sent a malformed message.
pub const XENSTORE_ERROR_PROTO: u32 = 3;

const RING: u32 = XENSTORE_RING_SIZE as u32;
const HDR: usize = 16;

/// Access to one mapped xenstore ring page (`XenstoreDomainInterface`, 4 KiB).
/// The kernel implements it with volatile accesses on the mapped page; tests with a byte array.
pub trait RingPage {
    /// Loads a `u32` (Acquire semantics for indices).
    fn load_u32(&self, offset: usize) -> u32;
    /// Stores a `u32` (Release semantics).
    fn store_u32(&mut self, offset: usize, value: u32);
    /// Copies `out.len()` bytes from `offset`.
    fn read_bytes(&self, offset: usize, out: &mut [u8]);
    /// Copies `data` to `offset`.
    fn write_bytes(&mut self, offset: usize, data: &[u8]);
}

/// Per-connection reader state (a partly received message, a partly sent one).
#[derive(Default)]
pub struct RingConn {
    hdr: [u8; HDR],
    hdr_used: usize,
    body: Vec<u8>,
    /// Bytes of the store's front output message already in `rsp[]`.
    out_sent: usize,
}

/// Result of one [`RingConn::service`] pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serviced {
    /// True: an index moved, the guest must be sent an event.
    pub notify: bool,
}

/// Why a connection was dropped (only that connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// `req_prod - req_cons` exceeds the ring size.
    RequestIndices {
        /// `req_cons` as read.
        cons: u32,
        /// `req_prod` as read.
        prod: u32,
    },
    /// `rsp_prod - rsp_cons` exceeds the ring size.
    ResponseIndices {
        /// `rsp_cons` as read.
        cons: u32,
        /// `rsp_prod` as read.
        prod: u32,
    },
    /// A request header announced a payload above `XENSTORE_PAYLOAD_MAX`.
    Oversized {
        /// The announced length.
        len: u32,
    },
    /// The store dropped the connection (it flooded its output queue, or was dropped before).
    Dropped,
}

impl RingConn {
    /// A connection with nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every complete request from `req[]`, hands each to `store.request(domid, ..)`,
    /// then writes as much queued output for `domid` as fits into `rsp[]`. Bounded work:
    /// at most one ring's worth of bytes each way per call. On a violation the connection
    /// is dropped in `store`, the page's `error` field is set, and the kernel should stop
    /// servicing this ring.
    pub fn service(
        &mut self,
        page: &mut impl RingPage,
        store: &mut Xenstored,
        domid: DomId,
    ) -> Result<Serviced, Violation> {
        if store.is_dropped(domid) {
            return Err(Violation::Dropped);
        }
        let mut notify = false;
        if let Err(v) = self.read_requests(page, store, domid, &mut notify) {
            let code = match v {
                Violation::Oversized { .. } => XENSTORE_ERROR_PROTO,
                _ => XENSTORE_ERROR_RINGIDX,
            };
            page.store_u32(ERROR, code);
            store.drop_connection(domid);
            return Err(v);
        }
        if store.is_dropped(domid) {
            return Err(Violation::Dropped);
        }
        if let Err(v) = self.write_output(page, store, domid, &mut notify) {
            page.store_u32(ERROR, XENSTORE_ERROR_RINGIDX);
            store.drop_connection(domid);
            return Err(v);
        }
        Ok(Serviced { notify })
    }

    fn read_requests(
        &mut self,
        page: &mut impl RingPage,
        store: &mut Xenstored,
        domid: DomId,
        notify: &mut bool,
    ) -> Result<(), Violation> {
        let mut cons = page.load_u32(REQ_CONS);
        let prod = page.load_u32(REQ_PROD);
        let avail_total = prod.wrapping_sub(cons);
        if avail_total > RING {
            return Err(Violation::RequestIndices { cons, prod });
        }
        let mut avail = avail_total as usize;
        while avail > 0 {
            let starting = self.hdr_used == 0;
            if starting && !store.accepts_request(domid) {
                break;
            }
            let (need, in_hdr) = if self.hdr_used < HDR {
                (HDR - self.hdr_used, true)
            } else {
                (self.expected_len() - self.body.len(), false)
            };
            let pos = (cons % RING) as usize;
            let chunk = need.min(avail).min(XENSTORE_RING_SIZE - pos);
            if in_hdr {
                page.read_bytes(
                    REQ_OFF + pos,
                    &mut self.hdr[self.hdr_used..self.hdr_used + chunk],
                );
                self.hdr_used += chunk;
            } else {
                if self.body.try_reserve(chunk).is_err() {
                    // Out of memory: leave the bytes in the ring, retry on a later pass.
                    break;
                }
                let start = self.body.len();
                self.body.resize(start + chunk, 0);
                page.read_bytes(REQ_OFF + pos, &mut self.body[start..]);
            }
            cons = cons.wrapping_add(chunk as u32);
            avail -= chunk;
            if in_hdr && self.hdr_used == HDR {
                let len = self.expected_len_raw();
                if len as usize > XENSTORE_PAYLOAD_MAX {
                    return Err(Violation::Oversized { len });
                }
                self.body.clear();
            }
            if self.hdr_used == HDR && self.body.len() == self.expected_len() {
                let Ok(h) = XsdSockmsg::read_from_bytes(&self.hdr[..]) else {
                    return Err(Violation::Oversized { len: 0 });
                };
                store.request(domid, h, &self.body);
                self.hdr_used = 0;
                self.body.clear();
                if self.body.capacity() > 4 * XENSTORE_RING_SIZE {
                    self.body = Vec::new();
                }
            }
        }
        if cons != page.load_u32(REQ_CONS) {
            page.store_u32(REQ_CONS, cons);
            *notify = true;
        }
        Ok(())
    }

    fn expected_len_raw(&self) -> u32 {
        u32::from_ne_bytes([self.hdr[12], self.hdr[13], self.hdr[14], self.hdr[15]])
    }

    fn expected_len(&self) -> usize {
        self.expected_len_raw() as usize
    }

    fn write_output(
        &mut self,
        page: &mut impl RingPage,
        store: &mut Xenstored,
        domid: DomId,
        notify: &mut bool,
    ) -> Result<(), Violation> {
        let cons = page.load_u32(RSP_CONS);
        let mut prod = page.load_u32(RSP_PROD);
        let used = prod.wrapping_sub(cons);
        if used > RING {
            return Err(Violation::ResponseIndices { cons, prod });
        }
        let mut space = (RING - used) as usize;
        let start = prod;
        while space > 0 {
            let Some(msg) = store.peek_output(domid) else {
                break;
            };
            let rest = msg.get(self.out_sent..).unwrap_or(&[]);
            let pos = (prod % RING) as usize;
            let chunk = rest.len().min(space).min(XENSTORE_RING_SIZE - pos);
            page.write_bytes(RSP_OFF + pos, &rest[..chunk]);
            prod = prod.wrapping_add(chunk as u32);
            space -= chunk;
            self.out_sent += chunk;
            if self.out_sent >= msg.len() {
                store.pop_output(domid);
                self.out_sent = 0;
            }
        }
        if prod != start {
            page.store_u32(RSP_PROD, prod);
            *notify = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstored::Limits;
    use crate::xenstored::wire::*;

    /// A ring page as a plain byte array.
    pub struct ArrayPage(pub [u8; 4096]);

    impl RingPage for ArrayPage {
        fn load_u32(&self, o: usize) -> u32 {
            u32::from_ne_bytes(self.0[o..o + 4].try_into().unwrap())
        }
        fn store_u32(&mut self, o: usize, v: u32) {
            self.0[o..o + 4].copy_from_slice(&v.to_ne_bytes());
        }
        fn read_bytes(&self, o: usize, out: &mut [u8]) {
            out.copy_from_slice(&self.0[o..o + out.len()]);
        }
        fn write_bytes(&mut self, o: usize, d: &[u8]) {
            self.0[o..o + d.len()].copy_from_slice(d);
        }
    }

    /// The guest side: pushes request bytes, pulls reply bytes.
    fn push(p: &mut ArrayPage, bytes: &[u8]) {
        let mut prod = p.load_u32(REQ_PROD);
        for &b in bytes {
            p.0[REQ_OFF + (prod % RING) as usize] = b;
            prod = prod.wrapping_add(1);
        }
        p.store_u32(REQ_PROD, prod);
    }

    fn pull(p: &mut ArrayPage) -> Vec<u8> {
        let mut cons = p.load_u32(RSP_CONS);
        let prod = p.load_u32(RSP_PROD);
        let mut out = Vec::new();
        while cons != prod {
            out.push(p.0[RSP_OFF + (cons % RING) as usize]);
            cons = cons.wrapping_add(1);
        }
        p.store_u32(RSP_CONS, cons);
        out
    }

    fn msg(ty: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [ty, req_id, 0, payload.len() as u32] {
            v.extend_from_slice(&x.to_ne_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    /// Splits a reply stream into (type, req_id, payload) messages.
    fn split(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= 16 {
            let w = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
            let len = w(12) as usize;
            out.push((w(0), w(4), b[16..16 + len].to_vec()));
            b = &b[16 + len..];
        }
        out
    }

    fn setup(start: u32) -> (ArrayPage, Xenstored, RingConn) {
        let mut p = ArrayPage([0; 4096]);
        for o in [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD] {
            p.store_u32(o, start);
        }
        let mut s = Xenstored::new(Limits::default());
        s.introduce(DomId(1)).unwrap();
        s.mkdir_local("/local/domain/1").unwrap();
        s.set_perms_local(
            "/local/domain/1",
            &[crate::xenstored::Perm {
                domid: DomId(1),
                access: crate::xenstored::Access::None,
            }],
        )
        .unwrap();
        s.write_local("/local/domain/1/name", b"guest").unwrap();
        (p, s, RingConn::new())
    }

    #[test]
    fn request_reply_across_index_wrap() {
        // Indices start just below 2^32 so both rings wrap the u32 and the array.
        let (mut p, mut s, mut c) = setup(u32::MAX - 5);
        for i in 0..50u32 {
            push(&mut p, &msg(XS_READ, i, b"name\0"));
            let r = c.service(&mut p, &mut s, DomId(1)).unwrap();
            assert!(r.notify);
            let got = split(&pull(&mut p));
            assert_eq!(got, vec![(XS_READ, i, b"guest".to_vec())]);
        }
    }

    #[test]
    fn partial_messages_are_buffered() {
        let (mut p, mut s, mut c) = setup(0);
        let m = msg(XS_READ, 7, b"name\0");
        for b in &m {
            push(&mut p, core::slice::from_ref(b));
            c.service(&mut p, &mut s, DomId(1)).unwrap();
        }
        assert_eq!(split(&pull(&mut p)), vec![(XS_READ, 7, b"guest".to_vec())]);
    }

    #[test]
    fn output_larger_than_ring_is_sent_in_pieces() {
        let (mut p, mut s, mut c) = setup(100);
        let big = vec![b'x'; 2000];
        s.write_local("/local/domain/1/big", &big).unwrap();
        push(&mut p, &msg(XS_READ, 1, b"big\0"));
        let mut stream = Vec::new();
        for _ in 0..4 {
            c.service(&mut p, &mut s, DomId(1)).unwrap();
            stream.extend(pull(&mut p));
        }
        assert_eq!(split(&stream), vec![(XS_READ, 1, big)]);
    }

    #[test]
    fn hostile_request_indices_drop_only_that_connection() {
        let (mut p, mut s, mut c) = setup(0);
        s.introduce(DomId(2)).unwrap();
        p.store_u32(REQ_PROD, RING + 1);
        let e = c.service(&mut p, &mut s, DomId(1)).unwrap_err();
        assert_eq!(
            e,
            Violation::RequestIndices {
                cons: 0,
                prod: RING + 1
            }
        );
        assert_eq!(p.load_u32(ERROR), XENSTORE_ERROR_RINGIDX);
        assert!(s.is_dropped(DomId(1)));
        assert!(!s.is_dropped(DomId(2)));
        // Later passes keep refusing; the store ignores the domain.
        assert_eq!(c.service(&mut p, &mut s, DomId(1)), Err(Violation::Dropped));
        // Consumer "ahead" of producer is the same violation (difference wraps).
        let (mut p, mut s, mut c) = setup(10);
        p.store_u32(REQ_PROD, 9);
        assert!(matches!(
            c.service(&mut p, &mut s, DomId(1)),
            Err(Violation::RequestIndices { .. })
        ));
    }

    #[test]
    fn hostile_response_indices_are_a_violation() {
        let (mut p, mut s, mut c) = setup(0);
        p.store_u32(RSP_CONS, 5000);
        push(&mut p, &msg(XS_READ, 1, b"name\0"));
        assert!(matches!(
            c.service(&mut p, &mut s, DomId(1)),
            Err(Violation::ResponseIndices { .. })
        ));
        assert!(s.is_dropped(DomId(1)));
    }

    #[test]
    fn oversized_header_is_a_protocol_violation() {
        let (mut p, mut s, mut c) = setup(0);
        let mut m = msg(XS_READ, 1, b"");
        m[12..16].copy_from_slice(&4097u32.to_ne_bytes());
        push(&mut p, &m);
        assert_eq!(
            c.service(&mut p, &mut s, DomId(1)),
            Err(Violation::Oversized { len: 4097 })
        );
        assert_eq!(p.load_u32(ERROR), XENSTORE_ERROR_PROTO);
    }

    #[test]
    fn a_full_reply_ring_and_unread_replies_stop_request_reading() {
        let (mut p, mut s, mut c) = setup(0);
        // Replies of 216 bytes: four fill rsp[].
        s.write_local("/local/domain/1/name", &[b'g'; 200]).unwrap();
        // 40 small reads (21 bytes each) fill most of req[]; replies are not consumed.
        for i in 0..40 {
            push(&mut p, &msg(XS_READ, i, b"name\0"));
        }
        c.service(&mut p, &mut s, DomId(1)).unwrap();
        // `outstanding_per_domain` requests were taken, four replies left for the ring.
        assert_eq!(p.load_u32(REQ_CONS), 20 * 21);
        c.service(&mut p, &mut s, DomId(1)).unwrap();
        assert_eq!(p.load_u32(REQ_CONS), 24 * 21);
        c.service(&mut p, &mut s, DomId(1)).unwrap();
        assert_eq!(p.load_u32(REQ_CONS), 24 * 21);
        let mut stream = Vec::new();
        for i in 40..60 {
            stream.extend(pull(&mut p));
            push(&mut p, &msg(XS_READ, i, b"name\0"));
            c.service(&mut p, &mut s, DomId(1)).unwrap();
        }
        for _ in 0..30 {
            stream.extend(pull(&mut p));
            c.service(&mut p, &mut s, DomId(1)).unwrap();
        }
        let replies = split(&stream);
        let ids: Vec<u32> = replies.iter().map(|r| r.1).collect();
        assert_eq!(ids, (0..60).collect::<Vec<_>>());
    }

    #[test]
    fn uninteresting_pass_does_not_notify() {
        let (mut p, mut s, mut c) = setup(3);
        assert_eq!(
            c.service(&mut p, &mut s, DomId(1)),
            Ok(Serviced { notify: false })
        );
    }
}
