//! Xen system time from the TSC, and the pvclock scale published to guests.
