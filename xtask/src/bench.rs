//! The hypercall round-trip benchmark: the `bench` test guest times N `xen_version`
//! hypercalls and the same loop without the call, with rdtsc under QEMU's icount (one
//! TSC tick = one retired instruction), and prints
//! `BENCH name=xen_version iterations=<N> total=<T> baseline=<B>`.

use crate::bundle::GuestFile;
use crate::images::Images;
use crate::qemu::{HvRun, Outcome, run_hypervisor};
use crate::xen::run_on_xen;
use crate::{Result, err};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// What the bench guest reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchLine {
    /// Iterations of each loop.
    pub iterations: u64,
    /// TSC delta of the hypercall loop.
    pub total: u64,
    /// TSC delta of the empty loop.
    pub baseline: u64,
}

impl BenchLine {
    /// Instructions per round trip: (total − baseline) / iterations.
    pub fn per_round_trip(&self) -> f64 {
        if self.iterations == 0 {
            return 0.0;
        }
        (self.total as f64 - self.baseline as f64) / self.iterations as f64
    }

    /// `71.00`, or `70.50` — two decimals.
    pub fn per_round_trip_text(&self) -> String {
        let exact = self.exact_per_round_trip();
        match exact {
            Some(n) => format!("{n}.00"),
            None => format!("{:.2}", self.per_round_trip()),
        }
    }

    /// The whole number of instructions per round trip, when it divides exactly.
    pub fn exact_per_round_trip(&self) -> Option<i128> {
        let diff = i128::from(self.total) - i128::from(self.baseline);
        let n = i128::from(self.iterations);
        (n != 0 && diff % n == 0).then(|| diff / n)
    }
}

/// Finds `BENCH name=xen_version ...` anywhere in a line (our hypervisor prefixes it
/// with `[d1 bench] `, Xen may print it raw) and reads its numbers.
pub fn parse_bench_line(line: &str) -> Option<BenchLine> {
    let at = line.find("BENCH name=")?;
    let mut name = None;
    let (mut iterations, mut total, mut baseline) = (None, None, None);
    for field in line[at + "BENCH ".len()..].split_whitespace() {
        let (key, value) = field.split_once('=')?;
        match key {
            "name" => name = Some(value),
            "iterations" => iterations = value.parse().ok(),
            "total" => total = value.parse().ok(),
            "baseline" => baseline = value.parse().ok(),
            _ => {}
        }
    }
    if name != Some("xen_version") {
        return None;
    }
    Some(BenchLine {
        iterations: iterations?,
        total: total?,
        baseline: baseline?,
    })
}

/// Finds the bench line in a transcript.
pub fn find_bench_line(lines: &[String]) -> Option<BenchLine> {
    lines.iter().find_map(|l| parse_bench_line(l))
}

/// Runs the bench guest on our hypervisor, deterministically.
pub fn bench_ours(images: &Images, iterations: u64, timeout: Duration) -> Result<BenchLine> {
    let guest = GuestFile::new(images.guest("bench")).cmdline(format!("iterations={iterations}"));
    let result = run_hypervisor(&HvRun {
        hypervisor: images.hypervisor(),
        guests: vec![guest],
        deterministic: true,
        timeout: Some(timeout),
        ..HvRun::default()
    })?;
    let line = find_bench_line(&result.transcript.lines).ok_or_else(|| {
        err!(
            "no BENCH line from the bench guest on our hypervisor ({}); last lines:\n{}",
            result.outcome.explain(),
            result.transcript.tail(30)
        )
    })?;
    if result.outcome != Outcome::AllPoweredOff {
        return Err(err!(
            "bench run on our hypervisor ended badly: {}",
            result.outcome.explain()
        ));
    }
    Ok(line)
}

/// Runs the same bench ELF as dom0 on real Xen 4.17, deterministically.
pub fn bench_xen(bench_elf: &Path, iterations: u64, timeout: Duration) -> Result<BenchLine> {
    let captured = run_on_xen(
        bench_elf,
        &format!("iterations={iterations}"),
        true,
        timeout,
        Some("BENCH name="),
    )?;
    find_bench_line(&captured.transcript.lines).ok_or_else(|| {
        err!(
            "no BENCH line from the bench guest on Xen; last lines:\n{}",
            captured.transcript.tail(30)
        )
    })
}

/// The benchmark report as JSON (hand-written: a handful of numbers needs no serializer).
pub fn to_json(ours: &BenchLine, xen: Option<&BenchLine>) -> String {
    fn entry(out: &mut String, key: &str, b: &BenchLine) {
        let _ = write!(
            out,
            "  \"{key}\": {{\"iterations\": {}, \"total\": {}, \"baseline\": {}, \"instructions_per_round_trip\": {}}}",
            b.iterations,
            b.total,
            b.baseline,
            b.per_round_trip_text()
        );
    }
    let mut out = String::from(
        "{\n  \"benchmark\": \"xen_version round trip\",\n  \"unit\": \"instructions\",\n",
    );
    entry(&mut out, "ours", ours);
    if let Some(x) = xen {
        out.push_str(",\n");
        entry(&mut out, "xen", x);
        let _ = write!(out, ",\n  \"ratio_ours_over_xen\": {}", ratio_text(ours, x));
    }
    out.push_str("\n}\n");
    out
}

/// ours / Xen, 3 decimals (`null` if Xen's figure is zero).
pub fn ratio_text(ours: &BenchLine, xen: &BenchLine) -> String {
    let x = xen.per_round_trip();
    if x == 0.0 {
        "null".into()
    } else {
        format!("{:.3}", ours.per_round_trip() / x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_lines_are_found_with_or_without_prefix() {
        let b = parse_bench_line(
            "[d1 bench] BENCH name=xen_version iterations=1000 total=75000 baseline=4000",
        )
        .unwrap();
        assert_eq!(
            b,
            BenchLine {
                iterations: 1000,
                total: 75000,
                baseline: 4000
            }
        );
        assert_eq!(b.per_round_trip_text(), "71.00");
        assert_eq!(b.exact_per_round_trip(), Some(71));
        let raw = parse_bench_line("(XEN) BENCH name=xen_version iterations=4 total=10 baseline=0")
            .unwrap();
        assert_eq!(raw.per_round_trip_text(), "2.50");
        assert_eq!(raw.exact_per_round_trip(), None);
    }

    #[test]
    fn malformed_bench_lines_are_rejected() {
        assert!(parse_bench_line("BENCH name=other iterations=1 total=1 baseline=1").is_none());
        assert!(
            parse_bench_line("BENCH name=xen_version iterations=x total=1 baseline=1").is_none()
        );
        assert!(parse_bench_line("BENCH name=xen_version total=1 baseline=1").is_none());
        assert!(parse_bench_line("hello").is_none());
    }

    #[test]
    fn json_carries_both_figures_and_the_ratio() {
        let ours = BenchLine {
            iterations: 10,
            total: 1000,
            baseline: 0,
        };
        let xen = BenchLine {
            iterations: 10,
            total: 2000,
            baseline: 0,
        };
        let j = to_json(&ours, Some(&xen));
        assert!(j.contains("\"ours\": {\"iterations\": 10, \"total\": 1000"));
        assert!(j.contains("\"instructions_per_round_trip\": 200.00"));
        assert!(j.contains("\"ratio_ours_over_xen\": 0.500"));
        assert!(!to_json(&ours, None).contains("xen\""));
    }
}
