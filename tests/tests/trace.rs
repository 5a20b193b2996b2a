//! `cargo xtask run --trace`: a hypervisor built with `DEFMT_LOG=trace` writes defmt
//! frames to COM2, and the host decodes them against that ELF into readable lines.

use std::time::Duration;
use xtask::images::{Profile, build_images};
use xtask::qemu::{Outcome, SingleGuest, ensure_qemu, run_hypervisor};
use xtask::trace::{build_traced_hypervisor, decode_file, raw_capture_path};

#[test]
fn pv_guest_run_traces_hypercalls_and_the_domain_life_cycle() {
    ensure_qemu().expect("QEMU");
    let images = build_images(Profile::Release).expect("images");
    let elf = build_traced_hypervisor().expect("traced hypervisor");
    let dir = xtask::target_dir().join("trace-test");
    std::fs::create_dir_all(&dir).expect("trace dir");
    let out = dir.join("pv-guest.txt");
    let raw = raw_capture_path(&out);
    let _ = std::fs::remove_file(&raw);

    let mut run = SingleGuest::default().to_run(&images);
    run.hypervisor = elf.clone();
    run.defmt_capture = Some(raw.clone());
    run.timeout = Some(Duration::from_secs(120));
    let result = run_hypervisor(&run).expect("QEMU run");
    assert_eq!(
        result.outcome,
        Outcome::AllPoweredOff,
        "{}",
        result.transcript.text()
    );
    // The console itself is unchanged by tracing.
    assert!(
        result
            .transcript
            .contains("[d1 pv-guest] pv-guest: powering off")
    );

    let lines = decode_file(&elf, &raw, &out).expect("decode");
    let text = lines.join("\n");
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("DEBUG domain d1 built: 8192 pages"), "{text}");
    // console_io(CONSOLEIO_write, ...) = hypercall 18 with cmd 0, returns 0.
    assert!(has("TRACE hypercall d1 nr=18 args=[0x0, "), "{text}");
    assert!(has("DEBUG switch to d1 rip=0x"), "{text}");
    assert!(has("DEBUG domain d1 ended: shut down: poweroff"), "{text}");
    assert!(!has("malformed"), "{text}");
    // Every decoded line starts with the TSC timestamp.
    for l in &lines {
        let tsc = l.split(' ').next().unwrap_or("");
        assert!(tsc.parse::<u64>().is_ok(), "no timestamp in {l:?}");
    }
}
