//! The domain builder: Xen's start-of-day layout of a 64-bit PV domain.
//!
//! INTERFACE STUB: filled in by the memory/builder work. Signatures are the contract with
//! `hv.rs`.

use crate::memory::Frames;
use crate::platform::{GuestFrame, MachineMemory};
use guest_abi::{DomId, EvtchnPort, Mfn};

/// Event channel of the xenstore ring in every domU (as `xl` allocates it).
pub const STORE_EVTCHN: EvtchnPort = EvtchnPort(1);
/// Event channel of the console ring in every domU.
pub const CONSOLE_EVTCHN: EvtchnPort = EvtchnPort(2);

/// What to build.
pub struct BuildParams<'a> {
    /// The new domain's id.
    pub domid: DomId,
    /// Kernel ELF image.
    pub image: &'a [u8],
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Build as the initial domain (dom0).
    pub dom0: bool,
    /// Command line for start_info.
    pub cmdline: &'a [u8],
    /// The hypervisor's L4 entries for slots 256..=271, copied into the guest's L4.
    pub hypervisor_l4_slots: &'a [u64; 16],
}

/// A built domain, ready to run.
#[derive(Debug)]
pub struct BuiltDomain {
    /// Registers at entry (rip, rsp, rsi = start_info VA, CS/SS = Xen's flat selectors,
    /// RFLAGS = IF).
    pub entry: GuestFrame,
    /// Machine address of the bootstrap L4 (the vCPU's CR3).
    pub cr3: u64,
    /// Pages given to the domain (= start_info.nr_pages).
    pub nr_pages: u64,
    /// The shared_info frame.
    pub shared_info: Mfn,
    /// Console ring frame and port (domU only).
    pub console: Option<(Mfn, EvtchnPort)>,
    /// Xenstore ring frame and port (domU only).
    pub store: Option<(Mfn, EvtchnPort)>,
}

/// Why a kernel image was refused; `Display` gives the one-line reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// Placeholder until the builder lands.
    Unimplemented,
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Builds a domain. On error every frame allocated for it has been freed again.
pub fn build<M: MachineMemory>(
    mem: &M,
    frames: &mut Frames,
    p: &BuildParams<'_>,
) -> Result<BuiltDomain, BuildError> {
    let _ = (mem, frames, p);
    Err(BuildError::Unimplemented)
}
