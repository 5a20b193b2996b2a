//! Debian's GRUB for Xen (`grub-xen-bin`, `grub-xen-host`), unmodified, as a PV guest of
//! our hypervisor: a `grub-mkimage` hello image, the rescue image, and Debian's prebuilt
//! `grub-x86_64-xen.bin` driven at its `grub>` prompt through the serial console.
//!
//! The packages are installed with apt-get when missing and running as root (as
//! `.ci/run` does); otherwise the tests fail with the install command: they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use xtask::bundle::{DiskFile, GuestFile};
use xtask::images::Images;
use xtask::qemu::{HvResult, HvRun, Outcome, run_hypervisor};
use xtask::session::{End, Step, run_hypervisor_session};

/// Hang guard for one QEMU run (GRUB's Debian image takes a few seconds under TCG).
const TIMEOUT: Duration = Duration::from_secs(240);
/// Debian's prebuilt PV image (package grub-xen-bin).
const DEBIAN_IMAGE: &str = "/usr/lib/grub-xen/grub-x86_64-xen.bin";
const PACKAGES: &[&str] = &["grub-xen-bin", "grub-xen-host"];
const HELLO_LINE: &str = "GRUB-PV-TEST: hello from GRUB x86_64-xen";

fn images() -> &'static Images {
    xtask::images::prepared()
}

/// Makes sure `grub-mkimage` and Debian's x86_64-xen GRUB files are there.
fn ensure_grub_xen() {
    static READY: Mutex<bool> = Mutex::new(false);
    let mut ready = READY.lock().unwrap_or_else(|p| p.into_inner());
    if *ready {
        return;
    }
    let present = || {
        Path::new(DEBIAN_IMAGE).exists()
            && Path::new("/usr/lib/grub/x86_64-xen/kernel.img").exists()
    };
    if !present() {
        let hint = format!("apt-get install -y {}", PACKAGES.join(" "));
        // Installing needs root (`id -u` prints 0).
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        assert!(
            root,
            "GRUB for Xen is not installed; install it with: sudo {hint}"
        );
        let status = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap_or_else(|e| panic!("could not run apt-get: {e}; install with: {hint}"));
        assert!(
            status.success() && present(),
            "installing GRUB for Xen failed; try: {hint}"
        );
    }
    *ready = true;
}

/// `target/grub/`, next to the other build products.
fn grub_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .join("grub");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Runs `grub-mkimage -O x86_64-xen` with `args` into `target/grub/<name>.elf`.
fn mkimage(name: &str, args: &[&str]) -> PathBuf {
    ensure_grub_xen();
    let out = grub_dir().join(format!("{name}.elf"));
    let status = Command::new("grub-mkimage")
        .args(["-O", "x86_64-xen", "-o"])
        .arg(&out)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("could not run grub-mkimage: {e}"));
    assert!(status.success(), "grub-mkimage {args:?} failed");
    out
}

fn run_of(path: PathBuf, memory_mib: u32) -> HvRun {
    let mut guest = GuestFile::new(path);
    guest.memory_mib = memory_mib;
    HvRun {
        hypervisor: images().hypervisor(),
        guests: vec![guest],
        deterministic: true,
        timeout: Some(TIMEOUT),
        ..HvRun::default()
    }
}

#[track_caller]
fn assert_outcome(result: &HvResult, ok: bool, outcome: Option<Outcome>, what: &str) {
    assert!(
        ok && outcome.is_none_or(|o| o == result.outcome),
        "{what}: expected {outcome:?}, got {:?} ({})\n--- transcript ---\n{}--- QEMU stderr ---\n{}",
        result.outcome,
        result.outcome.explain(),
        result.transcript.text(),
        result.stderr
    );
}

/// A guest line's text: without the `[d<id> <name>] ` prefix and ANSI escape sequences.
fn guest_text(line: &str) -> String {
    let body = match line.strip_prefix("[d").and_then(|l| l.split_once("] ")) {
        Some((_, body)) => body,
        None => line,
    };
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (0x40..=0x7e).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out.trim().to_string()
}

#[test]
fn grub_mkimage_hello_prints_and_powers_off() {
    let cfg = grub_dir().join("hello.cfg");
    std::fs::write(&cfg, format!("echo \"{HELLO_LINE}\"\nhalt\n")).unwrap();
    let image = mkimage(
        "grub-hello-x86_64-xen",
        &["-c", cfg.to_str().unwrap(), "-p", "/", "echo", "halt"],
    );
    let result = run_hypervisor(&run_of(image, 64)).unwrap_or_else(|e| panic!("{e}"));
    let printed = result
        .transcript
        .lines
        .iter()
        .any(|l| l.starts_with("[d1 grub-hello-x86_64-xen] ") && guest_text(l) == HELLO_LINE);
    let powered_off = result
        .transcript
        .contains("(hv) d1 grub-hello-x86_64-xen: shut down: poweroff");
    assert_outcome(
        &result,
        printed && powered_off,
        Some(Outcome::AllPoweredOff),
        "hello image",
    );
}

/// With 384 MiB GRUB's new tables (an L1 entry for each of its 98,304 pages: 192 L1
/// tables and more) are larger than the hypervisor's work budget per entry (65,536
/// entries): its `PIN_L4_TABLE` is preempted half-way and the batch re-executed through
/// its continuation, which continues the validation where it stopped (a `--trace` run
/// shows `nr=26 args=[.., 0x3, ..] -> continued`, then `0x80000003` returning 0).
#[test]
fn grub_switches_to_page_tables_larger_than_the_work_budget() {
    let cfg = grub_dir().join("hello-big.cfg");
    std::fs::write(&cfg, format!("echo \"{HELLO_LINE}\"\nhalt\n")).unwrap();
    let image = mkimage(
        "grub-hello-big-x86_64-xen",
        &["-c", cfg.to_str().unwrap(), "-p", "/", "echo", "halt"],
    );
    let result = run_hypervisor(&run_of(image, 384)).unwrap_or_else(|e| panic!("{e}"));
    let printed =
        result.transcript.lines.iter().any(|l| {
            l.starts_with("[d1 grub-hello-big-x86_64-xen] ") && guest_text(l) == HELLO_LINE
        });
    let powered_off = result
        .transcript
        .contains("(hv) d1 grub-hello-big-x86_64-xen: shut down: poweroff");
    assert_outcome(
        &result,
        printed && powered_off,
        Some(Outcome::AllPoweredOff),
        "hello image in 384 MiB",
    );
}

#[test]
fn grub_rescue_image_reaches_its_prompt() {
    let image = mkimage("grub-rescue-x86_64-xen", &["-p", "(memdisk)/boot/grub"]);
    let result = run_hypervisor_session(
        &run_of(image, 64),
        &[Step::new("grub rescue>", b"")],
        End::AfterLastStep,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_outcome(
        &result,
        result.transcript.contains("[d1 grub-rescue-x86_64-xen] ")
            && result.transcript.contains("grub rescue>"),
        None,
        "rescue image",
    );
}

/// Two GRUBs at their rescue prompts: typed keys go to d1 until Ctrl-a is typed three
/// times, then to d2 (the control domain's focus switch, announced on the console).
#[test]
fn ctrl_a_three_times_moves_typed_input_to_the_next_domain() {
    let image = mkimage("grub-rescue-x86_64-xen", &["-p", "(memdisk)/boot/grub"]);
    let mut run = run_of(image.clone(), 64);
    let mut second = GuestFile::new(image);
    second.memory_mib = 64;
    run.guests[0].name = "rescue-a".into();
    second.name = "rescue-b".into();
    run.guests.push(second);
    let result = run_hypervisor_session(
        &run,
        &[
            Step::new("[d1 rescue-a] grub rescue>", b"AB"),
            Step::new("AB", b"\x01\x01\x01"),
            Step::new(
                "[d0 control] *** console input to d2 rescue-b (type Ctrl-a three times to switch)",
                b"ZQXJ",
            ),
            Step::new("ZQXJ", b""),
        ],
        End::AfterLastStep,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t = &result.transcript;
    let typed_to = |text: &str| {
        t.lines
            .iter()
            .filter(|l| l.contains(text))
            .map(|l| l.split("] ").next().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_outcome(
        &result,
        typed_to("AB") == ["[d1 rescue-a"] && typed_to("ZQXJ") == ["[d2 rescue-b"],
        None,
        "focus switch",
    );
}

#[test]
fn debian_grub_runs_typed_commands_and_halts() {
    ensure_grub_xen();
    let result = run_hypervisor_session(
        &run_of(DEBIAN_IMAGE.into(), 128),
        &[
            Step::new("grub>", b"echo PV-INPUT-OK\r"),
            Step::new("grub>", b"halt\r"),
        ],
        End::Exit,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t = &result.transcript;
    let welcome = t.contains("Welcome to GRUB!");
    // The command's output, not the echo of what was typed.
    let executed = t.lines.iter().any(|l| guest_text(l) == "PV-INPUT-OK");
    let halted = t.contains("(hv) d1 grub-x86_64-xen: shut down: poweroff");
    assert_outcome(
        &result,
        welcome && executed && halted,
        Some(Outcome::AllPoweredOff),
        "Debian's grub-x86_64-xen.bin",
    );
}

/// Makes `target/grub/<name>.ext2`: an ext2 file system holding `files` (path, contents),
/// made with e2fsprogs' `mkfs.ext2 -d` (installed with apt-get when missing and root).
fn ext2_image(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let tool = Path::new("/usr/sbin/mkfs.ext2");
    let hint = "apt-get install -y e2fsprogs";
    if !tool.exists() {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        assert!(
            root,
            "mkfs.ext2 is not installed; install it with: sudo {hint}"
        );
        let status = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "e2fsprogs"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap_or_else(|e| panic!("could not run apt-get: {e}; install with: {hint}"));
        assert!(
            status.success() && tool.exists(),
            "installing e2fsprogs failed; try: {hint}"
        );
    }
    let root = grub_dir().join(format!("{name}-root"));
    let _ = std::fs::remove_dir_all(&root);
    for (path, contents) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, contents).unwrap();
    }
    let image = grub_dir().join(format!("{name}.ext2"));
    let _ = std::fs::remove_file(&image);
    let status = Command::new(tool)
        .args(["-q", "-F", "-b", "1024", "-d"])
        .stdout(std::process::Stdio::null())
        .arg(&root)
        .arg(&image)
        .arg("4M")
        .status()
        .unwrap_or_else(|e| panic!("could not run mkfs.ext2: {e}; install with: {hint}"));
    assert!(status.success(), "mkfs.ext2 -d {} failed", root.display());
    image
}

/// Debian's prebuilt GRUB, unmodified, finds `/boot/grub/grub.cfg` on a vbd the control
/// domain serves from a boot module (its memdisk config searches every disk for it),
/// reads it through our block backend and runs it; the config writes GRUB's
/// environment block and reads it back (the disk is writable, copy-on-write).
#[test]
fn debian_grub_reads_its_config_from_our_disk() {
    ensure_grub_xen();
    // save_env writes the environment block in place (GRUB's disk write), load_env
    // reads it back: through the copy-on-write overlay of the control domain's disk.
    let cfg = concat!(
        "echo \"GRUB-PV-TEST: from-our-disk\"\n",
        "set marker=written-to-our-disk\n",
        "save_env -f /boot/grub/grubenv marker\n",
        "unset marker\n",
        "load_env -f /boot/grub/grubenv\n",
        "echo \"GRUB-PV-TEST: env $marker\"\n",
        "halt\n",
    );
    // An empty GRUB environment block: its header, padded with '#' to 1 KiB.
    let mut env = b"# GRUB Environment Block\n".to_vec();
    env.resize(1024, b'#');
    let image = ext2_image(
        "from-our-disk",
        &[
            ("boot/grub/grub.cfg", cfg.as_bytes()),
            ("boot/grub/grubenv", &env),
        ],
    );
    let mut run = run_of(DEBIAN_IMAGE.into(), 128);
    run.disks = vec![DiskFile {
        path: image,
        name: "bootdisk".into(),
    }];
    run.devices = vec!["vbd.1=bootdisk,xvda".into()];
    let result = run_hypervisor(&run).unwrap_or_else(|e| panic!("{e}"));
    let t = &result.transcript;
    // After GRUB's progress indicator for the file, on the same line.
    let printed = |marker: &str| {
        t.lines
            .iter()
            .any(|l| l.starts_with("[d1 ") && guest_text(l).ends_with(marker))
    };
    let halted = t.contains("(hv) d1 grub-x86_64-xen: shut down: poweroff");
    assert_outcome(
        &result,
        printed("GRUB-PV-TEST: from-our-disk")
            && printed("GRUB-PV-TEST: env written-to-our-disk")
            && halted,
        Some(Outcome::AllPoweredOff),
        "Debian's GRUB reading grub.cfg from a vbd",
    );
}

/// GRUB loads a PV kernel (pv-guest) from our disk (read-only) and boots it: on the hand-off it
/// closes its vbd (state 6, then 1), the backend goes back to InitWait, and the kernel
/// runs.
#[test]
fn debian_grub_boots_a_kernel_from_our_disk() {
    ensure_grub_xen();
    let kernel = std::fs::read(images().pv_guest()).unwrap();
    let image = ext2_image(
        "kernel-on-our-disk",
        &[
            (
                "boot/grub/grub.cfg",
                b"echo \"GRUB-PV-TEST: loading\"\nlinux /boot/pv-guest\nboot\n",
            ),
            ("boot/pv-guest", &kernel),
        ],
    );
    let mut run = run_of(DEBIAN_IMAGE.into(), 128);
    run.disks = vec![DiskFile {
        path: image,
        name: "bootdisk".into(),
    }];
    run.devices = vec!["vbd.1=bootdisk,xvda,ro".into()];
    let result = run_hypervisor(&run).unwrap_or_else(|e| panic!("{e}"));
    let t = &result.transcript;
    let loaded = t
        .lines
        .iter()
        .any(|l| l.starts_with("[d1 ") && guest_text(l).ends_with("GRUB-PV-TEST: loading"));
    let booted = t.contains("[d1 grub-x86_64-xen] pv-guest: hello via console ring");
    // Served, closed at the hand-off, and waiting for the next frontend.
    let handed_off = [
        "[d0 control] d1 vbd/51712: connected",
        "[d0 control] d1 vbd/51712: disconnected",
        "[d0 control] d1 vbd/51712: frontend reinitialising, backend in InitWait",
    ]
    .iter()
    .all(|l| t.lines.iter().any(|x| x.starts_with(l)));
    assert_outcome(
        &result,
        loaded && booted && handed_off,
        Some(Outcome::AllPoweredOff),
        "Debian's GRUB booting pv-guest from a vbd",
    );
}

#[test]
fn guest_text_strips_prefix_and_escapes() {
    assert_eq!(
        guest_text("[d1 grub] \u{1b}[0m\u{1b}[37;40mPV-INPUT-OK "),
        "PV-INPUT-OK"
    );
    assert_eq!(guest_text("plain"), "plain");
}
