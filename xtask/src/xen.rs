//! Real Xen 4.17 (Debian's build) under QEMU, to run the same PV kernels as dom0.

use crate::qemu::{Captured, DETERMINISTIC_ARGS, ensure_qemu, run_captured_observed};
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
    let xen_cmdline = if xen_extra.is_empty() {
        XEN_CMDLINE.to_string()
    } else {
        format!("{XEN_CMDLINE} {xen_extra}")
    };
    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", "q35", "-cpu"])
        .arg(if deterministic {
            "max,-smap,-rdrand,-rdseed"
        } else {
            "max,-smap"
        })
        .args(["-m", "512", "-smp", "1", "-display", "none", "-no-reboot"])
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
}
