//! The panic handler: report and stop QEMU with status 35.

use super::cpu;
use super::serial::hv_println;
use crate::platform::ExitStatus;
use core::sync::atomic::{AtomicBool, Ordering};

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // A panic while printing a panic: just stop.
    if !PANICKING.swap(true, Ordering::Relaxed) {
        hv_println!("PANIC: {}", info.message());
        if let Some(loc) = info.location() {
            hv_println!("  at {}:{}", loc.file(), loc.line());
        }
    }
    cpu::exit_qemu(ExitStatus::HypervisorFailure)
}
