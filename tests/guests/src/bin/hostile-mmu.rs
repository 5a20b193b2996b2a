//! `hostile-mmu`: tries every way around the PV MMU rules it can think of. Each attempt
//! must be refused with a Xen errno (and the domain keep running); the last line proves
//! it is still alive.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::{StartInfo, VIRT_BASE, println};
    use xen_pv_abi::hypercall::hypercall_raw;
    use xen_pv_abi::mmu::*;
    use xen_pv_abi::nr::{MMU_UPDATE, MMUEXT_OP, UPDATE_VA_MAPPING};

    /// Inside the hypervisor's direct map (PML4 slot 262).
    const HYPERVISOR_ADDRESS: u64 = 0xffff_8300_0010_0000;
    const DOMID_SELF: u64 = 0x7ff0;
    const PAGE: u64 = 4096;

    /// A page of our own, mapped writable, whose mapping the tests change.
    #[repr(C, align(4096))]
    struct Page {
        _bytes: [u8; 4096],
    }
    static mut SCRATCH: Page = Page { _bytes: [0; 4096] };

    test_guests::standard_notes!("hostile-mmu");
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

    fn mmu_update(reqs: &[MmuUpdate], done: &mut u32) -> i64 {
        let args = [
            reqs.as_ptr() as u64,
            reqs.len() as u64,
            done as *mut u32 as u64,
            DOMID_SELF,
            0,
        ];
        // SAFETY: the requests are refused or touch only this domain's page tables.
        unsafe { hypercall_raw(MMU_UPDATE, args) }
    }

    fn mmuext(op: MmuextOp) -> i64 {
        let args = [&op as *const MmuextOp as u64, 1, 0, DOMID_SELF, 0];
        // SAFETY: as above.
        unsafe { hypercall_raw(MMUEXT_OP, args) }
    }

    fn ext(cmd: u32, arg1: u64) -> MmuextOp {
        MmuextOp {
            cmd,
            pad: 0,
            arg1,
            arg2: 0,
        }
    }

    fn map_scratch(pte: u64) -> i64 {
        let va = &raw const SCRATCH as u64;
        // SAFETY: only SCRATCH's mapping changes; nothing holds a reference into it.
        unsafe { hypercall_raw(UPDATE_VA_MAPPING, [va, pte, UVMF_INVLPG, 0, 0]) }
    }

    fn main(si: &'static StartInfo) -> ! {
        let l4 = mfn_of(si, si.pt_base);
        let scratch_mfn = mfn_of(si, &raw const SCRATCH as u64);
        println!(
            "hostile-mmu: write-map the L4 = {}",
            map_scratch(l4 << 12 | 7)
        );

        // A frame that is not ours: past every frame of our p2m (and not shared_info).
        let mut max = 0;
        for pfn in 0..si.nr_pages {
            max = max.max(mfn_of(si, VIRT_BASE + pfn * PAGE));
        }
        let mut foreign = max + 1;
        let grant = test_guests::grant_frame();
        while foreign == si.shared_info >> 12 || Some(foreign) == grant {
            foreign += 1;
        }
        println!(
            "hostile-mmu: map a frame not ours = {}",
            map_scratch(foreign << 12 | 5)
        );
        println!(
            "hostile-mmu: map a hypervisor frame = {}",
            map_scratch(1 << 12 | 5)
        );

        // The last pfn is unmapped and untyped: make it an L1 that maps itself writable.
        let last = mfn_of(si, VIRT_BASE + (si.nr_pages - 1) * PAGE);
        let mut done = 0;
        let write = MmuUpdate {
            ptr: last << 12,
            val: last << 12 | 7,
        };
        println!(
            "hostile-mmu: plain write to a free frame = {}",
            mmu_update(&[write], &mut done)
        );
        println!(
            "hostile-mmu: pin self-mapping L1 = {}",
            mmuext(ext(MMUEXT_PIN_L1_TABLE, last))
        );
        println!(
            "hostile-mmu: CR3 = writable page = {}",
            mmuext(ext(MMUEXT_NEW_BASEPTR, scratch_mfn))
        );
        println!(
            "hostile-mmu: CR3 = self-mapping L1 = {}",
            mmuext(ext(MMUEXT_NEW_BASEPTR, last))
        );

        let slot = MmuUpdate {
            ptr: (l4 << 12) | (256 * 8),
            val: 0,
        };
        println!(
            "hostile-mmu: clear L4 slot 256 = {}",
            mmu_update(&[slot], &mut done)
        );
        let slot = MmuUpdate {
            ptr: (l4 << 12) | (262 * 8),
            val: scratch_mfn << 12 | 7,
        };
        println!(
            "hostile-mmu: replace L4 slot 262 = {}",
            mmu_update(&[slot], &mut done)
        );

        done = 99;
        let args = [
            HYPERVISOR_ADDRESS,
            0x7fff_ffff,
            &mut done as *mut u32 as u64,
            DOMID_SELF,
            0,
        ];
        // SAFETY: the hypervisor must refuse to read its own memory as our requests.
        let r = unsafe { hypercall_raw(MMU_UPDATE, args) };
        println!("hostile-mmu: huge batch from hypervisor memory = {r} (done {done})");

        println!(
            "hostile-mmu: unpin the live L4 = {}",
            mmuext(ext(MMUEXT_UNPIN_TABLE, l4))
        );
        println!(
            "hostile-mmu: then write-map it = {}",
            map_scratch(l4 << 12 | 7)
        );
        println!(
            "hostile-mmu: pin it again = {}",
            mmuext(ext(MMUEXT_PIN_L4_TABLE, l4))
        );
        println!("hostile-mmu: still alive");
        pv_guest::poweroff()
    }
}
