//! Thin wrappers of the privileged hypercalls the control domain makes, over the ABI
//! structs of xen_pv_abi (each an owned, stack-allocated request).

use core::fmt;
use xen_pv_abi::domctl::{
    Domctl, GetDomainInfo, GetDomainInfoList, Sysctl, XEN_DOMCTL_GETDOMAININFO,
    XEN_DOMCTL_PAUSEDOMAIN, XEN_DOMCTL_UNPAUSEDOMAIN, XEN_SYSCTL_GETDOMAININFOLIST,
};
use xen_pv_abi::generated::call;
use xen_pv_abi::generated::grant_table_op::{GNTTABOP_MAP_GRANT_REF, GNTTABOP_UNMAP_GRANT_REF};
use xen_pv_abi::grant_table::{
    GNTMAP_HOST_MAP, GNTST_OKAY, GnttabMapGrantRef, GnttabUnmapGrantRef,
};
use xen_pv_abi::{DomId, Errno, nr};
use zerocopy::{FromBytes, IntoBytes};

/// `HVMOP_get_param`.
const HVMOP_GET_PARAM: u64 = 1;
/// `HVM_PARAM_STORE_PFN`: the store ring's MFN (PV).
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// `HVM_PARAM_STORE_EVTCHN`: the domain's store port.
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// `HVM_PARAM_CONSOLE_PFN`: the console ring's MFN (PV).
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// `HVM_PARAM_CONSOLE_EVTCHN`: the domain's console port.
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;

/// `struct xen_hvm_param` (16 bytes).
#[repr(C)]
struct HvmParam {
    domid: u16,
    pad: u16,
    index: u32,
    value: u64,
}

/// A failed call: an errno, or a grant operation's `GNTST_*` status.
#[derive(Clone, Copy, Debug)]
pub enum Failed {
    /// The hypercall failed.
    Errno(Errno),
    /// The grant operation failed with this status.
    Grant(i16),
}

impl From<Errno> for Failed {
    fn from(e: Errno) -> Self {
        Failed::Errno(e)
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failed::Errno(e) => write!(f, "{e}"),
            Failed::Grant(s) => write!(f, "GNTST {s}"),
        }
    }
}

/// `sysctl getdomaininfolist`: the domains with ids from `first` on, into `out`; returns
/// how many were written.
pub fn domain_list(first: u16, out: &mut [GetDomainInfo]) -> Result<usize, Errno> {
    let list = GetDomainInfoList {
        first_domain: first,
        max_domains: u32::try_from(out.len()).map_err(|_| Errno::EINVAL)?,
        buffer: out.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut req = Sysctl::new(XEN_SYSCTL_GETDOMAININFOLIST);
    req.u[..size_of::<GetDomainInfoList>()].copy_from_slice(list.as_bytes());
    // SAFETY: `req` is a valid sysctl whose buffer is `out`, of `max_domains` elements,
    // alive and exclusively borrowed for the call.
    Errno::check(unsafe { call::sysctl(&raw mut req) })?;
    let (got, _) = GetDomainInfoList::read_from_prefix(&req.u).map_err(|_| Errno::EFAULT)?;
    Ok((got.num_domains as usize).min(out.len()))
}

/// `domctl getdomaininfo` of `id`: `ESRCH` when it no longer exists (Xen 4.17 answers
/// with the next higher domain then, which is treated the same).
pub fn domain_info(id: DomId) -> Result<GetDomainInfo, Errno> {
    let mut req = Domctl::new(XEN_DOMCTL_GETDOMAININFO, id.0);
    // SAFETY: `req` is a valid domctl, alive for the call; getdomaininfo only writes it.
    Errno::check(unsafe { call::domctl(&raw mut req) })?;
    let (info, _) = GetDomainInfo::read_from_prefix(&req.u).map_err(|_| Errno::EFAULT)?;
    if info.domain != id.0 {
        return Err(Errno::ESRCH);
    }
    Ok(info)
}

/// `domctl pausedomain` (`pause`) or `unpausedomain` of `id`: a counted controller pause.
pub fn set_paused(id: DomId, pause: bool) -> Result<(), Errno> {
    let cmd = if pause {
        XEN_DOMCTL_PAUSEDOMAIN
    } else {
        XEN_DOMCTL_UNPAUSEDOMAIN
    };
    let mut req = Domctl::new(cmd, id.0);
    // SAFETY: `req` is a valid domctl, alive for the call.
    Errno::check(unsafe { call::domctl(&raw mut req) }).map(drop)
}

/// `HVMOP_get_param` of domain `id`.
pub fn hvm_param(id: DomId, index: u32) -> Result<u64, Errno> {
    let mut p = HvmParam {
        domid: id.0,
        pad: 0,
        index,
        value: 0,
    };
    // SAFETY: `p` is a valid xen_hvm_param, alive for the call, which writes `value`.
    Errno::check(unsafe { call::hvm_op(HVMOP_GET_PARAM, (&raw mut p).cast()) })?;
    Ok(p.value)
}

/// `GNTTABOP_map_grant_ref` (host map, writable) of `gref` of `dom` at `host_addr`;
/// returns the handle.
///
/// # Safety
///
/// `host_addr` must be a page of this domain that nothing references: its mapping is
/// replaced by the granted frame.
pub unsafe fn map_grant(dom: DomId, gref: u32, host_addr: u64) -> Result<u32, Failed> {
    let mut op = GnttabMapGrantRef {
        host_addr,
        flags: GNTMAP_HOST_MAP,
        r#ref: gref,
        dom,
        ..Default::default()
    };
    // SAFETY: one valid map request; the caller vouches for `host_addr`.
    let r = unsafe { call::grant_table_op(GNTTABOP_MAP_GRANT_REF, (&raw mut op).cast(), 1) };
    Errno::check(r)?;
    if op.status != GNTST_OKAY {
        return Err(Failed::Grant(op.status));
    }
    Ok(op.handle)
}

/// `GNTTABOP_unmap_grant_ref` of the mapping `handle` at `host_addr`.
///
/// # Safety
///
/// Nothing may reference the page at `host_addr` any more (it becomes unmapped).
pub unsafe fn unmap_grant(host_addr: u64, handle: u32) -> Result<(), Failed> {
    let mut op = GnttabUnmapGrantRef {
        host_addr,
        handle,
        ..Default::default()
    };
    // SAFETY: one valid unmap request; the caller vouches that the page is unused.
    let r = unsafe { call::grant_table_op(GNTTABOP_UNMAP_GRANT_REF, (&raw mut op).cast(), 1) };
    Errno::check(r)?;
    if op.status != GNTST_OKAY {
        return Err(Failed::Grant(op.status));
    }
    Ok(())
}

/// `console_io(CONSOLEIO_read)`: typed bytes, up to `buf.len()`; returns how many.
pub fn console_read(buf: &mut [u8]) -> Result<usize, Errno> {
    let count = u32::try_from(buf.len()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: the hypervisor writes at most `count` bytes into `buf`, which is ours.
    let r = unsafe { call::console_io(nr::CONSOLEIO_READ, count, buf.as_mut_ptr()) };
    let n = Errno::check(r)? as usize;
    Ok(n.min(buf.len()))
}
