//! The bare hypercall round trip.

use crate::{Ctx, Figures};

/// `xen_version(XENVER_version, NULL)` per iteration: `mov $17,%eax; xor %edi,%edi;
/// xor %esi,%esi; syscall`.
pub fn xen_version(ctx: &Ctx) -> Figures {
    let n = ctx.n;
    // SAFETY: xen_version(XENVER_version, NULL) takes no buffer.
    let total = unsafe {
        timed_loop!(
            n,
            0u64,
            ["mov $17, %eax", "xor %edi, %edi", "xor %esi, %esi"],
            "syscall"
        )
    };
    // SAFETY: the same loop without the syscall: register moves only.
    let baseline = unsafe {
        timed_loop!(
            n,
            0u64,
            ["mov $17, %eax", "xor %edi, %edi", "xor %esi, %esi"]
        )
    };
    Ok((n, total, baseline))
}
