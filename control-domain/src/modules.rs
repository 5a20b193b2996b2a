//! The boot modules (disk images) the hypervisor hands the control domain as its initrd.
//!
//! The initrd is `start_info.mod_len` bytes at virtual address `mod_start`, inside the
//! initial mapping, right before the p2m list (`mfn_list`); it holds an `XPVMODS1` table
//! ([`xen_pv_abi::modules`]). [`initrd_range`] checks where start_info says it is before
//! the kernel makes a slice of it; [`parse`] then reads the table without trusting any
//! count, offset or length in it.

use xen_pv_abi::start_info::{SIF_MOD_START_PFN, StartInfo};

pub use xen_pv_abi::modules::{Module, Modules, ModulesError, parse};

/// Where the initrd is, as `(va, len)`, if start_info describes one this kernel can read
/// in place: a non-zero virtual address (not a PFN: `SIF_MOD_START_PFN` clear), a
/// non-zero length, and the bytes ending at or before the p2m list that follows them in
/// the initial mapping. `None` otherwise (no modules, or a layout not understood).
pub fn initrd_range(si: &StartInfo) -> Option<(u64, usize)> {
    if si.flags & SIF_MOD_START_PFN != 0 || si.mod_start == 0 || si.mod_len == 0 {
        return None;
    }
    let end = si.mod_start.checked_add(si.mod_len)?;
    if end > si.mfn_list {
        return None;
    }
    Some((si.mod_start, usize::try_from(si.mod_len).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn only_a_mapped_initrd_before_the_p2m_is_used() {
        let mut si = StartInfo::new_zeroed();
        si.mfn_list = 0x40_0000;
        assert_eq!(initrd_range(&si), None);
        si.mod_start = 0x20_0000;
        si.mod_len = 0x1000;
        assert_eq!(initrd_range(&si), Some((0x20_0000, 0x1000)));
        si.mod_len = 0x20_0000;
        assert_eq!(initrd_range(&si), Some((0x20_0000, 0x20_0000)));
        // Running into the p2m, wrapping, or given as a PFN: refused.
        si.mod_len = 0x20_0001;
        assert_eq!(initrd_range(&si), None);
        si.mod_len = u64::MAX;
        assert_eq!(initrd_range(&si), None);
        si.mod_len = 0x1000;
        si.flags = SIF_MOD_START_PFN;
        assert_eq!(initrd_range(&si), None);
    }
}
