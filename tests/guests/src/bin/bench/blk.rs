//! Block I/O through the control domain: xen-pv-abi's kit blkfront in this domain, the
//! control domain's blkback on the other end of the ring, serving the `--disk` image
//! xtask gives it as `vbd.1=bench` (xtask's `bench::BLK_VBD`).
//!
//! One iteration of `blk_read_4k` / `blk_write_4k` / `blk_flush` is one request from
//! the frontend's push to its response consumed: [`Blkfront::submit_read`] (grant the
//! data page, push the request, `EVTCHNOP_send` to the backend), then
//! [`Blkfront::wait_response`] (block on our port until the backend's answer), then
//! [`Blkfront::poll`] (take the response, copy the data out of the granted page, end the
//! grant). A `BENCH_STEPS` line before the BENCH line has the TSC totals of those three
//! steps (`submit=`, `wait=`, `complete=`) and of the notifications inside `submit`
//! (`notify=`): under `-icount` `wait` counts everything the hypervisor and the control
//! domain do for the request.
//!
//! `blk_read_throughput` runs in real time (no `-icount`): sequential 128 KiB reads, each
//! three requests in flight at once (the kit's blkfront has no indirect segments, so a
//! request moves at most 11 pages: 44 + 44 + 40 KiB), over the disk again and again until
//! `mib=` MiB (default 64) were read; it prints `bytes=` and `ns=` (system time).
//!
//! How the domain finds its disk and connects is [`with_disk`]; a later case over
//! another device of the control domain (a vif) would follow the same pattern.

use core::sync::atomic::{AtomicU64, Ordering};
use pv_guest::StartInfo;
use pv_guest::events::{self, count, wait_until};
use pv_guest::front::{self, NoDevice, Page};
use pv_guest::split_demo::{GRANT_ENTRIES, setup_grant_table};
use pv_guest::xenbus::{self, StoreWait};
use xen_pv_abi::blkif::BlkifProtocol;
use xen_pv_abi::console::{EvtchnNotifier, Notify};
use xen_pv_abi::kit::blkfront::{self, Blkfront, DiskInfo, PAGE_SIZE};
use xen_pv_abi::kit::ring::{FrontRing, RawRingPage};
use xen_pv_abi::{Errno, EvtchnPort, VcpuId, evtchn};

use crate::{Ctx, Failure, Figures, rdtsc};

/// Data pages: one 128 KiB read as three requests in flight.
const DATA_PAGES: usize = 32;
/// Store round trips one handshake state wait may take.
const MAX_STATE_WAITS: u32 = 100_000;
/// The 4 KiB cases cycle over the disk's first 16 pages (64 KiB); a write only ever
/// touches these, so the backend's copy-on-write overlay stays small.
const CYCLE_PAGES: u64 = 16;
const SECTORS_PER_PAGE: u64 = (PAGE_SIZE / 512) as u64;
/// Most iterations of the round-trip cases: each goes through the control domain (some
/// tens of thousands of instructions).
const MAX_ITERATIONS: u64 = 2_000;
/// Bytes of one throughput read.
const BIG_READ: usize = 128 * 1024;

/// The shared ring (only accessed through [`RawRingPage`]).
static mut RING: Page = Page([0; PAGE_SIZE]);
/// The data pages (only accessed by raw pointer, through [`StaticPages`]).
static mut DATA: [Page; DATA_PAGES] = [const { Page([0; PAGE_SIZE]) }; DATA_PAGES];
/// What the write case writes.
static mut SOURCE: Page = Page([0xa5; PAGE_SIZE]);

/// [`DATA`] as the frontend's data pages, copied with a plain `memcpy` (the blk demo
/// copies byte by byte, volatile): a byte loop would be measured instead of I/O.
pub type StaticPages<'a> = front::StaticPages<'a, false>;

/// Data page `k` (below 32) by raw pointer, for a case that needs pages and runs
/// without the block cases (`net`): no new statics, so the guest's layout stays.
pub fn scratch_page(k: usize) -> *mut u8 {
    assert!(k < DATA_PAGES);
    // SAFETY: in bounds of the static array (checked above); only a pointer is made.
    unsafe { (&raw mut DATA).cast::<Page>().add(k).cast::<u8>() }
}

/// TSC total of the frontend's notifications (`EVTCHNOP_send` to the backend).
static NOTIFY_TSC: AtomicU64 = AtomicU64::new(0);

/// [`EvtchnNotifier`] that adds the time of each send to [`NOTIFY_TSC`] (about ten
/// instructions of its own per request).
pub struct TimedNotify(EvtchnNotifier);

impl Notify for TimedNotify {
    fn notify(&mut self) {
        let t0 = rdtsc();
        self.0.notify();
        NOTIFY_TSC.fetch_add(rdtsc().wrapping_sub(t0), Ordering::Relaxed);
    }
}

/// The connected disk of [`with_disk`].
pub type Disk<'t, 's> = Blkfront<'t, RawRingPage, GRANT_ENTRIES, StaticPages<'s>, TimedNotify>;

/// A wait that blocks until `port` has an event it has not seen.
pub struct PortWait {
    port: EvtchnPort,
    seen: u32,
}

impl xen_pv_abi::kit::Wait for PortWait {
    fn wait(&mut self) -> Result<(), Errno> {
        let (port, seen) = (self.port, self.seen);
        wait_until(|| count(port) != seen);
        self.seen = count(port);
        Ok(())
    }
}

fn wrong(what: &'static str) -> impl FnOnce(Errno) -> Failure {
    move |e| {
        pv_guest::io_println!("bench: blk: {what}: {e}");
        Failure::Errno(e)
    }
}

/// Connects to the first `device/vbd/*` the control domain made for us, runs `body` on
/// it and closes it again. Needs a xenstore (`no_xenstore` as dom0 on Xen) and a vbd
/// (`no_vbd`: the run was not given one).
pub fn with_disk<R>(
    si: &StartInfo,
    body: impl FnOnce(&mut Disk<'_, '_>, &mut PortWait) -> Result<R, Failure>,
) -> Result<R, Failure> {
    if si.xenstore().is_none() {
        return Err(Failure::Wrong("no_xenstore"));
    }
    events::init(si)?;
    let r = connected(si, body);
    // Leave event delivery masked, as the other cases expect it.
    events::disable();
    r
}

fn connected<R>(
    si: &StartInfo,
    body: impl FnOnce(&mut Disk<'_, '_>, &mut PortWait) -> Result<R, Failure>,
) -> Result<R, Failure> {
    let mut xs = xenbus::connect(si)?;
    let (_, store_port) = si.xenstore().ok_or(Failure::Wrong("no_xenstore"))?;
    let mut store_wait = StoreWait(store_port);
    let dev = front::first_device(&mut xs, "vbd").map_err(|e| match e {
        NoDevice::List(_) | NoDevice::Empty => Failure::Wrong("no_vbd"),
        NoDevice::Name => Failure::Wrong("vbd_name"),
    })?;
    let dev = dev.as_str();
    let backend = blkfront::probe(&mut xs, dev).map_err(wrong("probe"))?;
    let table = setup_grant_table().map_err(|_| Failure::Wrong("grant_table"))?;
    let ring_va = (&raw mut RING).cast::<u8>();
    // SAFETY: RING is a page of this kernel reserved for the ring and only accessed
    // through this view (and the backend's mapping of its grant).
    let ring_mem = unsafe { RawRingPage::new(ring_va, PAGE_SIZE) };
    let ring = FrontRing::<BlkifProtocol, _>::init(ring_mem)?;
    let ring_grant = front::grant_page(si, &table, backend.domid, ring_va)?;
    let port = front::backend_port(backend.domid)?;

    let info = blkfront::connect(
        &mut xs,
        dev,
        &backend,
        ring_grant.gref(),
        port,
        &mut store_wait,
        MAX_STATE_WAITS,
    )
    .map_err(wrong("connect"))?;
    let mut disk = Blkfront::new(
        ring,
        &table,
        backend.domid,
        // SAFETY: DATA is reserved for the data pages and only accessed through this view
        // while the disk is connected (`net` borrows it only in runs without this case).
        unsafe { StaticPages::new(si, (&raw mut DATA).cast::<u8>(), DATA_PAGES) },
        TimedNotify(EvtchnNotifier(port)),
        info,
    );
    disk.set_max_waits(1_000_000);
    let mut wait = PortWait {
        port,
        seen: count(port),
    };
    let r = body(&mut disk, &mut wait);
    drop(disk);
    let closed = blkfront::close(&mut xs, dev, &backend, &mut store_wait, MAX_STATE_WAITS);
    // The backend has unmapped the ring once it is Closed.
    let _ = ring_grant.end();
    let _ = evtchn::close(port);
    let r = r?;
    closed.map_err(wrong("close"))?;
    Ok(r)
}

/// Which request a round-trip case makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
}

/// The TSC totals of the three steps of every iteration.
#[derive(Default)]
struct Steps {
    /// Part of `submit`: the `EVTCHNOP_send` calls.
    notify: u64,
    submit: u64,
    wait: u64,
    complete: u64,
}

/// One request of `kind` on page `i % CYCLE_PAGES`, timed per step.
fn one(
    disk: &mut Disk<'_, '_>,
    wait: &mut PortWait,
    kind: Kind,
    i: u64,
    steps: &mut Steps,
) -> Result<(), Failure> {
    let sector = (i % CYCLE_PAGES) * SECTORS_PER_PAGE;
    let t0 = rdtsc();
    let id = match kind {
        Kind::Read => disk.submit_read(sector, PAGE_SIZE)?,
        Kind::Write => {
            // SAFETY: SOURCE is ours, never referenced mutably, read as bytes.
            let src = unsafe { &*(&raw const SOURCE).cast::<[u8; PAGE_SIZE]>() };
            disk.submit_write(sector, src)?
        }
        Kind::Flush => disk.submit_flush()?,
    };
    let t1 = rdtsc();
    if !disk.wait_response(wait)? {
        return Err(Failure::Wrong("nothing_in_flight"));
    }
    let t2 = rdtsc();
    let done = disk.poll(|_, _, bytes| {
        core::hint::black_box(bytes);
    })?;
    let t3 = rdtsc();
    let done = done.ok_or(Failure::Wrong("no_response"))?;
    if done.id != id {
        return Err(Failure::Wrong("other_response"));
    }
    done.result?;
    steps.submit += t1.wrapping_sub(t0);
    steps.wait += t2.wrapping_sub(t1);
    steps.complete += t3.wrapping_sub(t2);
    Ok(())
}

/// The same loop with the four time stamps and the sums, but no request.
fn empty(n: u64) -> u64 {
    let mut steps = Steps::default();
    let start = rdtsc();
    for _ in 0..n {
        let t0 = rdtsc();
        core::hint::black_box(&mut steps);
        let t1 = rdtsc();
        core::hint::black_box(&mut steps);
        let t2 = rdtsc();
        core::hint::black_box(&mut steps);
        let t3 = rdtsc();
        steps.submit += t1.wrapping_sub(t0);
        steps.wait += t2.wrapping_sub(t1);
        steps.complete += t3.wrapping_sub(t2);
    }
    let total = rdtsc().wrapping_sub(start);
    core::hint::black_box(steps);
    total
}

fn round_trips(ctx: &Ctx, name: &str, kind: Kind) -> Figures {
    let n = ctx.n.min(MAX_ITERATIONS);
    let (total, steps) = with_disk(ctx.si, |disk, wait| {
        let info: DiskInfo = disk.info();
        if info.sectors < CYCLE_PAGES * SECTORS_PER_PAGE {
            return Err(Failure::Wrong("disk_too_small"));
        }
        if kind == Kind::Write && info.read_only() {
            return Err(Failure::Wrong("read_only_disk"));
        }
        // Warm up outside the measurement: every page of the cycle once (a write's
        // first touch of a chunk allocates it in the backend's overlay).
        let mut warm = Steps::default();
        for i in 0..CYCLE_PAGES {
            one(disk, wait, kind, i, &mut warm)?;
        }
        let mut steps = Steps::default();
        NOTIFY_TSC.store(0, Ordering::Relaxed);
        let start = rdtsc();
        for i in 0..n {
            one(disk, wait, kind, i, &mut steps)?;
        }
        let total = rdtsc().wrapping_sub(start);
        steps.notify = NOTIFY_TSC.load(Ordering::Relaxed);
        Ok((total, steps))
    })?;
    let baseline = empty(n);
    // The step totals ride on the BENCH line: `report` prints the usual figures after.
    pv_guest::io_println!(
        "BENCH_STEPS name={name} iterations={n} submit={} notify={} wait={} complete={}",
        steps.submit,
        steps.notify,
        steps.wait,
        steps.complete
    );
    Ok((n, total, baseline))
}

/// One 4 KiB read (8 sectors, one segment) through the control domain's blkback.
pub fn blk_read_4k(ctx: &Ctx) -> Figures {
    round_trips(ctx, "blk_read_4k", Kind::Read)
}

/// One 4 KiB write.
pub fn blk_write_4k(ctx: &Ctx) -> Figures {
    round_trips(ctx, "blk_write_4k", Kind::Write)
}

/// One `BLKIF_OP_FLUSH_DISKCACHE` without data: the request round trip alone (ring,
/// notifications, both domains' wake-ups), which the 4 KiB cases add data to.
pub fn blk_flush(ctx: &Ctx) -> Figures {
    round_trips(ctx, "blk_flush", Kind::Flush)
}

/// `blk_read_throughput` (real time): prints `bytes=` and `ns=`, or why it could not run.
pub fn blk_read_throughput(ctx: &Ctx, mib: u64) {
    let name = "blk_read_throughput";
    match throughput(ctx.si, mib) {
        Ok((bytes, ns)) => pv_guest::io_println!("BENCH name={name} bytes={bytes} ns={ns}"),
        Err(e) => pv_guest::io_println!("BENCH name={name} unsupported={e}"),
    }
}

fn now_ns(si: &StartInfo) -> Result<u64, Failure> {
    let page = events::shared_info(si)?;
    Ok(xen_pv_abi::time::system_time_ns(page, VcpuId(0))?)
}

fn throughput(si: &StartInfo, mib: u64) -> Result<(u64, u64), Failure> {
    let want = mib.max(1).saturating_mul(1 << 20);
    with_disk(si, |disk, wait| {
        let per_read = (BIG_READ / 512) as u64;
        let reads_per_pass = disk.info().sectors / per_read;
        if reads_per_pass == 0 {
            return Err(Failure::Wrong("disk_too_small"));
        }
        let chunk = blkfront::MAX_REQUEST_BYTES;
        let start = now_ns(si)?;
        let mut bytes = 0u64;
        let mut i = 0u64;
        while bytes < want {
            let mut sector = (i % reads_per_pass) * per_read;
            let mut left = BIG_READ;
            let mut ids = [None; 3];
            for id in &mut ids {
                if left == 0 {
                    break;
                }
                let len = left.min(chunk);
                *id = Some(disk.submit_read(sector, len)?);
                sector += (len / 512) as u64;
                left -= len;
            }
            let mut pending = ids.iter().flatten().count();
            while pending > 0 {
                disk.wait_response(wait)?;
                while let Some(done) = disk.poll(|_, _, b| {
                    core::hint::black_box(b);
                })? {
                    done.result?;
                    pending -= 1;
                }
            }
            bytes += BIG_READ as u64;
            i += 1;
        }
        let ns = now_ns(si)?.saturating_sub(start);
        Ok((bytes, ns))
    })
}
