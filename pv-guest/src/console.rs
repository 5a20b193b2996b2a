//! Console output: the console ring for a domU, `console_io` for dom0.
//!
//! The ring is located lazily on first use, so a guest that only uses [`io_write`] never
//! touches it: its machine frame comes from start_info, its pseudo-physical frame from the
//! m2p table the hypervisor maps read-only at `MACH2PHYS_VIRT_START`, and the frame is
//! mapped at `VIRT_BASE + pfn * 4096` by the boot page tables.

use core::fmt::{self, Write};

use guest_abi::EvtchnPort;
use guest_abi::console::{ConsoleRingWriter, EvtchnNotifier, XenconsInterface};
use guest_abi::hypercall::console_io_write;
use guest_abi::layout::{MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START, PAGE_SIZE};
use guest_abi::start_info::StartInfo;

use crate::VIRT_BASE;

enum Backend {
    /// Not looked at yet.
    Unset,
    Ring(ConsoleRingWriter<EvtchnNotifier>),
    ConsoleIo,
}

static CONSOLE: spin::Mutex<Backend> = spin::Mutex::new(Backend::Unset);

/// Where a line goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The domain's console: its ring (domU) or `console_io` (dom0, or no usable ring).
    Console,
    /// Always the `console_io` hypercall.
    ConsoleIo,
}

/// The console ring of a domU, if start_info describes one that lies in our memory.
fn find_ring(si: &StartInfo) -> Option<*mut XenconsInterface> {
    if si.is_initial_domain() {
        return None;
    }
    let mfn = si.console.domu_mfn();
    let m2p_entries = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) / 8;
    if mfn == 0 || mfn >= m2p_entries {
        return None;
    }
    // SAFETY: the m2p is mapped read-only in every PV guest and `mfn` is inside its window.
    let pfn = unsafe {
        (MACH2PHYS_VIRT_START as *const u64)
            .add(mfn as usize)
            .read_volatile()
    };
    if pfn >= si.nr_pages {
        return None;
    }
    Some((VIRT_BASE + pfn * PAGE_SIZE as u64) as *mut XenconsInterface)
}

fn backend_for(si: Option<&StartInfo>) -> Backend {
    match si.and_then(|si| Some((si, find_ring(si)?))) {
        // SAFETY: the ring page is the domain's own console page, mapped by the boot page
        // tables at its pseudo-physical address, and this runtime is its only producer.
        Some((si, ring)) => Backend::Ring(unsafe {
            ConsoleRingWriter::new(ring, EvtchnNotifier(EvtchnPort(si.console.domu_evtchn())))
        }),
        None => Backend::ConsoleIo,
    }
}

/// Writes `bytes` to the domain's console.
pub fn write(bytes: &[u8]) {
    let mut console = CONSOLE.lock();
    write_locked(&mut console, bytes);
}

fn write_locked(console: &mut Backend, bytes: &[u8]) {
    if let Backend::Unset = console {
        *console = backend_for(crate::start_info());
    }
    match console {
        Backend::Ring(ring) => {
            if ring.write_all(bytes).is_err() {
                // The backend broke the ring: keep going on console_io.
                *console = Backend::ConsoleIo;
                let _ = console_io_write(bytes);
            }
        }
        Backend::ConsoleIo | Backend::Unset => {
            let _ = console_io_write(bytes);
        }
    }
}

/// Writes `bytes` with the `console_io` hypercall.
pub fn io_write(bytes: &[u8]) {
    let _ = console_io_write(bytes);
}

/// Collects formatted text so a line leaves in one piece (one ring update or hypercall).
struct LineBuffer {
    target: Target,
    buf: [u8; 256],
    len: usize,
}

impl LineBuffer {
    fn flush(&mut self) {
        let bytes = &self.buf[..self.len];
        match self.target {
            Target::Console => write(bytes),
            Target::ConsoleIo => io_write(bytes),
        }
        self.len = 0;
    }
}

impl Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Formats `args` (plus `\n` if `newline`) to `target`. Used by the printing macros.
#[doc(hidden)]
pub fn _print(target: Target, args: fmt::Arguments<'_>, newline: bool) {
    let mut line = LineBuffer {
        target,
        buf: [0; 256],
        len: 0,
    };
    let _ = line.write_fmt(args);
    if newline {
        let _ = line.write_str("\n");
    }
    line.flush();
}

/// Reports a panic on the console, or through `console_io` if the console is busy (the
/// panic happened while printing).
pub(crate) fn print_panic(info: &core::panic::PanicInfo<'_>) {
    let target = match CONSOLE.try_lock() {
        Some(_) => Target::Console,
        None => Target::ConsoleIo,
    };
    _print(target, format_args!("panic: {info}"), true);
}

/// Prints to the domain's console (ring for a domU, `console_io` for dom0).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print($crate::console::Target::Console, format_args!($($arg)*), false)
    };
}

/// Prints a line to the domain's console (ring for a domU, `console_io` for dom0).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::_print($crate::console::Target::Console, format_args!($($arg)*), true)
    };
}

/// Prints a line with the `console_io` hypercall, whatever the domain.
#[macro_export]
macro_rules! io_println {
    ($($arg:tt)*) => {
        $crate::console::_print($crate::console::Target::ConsoleIo, format_args!($($arg)*), true)
    };
}
