//! Binds VIRQ_TIMER, arms one-shot timers with set_timer_op, blocks until each fires and
//! counts the upcalls, then powers off.
#![no_std]
#![no_main]

use xen_pv_abi::event_channel::Virq;
use xen_pv_abi::evtchn::Port;
use xen_pv_abi::time::{set_timer, stop_periodic_timer, system_time_ns};
use xen_pv_abi::{Errno, VcpuId};
use xen_pv_rt::{StartInfo, events, println};

xen_pv_rt::entry!(main);

const ROUNDS: u32 = 3;
const DELAY_NS: u64 = 1_000_000;

fn main(si: &'static StartInfo) -> ! {
    match run(si) {
        Ok(()) => println!(
            "timer-events: {ROUNDS} timer events, {} upcalls",
            events::upcalls()
        ),
        Err(e) => println!("timer-events: failed: {e}"),
    }
    xen_pv_rt::poweroff()
}

fn run(si: &StartInfo) -> Result<(), Errno> {
    let shared = events::init(si)?;
    let timer = Port::bind_virq(Virq::TIMER, VcpuId(0))?;
    // Only our one-shot timer: the periodic one every PV vCPU starts with is stopped.
    stop_periodic_timer(VcpuId(0))?;
    for round in 1..=ROUNDS {
        set_timer(system_time_ns(shared, VcpuId(0))? + DELAY_NS)?;
        let blocks = events::wait_until(|| events::count(timer.number()) >= round);
        println!("timer-events: timer {round} fired after {blocks} block(s)");
    }
    Ok(())
}
