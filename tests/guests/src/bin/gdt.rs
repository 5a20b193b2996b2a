//! `gdt`: installs a GDT of its own with `set_gdt`, loads a data segment from it, and
//! changes descriptors with `update_descriptor`: a DPL-0 data descriptor is accepted with
//! its DPL raised to 3 (Xen's rule for a ring-3 kernel), a TSS descriptor is refused.
//! Then the LDT: `MMUEXT_SET_LDT` is refused for a page still mapped writable, accepted
//! for a read-only one, and a data segment is loaded from it (selector 0x7).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use core::arch::asm;
    use pv_guest::{StartInfo, VIRT_BASE, println};
    use xen_pv_abi::hypercall::hypercall_raw;
    use xen_pv_abi::mmu::{MMUEXT_SET_LDT, MmuextOp};
    use xen_pv_abi::nr::{MMUEXT_OP, SET_GDT, UPDATE_DESCRIPTOR, UPDATE_VA_MAPPING};

    const PAGE: u64 = 4096;
    /// update_va_mapping flag: invalidate this one address.
    const UVMF_INVLPG: u64 = 2;
    /// Flat data segment, DPL 3, and the same with DPL 0.
    const DATA_DPL3: u64 = 0x00cf_f300_0000_ffff;
    const DATA_DPL0: u64 = 0x00cf_9300_0000_ffff;
    /// An available 64-bit TSS: a system descriptor no guest may have.
    const TSS: u64 = 0x0000_8900_0000_0067;

    /// The GDT: one page of its own (entry 1 = flat DPL-3 data), read-only once installed.
    #[repr(C, align(4096))]
    struct GdtPage([u64; 512]);
    static mut GDT: GdtPage = {
        let mut d = [0u64; 512];
        d[1] = DATA_DPL3;
        GdtPage(d)
    };

    /// The LDT: one page of its own (entry 0 = flat DPL-3 data).
    #[repr(C, align(4096))]
    struct LdtPage([u64; 512]);
    static mut LDT: LdtPage = {
        let mut d = [0u64; 512];
        d[0] = DATA_DPL3;
        LdtPage(d)
    };
    const DOMID_SELF: u64 = 0x7ff0;

    test_guests::standard_notes!("gdt");
    pv_guest::entry!(main);

    fn mfn_of(si: &StartInfo, va: u64) -> u64 {
        let pfn = (va - VIRT_BASE) / PAGE;
        // SAFETY: the p2m list is mapped and has nr_pages entries; pfn is one of ours.
        unsafe {
            (si.mfn_list as *const u64)
                .add(pfn as usize)
                .read_volatile()
        }
    }

    /// `MMUEXT_SET_LDT(va, ents)`.
    fn set_ldt(va: u64, ents: u64) -> i64 {
        let op = MmuextOp {
            cmd: MMUEXT_SET_LDT,
            pad: 0,
            arg1: va,
            arg2: ents,
        };
        let args = [&op as *const MmuextOp as u64, 1, 0, DOMID_SELF, 0];
        // SAFETY: the op only names a page of ours as LDT (or is refused).
        unsafe { hypercall_raw(MMUEXT_OP, args) }
    }

    fn update_descriptor(maddr: u64, desc: u64) -> i64 {
        // SAFETY: writes only a descriptor of our own GDT page (or is refused).
        unsafe { hypercall_raw(UPDATE_DESCRIPTOR, [maddr, desc, 0, 0, 0]) }
    }

    /// Entry `i` of our GDT page as the hypervisor left it.
    fn entry(i: usize) -> u64 {
        // SAFETY: in bounds of the static; volatile because the hypervisor writes it.
        unsafe { (&raw const GDT).cast::<u64>().add(i).read_volatile() }
    }

    fn main(si: &'static StartInfo) -> ! {
        let va = &raw const GDT as u64;
        let mfn = mfn_of(si, va);
        // Read-only first: a frame mapped writable cannot become a GDT frame.
        // SAFETY: only the GDT page's mapping changes (present, user, not writable).
        let r =
            unsafe { hypercall_raw(UPDATE_VA_MAPPING, [va, (mfn << 12) | 5, UVMF_INVLPG, 0, 0]) };
        println!("gdt: made read-only = {r}");
        let frames = [mfn];
        // SAFETY: the list holds one frame of ours; 3 entries fit in it.
        let r = unsafe { hypercall_raw(SET_GDT, [frames.as_ptr() as u64, 3, 0, 0, 0]) };
        println!("gdt: set_gdt = {r}");

        let ds: u16;
        // SAFETY: selector 0x0b is entry 1 of our GDT, a flat DPL-3 data segment; in
        // 64-bit mode DS has no effect on our memory accesses.
        unsafe {
            asm!("mov ds, {sel:x}", "mov {ds:x}, ds", sel = in(reg) 0x0bu16, ds = out(reg) ds)
        };
        println!("gdt: loaded selector {ds:#x}");

        // Machine address of descriptor 2.
        let entry2 = (mfn << 12) + 2 * 8;
        let r = update_descriptor(entry2, DATA_DPL0);
        let dpl = (entry(2) >> 45) & 3;
        println!("gdt: update_descriptor DPL0 data = {r}, stored with DPL {dpl}");
        let es: u16;
        // SAFETY: entry 2 is now a flat DPL-3 data segment, as above.
        unsafe {
            asm!("mov es, {sel:x}", "mov {es:x}, es", sel = in(reg) 0x13u16, es = out(reg) es)
        };
        println!("gdt: loaded selector {es:#x}");

        println!(
            "gdt: update_descriptor TSS = {}",
            update_descriptor(entry2, TSS)
        );
        println!(
            "gdt: update_descriptor misaligned = {}",
            update_descriptor(entry2 + 4, DATA_DPL3)
        );
        println!("gdt: entry 2 still {:#x}", entry(2));

        let ldt_va = &raw const LDT as u64;
        // Still mapped writable: it cannot hold descriptors the CPU trusts.
        println!("ldt: set_ldt on a writable page = {}", set_ldt(ldt_va, 1));
        let ldt_mfn = mfn_of(si, ldt_va);
        // SAFETY: only the LDT page's mapping changes (present, user, not writable).
        let r = unsafe {
            hypercall_raw(
                UPDATE_VA_MAPPING,
                [ldt_va, (ldt_mfn << 12) | 5, UVMF_INVLPG, 0, 0],
            )
        };
        println!("ldt: made read-only = {r}");
        println!("ldt: set_ldt = {}", set_ldt(ldt_va, 1));
        let ds: u16;
        // SAFETY: selector 0x7 is entry 0 of our LDT (TI=1, RPL 3), a flat DPL-3 data
        // segment; in 64-bit mode DS has no effect on our memory accesses.
        unsafe {
            asm!("mov ds, {sel:x}", "mov {ds:x}, ds", sel = in(reg) 0x7u16, ds = out(reg) ds)
        };
        println!("ldt: loaded selector {ds:#x}");
        pv_guest::poweroff()
    }
}
