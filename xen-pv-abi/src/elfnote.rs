//! Xen ELF note types (`xen/include/public/elfnote.h`).
#![allow(missing_docs)]

pub const INFO: u32 = 0;
pub const ENTRY: u32 = 1;
pub const HYPERCALL_PAGE: u32 = 2;
pub const VIRT_BASE: u32 = 3;
pub const PADDR_OFFSET: u32 = 4;
pub const XEN_VERSION: u32 = 5;
pub const GUEST_OS: u32 = 6;
pub const GUEST_VERSION: u32 = 7;
pub const LOADER: u32 = 8;
pub const PAE_MODE: u32 = 9;
pub const FEATURES: u32 = 10;
pub const BSD_SYMTAB: u32 = 11;
pub const HV_START_LOW: u32 = 12;
pub const L1_MFN_VALID: u32 = 13;
pub const SUSPEND_CANCEL: u32 = 14;
pub const INIT_P2M: u32 = 15;
pub const MOD_START_PFN: u32 = 16;
pub const SUPPORTED_FEATURES: u32 = 17;
pub const PHYS32_ENTRY: u32 = 18;
pub const PHYS32_RELOC: u32 = 19;

/// The note name of every Xen note.
pub const XEN_NOTE_NAME: &[u8] = b"Xen";

/// Identity on `u64`: lets an untyped integer literal in a note macro be typed as `u64`
/// (so `0xffff_ffff_8000_0000` does not default to `i32`).
#[doc(hidden)]
pub const fn __u64(v: u64) -> u64 {
    v
}

/// Identity on `u32`, for 4-byte numeric notes.
#[doc(hidden)]
pub const fn __u32(v: u32) -> u32 {
    v
}

/// Emits one Xen ELF note into the `.note.Xen` section.
///
/// * `xen_elf_note!(str TYPE, "text")`: NUL-terminated string (no `"`, `\` or braces);
/// * `xen_elf_note!(u64 TYPE, expr)` / `xen_elf_note!(u32 TYPE, expr)`: little-endian number
///   (any constant expression);
/// * `xen_elf_note!(sym TYPE, path)`: 8-byte address of a function or static (a
///   `#[unsafe(naked)]` entry point, an `extern` static declared by
///   [`crate::xen_hypercall_page!`]...).
///
/// `TYPE` is a constant of [`crate::elfnote`] (e.g. `$crate::elfnote::ENTRY`) or any `u32`
/// constant expression. Notes are 4-byte aligned, named `"Xen"`, as Xen's loader and QEMU's
/// want. The linker script must keep `.note.Xen` (`KEEP`) and should give it a `PT_NOTE`.
#[macro_export]
macro_rules! xen_elf_note {
    (str $ty:expr, $text:literal) => {
        ::core::arch::global_asm!(
            ".pushsection .note.Xen,\"a\",@note",
            ".balign 4",
            ".long 4",
            ".long 2f - 1f",
            ".long {ty}",
            ".asciz \"Xen\"",
            concat!("1: .asciz \"", $text, "\""),
            "2: .balign 4",
            ".popsection",
            ty = const $crate::elfnote::__u32($ty),
            options(att_syntax)
        );
    };
    (u64 $ty:expr, $value:expr) => {
        ::core::arch::global_asm!(
            ".pushsection .note.Xen,\"a\",@note",
            ".balign 4",
            ".long 4",
            ".long 8",
            ".long {ty}",
            ".asciz \"Xen\"",
            ".quad {value}",
            ".popsection",
            ty = const $crate::elfnote::__u32($ty),
            value = const $crate::elfnote::__u64($value),
            options(att_syntax)
        );
    };
    (u32 $ty:expr, $value:expr) => {
        ::core::arch::global_asm!(
            ".pushsection .note.Xen,\"a\",@note",
            ".balign 4",
            ".long 4",
            ".long 4",
            ".long {ty}",
            ".asciz \"Xen\"",
            ".long {value}",
            ".popsection",
            ty = const $crate::elfnote::__u32($ty),
            value = const $crate::elfnote::__u32($value),
            options(att_syntax)
        );
    };
    (sym $ty:expr, $symbol:path) => {
        ::core::arch::global_asm!(
            ".pushsection .note.Xen,\"a\",@note",
            ".balign 4",
            ".long 4",
            ".long 8",
            ".long {ty}",
            ".asciz \"Xen\"",
            ".quad {symbol}",
            ".popsection",
            ty = const $crate::elfnote::__u32($ty),
            symbol = sym $symbol,
            options(att_syntax)
        );
    };
}

/// Declares all Xen ELF notes of a guest kernel in one place.
///
/// ```text
/// xen_pv_abi::xen_hypercall_page!(hypercall_page);
/// xen_pv_abi::xen_elf_notes! {
///     guest_os: "pv-guest",
///     guest_version: "0.1",
///     xen_version: "xen-3.0",
///     loader: "generic",
///     virt_base: 0xffff_ffff_8000_0000,
///     paddr_offset: 0,
///     entry: _start,
///     hypercall_page: hypercall_page,
/// }
/// ```
///
/// Keys (each optional; Xen itself requires `xen_version` and `loader: "generic"` or a
/// `guest_os` starting with `linux`):
/// strings `guest_os`, `guest_version`, `xen_version`, `loader`, `features`, `pae_mode`;
/// numbers `virt_base`, `paddr_offset`, `init_p2m`, `mod_start_pfn`, `suspend_cancel`
/// (8 bytes) and `supported_features` (4-byte XENFEAT bitmap: a dom0 kernel must include
/// bit 11, `XENFEAT_dom0`);
/// symbols `entry` and `hypercall_page` (paths to a function or static).
#[macro_export]
macro_rules! xen_elf_notes {
    () => {};
    (guest_os: $v:literal $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(str $crate::elfnote::GUEST_OS, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (guest_version: $v:literal $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(str $crate::elfnote::GUEST_VERSION, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (xen_version: $v:literal $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(str $crate::elfnote::XEN_VERSION, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (loader: $v:literal $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(str $crate::elfnote::LOADER, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (features: $v:literal $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(str $crate::elfnote::FEATURES, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (pae_mode: $v:literal $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(str $crate::elfnote::PAE_MODE, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (virt_base: $v:expr $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(u64 $crate::elfnote::VIRT_BASE, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (paddr_offset: $v:expr $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(u64 $crate::elfnote::PADDR_OFFSET, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (init_p2m: $v:expr $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(u64 $crate::elfnote::INIT_P2M, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (mod_start_pfn: $v:expr $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(u64 $crate::elfnote::MOD_START_PFN, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (suspend_cancel: $v:expr $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(u64 $crate::elfnote::SUSPEND_CANCEL, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (supported_features: $v:expr $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(u32 $crate::elfnote::SUPPORTED_FEATURES, $v);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (entry: $s:path $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(sym $crate::elfnote::ENTRY, $s);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    (hypercall_page: $s:path $(, $($rest:tt)*)?) => {
        $crate::xen_elf_note!(sym $crate::elfnote::HYPERCALL_PAGE, $s);
        $crate::xen_elf_notes!($($($rest)*)?);
    };
    ($other:ident : $($rest:tt)*) => {
        compile_error!(concat!("xen_elf_notes!: unknown key `", stringify!($other), "`"));
    };
}

/// Reserves a page-aligned, executable page named `$name` in `.text.hypercall_page`
/// (filled with `int3` until the hypervisor writes its stubs) and declares it as
/// `extern` static `$name: [u8; 4096]`, so it can be named in
/// `xen_elf_notes! { hypercall_page: $name }` and its address taken with `&raw const`.
///
/// Use it once per image; the linker script should place `.text.hypercall_page` inside
/// the loaded image (any `.text.*` rule does).
#[macro_export]
macro_rules! xen_hypercall_page {
    ($vis:vis $name:ident) => {
        ::core::arch::global_asm!(
            ".pushsection .text.hypercall_page,\"ax\",@progbits",
            ".balign 4096",
            concat!(".globl ", stringify!($name)),
            concat!(".type ", stringify!($name), ",@object"),
            concat!(stringify!($name), ":"),
            ".fill 4096, 1, 0xcc",
            concat!(".size ", stringify!($name), ", 4096"),
            ".popsection",
            options(att_syntax)
        );
        unsafe extern "C" {
            /// The hypercall page: 128 stubs of 32 bytes once the hypervisor filled it.
            $vis static $name: [u8; 4096];
        }
    };
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    // Notes emitted into this test binary by the macros; the test finds them in the file.
    crate::xen_elf_notes! {
        guest_os: "abi-note-test",
        xen_version: "xen-3.0",
        virt_base: 0xffff_ffff_8000_0000,
        supported_features: 0x801,
    }

    /// Every Xen note of the ELF file `image` as `(type, desc)`: scans for the note
    /// header shape `namesz = 4, descsz, type, "Xen\0"`.
    fn xen_notes(image: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let word = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap());
        let mut notes = Vec::new();
        for at in (0..image.len().saturating_sub(16)).step_by(4) {
            if word(at) == 4 && &image[at + 12..at + 16] == b"Xen\0" {
                let descsz = word(at + 4) as usize;
                let desc = image.get(at + 16..at + 16 + descsz);
                if let (true, Some(desc)) = (descsz <= 64, desc) {
                    notes.push((word(at + 8), desc.to_vec()));
                }
            }
        }
        notes
    }

    #[test]
    fn macros_emit_xen_notes() {
        let image = std::fs::read("/proc/self/exe").expect("read own executable");
        let notes = xen_notes(&image);
        let has = |ty: u32, desc: &[u8]| notes.iter().any(|(t, d)| *t == ty && d == desc);
        assert!(has(super::GUEST_OS, b"abi-note-test\0"), "{notes:?}");
        assert!(has(super::XEN_VERSION, b"xen-3.0\0"));
        assert!(has(
            super::VIRT_BASE,
            &0xffff_ffff_8000_0000u64.to_le_bytes()
        ));
        assert!(has(super::SUPPORTED_FEATURES, &0x801u32.to_le_bytes()));
    }
}
