//! A network frontend (netfront) core: the xenbus handshake and the frame path of a
//! PV network interface (vif), without hypercalls of its own.
//!
//! * [`probe`] (the block frontend's: it only reads `backend` and `backend-id`),
//!   [`connect`] and [`close`] walk the handshake over any [`Store`]
//!   ([`XenbusClient`](super::XenbusClient) implements it): wait for the backend's
//!   InitWait, require its `feature-rx-copy = 1`, read the frontend's own `mac`, write
//!   `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy = 1`,
//!   `feature-rx-notify = 1`, go Connected (straight from Initialising, as Linux's
//!   netfront does) and wait for the backend's Connected.
//! * [`Netfront`] owns the tx and rx [`FrontRing`]s and a pool of buffer pages
//!   ([`DataPages`]): the first pages carry frames to send, one page per frame,
//!   granted read-only per frame; the rest are receive buffers, granted writable and
//!   posted on the rx ring for the backend to copy frames into.
//!
//! Frames are single-slot: at most [`MAX_FRAME`] bytes (an Ethernet frame of 1514
//! bytes plus an 802.1Q tag), since the frontend offers no scatter-gather and no
//! offloads. The backend is not trusted: a response with an id that is not in
//! flight, an rx response that runs past its page or claims more slots, or a ring
//! index that cannot be right breaks the device (`EIO` from then on).
//!
//! A PV kernel's sequence, sketched (the grant table, store client and pages come from
//! its start-of-day code; `block_on_port` waits for an event with a timeout):
//!
//! ```no_run
//! use xen_pv_abi::console::EvtchnNotifier;
//! use xen_pv_abi::kit::netfront::{self, Netfront};
//! use xen_pv_abi::kit::blkfront::DataPages;
//! use xen_pv_abi::kit::{GrantTable, RawStoreRing, XenbusClient};
//! use xen_pv_abi::kit::ring::{FrontRing, RawRingPage};
//! use xen_pv_abi::netif::{NetifRxProtocol, NetifTxProtocol};
//! use xen_pv_abi::{Errno, EvtchnPort, Mfn};
//! # fn kernel() -> (&'static GrantTable<512>, &'static mut XenbusClient<RawStoreRing, EvtchnNotifier, fn() -> Result<(), Errno>>, [*mut u8; 2], [Mfn; 2], &'static dyn DataPages) { unimplemented!() }
//! # fn bind_unbound_port(_: xen_pv_abi::DomId) -> Result<EvtchnPort, Errno> { unimplemented!() }
//! # fn block_on_port() -> Result<(), Errno> { Ok(()) }
//! let (table, store, [tx_va, rx_va], [tx_mfn, rx_mfn], pages) = kernel();
//! let dev = "device/vif/0";
//! let backend = netfront::probe(store, dev)?;
//! // SAFETY: the two pages are this kernel's, kept for the rings and used only by them.
//! let tx = FrontRing::<NetifTxProtocol, _>::init(unsafe { RawRingPage::new(tx_va, 4096) })?;
//! let rx = FrontRing::<NetifRxProtocol, _>::init(unsafe { RawRingPage::new(rx_va, 4096) })?;
//! let tx_grant = table.grant_access(backend.domid, tx_mfn, false)?;
//! let rx_grant = table.grant_access(backend.domid, rx_mfn, false)?;
//! let port = bind_unbound_port(backend.domid)?;
//! let mac = netfront::connect(
//!     store, dev, &backend, tx_grant.gref(), rx_grant.gref(), port, &mut block_on_port, 1000,
//! )?;
//! let mut nic = Netfront::new(tx, rx, table, backend.domid, pages, 8, EvtchnNotifier(port), mac);
//! nic.fill_rx()?;
//! nic.transmit(&[0xff; 60])?;
//! nic.poll_rx(|frame| { let _ = frame; })?;
//! netfront::close(store, dev, &backend, &mut block_on_port, 1000)?;
//! # Ok::<(), Errno>(())
//! ```

use super::blkfront::{DataPages, Store};
use super::frontend::{Path, await_backend, parse_u64, set_state, strip_nul, write_u64};
use super::grants::{Grant, GrantTable};
use super::ring::{FrontRing, RingMemory};
use super::xenbus::Wait;
use crate::console::Notify;
use crate::errno::Errno;
use crate::ids::{DomId, EvtchnPort, GrantRef};
use crate::netif::{
    NETIF_RSP_OKAY, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, NetifRxProtocol, NetifRxRequest,
    NetifTxProtocol, NetifTxRequest,
};
use crate::xenstore::XenbusState;

pub use super::blkfront::{Backend, close, probe};

/// Bytes of a buffer page.
pub const PAGE_SIZE: usize = 4096;
/// Longest frame sent or accepted: 1514 bytes of Ethernet frame plus a 4-byte 802.1Q
/// tag.
pub const MAX_FRAME: usize = 1514 + 4;
/// Most buffers per direction. A one-page ring has 256 slots for both, but a few
/// dozen buffers already keep a TCP window in flight, and the frontend's bookkeeping
/// stays small enough for a kernel stack.
pub const MAX_BUFFERS: usize = 64;
/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

// ---------------------------------------------------------------------------------
// The xenbus handshake
// ---------------------------------------------------------------------------------

/// Parses `aa:bb:cc:dd:ee:ff` (hex digits of either case); `None` on anything else.
pub fn parse_mac(v: &[u8]) -> Option<Mac> {
    let v = strip_nul(v);
    if v.len() != 17 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, byte) in mac.iter_mut().enumerate() {
        let hi = (v[i * 3] as char).to_digit(16)?;
        let lo = (v[i * 3 + 1] as char).to_digit(16)?;
        if i < 5 && v[i * 3 + 2] != b':' {
            return None;
        }
        *byte = (hi * 16 + lo) as u8;
    }
    Some(mac)
}

const WATCH_TOKEN: &str = "netfront";

/// The frontend side of the handshake, after the caller initialised both ring pages,
/// granted them to `backend.domid` as `tx_ref` and `rx_ref` and allocated `port`:
///
/// 1. state Initialising; wait for the backend's InitWait (or later);
/// 2. require the backend's `feature-rx-copy = 1` (`EOPNOTSUPP` otherwise: the old
///    page-flipping receive path is not supported); read this device's `mac`;
/// 3. write `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy = 1`,
///    `feature-rx-notify = 1`; state Connected;
/// 4. wait for the backend's Connected.
///
/// Returns the MAC address. `wait` blocks until the store channel fires (or a timeout
/// passes); it is called at most `max_waits` times per wait, then `ETIMEDOUT`. A
/// backend that closes meanwhile gives `ENODEV`; a `mac` that does not parse
/// `EINVAL`. On an error the caller should [`close`] and release the rings.
#[allow(clippy::too_many_arguments)]
pub fn connect<S: Store + ?Sized, W: Wait + ?Sized>(
    store: &mut S,
    dev: &str,
    backend: &Backend,
    tx_ref: GrantRef,
    rx_ref: GrantRef,
    port: EvtchnPort,
    wait: &mut W,
    max_waits: u32,
) -> Result<Mac, Errno> {
    use XenbusState::*;
    set_state(store, dev, Initialising)?;
    await_backend(store, backend, WATCH_TOKEN, wait, max_waits, InitWait)?;
    let mut buf = [0u8; 24];
    let p = Path::join(backend.path().as_bytes(), "feature-rx-copy")?;
    let copy = match store.read_into(p.as_str()?, &mut buf) {
        Ok(n) => parse_u64(&buf[..n]),
        Err(Errno::ENOENT) | Err(Errno::E2BIG) => None,
        Err(e) => return Err(e),
    };
    if copy != Some(1) {
        return Err(Errno::EOPNOTSUPP);
    }
    let base = dev.as_bytes();
    let p = Path::join(base, "mac")?;
    let n = match store.read_into(p.as_str()?, &mut buf) {
        Err(Errno::E2BIG) => return Err(Errno::EINVAL),
        r => r?,
    };
    let mac = parse_mac(&buf[..n]).ok_or(Errno::EINVAL)?;
    write_u64(store, base, "tx-ring-ref", u64::from(tx_ref.0))?;
    write_u64(store, base, "rx-ring-ref", u64::from(rx_ref.0))?;
    write_u64(store, base, "event-channel", u64::from(port.0))?;
    write_u64(store, base, "request-rx-copy", 1)?;
    write_u64(store, base, "feature-rx-notify", 1)?;
    set_state(store, dev, Connected)?;
    await_backend(store, backend, WATCH_TOKEN, wait, max_waits, Connected)?;
    Ok(mac)
}

// ---------------------------------------------------------------------------------
// The frame path
// ---------------------------------------------------------------------------------

/// Counters of a [`Netfront`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames queued by [`Netfront::transmit`].
    pub tx_frames: u64,
    /// Tx responses with a status other than `NETIF_RSP_OKAY`.
    pub tx_errors: u64,
    /// Frames handed out by [`Netfront::poll_rx`].
    pub rx_frames: u64,
    /// Rx responses that carried an error status or no data.
    pub rx_errors: u64,
}

struct Buf<'t, const N: usize> {
    /// Granted to the backend and on the ring, waiting for its response.
    busy: bool,
    /// The grant of the page; kept past the response only while the backend still
    /// holds it (then the buffer stays out of use until it can be ended).
    grant: Option<Grant<'t, N>>,
}

/// A connected network frontend: both rings, the buffer grants and the frames in
/// flight.
///
/// Buffer page `i < tx_pages` is tx buffer `i` (ring id `i`); page `tx_pages + j` is
/// rx buffer `j` (ring id `j`). Each direction uses at most [`MAX_BUFFERS`] and at most
/// its ring's size.
///
/// On the host, with a backend that answers in the same program:
///
/// ```
/// use core::cell::RefCell;
/// use xen_pv_abi::grant_table::GrantEntryV1;
/// use xen_pv_abi::kit::GrantTable;
/// use xen_pv_abi::kit::blkfront::DataPages;
/// use xen_pv_abi::kit::netfront::Netfront;
/// use xen_pv_abi::kit::ring::{BackRing, FrontRing, PageBuffer};
/// use xen_pv_abi::netif::*;
/// use xen_pv_abi::{DomId, Errno, Mfn};
///
/// struct Pages(RefCell<[[u8; 4096]; 2]>);
/// impl DataPages for Pages {
///     fn count(&self) -> usize { 2 }
///     fn frame(&self, page: usize) -> Mfn { Mfn(0x100 + page as u64) }
///     fn read(&self, page: usize, off: usize, dst: &mut [u8]) {
///         dst.copy_from_slice(&self.0.borrow()[page][off..off + dst.len()]);
///     }
///     fn write(&self, page: usize, off: usize, src: &[u8]) {
///         self.0.borrow_mut()[page][off..off + src.len()].copy_from_slice(src);
///     }
/// }
///
/// let mut entries = [GrantEntryV1::default(); 16];
/// // SAFETY: `entries` outlives the table and is only used through it meanwhile.
/// let table = unsafe { GrantTable::<16>::new(entries.as_mut_ptr(), 16) };
/// let (tx_page, rx_page) = (PageBuffer::<1024>::new(), PageBuffer::<1024>::new());
/// let pages = Pages(RefCell::new([[0; 4096]; 2]));
/// let tx = FrontRing::init(&tx_page)?;
/// let rx = FrontRing::init(&rx_page)?;
/// // Page 0 sends, page 1 receives.
/// let mut nic = Netfront::new(tx, rx, &table, DomId(0), &pages, 1, || {}, [0, 0x16, 0x3e, 0, 0, 1]);
/// assert_eq!(nic.fill_rx()?, 1);
/// nic.transmit(&[0xab; 60])?;
/// assert_eq!(nic.transmit(&[0; 60]), Err(Errno::EBUSY)); // the one tx buffer is in use
///
/// // The backend: answer the frame, and "copy" a 42-byte frame into the rx buffer.
/// let mut btx = BackRing::<NetifTxProtocol, _>::new(&tx_page)?;
/// let req = btx.next_request()?.expect("a frame");
/// assert_eq!(req.size, 60);
/// btx.push_response(&NetifTxResponse { id: req.id, status: NETIF_RSP_OKAY })?;
/// btx.push_responses();
/// let mut brx = BackRing::<NetifRxProtocol, _>::new(&rx_page)?;
/// let post = brx.next_request()?.expect("a buffer");
/// pages.write(1, 0, &[7; 42]);
/// brx.push_response(&NetifRxResponse { id: post.id, offset: 0, flags: 0, status: 42 })?;
/// brx.push_responses();
///
/// assert_eq!(nic.reclaim_tx()?, 1);
/// let mut got = 0;
/// assert_eq!(nic.poll_rx(|f| got = f.len())?, 1);
/// assert_eq!(got, 42);
/// assert_eq!(nic.stats().rx_frames, 1);
/// # Ok::<(), Errno>(())
/// ```
pub struct Netfront<'t, TM: RingMemory, RM: RingMemory, const N: usize, P: DataPages, E: Notify> {
    tx: FrontRing<NetifTxProtocol, TM>,
    rx: FrontRing<NetifRxProtocol, RM>,
    table: &'t GrantTable<N>,
    backend: DomId,
    pages: P,
    notify: E,
    mac: Mac,
    tx_bufs: [Buf<'t, N>; MAX_BUFFERS],
    rx_bufs: [Buf<'t, N>; MAX_BUFFERS],
    nr_tx: usize,
    nr_rx: usize,
    tx_in_flight: usize,
    rx_posted: usize,
    stats: Stats,
    broken: bool,
}

impl<TM: RingMemory, RM: RingMemory, const N: usize, P: DataPages, E: Notify> core::fmt::Debug
    for Netfront<'_, TM, RM, N, P, E>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Netfront")
            .field("backend", &self.backend)
            .field("mac", &self.mac)
            .field("tx_in_flight", &self.tx_in_flight)
            .field("rx_posted", &self.rx_posted)
            .field("stats", &self.stats)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<'t, TM: RingMemory, RM: RingMemory, const N: usize, P: DataPages, E: Notify>
    Netfront<'t, TM, RM, N, P, E>
{
    /// A frontend on `tx` and `rx` (initialised, granted and advertised by
    /// [`connect`]), granting `pages` to `backend` through `table` — the first
    /// `tx_pages` of them for sending, the rest for receiving — and kicking the
    /// backend with `notify`. `mac` is what [`connect`] returned.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tx: FrontRing<NetifTxProtocol, TM>,
        rx: FrontRing<NetifRxProtocol, RM>,
        table: &'t GrantTable<N>,
        backend: DomId,
        pages: P,
        tx_pages: usize,
        notify: E,
        mac: Mac,
    ) -> Self {
        let count = pages.count();
        let nr_tx = tx_pages.min(count).min(MAX_BUFFERS).min(tx.size() as usize);
        let nr_rx = (count - tx_pages.min(count))
            .min(MAX_BUFFERS)
            .min(rx.size() as usize);
        Netfront {
            tx,
            rx,
            table,
            backend,
            pages,
            notify,
            mac,
            tx_bufs: [const {
                Buf {
                    busy: false,
                    grant: None,
                }
            }; MAX_BUFFERS],
            rx_bufs: [const {
                Buf {
                    busy: false,
                    grant: None,
                }
            }; MAX_BUFFERS],
            nr_tx,
            nr_rx,
            tx_in_flight: 0,
            rx_posted: 0,
            stats: Stats::default(),
            broken: false,
        }
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the backend broke the protocol: every call then fails with `EIO`.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Frames sent and not answered yet.
    pub fn tx_in_flight(&self) -> usize {
        self.tx_in_flight
    }

    /// Receive buffers on the ring.
    pub fn rx_posted(&self) -> usize {
        self.rx_posted
    }

    /// Tx buffers and rx buffers in use by this frontend.
    pub fn buffers(&self) -> (usize, usize) {
        (self.nr_tx, self.nr_rx)
    }

    fn usable(&self) -> Result<(), Errno> {
        if self.broken { Err(Errno::EIO) } else { Ok(()) }
    }

    fn broke(&mut self) -> Errno {
        self.broken = true;
        Errno::EIO
    }

    /// Ends `buf`'s grant if the backend let go of it; false if it still holds it.
    fn release(buf: &mut Buf<'t, N>) -> bool {
        match buf.grant.take() {
            None => true,
            Some(g) => match g.end() {
                Ok(_) => true,
                Err(g) => {
                    buf.grant = Some(g);
                    false
                }
            },
        }
    }

    /// Posts every idle receive buffer on the rx ring (granted writable to the
    /// backend) and kicks the backend if it asked for it; how many were posted.
    pub fn fill_rx(&mut self) -> Result<usize, Errno> {
        self.usable()?;
        let mut posted = 0;
        for j in 0..self.nr_rx {
            if self.rx_bufs[j].busy || self.rx.is_full() {
                continue;
            }
            if !Self::release(&mut self.rx_bufs[j]) {
                continue;
            }
            let frame = self.pages.frame(self.nr_tx + j);
            let g = match self.table.grant_access(self.backend, frame, false) {
                Ok(g) => g,
                // Out of grant entries: post the rest later.
                Err(Errno::ENOSPC) => break,
                Err(e) => return Err(e),
            };
            let req = NetifRxRequest {
                id: j as u16,
                _pad: 0,
                gref: g.gref().0,
            };
            if self.rx.push_request(&req).is_err() {
                break;
            }
            self.rx_bufs[j] = Buf {
                busy: true,
                grant: Some(g),
            };
            self.rx_posted += 1;
            posted += 1;
        }
        if posted > 0 && self.rx.push_requests_and_check_notify() {
            self.notify.notify();
        }
        Ok(posted)
    }

    /// Whether a tx buffer is free (after [`reclaim_tx`](Self::reclaim_tx)).
    pub fn can_transmit(&self) -> bool {
        !self.broken
            && !self.tx.is_full()
            && self.tx_bufs[..self.nr_tx]
                .iter()
                .any(|b| !b.busy && b.grant.is_none())
    }

    /// Sends `frame` (1..=[`MAX_FRAME`] bytes, `EINVAL` otherwise): copies it into a
    /// free tx page, grants the page read-only and queues one slot. `EBUSY` when
    /// every tx buffer is in flight (call [`reclaim_tx`](Self::reclaim_tx)).
    pub fn transmit(&mut self, frame: &[u8]) -> Result<(), Errno> {
        self.usable()?;
        if frame.is_empty() || frame.len() > MAX_FRAME {
            return Err(Errno::EINVAL);
        }
        if self.tx.is_full() {
            return Err(Errno::EBUSY);
        }
        let mut found = None;
        for i in 0..self.nr_tx {
            if !self.tx_bufs[i].busy && Self::release(&mut self.tx_bufs[i]) {
                found = Some(i);
                break;
            }
        }
        let i = found.ok_or(Errno::EBUSY)?;
        self.pages.write(i, 0, frame);
        let g = self
            .table
            .grant_access(self.backend, self.pages.frame(i), true)
            .map_err(|e| if e == Errno::ENOSPC { Errno::EBUSY } else { e })?;
        let req = NetifTxRequest {
            gref: g.gref().0,
            offset: 0,
            flags: 0,
            id: i as u16,
            size: frame.len() as u16,
        };
        self.tx.push_request(&req).map_err(Errno::from)?;
        self.tx_bufs[i] = Buf {
            busy: true,
            grant: Some(g),
        };
        self.tx_in_flight += 1;
        self.stats.tx_frames += 1;
        if self.tx.push_requests_and_check_notify() {
            self.notify.notify();
        }
        Ok(())
    }

    /// Takes the tx responses that arrived and frees their buffers; how many.
    /// `EIO` (and the device is broken) for an id that is not in flight.
    pub fn reclaim_tx(&mut self) -> Result<usize, Errno> {
        self.usable()?;
        let mut done = 0;
        loop {
            let rsp = match self.tx.next_response() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) => return Err(self.broke()),
            };
            let i = usize::from(rsp.id);
            if i >= self.nr_tx || !self.tx_bufs[i].busy {
                return Err(self.broke());
            }
            if rsp.status != NETIF_RSP_OKAY {
                self.stats.tx_errors += 1;
            }
            self.tx_bufs[i].busy = false;
            Self::release(&mut self.tx_bufs[i]);
            self.tx_in_flight -= 1;
            done += 1;
        }
        Ok(done)
    }

    /// Hands every received frame to `on_frame` (its bytes, valid for the call),
    /// re-posts the buffers and kicks the backend if needed; how many frames.
    ///
    /// `EIO` (and the device is broken) when the backend answers a buffer that is not
    /// posted, returns data outside the page, or flags more slots or extra info
    /// (neither scatter-gather nor offloads were offered).
    pub fn poll_rx(&mut self, mut on_frame: impl FnMut(&[u8])) -> Result<usize, Errno> {
        self.usable()?;
        let mut frames = 0;
        let mut buf = [0u8; PAGE_SIZE];
        loop {
            let rsp = match self.rx.next_response() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) => return Err(self.broke()),
            };
            let j = usize::from(rsp.id);
            if j >= self.nr_rx || !self.rx_bufs[j].busy {
                return Err(self.broke());
            }
            if rsp.flags & (NETRXF_MORE_DATA | NETRXF_EXTRA_INFO) != 0 {
                return Err(self.broke());
            }
            self.rx_bufs[j].busy = false;
            self.rx_posted -= 1;
            // End the grant before reading: the backend cannot change the data after.
            Self::release(&mut self.rx_bufs[j]);
            if rsp.status <= 0 {
                self.stats.rx_errors += 1;
                continue;
            }
            let off = usize::from(rsp.offset);
            let len = rsp.status as usize;
            if off.checked_add(len).is_none_or(|end| end > PAGE_SIZE) {
                return Err(self.broke());
            }
            self.pages.read(self.nr_tx + j, off, &mut buf[..len]);
            self.stats.rx_frames += 1;
            frames += 1;
            on_frame(&buf[..len]);
        }
        self.fill_rx()?;
        Ok(frames)
    }

    /// Whether responses wait on either ring; when none do, asks the backend for an
    /// event on the next one (so the caller can block on the channel without missing
    /// one that arrives meanwhile).
    pub fn has_work(&mut self) -> Result<bool, Errno> {
        self.usable()?;
        let tx = match self.tx.final_check_for_responses() {
            Ok(t) => t,
            Err(_) => return Err(self.broke()),
        };
        let rx = match self.rx.final_check_for_responses() {
            Ok(r) => r,
            Err(_) => return Err(self.broke()),
        };
        Ok(tx || rx)
    }
}

#[cfg(test)]
mod tests;
