//! Links pv-guest's bare-metal images with `pv-guest.ld` (which includes xen-pv-rt's
//! script) and makes that script available to dependents (the test guests): a link search
//! path set by a dependency's build script is passed to every crate linked with it, so a
//! dependent only adds `-Tpv-guest.ld`.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=pv-guest.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        // Host builds (workspace-wide `cargo build/test/clippy`) stay plain.
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-arg-bins=-Tpv-guest.ld");
    // Default (PIC) codegen linked as a fixed-address executable: nobody would apply PIE
    // relocations to a PV kernel.
    println!("cargo:rustc-link-arg-bins=--no-pie");
}
