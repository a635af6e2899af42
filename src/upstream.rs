//! `--upstream=http://HOST:PORT`: every plain HTTP request that wsbridge does not serve
//! itself is forwarded to that server and its answer streamed back, so wsbridge can sit in
//! front of an existing web server and add WebSockets on the same port. It owns the
//! forwarding of one request, not the decision to forward (that is [`crate::http`]).
//!
//! One upstream connection per request (HTTP/1.1, hyper's client), both bodies streamed
//! through hyper's bounded buffers. Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and
//! the fields it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`) are removed both ways. The request keeps its `Host`
//! (already checked by [`crate::http`]; `Connection` cannot name it away, and only an
//! HTTP/1.0 request without one gets the upstream's authority).
//!
//! Forwarded headers (RFC 7239 `Forwarded` and every `X-Forwarded-*`) follow one rule.
//! When the socket's peer is a `--trusted-proxy`, the lists it sent are kept and the
//! proxy itself appended as the last hop (`X-Forwarded-For: …, PROXY`,
//! `Forwarded: …, for=PROXY`); its `X-Forwarded-Proto` and `X-Forwarded-Host` are kept,
//! or written when it sent none. From anyone else, whatever the client sent is dropped
//! and fresh ones are written: `X-Forwarded-For: CLIENT`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host: HOST` and `Forwarded: for=CLIENT;host=HOST;proto=SCHEME`, so a
//! client cannot make the upstream believe another address, host or scheme. Without a
//! `Host` (or with an empty one) there is no `X-Forwarded-Host` and no `host=`; an IPv6
//! node is quoted (`for="[2001:db8::1]"`); a Unix-socket peer is `for=unknown` and, as in
//! `REMOTE_ADDR`, `unix-socket` in `X-Forwarded-For`.
//!
//! Connecting is bounded by [`CONNECT_TIMEOUT`] and the answer's head by
//! [`HEAD_TIMEOUT`]; an unreachable or failing upstream gets the client a 502 (504 for a
//! head that never came).

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::body::{self, Body};
use crate::config::Upstream;
use crate::env::Identity;
use crate::net::Peer;
use crate::state::Conn;

/// How long connecting to the upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the upstream may take to start its answer once the request is sent.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Forwards one request and returns the upstream's answer, streaming.
pub async fn forward(up: &Upstream, parts: &Parts, body: Option<Incoming>, conn: Conn) -> Response<Body> {
    let gateway = |status, msg: &str| body::text(status, msg);
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(up.authority.as_str())).await;
    let tcp = match connect {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::warn!(upstream = up.authority, error = %e, "cannot connect to the upstream");
            return gateway(
                StatusCode::BAD_GATEWAY,
                "bad gateway: the upstream server is unreachable",
            );
        }
        Err(_) => {
            tracing::warn!(upstream = up.authority, "connecting to the upstream timed out");
            return gateway(
                StatusCode::BAD_GATEWAY,
                "bad gateway: the upstream server is unreachable",
            );
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(upstream = up.authority, error = %e, "upstream handshake failed");
            return gateway(StatusCode::BAD_GATEWAY, "bad gateway: the upstream server failed");
        }
    };
    // Drives the upstream connection until the answer's body is done (or dropped).
    tokio::spawn(
        async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        }
        .in_current_span(),
    );

    let mut req = Request::new(match body {
        Some(b) => b.map_err(io::Error::other).boxed_unsync(),
        None => body::empty(),
    });
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.path_and_query().map_or_else(
        || "/".parse().expect("a valid URI"),
        |pq| pq.as_str().parse().unwrap_or_default(),
    );
    *req.version_mut() = Version::HTTP_11;
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    // hyper already answered any `Expect: 100-continue` when the body was first read.
    headers.remove(header::EXPECT);
    add_forwarded(&mut headers, conn);
    if parts
        .extensions
        .get::<Identity>()
        .is_some_and(|id| id.auth_type == "Basic")
    {
        // wsbridge's own --htpasswd credentials: the upstream never sees the password.
        headers.remove(header::AUTHORIZATION);
    }
    if parts.version == Version::HTTP_10 && !headers.contains_key(header::HOST) {
        // An HTTP/1.0 client may send none ([`crate::http::serve`] refuses HTTP/1.1 without one),
        // but the request goes on as HTTP/1.1, which needs one.
        if let Ok(v) = HeaderValue::from_str(&up.authority) {
            headers.insert(header::HOST, v);
        }
    }
    *req.headers_mut() = headers;

    let answer = match tokio::time::timeout(HEAD_TIMEOUT, sender.send_request(req)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::warn!(upstream = up.authority, error = %e, "upstream request failed");
            return gateway(StatusCode::BAD_GATEWAY, "bad gateway: the upstream server failed");
        }
        Err(_) => {
            tracing::warn!(upstream = up.authority, "upstream answer timed out");
            return gateway(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway timeout: the upstream server did not answer",
            );
        }
    };
    let (mut head, body) = answer.into_parts();
    strip_hop_by_hop(&mut head.headers);
    head.version = Version::HTTP_11;
    Response::from_parts(head, body.map_err(io::Error::other).boxed_unsync())
}

/// Removes the hop-by-hop fields, including those `Connection` names, except `Host`: it
/// is end-to-end, and a client that names it must not make the upstream see another.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|name| name != header::HOST)
        .collect();
    for name in named {
        h.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        h.remove(name);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// The forwarded headers the upstream gets (RFC 7239 `Forwarded` and `X-Forwarded-*`).
/// Through a `--trusted-proxy`, that proxy's lists are kept and the proxy appended as the
/// last hop (its `X-Forwarded-Proto`/`-Host`, when sent, are kept too). From anyone else
/// whatever the client sent is dropped and fresh ones describe this connection alone.
fn add_forwarded(h: &mut HeaderMap, conn: Conn) {
    let proto = if conn.tls { "https" } else { "http" };
    let host = h.get(header::HOST).filter(|v| !v.is_empty()).cloned();
    let hop = match conn.proxy {
        Some(proxy) => proxy,
        None => {
            let theirs: Vec<HeaderName> = h
                .keys()
                .filter(|n| *n == header::FORWARDED || n.as_str().starts_with("x-forwarded-"))
                .cloned()
                .collect();
            for name in theirs {
                h.remove(name);
            }
            conn.peer
        }
    };
    append_to_list(h, HeaderName::from_static("x-forwarded-for"), &hop.addr_string());
    let mut element = format!("for={}", forwarded_node(hop));
    if conn.proxy.is_none() {
        if let Some(host) = &host {
            element.push_str(";host=");
            element.push_str(&forwarded_value(host.as_bytes()));
        }
        element.push_str(";proto=");
        element.push_str(proto);
    }
    append_to_list(h, header::FORWARDED, &element);
    if !h.contains_key("x-forwarded-proto") {
        h.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    }
    if let Some(host) = host.filter(|_| !h.contains_key("x-forwarded-host")) {
        h.insert("x-forwarded-host", host);
    }
}

/// Appends `item` to the comma list in `name`, joining the lines it came in as one.
fn append_to_list(h: &mut HeaderMap, name: HeaderName, item: &str) {
    let mut list = Vec::new();
    for line in h.get_all(&name) {
        list.extend_from_slice(line.as_bytes());
        list.extend_from_slice(b", ");
    }
    list.extend_from_slice(item.as_bytes());
    // Both parts are valid field values, and so is ", " between them.
    if let Ok(v) = HeaderValue::from_bytes(&list) {
        h.insert(name, v);
    }
}

/// A `for=` node (RFC 7239 §6): an IPv4 address, a quoted `"[IPv6]"`, or `unknown` for a
/// Unix-socket peer, which has no address.
fn forwarded_node(peer: Peer) -> String {
    let ip = match peer {
        Peer::Addr(a) => a.ip(),
        Peer::Ip(ip) => ip,
        Peer::Unix => return "unknown".to_owned(),
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// A `Forwarded` parameter value: as it is when it is a token, else a quoted-string.
/// Meant for a `Host` that [`crate::http::valid_host`] passed, so every byte is ASCII.
fn forwarded_value(v: &[u8]) -> String {
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if !v.is_empty() && v.iter().all(tchar) {
        return String::from_utf8_lossy(v).into_owned();
    }
    let mut quoted = String::from("\"");
    for &b in v {
        if b == b'"' || b == b'\\' {
            quoted.push('\\');
        }
        quoted.push(char::from(b));
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(peer: &str, proxy: Option<&str>, tls: bool) -> Conn {
        Conn {
            peer: peer.parse().unwrap(),
            proxy: proxy.map(|p| p.parse().unwrap()),
            id: 1,
            tls,
        }
    }

    fn forwarded(pairs: &[(&'static str, &'static str)], conn: Conn) -> Vec<(String, String)> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        add_forwarded(&mut h, conn);
        let mut out: Vec<(String, String)> = h
            .iter()
            .filter(|(k, _)| *k != header::HOST)
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        out.sort();
        out
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn fresh_forwarded_headers_from_an_untrusted_peer() {
        let spoof = [
            ("host", "[::1]:8080"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
        ];
        assert_eq!(
            forwarded(&spoof, conn("[2001:db8::1]:5000", None, true)),
            pairs(&[
                ("forwarded", r#"for="[2001:db8::1]";host="[::1]:8080";proto=https"#),
                ("x-forwarded-for", "2001:db8::1"),
                ("x-forwarded-host", "[::1]:8080"),
                ("x-forwarded-proto", "https"),
            ])
        );
        assert_eq!(
            forwarded(&[("host", "board")], conn("[::ffff:192.0.2.7]:1", None, false)),
            pairs(&[
                ("forwarded", "for=192.0.2.7;host=board;proto=http"),
                ("x-forwarded-for", "192.0.2.7"),
                ("x-forwarded-host", "board"),
                ("x-forwarded-proto", "http"),
            ]),
            "IPv4-mapped is IPv4"
        );
        assert_eq!(
            forwarded(&[("host", "")], conn("unix-socket", None, false)),
            pairs(&[
                ("forwarded", "for=unknown;proto=http"),
                ("x-forwarded-for", "unix-socket"),
                ("x-forwarded-proto", "http"),
            ]),
            "a Unix-socket peer, an empty Host"
        );
    }

    #[test]
    fn a_trusted_proxy_is_appended_as_the_last_hop() {
        let from_proxy = [
            ("host", "board"),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", r#"for="[2001:db8::9]";proto=https"#),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
        ];
        assert_eq!(
            forwarded(&from_proxy, conn("203.0.113.9", Some("unix-socket"), true)),
            pairs(&[
                ("forwarded", r#"for="[2001:db8::9]";proto=https, for=unknown"#),
                ("x-forwarded-for", "198.51.100.1, 203.0.113.9, unix-socket"),
                ("x-forwarded-host", "board"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-proto", "https"),
            ])
        );
        assert_eq!(
            forwarded(&[("host", "board")], conn("[::1]:9", Some("[::1]:9"), false)),
            pairs(&[
                ("forwarded", r#"for="[::1]""#),
                ("x-forwarded-for", "::1"),
                ("x-forwarded-host", "board"),
                ("x-forwarded-proto", "http"),
            ])
        );
    }

    #[test]
    fn forwarded_values_are_tokens_or_quoted() {
        assert_eq!(forwarded_value(b"board.example"), "board.example");
        assert_eq!(forwarded_value(b"board:80"), r#""board:80""#);
        assert_eq!(forwarded_value(b"a(b);c=d"), r#""a(b);c=d""#);
        assert_eq!(forwarded_value(br#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(forwarded_value(b""), r#""""#);
    }

    #[test]
    fn hop_by_hop_fields_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close, Host"));
        h.insert(header::HOST, HeaderValue::from_static("board"));
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.get(header::HOST).map(|v| v.as_bytes()),
            Some(&b"board"[..]),
            "Host is end-to-end"
        );
    }
}
