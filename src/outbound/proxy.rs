//! HTTP proxies for `--connect`: which proxy to use (`--proxy`, else the environment
//! with `no_proxy`), and the CONNECT tunnel through it (RFC 6455 §4.1, RFC 9110 §9.3.6).
//! Pure parsing is unit-tested here; the tunnel is tested against tinyproxy in
//! `tests/outbound.rs`.
//!
//! Environment, as curl reads it: `wss_proxy`/`ws_proxy` (scheme-specific), then
//! `https_proxy`/`HTTPS_PROXY` for wss:// or `http_proxy` for ws://, then
//! `all_proxy`/`ALL_PROXY`; lower case wins. `HTTP_PROXY` is also read for ws://, except
//! under CGI (`REQUEST_METHOD` set), where a client's `Proxy:` header could have set it
//! (httpoxy; Go's rule). `no_proxy`/`NO_PROXY`: comma-separated host suffixes (a leading
//! dot is optional), IP literals, CIDR blocks, each with an optional `:port`, or `*`.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Target;
use crate::net::{percent_decode, Cidr};

/// The proxy's answer to CONNECT must fit in this many bytes.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// An `http://[user:pass@]host[:port]` proxy. Its `Debug` form hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `user:pass`, percent-decoded, for Basic authentication.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Parses a proxy URL. A missing scheme means `http://` and a missing port 1080
    /// (curl's defaults); other schemes are refused.
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let bad = |why: &str| format!("invalid proxy {:?}: {why}", redact(url));
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => return Err(bad(&format!("scheme {scheme}:// is not supported (only http://)"))),
            None => url,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = userinfo.map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            let dec = |s: &str| String::from_utf8_lossy(&percent_decode(s.as_bytes())).into_owned();
            (dec(user), dec(pass))
        });
        let (host, port) = split_host_port(hostport).map_err(|e| bad(&e))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Proxy {
            host,
            port: port.unwrap_or(1080),
            credentials,
        })
    }

    /// `host:port` for messages (never the credentials).
    pub fn shown(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

/// The URL with any user info replaced by `***`, for error messages.
fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((before, after)) => match before.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***@{after}"),
            None => format!("***@{after}"),
        },
        None => url.to_owned(),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the host lower-cased, brackets removed.
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed [")?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or("junk after ]")?)),
        }
    } else if s.matches(':').count() > 1 {
        (s, None) // a bare IPv6 literal
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("bad port {p:?}"))?,
        ),
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// `host:port`, with brackets around an IPv6 address.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The proxy the environment names for `target`, if any (after `no_proxy`). `var` looks a
/// variable up (the process environment, or a map in tests).
pub fn from_env(target: &Target, var: impl Fn(&str) -> Option<String>) -> Result<Option<Proxy>, String> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let first = |names: &[&'static str]| names.iter().find_map(|n| get(n).map(|v| (*n, v)));
    let cgi = get("REQUEST_METHOD").is_some();
    let found = if target.secure {
        first(&["wss_proxy", "WSS_PROXY", "https_proxy", "HTTPS_PROXY"])
    } else if cgi {
        first(&["ws_proxy", "WS_PROXY", "http_proxy"])
    } else {
        first(&["ws_proxy", "WS_PROXY", "http_proxy", "HTTP_PROXY"])
    }
    .or_else(|| first(&["all_proxy", "ALL_PROXY"]));
    let Some((name, url)) = found else { return Ok(None) };
    let no_proxy = get("no_proxy").or_else(|| get("NO_PROXY")).unwrap_or_default();
    if bypass(&no_proxy, &target.host, target.port) {
        return Ok(None);
    }
    Proxy::parse(url.trim())
        .map(Some)
        .map_err(|e| format!("{e} (from ${name})"))
}

/// Whether `no_proxy` (curl's syntax) exempts `host:port`.
pub fn bypass(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    no_proxy
        .split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            // CIDR first: its '/' never appears in a host entry.
            if let Some((net, bits)) = entry.split_once('/') {
                let net = net.trim_start_matches('[').trim_end_matches(']');
                return match (ip, net.parse::<IpAddr>(), bits.parse::<u8>()) {
                    (Some(ip), Ok(net), Ok(bits)) => Cidr::new(net, bits).is_some_and(|c| c.contains(ip)),
                    _ => false,
                };
            }
            let Ok((name, entry_port)) = split_host_port(entry) else {
                return false;
            };
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            match (ip, name.parse::<IpAddr>()) {
                (Some(ip), Ok(e)) => ip == e,
                (_, Ok(_)) | (Some(_), _) => false,
                (None, Err(_)) => {
                    let suffix = name.trim_start_matches('.').trim_end_matches('.');
                    !suffix.is_empty()
                        && (host == suffix || host.strip_suffix(suffix).is_some_and(|rest| rest.ends_with('.')))
                }
            }
        })
}

/// Connects to the proxy and asks it for a tunnel to `target`; returns the stream, which
/// then carries the target's bytes. Each step is bounded by `timeout`. Errors are one line
/// naming the proxy.
pub async fn tunnel(proxy: &Proxy, target: &Target, timeout: Duration) -> Result<TcpStream, String> {
    let shown = proxy.shown();
    let mut tcp = match tokio::time::timeout(timeout, TcpStream::connect((proxy.host.as_str(), proxy.port))).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(format!("cannot connect to proxy {shown}: {}", lower(&e))),
        Err(_) => return Err(format!("cannot connect to proxy {shown}: timed out after {timeout:?}")),
    };
    let _ = tcp.set_nodelay(true);
    let authority = join_host_port(&target.host, target.port);
    let request = connect_request(&authority, proxy.credentials.as_ref());
    let exchange = async {
        tcp.write_all(request.as_bytes()).await?;
        read_head(&mut tcp).await
    };
    let head = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            return Err(format!(
                "proxy {shown}: no answer to CONNECT {authority}: {}",
                lower(&e)
            ))
        }
        Err(_) => {
            return Err(format!(
                "proxy {shown}: no answer to CONNECT {authority} within {timeout:?}"
            ))
        }
    };
    let (code, reason) = parse_status(&head).ok_or_else(|| format!("proxy {shown}: malformed answer to CONNECT"))?;
    if !(200..300).contains(&code) {
        let hint = match (code, &proxy.credentials) {
            (407, None) => " (it wants credentials: http://user:pass@host:port)",
            (401 | 407, Some(_)) => " (credentials refused)",
            _ => "",
        };
        return Err(format!(
            "proxy {shown} refused CONNECT {authority}: {code} {reason}{hint}"
        ));
    }
    Ok(tcp)
}

fn connect_request(authority: &str, credentials: Option<&(String, String)>) -> String {
    let mut r = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, pass)) = credentials {
        r.push_str("Proxy-Authorization: Basic ");
        r.push_str(&data_encoding::BASE64.encode(format!("{user}:{pass}").as_bytes()));
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// Reads the response head byte by byte, so nothing of the tunnel after it is consumed.
async fn read_head(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(std::io::Error::other(format!(
                "answer head longer than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        if tcp.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// `HTTP/1.x CODE REASON` → (code, reason).
fn parse_status(head: &[u8]) -> Option<(u16, String)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?.parse().ok()?;
    let reason: String = parts
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    Some((code, reason))
}

/// An I/O error as a lower-case phrase without the `(os error N)` tail.
pub(crate) fn lower(e: &std::io::Error) -> String {
    let s = e.to_string();
    s.split(" (os error").next().unwrap_or(&s).to_lowercase()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn proxy_urls_parse_with_decoded_credentials() {
        let p = Proxy::parse("http://us%40er:p%3Ass@Proxy.example:3128/").unwrap();
        assert_eq!(p.host, "proxy.example");
        assert_eq!(p.port, 3128);
        assert_eq!(p.credentials, Some(("us@er".into(), "p:ss".into())));
        assert_eq!(p.shown(), "proxy.example:3128");
        let p = Proxy::parse("10.0.0.1").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.credentials), ("10.0.0.1", 1080, None));
        let p = Proxy::parse("http://[::1]:8080").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 8080));
        assert_eq!(p.shown(), "[::1]:8080");
        let e = Proxy::parse("socks5://u:secret@h:1").unwrap_err();
        assert!(e.contains("only http://") && !e.contains("secret"), "{e}");
        assert!(Proxy::parse("http://h:99999").is_err());
        assert!(Proxy::parse("http://:80").is_err());
        let p = Proxy::parse("http://u:hidden@h:1").unwrap();
        assert!(!format!("{p:?}").contains("hidden"));
    }

    #[test]
    fn no_proxy_follows_curl() {
        assert!(bypass("*", "anything", 80));
        assert!(bypass("example.com", "example.com", 80));
        assert!(bypass("example.com", "a.b.Example.com", 80));
        assert!(bypass(".example.com", "a.example.com", 80));
        assert!(bypass(".example.com", "example.com", 80));
        assert!(!bypass("example.com", "badexample.com", 80));
        assert!(!bypass("example.com", "example.com.evil", 80));
        assert!(bypass("foo, 127.0.0.1", "127.0.0.1", 9));
        assert!(!bypass("127.0.0.1", "127.0.0.2", 9));
        assert!(bypass("example.com:8080", "example.com", 8080));
        assert!(!bypass("example.com:8080", "example.com", 80));
        assert!(bypass("[::1]:443", "::1", 443));
        assert!(bypass("::1", "::1", 443));
        assert!(bypass("10.0.0.0/8", "10.1.2.3", 1));
        assert!(!bypass("10.0.0.0/8", "11.1.2.3", 1));
        assert!(bypass("fd00::/8", "fd12::1", 1));
        assert!(!bypass("10.0.0.0/8", "ten.example", 1));
        assert!(!bypass("", "example.com", 80));
    }

    #[test]
    fn environment_picks_by_scheme_and_honours_no_proxy() {
        let env = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            move |k: &str| m.get(k).cloned()
        };
        let ws = target("ws://example.com/x");
        let wss = target("wss://example.com/x");
        let e = env(&[
            ("http_proxy", "http://h:1"),
            ("https_proxy", "http://s:2"),
            ("all_proxy", "a:3"),
        ]);
        assert_eq!(from_env(&ws, &e).unwrap().unwrap().host, "h");
        assert_eq!(from_env(&wss, &e).unwrap().unwrap().host, "s");
        let e = env(&[("ws_proxy", "w:1"), ("http_proxy", "h:1")]);
        assert_eq!(from_env(&ws, &e).unwrap().unwrap().host, "w");
        let e = env(&[("ALL_PROXY", "a:3")]);
        assert_eq!(from_env(&wss, &e).unwrap().unwrap().host, "a");
        let e = env(&[("HTTP_PROXY", "up:1")]);
        assert_eq!(from_env(&ws, &e).unwrap().unwrap().host, "up");
        let e = env(&[("HTTP_PROXY", "evil:1"), ("REQUEST_METHOD", "GET")]);
        assert_eq!(
            from_env(&ws, &e).unwrap(),
            None,
            "httpoxy: HTTP_PROXY is ignored under CGI"
        );
        let e = env(&[("http_proxy", "h:1"), ("NO_PROXY", ".com")]);
        assert_eq!(from_env(&ws, &e).unwrap(), None);
        let e = env(&[("http_proxy", "h:1"), ("no_proxy", "other"), ("NO_PROXY", "*")]);
        assert!(from_env(&ws, &e).unwrap().is_some(), "lower case wins");
        let e = env(&[("http_proxy", "  ")]);
        assert_eq!(from_env(&ws, &e).unwrap(), None);
        let e = env(&[("http_proxy", "ftp://h")]);
        assert!(from_env(&ws, &e).unwrap_err().contains("$http_proxy"));
    }

    #[test]
    fn connect_request_and_status() {
        let r = connect_request("h:443", Some(&("Aladdin".into(), "open sesame".into())));
        assert_eq!(
            r,
            "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\nProxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
        assert_eq!(
            parse_status(b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n"),
            Some((407, "Proxy Authentication Required".into()))
        );
        assert_eq!(parse_status(b"HTTP/1.1 200\r\n\r\n"), Some((200, String::new())));
        assert_eq!(parse_status(b"SSH-2.0\r\n\r\n"), None);
    }
}
