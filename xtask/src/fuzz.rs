//! `cargo xtask fuzz`: several `fuzz` test guests issuing random hypercalls at once, an
//! `observer` guest with a fixed workload, and the control domain, under deterministic
//! QEMU. The run passes when the hypervisor neither faulted nor leaked a frame, every
//! domain ended, and the observer finished undisturbed; a fuzzing domain that crashed
//! itself is allowed (and counted).

use crate::bundle::GuestFile;
use crate::images::Images;
use crate::qemu::{HvRun, Outcome, Transcript, run_hypervisor};
use crate::{Result, err};
use std::time::Duration;

/// What to run.
#[derive(Clone, Debug)]
pub struct FuzzOptions {
    /// Hypercalls in total, split over the fuzzing domains.
    pub calls: u64,
    /// Seed of the first fuzzing domain (the k-th gets `seed + k`).
    pub seed: u64,
    /// Fuzzing domains (the last one ends by crashing itself when there are two or more).
    pub domains: u32,
    /// Echo the console while running.
    pub echo: bool,
    /// More words for every fuzzing domain's command line (`trace=N` prints every call
    /// from the N-th on, `every=N` the progress line every N calls).
    pub guest_args: String,
}

/// Observer rounds for a run of `calls` calls: enough to span the fuzzing.
pub fn observer_rounds(calls: u64) -> u64 {
    (calls / 100).clamp(200, 100_000)
}

/// The observer's pattern word (a copy of `tests/guests/src/bin/observer.rs`'s).
fn word(r: u64, i: u64) -> u64 {
    (r.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.wrapping_mul(0xff51_afd7_ed55_8ccd))
        .rotate_left((r % 64) as u32)
}

/// The checksum an undisturbed observer prints after `rounds` rounds.
pub fn checksum(rounds: u64) -> u64 {
    let mut sum = 0xcbf2_9ce4_8422_2325u64;
    for r in 0..rounds {
        let read = (0..4 * 512u64).fold(0u64, |acc, i| acc.wrapping_add(word(r, i)));
        sum = (sum ^ read).wrapping_mul(0x100_0000_01b3) ^ r;
    }
    sum
}

/// The run: control domain (dom0), fuzzers d1..dK, observer d(K+1).
pub fn fuzz_run(images: &Images, opts: &FuzzOptions) -> HvRun {
    let k = opts.domains.max(1);
    let per = opts.calls.div_ceil(u64::from(k));
    let observer = k + 1;
    let mut guests = Vec::new();
    for i in 1..=k {
        let others: Vec<String> = (0..=observer)
            .filter(|d| *d != i)
            .map(|d| d.to_string())
            .collect();
        let end = if k >= 2 && i == k { " end=crash" } else { "" };
        let mut g = GuestFile::new(images.guest("fuzz"));
        g.name = format!("fuzz{i}");
        g.cmdline = format!(
            "seed={} calls={per} me={i} doms={}{end} {}",
            opts.seed.wrapping_add(u64::from(i) - 1),
            others.join(","),
            opts.guest_args
        );
        guests.push(g);
    }
    let mut obs = GuestFile::new(images.guest("observer"));
    obs.cmdline = format!("rounds={}", observer_rounds(opts.calls));
    guests.push(obs);
    HvRun {
        hypervisor: images.hypervisor(),
        control_domain: Some(images.control_domain()),
        guests,
        deterministic: true,
        // A hang guard: generous against the slowest calls seen (a few thousand/s).
        timeout: Some(Duration::from_secs(600 + opts.calls / 500)),
        echo: opts.echo,
        ..HvRun::default()
    }
}

/// What a fuzz run showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuzzReport {
    /// Calls the fuzzing domains reported done (`fuzz: done <n> calls`).
    pub calls: u64,
    /// Fuzzing domains that printed their done line.
    pub finished: u32,
    /// Fuzzing domains the hypervisor reports crashed.
    pub crashed: Vec<String>,
    /// `(hv) frames: N still owned by ended domains`.
    pub frames_leaked: Option<u64>,
    /// The observer's done line matched the expected checksum with 0 mismatches.
    pub observer_ok: bool,
    /// The observer's done line, if any.
    pub observer_line: Option<String>,
    /// The hypervisor's last lines (`(hv) frames`, `(hv) all domains ended`).
    pub end_lines: Vec<String>,
    /// How QEMU ended.
    pub outcome: Outcome,
}

impl FuzzReport {
    /// Reads a transcript of [`fuzz_run`] with `domains` fuzzers and `rounds` observer rounds.
    pub fn parse(t: &Transcript, outcome: Outcome, domains: u32, rounds: u64) -> FuzzReport {
        let mut calls = 0;
        let mut finished = 0;
        let mut crashed = Vec::new();
        let mut frames_leaked = None;
        let mut observer_line = None;
        let mut end_lines = Vec::new();
        for line in &t.lines {
            if let Some(rest) = line.split("fuzz: done ").nth(1)
                && let Some(n) = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
            {
                calls += n;
                finished += 1;
            }
            if line.starts_with("(hv) d") && line.contains(" fuzz") && line.contains(": crashed:") {
                crashed.push(line.clone());
            }
            if let Some(rest) = line.strip_prefix("(hv) frames: ") {
                frames_leaked = rest.split_whitespace().next().and_then(|n| n.parse().ok());
                end_lines.push(line.clone());
            }
            if line.starts_with("(hv) all domains ended") {
                end_lines.push(line.clone());
            }
            if line.contains("observer: done ") {
                observer_line = Some(line.clone());
            }
        }
        let _ = domains;
        let want = format!(
            "observer: done {rounds} rounds, 0 mismatches, checksum {:#018x}",
            checksum(rounds)
        );
        let observer_ok = observer_line.as_deref().is_some_and(|l| l.ends_with(&want))
            && t.contains(&format!(
                "(hv) d{} observer: shut down: poweroff",
                domains + 1
            ));
        FuzzReport {
            calls,
            finished,
            crashed,
            frames_leaked,
            observer_ok,
            observer_line,
            end_lines,
            outcome,
        }
    }

    /// Why the run failed, if it did: a hypervisor fault or panic, a machine reset, QEMU
    /// failing, a leaked frame, or an observer that did not finish correctly.
    pub fn failure(&self) -> Option<String> {
        match self.outcome {
            Outcome::AllPoweredOff | Outcome::DomainFailed => {}
            other => return Some(other.explain()),
        }
        match self.frames_leaked {
            Some(0) => {}
            Some(n) => return Some(format!("{n} frames still owned by ended domains")),
            None => {
                return Some("the hypervisor did not report the frames of ended domains".into());
            }
        }
        if !self.observer_ok {
            return Some(format!(
                "the observer did not finish undisturbed: {}",
                self.observer_line.as_deref().unwrap_or("no done line")
            ));
        }
        None
    }
}

/// Runs the fuzz bundle and reads the report; `Err` only when QEMU could not run.
pub fn run_fuzz(images: &Images, opts: &FuzzOptions) -> Result<(FuzzReport, Transcript)> {
    let run = fuzz_run(images, opts);
    let result = run_hypervisor(&run).map_err(|e| err!("fuzz run (seed {}): {e}", opts.seed))?;
    let report = FuzzReport::parse(
        &result.transcript,
        result.outcome,
        opts.domains.max(1),
        observer_rounds(opts.calls),
    );
    Ok((report, result.transcript))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(lines: &[&str]) -> Transcript {
        Transcript {
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_clean_run_passes_and_counts_calls_and_crashes() {
        let obs = format!(
            "[d3 observer] observer: done 200 rounds, 0 mismatches, checksum {:#018x}",
            checksum(200)
        );
        let t = transcript(&[
            "[d1 fuzz1] fuzz: done 500 calls seed 7 exceptions-missed 0",
            "[d2 fuzz2] fuzz: done 500 calls seed 8 exceptions-missed 0",
            "(hv) d2 fuzz2: crashed: #BP in guest kernel vector=3",
            &obs,
            "(hv) d3 observer: shut down: poweroff",
            "(hv) frames: 0 still owned by ended domains",
            "(hv) all domains ended: 3 powered off, 1 failed",
        ]);
        let r = FuzzReport::parse(&t, Outcome::DomainFailed, 2, 200);
        assert_eq!((r.calls, r.finished, r.crashed.len()), (1000, 2, 1));
        assert_eq!(r.frames_leaked, Some(0));
        assert!(r.observer_ok);
        assert_eq!(r.failure(), None);
    }

    #[test]
    fn leaks_faults_and_a_disturbed_observer_fail() {
        let good_obs = format!(
            "[d2 observer] observer: done 200 rounds, 0 mismatches, checksum {:#018x}",
            checksum(200)
        );
        let base = [
            good_obs.as_str(),
            "(hv) d2 observer: shut down: poweroff",
            "(hv) frames: 3 still owned by ended domains",
        ];
        let r = FuzzReport::parse(&transcript(&base), Outcome::AllPoweredOff, 1, 200);
        assert!(r.failure().unwrap().contains("3 frames"));
        let ok = [
            base[0],
            base[1],
            "(hv) frames: 0 still owned by ended domains",
        ];
        let r = FuzzReport::parse(&transcript(&ok), Outcome::HypervisorFailure, 1, 200);
        assert!(r.failure().unwrap().contains("hypervisor failed"));
        let bad_sum = [
            "[d2 observer] observer: done 200 rounds, 0 mismatches, checksum 0x0000000000000001",
            base[1],
            ok[2],
        ];
        let r = FuzzReport::parse(&transcript(&bad_sum), Outcome::AllPoweredOff, 1, 200);
        assert!(r.failure().unwrap().contains("observer"));
        let r = FuzzReport::parse(&transcript(&ok), Outcome::AllPoweredOff, 1, 200);
        assert_eq!(r.failure(), None);
    }
}
