//! What pv-guest shows of event channels and time (its `events:` lines, identical on our
//! hypervisor and on Xen 4.17 when it runs as dom0 there and here):
//!
//! * blocking until a one-shot timer raises VIRQ_TIMER, three times;
//! * a loopback channel (a domain bound to itself), five events through it, and its
//!   other end unbound again once one end is closed;
//! * with `peer=<domid> role=<1|2> pingpong=<n>` on the command line, `n` round trips with
//!   a second domain over an interdomain channel (role 1 allocates, role 2 binds);
//! * the switch to the FIFO ABI (control block and event array in the kernel image) and
//!   five events through a loopback channel of priority 3, consumed from the queues.

use crate::events::{self, count, reset_count, wait_until};
use crate::{StartInfo, cmdline, println};
use xen_pv_abi::event_channel::{ChannelState, Virq};
use xen_pv_abi::evtchn::Port;
use xen_pv_abi::time::{set_timer, stop_periodic_timer, system_time_ns};
use xen_pv_abi::{DomId, Errno, EvtchnPort, VcpuId};

/// One-shot timers the demo waits for.
const TIMER_ROUNDS: u32 = 3;
/// Events sent through the loopback channel.
const LOOPBACK_EVENTS: u32 = 5;
/// How far ahead each one-shot timer is armed.
const TIMER_DELAY_NS: u64 = 1_000_000;

/// Runs the demo; prints one `events:` line per step (or why it stopped).
pub fn run(si: &StartInfo) {
    if let Err(e) = events::init(si) {
        println!("events: cannot set up event delivery: {e}");
        return;
    }
    match timer_demo(si) {
        Ok(()) => {
            println!("events: timer: {TIMER_ROUNDS} one-shot timers fired, blocked until each")
        }
        Err(e) => println!("events: timer demo failed: {e}"),
    }
    match loopback_demo() {
        Ok(()) => {}
        Err(e) => println!("events: loopback demo failed: {e}"),
    }
    let line = si.cmd_line_bytes();
    if let (Some(peer), Some(role), Some(n)) = (
        cmdline::value(line, "peer").and_then(cmdline::parse_u64),
        cmdline::value(line, "role").and_then(cmdline::parse_u64),
        cmdline::value(line, "pingpong").and_then(cmdline::parse_u64),
    ) {
        match ping_pong(DomId(peer as u16), role, n) {
            Ok(()) => println!("events: ping-pong: {n} round trips with d{peer} (role {role})"),
            Err(e) => println!("events: ping-pong failed: {e}"),
        }
    }
    // Last: once switched, the domain stays on the FIFO ABI.
    if let Err(e) = fifo_demo(si) {
        println!("events: fifo demo failed: {e}");
    }
    events::disable();
}

fn timer_demo(si: &StartInfo) -> Result<(), Errno> {
    let shared = events::shared_info(si)?;
    events::disable();
    let timer = Port::bind_virq(Virq::TIMER, VcpuId(0))?;
    reset_count(timer.number());
    // Only the one-shot timer: the 10 ms periodic one every PV vCPU starts with is off.
    stop_periodic_timer(VcpuId(0))?;
    for round in 1..=TIMER_ROUNDS {
        let now = system_time_ns(shared, VcpuId(0))?;
        set_timer(now + TIMER_DELAY_NS)?;
        wait_until(|| count(timer.number()) >= round);
    }
    Ok(())
}

fn loopback_demo() -> Result<(), Errno> {
    events::disable();
    let a = Port::alloc_unbound(DomId::SELF)?;
    let b = Port::bind_interdomain(DomId::SELF, a.number())?;
    reset_count(b.number());
    // Binding raises the new end once (in case the peer signalled first).
    wait_until(|| count(b.number()) >= 1);
    for i in 1..=LOOPBACK_EVENTS {
        a.send()?;
        wait_until(|| count(b.number()) > i);
    }
    println!(
        "events: loopback: {LOOPBACK_EVENTS} sends, {} upcalls on the bound end",
        count(b.number()) - 1
    );
    let (_, connected) = a.status()?;
    let b_number = b.number();
    b.close()?;
    let (_, after) = a.status()?;
    let was = matches!(connected, ChannelState::Interdomain { remote_port, .. } if remote_port == b_number);
    let now_unbound = matches!(after, ChannelState::Unbound { .. });
    println!("events: loopback: connected={was}, unbound after the other end closed={now_unbound}");
    Ok(())
}

/// Switches to the FIFO ABI and sends events through a loopback channel whose bound end
/// has priority 3; every event arrives through the queues.
fn fifo_demo(si: &StartInfo) -> Result<(), Errno> {
    let link_bits = events::switch_to_fifo(si)?;
    events::disable();
    let a = Port::alloc_unbound(DomId::SELF)?;
    let b = Port::bind_interdomain(DomId::SELF, a.number())?;
    reset_count(b.number());
    b.set_priority(3)?;
    // New ports start masked under FIFO; the bind left b pending, so unmasking links it.
    events::fifo_unmask(b.number())?;
    wait_until(|| count(b.number()) >= 1);
    for i in 1..=LOOPBACK_EVENTS {
        a.send()?;
        wait_until(|| count(b.number()) > i);
    }
    println!(
        "events: fifo: link_bits={link_bits}, {LOOPBACK_EVENTS} sends, {} upcalls through the queues",
        count(b.number()) - 1
    );
    Ok(())
}

/// `n` round trips with `peer`: role 1 sends and waits for the answer, role 2 answers.
fn ping_pong(peer: DomId, role: u64, n: u64) -> Result<(), Errno> {
    let port = match role {
        1 => {
            events::disable();
            let p = Port::alloc_unbound(peer)?;
            reset_count(p.number());
            // The peer binds when it finds the port; its first send says it is there.
            wait_until(|| count(p.number()) >= 1);
            p
        }
        _ => bind_when_offered(peer)?,
    };
    let base = count(port.number());
    for i in 1..=n {
        let i = i as u32;
        if role == 1 {
            port.send()?;
            wait_until(|| count(port.number()) >= base + i);
        } else {
            wait_until(|| count(port.number()) >= base + i);
            port.send()?;
        }
    }
    let _ = port.into_raw();
    Ok(())
}

/// Role 2: bind to the first port of `peer` offered to us (peers allocate low ports),
/// yielding while it has not allocated it yet; then say hello with one send.
fn bind_when_offered(peer: DomId) -> Result<Port, Errno> {
    for _ in 0..10_000 {
        for p in 1..16 {
            events::disable();
            if let Ok(port) = Port::bind_interdomain(peer, EvtchnPort(p)) {
                reset_count(port.number());
                // Our new port starts pending: consume that one event first.
                wait_until(|| count(port.number()) >= 1);
                port.send()?;
                return Ok(port);
            }
        }
        let _ = xen_pv_abi::hypercall::sched_yield();
    }
    Err(Errno::ESRCH)
}
