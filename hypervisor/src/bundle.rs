//! The boot bundle: how guest kernels reach the hypervisor.
//!
//! QEMU 7.2's PVH loader passes exactly one module (`-initrd`). xtask packs every guest
//! to start into one file: a header, one [`BundleEntry`] per guest, then the kernel
//! images. Entries flagged [`ENTRY_FLAG_MODULE`] are not guests but named boot modules
//! (disk images, for instance): the domain builder hands them all to dom0 as its initrd
//! (see `xen_pv_abi::modules`). A module that is not a bundle (for instance a bare ELF) is taken as a single
//! guest with default settings.
//!
//! The module is input from the person running the machine, not from a guest, but it is
//! still parsed defensively: every length and offset is checked.

use alloc::vec::Vec;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// First 8 bytes of a bundle.
pub const BUNDLE_MAGIC: [u8; 8] = *b"XPVBNDL1";
/// Most guests one bundle may carry: a sanity bound on the header's count (domain ids
/// stop at 0x7fef), not a limit of the hypervisor's data structures, which grow on the
/// heap.
pub const MAX_BUNDLE_ENTRIES: usize = 4096;
/// Default memory of a guest, when the bundle does not say.
pub const DEFAULT_GUEST_MEMORY_KIB: u32 = 32 * 1024;

/// Entry flag: build this guest as the initial domain (dom0: SIF_INITDOMAIN, no console
/// or xenstore ring, the dom0 console form in start_info).
pub const ENTRY_FLAG_DOM0: u32 = 1 << 0;

/// Entry flag: not a guest but a boot module for dom0. Its `offset`/`len` give the
/// module's bytes and `name` its name (at most 31 bytes); the other fields are ignored
/// and written as zero. Cannot be combined with [`ENTRY_FLAG_DOM0`].
pub const ENTRY_FLAG_MODULE: u32 = 1 << 1;

/// Bundle header (16 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BundleHeader {
    /// [`BUNDLE_MAGIC`].
    pub magic: [u8; 8],
    /// Number of entries that follow the header.
    pub count: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// One guest of a bundle (1088 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BundleEntry {
    /// Offset of the kernel image from the start of the bundle.
    pub offset: u64,
    /// Length of the kernel image in bytes.
    pub len: u64,
    /// Guest memory in KiB.
    pub memory_kib: u32,
    /// `ENTRY_FLAG_*`.
    pub flags: u32,
    /// Name used in console prefixes and reports, NUL-padded.
    pub name: [u8; 32],
    /// Guest command line, NUL-padded (becomes start_info.cmd_line).
    pub cmdline: [u8; 1024],
    /// Scheduler weight (0 = Xen's default, 256).
    pub weight: u16,
    /// Scheduler cap in percent of one CPU (0 = no cap).
    pub cap: u16,
    /// Most grant frames (xl's `max_grant_frames`; 0 = Xen's default, 64).
    pub max_grant_frames: u16,
    /// Most maptrack frames, 256 mappings each (xl's `max_maptrack_frames`; 0 = Xen's
    /// default, 1024).
    pub max_maptrack_frames: u16,
}

const_assert_eq!(core::mem::size_of::<BundleHeader>(), 16);
const_assert_eq!(core::mem::size_of::<BundleEntry>(), 1088);

/// One guest to build, borrowed from the bundle bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestSpec<'a> {
    /// Kernel image.
    pub image: &'a [u8],
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Build as dom0.
    pub dom0: bool,
    /// Name (no NUL).
    pub name: &'a [u8],
    /// Command line (no NUL).
    pub cmdline: &'a [u8],
    /// Scheduler weight (0 = default).
    pub weight: u16,
    /// Scheduler cap in percent (0 = none).
    pub cap: u16,
    /// Most grant frames (0 = default).
    pub max_grant_frames: u16,
    /// Most maptrack frames (0 = default).
    pub max_maptrack_frames: u16,
}

/// A boot module for dom0, borrowed from the bundle bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleSpec<'a> {
    /// Name (no NUL).
    pub name: &'a [u8],
    /// The module's bytes.
    pub data: &'a [u8],
}

/// Everything a boot module carries: guests to build and modules for dom0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle<'a> {
    /// Guests, in bundle order.
    pub guests: Vec<GuestSpec<'a>>,
    /// Modules ([`ENTRY_FLAG_MODULE`] entries), in bundle order.
    pub modules: Vec<ModuleSpec<'a>>,
}

/// Why a module could not be read as a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Header or entry table runs past the end of the module.
    Truncated,
    /// More entries than [`MAX_BUNDLE_ENTRIES`].
    TooManyEntries(u32),
    /// An entry's image lies outside the module.
    ImageOutOfBounds(usize),
    /// An entry is flagged both dom0 and module.
    BadFlags(usize),
}

/// The guests of a boot module: a bundle, or a single bare kernel image. Module entries
/// are left out (see [`parse_bundle`]).
pub fn parse(module: &[u8]) -> Result<Vec<GuestSpec<'_>>, BundleError> {
    parse_bundle(module).map(|b| b.guests)
}

/// The guests and dom0 modules of a boot module: a bundle, or a single bare kernel image
/// (then no modules).
pub fn parse_bundle(module: &[u8]) -> Result<Bundle<'_>, BundleError> {
    let mut out = Vec::new();
    let mut modules = Vec::new();
    if !module.starts_with(&BUNDLE_MAGIC) {
        out.push(GuestSpec {
            image: module,
            memory_kib: DEFAULT_GUEST_MEMORY_KIB,
            dom0: false,
            name: b"guest",
            cmdline: b"",
            weight: 0,
            cap: 0,
            max_grant_frames: 0,
            max_maptrack_frames: 0,
        });
        return Ok(Bundle {
            guests: out,
            modules,
        });
    }
    let (header, rest) =
        BundleHeader::read_from_prefix(module).map_err(|_| BundleError::Truncated)?;
    if header.count as usize > MAX_BUNDLE_ENTRIES {
        return Err(BundleError::TooManyEntries(header.count));
    }
    let mut table = rest;
    for i in 0..header.count as usize {
        crate::work::step(1);
        let (e, next) = BundleEntry::read_from_prefix(table).map_err(|_| BundleError::Truncated)?;
        table = next;
        let start = usize::try_from(e.offset).map_err(|_| BundleError::ImageOutOfBounds(i))?;
        let len = usize::try_from(e.len).map_err(|_| BundleError::ImageOutOfBounds(i))?;
        let end = start
            .checked_add(len)
            .ok_or(BundleError::ImageOutOfBounds(i))?;
        let image = module
            .get(start..end)
            .ok_or(BundleError::ImageOutOfBounds(i))?;
        // Borrow name and command line from the module itself so the spec outlives `e`.
        let entry_off =
            core::mem::size_of::<BundleHeader>() + i * core::mem::size_of::<BundleEntry>();
        let name_off = entry_off + core::mem::offset_of!(BundleEntry, name);
        let cmd_off = entry_off + core::mem::offset_of!(BundleEntry, cmdline);
        let name = until_nul(&module[name_off..name_off + 32]);
        let cmdline = until_nul(&module[cmd_off..cmd_off + 1024]);
        if e.flags & ENTRY_FLAG_MODULE != 0 {
            if e.flags & ENTRY_FLAG_DOM0 != 0 {
                return Err(BundleError::BadFlags(i));
            }
            modules.push(ModuleSpec { name, data: image });
            continue;
        }
        out.push(GuestSpec {
            image,
            memory_kib: if e.memory_kib == 0 {
                DEFAULT_GUEST_MEMORY_KIB
            } else {
                e.memory_kib
            },
            dom0: e.flags & ENTRY_FLAG_DOM0 != 0,
            name,
            cmdline,
            weight: e.weight,
            cap: e.cap,
            max_grant_frames: e.max_grant_frames,
            max_maptrack_frames: e.max_maptrack_frames,
        });
    }
    Ok(Bundle {
        guests: out,
        modules,
    })
}

fn until_nul(b: &[u8]) -> &[u8] {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..n]
}

/// Builds a bundle in memory (host side: xtask, tests).
#[cfg(not(target_os = "none"))]
pub mod build {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A guest to put in a bundle.
    #[derive(Clone, Debug)]
    pub struct Guest<'a> {
        /// Kernel image bytes.
        pub image: &'a [u8],
        /// Memory in KiB (0 = default).
        pub memory_kib: u32,
        /// Build as dom0.
        pub dom0: bool,
        /// Name, at most 31 bytes.
        pub name: &'a str,
        /// Command line, at most 1023 bytes.
        pub cmdline: &'a str,
        /// Scheduler weight (0 = default 256).
        pub weight: u16,
        /// Scheduler cap in percent of one CPU (0 = none).
        pub cap: u16,
        /// Most grant frames (0 = default).
        pub max_grant_frames: u16,
        /// Most maptrack frames (0 = default).
        pub max_maptrack_frames: u16,
    }

    /// A boot module for dom0 to put in a bundle.
    #[derive(Clone, Debug)]
    pub struct Module<'a> {
        /// Name, at most 31 bytes.
        pub name: &'a str,
        /// The module's bytes.
        pub data: &'a [u8],
    }

    /// Packs guests into bundle bytes. Fails on too many guests or over-long strings or strings with a NUL.
    pub fn bundle(guests: &[Guest<'_>]) -> Result<Vec<u8>, &'static str> {
        bundle_with_modules(guests, &[])
    }

    /// Packs guests, then modules for dom0 ([`ENTRY_FLAG_MODULE`] entries), into bundle
    /// bytes. Fails on too many entries or over-long strings or strings with a NUL.
    pub fn bundle_with_modules(
        guests: &[Guest<'_>],
        modules: &[Module<'_>],
    ) -> Result<Vec<u8>, &'static str> {
        let module_guests: Vec<Guest<'_>> = modules
            .iter()
            .map(|m| Guest {
                image: m.data,
                memory_kib: 0,
                dom0: false,
                name: m.name,
                cmdline: "",
                weight: 0,
                cap: 0,
                max_grant_frames: 0,
                max_maptrack_frames: 0,
            })
            .collect();
        let all: Vec<(&Guest<'_>, bool)> = guests
            .iter()
            .map(|g| (g, false))
            .chain(module_guests.iter().map(|g| (g, true)))
            .collect();
        if all.len() > MAX_BUNDLE_ENTRIES {
            return Err("too many guests and modules for one bundle");
        }
        let header = BundleHeader {
            magic: BUNDLE_MAGIC,
            count: all.len() as u32,
            reserved: 0,
        };
        let mut out = Vec::from(header.as_bytes());
        let mut offset = (core::mem::size_of::<BundleHeader>()
            + all.len() * core::mem::size_of::<BundleEntry>()) as u64;
        offset = offset.next_multiple_of(4096);
        let mut entries = Vec::new();
        for &(g, is_module) in &all {
            let mut name = [0u8; 32];
            let mut cmdline = [0u8; 1024];
            if g.name.len() >= name.len() {
                return Err("guest or module name longer than 31 bytes");
            }
            if g.cmdline.len() >= cmdline.len() {
                return Err("guest command line longer than 1023 bytes");
            }
            // The fields are NUL-padded: a NUL inside would cut them short on reading.
            if g.name.contains('\0') || g.cmdline.contains('\0') {
                return Err("NUL byte in a guest or module name or command line");
            }
            name[..g.name.len()].copy_from_slice(g.name.as_bytes());
            cmdline[..g.cmdline.len()].copy_from_slice(g.cmdline.as_bytes());
            entries.push(BundleEntry {
                offset,
                len: g.image.len() as u64,
                memory_kib: g.memory_kib,
                flags: if is_module {
                    ENTRY_FLAG_MODULE
                } else if g.dom0 {
                    ENTRY_FLAG_DOM0
                } else {
                    0
                },
                name,
                cmdline,
                weight: g.weight,
                cap: g.cap,
                max_grant_frames: g.max_grant_frames,
                max_maptrack_frames: g.max_maptrack_frames,
            });
            offset = (offset + g.image.len() as u64).next_multiple_of(4096);
        }
        for e in &entries {
            out.extend_from_slice(e.as_bytes());
        }
        for ((g, _), e) in all.iter().zip(&entries) {
            out.resize(e.offset as usize, 0);
            out.extend_from_slice(g.image);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::build::{Guest, Module, bundle, bundle_with_modules};
    use super::*;

    #[test]
    fn round_trip() {
        let b = bundle(&[
            Guest {
                image: b"\x7fELF one",
                memory_kib: 0,
                dom0: false,
                name: "a",
                cmdline: "x y",
                weight: 0,
                cap: 0,
                max_grant_frames: 0,
                max_maptrack_frames: 3,
            },
            Guest {
                image: b"\x7fELF two!",
                memory_kib: 8192,
                dom0: true,
                name: "bb",
                cmdline: "",
                weight: 0,
                cap: 0,
                max_grant_frames: 0,
                max_maptrack_frames: 3,
            },
        ])
        .unwrap();
        let g = parse(&b).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].image, b"\x7fELF one");
        assert_eq!(g[0].memory_kib, DEFAULT_GUEST_MEMORY_KIB);
        assert_eq!(
            (g[0].name, g[0].cmdline, g[0].dom0),
            (&b"a"[..], &b"x y"[..], false)
        );
        assert_eq!(
            (g[1].image, g[1].memory_kib, g[1].dom0),
            (&b"\x7fELF two!"[..], 8192, true)
        );
        assert_eq!((g[1].max_grant_frames, g[1].max_maptrack_frames), (0, 3));
    }

    /// Found by the round-trip fuzz test: a NUL in a name was written, and the parser
    /// (rightly) read the name only up to it.
    #[test]
    fn writer_refuses_nul_in_names_and_command_lines() {
        let g = |name, cmdline| Guest {
            image: b"x",
            memory_kib: 0,
            dom0: false,
            name,
            cmdline,
            weight: 0,
            cap: 0,
            max_grant_frames: 0,
            max_maptrack_frames: 0,
        };
        assert!(bundle(&[g("a\0b", "")]).is_err());
        assert!(bundle(&[g("a", "x\0")]).is_err());
        let m = Module {
            name: "\0",
            data: b"",
        };
        assert!(bundle_with_modules(&[], &[m]).is_err());
        assert!(bundle(&[g("a", "x")]).is_ok());
    }

    #[test]
    fn bare_image_is_one_guest() {
        let g = parse(b"\x7fELF....").unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].image, b"\x7fELF....");
    }

    #[test]
    fn hostile_bundles_are_refused() {
        let mut b = bundle(&[Guest {
            image: b"abc",
            memory_kib: 0,
            dom0: false,
            name: "a",
            cmdline: "",
            weight: 0,
            cap: 0,
            max_grant_frames: 0,
            max_maptrack_frames: 0,
        }])
        .unwrap();
        assert_eq!(parse(&b[..20]), Err(BundleError::Truncated));
        // Point the image past the end.
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&b), Err(BundleError::ImageOutOfBounds(0)));
        let mut many = bundle(&[]).unwrap();
        many[8..12].copy_from_slice(&100_000u32.to_le_bytes());
        assert_eq!(parse(&many), Err(BundleError::TooManyEntries(100_000)));
    }

    fn guest(name: &str, dom0: bool) -> Guest<'_> {
        Guest {
            image: b"\x7fELF",
            memory_kib: 0,
            dom0,
            name,
            cmdline: "",
            weight: 0,
            cap: 0,
            max_grant_frames: 0,
            max_maptrack_frames: 0,
        }
    }

    #[test]
    fn modules_round_trip_and_are_not_guests() {
        let disk = [0xa5u8; 5000];
        let b = bundle_with_modules(
            &[guest("control", true), guest("u", false)],
            &[
                Module {
                    name: "disk0",
                    data: &disk,
                },
                Module {
                    name: "empty",
                    data: b"",
                },
            ],
        )
        .unwrap();
        let all = parse_bundle(&b).unwrap();
        assert_eq!(all.guests.len(), 2);
        assert_eq!(
            (all.guests[0].name, all.guests[0].dom0),
            (&b"control"[..], true)
        );
        assert_eq!(
            all.modules,
            [
                ModuleSpec {
                    name: b"disk0",
                    data: &disk
                },
                ModuleSpec {
                    name: b"empty",
                    data: b""
                }
            ]
        );
        // `parse` keeps to the guests.
        assert_eq!(parse(&b).unwrap(), all.guests);
        // A bare image has no modules.
        assert!(parse_bundle(b"\x7fELF").unwrap().modules.is_empty());
        // Names are limited as guests' are.
        let long = "m".repeat(32);
        assert!(
            bundle_with_modules(
                &[],
                &[Module {
                    name: &long,
                    data: b""
                }]
            )
            .is_err()
        );
    }

    #[test]
    fn hostile_module_entries_are_refused() {
        let b = bundle_with_modules(
            &[guest("g", false)],
            &[Module {
                name: "d",
                data: b"xyz",
            }],
        )
        .unwrap();
        let entry1 = core::mem::size_of::<BundleHeader>() + core::mem::size_of::<BundleEntry>();
        let flags = entry1 + core::mem::offset_of!(BundleEntry, flags);
        let len = entry1 + core::mem::offset_of!(BundleEntry, len);
        // Flagged both dom0 and module.
        let mut t = b.clone();
        t[flags..flags + 4].copy_from_slice(&(ENTRY_FLAG_MODULE | ENTRY_FLAG_DOM0).to_le_bytes());
        assert_eq!(parse_bundle(&t), Err(BundleError::BadFlags(1)));
        // Module bytes past the end of the bundle, or a wrapping length.
        for bad in [b.len() as u64, u64::MAX] {
            let mut t = b.clone();
            t[len..len + 8].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(parse_bundle(&t), Err(BundleError::ImageOutOfBounds(1)));
        }
        // Entry table cut inside the module entry.
        let only = bundle_with_modules(
            &[],
            &[Module {
                name: "d",
                data: b"xyz",
            }],
        )
        .unwrap();
        assert_eq!(parse_bundle(&only).unwrap().modules.len(), 1);
        assert_eq!(parse_bundle(&only[..16 + 100]), Err(BundleError::Truncated));
        // Unknown flag bits are ignored, as before.
        let mut t = b.clone();
        t[flags..flags + 4].copy_from_slice(&(ENTRY_FLAG_MODULE | 1 << 7).to_le_bytes());
        assert_eq!(parse_bundle(&t).unwrap().modules.len(), 1);
    }
}
