//! Xen system time from the TSC, and the pvclock scale published to guests.
//!
//! Xen system time is nanoseconds since the hypervisor booted. Guests compute it
//! themselves from the TSC with the `(mul, shift)` pair we publish in their
//! `vcpu_time_info`, so the hypervisor uses exactly the same formula
//! ([`xen_pv_abi::shared_info::scale_delta`]) to stay consistent with them.

pub(crate) mod hypercalls;
pub mod pvclock;
pub mod rtc;
#[cfg(test)]
mod time_tests;
pub mod timers;

use xen_pv_abi::shared_info::scale_delta;

const NS_PER_SEC: u64 = 1_000_000_000;

/// A pvclock scale: `ns = ((tsc_delta << shift) * mul) >> 32` (right shift if negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeScale {
    /// 0.32 fixed-point multiplier (always in [2^31, 2^32) for a sane frequency).
    pub mul: u32,
    /// Pre-shift of the TSC delta.
    pub shift: i8,
}

impl TimeScale {
    /// The scale for a TSC running at `tsc_hz` ticks per second (as Xen's
    /// `set_time_scale`): normalise the frequency into (1e9, 2e9] by shifting, so that
    /// ns-per-shifted-tick lies in [0.5, 1) and `mul` keeps 31–32 significant bits.
    ///
    /// A frequency of 0 (a broken calibration) is treated as 1 GHz rather than dividing
    /// by zero.
    pub fn from_hz(tsc_hz: u64) -> TimeScale {
        let mut hz = if tsc_hz == 0 { NS_PER_SEC } else { tsc_hz };
        let mut shift: i8 = 0;
        while hz > 2 * NS_PER_SEC {
            hz >>= 1;
            shift -= 1;
        }
        while hz <= NS_PER_SEC {
            hz <<= 1;
            shift += 1;
        }
        // hz in (1e9, 2e9], so 1e9 / hz in [0.5, 1) and the quotient fits in 32 bits.
        let mul = ((NS_PER_SEC as u128) << 32) / hz as u128;
        TimeScale {
            mul: mul as u32,
            shift,
        }
    }

    /// Nanoseconds for `tsc_delta` ticks.
    pub fn ticks_to_ns(self, tsc_delta: u64) -> u64 {
        scale_delta(tsc_delta, self.mul, self.shift)
    }
}

/// The hypervisor's clock: the boot TSC and the scale.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// TSC value at system time 0.
    pub boot_tsc: u64,
    /// Scale from TSC ticks to ns.
    pub scale: TimeScale,
}

impl Clock {
    /// A clock whose system time 0 is `boot_tsc`.
    pub fn new(boot_tsc: u64, tsc_hz: u64) -> Clock {
        Clock {
            boot_tsc,
            scale: TimeScale::from_hz(tsc_hz),
        }
    }

    /// The TSC value at system time `ns` (the inverse of [`Clock::system_time_ns`], to the
    /// nanosecond; saturating far in the future).
    pub fn tsc_at(&self, ns: u64) -> u64 {
        // ns = ((delta << shift) * mul) >> 32, so delta = ((ns << 32) / mul) >> shift.
        let mul = u128::from(self.scale.mul.max(1));
        let shifted = (u128::from(ns) << 32).div_ceil(mul);
        let delta = if self.scale.shift >= 0 {
            // Rounded up, so the deadline's TSC is never early.
            shifted.div_ceil(1u128 << self.scale.shift)
        } else {
            shifted << (-self.scale.shift)
        };
        let delta = u64::try_from(delta).unwrap_or(u64::MAX);
        self.boot_tsc.saturating_add(delta)
    }

    /// Xen system time (ns since boot) at TSC value `tsc`.
    pub fn system_time_ns(&self, tsc: u64) -> u64 {
        self.scale.ticks_to_ns(tsc.wrapping_sub(self.boot_tsc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// |measured - expected| / expected, in parts per million.
    fn error_ppm(measured: u64, expected: u64) -> f64 {
        (measured as f64 - expected as f64).abs() / expected as f64 * 1e6
    }

    #[test]
    fn one_second_of_ticks_is_one_second() {
        for hz in [
            1_000_000_000u64,
            2_600_000_000,
            3_000_000_000,
            100_000_000,
            1_234_567_891,
            4_000_000_001,
        ] {
            let s = TimeScale::from_hz(hz);
            assert!(s.mul >= 1 << 31, "{hz}: mul {:#x} lost precision", s.mul);
            for secs in [1u64, 60, 3600] {
                let ns = s.ticks_to_ns(hz * secs);
                assert!(
                    error_ppm(ns, secs * NS_PER_SEC) < 0.01,
                    "{hz} Hz, {secs} s: {ns} ns"
                );
            }
        }
    }

    #[test]
    fn known_scales() {
        // 1 GHz: one tick is one ns: shift 1, mul 2^31.
        assert_eq!(
            TimeScale::from_hz(1_000_000_000),
            TimeScale {
                mul: 0x8000_0000,
                shift: 1
            }
        );
        // 3 GHz: shifted right once to 1.5 GHz, 1/1.5 = 0.666..
        let s = TimeScale::from_hz(3_000_000_000);
        assert_eq!(s.shift, -1);
        assert_eq!(s.mul, 0xaaaa_aaaa);
        // 100 MHz: shifted left 4 times to 1.6 GHz.
        assert_eq!(TimeScale::from_hz(100_000_000).shift, 4);
        // 2.6 GHz: shifted right once.
        assert_eq!(TimeScale::from_hz(2_600_000_000).shift, -1);
    }

    #[test]
    fn tsc_at_inverts_system_time() {
        for hz in [1_000_000_000u64, 2_600_000_000, 100_000_000, 3_000_000_001] {
            let c = Clock::new(12_345, hz);
            for ns in [0u64, 1, 999, 10_000_000, 1 << 40] {
                let tsc = c.tsc_at(ns);
                // The deadline's TSC is never early: system time there is >= ns.
                assert!(c.system_time_ns(tsc) >= ns, "{hz} Hz {ns} ns");
                assert!(c.system_time_ns(tsc) <= ns + 1 + 1_000_000_000 / hz);
            }
        }
        assert_eq!(Clock::new(5, 1_000_000_000).tsc_at(u64::MAX), u64::MAX);
    }

    #[test]
    fn zero_frequency_does_not_divide_by_zero() {
        assert_eq!(TimeScale::from_hz(0), TimeScale::from_hz(1_000_000_000));
    }

    #[test]
    fn system_time_counts_from_boot() {
        let c = Clock::new(5_000, 2_000_000_000);
        assert_eq!(c.system_time_ns(5_000), 0);
        assert_eq!(c.system_time_ns(5_000 + 2_000), 1_000);
        let c = Clock::new(u64::MAX - 9, 1_000_000_000);
        // The TSC wrapping past zero still counts forward.
        assert_eq!(c.system_time_ns(10), 20);
    }
}
