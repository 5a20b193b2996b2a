//! Host tests: data selectors follow the vCPU, unloadable ones are nulled and reported
//! through the failsafe callback (or crash the domain), FS/GS bases survive the loads.

extern crate std;

use super::*;
use crate::domain::elfnotes::test_elf::VIRT_BASE;
use crate::mmu::guest::{copy_from_guest, copy_to_guest};
use crate::platform::Resume;
use crate::testutil::started_test_domains;
use crate::testutil::{CLOBBERED_SEGMENT_BASE, TestHv, hypercall, ret};
use std::vec::Vec;
use xen_pv_abi::VcpuId;
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::start_info::StartInfo;
use xen_pv_abi::traps::{
    CALLBACKF_MASK_EVENTS, CALLBACKOP_REGISTER, CALLBACKTYPE_FAILSAFE, CallbackRegister,
    SEGBASE_GS_USER_SEL,
};
use xen_pv_abi::{Mfn, nr};
use zerocopy::IntoBytes;

const FRAMES: usize = 16384;
const PAGE: u64 = PAGE_SIZE as u64;
/// Flat data, DPL 3; 64-bit code (readable), DPL 3; execute-only code, DPL 3.
const DATA_DPL3: u64 = 0x00cf_f300_0000_ffff;
const CODE64_DPL3: u64 = 0x00af_fb00_0000_ffff;
const CODE_XONLY_DPL3: u64 = 0x00af_f900_0000_ffff;
/// GDT index 1 and 2 from the guest's GDT, RPL 3.
const SEL_DATA: u16 = 0x0b;
const SEL_CODE: u16 = 0x13;
const FAILSAFE: u64 = VIRT_BASE + 0x4321;

/// d1 and d2 from the real builder, d1 running.
struct Fx {
    hv: TestHv,
    f: GuestFrame,
    /// A writable page after the boot stack (same va in both domains).
    scratch: u64,
    si_va: u64,
}

fn fx() -> Fx {
    let (hv, f) = started_test_domains(FRAMES, [0xabc_0063; 16], 2);
    Fx {
        scratch: f.rsp + PAGE,
        si_va: f.rsi,
        hv,
        f,
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
    fn yield_(&mut self) {
        let cmd = u64::from(xen_pv_abi::sched::SCHEDOP_YIELD);
        assert_eq!(self.call(nr::SCHED_OP, &[cmd, 0, 0]), 0);
    }
    fn put(&self, va: u64, bytes: &[u8]) {
        let space = self.hv.current_space(self.cur());
        copy_to_guest(&self.hv.mem, &self.hv.frames, space, va, bytes).unwrap();
    }
    fn words(&self, va: u64, n: usize) -> Vec<u64> {
        let space = self.hv.current_space(self.cur());
        let mut raw = std::vec![0u8; n * 8];
        copy_from_guest(&self.hv.mem, &self.hv.frames, space, va, &mut raw).unwrap();
        raw.chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    /// An unmapped, untyped frame of the running domain (pseudo-physical page 1500 + n).
    fn free_frame(&self, n: u64) -> Mfn {
        let at = self.si_va + core::mem::offset_of!(StartInfo, mfn_list) as u64;
        let si_mfn_list = self.words(at, 1)[0];
        Mfn(self.words(si_mfn_list + (1500 + n) * 8, 1)[0])
    }
    /// Installs a one-frame GDT of `descs` (the rest of the frame zero), `entries` long.
    fn set_gdt(&mut self, descs: &[u64], entries: u64) -> Mfn {
        let mfn = self.free_frame(0);
        let mut page = [0u64; 512];
        page[..descs.len()].copy_from_slice(descs);
        self.hv.mem.write(mfn.maddr(), page.as_bytes()).unwrap();
        self.put(self.scratch, &mfn.0.to_le_bytes());
        assert_eq!(self.call(nr::SET_GDT, &[self.scratch, entries, 0]), 0);
        mfn
    }
    /// Registers the failsafe callback through `callback_op` with `flags`.
    fn register_failsafe(&mut self, flags: u16) {
        let reg = CallbackRegister {
            kind: CALLBACKTYPE_FAILSAFE as u16,
            flags,
            pad: 0,
            address: FAILSAFE,
        };
        self.put(self.scratch, reg.as_bytes());
        let args = [u64::from(CALLBACKOP_REGISTER), self.scratch];
        assert_eq!(self.call(nr::CALLBACK_OP, &args), 0);
    }
    fn set_upcall_mask(&self, idx: usize, mask: u8) {
        let at = self.hv.domains[idx].shared_info.maddr() + super::super::UPCALL_MASK_OFF;
        self.hv.mem.write(at, &[mask]).unwrap();
    }
    fn upcall_mask(&self, idx: usize) -> u8 {
        let at = self.hv.domains[idx].shared_info.maddr() + super::super::UPCALL_MASK_OFF;
        let mut b = [0u8];
        self.hv.mem.read(at, &mut b).unwrap();
        b[0]
    }
    /// The guest "loads" its selectors and bases itself.
    fn guest_loads(&mut self, sels: [u16; 4], bases: (u64, u64)) {
        self.hv.platform.selectors = DataSelectors::from_array(sels);
        self.hv.platform.segment_bases = bases;
    }
    fn cpu_selectors(&self) -> [u16; 4] {
        self.hv.platform.selectors.to_array()
    }
}

#[test]
fn descriptor_and_selector_checks() {
    assert!(loadable_data_descriptor(DATA_DPL3));
    assert!(loadable_data_descriptor(CODE64_DPL3));
    assert!(!loadable_data_descriptor(CODE_XONLY_DPL3), "execute-only");
    assert!(
        !loadable_data_descriptor(DATA_DPL3 & !(1 << 47)),
        "not present"
    );
    assert!(!loadable_data_descriptor(0x00cf_9300_0000_ffff), "DPL 0");
    assert!(!loadable_data_descriptor(0), "null descriptor");
    assert!(!loadable_data_descriptor(1 << 47), "system type 0");

    let mut x = fx();
    x.set_gdt(&[0, DATA_DPL3, CODE64_DPL3, CODE_XONLY_DPL3, 0], 5);
    for (sel, ok) in [
        (0, true),
        (3, true),
        (SEL_DATA, true),
        (SEL_DATA & !3, true),
        (SEL_CODE, true),
        (0x1b, false), // execute-only code
        (0x23, false), // not present
        (0x2b, false), // beyond the guest's 5 entries (zeroed on the CPU)
        (0xe023, true),
        (0xe02b, true),
        (0xe028, true),
        (0xe033, true),
        (0xe008, false), // hypervisor code
        (0xe010, false), // hypervisor data
        (0xe040, false), // TSS
        (0xe050, false), // LDT descriptor
        (0xfff8, false),
        (0x07, false), // LDT selector without an LDT
    ] {
        assert_eq!(x.hv.data_selector_ok(0, sel), ok, "{sel:#x}");
    }
}

#[test]
fn failsafe_frame_layout() {
    let f = GuestFrame {
        rcx: 1,
        r11: 2,
        rip: 3,
        rflags: 0x202,
        rsp: 5,
        ss: 0xe02b,
        ..Default::default()
    };
    let sels = DataSelectors::from_array([0x0b, 0x13, 0x1b, 0x23]);
    let w = failsafe_frame_words(&f, sels, 0xe030, 1);
    assert_eq!(
        w.as_slice(),
        &[
            1,
            2,
            0x0b,
            0x13,
            0x1b,
            0x23,
            3,
            0xe030 | 1 << 32,
            0x002,
            5,
            0xe02b
        ]
    );
}

#[test]
fn selectors_and_bases_follow_the_vcpu() {
    let mut x = fx();
    // The first switch-in loaded d1's (null) selectors over the hypervisor's own.
    assert_eq!(x.cpu_selectors(), [0; 4]);
    assert_eq!(x.hv.platform.segment_bases, (0, 0), "bases restored");
    x.set_gdt(&[0, DATA_DPL3, CODE64_DPL3], 3);
    let d1 = [SEL_DATA, 0xe02b, SEL_CODE, SEL_DATA];
    x.guest_loads(d1, (0x1111_0000, 0x2222_0000));

    x.yield_();
    assert_eq!(x.cur(), 1);
    assert_eq!(
        x.hv.domains[0].vcpu(VcpuId(0)).traps.selectors.to_array(),
        d1
    );
    assert_eq!(x.cpu_selectors(), [0; 4], "d2's own, not d1's");
    assert_eq!(x.hv.platform.segment_bases, (0, 0));
    let d2 = [0xe02b, 0, 0xe033, 0];
    x.guest_loads(d2, (0x3333_0000, 0x4444_0000));

    let loads = x.hv.platform.selector_loads;
    x.yield_();
    assert_eq!(x.cur(), 0);
    assert_eq!(x.cpu_selectors(), d1);
    assert_eq!(x.hv.platform.segment_bases, (0x1111_0000, 0x2222_0000));
    assert_ne!(x.hv.platform.segment_bases.0, CLOBBERED_SEGMENT_BASE);
    assert_eq!(x.hv.platform.selector_loads, loads + 1);
    assert_eq!(
        x.f.rip,
        x.hv.domains[0].vcpu(VcpuId(0)).frame.rip,
        "no failsafe bounce"
    );

    x.yield_();
    assert_eq!(x.cpu_selectors(), d2);
    assert_eq!(x.hv.platform.segment_bases, (0x3333_0000, 0x4444_0000));
}

#[test]
fn yielding_to_itself_reloads_nothing() {
    let mut x = fx();
    // Power off d2: d1 is alone and its yield runs d1 again.
    let shutdown = u64::from(xen_pv_abi::sched::SCHEDOP_SHUTDOWN);
    x.yield_();
    x.put(x.scratch, &0u32.to_le_bytes());
    assert_eq!(x.call(nr::SCHED_OP, &[shutdown, x.scratch, 0]), 0);
    assert_eq!(x.cur(), 0);
    x.guest_loads([0xe02b, 0, 0, 0], (7, 8));
    let loads = x.hv.platform.selector_loads;
    x.yield_();
    assert_eq!(x.cur(), 0);
    assert_eq!(x.hv.platform.selector_loads, loads);
    assert_eq!(x.cpu_selectors(), [0xe02b, 0, 0, 0]);
    assert_eq!(x.hv.platform.segment_bases, (7, 8));
}

/// d1 loads GDT selectors, yields, and d2 runs while d1's descriptor goes away: d1's
/// `update_descriptor` happens before the yield (the CPU keeps its cached copy).
fn d1_with_a_stale_selector(x: &mut Fx) {
    let gdt = x.set_gdt(&[0, DATA_DPL3, CODE64_DPL3], 3);
    x.guest_loads([SEL_DATA, SEL_CODE, 0xe02b, SEL_CODE], (0x5000, 0x6000));
    // Entry 1 becomes not present; the CPU's DS still holds the old descriptor.
    let desc_maddr = gdt.maddr() + 8;
    assert_eq!(x.call(nr::UPDATE_DESCRIPTOR, &[desc_maddr, 0, 0]), 0);
    x.yield_();
    assert_eq!(x.cur(), 1);
}

#[test]
fn an_unloadable_selector_is_nulled_and_bounced_to_the_failsafe_callback() {
    let mut x = fx();
    x.register_failsafe(CALLBACKF_MASK_EVENTS);
    d1_with_a_stale_selector(&mut x);
    x.set_upcall_mask(0, 0);
    let saved = x.hv.domains[0].vcpu(VcpuId(0)).frame;

    x.yield_();
    assert_eq!(x.cur(), 0);
    assert_eq!(
        x.cpu_selectors(),
        [0, SEL_CODE, 0xe02b, SEL_CODE],
        "DS nulled"
    );
    assert_eq!(x.hv.platform.segment_bases, (0x5000, 0x6000));
    assert_eq!(x.f.rip, FAILSAFE);
    assert_eq!((x.f.cs, x.f.ss), (0xe033, 0xe02b));
    let sp = ((saved.rsp & !15) - 88, x.f.rsp);
    assert_eq!(sp.0, sp.1);
    assert_eq!(
        x.words(x.f.rsp, 11),
        &[
            saved.rcx,
            saved.r11,
            u64::from(SEL_DATA),
            u64::from(SEL_CODE),
            0xe02b,
            u64::from(SEL_CODE),
            saved.rip,
            // Interrupted the kernel: RPL 0; saved mask 0.
            saved.cs & !3,
            saved.rflags | 1 << 9,
            saved.rsp,
            saved.ss,
        ]
    );
    assert_eq!(x.upcall_mask(0), 1, "CALLBACKF_mask_events");
    assert!(!x.hv.platform.console.contains("crashed"));
}

#[test]
fn the_failsafe_callback_masks_events_only_if_asked() {
    let mut x = fx();
    // set_callbacks registers with flags 0.
    assert_eq!(x.call(nr::SET_CALLBACKS, &[0, FAILSAFE, 0]), 0);
    d1_with_a_stale_selector(&mut x);
    x.set_upcall_mask(0, 0);
    x.yield_();
    assert_eq!((x.cur(), x.f.rip), (0, FAILSAFE));
    assert_eq!(x.upcall_mask(0), 0);
}

#[test]
fn without_a_failsafe_callback_the_domain_crashes() {
    let mut x = fx();
    d1_with_a_stale_selector(&mut x);
    x.yield_();
    // d1 crashed on its switch-in; d2 runs on, with its own (null) selectors.
    assert_eq!(x.cur(), 1);
    assert!(!x.hv.domains[0].is_runnable());
    assert!(
        x.hv.platform.console.contains(
            "(hv) d1 one: crashed: cannot load data segment selectors (ds=0xb es=0x13 fs=0xe02b gs=0x13) and no failsafe callback"
        ),
        "{}",
        x.hv.platform.console
    );
    assert_eq!(x.cpu_selectors(), [0; 4]);
}

#[test]
fn a_bad_stack_for_the_failsafe_frame_crashes_the_domain() {
    let mut x = fx();
    x.register_failsafe(0);
    d1_with_a_stale_selector(&mut x);
    // d1's saved kernel stack is unmapped (canonical, so it can be resumed).
    x.hv.domains[0].vcpu_mut(VcpuId(0)).frame.rsp = 0x10_0000_0000;
    x.yield_();
    assert_eq!(x.cur(), 1);
    assert!(
        x.hv
            .platform
            .console
            .contains("(hv) d1 one: crashed: failsafe callback (ds=0xb es=0x13 fs=0xe02b gs=0x13) with a bad guest stack"),
        "{}",
        x.hv.platform.console
    );
}

#[test]
fn gs_user_sel_loads_the_guests_selector_and_its_base() {
    let mut x = fx();
    // Data descriptor with base 0x12345678.
    let based = DATA_DPL3 | (0x34_5678 << 16) | (0x12 << 56);
    assert_eq!(descriptor_base(based), 0x1234_5678);
    x.set_gdt(&[0, based, CODE_XONLY_DPL3], 3);
    x.guest_loads([0xe02b, 0, 0, 0], (0x7000, 0x8000));
    let which = u64::from(SEGBASE_GS_USER_SEL);
    // RPL raised to 3.
    assert_eq!(x.call(nr::SET_SEGMENT_BASE, &[which, 0x8]), 0);
    assert_eq!(x.cpu_selectors(), [0xe02b, 0, 0, 0x0b]);
    assert_eq!(
        x.hv.domains[0].vcpu(VcpuId(0)).traps.gs_base_user,
        0x1234_5678
    );
    assert_eq!(
        x.hv.platform.segment_bases,
        (0x7000, 0x8000),
        "kernel bases kept"
    );
    // Unloadable (execute-only code, beyond the GDT, hypervisor data): null, base 0.
    for sel in [0x13, 0x1b, 0xe010] {
        x.hv.domains[0].vcpu_mut(VcpuId(0)).traps.gs_base_user = 1;
        assert_eq!(x.call(nr::SET_SEGMENT_BASE, &[which, sel]), 0);
        assert_eq!(x.cpu_selectors(), [0xe02b, 0, 0, 0], "{sel:#x}");
        assert_eq!(x.hv.domains[0].vcpu(VcpuId(0)).traps.gs_base_user, 0);
    }
    // The flat selector: base 0; the guest's GS selector then follows the vCPU.
    assert_eq!(x.call(nr::SET_SEGMENT_BASE, &[which, 0xe02b]), 0);
    assert_eq!(x.cpu_selectors(), [0xe02b, 0, 0, 0xe02b]);
    x.yield_();
    x.yield_();
    assert_eq!((x.cur(), x.cpu_selectors()), (0, [0xe02b, 0, 0, 0xe02b]));
}
