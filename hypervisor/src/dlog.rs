//! Trace points of the core: [`hv_trace!`] and [`hv_debug!`] take a defmt format string.
//!
//! On the bare-metal image they are `defmt::trace!` / `defmt::debug!` (frames on COM2,
//! see `arch/x86_64/defmt_log.rs`; the levels compiled in are chosen by `DEFMT_LOG` at
//! build time). On the host, where the core is unit-tested, they only borrow their
//! arguments (so the expressions stay type-checked and used) and log nothing.
//!
//! Values without a `defmt::Format` implementation go through [`Disp`] (core `Display`)
//! or [`Dbg`] (core `Debug`); both are formatted on the target, which is fine off the
//! fast path.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// Logs through core `Display` (e.g. an error type or `fmt::Arguments`).
pub struct Disp<'a, T: fmt::Display + ?Sized>(pub &'a T);

/// Logs through core `Debug` (e.g. an enum without a defmt implementation).
pub struct Dbg<'a, T: fmt::Debug + ?Sized>(pub &'a T);

#[cfg(target_os = "none")]
impl<T: fmt::Display + ?Sized> defmt::Format for Disp<'_, T> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::Display2Format(self.0).format(f)
    }
}

#[cfg(target_os = "none")]
impl<T: fmt::Debug + ?Sized> defmt::Format for Dbg<'_, T> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::Debug2Format(self.0).format(f)
    }
}

/// Whether a defmt sink is attached (the arch layer found COM2). Without one, frames
/// would be encoded only to be dropped: the trace points skip the encoding.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Says whether trace frames have somewhere to go (the arch layer, after probing).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether trace points should encode their frames.
#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A trace-level point (per-hypercall detail; only in `DEFMT_LOG=trace` images).
#[cfg(target_os = "none")]
macro_rules! hv_trace {
    ($($t:tt)*) => {
        if $crate::dlog::enabled() {
            defmt::trace!($($t)*)
        }
    };
}

/// A debug-level point (domain life cycle, refusals and why).
#[cfg(target_os = "none")]
macro_rules! hv_debug {
    ($($t:tt)*) => {
        if $crate::dlog::enabled() {
            defmt::debug!($($t)*)
        }
    };
}

/// A trace-level point (host build: nothing is logged).
#[cfg(not(target_os = "none"))]
macro_rules! hv_trace {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{ $( let _ = &$arg; )* }};
}

/// A debug-level point (host build: nothing is logged).
#[cfg(not(target_os = "none"))]
macro_rules! hv_debug {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{ $( let _ = &$arg; )* }};
}

pub(crate) use {hv_debug, hv_trace};
