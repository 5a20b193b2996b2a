//! Host-test doubles for the platform seam: machine memory over a vector and a platform
//! that records console output.

extern crate std;

use crate::platform::{BadMaddr, MachineMemory, Platform};
use core::cell::RefCell;
use std::string::String;
use std::vec;
use std::vec::Vec;

/// Machine memory `[0, size)` backed by a vector.
pub struct FakeMemory {
    bytes: RefCell<Vec<u8>>,
}

impl FakeMemory {
    /// `size` bytes of zeroed machine memory starting at address 0.
    pub fn new(size: usize) -> Self {
        FakeMemory {
            bytes: RefCell::new(vec![0; size]),
        }
    }

    fn range(&self, maddr: u64, len: usize) -> Result<core::ops::Range<usize>, BadMaddr> {
        let start = usize::try_from(maddr).map_err(|_| BadMaddr(maddr))?;
        let end = start.checked_add(len).ok_or(BadMaddr(maddr))?;
        if end > self.bytes.borrow().len() {
            return Err(BadMaddr(maddr));
        }
        Ok(start..end)
    }
}

impl MachineMemory for FakeMemory {
    fn read(&self, maddr: u64, buf: &mut [u8]) -> Result<(), BadMaddr> {
        let r = self.range(maddr, buf.len())?;
        buf.copy_from_slice(&self.bytes.borrow()[r]);
        Ok(())
    }
    fn write(&self, maddr: u64, data: &[u8]) -> Result<(), BadMaddr> {
        let r = self.range(maddr, data.len())?;
        self.bytes.borrow_mut()[r].copy_from_slice(data);
        Ok(())
    }
    fn fill(&self, maddr: u64, byte: u8, len: usize) -> Result<(), BadMaddr> {
        let r = self.range(maddr, len)?;
        self.bytes.borrow_mut()[r].fill(byte);
        Ok(())
    }
}

/// A platform whose console is a string and whose TSC is a counter the test moves.
pub struct FakePlatform {
    /// Bytes "typed" on the console, taken by `console_read`.
    pub input: std::collections::VecDeque<u8>,
    /// Everything written to the console.
    pub console: String,
    /// Current TSC value.
    pub tsc: core::cell::Cell<u64>,
    /// TSC frequency reported.
    pub tsc_hz: u64,
    /// Number of `flush_tlb` calls.
    pub tlb_flushes: usize,
    /// Addresses passed to `invlpg`.
    pub invlpgs: Vec<u64>,
    /// The "CPU's" FS and active GS bases.
    pub segment_bases: (u64, u64),
    /// The "CPU's" FPU registers (what `fpu_save` stores, `fpu_restore` loads).
    pub fpu: crate::platform::FpuArea,
    /// CR0.TS.
    pub fpu_trap: bool,
}

impl FakePlatform {
    /// A 1 GHz TSC starting at 0.
    pub fn new() -> Self {
        FakePlatform {
            input: std::collections::VecDeque::new(),
            console: String::new(),
            tsc: core::cell::Cell::new(0),
            tsc_hz: 1_000_000_000,
            tlb_flushes: 0,
            invlpgs: Vec::new(),

            segment_bases: (0, 0),
            fpu: crate::platform::FpuArea([0xee; 512]),
            fpu_trap: false,
        }
    }
}

impl Default for FakePlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl Platform for FakePlatform {
    fn console_write(&mut self, bytes: &[u8]) {
        self.console.push_str(&String::from_utf8_lossy(bytes));
    }
    fn console_read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.input.len());
        for (slot, byte) in buf.iter_mut().zip(self.input.drain(..n)) {
            *slot = byte;
        }
        n
    }
    fn rdtsc(&self) -> u64 {
        self.tsc.get()
    }
    fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }
    fn flush_tlb(&mut self) {
        self.tlb_flushes += 1;
    }
    fn invlpg(&mut self, va: u64) {
        self.invlpgs.push(va);
    }
    fn segment_bases(&self) -> (u64, u64) {
        self.segment_bases
    }
    fn set_segment_bases(&mut self, fs: u64, gs: u64) {
        self.segment_bases = (fs, gs);
    }
    fn fpu_save(&mut self, area: &mut crate::platform::FpuArea) {
        *area = self.fpu;
    }
    fn fpu_restore(&mut self, area: &crate::platform::FpuArea) {
        self.fpu = *area;
    }
    fn set_fpu_trap(&mut self, on: bool) {
        self.fpu_trap = on;
    }
    /// A CPU with max basic leaf 1 whose leaves echo their number in eax.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        [leaf, subleaf, 0, 0]
    }
}

/// Leaks a vector as `&'static mut` storage (frame table, m2p) for a test.
pub fn leak<T: Clone>(value: T, len: usize) -> &'static mut [T] {
    Vec::leak(vec![value; len])
}
