//! `bench`: the benchmark guest. Every case prints one line,
//! `BENCH name=<case> iterations=N total=T baseline=B` (T and B are TSC deltas of the
//! measured loop and of the same loop without the operation), or
//! `BENCH name=<case> unsupported=<reason>` when a hypercall it needs fails (a Xen errno
//! name such as `ENOSYS`), so a case the hypervisor cannot run yet is reported, not fatal.
//! Under QEMU `-icount shift=0` a TSC tick is one instruction, so `(T - B) / N` is the
//! number of instructions per iteration, comparable between hypervisors. It prints only
//! with console_io, so it runs the same as a domU here and as dom0 on real Xen. The last
//! line is `BENCH done`.
//!
//! Command line: `iterations=N` (default 100000) and `case=<name>`; without `case=` it
//! runs every single-domain case of [`SINGLE`] in order.
//!
//! One module per area; each case is a function `fn(&Ctx) -> Figures` listed in
//! [`SINGLE`] (or, for the two-domain and idle cases, matched in `main`):
//!
//! * [`hypercall`]: `xen_version`, the bare `syscall` round trip.
//! * [`events`]: `evtchn_loopback_upcall` (send on a loopback channel, the upcall clears
//!   the bits and returns with `HYPERVISOR_iret`), `evtchn_ping_pong_2dom`,
//!   `idle_host_cpu_percent` (blocks S seconds on a VIRQ_TIMER; the host measures QEMU's
//!   CPU time).
//! * [`mmu`]: `mmuext_tlb_flush_local`, `mmuext_invlpg_local`, `mmu_update_1pte`,
//!   `mmu_update_512pte` (figures per entry), `update_va_mapping`,
//!   `update_va_mapping_invlpg`, `mmuext_pin_unpin_l1`, `multicall_8_nops` (per multicall
//!   of 8 entries), `cr3_switch`.
//! * [`sched`]: `sched_yield_1dom` (a yield with nobody else to run),
//!   `sched_yield_2dom` (two domains yield in turn, role 1 times N yields; with `vcpus=2`
//!   two vCPUs of this domain, vCPU 0 times N yields: the form that runs as dom0 on Xen).
//! * [`traps`]: `iret_hypercall` (kernel to kernel), `pagefault_bounce` (#PF to the
//!   guest's handler and back with `iret`), `user_syscall_bounce` (guest user to kernel
//!   and back), `fpu_taskswitch_nm` (the lazy-FPU #NM round trip), `set_segment_base`.
//! * [`grant`]: `grant_map_unmap` (map + unmap of a page granted to ourselves),
//!   `grant_copy_4k` (one 4 KiB `GNTTABOP_copy` from a granted page), `memcpy_4k` (the
//!   same 4 KiB copy in the guest, for comparison).
//! * [`xenstore`]: `xenstore_read_roundtrip` (one `XS_READ` through the control
//!   domain's xenstored; at most 2,000 iterations; `unsupported=no_xenstore` as dom0 on
//!   Xen, which has no xenstored in the bench run).
//! * [`blk`]: `blk_read_4k`, `blk_write_4k`, `blk_flush` (one request through the kit's
//!   blkfront and the control domain's blkback, from the push to the response consumed;
//!   they also print `BENCH_STEPS` with the time of each step) and `blk_read_throughput`
//!   (real time: `bytes=` and `ns=` of sequential 128 KiB reads, `mib=` MiB in all).
//!   They need a vbd from the control domain, so they are in [`SERVED`], run only by
//!   `case=`; xtask's `bench::BLK_VBD` gives the run its disk.
//! * [`net`]: `net_frame_1500_2dom` (role 1 sends 1500-byte frames to role 2, which
//!   echoes them, through both domains' kit netfronts, the control domain's netbacks
//!   and its switch; figures per frame delivered). xtask's `bench::NET_VIFS` gives the
//!   two domains their vifs.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

/// Runs `$n` iterations of the loop body `$body` followed by the extra instructions
/// `$extra` (the operation measured, or nothing), between two serialised rdtsc, and
/// evaluates to the TSC delta. One template for both loops, so they differ in exactly the
/// `$extra` instructions. `r14` holds `$arg` for the body (a hypercall argument pointer).
///
/// The caller's `unsafe` block must justify what `$body` and `$extra` do: every register
/// they, rdtsc or the hypervisor may change is declared here (rbx, rbp and r15 are not:
/// the body must leave them alone), and an event upcall in between preserves all
/// registers (it returns with HYPERVISOR_iret).
#[cfg(target_os = "none")]
macro_rules! timed_loop {
    ($n:expr, $arg:expr, [$($body:literal),*] $(, $extra:literal)*) => {{
        let delta: u64;
        core::arch::asm!(
            "lfence",
            "rdtsc",
            "shl $32, %rdx",
            "or %rdx, %rax",
            "mov %rax, %r13",
            "test %r12, %r12",
            "jz 3f",
            "2:",
            $($body,)*
            $($extra,)*
            "dec %r12",
            "jnz 2b",
            "3:",
            "lfence",
            "rdtsc",
            "shl $32, %rdx",
            "or %rdx, %rax",
            "sub %r13, %rax",
            inout("r12") $n => _,
            out("r13") _,
            in("r14") $arg,
            lateout("rax") delta,
            out("rdx") _,
            out("rdi") _,
            out("rsi") _,
            out("rcx") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            options(att_syntax, nostack),
        );
        delta
    }};
}

#[cfg(target_os = "none")]
mod blk;
#[cfg(target_os = "none")]
mod events;
#[cfg(target_os = "none")]
mod grant;
#[cfg(target_os = "none")]
mod hypercall;
#[cfg(target_os = "none")]
mod mmu;
#[cfg(target_os = "none")]
mod net;
#[cfg(target_os = "none")]
mod sched;
#[cfg(target_os = "none")]
mod traps;
#[cfg(target_os = "none")]
mod xenstore;

#[cfg(target_os = "none")]
pub use guest::*;

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::{StartInfo, bytes_str, cmdline, io_println};
    use xen_pv_abi::{DomId, Errno};

    test_guests::standard_notes!("bench");
    pv_guest::entry!(main);

    const DEFAULT_ITERATIONS: u64 = 100_000;

    /// What every case gets: start_info, the iteration count and the two-domain roles.
    pub struct Ctx {
        pub si: &'static StartInfo,
        /// Iterations of the measured loop.
        pub n: u64,
        /// `role=`: 1 measures, 2 is the partner (two-domain cases).
        pub role: u64,
        /// `peer=`: the other domain of a two-domain case.
        pub peer: DomId,
        /// `vcpus=`: 2 runs a two-domain case between two vCPUs of this domain instead
        /// (Xen, where the run has dom0 only).
        pub vcpus: u64,
    }

    /// `Ok((iterations, total, baseline))` or why the case could not run.
    pub type Figures = Result<(u64, u64, u64), Failure>;

    /// A case run in the default (single-domain) run or by `case=<name>`.
    pub type CaseFn = fn(&Ctx) -> Figures;

    /// The single-domain cases, in the order of the default run. A case must leave the
    /// guest as it found it (mappings, trap table, masks), so the next one is unaffected.
    pub const SINGLE: &[(&str, CaseFn)] = &[
        ("xen_version", crate::hypercall::xen_version),
        (
            "evtchn_loopback_upcall",
            crate::events::evtchn_loopback_upcall,
        ),
        ("mmuext_tlb_flush_local", crate::mmu::mmuext_tlb_flush_local),
        ("mmuext_invlpg_local", crate::mmu::mmuext_invlpg_local),
        ("mmu_update_1pte", crate::mmu::mmu_update_1pte),
        ("mmu_update_512pte", crate::mmu::mmu_update_512pte),
        ("update_va_mapping", crate::mmu::update_va_mapping_none),
        (
            "update_va_mapping_invlpg",
            crate::mmu::update_va_mapping_invlpg,
        ),
        ("mmuext_pin_unpin_l1", crate::mmu::mmuext_pin_unpin_l1),
        ("multicall_8_nops", crate::mmu::multicall_8_nops),
        ("cr3_switch", crate::mmu::cr3_switch),
        ("sched_yield_1dom", crate::sched::sched_yield_1dom),
        ("iret_hypercall", crate::traps::iret_hypercall),
        ("pagefault_bounce", crate::traps::pagefault_bounce),
        ("user_syscall_bounce", crate::traps::user_syscall_bounce),
        ("fpu_taskswitch_nm", crate::traps::fpu_taskswitch_nm),
        ("set_segment_base", crate::traps::set_segment_base),
        ("grant_map_unmap", crate::grant::grant_map_unmap),
        ("grant_copy_4k", crate::grant::grant_copy_4k),
        ("memcpy_4k", crate::grant::memcpy_4k),
        // Last: it leaves pv-guest's upcall registered (the others set up their own).
        (
            "xenstore_read_roundtrip",
            crate::xenstore::xenstore_read_roundtrip,
        ),
    ];

    /// Cases that need a device the control domain serves (xtask's `bench::Served`
    /// runs): run only by `case=<name>`, in a run that has the device.
    pub const SERVED: &[(&str, CaseFn)] = &[
        ("blk_read_4k", crate::blk::blk_read_4k),
        ("blk_write_4k", crate::blk::blk_write_4k),
        ("blk_flush", crate::blk::blk_flush),
    ];

    /// Why a case could not be measured.
    #[derive(Clone, Copy)]
    pub enum Failure {
        /// A hypercall failed.
        Errno(Errno),
        /// Fewer events arrived than were sent.
        Lost { got: u64, want: u64 },
        /// The peer domain never bound its end.
        PeerNotReady,
        /// Blocking never brought the awaited event.
        NoWakeup,
        /// The operation did not have the effect it should (named).
        Wrong(&'static str),
    }

    impl From<Errno> for Failure {
        fn from(e: Errno) -> Self {
            Failure::Errno(e)
        }
    }

    impl core::fmt::Display for Failure {
        /// One word without spaces: the line stays `key=value` pairs.
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                Failure::Errno(e) => match e.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "errno_{}", e.0),
                },
                Failure::Lost { got, want } => write!(f, "lost_events_{got}_of_{want}"),
                Failure::PeerNotReady => f.write_str("peer_not_ready"),
                Failure::NoWakeup => f.write_str("no_wakeup"),
                Failure::Wrong(what) => f.write_str(what),
            }
        }
    }

    pub fn report(name: &str, r: Figures) {
        match r {
            Ok((n, total, baseline)) => {
                io_println!("BENCH name={name} iterations={n} total={total} baseline={baseline}")
            }
            Err(e) => io_println!("BENCH name={name} unsupported={e}"),
        }
    }

    fn main(si: &'static StartInfo) -> ! {
        let cmd = si.cmd_line_bytes();
        let num = |key: &str, default: u64| {
            cmdline::value(cmd, key)
                .and_then(cmdline::parse_u64)
                .unwrap_or(default)
        };
        let ctx = Ctx {
            si,
            n: num("iterations", DEFAULT_ITERATIONS),
            role: num("role", 1),
            peer: DomId(u16::try_from(num("peer", 0)).unwrap_or(0)),
            vcpus: num("vcpus", 1),
        };
        match cmdline::value(cmd, "case") {
            None => {
                for (name, case) in SINGLE {
                    report(name, case(&ctx));
                }
            }
            Some(b"sched_yield_2dom") => {
                let r = crate::sched::sched_yield_2dom(&ctx);
                if ctx.role == 1 {
                    report("sched_yield_2dom", r);
                }
            }
            Some(b"evtchn_ping_pong_2dom") => {
                let r = crate::events::evtchn_ping_pong_2dom(&ctx);
                if ctx.role == 1 {
                    report("evtchn_ping_pong_2dom", r);
                } else if let Err(e) = r {
                    io_println!("bench: ping-pong peer failed: {e}");
                }
            }
            Some(b"net_frame_1500_2dom") => {
                let r = crate::net::net_frame_1500_2dom(&ctx);
                if ctx.role == 1 {
                    report("net_frame_1500_2dom", r);
                } else if let Err(e) = r {
                    io_println!("bench: net echo peer failed: {e}");
                }
            }
            Some(b"idle_host_cpu_percent") => crate::events::idle(si, num("seconds", 2)),
            Some(b"blk_read_throughput") => crate::blk::blk_read_throughput(&ctx, num("mib", 64)),
            Some(name) => match SINGLE
                .iter()
                .chain(SERVED)
                .find(|(n, _)| n.as_bytes() == name)
            {
                Some((name, case)) => report(name, case(&ctx)),
                None => {
                    io_println!("BENCH name={} unsupported=unknown_case", bytes_str(name))
                }
            },
        }
        io_println!("BENCH done");
        pv_guest::poweroff()
    }

    pub fn rdtsc() -> u64 {
        // SAFETY: lfence and rdtsc only order and read the time-stamp counter.
        unsafe {
            core::arch::x86_64::_mm_lfence();
            core::arch::x86_64::_rdtsc()
        }
    }

    /// TSC delta of `n` calls of `f`.
    pub fn timed(n: u64, mut f: impl FnMut() -> Result<(), Failure>) -> Result<u64, Failure> {
        let start = rdtsc();
        for _ in 0..n {
            f()?;
        }
        Ok(rdtsc().wrapping_sub(start))
    }

    /// The loop overhead of [`timed`].
    pub fn timed_empty(n: u64) -> u64 {
        timed(n, || {
            core::hint::black_box(());
            Ok(())
        })
        .unwrap_or(0)
    }
}
