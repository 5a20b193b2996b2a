//! Event channels: the loopback upcall, the two-domain ping-pong and the idle case, with
//! the shared_info mapping and the upcall handler they share.

use core::arch::naked_asm;
use core::ptr::{addr_of_mut, null_mut};
use core::sync::atomic::{AtomicU64, Ordering};

use pv_guest::{StartInfo, io_println};
use xen_pv_abi::event_channel::{
    EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_BIND_INTERDOMAIN, EVTCHNOP_BIND_VIRQ, EVTCHNOP_SEND,
    EvtchnSend,
};
use xen_pv_abi::generated::call;
use xen_pv_abi::generated::vcpu_op::VCPUOP_STOP_PERIODIC_TIMER;
use xen_pv_abi::hypercall::{UVMF_INVLPG, update_va_mapping};
use xen_pv_abi::sched::{SCHEDOP_BLOCK, SCHEDOP_YIELD};
use xen_pv_abi::shared_info::SharedInfo;
use xen_pv_abi::traps::{CALLBACKOP_REGISTER, CALLBACKTYPE_EVENT, CallbackRegister};
use xen_pv_abi::{DomId, Errno, EvtchnPort, nr};

use crate::sched::sched_op;
use crate::{Ctx, Failure, Figures, timed, timed_empty};

/// Rounds of bind_interdomain attempts (ports 1..=BIND_PORTS each) before giving up.
const BIND_ROUNDS: u64 = 1000;
const BIND_PORTS: u32 = 8;
/// Yields role 1 waits for role 2's "ready" event.
const READY_YIELDS: u64 = 100_000;
/// SCHEDOP_block calls one wait may make before it counts as "never woken".
const MAX_BLOCKS: u64 = 100_000;
/// `VIRQ_TIMER`.
const VIRQ_TIMER: u32 = 0;

// ---- shared_info and the event upcall -------------------------------------------

/// A page of our image whose mapping is replaced by the shared_info frame.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Never accessed through a reference: after `update_va_mapping` it shows the
/// hypervisor's shared_info page, accessed with volatile or atomic operations only.
static mut SHARED_INFO_PAGE: Page = Page([0; 4096]);
/// Address of the mapped shared_info, 0 before; read by the upcall handler.
static SHARED_VA: AtomicU64 = AtomicU64::new(0);
/// Events (pending, unmasked port bits) the upcall handler has consumed.
static EVENTS: AtomicU64 = AtomicU64::new(0);

/// Maps shared_info, masks event delivery and registers the upcall handler (once).
fn events_setup(si: &StartInfo) -> Result<*mut SharedInfo, Failure> {
    let va = &raw mut SHARED_INFO_PAGE;
    if SHARED_VA.load(Ordering::Relaxed) == 0 {
        // Present, writable, user (a PV kernel runs at CPL3).
        let pte = (si.shared_info & !0xfff) | 0x7;
        // SAFETY: the page belongs to our image and no reference to it exists.
        unsafe { update_va_mapping(va as u64, pte, UVMF_INVLPG)? };
        SHARED_VA.store(va as u64, Ordering::Relaxed);
    }
    let shared = va.cast::<SharedInfo>();
    set_upcall_mask(shared, 1);
    let cb = CallbackRegister {
        kind: CALLBACKTYPE_EVENT as u16,
        flags: 0,
        pad: 0,
        address: upcall_entry as *const () as u64,
    };
    // SAFETY: registers our upcall entry, which preserves every register.
    let r = unsafe { call::callback_op(CALLBACKOP_REGISTER, (&raw const cb).cast()) };
    Errno::check(r)?;
    Ok(shared)
}

fn set_upcall_mask(shared: *mut SharedInfo, mask: u8) {
    // SAFETY: `shared` maps the shared_info page; a byte store to our own vCPU's mask.
    unsafe { addr_of_mut!((*shared).vcpu_info[0].evtchn_upcall_mask).write_volatile(mask) };
}

/// With delivery masked: forgets every pending event (e.g. the one bind_interdomain
/// raises on the new port) and unmasks `ports` by hand (§6.3 of the ABI notes).
fn clear_and_unmask(shared: *mut SharedInfo, ports: &[EvtchnPort]) {
    // SAFETY: `shared` maps the shared_info page; every access is a volatile store
    // to a word the hypervisor also only accesses atomically.
    unsafe {
        addr_of_mut!((*shared).vcpu_info[0].evtchn_upcall_pending).write_volatile(0);
        addr_of_mut!((*shared).vcpu_info[0].evtchn_pending_sel).write_volatile(0);
        for w in 0..64 {
            addr_of_mut!((*shared).evtchn_pending[w]).write_volatile(0);
        }
        for p in ports {
            let (w, bit) = ((p.0 / 64) as usize % 64, p.0 % 64);
            let mask = addr_of_mut!((*shared).evtchn_mask[w]);
            mask.write_volatile(mask.read_volatile() & !(1u64 << bit));
        }
    }
}

/// Counts from zero and lets upcalls in.
fn events_on(shared: *mut SharedInfo) {
    EVENTS.store(0, Ordering::SeqCst);
    set_upcall_mask(shared, 0);
}

/// The event callback: the hypervisor left `rcx r11 rip cs rflags rsp ss` on the
/// stack with delivery masked. Clears `upcall_pending`, takes the selector, and for
/// every selected word clears the pending bits that are not masked, counting them in
/// `EVENTS`; then returns with `HYPERVISOR_iret`, which restores every register and
/// the event mask (from the saved RFLAGS.IF).
#[unsafe(naked)]
unsafe extern "C" fn upcall_entry() {
    naked_asm!(
        "pop %rcx",
        "pop %r11",
        "push %rax",
        "push %rcx",
        "push %rdx",
        "push %rsi",
        "push %rdi",
        "mov {shared}(%rip), %rax",
        "movb $0, (%rax)",
        "xor %edx, %edx",
        "xchg %rdx, 8(%rax)",
        "2:",
        "bsf %rdx, %rcx",
        "jz 3f",
        "btr %rcx, %rdx",
        // rdi = pending & ~mask of word rcx; count and clear exactly those bits.
        "mov 2560(%rax,%rcx,8), %rdi",
        "not %rdi",
        "and 2048(%rax,%rcx,8), %rdi",
        "popcnt %rdi, %rsi",
        "add %rsi, {events}(%rip)",
        "not %rdi",
        "lock and %rdi, 2048(%rax,%rcx,8)",
        "jmp 2b",
        "3:",
        "pop %rdi",
        "pop %rsi",
        "pop %rdx",
        "pop %rcx",
        "pop %rax",
        // iret_context below rip..ss: flags 0 (full iret), rcx, r11, rax.
        "push $0",
        "push %rcx",
        "push %r11",
        "push %rax",
        "mov ${iret}, %eax",
        "syscall",
        shared = sym SHARED_VA,
        events = sym EVENTS,
        iret = const nr::IRET,
        options(att_syntax)
    )
}

// ---- raw event-channel and scheduler calls ---------------------------------------

/// `struct evtchn_alloc_unbound`.
#[repr(C)]
struct AllocUnbound {
    dom: u16,
    remote_dom: u16,
    port: u32,
}

/// `struct evtchn_bind_interdomain`.
#[repr(C)]
struct BindInterdomain {
    remote_dom: u16,
    pad: u16,
    remote_port: u32,
    local_port: u32,
}

/// `struct evtchn_bind_virq`.
#[repr(C)]
struct BindVirq {
    virq: u32,
    vcpu: u32,
    port: u32,
}

fn evtchn_op<T>(cmd: u32, arg: &mut T) -> Result<(), Errno> {
    // SAFETY: `arg` is the live, correctly laid out struct of command `cmd`.
    let r = unsafe { call::event_channel_op(cmd, (arg as *mut T).cast()) };
    Errno::check(r).map(drop)
}

fn alloc_unbound(remote: DomId) -> Result<EvtchnPort, Errno> {
    let mut a = AllocUnbound {
        dom: DomId::SELF.0,
        remote_dom: remote.0,
        port: 0,
    };
    evtchn_op(EVTCHNOP_ALLOC_UNBOUND, &mut a)?;
    Ok(EvtchnPort(a.port))
}

fn bind_interdomain(remote: DomId, port: EvtchnPort) -> Result<EvtchnPort, Errno> {
    let mut b = BindInterdomain {
        remote_dom: remote.0,
        pad: 0,
        remote_port: port.0,
        local_port: 0,
    };
    evtchn_op(EVTCHNOP_BIND_INTERDOMAIN, &mut b)?;
    Ok(EvtchnPort(b.local_port))
}

fn send(port: EvtchnPort) -> Result<(), Errno> {
    let mut s = EvtchnSend { port };
    evtchn_op(EVTCHNOP_SEND, &mut s)
}

/// Blocks until `EVENTS` reaches `target` (the upcall counts them).
fn wait_events(target: u64) -> Result<(), Failure> {
    let mut blocks = 0;
    while EVENTS.load(Ordering::SeqCst) < target {
        if blocks == MAX_BLOCKS {
            return Err(Failure::NoWakeup);
        }
        sched_op(SCHEDOP_BLOCK)?;
        blocks += 1;
    }
    Ok(())
}

pub fn evtchn_loopback_upcall(ctx: &Ctx) -> Figures {
    let (si, n) = (ctx.si, ctx.n);
    let shared = events_setup(si)?;
    let a = alloc_unbound(DomId::SELF)?;
    let b = bind_interdomain(DomId::SELF, a)?;
    clear_and_unmask(shared, &[a, b]);
    events_on(shared);
    let arg = EvtchnSend { port: a };
    let p = &raw const arg as u64;
    // SAFETY: EVTCHNOP_send with a pointer to the live `arg`; the upcall preserves every
    // register.
    let total = unsafe {
        timed_loop!(
            n,
            p,
            ["mov $32, %eax", "mov $4, %edi", "mov %r14, %rsi"],
            "syscall"
        )
    };
    let got = EVENTS.load(Ordering::SeqCst);
    set_upcall_mask(shared, 1);
    // SAFETY: the same loop without the syscall: register moves only.
    let baseline =
        unsafe { timed_loop!(n, p, ["mov $32, %eax", "mov $4, %edi", "mov %r14, %rsi"]) };
    if got != n {
        // A failed send leaves its errno in rax, which the loop discards: try once.
        send(a)?;
        return Err(Failure::Lost { got, want: n });
    }
    Ok((n, total, baseline))
}

pub fn evtchn_ping_pong_2dom(ctx: &Ctx) -> Figures {
    let (si, n, role, peer) = (ctx.si, ctx.n, ctx.role, ctx.peer);
    let shared = events_setup(si)?;
    if role == 1 {
        let port = alloc_unbound(peer)?;
        clear_and_unmask(shared, &[port]);
        events_on(shared);
        // Role 2 sends once when it has bound its end.
        let mut yields = 0;
        while EVENTS.load(Ordering::SeqCst) == 0 {
            if yields == READY_YIELDS {
                return Err(Failure::PeerNotReady);
            }
            sched_op(SCHEDOP_YIELD)?;
            yields += 1;
        }
        let mut seen = EVENTS.load(Ordering::SeqCst);
        let total = timed(n, || {
            send(port)?;
            seen += 1;
            wait_events(seen)
        })?;
        return Ok((n, total, timed_empty(n)));
    }
    let port = bind_peer(peer)?;
    clear_and_unmask(shared, &[port]);
    events_on(shared);
    send(port)?;
    for i in 1..=n {
        wait_events(i)?;
        send(port)?;
    }
    Ok((0, 0, 0))
}

/// Role 2: binds to role 1's unbound port, trying ports 1..=BIND_PORTS and yielding
/// between rounds until role 1 has allocated it.
fn bind_peer(peer: DomId) -> Result<EvtchnPort, Failure> {
    let mut last = Errno::EINVAL;
    for _ in 0..BIND_ROUNDS {
        for p in 1..=BIND_PORTS {
            match bind_interdomain(peer, EvtchnPort(p)) {
                Ok(local) => return Ok(local),
                Err(Errno::ENOSYS) => return Err(Errno::ENOSYS.into()),
                Err(e) => last = e,
            }
        }
        sched_op(SCHEDOP_YIELD)?;
    }
    Err(last.into())
}

/// Xen system time of vCPU 0 now (ns): xen-pv-abi's seqlocked `vcpu_time_info` read.
fn now_ns(shared: *mut SharedInfo) -> u64 {
    // SAFETY: `shared` is the page-aligned shared_info mapping, kept for the guest's
    // life; this guest reads it only with aligned loads (volatile or atomic), which
    // is what the hypervisor's word-sized writes expect.
    let page = unsafe { xen_pv_abi::events::AtomicPage::from_ptr(shared.cast()) };
    xen_pv_abi::time::system_time_ns(page, xen_pv_abi::VcpuId(0)).unwrap_or(0)
}

pub fn idle(si: &StartInfo, seconds: u64) {
    let name = "idle_host_cpu_percent";
    match idle_for(si, seconds) {
        Ok((idle_ns, wakeups)) => {
            io_println!("BENCH name={name} idle_ns={idle_ns} wakeups={wakeups}")
        }
        Err(e) => io_println!("BENCH name={name} unsupported={e}"),
    }
}

/// Blocks until `seconds` of system time have passed; returns the time and the
/// number of wake-ups.
fn idle_for(si: &StartInfo, seconds: u64) -> Result<(u64, u64), Failure> {
    let shared = events_setup(si)?;
    let mut bind = BindVirq {
        virq: VIRQ_TIMER,
        vcpu: 0,
        port: 0,
    };
    evtchn_op(EVTCHNOP_BIND_VIRQ, &mut bind)?;
    // PV vCPUs start with a 10 ms periodic tick on Xen; it would wake us. Where the
    // call does not exist there is no such tick either.
    // SAFETY: stop_periodic_timer takes no argument.
    let _ = unsafe { call::vcpu_op(VCPUOP_STOP_PERIODIC_TIMER, 0, null_mut()) };
    clear_and_unmask(shared, &[EvtchnPort(bind.port)]);
    events_on(shared);
    let start = now_ns(shared);
    let deadline = start.saturating_add(seconds.saturating_mul(1_000_000_000));
    io_println!("BENCH_IDLE start");
    // SAFETY: set_timer_op takes a time, no pointer.
    Errno::check(unsafe { call::set_timer_op(deadline) })?;
    let mut wakeups = 0;
    while now_ns(shared) < deadline {
        if wakeups == MAX_BLOCKS {
            return Err(Failure::NoWakeup);
        }
        sched_op(SCHEDOP_BLOCK)?;
        wakeups += 1;
    }
    Ok((now_ns(shared).saturating_sub(start), wakeups))
}
