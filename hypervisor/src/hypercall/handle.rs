//! The types the generated [`super::generated::Hypercalls`] trait speaks: typed guest
//! pointers, the calling context and what a handler asks the dispatcher to do.

use super::HcResult;
use crate::hv::Hypervisor;
use crate::platform::{GuestFrame, MachineMemory, Platform, Resume};
use core::fmt;
use core::marker::PhantomData;
use guest_abi::Errno;
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

/// Who is calling: the running domain's index and its saved registers. A handler that
/// switches domains (yield, shutdown) loads the next domain's registers into `frame` and
/// returns [`Flow::Resume`].
pub struct Call<'a> {
    /// Index of the calling domain in `Hypervisor::domains`.
    pub idx: usize,
    /// The caller's registers (`rax` is written by the dispatcher for [`Flow::Return`]).
    pub frame: &'a mut GuestFrame,
}

/// What a hypercall method asks the dispatcher to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Put the value (or negative errno) in the caller's `rax` and resume it.
    Return(HcResult),
    /// The handler already arranged `call.frame` (e.g. switched to another domain):
    /// resume with this.
    Resume(Resume),
}

impl From<HcResult> for Flow {
    fn from(r: HcResult) -> Self {
        Flow::Return(r)
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
