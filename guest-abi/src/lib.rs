//! The Xen x86_64 PV guest ABI, as a `no_std` crate for ported guest kernels and PV
//! driver authors.
//!
//! This crate is the *contract* between a guest and a Xen-compatible hypervisor: numbers,
//! layouts and the small amount of code needed to use them (hypercall instructions, ring
//! writers, ELF notes). It contains no hypervisor internals and works on real Xen as well
//! as on this project's hypervisor.
//!
//! Every `#[repr(C)]` structure carries compile-time size and offset assertions that match
//! the Xen public headers (see `docs/` in the repository for the sources).
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod console;
pub mod elfnote;
pub mod errno;
pub mod event_channel;
pub mod events;
#[cfg(target_arch = "x86_64")]
pub mod evtchn;
pub mod generated;
pub mod grant_table;
#[cfg(target_arch = "x86_64")]
pub mod hypercall;
pub mod ids;
pub mod layout;
pub mod mmu;
pub mod nr;
#[cfg(target_arch = "x86_64")]
pub mod raw;
pub mod sched;
pub mod shared_info;
pub mod start_info;
pub mod time;
pub mod traps;
pub mod vcpu;
pub mod version;
pub mod xenstore;

pub use errno::Errno;
pub use ids::{DomId, EvtchnPort, GrantRef, Mfn, Pfn, VcpuId};
