//! The MAC table: (VLAN, MAC) -> port with aging, in a fixed-size open-addressing hash
//! table (linear probing, deletion by backward shift) allocated once at construction, so
//! that no guest frame allocates.

use super::frame::Mac;
use super::{PortId, VlanId};
use alloc::vec::Vec;
use xen_pv_abi::Errno;

#[derive(Clone, Copy, Debug)]
struct Entry {
    vid: VlanId,
    mac: Mac,
    port: PortId,
    last_seen: u64,
}

/// What [`MacTable::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A new entry was made.
    New,
    /// An existing entry was refreshed (and moved if the station changed port).
    Refreshed,
    /// The table is full of live entries: nothing learned.
    Full,
}

pub struct MacTable {
    slots: Vec<Option<Entry>>,
    mask: usize,
    len: usize,
    limit: usize,
    aging_ns: u64,
    seed: u64,
    /// While full: no entry can expire before this time, so no sweep is tried before.
    next_expiry: u64,
}

impl MacTable {
    /// A table holding at most `limit` entries; the slot array is twice that rounded up
    /// to a power of two, so probe sequences stay short.
    pub fn new(limit: usize, aging_ns: u64, seed: u64) -> Result<Self, Errno> {
        let cap = limit
            .checked_mul(2)
            .and_then(usize::checked_next_power_of_two)
            .ok_or(Errno::EINVAL)?;
        let mut slots = Vec::new();
        slots.try_reserve_exact(cap).map_err(|_| Errno::ENOMEM)?;
        slots.resize(cap, None);
        Ok(MacTable {
            slots,
            mask: cap - 1,
            len: 0,
            limit,
            aging_ns,
            seed,
            next_expiry: 0,
        })
    }

    /// Number of entries (live or expired but not yet swept).
    pub fn len(&self) -> usize {
        self.len
    }

    fn home(&self, vid: VlanId, mac: &Mac) -> usize {
        // FNV-1a over a per-switch seed, the VLAN and the MAC: guests cannot predict
        // which keys collide without knowing the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ self.seed;
        for b in vid.get().to_le_bytes().iter().chain(mac.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= h >> 29;
        (h as usize) & self.mask
    }

    fn expired(&self, e: &Entry, now: u64) -> bool {
        now.saturating_sub(e.last_seen) >= self.aging_ns
    }

    /// Slot of the entry for (vid, mac), live or not.
    fn find(&self, vid: VlanId, mac: &Mac) -> Option<usize> {
        let mut i = self.home(vid, mac);
        // At most `limit` < slots.len() entries, so there is always an empty slot.
        for _ in 0..self.slots.len() {
            match &self.slots[i] {
                None => return None,
                Some(e) if e.vid == vid && e.mac == *mac => return Some(i),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        None
    }

    /// The port a live entry for (vid, mac) points to; an expired entry is removed.
    pub fn lookup(&mut self, vid: VlanId, mac: &Mac, now: u64) -> Option<PortId> {
        let i = self.find(vid, mac)?;
        let e = self.slots[i]?;
        if self.expired(&e, now) {
            self.remove_at(i);
            return None;
        }
        Some(e.port)
    }

    /// Records that `mac` was seen on `port` in `vid` at `now`.
    pub fn learn(&mut self, vid: VlanId, mac: &Mac, port: PortId, now: u64) -> Learned {
        if let Some(i) = self.find(vid, mac) {
            if let Some(e) = &mut self.slots[i] {
                e.port = port;
                // A caller's clock going backwards must not make the entry older.
                e.last_seen = e.last_seen.max(now);
            }
            return Learned::Refreshed;
        }
        if self.len >= self.limit {
            if now < self.next_expiry {
                return Learned::Full;
            }
            self.expire(now);
            if self.len >= self.limit {
                return Learned::Full;
            }
        }
        let mut i = self.home(vid, mac);
        while self.slots[i].is_some() {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = Some(Entry {
            vid,
            mac: *mac,
            port,
            last_seen: now,
        });
        self.len += 1;
        Learned::New
    }

    /// Removes every expired entry; remembers when the next one can expire.
    pub fn expire(&mut self, now: u64) {
        self.retain(|e, t| !t.expired(e, now));
        let oldest = self.slots.iter().flatten().map(|e| e.last_seen).min();
        self.next_expiry = oldest.map_or(0, |t| t.saturating_add(self.aging_ns));
    }

    /// Removes every entry of `port`.
    pub fn forget_port(&mut self, port: PortId) {
        self.retain(|e, _| e.port != port);
        // Room was made (or nothing changed): let the next full learn sweep again.
        self.next_expiry = 0;
    }

    fn retain(&mut self, keep: impl Fn(&Entry, &Self) -> bool) {
        let mut i = 0;
        while i < self.slots.len() {
            match self.slots[i] {
                // A removal shifts a later entry into slot i: look at slot i again.
                // Entries are only shifted into the hole, so no unvisited entry is
                // moved behind i (a wrapped one may be visited twice, harmlessly).
                Some(e) if !keep(&e, self) => self.remove_at(i),
                _ => i += 1,
            }
        }
    }

    /// Empties slot `hole` and moves later entries of its probe run back so that every
    /// entry stays reachable from its home slot without crossing an empty slot.
    fn remove_at(&mut self, mut hole: usize) {
        self.slots[hole] = None;
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let Some(e) = self.slots[j] else { return };
            let home = self.home(e.vid, &e.mac);
            // The entry may move to `hole` unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
    }
}
