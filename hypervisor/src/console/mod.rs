//! The hypervisor's console: `console_io` output of the domains on the serial port
//! (COM1), and serial input kept for the control domain ([`input`]).
//!
//! A domU's `console_io` bytes end in its [`LineBuffer`], which prints whole lines
//! prefixed `[d<id> <name>] ` (filtered, and rate-limited per domU by a [`TokenBucket`]),
//! so output of several domains never interleaves inside a line. The control domain's
//! `console_io` bytes are printed verbatim: it prints the domUs' console rings itself,
//! with their prefixes. A shared [`Cursor`] remembers who left the serial line
//! unfinished, so every prefixed or `(hv)` line still starts on a fresh line.
//!
//! The guests' console rings are not the hypervisor's business: the control domain is
//! their backend.

pub(crate) mod console_io;
pub mod input;

use crate::platform::Platform;
use xen_pv_abi::DomId;

/// Longest line kept before a partial line is flushed (excluding prefix and newline).
pub const LINE_MAX: usize = 256;

/// The identity printed in front of each line.
#[derive(Clone, Copy, Debug)]
pub struct Prefix<'a> {
    /// Domain id.
    pub id: DomId,
    /// Domain name.
    pub name: &'a str,
}

/// Who left the serial console in the middle of a line (shared by all writers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The domain whose unfinished output the serial line ends with, if any.
    mid_line_of: Option<DomId>,
}

impl Cursor {
    /// At the start of a line.
    pub const fn new() -> Self {
        Cursor { mid_line_of: None }
    }

    /// Ends the line some domain left unfinished, so that the next output starts in
    /// column 0 (called before every prefixed and `(hv)` line).
    pub fn fresh_line<P: Platform>(&mut self, platform: &mut P) {
        if self.mid_line_of.take().is_some() {
            platform.console_write(b"\n");
        }
    }

    /// Writes `bytes` of domain `id` as they are (the control domain's `console_io`),
    /// on a fresh line unless they continue `id`'s own unfinished line, and remembers
    /// whether they leave the line unfinished.
    pub fn write_verbatim<P: Platform>(&mut self, platform: &mut P, id: DomId, bytes: &[u8]) {
        let Some(&last) = bytes.last() else {
            return;
        };
        if self.mid_line_of != Some(id) {
            self.fresh_line(platform);
        }
        platform.console_write(bytes);
        self.mid_line_of = (last != b'\n').then_some(id);
    }
}

/// One domain's partial `console_io` output line.
#[derive(Clone, Debug, Default)]
pub struct LineBuffer {
    line: heapless::Vec<u8, LINE_MAX>,
}

impl LineBuffer {
    /// An empty line.
    pub const fn new() -> Self {
        LineBuffer {
            line: heapless::Vec::new(),
        }
    }

    /// Bytes of the partial line held so far.
    pub fn pending(&self) -> &[u8] {
        &self.line
    }

    /// Keeps the printable ASCII of `bytes` (as Xen does for non-hardware domains),
    /// appends it, and prints every line a '\n' completes.
    pub fn feed<P: Platform>(
        &mut self,
        platform: &mut P,
        cursor: &mut Cursor,
        prefix: Prefix<'_>,
        bytes: &[u8],
    ) {
        for &b in bytes {
            match b {
                b'\n' => self.emit(platform, cursor, prefix),
                0x20..0x7f => {
                    if self.line.is_full() {
                        // Line too long: print what we have as a line of its own.
                        self.emit(platform, cursor, prefix);
                    }
                    let _ = self.line.push(b);
                }
                _ => {}
            }
        }
    }

    /// Prints the partial line, if any (used when the domain ends).
    pub fn flush<P: Platform>(
        &mut self,
        platform: &mut P,
        cursor: &mut Cursor,
        prefix: Prefix<'_>,
    ) {
        if !self.line.is_empty() {
            self.emit(platform, cursor, prefix);
        }
    }

    /// Prints `[d<id> <name>] <line>\n` on a fresh line with one console write, and
    /// empties the line.
    fn emit<P: Platform>(&mut self, platform: &mut P, cursor: &mut Cursor, prefix: Prefix<'_>) {
        // Prefix <= 2 + 5 + 1 + 31 + 2, line <= LINE_MAX, newline 1.
        let mut out: heapless::Vec<u8, { LINE_MAX + 64 }> = heapless::Vec::new();
        cursor.fresh_line(platform);
        push_prefix(&mut out, prefix);
        let _ = out.extend_from_slice(&self.line);
        let _ = out.push(b'\n');
        platform.console_write(&out);
        self.line.clear();
    }
}

/// Appends `[d<id> <name>] `.
fn push_prefix<const N: usize>(out: &mut heapless::Vec<u8, N>, prefix: Prefix<'_>) {
    let _ = out.extend_from_slice(b"[d");
    let mut digits = [0u8; 5];
    let _ = out.extend_from_slice(decimal(prefix.id.0, &mut digits));
    let _ = out.push(b' ');
    let name = prefix.name.as_bytes();
    let _ = out.extend_from_slice(&name[..name.len().min(31)]);
    let _ = out.extend_from_slice(b"] ");
}

/// `v` in decimal, in `buf`.
fn decimal(mut v: u16, buf: &mut [u8; 5]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
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

    const P: Prefix<'static> = Prefix {
        id: DomId(3),
        name: "guest",
    };

    #[test]
    fn lines_get_prefixes_and_partial_lines_wait() {
        let mut p = FakePlatform::new();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        l.feed(&mut p, &mut c, P, b"hello\nwor");
        assert_eq!(p.console, "[d3 guest] hello\n");
        assert_eq!(l.pending(), b"wor");
        l.feed(&mut p, &mut c, P, b"ld\n");
        assert_eq!(p.console, "[d3 guest] hello\n[d3 guest] world\n");
        l.feed(&mut p, &mut c, P, b"tail");
        l.flush(&mut p, &mut c, P);
        l.flush(&mut p, &mut c, P);
        assert!(p.console.ends_with("[d3 guest] tail\n"));
        assert_eq!(p.console.matches("tail").count(), 1);
    }

    #[test]
    fn only_printable_ascii_is_kept() {
        let mut p = FakePlatform::new();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        l.feed(&mut p, &mut c, P, b"a\tb\x1bc\x01d\x7fe\r\xc3\xa9\n");
        assert_eq!(p.console, "[d3 guest] abcde\n");
    }

    #[test]
    fn overlong_lines_are_split() {
        let mut p = FakePlatform::new();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        let long = [b'x'; LINE_MAX + 10];
        l.feed(&mut p, &mut c, P, &long);
        assert_eq!(
            p.console,
            std::format!("[d3 guest] {}\n", "x".repeat(LINE_MAX))
        );
        assert_eq!(l.pending().len(), 10);
    }

    #[test]
    fn verbatim_output_is_untouched_and_prefixed_lines_start_fresh() {
        let mut p = FakePlatform::new();
        let mut c = Cursor::new();
        let mut l = LineBuffer::new();
        let d0 = DomId(0);
        // Unfiltered, unprefixed, not held back for a newline.
        c.write_verbatim(&mut p, d0, b"\x1b[1m[d1 a] x\r\n[d0 control] pro");
        c.write_verbatim(&mut p, d0, b"mpt> ");
        assert_eq!(p.console, "\x1b[1m[d1 a] x\r\n[d0 control] prompt> ");
        // A prefixed line starts on a line of its own, once.
        l.feed(&mut p, &mut c, P, b"y\n");
        assert!(p.console.ends_with("prompt> \n[d3 guest] y\n"));
        // Verbatim output after it needs no help; ending in '\n' leaves nothing open.
        c.write_verbatim(&mut p, d0, b"ok\n");
        c.write_verbatim(&mut p, d0, b"");
        c.fresh_line(&mut p);
        assert!(p.console.ends_with("[d3 guest] y\nok\n"));
        // Another domain's unfinished line is ended before dom0's output.
        c.write_verbatim(&mut p, DomId(5), b"half");
        c.write_verbatim(&mut p, d0, b"z\n");
        assert!(p.console.ends_with("half\nz\n"));
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
