//! `no-notes`: the pv-guest runtime without any Xen ELF note. A Xen-compatible domain
//! builder must refuse it ("not a Xen-ELF image").
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::{StartInfo, println};

    pv_guest::entry!(main);

    fn main(_: &'static StartInfo) -> ! {
        println!("no-notes: started although it has no Xen notes");
        pv_guest::poweroff()
    }
}
