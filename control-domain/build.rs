//! Links the control-domain kernel with xen-pv-rt's linker script (the runtime's build
//! script puts it on the link search path), as a fixed-address executable.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-Txen-pv-rt.ld");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
