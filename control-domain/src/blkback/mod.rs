//! The block backend (blkback) without hypercalls: it takes requests from a frontend's
//! blkif ring, checks every field, moves the data between the frontend's granted
//! frames and a [`Disk`] through a [`GrantIo`] (the kernel implements it with
//! `GNTTABOP_copy` batches), and answers each request with its `id`.
//!
//! # Operations
//!
//! * `READ` / `WRITE`: 1..=11 segments, each `first_sect <= last_sect <= 7` of its
//!   frame; the segments cover consecutive disk sectors from `sector_number`, which must
//!   all lie on the disk (checked arithmetic). A write on a read-only disk is refused.
//! * `INDIRECT` (`feature-max-indirect-segments`, [`DEFAULT_MAX_INDIRECT_SEGMENTS`] = 32
//!   by default: 128 KiB per request, one indirect page; the bounce buffer is
//!   preallocated for that many pages): a read or write of 1..=max segments listed in
//!   granted pages, which are copied in first.
//! * `FLUSH_DISKCACHE`: writes its segments (0..=11) then [`Disk::flush`].
//! * `WRITE_BARRIER`: flush, write the segments (0..=11), flush: all earlier writes are
//!   durable before it and it is durable when answered. Requests are served in ring
//!   order, one at a time, so nothing overtakes it.
//! * `DISCARD`: within the disk; the secure flag needs
//!   [`DiskFeatures::secure_discard`].
//!
//! # Answers
//!
//! An invalid request or a failed grant copy or disk operation is answered with
//! `BLKIF_RSP_ERROR` and affects only that request; an unknown operation, or one the
//! disk does not support, with `BLKIF_RSP_EOPNOTSUPP`. A request whose segments fail
//! part-way may have transferred its earlier segments (as on real disks). Only a broken
//! ring (a producer index that cannot be right) ends service: [`Disconnect`], and the
//! caller closes that device only.
//!
//! A response carries the request's `operation`, except for an indirect request, whose
//! response carries the indirect operation (`READ`/`WRITE`), as Linux blkfront expects.

mod disk;
mod keys;

#[cfg(test)]
mod tests;

pub use disk::{Disk, DiskError, DiskFeatures, RamDisk, SECTOR_SIZE, SliceDisk};
pub use keys::{DiskInfo, backend_keys};

use alloc::vec::Vec;
use xen_pv_abi::blkif::{
    BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY,
    BLKIF_SEGMENTS_PER_INDIRECT_PAGE, BlkifProtocol, BlkifRequest, BlkifRequestSegment,
    BlkifResponse,
};
use xen_pv_abi::kit::ring::{BackRing, RingError, RingMemory};
use xen_pv_abi::{DomId, Errno, GrantRef};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes of a granted frame.
const PAGE: usize = 4096;

/// One page-aligned page of a bounce buffer: every buffer page is one frame of the
/// control domain, so a segment (which never crosses a page) is one grant copy.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(4096))]
struct Page([u8; PAGE]);

impl core::fmt::Debug for Page {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Page")
    }
}
/// Default `feature-max-indirect-segments`: 32 segments (128 KiB) in one indirect page,
/// enough for Linux to issue large requests while keeping the per-device bounce buffer
/// at 128 KiB.
pub const DEFAULT_MAX_INDIRECT_SEGMENTS: u16 = 32;
/// The largest indirect request the protocol can describe (8 pages of 512 segments).
pub const MAX_INDIRECT_SEGMENTS_LIMIT: u16 =
    (BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * BLKIF_SEGMENTS_PER_INDIRECT_PAGE) as u16;
/// Default number of requests one [`Blkback::service`] call consumes: one 1-page ring.
pub const DEFAULT_REQUESTS_PER_CALL: u32 = 32;

/// Direction of a grant copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Frontend frame → local buffer (write data, indirect pages).
    FromFrontend,
    /// Local buffer → frontend frame (read data).
    ToFrontend,
}

/// One copy between a frontend's granted frame and the local buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantSegment {
    /// The frontend's grant of the frame.
    pub gref: GrantRef,
    /// Byte offset in the frame.
    pub offset: u16,
    /// Bytes to copy; `offset + len <= 4096`.
    pub len: u16,
    /// Byte offset in the local buffer; `buf_offset + len <= buf.len()`, and the range
    /// never crosses a 4 KiB boundary of the buffer (`buf_offset % 4096 == offset`), so
    /// one `GNTTABOP_copy` operation per segment suffices when the buffer is
    /// page-aligned.
    pub buf_offset: usize,
}

/// Grant copies between a frontend's frames and a local buffer: the kernel implements
/// this with a `kit::CopyBatch` (one `GNTTABOP_copy` for the whole slice, or a few
/// when the batch is smaller), each segment a `CopyPtr::Grant { domid, gref, offset }`
/// ↔ `CopyPtr::Local { frame, offset }` where `frame` is the MFN of the buffer page at
/// `buf.as_ptr() + buf_offset / 4096 * 4096` (the backend's buffers are page-aligned)
/// and the local offset equals `offset`.
pub trait GrantIo {
    /// Copies every segment of `segs` in direction `dir` between frames that `domid`
    /// granted and `buf` (only read for [`Direction::ToFrontend`]), and stores each
    /// segment's `GNTST_*` status (0 = okay) in `status[i]`. The backend guarantees
    /// `status.len() == segs.len()` and the bounds documented on [`GrantSegment`].
    ///
    /// `Err` when the copy could not be issued at all (the request fails as a whole).
    fn copy(
        &mut self,
        domid: DomId,
        dir: Direction,
        segs: &[GrantSegment],
        buf: &mut [u8],
        status: &mut [i16],
    ) -> Result<(), Errno>;

    /// [`copy`](Self::copy) where the request needs every segment: true only when the
    /// copy was issued and every status is `GNTST_okay`. `status` must be as long as
    /// `segs` and preset to a failure (-1), so a segment the copy never reached fails.
    fn copy_all(
        &mut self,
        domid: DomId,
        dir: Direction,
        segs: &[GrantSegment],
        buf: &mut [u8],
        status: &mut [i16],
    ) -> bool {
        self.copy(domid, dir, segs, buf, status).is_ok() && status.iter().all(|s| *s == 0)
    }
}

/// Tunables of a [`Blkback`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkbackConfig {
    /// `feature-max-indirect-segments` (0 disables indirect requests); capped at
    /// [`MAX_INDIRECT_SEGMENTS_LIMIT`].
    pub max_indirect_segments: u16,
    /// Requests consumed per [`Blkback::service`] call (at least 1).
    pub requests_per_call: u32,
}

impl Default for BlkbackConfig {
    fn default() -> Self {
        BlkbackConfig {
            max_indirect_segments: DEFAULT_MAX_INDIRECT_SEGMENTS,
            requests_per_call: DEFAULT_REQUESTS_PER_CALL,
        }
    }
}

/// What one [`Blkback::service`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Serviced {
    /// The frontend must be sent an event (`EVTCHNOP_send`).
    pub notify: bool,
    /// Requests are still waiting (the per-call budget ran out or the frontend just
    /// published more): call again instead of waiting for an event.
    pub more: bool,
    /// Requests answered by this call.
    pub requests: u32,
}

/// The frontend broke the ring protocol; the caller closes this device (only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disconnect {
    /// What the ring reported.
    pub error: RingError,
}

/// Counters of a [`Blkback`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered `BLKIF_RSP_OKAY`.
    pub ok: u64,
    /// Requests answered `BLKIF_RSP_ERROR`.
    pub errors: u64,
    /// Requests answered `BLKIF_RSP_EOPNOTSUPP`.
    pub unsupported: u64,
    /// Sectors read from the disk.
    pub sectors_read: u64,
    /// Sectors written to the disk.
    pub sectors_written: u64,
}

/// The request failed: the status to answer with.
type Fail = i16;

/// The backend of one ring: its frontend and preallocated buffers (no allocation after
/// [`new`](Self::new), whatever the frontend sends).
#[derive(Debug)]
pub struct Blkback {
    frontend: DomId,
    cfg: BlkbackConfig,
    /// Bounce buffer: segment `i` occupies page `i`, at the same offset as in its frame.
    data: Vec<Page>,
    /// Indirect segment pages as copied in.
    indirect: Vec<Page>,
    /// The segments of the current request.
    segs: Vec<BlkifRequestSegment>,
    copies: Vec<GrantSegment>,
    status: Vec<i16>,
    stats: Stats,
}

impl Blkback {
    /// A backend for `frontend`'s ring. `ENOMEM` if the buffers (one page per segment
    /// of the largest request) cannot be allocated.
    pub fn new(frontend: DomId, cfg: BlkbackConfig) -> Result<Self, Errno> {
        let cfg = BlkbackConfig {
            max_indirect_segments: cfg.max_indirect_segments.min(MAX_INDIRECT_SEGMENTS_LIMIT),
            requests_per_call: cfg.requests_per_call.max(1),
        };
        let max_segs = usize::from(cfg.max_indirect_segments).max(BLKIF_MAX_SEGMENTS_PER_REQUEST);
        let indirect_pages =
            usize::from(cfg.max_indirect_segments).div_ceil(BLKIF_SEGMENTS_PER_INDIRECT_PAGE);
        let copies = max_segs.max(indirect_pages);
        Ok(Blkback {
            frontend,
            cfg,
            data: zeroed(max_segs)?,
            indirect: zeroed(indirect_pages)?,
            segs: with_capacity(max_segs)?,
            copies: with_capacity(copies)?,
            status: with_capacity(copies)?,
            stats: Stats::default(),
        })
    }

    /// The configuration in force (after capping).
    pub fn config(&self) -> BlkbackConfig {
        self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Serves up to `requests_per_call` requests from `ring`, answering each, then
    /// publishes the responses. When the budget was not used up it does the final check
    /// (asking for an event at the next request), so `more == false` means the caller
    /// may wait for the frontend's event.
    pub fn service<M: RingMemory, G: GrantIo, D: Disk>(
        &mut self,
        ring: &mut BackRing<BlkifProtocol, M>,
        gio: &mut G,
        disk: &mut D,
    ) -> Result<Serviced, Disconnect> {
        let mut done = 0;
        while done < self.cfg.requests_per_call {
            let Some(req) = ring.next_request().map_err(|error| Disconnect { error })? else {
                break;
            };
            let rsp = self.handle(&req, gio, disk);
            match rsp.status {
                BLKIF_RSP_OKAY => self.stats.ok += 1,
                BLKIF_RSP_EOPNOTSUPP => self.stats.unsupported += 1,
                _ => self.stats.errors += 1,
            }
            ring.push_response(&rsp)
                .map_err(|error| Disconnect { error })?;
            done += 1;
        }
        let notify = ring.push_responses_and_check_notify();
        let more = if done >= self.cfg.requests_per_call {
            ring.unconsumed_requests()
                .map_err(|error| Disconnect { error })?
                > 0
        } else {
            ring.final_check_for_requests()
                .map_err(|error| Disconnect { error })?
        };
        Ok(Serviced {
            notify,
            more,
            requests: done,
        })
    }

    /// Serves one request (copied out of the ring) and builds its response.
    fn handle<G: GrantIo, D: Disk>(
        &mut self,
        req: &BlkifRequest,
        gio: &mut G,
        disk: &mut D,
    ) -> BlkifResponse {
        let (operation, result) = match req.operation {
            BLKIF_OP_READ | BLKIF_OP_WRITE => (req.operation, self.direct(req, 1, gio, disk)),
            BLKIF_OP_FLUSH_DISKCACHE | BLKIF_OP_WRITE_BARRIER => {
                (req.operation, self.flush(req, gio, disk))
            }
            BLKIF_OP_DISCARD => (req.operation, self.discard(req, disk)),
            BLKIF_OP_INDIRECT => {
                let ind = req.indirect();
                (ind.indirect_op, self.indirect(req, gio, disk))
            }
            op => (op, Err(BLKIF_RSP_EOPNOTSUPP)),
        };
        BlkifResponse {
            id: req.id,
            operation,
            status: result.err().unwrap_or(BLKIF_RSP_OKAY),
            ..Default::default()
        }
    }

    /// Loads the direct segments of `req` (at least `min` of them) into `self.segs`.
    fn load_direct(&mut self, req: &BlkifRequest, min: usize) -> Result<(), Fail> {
        let n = usize::from(req.nr_segments);
        if n < min {
            return Err(BLKIF_RSP_ERROR);
        }
        let segs = req.segments().ok_or(BLKIF_RSP_ERROR)?;
        self.segs.clear();
        self.segs.extend_from_slice(segs);
        Ok(())
    }

    fn direct<G: GrantIo, D: Disk>(
        &mut self,
        req: &BlkifRequest,
        min: usize,
        gio: &mut G,
        disk: &mut D,
    ) -> Result<(), Fail> {
        self.load_direct(req, min)?;
        self.transfer(
            req.operation == BLKIF_OP_WRITE,
            req.sector_number,
            gio,
            disk,
        )
    }

    fn flush<G: GrantIo, D: Disk>(
        &mut self,
        req: &BlkifRequest,
        gio: &mut G,
        disk: &mut D,
    ) -> Result<(), Fail> {
        if !disk.features().flush {
            return Err(BLKIF_RSP_EOPNOTSUPP);
        }
        self.load_direct(req, 0)?;
        // Everything is checked before the first flush: a refused barrier has no effect.
        let total = if self.segs.is_empty() {
            0
        } else {
            self.prepare(true, req.sector_number, disk)?
        };
        if req.operation == BLKIF_OP_WRITE_BARRIER {
            disk.flush().map_err(disk_status)?;
        }
        if total > 0 {
            self.execute(true, req.sector_number, total, gio, disk)?;
        }
        disk.flush().map_err(disk_status)
    }

    fn discard<D: Disk>(&mut self, req: &BlkifRequest, disk: &mut D) -> Result<(), Fail> {
        let d = req.discard();
        let features = disk.features();
        let secure = d.flag & BLKIF_DISCARD_SECURE != 0;
        if !features.discard || (secure && !features.secure_discard) {
            return Err(BLKIF_RSP_EOPNOTSUPP);
        }
        if disk.read_only() {
            return Err(BLKIF_RSP_ERROR);
        }
        let end = d
            .sector_number
            .checked_add(d.nr_sectors)
            .ok_or(BLKIF_RSP_ERROR)?;
        if end > disk.sectors() {
            return Err(BLKIF_RSP_ERROR);
        }
        if d.nr_sectors == 0 {
            return Ok(());
        }
        disk.discard(d.sector_number, d.nr_sectors, secure)
            .map_err(disk_status)
    }

    fn indirect<G: GrantIo, D: Disk>(
        &mut self,
        req: &BlkifRequest,
        gio: &mut G,
        disk: &mut D,
    ) -> Result<(), Fail> {
        if self.cfg.max_indirect_segments == 0 {
            return Err(BLKIF_RSP_EOPNOTSUPP);
        }
        let ind = req.indirect();
        if ind.indirect_op != BLKIF_OP_READ && ind.indirect_op != BLKIF_OP_WRITE {
            return Err(BLKIF_RSP_ERROR);
        }
        let n = usize::from(ind.nr_segments);
        if n == 0 || n > usize::from(self.cfg.max_indirect_segments) {
            return Err(BLKIF_RSP_ERROR);
        }
        // Copy in only the bytes holding the `n` segments.
        let pages = n.div_ceil(BLKIF_SEGMENTS_PER_INDIRECT_PAGE);
        let seg_size = core::mem::size_of::<BlkifRequestSegment>();
        self.copies.clear();
        let mut left = n * seg_size;
        for (p, gref) in ind.indirect_grefs.iter().take(pages).enumerate() {
            let len = left.min(PAGE);
            left -= len;
            self.copies.push(GrantSegment {
                gref: GrantRef(*gref),
                offset: 0,
                len: len as u16,
                buf_offset: p * PAGE,
            });
        }
        self.status.clear();
        self.status.resize(self.copies.len(), -1);
        if !gio.copy_all(
            self.frontend,
            Direction::FromFrontend,
            &self.copies,
            self.indirect.as_mut_bytes(),
            &mut self.status,
        ) {
            return Err(BLKIF_RSP_ERROR);
        }
        self.segs.clear();
        for i in 0..n {
            let at = (i / BLKIF_SEGMENTS_PER_INDIRECT_PAGE) * PAGE
                + (i % BLKIF_SEGMENTS_PER_INDIRECT_PAGE) * seg_size;
            let seg =
                BlkifRequestSegment::read_from_bytes(&self.indirect.as_bytes()[at..at + seg_size])
                    .map_err(|_| BLKIF_RSP_ERROR)?;
            self.segs.push(seg);
        }
        self.transfer(
            ind.indirect_op == BLKIF_OP_WRITE,
            ind.sector_number,
            gio,
            disk,
        )
    }

    /// Moves the data of `self.segs` (consecutive disk sectors from `sector`) between
    /// the frontend and the disk, after checking every segment and the disk range.
    fn transfer<G: GrantIo, D: Disk>(
        &mut self,
        write: bool,
        sector: u64,
        gio: &mut G,
        disk: &mut D,
    ) -> Result<(), Fail> {
        let total = self.prepare(write, sector, disk)?;
        self.execute(write, sector, total, gio, disk)
    }

    /// Checks `self.segs` against the disk and builds their grant copies; the number of
    /// sectors they cover (at least 1).
    fn prepare<D: Disk>(&mut self, write: bool, sector: u64, disk: &D) -> Result<u64, Fail> {
        if write && disk.read_only() {
            return Err(BLKIF_RSP_ERROR);
        }
        self.copies.clear();
        let mut total: u64 = 0;
        for (i, seg) in self.segs.iter().enumerate() {
            let n = seg.sectors().ok_or(BLKIF_RSP_ERROR)?;
            total += u64::from(n);
            let offset = usize::from(seg.first_sect) * SECTOR_SIZE;
            self.copies.push(GrantSegment {
                gref: GrantRef(seg.gref),
                offset: offset as u16,
                len: (usize::from(n) * SECTOR_SIZE) as u16,
                buf_offset: i * PAGE + offset,
            });
        }
        let end = sector.checked_add(total).ok_or(BLKIF_RSP_ERROR)?;
        if end > disk.sectors() || total == 0 {
            return Err(BLKIF_RSP_ERROR);
        }
        Ok(total)
    }

    /// Performs the copies `prepare` built.
    fn execute<G: GrantIo, D: Disk>(
        &mut self,
        write: bool,
        sector: u64,
        total: u64,
        gio: &mut G,
        disk: &mut D,
    ) -> Result<(), Fail> {
        self.status.clear();
        self.status.resize(self.copies.len(), -1);
        if write {
            self.grant_copy(Direction::FromFrontend, gio)?;
        }
        let mut at = sector;
        for c in &self.copies {
            let data = self.data.as_mut_bytes();
            let buf = &mut data[c.buf_offset..c.buf_offset + usize::from(c.len)];
            if write {
                disk.write(at, buf).map_err(disk_status)?;
            } else {
                disk.read(at, buf).map_err(disk_status)?;
            }
            at += u64::from(c.len) / SECTOR_SIZE as u64;
        }
        if write {
            self.stats.sectors_written += total;
        } else {
            self.grant_copy(Direction::ToFrontend, gio)?;
            self.stats.sectors_read += total;
        }
        Ok(())
    }

    fn grant_copy<G: GrantIo>(&mut self, dir: Direction, gio: &mut G) -> Result<(), Fail> {
        let ok = gio.copy_all(
            self.frontend,
            dir,
            &self.copies,
            self.data.as_mut_bytes(),
            &mut self.status,
        );
        if ok { Ok(()) } else { Err(BLKIF_RSP_ERROR) }
    }
}

/// The response status for a disk failure.
fn disk_status(e: DiskError) -> Fail {
    match e {
        DiskError::Unsupported => BLKIF_RSP_EOPNOTSUPP,
        _ => BLKIF_RSP_ERROR,
    }
}

fn zeroed(pages: usize) -> Result<Vec<Page>, Errno> {
    let mut v = Vec::new();
    v.try_reserve_exact(pages).map_err(|_| Errno::ENOMEM)?;
    v.resize(pages, Page([0; PAGE]));
    Ok(v)
}

fn with_capacity<T>(n: usize) -> Result<Vec<T>, Errno> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
    Ok(v)
}
