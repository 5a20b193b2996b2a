//! Single-instruction wrappers: port I/O, control registers, MSRs, CPUID, stopping QEMU.

use crate::platform::ExitStatus;
use core::arch::asm;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: the hypervisor owns every legacy device it touches (COM1, PIC, PIT,
    // isa-debug-exit); a port write has no memory-safety effect on Rust state.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`; a port read has no memory-safety effect.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Reads the time stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the counter (CR4.TSD is clear, and we run at CPL0 anyway).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU (else #GP in the hypervisor).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; reading it changes nothing.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist, and the new value must keep the CPU in a state the hypervisor
/// expects (e.g. EFER.LME stays set, LSTAR points at the syscall entry).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

pub const MSR_EFER: u32 = 0xc000_0080;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SFMASK: u32 = 0xc000_0084;
pub const MSR_SYSENTER_CS: u32 = 0x174;
pub const MSR_FS_BASE: u32 = 0xc000_0100;
pub const MSR_GS_BASE: u32 = 0xc000_0101;

pub const EFER_SCE: u64 = 1 << 0;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_NXE: u64 = 1 << 11;

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_MP: u64 = 1 << 1;
pub const CR0_EM: u64 = 1 << 2;
pub const CR0_TS: u64 = 1 << 3;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_AM: u64 = 1 << 18;
pub const CR0_PG: u64 = 1 << 31;

pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_PGE: u64 = 1 << 7;
pub const CR4_OSFXSR: u64 = 1 << 9;
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
pub const CR4_SMEP: u64 = 1 << 20;

pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effect.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// # Safety
/// The value must keep protected mode and paging on, and be valid for this CPU.
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) }
}

pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// # Safety
/// `v` must be the machine address of an L4 that maps the hypervisor (slots 256..=271).
pub unsafe fn write_cr3(v: u64) {
    // SAFETY: guaranteed by the caller; the asm is a memory barrier for the compiler.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) }
}

pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// # Safety
/// The value must keep PAE on and only enable features this CPU has.
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) }
}

/// Sets or clears CR0.TS (writes CR0 only when it changes).
pub fn set_cr0_ts(on: bool) {
    let cr0 = read_cr0();
    let new = if on { cr0 | CR0_TS } else { cr0 & !CR0_TS };
    if new != cr0 {
        // SAFETY: only TS changes; it affects nothing but FPU/SSE instructions, which the
        // hypervisor (soft-float) never executes outside `fxsave`/`fxrstor` below.
        unsafe { write_cr0(new) }
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
    let code = status as u32;
    // SAFETY: a 32-bit write to the isa-debug-exit port; no memory effect.
    unsafe {
        asm!("out dx, eax", in("dx") DEBUG_EXIT_PORT, in("eax") code, options(nomem, nostack))
    }
    halt_forever()
}

/// Disables interrupts and halts forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli/hlt only stop this CPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}
