//! Event delivery with the 2-level ABI: shared_info mapped into the kernel, an event
//! callback (the "upcall") registered with the hypervisor, and a count of events per port
//! to wait on.
//!
//! ```ignore
//! let shared = xen_pv_rt::events::init(si)?;          // events masked until a block
//! let port = xen_pv_abi::evtchn::Port::bind_virq(Virq::TIMER, VcpuId(0))?;
//! xen_pv_abi::time::set_timer(xen_pv_abi::time::system_time_ns(shared, VcpuId(0))? + 1_000_000)?;
//! xen_pv_rt::events::wait_until(|| xen_pv_rt::events::count(port.number()) >= 1);
//! ```
//!
//! The upcall entry gets Xen's bounce frame (`rcx r11 rip cs rflags rsp ss`), saves the
//! caller-saved registers, runs xen_pv_abi's 2-level dispatcher and returns with
//! `HYPERVISOR_iret`, which restores the interrupted registers and event mask in one step.

use core::arch::naked_asm;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use xen_pv_abi::events::fifo::{FifoEvents, FifoQueues, init_array_page};
use xen_pv_abi::events::{AtomicPage, EventMemory, two_level::TwoLevel};
use xen_pv_abi::hypercall::{UVMF_INVLPG, update_va_mapping};
use xen_pv_abi::shared_info::{SharedInfo, VcpuInfo};
use xen_pv_abi::start_info::StartInfo;
use xen_pv_abi::traps::{CALLBACKOP_REGISTER, CALLBACKTYPE_EVENT, CallbackRegister};
use xen_pv_abi::{Errno, EvtchnPort, Mfn, VcpuId, generated::call, nr};

/// Ports whose events are counted ([`count`]).
pub const COUNTED_PORTS: usize = 256;

/// The FIFO ABI's control block (vCPU 0's, at offset 0) and first event-array page
/// (ports 0..1024), in the kernel image; shared with the hypervisor once
/// [`switch_to_fifo`] succeeds.
static FIFO_CONTROL: AtomicPage = AtomicPage::new();
static FIFO_ARRAY: AtomicPage = AtomicPage::new();
/// The FIFO consumer's state (per-queue heads), `None` while the 2-level ABI is in use.
static FIFO: spin::Mutex<Option<FifoQueues<&'static AtomicPage>>> = spin::Mutex::new(None);

/// A page of the kernel image whose mapping is replaced by shared_info.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Never accessed through a Rust reference of this type: once remapped it is the
/// hypervisor's shared_info, viewed only as an [`AtomicPage`].
static mut SHARED_INFO_PAGE: Page = Page([0; 4096]);

/// The mapped shared_info, null before [`shared_info`].
static SHARED: AtomicPtr<AtomicPage> = AtomicPtr::new(core::ptr::null_mut());
static COUNTS: [AtomicU32; COUNTED_PORTS] = [const { AtomicU32::new(0) }; COUNTED_PORTS];
static UPCALLS: AtomicU64 = AtomicU64::new(0);

const UPCALL_MASK: usize = core::mem::offset_of!(SharedInfo, vcpu_info)
    + core::mem::offset_of!(VcpuInfo, evtchn_upcall_mask);
const UPCALL_PENDING: usize = core::mem::offset_of!(SharedInfo, vcpu_info)
    + core::mem::offset_of!(VcpuInfo, evtchn_upcall_pending);

/// Maps shared_info over a page of the kernel image (once) and returns it; read system
/// time from it with `xen_pv_abi::time::system_time_ns`.
pub fn shared_info(si: &StartInfo) -> Result<&'static AtomicPage, Errno> {
    let p = SHARED.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: set below to the mapped, page-aligned shared_info, never unmapped.
        return Ok(unsafe { &*p });
    }
    let va = (&raw mut SHARED_INFO_PAGE).cast::<u8>();
    // Present, writable, user (a PV kernel runs at CPL3).
    let pte = si.shared_info_mfn().maddr() | 0x7;
    // SAFETY: the page belongs to our image and no reference to it exists; from now on it
    // is only accessed through the atomics of AtomicPage.
    unsafe { update_va_mapping(va as u64, pte, UVMF_INVLPG)? };
    // SAFETY: `va` is page-aligned, mapped to shared_info for the rest of the kernel's
    // life, and only accessed atomically.
    let page = unsafe { AtomicPage::from_ptr(va) };
    SHARED.store(
        page as *const AtomicPage as *mut AtomicPage,
        Ordering::Release,
    );
    Ok(page)
}

/// Maps shared_info, masks events and registers the upcall; returns shared_info. Events
/// stay masked until [`enable`] or a [`wait_until`].
pub fn init(si: &StartInfo) -> Result<&'static AtomicPage, Errno> {
    let page = shared_info(si)?;
    page.store_u8(UPCALL_MASK, 1);
    let reg = CallbackRegister {
        kind: CALLBACKTYPE_EVENT as u16,
        flags: 0,
        pad: 0,
        address: upcall_entry as *const () as u64,
    };
    // SAFETY: registers our upcall entry, which preserves every register it does not
    // return through HYPERVISOR_iret; `reg` is a valid callback_register.
    let r = unsafe {
        call::callback_op(
            CALLBACKOP_REGISTER,
            (&raw const reg).cast::<core::ffi::c_void>(),
        )
    };
    Errno::check(r).map(|_| page)
}

/// Unmasks events; an event that arrived while masked is delivered now.
pub fn enable() {
    let Some(page) = page() else { return };
    page.store_u8(UPCALL_MASK, 0);
    if page.load_u8(UPCALL_PENDING) != 0 {
        // Any hypercall returns through the upcall when one is due.
        let _ = xen_pv_abi::hypercall::xen_version();
    }
}

/// Masks events.
pub fn disable() {
    if let Some(page) = page() {
        page.store_u8(UPCALL_MASK, 1);
    }
}

/// Events handled on `port` so far (0 for ports from [`COUNTED_PORTS`] on).
pub fn count(port: EvtchnPort) -> u32 {
    COUNTS
        .get(port.0 as usize)
        .map_or(0, |c| c.load(Ordering::Acquire))
}

/// Switches the domain to the FIFO event-channel ABI (`init_control` for vCPU 0, one
/// event-array page with every word masked first, as Linux does); returns `link_bits`.
/// Ports bound afterwards start masked: unmask them with [`fifo_unmask`].
pub fn switch_to_fifo(si: &StartInfo) -> Result<u8, Errno> {
    init_array_page(&FIFO_ARRAY);
    let mfn = |page: &AtomicPage| own_mfn(si, page as *const AtomicPage as u64);
    disable();
    *FIFO.lock() = Some(FifoQueues::new(&FIFO_CONTROL, 0)?);
    let link_bits = xen_pv_abi::evtchn::init_control(mfn(&FIFO_CONTROL), 0, VcpuId(0))?;
    xen_pv_abi::evtchn::expand_array(mfn(&FIFO_ARRAY))?;
    Ok(link_bits)
}

/// Unmasks `port` under the FIFO ABI (guest side, then `EVTCHNOP_unmask` if it is
/// pending, so the hypervisor links it).
pub fn fifo_unmask(port: EvtchnPort) -> Result<(), Errno> {
    let array = [&FIFO_ARRAY];
    FifoEvents::new(&array[..]).unmask(port)?.complete()
}

/// The machine frame of a page of the kernel image (mapped at `VIRT_BASE + pfn * 4096`),
/// from the p2m list.
fn own_mfn(si: &StartInfo, va: u64) -> Mfn {
    let pfn = (va - crate::VIRT_BASE) >> 12;
    assert!(pfn < si.nr_pages, "not a page of the kernel image");
    let list = si.mfn_list as *const u64;
    // SAFETY: the domain builder maps mfn_list with one entry per page of the domain,
    // and `pfn < nr_pages` was checked.
    Mfn(unsafe { list.add(pfn as usize).read_volatile() })
}

/// Starts counting `port`'s events from 0 (port numbers are reused after a close).
pub fn reset_count(port: EvtchnPort) {
    if let Some(c) = COUNTS.get(port.0 as usize) {
        c.store(0, Ordering::Release);
    }
}

/// Upcalls entered so far.
pub fn upcalls() -> u64 {
    UPCALLS.load(Ordering::Acquire)
}

/// Blocks (`SCHEDOP_block`) until `done()` holds, re-checking after every event; returns
/// how many times it blocked. Events are left enabled. No wake-up is lost between the check
/// and the block: events are masked for the check and the block unmasks them.
pub fn wait_until(mut done: impl FnMut() -> bool) -> u64 {
    let mut blocks = 0;
    loop {
        disable();
        if done() {
            enable();
            return blocks;
        }
        let _ = xen_pv_abi::sched::block();
        blocks += 1;
    }
}

fn page() -> Option<&'static AtomicPage> {
    let p = SHARED.load(Ordering::Acquire);
    // SAFETY: non-null only once pointing at the mapped shared_info (see `shared_info`).
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The Rust side of the upcall: dispatch every pending, unmasked port, through the FIFO
/// queues once the domain switched to them, else the 2-level bitmaps.
extern "C" fn on_upcall() {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    let Some(page) = page() else { return };
    let handle = |port: EvtchnPort| {
        if let Some(c) = COUNTS.get(port.0 as usize) {
            c.fetch_add(1, Ordering::Release);
        }
    };
    // The upcall runs with events masked and never nests, so the lock is free unless
    // the interrupted code held it (switch_to_fifo, with events masked too).
    if let Some(mut fifo) = FIFO.try_lock()
        && let Some(queues) = fifo.as_mut()
    {
        // The upcall-pending flag is the 2-level ABI's and the FIFO ABI's alike.
        page.store_u8(UPCALL_PENDING, 0);
        let array = [&FIFO_ARRAY];
        queues.dispatch(&array[..], handle);
        return;
    }
    let _ = TwoLevel::new(page).dispatch(VcpuId(0), handle);
}

/// The event callback: after `pop rcx; pop r11` Xen's bounce frame is a hardware
/// interrupt frame; the 9 pushes keep the stack 16-byte aligned for the call; then
/// `iret_context` (`rax r11 rcx flags=0`) goes below the frame for `HYPERVISOR_iret`.
#[unsafe(naked)]
unsafe extern "C" fn upcall_entry() {
    naked_asm!(
        "pop %rcx",
        "pop %r11",
        "push %rax",
        "push %rcx",
        "push %rdx",
        "push %rsi",
        "push %rdi",
        "push %r8",
        "push %r9",
        "push %r10",
        "push %r11",
        "cld",
        "call {handler}",
        "pop %r11",
        "pop %r10",
        "pop %r9",
        "pop %r8",
        "pop %rdi",
        "pop %rsi",
        "pop %rdx",
        "pop %rcx",
        "pop %rax",
        "push $0",
        "push %rcx",
        "push %r11",
        "push %rax",
        "mov ${iret}, %eax",
        "syscall",
        "ud2",
        handler = sym on_upcall,
        iret = const nr::IRET,
        options(att_syntax)
    )
}
