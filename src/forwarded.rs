//! `--trusted-proxy`: who the client really is when a reverse proxy stands in front.
//! Pure: parses the CIDR list and, for a peer inside it, the `Forwarded` (RFC 7239) or
//! `X-Forwarded-For` / `X-Forwarded-Proto` headers. Knows nothing of sockets or servers.
//!
//! Rules (written down in the README, "Run behind nginx"):
//! - Headers are read only when the connection's own peer is trusted (a CIDR in the list,
//!   or any Unix-socket client when the list holds `unix`). From anyone else they are
//!   ignored, so a client cannot spoof its address.
//! - `X-Forwarded-For` wins over `Forwarded` when both are present: nginx, HAProxy,
//!   Caddy, Traefik and cloud balancers all append to `X-Forwarded-For` by default and pass
//!   a client's own `Forwarded` through untouched, so preferring `Forwarded` would let
//!   any client behind them pick its address. (A proxy that writes only `Forwarded` must
//!   remove `X-Forwarded-For`.) The hops are walked
//!   from the right (nearest) while they are trusted proxies; the first untrusted one is
//!   the client. If every hop is trusted, the left-most is the client. A hop that is not
//!   an IP (`unknown`, an obfuscated `_name`, garbage) ends the walk: the client is then
//!   the last trusted address seen (or the peer itself), never a made-up one.
//! - The port (`REMOTE_PORT`) comes from the chosen hop when it carries one
//!   (`for="[2001:db8::1]:4711"`, `192.0.2.1:4711`); otherwise it is unknown (empty).
//! - The scheme: `proto=` of the chosen `Forwarded` element, else the right-most
//!   `X-Forwarded-Proto` value (the one the nearest proxy wrote, so the proxy must set
//!   it rather than pass a client's through), else the connection's.
//!   `https`/`wss` mean TLS (`HTTPS=on`, `https` origins); `http`/`ws` mean not.

use std::net::{IpAddr, SocketAddr};

use hyper::http::HeaderMap;

use crate::net::{Cidr, Peer};

/// A `--trusted-proxy` value that is not a range (a startup error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --trusted-proxy={value}: expected ADDR/PREFIX, an address, or unix")]
pub struct CidrError {
    value: String,
}

/// One `--trusted-proxy` range: `ADDR/PREFIX`, or a bare address (a single host). An
/// IPv4-mapped IPv6 address is taken as the IPv4 address it maps.
fn parse_cidr(s: &str) -> Result<Cidr, CidrError> {
    let bad = || CidrError { value: s.to_owned() };
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(addr);
    let net: IpAddr = addr.parse().map_err(|_| bad())?;
    let net = net.to_canonical();
    let prefix = match prefix {
        None => Some(if net.is_ipv4() { 32 } else { 128 }),
        Some(p) => p.parse::<u8>().ok(),
    };
    prefix.and_then(|p| Cidr::new(net, p)).ok_or_else(bad)
}

/// The `--trusted-proxy` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<Cidr>,
    /// `unix` was listed: clients on Unix sockets are trusted proxies.
    unix: bool,
}

/// The client as seen through trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub peer: Peer,
    pub tls: bool,
}

impl TrustedProxies {
    /// Parses the flag values; each may itself be a comma list.
    pub fn parse(values: &[String]) -> Result<Self, CidrError> {
        let mut out = TrustedProxies::default();
        for word in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
            if word.is_empty() {
                continue;
            }
            if word == "unix" {
                out.unix = true;
            } else {
                out.nets.push(parse_cidr(word)?);
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && !self.unix
    }

    /// Whether `ip` is in a listed range (IPv4-mapped IPv6 addresses count as IPv4).
    fn trusts_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// Whether headers from this connection peer may be believed.
    pub fn trusts(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Addr(a) => self.trusts_ip(a.ip()),
            Peer::Ip(ip) => self.trusts_ip(*ip),
            Peer::Unix => self.unix,
        }
    }

    /// The client behind `peer`, from the request headers if `peer` is trusted; else the
    /// peer itself and the connection's own scheme.
    pub fn client(&self, peer: Peer, tls: bool, headers: &HeaderMap) -> Client {
        let own = Client { peer, tls };
        if !self.trusts(&peer) {
            return own;
        }
        let xff: Vec<&str> = header_values(headers, "x-forwarded-for").collect();
        let hops: Vec<Hop> = if !xff.is_empty() {
            xff.iter()
                .flat_map(|v| v.split(','))
                .map(|v| Hop {
                    node: Some(parse_node(v)),
                    proto: None,
                })
                .collect()
        } else {
            header_values(headers, "forwarded")
                .flat_map(|v| split_outside_quotes(v, ','))
                .map(forwarded_pairs)
                .map(|pairs| Hop {
                    node: pairs.iter().find(|(k, _)| k == "for").map(|(_, v)| parse_node(v)),
                    proto: pairs.iter().find(|(k, _)| k == "proto").map(|(_, v)| v.clone()),
                })
                .collect()
        };
        let chosen = self.choose(&hops);
        let client_peer = chosen.and_then(|h| h.node.flatten()).unwrap_or(peer);
        let proto = chosen.and_then(|h| h.proto.clone()).or_else(|| {
            header_values(headers, "x-forwarded-proto")
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .last()
                .map(str::to_owned)
        });
        let tls = match proto.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("https" | "wss") => true,
            Some("http" | "ws") => false,
            _ => tls,
        };
        Client { peer: client_peer, tls }
    }

    /// The hop that names the client: walking from the right, the first untrusted one;
    /// at an unusable hop, the trusted one to its right (if any).
    fn choose<'h>(&self, hops: &'h [Hop]) -> Option<&'h Hop> {
        let mut last_trusted = None;
        for hop in hops.iter().rev() {
            match hop.node {
                Some(Some(node)) => {
                    if self.trusts(&node) {
                        last_trusted = Some(hop);
                    } else {
                        return Some(hop);
                    }
                }
                _ => return last_trusted,
            }
        }
        last_trusted
    }
}

struct Hop {
    /// `None`: no `for=` in this element; `Some(None)`: not an address.
    node: Option<Option<Peer>>,
    proto: Option<String>,
}

fn header_values<'a>(headers: &'a HeaderMap, name: &'static str) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
}

/// Splits on `sep` except inside double quotes (RFC 7239 values may be quoted-strings).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// One `Forwarded` element's `key=value` pairs, keys lower-cased, values unquoted.
fn forwarded_pairs(element: &str) -> Vec<(String, String)> {
    split_outside_quotes(element, ';')
        .into_iter()
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let v = v.trim();
            let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(q) => q.replace('\\', ""),
                None => v.to_owned(),
            };
            Some((k.trim().to_ascii_lowercase(), v))
        })
        .collect()
}

/// A node: `IP`, `IP:PORT`, `[IPv6]`, `[IPv6]:PORT`; `None` for anything else
/// (`unknown`, `_obfuscated`, an obfuscated port, garbage).
fn parse_node(s: &str) -> Option<Peer> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(Peer::Addr(SocketAddr::new(a.ip().to_canonical(), a.port())));
    }
    let bare = s.strip_prefix('[').and_then(|b| b.strip_suffix(']')).unwrap_or(s);
    bare.parse::<IpAddr>().ok().map(|ip| Peer::Ip(ip.to_canonical()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::http::HeaderValue;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn peer(s: &str) -> Peer {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = trusted(&["10.1.0.0/16"]);
        assert!(c.trusts_ip(ip("10.1.200.3")));
        assert!(!c.trusts_ip(ip("10.2.0.1")));
        assert!(c.trusts_ip(ip("::ffff:10.1.0.9")), "mapped IPv4 counts");
        assert!(trusted(&["::ffff:10.1.0.0/16"]).trusts_ip(ip("10.1.0.9")), "both ways");
        let one = trusted(&["127.0.0.1"]);
        assert!(one.trusts_ip(ip("127.0.0.1")));
        assert!(!one.trusts_ip(ip("127.0.0.2")));
        let v6 = trusted(&["[2001:db8::]/33"]);
        assert!(v6.trusts_ip(ip("2001:db8:7fff::1")));
        assert!(!v6.trusts_ip(ip("2001:db8:8000::1")));
        let all = trusted(&["0.0.0.0/0"]);
        assert!(all.trusts_ip(ip("203.0.113.9")));
        assert!(!all.trusts_ip(ip("::1")), "families never mix");
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/", "/8", "1.2.3.4/x"] {
            let e = parse_cidr(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid --trusted-proxy="), "{e}");
        }
        let t = trusted(&["127.0.0.1/32,::1", "unix"]);
        assert!(t.trusts(&Peer::Unix));
        assert!(t.trusts(&peer("[::1]:9")));
        assert!(!trusted(&["127.0.0.1"]).trusts(&Peer::Unix));
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = t.client(peer("192.0.2.7:5000"), false, &h);
        assert_eq!(
            c,
            Client {
                peer: peer("192.0.2.7:5000"),
                tls: false
            }
        );
        let c = TrustedProxies::default().client(peer("10.0.0.1:5000"), false, &h);
        assert_eq!(c.peer, peer("10.0.0.1:5000"), "empty list trusts nobody");
        assert_eq!(TrustedProxies::default().client(Peer::Unix, false, &h).peer, Peer::Unix);
    }

    #[test]
    fn x_forwarded_for_takes_the_rightmost_untrusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.0.0.9")]);
        let c = t.client(peer("10.0.0.1:5000"), false, &h);
        assert_eq!(
            c.peer,
            peer("198.51.100.4"),
            "the spoofed left-most entry is not believed"
        );
        assert_eq!(c.peer.port(), None);
        let h = headers(&[("x-forwarded-for", "10.0.0.3"), ("x-forwarded-for", "10.0.0.2")]);
        assert_eq!(
            t.client(peer("10.0.0.1:1"), false, &h).peer,
            peer("10.0.0.3"),
            "all trusted: left-most"
        );
        let h = headers(&[("x-forwarded-for", "198.51.100.4, unknown, 10.0.0.2")]);
        assert_eq!(
            t.client(peer("10.0.0.1:1"), false, &h).peer,
            peer("10.0.0.2"),
            "stops at garbage"
        );
        let h = headers(&[("x-forwarded-for", "garbage")]);
        assert_eq!(t.client(peer("10.0.0.1:1"), false, &h).peer, peer("10.0.0.1:1"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:4711")]);
        assert_eq!(t.client(peer("10.0.0.1:1"), false, &h).peer, peer("[2001:db8::1]:4711"));
    }

    #[test]
    fn forwarded_carries_port_and_proto_and_yields_to_x_forwarded_for() {
        let t = trusted(&["127.0.0.1", "unix"]);
        let both = headers(&[("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "203.0.113.1")]);
        assert_eq!(t.client(Peer::Unix, false, &both).peer, peer("203.0.113.1"));
        let h = headers(&[
            (
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https;by=_x"#,
            ),
            ("x-forwarded-proto", "http"),
        ]);
        let c = t.client(Peer::Unix, false, &h);
        assert_eq!(
            c,
            Client {
                peer: peer("[2001:db8:cafe::17]:4711"),
                tls: true
            }
        );
        let h = headers(&[
            ("forwarded", "For=192.0.2.60;Proto=http"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = t.client(peer("127.0.0.1:9"), true, &h);
        assert_eq!(
            c,
            Client {
                peer: peer("192.0.2.60"),
                tls: false
            }
        );
        let h = headers(&[("forwarded", r#"for="_hidden", for=127.0.0.1"#)]);
        assert_eq!(t.client(peer("127.0.0.1:9"), false, &h).peer, peer("127.0.0.1"));
        let h = headers(&[("forwarded", r#"for="a,b";proto=https"#)]);
        let c = t.client(peer("127.0.0.1:9"), false, &h);
        assert_eq!(c.peer, peer("127.0.0.1:9"), "a quoted comma does not split");
    }

    #[test]
    fn x_forwarded_proto_sets_the_scheme() {
        let t = trusted(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "192.0.2.1"), ("x-forwarded-proto", "HTTPS")]);
        assert!(t.client(peer("127.0.0.1:9"), false, &h).tls);
        let h = headers(&[("x-forwarded-proto", "https, http")]);
        let c = t.client(peer("127.0.0.1:9"), true, &h);
        assert_eq!(
            c,
            Client {
                peer: peer("127.0.0.1:9"),
                tls: false
            },
            "right-most proto, own peer"
        );
        let h = headers(&[("x-forwarded-proto", "gopher")]);
        assert!(
            t.client(peer("127.0.0.1:9"), true, &h).tls,
            "unknown proto keeps the connection's"
        );
    }
}
