//! The split-driver handshake between two domains, as Linux's xenbus drivers do it, with
//! the kit ([`GrantTable`], [`map_grant`], [`XenbusClient`]):
//!
//! * the **frontend** (`demo=front peer=<back>`) grants a page of its own to the backend,
//!   allocates an unbound event channel for it, publishes `ring-ref` and `event-channel`
//!   in its device directory (readable by the backend) and walks its `state` through
//!   Initialising → Initialised; once the backend is Connected it goes Connected;
//! * the **backend** (`demo=back peer=<front>`) goes InitWait, watches the frontend's
//!   `state`, maps the granted page at a reserved page of its image, binds the channel and
//!   goes Connected;
//! * the frontend then sends `messages=` messages (default 64) through the page; the
//!   backend answers each with its checksum; both print the folded total;
//! * teardown: frontend Closing → backend unmaps and closes its channel, Closed →
//!   frontend ends the grant (it must no longer be mapped), closes its channel, Closed.
//!
//! The directories come from the toolstack when it created the device (`backend` and
//! `frontend` nodes, [`Layout::Toolstack`]); otherwise each end makes its own under its
//! `data/` ([`Layout::SelfMade`]). Every line starts with `split: <role>: `.

use core::sync::atomic::{Ordering, fence};

use xen_pv_abi::evtchn::Port;
use xen_pv_abi::generated::call;
use xen_pv_abi::generated::grant_table_op::GNTTABOP_SETUP_TABLE;
use xen_pv_abi::grant_table::{GNTST_OKAY, GnttabSetupTable, GrantEntryV1};
use xen_pv_abi::hypercall::{UVMF_INVLPG, update_va_mapping};
use xen_pv_abi::kit::{self, GrantTable, TxId, map_grant};
use xen_pv_abi::transport::Native;
use xen_pv_abi::xenstore::XenbusState;
use xen_pv_abi::{DomId, Errno, EvtchnPort, GrantRef, Mfn};

use crate::events::{self, wait_until};
use crate::split::{
    self, DATA, Layout, MAX_LEN, Path, REQ_LEN, REQ_SEQ, RSP_SEQ, RSP_SUM, Request, Role,
};
use crate::xenbus::{self, Client, StoreWait};
use crate::{StartInfo, bytes_str, println};

/// Grant entries of the one grant frame the frontend sets up (4 KiB / 8 bytes).
pub const GRANT_ENTRIES: usize = 512;
/// Store round trips a state wait may take before giving up.
const MAX_STATE_WAITS: u32 = 100_000;
/// Retries of a transaction that keeps meeting concurrent changes.
const MAX_TX_RETRIES: u32 = 16;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The frontend's grant frame is mapped here (never accessed as a Rust value).
static mut GRANT_FRAME: Page = Page([0; 4096]);
/// The page the frontend shares (only accessed through raw pointers, volatile).
static mut SHARED: Page = Page([0; 4096]);
/// Where the backend maps the granted page (replaced by the foreign frame while mapped).
static mut MAP_WINDOW: Page = Page([0; 4096]);

/// A failed step: what was being done and the error.
struct Failed(&'static str, Error);

enum Error {
    Errno(Errno),
    Kit(kit::Error),
    /// The peer did something the protocol does not allow.
    Protocol(&'static str),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Errno(e) => write!(f, "{e}"),
            Error::Kit(e) => write!(f, "{e}"),
            Error::Protocol(what) => f.write_str(what),
        }
    }
}

/// Adds the step's name to an error.
trait Step<T> {
    fn at(self, step: &'static str) -> Result<T, Failed>;
}

impl<T> Step<T> for Result<T, Errno> {
    fn at(self, step: &'static str) -> Result<T, Failed> {
        self.map_err(|e| Failed(step, Error::Errno(e)))
    }
}

impl<T> Step<T> for Result<T, kit::Error> {
    fn at(self, step: &'static str) -> Result<T, Failed> {
        self.map_err(|e| Failed(step, Error::Kit(e)))
    }
}

fn protocol<T>(step: &'static str, what: &'static str) -> Result<T, Failed> {
    Err(Failed(step, Error::Protocol(what)))
}

/// Runs the role `req` names; prints every step, or where it failed.
pub fn run(si: &StartInfo, req: Request) {
    let role = req.role.name();
    if let Err(e) = events::init(si) {
        println!("split: {role}: cannot set up event delivery: {e}");
        return;
    }
    let connected = xenbus::connect(si).and_then(|xs| {
        let (_, port) = si.xenstore().ok_or(Errno::ENODEV)?;
        Ok((xs, StoreWait(port)))
    });
    let (mut xs, wait) = match connected {
        Ok(c) => c,
        Err(e) => {
            println!("split: {role}: no xenstore connection: {e}");
            return;
        }
    };
    let r = match req.role {
        Role::Front => front(si, &mut xs, wait, req),
        Role::Back => back(&mut xs, wait, req),
    };
    if let Err(Failed(step, e)) = r {
        println!("split: {role}: failed: {step}: {e}");
    }
    events::disable();
}

/// This domain's id, from its `domid` node.
fn own_domid(xs: &mut Client) -> Result<DomId, Failed> {
    let v = xs.read(TxId::NONE, "domid").at("read domid")?;
    match crate::cmdline::parse_u64(v).and_then(|d| u16::try_from(d).ok()) {
        Some(d) => Ok(DomId(d)),
        None => protocol("read domid", "not a domain id"),
    }
}

/// A node holding a path (`backend`, `frontend`), if present and readable.
fn read_path(xs: &mut Client, at: &Path) -> Result<Option<Path>, Failed> {
    match xs.read(TxId::NONE, at.as_str()) {
        Ok(v) => {
            let p = Path::of(format_args!("{}", bytes_str(v)));
            if p.truncated() || p.as_str().len() != v.len() || !p.as_str().starts_with('/') {
                return protocol("read peer path", "not a usable path");
            }
            Ok(Some(p))
        }
        Err(Errno::ENOENT | Errno::EACCES) => Ok(None),
        Err(e) => Err(Failed("read peer path", Error::Errno(e))),
    }
}

/// Creates `dir` owned by this domain, readable by `peer`.
fn make_dir(xs: &mut Client, dir: &Path, me: DomId, peer: DomId) -> Result<(), Failed> {
    xs.mkdir(TxId::NONE, dir.as_str()).at("mkdir")?;
    let owner = Path::of(format_args!("n{}", me.0));
    let reader = Path::of(format_args!("r{}", peer.0));
    xenbus::set_perms(
        xs,
        TxId::NONE,
        dir.as_str(),
        &[owner.as_str(), reader.as_str()],
    )
    .at("set_perms")
}

fn write_node(xs: &mut Client, dir: &Path, leaf: &str, value: &[u8]) -> Result<(), Errno> {
    let p = dir.join(leaf);
    if p.truncated() {
        return Err(Errno::ENAMETOOLONG);
    }
    xs.write(TxId::NONE, p.as_str(), value)
}

fn set_state(xs: &mut Client, role: Role, dir: &Path, s: XenbusState) -> Result<(), Failed> {
    write_node(xs, dir, "state", s.as_str().as_bytes()).at("write state")?;
    println!("split: {}: state -> {s:?}", role.name());
    Ok(())
}

/// The state at `path`; `None` while it is missing or not readable yet.
fn read_state(xs: &mut Client, path: &Path) -> Result<Option<XenbusState>, Failed> {
    match xs.read(TxId::NONE, path.as_str()) {
        Ok(v) => Ok(XenbusState::parse(v)),
        Err(Errno::ENOENT | Errno::EACCES) => Ok(None),
        Err(e) => Err(Failed("read peer state", Error::Errno(e))),
    }
}

/// Waits (on watch events) until the state at `path` satisfies `done`.
fn wait_state(
    xs: &mut Client,
    wait: StoreWait,
    path: &Path,
    done: impl Fn(XenbusState) -> bool,
) -> Result<XenbusState, Failed> {
    for _ in 0..MAX_STATE_WAITS {
        if let Some(s) = read_state(xs, path)?
            && done(s)
        {
            return Ok(s);
        }
        // Until a watch fires (a new watch fires once right away).
        loop {
            match xs.next_watch_event() {
                Ok(Some(_)) | Err(Errno::ENOBUFS) => break,
                Ok(None) => wait.block(),
                Err(e) => return Err(Failed("watch", Error::Errno(e))),
            }
        }
    }
    Err(Failed(
        "wait for peer state",
        Error::Errno(Errno::ETIMEDOUT),
    ))
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    crate::cmdline::parse_u64(v).and_then(|n| u32::try_from(n).ok())
}

/// A `u32` field of the shared page at `base`.
fn load(base: *mut u8, off: usize) -> u32 {
    debug_assert!(off + 4 <= DATA);
    // SAFETY: `base` is a mapped, 4 KiB-aligned shared page and `off` a 4-aligned field
    // offset inside it; shared with the peer, hence volatile.
    unsafe { base.add(off).cast::<u32>().read_volatile() }
}

fn store(base: *mut u8, off: usize, v: u32) {
    debug_assert!(off + 4 <= DATA);
    // SAFETY: as in `load`.
    unsafe { base.add(off).cast::<u32>().write_volatile(v) }
}

/// `GNTTABOP_setup_table` for one frame, mapped at [`GRANT_FRAME`], as a [`GrantTable`].
fn own_grant_table() -> Result<GrantTable<GRANT_ENTRIES>, Failed> {
    setup_grant_table().at("setup grant table")
}

/// `GNTTABOP_setup_table` for one frame, mapped at [`GRANT_FRAME`], as a [`GrantTable`]
/// (for any demo of this kernel; call it once).
pub fn setup_grant_table() -> Result<GrantTable<GRANT_ENTRIES>, kit::Error> {
    let mut frames = [0u64; 1];
    let mut op = GnttabSetupTable {
        dom: DomId::SELF,
        nr_frames: 1,
        frame_list: frames.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: one setup_table operation in a local struct whose frame list has room for
    // the one frame asked for.
    let r = unsafe {
        call::grant_table_op(GNTTABOP_SETUP_TABLE, core::ptr::from_mut(&mut op).cast(), 1)
    };
    Errno::check(r)?;
    if op.status != GNTST_OKAY {
        return Err(kit::Error::Status(op.status));
    }
    let va = (&raw mut GRANT_FRAME).cast::<u8>() as u64;
    // Present, writable, user (a PV kernel runs in ring 3).
    let pte = (frames[0] << 12) | 0x7;
    // SAFETY: the page is reserved for the grant frame and never accessed as a Rust
    // value; from now on the table below is its only user.
    unsafe { update_va_mapping(va, pte, UVMF_INVLPG) }?;
    // SAFETY: the frame is mapped at `va` for the kernel's life, holds 512 v1 entries,
    // is only accessed through this table, and entries 8.. are unused (a fresh frame).
    Ok(unsafe { GrantTable::new(va as *mut GrantEntryV1, GRANT_ENTRIES) })
}

/// The peer domain the toolstack named at `at` (`backend-id`, `frontend-id`); it must be
/// the one the command line names (`peer=`), which the demo's roles were given for.
fn toolstack_peer(xs: &mut Client, at: &Path, peer: DomId) -> Result<DomId, Failed> {
    let v = xs.read(TxId::NONE, at.as_str()).at("read peer id")?;
    match crate::cmdline::parse_u64(v).and_then(|d| u16::try_from(d).ok()) {
        Some(d) if d == peer.0 => Ok(DomId(d)),
        Some(_) => protocol("read peer id", "the toolstack names another peer"),
        None => protocol("read peer id", "not a domain id"),
    }
}

fn front(si: &StartInfo, xs: &mut Client, wait: StoreWait, req: Request) -> Result<(), Failed> {
    let (role, back) = (Role::Front, req.peer);
    let me = own_domid(xs)?;
    // The toolstack's entry, else our own under data/.
    let toolstack = Layout::Toolstack.front_dir(me);
    let (layout, dir, back_dir) = match read_path(xs, &toolstack.join("backend"))? {
        Some(b) => {
            toolstack_peer(xs, &toolstack.join("backend-id"), back)?;
            (Layout::Toolstack, toolstack, b)
        }
        None => {
            let dir = Layout::SelfMade.front_dir(me);
            let b = Layout::SelfMade.back_dir(back, me);
            make_dir(xs, &dir, me, back)?;
            write_node(xs, &dir, "backend", b.as_str().as_bytes()).at("write backend")?;
            let id = Path::of(format_args!("{}", back.0));
            write_node(xs, &dir, "backend-id", id.as_str().as_bytes()).at("write backend-id")?;
            (Layout::SelfMade, dir, b)
        }
    };
    println!(
        "split: front: d{} with backend d{} ({} layout) at {}",
        me.0,
        back.0,
        layout.name(),
        dir.as_str()
    );
    set_state(xs, role, &dir, XenbusState::Initialising)?;

    let table = own_grant_table()?;
    let page = (&raw mut SHARED).cast::<u8>();
    let frame = Mfn(crate::paging::mfn_of(si, page as u64));
    let grant = table.grant_access(back, frame, false).at("grant_access")?;
    events::disable();
    let port = Port::alloc_unbound(back).at("alloc_unbound")?;
    events::reset_count(port.number());
    events::enable();
    println!(
        "split: front: granted page gref={} event-channel={}",
        grant.gref().0,
        port.number().0
    );
    let ring_ref = Path::of(format_args!("{}", grant.gref().0));
    let evtchn = Path::of(format_args!("{}", port.number().0));
    let mut tries = 0;
    loop {
        let tx = xs.transaction_start().at("transaction_start")?;
        let node = |leaf| dir.join(leaf);
        xs.write(tx, node("ring-ref").as_str(), ring_ref.as_str().as_bytes())
            .at("write ring-ref")?;
        xs.write(
            tx,
            node("event-channel").as_str(),
            evtchn.as_str().as_bytes(),
        )
        .at("write event-channel")?;
        let s = XenbusState::Initialised.as_str().as_bytes();
        xs.write(tx, node("state").as_str(), s).at("write state")?;
        match xs.transaction_end(tx, true) {
            Err(Errno::EAGAIN) if tries < MAX_TX_RETRIES => tries += 1,
            r => break r.at("transaction_end")?,
        }
    }
    println!("split: front: state -> {:?}", XenbusState::Initialised);

    let back_state = back_dir.join("state");
    xs.watch(back_state.as_str(), "be").at("watch")?;
    let s = wait_state(xs, wait, &back_state, |s| {
        matches!(
            s,
            XenbusState::Connected | XenbusState::Closing | XenbusState::Closed
        )
    })?;
    if s != XenbusState::Connected {
        return protocol("wait for backend", "backend closed before connecting");
    }
    println!("split: front: backend is {s:?}");
    set_state(xs, role, &dir, XenbusState::Connected)?;

    let total = exchange(page, &port, req.messages)?;
    println!(
        "split: front: {} messages answered, checksum {total:#010x}",
        req.messages
    );

    set_state(xs, role, &dir, XenbusState::Closing)?;
    wait_state(xs, wait, &back_state, |s| s == XenbusState::Closed)?;
    println!("split: front: backend is Closed");
    let gref = match grant.end() {
        Ok(r) => r,
        Err(_) => return protocol("end grant", "the backend still maps the page"),
    };
    port.close().at("close event channel")?;
    println!("split: front: grant {} ended, event channel closed", gref.0);
    xs.unwatch(back_state.as_str(), "be").at("unwatch")?;
    set_state(xs, role, &dir, XenbusState::Closed)
}

/// Sends `n` messages through `page` and checks every answer; the folded total.
fn exchange(page: *mut u8, port: &Port, n: u32) -> Result<u32, Failed> {
    let mut msg = [0u8; MAX_LEN];
    let mut total = 0;
    for i in 1..=n {
        let len = split::message(i, &mut msg);
        for (j, &b) in msg[..len].iter().enumerate() {
            // SAFETY: `DATA + len <= DATA + MAX_LEN < 4096`: inside the shared page.
            unsafe { page.add(DATA + j).write_volatile(b) };
        }
        store(page, REQ_LEN, len as u32);
        // The message must be visible before its sequence number.
        fence(Ordering::Release);
        store(page, REQ_SEQ, i);
        port.send().at("send")?;
        wait_until(|| load(page, RSP_SEQ) == i);
        fence(Ordering::Acquire);
        let answer = load(page, RSP_SUM);
        if answer != split::checksum(msg[..len].iter().copied()) {
            return protocol("exchange", "the backend's checksum is wrong");
        }
        total = split::fold_total(total, answer);
    }
    Ok(total)
}

fn back(xs: &mut Client, wait: StoreWait, req: Request) -> Result<(), Failed> {
    let (role, front) = (Role::Back, req.peer);
    let me = own_domid(xs)?;
    let toolstack = Layout::Toolstack.back_dir(me, front);
    let (layout, dir, front_dir) = match read_path(xs, &toolstack.join("frontend"))? {
        Some(f) => {
            toolstack_peer(xs, &toolstack.join("frontend-id"), front)?;
            (Layout::Toolstack, toolstack, f)
        }
        None => {
            let dir = Layout::SelfMade.back_dir(me, front);
            let f = Layout::SelfMade.front_dir(front);
            make_dir(xs, &dir, me, front)?;
            write_node(xs, &dir, "frontend", f.as_str().as_bytes()).at("write frontend")?;
            let id = Path::of(format_args!("{}", front.0));
            write_node(xs, &dir, "frontend-id", id.as_str().as_bytes()).at("write frontend-id")?;
            (Layout::SelfMade, dir, f)
        }
    };
    println!(
        "split: back: d{} serving frontend d{} ({} layout) at {}",
        me.0,
        front.0,
        layout.name(),
        dir.as_str()
    );
    set_state(xs, role, &dir, XenbusState::InitWait)?;

    let front_state = front_dir.join("state");
    xs.watch(front_state.as_str(), "fe").at("watch")?;
    let s = wait_state(xs, wait, &front_state, |s| {
        matches!(
            s,
            XenbusState::Initialised
                | XenbusState::Connected
                | XenbusState::Closing
                | XenbusState::Closed
        )
    })?;
    if !matches!(s, XenbusState::Initialised | XenbusState::Connected) {
        return protocol("wait for frontend", "frontend closed before initialising");
    }
    let mut num = |leaf: &str| -> Result<u32, Failed> {
        let v = xs
            .read(TxId::NONE, front_dir.join(leaf).as_str())
            .at("read frontend details")?;
        match parse_u32(v) {
            Some(n) => Ok(n),
            None => protocol("read frontend details", "not a number"),
        }
    };
    let gref = GrantRef(num("ring-ref")?);
    let remote_port = EvtchnPort(num("event-channel")?);
    println!(
        "split: back: frontend is {s:?}: ring-ref={} event-channel={}",
        gref.0, remote_port.0
    );
    let window = (&raw mut MAP_WINDOW).cast::<u8>() as u64;
    // SAFETY: MAP_WINDOW is a page of our image reserved for this mapping (its L1 entry
    // exists, nothing references it as a Rust value) and it is only accessed volatile
    // through `mapping` until the mapping is gone, never afterwards.
    let mapping = unsafe { map_grant(Native, front, gref, window, false) }.at("map_grant")?;
    events::disable();
    let port = Port::bind_interdomain(front, remote_port).at("bind_interdomain")?;
    events::reset_count(port.number());
    events::enable();
    println!(
        "split: back: mapped the grant, bound event channel {}",
        port.number().0
    );
    set_state(xs, role, &dir, XenbusState::Connected)?;

    let total = serve(mapping.as_ptr(), &port, req.messages)?;
    println!(
        "split: back: answered {} messages, checksum {total:#010x}",
        req.messages
    );

    wait_state(xs, wait, &front_state, |s| {
        matches!(s, XenbusState::Closing | XenbusState::Closed)
    })?;
    println!("split: back: frontend is Closing");
    mapping.unmap().at("unmap")?;
    port.close().at("close event channel")?;
    println!("split: back: unmapped the grant, event channel closed");
    xs.unwatch(front_state.as_str(), "fe").at("unwatch")?;
    set_state(xs, role, &dir, XenbusState::Closed)
}

/// Answers `n` messages on `page`; the folded total of the answers.
fn serve(page: *mut u8, port: &Port, n: u32) -> Result<u32, Failed> {
    let mut total = 0;
    for i in 1..=n {
        // The frontend's index is hostile input: only i - 1 (not sent yet) or i is valid.
        wait_until(|| load(page, REQ_SEQ) != i - 1);
        fence(Ordering::Acquire);
        if load(page, REQ_SEQ) != i {
            return protocol("serve", "the frontend skipped a message");
        }
        let len = load(page, REQ_LEN) as usize;
        if !(1..=MAX_LEN).contains(&len) {
            return protocol("serve", "message length out of range");
        }
        let sum = split::checksum((0..len).map(|j| {
            // SAFETY: `DATA + j < DATA + MAX_LEN < 4096`: inside the mapped page.
            unsafe { page.add(DATA + j).read_volatile() }
        }));
        store(page, RSP_SUM, sum);
        fence(Ordering::Release);
        store(page, RSP_SEQ, i);
        port.send().at("send")?;
        total = split::fold_total(total, sum);
    }
    Ok(total)
}
