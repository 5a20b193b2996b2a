//! The types the generated [`super::generated::Hypercalls`] trait speaks: typed guest
//! pointers, the calling context and the [`Outcome`] a handler returns.

use super::HcResult;
use crate::hv::Hypervisor;
use crate::platform::{GuestFrame, MachineMemory, Platform};
use core::fmt;
use core::marker::PhantomData;
use xen_pv_abi::{DomId, Errno, VcpuId};
use zerocopy::{FromBytes, IntoBytes};

/// The pointee of a guest pointer whose type depends on the sub-operation (C `void *`):
/// [`GuestHandle::cast`] it once the command is known.
pub enum Untyped {}

/// A guest virtual address of one `T`, as the guest passed it: unchecked, possibly null,
/// possibly pointing into the hypervisor. Only `copy_from_guest`/`copy_to_guest` (through
/// [`Hypervisor::read_handle`] / [`Hypervisor::write_handle`]) turn it into data.
pub struct GuestHandle<T: ?Sized> {
    addr: u64,
    _to: PhantomData<fn() -> T>,
}

impl<T: ?Sized> GuestHandle<T> {
    /// The guest pointer in a register.
    pub const fn new(addr: u64) -> Self {
        Self {
            addr,
            _to: PhantomData,
        }
    }

    /// The guest virtual address.
    pub const fn addr(self) -> u64 {
        self.addr
    }

    /// Whether the guest passed NULL (meaningful for optional arguments such as `pdone`).
    pub const fn is_null(self) -> bool {
        self.addr == 0
    }

    /// The same address seen as a pointer to `U` (after decoding the sub-operation).
    pub const fn cast<U: ?Sized>(self) -> GuestHandle<U> {
        GuestHandle::new(self.addr)
    }
}

// Not derived: a derive would require `T: Clone`.
impl<T: ?Sized> Clone for GuestHandle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for GuestHandle<T> {}

impl<T: ?Sized> PartialEq for GuestHandle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

impl<T: ?Sized> fmt::Debug for GuestHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestHandle({:#x})", self.addr)
    }
}

/// A guest array: `len` elements of `T` from `addr`, both as the guest passed them.
pub struct GuestArray<T: ?Sized> {
    addr: u64,
    len: u64,
    _of: PhantomData<fn() -> T>,
}

impl<T: ?Sized> GuestArray<T> {
    /// Address and element count from the registers.
    pub const fn new(addr: u64, len: u64) -> Self {
        Self {
            addr,
            len,
            _of: PhantomData,
        }
    }

    /// The guest virtual address of element 0.
    pub const fn addr(self) -> u64 {
        self.addr
    }

    /// The element count the guest claims (unbounded: limit the work you do per call).
    pub const fn len(self) -> u64 {
        self.len
    }

    /// Whether the count is 0.
    pub const fn is_empty(self) -> bool {
        self.len == 0
    }

    /// The same array seen as elements of `U` (after decoding the sub-operation).
    pub const fn cast<U: ?Sized>(self) -> GuestArray<U> {
        GuestArray::new(self.addr, self.len)
    }
}

impl<T> GuestArray<T> {
    /// Element `i`, if `i < len` and its address does not overflow.
    pub fn get(self, i: u64) -> Option<GuestHandle<T>> {
        if i >= self.len {
            return None;
        }
        let size = core::mem::size_of::<T>() as u64;
        let offset = i.checked_mul(size)?;
        Some(GuestHandle::new(self.addr.checked_add(offset)?))
    }
}

impl<T: ?Sized> Clone for GuestArray<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for GuestArray<T> {}

impl<T: ?Sized> PartialEq for GuestArray<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.addr, self.len) == (other.addr, other.len)
    }
}

impl<T: ?Sized> fmt::Debug for GuestArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestArray({:#x}, len {})", self.addr, self.len)
    }
}

/// Who is calling: the running domain (its slot and id), the vCPU that entered, and its
/// saved registers. Handlers read their arguments from the typed parameters, not from
/// `frame`; only `iret` (which loads a whole new register set) and `SHUTDOWN_suspend` (a
/// third argument in `rdx`) use it.
pub struct Call<'a> {
    /// Index of the calling domain in `Hypervisor::domains`.
    pub idx: usize,
    /// The calling domain.
    pub dom: DomId,
    /// The calling vCPU.
    pub vcpu: VcpuId,
    /// The caller's registers.
    pub frame: &'a mut GuestFrame,
}

/// Why a domain is crashed: one line for the console (`crashed: <reason>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashReason(pub heapless::String<160>);

impl CrashReason {
    /// Formats the reason (cut at 160 bytes).
    pub fn new(args: fmt::Arguments<'_>) -> Self {
        let mut w = Truncating(heapless::String::new());
        let _ = fmt::write(&mut w, args);
        CrashReason(w.0)
    }
}

impl fmt::Display for CrashReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A `fmt::Write` that keeps what fits.
struct Truncating(heapless::String<160>);

impl fmt::Write for Truncating {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// What a preempted vCPU does before it re-executes its continuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Let another vCPU run first.
    Yield,
    /// Wait for an event (`SCHEDOP_block` inside a multicall).
    Block,
    /// Wait for a polled port (`SCHEDOP_poll` inside a multicall).
    Poll,
}

/// What a hypercall handler asks the dispatcher to do with the calling vCPU. Every
/// handler returns one; none switches domains or ends its own domain itself, so the
/// dispatcher is the one place where a hypercall's effect on scheduling is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Put the value (or negative errno) in the caller's `rax` and resume it.
    Return(HcResult),
    /// Preempted (Xen's hypercall continuation): re-execute the same hypercall later with
    /// these five argument registers; `then` first yields or blocks. Inside a multicall
    /// the arguments go back into the entry instead.
    Continue {
        /// rdi, rsi, rdx, r10, r8 of the continuation.
        args: [u64; 5],
        /// What the vCPU does before it re-executes the call.
        then: Option<Pause>,
    },
    /// `rax = 0`, then let another runnable vCPU run first (`SCHEDOP_yield`).
    Yield,
    /// `rax = 0`, then wait until an event is pending for the vCPU (`SCHEDOP_block`).
    Block,
    /// `rax = 0`, then wait until a port the handler recorded in the vCPU's poll list is
    /// pending, an upcall is due, or the poll timer fires (`SCHEDOP_poll`).
    Poll,
    /// The domain shuts itself down with this code (Xen keeps a byte: a `SHUTDOWN_*`
    /// reason or any other value).
    Shutdown(u8),
    /// The domain broke a rule it cannot recover from: crash it.
    Crash(CrashReason),
    /// The handler loaded a complete new register set into `call.frame` (`iret`):
    /// resume it as it is.
    Resumed,
}

impl Outcome {
    /// A crash with a formatted reason.
    pub fn crash(args: fmt::Arguments<'_>) -> Self {
        Outcome::Crash(CrashReason::new(args))
    }
}

impl Outcome {
    /// One word for the trace line of an outcome other than `Return`.
    pub fn trace_word(&self) -> &'static str {
        match self {
            Outcome::Return(_) => "returned",
            Outcome::Continue { .. } => "continued",
            Outcome::Yield => "yielded",
            Outcome::Block => "blocked",
            Outcome::Poll => "polling",
            Outcome::Shutdown(_) => "shut down",
            Outcome::Crash(_) => "crashed",
            Outcome::Resumed => "resumed",
        }
    }
}

impl From<HcResult> for Outcome {
    fn from(r: HcResult) -> Self {
        Outcome::Return(r)
    }
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Reads the `T` behind `h` from the running domain `idx`.
    pub(crate) fn read_handle<T: FromBytes + IntoBytes>(
        &self,
        idx: usize,
        h: GuestHandle<T>,
    ) -> Result<T, Errno> {
        self.read_guest(idx, h.addr())
    }

    /// Writes `value` behind `h` in the running domain `idx`.
    pub(crate) fn write_handle<T: IntoBytes + zerocopy::Immutable>(
        &self,
        idx: usize,
        h: GuestHandle<T>,
        value: &T,
    ) -> Result<(), Errno> {
        self.write_guest(idx, h.addr(), value.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_elements_are_bounded_and_overflow_checked() {
        let a = GuestArray::<u64>::new(0x1000, 3);
        assert_eq!(a.get(0), Some(GuestHandle::new(0x1000)));
        assert_eq!(a.get(2), Some(GuestHandle::new(0x1010)));
        assert_eq!(a.get(3), None);
        let high = GuestArray::<u64>::new(u64::MAX - 8, u64::MAX);
        assert_eq!(high.get(1), Some(GuestHandle::new(u64::MAX)));
        assert_eq!(high.get(2), None, "address overflow");
        assert_eq!(
            GuestArray::<[u8; 16]>::new(0, u64::MAX).get(u64::MAX - 1),
            None
        );
    }

    #[test]
    fn cast_keeps_the_address() {
        let h = GuestHandle::<Untyped>::new(0xdead_b000);
        assert_eq!(h.cast::<u32>().addr(), 0xdead_b000);
        assert!(GuestHandle::<u32>::new(0).is_null());
        let a = GuestArray::<Untyped>::new(0x2000, 4).cast::<u32>();
        assert_eq!((a.addr(), a.len()), (0x2000, 4));
    }
}
