//! Running QEMU: finding (or installing) it, booting the hypervisor with a bundle of
//! guests, capturing the serial console, and reading the exit status.

use crate::bundle::{DiskFile, GuestFile, disks_memory_mib, machine_memory_mib, write_bundle};
use crate::{Result, describe, err, find_on_path, run_checked, running_as_root};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

/// The QEMU binary we drive.
pub const QEMU: &str = "qemu-system-x86_64";
/// The command that installs QEMU on Debian/Ubuntu.
pub const INSTALL_HINT: &str = "sudo apt-get install -y qemu-system-x86";

/// QEMU options that make a run deterministic: the TSC counts retired instructions
/// (icount shift=0, one tick each), idle time warps instead of sleeping, the RTC follows
/// virtual time from a fixed date, one vCPU, and no hardware randomness.
pub const DETERMINISTIC_ARGS: &[&str] = &[
    "-icount",
    "shift=0,align=off,sleep=off",
    "-rtc",
    "base=2024-01-01T00:00:00,clock=vm",
    "-smp",
    "1",
];

/// Finds `qemu-system-x86_64`; when missing and running as root, installs it with apt.
/// Otherwise the error names the command that installs it.
pub fn ensure_qemu() -> Result<PathBuf> {
    // Tests call this in parallel: only one of them may run apt-get.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = find_on_path(QEMU) {
        return Ok(path);
    }
    if !running_as_root() {
        return Err(err!(
            "{QEMU} is not installed; install it with: {INSTALL_HINT}"
        ));
    }
    eprintln!("{QEMU} not found; installing it with apt-get (running as root)");
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run_checked(&mut cmd)
    };
    apt(&["update"])
        .and_then(|()| apt(&["install", "-y", "qemu-system-x86"]))
        .map_err(|e| err!("installing QEMU failed ({e}); install it with: {INSTALL_HINT}"))?;
    find_on_path(QEMU).ok_or_else(|| {
        err!("{QEMU} still not on PATH after installing qemu-system-x86; try: {INSTALL_HINT}")
    })
}

/// How a run of our hypervisor ended, from QEMU's exit status (isa-debug-exit writes
/// `code`, QEMU exits with `code << 1 | 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 33: every domain powered off.
    AllPoweredOff,
    /// 37: at least one domain crashed, was refused or shut down otherwise.
    DomainFailed,
    /// 35: the hypervisor itself failed (panic or exception in the hypervisor).
    HypervisorFailure,
    /// 0: a triple fault or reset (QEMU `-no-reboot`); never a success.
    Reset,
    /// Anything else: QEMU itself failed (bad option, missing file) or was killed.
    QemuError(Option<i32>),
}

impl Outcome {
    /// Maps QEMU's exit status (`None` = killed by a signal).
    pub fn from_status(code: Option<i32>) -> Self {
        match code {
            Some(33) => Outcome::AllPoweredOff,
            Some(37) => Outcome::DomainFailed,
            Some(35) => Outcome::HypervisorFailure,
            Some(0) => Outcome::Reset,
            other => Outcome::QemuError(other),
        }
    }

    /// One line for a human.
    pub fn explain(self) -> String {
        match self {
            Outcome::AllPoweredOff => "every domain powered off (QEMU status 33)".into(),
            Outcome::DomainFailed => {
                "a domain crashed, was refused or did not power off (QEMU status 37)".into()
            }
            Outcome::HypervisorFailure => "the hypervisor failed (QEMU status 35)".into(),
            Outcome::Reset => {
                "the machine reset (triple fault?) without reporting an outcome (QEMU status 0)"
                    .into()
            }
            Outcome::QemuError(Some(code)) => format!("QEMU itself failed (status {code})"),
            Outcome::QemuError(None) => "QEMU was killed by a signal".into(),
        }
    }
}

/// A run of our hypervisor.
#[derive(Clone, Debug, Default)]
pub struct HvRun {
    /// The hypervisor ELF.
    pub hypervisor: PathBuf,
    /// Guests, in bundle order (ids 1, 2, ... unless flagged dom0).
    pub guests: Vec<GuestFile>,
    /// Hypervisor command line (`-append`).
    pub cmdline: String,
    /// Use [`DETERMINISTIC_ARGS`].
    pub deterministic: bool,
    /// Kill QEMU and fail after this long (captured runs only). A hang guard, not a
    /// measurement.
    pub timeout: Option<Duration>,
    /// Also print each console line as it arrives (captured runs only).
    pub echo: bool,
    /// Add COM2 and write its bytes (the hypervisor's defmt frames) to this file.
    pub defmt_capture: Option<PathBuf>,
    /// More QEMU options, appended last (`cargo xtask profile` adds its `-d exec` log).
    pub extra_args: Vec<String>,
    /// Boot without the control domain (`--no-control-domain`): the guests then have no
    /// xenstore or console backend.
    pub no_control_domain: bool,
    /// The control domain's kernel; `None`: `control-domain` next to the hypervisor ELF
    /// (where `cargo xtask build` puts it).
    pub control_domain: Option<PathBuf>,
    /// Disk images for the control domain, passed as named boot modules (its initrd);
    /// its memory grows by their size. Ignored without a control domain.
    pub disks: Vec<DiskFile>,
    /// The control domain's command line (`console=raw` passes the console of the
    /// domain with input focus through untouched).
    pub control_cmdline: String,
    /// Device words for the control domain, the toolstack (`vbd.<fe>=<disk>[,<vdev>][,ro]`,
    /// `vif.<fe>=<mac>[,vlan=<n>|,trunk=<n>;<n>…]`, `dev.<kind>.<fe>=<be>`; grammar in
    /// control-domain's `devices` module), appended to its command line. Words with
    /// whitespace are left out.
    pub devices: Vec<String>,
}

/// Name of the control domain in every bundle.
pub const CONTROL_DOMAIN_NAME: &str = "control";
/// Memory of the control domain, MiB.
pub const CONTROL_DOMAIN_MEMORY_MIB: u32 = 48;

impl HvRun {
    /// The guests of the bundle, in order: the control domain (dom0 `control`, booted
    /// first) unless [`HvRun::no_control_domain`] is set or one of the guests is dom0
    /// already, then [`HvRun::guests`]. The control domain's memory covers
    /// [`HvRun::disks`] too.
    pub fn bundle_guests(&self) -> Vec<GuestFile> {
        let mut all = Vec::with_capacity(self.guests.len() + 1);
        if !self.no_control_domain && !self.guests.iter().any(|g| g.dom0) {
            let path = self
                .control_domain
                .clone()
                .unwrap_or_else(|| self.hypervisor.with_file_name("control-domain"));
            all.push(GuestFile {
                path,
                name: CONTROL_DOMAIN_NAME.to_string(),
                memory_mib: CONTROL_DOMAIN_MEMORY_MIB.saturating_add(disks_memory_mib(&self.disks)),
                cmdline: control_cmdline(&self.control_cmdline, &self.guests, &self.devices),
                dom0: true,
                weight: 0,
                cap: 0,
                max_grant_frames: 0,
                max_maptrack_frames: 0,
            });
        }
        all.extend(self.guests.iter().cloned());
        all
    }

    /// The disks of the bundle: [`HvRun::disks`] when the control domain is in it,
    /// else none. A guest of the user's flagged dom0 gets them too (its memory is not
    /// grown: size it yourself).
    pub fn bundle_disks(&self) -> &[DiskFile] {
        if self.no_control_domain && !self.guests.iter().any(|g| g.dom0) {
            &[]
        } else {
            &self.disks
        }
    }

    /// Writes this run's bundle (guests and disks); returns its path.
    pub fn write_bundle(&self) -> Result<PathBuf> {
        write_bundle(&self.bundle_guests(), self.bundle_disks())
    }
}

/// The control domain's command line: `cmdline`, then a `name.<id>=<name>` word per
/// guest (ids 1, 2, ... in bundle order): no hypercall tells a control domain the names,
/// which its console prefixes and xenstore show. A name with whitespace is left out (the
/// control domain then calls that domain `domain<id>`). Then the device words (those
/// without whitespace; the control domain checks the rest and reports what it refuses).
fn control_cmdline(cmdline: &str, guests: &[GuestFile], devices: &[String]) -> String {
    let mut words: Vec<String> = Vec::new();
    if !cmdline.is_empty() {
        words.push(cmdline.to_string());
    }
    for (i, g) in guests.iter().enumerate() {
        if !g.name.is_empty() && !g.name.contains(char::is_whitespace) {
            words.push(format!("name.{}={}", i + 1, g.name));
        }
    }
    words.extend(
        devices
            .iter()
            .filter(|d| !d.is_empty() && !d.contains(char::is_whitespace))
            .cloned(),
    );
    words.join(" ")
}

/// `cargo xtask run [--guest PATH] [--memory MIB] ...`: one guest (pv-guest unless a
/// path is given) on the hypervisor. The tests use it too, so the `--guest` path is
/// tested as users run it.
#[derive(Clone, Debug, Default)]
pub struct SingleGuest {
    /// Kernel ELF; `None` = pv-guest.
    pub path: Option<PathBuf>,
    /// Memory in MiB; `None` = the default.
    pub memory_mib: Option<u32>,
    /// Guest command line.
    pub cmdline: String,
    /// Name; `None` = file stem cut to 31 bytes.
    pub name: Option<String>,
    /// Build as dom0.
    pub dom0: bool,
    /// Scheduler weight (0 = the default, 256).
    pub weight: u16,
    /// Scheduler cap in percent of one CPU (0 = none).
    pub cap: u16,
    /// Most grant frames (0 = Xen's default, 64).
    pub max_grant_frames: u16,
    /// Most maptrack frames of 256 mappings (0 = Xen's default, 1024).
    pub max_maptrack_frames: u16,
}

impl SingleGuest {
    /// The run that boots this guest with the built images.
    pub fn to_run(&self, images: &crate::images::Images) -> HvRun {
        let path = self.path.clone().unwrap_or_else(|| images.pv_guest());
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| crate::bundle::default_name(&path));
        HvRun {
            hypervisor: images.hypervisor(),
            control_domain: Some(images.control_domain()),
            guests: vec![GuestFile {
                path,
                name,
                memory_mib: self.memory_mib.unwrap_or(crate::bundle::DEFAULT_MEMORY_MIB),
                cmdline: self.cmdline.clone(),
                dom0: self.dom0,
                weight: self.weight,
                cap: self.cap,
                max_grant_frames: self.max_grant_frames,
                max_maptrack_frames: self.max_maptrack_frames,
            }],
            ..HvRun::default()
        }
    }
}

/// The console lines of a run, without `\r`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    /// Lines in order.
    pub lines: Vec<String>,
}

impl Transcript {
    /// Whether some line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.contains(needle))
    }

    /// The first line that starts with `prefix`.
    pub fn line_starting_with(&self, prefix: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .map(String::as_str)
    }

    /// The whole transcript as text.
    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        self.lines[start..].join("\n")
    }
}

/// What a captured QEMU run produced.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Serial console (QEMU's stdout).
    pub transcript: Transcript,
    /// QEMU's stderr.
    pub stderr: String,
    /// QEMU's exit status (`None` if killed).
    pub status: Option<i32>,
    /// QEMU was stopped because the stop condition matched a line.
    pub stopped: bool,
}

/// Result of a captured run of our hypervisor.
#[derive(Clone, Debug)]
pub struct HvResult {
    /// Serial console.
    pub transcript: Transcript,
    /// How it ended.
    pub outcome: Outcome,
    /// QEMU's stderr (warnings, errors).
    pub stderr: String,
}

/// The QEMU command line that boots `run.hypervisor` with `bundle` as its module.
pub fn hypervisor_command(qemu: &Path, run: &HvRun, bundle: &Path) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", "q35", "-m"])
        .arg(format!("{}M", machine_memory_mib(&run.bundle_guests())))
        .args(["-cpu"])
        .arg(if run.deterministic {
            "max,-rdrand,-rdseed"
        } else {
            "max"
        })
        .args(["-display", "none", "-no-reboot", "-serial", "stdio"])
        .args(["-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(&run.hypervisor)
        .arg("-initrd")
        .arg(bundle);
    if !run.cmdline.is_empty() {
        cmd.arg("-append").arg(&run.cmdline);
    }
    if run.deterministic {
        cmd.args(DETERMINISTIC_ARGS);
    }
    if let Some(path) = &run.defmt_capture {
        // COM2 after COM1 (`-serial stdio` above): binary frames never mix with text.
        let mut spec = std::ffi::OsString::from("file:");
        spec.push(path);
        cmd.arg("-serial").arg(spec);
    }
    cmd.args(&run.extra_args);
    cmd
}

/// Boots the hypervisor with the guests, console captured. A timeout is an error that
/// carries the end of the transcript.
pub fn run_hypervisor(run: &HvRun) -> Result<HvResult> {
    run_hypervisor_observed(run, |_, _| {})
}

/// [`run_hypervisor`], calling `observe(qemu_pid, line)` as each console line arrives
/// (the benchmark samples QEMU's CPU time at marker lines).
pub fn run_hypervisor_observed(
    run: &HvRun,
    mut observe: impl FnMut(u32, &str),
) -> Result<HvResult> {
    let qemu = ensure_qemu()?;
    let bundle = run.write_bundle()?;
    let cmd = hypervisor_command(&qemu, run, &bundle);
    let captured = run_captured_observed(cmd, run.timeout, run.echo, |pid, line| {
        observe(pid, line);
        false
    })?;
    Ok(HvResult {
        transcript: captured.transcript,
        outcome: Outcome::from_status(captured.status),
        stderr: captured.stderr,
    })
}

/// The control domain's command line of an interactive run: `console=raw` is added
/// (the control domain passes the guest's ring output to the terminal untouched, as
/// with `xl console`, so GRUB's screen lines up) when exactly one guest boots, the
/// console is a terminal, and per-line prefixes were not asked for.
pub fn interactive_cmdline(cmdline: &str, guests: usize, terminal: bool, prefix: bool) -> String {
    if guests != 1 || !terminal || prefix {
        return cmdline.to_string();
    }
    if cmdline.is_empty() {
        "console=raw".to_string()
    } else {
        format!("{cmdline} console=raw")
    }
}

/// Boots the hypervisor with the guests, console on this terminal.
pub fn run_hypervisor_interactive(run: &HvRun) -> Result<Outcome> {
    let qemu = ensure_qemu()?;
    let bundle = run.write_bundle()?;
    let mut cmd = hypervisor_command(&qemu, run, &bundle);
    let status = cmd
        .status()
        .map_err(|e| err!("could not start {}: {e}", describe(&cmd)))?;
    Ok(Outcome::from_status(status.code()))
}

/// Runs a QEMU command with stdout captured line by line and stdin closed. Stops QEMU
/// when `stop(line)` holds for a line (then `stopped` is set), or fails once `timeout`
/// has passed.
pub fn run_captured(
    cmd: Command,
    timeout: Option<Duration>,
    echo: bool,
    mut stop: impl FnMut(&str) -> bool,
) -> Result<Captured> {
    run_captured_observed(cmd, timeout, echo, |_, line| stop(line))
}

/// [`run_captured`] whose stop condition also gets QEMU's process id.
pub fn run_captured_observed(
    mut cmd: Command,
    timeout: Option<Duration>,
    echo: bool,
    mut stop: impl FnMut(u32, &str) -> bool,
) -> Result<Captured> {
    let what = describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err!("could not start {what}: {e}"))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");

    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdout.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = timeout.map(|t| Instant::now() + t);
    let mut lines = Vec::new();
    let mut stopped = false;
    let mut timed_out = false;
    loop {
        let next = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                rx.recv_timeout(left)
            }
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(line) => {
                if echo {
                    println!("{line}");
                }
                let hit = stop(pid, &line);
                lines.push(line);
                if hit {
                    stopped = true;
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if stopped || timed_out {
        // Killing an already exited child fails harmlessly.
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| err!("waiting for {what}: {e}"))?;
    let _ = reader.join();
    // Lines that arrived between the stop and QEMU's death belong to the transcript.
    lines.extend(rx.try_iter());
    let stderr = stderr_reader.join().unwrap_or_default();
    let transcript = Transcript { lines };
    if timed_out {
        return Err(err!(
            "QEMU timed out after {:?} and was killed; last console lines:\n{}\nQEMU stderr: {}\ncommand: {what}",
            timeout.unwrap_or_default(),
            transcript.tail(40),
            stderr.trim()
        ));
    }
    Ok(Captured {
        transcript,
        stderr,
        status: if stopped { None } else { status.code() },
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_to_outcomes() {
        assert_eq!(Outcome::from_status(Some(33)), Outcome::AllPoweredOff);
        assert_eq!(Outcome::from_status(Some(37)), Outcome::DomainFailed);
        assert_eq!(Outcome::from_status(Some(35)), Outcome::HypervisorFailure);
        assert_eq!(Outcome::from_status(Some(0)), Outcome::Reset);
        assert_eq!(Outcome::from_status(Some(1)), Outcome::QemuError(Some(1)));
        assert_eq!(Outcome::from_status(None), Outcome::QemuError(None));
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn deterministic_runs_pin_icount_rtc_cpu_and_smp() {
        let mut run = HvRun {
            hypervisor: "hv".into(),
            guests: vec![GuestFile::new("g")],
            deterministic: true,
            ..HvRun::default()
        };
        let a = args(&hypervisor_command(Path::new("q"), &run, Path::new("b")));
        let joined = a.join(" ");
        assert!(joined.contains("-icount shift=0,align=off,sleep=off"));
        assert!(joined.contains("-rtc base=2024-01-01T00:00:00,clock=vm"));
        assert!(joined.contains("-cpu max,-rdrand,-rdseed"));
        assert!(joined.contains("-smp 1"));
        assert!(joined.contains("-kernel hv -initrd b"));
        assert!(joined.contains("-m 256M"));
        assert!(!a.contains(&"-append".to_string()));

        run.deterministic = false;
        run.cmdline = "loglvl=all".into();
        let a = args(&hypervisor_command(Path::new("q"), &run, Path::new("b")));
        let joined = a.join(" ");
        assert!(!joined.contains("-icount"));
        assert!(joined.contains("-cpu max -display none"));
        assert!(joined.ends_with("-append loglvl=all"));

        run.extra_args = vec!["-d".into(), "exec".into()];
        let a = args(&hypervisor_command(Path::new("q"), &run, Path::new("b")));
        assert!(a.join(" ").ends_with("-append loglvl=all -d exec"));
    }

    #[test]
    fn the_control_domain_leads_every_bundle_unless_left_out() {
        let mut run = HvRun {
            hypervisor: "/img/hypervisor".into(),
            guests: vec![GuestFile::new("/x/a"), GuestFile::new("/x/b")],
            control_cmdline: "console=raw".into(),
            ..HvRun::default()
        };
        let all = run.bundle_guests();
        let names: Vec<&str> = all.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["control", "a", "b"]);
        assert!(all[0].dom0 && !all[1].dom0 && !all[2].dom0);
        assert_eq!(all[0].path, Path::new("/img/control-domain"));
        assert_eq!(all[0].cmdline, "console=raw name.1=a name.2=b");
        // Device words follow the names; words with whitespace are left out.
        run.devices = vec![
            "dev.demo.1=2".into(),
            "vbd.1=x y".into(),
            "vbd.2=d,ro".into(),
        ];
        assert_eq!(
            run.bundle_guests()[0].cmdline,
            "console=raw name.1=a name.2=b dev.demo.1=2 vbd.2=d,ro"
        );
        run.devices.clear();
        assert_eq!(all[0].memory_mib, CONTROL_DOMAIN_MEMORY_MIB);
        // Its memory counts for QEMU's.
        let a = args(&hypervisor_command(Path::new("q"), &run, Path::new("b")));
        assert!(a.join(" ").contains("-m 256M"));
        run.control_domain = Some("/elsewhere/cd".into());
        assert_eq!(run.bundle_guests()[0].path, Path::new("/elsewhere/cd"));
        // --no-control-domain, or a guest of the user's as dom0: the guests alone.
        run.no_control_domain = true;
        assert_eq!(run.bundle_guests(), run.guests);
        run.no_control_domain = false;
        run.guests[1].dom0 = true;
        assert_eq!(run.bundle_guests(), run.guests);
    }

    #[test]
    fn disks_grow_the_control_domain_and_go_where_dom0_is() {
        let dir = std::env::temp_dir().join(format!("xtask-qemu-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("d.img");
        std::fs::write(&img, vec![0u8; 100 << 10]).unwrap();
        let mut run = HvRun {
            hypervisor: "/img/hypervisor".into(),
            guests: vec![GuestFile::new("/x/a")],
            disks: vec![DiskFile {
                path: img,
                name: "xvda".into(),
            }],
            ..HvRun::default()
        };
        // 100 KiB + a table page → 1 MiB, + 2 MiB for the p2m and tables.
        assert_eq!(
            run.bundle_guests()[0].memory_mib,
            CONTROL_DOMAIN_MEMORY_MIB + 3
        );
        assert_eq!(run.bundle_disks().len(), 1);
        // A guest of the user's as dom0 gets them; no dom0 at all: nobody.
        run.guests[0].dom0 = true;
        assert_eq!(run.bundle_disks().len(), 1);
        run.guests[0].dom0 = false;
        run.no_control_domain = true;
        assert!(run.bundle_disks().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn raw_console_only_for_one_guest_on_a_terminal_without_prefix() {
        assert_eq!(interactive_cmdline("", 1, true, false), "console=raw");
        assert_eq!(
            interactive_cmdline("loglvl=all", 1, true, false),
            "loglvl=all console=raw"
        );
        assert_eq!(interactive_cmdline("x", 2, true, false), "x");
        assert_eq!(interactive_cmdline("x", 1, false, false), "x");
        assert_eq!(interactive_cmdline("", 1, true, true), "");
    }

    #[test]
    fn captured_runs_collect_lines_and_stop_on_a_marker() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "printf 'one\\r\\ntwo\\nthree'; exit 3"]);
        let c = run_captured(cmd, Some(Duration::from_secs(60)), false, |_| false).unwrap();
        assert_eq!(c.transcript.lines, ["one", "two", "three"]);
        assert_eq!(c.status, Some(3));
        assert!(!c.stopped);

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo a; echo STOP; exec sleep 600"]);
        let c = run_captured(cmd, Some(Duration::from_secs(60)), false, |l| l == "STOP").unwrap();
        assert!(c.stopped);
        assert_eq!(c.transcript.lines[..2], ["a", "STOP"]);
    }

    #[test]
    fn captured_runs_time_out_with_the_transcript() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo waiting; exec sleep 600"]);
        let e = run_captured(cmd, Some(Duration::from_millis(300)), false, |_| false).unwrap_err();
        assert!(e.0.contains("timed out"), "{e}");
        assert!(e.0.contains("waiting"), "{e}");
    }
}
