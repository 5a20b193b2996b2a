//! Batches of `GNTTABOP_copy` operations.

use crate::errno::Errno;
use crate::generated::call_on;
use crate::grant_table::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTST_OKAY, GNTTABOP_COPY, GnttabCopy, GnttabCopyPtr,
};
use crate::ids::{DomId, GrantRef, Mfn};
use crate::layout::PAGE_SIZE;
use crate::transport::Transport;

/// One side of a grant copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyPtr {
    /// Bytes at `offset` of the frame `domid` granted as `gref`.
    Grant {
        /// The granting domain.
        domid: DomId,
        /// Its grant reference.
        gref: GrantRef,
        /// Byte offset in the frame.
        offset: u16,
    },
    /// Bytes at `offset` of one of the caller's own frames (an MFN for a PV guest).
    Local {
        /// The frame.
        frame: Mfn,
        /// Byte offset in the frame.
        offset: u16,
    },
}

impl CopyPtr {
    fn offset(self) -> u16 {
        match self {
            CopyPtr::Grant { offset, .. } | CopyPtr::Local { offset, .. } => offset,
        }
    }

    /// The wire form, and whether it is a grant reference.
    fn encode(self) -> (GnttabCopyPtr, bool) {
        match self {
            CopyPtr::Grant {
                domid,
                gref,
                offset,
            } => (
                GnttabCopyPtr {
                    u: u64::from(gref.0),
                    domid,
                    offset,
                    _pad: 0,
                },
                true,
            ),
            CopyPtr::Local { frame, offset } => (
                GnttabCopyPtr {
                    u: frame.0,
                    domid: DomId::SELF,
                    offset,
                    _pad: 0,
                },
                false,
            ),
        }
    }
}

/// Up to `N` grant copies, issued in one `GNTTABOP_copy` hypercall.
///
/// Lives on the stack or in a static (no allocation). Each operation is checked before
/// it is queued: both offsets plus the length must stay within a 4096-byte page.
///
/// ```no_run
/// use xen_pv_abi::kit::{CopyBatch, CopyPtr};
/// use xen_pv_abi::transport::Native;
/// use xen_pv_abi::{DomId, GrantRef, Mfn};
///
/// let mut batch = CopyBatch::<16>::new();
/// // A packet from the frontend's granted page into our own buffer page.
/// batch.push(
///     CopyPtr::Grant { domid: DomId(1), gref: GrantRef(12), offset: 64 },
///     CopyPtr::Local { frame: Mfn(0x4321), offset: 0 },
///     1514,
/// )?;
/// let statuses = batch.submit(&Native)?;
/// assert!(statuses.all_ok());
/// # Ok::<(), xen_pv_abi::Errno>(())
/// ```
#[derive(Clone, Debug)]
pub struct CopyBatch<const N: usize> {
    ops: [GnttabCopy; N],
    len: usize,
}

impl<const N: usize> Default for CopyBatch<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> CopyBatch<N> {
    /// An empty batch.
    pub const fn new() -> Self {
        const EMPTY: GnttabCopyPtr = GnttabCopyPtr {
            u: 0,
            domid: DomId(0),
            offset: 0,
            _pad: 0,
        };
        CopyBatch {
            ops: [GnttabCopy {
                source: EMPTY,
                dest: EMPTY,
                len: 0,
                flags: 0,
                status: 0,
                _pad: 0,
            }; N],
            len: 0,
        }
    }

    /// Queues a copy of `len` bytes from `src` to `dst`.
    ///
    /// Errors: `EINVAL` when an offset plus `len` leaves the page, `ENOSPC` when the
    /// batch holds `N` operations already.
    pub fn push(&mut self, src: CopyPtr, dst: CopyPtr, len: u16) -> Result<(), Errno> {
        let fits = |p: CopyPtr| usize::from(p.offset()) + usize::from(len) <= PAGE_SIZE;
        if !fits(src) || !fits(dst) {
            return Err(Errno::EINVAL);
        }
        let slot = self.ops.get_mut(self.len).ok_or(Errno::ENOSPC)?;
        let (source, src_gref) = src.encode();
        let (dest, dst_gref) = dst.encode();
        *slot = GnttabCopy {
            source,
            dest,
            len,
            flags: if src_gref { GNTCOPY_SOURCE_GREF } else { 0 }
                | if dst_gref { GNTCOPY_DEST_GREF } else { 0 },
            status: 0,
            _pad: 0,
        };
        self.len += 1;
        Ok(())
    }

    /// Operations queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops every queued operation.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The queued operations as the hypervisor sees them (after
    /// [`submit`](Self::submit): with their `status`).
    pub fn ops(&self) -> &[GnttabCopy] {
        &self.ops[..self.len]
    }

    /// Issues the queued operations in one hypercall through `t` and returns their
    /// statuses. The batch keeps them (call [`clear`](Self::clear) to reuse it). An
    /// empty batch makes no hypercall.
    ///
    /// `Err` only when the hypercall as a whole fails; each operation's own outcome is
    /// its `GNTST_*` status.
    pub fn submit<T: Transport + ?Sized>(&mut self, t: &T) -> Result<CopyStatuses<'_>, Errno> {
        if self.len > 0 {
            for op in &mut self.ops[..self.len] {
                op.status = 0;
            }
            // `len <= N`; a batch beyond u32 range would not fit in memory anyway.
            let count = u32::try_from(self.len).map_err(|_| Errno::E2BIG)?;
            // SAFETY: `ops[..len]` are `count` initialised 40-byte gnttab_copy structs
            // the hypervisor reads and writes (status); the frames they name are checked
            // by the hypervisor against this domain's rights.
            let ret = unsafe {
                call_on::grant_table_op(t, GNTTABOP_COPY, self.ops.as_mut_ptr().cast(), count)
            };
            Errno::check(ret)?;
        }
        Ok(CopyStatuses {
            ops: &self.ops[..self.len],
        })
    }
}

/// The per-operation `GNTST_*` statuses of a submitted [`CopyBatch`], in push order.
#[derive(Clone, Copy, Debug)]
pub struct CopyStatuses<'a> {
    ops: &'a [GnttabCopy],
}

impl<'a> CopyStatuses<'a> {
    /// The status of operation `i`.
    pub fn get(&self, i: usize) -> Option<i16> {
        self.ops.get(i).map(|op| op.status)
    }

    /// Every status, in push order.
    pub fn iter(&self) -> impl Iterator<Item = i16> + 'a {
        self.ops.iter().map(|op| op.status)
    }

    /// How many operations there were.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there were none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether every operation succeeded (`GNTST_okay`).
    pub fn all_ok(&self) -> bool {
        self.ops.iter().all(|op| op.status == GNTST_OKAY)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::grant_table::GNTST_BAD_COPY_ARG;
    use crate::nr;
    use crate::transport::fake::Fake;
    use std::vec::Vec;

    const G: CopyPtr = CopyPtr::Grant {
        domid: DomId(2),
        gref: GrantRef(77),
        offset: 100,
    };
    const L: CopyPtr = CopyPtr::Local {
        frame: Mfn(0x1_2345_6789),
        offset: 8,
    };

    #[test]
    fn ops_are_encoded_with_flags_per_side() {
        let mut b = CopyBatch::<4>::new();
        b.push(G, L, 16).unwrap();
        b.push(L, G, 32).unwrap();
        b.push(G, G, 0).unwrap();
        b.push(L, L, 4088).unwrap();
        let ops = b.ops();
        assert_eq!(ops[0].flags, GNTCOPY_SOURCE_GREF);
        assert_eq!(ops[1].flags, GNTCOPY_DEST_GREF);
        assert_eq!(ops[2].flags, GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF);
        assert_eq!(ops[3].flags, 0);
        let s = ops[0].source;
        assert_eq!((s.gref(), s.domid, s.offset), (77, DomId(2), 100));
        let d = ops[0].dest;
        assert_eq!((d.u, d.domid, d.offset), (0x1_2345_6789, DomId::SELF, 8));
        assert_eq!(ops[1].len, 32);
        assert_eq!(b.push(L, L, 1), Err(Errno::ENOSPC));
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn ranges_leaving_the_page_are_refused() {
        let mut b = CopyBatch::<4>::new();
        // 100 + 3996 = 4096 fits; one more byte does not, on either side.
        b.push(G, L, 3996).unwrap();
        assert_eq!(b.push(G, L, 3997), Err(Errno::EINVAL));
        assert_eq!(b.push(L, G, 3997), Err(Errno::EINVAL));
        let far = CopyPtr::Local {
            frame: Mfn(1),
            offset: u16::MAX,
        };
        assert_eq!(b.push(far, L, 0), Err(Errno::EINVAL));
        assert_eq!(b.push(L, L, u16::MAX), Err(Errno::EINVAL));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn submit_passes_the_array_and_returns_each_status() {
        let t = Fake::new(|call| {
            assert_eq!(call.op, nr::GRANT_TABLE_OP);
            assert_eq!(call.args[0], u64::from(GNTTABOP_COPY));
            // SAFETY: the batch passes `count` live GnttabCopy structs.
            let ops = unsafe {
                core::slice::from_raw_parts_mut(
                    call.args[1] as *mut GnttabCopy,
                    call.args[2] as usize,
                )
            };
            for op in ops {
                if op.flags & GNTCOPY_DEST_GREF != 0 {
                    op.status = GNTST_BAD_COPY_ARG;
                }
            }
            0
        });
        let mut b = CopyBatch::<8>::new();
        assert!(b.submit(&t).unwrap().is_empty());
        assert_eq!(t.count(), 0, "an empty batch makes no hypercall");
        b.push(G, L, 1).unwrap();
        b.push(L, G, 1).unwrap();
        b.push(G, L, 1).unwrap();
        let s = b.submit(&t).unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), [0, GNTST_BAD_COPY_ARG, 0]);
        assert!(!s.all_ok());
        assert_eq!(
            (s.len(), s.get(1), s.get(3)),
            (3, Some(GNTST_BAD_COPY_ARG), None)
        );
        assert_eq!(t.calls()[0].args[2], 3);
        b.clear();
        b.push(G, L, 1).unwrap();
        assert!(b.submit(&t).unwrap().all_ok());
        let t = Fake::new(|_| Errno::EFAULT.to_ret());
        assert_eq!(b.submit(&t).unwrap_err(), Errno::EFAULT);
    }
}
