//! The console backend: every domain's console ring printed with a `[d<id> <name>] `
//! prefix, serial input routed to one domain at a time.
//!
//! Each domU's ring output ends in a per-domain [`LineBuffer`], which prints whole lines
//! prefixed `[d<id> <name>] ` so that output of several domains never interleaves inside
//! a line; the control domain's own lines are prefixed `[d0 <name>] `. A shared
//! [`Cursor`] remembers who left the serial line unfinished, so every prefixed line
//! starts on a fresh line.
//!
//! Input: typed bytes (read with `console_io(CONSOLEIO_read)`) go to the *focus* domain's
//! `in[]`. Ctrl-a typed three times in a row moves the focus to the next domain, as Xen's
//! `conswitch`; fewer are passed on. With `console=raw` on the control domain's command
//! line, the focus domain's output is passed through untouched instead (like
//! `xl console`: full-screen guests such as GRUB position the cursor themselves).

pub mod ring;

pub use console_line::{Cursor, LINE_MAX, Output, Prefix};
pub use ring::{ProtocolViolation, SharedPage, drain, feed_input};

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use xen_pv_abi::{DomId, Errno};

/// One domain's partial ring output line (the line assembly is the `console-line` crate's,
/// shared with the hypervisor): '\r' dropped, control bytes other than '\t', backspace
/// and ESC shown as '.', UTF-8 kept.
pub type LineBuffer = console_line::LineBuffer<console_line::RingText>;

/// The focus-switch character: Ctrl-a.
pub const SWITCH_CHAR: u8 = 0x01;
/// How many switch characters in a row switch the focus.
pub const SWITCH_COUNT: u8 = 3;

/// What a typed byte means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A byte for the focus domain.
    Byte(u8),
    /// Move the focus to the next domain.
    Switch,
}

/// Recognises Ctrl-a typed three times in a row. The switch characters are held back
/// until it is clear they are not a switch: the next other byte releases them first.
#[derive(Clone, Copy, Debug, Default)]
pub struct SwitchKey {
    held: u8,
}

impl SwitchKey {
    /// Feeds one typed byte; `key` gets what it means (zero or more keys).
    pub fn push(&mut self, b: u8, mut key: impl FnMut(Key)) {
        if b == SWITCH_CHAR {
            self.held += 1;
            if self.held == SWITCH_COUNT {
                self.held = 0;
                key(Key::Switch);
            }
            return;
        }
        for _ in 0..core::mem::take(&mut self.held) {
            key(Key::Byte(SWITCH_CHAR));
        }
        key(Key::Byte(b));
    }
}

/// One served domain's console state.
#[derive(Debug)]
struct DomainConsole {
    id: DomId,
    name: String,
    line: LineBuffer,
    /// Its ring broke the protocol: no longer drained or fed.
    broken: bool,
}

/// The console backend of every served domain.
#[derive(Debug)]
pub struct Backend {
    cursor: Cursor,
    own_name: String,
    own: LineBuffer,
    /// Served domains in id order (the focus order).
    domains: Vec<DomainConsole>,
    focus: Option<DomId>,
    switch: SwitchKey,
    raw: bool,
}

/// Text formatted into a bounded buffer (the control domain's own lines).
struct Formatted(heapless::String<{ LINE_MAX }>);

impl fmt::Write for Formatted {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            // A line too long is cut; never an error that loses the whole line.
            let _ = self.0.push(c);
        }
        Ok(())
    }
}

impl Backend {
    /// A backend printing its own lines as `own_name`; `raw`: pass the focus domain's
    /// output through untouched.
    pub fn new(own_name: &str, raw: bool) -> Self {
        Backend {
            cursor: Cursor::new(),
            own_name: String::from(own_name),
            own: LineBuffer::new(),
            domains: Vec::new(),
            focus: None,
            switch: SwitchKey::default(),
            raw,
        }
    }

    /// Starts serving `id`'s console. The first domain served gets the focus.
    pub fn add(&mut self, id: DomId, name: &str) -> Result<(), Errno> {
        if self.position(id).is_some() {
            return Err(Errno::EEXIST);
        }
        let mut owned = String::new();
        owned.try_reserve(name.len()).map_err(|_| Errno::ENOMEM)?;
        owned.push_str(name);
        self.domains.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        let at = self.domains.partition_point(|d| d.id < id);
        self.domains.insert(
            at,
            DomainConsole {
                id,
                name: owned,
                line: LineBuffer::new(),
                broken: false,
            },
        );
        if self.focus.is_none() {
            self.set_focus(Some(id));
        }
        Ok(())
    }

    /// Whether `id` is served.
    pub fn contains(&self, id: DomId) -> bool {
        self.position(id).is_some()
    }

    /// The domain that gets typed input.
    pub fn focus(&self) -> Option<DomId> {
        self.focus
    }

    /// Drains `id`'s ring `page` into its line buffer. The focus domain's unfinished line
    /// (a prompt waiting for input) is shown at once; the rest of that line follows
    /// without a new prefix. A ring that breaks the protocol is reported once and not
    /// served any more. Returns the bytes consumed (the caller notifies the domain when
    /// there are any: room in the ring again).
    pub fn drain<P: SharedPage + ?Sized, O: Output + ?Sized>(
        &mut self,
        id: DomId,
        page: &mut P,
        out: &mut O,
    ) -> usize {
        let Some(i) = self.position(id) else { return 0 };
        let d = &mut self.domains[i];
        if d.broken {
            return 0;
        }
        let prefix = Prefix {
            id: d.id,
            name: &d.name,
        };
        match ring::drain(page, out, &mut self.cursor, &mut d.line, prefix) {
            Ok(n) => {
                if self.focus == Some(id) {
                    d.line.flush_partial(out, &mut self.cursor, prefix);
                }
                n
            }
            Err(v) => {
                self.break_ring(i, v, out);
                0
            }
        }
    }

    /// Stops serving `id`: drains its ring one last time (if it is still mapped),
    /// prints its unfinished line and forgets it. The focus moves on if it had it.
    pub fn remove<P: SharedPage + ?Sized, O: Output + ?Sized>(
        &mut self,
        id: DomId,
        page: Option<&mut P>,
        out: &mut O,
    ) {
        if let Some(page) = page {
            self.drain(id, page, out);
        }
        let Some(i) = self.position(id) else { return };
        let mut d = self.domains.remove(i);
        let prefix = Prefix {
            id: d.id,
            name: &d.name,
        };
        d.line.flush(out, &mut self.cursor, prefix);
        if self.focus == Some(id) {
            let next = self
                .domains
                .iter()
                .find(|d| d.id > id)
                .or(self.domains.first())
                .map(|d| d.id);
            self.focus = None;
            self.set_focus(next);
        }
    }

    /// Routes typed `bytes`: Ctrl-a ×3 switches the focus (announced on the console),
    /// everything else goes to the focus domain through `deliver(id, bytes)`, which puts
    /// them into that domain's `in[]` and returns how many went in (bytes that do not fit
    /// are dropped). Input with no domain to take it is dropped.
    pub fn input<O: Output + ?Sized>(
        &mut self,
        bytes: &[u8],
        out: &mut O,
        mut deliver: impl FnMut(DomId, &[u8]) -> Result<usize, ProtocolViolation>,
    ) {
        let mut pending: heapless::Vec<u8, 64> = heapless::Vec::new();
        for &b in bytes {
            let mut keys: heapless::Vec<Key, { SWITCH_COUNT as usize + 1 }> = heapless::Vec::new();
            self.switch.push(b, |k| {
                let _ = keys.push(k);
            });
            for k in keys {
                match k {
                    Key::Byte(b) => {
                        if pending.is_full() {
                            self.deliver(&pending, out, &mut deliver);
                            pending.clear();
                        }
                        let _ = pending.push(b);
                    }
                    Key::Switch => {
                        self.deliver(&pending, out, &mut deliver);
                        pending.clear();
                        self.switch_focus(out);
                    }
                }
            }
        }
        self.deliver(&pending, out, &mut deliver);
    }

    /// Prints one line of the control domain's own, `[d0 <name>] <text>`.
    pub fn say<O: Output + ?Sized>(&mut self, out: &mut O, args: fmt::Arguments<'_>) {
        let mut text = Formatted(heapless::String::new());
        let _ = text.write_fmt(args);
        let prefix = Prefix {
            id: DomId(0),
            name: &self.own_name,
        };
        self.own
            .feed(out, &mut self.cursor, prefix, text.0.as_bytes());
        self.own.feed(out, &mut self.cursor, prefix, b"\n");
    }

    fn deliver<O: Output + ?Sized>(
        &mut self,
        bytes: &[u8],
        out: &mut O,
        deliver: &mut impl FnMut(DomId, &[u8]) -> Result<usize, ProtocolViolation>,
    ) {
        if bytes.is_empty() {
            return;
        }
        let Some(id) = self.focus else { return };
        let Some(i) = self.position(id) else { return };
        if self.domains[i].broken {
            return;
        }
        if let Err(v) = deliver(id, bytes) {
            self.break_ring(i, v, out);
        }
    }

    /// The next domain (in id order, wrapping) gets the focus, announced on the console.
    fn switch_focus<O: Output + ?Sized>(&mut self, out: &mut O) {
        let next = match self.focus {
            Some(cur) => self
                .domains
                .iter()
                .find(|d| d.id > cur)
                .or(self.domains.first()),
            None => self.domains.first(),
        }
        .map(|d| d.id);
        let Some(next) = next else { return };
        self.set_focus(Some(next));
        let Some(i) = self.position(next) else { return };
        let name = self.domains[i].name.clone();
        self.say(
            out,
            format_args!(
                "*** console input to d{} {} (type Ctrl-a three times to switch)",
                next.0, name
            ),
        );
    }

    /// Moves the focus (and raw output with it).
    fn set_focus(&mut self, focus: Option<DomId>) {
        let raw = self.raw;
        for d in &mut self.domains {
            d.line.set_raw(raw && Some(d.id) == focus);
        }
        self.focus = focus;
    }

    fn break_ring<O: Output + ?Sized>(&mut self, i: usize, v: ProtocolViolation, out: &mut O) {
        let d = &mut self.domains[i];
        d.broken = true;
        let (id, name) = (d.id, d.name.clone());
        self.say(
            out,
            format_args!(
                "d{} {}: console ring protocol violation ({}_cons={:#x} {}_prod={:#x}), not served any more",
                id.0, name, v.ring, v.cons, v.ring, v.prod
            ),
        );
    }

    fn position(&self, id: DomId) -> Option<usize> {
        self.domains.binary_search_by_key(&id, |d| d.id).ok()
    }
}

/// Whether a command line asks for a raw console: a `console=` word whose
/// comma-separated values include `raw` (Xen's `console=` takes such a list, e.g.
/// `console=com1,raw`).
pub fn raw_requested(cmdline: &[u8]) -> bool {
    cmdline
        .split(|&b| b == b' ')
        .filter_map(|word| word.strip_prefix(b"console="))
        .any(|values| values.split(|&b| b == b',').any(|v| v == b"raw"))
}

#[cfg(test)]
mod tests;
