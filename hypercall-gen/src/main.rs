//! `hypercall-gen [--check] [REPO_ROOT]`: regenerates the outputs of
//! `hypercall-gen/hypercalls.toml` (or, with `--check`, lists the stale ones and fails).
//! `cargo xtask gen` does the same.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: hypercall-gen [--check] [REPO_ROOT]");
                return ExitCode::SUCCESS;
            }
            path => root = PathBuf::from(path),
        }
    }
    let result = if check {
        hypercall_gen::stale(&root).map(|stale| {
            for path in &stale {
                eprintln!("hypercall-gen: {path} is stale; run `cargo xtask gen`");
            }
            stale.is_empty()
        })
    } else {
        hypercall_gen::write_all(&root).map(|changed| {
            for path in &changed {
                println!("hypercall-gen: wrote {}", path.display());
            }
            true
        })
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hypercall-gen: {e}");
            ExitCode::FAILURE
        }
    }
}
