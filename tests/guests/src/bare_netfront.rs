//! Helpers of the bare netfronts (`vif-loop`, `hostile-netfront`): guests that drive a
//! netif ring by hand, with four pages per vif (tx ring, rx ring, tx data, rx buffer)
//! granted to the control domain from a grant table of their own.

use pv_guest::paging::mfn_of;
use pv_guest::split::Path;
use pv_guest::xenbus::Client;
use pv_guest::{StartInfo, bytes_str};
use xen_pv_abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READONLY};
use xen_pv_abi::kit::TxId;
use xen_pv_abi::kit::ring::{FrontRing, RawRingPage};
use xen_pv_abi::netif::{NetifRxProtocol, NetifTxProtocol};
use xen_pv_abi::{DomId, Errno, EvtchnPort, evtchn};

use crate::grant::{Table, yield_cpu};

/// Bytes of a page.
pub const PAGE: usize = 4096;
/// Pages per vif: tx ring, rx ring, tx data, rx buffer.
pub const PER_VIF: usize = 4;
/// The tx data page of a vif.
pub const TX_DATA: usize = 2;
/// The rx buffer page of a vif.
pub const RX_DATA: usize = 3;
/// Yields one wait may take.
pub const MAX_YIELDS: u32 = 200_000;

/// A page-aligned page.
#[repr(C, align(4096))]
pub struct Page(pub [u8; PAGE]);

/// The number at `path`, if it reads as one.
pub fn read_u32(xs: &mut Client, path: &Path) -> Option<u32> {
    let v = xs.read(TxId::NONE, path.as_str()).ok()?;
    bytes_str(v).trim().parse().ok()
}

/// Waits until `path` reads `want` (at most [`MAX_YIELDS`] yields).
pub fn wait_for(xs: &mut Client, path: &Path, want: u32) -> Result<(), Errno> {
    for _ in 0..MAX_YIELDS {
        if read_u32(xs, path) == Some(want) {
            return Ok(());
        }
        yield_cpu();
    }
    Err(Errno::ETIME)
}

/// The backend directory `<fe>/backend` names.
pub fn backend_of(xs: &mut Client, fe: &Path) -> Result<Path, Errno> {
    let b = xs.read(TxId::NONE, fe.join("backend").as_str())?;
    Ok(Path::of(format_args!("{}", bytes_str(b))))
}

/// A vif's rings and its event channel to the control domain.
pub struct Rings {
    /// The tx ring (page 0).
    pub tx: FrontRing<NetifTxProtocol, RawRingPage>,
    /// The rx ring (page 1).
    pub rx: FrontRing<NetifRxProtocol, RawRingPage>,
    /// Unbound, for domain 0.
    pub port: EvtchnPort,
}

/// Grants a vif's [`PER_VIF`] pages (`page(k)` as `gref(k)`) to domain 0, the tx data
/// page read-only, initialises its two rings and allocates its event channel. An error
/// says which step failed.
///
/// # Safety
///
/// Every `page(k)` is a page of this kernel used for nothing else, never referenced,
/// and accessed only by raw pointer (the rings: atomically or volatile, as the backend
/// writes them concurrently).
pub unsafe fn grant_and_init(
    si: &StartInfo,
    table: &Table,
    page: impl Fn(usize) -> *mut u8,
    gref: impl Fn(usize) -> u32,
) -> Result<Rings, (&'static str, Errno)> {
    for k in 0..PER_VIF {
        let flags = if k == TX_DATA {
            GTF_PERMIT_ACCESS | GTF_READONLY
        } else {
            GTF_PERMIT_ACCESS
        };
        table.set(gref(k), flags, DomId(0), mfn_of(si, page(k) as u64));
    }
    // SAFETY: the caller's pages, used for nothing else (this function's contract).
    let (tx_mem, rx_mem) = unsafe {
        (
            RawRingPage::new(page(0), PAGE),
            RawRingPage::new(page(1), PAGE),
        )
    };
    let tx = FrontRing::init(tx_mem).map_err(|e| ("tx ring", e))?;
    let rx = FrontRing::init(rx_mem).map_err(|e| ("rx ring", e))?;
    let port = evtchn::alloc_unbound(DomId(0)).map_err(|e| ("event channel", e))?;
    Ok(Rings { tx, rx, port })
}
