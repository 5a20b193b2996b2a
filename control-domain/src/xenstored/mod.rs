//! xenstored: the xenstore protocol served to every domain.
//!
//! A re-implementation of the semantics of Xen 4.17's C xenstored
//! (`tools/xenstore/xenstored_{core,domain,transaction,watch}.c`, `docs/misc/xenstore.txt`)
//! for a control domain that has no sockets: every client is a domain connection, dom0's
//! own administration goes through the `*_local` methods.
//!
//! Matched behaviours:
//! * Paths: relative paths resolve under `/local/domain/<id>`; names must match
//!   `is_valid_nodename` (leading `/`, no trailing or double `/`, characters
//!   `[A-Za-z0-9-/_@]`, at most 2048 bytes after a `/local/domain/<id>/` prefix) else `EINVAL`.
//! * Permissions: first entry = owner + default access; owner and privileged (dom0) get
//!   everything; a later entry naming the caller (or the caller's `SET_TARGET` target)
//!   replaces the default. Nodes created by a domU inherit the parent's list with the
//!   creator as owner; dom0 keeps the parent's owner. A missing node is `ENOENT` only if
//!   the nearest existing ancestor grants the requested access, else `EACCES`
//!   (`errno_from_parents`). Unprivileged callers may not change a node's owner (`EPERM`).
//! * Watches fire for the changed path and watches on its ancestors; `rm` also fires the
//!   exact watches of every removed descendant; `set_perms` notifies watchers that could
//!   read with the old permissions. A watcher must be able to read the node or its parent.
//!   Each watch fires once when set. Relative watches report relative paths. Identical
//!   pending events are merged. `@introduceDomain`/`@releaseDomain` go to privileged
//!   watchers and to domains given read access via `SET_PERMS` on the special name.
//! * Transactions see their own writes; a commit fails with `EAGAIN` when any node the
//!   transaction read or wrote changed meanwhile (generation counts); their watch events
//!   fire at commit.
//! * Quotas and their errors: 1000 nodes per domain (`ENOSPC`), 128 watches (`E2BIG`,
//!   Xen's `>` check admits one more), 10 transactions (`ENOSPC`, same off-by-one), node
//!   record size 2048 (`ENOSPC`), 5 permissions per node (`ENOSPC`), 1024 nodes touched per
//!   transaction (`ENOSPC`), 20 unconsumed replies (the ring stops reading requests).
//! * Wire: unknown types `ENOSYS`, privileged-only types `EACCES` for domUs, unknown
//!   transaction ids `ENOENT`, replies above 4096 bytes `E2BIG`; errors outside Xen's
//!   `xsd_errors` table go out as `EINVAL`.
//!
//! * Domains: `XS_INTRODUCE`/`XS_RELEASE`/`XS_RESUME`/`XS_IS_DOMAIN_INTRODUCED`/
//!   `XS_SET_TARGET` argument checks and errors as `xenstored_domain.c`; `release` with
//!   node removal deletes the domain's nodes and strips it from other nodes' permissions;
//!   `notify_shutdown` fires `@releaseDomain` once per shutdown until `XS_RESUME`.
//!
//! Use by the kernel: one [`ring::RingConn`] per introduced domain, created afresh on each
//! introduction; call [`ring::RingConn::service`] on every event from the domain and for
//! every domain in [`Xenstored::domains_with_output`]; send an event when it says
//! `notify`; stop servicing a ring after a [`ring::Violation`] (the store has dropped
//! that connection) until the domain is released and introduced again.
//!
//! Deliberate deviations:
//! * Introducing an introduced domain changes nothing (Xen also resets the connection
//!   and zeroes the ring indices; the kernel owns the ring here and decides).
//! * A failed transaction commit never leaves partial changes; a transaction in which an
//!   operation failed half-way fails its commit with `ENOMEM` (Xen: `fail_transaction`).
//! * A connection whose queued output (mostly watch events it does not consume) exceeds
//!   `Limits::output_messages_per_domain` or `output_bytes_per_domain` is dropped; Xen
//!   drops such events at its memory quota and drops the connection when events are 20 s
//!   stale. We have no clock in this module, so the cap replaces the timeout.
//! * Permission entries naming a non-existent domain are kept (Xen marks them ignored);
//!   domain ids in permission strings must be decimal and < 65536 (Xen uses `strtol`).
//! * `XS_CONTROL` is `ENOSYS` for dom0; no live update, no `XS_GET/SET_QUOTA`/features.
//! * The watch-rate limiter of Xen is not modelled.
//!
//! # Memory
//!
//! Every byte a domU makes the store keep is charged to it ([`Xenstored::memory_of`]):
//! the nodes it owns (path, record, bookkeeping), its watches, its open transactions'
//! copies and read sets, and its queued output. As Xen 4.17's `domain_can_read`, a domU
//! at `Limits::memory_per_domain` (Xen's hard quota, 2.5 MiB) has no further request
//! read until its charge drops, and an operation that would take it over answers
//! `ENOMEM` before changing anything. Beyond Xen, because this xenstored lives in a
//! fixed heap: while all domUs together hold `Limits::memory_total`, only domUs below
//! their fair share (`memory_total / domUs`) are read, so one hostile domain (or a few)
//! can neither exhaust the heap nor starve the others; within a request, an operation
//! (or transaction read) that would take a domU past its share of a full store is
//! `ENOMEM`, and a watch event that would do so drops the watcher as flooding. Domains above their share got
//! there below the total and the others stop at their share, so all domUs together
//! never hold more than twice `memory_total` (plus one request each). The charges are conservative
//! estimates of the heap each structure takes; every allocation whose size a guest
//! chooses is fallible, so what remains infallible is bounded by one request.

pub mod ring;
pub mod wire;

#[cfg(test)]
mod model_tests;
mod populate;
#[cfg(test)]
mod tests;

pub use populate::{DomainInfo, populate_domain};

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;
use wire::*;
use xen_pv_abi::DomId;
use xen_pv_abi::Errno;
use xen_pv_abi::xenstore::{XENSTORE_PAYLOAD_MAX, XsdSockmsg};

/// Quotas (Xen 4.17 C xenstored defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Nodes a domU may own (`quota-nb-entry-per-domain`, 1000) → `ENOSPC`.
    pub nodes_per_domain: usize,
    /// Watches per domU (`quota-nb-watch-per-domain`, 128) → `E2BIG`.
    pub watches_per_domain: usize,
    /// Open transactions per domU (`quota-max-transaction`, 10) → `ENOSPC`.
    pub transactions_per_domain: usize,
    /// Largest node record of a domU (`quota-max-entry-size`, 2048; counts the record
    /// header, permissions, value and child names as Xen does) → `ENOSPC`.
    pub value_max: usize,
    /// Longest path below `/local/domain/<id>/` (`XENSTORE_REL_PATH_MAX`, 2048) → `EINVAL`.
    pub path_max: usize,
    /// Replies a domU may leave unconsumed before its requests are no longer read
    /// (`quota-outstanding`, 20).
    pub outstanding_per_domain: usize,
    /// Permission entries per node for domUs (`quota-nb-perms-per-node`, 5) → `ENOSPC`.
    pub perms_per_node: usize,
    /// Nodes a domU transaction may touch (`quota-trans-nodes`, 1024) → `ENOSPC`.
    pub transaction_nodes: usize,
    /// Queued outgoing messages of one domU beyond which it counts as flooding and is dropped.
    pub output_messages_per_domain: usize,
    /// Queued outgoing bytes of one domU beyond which it is dropped (Xen's hard memory
    /// quota, 2.5 MiB).
    pub output_bytes_per_domain: usize,
    /// Bytes one domU may make the store keep (`quota-memory-per-domain-hard`, 2.5 MiB):
    /// at it, its requests are not read; an operation that would pass it is `ENOMEM`.
    pub memory_per_domain: usize,
    /// Bytes all domUs together may make the store keep; past it only domUs below their
    /// fair share are read, which bounds the domUs' total by twice this. Set from the
    /// heap the store lives in.
    pub memory_total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nodes_per_domain: 1000,
            watches_per_domain: 128,
            transactions_per_domain: 10,
            value_max: 2048,
            path_max: XENSTORE_REL_PATH_MAX,
            outstanding_per_domain: 20,
            perms_per_node: 5,
            transaction_nodes: 1024,
            output_messages_per_domain: 1024,
            output_bytes_per_domain: 2 * 1024 * 1024 + 512 * 1024,
            memory_per_domain: 2 * 1024 * 1024 + 512 * 1024,
            memory_total: 8 * 1024 * 1024,
        }
    }
}

/// Access granted by one permission entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `n`.
    None,
    /// `r`.
    Read,
    /// `w`.
    Write,
    /// `b`.
    Both,
}

/// One permission entry as in the wire format ("r1", "b0", "n5", "w2"): the first entry
/// names the owner and the default access for everyone else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// The domain.
    pub domid: DomId,
    /// Its access.
    pub access: Access,
}

const PERM_READ: u8 = 1;
const PERM_WRITE: u8 = 2;
const PERM_OWNER: u8 = 4;
const PERM_ALL: u8 = PERM_READ | PERM_WRITE | PERM_OWNER;

impl Access {
    fn bits(self) -> u8 {
        match self {
            Access::None => 0,
            Access::Read => PERM_READ,
            Access::Write => PERM_WRITE,
            Access::Both => PERM_READ | PERM_WRITE,
        }
    }
    fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

impl Perm {
    /// Parses one wire permission string (`"r5"`); `None` when malformed.
    pub fn parse(s: &[u8]) -> Option<Perm> {
        let (&l, digits) = s.split_first()?;
        let access = match l {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return None,
        };
        if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = digits
            .iter()
            .fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'));
        Some(Perm {
            domid: DomId(u16::try_from(v).ok()?),
            access,
        })
    }

    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{}{}", self.access.letter(), self.domid.0);
    }
}

/// One node of the tree.
#[derive(Clone, Debug)]
struct Node {
    value: Vec<u8>,
    perms: Vec<Perm>,
    /// Child names in creation order (Xen's `children` buffer order).
    children: Vec<String>,
    generation: u64,
}

impl Node {
    fn owner(&self) -> u16 {
        self.perms.first().map_or(0, |p| p.domid.0)
    }
    fn childlen(&self) -> usize {
        self.children.iter().map(|c| c.len() + 1).sum()
    }
    /// Size of Xen's TDB record for this node (`write_node_raw`'s quota check).
    fn record_size(&self) -> usize {
        24 + 8 * self.perms.len() + self.value.len() + self.childlen()
    }
    /// Bytes charged to the owner for this node at `path`: the record plus the map
    /// entry, the path and the per-child string headers.
    fn cost(&self, path: &str) -> usize {
        node_cost(path.len(), self.record_size(), self.children.len())
    }
}

/// Heap bookkeeping charged per node beyond its path and record (map entry, vectors).
const NODE_OVERHEAD: usize = 128;
/// Heap bookkeeping charged per child name (its `String` header).
const CHILD_OVERHEAD: usize = 24;
/// Heap bookkeeping charged per watch and per transaction read-set entry.
const ENTRY_OVERHEAD: usize = 64;

fn node_cost(path_len: usize, record: usize, children: usize) -> usize {
    path_len + record + NODE_OVERHEAD + children * CHILD_OVERHEAD
}

struct Watch {
    /// Absolute path or `@special` name.
    path: String,
    token: Vec<u8>,
    relative: bool,
}

struct OutMsg {
    bytes: Vec<u8>,
    is_reply: bool,
    is_event: bool,
}

struct Conn {
    watches: Vec<Watch>,
    /// Bytes charged for `watches`.
    watch_bytes: usize,
    out: VecDeque<OutMsg>,
    out_bytes: usize,
    outstanding: usize,
    next_txid: u32,
    target: Option<DomId>,
    /// Dropped for a protocol violation or flooding: requests ignored, no output.
    ignored: bool,
    /// `@releaseDomain` already fired for this domain's shutdown (cleared by `XS_RESUME`).
    shutdown_reported: bool,
}

impl Conn {
    fn new() -> Self {
        Conn {
            watches: Vec::new(),
            watch_bytes: 0,
            out: VecDeque::new(),
            out_bytes: 0,
            outstanding: 0,
            next_txid: 1,
            target: None,
            ignored: false,
            shutdown_reported: false,
        }
    }
}

/// A queued watch event of a transaction: path, exact match only, and the node's
/// permissions when it was changed (removed nodes can no longer be read at commit).
struct TxEvent {
    path: String,
    exact: bool,
    perms: Option<Vec<Perm>>,
    old_perms: Option<Vec<Perm>>,
}

struct Txn {
    /// Nodes written (`Some`) or removed (`None`) in the transaction.
    writes: BTreeMap<String, Option<Node>>,
    /// Generation of each node the transaction looked at (`None`: absent), at first access.
    accessed: BTreeMap<String, Option<u64>>,
    events: Vec<TxEvent>,
    /// Change of each domain's node count.
    delta: BTreeMap<u16, i64>,
    created: bool,
    /// Nodes written or removed so far (to spot an operation that failed half-way).
    mutations: u64,
    /// An operation failed after changing nodes: the commit must fail (`ENOMEM`, as
    /// Xen's `fail_transaction`).
    failed: bool,
    /// Bytes charged to the owner for `writes` and `accessed`.
    bytes: usize,
}

/// Who issues an operation.
#[derive(Clone, Copy)]
struct Caller {
    dom: DomId,
    target: Option<DomId>,
}

impl Caller {
    fn privileged(&self) -> bool {
        self.dom.0 == 0
    }
    fn local() -> Self {
        Caller {
            dom: DomId(0),
            target: None,
        }
    }
}

/// The xenstore daemon state: tree, connections, watches, transactions, output queues.
pub struct Xenstored {
    limits: Limits,
    nodes: BTreeMap<String, Node>,
    generation: u64,
    counts: BTreeMap<u16, usize>,
    /// Bytes of committed nodes charged to each owner.
    node_mem: BTreeMap<u16, usize>,
    conns: BTreeMap<u16, Conn>,
    txns: BTreeMap<(u16, u32), Txn>,
    introduce_perms: Vec<Perm>,
    release_perms: Vec<Perm>,
    /// A watch's initial event, queued right after the `XS_WATCH` reply.
    pending_initial: Option<(u16, String, Vec<u8>)>,
}

type Res<T> = Result<T, Errno>;

fn perms_dom0() -> Vec<Perm> {
    alloc::vec![Perm {
        domid: DomId(0),
        access: Access::None
    }]
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn basename(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

fn child_path(parent: &str, name: &str) -> String {
    let mut s = String::with_capacity(parent.len() + name.len() + 1);
    if parent != "/" {
        s.push_str(parent);
    }
    s.push('/');
    s.push_str(name);
    s
}

/// Is `child` `parent` or below it (`is_child`).
fn is_child(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return true;
    }
    child.starts_with(parent) && matches!(child.as_bytes().get(parent.len()), None | Some(b'/'))
}

fn domain_path(dom: u32) -> String {
    let mut s = String::new();
    let _ = write!(s, "/local/domain/{dom}");
    s
}

fn perm_for(caller: &Caller, perms: &[Perm]) -> u8 {
    let Some(first) = perms.first() else {
        return 0;
    };
    let matches = |d: DomId| d == caller.dom || caller.target == Some(d);
    if caller.privileged() || matches(first.domid) {
        return PERM_ALL;
    }
    perms[1..]
        .iter()
        .find(|p| matches(p.domid))
        .map_or(first.access.bits(), |p| p.access.bits())
}

impl Xenstored {
    /// A store holding `/`, `/local`, `/local/domain`, `/tool` and `/vm`, owned by dom0
    /// (no access for others), with dom0's connection.
    pub fn new(limits: Limits) -> Self {
        let mut s = Xenstored {
            limits,
            nodes: BTreeMap::new(),
            generation: 0,
            counts: BTreeMap::new(),
            node_mem: BTreeMap::new(),
            conns: BTreeMap::new(),
            txns: BTreeMap::new(),
            introduce_perms: perms_dom0(),
            release_perms: perms_dom0(),
            pending_initial: None,
        };
        s.insert_node(
            String::from("/"),
            Node {
                value: Vec::new(),
                perms: perms_dom0(),
                children: Vec::new(),
                generation: 0,
            },
        );
        *s.counts.entry(0).or_insert(0) += 1;
        for p in ["/local", "/local/domain", "/tool", "/vm"] {
            let _ = s.mkdir_local(p);
        }
        s.conns.insert(0, Conn::new());
        s
    }

    /// The quotas in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Creates `domid`'s connection (dom0 is always connected, locally). Fires
    /// `@introduceDomain`. Introducing an introduced domain changes nothing and returns Ok.
    pub fn introduce(&mut self, domid: DomId) -> Result<(), Errno> {
        if u32::from(domid.0) >= DOMID_FIRST_RESERVED {
            return Err(Errno::EINVAL);
        }
        if self.conns.contains_key(&domid.0) {
            return Ok(());
        }
        self.conns.insert(domid.0, Conn::new());
        self.fire(&mut None, "@introduceDomain", false, None, None);
        Ok(())
    }

    /// Drops the connection, its watches, transactions and queued output; fires
    /// `@releaseDomain`. With `remove_nodes` (domain destroyed) removes
    /// `/local/domain/<id>` and every node the domain owns, and strips the domain from
    /// other nodes' permissions, as xenstored does on death. dom0 cannot be released.
    pub fn release(&mut self, domid: DomId, remove_nodes: bool) {
        if domid.0 == 0 || self.conns.remove(&domid.0).is_none() {
            return;
        }
        self.txns.retain(|k, _| k.0 != domid.0);
        for c in self.conns.values_mut() {
            if c.target == Some(domid) {
                c.target = None;
            }
        }
        if remove_nodes {
            let _ = self.rm_local(&domain_path(u32::from(domid.0)));
            // Nodes owned by the dead domain, shallowest first (removal takes subtrees).
            let owned: Vec<String> = self
                .nodes
                .iter()
                .filter(|(p, n)| n.owner() == domid.0 && p.as_str() != "/")
                .map(|(p, _)| p.clone())
                .collect();
            for p in owned {
                if self.nodes.contains_key(&p) {
                    let _ = self.rm_local(&p);
                }
            }
            for (p, n) in self.nodes.iter_mut() {
                let before = n.perms.len();
                let cost_before = n.cost(p);
                let mut i = 1;
                while i < n.perms.len() {
                    if n.perms[i].domid == domid {
                        n.perms.remove(i);
                    } else {
                        i += 1;
                    }
                }
                if n.perms.len() != before {
                    self.generation += 1;
                    n.generation = self.generation;
                    let m = self.node_mem.entry(n.owner()).or_insert(0);
                    *m = m.saturating_sub(cost_before - n.cost(p));
                }
            }
            self.introduce_perms.retain(|p| p.domid != domid);
            self.release_perms.retain(|p| p.domid != domid);
            if self.introduce_perms.is_empty() {
                self.introduce_perms = perms_dom0();
            }
            if self.release_perms.is_empty() {
                self.release_perms = perms_dom0();
            }
        }
        self.fire(&mut None, "@releaseDomain", false, None, None);
    }

    /// The domain shut down (crashed, powered off, suspended) but still exists: fires
    /// `@releaseDomain` once, as Xen 4.17's `check_domains` does, until `XS_RESUME`
    /// re-arms it. The connection stays.
    pub fn notify_shutdown(&mut self, domid: DomId) {
        match self.conns.get_mut(&domid.0) {
            Some(c) if domid.0 != 0 && !c.shutdown_reported => c.shutdown_reported = true,
            _ => return,
        }
        self.fire(&mut None, "@releaseDomain", false, None, None);
    }

    /// Is `domid` connected (dom0 always is).
    pub fn is_introduced(&self, domid: DomId) -> bool {
        self.conns.contains_key(&domid.0)
    }

    /// Was `domid`'s connection dropped (protocol violation or flooding)?
    pub fn is_dropped(&self, domid: DomId) -> bool {
        self.conns.get(&domid.0).is_some_and(|c| c.ignored)
    }

    /// Drops `domid`'s connection as Xen's `ignore_connection` does: its watches,
    /// transactions and output go, later requests are ignored until it is released and
    /// introduced again. dom0's local connection is never dropped.
    pub fn drop_connection(&mut self, domid: DomId) {
        if domid.0 == 0 {
            return;
        }
        if let Some(c) = self.conns.get_mut(&domid.0) {
            c.ignored = true;
            c.watches.clear();
            c.watch_bytes = 0;
            c.out.clear();
            c.out_bytes = 0;
            c.outstanding = 0;
        }
        self.txns.retain(|k, _| k.0 != domid.0);
    }

    /// May another request of `domid` be read now? False while it leaves
    /// `outstanding_per_domain` replies unconsumed or holds `memory_per_domain` bytes
    /// (Xen's `domain_can_read`), while all domUs hold `memory_total` and it holds at
    /// least its fair share of that, or when the connection is unknown or dropped.
    pub fn accepts_request(&self, domid: DomId) -> bool {
        let Some(c) = self.conns.get(&domid.0) else {
            return false;
        };
        if c.ignored {
            return false;
        }
        if domid.0 == 0 {
            return true;
        }
        if c.outstanding >= self.limits.outstanding_per_domain {
            return false;
        }
        let mine = self.memory_of(domid);
        if mine >= self.limits.memory_per_domain {
            return false;
        }
        // Below its fair share a domU is always read; only above it is the total (a
        // walk over the connections) needed, which keeps the common request cheap.
        let domus = self.conns.len() - usize::from(self.conns.contains_key(&0));
        if mine < self.limits.memory_total / domus.max(1) {
            return true;
        }
        let total = self
            .conns
            .keys()
            .filter(|&&d| d != 0)
            .fold(0usize, |t, &d| t.saturating_add(self.memory_of(DomId(d))));
        total < self.limits.memory_total
    }

    /// Bytes `domid` makes the store keep: nodes it owns, its watches, its open
    /// transactions and its queued output (see the module doc's "Memory").
    pub fn memory_of(&self, domid: DomId) -> usize {
        self.memory_with(domid.0, &None)
    }

    /// [`memory_of`](Self::memory_of) counting also `tx`, the transaction of the request
    /// being served (out of `txns` while it runs).
    fn memory_with(&self, dom: u16, tx: &Option<Txn>) -> usize {
        let nodes = self.node_mem.get(&dom).copied().unwrap_or(0);
        let conn = self
            .conns
            .get(&dom)
            .map_or(0, |c| c.watch_bytes.saturating_add(c.out_bytes));
        let txns = self
            .txns
            .range((dom, 0)..=(dom, u32::MAX))
            .fold(0usize, |a, (_, t)| a.saturating_add(t.bytes));
        let current = tx.as_ref().map_or(0, |t| t.bytes);
        nodes
            .saturating_add(conn)
            .saturating_add(txns)
            .saturating_add(current)
    }

    /// `ENOMEM` if a domU caller adding `more` bytes would pass its memory quota, or
    /// its fair share while that would take all domUs past `memory_total` (the rule
    /// `accepts_request` applies between requests, applied within one too: a single
    /// request can add up to a quota's worth, which would void the bound on the total).
    fn check_memory(&self, caller: Caller, tx: &Option<Txn>, more: usize) -> Res<()> {
        if caller.privileged() {
            return Ok(());
        }
        let dom = caller.dom.0;
        let after = self.memory_with(dom, tx).saturating_add(more);
        if after > self.limits.memory_per_domain {
            return Err(Errno::ENOMEM);
        }
        let domus = self.conns.len() - usize::from(self.conns.contains_key(&0));
        if after > self.limits.memory_total / domus.max(1) {
            let total = self
                .conns
                .keys()
                .filter(|&&d| d != 0 && d != dom)
                .fold(after, |t, &d| t.saturating_add(self.memory_of(DomId(d))));
            if total > self.limits.memory_total {
                return Err(Errno::ENOMEM);
            }
        }
        Ok(())
    }

    /// Inserts a committed node, moving the memory charges of the node it replaces.
    fn insert_node(&mut self, path: String, node: Node) {
        let cost = node.cost(&path);
        let owner = node.owner();
        let len = path.len();
        if let Some(old) = self.nodes.insert(path, node) {
            self.uncharge_node(len, &old);
        }
        let m = self.node_mem.entry(owner).or_insert(0);
        *m = m.saturating_add(cost);
    }

    /// Removes a committed node and its memory charge.
    fn remove_node(&mut self, path: &str) {
        if let Some(old) = self.nodes.remove(path) {
            self.uncharge_node(path.len(), &old);
        }
    }

    fn uncharge_node(&mut self, path_len: usize, n: &Node) {
        if let Some(m) = self.node_mem.get_mut(&n.owner()) {
            *m = m.saturating_sub(node_cost(path_len, n.record_size(), n.children.len()));
            if *m == 0 {
                self.node_mem.remove(&n.owner());
            }
        }
    }

    /// Handles one complete request (header already decoded, payload of `header.len`
    /// bytes) from `from`'s connection. Replies and any watch events it triggers are
    /// queued. A request from a domain that is not introduced (or was dropped) is ignored;
    /// a payload that does not match `header.len` or exceeds 4096 bytes drops the connection.
    pub fn request(&mut self, from: DomId, header: XsdSockmsg, payload: &[u8]) {
        let Some(conn) = self.conns.get(&from.0) else {
            return;
        };
        if conn.ignored {
            return;
        }
        if header.len as usize != payload.len() || payload.len() > XENSTORE_PAYLOAD_MAX {
            self.drop_connection(from);
            return;
        }
        let caller = Caller {
            dom: from,
            target: conn.target,
        };
        let result = self.dispatch(caller, &header, payload);
        let (ty, body) = match result {
            Ok(r) => r,
            Err(e) => (XS_ERROR, err_body(e)),
        };
        self.reply(from, &header, ty, &body);
        if let Some((dom, path, token)) = self.pending_initial.take() {
            self.send_event(dom, &path, &token);
        }
    }

    /// Next queued outgoing message (reply or watch event) for `to`, as wire bytes
    /// (16-byte header + payload); `None` when nothing is queued.
    pub fn peek_output(&self, to: DomId) -> Option<&[u8]> {
        self.conns
            .get(&to.0)
            .and_then(|c| c.out.front())
            .map(|m| m.bytes.as_slice())
    }

    /// Removes the message `peek_output` returned.
    pub fn pop_output(&mut self, to: DomId) {
        if let Some(c) = self.conns.get_mut(&to.0)
            && let Some(m) = c.out.pop_front()
        {
            c.out_bytes = c.out_bytes.saturating_sub(m.bytes.len());
            if m.is_reply {
                c.outstanding = c.outstanding.saturating_sub(1);
            }
        }
    }

    /// Domains with queued output (so the kernel knows which rings to write).
    pub fn domains_with_output(&self) -> impl Iterator<Item = DomId> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| !c.out.is_empty())
            .map(|(&d, _)| DomId(d))
    }

    /// Writes `value` at `path` as dom0 (creating missing parents); watches fire.
    pub fn write_local(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        self.op_write(Caller::local(), &mut None, path, value)
    }

    /// Creates `path` (and missing parents) as dom0 if it does not exist.
    pub fn mkdir_local(&mut self, path: &str) -> Result<(), Errno> {
        self.op_mkdir(Caller::local(), &mut None, path)
    }

    /// The value at absolute `path`, if the node exists.
    pub fn read_local(&self, path: &str) -> Option<&[u8]> {
        self.nodes.get(path).map(|n| n.value.as_slice())
    }

    /// Child names of absolute `path`, in creation order.
    pub fn directory_local(&self, path: &str) -> Option<impl Iterator<Item = &str> + '_> {
        self.nodes
            .get(path)
            .map(|n| n.children.iter().map(String::as_str))
    }

    /// Permissions of absolute `path`.
    pub fn perms_local(&self, path: &str) -> Option<&[Perm]> {
        self.nodes.get(path).map(|n| n.perms.as_slice())
    }

    /// Removes `path` and its subtree as dom0 (Ok if absent but the parent exists).
    pub fn rm_local(&mut self, path: &str) -> Result<(), Errno> {
        self.op_rm(Caller::local(), &mut None, path)
    }

    /// Sets the permissions of `path` (or of `@introduceDomain`/`@releaseDomain`) as dom0.
    pub fn set_perms_local(&mut self, path: &str, perms: &[Perm]) -> Result<(), Errno> {
        let mut v = Vec::new();
        v.try_reserve(perms.len()).map_err(|_| Errno::ENOMEM)?;
        v.extend_from_slice(perms);
        self.op_set_perms(Caller::local(), &mut None, path, v)
    }

    // ---------------------------------------------------------------- dispatch

    fn dispatch(&mut self, caller: Caller, h: &XsdSockmsg, p: &[u8]) -> Res<(u32, Vec<u8>)> {
        let ty = h.type_;
        let privileged_only = matches!(
            ty,
            XS_CONTROL
                | XS_INTRODUCE
                | XS_RELEASE
                | XS_IS_DOMAIN_INTRODUCED
                | XS_RESUME
                | XS_SET_TARGET
        );
        let known = matches!(ty, 0..=14 | 17..=19 | 21 | 22);
        if !known {
            return Err(Errno::ENOSYS);
        }
        if privileged_only && !caller.privileged() {
            return Err(Errno::EACCES);
        }
        let notid = matches!(ty, XS_WATCH | XS_UNWATCH);
        let key = (caller.dom.0, h.tx_id);
        let mut tx: Option<Txn> = None;
        if !notid && h.tx_id != 0 {
            tx = Some(self.txns.remove(&key).ok_or(Errno::ENOENT)?);
        }
        let before = tx.as_ref().map(|t| t.mutations);
        let r = self.dispatch_in(caller, ty, h.tx_id, &mut tx, p);
        if let Some(t) = tx.as_mut()
            && r.is_err()
            && Some(t.mutations) != before
        {
            t.failed = true;
        }
        if let Some(t) = tx {
            // Still open (anything but a transaction end, or a connection reset).
            if self.conns.contains_key(&caller.dom.0) {
                self.txns.insert(key, t);
            }
        }
        r
    }

    fn dispatch_in(
        &mut self,
        caller: Caller,
        ty: u32,
        txid: u32,
        tx: &mut Option<Txn>,
        p: &[u8],
    ) -> Res<(u32, Vec<u8>)> {
        let ok = || Ok((ty, b"OK\0".to_vec()));
        match ty {
            XS_READ => {
                let path = self.arg_path(caller, p)?;
                let n = self.get_node(caller, tx, &path, PERM_READ)?;
                Ok((ty, n.value))
            }
            XS_DIRECTORY => {
                let path = self.arg_path(caller, p)?;
                let n = self.get_node(caller, tx, &path, PERM_READ)?;
                Ok((ty, children_bytes(&n)?))
            }
            XS_DIRECTORY_PART => self.op_directory_part(caller, tx, p),
            XS_GET_PERMS => {
                let path = self.arg_path(caller, p)?;
                let n = self.get_node(caller, tx, &path, PERM_READ)?;
                let mut s = String::new();
                for perm in &n.perms {
                    perm.write_to(&mut s);
                    s.push('\0');
                }
                Ok((ty, s.into_bytes()))
            }
            XS_WRITE => {
                let v = strings(p, 1).ok_or(Errno::EINVAL)?;
                let name = core::str::from_utf8(v[0]).map_err(|_| Errno::EINVAL)?;
                let value = &p[v[0].len() + 1..];
                let path = self.canonical(caller, name)?;
                self.op_write(caller, tx, &path, value)?;
                ok()
            }
            XS_MKDIR => {
                let path = self.arg_path(caller, p)?;
                self.op_mkdir(caller, tx, &path)?;
                ok()
            }
            XS_RM => {
                let path = self.arg_path(caller, p)?;
                self.op_rm(caller, tx, &path)?;
                ok()
            }
            XS_SET_PERMS => {
                let n = count_strings(p);
                if n < 2 {
                    return Err(Errno::EINVAL);
                }
                let nperms = n - 1;
                if !caller.privileged() && nperms > self.limits.perms_per_node {
                    return Err(Errno::ENOSPC);
                }
                let v = strings(p, n).ok_or(Errno::EINVAL)?;
                let mut perms = Vec::new();
                perms.try_reserve(nperms).map_err(|_| Errno::ENOMEM)?;
                for s in &v[1..] {
                    perms.push(Perm::parse(s).ok_or(Errno::EINVAL)?);
                }
                let name = core::str::from_utf8(v[0]).map_err(|_| Errno::EINVAL)?;
                let path = if name.starts_with('@') {
                    String::from(name)
                } else {
                    self.canonical(caller, name)?
                };
                self.op_set_perms(caller, tx, &path, perms)?;
                ok()
            }
            XS_WATCH => {
                if count_strings(p) != 2 {
                    return Err(Errno::EINVAL);
                }
                let v = strings(p, 2).ok_or(Errno::EINVAL)?;
                self.op_watch(caller, v[0], v[1])?;
                Ok((ty, b"OK\0".to_vec()))
            }
            XS_UNWATCH => {
                if count_strings(p) != 2 {
                    return Err(Errno::EINVAL);
                }
                let v = strings(p, 2).ok_or(Errno::EINVAL)?;
                let name = core::str::from_utf8(v[0]).map_err(|_| Errno::ENOENT)?;
                let path = if name.starts_with('/') || name.starts_with('@') {
                    String::from(name)
                } else {
                    let mut s = domain_path(u32::from(caller.dom.0));
                    s.push('/');
                    s.push_str(name);
                    s
                };
                let conn = self.conns.get_mut(&caller.dom.0).ok_or(Errno::EINVAL)?;
                let i = conn
                    .watches
                    .iter()
                    .position(|w| w.path == path && w.token == v[1])
                    .ok_or(Errno::ENOENT)?;
                let w = conn.watches.remove(i);
                conn.watch_bytes = conn
                    .watch_bytes
                    .saturating_sub(watch_cost(&w.path, &w.token));
                ok()
            }
            XS_TRANSACTION_START => {
                if tx.is_some() {
                    return Err(Errno::EBUSY);
                }
                let open = self.txns.keys().filter(|k| k.0 == caller.dom.0).count();
                if !caller.privileged() && open > self.limits.transactions_per_domain {
                    return Err(Errno::ENOSPC);
                }
                let conn = self.conns.get_mut(&caller.dom.0).ok_or(Errno::EINVAL)?;
                let mut id = conn.next_txid;
                // At most `open + 1` candidates are in use or zero.
                while id == 0 || self.txns.contains_key(&(caller.dom.0, id)) {
                    id = id.wrapping_add(1);
                }
                conn.next_txid = id.wrapping_add(1);
                self.txns.insert(
                    (caller.dom.0, id),
                    Txn {
                        writes: BTreeMap::new(),
                        accessed: BTreeMap::new(),
                        events: Vec::new(),
                        delta: BTreeMap::new(),
                        created: false,
                        mutations: 0,
                        failed: false,
                        bytes: 0,
                    },
                );
                let mut s = String::new();
                let _ = write!(s, "{id}\0");
                Ok((ty, s.into_bytes()))
            }
            XS_TRANSACTION_END => {
                let arg = onearg(p).filter(|a| *a == "T" || *a == "F");
                let Some(arg) = arg else {
                    return Err(Errno::EINVAL);
                };
                let t = tx.take().ok_or(Errno::ENOENT)?;
                let _ = txid;
                if arg == "T" {
                    self.commit(caller, t)?;
                }
                ok()
            }
            XS_INTRODUCE => {
                let v = strings(p, 3).ok_or(Errno::EINVAL)?;
                let dom = atoi_u32(v[0]);
                let port = atoi(v[2]);
                if port <= 0 {
                    return Err(Errno::EINVAL);
                }
                let dom = u16::try_from(dom).map_err(|_| Errno::EINVAL)?;
                if dom == 0 {
                    return Err(Errno::EINVAL);
                }
                self.introduce(DomId(dom))?;
                ok()
            }
            XS_RELEASE | XS_RESUME => {
                let a = onearg(p).ok_or(Errno::EINVAL)?;
                let dom = atoi_u32(a.as_bytes());
                if dom == 0 {
                    return Err(Errno::EINVAL);
                }
                let dom = u16::try_from(dom).map_err(|_| Errno::ENOENT)?;
                if !self.conns.contains_key(&dom) {
                    return Err(Errno::ENOENT);
                }
                if ty == XS_RELEASE {
                    self.release(DomId(dom), false);
                } else if let Some(c) = self.conns.get_mut(&dom) {
                    c.shutdown_reported = false;
                }
                ok()
            }
            XS_GET_DOMAIN_PATH => {
                let a = onearg(p).ok_or(Errno::EINVAL)?;
                let mut s = domain_path(atoi_u32(a.as_bytes()));
                s.push('\0');
                Ok((ty, s.into_bytes()))
            }
            XS_IS_DOMAIN_INTRODUCED => {
                let a = onearg(p).ok_or(Errno::EINVAL)?;
                let dom = atoi_u32(a.as_bytes());
                let yes = dom == DOMID_SELF
                    || u16::try_from(dom).is_ok_and(|d| self.conns.contains_key(&d));
                Ok((
                    ty,
                    if yes {
                        b"T\0".to_vec()
                    } else {
                        b"F\0".to_vec()
                    },
                ))
            }
            XS_SET_TARGET => {
                let v = strings(p, 2).ok_or(Errno::EINVAL)?;
                let find = |s: &[u8]| -> Res<u16> {
                    let d = u16::try_from(atoi_u32(s)).map_err(|_| Errno::ENOENT)?;
                    if self.conns.contains_key(&d) {
                        Ok(d)
                    } else {
                        Err(Errno::ENOENT)
                    }
                };
                let d = find(v[0])?;
                let t = find(v[1])?;
                if let Some(c) = self.conns.get_mut(&d) {
                    c.target = Some(DomId(t));
                }
                ok()
            }
            XS_RESET_WATCHES => {
                if let Some(c) = self.conns.get_mut(&caller.dom.0) {
                    c.watches.clear();
                    c.watch_bytes = 0;
                }
                self.txns.retain(|k, _| k.0 != caller.dom.0);
                *tx = None;
                ok()
            }
            // XS_CONTROL: debugging / live update are not offered.
            _ => Err(Errno::ENOSYS),
        }
    }

    fn reply(&mut self, to: DomId, req: &XsdSockmsg, ty: u32, body: &[u8]) {
        let (ty, body) = if body.len() > XENSTORE_PAYLOAD_MAX {
            (XS_ERROR, err_body(Errno::E2BIG))
        } else {
            (ty, body.to_vec())
        };
        let h = XsdSockmsg {
            type_: ty,
            req_id: req.req_id,
            tx_id: req.tx_id,
            len: body.len() as u32,
        };
        let Some(msg) = encode(&h, &body) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&to.0) {
            if c.ignored {
                return;
            }
            if c.out.try_reserve(1).is_err() {
                return;
            }
            c.out_bytes += msg.len();
            c.outstanding += 1;
            c.out.push_back(OutMsg {
                bytes: msg,
                is_reply: true,
                is_event: false,
            });
        }
    }

    /// Queues a watch event; drops identical pending ones (except specials) and drops
    /// the connection when its queue exceeds the output caps.
    fn send_event(&mut self, to: u16, path: &str, token: &[u8]) {
        let len = path.len() + 1 + token.len() + 1;
        if len > XENSTORE_PAYLOAD_MAX {
            return;
        }
        let mut body = Vec::new();
        if body.try_reserve(len).is_err() {
            return;
        }
        body.extend_from_slice(path.as_bytes());
        body.push(0);
        body.extend_from_slice(token);
        body.push(0);
        let h = XsdSockmsg {
            type_: XS_WATCH_EVENT,
            req_id: 0,
            tx_id: 0,
            len: len as u32,
        };
        let Some(msg) = encode(&h, &body) else {
            return;
        };
        let limits = self.limits;
        // Events are queued whatever the watcher does, so they go by the memory rules
        // of requests: a domU they would take past its quota, or past its fair share
        // of a full store, counts as flooding (else cheap watches on busy nodes would
        // fill the heap).
        let over = to != 0
            && self
                .check_memory(
                    Caller {
                        dom: DomId(to),
                        target: None,
                    },
                    &None,
                    msg.len(),
                )
                .is_err();
        let Some(c) = self.conns.get_mut(&to) else {
            return;
        };
        if c.ignored {
            return;
        }
        if !path.starts_with('@') && c.out.iter().any(|m| m.is_event && m.bytes == msg) {
            return;
        }
        if over {
            self.drop_connection(DomId(to));
            return;
        }
        if c.out.try_reserve(1).is_err() {
            return;
        }
        if c.out.len() >= limits.output_messages_per_domain
            || c.out_bytes + msg.len() > limits.output_bytes_per_domain
        {
            // dom0 is never dropped: its surplus events are lost instead (Xen drops
            // events at the memory quota).
            if to != 0 {
                self.drop_connection(DomId(to));
            }
            return;
        }
        c.out_bytes += msg.len();
        c.out.push_back(OutMsg {
            bytes: msg,
            is_reply: false,
            is_event: true,
        });
    }

    // ---------------------------------------------------------------- paths

    fn canonical(&self, caller: Caller, name: &str) -> Res<String> {
        let path = if name.starts_with('/') || name.starts_with('@') {
            String::from(name)
        } else {
            let mut s = domain_path(u32::from(caller.dom.0));
            s.push('/');
            s.push_str(name);
            s
        };
        if !self.valid_nodename(&path) {
            return Err(Errno::EINVAL);
        }
        Ok(path)
    }

    fn arg_path(&self, caller: Caller, p: &[u8]) -> Res<String> {
        let a = onearg(p).ok_or(Errno::EINVAL)?;
        self.canonical(caller, a)
    }

    /// `is_valid_nodename`.
    fn valid_nodename(&self, node: &str) -> bool {
        if !node.starts_with('/') {
            return false;
        }
        if node.ends_with('/') && node != "/" {
            return false;
        }
        if node.contains("//") {
            return false;
        }
        let local_off = local_prefix_len(node);
        if node.len() > local_off + self.limits.path_max {
            return false;
        }
        node.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@'))
    }

    // ---------------------------------------------------------------- node access

    /// Reads a node through the transaction (recording the access).
    fn read(&mut self, caller: Caller, tx: &mut Option<Txn>, path: &str) -> Res<Option<Node>> {
        if let Some(t) = tx.as_ref() {
            if let Some(w) = t.writes.get(path) {
                return Ok(w.clone());
            }
            let base = self.nodes.get(path);
            if !t.accessed.contains_key(path) {
                if !caller.privileged() && t.accessed.len() >= self.limits.transaction_nodes {
                    return Err(Errno::ENOSPC);
                }
                // One read of a deep missing path records every ancestor: charged as it
                // grows, not only between requests.
                let cost = path.len() + ENTRY_OVERHEAD;
                self.check_memory(caller, tx, cost)?;
                if let Some(t) = tx.as_mut() {
                    t.accessed
                        .insert(String::from(path), base.map(|n| n.generation));
                    t.bytes = t.bytes.saturating_add(cost);
                }
            }
            return Ok(base.cloned());
        }
        Ok(self.nodes.get(path).cloned())
    }

    fn count(&self, tx: &Option<Txn>, dom: u16) -> i64 {
        let base = self.counts.get(&dom).copied().unwrap_or(0) as i64;
        base + tx
            .as_ref()
            .and_then(|t| t.delta.get(&dom).copied())
            .unwrap_or(0)
    }

    fn adjust_count(&mut self, tx: &mut Option<Txn>, dom: u16, by: i64) {
        match tx {
            Some(t) => *t.delta.entry(dom).or_insert(0) += by,
            None => {
                let c = self.counts.entry(dom).or_insert(0);
                *c = (*c as i64 + by).max(0) as usize;
            }
        }
    }

    /// Stores `node` at `path` (a new generation), keeping owner counts right.
    fn put(&mut self, caller: Caller, tx: &mut Option<Txn>, path: &str, mut node: Node) -> Res<()> {
        let old = self.read(caller, tx, path)?;
        let old_owner = old.as_ref().map(Node::owner);
        if old_owner != Some(node.owner()) {
            if let Some(o) = old_owner {
                self.adjust_count(tx, o, -1);
            }
            self.adjust_count(tx, node.owner(), 1);
        }
        self.generation += 1;
        node.generation = self.generation;
        match tx {
            Some(t) => {
                t.mutations += 1;
                let cost = node.cost(path);
                let old = t.writes.insert(String::from(path), Some(node));
                t.bytes = t
                    .bytes
                    .saturating_add(cost)
                    .saturating_sub(write_cost(path, &old));
            }
            None => {
                self.insert_node(String::from(path), node);
            }
        }
        Ok(())
    }

    fn delete(&mut self, caller: Caller, tx: &mut Option<Txn>, path: &str) -> Res<()> {
        if let Some(old) = self.read(caller, tx, path)? {
            self.adjust_count(tx, old.owner(), -1);
        }
        match tx {
            Some(t) => {
                t.mutations += 1;
                let old = t.writes.insert(String::from(path), None);
                t.bytes = t
                    .bytes
                    .saturating_add(node_cost(path.len(), 0, 0))
                    .saturating_sub(write_cost(path, &old));
            }
            None => {
                self.remove_node(path);
            }
        }
        Ok(())
    }

    /// `get_node`: the node if the caller has `perm` on it, else `EACCES`/`ENOENT` as
    /// `errno_from_parents` decides.
    fn get_node(
        &mut self,
        caller: Caller,
        tx: &mut Option<Txn>,
        path: &str,
        perm: u8,
    ) -> Res<Node> {
        let err = match self.read(caller, tx, path)? {
            Some(n) if perm_for(&caller, &n.perms) & perm == perm => return Ok(n),
            Some(_) => Errno::EACCES,
            None => Errno::ENOENT,
        };
        // Nearest existing ancestor decides whether the caller may learn `err`.
        let mut p = path;
        while p != "/" {
            p = parent_of(p);
            if let Some(n) = self.read(caller, tx, p)? {
                return Err(if perm_for(&caller, &n.perms) & perm != 0 {
                    err
                } else {
                    Errno::EACCES
                });
            }
        }
        Err(Errno::EACCES)
    }

    // ---------------------------------------------------------------- operations

    fn op_write(
        &mut self,
        caller: Caller,
        tx: &mut Option<Txn>,
        path: &str,
        value: &[u8],
    ) -> Res<()> {
        if !self.valid_nodename(path) {
            return Err(Errno::EINVAL);
        }
        self.check_memory(caller, tx, value.len())?;
        let mut v = Vec::new();
        v.try_reserve(value.len()).map_err(|_| Errno::ENOMEM)?;
        v.extend_from_slice(value);
        match self.get_node(caller, tx, path, PERM_WRITE) {
            Ok(mut n) => {
                n.value = v;
                if !caller.privileged() && n.record_size() >= self.limits.value_max {
                    return Err(Errno::ENOSPC);
                }
                let perms = n.perms.clone();
                self.put(caller, tx, path, n)?;
                self.fire(tx, path, false, Some(&perms), None);
            }
            Err(Errno::ENOENT) => {
                let perms = self.create(caller, tx, path, v)?;
                self.fire(tx, path, false, Some(&perms), None);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn op_mkdir(&mut self, caller: Caller, tx: &mut Option<Txn>, path: &str) -> Res<()> {
        if !self.valid_nodename(path) {
            return Err(Errno::EINVAL);
        }
        match self.get_node(caller, tx, path, PERM_WRITE) {
            Ok(_) => Ok(()),
            Err(Errno::ENOENT) => {
                let perms = self.create(caller, tx, path, Vec::new())?;
                self.fire(tx, path, false, Some(&perms), None);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `create_node`: creates `path` and its missing ancestors; returns the new node's
    /// permissions. All quota checks happen before anything changes.
    fn create(
        &mut self,
        caller: Caller,
        tx: &mut Option<Txn>,
        path: &str,
        value: Vec<u8>,
    ) -> Res<Vec<Perm>> {
        // Missing nodes, deepest first, and the existing ancestor.
        let mut missing: Vec<&str> = Vec::new();
        let mut p = path;
        let mut parent = loop {
            missing.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
            missing.push(p);
            p = parent_of(p);
            if let Some(n) = self.read(caller, tx, p)? {
                break n;
            }
            if p == "/" {
                return Err(Errno::EIO);
            }
        };
        let parent_path = p;
        let mut perms = parent.perms.clone();
        if !caller.privileged() {
            if let Some(first) = perms.first_mut() {
                first.domid = caller.dom;
            }
            let have = self.count(tx, caller.dom.0);
            if have + missing.len() as i64 > self.limits.nodes_per_domain as i64 {
                return Err(Errno::ENOSPC);
            }
            let top = missing[missing.len() - 1];
            if parent.record_size() + basename(top).len() + 1 >= self.limits.value_max {
                return Err(Errno::ENOSPC);
            }
            for (i, m) in missing.iter().enumerate() {
                let child = if i == 0 {
                    0
                } else {
                    basename(missing[i - 1]).len() + 1
                };
                let data = if i == 0 { value.len() } else { 0 };
                let _ = m;
                if 24 + 8 * perms.len() + data + child >= self.limits.value_max {
                    return Err(Errno::ENOSPC);
                }
            }
            // The new nodes and the parent's new child name, before anything changes.
            let new_bytes = missing.iter().enumerate().fold(
                basename(top).len() + 1 + CHILD_OVERHEAD,
                |a, (i, m)| {
                    let data = if i == 0 { value.len() } else { 0 };
                    a.saturating_add(node_cost(m.len(), 48 + 8 * perms.len() + data, 1))
                },
            );
            self.check_memory(caller, tx, new_bytes)?;
        }
        if let Some(t) = tx {
            t.created = true;
        }
        // Parent gets the top missing name, then each new node links the next.
        let top = missing[missing.len() - 1];
        parent.children.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        parent.children.push(String::from(basename(top)));
        self.put(caller, tx, parent_path, parent)?;
        let mut value = Some(value);
        for i in (0..missing.len()).rev() {
            let children = if i == 0 {
                Vec::new()
            } else {
                alloc::vec![String::from(basename(missing[i - 1]))]
            };
            let node = Node {
                value: if i == 0 {
                    value.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
                perms: perms.clone(),
                children,
                generation: 0,
            };
            self.put(caller, tx, missing[i], node)?;
        }
        Ok(core::mem::take(&mut perms))
    }

    fn op_rm(&mut self, caller: Caller, tx: &mut Option<Txn>, path: &str) -> Res<()> {
        if !self.valid_nodename(path) {
            return Err(Errno::EINVAL);
        }
        let node = match self.get_node(caller, tx, path, PERM_WRITE) {
            Ok(n) => n,
            Err(Errno::ENOENT) => {
                return if path != "/" && self.read(caller, tx, parent_of(path))?.is_some() {
                    Ok(())
                } else {
                    Err(Errno::ENOENT)
                };
            }
            Err(e) => return Err(e),
        };
        if path == "/" {
            return Err(Errno::EINVAL);
        }
        let parent_path = parent_of(path);
        let mut parent = self.read(caller, tx, parent_path)?.ok_or(Errno::EINVAL)?;
        // Post-order walk with an explicit stack (no recursion on guest-shaped depth).
        let mut stack: Vec<(String, Node, usize)> = alloc::vec![(String::from(path), node, 0)];
        while let Some((p, n, next)) = stack.pop() {
            if next < n.children.len() {
                let cp = child_path(&p, &n.children[next]);
                let child = self.read(caller, tx, &cp)?;
                stack.push((p, n, next + 1));
                if let Some(c) = child {
                    stack.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
                    stack.push((cp, c, 0));
                }
                continue;
            }
            self.delete(caller, tx, &p)?;
            let exact = p != path;
            self.fire(tx, &p, exact, Some(&n.perms), None);
        }
        let base = basename(path);
        if let Some(i) = parent.children.iter().position(|c| c == base) {
            parent.children.remove(i);
        }
        self.put(caller, tx, parent_path, parent)?;
        Ok(())
    }

    fn op_set_perms(
        &mut self,
        caller: Caller,
        tx: &mut Option<Txn>,
        path: &str,
        perms: Vec<Perm>,
    ) -> Res<()> {
        if perms.is_empty() {
            return Err(Errno::EINVAL);
        }
        if path.starts_with('@') {
            let cur = match path {
                "@introduceDomain" => &self.introduce_perms,
                "@releaseDomain" => &self.release_perms,
                _ => return Err(Errno::EINVAL),
            };
            if perm_for(&caller, cur) & (PERM_WRITE | PERM_OWNER) != PERM_WRITE | PERM_OWNER {
                return Err(Errno::EACCES);
            }
            if path == "@introduceDomain" {
                self.introduce_perms = perms;
            } else {
                self.release_perms = perms;
            }
            return Ok(());
        }
        if !self.valid_nodename(path) {
            return Err(Errno::EINVAL);
        }
        let mut node = self.get_node(caller, tx, path, PERM_WRITE | PERM_OWNER)?;
        if !caller.privileged() && perms[0].domid != node.perms[0].domid {
            return Err(Errno::EPERM);
        }
        let old = core::mem::replace(&mut node.perms, perms);
        if !caller.privileged() && node.record_size() >= self.limits.value_max {
            return Err(Errno::ENOSPC);
        }
        let new = node.perms.clone();
        self.put(caller, tx, path, node)?;
        self.fire(tx, path, false, Some(&new), Some(&old));
        Ok(())
    }

    fn op_directory_part(
        &mut self,
        caller: Caller,
        tx: &mut Option<Txn>,
        p: &[u8],
    ) -> Res<(u32, Vec<u8>)> {
        if count_strings(p) != 2 {
            return Err(Errno::EINVAL);
        }
        let v = strings(p, 2).ok_or(Errno::EINVAL)?;
        let name = core::str::from_utf8(v[0]).map_err(|_| Errno::EINVAL)?;
        let path = self.canonical(caller, name)?;
        let node = self.get_node(caller, tx, &path, PERM_READ)?;
        let off = atoi_u32(v[1]) as usize;
        let children = children_bytes(&node)?;
        let mut out = Vec::new();
        out.try_reserve(XENSTORE_PAYLOAD_MAX)
            .map_err(|_| Errno::ENOMEM)?;
        let _ = write!(VecWriter(&mut out), "{}", node.generation);
        out.push(0);
        let genlen = out.len();
        if off >= children.len() {
            out.push(0);
            return Ok((XS_DIRECTORY_PART, out));
        }
        let maxlen = XENSTORE_PAYLOAD_MAX - genlen - 1;
        let strlen = |at: usize| {
            children[at..]
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(children.len() - at)
        };
        let mut len = 0;
        while off + len < children.len() && len + strlen(off + len) < maxlen {
            len += strlen(off + len) + 1;
            if off + len >= children.len() {
                break;
            }
        }
        let end = (off + len).min(children.len());
        out.extend_from_slice(&children[off..end]);
        if end == children.len() {
            out.push(0);
        }
        Ok((XS_DIRECTORY_PART, out))
    }

    fn op_watch(&mut self, caller: Caller, path: &[u8], token: &[u8]) -> Res<()> {
        let name = core::str::from_utf8(path).map_err(|_| Errno::EINVAL)?;
        let (abs, relative) = if name.starts_with('@') {
            if name.len() > XENSTORE_REL_PATH_MAX {
                return Err(Errno::EINVAL);
            }
            (String::from(name), false)
        } else {
            (self.canonical(caller, name)?, !name.starts_with('/'))
        };
        let limit = self.limits.watches_per_domain;
        let conn = self.conns.get_mut(&caller.dom.0).ok_or(Errno::EINVAL)?;
        if conn
            .watches
            .iter()
            .any(|w| w.path == abs && w.token == token)
        {
            return Err(Errno::EEXIST);
        }
        if !caller.privileged() && conn.watches.len() > limit {
            return Err(Errno::E2BIG);
        }
        conn.watches.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        let mut tok = Vec::new();
        tok.try_reserve(token.len()).map_err(|_| Errno::ENOMEM)?;
        tok.extend_from_slice(token);
        conn.watch_bytes = conn.watch_bytes.saturating_add(watch_cost(&abs, token));
        conn.watches.push(Watch {
            path: abs.clone(),
            token: tok,
            relative,
        });
        // The initial event follows the reply: `request` queues it after the ack.
        let shown = String::from(event_path(caller.dom.0, relative, &abs));
        self.pending_initial = Some((caller.dom.0, shown, token.to_vec()));
        Ok(())
    }

    fn commit(&mut self, caller: Caller, t: Txn) -> Res<()> {
        if t.failed {
            return Err(Errno::ENOMEM);
        }
        if t.created && !caller.privileged() {
            let tx = Some(t);
            let cnt = self.count(&tx, caller.dom.0);
            let Some(t2) = tx else { return Err(Errno::EIO) };
            if cnt >= self.limits.nodes_per_domain as i64 {
                return Err(Errno::ENOSPC);
            }
            return self.commit_checked(t2);
        }
        self.commit_checked(t)
    }

    fn commit_checked(&mut self, t: Txn) -> Res<()> {
        for (path, seen) in &t.accessed {
            if self.nodes.get(path).map(|n| n.generation) != *seen {
                return Err(Errno::EAGAIN);
            }
        }
        for (path, w) in t.writes {
            match w {
                Some(mut n) => {
                    self.generation += 1;
                    n.generation = self.generation;
                    self.insert_node(path, n);
                }
                None => {
                    self.remove_node(&path);
                }
            }
        }
        for (dom, d) in t.delta {
            if d != 0 {
                let c = self.counts.entry(dom).or_insert(0);
                *c = (*c as i64 + d).max(0) as usize;
            }
        }
        for e in t.events {
            self.fire(
                &mut None,
                &e.path,
                e.exact,
                e.perms.as_deref(),
                e.old_perms.as_deref(),
            );
        }
        Ok(())
    }

    /// `fire_watches`: queues events for every watch on `name` (exact) or on `name` and
    /// its ancestors, of every connection allowed to see the change. Inside a transaction
    /// the event waits for the commit.
    fn fire(
        &mut self,
        tx: &mut Option<Txn>,
        name: &str,
        exact: bool,
        perms: Option<&[Perm]>,
        old_perms: Option<&[Perm]>,
    ) {
        if let Some(t) = tx {
            if t.events.try_reserve(1).is_ok() {
                t.events.push(TxEvent {
                    path: String::from(name),
                    exact,
                    perms: perms.map(<[Perm]>::to_vec),
                    old_perms: old_perms.map(<[Perm]>::to_vec),
                });
            }
            return;
        }
        // Matching watches by index, copied one at a time when sent: copying every
        // event first would take heap for all of them, however many the memory rules
        // then refuse (128 cheap watches per domU on a busy node).
        let mut events: Vec<(u16, usize)> = Vec::new();
        for (&dom, conn) in &self.conns {
            if conn.ignored || conn.watches.is_empty() {
                continue;
            }
            let who = Caller {
                dom: DomId(dom),
                target: conn.target,
            };
            let readable = |p: &[Perm]| perm_for(&who, p) & PERM_READ != 0;
            let permitted = if name.starts_with('@') {
                match name {
                    "@introduceDomain" => readable(&self.introduce_perms),
                    "@releaseDomain" => readable(&self.release_perms),
                    _ => false,
                }
            } else {
                old_perms.is_some_and(readable)
                    || match perms.or_else(|| self.nodes.get(name).map(|n| n.perms.as_slice())) {
                        None => false,
                        Some(p) => {
                            readable(p)
                                || (name != "/"
                                    && self
                                        .nodes
                                        .get(parent_of(name))
                                        .is_some_and(|n| readable(&n.perms)))
                        }
                    }
            };
            if !permitted {
                continue;
            }
            for (i, w) in conn.watches.iter().enumerate() {
                let hit = if exact {
                    w.path == name
                } else {
                    is_child(name, &w.path)
                };
                if hit && events.try_reserve(1).is_ok() {
                    events.push((dom, i));
                }
            }
        }
        for (dom, i) in events {
            // A watcher dropped meanwhile has no watches left.
            let Some(w) = self.conns.get(&dom).and_then(|c| c.watches.get(i)) else {
                continue;
            };
            let shown = event_path(dom, w.relative, name);
            let mut token = Vec::new();
            if token.try_reserve(w.token.len()).is_err() {
                continue;
            }
            token.extend_from_slice(&w.token);
            self.send_event(dom, shown, &token);
        }
    }
}

/// The path a watch event reports: relative watches drop the `/local/domain/<id>/` prefix.
fn event_path(dom: u16, relative: bool, name: &str) -> &str {
    if !relative {
        return name;
    }
    let mut buf = [0u8; 24];
    let prefix_len = {
        let mut w = SliceWriter(&mut buf, 0);
        let _ = write!(w, "/local/domain/{dom}");
        w.1
    };
    let rest = name.get(prefix_len..).unwrap_or("");
    rest.strip_prefix('/').unwrap_or(rest)
}

/// Length of a `/local/domain/<n>/` prefix (up to 5 digits, as `sscanf("%5u/")`), or 0.
fn local_prefix_len(node: &str) -> usize {
    let Some(rest) = node.strip_prefix("/local/domain/") else {
        return 0;
    };
    let digits = rest.bytes().take(5).take_while(u8::is_ascii_digit).count();
    if digits > 0 && rest.as_bytes().get(digits) == Some(&b'/') {
        "/local/domain/".len() + digits + 1
    } else {
        0
    }
}

/// A node's children as Xen stores them: each name followed by a NUL.
fn children_bytes(n: &Node) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    out.try_reserve(n.childlen()).map_err(|_| Errno::ENOMEM)?;
    for c in &n.children {
        out.extend_from_slice(c.as_bytes());
        out.push(0);
    }
    Ok(out)
}

/// Bytes charged for a transaction's write entry at `path` (`None`: no entry).
fn write_cost(path: &str, w: &Option<Option<Node>>) -> usize {
    match w {
        None => 0,
        Some(Some(n)) => n.cost(path),
        Some(None) => node_cost(path.len(), 0, 0),
    }
}

/// Bytes charged for one watch.
fn watch_cost(path: &str, token: &[u8]) -> usize {
    path.len() + token.len() + ENTRY_OVERHEAD
}

fn err_body(e: Errno) -> Vec<u8> {
    let mut v = error_name(e).as_bytes().to_vec();
    v.push(0);
    v
}

/// Header + payload as wire bytes; `None` when memory runs out.
fn encode(h: &XsdSockmsg, body: &[u8]) -> Option<Vec<u8>> {
    use zerocopy::IntoBytes;
    let mut msg = Vec::new();
    msg.try_reserve(16 + body.len()).ok()?;
    msg.extend_from_slice(h.as_bytes());
    msg.extend_from_slice(body);
    Some(msg)
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl core::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

struct SliceWriter<'a>(&'a mut [u8], usize);

impl core::fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.1.checked_add(s.len()).ok_or(core::fmt::Error)?;
        self.0
            .get_mut(self.1..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.1 = end;
        Ok(())
    }
}
