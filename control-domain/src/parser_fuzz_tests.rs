//! Parser fuzzing (proptest) of what the control domain decodes: xenstore wire messages
//! (the request decoder, and byte streams through a guest's ring) and its command line
//! (domain names, device words). blkif and netif requests are fuzzed next to their
//! backends' harnesses (`blkback/tests.rs`, `netback/tests.rs`).
//!
//! Seeds: `fuzz-seeds/xenstore/` and `fuzz-seeds/cmdline/` plus generated ones, mutated
//! by `fuzz-seeds/mutate.rs`, and random bytes. `PARSER_FUZZ_CASES=<n>` runs longer;
//! `FUZZ_SEEDS_WRITE=1` rewrites the generated seed files.

use crate::cmdline::{NAME_MAX, domain_name, given_name};
use crate::devices::{DeviceSpec, MAX_DEVICES, parse_devices, populate_devices, vdev_devid};
use crate::mutate::{Recipe, recipe, run, seed_set, write_seeds};
use crate::xenstored::ring::{
    REQ_CONS, REQ_OFF, REQ_PROD, RSP_CONS, RSP_OFF, RSP_PROD, RingConn, RingPage,
};
use crate::xenstored::{Limits, Xenstored};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::vec;
use std::vec::Vec;
use xen_pv_abi::DomId;
use xen_pv_abi::xenstore::*;
use zerocopy::FromBytes;

const RING: u32 = XENSTORE_RING_SIZE as u32;

fn msg(ty: u32, req_id: u32, tx: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [ty, req_id, tx, payload.len() as u32] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// Generated xenstore seeds: requests that succeed, from dom0, on a fresh store (one
/// message each), and one stream of several that domain 1 sends about its own subtree.
fn xenstore_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let stream: Vec<u8> = [
        msg(XS_WRITE, 1, 0, b"/local/domain/1/data\0hello"),
        msg(XS_READ, 2, 0, b"/local/domain/1/data\0"),
        msg(XS_DIRECTORY, 3, 0, b"/local/domain/1\0"),
        msg(XS_WATCH, 4, 0, b"/local/domain/1/data\0tok\0"),
        msg(XS_TRANSACTION_START, 5, 0, b"\0"),
        msg(XS_GET_DOMAIN_PATH, 6, 0, b"1\0"),
        msg(XS_RM, 7, 0, b"/local/domain/1/data\0"),
    ]
    .concat();
    vec![
        ("write.bin", msg(XS_WRITE, 1, 0, b"/tool/fuzz\0value")),
        ("read.bin", msg(XS_READ, 2, 0, b"/local\0")),
        ("directory.bin", msg(XS_DIRECTORY, 3, 0, b"/local/domain\0")),
        ("mkdir.bin", msg(XS_MKDIR, 4, 0, b"/vm/x\0")),
        ("get-perms.bin", msg(XS_GET_PERMS, 5, 0, b"/tool\0")),
        ("set-perms.bin", msg(XS_SET_PERMS, 6, 0, b"/tool\0n0\0r1\0")),
        ("watch.bin", msg(XS_WATCH, 7, 0, b"/local/domain\0token\0")),
        (
            "transaction-start.bin",
            msg(XS_TRANSACTION_START, 8, 0, b"\0"),
        ),
        ("domain-path.bin", msg(XS_GET_DOMAIN_PATH, 9, 0, b"1\0")),
        (
            "is-introduced.bin",
            msg(XS_IS_DOMAIN_INTRODUCED, 10, 0, b"1\0"),
        ),
        ("stream-dom1.bin", stream),
    ]
}

/// The generated command-line seeds (the committed ones are written by hand).
fn cmdline_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![(
        "generated.txt",
        b"console=raw name.0=ctl name.1=guest-one vbd.1=disk0,xvda,ro vbd.1=disk1 \
          vif.1=00:16:3e:00:00:01,vlan=10 vif.2=02:00:00:00:00:02,trunk=1;2;4094 \
          dev.demo.2=1 name.2=two"
            .to_vec(),
    )]
}

/// `FUZZ_SEEDS_WRITE=1` writes the generated seeds into `fuzz-seeds/`.
#[test]
fn write_generated_seeds() {
    write_seeds("xenstore", xenstore_seeds());
    write_seeds("cmdline", cmdline_seeds());
}

/// A store with dom0 and an introduced domain 1 that owns its home directory.
fn store() -> Xenstored {
    let mut s = Xenstored::new(Limits::default());
    s.introduce(DomId(1)).unwrap();
    s.mkdir_local("/local/domain/1").unwrap();
    s.set_perms_local(
        "/local/domain/1",
        &[crate::xenstored::Perm {
            domid: DomId(1),
            access: crate::xenstored::Access::None,
        }],
    )
    .unwrap();
    s
}

/// Output messages: header and payload.
type Messages = Vec<(XsdSockmsg, Vec<u8>)>;

/// Splits queued output messages; each must be a header and its payload, at most 4096.
fn outputs(s: &mut Xenstored, to: DomId) -> Result<Messages, TestCaseError> {
    let mut out = Vec::new();
    while let Some(m) = s.peek_output(to) {
        let (h, rest) = XsdSockmsg::read_from_prefix(m)
            .map_err(|_| TestCaseError::fail("output shorter than a header"))?;
        prop_assert_eq!(h.len as usize, rest.len());
        prop_assert!(rest.len() <= XENSTORE_PAYLOAD_MAX);
        out.push((h, rest.to_vec()));
        s.pop_output(to);
        prop_assert!(out.len() <= 64, "unbounded output");
    }
    Ok(out)
}

/// The request decoder: one message (header, then up to 4096 payload bytes) from dom0
/// or domain 1. At most one reply, echoing the request id and transaction, plus at most
/// one watch event per watch.
fn one_request(bytes: &[u8], from: DomId) -> Result<(), TestCaseError> {
    let mut s = store();
    let Ok((h, payload)) = XsdSockmsg::read_from_prefix(bytes) else {
        return Ok(());
    };
    let payload = &payload[..payload.len().min(XENSTORE_PAYLOAD_MAX)];
    s.request(from, h, payload);
    let out = outputs(&mut s, from)?;
    let replies: Vec<_> = out
        .iter()
        .filter(|(m, _)| m.type_ != XS_WATCH_EVENT)
        .collect();
    prop_assert!(replies.len() <= 1);
    if h.len as usize == payload.len() {
        prop_assert_eq!(replies.len(), 1, "a well-framed request gets a reply");
    }
    for (m, _) in replies {
        prop_assert_eq!(m.req_id, h.req_id);
    }
    Ok(())
}

#[test]
fn xenstore_request_fuzz() {
    let seeds = seed_set("xenstore", xenstore_seeds());
    // Every single-message seed succeeds for dom0 on a fresh store.
    for (name, bytes) in xenstore_seeds()
        .iter()
        .filter(|(n, _)| !n.starts_with("stream"))
    {
        let mut s = store();
        let (h, p) = XsdSockmsg::read_from_prefix(bytes).unwrap();
        s.request(DomId(0), h, p);
        let out = outputs(&mut s, DomId(0)).unwrap();
        assert!(
            out.iter().any(|(m, _)| m.type_ == h.type_),
            "{name}: {out:?}"
        );
    }
    run(
        "xenstore-request",
        3000,
        (recipe(600), any::<bool>()),
        |(r, dom0): (Recipe, bool)| one_request(&r.bytes(&seeds), DomId(if dom0 { 0 } else { 1 })),
    );
}

/// A guest's xenstore page.
struct Page(Vec<u8>);

impl RingPage for Page {
    fn load_u32(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.0[o..o + 4].try_into().unwrap())
    }
    fn store_u32(&mut self, o: usize, v: u32) {
        self.0[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn read_bytes(&self, o: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.0[o..o + out.len()]);
    }
    fn write_bytes(&mut self, o: usize, d: &[u8]) {
        self.0[o..o + d.len()].copy_from_slice(d);
    }
}

/// A byte stream written through domain 1's ring in chunks of at most `chunk` bytes (as
/// much as fits each time), the service run after each, the replies read by the guest.
/// Returns the replies, or `None` once the connection was dropped.
fn ring_stream(bytes: &[u8], chunk: usize) -> Result<Option<Messages>, TestCaseError> {
    let mut p = Page(vec![0u8; 4096]);
    let mut s = store();
    let mut c = RingConn::new();
    let mut sent = 0usize;
    let mut replies: Vec<u8> = Vec::new();
    let mut rounds = 0;
    loop {
        // The guest: what fits of the next chunk.
        let prod = p.load_u32(REQ_PROD);
        let free = RING - prod.wrapping_sub(p.load_u32(REQ_CONS));
        let n = (free as usize).min(chunk.max(1)).min(bytes.len() - sent);
        for (i, &b) in bytes[sent..sent + n].iter().enumerate() {
            p.0[REQ_OFF + (prod.wrapping_add(i as u32) % RING) as usize] = b;
        }
        p.store_u32(REQ_PROD, prod.wrapping_add(n as u32));
        sent += n;
        let cons0 = p.load_u32(REQ_CONS);
        if c.service(&mut p, &mut s, DomId(1)).is_err() {
            return Ok(None);
        }
        prop_assert!(p.load_u32(REQ_CONS).wrapping_sub(cons0) <= RING);
        // The guest reads the replies.
        let (mut cons, rprod) = (p.load_u32(RSP_CONS), p.load_u32(RSP_PROD));
        prop_assert!(rprod.wrapping_sub(cons) <= RING);
        while cons != rprod {
            replies.push(p.0[RSP_OFF + (cons % RING) as usize]);
            cons = cons.wrapping_add(1);
        }
        p.store_u32(RSP_CONS, cons);
        rounds += 1;
        // Bounded: every round moves the stream or the replies on, or it is over.
        prop_assert!(rounds <= bytes.len() + 64, "{rounds} rounds");
        if sent == bytes.len() && n == 0 && s.peek_output(DomId(1)).is_none() {
            break;
        }
    }
    let mut out = Vec::new();
    let mut rest = &replies[..];
    while !rest.is_empty() {
        let (h, tail) = XsdSockmsg::read_from_prefix(rest)
            .map_err(|_| TestCaseError::fail("a torn reply header"))?;
        prop_assert!(h.len as usize <= XENSTORE_PAYLOAD_MAX && h.len as usize <= tail.len());
        out.push((h, tail[..h.len as usize].to_vec()));
        rest = &tail[h.len as usize..];
    }
    Ok(Some(out))
}

#[test]
fn xenstore_ring_fuzz() {
    let seeds = seed_set("xenstore", xenstore_seeds());
    // The stream seed, whole or a byte at a time: one reply per request, none an error.
    let generated = xenstore_seeds();
    let stream = &generated.last().unwrap().1;
    for chunk in [1, 7, 4096] {
        let out = ring_stream(stream, chunk).unwrap().unwrap();
        let replies: Vec<_> = out
            .iter()
            .filter(|(h, _)| h.type_ != XS_WATCH_EVENT)
            .collect();
        assert_eq!(replies.len(), 7, "{out:?}");
        assert!(replies.iter().all(|(h, _)| h.type_ != XS_ERROR), "{out:?}");
    }
    run(
        "xenstore-ring",
        1500,
        (recipe(3000), 1usize..1100),
        |(r, chunk): (Recipe, usize)| ring_stream(&r.bytes(&seeds), chunk).map(drop),
    );
}

/// Names and device words: bounded output, every device in range, unique ids, and the
/// devices written to a store as the toolstack would.
fn check_cmdline(cl: &[u8]) -> Result<(), TestCaseError> {
    for id in [0u16, 1, 2, 0x7fef] {
        if let Some(n) = given_name(cl, DomId(id)) {
            prop_assert!(n.len() <= NAME_MAX);
        }
        let _ = domain_name(cl, DomId(id));
    }
    let words = cl.split(|&b| b == b' ' || b == b'\t').count();
    let mut refusals = 0usize;
    let devices = parse_devices(cl, |_, _| refusals += 1);
    prop_assert!(devices.len() <= MAX_DEVICES);
    prop_assert!(devices.len() + refusals <= words);
    for (i, d) in devices.iter().enumerate() {
        prop_assert!((1..=0x7fef).contains(&d.frontend.0));
        prop_assert!(d.backend != d.frontend);
        prop_assert!(
            !devices[..i]
                .iter()
                .any(|o| o.kind == d.kind && o.frontend == d.frontend && o.devid == d.devid)
        );
        if let DeviceSpec::Vbd { vdev, .. } = &d.spec {
            prop_assert_eq!(vdev_devid(vdev.as_bytes()), Some(d.devid));
        }
    }
    let mut s = Xenstored::new(Limits::default());
    for fe in devices.iter().map(|d| d.frontend) {
        if !s.is_introduced(fe) {
            s.introduce(fe).unwrap();
        }
        let _ = populate_devices(&mut s, &devices, fe);
    }
    Ok(())
}

#[test]
fn cmdline_fuzz() {
    let seeds = seed_set("cmdline", cmdline_seeds());
    for s in &seeds {
        let mut refused = Vec::new();
        let devices = parse_devices(s, |w, why| refused.push((w.to_vec(), why)));
        assert!(refused.is_empty(), "{refused:?}");
        assert!(!devices.is_empty());
        check_cmdline(s).unwrap();
    }
    run("cmdline", 4000, recipe(400), |r: Recipe| {
        check_cmdline(&r.bytes(&seeds))
    });
}

/// `xvd<letters><partition>` as (letters, partition number), the identity of a name.
fn vdev_key(name: &str) -> (std::string::String, u32) {
    let rest = &name[3..];
    let letters: std::string::String = rest
        .chars()
        .take_while(|c| c.is_ascii_lowercase())
        .collect();
    let part = rest[letters.len()..].parse().unwrap_or(0);
    (letters, part)
}

/// `vdev_devid` on any name: no panic, and two different disks or partitions never
/// share a devid (`xvda` is `xvda0`, `xvda01` is `xvda1`).
#[test]
fn vdev_names_fuzz() {
    let name = proptest::collection::vec(
        prop_oneof![
            4 => proptest::char::range('a', 'z'),
            2 => proptest::char::range('0', '9'),
            1 => any::<char>(),
        ],
        0..8,
    )
    .prop_map(|v| {
        let mut s = std::string::String::from("xvd");
        s.extend(v);
        s
    });
    run("vdev", 3000, (name.clone(), name), |(a, b)| {
        if let (Some(x), Some(y)) = (vdev_devid(a.as_bytes()), vdev_devid(b.as_bytes())) {
            prop_assert!(
                x != y || vdev_key(&a) == vdev_key(&b),
                "{a} and {b}: {x:#x}"
            );
        }
        Ok(())
    });
}
