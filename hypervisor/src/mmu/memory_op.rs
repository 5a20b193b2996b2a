//! `memory_op` (12), the basics: `maximum_ram_page`, `current_reservation`,
//! `maximum_reservation`, `memory_map` (`-ENOSYS`: no map was set, Xen's answer) and
//! `machphys_mapping`. Everything else is `-ENOSYS`.

use crate::hv::Hypervisor;
use crate::hypercall::HcResult;
use crate::hypercall::handle::{GuestHandle, Untyped};
use crate::mmu::MAX_FRAMES;
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::layout::MACH2PHYS_VIRT_START;
use xen_pv_abi::mmu::*;
use xen_pv_abi::{DomId, Errno};

/// Bits 5..0 of the command are the sub-op (the rest is a continuation start extent).
const MEMOP_CMD_MASK: u64 = 0x3f;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `memory_op(cmd, arg)` from the running domain.
    pub(crate) fn memory_op(
        &mut self,
        idx: usize,
        cmd: u64,
        arg: GuestHandle<Untyped>,
    ) -> HcResult {
        match cmd & MEMOP_CMD_MASK {
            XENMEM_MAXIMUM_RAM_PAGE => Ok(self.frames.max_ram_mfn()),
            XENMEM_CURRENT_RESERVATION | XENMEM_MAXIMUM_RESERVATION => {
                let domid = self.read_handle::<DomId>(idx, arg.cast())?;
                let target = self.domain_for_memop(idx, domid)?;
                // Memory is fixed at build time: current = maximum.
                Ok(self.domains[target].nr_pages)
            }
            XENMEM_MEMORY_MAP => Err(Errno::ENOSYS),
            XENMEM_MACHPHYS_MAPPING => {
                let map = MachphysMapping {
                    v_start: MACH2PHYS_VIRT_START,
                    v_end: MACH2PHYS_VIRT_START + (MAX_FRAMES as u64) * 8,
                    max_mfn: MAX_FRAMES as u64 - 1,
                };
                self.write_handle(idx, arg.cast(), &map)?;
                Ok(0)
            }
            _ => Err(Errno::ENOSYS),
        }
    }

    /// The domain a reservation query names: itself (DOMID_SELF or its id); dom0 may
    /// ask about any domain, others get `-EPERM`; an unknown id is `-ESRCH`.
    fn domain_for_memop(&self, idx: usize, domid: DomId) -> Result<usize, Errno> {
        let me = &self.domains[idx];
        if domid == DomId::SELF || domid == me.id {
            return Ok(idx);
        }
        let other = self
            .domains
            .iter()
            .position(|d| d.id == domid && d.is_runnable())
            .ok_or(Errno::ESRCH)?;
        if me.dom0 {
            Ok(other)
        } else {
            Err(Errno::EPERM)
        }
    }
}
