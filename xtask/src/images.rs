//! Building the bare-metal images: the hypervisor, the control domain, pv-guest and the
//! test guests.

use crate::{Result, err, run_checked, target_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bare-metal target every image is built for.
pub const TARGET: &str = "x86_64-unknown-none";

/// Test guests of the `test-guests` crate, by binary name.
pub const TEST_GUESTS: &[&str] = &[
    "privileged",
    "bad-pointer",
    "unknown-hypercall",
    "no-notes",
    "console-io-only",
    "bench",
];

/// Cargo profile of the images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// `--release` (what tests and benchmarks use).
    #[default]
    Release,
    /// The dev profile, for debugging.
    Debug,
}

impl Profile {
    fn dir_name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// Where the built images are.
#[derive(Clone, Debug)]
pub struct Images {
    /// `target/images/x86_64-unknown-none/<profile>`.
    pub dir: PathBuf,
}

impl Images {
    /// The hypervisor ELF.
    pub fn hypervisor(&self) -> PathBuf {
        self.dir.join("hypervisor")
    }

    /// The control domain's kernel ELF (dom0 `control` of every bundle by default).
    pub fn control_domain(&self) -> PathBuf {
        self.dir.join("control-domain")
    }

    /// The pv-guest ELF.
    pub fn pv_guest(&self) -> PathBuf {
        self.dir.join("pv-guest")
    }

    /// Any guest binary by name (pv-guest or one of [`TEST_GUESTS`]).
    pub fn guest(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// `target/images`: a target dir of its own, because the cargo that runs xtask or the
/// tests may hold the lock of `target/`.
pub fn images_target_dir() -> PathBuf {
    target_dir().join("images")
}

/// Builds the hypervisor, the control domain, pv-guest and the test guests for the
/// bare-metal target.
pub fn build_images(profile: Profile) -> Result<Images> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = images_target_dir();
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::workspace_root())
        .args(["build", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    // One `--bins` covers every selected package (cargo refuses it twice); the
    // hypervisor and control-domain packages have one binary each.
    cmd.args([
        "-p",
        "hypervisor",
        "-p",
        "control-domain",
        "-p",
        "pv-guest",
        "-p",
        "test-guests",
        "--bins",
    ]);
    // Fixed, not inherited: a DEFMT_LOG=trace in the environment must not put logging
    // on the hypercall path of the images the tests and the benchmark use.
    cmd.env("DEFMT_LOG", crate::trace::DEFAULT_DEFMT_LOG);
    run_checked(&mut cmd).map_err(|e| err!("building the bare-metal images: {e}"))?;
    let images = Images {
        dir: target_dir.join(TARGET).join(profile.dir_name()),
    };
    // Only the hypervisor is required here: a missing guest is reported by whoever
    // boots it, so the other guests stay usable while one is being written.
    require_file(&images.hypervisor())?;
    Ok(images)
}

fn require_file(path: &Path) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(err!(
            "the image build succeeded but {} is missing",
            path.display()
        ))
    }
}

/// The release images for a test binary: QEMU made sure of (installed when running as
/// root) and the images built, once per process however many tests ask; a failure
/// panics with the reason (tests never skip).
pub fn prepared() -> &'static Images {
    static IMAGES: std::sync::OnceLock<std::result::Result<Images, String>> =
        std::sync::OnceLock::new();
    let built = IMAGES.get_or_init(|| {
        crate::qemu::ensure_qemu().map_err(|e| e.to_string())?;
        build_images(Profile::Release).map_err(|e| e.to_string())
    });
    match built {
        Ok(images) => images,
        Err(e) => panic!("cannot prepare the QEMU tests: {e}"),
    }
}

/// The example kernels of `examples/`, by directory (= package and binary name). Each is a
/// crate of its own, outside the workspace, as a kernel author's crate would be.
pub const EXAMPLES: &[&str] = &["minimal", "timer-events"];

/// `target/examples`: one target dir for every example, so they share built dependencies.
pub fn examples_target_dir() -> PathBuf {
    target_dir().join("examples")
}

/// Builds every example of [`EXAMPLES`] (release) the way its author would: `cargo build`
/// in its directory, so its own `.cargo/config.toml` (target, linker script, relocation
/// model) applies. Returns the ELF paths, in [`EXAMPLES`] order.
pub fn build_examples() -> Result<Vec<PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = examples_target_dir();
    let mut elfs = Vec::new();
    for name in EXAMPLES {
        let dir = crate::workspace_root().join("examples").join(name);
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&dir)
            .args(["build", "--release", "--target-dir"])
            .arg(&target_dir)
            // Flags of an outer build would replace the example's own rustflags.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET");
        run_checked(&mut cmd).map_err(|e| err!("building example {name}: {e}"))?;
        let elf = target_dir.join(TARGET).join("release").join(name);
        require_file(&elf)?;
        elfs.push(elf);
    }
    Ok(elfs)
}
