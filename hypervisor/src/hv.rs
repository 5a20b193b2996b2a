//! The hypervisor's run-time state and its entry points from the arch layer.
//!
//! The arch layer calls [`Hypervisor::start`] once, then [`Hypervisor::hypercall`] for
//! every `syscall` and [`Hypervisor::guest_exception`] for every exception a guest takes.
//! Each returns a [`Resume`]: the frame now holds the registers of the guest to run
//! (possibly another domain: a context switch), or the machine is to stop.
//!
//! Scheduling is cooperative round-robin over runnable domains (on yield and whenever a
//! domain ends); domains are kept sorted by id.

use crate::bundle::{self, BundleError};
use crate::console::input::InputRing;
use crate::console::{Cursor, Prefix, Serial};
use crate::dlog::{Disp, hv_debug};
use crate::domain::builder::{self, BuildParams};
use crate::domain::runtime::{Domain, DomainState, Vcpu};
use crate::evtchn::EventChannels;
use crate::grant::{GrantLimits, GrantTable};
use crate::mmu::guest::GuestSpace;
use crate::mmu::{FrameInfo, Frames};
use crate::platform::{ExitStatus, GuestFrame, MachineMemory, Platform, Resume};
use crate::sched::policy::Scheduler;
use crate::time::Clock;
use crate::time::timers::TimerQueue;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::ops::Range;
use xen_pv_abi::layout::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64, is_canonical};
use xen_pv_abi::shared_info::{SharedInfo, VcpuInfo};
use xen_pv_abi::{DomId, nr, version};

/// Offset in shared_info of vCPU 0's `evtchn_upcall_pending`, followed by its
/// `evtchn_upcall_mask` (read as a pair on every return to the guest).
const UPCALL_PENDING_MASK_OFF: u64 = (core::mem::offset_of!(SharedInfo, vcpu_info)
    + core::mem::offset_of!(VcpuInfo, evtchn_upcall_pending))
    as u64;
const _: () = assert!(
    core::mem::offset_of!(VcpuInfo, evtchn_upcall_mask)
        == core::mem::offset_of!(VcpuInfo, evtchn_upcall_pending) + 1
);

/// What `XENVER_version` returns: `(major << 16) | minor`. We implement (a subset of)
/// the Xen 4.17 ABI and say so, so guests that check for "at least 3.x" or 4.x work.
pub const XEN_VERSION_NUMBER: u64 = (4 << 16) | 17;

/// The first address after the lower canonical half: RIP after a `syscall` that ends
/// there (the one non-canonical RIP a `syscall` entry can bring).
pub const RIP_PAST_LOWER_HALF: u64 = 1 << 47;

/// Longest hypervisor command line kept (Xen's is a 1024-byte NUL-terminated buffer).
pub const CMDLINE_MAX: usize = 1023;

/// What the arch layer hands the core at boot.
pub struct BootConfig<'a> {
    /// Free RAM (machine addresses) after carving out low memory, the hypervisor image,
    /// the boot module and firmware areas.
    pub free_ram: &'a [Range<u64>],
    /// Frame table storage, `MAX_FRAMES` long.
    pub frame_table: &'static mut [FrameInfo],
    /// m2p storage, `MAX_FRAMES` long, mapped read-only at MACH2PHYS_VIRT_START in guests.
    pub m2p: &'static mut [u64],
    /// L4 entries for slots 256..=271, copied into every guest L4.
    pub hypervisor_l4_slots: [u64; 16],
    /// The hypervisor's command line.
    pub cmdline: &'a [u8],
}

/// State of the physical CPU, apart from any domain's: which vCPU runs, and whose
/// registers, descriptor tables and FPU contents the CPU holds (Xen's per-CPU data). One
/// CPU today; SMP makes this an array indexed by CPU.
#[derive(Debug, Default)]
pub struct PerCpu {
    /// Index (into `domains`) of the domain whose vCPU the arch layer holds registers of.
    pub current: Option<usize>,
    /// Which of that domain's vCPUs it is (meaningful while `current` is `Some`).
    pub vcpu: xen_pv_abi::VcpuId,
    /// The CR3 it runs on, cached for the hypercall fast path.
    pub cr3: u64,
    /// Whether it is in guest user mode (a `syscall` is then a guest system call, not a
    /// hypercall), cached for the hypercall fast path.
    pub user_mode: bool,
    /// Index of the domain, and which of its vCPUs, whose FPU registers and segment
    /// bases the CPU holds.
    pub fpu_owner: Option<(usize, xen_pv_abi::VcpuId)>,
    /// Whose guest descriptors the CPU's GDT holds (traps/gdt.rs).
    pub gdt: crate::traps::gdt::HwGdt,
    /// Index of the domain, and which of its vCPUs, whose LDT the CPU holds
    /// (traps/ldt.rs).
    pub ldt: Option<(usize, xen_pv_abi::VcpuId)>,
    /// The deadline the hardware timer holds: system time and TSC (sched/run.rs
    /// `arm_timer`); `None`: disarmed.
    pub timer: Option<(u64, u64)>,
    /// The last two deadlines converted to TSC values, `(ns, tsc)` (sched/run.rs).
    pub tsc_memo: [Option<(u64, u64)>; 2],
}

/// The hypervisor.
pub struct Hypervisor<M: MachineMemory, P: Platform> {
    pub(crate) mem: M,
    pub(crate) platform: P,
    pub(crate) frames: Frames,
    pub(crate) clock: Clock,
    pub(crate) hypervisor_l4_slots: [u64; 16],
    pub(crate) cmdline: heapless::Vec<u8, CMDLINE_MAX>,
    /// Every domain of the bundle, refused ones included, sorted by id.
    pub(crate) domains: Vec<Domain>,
    /// What the one physical CPU holds now.
    pub(crate) cpu: PerCpu,
    /// Every domain's event channels (evtchn/).
    pub(crate) evtchn: EventChannels,
    /// Who runs next (sched/policy.rs).
    pub(crate) sched: Scheduler,
    /// Every guest timer and the slice end (time/timers.rs).
    pub(crate) timers: TimerQueue,
    /// Wall-clock time at system time 0 (seconds, nanoseconds), from the RTC.
    pub(crate) wallclock: (u64, u32),
    /// Who left the serial line unfinished (console/mod.rs).
    pub(crate) cursor: Cursor,
    /// Typed bytes waiting for the control domain (console/input.rs).
    pub(crate) console_input: InputRing,
    /// Grant mappings (maptrack entries) the domains still held when they ended, which
    /// the hypervisor then released for them: a backend that forgot to unmap shows here.
    pub(crate) maps_left_at_end: u64,
}

/// RFLAGS bits a guest may set: CF PF AF ZF SF TF DF OF AC ID. IOPL, NT, RF, VM, VIF
/// and VIP are never handed to a guest.
const GUEST_RFLAGS_MASK: u64 = (1 << 0)
    | (1 << 2)
    | (1 << 4)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 10)
    | (1 << 11)
    | (1 << 18)
    | (1 << 21);
const RFLAGS_RESERVED_1: u64 = 1 << 1;
const RFLAGS_IF: u64 = 1 << 9;

/// Makes a saved frame safe for `iretq` to CPL3: Xen's flat ring-3 selectors, IOPL 0,
/// interrupts on, canonical RIP and RSP. Returns what was wrong if it cannot be made safe.
pub fn sanitize_for_iret(f: &mut GuestFrame) -> Result<(), &'static str> {
    if !is_canonical(f.rip) {
        return Err("non-canonical rip");
    }
    if !is_canonical(f.rsp) {
        return Err("non-canonical rsp");
    }
    let cs = f.cs | 3;
    if cs != FLAT_RING3_CS64 as u64 && cs != FLAT_RING3_CS32 as u64 {
        return Err("invalid code selector");
    }
    // `iretq` to a 32-bit code segment checks EIP against the segment's 4 GiB limit and
    // raises #GP in the hypervisor's return path if it is beyond (QEMU's TCG does not
    // model this; real CPUs do).
    if cs == FLAT_RING3_CS32 as u64 && f.rip > u64::from(u32::MAX) {
        return Err("rip beyond the 32-bit code segment");
    }
    f.cs = cs;
    f.ss = FLAT_RING3_SS64 as u64;
    f.rflags = (f.rflags & GUEST_RFLAGS_MASK) | RFLAGS_RESERVED_1 | RFLAGS_IF;
    Ok(())
}

/// The mnemonic of an exception vector.
pub fn exception_mnemonic(vector: u64) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        9 | 15 | 22..32 => "exception",
        _ => "interrupt",
    }
}

fn describe_bundle_error(e: BundleError, out: &mut LineWriter) {
    let _ = match e {
        BundleError::Truncated => write!(out, "truncated bundle"),
        BundleError::TooManyEntries(n) => write!(
            out,
            "too many guests ({n}, at most {})",
            bundle::MAX_BUNDLE_ENTRIES
        ),
        BundleError::ImageOutOfBounds(i) => {
            write!(out, "image of entry {i} lies outside the module")
        }
        BundleError::BadFlags(i) => {
            write!(out, "entry {i} is flagged both dom0 and module")
        }
    };
}

/// A console line assembled on the stack (truncated if too long, never failing), so
/// each message reaches the serial port in one write.
pub(crate) struct LineWriter {
    buf: heapless::Vec<u8, 512>,
}

impl LineWriter {
    pub(crate) fn new() -> Self {
        LineWriter {
            buf: heapless::Vec::new(),
        }
    }
}

impl fmt::Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep one byte for the newline.
        let room = self.buf.capacity() - 1 - self.buf.len().min(self.buf.capacity() - 1);
        let take = s.len().min(room);
        let _ = self.buf.extend_from_slice(&s.as_bytes()[..take]);
        Ok(())
    }
}

/// ` cr2=0x..` after a page fault's crash line, nothing otherwise.
struct Cr2Suffix(Option<u64>);

impl fmt::Display for Cr2Suffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(cr2) => write!(f, " cr2={cr2:#x}"),
            None => Ok(()),
        }
    }
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Creates the hypervisor state. System time 0 is now.
    pub fn new(mem: M, platform: P, cfg: BootConfig<'_>) -> Self {
        let frames = Frames::new(cfg.frame_table, cfg.m2p, cfg.free_ram);
        let clock = Clock::new(platform.rdtsc(), platform.tsc_hz());
        let mut cmdline = heapless::Vec::new();
        let _ = cmdline.extend_from_slice(&cfg.cmdline[..cfg.cmdline.len().min(CMDLINE_MAX)]);
        Hypervisor {
            mem,
            platform,
            frames,
            clock,
            hypervisor_l4_slots: cfg.hypervisor_l4_slots,
            cmdline,
            domains: Vec::new(),
            cpu: PerCpu::default(),
            evtchn: EventChannels::new(),
            sched: Scheduler::new(1),
            timers: TimerQueue::new(),
            wallclock: (0, 0),
            cursor: Cursor::new(),
            console_input: InputRing::new(),
            maps_left_at_end: 0,
        }
    }

    /// Builds one domain per guest of the boot module; refusals are reported on the
    /// console. Call once.
    pub fn create_domains(&mut self, module: &[u8]) {
        let (specs, modules) = match bundle::parse_bundle(module) {
            Ok(b) => (b.guests, b.modules),
            Err(e) => {
                let mut w = LineWriter::new();
                describe_bundle_error(e, &mut w);
                self.log(format_args!(
                    "boot module: {}",
                    core::str::from_utf8(&w.buf).unwrap_or("?")
                ));
                return;
            }
        };
        if !modules.is_empty() && !specs.iter().any(|s| s.dom0) {
            self.log(format_args!(
                "boot module: {} dom0 modules ignored: no guest is dom0",
                modules.len()
            ));
        }
        let mut next_domu_id = 1u16;
        let mut have_dom0 = false;
        for spec in &specs {
            let second_dom0 = spec.dom0 && have_dom0;
            let dom0 = spec.dom0 && !have_dom0;
            let id = if dom0 {
                have_dom0 = true;
                DomId(0)
            } else {
                next_domu_id += 1;
                DomId(next_domu_id - 1)
            };
            let now = self.now_ns();
            let domain = if second_dom0 {
                let d = Domain::refused(id, spec.name, false, now);
                self.log_domain(
                    &d,
                    format_args!("refused: a second dom0 (only one guest may be dom0)"),
                );
                d
            } else {
                let params = BuildParams {
                    domid: id,
                    image: spec.image,
                    memory_kib: spec.memory_kib,
                    dom0,
                    cmdline: spec.cmdline,
                    // Xen gives boot modules to dom0 only.
                    modules: if dom0 { &modules } else { &[] },
                    hypervisor_l4_slots: &self.hypervisor_l4_slots,
                };
                match builder::build(&self.mem, &mut self.frames, &params) {
                    Ok(built) => {
                        let (pages, entry) = (built.nr_pages, built.entry.rip);
                        hv_debug!(
                            "domain d{=u16} built: {} pages, entry {=u64:#x}, dom0={=bool}",
                            id.0,
                            pages,
                            entry,
                            dom0
                        );
                        let mut d = Domain::built(id, spec.name, dom0, built, now);
                        d.sched_params = (spec.weight, spec.cap);
                        let limits = grant_limits(spec);
                        match GrantTable::with_limits(limits) {
                            Ok(table) => d.grant = table,
                            Err(_) => self.log_domain(
                                &d,
                                format_args!(
                                    "grant limits {}/{} out of range: Xen's defaults used",
                                    limits.max_grant_frames, limits.max_maptrack_frames
                                ),
                            ),
                        }
                        self.log_domain(&d, format_args!("built: {pages} pages, entry {entry:#x}"));
                        d
                    }
                    Err(e) => {
                        hv_debug!("domain d{=u16} refused by the builder: {}", id.0, Disp(&e));
                        let d = Domain::refused(id, spec.name, dom0, now);
                        self.log_domain(&d, format_args!("refused: {e}"));
                        d
                    }
                }
            };
            // Keep the list sorted by id (dom0 may come anywhere in the bundle).
            if self.domains.try_reserve(1).is_err() {
                self.log_domain(&domain, format_args!("refused: out of hypervisor heap"));
                self.frames.free_all_of(domain.id);
                continue;
            }
            let at = self.domains.partition_point(|d| d.id < domain.id);
            self.domains.insert(at, domain);
            if self.domains[at].is_runnable()
                && let Err(why) = self.start_domain(at)
            {
                self.end_domain(at, DomainState::Refused, format_args!("refused: {why}"));
            }
        }
        // With a control domain the domUs start paused (one controller pause, as xl
        // builds a domain paused): the control domain unpauses each once its rings are
        // mapped and it is introduced, so that no domU prints into (or ends with) a
        // console ring nobody has mapped yet.
        if self.domains.iter().any(|d| d.dom0 && d.is_runnable()) {
            for i in 0..self.domains.len() {
                if !self.domains[i].dom0 && self.domains[i].is_runnable() {
                    let _ = self.pause_domain(i);
                }
            }
        }
    }

    /// Gives a built domain its event channels, its first grant frame, its vCPU to the
    /// scheduler and timers, and its wall clock.
    ///
    /// A domU's xenstore and console ports (the ones the builder wrote into start_info)
    /// are allocated unbound for domain 0, as the toolstack's `alloc_unbound{dom=guest,
    /// remote=0}`: the control domain binds them with `bind_interdomain` (without one,
    /// nobody does and the rings are not served). Its first grant frame, with refs 0
    /// (console) and 1 (xenstore) granting the rings to domain 0, exists from now on:
    /// the control domain maps them before the domU may ever call `setup_table`.
    pub(crate) fn start_domain(&mut self, idx: usize) -> Result<(), &'static str> {
        let d = &self.domains[idx];
        let (id, shared_info) = (d.id, d.shared_info);
        let (store, console) = (d.store_ring, d.console_ring);
        let (weight, cap) = d.sched_params;
        self.evtchn
            .add_domain(id, shared_info, 1, crate::evtchn::DEFAULT_MAX_PORT)
            .map_err(|_| "no room for its event channels")?;
        let builder = crate::evtchn::Caller {
            dom: id,
            vcpu: xen_pv_abi::VcpuId(0),
            privileged: true,
        };
        for (_, want) in [store, console].into_iter().flatten() {
            let port = self.evtchn.alloc_unbound(&builder, id, DomId(0), &self.mem);
            if port != Ok(want) {
                return Err("its ring ports could not be allocated");
            }
        }
        if (store.is_some() || console.is_some()) && self.grow_table(idx, 1).is_err() {
            return Err("no memory for its grant table");
        }
        let weight = if weight == 0 {
            crate::sched::policy::DEFAULT_WEIGHT
        } else {
            weight
        };
        for i in 0..self.domains[idx].vcpus.len() {
            let vid = (id, self.domains[idx].vcpus[i].id);
            self.sched
                .add_vcpu(vid, weight, cap)
                .map_err(|_| "invalid scheduler weight or cap")?;
            self.timers
                .add_vcpu(vid)
                .map_err(|_| "no room for its timers")?;
            let now = self.now_ns();
            let _ = self.sched.wake(vid, now);
        }
        self.publish_wallclock(idx);
        Ok(())
    }

    /// Returns RAM (the boot module, once the domains are built) to the allocator.
    pub fn release_ram(&mut self, range: Range<u64>) {
        self.frames.release_ram(range)
    }

    /// Reads the wall clock, chooses the first vCPU to run and writes its registers into
    /// `frame`. With no runnable domain, prints the final report and stops.
    pub fn start(&mut self, frame: &mut GuestFrame) -> Resume {
        self.schedule(frame)
    }

    /// A `syscall` from the running guest (`frame.vector == GuestFrame::VECTOR_SYSCALL`).
    #[inline]
    pub fn hypercall(&mut self, frame: &mut GuestFrame) -> Resume {
        // From guest user mode a `syscall` is the guest's own system call.
        if self.cpu.user_mode {
            return self.guest_syscall(frame);
        }
        // The benchmark path: no copies, no formatting, no time update.
        if frame.rax == nr::XEN_VERSION as u64
            && frame.rdi == version::XENVER_VERSION as u64
            && frame.rip != RIP_PAST_LOWER_HALF
        {
            frame.rax = XEN_VERSION_NUMBER;
            return Resume::Guest { cr3: self.cpu.cr3 };
        }
        self.hypercall_other(frame)
    }

    /// Every hypercall but the `xen_version` fast path: out of line, so the fast path's
    /// few instructions stay what they were.
    #[inline(never)]
    fn hypercall_other(&mut self, frame: &mut GuestFrame) -> Resume {
        // One jump on the number, then only that path's conditions: every other
        // hypercall reaches `dispatch` after a few compares.
        const IRET: u64 = nr::IRET as u64;
        const EVENT_CHANNEL_OP: u64 = nr::EVENT_CHANNEL_OP as u64;
        const SCHED_OP: u64 = nr::SCHED_OP as u64;
        const FPU_TASKSWITCH: u64 = nr::FPU_TASKSWITCH as u64;
        const SET_SEGMENT_BASE: u64 = nr::SET_SEGMENT_BASE as u64;
        // The RIP checks of the generic return (`resume_if_returnable`) for the fast
        // paths that return to the caller.
        let returnable = || is_canonical(frame.rip) && frame.cs | 3 != FLAT_RING3_CS32 as u64;
        match frame.rax {
            // The return from every bounce (traps/mod.rs); traced runs take the generic
            // path.
            IRET if !crate::dlog::enabled() => self.iret_hypercall(frame),
            // EVTCHNOP_send without the generic dispatcher (evtchn/mod.rs). The generic
            // path crashes the domain after a hypercall that ends the lower half: that
            // RIP goes there.
            EVENT_CHANNEL_OP
                if frame.rdi as u32 == xen_pv_abi::event_channel::EVTCHNOP_SEND
                    && frame.rip != RIP_PAST_LOWER_HALF =>
            {
                self.evtchn_send_fast(frame)
            }
            // `sched_op(SCHEDOP_yield)` (sched/run.rs); the command is a C int.
            SCHED_OP if frame.rdi as u32 == xen_pv_abi::sched::SCHEDOP_YIELD && returnable() => {
                self.sched_yield_fast(frame)
            }
            // Register-only calls (traps/mod.rs); not the GS selector load.
            FPU_TASKSWITCH if returnable() => self.cpu_state_fast(frame),
            SET_SEGMENT_BASE
                if frame.rdi as u32 != xen_pv_abi::traps::SEGBASE_GS_USER_SEL && returnable() =>
            {
                self.cpu_state_fast(frame)
            }
            _ => self.dispatch(frame),
        }
    }

    /// An exception taken while the guest ran (`frame.vector`, `frame.error_code`; `cr2`
    /// for a page fault): emulated, bounced to the guest's handler, or the domain's end
    /// (`traps/mod.rs`).
    pub fn guest_exception(&mut self, frame: &mut GuestFrame, cr2: u64) -> Resume {
        let Some(idx) = self.cpu.current else {
            return self.no_current_domain();
        };
        // Ends with `resume_if_returnable`'s decision (traps/mod.rs).
        self.handle_exception(idx, frame, cr2)
    }

    /// `r`, unless it resumes the current domain at a RIP `iretq` would fault on in the
    /// hypervisor: a non-canonical one (a `syscall`, or an instruction the hypervisor
    /// emulates, in the last bytes below [`RIP_PAST_LOWER_HALF`]) or one beyond 4 GiB with
    /// a 32-bit code segment. That domain is crashed instead. A resumable vCPU with an
    /// upcall due enters its event callback.
    pub(crate) fn resume_if_returnable(&mut self, frame: &mut GuestFrame, r: Resume) -> Resume {
        let (Resume::Guest { .. }, Some(idx)) = (r, self.cpu.current) else {
            return r;
        };
        if !is_canonical(frame.rip)
            || (frame.cs | 3 == FLAT_RING3_CS32 as u64 && frame.rip > u64::from(u32::MAX))
        {
            return self.crash_unreturnable(idx, frame);
        }
        // Resumable. The common case, no upcall due, decided from vCPU 0's pending and
        // mask bytes read together: exactly when `deliver_event_upcall` would do nothing
        // (it delivers only if pending != 0 and mask == 0; an unreadable byte reads as
        // "not pending" or "masked" there, and as "no upcall" here).
        let mut due = [0u8; 2];
        let base = self.domains[idx].shared_info.maddr();
        if self
            .mem
            .read(base + UPCALL_PENDING_MASK_OFF, &mut due)
            .is_err()
            || due[0] == 0
            || due[1] != 0
        {
            return self.resume_current();
        }
        self.enter_with_upcall_due(frame)
    }

    /// The end of [`Self::resume_if_returnable`] with an upcall pending and unmasked:
    /// through the event callback if one is registered. Out of line so that the common
    /// return above saves no registers.
    #[inline(never)]
    fn enter_with_upcall_due(&mut self, frame: &mut GuestFrame) -> Resume {
        self.enter_current(frame)
    }

    /// The end of [`Self::resume_if_returnable`] for a RIP `iretq` would fault on.
    #[cold]
    #[inline(never)]
    fn crash_unreturnable(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        let why = if !is_canonical(frame.rip) {
            "non-canonical rip"
        } else {
            "rip beyond the 32-bit code segment"
        };
        let (rip, rsp) = (frame.rip, frame.rsp);
        self.end_domain(
            idx,
            DomainState::Crashed,
            format_args!("crashed: cannot resume: {why} (rip={rip:#x} rsp={rsp:#x})"),
        );
        self.schedule(frame)
    }

    /// Crashes the running domain for an exception it has no handler for.
    pub(crate) fn crash_for_exception(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        cr2: u64,
    ) -> Resume {
        let vector = frame.vector;
        let mode = if self.cur(idx).user_mode {
            "user"
        } else {
            "kernel"
        };
        let cr2 = Cr2Suffix((vector == 14).then_some(cr2));
        self.end_domain(
            idx,
            DomainState::Crashed,
            format_args!(
                "crashed: {} in guest {mode} vector={vector} error={:#x} rip={:#x}{cr2}",
                exception_mnemonic(vector),
                frame.error_code,
                frame.rip
            ),
        );
        self.schedule(frame)
    }

    // ---- scheduling -------------------------------------------------------------------

    /// Resumes the current domain with the registers already in the frame.
    pub(crate) fn resume_current(&self) -> Resume {
        Resume::Guest { cr3: self.cpu.cr3 }
    }

    /// Records the running vCPU's mode and the root it runs on (traps/mod.rs).
    pub(crate) fn set_current_mode(&mut self, user: bool, cr3: u64) {
        self.cpu.user_mode = user;
        self.cpu.cr3 = cr3;
    }

    /// The id of the vCPU of domain `idx` on the CPU. `idx` is the running domain
    /// (`cpu.current`): hypercalls, traps and scheduling act on the vCPU that entered.
    pub(crate) fn cur_vcpu(&self, idx: usize) -> xen_pv_abi::VcpuId {
        debug_assert_eq!(self.cpu.current, Some(idx), "not the running domain");
        self.cpu.vcpu
    }

    /// The saved state of the running vCPU of domain `idx` (see [`Self::cur_vcpu`]).
    pub(crate) fn cur(&self, idx: usize) -> &Vcpu {
        self.domains[idx].vcpu(self.cur_vcpu(idx))
    }

    /// The saved state of the running vCPU of domain `idx`, mutably.
    pub(crate) fn cur_mut(&mut self, idx: usize) -> &mut Vcpu {
        let v = self.cur_vcpu(idx);
        self.domains[idx].vcpu_mut(v)
    }

    /// The address space of the running domain's guest pointers.
    pub(crate) fn current_space(&self, idx: usize) -> GuestSpace {
        GuestSpace {
            dom: self.domains[idx].id,
            cr3: self.cur(idx).cr3,
        }
    }

    /// Ends a domain: shows the rest of its console_io line, prints `(hv) d<id> <name>:
    /// <what>`, returns all its frames to the allocator and records how it ended.
    ///
    /// The end of a control domain that ran ends the run: every domain still running is
    /// ended as [`DomainState::Killed`] (the control domain powers off only after every
    /// domU ended, so one still running means something went wrong).
    pub(crate) fn end_domain(&mut self, idx: usize, state: DomainState, what: fmt::Arguments<'_>) {
        let was_running = self.domains[idx].is_runnable();
        let d = &mut self.domains[idx];
        let prefix = Prefix {
            id: d.id,
            name: &d.name,
        };
        d.console
            .flush(&mut Serial(&mut self.platform), &mut self.cursor, prefix);
        Self::log_domain_to(
            &mut self.platform,
            &mut self.cursor,
            &self.domains[idx],
            what,
        );
        self.release_ldt(idx);
        let d = &mut self.domains[idx];
        hv_debug!("domain d{=u16} ended: {}", d.id.0, Disp(&what));
        d.state = state;
        for v in &mut d.vcpus {
            v.poll = None;
        }
        let id = d.id;
        // Its peers' ports become unbound, its FIFO frames are released: before its
        // frames go back to the allocator.
        self.evtchn.remove_domain(id, &mut self.frames);
        self.sched.remove_domain(id);
        self.timers.remove_domain(id);
        // Its grant mappings of other domains' frames go first; its own frames that
        // others still map stay allocated until they are unmapped.
        let held = self.domains[idx].grant.live_maps();
        self.maps_left_at_end = self.maps_left_at_end.saturating_add(held as u64);
        self.release_grant_maps(idx);
        if self.has_grant_mappers(id) {
            // One sorted list instead of a scan of every maptrack per frame of `id`.
            if let Some(mapped) = self.mapped_frames(Some(id)) {
                self.frames
                    .free_all_of_keeping(id, |mfn| mapped.binary_search(&mfn).is_ok());
            } else {
                let domains = &self.domains;
                self.frames.free_all_of_keeping(id, |mfn| {
                    crate::grant::grant_mapped_by_others(domains, id, mfn)
                });
            }
        } else {
            self.frames.free_all_of(id);
        }
        // The control domain learns of it through VIRQ_DOM_EXC (Xen's rule).
        for i in 0..self.domains.len() {
            if self.domains[i].dom0 && self.domains[i].is_runnable() {
                let dom0 = self.domains[i].id;
                let wakes = self.evtchn.raise_virq(
                    dom0,
                    xen_pv_abi::VcpuId(0),
                    xen_pv_abi::event_channel::Virq::DOM_EXC.0,
                    &self.mem,
                );
                self.apply_wakes(wakes);
            }
        }
        if self.cpu.current == Some(idx) {
            self.cpu.current = None;
        }
        if self.domains[idx].dom0 && was_running {
            for i in 0..self.domains.len() {
                if self.domains[i].is_runnable() {
                    self.end_domain(
                        i,
                        DomainState::Killed,
                        format_args!("killed at exit: the control domain ended"),
                    );
                }
            }
        }
    }

    /// Prints one line per domain, the frames the ended domains still own
    /// (`frames: <n> still owned by ended domains`, 0 unless something leaked), the
    /// grant mappings the domains still held when they ended (`grant maps: <n> still
    /// held when their domains ended`, 0 when every mapper unmapped what it mapped) and
    /// the summary, and says how QEMU should exit.
    pub(crate) fn final_report(&mut self) -> Resume {
        let mut powered_off = 0usize;
        for i in 0..self.domains.len() {
            let d = &self.domains[i];
            if d.state == DomainState::Shutdown(xen_pv_abi::sched::ShutdownReason::Poweroff) {
                powered_off += 1;
            }
            Self::log_domain_to(
                &mut self.platform,
                &mut self.cursor,
                d,
                format_args!("{}", d.state.report_word()),
            );
        }
        let failed = self.domains.len() - powered_off;
        // Every domain has ended: each frame one of them still owns is a leak (a granted
        // frame outlives its granter only until the last unmap).
        let domains = &self.domains;
        let still_owned = self
            .frames
            .count_owned(|owner| domains.iter().any(|d| d.id == owner && !d.is_runnable()));
        self.log(format_args!(
            "frames: {still_owned} still owned by ended domains"
        ));
        let maps = self.maps_left_at_end;
        self.log(format_args!(
            "grant maps: {maps} still held when their domains ended"
        ));
        self.log(format_args!(
            "all domains ended: {powered_off} powered off, {failed} failed"
        ));
        Resume::Exit(if failed == 0 && powered_off > 0 {
            ExitStatus::AllPoweredOff
        } else {
            ExitStatus::SomeDomainFailed
        })
    }

    /// An entry from a guest while no domain is current: a hypervisor bug.
    pub(crate) fn no_current_domain(&mut self) -> Resume {
        self.log(format_args!("guest entry with no running domain"));
        Resume::Exit(ExitStatus::HypervisorFailure)
    }

    // ---- time -------------------------------------------------------------------------

    /// Xen system time now.
    pub(crate) fn now_ns(&self) -> u64 {
        self.clock.system_time_ns(self.platform.rdtsc())
    }

    // ---- console output of the hypervisor itself ---------------------------------------

    /// Prints `(hv) <message>`.
    pub(crate) fn log(&mut self, args: fmt::Arguments<'_>) {
        let mut w = LineWriter::new();
        let _ = write!(w, "(hv) {args}");
        let _ = w.buf.push(b'\n');
        self.cursor.fresh_line(&mut Serial(&mut self.platform));
        self.platform.console_write(&w.buf);
    }

    /// Prints `(hv) d<id> <name>: <message>`.
    pub(crate) fn log_domain(&mut self, d: &Domain, args: fmt::Arguments<'_>) {
        Self::log_domain_to(&mut self.platform, &mut self.cursor, d, args)
    }

    /// Prints `(hv) d<id> <name>: <message>` while `self` is borrowed elsewhere.
    pub(crate) fn log_domain_to(
        platform: &mut P,
        cursor: &mut Cursor,
        d: &Domain,
        args: fmt::Arguments<'_>,
    ) {
        let mut w = LineWriter::new();
        let _ = write!(w, "(hv) d{} {}: {args}", d.id.0, d.name);
        let _ = w.buf.push(b'\n');
        cursor.fresh_line(&mut Serial(&mut *platform));
        platform.console_write(&w.buf);
    }
}

#[cfg(test)]
#[path = "hv_tests.rs"]
mod tests;

/// A bundle entry's grant-table limits; 0 stands for Xen's default.
fn grant_limits(spec: &crate::bundle::GuestSpec<'_>) -> GrantLimits {
    let default = GrantLimits::default();
    let or_default = |v: u16, d: u32| if v == 0 { d } else { u32::from(v) };
    GrantLimits {
        max_grant_frames: or_default(spec.max_grant_frames, default.max_grant_frames),
        max_maptrack_frames: or_default(spec.max_maptrack_frames, default.max_maptrack_frames),
    }
}
