//! `pv-guest`: the toy ported PV kernel. It boots from start_info, prints what it was given
//! and what the hypervisor reports about itself, and powers off. It runs as a domU on this
//! project's hypervisor and as dom0 on real Xen.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod kernel {
    use pv_guest::{StartInfo, bytes_str, io_println, println};
    use xen_pv_abi::hypercall::{
        xen_capabilities, xen_extraversion, xen_get_features, xen_version,
    };
    use xen_pv_abi::version::{CapabilitiesInfo, XENVER_VERSION};
    use xen_pv_abi::{nr, raw};

    xen_pv_abi::xen_hypercall_page!(hypercall_page);

    // No SUPPORTED_FEATURES note: Xen would then insist on XENFEAT_dom0 for dom0.
    xen_pv_abi::xen_elf_notes! {
        guest_os: "pv-guest",
        guest_version: "0.1",
        xen_version: "xen-3.0",
        loader: "generic",
        virt_base: pv_guest::VIRT_BASE,
        paddr_offset: 0,
        entry: pv_guest::_start,
        hypercall_page: hypercall_page,
    }

    pv_guest::entry!(main);

    fn main(si: &'static StartInfo) -> ! {
        println!("pv-guest: hello via console ring");
        io_println!("pv-guest: hello via console_io");
        print_start_info(si);
        // `demo=blk`: the first PV disk through the kit's blkfront only.
        if pv_guest::cmdline::value(si.cmd_line_bytes(), "demo") == Some(&b"blk"[..]) {
            pv_guest::blk_demo::run(si);
            println!("pv-guest: powering off");
            pv_guest::poweroff()
        }
        // `demo=net net=<role> ...`: the first vif through the kit's netfront.
        if pv_guest::cmdline::value(si.cmd_line_bytes(), "demo") == Some(&b"net"[..]) {
            pv_guest::net_demo::run(si);
            println!("pv-guest: powering off");
            pv_guest::poweroff()
        }
        // `demo=front|back peer=<id>`: the split-driver handshake only.
        if let Some(req) = pv_guest::split::request(si.cmd_line_bytes()) {
            match req {
                Ok(req) => pv_guest::split_demo::run(si, req),
                Err(e) => println!("split: bad command line: {e:?}"),
            }
            println!("pv-guest: powering off");
            pv_guest::poweroff()
        }
        print_version();
        print_via_hypercall_page();
        print_time(si);
        own_page_tables(si);
        traps_and_user_mode(si);
        pv_guest::events_demo::run(si);
        println!("pv-guest: powering off");
        pv_guest::poweroff()
    }

    fn print_start_info(si: &StartInfo) {
        println!(
            "start_info: magic={} nr_pages={} shared_info={:#x} flags={:#x}",
            bytes_str(si.magic_str()),
            si.nr_pages,
            si.shared_info,
            si.flags
        );
        if si.is_initial_domain() {
            println!(
                "start_info: dom0 console info_off={} info_size={}",
                si.console.dom0_info_off(),
                si.console.dom0_info_size()
            );
        } else {
            println!(
                "start_info: store_mfn={:#x} store_evtchn={} console_mfn={:#x} console_evtchn={}",
                si.store_mfn,
                si.store_evtchn,
                si.console.domu_mfn().0,
                si.console.domu_evtchn().0
            );
        }
        println!(
            "start_info: pt_base={:#x} nr_pt_frames={} mfn_list={:#x} cmdline=\"{}\"",
            si.pt_base,
            si.nr_pt_frames,
            si.mfn_list,
            bytes_str(si.cmd_line_bytes())
        );
    }

    fn print_version() {
        let (major, minor) = match xen_version() {
            Ok(v) => v,
            Err(e) => {
                println!("xen_version: failed: {e}");
                return;
            }
        };
        let extra = xen_extraversion().unwrap_or([0; 16]);
        let mut caps: CapabilitiesInfo = [0; 1024];
        let _ = xen_capabilities(&mut caps);
        let features = xen_get_features(0).unwrap_or(0);
        println!(
            "xen_version: {major}.{minor}{} caps=\"{}\" features[0]={features:#x}",
            bytes_str(until_nul(&extra)),
            bytes_str(until_nul(&caps))
        );
    }

    /// Calls xen_version through the hypercall page the hypervisor filled for the
    /// HYPERCALL_PAGE note.
    fn print_via_hypercall_page() {
        let page = &raw const hypercall_page;
        let Some(stub) = raw::stub_address(page as u64, nr::XEN_VERSION) else {
            return;
        };
        // A filled stub starts with `push %rcx` (0x51); an untouched page is all `int3`.
        // SAFETY: the stub lies inside the 4 KiB page reserved in our image.
        let first = unsafe { (stub as *const u8).read_volatile() };
        if first != 0x51 {
            println!("hypercall page: not filled (first byte {first:#x})");
            return;
        }
        // SAFETY: the page holds the hypervisor's stubs (checked above) in our executable
        // image; XENVER_version takes no buffer.
        let ret = unsafe {
            raw::page_call(
                page as u64,
                nr::XEN_VERSION,
                [u64::from(XENVER_VERSION), 0, 0, 0, 0],
            )
        };
        match xen_pv_abi::Errno::check(ret) {
            Ok(v) => println!("hypercall page: xen_version={}.{}", v >> 16, v & 0xffff),
            Err(e) => println!("hypercall page: xen_version failed: {e}"),
        }
    }

    /// Maps shared_info (pv_guest::events) and prints the system time of vCPU 0 read
    /// with the pvclock version protocol (xen_pv_abi::time). Skipped when the hypervisor
    /// cannot map it.
    fn print_time(si: &StartInfo) {
        let Ok(shared) = pv_guest::events::shared_info(si) else {
            return;
        };
        match xen_pv_abi::time::system_time_ns(shared, xen_pv_abi::VcpuId(0)) {
            Ok(ns) => println!("time: system_time_ns={ns}"),
            Err(e) => println!("time: unreadable: {e}"),
        }
    }

    /// Replaces the bootstrap page tables with tables the kernel built (pv_guest::paging).
    fn own_page_tables(si: &StartInfo) {
        match pv_guest::paging::switch_to_own_tables(si) {
            Ok(s) => {
                println!(
                    "pv-guest: built own page tables ({} frames), switched CR3",
                    s.frames
                );
                if s.old_writable == s.old_total {
                    println!("pv-guest: old bootstrap tables writable again");
                } else {
                    println!(
                        "pv-guest: only {} of {} old bootstrap tables writable again",
                        s.old_writable, s.old_total
                    );
                }
            }
            Err(e) => println!("pv-guest: own page tables failed: {e}"),
        }
    }

    /// Trap table, a page fault the kernel handles itself, and a user-mode task making
    /// a system call (pv_guest::usermode).
    fn traps_and_user_mode(si: &StartInfo) {
        use pv_guest::usermode;
        if let Err(e) = usermode::install_trap_table() {
            println!("pv-guest: set_trap_table failed: {e}");
            return;
        }
        println!("pv-guest: trap table installed");
        match usermode::demand_page_demo(si) {
            Ok(va) => println!("pv-guest: page fault at {va:#x} handled"),
            Err(e) => println!("pv-guest: page fault demo skipped: {e}"),
        }
        match usermode::user_mode_demo(si) {
            Ok(()) => println!("pv-guest: back in kernel"),
            Err(e) => println!("pv-guest: user mode demo skipped: {e}"),
        }
    }

    fn until_nul(b: &[u8]) -> &[u8] {
        let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        &b[..n]
    }
}
