//! Host tests of the PV MMU hypercalls on a domain made by the real builder.

extern crate std;

use super::MMU_UPDATE_PREEMPTED;
use crate::domain::elfnotes::test_elf::VIRT_BASE;
use crate::mmu::PageType;
use crate::mmu::guest::{GuestSpace, copy_from_guest, copy_to_guest};
use crate::platform::{GuestFrame, MachineMemory, Resume};
use crate::testutil::started_test_domains;
use crate::testutil::{TestHv, hypercall};
use std::vec::Vec;
use xen_pv_abi::VcpuId;
use xen_pv_abi::layout::{HYPERVISOR_VIRT_START, MACH2PHYS_VIRT_START, PAGE_SIZE};
use xen_pv_abi::mmu::*;
use xen_pv_abi::start_info::StartInfo;
use xen_pv_abi::{DomId, Errno, Mfn, nr};
use zerocopy::{FromBytes, IntoBytes};

type Hv = TestHv;

const FRAMES: usize = 16384;
const PAGE: u64 = PAGE_SIZE as u64;
const HV_SLOTS: [u64; 16] = [0xabc_0063; 16];

/// A running domain d1 (8 MiB) and its start_info; optionally a second domain d2.
struct Fx {
    hv: Hv,
    f: GuestFrame,
    si: StartInfo,
    /// A writable scratch page of d1 (in the padding after the boot stack).
    scratch: u64,
}

fn fx(two: bool) -> Fx {
    let (hv, f) = started_test_domains(FRAMES, HV_SLOTS, if two { 2 } else { 1 });
    let mut raw = [0u8; size_of::<StartInfo>()];
    let space = hv.current_space(0);
    copy_from_guest(&hv.mem, &hv.frames, space, f.rsi, &mut raw).unwrap();
    let si = StartInfo::read_from_bytes(&raw).unwrap();
    let scratch = f.rsp + PAGE;
    Fx { hv, f, si, scratch }
}

impl Fx {
    fn call(&mut self, nr: u32, args: [u64; 4]) -> i64 {
        let r = hypercall(&mut self.hv, &mut self.f, u64::from(nr), &args);
        assert!(matches!(r, Resume::Guest { .. }), "{r:?}");
        self.f.rax as i64
    }
    fn space(&self) -> GuestSpace {
        self.hv.current_space(0)
    }
    fn put(&self, va: u64, bytes: &[u8]) {
        copy_to_guest(&self.hv.mem, &self.hv.frames, self.space(), va, bytes).unwrap();
    }
    fn get_u32(&self, va: u64) -> u32 {
        let mut b = [0u8; 4];
        copy_from_guest(&self.hv.mem, &self.hv.frames, self.space(), va, &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    fn mfn(&self, pfn: u64) -> Mfn {
        let mut b = [0u8; 8];
        let va = self.si.mfn_list + pfn * 8;
        copy_from_guest(&self.hv.mem, &self.hv.frames, self.space(), va, &mut b).unwrap();
        Mfn(u64::from_le_bytes(b))
    }
    fn pfn_of_va(va: u64) -> u64 {
        (va - VIRT_BASE) / PAGE
    }
    fn ty(&self, mfn: Mfn) -> (PageType, u32) {
        let st = self.hv.frames.type_state(mfn).unwrap();
        if st.count == 0 {
            (PageType::None, 0)
        } else {
            (st.ty, st.count)
        }
    }
    fn mmu_update(&mut self, reqs: &[MmuUpdate], pdone: u64) -> i64 {
        self.put(self.scratch, reqs.as_bytes());
        let fd = u64::from(DomId::SELF.0);
        self.call(nr::MMU_UPDATE, [self.scratch, reqs.len() as u64, pdone, fd])
    }
    fn mmuext(&mut self, ops: &[MmuextOp], pdone: u64) -> i64 {
        self.put(self.scratch, ops.as_bytes());
        let fd = u64::from(DomId::SELF.0);
        self.call(nr::MMUEXT_OP, [self.scratch, ops.len() as u64, pdone, fd])
    }
    /// Machine address of the bootstrap L1 entry that maps `va`.
    fn l1e(&self, va: u64) -> u64 {
        let nr_l1_before = Self::pfn_of_va(va) / 512;
        // Tables: L4, L3, L2, then L1s (the region is < 1 GiB).
        let l1 = self.mfn(Self::pfn_of_va(self.si.pt_base) + 3 + nr_l1_before);
        l1.maddr() + ((va >> 12) & 511) * 8
    }
}

fn ext(cmd: u32, arg1: u64) -> MmuextOp {
    MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2: 0,
    }
}

#[test]
fn machphys_and_normal_updates_with_pdone() {
    let mut x = fx(false);
    let pdone = x.scratch + 2048;
    let data_pfn = 1500; // beyond the mapped region: an ordinary unmapped frame
    let data = x.mfn(data_pfn);
    let va = x.scratch + 8 * PAGE;
    let flushes = x.hv.platform.tlb_flushes;
    let reqs = [
        MmuUpdate {
            ptr: data.maddr() | MMU_MACHPHYS_UPDATE,
            val: 77,
        },
        MmuUpdate {
            ptr: x.l1e(va) | MMU_NORMAL_PT_UPDATE,
            val: data.maddr() | 0x3, // no USER: forced on
        },
    ];
    assert_eq!(x.mmu_update(&reqs, pdone), 0);
    assert_eq!(x.get_u32(pdone), 2);
    assert_eq!(x.hv.frames.m2p(data), Some(77));
    assert_eq!(x.hv.mem.read_u64(x.l1e(va)).unwrap(), data.maddr() | 0x7);
    assert_eq!(x.ty(data), (PageType::Writable, 1));
    assert!(x.hv.platform.tlb_flushes > flushes, "TLB flushed");
    // The new mapping works through the guest's own tables.
    x.put(va, b"mapped");
    // count 0 is fine.
    assert_eq!(x.mmu_update(&[], 0), 0);
}

#[test]
fn hostile_mmu_updates_are_refused() {
    let mut x = fx(true);
    let pdone = x.scratch + 2048;
    let va = x.scratch + 8 * PAGE;
    let l1e = x.l1e(va);
    let pt_frame = x.mfn(Fx::pfn_of_va(x.si.pt_base) + 3);
    let other_dom_frame = Mfn::containing(x.hv.domains[1].vcpu(VcpuId(0)).cr3);
    let hv_frame = Mfn(0); // never given to a domain
    let l4 = x.hv.domains[0].vcpu(VcpuId(0)).cr3;
    let cases = [
        (
            "write-map a page table",
            l1e,
            pt_frame.maddr() | 7,
            Errno::EBUSY,
        ),
        (
            "map another domain's frame",
            l1e,
            other_dom_frame.maddr() | 5,
            Errno::EBUSY,
        ),
        (
            "map a hypervisor frame",
            l1e,
            hv_frame.maddr() | 5,
            Errno::EBUSY,
        ),
        ("reserved L4 slot", l4 + 256 * 8, 0, Errno::EINVAL),
        (
            "reserved L4 slot (m2p)",
            l4 + 257 * 8,
            0x1000 | 7,
            Errno::EINVAL,
        ),
        (
            "PCD mapping",
            l1e,
            x.mfn(1500).maddr() | 7 | 0x10,
            Errno::EINVAL,
        ),
        (
            "another domain's table",
            other_dom_frame.maddr(),
            0,
            Errno::EINVAL,
        ),
        ("unknown command", l1e | 5, 0, Errno::ENOSYS),
        (
            "m2p of a foreign frame",
            other_dom_frame.maddr() | 1,
            0,
            Errno::EINVAL,
        ),
    ];
    for (what, ptr, val, want) in cases {
        let before = x.hv.mem.read_u64(ptr & !7).unwrap();
        let ok = MmuUpdate {
            ptr: x.mfn(1500).maddr() | MMU_MACHPHYS_UPDATE,
            val: 1500,
        };
        let r = x.mmu_update(&[ok, MmuUpdate { ptr, val }], pdone);
        assert_eq!(r, want.to_ret(), "{what}");
        assert_eq!(x.get_u32(pdone), 1, "{what}: one element done");
        assert_eq!(x.hv.mem.read_u64(ptr & !7).unwrap(), before, "{what}");
    }
    assert_eq!(x.hv.mem.read_u64(l4 + 256 * 8).unwrap(), HV_SLOTS[0]);
    // Pointers into the hypervisor, and a huge count running off the mapped memory.
    let fd = u64::from(DomId::SELF.0);
    let r = x.call(nr::MMU_UPDATE, [HYPERVISOR_VIRT_START, 1, pdone, fd]);
    assert_eq!(r, Errno::EFAULT.to_ret());
    let r = x.call(nr::MMU_UPDATE, [0xffff_8300_0010_0000, 4, 0, fd]);
    assert_eq!(r, Errno::EFAULT.to_ret());
    // 3 valid entries at the end of the mapped region, then unmapped memory.
    let end = VIRT_BASE + 1024 * PAGE;
    let ok = MmuUpdate {
        ptr: x.mfn(1500).maddr() | MMU_MACHPHYS_UPDATE,
        val: 1500,
    };
    x.put(end - 48, [ok, ok, ok].as_bytes());
    let r = x.call(
        nr::MMU_UPDATE,
        [end - 48, u64::from(u32::MAX >> 1), pdone, fd],
    );
    assert_eq!(r, Errno::EFAULT.to_ret());
    assert_eq!(x.get_u32(pdone), 3);
    // Domain 2 is untouched and domain 1 still runs.
    assert!(x.hv.domains.iter().all(|d| d.is_runnable()));
}

/// `foreigndom` as Xen 4.17's `get_pg_owner` and XSM default: a domU naming another
/// domain gets -EPERM (mmuext_op at once, mmu_update at its first request), its own
/// number or an unknown domain -ESRCH; the control domain keeps -ESRCH (its foreign
/// mappings are not implemented).
#[test]
fn foreign_owners_are_refused_as_xen() {
    let mut x = fx(true);
    let pdone = x.scratch + PAGE - 8;
    let m2p = MmuUpdate {
        ptr: x.mfn(1500).maddr() | MMU_MACHPHYS_UPDATE,
        val: 1500,
    };
    let bad_cmd = MmuUpdate { ptr: 5, val: 0 };
    let list = x.scratch;
    let update = |x: &mut Fx, req: MmuUpdate, count: u64, fd: u64| {
        x.put(list, req.as_bytes());
        x.put(pdone, &77u32.to_le_bytes());
        let r = x.call(nr::MMU_UPDATE, [list, count, pdone, fd]);
        (r, x.get_u32(pdone))
    };
    let me = 1u64;
    let other = 2u64;
    let self_ = u64::from(DomId::SELF.0);
    let (eperm, esrch) = (Errno::EPERM.to_ret(), Errno::ESRCH.to_ret());
    // mmu_update: -EPERM at the first request (pdone 0), 0 for an empty batch, the
    // command read first (-ENOSYS), an unreadable request -EFAULT.
    assert_eq!(update(&mut x, m2p, 1, other), (eperm, 0));
    assert_eq!(update(&mut x, m2p, 0, other), (0, 0));
    assert_eq!(update(&mut x, m2p, 1, u64::from(DomId::XEN.0)), (eperm, 0));
    assert_eq!(
        update(&mut x, bad_cmd, 1, other),
        (Errno::ENOSYS.to_ret(), 0)
    );
    let r = x.call(nr::MMU_UPDATE, [HYPERVISOR_VIRT_START, 1, 0, other]);
    assert_eq!(r, Errno::EFAULT.to_ret());
    // Another page-table owner (PFD + 1 in bits 31:16) too; the caller's own is fine.
    assert_eq!(update(&mut x, m2p, 1, (other + 1) << 16 | self_).0, eperm);
    assert_eq!(update(&mut x, m2p, 1, (me + 1) << 16 | self_), (0, 1));
    // -ESRCH: the caller's own number, unknown domains, DOMID_IO (not implemented).
    for fd in [
        me,
        9,
        u64::from(DomId::IO.0),
        10 << 16 | self_,
        10 << 16 | other,
    ] {
        assert_eq!(update(&mut x, m2p, 1, fd).0, esrch, "{fd:#x}");
    }
    // mmuext_op reads only bits 15:0 and refuses another owner before any op.
    x.put(list, ext(MMUEXT_TLB_FLUSH_LOCAL, 0).as_bytes());
    let ext_call = |x: &mut Fx, count: u64, fd: u64| x.call(nr::MMUEXT_OP, [list, count, 0, fd]);
    assert_eq!(ext_call(&mut x, 1, 3 << 16 | self_), 0);
    for fd in [other, u64::from(DomId::IO.0), u64::from(DomId::XEN.0)] {
        assert_eq!(ext_call(&mut x, 1, fd), eperm, "{fd:#x}");
        assert_eq!(ext_call(&mut x, 0, fd), eperm, "{fd:#x}");
    }
    assert_eq!(ext_call(&mut x, 1, me), esrch);
    assert_eq!(ext_call(&mut x, 1, 9), esrch);
    // The control domain: unchanged -ESRCH for another domain.
    x.hv.domains[0].dom0 = true;
    assert_eq!(update(&mut x, m2p, 1, other).0, esrch);
    assert_eq!(ext_call(&mut x, 1, other), esrch);
    assert!(x.hv.domains.iter().all(|d| d.is_runnable()));
}

#[test]
fn long_batches_continue() {
    let mut x = fx(false);
    let pdone = x.scratch + PAGE - 8;
    let reqs: Vec<MmuUpdate> = (0..600)
        .map(|i| MmuUpdate {
            ptr: x.mfn(1500 + i % 4).maddr() | MMU_MACHPHYS_UPDATE,
            val: i,
        })
        .collect();
    let rip = x.f.rip;
    x.put(x.scratch, reqs.as_bytes()); // 9600 bytes: scratch + 2 more pages
    let fd = u64::from(DomId::SELF.0);
    x.call(nr::MMU_UPDATE, [x.scratch, 600, pdone, fd]);
    // A continuation: the syscall again, with what remains.
    assert_eq!(x.f.rip, rip - 2);
    assert_eq!(x.f.rax, u64::from(nr::MMU_UPDATE));
    assert_eq!(x.f.rdi, x.scratch + 512 * 16);
    assert_eq!(x.f.rsi, u64::from(88 | MMU_UPDATE_PREEMPTED));
    assert_eq!(x.get_u32(pdone), 512);
    x.f.rip += 2;
    let (a, b, c, d) = (x.f.rdi, x.f.rsi, x.f.rdx, x.f.r10);
    assert_eq!(x.call(nr::MMU_UPDATE, [a, b, c, d]), 0);
    assert_eq!(x.get_u32(pdone), 600);
    assert_eq!(x.hv.frames.m2p(x.mfn(1500)), Some(596));
}

/// GRUB's switch (grub-pv-guest.md §2.4): new tables built in free frames, then
/// PIN_L4(new), NEW_BASEPTR(new), UNPIN(old) in one batch, then the old tables are
/// mapped writable.
#[test]
fn grub_page_table_switch() {
    let mut x = fx(false);
    let old_l4 = Mfn::containing(x.hv.domains[0].vcpu(VcpuId(0)).cr3);
    let pt_pfn = Fx::pfn_of_va(x.si.pt_base);
    let nr_pt = x.si.nr_pt_frames;
    let old_tables: Vec<Mfn> = (pt_pfn..pt_pfn + nr_pt).map(|p| x.mfn(p)).collect();
    // New tables in pfns 1600.. (unmapped, untyped): L4, L3, L2, two L1s, mapping the
    // first 1024 pfns at VIRT_BASE like the bootstrap, every table page read-only.
    let new: Vec<Mfn> = (1600..1605).map(|p| x.mfn(p)).collect();
    let mem = &x.hv.mem;
    for m in &new {
        mem.fill(m.maddr(), 0, PAGE_SIZE).unwrap();
    }
    let slot = |va: u64, level: u32| ((va >> (12 + 9 * (level - 1))) & 511) * 8;
    mem.write_u64(new[0].maddr() + slot(VIRT_BASE, 4), new[1].maddr() | 7)
        .unwrap();
    mem.write_u64(new[1].maddr() + slot(VIRT_BASE, 3), new[2].maddr() | 7)
        .unwrap();
    for i in 0..2u64 {
        let va = VIRT_BASE + i * (2 << 20);
        mem.write_u64(
            new[2].maddr() + slot(va, 2),
            new[3 + i as usize].maddr() | 7,
        )
        .unwrap();
    }
    for pfn in 0..1024u64 {
        let mfn = x.mfn(pfn);
        let ro = old_tables.contains(&mfn);
        let flags = if ro { 5 } else { 7 };
        let l1 = new[3 + (pfn / 512) as usize];
        mem.write_u64(l1.maddr() + (pfn % 512) * 8, mfn.maddr() | flags)
            .unwrap();
    }
    let ops = [
        ext(MMUEXT_PIN_L4_TABLE, new[0].0),
        ext(MMUEXT_NEW_BASEPTR, new[0].0),
        ext(MMUEXT_UNPIN_TABLE, old_l4.0),
    ];
    assert_eq!(x.mmuext(&ops, 0), 0);
    assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).cr3, new[0].maddr());
    assert_eq!(
        x.hv.resume_current(),
        Resume::Guest {
            cr3: new[0].maddr()
        }
    );
    assert_eq!(x.ty(new[0]), (PageType::L4, 2));
    for m in &old_tables {
        assert_eq!(x.ty(*m), (PageType::None, 0), "old table {m:?} released");
    }
    // Hypervisor slots were filled into the new L4.
    assert_eq!(
        x.hv.mem.read_u64(new[0].maddr() + 256 * 8).unwrap(),
        HV_SLOTS[0]
    );
    // The old table pages can now be mapped writable (update_va_mapping).
    for (i, m) in old_tables.iter().enumerate() {
        let va = x.si.pt_base + i as u64 * PAGE;
        let r = x.call(nr::UPDATE_VA_MAPPING, [va, m.maddr() | 7, UVMF_INVLPG, 0]);
        assert_eq!(r, 0, "old table {i}");
        x.put(va, b"heap");
    }
    // But the new ones cannot.
    let va = VIRT_BASE + 1600 * PAGE; // not mapped by the new L1s either
    let r = x.call(nr::UPDATE_VA_MAPPING, [va, new[3].maddr() | 7, 0, 0]);
    assert_eq!(r, Errno::EINVAL.to_ret(), "no L1 maps that VA");
    let r = x.call(nr::UPDATE_VA_MAPPING, [x.scratch, new[3].maddr() | 7, 0, 0]);
    assert_eq!(r, Errno::EBUSY.to_ret());
}

#[test]
fn hostile_mmuext_ops_are_refused() {
    let mut x = fx(true);
    let cur = Mfn::containing(x.hv.domains[0].vcpu(VcpuId(0)).cr3);
    let free = x.mfn(1600);
    let data = x.mfn(Fx::pfn_of_va(x.scratch)); // mapped writable
    let foreign = Mfn::containing(x.hv.domains[1].vcpu(VcpuId(0)).cr3);
    // A table that maps itself writable.
    x.hv.mem.fill(free.maddr(), 0, PAGE_SIZE).unwrap();
    x.hv.mem.write_u64(free.maddr(), free.maddr() | 7).unwrap();
    let pdone = x.scratch + 2048;
    for (what, op, want) in [
        (
            "pin self-writable L1",
            ext(MMUEXT_PIN_L1_TABLE, free.0),
            Errno::EBUSY,
        ),
        (
            "CR3 = writable frame",
            ext(MMUEXT_NEW_BASEPTR, data.0),
            Errno::EINVAL,
        ),
        (
            "CR3 = self-writable",
            ext(MMUEXT_NEW_BASEPTR, free.0),
            Errno::EINVAL,
        ),
        (
            "CR3 = foreign L4",
            ext(MMUEXT_NEW_BASEPTR, foreign.0),
            Errno::EINVAL,
        ),
        (
            "user CR3 = foreign",
            ext(MMUEXT_NEW_USER_BASEPTR, foreign.0),
            Errno::EINVAL,
        ),
        (
            "pin foreign",
            ext(MMUEXT_PIN_L4_TABLE, foreign.0),
            Errno::EINVAL,
        ),
        (
            "pin hypervisor frame",
            ext(MMUEXT_PIN_L1_TABLE, 0),
            Errno::EINVAL,
        ),
        (
            "pin beyond RAM",
            ext(MMUEXT_PIN_L1_TABLE, u64::MAX),
            Errno::EINVAL,
        ),
        ("pin twice", ext(MMUEXT_PIN_L4_TABLE, cur.0), Errno::EINVAL),
        (
            "unpin unpinned",
            ext(MMUEXT_UNPIN_TABLE, data.0),
            Errno::EINVAL,
        ),
        (
            "clear a page table",
            ext(MMUEXT_CLEAR_PAGE, cur.0),
            Errno::EINVAL,
        ),
        (
            "clear foreign",
            ext(MMUEXT_CLEAR_PAGE, foreign.0),
            Errno::EINVAL,
        ),
        (
            "copy onto a table",
            MmuextOp {
                cmd: MMUEXT_COPY_PAGE,
                pad: 0,
                arg1: cur.0,
                arg2: data.0,
            },
            Errno::EINVAL,
        ),
        (
            "copy from foreign",
            MmuextOp {
                cmd: MMUEXT_COPY_PAGE,
                pad: 0,
                arg1: free.0,
                arg2: foreign.0,
            },
            Errno::EINVAL,
        ),
        (
            "LDT unaligned",
            MmuextOp {
                cmd: MMUEXT_SET_LDT,
                pad: 0,
                arg1: 0x1008,
                arg2: 1,
            },
            Errno::EINVAL,
        ),
        (
            "LDT in hypervisor",
            MmuextOp {
                cmd: MMUEXT_SET_LDT,
                pad: 0,
                arg1: HYPERVISOR_VIRT_START,
                arg2: 1,
            },
            Errno::EINVAL,
        ),
        (
            "LDT too big",
            MmuextOp {
                cmd: MMUEXT_SET_LDT,
                pad: 0,
                arg1: 0x1000,
                arg2: 8193,
            },
            Errno::EINVAL,
        ),
        (
            "flush cache (domU)",
            ext(MMUEXT_FLUSH_CACHE, 0),
            Errno::EACCES,
        ),
        ("unknown", ext(14, 0), Errno::ENOSYS),
        (
            "flush multi, bad mask",
            MmuextOp {
                cmd: MMUEXT_TLB_FLUSH_MULTI,
                pad: 0,
                arg1: 0,
                arg2: HYPERVISOR_VIRT_START,
            },
            // Xen 4.17: vcpumask_to_pcpumask failing is -EINVAL in mmuext_op.
            Errno::EINVAL,
        ),
    ] {
        let r = x.mmuext(&[ext(MMUEXT_TLB_FLUSH_LOCAL, 0), op], pdone);
        assert_eq!(r, want.to_ret(), "{what}");
        assert_eq!(x.get_u32(pdone), 1, "{what}");
        assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).cr3, cur.maddr(), "{what}");
    }
    assert_eq!(x.ty(free), (PageType::None, 0));
    assert_eq!(x.ty(cur), (PageType::L4, 2));

    // Unpinning the live root is accepted (as Xen), but it stays a validated L4: it still
    // cannot be mapped writable, and pinning it again works.
    assert_eq!(x.mmuext(&[ext(MMUEXT_UNPIN_TABLE, cur.0)], 0), 0);
    assert_eq!(x.ty(cur), (PageType::L4, 1));
    let r = x.call(nr::UPDATE_VA_MAPPING, [x.scratch, cur.maddr() | 7, 0, 0]);
    assert_eq!(r, Errno::EBUSY.to_ret());
    assert_eq!(x.mmuext(&[ext(MMUEXT_PIN_L4_TABLE, cur.0)], 0), 0);

    // The good forms.
    let ok = [
        ext(MMUEXT_CLEAR_PAGE, free.0),
        MmuextOp {
            cmd: MMUEXT_COPY_PAGE,
            pad: 0,
            arg1: free.0,
            arg2: data.0,
        },
        MmuextOp {
            cmd: MMUEXT_SET_LDT,
            pad: 0,
            // No LDT (hypercall/ldt_tests.rs sets real ones).
            arg1: 0x10000,
            arg2: 0,
        },
        ext(MMUEXT_INVLPG_LOCAL, x.scratch),
        ext(MMUEXT_TLB_FLUSH_ALL, 0),
        ext(MMUEXT_NEW_USER_BASEPTR, 0),
    ];
    assert_eq!(x.mmuext(&ok, 0), 0);
    assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).ldt.entries(), 0);
    assert!(x.hv.platform.invlpgs.contains(&x.scratch));
    assert!(x.hv.domains.iter().all(|d| d.is_runnable()));
}

#[test]
fn user_baseptr_takes_and_drops_a_root_reference() {
    let mut x = fx(false);
    let cur = Mfn::containing(x.hv.domains[0].vcpu(VcpuId(0)).cr3);
    assert_eq!(x.mmuext(&[ext(MMUEXT_NEW_USER_BASEPTR, cur.0)], 0), 0);
    assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).user_cr3, cur.maddr());
    assert_eq!(x.ty(cur), (PageType::L4, 3));
    assert_eq!(x.mmuext(&[ext(MMUEXT_NEW_USER_BASEPTR, 0)], 0), 0);
    assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).user_cr3, 0);
    assert_eq!(x.ty(cur), (PageType::L4, 2));
}

#[test]
fn multicall_runs_each_entry() {
    let mut x = fx(false);
    let list = x.scratch + 1024;
    let data = x.mfn(1500);
    let va = x.scratch + 8 * PAGE;
    let entries = [
        MulticallEntry {
            op: nr::UPDATE_VA_MAPPING.into(),
            args: [va, data.maddr() | 7, UVMF_INVLPG, 0, 0, 0],
            ..Default::default()
        },
        MulticallEntry {
            op: nr::XEN_VERSION.into(),
            ..Default::default()
        },
        MulticallEntry {
            op: nr::MULTICALL.into(),
            ..Default::default()
        },
        MulticallEntry {
            op: 99,
            ..Default::default()
        },
    ];
    x.put(list, entries.as_bytes());
    assert_eq!(x.call(nr::MULTICALL, [list, 4, 0, 0]), 0);
    let results: Vec<i64> = (0..4)
        .map(|i| {
            let mut b = [0u8; 8];
            let at = list + i * 64 + 8;
            copy_from_guest(&x.hv.mem, &x.hv.frames, x.space(), at, &mut b).unwrap();
            i64::from_le_bytes(b)
        })
        .collect();
    assert_eq!(
        results,
        [
            0,
            (4 << 16) | 17,
            Errno::EINVAL.to_ret(),
            Errno::ENOSYS.to_ret()
        ]
    );
    assert_eq!(x.ty(data), (PageType::Writable, 1));
    assert_eq!(
        x.call(nr::MULTICALL, [HYPERVISOR_VIRT_START, 1, 0, 0]),
        Errno::EFAULT.to_ret()
    );
}

#[test]
fn memory_op_and_vm_assist() {
    let mut x = fx(false);
    let arg = x.scratch;
    x.put(arg, &DomId::SELF.0.to_le_bytes());
    assert_eq!(
        x.call(nr::MEMORY_OP, [XENMEM_CURRENT_RESERVATION, arg, 0, 0]),
        2048
    );
    assert_eq!(
        x.call(nr::MEMORY_OP, [XENMEM_MAXIMUM_RESERVATION, arg, 0, 0]),
        2048
    );
    x.put(arg, &7u16.to_le_bytes());
    let r = x.call(nr::MEMORY_OP, [XENMEM_CURRENT_RESERVATION, arg, 0, 0]);
    assert_eq!(r, Errno::ESRCH.to_ret());
    let r = x.call(nr::MEMORY_OP, [XENMEM_MAXIMUM_RAM_PAGE, 0, 0, 0]);
    assert_eq!(r, FRAMES as i64 - 1);
    let r = x.call(nr::MEMORY_OP, [XENMEM_MEMORY_MAP, arg, 0, 0]);
    assert_eq!(r, Errno::ENOSYS.to_ret());
    assert_eq!(
        x.call(nr::MEMORY_OP, [XENMEM_MACHPHYS_MAPPING, arg, 0, 0]),
        0
    );
    let mut b = [0u8; 24];
    copy_from_guest(&x.hv.mem, &x.hv.frames, x.space(), arg, &mut b).unwrap();
    let map = MachphysMapping::read_from_bytes(&b).unwrap();
    assert_eq!(map.v_start, MACH2PHYS_VIRT_START);
    let r = x.call(
        nr::MEMORY_OP,
        [XENMEM_MACHPHYS_MAPPING, HYPERVISOR_VIRT_START, 0, 0],
    );
    assert_eq!(r, Errno::EFAULT.to_ret());
    assert_eq!(
        x.call(nr::MEMORY_OP, [6, arg, 0, 0]),
        Errno::ENOSYS.to_ret()
    );

    // vm_assist as Xen 4.17 for a 64-bit PV domain, but for the two assists that would
    // need work done here.
    let va = |x: &mut Fx, cmd: u32, ty: u64| x.call(nr::VM_ASSIST, [cmd.into(), ty, 0, 0]);
    let (enable, disable) = (VMASST_CMD_ENABLE, VMASST_CMD_DISABLE);
    let accepted = [0u32, 1, 3, 4, 5];
    for ty in accepted {
        assert_eq!(va(&mut x, enable, ty.into()), 0, "{ty}");
    }
    assert_eq!(x.hv.domains[0].vm_assist, 0b11_1011);
    for ty in [VMASST_TYPE_WRITABLE_PAGETABLES, VMASST_TYPE_M2P_STRICT] {
        assert_eq!(
            va(&mut x, enable, ty.into()),
            Errno::EINVAL.to_ret(),
            "{ty}"
        );
        assert_eq!(va(&mut x, disable, ty.into()), 0, "{ty}");
    }
    assert_eq!(x.hv.domains[0].vm_assist, 0b11_1011);
    assert_eq!(va(&mut x, disable, 4), 0);
    assert_eq!(x.hv.domains[0].vm_assist, 0b10_1011);
    // Unknown types are -EINVAL before the command is looked at; then -ENOSYS.
    for ty in [6u64, 31, 33, 64, 77, u64::from(u32::MAX)] {
        assert_eq!(va(&mut x, enable, ty), Errno::EINVAL.to_ret(), "{ty}");
        assert_eq!(va(&mut x, disable, ty), Errno::EINVAL.to_ret(), "{ty}");
        assert_eq!(va(&mut x, 9, ty), Errno::EINVAL.to_ret(), "{ty}");
    }
    assert_eq!(va(&mut x, 9, 2), Errno::ENOSYS.to_ret());
    assert_eq!(va(&mut x, 9, 5), Errno::ENOSYS.to_ret());
    assert_eq!(x.hv.domains[0].vm_assist, 0b10_1011);
}

// ---- preemptible validation of large hierarchies ----------------------------------------

/// Extra L1 tables of [`big_tree`]: with the other five tables more than
/// `WORK_BUDGET` entries to (de)validate.
const EXTRA_L1: u64 = 200;

/// Most (de)validation work one entry into the hypervisor may do beyond the budget: the
/// first entry of each of the L4, L3 and L2 being continued is done unconditionally (the
/// progress guarantee), the L2 one with a whole L1 under it, plus the entry at which the
/// budget ran out.
const OVERSHOOT: u64 = 2 * 512 + 8;

/// Builds in the unmapped pfns 1600.. an L4 that maps the kernel region as the
/// bootstrap tables do (old tables read-only) plus `EXTRA_L1` more L1 tables mapping the
/// domain's first 512 frames read-only; returns its frames (L4 first). `poison`: the last
/// entry of the last L1 maps the L4 writable (refused).
fn big_tree(x: &Fx, poison: bool) -> Vec<Mfn> {
    let pt_pfn = Fx::pfn_of_va(x.si.pt_base);
    let old: Vec<Mfn> = (pt_pfn..pt_pfn + x.si.nr_pt_frames)
        .map(|p| x.mfn(p))
        .collect();
    let tables: Vec<Mfn> = (1600..1605 + EXTRA_L1).map(|p| x.mfn(p)).collect();
    let mem = &x.hv.mem;
    for m in &tables {
        mem.fill(m.maddr(), 0, PAGE_SIZE).unwrap();
    }
    let set = |t: Mfn, slot: u64, e: u64| mem.write_u64(t.maddr() + slot * 8, e).unwrap();
    let slot = |va: u64, level: u32| (va >> (12 + 9 * (level - 1))) & 511;
    set(tables[0], slot(VIRT_BASE, 4), tables[1].maddr() | 7);
    set(tables[1], slot(VIRT_BASE, 3), tables[2].maddr() | 7);
    for i in 0..2u64 {
        let va = VIRT_BASE + i * (2 << 20);
        set(tables[2], slot(va, 2), tables[3 + i as usize].maddr() | 7);
    }
    for pfn in 0..1024u64 {
        let mfn = x.mfn(pfn);
        let flags = if old.contains(&mfn) { 5 } else { 7 };
        set(
            tables[3 + (pfn / 512) as usize],
            pfn % 512,
            mfn.maddr() | flags,
        );
    }
    for (i, &l1) in tables[5..].iter().enumerate() {
        set(tables[2], 2 + i as u64, l1.maddr() | 7);
        for e in 0..512 {
            set(l1, e, x.mfn(e).maddr() | 5);
        }
    }
    if poison {
        set(*tables.last().unwrap(), 511, tables[0].maddr() | 7);
    }
    tables
}

/// Type state, partial state and general count of every frame of d1.
type Snapshot = Vec<(
    u64,
    Option<crate::mmu::TypeState>,
    Option<crate::mmu::Partial>,
    Option<u32>,
)>;

fn snapshot(x: &Fx) -> Snapshot {
    (0..FRAMES as u64)
        .map(Mfn)
        .filter(|&m| x.hv.frames.owner(m) == Some(DomId(1)))
        .map(|m| {
            let f = &x.hv.frames;
            let st = f.type_state(m).filter(|s| s.count > 0);
            (m.0, st, f.partial(m), f.ref_count(m))
        })
        .collect()
}

/// Runs `ops` as one mmuext_op, re-executing its continuations as the guest's `syscall`
/// would; returns the result, the number of entries and the most work one entry did.
fn mmuext_entries(x: &mut Fx, ops: &[MmuextOp]) -> (i64, usize, u64) {
    x.put(x.scratch, ops.as_bytes());
    let fd = u64::from(DomId::SELF.0);
    let rip = x.f.rip;
    let (mut nr, mut args) = (
        u64::from(nr::MMUEXT_OP),
        [x.scratch, ops.len() as u64, 0, fd],
    );
    let mut most = 0;
    for entries in 1..10_000 {
        let before = x.hv.frames.work();
        let r = hypercall(&mut x.hv, &mut x.f, nr, &args);
        assert!(matches!(r, Resume::Guest { .. }), "{r:?}");
        most = most.max(x.hv.frames.work() - before);
        if x.f.rip == rip {
            return (x.f.rax as i64, entries, most);
        }
        assert_eq!(x.f.rip, rip - 2, "a continuation re-executes the syscall");
        x.f.rip = rip;
        (nr, args) = (x.f.rax, [x.f.rdi, x.f.rsi, x.f.rdx, x.f.r10]);
    }
    panic!("no end to the continuations");
}

/// The same domain twice: one with the real budget, one that is never preempted.
fn twins() -> (Fx, Fx) {
    // Built alike; the second runs every call under an unlimited budget.
    (fx(false), fx(false))
}

fn unlimited<R>(f: impl FnOnce() -> R) -> R {
    use crate::mmu::hypercalls::test_budget;
    test_budget::set(Some(u64::MAX));
    let r = f();
    test_budget::set(None);
    r
}

#[test]
fn a_large_hierarchy_is_validated_and_released_across_entries() {
    use super::WORK_BUDGET;
    let (mut x, mut y) = twins();
    let tables = big_tree(&x, false);
    assert_eq!(big_tree(&y, false), tables, "both domains are built alike");
    let old = Mfn::containing(x.hv.domains[0].vcpu(VcpuId(0)).cr3);
    let l4 = tables[0];
    let total = 512 * tables.len() as u64;
    assert!(total > WORK_BUDGET);
    let steps: [(&str, &[MmuextOp]); 5] = [
        ("pin", &[ext(MMUEXT_PIN_L4_TABLE, l4.0)]),
        ("unpin", &[ext(MMUEXT_UNPIN_TABLE, l4.0)]),
        ("load", &[ext(MMUEXT_NEW_BASEPTR, l4.0)]),
        ("unpin old", &[ext(MMUEXT_UNPIN_TABLE, old.0)]),
        // Back to the (revalidated) bootstrap tables: the big one's last reference goes.
        (
            "reload old",
            &[
                ext(MMUEXT_NEW_BASEPTR, old.0),
                ext(MMUEXT_TLB_FLUSH_LOCAL, 0),
            ],
        ),
    ];
    for (what, ops) in steps {
        let work = x.hv.frames.work();
        let (r, entries, most) = mmuext_entries(&mut x, ops);
        let (ry, entries_y, _) = unlimited(|| mmuext_entries(&mut y, ops));
        std::eprintln!(
            "{what}: {} entries of work in {entries} entries into the hypervisor, at most {most}",
            x.hv.frames.work() - work
        );
        assert_eq!((r, ry), (0, 0), "{what}");
        assert!(most <= WORK_BUDGET + OVERSHOOT, "{what}: {most}");
        assert_eq!(entries_y, 1, "{what}: unlimited runs whole");
        assert_eq!(snapshot(&x), snapshot(&y), "{what}: same end state");
        assert_eq!(
            x.hv.domains[0].vcpu(VcpuId(0)).cr3,
            y.hv.domains[0].vcpu(VcpuId(0)).cr3,
            "{what}"
        );
        assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).old_table, None, "{what}");
        if what != "unpin old" {
            assert!(
                entries > 1,
                "{what}: the hierarchy is larger than the budget"
            );
        }
    }
    // Back where it started: the big tables are untyped again, the old root loaded.
    assert_eq!(x.ty(l4), (PageType::None, 0));
    assert!(tables.iter().all(|&m| x.ty(m) == (PageType::None, 0)));
    assert_eq!(x.ty(old), (PageType::L4, 1));
}

#[test]
fn a_bad_entry_deep_in_a_preempted_validation_fails_and_leaves_nothing() {
    let (mut x, mut y) = twins();
    let tables = big_tree(&x, true);
    big_tree(&y, true);
    let before = snapshot(&x);
    let pdone = x.scratch + 2048;
    for op in [MMUEXT_PIN_L4_TABLE, MMUEXT_NEW_BASEPTR] {
        let ops = [ext(MMUEXT_TLB_FLUSH_LOCAL, 0), ext(op, tables[0].0)];
        let (r, entries, _) = mmuext_entries(&mut x, &ops);
        let (ry, _, _) = unlimited(|| mmuext_entries(&mut y, &ops));
        assert_eq!(r, Errno::EBUSY.to_ret(), "cmd {op}");
        assert_eq!(ry, r, "cmd {op}: as without preemption");
        assert!(
            entries > 2,
            "cmd {op}: preempted, then undone across entries"
        );
        assert_eq!(
            snapshot(&x),
            before,
            "cmd {op}: nothing left typed or partial"
        );
        assert_eq!(snapshot(&y), before, "cmd {op}");
        assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).old_table, None);
    }
    // pdone counts the elements done before the failure, as without preemption.
    x.put(pdone, &[0xff; 4]);
    let ops = [ext(MMUEXT_PIN_L4_TABLE, tables[0].0)];
    x.put(x.scratch, ops.as_bytes());
    let fd = u64::from(DomId::SELF.0);
    let rip = x.f.rip;
    let (mut nr, mut args) = (u64::from(nr::MMUEXT_OP), [x.scratch, 1, pdone, fd]);
    loop {
        hypercall(&mut x.hv, &mut x.f, nr, &args);
        if x.f.rip == rip {
            break;
        }
        x.f.rip = rip;
        (nr, args) = (x.f.rax, [x.f.rdi, x.f.rsi, x.f.rdx, x.f.r10]);
    }
    assert_eq!(x.f.rax as i64, Errno::EBUSY.to_ret());
    assert_eq!(x.get_u32(pdone), 0);
}

/// Inside a multicall the preempted pin's continuation goes into its entry: the
/// multicall is re-executed at that entry until the pin is done, then runs the next one.
#[test]
fn a_preempted_pin_inside_a_multicall_continues_in_its_entry() {
    let mut x = fx(false);
    let tables = big_tree(&x, false);
    let (list, ops) = (x.scratch, x.scratch + 1024);
    x.put(ops, ext(MMUEXT_PIN_L4_TABLE, tables[0].0).as_bytes());
    let fd = u64::from(DomId::SELF.0);
    let entries = [
        MulticallEntry {
            op: nr::MMUEXT_OP.into(),
            args: [ops, 1, 0, fd, 0, 0],
            ..Default::default()
        },
        MulticallEntry {
            op: nr::XEN_VERSION.into(),
            ..Default::default()
        },
    ];
    x.put(list, entries.as_bytes());
    let rip = x.f.rip;
    let (mut nr, mut args) = (u64::from(nr::MULTICALL), [list, 2, 0, 0]);
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 100);
        let r = hypercall(&mut x.hv, &mut x.f, nr, &args);
        assert!(matches!(r, Resume::Guest { .. }), "{r:?}");
        if x.f.rip == rip {
            break;
        }
        x.f.rip = rip;
        (nr, args) = (x.f.rax, [x.f.rdi, x.f.rsi, x.f.rdx, x.f.r10]);
    }
    assert_eq!(x.f.rax, 0);
    assert!(calls > 1, "preempted");
    let result = |i: u64| {
        let mut b = [0u8; 8];
        let at = list + i * 64 + 8;
        copy_from_guest(&x.hv.mem, &x.hv.frames, x.space(), at, &mut b).unwrap();
        i64::from_le_bytes(b)
    };
    assert_eq!(result(0), 0, "the pin");
    assert_eq!(
        result(1),
        (4 << 16) | 17,
        "the next entry ran once after it"
    );
    assert_eq!(x.ty(tables[0]), (PageType::L4, 1));
    assert!(x.hv.frames.type_state(tables[0]).unwrap().pinned);
    assert!(tables.iter().all(|&m| x.hv.frames.partial(m).is_none()));
}

/// Tiny deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The fast entry (`dispatch` -> `mmu_hypercall`) and the generic dispatch
/// (`dispatch_generic`: the generated `dispatch` and the handlers) give the same results,
/// registers, references and page tables for random mmu_update, update_va_mapping and
/// mmuext_op calls on the entries of a live L1 (same values, other
/// A/D/NX bits, other writability, other frames, empty, forbidden flags).
#[test]
fn the_mmu_fast_entry_matches_the_generic_dispatch() {
    let (mut x, mut y) = twins();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Pages of the region after the scratch page: mapped, ours, not our stack or list.
    let first = x.scratch + 2 * PAGE;
    let vas: Vec<u64> = (0..24).map(|i| first + i * PAGE).collect();
    let data: Vec<Mfn> = (1500..1504).map(|pfn| x.mfn(pfn)).collect();
    let l1_of_first = x.l1e(first) & !0xfff;
    let (mut ok, mut failed) = (0, 0);
    for step in 0..3000 {
        let va = vas[rng.below(vas.len() as u64) as usize];
        let ptr = x.l1e(va);
        let old = x.hv.mem.read_u64(ptr).unwrap();
        let val = match rng.below(9) {
            0 | 1 => old,
            2 => old ^ 0x2,
            3 => old ^ 0x60,
            4 => old | (1 << 63),
            5 => 0,
            6 => data[rng.below(4) as usize].maddr() | 0x67,
            7 => data[rng.below(4) as usize].maddr() | 0x25,
            _ => old | 0x10, // PCD: refused
        };
        let flags = rng.below(4);
        let (nr, args): (u32, [u64; 4]) = match rng.below(6) {
            0 | 1 => {
                // 1..=6 requests: rewrites of the same value (read ahead) mixed with
                // changes (which make the rest be read again).
                let n = 1 + rng.below(6);
                let mut reqs = Vec::new();
                for i in 0..n {
                    let (ptr, val) = if i == 0 {
                        (ptr, val)
                    } else {
                        let p = x.l1e(vas[rng.below(vas.len() as u64) as usize]);
                        let old = x.hv.mem.read_u64(p).unwrap();
                        (p, [old, old, old ^ 0x40, 0][rng.below(4) as usize])
                    };
                    let kind =
                        [MMU_NORMAL_PT_UPDATE, MMU_PT_UPDATE_PRESERVE_AD][rng.below(2) as usize];
                    reqs.push(MmuUpdate {
                        ptr: ptr | kind,
                        val,
                    });
                }
                x.put(x.scratch, reqs.as_bytes());
                y.put(y.scratch, reqs.as_bytes());
                let fd = u64::from(DomId::SELF.0);
                (nr::MMU_UPDATE, [x.scratch, n, x.scratch + 2048, fd])
            }
            2 | 3 => (nr::UPDATE_VA_MAPPING, [va, val, flags, 0]),
            _ => {
                let cmd = [
                    MMUEXT_TLB_FLUSH_LOCAL,
                    MMUEXT_INVLPG_LOCAL,
                    MMUEXT_PIN_L1_TABLE,
                    MMUEXT_UNPIN_TABLE,
                ][rng.below(4) as usize];
                let arg1 = match cmd {
                    MMUEXT_INVLPG_LOCAL => va,
                    _ => data[rng.below(4) as usize].0,
                };
                let op = ext(cmd, arg1);
                x.put(x.scratch, op.as_bytes());
                y.put(y.scratch, op.as_bytes());
                let fd = u64::from(DomId::SELF.0);
                let pdone = [0, x.scratch + 2048][rng.below(2) as usize];
                (nr::MMUEXT_OP, [x.scratch, 1, pdone, fd])
            }
        };
        let fast = hypercall(&mut x.hv, &mut x.f, u64::from(nr), &args);
        // The generic path, on the twin: the same registers, through `dispatch`.
        y.f.rax = u64::from(nr);
        [y.f.rdi, y.f.rsi, y.f.rdx, y.f.r10] = args;
        y.f.vector = GuestFrame::VECTOR_SYSCALL;
        let generic = y.hv.dispatch_generic(0, &mut y.f);
        assert_eq!(fast, generic, "step {step}");
        assert_eq!(x.f, y.f, "step {step}: registers");
        let pdone = x.scratch + 2048;
        assert_eq!(x.get_u32(pdone), y.get_u32(pdone), "step {step}: pdone");
        x.put(pdone, &[0xff; 4]);
        y.put(pdone, &[0xff; 4]);
        if x.f.rax == 0 {
            ok += 1;
        } else {
            failed += 1;
        }
        if step % 100 == 99 {
            assert_eq!(snapshot(&x), snapshot(&y), "step {step}: frames");
        }
    }
    assert!(
        ok > 1000 && failed > 100,
        "both outcomes exercised: {ok} {failed}"
    );
    assert_eq!(snapshot(&x), snapshot(&y));
    let mut a = [0u8; PAGE_SIZE];
    let mut b = [0u8; PAGE_SIZE];
    x.hv.mem.read(l1_of_first, &mut a).unwrap();
    y.hv.mem.read(l1_of_first, &mut b).unwrap();
    assert_eq!(a, b, "the L1 tables");
}

/// A multicall entry that writes into a later entry changes what that entry runs, read
/// ahead or not: entry 0 (`XENVER_extraversion`) overwrites entry 2's `op` with "-rs",
/// so entry 2 is an unknown hypercall, not the `xen_version` it was written as; entry 1
/// and entry 3 (pure `XENVER_version`, read ahead) are answered as usual.
#[test]
fn multicall_entries_see_what_earlier_entries_wrote() {
    let mut x = fx(false);
    let list = x.scratch + 1024;
    let version = MulticallEntry {
        op: nr::XEN_VERSION.into(),
        ..Default::default()
    };
    let entries = [
        MulticallEntry {
            op: nr::XEN_VERSION.into(),
            args: [
                xen_pv_abi::version::XENVER_EXTRAVERSION.into(),
                list + 2 * 64,
                0,
                0,
                0,
                0,
            ],
            ..Default::default()
        },
        version,
        version,
        version,
    ];
    x.put(list, entries.as_bytes());
    assert_eq!(x.call(nr::MULTICALL, [list, 4, 0, 0]), 0);
    let result = |x: &Fx, i: u64| {
        let mut b = [0u8; 8];
        let at = list + i * 64 + 8;
        copy_from_guest(&x.hv.mem, &x.hv.frames, x.space(), at, &mut b).unwrap();
        i64::from_le_bytes(b)
    };
    let results: Vec<i64> = (0..4).map(|i| result(&x, i)).collect();
    assert_eq!(
        results,
        [0, (4 << 16) | 17, Errno::ENOSYS.to_ret(), (4 << 16) | 17]
    );
}

/// Xen 4.17's answers the conformance suite found (tests/tests/conformance.rs): the
/// mask pointer of update_va_mapping is read only with a flush type, an unreadable
/// mask is -EFAULT there but -EINVAL in mmuext_op, and the superpage commands are
/// -EOPNOTSUPP.
#[test]
fn flush_masks_and_superpage_commands_answer_as_xen() {
    let mut x = fx(true);
    let data = x.mfn(Fx::pfn_of_va(x.scratch));
    let pte = data.maddr() | 7;
    let unmapped = 0x0000_1000_0000_0000u64;
    for (flags, want) in [
        (unmapped | 3, 0),
        (unmapped, 0),
        (unmapped | UVMF_INVLPG, Errno::EFAULT.to_ret()),
        (unmapped | UVMF_TLB_FLUSH, Errno::EFAULT.to_ret()),
        (UVMF_ALL | UVMF_INVLPG, 0),
    ] {
        let r = x.call(nr::UPDATE_VA_MAPPING, [x.scratch, pte, flags, 0]);
        assert_eq!(r, want, "flags {flags:#x}");
    }
    let op = |cmd, arg1, arg2| MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2,
    };
    assert_eq!(
        x.mmuext(&[op(MMUEXT_TLB_FLUSH_MULTI, 0, unmapped)], 0),
        Errno::EINVAL.to_ret()
    );
    assert_eq!(
        x.mmuext(&[op(MMUEXT_INVLPG_MULTI, x.scratch, unmapped)], 0),
        Errno::EINVAL.to_ret()
    );
    for cmd in [MMUEXT_MARK_SUPER, MMUEXT_UNMARK_SUPER] {
        assert_eq!(
            x.mmuext(&[op(cmd, data.0, 0)], 0),
            Errno::EOPNOTSUPP.to_ret()
        );
    }
}

/// `update_va_mapping_otherdomain` (the conformance suite's uvm.otherdomain_absent):
/// Xen 4.17's `get_pg_owner` answers, then -EPERM for a domU naming another domain.
#[test]
fn update_va_mapping_otherdomain_checks_the_owner_as_xen() {
    let mut x = fx(true);
    let data = x.mfn(Fx::pfn_of_va(x.scratch));
    let pte = data.maddr() | 7;
    let me = u64::from(x.hv.domains[0].id.0);
    let other = u64::from(x.hv.domains[1].id.0);
    for (domid, want) in [
        (u64::from(DomId::SELF.0), 0),
        (me, Errno::ESRCH.to_ret()),
        (1000, Errno::ESRCH.to_ret()),
        // Xen 4.17's get_pg_owner gives dom_xen (and dom_io) for these; XSM's
        // XSM_TARGET check then refuses a domU: -EPERM, not -ESRCH.
        (u64::from(DomId::XEN.0), Errno::EPERM.to_ret()),
        (u64::from(DomId::IO.0), Errno::EPERM.to_ret()),
        (other, Errno::EPERM.to_ret()),
    ] {
        let r = x.call(
            nr::UPDATE_VA_MAPPING_OTHERDOMAIN,
            [x.scratch, pte, UVMF_INVLPG, domid],
        );
        assert_eq!(r, want, "domid {domid}");
    }
}
