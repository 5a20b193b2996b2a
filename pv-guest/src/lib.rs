//! A tiny runtime for 64-bit PV guest kernels, shared by `pv-guest` and the test guests.
//!
//! It provides the entry point `_start` (boot stack, then Rust), a panic handler that
//! reports and shuts the domain down as crashed, console printing (`println!` to the
//! console ring for a domU or `console_io` for dom0, `io_println!` always to `console_io`),
//! and the linker script `pv-guest.ld` (see `build.rs`).
//!
//! A guest binary supplies its Xen notes (`guest_abi::xen_elf_notes!`) and its main
//! function through [`entry!`]:
//!
//! ```ignore
//! guest_abi::xen_elf_notes! {
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

pub mod cmdline;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod events;
#[cfg(target_os = "none")]
pub mod events_demo;
#[cfg(target_os = "none")]
pub mod paging;
#[cfg(target_os = "none")]
mod rt;
#[cfg(target_os = "none")]
pub mod usermode;

#[cfg(target_os = "none")]
pub use rt::{_start, poweroff, shutdown, start_info};

pub use guest_abi::start_info::StartInfo;

/// Where the guest images are linked and pseudo-physical page 0 is mapped (the
/// `VIRT_BASE` note). Must match `pv-guest.ld`.
pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;

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
/// `pv_guest::entry!(main)` with `fn main(&'static pv_guest::StartInfo) -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn __pv_guest_main(start_info: &'static $crate::StartInfo) -> ! {
            let main: fn(&'static $crate::StartInfo) -> ! = $main;
            main(start_info)
        }
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
