//! The toolstack's privileged control hypercalls, for the control domain only:
//! `domctl` (36) getdomaininfo, pausedomain, unpausedomain, destroydomain and `sysctl`
//! (35) getdomaininfolist, with Xen 4.17's numbers, layouts and errors; and
//! `hvm_op` (34) `HVMOP_get_param` for the domUs' rings and ports (`hvm.rs`).
//!
//! Order of the checks (every guest value is hostile): the request is copied in
//! (-EFAULT), its interface version checked (-EACCES), then the caller's privilege
//! (-EPERM: Xen's XSM_PRIV; before the target is looked up, so a domU cannot probe which
//! domains exist), then the command (-ENOSYS), then the target (-ESRCH). Results are
//! copied back as the whole request, as Xen does.

use crate::domain::runtime::DomainState;
use crate::hv::Hypervisor;
use crate::hypercall::HcResult;
use crate::hypercall::handle::GuestHandle;
use crate::platform::{MachineMemory, Platform};
use crate::sched::policy::RunState;
use xen_pv_abi::domctl::{self as dc, Domctl, GetDomainInfo, GetDomainInfoList, Sysctl, dominf};
use xen_pv_abi::sched::ShutdownReason;
use xen_pv_abi::{DomId, Errno};
use zerocopy::{FromBytes, IntoBytes};

mod hvm;
#[cfg(test)]
mod tests;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `domctl` from domain `idx` (the running one).
    pub(crate) fn do_domctl(&mut self, idx: usize, op: GuestHandle<Domctl>) -> HcResult {
        let mut req: Domctl = self.read_handle(idx, op)?;
        if req.interface_version != dc::XEN_DOMCTL_INTERFACE_VERSION {
            return Err(Errno::EACCES);
        }
        if !self.domains[idx].dom0 {
            return Err(Errno::EPERM);
        }
        let dom = DomId(req.domain);
        match req.cmd {
            dc::XEN_DOMCTL_GETDOMAININFO => {
                // Xen 4.17: the first existing domain from `domain` on is described.
                let target = (0..self.domains.len())
                    .find(|&i| self.domains[i].id >= dom && self.domains[i].exists())
                    .ok_or(Errno::ESRCH)?;
                let info = self.domain_info(target);
                req.domain = info.domain;
                req.u[..size_of::<GetDomainInfo>()].copy_from_slice(info.as_bytes());
                self.write_handle(idx, op, &req)?;
                Ok(0)
            }
            dc::XEN_DOMCTL_PAUSEDOMAIN => {
                let target = self.target(idx, dom)?;
                self.pause_domain(target)?;
                Ok(0)
            }
            dc::XEN_DOMCTL_UNPAUSEDOMAIN => {
                let target = self.existing(dom)?;
                self.unpause_domain(target)?;
                Ok(0)
            }
            dc::XEN_DOMCTL_DESTROYDOMAIN => {
                let target = self.target(idx, dom)?;
                self.destroy_domain(target);
                Ok(0)
            }
            _ => Err(Errno::ENOSYS),
        }
    }

    /// `sysctl` from domain `idx` (the running one).
    pub(crate) fn do_sysctl(&mut self, idx: usize, op: GuestHandle<Sysctl>) -> HcResult {
        let mut req: Sysctl = self.read_handle(idx, op)?;
        if req.interface_version != dc::XEN_SYSCTL_INTERFACE_VERSION {
            return Err(Errno::EACCES);
        }
        if !self.domains[idx].dom0 {
            return Err(Errno::EPERM);
        }
        match req.cmd {
            dc::XEN_SYSCTL_GETDOMAININFOLIST => {
                let size = size_of::<GetDomainInfoList>();
                let (mut list, _) = GetDomainInfoList::read_from_prefix(&req.u[..size])
                    .map_err(|_| Errno::EINVAL)?;
                let first = DomId(list.first_domain);
                let mut written: u32 = 0;
                // Bounded by the number of domains, whatever `max_domains` says.
                for i in 0..self.domains.len() {
                    if written >= list.max_domains {
                        break;
                    }
                    let d = &self.domains[i];
                    if d.id < first || !d.exists() {
                        continue;
                    }
                    let info = self.domain_info(i);
                    let at = u64::from(written)
                        .checked_mul(size_of::<GetDomainInfo>() as u64)
                        .and_then(|off| list.buffer.checked_add(off))
                        .ok_or(Errno::EFAULT)?;
                    self.write_handle(idx, GuestHandle::<GetDomainInfo>::new(at), &info)?;
                    written += 1;
                }
                list.num_domains = written;
                req.u[..size].copy_from_slice(list.as_bytes());
                self.write_handle(idx, op, &req)?;
                Ok(0)
            }
            _ => Err(Errno::ENOSYS),
        }
    }

    /// The index of existing domain `dom`, or -ESRCH.
    pub(super) fn existing(&self, dom: DomId) -> Result<usize, Errno> {
        self.existing_slot(dom).ok_or(Errno::ESRCH)
    }

    /// The index of existing domain `dom` that is not the caller `idx` (Xen refuses to
    /// pause or kill the calling domain through domctl: -EINVAL).
    fn target(&self, idx: usize, dom: DomId) -> Result<usize, Errno> {
        let t = self.existing(dom)?;
        if t == idx {
            return Err(Errno::EINVAL);
        }
        Ok(t)
    }

    /// Adds a controller pause to domain `t` (not the running one). At the first, each
    /// vCPU is blocked in the scheduler, remembering whether it wanted the CPU.
    pub(crate) fn pause_domain(&mut self, t: usize) -> Result<(), Errno> {
        let d = &mut self.domains[t];
        d.pause_count = d.pause_count.checked_add(1).ok_or(Errno::EINVAL)?;
        if d.pause_count > 1 || !d.is_runnable() {
            return Ok(());
        }
        let now = self.now_ns();
        let id = self.domains[t].id;
        for i in 0..self.domains[t].vcpus.len() {
            let vid = (id, self.domains[t].vcpus[i].id);
            self.domains[t].vcpus[i].wake_on_unpause = self.sched.is_runnable(vid);
            let _ = self.sched.block(vid, now);
        }
        Ok(())
    }

    /// Drops a controller pause of domain `t`; at the last, the vCPUs that wanted the
    /// CPU (or were woken meanwhile) become runnable. -EINVAL if it is not paused.
    fn unpause_domain(&mut self, t: usize) -> Result<(), Errno> {
        let d = &mut self.domains[t];
        d.pause_count = d.pause_count.checked_sub(1).ok_or(Errno::EINVAL)?;
        if d.pause_count > 0 || !d.is_runnable() {
            return Ok(());
        }
        let now = self.now_ns();
        let id = self.domains[t].id;
        for i in 0..self.domains[t].vcpus.len() {
            let v = &mut self.domains[t].vcpus[i];
            if core::mem::take(&mut v.wake_on_unpause) {
                let vid = (id, v.id);
                let _ = self.sched.wake(vid, now);
            }
        }
        Ok(())
    }

    /// Ends domain `t` for good: a running one as a crash would (console flushed,
    /// frames freed, ports closed, VIRQ_DOM_EXC), reported as destroyed; one that already
    /// ended only disappears from domctl/sysctl.
    fn destroy_domain(&mut self, t: usize) {
        if self.domains[t].is_runnable() {
            self.end_domain(
                t,
                DomainState::Destroyed,
                format_args!("destroyed by the control domain"),
            );
        }
        let d = &mut self.domains[t];
        d.destroyed = true;
        d.pause_count = 0;
    }

    /// `xen_domctl_getdomaininfo` of domain `i`.
    fn domain_info(&self, i: usize) -> GetDomainInfo {
        let d = &self.domains[i];
        let mut flags = 0;
        // Bits 31:16 read all ones while no reason is recorded (Xen keeps `~0`).
        let mut code = d.shutdown_code.map_or(0xffff, u32::from);
        match d.state {
            DomainState::Runnable => {
                if d.pause_count > 0 {
                    flags |= dominf::PAUSED;
                }
                let blocked = |k: usize| {
                    let v = &d.vcpus[k];
                    if d.pause_count > 0 {
                        !v.wake_on_unpause
                    } else {
                        self.sched.state((d.id, v.id)) == Some(RunState::Blocked)
                    }
                };
                if !d.vcpus.is_empty() && (0..d.vcpus.len()).all(blocked) {
                    flags |= dominf::BLOCKED;
                }
                if self.cpu.current == Some(i) {
                    flags |= dominf::RUNNING;
                }
            }
            DomainState::Shutdown(r) => {
                flags |= dominf::SHUTDOWN;
                code = r as u32;
            }
            DomainState::ShutdownOther(c) => {
                flags |= dominf::SHUTDOWN;
                code = u32::from(c);
            }
            DomainState::Crashed => {
                flags |= dominf::SHUTDOWN;
                code = ShutdownReason::Crash as u32;
            }
            DomainState::Refused | DomainState::Destroyed | DomainState::Killed => {
                flags |= dominf::DYING
            }
        }
        flags |= code << dominf::SHUTDOWN_SHIFT;
        let tot_pages = self.frames.count_of(d.id) as u64;
        let nr_vcpus = u32::try_from(d.vcpus.len()).unwrap_or(u32::MAX);
        GetDomainInfo {
            domain: d.id.0,
            flags,
            tot_pages,
            max_pages: d.nr_pages.max(tot_pages),
            shared_info_frame: d.shared_info.0,
            nr_online_vcpus: if d.is_runnable() { nr_vcpus } else { 0 },
            max_vcpu_id: nr_vcpus.wrapping_sub(1),
            ..GetDomainInfo::default()
        }
    }
}
