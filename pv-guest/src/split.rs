//! The pure parts of the split-driver demo (`split_demo`): the roles from the
//! command line, the xenstore paths of both ends, the layout of the shared page and the
//! messages with their checksums. Host-tested.
//!
//! Command line: `demo=front peer=<backend domid>` or `demo=back peer=<frontend domid>`,
//! optionally `messages=<n>` (default [`DEFAULT_MESSAGES`], at most [`MAX_MESSAGES`]).

use crate::cmdline;
use core::fmt::Write as _;
use xen_pv_abi::DomId;

/// Messages the frontend sends by default.
pub const DEFAULT_MESSAGES: u32 = 64;
/// Most messages one run sends (keeps a typo from running for hours).
pub const MAX_MESSAGES: u32 = 100_000;

/// Which end of the device this domain is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Grants the page, allocates the channel, sends the messages.
    Front,
    /// Maps the page, binds the channel, answers.
    Back,
}

impl Role {
    /// `front` or `back`, as printed.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Front => "front",
            Role::Back => "back",
        }
    }
}

/// What the command line asks of the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// This domain's end.
    pub role: Role,
    /// The other end's domain.
    pub peer: DomId,
    /// Messages exchanged.
    pub messages: u32,
}

/// Why the command line does not describe a demo run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// `demo=` is neither `front` nor `back`.
    Role,
    /// `peer=` is missing or not a real domain id.
    Peer,
    /// `messages=` is not a number in `1..=MAX_MESSAGES`.
    Messages,
}

/// The demo request of `cmdline`: `None` without a `demo=` word.
pub fn request(cmdline: &[u8]) -> Option<Result<Request, BadRequest>> {
    let role = cmdline::value(cmdline, "demo")?;
    Some(parse_request(cmdline, role))
}

fn parse_request(cmdline: &[u8], role: &[u8]) -> Result<Request, BadRequest> {
    let role = match role {
        b"front" => Role::Front,
        b"back" => Role::Back,
        _ => return Err(BadRequest::Role),
    };
    let peer = cmdline::value(cmdline, "peer")
        .and_then(cmdline::parse_u64)
        .and_then(|p| u16::try_from(p).ok())
        .map(DomId)
        .filter(|d| d.is_real())
        .ok_or(BadRequest::Peer)?;
    let messages = match cmdline::value(cmdline, "messages") {
        None => DEFAULT_MESSAGES,
        Some(v) => cmdline::parse_u64(v)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_MESSAGES).contains(n))
            .ok_or(BadRequest::Messages)?,
    };
    Ok(Request {
        role,
        peer,
        messages,
    })
}

/// A path built in place (xenstore paths here are short; longer ones are cut off and
/// flagged, never overflow).
#[derive(Clone, Copy)]
pub struct Path {
    buf: [u8; Path::CAP],
    len: usize,
    truncated: bool,
}

impl Path {
    /// Longest path kept.
    pub const CAP: usize = 96;

    /// An empty path.
    pub const fn new() -> Path {
        Path {
            buf: [0; Path::CAP],
            len: 0,
            truncated: false,
        }
    }

    /// The path formatted from `args`.
    pub fn of(args: core::fmt::Arguments<'_>) -> Path {
        let mut p = Path::new();
        let _ = p.write_fmt(args);
        p
    }

    /// `self` followed by `/` and `leaf`.
    pub fn join(&self, leaf: &str) -> Path {
        Path::of(format_args!("{}/{leaf}", self.as_str()))
    }

    /// The text (only ASCII is ever written).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Whether something did not fit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl Default for Path {
    fn default() -> Self {
        Path::new()
    }
}

impl core::fmt::Write for Path {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = Path::CAP - self.len;
        if s.len() > room {
            self.truncated = true;
            return Err(core::fmt::Error);
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

impl core::fmt::Debug for Path {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for Path {
    fn eq(&self, other: &&str) -> bool {
        !self.truncated && self.as_str() == *other
    }
}

/// Where the two ends keep their nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The toolstack created the device: `/local/domain/<front>/device/demo/0` and
    /// `/local/domain/<back>/backend/demo/<front>/0`, each owned by its end and readable
    /// by the other (as libxl sets them up). The ends find each other through the
    /// `backend` and `frontend` nodes the toolstack wrote.
    Toolstack,
    /// No toolstack entry: each end makes its directory under its own `data/` (the one
    /// subtree of a domain's home it may create nodes in) and opens it to the peer.
    SelfMade,
}

impl Layout {
    /// The frontend's device directory.
    pub fn front_dir(self, front: DomId) -> Path {
        match self {
            Layout::Toolstack => Path::of(format_args!("/local/domain/{}/device/demo/0", front.0)),
            Layout::SelfMade => {
                Path::of(format_args!("/local/domain/{}/data/device/demo/0", front.0))
            }
        }
    }

    /// The backend's directory for `front`'s device.
    pub fn back_dir(self, back: DomId, front: DomId) -> Path {
        match self {
            Layout::Toolstack => Path::of(format_args!(
                "/local/domain/{}/backend/demo/{}/0",
                back.0, front.0
            )),
            Layout::SelfMade => Path::of(format_args!(
                "/local/domain/{}/data/backend/demo/{}/0",
                back.0, front.0
            )),
        }
    }

    /// As printed.
    pub const fn name(self) -> &'static str {
        match self {
            Layout::Toolstack => "toolstack",
            Layout::SelfMade => "self-made",
        }
    }
}

/// The shared page: the frontend writes a message and bumps [`REQ_SEQ`], the backend
/// answers with the message's checksum at [`RSP_SUM`] and sets [`RSP_SEQ`] to the same
/// number. Offsets in bytes; every field is a little-endian `u32` accessed volatile.
pub const REQ_SEQ: usize = 0;
/// Sequence number of the last answered message (backend).
pub const RSP_SEQ: usize = 4;
/// Length of the current message (frontend).
pub const REQ_LEN: usize = 8;
/// The backend's checksum of the current message.
pub const RSP_SUM: usize = 12;
/// Start of the message bytes.
pub const DATA: usize = 64;
/// Longest message.
pub const MAX_LEN: usize = 1024;

/// Writes message `i` (1-based) into `out` and returns its length (1..=MAX_LEN bytes,
/// varying with `i`).
pub fn message(i: u32, out: &mut [u8; MAX_LEN]) -> usize {
    let len = 1 + (i as usize * 37) % MAX_LEN;
    for (j, b) in out[..len].iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) as u8) ^ (j as u8).wrapping_mul(7) ^ 0x5a;
    }
    len
}

/// FNV-1a (32 bit) of `bytes`: the backend's answer to one message.
pub fn checksum(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Folds one message's checksum into the run's total (both ends print the total).
pub const fn fold_total(total: u32, sum: u32) -> u32 {
    total.rotate_left(5) ^ sum
}

/// The total both ends should print after `n` messages.
pub fn expected_total(n: u32) -> u32 {
    let mut buf = [0; MAX_LEN];
    (1..=n).fold(0, |t, i| {
        let len = message(i, &mut buf);
        fold_total(t, checksum(buf[..len].iter().copied()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_peers_from_the_command_line() {
        assert_eq!(request(b"console=hvc0"), None);
        assert_eq!(
            request(b"demo=front peer=2"),
            Some(Ok(Request {
                role: Role::Front,
                peer: DomId(2),
                messages: DEFAULT_MESSAGES
            }))
        );
        assert_eq!(
            request(b"x=1 demo=back peer=1 messages=7"),
            Some(Ok(Request {
                role: Role::Back,
                peer: DomId(1),
                messages: 7
            }))
        );
        assert_eq!(request(b"demo=middle peer=1"), Some(Err(BadRequest::Role)));
        assert_eq!(request(b"demo=front"), Some(Err(BadRequest::Peer)));
        assert_eq!(
            request(b"demo=front peer=70000"),
            Some(Err(BadRequest::Peer))
        );
        // DOMID_SELF is not a peer.
        assert_eq!(
            request(b"demo=front peer=32752"),
            Some(Err(BadRequest::Peer))
        );
        for bad in ["0", "100001", "x", "4294967297"] {
            let line = std::format!("demo=back peer=1 messages={bad}");
            assert_eq!(
                request(line.as_bytes()),
                Some(Err(BadRequest::Messages)),
                "{bad}"
            );
        }
    }

    #[test]
    fn both_layouts_name_the_paths_of_both_ends() {
        let (f, b) = (DomId(1), DomId(2));
        assert_eq!(
            Layout::Toolstack.front_dir(f),
            "/local/domain/1/device/demo/0"
        );
        assert_eq!(
            Layout::Toolstack.back_dir(b, f),
            "/local/domain/2/backend/demo/1/0"
        );
        assert_eq!(
            Layout::SelfMade.front_dir(f),
            "/local/domain/1/data/device/demo/0"
        );
        assert_eq!(
            Layout::SelfMade.back_dir(b, f).join("state"),
            "/local/domain/2/data/backend/demo/1/0/state"
        );
        let big = Layout::SelfMade.back_dir(DomId(32000), DomId(32001));
        assert!(!big.truncated());
    }

    #[test]
    fn paths_that_do_not_fit_are_flagged_not_overflowed() {
        let long = std::string::String::from("x").repeat(Path::CAP);
        let p = Path::of(format_args!("/{long}"));
        assert!(p.truncated());
        assert_ne!(p, "/");
        assert!(p.as_str().len() <= Path::CAP);
        let fits = Path::of(format_args!("{}", &long[..Path::CAP - 1]));
        assert!(!fits.truncated());
        assert!(fits.join("a").truncated());
    }

    #[test]
    fn messages_vary_in_length_and_content_and_stay_in_bounds() {
        let mut a = [0; MAX_LEN];
        let mut b = [0; MAX_LEN];
        let mut lens = std::collections::BTreeSet::new();
        for i in 1..=2000 {
            let len = message(i, &mut a);
            assert!((1..=MAX_LEN).contains(&len));
            assert!(DATA + len <= 4096);
            lens.insert(len);
            let len2 = message(i + 1, &mut b);
            let n = len.min(len2);
            assert_ne!(a[..n], b[..n], "consecutive messages differ");
        }
        assert!(lens.len() > 500);
        assert!(lens.contains(&MAX_LEN));
    }

    #[test]
    fn checksums_detect_changes_and_the_total_depends_on_order() {
        assert_eq!(checksum(*b""), 0x811c_9dc5);
        // FNV-1a's published value for "a".
        assert_eq!(checksum(*b"a"), 0xe40c_292c);
        let mut m = [0; MAX_LEN];
        let len = message(5, &mut m);
        let sum = checksum(m[..len].iter().copied());
        m[len / 2] ^= 1;
        assert_ne!(checksum(m[..len].iter().copied()), sum);
        assert_ne!(
            fold_total(fold_total(0, 1), 2),
            fold_total(fold_total(0, 2), 1)
        );
        assert_ne!(expected_total(64), expected_total(63));
        // The QEMU test (tests/tests/handshake.rs) asserts this figure for 64 messages.
        assert_eq!(expected_total(DEFAULT_MESSAGES), EXPECTED_64);
    }

    /// `expected_total(64)`, written out so a change of the message or checksum rules is
    /// noticed here and in the QEMU test.
    const EXPECTED_64: u32 = 0x240a_b0dc;
}
