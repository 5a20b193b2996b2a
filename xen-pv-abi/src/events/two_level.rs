//! The 2-level event-channel ABI, guest side: the upcall dispatcher and port
//! mask/unmask on `shared_info` (`xen-pv-abi.md` §6.3).
//!
//! Ports `0..4096`: port `p` is bit `p % 64` of word `p / 64` of `evtchn_pending` and
//! `evtchn_mask`; bit `p / 64` of a vCPU's `evtchn_pending_sel` says that word may have
//! pending ports for that vCPU.
//!
//! The `vcpu_info` used is the legacy slot in `shared_info` (vCPUs 0..32); a vCPU whose
//! `vcpu_info` was moved with `VCPUOP_register_vcpu_info` is not covered.

use super::{EventMemory, Resend, check_port};
use crate::errno::Errno;
use crate::ids::{EvtchnPort, VcpuId};
use crate::shared_info::{EVTCHN_2L_NR_CHANNELS, SharedInfo, VcpuInfo, XEN_LEGACY_MAX_VCPUS};
use core::mem::{offset_of, size_of};

const PENDING: usize = offset_of!(SharedInfo, evtchn_pending);
const MASK: usize = offset_of!(SharedInfo, evtchn_mask);
const UPCALL_PENDING: usize = offset_of!(VcpuInfo, evtchn_upcall_pending);
const UPCALL_MASK: usize = offset_of!(VcpuInfo, evtchn_upcall_mask);
const PENDING_SEL: usize = offset_of!(VcpuInfo, evtchn_pending_sel);
/// Ports per word of the bitmaps.
const BITS: u32 = u64::BITS;

/// The 2-level event state in a `shared_info` page.
///
/// `M` is the page: `&'static AtomicPage` in a guest, a fake in tests.
///
/// ```
/// use xen_pv_abi::events::{AtomicPage, EventMemory, two_level::TwoLevel};
/// use xen_pv_abi::{EvtchnPort, VcpuId};
///
/// let page = AtomicPage::new(); // stands for shared_info
/// let events = TwoLevel::new(&page);
/// // What the hypervisor does to raise port 70 for vCPU 0:
/// page.fetch_or_u64(2048 + 8, 1 << 6); // evtchn_pending word 1, bit 6
/// page.fetch_or_u64(8, 1 << 1); // vcpu_info[0].evtchn_pending_sel bit 1
/// page.store_u8(0, 1); // evtchn_upcall_pending
///
/// let mut seen = Vec::new();
/// events.dispatch(VcpuId(0), |port| seen.push(port)).unwrap();
/// assert_eq!(seen, [EvtchnPort(70)]);
/// assert!(!events.is_pending(EvtchnPort(70)).unwrap());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TwoLevel<M> {
    shared_info: M,
}

/// Byte offset of the `vcpu_info` of `vcpu`, if it has a slot in `shared_info`.
fn vcpu_info(vcpu: VcpuId) -> Result<usize, Errno> {
    let v = vcpu.0 as usize;
    if v < XEN_LEGACY_MAX_VCPUS {
        Ok(v * size_of::<VcpuInfo>())
    } else {
        Err(Errno::EINVAL)
    }
}

/// Byte offset of the word holding `port` within a bitmap, and the port's bit.
fn locate(port: EvtchnPort) -> Result<(usize, u64), Errno> {
    let p = check_port(port, EVTCHN_2L_NR_CHANNELS as u32)?;
    Ok(((p / BITS) as usize * 8, 1 << (p % BITS)))
}

impl<M: EventMemory> TwoLevel<M> {
    /// Event state in the `shared_info` page `shared_info`.
    pub const fn new(shared_info: M) -> Self {
        Self { shared_info }
    }

    /// The underlying page.
    pub fn memory(&self) -> &M {
        &self.shared_info
    }

    /// The upcall handler's scan for `vcpu`, in Xen's race-free order (Mini-OS
    /// `do_hypervisor_callback`): clear `evtchn_upcall_pending`; take and clear the
    /// selector with one exchange; for each selected word, lowest first, repeatedly take
    /// `pending & !mask` and, for each port in it, clear its pending bit and call
    /// `handler(port)`. Returns how many ports were handled.
    ///
    /// An event raised while the scan runs either sets the selector again (found by the
    /// next upcall, which is pending again) or lands in a word being scanned (found by the
    /// re-read). Masked pending ports stay pending until unmasked.
    pub fn dispatch(
        &self,
        vcpu: VcpuId,
        mut handler: impl FnMut(EvtchnPort),
    ) -> Result<usize, Errno> {
        let vi = vcpu_info(vcpu)?;
        let m = &self.shared_info;
        m.store_u8(vi + UPCALL_PENDING, 0);
        let mut sel = m.swap_u64(vi + PENDING_SEL, 0);
        let mut handled = 0;
        while sel != 0 {
            let word = sel.trailing_zeros();
            sel &= sel - 1;
            let off = word as usize * 8;
            loop {
                let mut ready = m.load_u64(PENDING + off) & !m.load_u64(MASK + off);
                if ready == 0 {
                    break;
                }
                while ready != 0 {
                    let bit = ready.trailing_zeros();
                    ready &= ready - 1;
                    // Clear before handling: an event raised during the handler is kept.
                    let was = m.fetch_and_u64(PENDING + off, !(1 << bit));
                    if was & (1 << bit) != 0 {
                        handler(EvtchnPort(word * BITS + bit));
                        handled += 1;
                    }
                }
            }
        }
        Ok(handled)
    }

    /// Masks `port`; returns whether it was already masked.
    pub fn mask(&self, port: EvtchnPort) -> Result<bool, Errno> {
        let (off, bit) = locate(port)?;
        Ok(self.shared_info.fetch_or_u64(MASK + off, bit) & bit != 0)
    }

    /// Unmasks `port` on the guest side for the local `vcpu` (the vCPU the port notifies),
    /// without a hypercall when possible: clear the mask bit; if the port is pending and
    /// the selector bit of its word was clear, set it and `evtchn_upcall_pending`. If
    /// events are enabled on `vcpu` the result asks to force the callback with a
    /// hypercall ([`Resend::complete`]); with events disabled the upcall happens when the
    /// guest re-enables them and checks `evtchn_upcall_pending`.
    ///
    /// For a port bound to another vCPU use `EVTCHNOP_unmask` ([`crate::evtchn::unmask`]).
    pub fn unmask_local(&self, vcpu: VcpuId, port: EvtchnPort) -> Result<Resend, Errno> {
        let vi = vcpu_info(vcpu)?;
        let (off, bit) = locate(port)?;
        let m = &self.shared_info;
        // Mask first, then look at pending: an event raised in between is either seen here
        // or delivered by the hypervisor itself (the port is no longer masked).
        m.fetch_and_u64(MASK + off, !bit);
        if m.load_u64(PENDING + off) & bit == 0 {
            return Ok(Resend::Nothing);
        }
        let sel_bit = 1u64 << (off / 8);
        if m.fetch_or_u64(vi + PENDING_SEL, sel_bit) & sel_bit != 0 {
            // The word is already selected: the upcall is or will be pending.
            return Ok(Resend::Nothing);
        }
        m.store_u8(vi + UPCALL_PENDING, 1);
        Ok(if m.load_u8(vi + UPCALL_MASK) == 0 {
            Resend::ForceCallback
        } else {
            Resend::Nothing
        })
    }

    /// Whether `port` is pending.
    pub fn is_pending(&self, port: EvtchnPort) -> Result<bool, Errno> {
        let (off, bit) = locate(port)?;
        Ok(self.shared_info.load_u64(PENDING + off) & bit != 0)
    }

    /// Whether `port` is masked.
    pub fn is_masked(&self, port: EvtchnPort) -> Result<bool, Errno> {
        let (off, bit) = locate(port)?;
        Ok(self.shared_info.load_u64(MASK + off) & bit != 0)
    }

    /// Clears the pending bit of `port`; returns whether it was set.
    pub fn clear_pending(&self, port: EvtchnPort) -> Result<bool, Errno> {
        let (off, bit) = locate(port)?;
        Ok(self.shared_info.fetch_and_u64(PENDING + off, !bit) & bit != 0)
    }

    /// Sets `evtchn_upcall_mask` of `vcpu` (the guest's "interrupts disabled" flag);
    /// returns the previous value. Re-enabling does not deliver an upcall that became
    /// pending meanwhile: check [`upcall_pending`](Self::upcall_pending) and force it (any
    /// hypercall) if needed.
    pub fn set_upcall_mask(&self, vcpu: VcpuId, masked: bool) -> Result<bool, Errno> {
        let off = vcpu_info(vcpu)? + UPCALL_MASK;
        let old = self.shared_info.load_u8(off) != 0;
        self.shared_info.store_u8(off, u8::from(masked));
        Ok(old)
    }

    /// Whether the hypervisor marked an upcall pending for `vcpu`.
    pub fn upcall_pending(&self, vcpu: VcpuId) -> Result<bool, Errno> {
        let off = vcpu_info(vcpu)? + UPCALL_PENDING;
        Ok(self.shared_info.load_u8(off) != 0)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::events::AtomicPage;
    use std::vec::Vec;

    /// The hypervisor's half of §6.3: mark `port` pending for `vcpu`.
    fn raise(page: &AtomicPage, vcpu: u32, port: u32) {
        let (off, bit) = locate(EvtchnPort(port)).unwrap();
        if page.fetch_or_u64(PENDING + off, bit) & bit != 0 {
            return;
        }
        let vi = vcpu as usize * 64;
        let sel_bit = 1 << (off / 8);
        if page.load_u64(MASK + off) & bit == 0
            && page.fetch_or_u64(vi + PENDING_SEL, sel_bit) & sel_bit == 0
        {
            page.store_u8(vi + UPCALL_PENDING, 1);
        }
    }

    fn collect(ev: &TwoLevel<&AtomicPage>, vcpu: u32) -> Vec<u32> {
        let mut seen = Vec::new();
        let n = ev.dispatch(VcpuId(vcpu), |p| seen.push(p.0)).unwrap();
        assert_eq!(n, seen.len());
        seen
    }

    #[test]
    fn dispatch_order_and_clearing() {
        let page = AtomicPage::new();
        let ev = TwoLevel::new(&page);
        for p in [4095, 130, 3, 64, 1, 129] {
            raise(&page, 0, p);
        }
        assert!(ev.upcall_pending(VcpuId(0)).unwrap());
        // Words in increasing order, ports in increasing order within a word.
        assert_eq!(collect(&ev, 0), [1, 3, 64, 129, 130, 4095]);
        assert!(!ev.upcall_pending(VcpuId(0)).unwrap());
        assert_eq!(page.load_u64(8), 0, "selector consumed");
        for w in 0..64 {
            assert_eq!(page.load_u64(PENDING + w * 8), 0);
        }
        // Nothing left: a second upcall handles nothing.
        assert_eq!(collect(&ev, 0), []);
    }

    #[test]
    fn events_raised_by_the_handler_are_not_lost() {
        let page = AtomicPage::new();
        let ev = TwoLevel::new(&page);
        raise(&page, 0, 5);
        let mut seen = Vec::new();
        ev.dispatch(VcpuId(0), |p| {
            seen.push(p.0);
            if seen.len() == 1 {
                raise(&page, 0, 5); // same word: found by the re-read
                raise(&page, 0, 200); // other word: selector + upcall set again
            }
        })
        .unwrap();
        assert_eq!(seen, [5, 5]);
        assert!(ev.upcall_pending(VcpuId(0)).unwrap());
        assert_eq!(collect(&ev, 0), [200]);
    }

    #[test]
    fn only_the_selected_words_are_scanned() {
        let page = AtomicPage::new();
        let ev = TwoLevel::new(&page);
        // Pending without selector bit (e.g. raised for another vCPU).
        page.fetch_or_u64(PENDING + 8, 1);
        raise(&page, 1, 7);
        assert_eq!(collect(&ev, 0), []);
        assert_eq!(collect(&ev, 1), [7]);
        assert!(ev.is_pending(EvtchnPort(64)).unwrap());
    }

    #[test]
    fn masked_port_stays_pending_and_unmask_reraises() {
        let page = AtomicPage::new();
        let ev = TwoLevel::new(&page);
        let port = EvtchnPort(77);
        assert!(!ev.mask(port).unwrap());
        assert!(ev.mask(port).unwrap());
        raise(&page, 0, 77);
        assert!(!ev.upcall_pending(VcpuId(0)).unwrap(), "masked: no upcall");
        raise(&page, 0, 3);
        assert_eq!(collect(&ev, 0), [3]);
        assert!(ev.is_pending(port).unwrap());

        // Events enabled: the unmask asks for a forced callback.
        assert_eq!(
            ev.unmask_local(VcpuId(0), port).unwrap(),
            Resend::ForceCallback
        );
        assert!(!ev.is_masked(port).unwrap());
        assert!(ev.upcall_pending(VcpuId(0)).unwrap());
        assert_eq!(collect(&ev, 0), [77]);

        // Events disabled: the upcall is only marked pending.
        ev.mask(port).unwrap();
        raise(&page, 0, 77);
        assert!(!ev.set_upcall_mask(VcpuId(0), true).unwrap());
        assert_eq!(ev.unmask_local(VcpuId(0), port).unwrap(), Resend::Nothing);
        assert!(ev.upcall_pending(VcpuId(0)).unwrap());
        assert_eq!(collect(&ev, 0), [77]);

        // Not pending: nothing to resend.
        ev.mask(port).unwrap();
        assert_eq!(ev.unmask_local(VcpuId(0), port).unwrap(), Resend::Nothing);
        assert!(!ev.upcall_pending(VcpuId(0)).unwrap());
    }

    #[test]
    fn unmask_with_the_word_already_selected_does_not_force() {
        let page = AtomicPage::new();
        let ev = TwoLevel::new(&page);
        ev.mask(EvtchnPort(10)).unwrap();
        raise(&page, 0, 10);
        raise(&page, 0, 11); // selects word 0
        assert_eq!(
            ev.unmask_local(VcpuId(0), EvtchnPort(10)).unwrap(),
            Resend::Nothing
        );
        assert_eq!(collect(&ev, 0), [10, 11]);
    }

    #[test]
    fn bad_ports_and_vcpus_are_rejected() {
        let page = AtomicPage::new();
        let ev = TwoLevel::new(&page);
        assert_eq!(ev.mask(EvtchnPort(4096)), Err(Errno::EINVAL));
        assert_eq!(ev.is_pending(EvtchnPort(u32::MAX)), Err(Errno::EINVAL));
        assert_eq!(ev.dispatch(VcpuId(32), |_| ()), Err(Errno::EINVAL));
        assert_eq!(
            ev.unmask_local(VcpuId(0), EvtchnPort(1 << 20)),
            Err(Errno::EINVAL)
        );
    }

    /// Random raise/mask/unmask/dispatch sequences: every raise of an unmasked port is
    /// handled exactly once per pending period, and nothing masked is ever handled.
    #[test]
    fn random_sequences_deliver_exactly_the_unmasked_pending_ports() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50 {
            let page = AtomicPage::new();
            let ev = TwoLevel::new(&page);
            let mut pending = [false; 256];
            let mut masked = [false; 256];
            for _ in 0..400 {
                let port = (next() % 256) as u32;
                match next() % 4 {
                    0 | 1 => {
                        raise(&page, 0, port);
                        pending[port as usize] = true;
                    }
                    2 => {
                        if masked[port as usize] {
                            let _ = ev.unmask_local(VcpuId(0), EvtchnPort(port)).unwrap();
                        } else {
                            ev.mask(EvtchnPort(port)).unwrap();
                        }
                        masked[port as usize] ^= true;
                    }
                    _ => {
                        let got = collect(&ev, 0);
                        let want: Vec<u32> = (0..256)
                            .filter(|&p| pending[p as usize] && !masked[p as usize])
                            .collect();
                        assert_eq!(got, want);
                        for p in got {
                            pending[p as usize] = false;
                        }
                    }
                }
            }
        }
    }
}
