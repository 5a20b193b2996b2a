//! Helpers shared by the QEMU tests of the block and network demos: the FNV-1a
//! checksum the guests print, the xorshift64 byte streams they send or store, and disk
//! images under the target directory.
//!
//! Each test binary that says `mod common;` compiles its own copy and uses a subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xtask::qemu::{HvResult, HvRun, run_hypervisor};

/// The seed of pv-guest `demo=net`'s client stream.
pub const CLIENT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// FNV-1a over `b`: the checksum `net_demo` and `blk_demo` print.
pub fn checksum(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
    })
}

/// `len` bytes of xorshift64 output from `seed`, 8 little-endian bytes per step
/// (deterministic: a failure reproduces).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes the image `name` under the test's target directory.
pub fn disk_image(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .join("blk");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Runs `run` in QEMU (panics if QEMU cannot run) and how long it took.
pub fn run_timed(run: &HvRun) -> (HvResult, Duration) {
    let started = Instant::now();
    let result = run_hypervisor(run).unwrap_or_else(|e| panic!("QEMU run failed: {e}"));
    (result, started.elapsed())
}

#[test]
fn checksum_is_fnv1a() {
    // FNV-1a reference values.
    assert_eq!(checksum(b""), 0x811c_9dc5);
    assert_eq!(checksum(b"a"), 0xe40c_292c);
    assert_eq!(checksum(b"foobar"), 0xbf9c_f968);
}
