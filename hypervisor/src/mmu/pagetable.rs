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
//! Preemption, as Xen's (`PGT_partial`, `nr_validated_ptes`, `PTF_partial_set`): in a
//! context with a [`Budget`] (the batch hypercalls), (de)validation stops at an entry of an
//! L2, L3 or L4 table once the entry into the hypervisor has (de)validated its budget of
//! entries, every table of the chain being left *partial* ([`Partial`] in the frame
//! table: entries `0..next` hold their references, entry `next` a general one if `set`).
//! A partial table has type count 1 and a general reference, both owned by the partial
//! state, and is retried by the continuation, which resumes where it stopped:
//! * The next reference of the same type (whoever takes it: the retried element, another
//!   pin, an entry of another table) takes the partial state over and continues
//!   validating from `next` — a partially devalidated table too, whose entries `0..next`
//!   still hold their references. Another type is refused with `EINVAL` (Xen: a type
//!   count of 1 of another type), so a partial table can neither be mapped writable nor
//!   be written through `mmu_update`, nor be loaded as a root of another level. Nothing
//!   returns `ERESTART` to a different operation: there is no concurrent validation to
//!   wait for on one CPU.
//! * The first entry of each table in a call is done whatever the budget, so every call
//!   makes progress; an entry into the hypervisor does at most its budget plus about two
//!   tables' worth (an L1 is never partial: it is validated whole, as in Xen).
//! * A validation failing after it took references leaves the failing table partial
//!   (having absorbed its failing child) as the context's [`PtCtx::deferred`] drop (Xen's
//!   `old_guest_table`), as does an interrupted devalidation; the vCPU keeps it and the
//!   next `mmu_update`/`mmuext_op` finishes it first, preemptibly. Without a budget
//!   (builder, GDT, plain `get_type`/`put_type`) everything runs to its end at once.
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

use super::frames::{Frames, PageType, Partial, TypeState};
use crate::dlog::{Dbg, hv_debug};
use crate::platform::MachineMemory;
use bitflags::bitflags;
use xen_pv_abi::layout::{FIRST_HYPERVISOR_L4_SLOT, LAST_HYPERVISOR_L4_SLOT, PAGE_SIZE};
use xen_pv_abi::{DomId, Errno, Mfn};
use zerocopy::IntoBytes;

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
/// Entries read at once when looking for the present ones of an L1.
const SCAN_CHUNK: usize = 64;

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

/// Whether a present L1 entry is a grant mapping (made by `GNTTABOP_map_grant_ref`).
pub fn is_grant_entry(entry: u64) -> bool {
    present(entry) && entry & Pte::GNTTAB.bits() != 0
}

/// Why a typing operation of a preemptible context stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Refused with this error. In a preemptible context the references taken so far
    /// may still have to be dropped: see [`PtCtx::deferred`].
    Fail(Errno),
    /// The work budget of this entry into the hypervisor is used up (Xen's `-ERESTART`):
    /// where the (de)validation stands is recorded in the frame table; run the same
    /// operation again later to continue it.
    Preempted,
}

impl From<Errno> for Stop {
    fn from(e: Errno) -> Stop {
        Stop::Fail(e)
    }
}

/// The work budget of one entry into the hypervisor: (de)validation stops (at the next
/// entry of an L2, L3 or L4 table) once [`Frames::work`] went `limit` past `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// `Frames::work` when the entry began.
    pub start: u64,
    /// Entries it may (de)validate.
    pub limit: u64,
}

/// Everything the typing rules need: machine memory, the frame table, the domain whose
/// tables are handled, and the hypervisor's L4 entries.
pub struct PtCtx<'a, M: MachineMemory> {
    pub mem: &'a M,
    pub frames: &'a mut Frames,
    pub dom: DomId,
    pub hv_slots: &'a [u64; 16],
    /// `Some`: (de)validation is preemptible and stops with [`Stop::Preempted`] once the
    /// budget is used. `None`: everything runs to its end.
    pub budget: Option<Budget>,
    /// A reference drop still to finish (Xen's `old_guest_table`), left by an
    /// interrupted devalidation or a failed validation in a preemptible context. It holds
    /// one general reference on the frame; the frame's type reference belongs to its
    /// [`Partial`] state while it has one. The owner of the context keeps it (the vCPU)
    /// and every operation finishes it first.
    pub deferred: Option<Mfn>,
}

impl<'a, M: MachineMemory> PtCtx<'a, M> {
    /// A context that runs everything to its end (no budget, nothing deferred).
    pub fn new(mem: &'a M, frames: &'a mut Frames, dom: DomId, hv_slots: &'a [u64; 16]) -> Self {
        PtCtx {
            mem,
            frames,
            dom,
            hv_slots,
            budget: None,
            deferred: None,
        }
    }
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

/// A devalidation was interrupted (it cannot fail otherwise).
struct Interrupted;

const NOT_PARTIAL: TypeState = TypeState {
    ty: PageType::None,
    count: 0,
    pinned: false,
};

impl<M: MachineMemory> PtCtx<'_, M> {
    fn owned(&self, mfn: Mfn) -> bool {
        self.frames.owner(mfn) == Some(self.dom)
    }

    fn over_budget(&self) -> bool {
        self.budget
            .is_some_and(|b| self.frames.work().wrapping_sub(b.start) >= b.limit)
    }

    /// Runs `f` without a budget and finishes what it deferred: the operations whose
    /// callers cannot continue them later.
    fn run_whole<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let budget = self.budget.take();
        let _ = self.finish_deferred();
        let r = f(self);
        let _ = self.finish_deferred();
        self.budget = budget;
        r
    }

    /// Takes a type reference of type `ty` (and a general reference) on `mfn`,
    /// validating it if it becomes a page table (to the end: no budget). `EINVAL` if the
    /// frame is not the domain's, holds another type (a page table being validated or
    /// devalidated included), or does not validate.
    pub fn get_type(&mut self, mfn: Mfn, ty: PageType) -> Result<(), Errno> {
        self.run_whole(|pt| match pt.get_ref_and_type(mfn, ty, false, false) {
            Ok(()) => Ok(()),
            Err(Stop::Fail(e)) => Err(e),
            Err(Stop::Preempted) => Err(Errno::EINVAL),
        })
    }

    /// Drops a type reference (and a general reference) taken by [`Self::get_type`];
    /// the last one devalidates a page table (to the end). A frame without type
    /// references is left alone (a hostile or buggy caller cannot underflow the count).
    pub fn put_type(&mut self, mfn: Mfn) {
        self.run_whole(|pt| {
            let _ = pt.put_ref_and_type(mfn, false);
        });
    }

    /// Finishes the deferred reference drop, if any (Xen's `put_old_guest_table`).
    pub fn finish_deferred(&mut self) -> Result<(), Stop> {
        let Some(mfn) = self.deferred else {
            return Ok(());
        };
        self.put_ref_and_type(mfn, true)
            .map_err(|Interrupted| Stop::Preempted)?;
        self.deferred = None;
        Ok(())
    }

    /// Xen's `get_page_and_type_from_mfn`: a general and a type reference on `mfn`.
    /// `held`: the caller's entry already holds the general reference (its target's
    /// validation was interrupted before). `retain`: when preempted, keep the general
    /// reference (it becomes the caller's entry's). On failure the reference is also
    /// kept when the frame became the deferred drop (which then owns it).
    fn get_ref_and_type(
        &mut self,
        mfn: Mfn,
        ty: PageType,
        held: bool,
        retain: bool,
    ) -> Result<(), Stop> {
        if !self.owned(mfn) {
            hv_debug!(
                "pt d{=u16}: mfn {=u64:#x} (wanted as {}) is not the domain's",
                self.dom.0,
                mfn.0,
                Dbg(&ty)
            );
            return Err(Errno::EINVAL.into());
        }
        if !held && !self.frames.get_ref(mfn) {
            return Err(Errno::EINVAL.into());
        }
        let r = self.get_type_only(mfn, ty);
        let keep = match r {
            Ok(()) => true,
            Err(_) if held => true,
            Err(Stop::Preempted) => retain,
            Err(Stop::Fail(_)) => self.deferred == Some(mfn),
        };
        if !keep {
            self.frames.put_ref(mfn);
        }
        r
    }

    /// Xen's `_get_page_type`: one more type reference, validating a table whose count
    /// goes 0 -> 1 and continuing the interrupted (de)validation of a partial one (its
    /// references are taken over).
    fn get_type_only(&mut self, mfn: Mfn, ty: PageType) -> Result<(), Stop> {
        let st = self.frames.type_state(mfn).ok_or(Errno::EINVAL)?;
        if st.count == 0 {
            let Some(level) = ty.pt_level() else {
                self.frames.set_type_state(
                    mfn,
                    TypeState {
                        ty,
                        count: 1,
                        pinned: false,
                    },
                );
                return Ok(());
            };
            // The general reference a partial state owns is taken now, so an
            // interruption cannot fail.
            if !self.frames.get_ref(mfn) {
                return Err(Errno::EINVAL.into());
            }
            // Typed before its entries are looked at, so an entry pointing back at the
            // table itself (writable self-map, linear table) finds the type and is
            // refused.
            self.frames.set_type_state(
                mfn,
                TypeState {
                    ty,
                    count: 1,
                    pinned: false,
                },
            );
            self.frames.set_partial(mfn, None);
            return self.promote(mfn, level, 0, false);
        }
        if st.ty != ty {
            hv_debug!(
                "pt d{=u16}: mfn {=u64:#x} wanted as {} but has type {} ({=u32} refs)",
                self.dom.0,
                mfn.0,
                Dbg(&ty),
                Dbg(&st.ty),
                st.count
            );
            return Err(Errno::EINVAL.into());
        }
        if let Some(p) = self.frames.partial(mfn) {
            // Interrupted earlier (validation or devalidation alike: entries 0..next
            // hold references): continue validating from there. The partial state's
            // type reference becomes ours, its general reference is dropped at the end.
            let level = ty.pt_level().ok_or(Errno::EINVAL)?;
            self.frames.set_partial(mfn, None);
            return self.promote(mfn, level, p.next.into(), p.set);
        }
        let count = st.count.checked_add(1).ok_or(Errno::EINVAL)?;
        self.frames.set_type_state(mfn, TypeState { count, ..st });
        Ok(())
    }

    /// Validates `table` from entry `next` on (Xen's `validate_page`). A general reference
    /// for the partial state is held on entry and dropped when it ends.
    fn promote(&mut self, table: Mfn, level: u32, next: usize, set: bool) -> Result<(), Stop> {
        let r = self.validate_from(table, level, next, set);
        match r {
            // Interrupted: the partial state keeps its references.
            Err(Stop::Preempted) => {}
            // Left partial as the deferred drop, which undoes it later.
            Err(Stop::Fail(_)) if self.deferred == Some(table) => {}
            Ok(()) => self.frames.put_ref(table),
            Err(Stop::Fail(_)) => {
                self.frames.set_type_state(table, NOT_PARTIAL);
                self.frames.set_partial(table, None);
                self.frames.put_ref(table);
            }
        }
        r
    }

    /// Checks the present entries of a `level` table from `start` on and takes their
    /// references; entries `0..start` hold theirs already (and entry `start` a general
    /// one if `set`). Preemptible at every entry but the first (so each call makes
    /// progress) of an L2, L3 or L4 table. On failure the table is left partial as the
    /// deferred drop if it holds any reference, with the entries' references.
    fn validate_from(
        &mut self,
        table: Mfn,
        level: u32,
        start: usize,
        mut set: bool,
    ) -> Result<(), Stop> {
        let mut slot = start;
        while slot < ENTRIES {
            if level == 1 && !set {
                // Empty entries need nothing: skipped in bulk (counted all the same).
                let next = self.next_present(table, slot);
                self.frames.add_work((next - slot) as u64);
                slot = next;
                if slot == ENTRIES {
                    break;
                }
            }
            if slot > start && level > 1 && self.over_budget() {
                self.frames.set_partial(
                    table,
                    Some(Partial {
                        next: slot as u16,
                        set: false,
                    }),
                );
                return Err(Stop::Preempted);
            }
            self.frames.add_work(1);
            match self.validate_entry(table, level, slot, set) {
                Ok(()) => set = false,
                Err(Stop::Preempted) => {
                    self.frames.set_partial(
                        table,
                        Some(Partial {
                            next: slot as u16,
                            set: true,
                        }),
                    );
                    return Err(Stop::Preempted);
                }
                Err(Stop::Fail(e)) => {
                    hv_debug!(
                        "pt d{=u16}: L{=u32} table mfn {=u64:#x} refused at slot {=usize} (entry {=u64:#x})",
                        self.dom.0,
                        level,
                        table.0,
                        slot,
                        self.read_entry(table, slot).unwrap_or(0)
                    );
                    if level == 1 {
                        // As Xen's promote_l1_table, an L1 undoes itself at once (at most
                        // 512 entries, data pages only): L1s are never partial.
                        let _ = self.devalidate_from(table, 1, slot, false);
                        return Err(Stop::Fail(e));
                    }
                    // A target left partial by its own failure is now held by this
                    // entry (its general reference), as one resumed with `set`.
                    let target = self.read_entry(table, slot).map(entry_mfn).ok();
                    if target.is_some() && self.deferred == target {
                        self.deferred = None;
                        set = true;
                    }
                    if slot > 0 || set {
                        self.frames.set_partial(
                            table,
                            Some(Partial {
                                next: slot as u16,
                                set,
                            }),
                        );
                        self.deferred = Some(table);
                    }
                    return Err(Stop::Fail(e));
                }
            }
            slot += 1;
        }
        Ok(())
    }

    /// The first entry from `from` on of `table` that is present (or one whose read
    /// failed: the per-entry path reports that), `ENTRIES` if none.
    fn next_present(&self, table: Mfn, from: usize) -> usize {
        let mut buf = [0u64; SCAN_CHUNK];
        let mut slot = from;
        while slot < ENTRIES {
            let n = SCAN_CHUNK.min(ENTRIES - slot);
            let chunk = &mut buf[..n];
            if self
                .mem
                .read(table.maddr() + slot as u64 * 8, chunk.as_mut_bytes())
                .is_err()
            {
                return slot;
            }
            match chunk.iter().position(|&e| present(u64::from_le(e))) {
                Some(i) => return slot + i,
                None => slot += n,
            }
        }
        ENTRIES
    }

    /// The last entry at or below `upto` of `table` that is present (or one whose read
    /// failed), `None` if none.
    fn prev_present(&self, table: Mfn, upto: usize) -> Option<usize> {
        let mut buf = [0u64; SCAN_CHUNK];
        let mut end = upto + 1;
        while end > 0 {
            let n = SCAN_CHUNK.min(end);
            let first = end - n;
            let chunk = &mut buf[..n];
            if self
                .mem
                .read(table.maddr() + first as u64 * 8, chunk.as_mut_bytes())
                .is_err()
            {
                return Some(end - 1);
            }
            if let Some(i) = chunk.iter().rposition(|&e| present(u64::from_le(e))) {
                return Some(first + i);
            }
            end = first;
        }
        None
    }

    /// Validates entry `slot` of a `level` table (`set`: its target's validation was
    /// interrupted and the entry holds a general reference on it).
    fn validate_entry(
        &mut self,
        table: Mfn,
        level: u32,
        slot: usize,
        set: bool,
    ) -> Result<(), Stop> {
        if level == 4 && is_hypervisor_l4_slot(slot) {
            let hv = self.hv_slots[slot - FIRST_HYPERVISOR_L4_SLOT];
            return Ok(self.write_entry(table, slot, hv)?);
        }
        let entry = self.read_entry(table, slot)?;
        if !present(entry) {
            return Ok(());
        }
        let stored = check_entry(entry, level)?;
        if stored != entry {
            self.write_entry(table, slot, stored)?;
        }
        self.get_entry_ref(stored, level, set, true)
    }

    /// Xen's `_put_page_type` + `put_page`: drops a type reference and, unless
    /// interrupted, the general one. `held`: only the partial reference an entry (or the
    /// deferred drop) holds — nothing but the general reference to drop unless the
    /// frame is still partial, whose devalidation then continues. When interrupted the
    /// general reference stays with the caller.
    fn put_ref_and_type(&mut self, mfn: Mfn, held: bool) -> Result<(), Interrupted> {
        self.put_type_only(mfn, held)?;
        self.frames.put_ref(mfn);
        Ok(())
    }

    fn put_type_only(&mut self, mfn: Mfn, held: bool) -> Result<(), Interrupted> {
        let Some(st) = self.frames.type_state(mfn) else {
            return Ok(());
        };
        let partial = self.frames.partial(mfn);
        if held {
            let (Some(p), Some(level)) = (partial, st.ty.pt_level()) else {
                return Ok(());
            };
            // The partial state's references are ours now.
            self.frames.set_partial(mfn, None);
            return self.demote(mfn, level, p.next.into(), p.set);
        }
        // A full reference is never held on a partial frame (its only type reference
        // is the partial state's): leave it alone rather than break it.
        if st.count == 0 || partial.is_some() {
            return Ok(());
        }
        if st.count > 1 {
            let count = st.count - 1;
            self.frames.set_type_state(mfn, TypeState { count, ..st });
            return Ok(());
        }
        let Some(level) = st.ty.pt_level() else {
            self.frames.set_type_state(mfn, NOT_PARTIAL);
            return Ok(());
        };
        // The general reference a partial state owns, taken now so an interruption
        // cannot fail; without it the devalidation runs to its end.
        if !self.frames.get_ref(mfn) {
            let budget = self.budget.take();
            let _ = self.devalidate_from(mfn, level, ENTRIES, false);
            self.budget = budget;
            self.frames.set_type_state(mfn, NOT_PARTIAL);
            return Ok(());
        }
        self.frames.set_type_state(
            mfn,
            TypeState {
                pinned: false,
                ..st
            },
        );
        self.demote(mfn, level, ENTRIES, false)
    }

    /// Devalidates `table` (type count 1, a general reference for the partial state
    /// held) from entry `next` down; at the end its type count is 0.
    fn demote(
        &mut self,
        table: Mfn,
        level: u32,
        next: usize,
        set: bool,
    ) -> Result<(), Interrupted> {
        self.devalidate_from(table, level, next, set)?;
        self.frames.set_type_state(table, NOT_PARTIAL);
        self.frames.set_partial(table, None);
        self.frames.put_ref(table);
        Ok(())
    }

    /// Drops the references of entries `next-1` down to 0 of a `level` table, and first
    /// entry `next`'s general reference if `set` (Xen's `free_lN_table`). Preemptible
    /// at every entry but the first of an L2, L3 or L4 table; the table is then left
    /// partial.
    fn devalidate_from(
        &mut self,
        table: Mfn,
        level: u32,
        next: usize,
        set: bool,
    ) -> Result<(), Interrupted> {
        let mut set = set;
        let mut slot = next;
        if !set {
            let Some(s) = slot.checked_sub(1) else {
                return Ok(());
            };
            slot = s;
        }
        let mut first = true;
        loop {
            if level == 1 && !set {
                // Empty entries hold nothing: skipped in bulk (counted all the same).
                let Some(p) = self.prev_present(table, slot) else {
                    self.frames.add_work(slot as u64 + 1);
                    return Ok(());
                };
                self.frames.add_work((slot - p) as u64);
                slot = p;
            }
            if !first && level > 1 && self.over_budget() {
                // Entries 0..=slot still hold their references.
                self.frames.set_partial(
                    table,
                    Some(Partial {
                        next: slot as u16 + 1,
                        set: false,
                    }),
                );
                return Err(Interrupted);
            }
            first = false;
            self.frames.add_work(1);
            let guest = level != 4 || !is_hypervisor_l4_slot(slot);
            if guest
                && let Ok(entry) = self.read_entry(table, slot)
                && present(entry)
                && self.put_entry_ref(entry, level, set).is_err()
            {
                self.frames.set_partial(
                    table,
                    Some(Partial {
                        next: slot as u16,
                        set: true,
                    }),
                );
                return Err(Interrupted);
            }
            set = false;
            let Some(s) = slot.checked_sub(1) else {
                return Ok(());
            };
            slot = s;
        }
    }

    /// Takes the references entry `entry` (present, checked) of a `level` table holds;
    /// `set` and `retain` as in [`Self::get_ref_and_type`].
    fn get_entry_ref(
        &mut self,
        entry: u64,
        level: u32,
        set: bool,
        retain: bool,
    ) -> Result<(), Stop> {
        let target = entry_mfn(entry);
        if level == 1 {
            let r = if entry & Pte::RW.bits() != 0 {
                self.get_ref_and_type(target, PageType::Writable, false, false)
            } else if self.owned(target) && self.frames.get_ref(target) {
                Ok(())
            } else {
                Err(Errno::EINVAL.into())
            };
            // Xen's get_page_from_l1e: a RAM frame it cannot reference or type
            // writable is -EBUSY; a frame beyond RAM is I/O memory, which no domain
            // here may map: -EPERM.
            r.map_err(|e| match e {
                Stop::Fail(_) if target.0 <= self.frames.max_ram_mfn() => Errno::EBUSY.into(),
                Stop::Fail(_) => Errno::EPERM.into(),
                other => other,
            })
        } else {
            let below = PageType::of_level(level - 1).ok_or(Errno::EINVAL)?;
            self.get_ref_and_type(target, below, set, retain)
        }
    }

    /// Drops what entry `entry` of a `level` table holds (`set`: only a partial
    /// reference); when interrupted the entry keeps a general reference.
    fn put_entry_ref(&mut self, entry: u64, level: u32, set: bool) -> Result<(), Interrupted> {
        let target = entry_mfn(entry);
        if level == 1 && is_grant_entry(entry) {
            // Its references belong to the mapper's maptrack entry, dropped by the unmap
            // or the mapper's death; the entry can never be validated again (check_entry
            // refuses the grant bit), so the dead PTE is harmless.
            return Ok(());
        }
        if level == 1 && entry & Pte::RW.bits() == 0 {
            self.frames.put_ref(target);
            Ok(())
        } else {
            self.put_ref_and_type(target, set)
        }
    }

    /// Drops what a whole entry or root holds; an interrupted drop becomes the deferred
    /// one.
    fn drop_entry_ref(&mut self, entry: u64, level: u32) {
        if self.put_entry_ref(entry, level, false).is_err() {
            debug_assert!(self.deferred.is_none());
            self.deferred = Some(entry_mfn(entry));
        }
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

    /// [`Self::write_entry`] for a caller that has already made the remembered
    /// translations the change could affect forgotten (or knows there are none).
    fn write_entry_keep_cache(&self, table: Mfn, slot: usize, entry: u64) -> Result<(), Errno> {
        self.mem
            .write_u64(table.maddr() + slot as u64 * 8, entry)
            .map_err(|_| Errno::EINVAL)
    }

    /// Runs a top-level operation: finishes the deferred drop first, and in a context
    /// without budget also the one the operation left.
    fn op(&mut self, f: impl FnOnce(&mut Self) -> Result<(), Stop>) -> Result<(), Stop> {
        self.finish_deferred()?;
        let r = f(self);
        if self.budget.is_none() {
            let _ = self.finish_deferred();
        }
        r
    }

    /// `MMUEXT_PIN_Ln_TABLE`: validates and pins `mfn` as a `level` table.
    pub fn pin(&mut self, mfn: Mfn, level: u32) -> Result<(), Stop> {
        self.op(|pt| {
            let ty = PageType::of_level(level).ok_or(Errno::EINVAL)?;
            let st = pt.frames.type_state(mfn).ok_or(Errno::EINVAL)?;
            if st.pinned || !pt.owned(mfn) {
                return Err(Errno::EINVAL.into());
            }
            pt.get_ref_and_type(mfn, ty, false, false)?;
            if let Some(st) = pt.frames.type_state(mfn) {
                pt.frames
                    .set_type_state(mfn, TypeState { pinned: true, ..st });
            }
            Ok(())
        })
    }

    /// `MMUEXT_UNPIN_TABLE`: drops the pin's reference (devalidating the table if that
    /// was the last one; an interrupted devalidation is left deferred, the unpin is
    /// done).
    pub fn unpin(&mut self, mfn: Mfn) -> Result<(), Stop> {
        self.op(|pt| {
            let st = pt.frames.type_state(mfn).ok_or(Errno::EINVAL)?;
            if !st.pinned || !pt.owned(mfn) {
                return Err(Errno::EINVAL.into());
            }
            pt.frames.set_type_state(
                mfn,
                TypeState {
                    pinned: false,
                    ..st
                },
            );
            pt.drop_root(mfn);
            Ok(())
        })
    }

    fn drop_root(&mut self, root: Mfn) {
        if self.put_ref_and_type(root, false).is_err() {
            debug_assert!(self.deferred.is_none());
            self.deferred = Some(root);
        }
    }

    /// Loads `new` as a root (kernel or user L4) in place of `old` (`None` = none): takes
    /// an L4 reference on the new one first, then drops the old one's. Loading the root
    /// already loaded does nothing (so a continued switch does not repeat it).
    pub fn switch_root(&mut self, new: Mfn, old: Option<Mfn>) -> Result<(), Stop> {
        self.op(|pt| {
            if old == Some(new) {
                return Ok(());
            }
            pt.get_ref_and_type(new, PageType::L4, false, false)?;
            if let Some(old) = old {
                pt.drop_root(old);
            }
            Ok(())
        })
    }

    /// Unloads the root `old` (`MMUEXT_NEW_USER_BASEPTR` with 0).
    pub fn unload_root(&mut self, old: Mfn) -> Result<(), Stop> {
        self.op(|pt| {
            pt.drop_root(old);
            Ok(())
        })
    }

    /// Writes `new` into the entry at machine address `ptr` of one of the domain's page
    /// tables (`mmu_update`), keeping every reference right: the new entry's references
    /// are taken before the old one's are dropped. `preserve_ad` keeps the old A/D bits.
    ///
    /// A frame that is not a validated page table (a partial one included) is written as
    /// plain memory if it can be typed writable (as Xen does).
    pub fn mod_entry(&mut self, ptr: u64, new: u64, preserve_ad: bool) -> Result<(), Stop> {
        self.op(|pt| pt.mod_entry_inner(ptr, new, preserve_ad))
    }

    fn mod_entry_inner(&mut self, ptr: u64, new: u64, preserve_ad: bool) -> Result<(), Stop> {
        let table = Mfn::containing(ptr);
        if !self.owned(table) {
            return Err(Errno::EINVAL.into());
        }
        let slot = ((ptr & (PAGE_SIZE as u64 - 1)) / 8) as usize;
        let st = self.frames.type_state(table).ok_or(Errno::EINVAL)?;
        let validated = st.count > 0 && self.frames.partial(table).is_none();
        let level = match st.ty.pt_level() {
            Some(level) if validated => level,
            _ => {
                // Not a page table: an ordinary write, allowed only while the frame can
                // be typed writable (so never a GDT/LDT page).
                self.get_ref_and_type(table, PageType::Writable, false, false)?;
                let r = self.write_entry(table, slot, new);
                let _ = self.put_ref_and_type(table, false);
                return Ok(r?);
            }
        };
        if level == 4 && is_hypervisor_l4_slot(slot) {
            return Err(Errno::EINVAL.into());
        }
        let old = self.read_entry(table, slot)?;
        if level == 1 && is_grant_entry(old) {
            // Only GNTTABOP_unmap_grant_ref removes a grant mapping.
            return Err(Errno::EINVAL.into());
        }
        let mut new = new;
        if preserve_ad {
            new |= old & (Pte::ACCESSED | Pte::DIRTY).bits();
        }
        if present(new) {
            new = check_entry(new, level)?;
            // Xen's fast path for similar entries: the same frame with the same
            // reference-relevant rights holds exactly the references the old entry holds,
            // so none is taken or dropped (and an unchanged entry is not even written).
            if present(old) && self.same_references(old, new, level) {
                self.rewrite(table, slot, old, new)?;
                return Ok(());
            }
            self.get_entry_ref(new, level, false, false)?;
        }
        if let Err(e) = self.write_entry(table, slot, new) {
            if present(new) {
                self.drop_entry_ref(new, level);
            }
            return Err(e.into());
        }
        if present(old) {
            // A right taken away: a cached translation of it must not outlive the call
            // (its frame may become a page table next).
            self.frames.need_hw_flush();
            self.drop_entry_ref(old, level);
        }
        Ok(())
    }

    /// Writes `new` over `old` (present, the same references): `Ok(true)` if it wrote.
    fn rewrite(&mut self, table: Mfn, slot: usize, old: u64, new: u64) -> Result<bool, Errno> {
        if old & !new & Pte::RW.bits() != 0 {
            // An upper entry made read-only: writes through it must stop.
            self.frames.need_hw_flush();
            self.write_entry(table, slot, new)?;
        } else if new != old {
            // Only NX, A/D or guest bits differ: no right the TLB or a remembered walk may
            // hold is taken away (NX adds a restriction the guest flushes for itself, as
            // on Xen).
            // The new value grants every right the old one did (same frame, same
            // writability): remembered guest translations through it stay right.
            self.write_entry_keep_cache(table, slot, new)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// [`Self::mod_entry`] when it is a rewrite of a validated table's present entry that
    /// keeps its references (the same frame and writability): `Some(Ok(wrote))` when done
    /// exactly as `mod_entry` would do it, `None` (nothing done, nothing looked at that
    /// matters) when `mod_entry` must run. Nothing may be deferred.
    pub fn rewrite_keeping_references(
        &mut self,
        ptr: u64,
        new: u64,
        preserve_ad: bool,
    ) -> Option<Result<bool, Errno>> {
        if self.deferred.is_some() {
            return None;
        }
        let table = Mfn::containing(ptr);
        let level = self.frames.table_level(table, self.dom)?;
        let slot = ((ptr & (PAGE_SIZE as u64 - 1)) / 8) as usize;
        if level == 4 && is_hypervisor_l4_slot(slot) {
            return None;
        }
        let old = self.read_entry(table, slot).ok()?;
        if level == 1 && is_grant_entry(old) {
            // `mod_entry` refuses it.
            return None;
        }
        let mut new = new;
        if preserve_ad {
            new |= old & (Pte::ACCESSED | Pte::DIRTY).bits();
        }
        if !present(new) || !present(old) {
            return None;
        }
        let new = check_entry(new, level).ok()?;
        if !self.same_references(old, new, level) {
            return None;
        }
        Some(self.rewrite(table, slot, old, new))
    }

    /// Whether present entries `old` and (checked) `new` of a `level` table hold the same
    /// references: the same frame, and at L1 the same writability (a writable mapping
    /// holds a `Writable` type reference, a read-only one a general reference only).
    /// An upper entry whose target is partial holds only a general reference (its
    /// validation was interrupted): rewriting it takes the generic path, which continues
    /// that validation.
    fn same_references(&self, old: u64, new: u64, level: u32) -> bool {
        if entry_mfn(old) != entry_mfn(new) {
            return false;
        }
        if level == 1 {
            (old ^ new) & Pte::RW.bits() == 0
        } else {
            self.frames.partial(entry_mfn(old)).is_none()
        }
    }

    /// Writes the grant mapping `new` (present, with [`Pte::GNTTAB`]; its references
    /// taken by the caller) into the L1 entry at machine address `ptr`, which must be in
    /// a validated L1 of the domain and not hold a grant mapping already. What a present
    /// old entry held is dropped, as `mod_entry` does.
    pub fn install_grant(&mut self, ptr: u64, new: u64) -> Result<(), Errno> {
        let table = Mfn::containing(ptr);
        if self.frames.table_level(table, self.dom) != Some(1) {
            return Err(Errno::EINVAL);
        }
        let slot = ((ptr & (PAGE_SIZE as u64 - 1)) / 8) as usize;
        let old = self.read_entry(table, slot)?;
        if is_grant_entry(old) {
            return Err(Errno::EINVAL);
        }
        if present(old) {
            self.write_entry(table, slot, new)?;
        } else {
            // No remembered walk went through a non-present entry: the cache stays.
            self.write_entry_keep_cache(table, slot, new)?;
        }
        if present(old) {
            self.frames.need_hw_flush();
            self.run_whole(|pt| pt.drop_entry_ref(old, 1));
        }
        Ok(())
    }

    /// Clears the grant mapping of `mfn` in the L1 entry at `ptr` (a validated L1 of the
    /// domain). `EINVAL`, nothing changed, if the entry is not that grant mapping.
    pub fn remove_grant(&mut self, ptr: u64, mfn: Mfn) -> Result<(), Errno> {
        let table = Mfn::containing(ptr);
        if self.frames.table_level(table, self.dom) != Some(1) {
            return Err(Errno::EINVAL);
        }
        let slot = ((ptr & (PAGE_SIZE as u64 - 1)) / 8) as usize;
        let old = self.read_entry(table, slot)?;
        if !is_grant_entry(old) || entry_mfn(old) != mfn {
            return Err(Errno::EINVAL);
        }
        // Only walks ending in `mfn` can have gone through this L1 entry.
        self.frames.tlb.forget_frame(mfn);
        self.write_entry_keep_cache(table, slot, 0)?;
        self.frames.need_hw_flush();
        Ok(())
    }

    /// Machine address of the L1 entry mapping `va` under the L4 `root`, if the walk
    /// reaches a present, validated L1 table. `va` must be a guest address (checked by
    /// the caller).
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
        // A validated, whole L1 of the domain.
        if self.frames.table_level(table, self.dom) != Some(1) {
            return Err(Errno::EINVAL);
        }
        Ok(table.maddr() + ((va >> 12) & 0x1ff) * 8)
    }
}

#[cfg(test)]
#[path = "pagetable_tests.rs"]
mod tests;
