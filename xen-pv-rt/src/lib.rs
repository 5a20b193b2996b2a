//! A minimal runtime for Xen x86_64 PV guest kernels, the companion of the `xen-pv-abi`
//! crate (as `cortex-m-rt` is of `cortex-m`).
//!
//! `xen-pv-abi` is the ABI: types, numbers and hypercall wrappers, usable anywhere — in a
//! kernel, in host tests, in a Linux process. This crate is what only a *kernel* wants and
//! what would get in the way everywhere else: the `_start` symbol and boot stack, a
//! `#[panic_handler]`, the linker script and the Xen ELF notes. Keeping them apart lets a
//! program link `xen-pv-abi` without inheriting an entry point or a panic handler.
//!
//! It provides:
//! * [`entry!`]: declares the kernel's `fn main(&'static StartInfo) -> !` and emits the
//!   Xen notes (with defaults you can override); the runtime's `_start` sets up a stack,
//!   copies start_info, checks its magic and calls `main`;
//! * the linker script `xen-pv-rt.ld` (written by the build script into the link search
//!   path), linking the kernel at [`VIRT_BASE`];
//! * [`println!`] / [`print!`] to the domain's console (the ring of a domU, `console_io`
//!   for dom0; one event-channel kick per line) and [`io_println!`] to `console_io`;
//! * [`poweroff`], [`shutdown`], [`start_info`], and a panic handler that prints the panic
//!   and shuts the domain down as crashed (feature `panic-handler`, on by default);
//! * [`events`]: 2-level event delivery (shared_info mapping, upcall, [`events::wait_until`]).
//!
//! # Setup
//!
//! Build for `x86_64-unknown-none` and link with the runtime's script, as a fixed-address
//! (non-PIE) executable — the one line of `.cargo/config.toml` in the kernel's crate:
//!
//! ```toml
//! [target.x86_64-unknown-none]
//! rustflags = ["-C", "link-arg=-Txen-pv-rt.ld", "-C", "relocation-model=static"]
//! ```
//!
//! Forgetting the script fails the link with an undefined symbol named
//! `XEN_PV_RT_LINKER_SCRIPT_MISSING: add -C link-arg=-Txen-pv-rt.ld to rustflags`;
//! forgetting `relocation-model=static` fails it with a message naming that flag.
//!
//! # A kernel
//!
//! (Shown as text: a doctest cannot be `#![no_main]`; `examples/minimal` is this kernel,
//! built and booted by the repository's CI.)
//!
//! ```text
//! #![no_std]
//! #![no_main]
//!
//! use xen_pv_rt::{StartInfo, println};
//!
//! xen_pv_rt::entry!(main);
//!
//! fn main(si: &'static StartInfo) -> ! {
//!     println!("hello from a kernel of {} pages", si.nr_pages);
//!     xen_pv_rt::poweroff()
//! }
//! ```
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(target_os = "none")]
#[macro_use]
mod script_symbol;
mod virt_base;

pub mod console;
#[cfg(target_os = "none")]
pub mod events;
#[cfg(target_os = "none")]
mod rt;

#[cfg(target_os = "none")]
pub use console::console;
#[cfg(target_os = "none")]
pub use rt::{_start, poweroff, shutdown, start_info};

pub use virt_base::VIRT_BASE;
pub use xen_pv_abi::sched::ShutdownReason;
pub use xen_pv_abi::start_info::StartInfo;

/// The name of the linker script the build script provides (`-C link-arg=-T` + this).
pub const LINKER_SCRIPT: &str = "xen-pv-rt.ld";

#[doc(hidden)]
pub use xen_pv_abi as __xen_pv_abi;

/// Declares the kernel's main function and its Xen ELF notes.
///
/// `xen_pv_rt::entry!(main)` with `fn main(&'static xen_pv_rt::StartInfo) -> !`. The
/// runtime calls `main` once start_info is copied and checked.
///
/// Notes emitted by default: `GUEST_OS` = the crate's name, `GUEST_VERSION` = its version,
/// `XEN_VERSION` = `"xen-3.0"`, `LOADER` = `"generic"`, `VIRT_BASE` = [`VIRT_BASE`],
/// `PADDR_OFFSET` = 0; the entry point is the ELF entry, the runtime's `_start` (no `ENTRY`
/// note, whose absolute address would turn a forgotten `relocation-model=static` into an
/// obscure "recompile with -fPIC" link error). Options after the function override or add
/// notes:
///
/// ```text
/// xen_pv_rt::entry!(main, guest_os: "my-os", guest_version: "2.1",
///                   supported_features: 1 << 11, features: "!writable_page_tables");
/// ```
///
/// * `guest_os`, `guest_version`: string literals replacing the defaults;
/// * `features`, `pae_mode` (string literals), `supported_features` (a `u32` bitmap: a
///   kernel that lists it must include bit 11, `XENFEAT_dom0`, to boot as dom0),
///   `hypercall_page` (a static declared with `xen_pv_abi::xen_hypercall_page!`),
///   `init_p2m`, `mod_start_pfn`, `suspend_cancel`: added notes;
/// * `manual_notes`: emit no notes at all (declare them yourself with
///   `xen_pv_abi::xen_elf_notes!`, using [`VIRT_BASE`] and [`_start`](crate::_start)).
///
/// `xen_version`, `loader`, `virt_base`, `paddr_offset` and `entry` belong to the runtime
/// and its linker script, and are refused.
#[macro_export]
macro_rules! entry {
    ($main:path, manual_notes $(,)?) => {
        $crate::__entry_main!($main);
    };
    ($main:path $(, $($opts:tt)*)?) => {
        $crate::__entry_main!($main);
        $crate::__entry_notes!(
            [::core::env!("CARGO_PKG_NAME")] [::core::env!("CARGO_PKG_VERSION")] []
            $($($opts)*)?
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __entry_main {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn __xen_pv_rt_main(start_info: &'static $crate::StartInfo) -> ! {
            let main: fn(&'static $crate::StartInfo) -> ! = $main;
            main(start_info)
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __entry_notes {
    // Overridden defaults.
    ([$($os:tt)*] [$($ver:tt)*] [$($extra:tt)*] guest_os: $v:literal $(, $($rest:tt)*)?) => {
        $crate::__entry_notes!([$v] [$($ver)*] [$($extra)*] $($($rest)*)?);
    };
    ([$($os:tt)*] [$($ver:tt)*] [$($extra:tt)*] guest_version: $v:literal $(, $($rest:tt)*)?) => {
        $crate::__entry_notes!([$($os)*] [$v] [$($extra)*] $($($rest)*)?);
    };
    // Added notes, passed on to xen_pv_abi::xen_elf_notes!.
    ([$($os:tt)*] [$($ver:tt)*] [$($extra:tt)*] $key:ident : $v:literal $(, $($rest:tt)*)?) => {
        $crate::__entry_check_key!($key);
        $crate::__entry_notes!([$($os)*] [$($ver)*] [$($extra)* $key: $v,] $($($rest)*)?);
    };
    ([$($os:tt)*] [$($ver:tt)*] [$($extra:tt)*] $key:ident : $v:expr $(, $($rest:tt)*)?) => {
        $crate::__entry_check_key!($key);
        $crate::__entry_notes!([$($os)*] [$($ver)*] [$($extra)* $key: $v,] $($($rest)*)?);
    };
    ([$($os:tt)*] [$($ver:tt)*] [$($extra:tt)*]) => {
        $crate::__str_note!(GUEST_OS, $($os)*);
        $crate::__str_note!(GUEST_VERSION, $($ver)*);
        $crate::__xen_pv_abi::xen_elf_notes! {
            xen_version: "xen-3.0",
            loader: "generic",
            virt_base: $crate::VIRT_BASE,
            paddr_offset: 0,
            $($extra)*
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __entry_check_key {
    (xen_version) => {
        $crate::__entry_refuse!(xen_version);
    };
    (loader) => {
        $crate::__entry_refuse!(loader);
    };
    (virt_base) => {
        $crate::__entry_refuse!(virt_base);
    };
    (paddr_offset) => {
        $crate::__entry_refuse!(paddr_offset);
    };
    (entry) => {
        $crate::__entry_refuse!(entry);
    };
    ($other:ident) => {};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __entry_refuse {
    ($key:ident) => {
        ::core::compile_error!(::core::concat!(
            "xen_pv_rt::entry!: `",
            ::core::stringify!($key),
            "` is set by the runtime (its linker script and _start); use `manual_notes` to declare every note yourself"
        ));
    };
}

/// A string note whose text may be a macro call (`env!`), which xen_pv_abi's note macro
/// (taking a literal) cannot accept.
#[doc(hidden)]
#[macro_export]
macro_rules! __str_note {
    ($ty:ident, $($text:tt)*) => {
        ::core::arch::global_asm!(
            ".pushsection .note.Xen,\"a\",@note",
            ".balign 4",
            ".long 4",
            ".long 2f - 1f",
            ".long {ty}",
            ".asciz \"Xen\"",
            ::core::concat!("1: .asciz \"", $($text)*, "\""),
            "2: .balign 4",
            ".popsection",
            ty = const $crate::__xen_pv_abi::elfnote::$ty,
            options(att_syntax)
        );
    };
}
