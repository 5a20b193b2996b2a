//! Owned grants over this domain's own version-1 grant table.

use crate::errno::Errno;
use crate::grant_table::{GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING, GrantEntryV1};
use crate::ids::{DomId, GrantRef, Mfn};
use core::cell::UnsafeCell;
use core::ptr::{NonNull, addr_of_mut};
use core::sync::atomic::{AtomicBool, AtomicU16, Ordering, fence};

/// Entries 0..8 belong to the toolstack (`GNTTAB_NR_RESERVED_ENTRIES`: console, xenstore).
const FIRST_FREE: u32 = 8;
/// End of a list in [`Inner::next`].
const NIL: u32 = u32::MAX;
/// How often ending access retries a `cmpxchg` that lost against the hypervisor before
/// treating the entry as busy (the hypervisor only flips `GTF_reading`/`GTF_writing`,
/// so a loss means the peer is active right now).
const END_ATTEMPTS: u32 = 8;

/// Free and deferred lists, threaded through `next` (a ref is on at most one list).
struct Inner<const N: usize> {
    next: [u32; N],
    free_head: u32,
    free_count: u32,
    deferred_head: u32,
    deferred_count: u32,
}

/// This domain's version-1 grant table: hands out [`Grant`]s of its own frames to other
/// domains and takes them back safely.
///
/// It manages references `8..min(nr_entries, N)` (0..8 are Xen's reserved entries for
/// the console and xenstore pages and are never touched). Granting writes `frame` and
/// `domid` first, then — after a write barrier — `flags`, so the hypervisor never sees
/// a permitted entry with stale contents.
///
/// Ending access follows Xen's rule (Linux's `gnttab_end_foreign_access`): the flags are
/// cleared with a compare-and-swap, and only while neither `GTF_reading` nor
/// `GTF_writing` is set — the hypervisor sets those while the peer has the frame mapped
/// or is copying to or from it. A [`Grant`] dropped while still in use is not freed: its
/// reference goes to the table's *deferred list* (bounded: it holds at most the table's
/// references, threaded through the free-list links), and
/// [`retry_deferred`](GrantTable::retry_deferred) ends and frees what the peers have
/// released since. Until then the entry stays valid and the peer can keep using the
/// frame, so **the frame of a deferred grant must not be reused** (for other data or
/// given back to an allocator) before `retry_deferred` freed it; a driver that cannot
/// wait should use [`Grant::end`], which gives the grant back instead of deferring.
///
/// The lists are guarded by a small spin lock, so a `&'static GrantTable` can be shared
/// between CPUs; do not take or drop grants from an interrupt handler that may interrupt
/// a holder of the lock on the same CPU.
///
/// ```
/// use xen_pv_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READONLY, GrantEntryV1};
/// use xen_pv_abi::kit::GrantTable;
/// use xen_pv_abi::{DomId, Mfn};
///
/// // A kernel passes the address its grant frames are mapped at; here: a local table.
/// let mut frames = [GrantEntryV1::default(); 32];
/// // SAFETY: `frames` outlives `table` and is only accessed through it meanwhile.
/// let table = unsafe { GrantTable::<32>::new(frames.as_mut_ptr(), 32) };
/// let grant = table.grant_access(DomId(0), Mfn(0x1234), true)?;
/// assert_eq!(grant.gref().0, 8);
/// drop(grant); // nobody mapped it: ended and freed at once
/// assert_eq!(table.free_count(), 24);
/// # drop(table);
/// assert_eq!(frames[8], GrantEntryV1 { flags: 0, domid: DomId(0), frame: 0x1234 });
/// # let _ = (GTF_PERMIT_ACCESS, GTF_READONLY);
/// # Ok::<(), xen_pv_abi::Errno>(())
/// ```
pub struct GrantTable<const N: usize> {
    entries: NonNull<GrantEntryV1>,
    /// References below this exist (`min(nr_entries, N)`).
    limit: u32,
    lock: AtomicBool,
    inner: UnsafeCell<Inner<N>>,
}

// SAFETY: the entries are shared memory accessed only with atomics and volatile writes
// (the hypervisor writes them concurrently anyway), and `inner` is only touched with
// `lock` held, so the table may move to and be used from any CPU.
unsafe impl<const N: usize> Send for GrantTable<N> {}
// SAFETY: as for `Send`.
unsafe impl<const N: usize> Sync for GrantTable<N> {}

impl<const N: usize> GrantTable<N> {
    /// Takes over the `nr_entries` version-1 entries at `entries` (the grant frames as
    /// mapped in this domain, e.g. after `GNTTABOP_setup_table`). Only the first `N` are
    /// managed.
    ///
    /// # Safety
    ///
    /// For the life of the table `entries` must point to `nr_entries` valid, mapped,
    /// writable and 4-byte aligned [`GrantEntryV1`]s that this domain accesses only
    /// through this table (the hypervisor may modify them at any time), and entries
    /// 8.. must be unused (flags 0) when the table is created.
    pub unsafe fn new(entries: *mut GrantEntryV1, nr_entries: usize) -> Self {
        // A null table manages nothing (and is never dereferenced).
        let limit = if entries.is_null() {
            0
        } else {
            nr_entries.min(N).min(NIL as usize) as u32
        };
        let mut inner = Inner {
            next: [NIL; N],
            free_head: NIL,
            free_count: 0,
            deferred_head: NIL,
            deferred_count: 0,
        };
        // Lowest references first: the list is built from the top.
        let mut r = limit;
        while r > FIRST_FREE {
            r -= 1;
            inner.next[r as usize] = inner.free_head;
            inner.free_head = r;
            inner.free_count += 1;
        }
        GrantTable {
            entries: NonNull::new(entries).unwrap_or(NonNull::dangling()),
            limit,
            lock: AtomicBool::new(false),
            inner: UnsafeCell::new(inner),
        }
    }

    /// Runs `f` with the lists locked.
    fn locked<R>(&self, f: impl FnOnce(&mut Inner<N>) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held, so this is the only reference to `inner`; `f` cannot
        // reach `locked` again (it only gets `&mut Inner`).
        let r = f(unsafe { &mut *self.inner.get() });
        self.lock.store(false, Ordering::Release);
        r
    }

    /// Pointer to entry `r` (`r < self.limit`).
    fn entry(&self, r: u32) -> *mut GrantEntryV1 {
        debug_assert!(r < self.limit);
        // SAFETY: `r < limit <= nr_entries`, so the result stays inside the entries the
        // constructor's caller vouched for.
        unsafe { self.entries.as_ptr().add(r as usize) }
    }

    /// The flags of entry `r`, as an atomic.
    fn flags(&self, r: u32) -> &AtomicU16 {
        // SAFETY: the entry is valid for the life of `self` (constructor contract), the
        // flags field is 2-aligned (entries are 4-aligned, flags at offset 0), and this
        // domain accesses it only atomically.
        unsafe { AtomicU16::from_ptr(addr_of_mut!((*self.entry(r)).flags)) }
    }

    /// Grants `domid` access to `frame` (an MFN for a PV guest; must fit the 32-bit
    /// field of a v1 entry), read-only if `readonly`.
    ///
    /// Errors: `ENOSPC` when no reference is free, `EINVAL` for a frame above 2^32 - 1
    /// or a `domid` that is not a real domain.
    pub fn grant_access(
        &self,
        domid: DomId,
        frame: Mfn,
        readonly: bool,
    ) -> Result<Grant<'_, N>, Errno> {
        let frame = u32::try_from(frame.0).map_err(|_| Errno::EINVAL)?;
        if !domid.is_real() {
            return Err(Errno::EINVAL);
        }
        let r = self.locked(|inner| {
            let r = inner.free_head;
            if r == NIL {
                return None;
            }
            inner.free_head = inner.next[r as usize];
            inner.next[r as usize] = NIL;
            inner.free_count -= 1;
            Some(r)
        });
        let r = r.ok_or(Errno::ENOSPC)?;
        let e = self.entry(r);
        // SAFETY: `e` is a valid entry (see `entry`); the fields are written with
        // volatile stores because the hypervisor reads them concurrently.
        unsafe {
            addr_of_mut!((*e).domid).write_volatile(domid);
            addr_of_mut!((*e).frame).write_volatile(frame);
        }
        // Xen's wmb(): frame and domid must be visible before the flags permit access.
        fence(Ordering::Release);
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        self.flags(r).store(flags, Ordering::Release);
        Ok(Grant {
            table: self,
            gref: r,
            domid,
        })
    }

    /// Revokes access to entry `r` unless the peer is using it: `true` when done.
    fn end_access(&self, r: u32) -> bool {
        let flags = self.flags(r);
        let mut cur = flags.load(Ordering::Acquire);
        for _ in 0..END_ATTEMPTS {
            if cur & (GTF_READING | GTF_WRITING) != 0 {
                return false;
            }
            match flags.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    fn free(&self, r: u32) {
        self.locked(|inner| {
            inner.next[r as usize] = inner.free_head;
            inner.free_head = r;
            inner.free_count += 1;
        });
    }

    fn defer(&self, r: u32) {
        self.locked(|inner| {
            inner.next[r as usize] = inner.deferred_head;
            inner.deferred_head = r;
            inner.deferred_count += 1;
        });
    }

    /// Retries ending the grants dropped while their peer still used them; those the
    /// peers have released since are freed. Returns how many were freed.
    ///
    /// Call it now and then (e.g. when [`grant_access`](Self::grant_access) reports
    /// `ENOSPC`, or after a backend disconnected); it does at most one pass over the
    /// deferred list.
    pub fn retry_deferred(&self) -> usize {
        self.locked(|inner| {
            let mut freed = 0;
            let mut prev = NIL;
            let mut r = inner.deferred_head;
            // At most `deferred_count` entries are on the list; the bound also protects
            // against a corrupted link.
            for _ in 0..inner.deferred_count {
                if r == NIL {
                    break;
                }
                let next = inner.next[r as usize];
                if self.end_access(r) {
                    if prev == NIL {
                        inner.deferred_head = next;
                    } else {
                        inner.next[prev as usize] = next;
                    }
                    inner.next[r as usize] = inner.free_head;
                    inner.free_head = r;
                    inner.free_count += 1;
                    freed += 1;
                } else {
                    prev = r;
                }
                r = next;
            }
            inner.deferred_count -= freed;
            freed as usize
        })
    }

    /// References free for [`grant_access`](Self::grant_access).
    pub fn free_count(&self) -> usize {
        self.locked(|inner| inner.free_count as usize)
    }

    /// Grants dropped while in use and not yet freed by
    /// [`retry_deferred`](Self::retry_deferred).
    pub fn deferred_count(&self) -> usize {
        self.locked(|inner| inner.deferred_count as usize)
    }

    /// How many references the table hands out at most (`min(nr_entries, N) - 8`).
    pub fn capacity(&self) -> usize {
        self.limit.saturating_sub(FIRST_FREE) as usize
    }
}

impl<const N: usize> core::fmt::Debug for GrantTable<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GrantTable")
            .field("capacity", &self.capacity())
            .field("free", &self.free_count())
            .field("deferred", &self.deferred_count())
            .finish()
    }
}

/// Access to one of this domain's frames granted to another domain; ended when dropped.
///
/// Dropping ends the access if the peer neither has the frame mapped nor is copying;
/// otherwise the reference goes to the table's deferred list (see [`GrantTable`]).
#[must_use = "dropping a Grant revokes it at once"]
#[derive(Debug)]
pub struct Grant<'t, const N: usize> {
    table: &'t GrantTable<N>,
    gref: u32,
    domid: DomId,
}

impl<const N: usize> Grant<'_, N> {
    /// The reference to pass to the peer (through xenstore or a ring).
    pub fn gref(&self) -> GrantRef {
        GrantRef(self.gref)
    }

    /// The domain the access is granted to.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Whether the peer has the frame mapped or is copying right now
    /// (`GTF_reading`/`GTF_writing`).
    pub fn in_use(&self) -> bool {
        self.table.flags(self.gref).load(Ordering::Acquire) & (GTF_READING | GTF_WRITING) != 0
    }

    /// Ends the access now: `Ok` with the (freed) reference, or the grant back when
    /// the peer still uses the frame — then the frame must stay untouched.
    pub fn end(self) -> Result<GrantRef, Self> {
        if self.table.end_access(self.gref) {
            self.table.free(self.gref);
            let r = GrantRef(self.gref);
            core::mem::forget(self);
            Ok(r)
        } else {
            Err(self)
        }
    }

    /// Keeps the access for the life of the table (e.g. a ring shared until the domain
    /// ends) and returns its reference, which is never freed.
    pub fn leak(self) -> GrantRef {
        let r = GrantRef(self.gref);
        core::mem::forget(self);
        r
    }
}

impl<const N: usize> Drop for Grant<'_, N> {
    fn drop(&mut self) {
        if self.table.end_access(self.gref) {
            self.table.free(self.gref);
        } else {
            self.table.defer(self.gref);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A heap table and a peer that flips bits the way the hypervisor does.
    struct Heap(Vec<GrantEntryV1>);

    impl Heap {
        fn new(n: usize) -> Self {
            Heap(std::vec![GrantEntryV1::default(); n])
        }
        fn table<const N: usize>(&mut self) -> GrantTable<N> {
            let n = self.0.len();
            // SAFETY: the vector outlives the table in every test and is only read
            // through `peer`, which uses atomics like the table.
            unsafe { GrantTable::new(self.0.as_mut_ptr(), n) }
        }
    }

    fn peer(t: &GrantTable<64>, r: GrantRef) -> &AtomicU16 {
        t.flags(r.0)
    }

    fn entry(t: &GrantTable<64>, r: GrantRef) -> GrantEntryV1 {
        // SAFETY: a valid entry of the test table; read volatile as the hypervisor would.
        unsafe { t.entry(r.0).read_volatile() }
    }

    #[test]
    fn grants_publish_frame_domid_and_flags_and_skip_reserved_refs() {
        let mut heap = Heap::new(16);
        let t: GrantTable<64> = heap.table();
        assert_eq!(t.capacity(), 8);
        let a = t.grant_access(DomId(3), Mfn(0xabc), false).unwrap();
        let b = t.grant_access(DomId(4), Mfn(0xdef), true).unwrap();
        assert_eq!((a.gref(), b.gref()), (GrantRef(8), GrantRef(9)));
        assert_eq!(
            entry(&t, a.gref()),
            GrantEntryV1 {
                flags: GTF_PERMIT_ACCESS,
                domid: DomId(3),
                frame: 0xabc
            }
        );
        assert_eq!(entry(&t, b.gref()).flags, GTF_PERMIT_ACCESS | GTF_READONLY);
        assert_eq!(t.free_count(), 6);
        drop(a);
        assert_eq!(entry(&t, GrantRef(8)).flags, 0);
        assert_eq!(t.free_count(), 7);
        // The freed reference is reused first.
        let c = t.grant_access(DomId(5), Mfn(1), false).unwrap();
        assert_eq!(c.gref(), GrantRef(8));
        assert_eq!(b.end().unwrap(), GrantRef(9));
        drop(c);
        // Reserved entries were never written.
        assert!(heap.0[..8].iter().all(|e| *e == GrantEntryV1::default()));
    }

    #[test]
    fn bad_arguments_and_exhaustion() {
        let mut heap = Heap::new(10);
        let t: GrantTable<64> = heap.table();
        assert_eq!(
            t.grant_access(DomId(1), Mfn(1 << 32), false).unwrap_err(),
            Errno::EINVAL
        );
        assert_eq!(
            t.grant_access(DomId::SELF, Mfn(1), false).unwrap_err(),
            Errno::EINVAL
        );
        let g1 = t.grant_access(DomId(1), Mfn(1), false).unwrap();
        let g2 = t.grant_access(DomId(1), Mfn(2), false).unwrap();
        assert_eq!(
            t.grant_access(DomId(1), Mfn(3), false).unwrap_err(),
            Errno::ENOSPC
        );
        drop((g1, g2));
        assert_eq!(t.free_count(), 2);
        // Only N entries are managed even if more are mapped; a table with fewer than
        // 8 entries has none to give.
        let mut big = Heap::new(100);
        assert_eq!(big.table::<20>().capacity(), 12);
        let mut tiny = Heap::new(4);
        let t: GrantTable<64> = tiny.table();
        assert_eq!(
            t.grant_access(DomId(1), Mfn(1), false).unwrap_err(),
            Errno::ENOSPC
        );
        // SAFETY: no entry is ever accessed.
        let null = unsafe { GrantTable::<64>::new(core::ptr::null_mut(), 64) };
        assert_eq!(null.capacity(), 0);
        assert_eq!(
            null.grant_access(DomId(1), Mfn(1), false).unwrap_err(),
            Errno::ENOSPC
        );
    }

    #[test]
    fn a_mapped_grant_is_deferred_on_drop_and_freed_by_retry_once_released() {
        let mut heap = Heap::new(12);
        let t: GrantTable<64> = heap.table();
        let g = t.grant_access(DomId(7), Mfn(0x55), false).unwrap();
        let r = g.gref();
        // The peer maps the frame writable: the hypervisor sets both bits.
        peer(&t, r).fetch_or(GTF_READING | GTF_WRITING, Ordering::SeqCst);
        assert!(g.in_use());
        let g = g.end().unwrap_err();
        drop(g);
        assert_eq!(t.deferred_count(), 1);
        assert_eq!(t.free_count(), 3);
        // Access is still permitted: the peer's mapping stays valid.
        assert_eq!(
            entry(&t, r).flags,
            GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
        );
        assert_eq!(t.retry_deferred(), 0, "still mapped");
        peer(&t, r).fetch_and(!GTF_WRITING, Ordering::SeqCst);
        assert_eq!(t.retry_deferred(), 0, "still reading");
        peer(&t, r).fetch_and(!GTF_READING, Ordering::SeqCst);
        assert_eq!(t.retry_deferred(), 1);
        assert_eq!(entry(&t, r).flags, 0);
        assert_eq!((t.deferred_count(), t.free_count()), (0, 4));
        assert_eq!(t.retry_deferred(), 0);
    }

    #[test]
    fn retry_unlinks_from_the_middle_of_the_deferred_list() {
        let mut heap = Heap::new(16);
        let t: GrantTable<64> = heap.table();
        let gs: Vec<_> = (0..5)
            .map(|i| t.grant_access(DomId(1), Mfn(i), false).unwrap())
            .collect();
        let refs: Vec<_> = gs.iter().map(|g| g.gref()).collect();
        for r in &refs {
            peer(&t, *r).fetch_or(GTF_READING, Ordering::SeqCst);
        }
        drop(gs);
        assert_eq!(t.deferred_count(), 5);
        // Release every other one, in an order unrelated to the list's.
        for i in [3, 1, 0] {
            peer(&t, refs[i]).fetch_and(!GTF_READING, Ordering::SeqCst);
        }
        assert_eq!(t.retry_deferred(), 3);
        assert_eq!((t.deferred_count(), t.free_count()), (2, 6));
        for i in [2, 4] {
            assert_ne!(entry(&t, refs[i]).flags, 0);
            peer(&t, refs[i]).fetch_and(!GTF_READING, Ordering::SeqCst);
        }
        assert_eq!(t.retry_deferred(), 2);
        assert_eq!((t.deferred_count(), t.free_count()), (0, 8));
        // Every reference can be handed out again, exactly once.
        let mut again: Vec<_> = (0..8)
            .map(|_| t.grant_access(DomId(2), Mfn(9), true).unwrap().leak().0)
            .collect();
        again.sort();
        assert_eq!(again, (8..16).collect::<Vec<_>>());
        assert_eq!(t.free_count(), 0);
    }

    #[test]
    fn random_grants_drops_and_peer_activity_never_lose_or_double_a_reference() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut heap = Heap::new(40);
        let t: GrantTable<64> = heap.table();
        let mut live: Vec<Grant<'_, 64>> = Vec::new();
        // References the peer holds mapped (live or deferred).
        let mut mapped: Vec<GrantRef> = Vec::new();
        let (mut max_deferred, mut exhausted) = (0, false);
        for _ in 0..5000 {
            match rnd(5) {
                0 | 1 => match t.grant_access(DomId(1), Mfn(rnd(1000)), rnd(2) == 0) {
                    Ok(g) => {
                        assert!(!mapped.contains(&g.gref()), "a mapped ref was reused");
                        live.push(g)
                    }
                    Err(e) => {
                        assert_eq!(e, Errno::ENOSPC);
                        exhausted = true;
                    }
                },
                2 if !live.is_empty() => {
                    let g = live.swap_remove(rnd(live.len() as u64) as usize);
                    if rnd(2) == 0 {
                        drop(g);
                    } else if let Err(g) = g.end() {
                        assert!(mapped.contains(&g.gref()));
                        live.push(g);
                    }
                }
                3 if !live.is_empty() => {
                    let r = live[rnd(live.len() as u64) as usize].gref();
                    if !mapped.contains(&r) {
                        peer(&t, r).fetch_or(GTF_READING, Ordering::SeqCst);
                        mapped.push(r);
                    }
                }
                _ if !mapped.is_empty() => {
                    let r = mapped.swap_remove(rnd(mapped.len() as u64) as usize);
                    peer(&t, r).fetch_and(!GTF_READING, Ordering::SeqCst);
                    t.retry_deferred();
                }
                _ => {}
            }
            let deferred = t.deferred_count();
            assert_eq!(live.len() + deferred + t.free_count(), t.capacity());
            assert!(deferred <= mapped.len());
            max_deferred = max_deferred.max(deferred);
        }
        assert!(
            max_deferred >= 2 && exhausted,
            "the walk exercised deferral and ENOSPC"
        );
        drop(live);
        for r in mapped.drain(..) {
            peer(&t, r).fetch_and(!GTF_READING, Ordering::SeqCst);
        }
        t.retry_deferred();
        assert_eq!(t.free_count(), t.capacity());
    }
}
