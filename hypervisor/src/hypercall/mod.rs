//! Hypercall dispatch and handlers.
//!
//! Arguments arrive in rdi, rsi, rdx, r10, r8 (Xen's 64-bit PV convention); the result
//! goes to rax, errors as negative Xen errno values. Every guest pointer goes through
//! `copy_from_guest` / `copy_to_guest`; a bad one is `-EFAULT`. Xen declares command
//! arguments as C `int`/`unsigned int`, so only their low 32 bits count, as in Xen.
//!
//! Which hypercalls exist, their numbers and argument types come from the one definition
//! `hypercall-gen/hypercalls.toml`: `generated.rs` (do not edit; `cargo xtask gen`) holds
//! the [`generated::Hypercalls`] trait and its `dispatch`; `handlers.rs` implements the
//! trait, each method calling the handler in that hypercall's own file.
//! `docs/hypercalls.md` lists every hypercall and its status; anything not implemented
//! is `-ENOSYS`.

pub(crate) mod generated;
pub mod handle;
mod handlers;
pub mod multicall;
mod xen_version;

pub use crate::console::console_io::{CONSOLE_IO_CHUNK, CONSOLE_IO_MAX_PER_CALL};
pub use xen_version::{CAPABILITIES, CHANGESET, EXTRAVERSION};

use crate::dlog::hv_trace;
use crate::domain::runtime::DomainState;
use crate::hv::Hypervisor;
use crate::mmu::guest::{copy_from_guest, copy_to_guest};
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use handle::{Call, Outcome, Pause};
use xen_pv_abi::Errno;
use zerocopy::{FromBytes, IntoBytes};

/// What a handler that never switches domains returns.
pub(crate) type HcResult = Result<u64, Errno>;

/// The value for rax.
pub(crate) fn to_rax(r: HcResult) -> u64 {
    match r {
        Ok(v) => v,
        Err(e) => e.to_ret() as u64,
    }
}

/// Length of the `syscall` instruction: a continuation re-executes it.
pub(crate) const SYSCALL_LEN: u64 = 2;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Every hypercall without a fast path of its own (see [`Hypervisor::hypercall`]).
    ///
    /// The common cases, a handler returning a value or `iret` loading new registers,
    /// cost one jump-table dispatch and the return checks: the vCPU resumes (through its
    /// event callback if an upcall became due) without going through
    /// [`Self::apply_outcome`].
    #[inline(never)]
    pub(crate) fn dispatch(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.cpu.current else {
            return self.no_current_domain();
        };
        let number = frame.rax;
        // mmu_update, mmuext_op, update_va_mapping: straight to their handlers.
        if Self::is_mmu_call(number) {
            return self.mmu_hypercall(idx, number, frame);
        }
        self.dispatch_generic(idx, frame)
    }

    /// Hypercall `frame.rax` of the running domain `idx` through the generated dispatch.
    #[inline(always)]
    pub(crate) fn dispatch_generic(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        let number = frame.rax;
        let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8];
        let mut call = Call {
            idx,
            dom: self.domains[idx].id,
            vcpu: self.cur_vcpu(idx),
            frame,
        };
        let outcome = generated::dispatch(self, &mut call, number, args);
        let dom = call.dom.0;
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
        } else if let Outcome::Resumed = outcome {
            // `iret` loaded a whole register set: resume it (checked below).
            hv_trace!(
                "hypercall d{=u16} nr={=u64} args={:#x} -> resumed",
                dom,
                number,
                args
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

    /// Carries out what hypercall `number` of domain `idx` asked for (`frame` holds the
    /// caller's registers).
    pub(crate) fn apply_outcome(
        &mut self,
        idx: usize,
        number: u64,
        frame: &mut GuestFrame,
        outcome: Outcome,
    ) -> Resume {
        match outcome {
            Outcome::Return(r) => {
                frame.rax = to_rax(r);
                self.resume_current()
            }
            Outcome::Resumed => self.resume_current(),
            Outcome::Continue { args, then } => {
                frame.rip = frame.rip.wrapping_sub(SYSCALL_LEN);
                frame.rax = number;
                [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8] = args;
                match then {
                    None => self.resume_current(),
                    Some(Pause::Yield) => self.yield_current(idx, frame),
                    Some(Pause::Block) => self.block_current(idx, frame),
                    Some(Pause::Poll) => self.block_vcpu(idx, frame),
                }
            }
            Outcome::Yield => {
                frame.rax = 0;
                self.yield_current(idx, frame)
            }
            Outcome::Block => {
                frame.rax = 0;
                self.block_current(idx, frame)
            }
            Outcome::Poll => {
                frame.rax = 0;
                self.block_vcpu(idx, frame)
            }
            Outcome::Shutdown(reason) => self.shutdown(idx, reason, frame),
            Outcome::Crash(why) => {
                self.end_domain(idx, DomainState::Crashed, format_args!("crashed: {why}"));
                self.schedule(frame)
            }
        }
    }

    /// Reads a `T` from the running domain's VA `va`.
    pub(crate) fn read_guest<T: FromBytes + IntoBytes>(
        &self,
        idx: usize,
        va: u64,
    ) -> Result<T, Errno> {
        let mut value = T::new_zeroed();
        copy_from_guest(
            &self.mem,
            &self.frames,
            self.current_space(idx),
            va,
            value.as_mut_bytes(),
        )?;
        Ok(value)
    }

    /// Writes `data` to the running domain's VA `va`. Out of line: its callers mostly
    /// write a result on a cold path, which should not make them save registers.
    #[inline(never)]
    pub(crate) fn write_guest(&self, idx: usize, va: u64, data: &[u8]) -> Result<(), Errno> {
        copy_to_guest(&self.mem, &self.frames, self.current_space(idx), va, data)
    }
}
