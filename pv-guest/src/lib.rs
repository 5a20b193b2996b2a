//! The demo PV kernel's library: page tables of its own, traps and a user-mode task, event
//! channels (2-level and FIFO), a xenstore connection (`xenbus`), the split-driver
//! handshake demo (`split_demo`, its pure parts in [`split`]) and command-line parsing,
//! shared by `pv-guest` and the test guests.
//!
//! The runtime (entry point, boot stack, start_info, console printing, panic handler and
//! linker script) is the `xen-pv-rt` crate; it is re-exported here under the names the
//! test guests use (`pv_guest::entry!`, `pv_guest::println!`, `pv_guest::_start`,
//! `pv_guest::VIRT_BASE`...). `pv-guest.ld` includes the runtime's `xen-pv-rt.ld`.
//!
//! A guest binary supplies its Xen notes (`xen_pv_abi::xen_elf_notes!`) and its main
//! function through [`entry!`]:
//!
//! ```ignore
//! xen_pv_abi::xen_elf_notes! {
//!     guest_os: "my-guest", xen_version: "xen-3.0", loader: "generic",
//!     virt_base: pv_guest::VIRT_BASE, paddr_offset: 0, entry: pv_guest::_start,
//! }
//! pv_guest::entry!(main);
//! fn main(start_info: &'static pv_guest::StartInfo) -> ! {
//!     pv_guest::println!("hello");
//!     pv_guest::poweroff()
//! }
//! ```
//!
//! Everything that executes hypercalls exists only for `target_os = "none"`; on the host the
//! crate is inert apart from the pure helpers (command-line parsing), which are unit-tested.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(test)]
extern crate std;

#[cfg(target_os = "none")]
pub mod blk_demo;
pub mod cmdline;
#[cfg(target_os = "none")]
pub mod events;
#[cfg(target_os = "none")]
pub mod events_demo;
#[cfg(target_os = "none")]
pub mod front;
pub mod net_args;
#[cfg(target_os = "none")]
pub mod net_demo;
#[cfg(target_os = "none")]
pub mod paging;
pub mod split;
#[cfg(target_os = "none")]
pub mod split_demo;
#[cfg(target_os = "none")]
pub mod usermode;
#[cfg(target_os = "none")]
pub mod xenbus;

#[cfg(target_os = "none")]
pub use xen_pv_rt::{_start, console, poweroff, shutdown, start_info};
pub use xen_pv_rt::{StartInfo, VIRT_BASE, io_println, print, println};

#[doc(hidden)]
pub use xen_pv_rt as __rt;

/// A byte string as `&str` for printing: up to the first invalid UTF-8 byte.
pub fn bytes_str(bytes: &[u8]) -> &str {
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            // `valid_up_to` is a char boundary, so this cannot fail.
            core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("")
        }
    }
}

/// Declares the guest's main function, called by the runtime once start_info is read:
/// `pv_guest::entry!(main)` with `fn main(&'static pv_guest::StartInfo) -> !`. Unlike
/// `xen_pv_rt::entry!`, it emits no Xen notes: the guests declare their own.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::__rt::entry!($main, manual_notes);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_str_stops_at_invalid_utf8() {
        assert_eq!(bytes_str(b"xen-3.0-x86_64"), "xen-3.0-x86_64");
        assert_eq!(bytes_str(b"ab\xffcd"), "ab");
        assert_eq!(bytes_str(b""), "");
    }
}
