//! Hypercall dispatch and handlers.
//!
//! Arguments arrive in rdi, rsi, rdx, r10, r8 (Xen's 64-bit PV convention); the result
//! goes to rax, errors as negative Xen errno values. Every guest pointer goes through
//! `copy_from_guest` / `copy_to_guest`; a bad one is `-EFAULT`. Xen declares command
//! arguments as C `int`/`unsigned int`, so only their low 32 bits count, as in Xen.
//!
//! Implemented: console_io, xen_version, sched_op, sched_op_compat and
//! event_channel_op (send). Everything else is `-ENOSYS`.

mod console_io;
mod evtchn;
pub(crate) mod grant_table;
mod memory_op;
pub mod mmu;
pub mod multicall;
mod sched;
mod xen_version;

pub use console_io::{CONSOLE_IO_CHUNK, CONSOLE_IO_MAX_PER_CALL};
pub use xen_version::{CAPABILITIES, CHANGESET, EXTRAVERSION};

use crate::hv::Hypervisor;
use crate::memory::guest::{copy_from_guest, copy_to_guest};
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use guest_abi::{Errno, nr};
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
        let (a1, a2, a3) = (frame.rdi, frame.rsi, frame.rdx);
        // A number beyond u32 is as unknown as 99.
        let ret = match u32::try_from(frame.rax) {
            Ok(nr::XEN_VERSION) => self.xen_version(idx, a1 as u32, a2),
            Ok(nr::CONSOLE_IO) => self.console_io(idx, a1 as u32, a2 as u32, a3),
            Ok(nr::SCHED_OP) => return self.sched_op(idx, frame),
            Ok(nr::SCHED_OP_COMPAT) => return self.sched_op_compat(idx, frame),
            Ok(nr::EVENT_CHANNEL_OP) => return self.event_channel_op(idx, frame),
            Ok(nr::MMU_UPDATE) => return self.mmu_update(idx, frame),
            Ok(nr::MMUEXT_OP) => return self.mmuext_op(idx, frame),
            Ok(nr::MULTICALL) => return self.multicall(idx, frame),
            Ok(nr::UPDATE_VA_MAPPING) => self.update_va_mapping(idx, a1, a2, a3),
            Ok(nr::VM_ASSIST) => self.vm_assist(a1 as u32, a2 as u32),
            Ok(nr::MEMORY_OP) => self.memory_op(idx, a1, a2),
            Ok(nr::GRANT_TABLE_OP) => return self.grant_table_op(idx, frame),
            _ => Err(Errno::ENOSYS),
        };
        frame.rax = to_rax(ret);
        self.resume_current()
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
