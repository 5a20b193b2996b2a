//! The block backends of the configured vbds: each serves a boot module (disk image) of
//! the same name through the library's [`Blkback`], moving data with `GNTTABOP_copy`.
//!
//! The xenbus side is polled: every serve round (every xenstore request wakes the
//! kernel) reads the frontend's `state` from the local store and acts on changes, so no
//! watch is needed. The backend keys and InitWait are written before the frontend is
//! introduced to xenstored, as GRUB expects (control-plane doc §4.4).

use super::window::{Mapping, Window};
use alloc::string::String;
use control_domain::blkback::{
    self, Blkback, BlkbackConfig, Direction, DiskInfo, GrantIo, GrantSegment, SliceDisk,
};
use control_domain::devices::{Device, DeviceSpec};
use control_domain::xenstored::Xenstored;
use core::fmt::Write as _;
use xen_pv_abi::blkif::BlkifProtocol;
use xen_pv_abi::kit::device::{DeviceState, Work};
use xen_pv_abi::kit::ring::{BackRing, RawRingPage};
use xen_pv_abi::kit::{self, CopyBatch, CopyPtr};
use xen_pv_abi::transport::Native;
use xen_pv_abi::xenstore::XenbusState;
use xen_pv_abi::{DomId, Errno, EvtchnPort, GrantRef, Mfn, evtchn};
use xen_pv_rt::VIRT_BASE;

/// Most 4 KiB chunks a writable disk keeps in its copy-on-write overlay (1 MiB).
const OVERLAY_CHUNKS: usize = 256;
/// Grant copies per hypercall.
const BATCH: usize = 16;
/// The only ring layout served (a 64-bit frontend).
const PROTOCOL: &[u8] = b"x86_64-abi";

/// A connected ring: the frontend's page in the window and the bound event channel.
struct Conn {
    ring: BackRing<BlkifProtocol, RawRingPage>,
    map: Mapping,
    port: EvtchnPort,
}

/// One served virtual block device.
pub struct Vbd {
    frontend: DomId,
    devid: u32,
    fe_path: String,
    /// `<fe_path>/state`, read every serve round (kept to avoid formatting it each time).
    fe_state: String,
    be_path: String,
    disk: SliceDisk<'static>,
    back: Blkback,
    conn: Option<Conn>,
    /// The xenbus handshake (the backend's published state).
    xb: DeviceState,
    /// Served no more (protocol violation or frontend gone).
    dead: bool,
}

/// `GrantIo` by `GNTTABOP_copy` between frontend grants and this domain's own frames.
pub struct CopyIo {
    batch: CopyBatch<BATCH>,
    /// The p2m list (start_info's `mfn_list`, `nr_pages` entries).
    p2m: &'static [u64],
}

impl CopyIo {
    /// Grant copies using `p2m` to find the frames of the kernel's buffers.
    pub fn new(p2m: &'static [u64]) -> Self {
        CopyIo {
            batch: CopyBatch::new(),
            p2m,
        }
    }

    /// The frame of kernel page `va` (mapped at `VIRT_BASE + pfn * 4096`).
    fn mfn_of(&self, va: u64) -> Result<Mfn, Errno> {
        let pfn = va.checked_sub(VIRT_BASE).ok_or(Errno::EFAULT)? >> 12;
        let pfn = usize::try_from(pfn).map_err(|_| Errno::EFAULT)?;
        self.p2m.get(pfn).map(|&m| Mfn(m)).ok_or(Errno::EFAULT)
    }
}

impl GrantIo for CopyIo {
    fn copy(
        &mut self,
        domid: DomId,
        dir: Direction,
        segs: &[GrantSegment],
        buf: &mut [u8],
        status: &mut [i16],
    ) -> Result<(), Errno> {
        let base = buf.as_mut_ptr() as u64;
        // The hypervisor writes wherever the frames and offsets say, so blkback's
        // segment contract is checked rather than trusted: a segment outside `buf` or
        // crossing one of its pages would overwrite other memory of this kernel.
        if !base.is_multiple_of(4096) || status.len() != segs.len() {
            return Err(Errno::EINVAL);
        }
        for s in segs {
            let in_buf = s
                .buf_offset
                .checked_add(usize::from(s.len))
                .is_some_and(|end| end <= buf.len());
            let same_offset = s.buf_offset % 4096 == usize::from(s.offset);
            if !in_buf || !same_offset || usize::from(s.offset) + usize::from(s.len) > 4096 {
                return Err(Errno::EINVAL);
            }
        }
        for (chunk, st) in segs.chunks(BATCH).zip(status.chunks_mut(BATCH)) {
            self.batch.clear();
            for s in chunk {
                let page = (s.buf_offset / 4096 * 4096) as u64;
                let local = CopyPtr::Local {
                    frame: self.mfn_of(base + page)?,
                    offset: s.offset,
                };
                let grant = CopyPtr::Grant {
                    domid,
                    gref: s.gref,
                    offset: s.offset,
                };
                match dir {
                    Direction::FromFrontend => self.batch.push(grant, local, s.len)?,
                    Direction::ToFrontend => self.batch.push(local, grant, s.len)?,
                }
            }
            // The hypervisor reads or writes `buf` behind the compiler's back.
            core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
            let done = self.batch.submit(&Native)?;
            for (out, s) in st.iter_mut().zip(done.iter()) {
                *out = s;
            }
            core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
}

fn path(dir: &str, key: &str) -> String {
    let mut s = String::new();
    let _ = write!(s, "{dir}/{key}");
    s
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    core::str::from_utf8(v).ok()?.trim().parse().ok()
}

fn read_u32(store: &Xenstored, dir: &str, key: &str) -> Option<u32> {
    parse_u32(store.read_local(&path(dir, key))?)
}

impl Vbd {
    /// Sets up the backend of `dev` (a vbd whose directories exist) over `image`: writes
    /// the disk's keys and switches to InitWait.
    pub fn new(store: &mut Xenstored, dev: &Device, image: &'static [u8]) -> Result<Self, Errno> {
        let DeviceSpec::Vbd { readonly, .. } = dev.spec else {
            return Err(Errno::EINVAL);
        };
        let disk = if readonly {
            SliceDisk::read_only(image)
        } else {
            SliceDisk::copy_on_write(image, OVERLAY_CHUNKS)
        };
        let cfg = BlkbackConfig::default();
        let back = Blkback::new(dev.frontend, cfg)?;
        let be_path = dev.backend_path();
        let keys = blkback::backend_keys(&DiskInfo::of(&disk), cfg.max_indirect_segments);
        for (k, v) in &keys {
            store.write_local(&path(&be_path, k), v.as_bytes())?;
        }
        store.write_local(&path(&be_path, "hotplug-status"), b"connected")?;
        let vbd = Vbd {
            frontend: dev.frontend,
            devid: dev.devid,
            fe_path: dev.frontend_path(),
            fe_state: path(&dev.frontend_path(), "state"),
            be_path,
            disk,
            back,
            conn: None,
            xb: DeviceState::backend(),
            dead: false,
        };
        // InitWait, with every key written, before the frontend is introduced.
        store.write_local(&path(&vbd.be_path, "state"), b"2")?;
        Ok(vbd)
    }

    /// The frontend domain.
    pub fn frontend(&self) -> DomId {
        self.frontend
    }

    /// Writes the handshake's state to the backend's `state` node.
    fn publish(&self, store: &mut Xenstored) {
        let v = [b'0' + self.xb.state() as u8];
        // Nothing better to do if dom0's own write fails (a full store).
        let _ = store.write_local(&path(&self.be_path, "state"), &v);
    }

    /// Follows the frontend's state (the kit's xenbus machine) and serves the ring.
    /// Returns whether work is left for another round; `say` hears of what happens.
    pub fn poll(
        &mut self,
        store: &mut Xenstored,
        window: &mut Window,
        gio: &mut CopyIo,
        say: &mut dyn FnMut(core::fmt::Arguments<'_>),
    ) -> bool {
        if self.dead {
            return false;
        }
        // A missing or unparsable state (a hostile or vanished frontend) is Unknown,
        // which closes the device.
        let fe = store
            .read_local(&self.fe_state)
            .and_then(parse_u32)
            .and_then(XenbusState::from_u32)
            .unwrap_or(XenbusState::Unknown);
        let before = self.xb.state();
        let t = self.xb.peer_changed(fe);
        match t.work {
            Work::Connect => match self.connect(store, window) {
                Ok(()) => say(format_args!(
                    "d{} vbd/{}: connected",
                    self.frontend.0, self.devid
                )),
                Err(e) => {
                    say(format_args!(
                        "d{} vbd/{}: cannot connect: {e}",
                        self.frontend.0, self.devid
                    ));
                    self.xb.failed();
                    self.disconnect(window);
                }
            },
            Work::Disconnect => {
                self.disconnect(window);
                let st = self.back.stats();
                say(format_args!(
                    "d{} vbd/{}: disconnected ({} requests, {} sectors read, {} written)",
                    self.frontend.0,
                    self.devid,
                    st.ok + st.errors + st.unsupported,
                    st.sectors_read,
                    st.sectors_written
                ));
            }
            Work::None | Work::Publish => {}
        }
        if self.xb.state() != before {
            self.publish(store);
            if self.xb.state() == XenbusState::InitWait {
                say(format_args!(
                    "d{} vbd/{}: frontend reinitialising, backend in InitWait",
                    self.frontend.0, self.devid
                ));
            }
        }
        if self.xb.state() != XenbusState::Connected {
            return false;
        }
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        match self.back.service(&mut c.ring, gio, &mut self.disk) {
            Ok(s) => {
                if s.notify {
                    let _ = evtchn::send(c.port);
                }
                s.more
            }
            Err(d) => {
                say(format_args!(
                    "d{} vbd/{}: ring protocol violation ({:?}), device closed",
                    self.frontend.0, self.devid, d.error
                ));
                self.xb.failed();
                self.disconnect(window);
                self.publish(store);
                self.dead = true;
                false
            }
        }
    }

    /// Maps the frontend's ring and binds its event channel.
    fn connect(&mut self, store: &Xenstored, window: &mut Window) -> Result<(), kit::Error> {
        if let Some(p) = store.read_local(&path(&self.fe_path, "protocol"))
            && !p.is_empty()
            && p != PROTOCOL
        {
            return Err(Errno::EOPNOTSUPP.into());
        }
        let gref = read_u32(store, &self.fe_path, "ring-ref").ok_or(Errno::EINVAL)?;
        let port = read_u32(store, &self.fe_path, "event-channel").ok_or(Errno::EINVAL)?;
        let mut map = window.map(self.frontend, GrantRef(gref))?;
        // SAFETY: the window page is mapped (4 KiB, page-aligned) for as long as `map`
        // lives; `Conn` keeps the ring next to it and `disconnect` drops the ring before
        // unmapping; the kit's ring accesses the page only atomically or volatile.
        let mem = unsafe { RawRingPage::new(map.as_ptr(), 4096) };
        let ring = match BackRing::new(mem) {
            Ok(r) => r,
            Err(e) => {
                let _ = window.unmap(map);
                return Err(e.into());
            }
        };
        let local = match evtchn::bind_interdomain(self.frontend, EvtchnPort(port)) {
            Ok(p) => p,
            Err(e) => {
                let _ = window.unmap(map);
                return Err(e.into());
            }
        };
        self.conn = Some(Conn {
            ring,
            map,
            port: local,
        });
        Ok(())
    }

    /// Unbinds and unmaps the ring, if connected.
    pub fn disconnect(&mut self, window: &mut Window) {
        if let Some(Conn { ring: _, map, port }) = self.conn.take() {
            let _ = evtchn::close(port);
            let _ = window.unmap(map);
        }
    }

    /// The frontend domain ended: releases the ring and serves no more. `say` hears
    /// what was still mapped and what the vbd served (a frontend that crashed mid-I/O
    /// has its last requests answered with errors: its grants are gone).
    pub fn release(&mut self, window: &mut Window, say: &mut dyn FnMut(core::fmt::Arguments<'_>)) {
        let mapped = self.conn.is_some();
        self.disconnect(window);
        self.dead = true;
        let st = self.back.stats();
        say(format_args!(
            "d{} vbd/{}: frontend gone{}: {} requests ({} ok, {} failed, {} unsupported)",
            self.frontend.0,
            self.devid,
            if mapped { ", ring unmapped" } else { "" },
            st.ok + st.errors + st.unsupported,
            st.ok,
            st.errors,
            st.unsupported
        ));
    }
}
