//! The state of a 64-bit PV vCPU as `VCPUOP_initialise` (and `XEN_DOMCTL_setvcpucontext`)
//! take it: `struct vcpu_guest_context` and its `struct cpu_user_regs`
//! (`xen/include/public/arch-x86/xen.h`, `xen-x86_64.h`), x86_64 layout.

use crate::traps::TrapInfo;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `vcpu_guest_context.flags`: `fpu_ctxt` holds valid FPU state.
pub const VGCF_I387_VALID: u64 = 1 << 0;
/// `vcpu_guest_context.flags`: the vCPU starts in guest kernel mode.
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
/// `vcpu_guest_context.flags`: the failsafe callback masks events.
pub const VGCF_FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
/// `vcpu_guest_context.flags`: the syscall callback masks events.
pub const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
/// `vcpu_guest_context.flags`: the vCPU is (to be) online.
pub const VGCF_ONLINE: u64 = 1 << 5;

/// `struct cpu_user_regs` (x86_64): the general registers and the iret frame of a vCPU.
/// Selectors are 16 bits followed by padding (implicit in C, explicit here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
#[allow(missing_docs)]
pub struct CpuUserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// Set by the hypervisor on exceptions.
    pub error_code: u32,
    /// Set by the hypervisor on exceptions.
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub pad0: [u16; 1],
    /// The event mask saved across a bounce.
    pub saved_upcall_mask: u8,
    pub pad1: [u8; 3],
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub pad2: [u16; 3],
    pub es: u16,
    pub pad3: [u16; 3],
    pub ds: u16,
    pub pad4: [u16; 3],
    pub fs: u16,
    pub pad5: [u16; 3],
    pub gs: u16,
    pub pad6: [u16; 3],
}

const_assert_eq!(core::mem::size_of::<CpuUserRegs>(), 200);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, error_code), 120);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, rip), 128);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, cs), 136);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, saved_upcall_mask), 140);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, rflags), 144);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, rsp), 152);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, ss), 160);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, es), 168);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, ds), 176);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, fs), 184);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, gs), 192);

/// `struct vcpu_guest_context` (x86_64, 5168 bytes): what a new vCPU starts with. Build one
/// with `zerocopy::FromZeros::new_zeroed()` and fill in what the vCPU needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct VcpuGuestContext {
    /// FXSAVE image (used with [`VGCF_I387_VALID`]).
    pub fpu_ctxt: [u8; 512],
    /// `VGCF_*`.
    pub flags: u64,
    /// Registers it starts with.
    pub user_regs: CpuUserRegs,
    /// Its virtual IDT (as `set_trap_table`).
    pub trap_ctxt: [TrapInfo; 256],
    /// LDT linear base.
    pub ldt_base: u64,
    /// LDT entries.
    pub ldt_ents: u64,
    /// Machine frames of its GDT.
    pub gdt_frames: [u64; 16],
    /// GDT entries (0: none of its own).
    pub gdt_ents: u64,
    /// Kernel stack selector (as `stack_switch`).
    pub kernel_ss: u64,
    /// Kernel stack pointer (as `stack_switch`).
    pub kernel_sp: u64,
    /// Control registers: `ctrlreg[3]` is the kernel root (`mfn << 12`), `ctrlreg[1]`
    /// the user root (0: none).
    pub ctrlreg: [u64; 8],
    /// Debug registers.
    pub debugreg: [u64; 8],
    /// Event upcall entry.
    pub event_callback_eip: u64,
    /// Failsafe callback entry.
    pub failsafe_callback_eip: u64,
    /// `syscall` entry from guest user mode.
    pub syscall_callback_eip: u64,
    /// `VMASST_*` bits (domain-wide).
    pub vm_assist: u64,
    /// FS base.
    pub fs_base: u64,
    /// GS base in kernel mode.
    pub gs_base_kernel: u64,
    /// GS base in user mode.
    pub gs_base_user: u64,
}

const_assert_eq!(core::mem::size_of::<VcpuGuestContext>(), 5168);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, flags), 512);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, user_regs), 520);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, trap_ctxt), 720);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, ldt_base), 4816);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, ldt_ents), 4824);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, gdt_frames), 4832);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, gdt_ents), 4960);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, kernel_ss), 4968);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, kernel_sp), 4976);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, ctrlreg), 4984);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, debugreg), 5048);
const_assert_eq!(
    core::mem::offset_of!(VcpuGuestContext, event_callback_eip),
    5112
);
const_assert_eq!(
    core::mem::offset_of!(VcpuGuestContext, failsafe_callback_eip),
    5120
);
const_assert_eq!(
    core::mem::offset_of!(VcpuGuestContext, syscall_callback_eip),
    5128
);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, vm_assist), 5136);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, fs_base), 5144);
const_assert_eq!(
    core::mem::offset_of!(VcpuGuestContext, gs_base_kernel),
    5152
);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, gs_base_user), 5160);
