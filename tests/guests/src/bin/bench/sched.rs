//! Scheduling: yields between two domains.

use core::ptr::null;

use guest_abi::Errno;
use guest_abi::generated::call;
use guest_abi::sched::SCHEDOP_YIELD;

use crate::{Ctx, Failure, Figures, timed, timed_empty};

/// Yields both sides make before role 1 starts timing, so they run in lockstep.
const WARMUP_YIELDS: u64 = 16;
/// Extra yields of role 2, so role 1 never yields to nobody while it measures.
const SLACK_YIELDS: u64 = 64;

/// A sched_op without argument (yield, block).
pub fn sched_op(cmd: u32) -> Result<(), Errno> {
    // SAFETY: yield and block take no argument.
    let r = unsafe { call::sched_op(cmd, null()) };
    Errno::check(r).map(drop)
}

pub fn sched_yield_2dom(ctx: &Ctx) -> Figures {
    let (n, role) = (ctx.n, ctx.role);
    let yield_ = || sched_op(SCHEDOP_YIELD).map_err(Failure::from);
    if role != 1 {
        for _ in 0..WARMUP_YIELDS + n + SLACK_YIELDS {
            yield_()?;
        }
        return Ok((0, 0, 0));
    }
    for _ in 0..WARMUP_YIELDS {
        yield_()?;
    }
    let total = timed(n, yield_)?;
    Ok((n, total, timed_empty(n)))
}
