//! Per-operation tests against the wire interface.

use super::wire::*;
use super::*;
use alloc::string::ToString;
use alloc::vec;

/// One decoded outgoing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Msg {
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub body: Vec<u8>,
}

pub(crate) fn drain(s: &mut Xenstored, dom: u16) -> Vec<Msg> {
    let mut out = Vec::new();
    while let Some(b) = s.peek_output(DomId(dom)) {
        let w = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
        assert_eq!(w(12) as usize, b.len() - 16);
        out.push(Msg {
            ty: w(0),
            req_id: w(4),
            tx_id: w(8),
            body: b[16..].to_vec(),
        });
        s.pop_output(DomId(dom));
    }
    out
}

/// Sends a request and returns (reply type, reply body, watch events queued meanwhile
/// for the sender as (path, token)).
pub(crate) fn call(s: &mut Xenstored, dom: u16, ty: u32, tx: u32, p: &[u8]) -> (u32, Vec<u8>) {
    let h = XsdSockmsg {
        type_: ty,
        req_id: 0x1234,
        tx_id: tx,
        len: p.len() as u32,
    };
    s.request(DomId(dom), h, p);
    let msgs = drain(s, dom);
    let replies: Vec<&Msg> = msgs.iter().filter(|m| m.ty != XS_WATCH_EVENT).collect();
    assert_eq!(replies.len(), 1, "{msgs:?}");
    assert_eq!(replies[0].req_id, 0x1234);
    assert_eq!(replies[0].tx_id, tx);
    (replies[0].ty, replies[0].body.clone())
}

fn ok(s: &mut Xenstored, dom: u16, ty: u32, tx: u32, p: &[u8]) -> Vec<u8> {
    let (t, b) = call(s, dom, ty, tx, p);
    assert_eq!(t, ty, "{}", String::from_utf8_lossy(&b));
    b
}

fn err(s: &mut Xenstored, dom: u16, ty: u32, tx: u32, p: &[u8]) -> String {
    let (t, b) = call(s, dom, ty, tx, p);
    assert_eq!(
        t,
        XS_ERROR,
        "unexpected success {:?}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(b.last(), Some(&0));
    String::from_utf8(b[..b.len() - 1].to_vec()).unwrap()
}

fn z(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn wr(path: &str, val: &str) -> Vec<u8> {
    let mut v = z(path);
    v.extend_from_slice(val.as_bytes());
    v
}

fn two(a: &str, b: &str) -> Vec<u8> {
    let mut v = z(a);
    v.extend(z(b));
    v
}

fn perms(list: &[&str]) -> Vec<u8> {
    list.iter().flat_map(|p| z(p)).collect()
}

/// A store with domains 1 and 2 introduced, each owning its home directory.
fn store() -> Xenstored {
    let mut s = Xenstored::new(Limits::default());
    for d in [1u16, 2] {
        s.introduce(DomId(d)).unwrap();
        let home = format!("/local/domain/{d}");
        s.mkdir_local(&home).unwrap();
        s.set_perms_local(
            &home,
            &[Perm {
                domid: DomId(d),
                access: Access::None,
            }],
        )
        .unwrap();
    }
    drain(&mut s, 0);
    s
}

/// Events (path, token) queued for `dom`, draining its queue.
fn events(s: &mut Xenstored, dom: u16) -> Vec<(String, String)> {
    drain(s, dom)
        .into_iter()
        .filter(|m| m.ty == XS_WATCH_EVENT)
        .map(|m| {
            let parts: Vec<&[u8]> = m.body.split(|&b| b == 0).collect();
            assert_eq!(parts.len(), 3);
            (
                String::from_utf8(parts[0].to_vec()).unwrap(),
                String::from_utf8(parts[1].to_vec()).unwrap(),
            )
        })
        .collect()
}

/// Sends a request, keeping the events queued: returns the reply only; events stay
/// queued (in order) for `events`.
fn send(s: &mut Xenstored, dom: u16, ty: u32, tx: u32, p: &[u8]) -> Msg {
    let before = s.conns[&dom].out.len();
    s.request(
        DomId(dom),
        XsdSockmsg {
            type_: ty,
            req_id: 9,
            tx_id: tx,
            len: p.len() as u32,
        },
        p,
    );
    let c = &s.conns[&dom];
    let m = c
        .out
        .iter()
        .skip(before)
        .find(|m| m.is_reply)
        .expect("a reply");
    let b = &m.bytes;
    let w = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
    Msg {
        ty: w(0),
        req_id: w(4),
        tx_id: w(8),
        body: b[16..].to_vec(),
    }
}

#[test]
fn initial_tree() {
    let s = Xenstored::new(Limits::default());
    for p in ["/", "/local", "/local/domain", "/tool", "/vm"] {
        assert_eq!(s.read_local(p), Some(&b""[..]), "{p}");
        assert_eq!(
            s.perms_local(p).unwrap(),
            &[Perm {
                domid: DomId(0),
                access: Access::None
            }]
        );
    }
    assert!(s.is_introduced(DomId(0)));
    assert!(!s.is_introduced(DomId(1)));
}

#[test]
fn write_read_directory_rm() {
    let mut s = store();
    assert_eq!(ok(&mut s, 1, XS_WRITE, 0, &wr("a/b/c", "v1")), b"OK\0");
    assert_eq!(ok(&mut s, 1, XS_READ, 0, &z("a/b/c")), b"v1");
    assert_eq!(
        ok(&mut s, 1, XS_READ, 0, &z("/local/domain/1/a/b/c")),
        b"v1"
    );
    // Parents were created empty.
    assert_eq!(ok(&mut s, 1, XS_READ, 0, &z("a/b")), b"");
    ok(&mut s, 1, XS_WRITE, 0, &wr("a/x", ""));
    ok(&mut s, 1, XS_MKDIR, 0, &z("a/y"));
    ok(&mut s, 1, XS_MKDIR, 0, &z("a/y")); // mkdir of an existing node is fine
    assert_eq!(ok(&mut s, 1, XS_DIRECTORY, 0, &z("a")), b"b\0x\0y\0");
    assert_eq!(ok(&mut s, 1, XS_DIRECTORY, 0, &z("a/b/c")), b"");
    // Binary values and embedded NULs survive.
    ok(&mut s, 1, XS_WRITE, 0, b"bin\0\x00\x01\xff\0");
    assert_eq!(ok(&mut s, 1, XS_READ, 0, &z("bin")), b"\x00\x01\xff\0");
    ok(&mut s, 1, XS_RM, 0, &z("a"));
    assert_eq!(err(&mut s, 1, XS_READ, 0, &z("a/b/c")), "ENOENT");
    assert_eq!(err(&mut s, 1, XS_READ, 0, &z("a")), "ENOENT");
    // rm of a missing node whose parent exists is fine; a missing parent is ENOENT.
    ok(&mut s, 1, XS_RM, 0, &z("a"));
    assert_eq!(err(&mut s, 1, XS_RM, 0, &z("a/b")), "ENOENT");
    assert_eq!(err(&mut s, 0, XS_RM, 0, &z("/")), "EINVAL");
    // Node counts went back.
    assert_eq!(s.counts.get(&1).copied(), Some(2)); // home + bin
}

#[test]
fn invalid_paths() {
    let mut s = store();
    for bad in ["/a/", "//a", "/a//b", "/a b", "/ä", "", "a/", "/a\\b"] {
        assert_eq!(
            err(&mut s, 1, XS_WRITE, 0, &wr(bad, "x")),
            "EINVAL",
            "{bad:?}"
        );
        assert_eq!(err(&mut s, 1, XS_READ, 0, &z(bad)), "EINVAL", "{bad:?}");
    }
    // Length: 2048 bytes below the home prefix are fine, 2049 are not.
    // (dom0 writes: a domU's parent record would exceed its 2048-byte quota first.)
    let long = format!("/local/domain/1/{}", "x".repeat(2048));
    ok(&mut s, 0, XS_WRITE, 0, &wr(&long, ""));
    assert_eq!(
        err(&mut s, 0, XS_WRITE, 0, &wr(&(long + "y"), "")),
        "EINVAL"
    );
    let long = "x".repeat(2049);
    assert_eq!(err(&mut s, 1, XS_WRITE, 0, &wr(&long, "")), "EINVAL");
    let abs = format!("/{}", "y".repeat(2048));
    assert_eq!(err(&mut s, 0, XS_WRITE, 0, &wr(&abs, "")), "EINVAL");
}

#[test]
fn malformed_payloads() {
    let mut s = store();
    // No NUL, two args where one is expected, empty payload.
    assert_eq!(err(&mut s, 1, XS_READ, 0, b"name"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_READ, 0, b"a\0b\0"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_READ, 0, b""), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_WRITE, 0, b"novalue"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_WATCH, 0, b"a\0"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_WATCH, 0, b"a\0t\0x\0"), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_SET_PERMS, 0, &z("a")), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_END, 0, &z("X")), "EINVAL");
    assert_eq!(err(&mut s, 1, XS_DIRECTORY_PART, 0, &z("a")), "EINVAL");
    // Unknown and server-only types.
    for ty in [15, 16, 20, 23, 26, 0xffff, u32::MAX] {
        assert_eq!(err(&mut s, 1, ty, 0, b""), "ENOSYS", "{ty}");
    }
    // Unknown transaction id.
    assert_eq!(err(&mut s, 1, XS_READ, 77, &z("a")), "ENOENT");
    // Header/payload length mismatch drops the connection (cannot resync).
    s.request(
        DomId(2),
        XsdSockmsg {
            type_: XS_READ,
            req_id: 1,
            tx_id: 0,
            len: 10,
        },
        b"abc\0",
    );
    assert!(s.is_dropped(DomId(2)));
    assert!(s.peek_output(DomId(2)).is_none());
    // Other connections are unaffected.
    ok(&mut s, 1, XS_WRITE, 0, &wr("still", "here"));
}

#[test]
fn get_domain_path_and_introduced() {
    let mut s = store();
    assert_eq!(
        ok(&mut s, 1, XS_GET_DOMAIN_PATH, 0, &z("7")),
        z("/local/domain/7")
    );
    assert_eq!(
        ok(&mut s, 1, XS_GET_DOMAIN_PATH, 0, &z("-1")),
        z("/local/domain/4294967295")
    );
    assert_eq!(ok(&mut s, 0, XS_IS_DOMAIN_INTRODUCED, 0, &z("1")), z("T"));
    assert_eq!(ok(&mut s, 0, XS_IS_DOMAIN_INTRODUCED, 0, &z("3")), z("F"));
    assert_eq!(
        ok(&mut s, 0, XS_IS_DOMAIN_INTRODUCED, 0, &z("32752")),
        z("T")
    );
    assert_eq!(
        err(&mut s, 1, XS_IS_DOMAIN_INTRODUCED, 0, &z("1")),
        "EACCES"
    );
}

#[test]
fn privileged_only_ops() {
    let mut s = store();
    for ty in [
        XS_CONTROL,
        XS_INTRODUCE,
        XS_RELEASE,
        XS_IS_DOMAIN_INTRODUCED,
        XS_RESUME,
        XS_SET_TARGET,
    ] {
        assert_eq!(err(&mut s, 1, ty, 0, &z("1")), "EACCES", "{ty}");
    }
    assert_eq!(err(&mut s, 0, XS_CONTROL, 0, &z("print")), "ENOSYS");
    // Introduce over the wire.
    let mut p = z("5");
    p.extend(z("1234"));
    p.extend(z("3"));
    ok(&mut s, 0, XS_INTRODUCE, 0, &p);
    assert!(s.is_introduced(DomId(5)));
    let mut bad = z("6");
    bad.extend(z("1"));
    bad.extend(z("0"));
    assert_eq!(err(&mut s, 0, XS_INTRODUCE, 0, &bad), "EINVAL");
    assert_eq!(err(&mut s, 0, XS_RELEASE, 0, &z("0")), "EINVAL");
    assert_eq!(err(&mut s, 0, XS_RELEASE, 0, &z("9")), "ENOENT");
    ok(&mut s, 0, XS_RESUME, 0, &z("5"));
    ok(&mut s, 0, XS_RELEASE, 0, &z("5"));
    assert!(!s.is_introduced(DomId(5)));
}

#[test]
fn requests_of_unknown_domains_are_ignored() {
    let mut s = store();
    s.request(
        DomId(9),
        XsdSockmsg {
            type_: XS_READ,
            req_id: 1,
            tx_id: 0,
            len: 2,
        },
        b"a\0",
    );
    assert!(s.peek_output(DomId(9)).is_none());
    assert_eq!(s.domains_with_output().count(), 0);
}

#[test]
fn permission_matrix() {
    let mut s = store();
    // dom0 creates nodes with every access kind for dom2, dom1 as owner.
    for (name, acc) in [("n", "n"), ("r", "r"), ("w", "w"), ("b", "b")] {
        let path = format!("/shared/{name}");
        ok(&mut s, 0, XS_WRITE, 0, &wr(&path, "val"));
        ok(
            &mut s,
            0,
            XS_SET_PERMS,
            0,
            &[z(&path), perms(&["n1", &format!("{acc}2")])].concat(),
        );
    }
    ok(
        &mut s,
        0,
        XS_SET_PERMS,
        0,
        &[z("/shared"), perms(&["r0"])].concat(),
    );
    for (name, can_read, can_write) in [
        ("n", false, false),
        ("r", true, false),
        ("w", false, true),
        ("b", true, true),
    ] {
        let path = format!("/shared/{name}");
        // Owner: everything.
        assert_eq!(ok(&mut s, 1, XS_READ, 0, &z(&path)), b"val");
        ok(&mut s, 1, XS_WRITE, 0, &wr(&path, "val"));
        // dom2 gets exactly what its entry says.
        let (t, _) = call(&mut s, 2, XS_READ, 0, &z(&path));
        assert_eq!(t == XS_READ, can_read, "read {name}");
        let (t, b) = call(&mut s, 2, XS_WRITE, 0, &wr(&path, "val"));
        assert_eq!(t == XS_WRITE, can_write, "write {name}");
        if !can_write {
            assert_eq!(b, z("EACCES"));
        }
        // dom3 (not listed) gets the default: none.
        s.introduce(DomId(3)).unwrap();
        assert_eq!(err(&mut s, 3, XS_READ, 0, &z(&path)), "EACCES");
        // get_perms needs read.
        let (t, _) = call(&mut s, 2, XS_GET_PERMS, 0, &z(&path));
        assert_eq!(t == XS_GET_PERMS, can_read);
    }
    assert_eq!(
        ok(&mut s, 0, XS_GET_PERMS, 0, &z("/shared/w")),
        perms(&["n1", "w2"])
    );
    // dom1 is not privileged: nothing outside its perms.
    assert_eq!(err(&mut s, 1, XS_READ, 0, &z("/local/domain/2")), "EACCES");
    assert_eq!(err(&mut s, 1, XS_WRITE, 0, &wr("/tool/x", "1")), "EACCES");
}

#[test]
fn enoent_versus_eacces() {
    let mut s = store();
    // Missing node below a readable parent: ENOENT; below an unreadable one: EACCES.
    assert_eq!(err(&mut s, 1, XS_READ, 0, &z("missing")), "ENOENT");
    assert_eq!(
        err(&mut s, 1, XS_READ, 0, &z("/local/domain/2/missing")),
        "EACCES"
    );
    // Deeper: the nearest existing ancestor decides.
    assert_eq!(
        err(&mut s, 1, XS_READ, 0, &z("/local/domain/2/a/b/c")),
        "EACCES"
    );
    assert_eq!(err(&mut s, 1, XS_READ, 0, &z("/nonexistent/x")), "EACCES");
    ok(
        &mut s,
        0,
        XS_SET_PERMS,
        0,
        &[z("/"), perms(&["n0", "r1"])].concat(),
    );
    assert_eq!(err(&mut s, 1, XS_READ, 0, &z("/nonexistent/x")), "ENOENT");
    // Creating needs write on the nearest existing ancestor.
    assert_eq!(
        err(&mut s, 1, XS_WRITE, 0, &wr("/nonexistent/x", "")),
        "EACCES"
    );
    // rm of a missing node below an unwritable parent.
    assert_eq!(err(&mut s, 1, XS_RM, 0, &z("/local/domain/2/zz")), "EACCES");
}

#[test]
fn created_nodes_inherit_perms_with_creator_as_owner() {
    let mut s = store();
    ok(&mut s, 0, XS_MKDIR, 0, &z("/pub"));
    ok(
        &mut s,
        0,
        XS_SET_PERMS,
        0,
        &[z("/pub"), perms(&["n0", "b1", "r2"])].concat(),
    );
    ok(&mut s, 1, XS_WRITE, 0, &wr("/pub/a/b", "x"));
    assert_eq!(
        ok(&mut s, 0, XS_GET_PERMS, 0, &z("/pub/a/b")),
        perms(&["n1", "b1", "r2"])
    );
    assert_eq!(
        ok(&mut s, 0, XS_GET_PERMS, 0, &z("/pub/a")),
        perms(&["n1", "b1", "r2"])
    );
    // dom0 creating keeps the parent's owner.
    ok(&mut s, 0, XS_WRITE, 0, &wr("/local/domain/1/by0", "x"));
    assert_eq!(
        ok(&mut s, 0, XS_GET_PERMS, 0, &z("/local/domain/1/by0")),
        perms(&["n1"])
    );
    // The created nodes are charged to dom1.
    assert_eq!(s.counts.get(&1).copied(), Some(4));
}

#[test]
fn set_perms_rules() {
    let mut s = store();
    ok(&mut s, 1, XS_WRITE, 0, &wr("mine", "x"));
    // The owner may change access but not give the node away.
    ok(
        &mut s,
        1,
        XS_SET_PERMS,
        0,
        &[z("mine"), perms(&["r1", "b2"])].concat(),
    );
    assert_eq!(
        err(
            &mut s,
            1,
            XS_SET_PERMS,
            0,
            &[z("mine"), perms(&["n2"])].concat()
        ),
        "EPERM"
    );
    // A writer that is not the owner may not set perms.
    assert_eq!(
        err(
            &mut s,
            2,
            XS_SET_PERMS,
            0,
            &[z("/local/domain/1/mine"), perms(&["n1"])].concat()
        ),
        "EACCES"
    );
    // Malformed entries; too many entries.
    for bad in ["x1", "r", "r1a", "r99999", "r-1", ""] {
        assert_eq!(
            err(
                &mut s,
                1,
                XS_SET_PERMS,
                0,
                &[z("mine"), perms(&[bad])].concat()
            ),
            "EINVAL",
            "{bad:?}"
        );
    }
    let six = perms(&["n1", "r2", "r3", "r4", "r5", "r6"]);
    assert_eq!(
        err(
            &mut s,
            1,
            XS_SET_PERMS,
            0,
            &[z("mine"), six.clone()].concat()
        ),
        "ENOSPC"
    );
    // dom0 is not limited and may change owners.
    ok(
        &mut s,
        0,
        XS_SET_PERMS,
        0,
        &[z("/local/domain/1/mine"), six].concat(),
    );
    ok(
        &mut s,
        0,
        XS_SET_PERMS,
        0,
        &[z("/local/domain/1/mine"), perms(&["n2"])].concat(),
    );
    assert_eq!(s.counts.get(&1).copied(), Some(1));
    assert_eq!(s.counts.get(&2).copied(), Some(2));
    // Special nodes.
    assert_eq!(
        err(
            &mut s,
            1,
            XS_SET_PERMS,
            0,
            &[z("@releaseDomain"), perms(&["n1"])].concat()
        ),
        "EACCES"
    );
    assert_eq!(
        err(
            &mut s,
            0,
            XS_SET_PERMS,
            0,
            &[z("@other"), perms(&["n0"])].concat()
        ),
        "EINVAL"
    );
}

#[test]
fn target_gets_owner_rights_over_target_nodes() {
    let mut s = store();
    s.introduce(DomId(3)).unwrap();
    assert_eq!(err(&mut s, 3, XS_READ, 0, &z("/local/domain/1")), "EACCES");
    ok(&mut s, 0, XS_SET_TARGET, 0, &two("3", "1"));
    assert_eq!(ok(&mut s, 3, XS_READ, 0, &z("/local/domain/1")), b"");
    ok(&mut s, 3, XS_WRITE, 0, &wr("/local/domain/1/dm", "x"));
    assert_eq!(err(&mut s, 0, XS_SET_TARGET, 0, &two("3", "8")), "ENOENT");
}

#[test]
fn watches_fire_for_path_and_ancestors() {
    let mut s = store();
    ok(&mut s, 1, XS_WRITE, 0, &wr("a/b", ""));
    send(&mut s, 1, XS_WATCH, 0, &two("a", "tok"));
    send(&mut s, 1, XS_WATCH, 0, &two("/local/domain/1/a/b/c", "abs"));
    // The fire-once-on-set events, reported as the watch was given.
    assert_eq!(
        events(&mut s, 1),
        vec![
            ("a".to_string(), "tok".to_string()),
            ("/local/domain/1/a/b/c".to_string(), "abs".to_string())
        ]
    );
    // Writing below the watch fires it, relative; writing a sibling does not.
    send(&mut s, 1, XS_WRITE, 0, &wr("a/b/c/d", "1"));
    assert_eq!(
        events(&mut s, 1),
        vec![
            ("a/b/c/d".to_string(), "tok".to_string()),
            ("/local/domain/1/a/b/c/d".to_string(), "abs".to_string())
        ]
    );
    send(&mut s, 1, XS_WRITE, 0, &wr("ab", "1"));
    assert_eq!(events(&mut s, 1), vec![]);
    // rm of an ancestor fires the exact watches of removed descendants, and ancestors'.
    send(&mut s, 1, XS_RM, 0, &z("a/b"));
    let ev = events(&mut s, 1);
    assert!(ev.contains(&("/local/domain/1/a/b/c".to_string(), "abs".to_string())));
    assert!(ev.contains(&("a/b".to_string(), "tok".to_string())));
    assert!(!ev.iter().any(|e| e.0.ends_with("/d") && e.1 == "abs"));
    // Unwatch: the relative name resolves the same way.
    ok(&mut s, 1, XS_UNWATCH, 0, &two("a", "tok"));
    assert_eq!(err(&mut s, 1, XS_UNWATCH, 0, &two("a", "tok")), "ENOENT");
    send(&mut s, 1, XS_WRITE, 0, &wr("a/z", "1"));
    assert_eq!(events(&mut s, 1), vec![]);
}

#[test]
fn watch_rules() {
    let mut s = store();
    ok(&mut s, 1, XS_WATCH, 0, &two("x", "t"));
    assert_eq!(err(&mut s, 1, XS_WATCH, 0, &two("x", "t")), "EEXIST");
    assert_eq!(err(&mut s, 1, XS_WATCH, 0, &two("/bad/", "t")), "EINVAL");
    ok(&mut s, 1, XS_WATCH, 0, &two("x", "t2"));
    // Watch on a node the watcher cannot read: set, but changes are not reported.
    send(&mut s, 1, XS_WATCH, 0, &two("/local/domain/2/secret", "s"));
    events(&mut s, 1);
    ok(&mut s, 2, XS_WRITE, 0, &wr("secret", "1"));
    assert_eq!(events(&mut s, 1), vec![]);
    // ... unless it can read the node or its parent.
    ok(
        &mut s,
        2,
        XS_SET_PERMS,
        0,
        &[z("secret"), perms(&["n2", "r1"])].concat(),
    );
    events(&mut s, 1);
    ok(&mut s, 2, XS_WRITE, 0, &wr("secret", "2"));
    assert_eq!(
        events(&mut s, 1),
        vec![("/local/domain/2/secret".to_string(), "s".to_string())]
    );
    // Losing access through set_perms is still reported (old perms readable).
    ok(
        &mut s,
        2,
        XS_SET_PERMS,
        0,
        &[z("secret"), perms(&["n2"])].concat(),
    );
    assert_eq!(
        events(&mut s, 1),
        vec![("/local/domain/2/secret".to_string(), "s".to_string())]
    );
    // The watcher (dom2 itself) of its own path sees everything; dom0 sees everything.
    send(&mut s, 0, XS_WATCH, 0, &two("/", "root"));
    assert_eq!(
        events(&mut s, 0),
        vec![("/".to_string(), "root".to_string())]
    );
    ok(&mut s, 2, XS_WRITE, 0, &wr("secret", "3"));
    assert_eq!(
        events(&mut s, 0),
        vec![("/local/domain/2/secret".to_string(), "root".to_string())]
    );
    // reset_watches removes them all.
    ok(&mut s, 1, XS_RESET_WATCHES, 0, b"");
    assert!(s.conns[&1].watches.is_empty());
}

#[test]
fn identical_pending_events_are_merged() {
    let mut s = store();
    send(&mut s, 1, XS_WATCH, 0, &two("k", "t"));
    events(&mut s, 1);
    for _ in 0..5 {
        send(&mut s, 1, XS_WRITE, 0, &wr("k", "v"));
    }
    assert_eq!(events(&mut s, 1), vec![("k".to_string(), "t".to_string())]);
}

#[test]
fn special_watches() {
    let mut s = store();
    send(&mut s, 0, XS_WATCH, 0, &two("@introduceDomain", "i"));
    send(&mut s, 0, XS_WATCH, 0, &two("@releaseDomain", "r"));
    send(&mut s, 1, XS_WATCH, 0, &two("@releaseDomain", "r1"));
    events(&mut s, 0);
    // The initial event goes out even to a domain without read access.
    assert_eq!(
        events(&mut s, 1),
        vec![("@releaseDomain".to_string(), "r1".to_string())]
    );
    s.introduce(DomId(7)).unwrap();
    s.introduce(DomId(7)).unwrap(); // idempotent, fires once
    assert_eq!(
        events(&mut s, 0),
        vec![("@introduceDomain".to_string(), "i".to_string())]
    );
    s.release(DomId(7), false);
    assert_eq!(
        events(&mut s, 0),
        vec![("@releaseDomain".to_string(), "r".to_string())]
    );
    assert_eq!(events(&mut s, 1), vec![]);
    // Granted read on the special node: dom1 now sees releases.
    s.set_perms_local(
        "@releaseDomain",
        &[
            Perm {
                domid: DomId(0),
                access: Access::None,
            },
            Perm {
                domid: DomId(1),
                access: Access::Read,
            },
        ],
    )
    .unwrap();
    s.introduce(DomId(8)).unwrap();
    s.release(DomId(8), false);
    assert_eq!(
        events(&mut s, 1),
        vec![("@releaseDomain".to_string(), "r1".to_string())]
    );
}

#[test]
fn shutdown_fires_release_once_until_resume() {
    let mut s = store();
    send(&mut s, 0, XS_WATCH, 0, &two("@releaseDomain", "r"));
    events(&mut s, 0);
    s.notify_shutdown(DomId(1));
    s.notify_shutdown(DomId(1));
    assert_eq!(events(&mut s, 0).len(), 1);
    assert!(s.is_introduced(DomId(1)));
    ok(&mut s, 0, XS_RESUME, 0, &z("1"));
    s.notify_shutdown(DomId(1));
    assert_eq!(events(&mut s, 0).len(), 1);
    s.notify_shutdown(DomId(9)); // unknown: nothing
    assert_eq!(events(&mut s, 0).len(), 0);
}

#[test]
fn dom0_is_never_dropped_but_its_queue_is_capped() {
    let limits = Limits {
        output_messages_per_domain: 10,
        ..Limits::default()
    };
    let mut s = Xenstored::new(limits);
    send(&mut s, 0, XS_WATCH, 0, &two("/", "t"));
    for i in 0..100 {
        s.write_local(&format!("/x{i}"), b"").unwrap();
    }
    assert!(!s.is_dropped(DomId(0)));
    assert_eq!(s.conns[&0].out.len(), 10);
    drain(&mut s, 0);
    ok(&mut s, 0, XS_READ, 0, &z("/x1"));
}

#[test]
fn release_with_node_removal() {
    let mut s = store();
    ok(&mut s, 1, XS_WRITE, 0, &wr("data", "x"));
    ok(&mut s, 0, XS_MKDIR, 0, &z("/pub"));
    ok(
        &mut s,
        0,
        XS_SET_PERMS,
        0,
        &[z("/pub"), perms(&["n0", "b1", "r2"])].concat(),
    );
    ok(&mut s, 1, XS_WRITE, 0, &wr("/pub/owned-by-1", "x"));
    ok(&mut s, 0, XS_WRITE, 0, &wr("/pub/owned-by-0", "x"));
    ok(&mut s, 1, XS_WATCH, 0, &two("x", "t"));
    s.release(DomId(1), true);
    assert!(!s.is_introduced(DomId(1)));
    assert!(s.read_local("/local/domain/1").is_none());
    assert!(s.read_local("/pub/owned-by-1").is_none());
    assert_eq!(
        s.perms_local("/pub/owned-by-0").unwrap(),
        &[
            Perm {
                domid: DomId(0),
                access: Access::None
            },
            Perm {
                domid: DomId(2),
                access: Access::Read
            }
        ]
    );
    assert_eq!(s.counts.get(&1).copied().unwrap_or(0), 0);
    // Re-introduction starts clean.
    s.introduce(DomId(1)).unwrap();
    assert!(s.conns[&1].watches.is_empty());
}

#[test]
fn transactions_see_own_writes_and_conflict() {
    let mut s = store();
    ok(&mut s, 1, XS_WRITE, 0, &wr("k", "0"));
    let id = ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(tx, 0);
    ok(&mut s, 1, XS_WRITE, tx, &wr("k", "1"));
    ok(&mut s, 1, XS_WRITE, tx, &wr("new/deep", "n"));
    assert_eq!(ok(&mut s, 1, XS_READ, tx, &z("k")), b"1");
    assert_eq!(ok(&mut s, 1, XS_READ, 0, &z("k")), b"0");
    assert_eq!(err(&mut s, 1, XS_READ, 0, &z("new/deep")), "ENOENT");
    assert_eq!(ok(&mut s, 1, XS_DIRECTORY, tx, &z("new")), z("deep"));
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_START, tx, b"\0"), "EBUSY");
    ok(&mut s, 1, XS_TRANSACTION_END, tx, &z("T"));
    assert_eq!(ok(&mut s, 1, XS_READ, 0, &z("new/deep")), b"n");
    assert_eq!(ok(&mut s, 1, XS_READ, 0, &z("k")), b"1");
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_END, tx, &z("T")), "ENOENT");
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_END, 0, &z("T")), "ENOENT");

    // Conflict: another writer changes a node the transaction read.
    let id = ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    ok(&mut s, 1, XS_READ, tx, &z("k"));
    ok(&mut s, 1, XS_WRITE, tx, &wr("other", "x"));
    ok(&mut s, 0, XS_WRITE, 0, &wr("/local/domain/1/k", "2"));
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_END, tx, &z("T")), "EAGAIN");
    assert_eq!(err(&mut s, 1, XS_READ, 0, &z("other")), "ENOENT");

    // Abort discards; an unrelated concurrent change does not conflict.
    let id = ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    ok(&mut s, 1, XS_WRITE, tx, &wr("k", "3"));
    ok(&mut s, 1, XS_TRANSACTION_END, tx, &z("F"));
    assert_eq!(ok(&mut s, 1, XS_READ, 0, &z("k")), b"2");
    let id = ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    ok(&mut s, 1, XS_WRITE, tx, &wr("k", "4"));
    ok(&mut s, 2, XS_WRITE, 0, &wr("elsewhere", "x"));
    ok(&mut s, 1, XS_TRANSACTION_END, tx, &z("T"));
    assert_eq!(ok(&mut s, 1, XS_READ, 0, &z("k")), b"4");
    // Transactions are per connection.
    let id = ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(err(&mut s, 2, XS_READ, tx, &z("k")), "ENOENT");
}

#[test]
fn transaction_watch_events_fire_at_commit() {
    let mut s = store();
    send(&mut s, 2, XS_WATCH, 0, &two("/local/domain/1", "w"));
    events(&mut s, 2);
    ok(
        &mut s,
        1,
        XS_SET_PERMS,
        0,
        &[z("/local/domain/1"), perms(&["n1", "r2"])].concat(),
    );
    events(&mut s, 2);
    let id = ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    ok(&mut s, 1, XS_WRITE, tx, &wr("t", "1"));
    assert_eq!(events(&mut s, 2), vec![]);
    ok(&mut s, 1, XS_TRANSACTION_END, tx, &z("T"));
    assert_eq!(
        events(&mut s, 2),
        vec![("/local/domain/1/t".to_string(), "w".to_string())]
    );
}

#[test]
fn quotas() {
    let limits = Limits {
        nodes_per_domain: 5,
        watches_per_domain: 3,
        transactions_per_domain: 2,
        ..Limits::default()
    };
    let mut s = Xenstored::new(limits);
    s.introduce(DomId(1)).unwrap();
    s.mkdir_local("/local/domain/1").unwrap();
    s.set_perms_local(
        "/local/domain/1",
        &[Perm {
            domid: DomId(1),
            access: Access::None,
        }],
    )
    .unwrap();
    // Nodes: home counts as one.
    for i in 0..4 {
        ok(&mut s, 1, XS_WRITE, 0, &wr(&format!("n{i}"), ""));
    }
    assert_eq!(err(&mut s, 1, XS_WRITE, 0, &wr("n4", "")), "ENOSPC");
    // Overwriting existing nodes is fine; creating two at once at the limit is not.
    ok(&mut s, 1, XS_WRITE, 0, &wr("n0", "x"));
    ok(&mut s, 1, XS_RM, 0, &z("n3"));
    assert_eq!(err(&mut s, 1, XS_WRITE, 0, &wr("a/b", "")), "ENOSPC");
    assert!(s.read_local("/local/domain/1/a").is_none());
    // dom0 is exempt.
    for i in 0..10 {
        ok(&mut s, 0, XS_WRITE, 0, &wr(&format!("/z{i}"), ""));
    }
    // Value / record size (2048 including header, perms and children).
    let big = "v".repeat(2048 - 24 - 8 - 1);
    ok(&mut s, 1, XS_WRITE, 0, &wr("n0", &big));
    let big = "v".repeat(2048 - 24 - 8);
    assert_eq!(err(&mut s, 1, XS_WRITE, 0, &wr("n0", &big)), "ENOSPC");
    // Watches: Xen's `>` check admits limit + 1.
    for i in 0..4 {
        ok(&mut s, 1, XS_WATCH, 0, &two("w", &format!("{i}")));
    }
    assert_eq!(err(&mut s, 1, XS_WATCH, 0, &two("w", "x")), "E2BIG");
    // Transactions: likewise limit + 1.
    for _ in 0..3 {
        ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    }
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_START, 0, b"\0"), "ENOSPC");
}

#[test]
fn transaction_node_quota_checked_at_commit() {
    let limits = Limits {
        nodes_per_domain: 4,
        ..Limits::default()
    };
    let mut s = Xenstored::new(limits);
    s.introduce(DomId(1)).unwrap();
    s.mkdir_local("/local/domain/1").unwrap();
    s.set_perms_local(
        "/local/domain/1",
        &[Perm {
            domid: DomId(1),
            access: Access::None,
        }],
    )
    .unwrap();
    let id = ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    ok(&mut s, 1, XS_WRITE, tx, &wr("a", ""));
    ok(&mut s, 1, XS_WRITE, tx, &wr("b", ""));
    ok(&mut s, 1, XS_WRITE, tx, &wr("c", ""));
    assert_eq!(err(&mut s, 1, XS_WRITE, tx, &wr("d", "")), "ENOSPC");
    // Xen's commit check is `count >= quota`.
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_END, tx, &z("T")), "ENOSPC");
    assert!(s.read_local("/local/domain/1/a").is_none());
}

#[test]
fn transaction_failing_half_way_cannot_commit() {
    let limits = Limits {
        transaction_nodes: 6,
        ..Limits::default()
    };
    let mut s = Xenstored::new(limits);
    s.introduce(DomId(1)).unwrap();
    s.mkdir_local("/local/domain/1").unwrap();
    s.set_perms_local(
        "/local/domain/1",
        &[Perm {
            domid: DomId(1),
            access: Access::None,
        }],
    )
    .unwrap();
    for i in 0..6 {
        s.write_local(&format!("/local/domain/1/t/{i}"), b"")
            .unwrap();
    }
    let id = ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    let tx: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    // rm walks more nodes than the transaction may touch: ENOSPC part-way.
    assert_eq!(err(&mut s, 1, XS_RM, tx, &z("t")), "ENOSPC");
    assert_eq!(err(&mut s, 1, XS_TRANSACTION_END, tx, &z("T")), "ENOMEM");
    assert_eq!(s.directory_local("/local/domain/1/t").unwrap().count(), 6);
}

#[test]
fn directory_part_pages_with_generation() {
    let mut s = store();
    let names: Vec<String> = (0..300).map(|i| format!("child-number-{i:04}")).collect();
    for n in &names {
        s.write_local(&format!("/big/{n}"), b"").unwrap();
    }
    // A plain directory would exceed the payload: E2BIG.
    assert_eq!(err(&mut s, 0, XS_DIRECTORY, 0, &z("/big")), "E2BIG");
    let mut got: Vec<String> = Vec::new();
    let mut off = 0usize;
    let mut generation = None;
    loop {
        let b = ok(
            &mut s,
            0,
            XS_DIRECTORY_PART,
            0,
            &two("/big", &off.to_string()),
        );
        assert!(b.len() <= 4096);
        let nul = b.iter().position(|&c| c == 0).unwrap();
        let g: u64 = std::str::from_utf8(&b[..nul]).unwrap().parse().unwrap();
        assert!(generation.is_none() || generation == Some(g));
        generation = Some(g);
        let rest = &b[nul + 1..];
        // The last page ends with an empty string.
        let last = rest == b"\0" || rest.ends_with(b"\0\0");
        let body = if last { &rest[..rest.len() - 1] } else { rest };
        assert!(body.is_empty() || body.ends_with(b"\0"));
        for part in body.split(|&c| c == 0).filter(|p| !p.is_empty()) {
            got.push(String::from_utf8(part.to_vec()).unwrap());
            off += part.len() + 1;
        }
        if last {
            break;
        }
    }
    assert_eq!(got, names);
    // Past the end: just the generation and an empty string.
    let b = ok(&mut s, 0, XS_DIRECTORY_PART, 0, &two("/big", "999999"));
    assert!(b.ends_with(b"\0\0"));
    // A change bumps the generation.
    s.write_local("/big/new", b"").unwrap();
    let b = ok(&mut s, 0, XS_DIRECTORY_PART, 0, &two("/big", "0"));
    let nul = b.iter().position(|&c| c == 0).unwrap();
    let g: u64 = std::str::from_utf8(&b[..nul]).unwrap().parse().unwrap();
    assert_ne!(Some(g), generation);
}

#[test]
fn flooding_watcher_is_dropped() {
    let limits = Limits {
        output_messages_per_domain: 50,
        ..Limits::default()
    };
    let mut s = Xenstored::new(limits);
    s.introduce(DomId(1)).unwrap();
    s.introduce(DomId(2)).unwrap();
    s.set_perms_local(
        "/",
        &[Perm {
            domid: DomId(0),
            access: Access::Read,
        }],
    )
    .unwrap();
    send(&mut s, 1, XS_WATCH, 0, &two("/", "t"));
    send(&mut s, 2, XS_WATCH, 0, &two("/", "t"));
    for i in 0..200 {
        s.write_local(&format!("/f{i}"), b"x").unwrap();
        // dom2 reads its events; dom1 never does.
        drain(&mut s, 2);
    }
    assert!(s.is_dropped(DomId(1)));
    assert!(!s.is_dropped(DomId(2)));
    assert!(s.peek_output(DomId(1)).is_none());
    assert!(s.conns[&1].out.len() <= 50);
}

#[test]
fn replies_echo_ids_and_outstanding_limit() {
    let mut s = store();
    for i in 0..25u32 {
        s.request(
            DomId(1),
            XsdSockmsg {
                type_: XS_GET_DOMAIN_PATH,
                req_id: i,
                tx_id: 0,
                len: 2,
            },
            b"1\0",
        );
    }
    assert!(!s.accepts_request(DomId(1)));
    assert!(s.accepts_request(DomId(0)));
    let m = drain(&mut s, 1);
    assert_eq!(m.len(), 25);
    assert!(m.iter().enumerate().all(|(i, m)| m.req_id == i as u32));
    assert!(s.accepts_request(DomId(1)));
}

#[test]
fn populate_writes_the_xl_tree() {
    let mut s = Xenstored::new(Limits::default());
    let info = DomainInfo {
        domid: DomId(3),
        name: "guest",
        uuid: [0x12; 16],
        memory_kib: 65536,
        store_mfn: 0x1234,
        store_port: 1,
        console_mfn: 0x1235,
        console_port: 2,
    };
    populate_domain(&mut s, &info).unwrap();
    s.introduce(DomId(3)).unwrap();
    let r = |s: &mut Xenstored, p: &str| ok(s, 3, XS_READ, 0, &z(p));
    assert_eq!(r(&mut s, "name"), b"guest");
    assert_eq!(r(&mut s, "domid"), b"3");
    assert_eq!(r(&mut s, "store/ring-ref"), b"4660");
    assert_eq!(r(&mut s, "console/port"), b"2");
    assert_eq!(r(&mut s, "memory/target"), b"65536");
    assert_eq!(r(&mut s, "vm"), b"/vm/12121212-1212-1212-1212-121212121212");
    // Guest may write control/shutdown and data/, but not name.
    ok(&mut s, 3, XS_WRITE, 0, &wr("control/shutdown", ""));
    ok(&mut s, 3, XS_WRITE, 0, &wr("data/x", "1"));
    ok(
        &mut s,
        3,
        XS_WRITE,
        0,
        &wr("device/suspend/event-channel", "5"),
    );
    assert_eq!(err(&mut s, 3, XS_WRITE, 0, &wr("name", "evil")), "EACCES");
    assert_eq!(err(&mut s, 3, XS_WRITE, 0, &wr("newkey", "x")), "EACCES");
    assert_eq!(
        ok(&mut s, 0, XS_GET_PERMS, 0, &z("/local/domain/3")),
        perms(&["n0", "r3"])
    );
}

/// Fills `dom`'s memory quota with 1900-byte values at long paths until a write fails;
/// returns the error.
fn fill_memory(s: &mut Xenstored, dom: u16, tag: &str) -> String {
    let value = vec![b'v'; 1900];
    let long = "d".repeat(1500);
    for i in 0..2000 {
        // Fan-out of 40 keeps every parent record below 2048 bytes.
        let mut p = z(&format!("{tag}{}/{}/{long}", i / 40, i % 40));
        p.pop();
        p.push(0);
        p.extend_from_slice(&value);
        let (t, b) = call(s, dom, XS_WRITE, 0, &p);
        if t == XS_ERROR {
            return String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .to_string();
        }
    }
    panic!("2000 writes of 3.4 KiB all accepted");
}

#[test]
fn a_domu_cannot_pass_its_memory_quota_and_removal_gives_it_back() {
    let mut s = Xenstored::new(Limits::default());
    s.introduce(DomId(1)).unwrap();
    ok(&mut s, 0, XS_MKDIR, 0, &z("/local/domain/1"));
    ok(&mut s, 0, XS_SET_PERMS, 0, b"/local/domain/1\0b1\0");
    let base = s.memory_of(DomId(1));
    assert_eq!(fill_memory(&mut s, 1, "n"), "ENOMEM");
    let full = s.memory_of(DomId(1));
    assert!(full <= s.limits().memory_per_domain, "{full}");
    assert!(full > s.limits().memory_per_domain - 8192, "{full}");
    // A transaction's copies count too, and go when it ends.
    let id = ok(&mut s, 1, XS_TRANSACTION_START, 0, b"\0");
    let tx: u32 = core::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    let before = s.memory_of(DomId(1));
    ok(&mut s, 1, XS_READ, tx, &z("/local/domain/1"));
    assert!(s.memory_of(DomId(1)) > before);
    ok(&mut s, 1, XS_TRANSACTION_END, tx, b"F\0");
    assert_eq!(s.memory_of(DomId(1)), before);
    // Removing everything returns the charge exactly (no drift).
    for k in 0..50 {
        call(&mut s, 1, XS_RM, 0, &z(&format!("n{k}")));
    }
    assert_eq!(s.memory_of(DomId(1)), base);
}

#[test]
fn past_the_total_only_domains_below_their_fair_share_are_read() {
    let limits = Limits {
        memory_per_domain: 300 * 1024,
        memory_total: 400 * 1024,
        ..Limits::default()
    };
    let mut s = Xenstored::new(limits);
    for d in 1..=3u16 {
        s.introduce(DomId(d)).unwrap();
        let home = format!("/local/domain/{d}");
        ok(&mut s, 0, XS_MKDIR, 0, &z(&home));
        ok(
            &mut s,
            0,
            XS_SET_PERMS,
            0,
            format!("{home}\0b{d}\0").as_bytes(),
        );
    }
    assert_eq!(fill_memory(&mut s, 1, "a"), "ENOMEM");
    assert!(!s.accepts_request(DomId(1)) || s.memory_of(DomId(1)) < 300 * 1024);
    // d2 and d3 (below their share) still fill up to their share, past the total: then
    // d1 (above 400/3 KiB) is not read, and dom0 always is.
    assert_eq!(fill_memory(&mut s, 2, "b"), "ENOMEM");
    assert!(s.memory_of(DomId(2)) <= 400 * 1024 / 3);
    assert_eq!(fill_memory(&mut s, 3, "d"), "ENOMEM");
    let total: usize = (1..=3).map(|d| s.memory_of(DomId(d))).sum();
    assert!(total >= 400 * 1024, "{total}");
    assert!(!s.accepts_request(DomId(1)));
    assert!(s.accepts_request(DomId(0)));
    assert!(s.memory_of(DomId(3)) <= 400 * 1024 / 3);
    // Domains above their share grew only within the total, the others stop at their
    // share: the total stays below twice the cap.
    assert!(total < 2 * 400 * 1024, "{total}");
    assert!(s.memory_of(DomId(2)) < 400 * 1024 / 3 + 8192);
}

/// `count` domUs (1..=count) owning their home directories, under `limits`.
fn store_of(limits: Limits, count: u16) -> Xenstored {
    let mut s = Xenstored::new(limits);
    for d in 1..=count {
        s.introduce(DomId(d)).unwrap();
        let home = format!("/local/domain/{d}");
        ok(&mut s, 0, XS_MKDIR, 0, &z(&home));
        ok(
            &mut s,
            0,
            XS_SET_PERMS,
            0,
            format!("{home}\0b{d}\0").as_bytes(),
        );
    }
    s
}

/// A path 990 levels deep below the caller's home (about 1 MiB of node paths).
fn deep_path() -> String {
    let mut p = String::from("x");
    for _ in 0..989 {
        p.push_str("/a");
    }
    p
}

#[test]
fn one_deep_mkdir_per_domain_cannot_pass_twice_the_total() {
    let total = 400 * 1024;
    let mut s = store_of(
        Limits {
            memory_total: total,
            ..Limits::default()
        },
        8,
    );
    for d in 1..=8u16 {
        if s.accepts_request(DomId(d)) {
            call(&mut s, d, XS_MKDIR, 0, &z(&deep_path()));
        }
    }
    let sum: usize = (1..=8).map(|d| s.memory_of(DomId(d))).sum();
    // Twice the total, plus a small request's worth per domain.
    assert!(sum <= 2 * total + 8 * 8192, "{sum}");
}

#[test]
fn a_transaction_read_set_cannot_pass_the_quotas() {
    let total = 400 * 1024;
    let mut s = store_of(
        Limits {
            memory_total: total,
            ..Limits::default()
        },
        8,
    );
    for d in 1..=8u16 {
        if !s.accepts_request(DomId(d)) {
            continue;
        }
        let id = ok(&mut s, d, XS_TRANSACTION_START, 0, b"\0");
        let tx: u32 = core::str::from_utf8(&id[..id.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        // A read of a missing deep node records every missing ancestor it looks at.
        call(&mut s, d, XS_READ, tx, &z(&deep_path()));
        assert!(s.memory_of(DomId(d)) <= s.limits().memory_per_domain);
    }
    let sum: usize = (1..=8).map(|d| s.memory_of(DomId(d))).sum();
    assert!(sum <= 2 * total + 8 * 8192, "{sum}");
}

#[test]
fn queued_watch_events_cannot_pass_twice_the_total() {
    let total = 400 * 1024;
    let mut s = store_of(
        Limits {
            memory_total: total,
            ..Limits::default()
        },
        8,
    );
    ok(&mut s, 0, XS_MKDIR, 0, &z("/tool/x"));
    ok(&mut s, 0, XS_SET_PERMS, 0, b"/tool/x\0r0\0");
    // Cheap watches (a few bytes each), each matching every change readable.
    for d in 1..=8u16 {
        for w in 0..128 {
            ok(&mut s, d, XS_WATCH, 0, &two("/", &format!("{w}")));
        }
    }
    let long = "e".repeat(2000);
    let mut worst = 0;
    for i in 0..9 {
        // dom0 changes readable nodes (as its backends publish counters); the domUs do
        // not read their rings.
        s.write_local(&format!("/tool/x/{long}/{i}"), b"1").unwrap();
        let sum: usize = (1..=8).map(|d| s.memory_of(DomId(d))).sum();
        worst = worst.max(sum);
    }
    assert!(worst <= 2 * total + 8 * 8192, "{worst}");
}

/// Counts the bytes each test thread has allocated and its peak, so a test can bound
/// the transient heap use of one operation (the kernel's heap is fixed).
mod peak {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    std::thread_local! {
        static CUR: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(n: isize) {
        let _ = CUR.try_with(|c| {
            let v = c.get() + n;
            c.set(v);
            let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
        });
    }

    // SAFETY: every call is forwarded to `System` unchanged; the counters are
    // thread-local cells with const initialisers (no allocation, no destructor).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: the caller's contract is `System::alloc`'s.
            let p = unsafe { System.alloc(l) };
            if !p.is_null() {
                add(l.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            add(-(l.size() as isize));
            // SAFETY: `p` came from `alloc` (i.e. `System`) with layout `l`.
            unsafe { System.dealloc(p, l) }
        }
    }

    #[global_allocator]
    static A: Counting = Counting;

    /// Runs `f`; the most bytes it had allocated at once on this thread.
    pub fn of(f: impl FnOnce()) -> usize {
        let base = CUR.with(Cell::get);
        PEAK.with(|p| p.set(base));
        f();
        (PEAK.with(Cell::get) - base).max(0) as usize
    }
}

#[test]
fn firing_many_cheap_watches_does_not_copy_every_event_at_once() {
    let total = 400 * 1024;
    let mut s = store_of(
        Limits {
            memory_total: total,
            ..Limits::default()
        },
        16,
    );
    ok(&mut s, 0, XS_MKDIR, 0, &z("/tool/x"));
    ok(&mut s, 0, XS_SET_PERMS, 0, b"/tool/x\0r0\0");
    // 128 watches of a few bytes per domU, each matching every readable change.
    for d in 1..=16u16 {
        for w in 0..128 {
            ok(&mut s, d, XS_WATCH, 0, &two("/", &format!("{w}")));
        }
    }
    let leaf = format!("/tool/x/{}", "e".repeat(2000));
    // 2048 events of 2 KiB: past the domUs' memory rules, so the watchers are dropped;
    // the heap used meanwhile must be bounded by those rules, not by the watch count.
    let peak = peak::of(|| s.mkdir_local(&leaf).unwrap());
    assert!(peak <= 2 * total + 64 * 1024, "{peak}");
}
