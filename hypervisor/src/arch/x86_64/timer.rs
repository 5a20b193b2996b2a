//! The hypervisor's interrupts: the local APIC's one-shot timer (apic.rs), which the
//! core arms through `Platform::set_timer`, and COM1's receive interrupt, which wakes an
//! idle CPU when a key is typed.
//!
//! Both run on QEMU's virtual clock, so under `-icount` the timer interrupts land on the
//! same instruction in every run. The PIT only serves the TSC calibration at boot
//! (tsc.rs) and is stopped afterwards.

use super::cpu::outb;
use super::{apic, pic, serial};

const PIT_CH0_DATA: u16 = 0x40;
const PIT_MODE: u16 = 0x43;

/// The IDT vector of the APIC timer.
pub const VECTOR: u64 = apic::TIMER_VECTOR as u64;
/// The IDT vector of COM1's interrupt (IRQ 4 through the PIC).
pub const SERIAL_VECTOR: u64 = (pic::IRQ_BASE + pic::IRQ_COM1) as u64;

/// Stops PIT channel 0 (the firmware leaves it ticking at 18.2 Hz; the calibration may
/// have left it running too): mode 0 with the longest count fires once more into the
/// masked IRQ 0 and then stays quiet, so an idle machine has no periodic wakeups.
pub fn stop_pit() {
    // Channel 0, lobyte/hibyte, mode 0 (interrupt on terminal count), binary; count 0
    // means 65536.
    outb(PIT_MODE, 0b0011_0000);
    outb(PIT_CH0_DATA, 0);
    outb(PIT_CH0_DATA, 0);
}

/// Lets COM1's receive interrupt through. The timer needs no start: it fires once the
/// core arms it. Interrupts are only taken while a guest runs or the CPU is idle: the
/// hypervisor itself runs with interrupts off.
pub fn start() {
    serial::enable_rx_interrupt();
    pic::unmask(pic::IRQ_COM1);
}

/// Acknowledges a device interrupt: the APIC timer at the APIC, COM1 at the PIC.
/// Spurious interrupts (the APIC's, the PIC's IRQ 7) and anything else need nothing.
pub fn acknowledge(vector: u64) {
    match vector {
        VECTOR => {
            if let Some(lapic) = apic::get() {
                lapic.eoi();
            }
        }
        SERIAL_VECTOR => pic::end_of_interrupt(),
        _ => {}
    }
}
