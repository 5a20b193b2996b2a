//! `GNTTABOP_map_grant_ref` and `GNTTABOP_unmap_grant_ref` for a PV `GNTMAP_host_map`,
//! with Xen 4.17's checks and per-element `GNTST_*` statuses.
//!
//! A map checks the granting domain's v1 entry as `GNTTABOP_copy` does (permit_access to
//! the mapper, not `GTF_readonly` for a writable map), sets `GTF_reading` (and
//! `GTF_writing`) in it, takes a general reference on the granted frame (a writable type
//! reference too for a writable map, so a page table or descriptor page is refused) and
//! writes a PTE with Xen's grant marker ([`Pte::GNTTAB`]) into the existing L1 entry of
//! `host_addr` in the mapper's current page tables. The mapping is recorded in the
//! mapper's maptrack ([`GrantMap`]); its index is the handle. The status bits of an
//! entry stay set while any maptrack entry of the mapper holds them (the mapper is the
//! only domain an entry names, so its maptrack holds every pin of the entry). As Xen's
//! 8-bit pin counters, an entry takes no further mapping once 128 of one kind exist.
//!
//! `mmu_update` and `update_va_mapping` refuse to change a PTE holding a grant mapping,
//! and a guest entry may never carry the grant marker; only the unmap (by handle and
//! `host_addr`) removes it. An L1 devalidated while it holds one leaves its references
//! to the maptrack entry; such a mapping is released when the mapper ends (Xen crashes
//! the domain there instead).
//!
//! Not implemented: `GNTMAP_contains_pte` and a `GNTMAP_device_map` without
//! `GNTMAP_host_map` (both `GNTST_general_error`), the guest-available PTE bits of the
//! flags (ignored). An entry's cache attributes (`GTF_PWT`, `GTF_PCD`, `GTF_PAT`) are
//! ignored: Xen 4.17 applies them to MMIO only, and maps RAM with the default ones.

use super::copy::ENTRIES_PER_FRAME;
use crate::domain::runtime::Domain;
use crate::hv::Hypervisor;
use crate::hypercall::handle::{GuestArray, Outcome, Untyped};
use crate::mmu::pagetable::{ADDR_MASK, PtCtx, Pte};
use crate::platform::{MachineMemory, Platform};
use alloc::vec::Vec;
use core::mem::offset_of;
use xen_pv_abi::grant_table::{
    GNTMAP_CONTAINS_PTE, GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_BAD_DEV_ADDR,
    GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_BAD_PAGE, GNTST_GENERAL_ERROR,
    GNTST_NO_DEVICE_SPACE, GNTST_OKAY, GTF_READING, GTF_WRITING, GnttabMapGrantRef,
    GnttabUnmapGrantRef,
};
use xen_pv_abi::layout::{in_hypervisor_range, is_canonical};
use xen_pv_abi::{DomId, Errno, Mfn};
use zerocopy::IntoBytes;

/// Most grant mappings a domain may hold at once (its maptrack size).
pub const MAX_MAPTRACK: usize = 256;

/// Elements of a map or unmap batch done per entry into the hypervisor.
pub const MAP_BATCH: u64 = 64;

/// One grant mapping in the mapper's maptrack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantMap {
    /// The granting domain.
    pub granter: DomId,
    /// The grant reference in its table.
    pub gref: u32,
    /// The mapped frame.
    pub mfn: Mfn,
    /// Mapped read-only (a general reference only) or writable (a writable type
    /// reference too).
    pub readonly: bool,
    /// `GNTMAP_device_map` was asked too (the bus address was reported).
    pub device: bool,
}

/// The status bits the mappings in `maps` hold on entry `gref` of `granter`.
pub(super) fn held_bits(maps: &[Option<GrantMap>], granter: DomId, gref: u32) -> u16 {
    let mut bits = 0;
    for m in maps.iter().flatten() {
        if m.granter == granter && m.gref == gref {
            bits |= GTF_READING | if m.readonly { 0 } else { GTF_WRITING };
        }
    }
    bits
}

/// Whether one of Xen's 8-bit pin counters of entry `gref` of `granter` (host and
/// device mappings, read-only and writable, counted separately) has reached 128 in
/// `maps`: Xen then refuses any further map of the entry ("risk of counter overflow").
fn pin_counter_full(maps: &[Option<GrantMap>], granter: DomId, gref: u32) -> bool {
    let mut counts = [0u32; 4];
    for m in maps.iter().flatten() {
        if m.granter == granter && m.gref == gref {
            let kind = usize::from(!m.readonly);
            counts[kind] += 1;
            if m.device {
                counts[2 + kind] += 1;
            }
        }
    }
    counts.iter().any(|&c| c >= 128)
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `GNTTABOP_map_grant_ref` / `GNTTABOP_unmap_grant_ref` on `count` elements: each
    /// status (and a map's handle and bus address) written back; `-EFAULT` when an
    /// element cannot be read or written. After [`MAP_BATCH`] elements it continues.
    pub(crate) fn gnttab_map_batch(
        &mut self,
        idx: usize,
        cmd: u32,
        uop: GuestArray<Untyped>,
        map: bool,
    ) -> Outcome {
        let count = uop.len();
        if count > i32::MAX as u64 {
            return Outcome::Return(Err(Errno::EINVAL));
        }
        let size = if map {
            size_of::<GnttabMapGrantRef>()
        } else {
            size_of::<GnttabUnmapGrantRef>()
        } as u64;
        let Some(end) = count
            .checked_mul(size)
            .and_then(|n| uop.addr().checked_add(n))
        else {
            return Outcome::Return(Err(Errno::EFAULT));
        };
        let mut at = uop.addr();
        let mut flush = false;
        let mut ret = Ok(0);
        for i in 0..count {
            if i == MAP_BATCH {
                self.gnttab_flush(flush);
                return Outcome::Continue {
                    args: [u64::from(cmd), at, count - i, 0, 0],
                    then: None,
                };
            }
            let r = if map {
                self.map_elem(idx, at, &mut flush)
            } else {
                self.unmap_elem(idx, at, &mut flush)
            };
            if let Err(e) = r {
                ret = Err(e);
                break;
            }
            at += size;
            debug_assert!(at <= end);
        }
        self.gnttab_flush(flush);
        Outcome::Return(ret)
    }

    fn gnttab_flush(&mut self, invlpg_done: bool) {
        if self.frames.take_hw_flush() || invlpg_done {
            self.platform.flush_tlb();
        }
    }

    fn map_elem(&mut self, idx: usize, at: u64, flush: &mut bool) -> Result<(), Errno> {
        let mut op: GnttabMapGrantRef = self.read_guest(idx, at)?;
        match self.map_one(idx, &op) {
            Ok((handle, bus)) => {
                *flush = true;
                op.status = GNTST_OKAY;
                op.handle = handle;
                op.dev_bus_addr = bus;
            }
            Err(s) => op.status = s,
        }
        // Xen writes back status, handle and bus address; the input is unchanged.
        let from = offset_of!(GnttabMapGrantRef, status);
        self.write_guest(idx, at + from as u64, &op.as_bytes()[from..])
    }

    fn unmap_elem(&mut self, idx: usize, at: u64, flush: &mut bool) -> Result<(), Errno> {
        let op: GnttabUnmapGrantRef = self.read_guest(idx, at)?;
        let status = match self.unmap_one(idx, &op) {
            Ok(()) => {
                *flush = true;
                GNTST_OKAY
            }
            Err(s) => s,
        };
        const STATUS_OFF: u64 = offset_of!(GnttabUnmapGrantRef, status) as u64;
        self.write_guest(idx, at + STATUS_OFF, &status.to_le_bytes())
    }

    /// One map: the handle and bus address, or the `GNTST_*` status.
    fn map_one(&mut self, idx: usize, op: &GnttabMapGrantRef) -> Result<(u32, u64), i16> {
        if op.flags & (GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP) == 0 {
            return Err(GNTST_BAD_GNTREF);
        }
        if op.flags & GNTMAP_HOST_MAP == 0 || op.flags & GNTMAP_CONTAINS_PTE != 0 {
            return Err(GNTST_GENERAL_ERROR);
        }
        let readonly = op.flags & GNTMAP_READONLY != 0;
        // Xen looks the domain up by id: DOMID_SELF is not one.
        let granter_idx = self
            .domains
            .iter()
            .position(|d| d.id == op.dom && d.is_runnable())
            .ok_or(GNTST_BAD_DOMAIN)?;
        let granter = op.dom;
        let me = self.domains[idx].id;
        let handle = self.free_handle(idx)?;
        let r = op.r#ref;
        let table = *self.domains[granter_idx]
            .grant
            .frames()
            .get((r / ENTRIES_PER_FRAME) as usize)
            .ok_or(GNTST_BAD_GNTREF)?;
        if pin_counter_full(&self.domains[idx].grant.maps, granter, r) {
            return Err(GNTST_GENERAL_ERROR);
        }
        let entry = table.maddr() + u64::from(r % ENTRIES_PER_FRAME) * 8;
        let set = GTF_READING | if readonly { 0 } else { GTF_WRITING };
        let held = held_bits(&self.domains[idx].grant.maps, granter, r);
        self.copy_pin_entry(entry, me, !readonly, set)?;
        // Undoes the pin on failure from here on.
        let unpin = |hv: &Self| {
            let _ = hv.mem.fetch_and_u8(entry, !((set & !held) as u8));
        };
        let mut word = [0u8; 8];
        if self.mem.read(entry, &mut word).is_err() {
            unpin(self);
            return Err(GNTST_GENERAL_ERROR);
        }
        let mfn = Mfn(u64::from(u32::from_le_bytes([
            word[4], word[5], word[6], word[7],
        ])));
        // As Xen: a frame that is not the granter's fails its page lookup first
        // (get_paged_frame: GNTST_bad_page).
        if self.frames.owner(mfn) != Some(granter) {
            unpin(self);
            return Err(GNTST_BAD_PAGE);
        }
        // The frame must be writable-typable for a writable map ("could not pin"). An
        // entry's cache attributes only apply to MMIO in Xen; RAM is mapped with the
        // default ones whatever the entry asks.
        let got = if readonly {
            self.frames.get_ref(mfn)
        } else {
            self.frames.hold_writable(mfn)
        };
        if !got {
            unpin(self);
            return Err(GNTST_GENERAL_ERROR);
        }
        let pte = (mfn.maddr() & ADDR_MASK)
            | (Pte::PRESENT | Pte::USER | Pte::ACCESSED | Pte::DIRTY | Pte::NX | Pte::GNTTAB)
                .bits()
            | if readonly { 0 } else { Pte::RW.bits() };
        if let Err(()) = self.install_grant_pte(idx, op.host_addr, pte) {
            self.drop_map_refs(mfn, readonly);
            unpin(self);
            return Err(GNTST_GENERAL_ERROR);
        }
        let device = op.flags & GNTMAP_DEVICE_MAP != 0;
        self.domains[idx].grant.maps[handle as usize] = Some(GrantMap {
            granter,
            gref: r,
            mfn,
            readonly,
            device,
        });
        // Without an IOMMU the bus address is the machine address (Xen).
        let bus = if device { mfn.maddr() } else { 0 };
        Ok((handle, bus))
    }

    /// A free maptrack slot of the domain (the table grows, fallibly, up to
    /// [`MAX_MAPTRACK`]).
    fn free_handle(&mut self, idx: usize) -> Result<u32, i16> {
        let maps = &mut self.domains[idx].grant.maps;
        if let Some(i) = maps.iter().position(Option::is_none) {
            return Ok(i as u32);
        }
        if maps.len() >= MAX_MAPTRACK || maps.try_reserve(1).is_err() {
            return Err(GNTST_NO_DEVICE_SPACE);
        }
        maps.push(None);
        Ok((maps.len() - 1) as u32)
    }

    /// The machine address of the L1 entry of `va` in the running vCPU's page tables.
    fn grant_pte_maddr(&mut self, idx: usize, va: u64) -> Result<u64, ()> {
        if !is_canonical(va) || in_hypervisor_range(va) {
            return Err(());
        }
        let root = Mfn::containing(self.cur(idx).cr3);
        let dom = self.domains[idx].id;
        let pt = PtCtx::new(&self.mem, &mut self.frames, dom, &self.hypervisor_l4_slots);
        pt.l1_entry_maddr(root, va).map_err(drop)
    }

    fn install_grant_pte(&mut self, idx: usize, va: u64, pte: u64) -> Result<(), ()> {
        let ptr = self.grant_pte_maddr(idx, va)?;
        let dom = self.domains[idx].id;
        let mut pt = PtCtx::new(&self.mem, &mut self.frames, dom, &self.hypervisor_l4_slots);
        pt.install_grant(ptr, pte).map_err(drop)?;
        self.platform.invlpg(va);
        Ok(())
    }

    fn drop_map_refs(&mut self, mfn: Mfn, readonly: bool) {
        if readonly {
            self.frames.put_ref(mfn);
        } else {
            self.frames.put_writable(mfn);
        }
    }

    /// One unmap: `Ok` or the `GNTST_*` status.
    fn unmap_one(&mut self, idx: usize, op: &GnttabUnmapGrantRef) -> Result<(), i16> {
        let map = self.domains[idx]
            .grant
            .maps
            .get(op.handle as usize)
            .copied()
            .flatten()
            .ok_or(GNTST_BAD_HANDLE)?;
        if op.dev_bus_addr != 0 && map.device && op.dev_bus_addr != map.mfn.maddr() {
            return Err(GNTST_BAD_DEV_ADDR);
        }
        // The PTE at host_addr must be this mapping (Xen: the L1 entry's frame and grant
        // marker); nothing changes otherwise.
        let ptr = self
            .grant_pte_maddr(idx, op.host_addr)
            .map_err(|()| GNTST_GENERAL_ERROR)?;
        let dom = self.domains[idx].id;
        let mut pt = PtCtx::new(&self.mem, &mut self.frames, dom, &self.hypervisor_l4_slots);
        pt.remove_grant(ptr, map.mfn)
            .map_err(|_| GNTST_GENERAL_ERROR)?;
        self.platform.invlpg(op.host_addr);
        self.release_map(idx, op.handle as usize);
        Ok(())
    }

    /// Forgets maptrack entry `handle` of domain `idx` (its PTE already gone or dead):
    /// drops its frame references, clears the entry's status bits no other mapping
    /// holds, and frees the frame if its owner ended and nothing else maps it.
    fn release_map(&mut self, idx: usize, handle: usize) {
        let Some(map) = self.domains[idx]
            .grant
            .maps
            .get_mut(handle)
            .and_then(Option::take)
        else {
            return;
        };
        self.drop_map_refs(map.mfn, map.readonly);
        let granter = self
            .domains
            .iter()
            .position(|d| d.id == map.granter && d.is_runnable());
        match granter {
            Some(g) => {
                let held = held_bits(&self.domains[idx].grant.maps, map.granter, map.gref);
                let set = GTF_READING | if map.readonly { 0 } else { GTF_WRITING };
                if let Some(&table) = self.domains[g]
                    .grant
                    .frames()
                    .get((map.gref / ENTRIES_PER_FRAME) as usize)
                {
                    let entry = table.maddr() + u64::from(map.gref % ENTRIES_PER_FRAME) * 8;
                    let _ = self.mem.fetch_and_u8(entry, !((set & !held) as u8));
                }
            }
            None => {
                // The granter ended while mapped: its frame was kept for this mapping.
                if self.frames.owner(map.mfn) == Some(map.granter)
                    && !self.frame_grant_mapped(map.mfn)
                {
                    self.frames.free(map.mfn);
                }
            }
        }
    }

    /// Whether any domain's maptrack maps `mfn`.
    fn frame_grant_mapped(&self, mfn: Mfn) -> bool {
        self.domains
            .iter()
            .any(|d| d.grant.maps.iter().flatten().any(|m| m.mfn == mfn))
    }

    /// Releases every grant mapping of domain `idx`, which is ending (its page tables
    /// are never used again, so the PTEs are left as they are).
    pub(crate) fn release_grant_maps(&mut self, idx: usize) {
        for h in 0..self.domains[idx].grant.maps.len() {
            self.release_map(idx, h);
        }
        self.domains[idx].grant.maps = Vec::new();
    }

    /// Whether another domain maps anything of `dom` through a grant.
    pub(crate) fn has_grant_mappers(&self, dom: DomId) -> bool {
        self.domains
            .iter()
            .filter(|d| d.id != dom)
            .any(|d| d.grant.maps.iter().flatten().any(|m| m.granter == dom))
    }
}

/// Whether a frame of `dom` is mapped by another domain through a grant (kept allocated
/// when `dom` ends).
pub fn grant_mapped_by_others(domains: &[Domain], dom: DomId, mfn: Mfn) -> bool {
    domains.iter().filter(|d| d.id != dom).any(|d| {
        d.grant
            .maps
            .iter()
            .flatten()
            .any(|m| m.granter == dom && m.mfn == mfn)
    })
}
