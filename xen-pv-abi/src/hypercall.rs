//! Safe wrappers of the hypercalls a small PV kernel needs.
//!
//! Each wrapper passes only pointers to buffers it owns and that are exactly as large as
//! the hypervisor writes, so calling it cannot break memory safety of the caller. Failures
//! come back as [`Errno`]. Everything else is reachable through [`hypercall_raw`].
//!
//! Every function has an `_on` form that takes the [`Transport`] to use (a Linux process
//! passes a `Privcmd`, a host test a [`Fake`](crate::transport::fake::Fake)); the plain
//! form is the `_on` form with [`Native`], for a PV kernel.

use crate::console::XENCONS_OUT_SIZE;
use crate::errno::Errno;
use crate::event_channel::{EVTCHNOP_SEND, EvtchnSend};
use crate::generated::call_on;
use crate::ids::EvtchnPort;
/// `update_va_mapping` flush flags (also in [`crate::mmu`]).
pub use crate::mmu::{UVMF_INVLPG, UVMF_NONE, UVMF_TLB_FLUSH};
use crate::nr;
use crate::sched::{SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SchedShutdown, ShutdownReason};
use crate::transport::{Native, Transport};
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
    unsafe { hypercall_raw_on(&Native, nr, args) }
}

/// [`hypercall_raw`] through `t`.
///
/// # Safety
///
/// As [`hypercall_raw`].
pub unsafe fn hypercall_raw_on<T: Transport + ?Sized>(t: &T, nr: u32, args: [u64; 5]) -> i64 {
    // SAFETY: forwarded to the caller.
    unsafe { t.hypercall5(nr, args) }
}

/// `console_io(CONSOLEIO_write)`: writes `bytes` to the hypervisor console.
///
/// Real Xen allows this for dom0 (and debug builds for every domain); a domU on a release
/// Xen gets `EPERM` and must use its console ring instead.
pub fn console_io_write(bytes: &[u8]) -> Result<(), Errno> {
    console_io_write_on(&Native, bytes)
}

/// [`console_io_write`] through `t`. Long buffers go in chunks of
/// [`XENCONS_OUT_SIZE`] bytes, one hypercall each.
pub fn console_io_write_on<T: Transport + ?Sized>(t: &T, bytes: &[u8]) -> Result<(), Errno> {
    // Chunks keep `count` far below u32 range and the per-call work of the hypervisor small.
    for chunk in bytes.chunks(XENCONS_OUT_SIZE) {
        // SAFETY: the hypervisor only reads `chunk.len()` bytes from `chunk` (CONSOLEIO_write
        // never writes the buffer, whatever the generated pointer type says).
        let ret = unsafe {
            call_on::console_io(
                t,
                nr::CONSOLEIO_WRITE,
                chunk.len() as u32,
                chunk.as_ptr().cast_mut(),
            )
        };
        Errno::check(ret)?;
    }
    Ok(())
}

/// `console_io(CONSOLEIO_read)`: takes up to `buf.len()` bytes typed on the hypervisor
/// console into `buf`; returns how many (0 when none are waiting). Only the domain the
/// console input is switched to (dom0 / the control domain) may read it.
pub fn console_io_read(buf: &mut [u8]) -> Result<usize, Errno> {
    console_io_read_on(&Native, buf)
}

/// [`console_io_read`] through `t`. At most `u32::MAX` bytes are asked for at once.
pub fn console_io_read_on<T: Transport + ?Sized>(t: &T, buf: &mut [u8]) -> Result<usize, Errno> {
    let count = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    // SAFETY: the hypervisor writes at most `count` bytes into `buf`, which is ours and
    // at least that long.
    let ret = unsafe { call_on::console_io(t, nr::CONSOLEIO_READ, count, buf.as_mut_ptr()) };
    let n = Errno::check(ret)?;
    // A count beyond the buffer is never believed.
    Ok(usize::try_from(n).unwrap_or(usize::MAX).min(buf.len()))
}

/// `xen_version(XENVER_version)`: `(major, minor)`.
pub fn xen_version() -> Result<(u16, u16), Errno> {
    xen_version_on(&Native)
}

/// [`xen_version`] through `t`.
pub fn xen_version_on<T: Transport + ?Sized>(t: &T) -> Result<(u16, u16), Errno> {
    // SAFETY: XENVER_version takes no buffer.
    let ret = unsafe { call_on::xen_version(t, XENVER_VERSION, core::ptr::null_mut()) };
    let v = Errno::check(ret)?;
    Ok(((v >> 16) as u16, v as u16))
}

/// Issues `xen_version(cmd, &mut *out)` where `out` is the whole result buffer of `cmd`.
fn xen_version_into<T: Transport + ?Sized, B: zerocopy::IntoBytes + zerocopy::FromBytes>(
    t: &T,
    cmd: u32,
    out: &mut B,
) -> Result<u64, Errno> {
    // SAFETY: `B` is the result type of `cmd`, so the hypervisor writes at most
    // `size_of::<B>()` bytes into `out`, and any bytes are a valid `B` (FromBytes).
    let ret = unsafe { call_on::xen_version(t, cmd, core::ptr::from_mut(out).cast()) };
    Errno::check(ret)
}

/// `xen_version(XENVER_extraversion)`: e.g. `".7"`, NUL-padded.
pub fn xen_extraversion() -> Result<ExtraVersion, Errno> {
    xen_extraversion_on(&Native)
}

/// [`xen_extraversion`] through `t`.
pub fn xen_extraversion_on<T: Transport + ?Sized>(t: &T) -> Result<ExtraVersion, Errno> {
    let mut out = ExtraVersion::new_zeroed();
    xen_version_into(t, XENVER_EXTRAVERSION, &mut out)?;
    Ok(out)
}

/// `xen_version(XENVER_capabilities)` into `out`: space-separated, NUL-padded, e.g.
/// `"xen-3.0-x86_64 hvm-3.0-x86_32 ..."`.
pub fn xen_capabilities(out: &mut CapabilitiesInfo) -> Result<(), Errno> {
    xen_capabilities_on(&Native, out)
}

/// [`xen_capabilities`] through `t`.
pub fn xen_capabilities_on<T: Transport + ?Sized>(
    t: &T,
    out: &mut CapabilitiesInfo,
) -> Result<(), Errno> {
    xen_version_into(t, XENVER_CAPABILITIES, out).map(drop)
}

/// `xen_version(XENVER_get_features)`: the feature bits of 32-bit submap `idx`.
pub fn xen_get_features(idx: u32) -> Result<u32, Errno> {
    xen_get_features_on(&Native, idx)
}

/// [`xen_get_features`] through `t`.
pub fn xen_get_features_on<T: Transport + ?Sized>(t: &T, idx: u32) -> Result<u32, Errno> {
    let mut info = FeatureInfo {
        submap_idx: idx,
        submap: 0,
    };
    xen_version_into(t, XENVER_GET_FEATURES, &mut info)?;
    Ok(info.submap)
}

/// `xen_version(XENVER_compile_info)`.
pub fn xen_compile_info() -> Result<CompileInfo, Errno> {
    xen_compile_info_on(&Native)
}

/// [`xen_compile_info`] through `t`.
pub fn xen_compile_info_on<T: Transport + ?Sized>(t: &T) -> Result<CompileInfo, Errno> {
    let mut out = CompileInfo::new_zeroed();
    xen_version_into(t, XENVER_COMPILE_INFO, &mut out)?;
    Ok(out)
}

/// `sched_op(SCHEDOP_yield)`: lets other domains run.
pub fn sched_yield() -> Result<(), Errno> {
    sched_yield_on(&Native)
}

/// [`sched_yield`] through `t`.
pub fn sched_yield_on<T: Transport + ?Sized>(t: &T) -> Result<(), Errno> {
    // SAFETY: SCHEDOP_yield takes no buffer.
    let ret = unsafe { call_on::sched_op(t, SCHEDOP_YIELD, core::ptr::null()) };
    Errno::check(ret).map(drop)
}

/// `sched_op(SCHEDOP_shutdown, reason)`.
///
/// For every reason but `Suspend` a successful call never returns. `Ok(())` comes back
/// only after a resumed suspend (or from a hypervisor that ignored the request).
pub fn sched_shutdown(reason: ShutdownReason) -> Result<(), Errno> {
    sched_shutdown_on(&Native, reason)
}

/// [`sched_shutdown`] through `t`. Through `Privcmd` this shuts down the domain the
/// process runs in.
pub fn sched_shutdown_on<T: Transport + ?Sized>(
    t: &T,
    reason: ShutdownReason,
) -> Result<(), Errno> {
    let arg = SchedShutdown {
        reason: reason as u32,
    };
    // SAFETY: the hypervisor reads the 4-byte `sched_shutdown` argument.
    let ret = unsafe { call_on::sched_op(t, SCHEDOP_SHUTDOWN, core::ptr::from_ref(&arg).cast()) };
    Errno::check(ret).map(drop)
}

/// `event_channel_op(EVTCHNOP_send, port)`: notifies the other end of `port`.
pub fn event_channel_send(port: EvtchnPort) -> Result<(), Errno> {
    event_channel_send_on(&Native, port)
}

/// [`event_channel_send`] through `t`.
pub fn event_channel_send_on<T: Transport + ?Sized>(t: &T, port: EvtchnPort) -> Result<(), Errno> {
    let mut arg = EvtchnSend { port };
    // SAFETY: the hypervisor reads the 4-byte `evtchn_send` argument.
    let ret = unsafe {
        call_on::event_channel_op(t, EVTCHNOP_SEND, core::ptr::from_mut(&mut arg).cast())
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
    // SAFETY: forwarded to the caller.
    unsafe { update_va_mapping_on(&Native, va, pte, flags) }
}

/// [`update_va_mapping`] through `t`.
///
/// # Safety
///
/// As [`update_va_mapping`], for the address space `t` issues the call from.
pub unsafe fn update_va_mapping_on<T: Transport + ?Sized>(
    t: &T,
    va: u64,
    pte: u64,
    flags: u64,
) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller; the hypervisor reads only the register arguments.
    let ret = unsafe { call_on::update_va_mapping(t, va, pte, flags) };
    Errno::check(ret).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::fake::Fake;

    #[test]
    fn each_wrapper_passes_its_number_and_arguments() {
        let t = Fake::new(|_| 0);
        xen_version_on(&t).unwrap();
        sched_yield_on(&t).unwrap();
        let c = t.calls();
        assert_eq!(c[0].op, nr::XEN_VERSION);
        assert_eq!(c[0].args, [u64::from(XENVER_VERSION), 0, 0, 0, 0]);
        assert_eq!(c[1].op, nr::SCHED_OP);
        assert_eq!(c[1].args, [u64::from(SCHEDOP_YIELD), 0, 0, 0, 0]);
        // SAFETY: the fake reads nothing.
        unsafe { update_va_mapping_on(&t, 0x1000, 0x2007, UVMF_INVLPG).unwrap() };
        assert_eq!(
            t.last().unwrap(),
            crate::transport::fake::Call {
                op: nr::UPDATE_VA_MAPPING,
                args: [0x1000, 0x2007, UVMF_INVLPG, 0, 0]
            }
        );
    }

    #[test]
    fn console_io_writes_in_chunks_and_points_at_the_bytes() {
        let text = [b'x'; XENCONS_OUT_SIZE + 10];
        let seen = core::cell::RefCell::new([0usize; 2]);
        let t = Fake::new(|call| {
            assert_eq!(call.op, nr::CONSOLE_IO);
            assert_eq!(call.args[0], u64::from(nr::CONSOLEIO_WRITE));
            let i = if call.args[2] == text.as_ptr() as u64 {
                0
            } else {
                1
            };
            seen.borrow_mut()[i] = call.args[1] as usize;
            0
        });
        console_io_write_on(&t, &text).unwrap();
        assert_eq!(t.count(), 2);
        assert_eq!(*seen.borrow(), [XENCONS_OUT_SIZE, 10]);
        assert_eq!(
            t.calls()[1].args[2],
            text.as_ptr() as u64 + XENCONS_OUT_SIZE as u64
        );
    }

    #[test]
    fn console_io_read_passes_the_buffer_and_caps_the_count() {
        let mut buf = [0u8; 16];
        let addr = buf.as_ptr() as u64;
        let t = Fake::new(|call| {
            assert_eq!(call.op, nr::CONSOLE_IO);
            assert_eq!(call.args[0], u64::from(nr::CONSOLEIO_READ));
            assert_eq!((call.args[1], call.args[2]), (16, addr));
            // SAFETY: the wrapper passes its 16-byte buffer.
            unsafe { (call.args[2] as *mut u8).write_bytes(b'k', 3) };
            3
        });
        assert_eq!(console_io_read_on(&t, &mut buf), Ok(3));
        assert_eq!(&buf[..4], b"kkk\0");
        let t = Fake::new(|_| 1000);
        assert_eq!(console_io_read_on(&t, &mut buf), Ok(16));
        let t = Fake::new(|_| Errno::EPERM.to_ret());
        assert_eq!(console_io_read_on(&t, &mut buf), Err(Errno::EPERM));
    }

    #[test]
    fn negative_results_are_errnos_and_stop_the_chunks() {
        let t = Fake::new(|_| Errno::EPERM.to_ret());
        assert_eq!(
            console_io_write_on(&t, &[0; XENCONS_OUT_SIZE * 3]),
            Err(Errno::EPERM)
        );
        assert_eq!(t.count(), 1, "no chunk after the first failure");
        let t = Fake::new(|_| -38);
        assert_eq!(xen_version_on(&t), Err(Errno::ENOSYS));
        assert_eq!(
            sched_shutdown_on(&t, ShutdownReason::Poweroff),
            Err(Errno::ENOSYS)
        );
        // Values outside the errno range are results, not errors.
        let t = Fake::new(|_| 0x0004_0011);
        assert_eq!(xen_version_on(&t), Ok((4, 17)));
    }

    #[test]
    fn shutdown_and_send_pass_their_argument_structs() {
        let seen = core::cell::RefCell::new([0u32; 2]);
        let t = Fake::new(|call| {
            // SAFETY: both commands pass a pointer to a live 4-byte struct.
            let v = unsafe { *(call.args[1] as *const u32) };
            let mut seen = seen.borrow_mut();
            let i = usize::from(call.op == nr::EVENT_CHANNEL_OP);
            seen[i] = v;
            0
        });
        sched_shutdown_on(&t, ShutdownReason::Crash).unwrap();
        event_channel_send_on(&t, EvtchnPort(7)).unwrap();
        assert_eq!(*seen.borrow(), [ShutdownReason::Crash as u32, 7]);
        assert_eq!(t.calls()[0].args[0], u64::from(SCHEDOP_SHUTDOWN));
        assert_eq!(t.calls()[1].op, nr::EVENT_CHANNEL_OP);
        assert_eq!(t.calls()[1].args[0], u64::from(EVTCHNOP_SEND));
    }

    #[test]
    fn xen_version_buffers_are_written_by_the_fake_hypervisor() {
        let t = Fake::new(|call| {
            if call.args[0] == u64::from(XENVER_GET_FEATURES) {
                // SAFETY: XENVER_get_features passes a live FeatureInfo.
                unsafe { (*(call.args[1] as *mut FeatureInfo)).submap = 0xabc };
            }
            0
        });
        assert_eq!(xen_get_features_on(&t, 0), Ok(0xabc));
    }
}
