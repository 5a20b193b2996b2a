//! The toolstack's control hypercalls: `domctl` (36) for one domain and `sysctl` (35) for
//! the whole machine, Xen 4.17 layouts. Only the control domain may call them.
//!
//! Both take one pointer to a fixed-size request: a command, the interface version the
//! caller was built against ([`XEN_DOMCTL_INTERFACE_VERSION`] /
//! [`XEN_SYSCTL_INTERFACE_VERSION`]; any other value is refused with `EACCES`) and a
//! 128-byte union whose meaning depends on the command. The union is kept as bytes here:
//! read or write a payload such as [`GetDomainInfo`] at its start with zerocopy.
//!
//! Safe wrappers cover what a control domain needs to follow the other domains:
//! [`getdomaininfolist`], [`getdomaininfo`], [`pausedomain`] and [`unpausedomain`] (each
//! with an `_on` form over a [`Transport`]).

use crate::errno::Errno;
use crate::generated::call_on;
use crate::ids::DomId;
use crate::transport::{Native, Transport};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The `XEN_DOMCTL_*` commands, generated from `hypercall-gen/hypercalls.toml`.
pub use crate::generated::domctl::*;
/// The `XEN_SYSCTL_*` commands, generated from `hypercall-gen/hypercalls.toml`.
pub use crate::generated::sysctl::*;

/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17.
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x15;
/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17.
pub const XEN_SYSCTL_INTERFACE_VERSION: u32 = 0x15;

/// `struct xen_domctl` (144 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct Domctl {
    /// A `XEN_DOMCTL_*` command.
    pub cmd: u32,
    /// Must be [`XEN_DOMCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// The target domain (written back by `getdomaininfo`: the domain described).
    pub domain: u16,
    /// Padding.
    pub pad: [u16; 3],
    /// The command's payload.
    pub u: [u8; 128],
}

impl Default for Domctl {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl Domctl {
    /// A request for `cmd` on `domain` at the current interface version, payload zero.
    pub fn new(cmd: u32, domain: u16) -> Self {
        Domctl {
            cmd,
            interface_version: XEN_DOMCTL_INTERFACE_VERSION,
            domain,
            ..Self::default()
        }
    }
}

/// `struct xen_sysctl` (136 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(8))]
pub struct Sysctl {
    /// A `XEN_SYSCTL_*` command.
    pub cmd: u32,
    /// Must be [`XEN_SYSCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// The command's payload.
    pub u: [u8; 128],
}

impl Default for Sysctl {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl Sysctl {
    /// A request for `cmd` at the current interface version, payload zero.
    pub fn new(cmd: u32) -> Self {
        Sysctl {
            cmd,
            interface_version: XEN_SYSCTL_INTERFACE_VERSION,
            ..Self::default()
        }
    }
}

/// `XEN_DOMINF_*`: bits of [`GetDomainInfo::flags`].
pub mod dominf {
    /// The domain is dead (all its resources released).
    pub const DYING: u32 = 1 << 0;
    /// An HVM guest (never, here).
    pub const HVM_GUEST: u32 = 1 << 1;
    /// It shut down; the reason is in bits 23:16.
    pub const SHUTDOWN: u32 = 1 << 2;
    /// Paused by the controller.
    pub const PAUSED: u32 = 1 << 3;
    /// All its online vCPUs are blocked.
    pub const BLOCKED: u32 = 1 << 4;
    /// One of its vCPUs is on a CPU.
    pub const RUNNING: u32 = 1 << 5;
    /// Being debugged.
    pub const DEBUGGED: u32 = 1 << 6;
    /// The xenstore domain.
    pub const XS_DOMAIN: u32 = 1 << 7;
    /// Uses hardware-assisted paging.
    pub const HAP: u32 = 1 << 8;
    /// Shift of the shutdown reason (`XEN_DOMINF_shutdownshift`).
    pub const SHUTDOWN_SHIFT: u32 = 16;
    /// Mask of the shutdown reason after shifting (`XEN_DOMINF_shutdownmask`).
    pub const SHUTDOWN_MASK: u32 = 0xff;
}

/// `struct xen_domctl_getdomaininfo` (112 bytes): the `getdomaininfo` answer, and one
/// element of the `getdomaininfolist` buffer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GetDomainInfo {
    /// The domain described.
    pub domain: u16,
    /// Padding.
    pub pad0: u16,
    /// [`dominf`] bits and the shutdown reason.
    pub flags: u32,
    /// Pages the domain owns.
    pub tot_pages: u64,
    /// Its page limit.
    pub max_pages: u64,
    /// Pages claimed but not yet allocated.
    pub outstanding_pages: u64,
    /// Pages shared with other domains (memory sharing).
    pub shr_pages: u64,
    /// Pages paged out.
    pub paged_pages: u64,
    /// The MFN of its shared_info page (PV).
    pub shared_info_frame: u64,
    /// Nanoseconds its vCPUs have run.
    pub cpu_time: u64,
    /// vCPUs online.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id (`!0` if it has none).
    pub max_vcpu_id: u32,
    /// Security label (XSM).
    pub ssidref: u32,
    /// Its UUID (`XEN_DOMCTL_setdomainhandle`).
    pub handle: [u8; 16],
    /// Its CPU pool.
    pub cpupool: u32,
    /// Guest physical address width (HVM).
    pub gpaddr_bits: u8,
    /// Padding.
    pub pad1: [u8; 7],
    /// `arch_config.emulation_flags` (x86).
    pub arch_emulation_flags: u32,
    /// `arch_config.misc_flags` (x86).
    pub arch_misc_flags: u32,
}

/// `struct xen_sysctl_getdomaininfolist` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GetDomainInfoList {
    /// IN: the lowest domain id listed.
    pub first_domain: u16,
    /// Padding.
    pub pad0: u16,
    /// IN: the buffer's room, in elements.
    pub max_domains: u32,
    /// IN: guest address of an array of [`GetDomainInfo`].
    pub buffer: u64,
    /// OUT: elements written.
    pub num_domains: u32,
    /// Padding.
    pub pad1: u32,
}

/// `sysctl(XEN_SYSCTL_getdomaininfolist)`: describes the domains with ids from `first`
/// on, in increasing order, into `out`; returns how many were written (fewer than
/// `out.len()` when no more domains exist). Page through all domains by calling again
/// from one past the last id returned while `out` comes back full.
pub fn getdomaininfolist(first: DomId, out: &mut [GetDomainInfo]) -> Result<usize, Errno> {
    getdomaininfolist_on(&Native, first, out)
}

/// [`getdomaininfolist`] through `t`. `out` must be resident for a `Privcmd` transport
/// (see [`crate::transport`]); the count asked for is capped at `u32::MAX`.
pub fn getdomaininfolist_on<T: Transport + ?Sized>(
    t: &T,
    first: DomId,
    out: &mut [GetDomainInfo],
) -> Result<usize, Errno> {
    let list = GetDomainInfoList {
        first_domain: first.0,
        max_domains: u32::try_from(out.len()).unwrap_or(u32::MAX),
        buffer: out.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut req = Sysctl::new(XEN_SYSCTL_GETDOMAININFOLIST);
    req.u[..size_of::<GetDomainInfoList>()].copy_from_slice(list.as_bytes());
    // SAFETY: `req` is a local sysctl the hypervisor reads and writes (136 bytes); its
    // buffer is `out`, exclusively borrowed, with room for `max_domains` elements, each
    // valid for any bytes written (FromBytes).
    let ret = unsafe { call_on::sysctl(t, &raw mut req) };
    Errno::check(ret)?;
    let (got, _) = GetDomainInfoList::read_from_prefix(&req.u).map_err(|_| Errno::EFAULT)?;
    // A count beyond the buffer is never believed.
    Ok((got.num_domains as usize).min(out.len()))
}

/// `domctl(XEN_DOMCTL_getdomaininfo)` of `dom`.
///
/// Xen 4.17 answers for the lowest domain with an id at or above `dom`, so a domain that
/// is gone may be answered by another: that, like a missing domain, is `Err(ESRCH)`.
pub fn getdomaininfo(dom: DomId) -> Result<GetDomainInfo, Errno> {
    getdomaininfo_on(&Native, dom)
}

/// [`getdomaininfo`] through `t`.
pub fn getdomaininfo_on<T: Transport + ?Sized>(t: &T, dom: DomId) -> Result<GetDomainInfo, Errno> {
    let mut req = Domctl::new(XEN_DOMCTL_GETDOMAININFO, dom.0);
    domctl_on(t, &mut req)?;
    let (info, _) = GetDomainInfo::read_from_prefix(&req.u).map_err(|_| Errno::EFAULT)?;
    if info.domain != dom.0 {
        return Err(Errno::ESRCH);
    }
    Ok(info)
}

/// `domctl(XEN_DOMCTL_pausedomain)`: adds one controller pause to `dom` (counted: each
/// must be undone by an [`unpausedomain`]). A domain cannot pause itself (`EINVAL`).
pub fn pausedomain(dom: DomId) -> Result<(), Errno> {
    pausedomain_on(&Native, dom)
}

/// [`pausedomain`] through `t`.
pub fn pausedomain_on<T: Transport + ?Sized>(t: &T, dom: DomId) -> Result<(), Errno> {
    domctl_on(t, &mut Domctl::new(XEN_DOMCTL_PAUSEDOMAIN, dom.0))
}

/// `domctl(XEN_DOMCTL_unpausedomain)`: removes one controller pause from `dom`;
/// `EINVAL` when it has none.
pub fn unpausedomain(dom: DomId) -> Result<(), Errno> {
    unpausedomain_on(&Native, dom)
}

/// [`unpausedomain`] through `t`.
pub fn unpausedomain_on<T: Transport + ?Sized>(t: &T, dom: DomId) -> Result<(), Errno> {
    domctl_on(t, &mut Domctl::new(XEN_DOMCTL_UNPAUSEDOMAIN, dom.0))
}

/// Issues a domctl whose payload holds no pointer.
fn domctl_on<T: Transport + ?Sized>(t: &T, req: &mut Domctl) -> Result<(), Errno> {
    // SAFETY: `req` is a live domctl the hypervisor reads and writes (144 bytes); the
    // commands passed here carry no pointer in their payload.
    let ret = unsafe { call_on::domctl(t, req) };
    Errno::check(ret).map(drop)
}

const_assert_eq!(core::mem::size_of::<Domctl>(), 144);
const_assert_eq!(core::mem::offset_of!(Domctl, domain), 8);
const_assert_eq!(core::mem::offset_of!(Domctl, u), 16);
const_assert_eq!(core::mem::size_of::<Sysctl>(), 136);
const_assert_eq!(core::mem::offset_of!(Sysctl, u), 8);
const_assert_eq!(core::mem::size_of::<GetDomainInfo>(), 112);
const_assert_eq!(core::mem::offset_of!(GetDomainInfo, flags), 4);
const_assert_eq!(core::mem::offset_of!(GetDomainInfo, shared_info_frame), 48);
const_assert_eq!(core::mem::offset_of!(GetDomainInfo, nr_online_vcpus), 64);
const_assert_eq!(core::mem::offset_of!(GetDomainInfo, handle), 76);
const_assert_eq!(core::mem::offset_of!(GetDomainInfo, cpupool), 92);
const_assert_eq!(core::mem::offset_of!(GetDomainInfo, gpaddr_bits), 96);
const_assert_eq!(
    core::mem::offset_of!(GetDomainInfo, arch_emulation_flags),
    104
);
const_assert_eq!(core::mem::size_of::<GetDomainInfoList>(), 24);
const_assert_eq!(core::mem::offset_of!(GetDomainInfoList, buffer), 8);
const_assert_eq!(core::mem::offset_of!(GetDomainInfoList, num_domains), 16);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nr;
    use crate::transport::fake::Fake;

    /// A hypervisor with domains 0, 1, 5 and 7 (domain `d` with `max_pages` `d * 10`).
    fn xen(call: &crate::transport::fake::Call) -> i64 {
        const DOMS: [u16; 4] = [0, 1, 5, 7];
        match call.op {
            nr::SYSCTL => {
                // SAFETY: the wrappers pass a live Sysctl.
                let req = unsafe { &mut *(call.args[0] as *mut Sysctl) };
                assert_eq!(req.cmd, XEN_SYSCTL_GETDOMAININFOLIST);
                assert_eq!(req.interface_version, XEN_SYSCTL_INTERFACE_VERSION);
                let (mut l, _) = GetDomainInfoList::read_from_prefix(&req.u).unwrap();
                let buf = l.buffer as *mut GetDomainInfo;
                let mut n = 0;
                for &d in DOMS.iter().filter(|&&d| d >= l.first_domain) {
                    if n == l.max_domains {
                        break;
                    }
                    let info = GetDomainInfo {
                        domain: d,
                        max_pages: u64::from(d) * 10,
                        ..Default::default()
                    };
                    // SAFETY: in the caller's buffer of `max_domains` elements.
                    unsafe { buf.add(n as usize).write(info) };
                    n += 1;
                }
                l.num_domains = n;
                req.u[..size_of::<GetDomainInfoList>()].copy_from_slice(l.as_bytes());
                0
            }
            nr::DOMCTL => {
                // SAFETY: the wrappers pass a live Domctl.
                let req = unsafe { &mut *(call.args[0] as *mut Domctl) };
                assert_eq!(req.interface_version, XEN_DOMCTL_INTERFACE_VERSION);
                match req.cmd {
                    // Xen 4.17: the first domain at or above the one asked for.
                    XEN_DOMCTL_GETDOMAININFO => {
                        let Some(&d) = DOMS.iter().find(|&&d| d >= req.domain) else {
                            return Errno::ESRCH.to_ret();
                        };
                        let info = GetDomainInfo {
                            domain: d,
                            flags: dominf::PAUSED,
                            ..Default::default()
                        };
                        req.domain = d;
                        req.u[..size_of::<GetDomainInfo>()].copy_from_slice(info.as_bytes());
                        0
                    }
                    XEN_DOMCTL_PAUSEDOMAIN | XEN_DOMCTL_UNPAUSEDOMAIN if req.domain == 0 => {
                        Errno::EINVAL.to_ret()
                    }
                    XEN_DOMCTL_PAUSEDOMAIN | XEN_DOMCTL_UNPAUSEDOMAIN => 0,
                    _ => Errno::ENOSYS.to_ret(),
                }
            }
            _ => Errno::ENOSYS.to_ret(),
        }
    }

    #[test]
    fn getdomaininfolist_pages_through_the_domains() {
        let t = Fake::new(xen);
        let mut buf = [GetDomainInfo::default(); 2];
        assert_eq!(getdomaininfolist_on(&t, DomId(0), &mut buf), Ok(2));
        assert_eq!((buf[0].domain, buf[1].domain), (0, 1));
        assert_eq!(getdomaininfolist_on(&t, DomId(2), &mut buf), Ok(2));
        assert_eq!((buf[0].domain, buf[1].max_pages), (5, 70));
        assert_eq!(getdomaininfolist_on(&t, DomId(6), &mut buf), Ok(1));
        assert_eq!(getdomaininfolist_on(&t, DomId(8), &mut buf), Ok(0));
        assert_eq!(getdomaininfolist_on(&t, DomId(0), &mut []), Ok(0));
        assert_eq!(t.count(), 5);
        assert!(t.calls().iter().all(|c| c.op == nr::SYSCTL));
    }

    #[test]
    fn getdomaininfolist_never_reports_more_than_the_buffer() {
        let t = Fake::new(|call| {
            // SAFETY: the wrapper passes a live Sysctl.
            let req = unsafe { &mut *(call.args[0] as *mut Sysctl) };
            let l = GetDomainInfoList {
                num_domains: 1000,
                ..Default::default()
            };
            req.u[..size_of::<GetDomainInfoList>()].copy_from_slice(l.as_bytes());
            0
        });
        let mut buf = [GetDomainInfo::default(); 3];
        assert_eq!(getdomaininfolist_on(&t, DomId(0), &mut buf), Ok(3));
        let t = Fake::new(|_| Errno::EPERM.to_ret());
        assert_eq!(
            getdomaininfolist_on(&t, DomId(0), &mut buf),
            Err(Errno::EPERM)
        );
    }

    #[test]
    fn getdomaininfo_is_esrch_when_another_domain_answers() {
        let t = Fake::new(xen);
        let info = getdomaininfo_on(&t, DomId(5)).unwrap();
        assert_eq!((info.domain, info.flags), (5, dominf::PAUSED));
        assert_eq!(getdomaininfo_on(&t, DomId(3)), Err(Errno::ESRCH));
        assert_eq!(getdomaininfo_on(&t, DomId(9)), Err(Errno::ESRCH));
        let last = t.last().unwrap();
        assert_eq!(last.op, nr::DOMCTL);
    }

    #[test]
    fn pause_and_unpause_pass_their_command_and_domain() {
        let seen = core::cell::RefCell::new((0, [(0u32, 0u16); 3]));
        let t = Fake::new(|call| {
            // SAFETY: the wrappers pass a live Domctl.
            let req = unsafe { &*(call.args[0] as *const Domctl) };
            let mut s = seen.borrow_mut();
            let i = s.0;
            s.1[i] = (req.cmd, req.domain);
            s.0 += 1;
            xen(call)
        });
        assert_eq!(pausedomain_on(&t, DomId(7)), Ok(()));
        assert_eq!(unpausedomain_on(&t, DomId(7)), Ok(()));
        assert_eq!(pausedomain_on(&t, DomId(0)), Err(Errno::EINVAL));
        assert_eq!(
            *seen.borrow(),
            (
                3,
                [
                    (XEN_DOMCTL_PAUSEDOMAIN, 7),
                    (XEN_DOMCTL_UNPAUSEDOMAIN, 7),
                    (XEN_DOMCTL_PAUSEDOMAIN, 0)
                ]
            )
        );
    }
}
