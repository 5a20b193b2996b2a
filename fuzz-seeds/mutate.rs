//! Seed mutation and the run loop shared by the parser fuzz tests.
//!
//! Not a crate: each crate with parser fuzz tests includes this file as a test-only
//! module (`#[path = "../../fuzz-seeds/mutate.rs"] mod mutate;`), so the three of them
//! mutate seeds the same way without a shared dev-only crate.
//!
//! An input is either a seed (a file of `fuzz-seeds/<parser>/` or one a test generated)
//! changed by a short list of [`Mutation`]s, or fully random bytes. Positions are drawn
//! as plain integers and reduced modulo the current length when applied, so proptest
//! shrinks a failure towards few mutations, early positions and small values.

#![allow(dead_code)]

extern crate std;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRng, TestRunner};
use std::path::PathBuf;
use std::string::String;
use std::vec::Vec;

/// Integers parsers tend to trip over: zero, one, sign and width limits, page sizes.
const INTERESTING: [u64; 16] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xfff,
    0x1000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
];

/// One change to an input.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Flips bit `bit % 8` of byte `at`.
    Flip { at: usize, bit: u8 },
    /// Overwrites byte `at`.
    Set { at: usize, byte: u8 },
    /// Writes an interesting integer (little-endian, 1, 2, 4 or 8 bytes) at `at`.
    Word { at: usize, which: usize, width: u8 },
    /// Cuts the input to `len % (len + 1)` bytes.
    Truncate { len: usize },
    /// Inserts bytes at `at`.
    Insert { at: usize, bytes: Vec<u8> },
    /// Removes up to `len` bytes from `at`.
    Remove { at: usize, len: usize },
    /// Copies up to `len` bytes of seed `other` from its offset `from` over the input at
    /// `at` (a splice of two valid inputs).
    Splice {
        at: usize,
        other: usize,
        from: usize,
        len: usize,
    },
    /// Repeats the bytes `at..at + len` once, right after themselves.
    Duplicate { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        3 => (any::<usize>(), 0..INTERESTING.len(), 0u8..4)
            .prop_map(|(at, which, width)| Mutation::Word { at, which, width }),
        1 => any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => (any::<usize>(), any::<usize>(), any::<usize>(), 1usize..256).prop_map(
            |(at, other, from, len)| Mutation::Splice { at, other, from, len }
        ),
        1 => (any::<usize>(), 1usize..128).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

/// Applies `muts` to a copy of `seed`; `seeds` feeds the splices.
pub fn apply(seed: &[u8], muts: &[Mutation], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for m in muts {
        let n = v.len();
        match *m {
            Mutation::Flip { at, bit } if n > 0 => v[at % n] ^= 1 << (bit % 8),
            Mutation::Set { at, byte } if n > 0 => v[at % n] = byte,
            Mutation::Word { at, which, width } if n > 0 => {
                let bytes = INTERESTING[which % INTERESTING.len()].to_le_bytes();
                let at = at % n;
                let w = (1usize << (width % 4)).min(n - at);
                v[at..at + w].copy_from_slice(&bytes[..w]);
            }
            Mutation::Truncate { len } => v.truncate(len % (n + 1)),
            Mutation::Insert { at, ref bytes } => {
                let at = at % (n + 1);
                v.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove { at, len } if n > 0 => {
                let at = at % n;
                v.drain(at..(at + len).min(n));
            }
            Mutation::Splice {
                at,
                other,
                from,
                len,
            } if n > 0 && !seeds.is_empty() => {
                let o = &seeds[other % seeds.len()];
                if !o.is_empty() {
                    let from = from % o.len();
                    let at = at % n;
                    let len = len.min(o.len() - from).min(n - at);
                    v[at..at + len].copy_from_slice(&o[from..from + len]);
                }
            }
            Mutation::Duplicate { at, len } if n > 0 => {
                let at = at % n;
                let piece: Vec<u8> = v[at..(at + len).min(n)].to_vec();
                let end = at + piece.len();
                v.splice(end..end, piece);
            }
            _ => {}
        }
    }
    v
}

/// How an input is made (kept as the recipe, so a failure shows and shrinks it).
#[derive(Clone, Debug)]
pub enum Recipe {
    /// Seed `seed % seeds.len()`, mutated.
    Mutated { seed: usize, muts: Vec<Mutation> },
    /// Random bytes.
    Random(Vec<u8>),
}

impl Recipe {
    /// The input bytes.
    pub fn bytes(&self, seeds: &[Vec<u8>]) -> Vec<u8> {
        match self {
            Recipe::Mutated { seed, muts } if !seeds.is_empty() => {
                apply(&seeds[seed % seeds.len()], muts, seeds)
            }
            Recipe::Mutated { .. } => Vec::new(),
            Recipe::Random(b) => b.clone(),
        }
    }
}

/// Mutated seeds (most inputs: 0 to 8 mutations, so the unmutated seeds are run too),
/// or random inputs of up to `max_random` bytes.
pub fn recipe(max_random: usize) -> impl Strategy<Value = Recipe> {
    prop_oneof![
        4 => (any::<usize>(), proptest::collection::vec(mutation(), 0..8))
            .prop_map(|(seed, muts)| Recipe::Mutated { seed, muts }),
        1 => proptest::collection::vec(any::<u8>(), 0..max_random).prop_map(Recipe::Random),
    ]
}

/// The files of `fuzz-seeds/<parser>/` (the committed corpus), sorted by name.
pub fn seed_files(parser: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz-seeds")
        .join(parser);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed directory {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no seeds in {}", dir.display());
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The committed seeds of `parser` plus the generated ones that differ from them (a
/// writer changed since the corpus was written).
pub fn seed_set(parser: &str, generated: Vec<(&'static str, Vec<u8>)>) -> Vec<Vec<u8>> {
    let mut all = seed_files(parser);
    for (_, b) in generated {
        if !all.contains(&b) {
            all.push(b);
        }
    }
    all
}

/// With `FUZZ_SEEDS_WRITE=1`, (re)writes `fuzz-seeds/<parser>/` from `generated` (the
/// committed corpus is made this way, never copied from a binary); otherwise nothing.
pub fn write_seeds(parser: &str, generated: Vec<(&'static str, Vec<u8>)>) {
    if std::env::var_os("FUZZ_SEEDS_WRITE").is_none() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz-seeds")
        .join(parser);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in generated {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Cases per parser test: `PARSER_FUZZ_CASES`, or `default` (the CI size).
pub fn cases(default: u32) -> u32 {
    std::env::var("PARSER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The generator of a run: a fixed one (the same inputs every run), or with
/// `FUZZ_SEED=<n>` another fixed one, so long runs can explore new inputs and a failure
/// still reproduces.
pub fn rng(algorithm: proptest::test_runner::RngAlgorithm) -> TestRng {
    match std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        None => TestRng::deterministic_rng(algorithm),
        Some(n) => {
            // ChaCha (the default) takes 32 bytes, XorShift 16.
            let len = match algorithm {
                proptest::test_runner::RngAlgorithm::XorShift => 16,
                _ => 32,
            };
            let seed: Vec<u8> = (0..len)
                .map(|i| (n >> ((i % 8) * 8)) as u8 ^ i as u8)
                .collect();
            TestRng::from_seed(algorithm, &seed)
        }
    }
}

/// Runs `check` on `cases(default)` inputs from `strategy` with [`rng`], shrinks a failure, and prints the number of executions in the
/// form `cargo xtask fuzz-parsers` adds up.
pub fn run<S: Strategy>(
    name: &str,
    default: u32,
    strategy: S,
    mut check: impl FnMut(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: core::fmt::Debug,
{
    let config = Config {
        cases: cases(default),
        failure_persistence: None,
        // Shrinking a parser input is cheap; allow it to go far.
        max_shrink_iters: 100_000,
        ..Config::default()
    };
    let rng = rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    // `TestRunner::run` takes an `Fn`; the checks keep state (a machine, counters).
    let executions = core::cell::Cell::new(0u64);
    let check = core::cell::RefCell::new(&mut check);
    let result = runner.run(&strategy, |v| {
        executions.set(executions.get() + 1);
        (check.borrow_mut())(v)
    });
    let executions = executions.get();
    std::eprintln!("parser fuzz executions: {executions} ({name})");
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// `String::from_utf8_lossy` for failure messages.
pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
