//! `bad-pointer`: hands the hypervisor pointers into its own address range. Both calls
//! must fail with -EFAULT (-14) instead of reading or writing hypervisor memory.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::{StartInfo, println};
    use xen_pv_abi::hypercall::hypercall_raw;
    use xen_pv_abi::nr::{CONSOLE_IO, CONSOLEIO_WRITE, XEN_VERSION};
    use xen_pv_abi::version::XENVER_EXTRAVERSION;

    /// Inside the hypervisor's direct map (PML4 slot 262), never guest-accessible.
    const HYPERVISOR_ADDRESS: u64 = 0xffff_8300_0010_0000;

    test_guests::standard_notes!("bad-pointer");
    pv_guest::entry!(main);

    fn main(_: &'static StartInfo) -> ! {
        // SAFETY: the buffer is not ours; a correct hypervisor refuses it, and a broken one
        // would only touch its own memory, never this guest's.
        let ret = unsafe {
            hypercall_raw(
                CONSOLE_IO,
                [u64::from(CONSOLEIO_WRITE), 16, HYPERVISOR_ADDRESS, 0, 0],
            )
        };
        println!("bad-pointer: console_io(hypervisor address) = {ret}");
        // SAFETY: as above (the hypervisor would write 16 bytes there).
        let ret = unsafe {
            hypercall_raw(
                XEN_VERSION,
                [u64::from(XENVER_EXTRAVERSION), HYPERVISOR_ADDRESS, 0, 0, 0],
            )
        };
        println!("bad-pointer: xen_version(hypervisor address) = {ret}");
        pv_guest::poweroff()
    }
}
