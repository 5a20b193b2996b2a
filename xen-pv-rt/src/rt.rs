//! Entry point, start_info, shutdown and the panic handler.

use core::arch::naked_asm;

use xen_pv_abi::hypercall::sched_shutdown;
use xen_pv_abi::sched::ShutdownReason;
use xen_pv_abi::start_info::{START_INFO_MAGIC_X86_64, StartInfo};

/// Size of the boot stack (Xen's own boot stack is a single page).
const STACK_SIZE: usize = 64 * 1024;
/// The page below the stack, unmapped at entry so that an overflow faults (and the
/// domain crashes) instead of overwriting whatever `.bss` lies below.
const GUARD_SIZE: usize = 4096;

#[repr(C, align(4096))]
struct Stack {
    guard: [u8; GUARD_SIZE],
    stack: [u8; STACK_SIZE],
}

/// The kernel stack; only `_start` touches it, by address.
static mut BOOT_STACK: Stack = Stack {
    guard: [0; GUARD_SIZE],
    stack: [0; STACK_SIZE],
};

/// A copy of start_info, taken before anything else runs.
static START_INFO: spin::Once<StartInfo> = spin::Once::new();

unsafe extern "Rust" {
    /// Defined by the kernel with [`crate::entry!`].
    safe fn __xen_pv_rt_main(start_info: &'static StartInfo) -> !;
}

unsafe extern "C" {
    /// Defined only by the runtime's linker script (see `script_symbol.rs`): referring to
    /// it makes a link without the script fail with an error that names the fix.
    #[link_name = script_symbol!()]
    static LINKER_SCRIPT_PRESENT: u8;
}

/// The kernel entry point (the `ENTRY` note and the ELF entry): Xen starts the vCPU here
/// with `rsi` = virtual address of start_info.
///
/// # Safety
///
/// Only the hypervisor may enter it, once, with a valid start_info address in `rsi`.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _start() -> ! {
    naked_asm!(
        "cld",
        // Our own stack: 16-byte aligned top, so `call` leaves the ABI's alignment.
        "lea {stack}+{size}(%rip), %rsp",
        "xor %ebp, %ebp",
        "mov %rsi, %rdi",
        "call {rust_start}",
        "ud2",
        stack = sym BOOT_STACK,
        size = const GUARD_SIZE + STACK_SIZE,
        rust_start = sym rust_start,
        options(att_syntax)
    )
}

extern "C" fn rust_start(start_info: *const StartInfo) -> ! {
    core::hint::black_box(&raw const LINKER_SCRIPT_PRESENT);
    // SAFETY: `_start`'s contract: the hypervisor passed the address of a mapped start_info
    // page. It is copied (volatile, it is a hypervisor-written page) so nothing later
    // depends on that page staying intact.
    let copy = unsafe { start_info.read_volatile() };
    let si = START_INFO.call_once(|| copy);
    if !si.magic_str().starts_with(START_INFO_MAGIC_X86_64) {
        let _ = xen_pv_abi::hypercall::console_io_write(b"xen-pv-rt: bad start_info magic\n");
        shutdown(ShutdownReason::Crash);
    }
    unmap_guard();
    __xen_pv_rt_main(si)
}

/// Unmaps the stack's guard page. Nothing refers to it; a refusal (a hypervisor that
/// does not allow it) only leaves the stack unguarded.
fn unmap_guard() {
    let guard = (&raw const BOOT_STACK).cast::<u8>() as u64;
    // SAFETY: the guard page is a page-aligned page of our own `.bss` that no code or
    // data uses (the stack starts above it), so removing its mapping breaks nothing.
    let _ = unsafe {
        xen_pv_abi::hypercall::update_va_mapping(guard, 0, xen_pv_abi::hypercall::UVMF_INVLPG)
    };
}

/// The copy of start_info taken at entry (`None` only before the kernel's main runs).
pub fn start_info() -> Option<&'static StartInfo> {
    START_INFO.get()
}

/// Shuts the domain down for `reason`, after flushing a partial console line. If the
/// hypervisor refuses, tries `crash`, and if that returns too, raises `#UD` so the
/// hypervisor ends the domain as crashed.
pub fn shutdown(reason: ShutdownReason) -> ! {
    crate::console::flush();
    let _ = sched_shutdown(reason);
    let _ = sched_shutdown(ShutdownReason::Crash);
    loop {
        // SAFETY: `ud2` only raises #UD; the hypervisor handles the guest's exception.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    }
}

/// Powers the domain off (`SHUTDOWN_poweroff`).
pub fn poweroff() -> ! {
    shutdown(ShutdownReason::Poweroff)
}

#[cfg(feature = "panic-handler")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::sync::atomic::{AtomicBool, Ordering};
    static PANICKING: AtomicBool = AtomicBool::new(false);
    // A panic while reporting a panic: stop at once.
    if !PANICKING.swap(true, Ordering::Relaxed) {
        crate::console::print_panic(info);
    }
    shutdown(ShutdownReason::Crash)
}
