//! A Xen-compatible x86_64 paravirtualization hypervisor, built as a library.
//!
//! * The portable core (every module except `arch`) holds domains, memory accounting,
//!   the domain builder, hypercall handlers and the console backend. It has no inline
//!   assembly and no hardware access, and is unit-tested on the host.
//! * `arch::x86_64` (only on `target_os = "none"`) boots the machine, owns paging, the
//!   GDT/IDT/TSS, the `syscall` and exception entry paths, the serial port and timers.
//! * `src/main.rs` is the thin bare-metal binary that ties them together.
//!
//! See `docs/ARCHITECTURE.md` for the picture.
#![cfg_attr(not(test), no_std)]
// The portable core has no `unsafe`: only the arch layer touches the machine.
#![deny(unsafe_code)]

extern crate alloc;

pub mod bundle;
pub mod console;
pub mod control;
pub mod dlog;
pub mod domain;
pub mod evtchn;
pub mod grant;
pub mod hv;
pub mod hypercall;
pub mod mmu;
pub mod platform;
pub mod sched;
pub mod sort;
pub mod tick;
pub mod time;
pub mod traps;
pub mod work;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
pub(crate) mod parser_fuzz_tests;
#[cfg(test)]
pub mod testutil;

#[cfg(target_os = "none")]
#[allow(unsafe_code)]
pub mod arch;
