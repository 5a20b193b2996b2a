//! The conformance suite's host side: reading the case lines a conformance kernel
//! prints (`tests/guests/src/conformance.rs`), and comparing a run on real Xen 4.17 with
//! a run on our hypervisor against `tests/conformance-deviations.toml`.
//!
//! Two line formats are read:
//!
//! * the framework's `case <area>.<name>: pass`, `case <area>.<name>: fail got <g> want
//!   <w>` and `case <area>.<name>: skip <reason>`;
//! * the older `case <name>: got <g> want <w>` of `hostile-grant` and friends, which
//!   passes when `g == w`; those names get the runner's area prefix (`grant.`).
//!
//! A name printed more than once gets `#2`, `#3`, … appended to its later occurrences,
//! so every case has one name.

use crate::{Result, err};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What one case line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The answer was Xen 4.17's.
    Pass,
    /// The answer `got` was not `want`.
    Fail {
        /// What the hypervisor answered.
        got: i64,
        /// Xen 4.17's answer.
        want: i64,
    },
    /// Not run, with the reason.
    Skip(String),
}

/// One case of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// `<area>.<name>`, unique within the run.
    pub name: String,
    /// Its outcome.
    pub verdict: Verdict,
}

/// The cases in `lines`, in order. `area` prefixes names of old-format lines that have
/// none. Text before `case ` (a console prefix such as `[d0 x] ` or Xen's) is ignored.
pub fn parse_cases<'a>(lines: impl IntoIterator<Item = &'a str>, area: &str) -> Vec<Case> {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut cases = Vec::new();
    for line in lines {
        let Some(at) = line.find("case ") else {
            continue;
        };
        // `case ` must start the guest's text: the line start or after `] `.
        if at != 0 && !line[..at].ends_with("] ") {
            continue;
        }
        let Some((name, rest)) = line[at + 5..].trim_end().split_once(": ") else {
            continue;
        };
        if name.is_empty() || name.contains(' ') {
            continue;
        }
        let Some(verdict) = parse_verdict(rest) else {
            continue;
        };
        let mut name = if name.contains('.') || area.is_empty() {
            name.to_string()
        } else {
            format!("{area}.{name}")
        };
        let n = seen.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            name = format!("{name}#{n}");
        }
        cases.push(Case { name, verdict });
    }
    cases
}

fn parse_verdict(rest: &str) -> Option<Verdict> {
    if rest == "pass" {
        return Some(Verdict::Pass);
    }
    if let Some(reason) = rest.strip_prefix("skip") {
        return Some(Verdict::Skip(reason.trim().to_string()));
    }
    let got_want = rest.strip_prefix("fail ").unwrap_or(rest);
    let got_want = got_want.strip_prefix("got ")?;
    let (got, want) = got_want.split_once(" want ")?;
    let got: i64 = got.trim().parse().ok()?;
    let want: i64 = want.trim().parse().ok()?;
    Some(if got == want {
        Verdict::Pass
    } else {
        Verdict::Fail { got, want }
    })
}

/// One listed deviation: on our hypervisor case `name` answers `ours`, on purpose.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Deviation {
    /// The case, `<area>.<name>`.
    pub name: String,
    /// What our hypervisor answers.
    pub ours: i64,
    /// Why ours differs from Xen 4.17.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviationFile {
    #[serde(default)]
    deviation: Vec<Deviation>,
}

/// Reads the deviation list (`[[deviation]]` tables with `name`, `ours`, `reason`).
pub fn parse_deviations(text: &str) -> Result<Vec<Deviation>> {
    let file: DeviationFile =
        toml::from_str(text).map_err(|e| err!("conformance deviations: {e}"))?;
    let mut names = BTreeSet::new();
    for d in &file.deviation {
        if d.reason.trim().is_empty() {
            return Err(err!("deviation {} has no reason", d.name));
        }
        if !names.insert(d.name.as_str()) {
            return Err(err!("deviation {} is listed twice", d.name));
        }
    }
    Ok(file.deviation)
}

/// `tests/conformance-deviations.toml`, read.
pub fn load_deviations() -> Result<Vec<Deviation>> {
    let path = crate::workspace_root()
        .join("tests")
        .join("conformance-deviations.toml");
    read_deviations(&path)
}

fn read_deviations(path: &Path) -> Result<Vec<Deviation>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err!("cannot read {}: {e}", path.display()))?;
    parse_deviations(&text)
}

/// The comparison of one kernel's two runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Cases in the run on Xen.
    pub cases: usize,
    /// Cases that pass on both.
    pub both_pass: usize,
    /// Cases where ours answers as a listed deviation says.
    pub deviations: usize,
    /// Cases skipped (on either side; the same cases must be skipped on both).
    pub skipped: usize,
    /// Everything wrong, one line each; empty when the kernel conforms.
    pub problems: Vec<String>,
}

/// Compares a kernel's cases on Xen and on ours. Problems: a case on one side only, a
/// case failing on Xen (its `want` is wrong), a case failing on ours unless `deviations`
/// lists it with exactly the observed answer, a listed deviation of this kernel (one
/// whose area is in `areas`) that passes on ours or was not run (stale).
pub fn compare(
    xen: &[Case],
    ours: &[Case],
    deviations: &[Deviation],
    areas: &[&str],
) -> Comparison {
    let mut c = Comparison {
        cases: xen.len(),
        ..Comparison::default()
    };
    let ours_by: BTreeMap<&str, &Verdict> =
        ours.iter().map(|k| (k.name.as_str(), &k.verdict)).collect();
    let xen_names: BTreeSet<&str> = xen.iter().map(|k| k.name.as_str()).collect();
    let listed: BTreeMap<&str, &Deviation> =
        deviations.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut used = BTreeSet::new();
    for k in xen {
        let Some(&o) = ours_by.get(k.name.as_str()) else {
            c.problems
                .push(format!("{}: runs on Xen but not on ours", k.name));
            continue;
        };
        match (&k.verdict, o) {
            (Verdict::Fail { got, want }, _) => c.problems.push(format!(
                "{}: fails on Xen 4.17 (got {got} want {want}): the case's want is wrong",
                k.name
            )),
            (Verdict::Skip(_), Verdict::Skip(_)) => c.skipped += 1,
            (Verdict::Skip(r), _) | (_, Verdict::Skip(r)) => c
                .problems
                .push(format!("{}: skipped on one side only ({r})", k.name)),
            (Verdict::Pass, Verdict::Pass) => {
                c.both_pass += 1;
                if listed.contains_key(k.name.as_str()) {
                    used.insert(k.name.as_str());
                    c.problems.push(format!(
                        "{}: listed as a deviation but passes on ours (stale entry)",
                        k.name
                    ));
                }
            }
            (Verdict::Pass, Verdict::Fail { got, want }) => match listed.get(k.name.as_str()) {
                Some(d) if d.ours == *got => {
                    used.insert(k.name.as_str());
                    c.deviations += 1;
                }
                Some(d) => {
                    used.insert(k.name.as_str());
                    c.problems.push(format!(
                        "{}: ours answers {got}, the deviation lists {} (Xen: {want})",
                        k.name, d.ours
                    ));
                }
                None => c
                    .problems
                    .push(format!("{}: ours answers {got}, Xen 4.17 {want}", k.name)),
            },
        }
    }
    for k in ours {
        if !xen_names.contains(k.name.as_str()) {
            c.problems
                .push(format!("{}: runs on ours but not on Xen", k.name));
        }
    }
    for d in deviations {
        let area = d.name.split('.').next().unwrap_or("");
        if areas.contains(&area)
            && !used.contains(d.name.as_str())
            && !xen_names.contains(d.name.as_str())
        {
            c.problems.push(format!(
                "{}: listed as a deviation but no such case (stale entry)",
                d.name
            ));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, verdict: Verdict) -> Case {
        Case {
            name: name.into(),
            verdict,
        }
    }

    #[test]
    fn both_line_formats_parse_and_repeated_names_are_numbered() {
        let lines = [
            "[d0 conformance-mmu] case mmu.pin_l1: pass",
            "(XEN) noise",
            "case mmu.pin_l2: fail got -16 want -22",
            "case traps.x: skip no FIFO here",
            "[d1 hostile-grant] case map_good: got 0 want 0",
            "case unmap_after_map: got 0 want 0",
            "case unmap_after_map: got -1 want 0",
            "hostile-grant: 3 cases, 1 unexpected",
            "some text case fake: pass",
            "case bad name: pass",
            "case mmu.garbled: got x want 1",
        ];
        let cases = parse_cases(lines, "grant");
        assert_eq!(
            cases,
            vec![
                case("mmu.pin_l1", Verdict::Pass),
                case(
                    "mmu.pin_l2",
                    Verdict::Fail {
                        got: -16,
                        want: -22
                    }
                ),
                case("traps.x", Verdict::Skip("no FIFO here".into())),
                case("grant.map_good", Verdict::Pass),
                case("grant.unmap_after_map", Verdict::Pass),
                case(
                    "grant.unmap_after_map#2",
                    Verdict::Fail { got: -1, want: 0 }
                ),
            ]
        );
    }

    #[test]
    fn deviations_parse_and_refuse_duplicates_and_missing_reasons() {
        let text = "[[deviation]]\nname = \"mmu.a\"\nours = -1\nreason = \"r\"\n";
        let d = parse_deviations(text).unwrap();
        assert_eq!(d[0].ours, -1);
        assert!(parse_deviations(&format!("{text}{text}")).is_err());
        assert!(
            parse_deviations("[[deviation]]\nname = \"a.b\"\nours = 1\nreason = \" \"\n").is_err()
        );
        assert!(parse_deviations("[[deviation]]\nname = \"a.b\"\nours = 1\n").is_err());
        assert!(parse_deviations("").unwrap().is_empty());
    }

    #[test]
    fn comparison_counts_and_reports_every_kind_of_problem() {
        let dev = |name: &str, ours: i64| Deviation {
            name: name.into(),
            ours,
            reason: "why".into(),
        };
        let fail = |got, want| Verdict::Fail { got, want };
        let xen = vec![
            case("m.ok", Verdict::Pass),
            case("m.dev", Verdict::Pass),
            case("m.wrong_dev", Verdict::Pass),
            case("m.new_diff", Verdict::Pass),
            case("m.bad_want", fail(1, 2)),
            case("m.xen_only", Verdict::Pass),
            case("m.stale", Verdict::Pass),
            case("m.skipped", Verdict::Skip("x".into())),
        ];
        let ours = vec![
            case("m.ok", Verdict::Pass),
            case("m.dev", fail(-1, 0)),
            case("m.wrong_dev", fail(-2, 0)),
            case("m.new_diff", fail(-3, 0)),
            case("m.bad_want", Verdict::Pass),
            case("m.stale", Verdict::Pass),
            case("m.skipped", Verdict::Skip("x".into())),
            case("m.ours_only", Verdict::Pass),
        ];
        let devs = [
            dev("m.dev", -1),
            dev("m.wrong_dev", -1),
            dev("m.stale", 5),
            dev("m.gone", 1),
            dev("other.gone", 1),
        ];
        let c = compare(&xen, &ours, &devs, &["m"]);
        assert_eq!(
            (c.cases, c.both_pass, c.deviations, c.skipped),
            (8, 2, 1, 1)
        );
        let p = c.problems.join("\n");
        for needle in [
            "m.wrong_dev: ours answers -2, the deviation lists -1",
            "m.new_diff: ours answers -3, Xen 4.17 0",
            "m.bad_want: fails on Xen 4.17",
            "m.xen_only: runs on Xen but not on ours",
            "m.stale: listed as a deviation but passes on ours",
            "m.ours_only: runs on ours but not on Xen",
            "m.gone: listed as a deviation but no such case",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in\n{p}");
        }
        assert!(!p.contains("other.gone"), "{p}");
        assert_eq!(c.problems.len(), 7, "{p}");
    }
}
