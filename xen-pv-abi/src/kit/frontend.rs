//! The xenbus helpers every frontend's handshake uses: store paths built on the
//! stack, decimal keys, and waiting for the backend's state.

use super::blkfront::{Backend, MAX_PATH, Store};
use super::xenbus::Wait;
use crate::errno::Errno;
use crate::xenstore::XenbusState;

/// A path of at most [`MAX_PATH`] bytes built on the stack.
#[derive(Clone, Copy)]
pub(super) struct Path {
    buf: [u8; MAX_PATH],
    len: usize,
}

impl Path {
    /// `base/key`; `ENAMETOOLONG` past [`MAX_PATH`].
    pub(super) fn join(base: &[u8], key: &str) -> Result<Path, Errno> {
        let mut p = Path {
            buf: [0; MAX_PATH],
            len: 0,
        };
        for part in [base, b"/", key.as_bytes()] {
            let end = p
                .len
                .checked_add(part.len())
                .filter(|&e| e <= MAX_PATH)
                .ok_or(Errno::ENAMETOOLONG)?;
            p.buf[p.len..end].copy_from_slice(part);
            p.len = end;
        }
        Ok(p)
    }

    pub(super) fn as_str(&self) -> Result<&str, Errno> {
        core::str::from_utf8(&self.buf[..self.len]).map_err(|_| Errno::EINVAL)
    }
}

/// `v` without one trailing NUL (some writers include it).
pub(super) fn strip_nul(v: &[u8]) -> &[u8] {
    match v.split_last() {
        Some((0, rest)) => rest,
        _ => v,
    }
}

/// A decimal `u64` of 1..=20 digits; `None` on anything else or on overflow.
pub(super) fn parse_u64(v: &[u8]) -> Option<u64> {
    let v = strip_nul(v);
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        if d.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// Reads a decimal node: `EINVAL` for a value that is not one (or too long).
pub(super) fn read_u64<S: Store + ?Sized>(store: &mut S, path: &str) -> Result<u64, Errno> {
    let mut buf = [0u8; 24];
    let n = store.read_into(path, &mut buf).map_err(|e| match e {
        Errno::E2BIG => Errno::EINVAL,
        e => e,
    })?;
    parse_u64(&buf[..n]).ok_or(Errno::EINVAL)
}

/// Writes `v` in decimal to `base/key`.
pub(super) fn write_u64<S: Store + ?Sized>(
    store: &mut S,
    base: &[u8],
    key: &str,
    mut v: u64,
) -> Result<(), Errno> {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let p = Path::join(base, key)?;
    store.write(p.as_str()?, &buf[i..])
}

/// Sets the frontend's `dev/state`.
pub(super) fn set_state<S: Store + ?Sized>(
    store: &mut S,
    dev: &str,
    s: XenbusState,
) -> Result<(), Errno> {
    let p = Path::join(dev.as_bytes(), "state")?;
    store.write(p.as_str()?, s.as_str().as_bytes())
}

fn backend_state<S: Store + ?Sized>(store: &mut S, state_path: &str) -> Result<XenbusState, Errno> {
    let mut buf = [0u8; 8];
    match store.read_into(state_path, &mut buf) {
        // A backend that removed its directory is gone.
        Err(Errno::ENOENT) | Err(Errno::E2BIG) => Ok(XenbusState::Unknown),
        Err(e) => Err(e),
        Ok(n) => Ok(XenbusState::parse(&buf[..n]).unwrap_or(XenbusState::Unknown)),
    }
}

/// Re-reads the backend's state (under a watch named `token`) until it reaches the
/// step of the handshake that `want` names; waits at most `max_waits` times
/// (`ETIMEDOUT` after):
///
/// * `InitWait`: InitWait or later; a Closing or vanished backend gives `ENODEV`;
/// * `Connected`: Connected; a closing, closed or vanished backend gives `ENODEV`;
/// * `Closing`: Closing, Closed or vanished;
/// * anything else (`Closed`): Closed, vanished, or back at InitWait.
pub(super) fn await_backend<S: Store + ?Sized, W: Wait + ?Sized>(
    store: &mut S,
    backend: &Backend,
    token: &str,
    wait: &mut W,
    max_waits: u32,
    want: XenbusState,
) -> Result<XenbusState, Errno> {
    use XenbusState::*;
    type Test = fn(XenbusState) -> bool;
    let (done, fail): (Test, Test) = match want {
        InitWait => (
            |s| matches!(s, InitWait | Initialised | Connected),
            |s| matches!(s, Closing | Unknown),
        ),
        Connected => (
            |s| s == Connected,
            |s| matches!(s, Closing | Closed | Unknown),
        ),
        Closing => (|s| matches!(s, Closing | Closed | Unknown), |_| false),
        _ => (|s| matches!(s, Closed | Unknown | InitWait), |_| false),
    };
    let state_path = Path::join(backend.path().as_bytes(), "state")?;
    let state_path = state_path.as_str()?;
    store.watch(state_path, token)?;
    let result = (|| {
        for _ in 0..=max_waits {
            store.drain_events()?;
            let s = backend_state(store, state_path)?;
            if done(s) {
                return Ok(s);
            }
            if fail(s) {
                return Err(Errno::ENODEV);
            }
            wait.wait()?;
        }
        Err(Errno::ETIMEDOUT)
    })();
    let _ = store.unwatch(state_path, token);
    result
}
