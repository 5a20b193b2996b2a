//! Interrupts: how the hypervisor gets the CPU back from guests that spin, and out of
//! idle.
//!
//! The hypervisor's timer is one-shot ([`Platform::set_timer`]), armed by the run loop
//! (`sched/run.rs`) for the earliest deadline: a guest timer or the end of the running
//! vCPU's slice. Typed console input interrupts too. The arch layer calls
//! [`Hypervisor::timer_tick`] for an interrupt taken while a guest ran (interrupts are
//! off inside the hypervisor), and [`Hypervisor::idle_wakeup`] for one that ended
//! [`Resume::Idle`]. Each:
//!
//! 1. fires the timers that are due (VIRQ_TIMER, poll time-outs, the slice end);
//! 2. moves bytes typed on the serial console into the control domain's input ring
//!    (console/input.rs) and raises VIRQ_CONSOLE to it; without a running control domain
//!    they are read and dropped (reading is what quiets the UART's interrupt);
//! 3. resumes the running vCPU, or asks the scheduler for the next one when its slice
//!    ended or it can no longer run.
//!
//! Nothing is polled: the guests' console and xenstore rings are served by the control
//! domain, woken by their event channels.

use crate::hv::Hypervisor;
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use xen_pv_abi::VcpuId;
use xen_pv_abi::event_channel::Virq;

/// Most input bytes taken from the UART per interrupt (the UART and QEMU hold the rest
/// and interrupt again).
pub const INPUT_PER_TICK: usize = 64;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// A timer or console-input interrupt arrived while the guest in `frame` ran.
    pub fn timer_tick(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.cpu.current else {
            return self.no_current_domain();
        };
        self.cur_mut(idx).frame = *frame;
        let slice_ended = self.expire_timers();
        self.poll_console_input();
        if slice_ended || self.cpu.current != Some(idx) || !self.domains[idx].is_runnable() {
            return self.schedule(frame);
        }
        self.refresh_time_if_stale(idx);
        self.arm_timer();
        self.enter_current(frame)
    }

    /// An interrupt woke the CPU after the core returned [`Resume::Idle`]; `frame` is
    /// the arch layer's entry frame (holding no guest's registers). Fires what is due,
    /// takes typed input, and runs whoever can run now (or idles again).
    pub fn idle_wakeup(&mut self, frame: &mut GuestFrame) -> Resume {
        if self.cpu.current.is_some() {
            // Idle is only ever entered with no vCPU loaded.
            return self.no_current_domain();
        }
        self.expire_timers();
        self.poll_console_input();
        self.schedule(frame)
    }

    /// The running control domain's index, if there is one.
    pub(crate) fn control_domain(&self) -> Option<usize> {
        self.domains.iter().position(|d| d.dom0 && d.is_runnable())
    }

    /// Moves typed bytes into the control domain's input ring (what does not fit is
    /// dropped, as in Xen) and raises its VIRQ_CONSOLE.
    fn poll_console_input(&mut self) {
        let mut buf = [0u8; INPUT_PER_TICK];
        let n = self.platform.console_read(&mut buf).min(INPUT_PER_TICK);
        if n == 0 {
            return;
        }
        let Some(c) = self.control_domain() else {
            return;
        };
        self.console_input.push(&buf[..n]);
        let dom0 = self.domains[c].id;
        let wakes = self
            .evtchn
            .raise_virq(dom0, VcpuId(0), Virq::CONSOLE.0, &self.mem);
        self.apply_wakes(wakes);
    }
}

#[cfg(test)]
#[path = "tick_tests.rs"]
mod tests;
