//! The split-driver handshake in QEMU: pv-guest as frontend (d1) and backend (d2), with
//! the control domain (dom0, xenstored) every bundle gets. The frontend grants a page and
//! allocates an event channel, the backend maps and binds them; both walk their xenbus
//! states, exchange 64 messages through the page (the backend answers each with its
//! checksum), tear down in order and power off.
//!
//! The control domain, as the toolstack, creates the demo device (`dev.demo.1=2`): the
//! frontend directory `/local/domain/1/device/demo/0` and the backend directory
//! `/local/domain/2/backend/demo/1/0`, which both ends use (the "toolstack layout").
//!
//! The images are built once per test binary; QEMU is installed when missing (as root),
//! else the test fails with the command to run: it never skips.

use std::time::Duration;
use xtask::bundle::GuestFile;
use xtask::qemu::{HvRun, Outcome, run_hypervisor};

/// Hang guard for the QEMU run.
const TIMEOUT: Duration = Duration::from_secs(240);
/// Messages of the run (pv-guest's default).
const MESSAGES: u32 = 64;
/// The folded checksum of the 64 messages (`pv_guest::split::expected_total(64)`, which
/// pv-guest's unit tests pin to the same value).
const TOTAL: &str = "0x240ab0dc";

/// The text of domain `id`'s console lines, `[d<id> <name>] text` (the control domain
/// prints the ring output with the names xtask passes it), in order.
fn lines_of<'a>(lines: &'a [String], id: u16, name: &str) -> Vec<&'a str> {
    let tag = format!("[d{id} {name}] ");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(tag.as_str()))
        .map(str::trim_end)
        .collect()
}

/// The `split: ` lines of domain `id`.
fn split_lines<'a>(lines: &'a [String], id: u16, name: &str) -> Vec<&'a str> {
    lines_of(lines, id, name)
        .into_iter()
        .filter(|l| l.starts_with("split: "))
        .collect()
}

/// `want` appears in `got` in this order (other lines may come between).
fn in_order(got: &[&str], want: &[String]) -> Result<(), String> {
    let mut at = 0;
    for w in want {
        match got[at..].iter().position(|l| l == w) {
            Some(i) => at += i + 1,
            None => return Err(format!("missing (in order) {w:?}")),
        }
    }
    Ok(())
}

#[test]
fn frontend_and_backend_connect_exchange_and_close() {
    handshake(Layout::Toolstack);
}

/// Without the device word each end makes its directory under its own `data/`.
#[test]
fn without_a_toolstack_device_the_ends_make_their_own_layout() {
    handshake(Layout::SelfMade);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Toolstack,
    SelfMade,
}

fn handshake(layout: Layout) {
    let (devices, front_at, back_at) = match layout {
        Layout::Toolstack => (
            vec!["dev.demo.1=2".to_string()],
            "(toolstack layout) at /local/domain/1/device/demo/0",
            "(toolstack layout) at /local/domain/2/backend/demo/1/0",
        ),
        Layout::SelfMade => (
            Vec::new(),
            "(self-made layout) at /local/domain/1/data/device/demo/0",
            "(self-made layout) at /local/domain/2/data/backend/demo/1/0",
        ),
    };
    let images = xtask::images::prepared();
    let kernel = images.pv_guest();
    let side = |name: &str, cmdline: &str| GuestFile {
        name: name.to_string(),
        ..GuestFile::new(&kernel).cmdline(cmdline)
    };
    let run = HvRun {
        hypervisor: images.hypervisor(),
        guests: vec![
            side("front", "demo=front peer=2"),
            side("back", "demo=back peer=1"),
        ],
        deterministic: true,
        timeout: Some(TIMEOUT),
        devices,
        ..HvRun::default()
    };
    let result = run_hypervisor(&run).unwrap_or_else(|e| panic!("QEMU run failed: {e}"));
    let text = result.transcript.text();
    assert_eq!(
        result.outcome,
        Outcome::AllPoweredOff,
        "{}\n{text}",
        result.outcome.explain()
    );
    let lines = &result.transcript.lines;
    assert!(
        !text.contains("split: front: failed") && !text.contains("split: back: failed"),
        "{text}"
    );

    // The toolstack made the device (or not), and both ends found (or made) it.
    assert_eq!(
        lines_of(lines, 0, "control").contains(&"d1 front: device demo/0, backend d2"),
        layout == Layout::Toolstack,
        "{text}"
    );
    let front = split_lines(lines, 1, "front");
    let front_want: Vec<String> = [
        &format!("split: front: d1 with backend d2 {front_at}"),
        "split: front: state -> Initialising",
        "split: front: granted page gref=8 event-channel=",
        "split: front: state -> Initialised",
        "split: front: backend is Connected",
        "split: front: state -> Connected",
        &format!("split: front: {MESSAGES} messages answered, checksum {TOTAL}"),
        "split: front: state -> Closing",
        "split: front: backend is Closed",
        "split: front: grant 8 ended, event channel closed",
        "split: front: state -> Closed",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The port number is the hypervisor's choice: compare that line by its prefix.
    let front_norm: Vec<&str> = front
        .iter()
        .map(|l| {
            if l.starts_with("split: front: granted page gref=8 event-channel=") {
                "split: front: granted page gref=8 event-channel="
            } else {
                l
            }
        })
        .collect();
    in_order(&front_norm, &front_want).unwrap_or_else(|e| panic!("frontend: {e}\n{text}"));
    let granted = front
        .iter()
        .find_map(|l| l.strip_prefix("split: front: granted page gref=8 event-channel="))
        .unwrap_or_else(|| panic!("no grant line\n{text}"));
    let port: u32 = granted
        .parse()
        .unwrap_or_else(|_| panic!("bad port {granted:?}\n{text}"));

    let back = split_lines(lines, 2, "back");
    let back_want: Vec<String> = vec![
        format!("split: back: d2 serving frontend d1 {back_at}"),
        "split: back: state -> InitWait".to_string(),
        format!("split: back: frontend is Initialised: ring-ref=8 event-channel={port}"),
        "split: back: state -> Connected".to_string(),
        format!("split: back: answered {MESSAGES} messages, checksum {TOTAL}"),
        "split: back: frontend is Closing".to_string(),
        "split: back: unmapped the grant, event channel closed".to_string(),
        "split: back: state -> Closed".to_string(),
    ];
    in_order(&back, &back_want).unwrap_or_else(|e| panic!("backend: {e}\n{text}"));
    assert!(
        back.iter()
            .any(|l| l.starts_with("split: back: mapped the grant, bound event channel ")),
        "{text}"
    );

    for (id, name) in [(1, "front"), (2, "back")] {
        assert!(
            lines_of(lines, id, name).contains(&"pv-guest: powering off"),
            "d{id} did not say it powers off:\n{text}"
        );
    }
    for want in [
        "(hv) d1 front: shut down: poweroff",
        "(hv) d2 back: shut down: poweroff",
        "(hv) d0 control: shut down: poweroff",
        "(hv) all domains ended: 3 powered off, 0 failed",
    ] {
        assert!(
            result.transcript.contains(want),
            "missing {want:?}:\n{text}"
        );
    }
}
