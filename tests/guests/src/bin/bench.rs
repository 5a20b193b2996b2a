//! `bench`: the hypercall round-trip benchmark. Times `iterations=N` (command line, default
//! 100000) `xen_version(XENVER_version)` hypercalls issued with a bare `syscall`, and the
//! same loop without the `syscall` as a baseline, with rdtsc. Under QEMU `-icount shift=0`
//! a TSC tick is one instruction, so `(total - baseline) / N` is the number of instructions
//! of one round trip, comparable between hypervisors. Prints only with console_io, so it
//! runs the same as a domU here and as dom0 on real Xen.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::cmdline;
    use pv_guest::{StartInfo, io_println};

    test_guests::standard_notes!("bench");
    pv_guest::entry!(main);

    const DEFAULT_ITERATIONS: u64 = 100_000;

    /// Runs `$n` iterations of the loop body `mov $17,%eax; xor %edi,%edi; xor %esi,%esi`
    /// followed by the extra instructions `$extra` (the hypercall or nothing), between two
    /// serialised rdtsc, and evaluates to the TSC delta. One template for both loops, so
    /// they differ in exactly the `syscall`.
    macro_rules! timed_loop {
        ($n:expr $(, $extra:literal)?) => {{
            let delta: u64;
            // SAFETY: the loop only issues xen_version(XENVER_version, NULL), which takes no
            // buffer; every register it, rdtsc or the hypervisor may change is declared.
            unsafe {
                core::arch::asm!(
                    "lfence",
                    "rdtsc",
                    "shl $32, %rdx",
                    "or %rdx, %rax",
                    "mov %rax, %r13",
                    "test %r12, %r12",
                    "jz 3f",
                    "2:",
                    "mov $17, %eax",
                    "xor %edi, %edi",
                    "xor %esi, %esi",
                    $($extra,)?
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
                    lateout("rax") delta,
                    out("rdx") _,
                    out("rdi") _,
                    out("rsi") _,
                    out("rcx") _,
                    out("r11") _,
                    options(att_syntax, nostack),
                );
            }
            delta
        }};
    }

    fn main(si: &'static StartInfo) -> ! {
        let n = cmdline::value(si.cmd_line_bytes(), "iterations")
            .and_then(cmdline::parse_u64)
            .unwrap_or(DEFAULT_ITERATIONS);
        let total = timed_loop!(n, "syscall");
        let baseline = timed_loop!(n);
        io_println!("BENCH name=xen_version iterations={n} total={total} baseline={baseline}");
        pv_guest::poweroff()
    }
}
