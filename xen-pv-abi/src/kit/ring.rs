//! Shared request/response rings (`io/ring.h`): the page layout, a frontend's
//! [`FrontRing`] and a backend's [`BackRing`].
//!
//! The shared area starts with a 64-byte header (`req_prod` @0, `req_event` @4,
//! `rsp_prod` @8, `rsp_event` @12, 4 private bytes @16, padding to 64), followed by
//! `size` slots of the protocol's union of request and response, where `size` is the
//! largest power of two of slots that fits ([`ring_size`]). Indices are free-running
//! `u32`s; a slot is `index & (size - 1)`.
//!
//! Both ends treat the peer as hostile: a producer index that cannot be right
//! ([`RingError::ProducerOverflow`]) is reported, never trusted, and the caller should
//! disconnect; entries are copied out of the shared memory before the caller sees them
//! (the peer may rewrite a slot at any time); and no call loops more than the ring
//! size. Offsets passed to the [`RingMemory`] always lie inside the ring.
//!
//! A block frontend and backend over one page (in a kernel the page is the granted /
//! mapped frame, seen through [`RawRingPage`]):
//!
//! ```
//! use xen_pv_abi::blkif::{BlkifProtocol, BlkifRequest, BlkifResponse, BLKIF_OP_READ, BLKIF_RSP_OKAY};
//! use xen_pv_abi::kit::ring::{BackRing, FrontRing, PageBuffer};
//!
//! let page = PageBuffer::<1024>::new();
//! let mut front = FrontRing::<BlkifProtocol, _>::init(&page).unwrap();
//! let mut back = BackRing::<BlkifProtocol, _>::new(&page).unwrap();
//! assert_eq!(front.size(), 32);
//!
//! let mut req = BlkifRequest::default();
//! req.operation = BLKIF_OP_READ;
//! req.id = 7;
//! front.push_request(&req).unwrap();
//! let notify = front.push_requests_and_check_notify();
//! assert!(notify); // the backend asked for an event at index 1 (initial `req_event`)
//!
//! // Backend: a bad index is an error to disconnect on, never a panic.
//! while let Some(r) = back.next_request().expect("hostile frontend") {
//!     let rsp = BlkifResponse { id: r.id, operation: r.operation, status: BLKIF_RSP_OKAY, ..Default::default() };
//!     back.push_response(&rsp).unwrap();
//! }
//! if back.push_responses_and_check_notify() { /* EVTCHNOP_send */ }
//! assert!(!back.final_check_for_requests().unwrap());
//!
//! let rsp = front.next_response().unwrap().unwrap();
//! assert_eq!(rsp.id, 7);
//! ```

use crate::errno::Errno;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering, fence};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Offset of `req_prod` in the shared ring.
pub const REQ_PROD_OFFSET: usize = 0;
/// Offset of `req_event`.
pub const REQ_EVENT_OFFSET: usize = 4;
/// Offset of `rsp_prod`.
pub const RSP_PROD_OFFSET: usize = 8;
/// Offset of `rsp_event`.
pub const RSP_EVENT_OFFSET: usize = 12;
/// Offset of the 4 protocol-private bytes (`pvt`, e.g. netif's smartpoll flag).
pub const RING_PVT_OFFSET: usize = 16;
/// Offset of the first slot: the header is padded to 64 bytes.
pub const RING_HEADER_SIZE: usize = 64;
/// Largest ring this module handles: with 32-bit indices, more than 2^31 slots would
/// make "ahead" and "behind" indistinguishable.
pub const MAX_RING_SIZE: u32 = 1 << 31;

/// The number of slots of `slot_size` bytes a shared ring of `bytes` bytes holds
/// (`__RING_SIZE`): the slots that fit after the header, rounded down to a power of
/// two; 0 if not even one fits.
///
/// ```
/// use xen_pv_abi::kit::ring::ring_size;
/// assert_eq!(ring_size(4096, 112), 32); // blkif
/// assert_eq!(ring_size(4096, 12), 256); // netif tx
/// assert_eq!(ring_size(4096 * 4, 112), 128); // a 4-page blkif ring
/// ```
pub const fn ring_size(bytes: usize, slot_size: usize) -> u32 {
    if slot_size == 0 || bytes < RING_HEADER_SIZE {
        return 0;
    }
    let n = (bytes - RING_HEADER_SIZE) / slot_size;
    if n == 0 {
        return 0;
    }
    let pow = 1usize << (usize::BITS - 1 - n.leading_zeros());
    if pow > MAX_RING_SIZE as usize {
        MAX_RING_SIZE
    } else {
        pow as u32
    }
}

/// Whether a producer that moved its shared index from `old` to `new` must notify a
/// consumer that asked for an event at index `event` (`RING_PUSH_*_AND_CHECK_NOTIFY`):
/// true exactly when `event` lies in `(old, new]`, in wrapping 32-bit arithmetic.
///
/// ```
/// use xen_pv_abi::kit::ring::needs_notify;
/// assert!(needs_notify(0, 1, 1));
/// assert!(!needs_notify(1, 2, 1)); // the consumer has not gone to sleep since
/// assert!(needs_notify(u32::MAX, 2, 0)); // across the wrap
/// ```
pub const fn needs_notify(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// A ring protocol: its request and response types and the size of their C union
/// (`DEFINE_RING_TYPES`).
///
/// `SLOT_SIZE` must be at least the size of both types (checked when a ring is made
/// for the protocol); it is `max(size_of::<Request>(), size_of::<Response>())` rounded
/// up to the larger alignment.
pub trait RingProtocol {
    /// A request (frontend → backend).
    type Request: FromBytes + IntoBytes + Immutable + Copy;
    /// A response (backend → frontend).
    type Response: FromBytes + IntoBytes + Immutable + Copy;
    /// Size of one slot, the union of request and response.
    const SLOT_SIZE: usize;
}

/// Access to the shared ring memory, by byte offset.
///
/// The rings only pass ranges inside the first [`byte_len`](Self::byte_len) bytes, and `u32` offsets that are
/// 4-aligned. Every access must be one the compiler keeps (volatile or atomic): the peer
/// reads and writes the memory concurrently. The rings issue the fences between
/// accesses themselves. An implementation may panic on a range the rings never pass,
/// but must not touch memory outside the ring.
pub trait RingMemory {
    /// Size of the shared area in bytes (4096 for a one-page ring).
    fn byte_len(&self) -> usize;
    /// Loads the `u32` at `off`.
    fn load_u32(&self, off: usize) -> u32;
    /// Stores `v` at `off`.
    fn store_u32(&self, off: usize, v: u32);
    /// Copies `dst.len()` bytes from `off` into `dst`.
    fn read(&self, off: usize, dst: &mut [u8]);
    /// Copies `src` to `off`.
    fn write(&self, off: usize, src: &[u8]);
}

impl<T: RingMemory + ?Sized> RingMemory for &T {
    fn byte_len(&self) -> usize {
        (**self).byte_len()
    }
    fn load_u32(&self, off: usize) -> u32 {
        (**self).load_u32(off)
    }
    fn store_u32(&self, off: usize, v: u32) {
        (**self).store_u32(off, v)
    }
    fn read(&self, off: usize, dst: &mut [u8]) {
        (**self).read(off, dst)
    }
    fn write(&self, off: usize, src: &[u8]) {
        (**self).write(off, src)
    }
}

/// A mapped shared ring (one or more contiguous pages), accessed with atomic index
/// loads/stores and volatile byte copies.
///
/// Ranges outside the ring (which the rings never pass) panic rather than touch other
/// memory.
///
/// A block backend in a PV kernel, serving a frontend's ring page (the grant
/// reference and event channel come from the frontend's xenstore keys):
///
/// ```no_run
/// use xen_pv_abi::blkif::{BlkifProtocol, BlkifResponse, BLKIF_RSP_EOPNOTSUPP};
/// use xen_pv_abi::kit::{map_grant, Error, ring::{BackRing, RawRingPage}};
/// use xen_pv_abi::transport::Native;
/// use xen_pv_abi::{evtchn, DomId, EvtchnPort, GrantRef};
/// # const WINDOW: u64 = 0x7000_0000;
/// let (front, gref, port) = (DomId(5), GrantRef(8), EvtchnPort(9));
/// // SAFETY: WINDOW is a free page of this kernel's address space.
/// let page = unsafe { map_grant(Native, front, gref, WINDOW, false)? };
/// // SAFETY: the mapping is one page and lives until `page` is dropped, after `ring`.
/// let raw = unsafe { RawRingPage::new(page.host_addr() as *mut u8, 4096) };
/// let mut ring = BackRing::<BlkifProtocol, _>::new(raw)?;
/// loop {
///     while let Some(req) = ring.next_request()? {
///         let rsp = BlkifResponse { id: req.id, operation: req.operation, status: BLKIF_RSP_EOPNOTSUPP, ..Default::default() };
///         ring.push_response(&rsp)?;
///     }
///     if ring.push_responses_and_check_notify() {
///         evtchn::send(port)?;
///     }
///     if !ring.final_check_for_requests()? {
///         break; // block on `port`, then go round again
///     }
/// }
/// # Ok::<(), Error>(())
/// ```
///
/// A [`RingError`] converts to an [`Errno`] (`EIO` for a broken peer) and to a
/// [`kit::Error`](super::Error), so `?` works; a backend should disconnect on it.
#[derive(Clone, Copy, Debug)]
pub struct RawRingPage {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the memory is shared with another domain and accessed only with atomic or
// volatile operations; which CPU holds the handle changes nothing about that.
unsafe impl Send for RawRingPage {}

impl RawRingPage {
    /// Views the `len` bytes at `base` as a shared ring.
    ///
    /// # Safety
    ///
    /// `base` must be non-null, 4-aligned and point to `len` mapped, readable and
    /// writable bytes that stay mapped as long as this value or a copy of it is used,
    /// and that this domain accesses only with volatile or atomic operations meanwhile.
    pub const unsafe fn new(base: *mut u8, len: usize) -> Self {
        RawRingPage {
            // SAFETY: non-null by the caller's contract.
            base: unsafe { NonNull::new_unchecked(base) },
            len,
        }
    }

    fn at(&self, off: usize, width: usize) -> *mut u8 {
        assert!(
            off.checked_add(width).is_some_and(|end| end <= self.len),
            "ring offset {off:#x}+{width} out of range"
        );
        // SAFETY: `off + width <= len`, inside the mapping.
        unsafe { self.base.as_ptr().add(off) }
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4),
            "unaligned ring index offset {off:#x}"
        );
        let p = self.at(off, 4).cast::<u32>();
        // SAFETY: in bounds, 4-aligned (base and `off` are), and the memory is only
        // accessed atomically or volatile per the constructor's contract.
        unsafe { AtomicU32::from_ptr(p) }
    }
}

impl RingMemory for RawRingPage {
    fn byte_len(&self) -> usize {
        self.len
    }
    fn load_u32(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Relaxed)
    }
    fn store_u32(&self, off: usize, v: u32) {
        self.word(off).store(v, Ordering::Relaxed)
    }
    fn read(&self, off: usize, dst: &mut [u8]) {
        let p = self.at(off, dst.len());
        for (i, d) in dst.iter_mut().enumerate() {
            // SAFETY: `p + i` is inside the range `at` checked.
            *d = unsafe { p.add(i).read_volatile() };
        }
    }
    fn write(&self, off: usize, src: &[u8]) {
        let p = self.at(off, src.len());
        for (i, s) in src.iter().enumerate() {
            // SAFETY: as in `read`.
            unsafe { p.add(i).write_volatile(*s) };
        }
    }
}

/// Safe ring memory of `WORDS * 4` bytes (a page with the default), for host tests and
/// for rings between two parts of one program. Bytes are stored little-endian in
/// atomic words, so two threads may share it.
pub struct PageBuffer<const WORDS: usize = 1024> {
    words: [AtomicU32; WORDS],
}

impl<const WORDS: usize> PageBuffer<WORDS> {
    /// A zeroed buffer.
    pub const fn new() -> Self {
        PageBuffer {
            words: [const { AtomicU32::new(0) }; WORDS],
        }
    }

    fn byte(&self, off: usize) -> u8 {
        let w = self.words[off / 4].load(Ordering::Relaxed);
        (w >> (8 * (off % 4))) as u8
    }

    fn set_byte(&self, off: usize, v: u8) {
        let shift = 8 * (off % 4);
        let mask = !(0xffu32 << shift);
        let _ = self.words[off / 4].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            Some((w & mask) | (u32::from(v) << shift))
        });
    }
}

impl<const WORDS: usize> Default for PageBuffer<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> core::fmt::Debug for PageBuffer<WORDS> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageBuffer")
            .field("len", &(WORDS * 4))
            .finish()
    }
}

impl<const WORDS: usize> RingMemory for PageBuffer<WORDS> {
    fn byte_len(&self) -> usize {
        WORDS * 4
    }
    fn load_u32(&self, off: usize) -> u32 {
        assert!(
            off.is_multiple_of(4),
            "unaligned ring index offset {off:#x}"
        );
        self.words[off / 4].load(Ordering::Relaxed)
    }
    fn store_u32(&self, off: usize, v: u32) {
        assert!(
            off.is_multiple_of(4),
            "unaligned ring index offset {off:#x}"
        );
        self.words[off / 4].store(v, Ordering::Relaxed)
    }
    fn read(&self, off: usize, dst: &mut [u8]) {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = self.byte(off + i);
        }
    }
    fn write(&self, off: usize, src: &[u8]) {
        for (i, s) in src.iter().enumerate() {
            self.set_byte(off + i, *s);
        }
    }
}

/// Why a ring operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingError {
    /// The peer's producer index (`prod`) is impossible: further ahead of this end's
    /// consumer than the ring (or, for responses, than the requests outstanding) allows,
    /// or behind what was already consumed. The peer is broken or hostile: disconnect.
    ProducerOverflow {
        /// The producer index read from the shared ring.
        prod: u32,
    },
    /// No free slot: a frontend has `size` requests outstanding.
    Full,
    /// A backend pushed a response but has no consumed request left to answer.
    NoRequest,
}

impl From<RingError> for Errno {
    /// `EIO` for a broken peer, `ENOSPC` for a full ring, `EINVAL` for a response
    /// without a request.
    fn from(e: RingError) -> Errno {
        match e {
            RingError::ProducerOverflow { .. } => Errno::EIO,
            RingError::Full => Errno::ENOSPC,
            RingError::NoRequest => Errno::EINVAL,
        }
    }
}

impl From<RingError> for super::Error {
    fn from(e: RingError) -> super::Error {
        super::Error::Errno(e.into())
    }
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingError::ProducerOverflow { prod } => {
                write!(f, "peer's ring producer index {prod} is out of range")
            }
            RingError::Full => f.write_str("ring full"),
            RingError::NoRequest => f.write_str("response without an outstanding request"),
        }
    }
}

/// Writes an initialised shared ring header (`SHARED_RING_INIT`): both producers 0,
/// both event indices 1, private bytes and padding zero. The frontend does this once,
/// before granting the page.
pub fn init_shared_ring<M: RingMemory + ?Sized>(mem: &M) {
    mem.store_u32(REQ_PROD_OFFSET, 0);
    mem.store_u32(RSP_PROD_OFFSET, 0);
    mem.store_u32(REQ_EVENT_OFFSET, 1);
    mem.store_u32(RSP_EVENT_OFFSET, 1);
    mem.write(RING_PVT_OFFSET, &[0; RING_HEADER_SIZE - RING_PVT_OFFSET]);
    fence(Ordering::Release);
}

/// Ring geometry shared by both ends.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    size: u32,
    slot_size: usize,
}

impl Geometry {
    fn new<P: RingProtocol, M: RingMemory>(mem: &M) -> Result<Self, Errno> {
        let fits = core::mem::size_of::<P::Request>() <= P::SLOT_SIZE
            && core::mem::size_of::<P::Response>() <= P::SLOT_SIZE;
        let size = ring_size(mem.byte_len(), P::SLOT_SIZE);
        if !fits || size == 0 {
            return Err(Errno::EINVAL);
        }
        Ok(Geometry {
            size,
            slot_size: P::SLOT_SIZE,
        })
    }

    /// Byte offset of the slot of free-running index `idx`; inside the ring because
    /// `size * slot_size + 64 <= len`.
    fn slot(&self, idx: u32) -> usize {
        RING_HEADER_SIZE + (idx & (self.size - 1)) as usize * self.slot_size
    }
}

fn read_slot<T: FromBytes + IntoBytes, M: RingMemory>(mem: &M, off: usize) -> T {
    let mut v = T::new_zeroed();
    mem.read(off, v.as_mut_bytes());
    v
}

/// A frontend's end of a ring (`struct <name>_front_ring`): it produces requests and
/// consumes responses.
#[derive(Debug)]
pub struct FrontRing<P: RingProtocol, M: RingMemory> {
    mem: M,
    geo: Geometry,
    req_prod_pvt: u32,
    /// `req_prod` as last published by this end (the shared copy may be scribbled on).
    req_prod_pushed: u32,
    rsp_cons: u32,
    _protocol: PhantomData<fn() -> P>,
}

impl<P: RingProtocol, M: RingMemory> FrontRing<P, M> {
    /// Initialises the shared header ([`init_shared_ring`]) and starts at index 0
    /// (`SHARED_RING_INIT` + `FRONT_RING_INIT`). `EINVAL` if not one slot fits in
    /// `mem`, or `P::SLOT_SIZE` is smaller than a request or response.
    pub fn init(mem: M) -> Result<Self, Errno> {
        let geo = Geometry::new::<P, M>(&mem)?;
        init_shared_ring(&mem);
        Ok(Self::with(mem, geo, 0))
    }

    /// Takes over an already initialised ring whose indices are at `start`
    /// (`FRONT_RING_ATTACH`), e.g. after a kexec with all requests answered.
    pub fn attach(mem: M, start: u32) -> Result<Self, Errno> {
        let geo = Geometry::new::<P, M>(&mem)?;
        Ok(Self::with(mem, geo, start))
    }

    fn with(mem: M, geo: Geometry, start: u32) -> Self {
        FrontRing {
            mem,
            geo,
            req_prod_pvt: start,
            req_prod_pushed: start,
            rsp_cons: start,
            _protocol: PhantomData,
        }
    }

    /// Number of slots (`RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.geo.size
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Index the next request goes to (`req_prod_pvt`).
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// Index of the next response to consume (`rsp_cons`).
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// Requests that can still be queued (`RING_FREE_REQUESTS`).
    pub fn free_requests(&self) -> u32 {
        self.geo.size - self.outstanding()
    }

    /// Whether no request can be queued (`RING_FULL`).
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Requests queued whose responses were not consumed yet; at most `size` because
    /// `push_request` refuses beyond that.
    fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Writes `req` into the next free slot, privately (the backend sees it after
    /// [`push_requests_and_check_notify`](Self::push_requests_and_check_notify)).
    /// Returns its index, or [`RingError::Full`].
    pub fn push_request(&mut self, req: &P::Request) -> Result<u32, RingError> {
        if self.is_full() {
            return Err(RingError::Full);
        }
        let idx = self.req_prod_pvt;
        self.mem.write(self.geo.slot(idx), req.as_bytes());
        self.req_prod_pvt = idx.wrapping_add(1);
        Ok(idx)
    }

    /// Publishes the queued requests without deciding about a notification
    /// (`RING_PUSH_REQUESTS`).
    pub fn push_requests(&mut self) {
        fence(Ordering::Release); // requests before the index
        self.mem.store_u32(REQ_PROD_OFFSET, self.req_prod_pvt);
        self.req_prod_pushed = self.req_prod_pvt;
    }

    /// Publishes the queued requests and says whether the backend must be notified
    /// (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`): whether its `req_event` lies in the
    /// range just published ([`needs_notify`]).
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_prod_pushed;
        let new = self.req_prod_pvt;
        self.push_requests();
        fence(Ordering::SeqCst); // index before reading the event
        needs_notify(old, new, self.mem.load_u32(REQ_EVENT_OFFSET))
    }

    /// Responses published and not consumed yet (`RING_HAS_UNCONSUMED_RESPONSES`), or
    /// [`RingError::ProducerOverflow`] if the backend claims more responses than
    /// requests are outstanding.
    pub fn unconsumed_responses(&self) -> Result<u32, RingError> {
        let prod = self.mem.load_u32(RSP_PROD_OFFSET);
        fence(Ordering::Acquire); // index before the responses
        let n = prod.wrapping_sub(self.rsp_cons);
        if n > self.outstanding() {
            return Err(RingError::ProducerOverflow { prod });
        }
        Ok(n)
    }

    /// Copies out the next response, if one was published.
    pub fn next_response(&mut self) -> Result<Option<P::Response>, RingError> {
        if self.unconsumed_responses()? == 0 {
            return Ok(None);
        }
        let rsp = read_slot(&self.mem, self.geo.slot(self.rsp_cons));
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// The check before waiting for an event (`RING_FINAL_CHECK_FOR_RESPONSES`): true
    /// if responses are there; otherwise asks for an event at the next response and
    /// checks again, closing the race with a backend that just published.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        self.mem
            .store_u32(RSP_EVENT_OFFSET, self.rsp_cons.wrapping_add(1));
        fence(Ordering::SeqCst); // event before re-reading the producer
        Ok(self.unconsumed_responses()? > 0)
    }
}

/// A backend's end of a ring (`struct <name>_back_ring`): it consumes requests and
/// produces responses. The frontend is not trusted (see the [module docs](self)).
#[derive(Debug)]
pub struct BackRing<P: RingProtocol, M: RingMemory> {
    mem: M,
    geo: Geometry,
    rsp_prod_pvt: u32,
    rsp_prod_pushed: u32,
    req_cons: u32,
    _protocol: PhantomData<fn() -> P>,
}

impl<P: RingProtocol, M: RingMemory> BackRing<P, M> {
    /// A backend starting at index 0 (`BACK_RING_INIT`) on a ring the frontend
    /// initialised. `EINVAL` if not one slot fits in `mem`, or `P::SLOT_SIZE` is
    /// smaller than a request or response.
    pub fn new(mem: M) -> Result<Self, Errno> {
        Self::attach(mem, 0)
    }

    /// A backend starting at index `start` (`BACK_RING_ATTACH`).
    pub fn attach(mem: M, start: u32) -> Result<Self, Errno> {
        let geo = Geometry::new::<P, M>(&mem)?;
        Ok(BackRing {
            mem,
            geo,
            rsp_prod_pvt: start,
            rsp_prod_pushed: start,
            req_cons: start,
            _protocol: PhantomData,
        })
    }

    /// Number of slots (`RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.geo.size
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Index of the next request to consume (`req_cons`).
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// Index the next response goes to (`rsp_prod_pvt`).
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// Whether the backend has consumed a full ring of requests it has not answered
    /// (`RING_REQUEST_CONS_OVERFLOW`): consuming another would read a slot whose
    /// response is not written yet. [`next_request`](Self::next_request) never does.
    pub fn request_cons_overflow(&self) -> bool {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt) >= self.geo.size
    }

    /// Requests published and not consumed yet (`RING_HAS_UNCONSUMED_REQUESTS`), at
    /// most what the free response slots allow. [`RingError::ProducerOverflow`] if
    /// `req_prod` is more than the ring size ahead of the responses
    /// (`RING_REQUEST_PROD_OVERFLOW`) or behind what was consumed.
    pub fn unconsumed_requests(&self) -> Result<u32, RingError> {
        let prod = self.mem.load_u32(REQ_PROD_OFFSET);
        fence(Ordering::Acquire); // index before the requests
        let ahead = prod.wrapping_sub(self.rsp_prod_pvt);
        let consumed = self.req_cons.wrapping_sub(self.rsp_prod_pvt);
        if ahead > self.geo.size || ahead < consumed {
            return Err(RingError::ProducerOverflow { prod });
        }
        Ok(ahead - consumed)
    }

    /// Copies out the next request, if one was published. A backend loops on this
    /// until `Ok(None)`; the loop ends within `size` requests before responses are
    /// pushed, whatever the frontend writes.
    pub fn next_request(&mut self) -> Result<Option<P::Request>, RingError> {
        if self.unconsumed_requests()? == 0 {
            return Ok(None);
        }
        let req = read_slot(&self.mem, self.geo.slot(self.req_cons));
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Writes `rsp` into the next response slot, privately. Returns its index, or
    /// [`RingError::NoRequest`] if every consumed request is answered already.
    pub fn push_response(&mut self, rsp: &P::Response) -> Result<u32, RingError> {
        if self.rsp_prod_pvt == self.req_cons {
            return Err(RingError::NoRequest);
        }
        let idx = self.rsp_prod_pvt;
        self.mem.write(self.geo.slot(idx), rsp.as_bytes());
        self.rsp_prod_pvt = idx.wrapping_add(1);
        Ok(idx)
    }

    /// Publishes the queued responses without deciding about a notification
    /// (`RING_PUSH_RESPONSES`).
    pub fn push_responses(&mut self) {
        fence(Ordering::Release); // responses before the index
        self.mem.store_u32(RSP_PROD_OFFSET, self.rsp_prod_pvt);
        self.rsp_prod_pushed = self.rsp_prod_pvt;
    }

    /// Publishes the queued responses and says whether the frontend must be notified
    /// (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`, [`needs_notify`] on `rsp_event`).
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        let old = self.rsp_prod_pushed;
        let new = self.rsp_prod_pvt;
        self.push_responses();
        fence(Ordering::SeqCst); // index before reading the event
        needs_notify(old, new, self.mem.load_u32(RSP_EVENT_OFFSET))
    }

    /// The check before waiting for an event (`RING_FINAL_CHECK_FOR_REQUESTS`): true
    /// if requests are there; otherwise asks for an event at the next request and
    /// checks again.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        self.mem
            .store_u32(REQ_EVENT_OFFSET, self.req_cons.wrapping_add(1));
        fence(Ordering::SeqCst); // event before re-reading the producer
        Ok(self.unconsumed_requests()? > 0)
    }
}

#[cfg(test)]
mod tests;
