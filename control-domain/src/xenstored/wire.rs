//! Wire-level helpers: message types (`io/xs_wire.h`), error names, payload parsing.

use alloc::vec::Vec;
use xen_pv_abi::Errno;

// The message types are the ABI's (`io/xs_wire.h`), re-exported so xenstored's modules
// name them from one place.
pub use xen_pv_abi::xenstore::{
    XS_CONTROL, XS_DIRECTORY, XS_DIRECTORY_PART, XS_ERROR, XS_GET_DOMAIN_PATH, XS_GET_PERMS,
    XS_INTRODUCE, XS_IS_DOMAIN_INTRODUCED, XS_MKDIR, XS_READ, XS_RELEASE, XS_RESET_WATCHES,
    XS_RESUME, XS_RM, XS_SET_PERMS, XS_SET_TARGET, XS_TRANSACTION_END, XS_TRANSACTION_START,
    XS_UNWATCH, XS_WATCH, XS_WATCH_EVENT, XS_WRITE,
};

/// Largest relative path (`XENSTORE_REL_PATH_MAX`).
pub const XENSTORE_REL_PATH_MAX: usize = 2048;
/// Largest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;

/// `DOMID_SELF`.
pub const DOMID_SELF: u32 = 0x7ff0;
/// First reserved domain id (`DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: u32 = 0x7ff0;

/// The error string xenstored sends for `e` (the `xsd_errors` table: anything outside it
/// goes out as `EINVAL`, as C xenstored's `send_error` does).
pub fn error_name(e: Errno) -> &'static str {
    match e {
        Errno::EACCES => "EACCES",
        Errno::EEXIST => "EEXIST",
        Errno::EISDIR => "EISDIR",
        Errno::ENOENT => "ENOENT",
        Errno::ENOMEM => "ENOMEM",
        Errno::ENOSPC => "ENOSPC",
        Errno::EIO => "EIO",
        Errno::ENOTEMPTY => "ENOTEMPTY",
        Errno::ENOSYS => "ENOSYS",
        Errno::EROFS => "EROFS",
        Errno::EBUSY => "EBUSY",
        Errno::EAGAIN => "EAGAIN",
        Errno::EISCONN => "EISCONN",
        Errno::E2BIG => "E2BIG",
        Errno::EPERM => "EPERM",
        _ => "EINVAL",
    }
}

/// The single argument of a payload that must hold exactly one NUL, at its end
/// (`onearg`). Non-UTF-8 is refused like a missing argument.
pub fn onearg(payload: &[u8]) -> Option<&str> {
    let (last, body) = payload.split_last()?;
    if *last != 0 || body.contains(&0) {
        return None;
    }
    core::str::from_utf8(body).ok()
}

/// Number of NUL-terminated strings in `payload` (`get_strings`' return value: bytes
/// after the last NUL are not counted).
pub fn count_strings(payload: &[u8]) -> usize {
    payload.iter().filter(|&&b| b == 0).count()
}

/// The first `n` NUL-terminated strings of `payload`, or `None` when there are fewer.
pub fn strings(payload: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    out.try_reserve(n).ok()?;
    let mut rest = payload;
    while out.len() < n {
        let nul = rest.iter().position(|&b| b == 0)?;
        out.push(&rest[..nul]);
        rest = &rest[nul + 1..];
    }
    Some(out)
}

/// C `atoi` as xenstored uses it: leading blanks, optional sign, decimal digits up to the
/// first non-digit; 0 when there are none. Saturates instead of C's undefined overflow.
pub fn atoi(s: &[u8]) -> i64 {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let mut v: i64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v
            .saturating_mul(10)
            .saturating_add(i64::from(s[i] - b'0'))
            .min(i64::from(u32::MAX) + 1);
        i += 1;
    }
    if neg { -v } else { v }
}

/// `atoi` assigned to an `unsigned int`, as xenstored does for domain ids.
pub fn atoi_u32(s: &[u8]) -> u32 {
    atoi(s) as i32 as u32
}
