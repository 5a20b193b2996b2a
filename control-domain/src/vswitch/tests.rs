use super::*;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;

const S: u64 = 1_000_000_000;
const BCAST: Mac = [0xff; 6];

fn v(n: u16) -> VlanId {
    VlanId::new(n).unwrap()
}

fn mac(n: u8) -> Mac {
    [0x02, 0, 0, 0, 0, n]
}

fn untagged(dst: Mac, src: Mac, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    for (i, b) in f.iter_mut().enumerate().skip(14) {
        *b = i as u8;
    }
    f.truncate(len);
    f
}

fn tagged_tci(dst: Mac, src: Mac, tci: u16, len: usize) -> Vec<u8> {
    let mut f = untagged(dst, src, len.max(18) - 4);
    f.splice(
        12..12,
        TPID_8021Q
            .to_be_bytes()
            .into_iter()
            .chain(tci.to_be_bytes()),
    );
    f.truncate(len);
    f
}

fn tagged(dst: Mac, src: Mac, vid: u16, len: usize) -> Vec<u8> {
    tagged_tci(dst, src, vid, len)
}

fn trunk(allowed: &[u16], native: Option<u16>) -> PortConfig {
    PortConfig::Trunk {
        allowed: allowed.iter().map(|n| v(*n)).collect(),
        native: native.map(v),
    }
}

fn switch() -> Switch {
    Switch::new(SwitchConfig::default()).unwrap()
}

/// The deliveries of a verdict as (port number, egress), or the drop reason.
fn out(f: Forward<'_>) -> Result<Vec<(u16, Egress)>, DropReason> {
    match f {
        Forward::Drop(why) => Err(why),
        Forward::Deliver { to, .. } => Ok(to.iter().map(|d| (d.port.0, d.egress)).collect()),
    }
}

#[test]
fn vlan_id_range() {
    assert!(VlanId::new(0).is_none());
    assert!(VlanId::new(4095).is_none());
    assert!(VlanId::new(4096).is_none());
    assert_eq!(VlanId::new(1).unwrap().get(), 1);
    assert_eq!(VlanId::new(4094).unwrap().get(), 4094);
}

#[test]
fn config_checked() {
    let bad = |c: SwitchConfig| Switch::new(c).err();
    let d = SwitchConfig::default();
    assert_eq!(bad(SwitchConfig { max_ports: 0, ..d }), Some(Errno::EINVAL));
    assert_eq!(
        bad(SwitchConfig {
            max_ports: MAX_PORTS + 1,
            ..d
        }),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        bad(SwitchConfig {
            mac_table_size: 0,
            ..d
        }),
        Some(Errno::EINVAL)
    );
    assert_eq!(bad(SwitchConfig { aging_ns: 0, ..d }), Some(Errno::EINVAL));
    let mut sw = Switch::new(SwitchConfig { max_ports: 2, ..d }).unwrap();
    assert_eq!(sw.add_port(trunk(&[], None)), Err(Errno::EINVAL));
    assert_eq!(sw.add_port(PortConfig::Access(v(1))), Ok(PortId(0)));
    assert_eq!(sw.add_port(trunk(&[], Some(3))), Ok(PortId(1)));
    assert_eq!(sw.add_port(PortConfig::Access(v(1))), Err(Errno::ENOSPC));
    assert_eq!(sw.remove_port(PortId(0)), Ok(()));
    assert_eq!(sw.remove_port(PortId(0)), Err(Errno::ENOENT));
    assert_eq!(sw.remove_port(PortId(9)), Err(Errno::ENOENT));
    assert_eq!(sw.port_stats(PortId(0)), Err(Errno::ENOENT));
    assert_eq!(sw.add_port(PortConfig::Access(v(2))), Ok(PortId(0)));
    assert_eq!(sw.port_config(PortId(0)), Ok(&PortConfig::Access(v(2))));
}

#[test]
fn access_ports_same_and_different_vlans() {
    let mut sw = switch();
    let a = sw.add_port(PortConfig::Access(v(10))).unwrap();
    let _b = sw.add_port(PortConfig::Access(v(10))).unwrap();
    let _c = sw.add_port(PortConfig::Access(v(20))).unwrap();
    let f = untagged(BCAST, mac(1), 60);
    assert_eq!(out(sw.forward(a, &f, 0)), Ok(vec![(1, Egress::AsIs)]));
    // Port 2 (VLAN 20) alone in its VLAN: nowhere to go.
    let f = untagged(BCAST, mac(3), 60);
    assert_eq!(out(sw.forward(PortId(2), &f, 0)), Err(DropReason::NoEgress));
    // Unicast to a MAC learned in VLAN 10 from VLAN 20 stays in VLAN 20.
    let f = untagged(mac(1), mac(3), 60);
    assert_eq!(out(sw.forward(PortId(2), &f, 0)), Err(DropReason::NoEgress));
    assert_eq!(sw.port_stats(PortId(2)).unwrap().drop_no_egress, 2);
    // A second VLAN 20 port gets VLAN 20's flood, port 1 (VLAN 10) does not.
    sw.add_port(PortConfig::Access(v(20))).unwrap();
    assert_eq!(
        out(sw.forward(PortId(2), &f, 0)),
        Ok(vec![(3, Egress::AsIs)])
    );
    assert_eq!(sw.lookup(v(10), &mac(1), 0), Some(a));
    assert_eq!(sw.lookup(v(20), &mac(1), 0), None);
}

#[test]
fn access_and_trunk() {
    let mut sw = switch();
    let a = sw.add_port(PortConfig::Access(v(10))).unwrap();
    let t = sw.add_port(trunk(&[10, 20], None)).unwrap();
    let a20 = sw.add_port(PortConfig::Access(v(20))).unwrap();
    // Access -> trunk: tag inserted.
    let f = untagged(BCAST, mac(1), 60);
    assert_eq!(
        out(sw.forward(a, &f, 0)),
        Ok(vec![(1, Egress::Tagged(v(10)))])
    );
    // Trunk VLAN 20 -> access VLAN 20 only, tag stripped.
    let f = tagged(BCAST, mac(2), 20, 64);
    assert_eq!(out(sw.forward(t, &f, 0)), Ok(vec![(2, Egress::Untagged)]));
    // Trunk VLAN 10 unicast to the learned mac(1): only port a.
    let f = tagged(mac(1), mac(2), 10, 64);
    assert_eq!(out(sw.forward(t, &f, 0)), Ok(vec![(0, Egress::Untagged)]));
    // Tagged on access, untagged on a trunk without native, VLAN not allowed.
    assert_eq!(
        out(sw.forward(a20, &tagged(BCAST, mac(3), 20, 64), 0)),
        Err(DropReason::TaggedOnAccess)
    );
    assert_eq!(
        out(sw.forward(t, &untagged(BCAST, mac(2), 60), 0)),
        Err(DropReason::UntaggedOnTrunk)
    );
    assert_eq!(
        out(sw.forward(t, &tagged(BCAST, mac(2), 30, 64), 0)),
        Err(DropReason::VlanNotAllowed)
    );
    let st = sw.port_stats(t).unwrap();
    assert_eq!(
        (st.drop_untagged_on_trunk, st.drop_vlan_not_allowed),
        (1, 1)
    );
    assert_eq!(sw.port_stats(a20).unwrap().drop_tagged_on_access, 1);
}

#[test]
fn trunk_to_trunk_allowed_lists_and_native() {
    let mut sw = switch();
    let t0 = sw.add_port(trunk(&[10, 20, 30], None)).unwrap();
    let _t1 = sw.add_port(trunk(&[10, 20], None)).unwrap();
    let _t2 = sw.add_port(trunk(&[20], Some(30))).unwrap();
    let _t3 = sw.add_port(trunk(&[30], None)).unwrap();
    let f = tagged(BCAST, mac(1), 10, 64);
    assert_eq!(out(sw.forward(t0, &f, 0)), Ok(vec![(1, Egress::AsIs)]));
    let f = tagged(BCAST, mac(1), 20, 64);
    assert_eq!(
        out(sw.forward(t0, &f, 0)),
        Ok(vec![(1, Egress::AsIs), (2, Egress::AsIs)])
    );
    // VLAN 30 is port 2's native VLAN: leaves it untagged.
    let f = tagged(BCAST, mac(1), 30, 64);
    assert_eq!(
        out(sw.forward(t0, &f, 0)),
        Ok(vec![(2, Egress::Untagged), (3, Egress::AsIs)])
    );
    // Untagged on port 2 is VLAN 30; tagged 30 on port 2 is accepted too.
    let f = untagged(BCAST, mac(2), 60);
    assert_eq!(
        out(sw.forward(PortId(2), &f, 0)),
        Ok(vec![(0, Egress::Tagged(v(30))), (3, Egress::Tagged(v(30)))])
    );
    let f = tagged(BCAST, mac(2), 30, 64);
    assert_eq!(
        out(sw.forward(PortId(2), &f, 0)),
        Ok(vec![(0, Egress::AsIs), (3, Egress::AsIs)])
    );
    assert_eq!(
        out(sw.forward(PortId(2), &tagged(BCAST, mac(2), 10, 64), 0)),
        Err(DropReason::VlanNotAllowed)
    );
}

#[test]
fn learning_then_unicast_and_station_move() {
    let mut sw = switch();
    for _ in 0..4 {
        sw.add_port(PortConfig::Access(v(1))).unwrap();
    }
    // Unknown unicast floods to all but the ingress port.
    let f = untagged(mac(9), mac(1), 60);
    assert_eq!(out(sw.forward(PortId(0), &f, 0)).unwrap().len(), 3);
    // The reply goes to port 0 only.
    let f = untagged(mac(1), mac(2), 60);
    assert_eq!(
        out(sw.forward(PortId(2), &f, S)),
        Ok(vec![(0, Egress::AsIs)])
    );
    assert_eq!(sw.lookup(v(1), &mac(2), S), Some(PortId(2)));
    // mac(1) moves to port 3.
    let f = untagged(BCAST, mac(1), 60);
    sw.forward(PortId(3), &f, 2 * S);
    let f = untagged(mac(1), mac(2), 60);
    assert_eq!(
        out(sw.forward(PortId(2), &f, 2 * S)),
        Ok(vec![(3, Egress::AsIs)])
    );
    // Destination on the ingress port itself: dropped.
    let f = untagged(mac(1), mac(7), 60);
    assert_eq!(
        out(sw.forward(PortId(3), &f, 2 * S)),
        Err(DropReason::SamePort)
    );
    assert_eq!(sw.port_stats(PortId(3)).unwrap().drop_same_port, 1);
    // Removing port 3 forgets mac(1) and mac(7): flooded again.
    sw.remove_port(PortId(3)).unwrap();
    assert_eq!(sw.lookup(v(1), &mac(1), 2 * S), None);
    assert_eq!(sw.mac_entries(), 1);
    let f = untagged(mac(1), mac(2), 60);
    assert_eq!(
        out(sw.forward(PortId(2), &f, 2 * S)),
        Ok(vec![(0, Egress::AsIs), (1, Egress::AsIs)])
    );
}

#[test]
fn group_source_not_learned_and_group_dest_flooded() {
    let mut sw = switch();
    for _ in 0..3 {
        sw.add_port(PortConfig::Access(v(1))).unwrap();
    }
    let mcast: Mac = [0x01, 0x00, 0x5e, 0, 0, 1];
    sw.forward(PortId(1), &untagged(BCAST, mcast, 60), 0);
    sw.forward(PortId(1), &untagged(BCAST, BCAST, 60), 0);
    assert_eq!(sw.mac_entries(), 0);
    let f = untagged(mcast, mac(1), 60);
    assert_eq!(
        out(sw.forward(PortId(0), &f, 0)),
        Ok(vec![(1, Egress::AsIs), (2, Egress::AsIs)])
    );
}

#[test]
fn aging_boundary() {
    let aging = 300 * S;
    let mut sw = switch();
    for _ in 0..3 {
        sw.add_port(PortConfig::Access(v(1))).unwrap();
    }
    let t0 = 5 * S;
    sw.forward(PortId(1), &untagged(BCAST, mac(1), 60), t0);
    let to_1 = untagged(mac(1), mac(2), 60);
    // mac(2) is learned at t0 + aging - 1 too; only mac(1)'s age matters here.
    assert_eq!(
        out(sw.forward(PortId(0), &to_1, t0 + aging - 1)),
        Ok(vec![(1, Egress::AsIs)])
    );
    assert_eq!(sw.lookup(v(1), &mac(1), t0 + aging - 1), Some(PortId(1)));
    assert_eq!(sw.lookup(v(1), &mac(1), t0 + aging), None);
    assert_eq!(
        out(sw.forward(PortId(0), &to_1, t0 + aging)).unwrap().len(),
        2
    );
    // Refreshing restarts the age; a clock going backwards does not age it.
    sw.forward(PortId(1), &untagged(BCAST, mac(1), 60), t0 + aging);
    sw.forward(PortId(1), &untagged(BCAST, mac(1), 60), t0);
    assert_eq!(
        sw.lookup(v(1), &mac(1), t0 + 2 * aging - 1),
        Some(PortId(1))
    );
    assert_eq!(sw.lookup(v(1), &mac(1), t0 + 2 * aging), None);
    // expire() sweeps everything old.
    sw.expire(u64::MAX);
    assert_eq!(sw.mac_entries(), 0);
}

#[test]
fn table_full_does_not_learn_until_entries_expire() {
    let cfg = SwitchConfig {
        mac_table_size: 4,
        aging_ns: 100,
        hash_seed: 7,
        ..Default::default()
    };
    let mut sw = Switch::new(cfg).unwrap();
    for _ in 0..3 {
        sw.add_port(PortConfig::Access(v(1))).unwrap();
    }
    for n in 0..4 {
        sw.forward(PortId(0), &untagged(BCAST, mac(n), 60), n as u64 * 10);
    }
    assert_eq!(sw.mac_entries(), 4);
    // Full: a new station on port 1 is not learned, the old ones stay.
    sw.forward(PortId(1), &untagged(BCAST, mac(50), 60), 50);
    assert_eq!(sw.lookup(v(1), &mac(50), 50), None);
    assert_eq!(sw.port_stats(PortId(1)).unwrap().learn_full, 1);
    for n in 0..4 {
        assert_eq!(sw.lookup(v(1), &mac(n), 50), Some(PortId(0)));
    }
    // Refreshing a known station still works when full.
    sw.forward(PortId(2), &untagged(BCAST, mac(3), 60), 60);
    assert_eq!(sw.lookup(v(1), &mac(3), 60), Some(PortId(2)));
    // mac(0) (seen at 0) expires at 100: then there is room for one.
    sw.forward(PortId(1), &untagged(BCAST, mac(50), 60), 99);
    assert_eq!(sw.port_stats(PortId(1)).unwrap().learn_full, 2);
    sw.forward(PortId(1), &untagged(BCAST, mac(50), 60), 100);
    assert_eq!(sw.lookup(v(1), &mac(50), 100), Some(PortId(1)));
    assert_eq!(sw.lookup(v(1), &mac(0), 100), None);
    assert_eq!(sw.port_stats(PortId(1)).unwrap().learn_full, 2);
    assert_eq!(sw.mac_entries(), 4);
}

#[test]
fn header_drops_counted() {
    let mut sw = switch();
    let a = sw.add_port(PortConfig::Access(v(1))).unwrap();
    let t = sw.add_port(trunk(&[1], None)).unwrap();
    let cases: Vec<(PortId, Vec<u8>, DropReason)> = vec![
        (a, untagged(BCAST, mac(1), 13), DropReason::Runt),
        (a, vec![], DropReason::Runt),
        (
            a,
            untagged(BCAST, mac(1), MAX_UNTAGGED + 1),
            DropReason::Oversize,
        ),
        (
            t,
            tagged(BCAST, mac(1), 1, MAX_TAGGED + 1),
            DropReason::Oversize,
        ),
        (t, tagged(BCAST, mac(1), 1, 17), DropReason::BadTag),
        (t, tagged(BCAST, mac(1), 1, 14), DropReason::BadTag),
        (t, tagged_tci(BCAST, mac(1), 0xe000, 64), DropReason::BadTag),
        (t, tagged_tci(BCAST, mac(1), 0x0fff, 64), DropReason::BadTag),
        (a, tagged(BCAST, mac(1), 0, 64), DropReason::BadTag),
    ];
    for (p, f, why) in &cases {
        assert_eq!(out(sw.forward(*p, f, 0)), Err(*why), "{why:?}");
    }
    assert_eq!(
        out(sw.forward(PortId(7), &untagged(BCAST, mac(1), 60), 0)),
        Err(DropReason::UnknownPort)
    );
    assert_eq!(sw.unknown_port_drops(), 1);
    let sa = sw.port_stats(a).unwrap();
    let st = sw.port_stats(t).unwrap();
    assert_eq!((sa.drop_runt, sa.drop_oversize, sa.drop_bad_tag), (2, 1, 1));
    assert_eq!((st.drop_oversize, st.drop_bad_tag), (1, 4));
    assert_eq!(sa.rx_frames + st.rx_frames, cases.len() as u64);
    assert_eq!(
        sa.rx_bytes + st.rx_bytes,
        cases.iter().map(|c| c.1.len() as u64).sum::<u64>()
    );
    assert_eq!(sw.mac_entries(), 0);
    // The largest frames of each kind pass (and a tagged 1518 leaves untagged at 1514).
    assert!(out(sw.forward(a, &untagged(BCAST, mac(1), MAX_UNTAGGED), 0)).is_ok());
    assert!(out(sw.forward(t, &tagged(BCAST, mac(1), 1, MAX_TAGGED), 0)).is_ok());
    assert!(out(sw.forward(a, &untagged(BCAST, mac(1), ETH_HLEN), 0)).is_ok());
    let sa = sw.port_stats(a).unwrap();
    assert_eq!(sa.tx_bytes, MAX_UNTAGGED as u64);
}

#[test]
fn stats_kv_lists_every_counter() {
    let mut sw = switch();
    let a = sw.add_port(PortConfig::Access(v(1))).unwrap();
    let b = sw.add_port(PortConfig::Access(v(1))).unwrap();
    sw.forward(a, &untagged(BCAST, mac(1), 100), 0);
    sw.forward(a, &untagged(BCAST, mac(1), 5), 0);
    let kv: Vec<_> = sw.stats_kv(a).unwrap().collect();
    assert_eq!(kv.len(), 14);
    let get = |k: &str| kv.iter().find(|(n, _)| *n == k).unwrap().1;
    assert_eq!(
        (
            get("rx_frames"),
            get("rx_bytes"),
            get("forwarded"),
            get("drop_runt")
        ),
        (2, 105, 1, 1)
    );
    let kvb: Vec<_> = sw.stats_kv(b).unwrap().collect();
    assert!(kvb.contains(&("tx_frames", 1)) && kvb.contains(&("tx_bytes", 100)));
    assert!(sw.stats_kv(PortId(5)).is_err());
}

#[test]
fn egress_rewrites() {
    let f = untagged(mac(1), mac(2), 60);
    let mut buf = [0u8; 1600];
    let n = Egress::Tagged(v(0x123)).write(&f, &mut buf).unwrap();
    assert_eq!(n, 64);
    assert_eq!(&buf[..n], &tagged(mac(1), mac(2), 0x123, 64)[..]);
    let t = tagged_tci(mac(1), mac(2), 0xa123, 64);
    let n = Egress::Untagged.write(&t, &mut buf).unwrap();
    assert_eq!(&buf[..n], &f[..]);
    let n = Egress::AsIs.write(&t, &mut buf).unwrap();
    assert_eq!(&buf[..n], &t[..]);
    assert_eq!(Egress::Tagged(v(1)).write(&f, &mut buf[..63]), None);
    assert_eq!(Egress::Untagged.write(&t[..15], &mut buf), None);
    assert_eq!(Egress::Tagged(v(1)).write(&f[..5], &mut buf), None);
}

#[test]
fn trunk_keeps_ingress_pcp() {
    let mut sw = switch();
    let t0 = sw.add_port(trunk(&[5], None)).unwrap();
    sw.add_port(trunk(&[5], None)).unwrap();
    let f = tagged_tci(BCAST, mac(1), 0xa005, 64);
    assert_eq!(out(sw.forward(t0, &f, 0)), Ok(vec![(1, Egress::AsIs)]));
}

// Randomized: ports of random configurations, frames of random shapes from random ports
// at increasing times.

fn arb_port() -> impl Strategy<Value = PortConfig> {
    prop_oneof![
        (1u16..=4).prop_map(|n| PortConfig::Access(v(n))),
        (
            prop::collection::vec(1u16..=4, 1..4),
            prop::option::of(1u16..=4)
        )
            .prop_map(|(a, n)| trunk(&a, n)),
    ]
}

#[derive(Clone, Debug)]
struct Op {
    port: u16,
    dst: u8,
    src: u8,
    /// None: untagged; Some(tci).
    tci: Option<u16>,
    len: usize,
    dt: u64,
    remove: bool,
}

fn arb_op() -> impl Strategy<Value = Op> {
    (
        0u16..7,
        0u8..10,
        0u8..10,
        prop_oneof![
            Just(None),
            (0u16..6).prop_map(Some),
            any::<u16>().prop_map(Some)
        ],
        prop_oneof![0usize..20, 14usize..100, 1510usize..1522],
        0u64..60,
        prop::bool::weighted(0.03),
    )
        .prop_map(|(port, dst, src, tci, len, dt, remove)| Op {
            port,
            dst,
            src,
            tci,
            len,
            dt,
            remove,
        })
}

/// Addresses 0..8 are unicast stations, 8 is multicast, 9 broadcast.
fn addr(n: u8) -> Mac {
    match n {
        8 => [0x33, 0x33, 0, 0, 0, 1],
        9 => BCAST,
        n => mac(n),
    }
}

proptest! {
    #[test]
    fn delivered_frames_respect_vlans_and_counters_add_up(
        ports in prop::collection::vec(arb_port(), 1..7),
        ops in prop::collection::vec(arb_op(), 1..200),
    ) {
        let cfg = SwitchConfig { max_ports: 6, mac_table_size: 5, aging_ns: 100, hash_seed: 3 };
        let mut sw = Switch::new(cfg).unwrap();
        for p in ports.into_iter().take(6) {
            sw.add_port(p).unwrap();
        }
        let mut now = 0u64;
        let mut delivered = 0u64;
        let mut unknown = 0u64;
        let mut tx_bytes = 0u64;
        let mut removed_stats = PortStats::default();
        for op in ops {
            now += op.dt;
            let ingress = PortId(op.port);
            if op.remove {
                if let Ok(st) = sw.port_stats(ingress) {
                    removed_stats.rx_frames += st.rx_frames;
                    removed_stats.tx_frames += st.tx_frames;
                    removed_stats.tx_bytes += st.tx_bytes;
                    sw.remove_port(ingress).unwrap();
                }
                continue;
            }
            let (dst, src) = (addr(op.dst), addr(op.src));
            let frame = match op.tci {
                None => untagged(dst, src, op.len),
                Some(tci) => tagged_tci(dst, src, tci, op.len),
            };
            let in_cfg = sw.port_config(ingress).ok().cloned();
            match sw.forward(ingress, &frame, now) {
                Forward::Drop(DropReason::UnknownPort) => {
                    prop_assert!(in_cfg.is_none());
                    unknown += 1;
                }
                Forward::Drop(_) => prop_assert!(in_cfg.is_some()),
                Forward::Deliver { vlan, to } => {
                    let to = to.to_vec();
                    let in_cfg = in_cfg.unwrap();
                    prop_assert!(in_cfg.carries(vlan));
                    prop_assert!(!to.is_empty());
                    for (i, d) in to.iter().enumerate() {
                        prop_assert_ne!(d.port, ingress);
                        prop_assert!(to[..i].iter().all(|e| e.port != d.port));
                        let c = sw.port_config(d.port).unwrap().clone();
                        prop_assert!(c.carries(vlan));
                        // The rewritten frame parses to the VLAN this port expects.
                        let mut buf = [0u8; 1600];
                        let n = d.egress.write(&frame, &mut buf).unwrap();
                        tx_bytes += n as u64;
                        let h = parse(&buf[..n]).unwrap();
                        let wire_vlan = match (h.tag, &c) {
                            (Some(t), _) => t,
                            (None, PortConfig::Access(a)) => *a,
                            (None, PortConfig::Trunk { native, .. }) => native.unwrap(),
                        };
                        prop_assert_eq!(wire_vlan, vlan);
                    }
                    delivered += to.len() as u64;
                    // A unicast destination known alive goes to that one port.
                    if !is_group(&dst)
                        && let Some(p) = sw.lookup(vlan, &dst, now)
                        && p != ingress
                    {
                        prop_assert_eq!(to.len(), 1);
                        prop_assert_eq!(to[0].port, p);
                    }
                }
            }
            prop_assert!(sw.mac_entries() <= 5);
        }
        let mut tx = removed_stats.tx_frames;
        let mut txb = removed_stats.tx_bytes;
        let mut rx = removed_stats.rx_frames;
        for i in 0..6 {
            if let Ok(st) = sw.port_stats(PortId(i)) {
                prop_assert_eq!(st.rx_frames, st.forwarded + st.drops());
                tx += st.tx_frames;
                txb += st.tx_bytes;
                rx += st.rx_frames;
            }
        }
        prop_assert_eq!(tx, delivered);
        prop_assert_eq!(txb, tx_bytes);
        prop_assert!(rx + unknown <= 200);
        prop_assert_eq!(sw.unknown_port_drops(), unknown);
    }
}

// The MAC table against a model (a BTreeMap with the same learn/expire rules). A tiny
// table with many keys makes probe runs collide, wrap around and shift on removal.

#[derive(Clone, Debug)]
enum TableOp {
    Learn(u16, u8, u16),
    Lookup(u16, u8),
    Forget(u16),
    Expire,
}

fn arb_table_op() -> impl Strategy<Value = (TableOp, u64)> {
    (
        prop_oneof![
            6 => (1u16..4, 0u8..12, 0u16..3).prop_map(|(v, m, p)| TableOp::Learn(v, m, p)),
            4 => (1u16..4, 0u8..12).prop_map(|(v, m)| TableOp::Lookup(v, m)),
            1 => (0u16..3).prop_map(TableOp::Forget),
            1 => Just(TableOp::Expire),
        ],
        0u64..20,
    )
}

proptest! {
    #[test]
    fn mac_table_matches_model(
        seed in any::<u64>(),
        limit in 1usize..8,
        ops in prop::collection::vec(arb_table_op(), 1..300),
    ) {
        use super::table::{Learned, MacTable};
        use std::collections::BTreeMap;
        const AGING: u64 = 50;
        let mut t = MacTable::new(limit, AGING, seed).unwrap();
        let mut m: BTreeMap<(u16, u8), (u16, u64)> = BTreeMap::new();
        let expired = |last: u64, now: u64| now.saturating_sub(last) >= AGING;
        let mut now = 0;
        for (op, dt) in ops {
            now += dt;
            match op {
                TableOp::Learn(vid, n, port) => {
                    let got = t.learn(v(vid), &mac(n), PortId(port), now);
                    let want = if let Some(e) = m.get_mut(&(vid, n)) {
                        *e = (port, e.1.max(now));
                        Learned::Refreshed
                    } else {
                        if m.len() >= limit {
                            m.retain(|_, e| !expired(e.1, now));
                        }
                        if m.len() >= limit {
                            Learned::Full
                        } else {
                            m.insert((vid, n), (port, now));
                            Learned::New
                        }
                    };
                    prop_assert_eq!(got, want);
                }
                TableOp::Lookup(vid, n) => {
                    let want = match m.get(&(vid, n)) {
                        Some(&(p, last)) if !expired(last, now) => Some(PortId(p)),
                        Some(_) => {
                            m.remove(&(vid, n));
                            None
                        }
                        None => None,
                    };
                    prop_assert_eq!(t.lookup(v(vid), &mac(n), now), want);
                }
                TableOp::Forget(p) => {
                    t.forget_port(PortId(p));
                    m.retain(|_, e| e.0 != p);
                }
                TableOp::Expire => {
                    t.expire(now);
                    m.retain(|_, e| !expired(e.1, now));
                }
            }
            prop_assert_eq!(t.len(), m.len());
        }
        // Every surviving entry is still reachable.
        for (&(vid, n), &(p, last)) in &m {
            if !expired(last, now) {
                prop_assert_eq!(t.lookup(v(vid), &mac(n), now), Some(PortId(p)));
            }
        }
    }
}
