//! `GNTTABOP_copy`: byte copies between a grant reference or one of the caller's own
//! frames on each side, with Xen 4.17's checks and per-element `GNTST_*` statuses.
//!
//! For a grant side the granting domain's v1 entry must be `GTF_permit_access` to the
//! copying domain (and not `GTF_readonly` when written); `GTF_reading` (and
//! `GTF_writing` for the destination) are set in the shared entry with a `cmpxchg`
//! while the copy runs and cleared after it, so the granter sees the frame in use and
//! will not revoke it under the copy. For a frame side only `DOMID_SELF` is accepted,
//! and the frame must be the caller's. A written frame must be able to take a writable
//! type: never a page table or descriptor page.
//!
//! A copy clears the bits it set when it is done, except those the copier's grant
//! mappings of the entry hold (see [`super::map`]).

use crate::hv::Hypervisor;
use crate::hypercall::handle::{GuestArray, Outcome, Untyped};
use crate::mmu::PageType;
use crate::platform::{MachineMemory, Platform};
use core::mem::offset_of;
use xen_pv_abi::grant_table::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTST_BAD_COPY_ARG, GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF,
    GNTST_BAD_PAGE, GNTST_GENERAL_ERROR, GNTST_OKAY, GNTST_PERMISSION_DENIED, GNTTABOP_COPY,
    GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_TYPE_MASK, GTF_WRITING, GnttabCopy,
    GnttabCopyPtr,
};
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::{DomId, Errno, Mfn};

/// Elements one entry into the hypervisor copies before it continues (at most 256 KiB
/// of copying per entry).
pub const COPY_BATCH: u64 = 64;

/// Version-1 entries per grant frame.
pub(super) const ENTRIES_PER_FRAME: u32 = (PAGE_SIZE / 8) as u32;

/// Times a shared entry's `cmpxchg` is retried when the guest keeps changing it (Xen).
const ENTRY_RETRIES: u32 = 4;

/// One side of a copy after its checks: the frame and, for a grant, the shared entry
/// whose status bits are held.
struct Claimed {
    mfn: Mfn,
    /// Machine address of the grant entry and the flag bits this copy set in it.
    entry: Option<(u64, u16)>,
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `grant_table_op(GNTTABOP_copy, uop, count)`: each element is processed and its
    /// status written back; the call returns 0, or `-EFAULT` when an element cannot be
    /// read or its status written. After [`COPY_BATCH`] elements it continues with the
    /// rest.
    pub(crate) fn gnttab_copy(&mut self, idx: usize, uop: GuestArray<Untyped>) -> Outcome {
        let count = uop.len();
        // Xen: `(int)count < 0`.
        if count > i32::MAX as u64 {
            return Outcome::Return(Err(Errno::EINVAL));
        }
        let ops = uop.cast::<GnttabCopy>();
        for i in 0..count {
            let Some(h) = ops.get(i) else {
                return Outcome::Return(Err(Errno::EFAULT));
            };
            if i == COPY_BATCH {
                return Outcome::Continue {
                    args: [u64::from(GNTTABOP_COPY), h.addr(), count - i, 0, 0],
                    then: None,
                };
            }
            let op: GnttabCopy = match self.read_guest(idx, h.addr()) {
                Ok(op) => op,
                Err(e) => return Outcome::Return(Err(e)),
            };
            let status = self.copy_one(idx, &op);
            const STATUS_OFF: u64 = offset_of!(GnttabCopy, status) as u64;
            // `h` plus a field offset inside the element: `get` checked the element's
            // start; the copy checks the rest.
            let at = h.addr().wrapping_add(STATUS_OFF);
            if let Err(e) = self.write_guest(idx, at, &status.to_le_bytes()) {
                return Outcome::Return(Err(e));
            }
        }
        Outcome::Return(Ok(0))
    }

    /// One element: its `GNTST_*` status.
    fn copy_one(&mut self, idx: usize, op: &GnttabCopy) -> i16 {
        let src_gref = op.flags & GNTCOPY_SOURCE_GREF != 0;
        let dst_gref = op.flags & GNTCOPY_DEST_GREF != 0;
        // Xen's order: both domains, then the source, then the destination, then the
        // offsets.
        let src_dom = match self.copy_domain(idx, op.source.domid, src_gref) {
            Ok(d) => d,
            Err(s) => return s,
        };
        let dst_dom = match self.copy_domain(idx, op.dest.domid, dst_gref) {
            Ok(d) => d,
            Err(s) => return s,
        };
        let src = match self.copy_claim(idx, src_dom, &op.source, src_gref, false) {
            Ok(c) => c,
            Err(s) => return s,
        };
        let dst = match self.copy_claim(idx, dst_dom, &op.dest, dst_gref, true) {
            Ok(c) => c,
            Err(s) => {
                self.copy_release(&src);
                return s;
            }
        };
        let len = u64::from(op.len);
        let page = PAGE_SIZE as u64;
        let status =
            if u64::from(op.source.offset) + len > page || u64::from(op.dest.offset) + len > page {
                GNTST_BAD_COPY_ARG
            } else {
                let from = src.mfn.maddr() + u64::from(op.source.offset);
                let to = dst.mfn.maddr() + u64::from(op.dest.offset);
                match self.mem.copy(from, to, usize::from(op.len)) {
                    Ok(()) => GNTST_OKAY,
                    Err(_) => GNTST_GENERAL_ERROR,
                }
            };
        self.copy_release(&dst);
        self.copy_release(&src);
        status
    }

    /// The slot of the domain one side names: any running domain for a grant, only
    /// `DOMID_SELF` for a frame (Xen refuses even the caller's own id there).
    fn copy_domain(&self, idx: usize, domid: DomId, gref: bool) -> Result<usize, i16> {
        if domid == DomId::SELF {
            return Ok(idx);
        }
        if !gref {
            return Err(GNTST_PERMISSION_DENIED);
        }
        // A domain that ended has had its frames (grant frames included) freed.
        self.domains
            .iter()
            .position(|d| d.id == domid && d.is_runnable())
            .ok_or(GNTST_BAD_DOMAIN)
    }

    /// Checks one side and, for a grant, sets its entry's status bits.
    fn copy_claim(
        &mut self,
        idx: usize,
        owner_idx: usize,
        ptr: &GnttabCopyPtr,
        gref: bool,
        write: bool,
    ) -> Result<Claimed, i16> {
        let owner = self.domains[owner_idx].id;
        if !gref {
            let mfn = Mfn(ptr.u);
            self.copy_check_frame(mfn, owner, write)?;
            return Ok(Claimed { mfn, entry: None });
        }
        let me = self.domains[idx].id;
        let r = ptr.gref();
        let frames = self.domains[owner_idx].grant.frames();
        let Some(&table) = frames.get((r / ENTRIES_PER_FRAME) as usize) else {
            return Err(GNTST_BAD_GNTREF);
        };
        let entry = table.maddr() + u64::from(r % ENTRIES_PER_FRAME) * 8;
        let set = GTF_READING | if write { GTF_WRITING } else { 0 };
        self.copy_pin_entry(entry, me, write, set)?;
        // The bits the caller's grant mappings of this entry hold stay set after the copy.
        let held = super::map::held_bits(&self.domains[idx].grant.maps, owner, r);
        let claimed = Claimed {
            mfn: Mfn(0),
            entry: Some((entry, set & !held)),
        };
        // The frame is read after the entry is pinned: the granter may not change it
        // while the bits are set.
        let mut frame = [0u8; 4];
        if self.mem.read(entry + 4, &mut frame).is_err() {
            self.copy_release(&claimed);
            return Err(GNTST_GENERAL_ERROR);
        }
        let mfn = Mfn(u64::from(u32::from_le_bytes(frame)));
        if let Err(s) = self.copy_check_frame(mfn, owner, write) {
            self.copy_release(&claimed);
            return Err(s);
        }
        Ok(Claimed { mfn, ..claimed })
    }

    /// Sets `set` in the shared entry at `entry` if it permits access to `me` (and
    /// writing, if `write`), with a `cmpxchg` of flags and domid together so the guest
    /// cannot change either in between.
    pub(super) fn copy_pin_entry(
        &self,
        entry: u64,
        me: DomId,
        write: bool,
        set: u16,
    ) -> Result<(), i16> {
        let mut word = [0u8; 4];
        self.mem
            .read(entry, &mut word)
            .map_err(|_| GNTST_GENERAL_ERROR)?;
        let mut seen = u32::from_le_bytes(word);
        for _ in 0..=ENTRY_RETRIES {
            let flags = seen as u16;
            let domid = (seen >> 16) as u16;
            if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS || domid != me.0 {
                return Err(GNTST_GENERAL_ERROR);
            }
            if write && flags & GTF_READONLY != 0 {
                return Err(GNTST_GENERAL_ERROR);
            }
            let new = seen | u32::from(set);
            match self.mem.cmpxchg_u32(entry, seen, new) {
                Ok(prev) if prev == seen => return Ok(()),
                Ok(prev) => seen = prev,
                Err(_) => return Err(GNTST_GENERAL_ERROR),
            }
        }
        // The entry kept changing under us (Xen: "shared grant entry is unstable").
        Err(GNTST_GENERAL_ERROR)
    }

    /// Whether `mfn` is RAM of `owner` and, when written, may take a writable type.
    fn copy_check_frame(&self, mfn: Mfn, owner: DomId, write: bool) -> Result<(), i16> {
        if self.frames.owner(mfn) != Some(owner) {
            return Err(GNTST_BAD_PAGE);
        }
        if write {
            // Xen takes a writable type reference for the copy; with one CPU and the
            // copy done before the guest runs again, checking that it could is the same.
            match self.frames.type_state(mfn) {
                Some(st) if st.count == 0 || st.ty == PageType::Writable => {}
                _ => return Err(GNTST_GENERAL_ERROR),
            }
        }
        Ok(())
    }

    /// Clears the status bits a claim set.
    fn copy_release(&self, c: &Claimed) {
        if let Some((entry, set)) = c.entry {
            // Both bits live in the low byte of the flags. The entry is in a grant frame
            // the hypervisor holds, so the address is RAM.
            let _ = self.mem.fetch_and_u8(entry, !(set as u8));
        }
    }
}
