//! The bare-metal hypervisor binary: everything lives in the library (the PVH entry,
//! the boot sequence and the panic handler are in `hypervisor::arch::x86_64`).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use hypervisor as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor is a bare-metal image: build it with `cargo xtask build`");
}
