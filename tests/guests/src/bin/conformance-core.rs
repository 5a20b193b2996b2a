//! placeholder
#![cfg_attr(target_os = "none", no_std, no_main)]
#[cfg(not(target_os = "none"))]
fn main() {}
#[cfg(target_os = "none")]
mod guest {
    test_guests::standard_notes!("conformance-core");
    pv_guest::entry!(main);
    fn main(_si: &'static pv_guest::StartInfo) -> ! {
        test_guests::conformance::Suite::new("conformance-core", "evtchn").finish()
    }
}
