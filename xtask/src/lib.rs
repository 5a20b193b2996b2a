//! Host-side tooling shared by `cargo xtask` and the QEMU integration tests (`tests/`):
//! building the bare-metal images, packing boot bundles, running QEMU (our hypervisor or
//! real Xen 4.17) and reading the benchmark guest's output.

pub mod bench;
pub mod budget;
pub mod bundle;
pub mod conformance;
pub mod fuzz;
pub mod fuzz_parsers;
pub mod hypercalls;
pub mod images;
pub mod profile;
pub mod public_api;
pub mod qemu;
pub mod session;
pub mod trace;
pub mod xen;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every xtask failure: a sentence for a human, already carrying its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// xtask's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error`] from a format string.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::Error(format!($($arg)*)) };
}

/// The workspace root: the parent of this crate's manifest directory. Fixed at compile
/// time, so it is right whichever directory the tests or xtask run from.
pub fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir
        .parent()
        .expect("xtask lives in a folder of the workspace")
        .to_path_buf()
}

/// `<workspace>/target`, where every generated file goes.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target")
}

/// Runs a command to completion with inherited stdio; a non-zero exit is an error that
/// names the command.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .map_err(|e| err!("could not start {}: {e}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(err!("{} failed ({status})", describe(cmd)))
    }
}

/// `program arg arg...` for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether this process runs as root, asked of `id -u` (no libc binding needed).
pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Finds an executable on PATH.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
