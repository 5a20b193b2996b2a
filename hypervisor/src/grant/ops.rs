//! `GNTTABOP_transfer`, `GNTTABOP_swap_grant_ref` and `GNTTABOP_cache_flush`, as Xen
//! 4.17 (`gnttab_transfer`, `swap_grant_ref`, `_cache_flush`).

use crate::hv::Hypervisor;
use crate::hypercall::handle::{GuestArray, Outcome, Untyped};
use crate::platform::{MachineMemory, Platform};
use core::mem::offset_of;
use xen_pv_abi::grant_table::{
    GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_PAGE, GNTST_EAGAIN, GNTST_GENERAL_ERROR,
    GNTST_OKAY, GNTTAB_CACHE_CLEAN, GNTTAB_CACHE_INVAL, GNTTAB_CACHE_SOURCE_GREF,
    GNTTABOP_CACHE_FLUSH, GNTTABOP_SWAP_GRANT_REF, GNTTABOP_TRANSFER, GTF_ACCEPT_TRANSFER,
    GTF_TRANSFER_COMMITTED, GTF_TRANSFER_COMPLETED, GnttabCacheFlush, GnttabSwapGrantRef,
    GnttabTransfer,
};
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::{Errno, Mfn};

/// Elements of a transfer, swap or cache-flush batch done per entry into the hypervisor.
pub const OP_BATCH: u64 = 64;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Runs `one` on each element of a batch of `T`: `-EFAULT` if the array is not a
    /// guest range; each element read, its status written at `status_off`; continues
    /// after [`OP_BATCH`] elements.
    fn status_batch<T: zerocopy::FromBytes + zerocopy::IntoBytes>(
        &mut self,
        idx: usize,
        cmd: u32,
        uop: GuestArray<Untyped>,
        status_off: usize,
        mut one: impl FnMut(&mut Self, &T) -> i16,
    ) -> Outcome {
        let count = uop.len();
        let size = size_of::<T>() as u64;
        match count.checked_mul(size) {
            Some(n) if super::guest_range_ok(uop.addr(), n) => {}
            _ => return Outcome::Return(Err(Errno::EFAULT)),
        }
        for i in 0..count {
            crate::work::step(1);
            let at = uop.addr() + i * size;
            if i == OP_BATCH {
                return Outcome::Continue {
                    args: [u64::from(cmd), at, count - i, 0, 0],
                    then: None,
                };
            }
            let op: T = match self.read_guest(idx, at) {
                Ok(op) => op,
                Err(e) => return Outcome::Return(Err(e)),
            };
            let status = one(self, &op);
            if let Err(e) = self.write_guest(idx, at + status_off as u64, &status.to_le_bytes()) {
                return Outcome::Return(Err(e));
            }
        }
        Outcome::Return(Ok(0))
    }

    /// `GNTTABOP_swap_grant_ref`: swaps two entries of the caller's table (and, in v2,
    /// their status words); `GNTST_eagain` while either is pinned.
    pub(crate) fn gnttab_swap(&mut self, idx: usize, uop: GuestArray<Untyped>) -> Outcome {
        let off = offset_of!(GnttabSwapGrantRef, status);
        self.status_batch(
            idx,
            GNTTABOP_SWAP_GRANT_REF,
            uop,
            off,
            |hv, op: &GnttabSwapGrantRef| hv.swap_one(idx, op.ref_a, op.ref_b),
        )
    }

    fn swap_one(&mut self, idx: usize, a: u32, b: u32) -> i16 {
        let g = &self.domains[idx].grant;
        if a >= g.nr_entries() || b >= g.nr_entries() {
            return GNTST_BAD_GNTREF;
        }
        if a == b {
            return GNTST_OKAY;
        }
        if g.active_of(a).is_some() || g.active_of(b).is_some() {
            return GNTST_EAGAIN;
        }
        let size = (PAGE_SIZE as u32 / g.per_frame()) as usize;
        let pairs = [
            (g.entry_maddr(a), g.entry_maddr(b), size),
            if g.version() == 2 {
                (g.status_maddr(a), g.status_maddr(b), 2)
            } else {
                (None, None, 0)
            },
        ];
        for (x, y, n) in pairs {
            let (Some(x), Some(y)) = (x, y) else { continue };
            let (mut ex, mut ey) = ([0u8; 16], [0u8; 16]);
            // Both lie in frames the hypervisor allocated for the table.
            if self.mem.read(x, &mut ex[..n]).is_err() || self.mem.read(y, &mut ey[..n]).is_err() {
                return GNTST_GENERAL_ERROR;
            }
            let _ = self.mem.write(x, &ey[..n]);
            let _ = self.mem.write(y, &ex[..n]);
        }
        GNTST_OKAY
    }

    /// `GNTTABOP_cache_flush`: Xen's checks (`-EINVAL` for a bad range or unknown op bits,
    /// `-EOPNOTSUPP` for a grant-reference source, `-EPERM` for a frame nobody owns,
    /// `-EINVAL` for a foreign frame the caller does not map through a grant of its
    /// owner at or after the continuation's grant reference); the flush itself is a
    /// no-op on x86, as in Xen. Errors end the call.
    pub(crate) fn gnttab_cache_flush(
        &mut self,
        idx: usize,
        uop: GuestArray<Untyped>,
        opaque: u32,
    ) -> Outcome {
        let count = uop.len();
        let size = size_of::<GnttabCacheFlush>() as u64;
        match count.checked_mul(size) {
            Some(n) if super::guest_range_ok(uop.addr(), n) => {}
            _ => return Outcome::Return(Err(Errno::EFAULT)),
        }
        // The continuation argument is the grant reference the search resumes at.
        let mut cur_ref = opaque;
        for i in 0..count {
            crate::work::step(1);
            let at = uop.addr() + i * size;
            if i == OP_BATCH {
                return Outcome::Continue {
                    args: [u64::from(GNTTABOP_CACHE_FLUSH), at, count - i, 0, 0],
                    then: None,
                };
            }
            let op: GnttabCacheFlush = match self.read_guest(idx, at) {
                Ok(op) => op,
                Err(e) => return Outcome::Return(Err(e)),
            };
            if let Err(e) = self.cache_flush_one(idx, &op, cur_ref) {
                return Outcome::Return(Err(e));
            }
            cur_ref = 0;
        }
        Outcome::Return(Ok(0))
    }

    fn cache_flush_one(
        &self,
        idx: usize,
        op: &GnttabCacheFlush,
        cur_ref: u32,
    ) -> Result<(), Errno> {
        let page = PAGE_SIZE as u32;
        let (off, len) = (u32::from(op.offset), u32::from(op.length));
        if off >= page
            || len > page
            || off + len > page
            || op.op & !(GNTTAB_CACHE_INVAL | GNTTAB_CACHE_CLEAN) != 0
        {
            return Err(Errno::EINVAL);
        }
        if len == 0 || op.op == 0 {
            return if cur_ref == 0 {
                Ok(())
            } else {
                Err(Errno::EILSEQ)
            };
        }
        // Unreachable after the op-bit check above, as in Xen.
        if op.op & GNTTAB_CACHE_SOURCE_GREF != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let mfn = Mfn(op.a >> 12);
        if mfn.0 > self.frames.max_ram_mfn() {
            return Err(Errno::EINVAL);
        }
        let owner = self.frames.owner(mfn).ok_or(Errno::EPERM)?;
        let me = self.domains[idx].id;
        if owner != me {
            // Xen's `grant_map_exists`: an entry of the owner at or after `cur_ref`
            // pinned by the caller for this frame.
            let g = self.grant_domain(owner).ok_or(Errno::EPERM)?;
            let found = self.domains[g]
                .grant
                .active()
                .iter()
                .any(|a| a.gref >= cur_ref && a.mapper == me && a.mfn == mfn);
            if !found {
                return Err(Errno::EINVAL);
            }
        }
        // x86 caches are coherent: clean and invalidate are no-ops (Xen returns 0).
        Ok(())
    }

    /// `GNTTABOP_transfer`: gives one of the caller's frames to another domain's
    /// `GTF_accept_transfer` entry (Xen's PV-only operation). In Xen's order: the frame
    /// must be the caller's, not special and unreferenced (`GNTST_bad_page`); it leaves
    /// the caller; the receiver must exist (`GNTST_bad_domain`), have room in its
    /// reservation and accept from the caller in entry `ref` (`GNTST_general_error`).
    /// After it has left the caller, a failure frees the frame, as in Xen. On success
    /// the entry's frame is the MFN and `GTF_transfer_completed` is set.
    pub(crate) fn gnttab_transfer(&mut self, idx: usize, uop: GuestArray<Untyped>) -> Outcome {
        let off = offset_of!(GnttabTransfer, status);
        self.status_batch(
            idx,
            GNTTABOP_TRANSFER,
            uop,
            off,
            |hv, op: &GnttabTransfer| hv.transfer_one(idx, op),
        )
    }

    fn transfer_one(&mut self, idx: usize, op: &GnttabTransfer) -> i16 {
        let me = self.domains[idx].id;
        let mfn = Mfn(op.mfn);
        if self.frames.owner(mfn) != Some(me) || self.is_special_frame(idx, mfn) {
            return GNTST_BAD_PAGE;
        }
        // `steal_page`: only the allocation reference may be left.
        let unreferenced = self.frames.ref_count(mfn) == Some(0)
            && self.frames.type_state(mfn).is_some_and(|st| st.count == 0);
        if !unreferenced {
            return GNTST_BAD_PAGE;
        }
        // It leaves the caller: its reservation shrinks by one page.
        self.frames.free(mfn);
        self.domains[idx].grant.headroom += 1;
        let Some(e) = self.grant_domain(op.domid) else {
            return GNTST_BAD_DOMAIN;
        };
        if self.domains[e].grant.headroom == 0 {
            // No room in the receiver's reservation: the frame is gone (Xen frees it).
            return GNTST_GENERAL_ERROR;
        }
        if !self.prepare_for_transfer(e, op.r#ref, me) {
            return GNTST_GENERAL_ERROR;
        }
        let recv = self.domains[e].id;
        // The receiver gets the contents in a frame of its own: the frame given up was
        // freed just above and nothing was allocated since, so its bytes are intact.
        let Some(got) = self.frames.alloc(recv) else {
            return GNTST_GENERAL_ERROR;
        };
        if self.mem.copy(mfn.maddr(), got.maddr(), PAGE_SIZE).is_err() {
            self.frames.free(got);
            return GNTST_GENERAL_ERROR;
        }
        self.domains[e].grant.headroom -= 1;
        let g = &self.domains[e].grant;
        // The entry exists: prepare_for_transfer checked the reference.
        if let Some(at) = g.entry_maddr(op.r#ref) {
            let (frame_at, n) = if g.version() == 1 {
                (at + 4, 4)
            } else {
                (at + 8, 8)
            };
            let mut old = [0u8; 8];
            let _ = self.mem.read(frame_at, &mut old[..n]);
            // PV: the guest frame number it named becomes the frame's m2p entry.
            self.frames.set_m2p(got, u64::from_le_bytes(old));
            let _ = self.mem.write(frame_at, &got.0.to_le_bytes()[..n]);
            let _ = self.mem.fetch_or_u8(at, GTF_TRANSFER_COMPLETED as u8);
        }
        GNTST_OKAY
    }

    /// Xen's `gnttab_prepare_for_transfer`: entry `gref` of slot `e` must be exactly
    /// `GTF_accept_transfer` for `from`; `GTF_transfer_committed` is set with a cmpxchg.
    fn prepare_for_transfer(&mut self, e: usize, gref: u32, from: xen_pv_abi::DomId) -> bool {
        let g = &self.domains[e].grant;
        if gref >= g.nr_entries() {
            return false;
        }
        let Some(at) = g.entry_maddr(gref) else {
            return false;
        };
        let mut b = [0u8; 4];
        if self.mem.read(at, &mut b).is_err() {
            return false;
        }
        let mut seen = u32::from_le_bytes(b);
        for _ in 0..5 {
            if seen as u16 != GTF_ACCEPT_TRANSFER || (seen >> 16) as u16 != from.0 {
                return false;
            }
            let new = seen | u32::from(GTF_TRANSFER_COMMITTED);
            match self.mem.cmpxchg_u32(at, seen, new) {
                Ok(prev) if prev == seen => return true,
                Ok(prev) => seen = prev,
                Err(_) => return false,
            }
        }
        false
    }

    /// Frames of the domain the hypervisor itself uses (Xen's special pages).
    fn is_special_frame(&self, idx: usize, mfn: Mfn) -> bool {
        let d = &self.domains[idx];
        d.shared_info == mfn
            || d.console_ring.is_some_and(|(m, _)| m == mfn)
            || d.store_ring.is_some_and(|(m, _)| m == mfn)
            || d.grant.frames().contains(&mfn)
            || d.grant.status_frames().contains(&mfn)
    }
}
