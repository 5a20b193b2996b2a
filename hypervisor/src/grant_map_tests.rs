//! Host tests of `GNTTABOP_map_grant_ref` / `GNTTABOP_unmap_grant_ref`: read-only and
//! writable host mappings written through, every error status, pin counts of two
//! mappings, the page-table rule, `mmu_update` refused on a grant PTE, and the death of
//! either side. A child module of `hv_tests.rs` (its domains and helpers).

use super::grant_support::{Fx, OPS_OFF, map_va, mop, run_as};
use super::*;
use crate::grant::{GrantLimits, GrantTable, MAPTRACK_PER_FRAME};
use crate::hypercall::handle::{GuestArray, Outcome};
use crate::mmu::PageType;
use crate::mmu::pagetable::{ADDR_MASK, PtCtx, Pte, Stop, entry_mfn};
use std::vec::Vec;
use xen_pv_abi::Errno;
use xen_pv_abi::grant_table::{
    GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GNTST_BAD_DEV_ADDR, GNTST_BAD_DOMAIN,
    GNTST_BAD_GNTREF, GNTST_BAD_HANDLE, GNTST_BAD_PAGE, GNTST_GENERAL_ERROR, GNTST_NO_SPACE,
    GNTST_OKAY, GNTTABOP_MAP_GRANT_REF, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING,
    GnttabMapGrantRef,
};
use zerocopy::IntoBytes;

/// Page 5 of the granter's data: the granted frame.
const BUF: usize = 5;

/// Domains 1..=3, page tables validated (pinned L4), one grant frame each.
fn fx() -> Fx {
    Fx::new(false, true)
}

#[test]
fn writable_map_writes_through_and_unmaps() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let before = fx.refs(frame);
    let out = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1));
    assert_eq!(out.status, GNTST_OKAY);
    assert_eq!(out.handle, 0);
    // Xen reports the bus address for every map.
    assert_eq!(out.dev_bus_addr, frame.maddr());
    assert_eq!(
        fx.entry_flags(1, 10),
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
    );
    let pte = fx.pte(2, map_va(0));
    assert_eq!(entry_mfn(pte), frame);
    assert_ne!(pte & Pte::RW.bits(), 0);
    assert_ne!(pte & Pte::GNTTAB.bits(), 0);
    assert_eq!(
        fx.refs(frame),
        (before.0 + 1, PageType::Writable, before.2 + 1)
    );
    // A write through the mapping (the machine address the PTE gives) lands in the
    // granter's frame.
    let idx2 = fx.d(2).idx;
    fx.hv
        .mem
        .write((pte & ADDR_MASK) + 16, b"through the grant")
        .unwrap();
    let mut b = [0u8; 17];
    fx.hv.mem.read(frame.maddr() + 16, &mut b).unwrap();
    assert_eq!(&b, b"through the grant");

    assert_eq!(fx.unmap(2, map_va(0), 0, 0), GNTST_OKAY);
    assert_eq!(fx.pte(2, map_va(0)), 0);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
    assert_eq!(fx.refs(frame), before);
    assert!(fx.hv.domains[idx2].grant.maps()[0].is_none());
    // The handle is gone.
    assert_eq!(fx.unmap(2, map_va(0), 0, 0), GNTST_BAD_HANDLE);
}

#[test]
fn readonly_map_and_device_bus_address() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 12, GTF_PERMIT_ACCESS | GTF_READONLY, 2, frame);
    let before = fx.refs(frame);
    // A read-only entry refuses a writable map.
    let out = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 12, 1));
    assert_eq!(out.status, GNTST_GENERAL_ERROR);
    assert_eq!(fx.entry_flags(1, 12), GTF_PERMIT_ACCESS | GTF_READONLY);
    let flags = GNTMAP_HOST_MAP | GNTMAP_READONLY | GNTMAP_DEVICE_MAP;
    let out = fx.map(2, mop(map_va(0), flags, 12, 1));
    assert_eq!(out.status, GNTST_OKAY);
    assert_eq!(out.dev_bus_addr, frame.maddr());
    assert_eq!(
        fx.entry_flags(1, 12),
        GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING
    );
    let pte = fx.pte(2, map_va(0));
    assert_eq!(pte & ADDR_MASK, frame.maddr());
    assert_eq!(pte & Pte::RW.bits(), 0);
    // A general reference per part (host and device), the type untouched.
    assert_eq!(fx.refs(frame), (before.0 + 2, before.1, before.2));
    fx.hv.mem.write(frame.maddr(), b"granter").unwrap();
    let mut b = [0u8; 7];
    fx.hv.mem.read(pte & ADDR_MASK, &mut b).unwrap();
    assert_eq!(&b, b"granter");
    // The hypervisor's own guest accesses go through owned frames only.
    let idx2 = fx.d(2).idx;
    run_as(&mut fx.hv, idx2);
    assert_eq!(fx.hv.write_guest(idx2, map_va(0), b"x"), Err(Errno::EFAULT));
    // Wrong bus address, then the right one.
    assert_eq!(
        fx.unmap(2, map_va(0), out.handle, 0x1000),
        GNTST_BAD_DEV_ADDR
    );
    assert_eq!(
        fx.unmap(2, map_va(0), out.handle, frame.maddr()),
        GNTST_OKAY
    );
    assert_eq!(fx.entry_flags(1, 12), GTF_PERMIT_ACCESS | GTF_READONLY);
    assert_eq!(fx.refs(frame), before);
}

#[test]
fn every_error_status() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    fx.grant(1, 11, GTF_PERMIT_ACCESS, 3, frame);
    let foreign = fx.d(3).data[BUF];
    fx.grant(1, 14, GTF_PERMIT_ACCESS, 2, foreign);
    let h = GNTMAP_HOST_MAP;
    let cases: [(GnttabMapGrantRef, i16); 10] = [
        (mop(map_va(0), 0, 10, 1), GNTST_BAD_GNTREF),
        (mop(map_va(0), h, 10, 9), GNTST_BAD_DOMAIN),
        (mop(map_va(0), h, 10, DomId::SELF.0), GNTST_BAD_DOMAIN),
        (mop(map_va(0), h, 512, 1), GNTST_BAD_GNTREF),
        (mop(map_va(0), h, u32::MAX, 1), GNTST_BAD_GNTREF),
        // Not permitted / granted to another domain / not the granter's frame (Xen's
        // get_paged_frame: bad page).
        (mop(map_va(0), h, 20, 1), GNTST_GENERAL_ERROR),
        (mop(map_va(0), h, 11, 1), GNTST_GENERAL_ERROR),
        (mop(map_va(0), h, 14, 1), GNTST_BAD_PAGE),
        // No L1 for the address / a hypervisor address.
        (mop(0x4000_0000, h, 10, 1), GNTST_GENERAL_ERROR),
        (mop(0xffff_8000_0000_0000, h, 10, 1), GNTST_GENERAL_ERROR),
    ];
    let before = fx.refs(frame);
    for (op, want) in cases {
        let out = fx.map(2, op);
        assert_eq!(out.status, want, "{op:?}");
        assert_eq!(out.handle, 0xdead, "no handle on failure");
    }
    // Nothing was left behind by the failures.
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
    assert_eq!(fx.refs(frame), before);
    assert!(
        fx.hv.domains[fx.d(2).idx]
            .grant
            .maps()
            .iter()
            .all(Option::is_none)
    );
    // A PTE already holding a grant mapping cannot take another.
    assert_eq!(fx.map(2, mop(map_va(0), h, 10, 1)).status, GNTST_OKAY);
    assert_eq!(
        fx.map(2, mop(map_va(0), h, 10, 1)).status,
        GNTST_GENERAL_ERROR
    );
    // Unmap: unknown handles, a wrong address, an address without the mapping.
    assert_eq!(fx.unmap(2, map_va(0), 1, 0), GNTST_BAD_HANDLE);
    assert_eq!(fx.unmap(2, map_va(0), u32::MAX, 0), GNTST_BAD_HANDLE);
    assert_eq!(fx.unmap(2, map_va(1), 0, 0), GNTST_GENERAL_ERROR);
    assert_eq!(fx.unmap(2, 0x4000_0000, 0, 0), GNTST_GENERAL_ERROR);
    assert_eq!(fx.unmap(3, map_va(0), 0, 0), GNTST_BAD_HANDLE);
    assert_eq!(fx.unmap(2, map_va(0), 0, 0), GNTST_OKAY);
    assert_eq!(fx.refs(frame), before);
    // An unreadable element is -EFAULT.
    let idx2 = fx.d(2).idx;
    run_as(&mut fx.hv, idx2);
    let out = fx
        .hv
        .grant_table_op(idx2, GNTTABOP_MAP_GRANT_REF, GuestArray::new(0x1000, 1));
    assert_eq!(out, Outcome::Return(Err(Errno::EFAULT)));
}

#[test]
fn maptrack_is_bounded() {
    let mut fx = fx();
    let idx2 = fx.d(2).idx;
    let limits = GrantLimits {
        max_grant_frames: 1,
        max_maptrack_frames: 1,
    };
    fx.hv.domains[idx2].grant = GrantTable::with_limits(limits).unwrap();
    let frame = fx.d(1).data[BUF];
    // One entry per mapping: an entry takes at most 128 mappings of a kind.
    let last = 10 + MAPTRACK_PER_FRAME;
    for r in 10..=last {
        fx.grant(1, r, GTF_PERMIT_ACCESS | GTF_READONLY, 2, frame);
    }
    let ro = GNTMAP_HOST_MAP | GNTMAP_READONLY;
    for i in 0..u64::from(MAPTRACK_PER_FRAME) {
        let out = fx.map(2, mop(map_va(i), ro, 10 + i as u32, 1));
        assert_eq!((out.status, out.handle), (GNTST_OKAY, i as u32));
    }
    let out = fx.map(2, mop(map_va(300), ro, last, 1));
    assert_eq!(out.status, GNTST_NO_SPACE);
    // A freed handle is reused.
    assert_eq!(fx.unmap(2, map_va(7), 7, 0), GNTST_OKAY);
    let out = fx.map(2, mop(map_va(300), ro, last, 1));
    assert_eq!((out.status, out.handle), (GNTST_OKAY, 7));
}

#[test]
fn pin_counts_of_two_mappings() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let before = fx.refs(frame);
    let w = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1));
    let r = fx.map(2, mop(map_va(1), GNTMAP_HOST_MAP | GNTMAP_READONLY, 10, 1));
    assert_eq!((w.status, r.status), (GNTST_OKAY, GNTST_OKAY));
    assert_ne!(w.handle, r.handle);
    assert_eq!(fx.refs(frame).0, before.0 + 2);
    // The granter cannot revoke a mapped entry: both bits stay while mapped writable.
    assert_eq!(fx.unmap(2, map_va(0), w.handle, 0), GNTST_OKAY);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS | GTF_READING);
    assert_eq!(fx.refs(frame), (before.0 + 1, before.1, before.2));
    assert_eq!(fx.unmap(2, map_va(1), r.handle, 0), GNTST_OKAY);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
    assert_eq!(fx.refs(frame), before);
}

#[test]
fn page_table_frame_is_refused_for_a_writable_map() {
    let mut fx = fx();
    let l4 = fx.d(1).l4;
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, l4);
    let out = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1));
    assert_eq!(out.status, GNTST_GENERAL_ERROR);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
    // Read-only is allowed, as in Xen.
    let out = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP | GNTMAP_READONLY, 10, 1));
    assert_eq!(out.status, GNTST_OKAY);
    // And a writably mapped frame cannot become a page table.
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 11, GTF_PERMIT_ACCESS, 2, frame);
    assert_eq!(
        fx.map(2, mop(map_va(1), GNTMAP_HOST_MAP, 11, 1)).status,
        GNTST_OKAY
    );
    let slots = fx.hv.hypervisor_l4_slots;
    let mut pt = PtCtx::new(&fx.hv.mem, &mut fx.hv.frames, DomId(1), &slots);
    assert!(pt.pin(frame, 1).is_err());
}

#[test]
fn page_table_updates_cannot_touch_a_grant_pte() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    assert_eq!(
        fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1)).status,
        GNTST_OKAY
    );
    let pte = fx.pte(2, map_va(0));
    let own = fx.d(2).data[0];
    let idx2 = fx.d(2).idx;
    run_as(&mut fx.hv, idx2);
    // update_va_mapping: neither zapping, nor rewriting, nor the same value.
    for val in [0, own.maddr() | 7, pte, pte & !Pte::RW.bits()] {
        assert_eq!(
            fx.hv.update_va_mapping(idx2, map_va(0), val, 0),
            Err(Errno::EINVAL)
        );
    }
    // mmu_update's entry write.
    let l4 = fx.d(2).l4;
    let slots = fx.hv.hypervisor_l4_slots;
    let mut pt = PtCtx::new(&fx.hv.mem, &mut fx.hv.frames, DomId(2), &slots);
    let at = pt.l1_entry_maddr(l4, map_va(0)).unwrap();
    assert_eq!(pt.mod_entry(at, 0, false), Err(Stop::Fail(Errno::EINVAL)));
    // Nor can a guest write the grant marker anywhere, to copy the mapping elsewhere.
    let at1 = pt.l1_entry_maddr(l4, map_va(1)).unwrap();
    assert_eq!(
        pt.mod_entry(at1, pte, false),
        Err(Stop::Fail(Errno::EINVAL))
    );
    assert_eq!(
        pt.mod_entry(at1, pte & !Pte::GNTTAB.bits(), false),
        Err(Stop::Fail(Errno::EINVAL)),
        "a foreign frame without the marker"
    );
    assert_eq!(fx.pte(2, map_va(0)), pte);
    assert_eq!(fx.unmap(2, map_va(0), 0, 0), GNTST_OKAY);
}

#[test]
fn mapper_death_releases_its_mappings() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let before = fx.refs(frame);
    assert_eq!(
        fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1)).status,
        GNTST_OKAY
    );
    assert_eq!(
        fx.map(2, mop(map_va(1), GNTMAP_HOST_MAP | GNTMAP_READONLY, 10, 1))
            .status,
        GNTST_OKAY
    );
    let idx2 = fx.d(2).idx;
    fx.hv
        .end_domain(idx2, DomainState::Crashed, format_args!("test"));
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
    assert_eq!(fx.refs(frame), before);
    assert!(fx.hv.domains[idx2].grant.maps().is_empty());
    assert_eq!(
        fx.hv.frames.owner(fx.d(2).l4),
        None,
        "the mapper's frames freed"
    );
}

#[test]
fn granter_death_keeps_a_mapped_frame_until_unmapped() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    let other = fx.d(1).data[BUF + 1];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let out = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1));
    assert_eq!(out.status, GNTST_OKAY);
    let idx1 = fx.d(1).idx;
    fx.hv
        .end_domain(idx1, DomainState::Crashed, format_args!("test"));
    assert_eq!(
        fx.hv.frames.owner(frame),
        Some(DomId(1)),
        "kept while mapped"
    );
    assert_eq!(fx.hv.frames.owner(other), None);
    let free = fx.hv.frames.free_count();
    // Still mapped; then unmapped and freed.
    assert_eq!(fx.pte(2, map_va(0)) & ADDR_MASK, frame.maddr());
    assert_eq!(fx.unmap(2, map_va(0), out.handle, 0), GNTST_OKAY);
    assert_eq!(fx.hv.frames.owner(frame), None);
    assert_eq!(fx.hv.frames.free_count(), free + 1);
}

#[test]
fn end_of_run_accounting_counts_a_dead_granters_frame_until_unmapped() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let out = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1));
    assert_eq!(out.status, GNTST_OKAY);
    let idx1 = fx.d(1).idx;
    fx.hv
        .end_domain(idx1, DomainState::Crashed, format_args!("test"));
    // Reported now, the kept frame counts (d2 still runs: its frames do not).
    fx.hv.platform.console.clear();
    let _ = fx.hv.final_report();
    assert!(
        fx.hv
            .platform
            .console
            .contains("(hv) frames: 1 still owned by ended domains\n"),
        "{}",
        fx.hv.platform.console
    );
    // Unmapped, then the mapper ends too: nothing is left.
    assert_eq!(fx.unmap(2, map_va(0), out.handle, 0), GNTST_OKAY);
    let idx2 = fx.d(2).idx;
    fx.hv
        .end_domain(idx2, DomainState::Crashed, format_args!("test"));
    fx.hv.platform.console.clear();
    let _ = fx.hv.final_report();
    assert!(
        fx.hv
            .platform
            .console
            .contains("(hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended:"),
        "{}",
        fx.hv.platform.console
    );
}

#[test]
fn a_mapper_ending_frees_the_dead_granters_frame() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let out = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1));
    assert_eq!(out.status, GNTST_OKAY);
    let (idx1, idx2) = (fx.d(1).idx, fx.d(2).idx);
    fx.hv
        .end_domain(idx1, DomainState::Crashed, format_args!("test"));
    // The mapper ends without unmapping: its maps go, and with them the kept frame.
    fx.hv
        .end_domain(idx2, DomainState::Crashed, format_args!("test"));
    assert_eq!(fx.hv.frames.owner(frame), None);
    fx.hv.platform.console.clear();
    let _ = fx.hv.final_report();
    assert!(
        fx.hv.platform.console.contains(
            "(hv) frames: 0 still owned by ended domains\n(hv) grant maps: 1 still held \
                 when their domains ended\n"
        ),
        "{}",
        fx.hv.platform.console
    );
}

#[test]
fn copy_keeps_the_bits_a_mapping_holds() {
    use xen_pv_abi::grant_table::{GNTCOPY_SOURCE_GREF, GNTTABOP_COPY, GnttabCopy, GnttabCopyPtr};
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let ro = GNTMAP_HOST_MAP | GNTMAP_READONLY;
    assert_eq!(fx.map(2, mop(map_va(0), ro, 10, 1)).status, GNTST_OKAY);
    let op = GnttabCopy {
        source: GnttabCopyPtr {
            u: 10,
            domid: DomId(1),
            offset: 0,
            _pad: 0,
        },
        dest: GnttabCopyPtr {
            u: fx.d(2).data[BUF].0,
            domid: DomId::SELF,
            offset: 0,
            _pad: 0,
        },
        len: 8,
        flags: GNTCOPY_SOURCE_GREF,
        ..Default::default()
    };
    assert_eq!(
        fx.call(2, GNTTABOP_COPY, op.as_bytes(), 1),
        Outcome::Return(Ok(0))
    );
    assert_eq!(get(&fx.hv, fx.d(2), OPS_OFF + 36, 2), [0, 0]);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS | GTF_READING);
}

#[test]
fn long_batch_continues() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS | GTF_READONLY, 2, frame);
    let n = crate::grant::MAP_BATCH + 3;
    let ops: Vec<u8> = (0..n)
        .flat_map(|i| {
            mop(map_va(i), GNTMAP_HOST_MAP | GNTMAP_READONLY, 10, 1)
                .as_bytes()
                .to_vec()
        })
        .collect();
    let out = fx.call(2, GNTTABOP_MAP_GRANT_REF, &ops, n);
    let Outcome::Continue { args, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(args[0], u64::from(GNTTABOP_MAP_GRANT_REF));
    assert_eq!(args[2], 3);
    let idx2 = fx.d(2).idx;
    let rest = fx.hv.grant_table_op(
        idx2,
        GNTTABOP_MAP_GRANT_REF,
        GuestArray::new(args[1], args[2]),
    );
    assert_eq!(rest, Outcome::Return(Ok(0)));
    for i in 0..n as usize {
        let b = get(&fx.hv, fx.d(2), OPS_OFF + i * 32 + 18, 6);
        assert_eq!(i16::from_le_bytes([b[0], b[1]]), GNTST_OKAY);
        assert_eq!(u32::from_le_bytes(b[2..6].try_into().unwrap()), i as u32);
    }
}

#[test]
fn an_entry_takes_at_most_128_mappings_of_a_kind() {
    // Xen keeps 8-bit pin counters per entry and refuses a map once one reached 128.
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let ro = GNTMAP_HOST_MAP | GNTMAP_READONLY;
    for i in 0..128 {
        assert_eq!(fx.map(2, mop(map_va(i), ro, 10, 1)).status, GNTST_OKAY);
    }
    let out = fx.map(2, mop(map_va(200), ro, 10, 1));
    assert_eq!(out.status, GNTST_GENERAL_ERROR);
    // While one counter is full, no map of the entry goes through, writable ones too;
    // one unmap makes room again.
    let w = fx.map(2, mop(map_va(201), GNTMAP_HOST_MAP, 10, 1));
    assert_eq!(w.status, GNTST_GENERAL_ERROR);
    assert_eq!(fx.unmap(2, map_va(5), 5, 0), GNTST_OKAY);
    assert_eq!(fx.map(2, mop(map_va(200), ro, 10, 1)).status, GNTST_OKAY);
}

/// A self-grant mapped and read through keeps nothing in the translation cache after
/// the unmap (the unmap forgets only the mapped frame's walks), and a map into an empty
/// slot keeps the walks already cached.
#[test]
fn self_grant_unmap_forgets_cached_walks_through_it() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 11, GTF_PERMIT_ACCESS, 1, frame);
    let idx = fx.d(1).idx;
    for round in 0..3u8 {
        run_as(&mut fx.hv, idx);
        // Not mapped yet: a fault, nothing cached.
        assert_eq!(fx.hv.read_guest::<u64>(idx, map_va(0)), Err(Errno::EFAULT));
        let out = fx.map(1, mop(map_va(0), GNTMAP_HOST_MAP, 11, 1));
        assert_eq!(out.status, GNTST_OKAY);
        // Our own frame, so reachable (and cached) through the grant mapping.
        fx.hv.mem.write(frame.maddr() + 8, &[round; 8]).unwrap();
        run_as(&mut fx.hv, idx);
        assert_eq!(
            fx.hv.read_guest::<u64>(idx, map_va(0) + 8),
            Ok(u64::from_le_bytes([round; 8]))
        );
        assert_eq!(fx.unmap(1, map_va(0), out.handle, 0), GNTST_OKAY);
        run_as(&mut fx.hv, idx);
        assert_eq!(
            fx.hv.read_guest::<u64>(idx, map_va(0) + 8),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            fx.hv.write_elem(idx, map_va(0) + 8, &[1, 2]),
            Err(Errno::EFAULT)
        );
    }
}

/// `write_elem` (the inlined write-back of grant op results) gives what `write_guest`
/// gives on random addresses: same result, same bytes written.
#[test]
fn write_elem_equals_write_guest() {
    let mut fx = fx();
    let idx = fx.d(1).idx;
    run_as(&mut fx.hv, idx);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let span = (DATA_PAGES as u64 + 2) * PAGE_SIZE as u64;
    for _ in 0..4000 {
        let va = match next() % 6 {
            0 => xen_pv_abi::layout::HYPERVISOR_VIRT_START + next() % 4096,
            1 => 0x0000_8000_0000_0000 - next() % 16,
            2 => DATA_VA + (next() % (DATA_PAGES as u64)) * PAGE_SIZE as u64 + 4096 - next() % 24,
            _ => DATA_VA - PAGE_SIZE as u64 + next() % span,
        };
        let len = [1usize, 2, 8, 16, 24, 40, 70][next() as usize % 7];
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let before: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Reference: write_guest after the same initial bytes.
        let _ = fx.hv.write_guest(idx, va, &before);
        let want = fx.hv.write_guest(idx, va, &data);
        let mut want_back = vec![0u8; len];
        let want_read = crate::mmu::guest::copy_from_guest(
            &fx.hv.mem,
            &fx.hv.frames,
            fx.hv.current_space(idx),
            va,
            &mut want_back,
        );
        let _ = fx.hv.write_guest(idx, va, &before);
        let got = fx.hv.write_elem(idx, va, &data);
        let mut got_back = vec![0u8; len];
        let got_read = crate::mmu::guest::copy_from_guest(
            &fx.hv.mem,
            &fx.hv.frames,
            fx.hv.current_space(idx),
            va,
            &mut got_back,
        );
        assert_eq!(got, want, "va={va:#x} len={len}");
        assert_eq!(got_read, want_read);
        assert_eq!(got_back, want_back, "va={va:#x} len={len}");
    }
}

/// `unmap_and_replace` of a self-grant: the translation cache forgets the walks through
/// the grant PTE and through the stolen entry of `new_addr`.
#[test]
fn replace_forgets_cached_walks_of_both_entries() {
    use xen_pv_abi::grant_table::{GNTTABOP_UNMAP_AND_REPLACE, GnttabUnmapAndReplace};
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 11, GTF_PERMIT_ACCESS, 1, frame);
    let idx = fx.d(1).idx;
    let out = fx.map(1, mop(map_va(0), GNTMAP_HOST_MAP, 11, 1));
    assert_eq!(out.status, GNTST_OKAY);
    let new_addr = DATA_VA + 2 * PAGE_SIZE as u64;
    let stolen = fx.d(1).data[2];
    fx.hv.mem.write(frame.maddr(), &[7; 8]).unwrap();
    fx.hv.mem.write(stolen.maddr(), &[9; 8]).unwrap();
    run_as(&mut fx.hv, idx);
    // Both cached.
    assert_eq!(
        fx.hv.read_guest::<u64>(idx, map_va(0)),
        Ok(u64::from_le_bytes([7; 8]))
    );
    assert_eq!(
        fx.hv.read_guest::<u64>(idx, new_addr),
        Ok(u64::from_le_bytes([9; 8]))
    );
    let op = GnttabUnmapAndReplace {
        host_addr: map_va(0),
        new_addr,
        handle: out.handle,
        status: 0x55,
        _pad: 0,
    };
    let r = fx.call(1, GNTTABOP_UNMAP_AND_REPLACE, op.as_bytes(), 1);
    assert_eq!(r, Outcome::Return(Ok(0)));
    let b = get(&fx.hv, fx.d(1), OPS_OFF + 20, 2);
    assert_eq!(i16::from_le_bytes([b[0], b[1]]), GNTST_OKAY);
    run_as(&mut fx.hv, idx);
    assert_eq!(fx.hv.read_guest::<u64>(idx, new_addr), Err(Errno::EFAULT));
    assert_eq!(
        fx.hv.read_guest::<u64>(idx, map_va(0)),
        Ok(u64::from_le_bytes([9; 8]))
    );
}

/// Handles come from a free set, not a scan of the maptrack: a map takes the lowest free
/// handle, a failed map takes none, an unmap frees its handle (checked against a model
/// over a random sequence).
#[test]
fn handles_are_the_lowest_free_slot() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS | GTF_READONLY, 2, frame);
    let dev = GNTMAP_DEVICE_MAP | GNTMAP_READONLY;
    let mut live: Vec<u32> = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        match seed % 4 {
            0 | 1 if live.len() < 40 => {
                let want = (0u32..).find(|h| !live.contains(h)).unwrap();
                let out = fx.map(2, mop(0, dev, 10, 1));
                assert_eq!((out.status, out.handle), (GNTST_OKAY, want));
                live.push(want);
            }
            2 => {
                // Refused after the handle was chosen: it stays free.
                let out = fx.map(2, mop(0, dev, 100_000, 1));
                assert_eq!(out.status, GNTST_BAD_GNTREF);
            }
            _ if !live.is_empty() => {
                let h = live.swap_remove((seed >> 8) as usize % live.len());
                assert_eq!(fx.unmap(2, 0, h, frame.maddr()), GNTST_OKAY);
            }
            _ => {}
        }
    }
    let idx2 = fx.d(2).idx;
    let maps = fx.hv.domains[idx2].grant.maps();
    let held = maps.iter().filter(|m| m.is_some()).count();
    assert_eq!(held, live.len());
}

/// A mapper ending with several mappings of a dead granter's frames frees each frame
/// no one else maps, and keeps the one a third domain still maps until it unmaps it.
#[test]
fn a_mapper_ending_frees_only_unshared_orphans() {
    let mut fx = fx();
    let (shared, own) = (fx.d(1).data[BUF], fx.d(1).data[BUF + 1]);
    let frame_of_1 = fx.d(1).data[0];
    fx.grant(1, 10, GTF_PERMIT_ACCESS | GTF_READONLY, 2, shared);
    fx.grant(1, 11, GTF_PERMIT_ACCESS | GTF_READONLY, 2, own);
    fx.grant(1, 12, GTF_PERMIT_ACCESS | GTF_READONLY, 3, shared);
    let dev = GNTMAP_DEVICE_MAP | GNTMAP_READONLY;
    for (r, n) in [(10, 3), (11, 2)] {
        for _ in 0..n {
            assert_eq!(fx.map(2, mop(0, dev, r, 1)).status, GNTST_OKAY);
        }
    }
    let out = fx.map(3, mop(0, dev, 12, 1));
    assert_eq!(out.status, GNTST_OKAY);
    let (idx1, idx2) = (fx.d(1).idx, fx.d(2).idx);
    fx.hv
        .end_domain(idx1, DomainState::Crashed, format_args!("test"));
    assert_eq!(
        fx.hv.frames.owner(frame_of_1),
        None,
        "an unmapped frame goes"
    );
    assert_eq!(fx.hv.frames.owner(own), Some(DomId(1)));
    fx.hv
        .end_domain(idx2, DomainState::Crashed, format_args!("test"));
    assert_eq!(fx.hv.frames.owner(own), None);
    assert_eq!(
        fx.hv.frames.owner(shared),
        Some(DomId(1)),
        "domain 3 maps it"
    );
    assert_eq!(fx.unmap(3, 0, out.handle, shared.maddr()), GNTST_OKAY);
    assert_eq!(fx.hv.frames.owner(shared), None);
}

#[test]
fn end_of_run_counts_each_map_a_domain_held_when_it_ended() {
    let mut fx = fx();
    let a = fx.d(1).data[BUF];
    let b = fx.d(1).data[BUF + 1];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, a);
    fx.grant(1, 11, GTF_PERMIT_ACCESS, 2, b);
    let first = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1));
    let second = fx.map(2, mop(map_va(1), GNTMAP_HOST_MAP, 11, 1));
    assert_eq!((first.status, second.status), (GNTST_OKAY, GNTST_OKAY));
    assert_eq!(fx.hv.domains[fx.d(2).idx].grant.live_maps(), 2);
    // One unmapped: only the other one counts when d2 ends.
    assert_eq!(fx.unmap(2, map_va(0), first.handle, 0), GNTST_OKAY);
    assert_eq!(fx.hv.domains[fx.d(2).idx].grant.live_maps(), 1);
    let (idx1, idx2) = (fx.d(1).idx, fx.d(2).idx);
    fx.hv
        .end_domain(idx2, DomainState::Crashed, format_args!("test"));
    fx.hv
        .end_domain(idx1, DomainState::Crashed, format_args!("test"));
    assert_eq!(fx.hv.domains[idx2].grant.live_maps(), 0, "released");
    fx.hv.platform.console.clear();
    let _ = fx.hv.final_report();
    let console = &fx.hv.platform.console;
    assert!(
        console.contains(
            "(hv) frames: 0 still owned by ended domains\n(hv) grant maps: 1 still held when \
             their domains ended\n"
        ),
        "{console}"
    );
}
