//! The control domain's network backend and switch against `vif-loop`, a bare netfront
//! with four vifs: the handshake (InitWait with `feature-rx-copy`, Connected on the
//! frontend's keys, Closed for a frontend without `request-rx-copy`), one broadcast
//! frame switched to the vif on the same VLAN only, the close handshake, the published
//! counters and the control domain's lines (connect, refusal, power-off summary).

use std::time::Duration;
use xtask::bundle::GuestFile;
use xtask::qemu::{HvRun, Outcome, run_hypervisor};

/// Hang guard for the QEMU run.
const TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn one_frame_through_the_switch_stays_in_its_vlan() {
    let images = xtask::images::prepared();
    let run = HvRun {
        hypervisor: images.hypervisor(),
        guests: vec![GuestFile::new(images.guest("vif-loop"))],
        deterministic: true,
        timeout: Some(TIMEOUT),
        devices: vec![
            "vif.1=00:16:3e:00:00:01".into(),
            "vif.1=00:16:3e:00:00:02".into(),
            "vif.1=00:16:3e:00:00:03,vlan=5".into(),
            "vif.1=00:16:3e:00:00:04".into(),
        ],
        ..HvRun::default()
    };
    let result = run_hypervisor(&run).unwrap_or_else(|e| panic!("QEMU run failed: {e}"));
    let text = result.transcript.text();
    let g = "[d1 vif-loop] vif-loop:";
    let c = "[d0 control]";
    let lines = [
        format!("{c} d1 vif/0: connected"),
        format!("{c} d1 vif/1: connected"),
        format!("{c} d1 vif/2: connected"),
        format!("{c} d1 vif/3: cannot connect: frontend does not request rx-copy"),
        format!("{g} backends connected, devid 3 refused"),
        format!("{g} tx response id 7 status 0"),
        format!("{g} devid 1 got id 41 status 60 same true"),
        format!("{g} devid 2 got nothing"),
        format!("{c} d1 vif/0: closed by the frontend"),
        format!("{g} devid 0 closed: tx-frames 1 rx-frames 0 tx-dropped 0 rx-dropped 0"),
        format!("{g} devid 1 closed: tx-frames 0 rx-frames 1 tx-dropped 0 rx-dropped 0"),
        format!("{g} devid 2 closed: tx-frames 0 rx-frames 0 tx-dropped 0 rx-dropped 0"),
        format!("{g} done"),
        format!("{c} vif d1/0: tx 1 rx 0 dropped 0 (tx 0 vlan 0 rx 0) errors 0"),
        format!("{c} vif d1/1: tx 0 rx 1 dropped 0 (tx 0 vlan 0 rx 0) errors 0"),
        format!("{c} vif d1/2: tx 0 rx 0 dropped 0 (tx 0 vlan 0 rx 0) errors 0"),
    ];
    let missing: Vec<&String> = lines.iter().filter(|l| !text.contains(*l)).collect();
    assert!(
        missing.is_empty() && result.outcome == Outcome::AllPoweredOff,
        "missing lines {missing:#?}, outcome {:?} ({})\n--- transcript ---\n{text}\
         --- QEMU stderr ---\n{}",
        result.outcome,
        result.outcome.explain(),
        result.stderr
    );
}
