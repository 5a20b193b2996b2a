use super::*;
use crate::vswitch::{Forward, Switch, SwitchConfig};
use std::collections::HashMap;

fn keys<'a>(m: &'a HashMap<&'static str, &'static str>) -> impl Fn(&str) -> Option<&'a [u8]> {
    move |k| m.get(k).map(|v| v.as_bytes())
}

fn linux_keys() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("tx-ring-ref", "8"),
        ("rx-ring-ref", "9"),
        ("event-channel", "5"),
        ("request-rx-copy", "1"),
        ("feature-rx-notify", "1"),
        ("feature-sg", "1"),
    ])
}

#[test]
fn port_config_follows_the_word() {
    let v = |n| VlanId::new(n).unwrap();
    assert_eq!(
        port_config(&VifVlan::Untagged),
        Ok(PortConfig::Access(v(DEFAULT_VLAN)))
    );
    assert_eq!(
        port_config(&VifVlan::Access(42)),
        Ok(PortConfig::Access(v(42)))
    );
    let t = port_config(&VifVlan::Trunk(vec![10, 20])).unwrap();
    assert!(t.carries(v(10)) && t.carries(v(20)));
    assert!(!t.carries(v(1)) && !t.carries(v(30)));
    assert!(matches!(t, PortConfig::Trunk { native: None, .. }));
    assert_eq!(port_config(&VifVlan::Access(0)), Err(Errno::EINVAL));
    assert_eq!(port_config(&VifVlan::Access(4095)), Err(Errno::EINVAL));
    assert_eq!(port_config(&VifVlan::Trunk(vec![])), Err(Errno::EINVAL));
    assert_eq!(port_config(&VifVlan::Trunk(vec![5, 0])), Err(Errno::EINVAL));
}

#[test]
fn untagged_and_access_ports_meet_trunks_tagged() {
    // An untagged vif, an access vif of VLAN 20 and a trunk of 1 and 20: the trunk
    // sees both, tagged, and the two access ports never see each other.
    let mut sw = Switch::new(SwitchConfig::default()).unwrap();
    let a = sw
        .add_port(port_config(&VifVlan::Untagged).unwrap())
        .unwrap();
    let b = sw
        .add_port(port_config(&VifVlan::Access(20)).unwrap())
        .unwrap();
    let t = sw
        .add_port(port_config(&VifVlan::Trunk(vec![1, 20])).unwrap())
        .unwrap();
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    frame.resize(60, 0);
    for (from, vid) in [(a, 1), (b, 20)] {
        match sw.forward(from, &frame, 0) {
            Forward::Deliver { vlan, to } => {
                assert_eq!(vlan.get(), vid);
                assert_eq!(to.len(), 1);
                assert_eq!(to[0].port, t);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn linux_netfront_keys_are_accepted() {
    let m = linux_keys();
    assert_eq!(
        read_frontend(keys(&m)),
        Ok(FrontendRings {
            tx_ring_ref: GrantRef(8),
            rx_ring_ref: GrantRef(9),
            events: EventChannels::Shared(5),
        })
    );
}

#[test]
fn split_channels_are_accepted() {
    let mut m = linux_keys();
    m.remove("event-channel");
    m.insert("event-channel-tx", "11");
    m.insert("event-channel-rx", " 12\n");
    assert_eq!(
        read_frontend(keys(&m)).map(|r| r.events),
        Ok(EventChannels::Split { tx: 11, rx: 12 })
    );
    m.remove("event-channel-rx");
    assert_eq!(
        read_frontend(keys(&m)),
        Err(FrontendError::Missing("event-channel-rx"))
    );
    m.remove("event-channel-tx");
    assert_eq!(
        read_frontend(keys(&m)),
        Err(FrontendError::Missing("event-channel"))
    );
}

#[test]
fn bad_frontend_keys_are_refused() {
    for (key, value, want) in [
        ("request-rx-copy", "0", FrontendError::NoRxCopy),
        ("request-rx-copy", "2", FrontendError::NoRxCopy),
        (
            "request-rx-copy",
            "one",
            FrontendError::Malformed("request-rx-copy"),
        ),
        ("tx-ring-ref", "-1", FrontendError::Malformed("tx-ring-ref")),
        ("tx-ring-ref", "+8", FrontendError::Malformed("tx-ring-ref")),
        (
            "rx-ring-ref",
            "4294967296",
            FrontendError::Malformed("rx-ring-ref"),
        ),
        (
            "event-channel",
            "",
            FrontendError::Malformed("event-channel"),
        ),
        ("multi-queue-num-queues", "2", FrontendError::MultiQueue),
    ] {
        let mut m = linux_keys();
        m.insert(key, value);
        assert_eq!(read_frontend(keys(&m)), Err(want), "{key}={value:?}");
    }
    for key in ["tx-ring-ref", "rx-ring-ref"] {
        let mut m = linux_keys();
        m.remove(key);
        assert_eq!(read_frontend(keys(&m)), Err(FrontendError::Missing(key)));
    }
    // Flip mode (no request-rx-copy) is not served.
    let mut m = linux_keys();
    m.remove("request-rx-copy");
    assert_eq!(read_frontend(keys(&m)), Err(FrontendError::NoRxCopy));
    // One queue is what is served anyway.
    let mut m = linux_keys();
    m.insert("multi-queue-num-queues", "1");
    assert!(read_frontend(keys(&m)).is_ok());
    assert_eq!(
        FrontendError::NoRxCopy.to_string(),
        "frontend does not request rx-copy"
    );
}

#[test]
fn counters_are_listed_with_dashes() {
    let mut c = VifCounters::default();
    c.back.tx_frames = 10;
    c.back.rx_frames = 7;
    c.back.rx_no_buffer = 2;
    c.back.rx_errors = 1;
    c.port.drop_vlan_not_allowed = 3;
    c.port.drop_no_egress = 4;
    c.port.rx_frames = 10;
    let mut got = Vec::new();
    c.for_each(|p, n, v| {
        let mut buf = [0u8; 64];
        let len = dashed(p, n, &mut buf).unwrap();
        got.push((String::from_utf8(buf[..len].to_vec()).unwrap(), v));
    });
    let get = |k: &str| got.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    assert_eq!(get("tx-frames"), Some(10));
    assert_eq!(get("rx-frames"), Some(7));
    assert_eq!(get("tx-dropped"), Some(7));
    assert_eq!(get("vlan-dropped"), Some(3));
    assert_eq!(get("rx-dropped"), Some(3));
    assert_eq!(get("rx-no-buffer"), Some(2));
    assert_eq!(get("switch-drop-vlan-not-allowed"), Some(3));
    assert_eq!(get("switch-rx-frames"), Some(10));
    assert!(got.iter().all(|(k, _)| !k.contains('_')));
    let names: std::collections::HashSet<_> = got.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(names.len(), got.len(), "keys are unique");
    assert_eq!(
        c.summary().to_string(),
        "tx 10 rx 7 dropped 10 (tx 7 vlan 3 rx 3) errors 1"
    );
    assert_eq!(dashed("ab", "c_d", &mut [0u8; 3]), None);
}

#[test]
fn port_stats_accumulate() {
    let mut a = PortStats {
        rx_frames: 1,
        learn_full: u64::MAX,
        ..Default::default()
    };
    let b = PortStats {
        rx_frames: 2,
        drop_same_port: 5,
        learn_full: 1,
        ..Default::default()
    };
    a.accumulate(&b);
    assert_eq!(a.rx_frames, 3);
    assert_eq!(a.drop_same_port, 5);
    assert_eq!(a.learn_full, u64::MAX);
    // Every field is added: sum of kv() doubles (modulo the saturated one).
    let mut c = PortStats::default();
    let mut all = PortStats::default();
    for (i, f) in [
        &mut all.rx_frames,
        &mut all.rx_bytes,
        &mut all.forwarded,
        &mut all.tx_frames,
        &mut all.tx_bytes,
        &mut all.drop_runt,
        &mut all.drop_oversize,
        &mut all.drop_bad_tag,
        &mut all.drop_tagged_on_access,
        &mut all.drop_untagged_on_trunk,
        &mut all.drop_vlan_not_allowed,
        &mut all.drop_same_port,
        &mut all.drop_no_egress,
        &mut all.learn_full,
    ]
    .into_iter()
    .enumerate()
    {
        *f = i as u64 + 1;
    }
    c.accumulate(&all);
    c.accumulate(&all);
    for ((_, x), (_, y)) in c.kv().zip(all.kv()) {
        assert_eq!(x, 2 * y);
    }
}

#[test]
fn refresh_every_64_frames_at_most() {
    let mut r = StatsRefresh::default();
    let mut writes = 0;
    let mut activity = 0u64;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut last = 0u64;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        activity += x % 5;
        if r.due(activity) {
            assert!(activity - last >= REFRESH_FRAMES || writes == 0 && activity >= 64);
            last = activity;
            writes += 1;
        } else {
            assert!(activity - last < REFRESH_FRAMES);
        }
    }
    assert!(writes >= activity / 70 && writes <= activity / REFRESH_FRAMES);
    r.published(activity + 10);
    assert!(!r.due(activity + 10 + 63));
    assert!(r.due(activity + 10 + 64));
    // A restarted count (new netback) publishes at once.
    assert!(r.due(3));
}

#[test]
fn disconnect_reasons_read_well() {
    use crate::netback::Disconnect;
    assert_eq!(
        Disconnect::SlotCrossesPage.to_string(),
        "a tx slot crosses its page"
    );
    assert!(Disconnect::TooManySlots.to_string().contains("18"));
}
