//! Checked access to a guest's virtual memory through the guest's own page tables.
//!
//! INTERFACE STUB: filled in by the memory/builder work.

use super::Frames;
use crate::platform::MachineMemory;
use guest_abi::{DomId, Errno};

/// The address space a guest pointer is resolved in.
#[derive(Clone, Copy, Debug)]
pub struct GuestSpace {
    /// Domain whose frames the walk may touch.
    pub dom: DomId,
    /// Machine address of the guest's L4 (its CR3).
    pub cr3: u64,
}

/// Copies `buf.len()` bytes from guest VA `va`. Any bad address is `Errno::EFAULT`.
pub fn copy_from_guest<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    buf: &mut [u8],
) -> Result<(), Errno> {
    let _ = (mem, frames, space, va, buf);
    todo!()
}

/// Copies `data` to guest VA `va` (needs writable mappings). Any bad address is `EFAULT`.
pub fn copy_to_guest<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    data: &[u8],
) -> Result<(), Errno> {
    let _ = (mem, frames, space, va, data);
    todo!()
}
