//! A xenstore client over the shared ring (`io/xs_wire.h`).

use crate::console::Notify;
use crate::errno::Errno;
use crate::xenstore::{
    XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE, XS_DIRECTORY, XS_ERROR, XS_MKDIR, XS_READ,
    XS_REQ_CONS_OFFSET, XS_REQ_OFFSET, XS_REQ_PROD_OFFSET, XS_RM, XS_RSP_CONS_OFFSET,
    XS_RSP_OFFSET, XS_RSP_PROD_OFFSET, XS_TRANSACTION_END, XS_TRANSACTION_START, XS_UNWATCH,
    XS_WATCH, XS_WATCH_EVENT, XS_WRITE, XenstoreDomainInterface, XsdSockmsg, xs_slot,
};
use core::ptr::NonNull;
use core::sync::atomic::{Ordering, fence};
use zerocopy::{FromBytes, IntoBytes};

const HDR: usize = core::mem::size_of::<XsdSockmsg>();
const RING: u32 = XENSTORE_RING_SIZE as u32;
/// Bytes of watch events the client buffers between calls of `next_watch_event`.
const EVENT_BYTES: usize = 4096;
/// Most messages consumed while waiting for one reply (watch events and stale
/// replies): a server that floods the ring cannot keep a call busy for ever.
const MAX_MESSAGES_PER_CALL: u32 = 1024;
/// Default of [`XenbusClient::set_max_waits`].
const DEFAULT_MAX_WAITS: u32 = 1 << 20;

/// Access to the memory of a xenstore ring page ([`XenstoreDomainInterface`]), by byte
/// offset in it.
///
/// The client only passes offsets inside the 2080-byte interface (`u32` ones
/// 4-aligned), derived from masked ring indices. Every access must be a single load or
/// store the compiler keeps (volatile or atomic): xenstored reads and writes the page
/// concurrently. Host tests can implement it over anything; a kernel uses
/// [`RawStoreRing`].
pub trait StoreRing {
    /// Loads the byte at `off`.
    fn load_u8(&self, off: usize) -> u8;
    /// Stores `v` at `off`.
    fn store_u8(&self, off: usize, v: u8);
    /// Loads the `u32` at `off`.
    fn load_u32(&self, off: usize) -> u32;
    /// Stores `v` at `off`.
    fn store_u32(&self, off: usize, v: u32);
}

impl<T: StoreRing + ?Sized> StoreRing for &T {
    fn load_u8(&self, off: usize) -> u8 {
        (**self).load_u8(off)
    }
    fn store_u8(&self, off: usize, v: u8) {
        (**self).store_u8(off, v)
    }
    fn load_u32(&self, off: usize) -> u32 {
        (**self).load_u32(off)
    }
    fn store_u32(&self, off: usize, v: u32) {
        (**self).store_u32(off, v)
    }
}

/// A mapped xenstore ring page, accessed with volatile loads and stores.
///
/// Offsets outside the interface (which the client never passes) panic rather than
/// touch other memory.
#[derive(Clone, Copy, Debug)]
pub struct RawStoreRing {
    page: NonNull<XenstoreDomainInterface>,
}

// SAFETY: the page is shared memory accessed only with volatile operations; moving the
// handle to another CPU changes nothing about that.
unsafe impl Send for RawStoreRing {}

impl RawStoreRing {
    /// Views the ring at `page` (for a domU: the `store_mfn` page of `start_info`, as
    /// mapped in the kernel).
    ///
    /// # Safety
    ///
    /// `page` must be non-null, 4-aligned and point to a mapped, readable and writable
    /// [`XenstoreDomainInterface`] that stays so as long as this value or a copy of it
    /// is used, and that this domain accesses only with volatile or atomic operations
    /// meanwhile.
    pub const unsafe fn new(page: *mut XenstoreDomainInterface) -> Self {
        RawStoreRing {
            // SAFETY: non-null by the caller's contract.
            page: unsafe { NonNull::new_unchecked(page) },
        }
    }

    /// Pointer to offset `off`, checked to leave `width` bytes inside the interface.
    fn at(&self, off: usize, width: usize) -> *mut u8 {
        let size = core::mem::size_of::<XenstoreDomainInterface>();
        assert!(
            off.checked_add(width).is_some_and(|end| end <= size) && off.is_multiple_of(width),
            "xenstore ring offset {off:#x} out of range"
        );
        // SAFETY: `off + width <= size`, so the pointer stays in the interface.
        unsafe { self.page.as_ptr().cast::<u8>().add(off) }
    }
}

impl StoreRing for RawStoreRing {
    fn load_u8(&self, off: usize) -> u8 {
        // SAFETY: in bounds (checked by `at`) of a page valid per the constructor.
        unsafe { self.at(off, 1).read_volatile() }
    }
    fn store_u8(&self, off: usize, v: u8) {
        // SAFETY: as in `load_u8`.
        unsafe { self.at(off, 1).write_volatile(v) }
    }
    fn load_u32(&self, off: usize) -> u32 {
        // SAFETY: in bounds and 4-aligned (the page is 4-aligned, `at` checks `off`).
        unsafe { self.at(off, 4).cast::<u32>().read_volatile() }
    }
    fn store_u32(&self, off: usize, v: u32) {
        // SAFETY: as in `load_u32`.
        unsafe { self.at(off, 4).cast::<u32>().write_volatile(v) }
    }
}

/// How the client blocks until xenstored may have done something (the store event
/// channel fired).
///
/// A kernel blocks on the store port (with a timeout of its choice: an `Err` is passed
/// to the caller of the request, e.g. `ETIMEDOUT`); a host test runs its fake server.
/// Returning `Ok` without an event is harmless: the client re-checks the ring, and
/// gives up with `ETIMEDOUT` after [`set_max_waits`](XenbusClient::set_max_waits)
/// waits in one call.
pub trait Wait {
    /// Blocks until the next event on the store channel, or fails.
    fn wait(&mut self) -> Result<(), Errno>;
}

impl<F: FnMut() -> Result<(), Errno>> Wait for F {
    fn wait(&mut self) -> Result<(), Errno> {
        self()
    }
}

/// A transaction id; [`TxId::NONE`] for requests outside a transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TxId(pub u32);

impl TxId {
    /// No transaction.
    pub const NONE: TxId = TxId(0);
}

/// A fired watch: the path that changed and the token given to
/// [`watch`](XenbusClient::watch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchEvent<'a> {
    /// The path that changed (at or below the watched path), without NUL.
    pub path: &'a [u8],
    /// The watch's token, without NUL.
    pub token: &'a [u8],
}

/// The children listed by [`directory`](XenbusClient::directory), in the server's order.
#[derive(Clone, Debug)]
pub struct Directory<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Directory<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (name, rest) = match self.rest.iter().position(|&b| b == 0) {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            if !name.is_empty() {
                return Some(name);
            }
        }
    }
}

/// The errno an `XS_ERROR` payload (`"ENOENT\0"`) names; `EINVAL` for a name Xen does
/// not define (as Linux's xenbus does).
pub fn errno_from_xs_error(payload: &[u8]) -> Errno {
    let name = match payload.iter().position(|&b| b == 0) {
        Some(i) => &payload[..i],
        None => payload,
    };
    // Xen's errno numbers are below 130; a fixed scan keeps this bounded.
    (1..130)
        .map(Errno)
        .find(|e| e.name().is_some_and(|n| n.as_bytes() == name))
        .unwrap_or(Errno::EINVAL)
}

/// A xenstore connection over the shared ring, for a kernel's xenbus.
///
/// One request is in flight at a time (methods take `&mut self`). Each request gets a
/// fresh `req_id`; replies carrying another id (to a request abandoned after a timeout)
/// are discarded, and watch events that arrive while a reply is awaited are buffered
/// (up to 4 KiB; beyond that they are dropped and [`next_watch_event`] reports
/// `ENOBUFS` once, so the driver re-reads what it watches).
///
/// The server's indices are untrusted: a producer index more than a ring ahead of the
/// consumer, or a message longer than `XENSTORE_PAYLOAD_MAX`, marks the connection
/// broken, and every later call fails with `EIO` (no data is read out of bounds, no
/// loop runs unbounded). Errors of a request come back as its [`Errno`] (`XS_ERROR`),
/// e.g. `ENOENT` for a missing node or `EAGAIN` from
/// [`transaction_end`](Self::transaction_end), after which the caller redoes the
/// transaction.
///
/// `N` is told after every index update (a kernel sends on the store event channel,
/// e.g. with [`EvtchnNotifier`](crate::console::EvtchnNotifier)); `W` blocks until the
/// server answers (see [`Wait`]).
///
/// ```no_run
/// use xen_pv_abi::console::EvtchnNotifier;
/// use xen_pv_abi::kit::{RawStoreRing, TxId, XenbusClient};
/// use xen_pv_abi::xenstore::XenstoreDomainInterface;
/// use xen_pv_abi::{EvtchnPort, Errno};
///
/// # let (store_page, store_port) = (0x1000 as *mut XenstoreDomainInterface, EvtchnPort(1));
/// # fn block_on_store_port() -> Result<(), Errno> { Ok(()) }
/// // SAFETY: the kernel maps start_info.store_mfn at `store_page` for good and
/// // accesses it only through this client.
/// let ring = unsafe { RawStoreRing::new(store_page) };
/// let mut xs = XenbusClient::new(ring, EvtchnNotifier(store_port), block_on_store_port);
/// let name = xs.read(TxId::NONE, "name")?;
/// # let _ = name;
/// xs.watch("device", "dev")?;
/// while let Some(ev) = xs.next_watch_event()? {
///     let _ = (ev.path, ev.token);
/// }
/// # Ok::<(), Errno>(())
/// ```
///
/// [`next_watch_event`]: Self::next_watch_event
pub struct XenbusClient<M, N, W> {
    ring: M,
    notify: N,
    wait: W,
    next_req_id: u32,
    max_waits: u32,
    broken: bool,
    /// Header of the message being received, then its payload in `rx`.
    hdr: [u8; HDR],
    /// Bytes of the current message received so far (header included).
    have: usize,
    rx: [u8; XENSTORE_PAYLOAD_MAX],
    /// Buffered watch events: records of a `u16` length and a payload.
    events: [u8; EVENT_BYTES],
    events_len: usize,
    /// Length of the record last returned by `next_watch_event`, removed on the next call.
    pending_pop: usize,
    events_lost: bool,
}

impl<M, N, W> core::fmt::Debug for XenbusClient<M, N, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenbusClient")
            .field("next_req_id", &self.next_req_id)
            .field("broken", &self.broken)
            .field("buffered_event_bytes", &self.events_len)
            .finish_non_exhaustive()
    }
}

impl<M: StoreRing, N: Notify, W: Wait> XenbusClient<M, N, W> {
    /// A client on `ring`, notifying with `notify` and blocking with `wait`.
    ///
    /// The ring's indices are used as they are (they need not start at 0).
    pub fn new(ring: M, notify: N, wait: W) -> Self {
        XenbusClient {
            ring,
            notify,
            wait,
            next_req_id: 1,
            max_waits: DEFAULT_MAX_WAITS,
            broken: false,
            hdr: [0; HDR],
            have: 0,
            rx: [0; XENSTORE_PAYLOAD_MAX],
            events: [0; EVENT_BYTES],
            events_len: 0,
            pending_pop: 0,
            events_lost: false,
        }
    }

    /// Most calls of [`Wait::wait`] in one request before it fails with `ETIMEDOUT`
    /// (default 2^20; at least 1).
    pub fn set_max_waits(&mut self, n: u32) {
        self.max_waits = n.max(1);
    }

    /// Whether the server broke the protocol (bad indices or message) or a request was
    /// cut off half-sent: every call then fails with `EIO`.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The ring memory.
    pub fn ring(&self) -> &M {
        &self.ring
    }

    /// `XS_READ`: the value of `path` (no NUL added), valid until the next call.
    pub fn read(&mut self, tx: TxId, path: &str) -> Result<&[u8], Errno> {
        let path = checked(path)?;
        self.request(XS_READ, tx, &[path, b"\0"])
    }

    /// `XS_WRITE`: sets `path` to `value` (creating missing parents).
    pub fn write(&mut self, tx: TxId, path: &str, value: &[u8]) -> Result<(), Errno> {
        let path = checked(path)?;
        self.request(XS_WRITE, tx, &[path, b"\0", value]).map(drop)
    }

    /// `XS_MKDIR`: creates `path` with an empty value.
    pub fn mkdir(&mut self, tx: TxId, path: &str) -> Result<(), Errno> {
        let path = checked(path)?;
        self.request(XS_MKDIR, tx, &[path, b"\0"]).map(drop)
    }

    /// `XS_RM`: removes `path` and everything below it.
    pub fn rm(&mut self, tx: TxId, path: &str) -> Result<(), Errno> {
        let path = checked(path)?;
        self.request(XS_RM, tx, &[path, b"\0"]).map(drop)
    }

    /// `XS_DIRECTORY`: the names of `path`'s children, valid until the next call.
    pub fn directory(&mut self, tx: TxId, path: &str) -> Result<Directory<'_>, Errno> {
        let path = checked(path)?;
        let rest = self.request(XS_DIRECTORY, tx, &[path, b"\0"])?;
        Ok(Directory { rest })
    }

    /// `XS_WATCH`: report changes at or below `path` as [`WatchEvent`]s carrying `token`.
    /// xenstored fires each new watch once right away.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), Errno> {
        let (path, token) = (checked(path)?, checked(token)?);
        self.request(XS_WATCH, TxId::NONE, &[path, b"\0", token, b"\0"])
            .map(drop)
    }

    /// `XS_UNWATCH`: removes the watch set with the same `path` and `token`.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), Errno> {
        let (path, token) = (checked(path)?, checked(token)?);
        self.request(XS_UNWATCH, TxId::NONE, &[path, b"\0", token, b"\0"])
            .map(drop)
    }

    /// `XS_TRANSACTION_START`: a new transaction.
    pub fn transaction_start(&mut self) -> Result<TxId, Errno> {
        let reply = self.request(XS_TRANSACTION_START, TxId::NONE, &[b"\0"])?;
        match parse_u32(reply) {
            Some(id) if id != 0 => Ok(TxId(id)),
            _ => Err(Errno::EIO),
        }
    }

    /// `XS_TRANSACTION_END`: commits (`commit`) or aborts `tx`. `Err(EAGAIN)` means
    /// another change raced with the transaction: nothing was written, start over.
    pub fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<(), Errno> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.request(XS_TRANSACTION_END, tx, &[arg]).map(drop)
    }

    /// Sends a request of type `ty` whose payload is `parts` concatenated, and returns
    /// the reply's payload (valid until the next call). `XS_ERROR` replies become their
    /// [`Errno`]; `E2BIG` when the payload exceeds `XENSTORE_PAYLOAD_MAX`.
    pub fn request(&mut self, ty: u32, tx: TxId, parts: &[&[u8]]) -> Result<&[u8], Errno> {
        if self.broken {
            return Err(Errno::EIO);
        }
        let len = parts
            .iter()
            .try_fold(0usize, |acc, p| acc.checked_add(p.len()))
            .filter(|&n| n <= XENSTORE_PAYLOAD_MAX)
            .ok_or(Errno::E2BIG)?;
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        let hdr = XsdSockmsg {
            type_: ty,
            req_id,
            tx_id: tx.0,
            len: len as u32,
        };
        let mut waits = 0;
        let sent = core::iter::once(hdr.as_bytes())
            .chain(parts.iter().copied())
            .try_for_each(|p| self.send_bytes(p, &mut waits));
        if let Err(e) = sent {
            // A half-written request would garble every later one.
            self.broken = true;
            return Err(e);
        }
        let len = self.await_reply(req_id, ty, &mut waits)?;
        Ok(&self.rx[..len])
    }

    /// Next buffered or newly arrived watch event, without blocking; valid until the
    /// next call. `Err(ENOBUFS)` (once) when events were dropped because the buffer was
    /// full: re-read the watched nodes.
    pub fn next_watch_event(&mut self) -> Result<Option<WatchEvent<'_>>, Errno> {
        self.pop_pending();
        if self.broken {
            return Err(Errno::EIO);
        }
        for _ in 0..MAX_MESSAGES_PER_CALL {
            match self.pump()? {
                Some(h) if h.type_ == XS_WATCH_EVENT => self.queue_event(h.len as usize),
                // A late reply to an abandoned request.
                Some(_) => {}
                None => break,
            }
        }
        if self.events_lost {
            self.events_lost = false;
            return Err(Errno::ENOBUFS);
        }
        if self.events_len < 2 {
            return Ok(None);
        }
        let len = usize::from(u16::from_le_bytes([self.events[0], self.events[1]]));
        self.pending_pop = 2 + len;
        let payload = &self.events[2..2 + len];
        let (path, rest) = split_nul(payload);
        let (token, _) = split_nul(rest);
        Ok(Some(WatchEvent { path, token }))
    }

    fn pop_pending(&mut self) {
        let n = core::mem::take(&mut self.pending_pop).min(self.events_len);
        self.events.copy_within(n..self.events_len, 0);
        self.events_len -= n;
    }

    fn queue_event(&mut self, len: usize) {
        let room = EVENT_BYTES - self.events_len;
        if len + 2 > room {
            self.events_lost = true;
            return;
        }
        let at = self.events_len;
        // `len <= XENSTORE_PAYLOAD_MAX < 2^16`.
        self.events[at..at + 2].copy_from_slice(&(len as u16).to_le_bytes());
        self.events[at + 2..at + 2 + len].copy_from_slice(&self.rx[..len]);
        self.events_len += 2 + len;
    }

    fn wait_once(&mut self, waits: &mut u32) -> Result<(), Errno> {
        if *waits >= self.max_waits {
            return Err(Errno::ETIMEDOUT);
        }
        *waits += 1;
        self.wait.wait()
    }

    fn corrupt(&mut self) -> Errno {
        self.broken = true;
        Errno::EIO
    }

    /// Writes `data` into `req[]`, waiting for room as needed.
    fn send_bytes(&mut self, mut data: &[u8], waits: &mut u32) -> Result<(), Errno> {
        while !data.is_empty() {
            let cons = self.ring.load_u32(XS_REQ_CONS_OFFSET);
            let prod = self.ring.load_u32(XS_REQ_PROD_OFFSET);
            // The server's consumer index must be read before we reuse the slots.
            fence(Ordering::SeqCst);
            let used = prod.wrapping_sub(cons);
            if used > RING {
                return Err(self.corrupt());
            }
            let room = (RING - used) as usize;
            if room == 0 {
                self.notify.notify();
                self.wait_once(waits)?;
                continue;
            }
            let n = room.min(data.len());
            for (i, &b) in data[..n].iter().enumerate() {
                let idx = prod.wrapping_add(i as u32);
                self.ring.store_u8(XS_REQ_OFFSET + xs_slot(idx), b);
            }
            // The bytes must be visible before the producer index that publishes them.
            fence(Ordering::Release);
            self.ring
                .store_u32(XS_REQ_PROD_OFFSET, prod.wrapping_add(n as u32));
            self.notify.notify();
            data = &data[n..];
        }
        Ok(())
    }

    /// Consumes what `rsp[]` holds towards the current message; its header once complete.
    fn pump(&mut self) -> Result<Option<XsdSockmsg>, Errno> {
        // Each round consumes at least one byte or returns; a message is at most
        // HDR + XENSTORE_PAYLOAD_MAX bytes, so this ends.
        loop {
            let cons = self.ring.load_u32(XS_RSP_CONS_OFFSET);
            let prod = self.ring.load_u32(XS_RSP_PROD_OFFSET);
            // Read the producer index before the bytes it publishes.
            fence(Ordering::SeqCst);
            let avail = prod.wrapping_sub(cons);
            if avail > RING {
                return Err(self.corrupt());
            }
            if avail == 0 {
                return Ok(None);
            }
            let need = if self.have < HDR {
                HDR - self.have
            } else {
                HDR + self.payload_len() - self.have
            };
            let n = need.min(avail as usize);
            for i in 0..n {
                let idx = cons.wrapping_add(i as u32);
                let b = self.ring.load_u8(XS_RSP_OFFSET + xs_slot(idx));
                let at = self.have + i;
                if at < HDR {
                    self.hdr[at] = b;
                } else {
                    self.rx[at - HDR] = b;
                }
            }
            self.have += n;
            // Done reading the slots before handing them back.
            fence(Ordering::SeqCst);
            self.ring
                .store_u32(XS_RSP_CONS_OFFSET, cons.wrapping_add(n as u32));
            self.notify.notify();
            if self.have == HDR && self.payload_len_raw() > XENSTORE_PAYLOAD_MAX {
                return Err(self.corrupt());
            }
            if self.have >= HDR && self.have == HDR + self.payload_len() {
                self.have = 0;
                return Ok(Some(self.header()));
            }
        }
    }

    fn header(&self) -> XsdSockmsg {
        XsdSockmsg::read_from_bytes(&self.hdr[..]).unwrap_or_default()
    }

    fn payload_len_raw(&self) -> usize {
        self.header().len as usize
    }

    /// The current message's payload length (checked against the maximum on arrival).
    fn payload_len(&self) -> usize {
        self.payload_len_raw().min(XENSTORE_PAYLOAD_MAX)
    }

    /// Receives until the reply to `req_id` is complete; its payload length.
    fn await_reply(&mut self, req_id: u32, ty: u32, waits: &mut u32) -> Result<usize, Errno> {
        let mut messages = 0;
        loop {
            let Some(h) = self.pump()? else {
                self.wait_once(waits)?;
                continue;
            };
            messages += 1;
            if messages > MAX_MESSAGES_PER_CALL {
                return Err(Errno::ETIMEDOUT);
            }
            let len = h.len as usize;
            if h.type_ == XS_WATCH_EVENT {
                self.queue_event(len);
            } else if h.req_id != req_id {
                // A late reply to an abandoned request: drop it.
            } else if h.type_ == XS_ERROR {
                return Err(errno_from_xs_error(&self.rx[..len]));
            } else if h.type_ != ty {
                return Err(self.corrupt());
            } else {
                return Ok(len);
            }
        }
    }
}

/// `path` as bytes, refused (`EINVAL`) when empty or with a NUL inside.
fn checked(s: &str) -> Result<&[u8], Errno> {
    if s.is_empty() || s.as_bytes().contains(&0) {
        return Err(Errno::EINVAL);
    }
    Ok(s.as_bytes())
}

/// Splits at the first NUL (dropping it); all of `b` if there is none.
fn split_nul(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

/// A decimal `u32`, optionally NUL-terminated.
fn parse_u32(b: &[u8]) -> Option<u32> {
    let (digits, _) = split_nul(b);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &d| {
        if d.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests;
