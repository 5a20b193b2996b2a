//! CPU access: port I/O, MSRs, CR3, the TSC, CPUID, FPU state, stopping QEMU.
//!
//! Everything the `x86_64` crate offers (ports, MSRs, control registers, `hlt`/`cli`)
//! goes through it; inline asm is left only for `clts; fxsave64/fxrstor64`, which the
//! crate does not have.

use crate::platform::ExitStatus;
use core::arch::asm;
use x86_64::instructions::port::Port;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3};
use x86_64::registers::model_specific::Msr;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: the hypervisor owns every legacy device it touches (COM1, PIC, PIT,
    // isa-debug-exit); a port write has no memory-safety effect on Rust state.
    unsafe { Port::new(port).write(value) }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    // SAFETY: as for `outb`; a port read has no memory-safety effect.
    unsafe { Port::new(port).read() }
}

/// Reads the time stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the counter (CR4.TSD is clear, and we run at CPL0 anyway).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist, and the new value must keep the CPU in a state the hypervisor
/// expects (e.g. EFER.LME stays set, LSTAR points at the syscall entry).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe { Msr::new(msr).write(value) }
}

pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SYSENTER_CS: u32 = 0x174;

/// CR3 as a plain machine address plus flag bits.
pub fn read_cr3() -> u64 {
    let (frame, flags) = Cr3::read_raw();
    frame.start_address().as_u64() | u64::from(flags)
}

/// Loads CR3 with the page-aligned root `root` (no PCID, default caching).
///
/// # Safety
/// `root` must be an L4 that maps the hypervisor (its slots 256..=271) as the current
/// one does, so the code doing this keeps running.
pub unsafe fn write_cr3(root: u64) {
    let frame = x86_64::structures::paging::PhysFrame::containing_address(
        x86_64::PhysAddr::new_truncate(root),
    );
    // SAFETY: guaranteed by the caller.
    unsafe { Cr3::write(frame, x86_64::registers::control::Cr3Flags::empty()) }
}

/// Sets or clears CR0.TS (writes CR0 only when it changes).
pub fn set_cr0_ts(on: bool) {
    let cr0 = Cr0::read_raw();
    let ts = Cr0Flags::TASK_SWITCHED.bits();
    let new = if on { cr0 | ts } else { cr0 & !ts };
    if new != cr0 {
        // SAFETY: only TS changes; it affects nothing but FPU/SSE instructions, which the
        // hypervisor (soft-float) never executes outside `fxsave`/`fxrstor` below.
        unsafe { Cr0::write_raw(new) }
    }
}

/// Saves the FPU/SSE state into `area` (clears CR0.TS first: FXSAVE faults with it set).
pub fn fxsave(area: &mut crate::platform::FpuArea) {
    // SAFETY: clts only clears CR0.TS; fxsave64 writes exactly 512 bytes at a 16-byte
    // aligned address (FpuArea's size and alignment), which `area` owns exclusively.
    unsafe {
        asm!("clts", "fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack, preserves_flags))
    }
}

/// Loads the FPU/SSE state from `area` (clears CR0.TS first).
pub fn fxrstor(area: &crate::platform::FpuArea) {
    // SAFETY: fxrstor64 reads 512 aligned bytes of `area`; its contents were produced by
    // fxsave64 or are FpuArea::default() (valid MXCSR), so it cannot #GP.
    unsafe {
        asm!("clts", "fxrstor64 [{}]", in(reg) area.0.as_ptr(), options(nostack, preserves_flags, readonly))
    }
}

/// CPUID leaf `leaf`, subleaf `sub`: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Port of QEMU's isa-debug-exit device.
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Stops the machine: QEMU exits with status `code << 1 | 1`. Halts forever if the
/// isa-debug-exit device is absent.
pub fn exit_qemu(status: ExitStatus) -> ! {
    // SAFETY: a 32-bit write to the isa-debug-exit port; no memory effect.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(status as u32) }
    halt_forever()
}

/// Disables interrupts and halts forever.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
