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
use crate::console::{self, Cursor, Prefix, RingError};
use crate::dlog::{Disp, hv_debug};
use crate::domain::builder::{self, BuildParams};
use crate::domain::runtime::{Domain, DomainState, MAX_DOMAINS};
use crate::mmu::guest::GuestSpace;
use crate::mmu::{FrameInfo, Frames};
use crate::platform::{ExitStatus, GuestFrame, MachineMemory, Platform, Resume};
use crate::time::Clock;
use core::fmt::{self, Write as _};
use core::mem::offset_of;
use core::ops::Range;
use guest_abi::layout::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64, is_canonical};
use guest_abi::shared_info::{SharedInfo, VcpuInfo, VcpuTimeInfo, XEN_PVCLOCK_TSC_STABLE_BIT};
use guest_abi::{DomId, nr, version};
use zerocopy::IntoBytes;

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

/// The hypervisor.
pub struct Hypervisor<M: MachineMemory, P: Platform> {
    pub(crate) mem: M,
    pub(crate) platform: P,
    pub(crate) frames: Frames,
    pub(crate) clock: Clock,
    pub(crate) hypervisor_l4_slots: [u64; 16],
    pub(crate) cmdline: heapless::Vec<u8, CMDLINE_MAX>,
    /// Every domain of the bundle, refused ones included, sorted by id.
    pub(crate) domains: heapless::Vec<Domain, MAX_DOMAINS>,
    /// Index (into `domains`) of the domain whose registers the arch layer holds.
    pub(crate) current: Option<usize>,
    /// Its CR3, cached for the hypercall fast path.
    pub(crate) current_cr3: u64,

    /// Whether it is in guest user mode (a `syscall` is then a guest system call, not a
    /// hypercall), cached for the hypercall fast path.
    current_user_mode: bool,
    /// Index of the domain whose FPU registers and segment bases the CPU holds.
    pub(crate) cpu_state_of: Option<usize>,
    /// Who left the serial line unfinished (console/mod.rs).
    pub(crate) cursor: Cursor,
    /// Whose guest descriptors the CPU's GDT holds (traps/gdt.rs).
    pub(crate) hw_gdt: crate::traps::gdt::HwGdt,
    /// Index of the domain whose LDT the CPU holds (traps/ldt.rs).
    pub(crate) hw_ldt: Option<usize>,
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
            write!(out, "image of guest {i} lies outside the module")
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
            domains: heapless::Vec::new(),
            current: None,
            current_cr3: 0,
            current_user_mode: false,
            cpu_state_of: None,
            cursor: Cursor::new(),
            hw_gdt: Default::default(),
            hw_ldt: None,
        }
    }

    /// Builds one domain per guest of the boot module; refusals are reported on the
    /// console. Call once.
    pub fn create_domains(&mut self, module: &[u8]) {
        let specs = match bundle::parse(module) {
            Ok(specs) => specs,
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
                        let d = Domain::built(id, spec.name, dom0, built, now);
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
            let at = self.domains.partition_point(|d| d.id < domain.id);
            if self.domains.insert(at, domain).is_err() {
                // Cannot happen: a bundle holds at most MAX_DOMAINS guests.
                self.log(format_args!("too many domains, ignoring the rest"));
                return;
            }
        }
    }

    /// Returns RAM (the boot module, once the domains are built) to the allocator.
    pub fn release_ram(&mut self, range: Range<u64>) {
        self.frames.release_ram(range)
    }

    /// Chooses the first domain to run (lowest id) and writes its registers into `frame`.
    /// With no runnable domain, prints the final report and stops.
    pub fn start(&mut self, frame: &mut GuestFrame) -> Resume {
        self.apply_console_mode();
        if let Some(r) = self.start_timer() {
            return r;
        }
        self.run_next(None, frame)
    }

    /// A `syscall` from the running guest (`frame.vector == GuestFrame::VECTOR_SYSCALL`).
    #[inline]
    pub fn hypercall(&mut self, frame: &mut GuestFrame) -> Resume {
        // From guest user mode a `syscall` is the guest's own system call.
        if self.current_user_mode {
            return self.guest_syscall(frame);
        }
        // The benchmark path: no copies, no formatting, no time update.
        if frame.rax == nr::XEN_VERSION as u64
            && frame.rdi == version::XENVER_VERSION as u64
            && frame.rip != RIP_PAST_LOWER_HALF
        {
            frame.rax = XEN_VERSION_NUMBER;
            return Resume::Guest {
                cr3: self.current_cr3,
            };
        }
        self.dispatch(frame)
    }

    /// An exception taken while the guest ran (`frame.vector`, `frame.error_code`; `cr2`
    /// for a page fault): emulated, bounced to the guest's handler, or the domain's end
    /// (`traps/mod.rs`).
    pub fn guest_exception(&mut self, frame: &mut GuestFrame, cr2: u64) -> Resume {
        let Some(idx) = self.current else {
            return self.no_current_domain();
        };
        let r = self.handle_exception(idx, frame, cr2);
        self.resume_if_canonical(frame, r)
    }

    /// `r`, unless it resumes the current domain at a non-canonical RIP: `iretq` would
    /// then fault in the hypervisor. A guest gets there with a `syscall` (or an
    /// instruction the hypervisor emulates) in the last bytes below
    /// [`RIP_PAST_LOWER_HALF`]; that domain is crashed instead.
    pub(crate) fn resume_if_canonical(&mut self, frame: &mut GuestFrame, r: Resume) -> Resume {
        let (Resume::Guest { .. }, Some(idx)) = (r, self.current) else {
            return r;
        };
        if is_canonical(frame.rip) {
            return r;
        }
        let (rip, rsp) = (frame.rip, frame.rsp);
        self.end_domain(
            idx,
            DomainState::Crashed,
            format_args!("crashed: cannot resume: non-canonical rip (rip={rip:#x} rsp={rsp:#x})"),
        );
        self.run_next(Some(idx), frame)
    }

    /// Crashes the running domain for an exception it has no handler for.
    pub(crate) fn crash_for_exception(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        cr2: u64,
    ) -> Resume {
        let vector = frame.vector;
        let mode = if self.domains[idx].vcpu.user_mode {
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
        self.run_next(Some(idx), frame)
    }

    // ---- scheduling -------------------------------------------------------------------

    /// Resumes the current domain with the registers already in the frame.
    pub(crate) fn resume_current(&self) -> Resume {
        Resume::Guest {
            cr3: self.current_cr3,
        }
    }

    /// Records the running vCPU's mode and the root it runs on (traps/mod.rs).
    pub(crate) fn set_current_mode(&mut self, user: bool, cr3: u64) {
        self.current_user_mode = user;
        self.current_cr3 = cr3;
    }

    /// The address space of the running domain's guest pointers.
    pub(crate) fn current_space(&self, idx: usize) -> GuestSpace {
        let d = &self.domains[idx];
        GuestSpace {
            dom: d.id,
            cr3: d.vcpu.cr3,
        }
    }

    /// Saves the running domain's registers (with `frame.rax` already set to its
    /// result) and runs the next runnable domain round-robin — possibly itself again.
    pub(crate) fn yield_current(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        self.domains[idx].vcpu.frame = *frame;
        // Being switched out is a good moment to show what it printed.
        if let Err(e) = self.drain_console(idx) {
            self.crash_for_ring(idx, e);
        }
        self.run_next(Some(idx), frame)
    }

    /// Loads the first runnable domain after `after` (in id order, wrapping, `after`
    /// itself last) into `frame`. With none left: the final report and `Exit`.
    pub(crate) fn run_next(&mut self, after: Option<usize>, frame: &mut GuestFrame) -> Resume {
        self.current = None;
        let n = self.domains.len();
        let start = after.map_or(0, |i| i + 1);
        for k in 0..n {
            let idx = (start + k) % n;
            if !self.domains[idx].is_runnable() {
                continue;
            }
            let mut next = self.domains[idx].vcpu.frame;
            if let Err(why) = sanitize_for_iret(&mut next) {
                let (rip, rsp) = (next.rip, next.rsp);
                self.end_domain(
                    idx,
                    DomainState::Crashed,
                    format_args!("crashed: cannot resume: {why} (rip={rip:#x} rsp={rsp:#x})"),
                );
                continue;
            }
            self.domains[idx].vcpu.frame = next;
            hv_debug!(
                "switch to d{=u16} rip={=u64:#x} rsp={=u64:#x}",
                self.domains[idx].id.0,
                next.rip,
                next.rsp
            );
            self.publish_time(idx);
            *frame = next;
            self.current = Some(idx);
            let switched = self.cpu_state_of != Some(idx);
            self.load_vcpu_state(idx);
            self.load_guest_gdt(idx, false);
            self.load_guest_ldt(idx, false);
            // Data selectors only change with the vCPU (traps/segments.rs); a failed
            // load may end the domain.
            if switched && !self.load_segments(idx, frame) {
                continue;
            }
            return Resume::Guest {
                cr3: self.current_cr3,
            };
        }
        self.final_report()
    }

    /// Ends a domain: shows the rest of its console output, prints `(hv) d<id> <name>:
    /// <what>`, returns all its frames to the allocator and records how it ended.
    pub(crate) fn end_domain(&mut self, idx: usize, state: DomainState, what: fmt::Arguments<'_>) {
        // The ring may be garbage by now; whatever is readable is shown, nothing more.
        let _ = self.drain_console(idx);
        let d = &mut self.domains[idx];
        let prefix = Prefix {
            id: d.id,
            name: &d.name,
        };
        d.console
            .flush(&mut self.platform, &mut self.cursor, prefix);
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
        self.frames.free_all_of(d.id);
        if self.current == Some(idx) {
            self.current = None;
        }
    }

    /// Crashes a domain whose console ring is corrupt.
    pub(crate) fn crash_for_ring(&mut self, idx: usize, e: RingError) {
        match e {
            RingError::ProtocolViolation { cons, prod } => self.end_domain(
                idx,
                DomainState::Crashed,
                format_args!(
                    "crashed: console ring protocol violation (out_cons={cons:#x} out_prod={prod:#x})"
                ),
            ),
            RingError::BadFrame(m) => self.end_domain(
                idx,
                DomainState::Crashed,
                format_args!("crashed: console ring frame not in RAM (maddr={:#x})", m.0),
            ),
        }
    }

    /// Prints what the domain has put in its console ring since the last drain.
    pub(crate) fn drain_console(&mut self, idx: usize) -> Result<(), RingError> {
        let d = &mut self.domains[idx];
        let Some((ring, _)) = d.console_ring else {
            return Ok(());
        };
        let prefix = Prefix {
            id: d.id,
            name: &d.name,
        };
        let (platform, cursor) = (&mut self.platform, &mut self.cursor);
        console::drain(&self.mem, platform, cursor, ring, &mut d.console, prefix).map(|_| ())
    }

    /// Prints one line per domain and the summary, and says how QEMU should exit.
    fn final_report(&mut self) -> Resume {
        let mut powered_off = 0usize;
        for i in 0..self.domains.len() {
            let d = &self.domains[i];
            if d.state == DomainState::Shutdown(guest_abi::sched::ShutdownReason::Poweroff) {
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

    /// Refreshes vCPU 0's `vcpu_time_info` in the domain's shared_info with the pvclock
    /// seqlock protocol: version odd, fields, version even.
    fn publish_time(&mut self, idx: usize) {
        const TIME_OFF: u64 =
            (offset_of!(SharedInfo, vcpu_info) + offset_of!(VcpuInfo, time)) as u64;
        let base = self.domains[idx].shared_info.maddr() + TIME_OFF;
        let mut v = [0u8; 4];
        // shared_info is the domain's own frame, so these cannot fail; if they did, the
        // guest would merely see a stale clock.
        let _ = self.mem.read(base, &mut v);
        let odd = (u32::from_le_bytes(v).wrapping_add(1)) | 1;
        let _ = self.mem.write(base, &odd.to_le_bytes());
        let tsc = self.platform.rdtsc();
        let info = VcpuTimeInfo {
            version: odd,
            pad0: 0,
            tsc_timestamp: tsc,
            system_time: self.clock.system_time_ns(tsc),
            tsc_to_system_mul: self.clock.scale.mul,
            tsc_shift: self.clock.scale.shift,
            flags: XEN_PVCLOCK_TSC_STABLE_BIT,
            pad1: [0; 2],
        };
        let _ = self.mem.write(base, info.as_bytes());
        let _ = self.mem.write(base, &odd.wrapping_add(1).to_le_bytes());
    }

    // ---- console output of the hypervisor itself ---------------------------------------

    /// Prints `(hv) <message>`.
    pub(crate) fn log(&mut self, args: fmt::Arguments<'_>) {
        let mut w = LineWriter::new();
        let _ = write!(w, "(hv) {args}");
        let _ = w.buf.push(b'\n');
        self.cursor.fresh_line(&mut self.platform);
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
        cursor.fresh_line(platform);
        platform.console_write(&w.buf);
    }
}

#[cfg(test)]
#[path = "hv_tests.rs"]
mod tests;
