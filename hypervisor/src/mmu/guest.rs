//! Checked access to a guest's virtual memory through the guest's own page tables.
//!
//! Every guest pointer is resolved by walking the guest's 4-level page tables in software,
//! with the rights a guest *user* access would need (PV kernels run in ring 3), and only
//! through frames the domain owns. Nothing here trusts the hardware MMU's view: the
//! hypervisor's own mappings (L4 slots 256..=271) are refused before any walk, and a
//! page-table entry pointing at a frame the guest does not own ends the walk.
//!
//! Fast path (what Xen does differently: it lets the hardware MMU fault on a guest
//! pointer and fixes up through its exception table): a copy of at most
//! [`LEAN_COPY_MAX`] bytes within one page is inlined into its caller, so a hypercall
//! argument whose page is in the translation cache costs the cache compare, the owner
//! check of the cached frame and a few moves; a miss walks the tables as always.

use super::Frames;
use crate::platform::MachineMemory;
use core::cell::Cell;
use xen_pv_abi::layout::{PAGE_SIZE, in_hypervisor_range, is_canonical};
use xen_pv_abi::{DomId, Errno, Mfn};

/// Page-table entry bit: present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Page-table entry bit: writable.
pub const PTE_RW: u64 = 1 << 1;
/// Page-table entry bit: user accessible.
pub const PTE_USER: u64 = 1 << 2;
/// Page-table entry bit: accessed.
pub const PTE_ACCESSED: u64 = 1 << 5;
/// Page-table entry bit: dirty.
pub const PTE_DIRTY: u64 = 1 << 6;
/// Page-table entry bit: page size (superpage at L3/L2; PV guests have none).
pub const PTE_PS: u64 = 1 << 7;
/// Bits 12..=51 of an entry: the machine address of the next table or the page.
pub const PTE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const PAGE: u64 = PAGE_SIZE as u64;

/// The address space a guest pointer is resolved in.
#[derive(Clone, Copy, Debug)]
pub struct GuestSpace {
    /// Domain whose frames the walk may touch.
    pub dom: DomId,
    /// Machine address of the guest's L4 (its CR3).
    pub cr3: u64,
}

/// Entries of the translation cache: sets of two ways, chosen by a hash of page number,
/// domain and root (domains built from the same image use the same stack addresses).
/// Two ways because with one, two hot pages of a round trip that happen to hash alike
/// evict each other on every use: a change of the guests' memory layout alone then
/// moved a block round trip by 5 %. A power of 2.
const TLB_ENTRIES: usize = 8;
/// Ways per set (the most recently inserted first).
const TLB_WAYS: usize = 2;
const TLB_SETS: usize = TLB_ENTRIES / TLB_WAYS;

/// One remembered walk: page `page` of `dom`'s address space rooted at `cr3` is frame
/// `frame`, and every level allowed writes if `writable`.
#[derive(Clone, Copy, Debug)]
struct TlbEntry {
    dom: DomId,
    cr3: u64,
    /// `va >> 12`; `u64::MAX` (never a canonical page) marks an empty entry.
    page: u64,
    frame: u64,
    writable: bool,
}

impl TlbEntry {
    const EMPTY: TlbEntry = TlbEntry {
        dom: DomId::INVALID,
        cr3: 0,
        page: u64::MAX,
        frame: 0,
        writable: false,
    };
}

/// A software TLB of successful [`translate`] walks, kept in [`Frames`]: guests pass the
/// same few pointers (their kernel stack) again and again. `Frames` forgets every entry
/// whenever a frame's owner or type changes, and `PtCtx` whenever it writes a page-table
/// entry (a grant PTE written into an empty L1 entry forgets nothing, one removed forgets
/// the walks ending in its frame: [`Tlb::forget_frame`]), so a remembered walk is one
/// that would give the same result now. A hit still
/// checks that the data frame is the domain's.
#[derive(Debug)]
pub struct Tlb {
    entries: [Cell<TlbEntry>; TLB_ENTRIES],
}

impl Tlb {
    /// Empty.
    pub const fn new() -> Tlb {
        Tlb {
            entries: [const { Cell::new(TlbEntry::EMPTY) }; TLB_ENTRIES],
        }
    }

    /// Forgets every translation.
    #[inline]
    pub fn flush(&self) {
        for e in &self.entries {
            e.set(TlbEntry::EMPTY);
        }
    }

    /// Forgets the translations whose data frame is `mfn`: the only ones a change of
    /// an L1 entry that mapped `mfn` can make stale (an L1 table is only ever read as
    /// the last level of a walk, since no L2-L4 entry may point at one).
    #[inline]
    pub fn forget_frame(&self, mfn: Mfn) {
        for e in &self.entries {
            if e.get().frame == mfn.maddr() {
                e.set(TlbEntry::EMPTY);
            }
        }
    }

    /// The set for `page` of `space` (its first way): the root takes part, so the same
    /// page under two roots a guest switches between (its kernel stack) does not evict
    /// itself.
    #[inline(always)]
    fn set(&self, space: GuestSpace, page: u64) -> usize {
        // The root's frame number is added after the hash: two roots whose frames are
        // not a multiple of TLB_SETS apart never put one page in the same set.
        let key = page ^ u64::from(space.dom.0);
        let hash = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - TLB_SETS.ilog2());
        (hash.wrapping_add(space.cr3 >> 12) as usize % TLB_SETS) * TLB_WAYS
    }

    #[inline(always)]
    fn lookup(&self, space: GuestSpace, page: u64, write: bool) -> Option<u64> {
        let first = self.set(space, page);
        let hit = |e: TlbEntry| {
            e.page == page
                && e.cr3 == space.cr3 & PTE_ADDR_MASK
                && e.dom == space.dom
                && (e.writable || !write)
        };
        let e = self.entries[first].get();
        if hit(e) {
            return Some(e.frame);
        }
        let e = self.entries[first + 1].get();
        hit(e).then_some(e.frame)
    }

    /// Remembers a walk in the first way of its set; the entry there moves to the second.
    fn insert(&self, space: GuestSpace, page: u64, frame: u64, writable: bool) {
        let first = self.set(space, page);
        let new = TlbEntry {
            dom: space.dom,
            cr3: space.cr3 & PTE_ADDR_MASK,
            page,
            frame,
            writable,
        };
        let old = self.entries[first].replace(new);
        // The same page again (a read entry upgraded by a write walk) is not kept twice.
        let same = old.page == page && old.cr3 == new.cr3 && old.dom == new.dom;
        if !same {
            self.entries[first + 1].set(old);
        }
    }
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb::new()
    }
}

/// Resolves guest VA `va` to a machine address, as a guest user-mode access (`write`:
/// a store) would. Any failure is `Errno::EFAULT`.
///
/// Refused: non-canonical addresses, the hypervisor's range, a non-present or
/// non-user entry at any level, a read-only entry at any level for a write, a superpage,
/// and any table or data frame not owned by `space.dom`.
#[inline]
pub fn translate<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    write: bool,
) -> Result<u64, Errno> {
    // A cache hit implies the canonical/hypervisor-range checks (see `cached_maddr`); a
    // miss makes them in `walk`. Same body as the lean path's, not forced inline.
    lean_translate(mem, frames, space, va, write)
}

/// The page-table walk behind [`translate`]; remembers what it found.
#[inline(never)]
pub(super) fn walk<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    write: bool,
) -> Result<u64, Errno> {
    // Checked again here (not only in `translate`) so that the cache provably holds only
    // canonical pages outside the hypervisor's range: `cached_maddr` relies on it.
    if !is_canonical(va) || in_hypervisor_range(va) {
        return Err(Errno::EFAULT);
    }
    let owned = |maddr: u64| frames.owner(Mfn::containing(maddr)) == Some(space.dom);
    let mut required = PTE_PRESENT | PTE_USER;
    if write {
        required |= PTE_RW;
    }
    // Whether every level allows writes (remembered for later stores).
    let mut rw = PTE_RW;

    let mut table = space.cr3 & PTE_ADDR_MASK;
    // Levels 4, 3, 2, 1: the index of each is 9 bits of the VA starting at bit 39.
    for level in (1..=4u32).rev() {
        if !owned(table) {
            return Err(Errno::EFAULT);
        }
        let index = (va >> (12 + 9 * (level - 1))) & 0x1ff;
        let entry = mem.read_u64(table + index * 8).map_err(|_| Errno::EFAULT)?;
        if entry & required != required {
            return Err(Errno::EFAULT);
        }
        // At L1 bit 7 is PAT, not PS; above it a superpage, which PV never has.
        if level > 1 && entry & PTE_PS != 0 {
            return Err(Errno::EFAULT);
        }
        rw &= entry;
        table = entry & PTE_ADDR_MASK;
    }
    // `table` is now the data frame.
    if !owned(table) {
        return Err(Errno::EFAULT);
    }
    frames.tlb.insert(space, va >> 12, table, rw != 0);
    Ok(table | (va & (PAGE - 1)))
}

/// Calls `step(maddr, offset_in_range, len)` for each page-bounded chunk of
/// `[va, va + len)`, translating each chunk first. Stops at the first failure.
fn for_each_chunk<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    len: usize,
    write: bool,
    mut step: impl FnMut(u64, usize, usize) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let len64 = u64::try_from(len).map_err(|_| Errno::EFAULT)?;
    // The last byte must not wrap around the address space.
    if len == 0 {
        return Ok(());
    }
    va.checked_add(len64 - 1).ok_or(Errno::EFAULT)?;
    let mut done = 0usize;
    while done < len {
        crate::work::step(1);
        let cur = va + done as u64;
        let in_page = (PAGE - (cur & (PAGE - 1))) as usize;
        let chunk = in_page.min(len - done);
        let maddr = translate(mem, frames, space, cur, write)?;
        step(maddr, done, chunk)?;
        done += chunk;
    }
    Ok(())
}

/// Whether `[va, va + len)` is non-empty and inside one page: the common case (one
/// structure), copied with one translation and no chunking.
#[inline]
pub(crate) fn in_one_page(va: u64, len: usize) -> bool {
    len != 0 && len <= PAGE_SIZE - (va & (PAGE - 1)) as usize
}

/// Largest copy the lean path of [`copy_from_guest`]/[`copy_to_guest`] takes: hypercall
/// arguments and small structures, which the compiler then copies with a few moves.
pub const LEAN_COPY_MAX: usize = 64;

/// Whether the lean path of [`copy_from_guest`]/[`copy_to_guest`] applies: `len` is
/// 1..=[`LEAN_COPY_MAX`] and `[va, va + len)` lies within one page (so it cannot wrap past
/// the top of the address space either).
#[inline(always)]
fn lean_fits(va: u64, len: usize) -> bool {
    len.wrapping_sub(1) < LEAN_COPY_MAX && (va & (PAGE - 1)) as usize + len <= PAGE_SIZE
}

/// The machine address of `va` if its page's translation (with write rights for
/// `write`) is cached, for a data frame `space.dom` still owns: [`translate`]'s cache
/// hit. `None` means `translate` would walk.
///
/// The checks `translate` leaves to [`walk`] are implied by a hit: only `walk` fills the
/// cache, after refusing non-canonical pages and the hypervisor's range, and both
/// properties hold for a whole page (`va >> 12` is compared exactly; an empty entry's
/// page is never a canonical one).
#[inline(always)]
fn cached_maddr(frames: &Frames, space: GuestSpace, va: u64, write: bool) -> Option<u64> {
    let frame = frames.tlb.lookup(space, va >> 12, write)?;
    (frames.owner(Mfn::containing(frame)) == Some(space.dom)).then_some(frame | (va & (PAGE - 1)))
}

/// [`translate`] for the lean path: the cache hit inline, the walk out of line.
#[inline(always)]
fn lean_translate<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    write: bool,
) -> Result<u64, Errno> {
    match cached_maddr(frames, space, va, write) {
        Some(maddr) => Ok(maddr),
        None => walk(mem, frames, space, va, write),
    }
}

/// Copies `buf.len()` bytes from guest VA `va`. Any bad address is `Errno::EFAULT`.
///
/// On failure `buf` may be partly filled. Inline so that a small copy of a known size
/// (a hypercall argument) within one page costs the cache check (a walk on a miss) and
/// a few moves; everything else takes [`copy_from_guest_generic`].
#[inline]
pub fn copy_from_guest<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    buf: &mut [u8],
) -> Result<(), Errno> {
    copy_from_guest_inline(mem, frames, space, va, buf)
}

/// [`copy_from_guest`] always inlined, for a hot path's argument of a known size (the
/// compiler may otherwise keep `copy_from_guest` out of line).
#[inline(always)]
pub fn copy_from_guest_inline<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    buf: &mut [u8],
) -> Result<(), Errno> {
    crate::work::step(1);
    if lean_fits(va, buf.len()) {
        let maddr = lean_translate(mem, frames, space, va, false)?;
        return mem.read(maddr, buf).map_err(|_| Errno::EFAULT);
    }
    copy_from_guest_generic(mem, frames, space, va, buf)
}

/// [`copy_from_guest`] without the lean path: same results, out of line.
#[inline(never)]
pub fn copy_from_guest_generic<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    buf: &mut [u8],
) -> Result<(), Errno> {
    if in_one_page(va, buf.len()) {
        let maddr = translate(mem, frames, space, va, false)?;
        return mem.read(maddr, buf).map_err(|_| Errno::EFAULT);
    }
    for_each_chunk(mem, frames, space, va, buf.len(), false, |maddr, off, n| {
        mem.read(maddr, &mut buf[off..off + n])
            .map_err(|_| Errno::EFAULT)
    })
}

/// Copies `data` to guest VA `va` (needs writable mappings). Any bad address is `EFAULT`.
///
/// On failure the pages before the bad one may already be written (as with Xen's
/// `copy_to_guest`). Lean for small cached copies, as [`copy_from_guest`].
#[inline]
pub fn copy_to_guest<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    data: &[u8],
) -> Result<(), Errno> {
    crate::work::step(1);
    if lean_fits(va, data.len()) {
        let maddr = lean_translate(mem, frames, space, va, true)?;
        return mem.write(maddr, data).map_err(|_| Errno::EFAULT);
    }
    copy_to_guest_generic(mem, frames, space, va, data)
}

/// [`copy_to_guest`] without the lean path: same results, out of line.
#[inline(never)]
pub fn copy_to_guest_generic<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    data: &[u8],
) -> Result<(), Errno> {
    if in_one_page(va, data.len()) {
        let maddr = translate(mem, frames, space, va, true)?;
        return mem.write(maddr, data).map_err(|_| Errno::EFAULT);
    }
    for_each_chunk(mem, frames, space, va, data.len(), true, |maddr, off, n| {
        mem.write(maddr, &data[off..off + n])
            .map_err(|_| Errno::EFAULT)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmu::FrameInfo;
    use crate::testutil::{FakeMemory, leak};
    use xen_pv_abi::layout::HYPERVISOR_VIRT_START;

    const DOM: DomId = DomId(1);
    const TABLE: u64 = PTE_PRESENT | PTE_RW | PTE_USER | PTE_ACCESSED | PTE_DIRTY;
    /// Machine memory of the fixture: 64 frames, all free RAM.
    const NR_FRAMES: usize = 64;

    /// A guest with one L4/L3/L2/L1 chain mapping `BASE + i*4K` for i in 0..4 onto four
    /// data frames (the last one read-only), plus a foreign frame mapped at i = 4.
    struct Fixture {
        mem: FakeMemory,
        frames: Frames,
        space: GuestSpace,
        data: [Mfn; 4],
        l1: Mfn,
    }

    const BASE: u64 = 0xffff_ffff_8000_0000;

    fn fixture() -> Fixture {
        let mem = FakeMemory::new(NR_FRAMES * PAGE_SIZE);
        let mut frames = Frames::new(
            leak(FrameInfo::UNUSABLE, NR_FRAMES),
            leak(0, NR_FRAMES),
            core::slice::from_ref(&(0..(NR_FRAMES * PAGE_SIZE) as u64)),
        );
        let mut a = || frames.alloc(DOM).unwrap();
        let (l4, l3, l2, l1) = (a(), a(), a(), a());
        let data = [a(), a(), a(), a()];
        let foreign = frames.alloc(DomId(2)).unwrap();
        let idx = |level: u32| (BASE >> (12 + 9 * (level - 1))) & 0x1ff;
        mem.write_u64(l4.maddr() + idx(4) * 8, l3.maddr() | TABLE)
            .unwrap();
        mem.write_u64(l3.maddr() + idx(3) * 8, l2.maddr() | TABLE)
            .unwrap();
        mem.write_u64(l2.maddr() + idx(2) * 8, l1.maddr() | TABLE)
            .unwrap();
        for (i, d) in data.iter().enumerate() {
            let rw = if i == 3 { 0 } else { PTE_RW };
            let pte = d.maddr() | PTE_PRESENT | PTE_USER | PTE_ACCESSED | rw;
            mem.write_u64(l1.maddr() + i as u64 * 8, pte).unwrap();
        }
        let pte = foreign.maddr() | PTE_PRESENT | PTE_USER | PTE_RW;
        mem.write_u64(l1.maddr() + 4 * 8, pte).unwrap();
        Fixture {
            mem,
            frames,
            space: GuestSpace {
                dom: DOM,
                cr3: l4.maddr(),
            },
            data,
            l1,
        }
    }

    impl Fixture {
        fn read(&self, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
            copy_from_guest(&self.mem, &self.frames, self.space, va, buf)
        }
        fn write(&self, va: u64, data: &[u8]) -> Result<(), Errno> {
            copy_to_guest(&self.mem, &self.frames, self.space, va, data)
        }
    }

    #[test]
    fn translate_resolves_mapped_pages() {
        let f = fixture();
        let t = translate(&f.mem, &f.frames, f.space, BASE + PAGE + 0x123, false);
        assert_eq!(t, Ok(f.data[1].maddr() + 0x123));
        // Read-only page: reads fine, writes refused.
        assert!(translate(&f.mem, &f.frames, f.space, BASE + 3 * PAGE, false).is_ok());
        assert_eq!(
            translate(&f.mem, &f.frames, f.space, BASE + 3 * PAGE, true),
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn copies_cross_page_boundaries() {
        let f = fixture();
        let msg: std::vec::Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let va = BASE + PAGE - 100; // 100 bytes in page 0, 200 in page 1
        f.write(va, &msg).unwrap();
        let mut back = [0u8; 300];
        f.read(va, &mut back).unwrap();
        assert_eq!(&back[..], &msg[..]);
        // The bytes really landed in the two data frames, split at the boundary.
        let mut tail = [0u8; 100];
        f.mem
            .read(f.data[0].maddr() + PAGE - 100, &mut tail)
            .unwrap();
        assert_eq!(&tail[..], &msg[..100]);
        let mut head = [0u8; 200];
        f.mem.read(f.data[1].maddr(), &mut head).unwrap();
        assert_eq!(&head[..], &msg[100..]);
        // Zero-length copies succeed anywhere, like Xen's.
        f.write(0, &[]).unwrap();
    }

    #[test]
    fn hostile_pointers_are_efault() {
        let f = fixture();
        let mut b = [0u8; 8];
        // Hypervisor range (m2p window and elsewhere in slots 256..=271).
        assert_eq!(f.read(HYPERVISOR_VIRT_START, &mut b), Err(Errno::EFAULT));
        assert_eq!(f.read(0xffff_87ff_ffff_fff8, &mut b), Err(Errno::EFAULT));
        // Non-canonical.
        assert_eq!(f.read(0x0000_8000_0000_0000, &mut b), Err(Errno::EFAULT));
        // Not present (nothing mapped at 0, nor after the 5 mapped pages).
        assert_eq!(f.read(0, &mut b), Err(Errno::EFAULT));
        assert_eq!(f.read(BASE + 5 * PAGE, &mut b), Err(Errno::EFAULT));
        // Write to a read-only page, even when the range starts on a writable one.
        assert_eq!(f.write(BASE + 3 * PAGE, &b), Err(Errno::EFAULT));
        assert_eq!(f.write(BASE + 3 * PAGE - 4, &b), Err(Errno::EFAULT));
        // A frame owned by another domain.
        assert_eq!(f.read(BASE + 4 * PAGE, &mut b), Err(Errno::EFAULT));
        // Length wrapping around the address space.
        let mut big = [0u8; 16];
        assert_eq!(f.read(u64::MAX - 7, &mut big), Err(Errno::EFAULT));
        // Range running from the guest's pages into unmapped space.
        let mut long = [0u8; 6 * PAGE_SIZE];
        assert_eq!(f.read(BASE, &mut long), Err(Errno::EFAULT));
    }

    #[test]
    fn bad_table_entries_are_efault() {
        let mut f = fixture();
        let mut b = [0u8; 8];
        let l1 = f.l1.maddr();
        let pte0 = f.mem.read_u64(l1).unwrap();

        // Supervisor-only mapping.
        f.mem.write_u64(l1, pte0 & !PTE_USER).unwrap();
        assert_eq!(f.read(BASE, &mut b), Err(Errno::EFAULT));
        // Points outside machine memory.
        f.mem
            .write_u64(l1, (1 << 45) | PTE_PRESENT | PTE_USER)
            .unwrap();
        assert_eq!(f.read(BASE, &mut b), Err(Errno::EFAULT));
        // Points at the domain's own frame again: fine.
        f.mem.write_u64(l1, pte0).unwrap();
        assert!(f.read(BASE, &mut b).is_ok());
        // A freed data frame is no longer the domain's.
        f.frames.free(f.data[0]);
        assert_eq!(f.read(BASE, &mut b), Err(Errno::EFAULT));

        // Superpage at L2.
        let idx2 = (BASE >> 21) & 0x1ff;
        let l3 = f
            .mem
            .read_u64(f.space.cr3 + ((BASE >> 39) & 0x1ff) * 8)
            .unwrap();
        let l2 = (f
            .mem
            .read_u64((l3 & PTE_ADDR_MASK) + ((BASE >> 30) & 0x1ff) * 8))
        .unwrap()
            & PTE_ADDR_MASK;
        let l2e = f.mem.read_u64(l2 + idx2 * 8).unwrap();
        f.mem.write_u64(l2 + idx2 * 8, l2e | PTE_PS).unwrap();
        assert_eq!(f.read(BASE + PAGE, &mut b), Err(Errno::EFAULT));
        // Read-only intermediate table blocks writes.
        f.mem.write_u64(l2 + idx2 * 8, l2e & !PTE_RW).unwrap();
        assert!(f.read(BASE + PAGE, &mut b).is_ok());
        assert_eq!(f.write(BASE + PAGE, &b), Err(Errno::EFAULT));

        // CR3 pointing at a frame the domain does not own.
        let other = GuestSpace {
            dom: DomId(2),
            cr3: f.space.cr3,
        };
        assert_eq!(
            copy_from_guest(&f.mem, &f.frames, other, BASE + PAGE, &mut b),
            Err(Errno::EFAULT)
        );
    }

    /// Reference copy without the translation cache: every page-bounded chunk is walked
    /// from the root (what the cache must be equivalent to).
    fn reference_read(f: &Fixture, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
        if buf.is_empty() {
            return Ok(());
        }
        va.checked_add(buf.len() as u64 - 1).ok_or(Errno::EFAULT)?;
        let mut done = 0;
        while done < buf.len() {
            let cur = va + done as u64;
            let n = ((PAGE - (cur & (PAGE - 1))) as usize).min(buf.len() - done);
            let maddr = walk(&f.mem, &f.frames, f.space, cur, false)?;
            f.mem
                .read(maddr, &mut buf[done..done + n])
                .map_err(|_| Errno::EFAULT)?;
            done += n;
        }
        Ok(())
    }

    /// Whether a write of `len` bytes at `va` would succeed, decided without the cache.
    fn reference_writable(f: &Fixture, va: u64, len: usize) -> Result<(), Errno> {
        if len == 0 {
            return Ok(());
        }
        va.checked_add(len as u64 - 1).ok_or(Errno::EFAULT)?;
        let mut done = 0;
        while done < len {
            let cur = va + done as u64;
            walk(&f.mem, &f.frames, f.space, cur, true)?;
            done += ((PAGE - (cur & (PAGE - 1))) as usize).min(len - done);
        }
        Ok(())
    }

    /// Property: with a warm (and sometimes flushed) translation cache, the lean path of
    /// `copy_from_guest`/`copy_to_guest` gives what uncached walks give, on random
    /// addresses: mapped, page-crossing, unmapped, foreign, read-only, hypervisor,
    /// non-canonical, wrapping; and page-table entries that change (with the flush every
    /// page-table write does).
    #[test]
    fn lean_path_equals_uncached_walks() {
        let f = fixture();
        let l1 = f.l1.maddr();
        let original: std::vec::Vec<u64> = (0..6)
            .map(|i| f.mem.read_u64(l1 + i * 8).unwrap())
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut lean_reads, mut lean_writes) = (0, 0);
        for _ in 0..20_000 {
            let r = next();
            let va = match r % 8 {
                // Mostly the mapped pages (0..=3 own, 4 foreign, 5 unmapped), near their
                // ends so that copies cross pages.
                0..=4 => {
                    let off = if r & 0x100 != 0 {
                        PAGE - (next() % 80)
                    } else {
                        next() % PAGE
                    };
                    (BASE - PAGE) + (next() % 7) * PAGE + off
                }
                5 => HYPERVISOR_VIRT_START + (next() % (1 << 40)),
                6 => [0x0000_8000_0000_0000, u64::MAX - (next() % 64), 0, next()]
                    [(r >> 8) as usize % 4],
                _ => BASE + (next() % 4) * PAGE + (next() % 64),
            };
            let len = match next() % 10 {
                0 => (next() % 5000) as usize,
                1 => 0,
                _ => 1 + (next() % 80) as usize,
            };
            if lean_fits(va, len) && cached_maddr(&f.frames, f.space, va, r & 0x200 != 0).is_some()
            {
                if r & 0x200 != 0 {
                    lean_writes += 1;
                } else {
                    lean_reads += 1;
                }
            }
            if r & 0x200 == 0 {
                let mut got = std::vec![0u8; len];
                let mut want = std::vec![0u8; len];
                let g = f.read(va, &mut got);
                let w = reference_read(&f, va, &mut want);
                assert_eq!(g, w, "read va={va:#x} len={len}");
                if g.is_ok() {
                    assert_eq!(got, want, "read va={va:#x} len={len}");
                }
            } else {
                let data: std::vec::Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let w = reference_writable(&f, va, len);
                let g = f.write(va, &data);
                assert_eq!(g, w, "write va={va:#x} len={len}");
                if g.is_ok() {
                    let mut back = std::vec![0u8; len];
                    reference_read(&f, va, &mut back).unwrap();
                    assert_eq!(back, data, "write va={va:#x} len={len}");
                }
            }
            // Now and then an L1 entry changes (as a page-table write would: with a flush, or
            // with the precise invalidation grant PTE changes use).
            if next() % 64 == 0 {
                let i = next() % 6;
                let pte = match next() % 4 {
                    0 => original[i as usize] & !PTE_RW,
                    1 => original[i as usize] & !PTE_PRESENT,
                    2 => original[4],
                    _ => original[i as usize],
                };
                let was = f.mem.read_u64(l1 + i * 8).unwrap();
                f.mem.write_u64(l1 + i * 8, pte).unwrap();
                if next() % 2 == 0 {
                    f.frames.tlb.flush();
                } else if was & PTE_PRESENT != 0 {
                    // The grant-table rule: forget only walks ending in the old frame
                    // (a non-present old entry was in no remembered walk).
                    f.frames
                        .tlb
                        .forget_frame(Mfn::containing(was & PTE_ADDR_MASK));
                }
            }
        }
        // The lean path really ran, for both directions.
        assert!(
            lean_reads > 500 && lean_writes > 200,
            "{lean_reads} {lean_writes}"
        );
    }

    #[test]
    fn lean_path_bounds() {
        let f = fixture();
        let mut b = [0u8; 64];
        // Warm the cache for pages 0 and 1 (writable) and 3 (read-only).
        f.read(BASE, &mut b).unwrap();
        f.read(BASE + PAGE, &mut b).unwrap();
        f.read(BASE + 3 * PAGE, &mut b).unwrap();
        let lean = |va: u64, len, write| {
            (lean_fits(va, len))
                .then(|| cached_maddr(&f.frames, f.space, va, write))
                .flatten()
        };
        assert_eq!(lean(BASE + 8, 64, false), Some(f.data[0].maddr() + 8));
        assert_eq!(
            lean(BASE + PAGE - 64, 64, true),
            Some(f.data[0].maddr() + PAGE - 64)
        );
        // Too long, empty, or crossing a page: generic path.
        assert_eq!(lean(BASE, 65, false), None);
        assert_eq!(lean(BASE, 0, false), None);
        assert_eq!(lean(BASE + PAGE - 63, 64, false), None);
        // Read-only page: reads only.
        assert!(lean(BASE + 3 * PAGE, 8, false).is_some());
        assert_eq!(lean(BASE + 3 * PAGE, 8, true), None);
        // Another root or domain does not hit.
        let other = GuestSpace {
            dom: DomId(2),
            cr3: f.space.cr3,
        };
        assert_eq!(cached_maddr(&f.frames, other, BASE, false), None);
        let root = GuestSpace {
            dom: DOM,
            cr3: f.space.cr3 + PAGE,
        };
        assert_eq!(cached_maddr(&f.frames, root, BASE, false), None);
        // A flush forgets everything.
        f.frames.tlb.flush();
        assert_eq!(lean(BASE + 8, 8, false), None);
    }

    #[test]
    fn two_pages_of_one_set_both_stay_cached_and_a_third_evicts_the_older() {
        let tlb = Tlb::new();
        let space = GuestSpace {
            dom: DOM,
            cr3: 0x5000,
        };
        // Three pages that fall into the same set.
        let first = 0x1_0000u64;
        let set = tlb.set(space, first);
        let same: Vec<u64> = (first + 1..)
            .filter(|&p| tlb.set(space, p) == set)
            .take(2)
            .collect();
        let (a, b, c) = (first, same[0], same[1]);
        tlb.insert(space, a, 0xa000, true);
        tlb.insert(space, b, 0xb000, false);
        assert_eq!(tlb.lookup(space, a, true), Some(0xa000));
        assert_eq!(tlb.lookup(space, b, false), Some(0xb000));
        assert_eq!(tlb.lookup(space, b, true), None, "b is read-only");
        // Re-inserting b (a write walk) does not push a out.
        tlb.insert(space, b, 0xb000, true);
        assert_eq!(tlb.lookup(space, a, false), Some(0xa000));
        // A third page of the set evicts the least recently inserted (a).
        tlb.insert(space, c, 0xc000, false);
        assert_eq!(tlb.lookup(space, c, false), Some(0xc000));
        assert_eq!(tlb.lookup(space, b, true), Some(0xb000));
        assert_eq!(tlb.lookup(space, a, false), None);
        // Another domain's same page never hits.
        let other = GuestSpace {
            dom: DomId(2),
            ..space
        };
        assert_eq!(tlb.lookup(other, c, false), None);
    }
}
