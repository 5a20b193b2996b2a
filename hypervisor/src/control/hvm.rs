//! `hvm_op` (34): `HVMOP_get_param` for the control domain, which finds each boot-built
//! domU's xenstore and console rings and event channels with it (as Xen's init-dom0less
//! does for the domains Xen built). Xen answers these parameters for HVM guests only
//! (-EINVAL for a PV domain): answering them for PV domains, to the control domain only,
//! is a documented deviation (docs/ARCHITECTURE.md). `HVMOP_set_param` answers what Xen
//! answers for a PV target; every other operation -ENOSYS.

use crate::hv::Hypervisor;
use crate::hypercall::HcResult;
use crate::hypercall::handle::{GuestHandle, Untyped};
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::hvm::{
    HVM_NR_PARAMS, HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN, HVM_PARAM_STORE_EVTCHN,
    HVM_PARAM_STORE_PFN, HVMOP_GET_PARAM, HVMOP_SET_PARAM, XenHvmParam,
};
use xen_pv_abi::{DomId, Errno};

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `hvm_op(op, arg)` from domain `idx` (the running one).
    pub(crate) fn do_hvm_op(&mut self, idx: usize, op: u64, arg: GuestHandle<Untyped>) -> HcResult {
        match op {
            HVMOP_GET_PARAM => self.hvm_get_param(idx, arg.cast()),
            HVMOP_SET_PARAM => {
                let req: XenHvmParam = self.read_handle(idx, arg.cast())?;
                if req.index >= HVM_NR_PARAMS {
                    return Err(Errno::EINVAL);
                }
                self.hvm_target(idx, req.domid)?;
                // Every domain here is PV: Xen's answer for a PV target.
                Err(Errno::EINVAL)
            }
            _ => Err(Errno::ENOSYS),
        }
    }

    /// `HVMOP_get_param`: control domain only (-EPERM, before the target is looked up,
    /// so a domU cannot probe which domains exist); -ESRCH for an unknown domain;
    /// -EINVAL for any other index or a domain without that ring (the control domain).
    fn hvm_get_param(&mut self, idx: usize, h: GuestHandle<XenHvmParam>) -> HcResult {
        let mut req = self.read_handle(idx, h)?;
        if !self.domains[idx].dom0 {
            return Err(Errno::EPERM);
        }
        let t = self.hvm_target(idx, req.domid)?;
        let d = &self.domains[t];
        let (store, console) = (d.store_ring, d.console_ring);
        // PV: the guest's frame numbers are machine frame numbers.
        req.value = match req.index {
            HVM_PARAM_STORE_PFN => store.map(|(mfn, _)| mfn.0),
            HVM_PARAM_STORE_EVTCHN => store.map(|(_, port)| u64::from(port.0)),
            HVM_PARAM_CONSOLE_PFN => console.map(|(mfn, _)| mfn.0),
            HVM_PARAM_CONSOLE_EVTCHN => console.map(|(_, port)| u64::from(port.0)),
            _ => None,
        }
        .ok_or(Errno::EINVAL)?;
        self.write_handle(idx, h, &req)?;
        Ok(0)
    }

    /// The domain an HVM op names (`DOMID_SELF`: the caller); -ESRCH if it does not
    /// exist.
    fn hvm_target(&self, idx: usize, dom: DomId) -> Result<usize, Errno> {
        if dom == DomId::SELF {
            return Ok(idx);
        }
        self.existing(dom)
    }
}
