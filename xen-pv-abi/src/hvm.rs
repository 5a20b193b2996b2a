//! `hvm_op` (34): HVM parameters. A PV guest has little use for them; the control
//! domain uses `HVMOP_get_param` to find a boot-built domU's xenstore and console rings
//! and event channels (`HVM_PARAM_STORE_PFN`, `HVM_PARAM_STORE_EVTCHN`,
//! `HVM_PARAM_CONSOLE_PFN`, `HVM_PARAM_CONSOLE_EVTCHN`), as Xen's init-dom0less does for
//! the domains Xen built at boot. Xen 4.17 numbers and layout (`public/hvm/hvm_op.h`,
//! `public/hvm/params.h`).

use crate::ids::DomId;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The `HVMOP_*` operations, generated from `hypercall-gen/hypercalls.toml`.
pub use crate::generated::hvm_op::*;

/// The domain's xenstore ring frame (for a PV domain: its MFN).
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// The domain's xenstore event channel (its end, unbound for the backend).
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// The domain's console ring frame (for a PV domain: its MFN).
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// The domain's console event channel (its end, unbound for the backend).
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// One more than the highest parameter index of Xen 4.17.
pub const HVM_NR_PARAMS: u32 = 39;

/// `struct xen_hvm_param` (16 bytes): the argument of `HVMOP_set_param` and
/// `HVMOP_get_param`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenHvmParam {
    /// The domain (`DOMID_SELF` for the caller).
    pub domid: DomId,
    /// Padding.
    pub pad: [u8; 2],
    /// An `HVM_PARAM_*` index.
    pub index: u32,
    /// The value (set: in; get: out).
    pub value: u64,
}

const_assert_eq!(core::mem::size_of::<XenHvmParam>(), 16);
const_assert_eq!(core::mem::offset_of!(XenHvmParam, index), 4);
const_assert_eq!(core::mem::offset_of!(XenHvmParam, value), 8);
