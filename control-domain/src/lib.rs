//! The control domain's services, portable and host-tested: xenstored (the xenstore
//! protocol, its tree, permissions, watches, transactions and quotas) and the console
//! backend (line prefixes, filtering, input focus), and the toolstack's device directories
//! ([`devices`]). The kernel that runs them on the
//! hypervisor is `src/main.rs`.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod blkback;
pub mod cmdline;
pub mod console;
pub mod devices;
pub mod modules;
pub mod netback;
pub mod vif;
pub mod vswitch;
pub mod xenstored;

/// Seed mutation and the run loop of the parser fuzz tests (shared with the other crates).
#[cfg(test)]
#[path = "../../fuzz-seeds/mutate.rs"]
pub(crate) mod mutate;
#[cfg(test)]
mod parser_fuzz_tests;
