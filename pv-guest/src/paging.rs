//! The kernel builds its own address space, the way GRUB's `map_all_pages` does it
//! (grub-pv-guest.md §2.4) and xen.h's page-table lifecycle prescribes:
//!
//! 1. take free pseudo-physical pages beyond the start-of-day region (they are in the
//!    p2m but mapped nowhere),
//! 2. fill them as new L4/L3/L2/L1 tables through a temporary writable window (a bss page
//!    whose mapping `update_va_mapping` points at each new frame in turn), then unmap the
//!    window so no writable mapping of a table page is left,
//! 3. switch with one `mmuext_op` batch: `PIN_L4_TABLE(new)`, `NEW_BASEPTR(new)`,
//!    `UNPIN_TABLE(old)`,
//! 4. map the old bootstrap table pages writable again: this only works if dropping the
//!    old L4 released the page-table type of its L3/L2/L1 pages recursively.
//!
//! The new kernel tables map exactly what the bootstrap tables mapped in the guest half
//! (the kernel region at VIRT_BASE), with the same permissions: read-only where the boot
//! tables were read-only (their own page-table pages), writable elsewhere.
//!
//! A second, small root for guest user mode ([`build_user_root`]) maps only the pages the
//! user task needs; it is loaded with `MMUEXT_NEW_USER_BASEPTR`.

use core::sync::atomic::{AtomicU64, Ordering};

use xen_pv_abi::generated::call::mmuext_op;
use xen_pv_abi::hypercall::{UVMF_INVLPG, update_va_mapping};
use xen_pv_abi::mmu::{
    MMUEXT_NEW_BASEPTR, MMUEXT_NEW_USER_BASEPTR, MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE, MmuextOp,
};
use xen_pv_abi::{DomId, Errno};

use crate::{StartInfo, VIRT_BASE};

/// PTE bits (x86_64).
const PTE_PRESENT: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PTE_ACCESSED: u64 = 1 << 5;
const PTE_DIRTY: u64 = 1 << 6;
/// Machine-address bits of an entry.
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Flags of an entry pointing at a lower-level table, kernel or user root (the builder's
/// 0x67 minus D, which means nothing above L1): the L1 entry decides the access.
const TABLE_FLAGS: u64 = PTE_PRESENT | PTE_RW | PTE_USER | PTE_ACCESSED;

/// Entries per table.
const ENTRIES: usize = 512;
/// L4 slots Xen keeps for itself (never written by a guest, filled by the hypervisor).
const XEN_L4_SLOTS: core::ops::Range<usize> = 256..272;
/// Most tables one build may stage (each L1 covers 2 MiB of the region).
const MAX_TABLES: usize = 16;
/// Largest p2m value that can be a frame (`INVALID_MFN` and friends are above).
const MAX_MFN: u64 = (1 << 40) - 1;

/// What went wrong while building or switching.
#[derive(Clone, Copy, Debug)]
pub enum Error {
    /// A hypercall failed; the text names the step.
    Hypercall(&'static str, Errno),
    /// No free pseudo-physical page is left above the region.
    NoFreeFrames,
    /// The address space needs more tables than [`MAX_TABLES`].
    TooManyTables,
    /// A boot table points at a frame that is not one of the bootstrap table pages.
    UnknownTable(u64),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Hypercall(step, e) => write!(f, "{step}: {e}"),
            Error::NoFreeFrames => f.write_str("no free frames above the boot region"),
            Error::TooManyTables => f.write_str("too many tables to stage"),
            Error::UnknownTable(mfn) => write!(f, "boot table entry to unknown frame {mfn:#x}"),
        }
    }
}

/// What [`switch_to_own_tables`] did.
#[derive(Clone, Copy, Debug)]
pub struct Switched {
    /// Frames of the new kernel tables.
    pub frames: usize,
    /// Old bootstrap table pages mapped writable (and written) again afterwards.
    pub old_writable: usize,
    /// Bootstrap table pages there were.
    pub old_total: usize,
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The window: its mapping is pointed at each new table frame while it is filled. Only
/// accessed through raw pointers with volatile stores.
static mut WINDOW: Page = Page([0; 4096]);

/// Machine frame of the kernel L4 in use (0 until known: then the bootstrap L4).
static KERNEL_L4: AtomicU64 = AtomicU64::new(0);
/// Next free pseudo-physical page for new tables (0 until the region end is known).
static NEXT_FREE_PFN: AtomicU64 = AtomicU64::new(0);

/// New tables staged in memory before they are copied into their frames.
struct Staging {
    tables: [[u64; ENTRIES]; MAX_TABLES],
    mfns: [u64; MAX_TABLES],
    used: usize,
}

/// 64 KiB of bss: one staging area, used by one build at a time.
static STAGING: spin::Mutex<Staging> = spin::Mutex::new(Staging {
    tables: [[0; ENTRIES]; MAX_TABLES],
    mfns: [0; MAX_TABLES],
    used: 0,
});

/// The p2m entry of `pfn` (start_info's mfn_list, mapped in the boot region).
fn p2m(si: &StartInfo, pfn: u64) -> u64 {
    debug_assert!(pfn < si.nr_pages);
    let list = si.mfn_list as *const u64;
    // SAFETY: mfn_list is mapped with one entry per page of the domain; callers pass
    // `pfn < nr_pages`.
    unsafe { list.add(pfn as usize).read_volatile() }
}

/// The machine frame of kernel VA `va` in the region (mapped at VIRT_BASE + pfn * 4096).
pub fn mfn_of(si: &StartInfo, va: u64) -> u64 {
    p2m(si, (va - VIRT_BASE) >> 12)
}

/// The machine frame of the kernel L4 in use.
pub fn kernel_l4(si: &StartInfo) -> u64 {
    match KERNEL_L4.load(Ordering::Relaxed) {
        0 => mfn_of(si, si.pt_base),
        mfn => mfn,
    }
}

/// The VA at which the bootstrap table with machine frame `mfn` is mapped (read-only):
/// one of the `nr_pt_frames` pages from `pt_base`.
fn boot_table_va(si: &StartInfo, mfn: u64) -> Result<u64, Error> {
    (0..si.nr_pt_frames)
        .map(|i| si.pt_base + i * 4096)
        .find(|&va| mfn_of(si, va) == mfn)
        .ok_or(Error::UnknownTable(mfn))
}

/// Entry `index` of the bootstrap table mapped at `va`.
fn boot_entry(va: u64, index: usize) -> u64 {
    // SAFETY: `va` is a bootstrap table page (found by boot_table_va), mapped read-only in
    // the region; `index < 512`.
    unsafe { (va as *const u64).add(index).read_volatile() }
}

impl Staging {
    /// A new zeroed table on the next free frame; returns its index.
    fn alloc(&mut self, si: &StartInfo) -> Result<usize, Error> {
        if self.used == MAX_TABLES {
            return Err(Error::TooManyTables);
        }
        let pfn = NEXT_FREE_PFN.fetch_add(1, Ordering::Relaxed);
        if pfn >= si.nr_pages {
            return Err(Error::NoFreeFrames);
        }
        let mfn = p2m(si, pfn);
        if mfn > MAX_MFN {
            return Err(Error::NoFreeFrames);
        }
        let index = self.used;
        self.used += 1;
        self.tables[index] = [0; ENTRIES];
        self.mfns[index] = mfn;
        Ok(index)
    }

    /// Clones the bootstrap table at machine frame `old_mfn` (level 4..1) into new tables;
    /// returns the index of the new copy.
    fn clone_boot_table(
        &mut self,
        si: &StartInfo,
        level: u8,
        old_mfn: u64,
    ) -> Result<usize, Error> {
        let old_va = boot_table_va(si, old_mfn)?;
        let new = self.alloc(si)?;
        for i in 0..ENTRIES {
            if level == 4 && XEN_L4_SLOTS.contains(&i) {
                continue;
            }
            let old = boot_entry(old_va, i);
            if old & PTE_PRESENT == 0 {
                continue;
            }
            self.tables[new][i] = if level == 1 {
                // Same frame, same writability; a kernel mapping (no USER: the hypervisor
                // marks it as the guest kernel's).
                let rw = old & PTE_RW;
                let dirty = if rw != 0 { PTE_DIRTY } else { 0 };
                (old & PTE_ADDR) | PTE_PRESENT | PTE_ACCESSED | rw | dirty
            } else {
                let child = self.clone_boot_table(si, level - 1, (old & PTE_ADDR) >> 12)?;
                (self.mfns[child] << 12) | TABLE_FLAGS
            };
        }
        Ok(new)
    }

    /// Maps `va` to `mfn` with L1 `flags` under the user root `l4` (creating user tables).
    fn map_user(
        &mut self,
        si: &StartInfo,
        l4: usize,
        va: u64,
        mfn: u64,
        flags: u64,
    ) -> Result<(), Error> {
        let mut table = l4;
        for shift in [39u32, 30, 21] {
            let i = ((va >> shift) & 0x1ff) as usize;
            let entry = self.tables[table][i];
            table = if entry & PTE_PRESENT != 0 {
                let child_mfn = (entry & PTE_ADDR) >> 12;
                (0..self.used)
                    .find(|&t| self.mfns[t] == child_mfn)
                    .ok_or(Error::UnknownTable(child_mfn))?
            } else {
                let child = self.alloc(si)?;
                self.tables[table][i] = (self.mfns[child] << 12) | TABLE_FLAGS;
                child
            };
        }
        self.tables[table][((va >> 12) & 0x1ff) as usize] = (mfn << 12) | flags;
        Ok(())
    }

    /// Copies every staged table into its frame through the window, then unmaps the
    /// window: afterwards no writable mapping of a new table frame exists.
    fn commit(&mut self) -> Result<(), Error> {
        let window = &raw mut WINDOW;
        let va = window as u64;
        for t in 0..self.used {
            let pte = (self.mfns[t] << 12) | PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY;
            // SAFETY: the window page is ours and only accessed through raw pointers; the
            // frame is a free page of this domain, not yet a table.
            unsafe { update_va_mapping(va, pte, UVMF_INVLPG) }
                .map_err(|e| Error::Hypercall("map window", e))?;
            let dst = window.cast::<u64>();
            for (i, &entry) in self.tables[t].iter().enumerate() {
                // SAFETY: the window maps the new frame writable (above); i < 512.
                unsafe { dst.add(i).write_volatile(entry) };
            }
        }
        // SAFETY: unmapping our own window page; nothing references it.
        unsafe { update_va_mapping(va, 0, UVMF_INVLPG) }
            .map_err(|e| Error::Hypercall("unmap window", e))?;
        Ok(())
    }
}

/// One `mmuext_op` batch on DOMID_SELF.
fn mmuext(ops: &[MmuextOp], step: &'static str) -> Result<(), Error> {
    // SAFETY: `ops` is a valid array of `ops.len()` requests; no pdone.
    let ret = unsafe {
        mmuext_op(
            ops.as_ptr(),
            ops.len() as u32,
            core::ptr::null_mut(),
            u32::from(DomId::SELF.0),
        )
    };
    Errno::check(ret)
        .map(drop)
        .map_err(|e| Error::Hypercall(step, e))
}

fn ext(cmd: u32, mfn: u64) -> MmuextOp {
    MmuextOp {
        cmd,
        pad: 0,
        arg1: mfn,
        arg2: 0,
    }
}

/// The first pseudo-physical page past the start-of-day region: one past the highest
/// page the bootstrap tables map at VIRT_BASE + pfn * 4096.
fn region_end_pfn(si: &StartInfo) -> Result<u64, Error> {
    let mut end = None;
    let mut pfn = (si.pt_base - VIRT_BASE) >> 12;
    // Walk up from the tables' own pages (always inside the region) while mapped.
    while pfn < si.nr_pages && is_boot_mapped(si, VIRT_BASE + pfn * 4096)? {
        pfn += 1;
        end = Some(pfn);
    }
    end.ok_or(Error::UnknownTable(mfn_of(si, si.pt_base)))
}

/// Whether the bootstrap tables map `va` (present at every level).
fn is_boot_mapped(si: &StartInfo, va: u64) -> Result<bool, Error> {
    let mut table_va = boot_table_va(si, mfn_of(si, si.pt_base))?;
    for shift in [39u32, 30, 21, 12] {
        let entry = boot_entry(table_va, ((va >> shift) & 0x1ff) as usize);
        if entry & PTE_PRESENT == 0 {
            return Ok(false);
        }
        if shift == 12 {
            break;
        }
        table_va = boot_table_va(si, (entry & PTE_ADDR) >> 12)?;
    }
    Ok(true)
}

/// Builds new kernel tables, switches CR3 to them, unpins the bootstrap L4 and maps the
/// bootstrap table pages writable again.
pub fn switch_to_own_tables(si: &StartInfo) -> Result<Switched, Error> {
    let old_l4 = mfn_of(si, si.pt_base);
    NEXT_FREE_PFN.store(region_end_pfn(si)?, Ordering::Relaxed);
    let mut staging = STAGING.lock();
    staging.used = 0;
    let new_l4_index = staging.clone_boot_table(si, 4, old_l4)?;
    let new_l4 = staging.mfns[new_l4_index];
    staging.commit()?;
    let frames = staging.used;
    drop(staging);

    mmuext(
        &[
            ext(MMUEXT_PIN_L4_TABLE, new_l4),
            ext(MMUEXT_NEW_BASEPTR, new_l4),
            ext(MMUEXT_UNPIN_TABLE, old_l4),
        ],
        "pin/switch/unpin",
    )?;
    KERNEL_L4.store(new_l4, Ordering::Relaxed);

    // The old pages are plain memory now: map each writable and write to it.
    let mut old_writable = 0;
    for i in 0..si.nr_pt_frames {
        let va = si.pt_base + i * 4096;
        let pte = (mfn_of(si, va) << 12) | PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY;
        // SAFETY: the page was our bootstrap table, no longer in use by anyone; nothing
        // holds a reference to it.
        if unsafe { update_va_mapping(va, pte, UVMF_INVLPG) }.is_ok() {
            let p = va as *mut u64;
            // SAFETY: mapped writable just above.
            unsafe { p.write_volatile(0) };
            // SAFETY: as above.
            if unsafe { p.read_volatile() } == 0 {
                old_writable += 1;
            }
        }
    }
    Ok(Switched {
        frames,
        old_writable,
        old_total: si.nr_pt_frames as usize,
    })
}

/// A page the user task needs in its root: start VA, length in bytes, writable?
pub struct UserRange {
    pub start: u64,
    pub len: u64,
    pub writable: bool,
}

/// Builds a user-mode root that maps only `ranges` (at the same VAs as the kernel,
/// user-accessible) and loads it with `MMUEXT_NEW_USER_BASEPTR`. Returns its frame count.
pub fn install_user_root(si: &StartInfo, ranges: &[UserRange]) -> Result<usize, Error> {
    if NEXT_FREE_PFN.load(Ordering::Relaxed) == 0 {
        NEXT_FREE_PFN.store(region_end_pfn(si)?, Ordering::Relaxed);
    }
    let mut staging = STAGING.lock();
    staging.used = 0;
    let l4 = staging.alloc(si)?;
    for r in ranges {
        let first = r.start & !0xfff;
        let last = (r.start + r.len.max(1) - 1) & !0xfff;
        let flags =
            PTE_PRESENT | PTE_USER | PTE_ACCESSED | if r.writable { PTE_RW | PTE_DIRTY } else { 0 };
        for va in (first..=last).step_by(4096) {
            staging.map_user(si, l4, va, mfn_of(si, va), flags)?;
        }
    }
    staging.commit()?;
    let frames = staging.used;
    let l4_mfn = staging.mfns[l4];
    drop(staging);
    mmuext(&[ext(MMUEXT_NEW_USER_BASEPTR, l4_mfn)], "new user baseptr")?;
    Ok(frames)
}
