//! Domains: building them from a kernel image, their run-time state.

pub mod builder;
pub mod elfnotes;
pub mod runtime;
