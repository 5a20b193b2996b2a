//! Guest descriptor tables: `set_gdt` (2) and `update_descriptor` (10)
//! (xen-pv-abi.md §9.6, §3.3).
//!
//! A PV guest's GDT is made of its own frames: up to 14 of them, for entries
//! `0..FIRST_RESERVED_GDT_ENTRY` (7168); the entries above belong to the hypervisor.
//! While a frame is part of a GDT it holds a `SegDesc` type reference, so it can have no
//! writable mapping (and a writable-mapped frame or page table cannot become one): the
//! guest changes its descriptors only through `update_descriptor`, which checks each one.
//! When a frame first becomes `SegDesc`, all 512 descriptors in it are checked the same
//! way (as Xen does), so every descriptor of a typed frame is known to be harmless.
//!
//! The CPU runs on the hypervisor's own GDT (arch `descriptors.rs`). The guest's
//! descriptors become effective by being *copied* into its entries `0..entries` when
//! the vCPU is switched in (and at once by `set_gdt` / `update_descriptor`), with the
//! entries the previous owner used beyond that cleared. Copying is safe because the
//! copied frames cannot change behind the hypervisor's back (typed `SegDesc`, so
//! read-only to the guest) and every descriptor in them passed [`check_descriptor`].
//!
//! Xen's descriptor check for a 64-bit PV guest, whose kernel runs in ring 3:
//! * not present: accepted as is (any use faults);
//! * code or data (S=1): accepted, DPL raised to 3 (Xen's `__fixup_guest_selector`), so
//!   no guest descriptor ever grants more than ring 3; 64-bit (L), conforming and
//!   expand-down segments are all fine at ring 3, base and limit are not checked;
//! * system type 0: accepted (harmless; the upper half of a 16-byte gate looks like it);
//! * any other system descriptor (LDT, TSS, interrupt/trap gate): refused, `-EINVAL`.
//!
//! Deviation from Xen: call gates are refused too. Xen accepts them with DPL forced to 0
//! and emulates a far call through them on the resulting #GP; we have no gate
//! emulation, so accepting them would only hand the guest a #GP later.

use crate::hv::Hypervisor;
use crate::hypercall::HcResult;
use crate::hypercall::handle::GuestArray;
use crate::mmu::PageType;
use crate::mmu::pagetable::PtCtx;
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::layout::{FIRST_RESERVED_GDT_ENTRY, PAGE_SIZE};
use xen_pv_abi::{Errno, Mfn, VcpuId};
use zerocopy::IntoBytes;

/// Descriptors in one frame.
pub const DESCS_PER_FRAME: usize = PAGE_SIZE / 8;
/// Most frames a guest GDT can have (7168 / 512 = 14).
pub const MAX_GDT_FRAMES: usize = FIRST_RESERVED_GDT_ENTRY / DESCS_PER_FRAME;

/// Descriptor bits (in the 64-bit descriptor as the guest stores it).
const DESC_PRESENT: u64 = 1 << 47;
const DESC_DPL_SHIFT: u32 = 45;
const DESC_DPL: u64 = 3 << DESC_DPL_SHIFT;
/// S: code/data segment (else a system descriptor).
const DESC_CODE_DATA: u64 = 1 << 44;
const DESC_TYPE_SHIFT: u32 = 40;

/// Checks one guest descriptor as Xen's `check_descriptor` does for a 64-bit PV guest
/// (see the module documentation) and returns it as it is to be stored.
pub fn check_descriptor(desc: u64) -> Result<u64, Errno> {
    if desc & DESC_PRESENT == 0 {
        return Ok(desc);
    }
    if desc & DESC_CODE_DATA != 0 {
        // The guest kernel runs in ring 3: a lower DPL is raised to 3, never refused
        // (Linux writes its DPL-0 kernel descriptors and expects success).
        return Ok(desc | DESC_DPL);
    }
    if (desc >> DESC_TYPE_SHIFT) & 0xf == 0 {
        return Ok(desc);
    }
    Err(Errno::EINVAL)
}

/// A vCPU's GDT as `set_gdt` installed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestGdt {
    /// Its frames (the first [`GuestGdt::nr_frames`] are used), each holding a
    /// `SegDesc` type reference while listed here.
    frames: [u64; MAX_GDT_FRAMES],
    /// Number of entries (≤ `FIRST_RESERVED_GDT_ENTRY`; 0 = no GDT).
    entries: u16,
}

impl GuestGdt {
    /// Number of entries.
    pub fn entries(&self) -> usize {
        usize::from(self.entries)
    }

    /// Frames that hold them.
    pub fn frames(&self) -> &[u64] {
        &self.frames[..self.entries().div_ceil(DESCS_PER_FRAME)]
    }
}

/// Whose guest descriptors the CPU's GDT holds now, and how many entries of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwGdt {
    /// Index of the domain, and which of its vCPUs, whose GDT is loaded (`None`: only
    /// zeroed entries).
    pub owner: Option<(usize, VcpuId)>,
    /// Entries `0..loaded` may be non-zero.
    pub loaded: usize,
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    pub(super) fn gdt_ctx(&mut self, idx: usize) -> PtCtx<'_, M> {
        PtCtx::new(
            &self.mem,
            &mut self.frames,
            self.domains[idx].id,
            &self.hypervisor_l4_slots,
        )
    }

    /// Takes a `SegDesc` type reference on `mfn` for domain `idx`; the first one checks
    /// (and fixes up in place) all 512 descriptors of the frame. `EINVAL` if the frame is
    /// not the domain's, has another type (writable mapping, page table) or holds a
    /// descriptor that is refused.
    pub(super) fn get_seg_desc(&mut self, idx: usize, mfn: Mfn) -> Result<(), Errno> {
        let fresh = self.frames.type_state(mfn).is_some_and(|st| st.count == 0);
        self.gdt_ctx(idx).get_type(mfn, PageType::SegDesc)?;
        if fresh && self.check_frame(mfn).is_err() {
            self.gdt_ctx(idx).put_type(mfn);
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Checks every descriptor of a frame that just became `SegDesc`; writes the
    /// fixed-up ones back.
    fn check_frame(&mut self, mfn: Mfn) -> Result<(), Errno> {
        let mut descs = [0u64; DESCS_PER_FRAME];
        self.mem
            .read(mfn.maddr(), descs.as_mut_bytes())
            .map_err(|_| Errno::EINVAL)?;
        let mut changed = false;
        for d in &mut descs {
            let checked = check_descriptor(*d)?;
            changed |= checked != *d;
            *d = checked;
        }
        if changed {
            self.mem
                .write(mfn.maddr(), descs.as_bytes())
                .map_err(|_| Errno::EINVAL)?;
        }
        Ok(())
    }

    /// `set_gdt(frame_list, entries)`: installs a GDT of `entries` descriptors in the
    /// first `ceil(entries / 512)` frames of `frame_list`, releasing the previous one.
    /// The generated dispatch passes `entries` (its low 32 bits, as Xen's unsigned int)
    /// as the array's length; the list itself holds only the frames.
    pub(crate) fn do_set_gdt(&mut self, idx: usize, frame_list: GuestArray<u64>) -> HcResult {
        let entries = usize::try_from(frame_list.len()).map_err(|_| Errno::EINVAL)?;
        if entries > FIRST_RESERVED_GDT_ENTRY {
            return Err(Errno::EINVAL);
        }
        let nr_frames = entries.div_ceil(DESCS_PER_FRAME);
        let list = GuestArray::<u64>::new(frame_list.addr(), nr_frames as u64);
        let mut frames = [0u64; MAX_GDT_FRAMES];
        for (i, slot) in frames.iter_mut().enumerate().take(nr_frames) {
            let handle = list.get(i as u64).ok_or(Errno::EFAULT)?;
            *slot = self.read_handle(idx, handle)?;
        }
        for i in 0..nr_frames {
            if let Err(e) = self.get_seg_desc(idx, Mfn(frames[i])) {
                for &taken in &frames[..i] {
                    self.gdt_ctx(idx).put_type(Mfn(taken));
                }
                return Err(e);
            }
        }
        let old = self.cur(idx).gdt;
        for &mfn in old.frames() {
            self.gdt_ctx(idx).put_type(Mfn(mfn));
        }
        self.cur_mut(idx).gdt = GuestGdt {
            frames,
            // ≤ 7168, checked above.
            entries: entries as u16,
        };
        self.load_guest_gdt(idx, true);
        Ok(0)
    }

    /// `update_descriptor(maddr, desc)`: writes one checked descriptor at machine
    /// address `maddr` of a frame of the caller that is a descriptor frame or could be
    /// mapped writable (not a page table), as Xen. A descriptor in the live GDT takes
    /// effect at once.
    pub(crate) fn do_update_descriptor(&mut self, idx: usize, maddr: u64, desc: u64) -> HcResult {
        // Misaligned, it would straddle two descriptors.
        if !maddr.is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        let desc = check_descriptor(desc)?;
        let mfn = Mfn(maddr / PAGE_SIZE as u64);
        if self.frames.owner(mfn) != Some(self.domains[idx].id) {
            return Err(Errno::EINVAL);
        }
        let st = self.frames.type_state(mfn).ok_or(Errno::EINVAL)?;
        if st.count > 0 && !matches!(st.ty, PageType::SegDesc | PageType::Writable) {
            return Err(Errno::EINVAL);
        }
        self.mem.write_u64(maddr, desc).map_err(|_| Errno::EINVAL)?;
        let me = (idx, self.cur_vcpu(idx));
        if st.count > 0 && st.ty == PageType::SegDesc && self.cpu.gdt.owner == Some(me) {
            let gdt = self.domains[idx].vcpu(me.1).gdt;
            let offset = (maddr % PAGE_SIZE as u64 / 8) as usize;
            // The same frame may appear more than once in the list.
            for (i, _) in gdt
                .frames()
                .iter()
                .enumerate()
                .filter(|&(_, &f)| f == mfn.0)
            {
                let entry = i * DESCS_PER_FRAME + offset;
                if entry < gdt.entries() {
                    self.platform.set_gdt_entries(entry, &[desc]);
                }
            }
        }
        if st.count > 0 && st.ty == PageType::SegDesc {
            self.ldt_descriptor_written(idx, mfn, maddr, desc);
        }
        Ok(0)
    }

    /// Puts the guest descriptors of the running vCPU of domain `idx` into the CPU's GDT
    /// as it is switched in (`force`: also when they are there already, after
    /// `set_gdt`), and clears the entries the previous contents used beyond them.
    pub(crate) fn load_guest_gdt(&mut self, idx: usize, force: bool) {
        let me = (idx, self.cur_vcpu(idx));
        if !force && self.cpu.gdt.owner == Some(me) {
            return;
        }
        let gdt = self.domains[idx].vcpu(me.1).gdt;
        let entries = gdt.entries();
        for_each_descriptor_run(&self.mem, gdt.frames(), entries, |first, descs| {
            self.platform.set_gdt_entries(first, descs)
        });
        let mut at = entries;
        while at < self.cpu.gdt.loaded {
            let count = (self.cpu.gdt.loaded - at).min(RUN);
            self.platform.set_gdt_entries(at, &ZEROS[..count]);
            at += count;
        }
        self.cpu.gdt = HwGdt {
            owner: Some(me),
            loaded: entries,
        };
    }
}

/// Reads the `entries` descriptors in use of a guest descriptor table (GDT or LDT) held in
/// `frames`, a run of at most 32 at a time, and hands each run to `put(first_index,
/// descriptors)`.
/// The frames are the domain's and typed SegDesc, so a read cannot fail; if one did,
/// zeroed (not present) descriptors are the safe outcome.
pub(super) fn for_each_descriptor_run<M: MachineMemory>(
    mem: &M,
    frames: &[u64],
    entries: usize,
    mut put: impl FnMut(usize, &[u64]),
) {
    // Runs of at most RUN descriptors, and only those in use: a switch between domains
    // neither clears nor copies whole 4 KiB frames (nor zeroes the run buffer when no
    // table is installed, the common case).
    if entries == 0 {
        return;
    }
    let mut descs = [0u64; RUN];
    for (i, &mfn) in frames.iter().enumerate() {
        let first = i * DESCS_PER_FRAME;
        let in_frame = entries.saturating_sub(first).min(DESCS_PER_FRAME);
        let mut done = 0;
        while done < in_frame {
            let count = (in_frame - done).min(RUN);
            let run = &mut descs[..count];
            let at = Mfn(mfn).maddr() + (done * 8) as u64;
            if mem.read(at, run.as_mut_bytes()).is_err() {
                run.fill(0);
            }
            put(first + done, run);
            done += count;
        }
    }
}

/// Descriptors handed over (or cleared) at a time when a table is loaded.
const RUN: usize = 32;
/// A run of not-present descriptors (a constant: nothing to clear at each switch).
const ZEROS: [u64; RUN] = [0; RUN];

#[cfg(test)]
#[path = "gdt_tests.rs"]
pub(crate) mod tests;
