//! The hypervisor's page tables.
//!
//! The boot stub (boot.rs) fills [`BOOT_TABLES`]: machine memory 0–4 GiB mapped with
//! 2 MiB global pages both at 0 (only until we run high) and at the direct map (slot
//! 262); the 3–4 GiB gigabyte is uncached (MMIO). Rust then adds the read-only m2p view
//! at slot 256 for guests, and drops the identity map.

use super::cpu::{read_cr3, write_cr3};
use super::{Racy, virt_to_phys};
use core::mem::size_of;

pub const PTE_PRESENT: u64 = 1 << 0;
pub const PTE_WRITABLE: u64 = 1 << 1;
pub const PTE_USER: u64 = 1 << 2;
pub const PTE_GLOBAL: u64 = 1 << 8;
pub const PTE_NX: u64 = 1 << 63;

/// One page-table page.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct PageTable(pub [u64; 512]);

impl PageTable {
    pub const EMPTY: PageTable = PageTable([0; 512]);
}

/// The tables the boot stub builds (layout known to boot.rs: PML4, PDPT, 4 PDs).
#[repr(C)]
pub struct BootTables {
    pub pml4: PageTable,
    pub pdpt: PageTable,
    pub pd: [PageTable; 4],
}

/// Number of 4 KiB pages in `BootTables` (for the boot stub).
pub const BOOT_TABLES_PAGES: usize = size_of::<BootTables>() / 4096;

pub static BOOT_TABLES: Racy<BootTables> = Racy::new(BootTables {
    pml4: PageTable::EMPTY,
    pdpt: PageTable::EMPTY,
    pd: [PageTable::EMPTY; 4],
});

/// PML4 slot of the guest-visible m2p (MACH2PHYS_VIRT_START).
pub const M2P_SLOT: usize = 256;
/// PML4 slot of the direct map.
pub const DIRECTMAP_SLOT: usize = 262;
/// First and last PML4 slot the hypervisor owns in every address space.
pub const HV_FIRST_SLOT: usize = 256;
pub const HV_SLOTS: usize = 16;

/// Tables of the m2p window: slot 256 → PDPT → PD → up to 4 PTs (8 MiB of m2p = 1 Mi
/// frames × 8 bytes).
#[repr(C)]
struct M2pTables {
    pdpt: PageTable,
    pd: PageTable,
    pt: [PageTable; M2P_PTS],
}
const M2P_PTS: usize = 4;

static M2P_TABLES: Racy<M2pTables> = Racy::new(M2pTables {
    pdpt: PageTable::EMPTY,
    pd: PageTable::EMPTY,
    pt: [PageTable::EMPTY; M2P_PTS],
});

/// Removes the identity map of the boot stub and flushes it from the TLB.
///
/// # Safety
/// Must run on the higher half, before anything uses an identity-mapped address again.
pub unsafe fn drop_identity_map() {
    let t = BOOT_TABLES.get();
    // SAFETY: boot is single-threaded; the PML4 is live but slot 0 is only used by the
    // boot stub, which is done (the caller guarantees we run high).
    unsafe { (*t).pml4.0[0] = 0 };
    // SAFETY: reloading the same CR3 flushes non-global entries (PGE is still off at
    // this point, so all of them).
    unsafe { write_cr3(read_cr3()) };
}

/// Maps the m2p array (`m2p_virt`, `len_bytes` long, page-aligned, in the image) at
/// slot 256: present, user, read-only, NX, global. Upper levels are user-accessible so
/// the leaf permissions decide.
///
/// # Safety
/// Call once at boot; `m2p_virt` must be a page-aligned hypervisor static of at most
/// 8 MiB.
pub unsafe fn map_m2p(m2p_virt: *const u8, len_bytes: usize) {
    let pages = len_bytes.div_ceil(4096);
    assert!(pages <= M2P_PTS * 512, "m2p larger than its window");
    let t = M2P_TABLES.get();
    let base = virt_to_phys(m2p_virt);
    let upper = PTE_PRESENT | PTE_WRITABLE | PTE_USER;
    // SAFETY: boot is single-threaded and these tables are not yet reachable from CR3.
    unsafe {
        for i in 0..pages {
            (*t).pt[i / 512].0[i % 512] =
                (base + (i as u64) * 4096) | PTE_PRESENT | PTE_USER | PTE_GLOBAL | PTE_NX;
        }
        for i in 0..M2P_PTS {
            (*t).pd.0[i] = virt_to_phys(&raw const (*t).pt[i]) | upper;
        }
        (*t).pdpt.0[0] = virt_to_phys(&raw const (*t).pd) | upper;
        (*BOOT_TABLES.get()).pml4.0[M2P_SLOT] = virt_to_phys(&raw const (*t).pdpt) | upper;
    }
}

/// The hypervisor's PML4 entries 256..=271, which every guest L4 carries.
pub fn hypervisor_l4_slots() -> [u64; HV_SLOTS] {
    let mut slots = [0; HV_SLOTS];
    // SAFETY: reading the live PML4 (single CPU, nobody writes it concurrently).
    let pml4 = unsafe { &(*BOOT_TABLES.get()).pml4.0 };
    slots.copy_from_slice(&pml4[HV_FIRST_SLOT..HV_FIRST_SLOT + HV_SLOTS]);
    slots
}

/// Machine address of the hypervisor's own PML4 (the CR3 when no guest runs).
pub fn hypervisor_cr3() -> u64 {
    // `pml4` is the first field of the repr(C) `BootTables`.
    virt_to_phys(BOOT_TABLES.get())
}
