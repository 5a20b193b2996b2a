//! `cargo xtask run --trace FILE`: the hypervisor's defmt trace.
//!
//! The hypervisor writes defmt frames (rzcobs) to COM2 (`arch/x86_64/defmt_log.rs`).
//! Which levels are compiled in is fixed by `DEFMT_LOG` at build time: the normal image
//! keeps `debug` (domain life cycle, refusals — never the hypercall fast path), the trace
//! image is built with `trace` (every slow-path hypercall with its arguments and result)
//! in a target dir of its own, so switching levels never rebuilds the normal images.
//! After QEMU exits, the captured bytes are decoded against that exact ELF.

use crate::images::{Images, TARGET};
use crate::{Result, err, run_checked, target_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `DEFMT_LOG` of the normal images: debug frames only, nothing per hypercall.
pub const DEFAULT_DEFMT_LOG: &str = "debug";
/// `DEFMT_LOG` of the `--trace` image.
pub const TRACE_DEFMT_LOG: &str = "trace";

/// `target/images-trace`: the trace image's own target dir.
pub fn trace_target_dir() -> PathBuf {
    target_dir().join("images-trace")
}

/// Builds the hypervisor (release) with `DEFMT_LOG=trace`; returns its ELF.
pub fn build_traced_hypervisor() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let dir = trace_target_dir();
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::workspace_root())
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&dir)
        .args(["-p", "hypervisor", "--bins"])
        .env("DEFMT_LOG", TRACE_DEFMT_LOG);
    run_checked(&mut cmd).map_err(|e| err!("building the traced hypervisor: {e}"))?;
    let elf = Images {
        dir: dir.join(TARGET).join("release"),
    }
    .hypervisor();
    if !elf.is_file() {
        return Err(err!("the build succeeded but {} is missing", elf.display()));
    }
    Ok(elf)
}

/// Where a run's raw COM2 bytes go (next to the decoded file).
pub fn raw_capture_path(decoded: &Path) -> PathBuf {
    let mut name = decoded.as_os_str().to_owned();
    name.push(".defmt");
    PathBuf::from(name)
}

/// Decodes defmt frames `raw` produced by the hypervisor ELF `elf` into lines
/// `<tsc> <LEVEL> <message>`. A damaged frame is skipped (rzcobs resynchronises at the
/// next frame) and reported as a line of its own; a cut-off last frame is dropped.
pub fn decode(elf: &[u8], raw: &[u8]) -> Result<Vec<String>> {
    let table = defmt_decoder::Table::parse(elf)
        .map_err(|e| err!("reading the defmt table of the hypervisor ELF: {e}"))?
        .ok_or_else(|| err!("the hypervisor ELF has no .defmt section"))?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(raw);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => lines.push(frame.display(false).to_string()),
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) if table.encoding().can_recover() => {
                lines.push("(malformed defmt frame skipped)".to_string());
            }
            Err(defmt_decoder::DecodeError::Malformed) => {
                return Err(err!("malformed defmt frame (encoding cannot recover)"));
            }
        }
    }
    Ok(lines)
}

/// Decodes the capture `raw_path` against `elf` and writes the lines to `out`; returns
/// them.
pub fn decode_file(elf: &Path, raw_path: &Path, out: &Path) -> Result<Vec<String>> {
    let elf_bytes = std::fs::read(elf).map_err(|e| err!("cannot read {}: {e}", elf.display()))?;
    let raw =
        std::fs::read(raw_path).map_err(|e| err!("cannot read {}: {e}", raw_path.display()))?;
    let lines = decode(&elf_bytes, &raw)?;
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(out, text).map_err(|e| err!("cannot write {}: {e}", out.display()))?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_capture_sits_next_to_the_decoded_file() {
        assert_eq!(
            raw_capture_path(Path::new("/tmp/t.txt")),
            Path::new("/tmp/t.txt.defmt")
        );
    }

    #[test]
    fn an_elf_without_defmt_is_refused() {
        assert!(decode(b"not an elf", b"").is_err());
    }
}
