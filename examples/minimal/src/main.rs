#![no_std]
#![no_main]

use xen_pv_abi::hypercall::xen_version;
use xen_pv_rt::{StartInfo, println};

xen_pv_rt::entry!(main);

fn main(si: &'static StartInfo) -> ! {
    let kind = ["domU", "dom0"][si.is_initial_domain() as usize];
    println!("minimal: hello from a {kind} of {} pages", si.nr_pages);
    println!("minimal: command line \"{}\"", si.cmd_line_str());
    match xen_version() {
        Ok((major, minor)) => println!("minimal: running on Xen {major}.{minor}"),
        Err(e) => println!("minimal: xen_version failed: {e}"),
    }
    xen_pv_rt::poweroff()
}
