//! Pinning one grant entry for a copy or a mapping, as Xen's `_set_status_v1/_v2` and
//! `acquire_grant_for_copy`: the entry must permit access to the pinning domain (and
//! writing, unless `GTF_readonly` is clear), its status bits are set while the pin lasts,
//! and its frame must belong to the granter. A v2 sub-page entry pins `length` bytes at
//! `page_off` (copies only); a v2 transitive entry is followed one level into
//! `trans_domid`'s table, which must grant the frame to the granter (copies only).

use super::Active;
use crate::hv::Hypervisor;
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::grant_table::{
    GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_PAGE, GNTST_GENERAL_ERROR, GTF_PERMIT_ACCESS,
    GTF_READING, GTF_READONLY, GTF_SUB_PAGE, GTF_TRANSITIVE, GTF_TYPE_MASK, GTF_WRITING,
};
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::{DomId, Mfn};

/// Times a shared entry's `cmpxchg` is retried when the guest keeps changing it (Xen).
const ENTRY_RETRIES: u32 = 4;

/// A pinned entry: what the pinner may use, and what to undo.
#[derive(Debug)]
pub(super) struct Pin {
    /// The granting domain's slot and id, and the entry.
    pub granter: usize,
    pub granter_id: DomId,
    pub gref: u32,
    /// Machine address of the entry's status word.
    pub status: u64,
    /// Whether the pin is for writing.
    pub write: bool,
    /// The frame and the granted byte range in it.
    pub mfn: Mfn,
    pub start: u16,
    pub len: u16,
    /// The pin of the entry a transitive entry leads to (one level: that entry is
    /// never transitive itself). Inline, so following a transitive entry allocates
    /// nothing on the guest's path.
    pub trans: Option<PinStatus>,
}

/// What undoing a pin's status bits needs: the entry and the kind of pin.
#[derive(Clone, Copy, Debug)]
pub(super) struct PinStatus {
    pub granter: usize,
    pub granter_id: DomId,
    pub gref: u32,
    pub status: u64,
    pub write: bool,
}

impl Pin {
    fn status_ref(&self) -> PinStatus {
        PinStatus {
            granter: self.granter,
            granter_id: self.granter_id,
            gref: self.gref,
            status: self.status,
            write: self.write,
        }
    }
}

/// Pins of one kind an entry holds before further pins are refused (Xen's 8-bit counters).
const PIN_LIMIT: u32 = 128;

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// Pins entry `gref` of domain slot `granter` for domain `me`. `map` applies the
    /// mapping rules (no sub-page or transitive entries); `transitive` allows following
    /// a transitive entry. The caller then takes its own frame references, and later
    /// calls [`Self::unpin`] (a copy) or records a mapping in [`Active`] and calls it
    /// (a map).
    pub(super) fn pin_entry(
        &mut self,
        me: DomId,
        granter: usize,
        gref: u32,
        write: bool,
        map: bool,
        transitive: bool,
    ) -> Result<Pin, i16> {
        let g = &self.domains[granter].grant;
        let granter_id = self.domains[granter].id;
        if gref >= g.nr_entries() {
            return Err(GNTST_BAD_GNTREF);
        }
        let (Some(hdr), Some(status)) = (g.entry_maddr(gref), g.status_maddr(gref)) else {
            return Err(GNTST_BAD_GNTREF);
        };
        let v2 = g.version == 2;
        let act = g.active_of(gref).copied();
        if let Some(a) = act {
            // Pinned by someone else, or a pin counter at 128: Xen keeps 8-bit counters
            // per kind and refuses a pin once one has bit 7 set (`act->pin & 0x80808080`),
            // so the 129th mapping of a kind fails. Ours count host and device parts
            // together per access, so mixed uses reach the limit a little earlier.
            if a.mapper != me || a.readers.max(a.writers) >= PIN_LIMIT {
                return Err(GNTST_GENERAL_ERROR);
            }
        }
        let mut pin = Pin {
            granter,
            granter_id,
            gref,
            status,
            write,
            mfn: Mfn(0),
            start: 0,
            len: PAGE_SIZE as u16,
            trans: None,
        };
        // Only v2 has transitive entries (in v1 `set_status` reads the header anyway,
        // with the same error if it cannot).
        let flags = if v2 { self.read_u16(hdr)? } else { 0 };
        if v2 && flags & GTF_TYPE_MASK == GTF_TRANSITIVE && act.is_none() {
            self.set_status(hdr, status, v2, false, write, map, me)?;
            let r = self.follow_transitive(&mut pin, hdr, transitive);
            if let Err(s) = r {
                self.unpin_status(&pin.status_ref());
                return Err(s);
            }
            return Ok(pin);
        }
        let holds_write = act.is_some_and(|a| a.writers > 0);
        if act.is_none() || (write && !holds_write) {
            self.set_status(hdr, status, v2, act.is_some(), write, map, me)?;
            if let Some(a) = act {
                pin.mfn = a.mfn;
            } else {
                let r = self.entry_frame(&mut pin, hdr, v2, granter_id);
                if let Err(s) = r {
                    self.unpin_status(&pin.status_ref());
                    return Err(s);
                }
            }
        } else if let Some(a) = act {
            // Already pinned with the access needed: the pinned frame, if the granter
            // still owns it.
            if self.frames.owner(a.mfn) != Some(granter_id) {
                return Err(GNTST_BAD_DOMAIN);
            }
            pin.mfn = a.mfn;
        }
        Ok(pin)
    }

    /// The frame (and, for a sub-page entry, the range) of an entry just pinned; the
    /// frame must be the granter's (Xen's `get_paged_frame`: `GNTST_bad_page`).
    fn entry_frame(&self, pin: &mut Pin, hdr: u64, v2: bool, granter: DomId) -> Result<(), i16> {
        let mfn = if v2 {
            let mut w = [0u8; 8];
            self.mem
                .read(hdr + 8, &mut w)
                .map_err(|_| GNTST_GENERAL_ERROR)?;
            let flags = self.read_u16(hdr)?;
            if flags & GTF_SUB_PAGE != 0 {
                let mut r = [0u8; 4];
                self.mem
                    .read(hdr + 4, &mut r)
                    .map_err(|_| GNTST_GENERAL_ERROR)?;
                pin.start = u16::from_le_bytes([r[0], r[1]]);
                pin.len = u16::from_le_bytes([r[2], r[3]]);
            }
            Mfn(u64::from_le_bytes(w))
        } else {
            let mut w = [0u8; 4];
            self.mem
                .read(hdr + 4, &mut w)
                .map_err(|_| GNTST_GENERAL_ERROR)?;
            Mfn(u64::from(u32::from_le_bytes(w)))
        };
        if self.frames.owner(mfn) != Some(granter) {
            return Err(GNTST_BAD_PAGE);
        }
        pin.mfn = mfn;
        Ok(())
    }

    /// A transitive entry whose status is set: pins the entry it names, in the name of
    /// the granter, without following a second level.
    fn follow_transitive(&mut self, pin: &mut Pin, hdr: u64, allowed: bool) -> Result<(), i16> {
        if !allowed {
            return Err(GNTST_GENERAL_ERROR);
        }
        let mut w = [0u8; 12];
        self.mem
            .read(hdr + 4, &mut w)
            .map_err(|_| GNTST_GENERAL_ERROR)?;
        let trans_dom = DomId(u16::from_le_bytes([w[0], w[1]]));
        let trans_gref = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
        if trans_dom == pin.granter_id {
            // "Transitive grants cannot be self-referential."
            return Err(GNTST_GENERAL_ERROR);
        }
        let td = self.grant_domain(trans_dom).ok_or(GNTST_GENERAL_ERROR)?;
        let inner = self.pin_entry(pin.granter_id, td, trans_gref, pin.write, false, false)?;
        pin.mfn = inner.mfn;
        pin.start = inner.start;
        pin.len = inner.len;
        pin.trans = Some(inner.status_ref());
        Ok(())
    }

    /// Sets `GTF_reading` (and `GTF_writing` when `write`) for a pin, checking the entry
    /// first unless it is already pinned (`pinned`: then only `GTF_readonly`).
    #[allow(clippy::too_many_arguments)]
    fn set_status(
        &mut self,
        hdr: u64,
        status: u64,
        v2: bool,
        pinned: bool,
        write: bool,
        map: bool,
        me: DomId,
    ) -> Result<(), i16> {
        let mask = GTF_TYPE_MASK | if map { GTF_SUB_PAGE } else { 0 };
        let usable = |flags: u16, domid: u16| {
            let ty = flags & mask;
            let ok_type = ty == GTF_PERMIT_ACCESS || (v2 && !map && ty == GTF_TRANSITIVE);
            pinned || (ok_type && domid == me.0)
        };
        let set = GTF_READING | if write { GTF_WRITING } else { 0 };
        if !v2 {
            // v1: flags and domid change together with a cmpxchg.
            let mut seen = self.read_u32(hdr)?;
            for _ in 0..=ENTRY_RETRIES {
                let (flags, domid) = (seen as u16, (seen >> 16) as u16);
                if !usable(flags, domid) || (write && flags & GTF_READONLY != 0) {
                    return Err(GNTST_GENERAL_ERROR);
                }
                let new = seen | u32::from(set);
                match self.mem.cmpxchg_u32(hdr, seen, new) {
                    Ok(prev) if prev == seen => return Ok(()),
                    Ok(prev) => seen = prev,
                    Err(_) => return Err(GNTST_GENERAL_ERROR),
                }
            }
            // "Shared grant entry is unstable."
            return Err(GNTST_GENERAL_ERROR);
        }
        let seen = self.read_u32(hdr)?;
        let (flags, domid) = (seen as u16, (seen >> 16) as u16);
        if !usable(flags, domid) || (write && flags & GTF_READONLY != 0) {
            return Err(GNTST_GENERAL_ERROR);
        }
        self.mem
            .fetch_or_u8(status, set as u8)
            .map_err(|_| GNTST_GENERAL_ERROR)?;
        // Checked again after the status is visible, as Xen.
        let again = self.read_u32(hdr)?;
        let (flags, domid) = (again as u16, (again >> 16) as u16);
        if !pinned && (!usable(flags, domid) || (write && flags & GTF_READONLY != 0)) {
            let _ = self.mem.fetch_and_u8(status, !(set as u8));
            return Err(GNTST_GENERAL_ERROR);
        }
        if pinned && flags & GTF_READONLY != 0 && write {
            let _ = self.mem.fetch_and_u8(status, !(GTF_WRITING as u8));
            return Err(GNTST_GENERAL_ERROR);
        }
        Ok(())
    }

    /// Ends a copy's pin: the status bits the entry's remaining pins do not hold are
    /// cleared (Xen's `reduce_status_for_pin`), here and in a transitive entry's target.
    pub(super) fn unpin(&mut self, pin: &Pin) {
        if let Some(inner) = &pin.trans {
            self.unpin_status(inner);
        }
        self.unpin_status(&pin.status_ref());
    }

    fn unpin_status(&self, pin: &PinStatus) {
        let d = &self.domains[pin.granter];
        // The granter ended since: its table frames are gone.
        if d.id != pin.granter_id || !d.is_runnable() {
            return;
        }
        let held = d.grant.active_of(pin.gref).map_or(0, Active::bits);
        let mut clear = 0;
        if held & GTF_READING == 0 {
            clear |= GTF_READING;
        }
        if pin.write && held & GTF_WRITING == 0 {
            clear |= GTF_WRITING;
        }
        if clear != 0 {
            // Both bits live in the low byte; the address is in a grant or status frame.
            let _ = self.mem.fetch_and_u8(pin.status, !(clear as u8));
        }
    }

    fn read_u16(&self, at: u64) -> Result<u16, i16> {
        let mut b = [0u8; 2];
        self.mem.read(at, &mut b).map_err(|_| GNTST_GENERAL_ERROR)?;
        Ok(u16::from_le_bytes(b))
    }

    fn read_u32(&self, at: u64) -> Result<u32, i16> {
        let mut b = [0u8; 4];
        self.mem.read(at, &mut b).map_err(|_| GNTST_GENERAL_ERROR)?;
        Ok(u32::from_le_bytes(b))
    }
}
