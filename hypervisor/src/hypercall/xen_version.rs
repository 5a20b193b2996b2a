//! `xen_version` (17): who we are and what we offer.
//!
//! `XENVER_version` itself is answered by the fast path in `Hypervisor::hypercall`; it
//! is repeated here for callers that reach the slow path (e.g. cmd with high bits set).

use super::HcResult;
use super::handle::{GuestHandle, Untyped};
use crate::hv::{Hypervisor, XEN_VERSION_NUMBER};
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::Errno;
use xen_pv_abi::layout::{HYPERVISOR_VIRT_START, PAGE_SIZE};
use xen_pv_abi::version::{self as v, CompileInfo, FeatureInfo, PlatformParameters, feature};
use zerocopy::IntoBytes;

/// `XENVER_extraversion`: appended to "4.17"; says this is not Xen itself.
pub const EXTRAVERSION: &[u8] = b"-rs";
/// `XENVER_capabilities`: 64-bit PV guests only.
pub const CAPABILITIES: &[u8] = xen_pv_abi::version::CAPABILITY_X86_64_PV.as_bytes();
/// `XENVER_changeset`.
pub const CHANGESET: &[u8] = b"unavailable";

/// `s` NUL-padded (and NUL-terminated: truncated to `N - 1` bytes) in `N` bytes.
fn padded<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N - 1);
    out[..n].copy_from_slice(&s[..n]);
    out
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    pub(crate) fn do_xen_version(
        &mut self,
        idx: usize,
        cmd: u32,
        handle: GuestHandle<Untyped>,
    ) -> HcResult {
        // What `handle` points at depends on `cmd`: mostly fixed-size byte strings.
        let arg = handle.addr();
        match cmd {
            v::XENVER_VERSION => Ok(XEN_VERSION_NUMBER),
            v::XENVER_EXTRAVERSION => {
                self.write_guest(idx, arg, &padded::<16>(EXTRAVERSION))?;
                Ok(0)
            }
            v::XENVER_COMPILE_INFO => {
                let info = CompileInfo {
                    compiler: padded(b"rustc"),
                    compile_by: padded(b"hypervisor"),
                    compile_domain: [0; 32],
                    compile_date: [0; 32],
                };
                self.write_guest(idx, arg, info.as_bytes())?;
                Ok(0)
            }
            v::XENVER_CAPABILITIES => {
                self.write_guest(idx, arg, &padded::<1024>(CAPABILITIES))?;
                Ok(0)
            }
            v::XENVER_CHANGESET => {
                self.write_guest(idx, arg, &padded::<64>(CHANGESET))?;
                Ok(0)
            }
            v::XENVER_PLATFORM_PARAMETERS => {
                let params = PlatformParameters {
                    virt_start: HYPERVISOR_VIRT_START,
                };
                self.write_guest(idx, arg, params.as_bytes())?;
                Ok(0)
            }
            v::XENVER_GET_FEATURES => {
                let mut fi: FeatureInfo = self.read_handle(idx, handle.cast())?;
                // Only what we implement: MMU_PT_UPDATE_PRESERVE_AD, and dom0 for the
                // initial domain; no writable page tables, no grant-map avail bits yet.
                // Xen knows one submap and refuses the others with -EINVAL.
                let common = 1 << feature::MMU_PT_UPDATE_PRESERVE_AD;
                fi.submap = match fi.submap_idx {
                    0 if self.domains[idx].dom0 => common | 1 << feature::DOM0,
                    0 => common,
                    _ => return Err(Errno::EINVAL),
                };
                self.write_handle(idx, handle.cast(), &fi)?;
                Ok(0)
            }
            v::XENVER_PAGESIZE => Ok(PAGE_SIZE as u64),
            v::XENVER_GUEST_HANDLE => {
                self.write_guest(idx, arg, &[0u8; 16])?;
                Ok(0)
            }
            v::XENVER_COMMANDLINE => {
                if !self.domains[idx].dom0 {
                    return Err(Errno::EPERM);
                }
                let line = padded::<1024>(&self.cmdline);
                self.write_guest(idx, arg, &line)?;
                Ok(0)
            }
            _ => Err(Errno::ENOSYS),
        }
    }
}
