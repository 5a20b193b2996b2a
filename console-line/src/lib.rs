//! Console line assembly, shared by the hypervisor (the domUs' `console_io` output) and
//! the control domain (the domUs' console rings).
//!
//! A domain's bytes end in its [`LineBuffer`], which prints whole lines prefixed
//! `[d<id> <name>] ` (through a [`Filter`]), so output of several domains never
//! interleaves inside a line. A shared [`Cursor`] remembers who left the serial line
//! unfinished, so every prefixed line still starts on a fresh line. Text goes out through
//! an [`Output`]: the hypervisor's platform serial port, the control domain's
//! `console_io`, a string in tests.
//!
//! Rate limiting is not done here: the hypervisor limits `console_io` before it feeds a
//! line, the control domain's rings are bounded by their size.

#![no_std]

use core::marker::PhantomData;
use xen_pv_abi::DomId;

/// Longest line kept before a partial line is flushed (excluding prefix and newline).
pub const LINE_MAX: usize = 256;

const ESC: u8 = 0x1b;
/// Kept in ring output so that line editing at a guest's prompt shows right.
const BACKSPACE: u8 = 0x08;

/// Where finished console text goes.
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

/// What a domain's bytes other than '\n' become in its line.
pub trait Filter {
    /// The byte kept for `b`, or `None` to drop it.
    fn keep(b: u8) -> Option<u8>;
}

/// Printable ASCII kept, everything else dropped: Xen's rule for the `console_io` output
/// of domains other than the hardware domain.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrintableAscii;

impl Filter for PrintableAscii {
    fn keep(b: u8) -> Option<u8> {
        matches!(b, 0x20..0x7f).then_some(b)
    }
}

/// Console-ring text: '\r' dropped, control bytes other than '\t', backspace and ESC
/// shown as '.', everything else (UTF-8 included) kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct RingText;

impl Filter for RingText {
    fn keep(b: u8) -> Option<u8> {
        match b {
            b'\r' => None,
            b'\t' | BACKSPACE | ESC => Some(b),
            0..0x20 | 0x7f => Some(b'.'),
            _ => Some(b),
        }
    }
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
    /// column 0 (called before every prefixed line and every line of the writer's own).
    pub fn fresh_line<O: Output + ?Sized>(&mut self, out: &mut O) {
        if self.mid_line_of.take().is_some() {
            out.write(b"\n");
        }
    }

    /// Writes `bytes` of domain `id` as they are (no prefix, no filter, no lines), on a
    /// fresh line unless they continue `id`'s own unfinished line, and remembers whether
    /// they leave the line unfinished.
    pub fn write_verbatim<O: Output + ?Sized>(&mut self, out: &mut O, id: DomId, bytes: &[u8]) {
        let Some(&last) = bytes.last() else {
            return;
        };
        if !self.continues(id) {
            self.fresh_line(out);
        }
        out.write(bytes);
        self.mid_line_of = (last != b'\n').then_some(id);
    }

    /// Whether the serial line ends with `id`'s own unfinished output.
    fn continues(&self, id: DomId) -> bool {
        self.mid_line_of == Some(id)
    }
}

/// One domain's partial output line, its bytes passed through `F`.
#[derive(Clone, Debug, Default)]
pub struct LineBuffer<F> {
    line: heapless::Vec<u8, LINE_MAX>,
    /// The start of the current line (prefix included) was already printed by
    /// [`LineBuffer::flush_partial`]: the rest follows without a prefix.
    continued: bool,
    /// Output goes to the serial port as it is: no prefix, no filter, no lines.
    raw: bool,
    filter: PhantomData<F>,
}

impl<F: Filter> LineBuffer<F> {
    /// An empty line.
    pub const fn new() -> Self {
        LineBuffer {
            line: heapless::Vec::new(),
            continued: false,
            raw: false,
            filter: PhantomData,
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

    /// Filters `bytes` through `F`, appends them and prints every line a '\n' completes
    /// (a line reaching [`LINE_MAX`] is printed as a line of its own). Raw: prints
    /// `bytes` as they are.
    pub fn feed<O: Output + ?Sized>(
        &mut self,
        out: &mut O,
        cursor: &mut Cursor,
        prefix: Prefix<'_>,
        bytes: &[u8],
    ) {
        if self.raw {
            cursor.write_verbatim(out, prefix.id, bytes);
            return;
        }
        for &b in bytes {
            if b == b'\n' {
                self.emit(out, cursor, prefix);
                continue;
            }
            let Some(kept) = F::keep(b) else {
                continue;
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

    /// Prints the held line (prefixed, on a fresh line, unless it continues this domain's
    /// unfinished line on the serial port) with one write, and empties it.
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
mod tests;
