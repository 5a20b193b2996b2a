//! The two 8259 PICs: remapped away from the exception vectors and fully masked. The
//! hypervisor runs with interrupts off and polls everything it uses.

use super::cpu::outb;

const PIC1_CMD: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_CMD: u16 = 0xa0;
const PIC2_DATA: u16 = 0xa1;

/// Remaps IRQ 0–15 to vectors 0x20–0x2f (so a stray IRQ can never look like an
/// exception) and masks every line.
pub fn remap_and_mask() {
    outb(PIC1_CMD, 0x11); // ICW1: init, ICW4 follows
    outb(PIC2_CMD, 0x11);
    outb(PIC1_DATA, 0x20); // ICW2: vector base
    outb(PIC2_DATA, 0x28);
    outb(PIC1_DATA, 0x04); // ICW3: slave on IRQ2
    outb(PIC2_DATA, 0x02);
    outb(PIC1_DATA, 0x01); // ICW4: 8086 mode
    outb(PIC2_DATA, 0x01);
    outb(PIC1_DATA, 0xff); // mask everything
    outb(PIC2_DATA, 0xff);
}
