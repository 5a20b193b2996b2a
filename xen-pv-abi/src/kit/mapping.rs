//! Owned mappings of other domains' granted frames.

use super::Error;
use crate::errno::Errno;
use crate::generated::call_on;
use crate::grant_table::{
    GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_OKAY, GNTTABOP_MAP_GRANT_REF, GNTTABOP_UNMAP_GRANT_REF,
    GnttabMapGrantRef, GnttabUnmapGrantRef,
};
use crate::ids::{DomId, GrantRef};
use crate::layout::PAGE_SIZE;
use crate::transport::Transport;

/// Maps frame `gref` granted by `domid` at the page-aligned virtual address `host_addr`
/// (`GNTTABOP_map_grant_ref` with `GNTMAP_host_map`, plus `GNTMAP_readonly` if
/// `readonly`), through `t`. The [`Mapping`] keeps `t` and unmaps when dropped.
///
/// This is for a PV kernel, whose page tables the hypervisor edits; a Linux process
/// (`Privcmd`) maps grants with Linux's `gntdev` instead.
///
/// Errors: `Error::Errno(EINVAL)` for an unaligned or zero `host_addr`,
/// `Error::Errno(_)` when the hypercall fails, `Error::Status(GNTST_*)` when the
/// hypervisor refuses the map (bad reference, no permission...).
///
/// ```no_run
/// use xen_pv_abi::kit::map_grant;
/// use xen_pv_abi::transport::Native;
/// use xen_pv_abi::{DomId, GrantRef};
///
/// const WINDOW: u64 = 0xffff_c900_0000_0000; // a page-table-backed, unused page
/// // SAFETY: nothing else uses WINDOW, and it is only accessed while `page` lives.
/// let page = unsafe { map_grant(Native, DomId(1), GrantRef(8), WINDOW, true)? };
/// // SAFETY: mapped read-only above; the peer may change it, so read volatile.
/// let first = unsafe { (page.host_addr() as *const u32).read_volatile() };
/// page.unmap()?;
/// # let _ = first;
/// # Ok::<(), xen_pv_abi::kit::Error>(())
/// ```
///
/// # Safety
///
/// The hypervisor replaces whatever `host_addr` mapped with the foreign frame, and the
/// drop of the [`Mapping`] removes that: the page at `host_addr` must be reserved for
/// this mapping (an L1 page table must exist for it, no Rust reference may cover it)
/// until the `Mapping` is gone, and afterwards must not be accessed until it is mapped
/// again. The frame is shared with `domid`, which may change it at any time: read it
/// with volatile or atomic accesses.
pub unsafe fn map_grant<T: Transport>(
    t: T,
    domid: DomId,
    gref: GrantRef,
    host_addr: u64,
    readonly: bool,
) -> Result<Mapping<T>, Error> {
    if host_addr == 0 || !host_addr.is_multiple_of(PAGE_SIZE as u64) {
        return Err(Error::Errno(Errno::EINVAL));
    }
    let mut op = GnttabMapGrantRef {
        host_addr,
        flags: GNTMAP_HOST_MAP | if readonly { GNTMAP_READONLY } else { 0 },
        r#ref: gref.0,
        dom: domid,
        ..Default::default()
    };
    // SAFETY: one map operation in a local struct, which the hypervisor reads and
    // writes (32 bytes); the PTE it installs at `host_addr` is the caller's contract.
    let ret = unsafe {
        call_on::grant_table_op(
            &t,
            GNTTABOP_MAP_GRANT_REF,
            core::ptr::from_mut(&mut op).cast(),
            1,
        )
    };
    Errno::check(ret)?;
    if op.status != GNTST_OKAY {
        return Err(Error::Status(op.status));
    }
    Ok(Mapping {
        t,
        host_addr,
        handle: op.handle,
        domid,
        gref,
        readonly,
        mapped: true,
    })
}

/// A foreign frame mapped at [`host_addr`](Self::host_addr); unmapped
/// (`GNTTABOP_unmap_grant_ref` with its handle and address) when dropped or by
/// [`unmap`](Self::unmap).
///
/// Unmapping on drop ignores a failure (the hypervisor keeps the mapping, which then
/// lives until the domain ends); use [`unmap`](Self::unmap) to see it.
#[derive(Debug)]
pub struct Mapping<T: Transport> {
    t: T,
    host_addr: u64,
    handle: u32,
    domid: DomId,
    gref: GrantRef,
    readonly: bool,
    mapped: bool,
}

impl<T: Transport> Mapping<T> {
    /// The virtual address the frame is mapped at.
    pub fn host_addr(&self) -> u64 {
        self.host_addr
    }

    /// The address as a pointer (access it volatile: the peer shares the frame).
    pub fn as_ptr(&self) -> *mut u8 {
        self.host_addr as *mut u8
    }

    /// The hypervisor's handle of the mapping.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The granting domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The grant reference mapped.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// Whether the mapping is read-only.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// The transport the mapping was made (and will be removed) through.
    pub fn transport(&self) -> &T {
        &self.t
    }

    /// Unmaps now, reporting a failure.
    pub fn unmap(mut self) -> Result<(), Error> {
        self.mapped = false;
        self.unmap_inner()
    }

    fn unmap_inner(&self) -> Result<(), Error> {
        let mut op = GnttabUnmapGrantRef {
            host_addr: self.host_addr,
            dev_bus_addr: 0,
            handle: self.handle,
            ..Default::default()
        };
        // SAFETY: one unmap operation in a local struct (24 bytes, read and written);
        // it removes the mapping this value owns, which the contract of `map_grant`
        // allows once the `Mapping` goes away.
        let ret = unsafe {
            call_on::grant_table_op(
                &self.t,
                GNTTABOP_UNMAP_GRANT_REF,
                core::ptr::from_mut(&mut op).cast(),
                1,
            )
        };
        Errno::check(ret)?;
        if op.status != GNTST_OKAY {
            return Err(Error::Status(op.status));
        }
        Ok(())
    }
}

impl<T: Transport> Drop for Mapping<T> {
    fn drop(&mut self) {
        if self.mapped {
            let _ = self.unmap_inner();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant_table::{GNTST_BAD_GNTREF, GNTST_BAD_HANDLE};
    use crate::nr;
    use crate::transport::fake::Fake;
    use core::cell::Cell;

    /// A hypervisor that maps with handle 42 and records the unmap's arguments.
    fn xen<'a>(
        unmapped: &'a Cell<Option<GnttabUnmapGrantRef>>,
        map_status: i16,
        unmap_status: i16,
    ) -> Fake<impl FnMut(&crate::transport::fake::Call) -> i64 + 'a> {
        Fake::new(move |call| {
            assert_eq!(call.op, nr::GRANT_TABLE_OP);
            assert_eq!(call.args[2], 1, "one operation per call");
            match call.args[0] as u32 {
                GNTTABOP_MAP_GRANT_REF => {
                    // SAFETY: the map passes a live GnttabMapGrantRef.
                    let op = unsafe { &mut *(call.args[1] as *mut GnttabMapGrantRef) };
                    op.status = map_status;
                    op.handle = 42;
                    0
                }
                GNTTABOP_UNMAP_GRANT_REF => {
                    // SAFETY: the unmap passes a live GnttabUnmapGrantRef.
                    let op = unsafe { &mut *(call.args[1] as *mut GnttabUnmapGrantRef) };
                    unmapped.set(Some(*op));
                    op.status = unmap_status;
                    0
                }
                _ => Errno::ENOSYS.to_ret(),
            }
        })
    }

    #[test]
    fn map_passes_flags_ref_and_dom_and_drop_unmaps_with_the_handle() {
        let seen = Cell::new(None);
        let map_op = Cell::new(None);
        let inner = xen(&seen, GNTST_OKAY, GNTST_OKAY);
        let t = Fake::new(|call| {
            if call.args[0] as u32 == GNTTABOP_MAP_GRANT_REF {
                // SAFETY: the map passes a live GnttabMapGrantRef.
                map_op.set(Some(unsafe { *(call.args[1] as *const GnttabMapGrantRef) }));
            }
            // SAFETY: forwarded unchanged.
            unsafe { inner.hypercall5(call.op, call.args) }
        });
        // SAFETY: the fake maps nothing.
        let m = unsafe { map_grant(&t, DomId(3), GrantRef(9), 0x7000_0000, true) }.unwrap();
        let op = map_op.get().unwrap();
        assert_eq!(op.flags, GNTMAP_HOST_MAP | GNTMAP_READONLY);
        assert_eq!((op.r#ref, op.dom, op.host_addr), (9, DomId(3), 0x7000_0000));
        assert_eq!(
            (m.handle(), m.gref(), m.domid()),
            (42, GrantRef(9), DomId(3))
        );
        assert!(m.readonly());
        assert_eq!(seen.get().map(|u| u.handle), None);
        drop(m);
        let u = seen.get().unwrap();
        assert_eq!(
            (u.handle, u.host_addr, u.dev_bus_addr),
            (42, 0x7000_0000, 0)
        );
        assert_eq!(t.count(), 2);
        // Writable maps leave out GNTMAP_readonly.
        // SAFETY: the fake maps nothing.
        let m = unsafe { map_grant(&t, DomId(3), GrantRef(10), 0x1000, false) }.unwrap();
        assert_eq!(map_op.get().unwrap().flags, GNTMAP_HOST_MAP);
        m.unmap().unwrap();
        assert_eq!(t.count(), 4, "explicit unmap is not repeated by drop");
    }

    #[test]
    fn failures_are_reported_and_nothing_is_unmapped_after_a_failed_map() {
        let seen = Cell::new(None);
        let t = xen(&seen, GNTST_BAD_GNTREF, GNTST_OKAY);
        // SAFETY: the fake maps nothing.
        let r = unsafe { map_grant(&t, DomId(3), GrantRef(9), 0x1000, false) };
        assert_eq!(r.unwrap_err(), Error::Status(GNTST_BAD_GNTREF));
        assert_eq!(t.count(), 1);
        // SAFETY: rejected before any hypercall.
        let r = unsafe { map_grant(&t, DomId(3), GrantRef(9), 0x1001, false) };
        assert_eq!(r.unwrap_err(), Error::Errno(Errno::EINVAL));
        // SAFETY: as above.
        let r = unsafe { map_grant(&t, DomId(3), GrantRef(9), 0, false) };
        assert_eq!(r.unwrap_err(), Error::Errno(Errno::EINVAL));
        assert_eq!(t.count(), 1);
        let t = Fake::new(|_| Errno::EFAULT.to_ret());
        // SAFETY: the fake maps nothing.
        let r = unsafe { map_grant(&t, DomId(3), GrantRef(9), 0x1000, false) };
        assert_eq!(r.unwrap_err(), Error::Errno(Errno::EFAULT));

        let t = xen(&seen, GNTST_OKAY, GNTST_BAD_HANDLE);
        // SAFETY: the fake maps nothing.
        let m = unsafe { map_grant(&t, DomId(3), GrantRef(9), 0x1000, false) }.unwrap();
        assert_eq!(m.unmap().unwrap_err(), Error::Status(GNTST_BAD_HANDLE));
        assert_eq!(t.count(), 2);
    }
}
