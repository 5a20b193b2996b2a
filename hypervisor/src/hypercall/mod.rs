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
use crate::hv::Hypervisor;
use crate::mmu::guest::{copy_from_guest, copy_to_guest};
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use guest_abi::Errno;
use handle::{Call, Flow};
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

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Every hypercall except the `xen_version(XENVER_version)` fast path.
    #[inline(never)]
    pub(crate) fn dispatch(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.current else {
            return self.no_current_domain();
        };
        let number = frame.rax;
        let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8];
        let dom = self.domains[idx].id.0;
        let mut call = Call { idx, frame };
        let resume = match generated::dispatch(self, &mut call, number, args) {
            Flow::Return(ret) => {
                frame.rax = to_rax(ret);
                hv_trace!(
                    "hypercall d{=u16} nr={=u64} args={:#x} -> {=i64}",
                    dom,
                    number,
                    args,
                    frame.rax as i64
                );
                self.resume_current()
            }
            Flow::Resume(resume) => {
                hv_trace!(
                    "hypercall d{=u16} nr={=u64} args={:#x} -> switched domains",
                    dom,
                    number,
                    args
                );
                resume
            }
        };
        self.resume_if_returnable(frame, resume)
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

    /// Writes `data` to the running domain's VA `va`.
    pub(crate) fn write_guest(&self, idx: usize, va: u64, data: &[u8]) -> Result<(), Errno> {
        copy_to_guest(&self.mem, &self.frames, self.current_space(idx), va, data)
    }
}
