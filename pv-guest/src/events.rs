//! Event delivery for the demos: the runtime's ([`xen_pv_rt::events`]): shared_info
//! mapped into the kernel, the upcall registered with the hypervisor, per-port event
//! counts to wait on, and the switch to the FIFO ABI.

pub use xen_pv_rt::events::*;
