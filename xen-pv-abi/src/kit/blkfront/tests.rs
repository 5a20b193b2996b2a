//! Host tests: a fake backend serves the ring out of a `PageBuffer`, resolving the
//! frontend's grants through the entries of a local grant table.

extern crate std;

use super::*;
use crate::blkif::{BLKIF_RSP_ERROR, BlkifResponse};
use crate::kit::ring::{BackRing, PageBuffer};
use crate::kit::test_support::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

/// A backend over a RAM disk: what a correct blkback does, plus knobs to misbehave.
struct FakeBack<'a> {
    ring: BackRing<BlkifProtocol, &'a PageBuffer>,
    frames: &'a Frames,
    pages: &'a Pages,
    disk: Vec<u8>,
    /// Respond with this id instead of the request's.
    bad_id: Option<u64>,
    flushes: u32,
}

impl FakeBack<'_> {
    /// The page behind `gref`, if it grants `BACKEND` access (writable if `write`).
    fn page(&self, gref: u32, write: bool) -> Option<usize> {
        match self.frames.granted(gref, self.pages)? {
            (_, true) if write => None,
            (p, _) => Some(p),
        }
    }

    fn handle(&mut self, req: &BlkifRequest) -> i16 {
        let Some(segs) = req.segments() else {
            return BLKIF_RSP_ERROR;
        };
        match req.operation {
            BLKIF_OP_FLUSH_DISKCACHE => {
                self.flushes += 1;
                return BLKIF_RSP_OKAY;
            }
            BLKIF_OP_READ | BLKIF_OP_WRITE => {}
            _ => return BLKIF_RSP_EOPNOTSUPP,
        }
        let mut at = req.sector_number as usize * SECTOR;
        for s in segs {
            let Some(n) = s.sectors() else {
                return BLKIF_RSP_ERROR;
            };
            let len = usize::from(n) * SECTOR;
            let off = usize::from(s.first_sect) * SECTOR;
            if at + len > self.disk.len() {
                return BLKIF_RSP_ERROR;
            }
            let read = req.operation == BLKIF_OP_READ;
            let Some(p) = self.page(s.gref, read) else {
                return BLKIF_RSP_ERROR;
            };
            if read {
                self.pages.write(p, off, &self.disk[at..at + len]);
            } else {
                self.pages.read(p, off, &mut self.disk[at..at + len]);
            }
            at += len;
        }
        BLKIF_RSP_OKAY
    }

    fn serve(&mut self) {
        while let Some(req) = self.ring.next_request().unwrap() {
            let status = self.handle(&req);
            let rsp = BlkifResponse {
                id: self.bad_id.unwrap_or(req.id),
                operation: req.operation,
                status,
                ..Default::default()
            };
            self.ring.push_response(&rsp).unwrap();
        }
        self.ring.push_responses_and_check_notify();
    }
}

fn info(sectors: u64) -> DiskInfo {
    DiskInfo {
        sectors,
        sector_size: 512,
        info: 0,
        flush: true,
        barrier: true,
    }
}

#[test]
fn random_writes_read_back_and_grants_are_ended() {
    let g = Granted::<128>::new();
    let (table, frames) = (&g.table, &g.frames);
    let page = PageBuffer::<1024>::new();
    let pages = Pages::new(24);
    let kicks = Cell::new(0u32);
    let ring = FrontRing::<BlkifProtocol, _>::init(&page).unwrap();
    let back = RefCell::new(FakeBack {
        ring: BackRing::new(&page).unwrap(),
        frames,
        pages: &pages,
        disk: vec![0; 256 * 512],
        bad_id: None,
        flushes: 0,
    });
    let mut front = Blkfront::new(
        ring,
        table,
        BACKEND,
        &pages,
        || kicks.set(kicks.get() + 1),
        info(256),
    );
    let mut wait = || {
        back.borrow_mut().serve();
        Ok(())
    };
    let mut model = vec![0u8; 256 * 512];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let free0 = table.free_count();
    for _ in 0..200 {
        let n = 1 + rng.below(24) as usize;
        let sector = rng.below(256 - n as u64 + 1);
        let data: Vec<u8> = (0..n * 512).map(|_| rng.next() as u8).collect();
        front.write(sector, &data, &mut wait).unwrap();
        model[sector as usize * 512..][..data.len()].copy_from_slice(&data);
        let n = 1 + rng.below(24) as usize;
        let sector = rng.below(256 - n as u64 + 1);
        let mut got = vec![0u8; n * 512];
        front.read(sector, &mut got, &mut wait).unwrap();
        assert_eq!(got, model[sector as usize * 512..][..n * 512]);
        assert_eq!(table.free_count(), free0, "grants ended after each request");
    }
    assert_eq!(back.borrow().disk, model);
    front.flush(&mut wait).unwrap();
    assert_eq!(back.borrow().flushes, 1);
    assert!(kicks.get() > 0);
}

#[test]
fn pipelined_requests_complete_by_id_and_in_flight_is_bounded() {
    let g = Granted::<512>::new();
    let (table, frames) = (&g.table, &g.frames);
    let page = PageBuffer::<1024>::new();
    let pages = Pages::new(64);
    let ring = FrontRing::<BlkifProtocol, _>::init(&page).unwrap();
    let mut back = FakeBack {
        ring: BackRing::new(&page).unwrap(),
        frames,
        pages: &pages,
        disk: (0..128 * 512).map(|i| (i / 512) as u8).collect(),
        bad_id: None,
        flushes: 0,
    };
    let mut front = Blkfront::new(ring, table, BACKEND, &pages, || {}, info(128));
    // 64 one-page reads: pages run out first at 64, the ring at 32.
    let mut ids = HashMap::new();
    for s in 0..32u64 {
        let id = front.submit_read(s * 2, 1024).unwrap();
        ids.insert(id, s * 2);
    }
    assert_eq!(front.submit_read(0, 512), Err(Errno::EBUSY));
    assert_eq!(front.in_flight(), 32);
    back.serve();
    let mut seen = 0;
    while let Some(c) = front
        .poll(|id, off, bytes| {
            let s = ids[&id];
            assert_eq!(off, 0);
            assert_eq!(bytes.len(), 1024);
            assert!(bytes[..512].iter().all(|&b| b == s as u8));
            assert!(bytes[512..].iter().all(|&b| b == s as u8 + 1));
        })
        .unwrap()
    {
        assert_eq!(c.result, Ok(()));
        assert_eq!(c.sector, ids[&c.id]);
        seen += 1;
    }
    assert_eq!(seen, 32);
    assert_eq!(front.in_flight(), 0);
    // Data pages bound requests too: 6 requests of 11 pages need 66 > 64 pages.
    for _ in 0..5 {
        front.submit_read(0, MAX_REQUEST_BYTES).unwrap();
    }
    assert_eq!(front.submit_read(0, MAX_REQUEST_BYTES), Err(Errno::EBUSY));
    front.submit_read(0, 4096 * 9).unwrap();
}

#[test]
fn bad_requests_are_refused_locally_and_backend_errors_surface() {
    let g = Granted::<64>::new();
    let (table, frames) = (&g.table, &g.frames);
    let page = PageBuffer::<1024>::new();
    let pages = Pages::new(11);
    let ring = FrontRing::<BlkifProtocol, _>::init(&page).unwrap();
    // The backend's disk is smaller than advertised.
    let back = RefCell::new(FakeBack {
        ring: BackRing::new(&page).unwrap(),
        frames,
        pages: &pages,
        disk: vec![0; 8 * 512],
        bad_id: None,
        flushes: 0,
    });
    let mut wait = || {
        back.borrow_mut().serve();
        Ok(())
    };
    let mut front = Blkfront::new(ring, table, BACKEND, &pages, || {}, info(16));
    let mut buf = [0u8; 1024];
    assert_eq!(front.read(15, &mut buf, &mut wait), Err(Errno::EINVAL));
    assert_eq!(
        front.read(u64::MAX, &mut buf, &mut wait),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        front.read(0, &mut buf[..100], &mut wait),
        Err(Errno::EINVAL)
    );
    assert_eq!(front.read(0, &mut [], &mut wait), Err(Errno::EINVAL));
    assert_eq!(
        front.write(0, &[0; MAX_REQUEST_BYTES + 512], &mut wait),
        Err(Errno::EINVAL)
    );
    assert_eq!(front.read(10, &mut buf, &mut wait), Err(Errno::EIO));
    assert_eq!(front.read(6, &mut buf, &mut wait), Ok(()));
    assert!(!front.is_broken());

    // Read-only and flush-less disks.
    let ring = FrontRing::<BlkifProtocol, _>::init(&page).unwrap();
    back.borrow_mut().ring = BackRing::new(&page).unwrap();
    let ro = DiskInfo {
        info: VDISK_READONLY,
        flush: false,
        barrier: false,
        ..info(8)
    };
    let mut front = Blkfront::new(ring, table, BACKEND, &pages, || {}, ro);
    assert_eq!(front.write(0, &buf, &mut wait), Err(Errno::EROFS));
    assert_eq!(front.flush(&mut wait), Err(Errno::EOPNOTSUPP));
    assert_eq!(front.read(0, &mut buf, &mut wait), Ok(()));

    // 4 KiB logical sectors: 512-byte aligned requests are refused.
    let ring = FrontRing::<BlkifProtocol, _>::init(&page).unwrap();
    back.borrow_mut().ring = BackRing::new(&page).unwrap();
    let big = DiskInfo {
        sector_size: 4096,
        ..info(8)
    };
    let mut front = Blkfront::new(ring, table, BACKEND, &pages, || {}, big);
    assert_eq!(front.read(0, &mut buf, &mut wait), Err(Errno::EINVAL));
    let mut page4k = [0u8; 4096];
    assert_eq!(front.read(1, &mut page4k, &mut wait), Err(Errno::EINVAL));
    assert_eq!(front.read(0, &mut page4k, &mut wait), Ok(()));
}

#[test]
fn a_backend_answering_unknown_ids_or_bad_indices_breaks_the_device() {
    let g = Granted::<64>::new();
    let (table, frames) = (&g.table, &g.frames);
    let page = PageBuffer::<1024>::new();
    let pages = Pages::new(11);
    let ring = FrontRing::<BlkifProtocol, _>::init(&page).unwrap();
    let back = RefCell::new(FakeBack {
        ring: BackRing::new(&page).unwrap(),
        frames,
        pages: &pages,
        disk: vec![0; 8 * 512],
        bad_id: Some(0x7777),
        flushes: 0,
    });
    let mut wait = || {
        back.borrow_mut().serve();
        Ok(())
    };
    let mut front = Blkfront::new(ring, table, BACKEND, &pages, || {}, info(8));
    let mut buf = [0u8; 512];
    assert_eq!(front.read(0, &mut buf, &mut wait), Err(Errno::EIO));
    assert!(front.is_broken());
    assert_eq!(front.submit_read(0, 512), Err(Errno::EIO));

    // A response producer index far ahead of the requests.
    let ring = FrontRing::<BlkifProtocol, _>::init(&page).unwrap();
    let mut front = Blkfront::new(ring, table, BACKEND, &pages, || {}, info(8));
    front.submit_read(0, 512).unwrap();
    page.store_u32(crate::kit::ring::RSP_PROD_OFFSET, 1000);
    assert_eq!(front.poll(|_, _, _| {}), Err(Errno::EIO));
    assert!(front.is_broken());

    // A silent backend: the wait budget runs out.
    let ring = FrontRing::<BlkifProtocol, _>::init(&page).unwrap();
    let mut front = Blkfront::new(ring, table, BACKEND, &pages, || {}, info(8));
    front.set_max_waits(5);
    let waits = Cell::new(0);
    let mut idle = || {
        waits.set(waits.get() + 1);
        Ok(())
    };
    assert_eq!(front.read(0, &mut buf, &mut idle), Err(Errno::ETIMEDOUT));
    assert_eq!(waits.get(), 5);
}

// ---------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------

const FE: &str = "device/vbd/768";
const BE: &str = "/local/domain/0/backend/vbd/5/768";

fn state(s: &FakeStore, dir: &str) -> Option<XenbusState> {
    XenbusState::parse(s.get(&format!("{dir}/state")))
}

/// The backend's reaction to the frontend's state, as blkback does it.
fn step_backend(s: &mut FakeStore) {
    use XenbusState::*;
    let next = match (state(s, FE), state(s, BE)) {
        (Some(Initialising), Some(Closed)) => InitWait,
        (Some(Initialised), Some(InitWait)) => {
            assert_eq!(s.get(&format!("{FE}/protocol")), b"x86_64-abi");
            assert_eq!(s.get(&format!("{FE}/ring-ref")), b"8");
            assert_eq!(s.get(&format!("{FE}/event-channel")), b"17");
            Connected
        }
        (Some(Closing), Some(Connected)) => Closing,
        (Some(Closed), Some(Closing)) => Closed,
        _ => return,
    };
    s.put(&format!("{BE}/state"), next.as_str());
}

fn store_with_backend() -> FakeStore {
    let mut s = FakeStore::new(step_backend);
    for (k, v) in [
        (format!("{FE}/backend"), BE),
        (format!("{FE}/backend-id"), "0"),
        (format!("{FE}/state"), "1"),
        (format!("{BE}/state"), "2"),
        (format!("{BE}/sectors"), "2048"),
        (format!("{BE}/sector-size"), "512"),
        (format!("{BE}/info"), "4"),
        (format!("{BE}/feature-flush-cache"), "1"),
    ] {
        s.nodes.insert(k, v.as_bytes().to_vec());
    }
    s
}

#[test]
fn connect_walks_the_states_and_reads_the_disk() {
    let mut store = store_with_backend();
    let backend = probe(&mut store, FE).unwrap();
    assert_eq!(backend.domid, DomId(0));
    assert_eq!(backend.path(), BE);
    let waits = Cell::new(0);
    let mut wait = || {
        waits.set(waits.get() + 1);
        Ok(())
    };
    let info = connect(
        &mut store,
        FE,
        &backend,
        GrantRef(8),
        EvtchnPort(17),
        &mut wait,
        10,
    )
    .unwrap();
    assert_eq!(
        info,
        DiskInfo {
            sectors: 2048,
            sector_size: 512,
            info: VDISK_READONLY,
            flush: true,
            barrier: false,
        }
    );
    assert!(info.read_only());
    assert_eq!(state(&store, FE), Some(XenbusState::Connected));
    assert!(store.watches.is_empty(), "watches removed");
    // The fake backend moves on every poll, so no wait was needed.
    assert_eq!(waits.get(), 0);
    close(&mut store, FE, &backend, &mut wait, 10).unwrap();
    assert_eq!(state(&store, FE), Some(XenbusState::Closed));
    assert_eq!(state(&store, BE), Some(XenbusState::Closed));
}

#[test]
fn connect_fails_cleanly_on_bad_or_silent_backends() {
    let mut wait = || Ok(());
    // A backend that never leaves InitWait times out after the budget.
    let mut store = store_with_backend();
    store.frozen = true;
    let backend = probe(&mut store, FE).unwrap();
    assert_eq!(
        connect(
            &mut store,
            FE,
            &backend,
            GrantRef(8),
            EvtchnPort(17),
            &mut wait,
            3
        ),
        Err(Errno::ETIMEDOUT)
    );
    // A backend that closes gives ENODEV.
    let mut store = store_with_backend();
    store.nodes.insert(format!("{BE}/state"), b"5".to_vec());
    assert_eq!(
        connect(
            &mut store,
            FE,
            &backend,
            GrantRef(8),
            EvtchnPort(17),
            &mut wait,
            3
        ),
        Err(Errno::ENODEV)
    );
    // Junk sizes and ids are refused.
    for (k, v) in [
        (format!("{BE}/sectors"), "12x"),
        (format!("{BE}/sectors"), "99999999999999999999999"),
        (format!("{BE}/sector-size"), "1000"),
        (format!("{BE}/info"), "99999999999"),
    ] {
        let mut store = store_with_backend();
        store.nodes.insert(k, v.as_bytes().to_vec());
        assert_eq!(
            connect(
                &mut store,
                FE,
                &backend,
                GrantRef(8),
                EvtchnPort(17),
                &mut wait,
                3
            ),
            Err(Errno::EINVAL),
            "{v}"
        );
    }
    for (k, v) in [
        (format!("{FE}/backend-id"), "70000".to_string()),
        (format!("{FE}/backend-id"), "-1".to_string()),
        (format!("{FE}/backend"), "x".repeat(200)),
        (format!("{FE}/backend"), String::new()),
    ] {
        let mut store = store_with_backend();
        store.nodes.insert(k, v.into_bytes());
        assert_eq!(probe(&mut store, FE).map(|_| ()), Err(Errno::EINVAL));
    }
    let mut store = FakeStore::new(step_backend);
    assert_eq!(probe(&mut store, FE).map(|_| ()), Err(Errno::ENOENT));
}
