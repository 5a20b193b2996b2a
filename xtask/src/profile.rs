//! `cargo xtask profile --case NAME`: where the instructions of one benchmark case go,
//! per function of the hypervisor and of the bench guest.
//!
//! The case runs on our hypervisor under the deterministic QEMU options plus
//! `-d exec,nochain -singlestep -dfilter <text of both images> -D <fifo>`: QEMU 7.2 then
//! logs one `Trace <cpu>: <host> [<cs_base>/<pc>/<flags>/<cflags>] ...` line per
//! translation block it enters, and with `-singlestep` every block is one instruction.
//! A block that QEMU enters but leaves before its first instruction (icount budget
//! exhausted, interrupt pending) is followed by `Stopped execution of TB chain before
//! <host> [<pc>]` and entered again later, so such a line takes one count back.
//!
//! The log is read from a FIFO while QEMU writes it (a run logs tens of millions of
//! lines, mostly the boot): only a count per PC is kept. The case runs twice, with N and
//! 2N iterations; per function the difference of the two counts divided by N is its cost
//! per iteration, and the boot, domain building and case setup cancel out.
//!
//! The per-iteration sum covers both timed loops of the bench guest: the measured one
//! (the empty loop's body plus the operation) and the empty baseline loop. The `BENCH`
//! lines of the same two runs give the empty loop's cost, so the total minus twice that
//! is checked against `cargo xtask bench`'s figure.

use crate::bench::{
    BenchLine, Case, CaseKind, checked_lines, served_run, single_run, two_domain_run,
};
use crate::images::Images;
use crate::qemu::run_hypervisor;
use crate::{Result, err};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Which image a function belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The hypervisor ELF.
    Hypervisor,
    /// The bench guest ELF (every bench domain runs the same one).
    Guest,
}

impl Side {
    /// The two-letter mark in the table.
    pub fn mark(self) -> &'static str {
        match self {
            Side::Hypervisor => "hv",
            Side::Guest => "guest",
        }
    }
}

/// One function symbol: `[start, start + size)`; a size of 0 (an assembly label) covers
/// everything up to the next symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// First address.
    pub start: u64,
    /// Length in bytes (0 = unknown).
    pub size: u64,
    /// Demangled name, without the hash.
    pub name: String,
}

/// The function symbols and executable ranges of one image, sorted for binary search.
#[derive(Clone, Debug)]
pub struct SymbolTable {
    /// Which image.
    pub side: Side,
    symbols: Vec<Symbol>,
    /// Executable sections, `[start, end)`.
    pub text: Vec<(u64, u64)>,
}

/// Name of the bucket for a PC inside an image's text but outside every symbol.
pub const UNKNOWN: &str = "?";

impl SymbolTable {
    /// A table from symbols in any order. At one address the sized symbol wins.
    pub fn new(side: Side, mut symbols: Vec<Symbol>, text: Vec<(u64, u64)>) -> Self {
        symbols.sort_by(|a, b| a.start.cmp(&b.start).then(b.size.cmp(&a.size)));
        symbols.dedup_by_key(|s| s.start);
        SymbolTable {
            side,
            symbols,
            text,
        }
    }

    /// The function symbols (text or untyped symbols inside an executable section) of an
    /// ELF image, demangled.
    pub fn from_elf(side: Side, elf: &[u8]) -> Result<Self> {
        let file = object::File::parse(elf).map_err(|e| err!("not an ELF image: {e}"))?;
        let text: Vec<(u64, u64)> = file
            .sections()
            .filter(|s| s.kind() == SectionKind::Text && s.size() > 0)
            .map(|s| (s.address(), s.address().saturating_add(s.size())))
            .collect();
        let in_text = |a: u64| text.iter().any(|&(lo, hi)| (lo..hi).contains(&a));
        let symbols = file
            .symbols()
            .filter(|s| matches!(s.kind(), SymbolKind::Text | SymbolKind::Unknown))
            .filter(|s| s.is_definition() || s.kind() == SymbolKind::Unknown)
            .filter(|s| in_text(s.address()))
            .filter_map(|s| {
                let name = s.name().ok()?;
                (!name.is_empty()).then(|| Symbol {
                    start: s.address(),
                    size: s.size(),
                    name: demangle(name),
                })
            })
            .collect();
        Ok(Self::new(side, symbols, text))
    }

    /// Reads and parses an ELF file.
    pub fn from_path(side: Side, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| err!("cannot read {}: {e}", path.display()))?;
        Self::from_elf(side, &bytes).map_err(|e| err!("{}: {e}", path.display()))
    }

    /// Whether `pc` is in one of the image's executable sections.
    pub fn covers(&self, pc: u64) -> bool {
        self.text.iter().any(|&(lo, hi)| (lo..hi).contains(&pc))
    }

    /// The function containing `pc`: [`UNKNOWN`] inside the text but outside every
    /// symbol, `None` outside the text.
    pub fn lookup(&self, pc: u64) -> Option<&str> {
        if !self.covers(pc) {
            return None;
        }
        let i = self.symbols.partition_point(|s| s.start <= pc);
        let Some(sym) = i.checked_sub(1).map(|i| &self.symbols[i]) else {
            return Some(UNKNOWN);
        };
        let inside = sym.size == 0 || pc - sym.start < sym.size;
        Some(if inside { &sym.name } else { UNKNOWN })
    }
}

/// Rust names (legacy and v0 mangling) without their hash; other names unchanged.
pub fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// What one line of QEMU's `-d exec` log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// QEMU entered the block at this guest PC.
    Exec(u64),
    /// The block at this PC was left before its first instruction (entered again later).
    Stopped(u64),
}

/// Parses `Trace 0: 0x7f.. [00000000/ffff830000101000/00000000/ff000000] sym` or
/// `Stopped execution of TB chain before 0x7f.. [ffff830000101000] sym`; any other line
/// is `None`.
pub fn parse_trace_line(line: &[u8]) -> Option<TraceEvent> {
    if line.starts_with(b"Trace ") {
        let fields = after_bracket(line)?;
        let slash = fields.iter().position(|&b| b == b'/')?;
        let pc = &fields[slash + 1..];
        let end = pc.iter().position(|&b| b == b'/')?;
        parse_hex(&pc[..end]).map(TraceEvent::Exec)
    } else if line.starts_with(b"Stopped execution") {
        let pc = after_bracket(line)?;
        let end = pc.iter().position(|&b| b == b']')?;
        parse_hex(&pc[..end]).map(TraceEvent::Stopped)
    } else {
        None
    }
}

/// What follows the first `[` of a line.
fn after_bracket(line: &[u8]) -> Option<&[u8]> {
    let open = line.iter().position(|&b| b == b'[')?;
    Some(&line[open + 1..])
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        Some(acc << 4 | u64::from(d))
    })
}

/// Executions per guest PC.
pub type PcCounts = HashMap<u64, u64>;

/// Counts the executed instructions of a `-d exec` log, streaming.
pub fn count_trace(mut log: impl BufRead) -> std::io::Result<PcCounts> {
    let mut counts = PcCounts::new();
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if log.read_until(b'\n', &mut line)? == 0 {
            return Ok(counts);
        }
        match parse_trace_line(&line) {
            Some(TraceEvent::Exec(pc)) => *counts.entry(pc).or_insert(0) += 1,
            Some(TraceEvent::Stopped(pc)) => {
                if let Some(c) = counts.get_mut(&pc) {
                    *c = c.saturating_sub(1);
                }
            }
            None => {}
        }
    }
}

/// A function: its image and name.
pub type FunctionKey = (Side, String);

/// Sums PC counts per containing function; PCs outside every table go to
/// `(Hypervisor, "outside both images")` (the `-dfilter` should leave none).
pub fn per_function(counts: &PcCounts, tables: &[SymbolTable]) -> BTreeMap<FunctionKey, u64> {
    let mut out = BTreeMap::new();
    for (&pc, &n) in counts {
        let key = tables
            .iter()
            .find_map(|t| t.lookup(pc).map(|name| (t.side, name.to_string())))
            .unwrap_or((Side::Hypervisor, "outside both images".to_string()));
        *out.entry(key).or_insert(0) += n;
    }
    out
}

/// One function's cost per iteration.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Image.
    pub side: Side,
    /// Function name.
    pub name: String,
    /// (count in the 2N run − count in the N run) / N.
    pub per_iteration: f64,
}

/// Per-iteration costs from the N run (`small`) and the 2N run (`large`): functions
/// whose counts differ, most expensive first (ties by name).
pub fn per_iteration(
    small: &BTreeMap<FunctionKey, u64>,
    large: &BTreeMap<FunctionKey, u64>,
    n: u64,
) -> Vec<Row> {
    let mut keys: Vec<&FunctionKey> = small.keys().chain(large.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut rows: Vec<Row> = keys
        .into_iter()
        .filter_map(|key| {
            let a = i128::from(small.get(key).copied().unwrap_or(0));
            let b = i128::from(large.get(key).copied().unwrap_or(0));
            (a != b && n != 0).then(|| Row {
                side: key.0,
                name: key.1.clone(),
                per_iteration: (b - a) as f64 / n as f64,
            })
        })
        .collect();
    rows.sort_by(|x, y| {
        y.per_iteration
            .total_cmp(&x.per_iteration)
            .then_with(|| x.name.cmp(&y.name))
    });
    rows
}

/// The profile of one case.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseProfile {
    /// The case.
    pub case: String,
    /// N (the second run has 2N).
    pub iterations: u64,
    /// Every function whose count changed, most expensive first.
    pub rows: Vec<Row>,
    /// The guest's empty baseline loop per iteration, from the two runs' BENCH lines.
    pub baseline_per_iteration: Option<f64>,
    /// `cargo xtask bench`'s figure, (total − baseline) / N, from the same two runs.
    pub bench_per_iteration: Option<f64>,
}

impl CaseProfile {
    /// The sum of every row: both timed loops, per iteration.
    pub fn total(&self) -> f64 {
        self.rows.iter().map(|r| r.per_iteration).sum()
    }

    /// The summary lines and the first `top` rows (all when `None`).
    pub fn render(&self, top: Option<usize>) -> String {
        let total = self.total();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "profile of {}: runs of N={} and 2N={} iterations, instructions per iteration",
            self.case,
            self.iterations,
            self.iterations.saturating_mul(2)
        );
        let _ = writeln!(out, "total (both timed loops): {total:.2}");
        if let Some(b) = self.baseline_per_iteration {
            // The empty loop runs alone and inside the measured loop.
            let _ = writeln!(
                out,
                "the operation alone (total minus twice the guest's empty loop, {b:.2}): {:.2}",
                total - 2.0 * b
            );
        }
        if let Some(f) = self.bench_per_iteration {
            let _ = writeln!(
                out,
                "cargo xtask bench's figure, (total - baseline) / N of the same runs: {f:.2}"
            );
        }
        if let (Some(b), Some(f)) = (self.baseline_per_iteration, self.bench_per_iteration) {
            let missing = f - (total - 2.0 * b);
            if missing.abs() > 0.5 {
                let _ = writeln!(
                    out,
                    "WARNING: {missing:.2} instructions per iteration are not in the profile \
                     (code outside both images, or a BOOT_ONLY function: try --with-boot)"
                );
            }
        }
        let _ = writeln!(
            out,
            "{:>10} {:>7}  {:<5}  function",
            "per iter", "%", "image"
        );
        let shown = top.unwrap_or(self.rows.len()).min(self.rows.len());
        for r in &self.rows[..shown] {
            let pct = if total != 0.0 {
                r.per_iteration / total * 100.0
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "{:>10.2} {:>6.1}%  {:<5}  {}",
                r.per_iteration,
                pct,
                r.side.mark(),
                r.name
            );
        }
        if shown < self.rows.len() {
            let _ = writeln!(out, "... {} more functions", self.rows.len() - shown);
        }
        out
    }
}

/// The per-iteration (total − baseline) and baseline of a case from the BENCH lines of
/// the N and 2N runs; `None` when either line is missing.
pub fn bench_deltas(
    case: &str,
    small: &[BenchLine],
    large: &[BenchLine],
    n: u64,
) -> Option<(f64, f64)> {
    let m = |lines: &[BenchLine]| lines.iter().find(|l| l.name == case)?.measurement();
    let (a, b) = (m(small)?, m(large)?);
    if n == 0 {
        return None;
    }
    let d = |x: u64, y: u64| (i128::from(y) - i128::from(x)) as f64 / n as f64;
    let baseline = d(a.baseline, b.baseline);
    Some((d(a.total, b.total) - baseline, baseline))
}

/// Hypervisor functions that run only at boot or when a domain ends, left out of the log
/// by default (`--with-boot` keeps them): they execute about 75 million of a run's 85
/// million logged instructions (frame allocator setup and the domain builder's frame
/// allocations, the LAPIC timer and TSC calibration loops, domain teardown), and the log
/// costs a `write` per line. Matched as suffixes of demangled names. Should one of them
/// run per iteration after all, the profile's total falls short of the bench figure of
/// the same runs, and [`CaseProfile::render`] says so.
pub const BOOT_ONLY: &[&str] = &[
    "::frames::Frames::alloc",
    "::frames::Frames::new",
    "::frames::Frames::mark_free",
    "::apic::Lapic::init",
    "::tsc::calibrate",
    ">::end_domain",
];

impl SymbolTable {
    /// `[start, end)` of every sized symbol whose name ends with one of `suffixes`.
    pub fn ranges_of(&self, suffixes: &[&str]) -> Vec<(u64, u64)> {
        self.symbols
            .iter()
            .filter(|s| s.size > 0 && suffixes.iter().any(|x| s.name.ends_with(x)))
            .map(|s| (s.start, s.start.saturating_add(s.size)))
            .collect()
    }
}

/// `-dfilter` ranges, `lo..hi` inclusive: every executable section of the tables
/// without the `excluded` `[start, end)` ranges.
pub fn dfilter(tables: &[SymbolTable], excluded: &[(u64, u64)]) -> String {
    let mut holes = excluded.to_vec();
    holes.sort_unstable();
    let mut ranges = Vec::new();
    for &(lo, hi) in tables.iter().flat_map(|t| &t.text) {
        let mut from = lo;
        for &(a, b) in &holes {
            if b <= from || a >= hi {
                continue;
            }
            if a > from {
                ranges.push((from, a));
            }
            from = from.max(b);
        }
        if from < hi {
            ranges.push((from, hi));
        }
    }
    let ranges: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| format!("{lo:#x}..{:#x}", hi - 1))
        .collect();
    ranges.join(",")
}

/// Hang guard of one traced run: single-stepping with a log is some 20 times slower
/// than a plain run.
const TRACED_TIMEOUT: Duration = Duration::from_secs(900);

/// Runs `case` with `iterations` under the exec log and counts instructions per
/// function; returns the counts and the run's BENCH lines.
fn traced_run(
    images: &Images,
    case: &Case,
    iterations: u64,
    tables: &[SymbolTable],
    excluded: &[(u64, u64)],
) -> Result<(BTreeMap<FunctionKey, u64>, Vec<BenchLine>)> {
    let mut run = match case.kind {
        CaseKind::Single => single_run(images, Some(case.name), iterations, TRACED_TIMEOUT),
        CaseKind::TwoDomains => two_domain_run(images, case.name, iterations, TRACED_TIMEOUT),
        CaseKind::Idle => {
            return Err(err!(
                "{} runs in real time and cannot be profiled",
                case.name
            ));
        }
        CaseKind::Served(served) => {
            served_run(images, case.name, served, iterations, TRACED_TIMEOUT)?
        }
    };
    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| err!("cannot create {}: {e}", dir.display()))?;
    let fifo = Fifo::create(dir.join(format!("exec-{}.fifo", std::process::id())))?;
    run.extra_args = [
        "-d",
        "exec,nochain",
        "-singlestep",
        "-dfilter",
        &dfilter(tables, excluded),
        "-D",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([fifo.path.to_string_lossy().into_owned()])
    .collect();

    // QEMU's open of the log blocks until this reader has opened its end.
    let opened = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, opened) = (fifo.path.clone(), Arc::clone(&opened));
        std::thread::spawn(move || -> std::io::Result<PcCounts> {
            let file = std::fs::File::open(&path)?;
            opened.store(true, Ordering::SeqCst);
            count_trace(BufReader::with_capacity(1 << 20, file))
        })
    };
    let started = std::time::Instant::now();
    let result = run_hypervisor(&run);
    if !opened.load(Ordering::SeqCst) {
        // QEMU never opened the log (it failed early): release the blocked reader.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo.path);
    }
    let counts = reader
        .join()
        .map_err(|_| err!("the exec log reader panicked"))?
        .map_err(|e| err!("reading QEMU's exec log: {e}"))?;
    let result = result?;
    let lines = checked_lines(
        &result,
        &format!("the traced {} run ({iterations} iterations)", case.name),
    )?;
    if counts.is_empty() {
        return Err(err!(
            "QEMU logged no instructions; stderr: {}",
            result.stderr.trim()
        ));
    }
    eprintln!(
        "xtask: {} iterations: {} instructions logged in {:.1?}",
        iterations,
        counts.values().sum::<u64>(),
        started.elapsed()
    );
    Ok((per_function(&counts, tables), lines))
}

/// A FIFO made with `mkfifo`, removed on drop.
struct Fifo {
    path: PathBuf,
}

impl Fifo {
    fn create(path: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_file(&path);
        crate::run_checked(Command::new("mkfifo").arg(&path))?;
        Ok(Fifo { path })
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Name of the one guest function of a [`CaseKind::Served`] profile.
pub const LUMPED_GUESTS: &str = "(all guest code: the bench domain and the control domain)";

/// One guest table over the text of several guest images as the single function
/// [`LUMPED_GUESTS`]: the control domain's kernel and the bench guest are linked at the
/// same addresses, so a PC does not tell which of them ran it. The hypervisor's
/// functions stay exact.
pub fn lumped_guests(images: &[SymbolTable]) -> SymbolTable {
    let mut ranges: Vec<(u64, u64)> = images.iter().flat_map(|t| t.text.iter().copied()).collect();
    ranges.sort_unstable();
    // Overlapping sections merged, so `-dfilter` names each address once.
    let mut text: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in ranges {
        match text.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => text.push((lo, hi)),
        }
    }
    let lo = text.first().map_or(0, |r| r.0);
    let hi = text.last().map_or(0, |r| r.1);
    let symbol = Symbol {
        start: lo,
        size: hi.saturating_sub(lo),
        name: LUMPED_GUESTS.to_string(),
    };
    SymbolTable::new(Side::Guest, vec![symbol], text)
}

/// Profiles `case` with N = `iterations` (runs of N and 2N; [`BOOT_ONLY`] left out of the
/// log unless `with_boot`), writes the whole table to
/// `target/bench/profile-<case>.txt` and returns the profile and that path.
pub fn profile_case(
    images: &Images,
    case: &Case,
    iterations: u64,
    with_boot: bool,
) -> Result<(CaseProfile, PathBuf)> {
    if iterations == 0 {
        return Err(err!("--iterations must be at least 1"));
    }
    let hv = SymbolTable::from_path(Side::Hypervisor, &images.hypervisor())?;
    let bench = SymbolTable::from_path(Side::Guest, &images.guest("bench"))?;
    let tables = match case.kind {
        CaseKind::Served(_) => [
            hv,
            lumped_guests(&[
                bench,
                SymbolTable::from_path(Side::Guest, &images.control_domain())?,
            ]),
        ],
        _ => [hv, bench],
    };
    let excluded = if with_boot {
        Vec::new()
    } else {
        tables[0].ranges_of(BOOT_ONLY)
    };
    let (small, small_lines) = traced_run(images, case, iterations, &tables, &excluded)?;
    let (large, large_lines) = traced_run(images, case, iterations * 2, &tables, &excluded)?;
    let deltas = bench_deltas(case.name, &small_lines, &large_lines, iterations);
    let profile = CaseProfile {
        case: case.name.to_string(),
        iterations,
        rows: per_iteration(&small, &large, iterations),
        baseline_per_iteration: deltas.map(|d| d.1),
        bench_per_iteration: deltas.map(|d| d.0),
    };
    let path = crate::target_dir()
        .join("bench")
        .join(format!("profile-{}.txt", case.name));
    std::fs::write(&path, profile.render(None))
        .map_err(|e| err!("cannot write {}: {e}", path.display()))?;
    Ok((profile, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lumped_guests_cover_every_image_as_one_function() {
        let t = |text: Vec<(u64, u64)>| SymbolTable::new(Side::Guest, Vec::new(), text);
        let l = lumped_guests(&[
            t(vec![(0x1000, 0x3000)]),
            t(vec![(0x2000, 0x5000), (0x8000, 0x9000)]),
        ]);
        assert_eq!(l.text, [(0x1000, 0x5000), (0x8000, 0x9000)]);
        assert_eq!(l.lookup(0x1000), Some(LUMPED_GUESTS));
        assert_eq!(l.lookup(0x8fff), Some(LUMPED_GUESTS));
        assert_eq!(l.lookup(0x6000), None);
        assert_eq!(l.lookup(0x9000), None);
    }

    #[test]
    fn trace_lines_give_the_pc_and_stops_are_recognised() {
        assert_eq!(
            parse_trace_line(
                b"Trace 0: 0x7f3a40001100 [00000000/ffff830000101a2c/00000000/ff000001] \n"
            ),
            Some(TraceEvent::Exec(0xffff_8300_0010_1a2c))
        );
        assert_eq!(
            parse_trace_line(b"Trace 0: 0x7f3a40001100 [0/ffffffff80002158/00c0b0/ff000001] sym"),
            Some(TraceEvent::Exec(0xffff_ffff_8000_2158))
        );
        assert_eq!(
            parse_trace_line(
                b"Stopped execution of TB chain before 0x7f3a40001100 [ffff830000101a2c] \n"
            ),
            Some(TraceEvent::Stopped(0xffff_8300_0010_1a2c))
        );
        for junk in [
            &b""[..],
            b"\n",
            b"Trace 0: 0x7f [00000000]\n",
            b"Trace 0: 0x7f [0/zz/0/0]\n",
            b"Trace 0: 0x7f [0//0/0]\n",
            b"Trace 0: 0x7f [0/11112222333344445/0/0]\n",
            b"Stopped execution of TB chain before 0x7f [12\n",
            b"IN: \n",
            b"Linking TBs 0x1 [ffff830000101a2c] index 0\n",
        ] {
            assert_eq!(parse_trace_line(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn counting_takes_a_stopped_block_back() {
        let log = "Trace 0: 0x1 [0/10/0/0] \n\
                   Trace 0: 0x2 [0/20/0/0] \n\
                   Stopped execution of TB chain before 0x2 [20] \n\
                   some other line\n\
                   Trace 0: 0x2 [0/20/0/0] \n\
                   Trace 0: 0x1 [0/10/0/0] \n\
                   Stopped execution of TB chain before 0x9 [90] \n\
                   Trace 0: 0x1 [0/10/0/0]";
        let counts = count_trace(log.as_bytes()).unwrap();
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[&0x10], 3);
        assert_eq!(counts[&0x20], 1);
    }

    fn sym(start: u64, size: u64, name: &str) -> Symbol {
        Symbol {
            start,
            size,
            name: name.into(),
        }
    }

    fn synthetic() -> SymbolTable {
        SymbolTable::new(
            Side::Hypervisor,
            vec![
                sym(0x1100, 0x10, "b"),
                sym(0x1000, 0x40, "a"),
                sym(0x1200, 0, "asm_label"),
                sym(0x1100, 0, "alias_of_b"),
                sym(0x1300, 0x20, "c"),
            ],
            vec![(0x1000, 0x1400)],
        )
    }

    #[test]
    fn symbolizer_finds_the_containing_function() {
        let t = synthetic();
        assert_eq!(t.lookup(0x1000), Some("a"));
        assert_eq!(t.lookup(0x103f), Some("a"));
        assert_eq!(t.lookup(0x1040), Some(UNKNOWN)); // past a's end
        assert_eq!(t.lookup(0x1100), Some("b")); // the sized symbol wins
        assert_eq!(t.lookup(0x110f), Some("b"));
        assert_eq!(t.lookup(0x1110), Some(UNKNOWN));
        assert_eq!(t.lookup(0x1200), Some("asm_label"));
        assert_eq!(t.lookup(0x12ff), Some("asm_label")); // sizeless: up to the next
        assert_eq!(t.lookup(0x1310), Some("c"));
        assert_eq!(t.lookup(0x1320), Some(UNKNOWN));
        assert_eq!(t.lookup(0x0fff), None); // outside the text
        assert_eq!(t.lookup(0x1400), None);
        let before_any = SymbolTable::new(Side::Guest, vec![sym(0x20, 4, "x")], vec![(0x10, 0x30)]);
        assert_eq!(before_any.lookup(0x10), Some(UNKNOWN));
    }

    #[test]
    fn functions_sum_their_pcs_and_sides_stay_apart() {
        let hv = synthetic();
        let guest = SymbolTable::new(
            Side::Guest,
            vec![sym(0x9000, 0x100, "a")],
            vec![(0x9000, 0x9100)],
        );
        let counts: PcCounts = [(0x1000, 2), (0x1010, 3), (0x9004, 7), (0x5, 1)].into();
        let f = per_function(&counts, &[hv, guest]);
        assert_eq!(f[&(Side::Hypervisor, "a".into())], 5);
        assert_eq!(f[&(Side::Guest, "a".into())], 7);
        assert_eq!(f[&(Side::Hypervisor, "outside both images".into())], 1);
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn demangling_drops_hashes() {
        assert_eq!(
            demangle("_ZN10hypervisor4arch6x86_645entry11enter_guest17h64796a61599628cbE"),
            "hypervisor::arch::x86_64::entry::enter_guest"
        );
        assert_eq!(demangle("memcpy"), "memcpy");
    }

    #[test]
    fn the_n_run_is_subtracted_from_the_2n_run() {
        let key = |s: Side, n: &str| (s, n.to_string());
        // Boot: 1000 in f, 50 in g; per iteration 7 in f, 3 in h (guest), 0 in g.
        let n = 10;
        let small: BTreeMap<_, _> = [
            (key(Side::Hypervisor, "f"), 1000 + 7 * n),
            (key(Side::Hypervisor, "g"), 50),
            (key(Side::Guest, "h"), 3 * n),
        ]
        .into();
        let large: BTreeMap<_, _> = [
            (key(Side::Hypervisor, "f"), 1000 + 7 * 2 * n),
            (key(Side::Hypervisor, "g"), 50),
            (key(Side::Guest, "h"), 3 * 2 * n),
            (key(Side::Guest, "only_large"), 5),
        ]
        .into();
        let rows = per_iteration(&small, &large, n);
        let got: Vec<(Side, &str, f64)> = rows
            .iter()
            .map(|r| (r.side, r.name.as_str(), r.per_iteration))
            .collect();
        assert_eq!(
            got,
            [
                (Side::Hypervisor, "f", 7.0),
                (Side::Guest, "h", 3.0),
                (Side::Guest, "only_large", 0.5)
            ]
        );
        let p = CaseProfile {
            case: "c".into(),
            iterations: n,
            rows,
            baseline_per_iteration: Some(3.0),
            bench_per_iteration: Some(7.0),
        };
        assert_eq!(p.total(), 10.5);
        let text = p.render(Some(1));
        assert!(text.contains("total (both timed loops): 10.50"), "{text}");
        assert!(text.contains("empty loop, 3.00): 4.50"), "{text}");
        assert!(text.contains("same runs: 7.00"), "{text}");
        assert!(text.contains("WARNING: 2.50 instructions"), "{text}");
        assert!(text.contains("7.00   66.7%  hv     f"), "{text}");
        assert!(!text.contains(" h\n"), "{text}");
        assert!(text.contains("... 2 more functions"), "{text}");
        assert_eq!(per_iteration(&small, &large, 0), []);
    }

    #[test]
    fn bench_lines_of_both_runs_give_the_figure_and_the_baseline() {
        let line = |s: &str| crate::bench::parse_bench_line(s).unwrap();
        let small = [line("BENCH name=c iterations=10 total=1000 baseline=130")];
        let large = [line("BENCH name=c iterations=20 total=1800 baseline=160")];
        assert_eq!(bench_deltas("c", &small, &large, 10), Some((77.0, 3.0)));
        assert_eq!(bench_deltas("other", &small, &large, 10), None);
    }

    #[test]
    fn dfilter_lists_inclusive_ranges_without_the_excluded_functions() {
        let guest = SymbolTable::new(Side::Guest, vec![], vec![(0x9000, 0x9100)]);
        let tables = [synthetic(), guest];
        assert_eq!(dfilter(&tables, &[]), "0x1000..0x13ff,0x9000..0x90ff");
        // b and c of the synthetic table; the sizeless label is never excluded.
        let ex = tables[0].ranges_of(&["b", "c", "label"]);
        assert_eq!(ex, [(0x1100, 0x1110), (0x1300, 0x1320)]);
        assert_eq!(
            dfilter(&tables, &ex),
            "0x1000..0x10ff,0x1110..0x12ff,0x1320..0x13ff,0x9000..0x90ff"
        );
        // Holes at the edges and overlapping ones.
        assert_eq!(
            dfilter(
                &tables[1..],
                &[(0x9080, 0x9200), (0x8000, 0x9010), (0x9000, 0x9020)]
            ),
            "0x9020..0x907f"
        );
        assert_eq!(dfilter(&tables[1..], &[(0x9000, 0x9100)]), "");
    }
}
