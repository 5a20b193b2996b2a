//! Parsing of `key=value` words of a guest command line.

/// The value of the first whitespace-separated word `key=value` of `cmdline`.
pub fn value<'a>(cmdline: &'a [u8], key: &str) -> Option<&'a [u8]> {
    cmdline.split(|b| b.is_ascii_whitespace()).find_map(|word| {
        let rest = word.strip_prefix(key.as_bytes())?;
        rest.strip_prefix(b"=")
    })
}

/// A decimal `u64` (no sign, no spaces); `None` on anything else or on overflow.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values() {
        let cmd = b"console=hvc0 iterations=1000  x=";
        assert_eq!(value(cmd, "iterations"), Some(&b"1000"[..]));
        assert_eq!(value(cmd, "console"), Some(&b"hvc0"[..]));
        assert_eq!(value(cmd, "x"), Some(&b""[..]));
        assert_eq!(value(cmd, "iter"), None, "prefix of a key is not the key");
        assert_eq!(value(b"", "iterations"), None);
    }

    #[test]
    fn parses_decimal() {
        assert_eq!(parse_u64(b"100000"), Some(100_000));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"-1"), None);
    }
}
