//! `hostile-xenstore`: a domU that abuses its xenstore connection (`peer=<id>` names the
//! well-behaved `xenstore-peer` whose progress it waits for).
//!
//! Through the kit's [`XenbusClient`](xen_pv_abi::kit::XenbusClient) it runs into every
//! per-domain quota of the control domain's xenstored (Xen 4.17's C xenstored answers:
//! record size `ENOSPC`, path length `EINVAL`, nodes `ENOSPC`, watches `E2BIG`,
//! transactions `ENOSPC`), breaks the permissions (`EACCES`) and sends payloads without
//! their NUL (`EINVAL`). Last it writes a header announcing a payload above
//! `XENSTORE_PAYLOAD_MAX` straight into the ring: xenstored drops the connection, sets
//! the page's `error` to `XENSTORE_ERROR_PROTO` and answers nothing after that.
//!
//! It publishes its progress in `data/phase` (readable by the peer): `start`, `abusing`,
//! `raw` (just before the malformed message). Every check prints
//! `case <name>: got <x> want <y>`; waits are bounded by [`MAX_POLLS`] yields.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{Ordering, fence};
    use pv_guest::split::Path;
    use pv_guest::xenbus::{self, Client};
    use pv_guest::{StartInfo, cmdline, events, println};
    use test_guests::grant::yield_cpu;
    use xen_pv_abi::console::{EvtchnNotifier, Notify};
    use xen_pv_abi::kit::{StoreRing, TxId};
    use xen_pv_abi::xenstore::{
        XENSTORE_PAYLOAD_MAX, XS_READ, XS_REQ_OFFSET, XS_REQ_PROD_OFFSET, XS_RSP_PROD_OFFSET,
        XS_WRITE, XenstoreDomainInterface, xs_slot,
    };
    use xen_pv_abi::{DomId, Errno};

    test_guests::standard_notes!("hostile-xenstore");
    pv_guest::entry!(main);

    /// Yields one bounded wait may take.
    const MAX_POLLS: u32 = 200_000;
    /// Yields after which a reply that has not come counts as never coming.
    const SILENCE_POLLS: u32 = 20_000;
    /// More nodes, watches and transactions than any quota admits.
    const MAX_NODES: u32 = 1100;
    const MAX_WATCHES: u32 = 200;
    const MAX_TRANSACTIONS: u32 = 50;
    /// Leaves per directory while filling the node quota.
    const PER_DIR: u32 = 50;
    /// A value whose node record exceeds the 2048-byte record quota.
    const BIG_VALUE: usize = 3000;
    /// Characters of a path component that makes the path exceed the 2048-byte limit.
    const LONG_NAME: usize = 2100;
    /// Offset of the ring page's `error` field.
    const ERROR_OFFSET: usize = core::mem::offset_of!(XenstoreDomainInterface, error);
    /// `XENSTORE_ERROR_PROTO`.
    const XENSTORE_ERROR_PROTO: u32 = 3;

    static BIG: [u8; BIG_VALUE] = [b'x'; BIG_VALUE];

    /// Cases printed and those whose answer was not the expected one.
    struct Cases {
        run: u32,
        unexpected: u32,
    }

    impl Cases {
        fn check(&mut self, name: &str, got: &str, want: &str) {
            self.run += 1;
            if got != want {
                self.unexpected += 1;
            }
            println!("case {name}: got {got} want {want}");
        }

        fn result<T>(&mut self, name: &str, r: &Result<T, Errno>, want: &str) {
            self.check(name, outcome(r), want);
        }
    }

    /// `ok` or the error's name.
    fn outcome<T>(r: &Result<T, Errno>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(e) => e.name().unwrap_or("unknown-errno"),
        }
    }

    fn main(si: &'static StartInfo) -> ! {
        let peer = cmdline::value(si.cmd_line_bytes(), "peer")
            .and_then(cmdline::parse_u64)
            .and_then(|p| u16::try_from(p).ok())
            .map(DomId);
        let Some(peer) = peer else {
            println!("hostile-xenstore: no peer= on the command line");
            pv_guest::poweroff()
        };
        if let Err(e) = events::init(si) {
            println!("hostile-xenstore: cannot set up event delivery: {e}");
            pv_guest::poweroff()
        }
        let Some((_, port)) = si.xenstore() else {
            println!("hostile-xenstore: no xenstore ring");
            pv_guest::poweroff()
        };
        let mut xs = match xenbus::connect(si) {
            Ok(xs) => xs,
            Err(e) => {
                println!("hostile-xenstore: no xenstore connection: {e}");
                pv_guest::poweroff()
            }
        };
        let own = match xs
            .read(TxId::NONE, "domid")
            .ok()
            .and_then(cmdline::parse_u64)
        {
            Some(d) => d,
            None => {
                println!("hostile-xenstore: cannot read my domid");
                pv_guest::poweroff()
            }
        };
        println!("hostile-xenstore: I am d{own}, the peer is d{}", peer.0);
        let mut c = Cases {
            run: 0,
            unexpected: 0,
        };
        let r = xs.write(TxId::NONE, "data/phase", b"start").and_then(|()| {
            let owner = Path::of(format_args!("n{own}"));
            let reader = Path::of(format_args!("r{}", peer.0));
            xenbus::set_perms(
                &mut xs,
                TxId::NONE,
                "data/phase",
                &[owner.as_str(), reader.as_str()],
            )
        });
        c.result("publish_phase", &r, "ok");
        wait_for_peer(&mut xs, peer);
        let r = xs.write(TxId::NONE, "data/phase", b"abusing");
        c.result("phase_abusing", &r, "ok");

        sizes(&mut xs, &mut c);
        nodes(&mut xs, &mut c);
        watches(&mut xs, &mut c);
        transactions(&mut xs, &mut c);
        permissions(&mut xs, &mut c, own, peer);
        missing_nul(&mut xs, &mut c);

        let r = xs.write(TxId::NONE, "data/phase", b"raw");
        c.result("phase_raw", &r, "ok");
        malformed(&xs, &mut c, EvtchnNotifier(port));

        println!(
            "hostile-xenstore: {} cases, {} unexpected",
            c.run, c.unexpected
        );
        pv_guest::poweroff()
    }

    /// Waits (bounded) until the peer published `data/ready`: its first round trips ran
    /// before the abuse starts.
    fn wait_for_peer(xs: &mut Client, peer: DomId) {
        let ready = Path::of(format_args!("/local/domain/{}/data/ready", peer.0));
        for _ in 0..MAX_POLLS {
            if xs.read(TxId::NONE, ready.as_str()).is_ok() {
                println!("hostile-xenstore: the peer is ready");
                return;
            }
            yield_cpu();
        }
        println!("hostile-xenstore: the peer never got ready");
    }

    /// A value above the record quota, a path above the length limit.
    fn sizes(xs: &mut Client, c: &mut Cases) {
        let r = xs.write(TxId::NONE, "data/big", &BIG);
        c.result("value_over_quota", &r, "ENOSPC");
        let r = xs.read(TxId::NONE, "data/big");
        c.result("value_over_quota_not_created", &r, "ENOENT");
        let r = xs.write(TxId::NONE, "data/small", &BIG[..100]);
        c.result("value_small", &r, "ok");

        let mut long = [b'a'; 5 + LONG_NAME];
        long[..5].copy_from_slice(b"data/");
        let long = core::str::from_utf8(&long).unwrap_or("data/a");
        let r = xs.write(TxId::NONE, long, b"1");
        c.result("path_over_limit", &r, "EINVAL");
        let r = xs.read(TxId::NONE, long);
        c.result("path_over_limit_read", &r, "EINVAL");
    }

    /// Nodes under `data/fill` until the node quota refuses one; then frees them.
    ///
    /// Every operation creates exactly one node: the directories `data/fill/d<j>` are
    /// made before their leaves, and hold at most [`PER_DIR`] children each, because a
    /// directory's record counts its children's names against the 2048-byte record
    /// quota (Xen does so too) and must not hit that one first.
    fn nodes(xs: &mut Client, c: &mut Cases) {
        let r = xs.mkdir(TxId::NONE, "data/fill");
        c.result("mkdir_fill", &r, "ok");
        let mut written = 0;
        let mut last = Ok(());
        for i in 0..MAX_NODES {
            let (dir, leaf) = (i / (PER_DIR + 1), i % (PER_DIR + 1));
            last = if leaf == 0 {
                xs.mkdir(
                    TxId::NONE,
                    Path::of(format_args!("data/fill/d{dir}")).as_str(),
                )
            } else {
                let p = Path::of(format_args!("data/fill/d{dir}/n{leaf}"));
                xs.write(TxId::NONE, p.as_str(), b"v")
            };
            if last.is_err() {
                break;
            }
            written += 1;
        }
        println!("hostile-xenstore: {written} nodes written before the quota");
        c.result("node_quota", &last, "ENOSPC");
        let r = xs.mkdir(TxId::NONE, "data/one-more");
        c.result("node_quota_mkdir", &r, "ENOSPC");
        // Overwriting an existing node creates none: still allowed.
        let r = xs.write(TxId::NONE, "data/fill/d0/n1", b"again");
        c.result("node_quota_overwrite", &r, "ok");
        let r = xs.rm(TxId::NONE, "data/fill");
        c.result("rm_fill", &r, "ok");
        let r = xs.write(TxId::NONE, "data/after-rm", b"1");
        c.result("node_after_rm", &r, "ok");

        // One directory with ever more children: its record outgrows the record quota
        // long before the node quota is reached.
        let r = xs.mkdir(TxId::NONE, "data/wide");
        c.result("mkdir_wide", &r, "ok");
        let mut children = 0;
        let mut last = Ok(());
        for i in 0..MAX_NODES {
            last = xs.write(
                TxId::NONE,
                Path::of(format_args!("data/wide/c{i}")).as_str(),
                b"",
            );
            if last.is_err() {
                break;
            }
            children += 1;
        }
        println!("hostile-xenstore: {children} children in one directory before the quota");
        c.result("directory_record_quota", &last, "ENOSPC");
        let r = xs.rm(TxId::NONE, "data/wide");
        c.result("rm_wide", &r, "ok");
    }

    /// Watches until the watch quota refuses one; then removes them.
    fn watches(xs: &mut Client, c: &mut Cases) {
        let mut set = 0;
        let mut last = Ok(());
        for i in 0..MAX_WATCHES {
            last = xs.watch("data/w", Path::of(format_args!("t{i}")).as_str());
            if last.is_err() {
                break;
            }
            set += 1;
        }
        println!("hostile-xenstore: {set} watches set before the quota");
        c.result("watch_quota", &last, "E2BIG");
        let mut removed = Ok(());
        for i in 0..set {
            removed = removed
                .and_then(|()| xs.unwatch("data/w", Path::of(format_args!("t{i}")).as_str()));
        }
        c.result("unwatch_all", &removed, "ok");
        // The events each new watch fired (some dropped by the client's buffer).
        for _ in 0..MAX_WATCHES {
            match xs.next_watch_event() {
                Ok(Some(_)) | Err(Errno::ENOBUFS) => {}
                _ => break,
            }
        }
        let r = xs.watch("data/w", "again");
        c.result("watch_after_unwatch", &r, "ok");
        let r = xs.unwatch("data/w", "again");
        c.result("unwatch_again", &r, "ok");
    }

    /// Transactions until the transaction quota refuses one; then aborts them.
    fn transactions(xs: &mut Client, c: &mut Cases) {
        let mut open = [TxId::NONE; MAX_TRANSACTIONS as usize];
        let mut started = 0;
        let mut last = Ok(TxId::NONE);
        for slot in open.iter_mut() {
            last = xs.transaction_start();
            match last {
                Ok(t) => *slot = t,
                Err(_) => break,
            }
            started += 1;
        }
        println!("hostile-xenstore: {started} transactions started before the quota");
        c.result("transaction_quota", &last, "ENOSPC");
        let mut ended = Ok(());
        for t in &open[..started] {
            ended = ended.and_then(|()| xs.transaction_end(*t, false));
        }
        c.result("transaction_abort_all", &ended, "ok");
        let r = xs.transaction_end(open[0], false);
        c.result("transaction_end_twice", &r, "ENOENT");
        let r = xs
            .transaction_start()
            .and_then(|t| xs.transaction_end(t, true));
        c.result("transaction_after_abort", &r, "ok");
    }

    /// Writes and reads the domain may not do.
    fn permissions(xs: &mut Client, c: &mut Cases, own: u64, peer: DomId) {
        let theirs = Path::of(format_args!("/local/domain/{}/data/intruder", peer.0));
        let r = xs.write(TxId::NONE, theirs.as_str(), b"1");
        c.result("write_peer_home", &r, "EACCES");
        let r = xs.rm(
            TxId::NONE,
            Path::of(format_args!("/local/domain/{}/data", peer.0)).as_str(),
        );
        c.result("rm_peer_data", &r, "EACCES");
        let r = xs.write(TxId::NONE, "name", b"evil");
        c.result("write_own_name", &r, "EACCES");
        let name = Path::of(format_args!("/local/domain/{own}/name"));
        let r = xs.write(TxId::NONE, name.as_str(), b"evil");
        c.result("write_own_name_absolute", &r, "EACCES");
        let r = xs.read(TxId::NONE, name.as_str()).map(drop);
        c.result("read_own_name", &r, "ok");
        let r = xs.read(TxId::NONE, "/local/domain/0/domid");
        c.result("read_dom0_node", &r, "EACCES");
        let r = xs.write(TxId::NONE, "/local/domain/0/data/x", b"1");
        c.result("write_dom0_home", &r, "EACCES");
    }

    /// Payloads without their terminating NUL (the client's path methods add it, so
    /// these go through `request`): `EINVAL`, and the connection stays.
    fn missing_nul(xs: &mut Client, c: &mut Cases) {
        let r = xs.request(XS_READ, TxId::NONE, &[b"data/phase"]).map(drop);
        c.result("read_without_nul", &r, "EINVAL");
        let r = xs.request(XS_WRITE, TxId::NONE, &[b"data/nonul"]).map(drop);
        c.result("write_without_nul", &r, "EINVAL");
        let r = xs.read(TxId::NONE, "data/phase").map(drop);
        c.result("read_after_bad_messages", &r, "ok");
    }

    /// Appends `data` to `req[]` (room is there: the ring is idle) and publishes it.
    fn raw_send(ring: &impl StoreRing, data: &[u8]) {
        let prod = ring.load_u32(XS_REQ_PROD_OFFSET);
        for (i, b) in data.iter().enumerate() {
            let at = xs_slot(prod.wrapping_add(i as u32));
            ring.store_u8(XS_REQ_OFFSET + at, *b);
        }
        fence(Ordering::Release);
        ring.store_u32(XS_REQ_PROD_OFFSET, prod.wrapping_add(data.len() as u32));
    }

    /// A header announcing more than `XENSTORE_PAYLOAD_MAX` bytes, raw: the connection
    /// is dropped; a valid request afterwards is never answered.
    fn malformed(xs: &Client, c: &mut Cases, mut notify: EvtchnNotifier) {
        let ring = *xs.ring();
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&XS_READ.to_le_bytes());
        hdr[4..8].copy_from_slice(&0xbadu32.to_le_bytes());
        let len = XENSTORE_PAYLOAD_MAX as u32 + 1;
        hdr[12..16].copy_from_slice(&len.to_le_bytes());
        raw_send(&ring, &hdr);
        notify.notify();
        let mut error = 0;
        for _ in 0..MAX_POLLS {
            error = ring.load_u32(ERROR_OFFSET);
            if error != 0 {
                break;
            }
            yield_cpu();
        }
        let mut got = Path::new();
        let _ = core::fmt::Write::write_fmt(&mut got, format_args!("{error}"));
        let mut want = Path::new();
        let _ = core::fmt::Write::write_fmt(&mut want, format_args!("{XENSTORE_ERROR_PROTO}"));
        c.check("oversized_header_error_field", got.as_str(), want.as_str());

        // A well-formed read now: no reply comes.
        let rsp_prod = ring.load_u32(XS_RSP_PROD_OFFSET);
        let mut req = [0u8; 16 + 6];
        req[0..4].copy_from_slice(&XS_READ.to_le_bytes());
        req[4..8].copy_from_slice(&0x600du32.to_le_bytes());
        req[12..16].copy_from_slice(&6u32.to_le_bytes());
        req[16..].copy_from_slice(b"domid\0");
        raw_send(&ring, &req);
        notify.notify();
        let mut answered = false;
        for _ in 0..SILENCE_POLLS {
            if ring.load_u32(XS_RSP_PROD_OFFSET) != rsp_prod {
                answered = true;
                break;
            }
            yield_cpu();
        }
        c.check(
            "read_after_drop",
            if answered { "reply" } else { "no-reply" },
            "no-reply",
        );
    }
}
