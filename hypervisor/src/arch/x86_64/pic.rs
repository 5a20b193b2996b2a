//! The two 8259 PICs: remapped away from the exception vectors and masked except for
//! COM1's receive interrupt (IRQ 4, see `timer.rs`), which reaches the CPU through the
//! local APIC's LINT0 (ExtINT). The timer is the local APIC's (apic.rs). The hypervisor
//! runs with interrupts off and polls everything else it uses.

use super::cpu::outb;

const PIC1_CMD: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_CMD: u16 = 0xa0;
const PIC2_DATA: u16 = 0xa1;
/// Vector of IRQ 0.
pub const IRQ_BASE: u8 = 0x20;
const EOI: u8 = 0x20;

/// Remaps IRQ 0–15 to vectors 0x20–0x2f (so a stray IRQ can never look like an
/// exception) and masks every line.
pub fn remap_and_mask() {
    outb(PIC1_CMD, 0x11); // ICW1: init, ICW4 follows
    outb(PIC2_CMD, 0x11);
    outb(PIC1_DATA, IRQ_BASE); // ICW2: vector base
    outb(PIC2_DATA, IRQ_BASE + 8);
    outb(PIC1_DATA, 0x04); // ICW3: slave on IRQ2
    outb(PIC2_DATA, 0x02);
    outb(PIC1_DATA, 0x01); // ICW4: 8086 mode
    outb(PIC2_DATA, 0x01);
    outb(PIC1_DATA, 0xff); // mask everything
    outb(PIC2_DATA, 0xff);
}

/// The IRQ of COM1.
pub const IRQ_COM1: u8 = 4;

/// Lets `irq` (a master-PIC line, below 8) through; the others keep their masks.
pub fn unmask(irq: u8) {
    debug_assert!(irq < 8, "slave PIC lines are never used");
    let mask = super::cpu::inb(PIC1_DATA) & !(1 << (irq & 7));
    outb(PIC1_DATA, mask);
}

/// Ends the interrupt of an IRQ on the master PIC.
pub fn end_of_interrupt() {
    outb(PIC1_CMD, EOI);
}
