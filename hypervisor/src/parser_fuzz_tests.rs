//! Parser fuzzing (proptest): the kernel image's ELF headers and Xen notes, loading it
//! with the domain builder, and the boot bundle (parser, and writer round trip).
//!
//! Inputs are the seeds of `fuzz-seeds/elf-notes/` and `fuzz-seeds/bundle/` plus seeds
//! generated here, mutated (`fuzz-seeds/mutate.rs`), and fully random bytes. Properties:
//! no panic (overflow checks are on in test builds), errors rather than crashes, output
//! bounded by the input (so the parsers' work is too), valid seeds still parse, and what
//! the writer writes reads back the same. `PARSER_FUZZ_CASES=<n>` runs longer;
//! `FUZZ_SEEDS_WRITE=1` rewrites the generated seed files.

extern crate std;

#[path = "../../fuzz-seeds/mutate.rs"]
pub(crate) mod mutate;

use crate::bundle::build::{Guest, Module, bundle_with_modules};
use crate::bundle::{BundleEntry, BundleHeader, parse_bundle};
use crate::domain::builder::{BuildParams, build};
use crate::domain::elfnotes::test_elf::{NotePlace, Seg, TestElf, VIRT_BASE, n, s};
use crate::domain::elfnotes::{self, KernelImage};
use crate::mmu::guest::{GuestSpace, copy_from_guest};
use crate::mmu::{FrameInfo, Frames, MAX_FRAMES};
use crate::platform::MachineMemory;
use crate::testutil::{FakeMemory, leak};
use mutate::{Recipe, recipe, run, seed_set, write_seeds};
use proptest::prelude::*;
use std::string::String;
use std::vec;
use std::vec::Vec;
use xen_pv_abi::layout::PAGE_SIZE;
use xen_pv_abi::{DomId, elfnote};

/// A small valid kernel: one page of text (64 bytes in the file) holding the hypercall
/// page, then 32 bytes of data and a page of bss. `place` says where the notes are.
fn small_elf(place: NotePlace) -> TestElf {
    let mut t = TestElf::valid();
    t.segs = vec![
        Seg {
            paddr: 0,
            vaddr: VIRT_BASE,
            data: (0..64u8).collect(),
            memsz: 2 * 4096,
            flags: elf::abi::PF_R | elf::abi::PF_X,
        },
        Seg {
            paddr: 2 * 4096,
            vaddr: VIRT_BASE + 2 * 4096,
            data: vec![0xab; 32],
            memsz: 4096,
            flags: elf::abi::PF_R | elf::abi::PF_W,
        },
    ];
    t.note_place = place;
    if place == NotePlace::Nowhere {
        t.notes.clear();
        t.xen_guest = Some(
            std::format!(
                "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE={VIRT_BASE:#x},\
                 ELF_PADDR_OFFSET=0,HYPERCALL_PAGE=0x1,LOADER=generic\0"
            )
            .into_bytes(),
        );
    }
    t
}

/// Generated ELF seeds: notes in a PT_NOTE segment, in sections, as the legacy string,
/// and a dom0 kernel with feature notes.
fn elf_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut dom0 = small_elf(NotePlace::Segment);
    dom0.set_note(
        elfnote::SUPPORTED_FEATURES,
        (1u32 << xen_pv_abi::version::feature::DOM0)
            .to_le_bytes()
            .to_vec(),
    )
    .set_note(
        elfnote::FEATURES,
        s("writable_page_tables|!pae_pgdir_above_4gb"),
    )
    .set_note(elfnote::ENTRY, n(VIRT_BASE + 0x20));
    vec![
        (
            "notes-in-segment.elf",
            small_elf(NotePlace::Segment).build(),
        ),
        (
            "notes-in-section.elf",
            small_elf(NotePlace::Section).build(),
        ),
        ("legacy-string.elf", small_elf(NotePlace::Nowhere).build()),
        ("dom0-features.elf", dom0.build()),
    ]
}

/// Generated bundle seeds: a dom0 with a disk module, and two domUs with settings.
fn bundle_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let image = small_elf(NotePlace::Segment).build();
    let guest = |name, dom0, cmdline| Guest {
        image: &image,
        memory_kib: 4096,
        dom0,
        name,
        cmdline,
        weight: 512,
        cap: 50,
        max_grant_frames: 4,
        max_maptrack_frames: 8,
    };
    let disk = [Module {
        name: "disk0",
        data: b"0123456789abcdef",
    }];
    vec![
        (
            "dom0-with-module.bin",
            bundle_with_modules(&[guest("dom0", true, "vbd=disk0")], &disk).unwrap(),
        ),
        (
            "two-domus.bin",
            bundle_with_modules(&[guest("a", false, "x=1"), guest("b", false, "")], &[]).unwrap(),
        ),
    ]
}

/// `FUZZ_SEEDS_WRITE=1`: writes the generated seeds into `fuzz-seeds/`.
#[test]
fn write_generated_seeds() {
    write_seeds("elf-notes", elf_seeds());
    write_seeds("bundle", bundle_seeds());
}

/// What must hold of every image the parser accepts.
fn check_image(img: &[u8], k: &KernelImage<'_>) -> Result<(), TestCaseError> {
    prop_assert!(k.virt_base.is_multiple_of(PAGE_SIZE as u64));
    prop_assert!(k.kstart < k.kend);
    prop_assert!((k.kstart..k.kend).contains(&k.entry));
    if let Some(hc) = k.hypercall_page {
        prop_assert!(hc >= k.kstart && hc + PAGE_SIZE as u64 <= k.kend);
    }
    // Bounded by the input: one program header is 56 bytes.
    let mut segments = 0usize;
    for seg in k.load_segments() {
        let seg = seg.map_err(|e| TestCaseError::fail(std::format!("{e:?} after Ok")))?;
        prop_assert!(seg.file.len() as u64 <= seg.memsz);
        // The bytes are the image's own.
        let base = img.as_ptr() as usize;
        let at = seg.file.as_ptr() as usize;
        prop_assert!(
            seg.file.is_empty() || (at >= base && at + seg.file.len() <= base + img.len())
        );
        segments += 1;
        prop_assert!(segments <= img.len() / 56);
    }
    Ok(())
}

#[test]
fn fuzz_elf_notes() {
    let seeds = seed_set("elf-notes", elf_seeds());
    for s in &seeds {
        let k = elfnotes::parse(s, false).expect("a seed must parse");
        check_image(s, &k).unwrap();
    }
    let mut max_work = 0u64;
    run(
        "elf-notes",
        4000,
        (recipe(4096), any::<bool>()),
        |(r, dom0): (Recipe, bool)| {
            let img = r.bytes(&seeds);
            let before = crate::work::steps();
            let parsed = elfnotes::parse(&img, dom0);
            // Program headers take 56 bytes, legacy items 1, notes 12 (several note
            // headers may point at the same bytes: MAX_NOTES caps the notes read).
            let work = crate::work::steps() - before;
            let bound = img.len() as u64 + 1 + elfnotes::MAX_NOTES as u64;
            prop_assert!(work <= bound, "{} steps for {} bytes", work, img.len());
            max_work = max_work.max(work * 1000 / (img.len() as u64 + 1));
            if let Ok(k) = parsed {
                check_image(&img, &k)?;
            }
            Ok(())
        },
    );
    std::eprintln!("elf-notes: at most {max_work} steps per 1000 input bytes");
}

/// A machine for the builder: 16 MiB, stale bytes everywhere.
fn machine() -> (FakeMemory, Frames) {
    const FRAMES: usize = 4096;
    let mem = FakeMemory::new(FRAMES * PAGE_SIZE);
    mem.fill(0, 0x5a, FRAMES * PAGE_SIZE).unwrap();
    let frames = Frames::new(
        leak(FrameInfo::UNUSABLE, MAX_FRAMES),
        leak(0, MAX_FRAMES),
        core::slice::from_ref(&(0x10_0000..(FRAMES * PAGE_SIZE) as u64)),
    );
    (mem, frames)
}

const HV_SLOTS: [u64; 16] = [0x1063; 16];

/// Kernel loading: the builder on mutated images. Either it refuses the image with
/// every frame it took freed again, or every loadable segment is in guest memory at its
/// address (file bytes, then zeros), and freeing the domain returns every frame.
#[test]
fn fuzz_kernel_loading() {
    let seeds = seed_set("elf-notes", elf_seeds());
    let (mem, mut frames) = machine();
    let free = frames.free_count();
    let mut built = 0u32;
    run(
        "kernel-loading",
        600,
        (recipe(4096), any::<bool>()),
        |(r, dom0): (Recipe, bool)| {
            let img = r.bytes(&seeds);
            let dom = if dom0 { DomId(0) } else { DomId(1) };
            let p = BuildParams {
                domid: dom,
                image: &img,
                memory_kib: 4096,
                dom0,
                cmdline: b"fuzz",
                modules: &[],
                hypervisor_l4_slots: &HV_SLOTS,
            };
            let result = build(&mem, &mut frames, &p);
            let checked = match &result {
                Err(_) => Ok(()),
                Ok(d) => {
                    built += 1;
                    let k = elfnotes::parse(&img, dom0).unwrap();
                    let space = GuestSpace { dom, cr3: d.cr3 };
                    let mut out = Ok(());
                    for seg in k.load_segments().map(Result::unwrap) {
                        // The first and last bytes of the file part and of the zeroed
                        // rest (whole segments can be large).
                        let mut check = |off: u64, want: u8| {
                            let mut b = [0u8];
                            let va = seg.va.wrapping_add(off);
                            // The builder writes the hypercall stubs over that page.
                            let hc = k.hypercall_page.unwrap_or(u64::MAX);
                            if (hc..hc.saturating_add(PAGE_SIZE as u64)).contains(&va) {
                                return;
                            }
                            if copy_from_guest(&mem, &frames, space, va, &mut b).is_err()
                                || b[0] != want
                            {
                                out = Err(TestCaseError::fail(std::format!(
                                    "byte {va:#x} of a loaded segment: {:#x}, want {want:#x}",
                                    b[0]
                                )));
                            }
                        };
                        let len = seg.file.len() as u64;
                        if len > 0 {
                            check(0, seg.file[0]);
                            check(len - 1, seg.file[len as usize - 1]);
                        }
                        if seg.memsz > len {
                            check(len, 0);
                            check(seg.memsz - 1, 0);
                        }
                    }
                    out
                }
            };
            frames.free_all_of(dom);
            frames.tlb.flush();
            prop_assert_eq!(
                frames.free_count(),
                free,
                "frames lost ({:?})",
                result.err()
            );
            checked
        },
    );
    std::eprintln!("kernel-loading: {built} images built");
}

/// Bundle invariants for an accepted module.
fn check_bundle(module: &[u8]) -> Result<(), TestCaseError> {
    let Ok(b) = parse_bundle(module) else {
        return Ok(());
    };
    let entries = b.guests.len() + b.modules.len();
    if module.starts_with(b"XPVBNDL1") {
        let fit = (module.len() - size_of::<BundleHeader>()) / size_of::<BundleEntry>();
        prop_assert!(entries <= fit);
    } else {
        prop_assert_eq!(entries, 1);
    }
    for g in &b.guests {
        prop_assert!(g.name.len() <= 32 && !g.name.contains(&0));
        prop_assert!(g.cmdline.len() <= 1024 && !g.cmdline.contains(&0));
        prop_assert!(g.memory_kib != 0);
    }
    for m in &b.modules {
        prop_assert!(m.name.len() <= 32 && !m.name.contains(&0));
    }
    Ok(())
}

#[test]
fn fuzz_bundle() {
    let seeds = seed_set("bundle", bundle_seeds());
    for s in &seeds {
        let b = parse_bundle(s).expect("a seed must parse");
        assert!(!b.guests.is_empty());
    }
    run("bundle", 4000, recipe(8192), |r: Recipe| {
        let module = r.bytes(&seeds);
        let before = crate::work::steps();
        check_bundle(&module)?;
        // One step per entry read: at most what fits (twice: check_bundle parses once).
        let work = crate::work::steps() - before;
        prop_assert!(work <= 2 * (module.len() / size_of::<BundleEntry>() + 1) as u64);
        Ok(())
    });
}

/// Names and command lines: printable text, sometimes a NUL or non-ASCII.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::char::range('a', 'z'),
            1 => Just('\0'),
            1 => Just('é'),
            1 => Just('='),
        ],
        0..max,
    )
    .prop_map(|v| v.into_iter().collect())
}

/// The writer xtask uses and the hypervisor's parser agree: whatever the writer
/// accepts reads back field for field.
#[test]
fn fuzz_bundle_roundtrip() {
    type G = (String, String, Vec<u8>, u32, bool, [u16; 4]);
    let guest = (
        text(34),
        text(40),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<u32>(),
        any::<bool>(),
        any::<[u16; 4]>(),
    );
    let module = (text(34), proptest::collection::vec(any::<u8>(), 0..64));
    let strategy = (
        proptest::collection::vec(guest, 0..4),
        proptest::collection::vec(module, 0..3),
    );
    run(
        "bundle-roundtrip",
        1500,
        strategy,
        |(gs, ms): (Vec<G>, Vec<(String, Vec<u8>)>)| {
            let guests: Vec<Guest<'_>> = gs
                .iter()
                .map(|(name, cmdline, image, kib, dom0, w)| Guest {
                    image,
                    memory_kib: *kib,
                    dom0: *dom0,
                    name,
                    cmdline,
                    weight: w[0],
                    cap: w[1],
                    max_grant_frames: w[2],
                    max_maptrack_frames: w[3],
                })
                .collect();
            let modules: Vec<Module<'_>> = ms
                .iter()
                .map(|(name, data)| Module { name, data })
                .collect();
            let Ok(bytes) = bundle_with_modules(&guests, &modules) else {
                return Ok(());
            };
            // An empty bundle is not a bundle of a bare kernel: it starts with the magic.
            let b = parse_bundle(&bytes).map_err(|e| TestCaseError::fail(std::format!("{e:?}")))?;
            prop_assert_eq!(b.guests.len(), guests.len());
            for (got, want) in b.guests.iter().zip(&guests) {
                prop_assert_eq!(got.image, want.image);
                prop_assert_eq!(got.name, want.name.as_bytes());
                prop_assert_eq!(got.cmdline, want.cmdline.as_bytes());
                prop_assert_eq!(got.dom0, want.dom0);
                let kib = if want.memory_kib == 0 {
                    crate::bundle::DEFAULT_GUEST_MEMORY_KIB
                } else {
                    want.memory_kib
                };
                prop_assert_eq!(got.memory_kib, kib);
                prop_assert_eq!(
                    [
                        got.weight,
                        got.cap,
                        got.max_grant_frames,
                        got.max_maptrack_frames
                    ],
                    [
                        want.weight,
                        want.cap,
                        want.max_grant_frames,
                        want.max_maptrack_frames
                    ]
                );
            }
            prop_assert_eq!(b.modules.len(), modules.len());
            for (got, want) in b.modules.iter().zip(&modules) {
                prop_assert_eq!(got.name, want.name.as_bytes());
                prop_assert_eq!(got.data, want.data);
            }
            Ok(())
        },
    );
}
