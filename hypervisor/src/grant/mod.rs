//! `grant_table_op` (20) with Xen 4.17's semantics for a PV domain: versions 1 and 2
//! (`set_version`, `get_version`, `get_status_frames`), `setup_table`, `query_size`,
//! `copy` ([`copy`]), the PV mappings of `map_grant_ref`, `unmap_grant_ref` and
//! `unmap_and_replace` ([`map`]), `transfer`, `swap_grant_ref` and `cache_flush`
//! ([`ops`]). `dump_table` is `-ENOSYS`, as in Xen 4.17 (it has no such command).
//!
//! The grant frames (and, in version 2, the status frames) are allocated on demand,
//! owned by the domain (so its page tables may map them writable, as Xen lets a PV guest
//! map its shared grant frames) but outside its p2m, and freed with the rest of the
//! domain's frames when it ends.
//!
//! Each table keeps the pins of its entries ([`Active`], Xen's active entries): the
//! grant mappings other domains hold. A copy pins an entry only while it runs, so only
//! mappings stay pinned between hypercalls. The status bits (`GTF_reading`,
//! `GTF_writing`: in the entry's flags in v1, in the status frames in v2) are set while
//! an entry is pinned or copied and cleared when neither is left.
//!
//! Speed (what Xen does differently): elements are read and their results written back
//! through the guest translation cache, inlined ([`crate::mmu::guest`]); Xen uses the
//! hardware MMU with exception fix-ups. A grant PTE installed into an empty L1 entry
//! keeps that cache, and removing one forgets only the walks ending in its frame.

use crate::hv::Hypervisor;
use crate::hypercall::handle::{GuestArray, Outcome, Untyped};
use crate::platform::{MachineMemory, Platform};
use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Reverse;
use xen_pv_abi::grant_table::{
    GNTST_BAD_DOMAIN, GNTST_BAD_VIRT_ADDR, GNTST_GENERAL_ERROR, GNTST_OKAY,
    GNTST_PERMISSION_DENIED, GNTTAB_NR_RESERVED_ENTRIES, GNTTAB_RESERVED_CONSOLE,
    GNTTAB_RESERVED_XENSTORE, GNTTABOP_CACHE_FLUSH, GNTTABOP_CMD_MASK, GNTTABOP_COPY,
    GNTTABOP_GET_STATUS_FRAMES, GNTTABOP_GET_VERSION, GNTTABOP_MAP_GRANT_REF, GNTTABOP_QUERY_SIZE,
    GNTTABOP_SET_VERSION, GNTTABOP_SETUP_TABLE, GNTTABOP_SWAP_GRANT_REF, GNTTABOP_TRANSFER,
    GNTTABOP_UNMAP_AND_REPLACE, GNTTABOP_UNMAP_GRANT_REF, GTF_PERMIT_ACCESS, GTF_READING,
    GTF_TRANSITIVE, GTF_TYPE_MASK, GTF_WRITING, GnttabGetStatusFrames, GnttabGetVersion,
    GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GrantEntryV1,
};
use xen_pv_abi::layout::{PAGE_SIZE, in_hypervisor_range, is_canonical};
use xen_pv_abi::{DomId, Errno, Mfn};
use zerocopy::IntoBytes;

use crate::hypercall::HcResult;
use core::mem::offset_of;

mod copy;
mod entry;
mod map;
mod ops;
pub use copy::COPY_BATCH;
pub use map::{GrantMap, MAP_BATCH, grant_mapped_by_others};
pub use ops::OP_BATCH;

/// Xen's `gnttab_max_frames` default: the most grant frames any domain may have.
pub const MAX_GRANT_FRAMES: u32 = 64;
/// Xen's `gnttab_max_maptrack_frames` default: the most maptrack frames of a domain.
pub const MAX_MAPTRACK_FRAMES: u32 = 1024;
/// Maptrack entries per maptrack frame (Xen's 16-byte `struct grant_mapping`).
pub const MAPTRACK_PER_FRAME: u32 = (PAGE_SIZE / 16) as u32;
/// Version-1 entries per grant frame.
pub const V1_PER_FRAME: u32 = (PAGE_SIZE / 8) as u32;
/// Version-2 entries per grant frame.
pub const V2_PER_FRAME: u32 = (PAGE_SIZE / 16) as u32;
/// Status words (`grant_status_t`) per status frame.
pub const STATUS_PER_FRAME: u32 = (PAGE_SIZE / 2) as u32;

/// A domain's grant-table limits (Xen's `max_grant_frames` / `max_maptrack_frames` of
/// `XEN_DOMCTL_createdomain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantLimits {
    /// Most grant frames (1..=[`MAX_GRANT_FRAMES`]); `query_size` reports it.
    pub max_grant_frames: u32,
    /// Most maptrack frames (0..=[`MAX_MAPTRACK_FRAMES`]); each holds
    /// [`MAPTRACK_PER_FRAME`] mappings.
    pub max_maptrack_frames: u32,
}

impl Default for GrantLimits {
    fn default() -> Self {
        GrantLimits {
            max_grant_frames: MAX_GRANT_FRAMES,
            max_maptrack_frames: MAX_MAPTRACK_FRAMES,
        }
    }
}

impl GrantLimits {
    /// The limits if Xen's `grant_table_init` accepts them, `EINVAL` otherwise.
    pub fn checked(self) -> Result<Self, Errno> {
        if self.max_grant_frames < 1
            || self.max_grant_frames > MAX_GRANT_FRAMES
            || self.max_maptrack_frames > MAX_MAPTRACK_FRAMES
        {
            return Err(Errno::EINVAL);
        }
        Ok(self)
    }

    /// Most grant mappings the domain may hold at once.
    pub fn max_maps(self) -> usize {
        self.max_maptrack_frames as usize * MAPTRACK_PER_FRAME as usize
    }
}

/// The pins of one entry: the mappings a domain holds of it (Xen's active entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Active {
    /// The entry.
    pub gref: u32,
    /// The one domain that may pin it while it is pinned.
    pub mapper: DomId,
    /// The frame the first pin found (later pins use it).
    pub mfn: Mfn,
    /// Read-only pins (host and device parts count separately).
    pub readers: u32,
    /// Writable pins.
    pub writers: u32,
}

impl Active {
    /// The status bits these pins hold.
    pub fn bits(&self) -> u16 {
        let mut b = 0;
        if self.readers + self.writers > 0 {
            b |= GTF_READING;
        }
        if self.writers > 0 {
            b |= GTF_WRITING;
        }
        b
    }
}

/// A domain's grant table: its version, frames, status frames, maptrack and pins.
#[derive(Clone, Debug)]
pub struct GrantTable {
    version: u32,
    limits: GrantLimits,
    frames: Vec<Mfn>,
    status: Vec<Mfn>,
    /// The domain's grant mappings of other domains' frames (its maptrack), indexed by
    /// handle.
    maps: Vec<Option<GrantMap>>,
    /// The free slots of `maps`, lowest first: a map finds its handle without scanning
    /// the maptrack (up to 262144 slots) per element. Its capacity always covers
    /// `maps.len()`, so pushing a freed handle never allocates.
    free_handles: BinaryHeap<Reverse<u32>>,
    /// The pins of this table's entries, sorted by `gref`.
    active: Vec<Active>,
    /// Pages the domain gave away with `GNTTABOP_transfer` and may receive back (its
    /// reservation is fixed at build time).
    headroom: u64,
}

impl Default for GrantTable {
    fn default() -> Self {
        Self::new()
    }
}

impl GrantTable {
    /// An empty version-1 table with Xen's default limits (no frame allocated yet).
    pub const fn new() -> Self {
        GrantTable {
            version: 1,
            limits: GrantLimits {
                max_grant_frames: MAX_GRANT_FRAMES,
                max_maptrack_frames: MAX_MAPTRACK_FRAMES,
            },
            frames: Vec::new(),
            status: Vec::new(),
            maps: Vec::new(),
            free_handles: BinaryHeap::new(),
            active: Vec::new(),
            headroom: 0,
        }
    }

    /// An empty table with `limits` (`EINVAL` as Xen for out-of-range limits).
    pub fn with_limits(limits: GrantLimits) -> Result<Self, Errno> {
        Ok(GrantTable {
            limits: limits.checked()?,
            ..Self::new()
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> GrantLimits {
        self.limits
    }

    /// The version in force (1 or 2).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The grant frames allocated so far.
    pub fn frames(&self) -> &[Mfn] {
        &self.frames
    }

    /// The status frames (version 2 only; empty in version 1).
    pub fn status_frames(&self) -> &[Mfn] {
        &self.status
    }

    /// The maptrack: the grant mappings the domain holds, by handle.
    pub fn maps(&self) -> &[Option<GrantMap>] {
        &self.maps
    }

    /// Live entries of the maptrack: the grant mappings the domain holds now.
    pub fn live_maps(&self) -> usize {
        self.maps.iter().filter(|m| m.is_some()).count()
    }

    /// Pages given away by `GNTTABOP_transfer` and not received back.
    pub fn transferred_out(&self) -> u64 {
        self.headroom
    }

    /// The pins of this table's entries.
    pub fn active(&self) -> &[Active] {
        &self.active
    }

    /// Entries per grant frame in the version in force.
    pub fn per_frame(&self) -> u32 {
        if self.version == 2 {
            V2_PER_FRAME
        } else {
            V1_PER_FRAME
        }
    }

    /// Number of entries the frames hold.
    pub fn nr_entries(&self) -> u32 {
        self.frames.len() as u32 * self.per_frame()
    }

    /// Machine address of entry `gref` (its `flags`/`domid` header), if it exists.
    pub fn entry_maddr(&self, gref: u32) -> Option<u64> {
        let per = self.per_frame();
        let frame = self.frames.get((gref / per) as usize)?;
        let size = PAGE_SIZE as u64 / u64::from(per);
        Some(frame.maddr() + u64::from(gref % per) * size)
    }

    /// Machine address of the status word of entry `gref`: its flags in v1, its
    /// `grant_status_t` in v2.
    pub fn status_maddr(&self, gref: u32) -> Option<u64> {
        if self.version == 1 {
            return self.entry_maddr(gref);
        }
        if gref >= self.nr_entries() {
            return None;
        }
        let frame = self.status.get((gref / STATUS_PER_FRAME) as usize)?;
        Some(frame.maddr() + u64::from(gref % STATUS_PER_FRAME) * 2)
    }

    /// The pins of entry `gref`, if pinned.
    pub fn active_of(&self, gref: u32) -> Option<&Active> {
        let i = self.active.binary_search_by_key(&gref, |a| a.gref).ok()?;
        self.active.get(i)
    }

    fn status_frames_for(nr_frames: usize) -> usize {
        (nr_frames * V2_PER_FRAME as usize).div_ceil(STATUS_PER_FRAME as usize)
    }
}

/// Whether a guest array of `bytes` at `addr` lies in guest-accessible addresses (Xen's
/// `guest_handle_okay`).
pub(crate) fn guest_range_ok(addr: u64, bytes: u64) -> bool {
    if bytes == 0 {
        return true;
    }
    let Some(last) = addr.checked_add(bytes - 1) else {
        return false;
    };
    let ok = |a: u64| is_canonical(a) && !in_hypervisor_range(a);
    ok(addr) && ok(last) && (addr >> 47 == last >> 47)
}

/// Where the domain-id argument of a grant op points.
pub(crate) enum Target {
    /// A domain the caller may act on (itself, or anyone for the control domain).
    Slot(usize),
    /// Otherwise: the `GNTST_*` Xen answers.
    Refused(i16),
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `grant_table_op(cmd, uop, count)` from the running domain.
    pub(crate) fn grant_table_op(
        &mut self,
        idx: usize,
        cmd: u32,
        uop: GuestArray<Untyped>,
    ) -> Outcome {
        // Xen: `(int)count < 0`, then continuation bits on anything but cache_flush.
        if uop.len() > i32::MAX as u64 {
            return Outcome::Return(Err(Errno::EINVAL));
        }
        let opaque = cmd & !GNTTABOP_CMD_MASK;
        let cmd = cmd & GNTTABOP_CMD_MASK;
        if cmd != GNTTABOP_CACHE_FLUSH && opaque != 0 {
            return Outcome::Return(Err(Errno::EINVAL));
        }
        match cmd {
            GNTTABOP_COPY => return self.gnttab_copy(idx, uop),
            GNTTABOP_MAP_GRANT_REF | GNTTABOP_UNMAP_GRANT_REF | GNTTABOP_UNMAP_AND_REPLACE => {
                return self.gnttab_map_batch(idx, cmd, uop);
            }
            GNTTABOP_TRANSFER => return self.gnttab_transfer(idx, uop),
            GNTTABOP_SWAP_GRANT_REF => return self.gnttab_swap(idx, uop),
            GNTTABOP_CACHE_FLUSH => return self.gnttab_cache_flush(idx, uop, opaque),
            _ => {}
        }
        self.grant_table_op_one(idx, cmd, uop).into()
    }

    fn grant_table_op_one(&mut self, idx: usize, cmd: u32, uop: GuestArray<Untyped>) -> HcResult {
        let count = uop.len();
        let uop = uop.addr();
        match cmd {
            // Xen reads exactly one structure, whatever `count` says.
            GNTTABOP_SET_VERSION => self.gnttab_set_version(idx, uop),
            GNTTABOP_GET_VERSION => self.gnttab_get_version(idx, uop),
            GNTTABOP_SETUP_TABLE if count == 1 => self.gnttab_setup_table(idx, uop),
            GNTTABOP_QUERY_SIZE if count == 1 => self.gnttab_query_size(idx, uop),
            GNTTABOP_GET_STATUS_FRAMES if count == 1 => self.gnttab_get_status_frames(idx, uop),
            GNTTABOP_SETUP_TABLE | GNTTABOP_QUERY_SIZE | GNTTABOP_GET_STATUS_FRAMES => {
                Err(Errno::EINVAL)
            }
            // GNTTABOP_dump_table (3) is not a command of Xen 4.17, nor is anything else.
            _ => Err(Errno::ENOSYS),
        }
    }

    fn gnttab_get_version(&mut self, idx: usize, uop: u64) -> HcResult {
        let mut op: GnttabGetVersion = self.read_guest(idx, uop)?;
        // Xen: -ESRCH for an unknown domain, -EPERM for someone else's unless the caller
        // is privileged (XSM_TARGET).
        let t = match self.grant_target(idx, op.dom) {
            Target::Slot(t) => t,
            Target::Refused(GNTST_BAD_DOMAIN) => return Err(Errno::ESRCH),
            Target::Refused(_) => return Err(Errno::EPERM),
        };
        op.version = self.domains[t].grant.version;
        self.write_guest(idx, uop, op.as_bytes())?;
        Ok(0)
    }

    fn gnttab_query_size(&mut self, idx: usize, uop: u64) -> HcResult {
        let mut op: GnttabQuerySize = self.read_guest(idx, uop)?;
        match self.grant_target(idx, op.dom) {
            Target::Slot(t) => {
                let g = &self.domains[t].grant;
                op.nr_frames = g.frames.len() as u32;
                op.max_nr_frames = g.limits.max_grant_frames;
                op.status = GNTST_OKAY;
            }
            Target::Refused(status) => op.status = status,
        }
        self.write_guest(idx, uop, op.as_bytes())?;
        Ok(0)
    }

    /// Grows the domain's table to `nr_frames` and writes their MFNs to `frame_list`.
    /// Failures are reported in `status`; the hypercall itself fails only when the
    /// argument cannot be read, `frame_list` is not a guest range, or the status cannot
    /// be written back (Xen's rules).
    fn gnttab_setup_table(&mut self, idx: usize, uop: u64) -> HcResult {
        let op: GnttabSetupTable = self.read_guest(idx, uop)?;
        if !guest_range_ok(op.frame_list, u64::from(op.nr_frames) * 8) {
            return Err(Errno::EFAULT);
        }
        let status = match self.grant_target(idx, op.dom) {
            Target::Refused(status) => status,
            Target::Slot(t) => self.setup_table_of(idx, t, op.nr_frames, op.frame_list),
        };
        const STATUS_OFF: u64 = offset_of!(GnttabSetupTable, status) as u64;
        self.write_guest(idx, uop + STATUS_OFF, &status.to_le_bytes())?;
        Ok(0)
    }

    fn setup_table_of(&mut self, idx: usize, t: usize, nr_frames: u32, frame_list: u64) -> i16 {
        if nr_frames > self.domains[t].grant.limits.max_grant_frames {
            return GNTST_GENERAL_ERROR;
        }
        if self.grow_table(t, nr_frames as usize).is_err() {
            return GNTST_GENERAL_ERROR;
        }
        self.write_frame_list(idx, frame_list, t, false, nr_frames as usize)
    }

    /// Writes the first `n` grant frames (status frames if `status`) of slot `t` to the
    /// guest array at `list`: `GNTST_bad_virt_addr` if a slot cannot be written (the
    /// others still are, as Xen). Read one at a time: no copy of the list is allocated.
    fn write_frame_list(&mut self, idx: usize, list: u64, t: usize, status: bool, n: usize) -> i16 {
        let mut result = GNTST_OKAY;
        for i in 0..n {
            crate::work::step(1);
            let g = &self.domains[t].grant;
            let Some(&mfn) = (if status { &g.status } else { &g.frames }).get(i) else {
                return GNTST_GENERAL_ERROR;
            };
            // The caller checked that the whole list is a guest range.
            let slot = list.wrapping_add(i as u64 * 8);
            if self.write_guest(idx, slot, &mfn.0.to_le_bytes()).is_err() {
                result = GNTST_BAD_VIRT_ADDR;
            }
        }
        result
    }

    /// `GNTTABOP_get_status_frames`: the MFNs of the first `nr_frames` status frames.
    fn gnttab_get_status_frames(&mut self, idx: usize, uop: u64) -> HcResult {
        let op: GnttabGetStatusFrames = self.read_guest(idx, uop)?;
        if !guest_range_ok(op.frame_list, u64::from(op.nr_frames) * 8) {
            return Err(Errno::EFAULT);
        }
        let status = match self.grant_target(idx, op.dom) {
            Target::Refused(status) => status,
            Target::Slot(t) => {
                if op.nr_frames as usize > self.domains[t].grant.status.len() {
                    GNTST_GENERAL_ERROR
                } else {
                    self.write_frame_list(idx, op.frame_list, t, true, op.nr_frames as usize)
                }
            }
        };
        const STATUS_OFF: u64 = offset_of!(GnttabGetStatusFrames, status) as u64;
        self.write_guest(idx, uop + STATUS_OFF, &status.to_le_bytes())?;
        Ok(0)
    }

    /// Grows domain `t`'s table to at least `nr_frames` grant frames (and, in v2, the
    /// status frames they need). On failure nothing new stays allocated.
    pub(crate) fn grow_table(&mut self, t: usize, nr_frames: usize) -> Result<(), ()> {
        let dom = self.domains[t].id;
        let have = self.domains[t].grant.frames.len();
        let want_status = if self.domains[t].grant.version == 2 {
            GrantTable::status_frames_for(nr_frames.max(have))
        } else {
            0
        };
        let have_status = self.domains[t].grant.status.len();
        let new_frames = nr_frames.saturating_sub(have);
        let new_status = want_status.saturating_sub(have_status);
        let g = &mut self.domains[t].grant;
        if g.frames.try_reserve(new_frames).is_err() || g.status.try_reserve(new_status).is_err() {
            return Err(());
        }
        let mut got: Vec<Mfn> = Vec::new();
        if got.try_reserve(new_frames + new_status).is_err() {
            return Err(());
        }
        for _ in 0..new_frames + new_status {
            match self.alloc_zeroed(dom) {
                Some(mfn) => got.push(mfn),
                None => {
                    for mfn in got {
                        self.frames.put_writable(mfn);
                        self.frames.free(mfn);
                    }
                    return Err(());
                }
            }
        }
        let first_frame = have == 0 && new_frames > 0;
        let (frames, status) = got.split_at(new_frames);
        let g = &mut self.domains[t].grant;
        g.frames.extend_from_slice(frames);
        g.status.extend_from_slice(status);
        if first_frame {
            self.seed_reserved(t);
        }
        Ok(())
    }

    /// A zeroed table frame owned by `dom`, holding a writable type reference for the
    /// hypervisor (it writes status bits there: the guest must never make it a page
    /// table).
    pub(crate) fn alloc_zeroed(&mut self, dom: DomId) -> Option<Mfn> {
        let mfn = self.frames.alloc(dom)?;
        if self.mem.fill(mfn.maddr(), 0, PAGE_SIZE).is_err() || !self.frames.hold_writable(mfn) {
            self.frames.free(mfn);
            return None;
        }
        Some(mfn)
    }

    /// Writes the entries the toolstack seeds in a new table: console and xenstore rings
    /// granted to dom0, their backend domain.
    fn seed_reserved(&mut self, t: usize) {
        let d = &self.domains[t];
        let seeds = [
            (GNTTAB_RESERVED_CONSOLE, d.console_ring),
            (GNTTAB_RESERVED_XENSTORE, d.store_ring),
        ];
        for (gref, ring) in seeds {
            let Some((ring_mfn, _)) = ring else { continue };
            let g = &self.domains[t].grant;
            let Some(at) = g.entry_maddr(gref) else {
                continue;
            };
            // The frame was just zeroed, so it is in RAM.
            if g.version == 1 {
                let Ok(frame) = u32::try_from(ring_mfn.0) else {
                    continue;
                };
                let entry = GrantEntryV1 {
                    flags: GTF_PERMIT_ACCESS,
                    domid: DomId(0),
                    frame,
                };
                let _ = self.mem.write(at, entry.as_bytes());
            } else {
                let entry = xen_pv_abi::grant_table::GrantEntryV2::full_page(
                    GTF_PERMIT_ACCESS,
                    DomId(0),
                    ring_mfn.0,
                );
                let _ = self.mem.write(at, entry.as_bytes());
            }
        }
    }

    /// `GNTTABOP_set_version`: Xen 4.17's `gnttab_set_version`. Switching is refused
    /// with `-EBUSY` while an entry beyond the reserved ones is pinned or (v2 to v1) a
    /// status frame is still mapped, and with `-ERANGE` when a reserved v2 entry cannot
    /// be written as v1. The reserved entries (0..8) are carried over, the rest of the
    /// table is cleared. The version in force is written back whatever the answer.
    fn gnttab_set_version(&mut self, idx: usize, uop: u64) -> HcResult {
        let mut op: GnttabSetVersion = self.read_guest(idx, uop)?;
        let ret = match op.version {
            1 | 2 if op.version == self.domains[idx].grant.version => Ok(0),
            1 | 2 => self.switch_version(idx, op.version),
            _ => Err(Errno::EINVAL),
        };
        op.version = self.domains[idx].grant.version;
        self.write_guest(idx, uop, op.as_bytes())?;
        ret
    }

    fn switch_version(&mut self, idx: usize, to: u32) -> HcResult {
        let g = &self.domains[idx].grant;
        if g.active
            .iter()
            .any(|a| a.gref >= GNTTAB_NR_RESERVED_ENTRIES)
        {
            return Err(Errno::EBUSY);
        }
        let nr_frames = g.frames.len();
        let reserved = GNTTAB_NR_RESERVED_ENTRIES.min(g.nr_entries());
        // The reserved entries as v1 entries (flags with the status bits folded in).
        let mut keep = [GrantEntryV1::default(); GNTTAB_NR_RESERVED_ENTRIES as usize];
        if g.version == 1 {
            for (i, e) in keep.iter_mut().enumerate().take(reserved as usize) {
                *e = self.read_v1(idx, i as u32);
            }
            // v1 to v2: the status frames come first.
            if self.populate_status(idx, nr_frames).is_err() {
                return Err(Errno::ENOMEM);
            }
        } else {
            for (i, e) in keep.iter_mut().enumerate().take(reserved as usize) {
                let v2 = self.read_v2(idx, i as u32);
                match v2.flags & GTF_TYPE_MASK {
                    GTF_PERMIT_ACCESS if v2.word2 >> 32 == 0 => {
                        let st = self.read_status(idx, i as u32);
                        *e = GrantEntryV1 {
                            flags: v2.flags | st,
                            domid: v2.domid,
                            frame: v2.word2 as u32,
                        };
                    }
                    GTF_PERMIT_ACCESS | GTF_TRANSITIVE => return Err(Errno::ERANGE),
                    // Invalid and transfer entries are dropped (Xen logs "bad flags").
                    _ => {}
                }
            }
            self.unpopulate_status(idx)?;
        }
        for mfn in &self.domains[idx].grant.frames {
            // Grant frames are RAM the hypervisor allocated.
            let _ = self.mem.fill(mfn.maddr(), 0, PAGE_SIZE);
        }
        self.domains[idx].grant.version = to;
        for (i, e) in keep.iter().enumerate().take(reserved as usize) {
            self.write_reserved(idx, i as u32, e);
        }
        Ok(0)
    }

    fn read_v1(&self, t: usize, gref: u32) -> GrantEntryV1 {
        let mut e = GrantEntryV1::default();
        if let Some(at) = self.domains[t].grant.entry_maddr(gref) {
            let _ = self.mem.read(at, zerocopy::IntoBytes::as_mut_bytes(&mut e));
        }
        e
    }

    pub(crate) fn read_v2(&self, t: usize, gref: u32) -> xen_pv_abi::grant_table::GrantEntryV2 {
        let mut e = xen_pv_abi::grant_table::GrantEntryV2::default();
        if let Some(at) = self.domains[t].grant.entry_maddr(gref) {
            let _ = self.mem.read(at, zerocopy::IntoBytes::as_mut_bytes(&mut e));
        }
        e
    }

    /// The status word of entry `gref` of domain `t` (v2).
    fn read_status(&self, t: usize, gref: u32) -> u16 {
        let mut b = [0u8; 2];
        if let Some(at) = self.domains[t].grant.status_maddr(gref) {
            let _ = self.mem.read(at, &mut b);
        }
        u16::from_le_bytes(b)
    }

    fn write_reserved(&mut self, t: usize, gref: u32, e: &GrantEntryV1) {
        let g = &self.domains[t].grant;
        let Some(at) = g.entry_maddr(gref) else {
            return;
        };
        if g.version == 1 {
            let _ = self.mem.write(at, e.as_bytes());
        } else {
            let bits = GTF_READING | GTF_WRITING;
            let v2 = xen_pv_abi::grant_table::GrantEntryV2::full_page(
                e.flags & !bits,
                e.domid,
                u64::from(e.frame),
            );
            let _ = self.mem.write(at, v2.as_bytes());
            if let Some(st) = g.status_maddr(gref) {
                let _ = self.mem.write(st, &(e.flags & bits).to_le_bytes());
            }
        }
    }

    /// Allocates the status frames `nr_frames` grant frames need (v1 to v2).
    fn populate_status(&mut self, t: usize, nr_frames: usize) -> Result<(), ()> {
        let dom = self.domains[t].id;
        let want = GrantTable::status_frames_for(nr_frames);
        if self.domains[t].grant.status.try_reserve(want).is_err() {
            return Err(());
        }
        while self.domains[t].grant.status.len() < want {
            let Some(mfn) = self.alloc_zeroed(dom) else {
                for mfn in core::mem::take(&mut self.domains[t].grant.status) {
                    self.frames.put_writable(mfn);
                    self.frames.free(mfn);
                }
                return Err(());
            };
            self.domains[t].grant.status.push(mfn);
        }
        Ok(())
    }

    /// Frees the status frames (v2 to v1): `-EBUSY`, nothing freed, while the domain
    /// still maps one (Xen: a reference beyond the allocation one).
    fn unpopulate_status(&mut self, t: usize) -> HcResult {
        // Beyond the hypervisor's own writable reference, nothing may hold one.
        let busy = self.domains[t].grant.status.iter().any(|&mfn| {
            self.frames.ref_count(mfn).unwrap_or(0) > 1
                || self.frames.type_state(mfn).is_some_and(|st| st.count > 1)
        });
        if busy {
            return Err(Errno::EBUSY);
        }
        for mfn in core::mem::take(&mut self.domains[t].grant.status) {
            self.frames.put_writable(mfn);
            self.frames.free(mfn);
        }
        Ok(0)
    }

    /// The domain a grant op's `dom` names (Xen's `rcu_lock_domain_by_any_id` and
    /// `XSM_TARGET`): the caller itself, or any running domain for the control domain;
    /// otherwise `GNTST_bad_domain` (unknown) or `GNTST_permission_denied`.
    pub(crate) fn grant_target(&self, idx: usize, dom: DomId) -> Target {
        let me = &self.domains[idx];
        if dom == DomId::SELF || dom == me.id {
            return Target::Slot(idx);
        }
        match self
            .domains
            .iter()
            .position(|d| d.id == dom && d.is_runnable())
        {
            None => Target::Refused(GNTST_BAD_DOMAIN),
            Some(t) if me.dom0 => Target::Slot(t),
            Some(_) => Target::Refused(GNTST_PERMISSION_DENIED),
        }
    }

    /// Writes an element's results (a status, a handle) back: what
    /// [`Self::write_guest`] does, with the one-page translation inlined for the hot
    /// map, unmap and copy loops (same checks, same `EFAULT`s).
    #[inline(always)]
    pub(crate) fn write_elem(&self, idx: usize, va: u64, data: &[u8]) -> Result<(), Errno> {
        if crate::mmu::guest::in_one_page(va, data.len()) {
            let space = self.current_space(idx);
            let maddr = crate::mmu::guest::translate(&self.mem, &self.frames, space, va, true)?;
            return self.mem.write(maddr, data).map_err(|_| Errno::EFAULT);
        }
        self.write_guest(idx, va, data)
    }

    /// The slot of running domain `dom` (by id: `DOMID_SELF` is not one).
    pub(crate) fn grant_domain(&self, dom: DomId) -> Option<usize> {
        self.domains
            .iter()
            .position(|d| d.id == dom && d.is_runnable())
    }
}
