extern crate std;

use super::*;
use std::string::String;

/// Collects everything written.
#[derive(Default)]
struct Captured(String);

impl Output for Captured {
    fn write(&mut self, bytes: &[u8]) {
        self.0.push_str(&String::from_utf8_lossy(bytes));
    }
}

/// The hypervisor's `console_io` lines.
type Ascii = LineBuffer<PrintableAscii>;
/// The control domain's ring lines.
type Ring = LineBuffer<RingText>;

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
    fn check<F: Filter>() {
        let mut p = Captured::default();
        let mut l = LineBuffer::<F>::new();
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
    check::<PrintableAscii>();
    check::<RingText>();
}

#[test]
fn the_console_io_filter_keeps_only_printable_ascii() {
    let mut p = Captured::default();
    let mut l = Ascii::new();
    let mut c = Cursor::new();
    l.feed(&mut p, &mut c, P, b"a\tb\x1bc\x01d\x7fe\r\xc3\xa9\n");
    assert_eq!(p.0, "[d3 guest] abcde\n");
}

#[test]
fn the_ring_filter_keeps_tabs_escapes_and_utf8() {
    let mut p = Captured::default();
    let mut l = Ring::new();
    let mut c = Cursor::new();
    l.feed(&mut p, &mut c, P, b"a\tb\x1bc\x01d\x7fe\x08f\xc3\xa9\n");
    assert_eq!(p.0, "[d3 guest] a\tb\x1bc.d.e\x08f\u{e9}\n");
}

#[test]
fn overlong_lines_are_split_and_names_cut() {
    fn check<F: Filter>() {
        let mut p = Captured::default();
        let mut l = LineBuffer::<F>::new();
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
    check::<PrintableAscii>();
    check::<RingText>();
}

#[test]
fn verbatim_output_is_untouched_and_prefixed_lines_start_fresh() {
    let mut p = Captured::default();
    let mut c = Cursor::new();
    let mut l = Ascii::new();
    let d0 = DomId(0);
    // Unfiltered, unprefixed, not held back for a newline.
    c.write_verbatim(&mut p, d0, b"\x1b[1m[d1 a] x\r\n[d0 control] pro");
    c.write_verbatim(&mut p, d0, b"mpt> ");
    assert_eq!(p.0, "\x1b[1m[d1 a] x\r\n[d0 control] prompt> ");
    // A prefixed line starts on a line of its own, once.
    l.feed(&mut p, &mut c, P, b"y\n");
    assert!(p.0.ends_with("prompt> \n[d3 guest] y\n"));
    // Verbatim output after it needs no help; ending in '\n' leaves nothing open.
    c.write_verbatim(&mut p, d0, b"ok\n");
    c.write_verbatim(&mut p, d0, b"");
    c.fresh_line(&mut p);
    assert!(p.0.ends_with("[d3 guest] y\nok\n"));
    // Another domain's unfinished line is ended before dom0's output.
    c.write_verbatim(&mut p, DomId(5), b"half");
    c.write_verbatim(&mut p, d0, b"z\n");
    assert!(p.0.ends_with("half\nz\n"));
}

#[test]
fn raw_output_passes_through_and_prefixed_lines_start_fresh() {
    let mut p = Captured::default();
    let mut c = Cursor::new();
    let (mut raw, mut other) = (Ring::new(), Ring::new());
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
    let (mut a, mut b) = (Ring::new(), Ring::new());
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
    let mut a = Ring::new();
    a.feed(&mut p, &mut c, P, b"grub> ");
    a.flush_partial(&mut p, &mut c, P);
    a.flush_partial(&mut p, &mut c, P);
    a.feed(&mut p, &mut c, P, b"echo\n");
    assert_eq!(p.0, "[d3 guest] grub> echo\n");
}
