//! The PV MMU hypercalls: `mmu_update` (1), `update_va_mapping` (14), `vm_assist` (21)
//! and `mmuext_op` (26). The typing rules themselves are in `memory::pagetable`.
//!
//! Batches stop at the first failing element (its error is the result; `pdone` says how
//! many were done). Long batches are preempted every [`BATCH`] elements, or once their
//! page-table (de)validation reached [`WORK_BUDGET`] entries, with a Xen-style
//! continuation: the guest's `syscall` is re-executed with the remaining elements and
//! `MMU_UPDATE_PREEMPTED` in the count, so no single entry into the hypervisor does
//! unbounded work. Inside a multicall the continuation's arguments go back into the
//! multicall entry and the multicall itself is continued at that entry (multicall.rs).
//!
//! One element may itself validate or devalidate a whole hierarchy: that work is
//! preemptible too (pagetable.rs, Xen's `PGT_partial`). An element stopped by the budget
//! is retried by the continuation (the same element, resuming where it stopped); a drop
//! left half done (an unpin, a root or entry replaced, a failed validation's undo) is the
//! vCPU's `old_table`, finished first by the next mmu_update/mmuext_op, which stops
//! before its next element while one is pending. When the last element left one, the
//! continuation is Xen's: no list, `MMU_UPDATE_PREEMPTED` as the count and the batch's
//! result in place of `foreigndom`, returned once the drop is finished. As a difference
//! from Xen, a root switch whose old root's drop was interrupted counts as done at once
//! (Xen retries the element, as a no-op); the results and final `pdone` are the same.
//!
//! TLB flushes: a page-table write that takes a right away (the entry now maps another
//! frame, nothing, or no longer allows writes) flushes the whole TLB before the guest runs
//! again, whatever the guest's flush flags asked: a translation cached from a dropped
//! writable mapping must not survive the frame becoming a page table (Xen gets the same
//! from its type-change flush), and the L1 may be linked at more VAs than one. Any other
//! write (a new mapping, more rights, the same frame with other A/D/NX/guest bits, the
//! value the entry already held) flushes nothing, so `mmu_update` flushes only as above
//! and `update_va_mapping` exactly what its flags ask (`UVMF_INVLPG`: that VA;
//! `UVMF_TLB_FLUSH`: all; none: nothing), as on Xen. The MMUEXT flush and invlpg ops do
//! what they say; unpin and root switches flush the whole TLB.

use crate::hv::Hypervisor;
use crate::hypercall::HcResult;
use crate::hypercall::handle::{GuestArray, GuestHandle, Outcome};
use crate::mmu::guest::copy_from_guest;
use crate::mmu::pagetable::{Budget, PtCtx, Stop};
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::layout::{PAGE_SIZE, in_hypervisor_range, is_canonical};
use xen_pv_abi::mmu::*;
use xen_pv_abi::{DomId, Errno, Mfn};
use zerocopy::IntoBytes;

/// Elements handled per entry into the hypervisor before a continuation.
pub const BATCH: u32 = 512;
/// Page-table entries validated or devalidated per entry into the hypervisor before a
/// continuation: one pin or unpin can (de)validate a whole hierarchy, so an element count
/// alone does not bound the work (512 pin/unpin pairs of a large hierarchy would).
pub const WORK_BUDGET: u64 = 1 << 16;
/// The budget in force: [`WORK_BUDGET`], or in host tests what the test set (so small
/// domains reach the preemption points too).
fn work_budget() -> u64 {
    #[cfg(test)]
    if let Some(b) = test_budget::get() {
        return b;
    }
    WORK_BUDGET
}

/// Host tests: a per-thread work budget in place of [`WORK_BUDGET`].
#[cfg(test)]
pub(crate) mod test_budget {
    extern crate std;
    use core::cell::Cell;

    std::thread_local! {
        static BUDGET: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// Sets (or with `None` resets) this thread's budget.
    pub(crate) fn set(b: Option<u64>) {
        BUDGET.with(|c| c.set(b));
    }

    pub(crate) fn get() -> Option<u64> {
        BUDGET.with(|c| c.get())
    }
}

/// Count flag of a continued batch (Xen's `MMU_UPDATE_PREEMPTED`).
pub const MMU_UPDATE_PREEMPTED: u32 = 1 << 31;
/// The arguments of a batch hypercall (mmu_update, mmuext_op), as the generated dispatch
/// typed them: the list (its length is the count register, with
/// `MMU_UPDATE_PREEMPTED` on a continuation), the done counter, the foreign domain.
struct BatchArgs<T> {
    list: GuestArray<T>,
    pdone: GuestHandle<u32>,
    foreigndom: u32,
    kind: BatchKind,
}

/// Which batch hypercall a [`BatchArgs`] is (they read `foreigndom` differently).
#[derive(Clone, Copy, PartialEq, Eq)]
enum BatchKind {
    MmuUpdate,
    MmuextOp,
}

/// The result of a batch, or its continuation with the elements not done yet.
fn finish_batch<T>(a: &BatchArgs<T>, ret: Result<BatchEnd, Errno>) -> Outcome {
    let args = match ret {
        Ok(BatchEnd::Preempted { done }) => {
            let count = a.list.len() as u32 & !MMU_UPDATE_PREEMPTED;
            // `done` elements were read from the list: their addresses did not overflow.
            let next = a
                .list
                .addr()
                .wrapping_add(u64::from(done) * size_of::<T>() as u64);
            [
                next,
                u64::from((count - done) | MMU_UPDATE_PREEMPTED),
                a.pdone.addr(),
                u64::from(a.foreigndom),
                0,
            ]
        }
        Ok(BatchEnd::Again) => [
            a.list.addr(),
            a.list.len(),
            a.pdone.addr(),
            u64::from(a.foreigndom),
            0,
        ],
        // As Xen: no list, only the flag, and the result where foreigndom was.
        Ok(BatchEnd::Report(r)) => [
            0,
            u64::from(MMU_UPDATE_PREEMPTED),
            0,
            u64::from(encode_result(r)),
            0,
        ],
        Ok(BatchEnd::Finished(r)) => return Outcome::Return(r.map(|()| 0)),
        Err(e) => return Outcome::Return(Err(e)),
    };
    Outcome::Continue { args, then: None }
}

/// A batch's result as the `Report` continuation carries it (Xen: `(int)rc`).
fn encode_result(r: Result<(), Errno>) -> u32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.0.wrapping_neg() as u32,
    }
}

/// The result a `Report` continuation carries (whatever the guest put there).
fn decode_result(v: u32) -> Result<(), Errno> {
    match v as i32 {
        0 => Ok(()),
        n if n < 0 && n > -4096 => Err(Errno(-n)),
        _ => Err(Errno::EINVAL),
    }
}

/// `mmu_update` requests read ahead, in one copy, from the page of the current one:
/// valid while no element wrote anything (a rewrite with the value already there writes
/// nothing); any element that may have changed memory or mappings forgets them. Only
/// whole requests of that page and of the list are read, so a read fails exactly when
/// reading the one request would (the generic path then reads it and reports it).
struct ReqAhead {
    reqs: [MmuUpdate; REQ_AHEAD],
    /// Guest VA of `reqs[0]`.
    at: u64,
    /// Valid requests.
    len: usize,
    /// Guest VA one past the list (0 if it would overflow: no read-ahead).
    end: u64,
}

/// Requests [`ReqAhead`] reads at once.
const REQ_AHEAD: usize = 16;
const REQ_SIZE: u64 = size_of::<MmuUpdate>() as u64;

impl ReqAhead {
    fn new(list: GuestArray<MmuUpdate>) -> Self {
        let count = list.len() & u64::from(!MMU_UPDATE_PREEMPTED);
        let end = count
            .checked_mul(REQ_SIZE)
            .and_then(|n| list.addr().checked_add(n))
            .unwrap_or(0);
        ReqAhead {
            reqs: [MmuUpdate::default(); REQ_AHEAD],
            at: 0,
            len: 0,
            end,
        }
    }

    fn forget(&mut self) {
        self.len = 0;
    }

    /// The request at `at`, if it can be read ahead.
    fn get<M: MachineMemory, P: Platform>(
        &mut self,
        hv: &Hypervisor<M, P>,
        idx: usize,
        at: u64,
    ) -> Option<MmuUpdate> {
        let off = at.wrapping_sub(self.at);
        if at >= self.at && off.is_multiple_of(REQ_SIZE) && off / REQ_SIZE < self.len as u64 {
            return Some(self.reqs[(off / REQ_SIZE) as usize]);
        }
        self.len = 0;
        let page = PAGE_SIZE as u64;
        let in_page = (page - (at & (page - 1))) / REQ_SIZE;
        let in_list = self.end.checked_sub(at)? / REQ_SIZE;
        let n = in_page.min(in_list).min(REQ_AHEAD as u64) as usize;
        if n == 0 {
            return None;
        }
        let bytes = self.reqs[..n].as_mut_bytes();
        copy_from_guest(&hv.mem, &hv.frames, hv.current_space(idx), at, bytes).ok()?;
        self.at = at;
        self.len = n;
        Some(self.reqs[0])
    }
}

/// How a batch hypercall ended.
enum BatchEnd {
    /// Every element done (or the first failure).
    Finished(Result<(), Errno>),
    /// Preempted after `done` elements of this entry; continue with the rest (the
    /// element `done` itself may be half done: its retry continues it).
    Preempted { done: u32 },
    /// The reference drop an earlier entry left is not finished yet: the same call again.
    Again,
    /// Every element done (or the first failure), but the last one left a reference
    /// drop: the continuation finishes it, then returns this.
    Report(Result<(), Errno>),
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// The typing context for the running domain (runs everything to its end).
    pub(crate) fn pt(&mut self, idx: usize) -> PtCtx<'_, M> {
        PtCtx::new(
            &self.mem,
            &mut self.frames,
            self.domains[idx].id,
            &self.hypervisor_l4_slots,
        )
    }

    /// Runs `f` in a preemptible typing context for the running domain, with the
    /// vCPU's deferred reference drop (which `f` may leave again).
    fn with_pt<R>(
        &mut self,
        idx: usize,
        budget: Budget,
        f: impl FnOnce(&mut PtCtx<'_, M>) -> R,
    ) -> R {
        let deferred = self.cur_mut(idx).old_table.take();
        let mut pt = PtCtx::new(
            &self.mem,
            &mut self.frames,
            self.domains[idx].id,
            &self.hypervisor_l4_slots,
        );
        pt.budget = Some(budget);
        pt.deferred = deferred;
        let r = f(&mut pt);
        let deferred = pt.deferred;
        self.cur_mut(idx).old_table = deferred;
        r
    }

    /// Whether `foreigndom` of mmu_update/mmuext_op names the caller itself as the owner
    /// of both the frames (`DOMID_SELF`: Xen 4.17 refuses the caller's own number) and
    /// the page tables (PFD + 1 in bits 31:16: 0 or the caller's id).
    pub(super) fn foreigndom_is_self(&self, idx: usize, foreigndom: u32) -> bool {
        let me = self.domains[idx].id.0;
        let pfd = (foreigndom >> 16) as u16;
        foreigndom as u16 == DomId::SELF.0 && (pfd == 0 || pfd.wrapping_sub(1) == me)
    }

    /// Whom `foreigndom` names, checked in Xen 4.17's order: for mmu_update
    /// (`with_pt_owner`) first the page-table owner (bits 31:16, PFD + 1; an unknown one
    /// is -ESRCH), then for both calls the frames' owner (`get_pg_owner`, bits 15:0):
    /// `DOMID_SELF` is the caller, the caller's own number or an unknown domain is
    /// -ESRCH, `DOMID_XEN` and an existing domain are another owner. `DOMID_IO` is
    /// another owner for mmuext_op (which refuses it as a whole); for mmu_update Xen maps
    /// I/O frames with it, which is not implemented here: -ESRCH.
    fn foreign_owner(
        &self,
        idx: usize,
        foreigndom: u32,
        with_pt_owner: bool,
    ) -> Result<bool, Errno> {
        let me = self.domains[idx].id.0;
        let exists = |id: u16| self.existing_slot(DomId(id)).is_some();
        let mut other = false;
        let pfd = (foreigndom >> 16) as u16;
        if with_pt_owner && pfd != 0 && pfd - 1 != me {
            if !exists(pfd - 1) {
                return Err(Errno::ESRCH);
            }
            other = true;
        }
        let fd = foreigndom as u16;
        if fd == DomId::SELF.0 {
            return Ok(other);
        }
        if fd == me {
            return Err(Errno::ESRCH);
        }
        if fd == DomId::XEN.0 || (fd == DomId::IO.0 && !with_pt_owner) || exists(fd) {
            return Ok(true);
        }
        Err(Errno::ESRCH)
    }

    /// `mmu_update(reqs, count, pdone, foreigndom)` from the running domain.
    pub(crate) fn mmu_update(
        &mut self,
        idx: usize,
        reqs: GuestArray<MmuUpdate>,
        pdone: GuestHandle<u32>,
        foreigndom: u32,
    ) -> Outcome {
        let args = BatchArgs {
            list: reqs,
            pdone,
            foreigndom,
            kind: BatchKind::MmuUpdate,
        };
        // Worth its buffer only for more than one request.
        let mut ahead =
            (reqs.len() & u64::from(!MMU_UPDATE_PREEMPTED) > 1).then(|| ReqAhead::new(reqs));
        let ret = self.batch(idx, &args, |hv: &mut Self, idx, at, budget| {
            hv.mmu_one_quick(idx, at, budget, &mut ahead)
        });
        finish_batch(&args, ret)
    }

    /// `mmuext_op(ops, count, pdone, foreigndom)` from the running domain.
    pub(crate) fn mmuext_op(
        &mut self,
        idx: usize,
        ops: GuestArray<MmuextOp>,
        pdone: GuestHandle<u32>,
        foreigndom: u32,
    ) -> Outcome {
        self.mmuext_op_first(idx, ops, pdone, foreigndom, None)
    }

    /// [`Self::mmuext_op`], `first` being the op at its VA read just before (by the fast
    /// entry, nothing having happened since), so it is not read twice.
    pub(super) fn mmuext_op_first(
        &mut self,
        idx: usize,
        ops: GuestArray<MmuextOp>,
        pdone: GuestHandle<u32>,
        foreigndom: u32,
        mut first: Option<(u64, MmuextOp)>,
    ) -> Outcome {
        let args = BatchArgs {
            list: ops,
            pdone,
            foreigndom,
            kind: BatchKind::MmuextOp,
        };
        let ret = self.batch(idx, &args, |hv: &mut Self, idx, at, budget| {
            let op = match first.take() {
                Some((va, op)) if va == at => op,
                _ => hv.read_guest(idx, at)?,
            };
            hv.mmuext_one(idx, op, budget)
        });
        finish_batch(&args, ret)
    }

    /// Runs `one` on each element of a batch at `list`; handles `pdone` and preemption.
    fn batch<T>(
        &mut self,
        idx: usize,
        a: &BatchArgs<T>,
        // Not a pointer, so each batch gets its element handler inline.
        mut one: impl FnMut(&mut Self, usize, u64, Budget) -> Result<bool, Stop>,
    ) -> Result<BatchEnd, Errno> {
        let (list, count, pdone) = (a.list.addr(), a.list.len() as u32, a.pdone.addr());
        let budget = Budget {
            start: self.frames.work(),
            limit: work_budget(),
        };
        // What an earlier entry left comes first (Xen: put_old_guest_table).
        if self.cur(idx).old_table.is_some()
            && self.with_pt(idx, budget, |pt| pt.finish_deferred()) == Err(Stop::Preempted)
        {
            return Ok(BatchEnd::Again);
        }
        if count == MMU_UPDATE_PREEMPTED && list == 0 {
            return Ok(BatchEnd::Finished(decode_result(a.foreigndom)));
        }
        let elem_size = size_of::<T>() as u64;
        let foreigndom = a.foreigndom;
        let continued = count & MMU_UPDATE_PREEMPTED != 0;
        let count = count & !MMU_UPDATE_PREEMPTED;
        // A continuation adds to what the earlier entries reported.
        let done_before = if continued && pdone != 0 {
            self.read_guest::<u32>(idx, pdone).unwrap_or(0)
        } else {
            0
        };
        // Another domain's frames or tables. Xen lets only a privileged caller (XSM's
        // default) use them; the control domain's foreign mappings are not implemented
        // here, so it keeps -ESRCH. A domU gets Xen's -EPERM: mmuext_op before any op,
        // mmu_update at its first request (by then an unreadable request is -EFAULT and
        // an unknown command -ENOSYS, as there).
        let mut refused = false;
        if !self.foreigndom_is_self(idx, foreigndom) {
            let is_update = a.kind == BatchKind::MmuUpdate;
            let other = self.foreign_owner(idx, foreigndom, is_update)?;
            if other {
                if self.domains[idx].dom0 {
                    return Err(Errno::ESRCH);
                }
                if !is_update {
                    return Err(Errno::EPERM);
                }
                refused = true;
            }
        }
        let mut done = 0u32;
        let mut flush = false;
        let mut end = BatchEnd::Finished(Ok(()));
        while done < count {
            crate::work::step(1);
            let work = self.frames.work().wrapping_sub(budget.start);
            // An element that left a reference drop ends the entry: the continuation
            // finishes the drop first.
            let deferred = self.cur(idx).old_table.is_some();
            if done >= BATCH || (done > 0 && work >= budget.limit) || deferred {
                end = BatchEnd::Preempted { done };
                break;
            }
            let at = u64::from(done)
                .checked_mul(elem_size)
                .and_then(|off| list.checked_add(off));
            if refused {
                let e = match at.map(|at| self.read_guest::<MmuUpdate>(idx, at)) {
                    Some(Ok(req)) if req.ptr & 7 <= MMU_PT_UPDATE_NO_TRANSLATE => Errno::EPERM,
                    Some(Ok(_)) => Errno::ENOSYS,
                    _ => Errno::EFAULT,
                };
                end = BatchEnd::Finished(Err(e));
                break;
            }
            let r = match at {
                Some(at) => one(self, idx, at, budget),
                None => Err(Stop::Fail(Errno::EFAULT)),
            };
            match r {
                Ok(changed) => flush |= changed,
                Err(Stop::Fail(e)) => {
                    end = BatchEnd::Finished(Err(e));
                    break;
                }
                Err(Stop::Preempted) => {
                    // Validation or devalidation interrupted inside the element: it is
                    // run again (and continues where it stopped).
                    flush = true;
                    end = BatchEnd::Preempted { done };
                    break;
                }
            }
            done += 1;
        }
        if let BatchEnd::Finished(r) = end
            && self.cur(idx).old_table.is_some()
        {
            end = BatchEnd::Report(r);
        }
        // Also when the batch failed: an element before the failing one may have taken
        // a right away.
        if self.frames.take_hw_flush() | flush {
            self.platform.flush_tlb();
        }
        if pdone != 0 {
            // As Xen: a bad pdone does not change the result.
            let total = done_before.wrapping_add(done);
            let _ = self.write_guest(idx, pdone, &total.to_le_bytes());
        }
        Ok(end)
    }

    /// [`Self::mmu_one`], for a request that rewrites a table entry keeping its
    /// references (read ahead from the list, see [`ReqAhead`]) without the generic
    /// entry update; anything else goes to `mmu_one`, which reads it again.
    fn mmu_one_quick(
        &mut self,
        idx: usize,
        at: u64,
        budget: Budget,
        ahead: &mut Option<ReqAhead>,
    ) -> Result<bool, Stop> {
        let req = match ahead {
            Some(ahead) => ahead.get(self, idx, at),
            // A single request: read as it is.
            None => self.read_guest::<MmuUpdate>(idx, at).ok(),
        };
        if let Some(req) = req {
            let kind = req.ptr & 7;
            if matches!(
                kind,
                MMU_NORMAL_PT_UPDATE | MMU_PT_UPDATE_NO_TRANSLATE | MMU_PT_UPDATE_PRESERVE_AD
            ) {
                // The batch runs an element only with no deferred drop (the vCPU's is
                // None), so a fresh context is the one `with_pt` would build.
                let preserve_ad = kind == MMU_PT_UPDATE_PRESERVE_AD;
                let mut pt = self.pt(idx);
                match pt.rewrite_keeping_references(req.ptr & !7, req.val, preserve_ad) {
                    Some(Ok(false)) => return Ok(false),
                    Some(r) => {
                        // Memory changed: what was read ahead is read again.
                        ahead.as_mut().map(ReqAhead::forget);
                        return r.map(|_| false).map_err(Stop::Fail);
                    }
                    None => {}
                }
            }
        }
        ahead.as_mut().map(ReqAhead::forget);
        self.mmu_one(idx, at, budget)
    }

    /// One `mmu_update` request at guest VA `at`; `Ok(true)` if a page table changed.
    fn mmu_one(&mut self, idx: usize, at: u64, budget: Budget) -> Result<bool, Stop> {
        let req: MmuUpdate = self.read_guest(idx, at)?;
        let addr = req.ptr & !7;
        match req.ptr & 7 {
            MMU_NORMAL_PT_UPDATE | MMU_PT_UPDATE_NO_TRANSLATE | MMU_PT_UPDATE_PRESERVE_AD => {
                let preserve_ad = req.ptr & 7 == MMU_PT_UPDATE_PRESERVE_AD;
                // The batch flushes if a right was taken away (Frames::take_hw_flush).
                self.with_pt(idx, budget, |pt| pt.mod_entry(addr, req.val, preserve_ad))?;
                Ok(false)
            }
            MMU_MACHPHYS_UPDATE => {
                let mfn = Mfn::containing(addr);
                if self.frames.owner(mfn) != Some(self.domains[idx].id) {
                    return Err(Errno::EINVAL.into());
                }
                self.frames.set_m2p(mfn, req.val);
                Ok(false)
            }
            _ => Err(Errno::ENOSYS.into()),
        }
    }

    /// Reads a vCPU mask (`_MULTI` forms): only its readability matters with one vCPU.
    fn read_vcpumask(&self, idx: usize, ptr: u64) -> Result<(), Errno> {
        self.read_guest::<u64>(idx, ptr).map(drop)
    }

    /// One `mmuext_op` `op` (read from the guest); `Ok(true)` if page tables changed.
    fn mmuext_one(&mut self, idx: usize, op: MmuextOp, budget: Budget) -> Result<bool, Stop> {
        let mfn = Mfn(op.arg1);
        match op.cmd {
            MMUEXT_PIN_L1_TABLE..=MMUEXT_PIN_L4_TABLE => {
                let level = op.cmd - MMUEXT_PIN_L1_TABLE + 1;
                self.with_pt(idx, budget, |pt| pt.pin(mfn, level))?;
                Ok(false)
            }
            MMUEXT_UNPIN_TABLE => {
                self.with_pt(idx, budget, |pt| pt.unpin(mfn))?;
                Ok(true)
            }
            MMUEXT_NEW_BASEPTR => {
                let old = Mfn::containing(self.cur(idx).cr3);
                self.with_pt(idx, budget, |pt| pt.switch_root(mfn, Some(old)))?;
                let cr3 = mfn.maddr();
                self.cur_mut(idx).cr3 = cr3;
                // Hypercalls only come from kernel mode, which runs on this root: the
                // arch loads it on the way back.
                self.cpu.cr3 = cr3;
                Ok(true)
            }
            MMUEXT_NEW_USER_BASEPTR => {
                let old = self.cur(idx).user_cr3;
                let old = (old != 0).then_some(Mfn::containing(old));
                if op.arg1 == 0 {
                    if let Some(old) = old {
                        self.with_pt(idx, budget, |pt| pt.unload_root(old))?;
                    }
                    self.cur_mut(idx).user_cr3 = 0;
                } else {
                    self.with_pt(idx, budget, |pt| pt.switch_root(mfn, old))?;
                    self.cur_mut(idx).user_cr3 = mfn.maddr();
                }
                Ok(true)
            }
            MMUEXT_TLB_FLUSH_LOCAL | MMUEXT_TLB_FLUSH_ALL => Ok(true),
            // Xen 4.17: an unreadable vCPU mask is -EINVAL here (-EFAULT in
            // update_va_mapping).
            MMUEXT_TLB_FLUSH_MULTI => Ok(self
                .read_vcpumask(idx, op.arg2)
                .map(|()| true)
                .map_err(|_| Errno::EINVAL)?),
            MMUEXT_INVLPG_LOCAL | MMUEXT_INVLPG_ALL | MMUEXT_INVLPG_MULTI => {
                if op.cmd == MMUEXT_INVLPG_MULTI {
                    self.read_vcpumask(idx, op.arg2)
                        .map_err(|_| Errno::EINVAL)?;
                }
                if is_canonical(op.arg1) && !in_hypervisor_range(op.arg1) {
                    self.platform.invlpg(op.arg1);
                }
                Ok(false)
            }
            MMUEXT_FLUSH_CACHE | MMUEXT_FLUSH_CACHE_GLOBAL => {
                // Only a domain with device access may (Xen: cache_flush_permitted);
                // QEMU's caches are coherent, so there is nothing to do.
                if self.domains[idx].dom0 {
                    Ok(false)
                } else {
                    Err(Errno::EACCES.into())
                }
            }
            // Checked, typed and loaded in traps/ldt.rs; nr_ents is a C unsigned int.
            MMUEXT_SET_LDT => Ok(self.set_ldt(idx, op.arg1, op.arg2 as u32).map(|()| false)?),
            MMUEXT_CLEAR_PAGE => {
                let mut pt = self.pt(idx);
                pt.get_type(mfn, crate::mmu::PageType::Writable)?;
                let r = pt.mem.fill(mfn.maddr(), 0, PAGE_SIZE);
                pt.put_type(mfn);
                Ok(r.map(|()| false).map_err(|_| Errno::EINVAL)?)
            }
            MMUEXT_COPY_PAGE => {
                let src = Mfn(op.arg2);
                if self.frames.owner(src) != Some(self.domains[idx].id) {
                    return Err(Errno::EINVAL.into());
                }
                let mut page = [0u8; PAGE_SIZE];
                self.mem
                    .read(src.maddr(), &mut page)
                    .map_err(|_| Errno::EINVAL)?;
                let mut pt = self.pt(idx);
                pt.get_type(mfn, crate::mmu::PageType::Writable)?;
                let r = pt.mem.write(mfn.maddr(), &page);
                pt.put_type(mfn);
                Ok(r.map(|()| false).map_err(|_| Errno::EINVAL)?)
            }
            // PV superpages are gone from Xen 4.17: the commands remain, refused.
            MMUEXT_MARK_SUPER | MMUEXT_UNMARK_SUPER => Err(Errno::EOPNOTSUPP.into()),
            _ => Err(Errno::ENOSYS.into()),
        }
    }

    /// `update_va_mapping(va, val, flags)`: writes the L1 entry mapping `va` in the
    /// running vCPU's kernel page tables.
    pub(crate) fn update_va_mapping(
        &mut self,
        idx: usize,
        va: u64,
        val: u64,
        flags: u64,
    ) -> HcResult {
        if !is_canonical(va) || in_hypervisor_range(va) {
            return Err(Errno::EINVAL);
        }
        // With a flush type (TLB_FLUSH or INVLPG), anything above it other than
        // UVMF_ALL is a vCPU mask pointer; flush types 0 and 3 flush nothing, and Xen
        // 4.17 does not look at the rest then.
        let scope = flags & !UVMF_FLUSHTYPE_MASK;
        let flushes = matches!(flags & UVMF_FLUSHTYPE_MASK, UVMF_TLB_FLUSH | UVMF_INVLPG);
        if flushes && scope != UVMF_LOCAL && scope != UVMF_ALL {
            self.read_vcpumask(idx, scope)?;
        }
        let root = Mfn::containing(self.cur(idx).cr3);
        let mut pt = self.pt(idx);
        let entry = pt.l1_entry_maddr(root, va)?;
        // An L1 entry: nothing to validate or devalidate below it, nothing deferred.
        let r = match pt.rewrite_keeping_references(entry, val, false) {
            Some(r) => r.map(drop).map_err(Stop::Fail),
            None => pt.mod_entry(entry, val, false),
        };
        // A right taken away is flushed whole whatever the flags said (the L1 table may
        // also be linked at other VAs); otherwise exactly what the guest asked for.
        if self.frames.take_hw_flush() {
            self.platform.flush_tlb();
        } else if r.is_ok() {
            match flags & UVMF_FLUSHTYPE_MASK {
                UVMF_TLB_FLUSH => self.platform.flush_tlb(),
                UVMF_INVLPG => self.platform.invlpg(va),
                _ => {}
            }
        }
        match r {
            Ok(()) => Ok(0),
            Err(Stop::Fail(e)) => Err(e),
            Err(Stop::Preempted) => Err(Errno::EINVAL),
        }
    }

    /// `update_va_mapping_otherdomain(va, val, flags, domid)`: Xen 4.17's `get_pg_owner`
    /// first (`DOMID_SELF` is the caller; its own number or an unknown domain -ESRCH;
    /// `DOMID_XEN` and `DOMID_IO` are dom_xen and dom_io), then for another owner its XSM
    /// check refuses a domU (-EPERM). The control domain may map another domain's frames
    /// on Xen; not here: -ESRCH, as in mmu_update.
    pub(crate) fn update_va_mapping_otherdomain(
        &mut self,
        idx: usize,
        va: u64,
        val: u64,
        flags: u64,
        domid: u16,
    ) -> HcResult {
        if self.foreign_owner(idx, u32::from(domid), false)? {
            return Err(if self.domains[idx].dom0 {
                Errno::ESRCH
            } else {
                Errno::EPERM
            });
        }
        self.update_va_mapping(idx, va, val, flags)
    }

    /// `vm_assist(cmd, type)`, in Xen 4.17's order: a type outside what Xen accepts for a
    /// 64-bit PV domain is -EINVAL, then an unknown command -ENOSYS. Disabling any of
    /// them is 0. Enabling records the bit for the assists that change nothing here:
    /// the 4 GiB segment ones and `pae_extended_cr3` (32-bit guests only),
    /// `architectural_iopl` (no domain has I/O ports), `runstate_update_flag` (no
    /// runstate area can be registered). Enabling `writable_pagetables` (the guest would
    /// then write its page tables directly and expect the writes to be emulated) or
    /// `m2p_strict` (its user page tables would have to lose the read-only M2P) stays
    /// -EINVAL: a deviation, which Linux and Mini-OS ignore.
    pub(crate) fn vm_assist(&mut self, idx: usize, cmd: u32, ty: u32) -> HcResult {
        const ACCEPTED: u64 = 1 << VMASST_TYPE_4GB_SEGMENTS
            | 1 << VMASST_TYPE_4GB_SEGMENTS_NOTIFY
            | 1 << VMASST_TYPE_PAE_EXTENDED_CR3
            | 1 << VMASST_TYPE_ARCHITECTURAL_IOPL
            | 1 << VMASST_TYPE_RUNSTATE_UPDATE_FLAG;
        const XEN_PV64: u64 =
            ACCEPTED | 1 << VMASST_TYPE_WRITABLE_PAGETABLES | 1 << VMASST_TYPE_M2P_STRICT;
        let bit = 1u64.checked_shl(ty).unwrap_or(0);
        if bit & XEN_PV64 == 0 {
            return Err(Errno::EINVAL);
        }
        let d = &mut self.domains[idx];
        match cmd {
            VMASST_CMD_ENABLE if bit & ACCEPTED != 0 => d.vm_assist |= bit,
            VMASST_CMD_ENABLE => return Err(Errno::EINVAL),
            VMASST_CMD_DISABLE => d.vm_assist &= !bit,
            _ => return Err(Errno::ENOSYS),
        }
        Ok(0)
    }
}

#[cfg(test)]
#[path = "hypercalls_tests.rs"]
mod tests;
