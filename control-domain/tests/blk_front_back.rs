//! The kit's blkfront against the control domain's blkback, on the host: one ring page
//! shared through a `PageBuffer`, the frontend's grants resolved by a fake `GrantIo`
//! from the entries of the frontend's (host-memory) grant table, a `RamDisk` behind
//! the backend, and the handshake over a map that holds the backend's real keys.

use control_domain::blkback::{
    Blkback, BlkbackConfig, Direction, Disk, DiskInfo as BackInfo, GrantIo, GrantSegment, RamDisk,
    backend_keys,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use xen_pv_abi::blkif::BlkifProtocol;
use xen_pv_abi::grant_table::{
    GNTST_BAD_GNTREF, GNTST_OKAY, GNTST_PERMISSION_DENIED, GTF_PERMIT_ACCESS, GTF_READONLY,
    GrantEntryV1,
};
use xen_pv_abi::kit::GrantTable;
use xen_pv_abi::kit::blkfront::{
    self, Blkfront, DataPages, DiskInfo, MAX_REQUEST_BYTES, PAGE_SIZE, Store,
};
use xen_pv_abi::kit::ring::{BackRing, FrontRing, PageBuffer};
use xen_pv_abi::xenstore::XenbusState;
use xen_pv_abi::{DomId, Errno, EvtchnPort, Mfn};

const BACKEND: DomId = DomId(0);
const FRONTEND: DomId = DomId(5);
const FRAME_BASE: u64 = 0x8_0000;
const SECTORS: u64 = 4096; // 2 MiB
const GRANTS: usize = 512;

/// The frontend's data pages; page `i` is frame `FRAME_BASE + i`.
struct Pages(RefCell<Vec<[u8; PAGE_SIZE]>>);

impl DataPages for Pages {
    fn count(&self) -> usize {
        self.0.borrow().len()
    }
    fn frame(&self, page: usize) -> Mfn {
        Mfn(FRAME_BASE + page as u64)
    }
    fn read(&self, page: usize, offset: usize, dst: &mut [u8]) {
        dst.copy_from_slice(&self.0.borrow()[page][offset..offset + dst.len()]);
    }
    fn write(&self, page: usize, offset: usize, src: &[u8]) {
        self.0.borrow_mut()[page][offset..offset + src.len()].copy_from_slice(src);
    }
}

/// The frontend's grant entries, allocated outside the table so that the fake
/// hypervisor can read them.
struct Entries(*mut GrantEntryV1);

impl Entries {
    fn new() -> Self {
        let b = vec![GrantEntryV1::default(); GRANTS].into_boxed_slice();
        Entries(Box::into_raw(b).cast())
    }
    fn get(&self, gref: u32) -> Option<GrantEntryV1> {
        if gref as usize >= GRANTS {
            return None;
        }
        // SAFETY: inside the live allocation of GRANTS entries; plain data.
        Some(unsafe { self.0.add(gref as usize).read_volatile() })
    }
}

impl Drop for Entries {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw` of a GRANTS-long slice in `new`; the table using
        // it was dropped before (it is declared after the entries).
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.0, GRANTS)) });
    }
}

/// `GNTTABOP_copy` as the hypervisor does it for the backend (`BACKEND`): the grant
/// must be permitted to the backend, and writable for copies to the frontend.
struct FakeCopy<'a> {
    entries: &'a Entries,
    pages: &'a Pages,
    copies: Cell<u64>,
}

impl FakeCopy<'_> {
    fn resolve(&self, domid: DomId, seg: &GrantSegment, dir: Direction) -> Result<usize, i16> {
        assert_eq!(domid, FRONTEND, "blkback copies from its frontend");
        let e = self.entries.get(seg.gref.0).ok_or(GNTST_BAD_GNTREF)?;
        if e.flags & GTF_PERMIT_ACCESS == 0 || e.domid != BACKEND {
            return Err(GNTST_PERMISSION_DENIED);
        }
        if dir == Direction::ToFrontend && e.flags & GTF_READONLY != 0 {
            return Err(GNTST_PERMISSION_DENIED);
        }
        let page = u64::from(e.frame)
            .checked_sub(FRAME_BASE)
            .filter(|&p| (p as usize) < self.pages.count())
            .ok_or(GNTST_BAD_GNTREF)?;
        Ok(page as usize)
    }
}

impl GrantIo for &FakeCopy<'_> {
    fn copy(
        &mut self,
        domid: DomId,
        dir: Direction,
        segs: &[GrantSegment],
        buf: &mut [u8],
        status: &mut [i16],
    ) -> Result<(), Errno> {
        for (seg, st) in segs.iter().zip(status.iter_mut()) {
            *st = match self.resolve(domid, seg, dir) {
                Err(s) => s,
                Ok(page) => {
                    let (off, len) = (usize::from(seg.offset), usize::from(seg.len));
                    let local = &mut buf[seg.buf_offset..seg.buf_offset + len];
                    match dir {
                        Direction::FromFrontend => self.pages.read(page, off, local),
                        Direction::ToFrontend => self.pages.write(page, off, local),
                    }
                    self.copies.set(self.copies.get() + 1);
                    GNTST_OKAY
                }
            };
        }
        Ok(())
    }
}

/// A flat xenstore holding blkback's keys; the backend's state follows the
/// frontend's between the frontend's polls.
struct MapStore {
    nodes: HashMap<String, Vec<u8>>,
}

const FE_DIR: &str = "device/vbd/51712";
const BE_DIR: &str = "/local/domain/0/backend/vbd/5/51712";

impl MapStore {
    fn new(info: &BackInfo) -> Self {
        let mut nodes = HashMap::new();
        for (k, v) in backend_keys(info, 32) {
            nodes.insert(format!("{BE_DIR}/{k}"), v.into_bytes());
        }
        nodes.insert(format!("{BE_DIR}/state"), b"2".to_vec());
        nodes.insert(format!("{FE_DIR}/backend"), BE_DIR.as_bytes().to_vec());
        nodes.insert(format!("{FE_DIR}/backend-id"), b"0".to_vec());
        nodes.insert(format!("{FE_DIR}/state"), b"1".to_vec());
        MapStore { nodes }
    }

    fn state(&self, dir: &str) -> Option<XenbusState> {
        XenbusState::parse(self.nodes.get(&format!("{dir}/state"))?)
    }
}

impl Store for MapStore {
    fn read_into(&mut self, path: &str, buf: &mut [u8]) -> Result<usize, Errno> {
        let v = self.nodes.get(path).ok_or(Errno::ENOENT)?;
        buf.get_mut(..v.len())
            .ok_or(Errno::E2BIG)?
            .copy_from_slice(v);
        Ok(v.len())
    }
    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        self.nodes.insert(path.to_string(), value.to_vec());
        Ok(())
    }
    fn watch(&mut self, _: &str, _: &str) -> Result<(), Errno> {
        Ok(())
    }
    fn unwatch(&mut self, _: &str, _: &str) -> Result<(), Errno> {
        Ok(())
    }
    fn drain_events(&mut self) -> Result<(), Errno> {
        use XenbusState::*;
        let next = match (self.state(FE_DIR), self.state(BE_DIR)) {
            (Some(Initialised), Some(InitWait)) => Connected,
            (Some(Closing), Some(Connected)) => Closing,
            (Some(Closed), Some(Closing)) => Closed,
            _ => return Ok(()),
        };
        self.nodes
            .insert(format!("{BE_DIR}/state"), next.as_str().as_bytes().to_vec());
        Ok(())
    }
}

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

fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

#[test]
fn blkfront_and_blkback_move_random_data_flush_and_report_errors() {
    let entries = Entries::new();
    // SAFETY: `entries` outlives the table and is otherwise only read (by `FakeCopy`).
    let table = unsafe { GrantTable::<GRANTS>::new(entries.0, GRANTS) };
    let pages = Pages(RefCell::new(vec![[0; PAGE_SIZE]; 64]));
    let ring_page = PageBuffer::<1024>::new();
    let disk = RefCell::new(RamDisk::new(SECTORS).unwrap());
    let gio = FakeCopy {
        entries: &entries,
        pages: &pages,
        copies: Cell::new(0),
    };

    // Handshake over the backend's own keys.
    let mut store = MapStore::new(&BackInfo::of(&*disk.borrow()));
    let backend = blkfront::probe(&mut store, FE_DIR).unwrap();
    assert_eq!(backend.domid, BACKEND);
    let ring = FrontRing::<BlkifProtocol, _>::init(&ring_page).unwrap();
    let ring_grant = table
        .grant_access(backend.domid, Mfn(0x1234), false)
        .unwrap();
    let mut no_wait = || Ok(());
    let info = blkfront::connect(
        &mut store,
        FE_DIR,
        &backend,
        ring_grant.gref(),
        EvtchnPort(9),
        &mut no_wait,
        4,
    )
    .unwrap();
    assert_eq!(
        info,
        DiskInfo {
            sectors: SECTORS,
            sector_size: 512,
            info: 0,
            flush: true,
            barrier: true,
        }
    );
    assert_eq!(store.nodes[&format!("{FE_DIR}/ring-ref")], b"8");
    assert_eq!(store.nodes[&format!("{FE_DIR}/event-channel")], b"9");

    // The backend runs whenever the frontend waits (as if on another vCPU).
    let mut blkback = Blkback::new(FRONTEND, BlkbackConfig::default()).unwrap();
    let back_ring = RefCell::new(BackRing::<BlkifProtocol, _>::new(&ring_page).unwrap());
    let kicks = Cell::new(0u32);
    let served = RefCell::new(0u32);
    let mut wait = || {
        let s = blkback
            .service(
                &mut back_ring.borrow_mut(),
                &mut &gio,
                &mut *disk.borrow_mut(),
            )
            .expect("the frontend follows the ring protocol");
        *served.borrow_mut() += s.requests;
        Ok(())
    };
    let mut front = Blkfront::new(
        ring,
        &table,
        backend.domid,
        &pages,
        || kicks.set(kicks.get() + 1),
        info,
    );
    let grants_idle = table.free_count();

    let mut model = vec![0u8; SECTORS as usize * 512];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let max_sectors = (MAX_REQUEST_BYTES / 512) as u64;
    for round in 0..150 {
        let n = 1 + rng.below(max_sectors);
        let sector = rng.below(SECTORS - n + 1);
        let data: Vec<u8> = (0..n * 512).map(|_| rng.next() as u8).collect();
        front.write(sector, &data, &mut wait).unwrap();
        model[sector as usize * 512..][..data.len()].copy_from_slice(&data);

        // Read back what was written, and another random range.
        let mut got = vec![0u8; data.len()];
        front.read(sector, &mut got, &mut wait).unwrap();
        assert_eq!(
            hash(&got),
            hash(&data),
            "round {round}: sector {sector} +{n}"
        );
        let n = 1 + rng.below(max_sectors);
        let sector = rng.below(SECTORS - n + 1);
        let mut got = vec![0u8; n as usize * 512];
        front.read(sector, &mut got, &mut wait).unwrap();
        let want = &model[sector as usize * 512..][..got.len()];
        assert_eq!(
            hash(&got),
            hash(want),
            "round {round}: sector {sector} +{n}"
        );
        assert_eq!(table.free_count(), grants_idle, "data grants ended");
    }
    front.flush(&mut wait).unwrap();
    assert_eq!(hash(disk.borrow().as_bytes()), hash(&model));

    // Pipelined: many writes in flight, then their completions by id.
    let mut ids = HashMap::new();
    for i in 0..5u64 {
        let data = vec![0xa0 + i as u8; 8 * 4096];
        let id = front.submit_write(i * 64, &data).unwrap();
        ids.insert(id, i);
        model[(i * 64) as usize * 512..][..data.len()].copy_from_slice(&data);
    }
    let flush = front.submit_flush().unwrap();
    assert_eq!(front.in_flight(), 6);
    wait().unwrap();
    let mut done = Vec::new();
    while let Some(c) = front.poll(|_, _, _| unreachable!("no reads")).unwrap() {
        assert_eq!(c.result, Ok(()));
        done.push(c.id);
    }
    assert_eq!(done.len(), 6);
    assert_eq!(*done.last().unwrap(), flush, "answered in ring order");
    assert!(ids.keys().all(|id| done.contains(id)));
    assert_eq!(hash(disk.borrow().as_bytes()), hash(&model));

    // Errors. Past the advertised end: refused by the frontend itself.
    let mut buf = vec![0u8; 1024];
    assert_eq!(
        front.read(SECTORS - 1, &mut buf, &mut wait),
        Err(Errno::EINVAL)
    );
    // The disk shrank behind the frontend's back: the backend's error surfaces.
    let shrunk = DiskInfo {
        sectors: SECTORS * 2,
        ..info
    };
    let mut liar = Blkfront::new(
        FrontRing::<BlkifProtocol, _>::attach(&ring_page, front.ring().req_prod_pvt()).unwrap(),
        &table,
        backend.domid,
        &pages,
        || {},
        shrunk,
    );
    assert_eq!(liar.read(SECTORS - 1, &mut buf, &mut wait), Err(Errno::EIO));
    assert_eq!(liar.write(SECTORS + 8, &buf, &mut wait), Err(Errno::EIO));
    assert!(!liar.is_broken());
    assert_eq!(liar.read(SECTORS - 2, &mut buf, &mut wait), Ok(()));
    // A read-only disk refuses writes; the data is untouched.
    disk.borrow_mut().set_read_only(true);
    assert_eq!(liar.write(0, &buf, &mut wait), Err(Errno::EIO));
    drop(liar);
    disk.borrow_mut().set_read_only(false);
    assert_eq!(hash(disk.borrow().as_bytes()), hash(&model));
    assert_eq!(
        table.free_count(),
        grants_idle,
        "failed requests end their grants"
    );
    assert!(kicks.get() > 0);
    assert!(gio.copies.get() > 0);
    let stats = blkback.stats();
    assert_eq!(stats.errors, 3);
    drop(front);

    // Close.
    blkfront::close(&mut store, FE_DIR, &backend, &mut no_wait, 4).unwrap();
    assert_eq!(store.state(FE_DIR), Some(XenbusState::Closed));
    assert_eq!(store.state(BE_DIR), Some(XenbusState::Closed));
    assert!(ring_grant.end().is_ok());
    let _ = disk.borrow().sectors();
}
