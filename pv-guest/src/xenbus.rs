//! The kernel's xenstore connection: the kit's [`XenbusClient`] over the ring page
//! start_info names, notifying on the store event channel and blocking on it with
//! `SCHEDOP_block` (through [`crate::events::wait_until`]).
//!
//! [`crate::events::init`] must have run (the waits count upcalls on the store port).

use core::sync::atomic::{AtomicU32, Ordering};

use xen_pv_abi::console::EvtchnNotifier;
use xen_pv_abi::kit::{RawStoreRing, TxId, Wait, XenbusClient};
use xen_pv_abi::layout::{MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START, PAGE_SIZE};
use xen_pv_abi::xenstore::{XS_SET_PERMS, XenstoreDomainInterface};
use xen_pv_abi::{Errno, EvtchnPort, Mfn};

use crate::events::{count, wait_until};
use crate::{StartInfo, VIRT_BASE};

/// The client type of this kernel.
pub type Client = XenbusClient<RawStoreRing, EvtchnNotifier, StoreWait>;

/// Events seen on the store port by the last wait (shared by every [`StoreWait`]: a
/// kernel has one store port).
static SEEN: AtomicU32 = AtomicU32::new(0);

/// Blocks until the store port has had an event since the last wait returned.
///
/// An event that arrives after the client looked at the ring but before it blocks is
/// counted, so the wait returns at once: no wake-up is lost.
#[derive(Clone, Copy, Debug)]
pub struct StoreWait(pub EvtchnPort);

impl StoreWait {
    /// Blocks as [`Wait::wait`] does (usable while the client is borrowed).
    pub fn block(&self) {
        let port = self.0;
        let seen = SEEN.load(Ordering::Acquire);
        wait_until(|| count(port) != seen);
        SEEN.store(count(port), Ordering::Release);
    }
}

impl Wait for StoreWait {
    fn wait(&mut self) -> Result<(), Errno> {
        self.block();
        Ok(())
    }
}

/// The pseudo-physical frame of `mfn` from the m2p table Xen maps in every PV guest.
fn m2p(mfn: Mfn) -> Option<u64> {
    let entries = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) / 8;
    if mfn.0 >= entries {
        return None;
    }
    // SAFETY: the m2p is mapped read-only at MACH2PHYS_VIRT_START in every PV guest and
    // `mfn` indexes inside its window.
    Some(unsafe {
        (MACH2PHYS_VIRT_START as *const u64)
            .add(mfn.0 as usize)
            .read_volatile()
    })
}

/// The store ring's address in the start-of-day mapping (`VIRT_BASE + pfn * 4096`) and
/// the store port; `ENODEV` for dom0 or a ring outside the domain's memory.
fn ring_of(si: &StartInfo) -> Result<(u64, EvtchnPort), Errno> {
    let (mfn, port) = si.xenstore().ok_or(Errno::ENODEV)?;
    let pfn = m2p(mfn)
        .filter(|&p| mfn.0 != 0 && p < si.nr_pages)
        .ok_or(Errno::ENODEV)?;
    let va = pfn
        .checked_mul(PAGE_SIZE as u64)
        .and_then(|off| VIRT_BASE.checked_add(off))
        .ok_or(Errno::ENODEV)?;
    Ok((va, port))
}

/// A client on this domain's store ring.
///
/// Only one may exist at a time (they would interleave their requests on the ring); the
/// kernel's demos create it, use it and drop it.
pub fn connect(si: &StartInfo) -> Result<Client, Errno> {
    let (va, port) = ring_of(si)?;
    // SAFETY: the ring page lies in the domain's start-of-day mapping (checked above),
    // stays mapped for the kernel's life, and is only accessed through this client
    // (one at a time, see above), volatile.
    let ring = unsafe { RawStoreRing::new(va as *mut XenstoreDomainInterface) };
    SEEN.store(count(port), Ordering::Release);
    Ok(XenbusClient::new(
        ring,
        EvtchnNotifier(port),
        StoreWait(port),
    ))
}

/// `XS_SET_PERMS` on `path`: `perms` in the wire form (`"n1"`, `"r2"`...; the first
/// names the owner and everyone else's access).
pub fn set_perms(xs: &mut Client, tx: TxId, path: &str, perms: &[&str]) -> Result<(), Errno> {
    if path.is_empty() || path.contains('\0') || perms.is_empty() || perms.len() > 8 {
        return Err(Errno::EINVAL);
    }
    let mut parts: [&[u8]; 18] = [&[]; 18];
    parts[0] = path.as_bytes();
    parts[1] = b"\0";
    for (i, p) in perms.iter().enumerate() {
        parts[2 + 2 * i] = p.as_bytes();
        parts[3 + 2 * i] = b"\0";
    }
    let used = 2 + 2 * perms.len();
    xs.request(XS_SET_PERMS, tx, &parts[..used]).map(drop)
}
