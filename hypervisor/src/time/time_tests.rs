//! Host tests of the guest timers, the pvclock/wallclock writers and the RTC decoding.

extern crate std;

use super::pvclock::*;
use super::rtc::*;
use super::timers::*;
use super::{Clock, TimeScale};
use crate::platform::{BadMaddr, MachineMemory};
use crate::sched::policy::Vid;
use crate::testutil::FakeMemory;
use crate::testutil::Rng;
use core::cell::RefCell;
use core::mem::offset_of;
use std::vec::Vec;
use xen_pv_abi::shared_info::{SharedInfo, VcpuTimeInfo};
use xen_pv_abi::{DomId, Errno, Mfn, VcpuId};
use zerocopy::FromBytes;

const MS: u64 = 1_000_000;

fn vid(d: u16, v: u32) -> Vid {
    (DomId(d), VcpuId(v))
}

fn virq(id: Vid) -> Expired {
    Expired::VirqTimer(id.0, id.1)
}

// ---- timers ----

#[test]
fn set_timer_op_rules() {
    let mut q = TimerQueue::new();
    let a = vid(1, 0);
    q.add_vcpu(a).unwrap();
    assert_eq!(q.add_vcpu(a), Err(Errno::EEXIST));
    let now = 5_000 * MS;
    q.set_timer_op(a, now + 7 * MS, now).unwrap();
    assert_eq!(q.deadline(a, TimerKind::SingleShot), Some(now + 7 * MS));
    // 0 cancels.
    q.set_timer_op(a, 0, now).unwrap();
    assert_eq!(q.deadline(a, TimerKind::SingleShot), None);
    assert!(q.is_empty());
    // Negative (as s64) and >= 2^50 ns ahead: now + 100 ms.
    q.set_timer_op(a, (-5i64) as u64, now).unwrap();
    assert_eq!(q.deadline(a, TimerKind::SingleShot), Some(now + 100 * MS));
    q.set_timer_op(a, now + (1 << 50), now).unwrap();
    assert_eq!(q.deadline(a, TimerKind::SingleShot), Some(now + 100 * MS));
    q.set_timer_op(a, now + (1 << 50) - 1, now).unwrap();
    assert_eq!(
        q.deadline(a, TimerKind::SingleShot),
        Some(now + (1 << 50) - 1)
    );
    // Re-programming replaces: still one entry.
    assert_eq!(q.len(), 1);
    // A past deadline fires at the next expiry.
    q.set_timer_op(a, now - 1, now).unwrap();
    assert_eq!(q.expire(now).collect::<Vec<_>>(), [virq(a)]);
    assert_eq!(q.deadline(a, TimerKind::SingleShot), None);
    assert_eq!(q.set_timer_op(vid(9, 9), 1, now), Err(Errno::ENOENT));
}

#[test]
fn singleshot_future_flag() {
    let mut q = TimerQueue::new();
    let a = vid(1, 0);
    q.add_vcpu(a).unwrap();
    let now = 1_000 * MS;
    // Xen 4.17.7 ignores VCPU_SSHOTTMR_future: a past deadline is armed and fires at
    // once (the conformance suite's vcpu.singleshot_past_future_flag).
    q.set_singleshot(a, now - 1, VCPU_SSHOTTMR_FUTURE, now)
        .unwrap();
    assert_eq!(q.deadline(a, TimerKind::SingleShot), Some(now - 1));
    assert_eq!(q.expire(now).collect::<Vec<_>>(), [virq(a)]);
    // Exactly now is not in the past.
    q.set_singleshot(a, now, VCPU_SSHOTTMR_FUTURE, now).unwrap();
    assert_eq!(q.deadline(a, TimerKind::SingleShot), Some(now));
    // Without the flag a past deadline is accepted and fires at once.
    q.set_singleshot(a, now - 1, 0, now).unwrap();
    assert_eq!(q.expire(now).collect::<Vec<_>>(), [virq(a)]);
    // Negative as Xen's signed time: in the past, fires at once (even with the flag:
    // Xen compares unsigned).
    q.set_singleshot(a, u64::MAX, VCPU_SSHOTTMR_FUTURE | 0x8000, now)
        .unwrap();
    assert_eq!(q.earliest(), Some(0));
    // set_timer_op reprograms the same timer; stop cancels it.
    q.set_timer_op(a, now + MS, now).unwrap();
    assert_eq!(q.len(), 1);
    q.stop_singleshot(a).unwrap();
    assert!(q.is_empty());
    assert_eq!(q.set_singleshot(vid(2, 0), now, 0, now), Err(Errno::ENOENT));
}

#[test]
fn periodic_timer_rules() {
    let mut q = TimerQueue::new();
    let a = vid(1, 0);
    q.add_vcpu(a).unwrap();
    assert_eq!(q.period(a), Some(PV_DEFAULT_PERIOD_NS));
    // Not armed until the vCPU runs.
    assert!(q.is_empty());
    assert_eq!(q.switch_in(a, 0), None);
    assert_eq!(q.earliest(), Some(10 * MS));
    assert_eq!(q.expire(9 * MS).count(), 0);
    assert_eq!(q.expire(10 * MS).collect::<Vec<_>>(), [virq(a)]);
    assert_eq!(q.earliest(), Some(20 * MS));
    // Missed ticks are not queued: one event, next a period after now.
    assert_eq!(q.expire(55 * MS).collect::<Vec<_>>(), [virq(a)]);
    assert_eq!(q.earliest(), Some(65 * MS));
    // Descheduled: the periodic timer pauses...
    q.switch_out(a);
    assert!(q.is_empty());
    // ...and catching up on switch-in is one event, due now.
    assert_eq!(q.switch_in(a, 100 * MS), Some(virq(a)));
    assert_eq!(q.earliest(), Some(110 * MS));
    q.switch_out(a);
    assert_eq!(q.switch_in(a, 105 * MS), None);
    assert_eq!(q.earliest(), Some(110 * MS));
    // Bounds: 1 ms ..= 2^62 - 1 ns.
    for bad in [0, MS - 1, PERIOD_MAX_NS + 1, u64::MAX] {
        assert_eq!(q.set_periodic(a, bad, 0), Err(Errno::EINVAL), "{bad}");
    }
    assert_eq!(q.period(a), Some(PV_DEFAULT_PERIOD_NS));
    q.set_periodic(a, PERIOD_MAX_NS, 200 * MS).unwrap();
    assert_eq!(q.earliest(), Some(200 * MS + PERIOD_MAX_NS));
    q.set_periodic(a, MS, 200 * MS).unwrap();
    assert_eq!(q.earliest(), Some(201 * MS));
    assert_eq!(q.len(), 1);
    // Stop sets 0 and disarms; switching in then arms nothing.
    q.stop_periodic(a, 300 * MS).unwrap();
    assert_eq!(q.period(a), Some(0));
    assert!(q.is_empty());
    q.switch_out(a);
    assert_eq!(q.switch_in(a, 400 * MS), None);
    assert!(q.is_empty());
    // Set while not running: counts from now, armed at switch-in.
    q.switch_out(a);
    q.set_periodic(a, 5 * MS, 500 * MS).unwrap();
    assert!(q.is_empty());
    assert_eq!(q.switch_in(a, 503 * MS), None);
    assert_eq!(q.earliest(), Some(505 * MS));
}

#[test]
fn poll_and_slice_deadlines() {
    let mut q = TimerQueue::new();
    let (a, b) = (vid(1, 0), vid(2, 3));
    q.add_vcpu(a).unwrap();
    q.add_vcpu(b).unwrap();
    q.set_poll_timeout(a, 30 * MS).unwrap();
    q.set_poll_timeout(b, 20 * MS).unwrap();
    q.set_slice_end(Some(25 * MS));
    q.set_slice_end(Some(10 * MS));
    assert_eq!(q.len(), 3);
    q.cancel_poll(b).unwrap();
    // A poll without timeout arms nothing.
    q.set_poll_timeout(b, 0).unwrap();
    assert_eq!(
        q.expire(40 * MS).collect::<Vec<_>>(),
        [Expired::SliceEnd, Expired::PollTimeout(a.0, a.1)]
    );
    assert!(q.is_empty());
    q.set_slice_end(Some(50 * MS));
    q.set_slice_end(None);
    assert!(q.is_empty());
    assert_eq!(q.cancel_poll(vid(3, 0)), Err(Errno::ENOENT));
}

#[test]
fn removing_vcpus_drops_their_timers() {
    let mut q = TimerQueue::new();
    for v in 0..3 {
        q.add_vcpu(vid(1, v)).unwrap();
        q.add_vcpu(vid(2, v)).unwrap();
        q.set_timer_op(vid(1, v), 5 * MS, 0).unwrap();
        q.set_timer_op(vid(2, v), 6 * MS, 0).unwrap();
        q.switch_in(vid(2, v), 0);
    }
    assert_eq!(q.len(), 9);
    q.remove_domain(DomId(2));
    assert_eq!(q.len(), 3);
    q.remove_vcpu(vid(1, 1));
    assert_eq!(q.len(), 2);
    assert!(
        q.expire(u64::MAX)
            .all(|e| matches!(e, Expired::VirqTimer(DomId(1), _)))
    );
    assert_eq!(q.set_timer_op(vid(2, 0), 1, 0), Err(Errno::ENOENT));
}

/// A saturated clock cannot make a periodic timer fire forever within one expiry.
#[test]
fn expiry_is_bounded_at_the_end_of_time() {
    let mut q = TimerQueue::new();
    let a = vid(1, 0);
    q.add_vcpu(a).unwrap();
    q.switch_in(a, u64::MAX - MS);
    assert_eq!(q.expire(u64::MAX).count(), 1);
}

/// Random programming: expiries come out in deadline order, all due, none left due;
/// the queue never holds more than TIMERS_PER_VCPU per vCPU plus the slice end.
#[test]
fn random_timers_fire_in_order_within_bounds() {
    let mut rng = Rng(0x7117_e125_0000_0001);
    let mut q = TimerQueue::new();
    let ids: Vec<Vid> = (1..=3)
        .flat_map(|d| (0..3).map(move |v| vid(d, v)))
        .collect();
    for &id in &ids {
        q.add_vcpu(id).unwrap();
    }
    let mut now = 0u64;
    for _ in 0..20_000 {
        let id = ids[rng.range(0, ids.len() as u64 - 1) as usize];
        let when = now + rng.range(0, 50 * MS);
        match rng.range(0, 11) {
            0 => q.set_timer_op(id, rng.next(), now).unwrap(),
            1 | 2 => q.set_timer_op(id, when, now).unwrap(),
            3 => {
                let _ = q.set_singleshot(
                    id,
                    when.saturating_sub(10 * MS),
                    rng.range(0, 1) as u32,
                    now,
                );
            }
            4 => q.stop_singleshot(id).unwrap(),
            5 => {
                let _ = q.set_periodic(id, rng.range(0, 30 * MS), now);
            }
            6 => {
                let _ = q.switch_in(id, now);
            }
            7 => q.switch_out(id),
            8 => q.set_poll_timeout(id, when).unwrap(),
            9 => q.set_slice_end(Some(when)),
            10 => q.cancel_poll(id).unwrap(),
            _ => {
                now += rng.range(0, 20 * MS);
                // Each entry's deadline is in the queue key; expiry must come out in
                // that order, so rebuild the expected deadlines first.
                let due: Vec<u64> = {
                    let mut d: Vec<u64> = ids
                        .iter()
                        .flat_map(|&i| {
                            [TimerKind::SingleShot, TimerKind::Periodic, TimerKind::Poll]
                                .into_iter()
                                .map(move |k| (i, k))
                        })
                        .filter_map(|(i, k)| q.deadline(i, k))
                        .filter(|&t| t <= now)
                        .collect();
                    d.sort_unstable();
                    d
                };
                let fired: Vec<Expired> = q.expire(now).collect();
                let vcpu_fired = fired
                    .iter()
                    .filter(|e| !matches!(e, Expired::SliceEnd))
                    .count();
                assert_eq!(vcpu_fired, due.len());
                assert!(q.earliest().is_none_or(|t| t > now));
            }
        }
        assert!(q.len() <= TIMERS_PER_VCPU * ids.len() + 1);
        // A stopped periodic timer is never armed.
        for &id in &ids {
            if q.period(id) == Some(0) {
                assert_eq!(q.deadline(id, TimerKind::Periodic), None);
            }
        }
    }
}

/// Expiries come out sorted by deadline (checked with distinct deadlines, recorded
/// at arming time).
#[test]
fn expiry_order_is_deadline_order() {
    let mut rng = Rng(42);
    let mut q = TimerQueue::new();
    let mut armed: Vec<(u64, Expired)> = Vec::new();
    for d in 1..=20u16 {
        let id = vid(d, 0);
        q.add_vcpu(id).unwrap();
        let t1 = rng.range(1, 1_000_000) * 4;
        let t2 = rng.range(1, 1_000_000) * 4 + 1;
        q.set_timer_op(id, t1, 0).unwrap();
        q.set_poll_timeout(id, t2).unwrap();
        armed.push((t1, virq(id)));
        armed.push((t2, Expired::PollTimeout(id.0, id.1)));
    }
    q.set_slice_end(Some(2_000_000));
    armed.push((2_000_000, Expired::SliceEnd));
    armed.sort_by_key(|&(t, _)| t);
    let cut = 2_500_000;
    let want: Vec<Expired> = armed
        .iter()
        .filter(|&&(t, _)| t <= cut)
        .map(|&(_, e)| e)
        .collect();
    let got: Vec<Expired> = q.expire(cut).collect();
    assert_eq!(got, want);
    let rest: Vec<Expired> = q.expire(u64::MAX).collect();
    assert_eq!(rest.len() + got.len(), armed.len());
}

// ---- pvclock ----

/// Memory that records every write (address, length).
struct Recorder {
    mem: FakeMemory,
    writes: RefCell<Vec<(u64, usize, Vec<u8>)>>,
}

impl MachineMemory for Recorder {
    fn read(&self, maddr: u64, buf: &mut [u8]) -> Result<(), BadMaddr> {
        self.mem.read(maddr, buf)
    }
    fn write(&self, maddr: u64, data: &[u8]) -> Result<(), BadMaddr> {
        self.writes
            .borrow_mut()
            .push((maddr, data.len(), data.to_vec()));
        self.mem.write(maddr, data)
    }
    fn fill(&self, maddr: u64, byte: u8, len: usize) -> Result<(), BadMaddr> {
        self.mem.fill(maddr, byte, len)
    }
}

fn read_time(mem: &impl MachineMemory, maddr: u64) -> VcpuTimeInfo {
    let mut b = [0u8; 32];
    mem.read(maddr, &mut b).unwrap();
    VcpuTimeInfo::read_from_bytes(&b).unwrap()
}

#[test]
fn vcpu_time_slots() {
    let si = Mfn(3);
    assert_eq!(vcpu_time_maddr(si, VcpuId(0)), Some(3 * 4096 + 32));
    assert_eq!(
        vcpu_time_maddr(si, VcpuId(31)),
        Some(3 * 4096 + 31 * 64 + 32)
    );
    assert_eq!(vcpu_time_maddr(si, VcpuId(32)), None);
    assert_eq!(vcpu_time_maddr(si, VcpuId(u32::MAX)), None);
}

#[test]
fn vcpu_time_version_protocol() {
    let mem = Recorder {
        mem: FakeMemory::new(4 * 4096),
        writes: RefCell::new(Vec::new()),
    };
    let si = Mfn(1);
    let at = vcpu_time_maddr(si, VcpuId(2)).unwrap();
    let clock = Clock::new(1_000, 2_000_000_000);
    let rec = time_record(&clock, 3_000, 1);
    assert_eq!(rec.system_time, 1_000);
    assert_eq!(rec.tsc_to_system_mul, clock.scale.mul);
    assert!(write_shared_vcpu_time(&mem, si, VcpuId(2), &rec, false).unwrap());
    let got = read_time(&mem, at);
    assert_eq!(got.version, 2);
    assert_eq!(VcpuTimeInfo { version: 0, ..got }, rec);
    // Order: odd version first, then the fields, then the even version.
    {
        let w = mem.writes.borrow();
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].0, w[0].1), (at, 4));
        assert_eq!(u32::from_le_bytes(w[0].2[..].try_into().unwrap()), 1);
        assert_eq!((w[1].0, w[1].1), (at + 4, 28));
        assert_eq!((w[2].0, w[2].1), (at, 4));
        assert_eq!(u32::from_le_bytes(w[2].2[..].try_into().unwrap()), 2);
    }
    // Unchanged: nothing written unless forced.
    mem.writes.borrow_mut().clear();
    assert!(!write_vcpu_time(&mem, at, &rec, false).unwrap());
    assert!(mem.writes.borrow().is_empty());
    assert!(write_vcpu_time(&mem, at, &rec, true).unwrap());
    assert_eq!(read_time(&mem, at).version, 4);
    // A guest that scribbled an odd version still ends up even and larger.
    mem.write(at, &7u32.to_le_bytes()).unwrap();
    let rec2 = time_record(&clock, 9_000, 0);
    assert!(write_vcpu_time(&mem, at, &rec2, false).unwrap());
    let got = read_time(&mem, at);
    assert_eq!(got.version, 10);
    assert_eq!(got.system_time, 4_000);
    // Other vCPUs' slots are untouched.
    assert_eq!(
        read_time(&mem, vcpu_time_maddr(si, VcpuId(1)).unwrap()),
        VcpuTimeInfo::default()
    );
    assert!(!write_shared_vcpu_time(&mem, si, VcpuId(40), &rec, true).unwrap());
    // Outside memory: an error, not a panic.
    assert!(write_vcpu_time(&mem, u64::MAX - 8, &rec, true).is_err());
}

#[test]
fn version_helpers_wrap() {
    for v in [0u32, 1, 2, 7, u32::MAX - 1, u32::MAX] {
        let b = version_update_begin(v);
        assert_eq!(b % 2, 1, "{v}");
        assert_eq!(version_update_end(b) % 2, 0, "{v}");
    }
}

#[test]
fn guest_reads_consistent_time() {
    // What a guest computes from the published record agrees with the hypervisor.
    let mem = FakeMemory::new(2 * 4096);
    let clock = Clock::new(500, 2_600_000_000);
    let rec = time_record(&clock, 2_600_000_500, XEN_PVCLOCK_TSC_STABLE_BIT_FOR_TEST);
    write_shared_vcpu_time(&mem, Mfn(0), VcpuId(0), &rec, false).unwrap();
    let got = read_time(&mem, vcpu_time_maddr(Mfn(0), VcpuId(0)).unwrap());
    let tsc = 2_600_000_500 + 26_000;
    // Scaling in two pieces (stamp + delta) may round one ns lower, never more.
    let (guest, hv) = (got.system_time_at(tsc), clock.system_time_ns(tsc));
    assert!(guest <= hv && hv - guest <= 1, "{guest} vs {hv}");
    assert_eq!(got.tsc_shift, TimeScale::from_hz(2_600_000_000).shift);
}

const XEN_PVCLOCK_TSC_STABLE_BIT_FOR_TEST: u8 = xen_pv_abi::shared_info::XEN_PVCLOCK_TSC_STABLE_BIT;

#[test]
fn wallclock_protocol() {
    let mem = FakeMemory::new(2 * 4096);
    let si = Mfn(1);
    let off = |f: usize| si.maddr() + f as u64;
    let rd = |f: usize| {
        let mut b = [0u8; 4];
        mem.read(off(f), &mut b).unwrap();
        u32::from_le_bytes(b)
    };
    write_wallclock(&mem, si, 1_704_067_200, 250).unwrap();
    assert_eq!(rd(offset_of!(SharedInfo, wc_version)), 2);
    assert_eq!(rd(offset_of!(SharedInfo, wc_sec)), 1_704_067_200);
    assert_eq!(rd(offset_of!(SharedInfo, wc_nsec)), 250);
    assert_eq!(rd(offset_of!(SharedInfo, wc_sec_hi)), 0);
    // Past 2106: the high word; excess nanoseconds carry.
    write_wallclock(&mem, si, (5u64 << 32) | 9, 2_000_000_001).unwrap();
    assert_eq!(rd(offset_of!(SharedInfo, wc_version)), 4);
    assert_eq!(rd(offset_of!(SharedInfo, wc_sec)), 11);
    assert_eq!(rd(offset_of!(SharedInfo, wc_nsec)), 1);
    assert_eq!(rd(offset_of!(SharedInfo, wc_sec_hi)), 5);
    assert!(write_wallclock(&mem, Mfn(100), 0, 0).is_err());
}

#[test]
fn boot_wallclock_subtracts_the_read_time() {
    assert_eq!(boot_wallclock(1_704_067_200, 0), (1_704_067_200, 0));
    assert_eq!(
        boot_wallclock(1_704_067_200, 1_500_000_000),
        (1_704_067_198, 500_000_000)
    );
    assert_eq!(boot_wallclock(1, 5_000_000_000), (0, 0));
}

// ---- RTC ----

fn date(year: u16, month: u8, day: u8, hour: u8, min: u8, sec: u8) -> RtcTime {
    RtcTime {
        year,
        month,
        day,
        hour,
        min,
        sec,
    }
}

#[test]
fn known_dates() {
    assert_eq!(unix_seconds(&date(1970, 1, 1, 0, 0, 0)), Some(0));
    assert_eq!(
        unix_seconds(&date(2024, 1, 1, 0, 0, 0)),
        Some(1_704_067_200)
    );
    assert_eq!(unix_seconds(&date(2000, 2, 29, 0, 0, 0)), Some(951_782_400));
    assert_eq!(unix_seconds(&date(2000, 3, 1, 0, 0, 0)), Some(951_868_800));
    assert_eq!(unix_seconds(&date(2038, 1, 19, 3, 14, 8)), Some(1 << 31));
    assert_eq!(
        unix_seconds(&date(2024, 12, 31, 23, 59, 59)),
        Some(1_735_689_599)
    );
    // Invalid fields and dates.
    assert_eq!(unix_seconds(&date(1969, 12, 31, 23, 59, 59)), None);
    assert_eq!(unix_seconds(&date(2023, 2, 29, 0, 0, 0)), None);
    assert_eq!(unix_seconds(&date(2100, 2, 29, 0, 0, 0)), None);
    assert_eq!(unix_seconds(&date(2024, 4, 31, 0, 0, 0)), None);
    assert_eq!(unix_seconds(&date(2024, 13, 1, 0, 0, 0)), None);
    assert_eq!(unix_seconds(&date(2024, 0, 1, 0, 0, 0)), None);
    assert_eq!(unix_seconds(&date(2024, 1, 0, 0, 0, 0)), None);
    assert_eq!(unix_seconds(&date(2024, 1, 1, 24, 0, 0)), None);
    assert_eq!(unix_seconds(&date(2024, 1, 1, 0, 60, 0)), None);
    assert_eq!(unix_seconds(&date(2024, 1, 1, 0, 0, 60)), None);
    assert!(is_leap(2024) && is_leap(2000) && !is_leap(1900) && !is_leap(2023));
}

/// The closed form agrees with counting day by day.
#[test]
fn conversion_matches_day_counting() {
    let mut rng = Rng(0xdead_beef);
    for _ in 0..500 {
        let t = date(
            rng.range(1970, 2300) as u16,
            rng.range(1, 12) as u8,
            rng.range(1, 28) as u8,
            rng.range(0, 23) as u8,
            rng.range(0, 59) as u8,
            rng.range(0, 59) as u8,
        );
        let mut days = 0u64;
        for y in 1970..t.year {
            days += if is_leap(y) { 366 } else { 365 };
        }
        const LEN: [u64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        for m in 1..t.month {
            days += LEN[usize::from(m - 1)] + u64::from(m == 2 && is_leap(t.year));
        }
        days += u64::from(t.day) - 1;
        let want =
            days * 86_400 + u64::from(t.hour) * 3600 + u64::from(t.min) * 60 + u64::from(t.sec);
        assert_eq!(unix_seconds(&t), Some(want), "{t:?}");
    }
}

#[test]
fn rtc_decoding() {
    assert_eq!(bcd_to_bin(0x59), Some(59));
    assert_eq!(bcd_to_bin(0x00), Some(0));
    assert_eq!(bcd_to_bin(0x1a), None);
    assert_eq!(bcd_to_bin(0xa1), None);
    let raw = RtcRaw {
        sec: 0x30,
        min: 0x45,
        hour: 0x13,
        day: 0x29,
        month: 0x02,
        year: 0x24,
        century: None,
    };
    // BCD, 24-hour.
    assert_eq!(
        decode_rtc(&raw, STATUS_B_24H),
        Some(date(2024, 2, 29, 13, 45, 30))
    );
    // Binary, 24-hour, with a century register.
    let bin = RtcRaw {
        sec: 30,
        min: 45,
        hour: 13,
        day: 29,
        month: 2,
        year: 24,
        century: Some(20),
    };
    assert_eq!(
        decode_rtc(&bin, STATUS_B_24H | STATUS_B_BINARY),
        Some(date(2024, 2, 29, 13, 45, 30))
    );
    // Two-digit years without a century: 70..=99 are 19xx.
    let old = RtcRaw { year: 0x99, ..raw };
    assert_eq!(decode_rtc(&old, STATUS_B_24H).unwrap().year, 1999);
    // 12-hour BCD: 12 AM = 0 h, 12 PM = 12 h, 1 PM = 13 h.
    let h = |hour| decode_rtc(&RtcRaw { hour, ..raw }, 0).map(|t| t.hour);
    assert_eq!(h(0x12), Some(0));
    assert_eq!(h(0x80 | 0x12), Some(12));
    assert_eq!(h(0x80 | 0x01), Some(13));
    assert_eq!(h(0x11), Some(11));
    assert_eq!(h(0x00), None);
    assert_eq!(h(0x13), None);
    // PM bit in 24-hour mode, bad BCD: malformed.
    assert_eq!(
        decode_rtc(&RtcRaw { hour: 0x81, ..raw }, STATUS_B_24H),
        None
    );
    assert_eq!(decode_rtc(&RtcRaw { min: 0x6f, ..raw }, STATUS_B_24H), None);
    // End to end.
    let t = decode_rtc(
        &RtcRaw {
            sec: 0,
            min: 0,
            hour: 0,
            day: 1,
            month: 1,
            year: 0x24,
            century: Some(0x20),
        },
        STATUS_B_24H,
    )
    .unwrap();
    assert_eq!(unix_seconds(&t), Some(1_704_067_200));
}

/// Periodic timers live beside the tree: switching vCPUs in and out moves them without
/// allocating, and expiries still come in (deadline, key) order with the tree's entries
/// and the slice end (which goes first on a tie).
#[test]
fn periodic_entries_follow_switches_in_deadline_order() {
    let mut q = TimerQueue::new();
    let (a, b) = (vid(1, 0), vid(2, 0));
    q.add_vcpu(a).unwrap();
    q.add_vcpu(b).unwrap();
    let cap = q.periodic.capacity();
    assert!(cap >= 2);
    for i in 0..1000u64 {
        let (out, inn) = if i % 2 == 0 { (a, b) } else { (b, a) };
        q.switch_out(out);
        assert_eq!(q.switch_in(inn, i), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.periodic.capacity(), cap);
    }
    // a runs (periodic due at 10 ms); b has a single-shot at the same time; the slice
    // ends then too.
    assert_eq!(q.deadline(a, TimerKind::Periodic), Some(10 * MS));
    q.set_singleshot(b, 10 * MS, 0, 0).unwrap();
    q.set_slice_end(Some(10 * MS));
    assert_eq!(q.earliest(), Some(10 * MS));
    assert_eq!(
        q.expire(10 * MS).collect::<Vec<_>>(),
        [Expired::SliceEnd, virq(a), virq(b)]
    );
    // a's periodic timer re-armed a period later; removing its domain drops it.
    assert_eq!(q.earliest(), Some(20 * MS));
    q.remove_domain(DomId(1));
    assert!(q.is_empty());
}
