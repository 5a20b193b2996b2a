//! The keys a block backend writes in its xenstore directory
//! (`/local/domain/<be>/backend/vbd/<fe>/<devid>/`).

use super::disk::{Disk, DiskFeatures, SECTOR_SIZE};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use xen_pv_abi::blkif::VDISK_READONLY;

/// What the frontend learns about a disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Writes are refused.
    pub read_only: bool,
    /// Optional operations.
    pub features: DiskFeatures,
}

impl DiskInfo {
    /// The information of `disk`.
    pub fn of<D: Disk + ?Sized>(disk: &D) -> Self {
        DiskInfo {
            sectors: disk.sectors(),
            read_only: disk.read_only(),
            features: disk.features(),
        }
    }
}

/// The backend keys for a disk served with `max_indirect_segments` (0: no indirect
/// requests), as `(key, value)` pairs relative to the backend directory.
///
/// All of them may be written once, before switching to InitWait: GRUB reads `sectors`
/// and `sector-size` while the backend is still in InitWait, and Linux blkfront reads
/// the rest when the backend reaches Connected (a later rewrite of `sectors` followed
/// by state Connected announces a resize). `mode` is normally the toolstack's; it is
/// included so that a control domain acting as its own toolstack writes a consistent
/// set. No `max-ring-page-order` / `multi-queue-max-queues`: one single-page ring.
/// `feature-persistent` is 0: data moves by grant copy, so persistent grants would
/// gain nothing.
pub fn backend_keys(info: &DiskInfo, max_indirect_segments: u16) -> Vec<(&'static str, String)> {
    let flag = |b: bool| String::from(if b { "1" } else { "0" });
    let f = info.features;
    let mut keys = Vec::with_capacity(13);
    keys.push(("sectors", format!("{}", info.sectors)));
    keys.push(("sector-size", format!("{SECTOR_SIZE}")));
    keys.push(("physical-sector-size", format!("{SECTOR_SIZE}")));
    let vdisk = if info.read_only { VDISK_READONLY } else { 0 };
    keys.push(("info", format!("{vdisk}")));
    keys.push(("mode", String::from(if info.read_only { "r" } else { "w" })));
    keys.push(("feature-flush-cache", flag(f.flush)));
    keys.push(("feature-barrier", flag(f.flush)));
    // A read-only disk refuses discards: do not advertise them.
    let discard = f.discard && !info.read_only;
    keys.push(("feature-discard", flag(discard)));
    if discard {
        keys.push(("discard-granularity", format!("{SECTOR_SIZE}")));
        keys.push(("discard-alignment", String::from("0")));
        keys.push(("discard-secure", flag(f.secure_discard)));
    }
    if max_indirect_segments > 0 {
        keys.push((
            "feature-max-indirect-segments",
            format!("{max_indirect_segments}"),
        ));
    }
    keys.push(("feature-persistent", flag(false)));
    keys
}
