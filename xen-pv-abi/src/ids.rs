//! Newtypes for the identifiers of the ABI, so a port can never be passed where a frame
//! number is expected.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

macro_rules! id_newtype {
    ($(#[$m:meta])* $name:ident($inner:ty)) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
        #[repr(transparent)]
        pub struct $name(pub $inner);

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

id_newtype!(
    /// A domain id (`domid_t`, 16 bits).
    DomId(u16)
);
id_newtype!(
    /// An event channel port (`evtchn_port_t`, 32 bits). Port 0 is never allocated.
    EvtchnPort(u32)
);
id_newtype!(
    /// A virtual CPU of a domain (`vcpuid`, 32 bits as in the hypercall arguments).
    VcpuId(u32)
);
id_newtype!(
    /// A grant reference (`grant_ref_t`, 32 bits).
    GrantRef(u32)
);
id_newtype!(
    /// A machine frame number: machine address >> 12.
    Mfn(u64)
);
id_newtype!(
    /// A guest pseudo-physical frame number.
    Pfn(u64)
);

impl DomId {
    /// The calling domain (`DOMID_SELF`).
    pub const SELF: DomId = DomId(0x7ff0);
    /// I/O memory (`DOMID_IO`).
    pub const IO: DomId = DomId(0x7ff1);
    /// The hypervisor itself (`DOMID_XEN`).
    pub const XEN: DomId = DomId(0x7ff2);
    /// Copy-on-write pages (`DOMID_COW`).
    pub const COW: DomId = DomId(0x7ff3);
    /// No domain (`DOMID_INVALID`).
    pub const INVALID: DomId = DomId(0x7ff4);
    /// Any domain (`DOMID_ANY`).
    pub const ANY: DomId = DomId(0x7ff5);
    /// The idle domain (`DOMID_IDLE`).
    pub const IDLE: DomId = DomId(0x7fff);
    /// First reserved id; real domains are below it.
    pub const FIRST_RESERVED: DomId = DomId(0x7ff0);

    /// Whether this is an ordinary domain id (not one of the reserved values).
    pub const fn is_real(self) -> bool {
        self.0 < Self::FIRST_RESERVED.0
    }
}

impl Mfn {
    /// Machine address of the first byte of this frame.
    pub const fn maddr(self) -> u64 {
        self.0 << crate::layout::PAGE_SHIFT
    }
    /// Frame containing a machine address.
    pub const fn containing(maddr: u64) -> Mfn {
        Mfn(maddr >> crate::layout::PAGE_SHIFT)
    }
}

static_assertions::assert_eq_size!(DomId, u16);
static_assertions::assert_eq_size!(EvtchnPort, u32);
static_assertions::assert_eq_size!(GrantRef, u32);
static_assertions::assert_eq_size!(VcpuId, u32);
static_assertions::assert_eq_size!(Mfn, u64);
static_assertions::assert_eq_size!(Pfn, u64);
