//! The FIFO delivery ABI (xen-control-plane.md §5, Xen's `event_fifo.c`): one event word
//! per port in guest-provided event-array pages, one control block per vCPU with the
//! `ready` bits and the heads of 16 priority queues; the hypervisor keeps the tails.
//!
//! Single CPU: the queue locks and the cmpxchg retries of Xen's link algorithm reduce to
//! plain reads and writes. The guest may still write anything into its words and control
//! blocks at any time, so nothing read back from them is trusted: the only values the
//! algorithm follows are the tails it keeps itself, and no loop depends on guest data.

use super::table::{Channel, Raised};
use super::two_level::{test_and_clear_bit, test_and_set_bit, test_bit};
use crate::mmu::{Frames, PageType, TypeState};
use crate::platform::MachineMemory;
use alloc::vec::Vec;
use core::mem::{offset_of, size_of};
use xen_pv_abi::event_channel::{
    EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_MAX_QUEUES,
    EvtchnFifoControlBlock,
};

/// Bit numbers of the event-word flags (xen-pv-abi defines them as masks).
const EVTCHN_FIFO_PENDING: u32 = xen_pv_abi::event_channel::EVTCHN_FIFO_PENDING.trailing_zeros();
const EVTCHN_FIFO_MASKED: u32 = xen_pv_abi::event_channel::EVTCHN_FIFO_MASKED.trailing_zeros();
const EVTCHN_FIFO_LINKED: u32 = xen_pv_abi::event_channel::EVTCHN_FIFO_LINKED.trailing_zeros();
const EVTCHN_FIFO_BUSY: u32 = xen_pv_abi::event_channel::EVTCHN_FIFO_BUSY.trailing_zeros();
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::{DomId, Errno, Mfn};

/// Size of a control block; it must lie inside one page.
pub const CONTROL_BLOCK_SIZE: u32 = size_of::<EvtchnFifoControlBlock>() as u32;
const READY: u64 = offset_of!(EvtchnFifoControlBlock, ready) as u64;
const HEAD: u64 = offset_of!(EvtchnFifoControlBlock, head) as u64;

/// One vCPU's FIFO state.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FifoVcpu {
    /// Machine address of the control block (`None`: not registered yet; events for this
    /// vCPU are dropped, as Xen does).
    pub control: Option<(Mfn, u32)>,
    /// Last port linked on each priority queue (0 = none): where the next event links.
    pub tail: [u32; EVTCHN_FIFO_MAX_QUEUES],
}

impl FifoVcpu {
    fn control_addr(&self) -> Option<u64> {
        self.control.map(|(mfn, off)| mfn.maddr() + u64::from(off))
    }
}

/// A domain's FIFO state (present from its first successful `init_control` until reset).
#[derive(Debug)]
pub(super) struct Fifo {
    /// One entry per vCPU of the domain.
    pub vcpus: Vec<FifoVcpu>,
    /// Event-array pages in order: port p's word is in page p / 1024.
    pub array: Vec<Mfn>,
}

impl Fifo {
    /// Ports that have an event word.
    pub fn num_words(&self) -> u32 {
        self.array.len() as u32 * EVTCHN_FIFO_EVENT_WORDS_PER_PAGE
    }

    /// Machine address of `port`'s event word, if its page was added.
    pub fn word(&self, port: u32) -> Option<u64> {
        let page = self
            .array
            .get((port / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) as usize)?;
        Some(page.maddr() + u64::from(port % EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) * 4)
    }

    /// Every frame this state holds a reference on.
    pub fn frames(&self) -> impl Iterator<Item = Mfn> + '_ {
        self.vcpus
            .iter()
            .filter_map(|v| v.control.map(|(m, _)| m))
            .chain(self.array.iter().copied())
    }
}

/// Takes a writable type reference on a frame of `dom` for the hypervisor's writes, as
/// Xen's `map_guest_page`: -EINVAL if the frame is not `dom`'s or cannot be writable
/// (a page table or descriptor page).
pub(super) fn hold_guest_page(frames: &mut Frames, dom: DomId, mfn: Mfn) -> Result<(), Errno> {
    if frames.owner(mfn) != Some(dom) || !frames.hold_writable(mfn) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Drops the references [`hold_guest_page`] took.
pub(super) fn release_guest_page(frames: &mut Frames, mfn: Mfn) {
    if let Some(st) = frames.type_state(mfn)
        && st.ty == PageType::Writable
        && st.count > 0
    {
        frames.set_type_state(
            mfn,
            TypeState {
                count: st.count - 1,
                ..st
            },
        );
    }
    frames.put_ref(mfn);
}

/// Whether a control block at `offset` fits Xen's rules (inside the page, 8-aligned).
pub(super) fn control_offset_ok(offset: u32) -> bool {
    offset <= PAGE_SIZE as u32 - CONTROL_BLOCK_SIZE && offset.is_multiple_of(8)
}

/// Links the tail word at `tail_word` to `port` if the tail is still LINKED (the guest
/// may have consumed it already); clears BUSY as Xen's `try_set_link` does.
fn set_link(mem: &impl MachineMemory, tail_word: u64, port: u32) -> bool {
    let mut b = [0u8; 4];
    if mem.read(tail_word, &mut b).is_err() {
        return false;
    }
    let w = u32::from_le_bytes(b);
    if w & (1 << EVTCHN_FIFO_LINKED) == 0 {
        return false;
    }
    let new = (w & !((1 << EVTCHN_FIFO_BUSY) | EVTCHN_FIFO_LINK_MASK)) | port;
    mem.write(tail_word, &new.to_le_bytes()).is_ok()
}

/// Raises `chan` (port `port`) on vCPU `vcpu` (`evtchn_fifo_set_pending`). `upcall` in
/// the result asks the caller to mark the vCPU's upcall pending (the ready bit of the
/// queue went 0->1); the vCPU is a valid index of `fifo.vcpus` or nothing happens.
pub(super) fn set_pending(
    fifo: &mut Fifo,
    mem: &impl MachineMemory,
    chan: &mut Channel,
    port: u32,
    vcpu: u32,
) -> Raised {
    let Some(word) = fifo.word(port) else {
        // No event word yet: remember it, raised again when its page is added.
        chan.saved_pending = true;
        return Raised::default();
    };
    let v = vcpu as usize;
    let q = usize::from(chan.priority).min(EVTCHN_FIFO_MAX_QUEUES - 1);
    let Some(cb) = fifo.vcpus.get(v).and_then(FifoVcpu::control_addr) else {
        return Raised::default();
    };
    // The PENDING bit is bit 31 of a little-endian word: byte 3.
    let newly_pending = !test_and_set_bit(mem, word, EVTCHN_FIFO_PENDING);
    let mut linked = true;
    if !test_bit(mem, word, EVTCHN_FIFO_MASKED) && !test_and_set_bit(mem, word, EVTCHN_FIFO_LINKED)
    {
        // If this port was the tail of the queue it was last on, that queue is empty now.
        let (ov, oq) = (chan.last_vcpu.0 as usize, usize::from(chan.last_priority));
        if let Some(old) = fifo.vcpus.get_mut(ov).and_then(|o| o.tail.get_mut(oq))
            && *old == port
        {
            *old = 0;
        }
        if (ov, oq) != (v, q) {
            chan.last_vcpu = xen_pv_abi::VcpuId(vcpu);
            chan.last_priority = q as u8;
        }
        let tail = fifo.vcpus[v].tail[q];
        linked = tail != 0 && fifo.word(tail).is_some_and(|tw| set_link(mem, tw, port));
        if !linked {
            let _ = mem.write(cb + HEAD + 4 * q as u64, &port.to_le_bytes());
        }
        fifo.vcpus[v].tail[q] = port;
    }
    let upcall = !linked && !test_and_set_bit(mem, cb + READY, q as u32);
    Raised {
        upcall,
        newly_pending,
    }
}

/// Clears PENDING (on close); the guest unlinks the stale entry itself.
pub(super) fn clear_pending(fifo: &Fifo, mem: &impl MachineMemory, port: u32) {
    if let Some(w) = fifo.word(port) {
        test_and_clear_bit(mem, w, EVTCHN_FIFO_PENDING);
    }
}

/// Whether `port`'s word is PENDING.
pub(super) fn is_pending(fifo: &Fifo, mem: &impl MachineMemory, port: u32) -> bool {
    fifo.word(port)
        .is_some_and(|w| test_bit(mem, w, EVTCHN_FIFO_PENDING))
}

/// Whether `port` is masked (no word counts as masked).
pub(super) fn is_masked(fifo: &Fifo, mem: &impl MachineMemory, port: u32) -> bool {
    fifo.word(port)
        .is_none_or(|w| test_bit(mem, w, EVTCHN_FIFO_MASKED))
}

/// Whether `port` is still on a queue: it cannot be reallocated until the guest unlinks it.
pub(super) fn is_busy(fifo: &Fifo, mem: &impl MachineMemory, port: u32) -> bool {
    fifo.word(port)
        .is_some_and(|w| test_bit(mem, w, EVTCHN_FIFO_LINKED))
}

/// `EVTCHNOP_unmask`: clears MASKED and, if PENDING, links the event on its notify vCPU.
pub(super) fn unmask(
    fifo: &mut Fifo,
    mem: &impl MachineMemory,
    chan: &mut Channel,
    port: u32,
) -> Raised {
    let Some(w) = fifo.word(port) else {
        return Raised::default();
    };
    test_and_clear_bit(mem, w, EVTCHN_FIFO_MASKED);
    if test_bit(mem, w, EVTCHN_FIFO_PENDING) {
        let v = chan.notify_vcpu.0;
        set_pending(fifo, mem, chan, port, v)
    } else {
        Raised::default()
    }
}
