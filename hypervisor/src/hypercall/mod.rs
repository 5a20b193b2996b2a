//! Hypercall dispatch and handlers.
