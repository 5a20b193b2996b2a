//! The console backend: guest console rings and console_io to the serial port.
//!
//! Both sources end in a per-domain [`LineBuffer`], which prints whole lines prefixed
//! `[d<id> <name>] ` so output of several domains never interleaves inside a line.
//! console_io output is rate-limited per domU by a [`TokenBucket`].
//!
//! With `console=raw` on the hypervisor command line, the ring output of the domain
//! that gets console input is passed through untouched instead (like `xl console`:
//! full-screen guests such as GRUB position the cursor themselves). A shared [`Cursor`]
//! remembers who left the serial line unfinished, so every prefixed or `(hv)` line still
//! starts on a fresh line.

pub(crate) mod console_io;
mod mode;
pub use mode::raw_requested;

use crate::platform::{BadMaddr, MachineMemory, Platform};
use core::mem::offset_of;
use xen_pv_abi::console::{XENCONS_OUT_SIZE, XenconsInterface, out_slot};
use xen_pv_abi::{DomId, Mfn};

/// Longest line kept before a partial line is flushed (excluding prefix and newline).
pub const LINE_MAX: usize = 256;

const ESC: u8 = 0x1b;
/// Kept in ring output so that line editing at a guest's prompt shows right.
const BACKSPACE: u8 = 0x08;

/// Where console bytes came from; the two paths filter differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The shared console ring: '\r' dropped, control bytes other than '\t', backspace
    /// and ESC shown as '.', everything else (including UTF-8) kept.
    Ring,
    /// `console_io` write: only printable ASCII and '\n' are kept (as Xen does for
    /// non-hardware domains); everything else is dropped.
    ConsoleIo,
}

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

    /// Whether the serial line ends with `id`'s own unfinished output.
    fn continues(&self, id: DomId) -> bool {
        self.mid_line_of == Some(id)
    }
}

/// One domain's partial output line.
#[derive(Clone, Debug, Default)]
pub struct LineBuffer {
    line: heapless::Vec<u8, LINE_MAX>,
    /// The start of the current line (prefix included) was already printed by
    /// [`LineBuffer::flush_partial`]: the rest follows without a prefix.
    continued: bool,
    /// Ring output goes to the serial port as it is: no prefix, no filter, no lines.
    raw: bool,
}

impl LineBuffer {
    /// An empty line.
    pub const fn new() -> Self {
        LineBuffer {
            line: heapless::Vec::new(),
            continued: false,
            raw: false,
        }
    }

    /// Passes ring output through unprefixed and unfiltered (`console=raw`), or not.
    pub fn set_raw(&mut self, raw: bool) {
        self.raw = raw;
    }

    /// Whether ring output is passed through untouched.
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Bytes of the partial line held so far.
    pub fn pending(&self) -> &[u8] {
        &self.line
    }

    /// Filters `bytes` for `source`, appends them, and prints every completed line (raw
    /// ring output: prints `bytes` as they are).
    pub fn feed<P: Platform>(
        &mut self,
        platform: &mut P,
        cursor: &mut Cursor,
        prefix: Prefix<'_>,
        source: Source,
        bytes: &[u8],
    ) {
        if self.raw && source == Source::Ring {
            self.write_raw(platform, cursor, prefix.id, bytes);
            return;
        }
        for &b in bytes {
            let kept = match (source, b) {
                (_, b'\n') => {
                    self.emit(platform, cursor, prefix);
                    continue;
                }
                (Source::Ring, b'\r') => continue,
                (Source::Ring, b'\t' | BACKSPACE | ESC) => b,
                (Source::Ring, 0..0x20 | 0x7f) => b'.',
                (Source::Ring, _) => b,
                (Source::ConsoleIo, 0x20..0x7f) => b,
                (Source::ConsoleIo, _) => continue,
            };
            if self.line.push(kept).is_err() {
                // Line too long: print what we have as a line of its own and go on.
                self.emit(platform, cursor, prefix);
                let _ = self.line.push(kept);
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
        if self.line.is_empty() && self.continued && !cursor.continues(prefix.id) {
            // Someone else's output already ended our prompt's line.
            self.continued = false;
            return;
        }
        if !self.line.is_empty() || self.continued {
            self.emit(platform, cursor, prefix);
        }
    }

    /// Prints the partial line without ending it (a prompt waiting for input); what
    /// follows on the same line is printed without a new prefix.
    pub fn flush_partial<P: Platform>(
        &mut self,
        platform: &mut P,
        cursor: &mut Cursor,
        prefix: Prefix<'_>,
    ) {
        if self.line.is_empty() {
            return;
        }
        self.write_line(platform, cursor, prefix, false);
        cursor.mid_line_of = Some(prefix.id);
        self.continued = true;
    }

    /// Prints `[d<id> <name>] <line>\n` with one console write, and empties the line.
    fn emit<P: Platform>(&mut self, platform: &mut P, cursor: &mut Cursor, prefix: Prefix<'_>) {
        self.write_line(platform, cursor, prefix, true);
        self.continued = false;
    }

    /// Prints the held line (prefixed unless it continues this domain's unfinished line
    /// on the serial port) with one console write, and empties it.
    fn write_line<P: Platform>(
        &mut self,
        platform: &mut P,
        cursor: &mut Cursor,
        prefix: Prefix<'_>,
        newline: bool,
    ) {
        // Prefix ≤ 2 + 5 + 1 + 31 + 2, line ≤ LINE_MAX, newline 1.
        let mut out: heapless::Vec<u8, { LINE_MAX + 64 }> = heapless::Vec::new();
        // Someone else printed since our prompt: start over on a line of our own.
        if !(self.continued && cursor.continues(prefix.id)) {
            cursor.fresh_line(platform);
            push_prefix(&mut out, prefix);
        }
        cursor.mid_line_of = None;
        let _ = out.extend_from_slice(&self.line);
        if newline {
            let _ = out.push(b'\n');
        }
        platform.console_write(&out);
        self.line.clear();
    }

    /// Passes raw ring output through, starting on a fresh line if another domain left
    /// the serial line unfinished.
    fn write_raw<P: Platform>(
        &mut self,
        platform: &mut P,
        cursor: &mut Cursor,
        id: DomId,
        bytes: &[u8],
    ) {
        let Some(&last) = bytes.last() else {
            return;
        };
        if !cursor.continues(id) {
            cursor.fresh_line(platform);
        }
        platform.console_write(bytes);
        cursor.mid_line_of = (last != b'\n').then_some(id);
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

/// Why a console ring could not be drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The guest's producer index is more than a ring ahead of the consumer index.
    ProtocolViolation {
        /// `out_cons` as read.
        cons: u32,
        /// `out_prod` as read.
        prod: u32,
    },
    /// The ring frame is not in RAM (a hypervisor bug, but never a panic).
    BadFrame(BadMaddr),
}

impl From<BadMaddr> for RingError {
    fn from(e: BadMaddr) -> Self {
        RingError::BadFrame(e)
    }
}

const OUT_OFF: u64 = offset_of!(XenconsInterface, out) as u64;
const OUT_CONS_OFF: u64 = offset_of!(XenconsInterface, out_cons) as u64;
const OUT_PROD_OFF: u64 = offset_of!(XenconsInterface, out_prod) as u64;

/// Copies everything the guest produced in the `out` ring of the console page `ring`
/// into `line` (printing complete lines), then publishes the new `out_cons`.
///
/// The indices are read once each: the guest may change them concurrently, so only the
/// copies are trusted. Returns the number of bytes consumed.
pub fn drain<M: MachineMemory, P: Platform>(
    mem: &M,
    platform: &mut P,
    cursor: &mut Cursor,
    ring: Mfn,
    line: &mut LineBuffer,
    prefix: Prefix<'_>,
) -> Result<usize, RingError> {
    let base = ring.maddr();
    let mut idx = [0u8; 4];
    mem.read(base + OUT_CONS_OFF, &mut idx)?;
    let cons = u32::from_le_bytes(idx);
    mem.read(base + OUT_PROD_OFF, &mut idx)?;
    let prod = u32::from_le_bytes(idx);
    let len = prod.wrapping_sub(cons) as usize;
    if len > XENCONS_OUT_SIZE {
        return Err(RingError::ProtocolViolation { cons, prod });
    }
    if len == 0 {
        return Ok(0);
    }
    let mut bytes = [0u8; XENCONS_OUT_SIZE];
    // At most two contiguous pieces: up to the end of out[], then from its start.
    let first = out_slot(cons);
    let head = len.min(XENCONS_OUT_SIZE - first);
    mem.read(base + OUT_OFF + first as u64, &mut bytes[..head])?;
    mem.read(base + OUT_OFF, &mut bytes[head..len])?;
    mem.write(base + OUT_CONS_OFF, &prod.to_le_bytes())?;
    line.feed(platform, cursor, prefix, Source::Ring, &bytes[..len]);
    Ok(len)
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
    use crate::testutil::{FakeMemory, FakePlatform};

    const P: Prefix<'static> = Prefix {
        id: DomId(3),
        name: "guest",
    };
    const RING: Mfn = Mfn(1);

    fn set_indices(mem: &FakeMemory, cons: u32, prod: u32) {
        mem.write(RING.maddr() + OUT_CONS_OFF, &cons.to_le_bytes())
            .unwrap();
        mem.write(RING.maddr() + OUT_PROD_OFF, &prod.to_le_bytes())
            .unwrap();
    }

    /// Writes `bytes` into out[] starting at free-running index `at`, as a guest would.
    fn produce(mem: &FakeMemory, at: u32, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let slot = out_slot(at.wrapping_add(i as u32)) as u64;
            mem.write(RING.maddr() + OUT_OFF + slot, &[b]).unwrap();
        }
    }

    fn out_cons(mem: &FakeMemory) -> u32 {
        let mut b = [0u8; 4];
        mem.read(RING.maddr() + OUT_CONS_OFF, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    #[test]
    fn lines_get_prefixes_and_partial_lines_wait() {
        let mut p = FakePlatform::new();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        l.feed(&mut p, &mut c, P, Source::Ring, b"hello\r\nwor");
        assert_eq!(p.console, "[d3 guest] hello\n");
        assert_eq!(l.pending(), b"wor");
        l.feed(&mut p, &mut c, P, Source::Ring, b"ld\n");
        assert_eq!(p.console, "[d3 guest] hello\n[d3 guest] world\n");
        l.feed(&mut p, &mut c, P, Source::Ring, b"tail");
        l.flush(&mut p, &mut c, P);
        l.flush(&mut p, &mut c, P);
        assert!(p.console.ends_with("[d3 guest] tail\n"));
        assert_eq!(p.console.matches("tail").count(), 1);
    }

    const Q: Prefix<'static> = Prefix {
        id: DomId(4),
        name: "other",
    };

    #[test]
    fn raw_ring_output_passes_through_and_prefixed_lines_start_fresh() {
        let mut p = FakePlatform::new();
        let mut c = Cursor::new();
        let (mut raw, mut other) = (LineBuffer::new(), LineBuffer::new());
        raw.set_raw(true);
        // Unfiltered, unprefixed, not held back for a newline.
        raw.feed(
            &mut p,
            &mut c,
            P,
            Source::Ring,
            b"\x1b[2J\x1b[1;1H\x01grub> \r",
        );
        assert_eq!(p.console, "\x1b[2J\x1b[1;1H\x01grub> \r");
        assert!(raw.pending().is_empty());
        // Another domain's line begins on a line of its own...
        other.feed(&mut p, &mut c, Q, Source::Ring, b"x\n");
        assert_eq!(p.console, "\x1b[2J\x1b[1;1H\x01grub> \r\n[d4 other] x\n");
        // ...and so does the raw output after it; a raw line ending in '\n' needs no help.
        raw.feed(&mut p, &mut c, P, Source::Ring, b"ok\n");
        other.feed(&mut p, &mut c, Q, Source::Ring, b"y\n");
        assert!(p.console.ends_with("[d4 other] x\nok\n[d4 other] y\n"));
        // console_io of a raw domain is still filtered and prefixed.
        raw.feed(&mut p, &mut c, P, Source::ConsoleIo, b"io\x1b\n");
        assert!(p.console.ends_with("[d3 guest] io\n"));
        // Nothing to pass: nothing printed, the line state unchanged.
        raw.feed(&mut p, &mut c, P, Source::Ring, b"more");
        let before = p.console.len();
        raw.feed(&mut p, &mut c, P, Source::Ring, b"");
        raw.flush(&mut p, &mut c, P);
        assert_eq!(p.console.len(), before);
        // A fresh line is ended once only.
        c.fresh_line(&mut p);
        c.fresh_line(&mut p);
        assert!(p.console.ends_with("more\n"));
    }

    #[test]
    fn a_prompt_interrupted_by_another_domain_is_continued_with_a_prefix() {
        let mut p = FakePlatform::new();
        let mut c = Cursor::new();
        let (mut a, mut b) = (LineBuffer::new(), LineBuffer::new());
        a.feed(&mut p, &mut c, P, Source::Ring, b"grub> ");
        a.flush_partial(&mut p, &mut c, P);
        b.feed(&mut p, &mut c, Q, Source::Ring, b"x\n");
        a.feed(&mut p, &mut c, P, Source::Ring, b"echo\n");
        assert_eq!(
            p.console,
            "[d3 guest] grub> \n[d4 other] x\n[d3 guest] echo\n"
        );
        // A prompt ended by someone else is not ended again when the domain goes.
        a.feed(&mut p, &mut c, P, Source::Ring, b"> ");
        a.flush_partial(&mut p, &mut c, P);
        c.fresh_line(&mut p);
        let before = p.console.len();
        a.flush(&mut p, &mut c, P);
        assert_eq!(p.console.len(), before);
        assert!(p.console.ends_with("[d3 guest] > \n"));
    }

    #[test]
    fn filters_differ_per_source() {
        let mut p = FakePlatform::new();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        l.feed(&mut p, &mut c, P, Source::Ring, b"a\tb\x1bc\x01d\x7fe\n");
        assert_eq!(p.console, "[d3 guest] a\tb\x1bc.d.e\n");
        p.console.clear();
        l.feed(
            &mut p,
            &mut c,
            P,
            Source::ConsoleIo,
            b"a\tb\x1bc\x01d\x7fe\r\xc3\xa9\n",
        );
        assert_eq!(p.console, "[d3 guest] abcde\n");
    }

    #[test]
    fn overlong_lines_are_split() {
        let mut p = FakePlatform::new();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        let long = [b'x'; LINE_MAX + 10];
        l.feed(&mut p, &mut c, P, Source::Ring, &long);
        assert_eq!(
            p.console,
            std::format!("[d3 guest] {}\n", "x".repeat(LINE_MAX))
        );
        assert_eq!(l.pending().len(), 10);
    }

    #[test]
    fn drain_copies_and_publishes_out_cons() {
        let mem = FakeMemory::new(3 * 4096);
        let mut p = FakePlatform::new();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        produce(&mem, 0, b"one\ntwo\n");
        set_indices(&mem, 0, 8);
        assert_eq!(drain(&mem, &mut p, &mut c, RING, &mut l, P), Ok(8));
        assert_eq!(p.console, "[d3 guest] one\n[d3 guest] two\n");
        assert_eq!(out_cons(&mem), 8);
        // Nothing new: nothing printed.
        assert_eq!(drain(&mem, &mut p, &mut c, RING, &mut l, P), Ok(0));
    }

    #[test]
    fn drain_handles_index_and_slot_wraparound() {
        let mem = FakeMemory::new(3 * 4096);
        let mut p = FakePlatform::new();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        // Free-running indices about to wrap at 2^32, and the data crossing the end of out[].
        let cons = u32::MAX - 2;
        produce(&mem, cons, b"wrap\n");
        set_indices(&mem, cons, cons.wrapping_add(5));
        assert_eq!(drain(&mem, &mut p, &mut c, RING, &mut l, P), Ok(5));
        assert_eq!(p.console, "[d3 guest] wrap\n");
        assert_eq!(out_cons(&mem), 2);
        // A completely full ring is fine.
        let full = [b'y'; XENCONS_OUT_SIZE];
        produce(&mem, 2, &full);
        set_indices(&mem, 2, 2 + XENCONS_OUT_SIZE as u32);
        assert_eq!(
            drain(&mem, &mut p, &mut c, RING, &mut l, P),
            Ok(XENCONS_OUT_SIZE)
        );
    }

    #[test]
    fn hostile_producer_is_a_protocol_violation() {
        let mem = FakeMemory::new(3 * 4096);
        let mut p = FakePlatform::new();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        for (cons, prod) in [(0, 2049), (10, 5), (0, u32::MAX)] {
            set_indices(&mem, cons, prod);
            assert_eq!(
                drain(&mem, &mut p, &mut c, RING, &mut l, P),
                Err(RingError::ProtocolViolation { cons, prod })
            );
            // out_cons untouched, nothing printed.
            assert_eq!(out_cons(&mem), cons);
        }
        assert!(p.console.is_empty());
        // A ring outside RAM is an error, not a panic.
        assert!(matches!(
            drain(&mem, &mut p, &mut c, Mfn(1 << 30), &mut l, P),
            Err(RingError::BadFrame(_))
        ));
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
