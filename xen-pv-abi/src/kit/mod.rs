//! Driver kit: owned, drop-safe building blocks for split drivers.
//!
//! | piece | what it owns | released by |
//! |---|---|---|
//! | [`GrantTable`] / [`Grant`] | an entry of this domain's v1 grant table | `Drop` (deferred while the peer still uses it) or [`Grant::end`] |
//! | [`map_grant`] / [`Mapping`] | a foreign frame mapped at a virtual address | `Drop` or [`Mapping::unmap`] |
//! | [`CopyBatch`] | up to `N` `GNTTABOP_copy` operations | — (a plain value) |
//! | [`XenbusClient`] | a connection over the xenstore ring | — |
//! | [`FrontRing`] / [`BackRing`] | one end of an `io/ring.h` request/response ring | — (the page belongs to the caller) |
//! | [`DeviceState`] | a split driver's xenbus handshake state (pure logic) | — |
//! | [`Blkfront`](blkfront::Blkfront) | a PV disk's ring end, data grants and requests in flight ([`blkfront`]) | `Drop` (data grants ended or deferred) |
//! | [`Netfront`](netfront::Netfront) | a vif's tx and rx ring ends, buffer grants and frames in flight ([`netfront`]) | `Drop` (buffer grants ended or deferred) |
//!
//! Everything that issues hypercalls takes a [`Transport`](crate::transport::Transport),
//! so the same driver code runs in a PV kernel ([`Native`](crate::transport::Native)),
//! in a Linux process (`Privcmd`) and in host tests
//! ([`Fake`](crate::transport::fake::Fake)). Nothing here allocates.
//!
//! A frontend's handshake, sketched (the grant table, the ring page and the store
//! connection come from the kernel's start-of-day code):
//!
//! ```no_run
//! use xen_pv_abi::kit::{GrantTable, TxId, XenbusClient, RawStoreRing};
//! use xen_pv_abi::xenstore::XenbusState;
//! use xen_pv_abi::{DomId, Errno, Mfn};
//! # fn kernel_objects() -> (&'static GrantTable<512>, &'static mut XenbusClient<RawStoreRing, fn(), fn() -> Result<(), Errno>>, Mfn) { unimplemented!() }
//! let (table, store, ring_frame) = kernel_objects();
//! let ring = table.grant_access(DomId(0), ring_frame, false)?;
//! let dev = "device/vif/0";
//! loop {
//!     let tx = store.transaction_start()?;
//!     store.write(tx, "device/vif/0/ring-ref", itoa(ring.gref().0).as_bytes())?;
//!     store.write(tx, "device/vif/0/state", XenbusState::Initialised.as_str().as_bytes())?;
//!     match store.transaction_end(tx, true) {
//!         Err(Errno::EAGAIN) => continue, // a concurrent change: redo the transaction
//!         other => break other?,
//!     }
//! }
//! store.watch("backend/vif/1/0/state", "be")?;
//! # let _ = (dev, TxId::NONE);
//! # fn itoa(_: u32) -> &'static str { "8" }
//! # Ok::<(), Errno>(())
//! ```

pub mod blkfront;
pub mod copy;
pub mod device;
mod frontend;
pub mod grants;
pub mod mapping;
pub mod netfront;
pub mod ring;
pub mod xenbus;

#[cfg(test)]
mod test_support;

pub use copy::{CopyBatch, CopyPtr, CopyStatuses};
pub use device::{DeviceState, Role, Transition, Work};
pub use grants::{Grant, GrantTable};
pub use mapping::{Mapping, map_grant};
pub use ring::{BackRing, FrontRing, PageBuffer, RawRingPage, RingError, RingMemory, RingProtocol};
pub use xenbus::{
    Directory, RawStoreRing, StoreRing, TxId, Wait, WatchEvent, XenbusClient, errno_from_xs_error,
};

use crate::errno::Errno;

/// Why a grant operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The hypercall failed as a whole, or a check before it did (`EINVAL` for a bad
    /// argument, `ENOSPC` for a full batch...).
    Errno(Errno),
    /// The hypervisor ran the operation and refused it with this `GNTST_*` status
    /// (see [`crate::grant_table`]).
    Status(i16),
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Self {
        Error::Errno(e)
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Errno(e) => write!(f, "{e}"),
            Error::Status(s) => write!(f, "grant status {s}"),
        }
    }
}
