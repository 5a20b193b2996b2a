//! The hypervisor's run-time state and its entry points from the arch layer.
//!
//! INTERFACE STUB: filled in by the runtime work. Signatures are the contract with
//! `arch/`.

use crate::memory::{FrameInfo, Frames};
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use core::ops::Range;

/// What the arch layer hands the core at boot.
pub struct BootConfig<'a> {
    /// Free RAM (machine addresses) after carving out low memory, the hypervisor image,
    /// the boot module and firmware areas.
    pub free_ram: &'a [Range<u64>],
    /// Frame table storage, `MAX_FRAMES` long.
    pub frame_table: &'static mut [FrameInfo],
    /// m2p storage, `MAX_FRAMES` long, mapped read-only at MACH2PHYS_VIRT_START in guests.
    pub m2p: &'static mut [u64],
    /// L4 entries for slots 256..=271, copied into every guest L4.
    pub hypervisor_l4_slots: [u64; 16],
    /// The hypervisor's command line.
    pub cmdline: &'a [u8],
}

/// The hypervisor.
pub struct Hypervisor<M: MachineMemory, P: Platform> {
    mem: M,
    platform: P,
    frames: Frames,
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Creates the hypervisor state.
    pub fn new(mem: M, platform: P, cfg: BootConfig<'_>) -> Self {
        let frames = Frames::new(cfg.frame_table, cfg.m2p, cfg.free_ram);
        Hypervisor {
            mem,
            platform,
            frames,
        }
    }
    /// Builds one domain per guest of the boot module; refusals are reported on the console.
    pub fn create_domains(&mut self, module: &[u8]) {
        let _ = (module, &self.mem, &self.platform, &self.frames);
        todo!()
    }
    /// Returns RAM (the boot module, once the domains are built) to the allocator.
    pub fn release_ram(&mut self, range: Range<u64>) {
        self.frames.release_ram(range)
    }
    /// Chooses the first domain to run and writes its registers into `frame`.
    pub fn start(&mut self, frame: &mut GuestFrame) -> Resume {
        let _ = frame;
        todo!()
    }
    /// A `syscall` from the running guest (`frame.vector == GuestFrame::VECTOR_SYSCALL`).
    pub fn hypercall(&mut self, frame: &mut GuestFrame) -> Resume {
        let _ = frame;
        todo!()
    }
    /// An exception taken while the guest ran (`frame.vector`, `frame.error_code`; `cr2`
    /// for a page fault).
    pub fn guest_exception(&mut self, frame: &mut GuestFrame, cr2: u64) -> Resume {
        let _ = (frame, cr2);
        todo!()
    }
}
