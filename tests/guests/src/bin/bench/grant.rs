//! Grant tables: the guest grants one of its own pages to itself (a domain may be its own
//! grantee, on Xen too) and maps or copies it, and the in-guest copy they compare with.
//!
//! What one iteration is:
//! * `grant_map_unmap`: one `GNTTABOP_map_grant_ref` (one element, `GNTMAP_host_map`,
//!   writable) of the granted page at a spare VA whose PTE is empty, then one
//!   `GNTTABOP_unmap_grant_ref` of it: two hypercalls.
//! * `grant_copy_4k`: one `GNTTABOP_copy` (one element) of 4096 bytes from the granted
//!   page (source by grant reference) to a frame of ours (destination by MFN).
//! * `memcpy_4k`: one `core::ptr::copy_nonoverlapping` of 4096 bytes between two pages
//!   of ours (compiler_builtins' `memcpy`, the same routine the hypervisor's copy uses).
//!
//! The grant table is set up once and stays mapped over [`TABLE_PAGE`]; each case revokes
//! its entry and puts back what it changed (the spare VA's PTE) before it returns.

use core::sync::atomic::{AtomicU32, Ordering};

use pv_guest::paging::mfn_of;
use test_guests::grant::{Table, copy, copy_from_gref, map, map_req, unmap, unmap_req};
use xen_pv_abi::DomId;
use xen_pv_abi::grant_table::{GNTST_OKAY, GTF_PERMIT_ACCESS, GTF_READONLY};
use xen_pv_abi::hypercall::{UVMF_INVLPG, update_va_mapping};

use crate::mmu::l1_entry;
use crate::{Ctx, Failure, Figures, timed, timed_empty};

/// The grant reference the cases use.
const GREF: u32 = 8;
const PAGE: usize = 4096;

#[repr(C, align(4096))]
struct Page([u8; PAGE]);

/// Replaced by the mapping of our grant frame (once, for the guest's life).
static mut TABLE_PAGE: Page = Page([0; PAGE]);
/// The page granted to ourselves: mapped by `grant_map_unmap`, copied from by
/// `grant_copy_4k` and `memcpy_4k`.
static mut GRANTED: Page = Page([0x5a; PAGE]);
/// The copies' destination (and the own-id probe's scratch frame).
static mut DEST: Page = Page([0; PAGE]);
/// The spare VA `grant_map_unmap` maps at: its own mapping is removed for the case and
/// put back after it.
static mut MAP_AT: Page = Page([0; PAGE]);

/// Our domain id once known (`u32::MAX` before).
static OWN_ID: AtomicU32 = AtomicU32::new(u32::MAX);
/// The table, once set up (0 before).
static TABLE_SET_UP: AtomicU32 = AtomicU32::new(0);

/// Xen's name of a `GNTST_*` status, for the `unsupported=` word.
fn gntst(s: i16) -> Failure {
    Failure::Wrong(match s {
        -1 => "GNTST_general_error",
        -2 => "GNTST_bad_domain",
        -3 => "GNTST_bad_gntref",
        -4 => "GNTST_bad_handle",
        -5 => "GNTST_bad_virt_addr",
        -6 => "GNTST_bad_dev_addr",
        -7 => "GNTST_no_device_space",
        -13 => "GNTST_no_space",
        -8 => "GNTST_permission_denied",
        -9 => "GNTST_bad_page",
        -10 => "GNTST_bad_copy_arg",
        _ => "GNTST_other",
    })
}

fn check(ret: i64, status: i16) -> Result<(), Failure> {
    xen_pv_abi::Errno::check(ret)?;
    if status != GNTST_OKAY {
        return Err(gntst(status));
    }
    Ok(())
}

/// Our table and domain id (set up and probed at the first call).
fn table(ctx: &Ctx) -> Result<(Table, DomId), Failure> {
    let va = (&raw mut TABLE_PAGE) as u64;
    let t = if TABLE_SET_UP.load(Ordering::Relaxed) == 0 {
        // SAFETY: TABLE_PAGE is ours, never referenced, and used for nothing else.
        let t = unsafe { Table::setup(va) }.map_err(|e| match e {
            test_guests::grant::SetupError::Errno(e) => Failure::Errno(e),
            test_guests::grant::SetupError::Status(s) => gntst(s),
        })?;
        TABLE_SET_UP.store(1, Ordering::Relaxed);
        t
    } else {
        // SAFETY: set up above in an earlier call: our grant frame is mapped at `va`.
        unsafe { Table::at(va) }
    };
    let id = match OWN_ID.load(Ordering::Relaxed) {
        u32::MAX => {
            let id = t
                .own_domid(granted_mfn(ctx), dest_mfn(ctx))
                .ok_or(Failure::Wrong("own_domid_not_found"))?;
            OWN_ID.store(u32::from(id.0), Ordering::Relaxed);
            id
        }
        id => DomId(id as u16),
    };
    Ok((t, id))
}

fn granted_mfn(ctx: &Ctx) -> u64 {
    mfn_of(ctx.si, (&raw const GRANTED) as u64)
}

fn dest_mfn(ctx: &Ctx) -> u64 {
    mfn_of(ctx.si, (&raw const DEST) as u64)
}

pub fn grant_map_unmap(ctx: &Ctx) -> Figures {
    let (t, me) = table(ctx)?;
    let va = (&raw mut MAP_AT) as u64;
    let (_, entry) = l1_entry(ctx.si, va)?;
    // SAFETY: the L1 entry of MAP_AT, in a start-of-day table mapped read-only.
    let old = unsafe { entry.read_volatile() };
    t.set(GREF, GTF_PERMIT_ACCESS, me, granted_mfn(ctx));
    // Every iteration maps into an empty PTE, on both hypervisors alike.
    // SAFETY: MAP_AT is ours and never referenced; it is mapped back below.
    let r = unsafe { update_va_mapping(va, 0, UVMF_INVLPG) };
    let figures = r.map_err(Failure::from).and_then(|()| {
        let mut m = map_req(me, GREF, va, 0);
        let mut once = || {
            check(map(&mut m), m.status)?;
            let mut u = unmap_req(&m);
            check(unmap(&mut u), u.status)
        };
        once()?;
        let total = timed(ctx.n, once)?;
        Ok((ctx.n, total, timed_empty(ctx.n)))
    });
    // SAFETY: puts MAP_AT's own mapping back as it was.
    let back = unsafe { update_va_mapping(va, old, UVMF_INVLPG) };
    t.clear(GREF);
    let figures = figures?;
    back?;
    Ok(figures)
}

pub fn grant_copy_4k(ctx: &Ctx) -> Figures {
    let (t, me) = table(ctx)?;
    t.set(GREF, GTF_PERMIT_ACCESS | GTF_READONLY, me, granted_mfn(ctx));
    let mut c = [copy_from_gref(me, GREF, dest_mfn(ctx), PAGE as u16)];
    let mut once = || {
        let r = copy(&mut c);
        check(r, c[0].status)
    };
    let figures = once().and_then(|()| {
        let total = timed(ctx.n, &mut once)?;
        Ok((ctx.n, total, timed_empty(ctx.n)))
    });
    t.clear(GREF);
    let figures = figures?;
    // SAFETY: the last byte of our own page, read through a raw pointer.
    let last = unsafe { (&raw const DEST).cast::<u8>().add(PAGE - 1).read_volatile() };
    if last != 0x5a {
        return Err(Failure::Wrong("copy_did_not_copy"));
    }
    Ok(figures)
}

pub fn memcpy_4k(ctx: &Ctx) -> Figures {
    let src = core::hint::black_box((&raw const GRANTED).cast::<u8>());
    let dst = core::hint::black_box((&raw mut DEST).cast::<u8>());
    let total = timed(ctx.n, || {
        // SAFETY: two distinct pages of ours, 4096 bytes each, no reference to either.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, PAGE) };
        core::hint::black_box(dst);
        Ok(())
    })?;
    Ok((ctx.n, total, timed_empty(ctx.n)))
}
