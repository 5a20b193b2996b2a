//! pv-guest's `demo=net`: the kit's netfront and smoltcp in four domUs against the
//! control domain's netback and VLAN switch: a TCP transfer inside VLAN 10, an ARP
//! probe from VLAN 20 that must go unanswered, and a trunk port that sees both VLANs
//! tagged.
//!
//! Nothing waits for time: the client and the probe send nothing before the sniffer
//! published `data/net` (its receive buffers are posted by then), and the sniffer
//! stops once it counted the client's three broadcasts (gratuitous ARP before, ARP
//! request for the server, gratuitous ARP after the transfer) and the probe's 16.

mod common;

use common::{CLIENT_SEED, checksum, random_bytes, run_timed};
use std::time::Duration;
use xtask::qemu::{HvRun, Outcome};

/// Hang guard for the QEMU run.
const TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes the client sends.
const TRANSFER: usize = 1 << 20;

/// d1 server and d2 client in VLAN 10, d3 probing from VLAN 20, d4 sniffing a trunk of
/// both.
#[test]
fn tcp_crosses_vlan_10_and_vlan_20_stays_isolated() {
    let images = xtask::images::prepared();
    let guest = |cmdline: &str| {
        let mut g = xtask::bundle::GuestFile::new(images.pv_guest());
        g.cmdline = cmdline.into();
        g
    };
    let run = HvRun {
        hypervisor: images.hypervisor(),
        guests: vec![
            guest("demo=net net=server ip=10.0.0.1/24"),
            guest("demo=net net=client ip=10.0.0.2/24 peer=10.0.0.1 after=4"),
            guest("demo=net net=probe ip=10.0.0.3/24 peer=10.0.0.1 tries=16 after=4"),
            guest("demo=net net=sniff until=10:3,20:16"),
        ],
        deterministic: true,
        timeout: Some(TIMEOUT),
        devices: vec![
            "vif.1=00:16:3e:00:00:01,vlan=10".into(),
            "vif.2=00:16:3e:00:00:02,vlan=10".into(),
            "vif.3=00:16:3e:00:00:03,vlan=20".into(),
            "vif.4=00:16:3e:00:00:04,trunk=10;20".into(),
        ],
        ..HvRun::default()
    };
    let (result, took) = run_timed(&run);
    let text = result.transcript.text();
    let sum = checksum(&random_bytes(CLIENT_SEED, TRANSFER));
    let mut lines = vec![
        format!("[d1 pv-guest] net: server received {TRANSFER} bytes, checksum {sum:#010x}"),
        format!("[d2 pv-guest] net: client sent {TRANSFER} bytes, checksum {sum:#010x}"),
        "[d3 pv-guest] net: no ARP reply for 10.0.0.1 after 16 tries".into(),
        "[d2 pv-guest] net: d4 started".into(),
        "[d3 pv-guest] net: d4 started".into(),
        "[d4 pv-guest] net: vlan 20 frames 16".into(),
        "(hv) frames: 0 still owned by ended domains".into(),
        "(hv) all domains ended: 5 powered off, 0 failed".into(),
    ];
    for d in 1..=4 {
        lines.push(format!("[d0 control] d{d} vif/0: connected"));
        lines.push(format!(
            "[d{d} pv-guest] net: device/vif/0: connected to d0, mac 00:16:3e:00:00:0{d}"
        ));
        lines.push(format!("[d{d} pv-guest] net: done"));
        lines.push(format!(
            "[d{d} pv-guest] net: closed (Ok(())), ring grants ended: true"
        ));
    }
    let missing: Vec<&String> = lines
        .iter()
        .filter(|l| !text.contains(l.as_str()))
        .collect();
    assert!(
        missing.is_empty() && result.outcome == Outcome::AllPoweredOff,
        "missing lines {missing:#?}, outcome {:?} ({}), {took:?}\n--- transcript ---\n{text}\
         --- QEMU stderr ---\n{}",
        result.outcome,
        result.outcome.explain(),
        result.stderr
    );
    let vlan10 = text
        .lines()
        .find_map(|l| l.strip_prefix("[d4 pv-guest] net: vlan 10 frames "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(
        vlan10.is_some_and(|n| n >= 3),
        "the sniffer saw {vlan10:?} VLAN 10 frames, wanted at least 3:\n{text}"
    );
    for bad in [
        "net: failed",
        "ARP reply from",
        "sniffing timed out",
        "untagged frames",
    ] {
        assert!(!text.contains(bad), "`{bad}` in the transcript:\n{text}");
    }
    let faults: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("(hv)") && l.contains("fault"))
        .collect();
    assert!(faults.is_empty(), "hypervisor faults: {faults:#?}");
    for l in text
        .lines()
        .filter(|l| l.contains(" net: ") || l.contains(" vif/"))
    {
        eprintln!("{l}");
    }
    eprintln!("demo=net: 4 domUs in {took:?}");
}
