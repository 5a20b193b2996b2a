use super::ring::tests::{Captured, FakePage};
use super::*;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

fn keys(input: &[u8]) -> Vec<Key> {
    let mut s = SwitchKey::default();
    let mut v = Vec::new();
    for &b in input {
        s.push(b, |k| v.push(k));
    }
    v
}

#[test]
fn three_ctrl_a_switch_fewer_pass_through() {
    use Key::*;
    assert_eq!(keys(b"\x01\x01\x01"), vec![Switch]);
    assert_eq!(keys(b"\x01\x01x"), vec![Byte(1), Byte(1), Byte(b'x')]);
    assert_eq!(keys(b"a\x01b"), vec![Byte(b'a'), Byte(1), Byte(b'b')]);
    // Six in a row: two switches; four: a switch, then one held back (no byte yet).
    assert_eq!(keys(&[1; 6]), vec![Switch, Switch]);
    assert_eq!(keys(&[1; 4]), vec![Switch]);
    assert_eq!(
        keys(b"\x01\x01\x01\x01y"),
        vec![Switch, Byte(1), Byte(b'y')]
    );
}

/// A backend over fake rings, with input delivered into them.
struct Rig {
    b: Backend,
    out: Captured,
    pages: BTreeMap<u16, FakePage>,
}

impl Rig {
    fn new(raw: bool, doms: &[(u16, &str)]) -> Self {
        let mut b = Backend::new("control", raw);
        let mut pages = BTreeMap::new();
        for &(id, name) in doms {
            b.add(DomId(id), name).unwrap();
            pages.insert(id, FakePage::new());
        }
        Rig {
            b,
            out: Captured::default(),
            pages,
        }
    }

    fn type_(&mut self, bytes: &[u8]) {
        let Rig { b, out, pages } = self;
        b.input(bytes, out, |id, bytes| {
            feed_input(pages.get_mut(&id.0).unwrap(), bytes)
        });
    }

    fn got(&mut self, id: u16) -> Vec<u8> {
        self.pages.get_mut(&id).unwrap().consume_input()
    }

    fn print(&mut self, id: u16, bytes: &[u8]) -> usize {
        let page = self.pages.get_mut(&id).unwrap();
        page.produce(bytes);
        self.b.drain(DomId(id), page, &mut self.out)
    }
}

#[test]
fn input_goes_to_the_focus_and_ctrl_a_three_times_moves_it() {
    let mut r = Rig::new(false, &[(2, "two"), (1, "one")]);
    // The first domain added has the focus, whatever its id.
    assert_eq!(r.b.focus(), Some(DomId(2)));
    r.type_(b"ab\x01c");
    assert_eq!(r.got(2), b"ab\x01c");
    r.type_(b"x\x01\x01\x01y");
    assert_eq!(r.got(2), b"x");
    assert_eq!(r.got(1), b"y", "wrapped round to the lowest id");
    assert_eq!(
        r.out.0,
        "[d0 control] *** console input to d1 one (type Ctrl-a three times to switch)\n"
    );
    // Split across reads, the switch still counts.
    r.type_(b"\x01");
    r.type_(b"\x01\x01z");
    assert_eq!(r.got(2), b"z");
    assert!(r.got(1).is_empty());
    assert_eq!(r.b.focus(), Some(DomId(2)));
}

#[test]
fn a_single_domain_keeps_the_focus_and_long_input_is_chunked() {
    let mut r = Rig::new(false, &[(1, "one")]);
    r.type_(b"\x01\x01\x01");
    assert_eq!(r.b.focus(), Some(DomId(1)));
    assert!(r.out.0.contains("console input to d1 one"));
    let long: Vec<u8> = (0..200u8).map(|i| b'a' + i % 26).collect();
    r.type_(&long);
    assert_eq!(r.got(1), long);
}

#[test]
fn a_broken_input_ring_stops_that_domain_only() {
    let mut r = Rig::new(false, &[(1, "one"), (2, "two")]);
    let p = r.pages.get_mut(&1).unwrap();
    // in_prod (3076) far ahead of in_cons (3072).
    p.set(3076, 5000);
    r.type_(b"lost");
    assert!(r.out.0.contains(
        "[d0 control] d1 one: console ring protocol violation (in_cons=0x0 in_prod=0x1388), not served any more"
    ));
    // Not reported again; its output is not drained any more.
    r.type_(b"more");
    assert_eq!(r.out.0.matches("violation").count(), 1);
    assert_eq!(r.print(1, b"hidden\n"), 0);
    // The other domain is still served.
    r.type_(b"\x01\x01\x01ok");
    assert_eq!(r.got(2), b"ok");
    assert_eq!(r.print(2, b"fine\n"), 5);
    assert!(r.out.0.ends_with("[d2 two] fine\n"));
}

#[test]
fn a_broken_output_ring_is_reported_once() {
    let mut r = Rig::new(false, &[(1, "one")]);
    let p = r.pages.get_mut(&1).unwrap();
    p.set(3084, 4000); // out_prod
    let page = r.pages.get_mut(&1).unwrap();
    assert_eq!(r.b.drain(DomId(1), page, &mut r.out), 0);
    assert_eq!(r.b.drain(DomId(1), page, &mut r.out), 0);
    assert_eq!(r.out.0.matches("out_cons=0x0 out_prod=0xfa0").count(), 1);
}

#[test]
fn the_focus_domains_prompt_shows_at_once_others_wait_for_their_newline() {
    let mut r = Rig::new(false, &[(1, "grub"), (2, "other")]);
    r.print(1, b"grub> ");
    assert_eq!(r.out.0, "[d1 grub] grub> ");
    r.print(2, b"half");
    assert_eq!(r.out.0, "[d1 grub] grub> ");
    r.print(1, b"echo hi\n");
    r.print(2, b" done\n");
    assert_eq!(r.out.0, "[d1 grub] grub> echo hi\n[d2 other] half done\n");
}

#[test]
fn raw_output_follows_the_focus() {
    let mut r = Rig::new(true, &[(1, "grub"), (2, "other")]);
    r.print(1, b"\x1b[H\rgrub> ");
    r.print(2, b"x\r\n");
    assert_eq!(r.out.0, "\x1b[H\rgrub> \n[d2 other] x\n");
    r.out.0.clear();
    r.type_(b"\x01\x01\x01");
    r.print(1, b"\x1b[2J\n");
    r.print(2, b"\x1b[1m");
    assert_eq!(
        r.out.0,
        "[d0 control] *** console input to d2 other (type Ctrl-a three times to switch)\n[d1 grub] \x1b[2J\n\x1b[1m"
    );
}

#[test]
fn removal_drains_flushes_and_moves_the_focus() {
    let mut r = Rig::new(false, &[(1, "one"), (2, "two"), (3, "three")]);
    r.type_(b"\x01\x01\x01");
    assert_eq!(r.b.focus(), Some(DomId(2)));
    r.out.0.clear();
    let mut page = r.pages.remove(&2).unwrap();
    page.produce(b"last words\nno newline");
    r.b.remove(DomId(2), Some(&mut page), &mut r.out);
    assert_eq!(r.out.0, "[d2 two] last words\n[d2 two] no newline\n");
    assert!(!r.b.contains(DomId(2)));
    assert_eq!(r.b.focus(), Some(DomId(3)));
    r.b.remove::<FakePage, _>(DomId(3), None, &mut r.out);
    assert_eq!(r.b.focus(), Some(DomId(1)));
    r.b.remove::<FakePage, _>(DomId(1), None, &mut r.out);
    assert_eq!(r.b.focus(), None);
    // Input with nobody to take it is dropped.
    r.type_(b"into the void");
    assert_eq!(r.b.add(DomId(4), "four"), Ok(()));
    assert_eq!(r.b.add(DomId(4), "four"), Err(Errno::EEXIST));
    assert_eq!(r.b.focus(), Some(DomId(4)));
}

#[test]
fn own_lines_are_prefixed_and_bounded() {
    let mut r = Rig::new(false, &[]);
    r.b.say(&mut r.out, format_args!("hello {}", 7));
    assert_eq!(r.out.0, "[d0 control] hello 7\n");
    r.out.0.clear();
    let long = "y".repeat(1000);
    r.b.say(&mut r.out, format_args!("{long}"));
    assert_eq!(
        r.out.0,
        std::format!("[d0 control] {}\n", "y".repeat(LINE_MAX))
    );
}

#[test]
fn console_raw_is_one_of_the_console_values() {
    assert!(raw_requested(b"console=raw"));
    assert!(raw_requested(b"loglvl=all console=com1,raw debug"));
    assert!(!raw_requested(b""));
    assert!(!raw_requested(b"console=com1 test"));
    assert!(!raw_requested(b"console=rawx raw xconsole=raw"));
}
