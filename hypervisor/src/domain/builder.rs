//! The domain builder: Xen's start-of-day layout of a 64-bit PV domain.
//!
//! One contiguous VA region starting at VIRT_BASE maps pseudo-physical frames 0.. in
//! order (`va = VIRT_BASE + pfn * 4096`). After the kernel image, page-aligned: dom0's
//! initrd (the boot modules behind an `xen_pv_abi::modules` table; as Xen places a PV
//! dom0's initrd, `start_info.mod_start` is its VA, not a PFN), the p2m list, start_info, the xenstore and console rings (domU only), the bootstrap page tables
//! (L4, L3s, L2s, L1s; mapped read-only), one page of boot stack, then padding to a 4 MiB
//! boundary with at least 512 KiB free after the stack. Frames beyond the region belong
//! to the domain and are in the p2m, unmapped.
//!
//! Everything is written through [`MachineMemory`]; the only bookkeeping kept outside
//! guest memory is a few "directory" frames listing the p2m's own frames while building
//! (the builder has no heap, and the p2m cannot locate itself).

use super::elfnotes::{self, KernelImage};
use crate::bundle::ModuleSpec;
use crate::mmu::guest::{PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_RW, PTE_USER};
use crate::mmu::pagetable::PtCtx;
use crate::mmu::{Frames, MAX_FRAMES};
use crate::platform::{BadMaddr, GuestFrame, MachineMemory};
use core::mem::offset_of;
use xen_pv_abi::layout::{
    FIRST_HYPERVISOR_L4_SLOT, FLAT_KERNEL_CS64, FLAT_KERNEL_SS64, HYPERVISOR_VIRT_END,
    HYPERVISOR_VIRT_START, PAGE_SIZE, is_canonical,
};
use xen_pv_abi::modules::{MODULE_ALIGN, MODULE_NAME_LEN, ModuleEntry, ModulesHeader};
use xen_pv_abi::shared_info::{ArchSharedInfo, SharedInfo, VcpuInfo, XEN_LEGACY_MAX_VCPUS};
use xen_pv_abi::start_info::{
    ConsoleInfo, MAX_GUEST_CMDLINE, SIF_INITDOMAIN, SIF_PRIVILEGED, START_INFO_MAGIC_X86_64,
    StartInfo,
};
use xen_pv_abi::{DomId, EvtchnPort, Mfn};
use zerocopy::{FromZeros, IntoBytes};

/// Event channel of the xenstore ring in every domU (as `xl` allocates it).
pub const STORE_EVTCHN: EvtchnPort = EvtchnPort(1);
/// Event channel of the console ring in every domU.
pub const CONSOLE_EVTCHN: EvtchnPort = EvtchnPort(2);

const PAGE: u64 = PAGE_SIZE as u64;
/// u64 entries per page (page-table entries, p2m entries).
const PER_PAGE: u64 = PAGE / 8;
/// Entry of an L4, L3 or L2 table.
const PTE_TABLE: u64 = PTE_PRESENT | PTE_RW | PTE_USER | PTE_ACCESSED | PTE_DIRTY;
/// L1 entry of an ordinary page. User: the PV kernel runs in ring 3.
const PTE_PAGE: u64 = PTE_PRESENT | PTE_RW | PTE_USER | PTE_ACCESSED;
/// L1 entry of a page-table frame: never writable by the guest.
const PTE_PAGE_RO: u64 = PTE_PRESENT | PTE_USER | PTE_ACCESSED;
/// The region ends on this boundary (pages)...
const REGION_ALIGN_PAGES: u64 = (4 << 20) / PAGE;
/// ...with at least this much (pages) free after the boot stack.
const REGION_SLACK_PAGES: u64 = (512 << 10) / PAGE;
/// Directory frames needed to list the p2m frames of the largest possible domain.
const MAX_DIR_FRAMES: usize = MAX_FRAMES.div_ceil(PER_PAGE as usize * PER_PAGE as usize);
/// RFLAGS at entry: IF and the always-one bit 1.
const ENTRY_RFLAGS: u64 = 0x202;
/// Longest GUEST_OS kept in [`BuiltDomain::guest_os`].
pub const GUEST_OS_MAX: usize = 32;

/// What to build.
pub struct BuildParams<'a> {
    /// The new domain's id.
    pub domid: DomId,
    /// Kernel ELF image.
    pub image: &'a [u8],
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Build as the initial domain (dom0).
    pub dom0: bool,
    /// Command line for start_info.
    pub cmdline: &'a [u8],
    /// Boot modules for dom0, handed over as its initrd (ignored for a domU: Xen gives
    /// boot modules to dom0 only).
    pub modules: &'a [ModuleSpec<'a>],
    /// The hypervisor's L4 entries for slots 256..=271, copied into the guest's L4.
    pub hypervisor_l4_slots: &'a [u64; 16],
}

/// A built domain, ready to run.
#[derive(Debug)]
pub struct BuiltDomain {
    /// Registers at entry (rip, rsp, rsi = start_info VA, CS/SS = Xen's flat selectors,
    /// RFLAGS = IF).
    pub entry: GuestFrame,
    /// Machine address of the bootstrap L4 (the vCPU's CR3).
    pub cr3: u64,
    /// Pages given to the domain (= start_info.nr_pages).
    pub nr_pages: u64,
    /// The shared_info frame.
    pub shared_info: Mfn,
    /// Console ring frame and port (domU only).
    pub console: Option<(Mfn, EvtchnPort)>,
    /// Xenstore ring frame and port (domU only).
    pub store: Option<(Mfn, EvtchnPort)>,
    /// VA of pseudo-physical frame 0.
    pub virt_base: u64,
    /// VA of start_info (= `entry.rsi`).
    pub start_info_va: u64,
    /// VA of the p2m list (= start_info.mfn_list).
    pub p2m_va: u64,
    /// VA of the bootstrap L4 (= start_info.pt_base).
    pub pt_base: u64,
    /// Bootstrap page-table frames (= start_info.nr_pt_frames).
    pub nr_pt_frames: u64,
    /// End (exclusive) of the initially mapped region.
    pub region_end: u64,
    /// VA of the hypercall page, if the kernel asked for one.
    pub hypercall_page: Option<u64>,
    /// The GUEST_OS note (truncated to [`GUEST_OS_MAX`] bytes; empty if absent).
    pub guest_os: heapless::Vec<u8, GUEST_OS_MAX>,
}

/// Why a kernel image was refused; `Display` gives the one-line reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// Not ELF64, not little-endian or not EM_X86_64.
    NotElf64X86_64,
    /// An ELF64 x86_64 file that is not `ET_EXEC` (`ET_DYN` = linked position-independent).
    NotExecutable {
        /// Its `e_type`.
        e_type: u16,
    },
    /// Header tables or segment data outside the file, or `p_filesz > p_memsz`.
    MalformedElf,
    /// Neither PT_NOTE, SHT_NOTE nor `__xen_guest` carries Xen notes.
    NoXenNotes,
    /// More than [`elfnotes::MAX_NOTES`] notes.
    TooManyNotes,
    /// No XEN_VERSION note.
    MissingXenVersion,
    /// XEN_VERSION not `xen-3.0*`.
    BadXenVersion,
    /// No LOADER note, and GUEST_OS is not `linux*`.
    MissingLoader,
    /// LOADER not `generic*`, and GUEST_OS is not `linux*`.
    BadLoader,
    /// PADDR_OFFSET given without VIRT_BASE.
    PaddrOffsetWithoutVirtBase,
    /// VIRT_BASE not page-aligned.
    VirtBaseNotAligned,
    /// No PT_LOAD segment with R, W or X.
    NoLoadableSegments,
    /// Image range empty or wrapping.
    BadImageRange,
    /// The image loads below VIRT_BASE.
    ImageBelowVirtBase {
        /// First VA the image loads at (`p_paddr + VIRT_BASE - PADDR_OFFSET`).
        start: u64,
        /// The VIRT_BASE note (0 if absent).
        virt_base: u64,
        /// Lowest `p_vaddr` of the loadable segments: where the image is linked.
        linked_at: u64,
    },
    /// Two loadable segments overlap (as loaded: `p_paddr + VIRT_BASE - PADDR_OFFSET`).
    OverlappingSegments {
        /// `[start, end)` of the segment that starts first.
        first: (u64, u64),
        /// `[start, end)` of the one that starts inside it.
        second: (u64, u64),
    },
    /// Image outside canonical addresses.
    NonCanonicalImage,
    /// Image or start-of-day region inside the hypervisor's reserved range.
    OverlapsHypervisor,
    /// Entry point outside the image.
    EntryOutsideImage {
        /// The entry point (ENTRY note, else `e_entry`).
        entry: u64,
        /// The VIRT_BASE note (0 if absent).
        virt_base: u64,
        /// Lowest `p_vaddr` of the loadable segments: where the image is linked.
        linked_at: u64,
        /// `[start, end)` VAs the image loads at.
        image: (u64, u64),
    },
    /// HYPERCALL_PAGE not a whole page-aligned page inside the image.
    HypercallPageOutsideImage,
    /// FEATURES requires a feature name Xen does not know.
    UnknownRequiredFeature,
    /// A required feature is not in the kernel's supported set.
    RequiredFeatureUnsupported,
    /// The kernel requires supervisor_mode_kernel (ring-0 PV kernel).
    SupervisorModeKernel,
    /// dom0 whose SUPPORTED_FEATURES lacks XENFEAT_dom0.
    NotDom0Capable,
    /// The start-of-day region leaves the canonical address space.
    RegionOutOfRange,
    /// The domain's memory does not cover the start-of-day region.
    MemoryTooSmall,
    /// dom0's memory does not cover the start-of-day region with its boot modules.
    MemoryTooSmallForModules {
        /// Size of the initrd (module table and modules), KiB, rounded up.
        modules_kib: u64,
        /// The domain's memory, KiB.
        memory_kib: u64,
    },
    /// A boot module's name is longer than 31 bytes, or the modules' total size overflows.
    BadModules,
    /// Not enough free machine frames.
    NoMemory,
    /// The domain id is one of Xen's reserved ids.
    InvalidDomId,
    /// Machine memory refused an access (a frame outside installed RAM).
    MachineMemory,
    /// The bootstrap page tables failed validation (a builder bug).
    BootstrapTables,
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let reason = match *self {
            Self::NotElf64X86_64 => "not an ELF64 x86_64 executable",
            Self::NotExecutable { e_type } => {
                let kind = if e_type == 3 {
                    " (ET_DYN: position-independent)"
                } else {
                    ""
                };
                return write!(
                    f,
                    "ELF type {e_type}{kind}, not ET_EXEC: link a fixed-address executable \
                     (-C relocation-model=static or --no-pie)"
                );
            }
            Self::MalformedElf => "malformed ELF (tables or segments outside the file)",
            Self::NoXenNotes => {
                "not a Xen-ELF image (no Xen notes): no PT_NOTE segment, SHT_NOTE section or \
                 __xen_guest string carries XEN_VERSION, LOADER and the addresses"
            }
            Self::TooManyNotes => "too many ELF notes",
            Self::MissingXenVersion => "XEN_VERSION note missing (Xen requires \"xen-3.0\")",
            Self::BadXenVersion => "XEN_VERSION note is not \"xen-3.0\"",
            Self::MissingLoader => {
                "LOADER note missing (Xen requires LOADER \"generic\" unless GUEST_OS is linux)"
            }
            Self::BadLoader => "LOADER note is not \"generic\" (and GUEST_OS is not linux)",
            Self::PaddrOffsetWithoutVirtBase => "PADDR_OFFSET note without VIRT_BASE",
            Self::VirtBaseNotAligned => "VIRT_BASE is not page-aligned",
            Self::NoLoadableSegments => "no loadable segments",
            Self::BadImageRange => "kernel image range is empty or wraps",
            Self::ImageBelowVirtBase {
                start,
                virt_base,
                linked_at,
            } => {
                return write!(
                    f,
                    "the image loads at {start:#x} (p_paddr + VIRT_BASE - PADDR_OFFSET), below \
                     VIRT_BASE {virt_base:#x}: it is linked at {linked_at:#x} — make p_paddr = \
                     p_vaddr - VIRT_BASE + PADDR_OFFSET (the runtime's linker script does)"
                );
            }
            Self::OverlappingSegments { first, second } => {
                return write!(
                    f,
                    "loadable segments overlap: [{:#x}, {:#x}) and [{:#x}, {:#x})",
                    first.0, first.1, second.0, second.1
                );
            }
            Self::NonCanonicalImage => "kernel image is not at canonical addresses",
            Self::OverlapsHypervisor => "image overlaps the hypervisor's reserved range",
            Self::EntryOutsideImage {
                entry,
                virt_base,
                linked_at,
                image,
            } => {
                return if entry < virt_base {
                    write!(
                        f,
                        "entry {entry:#x} lies below VIRT_BASE {virt_base:#x}: the image is \
                         linked at {linked_at:#x} — link it at VIRT_BASE (the runtime's linker \
                         script does)"
                    )
                } else if linked_at != image.0 {
                    write!(
                        f,
                        "entry {entry:#x} is outside the image as loaded [{:#x}, {:#x}): it is \
                         linked at {linked_at:#x} — make p_paddr = p_vaddr - VIRT_BASE + \
                         PADDR_OFFSET (the runtime's linker script does)",
                        image.0, image.1
                    )
                } else {
                    write!(
                        f,
                        "entry {entry:#x} is outside the kernel image [{:#x}, {:#x})",
                        image.0, image.1
                    )
                };
            }
            Self::HypercallPageOutsideImage => "hypercall page not a page of the kernel image",
            Self::UnknownRequiredFeature => "kernel requires an unknown feature",
            Self::RequiredFeatureUnsupported => "kernel requires a feature it does not support",
            Self::SupervisorModeKernel => "kernel requires supervisor_mode_kernel",
            Self::NotDom0Capable => "kernel does not support dom0 operation",
            Self::RegionOutOfRange => "start-of-day region leaves the canonical address space",
            Self::MemoryTooSmall => "memory too small for the kernel's start-of-day layout",
            Self::MemoryTooSmallForModules {
                modules_kib,
                memory_kib,
            } => {
                return write!(
                    f,
                    "memory ({memory_kib} KiB) too small for the start-of-day layout with \
                     {modules_kib} KiB of boot modules: give dom0 more memory"
                );
            }
            Self::BadModules => "boot module name longer than 31 bytes, or modules too large",
            Self::NoMemory => "not enough free memory",
            Self::InvalidDomId => "reserved domain id",
            Self::MachineMemory => "machine memory access failed",
            Self::BootstrapTables => "bootstrap page tables failed validation",
        };
        f.write_str(reason)
    }
}

impl From<BadMaddr> for BuildError {
    fn from(_: BadMaddr) -> Self {
        BuildError::MachineMemory
    }
}

/// The start-of-day layout, in pseudo-physical frame numbers (VA = virt_base + pfn·4K).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    virt_base: u64,
    nr_pages: u64,
    /// The initrd (dom0's module table), right after the image; `initrd_len` = 0: none.
    initrd_pfn: u64,
    initrd_len: u64,
    p2m_pfn: u64,
    p2m_pages: u64,
    start_info_pfn: u64,
    /// Xenstore then console ring (domU only).
    rings_pfn: Option<u64>,
    pt_pfn: u64,
    nr_l3: u64,
    nr_l2: u64,
    nr_l1: u64,
    stack_pfn: u64,
    /// Pages of the mapped region (its end is `va(region_pages)`).
    region_pages: u64,
}

impl Layout {
    fn va(&self, pfn: u64) -> u64 {
        self.virt_base + pfn * PAGE
    }
    fn nr_pt(&self) -> u64 {
        1 + self.nr_l3 + self.nr_l2 + self.nr_l1
    }
    fn is_page_table(&self, pfn: u64) -> bool {
        pfn >= self.pt_pfn && pfn < self.pt_pfn + self.nr_pt()
    }
}

/// Tables of one level needed to map `[start, end)`, each covering `1 << shift` bytes.
fn tables_for(start: u64, end: u64, shift: u32) -> u64 {
    ((end - 1) >> shift) - (start >> shift) + 1
}

/// Bytes of the initrd for these modules: the table, then each module at an aligned
/// offset (the layout [`write_modules`] writes). 0 for no modules.
fn initrd_len(modules: &[ModuleSpec<'_>]) -> Result<u64, BuildError> {
    if modules.is_empty() {
        return Ok(0);
    }
    let mut end =
        xen_pv_abi::modules::data_start(modules.len() as u64).ok_or(BuildError::BadModules)?;
    for m in modules {
        if m.name.len() >= MODULE_NAME_LEN {
            return Err(BuildError::BadModules);
        }
        end = end
            .checked_next_multiple_of(MODULE_ALIGN)
            .and_then(|start| start.checked_add(m.data.len() as u64))
            .ok_or(BuildError::BadModules)?;
    }
    Ok(end)
}

fn layout(
    k: &KernelImage<'_>,
    nr_pages: u64,
    dom0: bool,
    initrd_len: u64,
) -> Result<Layout, BuildError> {
    let vb = k.virt_base;
    // parse() guarantees virt_base <= kstart < kend.
    let image_pages = (k.kend - vb).div_ceil(PAGE);
    let initrd_pages = initrd_len.div_ceil(PAGE);
    let p2m_pages = nr_pages.div_ceil(PER_PAGE);
    let p2m_pfn = image_pages
        .checked_add(initrd_pages)
        .ok_or(BuildError::RegionOutOfRange)?;
    let start_info_pfn = p2m_pfn + p2m_pages;
    let rings_pfn = (!dom0).then_some(start_info_pfn + 1);
    let pt_pfn = start_info_pfn + if dom0 { 1 } else { 3 };

    // The tables must map themselves, so their number depends on itself: grow the guess
    // until it covers what the resulting region needs (Xen does the same).
    let mut nr_pt = 4u64;
    loop {
        let stack_pfn = pt_pfn + nr_pt;
        let stack_end = stack_pfn + 1;
        let mut region_pages = stack_end.next_multiple_of(REGION_ALIGN_PAGES);
        if region_pages - stack_end < REGION_SLACK_PAGES {
            region_pages += REGION_ALIGN_PAGES;
        }
        let end = region_pages
            .checked_mul(PAGE)
            .and_then(|len| vb.checked_add(len))
            .ok_or(BuildError::RegionOutOfRange)?;
        let last = end - 1;
        if !is_canonical(last) || (last >> 63) != (vb >> 63) {
            return Err(BuildError::RegionOutOfRange);
        }
        if vb < HYPERVISOR_VIRT_END && end > HYPERVISOR_VIRT_START {
            return Err(BuildError::OverlapsHypervisor);
        }
        let (nr_l3, nr_l2, nr_l1) = (
            tables_for(vb, end, 39),
            tables_for(vb, end, 30),
            tables_for(vb, end, 21),
        );
        if 1 + nr_l3 + nr_l2 + nr_l1 <= nr_pt {
            if region_pages > nr_pages {
                return Err(if initrd_len > 0 {
                    BuildError::MemoryTooSmallForModules {
                        modules_kib: initrd_len.div_ceil(1024),
                        memory_kib: nr_pages * 4,
                    }
                } else {
                    BuildError::MemoryTooSmall
                });
            }
            return Ok(Layout {
                virt_base: vb,
                nr_pages,
                initrd_pfn: image_pages,
                initrd_len,
                p2m_pfn,
                p2m_pages,
                start_info_pfn,
                rings_pfn,
                pt_pfn,
                nr_l3,
                nr_l2,
                nr_l1,
                stack_pfn,
                region_pages,
            });
        }
        nr_pt += 1;
    }
}

/// The domain's p2m while it is being built: the list itself lives in the domain's p2m
/// frames; `dir` frames list those frames.
struct P2m<'d> {
    dir: &'d [Mfn],
}

impl P2m<'_> {
    /// Machine address of p2m entry `pfn`, given the frame of p2m page `pfn / 512`.
    fn page_mfn<M: MachineMemory>(&self, mem: &M, page: u64) -> Result<Mfn, BuildError> {
        let dir = self
            .dir
            .get((page / PER_PAGE) as usize)
            .ok_or(BuildError::MachineMemory)?;
        Ok(Mfn(mem.read_u64(dir.maddr() + (page % PER_PAGE) * 8)?))
    }
    fn set_page_mfn<M: MachineMemory>(
        &self,
        mem: &M,
        page: u64,
        mfn: Mfn,
    ) -> Result<(), BuildError> {
        let dir = self
            .dir
            .get((page / PER_PAGE) as usize)
            .ok_or(BuildError::MachineMemory)?;
        Ok(mem.write_u64(dir.maddr() + (page % PER_PAGE) * 8, mfn.0)?)
    }
    fn get<M: MachineMemory>(&self, mem: &M, pfn: u64) -> Result<Mfn, BuildError> {
        let page = self.page_mfn(mem, pfn / PER_PAGE)?;
        Ok(Mfn(mem.read_u64(page.maddr() + (pfn % PER_PAGE) * 8)?))
    }
    fn set<M: MachineMemory>(&self, mem: &M, pfn: u64, mfn: Mfn) -> Result<(), BuildError> {
        let page = self.page_mfn(mem, pfn / PER_PAGE)?;
        Ok(mem.write_u64(page.maddr() + (pfn % PER_PAGE) * 8, mfn.0)?)
    }
}

/// Builds a domain. On error every frame allocated for it has been freed again.
pub fn build<M: MachineMemory>(
    mem: &M,
    frames: &mut Frames,
    p: &BuildParams<'_>,
) -> Result<BuiltDomain, BuildError> {
    if !p.domid.is_real() {
        return Err(BuildError::InvalidDomId);
    }
    let kernel = elfnotes::parse(p.image, p.dom0)?;
    let nr_pages = u64::from(p.memory_kib) / 4;
    // More than the machine has: say so, rather than how the layout then breaks.
    if nr_pages > frames.free_count() as u64 {
        return Err(BuildError::NoMemory);
    }
    let modules = if p.dom0 { p.modules } else { &[] };
    let lay = layout(&kernel, nr_pages, p.dom0, initrd_len(modules)?)?;
    let dir_frames = lay.p2m_pages.div_ceil(PER_PAGE);
    // Fail before touching anything if the frames cannot all be had.
    let needed = nr_pages + 1 + dir_frames;
    if needed > frames.free_count() as u64 || dir_frames as usize > MAX_DIR_FRAMES {
        return Err(BuildError::NoMemory);
    }
    let result = populate(mem, frames, p, &kernel, &lay, dir_frames as usize);
    // The new page tables were written directly, not through `PtCtx`.
    frames.tlb.flush();
    if result.is_err() {
        frames.free_all_of(p.domid);
    }
    result
}

/// Allocates a frame for `dom` and zeroes it (no data leaks between domains).
fn alloc_zeroed<M: MachineMemory>(
    mem: &M,
    frames: &mut Frames,
    dom: DomId,
) -> Result<Mfn, BuildError> {
    let mfn = frames.alloc(dom).ok_or(BuildError::NoMemory)?;
    mem.fill(mfn.maddr(), 0, PAGE_SIZE)?;
    Ok(mfn)
}

fn populate<M: MachineMemory>(
    mem: &M,
    frames: &mut Frames,
    p: &BuildParams<'_>,
    kernel: &KernelImage<'_>,
    lay: &Layout,
    dir_frames: usize,
) -> Result<BuiltDomain, BuildError> {
    let dom = p.domid;

    // Frames: the p2m's own first (so the list has somewhere to live), then the rest.
    let mut dir = [Mfn(0); MAX_DIR_FRAMES];
    for d in &mut dir[..dir_frames] {
        *d = alloc_zeroed(mem, frames, dom)?;
    }
    let p2m = P2m {
        dir: &dir[..dir_frames],
    };
    for page in 0..lay.p2m_pages {
        let mfn = alloc_zeroed(mem, frames, dom)?;
        p2m.set_page_mfn(mem, page, mfn)?;
    }
    for pfn in 0..lay.nr_pages {
        let mfn = match pfn.checked_sub(lay.p2m_pfn) {
            Some(page) if page < lay.p2m_pages => p2m.page_mfn(mem, page)?,
            _ => alloc_zeroed(mem, frames, dom)?,
        };
        p2m.set(mem, pfn, mfn)?;
        frames.set_m2p(mfn, pfn);
    }

    // shared_info: the domain's, but outside its pfn space (it maps it by MFN).
    let shared_info = alloc_zeroed(mem, frames, dom)?;
    for vcpu in 0..XEN_LEGACY_MAX_VCPUS {
        let at = offset_of!(SharedInfo, vcpu_info)
            + vcpu * size_of::<VcpuInfo>()
            + offset_of!(VcpuInfo, evtchn_upcall_mask);
        mem.write(shared_info.maddr() + at as u64, &[1])?;
    }
    let max_pfn_at = offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, max_pfn);
    mem.write_u64(shared_info.maddr() + max_pfn_at as u64, lay.nr_pages)?;

    // Copies into the domain's pseudo-physical space by VA, through the p2m.
    let region_end = lay.va(lay.region_pages);
    let for_each_page = |va: u64,
                         len: u64,
                         f: &mut dyn FnMut(u64, u64, u64) -> Result<(), BuildError>|
     -> Result<(), BuildError> {
        let end = va.checked_add(len).ok_or(BuildError::BadImageRange)?;
        if va < lay.virt_base || end > region_end {
            return Err(BuildError::BadImageRange);
        }
        let mut cur = va;
        while cur < end {
            let off = cur & (PAGE - 1);
            let n = (PAGE - off).min(end - cur);
            let mfn = p2m.get(mem, (cur - lay.virt_base) / PAGE)?;
            f(mfn.maddr() + off, cur - va, n)?;
            cur += n;
        }
        Ok(())
    };
    let write_va = |va: u64, data: &[u8]| {
        for_each_page(va, data.len() as u64, &mut |maddr, done, n| {
            Ok(mem.write(maddr, &data[done as usize..(done + n) as usize])?)
        })
    };

    // Kernel segments: file bytes, then zeroes up to memsz (written, not assumed: the
    // frames may hold stale data).
    for seg in kernel.load_segments() {
        let seg = seg?;
        write_va(seg.va, seg.file)?;
        let file_len = seg.file.len() as u64;
        for_each_page(
            seg.va + file_len,
            seg.memsz - file_len,
            &mut |maddr, _, n| Ok(mem.fill(maddr, 0, n as usize)?),
        )?;
    }
    if let Some(va) = kernel.hypercall_page {
        write_va(va, &hypercall_page())?;
    }
    if lay.initrd_len > 0 {
        write_modules(p.modules, |off, data| {
            write_va(lay.va(lay.initrd_pfn) + off, data)
        })?;
    }

    // Special pages (zeroed already: the console ring starts CONNECTED, index 0).
    let mfn_of = |pfn: u64| p2m.get(mem, pfn);
    let rings = match lay.rings_pfn {
        Some(pfn) => Some((mfn_of(pfn)?, mfn_of(pfn + 1)?)),
        None => None,
    };

    let mut si = StartInfo::new_zeroed();
    si.magic[..START_INFO_MAGIC_X86_64.len()].copy_from_slice(START_INFO_MAGIC_X86_64);
    si.nr_pages = lay.nr_pages;
    si.shared_info = shared_info.maddr();
    match rings {
        Some((store, console)) => {
            si.store_mfn = store.0;
            si.store_evtchn = STORE_EVTCHN.0;
            si.console = ConsoleInfo::domu(console, CONSOLE_EVTCHN);
        }
        None => {
            si.flags = SIF_PRIVILEGED | SIF_INITDOMAIN;
            si.console = ConsoleInfo::dom0(0, 0);
        }
    }
    si.pt_base = lay.va(lay.pt_pfn);
    si.nr_pt_frames = lay.nr_pt();
    si.mfn_list = lay.va(lay.p2m_pfn);
    if lay.initrd_len > 0 {
        // A VA inside the initial mapping, as Xen gives a PV dom0 a mapped initrd
        // (SIF_MOD_START_PFN stays clear).
        si.mod_start = lay.va(lay.initrd_pfn);
        si.mod_len = lay.initrd_len;
    }
    let cmd_len = p.cmdline.len().min(MAX_GUEST_CMDLINE - 1);
    si.cmd_line[..cmd_len].copy_from_slice(&p.cmdline[..cmd_len]);
    write_va(lay.va(lay.start_info_pfn), si.as_bytes())?;

    // Bootstrap page tables: L4, L3s, L2s, L1s, in that order from pt_pfn.
    let l4 = mfn_of(lay.pt_pfn)?;
    let table = |level_first: u64, i: u64| mfn_of(lay.pt_pfn + level_first + i);
    let (first_l3, first_l2, first_l1) = (1, 1 + lay.nr_l3, 1 + lay.nr_l3 + lay.nr_l2);
    let vb = lay.virt_base;
    let slot = |va: u64, shift: u32| ((va >> shift) & (PER_PAGE - 1)) * 8;
    for pfn in 0..lay.region_pages {
        let va = lay.va(pfn);
        let (i3, i2, i1) = (
            (va >> 39) - (vb >> 39),
            (va >> 30) - (vb >> 30),
            (va >> 21) - (vb >> 21),
        );
        // Upper-level entries once per table they point to.
        if pfn == 0 || va.is_multiple_of(1 << 39) {
            let l3 = table(first_l3, i3)?;
            mem.write_u64(l4.maddr() + slot(va, 39), l3.maddr() | PTE_TABLE)?;
        }
        if pfn == 0 || va.is_multiple_of(1 << 30) {
            let (l3, l2) = (table(first_l3, i3)?, table(first_l2, i2)?);
            mem.write_u64(l3.maddr() + slot(va, 30), l2.maddr() | PTE_TABLE)?;
        }
        if pfn == 0 || va.is_multiple_of(1 << 21) {
            let (l2, l1) = (table(first_l2, i2)?, table(first_l1, i1)?);
            mem.write_u64(l2.maddr() + slot(va, 21), l1.maddr() | PTE_TABLE)?;
        }
        let flags = if lay.is_page_table(pfn) {
            PTE_PAGE_RO
        } else {
            PTE_PAGE
        };
        let l1 = table(first_l1, i1)?;
        mem.write_u64(l1.maddr() + slot(va, 12), mfn_of(pfn)?.maddr() | flags)?;
    }
    let hv_slots = l4.maddr() + FIRST_HYPERVISOR_L4_SLOT as u64 * 8;
    mem.write(hv_slots, p.hypervisor_l4_slots.as_bytes())?;

    // As Xen's toolstack does: the L4 is pinned (validating the whole tree, so the
    // tables' frames are typed and cannot be mapped writable), and the vCPU's CR3 holds
    // a second reference. Frames the hypervisor itself writes stay writable forever.
    let mut pt = PtCtx::new(mem, frames, dom, p.hypervisor_l4_slots);
    pt.pin(l4, 4).map_err(|_| BuildError::BootstrapTables)?;
    pt.switch_root(l4, None)
        .map_err(|_| BuildError::BootstrapTables)?;
    let mut hypervisor_written = [Some(shared_info), None, None];
    if let Some((store, console)) = rings {
        hypervisor_written[1] = Some(store);
        hypervisor_written[2] = Some(console);
    }
    for mfn in hypervisor_written.into_iter().flatten() {
        if !frames.hold_writable(mfn) {
            return Err(BuildError::BootstrapTables);
        }
    }

    // The directory was only scaffolding.
    for d in &dir[..dir_frames] {
        frames.free(*d);
    }

    let start_info_va = lay.va(lay.start_info_pfn);
    let entry = GuestFrame {
        rip: kernel.entry,
        rsp: lay.va(lay.stack_pfn + 1),
        rsi: start_info_va,
        cs: u64::from(FLAT_KERNEL_CS64),
        ss: u64::from(FLAT_KERNEL_SS64),
        rflags: ENTRY_RFLAGS,
        ..GuestFrame::default()
    };
    let os = kernel.notes.guest_os.unwrap_or(b"");
    let guest_os = heapless::Vec::from_slice(&os[..os.len().min(GUEST_OS_MAX)]).unwrap_or_default();
    Ok(BuiltDomain {
        entry,
        cr3: l4.maddr(),
        nr_pages: lay.nr_pages,
        shared_info,
        console: rings.map(|(_, console)| (console, CONSOLE_EVTCHN)),
        store: rings.map(|(store, _)| (store, STORE_EVTCHN)),
        virt_base: lay.virt_base,
        start_info_va,
        p2m_va: lay.va(lay.p2m_pfn),
        pt_base: lay.va(lay.pt_pfn),
        nr_pt_frames: lay.nr_pt(),
        region_end,
        hypercall_page: kernel.hypercall_page,
        guest_os,
    })
}

/// Writes the module table for `modules` through `write(offset, bytes)`: header, entries,
/// then each module at the offset [`initrd_len`] assumes. Padding is left as it is (the
/// builder's frames are zeroed).
fn write_modules<W>(modules: &[ModuleSpec<'_>], mut write: W) -> Result<(), BuildError>
where
    W: FnMut(u64, &[u8]) -> Result<(), BuildError>,
{
    let count = u32::try_from(modules.len()).map_err(|_| BuildError::BadModules)?;
    write(0, ModulesHeader::new(count).as_bytes())?;
    let mut at = size_of::<ModulesHeader>() as u64;
    let mut end =
        xen_pv_abi::modules::data_start(u64::from(count)).ok_or(BuildError::BadModules)?;
    for m in modules {
        let offset = end
            .checked_next_multiple_of(MODULE_ALIGN)
            .ok_or(BuildError::BadModules)?;
        let mut name = [0u8; MODULE_NAME_LEN];
        name.get_mut(..m.name.len())
            .ok_or(BuildError::BadModules)?
            .copy_from_slice(m.name);
        let entry = ModuleEntry {
            name,
            offset,
            len: m.data.len() as u64,
        };
        write(at, entry.as_bytes())?;
        write(offset, m.data)?;
        at += size_of::<ModuleEntry>() as u64;
        end = offset
            .checked_add(m.data.len() as u64)
            .ok_or(BuildError::BadModules)?;
    }
    Ok(())
}

/// The 64-bit PV hypercall page: 128 stubs of 32 bytes, `int3` padding.
pub fn hypercall_page() -> [u8; PAGE_SIZE] {
    let mut page = [0xcc; PAGE_SIZE];
    for (nr, stub) in page.chunks_exact_mut(32).enumerate() {
        let nr = nr as u32;
        if nr == xen_pv_abi::nr::IRET {
            // push rcx; push r11; push rax; mov eax, 23; syscall — never returns.
            stub[..11].copy_from_slice(&[0x51, 0x41, 0x53, 0x50, 0xb8, 23, 0, 0, 0, 0x0f, 0x05]);
        } else {
            // push rcx; push r11; mov eax, nr; syscall; pop r11; pop rcx; ret
            let imm = nr.to_le_bytes();
            stub[..14].copy_from_slice(&[
                0x51, 0x41, 0x53, 0xb8, imm[0], imm[1], imm[2], imm[3], 0x0f, 0x05, 0x41, 0x5b,
                0x59, 0xc3,
            ]);
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::elfnotes::test_elf::{NotePlace, TestElf, VIRT_BASE, n, s};
    use crate::mmu::guest::{GuestSpace, copy_from_guest, translate};
    use crate::mmu::{FrameInfo, PageType};

    use crate::testutil::{FakeMemory, leak};
    use std::collections::HashSet;
    use std::vec::Vec;
    use xen_pv_abi::elfnote;
    use xen_pv_abi::layout::INVALID_M2P_ENTRY;
    use zerocopy::FromBytes;

    /// 32 MiB of machine memory; the first MiB is not free RAM.
    const MEM_FRAMES: usize = 8192;
    const HV_SLOTS: [u64; 16] = {
        let mut s = [0u64; 16];
        let mut i = 0;
        while i < 16 {
            s[i] = (0x1000 * (i as u64 + 1)) | 0x63;
            i += 1;
        }
        s
    };

    fn machine() -> (FakeMemory, Frames) {
        let mem = FakeMemory::new(MEM_FRAMES * PAGE_SIZE);
        // Stale data everywhere: the builder must zero what the guest sees.
        mem.fill(0, 0x5a, MEM_FRAMES * PAGE_SIZE).unwrap();
        let frames = Frames::new(
            leak(FrameInfo::UNUSABLE, MAX_FRAMES),
            leak(0, MAX_FRAMES),
            core::slice::from_ref(&(0x10_0000..(MEM_FRAMES * PAGE_SIZE) as u64)),
        );
        (mem, frames)
    }

    fn params<'a>(image: &'a [u8], dom0: bool, memory_kib: u32) -> BuildParams<'a> {
        BuildParams {
            domid: if dom0 { DomId(0) } else { DomId(1) },
            image,
            memory_kib,
            dom0,
            cmdline: b"console=hvc0 loglevel=8",
            modules: &[],
            hypervisor_l4_slots: &HV_SLOTS,
        }
    }

    fn read_guest(
        mem: &FakeMemory,
        frames: &Frames,
        d: &BuiltDomain,
        dom: DomId,
        va: u64,
        buf: &mut [u8],
    ) {
        let space = GuestSpace { dom, cr3: d.cr3 };
        copy_from_guest(mem, frames, space, va, buf).unwrap();
    }

    #[test]
    fn domu_start_of_day() {
        let (mem, mut frames) = machine();
        let free_before = frames.free_count();
        let image = TestElf::valid().build();
        let dom = DomId(1);
        let d = build(&mem, &mut frames, &params(&image, false, 8192)).unwrap();
        let space = GuestSpace { dom, cr3: d.cr3 };

        // Accounting: nr_pages + shared_info, directory frames returned.
        assert_eq!(d.nr_pages, 2048);
        assert_eq!(frames.count_of(dom), 2048 + 1);
        assert_eq!(frames.free_count(), free_before - 2049);

        // start_info, read through the guest's own page tables.
        let mut raw = [0u8; size_of::<StartInfo>()];
        read_guest(&mem, &frames, &d, dom, d.entry.rsi, &mut raw);
        let si = StartInfo::read_from_bytes(&raw).unwrap();
        assert_eq!(si.magic_str(), b"xen-3.0-x86_64");
        assert_eq!(si.nr_pages, 2048);
        assert_eq!(si.shared_info, d.shared_info.maddr());
        assert_eq!(si.flags, 0);
        assert_eq!(si.store_evtchn, 1);
        assert_eq!(si.console.domu_evtchn(), EvtchnPort(2));
        assert_eq!(Some((Mfn(si.store_mfn), STORE_EVTCHN)), d.store);
        assert_eq!(Some((si.console.domu_mfn(), CONSOLE_EVTCHN)), d.console);
        assert_eq!(si.cmd_line_bytes(), b"console=hvc0 loglevel=8");
        assert_eq!(
            (si.mod_start, si.mod_len, si.first_p2m_pfn, si.nr_p2m_frames),
            (0, 0, 0, 0)
        );

        // The layout: image (6 pages), p2m (4), start_info, store, console, 5 tables
        // (L4, L3, L2, 2 L1s for the 4 MiB region), stack.
        assert_eq!(si.mfn_list, VIRT_BASE + 6 * PAGE);
        assert_eq!(d.start_info_va, VIRT_BASE + 10 * PAGE);
        assert_eq!(si.pt_base, VIRT_BASE + 13 * PAGE);
        assert_eq!(si.nr_pt_frames, 5);
        assert_eq!(d.entry.rsp, VIRT_BASE + 19 * PAGE);
        assert_eq!(d.region_end, VIRT_BASE + (4 << 20));
        assert_eq!(
            translate(&mem, &frames, space, si.pt_base, false),
            Ok(d.cr3)
        );
        assert_eq!(m2p_pfn(&frames, Mfn(si.store_mfn)), 11);
        assert_eq!(m2p_pfn(&frames, si.console.domu_mfn()), 12);

        // p2m/m2p: distinct frames of the domain, both directions agree.
        let mut seen = HashSet::new();
        for pfn in 0..d.nr_pages {
            let mut b = [0u8; 8];
            read_guest(&mem, &frames, &d, dom, si.mfn_list + pfn * 8, &mut b);
            let mfn = Mfn(u64::from_le_bytes(b));
            assert_eq!(frames.owner(mfn), Some(dom));
            assert_eq!(frames.m2p(mfn), Some(pfn));
            assert!(seen.insert(mfn), "pfn {pfn} shares a frame");
            // Region pages map to their pfn; page tables read-only; nothing beyond.
            let va = VIRT_BASE + pfn * PAGE;
            let is_pt = (13..18).contains(&pfn);
            if pfn < 1024 {
                assert_eq!(translate(&mem, &frames, space, va, false), Ok(mfn.maddr()));
                assert_eq!(
                    translate(&mem, &frames, space, va, true).is_ok(),
                    !is_pt,
                    "pfn {pfn}"
                );
            } else {
                assert!(translate(&mem, &frames, space, va, false).is_err());
            }
        }
        assert!(!seen.contains(&d.shared_info));
        assert_eq!(frames.m2p(d.shared_info), Some(INVALID_M2P_ENTRY));
        assert_eq!(frames.owner(d.shared_info), Some(dom));

        // Hypervisor slots of the L4.
        let mut slots = [0u8; 128];
        mem.read(d.cr3 + 256 * 8, &mut slots).unwrap();
        assert_eq!(slots, *HV_SLOTS.as_bytes());

        // Typed as Xen's toolstack leaves it: L4 pinned + CR3, every table validated,
        // hypervisor-written frames held writable.
        let l4 = frames.type_state(Mfn::containing(d.cr3)).unwrap();
        assert_eq!((l4.ty, l4.count, l4.pinned), (PageType::L4, 2, true));
        for (pfn, ty) in [(14, PageType::L3), (15, PageType::L2), (16, PageType::L1)] {
            let mut b = [0u8; 8];
            read_guest(&mem, &frames, &d, dom, si.mfn_list + pfn * 8, &mut b);
            let st = frames.type_state(Mfn(u64::from_le_bytes(b))).unwrap();
            assert_eq!((st.ty, st.count), (ty, 1), "pfn {pfn}");
        }
        for m in [d.shared_info, Mfn(si.store_mfn), si.console.domu_mfn()] {
            assert_eq!(frames.type_state(m).unwrap().ty, PageType::Writable);
        }

        // Entry registers.
        assert_eq!(d.entry.rip, VIRT_BASE + 0x10);
        assert_eq!(
            (d.entry.cs, d.entry.ss, d.entry.rflags),
            (0xe033, 0xe02b, 0x202)
        );
        assert_eq!((d.entry.rax, d.entry.rdi, d.entry.rbx), (0, 0, 0));
        assert_eq!(d.guest_os.as_slice(), b"pv-test");

        // shared_info: upcalls masked on every vCPU, max_pfn.
        let mut sh = [0u8; size_of::<SharedInfo>()];
        mem.read(d.shared_info.maddr(), &mut sh).unwrap();
        let sh = SharedInfo::read_from_bytes(&sh).unwrap();
        assert!(
            sh.vcpu_info
                .iter()
                .all(|v| v.evtchn_upcall_mask == 1 && v.evtchn_upcall_pending == 0)
        );
        assert_eq!(sh.arch.max_pfn, 2048);
        assert!(sh.evtchn_pending.iter().all(|&w| w == 0));
    }

    fn m2p_pfn(frames: &Frames, mfn: Mfn) -> u64 {
        frames.m2p(mfn).unwrap()
    }

    #[test]
    fn image_contents_and_hypercall_page() {
        let (mem, mut frames) = machine();
        let t = TestElf::valid();
        let image = t.build();
        let dom = DomId(1);
        let d = build(&mem, &mut frames, &params(&image, false, 8192)).unwrap();

        // Text page 0 and 2 as in the file; page 1 was overwritten with the stubs.
        let mut page = [0u8; PAGE_SIZE];
        read_guest(&mem, &frames, &d, dom, VIRT_BASE, &mut page);
        assert_eq!(&page[..], &t.segs[0].data[..PAGE_SIZE]);
        read_guest(&mem, &frames, &d, dom, VIRT_BASE + 2 * PAGE, &mut page);
        assert_eq!(&page[..], &t.segs[0].data[2 * PAGE_SIZE..]);

        assert_eq!(d.hypercall_page, Some(VIRT_BASE + PAGE));
        read_guest(&mem, &frames, &d, dom, VIRT_BASE + PAGE, &mut page);
        assert_eq!(
            &page[..16],
            &[
                0x51, 0x41, 0x53, 0xb8, 0, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3, 0xcc, 0xcc
            ]
        );
        let xen_version = &page[17 * 32..18 * 32];
        assert_eq!(
            &xen_version[..14],
            &[
                0x51, 0x41, 0x53, 0xb8, 17, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3
            ]
        );
        assert!(xen_version[14..].iter().all(|&b| b == 0xcc));
        let iret = &page[23 * 32..24 * 32];
        assert_eq!(
            &iret[..11],
            &[0x51, 0x41, 0x53, 0x50, 0xb8, 0x17, 0, 0, 0, 0x0f, 0x05]
        );
        assert!(iret[11..].iter().all(|&b| b == 0xcc));
        let last = &page[127 * 32..];
        assert_eq!(&last[3..8], &[0xb8, 127, 0, 0, 0]);

        // Data: file bytes, then zeroed bss despite stale machine memory.
        read_guest(&mem, &frames, &d, dom, VIRT_BASE + 3 * PAGE, &mut page);
        assert!(page.iter().all(|&b| b == 0xab));
        for p in 4..6 {
            read_guest(&mem, &frames, &d, dom, VIRT_BASE + p * PAGE, &mut page);
            assert!(page.iter().all(|&b| b == 0), "bss page {p}");
        }
        // Boot stack and pages past it are zero too.
        read_guest(&mem, &frames, &d, dom, d.entry.rsp - PAGE, &mut page);
        assert!(page.iter().all(|&b| b == 0));
        // Console ring: zeroed = connected, empty.
        let (console, _) = d.console.unwrap();
        mem.read(console.maddr(), &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 0));
    }

    #[test]
    fn dom0_start_of_day() {
        let (mem, mut frames) = machine();
        let mut t = TestElf::valid();
        t.set_note(
            elfnote::SUPPORTED_FEATURES,
            (1u32 << 11).to_le_bytes().to_vec(),
        );
        let image = t.build();
        let mut p = params(&image, true, 16384);
        let long: Vec<u8> = std::iter::repeat_n(b'x', 2000).collect();
        p.cmdline = &long;
        let d = build(&mem, &mut frames, &p).unwrap();
        let dom = DomId(0);
        assert_eq!((d.console, d.store), (None, None));
        let mut raw = [0u8; size_of::<StartInfo>()];
        read_guest(&mem, &frames, &d, dom, d.entry.rsi, &mut raw);
        let si = StartInfo::read_from_bytes(&raw).unwrap();
        assert_eq!(si.flags, SIF_PRIVILEGED | SIF_INITDOMAIN);
        assert_eq!(
            (si.store_mfn, si.console.word0, si.console.word1),
            (0, 0, 0)
        );
        assert_eq!(si.cmd_line_bytes().len(), MAX_GUEST_CMDLINE - 1);
        assert_eq!(si.nr_pages, 4096);
        // No ring pages: tables right after start_info (p2m is 8 pages here).
        assert_eq!(si.mfn_list, VIRT_BASE + 6 * PAGE);
        assert_eq!(si.pt_base, VIRT_BASE + 15 * PAGE);
        assert_eq!(frames.count_of(dom), 4096 + 1);
    }

    fn dom0_image() -> Vec<u8> {
        let mut t = TestElf::valid();
        t.set_note(
            elfnote::SUPPORTED_FEATURES,
            (1u32 << 11).to_le_bytes().to_vec(),
        );
        t.build()
    }

    #[test]
    fn dom0_gets_its_modules_as_a_mapped_initrd() {
        let (mem, mut frames) = machine();
        let image = dom0_image();
        let disk: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let modules = [
            ModuleSpec {
                name: b"disk0",
                data: &disk,
            },
            ModuleSpec {
                name: b"tiny",
                data: b"abc",
            },
        ];
        let mut p = params(&image, true, 16384);
        p.modules = &modules;
        let d = build(&mem, &mut frames, &p).unwrap();
        let dom = DomId(0);
        let mut raw = [0u8; size_of::<StartInfo>()];
        read_guest(&mem, &frames, &d, dom, d.entry.rsi, &mut raw);
        let si = StartInfo::read_from_bytes(&raw).unwrap();
        // A VA (no SIF_MOD_START_PFN), page-aligned, after the image, before the p2m.
        assert_eq!(si.flags & xen_pv_abi::start_info::SIF_MOD_START_PFN, 0);
        assert!(si.mod_start > d.virt_base && si.mod_start.is_multiple_of(PAGE));
        assert_eq!(si.mod_len, 4096 + 12288 + 3);
        assert!(si.mod_start + si.mod_len <= si.mfn_list);
        assert!(si.mfn_list + d.nr_pages * 8 <= d.start_info_va);
        // Read the whole initrd back through the guest's page tables and parse it.
        let mut initrd = std::vec![0u8; si.mod_len as usize];
        read_guest(&mem, &frames, &d, dom, si.mod_start, &mut initrd);
        let table = xen_pv_abi::modules::parse(&initrd).unwrap();
        let got: Vec<_> = table.iter().map(Result::unwrap).collect();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].name, got[0].data), (&b"disk0"[..], &disk[..]));
        assert_eq!((got[1].name, got[1].data), (&b"tiny"[..], &b"abc"[..]));
        // The initrd pages are ordinary writable guest pages.
        let space = GuestSpace { dom, cr3: d.cr3 };
        assert!(translate(&mem, &frames, space, si.mod_start + si.mod_len - 1, true).is_ok());
    }

    #[test]
    fn domu_gets_no_module_and_dom0_without_modules_no_initrd() {
        let modules = [ModuleSpec {
            name: b"disk0",
            data: b"data",
        }];
        for dom0 in [false, true] {
            let (mem, mut frames) = machine();
            let image = if dom0 {
                dom0_image()
            } else {
                TestElf::valid().build()
            };
            let mut p = params(&image, dom0, 16384);
            if !dom0 {
                p.modules = &modules;
            }
            let d = build(&mem, &mut frames, &p).unwrap();
            let dom = p.domid;
            let mut raw = [0u8; size_of::<StartInfo>()];
            read_guest(&mem, &frames, &d, dom, d.entry.rsi, &mut raw);
            let si = StartInfo::read_from_bytes(&raw).unwrap();
            assert_eq!((si.mod_start, si.mod_len), (0, 0), "dom0={dom0}");
        }
    }

    #[test]
    fn dom0_too_small_for_its_modules_is_refused_clearly() {
        let (mem, mut frames) = machine();
        let before = frames.free_count();
        let image = dom0_image();
        let disk = std::vec![1u8; 20 << 20];
        let modules = [ModuleSpec {
            name: b"big",
            data: &disk,
        }];
        let mut p = params(&image, true, 16384);
        p.modules = &modules;
        let e = build(&mem, &mut frames, &p).unwrap_err();
        assert!(
            matches!(
                e,
                BuildError::MemoryTooSmallForModules {
                    modules_kib: 20484,
                    memory_kib: 16384
                }
            ),
            "{e:?}"
        );
        assert!(std::format!("{e}").contains("give dom0 more memory"));
        assert_eq!(frames.free_count(), before);
        // Over-long names are refused.
        let modules = [ModuleSpec {
            name: &[b'n'; 32],
            data: b"",
        }];
        p.modules = &modules;
        assert_eq!(
            build(&mem, &mut frames, &p).unwrap_err(),
            BuildError::BadModules
        );
        assert_eq!(frames.free_count(), before);
    }

    #[test]
    fn layout_grows_tables_and_padding() {
        let image = TestElf::valid().build();
        let k = elfnotes::parse(&image, false).unwrap();
        // Large p2m (256 MiB domain = 65536 pages → 128 p2m pages): region over 4 MiB.
        let lay = layout(&k, 65536, false, 0).unwrap();
        assert_eq!(lay.p2m_pages, 128);
        let stack_end = lay.stack_pfn + 1;
        assert_eq!(lay.region_pages % REGION_ALIGN_PAGES, 0);
        assert!(lay.region_pages - stack_end >= REGION_SLACK_PAGES);
        assert_eq!(lay.nr_l1, lay.region_pages / 512);
        assert_eq!(lay.nr_pt(), 1 + 1 + 1 + lay.nr_l1);
        // A stack ending just under a 4 MiB boundary gets another 4 MiB.
        assert_eq!(tables_for(0, 1 << 21, 21), 1);
        assert_eq!(tables_for(0, (1 << 21) + 1, 21), 2);
        assert_eq!(tables_for(VIRT_BASE, VIRT_BASE + (1 << 30), 30), 1);
    }

    fn assert_refused(image: &[u8], memory_kib: u32, want: BuildError) {
        let (mem, mut frames) = machine();
        let before = frames.free_count();
        let got = build(&mem, &mut frames, &params(image, false, memory_kib));
        assert_eq!(got.unwrap_err(), want);
        assert_eq!(frames.free_count(), before, "{want}: frames leaked");
        assert_eq!(frames.count_of(DomId(1)), 0);
    }

    #[test]
    fn refusals_leak_nothing() {
        let mut t = TestElf::valid();
        t.note_place = NotePlace::Nowhere;
        assert_refused(&t.build(), 8192, BuildError::NoXenNotes);

        let mut t = TestElf::valid();
        t.set_note(elfnote::XEN_VERSION, s("xen-4.0"));
        assert_refused(&t.build(), 8192, BuildError::BadXenVersion);

        let mut t = TestElf::valid();
        t.set_note(elfnote::ENTRY, n(VIRT_BASE + 64 * PAGE));
        let refusal = BuildError::EntryOutsideImage {
            entry: VIRT_BASE + 64 * PAGE,
            virt_base: VIRT_BASE,
            linked_at: VIRT_BASE,
            image: (VIRT_BASE, VIRT_BASE + 6 * PAGE),
        };
        assert_refused(&t.build(), 8192, refusal);

        let mut t = TestElf::valid();
        let hv = HYPERVISOR_VIRT_START + (1 << 30);
        t.set_note(elfnote::VIRT_BASE, n(hv));
        t.set_note(elfnote::ENTRY, n(hv + 0x10));
        t.set_note(elfnote::HYPERCALL_PAGE, n(hv + PAGE));
        assert_refused(&t.build(), 8192, BuildError::OverlapsHypervisor);

        // Image at the top of the lower half: its 4 MiB region would leave canonical space.
        let mut t = TestElf::valid();
        let below = 0x0000_8000_0000_0000 - (1 << 21);
        t.set_note(elfnote::VIRT_BASE, n(below));
        t.set_note(elfnote::ENTRY, n(below + 0x10));
        t.set_note(elfnote::HYPERCALL_PAGE, n(below + PAGE));
        assert_refused(&t.build(), 8192, BuildError::RegionOutOfRange);

        let image = TestElf::valid().build();
        // 2 MiB: less than the 4 MiB region.
        assert_refused(&image, 2048, BuildError::MemoryTooSmall);
        assert_refused(&image, 0, BuildError::MemoryTooSmall);
        // 64 MiB: more than the 31 MiB of free RAM.
        assert_refused(&image, 65536, BuildError::NoMemory);
        assert_refused(&image, u32::MAX, BuildError::NoMemory);
        assert_refused(b"not an elf", 8192, BuildError::NotElf64X86_64);
    }

    #[test]
    fn failure_midway_frees_everything() {
        // The frame table claims RAM that machine memory does not have: zeroing fails
        // part-way through, after many frames were allocated.
        let mem = FakeMemory::new(MEM_FRAMES * PAGE_SIZE);
        let mut frames = Frames::new(
            leak(FrameInfo::UNUSABLE, MAX_FRAMES),
            leak(0, MAX_FRAMES),
            core::slice::from_ref(&(0x10_0000..(2 * MEM_FRAMES * PAGE_SIZE) as u64)),
        );
        let before = frames.free_count();
        let image = TestElf::valid().build();
        let err = build(&mem, &mut frames, &params(&image, false, 40000)).unwrap_err();
        assert_eq!(err, BuildError::MachineMemory);
        assert_eq!(frames.free_count(), before);
        assert_eq!(frames.count_of(DomId(1)), 0);

        let mut p = params(&image, false, 8192);
        p.domid = DomId::INVALID;
        assert_eq!(
            build(&mem, &mut frames, &p).unwrap_err(),
            BuildError::InvalidDomId
        );
    }

    #[test]
    fn two_domains_are_disjoint_and_dying_returns_frames() {
        let (mem, mut frames) = machine();
        let before = frames.free_count();
        let image = TestElf::valid().build();
        let a = build(&mem, &mut frames, &params(&image, false, 8192)).unwrap();
        let mut p = params(&image, false, 8192);
        p.domid = DomId(2);
        let b = build(&mem, &mut frames, &p).unwrap();
        assert_ne!(a.cr3, b.cr3);
        assert_eq!(frames.owner(Mfn::containing(b.cr3)), Some(DomId(2)));
        // Domain 2's tables are useless to domain 1.
        let cross = GuestSpace {
            dom: DomId(1),
            cr3: b.cr3,
        };
        assert!(translate(&mem, &frames, cross, b.entry.rsi, false).is_err());
        assert_eq!(frames.free_all_of(DomId(1)), 2049);
        assert_eq!(frames.free_all_of(DomId(2)), 2049);
        assert_eq!(frames.free_count(), before);
    }
}
