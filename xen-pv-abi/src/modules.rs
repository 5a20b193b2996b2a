//! The boot-module table this hypervisor gives the initial domain as its initrd.
//!
//! Xen hands dom0 one initrd through `start_info.mod_start`/`mod_len`. This hypervisor
//! can boot dom0 with several named modules (for instance disk images the control
//! domain serves as virtual disks), so it concatenates them behind a small table: a
//! [`ModulesHeader`], `count` [`ModuleEntry`]s, then the module bytes, each at a
//! page-aligned offset from the start of the table. The whole table is the initrd:
//! `mod_start` is its virtual address, `mod_len` its length.
//!
//! [`parse`] reads a table defensively: a guest must not trust `count`, offsets or
//! lengths, so every one is checked against the bytes it was given.

use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// First 8 bytes of a module table.
pub const MODULES_MAGIC: [u8; 8] = *b"XPVMODS1";
/// Length of [`ModuleEntry::name`] (a name has at most 31 bytes, NUL-padded).
pub const MODULE_NAME_LEN: usize = 32;
/// Alignment of every module's bytes within the table.
pub const MODULE_ALIGN: u64 = 4096;

/// Header of a module table (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ModulesHeader {
    /// [`MODULES_MAGIC`].
    pub magic: [u8; 8],
    /// Number of [`ModuleEntry`]s that follow the header.
    pub count: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// One module of a table (48 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ModuleEntry {
    /// Name, NUL-padded (at most 31 bytes).
    pub name: [u8; MODULE_NAME_LEN],
    /// Offset of the module's bytes from the start of the table (page-aligned).
    pub offset: u64,
    /// Length of the module in bytes.
    pub len: u64,
}

const_assert_eq!(size_of::<ModulesHeader>(), 16);
const_assert_eq!(offset_of!(ModulesHeader, count), 8);
const_assert_eq!(size_of::<ModuleEntry>(), 48);
const_assert_eq!(offset_of!(ModuleEntry, offset), 32);
const_assert_eq!(offset_of!(ModuleEntry, len), 40);

impl ModulesHeader {
    /// A header for `count` modules.
    pub const fn new(count: u32) -> Self {
        ModulesHeader {
            magic: MODULES_MAGIC,
            count,
            reserved: 0,
        }
    }
}

impl ModuleEntry {
    /// The name without its NUL padding.
    pub fn name(&self) -> &[u8] {
        let n = self
            .name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(MODULE_NAME_LEN);
        &self.name[..n]
    }
}

/// Offset of the first module's bytes in a table of `count` modules: header and entries,
/// rounded up to [`MODULE_ALIGN`]. `None` on overflow.
pub fn data_start(count: u64) -> Option<u64> {
    count
        .checked_mul(size_of::<ModuleEntry>() as u64)?
        .checked_add(size_of::<ModulesHeader>() as u64)?
        .checked_next_multiple_of(MODULE_ALIGN)
}

/// Why bytes are not a module table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModulesError {
    /// No [`MODULES_MAGIC`] at the start.
    BadMagic,
    /// Header or entry table runs past the end of the bytes.
    Truncated,
    /// Entry `n`'s bytes lie outside the table (or offset + len overflows).
    OutOfBounds(u32),
}

/// A module table checked to hold its header and entries; iterate it for the modules.
#[derive(Clone, Copy, Debug)]
pub struct Modules<'a> {
    table: &'a [u8],
    count: u32,
}

/// One module: its name and bytes, borrowed from the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module<'a> {
    /// Name, without NUL padding.
    pub name: &'a [u8],
    /// The module's bytes.
    pub data: &'a [u8],
}

/// Reads the module table in `table` (the initrd: `mod_len` bytes at `mod_start`).
///
/// Checks the magic and that all entries lie inside `table`; each entry's bytes are
/// checked as it is read ([`Modules::get`] and the iterator).
pub fn parse(table: &[u8]) -> Result<Modules<'_>, ModulesError> {
    let (header, _) =
        ModulesHeader::read_from_prefix(table).map_err(|_| ModulesError::Truncated)?;
    if header.magic != MODULES_MAGIC {
        return Err(ModulesError::BadMagic);
    }
    // Entries must fit: bounds `count` by the table's length, so iterating is bounded.
    let entries_end = u64::from(header.count)
        .checked_mul(size_of::<ModuleEntry>() as u64)
        .and_then(|n| n.checked_add(size_of::<ModulesHeader>() as u64))
        .ok_or(ModulesError::Truncated)?;
    if entries_end > table.len() as u64 {
        return Err(ModulesError::Truncated);
    }
    Ok(Modules {
        table,
        count: header.count,
    })
}

impl<'a> Modules<'a> {
    /// Number of modules.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// No modules.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Module `i`, its bounds checked against the table.
    pub fn get(&self, i: u32) -> Option<Result<Module<'a>, ModulesError>> {
        if i >= self.count {
            return None;
        }
        let at = size_of::<ModulesHeader>() + i as usize * size_of::<ModuleEntry>();
        let entry = self
            .table
            .get(at..)
            .and_then(|b| ModuleEntry::ref_from_prefix(b).ok())
            .map(|(e, _)| e);
        let Some(entry) = entry else {
            return Some(Err(ModulesError::Truncated));
        };
        let data = usize::try_from(entry.offset)
            .ok()
            .zip(usize::try_from(entry.len).ok())
            .and_then(|(start, len)| Some(start..start.checked_add(len)?))
            .and_then(|r| self.table.get(r));
        Some(match data {
            Some(data) => Ok(Module {
                name: entry.name(),
                data,
            }),
            None => Err(ModulesError::OutOfBounds(i)),
        })
    }

    /// The first module called `name`.
    pub fn find(&self, name: &[u8]) -> Option<Result<Module<'a>, ModulesError>> {
        self.iter()
            .find(|m| m.as_ref().map(|m| m.name == name).unwrap_or(false))
    }

    /// The modules in table order; a bad entry yields its error and iteration goes on.
    pub fn iter(&self) -> impl Iterator<Item = Result<Module<'a>, ModulesError>> + '_ {
        (0..self.count).filter_map(move |i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn table(mods: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::from(ModulesHeader::new(mods.len() as u32).as_bytes());
        let mut off = data_start(mods.len() as u64).unwrap();
        let mut offsets = Vec::new();
        for (name, data) in mods {
            let mut n = [0u8; MODULE_NAME_LEN];
            n[..name.len()].copy_from_slice(name.as_bytes());
            let e = ModuleEntry {
                name: n,
                offset: off,
                len: data.len() as u64,
            };
            out.extend_from_slice(e.as_bytes());
            offsets.push(off);
            off = (off + data.len() as u64).next_multiple_of(MODULE_ALIGN);
        }
        for ((_, data), off) in mods.iter().zip(offsets) {
            out.resize(off as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn round_trip() {
        let t = table(&[("disk0", b"hello"), ("d1", b""), ("big", &[7u8; 5000])]);
        let m = parse(&t).unwrap();
        assert_eq!(m.len(), 3);
        let all: Vec<_> = m.iter().map(Result::unwrap).collect();
        assert_eq!((all[0].name, all[0].data), (&b"disk0"[..], &b"hello"[..]));
        assert_eq!((all[1].name, all[1].data.len()), (&b"d1"[..], 0));
        assert_eq!(all[2].data, &[7u8; 5000][..]);
        assert_eq!(m.find(b"d1").unwrap().unwrap().name, b"d1");
        assert!(m.find(b"nope").is_none());
        assert!(m.get(3).is_none());
        assert_eq!(data_start(0), Some(4096));
        assert_eq!(data_start(86), Some(8192));
        assert_eq!(data_start(u64::MAX), None);
    }

    #[test]
    fn hostile_tables_are_refused() {
        assert_eq!(parse(b"").unwrap_err(), ModulesError::Truncated);
        assert_eq!(parse(&[0u8; 64]).unwrap_err(), ModulesError::BadMagic);
        let good = table(&[("a", b"abc")]);
        // A count far beyond the bytes.
        let mut t = good.clone();
        t[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&t).unwrap_err(), ModulesError::Truncated);
        // Entry table cut short.
        assert_eq!(parse(&good[..40]).unwrap_err(), ModulesError::Truncated);
        // Offset + len overflowing, offset past the end, len past the end.
        let e = size_of::<ModulesHeader>();
        for (off, len) in [(u64::MAX, 2), (1 << 40, 1), (4096, 4097), (0, u64::MAX)] {
            let mut t = good.clone();
            t[e + 32..e + 40].copy_from_slice(&off.to_le_bytes());
            t[e + 40..e + 48].copy_from_slice(&len.to_le_bytes());
            let m = parse(&t).unwrap();
            assert_eq!(m.get(0), Some(Err(ModulesError::OutOfBounds(0))));
            assert_eq!(m.iter().count(), 1);
        }
        // A name without NUL is taken whole (32 bytes).
        let mut t = good.clone();
        t[e..e + 32].fill(b'x');
        assert_eq!(parse(&t).unwrap().get(0).unwrap().unwrap().name.len(), 32);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let len = (next() % 300) as usize;
            let mut t: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if t.len() >= 16 {
                t[..8].copy_from_slice(&MODULES_MAGIC);
                t[8..12].copy_from_slice(&((next() % 8) as u32).to_le_bytes());
            }
            if let Ok(m) = parse(&t) {
                for r in m.iter().flatten() {
                    assert!(r.data.len() <= t.len());
                }
            }
        }
    }

    // ---- proptest fuzzing from the seed corpus (fuzz-seeds/modules) ----------------

    use crate::mutate::{Recipe, recipe, run, seed_set, write_seeds};
    use proptest::prelude::*;

    fn generated_seeds() -> Vec<(&'static str, Vec<u8>)> {
        std::vec![
            (
                "two-modules.bin",
                table(&[("disk0", b"0123456789"), ("cfg", b"a=1\n")])
            ),
            (
                "empty-and-one.bin",
                table(&[("", b""), ("x", &[0x5a; 100])])
            ),
            ("no-modules.bin", table(&[])),
        ]
    }

    fn seeds() -> Vec<Vec<u8>> {
        seed_set("modules", generated_seeds())
    }

    /// `FUZZ_SEEDS_WRITE=1` rewrites `fuzz-seeds/modules/` from [`generated_seeds`].
    #[test]
    fn write_modules_seeds() {
        write_seeds("modules", generated_seeds());
    }

    /// Whatever the table: no panic, the entry count is bounded by the length (so
    /// iterating is O(input)), every module lies inside the table, names stop at NUL.
    fn check(t: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        let Ok(m) = parse(t) else {
            return Ok(());
        };
        prop_assert!(m.len() as usize <= t.len().saturating_sub(16) / 48);
        let mut n = 0u32;
        for r in m.iter() {
            n += 1;
            if let Ok(module) = r {
                prop_assert!(module.name.len() <= MODULE_NAME_LEN && !module.name.contains(&0));
                let (base, at) = (t.as_ptr() as usize, module.data.as_ptr() as usize);
                prop_assert!(
                    module.data.is_empty()
                        || (at >= base && at + module.data.len() <= base + t.len())
                );
                prop_assert!(m.find(module.name).is_some());
            }
        }
        prop_assert_eq!(n, m.len());
        prop_assert!(m.get(m.len()).is_none());
        Ok(())
    }

    #[test]
    fn modules_table_fuzz() {
        let seeds = seeds();
        for s in &seeds {
            let m = parse(s).expect("a seed must parse");
            assert!(m.iter().all(|r| r.is_ok()));
            check(s).unwrap();
        }
        run("modules", 4000, recipe(1024), |r: Recipe| {
            check(&r.bytes(&seeds))
        });
    }

    /// The table writer and [`parse`] agree on any list of modules.
    #[test]
    fn modules_table_roundtrip() {
        let module = (
            proptest::collection::vec(proptest::char::range('a', 'z'), 0..MODULE_NAME_LEN),
            proptest::collection::vec(any::<u8>(), 0..5000),
        );
        run(
            "modules-roundtrip",
            300,
            proptest::collection::vec(module, 0..4),
            |mods: Vec<(Vec<char>, Vec<u8>)>| {
                let names: Vec<std::string::String> =
                    mods.iter().map(|(n, _)| n.iter().collect()).collect();
                let list: Vec<(&str, &[u8])> = names
                    .iter()
                    .zip(&mods)
                    .map(|(n, (_, d))| (n.as_str(), d.as_slice()))
                    .collect();
                let t = table(&list);
                let m = parse(&t).map_err(|e| {
                    proptest::test_runner::TestCaseError::fail(std::format!("{e:?}"))
                })?;
                prop_assert_eq!(m.len() as usize, list.len());
                for (got, (name, data)) in m.iter().zip(&list) {
                    let got = got.unwrap();
                    prop_assert_eq!(got.name, name.as_bytes());
                    prop_assert_eq!(got.data, *data);
                }
                Ok(())
            },
        );
    }
}
