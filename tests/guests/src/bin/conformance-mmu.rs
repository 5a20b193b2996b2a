//! `conformance-mmu`: the PV MMU, descriptor tables, traps and the small per-vCPU and
//! information hypercalls, one behaviour per case, each against Xen 4.17's answer (see
//! `test_guests::conformance`). Runs as dom0 (on Xen and on ours), so privileged answers
//! are dom0's.
//!
//! Page tables are built in [`POOL`], bss pages of the kernel image: a page is filled
//! while mapped writable, made read-only with `update_va_mapping`, then pinned; after a
//! case it is unpinned and mapped writable again, so each case starts from clean pages.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use core::arch::{asm, naked_asm};
    use core::sync::atomic::{AtomicU64, Ordering};

    use pv_guest::{StartInfo, VIRT_BASE};
    use test_guests::conformance::{Suite, hc};
    use xen_pv_abi::nr;

    test_guests::standard_notes!("conformance-mmu");
    pv_guest::entry!(main);

    const PAGE: u64 = 4096;
    const DOMID_SELF: u64 = 0x7ff0;
    /// A domain that does not exist.
    const NO_DOMAIN: u64 = 1000;
    /// Inside the hypervisor's range (its direct map): never a guest address.
    const HYPERVISOR_ADDRESS: u64 = 0xffff_8300_0010_0000;
    /// A user address with no page tables under it.
    const NO_L1_ADDRESS: u64 = 0x0000_1000_0000_0000;
    /// A machine frame far beyond any RAM QEMU gives us.
    const OUT_OF_RAM_MFN: u64 = 0xff_ffff;

    const EPERM: i64 = -1;
    const ENOENT: i64 = -2;
    const ESRCH: i64 = -3;
    const EFAULT: i64 = -14;
    const EBUSY: i64 = -16;
    const EEXIST: i64 = -17;
    const EINVAL: i64 = -22;
    const ENOSYS: i64 = -38;
    const ENXIO: i64 = -6;
    const ENODEV: i64 = -19;
    const EOPNOTSUPP: i64 = -95;

    /// PTE bits.
    const P: u64 = 1;
    const RW: u64 = 2;
    const US: u64 = 4;
    const PSE: u64 = 0x80;
    const ADDR: u64 = 0x000f_ffff_ffff_f000;

    /// mmuext commands.
    const PIN_L1: u64 = 0;
    const PIN_L2: u64 = 1;
    const PIN_L3: u64 = 2;
    const PIN_L4: u64 = 3;
    const UNPIN: u64 = 4;
    const NEW_BASEPTR: u64 = 5;
    const TLB_FLUSH_LOCAL: u64 = 6;
    const INVLPG_LOCAL: u64 = 7;
    const TLB_FLUSH_MULTI: u64 = 8;
    const INVLPG_MULTI: u64 = 9;
    const TLB_FLUSH_ALL: u64 = 10;
    const INVLPG_ALL: u64 = 11;
    const FLUSH_CACHE: u64 = 12;
    const SET_LDT: u64 = 13;
    const NEW_USER_BASEPTR: u64 = 15;
    const CLEAR_PAGE: u64 = 16;
    const COPY_PAGE: u64 = 17;
    const MARK_SUPER: u64 = 19;
    const FLUSH_CACHE_GLOBAL: u64 = 18;

    /// update_va_mapping flags.
    const UVMF_NONE: u64 = 0;
    const UVMF_TLB_FLUSH: u64 = 1;
    const UVMF_INVLPG: u64 = 2;
    const UVMF_ALL: u64 = 4;

    #[repr(C, align(4096))]
    struct Pages([[u64; 512]; POOL_PAGES]);
    const POOL_PAGES: usize = 16;
    /// Pages the cases turn into page tables, descriptor tables and data.
    static mut POOL: Pages = Pages([[0; 512]; POOL_PAGES]);

    /// Pool roles.
    const L1A: usize = 0;
    const L2A: usize = 2;
    const L3A: usize = 3;
    const L4A: usize = 4;
    const DATA: usize = 5;
    const GDT: usize = 6;
    const LDT: usize = 7;
    const DATA2: usize = 8;

    static SI: AtomicU64 = AtomicU64::new(0);

    fn si() -> &'static StartInfo {
        // SAFETY: set once in main to the start_info the runtime handed us ('static).
        unsafe { &*(SI.load(Ordering::Relaxed) as *const StartInfo) }
    }

    fn p2m(pfn: u64) -> u64 {
        // SAFETY: the p2m list is mapped with nr_pages entries; callers pass ours.
        unsafe {
            (si().mfn_list as *const u64)
                .add(pfn as usize)
                .read_volatile()
        }
    }

    fn mfn_of(va: u64) -> u64 {
        p2m((va - VIRT_BASE) / PAGE)
    }

    fn va(i: usize) -> u64 {
        (&raw const POOL) as u64 + i as u64 * PAGE
    }

    fn mfn(i: usize) -> u64 {
        mfn_of(va(i))
    }

    fn maddr(i: usize) -> u64 {
        mfn(i) << 12
    }

    fn write(i: usize, idx: usize, val: u64) {
        // SAFETY: pool page i is mapped writable when the cases call this; idx < 512.
        unsafe { (va(i) as *mut u64).add(idx).write_volatile(val) }
    }

    fn read(i: usize, idx: usize) -> u64 {
        // SAFETY: pool page i is always mapped (read-only or writable); idx < 512.
        unsafe { (va(i) as *const u64).add(idx).read_volatile() }
    }

    fn zero(i: usize) {
        for idx in 0..512 {
            write(i, idx, 0);
        }
    }

    fn mmu_batch(reqs: &[[u64; 2]], done: &mut u32, dom: u64) -> i64 {
        hc(
            nr::MMU_UPDATE,
            [
                reqs.as_ptr() as u64,
                reqs.len() as u64,
                done as *mut u32 as u64,
                dom,
                0,
            ],
        )
    }

    fn mmu(ptr: u64, val: u64) -> i64 {
        let mut done = 0;
        mmu_batch(&[[ptr, val]], &mut done, DOMID_SELF)
    }

    fn ext_dom(cmd: u64, arg1: u64, arg2: u64, dom: u64) -> i64 {
        let op = [cmd, arg1, arg2];
        hc(nr::MMUEXT_OP, [op.as_ptr() as u64, 1, 0, dom, 0])
    }

    fn ext(cmd: u64, arg1: u64) -> i64 {
        ext_dom(cmd, arg1, 0, DOMID_SELF)
    }

    fn uvm(va: u64, pte: u64, flags: u64) -> i64 {
        hc(nr::UPDATE_VA_MAPPING, [va, pte, flags, 0, 0])
    }

    fn ro(i: usize) -> i64 {
        uvm(va(i), maddr(i) | P | US, UVMF_INVLPG)
    }

    fn rw(i: usize) -> i64 {
        uvm(va(i), maddr(i) | P | RW | US, UVMF_INVLPG)
    }

    /// Back to a clean writable zeroed page (whatever the case left).
    fn reset(i: usize) {
        let _ = ext(UNPIN, mfn(i));
        let _ = rw(i);
        zero(i);
    }

    /// Read-only then pinned with `pin`: the pin's answer.
    fn ro_pin(i: usize, pin: u64) -> i64 {
        let r = ro(i);
        if r != 0 {
            return 1000 + r;
        }
        ext(pin, mfn(i))
    }

    fn l4_mfn() -> u64 {
        mfn_of(si().pt_base)
    }

    /// A frame that is RAM but none of ours: past every frame of our p2m.
    fn free_frame() -> u64 {
        let si = si();
        let mut max = 0;
        for pfn in 0..si.nr_pages {
            max = max.max(p2m(pfn));
        }
        let mut f = max + 1;
        let grant = test_guests::grant_frame();
        while f == si.shared_info >> 12 || Some(f) == grant {
            f += 1;
        }
        f
    }

    // ---- MMU: page-type rules -------------------------------------------------------

    fn mmu_cases(s: &mut Suite) {
        s.area("mmu");
        // L1.
        reset(L1A);
        s.check("pin_l1_while_writable", ext(PIN_L1, mfn(L1A)), EINVAL);
        s.check("pin_l1_empty", ro_pin(L1A, PIN_L1), 0);
        s.check("pin_l1_twice", ext(PIN_L1, mfn(L1A)), EINVAL);
        s.check("pin_l1_as_l2_while_l1", ext(PIN_L2, mfn(L1A)), EINVAL);
        s.check("map_pinned_l1_writable", rw(L1A), EBUSY);
        s.check("map_pinned_l1_readonly", ro(L1A), 0);
        s.check("unpin_l1", ext(UNPIN, mfn(L1A)), 0);
        s.check("unpin_not_pinned", ext(UNPIN, mfn(L1A)), EINVAL);
        s.check("map_writable_after_unpin", rw(L1A), 0);
        reset(L1A);
        // An L1 mapping a page of ours writable, then one mapping itself.
        write(L1A, 0, maddr(DATA) | P | RW | US);
        s.check("pin_l1_mapping_data_writable", ro_pin(L1A, PIN_L1), 0);
        s.check("data_page_still_writable", rw(DATA), 0);
        reset(L1A);
        write(L1A, 0, maddr(L1A) | P | RW | US);
        s.check("pin_l1_mapping_itself_writable", ro_pin(L1A, PIN_L1), EBUSY);
        reset(L1A);
        write(L1A, 0, maddr(L1A) | P | US);
        s.check("pin_l1_mapping_itself_readonly", ro_pin(L1A, PIN_L1), 0);
        reset(L1A);
        // An L1 mapping a live page table writable.
        write(L1A, 0, (l4_mfn() << 12) | P | RW | US);
        s.check(
            "pin_l1_mapping_live_l4_writable",
            ro_pin(L1A, PIN_L1),
            EBUSY,
        );
        reset(L1A);
        write(L1A, 0, (free_frame() << 12) | P | US);
        s.check("pin_l1_mapping_free_frame", ro_pin(L1A, PIN_L1), EBUSY);
        reset(L1A);
        // Bit 51 is an address bit: a frame past the machine's, which not even dom0
        // may map as I/O memory.
        write(L1A, 0, maddr(DATA) | P | US | (1 << 51));
        s.check("pin_l1_address_bit_51", ro_pin(L1A, PIN_L1), EPERM);
        reset(L1A);

        // L2 over an L1: type references.
        write(L2A, 0, maddr(L1A) | P | RW | US);
        s.check("pin_l2_over_writable_l1", ro_pin(L2A, PIN_L2), EINVAL);
        let _ = ro(L1A);
        s.check("pin_l2_over_l1", ext(PIN_L2, mfn(L2A)), 0);
        s.check("map_l1_under_pinned_l2_writable", rw(L1A), EBUSY);
        s.check("pin_l1_under_l2_as_l1", ro_pin(L1A, PIN_L1), 0);
        s.check("unpin_l1_under_l2", ext(UNPIN, mfn(L1A)), 0);
        s.check("unpin_l2", ext(UNPIN, mfn(L2A)), 0);
        // Unpinning the L2 dropped the L1's type reference: writable again.
        s.check("l1_writable_after_l2_unpin", rw(L1A), 0);
        reset(L2A);
        reset(L1A);
        // XSA-148: a PV guest may not have L2 superpages.
        write(L2A, 0, maddr(DATA) | P | RW | US | PSE);
        s.check("xsa148_l2_superpage", ro_pin(L2A, PIN_L2), EINVAL);
        reset(L2A);
        // Linear (self) maps: read-only allowed, writable refused.
        write(L2A, 3, maddr(L2A) | P | US);
        s.check("pin_l2_self_map_readonly", ro_pin(L2A, PIN_L2), 0);
        reset(L2A);
        write(L2A, 3, maddr(L2A) | P | RW | US);
        s.check("pin_l2_self_map_writable", ro_pin(L2A, PIN_L2), EINVAL);
        reset(L2A);

        // L3.
        write(L3A, 0, maddr(L2A) | P | RW | US);
        let _ = ro(L2A);
        s.check("pin_l3_over_empty_l2", ro_pin(L3A, PIN_L3), 0);
        s.check("unpin_l3", ext(UNPIN, mfn(L3A)), 0);
        reset(L3A);
        reset(L2A);
        write(L3A, 0, maddr(DATA) | P | RW | US | PSE);
        s.check("pin_l3_superpage", ro_pin(L3A, PIN_L3), EINVAL);
        reset(L3A);
        // XSA-240: linear page tables must be read-only at every level.
        write(L3A, 5, maddr(L3A) | P | RW | US);
        s.check("xsa240_l3_writable_self_map", ro_pin(L3A, PIN_L3), EINVAL);
        reset(L3A);

        // L4.
        s.check("pin_l4_empty", ro_pin(L4A, PIN_L4), 0);
        s.check("unpin_l4", ext(UNPIN, mfn(L4A)), 0);
        reset(L4A);
        // Guest values in the hypervisor's slots (256..272) are not the guest's to set.
        write(L4A, 260, maddr(DATA) | P | RW | US);
        s.check("pin_l4_junk_in_xen_slot", ro_pin(L4A, PIN_L4), 0);
        let slot = read(L4A, 260);
        s.check_bool(
            "xen_slot_replaced",
            slot != (maddr(DATA) | P | RW | US),
            true,
        );
        reset(L4A);
        write(L4A, 0, maddr(L4A) | P | RW | US);
        s.check("pin_l4_self_map_writable", ro_pin(L4A, PIN_L4), EINVAL);
        reset(L4A);
        s.check("pin_l4_writable_page", ext(PIN_L4, mfn(DATA)), EINVAL);
        s.check(
            "pin_foreign_domain",
            ext_dom(PIN_L1, mfn(L1A), 0, NO_DOMAIN),
            ESRCH,
        );
        s.check("pin_frame_out_of_ram", ext(PIN_L1, OUT_OF_RAM_MFN), EINVAL);
    }

    // ---- mmu_update commands --------------------------------------------------------

    fn mmu_update_cases(s: &mut Suite) {
        s.area("mmu_update");
        let l4 = l4_mfn();
        reset(L1A);
        let _ = ro_pin(L1A, PIN_L1);
        let e0 = maddr(L1A);
        s.check("normal_map_data_readonly", mmu(e0, maddr(DATA) | P | US), 0);
        s.check(
            "normal_map_data_writable",
            mmu(e0, maddr(DATA) | P | RW | US),
            0,
        );
        s.check(
            "normal_map_page_table_writable",
            mmu(e0 + 8, (l4 << 12) | P | RW | US),
            EBUSY,
        );
        s.check(
            "normal_map_free_frame",
            mmu(e0 + 8, (free_frame() << 12) | P | US),
            EBUSY,
        );
        s.check("normal_clear_entry", mmu(e0, 0), 0);
        s.check("preserve_ad", mmu(e0 | 2, maddr(DATA) | P | US | 0x60), 0);
        s.check(
            "entry_written",
            (read(L1A, 0) & ADDR) as i64 >> 12,
            mfn(DATA) as i64,
        );
        // Low bits 3..7 of ptr are the command: 4 is no command.
        s.check("bad_command_4", mmu(e0 | 4, 0), ENOSYS);
        // A PV guest's frames are machine frames: "no translate" is a normal update.
        s.check("no_translate_on_pv", mmu(e0 | 3, 0), 0);
        s.check("normal_on_writable_page", mmu(maddr(DATA), 0), 0);
        s.check(
            "normal_on_frame_out_of_ram",
            mmu(OUT_OF_RAM_MFN << 12, 0),
            EINVAL,
        );
        // The live L4's hypervisor slot.
        s.check(
            "write_l4_xen_slot",
            mmu((l4 << 12) + 262 * 8, maddr(DATA) | P | US),
            EINVAL,
        );
        // XSA-182: a read-only self map of the L4 is allowed, making it writable by a
        // flags-only change (Xen's old fast path) is not.
        let slot = (l4 << 12) + 300 * 8;
        s.check("l4_self_map_readonly", mmu(slot, (l4 << 12) | P | US), 0);
        s.check(
            "xsa182_l4_fast_path",
            mmu(slot, (l4 << 12) | P | RW | US),
            EINVAL,
        );
        s.check("l4_self_map_cleared", mmu(slot, 0), 0);
        let _ = ext(UNPIN, mfn(L1A));
        reset(L1A);
        // Batches.
        let mut done = 7u32;
        s.check("zero_count", mmu_batch(&[], &mut done, DOMID_SELF), 0);
        s.check("zero_count_done", i64::from(done), 0);
        let pfn = (va(DATA) - VIRT_BASE) / PAGE;
        let reqs = [[maddr(DATA) | 1, pfn], [maddr(DATA) | 4, 0]];
        let r = mmu_batch(&reqs, &mut done, DOMID_SELF);
        s.check("batch_stops_at_bad", r, ENOSYS);
        s.check("batch_done_count", i64::from(done), 1);
        s.check(
            "foreign_domain",
            mmu_batch(&reqs[..1], &mut done, NO_DOMAIN),
            ESRCH,
        );
        s.check(
            "requests_in_hypervisor",
            hc(nr::MMU_UPDATE, [HYPERVISOR_ADDRESS, 1, 0, DOMID_SELF, 0]),
            EFAULT,
        );
        // M2P.
        s.check("machphys_own_frame", mmu(maddr(DATA) | 1, pfn), 0);
        s.check(
            "machphys_free_frame",
            mmu((free_frame() << 12) | 1, pfn),
            EINVAL,
        );
        s.check(
            "machphys_out_of_ram",
            mmu((OUT_OF_RAM_MFN << 12) | 1, pfn),
            EINVAL,
        );
    }

    // ---- mmuext_op ------------------------------------------------------------------

    fn mmuext_cases(s: &mut Suite) {
        s.area("mmuext");
        let l4 = l4_mfn();
        s.check("new_baseptr_same", ext(NEW_BASEPTR, l4), 0);
        s.check(
            "new_baseptr_writable_page",
            ext(NEW_BASEPTR, mfn(DATA)),
            EINVAL,
        );
        s.check("new_user_baseptr_zero", ext(NEW_USER_BASEPTR, 0), 0);
        s.check("tlb_flush_local", ext(TLB_FLUSH_LOCAL, 0), 0);
        s.check("invlpg_local", ext(INVLPG_LOCAL, va(DATA)), 0);
        let mask = 1u64;
        let maskp = &raw const mask as u64;
        s.check(
            "tlb_flush_multi",
            ext_dom(TLB_FLUSH_MULTI, 0, maskp, DOMID_SELF),
            0,
        );
        s.check(
            "invlpg_multi",
            ext_dom(INVLPG_MULTI, va(DATA), maskp, DOMID_SELF),
            0,
        );
        s.check(
            "tlb_flush_multi_bad_mask",
            ext_dom(TLB_FLUSH_MULTI, 0, NO_L1_ADDRESS, DOMID_SELF),
            EINVAL,
        );
        s.check("tlb_flush_all", ext(TLB_FLUSH_ALL, 0), 0);
        s.check("invlpg_all", ext(INVLPG_ALL, va(DATA)), 0);
        s.check("flush_cache", ext(FLUSH_CACHE, 0), 0);
        s.check("flush_cache_global", ext(FLUSH_CACHE_GLOBAL, 0), 0);
        write(DATA, 9, 0x1234);
        s.check("clear_page", ext(CLEAR_PAGE, mfn(DATA)), 0);
        s.check("clear_page_cleared", read(DATA, 9) as i64, 0);
        write(DATA2, 3, 0x77);
        s.check(
            "copy_page",
            ext_dom(COPY_PAGE, mfn(DATA), mfn(DATA2), DOMID_SELF),
            0,
        );
        s.check("copy_page_copied", read(DATA, 3) as i64, 0x77);
        let _ = ro_pin(L1A, PIN_L1);
        s.check(
            "clear_page_of_page_table",
            ext(CLEAR_PAGE, mfn(L1A)),
            EINVAL,
        );
        s.check(
            "copy_page_onto_page_table",
            ext_dom(COPY_PAGE, mfn(L1A), mfn(DATA), DOMID_SELF),
            EINVAL,
        );
        reset(L1A);
        s.check("mark_super_removed", ext(MARK_SUPER, mfn(DATA)), EOPNOTSUPP);
        s.check("unknown_command", ext(99, 0), ENOSYS);
        // A batch with a bad op reports how many were done.
        let ops = [[TLB_FLUSH_LOCAL, 0, 0], [99, 0, 0]];
        let mut done = 0u32;
        let r = hc(
            nr::MMUEXT_OP,
            [ops.as_ptr() as u64, 2, &raw mut done as u64, DOMID_SELF, 0],
        );
        s.check("batch_stops_at_bad", r, ENOSYS);
        s.check("batch_done_count", i64::from(done), 1);
    }

    // ---- update_va_mapping ----------------------------------------------------------

    fn uvm_cases(s: &mut Suite) {
        s.area("uvm");
        let pte = maddr(DATA2) | P | RW | US;
        s.check("flush_none", uvm(va(DATA2), pte, UVMF_NONE), 0);
        s.check("flush_tlb", uvm(va(DATA2), pte, UVMF_TLB_FLUSH), 0);
        s.check("invlpg", uvm(va(DATA2), pte, UVMF_INVLPG), 0);
        s.check("invlpg_all", uvm(va(DATA2), pte, UVMF_INVLPG | UVMF_ALL), 0);
        let mask = 1u64;
        // A vCPU mask pointer in place of UVMF_LOCAL/UVMF_ALL (UVMF_MULTI is 0).
        let multi = &raw const mask as u64;
        s.check("invlpg_mask", uvm(va(DATA2), pte, multi | UVMF_INVLPG), 0);
        s.check("flush_mask", uvm(va(DATA2), pte, multi | UVMF_TLB_FLUSH), 0);
        s.check(
            "invlpg_bad_mask",
            uvm(va(DATA2), pte, NO_L1_ADDRESS | UVMF_INVLPG),
            EFAULT,
        );
        // Flush type 3 is no flush type: nothing is flushed, the update stands.
        s.check("flush_type_3", uvm(va(DATA2), pte, NO_L1_ADDRESS | 3), 0);
        s.check(
            "hypervisor_va",
            uvm(HYPERVISOR_ADDRESS, pte, UVMF_INVLPG),
            EINVAL,
        );
        s.check(
            "va_without_l1",
            uvm(NO_L1_ADDRESS, pte, UVMF_INVLPG),
            EINVAL,
        );
        s.check(
            "non_canonical_va",
            uvm(0x8000_0000_0000_0000, pte, UVMF_INVLPG),
            EINVAL,
        );
        s.check(
            "otherdomain_absent",
            hc(
                nr::UPDATE_VA_MAPPING_OTHERDOMAIN,
                [va(DATA2), pte, UVMF_INVLPG, NO_DOMAIN, 0],
            ),
            ESRCH,
        );
        s.check(
            "map_live_l4_readonly",
            uvm(va(DATA2), (l4_mfn() << 12) | P | US, 2),
            0,
        );
        s.check(
            "map_live_l4_writable",
            uvm(va(DATA2), (l4_mfn() << 12) | P | RW | US, 2),
            EBUSY,
        );
        s.check("map_back", uvm(va(DATA2), pte, UVMF_INVLPG), 0);
    }

    // ---- descriptor tables ----------------------------------------------------------

    /// Flat data segments, DPL 3 and DPL 0; an available 64-bit TSS.
    const DATA_DPL3: u64 = 0x00cf_f300_0000_ffff;
    const DATA_DPL0: u64 = 0x00cf_9300_0000_ffff;
    const TSS: u64 = 0x0000_8900_0000_0067;

    fn set_gdt(frames: &[u64], entries: u64) -> i64 {
        hc(nr::SET_GDT, [frames.as_ptr() as u64, entries, 0, 0, 0])
    }

    fn update_descriptor(maddr: u64, desc: u64) -> i64 {
        hc(nr::UPDATE_DESCRIPTOR, [maddr, desc, 0, 0, 0])
    }

    fn desc_cases(s: &mut Suite) {
        s.area("desc");
        reset(GDT);
        write(GDT, 1, DATA_DPL3);
        s.check("set_gdt_writable_frame", set_gdt(&[mfn(GDT)], 3), EINVAL);
        let _ = ro(GDT);
        s.check(
            "set_gdt_too_many_entries",
            set_gdt(&[mfn(GDT)], 65536),
            EINVAL,
        );
        s.check(
            "set_gdt_list_in_hypervisor",
            hc(nr::SET_GDT, [HYPERVISOR_ADDRESS, 3, 0, 0, 0]),
            EFAULT,
        );
        s.check(
            "set_gdt_frame_out_of_ram",
            set_gdt(&[OUT_OF_RAM_MFN], 3),
            EINVAL,
        );
        s.check("set_gdt_ok", set_gdt(&[mfn(GDT)], 3), 0);
        s.check("gdt_frame_now_not_writable", rw(GDT), EBUSY);
        let e2 = maddr(GDT) + 16;
        s.check(
            "update_descriptor_dpl0_data",
            update_descriptor(e2, DATA_DPL0),
            0,
        );
        s.check("stored_with_dpl3", ((read(GDT, 2) >> 45) & 3) as i64, 3);
        s.check("update_descriptor_tss", update_descriptor(e2, TSS), EINVAL);
        s.check(
            "update_descriptor_misaligned",
            update_descriptor(e2 + 4, DATA_DPL3),
            EINVAL,
        );
        s.check(
            "update_descriptor_frame_out_of_ram",
            update_descriptor(OUT_OF_RAM_MFN << 12, DATA_DPL3),
            EINVAL,
        );
        s.check(
            "update_descriptor_plain_page",
            update_descriptor(maddr(DATA) + 8, DATA_DPL3),
            0,
        );
        s.check(
            "update_descriptor_page_table",
            update_descriptor(l4_mfn() << 12, DATA_DPL3),
            EINVAL,
        );
        let bad = [mfn(DATA)];
        write(DATA, 1, TSS);
        let _ = ro(DATA);
        s.check("set_gdt_with_tss_entry", set_gdt(&bad, 3), EINVAL);
        let _ = rw(DATA);
        zero(DATA);
        // LDT.
        reset(LDT);
        write(LDT, 0, DATA_DPL3);
        s.check(
            "set_ldt_writable_page",
            ext_dom(SET_LDT, va(LDT), 1, DOMID_SELF),
            0,
        );
        let _ = ro(LDT);
        s.check(
            "set_ldt_readonly_page",
            ext_dom(SET_LDT, va(LDT), 1, DOMID_SELF),
            0,
        );
        let sel: u16;
        // SAFETY: selector 0x7 is LDT entry 0, a flat DPL-3 data segment; in 64-bit
        // mode DS does not affect our memory accesses. If the load faults, the #GP
        // handler is not installed yet and the domain dies (a visible failure).
        unsafe { asm!("mov ds, {s:x}", "mov {d:x}, ds", s = in(reg) 0x7u16, d = out(reg) sel) };
        s.check("ldt_selector_loaded", i64::from(sel), 7);
        // SAFETY: the null selector; nothing depends on DS in 64-bit mode.
        unsafe { asm!("mov ds, {s:x}", s = in(reg) 0u16) };
        s.check(
            "set_ldt_misaligned",
            ext_dom(SET_LDT, va(LDT) + 8, 1, DOMID_SELF),
            EINVAL,
        );
        s.check(
            "set_ldt_too_many_entries",
            ext_dom(SET_LDT, va(LDT), 8193, DOMID_SELF),
            EINVAL,
        );
        s.check(
            "set_ldt_in_hypervisor",
            ext_dom(SET_LDT, HYPERVISOR_ADDRESS, 1, DOMID_SELF),
            EINVAL,
        );
        s.check("set_ldt_none", ext_dom(SET_LDT, 0, 0, DOMID_SELF), 0);
        let _ = EBUSY;
    }

    // ---- vcpu_op, xen_version, console_io, physdev, memory_op, vm_assist, segments -

    fn vcpu_op(cmd: u64, vcpu: u64, arg: u64) -> i64 {
        hc(nr::VCPU_OP, [cmd, vcpu, arg, 0, 0])
    }

    fn vcpu_cases(s: &mut Suite) {
        s.area("vcpu");
        s.check("is_up_0", vcpu_op(3, 0, 0), 1);
        s.check("is_up_absent_vcpu", vcpu_op(3, 1, 0), ENOENT);
        s.check("is_up_huge_vcpu", vcpu_op(3, 0xffff_ffff, 0), ENOENT);
        s.check("up_running", vcpu_op(1, 0, 0), 0);
        let mut runstate = [0u64; 6];
        let rp = runstate.as_mut_ptr() as u64;
        s.check("get_runstate_info", vcpu_op(4, 0, rp), 0);
        s.check("runstate_running", runstate[0] as i64, 0);
        s.check(
            "get_runstate_info_bad_pointer",
            vcpu_op(4, 0, HYPERVISOR_ADDRESS),
            EFAULT,
        );
        let short = [100_000u64];
        s.check(
            "periodic_timer_too_short",
            vcpu_op(6, 0, short.as_ptr() as u64),
            EINVAL,
        );
        let ok = [10_000_000u64];
        s.check("periodic_timer_10ms", vcpu_op(6, 0, ok.as_ptr() as u64), 0);
        s.check("stop_periodic_timer", vcpu_op(7, 0, 0), 0);
        // Xen 4.17.7 (with the 4.18 change "ignore VCPU_SSHOTTMR_future" backported):
        // a past deadline with the flag is accepted and fires at once.
        let past = [1u64, 1];
        s.check(
            "singleshot_past_future_flag",
            vcpu_op(8, 0, past.as_ptr() as u64),
            0,
        );
        let past_no_flag = [1u64, 0];
        s.check(
            "singleshot_past",
            vcpu_op(8, 0, past_no_flag.as_ptr() as u64),
            0,
        );
        let later = [u64::MAX / 2, 1];
        s.check("singleshot_future", vcpu_op(8, 0, later.as_ptr() as u64), 0);
        s.check("stop_singleshot", vcpu_op(9, 0, 0), 0);
        let info = [0u64, 4090];
        s.check(
            "register_vcpu_info_straddles",
            vcpu_op(10, 0, info.as_ptr() as u64),
            ENXIO,
        );
        let ctx = [0u64; 700];
        s.check(
            "initialise_running_vcpu",
            vcpu_op(0, 0, ctx.as_ptr() as u64),
            EEXIST,
        );
        s.check("unknown_command", vcpu_op(99, 0, 0), ENOSYS);
        s.check("down_absent_vcpu", vcpu_op(2, 5, 0), ENOENT);
    }

    fn xen_version(cmd: u64, arg: u64) -> i64 {
        hc(nr::XEN_VERSION, [cmd, arg, 0, 0, 0])
    }

    fn version_cases(s: &mut Suite) {
        s.area("version");
        s.check("version", xen_version(0, 0), (4 << 16) | 17);
        s.check("pagesize", xen_version(7, 0), 4096);
        let mut feat = [0u32; 2];
        let fp = feat.as_mut_ptr() as u64;
        s.check("get_features_0", xen_version(6, fp), 0);
        let bit = |n: u32| i64::from((feat[1] >> n) & 1);
        s.check("feature_mmu_pt_update_preserve_ad", bit(5), 1);
        s.check("feature_auto_translated_physmap", bit(2), 0);
        s.check("feature_dom0", bit(11), 1);
        s.check("feature_writable_page_tables", bit(0), 0);
        let mut feat1 = [1u32, 0];
        s.check(
            "get_features_1",
            xen_version(6, feat1.as_mut_ptr() as u64),
            EINVAL,
        );
        let mut caps = [0u8; 1024];
        s.check("capabilities", xen_version(3, caps.as_mut_ptr() as u64), 0);
        s.check_bool(
            "capabilities_x86_64",
            caps.starts_with(b"xen-3.0-x86_64"),
            true,
        );
        let mut pp = [0u64; 1];
        s.check(
            "platform_parameters",
            xen_version(5, pp.as_mut_ptr() as u64),
            0,
        );
        s.check_bool(
            "virt_start_in_upper_half",
            pp[0] >= 0xffff_8000_0000_0000,
            true,
        );
        let mut extra = [0u8; 16];
        s.check("extraversion", xen_version(1, extra.as_mut_ptr() as u64), 0);
        s.check_bool("extraversion_terminated", extra.contains(&0), true);
        let mut handle = [0u8; 16];
        s.check(
            "guest_handle",
            xen_version(8, handle.as_mut_ptr() as u64),
            0,
        );
        s.check("bad_pointer", xen_version(3, HYPERVISOR_ADDRESS), EFAULT);
        s.check("unknown_command", xen_version(99, 0), ENOSYS);
    }

    fn console_cases(s: &mut Suite) {
        s.area("console");
        let msg = b"conformance: console write\n";
        s.check(
            "write",
            hc(
                nr::CONSOLE_IO,
                [0, msg.len() as u64, msg.as_ptr() as u64, 0, 0],
            ),
            0,
        );
        s.check(
            "write_empty",
            hc(nr::CONSOLE_IO, [0, 0, msg.as_ptr() as u64, 0, 0]),
            0,
        );
        s.check(
            "write_bad_pointer",
            hc(nr::CONSOLE_IO, [0, 16, HYPERVISOR_ADDRESS, 0, 0]),
            EFAULT,
        );
        let mut buf = [0u8; 16];
        s.check(
            "read_nothing_pending",
            hc(nr::CONSOLE_IO, [1, 16, buf.as_mut_ptr() as u64, 0, 0]),
            0,
        );
        s.check(
            "unknown_command",
            hc(nr::CONSOLE_IO, [9, 0, 0, 0, 0]),
            ENOSYS,
        );
    }

    fn physdev_cases(s: &mut Suite) {
        s.area("physdev");
        let iopl1 = [1u32];
        s.check(
            "set_iopl_1",
            hc(nr::PHYSDEV_OP, [6, iopl1.as_ptr() as u64, 0, 0, 0]),
            0,
        );
        let iopl4 = [4u32];
        s.check(
            "set_iopl_4",
            hc(nr::PHYSDEV_OP, [6, iopl4.as_ptr() as u64, 0, 0, 0]),
            EINVAL,
        );
        s.check(
            "set_iopl_bad_pointer",
            hc(nr::PHYSDEV_OP, [6, HYPERVISOR_ADDRESS, 0, 0, 0]),
            EFAULT,
        );
        let iopl0 = [0u32];
        s.check(
            "set_iopl_0",
            hc(nr::PHYSDEV_OP, [6, iopl0.as_ptr() as u64, 0, 0, 0]),
            0,
        );
        let bitmap = [0xffu8; 32];
        let iob = [bitmap.as_ptr() as u64, 256];
        s.check(
            "set_iobitmap",
            hc(nr::PHYSDEV_OP, [7, iob.as_ptr() as u64, 0, 0, 0]),
            0,
        );
        let iob = [bitmap.as_ptr() as u64, 65537];
        s.check(
            "set_iobitmap_too_many_ports",
            hc(nr::PHYSDEV_OP, [7, iob.as_ptr() as u64, 0, 0, 0]),
            EINVAL,
        );
        let iob = [0u64, 0];
        s.check(
            "set_iobitmap_none",
            hc(nr::PHYSDEV_OP, [7, iob.as_ptr() as u64, 0, 0, 0]),
            0,
        );
        s.check(
            "unknown_command",
            hc(nr::PHYSDEV_OP, [999, 0, 0, 0, 0]),
            ENOSYS,
        );
    }

    fn memory_op(cmd: u64, arg: u64) -> i64 {
        hc(nr::MEMORY_OP, [cmd, arg, 0, 0, 0])
    }

    fn memory_cases(s: &mut Suite) {
        s.area("memory");
        let me = [0x7ff0u16];
        let cur = memory_op(3, me.as_ptr() as u64);
        s.check("current_reservation_is_nr_pages", cur, si().nr_pages as i64);
        let max = memory_op(4, me.as_ptr() as u64);
        s.check_bool("maximum_reservation_at_least_current", max >= cur, true);
        let absent = [1000u16];
        s.check(
            "current_reservation_absent",
            memory_op(3, absent.as_ptr() as u64),
            ESRCH,
        );
        s.check(
            "reservation_bad_pointer",
            memory_op(3, HYPERVISOR_ADDRESS),
            EFAULT,
        );
        s.check_bool("maximum_ram_page", memory_op(2, 0) > 0, true);
        let mut list = [0u64; 4];
        let mut arg = [4u64, list.as_mut_ptr() as u64, 0];
        s.check(
            "machphys_mfn_list",
            memory_op(5, arg.as_mut_ptr() as u64),
            0,
        );
        s.check_bool("machphys_mfn_list_filled", arg[2] > 0 && list[0] != 0, true);
        let mut mapping = [0u64; 3];
        s.check(
            "machphys_mapping",
            memory_op(12, mapping.as_mut_ptr() as u64),
            0,
        );
        s.check_bool(
            "machphys_mapping_upper_half",
            mapping[0] >= 0xffff_8000_0000_0000,
            true,
        );
        let mut e820 = [0u64; 20 * 3];
        let mut map = [20u64, e820.as_mut_ptr() as u64];
        s.check("memory_map", memory_op(9, map.as_mut_ptr() as u64), ENOSYS);
        s.check("unknown_command", memory_op(63, 0), ENOSYS);
    }

    fn vm_assist_cases(s: &mut Suite) {
        s.area("vm_assist");
        s.check(
            "enable_writable_pagetables",
            hc(nr::VM_ASSIST, [0, 2, 0, 0, 0]),
            0,
        );
        s.check(
            "disable_writable_pagetables",
            hc(nr::VM_ASSIST, [1, 2, 0, 0, 0]),
            0,
        );
        s.check(
            "enable_unknown_type",
            hc(nr::VM_ASSIST, [0, 10, 0, 0, 0]),
            EINVAL,
        );
        s.check(
            "unknown_command",
            hc(nr::VM_ASSIST, [5, 2, 0, 0, 0]),
            ENOSYS,
        );
        s.check(
            "enable_runstate_update_flag",
            hc(nr::VM_ASSIST, [0, 5, 0, 0, 0]),
            0,
        );
    }

    fn segment_cases(s: &mut Suite) {
        s.area("segment");
        let seg = |which: u64, base: u64| hc(nr::SET_SEGMENT_BASE, [which, base, 0, 0, 0]);
        s.check("fs_base", seg(0, 0x1000), 0);
        s.check(
            "fs_base_non_canonical",
            seg(0, 0x8000_0000_0000_0000),
            EINVAL,
        );
        s.check("gs_user", seg(1, 0x2000), 0);
        s.check("gs_kernel", seg(2, 0), 0);
        s.check("gs_user_sel_null", seg(3, 0), 0);
        s.check("unknown_which", seg(9, 0), EINVAL);
        let _ = seg(0, 0);
        let _ = seg(1, 0);
    }

    fn misc_cases(s: &mut Suite) {
        s.area("misc");
        let sp: u64;
        // SAFETY: reads the stack pointer.
        unsafe { asm!("mov {}, rsp", out(reg) sp) };
        s.check(
            "stack_switch",
            hc(nr::STACK_SWITCH, [0xe02b, sp, 0, 0, 0]),
            0,
        );
        s.check(
            "fpu_taskswitch_set",
            hc(nr::FPU_TASKSWITCH, [1, 0, 0, 0, 0]),
            0,
        );
        s.check(
            "fpu_taskswitch_clear",
            hc(nr::FPU_TASKSWITCH, [0, 0, 0, 0, 0]),
            0,
        );
        s.check("unknown_hypercall", hc(60, [0; 5]), ENOSYS);
        s.check(
            "set_debugreg_7_zero",
            hc(nr::SET_DEBUGREG, [7, 0, 0, 0, 0]),
            0,
        );
        s.check(
            "get_debugreg_bad",
            hc(nr::GET_DEBUGREG, [9, 0, 0, 0, 0]),
            ENODEV,
        );
        let _ = EPERM;
    }

    // ---- traps ----------------------------------------------------------------------

    /// Hits per vector, the last error code, and where a handler resumes.
    static HITS: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
    static ERROR_CODE: AtomicU64 = AtomicU64::new(0);
    static RESUME: AtomicU64 = AtomicU64::new(0);

    extern "C" fn record(vector: u64, error: u64) -> u64 {
        HITS[vector as usize & 15].fetch_add(1, Ordering::Relaxed);
        ERROR_CODE.store(error, Ordering::Relaxed);
        if vector == 7 {
            // #NM after fpu_taskswitch(1): clear TS and retry the instruction.
            let _ = hc(nr::FPU_TASKSWITCH, [0, 0, 0, 0, 0]);
            return 0;
        }
        RESUME.load(Ordering::Relaxed)
    }

    /// A trap entry: the hypervisor left `rcx r11 [error] rip cs rflags rsp ss`. Calls
    /// `record(vector, error)`; a non-zero answer replaces the return address. Returns
    /// with the `iret` hypercall.
    macro_rules! trap_entry {
        ($name:ident, $vector:literal, $has_error:literal) => {
            #[unsafe(naked)]
            unsafe extern "C" fn $name() {
                naked_asm!(
                    "pop %rcx",
                    "pop %r11",
                    ".if {he}",
                    "mov (%rsp), %rsi",
                    "add $8, %rsp",
                    ".else",
                    "xor %esi, %esi",
                    ".endif",
                    "push %rax", "push %rcx", "push %rdx", "push %rsi", "push %rdi",
                    "push %r8", "push %r9", "push %r10", "push %r11", "push %rbx",
                    "mov %rsp, %rbx",
                    "and $-16, %rsp",
                    "mov ${v}, %edi",
                    "call {f}",
                    "mov %rbx, %rsp",
                    "test %rax, %rax",
                    "jz 2f",
                    "mov %rax, 80(%rsp)",
                    "2:",
                    "pop %rbx", "pop %r11", "pop %r10", "pop %r9", "pop %r8",
                    "pop %rdi", "pop %rsi", "pop %rdx", "pop %rcx", "pop %rax",
                    "push $0",
                    "push %rcx",
                    "push %r11",
                    "push %rax",
                    "mov ${iret}, %eax",
                    "syscall",
                    v = const $vector,
                    he = const $has_error,
                    f = sym record,
                    iret = const nr::IRET,
                    options(att_syntax)
                )
            }
        };
    }
    trap_entry!(de_entry, 0, 0);
    trap_entry!(int3_entry, 3, 0);
    trap_entry!(ud_entry, 6, 0);
    trap_entry!(nm_entry, 7, 0);
    trap_entry!(gp_entry, 13, 1);
    trap_entry!(pf_entry, 14, 1);

    fn trap(vector: u8, flags: u8, address: u64) -> [u64; 2] {
        [
            u64::from(vector) | u64::from(flags) << 8 | 0xe033 << 16,
            address,
        ]
    }

    fn hits(v: usize) -> i64 {
        HITS[v].load(Ordering::Relaxed) as i64
    }

    fn trap_cases(s: &mut Suite) {
        s.area("traps");
        s.check(
            "set_trap_table_bad_pointer",
            hc(nr::SET_TRAP_TABLE, [HYPERVISOR_ADDRESS, 0, 0, 0, 0]),
            EFAULT,
        );
        let table = [
            trap(0, 0, de_entry as *const () as u64),
            trap(3, 3, int3_entry as *const () as u64),
            trap(6, 0, ud_entry as *const () as u64),
            trap(7, 0, nm_entry as *const () as u64),
            trap(13, 0, gp_entry as *const () as u64),
            trap(14, 0, pf_entry as *const () as u64),
            [0, 0],
        ];
        s.check(
            "set_trap_table",
            hc(nr::SET_TRAP_TABLE, [table.as_ptr() as u64, 0, 0, 0, 0]),
            0,
        );
        // SAFETY: the faulting instruction is preceded by storing the address of
        // the label after it in RESUME, where the trap handler returns to.
        unsafe {
            asm!("lea 2f(%rip), %rax", "mov %rax, ({r})", "int3", "2:",
                r = in(reg) RESUME.as_ptr(), out("rax") _, options(att_syntax));
        }
        s.check("int3_bounced", hits(3), 1);
        // SAFETY: the faulting instruction is preceded by storing the address of
        // the label after it in RESUME, where the trap handler returns to.
        unsafe {
            asm!("lea 2f(%rip), %rax", "mov %rax, ({r})", "ud2", "2:",
                r = in(reg) RESUME.as_ptr(), out("rax") _, options(att_syntax));
        }
        s.check("ud2_bounced", hits(6), 1);
        // SAFETY: the faulting instruction is preceded by storing the address of
        // the label after it in RESUME, where the trap handler returns to.
        unsafe {
            asm!("lea 2f(%rip), %rax", "mov %rax, ({r})", "xor %ecx, %ecx", "xor %edx, %edx",
                "mov $1, %eax", "div %ecx", "2:",
                r = in(reg) RESUME.as_ptr(), out("rax") _, out("rcx") _, out("rdx") _,
                options(att_syntax));
        }
        s.check("divide_error_bounced", hits(0), 1);
        // SAFETY: the faulting instruction is preceded by storing the address of
        // the label after it in RESUME, where the trap handler returns to.
        unsafe {
            asm!("lea 2f(%rip), %rax", "mov %rax, ({r})", "mov $0x23, %ax", "mov %ax, %ds",
                "2:", r = in(reg) RESUME.as_ptr(), out("rax") _, options(att_syntax));
        }
        s.check("gp_bounced", hits(13), 1);
        s.check(
            "gp_error_code_is_selector",
            ERROR_CODE.load(Ordering::Relaxed) as i64,
            0x20,
        );
        // SAFETY: the null selector again.
        unsafe { asm!("mov ds, {s:x}", s = in(reg) 0u16) };
        let _ = ro(DATA);
        let target = va(DATA);
        // SAFETY: the faulting instruction is preceded by storing the address of
        // the label after it in RESUME, where the trap handler returns to.
        unsafe {
            asm!("lea 2f(%rip), %rax", "mov %rax, ({r})", "movq $1, ({t})", "2:",
                r = in(reg) RESUME.as_ptr(), t = in(reg) target, out("rax") _,
                options(att_syntax));
        }
        s.check("pf_bounced", hits(14), 1);
        s.check(
            "pf_error_code",
            ERROR_CODE.load(Ordering::Relaxed) as i64,
            3,
        );
        let _ = rw(DATA);
        let _ = hc(nr::FPU_TASKSWITCH, [1, 0, 0, 0, 0]);
        // SAFETY: one x87 no-op; its #NM handler clears TS and retries it.
        unsafe { asm!("fnop") };
        s.check("nm_after_fpu_taskswitch", hits(7), 1);
        // `int $0x80` with no DPL-3 entry for it: #GP with the vector in the error code.
        // SAFETY: the faulting instruction is preceded by storing the address of
        // the label after it in RESUME, where the trap handler returns to.
        unsafe {
            asm!("lea 2f(%rip), %rax", "mov %rax, ({r})", "int $0x80", "2:",
                r = in(reg) RESUME.as_ptr(), out("rax") _, options(att_syntax));
        }
        s.check("int80_without_entry_is_gp", hits(13), 2);
        s.check(
            "int80_error_code",
            ERROR_CODE.load(Ordering::Relaxed) as i64,
            0x80 * 8 + 2,
        );
        // MSR emulation: FS base writes must be canonical (XSA-193), unknown MSRs #GP.
        let wrmsr = |msr: u32, value: u64| {
            // SAFETY: the faulting instruction is preceded by storing the address of
            // the label after it in RESUME, where the #GP handler returns to; a write
            // that succeeds changes only the FS base, which this kernel does not use.
            unsafe {
                asm!("lea 2f(%rip), %r8", "mov %r8, ({r})", "wrmsr", "2:",
                    r = in(reg) RESUME.as_ptr(), in("ecx") msr, in("eax") value as u32,
                    in("edx") (value >> 32) as u32, out("r8") _, options(att_syntax));
            }
        };
        let gp = hits(13);
        wrmsr(0xc000_0100, 0x1000);
        s.check("wrmsr_fs_base", hits(13) - gp, 0);
        let (lo, hi): (u32, u32);
        // SAFETY: reads the FS base MSR (emulated); no memory is touched.
        unsafe { asm!("rdmsr", in("ecx") 0xc000_0100u32, out("eax") lo, out("edx") hi) };
        s.check("rdmsr_fs_base", i64::from(lo) | i64::from(hi) << 32, 0x1000);
        wrmsr(0xc000_0100, 0x8000_0000_0000_0000);
        s.check("xsa193_wrmsr_fs_base_non_canonical_is_gp", hits(13) - gp, 1);
        wrmsr(0x1234, 0);
        s.check("wrmsr_unknown_msr_is_gp", hits(13) - gp, 2);
        wrmsr(0xc000_0100, 0);
        let cb = [99u64, 0];
        s.check(
            "callback_register_unknown_type",
            hc(nr::CALLBACK_OP, [0, cb.as_ptr() as u64, 0, 0, 0]),
            ENOSYS,
        );
        s.check(
            "callback_op_unknown_command",
            hc(nr::CALLBACK_OP, [9, cb.as_ptr() as u64, 0, 0, 0]),
            ENOSYS,
        );
    }

    fn main(si: &'static StartInfo) -> ! {
        SI.store(si as *const StartInfo as u64, Ordering::Relaxed);
        let mut s = Suite::new("conformance-mmu", "mmu");
        mmu_cases(&mut s);
        mmu_update_cases(&mut s);
        mmuext_cases(&mut s);
        uvm_cases(&mut s);
        desc_cases(&mut s);
        vcpu_cases(&mut s);
        version_cases(&mut s);
        console_cases(&mut s);
        physdev_cases(&mut s);
        memory_cases(&mut s);
        vm_assist_cases(&mut s);
        segment_cases(&mut s);
        misc_cases(&mut s);
        trap_cases(&mut s);
        s.finish()
    }
}
