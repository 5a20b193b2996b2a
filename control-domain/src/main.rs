//! The control-domain kernel (dom0): boots on the hypervisor, introduces every boot-built
//! domain to xenstored and serves xenstore and the consoles.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the control domain is a bare-metal PV kernel: build it with `cargo xtask build`");
}

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod kernel;
