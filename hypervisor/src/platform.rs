//! The seam between the portable core and the machine.
//!
//! The core (domains, memory, hypercalls, console) never touches hardware. It reaches the
//! machine only through [`MachineMemory`] (copy to and from machine addresses) and
//! [`Platform`] (serial output, the time stamp counter). The `arch` layer implements both
//! for x86_64; host unit tests implement them over plain vectors.
//!
//! Control flow between the two: the arch layer saves the interrupted guest's registers
//! into a [`GuestFrame`] on the hypervisor stack, calls the core (hypercall or guest
//! trap), and resumes as the core's [`Resume`] says: into the (possibly different) guest
//! whose state the core left in the same frame, or out of QEMU with an exit status.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A machine address was outside installed RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadMaddr(pub u64);

/// Byte copies to and from machine memory.
///
/// Copies, not references: guest-visible memory can change under us (another vCPU, a
/// device), so the core never holds a Rust reference into it.
pub trait MachineMemory {
    /// Copies `buf.len()` bytes from machine address `maddr`.
    fn read(&self, maddr: u64, buf: &mut [u8]) -> Result<(), BadMaddr>;
    /// Copies `data` to machine address `maddr`.
    fn write(&self, maddr: u64, data: &[u8]) -> Result<(), BadMaddr>;
    /// Sets `len` bytes at `maddr` to `byte`.
    fn fill(&self, maddr: u64, byte: u8, len: usize) -> Result<(), BadMaddr>;

    /// Reads a little-endian u64.
    fn read_u64(&self, maddr: u64) -> Result<u64, BadMaddr> {
        let mut b = [0u8; 8];
        self.read(maddr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Writes a little-endian u64.
    fn write_u64(&self, maddr: u64, v: u64) -> Result<(), BadMaddr> {
        self.write(maddr, &v.to_le_bytes())
    }
}

/// What the core needs from the machine besides memory.
pub trait Platform {
    /// Writes bytes to the hypervisor console (COM1).
    fn console_write(&mut self, bytes: &[u8]);
    /// Reads bytes typed on the hypervisor console into `buf` without waiting; returns
    /// how many (0 when none are pending, or the machine has no console input).
    fn console_read(&mut self, buf: &mut [u8]) -> usize {
        let _ = buf;
        0
    }
    /// Reads the time stamp counter.
    fn rdtsc(&self) -> u64;
    /// TSC frequency in Hz (calibrated at boot).
    fn tsc_hz(&self) -> u64;
    /// Flushes the TLB entries of guest mappings (after page-table changes).
    fn flush_tlb(&mut self);
    /// Invalidates the TLB entry of one (canonical) guest virtual address.
    fn invlpg(&mut self, va: u64);

    // ---- per-vCPU CPU state the core switches (traps/mod.rs) ----

    /// The running guest's FS base and active GS base, as the CPU holds them now (a
    /// guest can change them itself by loading a segment selector).
    fn segment_bases(&self) -> (u64, u64);
    /// Loads the guest's FS base and active GS base (both canonical: the core checks).
    fn set_segment_bases(&mut self, fs: u64, gs: u64);
    /// Saves the FPU/SSE registers (FXSAVE) into `area`; works whatever CR0.TS is.
    fn fpu_save(&mut self, area: &mut FpuArea);
    /// Loads the FPU/SSE registers (FXRSTOR) from `area` (written only by `fpu_save` or
    /// [`FpuArea::default`]); works whatever CR0.TS is.
    fn fpu_restore(&mut self, area: &FpuArea);
    /// Sets (`true`) or clears CR0.TS: while set, the guest's next FPU/SSE instruction
    /// raises #NM (the guest's virtual CR0.TS, `fpu_taskswitch`).
    fn set_fpu_trap(&mut self, on: bool);
    /// What the CPU answers to `cpuid` with `eax = leaf`, `ecx = subleaf`:
    /// `[eax, ebx, ecx, edx]`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Writes guest descriptors into entries `first..first + descs.len()` of the CPU's
    /// GDT, all below `FIRST_RESERVED_GDT_ENTRY` (the core checked every descriptor:
    /// traps/gdt.rs). Entries from `FIRST_RESERVED_GDT_ENTRY` on are never written.
    fn set_gdt_entries(&mut self, first: usize, descs: &[u64]);
    /// Writes guest descriptors into entries `first..first + descs.len()` of the
    /// hypervisor's LDT buffer (all below 8192; the core checked every descriptor:
    /// traps/ldt.rs). Takes effect for the CPU at the next [`Platform::load_ldt`].
    fn set_ldt_entries(&mut self, first: usize, descs: &[u64]);
    /// Makes entries `0..entries` of the LDT buffer the CPU's LDT (`lldt`); with 0 the
    /// CPU has no LDT (`lldt` of the null selector).
    fn load_ldt(&mut self, entries: usize);
    /// The DS, ES, FS and GS selectors the CPU holds now: the running guest's (the
    /// hypervisor never loads them itself).
    fn data_selectors(&self) -> DataSelectors;
    /// Loads DS, ES, FS and GS. Each selector is null or one the core checked against the
    /// GDT and LDT on the CPU now (traps/segments.rs), so no load can fault. Loading FS
    /// and GS also loads their bases: the core restores the base MSRs afterwards.
    fn load_data_selectors(&mut self, sels: DataSelectors);
}

/// A vCPU's data segment selectors, as in the CPU's DS, ES, FS and GS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataSelectors {
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
}

impl DataSelectors {
    /// `[ds, es, fs, gs]`, the order of Xen's failsafe frame.
    pub fn to_array(self) -> [u16; 4] {
        [self.ds, self.es, self.fs, self.gs]
    }

    /// From `[ds, es, fs, gs]`.
    pub fn from_array([ds, es, fs, gs]: [u16; 4]) -> Self {
        DataSelectors { ds, es, fs, gs }
    }
}

/// A vCPU's FPU/SSE state in FXSAVE format (512 bytes, 16-byte aligned).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct FpuArea(pub [u8; 512]);

impl Default for FpuArea {
    /// The state after `fninit` with SSE exceptions masked: FCW 0x37f, MXCSR 0x1f80.
    fn default() -> Self {
        let mut a = [0u8; 512];
        a[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        a[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        FpuArea(a)
    }
}

impl core::fmt::Debug for FpuArea {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FpuArea { .. }")
    }
}

/// The registers of an interrupted guest vCPU, as the arch entry code saves them on the
/// hypervisor stack (lowest address first). Mirrors the order of Xen's `cpu_user_regs`.
///
/// The last five fields are an `iretq` frame: the arch layer resumes the guest with them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GuestFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// Exception vector, or [`GuestFrame::VECTOR_SYSCALL`] for a `syscall` entry.
    pub vector: u64,
    /// Exception error code (0 when the exception has none).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl GuestFrame {
    /// `vector` value of a frame saved by the `syscall` entry.
    pub const VECTOR_SYSCALL: u64 = 0x100;
    /// Byte offset of `vector` (the arch entry code depends on it).
    pub const VECTOR_OFFSET: usize = 15 * 8;
    /// Byte offset of `rip` (start of the iretq frame).
    pub const RIP_OFFSET: usize = 17 * 8;
}

static_assertions::const_assert_eq!(core::mem::size_of::<GuestFrame>(), 22 * 8);
static_assertions::const_assert_eq!(
    core::mem::offset_of!(GuestFrame, vector),
    GuestFrame::VECTOR_OFFSET
);
static_assertions::const_assert_eq!(
    core::mem::offset_of!(GuestFrame, rip),
    GuestFrame::RIP_OFFSET
);

/// How a run of the hypervisor ended, as QEMU's exit status tells it (isa-debug-exit
/// writes `code`, QEMU exits with `code << 1 | 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// Every domain powered off cleanly (QEMU status 33).
    AllPoweredOff = 0x10,
    /// The hypervisor itself failed: panic or exception (QEMU status 35).
    HypervisorFailure = 0x11,
    /// Every domain ended, but at least one did not power off cleanly: it crashed, was
    /// refused by the domain builder, or shut down for another reason (QEMU status 37).
    SomeDomainFailed = 0x12,
}

impl ExitStatus {
    /// QEMU's process exit status for this code.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }
}

/// What the arch layer does after the core handled an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Return to the guest whose registers are now in the frame, with this page-table
    /// root (machine address of its L4) loaded in CR3.
    Guest {
        /// Machine address of the L4 to load.
        cr3: u64,
    },
    /// No domain is left: stop the machine with this status.
    Exit(ExitStatus),
}
