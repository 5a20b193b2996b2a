//! The periodic timer tick: how the hypervisor keeps control of guests that spin.
//!
//! GRUB at its prompt polls its console ring in a tight loop and never makes a
//! hypercall, so the hypervisor's backends cannot wait for kicks alone. The arch layer
//! calls [`Hypervisor::timer_tick`] on every timer (or console input) interrupt taken
//! while a guest runs (interrupts are off inside the hypervisor). The timer is one-shot
//! ([`Platform::set_timer`]): the core re-arms it [`TICK_HZ`] times a second, at start
//! and after every tick. Each tick:
//!
//! 1. moves bytes typed on the serial console into the *input domain*'s console ring
//!    `in[]` (the first runnable domain that has a console ring; no event is sent: GRUB
//!    and Mini-OS poll `in_prod`);
//! 2. drains every domain's console ring and answers its xenstore requests;
//! 3. shows the input domain's unfinished line if it printed nothing new since the last
//!    drain (a prompt waiting for input);
//! 4. preempts the running domain: round-robin to the next runnable one.
//!
//! When the core returns [`Resume::Idle`] the arch layer halts, and the next interrupt
//! brings it to [`Hypervisor::idle_wakeup`]. Only the `debug-idle-test` command-line
//! word idles today (once, for the first second after boot), to exercise that path.

use crate::console::{self, Prefix, RingError};
use crate::hv::Hypervisor;
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use core::mem::offset_of;
use guest_abi::Mfn;
use guest_abi::console::{XENCONS_IN_SIZE, XenconsInterface, in_slot};

const IN_OFF: u64 = offset_of!(XenconsInterface, in_) as u64;
const IN_CONS_OFF: u64 = offset_of!(XenconsInterface, in_cons) as u64;
const IN_PROD_OFF: u64 = offset_of!(XenconsInterface, in_prod) as u64;

/// Most input bytes moved per tick (the UART and QEMU hold the rest).
pub const INPUT_PER_TICK: usize = 64;

/// Rate of the tick the core arms (until the scheduler decides its own deadlines).
pub const TICK_HZ: u64 = 100;

/// Command-line word that makes the core idle for the first second after boot.
const DEBUG_IDLE_TEST: &[u8] = b"debug-idle-test";

/// Copies up to `bytes.len()` bytes, limited by the free space of the `in[]` ring of the
/// console page `ring`, from `read` into the ring and publishes `in_prod`. `read` fills
/// a buffer and returns how many bytes it wrote. Returns how many bytes went in.
///
/// `in_cons` is the guest's: a consumer more than a ring behind the producer (or ahead
/// of it) is a protocol violation.
pub fn feed_input<M: MachineMemory>(
    mem: &M,
    ring: Mfn,
    read: impl FnOnce(&mut [u8]) -> usize,
) -> Result<usize, RingError> {
    let base = ring.maddr();
    let mut b = [0u8; 4];
    mem.read(base + IN_CONS_OFF, &mut b)?;
    let cons = u32::from_le_bytes(b);
    mem.read(base + IN_PROD_OFF, &mut b)?;
    let prod = u32::from_le_bytes(b);
    let used = prod.wrapping_sub(cons) as usize;
    if used > XENCONS_IN_SIZE {
        return Err(RingError::ProtocolViolation { cons, prod });
    }
    let room = (XENCONS_IN_SIZE - used).min(INPUT_PER_TICK);
    if room == 0 {
        return Ok(0);
    }
    let mut buf = [0u8; INPUT_PER_TICK];
    let n = read(&mut buf[..room]).min(room);
    if n == 0 {
        return Ok(0);
    }
    // At most two pieces: up to the end of in[], then from its start.
    let first = in_slot(prod);
    let head = n.min(XENCONS_IN_SIZE - first);
    mem.write(base + IN_OFF + first as u64, &buf[..head])?;
    mem.write(base + IN_OFF, &buf[head..n])?;
    mem.write(
        base + IN_PROD_OFF,
        &prod.wrapping_add(n as u32).to_le_bytes(),
    )?;
    Ok(n)
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// A timer interrupt arrived while the guest in `frame` ran. Serves the consoles and
    /// xenstore, then runs the next runnable domain (round-robin; possibly the same).
    /// The timer is re-armed for the next tick afterwards.
    pub fn timer_tick(&mut self, frame: &mut GuestFrame) -> Resume {
        let r = self.tick(frame);
        self.arm_tick();
        r
    }

    fn tick(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.current else {
            return self.no_current_domain();
        };
        // Saved first: serving the backends may crash (and so switch away from) it.
        self.domains[idx].vcpu.frame = *frame;
        self.serve_backends();
        if !self.domains[idx].is_runnable() {
            return self.run_next(Some(idx), frame);
        }
        self.yield_current(idx, frame)
    }

    /// An interrupt woke the CPU after the core returned [`Resume::Idle`]; `frame` is
    /// the arch layer's entry frame (holding no guest's registers). Serves the consoles
    /// and xenstore like a tick, then runs the first runnable domain, or idles again
    /// while the `debug-idle-test` second lasts.
    pub fn idle_wakeup(&mut self, frame: &mut GuestFrame) -> Resume {
        if self.current.is_some() {
            // Idle is only ever entered with no vCPU loaded.
            return self.no_current_domain();
        }
        if let Some(until) = self.debug_idle_until() {
            // Early (typed input, a spurious interrupt): keep waiting.
            self.platform.set_timer(Some(until));
            return Resume::Idle;
        }
        self.serve_backends();
        self.arm_tick();
        self.run_next(None, frame)
    }

    /// Arms the timer at start: the first tick, or (with `debug-idle-test`) the end of
    /// the idle second, returning [`Resume::Idle`] for the caller to pass on.
    pub(crate) fn start_timer(&mut self) -> Option<Resume> {
        if let Some(until) = self.debug_idle_until() {
            self.log(format_args!("debug-idle-test: idle until 1 s after boot"));
            self.platform.set_timer(Some(until));
            return Some(Resume::Idle);
        }
        self.arm_tick();
        None
    }

    /// Arms the timer one tick period from now.
    pub(crate) fn arm_tick(&mut self) {
        let period = (self.platform.tsc_hz() / TICK_HZ).max(1);
        let deadline = self.platform.rdtsc().saturating_add(period);
        self.platform.set_timer(Some(deadline));
    }

    /// With `debug-idle-test` on the command line, until 1 s after boot: the TSC value
    /// of that second's end.
    fn debug_idle_until(&self) -> Option<u64> {
        if !self
            .cmdline
            .split(|&b| b == b' ')
            .any(|w| w == DEBUG_IDLE_TEST)
        {
            return None;
        }
        let until = self.clock.boot_tsc.saturating_add(self.platform.tsc_hz());
        (self.platform.rdtsc() < until).then_some(until)
    }

    /// Serves every runnable domain's backends: console input into the input domain,
    /// console output, xenstore, and the input domain's unfinished prompt line.
    fn serve_backends(&mut self) {
        let input = self.input_domain();
        if let Some(i) = input {
            self.poll_console_input(i);
        }
        for i in 0..self.domains.len() {
            if !self.domains[i].is_runnable() {
                continue;
            }
            let drained = self.drain_console_counted(i);
            if !self.service_xenstore(i) {
                continue;
            }
            if drained == Some(0) && input == Some(i) {
                let d = &mut self.domains[i];
                let prefix = Prefix {
                    id: d.id,
                    name: &d.name,
                };
                d.console
                    .flush_partial(&mut self.platform, &mut self.cursor, prefix);
            }
        }
    }

    /// The domain that gets console input: the first runnable one with a console ring.
    pub(crate) fn input_domain(&self) -> Option<usize> {
        self.domains
            .iter()
            .position(|d| d.is_runnable() && d.console_ring.is_some())
    }

    /// Moves typed bytes into the console ring of domain `idx`; a corrupt ring crashes it.
    fn poll_console_input(&mut self, idx: usize) {
        let Some((ring, _)) = self.domains[idx].console_ring else {
            return;
        };
        let platform = &mut self.platform;
        if let Err(e) = feed_input(&self.mem, ring, |buf| platform.console_read(buf)) {
            self.crash_for_input_ring(idx, e);
        }
    }

    fn crash_for_input_ring(&mut self, idx: usize, e: RingError) {
        use crate::domain::runtime::DomainState;
        match e {
            RingError::ProtocolViolation { cons, prod } => self.end_domain(
                idx,
                DomainState::Crashed,
                format_args!(
                    "crashed: console ring protocol violation (in_cons={cons:#x} in_prod={prod:#x})"
                ),
            ),
            RingError::BadFrame(_) => self.crash_for_ring(idx, e),
        }
    }

    /// Drains domain `idx`'s console ring; `Some(bytes)`, or `None` when it has no ring
    /// or the ring was corrupt (then the domain is crashed).
    fn drain_console_counted(&mut self, idx: usize) -> Option<usize> {
        let d = &mut self.domains[idx];
        let (ring, _) = d.console_ring?;
        let prefix = Prefix {
            id: d.id,
            name: &d.name,
        };
        let (platform, cursor) = (&mut self.platform, &mut self.cursor);
        match console::drain(&self.mem, platform, cursor, ring, &mut d.console, prefix) {
            Ok(n) => Some(n),
            Err(e) => {
                self.crash_for_ring(idx, e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::testutil::{TestHv, insert_domain, kernel_frame, runnable_domain, test_hv_with};
    use guest_abi::DomId;
    use guest_abi::layout::PAGE_SIZE;

    const RIP: u64 = 0xffff_ffff_8000_1000;
    const PERIOD: u64 = 1_000_000_000 / TICK_HZ;

    /// A hypervisor with `n` runnable hand-built domains (ids 1..=n, `rbx` = id); the
    /// fake TSC stands at `tsc`.
    fn hv_with(cmdline: &[u8], n: u16, tsc: u64) -> TestHv {
        let mut hv = test_hv_with(64, [0; 16], cmdline);
        for id in 1..=n {
            let dom = DomId(id);
            let l4 = hv.frames.alloc(dom).unwrap();
            let shared = hv.frames.alloc(dom).unwrap();
            for f in [l4, shared] {
                hv.mem.fill(f.maddr(), 0, PAGE_SIZE).unwrap();
            }
            let frame = GuestFrame {
                rbx: u64::from(id),
                ..kernel_frame(RIP, RIP + 0x1000)
            };
            let mut d = runnable_domain(dom, "t", false, l4, frame);
            d.shared_info = shared;
            insert_domain(&mut hv, d);
        }
        hv.platform.tsc.set(tsc);
        hv
    }

    #[test]
    fn start_and_every_tick_arm_the_next_tick() {
        let mut hv = hv_with(b"", 2, 5_000);
        let mut f = GuestFrame::default();
        assert!(matches!(hv.start(&mut f), Resume::Guest { .. }));
        assert_eq!(hv.platform.timer, Some(5_000 + PERIOD));
        for (k, want) in [(1u64, 2u64), (2, 1), (3, 2)] {
            let now = 5_000 + k * PERIOD + 7;
            hv.platform.tsc.set(now);
            assert!(matches!(hv.timer_tick(&mut f), Resume::Guest { .. }));
            assert_eq!(hv.platform.timer, Some(now + PERIOD), "tick {k}");
            assert_eq!(f.rbx, want, "round-robin at tick {k}");
        }
    }

    #[test]
    fn the_tick_period_follows_the_tsc_rate() {
        let mut hv = hv_with(b"", 1, 0);
        hv.platform.tsc_hz = 3_000_000_000;
        hv.arm_tick();
        assert_eq!(hv.platform.timer, Some(30_000_000));
        // A TSC near its end saturates instead of wrapping to a deadline in the past.
        hv.platform.tsc.set(u64::MAX - 5);
        hv.arm_tick();
        assert_eq!(hv.platform.timer, Some(u64::MAX));
    }

    #[test]
    fn debug_idle_test_idles_for_the_first_second() {
        let mut hv = hv_with(b"console=com1 debug-idle-test", 1, 1_000);
        // System time 0 is TSC 0 (the fake's value at `new`): 1 s is TSC 1e9.
        let mut f = GuestFrame::default();
        assert_eq!(hv.start(&mut f), Resume::Idle);
        assert_eq!(hv.platform.timer, Some(1_000_000_000));
        assert_eq!(hv.current, None);
        assert!(hv.platform.console.contains("debug-idle-test"));
        // An early wakeup (typed input, a spurious interrupt) idles again, same deadline.
        hv.platform.tsc.set(400_000_000);
        hv.platform.timer = None;
        assert_eq!(hv.idle_wakeup(&mut f), Resume::Idle);
        assert_eq!(hv.platform.timer, Some(1_000_000_000));
        // At the deadline the first domain runs and the tick is armed.
        hv.platform.tsc.set(1_000_000_003);
        assert!(matches!(hv.idle_wakeup(&mut f), Resume::Guest { .. }));
        assert_eq!((f.rbx, f.rip), (1, RIP));
        assert_eq!(hv.platform.timer, Some(1_000_000_003 + PERIOD));
        // Later ticks are ordinary.
        hv.platform.tsc.set(2_000_000_000);
        assert!(matches!(hv.timer_tick(&mut f), Resume::Guest { .. }));
        assert_eq!(hv.platform.timer, Some(2_000_000_000 + PERIOD));
    }

    #[test]
    fn without_the_switch_start_never_idles() {
        for cmdline in [&b""[..], b"debug-idle-testx", b"xdebug-idle-test"] {
            let mut hv = hv_with(cmdline, 1, 0);
            let mut f = GuestFrame::default();
            assert!(
                matches!(hv.start(&mut f), Resume::Guest { .. }),
                "{cmdline:?}"
            );
        }
    }

    #[test]
    fn idle_wakeup_ends_without_domains_and_refuses_a_loaded_vcpu() {
        // No domain: waking up reports the end, as start would.
        let mut hv = hv_with(b"", 0, 0);
        let mut f = GuestFrame::default();
        assert!(matches!(hv.idle_wakeup(&mut f), Resume::Exit(_)));
        // Idle is only entered with no vCPU loaded; a wakeup with one is a core bug.
        let mut hv = hv_with(b"", 1, 0);
        assert!(matches!(hv.start(&mut f), Resume::Guest { .. }));
        assert_eq!(
            hv.idle_wakeup(&mut f),
            Resume::Exit(crate::platform::ExitStatus::HypervisorFailure)
        );
    }
}
