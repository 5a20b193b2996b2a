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
    /// Milliseconds to wait after connecting before a client connects or a probe
    /// starts (so every interface in a test is up first).
    pub delay_ms: u64,
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
    let delay_ms = cmdline::value(cmd, "delay")
        .and_then(cmdline::parse_u64)
        .map_or(0, |n| n.min(60_000));
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
        delay_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles() {
        let a = parse_args(b"demo=net net=client ip=10.0.0.2/24 peer=10.0.0.1 delay=3000").unwrap();
        assert_eq!(a.role, Role::Client);
        assert_eq!(a.ip, Some((Ipv4Address::new(10, 0, 0, 2), 24)));
        assert_eq!(a.peer, Some(Ipv4Address::new(10, 0, 0, 1)));
        assert_eq!((a.tries, a.delay_ms), (20, 3000));
        let a = parse_args(b"net=sniff").unwrap();
        assert_eq!((a.role, a.ip, a.peer), (Role::Sniff, None, None));
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
