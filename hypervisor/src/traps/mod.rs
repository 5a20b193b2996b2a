//! Traps, callbacks and guest user mode (xen-pv-abi.md §1.4, §6.4, §6.5, §9.6).
//!
//! A 64-bit PV guest runs its kernel and its user space at CPL3. The hypervisor keeps a
//! per-vCPU *virtual* mode: in kernel mode the vCPU runs on its kernel L4 with the kernel
//! GS base, in user mode on the user L4 (`MMUEXT_NEW_USER_BASEPTR`) with the user GS
//! base. Every way into the guest kernel — an exception, a software interrupt, a
//! `syscall` from user mode, an event upcall — goes through [`Hypervisor::bounce`]: it
//! switches to kernel mode, pushes Xen's bounce frame on the guest kernel stack with
//! `copy_to_guest` (a bad stack crashes the domain, never the hypervisor) and resumes the
//! guest at its handler. The `iret` hypercall is the way back.
//!
//! Also here: the instruction emulation a PV kernel relies on (FS/GS base MSRs, reads of
//! CR0/CR2/CR3/CR4, `clts`, Xen's forced-emulation `cpuid`), and the per-vCPU CPU state
//! switched with the domain (FPU/SSE registers, virtual CR0.TS, FS/GS bases).
//!
//! GS bases, as Xen: while a vCPU's state is on the CPU, its other mode's GS base waits
//! in the shadow GS MSR, so a kernel<->user switch is one `swapgs` (plus a read of the
//! base left behind, which the guest may have changed by loading GS); FS is shared by
//! both modes and not touched. `set_segment_base` and the emulated `wrmsr` write only
//! the base named.

pub mod emulate;
pub mod gdt;
pub mod ldt;
pub mod segments;
#[cfg(test)]
mod tests;

use crate::domain::runtime::DomainState;
use crate::domain::runtime::Vcpu;
use crate::hv::{Hypervisor, PerCpu, XEN_VERSION_NUMBER, exception_mnemonic, sanitize_for_iret};
use crate::hypercall::HcResult;
use crate::hypercall::handle::Outcome;
use crate::hypercall::handle::{GuestHandle, Untyped};
use crate::mmu::Frames;
use crate::mmu::guest::{GuestSpace, copy_from_guest, copy_to_guest, in_one_page, translate};
use crate::platform::{DataSelectors, FpuArea, GuestFrame, MachineMemory, Platform, Resume};
use core::mem::offset_of;
use emulate::{Insn, MAX_INSN_LEN};
use xen_pv_abi::Errno;
use xen_pv_abi::layout::{FLAT_KERNEL_CS64, FLAT_KERNEL_SS64, in_hypervisor_range, is_canonical};
use xen_pv_abi::shared_info::{ArchVcpuInfo, SharedInfo, VcpuInfo};
use xen_pv_abi::traps::*;
use zerocopy::{FromZeros, IntoBytes};

/// Vectors of the virtual IDT.
pub const NR_VECTORS: usize = 256;
/// Most `trap_info` entries one `set_trap_table` call reads before giving up with
/// `-E2BIG` (Xen would preempt and continue; a real table has at most 256 entries).
pub const MAX_TRAP_TABLE_ENTRIES: usize = 4 * NR_VECTORS;

/// One virtual IDT entry (`address == 0`: no handler).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapEntry {
    pub address: u64,
    /// Code selector as registered (RPL raised to 3); delivery always uses
    /// `FLAT_KERNEL_CS64`, the only 64-bit code selector a guest has.
    pub cs: u16,
    /// `TI_*` flags: DPL for `int n`, mask events.
    pub flags: u8,
}

/// A registered callback (`address == 0`: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Callback {
    pub address: u64,
    /// Clear the virtual IF on entry.
    pub mask_events: bool,
}

/// Per-vCPU trap and CPU state that is the guest's, not the hypervisor's.
#[derive(Clone, Copy, Debug)]
pub struct VcpuTraps {
    /// The virtual IDT (`set_trap_table`).
    pub table: [TrapEntry; NR_VECTORS],
    pub event: Callback,
    pub failsafe: Callback,
    pub syscall: Callback,
    pub nmi: Callback,
    /// Guest kernel stack used when entering the kernel from user mode (`stack_switch`).
    pub kernel_sp: u64,
    pub kernel_ss: u16,
    /// FS base (one for both modes, as in Xen).
    pub fs_base: u64,
    pub gs_base_kernel: u64,
    pub gs_base_user: u64,
    /// Virtual CR0.TS (`fpu_taskswitch`): the next FPU use raises #NM in the guest.
    pub fpu_ts: bool,
    /// Virtual CR2: the address of the last page fault bounced to the guest.
    pub cr2: u64,
    /// FPU/SSE registers while the vCPU is not on the CPU.
    pub fpu: FpuArea,
    /// DS/ES/FS/GS while the vCPU is not on the CPU (traps/segments.rs).
    pub selectors: DataSelectors,
}

impl Default for VcpuTraps {
    fn default() -> Self {
        VcpuTraps {
            table: [TrapEntry::default(); NR_VECTORS],
            event: Callback::default(),
            failsafe: Callback::default(),
            syscall: Callback::default(),
            nmi: Callback::default(),
            kernel_sp: 0,
            kernel_ss: FLAT_KERNEL_SS64,
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
            fpu_ts: false,
            cr2: 0,
            fpu: FpuArea::default(),
            selectors: DataSelectors::default(),
        }
    }
}

/// Exception vectors.
const VEC_BP: u8 = 3;
const VEC_UD: u8 = 6;
const VEC_NM: u8 = 7;
const VEC_GP: u8 = 13;
const VEC_PF: u8 = 14;

/// Vectors for which the CPU pushes an error code.
fn has_error_code(vector: u64) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// #PF error code bit: the access came from user mode.
const PFEC_USER: u64 = 1 << 2;

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_DF: u64 = 1 << 10;
const RFLAGS_IOPL: u64 = 3 << 12;
const RFLAGS_NT: u64 = 1 << 14;
const RFLAGS_RF: u64 = 1 << 16;
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_AC: u64 = 1 << 18;

const MSR_FS_BASE: u32 = 0xc000_0100;
const MSR_GS_BASE: u32 = 0xc000_0101;
/// In guest kernel mode the "shadow" GS base is the user one.
const MSR_SHADOW_GS_BASE: u32 = 0xc000_0102;

/// What a PV guest reads from CR0 (PG AM WP NE ET MP PE; TS from `fpu_taskswitch`) and
/// CR4 (PAE PGE OSFXSR OSXMMEXCPT).
const GUEST_CR0: u64 = 0x8005_0033;
const CR0_TS: u64 = 1 << 3;
const GUEST_CR4: u64 = 0x6a0;

/// Where a bounce could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadGuestStack(pub u64);

/// Byte offsets in the domain's shared_info of vCPU 0's event mask and CR2.
const UPCALL_MASK_OFF: u64 =
    (offset_of!(SharedInfo, vcpu_info) + offset_of!(VcpuInfo, evtchn_upcall_mask)) as u64;
// `deliver_event_upcall` reads the two bytes at once.
const _: () =
    assert!(UPCALL_MASK_OFF == UPCALL_PENDING_OFF + 1 && !UPCALL_MASK_OFF.is_multiple_of(4096));
const UPCALL_PENDING_OFF: u64 =
    (offset_of!(SharedInfo, vcpu_info) + offset_of!(VcpuInfo, evtchn_upcall_pending)) as u64;
const ARCH_CR2_OFF: u64 = (offset_of!(SharedInfo, vcpu_info)
    + offset_of!(VcpuInfo, arch)
    + offset_of!(ArchVcpuInfo, cr2)) as u64;

/// The general register `n` (ModRM numbering) of a saved frame.
fn gpr(frame: &mut GuestFrame, n: u8) -> &mut u64 {
    match n & 15 {
        0 => &mut frame.rax,
        1 => &mut frame.rcx,
        2 => &mut frame.rdx,
        3 => &mut frame.rbx,
        4 => &mut frame.rsp,
        5 => &mut frame.rbp,
        6 => &mut frame.rsi,
        7 => &mut frame.rdi,
        8 => &mut frame.r8,
        9 => &mut frame.r9,
        10 => &mut frame.r10,
        11 => &mut frame.r11,
        12 => &mut frame.r12,
        13 => &mut frame.r13,
        14 => &mut frame.r14,
        _ => &mut frame.r15,
    }
}

/// The words of a bounce frame, lowest address first (xen-pv-abi.md §6.4).
/// `cs` already has its RPL adjusted; `saved_mask` is the event mask before entry.
pub fn bounce_frame_words(
    frame: &GuestFrame,
    cs: u64,
    error: Option<u64>,
    saved_mask: u8,
) -> heapless::Vec<u64, MAX_BOUNCE_WORDS> {
    let mut w = heapless::Vec::new();
    let rflags = if saved_mask != 0 {
        frame.rflags & !RFLAGS_IF
    } else {
        frame.rflags | RFLAGS_IF
    };
    let _ = w.push(frame.rcx);
    let _ = w.push(frame.r11);
    if let Some(e) = error {
        let _ = w.push(e);
    }
    let _ = w.push(frame.rip);
    let _ = w.push((cs & 0xffff) | (u64::from(saved_mask) << 32));
    let _ = w.push(rflags);
    let _ = w.push(frame.rsp);
    let _ = w.push(frame.ss);
    w
}

/// Most words of any bounce frame (the failsafe callback's).
pub const MAX_BOUNCE_WORDS: usize = 11;

/// Where a bounce frame of `len` bytes goes below `stack`: 16-byte aligned, canonical,
/// wholly outside the hypervisor's range.
pub fn bounce_frame_address(stack: u64, len: u64) -> Result<u64, BadGuestStack> {
    let sp = (stack & !15).checked_sub(len).ok_or(BadGuestStack(stack))?;
    let last = sp + len - 1;
    if !is_canonical(sp)
        || !is_canonical(last)
        || in_hypervisor_range(sp)
        || in_hypervisor_range(last)
    {
        return Err(BadGuestStack(stack));
    }
    Ok(sp)
}

/// [`copy_from_guest`] for the small objects of the trap paths (an `iret_context`): one
/// translation and one copy when `buf` lies within one page, which is exactly what
/// `copy_from_guest` does for its single chunk; the general copy otherwise.
#[inline(always)]
fn guest_read<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    buf: &mut [u8],
) -> Result<(), Errno> {
    if in_one_page(va, buf.len()) {
        let maddr = translate(mem, frames, space, va, false)?;
        return mem.read(maddr, buf).map_err(|_| Errno::EFAULT);
    }
    if let Some((first, next)) = split_in_two_pages(va, buf.len()) {
        let (a, b) = buf.split_at_mut(first);
        let maddr = translate(mem, frames, space, va, false)?;
        mem.read(maddr, a).map_err(|_| Errno::EFAULT)?;
        let maddr = translate(mem, frames, space, next, false)?;
        return mem.read(maddr, b).map_err(|_| Errno::EFAULT);
    }
    copy_from_guest(mem, frames, space, va, buf)
}

/// The `iret_context` at `va`, as [`guest_read`] reads it. Within one page the copy
/// goes straight from the one translation into the context, which no other code sees
/// before it is whole, so the compiler keeps it in registers (no zeroing, no memcpy
/// call); across pages, the general two-page read into a context of its own.
#[inline(always)]
fn read_iret_context<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
) -> Result<IretContext, Errno> {
    if !in_one_page(va, size_of::<IretContext>()) {
        return read_iret_context_split(mem, frames, space, va);
    }
    let maddr = translate(mem, frames, space, va, false)?;
    let mut ctx = IretContext::new_zeroed();
    // All but the last word (`ss`, which iret never uses: the guest always gets the flat
    // ring-3 SS): a copy of at most eight words is inlined, nine would be a `memcpy`
    // call. The whole context lies in the page just translated, so what is readable (and
    // what crashes the guest) is the same as for a copy of all of it.
    let (head, _) = ctx.as_mut_bytes().split_at_mut(IRET_HEAD);
    mem.read(maddr, head).map_err(|_| Errno::EFAULT)?;
    Ok(ctx)
}

/// The bytes of an `iret_context` before its last word (`ss`).
const IRET_HEAD: usize = size_of::<IretContext>() - 8;
const _: () = assert!(core::mem::offset_of!(IretContext, ss) == IRET_HEAD);

/// [`read_iret_context`] of a context that crosses a page boundary.
#[inline(always)]
fn read_iret_context_split<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
) -> Result<IretContext, Errno> {
    let mut ctx = IretContext::new_zeroed();
    guest_read(mem, frames, space, va, ctx.as_mut_bytes())?;
    Ok(ctx)
}

/// [`copy_to_guest`] for a bounce frame, as [`guest_read`].
#[inline(always)]
fn guest_write<M: MachineMemory>(
    mem: &M,
    frames: &Frames,
    space: GuestSpace,
    va: u64,
    data: &[u8],
) -> Result<(), Errno> {
    if in_one_page(va, data.len()) {
        let maddr = translate(mem, frames, space, va, true)?;
        return mem.write(maddr, data).map_err(|_| Errno::EFAULT);
    }
    // As `copy_to_guest`: the first page is written before the second is translated.
    if let Some((first, next)) = split_in_two_pages(va, data.len()) {
        let (a, b) = data.split_at(first);
        let maddr = translate(mem, frames, space, va, true)?;
        mem.write(maddr, a).map_err(|_| Errno::EFAULT)?;
        let maddr = translate(mem, frames, space, next, true)?;
        return mem.write(maddr, b).map_err(|_| Errno::EFAULT);
    }
    copy_to_guest(mem, frames, space, va, data)
}

/// Writes `words` (lowest address first) below `stack` through the kernel's page
/// tables; returns the new stack pointer and whether the frame may lie on machine
/// page `shared_page` (known not to when it is within one page, the common case).
#[inline(always)]
fn write_bounce_frame<M: MachineMemory, const N: usize>(
    mem: &M,
    frames: &Frames,
    kernel: GuestSpace,
    stack: u64,
    words: [u64; N],
    shared_page: u64,
) -> Result<(u64, bool), BadGuestStack> {
    let sp = bounce_frame_address(stack, (N * 8) as u64)?;
    let words = words.map(u64::to_le);
    let bytes = words.as_bytes();
    let bad = |_| BadGuestStack(stack);
    if in_one_page(sp, bytes.len()) {
        // `guest_write`'s one-page case, keeping the machine address.
        let maddr = translate(mem, frames, kernel, sp, true).map_err(bad)?;
        mem.write(maddr, bytes).map_err(|_| BadGuestStack(stack))?;
        return Ok((sp, maddr >> 12 == shared_page));
    }
    guest_write(mem, frames, kernel, sp, bytes).map_err(bad)?;
    Ok((sp, true))
}

/// [`Hypervisor::set_guest_mode`] of `v`, the vCPU on the CPU, into the mode it is not
/// in (`user`), for callers that hold it already: one look-up of the vCPU per trap.
#[inline(always)]
fn switch_guest_mode<P: Platform>(platform: &mut P, cpu: &mut PerCpu, v: &mut Vcpu, user: bool) {
    debug_assert_ne!(v.user_mode, user, "already in that mode");
    // The running vCPU's other-mode GS base waits in the CPU's inactive slot
    // (`load_vcpu_state` puts it there, and every change of it goes there too), so one
    // swap makes it live, as Xen's toggle_guest_mode. FS is shared by both modes.
    let left = platform.swap_gs_bases();
    let (cr3, slot) = if user {
        (v.user_cr3, &mut v.traps.gs_base_kernel)
    } else {
        (v.cr3, &mut v.traps.gs_base_user)
    };
    *slot = left;
    v.user_mode = user;
    cpu.user_mode = user;
    cpu.cr3 = cr3;
}

/// For `[va, va + len)` that crosses exactly one page boundary (and does not wrap): the
/// bytes in the first page and the address of the second.
#[inline(always)]
fn split_in_two_pages(va: u64, len: usize) -> Option<(usize, u64)> {
    let first = 4096 - (va & 0xfff) as usize;
    if len <= first || len - first > 4096 {
        return None;
    }
    Some((first, va.checked_add(first as u64)?))
}

impl<M: MachineMemory, P: Platform> Hypervisor<M, P> {
    // ---- hypercalls ---------------------------------------------------------------------

    /// `set_trap_table(traps)`: entries up to the one with address 0; NULL clears all.
    pub(crate) fn do_set_trap_table(
        &mut self,
        idx: usize,
        traps: GuestHandle<TrapInfo>,
    ) -> HcResult {
        let traps = traps.addr();
        if traps == 0 {
            self.cur_mut(idx).traps.table = [TrapEntry::default(); NR_VECTORS];
            return Ok(0);
        }
        let size = core::mem::size_of::<TrapInfo>() as u64;
        for i in 0..MAX_TRAP_TABLE_ENTRIES as u64 {
            let at = traps.checked_add(i * size).ok_or(Errno::EFAULT)?;
            let ti: TrapInfo = self.read_guest(idx, at)?;
            if ti.address == 0 {
                return Ok(0);
            }
            if !is_canonical(ti.address) {
                return Err(Errno::EINVAL);
            }
            // As Xen: entries before a bad one stay installed.
            self.cur_mut(idx).traps.table[usize::from(ti.vector)] = TrapEntry {
                address: ti.address,
                cs: ti.cs | 3,
                flags: ti.flags,
            };
        }
        Err(Errno::E2BIG)
    }

    /// Registers one callback (`CALLBACKOP_register` semantics).
    fn register_callback(&mut self, idx: usize, reg: CallbackRegister) -> HcResult {
        if !is_canonical(reg.address) {
            return Err(Errno::EINVAL);
        }
        let traps = &mut self.cur_mut(idx).traps;
        let mask = reg.flags & CALLBACKF_MASK_EVENTS != 0;
        let slot = match u32::from(reg.kind) {
            // Event upcalls always mask events.
            CALLBACKTYPE_EVENT => &mut traps.event,
            CALLBACKTYPE_FAILSAFE => &mut traps.failsafe,
            CALLBACKTYPE_SYSCALL => &mut traps.syscall,
            CALLBACKTYPE_NMI => &mut traps.nmi,
            // No compat (32-bit) user mode here: accepted, never used.
            CALLBACKTYPE_SYSCALL32 | CALLBACKTYPE_SYSENTER => return Ok(0),
            // Xen 4.17 (register_guest_callback): an unknown type is -ENOSYS, after
            // the address check.
            _ => return Err(Errno::ENOSYS),
        };
        *slot = Callback {
            address: reg.address,
            mask_events: mask
                || matches!(u32::from(reg.kind), CALLBACKTYPE_EVENT | CALLBACKTYPE_NMI),
        };
        Ok(0)
    }

    /// `set_callbacks(event, failsafe, syscall)`, each registered with flags 0.
    pub(crate) fn do_set_callbacks(
        &mut self,
        idx: usize,
        event: u64,
        failsafe: u64,
        syscall: u64,
    ) -> HcResult {
        if ![event, failsafe, syscall].iter().all(|&a| is_canonical(a)) {
            return Err(Errno::EINVAL);
        }
        for (kind, address) in [
            (CALLBACKTYPE_EVENT, event),
            (CALLBACKTYPE_FAILSAFE, failsafe),
            (CALLBACKTYPE_SYSCALL, syscall),
        ] {
            self.register_callback(
                idx,
                CallbackRegister {
                    // The CALLBACKTYPE_* values all fit the struct's u16.
                    kind: kind as u16,
                    flags: 0,
                    pad: 0,
                    address,
                },
            )?;
        }
        Ok(0)
    }

    /// `callback_op(cmd, arg)`.
    pub(crate) fn do_callback_op(
        &mut self,
        idx: usize,
        cmd: u32,
        arg: GuestHandle<Untyped>,
    ) -> HcResult {
        let arg = arg.addr();
        match cmd {
            CALLBACKOP_REGISTER => {
                let reg: CallbackRegister = self.read_guest(idx, arg)?;
                self.register_callback(idx, reg)
            }
            CALLBACKOP_UNREGISTER => {
                let unreg: CallbackUnregister = self.read_guest(idx, arg)?;
                // As Xen: only the NMI callback can be unregistered.
                if u32::from(unreg.kind) == CALLBACKTYPE_NMI {
                    self.cur_mut(idx).traps.nmi = Callback::default();
                    Ok(0)
                } else {
                    Err(Errno::EINVAL)
                }
            }
            _ => Err(Errno::ENOSYS),
        }
    }

    /// `stack_switch(ss, sp)`: the kernel stack for entries from user mode.
    pub(crate) fn do_stack_switch(&mut self, idx: usize, ss: u64, sp: u64) -> HcResult {
        let traps = &mut self.cur_mut(idx).traps;
        traps.kernel_ss = (ss as u16) | 3;
        // Checked when used: a bad one crashes the domain at the next entry from user mode.
        traps.kernel_sp = sp;
        Ok(0)
    }

    /// `fpu_taskswitch(set)`: sets or clears the virtual CR0.TS.
    pub(crate) fn do_fpu_taskswitch(&mut self, idx: usize, set: i32) -> HcResult {
        let on = set != 0;
        self.cur_mut(idx).traps.fpu_ts = on;
        self.platform.set_fpu_trap(on);
        Ok(0)
    }

    /// `set_segment_base(which, base)`.
    pub(crate) fn do_set_segment_base(&mut self, idx: usize, which: u32, base: u64) -> HcResult {
        if which != SEGBASE_GS_USER_SEL && !is_canonical(base) {
            return Err(Errno::EINVAL);
        }
        // Only the base asked for is written (the CPU holds the others as they are).
        let traps = &mut self.cur_mut(idx).traps;
        match which {
            SEGBASE_FS => {
                traps.fs_base = base;
                self.platform.set_fs_base(base);
            }
            SEGBASE_GS_USER => {
                // Hypercalls come from kernel mode: the user GS base is the inactive one.
                traps.gs_base_user = base;
                self.platform.set_inactive_gs_base(base);
            }
            SEGBASE_GS_KERNEL => {
                // ... and the kernel GS base the live one.
                traps.gs_base_kernel = base;
                self.platform.set_gs_base(base);
            }
            // The selector is the low 16 bits (traps/segments.rs).
            SEGBASE_GS_USER_SEL => self.load_gs_user_selector(idx, base as u16),
            // Xen 4.17 answers an unknown `which` with -EINVAL.
            _ => return Err(Errno::EINVAL),
        }
        Ok(0)
    }

    /// `fpu_taskswitch` or `set_segment_base` (any `which` but the GS selector load)
    /// straight from the hypercall entry: the same handler as [`Hypervisor::dispatch`]
    /// runs, with the same result in RAX and the same trace line, then the vCPU resumes
    /// (through its event callback if an upcall is due). The caller checked what the
    /// generic `resume_if_returnable` checks (a canonical RIP, not a 32-bit code
    /// segment); neither handler changes RIP or CS. `traps/tests.rs` compares both paths.
    #[inline(never)]
    pub(crate) fn cpu_state_fast(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.cpu.current else {
            return self.no_current_domain();
        };
        let number = frame.rax;
        let r = if number == u64::from(xen_pv_abi::nr::FPU_TASKSWITCH) {
            self.do_fpu_taskswitch(idx, frame.rdi as i32)
        } else {
            self.do_set_segment_base(idx, frame.rdi as u32, frame.rsi)
        };
        frame.rax = crate::hypercall::to_rax(r);
        crate::dlog::hv_trace!(
            "hypercall d{=u16} nr={=u64} args={:#x} -> {=i64}",
            self.domains[idx].id.0,
            number,
            [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8],
            frame.rax as i64
        );
        // `enter_current` bounces only with an upcall pending.
        if !self.upcall_pending(idx) {
            return self.resume_current();
        }
        self.enter_current(frame)
    }

    /// `iret`: returns from a bounce frame with the `iret_context` at the guest's RSP,
    /// to guest kernel or (CS RPL 3) user mode. Never returns to the caller's stub.
    ///
    /// The context is validated into the frame in place (no copy of the frame): when it
    /// cannot be made safe the domain crashes, and a crashed domain's frame is never
    /// resumed (the scheduler loads the next vCPU's).
    pub(crate) fn do_iret(&mut self, idx: usize, frame: &mut GuestFrame) -> Outcome {
        match self.iret_in_place(idx, frame) {
            Ok(_) => Outcome::Resumed,
            Err(crash) => crash,
        }
    }

    /// [`Hypervisor::do_iret`]; `Ok` holds the event mask now in force, `Err` the crash.
    // Always inlined into its two callers: the large `Err` is never moved around.
    #[allow(clippy::result_large_err)]
    #[inline(always)]
    fn iret_in_place(&mut self, idx: usize, frame: &mut GuestFrame) -> Result<u8, Outcome> {
        // One look-up of the domain and vCPU for the whole iret.
        let vcpu = self.cur_vcpu(idx);
        let d = &mut self.domains[idx];
        let mask_at = d.shared_info.maddr() + UPCALL_MASK_OFF;
        let dom = d.id;
        let v = d.vcpu_mut(vcpu);
        let space = GuestSpace { dom, cr3: v.cr3 };
        let Ok(ctx) = read_iret_context(&self.mem, &self.frames, space, frame.rsp) else {
            let rsp = frame.rsp;
            return Err(Outcome::crash(format_args!(
                "iret: unreadable iret_context at rsp={rsp:#x}"
            )));
        };
        // Selectors are 16 bits: a bounce frame's CS word also carries the saved event
        // mask in bits 39:32, which guests hand back unchanged.
        let cs = ctx.cs & 0xffff;
        let to_user = cs & 3 == 3;
        if to_user && v.user_cr3 == 0 {
            return Err(Outcome::crash(format_args!(
                "iret to user mode without a user page table"
            )));
        }
        // CS gets RPL 3, SS the flat ring-3 selector and RFLAGS its guest bits (IOPL and
        // VM cleared, IF set) in `sanitize_for_iret`.
        frame.rax = ctx.rax;
        frame.rip = ctx.rip;
        frame.cs = cs;
        frame.rflags = ctx.rflags;
        frame.rsp = ctx.rsp;
        if ctx.flags & VGCF_IN_SYSCALL != 0 {
            // Xen leaves with sysret: RCX and R11 come back as RIP and RFLAGS.
            frame.rcx = ctx.rip;
            frame.r11 = (ctx.rflags & !(RFLAGS_IOPL | RFLAGS_VM)) | RFLAGS_IF;
        } else {
            frame.rcx = ctx.rcx;
            frame.r11 = ctx.r11;
        }
        if let Err(why) = sanitize_for_iret(frame) {
            let (rip, cs) = (ctx.rip, ctx.cs);
            return Err(Outcome::crash(format_args!(
                "iret: {why} (rip={rip:#x} cs={cs:#x})"
            )));
        }
        let mask = u8::from(ctx.rflags & RFLAGS_IF == 0);
        let _ = self.mem.write_u8(mask_at, mask);
        if to_user && !v.user_mode {
            switch_guest_mode(&mut self.platform, &mut self.cpu, v, true);
        }
        Ok(mask)
    }

    /// The `iret` hypercall from guest kernel mode, without the generic dispatch: the
    /// same [`Hypervisor::do_iret`], then straight back into the guest. What the generic
    /// path adds after a successful iret is `resume_if_returnable`, whose RIP checks
    /// `do_iret`'s sanitising already made, and the upcall check of `enter_current`,
    /// which only an unmasked vCPU needs. Anything else (a crash) takes the generic
    /// `apply_outcome`.
    #[inline(never)]
    pub(crate) fn iret_hypercall(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.cpu.current else {
            return self.no_current_domain();
        };
        match self.iret_in_place(idx, frame) {
            // Masked: no upcall can be due.
            Ok(1) => self.resume_current(),
            // Unmasked: an upcall is due only if one is pending (`deliver_event_upcall`
            // does nothing otherwise; an unreadable byte reads as not pending there).
            Ok(_) if !self.upcall_pending(idx) => self.resume_current(),
            Ok(_) => self.enter_current(frame),
            Err(outcome) => self.iret_failed(idx, frame, outcome),
        }
    }

    /// The generic end of a failed `iret` (the domain crashes).
    #[cold]
    #[inline(never)]
    fn iret_failed(&mut self, idx: usize, frame: &mut GuestFrame, outcome: Outcome) -> Resume {
        let r = self.apply_outcome(idx, u64::from(xen_pv_abi::nr::IRET), frame, outcome);
        self.resume_if_returnable(frame, r)
    }

    // ---- entries ------------------------------------------------------------------------

    /// A `syscall` while the vCPU is in guest user mode: a system call of the guest, to
    /// its syscall callback (no callback: #UD at the `syscall`, as Xen).
    #[inline(never)]
    pub(crate) fn guest_syscall(&mut self, frame: &mut GuestFrame) -> Resume {
        let Some(idx) = self.cpu.current else {
            return self.no_current_domain();
        };
        let cb = self.cur(idx).traps.syscall;
        if cb.address == 0 {
            frame.rip = frame.rip.wrapping_sub(2);
            return self.deliver_trap(idx, frame, VEC_UD, None);
        }
        // `bounce` inlined: a system call has no error code and no CR2.
        match self.bounce_masked(idx, frame, cb.address, None, cb.mask_events, None, None) {
            Ok(_) => {
                frame.rflags &= !RFLAGS_DF;
                self.resume_current()
            }
            Err(BadGuestStack(sp)) => self.crash_current(
                idx,
                frame,
                format_args!("crashed: syscall from user mode with a bad kernel stack ({sp:#x})"),
            ),
        }
    }

    /// An exception the running guest took: emulated, bounced to its handler, or (no
    /// handler) the end of the domain; then resumed as `resume_if_returnable` decides.
    ///
    /// The exceptions that are only bounced (every vector below 32 but #GP and #UD,
    /// which may be emulated) take [`Hypervisor::bounce_exception`] when the guest has a
    /// handler and its stack takes the frame; everything else, crashes included, the
    /// general [`Hypervisor::exception_generic`].
    #[inline]
    pub(crate) fn handle_exception(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        cr2: u64,
    ) -> Resume {
        let vector = frame.vector;
        if vector < 32
            && vector != u64::from(VEC_GP)
            && vector != u64::from(VEC_UD)
            && let Some(r) = self.bounce_exception(idx, frame, vector as u8, cr2)
        {
            return r;
        }
        let r = self.exception_generic(idx, frame, cr2);
        self.resume_if_returnable(frame, r)
    }

    /// Bounces exception `vector` (not #GP, not #UD) to the guest's handler with what
    /// [`Hypervisor::exception_generic`] does for it, or returns `None` having changed
    /// nothing the generic path does not redo identically: no handler (or a
    /// non-canonical one), #NM with the virtual TS clear, a stack that cannot take the
    /// frame (a partial copy across pages is rewritten the same way). The CR2 writes of
    /// a #PF come first, as there. The resume is `resume_if_returnable`'s decision with
    /// its checks already known: the handler is canonical and CS the 64-bit kernel
    /// selector, so only an upcall can be due, and none is with events masked.
    #[inline]
    fn bounce_exception(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        vector: u8,
        cr2: u64,
    ) -> Option<Resume> {
        let v = self.cur(idx);
        let entry = v.traps.table[usize::from(vector)];
        if entry.address == 0 || !is_canonical(entry.address) {
            return None;
        }
        let error = match vector {
            VEC_NM if !v.traps.fpu_ts => return None,
            // The U bit tells the *virtual* mode.
            VEC_PF if v.user_mode => Some(frame.error_code),
            VEC_PF => Some(frame.error_code & !PFEC_USER),
            _ => has_error_code(u64::from(vector)).then_some(frame.error_code),
        };
        let mask_events = entry.flags & TI_MASK_EVENTS != 0;
        let cr2 = (vector == VEC_PF).then_some(cr2);
        let (mask, on_shared_info) = self
            .bounce_masked(idx, frame, entry.address, error, mask_events, cr2, None)
            .ok()?;
        if vector == VEC_NM {
            // As Xen: delivering #NM clears the virtual TS.
            self.cur_mut(idx).traps.fpu_ts = false;
            self.platform.set_fpu_trap(false);
        }
        // Read again if the frame may have been written over shared_info.
        let mask = if on_shared_info {
            self.upcall_mask(idx)
        } else {
            mask
        };
        if mask_events || mask != 0 || !self.upcall_pending(idx) {
            return Some(self.resume_current());
        }
        Some(self.enter_current(frame))
    }

    /// [`Hypervisor::handle_exception`] for everything: emulation, bounces, crashes.
    #[inline(never)]
    pub(crate) fn exception_generic(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        cr2: u64,
    ) -> Resume {
        let Ok(vector) = u8::try_from(frame.vector) else {
            return self.crash_for_exception(idx, frame, cr2);
        };
        let error = has_error_code(frame.vector).then_some(frame.error_code);
        match vector {
            VEC_NM => {
                let traps = &mut self.cur_mut(idx).traps;
                if !traps.fpu_ts {
                    // Stale CR0.TS (not the guest's): clear it and retry.
                    self.platform.set_fpu_trap(false);
                    return self.resume_current();
                }
                // As Xen: delivering #NM clears the virtual TS.
                traps.fpu_ts = false;
                self.platform.set_fpu_trap(false);
                self.deliver_trap(idx, frame, VEC_NM, None)
            }
            VEC_PF => {
                self.cur_mut(idx).traps.cr2 = cr2;
                let base = self.domains[idx].shared_info.maddr();
                let _ = self.mem.write_u64(base + ARCH_CR2_OFF, cr2);
                if self.cur(idx).traps.table[usize::from(VEC_PF)].address == 0 {
                    // The crash line shows the hardware's error code.
                    return self.crash_for_exception(idx, frame, cr2);
                }
                let mut e = frame.error_code;
                // The U bit tells the *virtual* mode.
                if !self.cur(idx).user_mode {
                    e &= !PFEC_USER;
                }
                self.deliver_trap(idx, frame, VEC_PF, Some(e))
            }
            VEC_GP => self.emulate_gp(idx, frame),
            VEC_UD => self.emulate_ud(idx, frame),
            _ => self.deliver_trap(idx, frame, vector, error),
        }
    }

    /// Bounces `vector` to the guest's trap table entry; no handler: crash as before.
    fn deliver_trap(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        vector: u8,
        error: Option<u64>,
    ) -> Resume {
        let entry = self.cur(idx).traps.table[usize::from(vector)];
        if entry.address == 0 {
            frame.vector = u64::from(vector);
            frame.error_code = error.unwrap_or(0);
            let cr2 = self.cur(idx).traps.cr2;
            return self.crash_for_exception(idx, frame, cr2);
        }
        let mask = entry.flags & TI_MASK_EVENTS != 0;
        match self.bounce(idx, frame, entry.address, error, mask) {
            Ok(()) => self.resume_current(),
            Err(BadGuestStack(sp)) => {
                let rip = frame.rip;
                self.crash_current(
                    idx,
                    frame,
                    format_args!(
                        "crashed: {} in guest kernel vector={vector} error={:#x} rip={rip:#x}: cannot write the bounce frame below rsp={sp:#x}",
                        exception_mnemonic(u64::from(vector)),
                        error.unwrap_or(0),
                    ),
                )
            }
        }
    }

    /// #GP: `int n` (per the trap table's DPL), and in kernel mode the privileged
    /// instructions a PV kernel still executes; anything else goes to the guest's #GP.
    fn emulate_gp(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        let error = frame.error_code;
        let user = self.cur(idx).user_mode;
        let Some(d) = self.fetch_insn(idx, frame.rip) else {
            return self.deliver_trap(idx, frame, VEC_GP, Some(error));
        };
        let next_rip = frame.rip.wrapping_add(u64::from(d.len));
        match d.insn {
            // A software interrupt through a DPL0 gate: error code bit 1 (IDT). The
            // vector comes from the instruction: QEMU 7.2 reports n*16+2 from CPL3.
            Insn::Int { vector } if error & 3 == 2 => {
                let dpl = self.cur(idx).traps.table[usize::from(vector)].flags & TI_DPL_MASK;
                if dpl >= if user { 3 } else { 1 } {
                    frame.rip = next_rip;
                    self.deliver_trap(idx, frame, vector, None)
                } else {
                    self.deliver_trap(idx, frame, VEC_GP, Some(u64::from(vector) * 8 + 2))
                }
            }
            // Xen's int3 gate is DPL3: #BP whatever the trap table says.
            Insn::Int3 if error & 3 == 2 => {
                frame.rip = next_rip;
                self.deliver_trap(idx, frame, VEC_BP, None)
            }
            _ if user => self.deliver_trap(idx, frame, VEC_GP, Some(error)),
            Insn::Wrmsr => {
                let value = (frame.rdx << 32) | (frame.rax & 0xffff_ffff);
                if self.write_msr(idx, frame.rcx as u32, value).is_err() {
                    return self.deliver_trap(idx, frame, VEC_GP, Some(0));
                }
                frame.rip = next_rip;
                self.resume_current()
            }
            Insn::Rdmsr => {
                let (fs, gs) = self.platform.segment_bases();
                let value = match frame.rcx as u32 {
                    MSR_FS_BASE => fs,
                    MSR_GS_BASE => gs,
                    MSR_SHADOW_GS_BASE => self.cur(idx).traps.gs_base_user,
                    // Xen's hypercall-page MSR reads as zero.
                    emulate::XEN_HYPERCALL_PAGE_MSR => 0,
                    _ => return self.deliver_trap(idx, frame, VEC_GP, Some(0)),
                };
                frame.rax = value & 0xffff_ffff;
                frame.rdx = value >> 32;
                frame.rip = next_rip;
                self.resume_current()
            }
            Insn::MovFromCr { cr, gpr: reg } => {
                let v = self.cur(idx);
                let value = match cr {
                    0 => GUEST_CR0 | if v.traps.fpu_ts { CR0_TS } else { 0 },
                    2 => v.traps.cr2,
                    3 => v.cr3,
                    4 => GUEST_CR4,
                    _ => return self.deliver_trap(idx, frame, VEC_GP, Some(0)),
                };
                *gpr(frame, reg) = value;
                frame.rip = next_rip;
                self.resume_current()
            }
            Insn::Clts => {
                self.cur_mut(idx).traps.fpu_ts = false;
                self.platform.set_fpu_trap(false);
                frame.rip = next_rip;
                self.resume_current()
            }
            _ => self.deliver_trap(idx, frame, VEC_GP, Some(error)),
        }
    }

    /// wrmsr of the segment-base MSRs and Xen's hypercall-page MSR (kernel mode); `Err`
    /// means #GP.
    fn write_msr(&mut self, idx: usize, msr: u32, value: u64) -> Result<(), ()> {
        if msr == emulate::XEN_HYPERCALL_PAGE_MSR {
            return self.write_hypercall_page_msr(idx, value);
        }
        if !is_canonical(value) {
            return Err(());
        }
        let traps = &mut self.cur_mut(idx).traps;
        match msr {
            MSR_FS_BASE => {
                traps.fs_base = value;
                self.platform.set_fs_base(value);
            }
            MSR_GS_BASE => {
                traps.gs_base_kernel = value;
                self.platform.set_gs_base(value);
            }
            MSR_SHADOW_GS_BASE => {
                traps.gs_base_user = value;
                self.platform.set_inactive_gs_base(value);
            }
            _ => return Err(()),
        }
        Ok(())
    }

    /// wrmsr 0x40000000 (CPUID leaf 0x40000002 advertises it), as Xen 4.17's
    /// `guest_wrmsr_xen`: `value` is a frame (an MFN, for a PV guest) with page index 0
    /// in bits 11:0; the frame must be the domain's and able to take the writable type
    /// (not a page or descriptor table). It is filled as the builder fills the ELF note's
    /// hypercall page. #GP otherwise.
    fn write_hypercall_page_msr(&mut self, idx: usize, value: u64) -> Result<(), ()> {
        if value & 0xfff != 0 {
            return Err(());
        }
        let mfn = xen_pv_abi::Mfn(value >> 12);
        let page = crate::domain::builder::hypercall_page();
        let mut pt = self.pt(idx);
        pt.get_type(mfn, crate::mmu::PageType::Writable)
            .map_err(|_| ())?;
        let r = pt.mem.write(mfn.maddr(), &page);
        pt.put_type(mfn);
        r.map_err(|_| ())
    }

    /// #UD: Xen's forced-emulation `cpuid`; anything else (plain `ud2` included) is the
    /// guest's #UD.
    fn emulate_ud(&mut self, idx: usize, frame: &mut GuestFrame) -> Resume {
        match self.fetch_insn(idx, frame.rip) {
            Some(d) if d.insn == Insn::ForcedCpuid => {
                let platform = &self.platform;
                let r = emulate::cpuid(
                    frame.rax as u32,
                    frame.rcx as u32,
                    XEN_VERSION_NUMBER as u32,
                    |l, s| platform.cpuid(l, s),
                );
                frame.rax = u64::from(r[0]);
                frame.rbx = u64::from(r[1]);
                frame.rcx = u64::from(r[2]);
                frame.rdx = u64::from(r[3]);
                frame.rip = frame.rip.wrapping_add(u64::from(d.len));
                self.resume_current()
            }
            _ => self.deliver_trap(idx, frame, VEC_UD, None),
        }
    }

    /// Decodes the instruction at guest `rip` in the vCPU's current address space.
    fn fetch_insn(&self, idx: usize, rip: u64) -> Option<emulate::Decoded> {
        let mut buf = [0u8; MAX_INSN_LEN];
        let space = self.active_space(idx);
        // The bytes up to the end of rip's page first; the next page only if mapped.
        let in_page = (4096 - (rip & 0xfff)) as usize;
        let first = in_page.min(MAX_INSN_LEN);
        copy_from_guest(&self.mem, &self.frames, space, rip, &mut buf[..first]).ok()?;
        let mut len = first;
        if first < MAX_INSN_LEN
            && copy_from_guest(
                &self.mem,
                &self.frames,
                space,
                rip.wrapping_add(first as u64),
                &mut buf[first..],
            )
            .is_ok()
        {
            len = MAX_INSN_LEN;
        }
        emulate::decode(&buf[..len])
    }

    /// The address space the vCPU runs in now (user or kernel page tables).
    pub(crate) fn active_space(&self, idx: usize) -> GuestSpace {
        GuestSpace {
            dom: self.domains[idx].id,
            cr3: self.cur(idx).active_cr3(),
        }
    }

    // ---- bounce frames and mode switches -------------------------------------------------

    /// Enters the guest kernel at `handler` as Xen's `create_bounce_frame` does: switch
    /// to kernel mode (from user mode: onto the `stack_switch` stack), push the bounce
    /// frame (with `error` if given), mask events if asked, resume at `handler` with
    /// TF NT RF VM AC cleared. The running vCPU only.
    ///
    /// The frame's words are [`bounce_frame_words`]'s, built in place (no `heapless`
    /// vector, no byte loop).
    pub(crate) fn bounce(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        handler: u64,
        error: Option<u64>,
        mask_events: bool,
    ) -> Result<(), BadGuestStack> {
        self.bounce_masked(idx, frame, handler, error, mask_events, None, None)
            .map(drop)
    }

    /// [`Hypervisor::bounce`]; `Ok` holds the event mask now in force, and whether the
    /// frame may have been written over the domain's shared_info page (then the mask
    /// must be read again to be known). A #PF's `cr2` is stored first (vCPU and
    /// shared_info), as `exception_generic` does. One look-up of
    /// the domain and vCPU; the frame is written first, with a constant length (one
    /// checked translation when it does not cross a page), so a bad stack changes
    /// nothing but what a partial copy wrote; then the mode switch and the mask.
    /// `known_mask`: the event mask as the caller just read it (nothing written since),
    /// so it is not read again; `None` reads it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn bounce_masked(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        handler: u64,
        error: Option<u64>,
        mask_events: bool,
        cr2: Option<u64>,
        known_mask: Option<u8>,
    ) -> Result<(u8, bool), BadGuestStack> {
        let vcpu = self.cur_vcpu(idx);
        let d = &mut self.domains[idx];
        let shared = d.shared_info.maddr();
        let mask_at = shared + UPCALL_MASK_OFF;
        let id = d.id;
        let v = d.vcpu_mut(vcpu);
        if let Some(cr2) = cr2 {
            v.traps.cr2 = cr2;
            let _ = self.mem.write_u64(shared + ARCH_CR2_OFF, cr2);
        }
        let from_user = v.user_mode;
        let (stack, cs) = if from_user {
            (v.traps.kernel_sp, frame.cs | 3)
        } else {
            (frame.rsp, frame.cs & !3)
        };
        let kernel = GuestSpace {
            dom: id,
            cr3: v.cr3,
        };
        let saved_mask = match known_mask {
            Some(m) => m,
            None => self.mem.read_u8(mask_at).unwrap_or(1),
        };
        let rflags = if saved_mask != 0 {
            frame.rflags & !RFLAGS_IF
        } else {
            frame.rflags | RFLAGS_IF
        };
        let cs_word = (cs & 0xffff) | (u64::from(saved_mask) << 32);
        let (rcx, r11, rip, rsp, ss) = (frame.rcx, frame.r11, frame.rip, frame.rsp, frame.ss);
        let shared_page = mask_at >> 12;
        let (mem, frames) = (&self.mem, &self.frames);
        let (sp, on_shared_info) = match error {
            Some(e) => write_bounce_frame(
                mem,
                frames,
                kernel,
                stack,
                [rcx, r11, e, rip, cs_word, rflags, rsp, ss],
                shared_page,
            )?,
            None => write_bounce_frame(
                mem,
                frames,
                kernel,
                stack,
                [rcx, r11, rip, cs_word, rflags, rsp, ss],
                shared_page,
            )?,
        };
        if from_user {
            switch_guest_mode(&mut self.platform, &mut self.cpu, v, false);
        }
        let mask = if mask_events {
            let _ = self.mem.write_u8(mask_at, 1);
            1
        } else {
            saved_mask
        };
        frame.rip = handler;
        frame.cs = u64::from(FLAT_KERNEL_CS64);
        frame.ss = u64::from(FLAT_KERNEL_SS64);
        frame.rsp = sp;
        frame.rflags &= !(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM | RFLAGS_AC);
        Ok((mask, on_shared_info))
    }

    /// [`Hypervisor::bounce`] with the frame's words from `words(frame, cs, saved_mask)`
    /// (`cs` with its RPL adjusted, `saved_mask` the event mask before entry).
    pub(crate) fn bounce_with(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        handler: u64,
        mask_events: bool,
        words: impl FnOnce(&GuestFrame, u64, u8) -> heapless::Vec<u64, MAX_BOUNCE_WORDS>,
    ) -> Result<(), BadGuestStack> {
        let saved_mask = self.upcall_mask(idx);
        let (from_user, stack, cs) = self.bounce_origin(idx, frame);
        let words = words(frame, cs, saved_mask);
        let mut w = [0u64; MAX_BOUNCE_WORDS];
        w[..words.len()].copy_from_slice(&words);
        let n = words.len();
        self.push_bounce_frame(
            idx,
            frame,
            handler,
            mask_events,
            from_user,
            stack,
            &mut w[..n],
        )
    }

    /// Whether the running vCPU is in user mode, the stack a bounce frame goes below
    /// and the CS it records (RPL 0 in the saved CS means "interrupted the kernel").
    #[inline]
    fn bounce_origin(&self, idx: usize, frame: &GuestFrame) -> (bool, u64, u64) {
        let v = self.cur(idx);
        if v.user_mode {
            (true, v.traps.kernel_sp, frame.cs | 3)
        } else {
            (false, frame.rsp, frame.cs & !3)
        }
    }

    /// Writes `words` (lowest address first) below `stack` on the kernel's page tables
    /// after switching to kernel mode, and points the frame at `handler`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn push_bounce_frame(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        handler: u64,
        mask_events: bool,
        from_user: bool,
        stack: u64,
        words: &mut [u64],
    ) -> Result<(), BadGuestStack> {
        let len = words.len() * 8;
        let sp = bounce_frame_address(stack, len as u64)?;
        if from_user {
            self.set_guest_mode(idx, false);
        }
        let kernel = GuestSpace {
            dom: self.domains[idx].id,
            cr3: self.cur(idx).cr3,
        };
        for w in words.iter_mut() {
            *w = w.to_le();
        }
        guest_write(&self.mem, &self.frames, kernel, sp, words.as_bytes())
            .map_err(|_| BadGuestStack(stack))?;
        if mask_events {
            self.set_upcall_mask(idx, 1);
        }
        frame.rip = handler;
        frame.cs = u64::from(FLAT_KERNEL_CS64);
        frame.ss = u64::from(FLAT_KERNEL_SS64);
        frame.rsp = sp;
        frame.rflags &= !(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM | RFLAGS_AC);
        Ok(())
    }

    /// Delivers a pending event upcall to the running vCPU if it has an event callback,
    /// `evtchn_upcall_pending` is set and events are not masked. Returns whether it did.
    /// (For the event/timer code: call before resuming the guest.)
    pub fn deliver_event_upcall(&mut self, idx: usize, frame: &mut GuestFrame) -> bool {
        let cb = self.cur(idx).traps.event;
        if cb.address == 0 {
            return false;
        }
        // Pending and mask read together (adjacent bytes of one page: both readable or
        // neither). Unreadable counts as "no upcall", as an unreadable mask reads as
        // masked and an unreadable pending byte as not pending. The mask read here is
        // the one the bounce frame records: nothing writes it in between.
        let base = self.domains[idx].shared_info.maddr();
        let mut due = [0u8; 2];
        if self.mem.read(base + UPCALL_PENDING_OFF, &mut due).is_err() || due[0] == 0 || due[1] != 0
        {
            return false;
        }
        match self.bounce_masked(idx, frame, cb.address, None, true, None, Some(due[1])) {
            Ok(_) => true,
            Err(BadGuestStack(sp)) => {
                self.end_domain(
                    idx,
                    DomainState::Crashed,
                    format_args!("crashed: event upcall with a bad guest stack ({sp:#x})"),
                );
                false
            }
        }
    }

    /// Switches the running vCPU between guest kernel and user mode: page-table root and
    /// GS base.
    pub(crate) fn set_guest_mode(&mut self, idx: usize, user: bool) {
        let vcpu = self.cur_vcpu(idx);
        let v = self.domains[idx].vcpu_mut(vcpu);
        if v.user_mode != user {
            switch_guest_mode(&mut self.platform, &mut self.cpu, v, user);
        }
    }

    /// Puts vCPU `idx`'s CPU state on the CPU as it is scheduled: FPU/SSE registers and
    /// segment bases (saving the previous owner's first, with its data selectors), CR0.TS,
    /// mode and root. Its data selectors are loaded later, once its GDT and LDT are on
    /// the CPU ([`Hypervisor::load_segments`]).
    pub(crate) fn load_vcpu_state(&mut self, idx: usize) {
        let me = (idx, self.cur_vcpu(idx));
        if self.cpu.fpu_owner != Some(me) {
            if let Some((old, old_v)) = self.cpu.fpu_owner
                && old < self.domains.len()
                && self.domains[old].is_runnable()
                && let Some(v) = self.domains[old].vcpu_get_mut(old_v)
            {
                let (fs, gs) = self.platform.segment_bases();
                let selectors = self.platform.data_selectors();
                self.platform.fpu_save(&mut v.traps.fpu);
                v.traps.selectors = selectors;
                v.traps.fs_base = fs;
                if v.user_mode {
                    v.traps.gs_base_user = gs;
                } else {
                    v.traps.gs_base_kernel = gs;
                }
            }
            let v = self.domains[idx].vcpu(me.1);
            self.platform.fpu_restore(&v.traps.fpu);
            let (gs, inactive) = if v.user_mode {
                (v.traps.gs_base_user, v.traps.gs_base_kernel)
            } else {
                (v.traps.gs_base_kernel, v.traps.gs_base_user)
            };
            self.platform.set_segment_bases(v.traps.fs_base, gs);
            // Where `set_guest_mode` finds the other mode's GS base.
            self.platform.set_inactive_gs_base(inactive);
            self.cpu.fpu_owner = Some(me);
        }
        let v = self.cur(idx);
        let (ts, user, cr3) = (v.traps.fpu_ts, v.user_mode, v.active_cr3());
        self.platform.set_fpu_trap(ts);
        self.set_current_mode(user, cr3);
    }

    /// vCPU 0's `evtchn_upcall_mask` (the virtual IF, inverted).
    pub(crate) fn upcall_mask(&self, idx: usize) -> u8 {
        // shared_info is the domain's own frame; unreadable reads as masked.
        self.mem
            .read_u8(self.domains[idx].shared_info.maddr() + UPCALL_MASK_OFF)
            .unwrap_or(1)
    }

    /// vCPU 0's `evtchn_upcall_pending`.
    pub(crate) fn upcall_pending(&self, idx: usize) -> bool {
        self.mem
            .read_u8(self.domains[idx].shared_info.maddr() + UPCALL_PENDING_OFF)
            .is_ok_and(|b| b != 0)
    }

    /// Sets vCPU 0's `evtchn_upcall_mask`.
    pub(crate) fn set_upcall_mask(&self, idx: usize, mask: u8) {
        let _ = self.mem.write_u8(
            self.domains[idx].shared_info.maddr() + UPCALL_MASK_OFF,
            mask,
        );
    }

    /// Ends the running domain with `what` and runs the next one.
    fn crash_current(
        &mut self,
        idx: usize,
        frame: &mut GuestFrame,
        what: core::fmt::Arguments<'_>,
    ) -> Resume {
        self.end_domain(idx, DomainState::Crashed, what);
        self.schedule(frame)
    }
}
