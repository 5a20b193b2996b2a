//! A block frontend (blkfront) core: the xenbus handshake and the request path of a
//! PV disk, without hypercalls of its own.
//!
//! * [`probe`], [`connect`] and [`close`] walk the handshake over any [`Store`]
//!   ([`XenbusClient`] implements it): read `backend` / `backend-id`, wait for the
//!   backend's InitWait, write `ring-ref`, `event-channel`, `protocol`, go
//!   Initialised, wait for the backend's Connected, read `sectors`, `sector-size`,
//!   `info` and the `feature-*` keys, go Connected; and back to Closed.
//! * [`Blkfront`] owns the [`FrontRing`] over the granted ring page and a pool of data
//!   pages ([`DataPages`]) that it grants to the backend per request through a
//!   [`GrantTable`]; it submits reads, writes and flushes of one or more segments,
//!   collects responses by id and returns their results.
//!
//! What needs a kernel is behind traits: the data pages' frames and memory
//! ([`DataPages`]), the event channel send ([`Notify`]) and blocking ([`Wait`]). The
//! backend is not trusted: a response with an unknown id or the wrong operation, or a
//! ring index that cannot be right, breaks the device (`EIO` from then on) instead of
//! being believed.
//!
//! A PV kernel's sequence (the grant table, store client and pages come from its
//! start-of-day code; `block_on_port` waits for an event with a timeout):
//!
//! ```no_run
//! use xen_pv_abi::blkif::BlkifProtocol;
//! use xen_pv_abi::console::EvtchnNotifier;
//! use xen_pv_abi::kit::blkfront::{self, Blkfront, DataPages};
//! use xen_pv_abi::kit::{GrantTable, RawStoreRing, XenbusClient};
//! use xen_pv_abi::kit::ring::{FrontRing, RawRingPage};
//! use xen_pv_abi::{Errno, EvtchnPort, GrantRef, Mfn};
//! # fn kernel() -> (&'static GrantTable<512>, &'static mut XenbusClient<RawStoreRing, EvtchnNotifier, fn() -> Result<(), Errno>>, *mut u8, Mfn, &'static dyn DataPages) { unimplemented!() }
//! # fn bind_unbound_port(_: xen_pv_abi::DomId) -> Result<EvtchnPort, Errno> { unimplemented!() }
//! # fn block_on_port() -> Result<(), Errno> { Ok(()) }
//! let (table, store, ring_va, ring_mfn, pages) = kernel();
//! let dev = "device/vbd/768";
//! let backend = blkfront::probe(store, dev)?;
//! // SAFETY: `ring_va` is a page of this kernel kept for the ring, used only by it.
//! let ring = FrontRing::<BlkifProtocol, _>::init(unsafe { RawRingPage::new(ring_va, 4096) })?;
//! let ring_grant = table.grant_access(backend.domid, ring_mfn, false)?;
//! let port = bind_unbound_port(backend.domid)?;
//! let info = blkfront::connect(store, dev, &backend, ring_grant.gref(), port, &mut block_on_port, 1000)?;
//! let mut disk = Blkfront::new(ring, table, backend.domid, pages, EvtchnNotifier(port), info);
//! let mut sector = [0u8; 512];
//! disk.read(0, &mut sector, &mut block_on_port)?;
//! blkfront::close(store, dev, &backend, &mut block_on_port, 1000)?;
//! # Ok::<(), Errno>(())
//! ```

use super::frontend::{Path, await_backend, read_u64, set_state, write_u64};
use super::grants::{Grant, GrantTable};
use super::ring::{FrontRing, RingMemory};
use super::xenbus::{StoreRing, TxId, Wait, XenbusClient};
use crate::blkif::{
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_OKAY, BLKIF_SECTOR_SIZE, BlkifProtocol,
    BlkifRequest, BlkifRequestSegment, VDISK_READONLY,
};
use crate::console::Notify;
use crate::errno::Errno;
use crate::ids::{DomId, EvtchnPort, GrantRef, Mfn};
use crate::xenstore::XenbusState;

/// Bytes of a data page (one segment at most).
pub const PAGE_SIZE: usize = 4096;
/// Most requests in flight at once (the slots of a one-page blkif ring).
pub const MAX_IN_FLIGHT: usize = 32;
/// Most data pages a [`Blkfront`] uses from its [`DataPages`].
pub const MAX_DATA_PAGES: usize = 256;
/// Longest xenstore path or value the handshake handles.
pub const MAX_PATH: usize = 128;

const SECTOR: usize = BLKIF_SECTOR_SIZE as usize;
/// Bytes one request moves at most: 11 full pages.
pub const MAX_REQUEST_BYTES: usize = BLKIF_MAX_SEGMENTS_PER_REQUEST * PAGE_SIZE;
const BITMAP_WORDS: usize = MAX_DATA_PAGES / 64;

// ---------------------------------------------------------------------------------
// The xenbus handshake
// ---------------------------------------------------------------------------------

/// The xenstore operations the handshake needs. [`XenbusClient`] implements it; tests
/// implement it over a map.
pub trait Store {
    /// Copies the value of `path` into `buf`; its length. `ENOENT` for a missing node,
    /// `E2BIG` when it does not fit.
    fn read_into(&mut self, path: &str, buf: &mut [u8]) -> Result<usize, Errno>;
    /// Sets `path` to `value`.
    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Errno>;
    /// Asks for a wake-up (an event on the store channel) when `path` changes.
    fn watch(&mut self, path: &str, token: &str) -> Result<(), Errno>;
    /// Removes a watch set by [`watch`](Self::watch).
    fn unwatch(&mut self, path: &str, token: &str) -> Result<(), Errno>;
    /// Discards the watch events that arrived (the handshake re-reads the node).
    fn drain_events(&mut self) -> Result<(), Errno>;
}

impl<M: StoreRing, N: Notify, W: Wait> Store for XenbusClient<M, N, W> {
    fn read_into(&mut self, path: &str, buf: &mut [u8]) -> Result<usize, Errno> {
        let v = self.read(TxId::NONE, path)?;
        let dst = buf.get_mut(..v.len()).ok_or(Errno::E2BIG)?;
        dst.copy_from_slice(v);
        Ok(v.len())
    }
    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        XenbusClient::write(self, TxId::NONE, path, value)
    }
    fn watch(&mut self, path: &str, token: &str) -> Result<(), Errno> {
        XenbusClient::watch(self, path, token)
    }
    fn unwatch(&mut self, path: &str, token: &str) -> Result<(), Errno> {
        XenbusClient::unwatch(self, path, token)
    }
    fn drain_events(&mut self) -> Result<(), Errno> {
        // The buffer holds at most 4 KiB of events: the bound only guards a bug.
        for _ in 0..4096 {
            match self.next_watch_event() {
                Ok(Some(_)) | Err(Errno::ENOBUFS) => {}
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The backend of a device, as the frontend's `backend` and `backend-id` nodes name it.
#[derive(Clone, Copy)]
pub struct Backend {
    /// The backend's domain.
    pub domid: DomId,
    path: [u8; MAX_PATH],
    path_len: usize,
}

impl Backend {
    /// The backend's directory (`/local/domain/0/backend/vbd/<fe>/<dev>`).
    pub fn path(&self) -> &str {
        // Checked to be UTF-8 by `probe`.
        core::str::from_utf8(&self.path[..self.path_len]).unwrap_or("")
    }
}

impl core::fmt::Debug for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Backend")
            .field("domid", &self.domid)
            .field("path", &self.path())
            .finish()
    }
}

/// What the backend says about the disk (read at Connected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in 512-byte sectors (`sectors`).
    pub sectors: u64,
    /// Logical sector size in bytes (`sector-size`): a multiple of 512, at most 4096;
    /// requests must be aligned to it.
    pub sector_size: u32,
    /// `VDISK_*` flags (`info`).
    pub info: u32,
    /// `feature-flush-cache`.
    pub flush: bool,
    /// `feature-barrier`.
    pub barrier: bool,
}

impl DiskInfo {
    /// Whether the backend refuses writes (`VDISK_READONLY`).
    pub fn read_only(&self) -> bool {
        self.info & VDISK_READONLY != 0
    }
}

/// A numeric key the backend may leave out: `default` when missing.
fn read_opt<S: Store + ?Sized>(
    store: &mut S,
    base: &[u8],
    key: &str,
    default: u64,
) -> Result<u64, Errno> {
    let p = Path::join(base, key)?;
    match read_u64(store, p.as_str()?) {
        Err(Errno::ENOENT) => Ok(default),
        r => r,
    }
}

const WATCH_TOKEN: &str = "blkfront";

/// Reads the frontend directory `dev` (`device/vbd/768`): the backend's path and
/// domain. `EINVAL` for values that make no sense (a path that is not UTF-8 or is
/// too long, a `backend-id` that is not a domain).
pub fn probe<S: Store + ?Sized>(store: &mut S, dev: &str) -> Result<Backend, Errno> {
    let mut path = [0u8; MAX_PATH];
    let p = Path::join(dev.as_bytes(), "backend")?;
    let path_len = match store.read_into(p.as_str()?, &mut path) {
        Err(Errno::E2BIG) => return Err(Errno::EINVAL),
        r => r?,
    };
    // Some writers include a NUL.
    let path_len = path[..path_len]
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(path_len);
    if path_len == 0
        || core::str::from_utf8(&path[..path_len]).is_err()
        // Room for "/feature-flush-cache" after it.
        || path_len + 24 > MAX_PATH
    {
        return Err(Errno::EINVAL);
    }
    let p = Path::join(dev.as_bytes(), "backend-id")?;
    let id = read_u64(store, p.as_str()?)?;
    let domid = u16::try_from(id).map(DomId).map_err(|_| Errno::EINVAL)?;
    if !domid.is_real() {
        return Err(Errno::EINVAL);
    }
    Ok(Backend {
        domid,
        path,
        path_len,
    })
}

/// The frontend side of the handshake, after the caller initialised the ring page,
/// granted it to `backend.domid` as `ring_ref` and allocated `port` for it:
///
/// 1. state Initialising; wait for the backend's InitWait (or later);
/// 2. write `ring-ref`, `event-channel`, `protocol` = `x86_64-abi`, then state
///    Initialised;
/// 3. wait for the backend's Connected; read `sectors`, `sector-size`, `info`,
///    `feature-flush-cache`, `feature-barrier`; state Connected.
///
/// `wait` blocks until the store channel fires (or a timeout passes); it is called at
/// most `max_waits` times per wait, then `ETIMEDOUT`. A backend that closes meanwhile
/// gives `ENODEV`; bad values from it give `EINVAL`. On an error the caller should
/// [`close`] and release the ring.
pub fn connect<S: Store + ?Sized, W: Wait + ?Sized>(
    store: &mut S,
    dev: &str,
    backend: &Backend,
    ring_ref: GrantRef,
    port: EvtchnPort,
    wait: &mut W,
    max_waits: u32,
) -> Result<DiskInfo, Errno> {
    use XenbusState::*;
    set_state(store, dev, Initialising)?;
    await_backend(store, backend, WATCH_TOKEN, wait, max_waits, InitWait)?;
    let base = dev.as_bytes();
    write_u64(store, base, "ring-ref", u64::from(ring_ref.0))?;
    write_u64(store, base, "event-channel", u64::from(port.0))?;
    let p = Path::join(base, "protocol")?;
    store.write(p.as_str()?, b"x86_64-abi")?;
    set_state(store, dev, Initialised)?;
    await_backend(store, backend, WATCH_TOKEN, wait, max_waits, Connected)?;
    let bp = &backend.path[..backend.path_len];
    let sectors = read_u64(store, Path::join(bp, "sectors")?.as_str()?)?;
    let sector_size = read_opt(store, bp, "sector-size", BLKIF_SECTOR_SIZE)?;
    if sector_size == 0
        || !sector_size.is_multiple_of(BLKIF_SECTOR_SIZE)
        || sector_size > PAGE_SIZE as u64
    {
        return Err(Errno::EINVAL);
    }
    let info = read_opt(store, bp, "info", 0)?;
    let flush = read_opt(store, bp, "feature-flush-cache", 0)? != 0;
    let barrier = read_opt(store, bp, "feature-barrier", 0)? != 0;
    set_state(store, dev, Connected)?;
    Ok(DiskInfo {
        sectors,
        sector_size: sector_size as u32,
        info: u32::try_from(info).map_err(|_| Errno::EINVAL)?,
        flush,
        barrier,
    })
}

/// The frontend's close: state Closing, wait for the backend's Closing or Closed,
/// state Closed, wait for the backend's Closed. Afterwards the caller ends the ring
/// and data grants (a [`Blkfront`] ends its data grants as responses arrive) and
/// closes the event channel. A backend that vanished counts as closed.
pub fn close<S: Store + ?Sized, W: Wait + ?Sized>(
    store: &mut S,
    dev: &str,
    backend: &Backend,
    wait: &mut W,
    max_waits: u32,
) -> Result<(), Errno> {
    use XenbusState::*;
    set_state(store, dev, Closing)?;
    await_backend(store, backend, WATCH_TOKEN, wait, max_waits, Closing)?;
    set_state(store, dev, Closed)?;
    await_backend(store, backend, WATCH_TOKEN, wait, max_waits, Closed)?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// The request path
// ---------------------------------------------------------------------------------

/// The frontend's data pages: frames of this domain it grants to the backend, one per
/// segment. A kernel implements it over a few pages it owns (their MFNs and a pointer
/// to each); tests over memory that a fake grant table resolves.
///
/// The frontend only passes `page < count()` and ranges inside one page.
pub trait DataPages {
    /// Number of pages (only the first [`MAX_DATA_PAGES`] are used).
    fn count(&self) -> usize;
    /// The frame of page `page`, as granted.
    fn frame(&self, page: usize) -> Mfn;
    /// Copies bytes of page `page` from `offset` into `dst`.
    fn read(&self, page: usize, offset: usize, dst: &mut [u8]);
    /// Copies `src` into page `page` at `offset`.
    fn write(&self, page: usize, offset: usize, src: &[u8]);
}

impl<T: DataPages + ?Sized> DataPages for &T {
    fn count(&self) -> usize {
        (**self).count()
    }
    fn frame(&self, page: usize) -> Mfn {
        (**self).frame(page)
    }
    fn read(&self, page: usize, offset: usize, dst: &mut [u8]) {
        (**self).read(page, offset, dst)
    }
    fn write(&self, page: usize, offset: usize, src: &[u8]) {
        (**self).write(page, offset, src)
    }
}

/// The id of a submitted request (its `id` on the ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `BLKIF_OP_READ`.
    Read,
    /// `BLKIF_OP_WRITE`.
    Write,
    /// `BLKIF_OP_FLUSH_DISKCACHE` (or `WRITE_BARRIER` when only barriers are offered).
    Flush,
}

/// A finished request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Its id.
    pub id: RequestId,
    /// What it was.
    pub op: Op,
    /// Its outcome: `EIO` for `BLKIF_RSP_ERROR`, `EOPNOTSUPP` for
    /// `BLKIF_RSP_EOPNOTSUPP`.
    pub result: Result<(), Errno>,
    /// Start sector (512-byte units).
    pub sector: u64,
    /// Bytes transferred (0 for a flush).
    pub len: usize,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    busy: bool,
    generation: u32,
    operation: u8,
    op: Op,
    sector: u64,
    len: usize,
    nr_pages: u8,
    pages: [u16; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

const FREE_SLOT: Slot = Slot {
    busy: false,
    generation: 0,
    operation: 0,
    op: Op::Read,
    sector: 0,
    len: 0,
    nr_pages: 0,
    pages: [0; BLKIF_MAX_SEGMENTS_PER_REQUEST],
};

/// A connected block frontend: the ring, the data grants and the requests in flight.
///
/// At most `min(MAX_IN_FLIGHT, ring size)` requests are in flight; each uses one data
/// page per 4 KiB segment, granted (writable) to the backend when submitted and ended
/// when its response arrives. A grant the backend still uses at that point (it should
/// not) keeps its page out of use until a later attempt to end it succeeds.
///
/// Requests are in 512-byte sectors, aligned to [`DiskInfo::sector_size`], at most
/// [`MAX_REQUEST_BYTES`] each and inside the disk (`EINVAL` otherwise); writes to a
/// read-only disk give `EROFS`, flushes without `feature-flush-cache` or
/// `feature-barrier` `EOPNOTSUPP`, and a full device (ring or pages) `EBUSY`.
///
/// On the host, with a backend that acknowledges everything in the same program:
///
/// ```
/// use core::cell::RefCell;
/// use xen_pv_abi::blkif::{BLKIF_RSP_OKAY, BlkifProtocol, BlkifResponse};
/// use xen_pv_abi::grant_table::GrantEntryV1;
/// use xen_pv_abi::kit::GrantTable;
/// use xen_pv_abi::kit::blkfront::{Blkfront, DataPages, DiskInfo, Op};
/// use xen_pv_abi::kit::ring::{BackRing, FrontRing, PageBuffer};
/// use xen_pv_abi::{DomId, Errno, Mfn};
///
/// struct Pages(RefCell<[[u8; 4096]; 2]>);
/// impl DataPages for Pages {
///     fn count(&self) -> usize { 2 }
///     fn frame(&self, page: usize) -> Mfn { Mfn(0x100 + page as u64) }
///     fn read(&self, page: usize, off: usize, dst: &mut [u8]) {
///         dst.copy_from_slice(&self.0.borrow()[page][off..off + dst.len()]);
///     }
///     fn write(&self, page: usize, off: usize, src: &[u8]) {
///         self.0.borrow_mut()[page][off..off + src.len()].copy_from_slice(src);
///     }
/// }
///
/// let mut entries = [GrantEntryV1::default(); 16];
/// // SAFETY: `entries` outlives the table and is only used through it meanwhile.
/// let table = unsafe { GrantTable::<16>::new(entries.as_mut_ptr(), 16) };
/// let ring_page = PageBuffer::<1024>::new();
/// let pages = Pages(RefCell::new([[0; 4096]; 2]));
/// let info = DiskInfo { sectors: 64, sector_size: 512, flush: true, ..Default::default() };
/// let ring = FrontRing::init(&ring_page)?;
/// let mut disk = Blkfront::new(ring, &table, DomId(0), &pages, || {}, info);
///
/// let id = disk.submit_write(8, &[0xab; 1024])?;
/// assert_eq!(disk.submit_write(63, &[0; 1024]), Err(Errno::EINVAL)); // past the end
///
/// // The backend's side (a real one copies the data through the grant).
/// let mut back = BackRing::<BlkifProtocol, _>::new(&ring_page)?;
/// while let Some(req) = back.next_request()? {
///     assert_eq!((req.nr_segments, req.seg[0].last_sect), (1, 1));
///     let rsp = BlkifResponse { id: req.id, operation: req.operation, status: BLKIF_RSP_OKAY, ..Default::default() };
///     back.push_response(&rsp)?;
/// }
/// back.push_responses();
///
/// let done = disk.poll(|_, _, _| {})?.expect("answered");
/// assert_eq!((done.id, done.op, done.result), (id, Op::Write, Ok(())));
/// assert_eq!(table.free_count(), 8); // the data grant was ended
/// # Ok::<(), Errno>(())
/// ```
pub struct Blkfront<'t, M: RingMemory, const N: usize, P: DataPages, E: Notify> {
    ring: FrontRing<BlkifProtocol, M>,
    table: &'t GrantTable<N>,
    backend: DomId,
    pages: P,
    notify: E,
    info: DiskInfo,
    handle: u16,
    slots: [Slot; MAX_IN_FLIGHT],
    in_flight: usize,
    max_in_flight: usize,
    /// Grants of the data pages, by page.
    grants: [Option<Grant<'t, N>>; MAX_DATA_PAGES],
    /// Pages free for a request (bit set).
    free: [u64; BITMAP_WORDS],
    nr_pages: usize,
    broken: bool,
    max_waits: u32,
}

impl<M: RingMemory, const N: usize, P: DataPages, E: Notify> core::fmt::Debug
    for Blkfront<'_, M, N, P, E>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Blkfront")
            .field("backend", &self.backend)
            .field("info", &self.info)
            .field("in_flight", &self.in_flight)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<'t, M: RingMemory, const N: usize, P: DataPages, E: Notify> Blkfront<'t, M, N, P, E> {
    /// A frontend on `ring` (initialised, granted and advertised by [`connect`]),
    /// granting `pages` to `backend` through `table` and telling the backend about new
    /// requests with `notify`.
    pub fn new(
        ring: FrontRing<BlkifProtocol, M>,
        table: &'t GrantTable<N>,
        backend: DomId,
        pages: P,
        notify: E,
        info: DiskInfo,
    ) -> Self {
        let nr_pages = pages.count().min(MAX_DATA_PAGES);
        let mut free = [0u64; BITMAP_WORDS];
        for p in 0..nr_pages {
            free[p / 64] |= 1 << (p % 64);
        }
        let max_in_flight = (ring.size() as usize).min(MAX_IN_FLIGHT);
        Blkfront {
            ring,
            table,
            backend,
            pages,
            notify,
            info,
            handle: 0,
            slots: [FREE_SLOT; MAX_IN_FLIGHT],
            in_flight: 0,
            max_in_flight,
            grants: [const { None }; MAX_DATA_PAGES],
            free,
            nr_pages,
            broken: false,
            max_waits: 1 << 20,
        }
    }

    /// The disk as the backend described it.
    pub fn info(&self) -> DiskInfo {
        self.info
    }

    /// Requests submitted and not completed yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the backend broke the protocol: every call then fails with `EIO`.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The ring.
    pub fn ring(&self) -> &FrontRing<BlkifProtocol, M> {
        &self.ring
    }

    /// Most calls of [`Wait::wait`] in one blocking call before `ETIMEDOUT` (default
    /// 2^20; at least 1).
    pub fn set_max_waits(&mut self, n: u32) {
        self.max_waits = n.max(1);
    }

    /// Sets the request's `handle` (the virtual device number; backends ignore it
    /// with one device per ring). Default 0.
    pub fn set_handle(&mut self, handle: u16) {
        self.handle = handle;
    }

    fn check_range(&self, sector: u64, len: usize) -> Result<(), Errno> {
        let align = self.info.sector_size.max(SECTOR as u32) as u64;
        if len == 0 || len > MAX_REQUEST_BYTES || !(len as u64).is_multiple_of(align) {
            return Err(Errno::EINVAL);
        }
        let start = sector.checked_mul(BLKIF_SECTOR_SIZE).ok_or(Errno::EINVAL)?;
        if !start.is_multiple_of(align) {
            return Err(Errno::EINVAL);
        }
        let end = sector
            .checked_add((len / SECTOR) as u64)
            .ok_or(Errno::EINVAL)?;
        if end > self.info.sectors {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Submits a read of `len` bytes from `sector`; the data is handed out by
    /// [`poll`](Self::poll).
    pub fn submit_read(&mut self, sector: u64, len: usize) -> Result<RequestId, Errno> {
        self.usable()?;
        self.check_range(sector, len)?;
        self.submit(Op::Read, BLKIF_OP_READ, sector, len, None)
    }

    /// Submits a write of `data` at `sector`.
    pub fn submit_write(&mut self, sector: u64, data: &[u8]) -> Result<RequestId, Errno> {
        self.usable()?;
        self.check_range(sector, data.len())?;
        if self.info.read_only() {
            return Err(Errno::EROFS);
        }
        self.submit(Op::Write, BLKIF_OP_WRITE, sector, data.len(), Some(data))
    }

    /// Submits a cache flush: every write completed before it is durable when it
    /// completes.
    pub fn submit_flush(&mut self) -> Result<RequestId, Errno> {
        self.usable()?;
        let operation = if self.info.flush {
            BLKIF_OP_FLUSH_DISKCACHE
        } else if self.info.barrier {
            BLKIF_OP_WRITE_BARRIER
        } else {
            return Err(Errno::EOPNOTSUPP);
        };
        self.submit(Op::Flush, operation, 0, 0, None)
    }

    fn usable(&self) -> Result<(), Errno> {
        if self.broken { Err(Errno::EIO) } else { Ok(()) }
    }

    /// Takes `n` free pages (ending leftover grants first if needed).
    fn take_pages(
        &mut self,
        n: usize,
        out: &mut [u16; BLKIF_MAX_SEGMENTS_PER_REQUEST],
    ) -> Result<(), Errno> {
        let mut found = 0;
        for p in 0..self.nr_pages {
            if found == n {
                break;
            }
            let bit = 1u64 << (p % 64);
            if self.free[p / 64] & bit == 0 {
                continue;
            }
            // A grant the backend held on to at completion: try again now.
            if let Some(g) = self.grants[p].take() {
                match g.end() {
                    Ok(_) => {}
                    Err(g) => {
                        self.grants[p] = Some(g);
                        continue;
                    }
                }
            }
            out[found] = p as u16;
            found += 1;
        }
        if found < n {
            return Err(Errno::EBUSY);
        }
        for &p in &out[..n] {
            self.free[usize::from(p) / 64] &= !(1u64 << (p % 64));
        }
        Ok(())
    }

    fn release_pages(&mut self, pages: &[u16]) {
        for &p in pages {
            let p = usize::from(p);
            if let Some(g) = self.grants[p].take()
                && let Err(g) = g.end()
            {
                // Still in use by the backend: keep the grant, retry in `take_pages`.
                self.grants[p] = Some(g);
            }
            self.free[p / 64] |= 1u64 << (p % 64);
        }
    }

    fn submit(
        &mut self,
        op: Op,
        operation: u8,
        sector: u64,
        len: usize,
        data: Option<&[u8]>,
    ) -> Result<RequestId, Errno> {
        if self.in_flight >= self.max_in_flight || self.ring.is_full() {
            return Err(Errno::EBUSY);
        }
        let slot_idx = self
            .slots
            .iter()
            .position(|s| !s.busy)
            .ok_or(Errno::EBUSY)?;
        let nr = len.div_ceil(PAGE_SIZE);
        let mut pages = [0u16; BLKIF_MAX_SEGMENTS_PER_REQUEST];
        self.take_pages(nr, &mut pages)?;
        let mut req = BlkifRequest {
            operation,
            nr_segments: nr as u8,
            handle: self.handle,
            sector_number: sector,
            ..Default::default()
        };
        for i in 0..nr {
            let p = usize::from(pages[i]);
            let bytes = (len - i * PAGE_SIZE).min(PAGE_SIZE);
            if let Some(d) = data {
                self.pages
                    .write(p, 0, &d[i * PAGE_SIZE..i * PAGE_SIZE + bytes]);
            }
            // Writes only need the backend to read the page.
            let readonly = op == Op::Write;
            let g = match self
                .table
                .grant_access(self.backend, self.pages.frame(p), readonly)
            {
                Ok(g) => g,
                Err(e) => {
                    self.release_pages(&pages[..nr]);
                    return Err(if e == Errno::ENOSPC { Errno::EBUSY } else { e });
                }
            };
            req.seg[i] = BlkifRequestSegment {
                gref: g.gref().0,
                first_sect: 0,
                last_sect: (bytes / SECTOR - 1) as u8,
                _pad: [0; 2],
            };
            self.grants[p] = Some(g);
        }
        let slot = &mut self.slots[slot_idx];
        slot.generation = slot.generation.wrapping_add(1);
        let id = (u64::from(slot.generation) << 8) | slot_idx as u64;
        req.id = id;
        *slot = Slot {
            busy: true,
            generation: slot.generation,
            operation,
            op,
            sector,
            len,
            nr_pages: nr as u8,
            pages,
        };
        if let Err(e) = self.ring.push_request(&req) {
            self.slots[slot_idx].busy = false;
            self.release_pages(&pages[..nr]);
            return Err(e.into());
        }
        self.in_flight += 1;
        if self.ring.push_requests_and_check_notify() {
            self.notify.notify();
        }
        Ok(RequestId(id))
    }

    fn broke(&mut self) -> Errno {
        self.broken = true;
        Errno::EIO
    }

    /// Takes the next response, if one arrived: ends its grants and returns its
    /// [`Completion`]. For a successful read, `on_data(id, offset, bytes)` receives the
    /// data in page-sized pieces first (`offset` counts from the request's start).
    ///
    /// `EIO` (and the device is broken from then on) when the backend answers an id
    /// that is not in flight, with another operation, or moves the ring index wrongly.
    pub fn poll(
        &mut self,
        mut on_data: impl FnMut(RequestId, usize, &[u8]),
    ) -> Result<Option<Completion>, Errno> {
        self.usable()?;
        let rsp = match self.ring.next_response() {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(_) => return Err(self.broke()),
        };
        let idx = (rsp.id & 0xff) as usize;
        let generation = rsp.id >> 8;
        let Some(slot) = self.slots.get(idx).copied() else {
            return Err(self.broke());
        };
        if !slot.busy || u64::from(slot.generation) != generation || slot.operation != rsp.operation
        {
            return Err(self.broke());
        }
        let result = match rsp.status {
            BLKIF_RSP_OKAY => Ok(()),
            BLKIF_RSP_EOPNOTSUPP => Err(Errno::EOPNOTSUPP),
            _ => Err(Errno::EIO),
        };
        let id = RequestId(rsp.id);
        let nr = usize::from(slot.nr_pages);
        if slot.op == Op::Read && result.is_ok() {
            let mut buf = [0u8; PAGE_SIZE];
            for (i, &p) in slot.pages[..nr].iter().enumerate() {
                let bytes = (slot.len - i * PAGE_SIZE).min(PAGE_SIZE);
                self.pages.read(usize::from(p), 0, &mut buf[..bytes]);
                on_data(id, i * PAGE_SIZE, &buf[..bytes]);
            }
        }
        self.release_pages(&slot.pages[..nr]);
        self.slots[idx].busy = false;
        self.in_flight -= 1;
        Ok(Some(Completion {
            id,
            op: slot.op,
            result,
            sector: slot.sector,
            len: slot.len,
        }))
    }

    /// Waits until a response is there: true at once if one is; otherwise asks the
    /// backend for an event and calls `wait` (at most the wait budget, then
    /// `ETIMEDOUT`). `Ok(false)` when nothing is in flight.
    pub fn wait_response<W: Wait + ?Sized>(&mut self, wait: &mut W) -> Result<bool, Errno> {
        self.usable()?;
        if self.in_flight == 0 {
            return Ok(false);
        }
        for _ in 0..self.max_waits {
            match self.ring.final_check_for_responses() {
                Ok(true) => return Ok(true),
                Ok(false) => wait.wait()?,
                Err(_) => return Err(self.broke()),
            }
        }
        Err(Errno::ETIMEDOUT)
    }

    /// Runs one request to completion: nothing else may be in flight (`EBUSY`).
    fn run<W: Wait + ?Sized>(
        &mut self,
        id: RequestId,
        wait: &mut W,
        mut dst: Option<&mut [u8]>,
    ) -> Result<(), Errno> {
        loop {
            self.wait_response(wait)?;
            let done = self.poll(|_, off, bytes| {
                if let Some(d) = dst.as_deref_mut()
                    && let Some(d) = d.get_mut(off..off + bytes.len())
                {
                    d.copy_from_slice(bytes);
                }
            })?;
            if let Some(c) = done {
                // Only our request was in flight, so a completion is ours.
                debug_assert_eq!(c.id, id);
                return c.result;
            }
        }
    }

    fn idle(&self) -> Result<(), Errno> {
        if self.in_flight != 0 {
            return Err(Errno::EBUSY);
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes from `sector` and waits for them (nothing else may be in
    /// flight: `EBUSY`).
    pub fn read<W: Wait + ?Sized>(
        &mut self,
        sector: u64,
        buf: &mut [u8],
        wait: &mut W,
    ) -> Result<(), Errno> {
        self.idle()?;
        let id = self.submit_read(sector, buf.len())?;
        self.run(id, wait, Some(buf))
    }

    /// Writes `data` at `sector` and waits for the answer.
    pub fn write<W: Wait + ?Sized>(
        &mut self,
        sector: u64,
        data: &[u8],
        wait: &mut W,
    ) -> Result<(), Errno> {
        self.idle()?;
        let id = self.submit_write(sector, data)?;
        self.run(id, wait, None)
    }

    /// Flushes the disk's cache and waits for the answer.
    pub fn flush<W: Wait + ?Sized>(&mut self, wait: &mut W) -> Result<(), Errno> {
        self.idle()?;
        let id = self.submit_flush()?;
        self.run(id, wait, None)
    }
}

#[cfg(test)]
mod tests;
