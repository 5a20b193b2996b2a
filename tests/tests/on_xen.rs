//! `cargo xtask run --on-xen`: a kernel as dom0 of real Xen 4.17 ends with the outcome a
//! run on our hypervisor would have, read from Xen's console (xtask::xen::Dom0Watch).

use std::time::Duration;
use xtask::qemu::Outcome;
use xtask::xen::{Dom0Result, Dom0Run, run_dom0};

/// Hang guard; each of these runs takes a few seconds.
const TIMEOUT: Duration = Duration::from_secs(120);

fn on_xen(guest: &str) -> Dom0Result {
    let run = Dom0Run {
        kernel: xtask::images::prepared().guest(guest),
        timeout: Some(TIMEOUT),
        ..Dom0Run::default()
    };
    run_dom0(&run).unwrap_or_else(|e| panic!("running {guest} on Xen 4.17 failed: {e}"))
}

#[test]
fn on_xen_a_powered_off_dom0_is_a_success() {
    let r = on_xen("console-io-only");
    assert_eq!(r.outcome, Outcome::AllPoweredOff, "{}", r.transcript.text());
    assert!(r.transcript.contains("console-io-only: hello"));
    assert_eq!(
        r.evidence.as_deref(),
        Some("Hardware Dom0 halted: halting machine")
    );
}

#[test]
fn on_xen_a_crashed_or_refused_dom0_is_a_domain_failure() {
    let crashed = on_xen("privileged");
    assert_eq!(crashed.outcome, Outcome::DomainFailed);
    assert!(
        crashed
            .evidence
            .as_deref()
            .is_some_and(|l| l.starts_with("Hardware Dom0 crashed")),
        "{:?}",
        crashed.evidence
    );
    let refused = on_xen("no-notes");
    assert_eq!(refused.outcome, Outcome::DomainFailed);
    assert_eq!(
        refused.evidence.as_deref(),
        Some("Xen panic: Could not construct domain 0")
    );
}

#[test]
fn on_xen_a_run_past_its_timeout_fails_with_the_transcript() {
    let run = Dom0Run {
        kernel: xtask::images::prepared().pv_guest(),
        timeout: Some(Duration::from_millis(200)),
        ..Dom0Run::default()
    };
    let e = run_dom0(&run).expect_err("200 ms is too short to boot Xen");
    assert!(e.0.contains("timed out"), "{e}");
}
