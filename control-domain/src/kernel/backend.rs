//! What the split-driver backends (`blk`, `net`) share: data moved by `GNTTABOP_copy`
//! ([`CopyIo`]), frontend ring pages mapped through the window ([`MappedRing`]), and
//! the xenbus handshake followed by polling the local store ([`XenbusDev`]).
//!
//! The xenbus side is polled: every serve round (every xenstore request wakes the
//! kernel) reads the frontend's `state` from the local store and acts on changes, so no
//! watch is needed. A backend writes its keys and InitWait before the frontend is
//! introduced to xenstored, so a frontend never sees it half set up.
//!
//! Paths are formatted on the stack ([`Path`]): the serve round runs while guests may
//! have filled the heap up to their xenstore quotas, and must not allocate infallibly.

use super::window::{Mapping, Window};
use alloc::string::String;
use control_domain::blkback::{Direction, GrantIo, GrantSegment};
use control_domain::devices::Device;
use control_domain::vif::parse_u32;
use control_domain::xenstored::Xenstored;
use core::fmt::Write as _;
use xen_pv_abi::kit::device::{DeviceState, Work};
use xen_pv_abi::kit::ring::{BackRing, RawRingPage, RingProtocol};
use xen_pv_abi::kit::{self, CopyBatch, CopyPtr};
use xen_pv_abi::transport::Native;
use xen_pv_abi::xenstore::XenbusState;
use xen_pv_abi::{DomId, Errno, EvtchnPort, GrantRef, Mfn, evtchn};
use xen_pv_rt::VIRT_BASE;

/// Grant copies per hypercall.
const BATCH: usize = 16;

/// Longest store path the backends form (`/local/domain/<fe>/device/vif/<devid>/…`
/// stays well below it).
const PATH_MAX: usize = 192;

/// A store path formatted on the stack.
pub type Path = heapless::String<PATH_MAX>;

/// `dir/key`; an over-long path comes out empty (no node has that name).
pub fn path(dir: &str, key: &str) -> Path {
    let mut p = Path::new();
    if write!(p, "{dir}/{key}").is_err() {
        p.clear();
    }
    p
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
        // The hypervisor writes wherever the frames and offsets say, so the segment
        // contract is checked rather than trusted: a segment outside `buf` or crossing
        // one of its pages would overwrite other memory of this kernel.
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

/// A frontend's ring page mapped in the window, with the backend's view of it.
pub struct MappedRing<P: RingProtocol> {
    /// The ring (valid while `map` is mapped; [`MappedRing::unmap`] drops it first).
    pub ring: BackRing<P, RawRingPage>,
    map: Mapping,
}

impl<P: RingProtocol> MappedRing<P> {
    /// Maps grant `gref` of `dom` and attaches a backend ring to it.
    pub fn map(window: &mut Window, dom: DomId, gref: GrantRef) -> Result<Self, kit::Error> {
        let mut map = window.map(dom, gref)?;
        // SAFETY: the window page is mapped (4 KiB, page-aligned) for as long as `map`
        // lives; `MappedRing` keeps the ring next to it and `unmap` drops the ring
        // before unmapping; the kit's ring accesses the page only atomically or
        // volatile, as the frontend writes it concurrently.
        let mem = unsafe { RawRingPage::new(map.as_ptr(), 4096) };
        match BackRing::new(mem) {
            Ok(ring) => Ok(MappedRing { ring, map }),
            Err(e) => {
                let _ = window.unmap(map);
                Err(e.into())
            }
        }
    }

    /// Drops the ring view and unmaps the page.
    pub fn unmap(self, window: &mut Window) {
        // The ring view is not used again (it has no Drop: it only touches the page
        // when called), so the page can go.
        let MappedRing { ring: _, map } = self;
        let _ = window.unmap(map);
    }
}

/// Binds the frontend's event channel `remote`.
pub fn bind(dom: DomId, remote: u32) -> Result<EvtchnPort, Errno> {
    evtchn::bind_interdomain(dom, EvtchnPort(remote))
}

/// The xenbus end of one backend device: its directories and handshake state.
pub struct XenbusDev {
    /// The frontend domain.
    pub frontend: DomId,
    /// The device id.
    pub devid: u32,
    /// `vbd`, `vif`: for messages.
    pub kind: &'static str,
    /// The frontend's directory.
    pub fe_path: String,
    /// `<fe_path>/state`, read every serve round (kept to avoid formatting it each
    /// time).
    fe_state: String,
    /// The backend's directory.
    pub be_path: String,
    /// The handshake (the backend's published state).
    pub xb: DeviceState,
}

impl XenbusDev {
    /// The backend end of `dev` (whose directories exist), about to write its keys.
    pub fn new(dev: &Device, kind: &'static str) -> Self {
        let fe_path = dev.frontend_path();
        let mut fe_state = fe_path.clone();
        fe_state.push_str("/state");
        XenbusDev {
            frontend: dev.frontend,
            devid: dev.devid,
            kind,
            fe_path,
            fe_state,
            be_path: dev.backend_path(),
            xb: DeviceState::backend(),
        }
    }

    /// Writes `key` in the backend directory.
    pub fn write(&self, store: &mut Xenstored, key: &str, value: &[u8]) -> Result<(), Errno> {
        store.write_local(&path(&self.be_path, key), value)
    }

    /// Writes the backend's keys, `hotplug-status = connected` (no script runs, as
    /// xl waits for it) and InitWait. Called before the frontend is introduced.
    pub fn init_wait<K: AsRef<str>, V: AsRef<str>>(
        &self,
        store: &mut Xenstored,
        keys: &[(K, V)],
    ) -> Result<(), Errno> {
        for (k, v) in keys {
            self.write(store, k.as_ref(), v.as_ref().as_bytes())?;
        }
        self.write(store, "hotplug-status", b"connected")?;
        self.write(store, "state", b"2")
    }

    /// A key of the frontend's directory.
    pub fn fe_read<'s>(&self, store: &'s Xenstored, key: &str) -> Option<&'s [u8]> {
        store.read_local(&path(&self.fe_path, key))
    }

    /// A decimal key of the frontend's directory.
    pub fn fe_read_u32(&self, store: &Xenstored, key: &str) -> Option<u32> {
        parse_u32(self.fe_read(store, key)?)
    }

    /// Reads the frontend's state and steps the handshake: the work to do now, and the
    /// state published before (for [`settle`](Self::settle)).
    pub fn step(&mut self, store: &Xenstored) -> (Work, XenbusState) {
        // A missing or unparsable state (a hostile or vanished frontend) is Unknown,
        // which closes the device.
        let fe = store
            .read_local(&self.fe_state)
            .and_then(parse_u32)
            .and_then(XenbusState::from_u32)
            .unwrap_or(XenbusState::Unknown);
        let before = self.xb.state();
        (self.xb.peer_changed(fe).work, before)
    }

    /// Publishes the state if it changed since `before`, and reports a frontend
    /// starting over.
    pub fn settle(
        &self,
        store: &mut Xenstored,
        before: XenbusState,
        say: &mut dyn FnMut(core::fmt::Arguments<'_>),
    ) {
        if self.xb.state() == before {
            return;
        }
        self.publish(store);
        if self.xb.state() == XenbusState::InitWait {
            say(format_args!(
                "d{} {}/{}: frontend reinitialising, backend in InitWait",
                self.frontend.0, self.kind, self.devid
            ));
        }
    }

    /// Writes the handshake's state to the backend's `state` node.
    pub fn publish(&self, store: &mut Xenstored) {
        let v = [b'0' + self.xb.state() as u8];
        // Nothing better to do if dom0's own write fails (a full store).
        let _ = self.write(store, "state", &v);
    }

    /// The work of the last step failed (or the ring broke): releases are the caller's;
    /// the state becomes Closed (published by the caller).
    pub fn failed(&mut self) {
        self.xb.failed();
    }

    /// Whether the handshake is Connected.
    pub fn connected(&self) -> bool {
        self.xb.state() == XenbusState::Connected
    }
}
