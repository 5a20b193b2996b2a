//! [`Platform`] for a QEMU PC: COM1 and the TSC.

use super::{cpu, descriptors, serial};
use crate::platform::{FpuArea, Platform};
use x86_64::VirtAddr;
use x86_64::registers::model_specific::{FsBase, GsBase};

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

    fn segment_bases(&self) -> (u64, u64) {
        (FsBase::read().as_u64(), GsBase::read().as_u64())
    }
    fn set_segment_bases(&mut self, fs: u64, gs: u64) {
        // The core passes canonical bases; truncating keeps a bad one from faulting in
        // the hypervisor. The hypervisor itself never uses FS or GS.
        FsBase::write(VirtAddr::new_truncate(fs));
        GsBase::write(VirtAddr::new_truncate(gs));
    }
    fn fpu_save(&mut self, area: &mut FpuArea) {
        cpu::fxsave(area);
    }
    fn fpu_restore(&mut self, area: &FpuArea) {
        cpu::fxrstor(area);
    }
    fn set_fpu_trap(&mut self, on: bool) {
        cpu::set_cr0_ts(on);
    }
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let (a, b, c, d) = cpu::cpuid(leaf, subleaf);
        [a, b, c, d]
    }
    fn set_gdt_entries(&mut self, first: usize, descs: &[u64]) {
        descriptors::set_guest_entries(first, descs);
    }
    fn set_ldt_entries(&mut self, first: usize, descs: &[u64]) {
        descriptors::set_ldt_entries(first, descs);
    }
    fn load_ldt(&mut self, entries: usize) {
        descriptors::load_ldt(entries);
    }
}
