//! The console ring (`io/console.h`): one page shared between a guest and its console
//! backend.

use core::mem::offset_of;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{Ordering, fence};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of `in[]` (backend → guest).
pub const XENCONS_IN_SIZE: usize = 1024;
/// Size of `out[]` (guest → backend).
pub const XENCONS_OUT_SIZE: usize = 2048;
/// `connection`: the backend is connected.
pub const XENCONSOLE_CONNECTED: u8 = 0;
/// `connection`: the backend is disconnected.
pub const XENCONSOLE_DISCONNECTED: u8 = 1;

/// `struct xencons_interface` (3092 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XenconsInterface {
    /// Input bytes (backend writes).
    pub in_: [u8; XENCONS_IN_SIZE],
    /// Output bytes (guest writes).
    pub out: [u8; XENCONS_OUT_SIZE],
    /// Input consumer index (guest writes).
    pub in_cons: u32,
    /// Input producer index (backend writes).
    pub in_prod: u32,
    /// Output consumer index (backend writes).
    pub out_cons: u32,
    /// Output producer index (guest writes).
    pub out_prod: u32,
    /// `XENCONSOLE_CONNECTED` or `XENCONSOLE_DISCONNECTED`.
    pub connection: u8,
    /// Padding.
    pub _pad: [u8; 3],
}

/// Ring slot of a free-running `out[]` index.
pub const fn out_slot(idx: u32) -> usize {
    idx as usize & (XENCONS_OUT_SIZE - 1)
}
/// Ring slot of a free-running `in[]` index.
pub const fn in_slot(idx: u32) -> usize {
    idx as usize & (XENCONS_IN_SIZE - 1)
}

const_assert_eq!(core::mem::size_of::<XenconsInterface>(), 3092);
const_assert_eq!(offset_of!(XenconsInterface, out), 1024);
const_assert_eq!(offset_of!(XenconsInterface, in_cons), 3072);
const_assert_eq!(offset_of!(XenconsInterface, in_prod), 3076);
const_assert_eq!(offset_of!(XenconsInterface, out_cons), 3080);
const_assert_eq!(offset_of!(XenconsInterface, out_prod), 3084);
const_assert_eq!(offset_of!(XenconsInterface, connection), 3088);

/// How a ring writer tells the backend that new bytes are in the ring.
///
/// On a real guest this is `EVTCHNOP_send` on the console event channel
/// ([`EvtchnNotifier`]); tests pass a closure that plays the backend.
pub trait Notify {
    /// Called after `out_prod` was advanced.
    fn notify(&mut self);
}

impl<F: FnMut()> Notify for F {
    fn notify(&mut self) {
        self()
    }
}

/// Notifies through `event_channel_op(EVTCHNOP_send, port)`. Errors are ignored: a lost
/// kick only delays output until the backend polls.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub struct EvtchnNotifier(pub crate::EvtchnPort);

#[cfg(target_arch = "x86_64")]
impl Notify for EvtchnNotifier {
    fn notify(&mut self) {
        let _ = crate::hypercall::event_channel_send(self.0);
    }
}

/// The backend's indices make no sense (`out_prod - out_cons` exceeds the ring size), so
/// nothing more can be written safely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingCorrupt;

/// Writes guest output into the `out[]` half of a console ring page.
///
/// Every access to the shared page is volatile and ordered as Xen's console protocol
/// requires: read `out_cons`/`out_prod`, full barrier, copy bytes, write barrier, publish
/// `out_prod`, then notify the backend.
pub struct ConsoleRingWriter<N: Notify> {
    ring: *mut XenconsInterface,
    notifier: N,
}

// SAFETY: the writer only holds the address of the shared page; whoever moves it to another
// thread still has exclusive use of the producer side (the contract of `new`).
unsafe impl<N: Notify + Send> Send for ConsoleRingWriter<N> {}

impl<N: Notify> ConsoleRingWriter<N> {
    /// A writer for the ring at `ring`, kicking the backend with `notifier`.
    ///
    /// # Safety
    ///
    /// `ring` must point to a mapped, writable console ring page that stays valid for the
    /// writer's lifetime, and this writer must be the only producer of its `out[]` side
    /// (the backend may change `out_cons` concurrently; the rest of the page may be shared
    /// with anything that only touches the `in[]` side).
    pub unsafe fn new(ring: *mut XenconsInterface, notifier: N) -> Self {
        Self { ring, notifier }
    }

    /// The raw ring pointer.
    pub fn ring(&self) -> *mut XenconsInterface {
        self.ring
    }

    /// Free bytes in `out[]` now, and the producer index, or `RingCorrupt`.
    fn space(&self) -> Result<(usize, u32), RingCorrupt> {
        // SAFETY: `new`'s contract: `ring` is a valid mapped ring page. Only raw pointers
        // and volatile accesses are used, since the backend changes the page concurrently.
        let (cons, prod) = unsafe {
            (
                addr_of!((*self.ring).out_cons).read_volatile(),
                addr_of!((*self.ring).out_prod).read_volatile(),
            )
        };
        // Read the indices before looking at (or overwriting) the bytes they cover.
        fence(Ordering::SeqCst);
        let used = prod.wrapping_sub(cons) as usize;
        if used > XENCONS_OUT_SIZE {
            return Err(RingCorrupt);
        }
        Ok((XENCONS_OUT_SIZE - used, prod))
    }

    /// Copies as much of `bytes` as fits, publishes it and notifies the backend if anything
    /// was written. Returns the number of bytes written (0 when the ring is full).
    pub fn write(&mut self, bytes: &[u8]) -> Result<usize, RingCorrupt> {
        let (free, mut prod) = self.space()?;
        let n = free.min(bytes.len());
        if n == 0 {
            return Ok(0);
        }
        for &b in &bytes[..n] {
            let slot = out_slot(prod);
            // SAFETY: `slot < XENCONS_OUT_SIZE`, so the byte lies inside `out[]` of the
            // valid ring page (`new`'s contract).
            unsafe {
                addr_of_mut!((*self.ring).out)
                    .cast::<u8>()
                    .add(slot)
                    .write_volatile(b)
            };
            prod = prod.wrapping_add(1);
        }
        // The bytes must be visible before the index that publishes them.
        fence(Ordering::Release);
        // SAFETY: as above; this writer is the only producer.
        unsafe { addr_of_mut!((*self.ring).out_prod).write_volatile(prod) };
        self.notifier.notify();
        Ok(n)
    }

    /// Writes all of `bytes`, calling `wait` each time the ring is full (e.g. to yield to
    /// the backend). Returns early only if the ring is corrupt.
    pub fn write_all_with(
        &mut self,
        mut bytes: &[u8],
        mut wait: impl FnMut(),
    ) -> Result<(), RingCorrupt> {
        while !bytes.is_empty() {
            let n = self.write(bytes)?;
            if n == 0 {
                wait();
            }
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Writes all of `bytes`, yielding the CPU (`SCHEDOP_yield`) while the ring is full.
    #[cfg(target_arch = "x86_64")]
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), RingCorrupt> {
        self.write_all_with(bytes, || {
            let _ = crate::hypercall::sched_yield();
        })
    }
}

impl<N: Notify> core::fmt::Write for ConsoleRingWriter<N> {
    /// Blocks (yielding) while the ring is full; fails only on a corrupt ring.
    #[cfg(target_arch = "x86_64")]
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_all(s.as_bytes()).map_err(|_| core::fmt::Error)
    }

    /// Without a hypercall to yield with, fails when the ring is full.
    #[cfg(not(target_arch = "x86_64"))]
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_all_with(s.as_bytes(), || {})
            .map_err(|_| core::fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::cell::Cell;
    use std::boxed::Box;
    use std::vec::Vec;
    use zerocopy::FromZeros;

    /// A ring page plus a fake backend that drains `out[]` the way a console daemon does.
    struct Fake {
        page: Box<XenconsInterface>,
    }

    impl Fake {
        fn new(start_index: u32) -> Self {
            let mut page = Box::new(XenconsInterface::new_zeroed());
            page.out_cons = start_index;
            page.out_prod = start_index;
            Self { page }
        }
        fn ptr(&mut self) -> *mut XenconsInterface {
            &mut *self.page
        }
    }

    /// Consumes everything between `out_cons` and `out_prod` of the page at `ring`.
    fn drain(ring: *mut XenconsInterface, sink: &mut Vec<u8>) {
        // SAFETY: `ring` points to the test's live page; the test is single-threaded.
        unsafe {
            let prod = addr_of!((*ring).out_prod).read_volatile();
            let mut cons = addr_of!((*ring).out_cons).read_volatile();
            while cons != prod {
                sink.push((*ring).out[out_slot(cons)]);
                cons = cons.wrapping_add(1);
            }
            addr_of_mut!((*ring).out_cons).write_volatile(cons);
        }
    }

    #[test]
    fn writes_publish_and_notify() {
        let mut fake = Fake::new(0);
        let kicks = Cell::new(0);
        // SAFETY: the page outlives the writer, which is its only producer.
        let mut w = unsafe { ConsoleRingWriter::new(fake.ptr(), || kicks.set(kicks.get() + 1)) };
        assert_eq!(w.write(b"hello\n"), Ok(6));
        assert_eq!(kicks.get(), 1);
        assert_eq!(w.write(b""), Ok(0));
        assert_eq!(kicks.get(), 1, "no kick without new bytes");
        assert_eq!(fake.page.out_prod, 6);
        assert_eq!(&fake.page.out[..6], b"hello\n");
    }

    #[test]
    fn full_ring_takes_only_what_fits() {
        let mut fake = Fake::new(10);
        // SAFETY: as above.
        let mut w = unsafe { ConsoleRingWriter::new(fake.ptr(), || {}) };
        let big = [b'x'; XENCONS_OUT_SIZE + 100];
        assert_eq!(w.write(&big), Ok(XENCONS_OUT_SIZE));
        assert_eq!(w.write(b"more"), Ok(0));
        assert_eq!(fake.page.out_prod.wrapping_sub(fake.page.out_cons), 2048);
    }

    #[test]
    fn indices_wrap_around_u32() {
        // Start just below u32::MAX so the free-running indices overflow mid-message and
        // the slot computation must still place bytes contiguously modulo the ring.
        let start = u32::MAX - 5;
        let mut fake = Fake::new(start);
        let ring = fake.ptr();
        let mut got = Vec::new();
        let waits = Cell::new(0);
        // SAFETY: as above.
        let mut w = unsafe { ConsoleRingWriter::new(ring, || {}) };
        let msg: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        w.write_all_with(&msg, || {
            waits.set(waits.get() + 1);
            drain(ring, &mut got);
        })
        .unwrap();
        drain(ring, &mut got);
        assert_eq!(got, msg);
        assert!(waits.get() >= 2, "5000 bytes need at least two drains");
        assert_eq!(fake.page.out_prod, start.wrapping_add(5000));
        assert!(fake.page.out_prod < start, "the index really wrapped");
    }

    #[test]
    fn corrupt_backend_indices_are_refused() {
        let mut fake = Fake::new(0);
        fake.page.out_cons = 100; // consumer ahead of producer: prod - cons = huge
        let before = fake.page.out;
        // SAFETY: as above.
        let mut w = unsafe { ConsoleRingWriter::new(fake.ptr(), || panic!("no kick")) };
        assert_eq!(w.write(b"abc"), Err(RingCorrupt));
        assert_eq!(w.write_all_with(b"abc", || {}), Err(RingCorrupt));
        assert_eq!(fake.page.out, before, "nothing written");
        assert_eq!(fake.page.out_prod, 0);
    }

    #[test]
    fn fmt_write_goes_into_the_ring() {
        use core::fmt::Write;
        let mut fake = Fake::new(7);
        // SAFETY: as above.
        let mut w = unsafe { ConsoleRingWriter::new(fake.ptr(), || {}) };
        write!(w, "n={}", 42).unwrap();
        let mut got = Vec::new();
        drain(fake.ptr(), &mut got);
        assert_eq!(got, b"n=42");
    }
}
