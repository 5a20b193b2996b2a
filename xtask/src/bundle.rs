//! Packing guest kernels into a boot bundle file (the hypervisor's `-initrd` module).

use crate::{Result, err, target_dir};
use hypervisor::bundle::build::{Guest, Module, bundle_with_modules};
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

/// A disk image handed to the control domain (dom0) as a named boot module
/// (`cargo xtask run --disk NAME=PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskFile {
    /// The image file.
    pub path: PathBuf,
    /// Name the control domain finds the disk by (at most 31 bytes).
    pub name: String,
}

impl DiskFile {
    /// Parses `NAME=PATH` (the `--disk` argument).
    pub fn parse(arg: &str) -> std::result::Result<Self, String> {
        let (name, path) = arg
            .split_once('=')
            .ok_or_else(|| format!("--disk {arg}: expected NAME=PATH"))?;
        if name.is_empty() || name.len() > 31 {
            return Err(format!("--disk {arg}: NAME must have 1 to 31 bytes"));
        }
        if path.is_empty() {
            return Err(format!("--disk {arg}: PATH is empty"));
        }
        Ok(DiskFile {
            path: PathBuf::from(path),
            name: name.to_string(),
        })
    }
}

/// Extra dom0 memory, MiB, for these disks: the module table and every image rounded up
/// to pages, then to MiB, plus room for the p2m and page tables that map them (1 MiB,
/// and 1 MiB more per 64 MiB). 0 for no disks. A file that cannot be read counts 0
/// (writing the bundle then reports it).
pub fn disks_memory_mib(disks: &[DiskFile]) -> u32 {
    if disks.is_empty() {
        return 0;
    }
    let table = xen_pv_abi::modules::data_start(disks.len() as u64).unwrap_or(u64::MAX);
    let bytes = disks.iter().fold(table, |acc, d| {
        let len = std::fs::metadata(&d.path).map(|m| m.len()).unwrap_or(0);
        acc.saturating_add(len.next_multiple_of(4096))
    });
    let mib = bytes.div_ceil(1 << 20);
    u32::try_from(mib.saturating_add(1 + mib.div_ceil(64))).unwrap_or(u32::MAX)
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

/// Packs the guests, then the disks as dom0 modules, into
/// `target/images/bundle-<names>-<hash>.bin` and returns its path.
///
/// Writers of the same name (tests run in parallel) never see a half-written file: the
/// bundle is written to a file unique to this call, then renamed into place.
pub fn write_bundle(guests: &[GuestFile], disks: &[DiskFile]) -> Result<PathBuf> {
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
    let disk_bytes: Vec<Vec<u8>> = disks
        .iter()
        .map(|d| {
            std::fs::read(&d.path)
                .map_err(|e| err!("cannot read disk image {}: {e}", d.path.display()))
        })
        .collect::<Result<_>>()?;
    let modules: Vec<Module<'_>> = disks
        .iter()
        .zip(&disk_bytes)
        .map(|(d, data)| Module {
            name: &d.name,
            data,
        })
        .collect();
    let bytes = bundle_with_modules(&entries, &modules)
        .map_err(|e| err!("cannot build the boot bundle: {e}"))?;

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
    fn disk_arguments_parse() {
        assert_eq!(
            DiskFile::parse("xvda=/tmp/a=b.img"),
            Ok(DiskFile {
                path: "/tmp/a=b.img".into(),
                name: "xvda".into()
            })
        );
        for bad in ["noequals", "=/p", "d=", &format!("{}=/p", "n".repeat(32))] {
            assert!(DiskFile::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn disks_are_modules_of_the_bundle_and_size_dom0() {
        let dir = std::env::temp_dir().join(format!("xtask-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("d.img");
        std::fs::write(&disk, vec![0x5a; 3 << 20]).unwrap();
        let kernel = dir.join("k");
        std::fs::write(&kernel, b"\x7fELF").unwrap();
        let d = DiskFile {
            path: disk.clone(),
            name: "xvda".into(),
        };
        // 3 MiB + a table page → 4 MiB, + 1 + 1 for the tables.
        assert_eq!(disks_memory_mib(std::slice::from_ref(&d)), 6);
        assert_eq!(disks_memory_mib(&[]), 0);
        let path = write_bundle(&[GuestFile::new(&kernel)], std::slice::from_ref(&d)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let b = hypervisor::bundle::parse_bundle(&bytes).unwrap();
        assert_eq!(b.guests.len(), 1);
        assert_eq!(b.modules.len(), 1);
        assert_eq!(b.modules[0].name, b"xvda");
        assert_eq!(b.modules[0].data.len(), 3 << 20);
        let missing = DiskFile {
            path: dir.join("missing"),
            name: "x".into(),
        };
        assert!(write_bundle(&[GuestFile::new(&kernel)], &[missing]).is_err());
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn sanitize_keeps_names_file_safe() {
        assert_eq!(sanitize("a b/c-d_e"), "a_b_c-d_e");
    }
}
