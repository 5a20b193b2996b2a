//! [`MachineMemory`] over the direct map.

use super::DIRECTMAP_BASE;
use super::DIRECTMAP_SIZE;
use crate::platform::{BadMaddr, MachineMemory};
use core::ops::Range;

/// Most distinct RAM ranges kept (after merging adjacent ones).
pub const MAX_RAM_RANGES: usize = 32;

/// Machine memory below 4 GiB, reached through the direct map. Only RAM (from the PVH
/// memory map) is accessible: MMIO and holes are refused.
pub struct DirectMap {
    ram: heapless::Vec<Range<u64>, MAX_RAM_RANGES>,
    /// The largest of `ram`, checked first: nearly every access lands there.
    main: Range<u64>,
}

impl DirectMap {
    /// `ram`: RAM ranges below 4 GiB, sorted, merged (see `start_info::ram_below_4g`).
    pub fn new(ram: &[Range<u64>]) -> Self {
        let mut v = heapless::Vec::new();
        for r in ram {
            if r.end <= DIRECTMAP_SIZE && v.push(r.clone()).is_err() {
                break;
            }
        }
        let main = v
            .iter()
            .max_by_key(|r| r.end - r.start)
            .cloned()
            .unwrap_or(0..0);
        DirectMap { ram: v, main }
    }

    /// Whether `[maddr, maddr + len)` lies inside one RAM range.
    #[inline]
    pub fn contains(&self, maddr: u64, len: u64) -> bool {
        let Some(end) = maddr.checked_add(len) else {
            return false;
        };
        (self.main.start <= maddr && end <= self.main.end)
            || self.ram.iter().any(|r| r.start <= maddr && end <= r.end)
    }

    #[inline]
    fn ptr(&self, maddr: u64, len: usize) -> Result<*mut u8, BadMaddr> {
        if self.contains(maddr, len as u64) {
            Ok((DIRECTMAP_BASE + maddr) as *mut u8)
        } else {
            Err(BadMaddr(maddr))
        }
    }
}

/// Copies `len` bytes from `src` to `dst`. A copy of 8..=32 bytes whose size is only
/// known at run time (a batch of one `mmu_update` request or `mmuext_op`) is a few
/// overlapping 8-byte moves instead of a call to `memcpy`; a size known at compile time
/// folds to its own moves either way.
///
/// # Safety
///
/// As for `core::ptr::copy_nonoverlapping`: `src` readable and `dst` writable for `len`
/// bytes, the two ranges disjoint.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    if (8..=32).contains(&len) {
        // SAFETY: both ranges hold `len >= 8` bytes; every 8-byte access below starts at
        // 0, 8 (only when `len > 16`), `len - 16` (only when `len > 16`) or `len - 8`, so
        // lies inside them. Unaligned accesses of values, no references. The ranges are
        // disjoint, so loads and stores do not interfere; overlapping stores write the
        // same bytes twice.
        unsafe {
            let load = |at: usize| core::ptr::read_unaligned(src.add(at) as *const u64);
            let store = |at: usize, v: u64| core::ptr::write_unaligned(dst.add(at) as *mut u64, v);
            if len > 16 {
                let (a, b, c, d) = (load(0), load(8), load(len - 16), load(len - 8));
                store(0, a);
                store(8, b);
                store(len - 16, c);
                store(len - 8, d);
            } else {
                let (a, d) = (load(0), load(len - 8));
                store(0, a);
                store(len - 8, d);
            }
        }
    } else {
        // SAFETY: the caller's contract.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, len) }
    }
}

impl MachineMemory for DirectMap {
    #[inline]
    fn read(&self, maddr: u64, buf: &mut [u8]) -> Result<(), BadMaddr> {
        let src = self.ptr(maddr, buf.len())?;
        // SAFETY: `src..src+len` is mapped RAM (checked); `buf` is a distinct Rust
        // buffer. Raw copy, no reference into machine memory is created.
        unsafe { copy_bytes(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    #[inline]
    fn write(&self, maddr: u64, data: &[u8]) -> Result<(), BadMaddr> {
        let dst = self.ptr(maddr, data.len())?;
        // SAFETY: as in `read`. The core only writes frames it owns (guest frames,
        // never the hypervisor image: that is not handed to the allocator).
        unsafe { copy_bytes(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    #[inline]
    fn fill(&self, maddr: u64, byte: u8, len: usize) -> Result<(), BadMaddr> {
        let dst = self.ptr(maddr, len)?;
        // SAFETY: as in `write`.
        unsafe { core::ptr::write_bytes(dst, byte, len) };
        Ok(())
    }

    #[inline]
    fn read_u64(&self, maddr: u64) -> Result<u64, BadMaddr> {
        let src = self.ptr(maddr, 8)?;
        // SAFETY: 8 mapped RAM bytes (checked); unaligned volatile-free raw read.
        Ok(u64::from_le(unsafe {
            core::ptr::read_unaligned(src as *const u64)
        }))
    }

    #[inline]
    fn write_u64(&self, maddr: u64, v: u64) -> Result<(), BadMaddr> {
        let dst = self.ptr(maddr, 8)?;
        // SAFETY: as in `write`.
        unsafe { core::ptr::write_unaligned(dst as *mut u64, v.to_le()) };
        Ok(())
    }

    #[inline]
    fn read_u8(&self, maddr: u64) -> Result<u8, BadMaddr> {
        let src = self.ptr(maddr, 1)?;
        // SAFETY: one mapped RAM byte (checked); raw read, no reference created.
        Ok(unsafe { core::ptr::read(src) })
    }

    #[inline]
    fn write_u8(&self, maddr: u64, v: u8) -> Result<(), BadMaddr> {
        let dst = self.ptr(maddr, 1)?;
        // SAFETY: as in `write`.
        unsafe { core::ptr::write(dst, v) };
        Ok(())
    }

    #[inline]
    fn fetch_or_u8(&self, maddr: u64, bits: u8) -> Result<u8, BadMaddr> {
        let dst = self.ptr(maddr, 1)?;
        // SAFETY: one mapped RAM byte (checked), always aligned for a u8; the atomic
        // view exists only for this one locked `or`, which the guest cannot tear.
        let byte = unsafe { core::sync::atomic::AtomicU8::from_ptr(dst) };
        Ok(byte.fetch_or(bits, core::sync::atomic::Ordering::SeqCst))
    }

    #[inline]
    fn copy(&self, from: u64, to: u64, len: usize) -> Result<(), BadMaddr> {
        let src = self.ptr(from, len)?;
        let dst = self.ptr(to, len)?;
        // SAFETY: both ranges are mapped RAM (checked); `copy` allows them to overlap.
        // Raw pointers only, no reference into machine memory is created.
        unsafe { core::ptr::copy(src as *const u8, dst, len) };
        Ok(())
    }

    #[inline]
    fn fetch_and_u8(&self, maddr: u64, bits: u8) -> Result<u8, BadMaddr> {
        let dst = self.ptr(maddr, 1)?;
        // SAFETY: as in `fetch_or_u8`: one checked, aligned RAM byte, one locked `and`.
        let byte = unsafe { core::sync::atomic::AtomicU8::from_ptr(dst) };
        Ok(byte.fetch_and(bits, core::sync::atomic::Ordering::SeqCst))
    }

    #[inline]
    fn cmpxchg_u32(&self, maddr: u64, current: u32, new: u32) -> Result<u32, BadMaddr> {
        // An atomic view needs natural alignment; a misaligned address is refused.
        if !maddr.is_multiple_of(4) {
            return Err(BadMaddr(maddr));
        }
        let dst = self.ptr(maddr, 4)?;
        // SAFETY: 4 mapped RAM bytes (checked), 4-byte aligned (checked; the direct map
        // keeps the alignment of machine addresses); the atomic view exists only for
        // this one locked `cmpxchg`, no reference outlives it.
        let word = unsafe { core::sync::atomic::AtomicU32::from_ptr(dst as *mut u32) };
        let r = word.compare_exchange(
            current.to_le(),
            new.to_le(),
            core::sync::atomic::Ordering::SeqCst,
            core::sync::atomic::Ordering::SeqCst,
        );
        Ok(u32::from_le(r.unwrap_or_else(|v| v)))
    }
}
