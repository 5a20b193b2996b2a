//! Safe wrappers of the hypercalls a small PV kernel needs.
//!
//! Each wrapper passes only pointers to buffers it owns and that are exactly as large as
//! the hypervisor writes, so calling it cannot break memory safety of the guest. Failures
//! come back as [`Errno`]. Everything else is reachable through [`hypercall_raw`].

use crate::console::XENCONS_OUT_SIZE;
use crate::errno::Errno;
use crate::event_channel::{EVTCHNOP_SEND, EvtchnSend};
use crate::ids::EvtchnPort;
/// `update_va_mapping` flush flags (also in [`crate::mmu`]).
pub use crate::mmu::{UVMF_INVLPG, UVMF_NONE, UVMF_TLB_FLUSH};
use crate::nr;
use crate::raw;
use crate::sched::{SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SchedShutdown, ShutdownReason};
use crate::version::{
    CapabilitiesInfo, CompileInfo, ExtraVersion, FeatureInfo, XENVER_CAPABILITIES,
    XENVER_COMPILE_INFO, XENVER_EXTRAVERSION, XENVER_GET_FEATURES, XENVER_VERSION,
};
use zerocopy::FromZeros;

/// Issues hypercall `nr` with five arguments (unused ones should be 0) and returns `rax`.
///
/// # Safety
///
/// The hypervisor may read or write any memory the arguments designate and change the
/// state of the domain (map pages, shut it down...): the caller must uphold the contract of
/// that hypercall.
pub unsafe fn hypercall_raw(nr: u32, args: [u64; 5]) -> i64 {
    // SAFETY: forwarded to the caller.
    unsafe { raw::hypercall5(nr, args[0], args[1], args[2], args[3], args[4]) }
}

/// `console_io(CONSOLEIO_write)`: writes `bytes` to the hypervisor console.
///
/// Real Xen allows this for dom0 (and debug builds for every domain); a domU on a release
/// Xen gets `EPERM` and must use its console ring instead.
pub fn console_io_write(bytes: &[u8]) -> Result<(), Errno> {
    // Chunks keep `count` far below u32 range and the per-call work of the hypervisor small.
    for chunk in bytes.chunks(XENCONS_OUT_SIZE) {
        // SAFETY: the hypervisor only reads `chunk.len()` bytes from `chunk`.
        let ret = unsafe {
            raw::hypercall3(
                nr::CONSOLE_IO,
                u64::from(nr::CONSOLEIO_WRITE),
                chunk.len() as u64,
                chunk.as_ptr() as u64,
            )
        };
        Errno::check(ret)?;
    }
    Ok(())
}

/// `xen_version(XENVER_version)`: `(major, minor)`.
pub fn xen_version() -> Result<(u16, u16), Errno> {
    // SAFETY: XENVER_version takes no buffer.
    let ret = unsafe { raw::hypercall2(nr::XEN_VERSION, u64::from(XENVER_VERSION), 0) };
    let v = Errno::check(ret)?;
    Ok(((v >> 16) as u16, v as u16))
}

/// Issues `xen_version(cmd, &mut *out)` where `out` is the whole result buffer of `cmd`.
fn xen_version_into<T: zerocopy::IntoBytes + zerocopy::FromBytes>(
    cmd: u32,
    out: &mut T,
) -> Result<u64, Errno> {
    // SAFETY: `T` is the result type of `cmd`, so the hypervisor writes at most
    // `size_of::<T>()` bytes into `out`, and any bytes are a valid `T` (FromBytes).
    let ret = unsafe {
        raw::hypercall2(
            nr::XEN_VERSION,
            u64::from(cmd),
            core::ptr::from_mut(out) as u64,
        )
    };
    Errno::check(ret)
}

/// `xen_version(XENVER_extraversion)`: e.g. `".7"`, NUL-padded.
pub fn xen_extraversion() -> Result<ExtraVersion, Errno> {
    let mut out = ExtraVersion::new_zeroed();
    xen_version_into(XENVER_EXTRAVERSION, &mut out)?;
    Ok(out)
}

/// `xen_version(XENVER_capabilities)` into `out`: space-separated, NUL-padded, e.g.
/// `"xen-3.0-x86_64 hvm-3.0-x86_32 ..."`.
pub fn xen_capabilities(out: &mut CapabilitiesInfo) -> Result<(), Errno> {
    xen_version_into(XENVER_CAPABILITIES, out).map(drop)
}

/// `xen_version(XENVER_get_features)`: the feature bits of 32-bit submap `idx`.
pub fn xen_get_features(idx: u32) -> Result<u32, Errno> {
    let mut info = FeatureInfo {
        submap_idx: idx,
        submap: 0,
    };
    xen_version_into(XENVER_GET_FEATURES, &mut info)?;
    Ok(info.submap)
}

/// `xen_version(XENVER_compile_info)`.
pub fn xen_compile_info() -> Result<CompileInfo, Errno> {
    let mut out = CompileInfo::new_zeroed();
    xen_version_into(XENVER_COMPILE_INFO, &mut out)?;
    Ok(out)
}

/// `sched_op(SCHEDOP_yield)`: lets other domains run.
pub fn sched_yield() -> Result<(), Errno> {
    // SAFETY: SCHEDOP_yield takes no buffer.
    let ret = unsafe { raw::hypercall2(nr::SCHED_OP, u64::from(SCHEDOP_YIELD), 0) };
    Errno::check(ret).map(drop)
}

/// `sched_op(SCHEDOP_shutdown, reason)`.
///
/// For every reason but `Suspend` a successful call never returns. `Ok(())` comes back
/// only after a resumed suspend (or from a hypervisor that ignored the request).
pub fn sched_shutdown(reason: ShutdownReason) -> Result<(), Errno> {
    let arg = SchedShutdown {
        reason: reason as u32,
    };
    // SAFETY: the hypervisor reads the 4-byte `sched_shutdown` argument.
    let ret = unsafe {
        raw::hypercall2(
            nr::SCHED_OP,
            u64::from(SCHEDOP_SHUTDOWN),
            core::ptr::from_ref(&arg) as u64,
        )
    };
    Errno::check(ret).map(drop)
}

/// `event_channel_op(EVTCHNOP_send, port)`: notifies the other end of `port`.
pub fn event_channel_send(port: EvtchnPort) -> Result<(), Errno> {
    let arg = EvtchnSend { port };
    // SAFETY: the hypervisor reads the 4-byte `evtchn_send` argument.
    let ret = unsafe {
        raw::hypercall2(
            nr::EVENT_CHANNEL_OP,
            u64::from(EVTCHNOP_SEND),
            core::ptr::from_ref(&arg) as u64,
        )
    };
    Errno::check(ret).map(drop)
}

/// `update_va_mapping(va, pte, flags)`: sets the L1 entry that maps `va` (which must
/// already have an L1 table) to `pte` (a machine address with PTE flags, e.g. `| 0x7`).
///
/// # Safety
///
/// Whatever `va` mapped before is no longer reachable there, and what `pte` maps appears at
/// `va`: no Rust reference may cover that page, and the caller must only access it in ways
/// valid for the new frame (e.g. volatile reads of a hypervisor-written page).
pub unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller; the hypervisor reads only the register arguments.
    let ret = unsafe { raw::hypercall3(nr::UPDATE_VA_MAPPING, va, pte, flags) };
    Errno::check(ret).map(drop)
}
