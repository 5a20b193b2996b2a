//! `fuzz`: issues random hypercalls with shaped arguments, from a seed on its command
//! line (`seed=S calls=N me=ID doms=A,B,.. [end=crash]`).
//!
//! Every hypercall number the hypervisor implements is called, and unknown ones, with
//! arguments drawn from boundary values, pointers into the guest's own memory (a scratch
//! area, its page tables, start_info, shared_info, the grant frame, the rings), the
//! hypervisor's range, unmapped and non-canonical addresses, own and foreign MFNs,
//! ports, grant refs and domain ids (self, 0, the other domains, `DOMID_*` specials);
//! structured ops get random fields. Between calls it scribbles over its grant entries,
//! shared_info and rings, and raises exceptions that its trap table handles.
//!
//! It stays alive where it can: pointers the hypervisor may write through lead into the
//! scratch area only; mappings change only in the `REMAP` pages; page-table entries it
//! does not own are only rewritten with their current value; it never shuts itself
//! down, moves its vcpu_info or blocks. Progress: `fuzz: <calls> calls` every 10^4
//! calls, then `fuzz: done <calls> calls seed <seed>`. With `end=crash` it then raises
//! int3 without a trap table, so the hypervisor crashes it.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use core::arch::{asm, naked_asm};
    use core::sync::atomic::{AtomicU64, Ordering};

    use pv_guest::cmdline::{parse_u64, value};
    use pv_guest::{StartInfo, VIRT_BASE, io_println};
    use xen_pv_abi::hypercall::hypercall_raw;
    use xen_pv_abi::layout::{FLAT_KERNEL_CS64, MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START};
    use xen_pv_abi::nr;
    use xen_pv_abi::shared_info::{SharedInfo, VcpuInfo};
    use xen_pv_abi::traps::TrapInfo;

    test_guests::standard_notes!("fuzz");
    pv_guest::entry!(main);

    const PAGE: u64 = 4096;
    /// Scratch pages: every pointer the hypervisor may write through lands here.
    const OUT_PAGES: usize = 16;
    /// Pointers start in the first `OUT_PTR_PAGES`; arrays are clamped to end in OUT.
    const OUT_PTR_PAGES: u64 = 12;
    /// Pages whose mappings the fuzzer changes (never read or written by it).
    const REMAP_PAGES: usize = 8;
    /// Unmapped frames of ours kept as "free own frames".
    const TAIL: usize = 8;

    #[repr(C, align(4096))]
    struct Pages<const N: usize>([[u8; 4096]; N]);

    /// OUT (pages 0..16), our shared_info mapping (16), our grant frame mapping (17),
    /// then padding, so a long write through a pointer into 16 or 17 stays in the area.
    const AREA_PAGES: usize = 24;
    const SHARED_PAGE: u64 = 16;
    const GRANT_PAGE: u64 = 17;
    static mut AREA: Pages<AREA_PAGES> = Pages([[0; 4096]; AREA_PAGES]);
    /// Multicall entries: not in the pointer pool, so no sub-call writes over them.
    static mut MC: Pages<2> = Pages([[0; 4096]; 2]);
    static mut REMAP: Pages<REMAP_PAGES> = Pages([[0; 4096]; REMAP_PAGES]);

    const DOMID_SELF: u64 = 0x7ff0;
    const SPECIAL_DOMIDS: [u64; 8] = [
        0x7ff0, 0x7ff1, 0x7ff2, 0x7ff3, 0x7ff4, 0x7fff, 0xffff, 0x7fef,
    ];
    const HV_ADDRS: [u64; 6] = [
        0xffff_8000_0000_0000,
        0xffff_8300_0010_0000,
        0xffff_8040_0000_0000,
        0xffff_87ff_ffff_f000,
        0xffff_82d0_4000_0000,
        0xffff_8000_0000_0ff8,
    ];
    const BAD_ADDRS: [u64; 9] = [
        0,
        0x1000,
        0x0000_5a00_0000_0000,
        0x0000_7fff_ffff_f000,
        0x0000_8000_0000_0000,
        0x8000_0000_0000_0000,
        u64::MAX - 7,
        0xffff_ffff_ffff_f000,
        0xffff_c900_0000_0000,
    ];
    const BOUNDARY: [u64; 14] = [
        0,
        1,
        2,
        u64::MAX,
        u32::MAX as u64,
        0x8000_0000,
        0x7fff_ffff,
        i32::MAX as u64 + 1,
        0x1000,
        0xfff,
        0x1001,
        0x7fff_ffff_ffff_ffff,
        0xffff,
        0x10000,
    ];
    /// Hypercall numbers we implement (Xen's 0..=42, the arch pair) and unknown ones.
    const UNKNOWN_NRS: [u32; 10] = [11, 43, 44, 47, 50, 63, 64, 255, 0x8000_0000, u32::MAX];

    /// Fixed facts about this domain, gathered before fuzzing.
    struct Facts {
        me: u64,
        others: [u64; 4],
        n_others: usize,
        out_va: u64,
        out_mfns: [u64; OUT_PAGES],
        remap_va: u64,
        /// Machine address of each REMAP page's PTE.
        remap_pte: [u64; REMAP_PAGES],
        tail_mfns: [u64; TAIL],
        n_tail: usize,
        pt_mfns: [u64; 16],
        pt_vas: [u64; 16],
        n_pt: usize,
        l4_mfn: u64,
        /// Some other frames of ours (code and data): never written through.
        ro_mfns: [u64; 8],
        shared_va: u64,
        shared_mfn: u64,
        grant_va: u64,
        grant_mfn: u64,
        start_info_va: u64,
        ring_vas: [u64; 2],
        ports: [u64; 2],
        max_mfn: u64,
    }

    /// xorshift64*.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 { 0 } else { self.next() % n }
        }
        fn chance(&mut self, one_in: u64) -> bool {
            self.below(one_in) == 0
        }
        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[self.below(xs.len() as u64) as usize]
        }
    }

    struct Fuzz {
        f: Facts,
        rng: Rng,
        /// Ports and grant handles the hypervisor returned lately.
        ports: [u64; 8],
        handles: [u64; 8],
        calls: u64,
        /// Calls the hypervisor answered with 0 or more (not an error).
        succeeded: u64,
        /// Print every call from this one on (`trace=N`, for reproducing a crash).
        trace_from: u64,
    }

    fn p2m(si: &StartInfo, pfn: u64) -> u64 {
        // SAFETY: the p2m list is mapped and has nr_pages entries; callers pass pfn < nr_pages.
        unsafe {
            (si.mfn_list as *const u64)
                .add(pfn as usize)
                .read_volatile()
        }
    }

    fn m2p(mfn: u64) -> u64 {
        // SAFETY: the read-only m2p table is mapped in every PV guest; callers pass our MFNs.
        unsafe {
            (MACH2PHYS_VIRT_START as *const u64)
                .add(mfn as usize)
                .read_volatile()
        }
    }

    fn mfn_of_va(si: &StartInfo, va: u64) -> u64 {
        p2m(si, (va - VIRT_BASE) / PAGE)
    }

    /// The machine address of `va`'s L1 entry, from a walk of the start-of-day tables
    /// (whose frames lie in the initial mapping at VIRT_BASE + pfn * 4096).
    fn pte_maddr(si: &StartInfo, va: u64) -> Option<u64> {
        let mut table_va = si.pt_base;
        for level in (1..=4).rev() {
            let idx = (va >> (12 + 9 * (level - 1))) & 511;
            if level == 1 {
                let mfn = mfn_of_va(si, table_va);
                return Some((mfn << 12) | (idx * 8));
            }
            // SAFETY: table_va is a page-table frame of the initial mapping (read-only).
            let e = unsafe { ((table_va + idx * 8) as *const u64).read_volatile() };
            if e & 1 == 0 || e & 0x80 != 0 {
                return None;
            }
            let pfn = m2p((e >> 12) & 0xff_ffff_ffff);
            if pfn >= si.nr_pages {
                return None;
            }
            table_va = VIRT_BASE + pfn * PAGE;
        }
        None
    }

    fn mapped(si: &StartInfo, va: u64) -> bool {
        let Some(maddr) = pte_maddr(si, va) else {
            return false;
        };
        let l1_pfn = m2p(maddr >> 12);
        // SAFETY: the L1 frame is in the initial mapping (read-only).
        let e = unsafe {
            ((VIRT_BASE + l1_pfn * PAGE + (maddr & 0xfff)) as *const u64).read_volatile()
        };
        e & 1 != 0
    }

    fn map_page(va: u64, mfn: u64) -> i64 {
        // SAFETY: va is one of our own static pages that nothing references.
        unsafe { hypercall_raw(nr::UPDATE_VA_MAPPING, [va, mfn << 12 | 0x67, 2, 0, 0]) }
    }

    fn facts(si: &StartInfo, cmd: &[u8]) -> Facts {
        let me = value(cmd, "me").and_then(parse_u64).unwrap_or(1);
        let mut others = [0u64; 4];
        let mut n_others = 0;
        if let Some(list) = value(cmd, "doms") {
            for w in list.split(|b| *b == b',') {
                if let Some(d) = parse_u64(w)
                    && n_others < others.len()
                {
                    others[n_others] = d;
                    n_others += 1;
                }
            }
        }
        let out_va = &raw const AREA as u64;
        let mut out_mfns = [0; OUT_PAGES];
        for (i, m) in out_mfns.iter_mut().enumerate() {
            *m = mfn_of_va(si, out_va + i as u64 * PAGE);
        }
        let remap_va = &raw const REMAP as u64;
        let mut remap_pte = [0; REMAP_PAGES];
        for (i, p) in remap_pte.iter_mut().enumerate() {
            *p = pte_maddr(si, remap_va + i as u64 * PAGE).unwrap_or(0);
        }
        let pt_first = (si.pt_base - VIRT_BASE) / PAGE;
        let mut pt_mfns = [0; 16];
        let mut pt_vas = [0; 16];
        let n_pt = (si.nr_pt_frames as usize).min(16);
        for i in 0..n_pt {
            pt_mfns[i] = p2m(si, pt_first + i as u64);
            pt_vas[i] = si.pt_base + i as u64 * PAGE;
        }
        let mut tail_mfns = [0; TAIL];
        let mut n_tail = 0;
        let mut pfn = si.nr_pages;
        while pfn > 0 && n_tail < TAIL {
            pfn -= 1;
            let va = VIRT_BASE + pfn * PAGE;
            if !mapped(si, va) {
                tail_mfns[n_tail] = p2m(si, pfn);
                n_tail += 1;
            } else {
                break;
            }
        }
        let mut ro_mfns = [0; 8];
        let code = main as *const () as u64;
        for (i, m) in ro_mfns.iter_mut().enumerate() {
            *m = mfn_of_va(si, (code & !0xfff) + (i as u64 % 3) * PAGE);
        }
        ro_mfns[7] = mfn_of_va(si, &raw const MC as u64);
        let mut max_mfn = 0;
        for p in 0..si.nr_pages {
            max_mfn = max_mfn.max(p2m(si, p));
        }
        let shared_va = out_va + SHARED_PAGE * PAGE;
        let shared_mfn = si.shared_info >> 12;
        let _ = map_page(shared_va, shared_mfn);
        let grant_va = out_va + GRANT_PAGE * PAGE;
        let grant_mfn = test_guests::grant_frame().unwrap_or(0);
        if grant_mfn != 0 {
            let _ = map_page(grant_va, grant_mfn);
        }
        let ring_va = |mfn: u64| {
            let pfn = m2p(mfn);
            if mfn != 0 && pfn < si.nr_pages {
                VIRT_BASE + pfn * PAGE
            } else {
                out_va
            }
        };
        let console = si.console_ring().map_or(0, |(m, _)| m.0);
        let console_port = si.console_ring().map_or(0, |(_, p)| u64::from(p.0));
        let start_info_va = pv_guest::start_info().map_or(out_va, |_| {
            // The page Xen put start_info in follows the p2m list.
            let p2m_end = si.mfn_list + si.nr_pages * 8;
            let va = (p2m_end + PAGE - 1) & !(PAGE - 1);
            // SAFETY: the page after the p2m list is mapped (our builder's layout); only
            // its first byte is read, to check it is start_info.
            let first = unsafe { (va as *const [u8; 14]).read_volatile() };
            if &first == b"xen-3.0-x86_64" {
                va
            } else {
                out_va
            }
        });
        Facts {
            me,
            others,
            n_others,
            out_va,
            out_mfns,
            remap_va,
            remap_pte,
            tail_mfns,
            n_tail,
            pt_mfns,
            pt_vas,
            n_pt,
            l4_mfn: mfn_of_va(si, si.pt_base),
            ro_mfns,
            shared_va,
            shared_mfn,
            grant_va: if grant_mfn != 0 { grant_va } else { out_va },
            grant_mfn,
            start_info_va,
            ring_vas: [ring_va(console), ring_va(si.store_mfn)],
            ports: [console_port, u64::from(si.store_evtchn)],
            max_mfn,
        }
    }

    /// Our frames at start (bit per MFN below 2^18): random frame numbers are checked
    /// against it, not against the m2p table, which the fuzzer itself rewrites.
    static OWN: [AtomicU64; 4096] = [const { AtomicU64::new(0) }; 4096];

    fn own(m: u64) -> bool {
        let i = (m / 64) as usize;
        i < OWN.len() && OWN[i].load(Ordering::Relaxed) & (1 << (m % 64)) != 0
    }

    fn record_own(si: &StartInfo) -> bool {
        let mut all = true;
        for pfn in 0..si.nr_pages {
            let m = p2m(si, pfn);
            let i = (m / 64) as usize;
            match OWN.get(i) {
                Some(w) => {
                    w.fetch_or(1 << (m % 64), Ordering::Relaxed);
                }
                None => all = false,
            }
        }
        all
    }

    // ---- exceptions -------------------------------------------------------------------

    static TRAPS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

    /// A handler: pops Xen's `rcx r11 [error] rip ...` frame, advances rip by `skip`,
    /// counts, and returns with `HYPERVISOR_iret`.
    macro_rules! handler {
        ($name:ident, $err:literal, $skip:literal, $slot:literal) => {
            #[unsafe(naked)]
            unsafe extern "C" fn $name() {
                naked_asm!(
                    "pop %rcx",
                    "pop %r11",
                    concat!("add $", $err, ", %rsp"),
                    concat!("addq $", $skip, ", (%rsp)"),
                    "lock incq {count}+{off}(%rip)",
                    "push $0",
                    "push %rcx",
                    "push %r11",
                    "push %rax",
                    "mov ${iret}, %eax",
                    "syscall",
                    count = sym TRAPS,
                    off = const $slot * 8,
                    iret = const nr::IRET,
                    options(att_syntax)
                )
            }
        };
    }
    handler!(de_entry, 0, 3, 0);
    handler!(bp_entry, 0, 0, 1);
    handler!(ud_entry, 0, 2, 2);
    handler!(gp_entry, 8, 3, 3);
    handler!(pf_entry, 8, 3, 4);

    fn install_traps() -> i64 {
        let t = |vector: u8, flags: u8, h: unsafe extern "C" fn()| TrapInfo {
            vector,
            flags,
            cs: FLAT_KERNEL_CS64,
            pad: 0,
            address: h as *const () as u64,
        };
        let table = [
            t(0, 0, de_entry),
            t(3, 3, bp_entry),
            t(6, 0, ud_entry),
            t(13, 0, gp_entry),
            t(14, 0, pf_entry),
            TrapInfo::default(),
        ];
        // SAFETY: a terminated trap table whose handlers return to the next instruction.
        unsafe { hypercall_raw(nr::SET_TRAP_TABLE, [table.as_ptr() as u64, 0, 0, 0, 0]) }
    }

    /// Raises #DE, #BP, #UD, #GP and #PF once each with our handlers installed; false if
    /// one was not counted.
    fn exceptions() -> bool {
        if install_traps() != 0 {
            return false;
        }
        let before: [u64; 5] = core::array::from_fn(|i| TRAPS[i].load(Ordering::SeqCst));
        // SAFETY: each faulting instruction is skipped by its handler (3, 0, 2, 3, 3 bytes:
        // `div %rcx` = 48 f7 f1, `ud2` = 0f 0b, `mov (%r14),%rax` = 49 8b 06); the
        // clobbered registers are declared.
        unsafe {
            asm!("div %rcx", inout("rax") 1u64 => _, inout("rdx") 0u64 => _, in("rcx") 0u64,
                 options(att_syntax, nostack));
            asm!("int3", options(att_syntax, nostack));
            asm!("ud2", options(att_syntax, nostack));
            asm!("mov (%r14), %rax", in("r14") 0x8000_0000_0000_0000u64, out("rax") _,
                 options(att_syntax, nostack));
            asm!("mov (%r14), %rax", in("r14") 0x0000_5a00_0000_0000u64, out("rax") _,
                 options(att_syntax, nostack));
        }
        (0..5).all(|i| TRAPS[i].load(Ordering::SeqCst) == before[i] + 1)
    }

    // ---- argument pools ----------------------------------------------------------------

    impl Fuzz {
        fn boundary(&mut self) -> u64 {
            let b = self.rng.pick(&BOUNDARY);
            match self.rng.below(4) {
                0 => b,
                1 => b.wrapping_add(self.rng.below(3)).wrapping_sub(1),
                2 => self.rng.next(),
                _ => self.rng.below(64),
            }
        }

        /// A pointer into OUT, page-aligned or not.
        fn out_ptr(&mut self) -> u64 {
            let off = self.rng.below(OUT_PTR_PAGES * PAGE);
            let off = match self.rng.below(3) {
                0 => off & !0xfff,
                1 => off & !7,
                _ => off,
            };
            self.f.out_va + off
        }

        /// Bytes left after `p` in OUT, or in the area for its later pages (`u64::MAX`
        /// when `p` is not in the area).
        fn room(&self, p: u64) -> u64 {
            let out_end = self.f.out_va + OUT_PAGES as u64 * PAGE;
            let end = self.f.out_va + AREA_PAGES as u64 * PAGE;
            if p >= self.f.out_va && p < out_end {
                out_end - p
            } else if p >= out_end && p < end {
                end - p
            } else {
                u64::MAX
            }
        }

        /// `n` elements of `size` bytes at `p`, clamped to end inside OUT; over other
        /// readable memory (the m2p table, our image) to a page or so, so that a call
        /// does not spend minutes walking it.
        fn clamp(&self, p: u64, n: u64, size: u64) -> u64 {
            let n = n.min(self.room(p) / size.max(1));
            if (MACH2PHYS_VIRT_START..MACH2PHYS_VIRT_END).contains(&p) || p >= VIRT_BASE {
                n.min(PAGE / size.max(1) + 1)
            } else {
                n
            }
        }

        /// Any pointer argument: the hypervisor may write through it.
        fn ptr(&mut self) -> u64 {
            let f = &self.f;
            match self.rng.below(16) {
                0..=6 => self.out_ptr(),
                7 => {
                    let i = self.rng.below(f.n_pt.max(1) as u64) as usize;
                    f.pt_vas[i] + (self.rng.below(512) * 8)
                }
                8 => f.start_info_va + self.rng.below(PAGE),
                // Past vcpu_info[0] (its event mask must stay set).
                9 => f.shared_va + 64 + (self.rng.below(PAGE - 64) & !7),
                10 => f.grant_va + (self.rng.below(PAGE) & !7),
                11 => self.rng.pick(&HV_ADDRS),
                12 => self.rng.pick(&BAD_ADDRS),
                13 => MACH2PHYS_VIRT_START + self.rng.below(1 << 20) * 8,
                14 => self.boundary(),
                _ => f.out_va + OUT_PTR_PAGES * PAGE - self.rng.below(16),
            }
        }

        /// A pointer that is never valid memory of ours.
        fn bad_ptr(&mut self) -> u64 {
            if self.rng.chance(2) {
                self.rng.pick(&HV_ADDRS)
            } else {
                self.rng.pick(&BAD_ADDRS)
            }
        }

        fn domid(&mut self) -> u64 {
            match self.rng.below(10) {
                0 | 1 => DOMID_SELF,
                2 => self.f.me,
                3 => 0,
                4 | 5 if self.f.n_others > 0 => {
                    self.f.others[self.rng.below(self.f.n_others as u64) as usize]
                }
                6 => self.rng.pick(&SPECIAL_DOMIDS),
                7 => self.rng.below(0x10000),
                _ => self.rng.below(8),
            }
        }

        /// An own frame the hypervisor may write (scratch, unmapped tail, page tables,
        /// grant frame), or a foreign, huge or hypervisor one.
        fn mfn(&mut self) -> u64 {
            let f = &self.f;
            match self.rng.below(12) {
                0..=2 => f.out_mfns[self.rng.below(OUT_PAGES as u64) as usize],
                3 | 4 if f.n_tail > 0 => f.tail_mfns[self.rng.below(f.n_tail as u64) as usize],
                5 => f.pt_mfns[self.rng.below(f.n_pt.max(1) as u64) as usize],
                6 => f.grant_mfn,
                7 => {
                    let m = self.rng.below(f.max_mfn + 256);
                    self.not_own(m)
                }
                8 => f.max_mfn + 1 + self.rng.below(4096),
                9 => {
                    let m =
                        self.rng
                            .pick(&[0, 1, 0x100, 0xfffff, 1 << 40, u64::MAX >> 12, u64::MAX]);
                    self.not_own(m)
                }
                _ => {
                    let m = self.rng.below(0x8000);
                    self.not_own(m)
                }
            }
        }

        /// `m`, unless it is one of our frames (a random pick may be our stack or code,
        /// which the hypervisor rightly lets us write): then a scratch frame.
        fn not_own(&mut self, m: u64) -> u64 {
            if own(m) {
                self.f.out_mfns[self.rng.below(OUT_PAGES as u64) as usize]
            } else {
                m
            }
        }

        /// Any frame, including our code and data (only read or mapped read-only... or
        /// mapped in REMAP).
        fn any_mfn(&mut self) -> u64 {
            if self.rng.chance(4) {
                let f = &self.f;
                match self.rng.below(3) {
                    0 => f.l4_mfn,
                    1 => f.shared_mfn,
                    _ => f.ro_mfns[self.rng.below(8) as usize],
                }
            } else {
                self.mfn()
            }
        }

        fn port(&mut self) -> u64 {
            match self.rng.below(8) {
                0 | 1 => self.ports[self.rng.below(8) as usize],
                2 => self.f.ports[self.rng.below(2) as usize],
                3 => self
                    .rng
                    .pick(&[0, 1, 2, 3, 63, 64, 1023, 1024, 4095, 4096, 131071, 131072]),
                4 => self.boundary(),
                _ => self.rng.below(16),
            }
        }

        fn gref(&mut self) -> u64 {
            match self.rng.below(6) {
                0 => self.rng.below(2),
                1 | 2 => self.rng.below(40),
                3 => self.rng.pick(&[511, 512, 513, 4095, 32767, 32768, 1 << 20]),
                _ => self.boundary(),
            }
        }

        fn vcpu(&mut self) -> u64 {
            self.rng
                .pick(&[0, 0, 0, 1, 2, 31, 127, 128, 0xffff_ffff, 0x8000_0000])
        }

        fn remap_va(&mut self) -> u64 {
            self.f.remap_va + self.rng.below(REMAP_PAGES as u64) * PAGE
        }

        /// A linear address for a mapping change: a REMAP page (aligned or not) or one
        /// that is never ours.
        fn map_va(&mut self) -> u64 {
            match self.rng.below(5) {
                0..=2 => self.remap_va(),
                3 => self.remap_va() + self.rng.below(PAGE),
                _ => self.bad_ptr(),
            }
        }

        /// A PTE value with `mfn` and random flags (present usually).
        fn pte(&mut self, mfn: u64) -> u64 {
            let flags = match self.rng.below(4) {
                0 => 0x67,
                1 => 0x25,
                2 => self.rng.next() & 0xfff,
                _ => (self.rng.next() & 0xfff) | (self.rng.next() & (0xfff << 52)),
            };
            mfn.wrapping_shl(12) | flags
        }

        /// Machine address of a page-table entry we may change: a REMAP PTE, an entry of a
        /// frame we do not use as a page table, or a bad one.
        fn pte_ptr(&mut self) -> u64 {
            match self.rng.below(5) {
                0..=2 => self.f.remap_pte[self.rng.below(REMAP_PAGES as u64) as usize],
                // Never our page tables in use: a free frame (maybe pinned by now), a
                // scratch one (refused) or one not ours.
                3 => {
                    let f = &self.f;
                    let m = match self.rng.below(3) {
                        0 if f.n_tail > 0 => f.tail_mfns[self.rng.below(f.n_tail as u64) as usize],
                        1 => f.out_mfns[self.rng.below(OUT_PAGES as u64) as usize],
                        _ => {
                            let m = self.rng.below(f.max_mfn + 4096);
                            self.not_own(m)
                        }
                    };
                    m << 12 | (self.rng.below(512) * 8)
                }
                _ => self.boundary(),
            }
        }

        // ---- writing structs into OUT ---------------------------------------------------

        fn put(&mut self, at: u64, v: u64, size: u64) {
            // Only into the area (room is u64::MAX outside it).
            let room = self.room(at);
            if room < size || room == u64::MAX {
                return;
            }
            // SAFETY: `at..at+size` lies in OUT (checked), our scratch static.
            unsafe {
                match size {
                    1 => (at as *mut u8).write_volatile(v as u8),
                    2 => (at as *mut u16).write_unaligned(v as u16),
                    4 => (at as *mut u32).write_unaligned(v as u32),
                    _ => (at as *mut u64).write_unaligned(v),
                }
            }
        }

        /// Fills `len` bytes at `at` with shaped random words.
        fn fill(&mut self, at: u64, len: u64) {
            let mut o = 0;
            while o + 8 <= len {
                let v = match self.rng.below(6) {
                    0 => self.ptr(),
                    1 => self.domid() | self.port() << 32,
                    2 => self.mfn(),
                    3 => self.rng.next(),
                    _ => self.boundary(),
                };
                self.put(at.wrapping_add(o), v, 8);
                o += 8;
            }
        }

        /// A struct buffer in OUT.
        fn buf(&mut self, size: u64) -> u64 {
            let p = self.f.out_va + self.rng.below(OUT_PTR_PAGES * PAGE / 8) * 8;
            self.fill(p, size);
            p
        }

        /// Where a struct goes: usually a fresh buffer, sometimes any pointer.
        /// (Never a pointer into OUT as a non-fresh struct: OUT's stale contents could be
        /// anything we wrote before, and replayed as requests they could unmap our own
        /// code or give back our frames.)
        fn struct_ptr(&mut self, size: u64) -> (u64, bool) {
            if self.rng.chance(8) {
                let out = self.f.out_va..self.f.out_va + OUT_PAGES as u64 * PAGE;
                loop {
                    let p = self.ptr();
                    if !out.contains(&p) {
                        return (p, false);
                    }
                }
            } else {
                (self.buf(size), true)
            }
        }
    }

    // ---- one call -----------------------------------------------------------------------

    impl Fuzz {
        /// Builds one hypercall: (number, args). Never one that ends or blinds us.
        fn gen_call(&mut self, depth: u32) -> (u32, [u64; 5]) {
            let mut a = [0u64; 5];
            let nr_ = match self.rng.below(51) {
                0 => self.rng.pick(&UNKNOWN_NRS),
                n => [
                    0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 12, 13, 14, 14, 15, 16, 17, 18, 19,
                    20, 20, 20, 21, 22, 24, 25, 26, 26, 27, 28, 29, 30, 31, 32, 32, 33, 34, 35, 36,
                    37, 38, 39, 40, 41, 42, 48, 49,
                ][n as usize - 1],
            };
            // Inside a multicall an earlier entry may write its output over a later
            // entry's struct in OUT: no entry whose struct, so changed, could block us
            // for good (a poll without timeout), record a shutdown code, move our
            // vcpu_info, give back our frames or rewrite our page tables.
            let nr_ = if depth > 0 && matches!(nr_, 1 | 12 | 24 | 26 | 29) {
                nr::XEN_VERSION
            } else {
                nr_
            };
            match nr_ {
                // set_trap_table: a table read from anywhere (restored before exceptions).
                0 => a[0] = if self.rng.chance(4) { 0 } else { self.ptr() },
                1 => self.mmu_update(&mut a),
                2 => {
                    let (p, _) = self.struct_ptr(16 * 8);
                    if self.rng.chance(2) {
                        for i in 0..16 {
                            let m = self.mfn();
                            self.put(p.wrapping_add(i * 8), m, 8);
                        }
                    }
                    a[0] = p;
                    a[1] = self
                        .rng
                        .pick(&[0, 1, 2, 512, 4096, 7168, 8192, 65536, u64::MAX]);
                }
                3 => {
                    a[0] = self.boundary();
                    a[1] = self.ptr();
                }
                4 => {
                    a[0] = self.ptr();
                    a[1] = self.ptr();
                    a[2] = self.ptr();
                }
                5 => a[0] = self.rng.below(3),
                // sched_op_compat: yield or unknown commands (not block, not shutdown).
                6 => {
                    a[0] = self.rng.pick(&[0, 3, 4, 5, 7, 100, u64::MAX]);
                    a[1] = self.boundary();
                }
                7 | 27 | 34 | 35..=42 | 48 | 49 => {
                    let (p, _) = self.struct_ptr(256);
                    a[0] = p;
                    a[1] = self.boundary();
                }
                8 => {
                    a[0] = self.rng.below(9);
                    // DR7: never an enabled breakpoint (that would trap in our code).
                    a[1] = if a[0] == 7 {
                        self.boundary() & !0xff | 0x400
                    } else {
                        self.boundary()
                    };
                    if a[0] == 7 && self.rng.chance(2) {
                        a[1] = 0;
                    }
                }
                10 => {
                    a[0] = match self.rng.below(3) {
                        0 => self.mfn() << 12 | (self.rng.below(512) * 8),
                        1 => self.mfn() << 12 | self.rng.below(PAGE),
                        _ => self.boundary(),
                    };
                    a[1] = self.rng.next();
                }
                12 => self.memory_op(&mut a),
                13 if depth == 0 => self.multicall(&mut a),
                13 => a = [self.ptr(), self.boundary(), 0, 0, 0],
                14 => {
                    a[0] = self.map_va();
                    let m = self.any_mfn();
                    a[1] = if self.rng.chance(6) { 0 } else { self.pte(m) };
                    a[2] = match self.rng.below(4) {
                        0 => self.rng.below(8),
                        1 => self.ptr() & !7,
                        _ => 2,
                    };
                }
                15 => a[0] = self.boundary(),
                16 => {
                    let (p, _) = self.struct_ptr(32);
                    self.evtchn_fields(p);
                    a[0] = p;
                }
                17 => {
                    a[0] = self.rng.below(16)
                        | if self.rng.chance(8) {
                            self.rng.next()
                        } else {
                            0
                        };
                    a[1] = self.ptr();
                }
                18 => self.console_io(&mut a),
                19 => {
                    let (p, _) = self.struct_ptr(32);
                    a[0] = p;
                }
                20 => self.grant_op(&mut a),
                21 => {
                    a[0] = self.rng.below(3);
                    a[1] = self.rng.pick(&[0, 1, 2, 3, 4, 5, 32, 33, 63, 64, u64::MAX]);
                }
                22 => {
                    a[0] = self.map_va();
                    let m = self.any_mfn();
                    a[1] = self.pte(m);
                    a[2] = self.rng.below(8);
                    a[3] = self.domid();
                }
                24 => self.vcpu_op(&mut a),
                25 => {
                    a[0] = self.rng.pick(&[0, 1, 2, 3, 4, 100, u64::MAX]);
                    a[1] = match a[0] {
                        3 => self
                            .rng
                            .pick(&[0, 3, 0xe02b, 0xe033, 0x1234, 0xfff8, 0xffff]),
                        _ => {
                            if self.rng.chance(2) {
                                0
                            } else {
                                self.boundary()
                            }
                        }
                    };
                }
                26 => self.mmuext_op(&mut a),
                28 => {
                    a[0] = self.rng.below(3);
                    a[1] = self.ptr();
                }
                29 => self.sched_op(&mut a),
                30 => {
                    let (p, fresh) = self.struct_ptr(16);
                    if fresh {
                        let kind = self.rng.pick(&[0, 1, 2, 3, 4, 5, 7, 8, 0xffff]);
                        self.put(p, kind, 2);
                        let fl = self.rng.below(4);
                        self.put(p.wrapping_add(2), fl, 2);
                    }
                    a[0] = self.rng.below(3);
                    a[1] = p;
                }
                32 => {
                    let cmd = if self.rng.chance(16) {
                        self.boundary()
                    } else {
                        self.rng.below(14)
                    };
                    let (p, fresh) = self.struct_ptr(32);
                    if fresh {
                        self.evtchn_struct(cmd, p);
                    }
                    a[0] = cmd;
                    a[1] = p;
                }
                33 => {
                    a[0] = if self.rng.chance(8) {
                        self.boundary()
                    } else {
                        self.rng.below(32)
                    };
                    let (p, fresh) = self.struct_ptr(32);
                    if fresh && a[0] == 6 {
                        let iopl = self.rng.pick(&[0, 1, 3, 4, u64::MAX]);
                        self.put(p, iopl, 4);
                    }
                    a[1] = p;
                }
                _ => {
                    for x in a.iter_mut() {
                        *x = match self.rng.below(3) {
                            0 => self.boundary(),
                            1 => self.bad_ptr(),
                            _ => self.rng.next(),
                        };
                    }
                }
            }
            (nr_, a)
        }

        fn mmu_update(&mut self, a: &mut [u64; 5]) {
            let (p, fresh) = self.struct_ptr(16 * 16);
            let mut n = self.rng.pick(&[0, 1, 1, 2, 4, 16, 1024, u32::MAX as u64]);
            if fresh {
                for i in 0..16 {
                    let at = p.wrapping_add(i * 16);
                    let (ptr, val) = match self.rng.below(8) {
                        // Our own table entries, rewritten with their current value.
                        0 => {
                            let t = self.rng.below(self.f.n_pt.max(1) as u64) as usize;
                            let idx = self.rng.below(512);
                            // SAFETY: a page-table frame of the initial mapping (read-only).
                            let cur = unsafe {
                                ((self.f.pt_vas[t] + idx * 8) as *const u64).read_volatile()
                            };
                            ((self.f.pt_mfns[t] << 12) | (idx * 8), cur)
                        }
                        // m2p updates of our frames.
                        1 => {
                            let m = self.any_mfn();
                            (m << 12 | 1, self.boundary())
                        }
                        2 => (self.pte_ptr() | self.rng.below(4), self.rng.next()),
                        _ => {
                            let m = self.any_mfn();
                            (self.pte_ptr(), self.pte(m))
                        }
                    };
                    self.put(at, ptr, 8);
                    self.put(at.wrapping_add(8), val, 8);
                }
                n = n.min(16); // only the requests written now
            } else {
                n = self.clamp(p, n, 16);
            }
            a[0] = p;
            a[1] = n | if self.rng.chance(16) { 1 << 31 } else { 0 };
            a[2] = if self.rng.chance(3) { 0 } else { self.ptr() };
            a[3] = if self.rng.chance(2) {
                DOMID_SELF
            } else {
                self.domid() | self.domid() << 16
            };
        }

        fn mmuext_op(&mut self, a: &mut [u64; 5]) {
            let (p, fresh) = self.struct_ptr(16 * 24);
            if fresh {
                for i in 0..16 {
                    let at = p.wrapping_add(i * 24);
                    let cmd = if self.rng.chance(16) {
                        self.boundary()
                    } else {
                        self.rng.below(21)
                    };
                    let arg1 = match cmd {
                        // A new base: our current L4 or a frame that cannot be one (a free
                        // frame would validate as an empty L4 and lose our mappings).
                        5 => {
                            if self.rng.chance(2) {
                                self.f.l4_mfn
                            } else {
                                let m = self.f.out_mfns[0];
                                self.rng.pick(&[
                                    m,
                                    self.f.pt_mfns[0],
                                    0,
                                    u64::MAX,
                                    self.f.max_mfn + 7,
                                ])
                            }
                        }
                        0..=4 | 15 | 19 | 20 => self.any_mfn(),
                        16 | 17 => self.mfn(),
                        7 | 9 | 11 => self.map_va(),
                        13 => self.ptr(),
                        _ => self.boundary(),
                    };
                    let arg2 = match cmd {
                        17 => self.any_mfn(),
                        13 => self.rng.pick(&[0, 1, 16, 8192, 8193, u64::MAX]),
                        8 | 9 => self.ptr(),
                        _ => self.boundary(),
                    };
                    self.put(at, cmd, 4);
                    let pad = if self.rng.chance(8) {
                        self.rng.next()
                    } else {
                        0
                    };
                    self.put(at.wrapping_add(4), pad, 4);
                    self.put(at.wrapping_add(8), arg1, 8);
                    self.put(at.wrapping_add(16), arg2, 8);
                }
            }
            let n = self.rng.pick(&[0, 1, 1, 2, 4, 16, 4096, u32::MAX as u64]);
            a[0] = p;
            let n = if fresh {
                n.min(16)
            } else {
                self.clamp(p, n, 24)
            };
            a[1] = n | if self.rng.chance(16) { 1 << 31 } else { 0 };
            a[2] = if self.rng.chance(3) { 0 } else { self.ptr() };
            a[3] = if self.rng.chance(2) {
                DOMID_SELF
            } else {
                self.domid()
            };
        }

        fn memory_op(&mut self, a: &mut [u64; 5]) {
            let cmd = match self.rng.below(8) {
                0 => self.boundary(),
                1 => self.rng.below(29) | self.rng.below(1 << 20) << 6,
                _ => self.rng.below(29),
            };
            // A fresh struct or an unreadable one: stale contents could give back our
            // own code frames.
            let (p, fresh) = if self.rng.chance(8) {
                (self.bad_ptr(), false)
            } else {
                (self.buf(64), true)
            };
            if fresh && cmd & 0x3f <= 6 {
                // struct xen_memory_reservation: extent list, count, order, flags, domid.
                let list = self.out_ptr() & !7;
                let order = self
                    .rng
                    .pick(&[0, 0, 0, 1, 2, 9, 10, 18, 31, 32, 63, u32::MAX as u64]);
                let n = self.rng.pick(&[0, 1, 1, 2, 3, 8, 64, 1 << 20, u64::MAX]);
                // Only the extents written now (stale ones could be our own code).
                let n = n.min(8);
                // A decrease gives back only frames we never touch again unseen.
                for i in 0..n.min(8) {
                    let m = match self.rng.below(4) {
                        0 if self.f.n_tail > 0 => {
                            self.f.tail_mfns[self.rng.below(self.f.n_tail as u64) as usize]
                        }
                        1 => self.f.max_mfn + 1 + self.rng.below(64),
                        2 => {
                            let m = self.boundary();
                            self.not_own(m)
                        }
                        _ => self.f.out_mfns[self.rng.below(OUT_PAGES as u64) as usize],
                    };
                    self.put(list.wrapping_add(i * 8), m, 8);
                }
                let l = if self.rng.chance(8) { self.ptr() } else { list };
                self.put(p, l, 8);
                self.put(p.wrapping_add(8), n, 8);
                self.put(p.wrapping_add(16), order, 4);
                let flags = if self.rng.chance(2) {
                    0
                } else {
                    self.rng.next() & 0xffff_ffff
                };
                self.put(p.wrapping_add(20), flags, 4);
                let d = if self.rng.chance(2) {
                    DOMID_SELF
                } else {
                    self.domid()
                };
                self.put(p.wrapping_add(24), d, 2);
            }
            a[0] = cmd;
            a[1] = p;
        }

        fn multicall(&mut self, a: &mut [u64; 5]) {
            let mc = &raw mut MC as u64;
            let n = self.rng.below(9);
            for i in 0..n {
                let (nr_, args) = self.gen_call(1);
                let e = (mc + i * 64) as *mut u64;
                // SAFETY: entry i of MC (64 bytes each, 8 entries fit a page).
                unsafe {
                    e.write_volatile(u64::from(nr_));
                    e.add(1).write_volatile(0);
                    for (j, v) in args.iter().enumerate() {
                        e.add(2 + j).write_volatile(*v);
                    }
                    e.add(7).write_volatile(self.rng.next());
                }
            }
            a[0] = if self.rng.chance(16) {
                self.bad_ptr()
            } else {
                mc
            };
            a[1] = if a[0] == mc {
                if self.rng.chance(16) {
                    self.rng.pick(&[0, 64, 1 << 20, u32::MAX as u64])
                } else {
                    n
                }
            } else {
                self.boundary()
            };
            if a[0] == mc && a[1] > 64 {
                // Past our entries: keep the count to what MC holds.
                a[1] = 64;
                // SAFETY: MC is ours; entries past `n` become harmless xen_version calls.
                unsafe {
                    for i in n..64 {
                        let e = (mc + i * 64) as *mut u64;
                        e.write_volatile(u64::from(nr::XEN_VERSION));
                        e.add(2).write_volatile(0);
                        e.add(3).write_volatile(0);
                    }
                }
            }
        }

        fn console_io(&mut self, a: &mut [u64; 5]) {
            a[0] = self.rng.pick(&[0, 0, 1, 2, u64::MAX]);
            // Writes print nothing (the rate limit would drop our progress lines): no
            // bytes, or a count over memory that cannot be read.
            if a[0] == 0 {
                a[1] = self.rng.pick(&[0, 0x1000_0000, u32::MAX as u64, u64::MAX]);
                a[2] = if a[1] == 0 {
                    self.ptr()
                } else {
                    self.rng
                        .pick(&[0, 0x0000_8000_0000_0000, 0x8000_0000_0000_0000])
                };
            } else {
                a[2] = self.ptr();
                let n = self.boundary();
                a[1] = self.clamp(a[2], n, 1);
            }
        }

        fn grant_op(&mut self, a: &mut [u64; 5]) {
            let cmd = if self.rng.chance(16) {
                self.boundary()
            } else {
                self.rng.below(13)
            };
            // Element sizes: map 24, unmap 24, setup 24, dump 4, transfer 24, copy 40,
            // query 16, unmap_and_replace 24, set_version 4, status frames 24,
            // get_version 8, swap 8, cache_flush 24.
            let size = [24, 24, 24, 4, 24, 40, 16, 24, 4, 24, 8, 8, 24]
                .get(cmd as usize)
                .copied()
                .unwrap_or(24);
            let (p, fresh) = self.struct_ptr(size * 8);
            let n = self
                .rng
                .pick(&[0, 1, 1, 1, 2, 3, 8, 512, u32::MAX as u64, 1 << 31]);
            if fresh {
                for i in 0..8 {
                    let e = p.wrapping_add(i * size);
                    match cmd {
                        0 => {
                            let host = match self.rng.below(3) {
                                0 => self.f.remap_pte[self.rng.below(REMAP_PAGES as u64) as usize],
                                _ => self.map_va(),
                            };
                            self.put(e, host, 8);
                            let fl = self.rng.below(32)
                                | if self.rng.chance(16) {
                                    self.rng.next()
                                } else {
                                    0
                                };
                            self.put(e.wrapping_add(8), fl, 4);
                            let r = self.gref();
                            self.put(e.wrapping_add(12), r, 4);
                            let d = self.domid();
                            self.put(e.wrapping_add(16), d, 2);
                        }
                        1 | 7 => {
                            let host = self.map_va();
                            self.put(e, host, 8);
                            let other = if cmd == 7 {
                                self.map_va()
                            } else {
                                self.boundary()
                            };
                            self.put(e.wrapping_add(8), other, 8);
                            let h = if self.rng.chance(2) {
                                self.handles[self.rng.below(8) as usize]
                            } else {
                                self.boundary()
                            };
                            self.put(e.wrapping_add(16), h, 4);
                        }
                        2 | 9 => {
                            let d = self.domid();
                            self.put(e, d, 2);
                            let nf = self.rng.pick(&[0, 1, 2, 4, 64, 65, u32::MAX as u64]);
                            self.put(e.wrapping_add(4), nf, 4);
                            let list = self.ptr();
                            let list = if self.room(list) < 64 * 8 {
                                self.f.out_va
                            } else {
                                list
                            };
                            self.put(e.wrapping_add(8) + if cmd == 9 { 8 } else { 0 }, list, 8);
                        }
                        4 => {
                            let m = self.mfn();
                            self.put(e, m, 8);
                            let d = self.domid();
                            self.put(e.wrapping_add(8), d, 2);
                            let r = self.gref();
                            self.put(e.wrapping_add(12), r, 4);
                        }
                        5 => {
                            for side in 0..2u64 {
                                let s = e.wrapping_add(side * 16);
                                let gref = self.rng.chance(2);
                                let _ = side;
                                let u = if gref {
                                    self.gref()
                                } else if side == 1 {
                                    self.mfn()
                                } else {
                                    self.any_mfn()
                                };
                                self.put(s, u, 8);
                                let d = self.domid();
                                self.put(s.wrapping_add(8), d, 2);
                                let off = self.rng.pick(&[0, 1, 8, 2048, 4095, 4096, 0xffff]);
                                self.put(s.wrapping_add(10), off, 2);
                            }
                            let len = self.rng.pick(&[0, 1, 8, 2048, 4096, 4097, 0xffff]);
                            self.put(e.wrapping_add(32), len, 2);
                            let fl = self.rng.below(8)
                                | if self.rng.chance(8) {
                                    self.rng.next()
                                } else {
                                    0
                                };
                            self.put(e.wrapping_add(34), fl, 2);
                        }
                        8 => {
                            let v = self.rng.pick(&[0, 1, 1, 2, 3, u64::MAX]);
                            self.put(e, v, 4);
                        }
                        11 => {
                            let r = self.gref();
                            self.put(e, r, 4);
                            let r = self.gref();
                            self.put(e.wrapping_add(4), r, 4);
                        }
                        _ => {}
                    }
                }
            }
            a[0] = cmd;
            a[1] = p;
            a[2] = if fresh {
                n.min(8)
            } else {
                self.clamp(p, n, size)
            };
        }

        fn evtchn_fields(&mut self, p: u64) {
            let cmd = self.rng.below(14);
            self.put(p, cmd, 4);
            self.evtchn_struct(cmd, p.wrapping_add(8));
        }

        fn evtchn_struct(&mut self, cmd: u64, p: u64) {
            match cmd {
                // alloc_unbound: dom, remote_dom.
                6 => {
                    let d = if self.rng.chance(2) {
                        DOMID_SELF
                    } else {
                        self.domid()
                    };
                    self.put(p, d, 2);
                    let r = self.domid();
                    self.put(p.wrapping_add(2), r, 2);
                }
                // bind_interdomain: remote_dom, remote_port.
                0 => {
                    let d = self.domid();
                    self.put(p, d, 2);
                    let port = self.port();
                    self.put(p.wrapping_add(4), port, 4);
                }
                // bind_virq: virq, vcpu.
                1 => {
                    let v = self
                        .rng
                        .pick(&[0, 1, 2, 3, 4, 5, 8, 9, 11, 23, 24, u32::MAX as u64]);
                    self.put(p, v, 4);
                    let c = self.vcpu();
                    self.put(p.wrapping_add(4), c, 4);
                }
                // close, send, unmask: port; status: dom, port; bind_vcpu: port, vcpu.
                3 | 4 | 9 | 8 => {
                    let port = self.port();
                    self.put(p, port, 4);
                    let c = self.vcpu();
                    self.put(p.wrapping_add(4), c, 4);
                }
                5 => {
                    let d = self.domid();
                    self.put(p, d, 2);
                    let port = self.port();
                    self.put(p.wrapping_add(4), port, 4);
                }
                7 => {
                    let c = self.vcpu();
                    self.put(p, c, 4);
                }
                10 => {
                    let d = if self.rng.chance(2) {
                        DOMID_SELF
                    } else {
                        self.domid()
                    };
                    self.put(p, d, 2);
                }
                // init_control: control gfn, offset, vcpu; expand_array: array gfn.
                11 | 12 => {
                    let m = self.mfn();
                    self.put(p, m, 8);
                    let off = self
                        .rng
                        .pick(&[0, 8, 64, 4032, 4064, 4096, u32::MAX as u64]);
                    self.put(p.wrapping_add(8), off, 4);
                    let c = self.vcpu();
                    self.put(p.wrapping_add(12), c, 4);
                }
                13 => {
                    let port = self.port();
                    self.put(p, port, 4);
                    let pr = self.rng.pick(&[0, 7, 8, 15, 16, u32::MAX as u64]);
                    self.put(p.wrapping_add(4), pr, 4);
                }
                _ => {}
            }
        }

        fn vcpu_op(&mut self, a: &mut [u64; 5]) {
            let cmd = if self.rng.chance(16) {
                self.boundary()
            } else {
                self.rng.below(16)
            };
            let mut vcpu = self.vcpu();
            // Never take our only vCPU down.
            if cmd == 2 && vcpu == 0 {
                vcpu = 1;
            }
            // Always a fresh struct: stale contents could move our vcpu_info (unmasking
            // events into garbage callbacks) or aim the runstate area at our own memory.
            let (p, fresh) = (self.buf(64), true);
            if fresh {
                match cmd {
                    // register_vcpu_info: a frame that must be refused (moving vcpu_info
                    // would unmask events into garbage callbacks).
                    10 => {
                        let m = self.rng.pick(&[
                            self.f.pt_mfns[0],
                            self.f.max_mfn + 3,
                            u64::MAX,
                            0x100,
                        ]);
                        self.put(p, m, 8);
                        let off = self.rng.pick(&[0, 64, 4032, 4095, 4096]);
                        self.put(p.wrapping_add(8), off, 4);
                    }
                    // runstate / time areas: a pointer into OUT or a bad one.
                    5 | 13 => {
                        let v = if self.rng.chance(2) {
                            self.out_ptr()
                        } else {
                            self.bad_ptr()
                        };
                        self.put(p, v, 8);
                    }
                    6 | 8 => {
                        let t = self.boundary();
                        self.put(p, t, 8);
                        let fl = self.rng.below(2);
                        self.put(p.wrapping_add(8), fl, 4);
                    }
                    _ => {}
                }
            }
            a[0] = cmd;
            a[1] = vcpu;
            a[2] = p;
        }

        fn sched_op(&mut self, a: &mut [u64; 5]) {
            let cmd = self
                .rng
                .pick(&[0, 0, 2, 3, 3, 4, 4, 5, 6, 7, 8, 100, u64::MAX]);
            a[0] = cmd;
            match cmd {
                // shutdown: only with a pointer that cannot be read.
                2 => a[1] = self.bad_ptr(),
                // poll: timeouts in the past (0 would wait forever).
                3 => {
                    let (p, _) = (self.buf(24), ());
                    let ports = self.buf(8 * 4);
                    for i in 0..8 {
                        let port = self.port();
                        self.put(ports.wrapping_add(i * 4), port, 4);
                    }
                    let l = if self.rng.chance(8) {
                        self.ptr()
                    } else {
                        ports
                    };
                    self.put(p, l, 8);
                    let n = self.rng.pick(&[0, 1, 2, 8, 128, 129, u32::MAX as u64]);
                    self.put(p.wrapping_add(8), n.min(8), 4);
                    if n > 8 {
                        self.put(p.wrapping_add(8), n, 4);
                        self.put(p, self.f.out_va, 8);
                    }
                    let t = self.rng.pick(&[1, 2, 100]);
                    self.put(p.wrapping_add(16), t, 8);
                    a[1] = p;
                }
                // remote_shutdown of anyone, with any reason: must be refused for a domU.
                4 => {
                    let p = self.buf(8);
                    let d = self.domid();
                    self.put(p, d, 2);
                    let r = self.rng.pick(&[0, 1, 2, 3, 4, 5, 255]);
                    self.put(p.wrapping_add(4), r, 4);
                    a[1] = if self.rng.chance(8) { self.ptr() } else { p };
                }
                // shutdown_code: a recorded code wins over our final poweroff.
                5 => {
                    let p = self.buf(4);
                    let r = self.rng.pick(&[0, 255]);
                    self.put(p, r, 4);
                    a[1] = p;
                }
                // watchdog: ids, timeouts that never fire in a run (0 = destroy).
                6 => {
                    let p = self.buf(8);
                    let id = self.rng.pick(&[0, 0, 1, 2, 3, 4, u32::MAX as u64]);
                    self.put(p, id, 4);
                    let t = self.rng.pick(&[0, 0, 1_000_000, u32::MAX as u64]);
                    self.put(p.wrapping_add(4), t, 4);
                    a[1] = p;
                }
                0 => {}
                _ => a[1] = self.ptr(),
            }
        }

        /// Scribbles random values over our grant entries, shared_info or a ring, keeping
        /// our event mask set.
        fn scribble(&mut self) {
            let (base, len) = match self.rng.below(4) {
                0 | 1 => (self.f.grant_va, PAGE),
                2 => (self.f.shared_va + 64, PAGE - 64),
                _ => (self.f.ring_vas[self.rng.below(2) as usize], PAGE),
            };
            if base == self.f.out_va {
                return;
            }
            for _ in 0..self.rng.below(8) + 1 {
                let off = self.rng.below(len / 8) * 8;
                let v = if base == self.f.grant_va && self.rng.chance(2) {
                    // A plausible v1 entry: flags, domid, frame.
                    let fl = self.rng.pick(&[0, 1, 2, 5, 0x19, 0x1d, 0xffff]);
                    let d = self.domid();
                    let m = self.mfn() & 0xffff_ffff;
                    fl | d << 16 | m << 32
                } else if self.rng.chance(2) {
                    self.boundary()
                } else {
                    self.rng.next()
                };
                // SAFETY: `base` maps one of our pages (grant frame, shared_info, ring);
                // plain stores, no reference into them exists.
                unsafe { ((base.wrapping_add(off)) as *mut u64).write_volatile(v) };
            }
            if base != self.f.shared_va && self.rng.chance(2) {
                let port = self.f.ports[self.rng.below(2) as usize];
                // SAFETY: EVTCHNOP_send of a struct on our stack.
                let _ = unsafe {
                    hypercall_raw(nr::EVENT_CHANNEL_OP, [4, &raw const port as u64, 0, 0, 0])
                };
            }
            self.keep_masked();
        }

        fn keep_masked(&self) {
            let off = core::mem::offset_of!(SharedInfo, vcpu_info)
                + core::mem::offset_of!(VcpuInfo, evtchn_upcall_mask);
            // SAFETY: our shared_info mapping; a byte store of vCPU 0's upcall mask.
            unsafe { ((self.f.shared_va + off as u64) as *mut u8).write_volatile(1) };
        }

        /// Remembers ports and handles the hypervisor wrote into OUT structs.
        fn harvest(&mut self, nr_: u32, a: &[u64; 5], r: i64) {
            let room = self.room(a[1]);
            if r != 0 || room < 32 || room == u64::MAX {
                return;
            }
            // SAFETY: a[1] points into the area with 32 bytes left (checked).
            let word = |o: u64| unsafe { ((a[1] + o) as *const u32).read_unaligned() } as u64;
            match (nr_, a[0]) {
                (32, 6) => self.ports[self.rng.below(8) as usize] = word(4),
                (32, 0) => self.ports[self.rng.below(8) as usize] = word(8),
                (32, 1) => self.ports[self.rng.below(8) as usize] = word(8),
                (32, 7) => self.ports[self.rng.below(8) as usize] = word(4),
                (20, 0) => self.handles[self.rng.below(8) as usize] = word(20),
                _ => {}
            }
        }

        fn trace(&self, nr_: u32, a: &[u64; 5]) {
            io_println!(
                "fuzz: call {} nr {} {:#x} {:#x} {:#x} {:#x} {:#x}",
                self.calls,
                nr_,
                a[0],
                a[1],
                a[2],
                a[3],
                a[4]
            );
            if nr_ == nr::MULTICALL && a[0] == &raw const MC as u64 {
                for i in 0..a[1].min(8) {
                    let e = (a[0] + i * 64) as *const u64;
                    // SAFETY: entry i of MC.
                    let w: [u64; 7] = core::array::from_fn(|j| unsafe {
                        e.add(if j == 0 { 0 } else { j + 1 }).read_volatile()
                    });
                    io_println!(
                        "fuzz:   mc {} nr {} {:#x} {:#x} {:#x} {:#x} {:#x} {:#x}",
                        i,
                        w[0],
                        w[1],
                        w[2],
                        w[3],
                        w[4],
                        w[5],
                        w[6]
                    );
                }
            }
        }

        fn one(&mut self) {
            match self.rng.below(64) {
                0 => self.scribble(),
                _ => {
                    let (nr_, a) = self.gen_call(0);
                    if self.calls >= self.trace_from {
                        self.trace(nr_, &a);
                    }
                    // SAFETY: the generator never asks for anything that writes outside
                    // OUT/REMAP/our shared pages or ends the domain (see the module doc).
                    let r = unsafe { hypercall_raw(nr_, a) };
                    if r >= 0 {
                        self.succeeded += 1;
                    }
                    self.harvest(nr_, &a, r);
                    self.calls += 1;
                }
            }
            self.keep_masked();
        }
    }

    fn main(si: &'static StartInfo) -> ! {
        let cmd = si.cmd_line_bytes();
        let seed = value(cmd, "seed").and_then(parse_u64).unwrap_or(1);
        let calls = value(cmd, "calls").and_then(parse_u64).unwrap_or(10_000);
        let crash = value(cmd, "end") == Some(&b"crash"[..]);
        if !record_own(si) {
            io_println!("fuzz: frames past the OWN bitmap; random frames may be ours");
        }
        let f = facts(si, cmd);
        io_println!(
            "fuzz: seed {} calls {} me d{} out {:#x} remap {:#x} l4 {:#x} tail {} pt {}",
            seed,
            calls,
            f.me,
            f.out_va,
            f.remap_va,
            f.l4_mfn,
            f.n_tail,
            f.n_pt
        );
        let mut fz = Fuzz {
            f,
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            ports: [0; 8],
            handles: [0; 8],
            calls: 0,
            succeeded: 0,
            trace_from: value(cmd, "trace").and_then(parse_u64).unwrap_or(u64::MAX),
        };
        let every = value(cmd, "every")
            .and_then(parse_u64)
            .unwrap_or(10_000)
            .max(1);
        fz.keep_masked();
        if !exceptions() {
            io_println!("fuzz: exceptions not delivered at start");
        }
        let mut bad_exceptions = 0u64;
        while fz.calls < calls {
            let before = fz.calls;
            fz.one();
            if fz.calls != before && fz.calls.is_multiple_of(every) {
                io_println!("fuzz: {} calls", fz.calls);
            }
            if fz.calls != before && fz.calls.is_multiple_of(2_000) && !exceptions() {
                bad_exceptions += 1;
            }
        }
        io_println!(
            "fuzz: done {} calls seed {} exceptions-missed {} succeeded {}",
            fz.calls,
            seed,
            bad_exceptions,
            fz.succeeded
        );
        if crash {
            // SAFETY: clears the trap table; the int3 then crashes this domain on purpose.
            unsafe {
                hypercall_raw(nr::SET_TRAP_TABLE, [0, 0, 0, 0, 0]);
                asm!("int3", options(nostack));
            }
        }
        pv_guest::poweroff()
    }
}
