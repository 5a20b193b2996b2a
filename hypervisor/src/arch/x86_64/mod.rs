//! x86_64 bare metal under QEMU: PVH boot, paging, GDT/IDT/TSS, the `syscall` and
//! exception entry paths, COM1, the local APIC timer, PIT/TSC calibration, the CMOS RTC
//! and isa-debug-exit.
//!
//! Boot order: `boot.rs` (32-bit stub → long mode → higher half → [`boot::arch_main`]),
//! which sets up the CPU, reads the PVH start info, builds the core's
//! [`crate::hv::Hypervisor`] and enters the first guest through `entry.rs`.

use core::cell::UnsafeCell;

pub mod apic;
pub mod boot;
pub mod cpu;
pub mod defmt_log;
pub mod descriptors;
pub mod entry;
pub mod heap;
pub mod memory;
pub mod paging;
pub mod panic;
pub mod pc;
pub mod pic;
pub mod rtc;
pub mod serial;
pub mod stack;
pub mod start_info;
pub mod timer;
pub mod tsc;

/// Where all machine memory below 4 GiB is mapped (PML4 slot 262), and where the image
/// itself is linked: virtual = `DIRECTMAP_BASE` + physical. `linker.ld` repeats this
/// value and asserts it equals the `__hv_directmap_base` symbol exported in `boot.rs`.
pub const DIRECTMAP_BASE: u64 = 0xffff_8300_0000_0000;
/// Extent of the direct map (and of supported machine memory).
pub const DIRECTMAP_SIZE: u64 = 4 << 30;

/// A static the hypervisor mutates through raw pointers.
///
/// The hypervisor runs on one CPU with interrupts off and never re-enters itself, so
/// plain `static` storage with documented single-writer use is enough; every access goes
/// through `get()` and an `unsafe` block that states why it is exclusive.
#[repr(transparent)]
pub struct Racy<T>(UnsafeCell<T>);

// SAFETY: one CPU, interrupts off, no re-entry (see the type's documentation): there is
// never concurrent access.
unsafe impl<T> Sync for Racy<T> {}

impl<T> Racy<T> {
    pub const fn new(value: T) -> Self {
        Racy(UnsafeCell::new(value))
    }
    /// Raw pointer to the contents.
    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// Physical (machine) address of a hypervisor static, which is linked in the direct map.
pub fn virt_to_phys<T>(p: *const T) -> u64 {
    (p as u64) - DIRECTMAP_BASE
}
