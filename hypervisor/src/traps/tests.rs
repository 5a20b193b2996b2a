//! Host tests: trap table parsing, bounce frames, iret, user mode, emulation, FPU and
//! segment state, and hostile inputs.

extern crate std;

use super::*;
use crate::testutil::{
    TestHv, hypercall, insert_domain, kernel_frame, map_pages, ret, runnable_domain, started,
    test_hv,
};
use std::vec::Vec;
use xen_pv_abi::VcpuId;
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::{DomId, Mfn, nr};
use zerocopy::IntoBytes;

type Hv = TestHv;

const NR_FRAMES: usize = 512;
/// Kernel pages: 0 data / trap table, 1 code, 2..=7 stack.
const KVA: u64 = 0xffff_ffff_8000_0000;
const KPAGES: usize = 8;
const CODE: u64 = KVA + 0x1000;
const KSTACK_TOP: u64 = KVA + 0x8000;
/// User pages (mapped in the user L4 only... and in the kernel one, as Linux does).
const UVA: u64 = 0x40_0000;
const UPAGES: usize = 2;
const HV_ADDRESS: u64 = 0xffff_8300_0010_0000;

fn new_hv() -> Hv {
    test_hv(NR_FRAMES)
}

struct G {
    idx: usize,
    kpages: [Mfn; KPAGES],
    upages: [Mfn; UPAGES],
    l4: Mfn,
    user_l4: Mfn,
    shared: Mfn,
}

fn add_domain(hv: &mut Hv, id: u16) -> G {
    let dom = DomId(id);
    let mut alloc = || hv.frames.alloc(dom).unwrap();
    let (l4, user_l4, shared) = (alloc(), alloc(), alloc());
    let kpages: [Mfn; KPAGES] = core::array::from_fn(|_| alloc());
    let upages: [Mfn; UPAGES] = core::array::from_fn(|_| alloc());
    for f in [l4, user_l4, shared] {
        hv.mem.fill(f.maddr(), 0, PAGE_SIZE).unwrap();
    }
    map_pages(hv, dom, l4, KVA, &kpages);
    map_pages(hv, dom, l4, UVA, &upages);
    map_pages(hv, dom, user_l4, UVA, &upages);
    let frame = GuestFrame {
        rcx: 0x1111,
        r11: 0x2222,
        ..kernel_frame(CODE, KSTACK_TOP - 0x100)
    };
    let mut d = runnable_domain(dom, "t", false, l4, frame);
    d.shared_info = shared;
    G {
        idx: insert_domain(hv, d),
        kpages,
        upages,
        l4,
        user_l4,
        shared,
    }
}

/// Machine address of guest VA `va` (kernel or user pages of `g`).
fn maddr(g: &G, va: u64) -> u64 {
    let (base, pages): (u64, &[Mfn]) = if va >= KVA {
        (KVA, &g.kpages)
    } else {
        (UVA, &g.upages)
    };
    let off = va - base;
    pages[(off / 4096) as usize].maddr() + off % 4096
}

fn poke(hv: &Hv, g: &G, va: u64, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        hv.mem.write(maddr(g, va + i as u64), &[*b]).unwrap();
    }
}

fn peek_u64(hv: &Hv, g: &G, va: u64) -> u64 {
    hv.mem.read_u64(maddr(g, va)).unwrap()
}

fn call(hv: &mut Hv, f: &mut GuestFrame, nr: u32, a1: u64, a2: u64, a3: u64) -> Resume {
    hypercall(hv, f, u64::from(nr), &[a1, a2, a3])
}

/// Installs handlers at `CODE + 0x100 * vector` for `vectors` with `flags`.
fn install(hv: &mut Hv, g: &G, f: &mut GuestFrame, entries: &[(u8, u8)]) {
    let mut bytes = Vec::new();
    for &(vector, flags) in entries {
        let ti = TrapInfo {
            vector,
            flags,
            cs: 0xe030,
            pad: 0,
            address: handler(vector),
        };
        bytes.extend_from_slice(ti.as_bytes());
    }
    bytes.extend_from_slice(&[0; 16]);
    poke(hv, g, KVA, &bytes);
    call(hv, f, nr::SET_TRAP_TABLE, KVA, 0, 0);
    assert_eq!(ret(f), 0);
}

fn handler(vector: u8) -> u64 {
    KVA + 0x10_0000 + 0x100 * u64::from(vector)
}

fn upcall_mask(hv: &Hv, g: &G) -> u8 {
    let mut b = [0u8];
    hv.mem
        .read(g.shared.maddr() + UPCALL_MASK_OFF, &mut b)
        .unwrap();
    b[0]
}

fn exception(hv: &mut Hv, f: &mut GuestFrame, vector: u64, error: u64, cr2: u64) -> Resume {
    f.vector = vector;
    f.error_code = error;
    hv.guest_exception(f, cr2)
}

// ---- set_trap_table -----------------------------------------------------------------------

#[test]
fn trap_table_is_parsed_to_the_terminator_and_null_clears() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    install(&mut hv, &g, &mut f, &[(14, 0), (0x80, 3 | TI_MASK_EVENTS)]);
    let t = &hv.domains[g.idx].vcpu(VcpuId(0)).traps.table;
    assert_eq!(t[14].address, handler(14));
    assert_eq!(t[14].cs, 0xe033, "RPL raised to 3");
    assert_eq!(t[0x80].flags, 3 | TI_MASK_EVENTS);
    assert_eq!(t[13].address, 0);
    call(&mut hv, &mut f, nr::SET_TRAP_TABLE, 0, 0, 0);
    assert_eq!(ret(&f), 0);
    assert!(
        hv.domains[g.idx]
            .vcpu(VcpuId(0))
            .traps
            .table
            .iter()
            .all(|e| e.address == 0)
    );
}

#[test]
fn hostile_trap_tables_are_refused() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    for bad in [HV_ADDRESS, 0x8000_0000_0000, 0x1234_5000, u64::MAX - 7] {
        call(&mut hv, &mut f, nr::SET_TRAP_TABLE, bad, 0, 0);
        assert_eq!(ret(&f), -14, "{bad:#x}");
    }
    // Non-canonical handler: -EINVAL, entries before it stay.
    let good = TrapInfo {
        vector: 3,
        address: CODE,
        ..Default::default()
    };
    let bad = TrapInfo {
        vector: 4,
        address: 0x0000_8000_0000_0000,
        ..Default::default()
    };
    poke(&hv, &g, KVA, good.as_bytes());
    poke(&hv, &g, KVA + 16, bad.as_bytes());
    call(&mut hv, &mut f, nr::SET_TRAP_TABLE, KVA, 0, 0);
    assert_eq!(ret(&f), -22);
    assert_eq!(
        hv.domains[g.idx].vcpu(VcpuId(0)).traps.table[3].address,
        CODE
    );
    assert_eq!(hv.domains[g.idx].vcpu(VcpuId(0)).traps.table[4].address, 0);
    // No terminator before the end of the mapping: -EFAULT at the unmapped page.
    let e = TrapInfo {
        vector: 5,
        address: CODE,
        ..Default::default()
    };
    for i in 0..(KPAGES as u64 * 4096 / 16) {
        poke(&hv, &g, KVA + i * 16, e.as_bytes());
    }
    call(&mut hv, &mut f, nr::SET_TRAP_TABLE, KVA + 0x2000, 0, 0);
    assert_eq!(ret(&f), -7, "more than MAX_TRAP_TABLE_ENTRIES: -E2BIG");
    call(&mut hv, &mut f, nr::SET_TRAP_TABLE, KVA + 0x7000, 0, 0);
    assert_eq!(ret(&f), -14, "runs off the mapping: -EFAULT");
    assert_eq!(hv.domains[g.idx].state, DomainState::Runnable);
}

// ---- bounce frames --------------------------------------------------------------------------

#[test]
fn bounce_frame_layout_and_alignment() {
    let f = GuestFrame {
        rcx: 1,
        r11: 2,
        rip: 3,
        rflags: 0x202,
        rsp: 5,
        ss: 0xe02b,
        ..Default::default()
    };
    let w = bounce_frame_words(&f, 0xe030, Some(0x99), 1);
    assert_eq!(
        w.as_slice(),
        &[1, 2, 0x99, 3, 0xe030 | 1 << 32, 0x002, 5, 0xe02b]
    );
    let w = bounce_frame_words(&f, 0xe033, None, 0);
    assert_eq!(w.as_slice(), &[1, 2, 3, 0xe033, 0x202, 5, 0xe02b]);
    assert_eq!(bounce_frame_address(0x1009, 56), Ok(0x1000 - 56));
    assert_eq!(bounce_frame_address(0x10, 56), Err(BadGuestStack(0x10)));
    assert!(bounce_frame_address(HV_ADDRESS, 64).is_err());
    assert!(
        bounce_frame_address(0xffff_8800_0000_0020, 64).is_err(),
        "crosses into Xen's range"
    );
    assert!(
        bounce_frame_address(0x0000_8000_0000_0020, 64).is_err(),
        "non-canonical"
    );
}

#[test]
fn page_fault_is_bounced_with_xens_frame_and_cr2() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    install(&mut hv, &g, &mut f, &[(14, TI_MASK_EVENTS)]);
    let before = f;
    let r = exception(&mut hv, &mut f, 14, 0x7, 0xdead_b000);
    assert_eq!(r, Resume::Guest { cr3: g.l4.maddr() });
    let sp = (before.rsp & !15) - 64;
    assert_eq!(f.rsp, sp);
    assert_eq!(f.rip, handler(14));
    assert_eq!((f.cs, f.ss), (0xe033, 0xe02b));
    let words: Vec<u64> = (0..8).map(|i| peek_u64(&hv, &g, sp + i * 8)).collect();
    assert_eq!(
        words,
        [
            before.rcx,
            before.r11,
            0x3, // U bit cleared: the guest kernel faulted
            before.rip,
            0xe030, // RPL 0: interrupted the kernel; saved mask 0
            before.rflags | 0x200,
            before.rsp,
            before.ss
        ]
    );
    assert_eq!(hv.domains[g.idx].vcpu(VcpuId(0)).traps.cr2, 0xdead_b000);
    assert_eq!(
        hv.mem.read_u64(g.shared.maddr() + ARCH_CR2_OFF).unwrap(),
        0xdead_b000
    );
    assert_eq!(upcall_mask(&hv, &g), 1, "TI_MASK_EVENTS");
    // A second fault inside the handler (events masked): the mask is saved in CS.
    let r = exception(&mut hv, &mut f, 14, 0x2, 0x1000);
    assert!(matches!(r, Resume::Guest { .. }));
    assert_eq!(peek_u64(&hv, &g, f.rsp + 32), 0xe030 | 1 << 32);
    assert_eq!(peek_u64(&hv, &g, f.rsp + 40) & 0x200, 0, "IF = !saved mask");
}

#[test]
fn unhandled_exception_crashes_with_the_usual_line() {
    let mut hv = new_hv();
    let _g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    f.rip = 0xffff_ffff_8000_1234;
    let r = exception(&mut hv, &mut f, 14, 2, 0x5000);
    assert_eq!(
        r,
        Resume::Exit(crate::platform::ExitStatus::SomeDomainFailed)
    );
    assert!(hv.platform.console.contains(
        "(hv) d1 t: crashed: #PF in guest kernel vector=14 error=0x2 rip=0xffffffff80001234 cr2=0x5000"
    ), "{}", hv.platform.console);
}

#[test]
fn bad_guest_stack_crashes_only_that_domain() {
    for bad_rsp in [HV_ADDRESS + 0x100, 0x7000_0000, 0x0000_8000_0000_0040, 0x20] {
        let mut hv = new_hv();
        let g = add_domain(&mut hv, 1);
        let _h = add_domain(&mut hv, 2);
        let mut f = started(&mut hv);
        install(&mut hv, &g, &mut f, &[(0, 0)]);
        f.rsp = bad_rsp;
        let r = exception(&mut hv, &mut f, 0, 0, 0);
        assert!(
            matches!(r, Resume::Guest { .. }),
            "the other domain runs on"
        );
        assert_eq!(hv.domains[g.idx].state, DomainState::Crashed);
        assert!(
            hv.platform
                .console
                .contains("crashed: #DE in guest kernel vector=0"),
            "{}",
            hv.platform.console
        );
        assert_eq!(hv.cpu.current, Some(1));
    }
}

// ---- iret ---------------------------------------------------------------------------------

fn put_iret(hv: &Hv, g: &G, at: u64, ctx: IretContext) {
    poke(hv, g, at, ctx.as_bytes());
}

#[test]
fn iret_returns_to_the_kernel_and_restores_the_event_mask() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    let at = KSTACK_TOP - 0x200;
    put_iret(
        &hv,
        &g,
        at,
        IretContext {
            rax: 77,
            r11: 0x11,
            rcx: 0x22,
            flags: 0,
            rip: CODE + 0x40,
            cs: 0xe030 | 1 << 32, // as found in a bounce frame: saved mask above CS
            rflags: 0x3046,       // IOPL 3 and IF clear asked for
            rsp: KSTACK_TOP - 0x10,
            ss: 0xe028,
        },
    );
    f.rsp = at;
    let r = call(&mut hv, &mut f, nr::IRET, 0, 0, 0);
    assert_eq!(r, Resume::Guest { cr3: g.l4.maddr() });
    assert_eq!((f.rax, f.r11, f.rcx), (77, 0x11, 0x22));
    assert_eq!((f.rip, f.cs, f.ss), (CODE + 0x40, 0xe033, 0xe02b));
    assert_eq!(f.rflags & 0x3200, 0x200, "IOPL stripped, IF on");
    assert_eq!(f.rsp, KSTACK_TOP - 0x10);
    assert_eq!(upcall_mask(&hv, &g), 1, "mask = !IF");
    assert!(!hv.domains[g.idx].vcpu(VcpuId(0)).user_mode);
    // VGCF_in_syscall: RCX/R11 as sysret leaves them; IF set unmasks.
    put_iret(
        &hv,
        &g,
        at,
        IretContext {
            flags: VGCF_IN_SYSCALL,
            rip: CODE,
            cs: 0xe033 & !3,
            rflags: 0x202,
            rsp: KSTACK_TOP - 0x10,
            ss: 0xe02b,
            ..Default::default()
        },
    );
    f.rsp = at;
    call(&mut hv, &mut f, nr::IRET, 0, 0, 0);
    assert_eq!((f.rcx, f.r11), (CODE, f.rflags));
    assert_eq!(upcall_mask(&hv, &g), 0);
}

#[test]
fn hostile_irets_crash_the_domain() {
    let cases: [(&str, Option<IretContext>); 5] = [
        ("unreadable iret_context", None),
        (
            // iretq to a 32-bit segment beyond its 4 GiB limit faults on real CPUs.
            "rip beyond the 32-bit code segment",
            Some(IretContext {
                rip: 0xffff_ffff_8000_0000,
                cs: 0xe020,
                rsp: KSTACK_TOP,
                ..Default::default()
            }),
        ),
        (
            "invalid code selector",
            Some(IretContext {
                rip: CODE,
                cs: 0x10,
                rsp: KSTACK_TOP,
                ..Default::default()
            }),
        ),
        (
            "non-canonical rip",
            Some(IretContext {
                rip: 0x0000_8000_0000_0000,
                cs: 0xe030,
                rsp: KSTACK_TOP,
                ..Default::default()
            }),
        ),
        (
            "user mode without a user page table",
            Some(IretContext {
                rip: UVA,
                cs: 0xe033,
                rsp: UVA + 0x100,
                ..Default::default()
            }),
        ),
    ];
    for (what, ctx) in cases {
        let mut hv = new_hv();
        let g = add_domain(&mut hv, 1);
        let mut f = started(&mut hv);
        let at = KSTACK_TOP - 0x200;
        match ctx {
            Some(ctx) => {
                put_iret(&hv, &g, at, ctx);
                f.rsp = at;
            }
            None => f.rsp = HV_ADDRESS,
        }
        let r = call(&mut hv, &mut f, nr::IRET, 0, 0, 0);
        assert!(matches!(r, Resume::Exit(_)), "{what}");
        assert!(
            hv.platform.console.contains(what),
            "{what}: {}",
            hv.platform.console
        );
        assert_eq!(hv.domains[g.idx].state, DomainState::Crashed);
    }
}

// ---- user mode ------------------------------------------------------------------------------

/// Sets up a user root, a kernel stack and a syscall callback, and irets to user mode.
fn enter_user(hv: &mut Hv, g: &G, f: &mut GuestFrame) {
    hv.domains[g.idx].vcpu_mut(VcpuId(0)).user_cr3 = g.user_l4.maddr();
    call(hv, f, nr::STACK_SWITCH, 0xe02b, KSTACK_TOP, 0);
    assert_eq!(ret(f), 0);
    call(hv, f, nr::SET_CALLBACKS, 0, 0, handler(0x81));
    assert_eq!(ret(f), 0);
    call(
        hv,
        f,
        nr::SET_SEGMENT_BASE,
        u64::from(SEGBASE_GS_USER),
        0x5000,
        0,
    );
    call(
        hv,
        f,
        nr::SET_SEGMENT_BASE,
        u64::from(SEGBASE_GS_KERNEL),
        0x6000,
        0,
    );
    assert_eq!(hv.platform.segment_bases.1, 0x6000);
    let at = KSTACK_TOP - 0x200;
    put_iret(
        hv,
        g,
        at,
        IretContext {
            rip: UVA,
            cs: 0xe033,
            rflags: 0x202,
            rsp: UVA + 0x1ff0,
            ss: 0xe02b,
            ..Default::default()
        },
    );
    f.rsp = at;
    let r = call(hv, f, nr::IRET, 0, 0, 0);
    assert_eq!(
        r,
        Resume::Guest {
            cr3: g.user_l4.maddr()
        }
    );
    assert!(hv.domains[g.idx].vcpu(VcpuId(0)).user_mode);
    assert_eq!(hv.platform.segment_bases.1, 0x5000, "user GS live");
    assert_eq!((f.rip, f.rsp), (UVA, UVA + 0x1ff0));
}

/// A `syscall` from user mode at UVA+0x12 (the guest's own system call 17).
fn user_syscall(hv: &mut Hv, f: &mut GuestFrame) -> Resume {
    f.rax = 17;
    f.rip = UVA + 0x12;
    f.rcx = UVA + 0x12;
    f.r11 = 0x202;
    f.rflags = 0x202;
    f.vector = GuestFrame::VECTOR_SYSCALL;
    hv.hypercall(f)
}

#[test]
fn gs_bases_follow_mode_switches_domain_switches_and_updates() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let h = add_domain(&mut hv, 2);
    let mut f = started(&mut hv);
    enter_user(&mut hv, &g, &mut f);
    // In user mode the kernel's GS base waits in the inactive slot.
    assert_eq!(hv.platform.inactive_gs_base, 0x6000);
    // The guest loads GS itself: the live user base changes behind the core's back.
    hv.platform.segment_bases.1 = 0x7777;
    user_syscall(&mut hv, &mut f);
    assert_eq!(hv.platform.segment_bases.1, 0x6000, "kernel GS live");
    assert_eq!(hv.platform.inactive_gs_base, 0x7777, "user GS as left");
    let t = &hv.domains[g.idx].vcpu(VcpuId(0)).traps;
    assert_eq!(t.gs_base_user, 0x7777);
    // Each base alone: the user one goes to the inactive slot, the others live.
    call(
        &mut hv,
        &mut f,
        nr::SET_SEGMENT_BASE,
        u64::from(SEGBASE_GS_USER),
        0x8888,
        0,
    );
    assert_eq!(hv.platform.inactive_gs_base, 0x8888);
    assert_eq!(hv.platform.segment_bases.1, 0x6000);
    call(
        &mut hv,
        &mut f,
        nr::SET_SEGMENT_BASE,
        u64::from(SEGBASE_FS),
        0xf00,
        0,
    );
    assert_eq!(hv.platform.segment_bases, (0xf00, 0x6000));
    assert_eq!(hv.platform.inactive_gs_base, 0x8888);
    // To d2 and back: d2 gets its own bases, d1 finds its three again.
    call(&mut hv, &mut f, nr::SCHED_OP, 0, 0, 0);
    assert_eq!(hv.cpu.current, Some(h.idx));
    assert_eq!(hv.platform.inactive_gs_base, 0);
    assert_eq!(hv.platform.segment_bases.1, 0);
    call(&mut hv, &mut f, nr::SCHED_OP, 0, 0, 0);
    assert_eq!(hv.cpu.current, Some(g.idx));
    assert_eq!(hv.platform.segment_bases.1, 0x6000);
    assert_eq!(hv.platform.inactive_gs_base, 0x8888);
    // Back to user mode: the user base set while in the kernel is the live one.
    let at = KSTACK_TOP - 0x200;
    put_iret(
        &hv,
        &g,
        at,
        IretContext {
            rip: UVA,
            cs: 0xe033,
            rflags: 0x202,
            rsp: UVA + 0x1ff0,
            ss: 0xe02b,
            ..Default::default()
        },
    );
    f.rsp = at;
    call(&mut hv, &mut f, nr::IRET, 0, 0, 0);
    assert!(hv.domains[g.idx].vcpu(VcpuId(0)).user_mode);
    assert_eq!(hv.platform.segment_bases.1, 0x8888);
    assert_eq!(hv.platform.inactive_gs_base, 0x6000);
}

#[test]
fn syscall_from_user_mode_bounces_to_the_callback_on_the_kernel_stack() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    enter_user(&mut hv, &g, &mut f);
    // `syscall` at UVA+0x10: the entry saves rip = rcx = UVA+0x12, r11 = rflags. Its
    // rax is the guest's syscall number, not a hypercall (17 would be the fast path).
    f.rax = 17;
    f.rdi = 0;
    f.rip = UVA + 0x12;
    f.rcx = UVA + 0x12;
    f.r11 = 0x602;
    f.rflags = 0x602;
    f.vector = GuestFrame::VECTOR_SYSCALL;
    let user = f;
    let r = hv.hypercall(&mut f);
    assert_eq!(r, Resume::Guest { cr3: g.l4.maddr() }, "kernel root");
    assert!(!hv.domains[g.idx].vcpu(VcpuId(0)).user_mode);
    assert_eq!(f.rax, 17, "not answered as xen_version");
    assert_eq!(f.rip, handler(0x81));
    assert_eq!(f.rsp, KSTACK_TOP - 56);
    assert_eq!(f.rflags & (1 << 10), 0, "DF clear");
    assert_eq!(hv.platform.segment_bases.1, 0x6000, "kernel GS live");
    let words: Vec<u64> = (0..7).map(|i| peek_u64(&hv, &g, f.rsp + i * 8)).collect();
    assert_eq!(
        words,
        [
            user.rcx, user.r11, user.rip, 0xe033, 0x602, user.rsp, 0xe02b
        ]
    );
    // Back to user mode with iret (VGCF_in_syscall) from the callback.
    let at = f.rsp + 16 - 48; // the guest pops rcx/r11 and pushes rax, r11, rcx, flags
    put_iret(
        &hv,
        &g,
        at,
        IretContext {
            rax: 0,
            flags: VGCF_IN_SYSCALL,
            rip: user.rip,
            cs: 0xe033,
            rflags: 0x202,
            rsp: user.rsp,
            ss: 0xe02b,
            ..Default::default()
        },
    );
    f.rsp = at;
    let r = call(&mut hv, &mut f, nr::IRET, 0, 0, 0);
    assert_eq!(
        r,
        Resume::Guest {
            cr3: g.user_l4.maddr()
        }
    );
    assert_eq!((f.rip, f.rsp), (user.rip, user.rsp));
}

#[test]
fn syscall_without_callback_or_kernel_stack() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    install(&mut hv, &g, &mut f, &[(6, 0)]);
    enter_user(&mut hv, &g, &mut f);
    hv.domains[g.idx].vcpu_mut(VcpuId(0)).traps.syscall = Callback::default();
    f.rip = UVA + 0x12;
    f.vector = GuestFrame::VECTOR_SYSCALL;
    hv.hypercall(&mut f);
    assert_eq!(f.rip, handler(6), "#UD");
    assert_eq!(peek_u64(&hv, &g, f.rsp + 16), UVA + 0x10, "at the syscall");
    // Kernel stack 0 from user mode: crash.
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    enter_user(&mut hv, &g, &mut f);
    hv.domains[g.idx].vcpu_mut(VcpuId(0)).traps.kernel_sp = 0;
    f.vector = GuestFrame::VECTOR_SYSCALL;
    assert!(matches!(hv.hypercall(&mut f), Resume::Exit(_)));
    assert!(hv.platform.console.contains("bad kernel stack"));
}

#[test]
fn user_mode_page_fault_keeps_the_user_bit_and_reports_user() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    install(&mut hv, &g, &mut f, &[(14, 0)]);
    enter_user(&mut hv, &g, &mut f);
    exception(&mut hv, &mut f, 14, 0x6, 0x1234);
    assert_eq!(f.rsp, KSTACK_TOP - 64);
    assert_eq!(peek_u64(&hv, &g, f.rsp + 16), 0x6);
    assert_eq!(
        peek_u64(&hv, &g, f.rsp + 32),
        0xe033,
        "RPL 3: interrupted user"
    );
    // Unhandled in user mode: the crash line says so.
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    enter_user(&mut hv, &g, &mut f);
    exception(&mut hv, &mut f, 0, 0, 0);
    assert!(
        hv.platform
            .console
            .contains("crashed: #DE in guest user vector=0")
    );
}

// ---- int n ----------------------------------------------------------------------------------

#[test]
fn int_n_is_delivered_per_the_trap_table_dpl() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    install(
        &mut hv,
        &g,
        &mut f,
        &[(0x80, 3), (0x81, 1), (13, 0), (3, 0)],
    );
    enter_user(&mut hv, &g, &mut f);
    poke(&hv, &g, UVA, &[0xcd, 0x80, 0xcd, 0x81, 0xcc]);
    // QEMU 7.2 reports n*16+2 from CPL3: the vector comes from the instruction.
    f.rip = UVA;
    exception(&mut hv, &mut f, 13, 0x80 * 16 + 2, 0);
    assert_eq!(f.rip, handler(0x80));
    assert_eq!(
        peek_u64(&hv, &g, f.rsp + 16),
        UVA + 2,
        "returns after the int"
    );
    // DPL 1 from user mode: #GP with the correct error code.
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    install(
        &mut hv,
        &g,
        &mut f,
        &[(0x80, 3), (0x81, 1), (13, 0), (3, 0)],
    );
    enter_user(&mut hv, &g, &mut f);
    poke(&hv, &g, UVA, &[0xcd, 0x80, 0xcd, 0x81, 0xcc]);
    f.rip = UVA + 2;
    exception(&mut hv, &mut f, 13, 0x81 * 16 + 2, 0);
    assert_eq!(f.rip, handler(13));
    assert_eq!(peek_u64(&hv, &g, f.rsp + 16), 0x81 * 8 + 2);
    assert_eq!(peek_u64(&hv, &g, f.rsp + 24), UVA + 2);
    // From kernel mode DPL 1 is enough; int3 is always #BP.
    call(&mut hv, &mut f, nr::SET_TRAP_TABLE, 0, 0, 0);
    install(&mut hv, &g, &mut f, &[(0x81, 1), (3, 0)]);
    poke(&hv, &g, CODE, &[0xcd, 0x81, 0xcc]);
    f.rip = CODE;
    exception(&mut hv, &mut f, 13, 0x81 * 8 + 2, 0);
    assert_eq!(f.rip, handler(0x81));
    f.rip = CODE + 2;
    exception(&mut hv, &mut f, 13, 3 * 8 + 2, 0);
    assert_eq!(f.rip, handler(3));
    assert_eq!(peek_u64(&hv, &g, f.rsp + 16), CODE + 3);
}

// ---- emulation ------------------------------------------------------------------------------

#[test]
fn privileged_instructions_are_emulated_in_kernel_mode() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    // wrmsr FS_BASE, wrmsr SHADOW_GS, rdmsr GS_BASE, mov r9, cr3, mov rax, cr2, clts
    let code = [
        0x0f, 0x30, 0x0f, 0x30, 0x0f, 0x32, 0x41, 0x0f, 0x20, 0xd9, 0x0f, 0x20, 0xd0, 0x0f, 0x06,
    ];
    poke(&hv, &g, CODE, &code);
    f.rip = CODE;
    (f.rcx, f.rdx, f.rax) = (0xc000_0100, 0x7fff, 0x1234_5000);
    exception(&mut hv, &mut f, 13, 0, 0);
    assert_eq!(hv.platform.segment_bases.0, 0x7fff_1234_5000);
    assert_eq!(f.rip, CODE + 2);
    (f.rcx, f.rdx, f.rax) = (0xc000_0102, 0, 0x8000);
    exception(&mut hv, &mut f, 13, 0, 0);
    assert_eq!(hv.domains[g.idx].vcpu(VcpuId(0)).traps.gs_base_user, 0x8000);
    hv.platform.segment_bases.1 = 0xffff_8888_0000_0000;
    f.rcx = 0xc000_0101;
    exception(&mut hv, &mut f, 13, 0, 0);
    assert_eq!((f.rdx, f.rax), (0xffff_8888, 0));
    exception(&mut hv, &mut f, 13, 0, 0);
    assert_eq!(f.r9, g.l4.maddr());
    hv.domains[g.idx].vcpu_mut(VcpuId(0)).traps.cr2 = 0xabc;
    exception(&mut hv, &mut f, 13, 0, 0);
    assert_eq!(f.rax, 0xabc);
    hv.domains[g.idx].vcpu_mut(VcpuId(0)).traps.fpu_ts = true;
    exception(&mut hv, &mut f, 13, 0, 0);
    assert!(!hv.domains[g.idx].vcpu(VcpuId(0)).traps.fpu_ts);
    assert_eq!(f.rip, CODE + code.len() as u64);
    assert_eq!(hv.domains[g.idx].state, DomainState::Runnable);
}

#[test]
fn bad_msr_writes_and_user_mode_privileged_instructions_are_gp() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    install(&mut hv, &g, &mut f, &[(13, 0)]);
    poke(&hv, &g, CODE, &[0x0f, 0x30]);
    for (msr, hi) in [(0xc000_0100u64, 0x8000u64), (0x10, 0)] {
        f.rip = CODE;
        f.rsp = KSTACK_TOP - 0x100;
        (f.rcx, f.rdx, f.rax) = (msr, hi, 0);
        exception(&mut hv, &mut f, 13, 0, 0);
        assert_eq!(f.rip, handler(13), "msr {msr:#x}");
    }
    assert_eq!(hv.platform.segment_bases.0, 0);
    enter_user(&mut hv, &g, &mut f);
    poke(&hv, &g, UVA, &[0x0f, 0x30]);
    f.rip = UVA;
    (f.rcx, f.rdx, f.rax) = (0xc000_0100, 0, 0x1000);
    exception(&mut hv, &mut f, 13, 0, 0);
    assert_eq!(f.rip, handler(13));
    assert_eq!(hv.platform.segment_bases.0, 0);
}

#[test]
fn hypercall_page_msr_fills_an_own_writable_frame() {
    // As Xen 4.17 (`guest_wrmsr_xen`): wrmsr 0x40000000 with an MFN and page index 0
    // fills that frame with the hypercall page; anything else is #GP. It reads as 0.
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let other = add_domain(&mut hv, 2);
    let mut f = started(&mut hv);
    install(&mut hv, &g, &mut f, &[(13, 0)]);
    poke(&hv, &g, CODE, &[0x0f, 0x30, 0x0f, 0x32]);
    let target = g.upages[1];
    hv.mem.fill(target.maddr(), 0xcc, PAGE_SIZE).unwrap();
    f.rip = CODE;
    let wrmsr = |f: &mut GuestFrame, value: u64| {
        (f.rcx, f.rdx, f.rax) = (0x4000_0000, value >> 32, value & 0xffff_ffff);
    };
    wrmsr(&mut f, target.maddr());
    exception(&mut hv, &mut f, 13, 0, 0);
    assert_eq!(f.rip, CODE + 2);
    let mut page = std::vec![0u8; PAGE_SIZE];
    hv.mem.read(target.maddr(), &mut page).unwrap();
    assert_eq!(page[..], crate::domain::builder::hypercall_page()[..]);
    (f.rcx, f.rdx, f.rax) = (0x4000_0000, 0x55, 0x66);
    exception(&mut hv, &mut f, 13, 0, 0);
    assert_eq!((f.rip, f.rdx, f.rax), (CODE + 4, 0, 0));
    // #GP: a page index, a page table, another domain's frame, no frame at all.
    let l1 = hv.frames.alloc(DomId(1)).unwrap();
    hv.mem.fill(l1.maddr(), 0, PAGE_SIZE).unwrap();
    hv.pt(g.idx).pin(l1, 1).unwrap();
    let before = hv.frames.free_count();
    for value in [
        g.upages[0].maddr() | 1,
        l1.maddr(),
        other.kpages[0].maddr(),
        (NR_FRAMES as u64 + 5) << 12,
        !0xfffu64,
    ] {
        hv.mem.fill(g.upages[0].maddr(), 0, PAGE_SIZE).unwrap();
        f.rip = CODE;
        f.rsp = KSTACK_TOP - 0x100;
        wrmsr(&mut f, value);
        exception(&mut hv, &mut f, 13, 0, 0);
        assert_eq!(f.rip, handler(13), "{value:#x}");
    }
    assert_eq!(hv.mem.read_u64(g.upages[0].maddr()).unwrap(), 0);
    assert_eq!(hv.mem.read_u64(l1.maddr()).unwrap(), 0);
    assert_eq!(hv.frames.free_count(), before);
    assert!(hv.domains.iter().all(|d| d.state == DomainState::Runnable));
}

#[test]
fn forced_cpuid_is_emulated_and_ud2_is_delivered() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    install(&mut hv, &g, &mut f, &[(6, 0)]);
    poke(
        &hv,
        &g,
        CODE,
        &[0x0f, 0x0b, b'x', b'e', b'n', 0x0f, 0xa2, 0x0f, 0x0b],
    );
    f.rip = CODE;
    (f.rax, f.rcx) = (0x4000_0001, 0);
    exception(&mut hv, &mut f, 6, 0, 0);
    assert_eq!((f.rax, f.rbx, f.rcx, f.rdx), (0x0004_0011, 0, 0, 0));
    assert_eq!(f.rip, CODE + 7);
    exception(&mut hv, &mut f, 6, 0, 0);
    assert_eq!(f.rip, handler(6));
    assert_eq!(peek_u64(&hv, &g, f.rsp + 16), CODE + 7);
    // The instruction at the very end of the mapping: still decoded (no read beyond).
    let last = KVA + KPAGES as u64 * 4096 - 2;
    poke(&hv, &g, last, &[0x0f, 0x0b]);
    f.rip = last;
    exception(&mut hv, &mut f, 6, 0, 0);
    assert_eq!(f.rip, handler(6));
}

// ---- callbacks, segment bases, FPU ---------------------------------------------------------

#[test]
fn callback_registration() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    let reg = |kind: u32, flags, address| CallbackRegister {
        kind: kind as u16,
        flags,
        pad: 0,
        address,
    };
    let cases = [
        (reg(CALLBACKTYPE_SYSCALL, CALLBACKF_MASK_EVENTS, CODE), 0),
        (reg(CALLBACKTYPE_FAILSAFE, 0, CODE + 8), 0),
        (reg(CALLBACKTYPE_EVENT, 0, CODE + 16), 0),
        (reg(CALLBACKTYPE_NMI, 0, CODE + 24), 0),
        (reg(CALLBACKTYPE_SYSCALL, 0, 0x0000_8000_0000_0000), -22),
        (reg(99, 0, CODE), -38),
        (reg(99, 0, 0x0000_8000_0000_0000), -22),
    ];
    for (r, want) in cases {
        poke(&hv, &g, KVA, r.as_bytes());
        call(&mut hv, &mut f, nr::CALLBACK_OP, 0, KVA, 0);
        assert_eq!(ret(&f), want, "{r:?}");
    }
    let t = &hv.domains[g.idx].vcpu(VcpuId(0)).traps;
    assert_eq!(
        t.syscall,
        Callback {
            address: CODE,
            mask_events: true
        }
    );
    assert_eq!(
        t.failsafe,
        Callback {
            address: CODE + 8,
            mask_events: false
        }
    );
    assert!(t.event.mask_events, "event callbacks always mask");
    for (kind, want) in [(CALLBACKTYPE_EVENT, -22), (CALLBACKTYPE_NMI, 0)] {
        poke(
            &hv,
            &g,
            KVA,
            CallbackUnregister {
                kind: kind as u16,
                pad: 0,
            }
            .as_bytes(),
        );
        call(&mut hv, &mut f, nr::CALLBACK_OP, 1, KVA, 0);
        assert_eq!(ret(&f), want);
    }
    assert_eq!(hv.domains[g.idx].vcpu(VcpuId(0)).traps.nmi.address, 0);
    call(&mut hv, &mut f, nr::CALLBACK_OP, 0, HV_ADDRESS, 0);
    assert_eq!(ret(&f), -14);
    call(&mut hv, &mut f, nr::CALLBACK_OP, 7, KVA, 0);
    assert_eq!(ret(&f), -38);
    call(&mut hv, &mut f, nr::SET_CALLBACKS, CODE, 1 << 47, CODE);
    assert_eq!(ret(&f), -22);
}

#[test]
fn segment_bases() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    for (which, base, want) in [
        (SEGBASE_FS, 0x1000, 0),
        (SEGBASE_GS_KERNEL, 0x2000, 0),
        (SEGBASE_GS_USER, 0x3000, 0),
        (SEGBASE_FS, 1 << 47, -22),
        (SEGBASE_GS_USER_SEL, 0xe02b, 0),
        // Xen never fails it: an unloadable selector is loaded as null.
        (SEGBASE_GS_USER_SEL, 0x1234, 0),
        // An unknown `which` is -EINVAL (Xen 4.17), whatever the base.
        (9, 0, -22),
        (4, 0x5000, -22),
        (u32::MAX, 1 << 47, -22),
    ] {
        call(
            &mut hv,
            &mut f,
            nr::SET_SEGMENT_BASE,
            u64::from(which),
            base,
            0,
        );
        assert_eq!(ret(&f), want, "{which} {base:#x}");
    }
    assert_eq!(hv.platform.segment_bases, (0x1000, 0x2000));
    assert_eq!(
        hv.domains[g.idx].vcpu(VcpuId(0)).traps.gs_base_user,
        0,
        "GS_USER_SEL loads base 0"
    );
}

#[test]
fn fpu_state_follows_the_domain_and_ts_gives_nm() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let h = add_domain(&mut hv, 2);
    let mut f = started(&mut hv);
    assert_eq!(
        hv.platform.fpu,
        FpuArea::default(),
        "d1's initial state loaded"
    );
    install(&mut hv, &g, &mut f, &[(7, 0)]);
    hv.platform.fpu = FpuArea([1; 512]); // d1 uses the FPU
    call(&mut hv, &mut f, nr::SET_SEGMENT_BASE, 0, 0x4444, 0);
    call(&mut hv, &mut f, nr::FPU_TASKSWITCH, 1, 0, 0);
    assert!(hv.platform.fpu_trap);
    // Yield to d2: d1's registers are saved, d2's loaded, CR0.TS follows d2 (clear).
    call(&mut hv, &mut f, nr::SCHED_OP, 0, 0, 0);
    assert_eq!(hv.cpu.current, Some(h.idx));
    assert_eq!(
        hv.domains[g.idx].vcpu(VcpuId(0)).traps.fpu,
        FpuArea([1; 512])
    );
    assert_eq!(hv.platform.fpu, FpuArea::default());
    assert_eq!(hv.platform.segment_bases.0, 0);
    assert!(!hv.platform.fpu_trap);
    hv.platform.fpu = FpuArea([2; 512]);
    call(&mut hv, &mut f, nr::SCHED_OP, 0, 0, 0);
    assert_eq!(hv.cpu.current, Some(g.idx));
    assert_eq!(hv.platform.fpu, FpuArea([1; 512]));
    assert_eq!(hv.platform.segment_bases.0, 0x4444);
    assert!(hv.platform.fpu_trap, "d1's virtual TS");
    // d1 touches the FPU: #NM to its handler, virtual TS cleared.
    exception(&mut hv, &mut f, 7, 0, 0);
    assert_eq!(f.rip, handler(7));
    assert!(!hv.platform.fpu_trap);
    assert!(!hv.domains[g.idx].vcpu(VcpuId(0)).traps.fpu_ts);
    // A stale #NM without virtual TS is just retried.
    let before = f;
    exception(&mut hv, &mut f, 7, 0, 0);
    assert_eq!(f.rip, before.rip);
}

#[test]
fn event_upcall_is_delivered_when_pending_and_unmasked() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    call(&mut hv, &mut f, nr::SET_CALLBACKS, handler(0x90), 0, 0);
    assert!(!hv.deliver_event_upcall(g.idx, &mut f), "nothing pending");
    hv.mem
        .write(g.shared.maddr() + UPCALL_PENDING_OFF, &[1])
        .unwrap();
    assert!(hv.deliver_event_upcall(g.idx, &mut f));
    assert_eq!(f.rip, handler(0x90));
    assert_eq!(upcall_mask(&hv, &g), 1);
    assert!(!hv.deliver_event_upcall(g.idx, &mut f), "masked now");
}

// ---- fast paths against the generic ones ---------------------------------------------

/// One hostile-ish `iret_context` and where it lies, from the PRNG.
fn random_iret(rng: &mut crate::testutil::Rng) -> (u64, IretContext) {
    let r: [u64; 6] = core::array::from_fn(|_| rng.next());
    let rip = rng.pick(&[
        CODE + 0x40,
        UVA + 0x10,
        0x0000_8000_0000_0000,
        0xffff_ffff_8000_0000,
        HV_ADDRESS,
        0xfff,
        r[0],
    ]);
    let cs = rng.pick(&[
        0xe030u64,
        0xe033,
        0xe020,
        0xe023,
        0x10,
        0xe030 | 1 << 32,
        r[1],
    ]);
    let ss = rng.pick(&[0xe02bu64, 0xe028, 0, r[2]]);
    let rsp = rng.pick(&[KSTACK_TOP - 0x10, UVA + 0x1ff0, 0x0000_8000_0000_0000, r[3]]);
    let rflags = rng.pick(&[0x202u64, 0x2, 0x3246, 0x2_0202, r[4]]);
    let flags = rng.pick(&[0u64, VGCF_IN_SYSCALL, r[5]]);
    let ctx = IretContext {
        rax: rng.next(),
        r11: rng.next(),
        rcx: rng.next(),
        flags,
        rip,
        cs,
        rflags,
        rsp,
        ss,
    };
    // Inside a page, across two mapped pages, at a page end, unmapped, hypervisor.
    let at = rng.pick(&[
        KSTACK_TOP - 0x200,
        KVA + 0x3000 - 0x20,
        KSTACK_TOP - 0x48,
        KSTACK_TOP - 0x40,
        KVA - 0x1000,
        HV_ADDRESS,
        KVA + 0x2ff8,
    ]);
    (at, ctx)
}

/// Everything an `iret` may change, for comparing two hypervisors.
fn observable(hv: &Hv, g: &G, f: &GuestFrame, r: Resume) -> std::string::String {
    let v = hv.domains[g.idx].vcpu(VcpuId(0));
    std::format!(
        "{r:?} {f:?} state={:?} user={} mask={} gs={:?} console={}",
        hv.domains[g.idx].state,
        v.user_mode,
        upcall_mask(hv, g),
        hv.platform.segment_bases,
        hv.platform.console
    )
}

#[test]
fn iret_fast_path_matches_the_generic_dispatch() {
    let mut rng = crate::testutil::Rng(0x1e7_2024);
    for round in 0..400 {
        let (at, ctx) = random_iret(&mut rng);
        let user_root = rng.chance(50);
        let pending = rng.chance(50);
        let callback = rng.chance(70);
        let mask = rng.pick(&[0u8, 1]);
        let mut out = std::vec::Vec::new();
        for fast in [true, false] {
            let mut hv = new_hv();
            let g = add_domain(&mut hv, 1);
            let mut f = started(&mut hv);
            if user_root {
                hv.domains[g.idx].vcpu_mut(VcpuId(0)).user_cr3 = g.user_l4.maddr();
            }
            if callback {
                call(&mut hv, &mut f, nr::SET_CALLBACKS, handler(0x80), 0, 0);
            }
            hv.mem
                .write(g.shared.maddr() + UPCALL_MASK_OFF, &[mask])
                .unwrap();
            hv.mem
                .write(g.shared.maddr() + UPCALL_PENDING_OFF, &[u8::from(pending)])
                .unwrap();
            if at >= KVA && at + 72 <= KVA + (KPAGES as u64) * 4096 {
                put_iret(&hv, &g, at, ctx);
            }
            f.rsp = at;
            f.rax = u64::from(nr::IRET);
            let r = if fast {
                hv.hypercall(&mut f)
            } else {
                hv.dispatch(&mut f)
            };
            // The frame of a crashed domain is never resumed: compare it only otherwise.
            let f_seen = if matches!(r, Resume::Guest { .. }) {
                f
            } else {
                GuestFrame::default()
            };
            out.push(observable(&hv, &g, &f_seen, r));
        }
        assert_eq!(out[0], out[1], "round {round}: {at:#x} {ctx:?}");
    }
}

#[test]
fn bounce_writes_the_words_of_bounce_frame_words() {
    let mut rng = crate::testutil::Rng(0xb0_0ce);
    for round in 0..200 {
        let mut hv = new_hv();
        let g = add_domain(&mut hv, 1);
        let mut f = started(&mut hv);
        let user = rng.chance(50);
        if user {
            hv.domains[g.idx].vcpu_mut(VcpuId(0)).user_cr3 = g.user_l4.maddr();
            call(
                &mut hv,
                &mut f,
                nr::STACK_SWITCH,
                0xe02b,
                KSTACK_TOP - 0x300,
                0,
            );
            hv.set_guest_mode(g.idx, true);
        }
        let mask = rng.pick(&[0u8, 1]);
        hv.mem
            .write(g.shared.maddr() + UPCALL_MASK_OFF, &[mask])
            .unwrap();
        f.rcx = rng.next();
        f.r11 = rng.next();
        f.rip = rng.next();
        let any = rng.next();
        f.cs = rng.pick(&[0xe033u64, 0xe023, any]);
        f.rflags = rng.next();
        f.rsp = if user {
            rng.next()
        } else {
            KSTACK_TOP - 0x100 - rng.below(0x800)
        };
        f.ss = rng.next();
        let error = rng.chance(50).then(|| rng.next());
        let before = f;
        let cs = if user { before.cs | 3 } else { before.cs & !3 };
        let want = bounce_frame_words(&before, cs, error, mask);
        let idx = g.idx;
        hv.bounce(idx, &mut f, handler(14), error, rng.chance(50))
            .unwrap();
        let got: std::vec::Vec<u64> = (0..want.len())
            .map(|i| peek_u64(&hv, &g, f.rsp + 8 * i as u64))
            .collect();
        assert_eq!(&got[..], &want[..], "round {round}");
        let stack = if user { KSTACK_TOP - 0x300 } else { before.rsp };
        assert_eq!(f.rsp, (stack & !15) - 8 * want.len() as u64);
    }
}

/// `fpu_taskswitch` and `set_segment_base` through `Hypervisor::hypercall` (the fast
/// path) and through the generic dispatch give the same registers, vCPU and CPU state
/// and resume decision, for random arguments, RIPs, code segments and pending upcalls.
#[test]
fn cpu_state_fast_path_matches_the_generic_dispatch() {
    let mut rng = crate::testutil::Rng(0xf5_0025);
    for round in 0..600 {
        let number = rng.pick(&[nr::FPU_TASKSWITCH, nr::SET_SEGMENT_BASE]);
        let any = rng.next();
        let which = rng.pick(&[0u64, 1, 2, 3, 4, 1 << 32, any]);
        let base = rng.pick(&[
            0u64,
            0x7fff_ffff_f000,
            0x0000_8000_0000_0000,
            HV_ADDRESS,
            any,
        ]);
        let set = rng.pick(&[0u64, 1, 1 << 32, u64::MAX, any]);
        let rip = rng.pick(&[CODE + 0x40, 0x0000_8000_0000_0000, 0x1_0000_0000, any]);
        let cs = rng.pick(&[0xe033u64, 0xe023, any & 0xffff]);
        let (pending, callback, mask) = (rng.chance(50), rng.chance(70), rng.pick(&[0u8, 1]));
        let ts_before = rng.chance(50);
        let mut out = std::vec::Vec::new();
        for fast in [true, false] {
            let mut hv = new_hv();
            let g = add_domain(&mut hv, 1);
            let mut f = started(&mut hv);
            if callback {
                call(&mut hv, &mut f, nr::SET_CALLBACKS, handler(0x80), 0, 0);
            }
            call(
                &mut hv,
                &mut f,
                nr::FPU_TASKSWITCH,
                u64::from(ts_before),
                0,
                0,
            );
            hv.platform.segment_bases = (0x1000, 0x2000);
            hv.mem
                .write(g.shared.maddr() + UPCALL_MASK_OFF, &[mask])
                .unwrap();
            hv.mem
                .write(g.shared.maddr() + UPCALL_PENDING_OFF, &[u8::from(pending)])
                .unwrap();
            f.rax = u64::from(number);
            f.rdi = if number == nr::FPU_TASKSWITCH {
                set
            } else {
                which
            };
            f.rsi = base;
            f.rip = rip;
            f.cs = cs;
            let r = if fast {
                hv.hypercall(&mut f)
            } else {
                hv.dispatch(&mut f)
            };
            let f_seen = if matches!(r, Resume::Guest { .. }) {
                f
            } else {
                GuestFrame::default()
            };
            let t = &hv.domains[g.idx].vcpu(VcpuId(0)).traps;
            out.push(std::format!(
                "{} ts={} cpu_ts={} fs={:#x} gsk={:#x} gsu={:#x} sel={:?} cpu={:x?}/{:#x}",
                observable(&hv, &g, &f_seen, r),
                t.fpu_ts,
                hv.platform.fpu_trap,
                t.fs_base,
                t.gs_base_kernel,
                t.gs_base_user,
                hv.platform.selectors,
                hv.platform.segment_bases,
                hv.platform.inactive_gs_base,
            ));
        }
        assert_eq!(out[0], out[1], "round {round}");
    }
}

/// Everything a bounce may change: `observable` plus CR2 (vCPU and shared_info), the
/// virtual and real TS, the root on the CPU and the guest's kernel pages.
fn observable_bounce(hv: &Hv, g: &G, f: &GuestFrame, r: Resume) -> std::string::String {
    let t = &hv.domains[g.idx].vcpu(VcpuId(0)).traps;
    let mut pages = std::vec![0u8; KPAGES * 4096];
    for (i, m) in g.kpages.iter().enumerate() {
        hv.mem
            .read(m.maddr(), &mut pages[i * 4096..(i + 1) * 4096])
            .unwrap();
    }
    std::format!(
        "{} cr2={:#x} si_cr2={:#x} ts={} cpu_ts={} cr3={:#x} pages={:x}",
        observable(hv, g, f, r),
        t.cr2,
        hv.mem.read_u64(g.shared.maddr() + ARCH_CR2_OFF).unwrap(),
        t.fpu_ts,
        hv.platform.fpu_trap,
        hv.cpu.cr3,
        pages.iter().fold(0u64, |h, &b| h
            .wrapping_mul(0x100_0000_01b3)
            .wrapping_add(u64::from(b))),
    )
}

/// An exception through `guest_exception` (the bounce fast path where it applies) and
/// through the generic handling plus `resume_if_returnable` give the same registers,
/// memory, vCPU state and resume decision: random vectors, handlers (with and without
/// event masking), modes, stacks (good, across pages, unmapped, non-canonical), masks,
/// pending upcalls and virtual TS.
#[test]
fn exception_fast_path_matches_the_generic_handling() {
    let mut rng = crate::testutil::Rng(0xe_1407);
    for round in 0..800 {
        let r32 = rng.below(32);
        let vector = rng.pick(&[14u64, 14, 7, 7, 0, 1, 3, 8, 13, 6, 17, 31, r32]);
        let handled = rng.chance(85);
        let flags = rng.pick(&[0u8, TI_MASK_EVENTS]);
        let user = rng.chance(40);
        let any = rng.next();
        let stack = rng.pick(&[
            KSTACK_TOP - 0x100,
            KVA + 0x3000 + 0x28,
            KVA + 0x2000 + 0x10,
            KVA - 0x1000,
            0x0000_8000_0000_0010,
            any,
        ]);
        let (mask, pending, callback) = (rng.pick(&[0u8, 1]), rng.chance(50), rng.chance(70));
        let ts = rng.chance(70);
        let (error, cr2, rflags) = (rng.next(), rng.next(), rng.next());
        let mut out = std::vec::Vec::new();
        for fast in [true, false] {
            let mut hv = new_hv();
            let g = add_domain(&mut hv, 1);
            let mut f = started(&mut hv);
            if handled {
                install(&mut hv, &g, &mut f, &[(vector as u8, flags)]);
            }
            if callback {
                call(&mut hv, &mut f, nr::SET_CALLBACKS, handler(0x80), 0, 0);
            }
            call(&mut hv, &mut f, nr::FPU_TASKSWITCH, u64::from(ts), 0, 0);
            if user {
                hv.domains[g.idx].vcpu_mut(VcpuId(0)).user_cr3 = g.user_l4.maddr();
                call(&mut hv, &mut f, nr::STACK_SWITCH, 0xe02b, stack, 0);
                hv.set_guest_mode(g.idx, true);
                f.rsp = UVA + 0x800;
                f.cs = 0xe033;
            } else {
                f.rsp = stack;
            }
            hv.mem
                .write(g.shared.maddr() + UPCALL_MASK_OFF, &[mask])
                .unwrap();
            hv.mem
                .write(g.shared.maddr() + UPCALL_PENDING_OFF, &[u8::from(pending)])
                .unwrap();
            f.vector = vector;
            f.error_code = error;
            f.rflags = rflags;
            let r = if fast {
                hv.guest_exception(&mut f, cr2)
            } else {
                let r = hv.exception_generic(g.idx, &mut f, cr2);
                hv.resume_if_returnable(&mut f, r)
            };
            let f_seen = if matches!(r, Resume::Guest { .. }) {
                f
            } else {
                GuestFrame::default()
            };
            out.push(observable_bounce(&hv, &g, &f_seen, r));
        }
        assert_eq!(out[0], out[1], "round {round}: vector {vector} user {user}");
    }
}

/// `VCPUOP_initialise` (the conformance suite's vcpu.initialise_running_vcpu): every
/// vCPU is initialised from boot, so a readable context gets Xen 4.17's -EEXIST; one
/// that runs into an unmapped page -EFAULT; a vCPU the domain lacks -ENOENT. Then
/// `VCPUOP_register_vcpu_info`'s offset check.
#[test]
fn vcpu_initialise_of_a_running_vcpu_is_eexist() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1);
    let mut f = started(&mut hv);
    const VCPUOP_INITIALISE: u64 = 0;
    for (vcpu, ctx, want) in [
        (0, KVA + 0x2000, -17),
        // The context's 5168 bytes run past the last kernel page.
        (0, KVA + (KPAGES as u64 - 1) * 0x1000, -14),
        (0, 0xffff_8300_0000_0000, -14),
        (1, KVA + 0x2000, -2),
    ] {
        call(&mut hv, &mut f, nr::VCPU_OP, VCPUOP_INITIALISE, vcpu, ctx);
        assert_eq!(ret(&f), want, "vcpu {vcpu} context at {ctx:#x}");
    }
    // VCPUOP_register_vcpu_info: the offset is checked (-ENXIO past 4096 - 64), then
    // -ENOSYS (vcpu_info stays in shared_info).
    for (offset, want) in [(4090u64, -6), (4032, -38)] {
        poke(&hv, &g, KVA + 0x3000, [0u64, offset].as_bytes());
        call(&mut hv, &mut f, nr::VCPU_OP, 10, 0, KVA + 0x3000);
        assert_eq!(ret(&f), want, "register_vcpu_info offset {offset}");
    }
    // Xen copies the whole 16-byte argument in: one whose reserved word runs past the
    // last kernel page is -EFAULT even though its offset field is readable.
    let tail = KVA + KPAGES as u64 * 0x1000 - 12;
    call(&mut hv, &mut f, nr::VCPU_OP, 10, 0, tail);
    assert_eq!(
        ret(&f),
        -14,
        "register_vcpu_info argument across the last page"
    );
}
