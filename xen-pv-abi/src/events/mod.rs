//! Guest-side event delivery: the upcall dispatchers of the 2-level ([`two_level`]) and
//! FIFO ([`fifo`]) event-channel ABIs, and guest-side mask/unmask.
//!
//! # Memory model
//!
//! `shared_info`, FIFO control blocks and event-array pages are written by the hypervisor
//! while the guest reads them, so the guest must never hold a plain `&SharedInfo` to them
//! and read fields non-atomically. Every access here goes through [`EventMemory`]: word
//! sized atomic operations at byte offsets of one page.
//!
//! * On a real guest the page is an [`AtomicPage`] obtained with [`AtomicPage::from_ptr`]
//!   from the page's virtual address — the only `unsafe` step.
//! * In host tests an [`AtomicPage::new`] value plays the page, and a test may wrap it in
//!   its own `EventMemory` implementation to act as a concurrent hypervisor (change a value
//!   between two loads, count accesses...), which a design generic over `&SharedInfo`
//!   with `AtomicU64` views could not do. That is why the abstraction is a trait of
//!   operations rather than a trait returning references.
//!
//! All operations are sequentially consistent. On x86 loads are plain `mov`s and the
//! read-modify-write operations `lock`ed instructions, which is what the hypervisor's own
//! bit operations on these words assume; the seqlock readers in [`crate::time`] rely on
//! the loads not being reordered with each other.
//!
//! Each location is always accessed with one width (e.g. `evtchn_upcall_pending` as a
//! byte, `evtchn_pending_sel` as a `u64`, FIFO event words as `u32`).

pub mod fifo;
pub mod two_level;

use crate::errno::Errno;
use crate::ids::EvtchnPort;
use crate::layout::PAGE_SIZE;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};

/// Atomic operations on naturally aligned words at byte offsets of a region of memory
/// shared with the hypervisor.
///
/// Callers in this crate only pass offsets they derived from checked port and vCPU
/// numbers: aligned to the access width and inside [`size`](Self::size). An
/// implementation may panic on other offsets but must never access memory outside its
/// region.
pub trait EventMemory {
    /// Size of the region in bytes.
    fn size(&self) -> usize;
    /// Loads the byte at `off`.
    fn load_u8(&self, off: usize) -> u8;
    /// Stores `v` at `off`.
    fn store_u8(&self, off: usize, v: u8);
    /// Loads the `u32` at `off`.
    fn load_u32(&self, off: usize) -> u32;
    /// Stores `v` at `off`.
    fn store_u32(&self, off: usize, v: u32);
    /// Replaces the `u32` at `off` with `v`, returning the old value.
    fn swap_u32(&self, off: usize, v: u32) -> u32;
    /// Stores `new` at `off` if it holds `current`; `Ok(previous)` on success, else
    /// `Err(actual)`.
    fn compare_exchange_u32(&self, off: usize, current: u32, new: u32) -> Result<u32, u32>;
    /// ORs `v` into the `u32` at `off`, returning the old value.
    fn fetch_or_u32(&self, off: usize, v: u32) -> u32;
    /// ANDs `v` into the `u32` at `off`, returning the old value.
    fn fetch_and_u32(&self, off: usize, v: u32) -> u32;
    /// Loads the `u64` at `off`.
    fn load_u64(&self, off: usize) -> u64;
    /// Stores `v` at `off`.
    fn store_u64(&self, off: usize, v: u64);
    /// Replaces the `u64` at `off` with `v`, returning the old value.
    fn swap_u64(&self, off: usize, v: u64) -> u64;
    /// ORs `v` into the `u64` at `off`, returning the old value.
    fn fetch_or_u64(&self, off: usize, v: u64) -> u64;
    /// ANDs `v` into the `u64` at `off`, returning the old value.
    fn fetch_and_u64(&self, off: usize, v: u64) -> u64;
}

/// Forwards to the referenced memory, so `&AtomicPage` (e.g. `&'static`) can be passed
/// by value.
impl<T: EventMemory + ?Sized> EventMemory for &T {
    fn size(&self) -> usize {
        (**self).size()
    }
    fn load_u8(&self, off: usize) -> u8 {
        (**self).load_u8(off)
    }
    fn store_u8(&self, off: usize, v: u8) {
        (**self).store_u8(off, v)
    }
    fn load_u32(&self, off: usize) -> u32 {
        (**self).load_u32(off)
    }
    fn store_u32(&self, off: usize, v: u32) {
        (**self).store_u32(off, v)
    }
    fn swap_u32(&self, off: usize, v: u32) -> u32 {
        (**self).swap_u32(off, v)
    }
    fn compare_exchange_u32(&self, off: usize, current: u32, new: u32) -> Result<u32, u32> {
        (**self).compare_exchange_u32(off, current, new)
    }
    fn fetch_or_u32(&self, off: usize, v: u32) -> u32 {
        (**self).fetch_or_u32(off, v)
    }
    fn fetch_and_u32(&self, off: usize, v: u32) -> u32 {
        (**self).fetch_and_u32(off, v)
    }
    fn load_u64(&self, off: usize) -> u64 {
        (**self).load_u64(off)
    }
    fn store_u64(&self, off: usize, v: u64) {
        (**self).store_u64(off, v)
    }
    fn swap_u64(&self, off: usize, v: u64) -> u64 {
        (**self).swap_u64(off, v)
    }
    fn fetch_or_u64(&self, off: usize, v: u64) -> u64 {
        (**self).fetch_or_u64(off, v)
    }
    fn fetch_and_u64(&self, off: usize, v: u64) -> u64 {
        (**self).fetch_and_u64(off, v)
    }
}

/// One 4 KiB page accessed only through atomics: the `shared_info` page, a page holding
/// FIFO control blocks, or an event-array page.
///
/// `AtomicPage::new()` is an ordinary zeroed page (host tests, or a page the guest
/// allocates statically and hands to the hypervisor); [`AtomicPage::from_ptr`] views a
/// page that is already mapped.
///
/// ```
/// use xen_pv_abi::events::{AtomicPage, EventMemory};
///
/// let page = AtomicPage::new();
/// page.store_u64(2048, 1 << 5);
/// assert_eq!(page.fetch_and_u64(2048, !(1 << 5)), 1 << 5);
/// assert_eq!(page.load_u64(2048), 0);
/// ```
#[repr(C, align(4096))]
pub struct AtomicPage([AtomicU64; PAGE_SIZE / 8]);

impl AtomicPage {
    /// A zeroed page.
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; PAGE_SIZE / 8])
    }

    /// Views the mapped page at `ptr` (e.g. the virtual address `shared_info` is mapped at).
    ///
    /// # Safety
    ///
    /// `ptr` must be 4096-aligned and point to a page that stays mapped, readable and
    /// writable for `'a`, and that, during `'a`, is accessed by this guest only through
    /// atomic operations (this type, or other atomics of the same width on the same
    /// locations). The hypervisor may write it concurrently: it does so with atomic
    /// instructions or aligned word stores.
    pub unsafe fn from_ptr<'a>(ptr: *mut u8) -> &'a AtomicPage {
        // SAFETY: the caller guarantees alignment, validity for 'a and atomic-only access;
        // `AtomicPage` consists of `AtomicU64`s, which have the size and alignment of
        // `u64` and permit shared mutation.
        unsafe { &*ptr.cast::<AtomicPage>() }
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8), "misaligned u64 offset {off:#x}");
        &self.0[off / 8]
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && off < PAGE_SIZE,
            "bad u32 offset {off:#x}"
        );
        // SAFETY: `off` is in the page and 4-aligned (the page is 4096-aligned), so the
        // pointer designates 4 bytes of `self`, which live as long as `&self`; the bytes
        // sit in an `AtomicU64` (an `UnsafeCell`), so shared mutation through them is
        // allowed, and `AtomicU32` has the size and alignment of `u32`.
        unsafe { &*self.0.as_ptr().cast::<u8>().add(off).cast::<AtomicU32>() }
    }

    fn u8_at(&self, off: usize) -> &AtomicU8 {
        assert!(off < PAGE_SIZE, "bad u8 offset {off:#x}");
        // SAFETY: as in `u32_at`, for one byte (no alignment needed).
        unsafe { &*self.0.as_ptr().cast::<u8>().add(off).cast::<AtomicU8>() }
    }

    /// Copies `bytes` into the page at `off` with byte stores (to prepare a fake page in
    /// tests; panics if the range leaves the page).
    pub fn write_bytes(&self, off: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.u8_at(off + i).store(*b, SeqCst);
        }
    }
}

impl Default for AtomicPage {
    fn default() -> Self {
        Self::new()
    }
}

impl EventMemory for AtomicPage {
    fn size(&self) -> usize {
        PAGE_SIZE
    }
    fn load_u8(&self, off: usize) -> u8 {
        self.u8_at(off).load(SeqCst)
    }
    fn store_u8(&self, off: usize, v: u8) {
        self.u8_at(off).store(v, SeqCst)
    }
    fn load_u32(&self, off: usize) -> u32 {
        self.u32_at(off).load(SeqCst)
    }
    fn store_u32(&self, off: usize, v: u32) {
        self.u32_at(off).store(v, SeqCst)
    }
    fn swap_u32(&self, off: usize, v: u32) -> u32 {
        self.u32_at(off).swap(v, SeqCst)
    }
    fn compare_exchange_u32(&self, off: usize, current: u32, new: u32) -> Result<u32, u32> {
        self.u32_at(off)
            .compare_exchange(current, new, SeqCst, SeqCst)
    }
    fn fetch_or_u32(&self, off: usize, v: u32) -> u32 {
        self.u32_at(off).fetch_or(v, SeqCst)
    }
    fn fetch_and_u32(&self, off: usize, v: u32) -> u32 {
        self.u32_at(off).fetch_and(v, SeqCst)
    }
    fn load_u64(&self, off: usize) -> u64 {
        self.u64_at(off).load(SeqCst)
    }
    fn store_u64(&self, off: usize, v: u64) {
        self.u64_at(off).store(v, SeqCst)
    }
    fn swap_u64(&self, off: usize, v: u64) -> u64 {
        self.u64_at(off).swap(v, SeqCst)
    }
    fn fetch_or_u64(&self, off: usize, v: u64) -> u64 {
        self.u64_at(off).fetch_or(v, SeqCst)
    }
    fn fetch_and_u64(&self, off: usize, v: u64) -> u64 {
        self.u64_at(off).fetch_and(v, SeqCst)
    }
}

/// What a guest-side unmask leaves to do so that an event that became pending while the
/// port was masked is delivered (the "lost edge" of a masked interrupt).
#[must_use = "a pending event is only delivered after the follow-up is completed"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resend {
    /// Nothing: no event was pending, or the upcall will happen on its own.
    Nothing,
    /// The upcall was marked pending while events are enabled: any hypercall makes the
    /// hypervisor deliver it on return (Xen checks on every exit to the guest).
    ForceCallback,
    /// `EVTCHNOP_unmask` must be issued for the port so that the hypervisor links it (FIFO).
    UnmaskHypercall(EvtchnPort),
}

impl Resend {
    /// Performs the follow-up: `xen_version(XENVER_version)` for
    /// [`ForceCallback`](Resend::ForceCallback) (the cheapest hypercall, as Linux and
    /// Mini-OS use), `EVTCHNOP_unmask` for [`UnmaskHypercall`](Resend::UnmaskHypercall).
    #[cfg(target_arch = "x86_64")]
    pub fn complete(self) -> Result<(), Errno> {
        match self {
            Resend::Nothing => Ok(()),
            Resend::ForceCallback => crate::hypercall::xen_version().map(drop),
            Resend::UnmaskHypercall(port) => crate::evtchn::unmask(port),
        }
    }
}

/// Checks that `port` is below `limit` (the ABI's port count).
pub(crate) fn check_port(port: EvtchnPort, limit: u32) -> Result<u32, Errno> {
    if port.0 < limit {
        Ok(port.0)
    } else {
        Err(Errno::EINVAL)
    }
}
