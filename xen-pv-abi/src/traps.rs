//! Traps, callbacks and the return path of a 64-bit PV guest: `set_trap_table` (0),
//! `stack_switch` (3), `set_callbacks` (4), `fpu_taskswitch` (5), `iret` (23),
//! `set_segment_base` (25) and `callback_op` (30) (`xen/include/public/xen.h`,
//! `arch-x86/xen-x86_64.h`, `callback.h`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `CALLBACKOP_*`, `CALLBACKTYPE_*` and `SEGBASE_*`, generated from
/// `hypercall-gen/hypercalls.toml`.
pub use crate::generated::{callback_op::*, set_segment_base::*};

/// One entry of the virtual IDT given to `set_trap_table` (`struct trap_info`).
/// A table ends with an entry whose `address` is 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct TrapInfo {
    /// Exception / interrupt vector.
    pub vector: u8,
    /// Bits 1:0: lowest privilege allowed to raise it with `int n` (0: none, 1–2:
    /// kernel, 3: everyone); bit 2: mask events on entry ([`TI_MASK_EVENTS`]).
    pub flags: u8,
    /// Code selector of the handler.
    pub cs: u16,
    /// Padding (implicit in C).
    pub pad: u32,
    /// Handler address.
    pub address: u64,
}

const_assert_eq!(core::mem::size_of::<TrapInfo>(), 16);
const_assert_eq!(core::mem::offset_of!(TrapInfo, flags), 1);
const_assert_eq!(core::mem::offset_of!(TrapInfo, cs), 2);
const_assert_eq!(core::mem::offset_of!(TrapInfo, address), 8);

/// `TrapInfo::flags` bits holding the DPL for software interrupts.
pub const TI_DPL_MASK: u8 = 3;
/// `TrapInfo::flags` bit: mask events (clear the virtual IF) on entry.
pub const TI_MASK_EVENTS: u8 = 4;

/// `struct iret_context`: what the guest leaves at its RSP for the `iret` hypercall.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct IretContext {
    /// Restored RAX (the hypercall's "result").
    pub rax: u64,
    /// Restored R11 (unless [`VGCF_IN_SYSCALL`]).
    pub r11: u64,
    /// Restored RCX (unless [`VGCF_IN_SYSCALL`]).
    pub rcx: u64,
    /// [`VGCF_IN_SYSCALL`] or 0.
    pub flags: u64,
    /// Where to resume.
    pub rip: u64,
    /// Code selector; RPL 3 returns to guest user mode.
    pub cs: u64,
    /// RFLAGS; its IF becomes the event mask (`upcall_mask = !IF`).
    pub rflags: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Stack selector.
    pub ss: u64,
}

const_assert_eq!(core::mem::size_of::<IretContext>(), 72);
const_assert_eq!(core::mem::offset_of!(IretContext, flags), 24);
const_assert_eq!(core::mem::offset_of!(IretContext, rip), 32);
const_assert_eq!(core::mem::offset_of!(IretContext, ss), 64);

/// `IretContext::flags`: return as `sysret` would (RCX and R11 not restored).
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

/// `CallbackRegister::flags`: mask events on entry.
pub const CALLBACKF_MASK_EVENTS: u16 = 1;

/// `struct callback_register`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CallbackRegister {
    /// `CALLBACKTYPE_*`.
    pub kind: u16,
    /// `CALLBACKF_*`.
    pub flags: u16,
    /// Padding (implicit in C).
    pub pad: u32,
    /// Entry point.
    pub address: u64,
}

const_assert_eq!(core::mem::size_of::<CallbackRegister>(), 16);
const_assert_eq!(core::mem::offset_of!(CallbackRegister, address), 8);

/// `struct callback_unregister`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CallbackUnregister {
    /// `CALLBACKTYPE_*`.
    pub kind: u16,
    /// Padding.
    pub pad: u16,
}

const_assert_eq!(core::mem::size_of::<CallbackUnregister>(), 4);

/// Xen's CPUID leaves start here (`XEN_CPUID_FIRST_LEAF`).
pub const XEN_CPUID_FIRST_LEAF: u32 = 0x4000_0000;
/// The forced-emulation prefix: `ud2; .ascii "xen"` before a `cpuid` (0F A2) makes the
/// hypervisor emulate it, Xen's leaves included.
pub const XEN_EMULATE_PREFIX: [u8; 5] = [0x0f, 0x0b, b'x', b'e', b'n'];

/// The bounce frame the hypervisor pushes on the guest kernel stack before entering a
/// trap handler or callback, lowest address first (for exceptions without an error code
/// every field from `rip` on sits 8 bytes lower). Handlers start with `pop rcx; pop r11`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BounceFrameWithError {
    /// Interrupted RCX.
    pub rcx: u64,
    /// Interrupted R11.
    pub r11: u64,
    /// Exception error code.
    pub error_code: u64,
    /// Interrupted RIP.
    pub rip: u64,
    /// Bits 15:0 interrupted CS (RPL 0 when the guest kernel was interrupted); bits
    /// 39:32 the event mask (`evtchn_upcall_mask`) before entry.
    pub cs_and_mask: u64,
    /// Interrupted RFLAGS, IF = the inverse of the saved event mask.
    pub rflags: u64,
    /// Interrupted RSP.
    pub rsp: u64,
    /// Interrupted SS.
    pub ss: u64,
}

const_assert_eq!(core::mem::size_of::<BounceFrameWithError>(), 64);
