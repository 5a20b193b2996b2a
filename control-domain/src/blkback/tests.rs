//! Host tests: a frontend over a `PageBuffer` ring, grants held by a fake `GrantIo`,
//! against RAM / slice disks and a byte-vector model.

use super::*;
use std::collections::{HashMap, HashSet};
use xen_pv_abi::blkif::{
    BLKIF_OP_RESERVED_1, BlkifRequestDiscard, BlkifRequestIndirect, VDISK_READONLY,
};
use xen_pv_abi::grant_table::GNTST_BAD_GNTREF;
use xen_pv_abi::kit::ring::{FrontRing, PageBuffer, REQ_PROD_OFFSET};

const FRONT: DomId = DomId(7);

/// Frames the frontend granted, by grant reference.
#[derive(Default)]
struct FakeGrants {
    pages: HashMap<u32, Vec<u8>>,
    /// Grants whose copies fail.
    bad: HashSet<u32>,
    /// Fail every call as a whole.
    broken: bool,
    calls: usize,
    segments: usize,
}

impl FakeGrants {
    fn grant(&mut self, gref: u32, data: &[u8]) {
        let mut page = vec![0u8; PAGE];
        page[..data.len()].copy_from_slice(data);
        self.pages.insert(gref, page);
    }
    fn page(&self, gref: u32) -> &[u8] {
        &self.pages[&gref]
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
        self.segments += segs.len();
        assert_eq!(segs.len(), status.len());
        // The buffer is page-aligned, so a segment is one frame-local copy.
        assert_eq!(buf.as_ptr() as usize % PAGE, 0);
        if self.broken {
            return Err(Errno::EFAULT);
        }
        for (s, st) in segs.iter().zip(status.iter_mut()) {
            // The guarantees the backend documents.
            assert!(usize::from(s.offset) + usize::from(s.len) <= PAGE);
            assert!(s.buf_offset + usize::from(s.len) <= buf.len());
            assert_eq!(s.buf_offset % PAGE, usize::from(s.offset));
            let page = match self.pages.get_mut(&s.gref.0) {
                Some(p) if domid == FRONT && !self.bad.contains(&s.gref.0) => p,
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

/// A disk wrapper counting flushes, with switchable features.
struct Counting<D> {
    inner: D,
    flushes: usize,
    features: DiskFeatures,
    log: Vec<&'static str>,
    /// Make reads, writes and flushes fail with this.
    fail: Option<DiskError>,
}

impl<D: Disk> Counting<D> {
    fn new(inner: D) -> Self {
        let features = inner.features();
        Counting {
            inner,
            flushes: 0,
            features,
            log: Vec::new(),
            fail: None,
        }
    }
}

impl<D: Disk> Disk for Counting<D> {
    fn sectors(&self) -> u64 {
        self.inner.sectors()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn features(&self) -> DiskFeatures {
        self.features
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.log.push("read");
        self.fail.map_or(Ok(()), Err)?;
        self.inner.read(sector, buf)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.log.push("write");
        self.fail.map_or(Ok(()), Err)?;
        self.inner.write(sector, buf)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.log.push("flush");
        self.flushes += 1;
        self.fail.map_or(Ok(()), Err)?;
        self.inner.flush()
    }
    fn discard(&mut self, sector: u64, count: u64, secure: bool) -> Result<(), DiskError> {
        self.log.push("discard");
        self.inner.discard(sector, count, secure)
    }
}

struct Harness<'a> {
    front: FrontRing<BlkifProtocol, &'a PageBuffer>,
    back: BackRing<BlkifProtocol, &'a PageBuffer>,
    bb: Blkback,
    gio: FakeGrants,
}

impl<'a> Harness<'a> {
    fn new(page: &'a PageBuffer) -> Self {
        Self::with(page, BlkbackConfig::default())
    }
    fn with(page: &'a PageBuffer, cfg: BlkbackConfig) -> Self {
        Harness {
            front: FrontRing::init(page).unwrap(),
            back: BackRing::new(page).unwrap(),
            bb: Blkback::new(FRONT, cfg).unwrap(),
            gio: FakeGrants::default(),
        }
    }

    /// Submits `reqs` and services until the backend is idle; the responses in order.
    fn run<D: Disk>(&mut self, reqs: &[BlkifRequest], disk: &mut D) -> Vec<BlkifResponse> {
        let mut out = Vec::new();
        let mut pending = reqs.iter();
        let mut rounds = 0;
        loop {
            while !self.front.is_full() {
                match pending.next() {
                    Some(r) => {
                        self.front.push_request(r).unwrap();
                    }
                    None => break,
                }
            }
            self.front.push_requests();
            loop {
                let s = self
                    .bb
                    .service(&mut self.back, &mut self.gio, disk)
                    .unwrap();
                assert!(s.requests <= self.bb.config().requests_per_call);
                if !s.more {
                    break;
                }
            }
            while let Some(r) = self.front.next_response().unwrap() {
                out.push(r);
            }
            rounds += 1;
            assert!(rounds < 10_000);
            if out.len() == reqs.len() {
                return out;
            }
        }
    }

    fn one<D: Disk>(&mut self, req: BlkifRequest, disk: &mut D) -> BlkifResponse {
        let r = self.run(&[req], disk);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].id, req.id);
        r[0]
    }
}

fn seg(gref: u32, first: u8, last: u8) -> BlkifRequestSegment {
    BlkifRequestSegment {
        gref,
        first_sect: first,
        last_sect: last,
        _pad: [0; 2],
    }
}

fn rw(op: u8, id: u64, sector: u64, segs: &[BlkifRequestSegment]) -> BlkifRequest {
    let mut r = BlkifRequest {
        operation: op,
        nr_segments: segs.len() as u8,
        id,
        sector_number: sector,
        ..Default::default()
    };
    // More than 11 segments: only `nr_segments` says so (the slot holds 11).
    let n = segs.len().min(r.seg.len());
    r.seg[..n].copy_from_slice(&segs[..n]);
    r
}

fn indirect(op: u8, id: u64, sector: u64, nr: u16, grefs: &[u32]) -> BlkifRequest {
    let mut i = BlkifRequestIndirect {
        operation: BLKIF_OP_INDIRECT,
        indirect_op: op,
        nr_segments: nr,
        id,
        sector_number: sector,
        ..Default::default()
    };
    i.indirect_grefs[..grefs.len()].copy_from_slice(grefs);
    BlkifRequest::from_indirect(&i)
}

fn discard(id: u64, sector: u64, n: u64, flag: u8) -> BlkifRequest {
    BlkifRequest::from_discard(&BlkifRequestDiscard {
        operation: BLKIF_OP_DISCARD,
        flag,
        id,
        sector_number: sector,
        nr_sectors: n,
        ..Default::default()
    })
}

/// A deterministic xorshift64* generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = self.next() as u8;
        }
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    Rng(seed | 1).fill(&mut v);
    v
}

/// FNV-1a.
fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

const SEC: usize = SECTOR_SIZE;

#[test]
fn blkback_write_then_read_round_trip() {
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    let mut disk = RamDisk::new(64).unwrap();
    let data = pattern(1, PAGE);
    h.gio.grant(10, &data);
    h.gio.grant(11, &[]);
    let r = h.one(rw(BLKIF_OP_WRITE, 1, 8, &[seg(10, 0, 7)]), &mut disk);
    assert_eq!((r.operation, r.status), (BLKIF_OP_WRITE, BLKIF_RSP_OKAY));
    assert_eq!(hash(&disk.as_bytes()[8 * SEC..16 * SEC]), hash(&data));
    let r = h.one(rw(BLKIF_OP_READ, 2, 8, &[seg(11, 0, 7)]), &mut disk);
    assert_eq!((r.operation, r.status), (BLKIF_OP_READ, BLKIF_RSP_OKAY));
    assert_eq!(hash(h.gio.page(11)), hash(&data));
    let s = h.bb.stats();
    assert_eq!((s.ok, s.sectors_read, s.sectors_written), (2, 8, 8));
}

#[test]
fn blkback_multi_segment_partial_sectors() {
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    let mut disk = RamDisk::new(64).unwrap();
    let segs = [seg(1, 2, 5), seg(2, 0, 7), seg(3, 7, 7), seg(4, 0, 0)];
    let mut expect = Vec::new();
    for s in &segs {
        let d = pattern(u64::from(s.gref), PAGE);
        h.gio.grant(s.gref, &d);
        expect.extend_from_slice(
            &d[usize::from(s.first_sect) * SEC..(usize::from(s.last_sect) + 1) * SEC],
        );
    }
    assert_eq!(expect.len(), 14 * SEC);
    let r = h.one(rw(BLKIF_OP_WRITE, 9, 3, &segs), &mut disk);
    assert_eq!(r.status, BLKIF_RSP_OKAY);
    assert_eq!(&disk.as_bytes()[3 * SEC..17 * SEC], &expect[..]);
    assert!(disk.as_bytes()[..3 * SEC].iter().all(|b| *b == 0));
    assert!(disk.as_bytes()[17 * SEC..].iter().all(|b| *b == 0));

    // Read back into other frames at other offsets: 3 + 6 + 5 sectors.
    for g in 20..23 {
        h.gio.grant(g, &[0xee; PAGE]);
    }
    let back = [seg(20, 5, 7), seg(21, 1, 6), seg(22, 0, 4)];
    let r = h.one(rw(BLKIF_OP_READ, 10, 3, &back), &mut disk);
    assert_eq!(r.status, BLKIF_RSP_OKAY);
    let mut got = Vec::new();
    for s in &back {
        let p = h.gio.page(s.gref);
        got.extend_from_slice(
            &p[usize::from(s.first_sect) * SEC..(usize::from(s.last_sect) + 1) * SEC],
        );
        // Bytes outside the segment are untouched.
        assert!(
            p[..usize::from(s.first_sect) * SEC]
                .iter()
                .all(|b| *b == 0xee)
        );
        assert!(
            p[(usize::from(s.last_sect) + 1) * SEC..]
                .iter()
                .all(|b| *b == 0xee)
        );
    }
    assert_eq!(hash(&got), hash(&expect));
    // Exactly at the end of the disk is fine.
    let r = h.one(rw(BLKIF_OP_READ, 11, 56, &[seg(20, 0, 7)]), &mut disk);
    assert_eq!(r.status, BLKIF_RSP_OKAY);
}

/// Writes the segment list of an indirect request into frames `base..`.
fn grant_indirect(g: &mut FakeGrants, base: u32, segs: &[BlkifRequestSegment]) -> Vec<u32> {
    let mut grefs = Vec::new();
    for (p, chunk) in segs.chunks(BLKIF_SEGMENTS_PER_INDIRECT_PAGE).enumerate() {
        let mut bytes = Vec::new();
        for s in chunk {
            bytes.extend_from_slice(zerocopy::IntoBytes::as_bytes(s));
        }
        g.grant(base + p as u32, &bytes);
        grefs.push(base + p as u32);
    }
    grefs
}

#[test]
fn blkback_indirect_requests() {
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    let mut disk = RamDisk::new(1024).unwrap();
    // 32 segments of mixed sizes.
    let mut segs = Vec::new();
    let mut expect = Vec::new();
    for i in 0..32u32 {
        let (f, l) = ((i % 3) as u8, 7 - (i % 2) as u8);
        let d = pattern(100 + u64::from(i), PAGE);
        h.gio.grant(100 + i, &d);
        expect.extend_from_slice(&d[usize::from(f) * SEC..(usize::from(l) + 1) * SEC]);
        segs.push(seg(100 + i, f, l));
    }
    let grefs = grant_indirect(&mut h.gio, 900, &segs);
    let r = h.one(indirect(BLKIF_OP_WRITE, 5, 17, 32, &grefs), &mut disk);
    assert_eq!((r.operation, r.status), (BLKIF_OP_WRITE, BLKIF_RSP_OKAY));
    let n = expect.len();
    assert_eq!(
        hash(&disk.as_bytes()[17 * SEC..17 * SEC + n]),
        hash(&expect)
    );

    // Read the same range back through 12 full-page segments (an indirect request
    // larger than a direct one).
    let total = n / SEC;
    let mut rsegs = Vec::new();
    let mut left = total;
    for i in 0..12u32 {
        let k = left.min(8);
        if k == 0 {
            break;
        }
        h.gio.grant(300 + i, &[]);
        rsegs.push(seg(300 + i, 0, (k - 1) as u8));
        left -= k;
    }
    // 32 segments of 5..=8 sectors need more than 12 pages: read the first 12 pages.
    let sectors: usize = rsegs
        .iter()
        .map(|s| usize::from(s.sectors().unwrap()))
        .sum();
    let grefs = grant_indirect(&mut h.gio, 950, &rsegs);
    let r = h.one(
        indirect(BLKIF_OP_READ, 6, 17, rsegs.len() as u16, &grefs),
        &mut disk,
    );
    assert_eq!((r.operation, r.status), (BLKIF_OP_READ, BLKIF_RSP_OKAY));
    let mut got = Vec::new();
    for s in &rsegs {
        got.extend_from_slice(&h.gio.page(s.gref)[..usize::from(s.sectors().unwrap()) * SEC]);
    }
    assert_eq!(got, expect[..sectors * SEC]);

    // Too many segments, none, a bad inner op, a failing indirect page, a bad segment.
    let e = |r: BlkifResponse| r.status;
    assert_eq!(
        e(h.one(indirect(BLKIF_OP_READ, 7, 0, 33, &grefs), &mut disk)),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        e(h.one(indirect(BLKIF_OP_READ, 8, 0, 0, &grefs), &mut disk)),
        BLKIF_RSP_ERROR
    );
    let r = h.one(indirect(BLKIF_OP_DISCARD, 9, 0, 1, &grefs), &mut disk);
    assert_eq!((r.operation, r.status), (BLKIF_OP_DISCARD, BLKIF_RSP_ERROR));
    assert_eq!(
        e(h.one(indirect(BLKIF_OP_READ, 10, 0, 1, &[4242]), &mut disk)),
        BLKIF_RSP_ERROR
    );
    let bad = grant_indirect(&mut h.gio, 960, &[seg(300, 3, 2)]);
    assert_eq!(
        e(h.one(indirect(BLKIF_OP_READ, 11, 0, 1, &bad), &mut disk)),
        BLKIF_RSP_ERROR
    );
    let past = grant_indirect(&mut h.gio, 961, &[seg(300, 0, 7); 2]);
    assert_eq!(
        e(h.one(indirect(BLKIF_OP_READ, 12, 1016, 2, &past), &mut disk)),
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        e(h.one(indirect(BLKIF_OP_READ, 13, 1008, 2, &past), &mut disk)),
        BLKIF_RSP_OKAY
    );

    // Indirect disabled.
    let page2 = PageBuffer::new();
    let mut h2 = Harness::with(
        &page2,
        BlkbackConfig {
            max_indirect_segments: 0,
            ..Default::default()
        },
    );
    h2.gio = core::mem::take(&mut h.gio);
    let r = h2.one(indirect(BLKIF_OP_READ, 14, 0, 1, &past), &mut disk);
    assert_eq!(r.status, BLKIF_RSP_EOPNOTSUPP);
}

#[test]
fn blkback_indirect_over_several_pages() {
    let page = PageBuffer::new();
    let cfg = BlkbackConfig {
        max_indirect_segments: 1000,
        ..Default::default()
    };
    let mut h = Harness::with(&page, cfg);
    let mut disk = RamDisk::new(1000).unwrap();
    // 600 one-sector segments span two indirect pages.
    let mut segs = Vec::new();
    for i in 0..600u32 {
        h.gio.grant(i, &pattern(u64::from(i) + 7, SEC));
        segs.push(seg(i, 0, 0));
    }
    let grefs = grant_indirect(&mut h.gio, 5000, &segs);
    assert_eq!(grefs.len(), 2);
    let r = h.one(indirect(BLKIF_OP_WRITE, 1, 100, 600, &grefs), &mut disk);
    assert_eq!(r.status, BLKIF_RSP_OKAY);
    for i in 0..600usize {
        let s = (100 + i) * SEC;
        assert_eq!(
            &disk.as_bytes()[s..s + SEC],
            &pattern(i as u64 + 7, SEC)[..]
        );
    }
    // The cap: more than the protocol allows is capped at 8 * 512.
    let big = Blkback::new(
        FRONT,
        BlkbackConfig {
            max_indirect_segments: u16::MAX,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(big.config().max_indirect_segments, 4096);
}

#[test]
fn blkback_flush_barrier_and_their_order() {
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    let mut disk = Counting::new(RamDisk::new(64).unwrap());
    let d = pattern(3, PAGE);
    h.gio.grant(1, &d);

    let r = h.one(rw(BLKIF_OP_FLUSH_DISKCACHE, 1, 0, &[]), &mut disk);
    assert_eq!(
        (r.operation, r.status),
        (BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_OKAY)
    );
    assert_eq!(disk.log, ["flush"]);

    disk.log.clear();
    let r = h.one(rw(BLKIF_OP_WRITE_BARRIER, 2, 4, &[seg(1, 0, 7)]), &mut disk);
    assert_eq!(
        (r.operation, r.status),
        (BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_OKAY)
    );
    assert_eq!(disk.log, ["flush", "write", "flush"]);
    assert_eq!(&disk.inner.as_bytes()[4 * SEC..12 * SEC], &d[..]);

    disk.log.clear();
    let r = h.one(
        rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 20, &[seg(1, 1, 1)]),
        &mut disk,
    );
    assert_eq!(r.status, BLKIF_RSP_OKAY);
    assert_eq!(disk.log, ["write", "flush"]);
    assert_eq!(&disk.inner.as_bytes()[20 * SEC..21 * SEC], &d[SEC..2 * SEC]);

    // A barrier's data is checked like a write's.
    let r = h.one(
        rw(BLKIF_OP_WRITE_BARRIER, 4, 60, &[seg(1, 0, 7)]),
        &mut disk,
    );
    assert_eq!(r.status, BLKIF_RSP_ERROR);
    let r = h.one(
        rw(BLKIF_OP_WRITE_BARRIER, 5, 0, &[seg(1, 0, 7); 12]),
        &mut disk,
    );
    assert_eq!(r.status, BLKIF_RSP_ERROR);

    // Without flush support both are unsupported.
    disk.features.flush = false;
    assert_eq!(
        h.one(rw(BLKIF_OP_FLUSH_DISKCACHE, 6, 0, &[]), &mut disk)
            .status,
        BLKIF_RSP_EOPNOTSUPP
    );
    assert_eq!(
        h.one(rw(BLKIF_OP_WRITE_BARRIER, 7, 0, &[seg(1, 0, 7)]), &mut disk)
            .status,
        BLKIF_RSP_EOPNOTSUPP
    );
    // Refused barriers flushed nothing: 1 + 2 + 1.
    assert_eq!(disk.flushes, 4);
}

#[test]
fn blkback_discard() {
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    let mut disk = Counting::new(RamDisk::from_image(&pattern(5, 64 * SEC)).unwrap());
    let r = h.one(discard(1, 10, 5, 0), &mut disk);
    assert_eq!((r.operation, r.status), (BLKIF_OP_DISCARD, BLKIF_RSP_OKAY));
    let b = disk.inner.as_bytes();
    assert!(b[10 * SEC..15 * SEC].iter().all(|x| *x == 0));
    assert_eq!(
        &b[9 * SEC..10 * SEC],
        &pattern(5, 64 * SEC)[9 * SEC..10 * SEC]
    );
    assert_eq!(
        &b[15 * SEC..16 * SEC],
        &pattern(5, 64 * SEC)[15 * SEC..16 * SEC]
    );

    assert_eq!(
        h.one(discard(2, 60, 4, 0), &mut disk).status,
        BLKIF_RSP_OKAY
    );
    assert_eq!(
        h.one(discard(3, 60, 5, 0), &mut disk).status,
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        h.one(discard(4, u64::MAX, 2, 0), &mut disk).status,
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        h.one(discard(5, 1, u64::MAX, 0), &mut disk).status,
        BLKIF_RSP_ERROR
    );
    assert_eq!(h.one(discard(6, 0, 0, 0), &mut disk).status, BLKIF_RSP_OKAY);
    assert_eq!(
        h.one(discard(7, 0, 1, BLKIF_DISCARD_SECURE), &mut disk)
            .status,
        BLKIF_RSP_OKAY
    );
    disk.features.secure_discard = false;
    assert_eq!(
        h.one(discard(8, 0, 1, BLKIF_DISCARD_SECURE), &mut disk)
            .status,
        BLKIF_RSP_EOPNOTSUPP
    );
    assert_eq!(h.one(discard(9, 0, 1, 0), &mut disk).status, BLKIF_RSP_OKAY);
    disk.inner.set_read_only(true);
    assert_eq!(
        h.one(discard(10, 0, 1, 0), &mut disk).status,
        BLKIF_RSP_ERROR
    );
    disk.features.discard = false;
    assert_eq!(
        h.one(discard(11, 0, 1, 0), &mut disk).status,
        BLKIF_RSP_EOPNOTSUPP
    );

    let image = pattern(6, 16 * SEC);
    let mut slice = SliceDisk::copy_on_write(&image, 4);
    assert_eq!(
        h.one(discard(12, 0, 1, 0), &mut slice).status,
        BLKIF_RSP_EOPNOTSUPP
    );
}

#[test]
fn blkback_error_paths_fail_only_their_request() {
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    let mut disk = RamDisk::new(64).unwrap();
    h.gio.grant(1, &pattern(9, PAGE));
    let full = seg(1, 0, 7);
    let cases: Vec<(BlkifRequest, i16)> = vec![
        (rw(BLKIF_OP_READ, 1, 57, &[full]), BLKIF_RSP_ERROR), // past the end
        (rw(BLKIF_OP_WRITE, 2, 64, &[seg(1, 0, 0)]), BLKIF_RSP_ERROR),
        (rw(BLKIF_OP_READ, 3, u64::MAX - 3, &[full]), BLKIF_RSP_ERROR), // overflow
        (rw(BLKIF_OP_READ, 4, 0, &[seg(1, 4, 3)]), BLKIF_RSP_ERROR),    // first > last
        (rw(BLKIF_OP_READ, 5, 0, &[seg(1, 0, 8)]), BLKIF_RSP_ERROR),    // last > 7
        (rw(BLKIF_OP_WRITE, 6, 0, &[seg(1, 8, 8)]), BLKIF_RSP_ERROR),
        (rw(BLKIF_OP_READ, 7, 0, &[]), BLKIF_RSP_ERROR), // no segments
        (
            rw(BLKIF_OP_READ, 8, 0, &[seg(1, 0, 0); 12]),
            BLKIF_RSP_ERROR,
        ),
        (
            rw(BLKIF_OP_WRITE, 9, 0, &[seg(1, 0, 0), seg(2, 0, 0)]),
            BLKIF_RSP_ERROR,
        ), // no grant 2
        (rw(BLKIF_OP_READ, 10, 0, &[seg(2, 0, 0)]), BLKIF_RSP_ERROR),
        (
            rw(BLKIF_OP_RESERVED_1, 11, 0, &[full]),
            BLKIF_RSP_EOPNOTSUPP,
        ),
        (rw(7, 12, 0, &[full]), BLKIF_RSP_EOPNOTSUPP),
        (rw(255, 13, 0, &[]), BLKIF_RSP_EOPNOTSUPP),
        (
            rw(BLKIF_OP_READ, 14, 0, &[seg(1, 0, 0); 11]),
            BLKIF_RSP_OKAY,
        ),
    ];
    let mut with_255 = cases.clone();
    with_255[12].0.nr_segments = 255;
    let reqs: Vec<_> = with_255.iter().map(|c| c.0).collect();
    let rsps = h.run(&reqs, &mut disk);
    for ((req, want), rsp) in with_255.iter().zip(&rsps) {
        assert_eq!(rsp.id, req.id);
        assert_eq!(rsp.operation, req.operation);
        assert_eq!(rsp.status, *want, "request {}", req.id);
    }
    // Nothing was written by the failed writes.
    assert!(disk.as_bytes().iter().all(|b| *b == 0));

    // A grant that fails to copy, then the same request with a good grant.
    h.gio.bad.insert(1);
    assert_eq!(
        h.one(rw(BLKIF_OP_WRITE, 20, 0, &[full]), &mut disk).status,
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        h.one(rw(BLKIF_OP_READ, 21, 0, &[full]), &mut disk).status,
        BLKIF_RSP_ERROR
    );
    h.gio.bad.clear();
    h.gio.broken = true;
    assert_eq!(
        h.one(rw(BLKIF_OP_READ, 22, 0, &[full]), &mut disk).status,
        BLKIF_RSP_ERROR
    );
    h.gio.broken = false;
    assert_eq!(
        h.one(rw(BLKIF_OP_WRITE, 23, 0, &[full]), &mut disk).status,
        BLKIF_RSP_OKAY
    );

    // Read-only disks refuse writes and barriers but serve reads and flushes.
    disk.set_read_only(true);
    assert_eq!(
        h.one(rw(BLKIF_OP_WRITE, 24, 0, &[full]), &mut disk).status,
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        h.one(rw(BLKIF_OP_WRITE_BARRIER, 25, 0, &[full]), &mut disk)
            .status,
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        h.one(rw(BLKIF_OP_READ, 26, 0, &[full]), &mut disk).status,
        BLKIF_RSP_OKAY
    );
    assert_eq!(
        h.one(rw(BLKIF_OP_FLUSH_DISKCACHE, 27, 0, &[]), &mut disk)
            .status,
        BLKIF_RSP_OKAY
    );
    let s = h.bb.stats();
    assert_eq!(s.unsupported, 3);
}

#[test]
fn blkback_slice_disk_read_only_and_copy_on_write() {
    let image = pattern(11, 20 * SEC + 100); // a trailing partial sector is dropped
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    h.gio.grant(1, &[]);
    let mut ro = SliceDisk::read_only(&image);
    assert_eq!(ro.sectors(), 20);
    assert!(ro.read_only());
    assert_eq!(
        h.one(rw(BLKIF_OP_READ, 1, 12, &[seg(1, 0, 7)]), &mut ro)
            .status,
        BLKIF_RSP_OKAY
    );
    assert_eq!(h.gio.page(1), &image[12 * SEC..20 * SEC]);
    assert_eq!(
        h.one(rw(BLKIF_OP_WRITE, 2, 0, &[seg(1, 0, 0)]), &mut ro)
            .status,
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        h.one(rw(BLKIF_OP_READ, 3, 13, &[seg(1, 0, 7)]), &mut ro)
            .status,
        BLKIF_RSP_ERROR
    );

    // Copy-on-write with a quota of 2 chunks (16 sectors).
    let mut cow = SliceDisk::copy_on_write(&image, 2);
    assert!(!cow.read_only());
    let d = pattern(12, PAGE);
    h.gio.grant(2, &d);
    // Sectors 6..=9 straddle chunks 0 and 1.
    assert_eq!(
        h.one(rw(BLKIF_OP_WRITE, 4, 6, &[seg(2, 0, 3)]), &mut cow)
            .status,
        BLKIF_RSP_OKAY
    );
    assert_eq!(cow.overlay_chunks(), 2);
    let mut model = image[..20 * SEC].to_vec();
    model[6 * SEC..10 * SEC].copy_from_slice(&d[..4 * SEC]);
    h.gio.grant(3, &[]);
    for s in [0u64, 5, 8, 12] {
        assert_eq!(
            h.one(rw(BLKIF_OP_READ, 5, s, &[seg(3, 0, 7)]), &mut cow)
                .status,
            BLKIF_RSP_OKAY
        );
        let s = s as usize * SEC;
        assert_eq!(h.gio.page(3), &model[s..s + PAGE]);
    }
    // A third chunk exceeds the quota; within the two it still works.
    assert_eq!(
        h.one(rw(BLKIF_OP_WRITE, 6, 16, &[seg(2, 0, 0)]), &mut cow)
            .status,
        BLKIF_RSP_ERROR
    );
    assert_eq!(
        h.one(rw(BLKIF_OP_WRITE, 7, 15, &[seg(2, 0, 0)]), &mut cow)
            .status,
        BLKIF_RSP_OKAY
    );
    // The image itself is untouched (it is borrowed immutably; check the reads).
    let mut fresh = SliceDisk::read_only(&image);
    let mut buf = vec![0; 4 * SEC];
    fresh.read(6, &mut buf).unwrap();
    assert_eq!(buf, image[6 * SEC..10 * SEC]);
    assert_eq!(fresh.write(0, &buf), Err(DiskError::ReadOnly));
    assert_eq!(fresh.read(0, &mut buf[..100]), Err(DiskError::BadLength));
    assert_eq!(
        fresh.read(19, &mut buf[..2 * SEC]),
        Err(DiskError::OutOfRange)
    );
}

#[test]
fn blkback_ram_disk_allocation_is_fallible() {
    assert_eq!(RamDisk::new(u64::MAX).unwrap_err(), DiskError::NoSpace);
    assert_eq!(RamDisk::new(1 << 60).unwrap_err(), DiskError::NoSpace);
    let mut d = RamDisk::new(4).unwrap();
    assert_eq!(d.sectors(), 4);
    assert_eq!(d.discard(3, 2, false), Err(DiskError::OutOfRange));
    assert_eq!(d.write(u64::MAX, &[0; SEC]), Err(DiskError::OutOfRange));
}

#[test]
fn blkback_budget_notify_and_final_check() {
    let page = PageBuffer::new();
    let cfg = BlkbackConfig {
        requests_per_call: 4,
        ..Default::default()
    };
    let mut h = Harness::with(&page, cfg);
    let mut disk = RamDisk::new(8).unwrap();
    for i in 0..10 {
        h.front
            .push_request(&rw(BLKIF_OP_FLUSH_DISKCACHE, i, 0, &[]))
            .unwrap();
    }
    h.front.push_requests();
    let s = h.bb.service(&mut h.back, &mut h.gio, &mut disk).unwrap();
    assert_eq!((s.requests, s.notify, s.more), (4, true, true));
    let s = h.bb.service(&mut h.back, &mut h.gio, &mut disk).unwrap();
    // The frontend has not consumed responses or asked for a new event.
    assert_eq!((s.requests, s.notify, s.more), (4, false, true));
    assert!(h.front.final_check_for_responses().unwrap());
    while h.front.next_response().unwrap().is_some() {}
    assert!(!h.front.final_check_for_responses().unwrap());
    let s = h.bb.service(&mut h.back, &mut h.gio, &mut disk).unwrap();
    assert_eq!((s.requests, s.notify, s.more), (2, true, false));
    let s = h.bb.service(&mut h.back, &mut h.gio, &mut disk).unwrap();
    assert_eq!((s.requests, s.notify, s.more), (0, false, false));
    // The final check asked for an event at the next request.
    h.front
        .push_request(&rw(BLKIF_OP_FLUSH_DISKCACHE, 99, 0, &[]))
        .unwrap();
    assert!(h.front.push_requests_and_check_notify());
}

#[test]
fn blkback_hostile_producer_index_disconnects() {
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    let mut disk = RamDisk::new(8).unwrap();
    page.store_u32(REQ_PROD_OFFSET, 1_000_000);
    let e =
        h.bb.service(&mut h.back, &mut h.gio, &mut disk)
            .unwrap_err();
    assert!(matches!(
        e.error,
        RingError::ProducerOverflow { prod: 1_000_000 }
    ));
    // Behind what was consumed: also a violation.
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    h.front
        .push_request(&rw(BLKIF_OP_FLUSH_DISKCACHE, 1, 0, &[]))
        .unwrap();
    h.front
        .push_request(&rw(BLKIF_OP_FLUSH_DISKCACHE, 2, 0, &[]))
        .unwrap();
    h.front.push_requests();
    h.bb.service(&mut h.back, &mut h.gio, &mut disk).unwrap();
    page.store_u32(REQ_PROD_OFFSET, 1);
    assert!(h.bb.service(&mut h.back, &mut h.gio, &mut disk).is_err());
    page.store_u32(REQ_PROD_OFFSET, u32::MAX);
    assert!(h.bb.service(&mut h.back, &mut h.gio, &mut disk).is_err());
}

#[test]
fn blkback_random_garbage_never_panics_and_is_bounded() {
    let mut rng = Rng(0x5eed_1234);
    for round in 0..200 {
        let page = PageBuffer::new();
        let cfg = BlkbackConfig {
            max_indirect_segments: [0, 32, 600][round % 3],
            requests_per_call: 1 + (round % 40) as u32,
        };
        let mut h = Harness::with(&page, cfg);
        for g in 0..16 {
            let d = pattern(rng.next(), PAGE);
            h.gio.grant(g, &d);
        }
        let mut disk = RamDisk::new(1 + rng.below(64)).unwrap();
        if rng.below(4) == 0 {
            disk.set_read_only(true);
        }
        for _ in 0..20 {
            // Garbage in every slot, small numbers where they matter half the time.
            for slot in 0..32usize {
                let mut req = BlkifRequest::default();
                rng.fill(zerocopy::IntoBytes::as_mut_bytes(&mut req));
                if rng.below(2) == 0 {
                    req.operation = rng.below(8) as u8;
                    req.nr_segments = rng.below(14) as u8;
                    req.sector_number = rng.below(80);
                    for s in &mut req.seg {
                        s.gref = rng.below(20) as u32;
                        s.first_sect = rng.below(9) as u8;
                        s.last_sect = rng.below(9) as u8;
                    }
                    if req.operation == BLKIF_OP_INDIRECT {
                        let mut i = req.indirect();
                        i.indirect_op = rng.below(3) as u8;
                        i.nr_segments = rng.below(700) as u16;
                        for g in &mut i.indirect_grefs {
                            *g = rng.below(20) as u32;
                        }
                        req = BlkifRequest::from_indirect(&i);
                    }
                }
                page.write(64 + slot * 112, zerocopy::IntoBytes::as_bytes(&req));
            }
            // Mostly plausible producer indices, sometimes wild ones.
            let prod = match rng.below(8) {
                0 => rng.next() as u32,
                _ => h.back.rsp_prod_pvt().wrapping_add(rng.below(33) as u32),
            };
            page.store_u32(REQ_PROD_OFFSET, prod);
            let calls_before = h.gio.calls;
            match h.bb.service(&mut h.back, &mut h.gio, &mut disk) {
                Ok(s) => {
                    assert!(s.requests <= cfg.requests_per_call);
                    // At most three copies (indirect pages, data in or out) per request.
                    assert!(h.gio.calls - calls_before <= 3 * s.requests as usize);
                }
                Err(_) => break,
            }
            // The frontend "consumes" the responses by moving rsp_event along.
            page.store_u32(12, h.back.rsp_prod_pvt().wrapping_add(1));
        }
        let s = h.bb.stats();
        assert!(s.sectors_read + s.sectors_written <= (s.ok + s.errors) * 4096 * 8);
    }
}

/// Random valid requests against a byte model; reads are checked against the model as
/// they complete, and the whole disk at the end.
#[test]
fn blkback_randomized_against_model() {
    const SECTORS: u64 = 256;
    let mut rng = Rng(0xdead_beef_cafe);
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    let mut disk = RamDisk::new(SECTORS).unwrap();
    let mut model = vec![0u8; SECTORS as usize * SEC];
    let mut next_gref = 1u32;
    for step in 0..400u64 {
        let kind = rng.below(10);
        // A random segment list fitting on the disk.
        let max_segs = if kind >= 7 { 32 } else { 11 };
        let nseg = 1 + rng.below(max_segs) as usize;
        let mut segs = Vec::new();
        let mut total = 0u64;
        for _ in 0..nseg {
            let first = rng.below(8) as u8;
            let last = first + rng.below(8 - u64::from(first)) as u8;
            segs.push(seg(next_gref, first, last));
            total += u64::from(last - first + 1);
            next_gref += 1;
        }
        let sector = rng.below(SECTORS - total.min(SECTORS) + 1);
        let fits = sector + total <= SECTORS;
        let write = rng.below(2) == 0;
        let mut expect_data = Vec::new();
        for s in &segs {
            let d = pattern(rng.next(), PAGE);
            h.gio.grant(s.gref, &d);
            let (f, l) = (
                usize::from(s.first_sect) * SEC,
                (usize::from(s.last_sect) + 1) * SEC,
            );
            expect_data.extend_from_slice(&d[f..l]);
        }
        let req = match kind {
            0..=6 => rw(
                if write { BLKIF_OP_WRITE } else { BLKIF_OP_READ },
                step,
                sector,
                &segs,
            ),
            7 | 8 => {
                let grefs = grant_indirect(&mut h.gio, 1_000_000 + step as u32 * 10, &segs);
                indirect(
                    if write { BLKIF_OP_WRITE } else { BLKIF_OP_READ },
                    step,
                    sector,
                    nseg as u16,
                    &grefs,
                )
            }
            _ => discard(step, sector, total.min(SECTORS - sector), 0),
        };
        let rsp = h.one(req, &mut disk);
        if kind == 9 {
            assert_eq!(rsp.status, BLKIF_RSP_OKAY);
            let n = total.min(SECTORS - sector) as usize;
            model[sector as usize * SEC..(sector as usize + n) * SEC].fill(0);
        } else if !fits {
            assert_eq!(rsp.status, BLKIF_RSP_ERROR);
        } else if write {
            assert_eq!(rsp.status, BLKIF_RSP_OKAY);
            let s = sector as usize * SEC;
            model[s..s + expect_data.len()].copy_from_slice(&expect_data);
        } else {
            assert_eq!(rsp.status, BLKIF_RSP_OKAY);
            let mut at = sector as usize * SEC;
            for sg in &segs {
                let (f, l) = (
                    usize::from(sg.first_sect) * SEC,
                    (usize::from(sg.last_sect) + 1) * SEC,
                );
                assert_eq!(
                    &h.gio.page(sg.gref)[f..l],
                    &model[at..at + l - f],
                    "step {step}"
                );
                at += l - f;
            }
        }
        // Drop the frames of this request to keep the fake small.
        for s in &segs {
            h.gio.pages.remove(&s.gref);
        }
    }
    assert_eq!(hash(disk.as_bytes()), hash(&model));
    assert!(h.bb.stats().ok > 300);
}

#[test]
fn blkback_xenstore_keys() {
    let disk = RamDisk::new(2048).unwrap();
    let keys = backend_keys(&DiskInfo::of(&disk), DEFAULT_MAX_INDIRECT_SEGMENTS);
    let get = |keys: &[(&str, String)], k: &str| {
        keys.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    };
    assert_eq!(get(&keys, "sectors").as_deref(), Some("2048"));
    assert_eq!(get(&keys, "sector-size").as_deref(), Some("512"));
    assert_eq!(get(&keys, "info").as_deref(), Some("0"));
    assert_eq!(get(&keys, "mode").as_deref(), Some("w"));
    assert_eq!(get(&keys, "feature-flush-cache").as_deref(), Some("1"));
    assert_eq!(get(&keys, "feature-barrier").as_deref(), Some("1"));
    assert_eq!(get(&keys, "feature-discard").as_deref(), Some("1"));
    assert_eq!(get(&keys, "discard-secure").as_deref(), Some("1"));
    assert_eq!(
        get(&keys, "feature-max-indirect-segments").as_deref(),
        Some("32")
    );
    assert_eq!(get(&keys, "feature-persistent").as_deref(), Some("0"));

    let image = [0u8; 4096];
    let ro = SliceDisk::read_only(&image);
    let keys = backend_keys(&DiskInfo::of(&ro), 0);
    assert_eq!(get(&keys, "sectors").as_deref(), Some("8"));
    assert_eq!(get(&keys, "info"), Some(format!("{VDISK_READONLY}")));
    assert_eq!(get(&keys, "mode").as_deref(), Some("r"));
    assert_eq!(get(&keys, "feature-discard").as_deref(), Some("0"));
    assert_eq!(get(&keys, "discard-granularity"), None);
    assert_eq!(get(&keys, "feature-max-indirect-segments"), None);
    // No key twice.
    let mut names: Vec<_> = keys.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), keys.len());
}

#[test]
fn blkback_disk_failures_become_responses() {
    let page = PageBuffer::new();
    let mut h = Harness::new(&page);
    let mut disk = Counting::new(RamDisk::new(16).unwrap());
    h.gio.grant(1, &[]);
    let full = seg(1, 0, 7);
    disk.fail = Some(DiskError::Io);
    for op in [BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER] {
        assert_eq!(
            h.one(rw(op, 1, 0, &[full]), &mut disk).status,
            BLKIF_RSP_ERROR
        );
    }
    assert_eq!(
        h.one(rw(BLKIF_OP_FLUSH_DISKCACHE, 2, 0, &[]), &mut disk)
            .status,
        BLKIF_RSP_ERROR
    );
    disk.fail = Some(DiskError::Unsupported);
    assert_eq!(
        h.one(rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 0, &[]), &mut disk)
            .status,
        BLKIF_RSP_EOPNOTSUPP
    );
    disk.fail = None;
    assert_eq!(
        h.one(rw(BLKIF_OP_READ, 4, 8, &[full]), &mut disk).status,
        BLKIF_RSP_OKAY
    );
    let s = h.bb.stats();
    assert_eq!((s.ok, s.errors, s.unsupported), (1, 4, 1));
}

// ---- proptest fuzzing from the seed corpus (fuzz-seeds/blkif) ------------------------

/// The generated blkif seeds: each a run of 112-byte request slots a well-behaved
/// frontend would publish (grants 0..16 hold data, the disk has 64 sectors).
fn blkif_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let slots = |reqs: &[BlkifRequest]| -> Vec<u8> {
        reqs.iter()
            .flat_map(|r| zerocopy::IntoBytes::as_bytes(r).to_vec())
            .collect()
    };
    vec![
        (
            "read-write-flush.bin",
            slots(&[
                rw(BLKIF_OP_WRITE, 1, 0, &[seg(0, 0, 7), seg(1, 0, 3)]),
                rw(BLKIF_OP_READ, 2, 4, &[seg(2, 1, 7)]),
                rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 0, &[]),
            ]),
        ),
        (
            "indirect-discard.bin",
            slots(&[
                indirect(BLKIF_OP_READ, 4, 8, 2, &[5]),
                discard(5, 16, 8, 0),
                rw(BLKIF_OP_WRITE_BARRIER, 6, 2, &[seg(3, 0, 0)]),
            ]),
        ),
    ]
}

fn blkif_seed_set() -> Vec<Vec<u8>> {
    crate::mutate::seed_set("blkif", blkif_seeds())
}

/// `FUZZ_SEEDS_WRITE=1` rewrites `fuzz-seeds/blkif/` from [`blkif_seeds`].
#[test]
fn write_blkif_seeds() {
    crate::mutate::write_seeds("blkif", blkif_seeds());
}

/// Publishes `bytes` as request slots (the last one zero-padded) and services until the
/// backend is idle or disconnects. Returns the responses, or `None` on a disconnect.
/// Work is bounded: at most one service call per slot plus one, each answering at most
/// its budget and making at most three grant copies per request.
fn blkif_feed(
    bytes: &[u8],
    cfg: BlkbackConfig,
    indirect_pages: bool,
) -> Result<Option<Vec<BlkifResponse>>, proptest::test_runner::TestCaseError> {
    use proptest::{prop_assert, prop_assert_eq};
    const SLOT: usize = 112;
    let page = PageBuffer::new();
    let mut h = Harness::with(&page, cfg);
    for g in 0..16 {
        h.gio.grant(g, &pattern(u64::from(g) + 1, PAGE));
    }
    // An indirect page of two segments of grant 6 and 7.
    if indirect_pages {
        let mut ind = vec![0u8; PAGE];
        for (i, s) in [seg(6, 0, 7), seg(7, 0, 7)].iter().enumerate() {
            ind[i * 8..i * 8 + 8].copy_from_slice(zerocopy::IntoBytes::as_bytes(s));
        }
        h.gio.grant(5, &ind);
    }
    let mut disk = RamDisk::new(64).unwrap();
    // As a frontend publishes them (through `FrontRing`, so the responses can be read
    // back the same way); at most a ring's worth.
    let mut n = 0usize;
    for chunk in bytes.chunks(SLOT) {
        if h.front.is_full() {
            break;
        }
        let mut slot = [0u8; SLOT];
        slot[..chunk.len()].copy_from_slice(chunk);
        let req: BlkifRequest = zerocopy::FromBytes::read_from_bytes(&slot[..]).unwrap();
        h.front.push_request(&req).unwrap();
        n += 1;
    }
    h.front.push_requests();
    let mut answered = 0u32;
    let mut out = Vec::new();
    for call in 0.. {
        prop_assert!(call <= n + 1, "{call} service calls for {n} slots");
        let calls = h.gio.calls;
        let s = match h.bb.service(&mut h.back, &mut h.gio, &mut disk) {
            Ok(s) => s,
            Err(_) => return Ok(None),
        };
        prop_assert!(s.requests <= cfg.requests_per_call);
        prop_assert!(h.gio.calls - calls <= 3 * s.requests as usize);
        answered += s.requests;
        prop_assert!(answered as usize <= n);
        while let Some(r) = h.front.next_response().unwrap() {
            out.push(r);
        }
        if !s.more {
            break;
        }
    }
    prop_assert_eq!(out.len(), answered as usize);
    Ok(Some(out))
}

/// Hostile request slots from mutated valid requests and random bytes: no panic, work
/// bounded per call, at most one response per request; the seeds themselves succeed.
#[test]
fn blkif_requests_fuzz() {
    let seeds = blkif_seed_set();
    let cfg = BlkbackConfig {
        max_indirect_segments: 32,
        requests_per_call: 4,
    };
    for s in &seeds {
        let rs = blkif_feed(s, cfg, true)
            .unwrap()
            .expect("a seed disconnected");
        assert_eq!(rs.len(), s.len() / 112);
        assert!(rs.iter().all(|r| r.status == BLKIF_RSP_OKAY), "{rs:?}");
    }
    crate::mutate::run(
        "blkif",
        1500,
        (
            crate::mutate::recipe(4 * 112),
            proptest::prelude::any::<bool>(),
        ),
        |(r, ind)| blkif_feed(&r.bytes(&seeds), cfg, ind).map(drop),
    );
}
