//! The periodic timer that gives the hypervisor control back from guests that spin:
//! PIT channel 0 as a rate generator on IRQ 0 (vector 0x20 after the PIC remap).
//!
//! The PIT runs on QEMU's virtual clock, so under `-icount` the ticks land on the same
//! instruction in every run.

use super::cpu::outb;
use super::pic;

const PIT_HZ: u32 = 1_193_182;
const PIT_CH0_DATA: u16 = 0x40;
const PIT_MODE: u16 = 0x43;

/// Ticks per second.
pub const TICK_HZ: u32 = 100;
/// The IDT vector of the tick (IRQ 0).
pub const VECTOR: u64 = pic::IRQ_BASE as u64;

/// Programs PIT channel 0 for [`TICK_HZ`] and unmasks IRQ 0. The tick is only taken
/// while a guest runs: the hypervisor itself runs with interrupts off.
pub fn start() {
    let divisor = PIT_HZ / TICK_HZ;
    // Channel 0, lobyte/hibyte, mode 2 (rate generator), binary.
    outb(PIT_MODE, 0b0011_0100);
    outb(PIT_CH0_DATA, divisor as u8);
    outb(PIT_CH0_DATA, (divisor >> 8) as u8);
    pic::unmask_irq0();
}
