//! Fixtures shared by the grant-table tests (`grant_copy_tests.rs`, `grant_map_tests.rs`,
//! `grant_ops_tests.rs`): domains with one grant frame each, grant-entry writers,
//! hypercall runners and op builders. A child module of `hv_tests.rs` (its domains and
//! helpers), like the tests.

use super::*;
use crate::grant::GrantTable;
use crate::hypercall::handle::{GuestArray, Outcome};
use crate::mmu::PageType;
use crate::mmu::pagetable::PtCtx;
use std::vec::Vec;
use xen_pv_abi::grant_table::{
    GNTST_OKAY, GNTTABOP_COPY, GNTTABOP_MAP_GRANT_REF, GNTTABOP_SETUP_TABLE,
    GNTTABOP_UNMAP_GRANT_REF, GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GnttabSetupTable,
    GnttabUnmapGrantRef, GrantEntryV1,
};
use zerocopy::{FromBytes, IntoBytes};

/// Where the ops array lives in each test domain (data page 1 on).
pub(super) const OPS_OFF: usize = 0x1000;
/// Where `GNTTABOP_setup_table` puts each domain's frame list.
const FRAME_LIST_OFF: usize = 0x100;

/// Virtual address of the `i`th free L1 slot after the data pages (for mappings).
pub(super) fn map_va(i: u64) -> u64 {
    DATA_VA + (DATA_PAGES as u64 + i) * PAGE_SIZE as u64
}

/// Test domains with one grant frame each.
pub(super) struct Fx {
    pub(super) hv: Hv,
    pub(super) doms: Vec<TestDomain>,
    /// Each domain's grant frame, in `doms` order.
    pub(super) tables: Vec<Mfn>,
    /// Free frames before any domain existed.
    pub(super) free0: usize,
}

impl Fx {
    /// Domains 1..=3 (domUs), plus dom0 (id 0, first) when `with_dom0`; the domUs' page
    /// tables validated (pinned L4) when `pin`; one grant frame each.
    pub(super) fn new(with_dom0: bool, pin: bool) -> Fx {
        let mut hv = new_hv();
        let free0 = hv.frames.free_count();
        let mut doms: Vec<TestDomain> = Vec::new();
        if with_dom0 {
            doms.push(add_domain(&mut hv, 0, "d0", true));
        }
        for id in 1..=3 {
            doms.push(add_domain(&mut hv, id, "g", false));
        }
        let mut fx = Fx {
            hv,
            doms,
            tables: Vec::new(),
            free0,
        };
        for i in 0..fx.doms.len() {
            let (idx, l4) = (fx.doms[i].idx, fx.doms[i].l4);
            let dom = fx.hv.domains[idx].id;
            let slots = fx.hv.hypervisor_l4_slots;
            if pin && dom != DomId(0) {
                PtCtx::new(&fx.hv.mem, &mut fx.hv.frames, dom, &slots)
                    .pin(l4, 4)
                    .unwrap();
            }
            let list = DATA_VA + FRAME_LIST_OFF as u64;
            assert_eq!(fx.setup(dom.0, DomId::SELF, 1, list), GNTST_OKAY);
            let b = get(&fx.hv, &fx.doms[i], FRAME_LIST_OFF, 8);
            fx.tables
                .push(Mfn(u64::from_le_bytes(b.try_into().unwrap())));
        }
        fx
    }

    /// Domain `id`'s test domain.
    pub(super) fn d(&self, id: u16) -> &TestDomain {
        self.doms
            .iter()
            .find(|g| self.hv.domains[g.idx].id == DomId(id))
            .unwrap()
    }
    /// Domain `id`'s slot.
    pub(super) fn idx(&self, id: u16) -> usize {
        self.d(id).idx
    }
    /// Makes domain `id` the one on the CPU; returns its slot.
    pub(super) fn run_as(&mut self, id: u16) -> usize {
        let idx = self.idx(id);
        run_as(&mut self.hv, idx);
        idx
    }
    /// Runs `cmd` from domain `id` on the `n` elements `bytes` put at [`OPS_OFF`].
    pub(super) fn call(&mut self, id: u16, cmd: u32, bytes: &[u8], n: u64) -> Outcome {
        put(&self.hv, self.d(id), OPS_OFF, bytes);
        let idx = self.run_as(id);
        self.hv
            .grant_table_op(idx, cmd, GuestArray::new(DATA_VA + OPS_OFF as u64, n))
    }
    /// `len` bytes at `off` in domain `id`'s ops array, as written back.
    pub(super) fn back(&self, id: u16, off: usize, len: usize) -> Vec<u8> {
        get(&self.hv, self.d(id), OPS_OFF + off, len)
    }
    /// The status word at `off` in domain `id`'s ops array.
    pub(super) fn status_at(&self, id: u16, off: usize) -> i16 {
        let b = self.back(id, off, 2);
        i16::from_le_bytes([b[0], b[1]])
    }
    /// `GNTTABOP_setup_table` from domain `id`: its status (the call must return 0).
    pub(super) fn setup(&mut self, id: u16, dom: DomId, n: u32, list: u64) -> i16 {
        let op = GnttabSetupTable {
            dom,
            nr_frames: n,
            frame_list: list,
            ..Default::default()
        };
        assert_eq!(
            self.call(id, GNTTABOP_SETUP_TABLE, op.as_bytes(), 1),
            Outcome::Return(Ok(0))
        );
        self.status_at(id, 8)
    }
    /// Domain `id`'s grant table.
    pub(super) fn table(&self, id: u16) -> &GrantTable {
        &self.hv.domains[self.idx(id)].grant
    }
    /// Writes v1 entry `r` of domain `id`'s table.
    pub(super) fn grant(&self, id: u16, r: u32, flags: u16, to: u16, frame: Mfn) {
        let at = self.table(id).entry_maddr(r).unwrap();
        let e = GrantEntryV1 {
            flags,
            domid: DomId(to),
            frame: frame.0 as u32,
        };
        self.hv.mem.write(at, e.as_bytes()).unwrap();
    }
    /// The flags word of entry `r` of domain `id`'s table.
    pub(super) fn entry_flags(&self, id: u16, r: u32) -> u16 {
        let at = self.table(id).entry_maddr(r).unwrap();
        let mut b = [0u8; 2];
        self.hv.mem.read(at, &mut b).unwrap();
        u16::from_le_bytes(b)
    }
    /// Fills data page `page` of domain `id` with a pattern seeded by `seed`.
    pub(super) fn pattern(&self, id: u16, page: usize, seed: u8) {
        let bytes: Vec<u8> = (0..PAGE_SIZE)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect();
        self.hv
            .mem
            .write(self.d(id).data[page].maddr(), &bytes)
            .unwrap();
    }
    /// Data page `page` of domain `id`.
    pub(super) fn page(&self, id: u16, page: usize) -> Vec<u8> {
        let mut b = std::vec![0u8; PAGE_SIZE];
        self.hv
            .mem
            .read(self.d(id).data[page].maddr(), &mut b)
            .unwrap();
        b
    }
    /// Runs one `GNTTABOP_copy` from domain `id` on `ops`.
    pub(super) fn copy_entry(&mut self, id: u16, ops: &[GnttabCopy]) -> Outcome {
        self.call(id, GNTTABOP_COPY, ops.as_bytes(), ops.len() as u64)
    }
    /// One copy from domain `id`: its status (the call itself must return 0).
    pub(super) fn copy1(&mut self, id: u16, op: GnttabCopy) -> i16 {
        let op = GnttabCopy { status: 0x55, ..op };
        assert_eq!(self.copy_entry(id, &[op]), Outcome::Return(Ok(0)));
        self.status_at(id, 36)
    }
    /// One map from domain `id`: the element as written back.
    pub(super) fn map(&mut self, id: u16, op: GnttabMapGrantRef) -> GnttabMapGrantRef {
        let out = self.call(id, GNTTABOP_MAP_GRANT_REF, op.as_bytes(), 1);
        assert_eq!(out, Outcome::Return(Ok(0)));
        let back = GnttabMapGrantRef::read_from_bytes(&self.back(id, 0, 32)).unwrap();
        assert_eq!(back.host_addr, op.host_addr, "input unchanged");
        back
    }
    /// One unmap from domain `id`: its status.
    pub(super) fn unmap(&mut self, id: u16, host_addr: u64, handle: u32, bus: u64) -> i16 {
        let op = GnttabUnmapGrantRef {
            host_addr,
            dev_bus_addr: bus,
            handle,
            status: 0x55,
            _pad: 0,
        };
        let out = self.call(id, GNTTABOP_UNMAP_GRANT_REF, op.as_bytes(), 1);
        assert_eq!(out, Outcome::Return(Ok(0)));
        self.status_at(id, 20)
    }
    /// Machine address of the L1 entry of `va` in domain `id`'s tables.
    pub(super) fn l1_maddr(&mut self, id: u16, va: u64) -> u64 {
        let (l4, dom) = (self.d(id).l4, DomId(id));
        let slots = self.hv.hypervisor_l4_slots;
        let pt = PtCtx::new(&self.hv.mem, &mut self.hv.frames, dom, &slots);
        pt.l1_entry_maddr(l4, va).unwrap()
    }
    /// The L1 entry of `va` in domain `id`'s tables.
    pub(super) fn pte(&mut self, id: u16, va: u64) -> u64 {
        let at = self.l1_maddr(id, va);
        self.hv.mem.read_u64(at).unwrap()
    }
    /// `mfn`'s reference count, type and type count.
    pub(super) fn refs(&self, mfn: Mfn) -> (u32, PageType, u32) {
        let st = self.hv.frames.type_state(mfn).unwrap();
        (self.hv.frames.ref_count(mfn).unwrap(), st.ty, st.count)
    }
}

/// Makes domain slot `idx` the one on the CPU (vCPU 0), as a hypercall from it finds.
pub(super) fn run_as(hv: &mut Hv, idx: usize) {
    hv.cpu.current = Some(idx);
    hv.cpu.vcpu = VcpuId(0);
}

/// A map of ref `r` of domain `dom` at `va`; status and handle preset to garbage.
pub(super) fn mop(va: u64, flags: u32, r: u32, dom: u16) -> GnttabMapGrantRef {
    GnttabMapGrantRef {
        host_addr: va,
        flags,
        r#ref: r,
        dom: DomId(dom),
        status: 0x55,
        handle: 0xdead,
        dev_bus_addr: 0,
    }
}

/// A copy end in ref `r` of domain `dom`.
pub(super) fn gref(dom: u16, r: u32, offset: u16) -> GnttabCopyPtr {
    GnttabCopyPtr {
        u: u64::from(r),
        domid: DomId(dom),
        offset,
        _pad: 0,
    }
}

/// A copy end in the caller's own frame `mfn`.
pub(super) fn frame(mfn: Mfn, offset: u16) -> GnttabCopyPtr {
    GnttabCopyPtr {
        u: mfn.0,
        domid: DomId::SELF,
        offset,
        _pad: 0,
    }
}
