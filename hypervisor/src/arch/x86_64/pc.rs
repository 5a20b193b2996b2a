//! [`Platform`] for a QEMU PC: COM1 and the TSC.

use super::{cpu, serial};
use crate::platform::Platform;

/// The machine, as the core sees it.
pub struct Pc {
    tsc_hz: u64,
}

impl Pc {
    pub fn new(tsc_hz: u64) -> Self {
        Pc { tsc_hz }
    }
}

impl Platform for Pc {
    fn console_write(&mut self, bytes: &[u8]) {
        serial::write_bytes(bytes);
    }
    fn console_read(&mut self, buf: &mut [u8]) -> usize {
        serial::read_bytes(buf)
    }
    fn rdtsc(&self) -> u64 {
        cpu::rdtsc()
    }
    fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }
    fn flush_tlb(&mut self) {
        // Reloads CR3. Guest mappings are never global (the core clears G), so this drops
        // every guest translation.
        x86_64::instructions::tlb::flush_all();
    }
    fn invlpg(&mut self, va: u64) {
        if let Ok(va) = x86_64::VirtAddr::try_new(va) {
            x86_64::instructions::tlb::flush(va);
        }
    }
}
