//! The virtual switch: a learning Layer-2 switch between the control domain's ports
//! (one per vif), with 802.1Q VLANs. Portable: no I/O, no hypercalls; netback hands it
//! each frame a guest sends and copies the frame to the ports it names.
//!
//! # Ports and VLANs
//!
//! A port is an *access* port of one VLAN (1..=4094) or a *trunk* port.
//!
//! * Access port: frames are untagged on the wire. An untagged frame received belongs to
//!   the port's VLAN; a frame received with an 802.1Q tag is dropped
//!   ([`DropReason::TaggedOnAccess`]).
//! * Trunk port: carries the VLANs of its allowed list, tagged. A tagged frame of a VLAN
//!   the port does not carry is dropped ([`DropReason::VlanNotAllowed`]). Untagged frames
//!   are dropped ([`DropReason::UntaggedOnTrunk`]) unless the port has a *native VLAN*:
//!   then they belong to it, and frames of the native VLAN leave the port untagged (as
//!   on common hardware switches). The native VLAN is carried whether or not it is in
//!   the allowed list, and a frame tagged with the native VLAN is accepted too.
//!
//! Only TPID 0x8100 is a tag; any other EtherType (0x88a8 included) is untagged payload.
//! A frame never leaves the VLAN it entered: it is delivered only to ports carrying it.
//!
//! # Egress
//!
//! The switch does not copy frames. [`Switch::forward`] names each egress port with an
//! [`Egress`] rewrite: [`Egress::AsIs`] when both sides agree (a tagged frame that stays
//! tagged keeps its PCP and DEI bits), [`Egress::Tagged`] to insert a tag (PCP 0) and
//! [`Egress::Untagged`] to strip it; [`Egress::write`] applies one while copying.
//!
//! # Frame checks
//!
//! Frames are checked without FCS. Shorter than the 14-byte Ethernet header: *runt*
//! (padding to 60 bytes is not required, guests send unpadded frames). Longer than 1514
//! bytes untagged or 1518 tagged: *oversize*. A 0x8100 TPID with fewer than 18 bytes or
//! with VLAN 0 (priority tag) or 4095: *bad tag*.
//!
//! # Learning and forwarding
//!
//! The source MAC of every accepted frame is learned as (VLAN, MAC) -> ingress port
//! unless it is a group (multicast/broadcast) address; a station seen on another port
//! moves there. Entries are forgotten when `now_ns - last_seen >= aging_ns` (default
//! 300 s): an entry is still used at `aging_ns - 1` ns and gone at exactly `aging_ns`.
//! The caller passes a monotonic `now_ns`; a clock going backwards never makes an entry
//! older. A known unicast destination goes to its port only (dropped as
//! [`DropReason::SamePort`] if that is the ingress port); unknown unicast, broadcast and
//! multicast are flooded to every other port carrying the VLAN, never back to the
//! ingress port. [`Switch::remove_port`] forgets the port's MACs.
//!
//! The table holds at most `mac_table_size` entries. When it is full, expired entries are
//! swept; if none are, the new address is **not learned** (counted as `learn_full` on
//! the ingress port) and its frames keep being flooded. This keeps a guest that sends
//! from many source addresses from evicting other ports' established entries.
//!
//! # Bounds
//!
//! No allocation after [`Switch::new`]: the port array, the MAC table and the delivery
//! list are sized by [`SwitchConfig`]. Per frame the work is a header parse, two table
//! probes (keyed hash with a caller-chosen seed) and at most one pass over the ports; a
//! sweep of the table (`O(mac_table_size)`) happens only when the table is full, and
//! then at most once until the oldest entry can have expired.
//!
//! # Counters
//!
//! Per port ([`PortStats`]): every received frame counts in `rx_frames`/`rx_bytes`, and
//! then either in `forwarded` or in exactly one drop counter, so
//! `rx_frames == forwarded + drops()`. `tx_frames`/`tx_bytes` count the frames handed to
//! the port by `forward`, with their length after the rewrite. [`PortStats::kv`] lists
//! them as key/value pairs for xenstore.

mod frame;
mod table;
#[cfg(test)]
mod tests;

pub use frame::{
    ETH_HLEN, Egress, HeaderError, MAX_TAGGED, MAX_UNTAGGED, Mac, TPID_8021Q, VLAN_TAG_LEN,
    is_group, parse,
};

use alloc::vec::Vec;
use table::{Learned, MacTable};
use xen_pv_abi::Errno;

/// A VLAN id, 1..=4094.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VlanId(u16);

impl VlanId {
    /// The VLAN `vid`, or `None` for 0, 4095 and anything wider than 12 bits.
    pub const fn new(vid: u16) -> Option<VlanId> {
        if vid >= 1 && vid <= 4094 {
            Some(VlanId(vid))
        } else {
            None
        }
    }

    /// The VLAN number.
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// A switch port: an index below [`SwitchConfig::max_ports`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u16);

/// A set of VLANs (a 4096-bit map).
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    /// The empty set.
    pub const fn new() -> Self {
        VlanSet([0; 64])
    }

    /// Adds `vid`.
    pub fn insert(&mut self, vid: VlanId) {
        let v = usize::from(vid.get());
        self.0[v / 64] |= 1 << (v % 64);
    }

    /// Whether `vid` is in the set.
    pub fn contains(&self, vid: VlanId) -> bool {
        let v = usize::from(vid.get());
        self.0[v / 64] & (1 << (v % 64)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

impl Default for VlanSet {
    fn default() -> Self {
        Self::new()
    }
}

impl FromIterator<VlanId> for VlanSet {
    fn from_iter<I: IntoIterator<Item = VlanId>>(iter: I) -> Self {
        let mut s = VlanSet::new();
        for v in iter {
            s.insert(v);
        }
        s
    }
}

impl core::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set()
            .entries(
                (1..=4094)
                    .filter_map(VlanId::new)
                    .filter(|v| self.contains(*v))
                    .map(VlanId::get),
            )
            .finish()
    }
}

/// A port's VLAN configuration.
// The trunk's 512-byte VLAN map stays inline: configurations are few, and boxing it
// would be one more allocation per port for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortConfig {
    /// Untagged frames of one VLAN.
    Access(VlanId),
    /// Tagged frames of the allowed VLANs; untagged frames are the native VLAN if any.
    Trunk {
        /// The VLANs carried tagged.
        allowed: VlanSet,
        /// The VLAN of untagged frames (also carried), or `None` to drop them.
        native: Option<VlanId>,
    },
}

impl PortConfig {
    /// Whether the port carries `vid`.
    pub fn carries(&self, vid: VlanId) -> bool {
        match self {
            PortConfig::Access(v) => *v == vid,
            PortConfig::Trunk { allowed, native } => *native == Some(vid) || allowed.contains(vid),
        }
    }

    /// Whether frames of `vid` (which the port carries) are tagged on this port's wire.
    fn tagged(&self, vid: VlanId) -> bool {
        match self {
            PortConfig::Access(_) => false,
            PortConfig::Trunk { native, .. } => *native != Some(vid),
        }
    }
}

/// The switch's sizes and timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Number of port slots (port ids are `0..max_ports`), 1..=[`MAX_PORTS`].
    pub max_ports: u16,
    /// Most MAC table entries, 1..=[`MAX_MAC_TABLE`].
    pub mac_table_size: usize,
    /// Age at which a MAC entry is forgotten, in ns (nonzero).
    pub aging_ns: u64,
    /// Key of the MAC table's hash; pass a random value so guests cannot aim collisions.
    pub hash_seed: u64,
}

/// Largest [`SwitchConfig::max_ports`].
pub const MAX_PORTS: u16 = 1024;
/// Largest [`SwitchConfig::mac_table_size`].
pub const MAX_MAC_TABLE: usize = 1 << 16;
/// Default aging time: 300 s.
pub const DEFAULT_AGING_NS: u64 = 300_000_000_000;

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            max_ports: 64,
            mac_table_size: 1024,
            aging_ns: DEFAULT_AGING_NS,
            hash_seed: 0,
        }
    }
}

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than the 14-byte Ethernet header.
    Runt,
    /// Longer than 1514 bytes untagged or 1518 tagged.
    Oversize,
    /// 0x8100 TPID with a truncated tag or VLAN 0 or 4095.
    BadTag,
    /// A tagged frame on an access port.
    TaggedOnAccess,
    /// An untagged frame on a trunk port without a native VLAN.
    UntaggedOnTrunk,
    /// A tagged frame of a VLAN the trunk port does not carry.
    VlanNotAllowed,
    /// The destination was learned on the ingress port.
    SamePort,
    /// No other port carries the frame's VLAN.
    NoEgress,
    /// The ingress port does not exist (counted in [`Switch::unknown_port_drops`]).
    UnknownPort,
}

/// Per-port counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received (all, dropped ones included).
    pub rx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Received frames delivered to at least one port.
    pub forwarded: u64,
    /// Frames handed to this port.
    pub tx_frames: u64,
    /// Bytes handed to this port (after the egress rewrite).
    pub tx_bytes: u64,
    /// Dropped: runt.
    pub drop_runt: u64,
    /// Dropped: oversize.
    pub drop_oversize: u64,
    /// Dropped: bad tag.
    pub drop_bad_tag: u64,
    /// Dropped: tagged frame on an access port.
    pub drop_tagged_on_access: u64,
    /// Dropped: untagged frame on a trunk without native VLAN.
    pub drop_untagged_on_trunk: u64,
    /// Dropped: VLAN not allowed on this trunk.
    pub drop_vlan_not_allowed: u64,
    /// Dropped: destination is on this port.
    pub drop_same_port: u64,
    /// Dropped: no other port in the VLAN.
    pub drop_no_egress: u64,
    /// Source addresses not learned because the MAC table was full.
    pub learn_full: u64,
}

impl PortStats {
    /// Sum of the drop counters.
    pub fn drops(&self) -> u64 {
        self.drop_runt
            .saturating_add(self.drop_oversize)
            .saturating_add(self.drop_bad_tag)
            .saturating_add(self.drop_tagged_on_access)
            .saturating_add(self.drop_untagged_on_trunk)
            .saturating_add(self.drop_vlan_not_allowed)
            .saturating_add(self.drop_same_port)
            .saturating_add(self.drop_no_egress)
    }

    /// The counters as (xenstore key, value) pairs, in a fixed order.
    pub fn kv(&self) -> impl Iterator<Item = (&'static str, u64)> + use<> {
        [
            ("rx_frames", self.rx_frames),
            ("rx_bytes", self.rx_bytes),
            ("forwarded", self.forwarded),
            ("tx_frames", self.tx_frames),
            ("tx_bytes", self.tx_bytes),
            ("drop_runt", self.drop_runt),
            ("drop_oversize", self.drop_oversize),
            ("drop_bad_tag", self.drop_bad_tag),
            ("drop_tagged_on_access", self.drop_tagged_on_access),
            ("drop_untagged_on_trunk", self.drop_untagged_on_trunk),
            ("drop_vlan_not_allowed", self.drop_vlan_not_allowed),
            ("drop_same_port", self.drop_same_port),
            ("drop_no_egress", self.drop_no_egress),
            ("learn_full", self.learn_full),
        ]
        .into_iter()
    }

    /// Adds `other`'s counters to these (saturating): totals over a port's lives.
    pub fn accumulate(&mut self, other: &PortStats) {
        let PortStats {
            rx_frames,
            rx_bytes,
            forwarded,
            tx_frames,
            tx_bytes,
            drop_runt,
            drop_oversize,
            drop_bad_tag,
            drop_tagged_on_access,
            drop_untagged_on_trunk,
            drop_vlan_not_allowed,
            drop_same_port,
            drop_no_egress,
            learn_full,
        } = other;
        for (mine, theirs) in [
            (&mut self.rx_frames, rx_frames),
            (&mut self.rx_bytes, rx_bytes),
            (&mut self.forwarded, forwarded),
            (&mut self.tx_frames, tx_frames),
            (&mut self.tx_bytes, tx_bytes),
            (&mut self.drop_runt, drop_runt),
            (&mut self.drop_oversize, drop_oversize),
            (&mut self.drop_bad_tag, drop_bad_tag),
            (&mut self.drop_tagged_on_access, drop_tagged_on_access),
            (&mut self.drop_untagged_on_trunk, drop_untagged_on_trunk),
            (&mut self.drop_vlan_not_allowed, drop_vlan_not_allowed),
            (&mut self.drop_same_port, drop_same_port),
            (&mut self.drop_no_egress, drop_no_egress),
            (&mut self.learn_full, learn_full),
        ] {
            *mine = mine.saturating_add(*theirs);
        }
    }

    fn count_drop(&mut self, why: DropReason) {
        let c = match why {
            DropReason::Runt => &mut self.drop_runt,
            DropReason::Oversize => &mut self.drop_oversize,
            DropReason::BadTag => &mut self.drop_bad_tag,
            DropReason::TaggedOnAccess => &mut self.drop_tagged_on_access,
            DropReason::UntaggedOnTrunk => &mut self.drop_untagged_on_trunk,
            DropReason::VlanNotAllowed => &mut self.drop_vlan_not_allowed,
            DropReason::SamePort => &mut self.drop_same_port,
            DropReason::NoEgress => &mut self.drop_no_egress,
            DropReason::UnknownPort => return,
        };
        *c = c.saturating_add(1);
    }
}

/// One egress of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The port the frame goes to.
    pub port: PortId,
    /// How it must be written there.
    pub egress: Egress,
}

/// The verdict on one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward<'a> {
    /// Dropped (and counted).
    Drop(DropReason),
    /// Delivered to these ports (at least one, none twice, never the ingress port).
    Deliver {
        /// The frame's VLAN.
        vlan: VlanId,
        /// Where it goes, in port order.
        to: &'a [Delivery],
    },
}

struct Port {
    config: PortConfig,
    stats: PortStats,
}

/// The switch. See the module documentation.
pub struct Switch {
    ports: Vec<Option<Port>>,
    table: MacTable,
    out: Vec<Delivery>,
    unknown_port_drops: u64,
}

impl Switch {
    /// A switch with no ports. `EINVAL` for sizes out of range, `ENOMEM` if the tables
    /// cannot be allocated.
    pub fn new(config: SwitchConfig) -> Result<Switch, Errno> {
        if config.max_ports == 0
            || config.max_ports > MAX_PORTS
            || config.mac_table_size == 0
            || config.mac_table_size > MAX_MAC_TABLE
            || config.aging_ns == 0
        {
            return Err(Errno::EINVAL);
        }
        let n = usize::from(config.max_ports);
        let mut ports = Vec::new();
        ports.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
        ports.resize_with(n, || None);
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
        let table = MacTable::new(config.mac_table_size, config.aging_ns, config.hash_seed)?;
        Ok(Switch {
            ports,
            table,
            out,
            unknown_port_drops: 0,
        })
    }

    /// Adds a port in the lowest free slot. `EINVAL` for a trunk that carries no VLAN,
    /// `ENOSPC` when all `max_ports` slots are used.
    pub fn add_port(&mut self, config: PortConfig) -> Result<PortId, Errno> {
        if let PortConfig::Trunk {
            allowed,
            native: None,
        } = &config
            && allowed.is_empty()
        {
            return Err(Errno::EINVAL);
        }
        let i = self
            .ports
            .iter()
            .position(Option::is_none)
            .ok_or(Errno::ENOSPC)?;
        let id = u16::try_from(i).map_err(|_| Errno::ENOSPC)?;
        self.ports[i] = Some(Port {
            config,
            stats: PortStats::default(),
        });
        Ok(PortId(id))
    }

    /// Removes a port and forgets the MAC addresses learned on it. `ENOENT` if absent.
    pub fn remove_port(&mut self, port: PortId) -> Result<(), Errno> {
        let slot = self
            .ports
            .get_mut(usize::from(port.0))
            .ok_or(Errno::ENOENT)?;
        slot.take().ok_or(Errno::ENOENT)?;
        self.table.forget_port(port);
        Ok(())
    }

    /// A port's configuration.
    pub fn port_config(&self, port: PortId) -> Result<&PortConfig, Errno> {
        self.port(port).map(|p| &p.config)
    }

    /// A port's counters. `ENOENT` if absent.
    pub fn port_stats(&self, port: PortId) -> Result<PortStats, Errno> {
        self.port(port).map(|p| p.stats)
    }

    /// A port's counters as (xenstore key, value) pairs. `ENOENT` if absent.
    pub fn stats_kv(
        &self,
        port: PortId,
    ) -> Result<impl Iterator<Item = (&'static str, u64)> + use<>, Errno> {
        self.port_stats(port).map(|s| s.kv())
    }

    /// Frames offered on a port that does not exist.
    pub fn unknown_port_drops(&self) -> u64 {
        self.unknown_port_drops
    }

    /// Number of MAC table entries (expired ones not yet swept included).
    pub fn mac_entries(&self) -> usize {
        self.table.len()
    }

    /// The port `mac` was learned on in `vlan`, if the entry is alive at `now_ns`.
    pub fn lookup(&mut self, vlan: VlanId, mac: &Mac, now_ns: u64) -> Option<PortId> {
        self.table.lookup(vlan, mac, now_ns)
    }

    /// Forgets every MAC entry that has aged out at `now_ns` (`O(mac_table_size)`; the
    /// switch also ages entries on its own, so calling this is optional).
    pub fn expire(&mut self, now_ns: u64) {
        self.table.expire(now_ns);
    }

    fn port(&self, port: PortId) -> Result<&Port, Errno> {
        self.ports
            .get(usize::from(port.0))
            .and_then(Option::as_ref)
            .ok_or(Errno::ENOENT)
    }

    /// Switches one frame received on `ingress` at `now_ns`: checks it, learns its
    /// source, and returns where it goes. Counters are updated.
    pub fn forward(&mut self, ingress: PortId, frame: &[u8], now_ns: u64) -> Forward<'_> {
        let len = frame.len() as u64;
        let Some(Some(port)) = self.ports.get_mut(usize::from(ingress.0)) else {
            self.unknown_port_drops = self.unknown_port_drops.saturating_add(1);
            return Forward::Drop(DropReason::UnknownPort);
        };
        port.stats.rx_frames = port.stats.rx_frames.saturating_add(1);
        port.stats.rx_bytes = port.stats.rx_bytes.saturating_add(len);
        match self.classify(ingress, frame, now_ns) {
            Err(why) => {
                if let Some(Some(p)) = self.ports.get_mut(usize::from(ingress.0)) {
                    p.stats.count_drop(why);
                }
                Forward::Drop(why)
            }
            Ok(vlan) => {
                if let Some(Some(p)) = self.ports.get_mut(usize::from(ingress.0)) {
                    p.stats.forwarded = p.stats.forwarded.saturating_add(1);
                }
                Forward::Deliver {
                    vlan,
                    to: &self.out,
                }
            }
        }
    }

    /// The checks, learning and egress selection of [`Switch::forward`]: fills
    /// `self.out` (nonempty) and returns the VLAN, or the drop reason.
    fn classify(&mut self, ingress: PortId, frame: &[u8], now: u64) -> Result<VlanId, DropReason> {
        self.out.clear();
        let hdr = parse(frame).map_err(|e| match e {
            HeaderError::Runt => DropReason::Runt,
            HeaderError::Oversize => DropReason::Oversize,
            HeaderError::BadTag => DropReason::BadTag,
        })?;
        let Some(Some(port)) = self.ports.get_mut(usize::from(ingress.0)) else {
            return Err(DropReason::UnknownPort);
        };
        let vlan = match (&port.config, hdr.tag) {
            (PortConfig::Access(v), None) => *v,
            (PortConfig::Access(_), Some(_)) => return Err(DropReason::TaggedOnAccess),
            (
                PortConfig::Trunk {
                    native: Some(v), ..
                },
                None,
            ) => *v,
            (PortConfig::Trunk { native: None, .. }, None) => {
                return Err(DropReason::UntaggedOnTrunk);
            }
            (cfg @ PortConfig::Trunk { .. }, Some(v)) => {
                if !cfg.carries(v) {
                    return Err(DropReason::VlanNotAllowed);
                }
                v
            }
        };
        if !is_group(&hdr.src) && self.table.learn(vlan, &hdr.src, ingress, now) == Learned::Full {
            port.stats.learn_full = port.stats.learn_full.saturating_add(1);
        }
        let in_tagged = hdr.tag.is_some();
        let dst = if is_group(&hdr.dst) {
            None
        } else {
            self.table.lookup(vlan, &hdr.dst, now)
        };
        if dst == Some(ingress) {
            return Err(DropReason::SamePort);
        }
        for (i, slot) in self.ports.iter_mut().enumerate() {
            let Some(p) = slot else { continue };
            // Slots are indexed by u16 (max_ports <= MAX_PORTS).
            let id = PortId(i as u16);
            if id == ingress || !p.config.carries(vlan) || dst.is_some_and(|d| d != id) {
                continue;
            }
            let egress = match (in_tagged, p.config.tagged(vlan)) {
                (true, true) | (false, false) => Egress::AsIs,
                (false, true) => Egress::Tagged(vlan),
                (true, false) => Egress::Untagged,
            };
            p.stats.tx_frames = p.stats.tx_frames.saturating_add(1);
            p.stats.tx_bytes = p
                .stats
                .tx_bytes
                .saturating_add(egress.len(frame.len()) as u64);
            // Capacity is max_ports and each port is pushed at most once: no allocation.
            self.out.push(Delivery { port: id, egress });
        }
        if self.out.is_empty() {
            return Err(DropReason::NoEgress);
        }
        Ok(vlan)
    }
}
