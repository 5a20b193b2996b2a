//! `grant_table_op` (20): what a PV guest needs to own a grant table
//! (`GNTTABOP_set_version`, `GNTTABOP_get_version`, `GNTTABOP_setup_table`,
//! `GNTTABOP_query_size`), `GNTTABOP_copy` ([`copy`]) and the PV host mappings of
//! `GNTTABOP_map_grant_ref` / `GNTTABOP_unmap_grant_ref` ([`map`]). Transfer comes later.
//!
//! The grant frames are allocated on demand, owned by the domain (so its page tables may
//! map them writable, as Xen lets a PV guest map its shared grant frames) but outside its
//! p2m, and freed with the rest of the domain's frames when it ends.
//!
//! Only version 1 exists here. `set_version(2)` answers `-ENOSYS`, which is what Xen
//! answers when its `gnttab=max-ver:1` option is in force ("behave as before set_version
//! was introduced"); a guest reads it as "v2 not available" and stays on v1. Any other
//! version is `-EINVAL`, as in Xen.

use crate::hv::Hypervisor;
use crate::hypercall::handle::{GuestArray, Outcome, Untyped};
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::grant_table::{
    GNTST_BAD_DOMAIN, GNTST_BAD_VIRT_ADDR, GNTST_GENERAL_ERROR, GNTST_OKAY,
    GNTST_PERMISSION_DENIED, GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE, GNTTABOP_COPY,
    GNTTABOP_GET_VERSION, GNTTABOP_MAP_GRANT_REF, GNTTABOP_QUERY_SIZE, GNTTABOP_SET_VERSION,
    GNTTABOP_SETUP_TABLE, GNTTABOP_UNMAP_GRANT_REF, GTF_PERMIT_ACCESS, GnttabGetVersion,
    GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GrantEntryV1,
};
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::{DomId, Errno, Mfn};
use zerocopy::IntoBytes;

use crate::hypercall::HcResult;
use core::mem::offset_of;

mod copy;
mod map;
pub use copy::COPY_BATCH;
pub use map::{GrantMap, MAP_BATCH, MAX_MAPTRACK, grant_mapped_by_others};

/// Most grant frames a domain may have (Xen's default `max_grant_frames` is 64; GRUB and
/// Mini-OS use one).
pub const MAX_GRANT_FRAMES: usize = 4;

/// The only grant-table version offered.
const GRANT_VERSION: u32 = 1;

/// A domain's grant table: its frames, in grant-frame order.
#[derive(Clone, Debug, Default)]
pub struct GrantTable {
    frames: heapless::Vec<Mfn, MAX_GRANT_FRAMES>,
    /// The domain's grant mappings of other domains' frames (its maptrack), indexed by
    /// handle; at most [`MAX_MAPTRACK`].
    maps: alloc::vec::Vec<Option<GrantMap>>,
}

impl GrantTable {
    /// An empty table (no frame allocated yet).
    pub const fn new() -> Self {
        GrantTable {
            frames: heapless::Vec::new(),
            maps: alloc::vec::Vec::new(),
        }
    }

    /// The grant frames allocated so far.
    pub fn frames(&self) -> &[Mfn] {
        &self.frames
    }

    /// The maptrack: the grant mappings the domain holds, by handle.
    pub fn maps(&self) -> &[Option<GrantMap>] {
        &self.maps
    }
}

/// Where the domain-id argument of a grant op points.
enum Target {
    Own,
    Other(i16),
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `grant_table_op(cmd, uop, count)` from the running domain.
    pub(crate) fn grant_table_op(
        &mut self,
        idx: usize,
        cmd: u32,
        uop: GuestArray<Untyped>,
    ) -> Outcome {
        match cmd {
            GNTTABOP_COPY => return self.gnttab_copy(idx, uop),
            GNTTABOP_MAP_GRANT_REF => return self.gnttab_map_batch(idx, cmd, uop, true),
            GNTTABOP_UNMAP_GRANT_REF => return self.gnttab_map_batch(idx, cmd, uop, false),
            _ => {}
        }
        self.grant_table_op_one(idx, cmd, uop).into()
    }

    fn grant_table_op_one(&mut self, idx: usize, cmd: u32, uop: GuestArray<Untyped>) -> HcResult {
        // Xen handles exactly one of these per call.
        if uop.len() != 1 {
            return match cmd {
                GNTTABOP_SET_VERSION | GNTTABOP_GET_VERSION | GNTTABOP_SETUP_TABLE
                | GNTTABOP_QUERY_SIZE => Err(Errno::EINVAL),
                _ => Err(Errno::ENOSYS),
            };
        }
        let uop = uop.addr();
        match cmd {
            GNTTABOP_SET_VERSION => self.gnttab_set_version(idx, uop),
            GNTTABOP_GET_VERSION => self.gnttab_get_version(idx, uop),
            GNTTABOP_SETUP_TABLE => self.gnttab_setup_table(idx, uop),
            GNTTABOP_QUERY_SIZE => self.gnttab_query_size(idx, uop),
            _ => Err(Errno::ENOSYS),
        }
    }

    fn gnttab_set_version(&mut self, idx: usize, uop: u64) -> HcResult {
        let mut op: GnttabSetVersion = self.read_guest(idx, uop)?;
        let ret = match op.version {
            GRANT_VERSION => Ok(0),
            2 => Err(Errno::ENOSYS),
            _ => Err(Errno::EINVAL),
        };
        // As Xen: the version in force is written back whatever the answer.
        op.version = GRANT_VERSION;
        self.write_guest(idx, uop, op.as_bytes())?;
        ret
    }

    fn gnttab_get_version(&mut self, idx: usize, uop: u64) -> HcResult {
        let mut op: GnttabGetVersion = self.read_guest(idx, uop)?;
        match self.grant_target(idx, op.dom) {
            Target::Own => {}
            // Xen: -ESRCH for an unknown domain, -EPERM for someone else's.
            Target::Other(GNTST_BAD_DOMAIN) => return Err(Errno::ESRCH),
            Target::Other(_) => return Err(Errno::EPERM),
        }
        op.version = GRANT_VERSION;
        self.write_guest(idx, uop, op.as_bytes())?;
        Ok(0)
    }

    fn gnttab_query_size(&mut self, idx: usize, uop: u64) -> HcResult {
        let mut op: GnttabQuerySize = self.read_guest(idx, uop)?;
        match self.grant_target(idx, op.dom) {
            Target::Own => {
                op.nr_frames = self.domains[idx].grant.frames.len() as u32;
                op.max_nr_frames = MAX_GRANT_FRAMES as u32;
                op.status = GNTST_OKAY;
            }
            Target::Other(status) => op.status = status,
        }
        self.write_guest(idx, uop, op.as_bytes())?;
        Ok(0)
    }

    /// Grows the domain's table to `nr_frames` and writes their MFNs to `frame_list`.
    /// Failures are reported in `status`; the hypercall itself fails only when the
    /// argument cannot be read or the status cannot be written back (Xen's rules).
    fn gnttab_setup_table(&mut self, idx: usize, uop: u64) -> HcResult {
        let op: GnttabSetupTable = self.read_guest(idx, uop)?;
        let status = match self.grant_target(idx, op.dom) {
            Target::Other(status) => status,
            Target::Own => self.setup_own_table(idx, op.nr_frames, op.frame_list),
        };
        const STATUS_OFF: u64 = offset_of!(GnttabSetupTable, status) as u64;
        self.write_guest(idx, uop + STATUS_OFF, &status.to_le_bytes())?;
        Ok(0)
    }

    fn setup_own_table(&mut self, idx: usize, nr_frames: u32, frame_list: u64) -> i16 {
        let wanted = nr_frames as usize;
        if wanted > MAX_GRANT_FRAMES {
            return GNTST_GENERAL_ERROR;
        }
        while self.domains[idx].grant.frames.len() < wanted {
            if self.add_grant_frame(idx).is_err() {
                return GNTST_GENERAL_ERROR;
            }
        }
        let mut status = GNTST_OKAY;
        for i in 0..wanted {
            let mfn = self.domains[idx].grant.frames[i].0;
            // `i < 4`, so neither the multiplication nor the addition can overflow a
            // canonical pointer into something valid; the copy checks the rest.
            let slot = frame_list.wrapping_add(i as u64 * 8);
            if self.write_guest(idx, slot, &mfn.to_le_bytes()).is_err() {
                status = GNTST_BAD_VIRT_ADDR;
            }
        }
        status
    }

    /// Allocates, zeroes and records one more grant frame. The first one gets the
    /// entries the toolstack seeds: console and xenstore rings granted to dom0, their
    /// backend domain (hv.rs `start_domain` allocates it when the domain starts).
    pub(crate) fn add_grant_frame(&mut self, idx: usize) -> Result<(), ()> {
        let dom = self.domains[idx].id;
        let mfn = self.frames.alloc(dom).ok_or(())?;
        // The hypervisor writes grant entries (seeds, GTF_reading/writing): the frame
        // keeps a writable type for the domain's life, so it never becomes a page table.
        if self.mem.fill(mfn.maddr(), 0, PAGE_SIZE).is_err() || !self.frames.hold_writable(mfn) {
            self.frames.free(mfn);
            return Err(());
        }
        let d = &mut self.domains[idx];
        if d.grant.frames.is_empty() {
            let seeds = [
                (GNTTAB_RESERVED_CONSOLE, d.console_ring),
                (GNTTAB_RESERVED_XENSTORE, d.store_ring),
            ];
            for (gref, ring) in seeds {
                let Some((ring_mfn, _)) = ring else { continue };
                let Ok(frame) = u32::try_from(ring_mfn.0) else {
                    continue;
                };
                let entry = GrantEntryV1 {
                    flags: GTF_PERMIT_ACCESS,
                    domid: DomId(0),
                    frame,
                };
                let at = mfn.maddr() + u64::from(gref) * 8;
                // The frame was just zeroed, so it is in RAM.
                let _ = self.mem.write(at, entry.as_bytes());
            }
        }
        // Cannot fail: the caller checked the length against MAX_GRANT_FRAMES.
        if d.grant.frames.push(mfn).is_err() {
            self.frames.free(mfn);
            return Err(());
        }
        Ok(())
    }

    /// Whether a grant op's `dom` names the caller; otherwise the `GNTST_*` Xen gives a
    /// domU asking about another domain.
    fn grant_target(&self, idx: usize, dom: DomId) -> Target {
        let own = self.domains[idx].id;
        if dom == DomId::SELF || dom == own {
            Target::Own
        } else if self.domains.iter().any(|d| d.id == dom && d.is_runnable()) {
            Target::Other(GNTST_PERMISSION_DENIED)
        } else {
            Target::Other(GNTST_BAD_DOMAIN)
        }
    }
}
