//! `--connect`'s settings, resolved at startup: the target URL ([`Target`]), the HTTP
//! proxy to go through ([`Proxy`]: `--proxy`, else the environment with `no_proxy`), the
//! handshake headers and TLS files ([`Connect`]), and the rules of the client's flags,
//! each checked once (the session's are [`super`]'s). Pure: parsing and cross-flag checks
//! only; dialing, the CONNECT tunnel and the reconnect loop are [`crate::outbound`]'s.
//!
//! Environment, as curl reads it: `wss_proxy`/`ws_proxy` (scheme-specific), then
//! `https_proxy`/`HTTPS_PROXY` for wss:// or `http_proxy` for ws://, then
//! `all_proxy`/`ALL_PROXY`; lower case wins. `HTTP_PROXY` is also read for ws://, except
//! under CGI (`REQUEST_METHOD` set), where a client's `Proxy:` header could have set it
//! (httpoxy; Go's rule). `no_proxy`/`NO_PROXY`: comma-separated host suffixes (a leading
//! dot is optional), IP literals, CIDR blocks, each with an optional `:port`, or `*`.

use std::net::IpAddr;
use std::time::Duration;

use hyper::http::{HeaderName, HeaderValue};

use super::error::{ConfigError, ResolveError, UsageError};
use super::parse_headers;
use crate::cli::Cli;
use crate::net::{percent_decode, Cidr};

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub secure: bool,
    /// Lower-cased, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub resource: String,
}

/// A `--connect` URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --connect URL {url:?}: {why}")]
pub struct TargetError {
    url: String,
    why: UrlProblem,
}

/// A proxy URL (`--proxy`, or from the environment) that cannot be used; it shows the URL
/// with any credentials replaced by `***`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid proxy {shown:?}: {why}")]
pub struct ProxyUrlError {
    shown: String,
    why: UrlProblem,
}

/// What is wrong with a `--connect` or proxy URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum UrlProblem {
    #[error("expected ws://HOST/ or wss://HOST/")]
    NoScheme,
    #[error("the scheme must be ws:// or wss://")]
    NotWs,
    #[error("scheme {0}:// is not supported (only http://)")]
    NotHttp(String),
    #[error("spaces and control characters are not allowed")]
    Spaces,
    #[error("a WebSocket URL has no #fragment")]
    Fragment,
    #[error("no user:password@ in the URL; send credentials with --header=\"Authorization: ...\"")]
    UserInfo,
    #[error(transparent)]
    HostPort(#[from] HostPortError),
    #[error("no host")]
    NoHost,
}

/// A `host[:port]` that [`split_host_port`] cannot split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    #[error("unclosed [")]
    Unclosed,
    #[error("junk after ]")]
    AfterBracket,
    #[error("bad port {0:?}")]
    Port(String),
}

impl Target {
    /// Parses `ws[s]://host[:port][/path][?query]`. User info and fragments are refused
    /// (RFC 6455 §3): send credentials with `--header`.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let bad = |why| TargetError {
            url: url.to_owned(),
            why,
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad(UrlProblem::NoScheme))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(bad(UrlProblem::NotWs)),
        };
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad(UrlProblem::Spaces));
        }
        if url.contains('#') {
            return Err(bad(UrlProblem::Fragment));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, resource) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad(UrlProblem::UserInfo));
        }
        let (host, port) = split_host_port(authority).map_err(|e| bad(e.into()))?;
        if host.is_empty() {
            return Err(bad(UrlProblem::NoHost));
        }
        let resource = match resource {
            "" => "/".to_owned(),
            r if r.starts_with('?') => format!("/{r}"),
            r => r.to_owned(),
        };
        Ok(Target {
            secure,
            host,
            port: port.unwrap_or(if secure { 443 } else { 80 }),
            resource,
        })
    }

    /// The URL again, normalized (`WEBSOCKET_URL`).
    pub fn url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        let default = if self.secure { 443 } else { 80 };
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        match self.port == default {
            true => format!("{scheme}://{host}{}", self.resource),
            false => format!("{scheme}://{host}:{}{}", self.port, self.resource),
        }
    }

    /// `host:port`, for messages.
    pub fn shown(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

/// Everything `--connect` needs beyond the session settings, resolved at startup.
#[derive(Debug, Clone)]
pub struct Connect {
    pub target: Target,
    /// From `--proxy`, else from the environment; `None` connects directly.
    pub proxy: Option<Proxy>,
    /// `--header`: extra handshake request headers (they replace ours of the same name).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `--origin`: one value sent as `Origin`.
    pub origin: Option<HeaderValue>,
    /// `--sslca`: trust only these CAs instead of the system's.
    pub ca: Option<std::path::PathBuf>,
    /// `--sslcert` and `--sslkey`: our client certificate (mutual TLS).
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub reconnect: bool,
    /// `--insecure`: do not check the server's certificate.
    pub insecure: bool,
    /// `--connect-timeout`: the bound on each step of connecting.
    pub step_timeout: Duration,
}

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
    pub fn parse(url: &str) -> Result<Proxy, ProxyUrlError> {
        let bad = |why| ProxyUrlError {
            shown: redact(url),
            why,
        };
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => return Err(bad(UrlProblem::NotHttp(scheme.to_owned()))),
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
        let (host, port) = split_host_port(hostport).map_err(|e| bad(e.into()))?;
        if host.is_empty() {
            return Err(bad(UrlProblem::NoHost));
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
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), HostPortError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or(HostPortError::Unclosed)?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':').ok_or(HostPortError::AfterBracket)?)),
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
                .ok_or_else(|| HostPortError::Port(p.to_owned()))?,
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
pub fn from_env(target: &Target, var: impl Fn(&str) -> Option<String>) -> Result<Option<Proxy>, ResolveError> {
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
        .map_err(|error| ResolveError::ProxyEnv { var: name, error })
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

/// `--connect`'s flags, checked and resolved; flags that only make sense for a server
/// are refused. The session's rules have been checked.
pub(super) fn settings(cli: &Cli) -> Result<Connect, ConfigError> {
    let server_only = [
        ("--port", cli.port.is_some()),
        ("--address", !cli.address.is_empty()),
        ("--ssl", cli.ssl),
        ("--unixsocket", cli.unixsocket.is_some()),
        ("--unixsocket-mode", cli.unixsocket_mode.is_some()),
        ("--unixsocket-group", cli.unixsocket_group.is_some()),
        ("--trusted-proxy", !cli.trusted_proxy.is_empty()),
        ("--redirport", cli.redirport.is_some()),
        ("--staticdir", cli.staticdir.is_some()),
        ("--cgidir", cli.cgidir.is_some()),
        ("--dir", cli.dir.is_some()),
        ("--devconsole", cli.devconsole),
        ("--upstream", cli.upstream.is_some()),
        ("--sameorigin", cli.sameorigin),
        ("--header-ws", !cli.header_ws.is_empty()),
        ("--header-http", !cli.header_http.is_empty()),
        ("--shared", cli.shared.as_deref().is_some_and(|m| m.trim() != "false")),
        ("--broker", cli.broker.is_some()),
        ("--topic", cli.topic.is_some()),
        ("--broker-ca", cli.broker_ca.is_some()),
        ("--broker-creds", cli.broker_creds.is_some()),
        ("--maxperclient", cli.maxperclient.is_some()),
        ("--metrics", cli.metrics.is_some()),
        ("--htpasswd", cli.htpasswd.is_some()),
        ("--authcmd", cli.authcmd.is_some()),
        ("--authurl", cli.authurl.is_some()),
    ];
    if let Some((flag, _)) = server_only.iter().find(|(_, given)| *given) {
        return Err(UsageError::ServerFlag(flag).into());
    }
    let url = cli.connect.as_deref().unwrap_or_default();
    let target = Target::parse(url).map_err(UsageError::from)?;
    let proxy_flag = cli.proxy.as_deref().map(str::trim);
    let given_proxy = match proxy_flag {
        None | Some("" | "none") => None,
        Some(p) => Some(Proxy::parse(p).map_err(UsageError::Proxy)?),
    };
    let headers = parse_headers(&cli.header, "--header")?;
    const OURS: [&str; 5] = [
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
    ];
    if let Some((name, _)) = headers.iter().find(|(n, _)| OURS.contains(&n.as_str())) {
        return Err(UsageError::HandshakeHeader(name.clone()).into());
    }
    let origin = match cli.origin.as_deref() {
        None => None,
        Some(o) if o.contains(',') || o.trim() != o || o.is_empty() => {
            return Err(UsageError::OriginList(o.to_owned()).into())
        }
        Some(o) => Some(HeaderValue::from_str(o).map_err(|_| UsageError::OriginValue(o.to_owned()))?),
    };
    if !target.secure && (cli.sslca.is_some() || cli.sslcert.is_some() || cli.sslkey.is_some()) {
        return Err(UsageError::TlsFilesForWs.into());
    }
    if cli.insecure && !target.secure {
        return Err(UsageError::InsecureForWs.into());
    }
    if cli.insecure && cli.sslca.is_some() {
        return Err(UsageError::InsecureAndCa.into());
    }
    let client_cert = match (&cli.sslcert, &cli.sslkey) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => return Err(UsageError::HalfClientCert.into()),
    };
    if cli.connect_timeout == 0 {
        return Err(UsageError::Zero("--connect-timeout").into());
    }
    if cli.program.is_none() && (cli.pty || cli.passstderr) {
        return Err(UsageError::PipeModeTerminal.into());
    }

    // The command line is right; now what it names.
    if target.secure && !cfg!(feature = "tls") {
        return Err(ResolveError::NoTlsForWss.into());
    }
    let proxy = match proxy_flag {
        Some(_) => given_proxy,
        None => from_env(&target, |k| std::env::var(k).ok())?,
    };
    Ok(Connect {
        target,
        proxy,
        headers,
        origin,
        ca: cli.sslca.clone(),
        client_cert,
        reconnect: cli.reconnect,
        insecure: cli.insecure,
        step_timeout: Duration::from_secs(cli.connect_timeout),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let t = Target::parse("ws://Example.com").unwrap();
        assert_eq!(
            (t.secure, t.host.as_str(), t.port, t.resource.as_str()),
            (false, "example.com", 80, "/")
        );
        assert_eq!(t.url(), "ws://example.com/");
        let t = Target::parse("WSS://h:8443/a/b?x=1&y").unwrap();
        assert_eq!((t.secure, t.port, t.resource.as_str()), (true, 8443, "/a/b?x=1&y"));
        assert_eq!(t.url(), "wss://h:8443/a/b?x=1&y");
        let t = Target::parse("wss://[::1]/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 443));
        assert_eq!(t.url(), "wss://[::1]/x");
        let t = Target::parse("ws://h?q").unwrap();
        assert_eq!(t.resource, "/?q");
        assert_eq!(Target::parse("ws://h:80/").unwrap().url(), "ws://h/");
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (url, why) in [
            ("http://h/", "ws:// or wss://"),
            ("h:80", "expected ws://"),
            ("ws://u:p@h/", "--header"),
            ("ws://h/#x", "fragment"),
            ("ws:///x", "no host"),
            ("ws://h:0/", "bad port"),
            ("ws://h:99999/", "bad port"),
            ("ws://h/a b", "spaces"),
            ("ws://[::1/", "unclosed"),
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

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
        let e = Proxy::parse("socks5://u:secret@h:1").unwrap_err().to_string();
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
        assert_eq!(
            from_env(&ws, &e).unwrap_err().to_string(),
            r#"invalid proxy "ftp://h": scheme ftp:// is not supported (only http://) (from $http_proxy)"#
        );
    }
}
