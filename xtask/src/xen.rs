//! Real Xen 4.17 (Debian's build) under QEMU, to run the same PV kernels as dom0.

use crate::qemu::{
    Captured, DETERMINISTIC_ARGS, Outcome, Transcript, ensure_qemu, run_captured_observed,
};
use crate::{Result, describe, err, run_checked, running_as_root, target_dir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The Debian package that carries the Xen 4.17 hypervisor image.
pub const XEN_PACKAGE: &str = "xen-hypervisor-4.17-amd64";

/// Xen's command line: console on COM1, a small dom0, no SMAP (QEMU 7.2 TCG faults
/// `iretq` at CPL3 with SMAP on), and halt instead of reboot when dom0 ends.
pub const XEN_CMDLINE: &str =
    "console=com1 com1=115200,8n1 dom0_mem=64M,max:64M dom0_max_vcpus=1 smap=0 noreboot";

/// Lines Xen prints when dom0 ends; with `noreboot` it then halts without exiting.
pub const DOM0_END_MARKERS: &[&str] = &[
    "Hardware Dom0 halted",
    "Hardware Dom0 crashed",
    "Hardware Dom0 shutdown",
];

/// `target/xen/xen-4.17.elf`.
pub fn xen_elf_path() -> PathBuf {
    target_dir().join("xen").join("xen-4.17.elf")
}

/// Returns the cached Xen ELF, downloading and unpacking the Debian package first if
/// needed (`apt-get download`, `dpkg -x`, `gzip -d`; nothing is installed).
pub fn ensure_xen() -> Result<PathBuf> {
    static FETCH: Mutex<()> = Mutex::new(());
    let _guard = FETCH.lock().unwrap_or_else(|p| p.into_inner());
    let elf = xen_elf_path();
    if elf.is_file() {
        return Ok(elf);
    }
    let xen_dir = elf.parent().expect("has a parent").to_path_buf();
    let work = xen_dir.join(format!("download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| err!("cannot create {}: {e}", work.display()))?;
    let result = fetch_into(&work, &elf);
    let _ = std::fs::remove_dir_all(&work);
    result.map(|()| elf)
}

fn fetch_into(work: &Path, elf: &Path) -> Result<()> {
    let download = || {
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(work).args(["download", XEN_PACKAGE]);
        run_checked(&mut cmd)
    };
    if let Err(first) = download() {
        // A fresh machine has no package lists yet; root can fetch them.
        if !running_as_root() {
            return Err(err!(
                "cannot download {XEN_PACKAGE} ({first}); run `sudo apt-get update` and retry"
            ));
        }
        let mut update = Command::new("apt-get");
        update.arg("update");
        run_checked(&mut update)?;
        download().map_err(|e| err!("cannot download {XEN_PACKAGE}: {e}"))?;
    }
    let deb = std::fs::read_dir(work)
        .map_err(|e| err!("cannot list {}: {e}", work.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| err!("apt-get download left no .deb in {}", work.display()))?;
    let unpacked = work.join("pkg");
    run_checked(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    let gz = unpacked.join("boot").join("xen-4.17-amd64.gz");
    let mut gunzip = Command::new("gzip");
    gunzip.arg("-dc").arg(&gz);
    let out = gunzip
        .output()
        .map_err(|e| err!("could not start {}: {e}", describe(&gunzip)))?;
    if !out.status.success() || !out.stdout.starts_with(b"\x7fELF") {
        return Err(err!(
            "{} did not produce an ELF: {}",
            describe(&gunzip),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // Write then rename, so an interrupted run never leaves a truncated cache.
    let tmp = work.join("xen.elf");
    std::fs::write(&tmp, &out.stdout).map_err(|e| err!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, elf).map_err(|e| err!("cannot write {}: {e}", elf.display()))
}

/// The `-initrd` argument: QEMU's multiboot loader splits modules on `,`, so a literal
/// comma is doubled.
pub fn module_arg(kernel: &Path, dom0_cmdline: &str) -> String {
    let mut s = kernel.to_string_lossy().replace(',', ",,");
    if !dom0_cmdline.is_empty() {
        s.push(' ');
        s.push_str(&dom0_cmdline.replace(',', ",,"));
    }
    s
}

/// The QEMU command that boots Xen with `kernel` as dom0.
pub fn xen_command(
    qemu: &Path,
    xen: &Path,
    kernel: &Path,
    dom0_cmdline: &str,
    deterministic: bool,
) -> Command {
    xen_command_with(qemu, xen, kernel, dom0_cmdline, deterministic, "")
}

/// [`xen_command`] with `xen_extra` appended to Xen's command line.
pub fn xen_command_with(
    qemu: &Path,
    xen: &Path,
    kernel: &Path,
    dom0_cmdline: &str,
    deterministic: bool,
    xen_extra: &str,
) -> Command {
    xen_command_full(
        qemu,
        xen,
        kernel,
        dom0_cmdline,
        deterministic,
        &xen_cmdline(None, xen_extra),
        XEN_MACHINE_MIB,
    )
}

/// QEMU's memory for a Xen run: room for Xen, its heap and dom0.
pub const XEN_MACHINE_MIB: u32 = 512;

/// Xen's command line: [`XEN_CMDLINE`] with dom0's memory set to `dom0_mib` (default
/// 64 MiB) and `extra` appended.
pub fn xen_cmdline(dom0_mib: Option<u32>, extra: &str) -> String {
    let mut line = match dom0_mib {
        Some(m) => XEN_CMDLINE.replace("dom0_mem=64M,max:64M", &format!("dom0_mem={m}M,max:{m}M")),
        None => XEN_CMDLINE.to_string(),
    };
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// The QEMU command that boots Xen with the full command line `xen_cmdline` and
/// `machine_mib` MiB of RAM, `kernel` as dom0.
pub fn xen_command_full(
    qemu: &Path,
    xen: &Path,
    kernel: &Path,
    dom0_cmdline: &str,
    deterministic: bool,
    xen_cmdline: &str,
    machine_mib: u32,
) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", "q35", "-cpu"])
        .arg(if deterministic {
            "max,-smap,-rdrand,-rdseed"
        } else {
            "max,-smap"
        })
        .arg("-m")
        .arg(machine_mib.to_string())
        .args(["-smp", "1", "-display", "none", "-no-reboot"])
        .args(["-serial", "stdio", "-monitor", "none", "-kernel"])
        .arg(xen)
        .arg("-append")
        .arg(xen_cmdline)
        .arg("-initrd")
        .arg(module_arg(kernel, dom0_cmdline));
    if deterministic {
        // DETERMINISTIC_ARGS repeats `-smp 1`, which QEMU accepts.
        cmd.args(DETERMINISTIC_ARGS);
    }
    cmd
}

/// Boots `kernel` as dom0 of real Xen 4.17 and captures the console. Xen halts rather
/// than exits when dom0 ends, so QEMU is stopped when `stop_marker` (if any) or one of
/// [`DOM0_END_MARKERS`] shows up; reaching `timeout` first is an error.
pub fn run_on_xen(
    kernel: &Path,
    dom0_cmdline: &str,
    deterministic: bool,
    timeout: Duration,
    stop_marker: Option<&str>,
) -> Result<Captured> {
    run_on_xen_observed(
        kernel,
        dom0_cmdline,
        deterministic,
        timeout,
        stop_marker,
        "",
        |_, _| {},
    )
}

/// [`run_on_xen`] with `xen_extra` appended to Xen's command line, calling
/// `observe(qemu_pid, line)` as each console line arrives.
pub fn run_on_xen_observed(
    kernel: &Path,
    dom0_cmdline: &str,
    deterministic: bool,
    timeout: Duration,
    stop_marker: Option<&str>,
    xen_extra: &str,
    mut observe: impl FnMut(u32, &str),
) -> Result<Captured> {
    let qemu = ensure_qemu()?;
    let xen = ensure_xen()?;
    if !kernel.is_file() {
        return Err(err!("dom0 kernel {} does not exist", kernel.display()));
    }
    let cmd = xen_command_with(&qemu, &xen, kernel, dom0_cmdline, deterministic, xen_extra);
    run_captured_observed(cmd, Some(timeout), false, |pid, line| {
        observe(pid, line);
        stop_marker.is_some_and(|m| line.contains(m))
            || DOM0_END_MARKERS.iter().any(|m| line.contains(m))
    })
}

/// Reads Xen's console to tell how a dom0 run ended, since Xen halts (`noreboot`)
/// instead of exiting QEMU. The mapping to our hypervisor's outcomes (and so to
/// `cargo xtask run`'s exit status) is:
///
/// | Xen's console | outcome | as on ours |
/// |---|---|---|
/// | `Hardware Dom0 halted` (`SHUTDOWN_poweroff`) | [`Outcome::AllPoweredOff`] | status 33 |
/// | `Hardware Dom0 crashed` (`SHUTDOWN_crash`, or a fault Xen kills dom0 for) | [`Outcome::DomainFailed`] | status 37 |
/// | `Hardware Dom0 shutdown` (reboot, watchdog, an unknown reason), `did unsupported soft reset` | [`Outcome::DomainFailed`] | status 37 |
/// | `Panic on CPU` whose message names dom0 (`Could not construct domain 0`: the kernel was refused) | [`Outcome::DomainFailed`] | status 37 |
/// | any other `Panic on CPU` | [`Outcome::HypervisorFailure`] | status 35 |
///
/// QEMU exiting by itself (a triple fault under `-no-reboot`: status 0) is
/// [`Outcome::Reset`]; any other exit is [`Outcome::QemuError`].
#[derive(Clone, Debug, Default)]
pub struct Dom0Watch {
    /// A `Panic on CPU` line was seen; the panic message lines follow.
    panic: Option<Vec<String>>,
    /// The decided outcome and the line that decided it.
    end: Option<(Outcome, String)>,
}

impl Dom0Watch {
    /// Feeds one console line; returns true once the run has ended (QEMU can be stopped).
    pub fn line(&mut self, line: &str) -> bool {
        if self.end.is_some() {
            return true;
        }
        // Xen prefixes its lines with `(XEN) `; dom0's console_io output has none.
        let text = line.strip_prefix("(XEN) ").unwrap_or(line).trim();
        if let Some(msg) = &mut self.panic {
            // The message sits between `Panic on CPU n:` and a line of stars; the run is
            // over at the star line (the reset notice that follows adds nothing).
            if text.starts_with("****") {
                let message = msg.join(" ");
                let lower = message.to_ascii_lowercase();
                let outcome = if lower.contains("dom0") || lower.contains("domain 0") {
                    Outcome::DomainFailed
                } else {
                    Outcome::HypervisorFailure
                };
                self.end = Some((outcome, format!("Xen panic: {message}")));
                return true;
            }
            if !text.is_empty() {
                msg.push(text.to_string());
            }
            return false;
        }
        if text.starts_with("Panic on CPU") {
            self.panic = Some(Vec::new());
            return false;
        }
        let outcome = if text.contains("Hardware Dom0 halted") {
            Outcome::AllPoweredOff
        } else if text.contains("Hardware Dom0 crashed")
            || text.contains("Hardware Dom0 shutdown")
            || (text.contains("Hardware domain 0") && text.contains("soft reset"))
        {
            Outcome::DomainFailed
        } else {
            return false;
        };
        self.end = Some((outcome, text.to_string()));
        true
    }

    /// The outcome decided from the console, with the deciding line.
    pub fn end(&self) -> Option<&(Outcome, String)> {
        self.end.as_ref()
    }
}

/// `cargo xtask run --on-xen`: one kernel as dom0 of Xen 4.17.
#[derive(Clone, Debug, Default)]
pub struct Dom0Run {
    /// The kernel ELF.
    pub kernel: PathBuf,
    /// dom0's command line.
    pub cmdline: String,
    /// dom0's memory in MiB (`dom0_mem`); `None` = 64.
    pub memory_mib: Option<u32>,
    /// Appended to Xen's command line.
    pub xen_extra: String,
    /// Deterministic QEMU.
    pub deterministic: bool,
    /// Kill QEMU and fail after this long; `None` = wait for dom0 to end.
    pub timeout: Option<Duration>,
    /// Print each console line as it arrives.
    pub echo: bool,
}

/// How a [`Dom0Run`] ended.
#[derive(Clone, Debug)]
pub struct Dom0Result {
    /// The console.
    pub transcript: Transcript,
    /// The outcome, as for our hypervisor.
    pub outcome: Outcome,
    /// The Xen line that decided it (`None` when QEMU exited by itself).
    pub evidence: Option<String>,
    /// QEMU's stderr.
    pub stderr: String,
}

impl Dom0Result {
    /// One line for a human: the outcome and the Xen line it was read from.
    pub fn explain(&self) -> String {
        let what = match self.outcome {
            Outcome::AllPoweredOff => "dom0 powered off".to_string(),
            Outcome::DomainFailed => "dom0 crashed, was refused or did not power off".to_string(),
            Outcome::HypervisorFailure => "Xen itself failed".to_string(),
            other => other.explain(),
        };
        match &self.evidence {
            Some(line) => format!("on Xen 4.17: {what} (Xen: \"{line}\")"),
            None => format!("on Xen 4.17: {what}"),
        }
    }
}

/// Boots `run.kernel` as dom0 of Xen 4.17, console captured, and reads the outcome from
/// Xen's console ([`Dom0Watch`]). A timeout is an error carrying the end of the
/// transcript, as on our hypervisor.
pub fn run_dom0(run: &Dom0Run) -> Result<Dom0Result> {
    let qemu = ensure_qemu()?;
    let xen = ensure_xen()?;
    if !run.kernel.is_file() {
        return Err(err!("dom0 kernel {} does not exist", run.kernel.display()));
    }
    let machine_mib = run.memory_mib.map_or(XEN_MACHINE_MIB, |m| {
        XEN_MACHINE_MIB.max(m.saturating_add(256))
    });
    let cmd = xen_command_full(
        &qemu,
        &xen,
        &run.kernel,
        &run.cmdline,
        run.deterministic,
        &xen_cmdline(run.memory_mib, &run.xen_extra),
        machine_mib,
    );
    let mut watch = Dom0Watch::default();
    let captured = run_captured_observed(cmd, run.timeout, run.echo, |_, line| watch.line(line))?;
    let (outcome, evidence) = match watch.end() {
        Some((outcome, line)) => (*outcome, Some(line.clone())),
        None => (Outcome::from_status(captured.status), None),
    };
    Ok(Dom0Result {
        transcript: captured.transcript,
        outcome,
        evidence,
        stderr: captured.stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_module_strings_are_doubled() {
        assert_eq!(module_arg(Path::new("/a,b/k"), ""), "/a,,b/k");
        assert_eq!(
            module_arg(Path::new("/k"), "iterations=5 x=1,2"),
            "/k iterations=5 x=1,,2"
        );
    }

    #[test]
    fn xen_runs_disable_smap_and_pin_determinism() {
        let cmd = xen_command(Path::new("q"), Path::new("xen"), Path::new("k"), "a", true);
        let joined: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = joined.join(" ");
        assert!(joined.contains("-cpu max,-smap,-rdrand,-rdseed"));
        assert!(joined.contains("-icount shift=0,align=off,sleep=off"));
        assert!(joined.contains("-initrd k a"));
        assert!(joined.contains("noreboot"));
    }

    fn watch(lines: &[&str]) -> (Option<(Outcome, String)>, usize) {
        let mut w = Dom0Watch::default();
        let stopped_at = lines.iter().position(|l| w.line(l)).unwrap_or(lines.len());
        (w.end().cloned(), stopped_at)
    }

    #[test]
    fn dom0_endings_map_to_our_outcomes() {
        let (end, at) = watch(&[
            "(XEN) Freed 2048kB init memory",
            "hello from dom0",
            "(XEN) Hardware Dom0 halted: halting machine",
            "(XEN) never read",
        ]);
        assert_eq!(at, 2);
        assert_eq!(end.unwrap().0, Outcome::AllPoweredOff);
        for crash in [
            "(XEN) Hardware Dom0 crashed: 'noreboot' set - not rebooting.",
            "(XEN) Hardware Dom0 shutdown: rebooting machine",
            "(XEN) Hardware Dom0 shutdown (unknown reason 7): 'noreboot' set - not rebooting.",
            "(XEN) Hardware domain 0 did unsupported soft reset, rebooting.",
        ] {
            assert_eq!(
                watch(&[crash]).0.unwrap().0,
                Outcome::DomainFailed,
                "{crash}"
            );
        }
        // dom0's own output mentioning a marker without Xen's wording does not end it.
        assert_eq!(watch(&["dom0 says: halted"]).0, None);
    }

    #[test]
    fn panics_are_a_refused_dom0_or_a_xen_failure() {
        let refused = [
            "(XEN) *** Building a PV Dom0 ***",
            "(XEN) ELF: not an ELF binary",
            "(XEN) ",
            "(XEN) ****************************************",
            "(XEN) Panic on CPU 0:",
            "(XEN) Could not construct domain 0",
            "(XEN) ****************************************",
            "(XEN) Manual reset required ('noreboot' specified)",
        ];
        let (end, at) = watch(&refused);
        let (outcome, line) = end.unwrap();
        assert_eq!(outcome, Outcome::DomainFailed);
        assert_eq!(line, "Xen panic: Could not construct domain 0");
        assert_eq!(at, 6, "stops at the star line closing the message");
        let (end, _) = watch(&[
            "(XEN) Panic on CPU 0:",
            "(XEN) FATAL TRAP: vector = 14 (page fault)",
            "(XEN) ****************************************",
        ]);
        assert_eq!(end.unwrap().0, Outcome::HypervisorFailure);
    }

    #[test]
    fn dom0_memory_replaces_the_default_and_grows_the_machine() {
        assert_eq!(xen_cmdline(None, ""), XEN_CMDLINE);
        let line = xen_cmdline(Some(256), "loglvl=all");
        assert!(line.contains("dom0_mem=256M,max:256M"), "{line}");
        assert!(!line.contains("dom0_mem=64M"), "{line}");
        assert!(line.ends_with(" loglvl=all"), "{line}");
        let cmd = xen_command_full(
            Path::new("q"),
            Path::new("xen"),
            Path::new("k"),
            "",
            false,
            &line,
            768,
        );
        let joined: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(joined.join(" ").contains("-m 768 -smp 1"));
    }
}
