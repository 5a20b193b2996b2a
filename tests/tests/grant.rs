//! Grant tables and the control hypercalls from unprivileged domains, in QEMU:
//! `hostile-grant` (every bad map, unmap and copy answered with Xen 4.17's exact
//! `GNTST_*` status, maptrack exhaustion, version-2 status-frame, sub-page and transitive
//! abuse, then normal use still works; the same guest
//! as dom0 on real Xen 4.17 gets the same statuses), `grant-peer`
//! (a page stays readable to its mapper after the granter crashed, and unmaps cleanly),
//! and `domu-control` (a domU's domctl, sysctl and foreign alloc_unbound are `-EPERM`).
//!
//! The domUs are domains 1, 2, …; nothing here assumes there is no dom0.
//!
//! Every run ends with `(hv) frames: 0 still owned by ended domains` ([`NO_LEAK`]): in
//! `grant-peer` that is the dead granter's frame freed after the mapper's last unmap
//! (the host tests in `hypervisor/src/grant_map_tests.rs` check the same in detail).

use std::time::Duration;
use xtask::bundle::GuestFile;
use xtask::images::Images;
use xtask::qemu::{HvResult, HvRun, Outcome, run_hypervisor};

/// The hypervisor's end-of-run frame accounting when nothing leaked.
const NO_LEAK: &str = "(hv) frames: 0 still owned by ended domains";

/// Hang guard for one QEMU run.
const TIMEOUT: Duration = Duration::from_secs(240);

/// Our hypervisor's maptrack size (`hypervisor::grant::MAX_MAPTRACK`).
const MAX_MAPTRACK: usize = 256;

fn images() -> &'static Images {
    xtask::images::prepared()
}

fn guest(name: &str, cmdline: &str) -> GuestFile {
    GuestFile::new(images().guest(name)).cmdline(cmdline)
}

fn boot(guests: Vec<GuestFile>) -> HvResult {
    let run = HvRun {
        hypervisor: images().hypervisor(),
        guests,
        deterministic: true,
        timeout: Some(TIMEOUT),
        ..HvRun::default()
    };
    run_hypervisor(&run).unwrap_or_else(|e| panic!("QEMU run failed: {e}"))
}

/// Asserts every expected fragment appears in some line and the run ended as expected;
/// on failure prints the whole transcript.
#[track_caller]
fn assert_run(result: &HvResult, expected: &[String], outcome: Outcome) {
    let missing: Vec<&String> = expected
        .iter()
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

/// The one case whose answer is our limit rather than Xen's.
const MAPTRACK_CASE: &str = "map_maptrack_full";

/// The case only a domU runs: `get_status_frames` of the control domain, refused by
/// Xen's XSM_TARGET check with `GNTST_permission_denied`; on Xen the guest is the
/// privileged dom0, so there it has no such case.
const OTHER_DOMAIN_CASE: &str = "status_frames_of_other_domain";

/// Each case of `hostile-grant` and Xen 4.17's answer: a `GNTST_*` status (0 okay,
/// -1 general_error, -2 bad_domain, -3 bad_gntref, -4 bad_handle, -13 no_space,
/// -8 permission_denied, -9 bad_page, -10 bad_copy_arg) or a value the guest read.
const HOSTILE_GRANT_CASES: &[(&str, i64)] = &[
    // Map: flags, domains, references, entries.
    ("map_no_host_or_device_flag", -3),
    ("map_no_domain", -2),
    ("map_domid_self", -2),
    ("map_ref_512", -3),
    ("map_ref_max", -3),
    ("map_entry_for_other_domain", -1),
    ("map_revoked_entry", -1),
    ("map_readonly_entry_writable", -1),
    // Frames the granter does not own (Xen: get_paged_frame fails), page tables.
    ("map_frame_out_of_ram", -9),
    ("map_frame_not_granters", -9),
    ("map_page_table_writable", -1),
    ("map_page_table_readonly", 0),
    ("unmap_after_map", 0),
    // Cache attributes apply to MMIO only: RAM is mapped anyway.
    ("map_entry_with_cache_attribute", 0),
    ("unmap_after_map", 0),
    // Host addresses without a guest L1 entry.
    ("map_at_hypervisor_address", -1),
    ("map_where_no_l1", -1),
    // Unmap.
    ("unmap_bad_handle", -4),
    ("map_good", 0),
    ("unmap_wrong_host_addr", -1),
    ("unmap_good", 0),
    ("unmap_twice", -4),
    // Copy.
    ("copy_ref_512", -3),
    ("copy_no_domain", -2),
    ("copy_frame_with_own_id", -8),
    ("copy_len_4097", -10),
    ("copy_source_offset_4095_len_2", -10),
    ("copy_dest_offset_4088_len_16", -10),
    ("copy_to_page_table", -1),
    ("copy_from_frame_out_of_ram", -9),
    ("copy_from_readonly_entry", 0),
    ("copy_to_readonly_entry", -1),
    ("copy_good", 0),
    ("copy_good_copied", 0x3c),
    // One entry mapped over and over: the 129th read-only mapping is refused.
    ("map_same_entry_129th", -1),
    ("unmap_all_failures", 0),
    // Maptrack exhaustion, one entry per mapping (the domain is given one maptrack
    // frame; Xen's dom0 has the default 1024, so there the maps simply go on).
    (MAPTRACK_CASE, -13),
    ("unmap_all_failures", 0),
    ("entry_idle_after_unmaps", 1),
    // Version 2: status frames (Xen's gnttab_get_status_frames: too many is
    // GNTST_general_error, a list in the hypervisor's range -EFAULT).
    ("set_version_2", 0),
    ("status_frames_one", 0),
    ("status_frames_too_many", -1),
    ("status_frames_list_in_hypervisor", -14),
    ("status_frames_of_absent_domain", -2),
    (OTHER_DOMAIN_CASE, -8),
    // A status frame may be mapped writable (Xen shares it so) but never typed as a
    // page table: -EINVAL.
    ("map_status_frame_writable", 0),
    ("pin_status_frame_as_l1", -22),
    // The guest zeroes the status word of a mapped entry: the hypervisor still knows
    // the pin (set_version -EBUSY), the unmap works and leaves the entry idle.
    ("v2_map_good", 0),
    ("v2_status_reading_while_mapped", 8),
    ("set_version_1_while_entry_mapped", -16),
    ("v2_unmap_after_scribble", 0),
    ("v2_status_idle_after_unmap", 0),
    // A sub-page entry at 4000 of length 200 (past the page end): Xen checks a copy
    // against both the page and the window, never the window against the page.
    ("copy_sub_page_past_page_end_inside", 0),
    ("copy_sub_page_before_window", -1),
    ("copy_sub_page_whole_window", -10),
    ("map_sub_page_entry", -1),
    // Transitive entries: self-referential, through an absent domain; never mapped.
    ("copy_transitive_to_itself", -1),
    ("copy_transitive_via_absent_domain", -1),
    ("map_transitive_entry", -1),
    // Back to v1: -EBUSY while the status frame is mapped, then fine; table cleared.
    ("set_version_1_while_status_mapped", -16),
    ("unmap_status_frame", 0),
    ("set_version_1", 0),
    ("v1_entry_cleared", 0),
    // Normal use afterwards.
    ("map_after_all_that", 0),
    ("mapped_page_reads_granted", 0x3c),
    ("unmap_after_all_that", 0),
];

#[test]
fn hostile_grant_use_gets_xens_statuses_and_normal_use_still_works() {
    // One maptrack frame (256 mappings, xl's max_maptrack_frames=1) so that the guest
    // can exhaust it; Xen's default of 1024 frames would take 262144 maps.
    let mut hostile = guest("hostile-grant", "maptrack_limit=1");
    hostile.max_maptrack_frames = 1;
    let result = boot(vec![hostile]);
    let d = "[d1 hostile-grant]";
    let mut expected: Vec<String> = HOSTILE_GRANT_CASES
        .iter()
        .map(|(name, want)| format!("{d} case {name}: got {want} want {want}"))
        .collect();
    expected.extend([
        format!("{d} hostile-grant: I am d1"),
        format!("{d} same entry mapped 128 times"),
        format!("{d} maptrack full after {MAX_MAPTRACK} maps"),
        format!(
            "{d} hostile-grant: {} cases, 0 unexpected",
            HOSTILE_GRANT_CASES.len()
        ),
        format!("{d} hostile-grant: still alive"),
        "(hv) d1 hostile-grant: shut down: poweroff".into(),
        NO_LEAK.into(),
        "(hv) all domains ended: 2 powered off, 0 failed".into(),
    ]);
    assert_run(&result, &expected, Outcome::AllPoweredOff);
    // Every case printed is one of the table's, each once.
    let printed = result
        .transcript
        .lines
        .iter()
        .filter(|l| l.starts_with(&format!("{d} case ")))
        .count();
    assert_eq!(
        printed,
        HOSTILE_GRANT_CASES.len(),
        "{}",
        result.transcript.text()
    );
}

#[test]
fn granted_page_outlives_its_crashed_granter_until_unmapped() {
    let result = boot(vec![
        guest("grant-peer", "role=granter peer=2"),
        guest("grant-peer", "role=mapper peer=1"),
    ]);
    let a = "[d1 grant-peer] grant-peer:";
    let b = "[d2 grant-peer] grant-peer:";
    let expected: Vec<String> = vec![
        format!("{a} granted ref 8 to d2"),
        format!("{b} mapped d1 ref 8"),
        format!("{b} reads the message: true"),
        format!("{a} the peer maps the page; crashing now"),
        "(hv) d1 grant-peer: crashed: #GP".into(),
        format!("{b} the granter is gone"),
        format!("{b} still reads the message: true"),
        format!("{b} unmap: ret 0 status 0"),
        // The dead domain's grants are gone: GNTST_bad_domain.
        format!("{b} map again: ret 0 status -2"),
        "(hv) d2 grant-peer: shut down: poweroff".into(),
        // The granter's frame, kept while d2 mapped it, was freed by the unmap.
        NO_LEAK.into(),
        "(hv) all domains ended: 2 powered off, 1 failed".into(),
    ];
    assert_run(&result, &expected, Outcome::DomainFailed);
    assert!(
        !result.transcript.contains("survived cli"),
        "{}",
        result.transcript.text()
    );
    // In d2's order: mapped, saw the granter gone (its crash), read, unmapped; the
    // accounting comes last. Guest lines reach the serial line through the control
    // domain, later than the hypervisor's own, so they are ordered only among
    // themselves (and before the final lines: the control domain ends last).
    let at = |needle: &str| {
        result
            .transcript
            .lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line {needle:?}"))
    };
    let order = [
        "mapped d1 ref 8",
        "the granter is gone",
        "still reads the message",
        "unmap: ret 0",
        NO_LEAK,
    ];
    for pair in order.windows(2) {
        assert!(
            at(pair[0]) < at(pair[1]),
            "{:?} not before {:?}\n{}",
            pair[0],
            pair[1],
            result.transcript.text()
        );
    }
}

/// Each control-plane attempt of `domu-control` and Xen 4.17's answer.
const DOMU_CONTROL_CASES: &[(&str, i64)] = &[
    ("getdomaininfo_self", -1),
    ("getdomaininfo_peer", -1),
    ("pausedomain_peer", -1),
    ("unpausedomain_peer", -1),
    ("destroydomain_peer", -1),
    ("destroydomain_self", -1),
    ("domctl_old_interface_version", -13),
    ("getdomaininfolist", -1),
    ("sysctl_old_interface_version", -13),
    ("getdomaininfolist_wrote_nothing", 0),
    ("alloc_unbound_in_peer", -1),
];

#[test]
fn domu_control_hypercalls_are_refused_with_eperm() {
    let result = boot(vec![
        guest("domu-control", "self=1 peer=2"),
        guest("domu-control", "role=waiter self=2 peer=1"),
    ]);
    let a = "[d1 domu-control]";
    let b = "[d2 domu-control]";
    let mut expected: Vec<String> = DOMU_CONTROL_CASES
        .iter()
        .map(|(name, want)| format!("{a} case {name}: got {want} want {want}"))
        .collect();
    expected.extend([
        format!("{a} domu-control: d1 asks about d2"),
        // The peer is neither paused nor destroyed: GNTST_permission_denied, not gone.
        format!("{a} domu-control: peer query_size status -8"),
        format!(
            "{a} domu-control: {} cases, 0 unexpected",
            DOMU_CONTROL_CASES.len()
        ),
        format!("{b} domu-control: d1 has ended and I am still here"),
        "(hv) d1 domu-control: shut down: poweroff".into(),
        "(hv) d2 domu-control: shut down: poweroff".into(),
        NO_LEAK.into(),
        "(hv) all domains ended: 3 powered off, 0 failed".into(),
    ]);
    assert_run(&result, &expected, Outcome::AllPoweredOff);
    assert!(
        !result.transcript.contains("destroyed"),
        "{}",
        result.transcript.text()
    );
}

#[test]
fn hostile_grant_statuses_are_those_of_real_xen() {
    // The same guest as dom0 of Xen 4.17: every status of the table but the maptrack
    // limit is Xen's own answer.
    let kernel = images().guest("hostile-grant");
    let captured = xtask::xen::run_on_xen(&kernel, "", false, TIMEOUT, None)
        .unwrap_or_else(|e| panic!("running hostile-grant on Xen 4.17 failed: {e}"));
    let transcript = &captured.transcript;
    let mut expected: Vec<String> = HOSTILE_GRANT_CASES
        .iter()
        .filter(|(name, _)| *name != MAPTRACK_CASE && *name != OTHER_DOMAIN_CASE)
        .map(|(name, want)| format!("case {name}: got {want} want {want}"))
        .collect();
    expected.extend([
        "hostile-grant: I am d0".to_string(),
        "same entry mapped 128 times".into(),
        "hostile-grant: still alive".into(),
    ]);
    let missing: Vec<&String> = expected
        .iter()
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
