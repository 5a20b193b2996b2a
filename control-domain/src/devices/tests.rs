use super::*;
use crate::xenstored::{DomainInfo, Limits, populate_domain};
use alloc::string::ToString;
use alloc::vec;
use xen_pv_abi::xenstore::{
    XS_DIRECTORY, XS_ERROR, XS_MKDIR, XS_READ, XS_SET_PERMS, XS_WRITE, XsdSockmsg,
};

fn parse(cl: &str) -> (Vec<Device>, Vec<(String, Refusal)>) {
    let mut refused = Vec::new();
    let d = parse_devices(cl.as_bytes(), |w, r| {
        refused.push((String::from_utf8_lossy(w).into_owned(), r))
    });
    (d, refused)
}

#[test]
fn vdev_names_encode_as_libxl() {
    assert_eq!(vdev_devid(b"xvda"), Some(51712));
    assert_eq!(vdev_devid(b"xvdb"), Some(51728));
    assert_eq!(vdev_devid(b"xvda1"), Some(51713));
    assert_eq!(vdev_devid(b"xvdp15"), Some((202 << 8) | (15 << 4) | 15));
    // Disk 16 and partitions above 15 take the extended encoding.
    assert_eq!(vdev_devid(b"xvdq"), Some((1 << 28) | (16 << 8)));
    assert_eq!(vdev_devid(b"xvdaa"), Some((1 << 28) | (26 << 8)));
    assert_eq!(vdev_devid(b"xvda16"), Some((1 << 28) | 16));
    assert_eq!(
        vdev_devid(b"xvdzzz255"),
        Some((1 << 28) | (18277 << 8) | 255)
    );
    for bad in [
        &b"xvd"[..],
        b"xvdA",
        b"xvda256",
        b"xvdaaaa",
        b"sda",
        b"xvda01",
        b"xvda1x",
        b"xvda99999999999",
        b"",
    ] {
        assert_eq!(vdev_devid(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
    for d in 0..16 {
        assert_eq!(vdev_devid(vdev_name(d).as_bytes()), Some(51712 + 16 * d));
    }
    for d in 16..26 {
        assert_eq!(
            vdev_devid(vdev_name(d).as_bytes()),
            Some((1 << 28) | (d << 8))
        );
    }
}

#[test]
fn the_grammar_gives_these_devices() {
    let (d, refused) = parse(
        "console=raw name.1=a vbd.1=disk0 vbd.1=/img/b.raw,xvdc,ro vbd.1=c \
         vif.1=00:16:3e:00:00:01 vif.1=00:16:3E:00:00:02,vlan=10 \
         vif.2=02:00:00:00:00:03,trunk=10;20;4094 dev.demo.1=2 dev.demo.1=0 dev.x-y_2.3=1",
    );
    assert!(refused.is_empty(), "{refused:?}");
    let summary: Vec<(&str, u16, u16, u32)> = d
        .iter()
        .map(|d| (d.kind.as_str(), d.frontend.0, d.backend.0, d.devid))
        .collect();
    assert_eq!(
        summary,
        [
            ("vbd", 1, 0, 51712),
            ("vbd", 1, 0, 51744),
            // The first free name: xvdb.
            ("vbd", 1, 0, 51728),
            ("vif", 1, 0, 0),
            ("vif", 1, 0, 1),
            ("vif", 2, 0, 0),
            ("demo", 1, 2, 0),
            ("demo", 1, 0, 1),
            ("x-y_2", 3, 1, 0),
        ]
    );
    assert_eq!(
        d[1].spec,
        DeviceSpec::Vbd {
            disk: "/img/b.raw".to_string(),
            vdev: "xvdc".to_string(),
            readonly: true
        }
    );
    assert_eq!(
        d[2].spec,
        DeviceSpec::Vbd {
            disk: "c".to_string(),
            vdev: "xvdb".to_string(),
            readonly: false
        }
    );
    assert_eq!(
        d[4].spec,
        DeviceSpec::Vif {
            mac: [0, 0x16, 0x3e, 0, 0, 2],
            vlan: VifVlan::Access(10)
        }
    );
    assert_eq!(
        d[5].spec,
        DeviceSpec::Vif {
            mac: [2, 0, 0, 0, 0, 3],
            vlan: VifVlan::Trunk(vec![10, 20, 4094])
        }
    );
    assert_eq!(d[6].frontend_path(), "/local/domain/1/device/demo/0");
    assert_eq!(d[6].backend_path(), "/local/domain/2/backend/demo/1/0");
}

#[test]
fn hostile_words_are_refused_with_reasons() {
    use Refusal::*;
    let cases: &[(&str, Refusal)] = &[
        ("vbd.0=d", BadDomain),
        ("vbd.01=d", BadDomain),
        ("vbd.-1=d", BadDomain),
        ("vbd.32752=d", BadDomain),
        ("vbd.99999999999999999999=d", BadDomain),
        ("vbd.=d", BadDomain),
        ("vbd.1", BadOption),
        ("vbd.1=", BadDisk),
        ("vbd.1=,xvda", BadDisk),
        ("vbd.1=d,xvd", BadVdev),
        ("vbd.1=d,xvda999", BadVdev),
        ("vbd.1=d,ro,ro", BadOption),
        ("vbd.1=d,xvda,xvdb", BadOption),
        ("vbd.1=d,sda", BadOption),
        ("vbd.1=d,ro,", BadOption),
        ("vif.1=00:16:3e:00:00", BadMac),
        ("vif.1=00:16:3e:00:00:01:02", BadMac),
        ("vif.1=01:16:3e:00:00:01", BadMac),
        ("vif.1=00:00:00:00:00:00", BadMac),
        ("vif.1=0:16:3e:00:00:01", BadMac),
        ("vif.1=00:16:3g:00:00:01", BadMac),
        ("vif.1=00:16:3e:00:00:01,vlan=0", BadVlan),
        ("vif.1=00:16:3e:00:00:01,vlan=4095", BadVlan),
        ("vif.1=00:16:3e:00:00:01,vlan=", BadVlan),
        ("vif.1=00:16:3e:00:00:01,trunk=1;1", BadVlan),
        ("vif.1=00:16:3e:00:00:01,trunk=1;;2", BadVlan),
        ("vif.1=00:16:3e:00:00:01,vlan=1,trunk=2", BadOption),
        ("vif.1=00:16:3e:00:00:01,mtu=9000", BadOption),
        ("dev.demo.1=1", SelfBackend),
        ("dev.demo.0=1", BadDomain),
        ("dev.demo.1=x", BadDomain),
        ("dev.vbd.1=2", BadKind),
        ("dev.console.1=2", BadKind),
        ("dev.Demo.1=2", BadKind),
        ("dev..1=2", BadKind),
        ("dev.demo", BadKind),
        ("dev.abcdefghijklmnopq.1=2", BadKind),
        ("dev.demo.1", BadOption),
    ];
    for &(word, why) in cases {
        let (d, refused) = parse(word);
        assert!(d.is_empty(), "{word}: {d:?}");
        assert_eq!(refused, [(word.to_string(), why)], "{word}");
        // Every reason reads as a sentence.
        assert!(!why.to_string().is_empty());
    }
    // 17 trunk VLANs are one too many; 16 fit.
    let list = |n: u16| (1..=n).map(|v| v.to_string()).collect::<Vec<_>>().join(";");
    let (d, r) = parse(&format!("vif.1=02:00:00:00:00:01,trunk={}", list(16)));
    assert_eq!((d.len(), r.len()), (1, 0));
    let (d, r) = parse(&format!("vif.1=02:00:00:00:00:01,trunk={}", list(17)));
    assert_eq!((d.len(), r[0].1), (0, BadVlan));
    // The same vdev twice for one domain; the same for two domains is fine.
    let (d, r) = parse("vbd.1=a,xvda vbd.1=b,xvda vbd.2=c,xvda");
    assert_eq!(d.len(), 2);
    assert_eq!(r, [("vbd.1=b,xvda".to_string(), Duplicate)]);
}

#[test]
fn counts_are_bounded() {
    let words: Vec<String> = (0..MAX_DEVICES + 8)
        .map(|i| format!("dev.demo.{}=0", i + 1))
        .collect();
    let (d, r) = parse(&words.join(" "));
    assert_eq!(d.len(), MAX_DEVICES);
    assert_eq!(r.len(), 8);
    assert!(r.iter().all(|(_, why)| *why == Refusal::TooMany));
    // 26 default names, then none is left.
    let words: Vec<String> = (0..27).map(|_| "vbd.1=d".to_string()).collect();
    let (d, r) = parse(&words.join(" "));
    assert_eq!(d.len(), 26);
    assert_eq!(r[0].1, Refusal::NoDevid);
}

/// Random command lines (a tiny xorshift, fixed seed): parsing never panics, keeps at
/// most MAX_DEVICES, and every kept device is well formed and unique.
#[test]
fn random_command_lines_never_break_the_parser() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pieces: &[&[u8]] = &[
        b"vbd.",
        b"vif.",
        b"dev.",
        b"demo.",
        b"1",
        b"2",
        b"0",
        b"=",
        b",",
        b";",
        b"ro",
        b"xvd",
        b"a",
        b"q",
        b"vlan=",
        b"trunk=",
        b"00:16:3e:",
        b"ff",
        b":",
        b" ",
        b"4094",
        b"\xff",
        b"\0",
        b"99999",
    ];
    for _ in 0..3000 {
        let mut cl = Vec::new();
        for _ in 0..next() % 120 {
            cl.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
        }
        let mut refused = 0;
        let d = parse_devices(&cl, |_, _| refused += 1);
        assert!(d.len() <= MAX_DEVICES);
        for (i, a) in d.iter().enumerate() {
            assert!(a.frontend.0 != 0 && a.frontend != a.backend);
            assert!(a.frontend.0 <= 0x7fef && a.backend.0 <= 0x7fef);
            assert!(d[..i].iter().all(|b| (b.kind.as_str(), b.frontend, b.devid)
                != (a.kind.as_str(), a.frontend, a.devid)));
        }
    }
}

// ------------------------------------------------------------------ the tree

/// A request from `dom`: Ok(reply body) or Err(errno name).
fn call(s: &mut Xenstored, dom: u16, ty: u32, p: &[u8]) -> Result<Vec<u8>, String> {
    let h = XsdSockmsg {
        type_: ty,
        req_id: 7,
        tx_id: 0,
        len: p.len() as u32,
    };
    s.request(DomId(dom), h, p);
    let mut reply = None;
    while let Some(b) = s.peek_output(DomId(dom)) {
        let t = u32::from_ne_bytes(b[0..4].try_into().unwrap());
        if t == ty || t == XS_ERROR {
            reply = Some((t, b[16..].to_vec()));
        }
        s.pop_output(DomId(dom));
    }
    let (t, body) = reply.expect("a reply");
    if t == XS_ERROR {
        Err(String::from_utf8_lossy(&body[..body.len() - 1]).into_owned())
    } else {
        Ok(body)
    }
}

fn z(p: &str) -> Vec<u8> {
    let mut v = p.as_bytes().to_vec();
    v.push(0);
    v
}

fn read(s: &mut Xenstored, dom: u16, p: &str) -> Result<String, String> {
    call(s, dom, XS_READ, &z(p)).map(|b| String::from_utf8(b).unwrap())
}

fn write(s: &mut Xenstored, dom: u16, p: &str, v: &str) -> Result<(), String> {
    let mut body = z(p);
    body.extend_from_slice(v.as_bytes());
    call(s, dom, XS_WRITE, &body).map(|_| ())
}

fn perms_of(s: &Xenstored, p: &str) -> String {
    let perms = s.perms_local(p).unwrap_or_else(|| panic!("no {p}"));
    perms
        .iter()
        .map(|p| {
            let l = match p.access {
                Access::None => 'n',
                Access::Read => 'r',
                Access::Write => 'w',
                Access::Both => 'b',
            };
            format!("{l}{}", p.domid.0)
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn populate(s: &mut Xenstored, id: u16) {
    let info = DomainInfo {
        domid: DomId(id),
        name: "g",
        uuid: [id as u8; 16],
        memory_kib: 32768,
        store_mfn: 1,
        store_port: 1,
        console_mfn: 2,
        console_port: 2,
    };
    populate_domain(s, &info).unwrap();
}

/// The kernel's order: populate each domain, write its frontends' devices, introduce it.
fn boot(cl: &str, domains: &[u16]) -> Xenstored {
    let (devices, refused) = parse(cl);
    assert!(refused.is_empty(), "{refused:?}");
    let mut s = Xenstored::new(Limits::default());
    populate(&mut s, 0);
    for &id in domains {
        populate(&mut s, id);
        populate_devices(&mut s, &devices, DomId(id)).unwrap();
        s.introduce(DomId(id)).unwrap();
    }
    s
}

/// Keys and values of `dir`, sorted.
fn keys(s: &Xenstored, dir: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = s
        .directory_local(dir)
        .unwrap()
        .map(|k| {
            let val = s.read_local(&format!("{dir}/{k}")).unwrap();
            (k.to_string(), String::from_utf8_lossy(val).into_owned())
        })
        .collect();
    v.sort();
    v
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_vbd_gets_the_xl_keys_and_permissions() {
    let s = boot("vbd.3=/disks/root.img,xvdb,ro", &[3]);
    let front = "/local/domain/3/device/vbd/51728";
    let back = "/local/domain/0/backend/vbd/3/51728";
    assert_eq!(
        keys(&s, front),
        kv(&[
            ("backend", back),
            ("backend-id", "0"),
            ("state", "1"),
            ("virtual-device", "51728"),
            ("device-type", "disk"),
            ("trusted", "1"),
        ])
    );
    assert_eq!(
        keys(&s, back),
        kv(&[
            ("frontend", front),
            ("frontend-id", "3"),
            ("online", "1"),
            ("state", "1"),
            ("params", "/disks/root.img"),
            ("mode", "r"),
            ("type", "phy"),
            ("dev", "xvdb"),
            ("removable", "0"),
            ("bootable", "1"),
            ("device-type", "disk"),
            ("discard-enable", "0"),
        ])
    );
    assert_eq!(perms_of(&s, front), "n3,r0");
    assert_eq!(perms_of(&s, &format!("{front}/state")), "n3,r0");
    assert_eq!(perms_of(&s, back), "n0,r3");
    assert_eq!(perms_of(&s, &format!("{back}/params")), "n0,r3");
    // The frontend's parents stay the toolstack's.
    assert_eq!(perms_of(&s, "/local/domain/3/device/vbd"), "n0,r3");
}

#[test]
fn a_vif_gets_mac_handle_bridge_and_vlan_keys() {
    let s = boot(
        "vif.2=00:16:3e:0a:0b:0c vif.2=00:16:3e:0a:0b:0d,vlan=7 vif.2=00:16:3e:0a:0b:0e,trunk=5;6",
        &[2],
    );
    let front = "/local/domain/2/device/vif/0";
    let back = "/local/domain/0/backend/vif/2/0";
    assert_eq!(
        keys(&s, front),
        kv(&[
            ("backend", back),
            ("backend-id", "0"),
            ("state", "1"),
            ("handle", "0"),
            ("mac", "00:16:3e:0a:0b:0c"),
            ("trusted", "1"),
        ])
    );
    assert_eq!(
        keys(&s, back),
        kv(&[
            ("frontend", front),
            ("frontend-id", "2"),
            ("online", "1"),
            ("state", "1"),
            ("mac", "00:16:3e:0a:0b:0c"),
            ("handle", "0"),
            ("type", "vif"),
            ("bridge", "vswitch"),
        ])
    );
    let b1 = "/local/domain/0/backend/vif/2/1";
    let b2 = "/local/domain/0/backend/vif/2/2";
    assert_eq!(s.read_local(&format!("{b1}/vlan")), Some(&b"7"[..]));
    assert_eq!(s.read_local(&format!("{b1}/trunk")), None);
    assert_eq!(s.read_local(&format!("{b2}/trunk")), Some(&b"5;6"[..]));
    assert_eq!(s.read_local(&format!("{b2}/handle")), Some(&b"2"[..]));
    assert_eq!(perms_of(&s, "/local/domain/2/device/vif/2"), "n2,r0");
    assert_eq!(perms_of(&s, b2), "n0,r2");
}

/// What each side may do: the frontend reads and writes its directory, reads but cannot
/// write the backend's; the backend reads the frontend's; a third domain sees neither.
#[test]
fn each_end_owns_its_directory_and_reads_the_other() {
    // dev.demo.1=2: the backend is a domU, populated after the frontend.
    let mut s = boot("dev.demo.1=2", &[1, 2, 3]);
    let front = "/local/domain/1/device/demo/0";
    let back = "/local/domain/2/backend/demo/1/0";
    assert_eq!(perms_of(&s, front), "n1,r2");
    assert_eq!(perms_of(&s, back), "n2,r1");
    // The backend's home got populate_domain's permissions and content.
    assert_eq!(perms_of(&s, "/local/domain/2"), "n0,r2");
    assert_eq!(read(&mut s, 2, "/local/domain/2/name").unwrap(), "g");
    assert_eq!(perms_of(&s, "/local/domain/2/backend/demo/1"), "n0,r2");
    assert_eq!(
        keys(&s, front),
        kv(&[("backend", back), ("backend-id", "2"), ("state", "1")])
    );
    assert_eq!(
        keys(&s, back),
        kv(&[
            ("frontend", front),
            ("frontend-id", "1"),
            ("online", "1"),
            ("state", "1")
        ])
    );

    // Frontend d1.
    assert_eq!(read(&mut s, 1, &format!("{front}/backend")).unwrap(), back);
    write(&mut s, 1, &format!("{front}/state"), "3").unwrap();
    write(&mut s, 1, &format!("{front}/ring-ref"), "8").unwrap();
    assert_eq!(read(&mut s, 1, &format!("{back}/state")).unwrap(), "1");
    assert_eq!(
        read(&mut s, 1, &format!("{back}/frontend-id")).unwrap(),
        "1"
    );
    assert_eq!(
        write(&mut s, 1, &format!("{back}/state"), "4").unwrap_err(),
        "EACCES"
    );
    assert_eq!(
        write(&mut s, 1, &format!("{back}/evil"), "x").unwrap_err(),
        "EACCES"
    );
    assert_eq!(
        call(&mut s, 1, XS_MKDIR, &z("/local/domain/1/device/demo/9")).unwrap_err(),
        "EACCES"
    );
    // Backend d2: reads what the frontend wrote (new keys keep the directory's perms).
    assert_eq!(read(&mut s, 2, &format!("{front}/ring-ref")).unwrap(), "8");
    assert_eq!(read(&mut s, 2, &format!("{front}/state")).unwrap(), "3");
    assert!(call(&mut s, 2, XS_DIRECTORY, &z(front)).is_ok());
    write(&mut s, 2, &format!("{back}/state"), "2").unwrap();
    assert_eq!(
        write(&mut s, 2, &format!("{front}/state"), "6").unwrap_err(),
        "EACCES"
    );
    // Anyone else: nothing.
    for p in [front, back] {
        assert_eq!(
            read(&mut s, 3, &format!("{p}/state")).unwrap_err(),
            "EACCES"
        );
    }
    // The frontend cannot hand its directory to someone else.
    let mut sp = z(front);
    sp.extend_from_slice(b"n3\0");
    assert_eq!(call(&mut s, 1, XS_SET_PERMS, &sp).unwrap_err(), "EPERM");
    assert_eq!(perms_of(&s, front), "n1,r2");
}

#[test]
fn rewriting_a_device_starts_afresh() {
    let (devices, _) = parse("dev.demo.1=0");
    let mut s = Xenstored::new(Limits::default());
    populate(&mut s, 0);
    populate(&mut s, 1);
    populate_devices(&mut s, &devices, DomId(1)).unwrap();
    s.write_local("/local/domain/1/device/demo/0/stale", b"x")
        .unwrap();
    s.write_local("/local/domain/1/device/demo/0/state", b"6")
        .unwrap();
    populate_devices(&mut s, &devices, DomId(1)).unwrap();
    assert_eq!(s.read_local("/local/domain/1/device/demo/0/stale"), None);
    assert_eq!(
        s.read_local("/local/domain/1/device/demo/0/state"),
        Some(&b"1"[..])
    );
    assert_eq!(perms_of(&s, "/local/domain/0/backend/demo/1/0"), "n0,r1");
    // Devices of other frontends are not touched.
    assert_eq!(s.read_local("/local/domain/2"), None);
}
