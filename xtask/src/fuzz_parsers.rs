//! `cargo xtask fuzz-parsers`: the parser fuzz tests (proptest, `fuzz-seeds/`) with
//! more cases, and the total of their executions.
//!
//! The tests are ordinary `cargo test` tests (a CI-sized run happens in every
//! `cargo test`); this runs only them, with `PARSER_FUZZ_CASES` set, and adds up the
//! `parser fuzz executions: N (name)` lines they print.

use crate::{Result, err, workspace_root};
use std::process::{Command, Stdio};

/// The crates with parser fuzz tests and the libtest filters that select them.
pub const TARGETS: [(&str, &[&str]); 3] = [
    ("hypervisor", &["parser_fuzz_tests::"]),
    (
        "control-domain",
        &[
            "parser_fuzz_tests::",
            "blkback::tests::blkif_requests_fuzz",
            "netback::tests::netif_requests_fuzz",
        ],
    ),
    ("xen-pv-abi", &["modules::tests::modules_table"]),
];

/// The `(name, executions)` of every `parser fuzz executions: N (name)` line in `text`.
pub fn executions(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("parser fuzz executions: ")?;
            let (n, name) = rest.split_once(' ')?;
            let name = name.strip_prefix('(')?.strip_suffix(')')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// Runs every parser fuzz test with `cases` cases each (the tests' own CI sizes if
/// `None`), from the generator `seed` (the tests' fixed one if `None`), in release mode
/// if asked (overflow checks stay on there); prints the executions per parser and
/// returns their total.
pub fn fuzz_parsers(cases: Option<u32>, seed: Option<u64>, release: bool) -> Result<u64> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut all = Vec::new();
    for (krate, filters) in TARGETS {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(workspace_root())
            .args(["test", "-p", krate, "--lib"]);
        if release {
            cmd.arg("--release");
        }
        cmd.arg("--").args(filters).arg("--nocapture");
        if let Some(n) = cases {
            cmd.env("PARSER_FUZZ_CASES", n.to_string());
        }
        if let Some(n) = seed {
            cmd.env("FUZZ_SEED", n.to_string());
        }
        let out = cmd
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| err!("could not start cargo test: {e}"))?;
        let text = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            eprint!("{text}");
            return Err(err!("the parser fuzz tests of {krate} failed"));
        }
        all.extend(executions(&text));
    }
    let total: u64 = all.iter().map(|(_, n)| n).sum();
    for (name, n) in &all {
        println!("{name:>20}: {n}");
    }
    println!("parser fuzz executions: {total}");
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_lines_are_added_up() {
        let text = "running 3 tests\nparser fuzz executions: 4000 (elf-notes)\n\
                    test x ... ok\n  parser fuzz executions: 12 (bundle)\n\
                    parser fuzz executions: x (bad)\n";
        assert_eq!(
            executions(text),
            vec![("elf-notes".to_string(), 4000), ("bundle".to_string(), 12)]
        );
    }
}
