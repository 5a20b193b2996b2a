//! The console: the domain's console ring (a domU) or the `console_io` hypercall (dom0),
//! chosen from start_info, with output buffered so each line leaves in one piece — one
//! ring update and one event-channel kick per line, however many fragments formatted it.
//!
//! [`println!`](crate::println) and [`print!`](crate::print) write through the runtime's
//! console ([`console`]); [`io_println!`](crate::io_println) always uses `console_io`.

/// Bytes collected before a flush even without a newline.
pub const LINE_CAPACITY: usize = 256;

/// Collects bytes and hands them on a line at a time (or when full).
#[derive(Clone, Debug)]
pub struct LineBuffer {
    buf: [u8; LINE_CAPACITY],
    len: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            buf: [0; LINE_CAPACITY],
            len: 0,
        }
    }

    /// Appends `bytes`, calling `emit` with each completed line (newline included) and
    /// with the contents whenever the buffer fills up.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for &b in bytes {
            if self.len == LINE_CAPACITY {
                self.take(&mut emit);
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.take(&mut emit);
            }
        }
    }

    /// Hands on whatever is buffered (nothing if empty).
    pub fn take(&mut self, mut emit: impl FnMut(&[u8])) {
        if self.len > 0 {
            emit(&self.buf[..self.len]);
            self.len = 0;
        }
    }

    /// Bytes waiting for a newline.
    pub fn pending(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(target_os = "none")]
pub use kernel::*;

#[cfg(target_os = "none")]
mod kernel {
    use core::fmt::{self, Write};

    use xen_pv_abi::console::{ConsoleRingWriter, EvtchnNotifier, XenconsInterface};
    use xen_pv_abi::hypercall::console_io_write;
    use xen_pv_abi::layout::{MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START, PAGE_SIZE};
    use xen_pv_abi::start_info::StartInfo;
    use xen_pv_abi::{Mfn, Pfn};

    use super::LineBuffer;
    use crate::VIRT_BASE;

    enum Sink {
        Ring(ConsoleRingWriter<EvtchnNotifier>),
        ConsoleIo,
    }

    /// A line-buffered console: the console ring of a domU or `console_io`.
    ///
    /// Most kernels use the runtime's instance through [`console`] and the printing
    /// macros; writes are buffered until a newline (see [`Console::flush`]).
    pub struct Console {
        sink: Sink,
        line: LineBuffer,
    }

    /// The pseudo-physical frame of `mfn`, from the read-only m2p table every PV guest has.
    fn m2p(mfn: Mfn) -> Option<Pfn> {
        let entries = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) / 8;
        if mfn.0 >= entries {
            return None;
        }
        // SAFETY: Xen maps the m2p read-only at MACH2PHYS_VIRT_START in every PV guest and
        // `mfn` indexes inside its window.
        let pfn = unsafe {
            (MACH2PHYS_VIRT_START as *const u64)
                .add(mfn.0 as usize)
                .read_volatile()
        };
        Some(Pfn(pfn))
    }

    impl Console {
        /// The console start_info describes: the ring for a domU whose ring frame lies in
        /// its memory, else `console_io` (dom0, whose console it is).
        ///
        /// # Safety
        ///
        /// The ring page must still be mapped where Xen's start-of-day tables put it
        /// (`VIRT_BASE + pfn * 4096`), and the result must be the only producer of the
        /// ring while it exists (the runtime's own [`console`] is one: use it rather than
        /// a second console on the same ring).
        pub unsafe fn from_start_info(si: &StartInfo) -> Console {
            let ring = si.console_ring().and_then(|(mfn, port)| {
                let pfn = m2p(mfn).filter(|p| mfn.0 != 0 && *p < si.nr_pages())?;
                let va = VIRT_BASE.checked_add(pfn.0.checked_mul(PAGE_SIZE as u64)?)?;
                Some((va as *mut XenconsInterface, port))
            });
            let sink = match ring {
                Some((va, port)) => {
                    // SAFETY: the caller's contract: the ring is mapped at `va` and this
                    // writer is its only producer.
                    let writer = unsafe { ConsoleRingWriter::new(va, EvtchnNotifier(port)) };
                    Sink::Ring(writer)
                }
                None => Sink::ConsoleIo,
            };
            Console {
                sink,
                line: LineBuffer::new(),
            }
        }

        /// A console that writes with the `console_io` hypercall (Xen prints dom0's
        /// output on its own console; a domU's needs `guest_loglvl=all` on Xen).
        pub const fn console_io() -> Console {
            Console {
                sink: Sink::ConsoleIo,
                line: LineBuffer::new(),
            }
        }

        /// Whether output goes to the console ring (rather than `console_io`).
        pub fn uses_ring(&self) -> bool {
            matches!(self.sink, Sink::Ring(_))
        }

        /// Writes `bytes`, a line at a time.
        pub fn write_bytes(&mut self, bytes: &[u8]) {
            let Console { sink, line } = self;
            line.push(bytes, |l| emit(sink, l));
        }

        /// Sends a partial line now.
        pub fn flush(&mut self) {
            let Console { sink, line } = self;
            line.take(|l| emit(sink, l));
        }
    }

    fn emit(sink: &mut Sink, bytes: &[u8]) {
        if let Sink::Ring(ring) = sink {
            if ring.write_all(bytes).is_ok() {
                return;
            }
            // The backend broke the ring: carry on with console_io.
            *sink = Sink::ConsoleIo;
        }
        let _ = console_io_write(bytes);
    }

    impl Write for Console {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.write_bytes(s.as_bytes());
            Ok(())
        }
    }

    static CONSOLE: spin::Mutex<Option<Console>> = spin::Mutex::new(None);

    /// The runtime's console, set up on first use from the start_info copy.
    pub struct ConsoleGuard(spin::MutexGuard<'static, Option<Console>>);

    impl core::ops::Deref for ConsoleGuard {
        type Target = Console;
        fn deref(&self) -> &Console {
            self.0.as_ref().expect("set up by console()")
        }
    }

    impl core::ops::DerefMut for ConsoleGuard {
        fn deref_mut(&mut self) -> &mut Console {
            self.0.as_mut().expect("set up by console()")
        }
    }

    fn setup() -> Console {
        match crate::start_info() {
            // SAFETY: the runtime's console is the ring's only producer, and it is set up
            // on first use, while Xen's start-of-day mappings are in place (a kernel that
            // replaces them prints first, or keeps the ring mapped at its address).
            Some(si) => unsafe { Console::from_start_info(si) },
            None => Console::console_io(),
        }
    }

    /// Locks the runtime's console (the one the printing macros use).
    pub fn console() -> ConsoleGuard {
        let mut guard = CONSOLE.lock();
        if guard.is_none() {
            *guard = Some(setup());
        }
        ConsoleGuard(guard)
    }

    /// Sends a partial line, unless the console is busy.
    pub(crate) fn flush() {
        if let Some(mut c) = CONSOLE.try_lock()
            && let Some(c) = c.as_mut()
        {
            c.flush();
        }
    }

    /// Formats a line to the runtime's console or `console_io`. Used by the macros.
    #[doc(hidden)]
    pub fn _print(io: bool, args: fmt::Arguments<'_>, newline: bool) {
        if io {
            let mut c = Console::console_io();
            let _ = c.write_fmt(args);
            if newline {
                c.write_bytes(b"\n");
            }
            c.flush();
            return;
        }
        let mut c = console();
        let _ = c.write_fmt(args);
        if newline {
            c.write_bytes(b"\n");
        }
    }

    /// Reports a panic on the console, or through `console_io` if the console is busy
    /// (the panic happened while printing).
    #[cfg(feature = "panic-handler")]
    pub(crate) fn print_panic(info: &core::panic::PanicInfo<'_>) {
        let busy = CONSOLE.try_lock().is_none();
        _print(busy, format_args!("panic: {info}"), true);
        flush();
    }
}

/// Prints to the domain's console (ring for a domU, `console_io` for dom0); the text
/// leaves at the next newline.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(false, format_args!($($arg)*), false)
    };
}

/// Prints a line to the domain's console (ring for a domU, `console_io` for dom0): one
/// ring update and one event-channel kick per line.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::_print(false, format_args!($($arg)*), true)
    };
}

/// Prints a line with the `console_io` hypercall, whatever the domain.
#[macro_export]
macro_rules! io_println {
    ($($arg:tt)*) => {
        $crate::console::_print(true, format_args!($($arg)*), true)
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn run(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut lb = LineBuffer::new();
        let mut out = Vec::new();
        for p in pieces {
            lb.push(p, |l| out.push(l.to_vec()));
        }
        (out, lb.pending().to_vec())
    }

    #[test]
    fn one_emit_per_line_however_many_fragments() {
        // Five lines of four fragments each: five emits (five kicks on a ring).
        let mut pieces: Vec<&[u8]> = Vec::new();
        for _ in 0..5 {
            pieces.extend_from_slice(&[b"a=", b"1", b" b=", b"2\n"]);
        }
        let (out, pending) = run(&pieces);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|l| l == b"a=1 b=2\n"));
        assert!(pending.is_empty());
    }

    #[test]
    fn partial_lines_wait_and_long_lines_split_at_capacity() {
        let (out, pending) = run(&[b"no newline yet"]);
        assert!(out.is_empty());
        assert_eq!(pending, b"no newline yet");

        let long = [b'x'; LINE_CAPACITY * 2 + 10];
        let (out, pending) = run(&[&long, b"\n"]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), LINE_CAPACITY);
        assert_eq!(out[2].len(), 11, "the tail and its newline");
        assert!(pending.is_empty());

        let mut lb = LineBuffer::new();
        lb.push(b"tail", |_| panic!("no line yet"));
        let mut got = Vec::new();
        lb.take(|l| got.extend_from_slice(l));
        lb.take(|_| panic!("nothing left"));
        assert_eq!(got, b"tail");
    }
}
