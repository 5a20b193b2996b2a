//! `grant-peer`: two domains share a page through a grant, and the granter ends while
//! the page is mapped.
//!
//! * `role=granter peer=<id>`: grants a page holding [`MESSAGE`] to the peer (grant
//!   reference [`GREF`]), waits until the peer has mapped it (the hypervisor sets
//!   `GTF_reading` in the entry), then crashes itself with `cli`.
//! * `role=mapper peer=<id>`: maps the peer's grant read-only (retrying until the entry
//!   exists), reads the page, waits until the granter is gone (`GNTTABOP_query_size` on
//!   it answers `GNTST_bad_domain`), reads the page again, unmaps it, checks that a new
//!   map of the dead domain's grant is refused, and powers off.
//!
//! Every step prints a line the test asserts; waits are bounded by [`MAX_YIELDS`].
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::paging::mfn_of;
    use pv_guest::{StartInfo, bytes_str, cmdline, println};
    use test_guests::grant::{Table, map, map_req, op_raw, unmap, unmap_req, yield_cpu};
    use xen_pv_abi::DomId;
    use xen_pv_abi::grant_table::{
        GNTMAP_READONLY, GNTST_BAD_DOMAIN, GNTST_OKAY, GNTTABOP_QUERY_SIZE, GTF_PERMIT_ACCESS,
        GTF_READING, GTF_READONLY, GnttabQuerySize,
    };

    test_guests::standard_notes!("grant-peer");
    pv_guest::entry!(main);

    const PAGE: usize = 4096;
    const GREF: u32 = 8;
    const MESSAGE: &[u8] = b"granted page of the granter";
    /// Yields one wait may take.
    const MAX_YIELDS: u32 = 200_000;

    #[repr(C, align(4096))]
    struct Page([u8; PAGE]);

    /// Replaced by our grant frame's mapping (granter).
    static mut TABLE_PAGE: Page = Page([0; PAGE]);
    /// The page granted (granter); also the own-id probe's scratch frame.
    static mut SHARED: Page = Page([0; PAGE]);
    /// Where the mapper maps the grant.
    static mut MAP_AT: Page = Page([0; PAGE]);

    fn main(si: &'static StartInfo) -> ! {
        let cmd = si.cmd_line_bytes();
        let peer = cmdline::value(cmd, "peer")
            .and_then(cmdline::parse_u64)
            .and_then(|p| u16::try_from(p).ok())
            .map(DomId);
        let Some(peer) = peer else {
            println!("grant-peer: no peer= on the command line");
            pv_guest::poweroff()
        };
        match cmdline::value(cmd, "role") {
            Some(b"granter") => granter(si, peer),
            Some(b"mapper") => mapper(peer),
            other => println!("grant-peer: unknown role {:?}", other.map(bytes_str)),
        }
        pv_guest::poweroff()
    }

    fn granter(si: &StartInfo, peer: DomId) {
        let shared = (&raw mut SHARED).cast::<u8>();
        for (i, b) in MESSAGE.iter().enumerate() {
            // SAFETY: our own page, written through a raw pointer; i < 4096.
            unsafe { shared.add(i).write_volatile(*b) };
        }
        // SAFETY: TABLE_PAGE is ours, never referenced, and used for nothing else.
        let t = match unsafe { Table::setup((&raw const TABLE_PAGE) as u64) } {
            Ok(t) => t,
            Err(e) => {
                println!("grant-peer: setup_table failed: {e:?}");
                return;
            }
        };
        let frame = mfn_of(si, shared as u64);
        t.set(GREF, GTF_PERMIT_ACCESS | GTF_READONLY, peer, frame);
        println!("grant-peer: granted ref {GREF} to d{}", peer.0);
        let mut yields = 0;
        while t.flags(GREF) & GTF_READING == 0 {
            if yields == MAX_YIELDS {
                println!("grant-peer: the peer never mapped the grant");
                return;
            }
            yield_cpu();
            yields += 1;
        }
        println!("grant-peer: the peer maps the page; crashing now");
        // SAFETY: `cli` touches no memory; at CPL3 it faults (#GP) and the hypervisor
        // crashes this domain, which is the point.
        unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
        println!("grant-peer: survived cli");
    }

    /// The page at `va` starts with MESSAGE.
    fn reads_message(va: u64) -> bool {
        MESSAGE.iter().enumerate().all(|(i, b)| {
            // SAFETY: `va` maps the granted page read-only; volatile byte reads.
            unsafe { (va as *const u8).add(i).read_volatile() == *b }
        })
    }

    /// `GNTTABOP_query_size` of another domain: its status (`GNTST_permission_denied`
    /// while it runs, `GNTST_bad_domain` once it is gone).
    fn query_status(dom: DomId) -> i16 {
        let mut q = GnttabQuerySize {
            dom,
            ..GnttabQuerySize::default()
        };
        // SAFETY: one live query_size struct.
        let r = unsafe { op_raw(GNTTABOP_QUERY_SIZE, &mut q, 1) };
        if r != 0 { r as i16 } else { q.status }
    }

    fn mapper(peer: DomId) {
        let va = (&raw const MAP_AT) as u64;
        let mut yields = 0;
        let m = loop {
            let mut m = map_req(peer, GREF, va, GNTMAP_READONLY);
            if map(&mut m) == 0 && m.status == GNTST_OKAY {
                break m;
            }
            if yields == MAX_YIELDS {
                println!("grant-peer: could not map the grant: status {}", m.status);
                return;
            }
            yield_cpu();
            yields += 1;
        };
        println!("grant-peer: mapped d{} ref {GREF}", peer.0);
        println!("grant-peer: reads the message: {}", reads_message(va));
        let mut yields = 0;
        while query_status(peer) != GNTST_BAD_DOMAIN {
            if yields == MAX_YIELDS {
                println!("grant-peer: the granter never went away");
                return;
            }
            yield_cpu();
            yields += 1;
        }
        println!("grant-peer: the granter is gone");
        println!("grant-peer: still reads the message: {}", reads_message(va));
        let mut u = unmap_req(&m);
        let r = unmap(&mut u);
        println!("grant-peer: unmap: ret {r} status {}", u.status);
        let mut again = map_req(peer, GREF, va, GNTMAP_READONLY);
        let r = map(&mut again);
        println!("grant-peer: map again: ret {r} status {}", again.status);
    }
}
