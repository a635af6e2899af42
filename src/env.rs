//! The CGI-style environment a program gets for one WebSocket connection, built from the
//! request. Pure and unit-tested; knows nothing of processes or sockets.
//!
//! Values follow websocketd 0.4.1 (see `../shared/reference/websocketd.md` §2); the program
//! sees them sorted by name (std's `Command` keeps the environment in a sorted map). The
//! deliberate differences: `GATEWAY_INTERFACE=CGI/1.1`, `HTTP_HOST` is present,
//! a client `Proxy:` header never becomes `HTTP_PROXY` (httpoxy), header names outside
//! `[A-Za-z0-9-]` are dropped (so `X_Foo` cannot impersonate `X-Foo`), values containing
//! NUL are dropped, and `UNIQUE_ID` is unique within a server run.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use hyper::http::{HeaderMap, Version};

use crate::net::{percent_decode, Peer};

/// Who the access checks said the client is ([`crate::auth`]): `AUTH_TYPE` and
/// `REMOTE_USER` (empty without them, as CGI says), and the variables an auth hook or
/// `--authurl` added (only `AUTH_*` names; checked where they are read). It travels with
/// the request (hyper's extensions) to every handler that builds an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub auth_type: String,
    pub remote_user: String,
    pub vars: Vec<(String, String)>,
}

/// Puts `id` into an environment [`build`] made: `AUTH_TYPE` and `REMOTE_USER` get their
/// values in place, the extra variables are appended (an earlier one of the same name,
/// such as a client's header, never wins: they replace it). After basic auth the
/// credentials themselves (`HTTP_AUTHORIZATION`) are left out, as RFC 3875 §4.1.18 allows
/// and Apache does: the program learns who, never the password.
pub fn add_identity(vars: &mut Vec<(OsString, OsString)>, id: &Identity) {
    if id.auth_type == "Basic" {
        vars.retain(|(k, _)| k != "HTTP_AUTHORIZATION");
    }
    let mut set = |k: &str, v: &str| match vars.iter_mut().find(|(n, _)| n == k) {
        Some((_, old)) => *old = v.into(),
        None => vars.push((k.into(), v.into())),
    };
    set("AUTH_TYPE", &id.auth_type);
    set("REMOTE_USER", &id.remote_user);
    for (k, v) in &id.vars {
        set(k, v);
    }
}

/// What the environment is built from.
pub struct Request<'a> {
    pub remote: Peer,
    pub version: Version,
    pub method: &'a str,
    /// The raw (still percent-encoded) path of the request target.
    pub raw_path: &'a str,
    /// The raw query, without `?`; `None` when the target had no `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub tls: bool,
    pub unique_id: u64,
    /// `SCRIPT_NAME`: `/` for a single program, the script's decoded URL path with `--dir`
    /// and CGI (then `PATH_INFO` is the rest of the path after it).
    pub script_name: &'a str,
    /// The `--subprotocol` negotiated for this connection: `WEBSOCKET_PROTOCOL`, present
    /// only when there is one.
    pub protocol: Option<&'a str>,
}

/// A request piece that was left out of the environment, for the caller to log.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// A header whose name is not `[A-Za-z0-9-]+` (or `Proxy`, see httpoxy).
    HeaderName(String),
    /// A header whose value contains NUL.
    HeaderValue(String),
}

/// The environment, in order, plus what was dropped and why.
pub struct Built {
    pub vars: Vec<(OsString, OsString)>,
    pub dropped: Vec<Dropped>,
}

/// Builds the environment. `passenv` holds the values read from wsbridge's own environment
/// at startup. Returns `Err` when the decoded path contains NUL (the caller answers 400).
pub fn build(req: &Request<'_>, passenv: &[(String, String)]) -> Result<Built, &'static str> {
    let path = percent_decode(req.raw_path.as_bytes());
    if path.contains(&0) {
        return Err("the request path contains a NUL byte");
    }
    let host = req
        .headers
        .get(hyper::header::HOST)
        .map(|h| h.as_bytes())
        .unwrap_or_default();
    let (server_name, server_port) = split_host(host, req.tls);
    let ip = req.remote.addr_string();
    let query = req.query.unwrap_or("");
    let request_uri = match req.query {
        Some(q) => format!("{}?{q}", req.raw_path),
        None => req.raw_path.to_owned(),
    };

    let mut vars: Vec<(OsString, OsString)> = Vec::with_capacity(32 + req.headers.len());
    let mut put = |k: &str, v: OsString| vars.push((OsString::from(k), v));
    put(
        "SERVER_SOFTWARE",
        concat!("wsbridge/", env!("CARGO_PKG_VERSION")).into(),
    );
    for (k, v) in passenv {
        put(k, v.into());
    }
    put("REMOTE_ADDR", ip.clone().into());
    put("REMOTE_HOST", ip.into());
    put("SERVER_NAME", OsString::from_vec(server_name.to_vec()));
    put("SERVER_PORT", server_port.into());
    put("SERVER_PROTOCOL", version_str(req.version).into());
    put("GATEWAY_INTERFACE", "CGI/1.1".into());
    put("REQUEST_METHOD", req.method.into());
    put("SCRIPT_NAME", req.script_name.into());
    let path_info = match path.strip_prefix(req.script_name.as_bytes()) {
        Some(rest) if req.script_name != "/" => rest.to_vec(),
        _ => path.clone(),
    };
    put("PATH_INFO", OsString::from_vec(path_info));
    put("PATH_TRANSLATED", OsString::from_vec(path));
    put("QUERY_STRING", query.into());
    for empty in [
        "AUTH_TYPE",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "REMOTE_IDENT",
        "REMOTE_USER",
    ] {
        put(empty, OsString::new());
    }
    put("UNIQUE_ID", req.unique_id.to_string().into());
    put(
        "REMOTE_PORT",
        req.remote.port().map(|p| p.to_string()).unwrap_or_default().into(),
    );
    put("REQUEST_URI", request_uri.into());
    if req.tls {
        put("HTTPS", "on".into());
    }
    if let Some(p) = req.protocol {
        put("WEBSOCKET_PROTOCOL", p.into());
    }

    let mut dropped = Vec::new();
    let mut seen: Vec<(String, Vec<u8>)> = Vec::with_capacity(req.headers.keys_len());
    for (name, value) in req.headers {
        let name = name.as_str();
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || name.eq_ignore_ascii_case("proxy") {
            if !dropped.contains(&Dropped::HeaderName(name.to_owned())) {
                dropped.push(Dropped::HeaderName(name.to_owned()));
            }
            continue;
        }
        if value.as_bytes().contains(&0) {
            dropped.push(Dropped::HeaderValue(name.to_owned()));
            continue;
        }
        let value = fold(value.as_bytes());
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        match seen.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.extend_from_slice(b", ");
                v.extend_from_slice(&value);
            }
            None => seen.push((key, value)),
        }
    }
    vars.extend(
        seen.into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from_vec(v))),
    );
    Ok(Built { vars, dropped })
}

/// CR and LF become spaces, then surrounding white space is trimmed (websocketd's rule).
fn fold(v: &[u8]) -> Vec<u8> {
    let v: Vec<u8> = v
        .iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect();
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    v[start..end].to_vec()
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// `SERVER_NAME` and `SERVER_PORT` from the Host header, as websocketd does: the port
/// defaults to 80 (443 under TLS) and is empty when the header cannot be parsed.
fn split_host(host: &[u8], tls: bool) -> (&[u8], String) {
    let default = if tls { "443" } else { "80" };
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host.ends_with(b"]") => (&host[..i], &host[i + 1..]),
        _ => (host, &b""[..]),
    };
    let name = name
        .strip_prefix(b"[")
        .and_then(|n| n.strip_suffix(b"]"))
        .unwrap_or(name);
    let port = if port.is_empty() {
        default.to_owned()
    } else if port.iter().all(u8::is_ascii_digit) {
        String::from_utf8_lossy(port).into_owned()
    } else {
        String::new()
    };
    (name, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::http::HeaderValue;

    fn request<'a>(headers: &'a HeaderMap, raw_path: &'a str, query: Option<&'a str>) -> Request<'a> {
        Request {
            remote: "127.0.0.1:52196".parse().unwrap(),
            version: Version::HTTP_11,
            method: "GET",
            raw_path,
            query,
            headers,
            tls: false,
            unique_id: 42,
            script_name: "/",
            protocol: None,
        }
    }

    #[test]
    fn websocket_protocol_only_when_negotiated() {
        let h = HeaderMap::new();
        let b = build(&request(&h, "/", None), &[]).unwrap();
        assert_eq!(get(&b, "WEBSOCKET_PROTOCOL"), None);
        let mut req = request(&h, "/", None);
        req.protocol = Some("chat.v2");
        let b = build(&req, &[]).unwrap();
        assert_eq!(get(&b, "WEBSOCKET_PROTOCOL"), Some("chat.v2"));
    }

    fn get<'a>(b: &'a Built, k: &str) -> Option<&'a str> {
        b.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn cgi_set_matches_websocketd_order_and_values() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:18081"));
        h.append("x-custom-thing", HeaderValue::from_static("a"));
        h.append("x-custom-thing", HeaderValue::from_static(" b "));
        let passenv = vec![("PATH".to_owned(), "/bin".to_owned())];
        let b = build(&request(&h, "/some/path", Some("x=1&y=two%20words")), &passenv).unwrap();
        let names: Vec<_> = b.vars.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(
            names[..21],
            [
                "SERVER_SOFTWARE",
                "PATH",
                "REMOTE_ADDR",
                "REMOTE_HOST",
                "SERVER_NAME",
                "SERVER_PORT",
                "SERVER_PROTOCOL",
                "GATEWAY_INTERFACE",
                "REQUEST_METHOD",
                "SCRIPT_NAME",
                "PATH_INFO",
                "PATH_TRANSLATED",
                "QUERY_STRING",
                "AUTH_TYPE",
                "CONTENT_LENGTH",
                "CONTENT_TYPE",
                "REMOTE_IDENT",
                "REMOTE_USER",
                "UNIQUE_ID",
                "REMOTE_PORT",
                "REQUEST_URI"
            ]
        );
        assert_eq!(get(&b, "SERVER_NAME"), Some("127.0.0.1"));
        assert_eq!(get(&b, "SERVER_PORT"), Some("18081"));
        assert_eq!(get(&b, "QUERY_STRING"), Some("x=1&y=two%20words"));
        assert_eq!(get(&b, "REQUEST_URI"), Some("/some/path?x=1&y=two%20words"));
        assert_eq!(get(&b, "HTTP_X_CUSTOM_THING"), Some("a, b"));
        assert_eq!(get(&b, "HTTP_HOST"), Some("127.0.0.1:18081"));
        assert_eq!(get(&b, "AUTH_TYPE"), Some(""));
        assert_eq!(get(&b, "HTTPS"), None);
    }

    #[test]
    fn httpoxy_and_underscore_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("proxy", HeaderValue::from_static("http://evil:3128"));
        h.insert("x_under", HeaderValue::from_static("u"));
        let b = build(&request(&h, "/", None), &[]).unwrap();
        assert_eq!(get(&b, "HTTP_PROXY"), None);
        assert_eq!(get(&b, "HTTP_X_UNDER"), None);
        assert_eq!(b.dropped.len(), 2);
    }

    #[test]
    fn path_is_decoded_once_and_nul_refused() {
        let h = HeaderMap::new();
        let b = build(&request(&h, "/a%20b/%2541", None), &[]).unwrap();
        assert_eq!(get(&b, "PATH_INFO"), Some("/a b/%41"));
        assert_eq!(get(&b, "SERVER_PORT"), Some("80"));
        assert!(build(&request(&h, "/a%00b", None), &[]).is_err());
    }

    #[test]
    fn script_name_splits_path_info() {
        let h = HeaderMap::new();
        let mut r = request(&h, "/sub/info.sh/extra/more", Some("z=9"));
        r.script_name = "/sub/info.sh";
        let b = build(&r, &[]).unwrap();
        assert_eq!(get(&b, "SCRIPT_NAME"), Some("/sub/info.sh"));
        assert_eq!(get(&b, "PATH_INFO"), Some("/extra/more"));
        assert_eq!(get(&b, "PATH_TRANSLATED"), Some("/sub/info.sh/extra/more"));
        assert_eq!(get(&b, "REQUEST_URI"), Some("/sub/info.sh/extra/more?z=9"));
    }

    #[test]
    fn unix_and_portless_peers() {
        let h = HeaderMap::new();
        let mut r = request(&h, "/", None);
        r.remote = Peer::Unix;
        let b = build(&r, &[]).unwrap();
        assert_eq!(get(&b, "REMOTE_ADDR"), Some("unix-socket"));
        assert_eq!(get(&b, "REMOTE_HOST"), Some("unix-socket"));
        assert_eq!(get(&b, "REMOTE_PORT"), Some(""));
        r.remote = "::ffff:192.0.2.1".parse().unwrap();
        let b = build(&r, &[]).unwrap();
        assert_eq!(get(&b, "REMOTE_ADDR"), Some("192.0.2.1"));
        assert_eq!(get(&b, "REMOTE_PORT"), Some(""));
    }

    #[test]
    fn identity_fills_the_cgi_auth_variables() {
        let h = HeaderMap::new();
        let mut h = h;
        h.insert("authorization", HeaderValue::from_static("Basic YWxpY2U6cHc="));
        let mut b = build(&request(&h, "/", None), &[]).unwrap();
        assert!(get(&b, "HTTP_AUTHORIZATION").is_some());
        let id = Identity {
            auth_type: "Basic".into(),
            remote_user: "alice".into(),
            vars: vec![("AUTH_ROLE".into(), "admin".into())],
        };
        let before = b.vars.len();
        add_identity(&mut b.vars, &id);
        assert_eq!(get(&b, "AUTH_TYPE"), Some("Basic"));
        assert_eq!(get(&b, "REMOTE_USER"), Some("alice"));
        assert_eq!(get(&b, "AUTH_ROLE"), Some("admin"));
        assert_eq!(get(&b, "HTTP_AUTHORIZATION"), None, "the password stays out");
        assert_eq!(b.vars.len(), before);
    }

    #[test]
    fn host_forms() {
        assert_eq!(split_host(b"[::1]:9000", false), (&b"::1"[..], "9000".to_owned()));
        assert_eq!(split_host(b"[::1]", true), (&b"::1"[..], "443".to_owned()));
        assert_eq!(split_host(b"board:x", false), (&b"board"[..], String::new()));
    }
}
