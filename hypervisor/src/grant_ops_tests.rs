//! Host tests of the grant-table operations beyond v1 copy/map: version 2 (status
//! frames, sub-page and transitive grants, switching back), per-domain limits,
//! `GNTMAP_contains_pte`, device-only maps, `unmap_and_replace`, `transfer`,
//! `swap_grant_ref`, `cache_flush`, `dump_table`, privileged `get_version`,
//! `XENMEM_add_to_physmap`, and a random hostile sequence checking the invariants.
//! A child module of `hv_tests.rs` (its domains and helpers).

use super::grant_support::{Fx, frame as frame_copy, gref, map_va, mop};
use super::*;
use crate::grant::{GrantLimits, GrantTable, MAX_GRANT_FRAMES, MAX_MAPTRACK_FRAMES};
use crate::hypercall::handle::{GuestArray, GuestHandle, Outcome};
use crate::mmu::PageType;
use crate::mmu::pagetable::{ADDR_MASK, Pte, is_grant_entry};
use crate::testutil::Rng;
use std::vec::Vec;
use xen_pv_abi::Errno;
use xen_pv_abi::grant_table::*;
use xen_pv_abi::mmu::{XENMEM_ADD_TO_PHYSMAP, XENMEM_CURRENT_RESERVATION};
use zerocopy::{FromBytes, IntoBytes};

/// Page 5 of each domain's data: the granted frame; page 6 a second buffer.
const BUF: usize = 5;
const BUF2: usize = 6;

/// Domains 1..=3 (domUs), plus dom0 (id 0) when `with_dom0`, page tables pinned, one
/// grant frame each.
fn fx_with(with_dom0: bool) -> Fx {
    Fx::new(with_dom0, true)
}

fn fx() -> Fx {
    fx_with(false)
}

impl Fx {
    fn set_version(&mut self, id: u16, v: u32) -> (Result<u64, Errno>, u32) {
        let out = self.call(id, GNTTABOP_SET_VERSION, &v.to_le_bytes(), 1);
        let Outcome::Return(r) = out else {
            panic!("{out:?}")
        };
        let b = self.back(id, 0, 4);
        (r, u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn grant_v2(&self, id: u16, r: u32, e: GrantEntryV2) {
        let at = self.table(id).entry_maddr(r).unwrap();
        self.hv.mem.write(at, e.as_bytes()).unwrap();
    }
    /// The status bits of entry `r` (flags in v1, status word in v2).
    fn status_bits(&self, id: u16, r: u32) -> u16 {
        let at = self.table(id).status_maddr(r).unwrap();
        let mut b = [0u8; 2];
        self.hv.mem.read(at, &mut b).unwrap();
        u16::from_le_bytes(b) & (GTF_READING | GTF_WRITING)
    }
    fn replace(&mut self, id: u16, host_addr: u64, new_addr: u64, handle: u32) -> i16 {
        let op = GnttabUnmapAndReplace {
            host_addr,
            new_addr,
            handle,
            status: 0x55,
            _pad: 0,
        };
        assert_eq!(
            self.call(id, GNTTABOP_UNMAP_AND_REPLACE, op.as_bytes(), 1),
            Outcome::Return(Ok(0))
        );
        self.status_at(id, 20)
    }
    fn one_op(&mut self, id: u16, cmd: u32, bytes: &[u8]) -> Result<u64, Errno> {
        match self.call(id, cmd, bytes, 1) {
            Outcome::Return(r) => r,
            other => panic!("{other:?}"),
        }
    }
}

// ---- versions ----------------------------------------------------------------------------

#[test]
fn version_2_has_status_frames_owned_and_mappable() {
    let mut fx = fx();
    assert_eq!(fx.table(1).status_frames().len(), 0);
    assert_eq!(fx.set_version(1, 2), (Ok(0), 2));
    // One grant frame of 256 entries needs one status frame (2048 words).
    let st = fx.table(1).status_frames().to_vec();
    assert_eq!(st.len(), 1);
    assert_eq!(fx.hv.frames.owner(st[0]), Some(DomId(1)));
    // The hypervisor holds it writable: the guest can never make it a page table.
    assert_eq!(fx.refs(st[0]).1, PageType::Writable);
    // get_status_frames returns it.
    let op = GnttabGetStatusFrames {
        nr_frames: 1,
        dom: DomId::SELF,
        status: 0x55,
        frame_list: DATA_VA + 0x200,
    };
    assert_eq!(
        fx.one_op(1, GNTTABOP_GET_STATUS_FRAMES, op.as_bytes()),
        Ok(0)
    );
    assert_eq!(fx.status_at(1, 6), GNTST_OKAY);
    assert_eq!(get(&fx.hv, fx.d(1), 0x200, 8), st[0].0.to_le_bytes());
    // More than there are / count != 1 / a bad list / another domain.
    let more = GnttabGetStatusFrames { nr_frames: 2, ..op };
    fx.one_op(1, GNTTABOP_GET_STATUS_FRAMES, more.as_bytes())
        .unwrap();
    assert_eq!(fx.status_at(1, 6), GNTST_GENERAL_ERROR);
    assert_eq!(
        fx.call(1, GNTTABOP_GET_STATUS_FRAMES, op.as_bytes(), 2),
        Outcome::Return(Err(Errno::EINVAL))
    );
    let bad = GnttabGetStatusFrames {
        frame_list: HV_ADDRESS,
        ..op
    };
    assert_eq!(
        fx.one_op(1, GNTTABOP_GET_STATUS_FRAMES, bad.as_bytes()),
        Err(Errno::EFAULT)
    );
    let other = GnttabGetStatusFrames {
        dom: DomId(2),
        ..op
    };
    fx.one_op(1, GNTTABOP_GET_STATUS_FRAMES, other.as_bytes())
        .unwrap();
    assert_eq!(fx.status_at(1, 6), GNTST_PERMISSION_DENIED);
    // v1 has none: 0 frames is fine, 1 is not.
    fx.one_op(2, GNTTABOP_GET_STATUS_FRAMES, more.as_bytes())
        .unwrap();
    assert_eq!(fx.status_at(2, 6), GNTST_GENERAL_ERROR);
    // Growing the v2 table grows the status frames with it (9 frames: 2304 entries).
    assert_eq!(fx.setup(1, DomId::SELF, 9, DATA_VA + 0x300), GNTST_OKAY);
    assert_eq!(fx.table(1).status_frames().len(), 2);
    assert_eq!(fx.table(1).nr_entries(), 9 * 256);
}

#[test]
fn switching_versions_keeps_reserved_entries_and_refuses_while_in_use() {
    let mut fx = fx();
    let ring = fx.hv.domains[fx.idx(1)].console_ring.unwrap().0;
    // The seeded console entry, mapped by dom2 (reserved entries may stay in use).
    fx.grant(1, 0, GTF_PERMIT_ACCESS, 2, ring);
    let ro = GNTMAP_HOST_MAP | GNTMAP_READONLY;
    let m = fx.map(2, mop(map_va(0), ro, 0, 1));
    assert_eq!(m.status, GNTST_OKAY);
    fx.grant(1, 9, GTF_PERMIT_ACCESS, 2, fx.d(1).data[BUF]);
    assert_eq!(fx.set_version(1, 2), (Ok(0), 2));
    // Entry 0 carried over: header in the entry, status bits in the status frame.
    let e = {
        let mut e = GrantEntryV2::default();
        let at = fx.table(1).entry_maddr(0).unwrap();
        fx.hv.mem.read(at, e.as_mut_bytes()).unwrap();
        e
    };
    assert_eq!(
        (e.flags, e.domid, e.word2),
        (GTF_PERMIT_ACCESS, DomId(2), ring.0)
    );
    assert_eq!(fx.status_bits(1, 0), GTF_READING);
    // Entry 9 (not reserved) was cleared.
    assert_eq!(fx.entry_flags(1, 9), 0);
    // A pin beyond the reserved entries blocks switching.
    let frame = fx.d(1).data[BUF];
    fx.grant_v2(
        1,
        9,
        GrantEntryV2::full_page(GTF_PERMIT_ACCESS, DomId(2), frame.0),
    );
    let m9 = fx.map(2, mop(map_va(1), GNTMAP_HOST_MAP, 9, 1));
    assert_eq!(m9.status, GNTST_OKAY);
    assert_eq!(fx.status_bits(1, 9), GTF_READING | GTF_WRITING);
    assert_eq!(
        fx.entry_flags(1, 9),
        GTF_PERMIT_ACCESS,
        "v2 keeps status out of flags"
    );
    assert_eq!(fx.set_version(1, 1), (Err(Errno::EBUSY), 2));
    assert_eq!(fx.unmap(2, map_va(1), m9.handle, 0), GNTST_OKAY);
    assert_eq!(fx.status_bits(1, 9), 0);
    // A mapped status frame blocks going back to v1 (-EBUSY, nothing changed).
    let st = fx.table(1).status_frames()[0];
    assert!(fx.hv.frames.get_ref(st));
    assert_eq!(fx.set_version(1, 1), (Err(Errno::EBUSY), 2));
    fx.hv.frames.put_ref(st);
    // A transitive reserved entry cannot be written as v1: -ERANGE.
    fx.grant_v2(
        1,
        3,
        GrantEntryV2::transitive(GTF_TRANSITIVE, DomId(2), DomId(3), 1),
    );
    assert_eq!(fx.set_version(1, 1), (Err(Errno::ERANGE), 2));
    fx.grant_v2(1, 3, GrantEntryV2::default());
    // Back to v1: entry 0 with its status bit folded into the flags; status frame freed.
    assert_eq!(fx.set_version(1, 1), (Ok(0), 1));
    assert_eq!(fx.entry_flags(1, 0), GTF_PERMIT_ACCESS | GTF_READING);
    assert!(fx.table(1).status_frames().is_empty());
    assert_eq!(fx.hv.frames.owner(st), None);
    assert_eq!(fx.unmap(2, map_va(0), m.handle, 0), GNTST_OKAY);
    assert_eq!(fx.entry_flags(1, 0), GTF_PERMIT_ACCESS);
}

#[test]
fn limits_are_per_domain_and_reported() {
    let mut fx = fx();
    assert!(
        GrantTable::with_limits(GrantLimits {
            max_grant_frames: 0,
            max_maptrack_frames: 1
        })
        .is_err()
    );
    assert!(
        GrantTable::with_limits(GrantLimits {
            max_grant_frames: MAX_GRANT_FRAMES + 1,
            max_maptrack_frames: 1
        })
        .is_err()
    );
    assert!(
        GrantTable::with_limits(GrantLimits {
            max_grant_frames: 1,
            max_maptrack_frames: MAX_MAPTRACK_FRAMES + 1
        })
        .is_err()
    );
    let idx = fx.idx(3);
    fx.hv.domains[idx].grant = GrantTable::with_limits(GrantLimits {
        max_grant_frames: 2,
        max_maptrack_frames: 0,
    })
    .unwrap();
    let q = GnttabQuerySize {
        dom: DomId::SELF,
        ..Default::default()
    };
    fx.one_op(3, GNTTABOP_QUERY_SIZE, q.as_bytes()).unwrap();
    let back = GnttabQuerySize::read_from_bytes(&fx.back(3, 0, 16)).unwrap();
    assert_eq!((back.nr_frames, back.max_nr_frames, back.status), (0, 2, 0));
    assert_eq!(
        fx.setup(3, DomId::SELF, 3, DATA_VA + 0x100),
        GNTST_GENERAL_ERROR
    );
    assert_eq!(fx.setup(3, DomId::SELF, 2, DATA_VA + 0x100), GNTST_OKAY);
    // Default domains: Xen's 64.
    fx.one_op(1, GNTTABOP_QUERY_SIZE, q.as_bytes()).unwrap();
    let back = GnttabQuerySize::read_from_bytes(&fx.back(1, 0, 16)).unwrap();
    assert_eq!((back.nr_frames, back.max_nr_frames), (1, 64));
    // No maptrack frames: no mapping at all.
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 3, fx.d(1).data[BUF]);
    assert_eq!(
        fx.map(3, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1)).status,
        GNTST_NO_SPACE
    );
    // An unwritable frame list is -EFAULT before anything else.
    let op = GnttabSetupTable {
        dom: DomId(99),
        nr_frames: 1,
        frame_list: HV_ADDRESS,
        ..Default::default()
    };
    assert_eq!(
        fx.one_op(1, GNTTABOP_SETUP_TABLE, op.as_bytes()),
        Err(Errno::EFAULT)
    );
}

#[test]
fn privileged_callers_see_other_tables() {
    let mut fx = fx_with(true);
    fx.set_version(2, 2).0.unwrap();
    let gv = GnttabGetVersion {
        dom: DomId(2),
        ..Default::default()
    };
    assert_eq!(
        fx.one_op(1, GNTTABOP_GET_VERSION, gv.as_bytes()),
        Err(Errno::EPERM)
    );
    assert_eq!(fx.one_op(0, GNTTABOP_GET_VERSION, gv.as_bytes()), Ok(0));
    assert_eq!(fx.back(0, 4, 4), 2u32.to_le_bytes());
    let unknown = GnttabGetVersion {
        dom: DomId(77),
        ..Default::default()
    };
    assert_eq!(
        fx.one_op(0, GNTTABOP_GET_VERSION, unknown.as_bytes()),
        Err(Errno::ESRCH)
    );
    let q = GnttabQuerySize {
        dom: DomId(2),
        ..Default::default()
    };
    fx.one_op(0, GNTTABOP_QUERY_SIZE, q.as_bytes()).unwrap();
    let back = GnttabQuerySize::read_from_bytes(&fx.back(0, 0, 16)).unwrap();
    assert_eq!((back.nr_frames, back.status), (1, GNTST_OKAY));
    fx.one_op(1, GNTTABOP_QUERY_SIZE, q.as_bytes()).unwrap();
    assert_eq!(fx.status_at(1, 12), GNTST_PERMISSION_DENIED);
    // dom0 grows dom3's table.
    assert_eq!(fx.setup(0, DomId(3), 2, DATA_VA + 0x100), GNTST_OKAY);
    assert_eq!(fx.table(3).frames().len(), 2);
    // dump_table is not a command of Xen 4.17.
    let dt = GnttabDumpTable {
        dom: DomId::SELF,
        status: 0,
    };
    assert_eq!(
        fx.one_op(1, GNTTABOP_DUMP_TABLE, dt.as_bytes()),
        Err(Errno::ENOSYS)
    );
    // Continuation bits on anything but cache_flush are -EINVAL.
    assert_eq!(
        fx.one_op(1, GNTTABOP_QUERY_SIZE | 1 << 12, q.as_bytes()),
        Err(Errno::EINVAL)
    );
}

// ---- v2 entries: maps and copies ---------------------------------------------------------

#[test]
fn v2_maps_full_pages_only_and_status_lives_in_status_frames() {
    let mut fx = fx();
    fx.set_version(1, 2).0.unwrap();
    let frame = fx.d(1).data[BUF];
    fx.grant_v2(
        1,
        10,
        GrantEntryV2::full_page(GTF_PERMIT_ACCESS, DomId(2), frame.0),
    );
    fx.grant_v2(
        1,
        11,
        GrantEntryV2::sub_page(GTF_PERMIT_ACCESS | GTF_SUB_PAGE, DomId(2), frame.0, 0, 64),
    );
    fx.grant_v2(
        1,
        12,
        GrantEntryV2::transitive(GTF_TRANSITIVE, DomId(2), DomId(3), 10),
    );
    let h = GNTMAP_HOST_MAP;
    assert_eq!(
        fx.map(2, mop(map_va(0), h, 11, 1)).status,
        GNTST_GENERAL_ERROR
    );
    assert_eq!(
        fx.map(2, mop(map_va(0), h, 12, 1)).status,
        GNTST_GENERAL_ERROR
    );
    assert_eq!(
        fx.map(2, mop(map_va(0), h, 256, 1)).status,
        GNTST_BAD_GNTREF
    );
    assert_eq!(fx.status_bits(1, 11), 0);
    assert_eq!(fx.status_bits(1, 12), 0);
    let m = fx.map(2, mop(map_va(0), h, 10, 1));
    assert_eq!(m.status, GNTST_OKAY);
    assert_eq!(fx.status_bits(1, 10), GTF_READING | GTF_WRITING);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
    assert_eq!(entry_mfn_of(fx.pte(2, map_va(0))), frame);
    assert_eq!(fx.unmap(2, map_va(0), m.handle, 0), GNTST_OKAY);
    assert_eq!(fx.status_bits(1, 10), 0);
}

fn entry_mfn_of(pte: u64) -> Mfn {
    Mfn::containing(pte & ADDR_MASK)
}

#[test]
fn v2_sub_page_copies_stay_in_range() {
    let mut fx = fx();
    fx.set_version(1, 2).0.unwrap();
    let frame = fx.d(1).data[BUF];
    fx.pattern(1, BUF, 0x5a);
    fx.grant_v2(
        1,
        20,
        GrantEntryV2::sub_page(
            GTF_PERMIT_ACCESS | GTF_SUB_PAGE | GTF_READONLY,
            DomId(2),
            frame.0,
            100,
            50,
        ),
    );
    let dst = fx.d(2).data[BUF];
    let op = |off: u16, len: u16| GnttabCopy {
        source: gref(1, 20, off),
        dest: frame_copy(dst, off),
        len,
        flags: GNTCOPY_SOURCE_GREF,
        status: 0x55,
        _pad: 0,
    };
    assert_eq!(fx.copy1(2, op(100, 50)), GNTST_OKAY);
    assert_eq!(fx.page(2, BUF)[100..150], fx.page(1, BUF)[100..150]);
    assert_eq!(fx.copy1(2, op(99, 10)), GNTST_GENERAL_ERROR);
    assert_eq!(fx.copy1(2, op(140, 11)), GNTST_GENERAL_ERROR);
    assert_eq!(fx.copy1(2, op(4000, 200)), GNTST_BAD_COPY_ARG);
    assert_eq!(fx.status_bits(1, 20), 0);
    // Read-only: it cannot be a destination.
    let w = GnttabCopy {
        source: frame_copy(dst, 100),
        dest: gref(1, 20, 100),
        len: 8,
        flags: GNTCOPY_DEST_GREF,
        status: 0,
        _pad: 0,
    };
    assert_eq!(fx.copy1(2, w), GNTST_GENERAL_ERROR);
    assert_eq!(fx.status_bits(1, 20), 0);
}

#[test]
fn v2_transitive_copies_follow_one_level() {
    let mut fx = fx();
    for id in 1..=3 {
        fx.set_version(id, 2).0.unwrap();
    }
    // d1 grants its frame to d2 (ref 30); d2 grants transitively to d3 (ref 40).
    let frame = fx.d(1).data[BUF];
    fx.pattern(1, BUF, 0x33);
    fx.grant_v2(
        1,
        30,
        GrantEntryV2::full_page(GTF_PERMIT_ACCESS, DomId(2), frame.0),
    );
    fx.grant_v2(
        2,
        40,
        GrantEntryV2::transitive(GTF_TRANSITIVE, DomId(3), DomId(1), 30),
    );
    let dst = fx.d(3).data[BUF];
    let op = GnttabCopy {
        source: gref(2, 40, 0),
        dest: frame_copy(dst, 0),
        len: PAGE_SIZE as u16,
        flags: GNTCOPY_SOURCE_GREF,
        status: 0,
        _pad: 0,
    };
    assert_eq!(fx.copy1(3, op), GNTST_OKAY);
    assert_eq!(fx.page(3, BUF), fx.page(1, BUF));
    assert_eq!((fx.status_bits(1, 30), fx.status_bits(2, 40)), (0, 0));
    // Writing through it: the final entry must allow writing.
    fx.pattern(3, BUF2, 0x77);
    let w = GnttabCopy {
        source: frame_copy(fx.d(3).data[BUF2], 0),
        dest: gref(2, 40, 0),
        len: 16,
        flags: GNTCOPY_DEST_GREF,
        status: 0,
        _pad: 0,
    };
    assert_eq!(fx.copy1(3, w), GNTST_OKAY);
    assert_eq!(fx.page(1, BUF)[..16], fx.page(3, BUF2)[..16]);
    fx.grant_v2(
        1,
        30,
        GrantEntryV2::full_page(GTF_PERMIT_ACCESS | GTF_READONLY, DomId(2), frame.0),
    );
    assert_eq!(fx.copy1(3, w), GNTST_GENERAL_ERROR);
    assert_eq!((fx.status_bits(1, 30), fx.status_bits(2, 40)), (0, 0));
    // The final entry must grant to the intermediate domain, not the copier.
    fx.grant_v2(
        1,
        30,
        GrantEntryV2::full_page(GTF_PERMIT_ACCESS, DomId(3), frame.0),
    );
    assert_eq!(fx.copy1(3, op), GNTST_GENERAL_ERROR);
    // Self-referential, unknown domain, two levels: refused.
    fx.grant_v2(
        2,
        40,
        GrantEntryV2::transitive(GTF_TRANSITIVE, DomId(3), DomId(2), 30),
    );
    assert_eq!(fx.copy1(3, op), GNTST_GENERAL_ERROR);
    fx.grant_v2(
        2,
        40,
        GrantEntryV2::transitive(GTF_TRANSITIVE, DomId(3), DomId(9), 30),
    );
    assert_eq!(fx.copy1(3, op), GNTST_GENERAL_ERROR);
    fx.grant_v2(
        1,
        30,
        GrantEntryV2::transitive(GTF_TRANSITIVE, DomId(2), DomId(3), 1),
    );
    fx.grant_v2(
        2,
        40,
        GrantEntryV2::transitive(GTF_TRANSITIVE, DomId(3), DomId(1), 30),
    );
    assert_eq!(fx.copy1(3, op), GNTST_GENERAL_ERROR);
    for (id, r) in [(1, 30), (2, 40)] {
        assert_eq!(fx.status_bits(id, r), 0);
    }
    // A v1 table has no transitive entries: type 3 is refused.
    fx.set_version(1, 1).0.unwrap();
    fx.grant(1, 30, GTF_TRANSITIVE, 3, frame);
    let direct = GnttabCopy {
        source: gref(1, 30, 0),
        ..op
    };
    assert_eq!(fx.copy1(3, direct), GNTST_GENERAL_ERROR);
}

// ---- PV maps: contains_pte, device, unmap_and_replace ------------------------------------

#[test]
fn contains_pte_maps_and_unmaps_by_pte_address() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let before = fx.refs(frame);
    let ptr = fx.l1_maddr(2, map_va(2));
    let flags = GNTMAP_HOST_MAP | GNTMAP_CONTAINS_PTE;
    // Misaligned; not a page table; another domain's L1; the granter's L1 for d2.
    assert_eq!(
        fx.map(2, mop(ptr + 3, flags, 10, 1)).status,
        GNTST_GENERAL_ERROR
    );
    let data = fx.d(2).data[0].maddr();
    assert_eq!(
        fx.map(2, mop(data, flags, 10, 1)).status,
        GNTST_GENERAL_ERROR
    );
    let foreign = fx.l1_maddr(1, map_va(2));
    assert_eq!(
        fx.map(2, mop(foreign, flags, 10, 1)).status,
        GNTST_GENERAL_ERROR
    );
    assert_eq!(fx.refs(frame), before);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
    let m = fx.map(2, mop(ptr, flags, 10, 1));
    assert_eq!(m.status, GNTST_OKAY);
    let pte = fx.pte(2, map_va(2));
    assert!(is_grant_entry(pte));
    assert_eq!(entry_mfn_of(pte), frame);
    // unmap_and_replace with a new address is not available in this mode.
    assert_eq!(fx.replace(2, ptr, map_va(0), m.handle), GNTST_GENERAL_ERROR);
    assert_eq!(fx.unmap(2, ptr + 8, m.handle, 0), GNTST_GENERAL_ERROR);
    assert_eq!(fx.unmap(2, ptr, m.handle, 0), GNTST_OKAY);
    assert_eq!(fx.pte(2, map_va(2)), 0);
    assert_eq!(fx.refs(frame), before);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
}

#[test]
fn device_only_maps_hold_the_frame_without_a_pte() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let before = fx.refs(frame);
    let m = fx.map(2, mop(0, GNTMAP_DEVICE_MAP, 10, 1));
    assert_eq!((m.status, m.dev_bus_addr), (GNTST_OKAY, frame.maddr()));
    assert_eq!(
        fx.refs(frame),
        (before.0 + 1, PageType::Writable, before.2 + 1)
    );
    assert_eq!(
        fx.entry_flags(1, 10),
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
    );
    // host_addr 0 and no bus address: nothing to undo, the handle stays.
    assert_eq!(fx.unmap(2, 0, m.handle, 0), GNTST_OKAY);
    assert!(fx.table(2).maps()[m.handle as usize].is_some());
    assert_eq!(
        fx.unmap(2, 0, m.handle, frame.maddr() + 4096),
        GNTST_BAD_DEV_ADDR
    );
    assert_eq!(fx.unmap(2, 0, m.handle, frame.maddr()), GNTST_OKAY);
    assert!(fx.table(2).maps()[m.handle as usize].is_none());
    assert_eq!(fx.refs(frame), before);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
    // A device map of a page-table frame cannot be writable.
    let l4 = fx.d(1).l4;
    fx.grant(1, 11, GTF_PERMIT_ACCESS, 2, l4);
    assert_eq!(
        fx.map(2, mop(0, GNTMAP_DEVICE_MAP, 11, 1)).status,
        GNTST_GENERAL_ERROR
    );
    let ro = fx.map(2, mop(0, GNTMAP_DEVICE_MAP | GNTMAP_READONLY, 11, 1));
    assert_eq!(ro.status, GNTST_OKAY);
    assert_eq!(fx.unmap(2, 0, ro.handle, l4.maddr()), GNTST_OKAY);
}

#[test]
fn host_and_device_parts_unmap_separately() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let before = fx.refs(frame);
    let m = fx.map(
        2,
        mop(map_va(0), GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP, 10, 1),
    );
    assert_eq!(m.status, GNTST_OKAY);
    assert_eq!(
        fx.refs(frame),
        (before.0 + 2, PageType::Writable, before.2 + 2)
    );
    assert_eq!(fx.unmap(2, map_va(0), m.handle, 0), GNTST_OKAY);
    assert_eq!(fx.pte(2, map_va(0)), 0);
    assert_eq!(
        fx.refs(frame),
        (before.0 + 1, PageType::Writable, before.2 + 1)
    );
    assert_eq!(
        fx.entry_flags(1, 10),
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
    );
    assert_eq!(fx.unmap(2, 0, m.handle, frame.maddr()), GNTST_OKAY);
    assert_eq!(fx.refs(frame), before);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
}

#[test]
fn unmap_and_replace_moves_or_clears() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let before = fx.refs(frame);
    let m = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1));
    assert_eq!(m.status, GNTST_OKAY);
    // The PTE of data page 3 moves into the grant's place; its slot is cleared.
    let moved = fx.pte(2, DATA_VA + 3 * PAGE_SIZE as u64);
    let page3 = fx.d(2).data[3];
    let page3_refs = fx.refs(page3);
    // Onto itself: refused, nothing changes.
    assert_eq!(
        fx.replace(2, map_va(0), map_va(0), m.handle),
        GNTST_GENERAL_ERROR
    );
    assert_eq!(
        fx.replace(2, map_va(0), DATA_VA + 3 * PAGE_SIZE as u64, m.handle),
        GNTST_OKAY
    );
    assert_eq!(fx.pte(2, map_va(0)), moved);
    assert_eq!(fx.pte(2, DATA_VA + 3 * PAGE_SIZE as u64), 0);
    assert_eq!(fx.refs(page3), page3_refs);
    assert_eq!(fx.refs(frame), before);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
    assert_eq!(fx.replace(2, map_va(0), 0, m.handle), GNTST_BAD_HANDLE);
    // new_addr 0: a plain unmap.
    let m = fx.map(2, mop(map_va(1), GNTMAP_HOST_MAP | GNTMAP_READONLY, 10, 1));
    assert_eq!(fx.replace(2, map_va(1), 0, m.handle), GNTST_OKAY);
    assert_eq!(fx.pte(2, map_va(1)), 0);
    assert_eq!(fx.refs(frame), before);
    let _ = Pte::GNTTAB;
}

// ---- transfer, swap, cache_flush ---------------------------------------------------------

#[test]
fn transfer_as_xen() {
    let mut fx = fx();
    let me = DomId(2);
    let spare = fx.hv.frames.alloc(me).unwrap();
    let spare2 = fx.hv.frames.alloc(me).unwrap();
    fx.hv.mem.write(spare2.maddr(), b"payload").unwrap();
    let t = |mfn: Mfn, to: u16, r: u32| GnttabTransfer {
        mfn: mfn.0,
        domid: DomId(to),
        r#ref: r,
        status: 0x55,
        ..Default::default()
    };
    let run = |fx: &mut Fx, id: u16, op: GnttabTransfer| {
        assert_eq!(fx.one_op(id, GNTTABOP_TRANSFER, op.as_bytes()), Ok(0));
        fx.status_at(id, 16)
    };
    // Not ours / mapped by our page tables / our grant frame: bad page.
    let (theirs, mapped) = (fx.d(1).data[BUF], fx.d(2).data[BUF]);
    assert_eq!(run(&mut fx, 2, t(theirs, 1, 10)), GNTST_BAD_PAGE);
    assert_eq!(run(&mut fx, 2, t(mapped, 1, 10)), GNTST_BAD_PAGE);
    let gf = fx.table(2).frames()[0];
    assert_eq!(run(&mut fx, 2, t(gf, 1, 10)), GNTST_BAD_PAGE);
    // Unknown receiver: the frame is gone anyway (Xen frees it).
    assert_eq!(run(&mut fx, 2, t(spare, 9, 10)), GNTST_BAD_DOMAIN);
    assert_eq!(fx.hv.frames.owner(spare), None);
    assert_eq!(fx.table(2).transferred_out(), 1);
    // Domain 1's reservation is full: no headroom.
    fx.grant(1, 10, GTF_ACCEPT_TRANSFER, 2, Mfn(0x42));
    let lost = fx.hv.frames.alloc(me).unwrap();
    assert_eq!(run(&mut fx, 2, t(lost, 1, 10)), GNTST_GENERAL_ERROR);
    assert_eq!(fx.table(2).transferred_out(), 2);
    // Domain 2 has room for two: a wrong entry fails (frame lost), a right one works.
    let gone = fx.hv.frames.alloc(DomId(1)).unwrap();
    fx.grant(2, 11, GTF_ACCEPT_TRANSFER, 3, Mfn(0x43));
    assert_eq!(run(&mut fx, 1, t(gone, 2, 11)), GNTST_GENERAL_ERROR);
    fx.hv.frames.free(spare2);
    let spare2 = fx.hv.frames.alloc(DomId(1)).unwrap();
    fx.hv.mem.write(spare2.maddr(), b"payload").unwrap();
    fx.grant(2, 12, GTF_ACCEPT_TRANSFER, 1, Mfn(0x44));
    assert_eq!(run(&mut fx, 1, t(spare2, 2, 12)), GNTST_OKAY);
    let at = fx.table(2).entry_maddr(12).unwrap();
    let mut e = GrantEntryV1::default();
    fx.hv.mem.read(at, e.as_mut_bytes()).unwrap();
    assert_eq!(
        e.flags,
        GTF_ACCEPT_TRANSFER | GTF_TRANSFER_COMMITTED | GTF_TRANSFER_COMPLETED
    );
    let got = Mfn(u64::from(e.frame));
    assert_eq!(fx.hv.frames.owner(got), Some(DomId(2)));
    assert_eq!(fx.hv.frames.m2p(got), Some(0x44));
    let mut b = [0u8; 7];
    fx.hv.mem.read(got.maddr(), &mut b).unwrap();
    assert_eq!(&b, b"payload");
    assert_eq!(fx.table(2).transferred_out(), 1);
    assert_eq!(fx.table(1).transferred_out(), 2);
    // current_reservation follows.
    let idx = fx.run_as(1);
    put(&fx.hv, fx.d(1), 0, &[1, 0]);
    let nr = fx.hv.domains[idx].nr_pages;
    assert_eq!(
        fx.hv
            .memory_op(idx, XENMEM_CURRENT_RESERVATION, GuestHandle::new(DATA_VA)),
        Ok(nr - 2)
    );
    // A bad array is -EFAULT.
    assert_eq!(
        fx.hv
            .grant_table_op(idx, GNTTABOP_TRANSFER, GuestArray::new(HV_ADDRESS, 1)),
        Outcome::Return(Err(Errno::EFAULT))
    );
}

#[test]
fn swap_grant_ref_as_xen() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    fx.grant(1, 11, GTF_PERMIT_ACCESS | GTF_READONLY, 3, Mfn(7));
    let s = |a: u32, b: u32| GnttabSwapGrantRef {
        ref_a: a,
        ref_b: b,
        status: 0x55,
        _pad: 0,
    };
    let run = |fx: &mut Fx, op: GnttabSwapGrantRef| {
        assert_eq!(fx.one_op(1, GNTTABOP_SWAP_GRANT_REF, op.as_bytes()), Ok(0));
        fx.status_at(1, 8)
    };
    assert_eq!(run(&mut fx, s(10, 512)), GNTST_BAD_GNTREF);
    assert_eq!(run(&mut fx, s(512, 10)), GNTST_BAD_GNTREF);
    assert_eq!(run(&mut fx, s(10, 10)), GNTST_OKAY);
    assert_eq!(run(&mut fx, s(10, 11)), GNTST_OKAY);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS | GTF_READONLY);
    assert_eq!(fx.entry_flags(1, 11), GTF_PERMIT_ACCESS);
    let m = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 11, 1));
    assert_eq!(m.status, GNTST_OKAY);
    assert_eq!(run(&mut fx, s(10, 11)), GNTST_EAGAIN);
    assert_eq!(run(&mut fx, s(11, 10)), GNTST_EAGAIN);
    assert_eq!(fx.unmap(2, map_va(0), m.handle, 0), GNTST_OKAY);
    // v2: entries and status words swap together.
    fx.set_version(1, 2).0.unwrap();
    fx.grant_v2(
        1,
        20,
        GrantEntryV2::full_page(GTF_PERMIT_ACCESS, DomId(2), 5),
    );
    let st = fx.table(1).status_maddr(20).unwrap();
    fx.hv.mem.write(st, &GTF_READING.to_le_bytes()).unwrap();
    assert_eq!(run(&mut fx, s(20, 21)), GNTST_OKAY);
    assert_eq!(fx.entry_flags(1, 20), 0);
    assert_eq!(fx.entry_flags(1, 21), GTF_PERMIT_ACCESS);
    assert_eq!(fx.status_bits(1, 21), GTF_READING);
    assert_eq!(fx.status_bits(1, 20), 0);
}

#[test]
fn cache_flush_validates_as_xen_and_does_nothing() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    let own = fx.d(2).data[BUF];
    let f = |a: u64, offset: u16, length: u16, op: u32| GnttabCacheFlush {
        a,
        offset,
        length,
        op,
    };
    let run = |fx: &mut Fx, cmd: u32, op: GnttabCacheFlush| fx.one_op(2, cmd, op.as_bytes());
    let c = GNTTABOP_CACHE_FLUSH;
    let page = fx.page(2, BUF);
    for (op, want) in [
        (f(own.maddr(), 4096, 0, 1), Err(Errno::EINVAL)),
        (f(own.maddr(), 0, 4097, 1), Err(Errno::EINVAL)),
        (f(own.maddr(), 4000, 100, 1), Err(Errno::EINVAL)),
        (f(own.maddr(), 0, 8, 4), Err(Errno::EINVAL)),
        (
            f(own.maddr(), 0, 8, GNTTAB_CACHE_SOURCE_GREF),
            Err(Errno::EINVAL),
        ),
        (f(own.maddr(), 0, 0, 1), Ok(0)),
        (f(own.maddr(), 0, 8, 0), Ok(0)),
        (f(own.maddr(), 0, 8, 3), Ok(0)),
        (f(1 << 40, 0, 8, 1), Err(Errno::EINVAL)),
        (f(frame.maddr(), 0, 8, 1), Err(Errno::EINVAL)),
    ] {
        assert_eq!(run(&mut fx, c, op), want, "{op:?}");
    }
    // A free frame: nobody owns it.
    let free = fx.hv.frames.alloc(DomId(1)).unwrap();
    fx.hv.frames.free(free);
    assert_eq!(run(&mut fx, c, f(free.maddr(), 0, 8, 1)), Err(Errno::EPERM));
    // A foreign frame the caller maps through a grant of its owner is fine.
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let m = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP | GNTMAP_READONLY, 10, 1));
    assert_eq!(run(&mut fx, c, f(frame.maddr(), 0, 8, 2)), Ok(0));
    // The continuation argument (the command's high bits, unshifted, as Xen) is the
    // grant reference the search resumes at: from 4096 on it is not found; with nothing
    // to flush it is -EILSEQ.
    assert_eq!(
        run(&mut fx, c | 1 << 12, f(frame.maddr(), 0, 8, 2)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        run(&mut fx, c | 1 << 12, f(frame.maddr(), 0, 0, 2)),
        Err(Errno::EILSEQ)
    );
    assert_eq!(fx.unmap(2, map_va(0), m.handle, 0), GNTST_OKAY);
    assert_eq!(
        run(&mut fx, c, f(frame.maddr(), 0, 8, 1)),
        Err(Errno::EINVAL)
    );
    assert_eq!(fx.page(2, BUF), page, "no-op");
}

#[test]
fn add_to_physmap_is_refused_for_pv_as_xen() {
    let mut fx = fx();
    let idx = fx.run_as(1);
    let x = |domid: u16, space: u32| XenAddToPhysmap {
        domid: DomId(domid),
        size: 0,
        space,
        idx: 0,
        gpfn: 0x1000,
    };
    let h = GuestHandle::new(DATA_VA);
    for (op, cmd, want) in [
        (x(DomId::SELF.0, XENMAPSPACE_GRANT_TABLE), 0, Errno::EACCES),
        (
            x(DomId::SELF.0, XENMAPSPACE_GRANT_TABLE),
            XENMAPIDX_GRANT_TABLE_STATUS << 6,
            Errno::EDOM,
        ),
        (x(1, XENMAPSPACE_SHARED_INFO), 0, Errno::EACCES),
        (x(2, XENMAPSPACE_GMFN), 0, Errno::EACCES),
        (x(2, XENMAPSPACE_GMFN_FOREIGN), 0, Errno::ENOSYS),
        (x(55, XENMAPSPACE_GRANT_TABLE), 0, Errno::ESRCH),
    ] {
        put(&fx.hv, fx.d(1), 0, op.as_bytes());
        assert_eq!(
            fx.hv.memory_op(idx, XENMEM_ADD_TO_PHYSMAP | cmd, h),
            Err(want),
            "{op:?}"
        );
    }
    assert_eq!(
        fx.hv
            .memory_op(idx, XENMEM_ADD_TO_PHYSMAP, GuestHandle::new(HV_ADDRESS)),
        Err(Errno::EFAULT)
    );
}

// ---- the random hostile sequence ---------------------------------------------------------

/// Checks what must hold between any two hypercalls.
fn check_invariants(fx: &Fx, seed: u64, step: usize) {
    let hv = &fx.hv;
    for d in hv.domains.iter().filter(|d| d.is_runnable()) {
        let g = &d.grant;
        // Pins equal the mappings' parts, per entry; status bits equal the pins.
        for r in 0..g.nr_entries() {
            let (mut rd, mut wr) = (0, 0);
            for m in hv.domains.iter().filter(|m| m.is_runnable()) {
                for map in m.grant.maps().iter().flatten() {
                    if map.granter == d.id && map.gref == r {
                        let parts = u32::from(map.host) + u32::from(map.device);
                        if map.readonly {
                            rd += parts;
                        } else {
                            wr += parts;
                        }
                    }
                }
            }
            let a = g.active_of(r);
            assert_eq!(
                a.map_or((0, 0), |a| (a.readers, a.writers)),
                (rd, wr),
                "seed {seed} step {step}: pins of d{} ref {r}",
                d.id.0
            );
            let at = g.status_maddr(r).unwrap();
            let mut b = [0u8; 2];
            hv.mem.read(at, &mut b).unwrap();
            let bits = u16::from_le_bytes(b) & (GTF_READING | GTF_WRITING);
            let want = a.map_or(0, |a| a.bits());
            // Never a bit nothing holds. The bits pins hold are there too, except on a
            // reserved entry whose hostile contents a version switch dropped (Xen drops
            // them too: "bad flags ... when switching version").
            assert_eq!(
                bits & !want,
                0,
                "seed {seed} step {step}: d{} ref {r}",
                d.id.0
            );
            if r >= GNTTAB_NR_RESERVED_ENTRIES {
                assert_eq!(bits, want, "seed {seed} step {step}: d{} ref {r}", d.id.0);
            }
        }
        for map in g.maps().iter().flatten() {
            // Never a writable mapping of a page table or descriptor frame.
            let st = hv.frames.type_state(map.mfn).unwrap();
            if !map.readonly {
                assert_eq!(st.ty, PageType::Writable, "seed {seed} step {step}");
                assert!(st.count >= 1);
            }
            assert!(hv.frames.ref_count(map.mfn).unwrap() >= 1);
        }
    }
}

#[test]
fn random_hostile_sequences_keep_the_invariants() {
    let (mut maps_ok, mut copies_ok, mut unmaps_ok) = (0, 0, 0);
    for seed in 1..=24u64 {
        let mut rng = Rng(seed);
        let mut fx = fx();
        for id in 1..=3 {
            if rng.below(2) == 0 {
                fx.set_version(id, 2).0.unwrap();
            }
        }
        let mut handles: Vec<(u16, u32, u64)> = Vec::new();
        let flag_set = [
            GTF_PERMIT_ACCESS,
            GTF_PERMIT_ACCESS | GTF_READONLY,
            GTF_PERMIT_ACCESS | GTF_SUB_PAGE,
            GTF_TRANSITIVE,
            GTF_ACCEPT_TRANSFER,
            0,
            GTF_PERMIT_ACCESS | GTF_PWT,
        ];
        for step in 0..300 {
            let id = rng.range(1, 3) as u16;
            let other = rng.range(1, 3) as u16;
            let r = rng.below(10) as u32;
            match rng.below(11) {
                // The granter rewrites an entry (keeping the status bits, as the
                // hypervisor owns those).
                0..=2 => {
                    let frames = [
                        fx.d(id).data[BUF],
                        fx.d(id).data[BUF2],
                        fx.d(id).l4,
                        fx.d(other).data[BUF],
                    ];
                    let frame = frames[rng.below(4) as usize];
                    let flags = flag_set[rng.below(flag_set.len() as u64) as usize];
                    let keep = if fx.table(id).version() == 1 {
                        fx.entry_flags(id, r) & (GTF_READING | GTF_WRITING)
                    } else {
                        0
                    };
                    if fx.table(id).version() == 1 {
                        fx.grant(id, r, flags | keep, other, frame);
                    } else if flags == GTF_TRANSITIVE {
                        let t = rng.range(1, 3) as u16;
                        fx.grant_v2(
                            id,
                            r,
                            GrantEntryV2::transitive(flags, DomId(other), DomId(t), r),
                        );
                    } else {
                        let off = rng.below(4096) as u16;
                        let len = rng.below(4096) as u16;
                        fx.grant_v2(
                            id,
                            r,
                            GrantEntryV2::sub_page(flags, DomId(other), frame.0, off, len),
                        );
                    }
                }
                3 | 4 => {
                    let mut flags = [
                        GNTMAP_HOST_MAP,
                        GNTMAP_HOST_MAP | GNTMAP_READONLY,
                        GNTMAP_DEVICE_MAP,
                        GNTMAP_DEVICE_MAP | GNTMAP_READONLY | GNTMAP_HOST_MAP,
                        GNTMAP_HOST_MAP | GNTMAP_CONTAINS_PTE,
                    ][rng.below(5) as usize];
                    let va = map_va(rng.below(8));
                    let addr = if flags & GNTMAP_CONTAINS_PTE != 0 {
                        fx.l1_maddr(id, va)
                    } else {
                        va
                    };
                    if rng.below(10) == 0 {
                        flags |= 1 << 16;
                    }
                    let m = fx.map(id, mop(addr, flags, r, other));
                    if m.status == GNTST_OKAY {
                        maps_ok += 1;
                        handles.push((id, m.handle, addr));
                    }
                }
                5 | 6 if !handles.is_empty() => {
                    let i = rng.below(handles.len() as u64) as usize;
                    let (mid, h, addr) = handles[i];
                    let bus = if rng.below(2) == 0 { 0 } else { 1 << 12 };
                    let st = if rng.below(4) == 0 {
                        fx.replace(mid, addr, 0, h)
                    } else {
                        fx.unmap(mid, addr, h, bus)
                    };
                    unmaps_ok += usize::from(st == GNTST_OKAY);
                    if fx
                        .table(mid)
                        .maps()
                        .get(h as usize)
                        .copied()
                        .flatten()
                        .is_none()
                    {
                        handles.swap_remove(i);
                    }
                }
                7 => {
                    let write = rng.below(2) == 0;
                    let mine = fx.d(id).data[BUF2];
                    // Mostly sane ranges, sometimes anything.
                    let wild = rng.below(8) == 0;
                    let span = if wild { 4096 } else { 3900 };
                    let g = gref(other, r, rng.below(span) as u16);
                    let f = frame_copy(mine, rng.below(span) as u16);
                    let len = rng.below(if wild { 4097 } else { 196 }) as u16;
                    let op = GnttabCopy {
                        source: if write { f } else { g },
                        dest: if write { g } else { f },
                        len,
                        flags: if write {
                            GNTCOPY_DEST_GREF
                        } else {
                            GNTCOPY_SOURCE_GREF
                        },
                        status: 0,
                        _pad: 0,
                    };
                    copies_ok += usize::from(fx.copy1(id, op) == GNTST_OKAY);
                }
                8 => {
                    let v = rng.range(1, 2) as u32;
                    let _ = fx.set_version(id, v);
                }
                9 => {
                    let op = GnttabSwapGrantRef {
                        ref_a: r,
                        ref_b: rng.below(10) as u32,
                        status: 0,
                        _pad: 0,
                    };
                    let _ = fx.one_op(id, GNTTABOP_SWAP_GRANT_REF, op.as_bytes());
                }
                _ => {
                    let frame = [fx.d(id).data[BUF], fx.d(id).l4, Mfn(rng.below(2048))]
                        [rng.below(3) as usize];
                    let op = GnttabTransfer {
                        mfn: frame.0,
                        domid: DomId(other),
                        r#ref: r,
                        ..Default::default()
                    };
                    let _ = fx.one_op(id, GNTTABOP_TRANSFER, op.as_bytes());
                }
            }
            check_invariants(&fx, seed, step);
        }
        // Both sides die, in a random order: every frame comes back.
        let mut order: Vec<u16> = std::vec![1, 2, 3];
        let k = rng.below(3) as usize;
        order.rotate_left(k);
        for id in order {
            let idx = fx.idx(id);
            fx.hv
                .end_domain(idx, DomainState::Crashed, format_args!("test"));
            check_invariants(&fx, seed, 9999);
        }
        assert_eq!(
            fx.hv.frames.free_count(),
            fx.free0,
            "seed {seed}: frames leaked"
        );
    }
    // The sequences reached the interesting states, not only the error paths.
    assert!(
        maps_ok > 50 && copies_ok > 20 && unmaps_ok > 20,
        "{maps_ok} {copies_ok} {unmaps_ok}"
    );
}

#[test]
fn a_pinned_entry_belongs_to_its_mapper() {
    let mut fx = fx();
    let frame = fx.d(1).data[BUF];
    fx.grant(1, 10, GTF_PERMIT_ACCESS, 2, frame);
    let m = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP | GNTMAP_READONLY, 10, 1));
    assert_eq!(m.status, GNTST_OKAY);
    // The granter hands the entry to domain 3 while domain 2 maps it: domain 3 is
    // refused (Xen: the active entry's domid), for maps and copies alike.
    let bits = fx.entry_flags(1, 10) & (GTF_READING | GTF_WRITING);
    fx.grant(1, 10, GTF_PERMIT_ACCESS | bits, 3, frame);
    assert_eq!(
        fx.map(3, mop(map_va(0), GNTMAP_HOST_MAP | GNTMAP_READONLY, 10, 1))
            .status,
        GNTST_GENERAL_ERROR
    );
    let op = GnttabCopy {
        source: gref(1, 10, 0),
        dest: frame_copy(fx.d(3).data[BUF], 0),
        len: 8,
        flags: GNTCOPY_SOURCE_GREF,
        status: 0,
        _pad: 0,
    };
    assert_eq!(fx.copy1(3, op), GNTST_GENERAL_ERROR);
    // Domain 2 still copies through its pin (the pinned frame), and upgrading to a
    // writable pin checks only GTF_readonly.
    let op2 = GnttabCopy {
        dest: frame_copy(fx.d(2).data[BUF], 0),
        ..op
    };
    assert_eq!(fx.copy1(2, op2), GNTST_OKAY);
    let w = fx.map(2, mop(map_va(1), GNTMAP_HOST_MAP, 10, 1));
    assert_eq!(w.status, GNTST_OKAY);
    assert_eq!(
        fx.entry_flags(1, 10),
        GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
    );
    assert_eq!(fx.unmap(2, map_va(1), w.handle, 0), GNTST_OKAY);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS | GTF_READING);
    assert_eq!(fx.unmap(2, map_va(0), m.handle, 0), GNTST_OKAY);
    assert_eq!(fx.entry_flags(1, 10), GTF_PERMIT_ACCESS);
    assert!(fx.table(1).active().is_empty());
}

#[test]
fn granter_death_keeps_mapped_frames_and_status_until_the_last_unmap() {
    let mut fx = fx();
    fx.set_version(1, 2).0.unwrap();
    let frame = fx.d(1).data[BUF];
    fx.grant_v2(
        1,
        10,
        GrantEntryV2::full_page(GTF_PERMIT_ACCESS, DomId(2), frame.0),
    );
    let m = fx.map(2, mop(map_va(0), GNTMAP_HOST_MAP, 10, 1));
    assert_eq!(m.status, GNTST_OKAY);
    let st = fx.table(1).status_frames()[0];
    let idx = fx.idx(1);
    fx.hv
        .end_domain(idx, DomainState::Crashed, format_args!("test"));
    // The mapped frame stays, the status frame is freed with the rest.
    assert_eq!(fx.hv.frames.owner(frame), Some(DomId(1)));
    assert_eq!(fx.hv.frames.owner(st), None);
    assert_eq!(fx.unmap(2, map_va(0), m.handle, 0), GNTST_OKAY);
    assert_eq!(fx.hv.frames.owner(frame), None);
}
