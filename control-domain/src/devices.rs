//! Split-driver devices the control domain sets up as the toolstack, from its command
//! line, and the xenstore directories xl would create for them (control-plane doc
//! §4.3–§4.5).
//!
//! # Grammar (one word per device, words separated by spaces)
//!
//! * `vbd.<fe>=<disk>[,<vdev>][,ro|,rw]`: a block device of domain `<fe>` served by the
//!   control domain. `<disk>` (1..=64 printable bytes, no `,`) goes to the backend's
//!   `params`. `<vdev>` is `xvd<letters>[<partition>]` (`xvda` = devid 51712, encoded as
//!   libxl does: `202<<8 | disk<<4 | partition` for disks below 16 and partitions below 16,
//!   else `1<<28 | disk<<8 | partition`); without it the first `xvd` name not yet used by
//!   that domain. `ro` makes it read-only (`mode = r`), default `rw`.
//! * `vif.<fe>=<mac>[,vlan=<n>|,trunk=<n>;<n>…]`: a network interface of `<fe>` on the
//!   control domain's switch. `<mac>` is `xx:xx:xx:xx:xx:xx`, unicast and not all zero.
//!   `vlan=<n>` makes it an access port of VLAN `n`, `trunk=` a trunk carrying the listed
//!   VLANs (at most [`MAX_TRUNK_VLANS`], no repeats); VLANs are 1..=4094; default
//!   untagged. Devids count from 0 per domain in word order.
//! * `dev.<kind>.<fe>=<be>`: a device of another kind (`[a-z0-9_-]`, 1..=16 bytes, not
//!   `vbd`, `vif` or `console`) of `<fe>` served by domain `<be>` (a domU for the
//!   split-driver demo, kind `demo`). Devids count from 0 per domain and kind.
//!
//! `<fe>` is a decimal domU id (1..=32751); the backend of `vbd` and `vif` is domain 0.
//! At most [`MAX_DEVICES`] devices are kept; every refused word is reported with a reason.
//!
//! # What [`write_device`] creates
//!
//! Frontend `/local/domain/<fe>/device/<kind>/<devid>/`, perms `[n<fe>, r<be>]`:
//! `backend`, `backend-id`, `state = 1`; vbd adds `virtual-device`, `device-type = disk`,
//! `trusted = 1`; vif adds `handle`, `mac`, `trusted = 1`.
//!
//! Backend `/local/domain/<be>/backend/<kind>/<fe>/<devid>/`, perms `[n<be>, r<fe>]`:
//! `frontend`, `frontend-id`, `online = 1`, `state = 1`; vbd adds `params`, `mode`
//! (`r`/`w`), `type = phy`, `dev` (the vdev name), `removable = 0`, `bootable = 1`,
//! `device-type = disk`, `discard-enable = 0`; vif adds `mac`, `handle`, `type = vif`,
//! `bridge = vswitch` (the control domain's switch) and, keys of ours, `vlan = <n>` for
//! an access port or `trunk = <n>;<n>…` for a trunk (neither when untagged).
//! Every key has its directory's permissions (written by dom0, they keep the owner).
//! No hotplug script runs: `script`, `hotplug-status` and `physical-device` are left to
//! the backend.

use crate::xenstored::{Access, Perm, Xenstored};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use xen_pv_abi::{DomId, Errno};

/// Most devices kept from one command line.
pub const MAX_DEVICES: usize = 32;
/// Most VLANs of one trunk port.
pub const MAX_TRUNK_VLANS: usize = 16;
/// Longest generic kind name.
pub const MAX_KIND_LEN: usize = 16;
/// Longest disk name (`params`).
pub const MAX_DISK_LEN: usize = 64;
/// The bridge a vif's backend names (the control domain's switch).
pub const BRIDGE: &str = "vswitch";
/// Highest domain id a device may name (`DOMID_FIRST_RESERVED - 1`).
const MAX_DOMID: u16 = 0x7fef;
/// Most letters of an `xvd` name (`xvdzzz` is disk 18277, inside the extended encoding).
const MAX_VDEV_LETTERS: usize = 3;

/// The VLANs of a vif's switch port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VifVlan {
    /// No VLAN tags.
    Untagged,
    /// Access port of one VLAN.
    Access(u16),
    /// Trunk carrying these VLANs (tagged), in the order given.
    Trunk(Vec<u16>),
}

/// The kind-specific part of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A block device.
    Vbd {
        /// The disk (`params`).
        disk: String,
        /// Its Linux name (`xvda`), the backend's `dev`.
        vdev: String,
        /// Read-only (`mode = r`).
        readonly: bool,
    },
    /// A network interface.
    Vif {
        /// Its MAC address.
        mac: [u8; 6],
        /// Its switch port's VLANs.
        vlan: VifVlan,
    },
    /// Only the generic keys.
    Generic,
}

/// One configured device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// `vbd`, `vif` or the generic kind.
    pub kind: String,
    /// The frontend domain.
    pub frontend: DomId,
    /// The backend domain.
    pub backend: DomId,
    /// The device id (the directory name under `<kind>`).
    pub devid: u32,
    /// Kind-specific settings.
    pub spec: DeviceSpec,
}

impl Device {
    /// `/local/domain/<fe>/device/<kind>/<devid>`.
    pub fn frontend_path(&self) -> String {
        fmt(format_args!(
            "/local/domain/{}/device/{}/{}",
            self.frontend.0, self.kind, self.devid
        ))
    }

    /// `/local/domain/<be>/backend/<kind>/<fe>/<devid>`.
    pub fn backend_path(&self) -> String {
        fmt(format_args!(
            "/local/domain/{}/backend/{}/{}/{}",
            self.backend.0, self.kind, self.frontend.0, self.devid
        ))
    }
}

/// Why a device word was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// More than [`MAX_DEVICES`] devices.
    TooMany,
    /// A domain id that is not decimal, out of range, or dom0 as a frontend.
    BadDomain,
    /// The frontend serves itself.
    SelfBackend,
    /// A generic kind name that is malformed or reserved.
    BadKind,
    /// A disk name that is empty, too long or has unprintable bytes.
    BadDisk,
    /// A vdev that is not `xvd<letters>[<partition>]` or out of range.
    BadVdev,
    /// A MAC that is malformed, multicast or all zero.
    BadMac,
    /// A VLAN out of 1..=4094, repeated, or too many of them.
    BadVlan,
    /// An option not in the grammar, or given twice.
    BadOption,
    /// The frontend already has a device of this kind with this devid.
    Duplicate,
    /// No devid is left for the frontend.
    NoDevid,
    /// Memory for the list ran out.
    NoMemory,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::TooMany => "too many devices",
            Refusal::BadDomain => "bad domain id (a decimal domU id 1..=32751)",
            Refusal::SelfBackend => "a domain cannot be its own backend",
            Refusal::BadKind => "bad device kind ([a-z0-9_-], 1..=16 bytes, not vbd/vif/console)",
            Refusal::BadDisk => "bad disk name (1..=64 printable bytes, no ',')",
            Refusal::BadVdev => "bad vdev (xvd<letters>[<partition>])",
            Refusal::BadMac => "bad MAC (xx:xx:xx:xx:xx:xx, unicast, not zero)",
            Refusal::BadVlan => "bad VLAN (1..=4094, no repeats, at most 16)",
            Refusal::BadOption => "unknown or repeated option",
            Refusal::Duplicate => "the domain has this device already",
            Refusal::NoDevid => "no device id left",
            Refusal::NoMemory => "out of memory",
        })
    }
}

fn fmt(args: fmt::Arguments<'_>) -> String {
    let mut s = String::new();
    let _ = s.write_fmt(args);
    s
}

/// A decimal number of at most `max_digits` digits without sign or leading zeros.
fn decimal(s: &[u8], max_digits: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_digits || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    s.iter().try_fold(0u32, |a, &d| {
        d.is_ascii_digit()
            .then(|| a.checked_mul(10)?.checked_add(u32::from(d - b'0')))
            .flatten()
    })
}

fn domid(s: &[u8]) -> Option<DomId> {
    let v = u16::try_from(decimal(s, 5)?).ok()?;
    (v <= MAX_DOMID).then_some(DomId(v))
}

fn domu(s: &[u8]) -> Result<DomId, Refusal> {
    match domid(s) {
        Some(d) if d.0 != 0 => Ok(d),
        _ => Err(Refusal::BadDomain),
    }
}

/// The devid libxl gives `xvd<letters>[<partition>]`, or `None`.
pub fn vdev_devid(name: &[u8]) -> Option<u32> {
    let rest = name.strip_prefix(b"xvd")?;
    let letters = rest.iter().take_while(|b| b.is_ascii_lowercase()).count();
    if letters == 0 || letters > MAX_VDEV_LETTERS {
        return None;
    }
    // Bijective base 26 (a = 1 … z = 26), minus one: xvda = 0, xvdz = 25, xvdaa = 26.
    let disk = rest[..letters]
        .iter()
        .fold(0u32, |a, &c| a * 26 + u32::from(c - b'a' + 1))
        - 1;
    let part = match &rest[letters..] {
        [] => 0,
        p => decimal(p, 3)?,
    };
    if disk < 16 && part < 16 {
        Some((202 << 8) | (disk << 4) | part)
    } else if part < 256 {
        Some((1 << 28) | (disk << 8) | part)
    } else {
        None
    }
}

/// The `xvd` name of disk index `disk` (no partition).
fn vdev_name(disk: u32) -> String {
    let mut letters = [0u8; MAX_VDEV_LETTERS];
    let mut n = disk + 1;
    let mut i = letters.len();
    while n > 0 && i > 0 {
        n -= 1;
        i -= 1;
        letters[i] = b'a' + (n % 26) as u8;
        n /= 26;
    }
    let mut s = String::from("xvd");
    s.extend(letters[i..].iter().map(|&b| char::from(b)));
    s
}

fn disk_name(s: &[u8]) -> Result<String, Refusal> {
    if s.is_empty() || s.len() > MAX_DISK_LEN || !s.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::BadDisk);
    }
    // Printable ASCII: valid UTF-8.
    Ok(s.iter().map(|&b| char::from(b)).collect())
}

fn mac(s: &[u8]) -> Result<[u8; 6], Refusal> {
    let mut out = [0u8; 6];
    let mut parts = s.split(|&b| b == b':');
    for o in &mut out {
        let p = parts.next().ok_or(Refusal::BadMac)?;
        let [h, l] = p else {
            return Err(Refusal::BadMac);
        };
        let hex = |c: u8| char::from(c).to_digit(16);
        *o = (hex(*h).ok_or(Refusal::BadMac)? * 16 + hex(*l).ok_or(Refusal::BadMac)?) as u8;
    }
    if parts.next().is_some() || out[0] & 1 != 0 || out == [0; 6] {
        return Err(Refusal::BadMac);
    }
    Ok(out)
}

fn vlan(s: &[u8]) -> Result<u16, Refusal> {
    match decimal(s, 4) {
        Some(v @ 1..=4094) => Ok(v as u16),
        _ => Err(Refusal::BadVlan),
    }
}

fn kind_name(s: &[u8]) -> Result<String, Refusal> {
    let ok = !s.is_empty()
        && s.len() <= MAX_KIND_LEN
        && s.iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !matches!(s, b"vbd" | b"vif" | b"console");
    if ok {
        Ok(s.iter().map(|&b| char::from(b)).collect())
    } else {
        Err(Refusal::BadKind)
    }
}

/// The devices configured on `cmdline`, in word order; `refused` hears of every device
/// word left out and why. Words that are not device words are ignored.
pub fn parse_devices(cmdline: &[u8], mut refused: impl FnMut(&[u8], Refusal)) -> Vec<Device> {
    let mut devices: Vec<Device> = Vec::new();
    for word in cmdline.split(|&b| b == b' ' || b == b'\t') {
        let parsed = if let Some(rest) = word.strip_prefix(b"vbd.") {
            parse_vbd(rest, &devices)
        } else if let Some(rest) = word.strip_prefix(b"vif.") {
            parse_vif(rest, &devices)
        } else if let Some(rest) = word.strip_prefix(b"dev.") {
            parse_generic(rest, &devices)
        } else {
            continue;
        };
        let r = parsed.and_then(|d| {
            if devices.len() >= MAX_DEVICES {
                return Err(Refusal::TooMany);
            }
            if devices
                .iter()
                .any(|o| o.kind == d.kind && o.frontend == d.frontend && o.devid == d.devid)
            {
                return Err(Refusal::Duplicate);
            }
            devices.try_reserve(1).map_err(|_| Refusal::NoMemory)?;
            devices.push(d);
            Ok(())
        });
        if let Err(why) = r {
            refused(word, why);
        }
    }
    devices
}

/// `<fe>=<value>` split at the first `=`.
fn key_value(rest: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
    let eq = rest
        .iter()
        .position(|&b| b == b'=')
        .ok_or(Refusal::BadOption)?;
    Ok((&rest[..eq], &rest[eq + 1..]))
}

fn parse_vbd(rest: &[u8], known: &[Device]) -> Result<Device, Refusal> {
    let (fe, value) = key_value(rest)?;
    let fe = domu(fe)?;
    let mut fields = value.split(|&b| b == b',');
    let disk = disk_name(fields.next().unwrap_or_default())?;
    let (mut vdev, mut mode) = (None, None);
    for f in fields {
        match f {
            b"ro" | b"rw" if mode.is_none() => mode = Some(f == b"ro"),
            _ if f.starts_with(b"xvd") && vdev.is_none() => {
                let devid = vdev_devid(f).ok_or(Refusal::BadVdev)?;
                vdev = Some((f.iter().map(|&b| char::from(b)).collect(), devid));
            }
            _ => return Err(Refusal::BadOption),
        }
    }
    let (vdev, devid) = match vdev {
        Some(v) => v,
        None => {
            // The first xvd disk (partition 0) this domain does not have yet.
            let taken = |disk: u32| {
                known.iter().any(|d| {
                    d.kind == "vbd"
                        && d.frontend == fe
                        && vdev_devid(vdev_name(disk).as_bytes()) == Some(d.devid)
                })
            };
            let disk = (0..26).find(|&d| !taken(d)).ok_or(Refusal::NoDevid)?;
            let name = vdev_name(disk);
            let devid = vdev_devid(name.as_bytes()).ok_or(Refusal::NoDevid)?;
            (name, devid)
        }
    };
    Ok(Device {
        kind: String::from("vbd"),
        frontend: fe,
        backend: DomId(0),
        devid,
        spec: DeviceSpec::Vbd {
            disk,
            vdev,
            readonly: mode.unwrap_or(false),
        },
    })
}

/// The next devid of `kind` for `fe`: one above the highest so far.
fn next_devid(known: &[Device], kind: &str, fe: DomId) -> Result<u32, Refusal> {
    match known
        .iter()
        .filter(|d| d.kind == kind && d.frontend == fe)
        .map(|d| d.devid)
        .max()
    {
        None => Ok(0),
        Some(m) => m.checked_add(1).ok_or(Refusal::NoDevid),
    }
}

fn parse_vif(rest: &[u8], known: &[Device]) -> Result<Device, Refusal> {
    let (fe, value) = key_value(rest)?;
    let fe = domu(fe)?;
    let mut fields = value.split(|&b| b == b',');
    let mac = mac(fields.next().unwrap_or_default())?;
    let mut port = None;
    for f in fields {
        if port.is_some() {
            return Err(Refusal::BadOption);
        }
        if let Some(v) = f.strip_prefix(b"vlan=") {
            port = Some(VifVlan::Access(vlan(v)?));
        } else if let Some(list) = f.strip_prefix(b"trunk=") {
            let mut vids: Vec<u16> = Vec::new();
            for v in list.split(|&b| b == b';') {
                let v = vlan(v)?;
                if vids.contains(&v) || vids.len() == MAX_TRUNK_VLANS {
                    return Err(Refusal::BadVlan);
                }
                vids.try_reserve(1).map_err(|_| Refusal::NoMemory)?;
                vids.push(v);
            }
            port = Some(VifVlan::Trunk(vids));
        } else {
            return Err(Refusal::BadOption);
        }
    }
    Ok(Device {
        kind: String::from("vif"),
        frontend: fe,
        backend: DomId(0),
        devid: next_devid(known, "vif", fe)?,
        spec: DeviceSpec::Vif {
            mac,
            vlan: port.unwrap_or(VifVlan::Untagged),
        },
    })
}

fn parse_generic(rest: &[u8], known: &[Device]) -> Result<Device, Refusal> {
    let dot = rest
        .iter()
        .position(|&b| b == b'.')
        .ok_or(Refusal::BadKind)?;
    let kind = kind_name(&rest[..dot])?;
    let (fe, be) = key_value(&rest[dot + 1..])?;
    let fe = domu(fe)?;
    let be = domid(be).ok_or(Refusal::BadDomain)?;
    if be == fe {
        return Err(Refusal::SelfBackend);
    }
    Ok(Device {
        devid: next_devid(known, &kind, fe)?,
        kind,
        frontend: fe,
        backend: be,
        spec: DeviceSpec::Generic,
    })
}

/// `[n<owner>, r<reader>]`.
fn perms(owner: DomId, reader: DomId) -> [Perm; 2] {
    [
        Perm {
            domid: owner,
            access: Access::None,
        },
        Perm {
            domid: reader,
            access: Access::Read,
        },
    ]
}

/// Makes `/local/domain/<id>` exist with the permissions `populate_domain` gives it
/// (`[n0, r<id>]`, `[n0]` for dom0), so that a backend directory written before its
/// domain is populated sits under a home that domain can read.
fn ensure_home(store: &mut Xenstored, id: DomId) -> Result<(), Errno> {
    let home = fmt(format_args!("/local/domain/{}", id.0));
    if store.read_local(&home).is_some() {
        return Ok(());
    }
    store.mkdir_local(&home)?;
    let p = perms(DomId(0), id);
    store.set_perms_local(&home, if id.0 == 0 { &p[..1] } else { &p })
}

/// Creates `dir` afresh (as libxl removes a stale one) with `perms`.
fn fresh_dir(store: &mut Xenstored, dir: &str, perms: &[Perm]) -> Result<(), Errno> {
    match store.rm_local(dir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    store.mkdir_local(dir)?;
    store.set_perms_local(dir, perms)
}

fn mac_string(m: &[u8; 6]) -> String {
    fmt(format_args!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    ))
}

/// Writes `dev`'s frontend and backend directories and keys as xl does (module doc).
pub fn write_device(store: &mut Xenstored, dev: &Device) -> Result<(), Errno> {
    let (fe, be) = (dev.frontend, dev.backend);
    let front = dev.frontend_path();
    let back = dev.backend_path();
    ensure_home(store, fe)?;
    ensure_home(store, be)?;
    fresh_dir(store, &front, &perms(fe, be))?;
    fresh_dir(store, &back, &perms(be, fe))?;
    let mut put = |dir: &str, key: &str, value: &str| {
        store.write_local(&fmt(format_args!("{dir}/{key}")), value.as_bytes())
    };
    put(&front, "backend", &back)?;
    put(&front, "backend-id", &fmt(format_args!("{}", be.0)))?;
    put(&front, "state", "1")?;
    put(&back, "frontend", &front)?;
    put(&back, "frontend-id", &fmt(format_args!("{}", fe.0)))?;
    put(&back, "online", "1")?;
    put(&back, "state", "1")?;
    let devid = fmt(format_args!("{}", dev.devid));
    match &dev.spec {
        DeviceSpec::Vbd {
            disk,
            vdev,
            readonly,
        } => {
            put(&front, "virtual-device", &devid)?;
            put(&front, "device-type", "disk")?;
            put(&front, "trusted", "1")?;
            put(&back, "params", disk)?;
            put(&back, "mode", if *readonly { "r" } else { "w" })?;
            put(&back, "type", "phy")?;
            put(&back, "dev", vdev)?;
            put(&back, "removable", "0")?;
            put(&back, "bootable", "1")?;
            put(&back, "device-type", "disk")?;
            put(&back, "discard-enable", "0")?;
        }
        DeviceSpec::Vif { mac, vlan } => {
            let mac = mac_string(mac);
            put(&front, "handle", &devid)?;
            put(&front, "mac", &mac)?;
            put(&front, "trusted", "1")?;
            put(&back, "mac", &mac)?;
            put(&back, "handle", &devid)?;
            put(&back, "type", "vif")?;
            put(&back, "bridge", BRIDGE)?;
            match vlan {
                VifVlan::Untagged => {}
                VifVlan::Access(v) => put(&back, "vlan", &fmt(format_args!("{v}")))?,
                VifVlan::Trunk(vs) => {
                    let mut list = String::new();
                    for (i, v) in vs.iter().enumerate() {
                        let sep = if i == 0 { "" } else { ";" };
                        let _ = write!(list, "{sep}{v}");
                    }
                    put(&back, "trunk", &list)?;
                }
            }
        }
        DeviceSpec::Generic => {}
    }
    Ok(())
}

/// Writes every device of `devices` whose frontend is `fe` (call it before `fe` is
/// introduced); the first error stops it.
pub fn populate_devices(store: &mut Xenstored, devices: &[Device], fe: DomId) -> Result<(), Errno> {
    devices
        .iter()
        .filter(|d| d.frontend == fe)
        .try_for_each(|d| write_device(store, d))
}

#[cfg(test)]
mod tests;
