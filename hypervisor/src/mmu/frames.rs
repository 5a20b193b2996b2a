//! The frame table (owner, page type, type count, reference count and pin of every machine
//! frame), the frame allocator and the m2p.
//!
//! This module only keeps the bookkeeping; the typing rules (what may become a page
//! table, recursive validation) live in `memory::pagetable`.
//!
//! The table and the m2p are caller-provided `'static` storage (the arch layer keeps them
//! in its image; the m2p is also mapped read-only into every guest), so this module never
//! allocates. Free frames are found through per-group free counters: a group of
//! [`GROUP_FRAMES`] frames is only scanned when its counter says it holds a free frame, so
//! one allocation touches at most `GROUPS + GROUP_FRAMES` entries, never the whole table.

use alloc::vec::Vec;
use core::ops::Range;
use xen_pv_abi::layout::{INVALID_M2P_ENTRY, PAGE_SIZE};
use xen_pv_abi::{DomId, Mfn};

/// Machine frames the hypervisor can manage: 4 GiB of machine address space.
pub const MAX_FRAMES: usize = 1 << 20;

/// Frames per allocator group (one free counter each).
const GROUP_FRAMES: usize = 1024;
/// Number of allocator groups covering `MAX_FRAMES`.
const GROUPS: usize = MAX_FRAMES / GROUP_FRAMES;

/// `FrameInfo::flags`: the frame is RAM and free.
const FLAG_FREE: u16 = 1 << 0;
/// `FrameInfo::flags`: the frame is RAM and belongs to `owner`.
const FLAG_ALLOCATED: u16 = 1 << 1;

/// `FrameInfo::flags`: the page type (a [`PageType`]) in bits 2..=4.
const TYPE_SHIFT: u16 = 2;
const TYPE_MASK: u16 = 0b111 << TYPE_SHIFT;
/// `FrameInfo::flags`: the domain pinned this page table (one type reference).
const FLAG_PINNED: u16 = 1 << 5;
/// `FrameInfo::flags` bits 6..=15: an interrupted (de)validation of this page table
/// ([`Partial`]), stored as `next << 1 | set`; 0 = none (`next == 0 && !set` is never a
/// partial state: nothing would be held).
const PARTIAL_SHIFT: u16 = 6;
const PARTIAL_MASK: u16 = 0x3ff << PARTIAL_SHIFT;

/// What a frame is used as (Xen's `PGT_*` types). A frame holds one type while its type
/// count is non-zero; at count 0 the type means nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum PageType {
    /// No use recorded.
    None = 0,
    /// Mapped writable somewhere (or held writable by the hypervisor).
    Writable = 1,
    /// Level-1 page table.
    L1 = 2,
    /// Level-2 page table.
    L2 = 3,
    /// Level-3 page table.
    L3 = 4,
    /// Level-4 page table.
    L4 = 5,
    /// GDT/LDT page.
    SegDesc = 6,
}

impl PageType {
    const fn from_bits(bits: u16) -> PageType {
        match bits {
            1 => PageType::Writable,
            2 => PageType::L1,
            3 => PageType::L2,
            4 => PageType::L3,
            5 => PageType::L4,
            6 => PageType::SegDesc,
            _ => PageType::None,
        }
    }

    /// The page-table level (1..=4), if this is a page-table type.
    pub const fn pt_level(self) -> Option<u32> {
        match self {
            PageType::L1 => Some(1),
            PageType::L2 => Some(2),
            PageType::L3 => Some(3),
            PageType::L4 => Some(4),
            _ => None,
        }
    }

    /// The page-table type of `level` (1..=4).
    pub const fn of_level(level: u32) -> Option<PageType> {
        match level {
            1 => Some(PageType::L1),
            2 => Some(PageType::L2),
            3 => Some(PageType::L3),
            4 => Some(PageType::L4),
            _ => None,
        }
    }
}

/// The typing state of an allocated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeState {
    /// Current type (meaningless when `count` is 0).
    pub ty: PageType,
    /// Type references: mappings, higher-level entries, pins, CR3 loads.
    pub count: u32,
    /// Whether the domain pinned it (the pin holds one of `count`).
    pub pinned: bool,
}

/// Where an interrupted validation or devalidation of a page table stands (Xen's
/// `PGT_partial` with `nr_validated_ptes` and `PTF_partial_set`). While a frame has one
/// its type count is 1, owned by this state together with one general reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partial {
    /// Entries `0..next` hold their references; the later ones hold none, except:
    pub next: u16,
    /// entry `next` holds a general reference on its target, whose own (de)validation
    /// was interrupted (the target may have been taken over since).
    pub set: bool,
}

impl Partial {
    /// Largest storable `next`.
    pub const MAX_NEXT: u16 = 511;
}

/// What the hypervisor knows about one machine frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct FrameInfo {
    /// Owning domain; `DomId::INVALID` = not RAM or free, see `flags`.
    pub owner: DomId,
    /// Frame state bits (private to this module).
    pub flags: u16,
    /// Type references (see [`TypeState`]).
    type_count: u32,
    /// General references: every mapping, table entry, pin or CR3 load of the frame,
    /// whatever its type.
    ref_count: u32,
}

impl FrameInfo {
    /// A frame that is not (yet) known to be usable RAM.
    pub const UNUSABLE: FrameInfo = FrameInfo {
        owner: DomId::INVALID,
        flags: 0,
        type_count: 0,
        ref_count: 0,
    };
    /// A free RAM frame.
    const FREE: FrameInfo = FrameInfo {
        owner: DomId::INVALID,
        flags: FLAG_FREE,
        type_count: 0,
        ref_count: 0,
    };

    fn is_free(self) -> bool {
        self.flags & FLAG_FREE != 0
    }
    fn is_allocated(self) -> bool {
        self.flags & FLAG_ALLOCATED != 0
    }
}

/// The frame table, the free-frame allocator and the m2p.
pub struct Frames {
    table: &'static mut [FrameInfo],
    m2p: &'static mut [u64],
    /// Frames this instance manages: `min(table, m2p, MAX_FRAMES)`.
    len: usize,
    /// Free frames per group.
    group_free: [u16; GROUPS],
    /// Total free frames.
    free: usize,
    /// Group where the next allocation starts looking (next-fit).
    hint: usize,
    /// Highest frame ever handed to the allocator (`XENMEM_maximum_ram_page`).
    max_ram: u64,
    /// Allocated frames per owner, sorted by owner (a domain's `tot_pages` without a
    /// scan of the table).
    owned: Vec<(DomId, usize)>,
    /// Page-table entries validated or devalidated so far (wrapping): lets a batch
    /// bound the work of one entry into the hypervisor.
    work: u64,
    /// Guest translations remembered by `mmu::guest`; every change of a frame's owner or
    /// type forgets them (as does every page-table entry written, `PtCtx`).
    pub(crate) tlb: super::guest::Tlb,
    /// A page-table write removed or reduced rights (another frame, no longer present
    /// or no longer writable) that the hardware TLB may still hold: the hypercall must
    /// flush it before the guest runs again ([`Frames::take_hw_flush`]).
    hw_flush: bool,
}

impl Frames {
    /// Takes the (zeroed or UNUSABLE-filled) table and m2p storage, both `MAX_FRAMES`
    /// long, and the free RAM ranges (machine addresses; partial pages are ignored).
    ///
    /// The whole table is reset to UNUSABLE and the whole m2p to `INVALID_M2P_ENTRY`
    /// whatever the storage held. Shorter storage is accepted (host tests): frames beyond
    /// it are simply never free.
    pub fn new(
        table: &'static mut [FrameInfo],
        m2p: &'static mut [u64],
        free_ram: &[Range<u64>],
    ) -> Self {
        table.fill(FrameInfo::UNUSABLE);
        m2p.fill(INVALID_M2P_ENTRY);
        let len = table.len().min(m2p.len()).min(MAX_FRAMES);
        let mut frames = Frames {
            table,
            m2p,
            len,
            group_free: [0; GROUPS],
            free: 0,
            hint: 0,
            max_ram: 0,
            owned: Vec::new(),
            work: 0,
            tlb: super::guest::Tlb::new(),
            hw_flush: false,
        };
        for range in free_ram {
            frames.release_ram(range.clone());
        }
        frames
    }

    /// Allocates a frame for `owner`; its m2p entry is left invalid. Contents undefined.
    ///
    /// `None` when no frame is free, or `owner` is `DomId::INVALID` (which would make an
    /// allocated frame look free to `owner()`).
    pub fn alloc(&mut self, owner: DomId) -> Option<Mfn> {
        if self.free == 0 || owner == DomId::INVALID {
            return None;
        }
        let slot = match self.owned.binary_search_by_key(&owner, |e| e.0) {
            Ok(k) => k,
            Err(k) => {
                // A new owner (domain build): no frame if its counter cannot be kept.
                self.owned.try_reserve(1).ok()?;
                self.owned.insert(k, (owner, 0));
                k
            }
        };
        for step in 0..GROUPS {
            let group = (self.hint + step) % GROUPS;
            if self.group_free[group] == 0 {
                continue;
            }
            let start = group * GROUP_FRAMES;
            let end = (start + GROUP_FRAMES).min(self.len);
            let found = (start..end).find(|&i| self.table[i].is_free());
            // The counter said there is one; if not, the table is corrupt: keep looking
            // elsewhere rather than trusting it.
            let Some(i) = found else { continue };
            self.tlb.flush();
            self.table[i] = FrameInfo {
                owner,
                flags: FLAG_ALLOCATED,
                type_count: 0,
                ref_count: 0,
            };
            self.m2p[i] = INVALID_M2P_ENTRY;
            self.group_free[group] -= 1;
            self.free -= 1;
            self.hint = group;
            self.owned[slot].1 += 1;
            return Some(Mfn(i as u64));
        }
        if self.owned[slot].1 == 0 {
            self.owned.remove(slot);
        }
        None
    }

    /// Returns a frame to the allocator (m2p entry invalidated).
    ///
    /// A frame that is not allocated (free, not RAM, out of range) is left alone: the
    /// call may come from a guest-reachable path.
    pub fn free(&mut self, mfn: Mfn) {
        let Some(i) = self.index(mfn) else { return };
        if !self.table[i].is_allocated() {
            return;
        }
        self.mark_free(i);
    }

    /// Adds RAM to the allocator (e.g. the boot module after the domains are built).
    ///
    /// Only whole pages inside `range` are added. Frames already free or allocated are
    /// left as they are, so releasing a range twice is harmless.
    pub fn release_ram(&mut self, range: Range<u64>) {
        let page = PAGE_SIZE as u64;
        let Some(first) = range.start.checked_add(page - 1).map(|a| a / page) else {
            return;
        };
        let end = (range.end / page).min(self.len as u64);
        for i in first..end {
            let i = i as usize;
            if self.table[i] == FrameInfo::UNUSABLE {
                self.mark_free(i);
            }
        }
    }

    /// Owner of an allocated frame (`None` if free, not RAM or out of range).
    #[inline]
    pub fn owner(&self, mfn: Mfn) -> Option<DomId> {
        let info = self.table[self.index(mfn)?];
        info.is_allocated().then_some(info.owner)
    }

    /// Frees every frame of `dom`; returns how many.
    pub fn free_all_of(&mut self, dom: DomId) -> usize {
        let mut count = 0;
        for i in 0..self.len {
            let info = self.table[i];
            if info.is_allocated() && info.owner == dom {
                self.mark_free(i);
                count += 1;
            }
        }
        count
    }

    /// Frees every frame of `dom` but those `keep` says to keep; returns how many.
    pub fn free_all_of_keeping(&mut self, dom: DomId, keep: impl Fn(Mfn) -> bool) -> usize {
        let mut count = 0;
        for i in 0..self.len {
            let info = self.table[i];
            let mfn = Mfn(i as u64);
            if info.is_allocated() && info.owner == dom && !keep(mfn) {
                self.mark_free(i);
                count += 1;
            }
        }
        count
    }

    /// Sets `m2p[mfn] = pfn`.
    ///
    /// Ignored for frames that are not allocated (free frames keep an invalid entry).
    pub fn set_m2p(&mut self, mfn: Mfn, pfn: u64) {
        if self.owner(mfn).is_some() {
            // `owner` succeeded, so the index is in range.
            self.m2p[mfn.0 as usize] = pfn;
        }
    }

    /// `m2p[mfn]`, or `None` if `mfn` is beyond the table.
    pub fn m2p(&self, mfn: Mfn) -> Option<u64> {
        self.index(mfn).map(|i| self.m2p[i])
    }

    /// Typing state of an allocated frame (`None` if free, not RAM or out of range).
    pub fn type_state(&self, mfn: Mfn) -> Option<TypeState> {
        let i = self.index(mfn)?;
        let info = self.table[i];
        info.is_allocated().then_some(TypeState {
            ty: PageType::from_bits((info.flags & TYPE_MASK) >> TYPE_SHIFT),
            count: info.type_count,
            pinned: info.flags & FLAG_PINNED != 0,
        })
    }

    /// Records the typing state of an allocated frame (ignored for any other frame).
    pub fn set_type_state(&mut self, mfn: Mfn, st: TypeState) {
        let Some(i) = self.index(mfn) else { return };
        let info = &mut self.table[i];
        if !info.is_allocated() {
            return;
        }
        // Only a change of the type in force (a count going to or from 0 included) can
        // change what a remembered walk would find; another count of the same type not.
        let was = (info.type_count != 0).then_some((info.flags & TYPE_MASK) >> TYPE_SHIFT);
        let now = (st.count != 0).then_some(st.ty as u16);
        if was != now {
            self.tlb.flush();
        }
        let mut flags = info.flags & !(TYPE_MASK | FLAG_PINNED);
        flags |= (st.ty as u16) << TYPE_SHIFT;
        if st.pinned {
            flags |= FLAG_PINNED;
        }
        info.flags = flags;
        info.type_count = st.count;
    }

    /// The level (1..=4) of `mfn` if it is a page table of `dom` in force: owned by
    /// `dom`, an `Ln` type with a non-zero count, not partial. One look at the frame.
    pub fn table_level(&self, mfn: Mfn, dom: DomId) -> Option<u32> {
        let info = self.table[self.index(mfn)?];
        if !info.is_allocated()
            || info.owner != dom
            || info.type_count == 0
            || info.flags & PARTIAL_MASK != 0
        {
            return None;
        }
        PageType::from_bits((info.flags & TYPE_MASK) >> TYPE_SHIFT).pt_level()
    }

    /// The interrupted (de)validation of an allocated frame, if any.
    pub fn partial(&self, mfn: Mfn) -> Option<Partial> {
        let info = self.table[self.index(mfn)?];
        let bits = (info.flags & PARTIAL_MASK) >> PARTIAL_SHIFT;
        (info.is_allocated() && bits != 0).then_some(Partial {
            next: bits >> 1,
            set: bits & 1 != 0,
        })
    }

    /// Records (or clears) the interrupted (de)validation of an allocated frame; `false`
    /// (nothing recorded) if the frame is not allocated or `p` cannot be stored
    /// (`next > Partial::MAX_NEXT`, or `next == 0 && !set`).
    pub fn set_partial(&mut self, mfn: Mfn, p: Option<Partial>) -> bool {
        let Some(i) = self.index(mfn) else {
            return false;
        };
        let info = &mut self.table[i];
        let bits = match p {
            None => 0,
            Some(p) if p.next <= Partial::MAX_NEXT && (p.next, p.set) != (0, false) => {
                p.next << 1 | u16::from(p.set)
            }
            Some(_) => return false,
        };
        if !info.is_allocated() {
            return false;
        }
        info.flags = (info.flags & !PARTIAL_MASK) | bits << PARTIAL_SHIFT;
        true
    }

    /// Takes a writable type reference the hypervisor keeps for the domain's life, on a
    /// frame it writes itself (shared_info, console and xenstore rings, grant frames), so
    /// the domain can never turn it into a page table under the hypervisor's writes.
    /// `false` if the frame is not allocated or already holds another type.
    pub fn hold_writable(&mut self, mfn: Mfn) -> bool {
        let Some(st) = self.type_state(mfn) else {
            return false;
        };
        if st.count > 0 && st.ty != PageType::Writable {
            return false;
        }
        let Some(count) = st.count.checked_add(1) else {
            return false;
        };
        if !self.get_ref(mfn) {
            return false;
        }
        self.set_type_state(
            mfn,
            TypeState {
                ty: PageType::Writable,
                count,
                pinned: false,
            },
        );
        true
    }

    /// Drops a writable type reference and its general reference taken by
    /// [`Frames::hold_writable`] (nothing if the frame holds none).
    pub fn put_writable(&mut self, mfn: Mfn) {
        let Some(st) = self.type_state(mfn) else {
            return;
        };
        if st.ty != PageType::Writable || st.count == 0 {
            return;
        }
        self.set_type_state(
            mfn,
            TypeState {
                count: st.count - 1,
                ..st
            },
        );
        self.put_ref(mfn);
    }

    /// General reference count of an allocated frame.
    pub fn ref_count(&self, mfn: Mfn) -> Option<u32> {
        let info = self.table[self.index(mfn)?];
        info.is_allocated().then_some(info.ref_count)
    }

    /// Takes a general reference on an allocated frame; `false` if it is not allocated
    /// or the count would overflow.
    pub fn get_ref(&mut self, mfn: Mfn) -> bool {
        let Some(i) = self.index(mfn) else {
            return false;
        };
        let info = &mut self.table[i];
        match info.ref_count.checked_add(1) {
            Some(n) if info.is_allocated() => {
                info.ref_count = n;
                true
            }
            _ => false,
        }
    }

    /// Drops a general reference (never below 0).
    pub fn put_ref(&mut self, mfn: Mfn) {
        if let Some(i) = self.index(mfn) {
            let info = &mut self.table[i];
            info.ref_count = info.ref_count.saturating_sub(1);
        }
    }

    /// Records that the hardware TLB may hold rights a page-table write removed.
    pub fn need_hw_flush(&mut self) {
        self.hw_flush = true;
    }

    /// Whether the hardware TLB must be flushed (see [`Frames::need_hw_flush`]); clears
    /// the request: the caller flushes.
    pub fn take_hw_flush(&mut self) -> bool {
        core::mem::take(&mut self.hw_flush)
    }

    /// Counts `n` page-table entries validated or devalidated.
    pub fn add_work(&mut self, n: u64) {
        self.work = self.work.wrapping_add(n);
        crate::work::step(n);
    }

    /// Page-table entries validated or devalidated so far (wrapping).
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Frames currently free.
    pub fn free_count(&self) -> usize {
        self.free
    }

    /// Frames currently allocated to `dom` (Xen's `tot_pages`; a lookup, no scan).
    pub fn count_of(&self, dom: DomId) -> usize {
        self.owned
            .binary_search_by_key(&dom, |e| e.0)
            .map_or(0, |k| self.owned[k].1)
    }

    /// How many allocated frames have an owner `owned` accepts (one pass over the
    /// table: the end-of-run accounting asks about every domain at once).
    pub fn count_owned(&self, owned: impl Fn(DomId) -> bool) -> usize {
        self.table[..self.len]
            .iter()
            .filter(|f| f.is_allocated() && owned(f.owner))
            .count()
    }

    fn index(&self, mfn: Mfn) -> Option<usize> {
        usize::try_from(mfn.0).ok().filter(|&i| i < self.len)
    }

    /// Highest RAM frame number the allocator knows.
    pub fn max_ram_mfn(&self) -> u64 {
        self.max_ram
    }

    fn mark_free(&mut self, i: usize) {
        if self.table[i].is_allocated() {
            let owner = self.table[i].owner;
            if let Ok(k) = self.owned.binary_search_by_key(&owner, |e| e.0) {
                self.owned[k].1 -= 1;
                if self.owned[k].1 == 0 {
                    self.owned.remove(k);
                }
            }
        }
        self.tlb.flush();
        self.max_ram = self.max_ram.max(i as u64);
        self.table[i] = FrameInfo::FREE;
        self.m2p[i] = INVALID_M2P_ENTRY;
        self.group_free[i / GROUP_FRAMES] += 1;
        self.free += 1;
    }
}

#[cfg(test)]
// One free range is the common case in these tests, not a mistaken `Vec` of a range.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::testutil::leak;

    const PAGE: u64 = PAGE_SIZE as u64;

    fn frames(len: usize, free: &[Range<u64>]) -> Frames {
        Frames::new(leak(FrameInfo::FREE, len), leak(0, len), free)
    }

    #[test]
    fn new_resets_storage_and_only_adds_whole_pages() {
        // Storage pre-filled with garbage-looking values must not be trusted.
        let f = frames(64, &[PAGE + 1..4 * PAGE + 100, 10 * PAGE..12 * PAGE]);
        // [PAGE+1, 4*PAGE+100) holds whole pages 2 and 3; plus pages 10 and 11.
        assert_eq!(f.free_count(), 4);
        for i in 0..64 {
            assert_eq!(f.m2p(Mfn(i)), Some(INVALID_M2P_ENTRY));
            assert_eq!(f.owner(Mfn(i)), None);
        }
        assert_eq!(f.table[1], FrameInfo::UNUSABLE);
        assert_eq!(f.table[4], FrameInfo::UNUSABLE);
        assert!(f.table[2].is_free() && f.table[11].is_free());
    }

    #[test]
    fn alloc_free_round_trip() {
        let mut f = frames(64, &[0..8 * PAGE]);
        let dom = DomId(1);
        let mut got = std::vec::Vec::new();
        while let Some(m) = f.alloc(dom) {
            assert_eq!(f.owner(m), Some(dom));
            assert_eq!(f.m2p(m), Some(INVALID_M2P_ENTRY));
            got.push(m);
        }
        assert_eq!(got.len(), 8);
        assert_eq!(f.free_count(), 0);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 8, "no frame handed out twice");
        assert!(got.iter().all(|m| m.0 < 8), "only free RAM is handed out");

        f.set_m2p(got[3], 42);
        assert_eq!(f.m2p(got[3]), Some(42));
        f.free(got[3]);
        assert_eq!(f.owner(got[3]), None);
        assert_eq!(f.m2p(got[3]), Some(INVALID_M2P_ENTRY));
        assert_eq!(f.free_count(), 1);
        assert_eq!(f.alloc(DomId(2)), Some(got[3]));
    }

    #[test]
    fn hostile_frees_do_not_corrupt_state() {
        let mut f = frames(64, &[0..4 * PAGE]);
        let a = f.alloc(DomId(1)).unwrap();
        f.free(a);
        f.free(a); // double free
        f.free(Mfn(40)); // not RAM
        f.free(Mfn(1 << 40)); // far out of range
        f.free(Mfn(u64::MAX));
        assert_eq!(f.free_count(), 4);
        f.set_m2p(Mfn(40), 7); // not allocated: ignored
        f.set_m2p(Mfn(u64::MAX), 7);
        assert_eq!(f.m2p(Mfn(40)), Some(INVALID_M2P_ENTRY));
        assert_eq!(f.owner(Mfn(u64::MAX)), None);
        assert_eq!(f.alloc(DomId::INVALID), None);
        for _ in 0..4 {
            assert!(f.alloc(DomId(1)).is_some());
        }
        assert_eq!(f.alloc(DomId(1)), None);
    }

    #[test]
    fn free_all_of_returns_only_that_domain() {
        let mut f = frames(64, &[0..16 * PAGE]);
        for _ in 0..5 {
            f.alloc(DomId(1)).unwrap();
        }
        let keep = f.alloc(DomId(2)).unwrap();
        f.set_m2p(keep, 0);
        assert_eq!(f.count_of(DomId(1)), 5);
        assert_eq!(f.free_all_of(DomId(1)), 5);
        assert_eq!(f.count_of(DomId(1)), 0);
        assert_eq!(f.free_count(), 15);
        assert_eq!(f.owner(keep), Some(DomId(2)));
        assert_eq!(f.m2p(keep), Some(0));
        assert_eq!(f.free_all_of(DomId(1)), 0);
    }

    #[test]
    fn count_owned_counts_the_owners_asked_about() {
        let mut f = frames(64, &[0..16 * PAGE]);
        for _ in 0..3 {
            f.alloc(DomId(1)).unwrap();
        }
        let two = f.alloc(DomId(2)).unwrap();
        assert_eq!(f.count_owned(|d| d == DomId(1)), 3);
        assert_eq!(f.count_owned(|d| d == DomId(1) || d == DomId(2)), 4);
        assert_eq!(f.count_owned(|_| false), 0);
        // Free frames have no owner, not even an invalid one.
        assert_eq!(f.count_owned(|d| d == DomId::INVALID), 0);
        f.free(two);
        assert_eq!(f.count_owned(|d| d == DomId(2)), 0);
    }

    #[test]
    fn release_ram_is_idempotent_and_skips_allocated_frames() {
        let mut f = frames(64, &[0..2 * PAGE]);
        let a = f.alloc(DomId(3)).unwrap();
        f.release_ram(0..4 * PAGE);
        assert_eq!(f.free_count(), 1 + 2);
        f.release_ram(0..4 * PAGE);
        assert_eq!(f.free_count(), 3);
        assert_eq!(f.owner(a), Some(DomId(3)));
        // Ranges beyond the table or overflowing are ignored without panicking.
        f.release_ram(u64::MAX - 10..u64::MAX);
        f.release_ram(100 * PAGE..200 * PAGE);
        let (hi, lo) = (5 * PAGE, 3 * PAGE);
        f.release_ram(hi..lo); // reversed: empty
        assert_eq!(f.free_count(), 3);
    }

    #[test]
    fn full_size_table_allocates_across_groups() {
        // Free RAM in two distant groups: the search must skip empty groups and wrap.
        let far = (MAX_FRAMES as u64 - 2) * PAGE;
        let mut f = frames(MAX_FRAMES, &[far..far + 2 * PAGE, 3 * PAGE..4 * PAGE]);
        assert_eq!(f.free_count(), 3);
        let mut got = [0u64; 3];
        for g in &mut got {
            *g = f.alloc(DomId(1)).unwrap().0;
        }
        got.sort();
        assert_eq!(got, [3, MAX_FRAMES as u64 - 2, MAX_FRAMES as u64 - 1]);
        assert_eq!(f.alloc(DomId(1)), None);
        f.free(Mfn(3));
        assert_eq!(f.alloc(DomId(1)), Some(Mfn(3)), "search wraps around");
    }

    #[test]
    fn partial_state_round_trips_and_rejects_what_it_cannot_store() {
        let mut f = frames(16, &[0..16 * PAGE]);
        let m = f.alloc(DomId(1)).unwrap();
        f.set_type_state(
            m,
            TypeState {
                ty: PageType::L3,
                count: 1,
                pinned: true,
            },
        );
        assert_eq!(f.partial(m), None);
        for p in [(0, true), (1, false), (511, true), (300, false)] {
            let p = Partial {
                next: p.0,
                set: p.1,
            };
            assert!(f.set_partial(m, Some(p)));
            assert_eq!(f.partial(m), Some(p));
            // The rest of the frame's state is untouched.
            let st = f.type_state(m).unwrap();
            assert_eq!((st.ty, st.count, st.pinned), (PageType::L3, 1, true));
        }
        for bad in [(0, false), (512, true), (u16::MAX, false)] {
            let bad = Partial {
                next: bad.0,
                set: bad.1,
            };
            assert!(!f.set_partial(m, Some(bad)));
        }
        assert!(f.set_partial(m, None));
        assert_eq!(f.partial(m), None);
        // Free or beyond the table: nothing recorded.
        let p = Partial {
            next: 3,
            set: false,
        };
        assert_ne!(m, Mfn(15));
        assert!(!f.set_partial(Mfn(15), Some(p)));
        assert!(!f.set_partial(Mfn(99), Some(p)));
        f.free(m);
        assert_eq!(f.partial(m), None);
    }

    #[test]
    fn per_owner_counts_follow_every_alloc_and_free() {
        let mut f = frames(256, &[0..256 * PAGE]);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut held: Vec<Mfn> = Vec::new();
        for _ in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let dom = DomId((x % 4) as u16);
            match (x >> 8) % 3 {
                0 | 1 => {
                    if let Some(m) = f.alloc(dom) {
                        held.push(m);
                    }
                }
                _ if !held.is_empty() => {
                    let m = held.swap_remove((x >> 16) as usize % held.len());
                    f.free(m);
                }
                _ => {
                    f.free_all_of(dom);
                    held.retain(|&m| f.owner(m).is_some());
                }
            }
            for d in 0..4 {
                let scan = f.count_owned(|o| o == DomId(d));
                assert_eq!(f.count_of(DomId(d)), scan);
            }
        }
    }
}
