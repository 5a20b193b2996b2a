//! `hostile-grant`: abuses `GNTTABOP_map_grant_ref`, `GNTTABOP_unmap_grant_ref` and
//! `GNTTABOP_copy` with bad references, frames, addresses, domains, offsets and too many
//! mappings. It grants its own pages to itself (a domain may be its own grantee), so it
//! needs no peer. Each attempt prints `case <name>: got <status> want <status>` (the
//! per-element `GNTST_*` status, or the hypercall's errno when that fails, next to what
//! Xen 4.17 answers), then a normal map and copy must still work, and the guest ends
//! with `hostile-grant: N cases, M unexpected` and powers off.
//!
//! Two cases map at up to [`MAPTRACK_PAGES`] spare pages until the hypervisor refuses:
//! one entry over and over (Xen keeps 8-bit pin counters per entry and refuses the
//! 129th mapping of a kind with `GNTST_general_error`: `same entry mapped 128 times`),
//! then one entry per mapping until the maptrack is full (`GNTST_no_space`,
//! `maptrack full after <n> maps`: the limit is the hypervisor's, ours 256, Xen's
//! default far larger, so the test, not this guest, knows the count).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU32, Ordering};

    use pv_guest::paging::{kernel_l4, mfn_of};
    use pv_guest::{StartInfo, println};
    use test_guests::grant::{Table, copy, copy_from_gref, map, map_req, unmap, unmap_req};
    use xen_pv_abi::DomId;
    use xen_pv_abi::grant_table::{
        GNTMAP_READONLY, GNTST_NO_SPACE, GNTST_OKAY, GTF_PERMIT_ACCESS, GTF_READONLY, GnttabCopy,
        GnttabMapGrantRef, GnttabUnmapGrantRef,
    };

    test_guests::standard_notes!("hostile-grant");
    pv_guest::entry!(main);

    const PAGE: usize = 4096;
    /// Inside the hypervisor's range (its direct map): never a guest address.
    const HYPERVISOR_ADDRESS: u64 = 0xffff_8300_0010_0000;
    /// A user address with no page tables under it.
    const NO_L1_ADDRESS: u64 = 0x0000_1000_0000_0000;
    /// A domain that does not exist.
    const NO_DOMAIN: DomId = DomId(1000);
    /// A machine frame far beyond any RAM QEMU gives us.
    const OUT_OF_RAM_MFN: u64 = 0xff_ffff;
    /// A low machine frame: firmware or hypervisor, never a guest's.
    const LOW_MFN: u64 = 1;
    /// Spare pages for the maptrack case: more than our hypervisor's 256 mappings.
    const MAPTRACK_PAGES: usize = 300;

    /// The grant references used.
    const GOOD: u32 = 8;
    const NOT_PERMITTED: u32 = 9;
    const READONLY_ENTRY: u32 = 10;
    const OUT_OF_RAM: u32 = 11;
    const LOW: u32 = 12;
    const PAGE_TABLE: u32 = 13;
    const CACHE_ATTR: u32 = 14;
    /// Xen 4.17 maps RAM with the default caching whatever the entry asks: okay.
    const CACHE_ATTR_WANT: i64 = 0;
    /// `GTF_PWT`: an entry asking for write-through caching.
    const GTF_PWT: u16 = 1 << 5;
    /// The first of the [`MAPTRACK_PAGES`] entries of the maptrack case.
    const MANY_FIRST: u32 = 100;

    static CASES: AtomicU32 = AtomicU32::new(0);
    static UNEXPECTED: AtomicU32 = AtomicU32::new(0);

    #[repr(C, align(4096))]
    struct Page([u8; PAGE]);
    #[repr(C, align(4096))]
    struct Pages([u8; PAGE * MAPTRACK_PAGES]);

    /// Replaced by our grant frame's mapping.
    static mut TABLE_PAGE: Page = Page([0; PAGE]);
    /// The page granted to ourselves.
    static mut GRANTED: Page = Page([0x3c; PAGE]);
    /// Copy destination.
    static mut DEST: Page = Page([0; PAGE]);
    /// Where single maps go (its own mapping is replaced, then gone after the unmap).
    static mut MAP_AT: Page = Page([0; PAGE]);
    /// Another spare page.
    static mut OTHER: Page = Page([0; PAGE]);
    /// The maptrack case's spare pages.
    static mut SPARE: Pages = Pages([0; PAGE * MAPTRACK_PAGES]);

    /// Records one case: `got` and `want` are `GNTST_*` statuses or negated errnos.
    fn case(name: &str, got: i64, want: i64) {
        CASES.fetch_add(1, Ordering::Relaxed);
        if got != want {
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
        }
        println!("case {name}: got {got} want {want}");
    }

    /// A map element's outcome: the hypercall's errno if it failed, else the status.
    fn map_status(m: &mut GnttabMapGrantRef) -> i64 {
        match map(m) {
            0 => i64::from(m.status),
            e => e,
        }
    }

    fn unmap_status(u: &mut GnttabUnmapGrantRef) -> i64 {
        match unmap(u) {
            0 => i64::from(u.status),
            e => e,
        }
    }

    fn copy_status(c: GnttabCopy) -> i64 {
        let mut ops = [c];
        match copy(&mut ops) {
            0 => i64::from(ops[0].status),
            e => e,
        }
    }

    /// Maps `gref` of `dom` at `va` (flags `extra`) and, when that works, unmaps it
    /// again (a case of its own, `unmap_after_map`).
    fn map_case(name: &str, dom: DomId, gref: u32, va: u64, extra: u32, want: i64) {
        let mut m = map_req(dom, gref, va, extra);
        let got = map_status(&mut m);
        case(name, got, want);
        if got == 0 {
            let mut u = unmap_req(&m);
            case("unmap_after_map", unmap_status(&mut u), 0);
        }
    }

    /// Maps `gref(i)` read-only at page `i` of `spare` for i = 0, 1, … until a map fails
    /// or `max` are mapped, then unmaps them all (a failure there is a case of its
    /// own). Returns how many mapped and the last map's status (0 if none failed).
    fn map_many(me: DomId, gref: impl Fn(usize) -> u32, spare: u64, max: usize) -> (usize, i64) {
        let mut handles = [0u32; MAPTRACK_PAGES];
        let mut mapped = 0;
        let mut last = 0;
        while mapped < max.min(MAPTRACK_PAGES) {
            let va = spare + (mapped * PAGE) as u64;
            let mut m = map_req(me, gref(mapped), va, GNTMAP_READONLY);
            last = map_status(&mut m);
            if last != i64::from(GNTST_OKAY) {
                break;
            }
            handles[mapped] = m.handle;
            mapped += 1;
        }
        let mut failures = 0u32;
        for (i, &handle) in handles.iter().enumerate().take(mapped) {
            let mut u = GnttabUnmapGrantRef {
                host_addr: spare + (i * PAGE) as u64,
                handle,
                ..GnttabUnmapGrantRef::default()
            };
            if unmap_status(&mut u) != 0 {
                failures += 1;
            }
        }
        case("unmap_all_failures", i64::from(failures), 0);
        (mapped, last)
    }

    fn va_of<T>(p: *const T) -> u64 {
        p as u64
    }

    fn main(si: &'static StartInfo) -> ! {
        println!("hostile-grant: starting");
        // SAFETY: TABLE_PAGE is ours, never referenced, and used for nothing else.
        let t = match unsafe { Table::setup(va_of(&raw const TABLE_PAGE)) } {
            Ok(t) => t,
            Err(e) => {
                println!("hostile-grant: setup_table failed: {e:?}");
                pv_guest::poweroff()
            }
        };
        let granted = mfn_of(si, va_of(&raw const GRANTED));
        let dest = mfn_of(si, va_of(&raw const DEST));
        let Some(me) = t.own_domid(granted, dest) else {
            println!("hostile-grant: own domain id not found");
            pv_guest::poweroff()
        };
        println!("hostile-grant: I am d{}", me.0);
        let map_at = va_of(&raw const MAP_AT);
        let l4 = kernel_l4(si);
        t.set(GOOD, GTF_PERMIT_ACCESS, me, granted);
        t.set(NOT_PERMITTED, GTF_PERMIT_ACCESS, NO_DOMAIN, granted);
        t.set(
            READONLY_ENTRY,
            GTF_PERMIT_ACCESS | GTF_READONLY,
            me,
            granted,
        );
        t.set(OUT_OF_RAM, GTF_PERMIT_ACCESS, me, OUT_OF_RAM_MFN);
        t.set(LOW, GTF_PERMIT_ACCESS, me, LOW_MFN);
        t.set(PAGE_TABLE, GTF_PERMIT_ACCESS, me, l4);
        t.set(CACHE_ATTR, GTF_PERMIT_ACCESS | GTF_PWT, me, granted);

        // ---- map: flags, domains, references -------------------------------------
        let mut m = map_req(me, GOOD, map_at, 0);
        m.flags = 0;
        case("map_no_host_or_device_flag", map_status(&mut m), -3);
        map_case("map_no_domain", NO_DOMAIN, GOOD, map_at, 0, -2);
        // Xen looks the granter up by id: DOMID_SELF names no domain there.
        map_case("map_domid_self", DomId::SELF, GOOD, map_at, 0, -2);
        map_case("map_ref_512", me, 512, map_at, 0, -3);
        map_case("map_ref_max", me, u32::MAX, map_at, 0, -3);
        map_case(
            "map_entry_for_other_domain",
            me,
            NOT_PERMITTED,
            map_at,
            0,
            -1,
        );
        map_case("map_revoked_entry", me, 20, map_at, 0, -1);
        map_case(
            "map_readonly_entry_writable",
            me,
            READONLY_ENTRY,
            map_at,
            0,
            -1,
        );
        // ---- map: frames the granter does not own, page tables ---------------------
        map_case("map_frame_out_of_ram", me, OUT_OF_RAM, map_at, 0, -9);
        map_case(
            "map_frame_not_granters",
            me,
            LOW,
            map_at,
            GNTMAP_READONLY,
            -9,
        );
        map_case("map_page_table_writable", me, PAGE_TABLE, map_at, 0, -1);
        map_case(
            "map_page_table_readonly",
            me,
            PAGE_TABLE,
            va_of(&raw const OTHER),
            GNTMAP_READONLY,
            0,
        );
        map_case(
            "map_entry_with_cache_attribute",
            me,
            CACHE_ATTR,
            map_at,
            GNTMAP_READONLY,
            CACHE_ATTR_WANT,
        );
        // ---- map: host addresses ---------------------------------------------------
        map_case(
            "map_at_hypervisor_address",
            me,
            GOOD,
            HYPERVISOR_ADDRESS,
            0,
            -1,
        );
        map_case("map_where_no_l1", me, GOOD, NO_L1_ADDRESS, 0, -1);
        // ---- unmap -----------------------------------------------------------------
        let mut u = GnttabUnmapGrantRef {
            host_addr: map_at,
            handle: 9999,
            ..GnttabUnmapGrantRef::default()
        };
        case("unmap_bad_handle", unmap_status(&mut u), -4);
        let mut m = map_req(me, GOOD, map_at, 0);
        case("map_good", map_status(&mut m), 0);
        let mut wrong = unmap_req(&m);
        wrong.host_addr = va_of(&raw const DEST);
        case("unmap_wrong_host_addr", unmap_status(&mut wrong), -1);
        let mut u = unmap_req(&m);
        case("unmap_good", unmap_status(&mut u), 0);
        let mut u = unmap_req(&m);
        case("unmap_twice", unmap_status(&mut u), -4);
        // ---- copy ------------------------------------------------------------------
        let good = copy_from_gref(me, GOOD, dest, PAGE as u16);
        case(
            "copy_ref_512",
            copy_status(copy_from_gref(me, 512, dest, 8)),
            -3,
        );
        case(
            "copy_no_domain",
            copy_status(copy_from_gref(NO_DOMAIN, GOOD, dest, 8)),
            -2,
        );
        let mut c = good;
        c.dest.domid = me;
        // Only DOMID_SELF may name a frame, even the caller's own id.
        case("copy_frame_with_own_id", copy_status(c), -8);
        let mut c = good;
        c.len = 4097;
        case("copy_len_4097", copy_status(c), -10);
        let mut c = copy_from_gref(me, GOOD, dest, 2);
        c.source.offset = 4095;
        case("copy_source_offset_4095_len_2", copy_status(c), -10);
        let mut c = copy_from_gref(me, GOOD, dest, 16);
        c.dest.offset = 4088;
        case("copy_dest_offset_4088_len_16", copy_status(c), -10);
        let mut c = good;
        c.dest.u = l4;
        case("copy_to_page_table", copy_status(c), -1);
        let mut c = good;
        c.flags = 0;
        c.source.u = OUT_OF_RAM_MFN;
        c.source.domid = DomId::SELF;
        case("copy_from_frame_out_of_ram", copy_status(c), -9);
        let mut c = good;
        c.source.u = u64::from(READONLY_ENTRY);
        case("copy_from_readonly_entry", copy_status(c), 0);
        let mut c = good;
        c.flags |= xen_pv_abi::grant_table::GNTCOPY_DEST_GREF;
        c.dest.u = u64::from(READONLY_ENTRY);
        c.dest.domid = me;
        case("copy_to_readonly_entry", copy_status(c), -1);
        case("copy_good", copy_status(good), 0);
        // SAFETY: the last byte of our own page, read through a raw pointer.
        let last = unsafe { (&raw const DEST).cast::<u8>().add(PAGE - 1).read_volatile() };
        case("copy_good_copied", i64::from(last), 0x3c);

        // ---- one entry mapped over and over: Xen's 8-bit pin counter ------------------
        let spare = va_of(&raw const SPARE);
        let (mapped, last) = map_many(me, |_| GOOD, spare, MAPTRACK_PAGES);
        println!("same entry mapped {mapped} times");
        case("map_same_entry_129th", last, -1);
        // ---- maptrack exhaustion: one entry per mapping ----------------------------
        for i in 0..MAPTRACK_PAGES as u32 {
            t.set(MANY_FIRST + i, GTF_PERMIT_ACCESS, me, granted);
        }
        let (mapped, last) = map_many(me, |i| MANY_FIRST + i as u32, spare, MAPTRACK_PAGES);
        println!("maptrack full after {mapped} maps");
        case("map_maptrack_full", last, i64::from(GNTST_NO_SPACE));
        for i in 0..MAPTRACK_PAGES as u32 {
            t.clear(MANY_FIRST + i);
        }
        // The entry's status bits are gone with the last mapping.
        case("entry_idle_after_unmaps", i64::from(t.flags(GOOD)), 1);

        // ---- a normal map still works ----------------------------------------------
        let mut m = map_req(me, GOOD, map_at, GNTMAP_READONLY);
        case("map_after_all_that", map_status(&mut m), 0);
        // SAFETY: MAP_AT now shows GRANTED's frame (read-only); a volatile byte read.
        let seen = unsafe { (map_at as *const u8).add(100).read_volatile() };
        case("mapped_page_reads_granted", i64::from(seen), 0x3c);
        let mut u = unmap_req(&m);
        case("unmap_after_all_that", unmap_status(&mut u), 0);
        for gref in [
            GOOD,
            NOT_PERMITTED,
            READONLY_ENTRY,
            OUT_OF_RAM,
            LOW,
            PAGE_TABLE,
        ] {
            t.clear(gref);
        }

        println!(
            "hostile-grant: {} cases, {} unexpected",
            CASES.load(Ordering::Relaxed),
            UNEXPECTED.load(Ordering::Relaxed)
        );
        println!("hostile-grant: still alive");
        pv_guest::poweroff()
    }
}
