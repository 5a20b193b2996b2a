//! `console=raw`: the console-input domain's ring output passed through untouched.

use crate::hv::Hypervisor;
use crate::platform::{MachineMemory, Platform};

/// Whether the hypervisor command line asks for a raw console: a `console=` word whose
/// comma-separated values include `raw` (Xen's `console=` takes such a list, e.g.
/// `console=com1,raw`).
pub fn raw_requested(cmdline: &[u8]) -> bool {
    cmdline
        .split(|&b| b == b' ')
        .filter_map(|word| word.strip_prefix(b"console="))
        .any(|values| values.split(|&b| b == b',').any(|v| v == b"raw"))
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    /// With `console=raw`, makes the domain that gets console input (the first runnable
    /// one with a console ring) print its ring output raw. Decided once, at start: a
    /// domain that takes over input later keeps its prefixes.
    pub(crate) fn apply_console_mode(&mut self) {
        if !raw_requested(&self.cmdline) {
            return;
        }
        if let Some(idx) = self.input_domain() {
            self.domains[idx].console.set_raw(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::raw_requested;

    #[test]
    fn console_raw_is_one_of_the_console_values() {
        assert!(raw_requested(b"console=raw"));
        assert!(raw_requested(b"loglvl=all console=com1,raw debug"));
        assert!(!raw_requested(b""));
        assert!(!raw_requested(b"console=com1 test"));
        assert!(!raw_requested(b"console=rawx raw xconsole=raw"));
    }
}
