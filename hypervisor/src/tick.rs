//! Interrupts: how the hypervisor gets the CPU back from guests that spin, and out of
//! idle.
//!
//! The hypervisor's timer is one-shot ([`Platform::set_timer`]), armed by the run loop
//! (`sched/run.rs`) for the earliest deadline: a guest timer, the end of the running
//! vCPU's slice, or — while a guest runs — console housekeeping every
//! [`HOUSEKEEPING_NS`](crate::sched::HOUSEKEEPING_NS) (GRUB at its prompt polls its
//! console ring in a tight loop and never makes a hypercall). Typed console input
//! interrupts too. The arch layer calls [`Hypervisor::timer_tick`] for an interrupt taken
//! while a guest ran (interrupts are off inside the hypervisor), and
//! [`Hypervisor::idle_wakeup`] for one that ended [`Resume::Idle`]. Each:
//!
//! 1. fires the timers that are due (VIRQ_TIMER, poll time-outs, the slice end);
//! 2. moves bytes typed on the serial console into the *input domain*'s console ring
//!    `in[]` (the first runnable domain that has a console ring) and raises its console
//!    port;
//! 3. drains every domain's console ring and answers its xenstore requests;
//! 4. shows the input domain's unfinished line if it printed nothing new since the last
//!    drain (a prompt waiting for input);
//! 5. resumes the running vCPU, or asks the scheduler for the next one when its slice
//!    ended or it can no longer run.

use crate::console::{self, Prefix, RingError};
use crate::domain::runtime::DomainState;
use crate::hv::Hypervisor;
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use core::mem::offset_of;
use xen_pv_abi::Mfn;
use xen_pv_abi::console::{XENCONS_IN_SIZE, XenconsInterface, in_slot};

const IN_OFF: u64 = offset_of!(XenconsInterface, in_) as u64;
const IN_CONS_OFF: u64 = offset_of!(XenconsInterface, in_cons) as u64;
const IN_PROD_OFF: u64 = offset_of!(XenconsInterface, in_prod) as u64;

/// Most input bytes moved per tick (the UART and QEMU hold the rest).
pub const INPUT_PER_TICK: usize = 64;

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
    /// A timer or console-input interrupt arrived while the guest in `frame` ran.
    pub fn timer_tick(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.cpu.current else {
            return self.no_current_domain();
        };
        // Saved first: serving the backends may crash (and so switch away from) it.
        self.cur_mut(idx).frame = *frame;
        let slice_ended = self.expire_timers();
        self.serve_backends();
        if slice_ended || self.cpu.current != Some(idx) || !self.domains[idx].is_runnable() {
            return self.schedule(frame);
        }
        self.refresh_time_if_stale(idx);
        self.arm_timer(true);
        self.enter_current(frame)
    }

    /// An interrupt woke the CPU after the core returned [`Resume::Idle`]; `frame` is
    /// the arch layer's entry frame (holding no guest's registers). Fires what is due,
    /// serves the consoles and xenstore, and runs whoever can run now (or idles again).
    pub fn idle_wakeup(&mut self, frame: &mut GuestFrame) -> Resume {
        if self.cpu.current.is_some() {
            // Idle is only ever entered with no vCPU loaded.
            return self.no_current_domain();
        }
        self.expire_timers();
        self.serve_backends();
        self.schedule(frame)
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
            if !self.domains[i].is_runnable() {
                continue;
            }
            if let Err(e) = self.service_xenstore(i) {
                let why = e.crash_reason();
                self.end_domain(i, DomainState::Crashed, format_args!("crashed: {why}"));
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
        match feed_input(&self.mem, ring, |buf| platform.console_read(buf)) {
            Ok(0) => {}
            // Input arrived: the console port tells the guest (it may be blocked on it).
            Ok(_) => self.notify_console(idx),
            Err(e) => self.crash_for_input_ring(idx, e),
        }
    }

    fn crash_for_input_ring(&mut self, idx: usize, e: RingError) {
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
#[path = "tick_tests.rs"]
mod tests;
