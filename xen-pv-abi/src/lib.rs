#![doc = include_str!("../README.md")]
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(all(feature = "privcmd", target_os = "linux"))]
extern crate std;

pub mod blkif;
pub mod console;
pub mod domctl;
pub mod elfnote;
pub mod errno;
pub mod event_channel;
pub mod events;
#[cfg(target_arch = "x86_64")]
pub mod evtchn;
pub mod generated;
pub mod grant_table;
pub mod hvm;
#[cfg(target_arch = "x86_64")]
pub mod hypercall;
pub mod ids;
pub mod kit;
pub mod layout;
pub mod mmu;
pub mod modules;
pub mod netif;
pub mod nr;
#[cfg(all(feature = "privcmd", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "privcmd", target_os = "linux"))))]
pub mod privcmd;
#[cfg(target_arch = "x86_64")]
pub mod raw;
pub mod sched;
pub mod shared_info;
pub mod start_info;
pub mod time;
pub mod transport;
pub mod traps;
pub mod vcpu;
pub mod version;
pub mod xenstore;

// Seed mutation and the run loop of the parser fuzz tests (shared with the other crates).
#[cfg(test)]
#[path = "../../fuzz-seeds/mutate.rs"]
mod mutate;

pub use errno::Errno;
pub use ids::{DomId, EvtchnPort, GrantRef, Mfn, Pfn, VcpuId};

/// The Xen public interface version this crate follows (`__XEN_INTERFACE_VERSION__`
/// of Xen 4.17: `0x00040011`). Layouts and numbers match Xen's public headers at that
/// version; the PV ABI they describe is stable, so kernels built on this crate run on
/// older and newer Xen too.
pub const XEN_INTERFACE_VERSION: u32 = 0x0004_0011;

/// This crate's own ABI revision, separate from its semver: raised whenever a `#[repr(C)]`
/// layout, a number or a wire format of this crate changes (a fix against Xen's headers
/// or a new structure), never for a Rust-only API change. Compare it when two components
/// built with different crate versions share memory.
pub const ABI_REVISION: u32 = 1;
