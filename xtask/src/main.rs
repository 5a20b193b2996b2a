//! `cargo xtask <command>`: build the images, boot them in QEMU, benchmark, test.

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;
use xtask::bench::{BenchOptions, CASES, case_named, run_bench, to_json};
use xtask::bundle::DEFAULT_MEMORY_MIB;
use xtask::images::{Profile, build_images};
use xtask::qemu::{
    Outcome, SingleGuest, ensure_qemu, interactive_cmdline, run_hypervisor,
    run_hypervisor_interactive,
};
use xtask::trace::{build_traced_hypervisor, decode_file, raw_capture_path};
use xtask::{Result, err};

#[derive(Parser)]
#[command(about = "Build, run, benchmark and test the Xen-compatible PV hypervisor")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the hypervisor, the control domain, pv-guest and the test guests
    /// (target/images/).
    Build {
        /// Build with the dev profile instead of --release.
        #[arg(long)]
        debug: bool,
    },
    /// Boot the hypervisor with pv-guest (or --guest PATH) in QEMU, behind the control
    /// domain (dom0 `control`: xenstore and the console backend) unless --dom0 or
    /// --no-control-domain is given.
    Run {
        /// A Xen PV kernel ELF to boot instead of pv-guest.
        #[arg(long)]
        guest: Option<PathBuf>,
        /// Guest memory in MiB (default: 32 on ours; 64 for dom0 on Xen).
        #[arg(long)]
        memory: Option<u32>,
        /// Guest command line.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Stop QEMU after this many seconds (the console is then captured, not a
        /// terminal).
        #[arg(long)]
        timeout: Option<u64>,
        /// Deterministic QEMU (icount, fixed RTC, one vCPU, no RDRAND).
        #[arg(long)]
        deterministic: bool,
        /// Build the guest as dom0 (id 0) in place of the control domain (the bundle then
        /// has no control domain: the guest has no xenstore or console backend).
        #[arg(long)]
        dom0: bool,
        /// Boot the guest without the control domain: it gets ids 1, 2, ... as usual but
        /// has no xenstore or console backend (its console ring output is not shown;
        /// console_io still is). The run ends when the guest ends.
        #[arg(long)]
        no_control_domain: bool,
        /// Guest name (default: file stem, at most 31 bytes).
        #[arg(long)]
        name: Option<String>,
        /// Scheduler weight of the guest (1..=65535; Xen's default 256).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
        weight: u16,
        /// Scheduler cap of the guest in percent of one CPU (0 = none).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=100))]
        cap: u16,
        /// Most grant frames of the guest (xl's max_grant_frames; Xen's default 64).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=64))]
        max_grant_frames: u16,
        /// Most maptrack frames of the guest, 256 mappings each (xl's max_maptrack_frames;
        /// Xen's default 1024).
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u16).range(1..=1024))]
        max_maptrack_frames: u16,
        /// Hypervisor command line.
        #[arg(long, default_value = "")]
        hv_cmdline: String,
        /// Give the control domain the disk image PATH under NAME (repeatable): the
        /// images reach it as named boot modules of its initrd, and its memory grows by
        /// their size (rounded up to MiB).
        #[arg(long = "disk", value_name = "NAME=PATH", value_parser = parse_disk)]
        disks: Vec<xtask::bundle::DiskFile>,
        /// Keep the `[d1 name] ` prefix on every guest line on a terminal too (by
        /// default an interactive run has the control domain pass the guest's console
        /// through raw, `console=raw` on its command line, so full-screen guests like
        /// GRUB show right). Typing Ctrl-a three times moves console input to the next
        /// domain.
        #[arg(long)]
        prefix: bool,
        /// Record the hypervisor's defmt trace (every hypercall, domain life cycle) and
        /// write it decoded to FILE (raw frames in FILE.defmt). Uses a hypervisor built
        /// with DEFMT_LOG=trace.
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Boot the kernel as dom0 of real Xen 4.17 (Debian's build) in the same QEMU
        /// instead of on our hypervisor; the outcome is read from Xen's console and gives
        /// the same exit status. --memory sets dom0_mem, --hv-cmdline is appended to
        /// Xen's command line.
        #[arg(long, conflicts_with_all = ["trace", "name", "weight", "cap", "prefix", "no_control_domain", "dev"])]
        on_xen: bool,
        /// A device the control domain sets up as the toolstack (repeatable; the guest is
        /// domain 1): `vbd.<fe>=<disk>[,<vdev>][,ro]`, `vif.<fe>=<mac>[,vlan=<n>|,trunk=<n>;<n>...]`
        /// or `dev.<kind>.<fe>=<be>`. Appended to the control domain's command line; it
        /// reports every word it refuses.
        #[arg(long, value_name = "WORD", conflicts_with_all = ["dom0", "no_control_domain"])]
        dev: Vec<String>,
    },
    /// Run the benchmark cases (instructions per operation under deterministic QEMU, and
    /// host CPU use while idle); writes target/bench/bench.json.
    Bench {
        /// Also run the same guest as dom0 on real Xen 4.17 and compare.
        #[arg(long)]
        against_xen: bool,
        /// Iterations of every measured loop.
        #[arg(long, default_value_t = 100_000)]
        iterations: u64,
        /// Run only this case (one of xtask::bench::CASES; an unknown name lists them).
        #[arg(long)]
        case: Option<String>,
        /// Measure every deterministic case at the budget's iteration count and write
        /// tests/bench-budget.toml (what the bench_budget test holds the paths to).
        #[arg(long, conflicts_with_all = ["against_xen", "case"])]
        write_budget: bool,
    },
    /// Profile one benchmark case: instructions per iteration per function of the
    /// hypervisor and the bench guest (QEMU exec log of runs with N and 2N iterations);
    /// writes target/bench/profile-CASE.txt.
    Profile {
        /// The case (one of xtask::bench::CASES, not the idle one).
        #[arg(long)]
        case: String,
        /// N: the runs have N and 2N iterations.
        #[arg(long, default_value_t = 200)]
        iterations: u64,
        /// Functions to print (the file has all).
        #[arg(long, default_value_t = 15)]
        top: usize,
        /// Also log the hypervisor's boot-only functions (xtask::profile::BOOT_ONLY;
        /// about ten times slower).
        #[arg(long)]
        with_boot: bool,
    },
    /// Hypercall fuzzing: K `fuzz` guests issue random hypercalls with shaped arguments
    /// beside an `observer` guest and the control domain, under deterministic QEMU.
    /// Fails when the hypervisor faults, leaks a frame of an ended domain, or the
    /// observer is disturbed; prints the seed to reproduce.
    Fuzz {
        /// Hypercalls in total, split over the fuzzing domains.
        #[arg(long, default_value_t = 100_000)]
        calls: u64,
        /// Seed (the k-th fuzzing domain uses seed + k - 1).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fuzzing domains (with two or more, the last crashes itself at the end).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
        domains: u32,
        /// Echo the console.
        #[arg(long)]
        echo: bool,
        /// More command-line words for the fuzzing domains: `trace=N` prints every call
        /// from the N-th on, `every=N` a progress line every N calls.
        #[arg(long, default_value = "")]
        guest_args: String,
    },
    /// Run `cargo test` (host unit tests and the QEMU integration tests).
    Test {
        /// Extra arguments for cargo test.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the parser fuzz tests (proptest over fuzz-seeds/) with more cases and print
    /// the total number of executions.
    FuzzParsers {
        /// Cases per parser test (default: the CI size of each test).
        #[arg(long)]
        cases: Option<u32>,
        /// Another generator seed (FUZZ_SEED): other inputs, still reproducible.
        #[arg(long)]
        seed: Option<u64>,
        /// Build the tests with --release (faster; overflow checks stay on).
        #[arg(long)]
        release: bool,
    },
    /// Regenerate the hypercall table, guest wrappers, dispatch and docs/hypercalls.md
    /// from hypercall-gen/hypercalls.toml.
    Gen,
    /// Check xen-pv-abi's public API against xen-pv-abi/public-api.txt (or rewrite it).
    PublicApi {
        /// Rewrite the snapshot instead of checking it.
        #[arg(long)]
        write: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Build { debug } => {
            let profile = if debug {
                Profile::Debug
            } else {
                Profile::Release
            };
            let images = build_images(profile)?;
            println!("images in {}", images.dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            guest,
            memory,
            cmdline,
            timeout,
            deterministic,
            dom0,
            no_control_domain,
            name,
            weight,
            cap,
            max_grant_frames,
            max_maptrack_frames,
            hv_cmdline,
            prefix,
            trace,
            disks,
            on_xen: true,
            dev,
        } => {
            if !disks.is_empty() {
                return Err(err!(
                    "--disk is for our hypervisor's control domain, not --on-xen"
                ));
            }
            let _ = (
                dom0,
                no_control_domain,
                prefix,
                name,
                weight,
                cap,
                trace,
                dev,
            );
            let _ = (max_grant_frames, max_maptrack_frames);
            ensure_qemu()?;
            // pv-guest needs building; a kernel of the user's does not.
            let kernel = match guest {
                Some(path) => path,
                None => build_images(Profile::Release)?.pv_guest(),
            };
            let run = xtask::xen::Dom0Run {
                kernel,
                cmdline,
                memory_mib: memory,
                xen_extra: hv_cmdline,
                deterministic,
                timeout: timeout.map(Duration::from_secs),
                echo: true,
            };
            let result = xtask::xen::run_dom0(&run)?;
            if result.outcome == Outcome::AllPoweredOff {
                println!("xtask: {}", result.explain());
                Ok(ExitCode::SUCCESS)
            } else {
                Err(err!("{}", result.explain()))
            }
        }
        Cmd::Run {
            guest,
            memory,
            cmdline,
            timeout,
            deterministic,
            dom0,
            no_control_domain,
            name,
            weight,
            cap,
            max_grant_frames,
            max_maptrack_frames,
            hv_cmdline,
            prefix,
            trace,
            disks,
            on_xen: false,
            dev,
        } => {
            // Fail fast (with the install command) before a build when QEMU is missing.
            ensure_qemu()?;
            let images = build_images(Profile::Release)?;
            let mut run = SingleGuest {
                path: guest,
                memory_mib: Some(memory.unwrap_or(DEFAULT_MEMORY_MIB)),
                cmdline,
                name,
                dom0,
                weight,
                cap,
                max_grant_frames,
                max_maptrack_frames,
            }
            .to_run(&images);
            run.cmdline = hv_cmdline;
            run.no_control_domain = no_control_domain;
            run.devices = dev;
            run.disks = disks;
            run.deterministic = deterministic;
            run.timeout = timeout.map(Duration::from_secs);
            run.echo = true;
            let traced = match &trace {
                Some(out) => {
                    let elf = build_traced_hypervisor()?;
                    let raw = raw_capture_path(out);
                    run.hypervisor = elf.clone();
                    run.defmt_capture = Some(raw.clone());
                    Some((elf, raw, out.clone()))
                }
                None => None,
            };
            let outcome = match run.timeout {
                Some(_) => run_hypervisor(&run)?.outcome,
                None => {
                    let terminal = std::io::stdin().is_terminal();
                    run.control_cmdline = interactive_cmdline(
                        &run.control_cmdline,
                        run.guests.len(),
                        terminal,
                        prefix,
                    );
                    run_hypervisor_interactive(&run)?
                }
            };
            if let Some((elf, raw, out)) = traced {
                let lines = decode_file(&elf, &raw, &out)?;
                println!("xtask: {} trace lines in {}", lines.len(), out.display());
            }
            report_outcome(outcome)
        }
        Cmd::Bench {
            write_budget: true, ..
        } => write_budget(),
        Cmd::Bench {
            against_xen,
            iterations,
            case,
            ..
        } => bench(against_xen, iterations, case.as_deref()),
        Cmd::Profile {
            case,
            iterations,
            top,
            with_boot,
        } => {
            let case = named_case(&case)?;
            ensure_qemu()?;
            let images = build_images(Profile::Release)?;
            let (profile, path) =
                xtask::profile::profile_case(&images, case, iterations, with_boot)?;
            print!("{}", profile.render(Some(top)));
            println!("wrote {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fuzz {
            calls,
            seed,
            domains,
            echo,
            guest_args,
        } => fuzz(calls, seed, domains, echo, guest_args),
        Cmd::Test { args } => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(xtask::workspace_root())
                .arg("test")
                .args(&args)
                .status()
                .map_err(|e| err!("could not start cargo test: {e}"))?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::FuzzParsers {
            cases,
            seed,
            release,
        } => {
            xtask::fuzz_parsers::fuzz_parsers(cases, seed, release)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gen => {
            xtask::hypercalls::gen_hypercalls()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::PublicApi { write: true } => {
            let path = xtask::public_api::write_snapshot()?;
            println!("wrote {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::PublicApi { write: false } => {
            let diff = xtask::public_api::diff_against_snapshot()?;
            if diff.is_empty() {
                println!(
                    "xen-pv-abi public API matches {}",
                    xtask::public_api::SNAPSHOT
                );
                Ok(ExitCode::SUCCESS)
            } else {
                Err(err!(
                    "xen-pv-abi's public API differs from {} (review the semver impact, then \
                     `cargo xtask public-api --write`):\n{}",
                    xtask::public_api::SNAPSHOT,
                    diff.join("\n")
                ))
            }
        }
    }
}

fn report_outcome(outcome: Outcome) -> Result<ExitCode> {
    if outcome == Outcome::AllPoweredOff {
        println!("xtask: {}", outcome.explain());
        Ok(ExitCode::SUCCESS)
    } else {
        Err(err!("{}", outcome.explain()))
    }
}

/// Generous hang guard for one benchmark run (100k iterations take well under a minute
/// of TCG time; Xen's own boot under icount takes a few seconds).
const BENCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Measures every budgeted case at the budget's iteration count (the committed file's,
/// or the default for a new file) and writes tests/bench-budget.toml.
fn write_budget() -> Result<ExitCode> {
    use xtask::budget::{Budget, DEFAULT_ITERATIONS, budget_path, measure};
    let iterations = Budget::load().map_or(DEFAULT_ITERATIONS, |b| b.iterations);
    ensure_qemu()?;
    let images = build_images(Profile::Release)?;
    let mut figures = Vec::new();
    for (name, figure) in measure(&images, iterations, BENCH_TIMEOUT)? {
        match figure.value() {
            Some(v) => figures.push((name, v)),
            None => return Err(err!("{name} was not measured: {figure:?}")),
        }
    }
    let text = Budget::from_figures(iterations, &figures).to_text()?;
    let path = budget_path();
    std::fs::write(&path, text).map_err(|e| err!("cannot write {}: {e}", path.display()))?;
    for (name, v) in &figures {
        println!("{name:<28} {v:.2}");
    }
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// A case of xtask::bench::CASES; an unknown name lists them.
fn named_case(name: &str) -> Result<&'static xtask::bench::Case> {
    case_named(name).ok_or_else(|| {
        let names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
        err!("unknown case {name}; cases: {}", names.join(", "))
    })
}

fn bench(against_xen: bool, iterations: u64, case: Option<&str>) -> Result<ExitCode> {
    let only = match case {
        None => None,
        Some(name) => Some(named_case(name)?),
    };
    ensure_qemu()?;
    let images = build_images(Profile::Release)?;
    let opts = BenchOptions {
        against_xen,
        iterations,
        timeout: BENCH_TIMEOUT,
        only,
    };
    let metrics = run_bench(&images, &opts)?;
    for m in &metrics {
        println!("{}", m.console_line());
    }
    let dir = xtask::target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| err!("cannot create {}: {e}", dir.display()))?;
    // A one-case run does not overwrite the full report.
    let path = match only {
        None => dir.join("bench.json"),
        Some(c) => dir.join(format!("bench-{}.json", c.name)),
    };
    std::fs::write(&path, to_json(&metrics))
        .map_err(|e| err!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn fuzz(calls: u64, seed: u64, domains: u32, echo: bool, guest_args: String) -> Result<ExitCode> {
    ensure_qemu()?;
    let images = build_images(Profile::Release)?;
    let opts = xtask::fuzz::FuzzOptions {
        calls,
        seed,
        domains,
        echo,
        guest_args,
    };
    let start = std::time::Instant::now();
    let (report, transcript) = xtask::fuzz::run_fuzz(&images, &opts)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz: {} calls by {}/{domains} domains in {secs:.1} s ({:.0} calls/s), seed {seed}",
        report.calls,
        report.finished,
        report.calls as f64 / secs.max(0.001)
    );
    println!("fuzz: {} domains crashed", report.crashed.len());
    for line in &report.crashed {
        println!("  {line}");
    }
    if let Some(line) = &report.observer_line {
        println!("{line}");
    }
    for line in &report.end_lines {
        println!("{line}");
    }
    match report.failure() {
        None => Ok(ExitCode::SUCCESS),
        Some(why) => Err(err!(
            "fuzz failed (reproduce: cargo xtask fuzz --calls {calls} --seed {seed} --domains {domains}): {why}\nlast lines:\n{}",
            transcript.tail(40)
        )),
    }
}

/// `--disk NAME=PATH`.
fn parse_disk(arg: &str) -> std::result::Result<xtask::bundle::DiskFile, String> {
    xtask::bundle::DiskFile::parse(arg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_dev_repeats() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "xtask",
            "run",
            "--dev",
            "vbd.1=disk,ro",
            "--dev",
            "dev.demo.1=0",
        ])
        .unwrap();
        let Cmd::Run { dev, .. } = cli.command else {
            panic!("not run")
        };
        assert_eq!(dev, ["vbd.1=disk,ro", "dev.demo.1=0"]);
        // The devices need the control domain.
        for other in ["--dom0", "--no-control-domain", "--on-xen"] {
            assert!(Cli::try_parse_from(["xtask", "run", "--dev", "x", other]).is_err());
        }
        let help = Cli::command()
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("--dev <WORD>"), "{help}");
    }
}
