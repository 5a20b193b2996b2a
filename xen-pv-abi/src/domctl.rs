//! The toolstack's control hypercalls: `domctl` (36) for one domain and `sysctl` (35) for
//! the whole machine, Xen 4.17 layouts. Only the control domain may call them.
//!
//! Both take one pointer to a fixed-size request: a command, the interface version the
//! caller was built against ([`XEN_DOMCTL_INTERFACE_VERSION`] /
//! [`XEN_SYSCTL_INTERFACE_VERSION`]; any other value is refused with `EACCES`) and a
//! 128-byte union whose meaning depends on the command. The union is kept as bytes here:
//! read or write a payload such as [`GetDomainInfo`] at its start with zerocopy.

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
