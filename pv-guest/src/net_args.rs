//! The command line of pv-guest's `demo=net` (see `net_demo`), parsed apart from the
//! kernel so the host tests it.

use crate::cmdline;
use smoltcp::wire::Ipv4Address;

/// What `demo=net` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `net=server`.
    Server,
    /// `net=client`.
    Client,
    /// `net=probe`.
    Probe,
    /// `net=sniff`.
    Sniff,
}

/// The `demo=net` command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Args {
    /// `net=`.
    pub role: Role,
    /// `ip=a.b.c.d/prefix` (all roles but sniff).
    pub ip: Option<(Ipv4Address, u8)>,
    /// `peer=a.b.c.d` (client and probe).
    pub peer: Option<Ipv4Address>,
    /// `tries=` ARP requests of a probe (default 20, 1..=1000).
    pub tries: u32,
    /// `after=<domid>`: the role sends nothing before that domain's `data/net` node
    /// exists (every role publishes it once it is receiving).
    pub after: Option<u16>,
    /// `until=<vid>:<n>,...` (sniff): stop once every listed VLAN had at least that
    /// many frames; the first [`Args::until_len`] entries are used.
    pub until: [(u16, u32); MAX_UNTIL],
    /// Entries of [`Args::until`] in use.
    pub until_len: usize,
}

/// Most `until=` entries.
pub const MAX_UNTIL: usize = 4;

/// `vid:n,vid:n...` with 1..=4 entries, vid 1..=4094, n 1..=100000.
fn parse_until(v: &[u8]) -> Option<([(u16, u32); MAX_UNTIL], usize)> {
    let mut out = [(0u16, 0u32); MAX_UNTIL];
    let mut len = 0;
    for part in v.split(|&b| b == b',') {
        let colon = part.iter().position(|&b| b == b':')?;
        let vid = cmdline::parse_u64(&part[..colon]).filter(|v| (1..=4094).contains(v))?;
        let n = cmdline::parse_u64(&part[colon + 1..]).filter(|n| (1..=100_000).contains(n))?;
        *out.get_mut(len)? = (vid as u16, n as u32);
        len += 1;
    }
    Some((out, len))
}

/// `a.b.c.d` in decimal.
pub fn parse_ipv4(v: &[u8]) -> Option<Ipv4Address> {
    let mut parts = v.split(|&b| b == b'.');
    let mut o = [0u8; 4];
    for byte in &mut o {
        let n = cmdline::parse_u64(parts.next()?)?;
        *byte = u8::try_from(n).ok()?;
    }
    parts
        .next()
        .is_none()
        .then_some(Ipv4Address::new(o[0], o[1], o[2], o[3]))
}

/// The role and its parameters; `None` for a missing or malformed word.
pub fn parse_args(cmd: &[u8]) -> Option<Args> {
    let role = match cmdline::value(cmd, "net")? {
        b"server" => Role::Server,
        b"client" => Role::Client,
        b"probe" => Role::Probe,
        b"sniff" => Role::Sniff,
        _ => return None,
    };
    let ip = match cmdline::value(cmd, "ip") {
        None => None,
        Some(v) => {
            let slash = v.iter().position(|&b| b == b'/')?;
            let prefix = cmdline::parse_u64(&v[slash + 1..]).filter(|&p| p <= 32)?;
            Some((parse_ipv4(&v[..slash])?, prefix as u8))
        }
    };
    let peer = match cmdline::value(cmd, "peer") {
        None => None,
        Some(v) => Some(parse_ipv4(v)?),
    };
    let tries = cmdline::value(cmd, "tries")
        .and_then(cmdline::parse_u64)
        .map_or(20, |n| n.clamp(1, 1000) as u32);
    let after = match cmdline::value(cmd, "after") {
        None => None,
        Some(v) => Some(
            cmdline::parse_u64(v)
                .filter(|&d| d < 0x7ff0)
                .map(|d| d as u16)?,
        ),
    };
    let (until, until_len) = match cmdline::value(cmd, "until") {
        None => ([(0, 0); MAX_UNTIL], 0),
        Some(v) => parse_until(v)?,
    };
    let need_ip = role != Role::Sniff;
    let need_peer = matches!(role, Role::Client | Role::Probe);
    if (need_ip && ip.is_none()) || (need_peer && peer.is_none()) {
        return None;
    }
    Some(Args {
        role,
        ip,
        peer,
        tries,
        after,
        until,
        until_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles() {
        let a = parse_args(b"demo=net net=client ip=10.0.0.2/24 peer=10.0.0.1 after=4").unwrap();
        assert_eq!(a.role, Role::Client);
        assert_eq!(a.ip, Some((Ipv4Address::new(10, 0, 0, 2), 24)));
        assert_eq!(a.peer, Some(Ipv4Address::new(10, 0, 0, 1)));
        assert_eq!((a.tries, a.after, a.until_len), (20, Some(4), 0));
        let a = parse_args(b"net=sniff").unwrap();
        assert_eq!(
            (a.role, a.ip, a.peer, a.after),
            (Role::Sniff, None, None, None)
        );
        let a = parse_args(b"net=sniff until=10:3,20:16").unwrap();
        assert_eq!(&a.until[..a.until_len], &[(10, 3), (20, 16)]);
        let a = parse_args(b"net=probe ip=10.0.0.3/24 peer=10.0.0.1 tries=0").unwrap();
        assert_eq!(a.tries, 1);
    }

    #[test]
    fn refuses_bad_words() {
        for bad in [
            &b"net=router ip=10.0.0.1/24"[..],
            b"net=server",
            b"net=server ip=10.0.0.1",
            b"net=server ip=10.0.0.1/33",
            b"net=server ip=10.0.0.256/24",
            b"net=server ip=10.0.0/24",
            b"net=server ip=10.0.0.1.1/24",
            b"net=client ip=10.0.0.2/24",
            b"net=probe ip=10.0.0.2/24 peer=x",
            b"demo=net",
            b"net=sniff until=",
            b"net=sniff until=10",
            b"net=sniff until=0:3",
            b"net=sniff until=4095:3",
            b"net=sniff until=10:0",
            b"net=sniff until=10:3,",
            b"net=sniff until=1:1,2:1,3:1,4:1,5:1",
            b"net=client ip=10.0.0.2/24 peer=10.0.0.1 after=x",
            b"net=client ip=10.0.0.2/24 peer=10.0.0.1 after=70000",
        ] {
            assert_eq!(
                parse_args(bad),
                None,
                "{}",
                core::str::from_utf8(bad).unwrap()
            );
        }
    }
}
