//! PVH entry: the 32-bit stub at 1 MiB, the switch to long mode and to the higher half,
//! and the Rust boot sequence.

use super::cpu::{self, cpuid};
use super::descriptors::{self, GDT, HV_CS, HV_DS};
use super::entry::{self, HV_STACK, HV_STACK_TOP_OFFSET};
use super::memory::DirectMap;
use super::paging::{self, BOOT_TABLES, BOOT_TABLES_PAGES};
use super::pc::Pc;
use super::serial::{self, hv_println};
use super::start_info;
use super::{DIRECTMAP_BASE, Racy, apic, pic, rtc, timer, tsc, virt_to_phys};
use crate::hv::{BootConfig, Hypervisor};
use crate::mmu::{FrameInfo, MAX_FRAMES};
use crate::platform::{GuestFrame, Resume};
use core::arch::global_asm;
use core::mem::{MaybeUninit, size_of};

// The PVH note (Xen ELF note type 18, XEN_ELFNOTE_PHYS32_ENTRY) names the 32-bit entry.
// QEMU enters it in flat 32-bit protected mode, paging off, with ebx = physical address
// of the hvm_start_info.
//
// The stub fills BOOT_TABLES (in the higher-half .bss; addressed physically as
// `sym - DIRECTMAP_BASE`), loads the final GDT by its physical address, enables long
// mode, and jumps to the higher half.
global_asm!(
    r#"
    .globl __hv_directmap_base
    .set __hv_directmap_base, {off}

    .section .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32

    .section .boot.text, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi

    /* Zero the boot tables (the loader zeroes .bss too; this does not rely on it). */
    mov ${tables} - {off}, %edi
    mov ${tables_pages} * 1024, %ecx
    xor %eax, %eax
    rep stosl

    /* The GDT is in .bss: zero it (as for the tables) and write the hypervisor's
       descriptors from BOOT_DESCRIPTORS (descriptors.rs), 16-byte {{offset, desc}}. */
    mov ${gdt} - {off}, %edi
    mov ${gdt_size} / 4, %ecx
    xor %eax, %eax
    rep stosl
    mov ${gdt} - {off}, %edi
    mov ${boot_descs} - {off}, %ebx
    mov ${boot_descs_len}, %ecx
5:  mov (%ebx), %eax
    mov 8(%ebx), %edx
    mov %edx, (%edi, %eax)
    mov 12(%ebx), %edx
    mov %edx, 4(%edi, %eax)
    add $16, %ebx
    dec %ecx
    jnz 5b

    /* 2048 PDEs: 2 MiB pages 0..4 GiB, present, writable, large, global. */
    mov ${tables} - {off} + 2 * 4096, %edi
    mov $0x183, %eax
    xor %ecx, %ecx
1:  mov %eax, (%edi, %ecx, 8)
    add $0x200000, %eax
    inc %ecx
    cmp $2048, %ecx
    jne 1b
    /* 3-4 GiB is MMIO: PCD | PWT. */
    mov $1536, %ecx
2:  orl $0x18, (%edi, %ecx, 8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b

    /* PDPT[0..4] -> the 4 PDs. */
    mov ${tables} - {off} + 4096, %edi
    mov ${tables} - {off} + 2 * 4096 + 3, %eax
    xor %ecx, %ecx
3:  mov %eax, (%edi, %ecx, 8)
    add $4096, %eax
    inc %ecx
    cmp $4, %ecx
    jne 3b

    /* PML4[0] (identity, for this stub) and PML4[262] (direct map) -> the PDPT. */
    mov ${tables} - {off}, %edi
    mov ${tables} - {off} + 4096 + 3, %eax
    mov %eax, (%edi)
    mov %eax, {dm_slot} * 8(%edi)

    /* Long mode: PAE, CR3, EFER.LME, then paging. */
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov %edi, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0

    lgdt boot_gdtr
    ljmp ${hv_cs}, $start64_low

    .code64
start64_low:
    movabs $start64_high, %rax
    jmp *%rax

    .p2align 3
boot_gdtr:
    .word {gdt_limit}
    .quad {gdt} - {off}

    .text
    .code64
start64_high:
    lgdt hv_gdtr(%rip)
    mov ${hv_ds}, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    /* Reload CS from the higher-half GDT. */
    lea 4f(%rip), %rax
    push ${hv_cs}
    push %rax
    lretq
4:
    /* The top GuestFrame-sized slot of the stack is the entry frame, never used as
       ordinary stack (entry.rs). */
    lea {stack} + {stack_size} - {frame_size}(%rip), %rsp
    mov %esi, %edi
    mov %rsp, %rsi
    call {main}
    ud2

    .section .rodata.hv_gdtr, "a"
    .p2align 3
hv_gdtr:
    .word {gdt_limit}
    .quad {gdt}
    .text
    "#,
    off = const DIRECTMAP_BASE,
    tables = sym BOOT_TABLES,
    tables_pages = const BOOT_TABLES_PAGES,
    dm_slot = const paging::DIRECTMAP_SLOT,
    gdt = sym GDT,
    gdt_limit = const size_of::<descriptors::Gdt>() - 1,
    gdt_size = const size_of::<descriptors::Gdt>(),
    boot_descs = sym descriptors::BOOT_DESCRIPTORS,
    boot_descs_len = const descriptors::BOOT_DESCRIPTORS_LEN,
    hv_cs = const HV_CS,
    hv_ds = const HV_DS,
    stack = sym HV_STACK,
    stack_size = const HV_STACK_TOP_OFFSET,
    frame_size = const size_of::<GuestFrame>(),
    main = sym arch_main,
    options(att_syntax)
);

/// Frame table storage for the core (zero = valid bits; `Frames::new` initialises it).
static FRAME_TABLE: Racy<MaybeUninit<[FrameInfo; MAX_FRAMES]>> = Racy::new(MaybeUninit::zeroed());

/// m2p storage, page-aligned so it can be mapped read-only into guests.
#[repr(C, align(4096))]
struct M2p([u64; MAX_FRAMES]);
static M2P: Racy<MaybeUninit<M2p>> = Racy::new(MaybeUninit::zeroed());

/// The hypervisor, once built.
pub type Hv = Hypervisor<DirectMap, Pc>;
pub static HV: spin::Once<spin::Mutex<Hv>> = spin::Once::new();

/// Rust entry from the boot stub, on the hypervisor stack in the higher half.
extern "C" fn arch_main(start_info_paddr: u32, frame: *mut GuestFrame) -> ! {
    serial::init();
    super::heap::init();
    super::defmt_log::init();
    // Copy everything the loader told us before anything else could overwrite it.
    let boot = start_info::read(u64::from(start_info_paddr));

    // SAFETY: we run in the higher half; only the stub used the identity map.
    unsafe { paging::drop_identity_map() };
    setup_cpu();
    // SAFETY: once, at boot, EFER.NXE now set, no guest yet, all code is in .text.
    unsafe { paging::protect_image() };
    pic::remap_and_mask();
    // SAFETY: called once at boot with the real stacks and entry stubs.
    unsafe {
        descriptors::load(
            entry::hv_stack_top(),
            entry::ist_stack_top(),
            entry::vector_stub,
        )
    };
    // SAFETY: the entry points are valid and the GDT selectors of STAR exist.
    unsafe { entry::setup_syscall() };

    let tsc_hz = tsc::calibrate().unwrap_or_else(|| {
        hv_println!("warning: PIT calibration failed, assuming a 1 GHz TSC");
        1_000_000_000
    });
    // The PIT's job (calibration) is done; the APIC timer takes over.
    timer::stop_pit();
    let Some(lapic) = apic::Lapic::init(tsc_hz) else {
        panic!("no usable local APIC: the hypervisor has no timer");
    };
    let ram = start_info::ram_below_4g(&boot.memmap);
    let total_ram: u64 = ram.iter().map(|r| r.end - r.start).sum();
    hv_println!(
        "booting: {} MiB RAM, TSC {} MHz, cmdline \"{}\"",
        total_ram >> 20,
        tsc_hz / 1_000_000,
        start_info::Printable(&boot.cmdline)
    );
    describe_timer_and_clock(lapic, tsc_hz);
    if cmdline_has(&boot.cmdline, b"debug-fault") {
        // SAFETY: deliberately raises #UD to exercise the exception printer.
        unsafe { core::arch::asm!("ud2") };
    }
    debug_wx_violations(&boot.cmdline);
    if cmdline_has(&boot.cmdline, b"debug-stack-overflow") {
        // Runs into the guard page below the stack: #PF, escalated to #DF on IST1.
        super::stack::overflow(0);
    }

    // The boot stub's symbol is at its physical address already.
    let image = (&raw const __image_phys_start_marker as u64)..image_end_phys();
    let mem = DirectMap::new(&ram);
    let module = boot.module.clone().filter(|m| {
        let ok = mem.contains(m.start, m.end - m.start);
        if !ok {
            hv_println!(
                "boot module at {:#x}..{:#x} is not in RAM below 4 GiB: ignored",
                m.start,
                m.end
            );
        }
        ok
    });
    let module_pages = module.clone().map(|m| start_info::page_round(&m));
    let free = start_info::free_ram(&ram, &image, module_pages.as_ref());

    // SAFETY: called once; M2P is a page-aligned 8 MiB static.
    unsafe { paging::map_m2p(M2P.get().cast::<u8>(), size_of::<M2p>()) };
    // SAFETY: boot runs once, so these are the only references ever made to the two
    // statics; all-zero bytes are valid values of both element types.
    let (frame_table, m2p): (&'static mut [FrameInfo], &'static mut [u64]) = unsafe {
        (
            &mut *FRAME_TABLE.get().cast::<[FrameInfo; MAX_FRAMES]>(),
            &mut (*M2P.get().cast::<M2p>()).0,
        )
    };
    let cfg = BootConfig {
        free_ram: &free,
        frame_table,
        m2p,
        hypervisor_l4_slots: paging::hypervisor_l4_slots(),
        cmdline: &boot.cmdline,
    };
    let hv = HV.call_once(|| spin::Mutex::new(Hypervisor::new(mem, Pc::new(tsc_hz, lapic), cfg)));

    let module_bytes: &[u8] = match &module {
        // SAFETY: the module lies in RAM below 4 GiB (checked above), which the direct
        // map covers; the frame allocator does not hand it out until `release_ram`
        // below, so nothing writes it while this slice lives.
        Some(m) => unsafe {
            core::slice::from_raw_parts(
                (DIRECTMAP_BASE + m.start) as *const u8,
                (m.end - m.start) as usize,
            )
        },
        None => {
            hv_println!("no boot module");
            &[]
        }
    };
    let resume = {
        let mut hv = hv.lock();
        hv.create_domains(module_bytes);
        if let Some(m) = module_pages {
            hv.release_ram(m);
        }
        // SAFETY: `frame` is the reserved top slot of the stack (see the stub), used only
        // by the entry code, which is not active now.
        hv.start(unsafe { &mut *frame })
    };
    // Typed input may now wake an idle CPU (the core armed the timer in `start`).
    timer::start();
    match resume {
        // SAFETY: the core returns the L4 of a built domain and left its registers in
        // the entry frame.
        Resume::Guest { cr3 } => unsafe { entry::enter_guest(cr3) },
        Resume::Exit(status) => cpu::exit_qemu(status),
        Resume::Idle => entry::enter_idle(),
    }
}

/// One boot line on how time is kept: the APIC timer's mode and the RTC's date.
fn describe_timer_and_clock(lapic: &apic::Lapic, tsc_hz: u64) {
    let access = match lapic.access() {
        apic::Access::X2Apic => "x2APIC",
        apic::Access::Mmio(_) => "xAPIC",
    };
    let (mode, apic_mhz) = match lapic.mode() {
        apic::TimerMode::TscDeadline => ("TSC-deadline", tsc_hz / 1_000_000),
        apic::TimerMode::OneShot { apic_hz } => ("one-shot", apic_hz / 1_000_000),
    };
    match rtc::read() {
        Some(t) => hv_println!("timer: {access} {mode} at {apic_mhz} MHz; RTC {t}"),
        None => hv_println!("timer: {access} {mode} at {apic_mhz} MHz; RTC unreadable"),
    }
}

unsafe extern "C" {
    /// Defined by linker.ld: physical start of the image (the boot stub at 1 MiB) and the
    /// (virtual) end of `.bss`.
    #[link_name = "__image_phys_start"]
    safe static __image_phys_start_marker: u8;
    safe static __image_end: u8;
}

fn image_end_phys() -> u64 {
    virt_to_phys(&raw const __image_end)
}

/// Room for a `ret` instruction in writable, non-executable memory (`.bss`, written at
/// run time: an initialised static would cost a page of `.data` in the image file), for
/// `debug-exec-data`.
static RET_IN_DATA: Racy<[u8; 1]> = Racy::new([0]);

/// Debug command-line words that break W^X on purpose, to show the page tables enforce
/// it: each must end in `PANIC: hypervisor exception vector=14`.
fn debug_wx_violations(cmdline: &[u8]) {
    if cmdline_has(cmdline, b"debug-write-text") {
        let text = arch_main as *const () as *mut u8;
        // SAFETY: deliberately writes to read-only text; the #PF stops the hypervisor
        // before the write could take effect.
        unsafe { core::ptr::write_volatile(text, 0xcc) };
    }
    if cmdline_has(cmdline, b"debug-exec-data") {
        let ret = RET_IN_DATA.get().cast::<u8>();
        // SAFETY: boot is single-threaded and nothing else references the byte.
        unsafe { core::ptr::write_volatile(ret, 0xc3) };
        // SAFETY: deliberately jumps into non-executable data (a `ret`, were it
        // executable); the #PF on the instruction fetch stops the hypervisor.
        let data_fn: extern "C" fn() = unsafe { core::mem::transmute(ret) };
        data_fn();
    }
}

/// Whether the command line contains `word` as a whole space-separated word.
fn cmdline_has(cmdline: &[u8], word: &[u8]) -> bool {
    cmdline.split(|&b| b == b' ').any(|w| w == word)
}

/// CR0, CR4 and EFER as the hypervisor runs with them.
fn setup_cpu() {
    use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
    use x86_64::registers::model_specific::{Efer, EferFlags};
    let (_, ebx, _, _) = cpuid(7, 0);
    let smep = ebx & (1 << 7) != 0;
    if !smep {
        hv_println!("warning: CPU without SMEP");
    }
    // SAFETY: only enables features every x86_64 CPU has (and SMEP only if CPUID says
    // so); PG/PE/PAE/LME stay on.
    unsafe {
        Efer::update(|efer| {
            efer.insert(
                EferFlags::LONG_MODE_ENABLE
                    | EferFlags::SYSTEM_CALL_EXTENSIONS
                    | EferFlags::NO_EXECUTE_ENABLE,
            )
        });
        Cr0::update(|cr0| {
            cr0.insert(
                Cr0Flags::PROTECTED_MODE_ENABLE
                    | Cr0Flags::MONITOR_COPROCESSOR
                    | Cr0Flags::NUMERIC_ERROR
                    | Cr0Flags::WRITE_PROTECT
                    | Cr0Flags::PAGING,
            );
            cr0.remove(
                Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED | Cr0Flags::ALIGNMENT_MASK,
            );
        });
        // Never SMAP: QEMU 7.2's TCG faults iretq executed at CPL3 with SMAP on.
        // Turning PGE on flushes the whole TLB.
        Cr4::update(|cr4| {
            cr4.insert(
                Cr4Flags::PHYSICAL_ADDRESS_EXTENSION
                    | Cr4Flags::PAGE_GLOBAL
                    | Cr4Flags::OSFXSR
                    | Cr4Flags::OSXMMEXCPT_ENABLE,
            );
            cr4.set(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, smep);
        });
    }
}
