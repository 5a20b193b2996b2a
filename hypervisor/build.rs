//! Link settings of the bare-metal hypervisor image. Host builds get nothing: there the
//! binary is a stub and the library is tested with the ordinary host toolchain.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=linker.ld");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    // The image is linked in the higher half (see linker.ld) with the target's default
    // (PIC) code generation; `--no-pie` makes it a plain static executable whose
    // absolute addresses the linker resolves (nothing relocates it at run time).
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    // defmt's script (on the search path via its build script) adds the non-allocated
    // `.defmt` section the host decoder reads the format strings from.
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=--orphan-handling=error");
}
