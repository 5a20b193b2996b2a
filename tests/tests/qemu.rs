//! Boots the hypervisor with guests in QEMU and asserts the console transcript and the
//! exit status (see the output contract in docs/ARCHITECTURE.md and the README).
//!
//! The images are built once per test binary. A missing QEMU is installed when running
//! as root; otherwise the tests fail with the install command: they never skip.

use std::path::PathBuf;
use std::time::Duration;
use xtask::bench::{
    BenchLine, CASES, CaseKind, bench_ours, bench_ours_served, bench_ours_two_domains,
};
use xtask::bundle::{DiskFile, GuestFile};
use xtask::images::Images;
use xtask::qemu::{HvResult, HvRun, Outcome, SingleGuest, run_hypervisor};

/// Hang guard for one QEMU run; a normal run takes well under a second.
const TIMEOUT: Duration = Duration::from_secs(120);

fn images() -> &'static Images {
    xtask::images::prepared()
}

fn guest(name: &str) -> GuestFile {
    GuestFile::new(images().guest(name))
}

/// Boots the guests (in bundle order) and returns the run; a timeout or a QEMU that
/// cannot start fails the test.
fn boot(guests: Vec<GuestFile>) -> HvResult {
    boot_run(HvRun {
        hypervisor: images().hypervisor(),
        guests,
        ..HvRun::default()
    })
}

fn boot_run(mut run: HvRun) -> HvResult {
    run.timeout = Some(TIMEOUT);
    match run_hypervisor(&run) {
        Ok(result) => result,
        Err(e) => panic!("QEMU run failed: {e}"),
    }
}

/// Asserts every expected fragment appears in some line and the run ended as expected;
/// on failure prints the whole transcript.
#[track_caller]
fn assert_run(result: &HvResult, expected_lines: &[&str], outcome: Outcome) {
    let missing: Vec<&str> = expected_lines
        .iter()
        .copied()
        .filter(|l| !result.transcript.contains(l))
        .collect();
    assert!(
        missing.is_empty() && result.outcome == outcome,
        "expected {outcome:?}, got {:?} ({})\nmissing lines: {missing:#?}\n--- transcript ---\n{}--- QEMU stderr ---\n{}",
        result.outcome,
        result.outcome.explain(),
        result.transcript.text(),
        result.stderr
    );
}

#[test]
fn pv_guest_boots_prints_and_powers_off() {
    let result = boot_run(SingleGuest::default().to_run(images()));
    assert_run(
        &result,
        &[
            "[d1 pv-guest] pv-guest: hello via console ring",
            "[d1 pv-guest] pv-guest: hello via console_io",
            "[d1 pv-guest] start_info: magic=xen-3.0-x86_64 nr_pages=",
            "[d1 pv-guest] xen_version: ",
            // Own page tables (pv-guest/src/paging.rs).
            "[d1 pv-guest] pv-guest: built own page tables (",
            "[d1 pv-guest] pv-guest: old bootstrap tables writable again",
            "[d1 pv-guest] pv-guest: user task runs on its own root (",
            // Traps and user mode (pv-guest/src/usermode.rs).
            "[d1 pv-guest] pv-guest: trap table installed",
            "[d1 pv-guest] pv-guest: page fault at 0xffffffff8",
            "[d1 pv-guest] pv-guest: user task says hello via syscall",
            "[d1 pv-guest] pv-guest: user task cannot read kernel memory",
            "[d1 pv-guest] pv-guest: back in kernel",
            // Event channels and timers (pv-guest/src/events_demo.rs).
            "[d1 pv-guest] events: timer: 3 one-shot timers fired, blocked until each",
            "[d1 pv-guest] events: loopback: 5 sends, 5 upcalls on the bound end",
            "(hv) d1 pv-guest: shut down: poweroff",
            // Every frame of the ended domains was freed.
            "(hv) frames: 0 still owned by ended domains",
            "(hv) all domains ended: 2 powered off, 0 failed",
        ],
        Outcome::AllPoweredOff,
    );
}

#[test]
fn disks_reach_the_control_domain_as_named_boot_modules() {
    let dir = std::env::temp_dir().join(format!("qemu-disks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    std::fs::write(&a, vec![0xa5u8; 5000]).unwrap();
    std::fs::write(&b, vec![0x5au8; 70_000]).unwrap();
    let mut run = SingleGuest::default().to_run(images());
    run.disks = vec![
        DiskFile {
            path: a,
            name: "xvda".into(),
        },
        DiskFile {
            path: b,
            name: "data".into(),
        },
    ];
    let result = boot_run(run);
    let _ = std::fs::remove_dir_all(&dir);
    assert_run(
        &result,
        &[
            "[d0 control] disk xvda: 5000 bytes",
            "[d0 control] disk data: 70000 bytes",
            "[d1 pv-guest] pv-guest: hello via console ring",
            "(hv) all domains ended: 2 powered off, 0 failed",
        ],
        Outcome::AllPoweredOff,
    );
}

#[test]
fn a_boot_stack_overflow_hits_the_guard_page_and_crashes_only_that_guest() {
    let result = boot(vec![guest("stack-overflow"), guest("console-io-only")]);
    let text = result.transcript.text();
    assert!(
        text.contains("[d1 stack-overflow] stack-overflow: survived"),
        "8 levels of stack did not fit:\n{text}"
    );
    assert!(
        result
            .transcript
            .line_starting_with("(hv) d1 stack-overflow: crashed: #PF")
            .is_some(),
        "no page-fault crash report for the overflow:\n{text}"
    );
    assert_eq!(
        text.matches("stack-overflow: survived").count(),
        1,
        "the 1 MiB recursion returned:\n{text}"
    );
    assert!(
        result
            .transcript
            .line_starting_with("(hv) d2 console-io-only: shut down: poweroff")
            .is_some(),
        "the other guest did not finish:\n{text}"
    );
}

#[test]
fn privileged_instruction_crashes_the_guest() {
    let result = boot(vec![guest("privileged")]);
    assert_run(
        &result,
        &[
            "[d1 privileged] privileged: executing cli",
            "(hv) all domains ended: 1 powered off, 1 failed",
        ],
        Outcome::DomainFailed,
    );
    assert!(
        result
            .transcript
            .line_starting_with("(hv) d1 privileged: crashed: #GP")
            .is_some(),
        "no #GP crash report:\n{}",
        result.transcript.text()
    );
    assert!(
        !result.transcript.contains("survived"),
        "the guest survived cli:\n{}",
        result.transcript.text()
    );
}

#[test]
fn hypervisor_keeps_running_other_domains_after_a_crash() {
    let result = boot(vec![guest("privileged"), guest("pv-guest")]);
    assert_run(
        &result,
        &[
            "[d1 privileged] privileged: executing cli",
            "[d2 pv-guest] pv-guest: hello via console ring",
            "(hv) d2 pv-guest: shut down: poweroff",
            "(hv) all domains ended: 2 powered off, 1 failed",
        ],
        Outcome::DomainFailed,
    );
    assert!(
        result
            .transcript
            .line_starting_with("(hv) d1 privileged: crashed: #GP")
            .is_some(),
        "no #GP crash report for d1:\n{}",
        result.transcript.text()
    );
}

#[test]
fn image_without_xen_notes_is_refused() {
    let result = boot(vec![guest("no-notes")]);
    assert_run(
        &result,
        &[
            "(hv) d1 no-notes: refused: not a Xen-ELF image (no Xen notes)",
            "(hv) all domains ended: 1 powered off, 1 failed",
        ],
        Outcome::DomainFailed,
    );
}

#[test]
fn hypervisor_addresses_are_refused_with_efault() {
    let result = boot(vec![guest("bad-pointer")]);
    assert_run(
        &result,
        &[
            "[d1 bad-pointer] bad-pointer: console_io(hypervisor address) = -14",
            "[d1 bad-pointer] bad-pointer: xen_version(hypervisor address) = -14",
            "(hv) d1 bad-pointer: shut down: poweroff",
        ],
        Outcome::AllPoweredOff,
    );
}

#[test]
fn hostile_mmu_attempts_are_refused_and_others_keep_running() {
    let result = boot(vec![guest("hostile-mmu"), guest("console-io-only")]);
    let d = "[d1 hostile-mmu] hostile-mmu:";
    let lines: Vec<String> = [
        "write-map the L4 = -22",
        "map a frame not ours = -22",
        "map a hypervisor frame = -22",
        "plain write to a free frame = 0",
        "pin self-mapping L1 = -22",
        "CR3 = writable page = -22",
        "CR3 = self-mapping L1 = -22",
        "clear L4 slot 256 = -22",
        "replace L4 slot 262 = -22",
        "huge batch from hypervisor memory = -14 (done 0)",
        // Xen accepts unpinning the live root; CR3 keeps it a validated L4.
        "unpin the live L4 = 0",
        "then write-map it = -22",
        "pin it again = 0",
        "still alive",
    ]
    .iter()
    .map(|l| format!("{d} {l}"))
    .collect();
    let mut expected: Vec<&str> = lines.iter().map(String::as_str).collect();
    expected.push("(hv) d1 hostile-mmu: shut down: poweroff");
    expected.push("(hv) d2 console-io-only: shut down: poweroff");
    assert_run(&result, &expected, Outcome::AllPoweredOff);
}

/// What Xen 4.17 returns for each case of `hostile-evtchn` (0 or a negated errno; a
/// few cases report a count or a flag instead).
const HOSTILE_EVTCHN_CASES: &[(&str, i64)] = &[
    // FIFO: frames not ours, our own L4, no such frame; offsets; vCPUs; priorities.
    ("bind_ipi", 0),
    ("set_priority_2level", -38),
    ("expand_array_before_init", -95),
    ("init_control_foreign_mfn", -22),
    ("init_control_out_of_ram", -22),
    ("init_control_hypervisor_mfn", -22),
    ("init_control_own_l4", -22),
    ("init_control_misaligned", -22),
    ("init_control_crosses_page", -22),
    ("init_control_vcpu1", -2),
    ("init_control", 0),
    ("init_control_again", -22),
    ("expand_array_own_l4", -22),
    ("expand_array_foreign_mfn", -22),
    ("expand_array_out_of_ram", -22),
    ("expand_array", 0),
    ("set_priority_16", -22),
    ("set_priority_max", -22),
    ("set_priority_invalid_port", -22),
    ("set_priority_15", 0),
    ("fifo_send_ipi", 0),
    ("fifo_poll_pending_ipi", 0),
    ("reset_self", 0),
    ("expand_array_after_reset", -95),
    ("status_after_reset", 0),
    ("ipi_closed_by_reset", 0),
    ("alloc_unbound_for_peer", 0),
    // Invalid ports; port 0 exists (reserved) but cannot be used.
    ("send_port0", -22),
    ("close_port0", -22),
    ("bind_vcpu_port0", -22),
    ("status_port0", 0),
    ("unmask_port0", 0),
    ("bind_loopback_port0", -22),
    ("send_port1024", -22),
    ("close_port1024", -22),
    ("bind_vcpu_port1024", -22),
    ("status_port1024", -22),
    ("unmask_port1024", -22),
    ("bind_loopback_port1024", -22),
    ("send_port4096", -22),
    ("close_port4096", -22),
    ("bind_vcpu_port4096", -22),
    ("status_port4096", -22),
    ("unmask_port4096", -22),
    ("bind_loopback_port4096", -22),
    ("send_port_max", -22),
    ("close_port_max", -22),
    ("bind_vcpu_port_max", -22),
    ("status_port_max", -22),
    ("unmask_port_max", -22),
    ("bind_loopback_port_max", -22),
    // The other domain's ports, domains that do not exist.
    ("bind_foreign_console_port", -22),
    ("bind_foreign_port_max", -22),
    ("bind_no_domain", -3),
    ("alloc_unbound_in_other_domain", -1),
    ("alloc_unbound_in_no_domain", -3),
    ("status_foreign_port", -1),
    ("status_foreign_port_max", -22),
    ("status_no_domain", -3),
    ("reset_other_domain", -1),
    ("reset_no_domain", -3),
    // VIRQs.
    ("bind_virq_timer", 0),
    ("bind_virq_timer_twice", -17),
    ("bind_global_virq_vcpu1", -22),
    ("bind_virq_timer_vcpu5", -2),
    ("bind_virq_24", -22),
    ("bind_virq_max", -22),
    ("send_virq_port", -22),
    ("bind_vcpu_per_vcpu_virq", -22),
    ("bind_vcpu_vcpu1", -2),
    ("bind_ipi_vcpu1", -2),
    ("close_virq_timer", 0),
    ("bind_virq_timer_after_close", 0),
    ("close_virq_timer_again", 0),
    // Closed ports.
    ("alloc_unbound_self", 0),
    ("close_unbound", 0),
    ("send_closed", -22),
    ("close_closed", -22),
    ("bind_vcpu_closed", -22),
    ("unmask_closed", 0),
    ("status_closed", 0),
    ("status_closed_is_closed", 0),
    ("bind_loopback_closed", -22),
    // The port quota (Xen's default max_evtchn_port 1023).
    ("exhaust_ports", -28),
    ("exhausted_at_1023", 1023),
    ("bind_ipi_exhausted", -28),
    ("close_all", 0),
    ("alloc_after_close_all", 0),
    ("close_again", 0),
    // 100000 sends each: loopback, unbound, invalid.
    ("loopback_alloc", 0),
    ("loopback_bind", 0),
    ("unbound_alloc", 0),
    ("flood_loopback", 0),
    ("flood_unbound", 0),
    ("flood_invalid_port", -22),
    ("loopback_pending", 1),
    ("poll_pending_port", 0),
    ("status_after_flood", 0),
    // Ports are handed out lowest first: 1 is the peer's, 2 and 3 the loopback pair.
    ("loopback_peer_port", 3),
    ("close_loopback_end", 0),
    ("other_end_unbound", 1),
    ("send_half_closed", 0),
    // SCHEDOP_poll and remote_shutdown.
    ("poll_129_ports", -22),
    ("poll_bad_port_list", -14),
    ("poll_bad_argument", -14),
    ("poll_invalid_port", -22),
    ("poll_port_max", -22),
    ("poll_port_alloc", 0),
    ("poll_past_timeout", 0),
    ("remote_shutdown_peer", -1),
    // Timers.
    ("vcpu_op_vcpu1", -2),
    ("vcpu_op_vcpu_max", -2),
    ("periodic_below_1ms", -22),
    ("periodic_zero", -22),
    ("periodic_1ms", 0),
    ("periodic_stop", 0),
    ("singleshot_future_in_past", -62),
    ("singleshot_stop", 0),
    ("set_timer_op_huge", 0),
    ("set_timer_op_cancel", 0),
    // The legacy hypercall 16.
    ("compat_send_invalid", -22),
    ("compat_status_port0", 0),
    ("compat_unknown_cmd", -38),
    ("compat_bad_pointer", -14),
    ("evtchn_unknown_cmd", -38),
    // After all that, the other domain still runs and answers.
    ("peer_ping_pong", 10),
    ("status_peer_port_after_peer_ended", 0),
    ("peer_port_unbound", 1),
    ("poll_timeout_alloc", 0),
    ("poll_timeout", 0),
    ("poll_timeout_waited_1ms", 1),
];

#[test]
fn hostile_event_channel_use_is_refused_and_the_peer_keeps_running() {
    // The peer is the bench guest in its ping-pong role: it binds the port d1 reserves
    // for it and answers each of d1's 10 events after d1's floods.
    let mut peer = guest("bench").cmdline("case=evtchn_ping_pong_2dom role=2 peer=1 iterations=10");
    peer.name = "peer".into();
    let result = boot(vec![guest("hostile-evtchn"), peer]);
    let d = "[d1 hostile-evtchn]";
    let lines: Vec<String> = HOSTILE_EVTCHN_CASES
        .iter()
        .map(|(name, want)| format!("{d} case {name}: got {want} want {want}"))
        .collect();
    let summary = format!(
        "{d} hostile-evtchn: {} cases, 0 unexpected",
        HOSTILE_EVTCHN_CASES.len()
    );
    let mut expected: Vec<&str> = lines.iter().map(String::as_str).collect();
    expected.extend([
        summary.as_str(),
        "[d1 hostile-evtchn] hostile-evtchn: still alive",
        "[d2 peer] BENCH done",
        "(hv) d1 hostile-evtchn: shut down: poweroff",
        "(hv) d2 peer: shut down: poweroff",
        "(hv) all domains ended: 3 powered off, 0 failed",
    ]);
    assert_run(&result, &expected, Outcome::AllPoweredOff);
    // Every case printed is one of the table's, each once.
    let printed: Vec<&String> = result
        .transcript
        .lines
        .iter()
        .filter(|l| l.starts_with(&format!("{d} case ")))
        .collect();
    assert_eq!(
        printed.len(),
        HOSTILE_EVTCHN_CASES.len(),
        "case lines: {printed:#?}"
    );
    // The peer's last answer came after the floods: it was still scheduled then.
    let at = |needle: &str| {
        result
            .transcript
            .lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line {needle:?}"))
    };
    // (The guest's own peer_ping_pong case, played after the floods, shows the peer was
    // still scheduled; its lines keep their order, unlike against `(hv)` lines, which
    // the hypervisor prints at once while the control domain prints console lines when
    // it next runs.)
    assert!(at("case flood_invalid_port:") < at("case peer_ping_pong:"));
    assert!(
        !result.transcript.contains("ping-pong peer failed"),
        "{}",
        result.transcript.text()
    );
}

#[test]
fn guest_gdt_is_installed_checked_and_used() {
    let result = boot(vec![guest("gdt"), guest("console-io-only")]);
    assert_run(
        &result,
        &[
            "[d1 gdt] gdt: made read-only = 0",
            "[d1 gdt] gdt: set_gdt = 0",
            "[d1 gdt] gdt: loaded selector 0xb",
            // Xen raises a ring-3 kernel's DPL 0 to 3 rather than refusing it.
            "[d1 gdt] gdt: update_descriptor DPL0 data = 0, stored with DPL 3",
            "[d1 gdt] gdt: loaded selector 0x13",
            "[d1 gdt] gdt: update_descriptor TSS = -22",
            "[d1 gdt] gdt: update_descriptor misaligned = -22",
            "[d1 gdt] gdt: entry 2 still 0xcff3000000ffff",
            "[d1 gdt] ldt: set_ldt on a writable page = -22",
            "[d1 gdt] ldt: made read-only = 0",
            "[d1 gdt] ldt: set_ldt = 0",
            "[d1 gdt] ldt: loaded selector 0x7",
            "(hv) d1 gdt: shut down: poweroff",
            "(hv) d2 console-io-only: shut down: poweroff",
        ],
        Outcome::AllPoweredOff,
    );
}

#[test]
fn unknown_hypercalls_return_enosys() {
    let result = boot(vec![guest("unknown-hypercall")]);
    assert_run(
        &result,
        &[
            "[d1 unknown-hypercall] unknown-hypercall: hypercall 11 = -38",
            "[d1 unknown-hypercall] unknown-hypercall: hypercall 31 = -38",
            "[d1 unknown-hypercall] unknown-hypercall: hypercall 60 = -38",
            "(hv) d1 unknown-hypercall: shut down: poweroff",
        ],
        Outcome::AllPoweredOff,
    );
}

#[test]
fn any_pv_kernel_boots_through_the_guest_path_option() {
    // What `cargo xtask run --guest <path>` does: name from the file stem, defaults.
    let run = SingleGuest {
        path: Some(images().guest("console-io-only")),
        ..SingleGuest::default()
    }
    .to_run(images());
    let result = boot_run(run);
    assert_run(
        &result,
        &[
            "[d1 console-io-only] console-io-only: hello",
            "(hv) d1 console-io-only: shut down: poweroff",
        ],
        Outcome::AllPoweredOff,
    );
}

/// W^X: the hypervisor's text is mapped read-only and its data non-executable, so the
/// debug words that write to `.text` or jump into `.data` end in a hypervisor #PF.
#[test]
fn hypervisor_text_is_read_only_and_data_not_executable() {
    let cases = [
        ("debug-write-text", "error=0x3 "),
        ("debug-exec-data", "error=0x11 "),
    ];
    for (word, error) in cases {
        let result = boot_run(HvRun {
            hypervisor: images().hypervisor(),
            guests: vec![guest("pv-guest")],
            cmdline: word.into(),
            ..HvRun::default()
        });
        assert_run(
            &result,
            &[&format!(
                "(hv) PANIC: hypervisor exception vector=14 {error}"
            )],
            Outcome::HypervisorFailure,
        );
        assert!(
            !result.transcript.contains("[d1 pv-guest]"),
            "{word}: a guest ran after the fault"
        );
    }
}

/// The hypervisor stack has an unmapped guard page below it: `debug-stack-overflow`
/// recurses into it; the #PF cannot push its frame there, so it escalates to a double
/// fault, which runs on its own (IST) stack and reports the overflow.
#[test]
fn hypervisor_stack_overflow_hits_the_guard_page() {
    let result = boot_run(HvRun {
        hypervisor: images().hypervisor(),
        guests: vec![guest("pv-guest")],
        cmdline: "debug-stack-overflow".into(),
        ..HvRun::default()
    });
    assert_run(
        &result,
        &[
            "(hv) PANIC: hypervisor exception vector=8 error=0x0 ",
            "(hv)   hypervisor stack overflow (guard page hit)",
        ],
        Outcome::HypervisorFailure,
    );
    assert!(
        !result.transcript.contains("[d1 pv-guest]"),
        "a guest ran after the overflow"
    );
}

/// Xen's reserved range, which PV guests never map: the hypervisor must live inside it
/// (except its 32-bit boot code, which runs at its physical address).
const XEN_RESERVED: std::ops::Range<u64> = 0xffff_8000_0000_0000..0xffff_8800_0000_0000;

#[test]
fn hypervisor_is_linked_inside_xens_reserved_range() {
    let path: PathBuf = images().hypervisor();
    let data = std::fs::read(&path).expect("read the hypervisor image");
    let file = elf::ElfBytes::<elf::endian::LittleEndian>::minimal_parse(&data)
        .expect("the hypervisor is an ELF");
    let (headers, names) = file
        .section_headers_with_strtab()
        .expect("section headers parse");
    let (headers, names) = (
        headers.expect("has section headers"),
        names.expect("has section names"),
    );
    let mut boot_sections = 0;
    let mut misplaced = Vec::new();
    for sh in headers.iter() {
        let name = names.get(sh.sh_name as usize).unwrap_or("?");
        if sh.sh_flags & u64::from(elf::abi::SHF_ALLOC) == 0 || sh.sh_size == 0 {
            continue;
        }
        if name.starts_with(".boot") {
            boot_sections += 1;
            continue;
        }
        let end = sh.sh_addr.checked_add(sh.sh_size);
        let inside =
            XEN_RESERVED.contains(&sh.sh_addr) && end.is_some_and(|e| e <= XEN_RESERVED.end);
        if !inside {
            misplaced.push(format!(
                "{name} at {:#x}..{:#x}",
                sh.sh_addr,
                sh.sh_addr.wrapping_add(sh.sh_size)
            ));
        }
    }
    assert!(
        misplaced.is_empty(),
        "sections outside {XEN_RESERVED:#x?}: {misplaced:#?}"
    );
    assert!(boot_sections > 0, "no .boot* section in {}", path.display());
}

#[test]
fn bench_is_deterministic() {
    // Every deterministic run twice: the default run (single-domain cases) and one run
    // per two-domain case. Cases our hypervisor cannot run yet print `unsupported=` and
    // must do so identically.
    let single = || -> Vec<BenchLine> {
        bench_ours(images(), None, 1000, TIMEOUT)
            .unwrap_or_else(|e| panic!("bench run failed: {e}"))
    };
    let two = |case: &str| -> Vec<BenchLine> {
        bench_ours_two_domains(images(), case, 1000, TIMEOUT)
            .unwrap_or_else(|e| panic!("{case} run failed: {e}"))
    };
    let first = single();
    assert_eq!(first, single(), "two deterministic runs differ");
    for case in CASES.iter().filter(|c| c.kind == CaseKind::Single) {
        assert!(
            first.iter().any(|l| l.name == case.name),
            "no BENCH line for {}: {first:?}",
            case.name
        );
    }
    let xen_version = first
        .iter()
        .find(|l| l.name == "xen_version")
        .and_then(|l| l.measurement())
        .unwrap_or_else(|| panic!("xen_version must be measured: {first:?}"));
    assert_eq!(xen_version.iterations, 1000);
    assert!(
        xen_version.total > xen_version.baseline,
        "hypercalls cost nothing? {xen_version:?}"
    );
    for case in CASES.iter().filter(|c| c.kind == CaseKind::TwoDomains) {
        let a = two(case.name);
        assert_eq!(
            a,
            two(case.name),
            "two deterministic {} runs differ",
            case.name
        );
        let line = a
            .iter()
            .find(|l| l.name == case.name)
            .unwrap_or_else(|| panic!("no BENCH line for {}: {a:?}", case.name));
        if let Some(m) = line.measurement() {
            assert!(m.total > m.baseline, "{}: {m:?}", case.name);
        } else {
            assert!(line.unsupported().is_some(), "{line:?}");
        }
    }
    for line in &first {
        if let Some(m) = line.measurement() {
            assert!(m.total > m.baseline, "{}: {m:?}", line.name);
        }
    }
    // The deterministic cases through the control domain's backends (the block cases):
    // measured, and the same twice.
    for case in CASES.iter().filter(|c| c.deterministic()) {
        let CaseKind::Served(served) = case.kind else {
            continue;
        };
        let run = || {
            bench_ours_served(images(), case.name, served, 200, TIMEOUT)
                .unwrap_or_else(|e| panic!("{} run failed: {e}", case.name))
                .0
        };
        let a = run();
        assert_eq!(a, run(), "two deterministic {} runs differ", case.name);
        let m = a
            .iter()
            .find(|l| l.name == case.name)
            .and_then(|l| l.measurement())
            .unwrap_or_else(|| panic!("{} was not measured: {a:?}", case.name));
        assert!(m.total > m.baseline, "{}: {m:?}", case.name);
    }
}

#[test]
fn pv_guest_runs_as_dom0_on_real_xen() {
    let kernel = images().pv_guest();
    let captured = xtask::xen::run_on_xen(&kernel, "from-the-tests", false, TIMEOUT, None)
        .unwrap_or_else(|e| panic!("running pv-guest on Xen 4.17 failed: {e}"));
    let transcript = &captured.transcript;
    let missing: Vec<&str> = [
        "pv-guest: hello via console ring",
        "pv-guest: hello via console_io",
        "start_info: magic=",
        // The same page-table switch, trap and user-mode sequence as on our hypervisor.
        "pv-guest: built own page tables (",
        "pv-guest: old bootstrap tables writable again",
        "pv-guest: user task runs on its own root (",
        "pv-guest: trap table installed",
        "pv-guest: page fault at 0xffffffff8",
        "pv-guest: user task says hello via syscall",
        "pv-guest: user task cannot read kernel memory",
        "pv-guest: back in kernel",
        "pv-guest: powering off",
    ]
    .into_iter()
    .filter(|l| !transcript.contains(l))
    .collect();
    assert!(
        missing.is_empty(),
        "missing on Xen: {missing:#?}\n--- transcript ---\n{}",
        transcript.text()
    );
    assert!(
        transcript.contains("Hardware Dom0 halted"),
        "dom0 did not power off cleanly on Xen:\n{}",
        transcript.text()
    );
}
