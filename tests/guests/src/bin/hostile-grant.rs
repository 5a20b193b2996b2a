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
//! `maptrack full after <n> maps`: the limit is the domain's; with `maptrack_limit=1`
//! on the command line the guest expects one frame of 256 mappings, else Xen's default
//! of 1024 frames, which its 300 maps never fill).
//!
//! Then version 2: `get_status_frames` with too many frames, a list in the hypervisor's
//! range, an absent domain and (as a domU only) the control domain; the status frame
//! mapped writable and pinned as an L1; an entry's status word zeroed while it is
//! mapped; a sub-page entry whose window runs past the page; transitive entries to
//! themselves and through an absent domain; `set_version 1` while an entry or the
//! status frame is mapped; and back to version 1 for the normal use at the end.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU32, Ordering};

    use pv_guest::paging::{kernel_l4, mfn_of};
    use pv_guest::{StartInfo, println};
    use test_guests::grant::{
        PTE_RW, Table, copy, copy_from_gref, map, map_req, op_raw, unmap, unmap_req, yield_cpu,
    };
    use xen_pv_abi::DomId;
    use xen_pv_abi::generated::call::mmuext_op;
    use xen_pv_abi::grant_table::{
        GNTMAP_READONLY, GNTST_NO_SPACE, GNTST_OKAY, GNTTABOP_GET_STATUS_FRAMES,
        GNTTABOP_SET_VERSION, GTF_PERMIT_ACCESS, GTF_READONLY, GTF_SUB_PAGE, GTF_TRANSITIVE,
        GnttabCopy, GnttabGetStatusFrames, GnttabMapGrantRef, GnttabSetVersion,
        GnttabUnmapGrantRef, GrantEntryV2,
    };
    use xen_pv_abi::hypercall::{UVMF_INVLPG, update_va_mapping};
    use xen_pv_abi::mmu::{MMUEXT_PIN_L1_TABLE, MmuextOp};

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
    /// Yields before powering off (see the end of `main`).
    const RELAY_YIELDS: usize = 50;
    /// v2 cases: a sub-page entry and two transitive ones.
    const SUB_PAGE: u32 = 15;
    const TRANS_SELF: u32 = 16;
    const TRANS_ABSENT: u32 = 17;
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
    /// Where the status frame is mapped (its own frame is mapped back afterwards).
    static mut STATUS_AT: Page = Page([0; PAGE]);
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

    /// `GNTTABOP_set_version`: the errno, else 0.
    fn set_version(version: u32) -> i64 {
        let mut op = GnttabSetVersion { version };
        // SAFETY: one live set_version struct.
        unsafe { op_raw(GNTTABOP_SET_VERSION, &mut op, 1) }
    }

    /// `GNTTABOP_get_status_frames` of `dom` into `list`: the errno, else the status.
    fn get_status_frames(dom: DomId, nr_frames: u32, list: u64) -> i64 {
        let mut op = GnttabGetStatusFrames {
            nr_frames,
            dom,
            frame_list: list,
            ..GnttabGetStatusFrames::default()
        };
        // SAFETY: one live struct; `list` is either room for `nr_frames` MFNs of ours
        // or an address the hypervisor must refuse (or a count it must refuse first).
        match unsafe { op_raw(GNTTABOP_GET_STATUS_FRAMES, &mut op, 1) } {
            0 => i64::from(op.status),
            e => e,
        }
    }

    /// One `mmuext_op` on ourselves: the errno, else 0.
    fn mmuext(cmd: u32, arg1: u64) -> i64 {
        let op = MmuextOp {
            cmd,
            pad: 0,
            arg1,
            arg2: 0,
        };
        let mut done = 0u32;
        // SAFETY: one live op; pinning a frame that is no page table must be refused.
        unsafe { mmuext_op(&op, 1, &mut done, u32::from(DomId::SELF.0)) }
    }

    /// Points the page at `va` at machine frame `mfn` (writable): the errno, else 0.
    fn remap(va: u64, mfn: u64) -> i64 {
        // SAFETY: `va` is one of our spare pages, which nothing references.
        match unsafe { update_va_mapping(va, (mfn << 12) | PTE_RW, UVMF_INVLPG) } {
            Ok(()) => 0,
            Err(e) => e.to_ret(),
        }
    }

    /// Writes v2 entry `gref` in our (single) grant frame mapped at `TABLE_PAGE`:
    /// the rest first, the flags last.
    fn set_v2(gref: u32, e: GrantEntryV2) {
        let at = (&raw const TABLE_PAGE as u64 + u64::from(gref) * 16) as *mut u64;
        let word0 = u64::from(e.flags) | u64::from(e.domid.0) << 16 | u64::from(e.word1) << 32;
        // SAFETY: TABLE_PAGE maps our grant frame, 256 v2 entries; gref < 256.
        unsafe {
            at.add(1).write_volatile(e.word2);
            at.write_volatile(word0 & !0xffff);
            at.write_volatile(word0);
        }
    }

    /// The v2 cases: status frames (too many, a bad list, another domain's, made a page
    /// table, scribbled on while an entry is mapped), sub-page and transitive entries,
    /// and switching back to v1 while a status frame or an entry is still in use.
    fn v2_cases(si: &StartInfo, t: &Table, me: DomId, granted: u64, dest: u64) {
        case("set_version_2", set_version(2), 0);
        let mut list = [0u64; 2];
        let list_va = list.as_mut_ptr() as u64;
        case("status_frames_one", get_status_frames(me, 1, list_va), 0);
        let status_mfn = list[0];
        // Room for the list is there (the spare pages): the count alone is refused.
        let spare = va_of(&raw const SPARE);
        case(
            "status_frames_too_many",
            get_status_frames(me, 1000, spare),
            -1,
        );
        case(
            "status_frames_list_in_hypervisor",
            get_status_frames(me, 1, HYPERVISOR_ADDRESS),
            -14,
        );
        case(
            "status_frames_of_absent_domain",
            get_status_frames(NO_DOMAIN, 1, list_va),
            -2,
        );
        if me != DomId(0) {
            // A domU asking about the control domain (on Xen this guest is dom0).
            case(
                "status_frames_of_other_domain",
                get_status_frames(DomId(0), 1, list_va),
                -8,
            );
        }
        // Our status frame mapped writable in one of our pages (Xen shares it so).
        let status_va = va_of(&raw const STATUS_AT);
        let status_home = mfn_of(si, status_va);
        case("map_status_frame_writable", remap(status_va, status_mfn), 0);
        case(
            "pin_status_frame_as_l1",
            mmuext(MMUEXT_PIN_L1_TABLE, status_mfn),
            -22,
        );
        let status_word = |gref: u32| (status_va + u64::from(gref) * 2) as *mut u16;
        // A mapped entry: GTF_reading in its status word; we scribble it away.
        set_v2(
            GOOD,
            GrantEntryV2::full_page(GTF_PERMIT_ACCESS, me, granted),
        );
        let map_at = va_of(&raw const MAP_AT);
        let mut m = map_req(me, GOOD, map_at, GNTMAP_READONLY);
        case("v2_map_good", map_status(&mut m), 0);
        // SAFETY: STATUS_AT maps our status frame; entry GOOD's word is in it.
        let st = unsafe { status_word(GOOD).read_volatile() };
        case("v2_status_reading_while_mapped", i64::from(st), 8);
        // SAFETY: as above; the hypervisor must not trust what we write there.
        unsafe { status_word(GOOD).write_volatile(0) };
        case("set_version_1_while_entry_mapped", set_version(1), -16);
        let mut u = unmap_req(&m);
        case("v2_unmap_after_scribble", unmap_status(&mut u), 0);
        // SAFETY: as above.
        let st = unsafe { status_word(GOOD).read_volatile() };
        case("v2_status_idle_after_unmap", i64::from(st), 0);
        // A sub-page entry whose window runs past the page end.
        set_v2(
            SUB_PAGE,
            GrantEntryV2::sub_page(GTF_PERMIT_ACCESS | GTF_SUB_PAGE, me, granted, 4000, 200),
        );
        let mut c = copy_from_gref(me, SUB_PAGE, dest, 96);
        c.source.offset = 4000;
        c.dest.offset = 4000;
        case("copy_sub_page_past_page_end_inside", copy_status(c), 0);
        let mut c = copy_from_gref(me, SUB_PAGE, dest, 8);
        c.source.offset = 3992;
        case("copy_sub_page_before_window", copy_status(c), -1);
        let mut c = copy_from_gref(me, SUB_PAGE, dest, 200);
        c.source.offset = 4000;
        case("copy_sub_page_whole_window", copy_status(c), -10);
        map_case(
            "map_sub_page_entry",
            me,
            SUB_PAGE,
            map_at,
            GNTMAP_READONLY,
            -1,
        );
        // Transitive entries: to itself, and through a domain that does not exist.
        set_v2(
            TRANS_SELF,
            GrantEntryV2::transitive(GTF_TRANSITIVE, me, me, TRANS_SELF),
        );
        set_v2(
            TRANS_ABSENT,
            GrantEntryV2::transitive(GTF_TRANSITIVE, me, NO_DOMAIN, GOOD),
        );
        let c = copy_from_gref(me, TRANS_SELF, dest, 8);
        case("copy_transitive_to_itself", copy_status(c), -1);
        let c = copy_from_gref(me, TRANS_ABSENT, dest, 8);
        case("copy_transitive_via_absent_domain", copy_status(c), -1);
        map_case(
            "map_transitive_entry",
            me,
            TRANS_SELF,
            map_at,
            GNTMAP_READONLY,
            -1,
        );
        // Back to v1: refused while the status frame is mapped, fine once it is not.
        case("set_version_1_while_status_mapped", set_version(1), -16);
        case("unmap_status_frame", remap(status_va, status_home), 0);
        case("set_version_1", set_version(1), 0);
        case("v1_entry_cleared", i64::from(t.flags(GOOD)), 0);
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
        // With `maptrack_limit=1` (one maptrack frame, 256 mappings) the maps run out;
        // with the default 1024 frames (Xen's and ours) all of them succeed.
        let limited = pv_guest::cmdline::value(si.cmd_line_bytes(), "maptrack_limit")
            .is_some_and(|v| v == b"1");
        let want = if limited {
            i64::from(GNTST_NO_SPACE)
        } else {
            0
        };
        case("map_maptrack_full", last, want);
        for i in 0..MAPTRACK_PAGES as u32 {
            t.clear(MANY_FIRST + i);
        }
        // The entry's status bits are gone with the last mapping.
        case("entry_idle_after_unmaps", i64::from(t.flags(GOOD)), 1);

        // ---- grant table v2: status frames, sub-page and transitive entries -------
        v2_cases(si, &t, me, granted, dest);
        // Version 1 again: the table beyond the reserved entries was cleared.
        t.set(GOOD, GTF_PERMIT_ACCESS, me, granted);
        t.set(NOT_PERMITTED, GTF_PERMIT_ACCESS, NO_DOMAIN, granted);

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
        // Let the control domain relay our console ring before the hypervisor's
        // shutdown line: a line it relays in two pieces around that would be split.
        for _ in 0..RELAY_YIELDS {
            yield_cpu();
        }
        pv_guest::poweroff()
    }
}
