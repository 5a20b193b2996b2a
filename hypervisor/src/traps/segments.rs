//! Data segment selectors per vCPU and the failsafe callback (xen-pv-abi.md §6.4).
//!
//! A guest may load DS, ES, FS and GS with selectors of its own GDT or LDT (the
//! hypervisor's copies of them, hypercall/{gdt,ldt}.rs). The CPU keeps a selector's
//! descriptor cached in the register, so without switching them another domain would run
//! with (and could read) the previous domain's selectors. As Xen's `save_segments` /
//! `load_segments`: when a vCPU is switched out its four selectors are saved, and when it
//! is switched in again they are loaded, after its GDT and LDT are on the CPU. The
//! xen_version fast path never switches vCPUs, so it pays nothing.
//!
//! Xen loads each selector and catches the fault. The hypervisor must never fault, so
//! the core instead checks every selector first, as the CPU would at CPL0 (in the tables
//! the CPU holds for this vCPU): the null selector; one of the hypervisor's flat DPL-3
//! selectors (`0xe023`, `0xe02b`, `0xe033`, any RPL); or an index within the limit of the
//! vCPU's GDT (TI=0) or LDT (TI=1) whose descriptor is present, a data or readable code
//! segment, DPL 3 (check_descriptor raises every code/data DPL to 3). Anything else
//! (e.g. an entry the guest has since made not-present, or an index beyond a smaller new
//! GDT) is loaded as null instead. Loading FS/GS overwrites their bases, so the vCPU's
//! bases are written back afterwards.
//!
//! When a selector had to be nulled, Xen bounces the vCPU to its failsafe callback with
//! the frame `RCX, R11, DS, ES, FS, GS, RIP, CS|mask<<32, RFLAGS, RSP, SS` (the selectors
//! as they were saved), masking events only if it was registered with
//! `CALLBACKF_mask_events`; without a failsafe callback the domain is crashed.

use super::{BadGuestStack, MAX_BOUNCE_WORDS};
use crate::domain::runtime::DomainState;
use crate::hv::Hypervisor;
use crate::platform::{DataSelectors, GuestFrame, MachineMemory, Platform};
use xen_pv_abi::Mfn;
use xen_pv_abi::layout::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64};

/// Descriptor bits.
const DESC_PRESENT: u64 = 1 << 47;
const DESC_DPL_SHIFT: u32 = 45;
/// S: code/data segment (else a system descriptor).
const DESC_CODE_DATA: u64 = 1 << 44;
/// Type bit 3: code (else data).
const DESC_CODE: u64 = 1 << 43;
/// Type bit 1 of a code segment: readable.
const DESC_READABLE: u64 = 1 << 41;

/// Selector bits.
const SEL_TABLE_LDT: u16 = 1 << 2;
const SEL_RPL: u16 = 3;
const SEL_INDEX_SHIFT: u32 = 3;

/// Descriptors in one frame of a guest GDT or LDT.
const DESCS_PER_FRAME: usize = crate::traps::gdt::DESCS_PER_FRAME;

/// Whether a data segment register can hold `desc` (loaded at CPL0, used at CPL3):
/// present, data or readable code, DPL 3.
pub fn loadable_data_descriptor(desc: u64) -> bool {
    let present = desc & DESC_PRESENT != 0;
    let code_data = desc & DESC_CODE_DATA != 0;
    let readable = desc & DESC_CODE == 0 || desc & DESC_READABLE != 0;
    let dpl3 = (desc >> DESC_DPL_SHIFT) & 3 == 3;
    present && code_data && readable && dpl3
}

/// The 32-bit base of a code/data descriptor.
pub fn descriptor_base(desc: u64) -> u64 {
    ((desc >> 16) & 0xff_ffff) | (((desc >> 56) & 0xff) << 24)
}

/// Whether `sel` is one of the hypervisor's flat DPL-3 selectors (any RPL).
fn is_reserved_flat(sel: u16) -> bool {
    [FLAT_RING3_CS32, FLAT_RING3_SS64, FLAT_RING3_CS64]
        .iter()
        .any(|&flat| flat & !SEL_RPL == sel & !SEL_RPL)
}

/// The words of Xen's failsafe frame, lowest address first: `cs` already has its RPL
/// adjusted, `saved_mask` is the event mask before entry, `sels` the selectors the vCPU
/// had saved.
pub fn failsafe_frame_words(
    frame: &GuestFrame,
    sels: DataSelectors,
    cs: u64,
    saved_mask: u8,
) -> heapless::Vec<u64, MAX_BOUNCE_WORDS> {
    // The same frame as an exception bounce without error code, selectors after R11.
    let plain = super::bounce_frame_words(frame, cs, None, saved_mask);
    let mut w = heapless::Vec::new();
    let _ = w.extend_from_slice(&plain[..2]);
    for sel in sels.to_array() {
        let _ = w.push(u64::from(sel));
    }
    let _ = w.extend_from_slice(&plain[2..]);
    w
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Descriptor `index` of a guest table made of `frames` with `entries` entries, or
    /// `None` beyond its limit.
    fn guest_descriptor(&self, frames: &[u64], entries: usize, index: usize) -> Option<u64> {
        if index >= entries {
            return None;
        }
        let mfn = *frames.get(index / DESCS_PER_FRAME)?;
        let at = Mfn(mfn).maddr() + (index % DESCS_PER_FRAME * 8) as u64;
        self.mem.read_u64(at).ok()
    }

    /// Whether domain `idx`'s vCPU, with its GDT and LDT on the CPU, can load `sel` into
    /// a data segment register without a fault.
    pub(crate) fn data_selector_ok(&self, idx: usize, sel: u16) -> bool {
        self.data_selector_base(idx, sel).is_some()
    }

    /// The segment base loading `sel` gives domain `idx`'s vCPU (0 for null and the
    /// flat selectors), or `None` if it cannot be loaded (see [`Self::data_selector_ok`]).
    fn data_selector_base(&self, idx: usize, sel: u16) -> Option<u64> {
        let index = usize::from(sel >> SEL_INDEX_SHIFT);
        let v = self.cur(idx);
        let desc = if sel & SEL_TABLE_LDT != 0 {
            self.guest_descriptor(v.ldt.frames(), v.ldt.entries(), index)?
        } else if index == 0 {
            return Some(0);
        } else if index < v.gdt.entries() {
            self.guest_descriptor(v.gdt.frames(), v.gdt.entries(), index)?
        } else {
            // Entries between the guest's GDT and the reserved ones are zeroed on the CPU.
            return is_reserved_flat(sel).then_some(0);
        };
        loadable_data_descriptor(desc).then_some(descriptor_base(desc))
    }

    /// `set_segment_base(SEGBASE_GS_USER_SEL, sel)` from kernel mode: loads `sel` (RPL
    /// raised to 3 unless null) into GS and makes the base it brings the user GS base,
    /// as Xen. A selector that cannot be loaded is loaded as null, without error (Xen
    /// never fails this call; Linux treats a failure as a bug).
    pub(crate) fn load_gs_user_selector(&mut self, idx: usize, sel: u16) {
        let sel = if sel > SEL_RPL { sel | SEL_RPL } else { sel };
        let (sel, base) = match self.data_selector_base(idx, sel) {
            Some(base) => (sel, base),
            None => (0, 0),
        };
        let bases = self.platform.segment_bases();
        let sels = DataSelectors {
            gs: sel,
            ..self.platform.data_selectors()
        };
        self.platform.load_data_selectors(sels);
        // In kernel mode the live GS base is the kernel's: it stays.
        self.platform.set_segment_bases(bases.0, bases.1);
        self.platform.set_inactive_gs_base(base);
        self.cur_mut(idx).traps.gs_base_user = base;
    }

    /// Loads the running vCPU's saved data selectors as it is switched in (its GDT and
    /// LDT already on the CPU), nulling any that cannot be loaded, and restores its FS/GS
    /// bases. If one was nulled: bounces to the failsafe callback, or crashes the domain
    /// without one. Returns whether the domain is still runnable.
    pub(crate) fn load_segments(&mut self, idx: usize, frame: &mut GuestFrame) -> bool {
        let saved = self.cur(idx).traps.selectors;
        let mut all_ok = true;
        let loaded = DataSelectors::from_array(saved.to_array().map(|sel| {
            let ok = self.data_selector_ok(idx, sel);
            all_ok &= ok;
            if ok { sel } else { 0 }
        }));
        let (fs_base, gs_base) = self.platform.segment_bases();
        self.platform.load_data_selectors(loaded);
        self.platform.set_segment_bases(fs_base, gs_base);
        self.cur_mut(idx).traps.selectors = loaded;
        if all_ok {
            return true;
        }
        let failsafe = self.cur(idx).traps.failsafe;
        let [ds, es, fs, gs] = saved.to_array();
        if failsafe.address == 0 {
            self.end_domain(
                idx,
                DomainState::Crashed,
                format_args!(
                    "crashed: cannot load data segment selectors (ds={ds:#x} es={es:#x} fs={fs:#x} gs={gs:#x}) and no failsafe callback"
                ),
            );
            return false;
        }
        let bounced = self.bounce_with(
            idx,
            frame,
            failsafe.address,
            failsafe.mask_events,
            |f, cs, saved_mask| failsafe_frame_words(f, saved, cs, saved_mask),
        );
        match bounced {
            Ok(()) => {
                self.cur_mut(idx).frame = *frame;
                true
            }
            Err(BadGuestStack(sp)) => {
                self.end_domain(
                    idx,
                    DomainState::Crashed,
                    format_args!(
                        "crashed: failsafe callback (ds={ds:#x} es={es:#x} fs={fs:#x} gs={gs:#x}) with a bad guest stack (rsp={sp:#x})"
                    ),
                );
                false
            }
        }
    }
}

#[cfg(test)]
#[path = "segments_tests.rs"]
mod tests;
