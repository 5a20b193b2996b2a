//! A tiny xenstore in the hypervisor: it answers each domU's requests on its xenstore
//! ring (`io/xs_wire.h`) from a fixed, read-only tree of the domain's own home path.
//!
//! The tree of domain `<id>` is `/local/domain/<id>` with the leaves `domid` and `name`.
//! Relative paths are resolved under the home path, as xenstored does. Answered:
//! `XS_READ`, `XS_DIRECTORY` (missing nodes: `XS_ERROR "ENOENT"`), `XS_GET_DOMAIN_PATH`.
//! Writes (`XS_WRITE`, `XS_MKDIR`, `XS_RM`, `XS_SET_PERMS`) are `EACCES`; everything else
//! `ENOSYS`. Replies echo `req_id` and `tx_id`.
//!
//! The ring belongs to the guest, so every index is hostile: a producer more than a ring
//! ahead of the consumer, a reply ring consumer ahead of what we produced, or a message
//! longer than `XENSTORE_PAYLOAD_MAX` is a protocol violation and crashes the domain. A
//! request is consumed only once its whole reply fits in the reply ring; otherwise it
//! waits there for the next kick or timer tick. A message too long to ever sit whole in
//! the 1 KiB ring is read past as it arrives and answered `E2BIG`.

use crate::dlog::hv_debug;
use crate::hv::Hypervisor;
use crate::hypercall::handle::CrashReason;
use crate::platform::{BadMaddr, MachineMemory, Platform};
use core::fmt::Write as _;
use core::mem::offset_of;
use xen_pv_abi::xenstore::{
    XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE, XS_DIRECTORY, XS_ERROR, XS_READ, XS_WRITE,
    XenstoreDomainInterface, XsdSockmsg,
};
use xen_pv_abi::{DomId, Mfn};
use zerocopy::{FromBytes, IntoBytes};

/// `XS_GET_DOMAIN_PATH`.
pub const XS_GET_DOMAIN_PATH: u32 = 10;
const XS_MKDIR: u32 = 12;
const XS_RM: u32 = 13;
const XS_SET_PERMS: u32 = 14;

const HEADER: usize = core::mem::size_of::<XsdSockmsg>();
const RING: u32 = XENSTORE_RING_SIZE as u32;
/// Requests answered per service call at most (each consumes ≥ 16 bytes, so a full ring
/// holds fewer; the bound only guards against a guest refilling under us).
const MAX_REQUESTS_PER_CALL: usize = 64;

const REQ_OFF: u64 = offset_of!(XenstoreDomainInterface, req) as u64;
const RSP_OFF: u64 = offset_of!(XenstoreDomainInterface, rsp) as u64;
const REQ_CONS_OFF: u64 = offset_of!(XenstoreDomainInterface, req_cons) as u64;
const REQ_PROD_OFF: u64 = offset_of!(XenstoreDomainInterface, req_prod) as u64;
const RSP_CONS_OFF: u64 = offset_of!(XenstoreDomainInterface, rsp_cons) as u64;
const RSP_PROD_OFF: u64 = offset_of!(XenstoreDomainInterface, rsp_prod) as u64;

/// Longest reply payload this tree produces (a home path, a name, an error word).
const REPLY_MAX: usize = 64;

/// Per-domain connection state: only the oversized message being read past.
#[derive(Clone, Copy, Debug, Default)]
pub struct XsConn {
    /// Header of a message too long for the ring, and how many payload bytes of it are
    /// still to be skipped.
    skipping: Option<(XsdSockmsg, u32)>,
}

/// Why the ring could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsError {
    /// The guest broke the ring protocol.
    Violation {
        /// What was wrong.
        what: &'static str,
        /// The offending value.
        value: u32,
    },
    /// The ring frame is not in RAM (a hypervisor bug, but never a panic).
    BadFrame(BadMaddr),
}

impl XsError {
    /// Why the domain is crashed for it.
    pub fn crash_reason(self) -> CrashReason {
        match self {
            XsError::Violation { what, value } => CrashReason::new(format_args!(
                "xenstore ring protocol violation ({what}={value:#x})"
            )),
            XsError::BadFrame(m) => CrashReason::new(format_args!(
                "xenstore ring frame not in RAM (maddr={:#x})",
                m.0
            )),
        }
    }
}

impl From<BadMaddr> for XsError {
    fn from(e: BadMaddr) -> Self {
        XsError::BadFrame(e)
    }
}

/// Whom the tree describes.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    /// Domain id.
    pub id: DomId,
    /// Domain name.
    pub name: &'a str,
}

type Reply = (u32, heapless::Vec<u8, REPLY_MAX>);

fn error(word: &str) -> Reply {
    let mut v = heapless::Vec::new();
    let _ = v.extend_from_slice(word.as_bytes());
    let _ = v.push(0);
    (XS_ERROR, v)
}

fn ok(ty: u32, bytes: &[u8]) -> Reply {
    let mut v = heapless::Vec::new();
    // Every answer of this tree is far shorter than REPLY_MAX.
    let _ = v.extend_from_slice(&bytes[..bytes.len().min(REPLY_MAX)]);
    (ty, v)
}

/// `/local/domain/<id>`.
fn home_path(id: DomId) -> heapless::String<24> {
    let mut s = heapless::String::new();
    let _ = write!(s, "/local/domain/{}", id.0);
    s
}

/// The request payload as a path: NUL-terminated, no other NUL, valid UTF-8.
fn path_arg(payload: &[u8]) -> Option<&str> {
    let body = payload.strip_suffix(&[0])?;
    if body.contains(&0) {
        return None;
    }
    core::str::from_utf8(body).ok()
}

/// The reply to one request.
pub fn answer(owner: Owner<'_>, ty: u32, payload: &[u8]) -> Reply {
    match ty {
        XS_READ | XS_DIRECTORY => {
            let Some(path) = path_arg(payload) else {
                return error("EINVAL");
            };
            let home = home_path(owner.id);
            let mut id_text: heapless::String<8> = heapless::String::new();
            let _ = write!(id_text, "{}", owner.id.0);
            // The node, relative to the home path ("" = the home directory itself).
            let rel = if let Some(rest) = path.strip_prefix('/') {
                match rest.strip_prefix(&home.as_str()[1..]) {
                    Some("") => Some(""),
                    Some(tail) => tail.strip_prefix('/'),
                    None => None,
                }
            } else {
                Some(path)
            };
            let value: Option<&[u8]> = match rel.map(|r| r.trim_end_matches('/')) {
                Some("") => Some(b""),
                Some("domid") => Some(id_text.as_bytes()),
                Some("name") => Some(owner.name.as_bytes()),
                _ => None,
            };
            match (value, ty, rel.map(|r| r.trim_end_matches('/'))) {
                (None, _, _) => error("ENOENT"),
                (Some(_), XS_DIRECTORY, Some("")) => ok(XS_DIRECTORY, b"domid\0name\0"),
                (Some(_), XS_DIRECTORY, _) => ok(XS_DIRECTORY, b""),
                (Some(v), _, _) => ok(XS_READ, v),
            }
        }
        XS_GET_DOMAIN_PATH => {
            let id = path_arg(payload)
                .filter(|s| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u16>().ok());
            match id {
                Some(id) => {
                    let mut v = heapless::Vec::<u8, REPLY_MAX>::new();
                    let _ = v.extend_from_slice(home_path(DomId(id)).as_bytes());
                    let _ = v.push(0);
                    (XS_GET_DOMAIN_PATH, v)
                }
                None => error("EINVAL"),
            }
        }
        XS_WRITE | XS_MKDIR | XS_RM | XS_SET_PERMS => error("EACCES"),
        _ => error("ENOSYS"),
    }
}

fn read_u32<M: MachineMemory>(mem: &M, at: u64) -> Result<u32, BadMaddr> {
    let mut b = [0u8; 4];
    mem.read(at, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Copies `buf.len()` bytes out of a ring array starting at free-running index `idx`.
fn ring_read<M: MachineMemory>(
    mem: &M,
    base: u64,
    idx: u32,
    buf: &mut [u8],
) -> Result<(), BadMaddr> {
    let slot = (idx % RING) as usize;
    let head = buf.len().min(XENSTORE_RING_SIZE - slot);
    mem.read(base + slot as u64, &mut buf[..head])?;
    mem.read(base, &mut buf[head..])
}

/// Copies `data` into a ring array starting at free-running index `idx`.
fn ring_write<M: MachineMemory>(mem: &M, base: u64, idx: u32, data: &[u8]) -> Result<(), BadMaddr> {
    let slot = (idx % RING) as usize;
    let head = data.len().min(XENSTORE_RING_SIZE - slot);
    mem.write(base + slot as u64, &data[..head])?;
    mem.write(base, &data[head..])
}

/// Answers every complete request in the xenstore ring at `ring` whose reply fits.
/// Returns how many requests were answered.
pub fn service<M: MachineMemory>(
    mem: &M,
    ring: Mfn,
    owner: Owner<'_>,
    conn: &mut XsConn,
) -> Result<usize, XsError> {
    let base = ring.maddr();
    let mut answered = 0;
    for _ in 0..MAX_REQUESTS_PER_CALL {
        // Indices are re-read each round and trusted only after the checks.
        let req_cons = read_u32(mem, base + REQ_CONS_OFF)?;
        let req_prod = read_u32(mem, base + REQ_PROD_OFF)?;
        let rsp_cons = read_u32(mem, base + RSP_CONS_OFF)?;
        let rsp_prod = read_u32(mem, base + RSP_PROD_OFF)?;
        let avail = req_prod.wrapping_sub(req_cons);
        if avail > RING {
            return Err(XsError::Violation {
                what: "req_prod",
                value: req_prod,
            });
        }
        let rsp_used = rsp_prod.wrapping_sub(rsp_cons);
        if rsp_used > RING {
            return Err(XsError::Violation {
                what: "rsp_cons",
                value: rsp_cons,
            });
        }
        let room = (RING - rsp_used) as usize;

        let (header, reply, consumed) = if let Some((header, left)) = conn.skipping {
            let take = avail.min(left);
            let left = left - take;
            let consumed = take;
            if left > 0 {
                mem.write(
                    base + REQ_CONS_OFF,
                    &req_cons.wrapping_add(take).to_le_bytes(),
                )?;
                conn.skipping = Some((header, left));
                if take == 0 {
                    break;
                }
                continue;
            }
            conn.skipping = Some((header, 0));
            (header, error("E2BIG"), consumed)
        } else {
            if (avail as usize) < HEADER {
                break;
            }
            let mut raw = [0u8; HEADER];
            ring_read(mem, base + REQ_OFF, req_cons, &mut raw)?;
            // Cannot fail: `raw` has exactly the header's size.
            let Ok(header) = XsdSockmsg::read_from_bytes(&raw) else {
                break;
            };
            if header.len as usize > XENSTORE_PAYLOAD_MAX {
                return Err(XsError::Violation {
                    what: "message length",
                    value: header.len,
                });
            }
            let total = HEADER as u32 + header.len;
            if total > RING {
                // Never whole in the ring: take the header now, skip the payload as it
                // comes, then answer.
                mem.write(
                    base + REQ_CONS_OFF,
                    &req_cons.wrapping_add(HEADER as u32).to_le_bytes(),
                )?;
                conn.skipping = Some((header, header.len));
                continue;
            }
            if avail < total {
                break;
            }
            let mut payload = [0u8; XENSTORE_RING_SIZE];
            let payload = &mut payload[..header.len as usize];
            ring_read(
                mem,
                base + REQ_OFF,
                req_cons.wrapping_add(HEADER as u32),
                payload,
            )?;
            hv_debug!(
                "xenstore d{=u16} request type={=u32} req_id={=u32} path={=str}",
                owner.id.0,
                header.type_,
                header.req_id,
                path_arg(payload).unwrap_or("")
            );
            (header, answer(owner, header.type_, payload), total)
        };

        let (ty, body) = reply;
        if room < HEADER + body.len() {
            // The guest has not read our earlier replies yet: leave the request (or the
            // pending E2BIG) for later.
            if conn.skipping.is_some() {
                mem.write(
                    base + REQ_CONS_OFF,
                    &req_cons.wrapping_add(consumed).to_le_bytes(),
                )?;
            }
            break;
        }
        let out = XsdSockmsg {
            type_: ty,
            req_id: header.req_id,
            tx_id: header.tx_id,
            len: body.len() as u32,
        };
        ring_write(mem, base + RSP_OFF, rsp_prod, out.as_bytes())?;
        ring_write(
            mem,
            base + RSP_OFF,
            rsp_prod.wrapping_add(HEADER as u32),
            &body,
        )?;
        let new_prod = rsp_prod.wrapping_add((HEADER + body.len()) as u32);
        mem.write(base + RSP_PROD_OFF, &new_prod.to_le_bytes())?;
        mem.write(
            base + REQ_CONS_OFF,
            &req_cons.wrapping_add(consumed).to_le_bytes(),
        )?;
        conn.skipping = None;
        answered += 1;
    }
    Ok(answered)
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Answers the domain's pending xenstore requests. A protocol violation is the
    /// caller's reason to crash the domain ([`XsError::crash_reason`]).
    pub(crate) fn service_xenstore(&mut self, idx: usize) -> Result<(), XsError> {
        let d = &mut self.domains[idx];
        let Some((ring, _)) = d.store_ring else {
            return Ok(());
        };
        if !d.is_runnable() {
            return Ok(());
        }
        let owner = Owner {
            id: d.id,
            name: &d.name,
        };
        if service(&self.mem, ring, owner, &mut d.xenstore)? > 0 {
            // Responses written: the store port tells the guest.
            self.notify_store(idx);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeMemory;
    extern crate std;
    use std::vec::Vec;

    const OWNER: Owner<'static> = Owner {
        id: DomId(3),
        name: "grub",
    };
    const R: Mfn = Mfn(1);

    fn reply(ty: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        let (t, v) = answer(OWNER, ty, payload);
        (t, v.to_vec())
    }

    #[test]
    fn the_tree_of_the_domain() {
        assert_eq!(reply(XS_READ, b"name\0"), (XS_READ, b"grub".to_vec()));
        assert_eq!(reply(XS_READ, b"domid\0"), (XS_READ, b"3".to_vec()));
        assert_eq!(
            reply(XS_READ, b"/local/domain/3/name\0"),
            (XS_READ, b"grub".to_vec())
        );
        assert_eq!(reply(XS_READ, b"/local/domain/3\0"), (XS_READ, Vec::new()));
        assert_eq!(
            reply(XS_DIRECTORY, b"/local/domain/3/\0"),
            (XS_DIRECTORY, b"domid\0name\0".to_vec())
        );
        assert_eq!(reply(XS_DIRECTORY, b"name\0"), (XS_DIRECTORY, Vec::new()));
        // What GRUB asks first: absent.
        assert_eq!(
            reply(XS_DIRECTORY, b"device/vbd\0"),
            (XS_ERROR, b"ENOENT\0".to_vec())
        );
        for absent in [
            &b"/local/domain/33/name\0"[..],
            b"/local/domain/3name\0",
            b"/\0",
            b"x\0",
        ] {
            assert_eq!(reply(XS_READ, absent).0, XS_ERROR, "{absent:?}");
        }
        // Malformed path arguments.
        for bad in [&b"name"[..], b"na\0me\0", b"\xff\0", b""] {
            assert_eq!(reply(XS_READ, bad), (XS_ERROR, b"EINVAL\0".to_vec()));
        }
        assert_eq!(
            reply(XS_GET_DOMAIN_PATH, b"7\0"),
            (XS_GET_DOMAIN_PATH, b"/local/domain/7\0".to_vec())
        );
        for bad in [&b"70000\0"[..], b"-1\0", b"\0", b"1"] {
            assert_eq!(reply(XS_GET_DOMAIN_PATH, bad).0, XS_ERROR);
        }
        assert_eq!(
            reply(XS_WRITE, b"name\0x"),
            (XS_ERROR, b"EACCES\0".to_vec())
        );
        assert_eq!(reply(4, b"a\0t\0"), (XS_ERROR, b"ENOSYS\0".to_vec()));
    }

    fn idx(mem: &FakeMemory, off: u64) -> u32 {
        read_u32(mem, R.maddr() + off).unwrap()
    }
    fn set(mem: &FakeMemory, off: u64, v: u32) {
        mem.write(R.maddr() + off, &v.to_le_bytes()).unwrap();
    }

    /// Puts a request at req_prod and advances it; returns its bytes.
    fn request(mem: &FakeMemory, ty: u32, req_id: u32, payload: &[u8]) {
        let prod = idx(mem, REQ_PROD_OFF);
        let h = XsdSockmsg {
            type_: ty,
            req_id,
            tx_id: 42,
            len: payload.len() as u32,
        };
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(payload);
        ring_write(mem, R.maddr() + REQ_OFF, prod, &bytes).unwrap();
        set(mem, REQ_PROD_OFF, prod.wrapping_add(bytes.len() as u32));
    }

    /// Takes every reply from the rsp ring (as the guest would) and returns them.
    fn replies(mem: &FakeMemory) -> Vec<(XsdSockmsg, Vec<u8>)> {
        let mut out = Vec::new();
        let mut cons = idx(mem, RSP_CONS_OFF);
        let prod = idx(mem, RSP_PROD_OFF);
        while cons != prod {
            let mut raw = [0u8; HEADER];
            ring_read(mem, R.maddr() + RSP_OFF, cons, &mut raw).unwrap();
            let h = XsdSockmsg::read_from_bytes(&raw).unwrap();
            let mut body = std::vec![0u8; h.len as usize];
            ring_read(mem, R.maddr() + RSP_OFF, cons + HEADER as u32, &mut body).unwrap();
            cons = cons.wrapping_add(HEADER as u32 + h.len);
            out.push((h, body));
        }
        set(mem, RSP_CONS_OFF, cons);
        out
    }

    fn start_at(mem: &FakeMemory, at: u32) {
        for off in [REQ_CONS_OFF, REQ_PROD_OFF, RSP_CONS_OFF, RSP_PROD_OFF] {
            set(mem, off, at);
        }
    }

    #[test]
    fn requests_are_answered_in_order_across_the_wrap() {
        let mem = FakeMemory::new(3 * 4096);
        let mut conn = XsConn::default();
        // Indices near 2^32 and ring slots near the end of the arrays.
        start_at(&mem, u32::MAX - 20);
        request(&mem, XS_DIRECTORY, 7, b"device/vbd\0");
        request(&mem, XS_READ, 8, b"name\0");
        assert_eq!(service(&mem, R, OWNER, &mut conn), Ok(2));
        assert_eq!(idx(&mem, REQ_CONS_OFF), idx(&mem, REQ_PROD_OFF));
        let r = replies(&mem);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].0.type_, r[0].0.req_id, r[0].0.tx_id),
            (XS_ERROR, 7, 42)
        );
        assert_eq!(r[0].1, b"ENOENT\0");
        assert_eq!((r[1].0.type_, r[1].0.req_id), (XS_READ, 8));
        assert_eq!(r[1].1, b"grub");
        // Nothing new: nothing done.
        assert_eq!(service(&mem, R, OWNER, &mut conn), Ok(0));
    }

    #[test]
    fn partial_requests_and_a_full_reply_ring_wait() {
        let mem = FakeMemory::new(3 * 4096);
        let mut conn = XsConn::default();
        start_at(&mem, 0);
        request(&mem, XS_READ, 1, b"name\0");
        // Only part of it published.
        set(&mem, REQ_PROD_OFF, 10);
        assert_eq!(service(&mem, R, OWNER, &mut conn), Ok(0));
        assert_eq!(idx(&mem, REQ_CONS_OFF), 0);
        set(&mem, REQ_PROD_OFF, 21);
        // The guest never reads replies: the ring fills, then requests stay queued.
        let mut answered = 0;
        for i in 0..200 {
            answered += service(&mem, R, OWNER, &mut conn).unwrap();
            if idx(&mem, REQ_CONS_OFF) != idx(&mem, REQ_PROD_OFF) {
                break;
            }
            request(&mem, XS_READ, i + 2, b"name\0");
        }
        let used = idx(&mem, RSP_PROD_OFF) - idx(&mem, RSP_CONS_OFF);
        assert!(used <= RING && used > RING - 20, "reply ring used {used}");
        assert_eq!(answered as u32, used / 20);
        // Once the guest reads, the queued request is answered.
        let r = replies(&mem);
        assert_eq!(r.len(), answered);
        assert_eq!(service(&mem, R, OWNER, &mut conn), Ok(1));
        assert_eq!(idx(&mem, REQ_CONS_OFF), idx(&mem, REQ_PROD_OFF));
    }

    #[test]
    fn oversized_messages_are_skipped_and_answered_e2big() {
        let mem = FakeMemory::new(3 * 4096);
        let mut conn = XsConn::default();
        start_at(&mem, 0);
        // A 3000-byte write arrives in ring-sized pieces.
        let h = XsdSockmsg {
            type_: XS_WRITE,
            req_id: 5,
            tx_id: 0,
            len: 3000,
        };
        let mut msg = h.as_bytes().to_vec();
        msg.extend(std::iter::repeat_n(b'v', 3000));
        let mut sent = 0usize;
        while sent < msg.len() {
            let cons = idx(&mem, REQ_CONS_OFF);
            let prod = idx(&mem, REQ_PROD_OFF);
            let room = (RING - (prod - cons)) as usize;
            let n = room.min(msg.len() - sent);
            ring_write(&mem, R.maddr() + REQ_OFF, prod, &msg[sent..sent + n]).unwrap();
            set(&mem, REQ_PROD_OFF, prod + n as u32);
            sent += n;
            service(&mem, R, OWNER, &mut conn).unwrap();
        }
        assert_eq!(idx(&mem, REQ_CONS_OFF), 3016);
        let r = replies(&mem);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0.type_, r[0].0.req_id), (XS_ERROR, 5));
        assert_eq!(r[0].1, b"E2BIG\0");
        // And the stream goes on normally.
        request(&mem, XS_READ, 6, b"domid\0");
        assert_eq!(service(&mem, R, OWNER, &mut conn), Ok(1));
        assert_eq!(replies(&mem)[0].1, b"3");
    }

    #[test]
    fn hostile_indices_and_lengths_are_violations() {
        let mem = FakeMemory::new(3 * 4096);
        for (cons, prod) in [(0u32, 1025u32), (10, 5), (0, u32::MAX)] {
            start_at(&mem, 0);
            set(&mem, REQ_CONS_OFF, cons);
            set(&mem, REQ_PROD_OFF, prod);
            let e = service(&mem, R, OWNER, &mut XsConn::default()).unwrap_err();
            assert_eq!(
                e,
                XsError::Violation {
                    what: "req_prod",
                    value: prod
                }
            );
        }
        start_at(&mem, 0);
        set(&mem, RSP_CONS_OFF, 100);
        assert!(matches!(
            service(&mem, R, OWNER, &mut XsConn::default()),
            Err(XsError::Violation {
                what: "rsp_cons",
                ..
            })
        ));
        start_at(&mem, 0);
        let h = XsdSockmsg {
            type_: XS_READ,
            req_id: 1,
            tx_id: 0,
            len: 4097,
        };
        ring_write(&mem, R.maddr() + REQ_OFF, 0, h.as_bytes()).unwrap();
        set(&mem, REQ_PROD_OFF, 16);
        assert_eq!(
            service(&mem, R, OWNER, &mut XsConn::default()),
            Err(XsError::Violation {
                what: "message length",
                value: 4097
            })
        );
        assert!(matches!(
            service(&mem, Mfn(1 << 30), OWNER, &mut XsConn::default()),
            Err(XsError::BadFrame(_))
        ));
    }
}
