//! Helpers shared by the test guests: each guest is one file in `src/bin/`, built on
//! pv-guest's runtime, and exercises one behaviour of the hypervisor.
#![no_std]

#[cfg(target_os = "none")]
pub mod grant;

#[doc(hidden)]
pub use pv_guest as __pv_guest;
#[doc(hidden)]
pub use xen_pv_abi as __xen_pv_abi;

/// The Xen notes every test guest carries (except `no-notes`): the mandatory three, plus
/// VIRT_BASE/PADDR_OFFSET for pv-guest's linker script and ENTRY. No HYPERCALL_PAGE.
#[macro_export]
macro_rules! standard_notes {
    ($name:literal) => {
        $crate::__xen_pv_abi::xen_elf_notes! {
            guest_os: $name,
            guest_version: "0.1",
            xen_version: "xen-3.0",
            loader: "generic",
            virt_base: $crate::__pv_guest::VIRT_BASE,
            paddr_offset: 0,
            entry: $crate::__pv_guest::_start,
        }
    };
}
