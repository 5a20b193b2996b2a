//! The instruction budget of every benchmark path: `tests/bench-budget.toml` holds, per
//! case, the instructions per iteration our hypervisor may take (QEMU `-icount shift=0`,
//! so the figures are exact and the same on every machine). The `bench_budget` test runs
//! the bench guest and fails when a path costs more than its budget plus
//! [`TOLERANCE_PERCENT`], so no change slows a path silently. A commit that changes a
//! figure on purpose updates the file: `cargo xtask bench --write-budget`.

use crate::bench::{BenchLine, CASES, CaseKind, Figure};
use crate::{Result, err};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How far above its budget a path may go before the test fails.
pub const TOLERANCE_PERCENT: f64 = 5.0;

/// Iterations of the budget runs: enough that one-time costs are noise, few enough for
/// CI. Budgets are only comparable at the iteration count they were measured with.
pub const DEFAULT_ITERATIONS: u64 = 2000;

/// The file's contents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Iterations the figures were measured with (and the test runs with).
    pub iterations: u64,
    /// Case name → instructions per iteration.
    pub instructions: BTreeMap<String, f64>,
}

/// Where the budget lives.
pub fn budget_path() -> PathBuf {
    crate::workspace_root()
        .join("tests")
        .join("bench-budget.toml")
}

/// The cases with a budget: every deterministic one (not the real-time idle case and
/// throughput).
pub fn budgeted_cases() -> impl Iterator<Item = &'static crate::bench::Case> {
    CASES.iter().filter(|c| c.deterministic())
}

const HEADER: &str = "\
# Instructions per iteration each benchmark path may take on our hypervisor (QEMU
# -icount shift=0: exact, machine-independent counts). The bench_budget test fails when a
# path exceeds its figure by more than 5 %. Update on purpose, in the commit that changes
# a figure: `cargo xtask bench --write-budget` (see README, Benchmark).
";

impl Budget {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Budget> {
        let b: Budget = toml::from_str(text).map_err(|e| err!("bench budget: {e}"))?;
        if b.iterations == 0 {
            return Err(err!("bench budget: iterations must be at least 1"));
        }
        if let Some((name, v)) = b
            .instructions
            .iter()
            .find(|(_, v)| !v.is_finite() || **v <= 0.0)
        {
            return Err(err!("bench budget: {name} = {v} is not a positive number"));
        }
        Ok(b)
    }

    /// Reads [`budget_path`].
    pub fn load() -> Result<Budget> {
        let path = budget_path();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| err!("cannot read {}: {e}", path.display()))?;
        Budget::parse(&text)
    }

    /// The file's text: a comment header and the table, cases in [`CASES`] order is not
    /// kept (TOML tables are sorted by name), figures with two decimals.
    pub fn to_text(&self) -> Result<String> {
        let rounded = Budget {
            iterations: self.iterations,
            instructions: self
                .instructions
                .iter()
                .map(|(k, v)| (k.clone(), (v * 100.0).round() / 100.0))
                .collect(),
        };
        let body = toml::to_string(&rounded).map_err(|e| err!("bench budget: {e}"))?;
        Ok(format!("{HEADER}\n{body}"))
    }

    /// A budget from measured figures.
    pub fn from_figures(iterations: u64, figures: &[(String, f64)]) -> Budget {
        Budget {
            iterations,
            instructions: figures.iter().cloned().collect(),
        }
    }

    /// Checks measured figures against the budget: one line per path that is over its
    /// budget (beyond the tolerance), has no budget, or was not measured. Empty = pass.
    pub fn check(&self, measured: &[(String, Figure)]) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, figure) in measured {
            let Some(&budget) = self.instructions.get(name) else {
                problems.push(format!(
                    "{name}: no budget in tests/bench-budget.toml (add it: cargo xtask bench --write-budget)"
                ));
                continue;
            };
            match figure {
                Figure::Missing(why) => problems.push(format!("{name}: not measured ({why})")),
                Figure::Value(v) => {
                    let limit = budget * (1.0 + TOLERANCE_PERCENT / 100.0);
                    if *v > limit {
                        problems.push(format!(
                            "{name}: {v:.2} instructions per iteration, budget {budget:.2} (+{TOLERANCE_PERCENT}% = {limit:.2}): {:+.1}%",
                            (v / budget - 1.0) * 100.0
                        ));
                    }
                }
            }
        }
        for name in self.instructions.keys() {
            if !measured.iter().any(|(n, _)| n == name) {
                problems.push(format!(
                    "{name}: in the budget but no such case (remove it from tests/bench-budget.toml)"
                ));
            }
        }
        problems
    }
}

/// The figure of every budgeted case, from the lines of the single-domain run and of each
/// run of its own (two-domain and served cases).
pub fn figures_of(
    single: &[BenchLine],
    own_runs: &[(&str, Vec<BenchLine>)],
) -> Vec<(String, Figure)> {
    budgeted_cases()
        .map(|c| {
            let fig = match c.kind {
                CaseKind::TwoDomains | CaseKind::Served(_) => own_runs
                    .iter()
                    .find(|(n, _)| *n == c.name)
                    .map(|(_, lines)| Figure::of_case(lines, c.name))
                    .unwrap_or_else(|| Figure::Missing("not run".into())),
                _ => Figure::of_case(single, c.name),
            };
            (c.name.to_string(), fig)
        })
        .collect()
}

/// Runs every budgeted case on our hypervisor at `iterations` and returns the figures.
pub fn measure(
    images: &crate::images::Images,
    iterations: u64,
    timeout: std::time::Duration,
) -> Result<Vec<(String, Figure)>> {
    let single = crate::bench::bench_ours(images, None, iterations, timeout)?;
    let mut two = Vec::new();
    for c in budgeted_cases() {
        let lines = match c.kind {
            CaseKind::TwoDomains => {
                crate::bench::bench_ours_two_domains(images, c.name, iterations, timeout)?
            }
            CaseKind::Served(s) => {
                crate::bench::bench_ours_served(images, c.name, s, iterations, timeout)?.0
            }
            CaseKind::Single | CaseKind::Idle => continue,
        };
        two.push((c.name, lines));
    }
    Ok(figures_of(&single, &two))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(pairs: &[(&str, f64)]) -> Budget {
        Budget {
            iterations: 1000,
            instructions: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn text_round_trips_and_keeps_the_header() {
        let b = budget(&[("xen_version", 73.0), ("sched_yield_1dom", 412.345)]);
        let text = b.to_text().unwrap();
        assert!(text.starts_with("# Instructions per iteration"), "{text}");
        let back = Budget::parse(&text).unwrap();
        assert_eq!(back.iterations, 1000);
        assert_eq!(back.instructions["xen_version"], 73.0);
        assert_eq!(back.instructions["sched_yield_1dom"], 412.35);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        assert!(Budget::parse("iterations = 0\n[instructions]\n").is_err());
        assert!(Budget::parse("iterations = 10\n[instructions]\nx = -1.0\n").is_err());
        assert!(Budget::parse("iterations = 10\n[instructions]\nx = \"a\"\n").is_err());
        assert!(Budget::parse("iterations = 10\nextra = 1\n[instructions]\n").is_err());
        assert!(Budget::parse("iterations = 10\n[instructions]\nx = 5\n").is_ok());
    }

    #[test]
    fn check_flags_slower_unbudgeted_unmeasured_and_stale_paths() {
        let b = budget(&[("a", 100.0), ("b", 100.0), ("c", 100.0), ("gone", 1.0)]);
        let measured = vec![
            ("a".to_string(), Figure::Value(105.0)), // at the tolerance: passes
            ("b".to_string(), Figure::Value(105.5)), // beyond it
            (
                "c".to_string(),
                Figure::Missing("unsupported: ENOSYS".into()),
            ),
            ("new".to_string(), Figure::Value(1.0)),
        ];
        let p = b.check(&measured);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(p[0].starts_with("b: 105.50"), "{}", p[0]);
        assert!(p[1].starts_with("c: not measured"), "{}", p[1]);
        assert!(p[2].starts_with("new: no budget"), "{}", p[2]);
        assert!(
            p[3].starts_with("gone: in the budget but no such case"),
            "{}",
            p[3]
        );
        // Faster is fine.
        assert!(b.check(&[("a".into(), Figure::Value(1.0))]).len() == 3);
    }

    #[test]
    fn every_deterministic_case_is_budgeted_but_not_idle() {
        let names: Vec<&str> = budgeted_cases().map(|c| c.name).collect();
        assert!(names.contains(&"xen_version"));
        assert!(names.contains(&"blk_read_4k"));
        assert!(names.contains(&"blk_write_4k"));
        assert!(!names.contains(&"idle_host_cpu_percent"));
        // A rate in real time is reported, never budgeted.
        assert!(!names.contains(&"blk_read_throughput"));
    }

    #[test]
    fn the_committed_budget_parses_and_covers_every_case() {
        let b = Budget::load().unwrap();
        for c in budgeted_cases() {
            assert!(
                b.instructions.contains_key(c.name),
                "{} has no budget in tests/bench-budget.toml",
                c.name
            );
        }
        for name in b.instructions.keys() {
            assert!(
                budgeted_cases().any(|c| c.name == name),
                "{name} in tests/bench-budget.toml is no case"
            );
        }
    }
}
