//! `privileged`: executes `cli`, which a PV kernel (running at CPL3) may not. The
//! hypervisor must crash this domain and nothing else.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::{StartInfo, println};

    test_guests::standard_notes!("privileged");
    pv_guest::entry!(main);

    fn main(_: &'static StartInfo) -> ! {
        println!("privileged: executing cli");
        // SAFETY: `cli` touches no memory; at CPL3 it faults (#GP), which is the point.
        unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
        println!("privileged: survived cli");
        pv_guest::poweroff()
    }
}
