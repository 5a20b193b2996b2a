//! The control-domain kernel (dom0): boots on the hypervisor, introduces every boot-built
//! domain to xenstored and serves xenstore and the consoles.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the control domain is a bare-metal PV kernel: build it with `cargo xtask build`");
}

#[cfg(target_os = "none")]
mod kernel {
    use xen_pv_rt::{StartInfo, println};

    xen_pv_rt::entry!(main);

    fn main(_si: &'static StartInfo) -> ! {
        println!("control: nothing to serve yet");
        xen_pv_rt::poweroff()
    }
}
