//! `struct start_info` (x86_64): what a PV guest finds at `rsi` when it starts.

use core::mem::offset_of;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{EvtchnPort, Mfn, Pfn};

/// Magic string of a 64-bit PV start_info (NUL-terminated in a 32-byte field).
pub const START_INFO_MAGIC_X86_64: &[u8] = b"xen-3.0-x86_64";
/// Length of `cmd_line` (`MAX_GUEST_CMDLINE`).
pub const MAX_GUEST_CMDLINE: usize = 1024;

/// `SIF_PRIVILEGED`: the domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// `SIF_INITDOMAIN`: this is the initial (control) domain.
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// `SIF_MULTIBOOT_MOD`: `mod_start` is a multiboot module list.
pub const SIF_MULTIBOOT_MOD: u32 = 1 << 2;
/// `SIF_MOD_START_PFN`: `mod_start` is a PFN, not a VA.
pub const SIF_MOD_START_PFN: u32 = 1 << 3;
/// `SIF_VIRT_P2M_4TOOLS`: the p2m is virtually mapped for the tools.
pub const SIF_VIRT_P2M_4TOOLS: u32 = 1 << 4;

/// The `console` union of start_info: `domU {mfn, evtchn}` or `dom0 {info_off, info_size}`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ConsoleInfo {
    /// domU: MFN of the console ring. dom0: `info_off` (low 32 bits) and `info_size`.
    pub word0: u64,
    /// domU: console event channel.
    pub word1: u32,
    /// Padding.
    pub _pad: u32,
}

impl ConsoleInfo {
    /// The domU form.
    pub const fn domu(mfn: Mfn, evtchn: EvtchnPort) -> Self {
        Self {
            word0: mfn.0,
            word1: evtchn.0,
            _pad: 0,
        }
    }
    /// The dom0 form.
    pub const fn dom0(info_off: u32, info_size: u32) -> Self {
        Self {
            word0: info_off as u64 | (info_size as u64) << 32,
            word1: 0,
            _pad: 0,
        }
    }
    /// domU: MFN of the console ring page.
    pub const fn domu_mfn(&self) -> Mfn {
        Mfn(self.word0)
    }
    /// domU: event channel of the console ring.
    pub const fn domu_evtchn(&self) -> EvtchnPort {
        EvtchnPort(self.word1)
    }
    /// dom0: offset of `dom0_vga_console_info` in the start_info page (0 = none).
    pub const fn dom0_info_off(&self) -> u32 {
        self.word0 as u32
    }
    /// dom0: size of `dom0_vga_console_info`.
    pub const fn dom0_info_size(&self) -> u32 {
        (self.word0 >> 32) as u32
    }
}

/// `struct start_info` for x86_64 (1168 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct StartInfo {
    /// `"xen-3.0-x86_64"`, NUL-padded.
    pub magic: [u8; 32],
    /// Total pages of the domain (= length of the p2m list).
    pub nr_pages: u64,
    /// Machine address of the shared_info page.
    pub shared_info: u64,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Padding.
    pub _pad0: u32,
    /// MFN of the xenstore ring page.
    pub store_mfn: u64,
    /// Event channel of the xenstore ring.
    pub store_evtchn: u32,
    /// Padding.
    pub _pad1: u32,
    /// Console information (domU ring or dom0 VGA info).
    pub console: ConsoleInfo,
    /// VA of the bootstrap L4 page table.
    pub pt_base: u64,
    /// Number of bootstrap page-table frames.
    pub nr_pt_frames: u64,
    /// VA of the p2m list (`u64 mfn_list[nr_pages]`).
    pub mfn_list: u64,
    /// VA (or PFN with `SIF_MOD_START_PFN`) of the initial module.
    pub mod_start: u64,
    /// Length of the initial module in bytes.
    pub mod_len: u64,
    /// NUL-terminated command line.
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// First pfn of the p2m and its page tables (only with INIT_P2M).
    pub first_p2m_pfn: u64,
    /// Number of those pfns.
    pub nr_p2m_frames: u64,
}

impl StartInfo {
    /// The magic field up to its NUL.
    pub fn magic_str(&self) -> &[u8] {
        until_nul(&self.magic)
    }
    /// The command line up to its NUL.
    pub fn cmd_line_bytes(&self) -> &[u8] {
        until_nul(&self.cmd_line)
    }
    /// The command line up to its NUL, as text: up to the first byte that is not UTF-8.
    pub fn cmd_line_str(&self) -> &str {
        utf8_prefix(self.cmd_line_bytes())
    }
    /// Whether this is the initial domain (dom0): it has no console ring, only console_io.
    pub const fn is_initial_domain(&self) -> bool {
        self.flags & SIF_INITDOMAIN != 0
    }
    /// Whether the domain is privileged (`SIF_PRIVILEGED`).
    pub const fn is_privileged(&self) -> bool {
        self.flags & SIF_PRIVILEGED != 0
    }
    /// Total pages of the domain, as the end (exclusive) of its pseudo-physical frames.
    pub const fn nr_pages(&self) -> Pfn {
        Pfn(self.nr_pages)
    }
    /// Frame of the shared_info page (`shared_info` is its machine address).
    pub const fn shared_info_mfn(&self) -> Mfn {
        Mfn::containing(self.shared_info)
    }
    /// The xenstore ring page and its event channel; `None` for the initial domain, which
    /// gets neither from the domain builder.
    pub const fn xenstore(&self) -> Option<(Mfn, EvtchnPort)> {
        if self.is_initial_domain() {
            None
        } else {
            Some((Mfn(self.store_mfn), EvtchnPort(self.store_evtchn)))
        }
    }
    /// The console ring page and its event channel (a domU); `None` for the initial
    /// domain, whose console is the `console_io` hypercall.
    pub const fn console_ring(&self) -> Option<(Mfn, EvtchnPort)> {
        if self.is_initial_domain() {
            None
        } else {
            Some((self.console.domu_mfn(), self.console.domu_evtchn()))
        }
    }
    /// First pseudo-physical frame of the p2m and its page tables (only with INIT_P2M).
    pub const fn first_p2m_pfn(&self) -> Pfn {
        Pfn(self.first_p2m_pfn)
    }
}

/// `bytes` as text: up to the first byte that is not UTF-8.
pub fn utf8_prefix(bytes: &[u8]) -> &str {
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        // `valid_up_to` is a char boundary, so the second conversion cannot fail.
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

fn until_nul(b: &[u8]) -> &[u8] {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..n]
}

const_assert_eq!(core::mem::size_of::<ConsoleInfo>(), 16);
const_assert_eq!(core::mem::size_of::<StartInfo>(), 1168);
const_assert_eq!(offset_of!(StartInfo, nr_pages), 32);
const_assert_eq!(offset_of!(StartInfo, shared_info), 40);
const_assert_eq!(offset_of!(StartInfo, flags), 48);
const_assert_eq!(offset_of!(StartInfo, store_mfn), 56);
const_assert_eq!(offset_of!(StartInfo, store_evtchn), 64);
const_assert_eq!(offset_of!(StartInfo, console), 72);
const_assert_eq!(offset_of!(StartInfo, pt_base), 88);
const_assert_eq!(offset_of!(StartInfo, nr_pt_frames), 96);
const_assert_eq!(offset_of!(StartInfo, mfn_list), 104);
const_assert_eq!(offset_of!(StartInfo, mod_start), 112);
const_assert_eq!(offset_of!(StartInfo, mod_len), 120);
const_assert_eq!(offset_of!(StartInfo, cmd_line), 128);
const_assert_eq!(offset_of!(StartInfo, first_p2m_pfn), 1152);
const_assert_eq!(offset_of!(StartInfo, nr_p2m_frames), 1160);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_union_forms() {
        let c = ConsoleInfo::domu(Mfn(0x1234), EvtchnPort(2));
        assert_eq!(
            (c.domu_mfn(), c.domu_evtchn()),
            (Mfn(0x1234), EvtchnPort(2))
        );
        let d = ConsoleInfo::dom0(1168, 32);
        assert_eq!((d.dom0_info_off(), d.dom0_info_size()), (1168, 32));
    }

    #[test]
    fn typed_accessors_follow_the_domain_kind() {
        use zerocopy::FromZeros;
        let mut si = StartInfo::new_zeroed();
        si.shared_info = 0x1234_5000;
        si.store_mfn = 7;
        si.store_evtchn = 1;
        si.console = ConsoleInfo::domu(Mfn(8), EvtchnPort(2));
        si.cmd_line[..4].copy_from_slice(b"a=\xffb");
        assert_eq!(si.shared_info_mfn(), Mfn(0x12345));
        assert_eq!(si.xenstore(), Some((Mfn(7), EvtchnPort(1))));
        assert_eq!(si.console_ring(), Some((Mfn(8), EvtchnPort(2))));
        assert_eq!(si.cmd_line_str(), "a=");
        si.flags = SIF_INITDOMAIN | SIF_PRIVILEGED;
        si.console = ConsoleInfo::dom0(0, 0);
        assert!(si.is_privileged());
        assert_eq!(si.console_ring(), None, "dom0 has console_io, not a ring");
        assert_eq!(si.xenstore(), None);
        assert_eq!(utf8_prefix(b"ok"), "ok");
    }
}
