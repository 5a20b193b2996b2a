//! The console ring (`io/console.h`): one page shared between a guest and its console
//! backend.

use core::mem::offset_of;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of `in[]` (backend → guest).
pub const XENCONS_IN_SIZE: usize = 1024;
/// Size of `out[]` (guest → backend).
pub const XENCONS_OUT_SIZE: usize = 2048;
/// `connection`: the backend is connected.
pub const XENCONSOLE_CONNECTED: u8 = 0;
/// `connection`: the backend is disconnected.
pub const XENCONSOLE_DISCONNECTED: u8 = 1;

/// `struct xencons_interface` (3092 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XenconsInterface {
    /// Input bytes (backend writes).
    pub in_: [u8; XENCONS_IN_SIZE],
    /// Output bytes (guest writes).
    pub out: [u8; XENCONS_OUT_SIZE],
    /// Input consumer index (guest writes).
    pub in_cons: u32,
    /// Input producer index (backend writes).
    pub in_prod: u32,
    /// Output consumer index (backend writes).
    pub out_cons: u32,
    /// Output producer index (guest writes).
    pub out_prod: u32,
    /// `XENCONSOLE_CONNECTED` or `XENCONSOLE_DISCONNECTED`.
    pub connection: u8,
    /// Padding.
    pub _pad: [u8; 3],
}

/// Ring slot of a free-running `out[]` index.
pub const fn out_slot(idx: u32) -> usize {
    idx as usize & (XENCONS_OUT_SIZE - 1)
}
/// Ring slot of a free-running `in[]` index.
pub const fn in_slot(idx: u32) -> usize {
    idx as usize & (XENCONS_IN_SIZE - 1)
}

const_assert_eq!(core::mem::size_of::<XenconsInterface>(), 3092);
const_assert_eq!(offset_of!(XenconsInterface, out), 1024);
const_assert_eq!(offset_of!(XenconsInterface, in_cons), 3072);
const_assert_eq!(offset_of!(XenconsInterface, in_prod), 3076);
const_assert_eq!(offset_of!(XenconsInterface, out_cons), 3080);
const_assert_eq!(offset_of!(XenconsInterface, out_prod), 3084);
const_assert_eq!(offset_of!(XenconsInterface, connection), 3088);
