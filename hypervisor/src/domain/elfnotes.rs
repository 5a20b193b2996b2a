//! Xen ELF notes (PT_NOTE, SHT_NOTE, legacy `__xen_guest`) and Xen's checks on them.
//!
//! INTERFACE STUB: filled in by the memory/builder work.
