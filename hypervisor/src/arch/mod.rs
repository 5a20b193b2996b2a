//! Architecture layer: everything that touches the hardware. Only built for bare metal
//! (`target_os = "none"`); the portable core reaches it only through
//! [`crate::platform`].

pub mod x86_64;
