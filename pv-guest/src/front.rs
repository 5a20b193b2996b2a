//! Set-up the split-driver frontends of this kernel share (`demo=blk`, `demo=net` and
//! the bench guest's block and network cases): statics of pages as the kit's
//! [`DataPages`], the first device of a class in the store, a granted ring page, and an
//! event channel for the backend.

use xen_pv_abi::kit::blkfront::{DataPages, PAGE_SIZE};
use xen_pv_abi::kit::{Directory, Grant, GrantTable, TxId};
use xen_pv_abi::{DomId, Errno, EvtchnPort, Mfn, evtchn};

use crate::split::Path;
use crate::xenbus::Client;
use crate::{StartInfo, events};

/// One page-aligned page, for statics shared with a backend.
#[repr(C, align(4096))]
pub struct Page(pub [u8; PAGE_SIZE]);

/// `count` consecutive pages of this kernel from `base`, as a frontend's data pages.
///
/// `VOLATILE`: copies byte by byte with volatile accesses (the demos: the backend may
/// touch a page while it is granted); otherwise a plain `memcpy` (the bench: the
/// frontend reads a page only after the backend answered for it and writes it before
/// granting it, and a byte loop would be measured instead of I/O).
pub struct StaticPages<'a, const VOLATILE: bool> {
    si: &'a StartInfo,
    base: *mut u8,
    count: usize,
}

impl<'a, const VOLATILE: bool> StaticPages<'a, VOLATILE> {
    /// The pages `base .. base + count * PAGE_SIZE`.
    ///
    /// # Safety
    ///
    /// `base` is page-aligned and the `count` pages from it are memory of this kernel
    /// (mapped by its start-of-day page tables) that nothing but this view (and the
    /// backend, through grants) accesses while it lives, and no reference to them exists.
    pub unsafe fn new(si: &'a StartInfo, base: *mut u8, count: usize) -> Self {
        StaticPages { si, base, count }
    }

    /// The start of page `page` (below the count).
    pub fn base(&self, page: usize) -> *mut u8 {
        assert!(page < self.count);
        // SAFETY: in bounds of the pages `new` was given (checked above); only a pointer
        // is made.
        unsafe { self.base.add(page * PAGE_SIZE) }
    }
}

impl<const VOLATILE: bool> DataPages for StaticPages<'_, VOLATILE> {
    fn count(&self) -> usize {
        self.count
    }
    fn frame(&self, page: usize) -> Mfn {
        Mfn(crate::paging::mfn_of(self.si, self.base(page) as u64))
    }
    fn read(&self, page: usize, offset: usize, dst: &mut [u8]) {
        assert!(offset + dst.len() <= PAGE_SIZE);
        let p = self.base(page);
        if VOLATILE {
            for (i, d) in dst.iter_mut().enumerate() {
                // SAFETY: inside the page (asserted); the backend may write it while it
                // is granted, hence volatile.
                *d = unsafe { p.add(offset + i).read_volatile() };
            }
        } else {
            // SAFETY: inside one page (asserted); no reference to it exists (`new`).
            unsafe { core::ptr::copy_nonoverlapping(p.add(offset), dst.as_mut_ptr(), dst.len()) };
        }
    }
    fn write(&self, page: usize, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= PAGE_SIZE);
        let p = self.base(page);
        if VOLATILE {
            for (i, s) in src.iter().enumerate() {
                // SAFETY: as in `read`.
                unsafe { p.add(offset + i).write_volatile(*s) };
            }
        } else {
            // SAFETY: as in `read`.
            unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), p.add(offset), src.len()) };
        }
    }
}

/// Why [`first_device`] found no device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoDevice {
    /// The store refused the listing.
    List(Errno),
    /// The class directory is empty.
    Empty,
    /// The first name is longer than 16 bytes or not UTF-8.
    Name,
}

/// `device/<class>/<name>` of the first device of `class` (`vbd`, `vif`) the toolstack
/// created for this domain.
pub fn first_device(xs: &mut Client, class: &str) -> Result<Path, NoDevice> {
    let mut name = [0u8; 16];
    let len = {
        let mut dir: Directory<'_> = xs
            .directory(
                TxId::NONE,
                Path::of(format_args!("device/{class}")).as_str(),
            )
            .map_err(NoDevice::List)?;
        let first = dir.next().ok_or(NoDevice::Empty)?;
        name.get_mut(..first.len())
            .ok_or(NoDevice::Name)?
            .copy_from_slice(first);
        first.len()
    };
    let name = core::str::from_utf8(&name[..len]).map_err(|_| NoDevice::Name)?;
    Ok(Path::of(format_args!("device/{class}/{name}")))
}

/// Grants `domid` write access to the page of this kernel at `va` (a ring page).
pub fn grant_page<'t, const N: usize>(
    si: &StartInfo,
    table: &'t GrantTable<N>,
    domid: DomId,
    va: *mut u8,
) -> Result<Grant<'t, N>, Errno> {
    table.grant_access(domid, Mfn(crate::paging::mfn_of(si, va as u64)), false)
}

/// An unbound event channel for the backend `domid`, its event count reset (event
/// delivery masked meanwhile; enabled again once the port is ready).
pub fn backend_port(domid: DomId) -> Result<EvtchnPort, Errno> {
    events::disable();
    let port = evtchn::alloc_unbound(domid)?;
    events::reset_count(port);
    events::enable();
    Ok(port)
}
