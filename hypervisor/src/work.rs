//! Work accounting of one entry into the hypervisor, for the host property tests.
//!
//! Every loop whose length a guest controls (batch elements, ports scanned, page-table
//! entries (de)validated, guest memory copied) calls [`step`]. Host tests read
//! [`steps`] before and after an entry and assert the difference stays under a fixed
//! bound, whatever the guest asked for: the evidence that preemption (continuations,
//! batch limits, the page-table work budget) bounds every entry. In the hypervisor
//! proper [`step`] compiles to nothing.

/// Counts `n` units of work of the current entry (a no-op outside host tests).
#[inline(always)]
pub fn step(n: u64) {
    #[cfg(test)]
    counter::add(n);
    #[cfg(not(test))]
    let _ = n;
}

/// Work counted on this thread so far (wrapping).
#[cfg(test)]
pub fn steps() -> u64 {
    counter::get()
}

#[cfg(test)]
mod counter {
    extern crate std;
    use core::cell::Cell;

    std::thread_local! {
        static STEPS: Cell<u64> = const { Cell::new(0) };
    }

    pub(super) fn add(n: u64) {
        STEPS.with(|c| c.set(c.get().wrapping_add(n)));
    }

    pub(super) fn get() -> u64 {
        STEPS.with(Cell::get)
    }
}
