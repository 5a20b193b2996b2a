//! Helpers shared by the test guests: each guest is one file in `src/bin/`, built on
//! pv-guest's runtime, and exercises one behaviour of the hypervisor.
#![no_std]

#[cfg(target_os = "none")]
pub mod bare_netfront;
#[cfg(target_os = "none")]
pub mod conformance;
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

/// The MFN of this domain's first grant-table frame (`GNTTABOP_setup_table` of one
/// frame), if it has one. A domU with a control domain has it from the start (refs 0 and
/// 1 grant its rings to dom0), so "a frame past all of ours" must skip it: it is ours.
#[cfg(target_os = "none")]
pub fn grant_frame() -> Option<u64> {
    use xen_pv_abi::grant_table::{GNTST_OKAY, GnttabSetupTable};
    let mut frame = 0u64;
    let mut op = GnttabSetupTable {
        dom: xen_pv_abi::DomId::SELF,
        nr_frames: 1,
        frame_list: &raw mut frame as u64,
        ..Default::default()
    };
    // SAFETY: one valid setup_table request whose frame list is `frame`, alive for the
    // call; it only writes `op.status` and `frame`.
    let r = unsafe {
        xen_pv_abi::generated::call::grant_table_op(
            xen_pv_abi::generated::grant_table_op::GNTTABOP_SETUP_TABLE,
            (&raw mut op).cast(),
            1,
        )
    };
    (r == 0 && op.status == GNTST_OKAY).then_some(frame)
}
