//! What a served vif needs besides its [`Netback`](crate::netback::Netback) and its
//! [`Switch`](crate::vswitch::Switch) port, without hypercalls: the switch port a
//! `vif.` device word asks for, the frontend's connection keys checked, and the
//! counters published under the backend directory.
//!
//! # Counters
//!
//! Named from the guest's side, as `ip -s link` in the guest would: `tx` is what the
//! guest sent, `rx` what it was given. Under
//! `/local/domain/0/backend/vif/<fe>/<devid>/statistics/` ([`VifCounters::for_each`]):
//!
//! | key | meaning |
//! |---|---|
//! | `tx-frames`, `tx-bytes` | frames taken from the tx ring and handed to the switch |
//! | `tx-errors` | tx frames answered `NETIF_RSP_ERROR` (malformed, failed copy) |
//! | `tx-dropped` | of `tx-frames`, those the switch dropped (any reason) |
//! | `vlan-dropped` | of `tx-dropped`, those dropped by the port's VLAN rules (tagged on an access port, untagged on a trunk, VLAN not carried, bad tag) |
//! | `rx-frames`, `rx-bytes` | frames written into the guest's rx buffers |
//! | `rx-dropped` | frames the switch sent to this vif that did not reach the guest (no rx buffer posted, failed copy, bad length) |
//! | `rx-no-buffer` | of `rx-dropped`, those for want of a posted rx buffer |
//! | `switch-<name>` | the switch port's own counters ([`PortStats::kv`], switch's side: its `rx` is the guest's `tx`), `_` written as `-` |

use crate::devices::VifVlan;
use crate::netback::Stats;
use crate::vswitch::{PortConfig, PortStats, VlanId, VlanSet};
use core::fmt;
use xen_pv_abi::{Errno, GrantRef};

/// The VLAN of an untagged vif (`vif.<fe>=<mac>` without `vlan=`/`trunk=`): an access
/// port of VLAN 1, as a factory-default switch port; a trunk carrying VLAN 1 sees its
/// frames tagged 1.
pub const DEFAULT_VLAN: u16 = 1;

/// Frames of one vif between two refreshes of its published counters.
pub const REFRESH_FRAMES: u64 = 64;

/// The switch port configuration for a vif's VLAN setting. `EINVAL` for a VLAN out of
/// 1..=4094 or an empty trunk (the device parser refuses both already).
pub fn port_config(vlan: &VifVlan) -> Result<PortConfig, Errno> {
    let id = |v: u16| VlanId::new(v).ok_or(Errno::EINVAL);
    match vlan {
        VifVlan::Untagged => Ok(PortConfig::Access(id(DEFAULT_VLAN)?)),
        VifVlan::Access(v) => Ok(PortConfig::Access(id(*v)?)),
        VifVlan::Trunk(list) => {
            if list.is_empty() {
                return Err(Errno::EINVAL);
            }
            let mut allowed = VlanSet::new();
            for v in list {
                allowed.insert(id(*v)?);
            }
            Ok(PortConfig::Trunk {
                allowed,
                native: None,
            })
        }
    }
}

/// The frontend's event channel(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventChannels {
    /// One channel for both rings (`event-channel`).
    Shared(u32),
    /// `event-channel-tx` and `event-channel-rx`.
    Split {
        /// The tx ring's channel.
        tx: u32,
        /// The rx ring's channel.
        rx: u32,
    },
}

/// The frontend's connection keys, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendRings {
    /// `tx-ring-ref`.
    pub tx_ring_ref: GrantRef,
    /// `rx-ring-ref`.
    pub rx_ring_ref: GrantRef,
    /// The channel(s).
    pub events: EventChannels,
}

/// Why the frontend's keys cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendError {
    /// A required key is absent.
    Missing(&'static str),
    /// A key is not a decimal `u32`.
    Malformed(&'static str),
    /// `request-rx-copy` is not 1 (flipping is not served).
    NoRxCopy,
    /// Multi-queue was requested (`multi-queue-num-queues` other than 1).
    MultiQueue,
}

impl fmt::Display for FrontendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrontendError::Missing(k) => write!(f, "frontend key {k} missing"),
            FrontendError::Malformed(k) => write!(f, "frontend key {k} malformed"),
            FrontendError::NoRxCopy => f.write_str("frontend does not request rx-copy"),
            FrontendError::MultiQueue => f.write_str("frontend asks for multiple queues"),
        }
    }
}

/// A decimal `u32`, surrounding whitespace allowed (as xenbus_scanf accepts).
pub fn parse_u32(v: &[u8]) -> Option<u32> {
    let s = core::str::from_utf8(v).ok()?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Reads and checks the frontend's keys through `read` (a key name relative to the
/// frontend directory → its value). A single `event-channel` wins over split ones.
pub fn read_frontend<'a>(
    read: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<FrontendRings, FrontendError> {
    let num = |k: &'static str| -> Result<Option<u32>, FrontendError> {
        match read(k) {
            None => Ok(None),
            Some(v) => parse_u32(v).map(Some).ok_or(FrontendError::Malformed(k)),
        }
    };
    let need = |k: &'static str| num(k)?.ok_or(FrontendError::Missing(k));
    if num("multi-queue-num-queues")?.is_some_and(|n| n != 1) {
        return Err(FrontendError::MultiQueue);
    }
    let tx_ring_ref = GrantRef(need("tx-ring-ref")?);
    let rx_ring_ref = GrantRef(need("rx-ring-ref")?);
    let events = match num("event-channel")? {
        Some(p) => EventChannels::Shared(p),
        None => match (num("event-channel-tx")?, num("event-channel-rx")?) {
            (Some(tx), Some(rx)) => EventChannels::Split { tx, rx },
            (None, _) => return Err(FrontendError::Missing("event-channel")),
            (Some(_), None) => return Err(FrontendError::Missing("event-channel-rx")),
        },
    };
    // Absent means 0 (flip), which is not served either.
    if num("request-rx-copy")? != Some(1) {
        return Err(FrontendError::NoRxCopy);
    }
    Ok(FrontendRings {
        tx_ring_ref,
        rx_ring_ref,
        events,
    })
}

/// A vif's counters: its netback's and its switch port's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VifCounters {
    /// The netback's.
    pub back: Stats,
    /// The switch port's (summed over the port's lives: a reconnect gets a new port).
    pub port: PortStats,
}

impl VifCounters {
    /// Frames dropped by the port's VLAN rules.
    pub fn vlan_dropped(&self) -> u64 {
        let p = &self.port;
        p.drop_tagged_on_access
            .saturating_add(p.drop_untagged_on_trunk)
            .saturating_add(p.drop_vlan_not_allowed)
            .saturating_add(p.drop_bad_tag)
    }

    /// Frames for the guest that did not reach it.
    pub fn rx_dropped(&self) -> u64 {
        let b = &self.back;
        b.rx_no_buffer
            .saturating_add(b.rx_errors)
            .saturating_add(b.rx_bad_length)
    }

    /// Every frame this vif handled either way (what [`StatsRefresh`] counts).
    pub fn activity(&self) -> u64 {
        let b = &self.back;
        b.tx_frames
            .saturating_add(b.tx_errors)
            .saturating_add(b.tx_dropped)
            .saturating_add(b.rx_frames)
            .saturating_add(self.rx_dropped())
    }

    /// Calls `f(prefix, name, value)` for every published counter, in a fixed order
    /// (see the module documentation); the key under `statistics/` is `prefix`
    /// followed by `name`, with `_` written as `-` ([`dashed`]). No allocation.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, &'static str, u64)) {
        let b = &self.back;
        f("", "tx-frames", b.tx_frames);
        f("", "tx-bytes", b.tx_bytes);
        f("", "tx-errors", b.tx_errors);
        f("", "tx-dropped", self.port.drops());
        f("", "vlan-dropped", self.vlan_dropped());
        f("", "rx-frames", b.rx_frames);
        f("", "rx-bytes", b.rx_bytes);
        f("", "rx-dropped", self.rx_dropped());
        f("", "rx-no-buffer", b.rx_no_buffer);
        for (k, v) in self.port.kv() {
            f("switch-", k, v);
        }
    }

    /// The one-line summary printed at power-off (after `vif d<fe>/<devid>: `).
    pub fn summary(&self) -> impl fmt::Display + '_ {
        Summary(self)
    }
}

struct Summary<'a>(&'a VifCounters);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        write!(
            f,
            "tx {} rx {} dropped {} (tx {} vlan {} rx {}) errors {}",
            c.back.tx_frames,
            c.back.rx_frames,
            c.port.drops().saturating_add(c.rx_dropped()),
            c.port.drops(),
            c.vlan_dropped(),
            c.rx_dropped(),
            c.back.tx_errors.saturating_add(c.back.rx_errors),
        )
    }
}

/// Writes a key with `_` turned into `-` into `out`; the bytes written, `None` if `out`
/// is too short.
pub fn dashed(prefix: &str, rest: &str, out: &mut [u8]) -> Option<usize> {
    let n = prefix.len().checked_add(rest.len())?;
    let out = out.get_mut(..n)?;
    for (o, b) in out.iter_mut().zip(prefix.bytes().chain(rest.bytes())) {
        *o = if b == b'_' { b'-' } else { b };
    }
    Some(n)
}

/// When to rewrite a vif's published counters: after at least [`REFRESH_FRAMES`]
/// frames since the last write, so that a busy vif costs one set of xenstore writes per
/// 64 frames rather than per frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsRefresh {
    published: u64,
}

impl StatsRefresh {
    /// Whether counters with this [`VifCounters::activity`] are due; if so they count
    /// as published.
    pub fn due(&mut self, activity: u64) -> bool {
        // A smaller activity (a new netback) restarts the count.
        if activity < self.published || activity - self.published >= REFRESH_FRAMES {
            self.published = activity;
            true
        } else {
            false
        }
    }

    /// Records a write made for another reason (connect, disconnect).
    pub fn published(&mut self, activity: u64) {
        self.published = activity;
    }
}

#[cfg(test)]
mod tests;
