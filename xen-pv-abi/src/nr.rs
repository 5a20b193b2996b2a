//! Hypercall numbers (`__HYPERVISOR_*`, `xen/include/public/xen.h`) and the console_io
//! commands, generated from `hypercall-gen/hypercalls.toml` (see [`crate::generated`]) and
//! re-exported here under their long-standing paths.

pub use crate::generated::console_io::*;
pub use crate::generated::nr::*;
