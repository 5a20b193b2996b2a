//! Ethernet and 802.1Q header parsing, and the egress rewrite (tag kept, added or
//! removed) the caller applies while copying a frame to a port.

use super::VlanId;

/// Length of an Ethernet header without a VLAN tag: destination, source, EtherType.
pub const ETH_HLEN: usize = 14;
/// Length of an 802.1Q tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Longest untagged frame accepted (without FCS): 1500 bytes of payload + header.
pub const MAX_UNTAGGED: usize = 1514;
/// Longest tagged frame accepted (without FCS).
pub const MAX_TAGGED: usize = MAX_UNTAGGED + VLAN_TAG_LEN;
/// The 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;

/// Offset of the EtherType / TPID field.
const TYPE_OFF: usize = 12;

/// A MAC address.
pub type Mac = [u8; 6];

/// True for group (multicast and broadcast) addresses: the I/G bit of the first octet.
pub const fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// Why a frame failed header checks (before any port configuration is looked at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than an Ethernet header.
    Runt,
    /// Longer than the maximum for its kind (tagged or untagged).
    Oversize,
    /// A TPID of 0x8100 with a truncated tag or a VLAN id of 0 or 4095.
    BadTag,
}

/// The parts of an Ethernet header the switch looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Destination address.
    pub dst: Mac,
    /// Source address.
    pub src: Mac,
    /// The VLAN of the 802.1Q tag, if the frame carries one.
    pub tag: Option<VlanId>,
}

/// Parses and checks the header of a frame as received (without FCS).
pub fn parse(frame: &[u8]) -> Result<Header, HeaderError> {
    if frame.len() < ETH_HLEN {
        return Err(HeaderError::Runt);
    }
    let mut dst = [0; 6];
    let mut src = [0; 6];
    dst.copy_from_slice(&frame[0..6]);
    src.copy_from_slice(&frame[6..12]);
    let ethertype = u16::from_be_bytes([frame[TYPE_OFF], frame[TYPE_OFF + 1]]);
    if ethertype != TPID_8021Q {
        if frame.len() > MAX_UNTAGGED {
            return Err(HeaderError::Oversize);
        }
        return Ok(Header {
            dst,
            src,
            tag: None,
        });
    }
    if frame.len() < ETH_HLEN + VLAN_TAG_LEN {
        return Err(HeaderError::BadTag);
    }
    if frame.len() > MAX_TAGGED {
        return Err(HeaderError::Oversize);
    }
    let tci = u16::from_be_bytes([frame[14], frame[15]]);
    // VLAN 0 (priority tag) and 4095 (reserved) are not VLANs a port can carry.
    let vid = VlanId::new(tci & 0x0fff).ok_or(HeaderError::BadTag)?;
    Ok(Header {
        dst,
        src,
        tag: Some(vid),
    })
}

/// How a delivered frame must leave on its egress port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Exactly as received (both sides untagged, or both tagged: the ingress tag, PCP
    /// and DEI included, is kept).
    AsIs,
    /// Received untagged, leaves with an 802.1Q tag for this VLAN inserted after the
    /// source address (TPID 0x8100, PCP 0, DEI 0).
    Tagged(VlanId),
    /// Received tagged, leaves with its 4-byte tag removed.
    Untagged,
}

impl Egress {
    /// Length on the wire of a frame of `len` bytes (as received) after the rewrite.
    /// The switch only produces rewrites of frames that passed [`parse`], so `len` is
    /// at least [`ETH_HLEN`], and at least 18 for [`Egress::Untagged`].
    pub const fn len(self, len: usize) -> usize {
        match self {
            Egress::AsIs => len,
            Egress::Tagged(_) => len + VLAN_TAG_LEN,
            Egress::Untagged => len.saturating_sub(VLAN_TAG_LEN),
        }
    }

    /// Writes `frame` rewritten into `out`; returns the bytes written, or `None` when
    /// `out` is too short or `frame` too short for the rewrite.
    pub fn write(self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        let n = self.len(frame.len());
        let out = out.get_mut(..n)?;
        match self {
            Egress::AsIs => out.copy_from_slice(frame),
            Egress::Tagged(vid) => {
                let (head, rest) = frame.split_at_checked(TYPE_OFF)?;
                out[..TYPE_OFF].copy_from_slice(head);
                out[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
                out[14..16].copy_from_slice(&vid.get().to_be_bytes());
                out[16..].copy_from_slice(rest);
            }
            Egress::Untagged => {
                let rest = frame.get(TYPE_OFF + VLAN_TAG_LEN..)?;
                out[..TYPE_OFF].copy_from_slice(&frame[..TYPE_OFF]);
                out[TYPE_OFF..].copy_from_slice(rest);
            }
        }
        Some(n)
    }
}
