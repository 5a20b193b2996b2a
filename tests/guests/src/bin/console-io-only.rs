//! `console-io-only`: prints with the console_io hypercall only (no hypercall page, never
//! touches its console ring) and powers off.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::{StartInfo, io_println};

    test_guests::standard_notes!("console-io-only");
    pv_guest::entry!(main);

    fn main(_: &'static StartInfo) -> ! {
        io_println!("console-io-only: hello");
        pv_guest::poweroff()
    }
}
