//! Links the test guests with pv-guest's linker script (pv-guest's build script puts it on
//! the search path), as fixed-address executables.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-Tpv-guest.ld");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
