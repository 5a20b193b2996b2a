//! The hypervisor's console: `console_io` output of the domains on the serial port
//! (COM1), and serial input kept for the control domain ([`input`]).
//!
//! A domU's `console_io` bytes end in its [`LineBuffer`], which prints whole lines
//! prefixed `[d<id> <name>] ` (printable ASCII only, and rate-limited per domU by a
//! [`TokenBucket`]), so output of several domains never interleaves inside a line. The
//! control domain's `console_io` bytes are printed verbatim ([`Cursor::write_verbatim`]):
//! it prints the domUs' console rings itself, with their prefixes. A shared [`Cursor`]
//! remembers who left the serial line unfinished, so every prefixed or `(hv)` line still
//! starts on a fresh line. The line assembly is the `console-line` crate's, which the
//! control domain uses for the rings; [`Serial`] connects it to the platform.
//!
//! The guests' console rings are not the hypervisor's business: the control domain is
//! their backend.

pub(crate) mod console_io;
pub mod input;

use crate::platform::Platform;
pub use console_line::{Cursor, LINE_MAX, Prefix};

/// One domU's partial `console_io` output line: printable ASCII only, as Xen keeps of
/// domains other than the hardware domain.
pub type LineBuffer = console_line::LineBuffer<console_line::PrintableAscii>;

/// The platform's serial console as the line assembly's output.
pub struct Serial<'a, P>(pub &'a mut P);

impl<P: Platform> console_line::Output for Serial<'_, P> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.console_write(bytes);
    }
}

/// A token bucket in bytes, refilled from system time.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// Most bytes a domain may print in one burst.
    pub const BURST: u64 = 64 * 1024;
    /// Bytes per second added back.
    pub const REFILL_PER_SEC: u64 = 16 * 1024;

    /// A full bucket at system time `now_ns`.
    pub const fn new(now_ns: u64) -> Self {
        TokenBucket {
            tokens: Self::BURST,
            last_ns: now_ns,
        }
    }

    /// Takes up to `wanted` bytes at system time `now_ns`; returns how many are allowed.
    pub fn take(&mut self, now_ns: u64, wanted: u64) -> u64 {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        let refill = (elapsed as u128 * Self::REFILL_PER_SEC as u128) / 1_000_000_000;
        if refill > 0 {
            self.tokens = (self.tokens as u128 + refill).min(Self::BURST as u128) as u64;
            // Move the reference time only once a whole token was earned, so that frequent
            // small calls still accumulate refill time.
            self.last_ns = now_ns;
        }
        let granted = wanted.min(self.tokens);
        self.tokens -= granted;
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakePlatform;
    use xen_pv_abi::DomId;

    #[test]
    fn domu_lines_reach_the_platform_printable_and_on_a_fresh_line() {
        let mut p = FakePlatform::new();
        let (mut l, mut c) = (LineBuffer::new(), Cursor::new());
        let prefix = Prefix {
            id: DomId(3),
            name: "guest",
        };
        c.write_verbatim(&mut Serial(&mut p), DomId(0), b"prompt> ");
        l.feed(
            &mut Serial(&mut p),
            &mut c,
            prefix,
            b"a\x1b\r\xc3\xa9b\nrest",
        );
        assert_eq!(p.console, "prompt> \n[d3 guest] ab\n");
        l.flush(&mut Serial(&mut p), &mut c, prefix);
        assert!(p.console.ends_with("[d3 guest] rest\n"));
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let mut b = TokenBucket::new(0);
        assert_eq!(b.take(0, TokenBucket::BURST + 100), TokenBucket::BURST);
        assert_eq!(b.take(0, 1), 0);
        // Half a second later: 8 KiB back.
        assert_eq!(b.take(500_000_000, u64::MAX), 8 * 1024);
        // A long idle time refills to the burst size only.
        assert_eq!(b.take(1_000_000_000_000, u64::MAX), TokenBucket::BURST);
        // Time going backwards (never expected) grants nothing new and does not panic.
        assert_eq!(b.take(0, 10), 0);
    }
}
