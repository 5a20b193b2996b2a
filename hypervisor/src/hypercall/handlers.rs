//! The hypervisor's implementation of the generated [`Hypercalls`] trait: one short
//! method per implemented hypercall, calling the `do_<name>` handler in that hypercall's
//! own file. To add a hypercall see `hypercall-gen/hypercalls.toml` and
//! `docs/hypercalls.md`; the compiler lists the methods still missing here.

use super::generated::Hypercalls;
use super::handle::{Call, Flow, GuestArray, GuestHandle, Untyped};
use crate::hv::Hypervisor;
use crate::platform::{MachineMemory, Platform};
use guest_abi::mmu::{MmuUpdate, MmuextOp, MulticallEntry};

impl<M: MachineMemory, P: Platform> Hypercalls for Hypervisor<M, P> {
    // ---- traps, callbacks, user mode: traps/mod.rs ----

    fn set_trap_table(
        &mut self,
        call: &mut Call<'_>,
        traps: GuestHandle<guest_abi::traps::TrapInfo>,
    ) -> Flow {
        self.do_set_trap_table(call.idx, traps).into()
    }

    fn stack_switch(&mut self, call: &mut Call<'_>, ss: u64, rsp: u64) -> Flow {
        self.do_stack_switch(call.idx, ss, rsp).into()
    }

    fn set_callbacks(
        &mut self,
        call: &mut Call<'_>,
        event_rip: u64,
        failsafe_rip: u64,
        syscall_rip: u64,
    ) -> Flow {
        self.do_set_callbacks(call.idx, event_rip, failsafe_rip, syscall_rip)
            .into()
    }

    fn set_gdt(&mut self, call: &mut Call<'_>, frame_list: GuestArray<u64>) -> Flow {
        self.do_set_gdt(call.idx, frame_list).into()
    }

    fn update_descriptor(&mut self, call: &mut Call<'_>, maddr: u64, desc: u64) -> Flow {
        self.do_update_descriptor(call.idx, maddr, desc).into()
    }

    fn fpu_taskswitch(&mut self, call: &mut Call<'_>, set: i32) -> Flow {
        self.do_fpu_taskswitch(call.idx, set).into()
    }

    fn iret(&mut self, call: &mut Call<'_>) -> Flow {
        Flow::Resume(self.do_iret(call.idx, call.frame))
    }

    fn set_segment_base(&mut self, call: &mut Call<'_>, which: u32, base: u64) -> Flow {
        self.do_set_segment_base(call.idx, which, base).into()
    }

    fn callback_op(&mut self, call: &mut Call<'_>, cmd: u32, arg: GuestHandle<Untyped>) -> Flow {
        self.do_callback_op(call.idx, cmd, arg).into()
    }

    fn sched_op_compat(&mut self, call: &mut Call<'_>, cmd: u32, arg: u64) -> Flow {
        self.do_sched_op_compat(call, cmd, arg)
    }

    fn xen_version(&mut self, call: &mut Call<'_>, cmd: u32, arg: GuestHandle<Untyped>) -> Flow {
        self.do_xen_version(call.idx, cmd, arg).into()
    }

    fn console_io(&mut self, call: &mut Call<'_>, cmd: u32, buf: GuestArray<u8>) -> Flow {
        self.do_console_io(call.idx, cmd, buf).into()
    }

    fn grant_table_op(
        &mut self,
        call: &mut Call<'_>,
        _cmd: u32,
        _uop: GuestArray<Untyped>,
    ) -> Flow {
        // Still decodes its arguments from the frame (same registers).
        Flow::Resume(self.grant_table_op(call.idx, call.frame))
    }

    fn sched_op(&mut self, call: &mut Call<'_>, cmd: u32, arg: GuestHandle<Untyped>) -> Flow {
        self.do_sched_op(call, cmd, arg)
    }

    fn event_channel_op(
        &mut self,
        call: &mut Call<'_>,
        cmd: u32,
        arg: GuestHandle<Untyped>,
    ) -> Flow {
        self.do_event_channel_op(call, cmd, arg)
    }

    fn mmu_update(
        &mut self,
        call: &mut Call<'_>,
        _reqs: GuestArray<MmuUpdate>,
        _pdone: GuestHandle<u32>,
        _foreigndom: u32,
    ) -> Flow {
        // Decodes its arguments from the frame itself (it may rewrite them to continue).
        Flow::Resume(self.mmu_update(call.idx, call.frame))
    }

    fn mmuext_op(
        &mut self,
        call: &mut Call<'_>,
        _ops: GuestArray<MmuextOp>,
        _pdone: GuestHandle<u32>,
        _foreigndom: u32,
    ) -> Flow {
        Flow::Resume(self.mmuext_op(call.idx, call.frame))
    }

    fn multicall(&mut self, call: &mut Call<'_>, _calls: GuestArray<MulticallEntry>) -> Flow {
        Flow::Resume(self.multicall(call.idx, call.frame))
    }

    fn update_va_mapping(
        &mut self,
        call: &mut Call<'_>,
        va: u64,
        new_pte: u64,
        flags: u64,
    ) -> Flow {
        self.update_va_mapping(call.idx, va, new_pte, flags).into()
    }

    fn vm_assist(&mut self, _call: &mut Call<'_>, cmd: u32, r#type: u32) -> Flow {
        self.vm_assist(cmd, r#type).into()
    }

    fn memory_op(&mut self, call: &mut Call<'_>, cmd: u64, arg: GuestHandle<Untyped>) -> Flow {
        self.memory_op(call.idx, cmd, arg.addr()).into()
    }
}
