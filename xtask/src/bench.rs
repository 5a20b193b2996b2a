//! The benchmark: the `bench` test guest runs several cases under QEMU `-icount shift=0`
//! (one TSC tick = one retired instruction) and prints one line per case,
//! `BENCH name=<case> iterations=N total=T baseline=B` or
//! `BENCH name=<case> unsupported=<reason>`. `(T − B) / N` is the instructions per
//! iteration. The same ELF runs on our hypervisor and as dom0 on real Xen 4.17; the
//! results become [`Metric`]s (ours, Xen, ratio) and `target/bench/bench.json`.
//!
//! Two cases need two domains. The dom0-only Xen run cannot start a second one, so such a
//! case either has no Xen figure or runs a stand-in there ([`XenVariant`]:
//! `sched_yield_2dom` switches between two vCPUs of dom0); and `idle_host_cpu_percent` runs without `-icount`: the guest blocks for
//! two seconds of guest time and xtask reads QEMU's CPU time from `/proc/<pid>/stat`.
//!
//! Cases of [`CaseKind::Served`] need a device the control domain serves (a vbd from a
//! disk image, later a vif on its switch): their run ([`served_run`]) gives the control
//! domain the [`Served`] disks and device words, and the bench domains their command
//! lines. The Xen run has neither backends nor a xenstored, so they have no Xen figure.

use crate::bundle::{DiskFile, GuestFile};
use crate::images::Images;
use crate::qemu::{HvResult, HvRun, Outcome, run_hypervisor, run_hypervisor_observed};
use crate::xen::run_on_xen_observed;
use crate::{Result, err};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// What a case needs to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseKind {
    /// Part of the default single-domain, deterministic run.
    Single,
    /// Two bench domains (`role=1` measures, `role=2` is the partner); ours only.
    TwoDomains,
    /// Real time: QEMU's CPU use while every domain is blocked.
    Idle,
    /// Bench domains that use a device of the control domain; ours only.
    Served(&'static Served),
}

/// What the run of a [`CaseKind::Served`] case has: bench domains 1..=`domains` (with
/// `role=<id>` and, for two, `peer=<other>`, as [`two_domain_cmdlines`]), the disks
/// the control domain gets and its device words.
///
/// A case between two domains through the control domain's switch is a `Served` with
/// `domains: 2`, no disks and one `vif.<id>=<mac>` word per domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// Bench domains: 1 or 2.
    pub domains: u8,
    /// Disk images xtask writes (deterministic bytes) and hands to the control domain.
    pub disks: &'static [BenchDisk],
    /// Device words (`vbd.1=bench`, ...; see [`crate::qemu::HvRun::devices`]).
    pub devices: &'static [&'static str],
    /// Under `-icount` (an instruction count, budgeted) or in real time (a rate,
    /// reported only).
    pub deterministic: bool,
    /// Extra bench guest command-line words (`mib=64`).
    pub guest_extra: &'static str,
}

/// A disk image of a [`Served`] run: `bytes` of xorshift64 output from `seed`, written
/// to `target/bench/disk-<name>.img` and given to the control domain as `<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchDisk {
    /// The control domain's name of the disk (what `vbd.<fe>=<name>` refers to).
    pub name: &'static str,
    /// Size: a multiple of 4096.
    pub bytes: usize,
    /// Seed of the contents.
    pub seed: u64,
}

impl BenchDisk {
    /// The image's contents.
    pub fn contents(&self) -> Vec<u8> {
        let mut s = self.seed | 1;
        let mut out = Vec::with_capacity(self.bytes + 8);
        while out.len() < self.bytes {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.truncate(self.bytes);
        out
    }

    /// Writes the image under `dir` (unless it is there already with these contents).
    pub fn write_in(&self, dir: &Path) -> Result<DiskFile> {
        std::fs::create_dir_all(dir).map_err(|e| err!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("disk-{}.img", self.name));
        let bytes = self.contents();
        if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            // Unique temporary name: parallel tests may write the same image.
            let tmp = dir.join(format!(
                ".disk-{}-{}-{:?}.tmp",
                self.name,
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&tmp, &bytes)
                .map_err(|e| err!("cannot write {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| err!("cannot write {}: {e}", path.display()))?;
        }
        Ok(DiskFile {
            path,
            name: self.name.to_string(),
        })
    }
}

/// The disk of the block cases: 4 MiB (the control domain's memory grows by as much).
pub const BENCH_DISK: BenchDisk = BenchDisk {
    name: "bench",
    bytes: 4 << 20,
    seed: 0x9e37_79b9_7f4a_7c15,
};

/// The block cases' run: bench domain 1 with a writable vbd served by the control
/// domain's blkback from [`BENCH_DISK`].
pub const BLK_VBD: Served = Served {
    domains: 1,
    disks: &[BENCH_DISK],
    devices: &["vbd.1=bench"],
    deterministic: true,
    guest_extra: "",
};

/// [`BLK_VBD`] in real time, for the throughput (256 MiB read: some tenths of a second).
pub const BLK_VBD_REALTIME: Served = Served {
    deterministic: false,
    guest_extra: "mib=256",
    ..BLK_VBD
};

/// The frame case's run: bench domains 1 and 2, each with a vif on the control
/// domain's switch (both in the default VLAN).
pub const NET_VIFS: Served = Served {
    domains: 2,
    disks: &[],
    devices: &["vif.1=00:16:3e:00:be:01", "vif.2=00:16:3e:00:be:02"],
    deterministic: true,
    guest_extra: "",
};

impl Case {
    /// Whether the case runs under `-icount` (an exact instruction count, so budgeted).
    pub fn deterministic(&self) -> bool {
        match self.kind {
            CaseKind::Single | CaseKind::TwoDomains => true,
            CaseKind::Idle => false,
            CaseKind::Served(s) => s.deterministic,
        }
    }
}

/// One benchmark case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// The `name=` of its BENCH line and of its metric.
    pub name: &'static str,
    /// The metric's unit.
    pub unit: &'static str,
    /// How it runs.
    pub kind: CaseKind,
    /// How a [`CaseKind::TwoDomains`] case runs on Xen, whose run has dom0 only; `None`:
    /// it does not.
    pub xen: Option<XenVariant>,
}

/// A two-domain case's stand-in on Xen: dom0 alone, with extra Xen options and guest
/// command-line words (e.g. two vCPUs of dom0 in place of two domains).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenVariant {
    /// Appended to Xen's command line.
    pub xen_extra: &'static str,
    /// Appended to the bench guest's command line.
    pub guest_extra: &'static str,
}

/// `sched_yield_2dom` on Xen: dom0 gets two vCPUs on the one physical CPU (`N` sets both
/// the minimum and the maximum, so it may exceed the CPU count) and switches between
/// them; on ours the switch is between two domains (our hypervisor has no `VCPUOP_up`
/// for a second vCPU yet). A domain switch does at least the work of a same-domain vCPU
/// switch on Xen (both reload CR3 and the whole register state).
pub const XEN_TWO_VCPUS: XenVariant = XenVariant {
    xen_extra: "dom0_max_vcpus=2",
    guest_extra: "vcpus=2",
};

/// Every case, in report order.
pub const CASES: &[Case] = &[
    Case {
        name: "xen_version",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "evtchn_loopback_upcall",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "sched_yield_1dom",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "mmuext_tlb_flush_local",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "mmuext_invlpg_local",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "mmu_update_1pte",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "mmu_update_512pte",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "update_va_mapping",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "update_va_mapping_invlpg",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "mmuext_pin_unpin_l1",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "multicall_8_nops",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "cr3_switch",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "iret_hypercall",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "pagefault_bounce",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "user_syscall_bounce",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "fpu_taskswitch_nm",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "set_segment_base",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    // Ours only: the Xen run's dom0 has no xenstored, so its bench guest prints
    // `unsupported=no_xenstore` and the Xen figure is missing.
    Case {
        name: "xenstore_read_roundtrip",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "grant_map_unmap",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "grant_copy_4k",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    Case {
        name: "memcpy_4k",
        unit: "instructions",
        kind: CaseKind::Single,
        xen: None,
    },
    // Ours only: the Xen run's dom0 has no backends (and no xenstored).
    Case {
        name: "blk_read_4k",
        unit: "instructions",
        kind: CaseKind::Served(&BLK_VBD),
        xen: None,
    },
    Case {
        name: "blk_write_4k",
        unit: "instructions",
        kind: CaseKind::Served(&BLK_VBD),
        xen: None,
    },
    Case {
        name: "blk_flush",
        unit: "instructions",
        kind: CaseKind::Served(&BLK_VBD),
        xen: None,
    },
    Case {
        name: "net_frame_1500_2dom",
        unit: "instructions",
        kind: CaseKind::Served(&NET_VIFS),
        xen: None,
    },
    Case {
        name: "blk_read_throughput",
        unit: RATE_UNIT,
        kind: CaseKind::Served(&BLK_VBD_REALTIME),
        xen: None,
    },
    Case {
        name: "sched_yield_2dom",
        unit: "instructions",
        kind: CaseKind::TwoDomains,
        xen: Some(XEN_TWO_VCPUS),
    },
    Case {
        name: "evtchn_ping_pong_2dom",
        unit: "instructions",
        kind: CaseKind::TwoDomains,
        xen: None,
    },
    Case {
        name: "idle_host_cpu_percent",
        unit: "percent",
        kind: CaseKind::Idle,
        xen: None,
    },
];

/// The unit of a rate (`bytes=` and `ns=` on the BENCH line): 10^6 bytes per second.
pub const RATE_UNIT: &str = "MB/s";

/// The last line of every bench guest run.
pub const DONE_MARKER: &str = "BENCH done";
/// The idle case prints this right before it blocks.
pub const IDLE_START_MARKER: &str = "BENCH_IDLE start";

/// The figures of a measured case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurement {
    /// Iterations of each loop.
    pub iterations: u64,
    /// TSC delta of the measured loop.
    pub total: u64,
    /// TSC delta of the same loop without the hypercall.
    pub baseline: u64,
}

impl Measurement {
    /// Instructions per iteration: (total − baseline) / iterations.
    pub fn per_iteration(&self) -> f64 {
        if self.iterations == 0 {
            return 0.0;
        }
        (self.total as f64 - self.baseline as f64) / self.iterations as f64
    }

    /// The whole number of instructions per iteration, when it divides exactly.
    pub fn exact_per_iteration(&self) -> Option<i128> {
        let diff = i128::from(self.total) - i128::from(self.baseline);
        let n = i128::from(self.iterations);
        (n != 0 && diff % n == 0).then(|| diff / n)
    }
}

/// One `BENCH name=<case> key=value...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchLine {
    /// The case.
    pub name: String,
    /// The other `key=value` words, in order.
    pub fields: Vec<(String, String)>,
}

impl BenchLine {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `iterations`, `total` and `baseline`, if all three are numbers.
    pub fn measurement(&self) -> Option<Measurement> {
        let num = |k| self.get(k)?.parse().ok();
        Some(Measurement {
            iterations: num("iterations")?,
            total: num("total")?,
            baseline: num("baseline")?,
        })
    }

    /// The reason of an `unsupported=` line.
    pub fn unsupported(&self) -> Option<&str> {
        self.get("unsupported")
    }
}

/// Finds `BENCH name=...` anywhere in a line (our hypervisor prefixes it with
/// `[d1 bench] `, Xen may print it raw) and reads its words. A word without `=` makes the
/// line malformed.
pub fn parse_bench_line(line: &str) -> Option<BenchLine> {
    parse_marked_line(line, "BENCH ")
}

/// The block cases' `BENCH_STEPS name=<case> iterations=N submit=S notify=E wait=W
/// complete=C` line: TSC totals of the request's three steps and of the notifications
/// inside the first (see the bench guest's `blk` module).
pub fn parse_steps_line(line: &str) -> Option<BenchLine> {
    parse_marked_line(line, "BENCH_STEPS ")
}

/// The steps of a [`parse_steps_line`] line per iteration, for the console:
/// `submit 1234.00, notify ..., wait ..., complete ...`.
pub fn steps_summary(line: &BenchLine) -> Option<String> {
    let n: f64 = line
        .get("iterations")?
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)? as f64;
    let mut parts = Vec::new();
    for key in ["submit", "notify", "wait", "complete"] {
        let v: u64 = line.get(key)?.parse().ok()?;
        parts.push(format!("{key} {:.2}", v as f64 / n));
    }
    Some(parts.join(", "))
}

fn parse_marked_line(line: &str, marker: &str) -> Option<BenchLine> {
    let at = line.find(&format!("{marker}name="))?;
    let mut words = line[at + marker.len()..].split_whitespace();
    let name = words.next()?.strip_prefix("name=")?;
    if name.is_empty() {
        return None;
    }
    let fields = words
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(BenchLine {
        name: name.to_string(),
        fields,
    })
}

/// Every bench line of a transcript, in order.
pub fn bench_lines(lines: &[String]) -> Vec<BenchLine> {
    lines.iter().filter_map(|l| parse_bench_line(l)).collect()
}

/// One side's figure of a metric: a number, or why there is none.
#[derive(Clone, Debug, PartialEq)]
pub enum Figure {
    /// Measured.
    Value(f64),
    /// Not measured, with the reason (printed, not written to the JSON).
    Missing(String),
}

impl Figure {
    /// The number, if measured.
    pub fn value(&self) -> Option<f64> {
        match self {
            Figure::Value(v) => Some(*v),
            Figure::Missing(_) => None,
        }
    }

    /// The rate of a real-time case's `bytes=B ns=T` line, in MB/s (10^6 bytes).
    pub fn rate_of_case(lines: &[BenchLine], case: &str) -> Figure {
        let Some(line) = lines.iter().find(|l| l.name == case) else {
            return Figure::Missing("no BENCH line".into());
        };
        if let Some(reason) = line.unsupported() {
            return Figure::Missing(format!("unsupported: {reason}"));
        }
        let num = |k| line.get(k)?.parse::<u64>().ok();
        match (num("bytes"), num("ns")) {
            (Some(b), Some(ns)) if ns > 0 => Figure::Value(b as f64 * 1000.0 / ns as f64),
            _ => Figure::Missing("malformed BENCH line".into()),
        }
    }

    /// The figure of `case` in a run's bench lines.
    pub fn of_case(lines: &[BenchLine], case: &str) -> Figure {
        let Some(line) = lines.iter().find(|l| l.name == case) else {
            return Figure::Missing("no BENCH line".into());
        };
        if let Some(reason) = line.unsupported() {
            return Figure::Missing(format!("unsupported: {reason}"));
        }
        match line.measurement() {
            Some(m) => Figure::Value(m.per_iteration()),
            None => Figure::Missing("malformed BENCH line".into()),
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// Case name.
    pub name: String,
    /// `instructions` or `percent`.
    pub unit: String,
    /// Our hypervisor.
    pub ours: Figure,
    /// Xen 4.17.
    pub xen: Figure,
}

impl Metric {
    /// ours / Xen, when both exist and Xen's is not zero.
    pub fn ratio(&self) -> Option<f64> {
        let (o, x) = (self.ours.value()?, self.xen.value()?);
        (x != 0.0).then(|| o / x)
    }

    /// The console line: both figures and the ratio.
    pub fn console_line(&self) -> String {
        let side = |f: &Figure| match f {
            Figure::Value(v) => format!("{v:.2} {}", self.unit),
            Figure::Missing(why) => format!("n/a ({why})"),
        };
        let ratio = self
            .ratio()
            .map(|r| format!("{r:.3}"))
            .unwrap_or_else(|| "n/a".into());
        format!(
            "{:<24} ours {:<28} Xen 4.17 {:<40} ratio ours/Xen {ratio}",
            self.name,
            side(&self.ours),
            side(&self.xen)
        )
    }
}

/// The report as JSON: `{"metrics": [{"name", "unit", "ours", "xen", "ratio"}]}` with
/// `null` for what was not measured. Written by hand: a handful of numbers and names
/// (letters, digits, `_`) need no serializer.
pub fn to_json(metrics: &[Metric]) -> String {
    let num = |v: Option<f64>, decimals: usize| match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "null".into(),
    };
    let mut out = String::from("{\n  \"metrics\": [");
    for (i, m) in metrics.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n    {{\"name\": \"{}\", \"unit\": \"{}\", \"ours\": {}, \"xen\": {}, \"ratio\": {}}}",
            if i == 0 { "" } else { "," },
            json_escape(&m.name),
            json_escape(&m.unit),
            num(m.ours.value(), 2),
            num(m.xen.value(), 2),
            num(m.ratio(), 3),
        );
    }
    out.push_str("\n  ]\n}\n");
    out
}

/// Escapes `"` and `\` and drops control characters (names are plain identifiers).
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The command line of a single-domain run: every [`CaseKind::Single`] case, or only
/// `case`.
pub fn single_cmdline(case: Option<&str>, iterations: u64) -> String {
    match case {
        Some(c) => format!("case={c} iterations={iterations}"),
        None => format!("iterations={iterations}"),
    }
}

/// Runs the single-domain cases ([`CaseKind::Single`], or only `case`) on our
/// hypervisor, deterministically. A run that does not end with every domain powered off
/// is an error.
pub fn bench_ours(
    images: &Images,
    case: Option<&str>,
    iterations: u64,
    timeout: Duration,
) -> Result<Vec<BenchLine>> {
    let result = run_hypervisor(&single_run(images, case, iterations, timeout))?;
    checked_lines(&result, "the bench run on our hypervisor")
}

/// The deterministic run of [`bench_ours`]: one bench domain.
pub fn single_run(
    images: &Images,
    case: Option<&str>,
    iterations: u64,
    timeout: Duration,
) -> HvRun {
    let guest = GuestFile::new(images.guest("bench")).cmdline(single_cmdline(case, iterations));
    HvRun {
        hypervisor: images.hypervisor(),
        guests: vec![guest],
        deterministic: true,
        timeout: Some(timeout),
        ..HvRun::default()
    }
}

/// The command lines of the two bench domains of a two-domain case (domains 1 and 2,
/// each told the other's id).
pub fn two_domain_cmdlines(case: &str, iterations: u64) -> [String; 2] {
    [
        format!("case={case} role=1 peer=2 iterations={iterations}"),
        format!("case={case} role=2 peer=1 iterations={iterations}"),
    ]
}

/// Runs a two-domain case on our hypervisor, deterministically: `bench-1` (domain 1,
/// `role=1`, measures) and `bench-2` (domain 2, `role=2`).
pub fn bench_ours_two_domains(
    images: &Images,
    case: &str,
    iterations: u64,
    timeout: Duration,
) -> Result<Vec<BenchLine>> {
    let result = run_hypervisor(&two_domain_run(images, case, iterations, timeout))?;
    checked_lines(&result, &format!("the {case} run on our hypervisor"))
}

/// The deterministic run of [`bench_ours_two_domains`]: `bench-1` and `bench-2`.
pub fn two_domain_run(images: &Images, case: &str, iterations: u64, timeout: Duration) -> HvRun {
    let guests = two_domain_cmdlines(case, iterations)
        .into_iter()
        .enumerate()
        .map(|(i, cmdline)| {
            let mut g = GuestFile::new(images.guest("bench")).cmdline(cmdline);
            g.name = format!("bench-{}", i + 1);
            g
        })
        .collect();
    HvRun {
        hypervisor: images.hypervisor(),
        guests,
        deterministic: true,
        timeout: Some(timeout),
        ..HvRun::default()
    }
}

/// The run of a [`CaseKind::Served`] case: its bench domains (`bench-1`, ...), the
/// control domain with the [`Served`] disks (written under `target/bench/`) and device
/// words; under `-icount` or in real time as the case says.
pub fn served_run(
    images: &Images,
    case: &str,
    served: &Served,
    iterations: u64,
    timeout: Duration,
) -> Result<HvRun> {
    let dir = crate::target_dir().join("bench");
    let disks = served
        .disks
        .iter()
        .map(|d| d.write_in(&dir))
        .collect::<Result<Vec<_>>>()?;
    Ok(HvRun {
        hypervisor: images.hypervisor(),
        guests: served_guests(images, case, served, iterations),
        deterministic: served.deterministic,
        timeout: Some(timeout),
        disks,
        devices: served.devices.iter().map(|d| d.to_string()).collect(),
        ..HvRun::default()
    })
}

/// The bench domains of a [`Served`] run with their command lines.
pub fn served_guests(
    images: &Images,
    case: &str,
    served: &Served,
    iterations: u64,
) -> Vec<GuestFile> {
    let extra = |c: String| match served.guest_extra {
        "" => c,
        e => format!("{c} {e}"),
    };
    if served.domains <= 1 {
        let cmdline = extra(format!("case={case} iterations={iterations}"));
        return vec![GuestFile::new(images.guest("bench")).cmdline(cmdline)];
    }
    two_domain_cmdlines(case, iterations)
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mut g = GuestFile::new(images.guest("bench")).cmdline(extra(c));
            g.name = format!("bench-{}", i + 1);
            g
        })
        .collect()
}

/// Runs a [`CaseKind::Served`] case on our hypervisor; returns its BENCH lines and its
/// BENCH_STEPS lines.
pub fn bench_ours_served(
    images: &Images,
    case: &str,
    served: &Served,
    iterations: u64,
    timeout: Duration,
) -> Result<(Vec<BenchLine>, Vec<BenchLine>)> {
    let result = run_hypervisor(&served_run(images, case, served, iterations, timeout)?)?;
    let lines = checked_lines(&result, &format!("the {case} run on our hypervisor"))?;
    let steps = result
        .transcript
        .lines
        .iter()
        .filter_map(|l| parse_steps_line(l))
        .collect();
    Ok((lines, steps))
}

/// The bench lines of a run that ended with every domain powered off; otherwise an
/// error naming `what` with the end of the transcript.
pub fn checked_lines(result: &HvResult, what: &str) -> Result<Vec<BenchLine>> {
    if result.outcome != Outcome::AllPoweredOff {
        return Err(err!(
            "{what} ended badly: {}; last lines:\n{}",
            result.outcome.explain(),
            result.transcript.tail(30)
        ));
    }
    Ok(bench_lines(&result.transcript.lines))
}

/// The dom0 command line of a two-domain case's Xen variant.
pub fn xen_variant_cmdline(case: &str, variant: &XenVariant, iterations: u64) -> String {
    format!(
        "case={case} {} iterations={iterations}",
        variant.guest_extra
    )
}

/// Runs a two-domain case's stand-in ([`XenVariant`]) as dom0 on real Xen 4.17,
/// deterministically.
pub fn bench_xen_variant(
    bench_elf: &Path,
    case: &str,
    variant: &XenVariant,
    iterations: u64,
    timeout: Duration,
) -> Result<Vec<BenchLine>> {
    let captured = run_on_xen_observed(
        bench_elf,
        &xen_variant_cmdline(case, variant, iterations),
        true,
        timeout,
        Some(DONE_MARKER),
        variant.xen_extra,
        |_, _| {},
    )?;
    if !captured.transcript.contains(DONE_MARKER) {
        return Err(err!(
            "the {case} run on Xen did not finish; last lines:\n{}",
            captured.transcript.tail(30)
        ));
    }
    Ok(bench_lines(&captured.transcript.lines))
}

/// Runs the single-domain cases (or only `case`) as dom0 on real Xen 4.17,
/// deterministically.
pub fn bench_xen(
    bench_elf: &Path,
    case: Option<&str>,
    iterations: u64,
    timeout: Duration,
) -> Result<Vec<BenchLine>> {
    let captured = run_on_xen_observed(
        bench_elf,
        &single_cmdline(case, iterations),
        true,
        timeout,
        Some(DONE_MARKER),
        "",
        |_, _| {},
    )?;
    if !captured.transcript.contains(DONE_MARKER) {
        return Err(err!(
            "the bench guest on Xen did not finish; last lines:\n{}",
            captured.transcript.tail(30)
        ));
    }
    Ok(bench_lines(&captured.transcript.lines))
}

/// CPU time (user + system, clock ticks) of a process, from `/proc/<pid>/stat`.
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 if unknown).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Samples QEMU's CPU time at the idle case's start and end lines.
#[derive(Default)]
struct IdleProbe {
    start: Option<(Instant, u64)>,
    end: Option<(Instant, u64)>,
}

impl IdleProbe {
    fn observe(&mut self, pid: u32, line: &str) {
        let sample = || process_cpu_ticks(pid).map(|t| (Instant::now(), t));
        if line.contains(IDLE_START_MARKER) && self.start.is_none() {
            self.start = sample();
        } else if line.contains("BENCH name=idle_host_cpu_percent") && self.end.is_none() {
            self.end = sample();
        }
    }

    /// QEMU's CPU time over the idle period as a percentage of the wall time.
    fn figure(&self, lines: &[BenchLine]) -> Figure {
        if let Figure::Missing(why) = idle_line_status(lines) {
            return Figure::Missing(why);
        }
        let (Some((t0, c0)), Some((t1, c1))) = (self.start, self.end) else {
            return Figure::Missing("could not read /proc/<pid>/stat".into());
        };
        let wall = t1.duration_since(t0).as_secs_f64();
        if wall <= 0.0 {
            return Figure::Missing("no wall time passed".into());
        }
        let cpu = c1.saturating_sub(c0) as f64 / clock_ticks_per_second() as f64;
        Figure::Value(cpu / wall * 100.0)
    }
}

/// `Value(0.0)` if the guest reported an idle period, else why not.
fn idle_line_status(lines: &[BenchLine]) -> Figure {
    match lines.iter().find(|l| l.name == "idle_host_cpu_percent") {
        None => Figure::Missing("no BENCH line".into()),
        Some(l) => match (l.unsupported(), l.get("idle_ns")) {
            (Some(reason), _) => Figure::Missing(format!("unsupported: {reason}")),
            (None, Some(_)) => Figure::Value(0.0),
            (None, None) => Figure::Missing("malformed BENCH line".into()),
        },
    }
}

/// The idle case's cmdline.
pub const IDLE_CMDLINE: &str = "case=idle_host_cpu_percent seconds=2";

/// `idle_host_cpu_percent` on our hypervisor (real time, no icount).
pub fn idle_ours(images: &Images, timeout: Duration) -> Result<Figure> {
    let guest = GuestFile::new(images.guest("bench")).cmdline(IDLE_CMDLINE);
    let mut probe = IdleProbe::default();
    let result = run_hypervisor_observed(
        &HvRun {
            hypervisor: images.hypervisor(),
            guests: vec![guest],
            deterministic: false,
            timeout: Some(timeout),
            ..HvRun::default()
        },
        |pid, line| probe.observe(pid, line),
    )?;
    Ok(probe.figure(&bench_lines(&result.transcript.lines)))
}

/// Xen option of the idle run: right after boot Xen scrubs free memory in its idle loop
/// (about a third of a host CPU under TCG for the 512 MiB machine), which would be
/// measured instead of idling.
pub const XEN_IDLE_EXTRA: &str = "bootscrub=0";

/// `idle_host_cpu_percent` as dom0 on Xen 4.17 (real time, no icount, no boot scrub).
pub fn idle_xen(bench_elf: &Path, timeout: Duration) -> Result<Figure> {
    let mut probe = IdleProbe::default();
    let captured = run_on_xen_observed(
        bench_elf,
        IDLE_CMDLINE,
        false,
        timeout,
        Some(DONE_MARKER),
        XEN_IDLE_EXTRA,
        |pid, line| probe.observe(pid, line),
    )?;
    Ok(probe.figure(&bench_lines(&captured.transcript.lines)))
}

/// Options of `cargo xtask bench`.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// Also run on Xen 4.17.
    pub against_xen: bool,
    /// Iterations of every loop.
    pub iterations: u64,
    /// Hang guard of each QEMU run.
    pub timeout: Duration,
    /// Run only this case (`--case`).
    pub only: Option<&'static Case>,
}

/// The case called `name`.
pub fn case_named(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}

/// Runs every case and returns one metric per case. The default run on our hypervisor
/// must work (it is what the tests check); any other run that fails only turns its
/// figures into `Missing` with the reason, which is also printed to stderr.
pub fn run_bench(images: &Images, opts: &BenchOptions) -> Result<Vec<Metric>> {
    let elf = images.guest("bench");
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| opts.only.is_none_or(|o| o == *c))
        .collect();
    let any_single = cases.iter().any(|c| c.kind == CaseKind::Single);
    let only_name = opts.only.map(|c| c.name);
    let ours_single = if any_single {
        bench_ours(images, only_name, opts.iterations, opts.timeout)?
    } else {
        Vec::new()
    };
    let xen_single = if opts.against_xen && any_single {
        Some(bench_xen(&elf, only_name, opts.iterations, opts.timeout))
    } else {
        None
    };
    let failed = |what: &str, e: &crate::Error| {
        eprintln!("xtask: {what} failed: {e}");
        Figure::Missing(format!("{what} failed"))
    };
    let mut metrics = Vec::new();
    for case in cases {
        let ours = match case.kind {
            CaseKind::Single => Figure::of_case(&ours_single, case.name),
            CaseKind::TwoDomains => {
                match bench_ours_two_domains(images, case.name, opts.iterations, opts.timeout) {
                    Ok(lines) => Figure::of_case(&lines, case.name),
                    Err(e) => failed("the run", &e),
                }
            }
            CaseKind::Idle => {
                idle_ours(images, opts.timeout).unwrap_or_else(|e| failed("the run", &e))
            }
            CaseKind::Served(served) => {
                match bench_ours_served(images, case.name, served, opts.iterations, opts.timeout) {
                    Ok((lines, steps)) => {
                        for s in steps.iter().filter(|s| s.name == case.name) {
                            if let Some(summary) = steps_summary(s) {
                                println!("{:<24} steps per iteration: {summary}", case.name);
                            }
                        }
                        if case.unit == RATE_UNIT {
                            Figure::rate_of_case(&lines, case.name)
                        } else {
                            Figure::of_case(&lines, case.name)
                        }
                    }
                    Err(e) => failed("the run", &e),
                }
            }
        };
        let xen = match (&xen_single, case.kind) {
            (_, CaseKind::Served(_)) => Figure::Missing(
                "not run: needs the control domain's backends; the Xen run has dom0 only, without backends or xenstored".into(),
            ),
            (_, CaseKind::TwoDomains) => match (&case.xen, opts.against_xen) {
                (None, _) => {
                    Figure::Missing("needs a second domain; the Xen run has dom0 only".into())
                }
                (Some(_), false) => Figure::Missing("not run (--against-xen)".into()),
                (Some(v), true) => {
                    match bench_xen_variant(&elf, case.name, v, opts.iterations, opts.timeout) {
                        Ok(lines) => Figure::of_case(&lines, case.name),
                        Err(e) => failed("the Xen run", &e),
                    }
                }
            },
            (None, CaseKind::Idle) if opts.against_xen => {
                idle_xen(&elf, opts.timeout).unwrap_or_else(|e| failed("the Xen run", &e))
            }
            (None, _) => Figure::Missing("not run (--against-xen)".into()),
            (Some(Ok(lines)), CaseKind::Single) => Figure::of_case(lines, case.name),
            (Some(Err(e)), CaseKind::Single) => failed("the Xen run", e),
            (Some(_), CaseKind::Idle) => {
                idle_xen(&elf, opts.timeout).unwrap_or_else(|e| failed("the Xen run", &e))
            }
        };
        metrics.push(Metric {
            name: case.name.into(),
            unit: case.unit.into(),
            ours,
            xen,
        });
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_lines_are_found_with_or_without_prefix() {
        let b = parse_bench_line(
            "[d1 bench] BENCH name=xen_version iterations=1000 total=75000 baseline=4000",
        )
        .unwrap();
        assert_eq!(b.name, "xen_version");
        let m = b.measurement().unwrap();
        assert_eq!(
            m,
            Measurement {
                iterations: 1000,
                total: 75000,
                baseline: 4000
            }
        );
        assert_eq!(m.exact_per_iteration(), Some(71));
        let raw = parse_bench_line(
            "(XEN) BENCH name=evtchn_loopback_upcall iterations=4 total=10 baseline=0",
        )
        .unwrap();
        assert_eq!(raw.name, "evtchn_loopback_upcall");
        assert_eq!(raw.measurement().unwrap().per_iteration(), 2.5);
        assert_eq!(raw.measurement().unwrap().exact_per_iteration(), None);
    }

    #[test]
    fn unsupported_and_malformed_lines() {
        let u = parse_bench_line("[d1 bench-1] BENCH name=sched_yield_2dom unsupported=ENOSYS")
            .unwrap();
        assert_eq!(u.unsupported(), Some("ENOSYS"));
        assert_eq!(u.measurement(), None);
        assert_eq!(
            Figure::of_case(&[u], "sched_yield_2dom"),
            Figure::Missing("unsupported: ENOSYS".into())
        );
        let bad =
            parse_bench_line("BENCH name=xen_version iterations=x total=1 baseline=1").unwrap();
        assert_eq!(bad.measurement(), None);
        assert_eq!(
            Figure::of_case(&[bad], "xen_version"),
            Figure::Missing("malformed BENCH line".into())
        );
        assert!(
            parse_bench_line("BENCH name=xen_version total=1 baseline=1")
                .unwrap()
                .measurement()
                .is_none()
        );
        assert!(parse_bench_line("BENCH name=xen_version junk").is_none());
        assert!(parse_bench_line("BENCH name= iterations=1").is_none());
        assert!(parse_bench_line("BENCH done").is_none());
        assert!(parse_bench_line("BENCH_IDLE start").is_none());
        assert!(parse_bench_line("hello").is_none());
        assert_eq!(
            Figure::of_case(&[], "xen_version"),
            Figure::Missing("no BENCH line".into())
        );
    }

    #[test]
    fn transcripts_yield_every_case_in_order() {
        let lines: Vec<String> = [
            "[d1 bench] booting",
            "[d1 bench] BENCH name=xen_version iterations=10 total=800 baseline=10",
            "[d1 bench] BENCH name=evtchn_loopback_upcall unsupported=ENOSYS",
            "[d1 bench] BENCH done",
        ]
        .map(String::from)
        .to_vec();
        let parsed = bench_lines(&lines);
        assert_eq!(parsed.len(), 2);
        assert_eq!(Figure::of_case(&parsed, "xen_version"), Figure::Value(79.0));
        assert!(
            Figure::of_case(&parsed, "evtchn_loopback_upcall")
                .value()
                .is_none()
        );
    }

    fn metric(ours: Figure, xen: Figure) -> Metric {
        Metric {
            name: "xen_version".into(),
            unit: "instructions".into(),
            ours,
            xen,
        }
    }

    #[test]
    fn json_has_one_entry_per_metric_with_nulls() {
        let metrics = [
            metric(Figure::Value(100.0), Figure::Value(200.0)),
            Metric {
                name: "sched_yield_2dom".into(),
                unit: "instructions".into(),
                ours: Figure::Missing("unsupported: ENOSYS".into()),
                xen: Figure::Missing("needs a second domain".into()),
            },
            Metric {
                name: "idle_host_cpu_percent".into(),
                unit: "percent".into(),
                ours: Figure::Value(3.25),
                xen: Figure::Missing("not run".into()),
            },
        ];
        let j = to_json(&metrics);
        assert_eq!(
            j,
            "{\n  \"metrics\": [\n    {\"name\": \"xen_version\", \"unit\": \"instructions\", \"ours\": 100.00, \"xen\": 200.00, \"ratio\": 0.500},\n    {\"name\": \"sched_yield_2dom\", \"unit\": \"instructions\", \"ours\": null, \"xen\": null, \"ratio\": null},\n    {\"name\": \"idle_host_cpu_percent\", \"unit\": \"percent\", \"ours\": 3.25, \"xen\": null, \"ratio\": null}\n  ]\n}\n"
        );
        assert_eq!(to_json(&[]), "{\n  \"metrics\": [\n  ]\n}\n");
    }

    #[test]
    fn ratio_needs_both_figures_and_a_nonzero_xen() {
        assert_eq!(
            metric(Figure::Value(1.0), Figure::Value(4.0)).ratio(),
            Some(0.25)
        );
        assert_eq!(metric(Figure::Value(1.0), Figure::Value(0.0)).ratio(), None);
        assert_eq!(
            metric(Figure::Missing("x".into()), Figure::Value(1.0)).ratio(),
            None
        );
        let line = metric(Figure::Value(79.0), Figure::Missing("not run".into())).console_line();
        assert!(line.contains("ours 79.00 instructions"), "{line}");
        assert!(line.contains("n/a (not run)"), "{line}");
        assert!(line.ends_with("ratio ours/Xen n/a"), "{line}");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_escape("a\"b\\c\nd"), "a\\\"b\\\\cd");
    }

    #[test]
    fn proc_stat_cpu_ticks_skip_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let stat = "1234 (qemu (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("1 (a) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parens"), None);
        // Our own process has a readable stat.
        assert!(process_cpu_ticks(std::process::id()).is_some());
    }

    #[test]
    fn cases_are_found_by_name() {
        assert_eq!(
            case_named("sched_yield_2dom").unwrap().kind,
            CaseKind::TwoDomains
        );
        assert_eq!(case_named("idle_host_cpu_percent").unwrap().unit, "percent");
        assert!(case_named("nope").is_none());
    }

    #[test]
    fn two_domain_runs_name_roles_and_peers() {
        let [a, b] = two_domain_cmdlines("evtchn_ping_pong_2dom", 7);
        assert_eq!(a, "case=evtchn_ping_pong_2dom role=1 peer=2 iterations=7");
        assert_eq!(b, "case=evtchn_ping_pong_2dom role=2 peer=1 iterations=7");
    }

    #[test]
    fn yield_2dom_runs_on_xen_as_two_vcpus_of_dom0() {
        let case = case_named("sched_yield_2dom").unwrap();
        let v = case.xen.unwrap();
        assert_eq!(v.xen_extra, "dom0_max_vcpus=2");
        assert_eq!(
            xen_variant_cmdline(case.name, &v, 9),
            "case=sched_yield_2dom vcpus=2 iterations=9"
        );
        // Only two-domain cases have a Xen stand-in; the rest run on Xen as they are.
        for c in CASES {
            assert!(
                c.xen.is_none() || c.kind == CaseKind::TwoDomains,
                "{}",
                c.name
            );
        }
        assert_eq!(
            case_named("sched_yield_1dom").unwrap().kind,
            CaseKind::Single
        );
    }

    #[test]
    fn rates_come_from_bytes_and_nanoseconds() {
        let line = |s: &str| parse_bench_line(s).unwrap();
        let ok = [line(
            "[d1 bench] BENCH name=blk_read_throughput bytes=1000000 ns=2000000",
        )];
        assert_eq!(
            Figure::rate_of_case(&ok, "blk_read_throughput"),
            Figure::Value(500.0)
        );
        for bad in [
            "BENCH name=blk_read_throughput bytes=1 ns=0",
            "BENCH name=blk_read_throughput bytes=x ns=1",
            "BENCH name=blk_read_throughput ns=1",
        ] {
            assert_eq!(
                Figure::rate_of_case(&[line(bad)], "blk_read_throughput"),
                Figure::Missing("malformed BENCH line".into()),
                "{bad}"
            );
        }
        assert_eq!(
            Figure::rate_of_case(
                &[line("BENCH name=blk_read_throughput unsupported=no_vbd")],
                "blk_read_throughput"
            ),
            Figure::Missing("unsupported: no_vbd".into())
        );
        assert!(
            Figure::rate_of_case(&[], "blk_read_throughput")
                .value()
                .is_none()
        );
    }

    #[test]
    fn step_lines_are_apart_from_bench_lines() {
        let text = "[d1 bench] BENCH_STEPS name=blk_read_4k iterations=4 submit=40 notify=20 wait=400 complete=8";
        // Not a BENCH line: the case's figure comes from its own line.
        assert!(parse_bench_line(text).is_none());
        let steps = parse_steps_line(text).unwrap();
        assert_eq!(steps.name, "blk_read_4k");
        assert_eq!(
            steps_summary(&steps).unwrap(),
            "submit 10.00, notify 5.00, wait 100.00, complete 2.00"
        );
        let zero =
            parse_steps_line("BENCH_STEPS name=x iterations=0 submit=1 notify=1 wait=1 complete=1")
                .unwrap();
        assert!(steps_summary(&zero).is_none());
        assert!(parse_steps_line("BENCH name=blk_read_4k iterations=1").is_none());
    }

    #[test]
    fn served_cases_name_their_disks_devices_and_determinism() {
        for name in ["blk_read_4k", "blk_write_4k", "blk_flush"] {
            let c = case_named(name).unwrap();
            assert_eq!(c.kind, CaseKind::Served(&BLK_VBD), "{name}");
            assert!(c.deterministic() && c.xen.is_none(), "{name}");
        }
        let t = case_named("blk_read_throughput").unwrap();
        assert_eq!((t.unit, t.deterministic()), ("MB/s", false));
        assert!(!case_named("idle_host_cpu_percent").unwrap().deterministic());
        assert!(case_named("sched_yield_2dom").unwrap().deterministic());
        // The vbd names the disk the run hands to the control domain.
        assert_eq!(BLK_VBD.devices, ["vbd.1=bench"]);
        assert_eq!(BLK_VBD.disks[0].name, "bench");
        assert_eq!(BLK_VBD_REALTIME.disks, BLK_VBD.disks);
    }

    #[test]
    fn bench_disks_are_deterministic_and_written_once() {
        let d = BenchDisk {
            name: "t",
            bytes: 4096 + 12,
            seed: 7,
        };
        let a = d.contents();
        assert_eq!(a.len(), 4108);
        assert_eq!(a, d.contents());
        assert_ne!(
            a,
            BenchDisk { seed: 8, ..d }.contents(),
            "the seed picks the bytes"
        );
        let dir = std::env::temp_dir().join(format!("xtask-benchdisk-{}", std::process::id()));
        let f = d.write_in(&dir).unwrap();
        assert_eq!(f.name, "t");
        assert_eq!(std::fs::read(&f.path).unwrap(), a);
        // Again: the same file, still right.
        assert_eq!(d.write_in(&dir).unwrap(), f);
        assert_eq!(std::fs::read(&f.path).unwrap(), a);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn idle_figure_needs_the_guest_line_and_both_samples() {
        let ok =
            [
                parse_bench_line("BENCH name=idle_host_cpu_percent idle_ns=2000000000 wakeups=1")
                    .unwrap(),
            ];
        let t0 = Instant::now();
        let probe = IdleProbe {
            start: Some((t0, 10)),
            end: Some((t0 + Duration::from_secs(2), 12)),
        };
        let ticks = clock_ticks_per_second() as f64;
        let v = probe.figure(&ok).value().unwrap();
        assert!((v - 2.0 / ticks / 2.0 * 100.0).abs() < 1e-9, "{v}");
        assert!(IdleProbe::default().figure(&ok).value().is_none());
        let unsupported =
            [parse_bench_line("BENCH name=idle_host_cpu_percent unsupported=ENOSYS").unwrap()];
        assert_eq!(
            probe.figure(&unsupported),
            Figure::Missing("unsupported: ENOSYS".into())
        );
    }
}
