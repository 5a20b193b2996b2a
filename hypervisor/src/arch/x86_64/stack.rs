//! Hypervisor stacks with a guard page below them.
//!
//! Each stack is a page-aligned static whose lowest 4 KiB page is a guard:
//! `paging::protect_image` leaves it unmapped, so running off the bottom of the stack
//! faults instead of silently overwriting the `.bss` data below. On the main stack the
//! #PF cannot be delivered (its frame would go onto the guard page too), so it escalates
//! to #DF, which runs on IST1 and reports the overflow (`entry::hypervisor_exception`).

use super::Racy;

/// Size of the unmapped page below every stack.
pub const GUARD_SIZE: usize = 4096;

/// A stack of `N` bytes (a multiple of 4 KiB) above a guard page.
#[repr(C, align(4096))]
pub struct GuardedStack<const N: usize> {
    guard: [u8; GUARD_SIZE],
    stack: [u8; N],
}

impl<const N: usize> GuardedStack<N> {
    /// Offset of the stack top from the start of the static (for the entry asm, which
    /// addresses the stack through its symbol).
    pub const TOP_OFFSET: usize = {
        assert!(N.is_multiple_of(4096), "stack size must be whole pages");
        GUARD_SIZE + N
    };

    pub const fn new() -> Self {
        GuardedStack {
            guard: [0; GUARD_SIZE],
            stack: [0; N],
        }
    }
}

// The guard is exactly the lowest page and the stack fills the rest (no padding).
static_assertions::const_assert_eq!(
    core::mem::size_of::<GuardedStack<8192>>(),
    GUARD_SIZE + 8192
);

impl<const N: usize> Default for GuardedStack<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Virtual address one past the highest byte of the stack.
pub fn top<const N: usize>(s: &Racy<GuardedStack<N>>) -> u64 {
    s.get() as u64 + GuardedStack::<N>::TOP_OFFSET as u64
}

/// Virtual address of the (page-aligned) guard page.
pub fn guard_page<const N: usize>(s: &Racy<GuardedStack<N>>) -> u64 {
    // `guard` is the first field of the repr(C) struct.
    s.get() as u64
}

/// Recurses until the stack runs into its guard page, for the `debug-stack-overflow`
/// hypervisor command-line word. Never returns: the overflow stops the hypervisor.
#[inline(never)]
pub fn overflow(depth: u64) -> u64 {
    // A frame the optimiser can neither drop nor turn into a loop: the buffer escapes
    // through black_box and the result is used after the call.
    let mut frame = [0u8; 512];
    frame[0] = depth as u8;
    core::hint::black_box(&mut frame);
    // Always true in practice; black_box keeps rustc from calling the recursion
    // unconditional.
    if core::hint::black_box(depth) != u64::MAX {
        return overflow(depth + 1).wrapping_add(u64::from(frame[1]));
    }
    depth
}
