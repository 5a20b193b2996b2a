//! The example kernels of `examples/` (each a crate outside the workspace, built as its
//! author would with `cargo build`), booted on our hypervisor as a domU and on real Xen
//! 4.17 as dom0: what the README's quick start promises a kernel author.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use xtask::images::EXAMPLES;
use xtask::qemu::{Outcome, SingleGuest, run_hypervisor};

/// Hang guard for one QEMU run.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The example ELFs, built once per test binary.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<Vec<PathBuf>, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| xtask::images::build_examples().map_err(|e| e.to_string()));
    let elfs = built
        .as_ref()
        .unwrap_or_else(|e| panic!("cannot build the examples: {e}"));
    let i = EXAMPLES
        .iter()
        .position(|e| *e == name)
        .expect("an example");
    elfs[i].clone()
}

/// Lines each example prints wherever it runs.
fn expected(name: &str) -> &'static [&'static str] {
    match name {
        "minimal" => &[
            "minimal: hello from a ",
            "minimal: command line \"",
            "minimal: running on Xen ",
        ],
        "timer-events" => &[
            "timer-events: timer 1 fired after ",
            "timer-events: timer 3 fired after ",
            "timer-events: 3 timer events, ",
        ],
        _ => unreachable!(),
    }
}

#[track_caller]
fn assert_lines(transcript: &str, lines: &[&str], what: &str) {
    let missing: Vec<&&str> = lines.iter().filter(|l| !transcript.contains(*l)).collect();
    assert!(
        missing.is_empty(),
        "{what}: missing lines {missing:#?}\n--- transcript ---\n{transcript}"
    );
}

fn boot_on_ours(name: &str) {
    let images = xtask::images::prepared();
    let mut run = SingleGuest {
        path: Some(example(name)),
        cmdline: "from-the-tests".into(),
        ..SingleGuest::default()
    }
    .to_run(images);
    run.timeout = Some(TIMEOUT);
    let result = run_hypervisor(&run).unwrap_or_else(|e| panic!("QEMU run failed: {e}"));
    let text = result.transcript.text();
    assert_eq!(
        result.outcome,
        Outcome::AllPoweredOff,
        "{name} on ours: {}\n{text}",
        result.outcome.explain()
    );
    // On ours the example is a domU and prints through its console ring.
    let tagged: Vec<String> = expected(name)
        .iter()
        .map(|l| format!("[d1 {name}] {l}"))
        .collect();
    let tagged: Vec<&str> = tagged.iter().map(String::as_str).collect();
    assert_lines(&text, &tagged, name);
    assert_lines(
        &text,
        &[&format!("(hv) d1 {name}: shut down: poweroff")],
        name,
    );
}

fn boot_on_xen(name: &str) {
    let captured = xtask::xen::run_on_xen(&example(name), "from-the-tests", false, TIMEOUT, None)
        .unwrap_or_else(|e| panic!("running {name} on Xen 4.17 failed: {e}"));
    let text = captured.transcript.text();
    assert_lines(&text, expected(name), &format!("{name} on Xen"));
    assert_lines(&text, &["Hardware Dom0 halted"], &format!("{name} on Xen"));
}

#[test]
fn minimal_example_boots_on_our_hypervisor() {
    boot_on_ours("minimal");
}

#[test]
fn timer_events_example_boots_on_our_hypervisor() {
    boot_on_ours("timer-events");
}

#[test]
fn minimal_example_boots_as_dom0_on_real_xen() {
    boot_on_xen("minimal");
}

#[test]
fn timer_events_example_boots_as_dom0_on_real_xen() {
    boot_on_xen("timer-events");
}
