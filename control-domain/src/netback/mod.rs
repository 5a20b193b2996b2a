//! The network backend (netback) without hypercalls: per-vif state that takes frames
//! from a frontend's tx ring, copies them out of its granted frames, and hands them to
//! the caller (the [`vswitch`](crate::vswitch)); and delivers frames into the buffers
//! the frontend posted on its rx ring (`feature-rx-copy`: the backend grant-copies into
//! the frontend's pages). Data moves through a [`GrantIo`], as in
//! [`blkback`](crate::blkback); the kernel implements it with `GNTTABOP_copy`.
//!
//! # Transmit (guest → backend)
//!
//! A frame is one *first slot* (its `size` is the whole frame's length), then, if it
//! has `NETTXF_extra_info`, extra-info slots chained by `XEN_NETIF_EXTRA_FLAG_MORE`,
//! then while a data slot has `NETTXF_more_data` further data slots (each `size` its
//! own length). The first slot's data is `size` minus the following slots' sizes.
//!
//! * Every data slot is answered with its `id`: `NETIF_RSP_OKAY` when the frame was
//!   handed on and accepted, `NETIF_RSP_DROPPED` when the sink refused it, and
//!   `NETIF_RSP_ERROR` for a frame a correct frontend could still send but that is not
//!   served: shorter than 14 bytes, longer than [`MAX_FRAME`] (1514 + a VLAN tag), a
//!   first-slot size smaller than the following slots, a GSO or unknown extra (no
//!   `feature-gso-*` is advertised), or a failed grant copy.
//! * Every extra-info slot is answered `NETIF_RSP_NULL` (frontends skip these).
//!   Multicast and hash extras are accepted and ignored.
//! * Protocol breaches end service of the vif ([`Disconnect`]): a producer index that
//!   cannot be right, a slot whose `offset + size` crosses its page, more than
//!   [`MAX_TX_SLOTS`] data slots or [`MAX_TX_EXTRAS`] extras in one frame.
//!
//! A frame whose slots are not all published yet stays pending in the vif (its slots
//! consumed, not answered) until the rest arrives. One call consumes at most
//! [`NetbackConfig::slots_per_call`] slots.
//!
//! # Receive (backend → guest)
//!
//! [`Netback::deliver_rx`] consumes one posted rx request per frame (frames never need
//! more than one page: no `feature-sg` on rx, no GSO), copies the frame to offset 0 of
//! the granted page and answers `id`, offset 0, flags, status = length. Without a
//! posted buffer the frame is dropped and counted ([`RxError::NoBuffer`]).

#[cfg(test)]
mod tests;

use crate::blkback::{Direction, GrantIo, GrantSegment};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use xen_pv_abi::kit::ring::{BackRing, RingError, RingMemory};
use xen_pv_abi::netif::{
    NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK,
    NETRXF_DATA_VALIDATED, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO,
    NETTXF_MORE_DATA, NetifRxProtocol, NetifRxResponse, NetifTxProtocol, NetifTxRequest,
    NetifTxResponse, XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_EXTRA_TYPE_HASH,
    XEN_NETIF_EXTRA_TYPE_MCAST_ADD, XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
};
use xen_pv_abi::{DomId, Errno, GrantRef};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes of a granted frame.
const PAGE: usize = 4096;
/// Ethernet header length: shorter frames are refused.
pub const MIN_FRAME: usize = 14;
/// The longest frame either way: 1514 bytes plus one 802.1Q tag (no FCS).
pub const MAX_FRAME: usize = 1514 + 4;
/// Data slots one tx frame may use (`XEN_NETIF_NR_SLOTS_MIN`, what Linux netfront
/// stays within).
pub const MAX_TX_SLOTS: usize = 18;
/// Extra-info slots one tx frame may carry (one of each defined type).
pub const MAX_TX_EXTRAS: usize = 4;
/// Bytes a [`Netback`] allocates for its buffers in [`Netback::new`] (tx bounce pages,
/// rx bounce page, the assembled frame), not counting the allocator's alignment waste.
pub const BUFFER_BYTES: usize = (MAX_TX_SLOTS + 1) * PAGE + MAX_FRAME;
/// Default tx slots consumed per [`Netback::service_tx`] call: one 1-page tx ring.
pub const DEFAULT_SLOTS_PER_CALL: u32 = 256;

/// One page-aligned page of a bounce buffer.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(4096))]
struct Page([u8; PAGE]);

impl core::fmt::Debug for Page {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Page")
    }
}

/// Tunables of a [`Netback`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetbackConfig {
    /// Tx slots consumed per [`Netback::service_tx`] call (at least 1).
    pub slots_per_call: u32,
}

impl Default for NetbackConfig {
    fn default() -> Self {
        NetbackConfig {
            slots_per_call: DEFAULT_SLOTS_PER_CALL,
        }
    }
}

/// Checksum state of a frame, carried from the sender's tx flags to the receiver's rx
/// flags (Linux netfront sends IPv4 frames with a blank checksum by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// The checksum is not filled in (`NETTXF_csum_blank`).
    pub csum_blank: bool,
    /// The checksum was verified (`NETTXF_data_validated`).
    pub data_validated: bool,
}

impl FrameMeta {
    /// The rx flags for a frame with this state: a blank checksum is announced as
    /// `csum_blank | data_validated` (the receiver completes it), as Linux netback does.
    pub fn rx_flags(self) -> u16 {
        if self.csum_blank {
            NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
        } else if self.data_validated {
            NETRXF_DATA_VALIDATED
        } else {
            0
        }
    }
}

/// The frontend broke the ring protocol; the caller closes this vif (only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// A ring reported a broken producer index.
    Ring(RingError),
    /// A tx slot's `offset + size` crosses its page.
    SlotCrossesPage,
    /// More than [`MAX_TX_SLOTS`] data slots in one frame.
    TooManySlots,
    /// More than [`MAX_TX_EXTRAS`] extra-info slots in one frame.
    TooManyExtras,
}

impl core::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Disconnect::Ring(e) => write!(f, "{e}"),
            Disconnect::SlotCrossesPage => f.write_str("a tx slot crosses its page"),
            Disconnect::TooManySlots => {
                write!(f, "a tx frame has more than {MAX_TX_SLOTS} slots")
            }
            Disconnect::TooManyExtras => {
                write!(
                    f,
                    "a tx frame has more than {MAX_TX_EXTRAS} extra-info slots"
                )
            }
        }
    }
}

/// What one [`Netback::service_tx`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxServiced {
    /// The frontend must be sent an event.
    pub notify: bool,
    /// Slots are still waiting (budget used up): call again without waiting.
    pub more: bool,
    /// Slots consumed by this call.
    pub slots: u32,
    /// Frames handed to the sink by this call.
    pub frames: u32,
}

/// A frame written into a posted rx buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The frontend must be sent an event.
    pub notify: bool,
    /// The response's status: the length, or `NETIF_RSP_ERROR` if the grant copy
    /// failed (the buffer is used up either way).
    pub status: i16,
}

/// Why [`Netback::deliver_rx`] did not deliver a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// The frontend has no rx buffer posted: the frame is dropped (counted).
    NoBuffer,
    /// Shorter than [`MIN_FRAME`] or longer than [`MAX_FRAME`]: dropped (counted).
    BadLength,
    /// The vif is disconnected.
    Disconnect(Disconnect),
}

/// Counters of a [`Netback`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames taken from the tx ring and accepted by the sink.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Tx frames answered `NETIF_RSP_ERROR`.
    pub tx_errors: u64,
    /// Tx frames the sink refused (`NETIF_RSP_DROPPED`).
    pub tx_dropped: u64,
    /// Frames delivered into rx buffers.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames dropped for want of a posted rx buffer.
    pub rx_no_buffer: u64,
    /// Rx buffers answered `NETIF_RSP_ERROR` (failed copy).
    pub rx_errors: u64,
    /// Frames refused for their length.
    pub rx_bad_length: u64,
}

/// The tx frame being assembled (slots consumed, not yet answered).
#[derive(Debug)]
struct Pending {
    /// Data slots, first slot first.
    slots: Vec<NetifTxRequest>,
    /// Extra-info slots consumed for this frame.
    extras: usize,
    /// Another extra-info slot follows.
    in_extras: bool,
    /// Already known to fail with this status.
    fail: Option<i16>,
}

/// The backend of one vif: its frontend, preallocated buffers (no allocation after
/// [`new`](Self::new), whatever the frontend sends) and the tx frame in progress. The
/// rings are the caller's and passed to each call.
#[derive(Debug)]
pub struct Netback {
    frontend: DomId,
    cfg: NetbackConfig,
    /// Tx bounce buffer: data slot `i` lands in page `i` at its own offset.
    tx_pages: Vec<Page>,
    /// Rx bounce page: the frame at offset 0.
    rx_page: Vec<Page>,
    /// The assembled tx frame.
    frame: Vec<u8>,
    pending: Pending,
    copies: Vec<GrantSegment>,
    status: Vec<i16>,
    stats: Stats,
    broken: Option<Disconnect>,
}

impl Netback {
    /// A backend for `frontend`'s vif. `ENOMEM` if its buffers (about 80 KiB) cannot be
    /// allocated.
    pub fn new(frontend: DomId, cfg: NetbackConfig) -> Result<Self, Errno> {
        let mut frame = with_capacity(MAX_FRAME)?;
        frame.clear();
        Ok(Netback {
            frontend,
            cfg: NetbackConfig {
                slots_per_call: cfg.slots_per_call.max(1),
            },
            tx_pages: zeroed(MAX_TX_SLOTS)?,
            rx_page: zeroed(1)?,
            frame,
            pending: Pending {
                slots: with_capacity(MAX_TX_SLOTS)?,
                extras: 0,
                in_extras: false,
                fail: None,
            },
            copies: with_capacity(MAX_TX_SLOTS)?,
            status: with_capacity(MAX_TX_SLOTS)?,
            stats: Stats::default(),
            broken: None,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> NetbackConfig {
        self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Why the vif was disconnected, if it was.
    pub fn disconnected(&self) -> Option<Disconnect> {
        self.broken
    }

    /// Forgets the tx frame in progress, whose slots belong to rings that are gone: for
    /// a vif connecting again on new rings. Counters and a [`Disconnect`] are kept (a
    /// vif that broke the protocol stays closed).
    pub fn reset(&mut self) {
        let p = &mut self.pending;
        p.slots.clear();
        p.extras = 0;
        p.in_extras = false;
        p.fail = None;
        self.frame.clear();
    }

    /// Consumes up to `slots_per_call` tx slots, hands each complete, valid frame to
    /// `sink` (which returns whether it took it), answers every slot and publishes the
    /// responses. When the budget was not used up it does the final check, so
    /// `more == false` means the caller may wait for the frontend's event.
    ///
    /// After a [`Disconnect`] every later call fails the same way.
    pub fn service_tx<M, G, F>(
        &mut self,
        ring: &mut BackRing<NetifTxProtocol, M>,
        gio: &mut G,
        mut sink: F,
    ) -> Result<TxServiced, Disconnect>
    where
        M: RingMemory,
        G: GrantIo,
        F: FnMut(&[u8], FrameMeta) -> bool,
    {
        if let Some(d) = self.broken {
            return Err(d);
        }
        let r = self.tx_loop(ring, gio, &mut sink);
        if let Err(d) = r {
            self.broken = Some(d);
        }
        r
    }

    fn tx_loop<M: RingMemory, G: GrantIo, F: FnMut(&[u8], FrameMeta) -> bool>(
        &mut self,
        ring: &mut BackRing<NetifTxProtocol, M>,
        gio: &mut G,
        sink: &mut F,
    ) -> Result<TxServiced, Disconnect> {
        let mut out = TxServiced::default();
        while out.slots < self.cfg.slots_per_call {
            let Some(req) = ring.next_request().map_err(Disconnect::Ring)? else {
                break;
            };
            out.slots += 1;
            let complete = if self.pending.in_extras {
                self.take_extra(&req)?;
                // Extras are answered at once; frontends skip NULL responses.
                push(
                    ring,
                    NetifTxResponse {
                        id: 0,
                        status: NETIF_RSP_NULL,
                    },
                )?;
                !self.pending.in_extras && self.pending.slots[0].flags & NETTXF_MORE_DATA == 0
            } else {
                self.take_data(&req)?
            };
            if complete {
                let status = self.finish(gio, sink, &mut out.frames);
                for i in 0..self.pending.slots.len() {
                    let id = self.pending.slots[i].id;
                    push(ring, NetifTxResponse { id, status })?;
                }
                self.pending.slots.clear();
                self.pending.extras = 0;
                self.pending.fail = None;
            }
        }
        out.notify = ring.push_responses_and_check_notify();
        out.more = if out.slots >= self.cfg.slots_per_call {
            ring.unconsumed_requests().map_err(Disconnect::Ring)? > 0
        } else {
            ring.final_check_for_requests().map_err(Disconnect::Ring)?
        };
        Ok(out)
    }

    /// Records an extra-info slot of the pending frame.
    fn take_extra(&mut self, req: &NetifTxRequest) -> Result<(), Disconnect> {
        let p = &mut self.pending;
        p.extras += 1;
        if p.extras > MAX_TX_EXTRAS {
            return Err(Disconnect::TooManyExtras);
        }
        let e = req.extra();
        match e.type_ {
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD
            | XEN_NETIF_EXTRA_TYPE_MCAST_DEL
            | XEN_NETIF_EXTRA_TYPE_HASH => {}
            // GSO is not advertised; NONE and unknown types are meaningless.
            _ => p.fail = Some(NETIF_RSP_ERROR),
        }
        p.in_extras = e.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0;
        Ok(())
    }

    /// Records a data slot; whether the frame is complete.
    fn take_data(&mut self, req: &NetifTxRequest) -> Result<bool, Disconnect> {
        let p = &mut self.pending;
        if p.slots.len() >= MAX_TX_SLOTS {
            return Err(Disconnect::TooManySlots);
        }
        let first = p.slots.is_empty();
        // The first slot's own length is known only at the end; its offset must at
        // least lie in the page.
        let len = if first { 0 } else { usize::from(req.size) };
        if usize::from(req.offset) + len > PAGE {
            return Err(Disconnect::SlotCrossesPage);
        }
        p.slots.push(*req);
        if first && req.flags & NETTXF_EXTRA_INFO != 0 {
            p.in_extras = true;
            return Ok(false);
        }
        Ok(req.flags & NETTXF_MORE_DATA == 0)
    }

    /// Checks and copies the pending frame, hands it to `sink`; the status for its
    /// slots.
    fn finish<G: GrantIo, F: FnMut(&[u8], FrameMeta) -> bool>(
        &mut self,
        gio: &mut G,
        sink: &mut F,
        frames: &mut u32,
    ) -> i16 {
        let status = match self.assemble(gio) {
            Ok(()) => {
                let first = self.pending.slots[0];
                let meta = FrameMeta {
                    csum_blank: first.flags & NETTXF_CSUM_BLANK != 0,
                    data_validated: first.flags & NETTXF_DATA_VALIDATED != 0,
                };
                if sink(&self.frame, meta) {
                    *frames += 1;
                    self.stats.tx_frames += 1;
                    self.stats.tx_bytes += self.frame.len() as u64;
                    NETIF_RSP_OKAY
                } else {
                    self.stats.tx_dropped += 1;
                    NETIF_RSP_DROPPED
                }
            }
            Err(s) => {
                self.stats.tx_errors += 1;
                s
            }
        };
        self.frame.clear();
        status
    }

    /// Builds the pending frame in `self.frame`.
    fn assemble<G: GrantIo>(&mut self, gio: &mut G) -> Result<(), i16> {
        let p = &self.pending;
        if let Some(s) = p.fail {
            return Err(s);
        }
        let total = usize::from(p.slots[0].size);
        if !(MIN_FRAME..=MAX_FRAME).contains(&total) {
            return Err(NETIF_RSP_ERROR);
        }
        let rest: usize = p.slots[1..].iter().map(|s| usize::from(s.size)).sum();
        let first_len = total.checked_sub(rest).ok_or(NETIF_RSP_ERROR)?;
        self.copies.clear();
        for (i, s) in p.slots.iter().enumerate() {
            let len = if i == 0 {
                first_len
            } else {
                usize::from(s.size)
            };
            let offset = usize::from(s.offset);
            if offset + len > PAGE {
                // Only the first slot can get here (the others were checked on
                // arrival); its length is bounded by MAX_FRAME, so the frame is at
                // fault rather than the protocol.
                return Err(NETIF_RSP_ERROR);
            }
            if len == 0 {
                continue;
            }
            self.copies.push(GrantSegment {
                gref: GrantRef(s.gref),
                offset: offset as u16,
                len: len as u16,
                buf_offset: i * PAGE + offset,
            });
        }
        self.status.clear();
        self.status.resize(self.copies.len(), -1);
        if !gio.copy_all(
            self.frontend,
            Direction::FromFrontend,
            &self.copies,
            self.tx_pages.as_mut_bytes(),
            &mut self.status,
        ) {
            return Err(NETIF_RSP_ERROR);
        }
        self.frame.clear();
        let bytes = self.tx_pages.as_bytes();
        for c in &self.copies {
            self.frame
                .extend_from_slice(&bytes[c.buf_offset..c.buf_offset + usize::from(c.len)]);
        }
        Ok(())
    }

    /// Delivers `frame` into the next rx buffer the frontend posted, and publishes the
    /// response. A frame that does not fit the rules, or finds no buffer, is dropped
    /// and counted; nothing is queued.
    pub fn deliver_rx<M: RingMemory, G: GrantIo>(
        &mut self,
        ring: &mut BackRing<NetifRxProtocol, M>,
        frame: &[u8],
        meta: FrameMeta,
        gio: &mut G,
    ) -> Result<Delivered, RxError> {
        if let Some(d) = self.broken {
            return Err(RxError::Disconnect(d));
        }
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            self.stats.rx_bad_length += 1;
            return Err(RxError::BadLength);
        }
        let req = match ring.next_request() {
            Ok(Some(req)) => req,
            Ok(None) => {
                self.stats.rx_no_buffer += 1;
                return Err(RxError::NoBuffer);
            }
            Err(e) => {
                let d = Disconnect::Ring(e);
                self.broken = Some(d);
                return Err(RxError::Disconnect(d));
            }
        };
        let len = frame.len();
        self.rx_page.as_mut_bytes()[..len].copy_from_slice(frame);
        let seg = [GrantSegment {
            gref: GrantRef(req.gref),
            offset: 0,
            len: len as u16,
            buf_offset: 0,
        }];
        let ok = gio.copy_all(
            self.frontend,
            Direction::ToFrontend,
            &seg,
            self.rx_page.as_mut_bytes(),
            &mut [-1],
        );
        let rsp = if ok {
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += len as u64;
            NetifRxResponse {
                id: req.id,
                offset: 0,
                flags: meta.rx_flags(),
                status: len as i16,
            }
        } else {
            self.stats.rx_errors += 1;
            NetifRxResponse {
                id: req.id,
                offset: 0,
                flags: 0,
                status: NETIF_RSP_ERROR,
            }
        };
        if let Err(e) = ring.push_response(&rsp) {
            let d = Disconnect::Ring(e);
            self.broken = Some(d);
            return Err(RxError::Disconnect(d));
        }
        Ok(Delivered {
            notify: ring.push_responses_and_check_notify(),
            status: rsp.status,
        })
    }
}

fn push<M: RingMemory>(
    ring: &mut BackRing<NetifTxProtocol, M>,
    rsp: NetifTxResponse,
) -> Result<(), Disconnect> {
    ring.push_response(&rsp)
        .map(|_| ())
        .map_err(Disconnect::Ring)
}

/// The keys a network backend writes in its directory
/// (`/local/domain/<be>/backend/vif/<fe>/<devid>/`) before switching to InitWait, as
/// `(key, value)` pairs. `mac` is normally the toolstack's and is included so a control
/// domain acting as its own toolstack writes a consistent set.
///
/// Chosen conservatively for what this backend does: `feature-rx-copy = 1` (the only rx
/// mode; Linux netfront gives up without it) and `feature-rx-flip = 0`; `feature-sg = 0`
/// so frontends keep frames within one MTU and never need several rx slots (multi-slot
/// tx frames, which a frontend without scatter-gather still sends for a frame crossing
/// a page boundary, are served all the same); no GSO and no IPv6 checksum offload (frames
/// would exceed one page or need checksum work here); no multicast control, no split
/// event channels, no control ring, and no `multi-queue-max-queues` (one queue).
pub fn backend_keys(mac: &[u8; 6]) -> Vec<(&'static str, String)> {
    let m = mac;
    alloc::vec![
        (
            "mac",
            format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
        ),
        ("feature-rx-copy", String::from("1")),
        ("feature-rx-flip", String::from("0")),
        ("feature-sg", String::from("0")),
        ("feature-gso-tcpv4", String::from("0")),
        ("feature-gso-tcpv6", String::from("0")),
        ("feature-ipv6-csum-offload", String::from("0")),
        ("feature-multicast-control", String::from("0")),
        ("feature-dynamic-multicast-control", String::from("0")),
        ("feature-split-event-channels", String::from("0")),
        ("feature-ctrl-ring", String::from("0")),
    ]
}

fn zeroed(pages: usize) -> Result<Vec<Page>, Errno> {
    let mut v = Vec::new();
    v.try_reserve_exact(pages).map_err(|_| Errno::ENOMEM)?;
    v.resize(pages, Page([0; PAGE]));
    Ok(v)
}

fn with_capacity<T>(n: usize) -> Result<Vec<T>, Errno> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
    Ok(v)
}
