//! The bare-metal hypervisor binary: everything lives in the library.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor is a bare-metal image: build it with `cargo xtask build`");
}
