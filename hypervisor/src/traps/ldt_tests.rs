//! Host tests of `MMUEXT_SET_LDT` on domains made by the real builder.

extern crate std;

use super::{LDT_MAX_ENTS, MAX_LDT_FRAMES};
use crate::domain::elfnotes::test_elf::VIRT_BASE;
use crate::mmu::PageType;
use crate::mmu::guest::{copy_from_guest, copy_to_guest};
use crate::platform::{GuestFrame, MachineMemory, Resume};
use crate::testutil::started_test_domains;
use crate::testutil::{TestHv, hypercall, ret};
use crate::traps::gdt::DESCS_PER_FRAME;
use std::vec::Vec;
use xen_pv_abi::VcpuId;
use xen_pv_abi::layout::{HYPERVISOR_VIRT_START, PAGE_SIZE};
use xen_pv_abi::mmu::{MMUEXT_SET_LDT, MmuextOp};
use xen_pv_abi::start_info::StartInfo;
use xen_pv_abi::{DomId, Errno, Mfn, nr};
use zerocopy::{FromBytes, IntoBytes};

const FRAMES: usize = 16384;
const PAGE: u64 = PAGE_SIZE as u64;
const EINVAL: i64 = Errno::EINVAL.to_ret();
const EFAULT: i64 = Errno::EFAULT.to_ret();

// The descriptors the GDT tests use (DPL 0 data is raised to 3 when checked; system
// descriptors are refused).
use crate::traps::gdt::tests::{CALL_GATE, CODE64_DPL3, DATA_DPL0, DATA_DPL3, LDT, TSS};

/// Running d1 (and d2) of 8 MiB each; the frame holds the running domain's registers.
struct Fx {
    hv: TestHv,
    f: GuestFrame,
    /// A writable page (after the boot stack; the same va in every domain): hypercall
    /// arguments go there.
    scratch: u64,
    /// Where LDT pages get mapped: `LDT_MAX_ENTS / 512` pages from here are free to remap.
    ldt_va: u64,
    /// start_info's va (the same in every domain: same image, same layout).
    si_va: u64,
}

fn fx(two: bool) -> Fx {
    let (hv, f) = started_test_domains(FRAMES, [0xabc_0063; 16], if two { 2 } else { 1 });
    let scratch = f.rsp + PAGE;
    Fx {
        hv,
        f,
        scratch,
        ldt_va: scratch + 4 * PAGE,
        si_va: f.rsi,
    }
}

impl Fx {
    fn cur(&self) -> usize {
        self.hv.cpu.current.unwrap()
    }
    fn call(&mut self, nr: u32, args: &[u64]) -> i64 {
        let r = hypercall(&mut self.hv, &mut self.f, u64::from(nr), args);
        assert!(matches!(r, Resume::Guest { .. }), "{r:?}");
        ret(&self.f)
    }
    fn put(&self, va: u64, bytes: &[u8]) {
        let space = self.hv.current_space(self.cur());
        copy_to_guest(&self.hv.mem, &self.hv.frames, space, va, bytes).unwrap();
    }
    /// `mmuext_op(MMUEXT_SET_LDT, va, ents)` as a batch of one.
    fn set_ldt(&mut self, va: u64, ents: u64) -> i64 {
        let op = MmuextOp {
            cmd: MMUEXT_SET_LDT,
            pad: 0,
            arg1: va,
            arg2: ents,
        };
        self.put(self.scratch, op.as_bytes());
        let args = [self.scratch, 1, 0, u64::from(DomId::SELF.0)];
        self.call(nr::MMUEXT_OP, &args)
    }
    fn update_descriptor(&mut self, maddr: u64, desc: u64) -> i64 {
        self.call(nr::UPDATE_DESCRIPTOR, &[maddr, desc, 0])
    }
    /// Maps `mfn` at `va` of the running domain with PTE flags `flags`.
    fn map(&mut self, va: u64, mfn: Mfn, flags: u64) -> i64 {
        self.call(nr::UPDATE_VA_MAPPING, &[va, mfn.maddr() | flags, 0])
    }
    /// The running domain's frame of pseudo-physical page `pfn`.
    fn mfn(&self, pfn: u64) -> Mfn {
        let si = self.start_info();
        let space = self.hv.current_space(self.cur());
        let mut b = [0u8; 8];
        let va = si.mfn_list + pfn * 8;
        copy_from_guest(&self.hv.mem, &self.hv.frames, space, va, &mut b).unwrap();
        Mfn(u64::from_le_bytes(b))
    }
    fn start_info(&self) -> StartInfo {
        let mut raw = [0u8; size_of::<StartInfo>()];
        let space = self.hv.current_space(self.cur());
        copy_from_guest(&self.hv.mem, &self.hv.frames, space, self.si_va, &mut raw).unwrap();
        StartInfo::read_from_bytes(&raw).unwrap()
    }
    /// An unmapped, untyped frame of the running domain.
    fn free_frame(&self, n: u64) -> Mfn {
        self.mfn(1500 + n)
    }
    fn mfn_of_va(&self, va: u64) -> Mfn {
        self.mfn((va - VIRT_BASE) / PAGE)
    }
    /// Fills a frame with descriptors: `descs` from index 0, the rest zero.
    fn fill(&self, mfn: Mfn, descs: &[u64]) {
        let mut page = [0u64; DESCS_PER_FRAME];
        page[..descs.len()].copy_from_slice(descs);
        self.hv.mem.write(mfn.maddr(), page.as_bytes()).unwrap();
    }
    /// A frame filled with `descs`, mapped read-only at LDT page `page`.
    fn ldt_page(&mut self, page: u64, n: u64, descs: &[u64]) -> Mfn {
        let mfn = self.free_frame(n);
        self.fill(mfn, descs);
        assert_eq!(self.map(self.ldt_va + page * PAGE, mfn, 5), 0);
        mfn
    }
    fn ty(&self, mfn: Mfn) -> (PageType, u32) {
        let st = self.hv.frames.type_state(mfn).unwrap();
        if st.count == 0 {
            (PageType::None, 0)
        } else {
            (st.ty, st.count)
        }
    }
    /// The "CPU's" LDT: the entries it may use.
    fn hw(&self) -> &[u64] {
        &self.hv.platform.ldt[..self.hv.platform.ldt_loaded]
    }
}

#[test]
fn valid_ldt_is_typed_checked_copied_and_loaded() {
    let mut x = fx(false);
    let a = x.ldt_page(0, 0, &[DATA_DPL3, DATA_DPL0, CODE64_DPL3]);
    assert_eq!(x.set_ldt(x.ldt_va, 3), 0);
    assert_eq!(x.ty(a), (PageType::SegDesc, 1));
    // DPL 0 raised to 3, in the frame and in the copy the CPU uses.
    assert_eq!(x.hv.mem.read_u64(a.maddr() + 8).unwrap(), DATA_DPL3);
    assert_eq!(x.hw(), &[DATA_DPL3, DATA_DPL3, CODE64_DPL3]);
    assert_eq!(x.hv.cpu.ldt, Some((0, VcpuId(0))));
    let ldt = x.hv.domains[0].vcpu(VcpuId(0)).ldt;
    assert_eq!(
        (ldt.base(), ldt.entries(), ldt.frames()),
        (x.ldt_va, 3, &[a.0][..])
    );

    // Typed SegDesc: it cannot be mapped writable while it is the LDT.
    assert_eq!(x.map(x.ldt_va, a, 7), Errno::EBUSY.to_ret());

    // Two pages, the second one only partly used.
    let b = x.ldt_page(1, 1, &[CODE64_DPL3]);
    assert_eq!(x.set_ldt(x.ldt_va, 513), 0);
    assert_eq!(
        (x.ty(a), x.ty(b)),
        ((PageType::SegDesc, 1), (PageType::SegDesc, 1))
    );
    assert_eq!(x.hw().len(), 513);
    assert_eq!((x.hw()[2], x.hw()[512]), (CODE64_DPL3, CODE64_DPL3));

    // No LDT: both released, the CPU has none, and `a` may be writable again.
    assert_eq!(x.set_ldt(0xdead_0000, 0), 0);
    assert_eq!(
        (x.ty(a), x.ty(b)),
        ((PageType::None, 0), (PageType::None, 0))
    );
    assert_eq!(x.hv.platform.ldt_loaded, 0);
    assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).ldt.entries(), 0);
    assert_eq!(x.map(x.ldt_va, a, 7), 0);
}

#[test]
fn the_largest_ldt_spans_sixteen_frames() {
    let mut x = fx(false);
    let frames: Vec<Mfn> = (0..MAX_LDT_FRAMES as u64)
        .map(|i| x.ldt_page(i, i, &[DATA_DPL3, i]))
        .collect();
    assert_eq!(x.set_ldt(x.ldt_va, LDT_MAX_ENTS as u64), 0);
    assert_eq!(x.hw().len(), LDT_MAX_ENTS);
    for (i, &m) in frames.iter().enumerate() {
        assert_eq!(x.ty(m), (PageType::SegDesc, 1));
        // Entry 1 of each page is its index: not present, copied as is.
        assert_eq!(x.hw()[i * DESCS_PER_FRAME + 1], i as u64);
    }
    assert_eq!(x.set_ldt(x.ldt_va, LDT_MAX_ENTS as u64 + 1), EINVAL);
    assert_eq!(x.hw().len(), LDT_MAX_ENTS, "a refused call changes nothing");
}

#[test]
fn set_ldt_refuses_bad_ranges_frames_and_descriptors() {
    let mut x = fx(false);
    let good = x.ldt_page(0, 0, &[DATA_DPL3]);
    assert_eq!(x.set_ldt(x.ldt_va, 1), 0);

    // Addresses: unaligned, in or reaching into the hypervisor's range, non-canonical,
    // wrapping; too many entries.
    let end_of_low_half = 0x0000_8000_0000_0000 - PAGE;
    for (va, ents) in [
        (x.ldt_va + 8, 1),
        (HYPERVISOR_VIRT_START, 1),
        (HYPERVISOR_VIRT_START - PAGE, 1),
        (0x0000_8000_0000_0000, 1),
        (end_of_low_half, 513),
        (0xffff_ffff_ffff_f000, 1024),
        (x.ldt_va, 8193),
    ] {
        assert_eq!(x.set_ldt(va, ents), EINVAL, "{va:#x} {ents}");
    }
    // Only the low 32 bits of nr_ents count (C unsigned int): 2^32 + 1 is 1.
    assert_eq!(x.set_ldt(x.ldt_va, (1 << 32) + 1), 0);

    // Not mapped (the second page of the range).
    assert_eq!(x.call(nr::UPDATE_VA_MAPPING, &[x.ldt_va + PAGE, 0, 0]), 0);
    assert_eq!(x.set_ldt(x.ldt_va, 513), EFAULT);
    // A writable-mapped frame (the scratch page) and a page table (the bootstrap L4,
    // mapped read-only at pt_base).
    let writable = x.mfn_of_va(x.scratch);
    assert_eq!(x.map(x.ldt_va + PAGE, writable, 5), 0);
    assert_eq!(x.set_ldt(x.ldt_va, 513), EINVAL);
    assert_eq!(x.ty(writable).0, PageType::Writable);
    let si = x.start_info();
    assert_eq!(x.set_ldt(si.pt_base, 1), EINVAL);
    assert_eq!(x.ty(x.mfn_of_va(si.pt_base)).0, PageType::L4);

    // Refused descriptors anywhere in the frame (the whole frame is checked), as the
    // second page: the first page's reference is given back.
    for (n, bad) in [TSS, LDT, CALL_GATE].into_iter().enumerate() {
        let mut descs = [0u64; 300];
        descs[299] = bad;
        let f = x.ldt_page(1, 1 + n as u64, &descs);
        assert_eq!(x.set_ldt(x.ldt_va, 600), EINVAL, "{bad:#x}");
        assert_eq!(x.ty(f), (PageType::None, 0));
        assert_eq!(x.ty(good), (PageType::SegDesc, 1));
    }
    // Through all that, the LDT set first stayed installed and loaded.
    assert_eq!(x.hw(), &[DATA_DPL3]);
    assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).ldt.base(), x.ldt_va);
    assert!(x.hv.domains[0].is_runnable());
}

#[test]
fn update_descriptor_changes_the_loaded_ldt() {
    let mut x = fx(false);
    let a = x.ldt_page(0, 0, &[DATA_DPL3]);
    assert_eq!(x.set_ldt(x.ldt_va, 4), 0);
    assert_eq!(x.update_descriptor(a.maddr() + 3 * 8, DATA_DPL0), 0);
    assert_eq!(x.hw(), &[DATA_DPL3, 0, 0, DATA_DPL3]);
    // Beyond the entries in use: stored in the frame only.
    assert_eq!(x.update_descriptor(a.maddr() + 4 * 8, CODE64_DPL3), 0);
    assert_eq!(x.hv.mem.read_u64(a.maddr() + 32).unwrap(), CODE64_DPL3);
    assert_eq!(x.hv.platform.ldt[4], 0);
    // Refused descriptors change nothing.
    for bad in [TSS, LDT, CALL_GATE] {
        assert_eq!(x.update_descriptor(a.maddr() + 8, bad), EINVAL);
    }
    assert_eq!(x.hw(), &[DATA_DPL3, 0, 0, DATA_DPL3]);
    // A larger LDT now sees entry 4 as updated.
    assert_eq!(x.set_ldt(x.ldt_va, 5), 0);
    assert_eq!(x.hw()[4], CODE64_DPL3);
}

#[test]
fn each_domain_runs_with_its_own_ldt() {
    let mut x = fx(true);
    let yield_ = u64::from(xen_pv_abi::sched::SCHEDOP_YIELD);
    x.ldt_page(0, 0, &[DATA_DPL3, DATA_DPL3]);
    assert_eq!(x.set_ldt(x.ldt_va, 2), 0);

    // d2 has no LDT: the CPU has none while it runs.
    x.call(nr::SCHED_OP, &[yield_, 0, 0]);
    assert_eq!(x.cur(), 1);
    assert_eq!(x.hv.platform.ldt_loaded, 0);
    // d2 sets its own (one code descriptor).
    let d2_frame = x.ldt_page(0, 7, &[CODE64_DPL3]);
    assert_eq!(x.hv.frames.owner(d2_frame), Some(x.hv.domains[1].id));
    assert_eq!(x.set_ldt(x.ldt_va, 1), 0);
    assert_eq!(x.hw(), &[CODE64_DPL3]);

    // Back to d1: its two entries, copied again.
    x.call(nr::SCHED_OP, &[yield_, 0, 0]);
    assert_eq!(x.cur(), 0);
    assert_eq!(x.hw(), &[DATA_DPL3, DATA_DPL3]);
    x.call(nr::SCHED_OP, &[yield_, 0, 0]);
    assert_eq!(x.hw(), &[CODE64_DPL3]);
}

#[test]
fn a_domain_that_ends_gives_up_its_ldt() {
    let mut x = fx(true);
    let a = x.ldt_page(0, 0, &[DATA_DPL3]);
    assert_eq!(x.set_ldt(x.ldt_va, 1), 0);
    // d1 powers off (reason 0 at the scratch page); d2 runs next, without LDT.
    x.put(x.scratch, &0u32.to_le_bytes());
    let shutdown = u64::from(xen_pv_abi::sched::SCHEDOP_SHUTDOWN);
    x.call(nr::SCHED_OP, &[shutdown, x.scratch, 0]);
    assert_eq!(x.cur(), 1);
    assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).ldt.entries(), 0);
    assert_eq!(x.hv.platform.ldt_loaded, 0);
    assert_eq!(x.hv.cpu.ldt, Some((1, VcpuId(0))));
    assert_eq!(x.hv.frames.owner(a), None);
}
