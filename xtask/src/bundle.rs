//! Packing guest kernels into a boot bundle file (the hypervisor's `-initrd` module).

use crate::{Result, err, target_dir};
use hypervisor::bundle::build::{Guest, bundle};
use std::path::{Path, PathBuf};

/// Default guest memory, MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 32;

/// One guest kernel file to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestFile {
    /// The Xen PV kernel ELF.
    pub path: PathBuf,
    /// Name in console prefixes and reports (at most 31 bytes).
    pub name: String,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// Guest command line.
    pub cmdline: String,
    /// Build as dom0.
    pub dom0: bool,
    /// Scheduler weight (0 = the default, 256).
    pub weight: u16,
    /// Scheduler cap in percent of one CPU (0 = none).
    pub cap: u16,
    /// Most grant frames (xl's `max_grant_frames`; 0 = Xen's default, 64).
    pub max_grant_frames: u16,
    /// Most maptrack frames of 256 mappings (xl's `max_maptrack_frames`; 0 = Xen's
    /// default, 1024).
    pub max_maptrack_frames: u16,
}

impl GuestFile {
    /// A domU with the default memory and an empty command line, named after the file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        GuestFile {
            name: default_name(&path),
            path,
            memory_mib: DEFAULT_MEMORY_MIB,
            cmdline: String::new(),
            dom0: false,
            weight: 0,
            cap: 0,
            max_grant_frames: 0,
            max_maptrack_frames: 0,
        }
    }

    /// Sets the guest command line.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }
}

/// A file's stem, cut to 31 bytes on a character boundary (the bundle's name limit).
pub fn default_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guest".to_string());
    let mut end = stem.len().min(31);
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    stem[..end].to_string()
}

/// Memory QEMU needs for these guests: their sum plus 64 MiB for the hypervisor, at
/// least 256 MiB.
pub fn machine_memory_mib(guests: &[GuestFile]) -> u64 {
    let guests_total: u64 = guests.iter().map(|g| u64::from(g.memory_mib)).sum();
    (guests_total + 64).max(256)
}

/// Packs the guests into `target/images/bundle-<names>.bin` and returns its path.
///
/// Writers of the same name (tests run in parallel) never see a half-written file: the
/// bundle is written to a file unique to this call, then renamed into place.
pub fn write_bundle(guests: &[GuestFile]) -> Result<PathBuf> {
    let images: Vec<Vec<u8>> = guests
        .iter()
        .map(|g| {
            std::fs::read(&g.path)
                .map_err(|e| err!("cannot read guest kernel {}: {e}", g.path.display()))
        })
        .collect::<Result<_>>()?;
    let entries: Vec<Guest<'_>> = guests
        .iter()
        .zip(&images)
        .map(|(g, image)| Guest {
            image,
            memory_kib: g.memory_mib.saturating_mul(1024),
            dom0: g.dom0,
            name: &g.name,
            cmdline: &g.cmdline,
            weight: g.weight,
            cap: g.cap,
            max_grant_frames: g.max_grant_frames,
            max_maptrack_frames: g.max_maptrack_frames,
        })
        .collect();
    let bytes = bundle(&entries).map_err(|e| err!("cannot build the boot bundle: {e}"))?;

    let dir = target_dir().join("images");
    std::fs::create_dir_all(&dir).map_err(|e| err!("cannot create {}: {e}", dir.display()))?;
    let label: String = guests
        .iter()
        .map(|g| sanitize(&g.name))
        .collect::<Vec<_>>()
        .join("+");
    let path = dir.join(format!("bundle-{label}-{:016x}.bin", fingerprint(&bytes)));
    let tmp = dir.join(format!(
        ".bundle-{}-{}.tmp",
        std::process::id(),
        unique_counter()
    ));
    std::fs::write(&tmp, &bytes).map_err(|e| err!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| err!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Keeps file names to letters, digits, `-` and `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// FNV-1a of the bundle, so bundles with the same guests but other settings (command
/// line, memory) get files of their own.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn unique_counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_to_31_bytes_on_char_boundaries() {
        assert_eq!(default_name(Path::new("/x/pv-guest")), "pv-guest");
        assert_eq!(default_name(Path::new("k.elf")), "k");
        let long = format!("{}é", "a".repeat(30));
        assert_eq!(default_name(Path::new(&long)), "a".repeat(30));
        assert_eq!(default_name(Path::new(&"b".repeat(40))).len(), 31);
    }

    #[test]
    fn machine_memory_covers_guests_plus_hypervisor() {
        let mut g = GuestFile::new("a");
        assert_eq!(machine_memory_mib(std::slice::from_ref(&g)), 256);
        g.memory_mib = 512;
        assert_eq!(machine_memory_mib(&[g.clone(), g]), 1088);
    }

    #[test]
    fn sanitize_keeps_names_file_safe() {
        assert_eq!(sanitize("a b/c-d_e"), "a_b_c-d_e");
    }
}
