//! Xen's typed-frame rules for PV page tables.
//!
//! Every frame a domain owns has a type with a type count (see [`TypeState`]):
//! a writable mapping of a frame takes a `Writable` reference; a table entry, a pin or a
//! CR3 load takes an `Ln` reference on the table it points to. A frame holds one type
//! while its count is non-zero, so a page table can never be writable-mapped, and a
//! writable-mapped frame can never become a page table.
//!
//! The first `Ln` reference validates the table: every present entry is checked (flags,
//! ownership) and takes its own reference, recursively. The last reference going away
//! devalidates it: the references of its entries are dropped, recursively, so those
//! frames can be mapped writable again (GRUB relies on that after unpinning its
//! bootstrap tables).
//!
//! Deliberate choices:
//! * Linear (recursive) page tables are refused: an entry may only point at a table of
//!   the level below, never at a table of its own level.
//! * The G bit is accepted in L1 entries but cleared, so no guest mapping survives a CR3
//!   switch to another domain.
//! * Present entries get the USER bit (the PV kernel runs in ring 3), as Xen rewrites
//!   them; tables validated from guest memory are rewritten in place.
//! * L4 slots 256..=271 belong to the hypervisor: validation overwrites them with the
//!   hypervisor's entries, and [`mod_entry`] refuses to change them.

use super::frames::{Frames, PageType, TypeState};
use crate::dlog::{Dbg, hv_debug};
use crate::platform::MachineMemory;
use bitflags::bitflags;
use guest_abi::layout::{FIRST_HYPERVISOR_L4_SLOT, LAST_HYPERVISOR_L4_SLOT, PAGE_SIZE};
use guest_abi::{DomId, Errno, Mfn};

bitflags! {
    /// Bits of an x86_64 page-table entry other than the frame address.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Pte: u64 {
        const PRESENT = 1 << 0;
        const RW = 1 << 1;
        const USER = 1 << 2;
        const PWT = 1 << 3;
        const PCD = 1 << 4;
        const ACCESSED = 1 << 5;
        const DIRTY = 1 << 6;
        /// PAT at L1, page size (superpage) above.
        const PAT_PS = 1 << 7;
        const GLOBAL = 1 << 8;
        /// Bits 9..=11, free for the guest.
        const AVAIL = 0b111 << 9;
        /// Bits 52..=61, free for the guest.
        const AVAIL_HIGH = 0x3ff << 52;
        /// Bit 62: Xen's grant-mapping marker, never accepted from a guest.
        const GNTTAB = 1 << 62;
        const NX = 1 << 63;
    }
}

/// Bits 12..=51: the machine address of the next table or the page.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Entries per table.
const ENTRIES: usize = PAGE_SIZE / 8;

/// Flags a present L1 entry may carry (an ordinary domain: no PAT/PCD/PWT).
const L1_ALLOWED: Pte = Pte::PRESENT
    .union(Pte::RW)
    .union(Pte::USER)
    .union(Pte::ACCESSED)
    .union(Pte::DIRTY)
    .union(Pte::GLOBAL)
    .union(Pte::AVAIL)
    .union(Pte::AVAIL_HIGH)
    .union(Pte::NX);
/// Flags a present L2, L3 or L4 entry may carry (no superpages, no G, no caching bits).
const UPPER_ALLOWED: Pte = Pte::PRESENT
    .union(Pte::RW)
    .union(Pte::USER)
    .union(Pte::ACCESSED)
    .union(Pte::DIRTY)
    .union(Pte::AVAIL)
    .union(Pte::AVAIL_HIGH)
    .union(Pte::NX);

/// Whether `slot` of an L4 belongs to the hypervisor.
pub const fn is_hypervisor_l4_slot(slot: usize) -> bool {
    slot >= FIRST_HYPERVISOR_L4_SLOT && slot <= LAST_HYPERVISOR_L4_SLOT
}

/// Frame an entry points at.
pub const fn entry_mfn(entry: u64) -> Mfn {
    Mfn((entry & ADDR_MASK) >> 12)
}

fn present(entry: u64) -> bool {
    entry & Pte::PRESENT.bits() != 0
}

/// Everything the typing rules need: machine memory, the frame table, the domain whose
/// tables are handled, and the hypervisor's L4 entries.
pub struct PtCtx<'a, M: MachineMemory> {
    pub mem: &'a M,
    pub frames: &'a mut Frames,
    pub dom: DomId,
    pub hv_slots: &'a [u64; 16],
}

/// Checks a present entry of a `level` table and returns it as it is stored (USER
/// forced; G cleared at L1). `EINVAL` for a forbidden flag.
pub fn check_entry(entry: u64, level: u32) -> Result<u64, Errno> {
    let allowed = if level == 1 {
        L1_ALLOWED
    } else {
        UPPER_ALLOWED
    };
    let flags = entry & !ADDR_MASK;
    if flags & !allowed.bits() != 0 {
        return Err(Errno::EINVAL);
    }
    Ok((entry | Pte::USER.bits()) & !Pte::GLOBAL.bits())
}

impl<M: MachineMemory> PtCtx<'_, M> {
    fn owned(&self, mfn: Mfn) -> bool {
        self.frames.owner(mfn) == Some(self.dom)
    }

    /// Takes a type reference of type `ty` (and a general reference) on `mfn`,
    /// validating it if it becomes a page table. `EINVAL` if the frame is not the
    /// domain's, holds another type, or does not validate.
    pub fn get_type(&mut self, mfn: Mfn, ty: PageType) -> Result<(), Errno> {
        if !self.owned(mfn) {
            hv_debug!(
                "pt d{=u16}: mfn {=u64:#x} (wanted as {}) is not the domain's",
                self.dom.0,
                mfn.0,
                Dbg(&ty)
            );
            return Err(Errno::EINVAL);
        }
        let st = self.frames.type_state(mfn).ok_or(Errno::EINVAL)?;
        if st.count > 0 {
            if st.ty != ty {
                hv_debug!(
                    "pt d{=u16}: mfn {=u64:#x} wanted as {} but has type {} ({=u32} refs)",
                    self.dom.0,
                    mfn.0,
                    Dbg(&ty),
                    Dbg(&st.ty),
                    st.count
                );
                return Err(Errno::EINVAL);
            }
            let count = st.count.checked_add(1).ok_or(Errno::EINVAL)?;
            if !self.frames.get_ref(mfn) {
                return Err(Errno::EINVAL);
            }
            self.frames.set_type_state(mfn, TypeState { count, ..st });
            return Ok(());
        }
        if !self.frames.get_ref(mfn) {
            return Err(Errno::EINVAL);
        }
        // Typed before its entries are looked at, so an entry pointing back at the table
        // itself (writable self-map, linear table) finds the type and is refused.
        self.frames.set_type_state(
            mfn,
            TypeState {
                ty,
                count: 1,
                pinned: false,
            },
        );
        if let Some(level) = ty.pt_level()
            && let Err(e) = self.validate(mfn, level)
        {
            self.frames.set_type_state(
                mfn,
                TypeState {
                    ty: PageType::None,
                    count: 0,
                    pinned: false,
                },
            );
            self.frames.put_ref(mfn);
            return Err(e);
        }
        Ok(())
    }

    /// Drops a type reference (and a general reference) taken by [`Self::get_type`];
    /// the last one devalidates a page table. A frame without type references is left
    /// alone (a hostile or buggy caller cannot underflow the count).
    pub fn put_type(&mut self, mfn: Mfn) {
        let Some(st) = self.frames.type_state(mfn) else {
            return;
        };
        if st.count == 0 {
            return;
        }
        self.frames.put_ref(mfn);
        if st.count > 1 {
            let count = st.count - 1;
            self.frames.set_type_state(mfn, TypeState { count, ..st });
            return;
        }
        self.frames.set_type_state(
            mfn,
            TypeState {
                ty: PageType::None,
                count: 0,
                pinned: false,
            },
        );
        if let Some(level) = st.ty.pt_level() {
            self.devalidate(mfn, level);
        }
    }

    /// The references entry `entry` (present, checked) of a `level` table holds.
    fn get_entry_ref(&mut self, entry: u64, level: u32) -> Result<(), Errno> {
        let target = entry_mfn(entry);
        if level == 1 {
            if entry & Pte::RW.bits() != 0 {
                self.get_type(target, PageType::Writable)
            } else if self.owned(target) && self.frames.get_ref(target) {
                Ok(())
            } else {
                Err(Errno::EINVAL)
            }
        } else {
            let below = PageType::of_level(level - 1).ok_or(Errno::EINVAL)?;
            self.get_type(target, below)
        }
    }

    fn put_entry_ref(&mut self, entry: u64, level: u32) {
        let target = entry_mfn(entry);
        if level == 1 && entry & Pte::RW.bits() == 0 {
            self.frames.put_ref(target);
        } else {
            self.put_type(target);
        }
    }

    /// Slots of a `level` table the guest owns.
    fn guest_slots(level: u32) -> impl Iterator<Item = usize> {
        (0..ENTRIES).filter(move |&i| level != 4 || !is_hypervisor_l4_slot(i))
    }

    fn read_entry(&self, table: Mfn, slot: usize) -> Result<u64, Errno> {
        self.mem
            .read_u64(table.maddr() + slot as u64 * 8)
            .map_err(|_| Errno::EINVAL)
    }

    fn write_entry(&self, table: Mfn, slot: usize, entry: u64) -> Result<(), Errno> {
        // Remembered guest translations may go through this entry.
        self.frames.tlb.flush();
        self.mem
            .write_u64(table.maddr() + slot as u64 * 8, entry)
            .map_err(|_| Errno::EINVAL)
    }

    /// Checks every present entry of a fresh `level` table and takes its references;
    /// on failure, drops the ones already taken.
    fn validate(&mut self, table: Mfn, level: u32) -> Result<(), Errno> {
        self.frames.add_work(ENTRIES as u64);
        let mut done = 0;
        let result = (|| {
            for slot in 0..ENTRIES {
                done = slot;
                if level == 4 && is_hypervisor_l4_slot(slot) {
                    let hv = self.hv_slots[slot - FIRST_HYPERVISOR_L4_SLOT];
                    self.write_entry(table, slot, hv)?;
                    continue;
                }
                let entry = self.read_entry(table, slot)?;
                if !present(entry) {
                    continue;
                }
                let stored = check_entry(entry, level)?;
                if stored != entry {
                    self.write_entry(table, slot, stored)?;
                }
                self.get_entry_ref(stored, level)?;
            }
            done = ENTRIES;
            Ok(())
        })();
        if result.is_err() {
            hv_debug!(
                "pt d{=u16}: L{=u32} table mfn {=u64:#x} refused at slot {=usize} (entry {=u64:#x})",
                self.dom.0,
                level,
                table.0,
                done,
                self.read_entry(table, done).unwrap_or(0)
            );
            for slot in Self::guest_slots(level).take_while(|&s| s < done) {
                if let Ok(entry) = self.read_entry(table, slot)
                    && present(entry)
                {
                    self.put_entry_ref(entry, level);
                }
            }
        }
        result
    }

    /// Drops the references of every present entry of a `level` table.
    fn devalidate(&mut self, table: Mfn, level: u32) {
        self.frames.add_work(ENTRIES as u64);
        for slot in Self::guest_slots(level) {
            if let Ok(entry) = self.read_entry(table, slot)
                && present(entry)
            {
                self.put_entry_ref(entry, level);
            }
        }
    }

    /// `MMUEXT_PIN_Ln_TABLE`: validates and pins `mfn` as a `level` table.
    pub fn pin(&mut self, mfn: Mfn, level: u32) -> Result<(), Errno> {
        let ty = PageType::of_level(level).ok_or(Errno::EINVAL)?;
        let st = self.frames.type_state(mfn).ok_or(Errno::EINVAL)?;
        if st.pinned || !self.owned(mfn) {
            return Err(Errno::EINVAL);
        }
        self.get_type(mfn, ty)?;
        if let Some(st) = self.frames.type_state(mfn) {
            self.frames
                .set_type_state(mfn, TypeState { pinned: true, ..st });
        }
        Ok(())
    }

    /// `MMUEXT_UNPIN_TABLE`: drops the pin's reference (devalidating the table if that
    /// was the last one).
    pub fn unpin(&mut self, mfn: Mfn) -> Result<(), Errno> {
        let st = self.frames.type_state(mfn).ok_or(Errno::EINVAL)?;
        if !st.pinned || !self.owned(mfn) {
            return Err(Errno::EINVAL);
        }
        self.frames.set_type_state(
            mfn,
            TypeState {
                pinned: false,
                ..st
            },
        );
        self.put_type(mfn);
        Ok(())
    }

    /// Loads `new` as a root (kernel or user L4) in place of `old` (0 = none): takes an
    /// L4 reference on the new one first, then drops the old one's.
    pub fn switch_root(&mut self, new: Mfn, old: Option<Mfn>) -> Result<(), Errno> {
        self.get_type(new, PageType::L4)?;
        if let Some(old) = old {
            self.put_type(old);
        }
        Ok(())
    }

    /// Writes `new` into the entry at machine address `ptr` of one of the domain's page
    /// tables (`mmu_update`), keeping every reference right: the new entry's references
    /// are taken before the old one's are dropped. `preserve_ad` keeps the old A/D bits.
    ///
    /// A frame that is not a page table is written as plain memory if it can be typed
    /// writable (as Xen does).
    pub fn mod_entry(&mut self, ptr: u64, new: u64, preserve_ad: bool) -> Result<(), Errno> {
        let table = Mfn::containing(ptr);
        if !self.owned(table) {
            return Err(Errno::EINVAL);
        }
        let slot = ((ptr & (PAGE_SIZE as u64 - 1)) / 8) as usize;
        let st = self.frames.type_state(table).ok_or(Errno::EINVAL)?;
        let level = match st.ty.pt_level() {
            Some(level) if st.count > 0 => level,
            _ => {
                // Not a page table: an ordinary write, allowed only while the frame can
                // be typed writable (so never a GDT/LDT page).
                self.get_type(table, PageType::Writable)?;
                let r = self.write_entry(table, slot, new);
                self.put_type(table);
                return r;
            }
        };
        if level == 4 && is_hypervisor_l4_slot(slot) {
            return Err(Errno::EINVAL);
        }
        let old = self.read_entry(table, slot)?;
        let mut new = new;
        if preserve_ad {
            new |= old & (Pte::ACCESSED | Pte::DIRTY).bits();
        }
        if present(new) {
            new = check_entry(new, level)?;
            self.get_entry_ref(new, level)?;
        }
        if let Err(e) = self.write_entry(table, slot, new) {
            if present(new) {
                self.put_entry_ref(new, level);
            }
            return Err(e);
        }
        if present(old) {
            self.put_entry_ref(old, level);
        }
        Ok(())
    }

    /// Machine address of the L1 entry mapping `va` under the L4 `root`, if the walk
    /// reaches a present L1 table. `va` must be a guest address (checked by the caller).
    pub fn l1_entry_maddr(&self, root: Mfn, va: u64) -> Result<u64, Errno> {
        let mut table = root;
        for level in (2..=4u32).rev() {
            let slot = ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
            let entry = self.read_entry(table, slot)?;
            if !present(entry) {
                return Err(Errno::EINVAL);
            }
            table = entry_mfn(entry);
        }
        let st = self.frames.type_state(table).ok_or(Errno::EINVAL)?;
        if st.ty != PageType::L1 || st.count == 0 || !self.owned(table) {
            return Err(Errno::EINVAL);
        }
        Ok(table.maddr() + ((va >> 12) & 0x1ff) * 8)
    }
}

#[cfg(test)]
#[path = "pagetable_tests.rs"]
mod tests;
