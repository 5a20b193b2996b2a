//! Hostile-guest property tests: thousands of random hypercalls, exceptions, timer ticks
//! and ring scribbles against domains made by the real builder.
//!
//! The guest is modelled as an adversary that controls its registers and every byte it
//! can write (its writable pages and its console/xenstore rings), nothing more. After
//! every step the test checks what must hold whatever the guest does:
//! * the hypervisor did not panic (debug builds also panic on integer overflow);
//! * the `Resume` is sane: a guest root owned by, typed as an L4 of, and active for a
//!   live domain, with a frame that can be `iretq`'d to ring 3 — or `Exit` once no domain
//!   is left;
//! * frame accounting: every frame is free or owned by a live domain, and every
//!   reference a validated page table holds is backed by the target's type and general
//!   counts (no writable mapping of a page table, no entry to another domain's frame);
//! * when every domain has ended, every frame is free again.
//!
//! Deterministic: a fixed seed by default (fast enough for `cargo test` in debug).
//! `HV_FUZZ_SEED=<n>` picks another seed, `HV_FUZZ_EPISODES=<n>` runs longer.

extern crate std;

use crate::bundle::build::Guest;
use crate::domain::elfnotes::test_elf::{TestElf, VIRT_BASE};
use crate::domain::runtime::DomainState;
use crate::evtchn::ChannelState;
use crate::mmu::PageType;
use crate::mmu::guest::copy_to_guest;
use crate::platform::{ExitStatus, GuestFrame, MachineMemory, Resume};
use crate::sched::policy::RunState;
use crate::testutil::Rng;
use crate::testutil::{TestHv, create_domains, entry, hypercall, test_hv_with};
use xen_pv_abi::event_channel::Virq;

const NR_VIRQS: u32 = Virq::COUNT;
use std::collections::HashMap;
use std::format;
use std::string::String;
use std::vec::Vec;
use xen_pv_abi::layout::{
    FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64, MACH2PHYS_VIRT_START, PAGE_SIZE,
    is_canonical,
};
use xen_pv_abi::mmu::{MmuUpdate, MmuextOp, MulticallEntry};
use xen_pv_abi::traps::IretContext;
use xen_pv_abi::{DomId, EvtchnPort, Mfn, VcpuId};
use zerocopy::IntoBytes;

const FRAMES: usize = 8192;
const PAGE: u64 = PAGE_SIZE as u64;
const HV_SLOTS: [u64; 16] = [0xabc_0063; 16];
/// Memory of each fuzzed domain.
const DOMAIN_KIB: u32 = 8 * 1024;
/// Steps per episode (an episode ends earlier when every domain has ended).
const STEPS: usize = 3000;
const DEFAULT_EPISODES: usize = 16;
const DEFAULT_SEED: u64 = 0x5eed_f00d_cafe_0001;

/// One fuzzing run: a hypervisor with three built domains (dom0 and two domUs).
struct Fuzz {
    hv: TestHv,
    rng: Rng,
    frame: GuestFrame,
    /// Frames free before any domain was built.
    initial_free: usize,
    /// What happened, for a failure message (last steps only).
    log: Vec<String>,
    /// Hypercall number -> (calls, calls that returned 0).
    stats: std::collections::BTreeMap<u64, (u32, u32)>,
    steps: usize,
    /// Pages mapped from VIRT_BASE on at start of day (the rest of the memory is not).
    mapped_pages: u64,
    /// Cache of [`Fuzz::own_frames`] by domain id.
    owned: HashMap<u16, (Vec<Mfn>, Vec<Mfn>)>,
    /// Partial tables seen by the frame checks (so a run shows it reached them).
    partial_seen: std::cell::Cell<u64>,
    /// A continuation was left for later: check the frames after this step.
    check_now: bool,
    /// Copied trees handed to mmuext_op, and how many of those calls returned 0.
    copies: (u32, u32),
}

/// Hypercalls the hypervisor implements (the rest are -ENOSYS): most calls go there.
const IMPLEMENTED: [u64; 24] = [
    0, 1, 2, 3, 4, 5, 6, 10, 12, 13, 14, 15, 16, 17, 18, 20, 21, 23, 24, 25, 26, 29, 30, 32,
];

/// Port numbers at and around every limit: buckets, the 2-level ABI and the default
/// quota (1023), the FIFO ABI (2^17), and beyond.
const EDGE_PORTS: [u32; 12] = [
    0,
    1,
    63,
    64,
    1023,
    1024,
    4095,
    4096,
    131_071,
    131_072,
    1 << 31,
    u32::MAX,
];

/// Segment descriptors: flat code/data at DPL 0 and 3, 32-bit code, LDT, TSS, call
/// gate, not present, garbage.
const DESCRIPTORS: [u64; 10] = [
    0x00af_9a00_0000_ffff,
    0x00cf_9200_0000_ffff,
    0x00af_fa00_0000_ffff,
    0x00cf_f200_0000_ffff,
    0x00cf_fa00_0000_ffff,
    0x0000_8200_1000_0067,
    0x0000_8900_1000_0067,
    0xffff_ec00_0008_1234,
    0x00af_7a00_0000_ffff,
    0xdead_beef_dead_beef,
];

/// Entry flags an attacker likes to try (valid ones, superpage, caching, G, grant bit).
const PTE_FLAG_CHOICES: [u64; 12] = [
    0x1,
    0x3,
    0x5,
    0x7,
    0x67,
    0x63,
    0x83,
    0x1b,
    0x103,
    1 << 62 | 0x3,
    1 << 63 | 0x3,
    0xfff,
];

impl Fuzz {
    fn new(seed: u64) -> Fuzz {
        let mut hv = test_hv_with(FRAMES, HV_SLOTS, b"console=com1");
        let initial_free = hv.frames.free_count();
        let image = TestElf::valid().build();
        let guest = |name, dom0| Guest {
            image: &image,
            memory_kib: DOMAIN_KIB,
            dom0,
            name,
            cmdline: "fuzz",
            weight: 0,
            cap: 0,
            max_grant_frames: 0,
            max_maptrack_frames: 0,
        };
        create_domains(
            &mut hv,
            &[
                guest("zero", true),
                guest("one", false),
                guest("two", false),
            ],
        );
        assert_eq!(hv.domains.len(), 3);
        assert!(
            hv.domains.iter().all(|d| d.is_runnable()),
            "{}",
            hv.platform.console
        );
        let mut frame = GuestFrame::default();
        let r = hv.start(&mut frame);
        let mut fuzz = Fuzz {
            hv,
            rng: Rng(seed),
            frame,
            initial_free,
            log: Vec::new(),
            stats: Default::default(),
            steps: 0,
            owned: HashMap::new(),
            mapped_pages: 0,
            partial_seen: Default::default(),
            check_now: false,
            copies: (0, 0),
        };
        let space = fuzz.hv.current_space(fuzz.current());
        let mapped = |page: u64| {
            let va = VIRT_BASE + page * PAGE;
            let mut b = [0u8];
            crate::mmu::guest::copy_from_guest(&fuzz.hv.mem, &fuzz.hv.frames, space, va, &mut b)
                .is_ok()
        };
        fuzz.mapped_pages = (0..u64::from(DOMAIN_KIB) / 4)
            .take_while(|&p| mapped(p))
            .count() as u64;
        assert!(fuzz.mapped_pages > 16, "{}", fuzz.mapped_pages);
        fuzz.check_resume(r);
        fuzz
    }

    fn note(&mut self, what: String) {
        if self.log.len() >= 40 {
            self.log.remove(0);
        }
        self.log.push(what);
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\nlast steps:\n{}\nconsole tail:\n{}",
            self.log.join("\n"),
            tail(&self.hv.platform.console, 2000)
        );
    }

    fn current(&self) -> usize {
        self.hv
            .cpu
            .current
            .unwrap_or_else(|| self.fail("no current domain"))
    }

    // ---- what the guest may use as arguments -------------------------------------------

    /// Frames each domain owns, and those of them that are validated page tables;
    /// rescanned every few steps (the scan is slow and the sets change slowly).
    fn own_frames(&mut self, dom: DomId) -> &(Vec<Mfn>, Vec<Mfn>) {
        if self.steps.is_multiple_of(32) {
            self.owned.clear();
        }
        let frames = &self.hv.frames;
        self.owned.entry(dom.0).or_insert_with(|| {
            let all: Vec<Mfn> = (0..FRAMES as u64)
                .map(Mfn)
                .filter(|&m| frames.owner(m) == Some(dom))
                .collect();
            let tables = all
                .iter()
                .copied()
                .filter(|&m| {
                    frames
                        .type_state(m)
                        .is_some_and(|s| s.count > 0 && s.ty.pt_level().is_some())
                })
                .collect();
            (all, tables)
        })
    }

    fn own_mfn(&mut self) -> Mfn {
        let dom = self.hv.domains[self.current()].id;
        let tables_first = self.rng.chance(50);
        let (all, tables) = self.own_frames(dom).clone();
        // Page tables are the interesting targets: prefer them half of the time.
        if tables_first && !tables.is_empty() {
            return self.rng.pick(&tables);
        }
        if all.is_empty() {
            return Mfn(self.rng.below(FRAMES as u64));
        }
        self.rng.pick(&all)
    }

    /// Any frame number: own, another domain's, free, beyond RAM, absurd.
    fn any_mfn(&mut self) -> u64 {
        match self.rng.below(6) {
            0..=2 => self.own_mfn().0,
            3 => self.rng.below(FRAMES as u64),
            4 => FRAMES as u64 + self.rng.below(1 << 20),
            _ => self.rng.next(),
        }
    }

    /// A VA inside the domain's mapped region (page tables there are read-only).
    fn region_va(&mut self) -> u64 {
        let pages = if self.rng.chance(95) {
            self.mapped_pages
        } else {
            u64::from(DOMAIN_KIB) / 4
        };
        VIRT_BASE + self.rng.below(pages) * PAGE + self.rng.below(PAGE)
    }

    /// A guest pointer of every flavour.
    fn any_va(&mut self) -> u64 {
        match self.rng.below(10) {
            0..=4 => self.region_va() & !7,
            5 => self.region_va(),
            6 => VIRT_BASE + (u64::from(DOMAIN_KIB) * 1024) + self.rng.below(1 << 30),
            7 => MACH2PHYS_VIRT_START + self.rng.below(1 << 32),
            8 => self.rng.pick(&[
                0,
                1,
                0x1000,
                0x7fff_ffff_f000,
                0x8000_0000_0000,
                0xffff_7fff_ffff_fff8,
                0xffff_8800_0000_0000 - 8,
                u64::MAX,
                u64::MAX - 7,
            ]),
            _ => self.rng.next(),
        }
    }

    /// An integer argument: small, boundary, or anything.
    fn any_int(&mut self) -> u64 {
        match self.rng.below(6) {
            0..=2 => self.rng.below(32),
            3 => self.rng.pick(&[
                u64::from(u32::MAX),
                u64::from(i32::MAX as u32),
                1 << 31,
                1 << 32,
                u64::MAX,
                u64::MAX - 1,
                0x7fef,
                0x7ff0,
                DomId::SELF.0.into(),
                1 << 16 | 0x7ff0,
            ]),
            4 => self.rng.below(1 << 20),
            _ => self.rng.next(),
        }
    }

    fn any_arg(&mut self) -> u64 {
        match self.rng.below(3) {
            0 => self.any_int(),
            1 => self.any_va(),
            _ => self.any_mfn(),
        }
    }

    fn any_pte(&mut self) -> u64 {
        if self.rng.chance(10) {
            return self.rng.next();
        }
        let mfn = self.any_mfn() & 0xf_ffff_ffff;
        (mfn << 12) | self.rng.pick(&PTE_FLAG_CHOICES)
    }

    /// An entry a well-meaning kernel could write into `table`: one of its own frames
    /// with ordinary flags (a page for an L1, a table or fresh frame above).
    fn plausible_entry(&mut self, table: Mfn) -> u64 {
        let level = self
            .hv
            .frames
            .type_state(table)
            .and_then(|s| s.ty.pt_level())
            .unwrap_or(1);
        let target = self.own_mfn();
        let flags = if level == 1 {
            self.rng.pick(&[0x25u64, 0x27, 0x67, 0x8000_0000_0000_0025])
        } else {
            self.rng.pick(&[0x67u64, 0x27, 0x25])
        };
        if self.rng.chance(10) {
            return 0;
        }
        target.maddr() | flags
    }

    // ---- what the guest may write --------------------------------------------------------

    /// Writes `bytes` at `va` as the guest could (only through its writable mappings).
    fn guest_write(&self, va: u64, bytes: &[u8]) -> bool {
        let idx = self.current();
        let space = self.hv.current_space(idx);
        copy_to_guest(&self.hv.mem, &self.hv.frames, space, va, bytes).is_ok()
    }

    /// A buffer in the guest filled with `bytes`: its VA (maybe the write failed: the
    /// hypercall then sees whatever was there).
    fn guest_buffer(&mut self, bytes: &[u8]) -> u64 {
        let va = self.region_va() & !7;
        self.guest_write(va, bytes);
        va
    }

    fn mmu_updates(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            let table = self.own_mfn();
            let cmd = self.rng.pick(&[0u64, 0, 0, 1, 2, 3, 7]);
            let ptr = match self.rng.below(8) {
                0 => self.rng.next(),
                1 => (self.any_mfn() << 12) | cmd,
                _ => table.maddr() + self.rng.below(512) * 8 + cmd,
            };
            let val = if cmd == 1 {
                self.any_int()
            } else if self.rng.chance(50) {
                self.plausible_entry(table)
            } else {
                self.any_pte()
            };
            out.extend_from_slice(MmuUpdate { ptr, val }.as_bytes());
        }
        out
    }

    fn mmuext_ops(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            let cmd = if self.rng.chance(90) {
                self.rng.below(22) as u32
            } else {
                self.rng.next() as u32
            };
            let arg1 = match self.rng.below(4) {
                0 | 1 => self.own_mfn().0,
                2 => self.any_va(),
                _ => self.any_arg(),
            };
            let mut arg2 = self.any_arg();
            let mut arg1 = arg1;
            if cmd == 13 && self.rng.chance(70) {
                // set_ldt: a page-aligned VA of the region (or 0) and a few entries.
                arg1 = if self.rng.chance(80) {
                    self.region_va() & !(PAGE - 1)
                } else {
                    0
                };
                arg2 = self.rng.pick(&[0, 1, 3, 512, 8192, 8193]);
            }
            out.extend_from_slice(
                MmuextOp {
                    cmd,
                    pad: self.rng.next() as u32,
                    arg1,
                    arg2,
                }
                .as_bytes(),
            );
        }
        out
    }

    fn multicall_entries(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut op = if self.rng.chance(90) {
                self.rng.below(40)
            } else {
                self.rng.next()
            };
            // As in step_hypercall: iret mostly ends the domain.
            if op == 23 && self.rng.chance(97) {
                op = 17;
            }
            let args = core::array::from_fn(|_| self.any_arg());
            out.extend_from_slice(
                MulticallEntry {
                    op,
                    result: self.rng.next(),
                    args,
                }
                .as_bytes(),
            );
        }
        out
    }

    fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.rng.next() as u8).collect()
    }

    // ---- event channels, scheduler and timers: shaped arguments -------------------------

    fn current_dom(&self) -> DomId {
        self.hv.domains[self.current()].id
    }

    /// Another domain's id (live or ended).
    fn other_dom(&mut self) -> DomId {
        let me = self.current_dom();
        let others: Vec<DomId> = self
            .hv
            .domains
            .iter()
            .map(|d| d.id)
            .filter(|&d| d != me)
            .collect();
        if others.is_empty() {
            return me;
        }
        self.rng.pick(&others)
    }

    /// A domain id: itself, another domain, DOMID_SELF, reserved or junk ids.
    fn any_domid(&mut self) -> u16 {
        match self.rng.below(10) {
            0..=2 => self.current_dom().0,
            3..=5 => self.other_dom().0,
            6 => DomId::SELF.0,
            7 => self.rng.pick(&[0, 3, 4, 0x7fef]),
            8 => self.rng.pick(&[0x7ff1, 0x7ff2, 0x7ff3, 0x7ff4, 0xffff]),
            _ => self.rng.next() as u16,
        }
    }

    /// The ports of `dom` that are in use (not free).
    fn ports_in_use(&self, dom: DomId) -> Vec<u32> {
        (0u32..)
            .map_while(|p| Some(p).zip(self.hv.evtchn.channel(dom, EvtchnPort(p))))
            .filter(|(_, c)| c.state != ChannelState::Free)
            .map(|(p, _)| p)
            .collect()
    }

    /// A port: one of its own in use, small, another domain's, at a limit, or junk.
    fn any_port(&mut self) -> u32 {
        let dom = match self.rng.below(8) {
            0..=3 => self.current_dom(),
            4 => self.other_dom(),
            5 => return self.rng.below(8) as u32,
            6 => return self.rng.pick(&EDGE_PORTS),
            _ => return self.rng.next() as u32,
        };
        let ports = self.ports_in_use(dom);
        if ports.is_empty() {
            return self.rng.below(4) as u32;
        }
        self.rng.pick(&ports)
    }

    fn any_vcpu(&mut self) -> u32 {
        self.rng
            .pick(&[0, 0, 0, 0, 0, 1, 5, 31, 32, u32::MAX, self.rng.0 as u32])
    }

    fn any_virq(&mut self) -> u32 {
        if self.rng.chance(85) {
            self.rng.below(u64::from(NR_VIRQS)) as u32
        } else {
            self.rng.pick(&[NR_VIRQS, 31, 32, u32::MAX])
        }
    }

    /// A frame for a FIFO control block or event-array page: its own (often a page
    /// table), another domain's, beyond RAM, or absurd.
    fn fifo_frame(&mut self) -> u64 {
        match self.rng.below(8) {
            0..=3 => self.own_mfn().0,
            4 => {
                let other = self.other_dom();
                let all = self.own_frames(other).0.clone();
                if all.is_empty() {
                    self.rng.below(FRAMES as u64)
                } else {
                    self.rng.pick(&all).0
                }
            }
            5 => FRAMES as u64 + self.rng.below(1 << 20),
            6 => self.rng.pick(&[0, 1, u64::MAX, 1 << 52, (1 << 52) - 1]),
            _ => self.any_mfn(),
        }
    }

    /// A system time: 0, the past, now, the near future, the far future, negative.
    fn any_time(&mut self) -> u64 {
        let now = self.hv.now_ns();
        match self.rng.below(8) {
            0 => 0,
            1 => self.rng.pick(&[1, now / 2, now.saturating_sub(1)]),
            2 => now,
            3..=5 => now.saturating_add(self.rng.below(20_000_000)),
            6 => now.saturating_add(self.rng.pick(&[1 << 50, (1 << 50) - 1, 1 << 62])),
            _ => self
                .rng
                .pick(&[u64::MAX, i64::MAX as u64, 1 << 63, self.rng.0]),
        }
    }

    /// The argument struct of `EVTCHNOP_<cmd>`, with fields shaped for it.
    fn evtchn_struct(&mut self, cmd: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let put32 = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        match cmd {
            // bind_interdomain: often a port really offered to us.
            0 => {
                let me = self.current_dom();
                let offered: Vec<(DomId, u32)> = self
                    .hv
                    .domains
                    .iter()
                    .map(|d| d.id)
                    .flat_map(|d| self.ports_in_use(d).into_iter().map(move |p| (d, p)))
                    .filter(|&(d, p)| {
                        self.hv.evtchn.channel(d, EvtchnPort(p)).map(|c| c.state)
                            == Some(ChannelState::Unbound { remote: me })
                    })
                    .collect();
                let (dom, port) = if !offered.is_empty() && self.rng.chance(60) {
                    let (d, p) = self.rng.pick(&offered);
                    let d = if d == me && self.rng.chance(50) {
                        DomId::SELF
                    } else {
                        d
                    };
                    (d.0, p)
                } else {
                    (self.any_domid(), self.any_port())
                };
                out.extend_from_slice(&dom.to_le_bytes());
                out.extend_from_slice(&(self.rng.next() as u16).to_le_bytes());
                put32(&mut out, port);
                put32(&mut out, self.rng.next() as u32);
            }
            1 => {
                let (virq, vcpu) = (self.any_virq(), self.any_vcpu());
                put32(&mut out, virq);
                put32(&mut out, vcpu);
                put32(&mut out, self.rng.next() as u32);
            }
            3 | 4 | 9 => {
                let port = self.any_port();
                put32(&mut out, port);
            }
            5 => {
                let dom = self.any_domid();
                out.extend_from_slice(&dom.to_le_bytes());
                out.extend_from_slice(&[0, 0]);
                let port = self.any_port();
                put32(&mut out, port);
                out.extend_from_slice(&[0xa5; 16]);
            }
            6 => {
                let dom = if self.rng.chance(70) {
                    self.rng.pick(&[DomId::SELF.0, self.current_dom().0])
                } else {
                    self.any_domid()
                };
                let remote = self.any_domid();
                out.extend_from_slice(&dom.to_le_bytes());
                out.extend_from_slice(&remote.to_le_bytes());
                put32(&mut out, self.rng.next() as u32);
            }
            7 => {
                let vcpu = self.any_vcpu();
                put32(&mut out, vcpu);
                put32(&mut out, self.rng.next() as u32);
            }
            8 => {
                let (port, vcpu) = (self.any_port(), self.any_vcpu());
                put32(&mut out, port);
                put32(&mut out, vcpu);
            }
            10 => {
                let dom = if self.rng.chance(60) {
                    DomId::SELF.0
                } else {
                    self.any_domid()
                };
                out.extend_from_slice(&dom.to_le_bytes());
            }
            11 => {
                let gfn = self.fifo_frame();
                out.extend_from_slice(&gfn.to_le_bytes());
                let any_offset = self.rng.below(4096) as u32;
                let offset =
                    self.rng
                        .pick(&[0, 8, 64, 4024, 4028, 4032, 4096, u32::MAX, any_offset]);
                let vcpu = self.any_vcpu();
                put32(&mut out, offset);
                put32(&mut out, vcpu);
                out.extend_from_slice(&[0xff; 8]);
            }
            12 => {
                let gfn = self.fifo_frame();
                out.extend_from_slice(&gfn.to_le_bytes());
            }
            13 => {
                let port = self.any_port();
                let any_prio = self.rng.below(32) as u32;
                let prio = self.rng.pick(&[0, 7, 15, 16, u32::MAX, any_prio]);
                put32(&mut out, port);
                put32(&mut out, prio);
            }
            _ => out = self.random_bytes(24),
        }
        out
    }

    fn evtchn_cmd(&mut self) -> u32 {
        if self.rng.chance(95) {
            self.rng.below(14) as u32
        } else {
            self.rng.pick(&[14, 255, u32::MAX, self.rng.0 as u32])
        }
    }

    /// `event_channel_op(cmd, arg)` (32) or the legacy form (16) with its struct.
    fn shaped_evtchn(&mut self, nr: u64, args: &mut [u64; 5]) {
        let cmd = self.evtchn_cmd();
        let body = self.evtchn_struct(cmd);
        let buf = if nr == 16 {
            let mut b = cmd.to_le_bytes().to_vec();
            b.extend_from_slice(&body);
            b
        } else {
            body
        };
        let va = self.guest_buffer(&buf);
        args[0] = if nr == 16 {
            va
        } else if self.rng.chance(95) {
            u64::from(cmd)
        } else {
            u64::from(cmd) | self.rng.next() << 32
        };
        let ptr = if self.rng.chance(90) {
            va
        } else {
            self.any_va()
        };
        if nr == 16 {
            args[0] = ptr;
        } else {
            args[1] = ptr;
        }
    }

    /// `sched_op` (29): yield, block, poll with port lists and timeouts, remote
    /// shutdown, shutdown codes.
    fn shaped_sched(&mut self, args: &mut [u64; 5]) {
        // Shutdown (2) is left to the unshaped calls: it ends the episode's domains.
        let cmd = self.rng.pick(&[0u32, 0, 0, 1, 3, 3, 3, 3, 4, 4, 5, 7, 99]);
        args[0] = u64::from(cmd);
        let arg: Vec<u8> = match cmd {
            3 => {
                let n = self.rng.pick(&[0u32, 1, 1, 2, 3, 8, 128, 129, u32::MAX]);
                let listed = n.min(129);
                let mut list = Vec::new();
                for _ in 0..listed {
                    let p = self.any_port();
                    list.extend_from_slice(&p.to_le_bytes());
                }
                let ports = if self.rng.chance(90) {
                    self.guest_buffer(&list)
                } else {
                    self.any_va()
                };
                // Mostly a timeout that comes: a poll without one may never return.
                let timeout = if self.rng.chance(60) {
                    self.hv.now_ns().saturating_add(self.rng.below(20_000_000))
                } else {
                    self.any_time()
                };
                let mut b = ports.to_le_bytes().to_vec();
                b.extend_from_slice(&n.to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
                b.extend_from_slice(&timeout.to_le_bytes());
                b
            }
            4 => {
                // Ending other domains is dom0's right: keep it rare.
                let dom = if self.rng.chance(5) {
                    self.any_domid()
                } else {
                    self.rng.pick(&[0x7ff2, 0xffff, self.current_dom().0])
                };
                let mut b = dom.to_le_bytes().to_vec();
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(&(self.rng.below(8) as u32).to_le_bytes());
                b
            }
            5 | 2 => (self.rng.below(8) as u32).to_le_bytes().to_vec(),
            _ => self.random_bytes(8),
        };
        let va = self.guest_buffer(&arg);
        args[1] = if self.rng.chance(90) {
            va
        } else {
            self.any_va()
        };
    }

    /// `vcpu_op(cmd, vcpu, arg)` (24): the timer commands with periods and deadlines
    /// around their limits.
    fn shaped_vcpu_op(&mut self, args: &mut [u64; 5]) {
        let cmd = self
            .rng
            .pick(&[1u32, 3, 6, 6, 7, 8, 8, 9, 0, 2, 4, 10, 15, 16, u32::MAX]);
        args[0] = u64::from(cmd);
        args[1] = u64::from(self.any_vcpu());
        let arg: Vec<u8> = match cmd {
            6 => {
                let period = self.rng.pick(&[
                    0,
                    999_999,
                    1_000_000,
                    10_000_000,
                    (1 << 62) - 1,
                    1 << 62,
                    u64::MAX,
                    self.rng.0,
                ]);
                period.to_le_bytes().to_vec()
            }
            8 => {
                let mut b = self.any_time().to_le_bytes().to_vec();
                let flags = self.rng.pick(&[0u32, 1, 2, 3, u32::MAX]);
                b.extend_from_slice(&flags.to_le_bytes());
                b.extend_from_slice(&[0; 4]);
                b
            }
            _ => self.random_bytes(16),
        };
        let va = self.guest_buffer(&arg);
        args[2] = if self.rng.chance(90) {
            va
        } else {
            self.any_va()
        };
    }

    // ---- steps ----------------------------------------------------------------------------

    /// A hypercall with arguments shaped for its number half of the time.
    fn step_hypercall(&mut self) -> Resume {
        let mut nr = match self.rng.below(20) {
            0 => self.rng.next(),
            1 => self.rng.below(1 << 16),
            2..=7 => self.rng.below(64),
            // Event channels, the scheduler and timers: most of their state is new.
            8..=11 => self.rng.pick(&[32, 32, 32, 32, 16, 29, 29, 15, 24, 24]),
            _ => self.rng.pick(&IMPLEMENTED),
        };
        // iret with a bad context ends the domain: keep it rare so domains live long.
        if nr == 23 && self.rng.chance(97) {
            nr = 17;
        }
        let mut args: [u64; 5] = core::array::from_fn(|_| self.any_arg());
        let count = self.rng.pick(&[0usize, 1, 2, 3, 8, 40]);
        let shaped = if matches!(nr, 15 | 16 | 24 | 29 | 32) {
            85
        } else {
            60
        };
        if self.rng.chance(shaped) {
            match nr {
                1 => {
                    let buf = self.mmu_updates(count);
                    args[0] = self.guest_buffer(&buf);
                    args[1] = count as u64;
                    args[2] = match self.rng.below(4) {
                        0 => self.any_va(),
                        1 => self.guest_buffer(&[0; 8]),
                        _ => 0,
                    };
                    args[3] = if self.rng.chance(80) {
                        u64::from(DomId::SELF.0)
                    } else {
                        self.rng.pick(&[0, 1, 2, 0x7ff0_0000, 0x0002_7ff0])
                    };
                }
                26 => {
                    let buf = self.mmuext_ops(count);
                    args[0] = self.guest_buffer(&buf);
                    args[1] = count as u64;
                    args[2] = match self.rng.below(4) {
                        0 => self.any_va(),
                        1 => self.guest_buffer(&[0; 8]),
                        _ => 0,
                    };
                    args[3] = u64::from(DomId::SELF.0);
                }
                13 => {
                    let n = count.min(8);
                    let buf = self.multicall_entries(n);
                    args[0] = self.guest_buffer(&buf);
                    args[1] = n as u64;
                }
                14 => {
                    args[0] = self.region_va() & !(PAGE - 1);
                    args[1] = if self.rng.chance(50) {
                        let target = self.own_mfn();
                        target.maddr() | self.rng.pick(&[0x25u64, 0x27, 0x67, 0])
                    } else {
                        self.any_pte()
                    };
                    let ptr = self.any_va();
                    args[2] = self.rng.pick(&[0, 1, 2, 3, 4, 6, ptr]);
                }
                2 => {
                    // set_gdt: a list of own frames (fresh ones or tables), plausible
                    // entry counts.
                    let n = self.rng.below(3) as usize;
                    let list: Vec<u8> = (0..n)
                        .flat_map(|_| self.own_mfn().0.to_le_bytes())
                        .collect();
                    args[0] = self.guest_buffer(&list);
                    args[1] = self.rng.pick(&[0, 1, 16, 512, 513, 1024, 7168, 7169]);
                }
                10 => {
                    // update_descriptor: an entry of an own frame (maybe a GDT/LDT page).
                    args[0] = self.own_mfn().maddr() + self.rng.below(512) * 8;
                    args[1] = self.rng.pick(&DESCRIPTORS);
                }
                4 => {
                    // set_callbacks: event, failsafe, syscall entry points.
                    for arg in &mut args[..3] {
                        *arg = self.region_va();
                    }
                }
                32 | 16 => self.shaped_evtchn(nr, &mut args),
                29 => self.shaped_sched(&mut args),
                24 => self.shaped_vcpu_op(&mut args),
                15 => args[0] = self.any_time(),
                23 => {
                    // iret: a context on the guest stack, plausible half of the time.
                    let (r1, r2, r3) = (self.rng.next(), self.rng.next(), self.rng.next());
                    let ctx = IretContext {
                        rax: self.rng.next(),
                        r11: self.rng.next(),
                        rcx: self.rng.next(),
                        flags: self.rng.pick(&[0, 1 << 8, r1]),
                        rip: self.any_va(),
                        cs: self.rng.pick(&[
                            u64::from(FLAT_RING3_CS64),
                            u64::from(FLAT_RING3_CS32),
                            0x10,
                            r2,
                        ]),
                        rflags: self.rng.next(),
                        rsp: self.any_va(),
                        ss: self.rng.pick(&[u64::from(FLAT_RING3_SS64), r3]),
                    };
                    let sp = self.guest_buffer(ctx.as_bytes());
                    self.frame.rsp = sp;
                }
                _ => {
                    // Random bytes where the pointer arguments point.
                    for arg in &mut args[..3] {
                        if self.rng.chance(40) {
                            let n = self.rng.pick(&[8usize, 16, 64, 256]);
                            let bytes = self.random_bytes(n);
                            *arg = self.guest_buffer(&bytes);
                        }
                    }
                }
            }
        }
        self.note(format!("hypercall {nr} {args:#x?}"));
        let r = self.call_continued(nr, &args);
        if nr < 64 {
            let ok = self.frame.rax == 0;
            let e = self.stats.entry(nr).or_default();
            e.0 += 1;
            e.1 += u32::from(ok);
        }
        r
    }

    /// Hypercall `nr`; a continuation (the syscall again) is usually re-executed at once,
    /// as a kernel does unless an event comes first; sometimes the guest does something
    /// else before, or never comes back to it.
    fn call_continued(&mut self, nr: u64, args: &[u64]) -> Resume {
        let (rip, idx) = (self.frame.rip, self.current());
        let mut r = hypercall(&mut self.hv, &mut self.frame, nr, args);
        for _ in 0..64 {
            let continued = matches!(r, Resume::Guest { .. })
                && self.hv.cpu.current == Some(idx)
                && self.frame.rip == rip.wrapping_sub(2);
            if !continued {
                break;
            }
            if self.rng.chance(15) {
                // Left half done (maybe partial tables): check the frames after it.
                self.check_now = true;
                break;
            }
            self.check_resume(r);
            self.frame.rip = rip;
            let f = &self.frame;
            let (nr, args) = (f.rax, [f.rdi, f.rsi, f.rdx, f.r10, f.r8]);
            self.note(format!("continuation {nr} {args:#x?}"));
            r = hypercall(&mut self.hv, &mut self.frame, nr, &args);
        }
        r
    }

    /// The kernel builds a copy of its whole page-table tree in untyped frames of its
    /// own (it could map them writable to do so) and pins, loads or unloads it: large
    /// validations and devalidations, preempted on a small budget.
    fn step_copy_tree(&mut self) -> Resume {
        let idx = self.current();
        let dom = self.hv.domains[idx].id;
        let root = Mfn::containing(self.hv.cur(idx).cr3);
        let (all, _) = self.own_frames(dom).clone();
        let mut spare: Vec<Mfn> = all
            .into_iter()
            .filter(|&m| self.hv.frames.type_state(m).is_some_and(|s| s.count == 0))
            .collect();
        let Some(new) = copy_table(self, root, 4, &mut spare) else {
            return self.hv.resume_current();
        };
        let cmd = self.rng.pick(&[9u32, 9, 10, 15]); // pin L4, new baseptr, user baseptr
        let mut ops = std::vec![MmuextOp {
            cmd,
            pad: 0,
            arg1: new.0,
            arg2: 0,
        }];
        if self.rng.chance(50) {
            // ...and drop it again, or unpin the old root.
            let (cmd, arg1) = self
                .rng
                .pick(&[(4u32, new.0), (4, root.0), (15, 0), (10, root.0)]);
            ops.push(MmuextOp {
                cmd,
                pad: 0,
                arg1,
                arg2: 0,
            });
        }
        let bytes: Vec<u8> = ops.iter().flat_map(|o| o.as_bytes().to_vec()).collect();
        let va = self.guest_buffer(&bytes);
        let args = [va, ops.len() as u64, 0, u64::from(DomId::SELF.0)];
        self.note(format!(
            "copied tree {:#x} -> {:#x}: mmuext {ops:x?}",
            root.0, new.0
        ));
        self.owned.clear();
        let r = self.call_continued(26, &args);
        self.copies.0 += 1;
        self.copies.1 += u32::from(self.frame.rax == 0);
        r
    }

    /// An exception "taken" by the guest: any vector, error code, cr2.
    fn step_exception(&mut self) -> Resume {
        // Usually the kernel has handlers (so the exception is bounced onto its stack,
        // which is the interesting path); install a full trap table through the
        // hypercall first.
        if self.rng.chance(70) {
            let mut table = Vec::new();
            for vector in 0..=255u8 {
                let handler = self.region_va();
                let entry = xen_pv_abi::traps::TrapInfo {
                    vector,
                    flags: self.rng.below(8) as u8,
                    cs: FLAT_RING3_CS64,
                    pad: 0,
                    address: handler,
                };
                table.extend_from_slice(entry.as_bytes());
            }
            table.extend_from_slice(&[0; 16]);
            let va = self.guest_buffer(&table);
            let r = hypercall(&mut self.hv, &mut self.frame, 0, &[va]);
            self.note(format!("set_trap_table({va:#x}) = {:#x}", self.frame.rax));
            if !matches!(r, Resume::Guest { .. }) {
                return r;
            }
        }
        self.frame.vector = if self.rng.chance(90) {
            self.rng.below(32)
        } else {
            self.rng.below(256)
        };
        self.frame.error_code = self.any_int();
        let cr2 = self.any_va();
        if self.rng.chance(30) {
            self.frame.rip = self.any_va();
        }
        self.note(format!(
            "exception {} error {:#x} cr2 {cr2:#x} rip {:#x}",
            self.frame.vector, self.frame.error_code, self.frame.rip
        ));
        entry(|| self.hv.guest_exception(&mut self.frame, cr2))
    }

    fn step_tick(&mut self) -> Resume {
        if self.rng.chance(30) {
            let n = self.rng.below(64) as usize;
            let bytes = self.random_bytes(n);
            self.hv.platform.input.extend(bytes);
        }
        // Time passes: to the armed deadline (the one-shot timer fires), or a little.
        let now = self.hv.platform.tsc.get();
        let later = match (self.rng.below(3), self.hv.platform.timer) {
            (0, Some(deadline)) => deadline.max(now),
            (1, _) => now,
            _ => now.saturating_add(self.rng.pick(&[1_000, 100_000, 1_000_000, 10_000_000])),
        };
        self.hv.platform.tsc.set(later);
        self.note(format!("tick at {later}"));
        entry(|| self.hv.timer_tick(&mut self.frame))
    }

    /// The guest scribbles on its console or xenstore ring (indices and bytes), as it
    /// may: both are its own writable pages.
    fn step_ring(&mut self) {
        let idx = self.current();
        let d = &self.hv.domains[idx];
        let rings: Vec<Mfn> = [d.console_ring, d.store_ring]
            .into_iter()
            .flatten()
            .map(|(m, _)| m)
            .collect();
        if rings.is_empty() {
            return;
        }
        let ring = self.rng.pick(&rings);
        // Both rings keep their four u32 indices at 2048..3072 (xenstore at 2048,
        // console at 3072); hit those and the data areas.
        // Mostly well-behaved producers (which the backends parse), sometimes garbage
        // indices (which end the domain).
        if self.rng.chance(90) {
            return self.ring_produce(ring);
        }
        let offset = match self.rng.below(8) {
            0 => 2048 + self.rng.below(4) * 4,
            1 => 3072 + self.rng.below(4) * 4,
            _ => self.rng.below(PAGE - 16),
        };
        let n = self.rng.below(64) as usize;
        let bytes = match self.rng.below(4) {
            0 => self.rng.next().to_le_bytes().to_vec(),
            1 => (self.rng.next() as u32).to_le_bytes().to_vec(),
            2 => xenstore_message(&mut self.rng),
            _ => self.random_bytes(n),
        };
        let at = ring.maddr() + offset;
        let len = (bytes.len() as u64).min(PAGE - offset) as usize;
        self.note(format!(
            "ring {:#x} +{offset:#x} {:x?}",
            ring.0,
            &bytes[..len]
        ));
        self.hv.mem.write(at, &bytes[..len]).unwrap();
    }

    /// Produces bytes on a ring as a correct guest would: a xenstore request into req[]
    /// of the store ring, text into out[] of the console ring.
    fn ring_produce(&mut self, ring: Mfn) {
        let idx = self.current();
        let is_store = self.hv.domains[idx]
            .store_ring
            .is_some_and(|(m, _)| m == ring);
        let (data, size, prod_off) = if is_store {
            (0u64, 1024u64, 2048 + 4)
        } else {
            (1024u64, 2048u64, 3072 + 12)
        };
        let bytes = if is_store {
            xenstore_message(&mut self.rng)
        } else {
            let n = self.rng.below(200) as usize;
            let mut text = self.random_bytes(n);
            for b in &mut text {
                // Mostly printable, some newlines and control bytes.
                if *b >= 0xc0 {
                    *b = b'\n';
                } else if *b >= 0x20 {
                    *b = b' ' + *b % 95;
                }
            }
            text
        };
        let base = ring.maddr();
        let mut prod = [0u8; 4];
        self.hv.mem.read(base + prod_off, &mut prod).unwrap();
        let mut prod = u32::from_le_bytes(prod);
        for &b in bytes.iter().take(size as usize) {
            let at = base + data + u64::from(prod) % size;
            self.hv.mem.write(at, &[b]).unwrap();
            prod = prod.wrapping_add(1);
        }
        self.note(format!(
            "ring {:#x} produce {} bytes, prod now {prod:#x}",
            ring.0,
            bytes.len()
        ));
        self.hv
            .mem
            .write(base + prod_off, &prod.to_le_bytes())
            .unwrap();
    }

    /// The kernel enters user mode the way a PV kernel does: callbacks and kernel stack
    /// registered, a user root (its own kernel root or another L4 it validated), then
    /// `iret` with a ring-3 CS.
    fn step_enter_user(&mut self) -> Resume {
        let idx = self.current();
        if self.hv.cur(idx).user_mode {
            return self.step_hypercall();
        }
        let calls: [(u64, [u64; 3]); 2] = [
            (4, [self.region_va(), self.region_va(), self.region_va()]),
            (3, [u64::from(FLAT_RING3_SS64), self.region_va() & !15, 0]),
        ];
        for (nr, args) in calls {
            let r = hypercall(&mut self.hv, &mut self.frame, nr, &args);
            if !matches!(r, Resume::Guest { .. }) {
                return r;
            }
        }
        let root = if self.rng.chance(70) {
            Mfn::containing(self.hv.cur(idx).cr3)
        } else {
            self.own_mfn()
        };
        let op = MmuextOp {
            cmd: 15,
            pad: 0,
            arg1: root.0,
            arg2: 0,
        };
        let va = self.guest_buffer(op.as_bytes());
        let self_dom = u64::from(DomId::SELF.0);
        let r = hypercall(&mut self.hv, &mut self.frame, 26, &[va, 1, 0, self_dom]);
        self.note(format!(
            "new_user_baseptr({:#x}) = {:#x}",
            root.0, self.frame.rax
        ));
        if std::env::var("HV_FUZZ_VERBOSE").is_ok() {
            std::eprintln!(
                "new_user_baseptr({:#x}) = {}",
                root.0,
                self.frame.rax as i64
            );
        }
        if !matches!(r, Resume::Guest { .. }) {
            return r;
        }
        let ctx = IretContext {
            rax: 0,
            r11: 0,
            rcx: 0,
            flags: self.rng.pick(&[0, 1 << 8]),
            rip: self.region_va(),
            cs: u64::from(FLAT_RING3_CS64),
            rflags: 0x202,
            rsp: self.region_va() & !15,
            ss: u64::from(FLAT_RING3_SS64),
        };
        let sp = self.guest_buffer(ctx.as_bytes());
        self.frame.rsp = sp;
        self.note(format!("iret to user at {:#x}", ctx.rip));
        hypercall(&mut self.hv, &mut self.frame, 23, &[])
    }

    /// The guest scribbles random registers (it controls all of them).
    fn step_registers(&mut self) {
        let reg = self.rng.below(17) as usize;
        let value = self.any_arg();
        let regs = self.frame.as_mut_bytes();
        regs[reg * 8..reg * 8 + 8].copy_from_slice(&value.to_le_bytes());
        self.note(format!("register {reg} = {value:#x}"));
    }

    fn step(&mut self) -> Resume {
        match self.rng.below(400) {
            0..=149 | 200..=399 => self.step_hypercall(),
            150..=169 => {
                let n = self.rng.pick(&[8usize, 72, 512]);
                let bytes = self.random_bytes(n);
                let va = self.any_va();
                self.guest_write(va, &bytes);
                self.hv.resume_current()
            }
            170..=179 => {
                self.step_ring();
                self.hv.resume_current()
            }
            180..=189 => self.step_tick(),
            // Most exceptions end a domain without handlers: rare.
            190 => self.step_exception(),
            191 => self.step_enter_user(),
            192..=193 => self.step_copy_tree(),
            _ => {
                self.step_registers();
                self.hv.resume_current()
            }
        }
    }

    // ---- invariants ---------------------------------------------------------------------

    /// What the arch layer is told to do must be safe to do.
    fn check_resume(&self, r: Resume) {
        match r {
            Resume::Exit(status) => {
                if self.hv.domains.iter().any(|d| d.is_runnable()) {
                    self.fail(&format!("Exit({status:?}) with a runnable domain"));
                }
                if status == ExitStatus::HypervisorFailure {
                    self.fail("hypervisor failure exit");
                }
            }
            Resume::Guest { cr3 } => {
                let idx = self.current();
                let d = &self.hv.domains[idx];
                if !d.is_runnable() {
                    self.fail("resumes a domain that ended");
                }
                if cr3 != self.hv.cur(idx).active_cr3() {
                    self.fail(&format!(
                        "cr3 {cr3:#x} is not the vCPU's active root {:#x}",
                        self.hv.cur(idx).active_cr3()
                    ));
                }
                let root = Mfn::containing(cr3);
                if cr3 % PAGE != 0 || self.hv.frames.owner(root) != Some(d.id) {
                    self.fail(&format!("cr3 {cr3:#x} is not a frame of d{}", d.id.0));
                }
                let st = self.hv.frames.type_state(root).unwrap();
                if st.ty != PageType::L4 || st.count == 0 || self.hv.frames.partial(root).is_some()
                {
                    self.fail(&format!("cr3 {cr3:#x} is not a validated L4: {st:?}"));
                }
                let f = &self.frame;
                let cs_ok =
                    f.cs == u64::from(FLAT_RING3_CS64) || f.cs == u64::from(FLAT_RING3_CS32);
                // iretq to a 32-bit segment faults on real CPUs beyond its 4 GiB limit.
                let rip_in_segment =
                    f.cs != u64::from(FLAT_RING3_CS32) || f.rip <= u64::from(u32::MAX);
                if !is_canonical(f.rip)
                    || !is_canonical(f.rsp)
                    || !cs_ok
                    || !rip_in_segment
                    || f.ss != u64::from(FLAT_RING3_SS64)
                    || f.rflags & (1 << 9) == 0
                    || f.rflags & (3 << 12) != 0
                {
                    self.fail(&format!("unsafe frame to resume: {f:#x?}"));
                }
            }
            // Idle leaves no vCPU loaded (idle_wakeup picks the next one).
            Resume::Idle => {
                if self.hv.cpu.current.is_some() {
                    self.fail("Idle with a vCPU loaded");
                }
            }
        }
    }

    /// Event channels, timers and run states, after every step:
    /// * exactly the live domains have event channels, at most the default quota of
    ///   ports (1023, so 1024 valid ports), port 0 reserved;
    /// * an interdomain channel's peer is a live domain whose port points back at it;
    /// * VIRQ numbers, notify vCPUs and priorities are in range;
    /// * a live FIFO domain's frames are its own, writable-typed and referenced;
    /// * the timer queue holds at most 3 entries per live vCPU plus the slice end;
    /// * the current vCPU is the scheduler's running one, and never a blocked or polling
    ///   one; a polling vCPU is blocked.
    fn check_events(&self) {
        let hv = &self.hv;
        let mut live_vcpus = 0;
        for d in &hv.domains {
            let live = d.is_runnable();
            if hv.evtchn.has_domain(d.id) != live {
                self.fail(&format!(
                    "d{} live {live} but evtchn registered {}",
                    d.id.0, !live
                ));
            }
            if !live {
                continue;
            }
            live_vcpus += 1;
            let mut port = 0u32;
            while let Some(c) = hv.evtchn.channel(d.id, EvtchnPort(port)) {
                let at = || format!("d{} port {port}: {c:?}", d.id.0);
                if (port == 0) != (c.state == ChannelState::Reserved) {
                    self.fail(&format!("{}: port 0 must be the only reserved one", at()));
                }
                if c.notify_vcpu != VcpuId(0) || c.priority > 15 {
                    self.fail(&format!("{}: notify vCPU or priority out of range", at()));
                }
                match c.state {
                    ChannelState::Interdomain {
                        remote,
                        remote_port,
                    } => {
                        let peer_live =
                            hv.domains.iter().any(|p| p.id == remote && p.is_runnable());
                        if !peer_live {
                            self.fail(&format!("{}: bound to a domain that is not live", at()));
                        }
                        let back = hv.evtchn.channel(remote, remote_port).map(|c| c.state);
                        let want = ChannelState::Interdomain {
                            remote: d.id,
                            remote_port: EvtchnPort(port),
                        };
                        if back != Some(want) {
                            self.fail(&format!("{}: the peer's end is {back:?}", at()));
                        }
                    }
                    ChannelState::Virq { virq } if virq >= NR_VIRQS => {
                        self.fail(&format!("{}: no such VIRQ", at()));
                    }
                    _ => {}
                }
                port += 1;
                if port > crate::evtchn::DEFAULT_MAX_PORT + 1 {
                    self.fail(&format!("d{} has more ports than its quota", d.id.0));
                }
            }
            if port == 0 {
                self.fail(&format!("d{} has no event-channel bucket", d.id.0));
            }
            for m in hv.evtchn.fifo_frames(d.id) {
                let st = hv.frames.type_state(m);
                let ours = hv.frames.owner(m) == Some(d.id);
                let held = st.is_some_and(|st| st.ty == PageType::Writable && st.count > 0)
                    && hv.frames.ref_count(m).is_some_and(|r| r > 0);
                if !ours || !held {
                    self.fail(&format!("d{} FIFO frame {:#x}: {st:?}", d.id.0, m.0));
                }
            }
            for v in d.vcpus.iter().filter(|v| v.poll.is_some()) {
                let id = (d.id, v.id);
                if hv.sched.state(id) != Some(RunState::Blocked) {
                    self.fail(&format!(
                        "d{} v{} polls but is {:?}",
                        d.id.0,
                        v.id.0,
                        hv.sched.state(id)
                    ));
                }
            }
        }
        if hv.timers.len() > 3 * live_vcpus + 1 {
            self.fail(&format!(
                "{} timers for {live_vcpus} live vCPUs",
                hv.timers.len()
            ));
        }
        if let Some(idx) = hv.cpu.current {
            let d = &hv.domains[idx];
            let id = (d.id, hv.cpu.vcpu);
            if hv.sched.state(id) != Some(RunState::Running) || hv.sched.current() != Some(id) {
                self.fail(&format!(
                    "current d{} is {:?} to the scheduler (its current: {:?})",
                    d.id.0,
                    hv.sched.state(id),
                    hv.sched.current()
                ));
            }
            if d.vcpu_get(hv.cpu.vcpu).is_none_or(|v| v.poll.is_some()) {
                self.fail(&format!("current d{} is polling or unknown", d.id.0));
            }
        }
    }

    /// Frame accounting and page-table references (see the module doc).
    fn check_frames(&self) {
        let frames = &self.hv.frames;
        let live: Vec<DomId> = self
            .hv
            .domains
            .iter()
            .filter(|d| d.is_runnable())
            .map(|d| d.id)
            .collect();
        // Frames live domains map through grants: one of an ended granter is kept (still
        // its owner's) until the last mapping goes, as in Xen.
        let granted: std::collections::HashSet<u64> = self
            .hv
            .domains
            .iter()
            .filter(|d| d.is_runnable())
            .flat_map(|d| d.grant.maps().iter().flatten().map(|g| g.mfn.0))
            .collect();
        let mut allocated = 0;
        // target -> (references from validated tables of the level above, general refs,
        // writable L1 mappings)
        let mut expected: HashMap<u64, (u32, u32, u32)> = HashMap::new();
        for m in (0..FRAMES as u64).map(Mfn) {
            let Some(owner) = frames.owner(m) else {
                continue;
            };
            allocated += 1;
            if !live.contains(&owner) {
                if granted.contains(&m.0) {
                    continue;
                }
                self.fail(&format!("frame {:#x} owned by ended d{}", m.0, owner.0));
            }
            let st = frames.type_state(m).unwrap();
            let Some(level) = st.ty.pt_level().filter(|_| st.count > 0) else {
                continue;
            };
            // A table whose (de)validation was interrupted: entries 0..next hold their
            // references, entry next (if set) a general one, the partial state the
            // table's only type reference and a general one.
            let partial = frames.partial(m);
            if partial.is_some() {
                self.partial_seen.set(self.partial_seen.get() + 1);
                if st.count != 1 || st.pinned || level == 1 {
                    self.fail(&format!("partial table {:#x}: {st:?}", m.0));
                }
                expected.entry(m.0).or_default().1 += 1;
            }
            let full = partial.map_or(512, |p| u64::from(p.next));
            if let Some(p) = partial.filter(|p| p.set) {
                let e = self.hv.mem.read_u64(m.maddr() + full * 8).unwrap();
                let target = Mfn((e & 0x000f_ffff_ffff_f000) >> 12);
                if e & 1 == 0 || level == 1 || frames.owner(target) != Some(owner) {
                    self.fail(&format!(
                        "partial L{level} {:#x} {p:?}: entry {e:#x} cannot hold a reference",
                        m.0
                    ));
                }
                expected.entry(target.0).or_default().1 += 1;
            }
            for slot in 0..full {
                if level == 4 && (256..=271).contains(&slot) {
                    continue;
                }
                let e = self.hv.mem.read_u64(m.maddr() + slot * 8).unwrap();
                if e & 1 == 0 {
                    continue;
                }
                let target = Mfn((e & 0x000f_ffff_ffff_f000) >> 12);
                // Another domain's frame only through a grant mapping the domain holds.
                let granted = level == 1
                    && crate::mmu::pagetable::is_grant_entry(e)
                    && self.hv.domains.iter().any(|d| {
                        d.id == owner
                            && d.grant
                                .maps()
                                .iter()
                                .flatten()
                                .any(|g| g.mfn == target && g.host)
                    });
                if frames.owner(target) != Some(owner) && !granted {
                    self.fail(&format!(
                        "L{level} {:#x}[{slot}] = {e:#x} points at a frame not of d{}",
                        m.0, owner.0
                    ));
                }
                let x = expected.entry(target.0).or_default();
                x.1 += 1;
                if level > 1 {
                    x.0 += 1;
                    let tst = frames.type_state(target).unwrap();
                    if tst.ty.pt_level() != Some(level - 1)
                        || tst.count == 0
                        || frames.partial(target).is_some()
                    {
                        self.fail(&format!(
                            "L{level} {:#x}[{slot}] = {e:#x}: target not a validated L{}: {tst:?}",
                            m.0,
                            level - 1
                        ));
                    }
                } else if e & 2 != 0 {
                    x.2 += 1;
                    let tst = frames.type_state(target).unwrap();
                    if tst.ty != PageType::Writable || tst.count == 0 {
                        self.fail(&format!(
                            "L1 {:#x}[{slot}] = {e:#x}: writable mapping of a {tst:?} frame",
                            m.0
                        ));
                    }
                }
            }
        }
        for (&target, &(table_refs, refs, writable)) in &expected {
            let m = Mfn(target);
            let st = frames.type_state(m).unwrap();
            let rc = frames.ref_count(m).unwrap();
            if rc < refs || st.count < table_refs.max(writable) {
                self.fail(&format!(
                    "frame {target:#x}: counts {st:?} ref {rc} below the references held \
                     (tables {table_refs}, all {refs}, writable {writable})"
                ));
            }
        }
        // A deferred reference drop holds a general reference on a frame of its domain.
        for d in self.hv.domains.iter().filter(|d| d.is_runnable()) {
            for m in d.vcpus.iter().filter_map(|v| v.old_table) {
                if frames.owner(m) != Some(d.id) {
                    self.fail(&format!("d{} deferred drop of {:#x}", d.id.0, m.0));
                }
                expected.entry(m.0).or_default().1 += 1;
            }
        }
        // Frames the hypervisor writes stay writable-typed (never a page table or GDT),
        // and the installed GDT's frames stay descriptor pages.
        for d in self.hv.domains.iter().filter(|d| d.is_runnable()) {
            let rings = [d.console_ring, d.store_ring].into_iter().flatten();
            let held = core::iter::once(d.shared_info)
                .chain(rings.map(|(m, _)| m))
                .chain(d.grant.frames().iter().copied());
            for m in held {
                let st = frames.type_state(m);
                if !st.is_some_and(|st| st.ty == PageType::Writable && st.count > 0) {
                    self.fail(&format!(
                        "d{} frame {:#x} the hypervisor writes: {st:?}",
                        d.id.0, m.0
                    ));
                }
            }
            for &g in d.vcpus.iter().flat_map(|v| v.gdt.frames()) {
                let st = frames.type_state(Mfn(g));
                if !st.is_some_and(|st| st.ty == PageType::SegDesc && st.count > 0) {
                    self.fail(&format!("d{} GDT frame {g:#x}: {st:?}", d.id.0));
                }
            }
        }
        // Page tables exactly: every type reference is an entry of a validated table
        // above, the pin, or a loaded root (kernel or user), so none leaks.
        for d in self.hv.domains.iter().filter(|d| d.is_runnable()) {
            for m in (0..FRAMES as u64).map(Mfn) {
                if frames.owner(m) != Some(d.id) {
                    continue;
                }
                let st = frames.type_state(m).unwrap();
                if st.count == 0 || st.ty.pt_level().is_none() {
                    continue;
                }
                let from_tables = expected.get(&m.0).map_or(0, |x| x.0);
                let roots = d
                    .vcpus
                    .iter()
                    .flat_map(|v| [v.cr3, v.user_cr3])
                    .filter(|&r| r != 0 && Mfn::containing(r) == m)
                    .count() as u32;
                let partial = u32::from(frames.partial(m).is_some());
                let want = from_tables + u32::from(st.pinned) + roots + partial;
                if st.count != want {
                    self.fail(&format!(
                        "d{} table {:#x}: {st:?}, but {from_tables} table entries, \
                         {roots} root loads",
                        d.id.0, m.0
                    ));
                }
            }
        }
        if frames.free_count() + allocated != self.initial_free {
            self.fail(&format!(
                "frames lost: {} free + {allocated} allocated != {}",
                frames.free_count(),
                self.initial_free
            ));
        }
    }

    /// Runs up to `steps` steps; returns whether the episode ended with `Exit`.
    fn run(&mut self, steps: usize) -> bool {
        for i in 0..steps {
            self.steps += 1;
            let mut r = self.step();
            self.check_resume(r);
            self.check_events();
            // Every vCPU blocked: time passes to the armed deadline, as the CPU would
            // idle. With none armed nothing can ever wake them: the episode is over.
            let mut stalled = false;
            while r == Resume::Idle {
                let Some(deadline) = self.hv.platform.timer else {
                    // Nothing armed: only input from outside can wake a domain (the
                    // control domain's VIRQ_CONSOLE, if it bound it). Once; then it is
                    // over.
                    if self.hv.platform.input.is_empty() {
                        self.hv.platform.input.extend(*b"wake\n");
                        r = entry(|| self.hv.idle_wakeup(&mut self.frame));
                        self.check_resume(r);
                        self.check_events();
                        if r == Resume::Idle && self.hv.platform.timer.is_none() {
                            return false;
                        }
                        continue;
                    }
                    return false;
                };
                let now = self.hv.platform.tsc.get();
                // A deadline the TSC cannot reach (beyond 2^64 ticks, centuries away)
                // never fires: time cannot pass any further, the episode is over.
                if deadline <= now && stalled {
                    return false;
                }
                stalled = deadline <= now;
                self.hv.platform.tsc.set(deadline.max(now));
                r = entry(|| self.hv.idle_wakeup(&mut self.frame));
                self.check_resume(r);
                self.check_events();
            }
            if i.is_multiple_of(64) || core::mem::take(&mut self.check_now) {
                self.check_frames();
                self.hv.sched.check_invariants();
            }
            if let Resume::Exit(_) = r {
                return true;
            }
        }
        false
    }

    /// Ends whatever is still running (as a crash would), then checks every frame came
    /// back.
    fn finish(&mut self) {
        // Blocked domains too: every runnable domain is crashed.
        while let Some(idx) = self.hv.domains.iter().position(|d| d.is_runnable()) {
            self.hv
                .end_domain(idx, DomainState::Crashed, format_args!("crashed: fuzz end"));
            let r = self.hv.schedule(&mut self.frame);
            self.check_resume(r);
        }
        self.check_frames();
        self.check_events();
        if self.hv.domains.iter().any(|d| d.is_runnable()) {
            self.fail("a domain is still runnable with no current domain");
        }
        if self.hv.evtchn.buckets_in_use() != 0 {
            self.fail(&format!(
                "{} event-channel buckets not freed",
                self.hv.evtchn.buckets_in_use()
            ));
        }
        // At most the slice end is left.
        if self.hv.timers.len() > 1 {
            self.fail(&format!("{} timers left", self.hv.timers.len()));
        }
        if self.hv.frames.free_count() != self.initial_free {
            self.fail(&format!(
                "{} frames not returned",
                self.initial_free - self.hv.frames.free_count()
            ));
        }
        for m in (0..FRAMES as u64).map(Mfn) {
            if self.hv.frames.owner(m).is_some() || self.hv.frames.type_state(m).is_some() {
                self.fail(&format!("frame {:#x} still allocated", m.0));
            }
        }
    }
}

/// Copies the `level` table `src` into a spare frame, and its tables below into more
/// (depth first, as long as spare frames last: entries beyond are left empty).
fn copy_table(fuzz: &mut Fuzz, src: Mfn, level: u32, spare: &mut Vec<Mfn>) -> Option<Mfn> {
    let dst = spare.pop()?;
    let mut page = [0u8; PAGE_SIZE];
    fuzz.hv.mem.read(src.maddr(), &mut page).unwrap();
    for slot in 0..512 {
        if level == 1 || (level == 4 && (256..=271).contains(&slot)) {
            continue;
        }
        let at = slot * 8..slot * 8 + 8;
        let e = u64::from_le_bytes(page[at.clone()].try_into().unwrap());
        if e & 1 == 0 {
            continue;
        }
        let child = Mfn((e & 0x000f_ffff_ffff_f000) >> 12);
        let new = copy_table(fuzz, child, level - 1, spare).map_or(0, |m| m.maddr() | (e & 0xfff));
        page[at].copy_from_slice(&new.to_le_bytes());
    }
    fuzz.hv.mem.write(dst.maddr(), &page).unwrap();
    Some(dst)
}

/// A xenstore request header plus payload: plausible, oversized or garbage.
fn xenstore_message(rng: &mut Rng) -> Vec<u8> {
    let ty = rng.pick(&[1u32, 2, 11, 7, 4, 0, 128, u32::MAX]);
    let payload: &[u8] = rng.pick(&[
        b"device/vbd\0".as_slice(),
        b"name\0",
        b"domid\0",
        b"/local/domain/1/name\0",
        b"",
        b"\0\0\0",
        b"a/b/c\0value",
    ]);
    let len = if rng.chance(95) {
        payload.len() as u32
    } else {
        let any = rng.next() as u32;
        rng.pick(&[4096u32, 4097, u32::MAX, 1 << 31, any])
    };
    let mut out = Vec::new();
    for word in [ty, rng.next() as u32, rng.below(3) as u32, len] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn hostile_guests_cannot_break_the_hypervisor() {
    let seed = env_u64("HV_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let episodes = env_u64("HV_FUZZ_EPISODES").map_or(DEFAULT_EPISODES, |n| n as usize);
    let mut ended = 0;
    for e in 0..episodes as u64 {
        let episode_seed = seed.wrapping_add(e.wrapping_mul(0x1000_0000_0000_0001));
        // Every other episode with a tiny work budget: the start-of-day tables are
        // larger, so pins, root switches and unpins of them stop half-way (partial
        // tables, deferred drops) and meet whatever the guest does next.
        let small = [300u64, 150, 600][(e / 2 % 3) as usize];
        crate::mmu::hypercalls::test_budget::set((e % 2 == 1).then_some(small));
        let mut fuzz = Fuzz::new(episode_seed);
        if fuzz.run(STEPS) {
            ended += 1;
        }
        if std::env::var("HV_FUZZ_VERBOSE").is_ok() {
            std::eprintln!("{}", fuzz.hv.platform.console);
            std::eprintln!("hypercall -> (calls, returned 0): {:?}", fuzz.stats);
        }
        fuzz.finish();
        let calls: u32 = fuzz.stats.values().map(|s| s.0).sum();
        let ok: u32 = fuzz.stats.values().map(|s| s.1).sum();
        std::eprintln!(
            "fuzz episode {e} (seed {episode_seed:#x}): {} steps, {calls} hypercalls < 64 \
             ({ok} returned 0), {} partial tables seen, {:?} tree copies (used, ok)",
            fuzz.steps,
            fuzz.partial_seen.get(),
            fuzz.copies
        );
    }
    std::eprintln!(
        "{episodes} episodes, {ended} ended by the guests themselves; most work of one \
         entry: {} steps (bound {})",
        crate::testutil::max_entry_work(),
        crate::testutil::ENTRY_WORK_BOUND
    );
}

#[path = "ops_proptest_tests.rs"]
mod ops;

// ---- regressions of what the fuzzer and its review found ---------------------------------

/// One built domain, started: the hypervisor, its registers and a writable scratch VA.
fn one_domain() -> (TestHv, GuestFrame, u64) {
    let mut hv = test_hv_with(FRAMES, HV_SLOTS, b"");
    let image = TestElf::valid().build();
    let guest = Guest {
        image: &image,
        memory_kib: DOMAIN_KIB,
        dom0: false,
        name: "one",
        cmdline: "",
        weight: 0,
        cap: 0,
        max_grant_frames: 0,
        max_maptrack_frames: 0,
    };
    create_domains(&mut hv, &[guest]);
    let f = crate::testutil::started(&mut hv);
    // The padding after the boot stack is writable.
    let scratch = (f.rsp + PAGE) & !(PAGE - 1);
    (hv, f, scratch)
}

fn put(hv: &TestHv, va: u64, bytes: &[u8]) {
    copy_to_guest(&hv.mem, &hv.frames, hv.current_space(0), va, bytes).unwrap();
}

fn get_u64(hv: &TestHv, va: u64) -> u64 {
    let mut b = [0u8; 8];
    let space = hv.current_space(0);
    crate::mmu::guest::copy_from_guest(&hv.mem, &hv.frames, space, va, &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// Makes hypercall `nr` as the guest's `syscall` would, executing it again while the
/// hypervisor answers with a continuation (RIP moved back onto the `syscall`); returns
/// how many entries into the hypervisor it took.
fn run_to_completion(hv: &mut TestHv, f: &mut GuestFrame, nr: u64, args: [u64; 5]) -> usize {
    let rip = f.rip;
    let (mut nr, mut args) = (nr, args);
    for entries in 1..1000 {
        let r = hypercall(hv, f, nr, &args);
        assert!(matches!(r, Resume::Guest { .. }), "{r:?}");
        if f.rip == rip {
            return entries;
        }
        assert_eq!(f.rip, rip - 2, "a continuation re-executes the syscall");
        f.rip = rip;
        (nr, args) = (f.rax, [f.rdi, f.rsi, f.rdx, f.r10, f.r8]);
    }
    panic!("no end to the continuations");
}

fn multicall_entry(op: u32, args: [u64; 5]) -> MulticallEntry {
    let mut all = [0; 6];
    all[..5].copy_from_slice(&args);
    MulticallEntry {
        op: op.into(),
        result: 0xdead,
        args: all,
    }
}

/// A guest could make the hypervisor run 2^32 entries in one go (all aliasing one
/// page): every domain stalls. The multicall is now continued every MULTICALL_BATCH
/// entries.
#[test]
fn a_long_multicall_is_continued_not_run_whole() {
    use crate::hypercall::multicall::MULTICALL_BATCH;
    let (mut hv, mut f, list) = one_domain();
    const N: u64 = 300;
    let entries: Vec<u8> = (0..N)
        .flat_map(|_| {
            let e = multicall_entry(xen_pv_abi::nr::XEN_VERSION, [0; 5]);
            e.as_bytes().to_vec()
        })
        .collect();
    put(&hv, list, &entries);
    let took = run_to_completion(&mut hv, &mut f, 13, [list, N, 0, 0, 0]);
    assert_eq!(f.rax, 0);
    assert_eq!(took as u64, N.div_ceil(MULTICALL_BATCH));
    for i in 0..N {
        assert_eq!(get_u64(&hv, list + i * 64 + 8), 0x4_0011, "entry {i}");
    }
}

/// Inside a multicall, mmu_update/mmuext_op batches ran whole (2^31 elements per entry);
/// now their continuation goes into the entry and the multicall continues there.
#[test]
fn a_long_batch_inside_a_multicall_is_continued_in_its_entry() {
    use crate::mmu::hypercalls::BATCH;
    let (mut hv, mut f, scratch) = one_domain();
    const N: u64 = 1300;
    let (list, reqs, pdone) = (scratch, scratch + 2 * PAGE, scratch + PAGE);
    // Machine-to-phys updates of one of its own frames: valid, cheap, repeatable.
    let own = Mfn::containing(hv.domains[0].vcpu(VcpuId(0)).cr3);
    let req = MmuUpdate {
        ptr: own.maddr() | 1,
        val: 5,
    };
    let reqs_bytes: Vec<u8> = (0..N).flat_map(|_| req.as_bytes().to_vec()).collect();
    put(&hv, reqs, &reqs_bytes);
    let self_dom = u64::from(DomId::SELF.0);
    let calls = [
        multicall_entry(xen_pv_abi::nr::MMU_UPDATE, [reqs, N, pdone, self_dom, 0]),
        multicall_entry(xen_pv_abi::nr::XEN_VERSION, [0; 5]),
    ];
    put(&hv, list, calls.as_bytes());
    let took = run_to_completion(&mut hv, &mut f, 13, [list, 2, 0, 0, 0]);
    assert_eq!(f.rax, 0);
    assert_eq!(took as u64, N.div_ceil(u64::from(BATCH)));
    assert_eq!(
        get_u64(&hv, pdone) as u32,
        N as u32,
        "pdone counts every element"
    );
    assert_eq!(get_u64(&hv, list + 8), 0, "mmu_update's result");
    assert_eq!(
        get_u64(&hv, list + 64 + 8),
        0x4_0011,
        "the next entry ran once after it"
    );
    assert_eq!(hv.frames.m2p(own), Some(5));
}

/// 512 pin/unpin pairs of a page table fit in one batch, and each (de)validates a whole
/// hierarchy: the element count alone did not bound the work of one entry into the
/// hypervisor. Batches now also stop at WORK_BUDGET (de)validated entries.
#[test]
fn page_table_work_bounds_a_batch() {
    use crate::mmu::hypercalls::WORK_BUDGET;
    use xen_pv_abi::start_info::StartInfo;
    let (mut hv, mut f, scratch) = one_domain();
    // The domain's last frame: not mapped by the start-of-day tables, so it can be
    // pinned as an (empty) L1.
    let si_va = f.rsi;
    let mfn_list = get_u64(
        &hv,
        si_va + core::mem::offset_of!(StartInfo, mfn_list) as u64,
    );
    let last_pfn = u64::from(DOMAIN_KIB) / 4 - 1;
    let table = Mfn(get_u64(&hv, mfn_list + last_pfn * 8));
    assert_eq!(hv.frames.owner(table), Some(DomId(1)));
    hv.mem.fill(table.maddr(), 0, PAGE_SIZE).unwrap();
    // Pin as L1 (3), unpin (4): 1024 entries of work per pair.
    const PAIRS: u64 = 200;
    let ops: Vec<u8> = (0..PAIRS)
        .flat_map(|_| {
            [3u32, 4].map(|cmd| MmuextOp {
                cmd,
                pad: 0,
                arg1: table.0,
                arg2: 0,
            })
        })
        .flat_map(|op| op.as_bytes().to_vec())
        .collect();
    put(&hv, scratch, &ops);
    let self_dom = u64::from(DomId::SELF.0);
    let work_before = hv.frames.work();
    let took = run_to_completion(&mut hv, &mut f, 26, [scratch, 2 * PAIRS, 0, self_dom, 0]);
    assert_eq!(f.rax, 0);
    let work = hv.frames.work() - work_before;
    assert_eq!(work, PAIRS * 1024);
    // 400 elements are under BATCH: only the work budget can split the batch.
    assert!(took as u64 >= work / (WORK_BUDGET + 1024), "{took} entries");
    assert!(took > 1);
    let st = hv.frames.type_state(table).unwrap();
    assert_eq!((st.count, st.pinned), (0, false));
}

/// A `syscall` in the last two bytes below 2^47 returns to RIP 2^47, which is not
/// canonical: `iretq` to it faults in the hypervisor (the whole machine stops). The
/// domain is crashed instead, on the fast and the slow path.
#[test]
fn a_syscall_at_the_end_of_the_lower_half_crashes_only_its_domain() {
    use crate::hv::RIP_PAST_LOWER_HALF;
    for (cmd, path) in [(0u64, "fast"), (1, "slow")] {
        let (mut hv, mut f, _) = one_domain();
        f.rip = RIP_PAST_LOWER_HALF;
        let r = hypercall(
            &mut hv,
            &mut f,
            xen_pv_abi::nr::XEN_VERSION.into(),
            &[cmd, 0],
        );
        assert_eq!(r, Resume::Exit(ExitStatus::SomeDomainFailed), "{path} path");
        assert_eq!(hv.domains[0].state, DomainState::Crashed);
        assert!(
            hv.platform.console.contains(
                "(hv) d1 one: crashed: cannot resume: non-canonical rip (rip=0x800000000000"
            ),
            "{}",
            hv.platform.console
        );
    }
}

/// The same for an exception the hypervisor handles without the guest (found by the
/// fuzzer: a stale-CR0.TS #NM is retried at the same RIP).
#[test]
fn an_exception_never_resumes_at_a_non_canonical_rip() {
    let (mut hv, mut f, _) = one_domain();
    f.rip = 0x4343_f25d_5f05_bb8c;
    f.vector = 7;
    let r = hv.guest_exception(&mut f, 0);
    assert_eq!(r, Resume::Exit(ExitStatus::SomeDomainFailed));
    assert_eq!(hv.domains[0].state, DomainState::Crashed);
    // A canonical RIP is retried as before.
    let (mut hv, mut f, _) = one_domain();
    let rip = f.rip;
    f.vector = 7;
    assert!(matches!(
        hv.guest_exception(&mut f, 0),
        Resume::Guest { .. }
    ));
    assert_eq!(f.rip, rip);
}
