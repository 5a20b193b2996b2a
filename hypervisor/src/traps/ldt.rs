//! The guest's LDT: `mmuext_op(MMUEXT_SET_LDT)` (xen-pv-abi.md §9.6).
//!
//! Same model as the GDT (traps/gdt.rs): the frames that hold the guest's LDT carry a
//! `SegDesc` type reference while they are its LDT, so they have no writable mapping and
//! are no page table (and the reverse: `-EINVAL`), and every descriptor in them passed
//! [`check_descriptor`] when the frame became `SegDesc` (or later through
//! `update_descriptor`). The CPU never uses the guest's frames: the hypervisor copies the
//! descriptors into an LDT buffer of its own, whose system descriptor sits in the
//! hypervisor's GDT at Xen's LDT selector `0xe050`, and loads it with `lldt` on
//! `SET_LDT` and whenever the vCPU is switched in (`lldt 0` for a vCPU without LDT).
//!
//! Checks as Xen's `MMUEXT_SET_LDT`: the linear address is page aligned, at most 8192
//! entries, the whole range canonical and outside the hypervisor's; 0 entries means no
//! LDT. Deviation: Xen only records the address and maps each LDT page on the first
//! fault through it (the guest gets a #PF/#GP then if it is unmapped or writable); we
//! resolve every page through the guest's current page tables at once and refuse the
//! call instead (`-EFAULT`: not mapped; `-EINVAL`: not a frame that may hold descriptors).
//! The LDT then stays on those frames until the next `SET_LDT`, even if the guest later
//! remaps the linear range (Xen would follow the new mapping).

use super::gdt::{DESCS_PER_FRAME, check_descriptor, for_each_descriptor_run};
use crate::hv::Hypervisor;
use crate::mmu::guest::translate;
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::layout::{PAGE_SIZE, in_hypervisor_range, is_canonical};
use xen_pv_abi::{Errno, Mfn, VcpuId};

/// Most LDT entries (`MMUEXT_SET_LDT`): a selector's 13-bit index.
pub const LDT_MAX_ENTS: usize = 8192;
/// Most frames an LDT spans (8192 / 512 = 16).
pub const MAX_LDT_FRAMES: usize = LDT_MAX_ENTS / DESCS_PER_FRAME;

/// A vCPU's LDT as `MMUEXT_SET_LDT` installed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestLdt {
    /// Guest linear address (page aligned; 0 with no LDT).
    base: u64,
    /// Its frames, page by page from `base` (the first [`GuestLdt::frames`] are used),
    /// each holding a `SegDesc` type reference while listed here.
    frames: [u64; MAX_LDT_FRAMES],
    /// Number of entries (≤ [`LDT_MAX_ENTS`]; 0 = no LDT).
    entries: u16,
}

impl GuestLdt {
    /// Guest linear address the LDT was set at.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Number of entries.
    pub fn entries(&self) -> usize {
        usize::from(self.entries)
    }

    /// Frames that hold them.
    pub fn frames(&self) -> &[u64] {
        &self.frames[..self.entries().div_ceil(DESCS_PER_FRAME)]
    }
}

/// Whether a whole `[base, base + len)` is guest address space (canonical, not the
/// hypervisor's range, no wrap).
fn range_is_guest(base: u64, len: u64) -> bool {
    let ok = |va: u64| is_canonical(va) && !in_hypervisor_range(va);
    match base.checked_add(len - 1) {
        Some(last) => ok(base) && ok(last),
        None => false,
    }
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// `MMUEXT_SET_LDT(linear_addr, nr_ents)` from the running domain `idx`: installs and
    /// loads its new LDT, releasing the previous one. Nothing changes on failure.
    pub(crate) fn set_ldt(&mut self, idx: usize, base: u64, nr_ents: u32) -> Result<(), Errno> {
        let entries = nr_ents as usize;
        let new = if entries == 0 {
            GuestLdt::default()
        } else {
            if entries > LDT_MAX_ENTS
                || !base.is_multiple_of(PAGE_SIZE as u64)
                || !range_is_guest(base, entries as u64 * 8)
            {
                return Err(Errno::EINVAL);
            }
            let mut frames = [0u64; MAX_LDT_FRAMES];
            let nr_frames = entries.div_ceil(DESCS_PER_FRAME);
            let space = self.current_space(idx);
            for (i, slot) in frames.iter_mut().enumerate().take(nr_frames) {
                let va = base + (i * PAGE_SIZE) as u64;
                let maddr = translate(&self.mem, &self.frames, space, va, false)?;
                *slot = Mfn::containing(maddr).0;
            }
            for i in 0..nr_frames {
                if let Err(e) = self.get_seg_desc(idx, Mfn(frames[i])) {
                    for &taken in &frames[..i] {
                        self.gdt_ctx(idx).put_type(Mfn(taken));
                    }
                    return Err(e);
                }
            }
            GuestLdt {
                base,
                frames,
                // ≤ 8192, checked above.
                entries: entries as u16,
            }
        };
        let v = self.cur_vcpu(idx);
        self.put_ldt_frames(idx, v);
        self.domains[idx].vcpu_mut(v).ldt = new;
        self.load_guest_ldt(idx, true);
        Ok(())
    }

    /// Drops the `SegDesc` references of the LDT frames of vCPU `v` of domain `idx`.
    fn put_ldt_frames(&mut self, idx: usize, v: VcpuId) {
        let old = self.domains[idx].vcpu(v).ldt;
        for &mfn in old.frames() {
            self.gdt_ctx(idx).put_type(Mfn(mfn));
        }
    }

    /// Releases the LDTs of domain `idx`'s vCPUs as it ends: frame references dropped,
    /// and the CPU's LDT emptied if it was one of this domain's.
    pub(crate) fn release_ldt(&mut self, idx: usize) {
        for i in 0..self.domains[idx].vcpus.len() {
            let v = self.domains[idx].vcpus[i].id;
            self.put_ldt_frames(idx, v);
            self.domains[idx].vcpu_mut(v).ldt = GuestLdt::default();
        }
        if self.cpu.ldt.is_some_and(|(holder, _)| holder == idx) {
            self.platform.load_ldt(0);
            self.cpu.ldt = None;
        }
    }

    /// Puts domain `idx`'s LDT on the CPU as its vCPU is switched in (`force`: also when
    /// it is there already, after `SET_LDT`): copies its descriptors into the
    /// hypervisor's LDT buffer and loads it, or loads no LDT.
    pub(crate) fn load_guest_ldt(&mut self, idx: usize, force: bool) {
        let me = (idx, self.cur_vcpu(idx));
        if !force && self.cpu.ldt == Some(me) {
            return;
        }
        let ldt = self.domains[idx].vcpu(me.1).ldt;
        let entries = ldt.entries();
        for_each_descriptor_run(&self.mem, ldt.frames(), entries, |first, descs| {
            self.platform.set_ldt_entries(first, descs)
        });
        // Entries beyond `entries` may hold another domain's descriptors: the limit of
        // the loaded LDT keeps them out of reach.
        self.platform.load_ldt(entries);
        self.cpu.ldt = Some(me);
    }

    /// `update_descriptor` wrote (checked) `desc` at `maddr` of domain `idx`'s frame
    /// `mfn`: if that is a frame of the LDT on the CPU, the copy there follows.
    pub(crate) fn ldt_descriptor_written(&mut self, idx: usize, mfn: Mfn, maddr: u64, desc: u64) {
        let me = (idx, self.cur_vcpu(idx));
        if self.cpu.ldt != Some(me) {
            return;
        }
        debug_assert_eq!(check_descriptor(desc), Ok(desc));
        let ldt = self.domains[idx].vcpu(me.1).ldt;
        let offset = (maddr % PAGE_SIZE as u64 / 8) as usize;
        // The same frame may appear more than once (the guest mapped it twice).
        for (i, _) in ldt
            .frames()
            .iter()
            .enumerate()
            .filter(|&(_, &f)| f == mfn.0)
        {
            let entry = i * DESCS_PER_FRAME + offset;
            if entry < ldt.entries() {
                self.platform.set_ldt_entries(entry, &[desc]);
            }
        }
    }
}

#[cfg(test)]
#[path = "ldt_tests.rs"]
mod tests;
