//! A PV disk through the kit's [`blkfront`] (`demo=blk`): connects to the first
//! `device/vbd/*` the toolstack created, prints the disk's size, reads its first
//! sectors and prints their checksum; then, on a writable disk, writes a pattern over
//! sectors 8..16, reads it back and compares, restores what was there and flushes; and
//! closes the device. Every line starts with `blk: `.
//!
//! The kernel glue is small: the grant table ([`split_demo::setup_grant_table`]), the
//! ring and data pages as statics (their MFNs from the p2m), an unbound event channel
//! for the backend, and waits that block until that channel (or the store's) fires.

use xen_pv_abi::blkif::BlkifProtocol;
use xen_pv_abi::console::EvtchnNotifier;
use xen_pv_abi::kit::blkfront::{self, Blkfront, PAGE_SIZE};
use xen_pv_abi::kit::ring::{FrontRing, RawRingPage};
use xen_pv_abi::{Errno, EvtchnPort, evtchn};

use crate::events::{self, count, wait_until};
use crate::front::{self, NoDevice, Page};
use crate::split_demo::setup_grant_table;
use crate::xenbus::{self, StoreWait};
use crate::{StartInfo, println};

/// Data pages: enough for one request of 11 segments.
const DATA_PAGES: usize = 11;
/// Store round trips a state wait may take.
const MAX_STATE_WAITS: u32 = 100_000;
/// First sector of the write test, and its length in sectors.
const TEST_SECTOR: u64 = 8;
const TEST_SECTORS: usize = 8;

/// The shared ring (only accessed through [`RawRingPage`]).
static mut RING: Page = Page([0; PAGE_SIZE]);
/// The data pages (only accessed through [`StaticPages`], by raw pointer).
static mut DATA: [Page; DATA_PAGES] = [const { Page([0; PAGE_SIZE]) }; DATA_PAGES];

/// The demo's I/O buffers. They are 16 KiB together: on the stack they pushed the
/// kernel's 64 KiB boot stack (which has no guard page) into the statics below it and
/// corrupted the event code's `SHARED` pointer, so the next upcall faulted.
struct Buffers {
    first: [u8; 4096],
    saved: [u8; TEST_SECTORS * 512],
    pattern: [u8; TEST_SECTORS * 512],
    back: [u8; TEST_SECTORS * 512],
}

static BUFFERS: spin::Mutex<Buffers> = spin::Mutex::new(Buffers {
    first: [0; 4096],
    saved: [0; TEST_SECTORS * 512],
    pattern: [0; TEST_SECTORS * 512],
    back: [0; TEST_SECTORS * 512],
});

/// [`DATA`] as the frontend's data pages.
type StaticPages<'a> = front::StaticPages<'a, true>;

fn data_pages(si: &StartInfo) -> StaticPages<'_> {
    // SAFETY: DATA is reserved for the data pages and only accessed through this view.
    unsafe { StaticPages::new(si, (&raw mut DATA).cast::<u8>(), DATA_PAGES) }
}

fn checksum(b: &[u8]) -> u32 {
    // FNV-1a: enough to compare runs by eye.
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
    })
}

/// Runs the demo; prints every step or where it failed.
pub fn run(si: &StartInfo) {
    if let Err(e) = events::init(si) {
        println!("blk: cannot set up event delivery: {e}");
        return;
    }
    match demo(si) {
        Ok(()) => println!("blk: done"),
        Err((step, e)) => println!("blk: failed: {step}: {e}"),
    }
    events::disable();
}

type Step = (&'static str, Errno);

fn at(step: &'static str) -> impl FnOnce(Errno) -> Step {
    move |e| (step, e)
}

fn demo(si: &StartInfo) -> Result<(), Step> {
    let mut xs = xenbus::connect(si).map_err(at("xenstore"))?;
    let (_, store_port) = si.xenstore().ok_or(("xenstore", Errno::ENODEV))?;
    let mut store_wait = StoreWait(store_port);

    // The first disk the toolstack gave us.
    let dev = front::first_device(&mut xs, "vbd").map_err(|e| match e {
        NoDevice::List(e) => ("list device/vbd", e),
        NoDevice::Empty => ("list device/vbd", Errno::ENODEV),
        NoDevice::Name => ("device name", Errno::EINVAL),
    })?;
    let dev = dev.as_str();
    let backend = blkfront::probe(&mut xs, dev).map_err(at("probe"))?;
    println!(
        "blk: {dev}: backend d{} at {}",
        backend.domid.0,
        backend.path()
    );

    let table = setup_grant_table().map_err(|_| ("grant table", Errno::EIO))?;
    let ring_va = (&raw mut RING).cast::<u8>();
    // SAFETY: RING is a page of this kernel reserved for the ring and only accessed
    // through this view (and the backend's mapping of its grant).
    let ring_mem = unsafe { RawRingPage::new(ring_va, PAGE_SIZE) };
    let ring = FrontRing::<BlkifProtocol, _>::init(ring_mem).map_err(at("ring"))?;
    let ring_grant =
        front::grant_page(si, &table, backend.domid, ring_va).map_err(at("grant ring"))?;
    let port = front::backend_port(backend.domid).map_err(at("alloc_unbound"))?;

    let info = blkfront::connect(
        &mut xs,
        dev,
        &backend,
        ring_grant.gref(),
        port,
        &mut store_wait,
        MAX_STATE_WAITS,
    )
    .map_err(at("connect"))?;
    println!(
        "blk: connected: {} sectors of 512 bytes (sector-size {}), info {:#x}, flush {}",
        info.sectors, info.sector_size, info.info, info.flush
    );

    let r = io(si, &table, &backend, ring, port, info);
    let closed = blkfront::close(&mut xs, dev, &backend, &mut store_wait, MAX_STATE_WAITS);
    // The backend has unmapped the ring once it is Closed.
    let ended = ring_grant.end().is_ok();
    let _ = evtchn::close(port);
    println!("blk: closed ({closed:?}), ring grant ended: {ended}");
    r
}

/// A wait that blocks until `port` has an event it has not seen.
fn port_wait(port: EvtchnPort) -> impl FnMut() -> Result<(), Errno> {
    let mut seen = count(port);
    move || {
        wait_until(|| count(port) != seen);
        seen = count(port);
        Ok(())
    }
}

fn io(
    si: &StartInfo,
    table: &xen_pv_abi::kit::GrantTable<{ crate::split_demo::GRANT_ENTRIES }>,
    backend: &blkfront::Backend,
    ring: FrontRing<BlkifProtocol, RawRingPage>,
    port: EvtchnPort,
    info: blkfront::DiskInfo,
) -> Result<(), Step> {
    let mut wait = port_wait(port);
    let mut disk = Blkfront::new(
        ring,
        table,
        backend.domid,
        data_pages(si),
        EvtchnNotifier(port),
        info,
    );
    disk.set_max_waits(1_000_000);
    // Not the stack: see `Buffers`. Only this demo takes the lock, once.
    let mut bufs = BUFFERS.try_lock().ok_or(("buffers", Errno::EBUSY))?;
    let Buffers {
        first,
        saved,
        pattern,
        back,
    } = &mut *bufs;
    let n = (info.sectors.min(8) as usize) * 512;
    if n == 0 {
        return Err(("read", Errno::ENODATA));
    }
    disk.read(0, &mut first[..n], &mut wait)
        .map_err(at("read sectors 0..8"))?;
    println!(
        "blk: read {n} bytes from sector 0, checksum {:#010x}",
        checksum(&first[..n])
    );

    let end = TEST_SECTOR + TEST_SECTORS as u64;
    if info.read_only() || info.sectors < end {
        println!("blk: read-only or small disk: no write test");
        return Ok(());
    }
    disk.read(TEST_SECTOR, saved, &mut wait)
        .map_err(at("save"))?;
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (i as u8) ^ 0x5a;
    }
    disk.write(TEST_SECTOR, pattern, &mut wait)
        .map_err(at("write pattern"))?;
    disk.read(TEST_SECTOR, back, &mut wait)
        .map_err(at("read pattern"))?;
    let same = back == pattern;
    disk.write(TEST_SECTOR, saved, &mut wait)
        .map_err(at("restore"))?;
    if info.flush || info.barrier {
        disk.flush(&mut wait).map_err(at("flush"))?;
    }
    println!(
        "blk: wrote {} sectors at {TEST_SECTOR}, read back {}, restored",
        TEST_SECTORS,
        if same { "equal" } else { "DIFFERENT" }
    );
    let past = disk.read(info.sectors, &mut back[..512], &mut wait);
    println!("blk: read past the end: {past:?}");
    if !same {
        return Err(("compare", Errno::EIO));
    }
    Ok(())
}
