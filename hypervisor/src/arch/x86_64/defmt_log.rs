//! The defmt global logger: binary trace frames (rzcobs) on COM2 (0x2f8), polled,
//! timestamped with the TSC. `cargo xtask run --trace FILE` captures COM2 and decodes
//! the frames against the hypervisor ELF; without a second serial port the probe in
//! [`init`] fails and every frame is dropped before it costs port I/O.
//!
//! Which levels exist in the image is fixed at compile time by `DEFMT_LOG` (xtask builds
//! the normal image with `debug`, the `--trace` image with `trace`).

use super::Racy;
use super::cpu::{inb, outb, rdtsc};
use core::sync::atomic::{AtomicBool, Ordering};

const COM2: u16 = 0x2f8;
const LINE_STATUS: u16 = COM2 + 5;
const SCRATCH: u16 = COM2 + 7;
const TX_EMPTY: u8 = 1 << 5;

/// COM2 answered the probe.
static PRESENT: AtomicBool = AtomicBool::new(false);
/// A frame is being written (defmt forbids nested `acquire`).
static TAKEN: AtomicBool = AtomicBool::new(false);
/// The frame encoder; only touched between `acquire` and `release`.
static ENCODER: Racy<defmt::Encoder> = Racy::new(defmt::Encoder::new());

defmt::timestamp!("{=u64}", rdtsc());

/// Probes COM2 through its scratch register and programs it like COM1 (115200 8N1,
/// FIFOs on, no interrupts). An absent port reads back 0xff and stays unused.
pub fn init() {
    outb(SCRATCH, 0x5a);
    if inb(SCRATCH) != 0x5a {
        return;
    }
    outb(COM2 + 1, 0x00);
    outb(COM2 + 3, 0x80);
    outb(COM2, 0x01);
    outb(COM2 + 1, 0x00);
    outb(COM2 + 3, 0x03);
    outb(COM2 + 2, 0xc7);
    outb(COM2 + 4, 0x03);
    PRESENT.store(true, Ordering::Relaxed);
    crate::dlog::set_enabled(true);
}

fn write_bytes(bytes: &[u8]) {
    if !PRESENT.load(Ordering::Relaxed) {
        return;
    }
    for &b in bytes {
        while inb(LINE_STATUS) & TX_EMPTY == 0 {}
        outb(COM2, b);
    }
}

#[defmt::global_logger]
struct Com2Logger;

// SAFETY: `acquire` refuses nesting through TAKEN, so the encoder has one user between
// `acquire` and `release`; the hypervisor runs on one CPU with interrupts off.
unsafe impl defmt::Logger for Com2Logger {
    fn acquire() {
        if TAKEN.swap(true, Ordering::Acquire) {
            // A frame inside a frame (e.g. a panic while logging): defmt requires a
            // panic here; ours prints on COM1 and exits QEMU.
            panic!("defmt logger re-entered");
        }
        // SAFETY: TAKEN was false, so nobody else uses the encoder until `release`.
        unsafe { (*ENCODER.get()).start_frame(write_bytes) }
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: the caller holds the logger (defmt's contract), so the encoder is ours.
        unsafe { (*ENCODER.get()).end_frame(write_bytes) }
        TAKEN.store(false, Ordering::Release);
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: as in `release`.
        unsafe { (*ENCODER.get()).write(bytes, write_bytes) }
    }
}
