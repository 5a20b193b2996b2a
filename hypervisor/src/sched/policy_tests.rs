//! Host tests of the scheduling policy: unit cases and seeded property runs.

extern crate std;

use super::policy::*;
use crate::testutil::Rng;
use std::collections::BTreeMap;
use std::vec::Vec;
use xen_pv_abi::{DomId, Errno, VcpuId};

fn vid(d: u16, v: u32) -> Vid {
    (DomId(d), VcpuId(v))
}

/// Runs the scheduler as the lead would: pick, run until the scheduler's next event,
/// repeat. Calls `on_run(id, start, end)` for every stretch a vCPU ran.
fn simulate(s: &mut Scheduler, now: &mut u64, until: u64, mut on_run: impl FnMut(Vid, u64, u64)) {
    while *now < until {
        match s.pick(*now) {
            Some(p) => {
                assert!(p.slice_end_ns > *now);
                assert_eq!(s.state(p.id), Some(RunState::Running));
                let end = s.next_event(*now).expect("running: a slice end").min(until);
                assert!(end > *now);
                on_run(p.id, *now, end);
                *now = end;
            }
            None => match s.next_event(*now) {
                Some(t) => {
                    assert!(t > *now, "idle but next event {t} not after {now}");
                    *now = t.min(until);
                }
                None => break,
            },
        }
        s.check_invariants();
    }
}

#[test]
fn blocked_vcpus_are_not_picked() {
    let mut s = Scheduler::new(1);
    s.add_vcpu(vid(1, 0), DEFAULT_WEIGHT, 0).unwrap();
    s.add_vcpu(vid(2, 0), DEFAULT_WEIGHT, 0).unwrap();
    assert_eq!(s.add_vcpu(vid(1, 0), 256, 0), Err(Errno::EEXIST));
    // New vCPUs start blocked.
    assert_eq!(s.pick(0), None);
    assert_eq!(s.next_event(0), None);
    assert_eq!(s.wake(vid(2, 0), 0), Ok(true));
    let p = s.pick(0).unwrap();
    assert_eq!(
        p,
        Pick {
            id: vid(2, 0),
            slice_end_ns: SLICE_NS
        }
    );
    for t in 1..20u64 {
        assert_eq!(s.pick(t * SLICE_NS).unwrap().id, vid(2, 0));
    }
    s.block(vid(2, 0), 300 * 1_000_000).unwrap();
    assert_eq!(s.current(), None);
    assert_eq!(s.pick(300 * 1_000_000), None);
    assert!(!s.is_runnable(vid(2, 0)));
    assert_eq!(s.wake(vid(9, 0), 0), Err(Errno::ENOENT));
    s.check_invariants();
}

#[test]
fn parameters_are_checked() {
    let mut s = Scheduler::new(2);
    assert_eq!(s.add_vcpu(vid(1, 0), 0, 0), Err(Errno::EINVAL));
    assert_eq!(s.add_vcpu(vid(1, 0), 1, 201), Err(Errno::EINVAL));
    s.add_vcpu(vid(1, 0), 1, 200).unwrap();
    assert_eq!(s.set_params(DomId(1), 65535, 0), Ok(()));
    assert_eq!(s.set_params(DomId(1), 0, 0), Err(Errno::EINVAL));
    assert_eq!(s.set_params(DomId(1), 10, 201), Err(Errno::EINVAL));
    assert_eq!(s.set_params(DomId(7), 10, 0), Err(Errno::ESRCH));
    assert_eq!(s.params(DomId(1)), Some((65535, 0)));
    // putinfo: weight 0 and cap 0xffff leave the value alone.
    s.put_info(DomId(1), 0, 50).unwrap();
    assert_eq!(s.params(DomId(1)), Some((65535, 50)));
    s.put_info(DomId(1), 300, u16::MAX).unwrap();
    assert_eq!(s.params(DomId(1)), Some((300, 50)));
    assert_eq!(s.put_info(DomId(1), 300, 1000), Err(Errno::EINVAL));
    assert_eq!(s.put_info(DomId(8), 300, 0), Err(Errno::ESRCH));
}

#[test]
fn yield_lets_another_run() {
    let mut s = Scheduler::new(1);
    for d in 1..=2 {
        s.add_vcpu(vid(d, 0), DEFAULT_WEIGHT, 0).unwrap();
        s.wake(vid(d, 0), 0).unwrap();
    }
    let first = s.pick(0).unwrap().id;
    // Right away (no time charged yet), the yielder is still the least advanced.
    s.yield_now(first, 0);
    let second = s.pick(0).unwrap().id;
    assert_ne!(first, second);
    // Alone, a yielder keeps the CPU.
    s.block(first, 1).unwrap();
    s.yield_now(second, 2);
    assert_eq!(s.pick(2).unwrap().id, second);
    // A vCPU that isn't running cannot yield.
    s.wake(first, 3).unwrap();
    s.yield_now(first, 3);
    s.check_invariants();
}

#[test]
fn yield_within_a_domain_picks_a_sibling() {
    let mut s = Scheduler::new(1);
    for v in 0..2 {
        s.add_vcpu(vid(1, v), DEFAULT_WEIGHT, 0).unwrap();
        s.wake(vid(1, v), 0).unwrap();
    }
    let a = s.pick(0).unwrap().id;
    s.yield_now(a, 0);
    let b = s.pick(0).unwrap().id;
    assert_ne!(a, b);
    assert_eq!(a.0, b.0);
}

/// CPU shares of always-runnable domains follow their weights within 5 %, whatever
/// the number of vCPUs each domain has.
#[test]
fn shares_follow_weights() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for trial in 0..25 {
        let mut s = Scheduler::new(1);
        let ndoms = rng.range(2, 5) as u16;
        let mut weights = BTreeMap::new();
        for d in 1..=ndoms {
            let w = rng.range(100, 1000) as u16;
            weights.insert(DomId(d), w);
            for v in 0..rng.range(1, 3) as u32 {
                s.add_vcpu(vid(d, v), w, 0).unwrap();
                s.wake(vid(d, v), 0).unwrap();
            }
        }
        let mut used: BTreeMap<Vid, u64> = BTreeMap::new();
        let mut now = 0;
        let total = 30_000_000_000;
        simulate(&mut s, &mut now, total, |id, a, b| {
            *used.entry(id).or_default() += b - a;
        });
        let wsum: u64 = weights.values().map(|&w| u64::from(w)).sum();
        for (&d, &w) in &weights {
            let got: u64 = used
                .iter()
                .filter(|(id, _)| id.0 == d)
                .map(|(_, &t)| t)
                .sum();
            let want = total as f64 * f64::from(w) / wsum as f64;
            let err = (got as f64 - want).abs() / want;
            assert!(
                err < 0.05,
                "trial {trial}: {d:?} weight {w}: {got} vs {want:.0} ({err:.3})"
            );
        }
        // The vCPUs of one domain share its time equally too.
        for &d in weights.keys() {
            let mine: Vec<u64> = used
                .iter()
                .filter(|(id, _)| id.0 == d)
                .map(|(_, &t)| t)
                .collect();
            let max = *mine.iter().max().unwrap();
            let min = *mine.iter().min().unwrap();
            assert!(
                max - min <= 2 * SLICE_NS,
                "trial {trial}: {d:?} vCPUs {mine:?}"
            );
        }
    }
}

/// Within every cap window a capped domain uses at most its cap (plus one slice of
/// slack, which the budget clamp makes unnecessary in practice); uncapped ones take the
/// rest.
#[test]
fn caps_hold() {
    let mut rng = Rng(0xcafe_f00d_0000_0042);
    for trial in 0..25 {
        let mut s = Scheduler::new(1);
        let ndoms = rng.range(1, 4) as u16;
        let mut caps = BTreeMap::new();
        for d in 1..=ndoms {
            let cap = if rng.range(0, 2) == 0 {
                0
            } else {
                rng.range(1, 90) as u16
            };
            caps.insert(DomId(d), cap);
            let w = rng.range(1, 2000) as u16;
            for v in 0..rng.range(1, 2) as u32 {
                s.add_vcpu(vid(d, v), w, cap).unwrap();
                s.wake(vid(d, v), 0).unwrap();
            }
        }
        let windows = 100u64;
        let total = windows * CAP_PERIOD_NS;
        // Per (domain, window) usage, splitting runs at window boundaries.
        let mut per_window: BTreeMap<(DomId, u64), u64> = BTreeMap::new();
        let mut busy = 0;
        let mut now = 0;
        simulate(&mut s, &mut now, total, |id, a, b| {
            busy += b - a;
            let mut t = a;
            while t < b {
                let w = t / CAP_PERIOD_NS;
                let end = b.min((w + 1) * CAP_PERIOD_NS);
                *per_window.entry((id.0, w)).or_default() += end - t;
                t = end;
            }
        });
        for (&(d, w), &ns) in &per_window {
            let cap = u64::from(caps[&d]);
            if cap != 0 {
                let budget = cap * CAP_PERIOD_NS / 100;
                assert!(
                    ns <= budget + SLICE_NS,
                    "trial {trial}: {d:?} window {w}: {ns} > {budget}"
                );
                assert!(
                    ns <= budget,
                    "trial {trial}: {d:?} window {w}: {ns} > {budget} (clamp)"
                );
            }
        }
        // Work conservation: an uncapped domain keeps the CPU busy; capped ones alone
        // get (about) their budget in every window.
        let capped_sum: u64 = caps.values().map(|&c| u64::from(c)).sum();
        if caps.values().any(|&c| c == 0) {
            assert_eq!(
                busy, total,
                "trial {trial}: idle time with an uncapped domain"
            );
        } else {
            let want = total * capped_sum.min(100) / 100;
            assert!(
                busy + windows * 1_000 >= want,
                "trial {trial}: {busy} < {want}"
            );
        }
    }
}

#[test]
fn cap_changes_take_effect() {
    let mut s = Scheduler::new(1);
    s.add_vcpu(vid(1, 0), DEFAULT_WEIGHT, 0).unwrap();
    s.wake(vid(1, 0), 0).unwrap();
    s.pick(0).unwrap();
    // 20 ms used of a 30 ms window; a 50 % cap (15 ms) parks the domain at once.
    s.pick(20_000_000).unwrap();
    s.set_params(DomId(1), DEFAULT_WEIGHT, 50).unwrap();
    assert_eq!(s.pick(20_000_000), None);
    assert_eq!(s.next_event(20_000_000), Some(CAP_PERIOD_NS));
    // Lifting the cap unparks it.
    s.set_params(DomId(1), DEFAULT_WEIGHT, 0).unwrap();
    assert_eq!(s.pick(21_000_000).unwrap().id, vid(1, 0));
    s.check_invariants();
    // With the cap back, the next window starts with a full budget, and the slice
    // stops where the budget ends.
    s.set_params(DomId(1), DEFAULT_WEIGHT, 10).unwrap();
    assert_eq!(s.pick(21_000_000), None);
    let p = s.pick(CAP_PERIOD_NS).unwrap();
    assert_eq!(p.slice_end_ns, CAP_PERIOD_NS + 3_000_000);
}

/// A domain that slept does not get to monopolise the CPU on waking.
#[test]
fn sleepers_do_not_bank_time() {
    let mut s = Scheduler::new(1);
    for d in 1..=2 {
        s.add_vcpu(vid(d, 0), DEFAULT_WEIGHT, 0).unwrap();
        s.wake(vid(d, 0), 0).unwrap();
    }
    s.block(vid(2, 0), 0).unwrap();
    let mut now = 0;
    simulate(&mut s, &mut now, 2_000_000_000, |id, _, _| {
        assert_eq!(id, vid(1, 0))
    });
    assert!(s.wake(vid(2, 0), now).unwrap());
    let mut used = [0u64; 3];
    let start = now;
    simulate(&mut s, &mut now, start + 200_000_000, |id, a, b| {
        used[usize::from(id.0.0)] += b - a;
    });
    // Equal weights: about 100 ms each; the waker's head start is at most WAKE_CREDIT.
    assert!(
        used[1] >= 100_000_000 - WAKE_CREDIT_NS - SLICE_NS,
        "{used:?}"
    );
    assert!(used[2] >= 100_000_000 - SLICE_NS, "{used:?}");
}

#[test]
fn wake_preempts_only_when_well_behind() {
    let mut s = Scheduler::new(1);
    for d in 1..=2 {
        s.add_vcpu(vid(d, 0), DEFAULT_WEIGHT, 0).unwrap();
    }
    s.wake(vid(1, 0), 0).unwrap();
    s.pick(0).unwrap();
    // Domain 2 arrives at the floor with a head start: it preempts.
    assert_eq!(s.wake(vid(2, 0), 50_000_000), Ok(true));
    assert_eq!(s.pick(50_000_000).unwrap().id, vid(2, 0));
    // It used up most of its head start (WAKE_CREDIT_NS) before blocking...
    s.block(vid(2, 0), 59_000_000).unwrap();
    assert_eq!(s.pick(59_000_000).unwrap().id, vid(1, 0));
    // ...so woken again soon after, it is not far enough behind to preempt.
    assert_eq!(s.wake(vid(2, 0), 59_000_001), Ok(false));
    // Waking a runnable vCPU is a no-op.
    assert_eq!(s.wake(vid(2, 0), 59_000_002), Ok(false));
    // A sibling of the running vCPU never preempts it.
    s.add_vcpu(vid(1, 1), DEFAULT_WEIGHT, 0).unwrap();
    assert_eq!(s.wake(vid(1, 1), 59_000_003), Ok(false));
    s.check_invariants();
}

#[test]
fn remove_domain_frees_the_cpu() {
    let mut s = Scheduler::new(1);
    for d in 1..=2 {
        s.add_vcpu(vid(d, 0), DEFAULT_WEIGHT, 10).unwrap();
        s.wake(vid(d, 0), 0).unwrap();
    }
    let p = s.pick(0).unwrap();
    s.remove_domain(p.id.0);
    assert_eq!(s.current(), None);
    assert_eq!(s.state(p.id), None);
    s.check_invariants();
    let q = s.pick(1).unwrap();
    assert_ne!(q.id.0, p.id.0);
    s.remove_domain(q.id.0);
    assert_eq!(s.pick(2), None);
    s.check_invariants();
}

/// Huge virtual times (weight 1, long runs) are rebased without losing fairness.
#[test]
fn virtual_time_rebases() {
    let mut s = Scheduler::new(1);
    for d in 1..=2 {
        s.add_vcpu(vid(d, 0), 1, 0).unwrap();
        s.wake(vid(d, 0), 0).unwrap();
    }
    let mut now = 0u64;
    let mut used = [0u64; 3];
    // Each step runs 2^52 ns: 2^60 virtual ns at weight 1, so 2^62 is passed quickly.
    for _ in 0..64 {
        let p = s.pick(now).unwrap();
        now += 1 << 52;
        used[usize::from(p.id.0.0)] += 1;
        s.check_invariants();
    }
    assert_eq!(used[1], 32, "{used:?}");
    assert_eq!(used[2], 32, "{used:?}");
}

/// Random wake/block/yield/pick/parameter sequences keep every invariant: each
/// runnable vCPU queued exactly once, blocked ones never picked.
#[test]
fn random_operations_keep_invariants() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut s = Scheduler::new(2);
    let mut now = 0u64;
    let ids: Vec<Vid> = (1..=4)
        .flat_map(|d| (0..3).map(move |v| vid(d, v)))
        .collect();
    for &id in &ids {
        s.add_vcpu(id, DEFAULT_WEIGHT, 0).unwrap();
    }
    for step in 0..20_000 {
        now += rng.range(0, 3_000_000);
        let id = ids[rng.range(0, ids.len() as u64 - 1) as usize];
        match rng.range(0, 9) {
            0..=2 => {
                let _ = s.wake(id, now);
            }
            3 | 4 => {
                let _ = s.block(id, now);
            }
            5 => {
                if let Some(c) = s.current() {
                    s.yield_now(c, now);
                }
            }
            6 | 7 => {
                let before: Vec<Option<RunState>> = ids.iter().map(|&i| s.state(i)).collect();
                if let Some(p) = s.pick(now) {
                    let k = ids.iter().position(|&i| i == p.id).unwrap();
                    assert_ne!(
                        before[k],
                        Some(RunState::Blocked),
                        "step {step}: picked a blocked vCPU"
                    );
                    assert!(p.slice_end_ns > now);
                } else {
                    assert!(ids.iter().all(|&i| s.state(i) != Some(RunState::Running)));
                }
            }
            8 => {
                let w = rng.range(1, 65535) as u16;
                let c = rng.range(0, 200) as u16;
                s.set_params(id.0, w, c).unwrap();
            }
            _ => {
                s.remove_domain(id.0);
                assert!(s.state(id).is_none());
                for v in 0..3 {
                    s.add_vcpu(vid(id.0.0, v), DEFAULT_WEIGHT, 0).unwrap();
                }
            }
        }
        s.check_invariants();
    }
}

/// The scan-based policy makes exactly the decisions of the tree-based one it replaced
/// (`policy_ref.rs`), on random sequences of every operation: same picks, slices, wake
/// verdicts, states and next events.
#[test]
fn same_decisions_as_the_tree_policy() {
    use super::policy_ref;
    for seed in [1u64, 0xfeed_beef, 0x0123_4567_89ab_cdef] {
        let mut rng = Rng(seed);
        let mut new = Scheduler::new(2);
        let mut old = policy_ref::Scheduler::new(2);
        let mut now = 0u64;
        let ids: Vec<Vid> = (1..=4)
            .flat_map(|d| (0..3).map(move |v| vid(d, v)))
            .collect();
        for &id in &ids {
            let (w, c) = (rng.range(1, 1000) as u16, rng.range(0, 150) as u16);
            assert_eq!(new.add_vcpu(id, w, c), old.add_vcpu(id, w, c));
        }
        let conv = |p: Option<policy_ref::Pick>| {
            p.map(|p| Pick {
                id: p.id,
                slice_end_ns: p.slice_end_ns,
            })
        };
        for step in 0..30_000 {
            // Mostly small steps (yield storms), sometimes long runs (caps), rarely
            // huge ones (virtual times pass the rebase point).
            now += match rng.range(0, 99) {
                0 => rng.range(0, 1 << 56),
                1..=10 => rng.range(0, 40_000_000),
                _ => rng.range(0, 20_000),
            };
            let id = ids[rng.range(0, ids.len() as u64 - 1) as usize];
            match rng.range(0, 11) {
                0..=2 => assert_eq!(new.wake(id, now), old.wake(id, now), "step {step}"),
                3 => assert_eq!(new.block(id, now), old.block(id, now), "step {step}"),
                4 | 5 => {
                    if let Some(c) = new.current() {
                        new.yield_now(c, now);
                        old.yield_now(c, now);
                    }
                }
                6 => {
                    // A yield with a possible shortcut: the same as yield_now + pick.
                    if let Some(c) = new.current() {
                        old.yield_now(c, now);
                        match new.yield_in_place(c, now) {
                            Some(p) => {
                                assert_eq!(Some(p), conv(old.pick(now)), "step {step}");
                                assert_eq!(p.id, c);
                            }
                            None => assert_eq!(new.pick(now), conv(old.pick(now))),
                        }
                    }
                }
                7 | 8 => assert_eq!(new.pick(now), conv(old.pick(now)), "step {step}"),
                9 => {
                    let w = rng.range(1, 65535) as u16;
                    let c = rng.range(0, 200) as u16;
                    assert_eq!(new.set_params(id.0, w, c), old.set_params(id.0, w, c));
                }
                _ => {
                    new.remove_domain(id.0);
                    old.remove_domain(id.0);
                    for v in 0..3 {
                        let id = vid(id.0.0, v);
                        assert_eq!(
                            new.add_vcpu(id, DEFAULT_WEIGHT, 0),
                            old.add_vcpu(id, DEFAULT_WEIGHT, 0)
                        );
                    }
                }
            }
            assert_eq!(new.current(), old.current(), "step {step}");
            assert_eq!(new.next_event(now), old.next_event(now), "step {step}");
            for &i in &ids {
                let map = |s: Option<policy_ref::RunState>| {
                    s.map(|s| match s {
                        policy_ref::RunState::Blocked => RunState::Blocked,
                        policy_ref::RunState::Runnable => RunState::Runnable,
                        policy_ref::RunState::Running => RunState::Running,
                    })
                };
                assert_eq!(new.state(i), map(old.state(i)), "step {step} {i:?}");
            }
            new.check_invariants();
        }
    }
}

/// A yield with nobody else runnable keeps the yielder on the CPU with a fresh slice;
/// with a runnable sibling or another domain it defers to `pick`, which switches.
#[test]
fn yield_in_place_only_when_alone() {
    let mut s = Scheduler::new(1);
    s.add_vcpu(vid(1, 0), DEFAULT_WEIGHT, 0).unwrap();
    s.add_vcpu(vid(2, 0), DEFAULT_WEIGHT, 0).unwrap();
    s.wake(vid(1, 0), 0).unwrap();
    assert_eq!(s.pick(0).unwrap().id, vid(1, 0));
    let p = s.yield_in_place(vid(1, 0), 1_000).unwrap();
    assert_eq!(p.id, vid(1, 0));
    assert_eq!(p.slice_end_ns, 1_000 + SLICE_NS);
    assert_eq!(s.state(vid(1, 0)), Some(RunState::Running));
    // A vCPU that is not running gains nothing.
    assert_eq!(s.yield_in_place(vid(2, 0), 2_000), None);
    s.wake(vid(2, 0), 3_000).unwrap();
    assert_eq!(s.yield_in_place(vid(1, 0), 4_000), None);
    assert_eq!(s.pick(4_000).unwrap().id, vid(2, 0));
    // A capped domain whose budget is gone is not kept running by its yield.
    let mut s = Scheduler::new(1);
    s.add_vcpu(vid(1, 0), DEFAULT_WEIGHT, 10).unwrap();
    s.wake(vid(1, 0), 0).unwrap();
    s.pick(0).unwrap();
    assert_eq!(s.yield_in_place(vid(1, 0), CAP_PERIOD_NS / 5), None);
    assert_eq!(s.pick(CAP_PERIOD_NS / 5), None);
    s.check_invariants();
}
