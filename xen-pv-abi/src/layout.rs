//! Address-space layout and segment selectors of a 64-bit PV guest
//! (`arch-x86/xen-x86_64.h`, `arch-x86/xen.h`).

/// log2 of the page size.
pub const PAGE_SHIFT: u32 = 12;
/// Page size in bytes.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// Start of the range reserved for the hypervisor (PML4 slot 256).
pub const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;
/// End (exclusive) of the range reserved for the hypervisor (PML4 slot 272).
pub const HYPERVISOR_VIRT_END: u64 = 0xffff_8800_0000_0000;
/// First PML4 slot reserved for the hypervisor.
pub const FIRST_HYPERVISOR_L4_SLOT: usize = 256;
/// Last PML4 slot reserved for the hypervisor (inclusive).
pub const LAST_HYPERVISOR_L4_SLOT: usize = 271;
/// Where the read-only machine-to-physical table is mapped in every PV guest.
pub const MACH2PHYS_VIRT_START: u64 = 0xffff_8000_0000_0000;
/// End (exclusive) of the machine-to-physical table window.
pub const MACH2PHYS_VIRT_END: u64 = 0xffff_8040_0000_0000;
/// Value of an m2p entry for a frame that maps no guest pseudo-physical page.
pub const INVALID_M2P_ENTRY: u64 = !0;

/// 32-bit ring-3 code selector.
pub const FLAT_RING3_CS32: u16 = 0xe023;
/// 64-bit ring-3 code selector (the 64-bit PV kernel and user space run on it).
pub const FLAT_RING3_CS64: u16 = 0xe033;
/// 32-bit ring-3 data selector.
pub const FLAT_RING3_DS32: u16 = 0xe02b;
/// 32-bit ring-3 stack selector.
pub const FLAT_RING3_SS32: u16 = 0xe02b;
/// 64-bit ring-3 data selector (null).
pub const FLAT_RING3_DS64: u16 = 0x0000;
/// 64-bit ring-3 stack selector.
pub const FLAT_RING3_SS64: u16 = 0xe02b;
/// Kernel code selector of a 64-bit PV guest (= ring-3 value).
pub const FLAT_KERNEL_CS64: u16 = FLAT_RING3_CS64;
/// Kernel stack selector of a 64-bit PV guest (= ring-3 value).
pub const FLAT_KERNEL_SS64: u16 = FLAT_RING3_SS64;
/// Kernel data selector of a 64-bit PV guest (null).
pub const FLAT_KERNEL_DS64: u16 = FLAT_RING3_DS64;
/// User code selector of a 64-bit PV guest.
pub const FLAT_USER_CS64: u16 = FLAT_RING3_CS64;
/// User stack selector of a 64-bit PV guest.
pub const FLAT_USER_SS64: u16 = FLAT_RING3_SS64;
/// First GDT entry reserved for the hypervisor (guests own entries below it).
pub const FIRST_RESERVED_GDT_ENTRY: usize = 7168;

/// Whether `va` lies in the range a PV guest may never access or map.
pub const fn in_hypervisor_range(va: u64) -> bool {
    va >= HYPERVISOR_VIRT_START && va < HYPERVISOR_VIRT_END
}

/// Whether `va` is canonical for 48-bit virtual addresses.
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_sit_in_the_reserved_gdt_page() {
        for sel in [FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS32] {
            assert!((sel as usize >> 3) >= FIRST_RESERVED_GDT_ENTRY);
            assert_eq!(sel & 3, 3, "ring-3 RPL");
        }
        assert!(in_hypervisor_range(0xffff_82d0_8000_0000));
        assert!(!in_hypervisor_range(0xffff_ffff_8000_0000));
        assert!(is_canonical(0xffff_ffff_8000_0000));
        assert!(!is_canonical(0x0000_8000_0000_0000));
    }
}
