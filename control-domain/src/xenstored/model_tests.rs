//! Model-based property test: random op sequences from dom0, dom1 and dom2 run against the
//! real `Xenstored` (over the wire interface) and against a deliberately simple reference
//! model: a `BTreeMap<path, (value, perms)>` whose children are derived from the keys, and
//! naive snapshot-copy transactions. Every reply, every watch event of non-transactional
//! operations, and the whole tree after each step are compared.
//!
//! Transactions: the model runs a transaction's ops on a private copy of the tree taken
//! at its start. A commit the real store accepts must be serializable: replaying the
//! transaction's ops on the tree at commit time must give the same replies the real
//! store gave inside the transaction (and the trees must then agree). A commit the
//! real store refuses with `EAGAIN` must have had a reason: a node related to one the
//! transaction touched (same path, ancestor or descendant) changed since its start.

use super::tests::drain;
use super::wire::*;
use super::*;
use proptest::prelude::*;
use std::format;
use std::string::ToString;

type P = (u16, u8); // (domid, access bits R=1 W=2)
type Tree = BTreeMap<String, (Vec<u8>, Vec<P>)>;
type Reply = Result<Vec<u8>, String>;

#[derive(Clone, Debug)]
enum Op {
    Read(usize),
    Write(usize, u8),
    Mkdir(usize),
    Rm(usize),
    Dir(usize),
    GetPerms(usize),
    SetPerms(usize, Vec<P>),
    Watch(usize, u8),
    Unwatch(usize, u8),
    TxStart,
    TxEnd(bool),
    /// The issuing domain (1 or 2) dies and is destroyed (`release(.., true)`), then a
    /// fresh domain with the same id is introduced with an empty home.
    Reincarnate,
}

const PATHS: &[&str] = &[
    "/local/domain/1/a",
    "/local/domain/1/a/b",
    "/local/domain/2/a",
    "/local/domain/2/a/b",
    "/pub",
    "/pub/x",
    "/pub/x/y",
    "a",
    "a/b",
    "a/b/c",
    "/local/domain/1",
    "/",
    "bad//path",
];

fn op_strategy() -> impl Strategy<Value = Op> {
    let p = 0..PATHS.len();
    let perm = (0u16..4, 0u8..4);
    prop_oneof![
        3 => p.clone().prop_map(Op::Read),
        4 => (p.clone(), 0u8..3).prop_map(|(p, v)| Op::Write(p, v)),
        2 => p.clone().prop_map(Op::Mkdir),
        2 => p.clone().prop_map(Op::Rm),
        2 => p.clone().prop_map(Op::Dir),
        1 => p.clone().prop_map(Op::GetPerms),
        2 => (p.clone(), proptest::collection::vec(perm, 1..4)).prop_map(|(p, v)| Op::SetPerms(p, v)),
        2 => (p.clone(), 0u8..2).prop_map(|(p, t)| Op::Watch(p, t)),
        1 => (p, 0u8..2).prop_map(|(p, t)| Op::Unwatch(p, t)),
        1 => Just(Op::TxStart),
        1 => any::<bool>().prop_map(Op::TxEnd),
        1 => Just(Op::Reincarnate),
    ]
}

fn perm_str(p: &P) -> String {
    let l = ['n', 'r', 'w', 'b'][p.1 as usize];
    format!("{l}{}", p.0)
}

fn z(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

// ------------------------------------------------------------------ the model

fn canon(dom: u16, p: &str) -> Option<String> {
    let abs = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/local/domain/{dom}/{p}")
    };
    let ok = abs == "/" || (!abs.ends_with('/') && !abs.contains("//"));
    ok.then_some(abs)
}

fn parent(p: &str) -> String {
    match p.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => p[..i].to_string(),
    }
}

fn under(child: &str, anc: &str) -> bool {
    anc == "/"
        || (child.starts_with(anc) && matches!(child.as_bytes().get(anc.len()), None | Some(b'/')))
}

fn related(a: &str, b: &str) -> bool {
    under(a, b) || under(b, a)
}

fn bits(dom: u16, perms: &[P]) -> u8 {
    if dom == 0 || perms[0].0 == dom {
        return 7;
    }
    perms[1..]
        .iter()
        .find(|p| p.0 == dom)
        .map_or(perms[0].1, |p| p.1)
}

fn children(t: &Tree, p: &str) -> Vec<String> {
    t.keys()
        .filter(|k| k.as_str() != "/" && parent(k) == p)
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect()
}

/// `get_node` with `errno_from_parents`.
fn get(t: &Tree, dom: u16, path: &str, want: u8) -> Result<(Vec<u8>, Vec<P>), String> {
    let e = match t.get(path) {
        Some(n) if bits(dom, &n.1) & want == want => return Ok(n.clone()),
        Some(_) => "EACCES",
        None => "ENOENT",
    };
    let mut a = parent(path);
    while !t.contains_key(&a) {
        a = parent(&a);
    }
    if bits(dom, &t[&a].1) & want != 0 {
        Err(e.to_string())
    } else {
        Err("EACCES".to_string())
    }
}

/// A change to report: path, exact, node perms, old perms, parent perms at that moment.
type Fired = (String, bool, Vec<P>, Option<Vec<P>>, Option<Vec<P>>);

fn parent_perms(t: &Tree, p: &str) -> Option<Vec<P>> {
    if p == "/" {
        return None;
    }
    t.get(&parent(p)).map(|n| n.1.clone())
}

#[derive(Default, Clone)]
struct Model {
    t: Tree,
    /// Watches per domain: (absolute path, token, relative).
    watches: BTreeMap<u16, Vec<(String, String, bool)>>,
    /// Paths modified in the committed tree, in order.
    log: Vec<String>,
}

impl Model {
    fn exec(&mut self, dom: u16, op: &Op, fired: &mut Vec<Fired>) -> Reply {
        let path_of = |i: &usize| canon(dom, PATHS[*i]).ok_or_else(|| "EINVAL".to_string());
        match op {
            Op::Read(i) => Ok(get(&self.t, dom, &path_of(i)?, 1)?.0),
            Op::Dir(i) => {
                let p = path_of(i)?;
                get(&self.t, dom, &p, 1)?;
                let mut c = children(&self.t, &p);
                c.sort();
                Ok(c.iter().flat_map(|c| z(c)).collect())
            }
            Op::GetPerms(i) => {
                let n = get(&self.t, dom, &path_of(i)?, 1)?;
                Ok(n.1.iter().flat_map(|p| z(&perm_str(p))).collect())
            }
            Op::Write(i, _) | Op::Mkdir(i) => {
                let (p, val) = match op {
                    Op::Write(_, v) => (path_of(i)?, Some(vec![b'v'; *v as usize])),
                    _ => (path_of(i)?, None),
                };
                match get(&self.t, dom, &p, 2) {
                    Ok(n) => {
                        if let Some(val) = val {
                            self.t.insert(p.clone(), (val, n.1.clone()));
                            self.log.push(p.clone());
                            fired.push((p.clone(), false, n.1, None, parent_perms(&self.t, &p)));
                        }
                        Ok(b"OK\0".to_vec())
                    }
                    Err(e) if e == "ENOENT" => {
                        let mut a = parent(&p);
                        let mut missing = vec![p.clone()];
                        while !self.t.contains_key(&a) {
                            missing.push(a.clone());
                            a = parent(&a);
                        }
                        let mut perms = self.t[&a].1.clone();
                        if dom != 0 {
                            perms[0].0 = dom;
                        }
                        self.log.push(a);
                        for m in missing {
                            self.t.insert(m.clone(), (Vec::new(), perms.clone()));
                            self.log.push(m);
                        }
                        if let Some(val) = val {
                            self.t.get_mut(&p).unwrap().0 = val;
                        }
                        fired.push((p.clone(), false, perms, None, parent_perms(&self.t, &p)));
                        Ok(b"OK\0".to_vec())
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Rm(i) => {
                let p = path_of(i)?;
                match get(&self.t, dom, &p, 2) {
                    Err(e) if e == "ENOENT" => {
                        if p != "/" && self.t.contains_key(&parent(&p)) {
                            Ok(b"OK\0".to_vec())
                        } else {
                            Err(e)
                        }
                    }
                    Err(e) => Err(e),
                    Ok(_) if p == "/" => Err("EINVAL".to_string()),
                    Ok(_) => {
                        let gone: Vec<String> =
                            self.t.keys().filter(|k| under(k, &p)).cloned().collect();
                        for g in &gone {
                            fired.push((
                                g.clone(),
                                *g != p,
                                self.t[g].1.clone(),
                                None,
                                parent_perms(&self.t, g),
                            ));
                        }
                        for g in gone {
                            self.t.remove(&g);
                            self.log.push(g);
                        }
                        self.log.push(parent(&p));
                        Ok(b"OK\0".to_vec())
                    }
                }
            }
            Op::SetPerms(i, perms) => {
                let p = path_of(i)?;
                let n = get(&self.t, dom, &p, 6)?;
                if dom != 0 && perms[0].0 != n.1[0].0 {
                    return Err("EPERM".to_string());
                }
                self.t.get_mut(&p).unwrap().1 = perms.clone();
                self.log.push(p.clone());
                fired.push((
                    p.clone(),
                    false,
                    perms.clone(),
                    Some(n.1),
                    parent_perms(&self.t, &p),
                ));
                Ok(b"OK\0".to_vec())
            }
            Op::Watch(i, tok) => {
                let given = PATHS[*i];
                let p = path_of(i)?;
                let tok = format!("t{tok}");
                let ws = self.watches.entry(dom).or_default();
                if ws.iter().any(|w| w.0 == p && w.1 == tok) {
                    return Err("EEXIST".to_string());
                }
                ws.push((p, tok, !given.starts_with('/')));
                Ok(b"OK\0".to_vec())
            }
            Op::Unwatch(i, tok) => {
                let Some(p) = canon(dom, PATHS[*i]) else {
                    return Err("ENOENT".to_string());
                };
                let tok = format!("t{tok}");
                let ws = self.watches.entry(dom).or_default();
                match ws.iter().position(|w| w.0 == p && w.1 == tok) {
                    Some(k) => {
                        ws.remove(k);
                        Ok(b"OK\0".to_vec())
                    }
                    None => Err("ENOENT".to_string()),
                }
            }
            Op::TxStart | Op::TxEnd(_) | Op::Reincarnate => unreachable!(),
        }
    }

    /// Events each domain should see for `fired`, sorted and deduplicated.
    fn events(&self, fired: &[Fired]) -> BTreeMap<u16, Vec<(String, String)>> {
        let mut out: BTreeMap<u16, Vec<(String, String)>> = BTreeMap::new();
        for (path, exact, perms, old, par) in fired {
            for (&d, ws) in &self.watches {
                let readable = |p: &[P]| bits(d, p) & 1 != 0;
                let ok = old.as_deref().is_some_and(readable)
                    || readable(perms)
                    || par.as_deref().is_some_and(readable);
                if !ok {
                    continue;
                }
                for (wp, tok, rel) in ws {
                    let hit = if *exact { wp == path } else { under(path, wp) };
                    if hit {
                        let shown = if *rel {
                            let pre = format!("/local/domain/{d}");
                            let r = &path[pre.len().min(path.len())..];
                            r.strip_prefix('/').unwrap_or(r).to_string()
                        } else {
                            path.clone()
                        };
                        out.entry(d).or_default().push((shown, tok.clone()));
                    }
                }
            }
        }
        for v in out.values_mut() {
            v.sort();
            v.dedup();
        }
        out
    }
}

// ------------------------------------------------------------------ the real store

fn wire(op: &Op) -> (u32, Vec<u8>) {
    match op {
        Op::Read(i) => (XS_READ, z(PATHS[*i])),
        Op::Write(i, v) => {
            let mut p = z(PATHS[*i]);
            p.extend(vec![b'v'; *v as usize]);
            (XS_WRITE, p)
        }
        Op::Mkdir(i) => (XS_MKDIR, z(PATHS[*i])),
        Op::Rm(i) => (XS_RM, z(PATHS[*i])),
        Op::Dir(i) => (XS_DIRECTORY, z(PATHS[*i])),
        Op::GetPerms(i) => (XS_GET_PERMS, z(PATHS[*i])),
        Op::SetPerms(i, perms) => {
            let mut p = z(PATHS[*i]);
            for x in perms {
                p.extend(z(&perm_str(x)));
            }
            (XS_SET_PERMS, p)
        }
        Op::Watch(i, t) => (XS_WATCH, [z(PATHS[*i]), z(&format!("t{t}"))].concat()),
        Op::Unwatch(i, t) => (XS_UNWATCH, [z(PATHS[*i]), z(&format!("t{t}"))].concat()),
        Op::TxStart => (XS_TRANSACTION_START, z("")),
        Op::TxEnd(c) => (XS_TRANSACTION_END, z(if *c { "T" } else { "F" })),
        Op::Reincarnate => unreachable!(),
    }
}

/// Sends one request; returns the reply and the watch events (sorted) queued for every domain.
fn real(
    s: &mut Xenstored,
    dom: u16,
    tx: u32,
    op: &Op,
) -> (Reply, BTreeMap<u16, Vec<(String, String)>>) {
    let (ty, p) = wire(op);
    s.request(
        DomId(dom),
        XsdSockmsg {
            type_: ty,
            req_id: 77,
            tx_id: tx,
            len: p.len() as u32,
        },
        &p,
    );
    let mut reply = None;
    let mut ev: BTreeMap<u16, Vec<(String, String)>> = BTreeMap::new();
    for d in [0u16, 1, 2] {
        for m in drain(s, d) {
            if m.ty == XS_WATCH_EVENT {
                let parts: Vec<&[u8]> = m.body.split(|&b| b == 0).collect();
                ev.entry(d).or_default().push((
                    String::from_utf8(parts[0].to_vec()).unwrap(),
                    String::from_utf8(parts[1].to_vec()).unwrap(),
                ));
            } else {
                assert_eq!(d, dom);
                assert_eq!((m.req_id, m.tx_id), (77, tx));
                assert!(reply.is_none());
                reply = Some(if m.ty == XS_ERROR {
                    Err(String::from_utf8(m.body[..m.body.len() - 1].to_vec()).unwrap())
                } else {
                    assert_eq!(m.ty, ty);
                    Ok(m.body)
                });
            }
        }
    }
    for v in ev.values_mut() {
        v.sort();
    }
    (reply.expect("a reply"), ev)
}

/// Directory replies come in creation order; the model's are sorted.
fn normalize(op: &Op, r: Reply) -> Reply {
    match (op, r) {
        (Op::Dir(_), Ok(b)) => {
            let mut names: Vec<&[u8]> = b.split(|&c| c == 0).filter(|s| !s.is_empty()).collect();
            names.sort();
            Ok(names
                .iter()
                .flat_map(|n| [n.to_vec(), vec![0]].concat())
                .collect())
        }
        (_, r) => r,
    }
}

fn to_p(p: &Perm) -> P {
    let a = match p.access {
        Access::None => 0,
        Access::Read => 1,
        Access::Write => 2,
        Access::Both => 3,
    };
    (p.domid.0, a)
}

fn same_tree(s: &Xenstored, m: &Tree) -> Result<(), TestCaseError> {
    let real_keys: Vec<&String> = s.nodes.keys().collect();
    let model_keys: Vec<&String> = m.keys().collect();
    prop_assert_eq!(real_keys, model_keys);
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for (k, n) in &s.nodes {
        let (v, p) = &m[k];
        prop_assert_eq!(&n.value, v, "value of {}", k);
        prop_assert_eq!(
            &n.perms.iter().map(to_p).collect::<Vec<_>>(),
            p,
            "perms of {}",
            k
        );
        let mut c = n.children.clone();
        c.sort();
        prop_assert_eq!(c, children(m, k), "children of {}", k);
        *counts.entry(p[0].0).or_default() += 1;
    }
    let real_counts: BTreeMap<u16, usize> = s
        .counts
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(d, c)| (*d, *c))
        .collect();
    prop_assert_eq!(real_counts, counts);
    // Memory charges never drift from what the store holds.
    let mut mem: BTreeMap<u16, usize> = BTreeMap::new();
    for (k, n) in &s.nodes {
        *mem.entry(n.owner()).or_default() += n.cost(k);
    }
    let real_mem: BTreeMap<u16, usize> = s
        .node_mem
        .iter()
        .filter(|(_, m)| **m > 0)
        .map(|(d, m)| (*d, *m))
        .collect();
    prop_assert_eq!(real_mem, mem);
    for t in s.txns.values() {
        let want = t
            .writes
            .iter()
            .map(|(k, w)| write_cost(k, &Some(w.clone())))
            .sum::<usize>()
            + t.accessed
                .keys()
                .map(|k| k.len() + ENTRY_OVERHEAD)
                .sum::<usize>();
        prop_assert_eq!(t.bytes, want);
    }
    for c in s.conns.values() {
        let want: usize = c
            .watches
            .iter()
            .map(|w| watch_cost(&w.path, &w.token))
            .sum();
        prop_assert_eq!(c.watch_bytes, want);
    }
    Ok(())
}

struct ModelTx {
    id: u32,
    view: Model,
    log_start: usize,
    ops: Vec<(Op, Reply)>,
    touched: Vec<String>,
    diverged: bool,
}

fn setup() -> (Xenstored, Model) {
    let mut s = Xenstored::new(Limits::default());
    let mut m = Model::default();
    for p in ["/", "/local", "/local/domain", "/tool", "/vm"] {
        m.t.insert(p.to_string(), (Vec::new(), vec![(0, 0)]));
    }
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
        m.t.insert(home, (Vec::new(), vec![(d, 0)]));
    }
    s.mkdir_local("/pub").unwrap();
    let pubp = [
        Perm {
            domid: DomId(0),
            access: Access::None,
        },
        Perm {
            domid: DomId(1),
            access: Access::Both,
        },
        Perm {
            domid: DomId(2),
            access: Access::Read,
        },
    ];
    s.set_perms_local("/pub", &pubp).unwrap();
    m.t.insert(
        "/pub".to_string(),
        (Vec::new(), vec![(0, 0), (1, 3), (2, 1)]),
    );
    for d in [0u16, 1, 2] {
        drain(&mut s, d);
    }
    (s, m)
}

fn run(steps: Vec<(u16, Op)>) -> Result<(), TestCaseError> {
    let (mut s, mut m) = setup();
    let mut txs: BTreeMap<u16, ModelTx> = BTreeMap::new();
    for (dom, op) in steps {
        match &op {
            Op::TxStart => {
                if txs.contains_key(&dom) {
                    continue;
                }
                let (r, _) = real(&mut s, dom, 0, &op);
                let b = r.map_err(|e| TestCaseError::fail(format!("tx start: {e}")))?;
                let id: u32 = std::str::from_utf8(&b[..b.len() - 1])
                    .unwrap()
                    .parse()
                    .unwrap();
                let view = m.clone();
                txs.insert(
                    dom,
                    ModelTx {
                        id,
                        view,
                        log_start: m.log.len(),
                        ops: Vec::new(),
                        touched: Vec::new(),
                        diverged: false,
                    },
                );
            }
            Op::TxEnd(commit) => {
                let Some(t) = txs.remove(&dom) else { continue };
                let (r, _) = real(&mut s, dom, t.id, &op);
                let since = &m.log[t.log_start..];
                let conflict = t
                    .touched
                    .iter()
                    .any(|a| since.iter().any(|b| related(a, b)));
                match r {
                    Ok(_) if *commit => {
                        // (A reply that differed from the start snapshot is fine: Xen checks
                        // nodes against their state at first access, not at the start.)
                        // Serializable: replaying at commit time gives the same replies.
                        for (op, want) in &t.ops {
                            let got = m.exec(dom, op, &mut Vec::new());
                            prop_assert_eq!(&got, want, "replay of {:?} in committed tx", op);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        prop_assert!(*commit, "abort failed: {}", e);
                        prop_assert_eq!(&e, "EAGAIN");
                        prop_assert!(conflict || t.diverged, "EAGAIN without a conflict");
                    }
                }
            }
            Op::Reincarnate => {
                if dom == 0 {
                    continue;
                }
                s.release(DomId(dom), true);
                s.introduce(DomId(dom)).unwrap();
                let home = format!("/local/domain/{dom}");
                s.mkdir_local(&home).unwrap();
                s.set_perms_local(
                    &home,
                    &[Perm {
                        domid: DomId(dom),
                        access: Access::None,
                    }],
                )
                .unwrap();
                for d in [0u16, 1, 2] {
                    drain(&mut s, d);
                }
                // Model: the home and every node the domain owned go (with subtrees),
                // the domain leaves all other permission lists, its watches and
                // transaction are gone.
                let mut doomed: Vec<String> = vec![home.clone()];
                doomed.extend(
                    m.t.iter()
                        .filter(|(k, n)| n.1[0].0 == dom && k.as_str() != "/")
                        .map(|(k, _)| k.clone()),
                );
                for d in doomed {
                    let gone: Vec<String> = m.t.keys().filter(|k| under(k, &d)).cloned().collect();
                    if !gone.is_empty() {
                        m.log.push(parent(&d));
                    }
                    for g in gone {
                        m.t.remove(&g);
                        m.log.push(g);
                    }
                }
                for (k, n) in m.t.iter_mut() {
                    let before = n.1.len();
                    let first = n.1[0];
                    let mut rest: Vec<P> =
                        n.1[1..].iter().copied().filter(|p| p.0 != dom).collect();
                    rest.insert(0, first);
                    n.1 = rest;
                    if n.1.len() != before {
                        m.log.push(k.clone());
                    }
                }
                m.watches.remove(&dom);
                txs.remove(&dom);
                m.t.insert(home.clone(), (Vec::new(), vec![(dom, 0)]));
                m.log.push(home);
            }
            Op::Watch(..) | Op::Unwatch(..) => {
                let (r, ev) = real(&mut s, dom, 0, &op);
                let want = m.exec(dom, &op, &mut Vec::new());
                prop_assert_eq!(&r, &want, "{:?} from dom{}", op, dom);
                // The initial event: the watch as given.
                if let (Op::Watch(i, t), Ok(_)) = (&op, &r) {
                    let mut exp = BTreeMap::new();
                    exp.insert(dom, vec![(PATHS[*i].to_string(), format!("t{t}"))]);
                    prop_assert_eq!(ev, exp);
                } else {
                    prop_assert!(ev.is_empty());
                }
            }
            _ => {
                if let Some(t) = txs.get_mut(&dom) {
                    let (r, _) = real(&mut s, dom, t.id, &op);
                    let r = normalize(&op, r);
                    let want = t.view.exec(dom, &op, &mut Vec::new());
                    if r != want {
                        // Only a committed change to a related node since the start explains it.
                        let p = op_path(dom, &op);
                        let since = &m.log[t.log_start..];
                        prop_assert!(
                            p.as_ref()
                                .is_some_and(|p| since.iter().any(|b| related(p, b))),
                            "tx reply {:?} != model {:?} for {:?}",
                            r,
                            want,
                            op
                        );
                        t.diverged = true;
                    }
                    if let Some(p) = op_path(dom, &op) {
                        t.touched.push(p);
                    }
                    t.ops.push((op.clone(), r));
                } else {
                    let (r, ev) = real(&mut s, dom, 0, &op);
                    let r = normalize(&op, r);
                    let mut fired = Vec::new();
                    let want = m.exec(dom, &op, &mut fired);
                    prop_assert_eq!(&r, &want, "{:?} from dom{}", op, dom);
                    prop_assert_eq!(ev, m.events(&fired), "events of {:?} from dom{}", op, dom);
                }
            }
        }
        same_tree(&s, &m.t)?;
    }
    Ok(())
}

fn op_path(dom: u16, op: &Op) -> Option<String> {
    match op {
        Op::Read(i)
        | Op::Write(i, _)
        | Op::Mkdir(i)
        | Op::Rm(i)
        | Op::Dir(i)
        | Op::GetPerms(i)
        | Op::SetPerms(i, _) => canon(dom, PATHS[*i]),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(steps in proptest::collection::vec((0u16..3, op_strategy()), 1..60)) {
        run(steps)?;
    }
}

#[test]
fn model_sanity_write_then_read() {
    run(vec![
        (1, Op::Write(7, 2)),
        (1, Op::Read(7)),
        (2, Op::Read(0)),
        (1, Op::TxStart),
        (1, Op::Write(8, 1)),
        (2, Op::Write(0, 1)),
        (1, Op::TxEnd(true)),
    ])
    .unwrap();
}
