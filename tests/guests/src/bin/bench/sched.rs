//! Scheduling: `SCHEDOP_yield` with nobody else to run, and yields that switch between
//! two domains (ours) or two vCPUs of dom0 (Xen, `vcpus=2`).

use core::ptr::{addr_of, null, null_mut};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use xen_pv_abi::Errno;
use xen_pv_abi::generated::call;
use xen_pv_abi::generated::vcpu_op::{VCPUOP_DOWN, VCPUOP_INITIALISE, VCPUOP_IS_UP, VCPUOP_UP};
use xen_pv_abi::layout::{FLAT_KERNEL_CS64, FLAT_KERNEL_SS64};
use xen_pv_abi::sched::{SCHEDOP_BLOCK, SCHEDOP_YIELD};
use xen_pv_abi::vcpu::{VGCF_IN_KERNEL, VcpuGuestContext};
use zerocopy::FromZeros;

use crate::{Ctx, Failure, Figures, timed, timed_empty};

/// Yields both sides make before role 1 starts timing, so they run in lockstep.
const WARMUP_YIELDS: u64 = 16;
/// Extra yields of role 2, so role 1 never yields to nobody while it measures.
const SLACK_YIELDS: u64 = 64;
/// Yields vCPU 0 makes at most while waiting for vCPU 1 to start or to stop.
const PARTNER_WAIT_YIELDS: u64 = 10_000;

/// A sched_op without argument (yield, block).
pub fn sched_op(cmd: u32) -> Result<(), Errno> {
    // SAFETY: yield and block take no argument.
    let r = unsafe { call::sched_op(cmd, null()) };
    Errno::check(r).map(drop)
}

/// `SCHEDOP_yield` per iteration with no other vCPU runnable: the yield returns to the
/// caller (the bare `syscall`, as `xen_version`).
pub fn sched_yield_1dom(ctx: &Ctx) -> Figures {
    let n = ctx.n;
    // Once through the checked wrapper, so a failing yield is reported, not timed.
    sched_op(SCHEDOP_YIELD)?;
    // SAFETY: sched_op(SCHEDOP_yield, NULL) takes no buffer and returns to the caller.
    let total = unsafe {
        timed_loop!(
            n,
            0u64,
            ["mov $29, %eax", "xor %edi, %edi", "xor %esi, %esi"],
            "syscall"
        )
    };
    // SAFETY: the same loop without the syscall: register moves only.
    let baseline = unsafe {
        timed_loop!(
            n,
            0u64,
            ["mov $29, %eax", "xor %edi, %edi", "xor %esi, %esi"]
        )
    };
    Ok((n, total, baseline))
}

/// Yields that switch to another vCPU and back, per iteration (two context switches).
/// Two domains (`role=1` times N yields, `role=2` yields in turn), or with `vcpus=2` two
/// vCPUs of this domain: vCPU 1 yields in a loop while vCPU 0 times N yields (Xen, where
/// the run has dom0 only).
pub fn sched_yield_2dom(ctx: &Ctx) -> Figures {
    if ctx.vcpus == 2 {
        return yield_two_vcpus(ctx);
    }
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

// ---- two vCPUs of one domain ----------------------------------------------------------

const PARTNER_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct PartnerStack([u8; PARTNER_STACK_SIZE]);

/// vCPU 1's stack; only vCPU 1 uses it (its address is all vCPU 0 takes).
static mut PARTNER_STACK: PartnerStack = PartnerStack([0; PARTNER_STACK_SIZE]);
/// Set by vCPU 0 when vCPU 1 is to stop.
static PARTNER_STOP: AtomicBool = AtomicBool::new(false);
/// Yields vCPU 1 made.
static PARTNER_YIELDS: AtomicU64 = AtomicU64::new(0);

fn vcpu_op(cmd: u32, vcpu: u32, arg: *mut core::ffi::c_void) -> Result<u64, Errno> {
    // SAFETY: the callers pass either no argument or a valid vcpu_guest_context.
    let r = unsafe { call::vcpu_op(cmd, vcpu, arg) };
    Errno::check(r)
}

/// vCPU 1: yields until told to stop, then takes itself down.
extern "C" fn partner_main() -> ! {
    while !PARTNER_STOP.load(Ordering::Acquire) {
        if sched_op(SCHEDOP_YIELD).is_err() {
            break;
        }
        PARTNER_YIELDS.fetch_add(1, Ordering::Relaxed);
    }
    let _ = vcpu_op(VCPUOP_DOWN, 1, null_mut());
    loop {
        let _ = sched_op(SCHEDOP_BLOCK);
    }
}

/// Yields (vCPU 0) until `done`, at most [`PARTNER_WAIT_YIELDS`] times.
fn yield_until(mut done: impl FnMut() -> bool) -> Result<bool, Failure> {
    for _ in 0..PARTNER_WAIT_YIELDS {
        if done() {
            return Ok(true);
        }
        sched_op(SCHEDOP_YIELD)?;
    }
    Ok(done())
}

fn yield_two_vcpus(ctx: &Ctx) -> Figures {
    let n = ctx.n;
    let stack_top = addr_of!(PARTNER_STACK) as u64 + PARTNER_STACK_SIZE as u64;
    let mut c = VcpuGuestContext::new_zeroed();
    c.flags = VGCF_IN_KERNEL;
    c.user_regs.rip = partner_main as *const () as u64;
    // As after a `call`: the return address slot keeps the ABI's 16-byte alignment.
    c.user_regs.rsp = stack_top - 8;
    c.user_regs.cs = FLAT_KERNEL_CS64;
    c.user_regs.ss = FLAT_KERNEL_SS64;
    c.user_regs.rflags = 1 << 9;
    c.kernel_ss = u64::from(FLAT_KERNEL_SS64);
    c.kernel_sp = stack_top;
    c.ctrlreg[3] = pv_guest::paging::kernel_l4(ctx.si) << 12;
    vcpu_op(VCPUOP_INITIALISE, 1, (&raw mut c).cast())?;
    vcpu_op(VCPUOP_UP, 1, null_mut())?;
    if !yield_until(|| PARTNER_YIELDS.load(Ordering::Relaxed) > 0)? {
        return Err(Failure::Wrong("vcpu1_never_ran"));
    }
    for _ in 0..WARMUP_YIELDS {
        sched_op(SCHEDOP_YIELD)?;
    }
    let before = PARTNER_YIELDS.load(Ordering::Relaxed);
    let total = timed(n, || sched_op(SCHEDOP_YIELD).map_err(Failure::from))?;
    let partner = PARTNER_YIELDS.load(Ordering::Relaxed) - before;
    PARTNER_STOP.store(true, Ordering::Release);
    let down = yield_until(|| vcpu_op(VCPUOP_IS_UP, 1, null_mut()) == Ok(0))?;
    // Every yield of ours must have run vCPU 1 (one yield of its own each time).
    if partner + 1 < n {
        return Err(Failure::Wrong("yield_did_not_switch"));
    }
    if !down {
        return Err(Failure::Wrong("vcpu1_did_not_stop"));
    }
    Ok((n, total, timed_empty(n)))
}
