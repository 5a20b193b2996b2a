//! pv-guest's `demo=blk`: the kit's blkfront against the control domain's blkback, on
//! a disk image this test writes itself (pseudo-random bytes, nothing committed).

mod common;

use common::{checksum, disk_image, random_bytes};
use std::path::PathBuf;
use std::time::Duration;
use xtask::bundle::{DiskFile, GuestFile};
use xtask::qemu::{HvResult, HvRun, Outcome, run_hypervisor};

/// Hang guard for one QEMU run.
const TIMEOUT: Duration = Duration::from_secs(180);
/// Disk size: 1 MiB = 2048 sectors of 512 bytes.
const DISK_BYTES: usize = 1 << 20;

/// Boots pv-guest `demo=blk` with `image` as the control domain's disk `d1`, served to
/// d1 as `vbd.1=d1<mode>`.
fn run_blk_demo(image: PathBuf, mode: &str) -> HvResult {
    let images = xtask::images::prepared();
    let mut guest = GuestFile::new(images.pv_guest());
    guest.cmdline = "demo=blk".into();
    let run = HvRun {
        hypervisor: images.hypervisor(),
        guests: vec![guest],
        deterministic: true,
        timeout: Some(TIMEOUT),
        disks: vec![DiskFile {
            path: image,
            name: "d1".into(),
        }],
        devices: vec![format!("vbd.1=d1{mode}")],
        ..HvRun::default()
    };
    run_hypervisor(&run).unwrap_or_else(|e| panic!("QEMU run failed: {e}"))
}

#[track_caller]
fn assert_run(result: &HvResult, lines: &[String], what: &str) {
    let text = result.transcript.text();
    let missing: Vec<&String> = lines.iter().filter(|l| !text.contains(*l)).collect();
    assert!(
        missing.is_empty() && result.outcome == Outcome::AllPoweredOff,
        "{what}: missing lines {missing:#?}, outcome {:?} ({})\n--- transcript ---\n{text}\
         --- QEMU stderr ---\n{}",
        result.outcome,
        result.outcome.explain(),
        result.stderr
    );
}

/// Lines of every run: connected at the image's size, sector 0..8 read with the
/// checksum of the image's first 4 KiB, closed, powered off, no frame leaked, no grant
/// mapping left.
fn common_lines(bytes: &[u8]) -> Vec<String> {
    let sectors = bytes.len() / 512;
    vec![
        format!("[d1 pv-guest] blk: connected: {sectors} sectors of 512 bytes (sector-size 512)"),
        format!(
            "[d1 pv-guest] blk: read 4096 bytes from sector 0, checksum {:#010x}",
            checksum(&bytes[..4096])
        ),
        "[d1 pv-guest] blk: closed (Ok(())), ring grant ended: true".into(),
        "[d1 pv-guest] blk: done".into(),
        "(hv) d1 pv-guest: shut down: poweroff".into(),
        "(hv) frames: 0 still owned by ended domains".into(),
        // The control domain unmapped the ring before it powered off.
        "(hv) grant maps: 0 still held when their domains ended".into(),
        "(hv) all domains ended: 2 powered off, 0 failed".into(),
    ]
}

/// A writable disk: read, write a pattern over sectors 8..16, read it back equal,
/// restore and flush, a read past the end refused, close, power off.
#[test]
fn blkfront_reads_writes_and_restores_a_disk() {
    let bytes = random_bytes(0x9e37_79b9_7f4a_7c15, DISK_BYTES);
    let image = disk_image("blk-demo-rw.img", &bytes);
    let result = run_blk_demo(image, ",rw");
    let mut lines = common_lines(&bytes);
    lines.extend([
        "[d1 pv-guest] blk: wrote 8 sectors at 8, read back equal, restored".to_string(),
        // EINVAL (22) for sector 2048 of a 2048-sector disk.
        "[d1 pv-guest] blk: read past the end: Err(Errno(22))".to_string(),
        "[d0 control] d1 vbd/51712: disconnected (6 requests, 24 sectors read, 16 written)"
            .to_string(),
    ]);
    assert_run(&result, &lines, "demo=blk on a writable disk");
}

/// A read-only disk: the read works, the write test is skipped.
#[test]
fn blkfront_reads_a_read_only_disk_and_does_not_write() {
    let bytes = random_bytes(0x2545_f491_4f6c_dd1d, DISK_BYTES);
    let image = disk_image("blk-demo-ro.img", &bytes);
    let result = run_blk_demo(image, ",ro");
    let mut lines = common_lines(&bytes);
    lines.push("[d1 pv-guest] blk: read-only or small disk: no write test".into());
    assert_run(&result, &lines, "demo=blk on a read-only disk");
    assert!(
        !result.transcript.text().contains("blk: wrote"),
        "demo=blk wrote to a read-only disk"
    );
}
