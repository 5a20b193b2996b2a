//! Raw hypercall instructions for a 64-bit PV guest kernel.
//!
//! A 64-bit PV kernel enters the hypervisor with `syscall`: `rax` = hypercall number,
//! arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`, result in `rax`. `syscall` itself destroys
//! `rcx` and `r11`, and Xen may overwrite every argument register the call uses (debug
//! builds poison them on purpose), so all of those are declared clobbered here.
//!
//! Alternatively a guest may `call` the stub for number `nr` at `hypercall_page + nr * 32`,
//! a page the hypervisor fills when the kernel asks for it with the `HYPERCALL_PAGE` ELF note
//! (see [`crate::xen_hypercall_page!`]). [`set_hypercall_page`] selects that route for every
//! `hypercallN` function at run time; without it they issue `syscall` directly, which
//! Xen and Xen-compatible hypervisors accept.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// Size of one stub in the hypercall page.
pub const HYPERCALL_STUB_SIZE: u64 = 32;
/// Number of stubs in the hypercall page.
pub const HYPERCALL_STUBS: u32 = 128;

/// Address of the hypercall page, or 0 to use a bare `syscall`.
static HYPERCALL_PAGE_VA: AtomicU64 = AtomicU64::new(0);

/// Routes every later `hypercallN` call through the stubs of the hypercall page at `va`.
/// Pass 0 to go back to bare `syscall`.
///
/// # Safety
///
/// `va` must be 0 or the page-aligned address of a hypercall page the hypervisor has
/// filled with its stubs, mapped executable for as long as it is selected.
pub unsafe fn set_hypercall_page(va: u64) {
    HYPERCALL_PAGE_VA.store(va, Ordering::Relaxed);
}

/// The hypercall page selected with [`set_hypercall_page`], if any.
pub fn hypercall_page() -> Option<u64> {
    match HYPERCALL_PAGE_VA.load(Ordering::Relaxed) {
        0 => None,
        va => Some(va),
    }
}

/// Number of `iret`, whose stub must be jumped to, never called.
const IRET: u32 = crate::nr::IRET;

/// Address of the stub of hypercall `nr` in the page at `page`, if the page has a
/// callable stub for it (numbers 0..128 except `iret`).
pub const fn stub_address(page: u64, nr: u32) -> Option<u64> {
    if nr >= HYPERCALL_STUBS || nr == IRET {
        None
    } else {
        Some(page + nr as u64 * HYPERCALL_STUB_SIZE)
    }
}

// `syscall` variants: `rcx`/`r11` are destroyed by the instruction, the used argument
// registers by the hypervisor. The stack is not touched.

/// Hypercall `nr` with no argument, via `syscall`.
///
/// # Safety
///
/// The hypercall may read or write any memory its arguments designate and change the
/// state of the domain; the caller must uphold the contract of that hypercall.
#[inline(always)]
pub unsafe fn syscall0(nr: u32) -> i64 {
    let ret: i64;
    // SAFETY: the caller upholds the hypercall's contract; every register the hypervisor
    // or `syscall` may change is declared.
    unsafe {
        asm!("syscall", inlateout("rax") nr as u64 => ret, out("rcx") _, out("r11") _,
             options(nostack));
    }
    ret
}

/// Hypercall `nr` with 1 argument, via `syscall`.
///
/// # Safety
///
/// As [`syscall0`].
#[inline(always)]
pub unsafe fn syscall1(nr: u32, a1: u64) -> i64 {
    let ret: i64;
    // SAFETY: as in `syscall0`.
    unsafe {
        asm!("syscall", inlateout("rax") nr as u64 => ret, inlateout("rdi") a1 => _,
             out("rcx") _, out("r11") _, options(nostack));
    }
    ret
}

/// Hypercall `nr` with 2 arguments, via `syscall`.
///
/// # Safety
///
/// As [`syscall0`].
#[inline(always)]
pub unsafe fn syscall2(nr: u32, a1: u64, a2: u64) -> i64 {
    let ret: i64;
    // SAFETY: as in `syscall0`.
    unsafe {
        asm!("syscall", inlateout("rax") nr as u64 => ret, inlateout("rdi") a1 => _,
             inlateout("rsi") a2 => _, out("rcx") _, out("r11") _, options(nostack));
    }
    ret
}

/// Hypercall `nr` with 3 arguments, via `syscall`.
///
/// # Safety
///
/// As [`syscall0`].
#[inline(always)]
pub unsafe fn syscall3(nr: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: i64;
    // SAFETY: as in `syscall0`.
    unsafe {
        asm!("syscall", inlateout("rax") nr as u64 => ret, inlateout("rdi") a1 => _,
             inlateout("rsi") a2 => _, inlateout("rdx") a3 => _,
             out("rcx") _, out("r11") _, options(nostack));
    }
    ret
}

/// Hypercall `nr` with 4 arguments, via `syscall` (the 4th goes in `r10`, not `rcx`).
///
/// # Safety
///
/// As [`syscall0`].
#[inline(always)]
pub unsafe fn syscall4(nr: u32, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
    let ret: i64;
    // SAFETY: as in `syscall0`.
    unsafe {
        asm!("syscall", inlateout("rax") nr as u64 => ret, inlateout("rdi") a1 => _,
             inlateout("rsi") a2 => _, inlateout("rdx") a3 => _, inlateout("r10") a4 => _,
             out("rcx") _, out("r11") _, options(nostack));
    }
    ret
}

/// Hypercall `nr` with 5 arguments, via `syscall`.
///
/// # Safety
///
/// As [`syscall0`].
#[inline(always)]
pub unsafe fn syscall5(nr: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: as in `syscall0`.
    unsafe {
        asm!("syscall", inlateout("rax") nr as u64 => ret, inlateout("rdi") a1 => _,
             inlateout("rsi") a2 => _, inlateout("rdx") a3 => _, inlateout("r10") a4 => _,
             inlateout("r8") a5 => _, out("rcx") _, out("r11") _, options(nostack));
    }
    ret
}

/// Hypercall `nr` with up to 5 arguments through the stub at `page + nr * 32`.
///
/// The stub saves `rcx`/`r11` itself; they are still declared clobbered so that a
/// hypervisor with different stubs cannot break the caller. `call` pushes the return
/// address, so the stack is used (no `nostack`).
///
/// # Safety
///
/// `page` must be a hypercall page filled by the hypervisor and mapped executable, and the
/// caller must uphold the contract of hypercall `nr` (as [`syscall0`]). Numbers without a
/// callable stub (`iret`, ≥ 128) return `-ENOSYS` without entering the hypervisor.
#[inline(always)]
pub unsafe fn page_call(page: u64, nr: u32, args: [u64; 5]) -> i64 {
    let ret: i64;
    let Some(stub) = stub_address(page, nr) else {
        return crate::Errno::ENOSYS.to_ret();
    };
    // SAFETY: the caller guarantees the stub is a hypercall stub that returns with `ret`;
    // every register it or the hypervisor may change is declared.
    unsafe {
        asm!("call {stub}", stub = in(reg) stub, lateout("rax") ret,
             inlateout("rdi") args[0] => _, inlateout("rsi") args[1] => _,
             inlateout("rdx") args[2] => _, inlateout("r10") args[3] => _,
             inlateout("r8") args[4] => _, out("rcx") _, out("r11") _);
    }
    ret
}

macro_rules! hypercall_fn {
    ($(#[$doc:meta])* $name:ident, $sys:ident ($($arg:ident),*), [$($slot:expr),*]) => {
        $(#[$doc])*
        ///
        /// Goes through the hypercall page when one was selected with
        /// [`set_hypercall_page`], else through a bare `syscall`.
        ///
        /// # Safety
        ///
        /// As [`syscall0`].
        #[inline]
        pub unsafe fn $name(nr: u32 $(, $arg: u64)*) -> i64 {
            match hypercall_page().filter(|&page| stub_address(page, nr).is_some()) {
                // SAFETY: the page was registered by `set_hypercall_page`, whose contract
                // makes it a filled stub page; the caller upholds the hypercall contract.
                Some(page) => unsafe { page_call(page, nr, [$($slot),*]) },
                // SAFETY: the caller upholds the hypercall contract.
                None => unsafe { $sys(nr $(, $arg)*) },
            }
        }
    };
}

hypercall_fn!(
    /// Hypercall `nr` with no argument.
    hypercall0, syscall0(), [0, 0, 0, 0, 0]
);
hypercall_fn!(
    /// Hypercall `nr` with 1 argument.
    hypercall1, syscall1(a1), [a1, 0, 0, 0, 0]
);
hypercall_fn!(
    /// Hypercall `nr` with 2 arguments.
    hypercall2, syscall2(a1, a2), [a1, a2, 0, 0, 0]
);
hypercall_fn!(
    /// Hypercall `nr` with 3 arguments.
    hypercall3, syscall3(a1, a2, a3), [a1, a2, a3, 0, 0]
);
hypercall_fn!(
    /// Hypercall `nr` with 4 arguments.
    hypercall4, syscall4(a1, a2, a3, a4), [a1, a2, a3, a4, 0]
);
hypercall_fn!(
    /// Hypercall `nr` with 5 arguments.
    hypercall5, syscall5(a1, a2, a3, a4, a5), [a1, a2, a3, a4, a5]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_addresses() {
        assert_eq!(stub_address(0x1000, 0), Some(0x1000));
        assert_eq!(stub_address(0x1000, 17), Some(0x1000 + 17 * 32));
        assert_eq!(stub_address(0x1000, 127), Some(0x1000 + 127 * 32));
        // No stub outside the page, and `iret`'s stub never returns.
        assert_eq!(stub_address(0x1000, 128), None);
        assert_eq!(stub_address(0x1000, u32::MAX), None);
        assert_eq!(stub_address(0x1000, 23), None);
    }

    #[test]
    fn page_selection() {
        assert_eq!(hypercall_page(), None);
        // SAFETY: nothing issues a hypercall in this test; the value is only stored.
        unsafe { set_hypercall_page(0x2000) };
        assert_eq!(hypercall_page(), Some(0x2000));
        // SAFETY: as above.
        unsafe { set_hypercall_page(0) };
        assert_eq!(hypercall_page(), None);
    }
}
