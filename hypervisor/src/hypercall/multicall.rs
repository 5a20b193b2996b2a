//! `multicall` (13): a batch of hypercalls, each dispatched as if the guest had made it,
//! its result written back into its entry.
//!
//! Not allowed inside a batch (result `-EINVAL`): `multicall` itself and `iret`. An entry
//! that shuts down or crashes the domain drops the rest of the batch. An entry that
//! yields or blocks ends this pass: its result is written and the multicall is continued
//! at the next entry once the vCPU runs again (Xen runs the rest of the batch before the
//! vCPU is descheduled; the guest sees the same results either way).
//!
//! Entries of `xen_version(XENVER_version)` and of the MMU hypercalls skip the generic
//! dispatch (their handlers need no registers); results are the same.
//!
//! No entry into the hypervisor does unbounded work (a guest could otherwise stall every
//! domain with a huge batch of entries, or of mmu_update elements, over one aliased
//! page): after [`MULTICALL_BATCH`] entries the multicall is continued Xen-style (the
//! guest's `syscall` re-executed with the rest of the list), and an entry that itself
//! made a continuation (a long `mmu_update`/`mmuext_op`) gets its remaining arguments
//! written back into the entry and the multicall continued at that entry, as Xen does.

use super::generated;
use super::handle::{Call, GuestArray, Outcome, Pause};
use super::to_rax;
use crate::hv::{Hypervisor, XEN_VERSION_NUMBER};
use crate::mmu::guest::{copy_from_guest, translate};
use crate::platform::{GuestFrame, MachineMemory, Platform};
use core::mem::{offset_of, size_of};
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::mmu::MulticallEntry;
use xen_pv_abi::version::XENVER_VERSION;
use xen_pv_abi::{Errno, nr};
use zerocopy::IntoBytes;

/// `GuestFrame::vector` of a hypercall made from inside a multicall.
pub const VECTOR_MULTICALL: u64 = 0x101;
/// Byte offset of `result` in an entry.
const RESULT_OFFSET: u64 = offset_of!(MulticallEntry, result) as u64;
/// Byte offset of `args` in an entry.
const ARGS_OFFSET: u64 = offset_of!(MulticallEntry, args) as u64;
/// Bytes per entry.
const ENTRY_SIZE: u64 = size_of::<MulticallEntry>() as u64;
/// Entries run per entry into the hypervisor before a continuation.
pub const MULTICALL_BATCH: u64 = 64;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `multicall(list, nr_calls)` from the running vCPU `call`; each entry runs as a
    /// call from the same vCPU.
    pub(crate) fn multicall(
        &mut self,
        call: &Call<'_>,
        calls: GuestArray<MulticallEntry>,
    ) -> Outcome {
        let (idx, frame) = (call.idx, &*call.frame);
        // The count is a C `unsigned int`.
        let count = u64::from(calls.len() as u32);
        let mut ahead = ReadAhead::new();
        for i in 0..count {
            crate::work::step(1);
            let Some(at) = calls.get(i).map(|h| h.addr()) else {
                return Outcome::Return(Err(Errno::EFAULT));
            };
            let rest = count - i;
            if i >= MULTICALL_BATCH {
                return continue_at(at, rest, None);
            }
            let entry: MulticallEntry = match ahead.entry(self, idx, at, rest) {
                Ok(e) => e,
                Err(e) => return Outcome::Return(Err(e)),
            };
            let pure = match u32::try_from(entry.op) {
                Ok(nr::MULTICALL | nr::IRET) => true,
                Ok(nr::XEN_VERSION) => entry.args[0] as u32 == XENVER_VERSION,
                _ => false,
            };
            if !pure {
                // It may change guest memory or mappings: what was read ahead is read
                // again.
                ahead.forget();
            }
            let outcome = match u32::try_from(entry.op) {
                Ok(nr::MULTICALL | nr::IRET) => Outcome::Return(Err(Errno::EINVAL)),
                // What the generic xen_version handler answers, without building a call.
                Ok(nr::XEN_VERSION) if entry.args[0] as u32 == XENVER_VERSION => {
                    Outcome::Return(Ok(XEN_VERSION_NUMBER))
                }

                // The MMU hypercalls only use the domain, never the registers.
                _ if Self::is_mmu_call(entry.op) => {
                    let [a0, a1, a2, a3, a4, _] = entry.args;
                    self.mmu_call(idx, entry.op, [a0, a1, a2, a3, a4])
                }
                _ => {
                    let mut regs = GuestFrame {
                        vector: VECTOR_MULTICALL,
                        ..*frame
                    };
                    let mut inner = Call {
                        idx,
                        dom: call.dom,
                        vcpu: call.vcpu,
                        frame: &mut regs,
                    };
                    let [a0, a1, a2, a3, a4, _] = entry.args;
                    generated::dispatch(self, &mut inner, entry.op, [a0, a1, a2, a3, a4])
                }
            };
            let (result, pause) = match outcome {
                Outcome::Return(r) => (to_rax(r), None),
                Outcome::Yield => (0, Some(Pause::Yield)),
                Outcome::Block => (0, Some(Pause::Block)),
                Outcome::Poll => (0, Some(Pause::Poll)),
                Outcome::Continue { args, then } => {
                    // Run the entry again, with its remaining arguments, when the
                    // multicall continues.
                    let mut all = entry.args;
                    all[..5].copy_from_slice(&args);
                    if let Err(e) = self.write_guest(idx, at + ARGS_OFFSET, all.as_bytes()) {
                        return Outcome::Return(Err(e));
                    }
                    return continue_at(at, rest, then);
                }
                // The domain ends: the rest of the batch does not matter.
                end @ (Outcome::Shutdown(_) | Outcome::Crash(_)) => return end,
                // Only iret resumes a new register set, and it was refused above.
                Outcome::Resumed => (to_rax(Err(Errno::EINVAL)), None),
            };
            let written = if pure {
                ahead.write_result(self, idx, at, result)
            } else {
                self.write_guest(idx, at + RESULT_OFFSET, result.as_bytes())
            };
            if let Err(e) = written {
                return Outcome::Return(Err(e));
            }
            if let Some(pause) = pause {
                // The entry was readable, so the address after it does not overflow.
                return continue_at(at.wrapping_add(ENTRY_SIZE), rest - 1, Some(pause));
            }
        }
        Outcome::Return(Ok(0))
    }
}

/// Entries read ahead, in one copy, from the page of the current one: the entries a
/// multicall is made of are mostly ones that change nothing but their own result field
/// (`xen_version(XENVER_version)`, refused ones), after which the next entry reads the
/// same as it did. Anything else forgets them ([`ReadAhead::forget`]). Only whole entries
/// of the page the entry to run is on, and none past the list, are read: each read fails
/// exactly when reading that one entry would.
struct ReadAhead {
    entries: [MulticallEntry; READ_AHEAD],
    /// Guest VA of `entries[0]`.
    at: u64,
    /// Valid entries.
    len: usize,
    /// Machine address of `entries[0]` in guest memory if the page is writable to the
    /// guest (what `copy_to_guest` would write to): results of entries that changed
    /// nothing are written there.
    maddr: Option<u64>,
}

/// Entries [`ReadAhead`] reads at once.
const READ_AHEAD: usize = 8;

impl ReadAhead {
    fn new() -> Self {
        ReadAhead {
            entries: [MulticallEntry::default(); READ_AHEAD],
            at: 0,
            len: 0,
            maddr: None,
        }
    }

    /// Writes `result` into the entry at `at` as `write_guest` would: where the
    /// read-ahead found its page writable, if the entry is one read ahead (only entries
    /// that changed nothing ran since, so the translation is the same).
    fn write_result<M: MachineMemory, P: Platform>(
        &self,
        hv: &Hypervisor<M, P>,
        idx: usize,
        at: u64,
        result: u64,
    ) -> Result<(), Errno> {
        let off = at.wrapping_sub(self.at);
        match self.maddr {
            Some(maddr) if at >= self.at && off / ENTRY_SIZE < self.len as u64 => hv
                .mem
                .write(maddr + off + RESULT_OFFSET, result.as_bytes())
                .map_err(|_| Errno::EFAULT),
            _ => hv.write_guest(idx, at + RESULT_OFFSET, result.as_bytes()),
        }
    }

    fn forget(&mut self) {
        self.len = 0;
    }

    /// The entry at guest VA `at`, `rest` entries being left in the list (`rest >= 1`).
    fn entry<M: MachineMemory, P: Platform>(
        &mut self,
        hv: &Hypervisor<M, P>,
        idx: usize,
        at: u64,
        rest: u64,
    ) -> Result<MulticallEntry, Errno> {
        let k = at.wrapping_sub(self.at) / ENTRY_SIZE;
        if at >= self.at
            && at.wrapping_sub(self.at).is_multiple_of(ENTRY_SIZE)
            && k < self.len as u64
        {
            return Ok(self.entries[k as usize]);
        }
        let page = PAGE_SIZE as u64;
        let in_page = (page - (at & (page - 1))) / ENTRY_SIZE;
        let n = in_page.min(rest).min(READ_AHEAD as u64) as usize;
        self.len = 0;
        if n == 0 {
            // The entry straddles a page boundary.
            return hv.read_guest(idx, at);
        }
        let space = hv.current_space(idx);
        copy_from_guest(
            &hv.mem,
            &hv.frames,
            space,
            at,
            self.entries[..n].as_mut_bytes(),
        )?;
        self.at = at;
        self.len = n;
        self.maddr = translate(&hv.mem, &hv.frames, space, at, true).ok();
        Ok(self.entries[0])
    }
}

/// The multicall continued with the `left` entries from `at` on.
fn continue_at(at: u64, left: u64, then: Option<Pause>) -> Outcome {
    Outcome::Continue {
        args: [at, left, 0, 0, 0],
        then,
    }
}
