//! The hypervisor's page tables.
//!
//! The boot stub (boot.rs) fills [`BOOT_TABLES`]: machine memory 0–4 GiB mapped with
//! 2 MiB global pages both at 0 (only until we run high) and at the direct map (slot
//! 262); the 3–4 GiB gigabyte is uncached (MMIO). Rust then drops the identity map,
//! enforces W^X on the direct map ([`protect_image`]: the image's text RX, its rodata
//! read-only, the stack guard pages unmapped, everything else RW and NX) and adds the read-only m2p view at slot 256 for
//! guests.

use super::{Racy, virt_to_phys};
use core::mem::size_of;
use x86_64::instructions::tlb;
use x86_64::registers::control::{Cr4, Cr4Flags};

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
    // Reloading CR3 flushes non-global entries (PGE is still off at this point, so all
    // of them).
    tlb::flush_all();
}

/// 2 MiB.
const LARGE_PAGE: u64 = 2 << 20;
/// Most 2 MiB direct-map pages split into 4 KiB pages around the image's text and
/// rodata (they end well below 8 MiB).
const IMAGE_PTS: usize = 4;
/// Further 2 MiB pages split to unmap the stack guard pages (one per stack at most).
const GUARD_PTS: usize = 2;
static IMAGE_TABLES: Racy<[PageTable; IMAGE_PTS + GUARD_PTS]> =
    Racy::new([PageTable::EMPTY; IMAGE_PTS + GUARD_PTS]);

unsafe extern "C" {
    // Page-aligned section boundaries from linker.ld (virtual addresses).
    safe static __hv_text_start: u8;
    safe static __hv_rodata_start: u8;
    safe static __hv_data_start: u8;
}

/// Leaf flags of the 4 KiB page at machine address `maddr` inside the split region:
/// text RX, rodata R+NX, stack guard pages not present, everything else (boot stub, low
/// memory, data, bss) RW+NX.
fn image_page_flags(
    maddr: u64,
    text: &core::ops::Range<u64>,
    rodata_end: u64,
    guards: &[u64],
) -> u64 {
    let base = PTE_PRESENT | PTE_GLOBAL;
    if guards.contains(&maddr) {
        0
    } else if text.contains(&maddr) {
        base
    } else if (text.end..rodata_end).contains(&maddr) {
        base | PTE_NX
    } else {
        base | PTE_WRITABLE | PTE_NX
    }
}

/// W^X for the hypervisor: splits the 2 MiB direct-map pages holding the image's text and
/// rodata into 4 KiB pages (text RX, rodata R+NX, the rest RW+NX) and makes every other
/// direct-map page NX (MMIO keeps PCD/PWT). The 2 MiB pages holding the stack guard
/// pages are split too and the guards left unmapped, so a stack overflow faults. Only
/// lower levels change, so the PML4 slot that guests copy stays the same. Flushes the
/// TLB, global entries included.
///
/// # Safety
/// Call once at boot, on the higher half, with EFER.NXE set (else NX is a reserved bit),
/// before any guest L4 exists and before anything executes outside `.text`.
pub unsafe fn protect_image() {
    let text = virt_to_phys(&raw const __hv_text_start)..virt_to_phys(&raw const __hv_rodata_start);
    let rodata_end = virt_to_phys(&raw const __hv_data_start);
    let split_pages = rodata_end.div_ceil(LARGE_PAGE) as usize;
    assert!(
        split_pages <= IMAGE_PTS,
        "image text+rodata too large to split"
    );
    let guards = super::entry::stack_guard_pages().map(|g| virt_to_phys(g as *const u8));
    let is_guard_pde =
        |pde_index: usize| guards.iter().any(|&g| g / LARGE_PAGE == pde_index as u64);
    let tables = IMAGE_TABLES.get();
    let mut tables_used = 0;
    let pds = BOOT_TABLES.get();
    for pde_index in 0..4 * 512 {
        let (pd, slot) = (pde_index / 512, pde_index % 512);
        // SAFETY: boot is single-threaded; the split tables are not reachable yet and
        // the PD entries are replaced whole, each with a mapping of the same frames
        // (only permissions change, and the guard pages are never touched until a stack
        // overflows), so the code doing this keeps running.
        unsafe {
            if pde_index < split_pages || is_guard_pde(pde_index) {
                assert!(
                    tables_used < IMAGE_PTS + GUARD_PTS,
                    "too many pages to split"
                );
                let pt = &mut (*tables)[tables_used];
                tables_used += 1;
                for (i, pte) in pt.0.iter_mut().enumerate() {
                    let maddr = pde_index as u64 * LARGE_PAGE + i as u64 * 4096;
                    *pte = maddr | image_page_flags(maddr, &text, rodata_end, &guards);
                }
                // Upper levels permissive: the leaves decide.
                (*pds).pd[pd].0[slot] = virt_to_phys(pt) | PTE_PRESENT | PTE_WRITABLE;
            } else {
                (*pds).pd[pd].0[slot] |= PTE_NX;
            }
        }
    }
    flush_tlb_with_globals();
}

/// Flushes every TLB entry, global ones too (with PGE clear, a CR3 reload does that).
fn flush_tlb_with_globals() {
    let cr4 = Cr4::read();
    // SAFETY: clearing and restoring PGE only changes which translations are cached.
    unsafe { Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL) };
    tlb::flush_all();
    // SAFETY: as above.
    unsafe { Cr4::write(cr4) };
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
