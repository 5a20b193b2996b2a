//! `GNTTABOP_map_grant_ref`, `GNTTABOP_unmap_grant_ref` and `GNTTABOP_unmap_and_replace`
//! for a PV domain, as Xen 4.17's `map_grant_ref` / `unmap_common` and
//! `create_grant_pv_mapping` / `replace_grant_pv_mapping`.
//!
//! A map pins the entry ([`super::entry`]; full-page `GTF_permit_access` entries only:
//! sub-page and transitive entries are copy-only, as Xen), then takes on the granted
//! frame a general reference per part (`GNTMAP_host_map`, `GNTMAP_device_map`) and, for
//! a writable part, a writable type reference (so a page table or descriptor page is
//! refused: "could not pin"). A host part writes a PTE with Xen's grant marker
//! ([`Pte::GNTTAB`]) into the L1 entry of `host_addr` in the mapper's current page
//! tables or, with `GNTMAP_contains_pte`, into the L1 entry whose machine address
//! `host_addr` is (8-byte aligned, in a validated L1 of the mapper). A device part only
//! reports the bus address (the machine address: no IOMMU). The mapping is recorded in
//! the mapper's maptrack ([`GrantMap`]; its index is the handle) and in the granter's
//! pins ([`super::Active`]).
//!
//! An unmap removes the host part if `host_addr` is not 0 (the PTE there must be this
//! grant mapping) and the device part if `dev_bus_addr` is not 0; the handle is freed
//! when neither is left. `unmap_and_replace` moves the PTE of `new_addr` (cleared there)
//! into the grant PTE's place, or clears it when `new_addr` is 0; it is refused for a
//! `GNTMAP_contains_pte` mapping with a `new_addr`, as Xen.
//!
//! `mmu_update` and `update_va_mapping` refuse to change a PTE holding a grant mapping,
//! and a guest entry may never carry the grant marker. An L1 devalidated while it holds
//! one leaves its references to the maptrack entry; such a mapping is released when the
//! mapper ends (Xen crashes the domain there instead).

use super::Active;
use crate::domain::runtime::Domain;
use crate::hv::Hypervisor;
use crate::hypercall::handle::{GuestArray, Outcome, Untyped};
use crate::mmu::pagetable::{ADDR_MASK, PtCtx, Pte, is_grant_entry};
use crate::platform::{MachineMemory, Platform};
use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::mem::offset_of;
use xen_pv_abi::grant_table::{
    GNTMAP_CONTAINS_PTE, GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_BAD_DEV_ADDR,
    GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_GENERAL_ERROR, GNTST_NO_SPACE,
    GNTST_OKAY, GNTTABOP_MAP_GRANT_REF, GNTTABOP_UNMAP_AND_REPLACE, GnttabMapGrantRef,
    GnttabUnmapAndReplace, GnttabUnmapGrantRef,
};
use xen_pv_abi::layout::{in_hypervisor_range, is_canonical};
use xen_pv_abi::{DomId, Errno, Mfn};
use zerocopy::IntoBytes;

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
    /// Mapped read-only (general references only) or writable (a writable type
    /// reference per part too).
    pub readonly: bool,
    /// The host part (`GNTMAP_host_map`) is still mapped.
    pub host: bool,
    /// The device part (`GNTMAP_device_map`) is still held.
    pub device: bool,
    /// The host part was made with `GNTMAP_contains_pte` (`host_addr` is a PTE address).
    pub contains_pte: bool,
}

impl GrantMap {
    /// Pins (host and device parts) the mapping holds.
    fn parts(&self) -> u32 {
        u32::from(self.host) + u32::from(self.device)
    }
}

/// What an unmap element asks for.
struct UnmapReq {
    host_addr: u64,
    dev_bus_addr: u64,
    handle: u32,
    /// `unmap_and_replace`'s `new_addr` (`None` for a plain unmap).
    new_addr: Option<u64>,
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `GNTTABOP_map_grant_ref`, `GNTTABOP_unmap_grant_ref` or
    /// `GNTTABOP_unmap_and_replace` on `count` elements: each status (and a map's handle
    /// and bus address) written back; `-EFAULT` when the array is not a guest range or
    /// an element cannot be read or written. After [`MAP_BATCH`] elements it continues.
    pub(crate) fn gnttab_map_batch(
        &mut self,
        idx: usize,
        cmd: u32,
        uop: GuestArray<Untyped>,
    ) -> Outcome {
        let count = uop.len();
        let size = match cmd {
            GNTTABOP_MAP_GRANT_REF => size_of::<GnttabMapGrantRef>(),
            GNTTABOP_UNMAP_AND_REPLACE => size_of::<GnttabUnmapAndReplace>(),
            _ => size_of::<GnttabUnmapGrantRef>(),
        } as u64;
        // Xen: `guest_handle_okay(uop, count)`.
        match count.checked_mul(size) {
            Some(n) if super::guest_range_ok(uop.addr(), n) => {}
            _ => return Outcome::Return(Err(Errno::EFAULT)),
        }
        let mut at = uop.addr();
        let mut flush = false;
        let mut ret = Ok(0);
        for i in 0..count {
            crate::work::step(1);
            if i == MAP_BATCH {
                self.gnttab_flush(flush);
                return Outcome::Continue {
                    args: [u64::from(cmd), at, count - i, 0, 0],
                    then: None,
                };
            }
            let r = match cmd {
                GNTTABOP_MAP_GRANT_REF => self.map_elem(idx, at, &mut flush),
                _ => self.unmap_elem(idx, at, cmd == GNTTABOP_UNMAP_AND_REPLACE, &mut flush),
            };
            if let Err(e) = r {
                ret = Err(e);
                break;
            }
            at += size;
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
        self.write_elem(idx, at + from as u64, &op.as_bytes()[from..])
    }

    fn unmap_elem(
        &mut self,
        idx: usize,
        at: u64,
        replace: bool,
        flush: &mut bool,
    ) -> Result<(), Errno> {
        let (req, status_off) = if replace {
            let op: GnttabUnmapAndReplace = self.read_guest(idx, at)?;
            let req = UnmapReq {
                host_addr: op.host_addr,
                dev_bus_addr: 0,
                handle: op.handle,
                new_addr: Some(op.new_addr),
            };
            (req, offset_of!(GnttabUnmapAndReplace, status))
        } else {
            let op: GnttabUnmapGrantRef = self.read_guest(idx, at)?;
            let req = UnmapReq {
                host_addr: op.host_addr,
                dev_bus_addr: op.dev_bus_addr,
                handle: op.handle,
                new_addr: None,
            };
            (req, offset_of!(GnttabUnmapGrantRef, status))
        };
        let status = match self.unmap_one(idx, &req) {
            Ok(()) => {
                *flush = true;
                GNTST_OKAY
            }
            Err(s) => s,
        };
        self.write_elem(idx, at + status_off as u64, &status.to_le_bytes())
    }

    /// One map: the handle and bus address, or the `GNTST_*` status.
    fn map_one(&mut self, idx: usize, op: &GnttabMapGrantRef) -> Result<(u32, u64), i16> {
        let host = op.flags & GNTMAP_HOST_MAP != 0;
        let device = op.flags & GNTMAP_DEVICE_MAP != 0;
        if !host && !device {
            return Err(GNTST_BAD_GNTREF);
        }
        let readonly = op.flags & GNTMAP_READONLY != 0;
        let contains_pte = op.flags & GNTMAP_CONTAINS_PTE != 0;
        // Xen looks the domain up by id: DOMID_SELF is not one.
        let g = self.grant_domain(op.dom).ok_or(GNTST_BAD_DOMAIN)?;
        let me = self.domains[idx].id;
        let handle = self.free_handle(idx)?;
        // Room for a new pin record, so nothing fails after the PTE is written.
        if self.domains[g].grant.active.try_reserve(1).is_err() {
            return Err(GNTST_NO_SPACE);
        }
        let pin = self.pin_entry(me, g, op.r#ref, !readonly, true, false)?;
        let mfn = pin.mfn;
        let parts = u32::from(host) + u32::from(device);
        // One general reference per part, a writable type reference too per writable
        // part (Xen: device part first, then host part).
        let mut taken = 0;
        while taken < parts {
            let ok = if readonly {
                self.frames.get_ref(mfn)
            } else {
                self.frames.hold_writable(mfn)
            };
            if !ok {
                break;
            }
            taken += 1;
        }
        let undo_refs = |hv: &mut Self, n: u32| {
            for _ in 0..n {
                hv.drop_map_refs(mfn, readonly);
            }
        };
        if taken < parts {
            undo_refs(self, taken);
            self.unpin(&pin);
            return Err(GNTST_GENERAL_ERROR);
        }
        if host {
            // Guest-available PTE bits come from the flags' top half (Xen's
            // `grant_to_pte_flags`); a 64-bit PV kernel runs in ring 3, so always user.
            let avail = (u64::from(op.flags >> 16) & 0x7) << 9;
            let pte = (mfn.maddr() & ADDR_MASK)
                | (Pte::PRESENT | Pte::USER | Pte::ACCESSED | Pte::DIRTY | Pte::NX | Pte::GNTTAB)
                    .bits()
                | avail
                | if readonly { 0 } else { Pte::RW.bits() };
            let r = if contains_pte {
                self.install_grant_at(idx, op.host_addr, pte)
            } else {
                self.install_grant_pte(idx, op.host_addr, pte)
            };
            if r.is_err() {
                undo_refs(self, taken);
                self.unpin(&pin);
                return Err(GNTST_GENERAL_ERROR);
            }
        }
        self.add_pin(g, op.r#ref, me, mfn, readonly, parts);
        // `handle` is the lowest free slot: it leaves the free set now.
        self.domains[idx].grant.free_handles.pop();
        self.domains[idx].grant.maps[handle as usize] = Some(GrantMap {
            granter: op.dom,
            gref: op.r#ref,
            mfn,
            readonly,
            host,
            device,
            contains_pte,
        });
        // Without an IOMMU the bus address is the machine address (Xen reports it for
        // every map).
        Ok((handle, mfn.maddr()))
    }

    /// Records `parts` pins of entry `gref` of slot `g` (room was reserved).
    fn add_pin(&mut self, g: usize, gref: u32, me: DomId, mfn: Mfn, readonly: bool, parts: u32) {
        let active = &mut self.domains[g].grant.active;
        let i = match active.binary_search_by_key(&gref, |a| a.gref) {
            Ok(i) => i,
            Err(i) => {
                let a = Active {
                    gref,
                    mapper: me,
                    mfn,
                    readers: 0,
                    writers: 0,
                };
                // At the end (the common case) without `insert`'s move of the tail.
                if i == active.len() {
                    active.push(a);
                } else {
                    active.insert(i, a);
                }
                i
            }
        };
        let a = &mut active[i];
        if readonly {
            a.readers += parts;
        } else {
            a.writers += parts;
        }
    }

    /// Drops `parts` pins of entry `gref` of running slot `g` and clears the status
    /// bits no pin holds any more.
    fn drop_pin(&mut self, g: usize, gref: u32, readonly: bool, parts: u32) {
        let table = &mut self.domains[g].grant;
        let Ok(i) = table.active.binary_search_by_key(&gref, |a| a.gref) else {
            return;
        };
        let a = &mut table.active[i];
        if readonly {
            a.readers = a.readers.saturating_sub(parts);
        } else {
            a.writers = a.writers.saturating_sub(parts);
        }
        let held = a.bits();
        if held == 0 {
            if i + 1 == table.active.len() {
                table.active.pop();
            } else {
                table.active.remove(i);
            }
        }
        let mut clear = 0;
        if held & xen_pv_abi::grant_table::GTF_READING == 0 {
            clear |= xen_pv_abi::grant_table::GTF_READING;
        }
        if !readonly && held & xen_pv_abi::grant_table::GTF_WRITING == 0 {
            clear |= xen_pv_abi::grant_table::GTF_WRITING;
        }
        if let (Some(at), true) = (table.status_maddr(gref), clear != 0) {
            let _ = self.mem.fetch_and_u8(at, !(clear as u8));
        }
    }

    /// The lowest free maptrack slot of the domain, left in the free set until the map
    /// succeeds (the table grows, fallibly, up to its maptrack limit; `GNTST_no_space`
    /// beyond).
    fn free_handle(&mut self, idx: usize) -> Result<u32, i16> {
        let max = self.domains[idx].grant.limits.max_maps();
        let g = &mut self.domains[idx].grant;
        if let Some(&Reverse(h)) = g.free_handles.peek() {
            return Ok(h);
        }
        // Room for every slot in the free set, so freeing one never allocates.
        let room = (g.maps.len() + 1).saturating_sub(g.free_handles.len());
        if g.maps.len() >= max
            || g.maps.try_reserve(1).is_err()
            || g.free_handles.try_reserve(room).is_err()
        {
            return Err(GNTST_NO_SPACE);
        }
        g.maps.push(None);
        let h = (g.maps.len() - 1) as u32;
        g.free_handles.push(Reverse(h));
        Ok(h)
    }

    /// Returns emptied slot `handle` to the free set (its capacity covers every slot).
    fn free_slot(&mut self, idx: usize, handle: u32) {
        self.domains[idx].grant.free_handles.push(Reverse(handle));
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
        self.install_grant_at(idx, ptr, pte)?;
        self.platform.invlpg(va);
        Ok(())
    }

    /// Writes grant PTE `pte` at machine address `ptr`, which must be 8-byte aligned in a
    /// validated L1 of the domain (Xen: "misaligned PTE address", an L1 it owns).
    fn install_grant_at(&mut self, idx: usize, ptr: u64, pte: u64) -> Result<(), ()> {
        if !ptr.is_multiple_of(8) {
            return Err(());
        }
        let dom = self.domains[idx].id;
        let mut pt = PtCtx::new(&self.mem, &mut self.frames, dom, &self.hypervisor_l4_slots);
        pt.install_grant(ptr, pte).map_err(drop)
    }

    fn drop_map_refs(&mut self, mfn: Mfn, readonly: bool) {
        if readonly {
            self.frames.put_ref(mfn);
        } else {
            self.frames.put_writable(mfn);
        }
    }

    /// One unmap: `Ok` or the `GNTST_*` status.
    fn unmap_one(&mut self, idx: usize, req: &UnmapReq) -> Result<(), i16> {
        let map = self.domains[idx]
            .grant
            .maps
            .get(req.handle as usize)
            .copied()
            .flatten()
            .ok_or(GNTST_BAD_HANDLE)?;
        if req.dev_bus_addr != 0 && map.device && req.dev_bus_addr != map.mfn.maddr() {
            return Err(GNTST_BAD_DEV_ADDR);
        }
        let mut host_done = false;
        if req.host_addr != 0 && map.host {
            self.remove_host_part(idx, &map, req)?;
            host_done = true;
        }
        let dev_done = req.dev_bus_addr != 0 && map.device;
        let slot = &mut self.domains[idx].grant.maps[req.handle as usize];
        if let Some(m) = slot.as_mut() {
            m.host &= !host_done;
            m.device &= !dev_done;
        }
        let left = slot.map_or(0, |m| m.parts());
        if left == 0 {
            *slot = None;
            self.free_slot(idx, req.handle);
        }
        let parts = u32::from(host_done) + u32::from(dev_done);
        for _ in 0..parts {
            self.drop_map_refs(map.mfn, map.readonly);
        }
        if let Some(g) = self.granter_slot(&map) {
            self.drop_pin(g, map.gref, map.readonly, parts);
        } else if left == 0 {
            self.free_orphan(map.mfn, map.granter);
        }
        Ok(())
    }

    /// Removes the grant PTE of a host part (`replace_grant_pv_mapping`): the entry at
    /// `host_addr` must map this frame with the grant marker and the mapping's
    /// writability; with a `new_addr`, the PTE there moves into its place.
    fn remove_host_part(&mut self, idx: usize, map: &GrantMap, req: &UnmapReq) -> Result<(), i16> {
        let new_addr = req.new_addr.unwrap_or(0);
        let ptr = if map.contains_pte {
            // Replace is not available in this addressing mode.
            if new_addr != 0 || !req.host_addr.is_multiple_of(8) {
                return Err(GNTST_GENERAL_ERROR);
            }
            req.host_addr
        } else {
            self.grant_pte_maddr(idx, req.host_addr)
                .map_err(|()| GNTST_GENERAL_ERROR)?
        };
        let dom = self.domains[idx].id;
        let table = Mfn::containing(ptr);
        if self.frames.table_level(table, dom) != Some(1) {
            return Err(GNTST_GENERAL_ERROR);
        }
        let old = self.mem.read_u64(ptr).map_err(|_| GNTST_GENERAL_ERROR)?;
        let rw = old & Pte::RW.bits() != 0;
        if !is_grant_entry(old) || Mfn::containing(old & ADDR_MASK) != map.mfn || rw == map.readonly
        {
            return Err(GNTST_GENERAL_ERROR);
        }
        let replacement = if new_addr != 0 {
            // Moving the grant PTE onto itself would leave it without its maptrack entry.
            if self.grant_pte_maddr(idx, new_addr) == Ok(ptr) {
                return Err(GNTST_GENERAL_ERROR);
            }
            self.steal_pte(idx, new_addr)?
        } else {
            0
        };
        if replacement == 0 {
            let mut pt = PtCtx::new(&self.mem, &mut self.frames, dom, &self.hypervisor_l4_slots);
            pt.remove_grant(ptr, map.mfn)
                .map_err(|_| GNTST_GENERAL_ERROR)?;
        } else {
            // The stolen entry keeps the references it held, now from this slot. Walks
            // remembered through the grant PTE end in its frame.
            self.frames.tlb.forget_frame(map.mfn);
            self.mem
                .write_u64(ptr, replacement)
                .map_err(|_| GNTST_GENERAL_ERROR)?;
            self.frames.need_hw_flush();
        }
        if !map.contains_pte {
            self.platform.invlpg(req.host_addr);
        }
        Ok(())
    }

    /// Clears the L1 entry of `va` and returns what it held (Xen's
    /// `steal_linear_address`): its references go with it to the caller's slot.
    fn steal_pte(&mut self, idx: usize, va: u64) -> Result<u64, i16> {
        let ptr = self
            .grant_pte_maddr(idx, va)
            .map_err(|()| GNTST_GENERAL_ERROR)?;
        let old = self.mem.read_u64(ptr).map_err(|_| GNTST_GENERAL_ERROR)?;
        // Walks remembered through the entry end in the frame it mapped.
        if old & Pte::PRESENT.bits() != 0 {
            self.frames
                .tlb
                .forget_frame(crate::mmu::pagetable::entry_mfn(old));
        }
        self.mem
            .write_u64(ptr, 0)
            .map_err(|_| GNTST_GENERAL_ERROR)?;
        self.platform.invlpg(va);
        self.frames.need_hw_flush();
        Ok(old)
    }

    /// The slot of a mapping's granter if it still runs.
    fn granter_slot(&self, map: &GrantMap) -> Option<usize> {
        self.grant_domain(map.granter)
    }

    /// Frees a frame whose owner ended while it was mapped, once nothing maps it.
    fn free_orphan(&mut self, mfn: Mfn, owner: DomId) {
        if self.frames.owner(mfn) == Some(owner) && !self.frame_grant_mapped(mfn) {
            self.frames.free(mfn);
        }
    }

    /// Whether any domain's maptrack maps `mfn`.
    fn frame_grant_mapped(&self, mfn: Mfn) -> bool {
        self.domains
            .iter()
            .any(|d| d.grant.maps.iter().flatten().any(|m| m.mfn == mfn))
    }

    /// Releases every grant mapping of domain `idx`, which is ending (its page tables
    /// are never used again, so the PTEs are left as they are). Frames of ended granters
    /// are freed after one look at every maptrack, not one per mapping.
    pub(crate) fn release_grant_maps(&mut self, idx: usize) {
        let maps = core::mem::take(&mut self.domains[idx].grant.maps);
        self.domains[idx].grant.free_handles = BinaryHeap::new();
        let mut orphans: Vec<(Mfn, DomId)> = Vec::new();
        let room = orphans.try_reserve(maps.len()).is_ok();
        for map in maps.into_iter().flatten() {
            for _ in 0..map.parts() {
                self.drop_map_refs(map.mfn, map.readonly);
            }
            match self.granter_slot(&map) {
                Some(g) => self.drop_pin(g, map.gref, map.readonly, map.parts()),
                None if room => orphans.push((map.mfn, map.granter)),
                None => self.free_orphan(map.mfn, map.granter),
            }
        }
        if orphans.is_empty() {
            return;
        }
        match self.mapped_frames(None) {
            Some(mapped) => {
                for (mfn, owner) in orphans {
                    if self.frames.owner(mfn) == Some(owner) && mapped.binary_search(&mfn).is_err()
                    {
                        self.frames.free(mfn);
                    }
                }
            }
            None => {
                for (mfn, owner) in orphans {
                    self.free_orphan(mfn, owner);
                }
            }
        }
    }

    /// The frames (sorted, deduplicated) any domain other than `granter` maps through a
    /// grant of `granter`, or through any grant for `None`; `None` if the list cannot be
    /// allocated.
    pub(crate) fn mapped_frames(&self, granter: Option<DomId>) -> Option<Vec<Mfn>> {
        let wanted = |d: &Domain, m: &GrantMap| granter.is_none_or(|g| d.id != g && m.granter == g);
        let n = self
            .domains
            .iter()
            .map(|d| {
                d.grant
                    .maps
                    .iter()
                    .flatten()
                    .filter(|m| wanted(d, m))
                    .count()
            })
            .sum();
        let mut v: Vec<Mfn> = Vec::new();
        v.try_reserve(n).ok()?;
        for d in &self.domains {
            v.extend(
                d.grant
                    .maps
                    .iter()
                    .flatten()
                    .filter(|m| wanted(d, m))
                    .map(|m| m.mfn),
            );
        }
        v.sort_unstable();
        v.dedup();
        Some(v)
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
