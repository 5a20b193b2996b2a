//! `memory_op` (12), the basics: `maximum_ram_page`, `current_reservation`,
//! `maximum_reservation`, `memory_map` (`-ENOSYS`: no map was set, Xen's answer) and
//! `machphys_mapping`, and `add_to_physmap` refused as Xen 4.17 refuses it for a PV
//! (non-translated) domain. Everything else is `-ENOSYS`.

use crate::hv::Hypervisor;
use crate::hypercall::HcResult;
use crate::hypercall::handle::{GuestHandle, Untyped};
use crate::mmu::MAX_FRAMES;
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::grant_table::{XENMAPSPACE_GMFN_FOREIGN, XenAddToPhysmap};
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
                // Memory is fixed at build time, less what GNTTABOP_transfer gave away.
                let d = &self.domains[target];
                if cmd & MEMOP_CMD_MASK == XENMEM_CURRENT_RESERVATION {
                    Ok(d.nr_pages.saturating_sub(d.grant.transferred_out()))
                } else {
                    Ok(d.nr_pages)
                }
            }
            XENMEM_MEMORY_MAP => Err(Errno::ENOSYS),
            XENMEM_ADD_TO_PHYSMAP => self.add_to_physmap(idx, cmd, arg),
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

    /// `XENMEM_add_to_physmap`: Xen's checks in its order (`memory.c`): a continuation
    /// start that does not fit the 16-bit `size` is `-EDOM`, an unreadable argument
    /// `-EFAULT`, `XENMAPSPACE_gmfn_foreign` `-ENOSYS`, an unknown domain `-ESRCH`, and
    /// then `xatp_permission_check` answers `-EACCES` for every PV domain: nothing in a
    /// PV guest's frame space is remapped, grant and status frames included (a PV guest
    /// gets their MFNs from `setup_table` / `get_status_frames` and maps them itself).
    fn add_to_physmap(&mut self, idx: usize, cmd: u64, arg: GuestHandle<Untyped>) -> HcResult {
        const MEMOP_EXTENT_SHIFT: u32 = 6;
        if cmd >> MEMOP_EXTENT_SHIFT > u64::from(u16::MAX) {
            return Err(Errno::EDOM);
        }
        let xatp = self.read_handle::<XenAddToPhysmap>(idx, arg.cast())?;
        if xatp.space == XENMAPSPACE_GMFN_FOREIGN {
            return Err(Errno::ENOSYS);
        }
        let me = self.domains[idx].id;
        let known = xatp.domid == DomId::SELF
            || xatp.domid == me
            || self.existing_slot(xatp.domid).is_some();
        if !known {
            return Err(Errno::ESRCH);
        }
        // Every domain here is PV: `!paging_mode_translate(d)`.
        Err(Errno::EACCES)
    }

    /// The domain a reservation query names: itself (DOMID_SELF or its id); dom0 may
    /// ask about any domain, others get `-EPERM`; an unknown id is `-ESRCH`.
    fn domain_for_memop(&self, idx: usize, domid: DomId) -> Result<usize, Errno> {
        let me = &self.domains[idx];
        if domid == DomId::SELF || domid == me.id {
            return Ok(idx);
        }
        let other = self.existing_slot(domid).ok_or(Errno::ESRCH)?;
        if me.dom0 {
            Ok(other)
        } else {
            Err(Errno::EPERM)
        }
    }
}
