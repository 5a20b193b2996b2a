//! COM1 (16550 UART at 0x3f8): the hypervisor console. Polled; its receive interrupt
//! only wakes the CPU (timer.rs).

use super::cpu::{inb, outb};
use core::fmt;

const COM1: u16 = 0x3f8;
const LINE_STATUS: u16 = COM1 + 5;
const TX_EMPTY: u8 = 1 << 5;
const DATA_READY: u8 = 1 << 0;

/// Programs COM1 for 115200 8N1, FIFOs on, no interrupts.
pub fn init() {
    outb(COM1 + 1, 0x00); // no interrupts: we poll
    outb(COM1 + 3, 0x80); // DLAB on to set the divisor
    outb(COM1, 0x01); // divisor 1 = 115200 baud
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); // 8 data bits, no parity, 1 stop bit, DLAB off
    outb(COM1 + 2, 0xc7); // FIFOs on and cleared
    outb(COM1 + 4, 0x03); // DTR + RTS
}

/// Interrupt enable register bit: received data available.
const IER_RX: u8 = 1 << 0;
/// Modem control: DTR, RTS, and OUT2 (which gates the UART's IRQ line on a PC).
const MCR_DTR_RTS_OUT2: u8 = 0x0b;

/// Enables the received-data interrupt (IRQ 4). The bytes are still read by polling
/// ([`read_bytes`]); reading them is what lowers the interrupt line.
pub fn enable_rx_interrupt() {
    outb(COM1 + 4, MCR_DTR_RTS_OUT2);
    outb(COM1 + 1, IER_RX);
}

/// Writes bytes as they are (no newline translation: transcripts stay byte-exact).
pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        while inb(LINE_STATUS) & TX_EMPTY == 0 {}
        outb(COM1, b);
    }
}

/// Takes the received bytes waiting in the UART (polled; never blocks).
pub fn read_bytes(buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() && inb(LINE_STATUS) & DATA_READY != 0 {
        buf[n] = inb(COM1);
        n += 1;
    }
    n
}

/// `fmt::Write` over COM1, for the hypervisor's own messages.
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Prints one `(hv) ` line on COM1.
macro_rules! hv_println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::arch::x86_64::serial::Serial, "(hv) {}", format_args!($($arg)*));
    }};
}
pub(crate) use hv_println;
