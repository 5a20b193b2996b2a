//! [`Platform`] for a QEMU PC: COM1, the TSC, the local APIC timer and the CMOS RTC.

use super::apic::Lapic;
use super::{cpu, descriptors, rtc, serial};
use crate::platform::{DataSelectors, FpuArea, Platform, RtcTime};
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{DS, ES, FS, GS, Segment};
use x86_64::registers::model_specific::{FsBase, GsBase, KernelGsBase};
use x86_64::structures::gdt::SegmentSelector;

/// The machine, as the core sees it.
pub struct Pc {
    tsc_hz: u64,
    lapic: &'static Lapic,
}

impl Pc {
    pub fn new(tsc_hz: u64, lapic: &'static Lapic) -> Self {
        Pc { tsc_hz, lapic }
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
    fn set_timer(&mut self, deadline_tsc: Option<u64>) {
        self.lapic.set_deadline(deadline_tsc);
    }
    fn rtc_time(&self) -> Option<RtcTime> {
        rtc::read()
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

    #[inline]
    fn segment_bases(&self) -> (u64, u64) {
        (FsBase::read().as_u64(), GsBase::read().as_u64())
    }
    #[inline]
    fn set_segment_bases(&mut self, fs: u64, gs: u64) {
        // The core passes canonical bases; truncating keeps a bad one from faulting in
        // the hypervisor. The hypervisor itself never uses FS or GS.
        FsBase::write(VirtAddr::new_truncate(fs));
        GsBase::write(VirtAddr::new_truncate(gs));
    }
    fn set_fs_base(&mut self, fs: u64) {
        FsBase::write(VirtAddr::new_truncate(fs));
    }
    fn set_gs_base(&mut self, gs: u64) {
        GsBase::write(VirtAddr::new_truncate(gs));
    }
    fn set_inactive_gs_base(&mut self, gs: u64) {
        KernelGsBase::write(VirtAddr::new_truncate(gs));
    }
    fn swap_gs_bases(&mut self) -> u64 {
        // SAFETY: the hypervisor never uses GS (nor swapgs on entry or exit), so
        // exchanging the two GS bases only changes guest state the core tracks.
        unsafe { GS::swap() };
        KernelGsBase::read().as_u64()
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
    fn data_selectors(&self) -> DataSelectors {
        DataSelectors {
            ds: DS::get_reg().0,
            es: ES::get_reg().0,
            fs: FS::get_reg().0,
            gs: GS::get_reg().0,
        }
    }
    fn load_data_selectors(&mut self, sels: DataSelectors) {
        // SAFETY: the core passes only null selectors and selectors of present, DPL-3
        // data or readable code descriptors within the limit of the GDT or LDT loaded
        // now, which load at CPL0 without faulting. The hypervisor never uses DS, ES, FS
        // or GS in long mode (flat segments, no TLS), so changing them changes nothing
        // for it; the core restores the FS/GS bases the loads overwrite.
        unsafe {
            DS::set_reg(SegmentSelector(sels.ds));
            ES::set_reg(SegmentSelector(sels.es));
            FS::set_reg(SegmentSelector(sels.fs));
            GS::set_reg(SegmentSelector(sels.gs));
        }
    }
}
