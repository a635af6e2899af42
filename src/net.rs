//! Small value types about the network that several rooms share, so that each of them
//! does not keep its own copy: who a client is ([`Peer`]), an address range ([`Cidr`])
//! and percent decoding. Pure: no I/O, no sockets; it owns no policy (which ranges are
//! trusted is [`crate::forwarded`]'s, which hosts bypass a proxy is
//! [`crate::config`]'s).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Who the client is, as the program (`REMOTE_ADDR`, `REMOTE_PORT`) and the logs see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client, or one a trusted proxy named with its port.
    Addr(SocketAddr),
    /// A client a trusted proxy named without a port: `REMOTE_PORT` is empty.
    Ip(IpAddr),
    /// A client on a Unix socket: `REMOTE_ADDR=unix-socket` (as websocketd's main
    /// branch) and an empty `REMOTE_PORT`.
    Unix,
}

impl Peer {
    /// The address part: the IP (IPv4-mapped IPv6 shown as IPv4) or `unix-socket`.
    pub fn addr_string(&self) -> String {
        match self {
            Peer::Addr(a) => a.ip().to_canonical().to_string(),
            Peer::Ip(ip) => ip.to_canonical().to_string(),
            Peer::Unix => "unix-socket".to_owned(),
        }
    }

    /// The port, when known.
    pub fn port(&self) -> Option<u16> {
        match self {
            Peer::Addr(a) => Some(a.port()),
            Peer::Ip(_) | Peer::Unix => None,
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Self {
        Peer::Addr(a)
    }
}

impl std::str::FromStr for Peer {
    type Err = std::net::AddrParseError;

    /// `IP:PORT`, `[IPv6]:PORT`, a bare IP, or `unix-socket`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "unix-socket" {
            return Ok(Peer::Unix);
        }
        s.parse::<SocketAddr>()
            .map(Peer::Addr)
            .or_else(|_| s.parse::<IpAddr>().map(Peer::Ip))
    }
}

impl fmt::Display for Peer {
    /// As the logs show it: IPv4-mapped IPv6 as IPv4, as in `REMOTE_ADDR` (on the default
    /// dual-stack `[::]` listener every IPv4 client arrives mapped).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Addr(a) => write!(f, "{}", SocketAddr::new(a.ip().to_canonical(), a.port())),
            Peer::Ip(ip) => write!(f, "{}", ip.to_canonical()),
            Peer::Unix => f.write_str("unix-socket"),
        }
    }
}

/// An address range, `NET/PREFIX`: `--trusted-proxy` entries and `no_proxy` CIDR blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The range of `net`'s first `prefix` bits; `None` when `prefix` is longer than the
    /// address (32 bits for IPv4, 128 for IPv6).
    pub fn new(net: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if net.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { net, prefix })
    }

    /// Whether `ip` is in the range. The families never mix: an IPv4-mapped IPv6 address
    /// is IPv6 here, and a caller that wants it as IPv4 canonicalizes it first.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask_eq(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

/// Whether `a` and `b` agree in their first `prefix` bits (`prefix` at most their length).
fn mask_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// Decodes `%XX` escapes once; malformed escapes stay as they are.
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_print_and_parse() {
        assert_eq!(Peer::Unix.to_string(), "unix-socket");
        assert_eq!("unix-socket".parse::<Peer>().unwrap(), Peer::Unix);
        let p: Peer = "[::ffff:192.0.2.1]:9".parse().unwrap();
        assert_eq!((p.addr_string(), p.port()), ("192.0.2.1".to_owned(), Some(9)));
        assert_eq!(p.to_string(), "192.0.2.1:9");
        assert_eq!(Peer::Ip("::ffff:192.0.2.1".parse().unwrap()).to_string(), "192.0.2.1");
        assert_eq!(
            "[2001:db8::1]:9".parse::<Peer>().unwrap().to_string(),
            "[2001:db8::1]:9"
        );
        let p: Peer = "2001:db8::1".parse().unwrap();
        assert_eq!((p.addr_string(), p.port()), ("2001:db8::1".to_owned(), None));
    }

    #[test]
    fn cidr_ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = Cidr::new(ip("10.1.0.0"), 16).unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(!c.contains(ip("::ffff:10.1.0.9")), "no canonicalization here");
        let v6 = Cidr::new(ip("2001:db8::"), 33).unwrap();
        assert!(v6.contains(ip("2001:db8:7fff::1")));
        assert!(!v6.contains(ip("2001:db8:8000::1")));
        assert!(Cidr::new(ip("0.0.0.0"), 0).unwrap().contains(ip("203.0.113.9")));
        assert!(Cidr::new(ip("10.0.0.0"), 33).is_none());
        assert!(Cidr::new(ip("::"), 129).is_none());
        assert!(Cidr::new(ip("::"), 128).is_some());
    }

    #[test]
    fn percent_decoding_leaves_malformed_escapes() {
        assert_eq!(percent_decode(b"a%20b%2f"), b"a b/");
        assert_eq!(percent_decode(b"%zz%4"), b"%zz%4");
    }
}
