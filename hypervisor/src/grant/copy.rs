//! `GNTTABOP_copy`: byte copies between a grant reference or one of the caller's own
//! frames on each side, with Xen 4.17's checks and per-element `GNTST_*` statuses.
//!
//! For a grant side the granting domain's entry is pinned ([`super::entry`]): it must
//! permit access to the copying domain (and not be `GTF_readonly` when written);
//! `GTF_reading` (and `GTF_writing` for the destination) are set while the copy runs and
//! cleared after it unless a mapping still holds them, so the granter sees the frame in
//! use and will not revoke it under the copy. v2 sub-page grants limit the copy to their
//! range, and a v2 transitive grant is followed one level (Xen's `transitive` option
//! on). For a frame side only `DOMID_SELF` is accepted, and the frame must be the
//! caller's. A written frame must be able to take a writable type: never a page table
//! or descriptor page.

use super::entry::Pin;
use crate::hv::Hypervisor;
use crate::hypercall::handle::{GuestArray, Outcome, Untyped};
use crate::mmu::PageType;
use crate::platform::{MachineMemory, Platform};
use core::mem::offset_of;
use xen_pv_abi::grant_table::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTST_BAD_COPY_ARG, GNTST_BAD_DOMAIN, GNTST_BAD_PAGE,
    GNTST_GENERAL_ERROR, GNTST_OKAY, GNTST_PERMISSION_DENIED, GNTTABOP_COPY, GnttabCopy,
    GnttabCopyPtr,
};
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::{DomId, Errno, Mfn};

/// Elements one entry into the hypervisor copies before it continues (at most 256 KiB
/// of copying per entry).
pub const COPY_BATCH: u64 = 64;

/// One side of a copy after its checks: the frame, the byte range it may touch and, for
/// a grant, its pin.
struct Claimed {
    mfn: Mfn,
    /// Start and length of the granted bytes.
    range: (u16, u16),
    pin: Option<Pin>,
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `grant_table_op(GNTTABOP_copy, uop, count)`: each element is processed and its
    /// status written back; the call returns 0, or `-EFAULT` when an element cannot be
    /// read or its status written. After [`COPY_BATCH`] elements it continues with the
    /// rest.
    pub(crate) fn gnttab_copy(&mut self, idx: usize, uop: GuestArray<Untyped>) -> Outcome {
        // `grant_table_op` refused a count above `i32::MAX` (Xen's `(int)count < 0`).
        let count = uop.len();
        let ops = uop.cast::<GnttabCopy>();
        for i in 0..count {
            crate::work::step(1);
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
            if let Err(e) = self.write_elem(idx, at, &status.to_le_bytes()) {
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
        let status = Self::copy_bounds(op, &src, &dst).unwrap_or_else(|| {
            let from = src.mfn.maddr() + u64::from(op.source.offset);
            let to = dst.mfn.maddr() + u64::from(op.dest.offset);
            match self.mem.copy(from, to, usize::from(op.len)) {
                Ok(()) => GNTST_OKAY,
                Err(_) => GNTST_GENERAL_ERROR,
            }
        });
        self.copy_release(&dst);
        self.copy_release(&src);
        status
    }

    /// Xen's `gnttab_copy_buf` checks: within the page on both sides
    /// (`GNTST_bad_copy_arg`), then within the granted range of a sub-page or
    /// transitive grant (`GNTST_general_error`).
    fn copy_bounds(op: &GnttabCopy, src: &Claimed, dst: &Claimed) -> Option<i16> {
        let len = u32::from(op.len);
        let page = PAGE_SIZE as u32;
        if u32::from(op.source.offset) + len > page || u32::from(op.dest.offset) + len > page {
            return Some(GNTST_BAD_COPY_ARG);
        }
        for (off, c) in [(op.source.offset, src), (op.dest.offset, dst)] {
            let (start, glen) = c.range;
            if off < start || u32::from(off) + len > u32::from(start) + u32::from(glen) {
                return Some(GNTST_GENERAL_ERROR);
            }
        }
        None
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
        self.grant_domain(domid).ok_or(GNTST_BAD_DOMAIN)
    }

    /// Checks one side and, for a grant, pins its entry (following a transitive one).
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
            if self.frames.owner(mfn) != Some(owner) {
                return Err(GNTST_BAD_PAGE);
            }
            let c = Claimed {
                mfn,
                range: (0, PAGE_SIZE as u16),
                pin: None,
            };
            if write && !self.copy_writable(mfn) {
                return Err(GNTST_GENERAL_ERROR);
            }
            return Ok(c);
        }
        let me = self.domains[idx].id;
        let pin = self.pin_entry(me, owner_idx, ptr.gref(), write, false, true)?;
        let c = Claimed {
            mfn: pin.mfn,
            range: (pin.start, pin.len),
            pin: Some(pin),
        };
        if write && !self.copy_writable(c.mfn) {
            self.copy_release(&c);
            return Err(GNTST_GENERAL_ERROR);
        }
        Ok(c)
    }

    /// Whether `mfn` could take a writable type reference (Xen takes one for the copy;
    /// with the copy done before the guest runs again, checking that it could is the
    /// same): never a page table or descriptor page.
    fn copy_writable(&self, mfn: Mfn) -> bool {
        matches!(
            self.frames.type_state(mfn),
            Some(st) if st.count == 0 || st.ty == PageType::Writable
        )
    }

    /// Ends the pin a claim holds.
    fn copy_release(&mut self, c: &Claimed) {
        if let Some(pin) = &c.pin {
            self.unpin(pin);
        }
    }
}
