//! The control domain's network backend and switch against `vif-loop`, a bare netfront
//! with four vifs: the handshake (InitWait with `feature-rx-copy`, Connected on the
//! frontend's keys, Closed for a frontend without `request-rx-copy`), a broadcast
//! switched to the vif on the same VLAN only, a tagged frame dropped on an access port,
//! a ring breach closing that vif alone, unicast to a learned MAC, the close
//! handshake, the published counters and the control domain's lines (connect,
//! refusal, disconnect, power-off summary).

use std::time::Duration;
use xtask::bundle::GuestFile;
use xtask::qemu::{HvRun, Outcome, run_hypervisor};

/// Hang guard for the QEMU run.
const TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn frames_are_switched_within_their_vlan_and_a_breach_closes_one_vif() {
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
        // 1. Broadcast within VLAN 1.
        format!("{g} devid 0 sent, status 0"),
        format!("{g} devid 1 got id 41 status 60 same true"),
        format!("{g} devid 2 got nothing"),
        // 2. A tagged frame on an access port is dropped (the guest is told OKAY); a
        // slot crossing its page closes that vif only.
        format!("{g} devid 2 sent a tagged frame, status 0"),
        format!("{c} d1 vif/2: disconnected: a tx slot crosses its page"),
        format!("{g} devid 2 closed by the backend"),
        format!(
            "{g} devid 2 counters: tx-frames 1 rx-frames 0 tx-dropped 1 vlan-dropped 1 \
             rx-dropped 0"
        ),
        // 3. Unicast to a learned MAC, after the other vif broke.
        format!("{g} devid 1 sent, status 0"),
        format!("{g} devid 0 got id 40 status 62 same true"),
        format!("{c} d1 vif/0: closed by the frontend"),
        format!("{c} d1 vif/1: closed by the frontend"),
        format!(
            "{g} devid 0 counters: tx-frames 1 rx-frames 1 tx-dropped 0 vlan-dropped 0 \
             rx-dropped 0"
        ),
        format!(
            "{g} devid 1 counters: tx-frames 1 rx-frames 1 tx-dropped 0 vlan-dropped 0 \
             rx-dropped 0"
        ),
        format!("{g} done"),
        format!("{c} vif d1/0: tx 1 rx 1 dropped 0 (tx 0 vlan 0 rx 0) errors 0"),
        format!("{c} vif d1/1: tx 1 rx 1 dropped 0 (tx 0 vlan 0 rx 0) errors 0"),
        format!("{c} vif d1/2: tx 1 rx 0 dropped 1 (tx 1 vlan 1 rx 0) errors 0"),
        format!("{c} vif d1/3: tx 0 rx 0 dropped 0 (tx 0 vlan 0 rx 0) errors 0"),
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
