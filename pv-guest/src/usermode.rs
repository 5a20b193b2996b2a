//! Traps, a demand-mapped page and a user-mode task, the way a ported PV kernel does it:
//! a trap table (`set_trap_table`) whose #PF handler maps the faulting page and returns
//! with the `iret` hypercall, a kernel stack for entries from user mode
//! (`stack_switch`), a syscall callback (`callback_op`), a user page-table root
//! (`MMUEXT_NEW_USER_BASEPTR`: a root of its own that maps only the task's code, message
//! and stack, built by [`crate::paging`]) and an `iret` to guest user mode.
//!
//! The user task makes a system call `SYS_SAY` (print a string it passes), then tries to
//! read a kernel page its root does not map: the #PF handler ends the task and returns to
//! the kernel code that started it (as `SYS_EXIT` would, used if the read succeeds, i.e.
//! on the fallback where the user root is the kernel L4).

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use xen_pv_abi::hypercall::{UVMF_INVLPG, hypercall_raw, update_va_mapping};
use xen_pv_abi::layout::{FLAT_KERNEL_CS64, FLAT_KERNEL_SS64};
use xen_pv_abi::mmu::{MMUEXT_NEW_USER_BASEPTR, MmuextOp};
use xen_pv_abi::traps::{CALLBACKOP_REGISTER, CALLBACKTYPE_SYSCALL, CallbackRegister, TrapInfo};
use xen_pv_abi::{Errno, nr};

use crate::paging::{self, UserRange, mfn_of};
use crate::{StartInfo, println};

/// `iret` hypercall number, for the assembly below.
const HYPERVISOR_IRET: u32 = nr::IRET;
/// `VGCF_in_syscall`.
const VGCF_IN_SYSCALL: u64 = xen_pv_abi::traps::VGCF_IN_SYSCALL;

/// System call numbers of this toy kernel.
const SYS_SAY: u64 = 1;
const SYS_EXIT: u64 = 60;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

#[repr(C, align(16))]
struct Stack([u8; 16 * 1024]);

/// Kernel stack for entries from user mode.
static mut TRAP_STACK: Stack = Stack([0; 16 * 1024]);
/// The user task's stack.
static mut USER_STACK: Stack = Stack([0; 16 * 1024]);
/// Unmapped, then mapped back by the #PF handler on first touch. Only accessed with
/// volatile loads and stores through raw pointers.
static mut DEMAND_PAGE: Page = Page([0; 4096]);
/// Kernel RSP while the user task runs (written and read by the assembly only).
static mut SAVED_KERNEL_RSP: u64 = 0;

/// Last page fault handled (cr2), 0 if none.
static LAST_FAULT: AtomicU64 = AtomicU64::new(0);
/// The machine frame of `DEMAND_PAGE`, for the handler.
static DEMAND_MFN: AtomicU64 = AtomicU64::new(0);

/// Installs the trap table: #PF handled, #DE #UD #GP fatal.
pub fn install_trap_table() -> Result<(), Errno> {
    let entry = |vector: u8, address: u64| TrapInfo {
        vector,
        flags: 0,
        cs: FLAT_KERNEL_CS64,
        pad: 0,
        address,
    };
    let table = [
        entry(0, fatal_de as *const () as u64),
        entry(6, fatal_ud as *const () as u64),
        entry(13, fatal_gp as *const () as u64),
        entry(14, page_fault_entry as *const () as u64),
        TrapInfo::default(),
    ];
    // SAFETY: the table is a valid, terminated trap_info array; the handlers exist.
    let r = unsafe { hypercall_raw(nr::SET_TRAP_TABLE, [table.as_ptr() as u64, 0, 0, 0, 0]) };
    Errno::check(r).map(|_| ())
}

/// Unmaps `DEMAND_PAGE`, touches it, and lets the #PF handler map it back. Returns the
/// faulting address.
pub fn demand_page_demo(si: &StartInfo) -> Result<u64, Errno> {
    let page = &raw mut DEMAND_PAGE;
    let va = page as u64;
    DEMAND_MFN.store(mfn_of(si, va), Ordering::Relaxed);
    // SAFETY: the page is ours and only touched through raw pointers; the handler maps
    // it back before the access below completes.
    unsafe { update_va_mapping(va, 0, UVMF_INVLPG)? };
    let p = page.cast::<u64>();
    // SAFETY: faults once (not mapped), the handler maps the same frame again, retried.
    unsafe { p.add(8).write_volatile(0x5a5a) };
    // SAFETY: mapped again now.
    let back = unsafe { p.add(8).read_volatile() };
    if back != 0x5a5a {
        println!("pv-guest: demand page reads back {back:#x}");
    }
    Ok(LAST_FAULT.load(Ordering::Relaxed))
}

/// A kernel page the user task tries to read: its root does not map it, so the read
/// faults and the kernel ends the task. Page-sized and aligned so that no page the task
/// may use shares its frame.
static KERNEL_SECRET: Page = Page([0x42; 4096]);

/// Called by `page_fault_entry` with the error code and faulting RIP. Returns 0 to retry
/// the access, 1 to end the user task (back to `run_user`'s caller).
extern "C" fn page_fault(error: u64, rip: u64) -> u64 {
    let cr2: u64;
    // SAFETY: reading CR2 traps to the hypervisor, which emulates it (a PV kernel's
    // faulting address); no memory is touched.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    if cr2 & !0xfff == (&raw const KERNEL_SECRET) as u64 {
        println!("pv-guest: user task cannot read kernel memory (page fault at {cr2:#x}), ended");
        return 1;
    }
    let page = &raw mut DEMAND_PAGE;
    let va = page as u64;
    if cr2 & !0xfff != va {
        println!("pv-guest: unexpected page fault at {cr2:#x} error={error:#x} rip={rip:#x}");
        crate::shutdown(xen_pv_abi::sched::ShutdownReason::Crash);
    }
    let pte = (DEMAND_MFN.load(Ordering::Relaxed) << 12) | 0x7;
    // SAFETY: maps our own page's frame back at its own address.
    if unsafe { update_va_mapping(va, pte, UVMF_INVLPG) }.is_err() {
        println!("pv-guest: cannot map the demand page back");
        crate::shutdown(xen_pv_abi::sched::ShutdownReason::Crash);
    }
    LAST_FAULT.store(cr2, Ordering::Relaxed);
    0
}

/// #PF entry: the hypervisor left `rcx r11 error rip cs rflags rsp ss` on the stack.
#[unsafe(naked)]
unsafe extern "C" fn page_fault_entry() {
    naked_asm!(
        "pop %rcx",
        "pop %r11",
        "push %rax", "push %rcx", "push %rdx", "push %rsi", "push %rdi",
        "push %r8", "push %r9", "push %r10", "push %r11",
        "sub $8, %rsp",
        "mov 80(%rsp), %rdi",
        "mov 88(%rsp), %rsi",
        "call {handler}",
        "add $8, %rsp",
        "test %rax, %rax",
        "jnz 3f",
        "pop %r11", "pop %r10", "pop %r9", "pop %r8",
        "pop %rdi", "pop %rsi", "pop %rdx", "pop %rcx", "pop %rax",
        // Drop the error code; below the hardware-like frame build iret_context.
        "add $8, %rsp",
        "push $0",
        "push %rcx",
        "push %r11",
        "push %rax",
        "mov ${iret}, %eax",
        "syscall",
        // End the user task: back onto the kernel stack of run_user, return from it.
        "3:",
        "mov {saved}(%rip), %rsp",
        "pop %r15", "pop %r14", "pop %r13", "pop %r12", "pop %rbp", "pop %rbx",
        "ret",
        handler = sym page_fault,
        iret = const HYPERVISOR_IRET,
        saved = sym SAVED_KERNEL_RSP,
        options(att_syntax)
    )
}

extern "C" fn fatal_trap(vector: u64, frame: *const u64) -> ! {
    // SAFETY: `frame` points at the words the hypervisor pushed (at least 5).
    let (w0, w1) = unsafe { (frame.read(), frame.add(1).read()) };
    println!("pv-guest: fatal trap vector={vector} [{w0:#x} {w1:#x}]");
    crate::shutdown(xen_pv_abi::sched::ShutdownReason::Crash)
}

macro_rules! fatal_entry {
    ($name:ident, $vector:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!(
                "pop %rcx",
                "pop %r11",
                "mov ${v}, %edi",
                "mov %rsp, %rsi",
                "and $-16, %rsp",
                "call {f}",
                v = const $vector,
                f = sym fatal_trap,
                options(att_syntax)
            )
        }
    };
}
fatal_entry!(fatal_de, 0);
fatal_entry!(fatal_ud, 6);
fatal_entry!(fatal_gp, 13);

/// Sets up the kernel side of user mode and runs the user task until it exits.
pub fn user_mode_demo(si: &StartInfo) -> Result<(), Errno> {
    let trap_stack_top = (&raw mut TRAP_STACK) as u64 + 16 * 1024;
    // SAFETY: a stack we own, used only for entries from user mode.
    let r = unsafe {
        hypercall_raw(
            nr::STACK_SWITCH,
            [u64::from(FLAT_KERNEL_SS64), trap_stack_top, 0, 0, 0],
        )
    };
    Errno::check(r)?;
    let cb = CallbackRegister {
        kind: CALLBACKTYPE_SYSCALL as u16,
        flags: 0,
        pad: 0,
        address: syscall_entry as *const () as u64,
    };
    // SAFETY: registers our syscall entry.
    let r = unsafe {
        hypercall_raw(
            nr::CALLBACK_OP,
            [
                u64::from(CALLBACKOP_REGISTER),
                &raw const cb as u64,
                0,
                0,
                0,
            ],
        )
    };
    Errno::check(r)?;
    install_user_root(si)?;
    let user_stack_top = (&raw mut USER_STACK) as u64 + 16 * 1024;
    // SAFETY: enters the user task, which only makes our system calls; SYS_EXIT comes
    // back here with the callee-saved registers restored.
    unsafe { run_user(user_task as *const () as u64, user_stack_top) };
    Ok(())
}

/// Gives the user task its own root mapping only its code, message and stack
/// ([`paging::install_user_root`]). Where that cannot be built, falls back to the
/// kernel's own L4 as user root (every PV mapping is user accessible anyway).
fn install_user_root(si: &StartInfo) -> Result<(), Errno> {
    let ranges = [
        UserRange {
            start: user_task as *const () as u64,
            len: 64,
            writable: false,
        },
        UserRange {
            start: (&raw const USER_MESSAGE) as u64,
            len: USER_MESSAGE.len() as u64,
            writable: false,
        },
        UserRange {
            start: (&raw mut USER_STACK) as u64,
            len: 16 * 1024,
            writable: true,
        },
    ];
    match paging::install_user_root(si, &ranges) {
        Ok(frames) => {
            println!("pv-guest: user task runs on its own root ({frames} frames)");
            return Ok(());
        }
        Err(e) => println!("pv-guest: own user root failed ({e}), using the kernel L4"),
    }
    let op = MmuextOp {
        cmd: MMUEXT_NEW_USER_BASEPTR,
        pad: 0,
        arg1: paging::kernel_l4(si),
        arg2: 0,
    };
    // SAFETY: the user root is our own (validated) kernel L4.
    let r = unsafe {
        hypercall_raw(
            nr::MMUEXT_OP,
            [
                &raw const op as u64,
                1,
                0,
                u64::from(xen_pv_abi::DomId::SELF.0),
                0,
            ],
        )
    };
    Errno::check(r).map(drop)
}

/// Called by `syscall_entry` for every system call but `SYS_EXIT`.
extern "C" fn syscall_dispatch(number: u64, a1: u64, a2: u64) -> u64 {
    match number {
        SYS_SAY => {
            let len = a2.min(128) as usize;
            // SAFETY: the user task passes a string of its image (same address space).
            let bytes = unsafe { core::slice::from_raw_parts(a1 as *const u8, len) };
            println!("pv-guest: user task says {}", crate::bytes_str(bytes));
            0
        }
        _ => Errno::ENOSYS.to_ret() as u64,
    }
}

/// Saves the kernel's callee-saved registers and RSP, then `iret`s to `entry` in user
/// mode on `stack`. Returns when the task makes `SYS_EXIT`.
#[unsafe(naked)]
unsafe extern "C" fn run_user(entry: u64, stack: u64) {
    naked_asm!(
        "push %rbx", "push %rbp", "push %r12", "push %r13", "push %r14", "push %r15",
        "mov %rsp, {saved}(%rip)",
        // iret_context: rax r11 rcx flags rip cs rflags rsp ss (lowest first).
        "push ${ss}",
        "push %rsi",
        "push $0x202",
        "push ${cs}",
        "push %rdi",
        "push $0",
        "push $0",
        "push $0",
        "push $0",
        "mov ${iret}, %eax",
        "syscall",
        saved = sym SAVED_KERNEL_RSP,
        ss = const FLAT_KERNEL_SS64,
        cs = const FLAT_KERNEL_CS64,
        iret = const HYPERVISOR_IRET,
        options(att_syntax)
    )
}

/// The syscall callback: `rcx r11 rip cs rflags rsp ss` on the trap stack, the user's
/// rax/rdi/rsi as it left them.
#[unsafe(naked)]
unsafe extern "C" fn syscall_entry() {
    naked_asm!(
        "pop %rcx",
        "pop %r11",
        "cmp ${exit}, %rax",
        "je 2f",
        "push %rcx",
        "push %r11",
        "sub $8, %rsp",
        "mov %rsi, %rdx",
        "mov %rdi, %rsi",
        "mov %rax, %rdi",
        "call {dispatch}",
        "add $8, %rsp",
        "pop %r11",
        "pop %rcx",
        // Back to the user with the result in rax, as sysret would.
        "push ${in_syscall}",
        "push %rcx",
        "push %r11",
        "push %rax",
        "mov ${iret}, %eax",
        "syscall",
        // SYS_EXIT: back onto the kernel stack of run_user, and return from it.
        "2:",
        "mov {saved}(%rip), %rsp",
        "pop %r15", "pop %r14", "pop %r13", "pop %r12", "pop %rbp", "pop %rbx",
        "ret",
        exit = const SYS_EXIT,
        dispatch = sym syscall_dispatch,
        in_syscall = const VGCF_IN_SYSCALL,
        iret = const HYPERVISOR_IRET,
        saved = sym SAVED_KERNEL_RSP,
        options(att_syntax)
    )
}

static USER_MESSAGE: [u8; 17] = *b"hello via syscall";

/// The user task (guest user mode, CPL3 on the user root).
#[unsafe(naked)]
unsafe extern "C" fn user_task() {
    naked_asm!(
        "lea {msg}(%rip), %rdi",
        "mov ${len}, %esi",
        "mov ${say}, %eax",
        "syscall",
        // Not in the user root: faults, and the kernel ends the task here.
        "mov {secret}(%rip), %rax",
        "mov ${exit}, %eax",
        "syscall",
        "ud2",
        msg = sym USER_MESSAGE,
        len = const 17,
        say = const SYS_SAY,
        exit = const SYS_EXIT,
        secret = sym KERNEL_SECRET,
        options(att_syntax)
    )
}
