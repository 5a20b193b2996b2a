//! `unknown-hypercall`: numbers the hypervisor does not implement must return -ENOSYS (-38).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::{StartInfo, println};
    use xen_pv_abi::hypercall::hypercall_raw;

    test_guests::standard_notes!("unknown-hypercall");
    pv_guest::entry!(main);

    fn main(_: &'static StartInfo) -> ! {
        // 11: never assigned; 31: xenoprof_op (dropped); 60: beyond every table.
        for nr in [11, 31, 60] {
            // SAFETY: no arguments, so nothing of ours can be touched.
            let ret = unsafe { hypercall_raw(nr, [0; 5]) };
            println!("unknown-hypercall: hypercall {nr} = {ret}");
        }
        pv_guest::poweroff()
    }
}
