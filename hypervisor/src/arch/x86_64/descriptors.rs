//! GDT, TSS, IDT and the LDT buffer.
//!
//! The GDT has Xen's shape: 8192 entries, the first 7168 belong to guests (empty for
//! now), the hypervisor's own descriptors sit at Xen's selectors (0xe008...).

use super::Racy;
use core::mem::size_of;
use x86_64::VirtAddr;
use x86_64::instructions::tables::{self, DescriptorTablePointer};
use x86_64::structures::gdt::SegmentSelector;
use xen_pv_abi::layout::FIRST_RESERVED_GDT_ENTRY;

/// Hypervisor 64-bit code.
pub const HV_CS: u16 = 0xe008;
/// Hypervisor data/stack.
pub const HV_DS: u16 = 0xe010;
/// Guest 32-bit code, DPL3 (also `STAR[63:48]`: sysret adds 16 for 64-bit code).
pub const GUEST_CS32: u16 = 0xe023;
/// Guest data/stack, DPL3.
pub const GUEST_DS: u16 = 0xe02b;
/// Guest 64-bit code, DPL3.
pub const GUEST_CS64: u16 = 0xe033;
/// The TSS (a 16-byte descriptor).
pub const TSS_SEL: u16 = 0xe040;
/// The guest's LDT as the hypervisor copied it (a 16-byte descriptor; Xen's selector).
pub const LDT_SEL: u16 = 0xe050;

const GDT_ENTRIES: usize = 8192;

/// The GDT, 64 KiB, 16-byte aligned.
#[repr(C, align(16))]
pub struct Gdt(pub [u64; GDT_ENTRIES]);

const fn idx(sel: u16) -> usize {
    (sel >> 3) as usize
}

/// Flat descriptors: base 0, limit 4 GiB, present, accessed.
const CODE64_DPL0: u64 = 0x00af_9b00_0000_ffff;
const DATA_DPL0: u64 = 0x00cf_9300_0000_ffff;
const CODE32_DPL3: u64 = 0x00cf_fb00_0000_ffff;
const DATA_DPL3: u64 = 0x00cf_f300_0000_ffff;
const CODE64_DPL3: u64 = 0x00af_fb00_0000_ffff;

/// The hypervisor's own descriptors as (byte offset in the GDT, descriptor). The 32-bit
/// boot stub (boot.rs) writes them into the zeroed GDT before loading it, so the 64 KiB
/// table can live in `.bss` instead of taking 64 KiB of the image file in `.data`.
#[repr(C)]
pub struct BootDescriptor {
    pub offset: u64,
    pub desc: u64,
}

/// How many [`BOOT_DESCRIPTORS`] there are.
pub const BOOT_DESCRIPTORS_LEN: usize = 5;

/// See [`BootDescriptor`]; the TSS descriptor needs the TSS address: filled in by `load`.
pub static BOOT_DESCRIPTORS: [BootDescriptor; BOOT_DESCRIPTORS_LEN] = [
    boot_desc(HV_CS, CODE64_DPL0),
    boot_desc(HV_DS, DATA_DPL0),
    boot_desc(GUEST_CS32, CODE32_DPL3),
    boot_desc(GUEST_DS, DATA_DPL3),
    boot_desc(GUEST_CS64, CODE64_DPL3),
];

const fn boot_desc(sel: u16, desc: u64) -> BootDescriptor {
    BootDescriptor {
        offset: (idx(sel) * 8) as u64,
        desc,
    }
}

/// Writes guest descriptors into GDT entries `first..first + descs.len()`, stopping at
/// `FIRST_RESERVED_GDT_ENTRY`: the hypervisor's own entries are never touched. The
/// caller checked the descriptors (traps/gdt.rs).
pub fn set_guest_entries(first: usize, descs: &[u64]) {
    let gdt = GDT.get();
    for (i, &desc) in descs.iter().enumerate() {
        let Some(slot) = first
            .checked_add(i)
            .filter(|&s| s < FIRST_RESERVED_GDT_ENTRY)
        else {
            return;
        };
        // SAFETY: one CPU, interrupts off, no re-entry: nothing else accesses the GDT
        // now; the slot is in bounds and is a guest entry, never one the hypervisor uses.
        unsafe { core::ptr::write_volatile(&raw mut (*gdt).0[slot], desc) };
    }
}

/// Entries of the LDT buffer (a selector's 13-bit index).
const LDT_ENTRIES: usize = 8192;

/// The hypervisor's copy of the running guest's LDT, 64 KiB. Only entries the core
/// checked are ever written (traps/ldt.rs); the CPU reads it at CPL3 when the guest
/// loads an LDT selector, as an implicit supervisor access (it is in the direct map).
#[repr(C, align(4096))]
struct Ldt([u64; LDT_ENTRIES]);
static LDT: Racy<Ldt> = Racy::new(Ldt([0; LDT_ENTRIES]));

/// Writes guest descriptors into LDT buffer entries `first..first + descs.len()`,
/// ignoring any beyond the buffer. The caller checked the descriptors.
pub fn set_ldt_entries(first: usize, descs: &[u64]) {
    let ldt = LDT.get();
    for (i, &desc) in descs.iter().enumerate() {
        let Some(slot) = first.checked_add(i).filter(|&s| s < LDT_ENTRIES) else {
            return;
        };
        // SAFETY: one CPU, interrupts off, no re-entry: nothing else accesses the buffer
        // now (the CPU reads it only while a guest runs); the slot is in bounds.
        unsafe { core::ptr::write_volatile(&raw mut (*ldt).0[slot], desc) };
    }
}

/// Loads LDT buffer entries `0..entries` as the CPU's LDT through [`LDT_SEL`], or the
/// null LDT when `entries` is 0 (more than the buffer holds are capped).
pub fn load_ldt(entries: usize) {
    if entries == 0 {
        // SAFETY: the null selector; afterwards any LDT selector the guest loads faults
        // in the guest, never in the hypervisor.
        unsafe { lldt(0) };
        return;
    }
    let base = LDT.get() as u64;
    let limit = (entries.min(LDT_ENTRIES) * 8 - 1) as u64;
    // LDT (type 2), present, DPL0, byte granularity (the limit is at most 0xffff).
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x82 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    let high = base >> 32;
    let gdt = GDT.get();
    // SAFETY: one CPU, interrupts off, no re-entry; the two slots of LDT_SEL are the
    // hypervisor's own and used for nothing else. `lldt` then loads a present LDT
    // descriptor whose range is the static buffer.
    unsafe {
        core::ptr::write_volatile(&raw mut (*gdt).0[idx(LDT_SEL)], low);
        core::ptr::write_volatile(&raw mut (*gdt).0[idx(LDT_SEL) + 1], high);
        lldt(LDT_SEL);
    }
}

/// Loads the LDT register (the x86_64 crate has no wrapper for `lldt`).
///
/// # Safety
/// `sel` is 0 or selects a present LDT descriptor in the loaded GDT.
unsafe fn lldt(sel: u16) {
    // SAFETY: the caller's promise; `lldt` reads only that GDT descriptor.
    unsafe { core::arch::asm!("lldt {0:x}", in(reg) sel, options(nostack, preserves_flags)) }
}

/// The GDT, in `.bss`: the 32-bit boot stub zeroes it, writes [`BOOT_DESCRIPTORS`] and
/// loads it by physical address before any Rust runs.
pub static GDT: Racy<Gdt> = Racy::new(Gdt([0; GDT_ENTRIES]));

/// 64-bit TSS.
#[repr(C, packed(4))]
pub struct Tss {
    _reserved0: u32,
    pub rsp: [u64; 3],
    _reserved1: u64,
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    pub iomap_base: u16,
}
static_assertions::const_assert_eq!(size_of::<Tss>(), 104);

/// All zero, so it lives in `.bss` (no page of `.data` in the image file for it); `load`
/// fills in the non-zero fields.
static TSS: Racy<Tss> = Racy::new(Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: 0,
});

/// IDT gate (16 bytes).
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_lo: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_hi: u32,
    _reserved: u32,
}
static_assertions::const_assert_eq!(size_of::<Gate>(), 16);

const EMPTY_GATE: Gate = Gate {
    offset_lo: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_hi: 0,
    _reserved: 0,
};

#[repr(C, align(16))]
struct Idt([Gate; 256]);
static IDT: Racy<Idt> = Racy::new(Idt([EMPTY_GATE; 256]));

/// Double fault, NMI and machine check run on IST1: they may hit at any point,
/// including before the syscall entry has switched to the hypervisor stack.
const IST_VECTORS: [usize; 3] = [2, 8, 18];

/// Fills in the TSS (RSP0 = `stack_top`, IST1 = `df_stack_top`), its GDT descriptor,
/// reloads the GDT at its higher-half address, loads TR, and builds and loads the IDT
/// with `stub(v)` as the handler of vector `v`.
///
/// # Safety
/// Call once, at boot, before any guest runs; the stub addresses must be valid entry
/// points that save a `GuestFrame`.
pub unsafe fn load(stack_top: u64, df_stack_top: u64, stub: impl Fn(usize) -> u64) {
    let tss = TSS.get();
    // SAFETY: boot is single-threaded and nothing else references the TSS yet.
    unsafe {
        (*tss).rsp[0] = stack_top;
        (*tss).ist[0] = df_stack_top;
        // Past the TSS limit: no I/O bitmap, so CPL3 has no port access (IOPL is 0).
        (*tss).iomap_base = size_of::<Tss>() as u16;
    }
    let base = tss as u64;
    let limit = (size_of::<Tss>() - 1) as u64;
    // Available 64-bit TSS (type 9), present, DPL0.
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    let high = base >> 32;
    let gdt = GDT.get();
    // SAFETY: as above; the TSS descriptor slots are not in use yet.
    unsafe {
        (*gdt).0[idx(TSS_SEL)] = low;
        (*gdt).0[idx(TSS_SEL) + 1] = high;
    }

    let idt = IDT.get();
    for v in 0..256 {
        let addr = stub(v);
        let gate = Gate {
            offset_lo: addr as u16,
            selector: HV_CS,
            ist: if IST_VECTORS.contains(&v) { 1 } else { 0 },
            // Present, DPL0, 64-bit interrupt gate: `int n` from a guest is a #GP, and
            // IF stays clear in the hypervisor.
            type_attr: 0x8e,
            offset_mid: (addr >> 16) as u16,
            offset_hi: (addr >> 32) as u32,
            _reserved: 0,
        };
        // SAFETY: as above; the IDT is not loaded yet.
        unsafe { (*idt).0[v] = gate };
    }

    let gdtr = DescriptorTablePointer {
        limit: (size_of::<Gdt>() - 1) as u16,
        base: VirtAddr::from_ptr(gdt),
    };
    let idtr = DescriptorTablePointer {
        limit: (size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(idt),
    };
    // SAFETY: the GDT keeps the selectors in use (0xe008/0xe010) at the same places, the
    // TSS descriptor was just written, and the IDT gates point at valid stubs; all three
    // tables are statics, so they outlive their use.
    unsafe {
        tables::lgdt(&gdtr);
        tables::load_tss(SegmentSelector(TSS_SEL));
        tables::lidt(&idtr);
    }
}
