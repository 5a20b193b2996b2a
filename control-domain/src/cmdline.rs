//! The control domain's command line: `console=raw` (see [`crate::console::raw_requested`])
//! and the domain names.
//!
//! The hypervisor does not report domain names (Xen's `getdomaininfo` has none: xl keeps
//! them in xenstore, which this domain serves). Whoever builds the boot bundle passes them
//! here, one word per domain: `name.<id>=<name>`; `name.0=` names the control domain
//! itself (default [`OWN_DEFAULT_NAME`]). A domain without a word is called `domain<id>`.
//!
//! Device words (`vbd.`, `vif.`, `dev.<kind>.`) are parsed by [`crate::devices`].

use alloc::format;
use alloc::string::String;
use xen_pv_abi::DomId;

/// The control domain's name when the command line gives none.
pub const OWN_DEFAULT_NAME: &str = "control";

/// Longest name kept (the bundle's limit).
pub const NAME_MAX: usize = 31;

/// The name of domain `id` given on `cmdline`, cut to [`NAME_MAX`] bytes on a character
/// boundary; invalid UTF-8 is replaced.
pub fn given_name(cmdline: &[u8], id: DomId) -> Option<String> {
    let key = format!("name.{}=", id.0);
    let value = cmdline
        .split(|&b| b == b' ')
        .filter_map(|word| word.strip_prefix(key.as_bytes()))
        .next_back()?;
    let text = String::from_utf8_lossy(value);
    let mut cut = String::new();
    for c in text.chars() {
        if cut.len() + c.len_utf8() > NAME_MAX {
            break;
        }
        cut.push(c);
    }
    Some(cut)
}

/// The name of domain `id`: given on `cmdline`, else `control` for dom0 and
/// `domain<id>` for the others.
pub fn domain_name(cmdline: &[u8], id: DomId) -> String {
    given_name(cmdline, id).unwrap_or_else(|| match id.0 {
        0 => String::from(OWN_DEFAULT_NAME),
        n => format!("domain{n}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_words_and_have_defaults() {
        let cl = b"console=raw name.1=pv-guest name.12=other name.0=ctl name.1x=no";
        assert_eq!(domain_name(cl, DomId(1)), "pv-guest");
        assert_eq!(domain_name(cl, DomId(12)), "other");
        assert_eq!(domain_name(cl, DomId(0)), "ctl");
        assert_eq!(domain_name(cl, DomId(2)), "domain2");
        assert_eq!(domain_name(b"", DomId(0)), "control");
        // The last word wins; names are cut on a character boundary.
        let long = std::format!("name.3=a name.3={}", "é".repeat(20));
        assert_eq!(domain_name(long.as_bytes(), DomId(3)), "é".repeat(15));
        assert_eq!(domain_name(b"name.4=\xff", DomId(4)), "\u{fffd}");
    }
}
