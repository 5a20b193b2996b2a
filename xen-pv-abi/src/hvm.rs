//! `hvm_op` (34): HVM parameters. A PV guest has little use for them; the control
//! domain uses `HVMOP_get_param` to find a boot-built domU's xenstore and console rings
//! and event channels (`HVM_PARAM_STORE_PFN`, `HVM_PARAM_STORE_EVTCHN`,
//! `HVM_PARAM_CONSOLE_PFN`, `HVM_PARAM_CONSOLE_EVTCHN`), as Xen's init-dom0less does for
//! the domains Xen built at boot. Xen 4.17 numbers and layout (`public/hvm/hvm_op.h`,
//! `public/hvm/params.h`). [`get_param`] reads one.

use crate::errno::Errno;
use crate::generated::call_on;
use crate::ids::DomId;
use crate::transport::{Native, Transport};
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

/// `hvm_op(HVMOP_get_param)`: parameter `index` (an `HVM_PARAM_*`) of domain `dom`
/// ([`DomId::SELF`] for the caller's own). Reading another domain's needs privilege
/// (`EPERM` otherwise); an index at or above [`HVM_NR_PARAMS`] is `EINVAL`.
pub fn get_param(dom: DomId, index: u32) -> Result<u64, Errno> {
    get_param_on(&Native, dom, index)
}

/// [`get_param`] through `t`.
pub fn get_param_on<T: Transport + ?Sized>(t: &T, dom: DomId, index: u32) -> Result<u64, Errno> {
    let mut p = XenHvmParam {
        domid: dom,
        index,
        ..Default::default()
    };
    // SAFETY: `p` is a live xen_hvm_param (16 bytes), which the hypervisor reads and
    // whose `value` it writes.
    let ret = unsafe { call_on::hvm_op(t, HVMOP_GET_PARAM, core::ptr::from_mut(&mut p).cast()) };
    Errno::check(ret)?;
    Ok(p.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nr;
    use crate::transport::fake::Fake;

    #[test]
    fn get_param_passes_domain_and_index_and_reads_the_value() {
        let t = Fake::new(|call| {
            assert_eq!((call.op, call.args[0]), (nr::HVM_OP, HVMOP_GET_PARAM));
            // SAFETY: the wrapper passes a live XenHvmParam.
            let p = unsafe { &mut *(call.args[1] as *mut XenHvmParam) };
            if p.index >= HVM_NR_PARAMS {
                return Errno::EINVAL.to_ret();
            }
            p.value = u64::from(p.domid.0) << 32 | u64::from(p.index);
            0
        });
        assert_eq!(
            get_param_on(&t, DomId(3), HVM_PARAM_STORE_PFN),
            Ok(3 << 32 | 1)
        );
        assert_eq!(
            get_param_on(&t, DomId(1), HVM_PARAM_CONSOLE_EVTCHN),
            Ok(1 << 32 | 18)
        );
        assert_eq!(
            get_param_on(&t, DomId(1), HVM_NR_PARAMS),
            Err(Errno::EINVAL)
        );
        assert_eq!(t.count(), 3);
    }
}
