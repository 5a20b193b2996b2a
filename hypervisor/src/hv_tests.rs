//! Host tests of the hypervisor's entry points: hypercall dispatch, console, scheduling,
//! domain ends and the final report.
//!
//! Most tests build their domains by hand (page tables in fake machine memory, pushed
//! straight into the domain list) so that they exercise hv.rs and the hypercalls alone;
//! the boot-module tests go through `create_domains` and the real builder.

extern crate std;

use super::*;
use crate::bundle::build::{Guest, bundle};
use crate::domain::elfnotes::test_elf::{TestElf, VIRT_BASE};
use crate::hypercall::CONSOLE_IO_MAX_PER_CALL;
use crate::hypercall::handle::Call;
use crate::testutil::{
    TestHv, create_domains, hypercall, insert_domain, kernel_frame, map_pages, ret,
    runnable_domain, started, test_hv, test_hv_with,
};
use std::string::String;
use xen_pv_abi::VcpuId;
use xen_pv_abi::console::XenconsInterface;
use xen_pv_abi::event_channel::EVTCHNOP_SEND;
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::sched::{SCHEDOP_SHUTDOWN, SCHEDOP_SHUTDOWN_CODE, SCHEDOP_YIELD};
use xen_pv_abi::shared_info::VcpuTimeInfo;
use xen_pv_abi::{EvtchnPort, Mfn};
use zerocopy::FromBytes;

type Hv = TestHv;

const NR_FRAMES: usize = 1024;
/// Where the hand-built guests map their data pages.
const DATA_VA: u64 = 0xffff_ffff_8000_0000;
const DATA_PAGES: usize = 8;
const ENTRY_RIP: u64 = 0xffff_ffff_8000_1000;
const HV_ADDRESS: u64 = 0xffff_8300_0010_0000;
const CONSOLE_PORT: EvtchnPort = EvtchnPort(2);
const STORE_PORT: EvtchnPort = EvtchnPort(1);

fn new_hv() -> Hv {
    test_hv_with(NR_FRAMES, [0; 16], b"console=com1 test")
}

/// A hand-built domain: L4..L1 mapping DATA_PAGES writable pages at DATA_VA.
struct TestDomain {
    idx: usize,
    data: [Mfn; DATA_PAGES],
    ring: Mfn,
    l4: Mfn,
}

fn add_domain(hv: &mut Hv, id: u16, name: &str, dom0: bool) -> TestDomain {
    let dom = DomId(id);
    let mut alloc = || hv.frames.alloc(dom).unwrap();
    let l4 = alloc();
    let data: [Mfn; DATA_PAGES] = core::array::from_fn(|_| alloc());
    let (shared, ring, store) = (alloc(), alloc(), alloc());
    hv.mem.fill(l4.maddr(), 0, PAGE_SIZE).unwrap();
    map_pages(hv, dom, l4, DATA_VA, &data);
    let frame = GuestFrame {
        rbx: u64::from(id),
        ..kernel_frame(ENTRY_RIP, DATA_VA + 0x1000)
    };
    let mut d = runnable_domain(dom, name, dom0, l4, frame);
    d.nr_pages = 4 + DATA_PAGES as u64;
    d.shared_info = shared;
    if !dom0 {
        d.console_ring = Some((ring, CONSOLE_PORT));
        d.store_ring = Some((store, STORE_PORT));
    }
    TestDomain {
        idx: insert_domain(hv, d),
        data,
        ring,
        l4,
    }
}

/// Runs a hypercall with up to three arguments from the current domain.
fn call(hv: &mut Hv, frame: &mut GuestFrame, nr: u64, a1: u64, a2: u64, a3: u64) -> Resume {
    hypercall(hv, frame, nr, &[a1, a2, a3])
}

fn put(hv: &Hv, g: &TestDomain, offset: usize, bytes: &[u8]) {
    // Data pages are consecutive in VA, not necessarily in machine memory.
    for (i, &b) in bytes.iter().enumerate() {
        let off = offset + i;
        hv.mem
            .write(
                g.data[off / PAGE_SIZE].maddr() + (off % PAGE_SIZE) as u64,
                &[b],
            )
            .unwrap();
    }
}

fn get(hv: &Hv, g: &TestDomain, offset: usize, len: usize) -> std::vec::Vec<u8> {
    let mut out = std::vec![0u8; len];
    hv.mem
        .read(
            g.data[offset / PAGE_SIZE].maddr() + (offset % PAGE_SIZE) as u64,
            &mut out,
        )
        .unwrap();
    out
}

fn console(hv: &Hv) -> &String {
    &hv.platform.console
}

#[test]
fn unknown_and_unimplemented_hypercalls_are_enosys() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    for nr in [27u64, 11, 31, 99, 1 << 40, u64::MAX] {
        let r = call(&mut hv, &mut f, nr, 0, 0, 0);
        assert_eq!(r, Resume::Guest { cr3: g.l4.maddr() });
        assert_eq!(ret(&f), -38, "hypercall {nr}");
    }
    // Unimplemented commands of implemented hypercalls.
    for (nr, cmd) in [(29, 6), (29, 7), (29, 99), (32, 2), (6, 3), (17, 10)] {
        call(&mut hv, &mut f, nr, cmd, 0, 0);
        assert_eq!(ret(&f), -38, "hypercall {nr} cmd {cmd}");
    }
    assert_eq!(hv.domains[g.idx].state, DomainState::Runnable);
}

#[test]
fn xen_version_fast_path_and_slow_path_agree() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    let r = call(&mut hv, &mut f, 17, 0, 0, 0);
    assert_eq!(r, Resume::Guest { cr3: g.l4.maddr() });
    assert_eq!(f.rax, 0x4_0011);
    // High bits of an `int` cmd are ignored, as in Xen: slow path, same answer.
    call(&mut hv, &mut f, 17, 1 << 32, 0, 0);
    assert_eq!(f.rax, 0x4_0011);
    call(&mut hv, &mut f, 17, 7, 0, 0);
    assert_eq!(f.rax, 4096);
}

#[test]
fn xen_version_strings_reach_guest_memory() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    put(&hv, &g, 0, &[0xaa; 1100]);
    call(&mut hv, &mut f, 17, 3, DATA_VA, 0);
    assert_eq!(ret(&f), 0);
    let caps = get(&hv, &g, 0, 1100);
    assert_eq!(&caps[..15], b"xen-3.0-x86_64\0");
    assert!(caps[15..1024].iter().all(|&b| b == 0));
    assert!(caps[1024..].iter().all(|&b| b == 0xaa), "wrote past 1024");

    call(&mut hv, &mut f, 17, 1, DATA_VA + 2000, 0);
    assert_eq!(get(&hv, &g, 2000, 16), b"-rs\0\0\0\0\0\0\0\0\0\0\0\0\0");
    call(&mut hv, &mut f, 17, 4, DATA_VA + 2000, 0);
    assert_eq!(&get(&hv, &g, 2000, 12)[..], b"unavailable\0");
    call(&mut hv, &mut f, 17, 2, DATA_VA + 3000, 0);
    let ci = get(&hv, &g, 3000, 144);
    assert_eq!(&ci[..6], b"rustc\0");
    assert_eq!(&ci[64..75], b"hypervisor\0");
    call(&mut hv, &mut f, 17, 5, DATA_VA + 3000, 0);
    assert_eq!(
        get(&hv, &g, 3000, 8),
        0xffff_8000_0000_0000u64.to_le_bytes()
    );
    put(&hv, &g, 3000, &[0xff; 16]);
    call(&mut hv, &mut f, 17, 8, DATA_VA + 3000, 0);
    assert_eq!(get(&hv, &g, 3000, 16), [0; 16]);
}

#[test]
fn features_and_command_line_depend_on_privilege() {
    let mut hv = new_hv();
    let g0 = add_domain(&mut hv, 0, "zero", true);
    let g1 = add_domain(&mut hv, 1, "one", false);
    let mut f = started(&mut hv);
    assert_eq!(hv.cpu.current, Some(g0.idx));
    // dom0: the dom0 feature bit, and the command line.
    put(&hv, &g0, 0, &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    call(&mut hv, &mut f, 17, 6, DATA_VA, 0);
    assert_eq!(ret(&f), 0);
    // MMU_PT_UPDATE_PRESERVE_AD (5) for everyone, dom0 (11) for dom0.
    assert_eq!(get(&hv, &g0, 4, 4), (1u32 << 11 | 1 << 5).to_le_bytes());
    call(&mut hv, &mut f, 17, 9, DATA_VA + 100, 0);
    assert_eq!(ret(&f), 0);
    let line = get(&hv, &g0, 100, 1024);
    assert_eq!(&line[..18], b"console=com1 test\0");
    // Submaps other than 0 do not exist.
    put(&hv, &g0, 0, &1u32.to_le_bytes());
    call(&mut hv, &mut f, 17, 6, DATA_VA, 0);
    assert_eq!(ret(&f), -22);

    // domU (after a yield): no dom0 bit, no command line.
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(hv.cpu.current, Some(g1.idx));
    put(&hv, &g1, 0, &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    call(&mut hv, &mut f, 17, 6, DATA_VA, 0);
    assert_eq!(ret(&f), 0);
    assert_eq!(get(&hv, &g1, 4, 4), (1u32 << 5).to_le_bytes());
    put(&hv, &g1, 100, &[0x55; 4]);
    call(&mut hv, &mut f, 17, 9, DATA_VA + 100, 0);
    assert_eq!(ret(&f), -1);
    assert_eq!(get(&hv, &g1, 100, 4), [0x55; 4], "nothing written on EPERM");
}

#[test]
fn bad_pointers_are_efault_and_harmless() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    let unmapped = DATA_VA + (DATA_PAGES * PAGE_SIZE) as u64;
    for va in [HV_ADDRESS, 0, unmapped, 0x0000_8000_0000_0000, u64::MAX] {
        call(&mut hv, &mut f, 18, 0, 16, va);
        assert_eq!(ret(&f), -14, "console_io at {va:#x}");
        for cmd in [1, 2, 3, 4, 5, 6, 8] {
            call(&mut hv, &mut f, 17, cmd, va, 0);
            assert_eq!(ret(&f), -14, "xen_version {cmd} at {va:#x}");
        }
        call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, va, 0);
        assert_eq!(ret(&f), -14);
        call(&mut hv, &mut f, 32, EVTCHNOP_SEND as u64, va, 0);
        assert_eq!(ret(&f), -14);
    }
    // A buffer running off the end of the mapping.
    call(&mut hv, &mut f, 18, 0, 200, unmapped - 100);
    assert_eq!(ret(&f), -14);
    assert_eq!(hv.domains[g.idx].state, DomainState::Runnable);
}

#[test]
fn console_io_writes_lines_with_the_domain_prefix() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "pv-guest", false);
    let mut f = started(&mut hv);
    put(&hv, &g, 0, b"hello\nwor\x07\x1b");
    call(&mut hv, &mut f, 18, 0, 12, DATA_VA);
    assert_eq!(ret(&f), 0);
    assert_eq!(console(&hv), "[d1 pv-guest] hello\n");
    put(&hv, &g, 0, b"ld\n");
    call(&mut hv, &mut f, 18, 0, 3, DATA_VA);
    assert!(console(&hv).ends_with("[d1 pv-guest] world\n"));
    // Reading is the control domain's. Unknown commands: ENOSYS, as in Xen.
    call(&mut hv, &mut f, 18, 1, 16, DATA_VA);
    assert_eq!(ret(&f), -1);
    call(&mut hv, &mut f, 18, 7, 16, DATA_VA);
    assert_eq!(ret(&f), -38);
}

#[test]
fn console_io_work_per_call_is_bounded() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 0, "big", true);
    let mut f = started(&mut hv);
    // 32 KiB mapped, then nothing: a count of 4 GiB - 1 is read 16 KiB per entry into
    // the hypervisor (Xen's continuation: the count left, the buffer advanced) and fails
    // at the first byte past the mapping, as Xen, after printing what came before.
    let mut text = std::vec::Vec::new();
    for i in 0..(DATA_PAGES * PAGE_SIZE / 16) {
        text.extend_from_slice(std::format!("line {i:010}\n").as_bytes());
    }
    put(&hv, &g, 0, &text);
    let per_entry = u64::from(CONSOLE_IO_MAX_PER_CALL);
    let rip = f.rip;
    call(&mut hv, &mut f, 18, 0, u32::MAX as u64, DATA_VA);
    // Continued: the same syscall again, with what is left.
    assert_eq!((f.rip, f.rax), (rip - 2, 18));
    assert_eq!(
        (f.rdi, f.rsi, f.rdx),
        (0, u64::from(u32::MAX) - per_entry, DATA_VA + per_entry)
    );
    assert_eq!(console(&hv).lines().count(), per_entry as usize / 16);
    let mut entries = 1;
    while f.rax == 18 && f.rip == rip - 2 {
        f.rip = rip;
        hv.hypercall(&mut f);
        entries += 1;
        assert!(entries <= 3, "one entry per 16 KiB");
    }
    assert_eq!((entries, ret(&f)), (3, -14));
    // The control domain's bytes are printed as they are: all 32 KiB.
    assert_eq!(console(&hv).lines().count(), DATA_PAGES * PAGE_SIZE / 16);
    assert!(console(&hv).starts_with("line 0000000000\nline 0000000001\n"));
    assert!(console(&hv).ends_with("\nline 0000002047\n"));
    // Only the low 32 bits of count matter (`unsigned int` in Xen).
    hv.platform.console.clear();
    f.rip = rip;
    call(&mut hv, &mut f, 18, 0, (1 << 32) | 16, DATA_VA);
    assert_eq!((ret(&f), console(&hv).as_str()), (0, "line 0000000000\n"));
}

#[test]
fn console_io_is_rate_limited_for_domus_only() {
    let mut hv = new_hv();
    let g0 = add_domain(&mut hv, 0, "zero", true);
    let g1 = add_domain(&mut hv, 1, "one", false);
    // Each write is one 16 KiB line.
    let chunk = 16 * 1024usize;
    let mut line = std::vec![b'x'; chunk - 1];
    line.push(b'\n');
    let mut f = started(&mut hv);
    put(&hv, &g0, 0, &line);
    put(&hv, &g1, 0, &line);
    let printed = |hv: &Hv| console(hv).matches('x').count();
    // dom0: 8 x 16 KiB, way past the burst, all printed.
    for _ in 0..8 {
        call(&mut hv, &mut f, 18, 0, chunk as u64, DATA_VA);
        assert_eq!(ret(&f), 0);
    }
    assert_eq!(printed(&hv), 8 * (chunk - 1));
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(hv.cpu.current, Some(g1.idx));
    hv.platform.console.clear();
    // domU: the 64 KiB burst, then dropping with one notice.
    for _ in 0..6 {
        call(&mut hv, &mut f, 18, 0, chunk as u64, DATA_VA);
        assert_eq!(ret(&f), 0);
    }
    assert_eq!(printed(&hv), 4 * (chunk - 1));
    let notice = "(hv) d1 one: console_io rate limit, dropping output\n";
    assert_eq!(console(&hv).matches(notice).count(), 1);
    // One second later, 16 KiB more may pass.
    hv.platform.tsc.set(hv.platform.tsc.get() + 1_000_000_000);
    call(&mut hv, &mut f, 18, 0, chunk as u64, DATA_VA);
    call(&mut hv, &mut f, 18, 0, chunk as u64, DATA_VA);
    assert_eq!(printed(&hv), 5 * (chunk - 1));
    assert_eq!(console(&hv).matches(notice).count(), 1);
}

#[test]
fn console_io_writes_that_fault_do_not_drain_the_rate_limit() {
    let mut hv = new_hv();
    let _g0 = add_domain(&mut hv, 0, "zero", true);
    let g1 = add_domain(&mut hv, 1, "one", false);
    let mut f = started(&mut hv);
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(hv.cpu.current, Some(g1.idx));
    // Far more than the burst asked for at an address that cannot be read: -EFAULT
    // every time, nothing printed, nothing charged.
    for _ in 0..16 {
        call(&mut hv, &mut f, 18, 0, 16 * 1024, 0x1000);
        assert_eq!(ret(&f), -14);
    }
    let chunk = 16 * 1024usize;
    let mut line = std::vec![b'x'; chunk - 1];
    line.push(b'\n');
    put(&hv, &g1, 0, &line);
    for _ in 0..4 {
        call(&mut hv, &mut f, 18, 0, chunk as u64, DATA_VA);
        assert_eq!(ret(&f), 0);
    }
    // The whole burst is still there: four full lines, no notice.
    assert_eq!(console(&hv).matches('x').count(), 4 * (chunk - 1));
    assert!(!console(&hv).contains("rate limit"));
}

#[test]
fn shutdown_flushes_console_io_frees_frames_and_reports() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "pv-guest", false);
    let free_before = hv.frames.free_count();
    let mut f = started(&mut hv);
    // A console_io line without a newline is ended; the console ring is not the
    // hypervisor's to show.
    ring_produce(&hv, g.ring, 0, b"ring\n");
    put(&hv, &g, 0, b"bye");
    call(&mut hv, &mut f, 18, 0, 3, DATA_VA);
    put(&hv, &g, 0, &0u32.to_le_bytes());
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::AllPoweredOff));
    assert_eq!(
        console(&hv),
        "[d1 pv-guest] bye\n\
         (hv) d1 pv-guest: shut down: poweroff\n\
         (hv) d1 pv-guest: poweroff\n\
         (hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended: 1 powered off, 0 failed\n"
    );
    assert_eq!(hv.frames.count_of(DomId(1)), 0);
    // Its pages, the three it got by hand, and the grant frame it got at start.
    assert_eq!(hv.frames.free_count(), free_before + 4 + DATA_PAGES + 3 + 1);
}

#[test]
fn shutdown_code_wins() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    let code = |hv: &mut TestHv, f: &mut GuestFrame, v: u32| {
        put(hv, &g, 0, &v.to_le_bytes());
        call(hv, f, 29, SCHEDOP_SHUTDOWN_CODE as u64, DATA_VA, 0);
        ret(f)
    };
    // shutdown_code takes any value, as Xen 4.17; 0xffffffff is Xen's "none" (its low
    // byte is 0xff) and records nothing.
    assert_eq!(code(&mut hv, &mut f, u32::MAX), 0);
    assert_eq!(hv.domains[g.idx].shutdown_code, None);
    // Record "crash" (0x103's low byte) first; a later code does not replace it, and a
    // later poweroff is reported as crash, as in Xen.
    assert_eq!(code(&mut hv, &mut f, 0x103), 0);
    assert_eq!(code(&mut hv, &mut f, 9), 0);
    assert_eq!(hv.domains[g.idx].shutdown_code, Some(3));
    assert_eq!(hv.domains[g.idx].state, DomainState::Runnable);
    put(&hv, &g, 0, &0u32.to_le_bytes());
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::SomeDomainFailed));
    assert!(console(&hv).contains("(hv) d1 t: shut down: crash\n"));
    assert!(console(&hv).ends_with("(hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended: 0 powered off, 1 failed\n"));
}

#[test]
fn unknown_shutdown_code_is_kept_and_reported() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    put(&hv, &g, 0, &7u32.to_le_bytes());
    call(
        &mut hv,
        &mut f,
        29,
        SCHEDOP_SHUTDOWN_CODE as u64,
        DATA_VA,
        0,
    );
    assert_eq!(ret(&f), 0);
    assert_eq!(hv.domains[g.idx].shutdown_code, Some(7));
    // The domain keeps running until it shuts down; then the recorded code wins.
    put(&hv, &g, 0, &0u32.to_le_bytes());
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::SomeDomainFailed));
    assert_eq!(hv.domains[g.idx].state, DomainState::ShutdownOther(7));
    assert!(console(&hv).contains("(hv) d1 t: shut down: unknown reason 7\n"));
}

#[test]
fn shutdown_with_any_reason_shuts_down() {
    // Xen 4.17 shuts down with the reason's low byte, known or not.
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    put(&hv, &g, 0, &0x206u32.to_le_bytes());
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::SomeDomainFailed));
    assert_eq!(hv.domains[g.idx].state, DomainState::ShutdownOther(6));
    // The legacy sched_op_compat (6) takes the reason itself.
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    let r = call(
        &mut hv,
        &mut f,
        6,
        SCHEDOP_SHUTDOWN as u64,
        0x1_0000_0000,
        0,
    );
    assert_eq!(r, Resume::Exit(ExitStatus::AllPoweredOff));
    assert_eq!(
        hv.domains[g.idx].state,
        DomainState::Shutdown(xen_pv_abi::sched::ShutdownReason::Poweroff)
    );
}

#[test]
fn sched_op_compat_takes_the_reason_directly() {
    let mut hv = new_hv();
    add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    call(&mut hv, &mut f, 6, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(ret(&f), 0);
    // Xen keeps the low byte: 0x101 is reboot.
    let r = call(&mut hv, &mut f, 6, SCHEDOP_SHUTDOWN as u64, 0x101, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::SomeDomainFailed));
    assert!(console(&hv).contains("(hv) d1 t: shut down: reboot\n"));
}

#[test]
fn the_cpu_names_the_running_vcpu_and_vcpu_op_checks_the_id() {
    let mut hv = new_hv();
    let g1 = add_domain(&mut hv, 1, "one", false);
    let g2 = add_domain(&mut hv, 2, "two", false);
    let mut f = started(&mut hv);
    assert_eq!((hv.cpu.current, hv.cpu.vcpu), (Some(g1.idx), VcpuId(0)));
    assert_eq!(hv.vid(g1.idx), (DomId(1), VcpuId(0)));
    let c = hv.evtchn_caller(&Call {
        idx: g1.idx,
        dom: DomId(1),
        vcpu: VcpuId(0),
        frame: &mut f.clone(),
    });
    assert_eq!((c.dom, c.vcpu, c.privileged), (DomId(1), VcpuId(0), false));
    // vcpu_op(VCPUOP_is_up = 3): vCPU 0 is up; others do not exist.
    call(&mut hv, &mut f, 24, 3, 0, 0);
    assert_eq!(ret(&f), 1);
    for bad in [1u64, 2, 0xffff_ffff] {
        call(&mut hv, &mut f, 24, 3, bad, 0);
        assert_eq!(ret(&f), -2, "vcpu {bad}");
    }
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!((hv.cpu.current, hv.cpu.vcpu), (Some(g2.idx), VcpuId(0)));
    assert_eq!(hv.vid(g2.idx), (DomId(2), VcpuId(0)));
    assert_eq!(hv.cpu.fpu_owner, Some((g2.idx, VcpuId(0))));
    assert_eq!(hv.cpu.gdt.owner, Some((g2.idx, VcpuId(0))));
}

#[test]
fn yield_switches_round_robin_and_returns_zero() {
    let mut hv = new_hv();
    let g1 = add_domain(&mut hv, 1, "one", false);
    let g2 = add_domain(&mut hv, 2, "two", false);
    let mut f = started(&mut hv);
    assert_eq!(f.rbx, 1, "the lowest id runs first");
    f.r12 = 0x1111;
    let r = call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(r, Resume::Guest { cr3: g2.l4.maddr() });
    assert_eq!((f.rbx, f.rip), (2, ENTRY_RIP));
    f.r12 = 0x2222;
    let r = call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(r, Resume::Guest { cr3: g1.l4.maddr() });
    // d1 resumes where it yielded, with the yield's result 0.
    assert_eq!((f.rbx, f.r12, f.rax), (1, 0x1111, 0));
    // d1 powers off: d2 continues with its own registers and result 0.
    put(&hv, &g1, 0, &0u32.to_le_bytes());
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert_eq!(r, Resume::Guest { cr3: g2.l4.maddr() });
    assert_eq!((f.rbx, f.r12, f.rax), (2, 0x2222, 0));
    // The only one left yields to itself.
    let r = call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(r, Resume::Guest { cr3: g2.l4.maddr() });
    assert_eq!((f.rbx, f.r12, f.rax), (2, 0x2222, 0));
    put(&hv, &g2, 0, &0u32.to_le_bytes());
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::AllPoweredOff));
    assert!(console(&hv).ends_with(
        "(hv) d1 one: poweroff\n(hv) d2 two: poweroff\n(hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended: 2 powered off, 0 failed\n"
    ));
}

#[test]
fn guest_exceptions_crash_only_that_domain() {
    let mut hv = new_hv();
    add_domain(&mut hv, 1, "privileged", false);
    let g2 = add_domain(&mut hv, 2, "pv-guest", false);
    let mut f = started(&mut hv);
    f.vector = 13;
    f.error_code = 0;
    f.rip = 0xffff_ffff_8000_1234;
    let r = hv.guest_exception(&mut f, 0xdead);
    assert_eq!(r, Resume::Guest { cr3: g2.l4.maddr() });
    assert_eq!(
        console(&hv),
        "(hv) d1 privileged: crashed: #GP in guest kernel vector=13 error=0x0 rip=0xffffffff80001234\n"
    );
    assert_eq!(hv.frames.count_of(DomId(1)), 0);
    assert_eq!(f.rbx, 2);
    // A page fault shows cr2.
    f.vector = 14;
    f.error_code = 6;
    f.rip = 0xffff_ffff_8000_2000;
    let r = hv.guest_exception(&mut f, 0x1000);
    assert_eq!(r, Resume::Exit(ExitStatus::SomeDomainFailed));
    assert!(console(&hv).contains(
        "(hv) d2 pv-guest: crashed: #PF in guest kernel vector=14 error=0x6 rip=0xffffffff80002000 cr2=0x1000\n"
    ));
    assert!(console(&hv).ends_with(
        "(hv) d1 privileged: crashed\n(hv) d2 pv-guest: crashed\n(hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended: 0 powered off, 2 failed\n"
    ));
}

#[test]
fn exception_mnemonics() {
    assert_eq!(exception_mnemonic(0), "#DE");
    assert_eq!(exception_mnemonic(6), "#UD");
    assert_eq!(exception_mnemonic(21), "#CP");
    assert_eq!(exception_mnemonic(15), "exception");
    assert_eq!(exception_mnemonic(0x100), "interrupt");
}

/// Writes `bytes` into the console ring's out[] at `at` and publishes out_prod.
fn ring_produce(hv: &Hv, ring: Mfn, at: u32, bytes: &[u8]) {
    let out = core::mem::offset_of!(XenconsInterface, out) as u64;
    for (i, &b) in bytes.iter().enumerate() {
        let slot = xen_pv_abi::console::out_slot(at + i as u32) as u64;
        hv.mem.write(ring.maddr() + out + slot, &[b]).unwrap();
    }
    let prod = core::mem::offset_of!(XenconsInterface, out_prod) as u64;
    hv.mem
        .write(
            ring.maddr() + prod,
            &(at + bytes.len() as u32).to_le_bytes(),
        )
        .unwrap();
}

/// A domU's ring ports are unbound, reserved for domain 0: a send on them is accepted
/// and goes nowhere (Xen drops events on unbound ports), a hostile ring is nobody's
/// business in the hypervisor.
#[test]
fn ring_ports_are_unbound_for_dom0_and_rings_are_not_read() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let mut f = started(&mut hv);
    for port in [CONSOLE_PORT, STORE_PORT] {
        let c = hv.evtchn.channel(DomId(1), port).unwrap();
        assert_eq!(
            c.state,
            crate::evtchn::ChannelState::Unbound { remote: DomId(0) }
        );
    }
    let prod = core::mem::offset_of!(XenconsInterface, out_prod) as u64;
    hv.mem
        .write(g.ring.maddr() + prod, &5000u32.to_le_bytes())
        .unwrap();
    for (port, expect) in [
        (CONSOLE_PORT.0, 0),
        (STORE_PORT.0, 0),
        (0, -22),
        (3, -22),
        (u32::MAX, -22),
    ] {
        put(&hv, &g, 0, &port.to_le_bytes());
        call(&mut hv, &mut f, 32, EVTCHNOP_SEND as u64, DATA_VA, 0);
        assert_eq!(ret(&f), expect, "port {port}");
    }
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(hv.domains[g.idx].state, DomainState::Runnable);
    assert_eq!(console(&hv), "");
}

#[test]
fn frames_are_sanitized_for_iret() {
    let mut f = GuestFrame {
        rip: 0x1000,
        rsp: 0x2000,
        cs: 0xe030,
        ss: 0,
        rflags: u64::MAX,
        ..Default::default()
    };
    sanitize_for_iret(&mut f).unwrap();
    assert_eq!((f.cs, f.ss), (0xe033, 0xe02b));
    // IOPL, NT, RF, VM, VIF, VIP cleared; IF and bit 1 set.
    assert_eq!(
        f.rflags & (3 << 12 | 1 << 14 | 1 << 16 | 1 << 17 | 3 << 19),
        0
    );
    assert_eq!(f.rflags & 0x202, 0x202);
    assert_eq!(f.rflags, 0x24_0fd7);
    let mut g = f;
    g.cs = 0x8;
    assert!(sanitize_for_iret(&mut g).is_err());
    let mut g = f;
    g.rip = 0x0000_8000_0000_0000;
    assert!(sanitize_for_iret(&mut g).is_err());
    let mut g = f;
    g.rsp = 0x1234_0000_0000_0000;
    assert!(sanitize_for_iret(&mut g).is_err());
    // A 32-bit code segment: RIP must lie within its 4 GiB limit.
    let mut g = f;
    g.cs = 0xe020;
    g.rip = 0xffff_ffff;
    sanitize_for_iret(&mut g).unwrap();
    assert_eq!(g.cs, 0xe023);
    g.rip = 0x1_0000_0000;
    assert_eq!(
        sanitize_for_iret(&mut g),
        Err("rip beyond the 32-bit code segment")
    );
    g.rip = 0xffff_ffff_8000_0000;
    assert!(sanitize_for_iret(&mut g).is_err());
}

#[test]
fn unresumable_domain_is_crashed_at_switch() {
    let mut hv = new_hv();
    let g1 = add_domain(&mut hv, 1, "bad", false);
    let g2 = add_domain(&mut hv, 2, "good", false);
    hv.domains[g1.idx].vcpu_mut(VcpuId(0)).frame.rip = 0x0000_8000_0000_0000;
    hv.domains[g2.idx].vcpu_mut(VcpuId(0)).frame.rflags = 0x3202; // IOPL 3 asked for
    let mut f = GuestFrame::default();
    let r = hv.start(&mut f);
    assert_eq!(r, Resume::Guest { cr3: g2.l4.maddr() });
    assert_eq!(f.rflags, 0x202);
    assert!(console(&hv).contains("(hv) d1 bad: crashed: cannot resume: non-canonical rip"));
}

#[test]
fn switching_in_publishes_time() {
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "t", false);
    let g2 = add_domain(&mut hv, 2, "u", false);
    hv.platform.tsc.set(3_000_000);
    let mut f = started(&mut hv);
    let read_time = |hv: &Hv, idx: usize| {
        let mut b = [0u8; 32];
        hv.mem
            .read(hv.domains[idx].shared_info.maddr() + 32, &mut b)
            .unwrap();
        VcpuTimeInfo::read_from_bytes(&b).unwrap()
    };
    let t = read_time(&hv, g.idx);
    assert_eq!(t.version % 2, 0);
    assert_ne!(t.version, 0);
    assert_eq!((t.tsc_timestamp, t.system_time), (3_000_000, 3_000_000));
    assert_eq!((t.tsc_to_system_mul, t.tsc_shift), (0x8000_0000, 1));
    assert_eq!(t.flags, 1);
    // Plain hypercalls do not touch it.
    hv.platform.tsc.set(5_000_000);
    call(&mut hv, &mut f, 17, 0, 0, 0);
    assert_eq!(read_time(&hv, g.idx), t);
    // A vCPU switched in for the first time gets its record...
    assert_eq!(read_time(&hv, g2.idx).version, 0);
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(hv.cpu.current, Some(g2.idx));
    let u = read_time(&hv, g2.idx);
    assert_eq!((u.tsc_timestamp, u.system_time), (5_000_000, 5_000_000));
    // ...one switched in while its record is fresh keeps it (it stays exact: one
    // linear function of the TSC)...
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(hv.cpu.current, Some(g.idx));
    assert_eq!(read_time(&hv, g.idx), t);
    // ...and one whose record is TIME_REFRESH_NS old gets a new one.
    let later = 3_000_000 + crate::time::hypercalls::TIME_REFRESH_NS;
    hv.platform.tsc.set(later);
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(hv.cpu.current, Some(g.idx));
    let t2 = read_time(&hv, g.idx);
    assert_eq!(t2.version, t.version + 2);
    assert_eq!(t2.system_time, later);
}

#[test]
fn no_domains_means_failure() {
    let mut hv = new_hv();
    let mut f = GuestFrame::default();
    assert_eq!(hv.start(&mut f), Resume::Exit(ExitStatus::SomeDomainFailed));
    assert_eq!(
        console(&hv),
        "(hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended: 0 powered off, 0 failed\n"
    );
}

#[test]
fn bad_boot_module_is_reported() {
    let mut hv = new_hv();
    let mut b = bundle(&[]).unwrap();
    b[8..12].copy_from_slice(&100_000u32.to_le_bytes());
    hv.create_domains(&b);
    assert_eq!(
        console(&hv),
        "(hv) boot module: too many guests (100000, at most 4096)\n"
    );
    let mut f = GuestFrame::default();
    assert_eq!(hv.start(&mut f), Resume::Exit(ExitStatus::SomeDomainFailed));
}

#[test]
fn refused_guests_get_ids_and_count_as_failed() {
    let mut hv = new_hv();
    let free = hv.frames.free_count();
    let guest = |name, dom0| Guest {
        image: b"not an ELF image",
        memory_kib: 64,
        dom0,
        name,
        cmdline: "",
        weight: 0,
        cap: 0,
        max_grant_frames: 0,
        max_maptrack_frames: 0,
    };
    let b = bundle(&[
        guest("first", false),
        guest("privileged", true),
        guest("third", false),
        guest("again", true),
    ])
    .unwrap();
    hv.create_domains(&b);
    let out = console(&hv).clone();
    assert!(out.contains("(hv) d1 first: refused: "), "{out}");
    assert!(out.contains("(hv) d0 privileged: refused: "), "{out}");
    assert!(out.contains("(hv) d2 third: refused: "), "{out}");
    assert!(
        out.contains("(hv) d3 again: refused: a second dom0 (only one guest may be dom0)"),
        "{out}"
    );
    assert_eq!(hv.frames.free_count(), free, "refusals leak no frames");
    hv.platform.console.clear();
    let mut f = GuestFrame::default();
    assert_eq!(hv.start(&mut f), Resume::Exit(ExitStatus::SomeDomainFailed));
    assert_eq!(
        console(&hv),
        "(hv) d0 privileged: refused\n(hv) d1 first: refused\n(hv) d2 third: refused\n\
         (hv) d3 again: refused\n(hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended: 0 powered off, 4 failed\n"
    );
}

#[test]
fn no_running_domain_is_a_hypervisor_failure() {
    let mut hv = new_hv();
    let mut f = GuestFrame {
        rax: 29,
        ..Default::default()
    };
    assert_eq!(
        hv.hypercall(&mut f),
        Resume::Exit(ExitStatus::HypervisorFailure)
    );
    assert_eq!(
        hv.guest_exception(&mut f, 0),
        Resume::Exit(ExitStatus::HypervisorFailure)
    );
}

// ---- through the real domain builder ------------------------------------------------

#[test]
fn built_domain_runs_prints_and_powers_off() {
    let mut hv = test_hv(4096);
    let free = hv.frames.free_count();
    let image = TestElf::valid().build();
    create_domains(
        &mut hv,
        &[Guest {
            image: &image,
            memory_kib: 8 * 1024,
            dom0: false,
            name: "e2e",
            cmdline: "",
            weight: 0,
            cap: 0,
            max_grant_frames: 0,
            max_maptrack_frames: 0,
        }],
    );
    assert_eq!(
        console(&hv),
        "(hv) d1 e2e: built: 2048 pages, entry 0xffffffff80000010\n"
    );
    let mut f = GuestFrame::default();
    let Resume::Guest { cr3 } = hv.start(&mut f) else {
        panic!("no guest to run");
    };
    assert_eq!(cr3, hv.domains[0].vcpu(VcpuId(0)).cr3);
    assert_eq!((f.rip, f.cs, f.ss), (VIRT_BASE + 0x10, 0xe033, 0xe02b));
    assert_eq!(f.rflags & 0x200, 0x200);
    // rsi points at start_info, which starts with the magic: echo it with console_io.
    let start_info = f.rsi;
    call(&mut hv, &mut f, 18, 0, 14, start_info);
    assert_eq!(ret(&f), 0);
    // Capabilities into the boot stack page (below rsp), then read back.
    let stack = f.rsp - 2048;
    call(&mut hv, &mut f, 17, 3, stack, 0);
    assert_eq!(ret(&f), 0);
    let mut caps = [0u8; 15];
    let space = hv.current_space(0);
    crate::mmu::guest::copy_from_guest(&hv.mem, &hv.frames, space, stack, &mut caps).unwrap();
    assert_eq!(&caps, b"xen-3.0-x86_64\0");
    // The console port the builder set up is there, unbound: a kick goes nowhere.
    let (_, port) = hv.domains[0].console_ring.expect("domU has a console ring");
    call(&mut hv, &mut f, 32, EVTCHNOP_SEND as u64, stack, 0);
    assert_eq!(ret(&f), -22, "stack holds caps, not the port");
    crate::mmu::guest::copy_to_guest(&hv.mem, &hv.frames, space, stack, &port.0.to_le_bytes())
        .unwrap();
    call(&mut hv, &mut f, 32, EVTCHNOP_SEND as u64, stack, 0);
    assert_eq!(ret(&f), 0);
    crate::mmu::guest::copy_to_guest(&hv.mem, &hv.frames, space, stack, &0u32.to_le_bytes())
        .unwrap();
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, stack, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::AllPoweredOff));
    assert!(console(&hv).ends_with(
        "[d1 e2e] xen-3.0-x86_64\n(hv) d1 e2e: shut down: poweroff\n\
         (hv) d1 e2e: poweroff\n(hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended: 1 powered off, 0 failed\n"
    ));
    assert_eq!(hv.frames.free_count(), free, "every frame came back");
}

/// A bundle with a control domain: every domU's store and console ports are unbound,
/// reserved for domain 0, which binds them; refs 0 and 1 of the domU's first grant frame,
/// there from the start, grant the rings to domain 0.
#[test]
fn with_a_control_domain_domu_rings_are_prepared_for_it() {
    use xen_pv_abi::grant_table::{GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE};
    let mut hv = test_hv(8192);
    let image = TestElf::valid().build();
    let guest = |name, dom0| Guest {
        image: &image,
        memory_kib: 4 * 1024,
        dom0,
        name,
        cmdline: "",
        weight: 0,
        cap: 0,
        max_grant_frames: 0,
        max_maptrack_frames: 0,
    };
    create_domains(
        &mut hv,
        &[guest("a", false), guest("control", true), guest("b", false)],
    );
    let ids: std::vec::Vec<u16> = hv.domains.iter().map(|d| d.id.0).collect();
    assert_eq!(ids, [0, 1, 2]);
    let dom0 = crate::evtchn::Caller {
        dom: DomId(0),
        vcpu: VcpuId(0),
        privileged: true,
    };
    for i in [1usize, 2] {
        let d = &hv.domains[i];
        let (console, cport) = d.console_ring.unwrap();
        let (store, sport) = d.store_ring.unwrap();
        for port in [cport, sport] {
            assert_eq!(
                hv.evtchn.channel(d.id, port).unwrap().state,
                crate::evtchn::ChannelState::Unbound { remote: DomId(0) }
            );
        }
        let table = d.grant.frames();
        assert_eq!(table.len(), 1, "first grant frame allocated at build");
        for (gref, ring) in [
            (GNTTAB_RESERVED_CONSOLE, console),
            (GNTTAB_RESERVED_XENSTORE, store),
        ] {
            let mut e = xen_pv_abi::grant_table::GrantEntryV1::default();
            hv.mem
                .read(
                    table[0].maddr() + u64::from(gref) * 8,
                    zerocopy::IntoBytes::as_mut_bytes(&mut e),
                )
                .unwrap();
            assert_eq!(
                (e.flags, e.domid, u64::from(e.frame)),
                (xen_pv_abi::grant_table::GTF_PERMIT_ACCESS, DomId(0), ring.0)
            );
        }
        // The control domain binds both; another domU could not.
        let (id, mem) = (d.id, &hv.mem);
        let other = crate::evtchn::Caller {
            dom: DomId(3 - id.0),
            vcpu: VcpuId(0),
            privileged: false,
        };
        assert_eq!(
            hv.evtchn
                .bind_interdomain(&other, id, cport, mem)
                .map(|_| ()),
            Err(xen_pv_abi::Errno::EINVAL)
        );
        for port in [cport, sport] {
            assert!(hv.evtchn.bind_interdomain(&dom0, id, port, mem).is_ok());
        }
    }
    // The control domain itself has no rings and no grant frame yet.
    assert_eq!(hv.domains[0].console_ring, None);
    assert!(hv.domains[0].grant.frames().is_empty());
    // The domUs start with one controller pause, the control domain without: it runs
    // first and unpauses them once their rings are served.
    let pauses: std::vec::Vec<u32> = hv.domains.iter().map(|d| d.pause_count).collect();
    assert_eq!(pauses, [0, 1, 1]);
    let first = hv.sched.pick(hv.now_ns()).map(|p| p.id.0);
    assert_eq!(first, Some(DomId(0)), "only the control domain can run");
}

/// How a run with a control domain ends: when it ends. Its poweroff is no failure, its
/// crash is; a domU it leaves running is killed and counts as failed.
#[test]
fn the_run_ends_with_the_control_domain() {
    // Every domU ended first, then the control domain powers off: success.
    let mut hv = new_hv();
    let d0 = add_domain(&mut hv, 0, "control", true);
    let g = add_domain(&mut hv, 1, "guest", false);
    let mut f = started(&mut hv);
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(f.rbx, 1);
    put(&hv, &g, 0, &0u32.to_le_bytes());
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert!(
        matches!(r, Resume::Guest { .. }),
        "the control domain runs on"
    );
    assert_eq!(f.rbx, 0);
    put(&hv, &d0, 0, &0u32.to_le_bytes());
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::AllPoweredOff));
    assert!(console(&hv).ends_with(
        "(hv) d0 control: poweroff\n(hv) d1 guest: poweroff\n\
         (hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended: 2 powered off, 0 failed\n"
    ));

    // The control domain crashes while a domU runs: the run ends, both count as failed.
    let mut hv = new_hv();
    add_domain(&mut hv, 0, "control", true);
    add_domain(&mut hv, 1, "guest", false);
    let mut f = started(&mut hv);
    assert_eq!(f.rbx, 0);
    f.vector = 6;
    let r = hv.guest_exception(&mut f, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::SomeDomainFailed));
    let out = console(&hv);
    assert!(out.contains("(hv) d0 control: crashed: #UD"), "{out}");
    assert!(
        out.ends_with(
            "(hv) d1 guest: killed at exit: the control domain ended\n\
         (hv) d0 control: crashed\n(hv) d1 guest: killed at exit\n\
         (hv) frames: 0 still owned by ended domains\n(hv) grant maps: 0 still held when their domains ended\n(hv) all domains ended: 0 powered off, 2 failed\n"
        ),
        "{out}"
    );

    // A domU the control domain leaves running when it powers off fails the run.
    let mut hv = new_hv();
    let d0 = add_domain(&mut hv, 0, "control", true);
    add_domain(&mut hv, 1, "guest", false);
    let mut f = started(&mut hv);
    put(&hv, &d0, 0, &0u32.to_le_bytes());
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::SomeDomainFailed));
    assert_eq!(hv.domains[1].state, DomainState::Killed);
    assert_eq!(hv.frames.count_of(DomId(1)), 0, "its frames went back");

    // Without a control domain, as before: the run ends when the last domain ends.
    let mut hv = new_hv();
    let a = add_domain(&mut hv, 1, "a", false);
    add_domain(&mut hv, 2, "b", false);
    let mut f = started(&mut hv);
    put(&hv, &a, 0, &0u32.to_le_bytes());
    let r = call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert!(matches!(r, Resume::Guest { .. }));
    assert_eq!(f.rbx, 2);
}

/// The control domain's console_io is printed as it is; the hypervisor's own lines
/// and the domUs' prefixed lines still start on a fresh line after its unfinished one.
#[test]
fn control_domain_output_is_verbatim_and_hv_lines_start_fresh() {
    let mut hv = new_hv();
    let d0 = add_domain(&mut hv, 0, "control", true);
    let g = add_domain(&mut hv, 1, "guest", false);
    let mut f = started(&mut hv);
    let out = b"[d1 guest] from the ring\r\n\x1b[1m[d0 control] > ";
    put(&hv, &d0, 0, out);
    call(&mut hv, &mut f, 18, 0, out.len() as u64, DATA_VA);
    assert_eq!(ret(&f), 0);
    assert_eq!(
        console(&hv),
        "[d1 guest] from the ring\r\n\x1b[1m[d0 control] > "
    );
    call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
    assert_eq!(f.rbx, 1);
    put(&hv, &g, 0, b"io\n");
    call(&mut hv, &mut f, 18, 0, 3, DATA_VA);
    put(&hv, &g, 0, &0u32.to_le_bytes());
    call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert!(
        console(&hv)
            .ends_with("[d0 control] > \n[d1 guest] io\n(hv) d1 guest: shut down: poweroff\n"),
        "{}",
        console(&hv)
    );
    // The control domain's unfinished line, then an (hv) line.
    assert_eq!(f.rbx, 0);
    put(&hv, &d0, 0, b"half");
    call(&mut hv, &mut f, 18, 0, 4, DATA_VA);
    put(&hv, &d0, 0, &0u32.to_le_bytes());
    call(&mut hv, &mut f, 29, SCHEDOP_SHUTDOWN as u64, DATA_VA, 0);
    assert!(console(&hv).contains("poweroff\nhalf\n(hv) d0 control: shut down: poweroff\n"));
}

#[path = "grub_tests.rs"]
mod grub;

#[path = "grant_test_support.rs"]
mod grant_support;

#[path = "grant_copy_tests.rs"]
mod grant_copy;

/// Everything of `hv` a hypercall can change, for comparing two hypervisors.
fn observable(hv: &Hv) -> (std::vec::Vec<u8>, String) {
    let mut mem = std::vec![0u8; NR_FRAMES * PAGE_SIZE];
    hv.mem.read(0, &mut mem).unwrap();
    let states: std::vec::Vec<_> = hv.domains.iter().map(|d| d.state).collect();
    let state = std::format!(
        "{states:?} {:?} {:?} {:?} {:?} {:?} {}",
        hv.cpu,
        hv.domains,
        hv.evtchn,
        hv.sched,
        hv.timers,
        console(hv)
    );
    (mem, state)
}

/// The `EVTCHNOP_send` fast path (`Hypervisor::hypercall` -> `evtchn_send_fast`) gives
/// exactly what the generic dispatcher gives: two identical hypervisors, one entered
/// through `hypercall`, the other through `dispatch`, run the same random steps: sends
/// on loopback, cross-domain, IPI, unbound (the rings' ports, reserved for dom0) and
/// invalid ports through good and bad pointers, with random pending/mask/selector/upcall
/// bits, event callbacks set or not, a scribbled console ring (not the hypervisor's to
/// read) and yields. Registers, the `Resume`, all of
/// machine memory, domain states, the event-channel tables and the console must match
/// after every step.
#[test]
fn evtchn_send_fast_path_matches_generic_dispatch() {
    use crate::evtchn::Caller;
    use crate::testutil::Rng;
    use xen_pv_abi::event_channel::{EVTCHNOP_SEND, EVTCHNOP_STATUS};
    let build = || {
        let mut hv = new_hv();
        let g1 = add_domain(&mut hv, 1, "a", false);
        let g2 = add_domain(&mut hv, 2, "b", false);
        let f = started(&mut hv);
        let me = |dom| Caller {
            dom: DomId(dom),
            vcpu: VcpuId(0),
            privileged: false,
        };
        let ev = &mut hv.evtchn;
        let a = ev.alloc_unbound(&me(1), DomId::SELF, DomId::SELF, &hv.mem);
        let (b, _) = ev
            .bind_interdomain(&me(1), DomId::SELF, a.unwrap(), &hv.mem)
            .unwrap();
        let c = ev
            .alloc_unbound(&me(1), DomId::SELF, DomId(2), &hv.mem)
            .unwrap();
        let d = ev
            .alloc_unbound(&me(1), DomId::SELF, DomId(2), &hv.mem)
            .unwrap();
        let (e, _) = ev.bind_interdomain(&me(2), DomId(1), d, &hv.mem).unwrap();
        let ipi = ev.bind_ipi(&me(1), VcpuId(0), &hv.mem).unwrap();
        let ipi2 = ev.bind_ipi(&me(2), VcpuId(0), &hv.mem).unwrap();
        let ports = [a.unwrap(), b, c, d, e, ipi, ipi2];
        (hv, f, [g1, g2], ports)
    };
    for seed in 0..24 {
        let mut rng = Rng(seed);
        let (mut fast, mut ff, g, ports) = build();
        let (mut slow, mut sf, _, _) = build();
        assert_eq!(observable(&fast), observable(&slow));
        for step in 0..120 {
            let what = rng.below(100);
            let cur = fast.cpu.current.map(|i| fast.domains[i].id.0);
            let Some(cur) = cur else { break };
            let gd = &g[usize::from(cur - 1)];
            if what < 60 {
                // A send: random port, random pointer, random high bits of the command.
                let port = match rng.below(4) {
                    0 => rng.pick(&[0u32, 1, 2, 5, 63, 64, 1023, 4095, 4096, u32::MAX]),
                    _ => rng.pick(&ports).0,
                };
                let off = rng.pick(&[0usize, 8, PAGE_SIZE - 2, 3 * PAGE_SIZE + 100]);
                let va = match rng.below(10) {
                    0 => rng.pick(&[
                        0,
                        HV_ADDRESS,
                        (1 << 47) - 2,
                        DATA_VA + (DATA_PAGES * PAGE_SIZE) as u64,
                        u64::MAX - 1,
                    ]),
                    _ => DATA_VA + off as u64,
                };
                for hv in [&fast, &slow] {
                    put(hv, gd, off, &port.to_le_bytes());
                }
                let cmd = u64::from(EVTCHNOP_SEND) | (rng.below(3) << 32);
                if rng.chance(5) {
                    ff.rip = RIP_PAST_LOWER_HALF;
                    sf.rip = RIP_PAST_LOWER_HALF;
                }
                let args = [cmd, va, rng.next()];
                let rf = hypercall(&mut fast, &mut ff, 32, &args);
                sf.rax = 32;
                (sf.rdi, sf.rsi, sf.rdx) = (args[0], args[1], args[2]);
                sf.vector = GuestFrame::VECTOR_SYSCALL;
                let rs = slow.dispatch(&mut sf);
                assert_eq!(rf, rs, "seed {seed} step {step}");
                if rf == Resume::Idle || matches!(rf, Resume::Exit(_)) {
                    break;
                }
            } else if what < 80 {
                // Pending, mask, selector, upcall-pending and upcall-mask bits.
                let dom = rng.range(1, 2) as usize;
                let si = fast.domains[g[dom - 1].idx].shared_info.maddr();
                let at = rng.pick(&[0u64, 1, 8, 0x800, 0x801, 0xa00, 0xa01]);
                let byte = [rng.next() as u8];
                for hv in [&fast, &slow] {
                    hv.mem.write(si + at, &byte).unwrap();
                }
            } else if what < 88 {
                // Event callback at a mapped address, or none.
                let rip = rng.pick(&[0, ENTRY_RIP]);
                for (hv, f) in [(&mut fast, &mut ff), (&mut slow, &mut sf)] {
                    hypercall(hv, f, 4, &[rip, 0, 0]);
                }
            } else if what < 91 {
                // A hostile console ring: nothing in the hypervisor reads it.
                let prod = core::mem::offset_of!(XenconsInterface, out_prod) as u64;
                for hv in [&fast, &slow] {
                    hv.mem
                        .write(gd.ring.maddr() + prod, &5000u32.to_le_bytes())
                        .unwrap();
                }
            } else if what < 96 {
                for (hv, f) in [(&mut fast, &mut ff), (&mut slow, &mut sf)] {
                    hypercall(hv, f, 29, &[u64::from(SCHEDOP_YIELD), 0]);
                }
            } else {
                // Another event_channel_op (generic on both).
                put(&fast, gd, 0, &[0; 24]);
                put(&slow, gd, 0, &[0; 24]);
                for (hv, f) in [(&mut fast, &mut ff), (&mut slow, &mut sf)] {
                    hypercall(hv, f, 32, &[u64::from(EVTCHNOP_STATUS), DATA_VA]);
                }
            }
            assert_eq!(ff, sf, "seed {seed} step {step}");
            let ((fm, fs), (sm, ss)) = (observable(&fast), observable(&slow));
            assert_eq!(fs, ss, "seed {seed} step {step}");
            if fm != sm {
                let at = fm.iter().zip(&sm).position(|(a, b)| a != b);
                panic!("seed {seed} step {step}: memory differs at {at:x?}");
            }
        }
    }
}

/// The `SCHEDOP_yield` fast path of `hypercall` does what the generic dispatch does:
/// same result, registers, running vCPU, scheduler and timer state, console output, for
/// a domain alone, two domains taking turns, a command with high bits set (a C int) and
/// a RIP the generic path refuses to resume at.
#[test]
fn yield_fast_path_matches_generic_dispatch() {
    let scenarios: [(u16, u64, Option<u64>); 4] = [
        (1, SCHEDOP_YIELD as u64, None),
        (2, SCHEDOP_YIELD as u64, None),
        (2, (1 << 32) | SCHEDOP_YIELD as u64, None),
        (2, SCHEDOP_YIELD as u64, Some(RIP_PAST_LOWER_HALF)),
    ];
    for (doms, cmd, rip) in scenarios {
        let setup = || {
            let mut hv = new_hv();
            for d in 1..=doms {
                add_domain(&mut hv, d, "y", false);
            }
            let f = started(&mut hv);
            (hv, f)
        };
        let (mut fast, mut ff) = setup();
        let (mut slow, mut fs) = setup();
        for step in 0..6u64 {
            for (hv, f) in [(&mut fast, &mut ff), (&mut slow, &mut fs)] {
                hv.platform.tsc.set(1_000_000 + step * 777_777);
                f.rax = u64::from(nr::SCHED_OP);
                f.rdi = cmd;
                f.vector = GuestFrame::VECTOR_SYSCALL;
                if let Some(r) = rip {
                    f.rip = r;
                }
            }
            let a = fast.hypercall(&mut ff);
            let b = slow.dispatch(&mut fs);
            assert_eq!(a, b, "step {step}");
            assert_eq!(ff, fs, "step {step}");
            assert_eq!(fast.cpu.current, slow.cpu.current);
            assert_eq!(fast.cpu.timer, slow.cpu.timer);
            assert_eq!(fast.platform.timer, slow.platform.timer);
            assert_eq!(console(&fast), console(&slow));
            for d in 1..=doms {
                let id = (DomId(d), VcpuId(0));
                assert_eq!(fast.sched.state(id), slow.sched.state(id));
            }
            assert_eq!(fast.timers.earliest(), slow.timers.earliest());
            if !matches!(a, Resume::Guest { .. }) {
                break;
            }
        }
    }
}

/// However the timer is re-armed (skipped when unchanged, TSC values remembered), the
/// hardware always holds the earliest deadline: guest timers and the slice end.
#[test]
fn the_hardware_timer_holds_the_earliest_deadline() {
    let mut hv = new_hv();
    add_domain(&mut hv, 1, "a", false);
    add_domain(&mut hv, 2, "b", false);
    let mut f = started(&mut hv);
    let mut rng = crate::testutil::Rng(7);
    let mut tsc = 1_000_000u64;
    for step in 0..400 {
        tsc += rng.range(0, 4_000_000);
        hv.platform.tsc.set(tsc);
        match rng.range(0, 3) {
            // set_timer_op: a single-shot deadline, sometimes the same as before.
            0 => {
                let when = tsc + rng.range(0, 3) * 5_000_000;
                call(&mut hv, &mut f, 15, when, 0, 0);
            }
            1 => {
                let _ = hv.timer_tick(&mut f);
            }
            _ => {
                call(&mut hv, &mut f, 29, SCHEDOP_YIELD as u64, 0, 0);
            }
        }
        let want = hv.timers.earliest();
        assert_eq!(
            hv.platform.timer,
            want.map(|ns| hv.clock.tsc_at(ns)),
            "step {step}"
        );
    }
}

/// `resume_if_returnable` decides the no-upcall return from one read of vCPU 0's
/// pending and mask bytes; the result must be what the full upcall check
/// (`enter_current`) gives: two identical hypervisors, random pending/mask bytes, event
/// callback set or not; same `Resume`, registers, memory and domain states.
#[test]
fn resume_if_returnable_matches_enter_current() {
    use crate::testutil::Rng;
    for seed in 0..16 {
        let mut rng = Rng(seed);
        let build = || {
            let mut hv = new_hv();
            let g = add_domain(&mut hv, 1, "a", false);
            let f = started(&mut hv);
            (hv, f, g)
        };
        let (mut fast, mut ff, g) = build();
        let (mut slow, mut sf, _) = build();
        let mut delivered = 0;
        for step in 0..200 {
            if fast.cpu.current.is_none() {
                break;
            }
            match rng.below(10) {
                0 => {
                    let rip = rng.pick(&[0, ENTRY_RIP]);
                    for (hv, f) in [(&mut fast, &mut ff), (&mut slow, &mut sf)] {
                        hypercall(hv, f, 4, &[rip, 0, 0]);
                    }
                }
                _ => {
                    let si = fast.domains[g.idx].shared_info.maddr();
                    let bytes = [rng.pick(&[0u8, 0, 1, 0xff]), rng.pick(&[0u8, 0, 1, 0x80])];
                    for hv in [&fast, &slow] {
                        hv.mem.write(si, &bytes).unwrap();
                    }
                }
            }
            let before = ff;
            let r = fast.resume_current();
            let rf = fast.resume_if_returnable(&mut ff, r);
            let rs = slow.enter_current(&mut sf);
            assert_eq!(rf, rs, "seed {seed} step {step}");
            assert_eq!(ff, sf, "seed {seed} step {step}");
            if observable(&fast) != observable(&slow) {
                panic!("seed {seed} step {step}: state differs");
            }
            if ff != before {
                delivered += 1;
            }
        }
        // Both outcomes happened: upcalls delivered and plain returns.
        assert!(delivered > 0, "seed {seed}: no upcall delivered");
    }
}

#[path = "grant_map_tests.rs"]
mod grant_map;

#[path = "grant_ops_tests.rs"]
mod grant_ops;

#[test]
fn console_io_reads_dropped_bytes_too() {
    // Past the rate limit a domU's bytes are not printed, but they are still read: an
    // unreadable buffer is -EFAULT (Xen reads every byte, whatever it prints).
    let mut hv = new_hv();
    let g = add_domain(&mut hv, 1, "one", false);
    let mut f = started(&mut hv);
    let chunk = 16 * 1024usize;
    let mut line = std::vec![b'x'; chunk - 1];
    line.push(b'\n');
    put(&hv, &g, 0, &line);
    for _ in 0..8 {
        call(&mut hv, &mut f, 18, 0, chunk as u64, DATA_VA);
        assert_eq!(ret(&f), 0);
    }
    assert!(console(&hv).contains("console_io rate limit, dropping output"));
    let past = console(&hv).len();
    let unmapped = DATA_VA + (DATA_PAGES * PAGE_SIZE) as u64;
    call(&mut hv, &mut f, 18, 0, 16, unmapped);
    assert_eq!(ret(&f), -14);
    call(&mut hv, &mut f, 18, 0, 16, DATA_VA);
    assert_eq!(ret(&f), 0);
    assert_eq!(console(&hv).len(), past, "dropped, not printed");
}
