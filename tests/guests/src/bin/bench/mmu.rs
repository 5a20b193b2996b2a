//! The PV MMU paths: TLB flushes, page-table writes (`mmu_update`, `update_va_mapping`),
//! pinning, CR3 switches, and a multicall.
//!
//! Every case leaves the guest as it found it: entries are rewritten with the value they
//! already hold, a page made read-only for a pin is made writable again, a second root is
//! unpinned and CR3 is back on the kernel's root.
//!
//! What one iteration is:
//! * `mmuext_tlb_flush_local`, `mmuext_invlpg_local`: one `mmuext_op` with one op.
//! * `mmu_update_1pte`: one `mmu_update` of one L1 entry (the one mapping [`TARGET`]).
//! * `mmu_update_512pte`: **one entry** of a 512-entry `mmu_update` (the whole L1 table
//!   that maps [`TARGET`], present or not): the reported iterations are calls × 512.
//! * `update_va_mapping`, `update_va_mapping_invlpg`: one call remapping [`TARGET`] to
//!   its own frame, without flush flags or with `UVMF_INVLPG`.
//! * `mmuext_pin_unpin_l1`: one `mmuext_op` with two ops, `PIN_L1_TABLE` and
//!   `UNPIN_TABLE` of a zeroed page of ours mapped read-only for the time of the case.
//! * `multicall_8_nops`: one `multicall` of 8 `xen_version(XENVER_version)` entries
//!   (per multicall, not per entry).
//! * `cr3_switch`: one `MMUEXT_NEW_BASEPTR`, alternately to a pinned copy of the kernel's
//!   L4 and back to the kernel's L4.

use core::ptr::null_mut;

use pv_guest::StartInfo;
use pv_guest::paging::kernel_l4;
use xen_pv_abi::generated::call;
use xen_pv_abi::mmu::{
    MMU_NORMAL_PT_UPDATE, MMUEXT_INVLPG_LOCAL, MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L1_TABLE,
    MMUEXT_PIN_L4_TABLE, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE, MmuUpdate, MmuextOp,
    MulticallEntry, UVMF_INVLPG, UVMF_NONE,
};
use xen_pv_abi::version::XENVER_VERSION;
use xen_pv_abi::{DomId, Errno, nr};

use crate::{Ctx, Failure, Figures, timed, timed_empty};

const PTE_PRESENT: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;
const ENTRIES: usize = 512;

#[repr(C, align(4096))]
struct Page([u64; ENTRIES]);

/// The page whose mapping the page-table cases rewrite. Only accessed through raw
/// pointers.
static mut TARGET: Page = Page([0; ENTRIES]);
/// A zeroed page pinned as an (empty) L1 table by `mmuext_pin_unpin_l1`.
static mut EMPTY_L1: Page = Page([0; ENTRIES]);
/// The copy of the kernel's L4 `cr3_switch` switches to.
static mut L4_COPY: Page = Page([0; ENTRIES]);

/// The VA at which the page table with machine frame `mfn` is mapped (read-only): one of
/// the `nr_pt_frames` start-of-day table pages from `pt_base`.
fn table_va(si: &StartInfo, mfn: u64) -> Result<u64, Failure> {
    (0..si.nr_pt_frames)
        .map(|i| si.pt_base + i * 4096)
        .find(|&va| pv_guest::paging::mfn_of(si, va) == mfn)
        .ok_or(Failure::Wrong("table_not_in_start_of_day_tables"))
}

/// The L1 entry mapping `va`: (its machine address, the VA where it can be read).
pub(crate) fn l1_entry(si: &StartInfo, va: u64) -> Result<(u64, *const u64), Failure> {
    let mut mfn = kernel_l4(si);
    for shift in [39u32, 30, 21, 12] {
        let index = (va >> shift) & 0x1ff;
        let table = table_va(si, mfn)?;
        let entry = (table + index * 8) as *const u64;
        if shift == 12 {
            return Ok(((mfn << 12) + index * 8, entry));
        }
        // SAFETY: a start-of-day page table, mapped read-only; index < 512.
        let e = unsafe { entry.read_volatile() };
        if e & PTE_PRESENT == 0 {
            return Err(Failure::Wrong("va_not_mapped"));
        }
        mfn = (e & PTE_ADDR) >> 12;
    }
    unreachable!()
}

fn read(p: *const u64) -> u64 {
    // SAFETY: callers pass an entry of a mapped page table (see l1_entry).
    unsafe { p.read_volatile() }
}

/// One `mmuext_op` batch on DOMID_SELF.
fn mmuext(ops: &[MmuextOp]) -> Result<(), Errno> {
    // SAFETY: `ops` is a live array of `ops.len()` requests; no pdone. Callers only pass
    // ops that keep the running code mapped.
    let r = unsafe {
        call::mmuext_op(
            ops.as_ptr(),
            ops.len() as u32,
            null_mut(),
            u32::from(DomId::SELF.0),
        )
    };
    Errno::check(r).map(drop)
}

fn op(cmd: u32, arg1: u64) -> MmuextOp {
    MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2: 0,
    }
}

/// One `mmu_update` batch on DOMID_SELF.
fn mmu_update(reqs: &[MmuUpdate]) -> Result<(), Errno> {
    // SAFETY: `reqs` is a live array; every request rewrites an L1 entry with the value
    // it holds, so no mapping changes.
    let r = unsafe {
        call::mmu_update(
            reqs.as_ptr(),
            reqs.len() as u32,
            null_mut(),
            u32::from(DomId::SELF.0),
        )
    };
    Errno::check(r).map(drop)
}

fn update_va_mapping(va: u64, val: u64, flags: u64) -> Result<(), Errno> {
    // SAFETY: callers map one of our own pages (TARGET, EMPTY_L1, L4_COPY), which no
    // Rust reference points at, to its own frame.
    let r = unsafe { call::update_va_mapping(va, val, flags) };
    Errno::check(r).map(drop)
}

/// Times `n` single-op `mmuext_op` calls.
fn mmuext_loop(ctx: &Ctx, o: MmuextOp) -> Figures {
    let ops = [o];
    mmuext(&ops)?;
    let total = timed(ctx.n, || mmuext(&ops).map_err(Failure::from))?;
    Ok((ctx.n, total, timed_empty(ctx.n)))
}

pub fn mmuext_tlb_flush_local(ctx: &Ctx) -> Figures {
    mmuext_loop(ctx, op(MMUEXT_TLB_FLUSH_LOCAL, 0))
}

pub fn mmuext_invlpg_local(ctx: &Ctx) -> Figures {
    mmuext_loop(ctx, op(MMUEXT_INVLPG_LOCAL, (&raw const TARGET) as u64))
}

pub fn mmu_update_1pte(ctx: &Ctx) -> Figures {
    let (maddr, entry) = l1_entry(ctx.si, (&raw const TARGET) as u64)?;
    let req = [MmuUpdate {
        ptr: maddr | MMU_NORMAL_PT_UPDATE,
        val: read(entry),
    }];
    mmu_update(&req)?;
    let total = timed(ctx.n, || mmu_update(&req).map_err(Failure::from))?;
    Ok((ctx.n, total, timed_empty(ctx.n)))
}

pub fn mmu_update_512pte(ctx: &Ctx) -> Figures {
    let (maddr, entry) = l1_entry(ctx.si, (&raw const TARGET) as u64)?;
    let table = maddr & !0xfff;
    let first = (entry as u64 & !0xfff) as *const u64;
    let mut reqs = [MmuUpdate::default(); ENTRIES];
    for (i, r) in reqs.iter_mut().enumerate() {
        *r = MmuUpdate {
            ptr: (table + i as u64 * 8) | MMU_NORMAL_PT_UPDATE,
            // Entry i of the same L1 table, mapped read-only.
            val: read(first.wrapping_add(i)),
        };
    }
    mmu_update(&reqs)?;
    let calls = ctx.n.div_ceil(ENTRIES as u64).max(1);
    let total = timed(calls, || mmu_update(&reqs).map_err(Failure::from))?;
    Ok((calls * ENTRIES as u64, total, timed_empty(calls)))
}

fn uvm_loop(ctx: &Ctx, flags: u64) -> Figures {
    let va = (&raw const TARGET) as u64;
    let (_, entry) = l1_entry(ctx.si, va)?;
    let val = read(entry);
    update_va_mapping(va, val, flags)?;
    let total = timed(ctx.n, || {
        update_va_mapping(va, val, flags).map_err(Failure::from)
    })?;
    Ok((ctx.n, total, timed_empty(ctx.n)))
}

pub fn update_va_mapping_none(ctx: &Ctx) -> Figures {
    uvm_loop(ctx, UVMF_NONE)
}

pub fn update_va_mapping_invlpg(ctx: &Ctx) -> Figures {
    uvm_loop(ctx, UVMF_INVLPG)
}

/// Runs `f` with the page at `va` mapped read-only (as page-table frames must be), then
/// maps it back as it was.
fn read_only(si: &StartInfo, va: u64, f: impl FnOnce(u64) -> Figures) -> Figures {
    let (_, entry) = l1_entry(si, va)?;
    let old = read(entry);
    update_va_mapping(va, old & !PTE_RW, UVMF_INVLPG)?;
    let r = f((old & PTE_ADDR) >> 12);
    update_va_mapping(va, old, UVMF_INVLPG)?;
    r
}

pub fn mmuext_pin_unpin_l1(ctx: &Ctx) -> Figures {
    let page = &raw mut EMPTY_L1;
    // SAFETY: our own page, no reference to it exists; zeroed so every entry is empty.
    unsafe { page.cast::<u64>().write_bytes(0, ENTRIES) };
    read_only(ctx.si, page as u64, |mfn| {
        let ops = [op(MMUEXT_PIN_L1_TABLE, mfn), op(MMUEXT_UNPIN_TABLE, mfn)];
        mmuext(&ops)?;
        let total = timed(ctx.n, || mmuext(&ops).map_err(Failure::from))?;
        Ok((ctx.n, total, timed_empty(ctx.n)))
    })
}

pub fn multicall_8_nops(ctx: &Ctx) -> Figures {
    let entry = MulticallEntry {
        op: u64::from(nr::XEN_VERSION),
        result: u64::MAX,
        args: [u64::from(XENVER_VERSION), 0, 0, 0, 0, 0],
    };
    let mut calls = [entry; 8];
    let mut multicall = || {
        // SAFETY: eight live entries; each is xen_version(XENVER_version, NULL), which
        // takes no buffer; the hypervisor writes their results.
        let r = unsafe { call::multicall(calls.as_mut_ptr(), 8) };
        Errno::check(r).map(drop).map_err(Failure::from)
    };
    multicall()?;
    let total = timed(ctx.n, &mut multicall)?;
    let version = xen_pv_abi::hypercall::xen_version()?;
    let want = (u64::from(version.0) << 16) | u64::from(version.1);
    if calls.iter().any(|c| c.result != want) {
        return Err(Failure::Wrong("multicall_results"));
    }
    Ok((ctx.n, total, timed_empty(ctx.n)))
}

pub fn cr3_switch(ctx: &Ctx) -> Figures {
    let si = ctx.si;
    let kernel = kernel_l4(si);
    let l4 = table_va(si, kernel)? as *const u64;
    let copy = &raw mut L4_COPY;
    for i in 0..ENTRIES {
        // SAFETY: `l4` is the kernel's L4, mapped read-only; `copy` our own page, no
        // reference to it exists; i < 512.
        unsafe {
            copy.cast::<u64>()
                .add(i)
                .write_volatile(l4.add(i).read_volatile())
        };
    }
    read_only(si, copy as u64, |copy_mfn| {
        mmuext(&[op(MMUEXT_PIN_L4_TABLE, copy_mfn)])?;
        let to_copy = [op(MMUEXT_NEW_BASEPTR, copy_mfn)];
        let to_kernel = [op(MMUEXT_NEW_BASEPTR, kernel)];
        let mut on_copy = false;
        let r = timed(ctx.n, || {
            on_copy = !on_copy;
            mmuext(if on_copy { &to_copy } else { &to_kernel }).map_err(Failure::from)
        });
        // Back on the kernel's root whatever happened, then drop the copy.
        if on_copy {
            mmuext(&to_kernel)?;
        }
        mmuext(&[op(MMUEXT_UNPIN_TABLE, copy_mfn)])?;
        let mut flip = false;
        let baseline = timed(ctx.n, || {
            flip = !flip;
            core::hint::black_box(flip);
            Ok(())
        })?;
        Ok((ctx.n, r?, baseline))
    })
}
