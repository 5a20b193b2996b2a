//! Host-test doubles for the platform seam: machine memory over a vector and a platform
//! that records console output.

extern crate std;

use crate::platform::{BadMaddr, MachineMemory, Platform};
use core::cell::RefCell;
use std::string::String;
use std::vec;
use std::vec::Vec;

/// Machine memory `[0, size)` backed by a vector.
pub struct FakeMemory {
    bytes: RefCell<Vec<u8>>,
}

impl FakeMemory {
    /// `size` bytes of zeroed machine memory starting at address 0.
    pub fn new(size: usize) -> Self {
        FakeMemory {
            bytes: RefCell::new(vec![0; size]),
        }
    }

    fn range(&self, maddr: u64, len: usize) -> Result<core::ops::Range<usize>, BadMaddr> {
        let start = usize::try_from(maddr).map_err(|_| BadMaddr(maddr))?;
        let end = start.checked_add(len).ok_or(BadMaddr(maddr))?;
        if end > self.bytes.borrow().len() {
            return Err(BadMaddr(maddr));
        }
        Ok(start..end)
    }
}

impl MachineMemory for FakeMemory {
    fn read(&self, maddr: u64, buf: &mut [u8]) -> Result<(), BadMaddr> {
        let r = self.range(maddr, buf.len())?;
        buf.copy_from_slice(&self.bytes.borrow()[r]);
        Ok(())
    }
    fn write(&self, maddr: u64, data: &[u8]) -> Result<(), BadMaddr> {
        let r = self.range(maddr, data.len())?;
        self.bytes.borrow_mut()[r].copy_from_slice(data);
        Ok(())
    }
    fn fill(&self, maddr: u64, byte: u8, len: usize) -> Result<(), BadMaddr> {
        let r = self.range(maddr, len)?;
        self.bytes.borrow_mut()[r].fill(byte);
        Ok(())
    }
}

/// A platform whose console is a string and whose TSC is a counter the test moves.
pub struct FakePlatform {
    /// Bytes "typed" on the console, taken by `console_read`.
    pub input: std::collections::VecDeque<u8>,
    /// Everything written to the console.
    pub console: String,
    /// Current TSC value.
    pub tsc: core::cell::Cell<u64>,
    /// TSC frequency reported.
    pub tsc_hz: u64,
    /// The deadline of the last `set_timer` call.
    pub timer: Option<u64>,
    /// Number of `flush_tlb` calls.
    pub tlb_flushes: usize,
    /// Addresses passed to `invlpg`.
    pub invlpgs: Vec<u64>,
    /// The "CPU's" FS and active GS bases.
    pub segment_bases: (u64, u64),
    /// The "CPU's" inactive GS base (the shadow GS base MSR).
    pub inactive_gs_base: u64,
    /// The "CPU's" FPU registers (what `fpu_save` stores, `fpu_restore` loads).
    pub fpu: crate::platform::FpuArea,
    /// CR0.TS.
    pub fpu_trap: bool,
    /// The guest entries (`0..FIRST_RESERVED_GDT_ENTRY`) of the "CPU's" GDT.
    pub gdt: Vec<u64>,
    /// The LDT buffer (8192 entries) and how many of its entries the "CPU" uses
    /// (`load_ldt`; 0 = no LDT).
    pub ldt: Vec<u64>,
    pub ldt_loaded: usize,
    /// The "CPU's" DS, ES, FS, GS.
    pub selectors: crate::platform::DataSelectors,
    /// Number of `load_data_selectors` calls.
    pub selector_loads: usize,
}

/// FS/GS base a fake selector load leaves behind (real loads put the descriptor's base
/// there), so a test sees whether the core restored the bases.
pub const CLOBBERED_SEGMENT_BASE: u64 = 0xdead_0000;

/// Whether loading `sel` into a data segment register at CPL0 would fault with these
/// GDT guest entries and LDT: the hardware's rules, checked independently of the core.
fn selector_would_fault(sel: u16, gdt: &[u64], ldt: &[u64]) -> bool {
    let index = usize::from(sel >> 3);
    let rpl = u64::from(sel & 3);
    let desc = if sel & 4 != 0 {
        match ldt.get(index) {
            Some(&d) => d,
            None => return true,
        }
    } else if index == 0 {
        return false;
    } else if index < gdt.len() {
        gdt[index]
    } else {
        // The hypervisor's reserved entries: only its flat DPL-3 segments are loadable.
        return ![0xe020, 0xe028, 0xe030].contains(&(sel & !3));
    };
    let present = desc & (1 << 47) != 0;
    let code_data = desc & (1 << 44) != 0;
    let code = desc & (1 << 43) != 0;
    let conforming = code && desc & (1 << 42) != 0;
    let readable = !code || desc & (1 << 41) != 0;
    let dpl = (desc >> 45) & 3;
    !(present && code_data && readable && (conforming || dpl >= rpl))
}

impl FakePlatform {
    /// A 1 GHz TSC starting at 0.
    pub fn new() -> Self {
        FakePlatform {
            input: std::collections::VecDeque::new(),
            console: String::new(),
            tsc: core::cell::Cell::new(0),
            tsc_hz: 1_000_000_000,
            timer: None,
            tlb_flushes: 0,
            invlpgs: Vec::new(),

            segment_bases: (0, 0),
            inactive_gs_base: 0,
            fpu: crate::platform::FpuArea([0xee; 512]),
            fpu_trap: false,
            gdt: vec![0; xen_pv_abi::layout::FIRST_RESERVED_GDT_ENTRY],
            ldt: vec![0; crate::traps::ldt::LDT_MAX_ENTS],
            ldt_loaded: 0,
            selectors: Default::default(),
            selector_loads: 0,
        }
    }
}

impl Default for FakePlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl Platform for FakePlatform {
    fn console_write(&mut self, bytes: &[u8]) {
        self.console.push_str(&String::from_utf8_lossy(bytes));
    }
    fn console_read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.input.len());
        for (slot, byte) in buf.iter_mut().zip(self.input.drain(..n)) {
            *slot = byte;
        }
        n
    }
    fn rdtsc(&self) -> u64 {
        self.tsc.get()
    }
    fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }
    fn set_timer(&mut self, deadline_tsc: Option<u64>) {
        self.timer = deadline_tsc;
    }
    fn flush_tlb(&mut self) {
        self.tlb_flushes += 1;
    }
    fn invlpg(&mut self, va: u64) {
        self.invlpgs.push(va);
    }
    fn segment_bases(&self) -> (u64, u64) {
        self.segment_bases
    }
    fn set_segment_bases(&mut self, fs: u64, gs: u64) {
        self.segment_bases = (fs, gs);
    }
    fn set_fs_base(&mut self, fs: u64) {
        self.segment_bases.0 = fs;
    }
    fn set_gs_base(&mut self, gs: u64) {
        self.segment_bases.1 = gs;
    }
    fn set_inactive_gs_base(&mut self, gs: u64) {
        self.inactive_gs_base = gs;
    }
    fn swap_gs_bases(&mut self) -> u64 {
        core::mem::swap(&mut self.segment_bases.1, &mut self.inactive_gs_base);
        self.inactive_gs_base
    }
    fn fpu_save(&mut self, area: &mut crate::platform::FpuArea) {
        *area = self.fpu;
    }
    fn fpu_restore(&mut self, area: &crate::platform::FpuArea) {
        self.fpu = *area;
    }
    fn set_fpu_trap(&mut self, on: bool) {
        self.fpu_trap = on;
    }
    /// A CPU with max basic leaf 1 whose leaves echo their number in eax.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        [leaf, subleaf, 0, 0]
    }
    fn set_gdt_entries(&mut self, first: usize, descs: &[u64]) {
        // Out-of-range writes are a core bug: make the test fail.
        self.gdt[first..first + descs.len()].copy_from_slice(descs);
    }
    fn set_ldt_entries(&mut self, first: usize, descs: &[u64]) {
        // Out-of-range writes are a core bug: make the test fail.
        self.ldt[first..first + descs.len()].copy_from_slice(descs);
    }
    fn load_ldt(&mut self, entries: usize) {
        assert!(entries <= self.ldt.len(), "LDT of {entries} entries");
        self.ldt_loaded = entries;
    }
    fn data_selectors(&self) -> crate::platform::DataSelectors {
        self.selectors
    }
    fn load_data_selectors(&mut self, sels: crate::platform::DataSelectors) {
        // A load that would fault would fault in the hypervisor: a core bug.
        for sel in sels.to_array() {
            assert!(
                !selector_would_fault(sel, &self.gdt, &self.ldt[..self.ldt_loaded]),
                "loading selector {sel:#x} would fault"
            );
        }
        self.selectors = sels;
        self.selector_loads += 1;
        self.segment_bases = (CLOBBERED_SEGMENT_BASE, CLOBBERED_SEGMENT_BASE);
    }
}

/// Leaks a vector as `&'static mut` storage (frame table, m2p) for a test.
pub fn leak<T: Clone>(value: T, len: usize) -> &'static mut [T] {
    Vec::leak(vec![value; len])
}

// ---- a test hypervisor and hand-built domains ------------------------------------------

use crate::bundle::build::{Guest, bundle};
use crate::domain::runtime::{Domain, DomainState};
use crate::hv::{BootConfig, Hypervisor};
use crate::mmu::FrameInfo;
use crate::mmu::guest::{PTE_PRESENT, PTE_RW, PTE_USER};
use crate::platform::{GuestFrame, Resume};
use xen_pv_abi::VcpuId;
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::{DomId, Mfn};

/// The hypervisor every host test drives.
pub type TestHv = Hypervisor<FakeMemory, FakePlatform>;

/// A hypervisor over `frames` pages of fake RAM (all free but frame 0), with the given
/// L4 slots for guests and command line.
pub fn test_hv_with(frames: usize, hypervisor_l4_slots: [u64; 16], cmdline: &[u8]) -> TestHv {
    let ram = 0x1000..(frames * PAGE_SIZE) as u64;
    Hypervisor::new(
        FakeMemory::new(frames * PAGE_SIZE),
        FakePlatform::new(),
        BootConfig {
            free_ram: core::slice::from_ref(&ram),
            frame_table: leak(FrameInfo::UNUSABLE, frames),
            m2p: leak(0, frames),
            hypervisor_l4_slots,
            cmdline,
        },
    )
}

/// A hypervisor over `frames` pages of fake RAM, empty L4 slots and command line.
pub fn test_hv(frames: usize) -> TestHv {
    test_hv_with(frames, [0; 16], b"")
}

/// Maps `pages` (consecutively, from `va`'s L1 slot on) under the L4 `l4` through fresh,
/// zeroed L3, L2 and L1 tables allocated to `dom`; every level user-accessible and
/// writable, as the hand-built domains need no validation.
pub fn map_pages(hv: &mut TestHv, dom: DomId, l4: Mfn, va: u64, pages: &[Mfn]) {
    let table = PTE_PRESENT | PTE_RW | PTE_USER;
    let slot = |level: u32| (va >> (12 + 9 * (level - 1))) & 0x1ff;
    let mut alloc = || hv.frames.alloc(dom).unwrap();
    let (l3, l2, l1) = (alloc(), alloc(), alloc());
    let mem = &hv.mem;
    for t in [l3, l2, l1] {
        mem.fill(t.maddr(), 0, PAGE_SIZE).unwrap();
    }
    mem.write_u64(l4.maddr() + slot(4) * 8, l3.maddr() | table)
        .unwrap();
    mem.write_u64(l3.maddr() + slot(3) * 8, l2.maddr() | table)
        .unwrap();
    mem.write_u64(l2.maddr() + slot(2) * 8, l1.maddr() | table)
        .unwrap();
    for (i, p) in pages.iter().enumerate() {
        mem.write_u64(l1.maddr() + (slot(1) + i as u64) * 8, p.maddr() | table)
            .unwrap();
    }
}

/// A guest kernel's registers at `rip` with stack `rsp`: Xen's flat ring-3 kernel
/// selectors, interrupts on.
pub fn kernel_frame(rip: u64, rsp: u64) -> GuestFrame {
    GuestFrame {
        rip,
        rsp,
        cs: 0xe033,
        ss: 0xe02b,
        rflags: 0x202,
        ..Default::default()
    }
}

/// A runnable domain on the root `l4` with `frame` as its registers; the caller adds
/// what else it needs (shared_info, rings) before [`insert_domain`].
pub fn runnable_domain(id: DomId, name: &str, dom0: bool, l4: Mfn, frame: GuestFrame) -> Domain {
    let mut d = Domain::refused(id, name.as_bytes(), dom0, 0);
    d.state = DomainState::Runnable;
    d.vcpu_mut(VcpuId(0)).cr3 = l4.maddr();
    d.vcpu_mut(VcpuId(0)).frame = frame;
    d
}

/// Puts `d` into the hypervisor's domain list (kept sorted by id); returns its index.
pub fn insert_domain(hv: &mut TestHv, d: Domain) -> usize {
    let at = hv.domains.partition_point(|x| x.id < d.id);
    hv.domains.insert(at, d);
    if hv.domains[at].is_runnable() {
        hv.start_domain(at).unwrap();
    }
    at
}

/// Builds the domains of a boot bundle of `guests` with the real builder.
pub fn create_domains(hv: &mut TestHv, guests: &[Guest<'_>]) {
    hv.create_domains(&bundle(guests).unwrap());
}

/// Starts the hypervisor, which must have a domain to run; returns its registers.
pub fn started(hv: &mut TestHv) -> GuestFrame {
    let mut frame = GuestFrame::default();
    let r = hv.start(&mut frame);
    assert!(matches!(r, Resume::Guest { .. }), "{r:?}");
    frame
}

/// Makes hypercall `nr` with `args` (rdi, rsi, rdx, r10, r8 in that order) from the
/// guest whose registers are `frame`.
pub fn hypercall(hv: &mut TestHv, frame: &mut GuestFrame, nr: u64, args: &[u64]) -> Resume {
    assert!(args.len() <= 5, "hypercalls take at most 5 arguments");
    frame.rax = nr;
    let regs = [
        &mut frame.rdi,
        &mut frame.rsi,
        &mut frame.rdx,
        &mut frame.r10,
        &mut frame.r8,
    ];
    for (reg, &arg) in regs.into_iter().zip(args) {
        *reg = arg;
    }
    frame.vector = GuestFrame::VECTOR_SYSCALL;
    entry(|| hv.hypercall(frame))
}

/// Most work ([`crate::work::step`]s) one entry into the hypervisor may do, whatever the
/// guest asked: the page-table budget ([`crate::mmu::hypercalls::WORK_BUDGET`]) plus the
/// two tables' worth its first entries may overrun it, plus one batch of elements with
/// their guest copies, plus a scan of a domain's event-channel ports (the default quota
/// is 1023; the FIFO ABI's 2^17 only for domains granted more).
pub const ENTRY_WORK_BOUND: u64 = crate::mmu::hypercalls::WORK_BUDGET + 2 * 512 + 16 * 1024;

std::thread_local! {
    static MAX_ENTRY_WORK: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Runs one entry into the hypervisor (`f`) and checks its work stayed within
/// [`ENTRY_WORK_BOUND`]; the largest seen is kept for [`max_entry_work`].
pub fn entry<R>(f: impl FnOnce() -> R) -> R {
    let before = crate::work::steps();
    let r = f();
    let work = crate::work::steps().wrapping_sub(before);
    MAX_ENTRY_WORK.with(|m| m.set(m.get().max(work)));
    // A test that raised the page-table budget (to compare with a run to the end) raises
    // the bound with it.
    let raised = crate::mmu::hypercalls::test_budget::get()
        .map_or(0, |b| b.saturating_sub(crate::mmu::hypercalls::WORK_BUDGET));
    let bound = ENTRY_WORK_BOUND.saturating_add(raised);
    assert!(
        work <= bound,
        "one entry into the hypervisor did {work} steps of work (bound {bound})"
    );
    r
}

/// The most work one entry did on this thread so far (see [`entry`]).
pub fn max_entry_work() -> u64 {
    MAX_ENTRY_WORK.with(core::cell::Cell::get)
}

/// A hypercall's result as the guest sees it (a negative Xen errno on failure).
pub fn ret(frame: &GuestFrame) -> i64 {
    frame.rax as i64
}

/// The tests' deterministic PRNG (splitmix64: small, no dependency). Every property test
/// takes a fixed seed, so a failure reproduces.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)] // an endless stream, not an Iterator
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    /// True with the given probability in percent.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// One of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A hypervisor over `frames` pages with L4 slots `hv_slots`, running `count` domUs
/// (`one`, `two`, ...; 8 MiB each) built by the real builder from the test ELF; returns
/// it started on d1, with d1's registers (`rsi` = its start_info's address).
pub fn started_test_domains(
    frames: usize,
    hv_slots: [u64; 16],
    count: usize,
) -> (TestHv, GuestFrame) {
    const NAMES: [&str; 4] = ["one", "two", "three", "four"];
    let mut hv = test_hv_with(frames, hv_slots, b"");
    let image = crate::domain::elfnotes::test_elf::TestElf::valid().build();
    let guests: Vec<Guest<'_>> = NAMES[..count]
        .iter()
        .map(|&name| Guest {
            image: &image,
            memory_kib: 8 * 1024,
            dom0: false,
            name,
            cmdline: "",
            weight: 0,
            cap: 0,
            max_grant_frames: 0,
            max_maptrack_frames: 0,
        })
        .collect();
    create_domains(&mut hv, &guests);
    let f = started(&mut hv);
    (hv, f)
}
