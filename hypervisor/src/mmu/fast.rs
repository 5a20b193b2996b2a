//! The MMU hypercalls without the generic dispatch: `mmu_update`, `mmuext_op` and
//! `update_va_mapping` go from the top of `Hypervisor::dispatch` straight to their
//! handlers, with
//! the arguments typed exactly as the generated dispatch types them, and their outcome
//! carried out as `dispatch` does (the same trace line, `apply_outcome` for anything but
//! a plain return, then `resume_if_returnable`). A multicall entry of theirs runs them
//! the same way ([`Hypervisor::mmu_call`]). What Xen does not do here: nothing — this
//! only skips building the generic `Call` and the dispatch `match`.

use crate::dlog::hv_trace;
use crate::hv::Hypervisor;
use crate::hypercall::handle::{GuestArray, GuestHandle, Outcome};
use crate::hypercall::to_rax;
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use xen_pv_abi::layout::{in_hypervisor_range, is_canonical};
use xen_pv_abi::mmu::{
    MMUEXT_INVLPG_ALL, MMUEXT_INVLPG_LOCAL, MMUEXT_TLB_FLUSH_ALL, MMUEXT_TLB_FLUSH_LOCAL, MmuextOp,
};
use xen_pv_abi::nr;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Runs MMU hypercall `number` (one of the three) of domain `idx` with `args`.
    pub(crate) fn mmu_call(&mut self, idx: usize, number: u64, args: [u64; 5]) -> Outcome {
        // As the generated dispatch: counts and foreigndom are C `unsigned int`s.
        let list = |size_arg: u64| u64::from(size_arg as u32);
        if number == u64::from(nr::MMU_UPDATE) {
            self.mmu_update(
                idx,
                GuestArray::new(args[0], list(args[1])),
                GuestHandle::new(args[2]),
                args[3] as u32,
            )
        } else if number == u64::from(nr::MMUEXT_OP) {
            let first = match self.mmuext_flush_only(idx, args) {
                Ok(done) => return done,
                Err(first) => first,
            };
            self.mmuext_op_first(
                idx,
                GuestArray::new(args[0], list(args[1])),
                GuestHandle::new(args[2]),
                args[3] as u32,
                first,
            )
        } else {
            Outcome::from(self.update_va_mapping(idx, args[0], args[1], args[2]))
        }
    }

    /// `mmuext_op` of one TLB flush or invlpg op (the commonest call, and one that
    /// changes no page table): what the batch would do for it, without the batch
    /// bookkeeping. `Err` (nothing done) for anything else, the op unreadable included:
    /// the batch then runs it from the start, with the op if it was read (`(va, op)`).
    fn mmuext_flush_only(
        &mut self,
        idx: usize,
        args: [u64; 5],
    ) -> Result<Outcome, Option<(u64, MmuextOp)>> {
        let (list, count, pdone, foreigndom) = (args[0], args[1] as u32, args[2], args[3]);
        if count != 1
            || !self.foreigndom_is_self(idx, foreigndom as u32)
            || self.cur(idx).old_table.is_some()
        {
            return Err(None);
        }
        let op: MmuextOp = self.read_guest(idx, list).map_err(|_| None)?;
        match op.cmd {
            MMUEXT_TLB_FLUSH_LOCAL | MMUEXT_TLB_FLUSH_ALL => self.platform.flush_tlb(),
            MMUEXT_INVLPG_LOCAL | MMUEXT_INVLPG_ALL => {
                if is_canonical(op.arg1) && !in_hypervisor_range(op.arg1) {
                    self.platform.invlpg(op.arg1);
                }
            }
            _ => return Err(Some((list, op))),
        }
        if pdone != 0 {
            // As the batch: one element done, a bad pdone does not change the result.
            let _ = self.write_guest(idx, pdone, &1u32.to_le_bytes());
        }
        Ok(Outcome::Return(Ok(0)))
    }

    /// Whether `number` is one of the three MMU hypercalls [`Self::mmu_call`] runs.
    pub(crate) fn is_mmu_call(number: u64) -> bool {
        number == u64::from(nr::MMU_UPDATE)
            || number == u64::from(nr::MMUEXT_OP)
            || number == u64::from(nr::UPDATE_VA_MAPPING)
    }

    /// Runs MMU hypercall `number` of the running domain `idx` from its registers and
    /// carries out the outcome as `dispatch` does.
    pub(crate) fn mmu_hypercall(
        &mut self,
        idx: usize,
        number: u64,
        frame: &mut GuestFrame,
    ) -> Resume {
        let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8];
        let outcome = self.mmu_call(idx, number, args);
        let dom = self.domains[idx].id.0;
        let resume = if let Outcome::Return(r) = outcome {
            frame.rax = to_rax(r);
            hv_trace!(
                "hypercall d{=u16} nr={=u64} args={:#x} -> {=i64}",
                dom,
                number,
                args,
                frame.rax as i64
            );
            self.resume_current()
        } else {
            hv_trace!(
                "hypercall d{=u16} nr={=u64} args={:#x} -> {}",
                dom,
                number,
                args,
                outcome.trace_word()
            );
            self.apply_outcome(idx, number, frame, outcome)
        };
        self.resume_if_returnable(frame, resume)
    }
}
