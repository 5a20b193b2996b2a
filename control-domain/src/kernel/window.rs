//! The mapping window: page-aligned pages of the kernel's own `.bss` whose mappings are
//! replaced by grant mappings of other domains' ring pages (the hypervisor's map wants an
//! existing L1 entry at `host_addr`, which every page of the image has).
//!
//! The pages are never touched through Rust references: only through [`Page`]'s volatile
//! accesses while mapped. The grant mappings are the ABI kit's owned
//! [`kit::Mapping`]s; the window adds the slot bookkeeping.

use control_domain::console::SharedPage;
use control_domain::xenstored::ring::RingPage;
use core::sync::atomic::{Ordering, fence};
use xen_pv_abi::kit::{self, Error};
use xen_pv_abi::transport::Native;
use xen_pv_abi::{DomId, Errno, GrantRef};

/// Domains served at once at most (two pages each).
pub const MAX_DOMAINS: usize = 32;
/// Two pages per domain (xenstore, console) and two per device (a vif's tx and rx
/// rings; a vbd uses one).
const SLOTS: usize = 2 * MAX_DOMAINS + 2 * control_domain::devices::MAX_DEVICES;
const PAGE: usize = 4096;

#[repr(C, align(4096))]
struct Pages([[u8; PAGE]; SLOTS]);

/// Only accessed through raw pointers (see the module comment).
static mut WINDOW: Pages = Pages([[0; PAGE]; SLOTS]);

/// Which window pages hold a mapping.
pub struct Window {
    used: [bool; SLOTS],
}

/// A grant mapping in the window, on slot `slot`.
///
/// Given back through [`Window::unmap`]; dropped otherwise, the kit still unmaps it but
/// its slot stays taken (the window cannot know whether that unmap worked).
pub struct Mapping {
    slot: usize,
    map: kit::Mapping<Native>,
}

impl Window {
    /// No page in use.
    pub const fn new() -> Self {
        Window {
            used: [false; SLOTS],
        }
    }

    fn va(slot: usize) -> u64 {
        // In bounds: slot < SLOTS.
        (&raw mut WINDOW).cast::<u8>().wrapping_add(slot * PAGE) as u64
    }

    /// Maps grant `gref` of `dom` (writable) onto a free window page. A failed map
    /// leaves the page free.
    pub fn map(&mut self, dom: DomId, gref: GrantRef) -> Result<Mapping, Error> {
        let slot = self
            .used
            .iter()
            .position(|u| !u)
            .ok_or(Error::Errno(Errno::ENOSPC))?;
        // SAFETY: a free window page of the image (so its L1 table exists): nothing
        // references it, as the window is only reached through `Page`s of live
        // mappings; after the returned mapping goes, the slot is only reused once
        // `unmap` reports the page unmapped.
        let map = unsafe { kit::map_grant(Native, dom, gref, Self::va(slot), false)? };
        self.used[slot] = true;
        Ok(Mapping { slot, map })
    }

    /// Removes a mapping (its `Page`s must be gone: it takes the mapping by value).
    pub fn unmap(&mut self, m: Mapping) -> Result<(), Error> {
        let slot = m.slot;
        let r = m.map.unmap();
        if r.is_ok() {
            self.used[slot] = false;
        }
        // A failed unmap leaves the slot in use: never mapped over.
        r
    }
}

impl Mapping {
    /// The mapped page's address (for the kit's ring views, which access it only
    /// atomically or volatile).
    pub fn as_ptr(&mut self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Access to the mapped page.
    pub fn page(&mut self) -> Page<'_> {
        Page {
            base: self.map.as_ptr(),
            _m: core::marker::PhantomData,
        }
    }
}

/// Volatile access to a mapped ring page shared with a hostile guest; offsets outside
/// the page read as 0 and are not written (the callers never produce them).
pub struct Page<'a> {
    base: *mut u8,
    _m: core::marker::PhantomData<&'a mut Mapping>,
}

impl Page<'_> {
    fn in_page(offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= PAGE)
    }

    fn load(&self, offset: usize) -> u32 {
        if !Self::in_page(offset, 4) || !offset.is_multiple_of(4) {
            return 0;
        }
        // SAFETY: an aligned u32 inside the mapped page, which stays mapped while the
        // `Mapping` this borrows lives; volatile as the guest writes it concurrently.
        let v = unsafe { self.base.add(offset).cast::<u32>().read_volatile() };
        // The data the index covers is read after it.
        fence(Ordering::Acquire);
        v
    }

    fn store(&mut self, offset: usize, value: u32) {
        if !Self::in_page(offset, 4) || !offset.is_multiple_of(4) {
            return;
        }
        // The data the index covers is written before it.
        fence(Ordering::Release);
        // SAFETY: as in `load`.
        unsafe { self.base.add(offset).cast::<u32>().write_volatile(value) };
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        if !Self::in_page(offset, out.len()) {
            return;
        }
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: inside the mapped page (checked above).
            *b = unsafe { self.base.add(offset + i).read_volatile() };
        }
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        if !Self::in_page(offset, data.len()) {
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            // SAFETY: inside the mapped page (checked above).
            unsafe { self.base.add(offset + i).write_volatile(b) };
        }
    }
}

impl SharedPage for Page<'_> {
    fn load_u32(&self, offset: usize) -> u32 {
        self.load(offset)
    }
    fn store_u32(&mut self, offset: usize, value: u32) {
        self.store(offset, value)
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.read(offset, out)
    }
    fn write_bytes(&mut self, offset: usize, data: &[u8]) {
        self.write(offset, data)
    }
}

impl RingPage for Page<'_> {
    fn load_u32(&self, offset: usize) -> u32 {
        self.load(offset)
    }
    fn store_u32(&mut self, offset: usize, value: u32) {
        self.store(offset, value)
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.read(offset, out)
    }
    fn write_bytes(&mut self, offset: usize, data: &[u8]) {
        self.write(offset, data)
    }
}
