//! Trap, bounce and return paths: the `iret` hypercall, an exception bounced to the
//! guest's handler and returned from, a system call from guest user mode, the lazy-FPU
//! #NM round trip and `set_segment_base`.
//!
//! Every case leaves the guest as it found it: the trap table is cleared again (the
//! bench guest has none otherwise), the event mask is the one it had, the user root and
//! syscall callback are removed, FS base stays 0, virtual CR0.TS ends clear.

use core::arch::naked_asm;
use core::ptr::addr_of;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_guest::StartInfo;
use xen_pv_abi::generated::call;
use xen_pv_abi::hypercall::{UVMF_INVLPG, update_va_mapping};
use xen_pv_abi::layout::{FLAT_KERNEL_CS64, FLAT_KERNEL_SS64};
use xen_pv_abi::mmu::{MMUEXT_NEW_USER_BASEPTR, MmuextOp};
use xen_pv_abi::shared_info::SharedInfo;
use xen_pv_abi::traps::{
    CALLBACKOP_REGISTER, CALLBACKTYPE_SYSCALL, CallbackRegister, SEGBASE_FS, TrapInfo,
    VGCF_IN_SYSCALL,
};
use xen_pv_abi::{DomId, Errno, nr};

use crate::{Ctx, Failure, Figures};

// The timed loops spell these numbers out (the template takes literals only).
const _: () = assert!(
    nr::IRET == 23
        && nr::FPU_TASKSWITCH == 5
        && nr::SET_SEGMENT_BASE == 25
        && SEGBASE_FS == 0
        && FLAT_KERNEL_SS64 == 0xe02b
        && KERNEL_CS_RPL0 == 0xe030
        && SYS_NOP == 1
);

/// `RFLAGS.IF`: in an `iret_context` it becomes the event mask (`mask = !IF`).
const RFLAGS_IF: u64 = 1 << 9;
/// CS with RPL 0 in an `iret_context`: return to guest kernel mode.
const KERNEL_CS_RPL0: u64 = FLAT_KERNEL_CS64 as u64 & !3;
/// A lower-half address no mapping of the bench guest covers (on either hypervisor):
/// reading it raises #PF. The case checks that every read faulted.
const UNMAPPED_VA: u64 = 0x0000_5a00_0000_0000;
/// Our user-mode "system call" numbers: anything but [`SYS_EXIT`] returns at once.
const SYS_NOP: u64 = 1;
const SYS_EXIT: u64 = 60;

// ---- the event mask -----------------------------------------------------------------

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Our own mapping of shared_info (the events module keeps its own).
static mut SHARED_PAGE: Page = Page([0; 4096]);
static SHARED_MAPPED: AtomicU64 = AtomicU64::new(0);

/// The RFLAGS an `iret_context` must carry to keep vCPU 0's current event mask.
fn rflags_keeping_mask(si: &StartInfo) -> Result<u64, Failure> {
    let va = &raw mut SHARED_PAGE;
    if SHARED_MAPPED.load(Ordering::Relaxed) == 0 {
        let pte = (si.shared_info & !0xfff) | 0x7;
        // SAFETY: the page belongs to our image and no reference to it exists.
        unsafe { update_va_mapping(va as u64, pte, UVMF_INVLPG)? };
        SHARED_MAPPED.store(1, Ordering::Relaxed);
    }
    let shared = va.cast::<SharedInfo>();
    // SAFETY: `shared` maps the shared_info page; a byte read of our vCPU's mask.
    let mask = unsafe { addr_of!((*shared).vcpu_info[0].evtchn_upcall_mask).read_volatile() };
    Ok(if mask == 0 { 0x2 | RFLAGS_IF } else { 0x2 })
}

// ---- trap table ----------------------------------------------------------------------

/// Installs one handler (`vector` -> `handler`, events not masked).
fn install_trap(vector: u8, handler: u64) -> Result<(), Errno> {
    let table = [
        TrapInfo {
            vector,
            flags: 0,
            cs: FLAT_KERNEL_CS64,
            pad: 0,
            address: handler,
        },
        TrapInfo::default(),
    ];
    // SAFETY: a valid, terminated trap_info array; the handler exists.
    Errno::check(unsafe { call::set_trap_table(table.as_ptr()) }).map(drop)
}

/// Removes every trap handler (the bench guest has none outside these cases).
fn clear_traps() -> Result<(), Errno> {
    // SAFETY: NULL clears the table.
    Errno::check(unsafe { call::set_trap_table(core::ptr::null()) }).map(drop)
}

// ---- iret_hypercall --------------------------------------------------------------------

/// Per iteration: build an `iret_context` (rax r11 rcx flags rip cs rflags rsp ss) that
/// returns to the next instruction in kernel mode, and `HYPERVISOR_iret`.
pub fn iret_hypercall(ctx: &Ctx) -> Figures {
    let n = ctx.n;
    let rflags = rflags_keeping_mask(ctx.si)?;
    // SAFETY: the frame returns to label 4 on the same stack with rflags keeping the
    // event mask; rcx, r11, rax and rdx are declared clobbered by the loop.
    let total = unsafe {
        timed_loop!(
            n,
            rflags,
            [],
            "mov %rsp, %rdx",
            "lea 4f(%rip), %rcx",
            // ss = FLAT_KERNEL_SS64, cs = FLAT_KERNEL_CS64 with RPL 0 (kernel).
            "push $0xe02b",
            "push %rdx",
            "push %r14",
            "push $0xe030",
            "push %rcx",
            "push $0",
            "push $0",
            "push $0",
            "push $0",
            // HYPERVISOR_iret
            "mov $23, %eax",
            "syscall",
            "4:"
        )
    };
    // SAFETY: the empty loop.
    let baseline = unsafe { timed_loop!(n, rflags, []) };
    Ok((n, total, baseline))
}

// ---- pagefault_bounce ----------------------------------------------------------------

/// Page faults the handler has taken.
static PF_COUNT: AtomicU64 = AtomicU64::new(0);

/// #PF handler: `rcx r11 error rip cs rflags rsp ss` on the stack. Skips the 3-byte
/// faulting `mov (%r14), %rax`, counts, and returns with `HYPERVISOR_iret`.
#[unsafe(naked)]
unsafe extern "C" fn pf_skip_entry() {
    naked_asm!(
        "pop %rcx",
        "pop %r11",
        "add $8, %rsp",
        "addq $3, (%rsp)",
        "incq {count}(%rip)",
        "push $0",
        "push %rcx",
        "push %r11",
        "push %rax",
        "mov ${iret}, %eax",
        "syscall",
        count = sym PF_COUNT,
        iret = const nr::IRET,
        options(att_syntax)
    )
}

/// Per iteration: a read of a not-present address, the #PF bounced to our handler, which
/// skips the read and returns with `HYPERVISOR_iret`. No mapping changes.
pub fn pagefault_bounce(ctx: &Ctx) -> Figures {
    let n = ctx.n;
    install_trap(14, pf_skip_entry as *const () as u64)?;
    PF_COUNT.store(0, Ordering::SeqCst);
    // SAFETY: `mov (%r14), %rax` (49 8b 06, 3 bytes) faults; the handler skips it and
    // preserves every register but rax (clobbered anyway).
    let total = unsafe { timed_loop!(n, UNMAPPED_VA, [], "mov (%r14), %rax") };
    let got = PF_COUNT.load(Ordering::SeqCst);
    clear_traps()?;
    // SAFETY: the empty loop.
    let baseline = unsafe { timed_loop!(n, UNMAPPED_VA, []) };
    if got != n {
        return Err(Failure::Wrong("read_did_not_fault"));
    }
    Ok((n, total, baseline))
}

// ---- fpu_taskswitch_nm ---------------------------------------------------------------

/// #NM faults the handler has taken.
static NM_COUNT: AtomicU64 = AtomicU64::new(0);

/// #NM handler as a lazy-FPU kernel has it (classic Linux's `math_state_restore` clears
/// TS with `fpu_taskswitch(0)`; Xen already cleared the virtual TS when it delivered
/// #NM): `rcx r11 rip cs rflags rsp ss` on the stack; returns with `HYPERVISOR_iret`
/// to the FPU instruction, which then runs.
#[unsafe(naked)]
unsafe extern "C" fn nm_entry() {
    naked_asm!(
        "pop %rcx",
        "pop %r11",
        "push %rax",
        "push %rcx",
        "push %r11",
        "push %rdi",
        "mov ${fpu}, %eax",
        "xor %edi, %edi",
        "syscall",
        "incq {count}(%rip)",
        "pop %rdi",
        "pop %r11",
        "pop %rcx",
        "pop %rax",
        "push $0",
        "push %rcx",
        "push %r11",
        "push %rax",
        "mov ${iret}, %eax",
        "syscall",
        fpu = const nr::FPU_TASKSWITCH,
        count = sym NM_COUNT,
        iret = const nr::IRET,
        options(att_syntax)
    )
}

/// Per iteration: `fpu_taskswitch(1)`, one x87 instruction (`fnop`), which raises #NM;
/// the handler clears TS and returns with `HYPERVISOR_iret`; `fnop` runs again.
pub fn fpu_taskswitch_nm(ctx: &Ctx) -> Figures {
    let n = ctx.n;
    install_trap(7, nm_entry as *const () as u64)?;
    NM_COUNT.store(0, Ordering::SeqCst);
    // SAFETY: fpu_taskswitch takes no pointer; the #NM handler preserves every register
    // the loop does not declare clobbered. fnop changes no FPU data.
    let total = unsafe {
        timed_loop!(
            n,
            0u64,
            [],
            // fpu_taskswitch(1)
            "mov $5, %eax",
            "mov $1, %edi",
            "syscall",
            "fnop"
        )
    };
    let got = NM_COUNT.load(Ordering::SeqCst);
    // SAFETY: clears the virtual TS (already clear unless the case went wrong).
    Errno::check(unsafe { call::fpu_taskswitch(0) })?;
    clear_traps()?;
    // SAFETY: the empty loop.
    let baseline = unsafe { timed_loop!(n, 0u64, []) };
    if got != n {
        return Err(Failure::Wrong("fnop_did_not_raise_nm"));
    }
    Ok((n, total, baseline))
}

// ---- set_segment_base ----------------------------------------------------------------

/// Per iteration: `set_segment_base(SEGBASE_FS, 0)` (FS base stays what it is: 0).
pub fn set_segment_base(ctx: &Ctx) -> Figures {
    let n = ctx.n;
    // SAFETY: set_segment_base takes no pointer; the FS base the guest has is 0.
    let total = unsafe {
        timed_loop!(
            n,
            0u64,
            // set_segment_base(SEGBASE_FS, r14)
            ["mov $25, %eax", "xor %edi, %edi", "mov %r14, %rsi"],
            "syscall"
        )
    };
    // SAFETY: the same loop without the syscall: register moves only.
    let baseline = unsafe {
        timed_loop!(
            n,
            0u64,
            ["mov $25, %eax", "xor %edi, %edi", "mov %r14, %rsi"]
        )
    };
    // A failure left its errno in rax, which the loop discards: try once.
    // SAFETY: as above.
    Errno::check(unsafe { call::set_segment_base(SEGBASE_FS, 0) })?;
    Ok((n, total, baseline))
}

// ---- user_syscall_bounce ----------------------------------------------------------------

/// Page-aligned, as a kernel stack is (Linux's task stacks are whole pages): the bounce
/// frame at its top and the `iret_context` below it lie in one page.
#[repr(C, align(4096))]
struct Stack([u8; 8192]);

/// Kernel stack for entries from user mode (`stack_switch`).
static mut TRAP_STACK: Stack = Stack([0; 8192]);
/// Kernel RSP while the user loop runs (the assembly only).
static mut SAVED_KERNEL_RSP: u64 = 0;

/// Saves the callee-saved registers and RSP, then `iret`s to [`user_loop`] in user mode
/// with `r12 = n` (the C arguments: rdi = n, rsi = rflags of the user, rdx = user RSP).
/// Returns (from [`user_syscall_entry`], on `SYS_EXIT`) the TSC delta the loop measured.
#[unsafe(naked)]
unsafe extern "C" fn run_user_loop(n: u64, rflags: u64, stack: u64) -> u64 {
    naked_asm!(
        "push %rbx",
        "push %rbp",
        "push %r12",
        "push %r13",
        "push %r14",
        "push %r15",
        "mov %rsp, {saved}(%rip)",
        "mov %rdi, %r12",
        "lea {user}(%rip), %rcx",
        "push ${ss}",
        "push %rdx",
        "push %rsi",
        "push ${cs}",
        "push %rcx",
        "push $0",
        "push $0",
        "push $0",
        "push $0",
        "mov ${iret}, %eax",
        "syscall",
        "ud2",
        saved = sym SAVED_KERNEL_RSP,
        user = sym user_loop,
        ss = const FLAT_KERNEL_SS64,
        cs = const FLAT_KERNEL_CS64,
        iret = const nr::IRET,
        options(att_syntax)
    )
}

/// Guest user mode: the `timed_loop!` template with `mov $SYS_NOP, %eax; syscall` per
/// iteration, then `SYS_EXIT` with the TSC delta in rdi.
#[unsafe(naked)]
unsafe extern "C" fn user_loop() {
    naked_asm!(
        "lfence",
        "rdtsc",
        "shl $32, %rdx",
        "or %rdx, %rax",
        "mov %rax, %r13",
        "test %r12, %r12",
        "jz 3f",
        "2:",
        "mov ${nop}, %eax",
        "syscall",
        "dec %r12",
        "jnz 2b",
        "3:",
        "lfence",
        "rdtsc",
        "shl $32, %rdx",
        "or %rdx, %rax",
        "sub %r13, %rax",
        "mov %rax, %rdi",
        "mov ${exit}, %eax",
        "syscall",
        "ud2",
        nop = const SYS_NOP,
        exit = const SYS_EXIT,
        options(att_syntax)
    )
}

/// The syscall callback: `rcx r11 rip cs rflags rsp ss` on the trap stack. Any call
/// but `SYS_EXIT` returns at once with `HYPERVISOR_iret` and `VGCF_in_syscall` (as
/// `sysret`); `SYS_EXIT` returns from [`run_user_loop`] with rdi.
#[unsafe(naked)]
unsafe extern "C" fn user_syscall_entry() {
    naked_asm!(
        "pop %rcx",
        "pop %r11",
        "cmp ${exit}, %rax",
        "je 2f",
        "push ${in_syscall}",
        "push %rcx",
        "push %r11",
        "push %rax",
        "mov ${iret}, %eax",
        "syscall",
        "2:",
        "mov {saved}(%rip), %rsp",
        "mov %rdi, %rax",
        "pop %r15",
        "pop %r14",
        "pop %r13",
        "pop %r12",
        "pop %rbp",
        "pop %rbx",
        "ret",
        exit = const SYS_EXIT,
        in_syscall = const VGCF_IN_SYSCALL,
        iret = const nr::IRET,
        saved = sym SAVED_KERNEL_RSP,
        options(att_syntax)
    )
}

fn register_syscall_callback(address: u64) -> Result<(), Errno> {
    let cb = CallbackRegister {
        kind: CALLBACKTYPE_SYSCALL as u16,
        flags: 0,
        pad: 0,
        address,
    };
    // SAFETY: registers our syscall entry (or none, address 0).
    Errno::check(unsafe { call::callback_op(CALLBACKOP_REGISTER, (&raw const cb).cast()) })
        .map(drop)
}

/// `MMUEXT_NEW_USER_BASEPTR` with `mfn` (0: none).
fn set_user_root(mfn: u64) -> Result<(), Errno> {
    let op = MmuextOp {
        cmd: MMUEXT_NEW_USER_BASEPTR,
        pad: 0,
        arg1: mfn,
        arg2: 0,
    };
    // SAFETY: one op from a live struct; the root is our own validated kernel L4.
    let r = unsafe {
        call::mmuext_op(
            &raw const op,
            1,
            core::ptr::null_mut(),
            DomId::SELF.0.into(),
        )
    };
    Errno::check(r).map(drop)
}

/// Guest user -> guest kernel -> user per iteration: a `syscall` in user mode bounced to
/// the syscall callback, which returns with `HYPERVISOR_iret` (`VGCF_in_syscall`). The
/// user root is the kernel L4 (every PV mapping is user-accessible).
pub fn user_syscall_bounce(ctx: &Ctx) -> Figures {
    let n = ctx.n;
    let rflags = rflags_keeping_mask(ctx.si)?;
    let trap_top = (&raw mut TRAP_STACK) as u64 + core::mem::size_of::<Stack>() as u64;
    // SAFETY: a stack we own, used only for entries from user mode.
    Errno::check(unsafe { call::stack_switch(u64::from(FLAT_KERNEL_SS64), trap_top) })?;
    register_syscall_callback(user_syscall_entry as *const () as u64)?;
    set_user_root(pv_guest::paging::kernel_l4(ctx.si))?;
    // The user loop touches no memory: it runs on a spare bit of this stack.
    let user_sp = {
        let sp: u64;
        // SAFETY: reads rsp.
        unsafe { core::arch::asm!("mov %rsp, {}", out(reg) sp, options(att_syntax, nomem)) };
        (sp - 1024) & !15
    };
    // SAFETY: enters user mode at user_loop, which only makes our system calls; SYS_EXIT
    // comes back here with the callee-saved registers restored.
    let total = unsafe { run_user_loop(n, rflags, user_sp) };
    set_user_root(0)?;
    register_syscall_callback(0)?;
    // SAFETY: the same loop without the syscall, in kernel mode (the same instructions).
    let baseline = unsafe { timed_loop!(n, 0u64, ["mov $1, %eax"]) };
    Ok((n, total, baseline))
}
