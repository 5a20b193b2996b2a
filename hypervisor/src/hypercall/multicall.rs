//! `multicall` (13): a batch of hypercalls, each dispatched as if the guest had made it,
//! its result written back into its entry.
//!
//! Not allowed inside a batch (result `-EINVAL`): `multicall` itself and `iret`. If an
//! entry ends or switches away from the caller (yield, shutdown, crash), the rest of the
//! batch is dropped.
//!
//! No entry into the hypervisor does unbounded work (a guest could otherwise stall every
//! domain with a huge batch of entries, or of mmu_update elements, over one aliased
//! page): after [`MULTICALL_BATCH`] entries the multicall is continued Xen-style (the
//! guest's `syscall` re-executed with the rest of the list), and an entry that itself
//! made a continuation (a long `mmu_update`/`mmuext_op`) gets its remaining arguments
//! written back into the entry and the multicall continued at that entry, as Xen does.

use super::to_rax;
use crate::hv::Hypervisor;
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use guest_abi::mmu::MulticallEntry;
use guest_abi::{Errno, nr};
use zerocopy::IntoBytes;

/// `GuestFrame::vector` of a hypercall made from inside a multicall.
pub const VECTOR_MULTICALL: u64 = 0x101;
/// Byte offset of `result` in an entry.
const RESULT_OFFSET: u64 = 8;
/// Byte offset of `args` in an entry.
const ARGS_OFFSET: u64 = 16;
/// Entries run per entry into the hypervisor before a continuation.
pub const MULTICALL_BATCH: u64 = 64;
/// Length of the `syscall` instruction, to re-execute it for a continuation.
const SYSCALL_LEN: u64 = 2;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `multicall(list, nr_calls)` from the running domain.
    pub(crate) fn multicall(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        let (list, count) = (frame.rdi, frame.rsi as u32);
        let caller = *frame;
        for i in 0..u64::from(count) {
            let Some(at) = list.checked_add(i * 64) else {
                frame.rax = to_rax(Err(Errno::EFAULT));
                return self.resume_current();
            };
            if i >= MULTICALL_BATCH {
                return self.continue_multicall(frame, at, u64::from(count) - i);
            }
            let entry: MulticallEntry = match self.read_guest(idx, at) {
                Ok(e) => e,
                Err(e) => {
                    frame.rax = to_rax(Err(e));
                    return self.resume_current();
                }
            };
            let result = match u32::try_from(entry.op) {
                Ok(nr::MULTICALL | nr::IRET) => to_rax(Err(Errno::EINVAL)),
                _ => {
                    let mut call = GuestFrame {
                        rax: entry.op,
                        rdi: entry.args[0],
                        rsi: entry.args[1],
                        rdx: entry.args[2],
                        r10: entry.args[3],
                        r8: entry.args[4],
                        vector: VECTOR_MULTICALL,
                        ..caller
                    };
                    let resume = self.hypercall(&mut call);
                    if self.current != Some(idx) || matches!(resume, Resume::Exit(_)) {
                        return self.multicall_switched(idx, &caller, at, call, resume, frame);
                    }
                    if call.rip != caller.rip {
                        // The entry made a continuation: keep its remaining arguments
                        // in the entry and run it again when the multicall continues.
                        let args = [call.rdi, call.rsi, call.rdx, call.r10, call.r8];
                        if let Err(e) = self.write_guest(idx, at + ARGS_OFFSET, args.as_bytes()) {
                            frame.rax = to_rax(Err(e));
                            return self.resume_current();
                        }
                        return self.continue_multicall(frame, at, u64::from(count) - i);
                    }
                    call.rax
                }
            };
            let wrote = self.write_guest(idx, at + RESULT_OFFSET, result.as_bytes());
            if let Err(e) = wrote {
                frame.rax = to_rax(Err(e));
                return self.resume_current();
            }
        }
        frame.rax = 0;
        self.resume_current()
    }

    /// An entry switched away from the caller: the caller, if it still runs, resumes
    /// after the multicall with its result written; the arch gets `next`'s registers.
    /// Turns the current `syscall` into a continuation of the multicall with the `left`
    /// entries from `at` on.
    fn continue_multicall(&mut self, frame: &mut GuestFrame, at: u64, left: u64) -> Resume {
        frame.rip = frame.rip.wrapping_sub(SYSCALL_LEN);
        frame.rax = u64::from(nr::MULTICALL);
        (frame.rdi, frame.rsi) = (at, left);
        self.resume_current()
    }

    fn multicall_switched(
        &mut self,
        idx: usize,
        caller: &GuestFrame,
        at: u64,
        next: GuestFrame,
        resume: Resume,
        frame: &mut GuestFrame,
    ) -> Resume {
        if self.domains[idx].is_runnable() {
            let result = self.domains[idx].vcpu.frame.rax;
            let _ = self.write_guest(idx, at + RESULT_OFFSET, result.as_bytes());
            self.domains[idx].vcpu.frame = GuestFrame { rax: 0, ..*caller };
        }
        *frame = next;
        resume
    }
}
