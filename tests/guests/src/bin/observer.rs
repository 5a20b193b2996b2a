//! `observer`: a fixed workload that runs beside the fuzzing domains (`rounds=R`) and
//! proves it was never disturbed. Each round it writes a pattern over four pages of its
//! own, sends itself an event on a loopback channel and blocks until the upcall counted
//! it, yields, then reads the pattern back and checks `xen_version`. It ends with
//! `observer: done <R> rounds, <M> mismatches, checksum <hex>`; the checksum folds what
//! it read back ([`checksum`] in `xtask::fuzz` computes the undisturbed value).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::cmdline::{parse_u64, value};
    use pv_guest::events;
    use pv_guest::{StartInfo, println};
    use xen_pv_abi::EvtchnPort;
    use xen_pv_abi::hypercall::{event_channel_send, hypercall_raw, sched_yield, xen_version};

    test_guests::standard_notes!("observer");
    pv_guest::entry!(main);

    const WORDS: usize = 4 * 512;

    #[repr(C, align(4096))]
    struct Data([u64; WORDS]);
    static mut DATA: Data = Data([0; WORDS]);

    /// The pattern word `i` of round `r` (xtask's copy must agree).
    fn word(r: u64, i: u64) -> u64 {
        (r.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.wrapping_mul(0xff51_afd7_ed55_8ccd))
            .rotate_left((r % 64) as u32)
    }

    /// EVTCHNOP `cmd` on the 12-byte struct `op`; returns the hypervisor's answer.
    fn evtchn(cmd: u64, op: &mut [u32; 3]) -> i64 {
        // SAFETY: `op` is a live struct as large as the ops used here.
        unsafe { hypercall_raw(32, [cmd, op.as_mut_ptr() as u64, 0, 0, 0]) }
    }

    fn main(si: &'static StartInfo) -> ! {
        let cmd = si.cmd_line_bytes();
        let rounds = value(cmd, "rounds").and_then(parse_u64).unwrap_or(1000);
        if events::init(si).is_err() {
            println!("observer: cannot set up events");
            pv_guest::poweroff();
        }
        // Loopback: an unbound port for ourselves, then bind to it.
        let mut op = [0x7ff0 | 0x7ff0 << 16, 0, 0];
        let r1 = evtchn(6, &mut op);
        let unbound = op[1];
        let mut op = [0x7ff0, unbound, 0];
        let r2 = evtchn(0, &mut op);
        let bound = EvtchnPort(op[2]);
        let target = EvtchnPort(unbound);
        if r1 != 0 || r2 != 0 {
            println!("observer: loopback refused ({r1}, {r2})");
            pv_guest::poweroff();
        }
        let version = xen_version();
        let data = &raw mut DATA;
        let mut mismatches = 0u64;
        let mut sum = 0xcbf2_9ce4_8422_2325u64;
        for r in 0..rounds {
            for i in 0..WORDS {
                // SAFETY: DATA is ours; plain stores by index.
                unsafe {
                    (*data)
                        .0
                        .as_mut_ptr()
                        .add(i)
                        .write_volatile(word(r, i as u64))
                };
            }
            let want = events::count(target) + 1;
            if event_channel_send(bound).is_err() {
                mismatches += 1;
            } else {
                events::wait_until(|| events::count(target) >= want);
            }
            if events::count(target) != want {
                mismatches += 1;
            }
            let _ = sched_yield();
            let mut read = 0u64;
            for i in 0..WORDS {
                // SAFETY: as above.
                let v = unsafe { (*data).0.as_ptr().add(i).read_volatile() };
                if v != word(r, i as u64) {
                    mismatches += 1;
                }
                read = read.wrapping_add(v);
            }
            if xen_version() != version {
                mismatches += 1;
            }
            sum = (sum ^ read).wrapping_mul(0x100_0000_01b3) ^ r;
            if (r + 1) % 1000 == 0 {
                println!("observer: round {}", r + 1);
            }
        }
        println!("observer: done {rounds} rounds, {mismatches} mismatches, checksum {sum:#018x}");
        pv_guest::poweroff()
    }
}
