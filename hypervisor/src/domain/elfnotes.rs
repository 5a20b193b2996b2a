//! Xen ELF notes (PT_NOTE, SHT_NOTE, legacy `__xen_guest`) and Xen's checks on them.
//!
//! [`parse`] turns a kernel image into a [`KernelImage`]: the Xen notes it carries and the
//! addresses derived from them (virt_offset, kernel VA range, entry, hypercall page), after
//! the same checks libelf and Xen's domain builders apply. Every refusal is a
//! [`BuildError`] whose `Display` is the one-line reason printed on the console.
//!
//! The `elf` crate parses the headers and bounds-checks the tables; note records are
//! walked here, with Xen's fixed 4-byte padding (the crate pads to `p_align`, which is
//! not how Xen reads notes).

use super::builder::BuildError;
use alloc::vec::Vec;
use elf::ElfBytes;
use elf::abi::{EM_X86_64, ET_EXEC, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE, SHT_NOTE};
use elf::endian::LittleEndian;
use elf::file::Class;
use xen_pv_abi::elfnote;
use xen_pv_abi::layout::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START, PAGE_SIZE, is_canonical};
use xen_pv_abi::version::feature;

/// Most notes scanned in one image (Xen's `ELF_MAX_TOTAL_NOTE_COUNT`).
pub const MAX_NOTES: usize = 65536;

/// The Xen notes of an image, as found (`None` = note absent). Strings stop at their NUL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenNotes<'a> {
    /// ENTRY (legacy: VIRT_ENTRY).
    pub entry: Option<u64>,
    /// HYPERCALL_PAGE, as a VA (legacy page numbers are converted).
    pub hypercall_page: Option<u64>,
    /// VIRT_BASE.
    pub virt_base: Option<u64>,
    /// PADDR_OFFSET (legacy: ELF_PADDR_OFFSET).
    pub paddr_offset: Option<u64>,
    /// XEN_VERSION (legacy: XEN_VER).
    pub xen_version: Option<&'a [u8]>,
    /// GUEST_OS.
    pub guest_os: Option<&'a [u8]>,
    /// GUEST_VERSION (legacy: GUEST_VER).
    pub guest_version: Option<&'a [u8]>,
    /// LOADER.
    pub loader: Option<&'a [u8]>,
    /// FEATURES (`|`-separated names, `!` = required).
    pub features: Option<&'a [u8]>,
    /// SUPPORTED_FEATURES (first 32-bit submap).
    pub supported_features: Option<u32>,
    /// INIT_P2M.
    pub init_p2m: Option<u64>,
    /// MOD_START_PFN.
    pub mod_start_pfn: Option<u64>,
    /// PAE_MODE (legacy: PAE).
    pub pae_mode: Option<&'a [u8]>,
}

/// Where the notes were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteSource {
    /// PT_NOTE program headers.
    ProgramHeaders,
    /// SHT_NOTE sections.
    Sections,
    /// The legacy `__xen_guest` string.
    LegacyString,
}

/// XENFEAT bitmaps of the kernel (first submap: features 0..32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Features the kernel supports (FEATURES names | SUPPORTED_FEATURES).
    pub supported: u32,
    /// Features the kernel requires (`!name` in FEATURES).
    pub required: u32,
}

/// A PT_LOAD segment to load (R, W or X set), already bounds-checked against the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment<'a> {
    /// Guest VA of the first byte: `p_paddr + virt_offset`.
    pub va: u64,
    /// The bytes to copy (`p_filesz` of them).
    pub file: &'a [u8],
    /// Bytes in memory (`p_memsz` ≥ `file.len()`; the rest is zeroed).
    pub memsz: u64,
    /// `PF_R | PF_W | PF_X` bits.
    pub flags: u32,
}

/// A kernel image that passed Xen's checks.
#[derive(Debug)]
pub struct KernelImage<'a> {
    /// The raw notes.
    pub notes: XenNotes<'a>,
    /// Where they came from.
    pub source: NoteSource,
    /// VA of pseudo-physical 0 (VIRT_BASE, default 0). Page-aligned.
    pub virt_base: u64,
    /// `VIRT_BASE - PADDR_OFFSET` (wrapping): added to `p_paddr` to get a VA.
    pub virt_offset: u64,
    /// First VA of the image.
    pub kstart: u64,
    /// End (exclusive) VA of the image.
    pub kend: u64,
    /// Entry point VA.
    pub entry: u64,
    /// VA of the page to fill with hypercall stubs, if the kernel asked for one.
    pub hypercall_page: Option<u64>,
    /// The kernel's feature bitmaps.
    pub features: Features,
    elf: ElfBytes<'a, LittleEndian>,
}

impl<'a> KernelImage<'a> {
    /// The loadable segments (PT_LOAD with at least one of R/W/X), in file order.
    pub fn load_segments(&self) -> impl Iterator<Item = Result<LoadSegment<'a>, BuildError>> + '_ {
        load_segments(&self.elf, self.virt_offset)
    }
}

fn load_segments<'a, 'e>(
    elf: &'e ElfBytes<'a, LittleEndian>,
    virt_offset: u64,
) -> impl Iterator<Item = Result<LoadSegment<'a>, BuildError>> + 'e {
    elf.segments()
        .into_iter()
        .flat_map(|t| t.iter())
        .filter(|ph| ph.p_type == PT_LOAD && ph.p_flags & (PF_R | PF_W | PF_X) != 0)
        .map(move |ph| {
            if ph.p_filesz > ph.p_memsz {
                return Err(BuildError::MalformedElf);
            }
            let file = elf
                .segment_data(&ph)
                .map_err(|_| BuildError::MalformedElf)?;
            Ok(LoadSegment {
                va: ph.p_paddr.wrapping_add(virt_offset),
                file,
                memsz: ph.p_memsz,
                flags: ph.p_flags & (PF_R | PF_W | PF_X),
            })
        })
}

/// Parses `image` and applies Xen's checks; `dom0` adds the dom0-only ones.
pub fn parse(image: &[u8], dom0: bool) -> Result<KernelImage<'_>, BuildError> {
    let elf =
        ElfBytes::<LittleEndian>::minimal_parse(image).map_err(|_| BuildError::NotElf64X86_64)?;
    if elf.ehdr.class != Class::ELF64 || elf.ehdr.e_machine != EM_X86_64 {
        return Err(BuildError::NotElf64X86_64);
    }
    if elf.ehdr.e_type != ET_EXEC {
        return Err(BuildError::NotExecutable {
            e_type: elf.ehdr.e_type,
        });
    }

    let (notes, source) = find_notes(&elf)?;
    check_mandatory(&notes)?;
    let features = parse_features(&notes)?;

    // Addresses (libelf's elf_xen_addr_calc_check).
    if notes.paddr_offset.is_some() && notes.virt_base.is_none() {
        return Err(BuildError::PaddrOffsetWithoutVirtBase);
    }
    let virt_base = notes.virt_base.unwrap_or(0);
    if virt_base % PAGE_SIZE as u64 != 0 {
        return Err(BuildError::VirtBaseNotAligned);
    }
    let paddr_offset = notes.paddr_offset.unwrap_or(match source {
        NoteSource::LegacyString => virt_base,
        _ => 0,
    });
    let virt_offset = virt_base.wrapping_sub(paddr_offset);

    let (mut pstart, mut pend, mut linked_at) = (u64::MAX, 0u64, u64::MAX);
    let mut ranges = Vec::new();
    for ph in elf.segments().into_iter().flat_map(|t| t.iter()) {
        crate::work::step(1);
        if ph.p_type != PT_LOAD || ph.p_flags & (PF_R | PF_W | PF_X) == 0 {
            continue;
        }
        let end = ph
            .p_paddr
            .checked_add(ph.p_memsz)
            .ok_or(BuildError::BadImageRange)?;
        pstart = pstart.min(ph.p_paddr);
        pend = pend.max(end);
        linked_at = linked_at.min(ph.p_vaddr);
        // At most e_phnum (< 65536) entries; the image is the boot bundle's, but the
        // allocation stays fallible all the same.
        ranges.try_reserve(1).map_err(|_| BuildError::NoMemory)?;
        ranges.push((ph.p_paddr, end));
    }
    if ranges.is_empty() {
        return Err(BuildError::NoLoadableSegments);
    }
    // Empty segments overlap nothing; sorted by start, an overlap is between neighbours.
    ranges.retain(|&(start, end)| start < end);
    crate::sort::sort_unstable(&mut ranges);
    if let Some(w) = ranges.windows(2).find(|w| w[1].0 < w[0].1) {
        let va = |(start, end): (u64, u64)| {
            (
                start.wrapping_add(virt_offset),
                end.wrapping_add(virt_offset),
            )
        };
        return Err(BuildError::OverlappingSegments {
            first: va(w[0]),
            second: va(w[1]),
        });
    }
    // Every segment's file bytes must be inside the image.
    for seg in load_segments(&elf, virt_offset) {
        seg?;
    }

    let kstart = pstart.wrapping_add(virt_offset);
    let kend = pend.wrapping_add(virt_offset);
    if kstart >= kend {
        return Err(BuildError::BadImageRange);
    }
    if virt_base > kstart {
        return Err(BuildError::ImageBelowVirtBase {
            start: kstart,
            virt_base,
            linked_at,
        });
    }
    // Canonical, not crossing the non-canonical hole, clear of the hypervisor's range.
    if !is_canonical(kstart) || !is_canonical(kend - 1) || (kstart >> 63) != ((kend - 1) >> 63) {
        return Err(BuildError::NonCanonicalImage);
    }
    if kstart < HYPERVISOR_VIRT_END && kend > HYPERVISOR_VIRT_START {
        return Err(BuildError::OverlapsHypervisor);
    }
    let entry = notes.entry.unwrap_or(elf.ehdr.e_entry);
    if entry < kstart || entry >= kend {
        return Err(BuildError::EntryOutsideImage {
            entry,
            virt_base,
            linked_at,
            image: (kstart, kend),
        });
    }
    if let Some(hc) = notes.hypercall_page {
        // A whole page-aligned page inside the image.
        let fits = hc % PAGE_SIZE as u64 == 0
            && hc >= kstart
            && hc.checked_add(PAGE_SIZE as u64).is_some_and(|e| e <= kend);
        if !fits {
            return Err(BuildError::HypercallPageOutsideImage);
        }
    }

    // Feature checks (toolstack and dom0 builder).
    if features.required & !features.supported != 0 {
        return Err(BuildError::RequiredFeatureUnsupported);
    }
    if features.required & (1 << feature::SUPERVISOR_MODE_KERNEL) != 0 {
        return Err(BuildError::SupervisorModeKernel);
    }
    if dom0 && notes.supported_features.is_some() && features.supported & (1 << feature::DOM0) == 0
    {
        return Err(BuildError::NotDom0Capable);
    }

    Ok(KernelImage {
        notes,
        source,
        virt_base,
        virt_offset,
        kstart,
        kend,
        entry,
        hypercall_page: notes.hypercall_page,
        features,
        elf,
    })
}

/// Xen's note lookup order: PT_NOTE segments, else SHT_NOTE sections, else `__xen_guest`.
fn find_notes<'a>(
    elf: &ElfBytes<'a, LittleEndian>,
) -> Result<(XenNotes<'a>, NoteSource), BuildError> {
    let mut notes = XenNotes::default();
    let mut total = 0usize;

    let mut found = 0usize;
    for ph in elf.segments().into_iter().flat_map(|t| t.iter()) {
        // Some binutils leave p_offset 0 in note segments: Xen skips those.
        if ph.p_type != PT_NOTE || ph.p_offset == 0 {
            continue;
        }
        let data = elf
            .segment_data(&ph)
            .map_err(|_| BuildError::MalformedElf)?;
        found += scan_notes(data, &mut notes, &mut total)?;
    }
    if found > 0 {
        return Ok((notes, NoteSource::ProgramHeaders));
    }

    let shdrs = elf.section_headers();
    for sh in shdrs.into_iter().flat_map(|t| t.iter()) {
        if sh.sh_type != SHT_NOTE {
            continue;
        }
        let (data, _) = elf
            .section_data(&sh)
            .map_err(|_| BuildError::MalformedElf)?;
        found += scan_notes(data, &mut notes, &mut total)?;
    }
    if found > 0 {
        return Ok((notes, NoteSource::Sections));
    }

    // A broken section table just means "no legacy string".
    if let Ok(Some(sh)) = elf.section_header_by_name("__xen_guest") {
        let (data, _) = elf
            .section_data(&sh)
            .map_err(|_| BuildError::MalformedElf)?;
        if parse_legacy(until_nul(data), &mut notes) {
            return Ok((notes, NoteSource::LegacyString));
        }
    }
    Err(BuildError::NoXenNotes)
}

/// Walks the note records in `data`, recording Xen notes. Returns how many Xen notes.
fn scan_notes<'a>(
    data: &'a [u8],
    notes: &mut XenNotes<'a>,
    total: &mut usize,
) -> Result<usize, BuildError> {
    let mut found = 0;
    let mut off = 0usize;
    let u32_at = |at: usize| -> Option<u32> {
        let b = data.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let pad4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    // A truncated trailing record ends the walk, as in libelf.
    while let (Some(namesz), Some(descsz), Some(ntype)) =
        (u32_at(off), u32_at(off + 4), u32_at(off + 8))
    {
        crate::work::step(1);
        if *total >= MAX_NOTES {
            return Err(BuildError::TooManyNotes);
        }
        *total += 1;
        let name_at = off + 12;
        let Some(desc_at) = pad4(namesz as usize).and_then(|n| name_at.checked_add(n)) else {
            break;
        };
        let Some(next) = pad4(descsz as usize).and_then(|n| desc_at.checked_add(n)) else {
            break;
        };
        let (Some(name), Some(desc)) = (
            data.get(name_at..name_at + namesz as usize),
            data.get(desc_at..desc_at + descsz as usize),
        ) else {
            break;
        };
        if until_nul(name) == b"Xen" {
            record_note(notes, ntype, desc);
            found += 1;
        }
        off = next;
    }
    Ok(found)
}

fn record_note<'a>(notes: &mut XenNotes<'a>, ntype: u32, desc: &'a [u8]) {
    let num = numeric(desc);
    let text = until_nul(desc);
    match ntype {
        elfnote::ENTRY => notes.entry = Some(num),
        elfnote::HYPERCALL_PAGE => notes.hypercall_page = Some(num),
        elfnote::VIRT_BASE => notes.virt_base = Some(num),
        elfnote::PADDR_OFFSET => notes.paddr_offset = Some(num),
        elfnote::XEN_VERSION => notes.xen_version = Some(text),
        elfnote::GUEST_OS => notes.guest_os = Some(text),
        elfnote::GUEST_VERSION => notes.guest_version = Some(text),
        elfnote::LOADER => notes.loader = Some(text),
        elfnote::FEATURES => notes.features = Some(text),
        elfnote::SUPPORTED_FEATURES => {
            // A u32 array; only submap 0 exists.
            let first = desc
                .get(..4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            notes.supported_features = Some(first);
        }
        elfnote::INIT_P2M => notes.init_p2m = Some(num),
        elfnote::MOD_START_PFN => notes.mod_start_pfn = Some(num),
        elfnote::PAE_MODE => notes.pae_mode = Some(text),
        _ => {}
    }
}

/// A numeric note: 1, 2, 4 or 8 bytes little-endian; any other size reads as 0.
fn numeric(desc: &[u8]) -> u64 {
    match desc.len() {
        1 | 2 | 4 | 8 => {
            let mut b = [0u8; 8];
            b[..desc.len()].copy_from_slice(desc);
            u64::from_le_bytes(b)
        }
        _ => 0,
    }
}

fn until_nul(b: &[u8]) -> &[u8] {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..n]
}

/// Parses the legacy `NAME=VALUE,...` string. Returns whether it had any item.
fn parse_legacy<'a>(s: &'a [u8], notes: &mut XenNotes<'a>) -> bool {
    let mut any = false;
    let mut hypercall_pfn = None;
    for item in s.split(|&c| c == b',') {
        crate::work::step(1);
        if item.is_empty() {
            continue;
        }
        any = true;
        let (name, value) = match item.iter().position(|&c| c == b'=') {
            Some(i) => (&item[..i], &item[i + 1..]),
            None => (item, &item[item.len()..]),
        };
        match name {
            b"LOADER" => notes.loader = Some(value),
            b"GUEST_OS" => notes.guest_os = Some(value),
            b"GUEST_VER" => notes.guest_version = Some(value),
            b"XEN_VER" => notes.xen_version = Some(value),
            b"PAE" => notes.pae_mode = Some(value),
            b"FEATURES" => notes.features = Some(value),
            b"VIRT_BASE" => notes.virt_base = Some(strtoull(value)),
            b"VIRT_ENTRY" => notes.entry = Some(strtoull(value)),
            b"ELF_PADDR_OFFSET" => notes.paddr_offset = Some(strtoull(value)),
            b"HYPERCALL_PAGE" => hypercall_pfn = Some(strtoull(value)),
            _ => {}
        }
    }
    // HYPERCALL_PAGE is a page number relative to VIRT_BASE; out-of-range values become
    // an address the range check refuses.
    if let Some(pfn) = hypercall_pfn {
        let va = pfn
            .checked_mul(PAGE_SIZE as u64)
            .and_then(|off| off.checked_add(notes.virt_base.unwrap_or(0)))
            .unwrap_or(u64::MAX);
        notes.hypercall_page = Some(va);
    }
    any
}

/// C `strtoull(s, NULL, 0)`: `0x` hex, leading `0` octal, else decimal; stops at the
/// first bad digit; saturates on overflow.
fn strtoull(s: &[u8]) -> u64 {
    let (digits, radix) = if let Some(h) = s.strip_prefix(b"0x").or(s.strip_prefix(b"0X")) {
        (h, 16)
    } else if s.len() > 1 && s[0] == b'0' {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    let mut v: u64 = 0;
    for &c in digits {
        let Some(d) = (c as char).to_digit(radix) else {
            break;
        };
        v = v.saturating_mul(radix as u64).saturating_add(d as u64);
    }
    v
}

/// The FEATURES names Xen's parser knows, with their XENFEAT bit.
const FEATURE_NAMES: &[(&[u8], u32)] = &[
    (b"writable_page_tables", feature::WRITABLE_PAGE_TABLES),
    (
        b"writable_descriptor_tables",
        feature::WRITABLE_DESCRIPTOR_TABLES,
    ),
    (b"auto_translated_physmap", feature::AUTO_TRANSLATED_PHYSMAP),
    (b"supervisor_mode_kernel", feature::SUPERVISOR_MODE_KERNEL),
    (b"pae_pgdir_above_4gb", feature::PAE_PGDIR_ABOVE_4GB),
    (b"hvm_callback_vector", feature::HVM_CALLBACK_VECTOR),
    (b"dom0", feature::DOM0),
];

fn parse_features(notes: &XenNotes<'_>) -> Result<Features, BuildError> {
    let mut f = Features {
        supported: notes.supported_features.unwrap_or(0),
        required: 0,
    };
    for name in notes.features.unwrap_or(b"").split(|&c| c == b'|') {
        let (name, required) = match name.strip_prefix(b"!") {
            Some(n) => (n, true),
            None => (name, false),
        };
        match FEATURE_NAMES.iter().find(|(n, _)| *n == name) {
            Some(&(_, bit)) => {
                f.supported |= 1 << bit;
                if required {
                    f.required |= 1 << bit;
                }
            }
            // Unknown optional names are ignored, unknown required ones refused.
            None if required => return Err(BuildError::UnknownRequiredFeature),
            None => {}
        }
    }
    Ok(f)
}

/// libelf's elf_xen_note_check.
fn check_mandatory(notes: &XenNotes<'_>) -> Result<(), BuildError> {
    let loader_ok = notes.loader.is_some_and(|l| l.starts_with(b"generic"));
    let linux = notes.guest_os.is_some_and(|o| o.starts_with(b"linux"));
    if !loader_ok && !linux {
        return Err(match notes.loader {
            None => BuildError::MissingLoader,
            Some(_) => BuildError::BadLoader,
        });
    }
    match notes.xen_version {
        None => return Err(BuildError::MissingXenVersion),
        Some(v) if !v.starts_with(b"xen-3.0") => return Err(BuildError::BadXenVersion),
        Some(_) => {}
    }
    Ok(())
}

/// A tiny ELF64 writer for tests: program headers, a note segment and/or note section,
/// an optional `__xen_guest` section.
#[cfg(test)]
pub mod test_elf {
    extern crate std;
    use std::vec;
    use std::vec::Vec;
    use xen_pv_abi::elfnote;

    /// One PT_LOAD segment.
    #[derive(Clone)]
    pub struct Seg {
        pub paddr: u64,
        pub vaddr: u64,
        pub data: Vec<u8>,
        pub memsz: u64,
        pub flags: u32,
    }

    /// Where the Xen notes go.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum NotePlace {
        Segment,
        Section,
        Nowhere,
    }

    /// Description of a test image.
    #[derive(Clone)]
    pub struct TestElf {
        pub class64: bool,
        pub machine: u16,
        pub e_type: u16,
        pub entry: u64,
        pub segs: Vec<Seg>,
        /// (type, desc) of each Xen note.
        pub notes: Vec<(u32, Vec<u8>)>,
        pub note_place: NotePlace,
        pub xen_guest: Option<Vec<u8>>,
    }

    pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;

    /// A string note's desc.
    pub fn s(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.push(0);
        v
    }
    /// A u64 note's desc.
    pub fn n(v: u64) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }

    impl TestElf {
        /// A valid PV kernel at VIRT_BASE: 3 pages of text (hypercall page = page 1),
        /// and a data segment of 1 file page + 2 pages of bss right after.
        pub fn valid() -> TestElf {
            let text: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
            TestElf {
                class64: true,
                machine: elf::abi::EM_X86_64,
                e_type: elf::abi::ET_EXEC,
                entry: VIRT_BASE + 0x10,
                segs: vec![
                    Seg {
                        paddr: 0,
                        vaddr: VIRT_BASE,
                        data: text,
                        memsz: 3 * 4096,
                        flags: elf::abi::PF_R | elf::abi::PF_X,
                    },
                    Seg {
                        paddr: 3 * 4096,
                        vaddr: VIRT_BASE + 3 * 4096,
                        data: vec![0xab; 4096],
                        memsz: 3 * 4096,
                        flags: elf::abi::PF_R | elf::abi::PF_W,
                    },
                ],
                notes: vec![
                    (elfnote::GUEST_OS, s("pv-test")),
                    (elfnote::GUEST_VERSION, s("0.1")),
                    (elfnote::XEN_VERSION, s("xen-3.0")),
                    (elfnote::LOADER, s("generic")),
                    (elfnote::VIRT_BASE, n(VIRT_BASE)),
                    (elfnote::PADDR_OFFSET, n(0)),
                    (elfnote::ENTRY, n(VIRT_BASE + 0x10)),
                    (elfnote::HYPERCALL_PAGE, n(VIRT_BASE + 4096)),
                ],
                note_place: NotePlace::Segment,
                xen_guest: None,
            }
        }

        /// Replaces (or adds) the note of type `t`.
        pub fn set_note(&mut self, t: u32, desc: Vec<u8>) -> &mut Self {
            self.notes.retain(|(nt, _)| *nt != t);
            self.notes.push((t, desc));
            self
        }
        /// Removes the note of type `t`.
        pub fn drop_note(&mut self, t: u32) -> &mut Self {
            self.notes.retain(|(nt, _)| *nt != t);
            self
        }

        fn note_blob(&self) -> Vec<u8> {
            let mut b = Vec::new();
            for (t, desc) in &self.notes {
                b.extend_from_slice(&4u32.to_le_bytes());
                b.extend_from_slice(&(desc.len() as u32).to_le_bytes());
                b.extend_from_slice(&t.to_le_bytes());
                b.extend_from_slice(b"Xen\0");
                b.extend_from_slice(desc);
                while !b.len().is_multiple_of(4) {
                    b.push(0);
                }
            }
            b
        }

        /// Serialises the image.
        pub fn build(&self) -> Vec<u8> {
            let notes = self.note_blob();
            let note_seg = self.note_place == NotePlace::Segment;
            let nph = self.segs.len() + note_seg as usize;
            let mut out = vec![0u8; 64 + 56 * nph];
            let align8 = |out: &mut Vec<u8>| {
                while !out.len().is_multiple_of(8) {
                    out.push(0);
                }
            };
            // Payloads.
            let mut seg_offs = Vec::new();
            for seg in &self.segs {
                align8(&mut out);
                seg_offs.push(out.len() as u64);
                out.extend_from_slice(&seg.data);
            }
            align8(&mut out);
            let notes_off = out.len() as u64;
            out.extend_from_slice(&notes);
            align8(&mut out);
            let guest_off = out.len() as u64;
            if let Some(g) = &self.xen_guest {
                out.extend_from_slice(g);
            }
            // Section headers: null, [.note.Xen], [__xen_guest], .shstrtab.
            let note_sec = self.note_place == NotePlace::Section;
            let mut shstr = vec![0u8];
            let mut sections: Vec<(u32, u32, u64, u64)> = Vec::new(); // name, type, off, size
            if note_sec {
                sections.push((shstr.len() as u32, 7, notes_off, notes.len() as u64));
                shstr.extend_from_slice(b".note.Xen\0");
            }
            if let Some(g) = &self.xen_guest {
                sections.push((shstr.len() as u32, 1, guest_off, g.len() as u64));
                shstr.extend_from_slice(b"__xen_guest\0");
            }
            let shstr_name = shstr.len() as u32;
            shstr.extend_from_slice(b".shstrtab\0");
            align8(&mut out);
            let shstr_off = out.len() as u64;
            out.extend_from_slice(&shstr);
            sections.push((shstr_name, 3, shstr_off, shstr.len() as u64));
            align8(&mut out);
            let shoff = out.len() as u64;
            out.extend_from_slice(&[0u8; 64]); // null section
            for (name, t, off, size) in &sections {
                let mut sh = [0u8; 64];
                sh[0..4].copy_from_slice(&name.to_le_bytes());
                sh[4..8].copy_from_slice(&t.to_le_bytes());
                sh[24..32].copy_from_slice(&off.to_le_bytes());
                sh[32..40].copy_from_slice(&size.to_le_bytes());
                sh[48..56].copy_from_slice(&4u64.to_le_bytes());
                out.extend_from_slice(&sh);
            }
            let shnum = sections.len() as u16 + 1;

            // ELF header.
            out[0..4].copy_from_slice(b"\x7fELF");
            out[4] = if self.class64 { 2 } else { 1 };
            out[5] = 1; // little-endian
            out[6] = 1;
            out[16..18].copy_from_slice(&self.e_type.to_le_bytes());
            out[18..20].copy_from_slice(&self.machine.to_le_bytes());
            out[20..24].copy_from_slice(&1u32.to_le_bytes());
            out[24..32].copy_from_slice(&self.entry.to_le_bytes());
            out[32..40].copy_from_slice(&64u64.to_le_bytes());
            out[40..48].copy_from_slice(&shoff.to_le_bytes());
            out[52..54].copy_from_slice(&64u16.to_le_bytes());
            out[54..56].copy_from_slice(&56u16.to_le_bytes());
            out[56..58].copy_from_slice(&(nph as u16).to_le_bytes());
            out[58..60].copy_from_slice(&64u16.to_le_bytes());
            out[60..62].copy_from_slice(&shnum.to_le_bytes());
            out[62..64].copy_from_slice(&(shnum - 1).to_le_bytes());

            // Program headers.
            let mut ph_at = 64;
            let mut put_ph = |out: &mut Vec<u8>, vals: (u32, u32, u64, u64, u64, u64, u64)| {
                let (t, flags, off, vaddr, paddr, filesz, memsz) = vals;
                let p = &mut out[ph_at..ph_at + 56];
                p[0..4].copy_from_slice(&t.to_le_bytes());
                p[4..8].copy_from_slice(&flags.to_le_bytes());
                p[8..16].copy_from_slice(&off.to_le_bytes());
                p[16..24].copy_from_slice(&vaddr.to_le_bytes());
                p[24..32].copy_from_slice(&paddr.to_le_bytes());
                p[32..40].copy_from_slice(&filesz.to_le_bytes());
                p[40..48].copy_from_slice(&memsz.to_le_bytes());
                p[48..56].copy_from_slice(&4096u64.to_le_bytes());
                ph_at += 56;
            };
            for (seg, off) in self.segs.iter().zip(&seg_offs) {
                let vals = (
                    1,
                    seg.flags,
                    *off,
                    seg.vaddr,
                    seg.paddr,
                    seg.data.len() as u64,
                    seg.memsz,
                );
                put_ph(&mut out, vals);
            }
            if note_seg {
                let len = notes.len() as u64;
                put_ph(&mut out, (4, 4, notes_off, 0, 0, len, len));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_elf::{NotePlace, TestElf, VIRT_BASE, n, s};
    use super::*;
    use std::vec::Vec;

    fn parse_t(t: &TestElf) -> Result<(Vec<u8>, KernelImage<'static>), BuildError> {
        let img: &'static [u8] = Vec::leak(t.build());
        parse(img, false).map(|k| (img.to_vec(), k))
    }

    #[test]
    fn valid_image_from_pt_note() {
        let (_, k) = parse_t(&TestElf::valid()).unwrap();
        assert_eq!(k.source, NoteSource::ProgramHeaders);
        assert_eq!(k.virt_base, VIRT_BASE);
        assert_eq!(k.virt_offset, VIRT_BASE);
        assert_eq!((k.kstart, k.kend), (VIRT_BASE, VIRT_BASE + 6 * 4096));
        assert_eq!(k.entry, VIRT_BASE + 0x10);
        assert_eq!(k.hypercall_page, Some(VIRT_BASE + 4096));
        assert_eq!(k.notes.guest_os, Some(&b"pv-test"[..]));
        assert_eq!(k.notes.guest_version, Some(&b"0.1"[..]));
        let segs: Vec<_> = k.load_segments().map(|s| s.unwrap()).collect();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].va, VIRT_BASE + 3 * 4096);
        assert_eq!(segs[1].file.len(), 4096);
        assert_eq!(segs[1].memsz, 3 * 4096);
        assert_eq!(segs[1].flags, PF_R | PF_W);
    }

    #[test]
    fn notes_in_sections_and_legacy_string() {
        let mut t = TestElf::valid();
        t.note_place = NotePlace::Section;
        let (_, k) = parse_t(&t).unwrap();
        assert_eq!(k.source, NoteSource::Sections);
        assert_eq!(k.hypercall_page, Some(VIRT_BASE + 4096));

        // Legacy string: ELF_PADDR_OFFSET defaults to VIRT_BASE, so p_paddr are taken
        // as VAs; this image's p_paddr 0 would sit below VIRT_BASE.
        t.note_place = NotePlace::Nowhere;
        t.xen_guest = Some(
            b"GUEST_OS=linux,GUEST_VER=2.6,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,\
              HYPERCALL_PAGE=0x2,LOADER=generic\0"
                .to_vec(),
        );
        assert_eq!(
            parse_t(&t).unwrap_err(),
            BuildError::ImageBelowVirtBase {
                start: 0,
                virt_base: VIRT_BASE,
                linked_at: VIRT_BASE,
            }
        );
        // With an explicit ELF_PADDR_OFFSET=0 it loads like the notes version.
        t.xen_guest = Some(
            b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,ELF_PADDR_OFFSET=0,\
              VIRT_ENTRY=0xffffffff80000010\0"
                .to_vec(),
        );
        let (_, k) = parse_t(&t).unwrap();
        assert_eq!(k.source, NoteSource::LegacyString);
        assert_eq!(k.virt_offset, VIRT_BASE);
        assert_eq!(k.entry, VIRT_BASE + 0x10);
        assert_eq!(k.hypercall_page, None);
    }

    #[test]
    fn legacy_string_paddr_default() {
        let mut t = TestElf::valid();
        t.note_place = NotePlace::Nowhere;
        for seg in &mut t.segs {
            seg.paddr = seg.vaddr;
        }
        t.entry = VIRT_BASE + 0x20;
        t.xen_guest = Some(
            b"GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,HYPERCALL_PAGE=0x2\0"
                .to_vec(),
        );
        let (_, k) = parse_t(&t).unwrap();
        assert_eq!(k.source, NoteSource::LegacyString);
        assert_eq!(k.virt_offset, 0);
        assert_eq!((k.kstart, k.kend), (VIRT_BASE, VIRT_BASE + 6 * 4096));
        assert_eq!(k.entry, VIRT_BASE + 0x20, "e_entry without VIRT_ENTRY");
        assert_eq!(k.hypercall_page, Some(VIRT_BASE + 2 * 4096));
        assert_eq!(strtoull(b"0x1f"), 31);
        assert_eq!(strtoull(b"017"), 15);
        assert_eq!(strtoull(b"42z"), 42);
        assert_eq!(strtoull(b"99999999999999999999999"), u64::MAX);
    }

    #[test]
    fn container_refusals() {
        let mut t = TestElf::valid();
        t.machine = 3; // EM_386
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::NotElf64X86_64);
        let mut t = TestElf::valid();
        t.e_type = 3; // ET_DYN
        assert_eq!(
            parse_t(&t).unwrap_err(),
            BuildError::NotExecutable { e_type: 3 }
        );
        let mut t = TestElf::valid();
        t.class64 = false;
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::NotElf64X86_64);
        assert_eq!(
            parse(b"hello", false).unwrap_err(),
            BuildError::NotElf64X86_64
        );
        assert_eq!(parse(&[], false).unwrap_err(), BuildError::NotElf64X86_64);
        // Truncated in the middle of the segment data.
        let img = TestElf::valid().build();
        assert!(parse(&img[..200], false).is_err());
        assert!(parse(&img[..5000], false).is_err());
    }

    #[test]
    fn note_refusals() {
        let mut t = TestElf::valid();
        t.note_place = NotePlace::Nowhere;
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::NoXenNotes);
        assert_eq!(
            std::format!("{}", BuildError::NoXenNotes),
            "not a Xen-ELF image (no Xen notes): no PT_NOTE segment, SHT_NOTE section or \
             __xen_guest string carries XEN_VERSION, LOADER and the addresses"
        );

        let mut t = TestElf::valid();
        t.set_note(elfnote::XEN_VERSION, s("xen-2.0"));
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::BadXenVersion);
        t.drop_note(elfnote::XEN_VERSION);
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::MissingXenVersion);

        let mut t = TestElf::valid();
        t.set_note(elfnote::LOADER, s("special"));
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::BadLoader);
        t.drop_note(elfnote::LOADER);
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::MissingLoader);
        t.set_note(elfnote::GUEST_OS, s("linux"));
        assert!(parse_t(&t).is_ok(), "GUEST_OS=linux stands in for LOADER");

        let mut t = TestElf::valid();
        t.drop_note(elfnote::VIRT_BASE);
        assert_eq!(
            parse_t(&t).unwrap_err(),
            BuildError::PaddrOffsetWithoutVirtBase
        );
    }

    #[test]
    fn address_refusals() {
        let mut t = TestElf::valid();
        let outside = |entry| BuildError::EntryOutsideImage {
            entry,
            virt_base: VIRT_BASE,
            linked_at: VIRT_BASE,
            image: (VIRT_BASE, VIRT_BASE + 6 * 4096),
        };
        t.set_note(elfnote::ENTRY, n(VIRT_BASE + 6 * 4096));
        assert_eq!(parse_t(&t).unwrap_err(), outside(VIRT_BASE + 6 * 4096));
        t.set_note(elfnote::ENTRY, n(VIRT_BASE - 1));
        assert_eq!(parse_t(&t).unwrap_err(), outside(VIRT_BASE - 1));

        let mut t = TestElf::valid();
        t.set_note(elfnote::HYPERCALL_PAGE, n(VIRT_BASE + 6 * 4096));
        assert_eq!(
            parse_t(&t).unwrap_err(),
            BuildError::HypercallPageOutsideImage
        );
        t.set_note(elfnote::HYPERCALL_PAGE, n(VIRT_BASE + 100));
        assert_eq!(
            parse_t(&t).unwrap_err(),
            BuildError::HypercallPageOutsideImage
        );

        // VIRT_BASE above the image.
        let mut t = TestElf::valid();
        t.set_note(elfnote::VIRT_BASE, n(VIRT_BASE + 4096));
        t.set_note(elfnote::PADDR_OFFSET, n(4096));
        assert_eq!(
            parse_t(&t).unwrap_err(),
            BuildError::ImageBelowVirtBase {
                start: VIRT_BASE,
                virt_base: VIRT_BASE + 4096,
                linked_at: VIRT_BASE,
            }
        );

        // Image inside the hypervisor's range.
        let hv = 0xffff_8100_0000_0000;
        let mut t = TestElf::valid();
        t.set_note(elfnote::VIRT_BASE, n(hv));
        t.set_note(elfnote::ENTRY, n(hv + 0x10));
        t.set_note(elfnote::HYPERCALL_PAGE, n(hv + 4096));
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::OverlapsHypervisor);

        // Non-canonical image.
        let mut t = TestElf::valid();
        let nc = 0x0000_8000_0000_0000;
        t.set_note(elfnote::VIRT_BASE, n(nc));
        t.set_note(elfnote::ENTRY, n(nc + 0x10));
        t.drop_note(elfnote::HYPERCALL_PAGE);
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::NonCanonicalImage);

        // Segment end overflowing the address space.
        let mut t = TestElf::valid();
        t.segs[1].memsz = u64::MAX;
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::BadImageRange);

        // filesz > memsz.
        let mut t = TestElf::valid();
        t.segs[1].memsz = 10;
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::MalformedElf);

        let mut t = TestElf::valid();
        t.segs.clear();
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::NoLoadableSegments);
    }

    #[test]
    fn feature_checks() {
        let mut t = TestElf::valid();
        t.set_note(
            elfnote::FEATURES,
            s("!writable_page_tables|pae_pgdir_above_4gb|bogus"),
        );
        let (_, k) = parse_t(&t).unwrap();
        assert_eq!(k.features.required, 1);
        assert_eq!(k.features.supported, 1 | 1 << 4);

        t.set_note(elfnote::FEATURES, s("!no_such_feature"));
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::UnknownRequiredFeature);
        t.set_note(elfnote::FEATURES, s("!supervisor_mode_kernel"));
        assert_eq!(parse_t(&t).unwrap_err(), BuildError::SupervisorModeKernel);

        // dom0: SUPPORTED_FEATURES, when present, must include XENFEAT_dom0.
        let mut t = TestElf::valid();
        let img: &'static [u8] = Vec::leak(t.build());
        assert!(parse(img, true).is_ok(), "no SUPPORTED_FEATURES: fine");
        t.set_note(elfnote::SUPPORTED_FEATURES, 0x1u32.to_le_bytes().to_vec());
        let img: &'static [u8] = Vec::leak(t.build());
        assert!(parse(img, false).is_ok());
        assert_eq!(parse(img, true).unwrap_err(), BuildError::NotDom0Capable);
        t.set_note(elfnote::SUPPORTED_FEATURES, 0x801u32.to_le_bytes().to_vec());
        let img: &'static [u8] = Vec::leak(t.build());
        assert!(parse(img, true).is_ok());
    }

    #[test]
    fn numeric_note_sizes_and_hostile_records() {
        assert_eq!(numeric(&[1]), 1);
        assert_eq!(numeric(&[1, 2]), 0x201);
        assert_eq!(numeric(&[1, 2, 3, 4]), 0x0403_0201);
        assert_eq!(numeric(&[1, 2, 3]), 0);
        assert_eq!(numeric(&[0; 16]), 0);

        let mut notes = XenNotes::default();
        let mut total = 0;
        // namesz huge: the record is ignored, no panic.
        let mut rec = Vec::new();
        rec.extend_from_slice(&u32::MAX.to_le_bytes());
        rec.extend_from_slice(&4u32.to_le_bytes());
        rec.extend_from_slice(&5u32.to_le_bytes());
        assert_eq!(scan_notes(&rec, &mut notes, &mut total), Ok(0));
        // Too many (empty, non-Xen) notes.
        let one = [0u8; 12];
        let many: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(12 * (MAX_NOTES + 1))
            .collect();
        let mut total = 0;
        assert_eq!(
            scan_notes(&many, &mut notes, &mut total),
            Err(BuildError::TooManyNotes)
        );
    }

    /// The refusals a kernel author meets name the mismatch and the fix in one line.
    #[test]
    fn refusals_name_the_mismatch_in_one_line() {
        let msg = |t: &TestElf| std::format!("{}", parse_t(t).unwrap_err());

        // Linked at the default 0x200000 of a toolchain without the runtime's script,
        // with the runtime's notes (VIRT_BASE, PADDR_OFFSET 0, entry = e_entry).
        let mut t = TestElf::valid();
        for seg in &mut t.segs {
            seg.vaddr = seg.vaddr - VIRT_BASE + 0x20_0000;
            seg.paddr = seg.vaddr;
        }
        t.drop_note(elfnote::ENTRY);
        t.drop_note(elfnote::HYPERCALL_PAGE);
        t.entry = 0x20_0010;
        assert_eq!(
            msg(&t),
            "entry 0x200010 lies below VIRT_BASE 0xffffffff80000000: the image is linked at \
             0x200000 — link it at VIRT_BASE (the runtime's linker script does)"
        );

        // Linked at VIRT_BASE but with p_paddr = p_vaddr: loads at VIRT_BASE + VIRT_BASE.
        let mut t = TestElf::valid();
        for seg in &mut t.segs {
            seg.paddr = seg.vaddr;
        }
        t.drop_note(elfnote::ENTRY);
        t.drop_note(elfnote::HYPERCALL_PAGE);
        assert_eq!(
            msg(&t),
            "the image loads at 0xffffffff00000000 (p_paddr + VIRT_BASE - PADDR_OFFSET), below \
             VIRT_BASE 0xffffffff80000000: it is linked at 0xffffffff80000000 — make p_paddr = \
             p_vaddr - VIRT_BASE + PADDR_OFFSET (the runtime's linker script does)"
        );
        // Without a VIRT_BASE note the same image loads where linked, but an ENTRY note
        // from another link misses it.
        t.drop_note(elfnote::VIRT_BASE);
        t.drop_note(elfnote::PADDR_OFFSET);
        t.set_note(elfnote::ENTRY, n(0x20_0010));
        assert_eq!(
            msg(&t),
            "entry 0x200010 is outside the kernel image [0xffffffff80000000, 0xffffffff80006000)"
        );

        let mut t = TestElf::valid();
        t.e_type = 3;
        assert_eq!(
            msg(&t),
            "ELF type 3 (ET_DYN: position-independent), not ET_EXEC: link a fixed-address \
             executable (-C relocation-model=static or --no-pie)"
        );

        let mut t = TestElf::valid();
        t.drop_note(elfnote::XEN_VERSION);
        assert_eq!(
            msg(&t),
            "XEN_VERSION note missing (Xen requires \"xen-3.0\")"
        );
        let mut t = TestElf::valid();
        t.drop_note(elfnote::LOADER);
        assert_eq!(
            msg(&t),
            "LOADER note missing (Xen requires LOADER \"generic\" unless GUEST_OS is linux)"
        );
        let mut t = TestElf::valid();
        t.note_place = NotePlace::Nowhere;
        assert!(msg(&t).starts_with("not a Xen-ELF image (no Xen notes): no PT_NOTE segment"));

        // The data segment starts inside the text segment.
        let mut t = TestElf::valid();
        t.segs[1].paddr = 2 * 4096;
        t.segs[1].vaddr = VIRT_BASE + 2 * 4096;
        assert_eq!(
            parse_t(&t).unwrap_err(),
            BuildError::OverlappingSegments {
                first: (VIRT_BASE, VIRT_BASE + 3 * 4096),
                second: (VIRT_BASE + 2 * 4096, VIRT_BASE + 5 * 4096),
            }
        );
        assert_eq!(
            msg(&t),
            "loadable segments overlap: [0xffffffff80000000, 0xffffffff80003000) and \
             [0xffffffff80002000, 0xffffffff80005000)"
        );
        // Every message is one line.
        for m in [msg(&t), std::format!("{}", BuildError::NoXenNotes)] {
            assert!(!m.contains('\n'), "{m}");
        }
    }
}
