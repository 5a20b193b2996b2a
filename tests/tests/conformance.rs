//! The conformance suite: each conformance kernel runs as dom0 on real Xen 4.17 and as
//! dom0 on our hypervisor (same QEMU machine), and the `case` lines of the two runs are
//! compared case by case (`xtask::conformance::compare`): the same cases on both, every
//! case passes on Xen (a failure there is a wrong `want`), and every case passes on ours
//! unless `tests/conformance-deviations.toml` lists it with exactly the answer ours gave.
//!
//! Kernels: `conformance-mmu` (PV MMU, descriptor tables, traps, the small hypercalls),
//! `conformance-core` (event channels, timers, scheduling, grant-table basics) and
//! `hostile-grant` (grant-table abuse; its older `case <name>: got <g> want <w>` lines
//! are read as area `grant`).

use std::time::{Duration, Instant};
use xtask::bundle::GuestFile;
use xtask::conformance::{Case, compare, load_deviations, parse_cases};
use xtask::qemu::{HvRun, Outcome, run_hypervisor};
use xtask::xen::{Dom0Run, run_dom0};

/// Hang guard for one QEMU run.
const TIMEOUT: Duration = Duration::from_secs(120);
/// dom0's memory on both hypervisors, MiB (Xen's `dom0_mem` default of the runner).
const DOM0_MIB: u32 = 64;

/// A conformance kernel: its binary, command line, the areas its cases use and the
/// area given to old-format lines.
struct Kernel {
    name: &'static str,
    cmdline: &'static str,
    areas: &'static [&'static str],
    default_area: &'static str,
}

const MMU: Kernel = Kernel {
    name: "conformance-mmu",
    cmdline: "",
    areas: &[
        "mmu",
        "mmu_update",
        "mmuext",
        "uvm",
        "desc",
        "vcpu",
        "version",
        "console",
        "physdev",
        "memory",
        "vm_assist",
        "segment",
        "misc",
        "traps",
    ],
    default_area: "",
};

const CORE: Kernel = Kernel {
    name: "conformance-core",
    cmdline: "",
    areas: &["evtchn", "fifo", "timer", "sched", "gnttab"],
    default_area: "",
};

const GRANT: Kernel = Kernel {
    name: "hostile-grant",
    cmdline: "",
    areas: &["grant"],
    default_area: "grant",
};

/// The cases of one run and the whole transcript (for failure messages).
struct Run {
    cases: Vec<Case>,
    text: String,
    seconds: f64,
}

fn on_xen(k: &Kernel) -> Run {
    let start = Instant::now();
    let run = Dom0Run {
        kernel: xtask::images::prepared().guest(k.name),
        cmdline: k.cmdline.to_string(),
        memory_mib: Some(DOM0_MIB),
        timeout: Some(TIMEOUT),
        ..Dom0Run::default()
    };
    let r = run_dom0(&run).unwrap_or_else(|e| panic!("running {} on Xen 4.17 failed: {e}", k.name));
    let text = r.transcript.text();
    assert_eq!(
        r.outcome,
        Outcome::AllPoweredOff,
        "{} on Xen: {}\n{text}",
        k.name,
        r.explain()
    );
    Run {
        cases: parse_cases(
            r.transcript.lines.iter().map(String::as_str),
            k.default_area,
        ),
        text,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn on_ours(k: &Kernel) -> Run {
    let start = Instant::now();
    let images = xtask::images::prepared();
    let guest = GuestFile {
        dom0: true,
        memory_mib: DOM0_MIB,
        ..GuestFile::new(images.guest(k.name)).cmdline(k.cmdline)
    };
    let run = HvRun {
        hypervisor: images.hypervisor(),
        guests: vec![guest],
        timeout: Some(TIMEOUT),
        ..HvRun::default()
    };
    let r = run_hypervisor(&run).unwrap_or_else(|e| panic!("QEMU run of {} failed: {e}", k.name));
    let text = r.transcript.text();
    assert_eq!(
        r.outcome,
        Outcome::AllPoweredOff,
        "{} on ours: {}\n{text}",
        k.name,
        r.outcome.explain()
    );
    Run {
        cases: parse_cases(
            r.transcript.lines.iter().map(String::as_str),
            k.default_area,
        ),
        text,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Runs `k` on both hypervisors (in parallel) and asserts they conform.
fn conforms(k: &Kernel) {
    let deviations = load_deviations().unwrap_or_else(|e| panic!("{e}"));
    let (xen, ours) = std::thread::scope(|s| {
        let xen = s.spawn(|| on_xen(k));
        let ours = on_ours(k);
        (
            xen.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            ours,
        )
    });
    let c = compare(&xen.cases, &ours.cases, &deviations, k.areas);
    println!(
        "conformance {}: {} cases, {} pass on both, {} deviations, {} skipped (Xen {:.0} s, ours {:.0} s)",
        k.name, c.cases, c.both_pass, c.deviations, c.skipped, xen.seconds, ours.seconds
    );
    assert!(
        c.cases > 0,
        "{}: no case lines on Xen\n--- Xen ---\n{}",
        k.name,
        xen.text
    );
    assert!(
        c.problems.is_empty(),
        "{}: {} problems:\n{}\n--- Xen ---\n{}--- ours ---\n{}",
        k.name,
        c.problems.len(),
        c.problems.join("\n"),
        xen.text,
        ours.text
    );
}

#[test]
fn conformance_mmu_matches_xen() {
    conforms(&MMU);
}

#[test]
fn conformance_core_matches_xen() {
    conforms(&CORE);
}

#[test]
fn hostile_grant_matches_xen_as_dom0() {
    conforms(&GRANT);
}

#[test]
fn every_deviation_names_a_kernel_area() {
    let areas: Vec<&str> = [MMU, CORE, GRANT]
        .iter()
        .flat_map(|k| k.areas.iter().copied())
        .collect();
    for d in load_deviations().unwrap_or_else(|e| panic!("{e}")) {
        let area = d.name.split('.').next().unwrap_or("");
        assert!(
            areas.contains(&area),
            "deviation {} names no kernel's area",
            d.name
        );
    }
}
