//! Per-domain line assembly: `[d<id> <name>] ` prefixes, the ring filter, raw mode and
//! the shared serial-line [`Cursor`] (moved here from the hypervisor's console backend).

use xen_pv_abi::DomId;

/// Longest line kept before a partial line is flushed (excluding prefix and newline).
pub const LINE_MAX: usize = 256;

const ESC: u8 = 0x1b;
/// Kept in ring output so that line editing at a guest's prompt shows right.
const BACKSPACE: u8 = 0x08;

/// Where finished console text goes (the kernel: `console_io`, printed verbatim by the
/// hypervisor; tests: a string).
pub trait Output {
    /// Writes `bytes` to the serial console as they are.
    fn write(&mut self, bytes: &[u8]);
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
    /// column 0.
    pub fn fresh_line<O: Output + ?Sized>(&mut self, out: &mut O) {
        if self.mid_line_of.take().is_some() {
            out.write(b"\n");
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
    /// Output goes to the serial port as it is: no prefix, no filter, no lines.
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

    /// Passes output through unprefixed and unfiltered (`console=raw`), or not.
    pub fn set_raw(&mut self, raw: bool) {
        self.raw = raw;
    }

    /// Whether output is passed through untouched.
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Bytes of the partial line held so far.
    pub fn pending(&self) -> &[u8] {
        &self.line
    }

    /// Filters `bytes` ('\r' dropped, control bytes other than '\t', backspace and ESC
    /// shown as '.', everything else, UTF-8 included, kept), appends them and prints every
    /// completed line. Raw: prints `bytes` as they are.
    pub fn feed<O: Output + ?Sized>(
        &mut self,
        out: &mut O,
        cursor: &mut Cursor,
        prefix: Prefix<'_>,
        bytes: &[u8],
    ) {
        if self.raw {
            self.write_raw(out, cursor, prefix.id, bytes);
            return;
        }
        for &b in bytes {
            let kept = match b {
                b'\n' => {
                    self.emit(out, cursor, prefix);
                    continue;
                }
                b'\r' => continue,
                b'\t' | BACKSPACE | ESC => b,
                0..0x20 | 0x7f => b'.',
                _ => b,
            };
            if self.line.push(kept).is_err() {
                // Line too long: print what we have as a line of its own and go on.
                self.emit(out, cursor, prefix);
                let _ = self.line.push(kept);
            }
        }
    }

    /// Prints the partial line, if any (used when the domain ends).
    pub fn flush<O: Output + ?Sized>(
        &mut self,
        out: &mut O,
        cursor: &mut Cursor,
        prefix: Prefix<'_>,
    ) {
        if self.line.is_empty() && self.continued && !cursor.continues(prefix.id) {
            // Someone else's output already ended our prompt's line.
            self.continued = false;
            return;
        }
        if !self.line.is_empty() || self.continued {
            self.emit(out, cursor, prefix);
        }
    }

    /// Prints the partial line without ending it (a prompt waiting for input); what
    /// follows on the same line is printed without a new prefix.
    pub fn flush_partial<O: Output + ?Sized>(
        &mut self,
        out: &mut O,
        cursor: &mut Cursor,
        prefix: Prefix<'_>,
    ) {
        if self.line.is_empty() {
            return;
        }
        self.write_line(out, cursor, prefix, false);
        cursor.mid_line_of = Some(prefix.id);
        self.continued = true;
    }

    /// Prints `[d<id> <name>] <line>\n` with one write, and empties the line.
    fn emit<O: Output + ?Sized>(&mut self, out: &mut O, cursor: &mut Cursor, prefix: Prefix<'_>) {
        self.write_line(out, cursor, prefix, true);
        self.continued = false;
    }

    /// Prints the held line (prefixed unless it continues this domain's unfinished line
    /// on the serial port) with one write, and empties it.
    fn write_line<O: Output + ?Sized>(
        &mut self,
        out: &mut O,
        cursor: &mut Cursor,
        prefix: Prefix<'_>,
        newline: bool,
    ) {
        // Prefix ≤ 2 + 5 + 1 + 31 + 2, line ≤ LINE_MAX, newline 1.
        let mut buf: heapless::Vec<u8, { LINE_MAX + 64 }> = heapless::Vec::new();
        // Someone else printed since our prompt: start over on a line of our own.
        if !(self.continued && cursor.continues(prefix.id)) {
            cursor.fresh_line(out);
            push_prefix(&mut buf, prefix);
        }
        cursor.mid_line_of = None;
        let _ = buf.extend_from_slice(&self.line);
        if newline {
            let _ = buf.push(b'\n');
        }
        out.write(&buf);
        self.line.clear();
    }

    /// Passes raw output through, starting on a fresh line if another domain left the
    /// serial line unfinished.
    fn write_raw<O: Output + ?Sized>(
        &mut self,
        out: &mut O,
        cursor: &mut Cursor,
        id: DomId,
        bytes: &[u8],
    ) {
        let Some(&last) = bytes.last() else {
            return;
        };
        if !cursor.continues(id) {
            cursor.fresh_line(out);
        }
        out.write(bytes);
        cursor.mid_line_of = (last != b'\n').then_some(id);
    }
}

/// Appends `[d<id> <name>] ` (the name cut to 31 bytes).
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::string::String;

    /// Collects everything written.
    #[derive(Default)]
    pub(crate) struct Captured(pub(crate) String);

    impl Output for Captured {
        fn write(&mut self, bytes: &[u8]) {
            self.0.push_str(&String::from_utf8_lossy(bytes));
        }
    }

    const P: Prefix<'static> = Prefix {
        id: DomId(3),
        name: "guest",
    };
    const Q: Prefix<'static> = Prefix {
        id: DomId(4),
        name: "other",
    };

    #[test]
    fn lines_get_prefixes_and_partial_lines_wait() {
        let mut p = Captured::default();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        l.feed(&mut p, &mut c, P, b"hello\r\nwor");
        assert_eq!(p.0, "[d3 guest] hello\n");
        assert_eq!(l.pending(), b"wor");
        l.feed(&mut p, &mut c, P, b"ld\n");
        assert_eq!(p.0, "[d3 guest] hello\n[d3 guest] world\n");
        l.feed(&mut p, &mut c, P, b"tail");
        l.flush(&mut p, &mut c, P);
        l.flush(&mut p, &mut c, P);
        assert!(p.0.ends_with("[d3 guest] tail\n"));
        assert_eq!(p.0.matches("tail").count(), 1);
    }

    #[test]
    fn raw_output_passes_through_and_prefixed_lines_start_fresh() {
        let mut p = Captured::default();
        let mut c = Cursor::new();
        let (mut raw, mut other) = (LineBuffer::new(), LineBuffer::new());
        raw.set_raw(true);
        assert!(raw.is_raw());
        // Unfiltered, unprefixed, not held back for a newline.
        raw.feed(&mut p, &mut c, P, b"\x1b[2J\x1b[1;1H\x01grub> \r");
        assert_eq!(p.0, "\x1b[2J\x1b[1;1H\x01grub> \r");
        assert!(raw.pending().is_empty());
        // Another domain's line begins on a line of its own...
        other.feed(&mut p, &mut c, Q, b"x\n");
        assert_eq!(p.0, "\x1b[2J\x1b[1;1H\x01grub> \r\n[d4 other] x\n");
        // ...and so does the raw output after it; a raw line ending in '\n' needs no help.
        raw.feed(&mut p, &mut c, P, b"ok\n");
        other.feed(&mut p, &mut c, Q, b"y\n");
        assert!(p.0.ends_with("[d4 other] x\nok\n[d4 other] y\n"));
        // Nothing to pass: nothing printed, the line state unchanged.
        raw.feed(&mut p, &mut c, P, b"more");
        let before = p.0.len();
        raw.feed(&mut p, &mut c, P, b"");
        raw.flush(&mut p, &mut c, P);
        assert_eq!(p.0.len(), before);
        // A fresh line is ended once only.
        c.fresh_line(&mut p);
        c.fresh_line(&mut p);
        assert!(p.0.ends_with("more\n"));
    }

    #[test]
    fn a_prompt_interrupted_by_another_domain_is_continued_with_a_prefix() {
        let mut p = Captured::default();
        let mut c = Cursor::new();
        let (mut a, mut b) = (LineBuffer::new(), LineBuffer::new());
        a.feed(&mut p, &mut c, P, b"grub> ");
        a.flush_partial(&mut p, &mut c, P);
        b.feed(&mut p, &mut c, Q, b"x\n");
        a.feed(&mut p, &mut c, P, b"echo\n");
        assert_eq!(p.0, "[d3 guest] grub> \n[d4 other] x\n[d3 guest] echo\n");
        // A prompt ended by someone else is not ended again when the domain goes.
        a.feed(&mut p, &mut c, P, b"> ");
        a.flush_partial(&mut p, &mut c, P);
        c.fresh_line(&mut p);
        let before = p.0.len();
        a.flush(&mut p, &mut c, P);
        assert_eq!(p.0.len(), before);
        assert!(p.0.ends_with("[d3 guest] > \n"));
    }

    #[test]
    fn a_prompt_continued_without_interruption_gets_no_second_prefix() {
        let mut p = Captured::default();
        let mut c = Cursor::new();
        let mut a = LineBuffer::new();
        a.feed(&mut p, &mut c, P, b"grub> ");
        a.flush_partial(&mut p, &mut c, P);
        a.flush_partial(&mut p, &mut c, P);
        a.feed(&mut p, &mut c, P, b"echo\n");
        assert_eq!(p.0, "[d3 guest] grub> echo\n");
    }

    #[test]
    fn the_ring_filter_keeps_tabs_escapes_and_utf8() {
        let mut p = Captured::default();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        l.feed(&mut p, &mut c, P, b"a\tb\x1bc\x01d\x7fe\x08f\xc3\xa9\n");
        assert_eq!(p.0, "[d3 guest] a\tb\x1bc.d.e\x08f\u{e9}\n");
    }

    #[test]
    fn overlong_lines_are_split_and_names_cut() {
        let mut p = Captured::default();
        let mut l = LineBuffer::new();
        let mut c = Cursor::new();
        let long = [b'x'; LINE_MAX + 10];
        l.feed(&mut p, &mut c, P, &long);
        assert_eq!(p.0, std::format!("[d3 guest] {}\n", "x".repeat(LINE_MAX)));
        assert_eq!(l.pending().len(), 10);
        p.0.clear();
        let name = "n".repeat(40);
        let big = Prefix {
            id: DomId(65535),
            name: &name,
        };
        l.feed(&mut p, &mut c, big, b"\n");
        assert_eq!(
            p.0,
            std::format!("[d65535 {}] {}\n", "n".repeat(31), "x".repeat(10))
        );
    }
}
