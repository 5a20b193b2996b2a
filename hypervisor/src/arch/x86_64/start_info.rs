//! The PVH `hvm_start_info` (xen/include/public/arch-x86/hvm/start_info.h) and what
//! the boot sequence derives from it: RAM ranges, the boot module, free RAM.

use super::{DIRECTMAP_BASE, DIRECTMAP_SIZE};
use core::fmt;
use core::ops::Range;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const HVM_START_MAGIC: u32 = 0x336e_c578;

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct HvmStartInfo {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    /// Version 1 and later.
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}
const_assert_eq!(core::mem::size_of::<HvmStartInfo>(), 56);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, memmap_paddr), 40);

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct HvmModlistEntry {
    pub paddr: u64,
    pub size: u64,
    pub cmdline_paddr: u64,
    pub reserved: u64,
}
const_assert_eq!(core::mem::size_of::<HvmModlistEntry>(), 32);

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct HvmMemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    pub reserved: u32,
}
const_assert_eq!(core::mem::size_of::<HvmMemmapEntry>(), 24);

/// E820 type of usable RAM.
pub const MEMMAP_RAM: u32 = 1;
const MAX_MEMMAP: usize = 128;
const MAX_CMDLINE: usize = 1024;
const PAGE: u64 = 4096;
const ONE_MIB: u64 = 1 << 20;

/// Everything the boot sequence keeps from the start info (copied: the originals sit in
/// memory that is not protected from anyone).
pub struct BootInfo {
    pub memmap: heapless::Vec<HvmMemmapEntry, MAX_MEMMAP>,
    /// The first module, `[paddr, paddr + size)`.
    pub module: Option<Range<u64>>,
    pub cmdline: heapless::Vec<u8, MAX_CMDLINE>,
}

/// Reads a `T` at a physical address below 4 GiB through the direct map.
fn read_phys<T: FromBytes>(paddr: u64) -> T {
    let end = paddr.checked_add(core::mem::size_of::<T>() as u64);
    assert!(
        end.is_some_and(|e| e <= DIRECTMAP_SIZE),
        "boot info at {paddr:#x} is beyond the direct map"
    );
    // SAFETY: the range is inside the direct map (checked); T is FromBytes, so any bytes
    // are a valid T; read_unaligned makes no alignment assumption.
    unsafe { core::ptr::read_unaligned((DIRECTMAP_BASE + paddr) as *const T) }
}

/// Copies the start info at `paddr`. Panics (hypervisor failure) if it is not a PVH
/// start info with a memory map: without one we cannot know where RAM is.
pub fn read(paddr: u64) -> BootInfo {
    let si: HvmStartInfo = read_phys(paddr);
    assert!(
        si.magic == HVM_START_MAGIC,
        "bad hvm_start_info magic {:#x}",
        si.magic
    );
    assert!(
        si.version >= 1 && si.memmap_entries > 0,
        "hvm_start_info has no memory map"
    );

    let mut memmap = heapless::Vec::new();
    for i in 0..u64::from(si.memmap_entries) {
        let e: HvmMemmapEntry = read_phys(si.memmap_paddr + i * 24);
        if e.size == 0 {
            continue; // microvm ends its map with an empty entry
        }
        if memmap.push(e).is_err() {
            break;
        }
    }

    let module = if si.nr_modules == 0 {
        None
    } else {
        let m: HvmModlistEntry = read_phys(si.modlist_paddr);
        m.paddr.checked_add(m.size).map(|end| m.paddr..end)
    };

    let mut cmdline = heapless::Vec::new();
    if si.cmdline_paddr != 0 {
        for i in 0..MAX_CMDLINE as u64 {
            let b: u8 = read_phys(si.cmdline_paddr + i);
            if b == 0 || cmdline.push(b).is_err() {
                break;
            }
        }
    }
    BootInfo {
        memmap,
        module,
        cmdline,
    }
}

/// RAM (type 1) below 4 GiB, page-aligned, sorted, adjacent ranges merged.
pub fn ram_below_4g(memmap: &[HvmMemmapEntry]) -> heapless::Vec<Range<u64>, 32> {
    let mut ram: heapless::Vec<Range<u64>, 32> = heapless::Vec::new();
    for e in memmap.iter().filter(|e| e.kind == MEMMAP_RAM) {
        let start = e.addr.div_ceil(PAGE) * PAGE;
        let end = e.addr.saturating_add(e.size).min(DIRECTMAP_SIZE) / PAGE * PAGE;
        if start < end && ram.push(start..end).is_err() {
            break;
        }
    }
    crate::sort::sort_unstable_by_key(&mut ram, |r| r.start);
    let mut merged: heapless::Vec<Range<u64>, 32> = heapless::Vec::new();
    for r in ram {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => {
                let _ = merged.push(r);
            }
        }
    }
    merged
}

/// `r` widened to whole pages.
pub fn page_round(r: &Range<u64>) -> Range<u64> {
    (r.start / PAGE * PAGE)..r.end.saturating_add(PAGE - 1) / PAGE * PAGE
}

/// RAM the frame allocator may hand out: `ram` from 1 MiB up, minus the hypervisor image
/// and the boot module.
pub fn free_ram(
    ram: &[Range<u64>],
    image: &Range<u64>,
    module: Option<&Range<u64>>,
) -> heapless::Vec<Range<u64>, 64> {
    let mut free: heapless::Vec<Range<u64>, 64> = heapless::Vec::new();
    for r in ram {
        let r = r.start.max(ONE_MIB)..r.end;
        if r.start < r.end {
            let _ = free.push(r);
        }
    }
    for hole in core::iter::once(image).chain(module) {
        let mut next: heapless::Vec<Range<u64>, 64> = heapless::Vec::new();
        for r in &free {
            let below = r.start..r.end.min(hole.start);
            let above = r.start.max(hole.end)..r.end;
            for piece in [below, above] {
                if piece.start < piece.end {
                    let _ = next.push(piece);
                }
            }
        }
        free = next;
    }
    free
}

/// Displays bytes as text, with anything but printable ASCII as `?`.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            let c = if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}
