//! A xenstore request through the control domain's xenstored.

use crate::{Ctx, Failure, Figures, timed, timed_empty};
use xen_pv_abi::kit::TxId;

/// Most iterations: each one is a round trip through another domain (tens of thousands
/// of instructions), so the default 100,000 would dominate the whole run.
const MAX_ITERATIONS: u64 = 2_000;

/// One `XS_READ` of `name` (relative: the domain's own `/local/domain/<id>/name`)
/// through the kit's `XenbusClient`, from writing the request into the ring to the
/// reply's last byte read, with blocking on the store port in between. Needs a
/// xenstored: dom0 on Xen (the Xen bench run) has none and reports `no_xenstore`.
pub fn xenstore_read_roundtrip(ctx: &Ctx) -> Figures {
    let si = ctx.si;
    if si.xenstore().is_none() {
        return Err(Failure::Wrong("no_xenstore"));
    }
    pv_guest::events::init(si)?;
    let r = measure(ctx);
    // Leave event delivery masked, as the other cases expect it.
    pv_guest::events::disable();
    r
}

fn measure(ctx: &Ctx) -> Figures {
    let n = ctx.n.min(MAX_ITERATIONS);
    let mut xs = pv_guest::xenbus::connect(ctx.si)?;
    // Warm up (and check the key is there) outside the measurement.
    if xs.read(TxId::NONE, "name")?.is_empty() {
        return Err(Failure::Wrong("empty_name"));
    }
    let total = timed(n, || {
        xs.read(TxId::NONE, "name")?;
        Ok(())
    })?;
    Ok((n, total, timed_empty(n)))
}
