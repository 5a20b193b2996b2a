//! Hostile netfronts against the control domain's netback and switch while two
//! well-behaved domains move 1 MiB over TCP on another VLAN (issue 13, item 8):
//!
//! * `hostile-netfront peer=4` (d1), two vifs on VLAN 30: from the moment d4 started
//!   until it is done (ordered by d4's `data/net`, no timing), rounds of a flood
//!   through devid 0 of runts,
//!   oversized frames, slots naming never-granted grant references (each answered
//!   `NETIF_RSP_ERROR` and counted in `tx-errors`) and badly tagged frames (answered
//!   OKAY, dropped by the access port, counted in `vlan-dropped`); then devid 1's tx
//!   producer index jumps far ahead and the backend closes that vif alone;
//! * `hostile-netfront mode=crash` (d2, VLAN 40): posts full tx and rx rings and
//!   crashes before any response;
//! * pv-guest `demo=net` server (d3) and client (d4) on VLAN 10 finish their transfer
//!   with the right checksum.
//!
//! Nothing is left behind: no frame owned and no grant mapped by the ended domains,
//! and no hypervisor fault.

mod common;

use common::{CLIENT_SEED, checksum, random_bytes, run_timed};
use std::time::Duration;
use xtask::bundle::GuestFile;
use xtask::qemu::{HvRun, Outcome};

/// Hang guard for the QEMU run.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes the client sends.
const TRANSFER: usize = 1 << 20;
/// Frames of each broken kind a flood round sends.
const FRAMES: u32 = 64;
/// d1's line with the number of flood rounds.
const ROUNDS_PREFIX: &str = "[d1 hostile-netfront] hostile-netfront: flooded ";
const ROUNDS_SUFFIX: &str = " rounds, the first while d4 was running: true";
/// Slots of a one-page netif tx or rx ring.
const RING: u32 = 256;
/// The control domain's power-off summary of the crashed domain's vif.
const CRASHED_SUMMARY: &str = "[d0 control] vif d2/0: tx ";

fn expected_lines(rounds: u32) -> Vec<String> {
    let h = "[d1 hostile-netfront] hostile-netfront:";
    let c = "[d0 control]";
    let sum = checksum(&random_bytes(CLIENT_SEED, TRANSFER));
    let n = FRAMES * rounds;
    let errors = 3 * n;
    let mut lines = vec![
        format!("{c} d1 vif/0: connected"),
        format!("{c} d1 vif/1: connected"),
        format!("{h} devids 0 and 1 connected"),
        format!("{h} {n} runts: okay 0 error {n} dropped 0 other 0"),
        format!("{h} {n} oversized: okay 0 error {n} dropped 0 other 0"),
        format!("{h} {n} ungranted: okay 0 error {n} dropped 0 other 0"),
        format!("{h} {n} badly tagged: okay {n} error 0 dropped 0 other 0"),
        format!("{c} d1 vif/0: closed by the frontend"),
        format!(
            "{h} devid 0 counters: tx-frames {n} tx-errors {errors} tx-dropped {n} \
             vlan-dropped {n} rx-frames 0"
        ),
        format!("{c} d1 vif/1: disconnected: peer's ring producer index "),
        format!("{h} devid 1 closed by the backend after its producer jumped"),
        format!("{h} done"),
        "(hv) d1 hostile-netfront: shut down: poweroff".into(),
        format!("{c} vif d1/0: tx {n} rx 0 dropped {n} (tx {n} vlan {n} rx 0) errors {errors}"),
        format!("{c} vif d1/1: tx 0 rx 0 dropped 0 (tx 0 vlan 0 rx 0) errors 0"),
        // The domain that crashed mid-I/O.
        format!("{c} d2 vif/0: connected"),
        format!(
            "[d2 hostile-netfront] hostile-netfront: posted {RING} tx and {RING} rx requests, \
             crashing"
        ),
        "(hv) d2 hostile-netfront: shut down: crash".into(),
        // The well-behaved pair, meanwhile.
        format!("[d3 pv-guest] net: server received {TRANSFER} bytes, checksum {sum:#010x}"),
        format!("[d4 pv-guest] net: client sent {TRANSFER} bytes, checksum {sum:#010x}"),
        // Nothing left behind.
        "(hv) d0 control: shut down: poweroff".into(),
        "(hv) frames: 0 still owned by ended domains".into(),
        "(hv) grant maps: 0 still held when their domains ended".into(),
        "(hv) all domains ended: 4 powered off, 1 failed".into(),
    ];
    for d in [3, 4] {
        lines.push(format!("{c} d{d} vif/0: connected"));
        lines.push(format!("[d{d} pv-guest] net: done"));
        lines.push(format!(
            "[d{d} pv-guest] net: closed (Ok(())), ring grants ended: true"
        ));
    }
    lines
}

#[test]
fn hostile_netfronts_are_refused_while_a_good_pair_keeps_its_tcp_going() {
    let images = xtask::images::prepared();
    let pv = |cmdline: &str| {
        let mut g = GuestFile::new(images.pv_guest());
        g.cmdline = cmdline.into();
        g
    };
    let run = HvRun {
        hypervisor: images.hypervisor(),
        guests: vec![
            GuestFile::new(images.guest("hostile-netfront")).cmdline("peer=4"),
            GuestFile::new(images.guest("hostile-netfront")).cmdline("mode=crash"),
            pv("demo=net net=server ip=10.0.0.1/24"),
            pv("demo=net net=client ip=10.0.0.2/24 peer=10.0.0.1"),
        ],
        deterministic: true,
        timeout: Some(TIMEOUT),
        devices: vec![
            "vif.1=00:16:3e:00:01:01,vlan=30".into(),
            "vif.1=00:16:3e:00:01:02,vlan=30".into(),
            "vif.2=00:16:3e:00:02:01,vlan=40".into(),
            "vif.3=00:16:3e:00:00:01,vlan=10".into(),
            "vif.4=00:16:3e:00:00:02,vlan=10".into(),
        ],
        ..HvRun::default()
    };
    let (result, took) = run_timed(&run);
    let text = result.transcript.text();
    // The flood ran from before d4 was done until it was: as many rounds as that took.
    let rounds: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix(ROUNDS_PREFIX)?.strip_suffix(ROUNDS_SUFFIX))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no flood rounds line of d1\n{text}"));
    assert!(rounds >= 1, "{text}");
    let lines = expected_lines(rounds);
    let missing: Vec<&String> = lines
        .iter()
        .filter(|l| !text.contains(l.as_str()))
        .collect();
    // d2 crashed on purpose: the run ends with a failed domain, never a hypervisor fault.
    assert!(
        missing.is_empty() && result.outcome == Outcome::DomainFailed,
        "missing lines {missing:#?}, outcome {:?} ({}), {took:?}\n--- transcript ---\n{text}\
         --- QEMU stderr ---\n{}",
        result.outcome,
        result.outcome.explain(),
        result.stderr
    );
    // Only the breach disconnected a vif.
    let disconnects: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": disconnected: "))
        .collect();
    assert_eq!(disconnects.len(), 1, "disconnect lines: {disconnects:#?}");
    for bad in ["net: failed", "hostile-netfront: failed"] {
        assert!(!text.contains(bad), "`{bad}` in the transcript:\n{text}");
    }
    let faults: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("(hv)") && l.contains("fault"))
        .collect();
    assert!(faults.is_empty(), "hypervisor faults: {faults:#?}");
    // d2's tx ring was full when it died: whatever the control domain served before it
    // released the vif, never more than the ring.
    let crashed = text
        .lines()
        .find_map(|l| l.strip_prefix(CRASHED_SUMMARY))
        .unwrap_or_else(|| panic!("no summary of d2's vif\n{text}"));
    let words: Vec<&str> = crashed.split(' ').collect();
    let served: Option<u32> = words.first().and_then(|n| n.parse().ok());
    let errors: Option<u32> = words.last().and_then(|n| n.parse().ok());
    assert!(
        matches!((served, errors), (Some(s), Some(e)) if s + e <= RING),
        "d2's vif: {crashed}"
    );
    for l in text
        .lines()
        .filter(|l| l.contains("hostile-netfront:") || l.contains(" vif") || l.contains("net: "))
    {
        eprintln!("{l}");
    }
    eprintln!("net_hostile: {rounds} flood rounds, {took:?}");
}
