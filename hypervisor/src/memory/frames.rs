//! The frame table (owner of every machine frame), the frame allocator and the m2p.
//!
//! INTERFACE STUB: filled in by the memory/builder work. Signatures are the contract with
//! `hv.rs` and `arch/`.

use core::ops::Range;
use guest_abi::{DomId, Mfn};

/// Machine frames the hypervisor can manage: 4 GiB of machine address space.
pub const MAX_FRAMES: usize = 1 << 20;

/// What the hypervisor knows about one machine frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct FrameInfo {
    /// Owning domain; `DomId::INVALID` = not RAM or free, see `flags`.
    pub owner: DomId,
    /// Frame state bits (private to this module).
    pub flags: u16,
}

impl FrameInfo {
    /// A frame that is not (yet) known to be usable RAM.
    pub const UNUSABLE: FrameInfo = FrameInfo {
        owner: DomId::INVALID,
        flags: 0,
    };
}

/// The frame table, the free-frame allocator and the m2p.
pub struct Frames {
    table: &'static mut [FrameInfo],
    m2p: &'static mut [u64],
}

impl Frames {
    /// Takes the (zeroed or UNUSABLE-filled) table and m2p storage, both `MAX_FRAMES`
    /// long, and the free RAM ranges (machine addresses; partial pages are ignored).
    pub fn new(
        table: &'static mut [FrameInfo],
        m2p: &'static mut [u64],
        free_ram: &[Range<u64>],
    ) -> Self {
        let _ = free_ram;
        Frames { table, m2p }
    }
    /// Allocates a frame for `owner`; its m2p entry is left invalid. Contents undefined.
    pub fn alloc(&mut self, owner: DomId) -> Option<Mfn> {
        let _ = (owner, &self.table);
        todo!()
    }
    /// Returns a frame to the allocator (m2p entry invalidated).
    pub fn free(&mut self, mfn: Mfn) {
        let _ = mfn;
        todo!()
    }
    /// Adds RAM to the allocator (e.g. the boot module after the domains are built).
    pub fn release_ram(&mut self, range: Range<u64>) {
        let _ = range;
        todo!()
    }
    /// Owner of an allocated frame (`None` if free, not RAM or out of range).
    pub fn owner(&self, mfn: Mfn) -> Option<DomId> {
        let _ = mfn;
        todo!()
    }
    /// Frees every frame of `dom`; returns how many.
    pub fn free_all_of(&mut self, dom: DomId) -> usize {
        let _ = dom;
        todo!()
    }
    /// Sets `m2p[mfn] = pfn`.
    pub fn set_m2p(&mut self, mfn: Mfn, pfn: u64) {
        let _ = (mfn, pfn, &self.m2p);
        todo!()
    }
    /// Frames currently free.
    pub fn free_count(&self) -> usize {
        todo!()
    }
}
