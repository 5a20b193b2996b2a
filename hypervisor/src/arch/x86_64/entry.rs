//! Entries from guests and the way back: `syscall`, exceptions, `iretq`.
//!
//! Every entry builds a [`GuestFrame`] at the top of the hypervisor stack (TSS.RSP0 for
//! exceptions from CPL3; the syscall entry switches stacks itself), calls the core with
//! `&mut GuestFrame`, and resumes as the core's [`Resume`] says: load the returned CR3
//! if it differs, pop the (possibly replaced) registers, `iretq`.

use super::Racy;
use super::boot::HV;
use super::cpu::{self, *};
use super::descriptors::{GUEST_CS32, GUEST_CS64, GUEST_DS, HV_CS, HV_DS};
use super::serial::hv_println;
use super::stack::{self, GuardedStack};
use super::timer;
use crate::platform::{ExitStatus, GuestFrame, Resume};
use core::arch::global_asm;
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, Ordering};

/// The hypervisor stack, above an unmapped guard page (stack.rs). Its top
/// `size_of::<GuestFrame>()` bytes are the entry frame.
pub const HV_STACK_SIZE: usize = 256 * 1024;
pub static HV_STACK: Racy<GuardedStack<HV_STACK_SIZE>> = Racy::new(GuardedStack::new());
/// Offset of the top of [`HV_STACK`] from its symbol (for the asm that addresses it).
pub const HV_STACK_TOP_OFFSET: usize = GuardedStack::<HV_STACK_SIZE>::TOP_OFFSET;

/// IST1: double fault, NMI and machine check run on their own stack (also guarded).
const IST_STACK_SIZE: usize = 16 * 1024;
static IST_STACK: Racy<GuardedStack<IST_STACK_SIZE>> = Racy::new(GuardedStack::new());

pub fn hv_stack_top() -> u64 {
    stack::top(&HV_STACK)
}

pub fn ist_stack_top() -> u64 {
    stack::top(&IST_STACK)
}

/// The guard pages below the hypervisor and IST stacks (virtual addresses), which
/// `paging::protect_image` leaves unmapped.
pub fn stack_guard_pages() -> [u64; 2] {
    [stack::guard_page(&HV_STACK), stack::guard_page(&IST_STACK)]
}

/// Guest rsp between `syscall` and the stack switch (one CPU: one slot).
static SYSCALL_SCRATCH: Racy<u64> = Racy::new(0);

/// Vector pushed by the compat-mode `syscall` entry: a 32-bit `syscall` is not a
/// hypercall in this ABI; it reaches the core as an invalid opcode.
const VECTOR_UD: u64 = 6;

global_asm!(
    r#"
    .text
    .code64

    /* The GuestFrame's 15 GPRs, pushed in reverse field order (r15 lands lowest). */
    .macro hv_push_gprs
    push %rdi
    push %rsi
    push %rdx
    push %rcx
    push %rax
    push %r8
    push %r9
    push %r10
    push %r11
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    .endm

    /* A syscall entry (rcx = rip, r11 = rflags, rsp still the guest's): switch to the
       top of the hypervisor stack and push the iretq frame, error code 0 and `vector`. */
    .macro hv_syscall_frame cs, vector
    mov %rsp, {scratch}(%rip)
    lea {stack} + {stack_size}(%rip), %rsp
    pushq ${guest_ds}
    pushq {scratch}(%rip)
    push %r11
    pushq $\cs
    push %rcx
    pushq $0
    pushq $\vector
    .endm

    /* 256 vector stubs, 16 bytes apart. For vectors without a CPU error code push a 0,
       then push the vector. */
    .p2align 4
    .globl hv_vector_stubs
hv_vector_stubs:
    .set hv_vec, 0
    .rept 256
    .p2align 4
    .if (hv_vec != 8) && (hv_vec != 10) && (hv_vec != 11) && (hv_vec != 12) && (hv_vec != 13) && (hv_vec != 14) && (hv_vec != 17) && (hv_vec != 21) && (hv_vec != 29) && (hv_vec != 30)
    pushq $0
    .endif
    pushq $hv_vec
    jmp hv_exception_common
    .set hv_vec, hv_vec + 1
    .endr

hv_exception_common:
    hv_push_gprs
    /* Exceptions do not clear DF; Rust requires it clear. */
    cld
    mov %rsp, %rdi
    mov %cr2, %rsi
    call {exception}
    jmp hv_return_to_guest

    /* syscall from a 64-bit guest: rcx = rip, r11 = rflags, rsp still the guest's. */
    .p2align 4
    .globl hv_syscall_entry
hv_syscall_entry:
    hv_syscall_frame {guest_cs64}, {vector_syscall}
    hv_push_gprs
    mov %rsp, %rdi
    call {hypercall}

    /* rax = CR3 to run with; the frame at rsp holds the registers to resume. */
    .globl hv_return_to_guest
hv_return_to_guest:
    mov %cr3, %rcx
    cmp %rcx, %rax
    je 5f
    mov %rax, %cr3
5:  pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rax
    pop %rcx
    pop %rdx
    pop %rsi
    pop %rdi
    add $16, %rsp
    iretq

    /* syscall from 32-bit compatibility mode (CSTAR): not a hypercall; reported to the
       core as #UD at the instruction after it. */
    .p2align 4
    .globl hv_cstar_entry
hv_cstar_entry:
    hv_syscall_frame {guest_cs32}, {vector_ud}
    jmp hv_exception_common

    /* First entry into a guest: rdi = CR3; the entry frame already holds its registers. */
    .globl hv_enter_guest
hv_enter_guest:
    lea {stack} + {stack_size} - {frame_size}(%rip), %rsp
    mov %rdi, %rax
    jmp hv_return_to_guest

    /* Idle: abandon the stack; the idle loop runs right below the entry frame slot,
       whose address it gets in rdi. */
    .globl hv_enter_idle
hv_enter_idle:
    lea {stack} + {stack_size} - {frame_size}(%rip), %rsp
    mov %rsp, %rdi
    call {idle}
    ud2
    "#,
    exception = sym exception_entry,
    hypercall = sym hypercall_entry,
    idle = sym idle_loop,
    scratch = sym SYSCALL_SCRATCH,
    stack = sym HV_STACK,
    stack_size = const HV_STACK_TOP_OFFSET,
    frame_size = const size_of::<GuestFrame>(),
    guest_ds = const GUEST_DS,
    guest_cs64 = const GUEST_CS64,
    guest_cs32 = const GUEST_CS32,
    vector_syscall = const GuestFrame::VECTOR_SYSCALL,
    vector_ud = const VECTOR_UD,
    options(att_syntax)
);

unsafe extern "C" {
    fn hv_vector_stubs();
    fn hv_syscall_entry();
    fn hv_cstar_entry();
    fn hv_enter_guest(cr3: u64) -> !;
    fn hv_enter_idle() -> !;
}

// The entry code pushes exactly the fields of GuestFrame, in order.
static_assertions::const_assert_eq!(size_of::<GuestFrame>() % 16, 0);

/// Address of the IDT stub of vector `v`.
pub fn vector_stub(v: usize) -> u64 {
    hv_vector_stubs as *const () as u64 + (v as u64) * 16
}

/// STAR/LSTAR/CSTAR/SFMASK: `syscall` enters at `hv_syscall_entry` on 0xe008 with IF,
/// TF, DF, AC, NT and RF cleared; `sysret` returns on the guest selectors.
///
/// # Safety
/// Call once at boot, after the GDT with the hypervisor selectors is loaded.
pub unsafe fn setup_syscall() {
    use x86_64::VirtAddr;
    use x86_64::registers::model_specific::{LStar, SFMask, Star};
    use x86_64::registers::rflags::RFlags;
    use x86_64::structures::gdt::SegmentSelector;
    // The crate checks the selector layout `syscall`/`sysret` imply (CS64 = CS32 + 16,
    // SS = CS32 + 8, hypervisor SS = CS + 8) and their privilege levels.
    Star::write(
        SegmentSelector(GUEST_CS64),
        SegmentSelector(GUEST_DS),
        SegmentSelector(HV_CS),
        SegmentSelector(HV_DS),
    )
    .expect("GDT selectors fit syscall/sysret");
    LStar::write(VirtAddr::new(hv_syscall_entry as *const () as u64));
    SFMask::write(
        RFlags::INTERRUPT_FLAG
            | RFlags::TRAP_FLAG
            | RFlags::DIRECTION_FLAG
            | RFlags::ALIGNMENT_CHECK
            | RFlags::NESTED_TASK
            | RFlags::RESUME_FLAG,
    );
    // SAFETY: CSTAR and SYSENTER_CS exist on every x86_64 CPU (the crate has no typed
    // access); CSTAR points at valid entry code, and SYSENTER_CS = 0 makes `sysenter`
    // fault.
    unsafe {
        wrmsr(MSR_CSTAR, hv_cstar_entry as *const () as u64);
        wrmsr(MSR_SYSENTER_CS, 0);
    }
}

/// Enters the guest whose registers the core wrote into the entry frame.
///
/// # Safety
/// `cr3` must be an L4 carrying the hypervisor slots, and the entry frame must hold a
/// sanitised guest state (the core's job).
pub unsafe fn enter_guest(cr3: u64) -> ! {
    // SAFETY: guaranteed by the caller; the stack is abandoned (nothing on it is used).
    unsafe { hv_enter_guest(cr3) }
}

/// Whether the CPU sits in the idle loop's `sti; hlt`: the only time the hypervisor
/// takes interrupts (at CPL0).
static IDLE: AtomicBool = AtomicBool::new(false);

/// Halts until an interrupt, then asks the core what to do
/// ([`Resume::Idle`]). Abandons the current stack.
pub fn enter_idle() -> ! {
    // SAFETY: the idle loop only needs the hypervisor stack, which it resets; nothing on
    // the abandoned stack is used again (as with `enter_guest`).
    unsafe { hv_enter_idle() }
}

/// The idle loop, on the hypervisor stack below the entry frame slot `frame`.
extern "C" fn idle_loop(frame: *mut GuestFrame) -> ! {
    // Idle on the hypervisor's own root: the last guest's L4 may be freed while we wait
    // (entering a guest loads its root again).
    let own = super::paging::hypervisor_cr3();
    if cpu::read_cr3() != own {
        // SAFETY: the hypervisor's L4 maps everything the hypervisor uses (guest L4s
        // only copy its slots).
        unsafe { cpu::write_cr3(own) };
    }
    loop {
        IDLE.store(true, Ordering::Relaxed);
        // SAFETY: `sti` takes effect only after the next instruction, so an interrupt
        // that is pending or arrives now is taken in `hlt`, not before it: no wakeup is
        // lost. Interrupts taken here are acknowledged by `exception_entry` and return
        // to this loop (this stack is the current one at CPL0, the red zone is off).
        unsafe { core::arch::asm!("sti", "hlt", "cli") };
        IDLE.store(false, Ordering::Relaxed);
        let Some(hv) = HV.get() else {
            panic!("idle before the hypervisor was initialised");
        };
        let Some(mut hv) = hv.try_lock() else {
            panic!("hypervisor re-entered");
        };
        // SAFETY: `frame` is the entry frame slot, which only the entry code uses and
        // none is active (we are idle, the stack below it is ours).
        match hv.idle_wakeup(unsafe { &mut *frame }) {
            Resume::Guest { cr3 } => {
                drop(hv);
                // SAFETY: the core returns the L4 of a built domain and left its
                // registers in the entry frame.
                unsafe { enter_guest(cr3) }
            }
            Resume::Exit(status) => {
                drop(hv);
                cpu::exit_qemu(status)
            }
            Resume::Idle => {}
        }
    }
}

/// Runs `f` on the hypervisor state. The lock can never be contended (one CPU, no
/// re-entry); finding it taken means a bug, reported as a hypervisor failure rather
/// than a hang.
#[inline(always)]
fn with_hv(f: impl FnOnce(&mut super::boot::Hv) -> Resume) -> u64 {
    if !HV.is_completed() {
        not_initialised();
    }
    // SAFETY: `is_completed` returned true, so the value is initialised, and a `Once`
    // never changes it afterwards. (`get` would do the same check but leaves the
    // compiler an `Option<&_>` it materialises with a conditional move on every entry.)
    let hv = unsafe { HV.get_unchecked() };
    let Some(mut hv) = hv.try_lock() else {
        panic!("hypervisor re-entered");
    };
    match f(&mut hv) {
        Resume::Guest { cr3 } => {
            debug_assert!(cr3 & 0xfff == 0, "core returned an unaligned CR3");
            cr3
        }
        Resume::Exit(status) => {
            drop(hv);
            cpu::exit_qemu(status)
        }
        Resume::Idle => {
            drop(hv);
            enter_idle()
        }
    }
}

/// A guest entry before boot finished: a hypervisor bug.
#[cold]
#[inline(never)]
fn not_initialised() -> ! {
    panic!("guest entry before the hypervisor was initialised");
}

/// `syscall` from the guest: a hypercall. Returns the CR3 to resume with.
extern "C" fn hypercall_entry(frame: &mut GuestFrame) -> u64 {
    with_hv(|hv| hv.hypercall(frame))
}

const VECTOR_NMI: u64 = 2;
const VECTOR_MC: u64 = 18;

/// Exception or interrupt. Returns the CR3 to resume with.
extern "C" fn exception_entry(frame: &mut GuestFrame, cr2: u64) -> u64 {
    if frame.cs & 3 != 3 {
        // Only the idle loop takes interrupts in the hypervisor: acknowledge and return
        // to it (it then calls the core). Anything else at CPL0 is a bug.
        if IDLE.load(Ordering::Relaxed) && (32..=255).contains(&frame.vector) {
            timer::acknowledge(frame.vector);
            return cpu::read_cr3();
        }
        hypervisor_exception(frame, cr2);
    }
    match frame.vector {
        // The timer, or typed input: the core serves its backends, re-arms the timer
        // and may switch domains.
        timer::VECTOR | timer::SERIAL_VECTOR => {
            timer::acknowledge(frame.vector);
            with_hv(|hv| hv.timer_tick(frame))
        }
        // Not the guest's doing: a stray (spurious APIC or PIC) interrupt or an NMI.
        // Resume the guest untouched. (`int n` from a guest arrives as #GP: every gate
        // is DPL0.)
        VECTOR_NMI | 32..=255 => cpu::read_cr3(),
        VECTOR_MC => hypervisor_exception(frame, cr2),
        _ => with_hv(|hv| hv.guest_exception(frame, cr2)),
    }
}

/// An exception at CPL0 is a hypervisor bug: print everything and stop (status 35).
fn hypervisor_exception(f: &GuestFrame, cr2: u64) -> ! {
    hv_println!(
        "PANIC: hypervisor exception vector={} error={:#x} rip={:#x} cr2={:#x}",
        f.vector,
        f.error_code,
        f.rip,
        cr2
    );
    hv_println!(
        "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx
    );
    hv_println!(
        "  rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}",
        f.rsi,
        f.rdi,
        f.rbp,
        f.rsp
    );
    hv_println!(
        "  r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}",
        f.r8,
        f.r9,
        f.r10,
        f.r11
    );
    hv_println!(
        "  r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}",
        f.r12,
        f.r13,
        f.r14,
        f.r15
    );
    hv_println!(
        "  cs={:#x} ss={:#x} rflags={:#x} cr3={:#x}",
        f.cs,
        f.ss,
        f.rflags,
        cpu::read_cr3()
    );
    // A #PF on a guard page, or a #DF whose interrupted rsp is at or below one (the #PF
    // of an overflow cannot push its frame, so it escalates to #DF on IST1).
    let in_guard = |a: u64| {
        stack_guard_pages()
            .iter()
            .any(|&g| (g..=g + stack::GUARD_SIZE as u64).contains(&a))
    };
    if in_guard(cr2) || in_guard(f.rsp) {
        hv_println!("  hypervisor stack overflow (guard page hit)");
    }
    cpu::exit_qemu(ExitStatus::HypervisorFailure)
}
