//! TSC frequency, calibrated against PIT channel 2 (deterministic under QEMU `-icount`).

use super::cpu::{inb, outb, rdtsc};

const PIT_HZ: u64 = 1_193_182;
const PIT_CH2_DATA: u16 = 0x42;
const PIT_MODE: u16 = 0x43;
const PORT_B: u16 = 0x61;
/// Port B bit 0: channel 2 gate; bit 1: speaker; bit 5: channel 2 output.
const GATE2: u8 = 1 << 0;
const SPEAKER: u8 = 1 << 1;
const OUT2: u8 = 1 << 5;
/// Calibration window: 10 ms.
const LATCH: u64 = PIT_HZ / 100;
/// Give up after this many polls (a PIT that never fires must not hang the boot).
const MAX_POLLS: u32 = 50_000_000;

/// TSC frequency in Hz: PIT channel 2 one-shot, or (machines without port 0x61, such
/// as microvm) polling PIT channel 0's counter. `None` if no PIT answers.
pub fn calibrate() -> Option<u64> {
    calibrate_channel2().or_else(calibrate_channel0)
}

/// Measures TSC ticks during a 10 ms PIT channel 2 one-shot.
fn calibrate_channel2() -> Option<u64> {
    // Gate on, speaker off; channel 2, lobyte/hibyte, mode 0 (one-shot), binary.
    outb(PORT_B, (inb(PORT_B) & !SPEAKER) | GATE2);
    outb(PIT_MODE, 0b1011_0000);
    outb(PIT_CH2_DATA, LATCH as u8);
    outb(PIT_CH2_DATA, (LATCH >> 8) as u8);
    // Mode 0 drives OUT low when armed: high now means there is no port B to watch.
    if inb(PORT_B) & OUT2 != 0 {
        return None;
    }
    let start = rdtsc();
    let mut polls = 0u32;
    while inb(PORT_B) & OUT2 == 0 {
        polls += 1;
        if polls == MAX_POLLS {
            return None;
        }
    }
    let ticks = rdtsc().wrapping_sub(start);
    Some(ticks.saturating_mul(PIT_HZ) / LATCH)
}

const PIT_CH0_DATA: u16 = 0x40;

/// Measures TSC ticks while PIT channel 0 (free-running, IRQ 0 masked) counts at least
/// 10 ms.
fn calibrate_channel0() -> Option<u64> {
    // Channel 0, lobyte/hibyte, mode 2 (rate generator), binary, count 65536.
    outb(PIT_MODE, 0b0011_0100);
    outb(PIT_CH0_DATA, 0);
    outb(PIT_CH0_DATA, 0);
    let read = || {
        outb(PIT_MODE, 0); // latch channel 0
        u16::from_le_bytes([inb(PIT_CH0_DATA), inb(PIT_CH0_DATA)])
    };
    let mut last = read();
    let start = rdtsc();
    let mut elapsed = 0u64;
    let mut polls = 0u32;
    // The counter counts down and wraps at 65536 (55 ms), far longer than one poll.
    while elapsed < LATCH {
        let now = read();
        elapsed += u64::from(last.wrapping_sub(now));
        last = now;
        polls += 1;
        if polls == MAX_POLLS {
            return None;
        }
    }
    let ticks = rdtsc().wrapping_sub(start);
    Some(ticks.saturating_mul(PIT_HZ) / elapsed)
}
