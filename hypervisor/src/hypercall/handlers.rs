//! The hypervisor's implementation of the generated [`Hypercalls`] trait: one short
//! method per implemented hypercall, calling the `do_<name>` handler in that hypercall's
//! own file. To add a hypercall see `hypercall-gen/hypercalls.toml` and
//! `docs/hypercalls.md`; the compiler lists the methods still missing here.

use super::generated::Hypercalls;
use super::handle::{Call, GuestArray, GuestHandle, Outcome, Untyped};
use crate::hv::Hypervisor;
use crate::platform::{MachineMemory, Platform};
use xen_pv_abi::mmu::{MmuUpdate, MmuextOp, MulticallEntry};

impl<M: MachineMemory, P: Platform> Hypercalls for Hypervisor<M, P> {
    // ---- traps, callbacks, user mode: traps/mod.rs ----

    fn set_trap_table(
        &mut self,
        call: &mut Call<'_>,
        traps: GuestHandle<xen_pv_abi::traps::TrapInfo>,
    ) -> Outcome {
        self.do_set_trap_table(call.idx, traps).into()
    }

    fn stack_switch(&mut self, call: &mut Call<'_>, ss: u64, rsp: u64) -> Outcome {
        self.do_stack_switch(call.idx, ss, rsp).into()
    }

    fn set_callbacks(
        &mut self,
        call: &mut Call<'_>,
        event_rip: u64,
        failsafe_rip: u64,
        syscall_rip: u64,
    ) -> Outcome {
        self.do_set_callbacks(call.idx, event_rip, failsafe_rip, syscall_rip)
            .into()
    }

    fn set_gdt(&mut self, call: &mut Call<'_>, frame_list: GuestArray<u64>) -> Outcome {
        self.do_set_gdt(call.idx, frame_list).into()
    }

    fn update_descriptor(&mut self, call: &mut Call<'_>, maddr: u64, desc: u64) -> Outcome {
        self.do_update_descriptor(call.idx, maddr, desc).into()
    }

    fn fpu_taskswitch(&mut self, call: &mut Call<'_>, set: i32) -> Outcome {
        self.do_fpu_taskswitch(call.idx, set).into()
    }

    fn iret(&mut self, call: &mut Call<'_>) -> Outcome {
        self.do_iret(call.idx, call.frame)
    }

    fn set_segment_base(&mut self, call: &mut Call<'_>, which: u32, base: u64) -> Outcome {
        self.do_set_segment_base(call.idx, which, base).into()
    }

    fn callback_op(&mut self, call: &mut Call<'_>, cmd: u32, arg: GuestHandle<Untyped>) -> Outcome {
        self.do_callback_op(call.idx, cmd, arg).into()
    }

    fn sched_op_compat(&mut self, _call: &mut Call<'_>, cmd: u32, arg: u64) -> Outcome {
        self.do_sched_op_compat(cmd, arg)
    }

    fn xen_version(&mut self, call: &mut Call<'_>, cmd: u32, arg: GuestHandle<Untyped>) -> Outcome {
        self.do_xen_version(call.idx, cmd, arg).into()
    }

    fn console_io(&mut self, call: &mut Call<'_>, cmd: u32, buf: GuestArray<u8>) -> Outcome {
        self.do_console_io(call.idx, cmd, buf)
    }

    fn grant_table_op(
        &mut self,
        call: &mut Call<'_>,
        cmd: u32,
        uop: GuestArray<Untyped>,
    ) -> Outcome {
        self.grant_table_op(call.idx, cmd, uop)
    }

    fn sched_op(&mut self, call: &mut Call<'_>, cmd: u32, arg: GuestHandle<Untyped>) -> Outcome {
        self.do_sched_op(call, cmd, arg)
    }

    fn event_channel_op(
        &mut self,
        call: &mut Call<'_>,
        cmd: u32,
        arg: GuestHandle<Untyped>,
    ) -> Outcome {
        self.do_event_channel_op(call, cmd, arg)
    }

    fn set_timer_op(&mut self, call: &mut Call<'_>, timeout: u64) -> Outcome {
        self.do_set_timer_op((call.dom, call.vcpu), timeout).into()
    }

    fn event_channel_op_compat(
        &mut self,
        call: &mut Call<'_>,
        op: GuestHandle<Untyped>,
    ) -> Outcome {
        self.do_event_channel_op_compat(call, op)
    }

    fn vcpu_op(
        &mut self,
        call: &mut Call<'_>,
        cmd: u32,
        vcpuid: u32,
        arg: GuestHandle<Untyped>,
    ) -> Outcome {
        self.do_vcpu_op(call, cmd, vcpuid, arg).into()
    }

    fn mmu_update(
        &mut self,
        call: &mut Call<'_>,
        reqs: GuestArray<MmuUpdate>,
        pdone: GuestHandle<u32>,
        foreigndom: u32,
    ) -> Outcome {
        self.mmu_update(call.idx, reqs, pdone, foreigndom)
    }

    fn mmuext_op(
        &mut self,
        call: &mut Call<'_>,
        ops: GuestArray<MmuextOp>,
        pdone: GuestHandle<u32>,
        foreigndom: u32,
    ) -> Outcome {
        self.mmuext_op(call.idx, ops, pdone, foreigndom)
    }

    fn multicall(&mut self, call: &mut Call<'_>, calls: GuestArray<MulticallEntry>) -> Outcome {
        self.multicall(call, calls)
    }

    fn update_va_mapping(
        &mut self,
        call: &mut Call<'_>,
        va: u64,
        new_pte: u64,
        flags: u64,
    ) -> Outcome {
        self.update_va_mapping(call.idx, va, new_pte, flags).into()
    }

    fn update_va_mapping_otherdomain(
        &mut self,
        call: &mut Call<'_>,
        va: u64,
        new_pte: u64,
        flags: u64,
        domid: u16,
    ) -> Outcome {
        self.update_va_mapping_otherdomain(call.idx, va, new_pte, flags, domid)
            .into()
    }

    fn vm_assist(&mut self, call: &mut Call<'_>, cmd: u32, r#type: u32) -> Outcome {
        self.vm_assist(call.idx, cmd, r#type).into()
    }

    fn memory_op(&mut self, call: &mut Call<'_>, cmd: u64, arg: GuestHandle<Untyped>) -> Outcome {
        self.memory_op(call.idx, cmd, arg).into()
    }

    // ---- toolstack control: control/mod.rs, control/hvm.rs ----

    fn hvm_op(&mut self, call: &mut Call<'_>, op: u64, arg: GuestHandle<Untyped>) -> Outcome {
        self.do_hvm_op(call.idx, op, arg).into()
    }

    fn sysctl(
        &mut self,
        call: &mut Call<'_>,
        op: GuestHandle<xen_pv_abi::domctl::Sysctl>,
    ) -> Outcome {
        self.do_sysctl(call.idx, op).into()
    }

    fn domctl(
        &mut self,
        call: &mut Call<'_>,
        op: GuestHandle<xen_pv_abi::domctl::Domctl>,
    ) -> Outcome {
        self.do_domctl(call.idx, op).into()
    }
}
