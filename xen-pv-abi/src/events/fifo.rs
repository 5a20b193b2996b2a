//! The FIFO event-channel ABI, guest side (`xen-control-plane.md` §5): the per-vCPU queue
//! consumer and event-word mask/unmask.
//!
//! Every port has a 32-bit event word in the *event array* (pages the guest adds with
//! `EVTCHNOP_expand_array`, 1024 words each): PENDING, MASKED, LINKED, BUSY and a 17-bit
//! LINK to the next port of its queue. Each vCPU has a control block (`ready` bitmap and
//! one queue head per priority) registered with `EVTCHNOP_init_control`.
//!
//! Set-up, in order: allocate and [`init_array_page`] the first array page and a zeroed
//! control-block page, `init_control` for each vCPU, `expand_array` with the array page
//! (see [`crate::evtchn`]). Only then bind ports.

use super::{EventMemory, Resend, check_port};
use crate::errno::Errno;
use crate::event_channel::{
    EVTCHN_FIFO_BUSY, EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED,
    EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PENDING,
    EvtchnFifoControlBlock,
};
use crate::ids::EvtchnPort;
use crate::layout::PAGE_SIZE;
use core::mem::{offset_of, size_of};

/// How often [`FifoEvents::unmask`] retries while the hypervisor holds BUSY (it does so
/// for a few instructions only).
const BUSY_RETRIES: u32 = 1 << 16;

/// The event-array pages added so far, by index (page `i` holds ports
/// `i * 1024 .. (i + 1) * 1024`).
pub trait EventArray {
    /// Memory of one page.
    type Page: EventMemory;
    /// Page `index`, if it has been added.
    fn page(&self, index: usize) -> Option<&Self::Page>;
}

impl<P: EventMemory> EventArray for [P] {
    type Page = P;
    fn page(&self, index: usize) -> Option<&P> {
        self.get(index)
    }
}

impl<P: EventMemory> EventArray for [Option<P>] {
    type Page = P;
    fn page(&self, index: usize) -> Option<&P> {
        self.get(index)?.as_ref()
    }
}

impl<P: EventMemory, const N: usize> EventArray for [P; N] {
    type Page = P;
    fn page(&self, index: usize) -> Option<&P> {
        self.get(index)
    }
}

/// Page and byte offset of the event word of `port`.
fn word_of<A: EventArray + ?Sized>(array: &A, port: u32) -> Result<(&A::Page, usize), Errno> {
    let p = check_port(EvtchnPort(port), EVTCHN_FIFO_NR_CHANNELS)?;
    let page = array
        .page((p / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) as usize)
        .ok_or(Errno::ENOENT)?;
    Ok((page, (p % EVTCHN_FIFO_EVENT_WORDS_PER_PAGE) as usize * 4))
}

/// Prepares a page before it is added with `expand_array`: every word MASKED, so ports
/// start masked as in Linux (the hypervisor does not initialise the page).
pub fn init_array_page<P: EventMemory + ?Sized>(page: &P) {
    for i in 0..EVTCHN_FIFO_EVENT_WORDS_PER_PAGE as usize {
        page.store_u32(i * 4, EVTCHN_FIFO_MASKED);
    }
}

/// Event-word operations on the event array `A` (shared by all vCPUs).
///
/// ```
/// use xen_pv_abi::events::{AtomicPage, Resend, fifo::{FifoEvents, init_array_page}};
/// use xen_pv_abi::EvtchnPort;
///
/// let page = AtomicPage::new();
/// init_array_page(&page);
/// let pages = [&page];
/// let events = FifoEvents::new(&pages[..]);
/// assert!(events.is_masked(EvtchnPort(5)).unwrap());
/// assert_eq!(events.unmask(EvtchnPort(5)).unwrap(), Resend::Nothing);
/// assert_eq!(events.is_masked(EvtchnPort(1024)), Err(xen_pv_abi::Errno::ENOENT));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FifoEvents<'a, A: ?Sized> {
    array: &'a A,
}

impl<'a, A: EventArray + ?Sized> FifoEvents<'a, A> {
    /// Operations on the event array `array`.
    pub const fn new(array: &'a A) -> Self {
        Self { array }
    }

    /// The raw event word of `port`.
    pub fn word(&self, port: EvtchnPort) -> Result<u32, Errno> {
        let (page, off) = word_of(self.array, port.0)?;
        Ok(page.load_u32(off))
    }

    /// Masks `port` (the guest may always set MASKED); returns whether it was masked.
    pub fn mask(&self, port: EvtchnPort) -> Result<bool, Errno> {
        let (page, off) = word_of(self.array, port.0)?;
        Ok(page.fetch_or_u32(off, EVTCHN_FIFO_MASKED) & EVTCHN_FIFO_MASKED != 0)
    }

    /// Guest-side unmask (Linux `evtchn_fifo_unmask`): clear MASKED only while BUSY is
    /// clear (the hypervisor is not rewriting LINK), then, if the port is pending, the
    /// hypervisor must link it: the result asks for `EVTCHNOP_unmask`
    /// ([`Resend::complete`]). `EBUSY` if BUSY never cleared (the port stays masked).
    pub fn unmask(&self, port: EvtchnPort) -> Result<Resend, Errno> {
        let (page, off) = word_of(self.array, port.0)?;
        let mut w = page.load_u32(off);
        let mut tries = 0;
        loop {
            if w & EVTCHN_FIFO_BUSY != 0 {
                tries += 1;
                if tries >= BUSY_RETRIES {
                    return Err(Errno::EBUSY);
                }
                core::hint::spin_loop();
                w = page.load_u32(off);
                continue;
            }
            match page.compare_exchange_u32(off, w, w & !EVTCHN_FIFO_MASKED) {
                Ok(_) => break,
                Err(actual) => w = actual,
            }
        }
        Ok(if page.load_u32(off) & EVTCHN_FIFO_PENDING != 0 {
            Resend::UnmaskHypercall(port)
        } else {
            Resend::Nothing
        })
    }

    /// Whether `port` is pending.
    pub fn is_pending(&self, port: EvtchnPort) -> Result<bool, Errno> {
        Ok(self.word(port)? & EVTCHN_FIFO_PENDING != 0)
    }

    /// Whether `port` is masked.
    pub fn is_masked(&self, port: EvtchnPort) -> Result<bool, Errno> {
        Ok(self.word(port)? & EVTCHN_FIFO_MASKED != 0)
    }

    /// Clears PENDING of `port`; returns whether it was set.
    pub fn clear_pending(&self, port: EvtchnPort) -> Result<bool, Errno> {
        let (page, off) = word_of(self.array, port.0)?;
        Ok(page.fetch_and_u32(off, !EVTCHN_FIFO_PENDING) & EVTCHN_FIFO_PENDING != 0)
    }
}

const READY: usize = offset_of!(EvtchnFifoControlBlock, ready);
const HEAD: usize = offset_of!(EvtchnFifoControlBlock, head);

/// The queues of one vCPU: its control block and the consumer's local queue heads.
///
/// ```
/// use xen_pv_abi::events::{AtomicPage, EventMemory, fifo::{FifoQueues, init_array_page}};
/// use xen_pv_abi::EvtchnPort;
///
/// let array_page = AtomicPage::new();
/// init_array_page(&array_page);
/// let control = AtomicPage::new();
/// let mut queues = FifoQueues::new(&control, 0).unwrap();
/// // What the hypervisor does for a lone unmasked event on port 9, priority 7:
/// array_page.store_u32(9 * 4, (1 << 31) | (1 << 29)); // PENDING | LINKED
/// control.store_u32(8 + 7 * 4, 9); // head[7]
/// control.fetch_or_u32(0, 1 << 7); // ready
///
/// let mut seen = Vec::new();
/// queues.dispatch(&[&array_page][..], |port| seen.push(port));
/// assert_eq!(seen, [EvtchnPort(9)]);
/// assert_eq!(array_page.load_u32(9 * 4), 0);
/// ```
#[derive(Debug)]
pub struct FifoQueues<M> {
    control: M,
    base: usize,
    head: [u32; EVTCHN_FIFO_MAX_QUEUES],
}

impl<M: EventMemory> FifoQueues<M> {
    /// The control block at byte `offset` of page `control` (the `offset` passed to
    /// `init_control`). `EINVAL` unless 8-aligned with the whole block in the page.
    pub fn new(control: M, offset: usize) -> Result<Self, Errno> {
        let end = offset.checked_add(size_of::<EvtchnFifoControlBlock>());
        if !offset.is_multiple_of(8) || end.is_none_or(|e| e > PAGE_SIZE.min(control.size())) {
            return Err(Errno::EINVAL);
        }
        Ok(Self {
            control,
            base: offset,
            head: [0; EVTCHN_FIFO_MAX_QUEUES],
        })
    }

    /// The upcall handler's consumer (Linux `__evtchn_fifo_handle_events`): take and clear
    /// `ready`; while any queue is ready, consume **one** event from the most urgent
    /// (lowest-numbered) ready queue, then merge in a freshly taken `ready`, so that a
    /// newly raised urgent event overtakes the rest of a less urgent queue. Consuming a
    /// port unlinks it (clears LINKED and LINK, obtaining the next port) and, if it is
    /// PENDING and not MASKED, clears PENDING and calls `handler`. Masked ports keep
    /// PENDING so that unmasking raises them again. Returns how many ports were handled.
    pub fn dispatch<A: EventArray + ?Sized>(
        &mut self,
        array: &A,
        mut handler: impl FnMut(EvtchnPort),
    ) -> usize {
        let ready_off = self.base + READY;
        let mut ready = self.control.swap_u32(ready_off, 0);
        let mut handled = 0;
        while ready != 0 {
            // Only bits of existing queues: a bad bit must not index past `head`.
            ready &= (1 << EVTCHN_FIFO_MAX_QUEUES) - 1;
            if ready == 0 {
                break;
            }
            let q = ready.trailing_zeros() as usize;
            let (port, next) = self.consume_one(q, array);
            if next == 0 {
                ready &= !(1 << q);
            }
            if let Some(port) = port
                && Self::take_if_deliverable(array, port)
            {
                handler(EvtchnPort(port));
                handled += 1;
            }
            ready |= self.control.swap_u32(ready_off, 0);
        }
        handled
    }

    /// Unlinks the head of queue `q`: `(port, next)`, `port` `None` if the queue was empty.
    fn consume_one<A: EventArray + ?Sized>(&mut self, q: usize, array: &A) -> (Option<u32>, u32) {
        let mut port = self.head[q];
        if port == 0 {
            // The hypervisor wrote head[q] before setting the ready bit we took (SeqCst).
            port = self.control.load_u32(self.base + HEAD + q * 4);
        }
        if port == 0 {
            return (None, 0);
        }
        let next = match word_of(array, port) {
            Ok((page, off)) => {
                let mut w = page.load_u32(off);
                loop {
                    let cleared = w & !(EVTCHN_FIFO_LINKED | EVTCHN_FIFO_LINK_MASK);
                    match page.compare_exchange_u32(off, w, cleared) {
                        Ok(_) => break w & EVTCHN_FIFO_LINK_MASK,
                        Err(actual) => w = actual,
                    }
                }
            }
            // A port outside the array cannot have been linked: end the queue.
            Err(_) => 0,
        };
        self.head[q] = next;
        (Some(port), next)
    }

    /// Clears PENDING of `port` if it is pending and not masked; whether it did.
    fn take_if_deliverable<A: EventArray + ?Sized>(array: &A, port: u32) -> bool {
        let Ok((page, off)) = word_of(array, port) else {
            return false;
        };
        let mut w = page.load_u32(off);
        while w & EVTCHN_FIFO_PENDING != 0 && w & EVTCHN_FIFO_MASKED == 0 {
            match page.compare_exchange_u32(off, w, w & !EVTCHN_FIFO_PENDING) {
                Ok(_) => return true,
                Err(actual) => w = actual,
            }
        }
        false
    }

    /// The control-block memory.
    pub fn memory(&self) -> &M {
        &self.control
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::events::AtomicPage;
    use std::vec::Vec;

    /// A simplified hypervisor link algorithm (§5.3) for one vCPU: tails per queue.
    struct FakeXen<'a> {
        control: &'a AtomicPage,
        pages: &'a [&'a AtomicPage],
        tail: core::cell::Cell<[u32; EVTCHN_FIFO_MAX_QUEUES]>,
    }

    impl FakeXen<'_> {
        fn raise(&self, port: u32, prio: usize) {
            let (page, off) = word_of(self.pages, port).unwrap();
            page.fetch_or_u32(off, EVTCHN_FIFO_PENDING);
            self.link(port, prio);
        }

        fn link(&self, port: u32, prio: usize) {
            let (page, off) = word_of(self.pages, port).unwrap();
            if page.load_u32(off) & EVTCHN_FIFO_MASKED != 0
                || page.fetch_or_u32(off, EVTCHN_FIFO_LINKED) & EVTCHN_FIFO_LINKED != 0
            {
                return;
            }
            let mut tails = self.tail.get();
            let mut linked = false;
            if tails[prio] != 0 {
                let (tp, toff) = word_of(self.pages, tails[prio]).unwrap();
                let w = tp.load_u32(toff);
                if w & EVTCHN_FIFO_LINKED != 0 {
                    tp.store_u32(toff, (w & !EVTCHN_FIFO_LINK_MASK) | port);
                    linked = true;
                }
            }
            if !linked {
                self.control.store_u32(HEAD + prio * 4, port);
            }
            tails[prio] = port;
            self.tail.set(tails);
            if !linked {
                self.control.fetch_or_u32(READY, 1 << prio);
            }
        }

        /// `EVTCHNOP_unmask`: link it if pending.
        fn unmask_hypercall(&self, port: u32, prio: usize) {
            let (page, off) = word_of(self.pages, port).unwrap();
            page.fetch_and_u32(off, !EVTCHN_FIFO_MASKED);
            if page.load_u32(off) & EVTCHN_FIFO_PENDING != 0 {
                self.link(port, prio);
            }
        }
    }

    fn setup<'a>(
        control: &'a AtomicPage,
        pages: &'a [&'a AtomicPage],
    ) -> (FakeXen<'a>, FifoQueues<&'a AtomicPage>) {
        for p in pages {
            init_array_page(*p);
            // Unmask every port, as a guest does after binding.
            for i in 0..1024 {
                p.store_u32(i * 4, 0);
            }
        }
        let xen = FakeXen {
            control,
            pages,
            tail: core::cell::Cell::new([0; EVTCHN_FIFO_MAX_QUEUES]),
        };
        (xen, FifoQueues::new(control, 0).unwrap())
    }

    #[test]
    fn queue_consumption_follows_priority_then_fifo_order() {
        let control = AtomicPage::new();
        let (a, b) = (AtomicPage::new(), AtomicPage::new());
        let pages = [&a, &b];
        let (xen, mut queues) = setup(&control, &pages);
        xen.raise(10, 7);
        xen.raise(1500, 7);
        xen.raise(11, 7);
        xen.raise(20, 3);
        xen.raise(21, 3);
        xen.raise(10, 7); // already pending and linked: no change
        let mut seen = Vec::new();
        assert_eq!(queues.dispatch(&pages[..], |p| seen.push(p.0)), 5);
        assert_eq!(seen, [20, 21, 10, 1500, 11]);
        assert_eq!(control.load_u32(READY), 0);
        for p in [10, 11, 20, 21, 1500] {
            assert_eq!(FifoEvents::new(&pages[..]).word(EvtchnPort(p)).unwrap(), 0);
        }
        assert_eq!(queues.head, [0; EVTCHN_FIFO_MAX_QUEUES]);
    }

    #[test]
    fn urgent_event_raised_during_handling_overtakes() {
        let control = AtomicPage::new();
        let a = AtomicPage::new();
        let pages = [&a];
        let (xen, mut queues) = setup(&control, &pages);
        xen.raise(10, 7);
        xen.raise(11, 7);
        let mut seen = Vec::new();
        queues.dispatch(&pages[..], |p| {
            seen.push(p.0);
            if p.0 == 10 {
                xen.raise(30, 0);
                xen.raise(10, 7); // re-raised during its handler: queued again
            }
        });
        assert_eq!(seen, [10, 30, 11, 10]);
    }

    #[test]
    fn masked_event_is_unlinked_kept_pending_and_reraised_by_unmask() {
        let control = AtomicPage::new();
        let a = AtomicPage::new();
        let pages = [&a];
        let (xen, mut queues) = setup(&control, &pages);
        let ev = FifoEvents::new(&pages[..]);
        xen.raise(5, 7);
        xen.raise(6, 7);
        // Masked after linking: consumed from the queue but not handled.
        assert!(!ev.mask(EvtchnPort(5)).unwrap());
        let mut seen = Vec::new();
        queues.dispatch(&pages[..], |p| seen.push(p.0));
        assert_eq!(seen, [6]);
        assert_eq!(
            ev.word(EvtchnPort(5)).unwrap(),
            EVTCHN_FIFO_PENDING | EVTCHN_FIFO_MASKED
        );
        // Raised while masked: pending, not linked.
        xen.raise(5, 7);
        assert_eq!(control.load_u32(READY), 0);

        let follow_up = ev.unmask(EvtchnPort(5)).unwrap();
        assert_eq!(follow_up, Resend::UnmaskHypercall(EvtchnPort(5)));
        xen.unmask_hypercall(5, 7);
        seen.clear();
        queues.dispatch(&pages[..], |p| seen.push(p.0));
        assert_eq!(seen, [5]);
        assert_eq!(ev.unmask(EvtchnPort(6)).unwrap(), Resend::Nothing);
    }

    #[test]
    fn unmask_waits_for_busy_and_gives_up() {
        let a = AtomicPage::new();
        let pages = [&a];
        let ev = FifoEvents::new(&pages[..]);
        a.store_u32(
            4 * 4,
            EVTCHN_FIFO_MASKED | EVTCHN_FIFO_BUSY | EVTCHN_FIFO_LINKED,
        );
        assert_eq!(ev.unmask(EvtchnPort(4)), Err(Errno::EBUSY));
        assert!(ev.is_masked(EvtchnPort(4)).unwrap(), "BUSY: never unmasked");
        a.fetch_and_u32(4 * 4, !EVTCHN_FIFO_BUSY);
        assert_eq!(ev.unmask(EvtchnPort(4)).unwrap(), Resend::Nothing);
        assert_eq!(ev.word(EvtchnPort(4)).unwrap(), EVTCHN_FIFO_LINKED);
    }

    #[test]
    fn hostile_control_block_values_are_harmless() {
        let control = AtomicPage::new();
        let a = AtomicPage::new();
        let pages = [&a];
        let (_xen, mut queues) = setup(&control, &pages);
        // Ready bits of non-existent queues, an empty ready queue, a head beyond the array.
        control.store_u32(READY, 0xffff_0000 | (1 << 2) | (1 << 4));
        control.store_u32(HEAD + 4 * 4, 5000);
        assert_eq!(
            queues.dispatch(&pages[..], |_| panic!("nothing to handle")),
            0
        );
        assert_eq!(queues.head, [0; EVTCHN_FIFO_MAX_QUEUES]);
    }

    #[test]
    fn control_block_placement_is_checked() {
        let control = AtomicPage::new();
        assert!(FifoQueues::new(&control, 4096 - 72).is_ok());
        assert_eq!(
            FifoQueues::new(&control, 4096 - 64).err(),
            Some(Errno::EINVAL)
        );
        assert_eq!(FifoQueues::new(&control, 4).err(), Some(Errno::EINVAL));
        assert_eq!(
            FifoQueues::new(&control, usize::MAX - 7).err(),
            Some(Errno::EINVAL)
        );
        let pages = [&control];
        let ev = FifoEvents::new(&pages[..]);
        assert_eq!(ev.word(EvtchnPort(1 << 17)), Err(Errno::EINVAL));
    }
}
