//! The performance regression guard: runs every deterministic benchmark path on our
//! hypervisor under QEMU `-icount shift=0` (exact instruction counts, not wall time) and
//! fails when one costs more than its committed budget in `tests/bench-budget.toml` by
//! more than 5 %. A change that makes a path slower on purpose updates the budget in the
//! same commit (`cargo xtask bench --write-budget`).

use std::time::Duration;
use xtask::budget::{Budget, TOLERANCE_PERCENT, measure};

/// Hang guard of one QEMU run (a few thousand iterations of every case take seconds).
const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn every_bench_path_stays_within_its_instruction_budget() {
    let budget = Budget::load().unwrap_or_else(|e| panic!("{e}"));
    let images = xtask::images::prepared();
    let measured = measure(images, budget.iterations, TIMEOUT)
        .unwrap_or_else(|e| panic!("bench run failed: {e}"));
    for (name, figure) in &measured {
        let budgeted = budget.instructions.get(name).copied().unwrap_or(f64::NAN);
        eprintln!("{name:<28} {figure:?} (budget {budgeted:.2})");
    }
    let problems = budget.check(&measured);
    assert!(
        problems.is_empty(),
        "benchmark paths over their instruction budget (+{TOLERANCE_PERCENT}%) in tests/bench-budget.toml:\n  {}\n\
         If the change is intended, update the budget in the same commit: cargo xtask bench --write-budget",
        problems.join("\n  ")
    );
}
