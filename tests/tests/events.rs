//! Event channels (2-level and FIFO), timers and blocking in QEMU: pv-guest's `events:` lines on our
//! hypervisor compared line by line with the same ELF as dom0 on real Xen 4.17 (the
//! differential test), and two domains exchanging 10,000 events.
//!
//! The images are built once per test binary; QEMU and the Xen package are installed
//! when missing (as root), else the tests fail with the command to run: they never skip.

use std::time::Duration;
use xtask::bundle::GuestFile;
use xtask::images::Images;
use xtask::qemu::{HvResult, HvRun, Outcome, run_hypervisor};

/// Hang guard for one QEMU run.
const TIMEOUT: Duration = Duration::from_secs(240);
/// Round trips of the two-domain test.
const PING_PONG: u64 = 10_000;

fn images() -> &'static Images {
    xtask::images::prepared()
}

fn boot(guests: Vec<GuestFile>) -> HvResult {
    let run = HvRun {
        hypervisor: images().hypervisor(),
        guests,
        // Deterministic: the same instructions every run, so no flaky interleavings.
        deterministic: true,
        timeout: Some(TIMEOUT),
        ..HvRun::default()
    };
    run_hypervisor(&run).unwrap_or_else(|e| panic!("QEMU run failed: {e}"))
}

/// The guest's own text of every line that carries `marker`, with whatever prefix the
/// console put before it (`[d0 pv-guest] ` here, nothing or Xen's `(XEN)` framing there)
/// cut off.
fn lines_from(lines: &[String], marker: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.find(marker).map(|at| l[at..].trim_end().to_string()))
        .collect()
}

#[test]
fn events_transcript_matches_xen_line_by_line() {
    let kernel = images().pv_guest();
    // Ours: pv-guest as dom0 as well, so both runs see the same port numbering.
    let ours = boot(vec![GuestFile {
        dom0: true,
        ..GuestFile::new(&kernel).cmdline("differential")
    }]);
    assert_eq!(
        ours.outcome,
        Outcome::AllPoweredOff,
        "{}\n{}",
        ours.outcome.explain(),
        ours.transcript.text()
    );
    let xen = xtask::xen::run_on_xen(&kernel, "differential", true, TIMEOUT, None)
        .unwrap_or_else(|e| panic!("running pv-guest on Xen 4.17 failed: {e}"));
    let ours_lines = lines_from(&ours.transcript.lines, "events: ");
    let xen_lines = lines_from(&xen.transcript.lines, "events: ");
    assert!(
        ours_lines.len() >= 3,
        "too few events lines on ours:\n{}",
        ours.transcript.text()
    );
    assert_eq!(
        ours_lines,
        xen_lines,
        "events lines differ (left: ours, right: Xen 4.17)\n--- ours ---\n{}--- Xen ---\n{}",
        ours.transcript.text(),
        xen.transcript.text()
    );
    for want in [
        "events: timer: 3 one-shot timers fired, blocked until each",
        "events: loopback: 5 sends, 5 upcalls on the bound end",
        "events: loopback: connected=true, unbound after the other end closed=true",
        "events: fifo: link_bits=17, 5 sends, 5 upcalls through the queues",
    ] {
        assert!(
            ours_lines.iter().any(|l| l == want),
            "missing {want:?}:\n{}",
            ours.transcript.text()
        );
    }
}

#[test]
fn two_domains_exchange_ten_thousand_events() {
    let kernel = images().pv_guest();
    let side = |role: u64, peer: u16, name: &str| GuestFile {
        name: name.to_string(),
        ..GuestFile::new(&kernel).cmdline(format!("peer={peer} role={role} pingpong={PING_PONG}"))
    };
    let result = boot(vec![side(1, 2, "ping"), side(2, 1, "pong")]);
    let text = result.transcript.text();
    assert_eq!(
        result.outcome,
        Outcome::AllPoweredOff,
        "{}\n{text}",
        result.outcome.explain()
    );
    for want in [
        format!("[d1 ping] events: ping-pong: {PING_PONG} round trips with d2 (role 1)"),
        format!("[d2 pong] events: ping-pong: {PING_PONG} round trips with d1 (role 2)"),
        "(hv) all domains ended: 3 powered off, 0 failed".to_string(),
    ] {
        assert!(
            result.transcript.contains(&want),
            "missing {want:?}:\n{text}"
        );
    }
}
