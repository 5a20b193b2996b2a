//! The backend side of a domain's console ring (`struct xencons_interface`), mapped into
//! the control domain: `out[]` drained into a [`LineBuffer`], typed input put into `in[]`.
//!
//! The page is shared with a hostile guest that may change any byte at any time: each
//! index is read once per call, only the copies are trusted, and a producer/consumer
//! distance larger than the ring is a protocol violation (the caller stops serving that
//! ring; nothing panics).

use super::{Cursor, LineBuffer, Output, Prefix};
use core::mem::offset_of;
use xen_pv_abi::console::{XENCONS_IN_SIZE, XENCONS_OUT_SIZE, XenconsInterface, in_slot, out_slot};

/// Access to a mapped ring page. The kernel implements it with volatile accesses and
/// fences on the mapped frame; tests with a byte array. Offsets are in bytes and always
/// inside the first 4 KiB (the callers here guarantee it).
pub trait SharedPage {
    /// Reads a little-endian u32 index (Acquire: the data it covers is read after it).
    fn load_u32(&self, offset: usize) -> u32;
    /// Writes a u32 index (Release: the data it covers was written before it).
    fn store_u32(&mut self, offset: usize, value: u32);
    /// Copies bytes out of the page.
    fn read_bytes(&self, offset: usize, out: &mut [u8]);
    /// Copies bytes into the page.
    fn write_bytes(&mut self, offset: usize, data: &[u8]);
}

/// A console ring broke its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolViolation {
    /// Which ring: `"out"` or `"in"`.
    pub ring: &'static str,
    /// The consumer index as read.
    pub cons: u32,
    /// The producer index as read.
    pub prod: u32,
}

const IN_OFF: usize = offset_of!(XenconsInterface, in_);
const OUT_OFF: usize = offset_of!(XenconsInterface, out);
const IN_CONS_OFF: usize = offset_of!(XenconsInterface, in_cons);
const IN_PROD_OFF: usize = offset_of!(XenconsInterface, in_prod);
const OUT_CONS_OFF: usize = offset_of!(XenconsInterface, out_cons);
const OUT_PROD_OFF: usize = offset_of!(XenconsInterface, out_prod);

/// Copies everything the guest produced in `out[]` into `line` (printing complete
/// lines), then publishes the new `out_cons`. Returns the number of bytes consumed.
pub fn drain<P: SharedPage + ?Sized, O: Output + ?Sized>(
    page: &mut P,
    out: &mut O,
    cursor: &mut Cursor,
    line: &mut LineBuffer,
    prefix: Prefix<'_>,
) -> Result<usize, ProtocolViolation> {
    let cons = page.load_u32(OUT_CONS_OFF);
    let prod = page.load_u32(OUT_PROD_OFF);
    let len = prod.wrapping_sub(cons) as usize;
    if len > XENCONS_OUT_SIZE {
        return Err(ProtocolViolation {
            ring: "out",
            cons,
            prod,
        });
    }
    if len == 0 {
        return Ok(0);
    }
    let mut bytes = [0u8; XENCONS_OUT_SIZE];
    // At most two contiguous pieces: up to the end of out[], then from its start.
    let first = out_slot(cons);
    let head = len.min(XENCONS_OUT_SIZE - first);
    page.read_bytes(OUT_OFF + first, &mut bytes[..head]);
    page.read_bytes(OUT_OFF, &mut bytes[head..len]);
    page.store_u32(OUT_CONS_OFF, prod);
    line.feed(out, cursor, prefix, &bytes[..len]);
    Ok(len)
}

/// Appends as much of `bytes` as fits into `in[]` and publishes `in_prod`; the rest is
/// dropped (as Xen drops serial input when its buffer is full). Returns how many bytes
/// went in.
pub fn feed_input<P: SharedPage + ?Sized>(
    page: &mut P,
    bytes: &[u8],
) -> Result<usize, ProtocolViolation> {
    let cons = page.load_u32(IN_CONS_OFF);
    let prod = page.load_u32(IN_PROD_OFF);
    let used = prod.wrapping_sub(cons) as usize;
    if used > XENCONS_IN_SIZE {
        return Err(ProtocolViolation {
            ring: "in",
            cons,
            prod,
        });
    }
    let n = bytes.len().min(XENCONS_IN_SIZE - used);
    if n == 0 {
        return Ok(0);
    }
    let first = in_slot(prod);
    let head = n.min(XENCONS_IN_SIZE - first);
    page.write_bytes(IN_OFF + first, &bytes[..head]);
    page.write_bytes(IN_OFF, &bytes[head..n]);
    // n ≤ XENCONS_IN_SIZE, so the cast is exact; the index is free-running.
    page.store_u32(IN_PROD_OFF, prod.wrapping_add(n as u32));
    Ok(n)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::string::String;
    use xen_pv_abi::DomId;

    /// Collects everything written.
    #[derive(Default)]
    pub(crate) struct Captured(pub(crate) String);

    impl Output for Captured {
        fn write(&mut self, bytes: &[u8]) {
            self.0.push_str(&String::from_utf8_lossy(bytes));
        }
    }

    /// A console page in a plain array.
    pub(crate) struct FakePage(pub(crate) std::boxed::Box<[u8; 4096]>);

    impl FakePage {
        pub(crate) fn new() -> Self {
            FakePage(std::boxed::Box::new([0; 4096]))
        }
        pub(crate) fn set(&mut self, off: usize, v: u32) {
            self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        pub(crate) fn get(&self, off: usize) -> u32 {
            u32::from_le_bytes(self.0[off..off + 4].try_into().unwrap())
        }
        /// Writes `bytes` into out[] at free-running index `at` and moves out_prod past.
        pub(crate) fn produce(&mut self, bytes: &[u8]) {
            let at = self.get(OUT_PROD_OFF);
            for (i, &b) in bytes.iter().enumerate() {
                self.0[OUT_OFF + out_slot(at.wrapping_add(i as u32))] = b;
            }
            self.set(OUT_PROD_OFF, at.wrapping_add(bytes.len() as u32));
        }
        /// What the guest would read from in[] (consuming it).
        pub(crate) fn consume_input(&mut self) -> std::vec::Vec<u8> {
            let (mut c, p) = (self.get(IN_CONS_OFF), self.get(IN_PROD_OFF));
            let mut v = std::vec::Vec::new();
            while c != p {
                v.push(self.0[IN_OFF + in_slot(c)]);
                c = c.wrapping_add(1);
            }
            self.set(IN_CONS_OFF, c);
            v
        }
    }

    impl SharedPage for FakePage {
        fn load_u32(&self, offset: usize) -> u32 {
            self.get(offset)
        }
        fn store_u32(&mut self, offset: usize, value: u32) {
            self.set(offset, value);
        }
        fn read_bytes(&self, offset: usize, out: &mut [u8]) {
            out.copy_from_slice(&self.0[offset..offset + out.len()]);
        }
        fn write_bytes(&mut self, offset: usize, data: &[u8]) {
            self.0[offset..offset + data.len()].copy_from_slice(data);
        }
    }

    const P: Prefix<'static> = Prefix {
        id: DomId(3),
        name: "guest",
    };

    fn drain_into(page: &mut FakePage, out: &mut Captured) -> Result<usize, ProtocolViolation> {
        let (mut c, mut l) = (Cursor::new(), LineBuffer::new());
        drain(page, out, &mut c, &mut l, P)
    }

    #[test]
    fn drain_copies_and_publishes_out_cons() {
        let mut page = FakePage::new();
        let mut out = Captured::default();
        page.produce(b"one\ntwo\n");
        assert_eq!(drain_into(&mut page, &mut out), Ok(8));
        assert_eq!(out.0, "[d3 guest] one\n[d3 guest] two\n");
        assert_eq!(page.get(OUT_CONS_OFF), 8);
        assert_eq!(drain_into(&mut page, &mut out), Ok(0));
    }

    #[test]
    fn drain_handles_index_and_slot_wraparound() {
        let mut page = FakePage::new();
        let mut out = Captured::default();
        let cons = u32::MAX - 2;
        page.set(OUT_CONS_OFF, cons);
        page.set(OUT_PROD_OFF, cons);
        page.produce(b"wrap\n");
        assert_eq!(drain_into(&mut page, &mut out), Ok(5));
        assert_eq!(out.0, "[d3 guest] wrap\n");
        assert_eq!(page.get(OUT_CONS_OFF), 2);
        // A completely full ring is fine.
        page.produce(&[b'y'; XENCONS_OUT_SIZE]);
        assert_eq!(drain_into(&mut page, &mut out), Ok(XENCONS_OUT_SIZE));
    }

    #[test]
    fn hostile_out_indices_are_a_violation_and_change_nothing() {
        let mut page = FakePage::new();
        let mut out = Captured::default();
        for (cons, prod) in [(0, 2049), (10, 5), (0, u32::MAX)] {
            page.set(OUT_CONS_OFF, cons);
            page.set(OUT_PROD_OFF, prod);
            assert_eq!(
                drain_into(&mut page, &mut out),
                Err(ProtocolViolation {
                    ring: "out",
                    cons,
                    prod
                })
            );
            assert_eq!(page.get(OUT_CONS_OFF), cons);
        }
        assert!(out.0.is_empty());
    }

    #[test]
    fn input_goes_in_wraps_and_stops_when_full() {
        let mut page = FakePage::new();
        page.set(IN_CONS_OFF, u32::MAX - 1);
        page.set(IN_PROD_OFF, u32::MAX - 1);
        assert_eq!(feed_input(&mut page, b"abc"), Ok(3));
        assert_eq!(page.consume_input(), b"abc");
        assert_eq!(page.get(IN_PROD_OFF), 1);
        // Fill to the brim: the excess is dropped.
        let big = [b'z'; XENCONS_IN_SIZE + 5];
        assert_eq!(feed_input(&mut page, &big), Ok(XENCONS_IN_SIZE));
        assert_eq!(feed_input(&mut page, b"q"), Ok(0));
        assert_eq!(page.consume_input().len(), XENCONS_IN_SIZE);
        assert_eq!(feed_input(&mut page, b"q"), Ok(1));
    }

    #[test]
    fn hostile_in_indices_are_a_violation() {
        let mut page = FakePage::new();
        for (cons, prod) in [(0, 1025), (10, 5), (u32::MAX, 2000)] {
            page.set(IN_CONS_OFF, cons);
            page.set(IN_PROD_OFF, prod);
            assert_eq!(
                feed_input(&mut page, b"x"),
                Err(ProtocolViolation {
                    ring: "in",
                    cons,
                    prod
                })
            );
            assert_eq!(page.get(IN_PROD_OFF), prod);
        }
    }
}
