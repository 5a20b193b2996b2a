//! Host tests of `set_gdt` and `update_descriptor` on domains made by the real builder.

extern crate std;

use super::{DESCS_PER_FRAME, check_descriptor};
use crate::domain::elfnotes::test_elf::VIRT_BASE;
use crate::mmu::PageType;
use crate::mmu::guest::{copy_from_guest, copy_to_guest};
use crate::platform::{GuestFrame, MachineMemory, Resume};
use crate::testutil::started_test_domains;
use crate::testutil::{TestHv, hypercall, ret};
use std::vec::Vec;
use xen_pv_abi::VcpuId;
use xen_pv_abi::layout::{FIRST_RESERVED_GDT_ENTRY, PAGE_SIZE};
use xen_pv_abi::start_info::StartInfo;
use xen_pv_abi::{DomId, Errno, Mfn, nr};
use zerocopy::{FromBytes, IntoBytes};

const FRAMES: usize = 16384;
const PAGE: u64 = PAGE_SIZE as u64;
const EINVAL: i64 = Errno::EINVAL.to_ret();
const EFAULT: i64 = Errno::EFAULT.to_ret();

/// Flat data segment, DPL 3 (what a guest puts at index 1 and loads as 0x0b).
pub(crate) const DATA_DPL3: u64 = 0x00cf_f300_0000_ffff;
/// The same with DPL 0 (as Linux writes its kernel descriptors).
pub(crate) const DATA_DPL0: u64 = 0x00cf_9300_0000_ffff;
/// 64-bit code, DPL 0 and DPL 3.
const CODE64_DPL0: u64 = 0x00af_9b00_0000_ffff;
pub(crate) const CODE64_DPL3: u64 = 0x00af_fb00_0000_ffff;
/// Present system descriptors: available 64-bit TSS (type 9), LDT (type 2), call gate
/// (type 12, DPL 3, target 0xe033). No guest may have them.
pub(crate) const TSS: u64 = 0x0000_8900_0000_0067;
pub(crate) const LDT: u64 = 0x0000_8200_0000_0fff;
pub(crate) const CALL_GATE: u64 = 0x0000_ec00_e033_1000;

/// Running d1 (8 MiB), optionally d2; the frame holds d1's registers.
struct Fx {
    hv: TestHv,
    f: GuestFrame,
    si: StartInfo,
    /// A writable page of d1 (after the boot stack): the frame lists go there.
    scratch: u64,
}

fn fx(two: bool) -> Fx {
    let (hv, f) = started_test_domains(FRAMES, [0xabc_0063; 16], if two { 2 } else { 1 });
    let mut raw = [0u8; size_of::<StartInfo>()];
    copy_from_guest(&hv.mem, &hv.frames, hv.current_space(0), f.rsi, &mut raw).unwrap();
    let si = StartInfo::read_from_bytes(&raw).unwrap();
    let scratch = f.rsp + PAGE;
    Fx { hv, f, si, scratch }
}

impl Fx {
    fn call(&mut self, nr: u32, args: &[u64]) -> i64 {
        let r = hypercall(&mut self.hv, &mut self.f, u64::from(nr), args);
        assert!(matches!(r, Resume::Guest { .. }), "{r:?}");
        ret(&self.f)
    }
    /// `set_gdt` with `frames` written to the scratch page.
    fn set_gdt(&mut self, frames: &[Mfn], entries: u64) -> i64 {
        let list: Vec<u64> = frames.iter().map(|m| m.0).collect();
        let space = self.hv.current_space(0);
        copy_to_guest(
            &self.hv.mem,
            &self.hv.frames,
            space,
            self.scratch,
            list.as_bytes(),
        )
        .unwrap();
        self.call(nr::SET_GDT, &[self.scratch, entries, 0])
    }
    fn update_descriptor(&mut self, maddr: u64, desc: u64) -> i64 {
        self.call(nr::UPDATE_DESCRIPTOR, &[maddr, desc, 0])
    }
    /// d1's frame of pseudo-physical page `pfn`.
    fn mfn(&self, pfn: u64) -> Mfn {
        let mut b = [0u8; 8];
        let va = self.si.mfn_list + pfn * 8;
        let space = self.hv.current_space(0);
        copy_from_guest(&self.hv.mem, &self.hv.frames, space, va, &mut b).unwrap();
        Mfn(u64::from_le_bytes(b))
    }
    /// An unmapped, untyped frame of d1 (beyond the start-of-day mappings).
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
    fn desc_in(&self, mfn: Mfn, index: u64) -> u64 {
        self.hv.mem.read_u64(mfn.maddr() + index * 8).unwrap()
    }
    fn ty(&self, mfn: Mfn) -> (PageType, u32) {
        let st = self.hv.frames.type_state(mfn).unwrap();
        if st.count == 0 {
            (PageType::None, 0)
        } else {
            (st.ty, st.count)
        }
    }
    fn hw(&self, index: usize) -> u64 {
        self.hv.platform.gdt[index]
    }
}

#[test]
fn descriptor_check_follows_xen() {
    assert_eq!(check_descriptor(0), Ok(0));
    // Not present: anything goes (every use faults).
    assert_eq!(check_descriptor(TSS & !(1 << 47)), Ok(TSS & !(1 << 47)));
    assert_eq!(check_descriptor(DATA_DPL3), Ok(DATA_DPL3));
    assert_eq!(check_descriptor(CODE64_DPL3), Ok(CODE64_DPL3));
    // A ring-3 PV kernel: lower DPLs are raised to 3, not refused.
    assert_eq!(check_descriptor(DATA_DPL0), Ok(DATA_DPL3));
    assert_eq!(check_descriptor(CODE64_DPL0), Ok(CODE64_DPL3));
    let conforming_dpl1 = 0x00af_bf00_0000_ffff;
    assert_eq!(check_descriptor(conforming_dpl1), Ok(0x00af_ff00_0000_ffff));
    // System type 0 is harmless.
    assert_eq!(check_descriptor(1 << 47), Ok(1 << 47));
    for bad in [
        TSS,
        LDT,
        CALL_GATE,
        0x0000_8e00_e008_0000,
        0x0000_8b00_0000_0067,
    ] {
        assert_eq!(check_descriptor(bad), Err(Errno::EINVAL), "{bad:#x}");
    }
}

#[test]
fn valid_gdt_is_typed_fixed_up_and_loaded() {
    let mut x = fx(false);
    let (a, b) = (x.free_frame(0), x.free_frame(1));
    x.fill(a, &[0, DATA_DPL3, CODE64_DPL0]);
    x.fill(b, &[DATA_DPL3]);
    // 513 entries: both frames, only entry 0 of the second.
    assert_eq!(x.set_gdt(&[a, b], 513), 0);
    assert_eq!(x.ty(a), (PageType::SegDesc, 1));
    assert_eq!(x.ty(b), (PageType::SegDesc, 1));
    // The DPL-0 descriptor was raised to DPL 3 in the frame and in the live GDT.
    assert_eq!(x.desc_in(a, 2), CODE64_DPL3);
    assert_eq!((x.hw(0), x.hw(1), x.hw(2)), (0, DATA_DPL3, CODE64_DPL3));
    assert_eq!(x.hw(512), DATA_DPL3);
    assert_eq!(x.hw(513), 0);

    // Typed SegDesc, the frame cannot be mapped writable; read-only is fine (scratch's
    // va borrowed for it).
    let va = x.scratch;
    let scratch_pte = x.mfn_of_va(va).maddr() | 7;
    assert_eq!(
        x.call(nr::UPDATE_VA_MAPPING, &[va, a.maddr() | 7, 0]),
        Errno::EBUSY.to_ret()
    );
    assert_eq!(x.call(nr::UPDATE_VA_MAPPING, &[va, a.maddr() | 5, 0]), 0);
    assert_eq!(x.call(nr::UPDATE_VA_MAPPING, &[va, scratch_pte, 0]), 0);

    // A new, smaller GDT releases the old frames and clears the entries beyond it.
    let c = x.free_frame(2);
    x.fill(c, &[DATA_DPL3, DATA_DPL3]);
    assert_eq!(x.set_gdt(&[c], 1), 0);
    assert_eq!(x.ty(a), (PageType::None, 0));
    assert_eq!(x.ty(b), (PageType::None, 0));
    assert_eq!(x.ty(c), (PageType::SegDesc, 1));
    assert_eq!((x.hw(0), x.hw(1), x.hw(2), x.hw(512)), (DATA_DPL3, 0, 0, 0));
    // Released, `b` can be mapped writable again.
    assert_eq!(x.call(nr::UPDATE_VA_MAPPING, &[va, b.maddr() | 7, 0]), 0);
    assert_eq!(x.call(nr::UPDATE_VA_MAPPING, &[va, scratch_pte, 0]), 0);

    // No GDT at all.
    assert_eq!(x.set_gdt(&[], 0), 0);
    assert_eq!(x.ty(c), (PageType::None, 0));
    assert_eq!(x.hw(0), 0);
}

#[test]
fn the_same_frame_twice_takes_two_references() {
    let mut x = fx(false);
    let a = x.free_frame(0);
    x.fill(a, &[DATA_DPL3, DATA_DPL0]);
    assert_eq!(x.set_gdt(&[a, a], 1024), 0);
    assert_eq!(x.ty(a), (PageType::SegDesc, 2));
    assert_eq!((x.hw(1), x.hw(513)), (DATA_DPL3, DATA_DPL3));
    // A live update shows in both places.
    assert_eq!(x.update_descriptor(a.maddr() + 8, CODE64_DPL3), 0);
    assert_eq!((x.hw(1), x.hw(513)), (CODE64_DPL3, CODE64_DPL3));
    assert_eq!(x.set_gdt(&[], 0), 0);
    assert_eq!(x.ty(a), (PageType::None, 0));
}

#[test]
fn set_gdt_refuses_bad_sizes_frames_and_descriptors() {
    let mut x = fx(true);
    let good = x.free_frame(0);
    x.fill(good, &[0, DATA_DPL3]);

    // More entries than the guest owns; the frame count follows from the entries.
    let frames = [good; 15];
    assert_eq!(
        x.set_gdt(&frames, FIRST_RESERVED_GDT_ENTRY as u64 + 1),
        EINVAL
    );
    assert_eq!(x.ty(good), (PageType::None, 0));
    // Only the low 32 bits of `entries` count (C unsigned int): 2^32 + 2 is 2.
    assert_eq!(x.set_gdt(&[good], (1 << 32) + 2), 0);
    assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).gdt.entries(), 2);
    assert_eq!(x.set_gdt(&[], 0), 0);

    // A frame list the guest cannot read.
    assert_eq!(x.call(nr::SET_GDT, &[0xffff_8300_0000_0000, 1, 0]), EFAULT);
    assert_eq!(x.call(nr::SET_GDT, &[0, 1, 0]), EFAULT);

    // Another domain's frame, a frame of nobody, one beyond RAM.
    let foreign = (0..FRAMES as u64)
        .map(Mfn)
        .find(|&m| x.hv.frames.owner(m) == Some(DomId(2)))
        .unwrap();
    for bad in [foreign, Mfn(1), Mfn(1 << 40)] {
        assert_eq!(x.set_gdt(&[good, bad], 600), EINVAL, "{bad:?}");
        // The reference already taken on the good frame was given back.
        assert_eq!(x.ty(good), (PageType::None, 0));
    }

    // A page table (the bootstrap L4) and a writable-mapped frame.
    let l4 = x.mfn_of_va(x.si.pt_base);
    assert_eq!(x.set_gdt(&[l4], 1), EINVAL);
    let writable = x.mfn_of_va(x.scratch);
    assert_eq!(x.set_gdt(&[writable], 1), EINVAL);
    assert_eq!(x.ty(writable).0, PageType::Writable);

    // Refused descriptors anywhere in the frame (the whole frame is checked, not only
    // the entries in use).
    for bad in [TSS, LDT, CALL_GATE] {
        let f = x.free_frame(1);
        let mut descs = [0u64; 300];
        descs[1] = DATA_DPL3;
        descs[299] = bad;
        x.fill(f, &descs);
        assert_eq!(x.set_gdt(&[f], 2), EINVAL, "{bad:#x}");
        assert_eq!(x.ty(f), (PageType::None, 0));
        // Not typed, so it can still be mapped writable.
        assert_eq!(
            x.call(nr::UPDATE_VA_MAPPING, &[x.scratch, f.maddr() | 7, 0]),
            0
        );
        let back = writable.maddr() | 7;
        assert_eq!(x.call(nr::UPDATE_VA_MAPPING, &[x.scratch, back, 0]), 0);
    }
    // Nothing was loaded by the failed calls.
    assert!(x.hv.platform.gdt.iter().all(|&d| d == 0));
}

#[test]
fn update_descriptor_checks_and_updates_the_live_gdt() {
    let mut x = fx(true);
    let a = x.free_frame(0);
    x.fill(a, &[0, DATA_DPL3]);
    assert_eq!(x.set_gdt(&[a], 4), 0);

    // Live: entry 3 is in use.
    assert_eq!(x.update_descriptor(a.maddr() + 3 * 8, CODE64_DPL3), 0);
    assert_eq!((x.desc_in(a, 3), x.hw(3)), (CODE64_DPL3, CODE64_DPL3));
    // DPL 0 is raised to 3, in the frame and live.
    assert_eq!(x.update_descriptor(a.maddr() + 2 * 8, DATA_DPL0), 0);
    assert_eq!((x.desc_in(a, 2), x.hw(2)), (DATA_DPL3, DATA_DPL3));
    // In the frame but beyond `entries`: written, not loaded.
    assert_eq!(x.update_descriptor(a.maddr() + 10 * 8, DATA_DPL3), 0);
    assert_eq!((x.desc_in(a, 10), x.hw(10)), (DATA_DPL3, 0));

    // Refused descriptors and misaligned addresses change nothing.
    for bad in [TSS, LDT, CALL_GATE] {
        assert_eq!(x.update_descriptor(a.maddr() + 8, bad), EINVAL);
    }
    assert_eq!(x.update_descriptor(a.maddr() + 4, DATA_DPL3), EINVAL);
    assert_eq!(x.update_descriptor(a.maddr() + 9, 0), EINVAL);
    assert_eq!((x.desc_in(a, 1), x.hw(1)), (DATA_DPL3, DATA_DPL3));

    // Frames that are not ours, or page tables.
    let foreign = (0..FRAMES as u64)
        .map(Mfn)
        .find(|&m| x.hv.frames.owner(m) == Some(DomId(2)))
        .unwrap();
    let l4 = x.mfn_of_va(x.si.pt_base);
    let l4_entry = x.hv.mem.read_u64(l4.maddr()).unwrap();
    let foreign_word = x.hv.mem.read_u64(foreign.maddr()).unwrap();
    for bad in [foreign.maddr(), PAGE, 1 << 52, !7, l4.maddr()] {
        assert_eq!(x.update_descriptor(bad, DATA_DPL3), EINVAL, "{bad:#x}");
    }
    assert_eq!(x.hv.mem.read_u64(l4.maddr()).unwrap(), l4_entry);
    assert_eq!(x.hv.mem.read_u64(foreign.maddr()).unwrap(), foreign_word);

    // An untyped frame and a writable-mapped one take descriptors too (Xen allows
    // both: they are checked again when the frame becomes a GDT frame).
    let plain = x.free_frame(1);
    assert_eq!(x.update_descriptor(plain.maddr() + 16, DATA_DPL0), 0);
    assert_eq!(x.desc_in(plain, 2), DATA_DPL3);
    let writable = x.mfn_of_va(x.scratch);
    assert_eq!(x.update_descriptor(writable.maddr() + 2048, DATA_DPL3), 0);
    assert_eq!(
        x.hv.mem.read_u64(writable.maddr() + 2048).unwrap(),
        DATA_DPL3
    );
    assert_eq!(x.hw(2), DATA_DPL3, "live GDT untouched by writes elsewhere");
}

#[test]
fn each_domain_runs_with_its_own_descriptors() {
    let mut x = fx(true);
    let a = x.free_frame(0);
    x.fill(a, &[0, DATA_DPL3, CODE64_DPL3]);
    assert_eq!(x.set_gdt(&[a], 3), 0);
    assert_eq!(x.hw(2), CODE64_DPL3);

    // Yield to d2, which has no GDT: d1's entries are gone.
    let yield_ = u64::from(xen_pv_abi::sched::SCHEDOP_YIELD);
    x.call(nr::SCHED_OP, &[yield_, 0, 0]);
    assert_eq!(x.hv.cpu.current, Some(1));
    assert_eq!((x.hw(1), x.hw(2)), (0, 0));
    // Back to d1: restored.
    x.call(nr::SCHED_OP, &[yield_, 0, 0]);
    assert_eq!(x.hv.cpu.current, Some(0));
    assert_eq!((x.hw(1), x.hw(2)), (DATA_DPL3, CODE64_DPL3));

    // And away again: d2 never sees them.
    x.call(nr::SCHED_OP, &[yield_, 0, 0]);
    assert_eq!(x.hv.cpu.current, Some(1));
    assert!(x.hv.platform.gdt.iter().all(|&d| d == 0));
}

#[test]
fn a_gdt_frame_cannot_become_a_page_table() {
    let mut x = fx(false);
    // All zero: a valid (empty) L1 as much as a valid GDT frame.
    let z = x.free_frame(0);
    x.fill(z, &[]);
    let pin = xen_pv_abi::mmu::MmuextOp {
        cmd: xen_pv_abi::mmu::MMUEXT_PIN_L1_TABLE,
        pad: 0,
        arg1: z.0,
        arg2: 0,
    };
    let op_va = x.scratch + 2048;
    let space = x.hv.current_space(0);
    copy_to_guest(&x.hv.mem, &x.hv.frames, space, op_va, pin.as_bytes()).unwrap();
    let pin_it = [op_va, 1, 0, u64::from(DomId::SELF.0)];

    assert_eq!(x.set_gdt(&[z], 1), 0);
    assert_eq!(x.call(nr::MMUEXT_OP, &pin_it), EINVAL);
    // Released from the GDT, it can.
    assert_eq!(x.set_gdt(&[], 0), 0);
    assert_eq!(x.call(nr::MMUEXT_OP, &pin_it), 0);
    assert_eq!(x.ty(z), (PageType::L1, 1));
    // And a pinned page table cannot become a GDT frame.
    assert_eq!(x.set_gdt(&[z], 1), EINVAL);
    assert_eq!(x.ty(z), (PageType::L1, 1));
}
