//! Grant-table helpers shared by the guests that grant, map and copy (`bench`,
//! `hostile-grant`, `grant-peer`): set up and map the guest's own version-1 table, write
//! entries, find the guest's own domain id, and the raw `grant_table_op` calls.
//!
//! Every call returns what the hypervisor answered (the hypercall's return, and the
//! per-element `GNTST_*` status in the struct), so hostile cases can check both.

use core::ptr::null;

use xen_pv_abi::grant_table::{
    GNTCOPY_SOURCE_GREF, GNTMAP_HOST_MAP, GNTST_OKAY, GNTTABOP_COPY, GNTTABOP_MAP_GRANT_REF,
    GNTTABOP_SETUP_TABLE, GNTTABOP_UNMAP_GRANT_REF, GTF_PERMIT_ACCESS, GnttabCopy, GnttabCopyPtr,
    GnttabMapGrantRef, GnttabSetupTable, GnttabUnmapGrantRef,
};
use xen_pv_abi::hypercall::{UVMF_INVLPG, update_va_mapping};
use xen_pv_abi::{DomId, Errno};

/// Version-1 entries in one grant frame.
pub const ENTRIES_PER_FRAME: u32 = 512;
/// PTE bits of a normal writable guest mapping: present, RW, user, accessed, dirty.
pub const PTE_RW: u64 = 0x67;
/// First grant reference the own-id probe uses ([`own_domid`]); refs 0 and 1 are the
/// toolstack's (console, xenstore).
pub const PROBE_FIRST_REF: u32 = 64;
/// Domain ids the probe tries (0..PROBE_IDS).
pub const PROBE_IDS: u16 = 32;

/// `grant_table_op(cmd, arg, count)` with `count` elements at `arg`.
///
/// # Safety
///
/// `arg` points to `count` live structs of the type `cmd` takes (or the point of the
/// call is that it does not, and the hypervisor must refuse it).
pub unsafe fn op_raw<T>(cmd: u32, arg: *mut T, count: u32) -> i64 {
    // SAFETY: forwarded to the caller.
    unsafe { xen_pv_abi::generated::call::grant_table_op(cmd, arg.cast(), count) }
}

/// One `GNTTABOP_map_grant_ref` element: the hypercall's return; status and handle are
/// in `m`.
pub fn map(m: &mut GnttabMapGrantRef) -> i64 {
    // SAFETY: one live map element; what the hypervisor maps at `host_addr` replaces
    // the caller's mapping there, which the caller chose (no reference covers it).
    unsafe { op_raw(GNTTABOP_MAP_GRANT_REF, m, 1) }
}

/// One `GNTTABOP_unmap_grant_ref` element.
pub fn unmap(u: &mut GnttabUnmapGrantRef) -> i64 {
    // SAFETY: one live unmap element.
    unsafe { op_raw(GNTTABOP_UNMAP_GRANT_REF, u, 1) }
}

/// `GNTTABOP_copy` of the elements of `ops`.
pub fn copy(ops: &mut [GnttabCopy]) -> i64 {
    // SAFETY: `ops.len()` live copy elements; the frames they name are checked by the
    // hypervisor, and the callers only name their own scratch frames as destinations.
    unsafe { op_raw(GNTTABOP_COPY, ops.as_mut_ptr(), ops.len() as u32) }
}

/// A host map request of `gref` of `dom` at `host_addr` (writable unless `extra` has
/// `GNTMAP_READONLY`).
pub fn map_req(dom: DomId, gref: u32, host_addr: u64, extra: u32) -> GnttabMapGrantRef {
    GnttabMapGrantRef {
        host_addr,
        flags: GNTMAP_HOST_MAP | extra,
        r#ref: gref,
        dom,
        ..GnttabMapGrantRef::default()
    }
}

/// The unmap request of a successful map.
pub fn unmap_req(m: &GnttabMapGrantRef) -> GnttabUnmapGrantRef {
    GnttabUnmapGrantRef {
        host_addr: m.host_addr,
        handle: m.handle,
        ..GnttabUnmapGrantRef::default()
    }
}

/// A copy of `len` bytes from `src_gref` of `src_dom` to our frame `dst_mfn`.
pub fn copy_from_gref(src_dom: DomId, src_gref: u32, dst_mfn: u64, len: u16) -> GnttabCopy {
    GnttabCopy {
        source: GnttabCopyPtr {
            u: u64::from(src_gref),
            domid: src_dom,
            ..GnttabCopyPtr::default()
        },
        dest: GnttabCopyPtr {
            u: dst_mfn,
            domid: DomId::SELF,
            ..GnttabCopyPtr::default()
        },
        len,
        flags: GNTCOPY_SOURCE_GREF,
        ..GnttabCopy::default()
    }
}

/// The guest's own grant table (first frame), mapped writable in one of its pages.
#[derive(Clone, Copy)]
pub struct Table {
    /// Where the entries are mapped.
    entries: *mut u64,
}

/// Why [`Table::setup`] failed.
#[derive(Clone, Copy, Debug)]
pub enum SetupError {
    /// The hypercall failed.
    Errno(Errno),
    /// `GNTTABOP_setup_table` answered this `GNTST_*` status.
    Status(i16),
}

impl From<Errno> for SetupError {
    fn from(e: Errno) -> Self {
        SetupError::Errno(e)
    }
}

impl Table {
    /// Sets up one grant frame and maps it at `page_va` instead of the page there.
    ///
    /// # Safety
    ///
    /// `page_va` is a page-aligned page of the guest's image that no reference covers
    /// and that is used for nothing else afterwards.
    pub unsafe fn setup(page_va: u64) -> Result<Table, SetupError> {
        let mut frame: u64 = 0;
        let mut op = GnttabSetupTable {
            dom: DomId::SELF,
            nr_frames: 1,
            frame_list: (&raw mut frame) as u64,
            ..GnttabSetupTable::default()
        };
        // SAFETY: one live setup_table struct whose frame list has room for one MFN.
        Errno::check(unsafe { op_raw(GNTTABOP_SETUP_TABLE, &mut op, 1) })?;
        if op.status != GNTST_OKAY {
            return Err(SetupError::Status(op.status));
        }
        // SAFETY: the caller's contract; the grant frame is ours (Xen lets a PV guest
        // map its grant frames writable).
        unsafe { update_va_mapping(page_va, (frame << 12) | PTE_RW, UVMF_INVLPG)? };
        Ok(Table {
            entries: page_va as *mut u64,
        })
    }

    /// The table [`Table::setup`] mapped at `page_va` earlier.
    ///
    /// # Safety
    ///
    /// `Table::setup(page_va)` succeeded before and the mapping is still in place.
    pub unsafe fn at(page_va: u64) -> Table {
        Table {
            entries: page_va as *mut u64,
        }
    }

    /// Writes entry `gref` (< 512): `flags` for `domid` on machine frame `frame`.
    /// The frame goes in before the flags, so the entry is never valid with a stale one.
    pub fn set(&self, gref: u32, flags: u16, domid: DomId, frame: u64) {
        let at = (gref % ENTRIES_PER_FRAME) as usize;
        // SAFETY: `entries` maps our grant frame (512 8-byte entries); volatile 32-bit
        // stores of the two halves of one entry, which the hypervisor accesses
        // atomically.
        unsafe {
            let p = self.entries.add(at).cast::<u32>();
            p.add(1).write_volatile(frame as u32);
            core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
            p.write_volatile(u32::from(flags) | (u32::from(domid.0) << 16));
        }
    }

    /// Revokes entry `gref` (flags and domid zero).
    pub fn clear(&self, gref: u32) {
        let at = (gref % ENTRIES_PER_FRAME) as usize;
        // SAFETY: as in `set`.
        unsafe { self.entries.add(at).cast::<u32>().write_volatile(0) };
    }

    /// The flags of entry `gref` (the hypervisor's `GTF_reading`/`GTF_writing` show).
    pub fn flags(&self, gref: u32) -> u16 {
        let at = (gref % ENTRIES_PER_FRAME) as usize;
        // SAFETY: as in `set`; a volatile load.
        unsafe { self.entries.add(at).cast::<u16>().read_volatile() }
    }

    /// Finds the guest's own domain id (a PV guest is not told it; Xen's map takes a
    /// real id, and an entry must name the grantee): grants `frame` to each id below
    /// [`PROBE_IDS`] in its own entry and copies 8 bytes from each through `DOMID_SELF`
    /// to `scratch_mfn`; only the entry naming us lets the copy through. The probe
    /// entries are revoked afterwards.
    pub fn own_domid(&self, frame: u64, scratch_mfn: u64) -> Option<DomId> {
        let mut found = None;
        for id in 0..PROBE_IDS {
            let gref = PROBE_FIRST_REF + u32::from(id);
            self.set(gref, GTF_PERMIT_ACCESS, DomId(id), frame);
            let mut c = [copy_from_gref(DomId::SELF, gref, scratch_mfn, 8)];
            let r = copy(&mut c);
            self.clear(gref);
            if r == 0 && c[0].status == GNTST_OKAY {
                found = Some(DomId(id));
                break;
            }
        }
        found
    }
}

/// Yields the CPU once (`SCHEDOP_yield`).
pub fn yield_cpu() {
    // SAFETY: SCHEDOP_yield takes no argument.
    let _ =
        unsafe { xen_pv_abi::generated::call::sched_op(xen_pv_abi::sched::SCHEDOP_YIELD, null()) };
}
