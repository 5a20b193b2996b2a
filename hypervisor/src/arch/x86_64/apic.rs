//! The local APIC: the hypervisor's one-shot timer.
//!
//! One timer interrupt at a TSC value the core chooses ([`Lapic::set_deadline`]):
//! TSC-deadline mode (IA32_TSC_DEADLINE) when CPUID.1:ECX[24] offers it, otherwise the
//! APIC timer in one-shot mode, whose rate is calibrated against the TSC at boot.
//! Registers are reached through the x2APIC MSRs when CPUID.1:ECX[21] offers them,
//! otherwise through the xAPIC page (0xfee00000, in the uncached 3–4 GiB of the direct
//! map).
//!
//! LINT0 stays in ExtINT mode so the 8259 PIC (pic.rs) still delivers the serial
//! interrupt; PIC interrupts need a PIC EOI, the timer an APIC EOI.

use super::cpu::{cpuid, rdtsc, wrmsr};
use super::{DIRECTMAP_BASE, DIRECTMAP_SIZE};
use x86_64::registers::model_specific::Msr;

/// IDT vector of the APIC timer (above the PIC's 0x20–0x2f).
pub const TIMER_VECTOR: u8 = 0xf0;
/// IDT vector of the APIC's spurious interrupt (needs no EOI).
pub const SPURIOUS_VECTOR: u8 = 0xff;

const MSR_APIC_BASE: u32 = 0x1b;
const MSR_TSC_DEADLINE: u32 = 0x6e0;
/// First x2APIC register MSR: MSR = `X2APIC_MSR_BASE + offset / 16`.
const X2APIC_MSR_BASE: u32 = 0x800;

const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

// Register offsets (xAPIC page layout).
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_LVT_ERROR: u32 = 0x370;
const REG_INITIAL_COUNT: u32 = 0x380;
const REG_CURRENT_COUNT: u32 = 0x390;
const REG_DIVIDE: u32 = 0x3e0;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_TSC_DEADLINE: u32 = 0b10 << 17;
const LVT_DELIVERY_NMI: u32 = 0b100 << 8;
const LVT_DELIVERY_EXTINT: u32 = 0b111 << 8;
/// Divide configuration value for "divide by 1".
const DIVIDE_BY_1: u32 = 0b1011;

/// How the APIC registers are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// x2APIC mode: MSRs 0x800–0x8ff.
    X2Apic,
    /// xAPIC mode: the register page at this direct-map virtual address.
    Mmio(u64),
}

/// How a deadline becomes a timer interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// IA32_TSC_DEADLINE: the deadline is written as it is.
    TscDeadline,
    /// One-shot countdown at `apic_hz` ticks per second (divide by 1).
    OneShot { apic_hz: u64 },
}

/// The CPU's local APIC, set up by [`Lapic::init`].
#[derive(Clone, Copy, Debug)]
pub struct Lapic {
    access: Access,
    mode: TimerMode,
    tsc_hz: u64,
}

/// The APIC as [`Lapic::init`] left it, for the interrupt entry (EOI).
static LAPIC: spin::Once<Lapic> = spin::Once::new();

/// The APIC, once [`Lapic::init`] ran.
pub fn get() -> Option<&'static Lapic> {
    LAPIC.get()
}

impl Lapic {
    /// Enables the local APIC with its timer masked, chooses the timer mode and (for
    /// one-shot mode) measures the timer's rate against the TSC (`tsc_hz`). `None` when
    /// the CPU has no usable APIC.
    pub fn init(tsc_hz: u64) -> Option<&'static Lapic> {
        let (_, _, ecx, edx) = cpuid(1, 0);
        if edx & (1 << 9) == 0 {
            return None;
        }
        let x2apic = ecx & (1 << 21) != 0;
        let tsc_deadline = ecx & (1 << 24) != 0;
        // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (CPUID.1:EDX[9]).
        let base = unsafe { Msr::new(MSR_APIC_BASE).read() };
        let access = if x2apic {
            // SAFETY: enabling x2APIC mode (xAPIC enable first, as the SDM requires
            // coming from disabled) only changes how the APIC registers are reached.
            unsafe {
                wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE);
                wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
            }
            Access::X2Apic
        } else {
            let phys = base & APIC_BASE_ADDR_MASK;
            if phys >= DIRECTMAP_SIZE {
                return None;
            }
            // SAFETY: sets the global enable bit, keeping the register page where it is.
            unsafe { wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE) };
            // The 3–4 GiB gigabyte, where the APIC page lives, is mapped uncached.
            Access::Mmio(DIRECTMAP_BASE + phys)
        };
        let mut lapic = Lapic {
            access,
            mode: TimerMode::TscDeadline,
            tsc_hz,
        };
        lapic.write(REG_TPR, 0);
        lapic.write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
        // PIC interrupts come in through LINT0 (virtual wire); NMIs through LINT1.
        lapic.write(REG_LVT_LINT0, LVT_DELIVERY_EXTINT);
        lapic.write(REG_LVT_LINT1, LVT_DELIVERY_NMI);
        lapic.write(REG_LVT_ERROR, LVT_MASKED | u32::from(SPURIOUS_VECTOR));
        lapic.write(REG_DIVIDE, DIVIDE_BY_1);
        lapic.mode = if tsc_deadline {
            lapic.write(
                REG_LVT_TIMER,
                LVT_TIMER_TSC_DEADLINE | u32::from(TIMER_VECTOR),
            );
            TimerMode::TscDeadline
        } else {
            let apic_hz = lapic.calibrate()?;
            lapic.write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
            TimerMode::OneShot { apic_hz }
        };
        Some(LAPIC.call_once(|| lapic))
    }

    /// APIC timer ticks per second (divide by 1), measured over 10 ms of TSC with the
    /// timer masked. Deterministic under QEMU `-icount` (both count virtual time).
    fn calibrate(&self) -> Option<u64> {
        self.write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
        let window = (self.tsc_hz / 100).max(1);
        self.write(REG_INITIAL_COUNT, u32::MAX);
        let start = rdtsc();
        let mut now = start;
        while now.wrapping_sub(start) < window {
            now = rdtsc();
        }
        let left = self.read(REG_CURRENT_COUNT);
        self.write(REG_INITIAL_COUNT, 0);
        let counted = u64::from(u32::MAX - left);
        let elapsed = now.wrapping_sub(start);
        if counted == 0 || left == 0 {
            return None; // the timer does not count, or wrapped in 10 ms (> 400 GHz)
        }
        u64::try_from(u128::from(counted) * u128::from(self.tsc_hz) / u128::from(elapsed)).ok()
    }

    /// The register access mode.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The timer mode.
    pub fn mode(&self) -> TimerMode {
        self.mode
    }

    /// Arms the timer to interrupt when the TSC reaches `deadline` (at once if it has
    /// passed), or disarms it with `None`. Replaces any earlier setting. In one-shot
    /// mode the interrupt may come slightly early or late (rate rounding; a deadline
    /// beyond the 32-bit count fires early): callers re-check the time.
    pub fn set_deadline(&self, deadline: Option<u64>) {
        match self.mode {
            TimerMode::TscDeadline => {
                // 0 disarms; 1 is long past and fires at once.
                let value = deadline.map_or(0, |d| d.max(1));
                // SAFETY: the TSC-deadline MSR exists (CPUID.1:ECX[24]); writing it only
                // schedules the timer interrupt. The fence orders the earlier xAPIC
                // MMIO writes (LVT) before the MSR write, as the SDM asks.
                unsafe {
                    core::arch::asm!("mfence", options(nostack, preserves_flags));
                    wrmsr(MSR_TSC_DEADLINE, value);
                }
            }
            TimerMode::OneShot { apic_hz } => {
                let count = match deadline {
                    None => 0,
                    Some(d) => one_shot_count(d.saturating_sub(rdtsc()), apic_hz, self.tsc_hz),
                };
                self.write(REG_INITIAL_COUNT, count);
            }
        }
    }

    /// Signals the end of the timer interrupt.
    pub fn eoi(&self) {
        self.write(REG_EOI, 0);
    }

    fn write(&self, reg: u32, value: u32) {
        match self.access {
            // SAFETY: `reg` is one of the architectural registers above, which exist in
            // x2APIC mode (which `init` enabled); writes only program the APIC.
            Access::X2Apic => unsafe { wrmsr(X2APIC_MSR_BASE + reg / 16, u64::from(value)) },
            // SAFETY: the APIC page is mapped (uncached) in the direct map and `reg` is a
            // register offset inside it; 32-bit aligned accesses are what it needs.
            Access::Mmio(base) => unsafe {
                core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, value)
            },
        }
    }

    fn read(&self, reg: u32) -> u32 {
        match self.access {
            // SAFETY: as in `write`; reading has no side effect on these registers.
            Access::X2Apic => unsafe { Msr::new(X2APIC_MSR_BASE + reg / 16).read() as u32 },
            // SAFETY: as in `write`.
            Access::Mmio(base) => unsafe {
                core::ptr::read_volatile((base + u64::from(reg)) as *const u32)
            },
        }
    }
}

/// The one-shot initial count for `tsc_delta` TSC ticks from now: at least 1 (0 would
/// disarm) and at most `u32::MAX` (a longer wait fires early and gets re-armed).
fn one_shot_count(tsc_delta: u64, apic_hz: u64, tsc_hz: u64) -> u32 {
    let ticks = u128::from(tsc_delta) * u128::from(apic_hz) / u128::from(tsc_hz.max(1));
    u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
}
