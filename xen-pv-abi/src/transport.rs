//! How a hypercall reaches the hypervisor.
//!
//! Every safe wrapper of this crate exists in two forms: a free function for a bare-metal
//! PV kernel (`hypercall::xen_version()`), and an `_on` form generic over a [`Transport`]
//! (`hypercall::xen_version_on(&t)`). The free function is the `_on` form with [`Native`].
//!
//! | transport | where | how |
//! |---|---|---|
//! | [`Native`] | a 64-bit PV guest kernel (`x86_64`) | `syscall`, or the hypercall page once selected with [`crate::raw::set_hypercall_page`] |
//! | `Privcmd` (feature `privcmd`, Linux, std) | a process in a Linux PV dom0 or domU | `ioctl(IOCTL_PRIVCMD_HYPERCALL)` on `/dev/xen/privcmd` |
//! | [`fake::Fake`] | host tests of code that uses this crate | records each call and answers with a closure |
//!
//! A transport only moves six numbers (the hypercall number and five arguments) and
//! brings back the result; pointer arguments are addresses in the caller's address space,
//! which the hypervisor reads and writes through the caller's page tables.

/// A way to issue hypercalls.
///
/// Only [`hypercall5`](Transport::hypercall5) must be written; the fewer-argument forms
/// default to it with zeros. A transport that can pass fewer registers (like [`Native`])
/// overrides them.
///
/// # Implementing
///
/// The result must be the hypervisor's return value, or a negative Xen errno when the
/// call could not be made (e.g. `-EPERM` when the transport may not issue it).
pub trait Transport {
    /// Issues hypercall `op` with five arguments and returns its result.
    ///
    /// # Safety
    ///
    /// The hypervisor may read or write any memory the arguments designate and change
    /// the state of the domain (map pages, shut it down...): the caller upholds the
    /// contract of hypercall `op`.
    unsafe fn hypercall5(&self, op: u32, args: [u64; 5]) -> i64;

    /// Hypercall `op` without arguments.
    ///
    /// # Safety
    ///
    /// As [`hypercall5`](Transport::hypercall5).
    #[inline]
    unsafe fn hypercall0(&self, op: u32) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { self.hypercall5(op, [0; 5]) }
    }

    /// Hypercall `op` with one argument.
    ///
    /// # Safety
    ///
    /// As [`hypercall5`](Transport::hypercall5).
    #[inline]
    unsafe fn hypercall1(&self, op: u32, a1: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { self.hypercall5(op, [a1, 0, 0, 0, 0]) }
    }

    /// Hypercall `op` with two arguments.
    ///
    /// # Safety
    ///
    /// As [`hypercall5`](Transport::hypercall5).
    #[inline]
    unsafe fn hypercall2(&self, op: u32, a1: u64, a2: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { self.hypercall5(op, [a1, a2, 0, 0, 0]) }
    }

    /// Hypercall `op` with three arguments.
    ///
    /// # Safety
    ///
    /// As [`hypercall5`](Transport::hypercall5).
    #[inline]
    unsafe fn hypercall3(&self, op: u32, a1: u64, a2: u64, a3: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { self.hypercall5(op, [a1, a2, a3, 0, 0]) }
    }

    /// Hypercall `op` with four arguments.
    ///
    /// # Safety
    ///
    /// As [`hypercall5`](Transport::hypercall5).
    #[inline]
    unsafe fn hypercall4(&self, op: u32, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { self.hypercall5(op, [a1, a2, a3, a4, 0]) }
    }
}

/// A reference to a transport is one too, so `&Privcmd` or `&&Fake` can be passed on.
impl<T: Transport + ?Sized> Transport for &T {
    #[inline]
    unsafe fn hypercall5(&self, op: u32, args: [u64; 5]) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).hypercall5(op, args) }
    }
    #[inline]
    unsafe fn hypercall0(&self, op: u32) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).hypercall0(op) }
    }
    #[inline]
    unsafe fn hypercall1(&self, op: u32, a1: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).hypercall1(op, a1) }
    }
    #[inline]
    unsafe fn hypercall2(&self, op: u32, a1: u64, a2: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).hypercall2(op, a1, a2) }
    }
    #[inline]
    unsafe fn hypercall3(&self, op: u32, a1: u64, a2: u64, a3: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).hypercall3(op, a1, a2, a3) }
    }
    #[inline]
    unsafe fn hypercall4(&self, op: u32, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { (**self).hypercall4(op, a1, a2, a3, a4) }
    }
}

/// The bare-metal transport of a 64-bit PV guest kernel: the functions of [`crate::raw`]
/// (`syscall`, or the hypercall page once selected).
///
/// Only meaningful in a PV kernel: in a user-space process `syscall` is a system call of
/// the host OS, not a hypercall.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Native;

#[cfg(target_arch = "x86_64")]
impl Transport for Native {
    #[inline(always)]
    unsafe fn hypercall5(&self, op: u32, a: [u64; 5]) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { crate::raw::hypercall5(op, a[0], a[1], a[2], a[3], a[4]) }
    }
    #[inline(always)]
    unsafe fn hypercall0(&self, op: u32) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { crate::raw::hypercall0(op) }
    }
    #[inline(always)]
    unsafe fn hypercall1(&self, op: u32, a1: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { crate::raw::hypercall1(op, a1) }
    }
    #[inline(always)]
    unsafe fn hypercall2(&self, op: u32, a1: u64, a2: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { crate::raw::hypercall2(op, a1, a2) }
    }
    #[inline(always)]
    unsafe fn hypercall3(&self, op: u32, a1: u64, a2: u64, a3: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { crate::raw::hypercall3(op, a1, a2, a3) }
    }
    #[inline(always)]
    unsafe fn hypercall4(&self, op: u32, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
        // SAFETY: forwarded to the caller.
        unsafe { crate::raw::hypercall4(op, a1, a2, a3, a4) }
    }
}

#[cfg(all(feature = "privcmd", target_os = "linux"))]
pub use crate::privcmd::Privcmd;

pub mod fake {
    //! A transport for host tests: it records every hypercall and answers with a closure.
    //!
    //! ```
    //! use xen_pv_abi::transport::fake::Fake;
    //! use xen_pv_abi::{Errno, hypercall, nr};
    //!
    //! // A hypervisor that reports version 4.17 and refuses everything else.
    //! let xen = Fake::new(|call| match call.op {
    //!     nr::XEN_VERSION => 0x0004_0011,
    //!     _ => Errno::ENOSYS.to_ret(),
    //! });
    //! assert_eq!(hypercall::xen_version_on(&xen), Ok((4, 17)));
    //! assert_eq!(hypercall::sched_yield_on(&xen), Err(Errno::ENOSYS));
    //! assert_eq!(xen.calls().len(), 2);
    //! assert_eq!(xen.calls()[1].op, nr::SCHED_OP);
    //! ```
    //!
    //! The log lives in the value (this crate is `no_std` without `alloc`): it keeps the
    //! first [`CAPACITY`] calls; [`Fake::count`] counts them all.

    use super::Transport;
    use core::cell::{Cell, RefCell};

    /// How many calls a [`Fake`] keeps.
    pub const CAPACITY: usize = 64;

    /// One recorded hypercall.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Call {
        /// The hypercall number (see [`crate::nr`]).
        pub op: u32,
        /// The five argument registers (unused ones 0). Pointers are addresses in the
        /// caller's memory, valid only while the call is answered.
        pub args: [u64; 5],
    }

    /// The first [`CAPACITY`] calls, oldest first; derefs to `[Call]`.
    #[derive(Clone, Copy, Debug)]
    pub struct Calls {
        calls: [Call; CAPACITY],
        len: usize,
    }

    impl core::ops::Deref for Calls {
        type Target = [Call];
        fn deref(&self) -> &[Call] {
            &self.calls[..self.len]
        }
    }

    /// A fake hypervisor: each call is logged, then answered by `respond`.
    ///
    /// `respond` gets the call with the caller's pointers; to play a hypervisor that
    /// writes results (e.g. `EVTCHNOP_alloc_unbound`'s port), it may write through them
    /// with `unsafe` code of its own, within the size the hypercall's ABI gives. It must
    /// not issue hypercalls on the same `Fake`.
    pub struct Fake<F> {
        respond: RefCell<F>,
        log: RefCell<Calls>,
        count: Cell<usize>,
    }

    impl<F: FnMut(&Call) -> i64> Fake<F> {
        /// A fake answering every call with `respond(&call)`.
        pub const fn new(respond: F) -> Self {
            Fake {
                respond: RefCell::new(respond),
                log: RefCell::new(Calls {
                    calls: [Call {
                        op: 0,
                        args: [0; 5],
                    }; CAPACITY],
                    len: 0,
                }),
                count: Cell::new(0),
            }
        }

        /// A copy of the log (the first [`CAPACITY`] calls).
        pub fn calls(&self) -> Calls {
            *self.log.borrow()
        }

        /// Every call made so far, logged or not.
        pub fn count(&self) -> usize {
            self.count.get()
        }

        /// The most recent call, if it was logged.
        pub fn last(&self) -> Option<Call> {
            let log = self.log.borrow();
            if self.count.get() == log.len {
                log.last().copied()
            } else {
                None
            }
        }

        /// Forgets the log and the count.
        pub fn clear(&self) {
            self.log.borrow_mut().len = 0;
            self.count.set(0);
        }
    }

    impl<F: FnMut(&Call) -> i64> Transport for Fake<F> {
        unsafe fn hypercall5(&self, op: u32, args: [u64; 5]) -> i64 {
            let call = Call { op, args };
            {
                let mut log = self.log.borrow_mut();
                if log.len < CAPACITY {
                    let i = log.len;
                    log.calls[i] = call;
                    log.len += 1;
                }
            }
            self.count.set(self.count.get().saturating_add(1));
            (self.respond.borrow_mut())(&call)
        }
    }

    impl<F> core::fmt::Debug for Fake<F> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("Fake")
                .field("count", &self.count.get())
                .finish_non_exhaustive()
        }
    }
}
