//! A hostile xenstore client hits its quotas while others continue, in QEMU: with the
//! control domain (d0, xenstored) every bundle gets, `hostile-xenstore` (d1) runs into
//! each per-domain quota and permission check of xenstored and then breaks the ring
//! protocol, while `xenstore-peer` (d2) does write/read/directory round trips of its own
//! keys before, during and after the abuse. Every error is the one Xen 4.17's C
//! xenstored gives on the wire (`xenstored_core.c`/`_watch.c`/`_transaction.c`): there is
//! no `EQUOTA` in Xen's `xsd_errors` table; node count and record size are `ENOSPC`,
//! watches `E2BIG`, transactions `ENOSPC`, a too-long path `EINVAL`.

use std::time::Duration;
use xtask::bundle::GuestFile;
use xtask::images::Images;
use xtask::qemu::{HvRun, Outcome, run_hypervisor};

/// Hang guard for the QEMU run.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Round trips the peer runs before and after the abuse.
const ROUNDS: u32 = 32;

/// xenstored's per-domain node quota (`quota-nb-entry-per-domain`).
const NODE_QUOTA: u32 = 1000;
/// Nodes the domain owns when `data/fill` is created: the 11 writable nodes the control
/// domain creates for every domU (`control/shutdown`, `control/feature-{poweroff,reboot,
/// suspend}`, `control/sysrq`, `device/suspend/event-channel`, `data`, `drivers`,
/// `feature`, `attr`, `error`) and the guest's `data/phase`, `data/small`. The guest
/// spreads its nodes over directories of 50 so that no directory's record (which counts
/// its children's names) hits the 2048-byte record quota first.
const OWNED_BEFORE_FILL: u32 = 13;
/// Xen checks `watches > 128` before adding one, so 129 succeed.
const WATCHES_ADMITTED: u32 = 129;
/// Xen checks `transactions > 10` before starting one, so 11 succeed.
const TRANSACTIONS_ADMITTED: u32 = 11;

/// Each case of `hostile-xenstore` and the answer Xen 4.17's xenstored gives.
const CASES: &[(&str, &str)] = &[
    ("publish_phase", "ok"),
    ("phase_abusing", "ok"),
    // A node record above 2048 bytes (quota-max-entry-size).
    ("value_over_quota", "ENOSPC"),
    ("value_over_quota_not_created", "ENOENT"),
    ("value_small", "ok"),
    // A path above XENSTORE_REL_PATH_MAX fails is_valid_nodename.
    ("path_over_limit", "EINVAL"),
    ("path_over_limit_read", "EINVAL"),
    // Nodes.
    ("mkdir_fill", "ok"),
    ("node_quota", "ENOSPC"),
    ("node_quota_mkdir", "ENOSPC"),
    ("node_quota_overwrite", "ok"),
    ("rm_fill", "ok"),
    ("node_after_rm", "ok"),
    // A directory's record counts its children's names (Xen: `childlen` in the record
    // checked against quota-max-entry-size).
    ("mkdir_wide", "ok"),
    ("directory_record_quota", "ENOSPC"),
    ("rm_wide", "ok"),
    // Watches.
    ("watch_quota", "E2BIG"),
    ("unwatch_all", "ok"),
    ("watch_after_unwatch", "ok"),
    ("unwatch_again", "ok"),
    // Transactions.
    ("transaction_quota", "ENOSPC"),
    ("transaction_abort_all", "ok"),
    ("transaction_end_twice", "ENOENT"),
    ("transaction_after_abort", "ok"),
    // Permissions.
    ("write_peer_home", "EACCES"),
    ("rm_peer_data", "EACCES"),
    ("write_own_name", "EACCES"),
    ("write_own_name_absolute", "EACCES"),
    ("read_own_name", "ok"),
    ("read_dom0_node", "EACCES"),
    ("write_dom0_home", "EACCES"),
    // Payloads without their NUL (Xen's onearg/get_strings fail): the connection stays.
    ("read_without_nul", "EINVAL"),
    ("write_without_nul", "EINVAL"),
    ("read_after_bad_messages", "ok"),
    ("phase_raw", "ok"),
    // A header announcing more than XENSTORE_PAYLOAD_MAX: the connection is dropped
    // with XENSTORE_ERROR_PROTO (3) in the page's `error`, nothing is answered after it.
    ("oversized_header_error_field", "3"),
    ("read_after_drop", "no-reply"),
];

fn images() -> &'static Images {
    xtask::images::prepared()
}

fn guest(name: &str, cmdline: &str) -> GuestFile {
    GuestFile::new(images().guest(name)).cmdline(cmdline)
}

/// The number in `line` after `prefix` and before the next space.
fn number_after(line: &str, prefix: &str) -> Option<u32> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    rest.split(' ').next()?.parse().ok()
}

#[test]
fn hostile_xenstore_client_hits_its_quotas_while_others_continue() {
    let run = HvRun {
        hypervisor: images().hypervisor(),
        guests: vec![
            guest("hostile-xenstore", "peer=2"),
            guest("xenstore-peer", &format!("peer=1 rounds={ROUNDS}")),
        ],
        deterministic: true,
        timeout: Some(TIMEOUT),
        ..HvRun::default()
    };
    let result = run_hypervisor(&run).unwrap_or_else(|e| panic!("QEMU run failed: {e}"));
    let text = result.transcript.text();
    let h = "[d1 hostile-xenstore]";
    let p = "[d2 xenstore-peer] xenstore-peer:";
    let mut expected: Vec<String> = CASES
        .iter()
        .map(|(name, want)| format!("{h} case {name}: got {want} want {want}"))
        .collect();
    expected.extend([
        format!("{h} hostile-xenstore: I am d1, the peer is d2"),
        format!("{h} hostile-xenstore: the peer is ready"),
        format!(
            "{h} hostile-xenstore: {} nodes written before the quota",
            NODE_QUOTA - OWNED_BEFORE_FILL - 1
        ),
        format!("{h} hostile-xenstore: {WATCHES_ADMITTED} watches set before the quota"),
        format!(
            "{h} hostile-xenstore: {TRANSACTIONS_ADMITTED} transactions started before the quota"
        ),
        format!("{h} hostile-xenstore: {} cases, 0 unexpected", CASES.len()),
        "d1 hostile-xenstore: xenstore ring protocol violation (Oversized { len: 4097 })".into(),
        format!("{p} {ROUNDS} round trips before, ready"),
        format!("{p} the hostile domain's phase node is gone"),
        "(hv) d1 hostile-xenstore: shut down: poweroff".into(),
        "(hv) d2 xenstore-peer: shut down: poweroff".into(),
        "(hv) d0 control: shut down: poweroff".into(),
        "(hv) all domains ended: 3 powered off, 0 failed".into(),
    ]);
    let missing: Vec<&String> = expected.iter().filter(|l| !text.contains(*l)).collect();
    assert!(
        missing.is_empty() && result.outcome == Outcome::AllPoweredOff,
        "expected AllPoweredOff, got {:?} ({})\nmissing lines: {missing:#?}\n--- transcript ---\n{text}--- QEMU stderr ---\n{}",
        result.outcome,
        result.outcome.explain(),
        result.stderr
    );
    let lines = &result.transcript.lines;
    // Every case printed is one of the table's, each once.
    let printed = lines
        .iter()
        .filter(|l| l.starts_with(&format!("{h} case ")))
        .count();
    assert_eq!(printed, CASES.len(), "{text}");

    // The peer ran round trips while the hostile domain abused the store, and all of
    // them, before, during and after, succeeded.
    let during = lines
        .iter()
        .find(|l| l.contains(&format!("{p} ")) && l.contains(" round trips during, "))
        .unwrap_or_else(|| panic!("no 'during' line\n{text}"));
    let abusing = number_after(during, "during, ").unwrap_or_else(|| panic!("{during}"));
    assert!(
        abusing > 0,
        "the peer made no progress during the abuse\n{text}"
    );
    let done = lines
        .iter()
        .find(|l| l.contains(&format!("{p} all ")))
        .unwrap_or_else(|| panic!("the peer did not finish\n{text}"));
    let total = number_after(done, "all ").unwrap_or_else(|| panic!("{done}"));
    let during_total = number_after(done, "before, ").unwrap_or_else(|| panic!("{done}"));
    assert_eq!(total, 2 * ROUNDS + during_total, "{done}");
    assert!(
        done.ends_with(&format!(
            "({ROUNDS} before, {during_total} during, {ROUNDS} after)"
        )),
        "{done}"
    );
    assert!(!text.contains(&format!("{p} before round")), "{text}");
    assert!(!text.contains(" failed: "), "{text}");

    // In order: ready before the abuse, the peer's last round trips after the hostile
    // domain ended (consoles are drained by the control domain, so a domain's lines can
    // come after the hypervisor's line about its end).
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line {needle:?}\n{text}"))
    };
    assert!(at("round trips before, ready") < at("case value_over_quota:"));
    assert!(at("(hv) d1 hostile-xenstore: shut down") < at("phase node is gone"));
    assert!(at("phase node is gone") < at(&format!("{p} all ")));
}
