//! The serving mode's settings ([`Serve`]: where to listen, TLS files, `--trusted-proxy`,
//! what plain HTTP requests get, the origin policy, `--shared`, the extra headers) and
//! the rules of the server's flags, each checked once: first everything the command line
//! decides alone, then the lookups (addresses, directories). It owns no socket and no
//! file: binding is [`crate::listen`]'s, certificates [`crate::tls`]'s.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use hyper::http::{HeaderName, HeaderValue};

use super::access::{self, Access};
use super::broker::{self, Broker, Role};
use super::error::{AddressProblem, ConfigError, ResolveError, UsageError};
use super::parse_headers;
use super::program::resolve_dir;
use crate::cli::Cli;
use crate::forwarded::TrustedProxies;
use crate::framing::Framing;
use crate::origin::OriginPolicy;

/// Everything the server needs beyond the session settings.
#[derive(Debug, Clone)]
pub struct Serve {
    /// Where to listen. Empty means "all interfaces" on [`Serve::port`].
    pub addresses: Vec<SocketAddr>,
    pub port: u16,
    /// Whether to listen on TCP at all: false when only `--unixsocket` was given.
    pub tcp: bool,
    /// `--unixsocket`.
    pub unix_socket: Option<PathBuf>,
    /// `--unixsocket-mode`: the socket file's permission bits; `None` leaves the umask's.
    pub unix_mode: Option<u32>,
    /// `--unixsocket-group`, resolved to a group id.
    pub unix_group: Option<u32>,
    /// `--redirport`: a plain-HTTP listener beside each TCP address that redirects (301).
    pub redirect_port: Option<u16>,
    /// `--ssl` with its files; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// `--trusted-proxy`.
    pub trusted_proxies: TrustedProxies,
    /// `--dir`: canonical directory whose executables are endpoints by URL path.
    pub script_dir: Option<PathBuf>,
    /// `--staticdir`, canonical.
    pub static_dir: Option<PathBuf>,
    /// `--cgidir`, canonical.
    pub cgi_dir: Option<PathBuf>,
    /// `--cgitimeout`: how long one CGI run may take, output included.
    pub cgi_timeout: Duration,
    /// `--devconsole`.
    pub dev_console: bool,
    /// `--upstream`: where requests nothing else serves are forwarded.
    pub upstream: Option<Upstream>,
    /// `--maxforks`; `None` = unlimited.
    pub max_forks: Option<usize>,
    /// `--shared`: one program for every client.
    pub shared: Option<Shared>,
    /// `--broker`: `--shared` across instances (with `shared` set: an edge has it too).
    /// Boxed like `access`: rarely used.
    pub broker: Option<Box<Broker>>,
    /// `--maxperclient`: sessions one client address may have at once.
    pub max_per_client: Option<usize>,
    pub origin: OriginPolicy,
    pub headers: ExtraHeaders,
    /// `--metrics`: where the Prometheus listener binds.
    pub metrics: Option<SocketAddr>,
    /// Who may connect: `--htpasswd`, `--authcmd`, `--authurl` and their settings (boxed:
    /// rarely used, and it would make every `Mode` twice the size).
    pub access: Box<Access>,
}

/// `--shared[=eager,once,ids]` and `--sharedqueue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shared {
    /// Start the program at startup rather than at the first connection.
    pub eager: bool,
    /// When the program ends, close every client and exit with its status (no restart).
    pub once: bool,
    /// Prefix each input line with the client's id; `@ID text` goes to that client only.
    pub ids: bool,
    /// Output bytes that may wait for one client before it is dropped.
    pub queue_bytes: usize,
}

/// `--sslcert`, `--sslkey` and `--sslca`, checked to be given together with `--ssl`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must be signed by a CA in this file (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// `--header`, `--header-ws`, `--header-http`, parsed.
#[derive(Debug, Clone, Default)]
pub struct ExtraHeaders {
    pub all: Vec<(HeaderName, HeaderValue)>,
    pub ws: Vec<(HeaderName, HeaderValue)>,
    pub http: Vec<(HeaderName, HeaderValue)>,
}

/// `--upstream`: where to forward, `http://HOST[:PORT][/]`, parsed (the forwarding is
/// [`crate::upstream`]'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `HOST:PORT` to connect to (IPv6 in brackets).
    pub authority: String,
}

/// An `--upstream` value that is not `http://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --upstream={value}: {why}")]
pub struct UpstreamError {
    value: String,
    why: UpstreamProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum UpstreamProblem {
    #[error("expected http://HOST:PORT")]
    Scheme,
    #[error("expected http://HOST:PORT (no path)")]
    Path,
    #[error("bad host")]
    Host,
    #[error("bad port")]
    Port,
}

impl Upstream {
    /// Parses the `--upstream` value. Only `http://` and no path: wsbridge forwards the
    /// request's own path.
    pub fn parse(s: &str) -> Result<Self, UpstreamError> {
        let bad = |why| UpstreamError {
            value: s.to_owned(),
            why,
        };
        let rest = s.strip_prefix("http://").ok_or_else(|| bad(UpstreamProblem::Scheme))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad(UpstreamProblem::Path));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !rest.ends_with(']') => (h, Some(p)),
            _ => (rest, None),
        };
        if host.is_empty() || (host.starts_with('[') != host.ends_with(']')) {
            return Err(bad(UpstreamProblem::Host));
        }
        let port: u16 = match port {
            None => 80,
            Some(p) => p.parse().map_err(|_| bad(UpstreamProblem::Port))?,
        };
        Ok(Upstream {
            authority: format!("{host}:{port}"),
        })
    }
}

impl Serve {
    /// The addresses to bind: the configured ones, or the IPv6 wildcard (which also
    /// accepts IPv4 on Linux) when none were given.
    pub fn bind_addresses(&self) -> Vec<SocketAddr> {
        if self.addresses.is_empty() {
            vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), self.port)]
        } else {
            self.addresses.clone()
        }
    }
}

/// The server's flags, checked and resolved (`--connect` is not given). The session's
/// rules have been checked; `framing` is theirs.
pub(super) fn settings(cli: &Cli, framing: Framing) -> Result<Serve, ConfigError> {
    if cli.proxy.is_some() || cli.reconnect || cli.insecure {
        return Err(UsageError::ClientFlagWithoutConnect.into());
    }
    let port = cli.port.unwrap_or(if cli.ssl { 443 } else { 80 });
    let tcp = cli.unixsocket.is_none() || cli.port.is_some() || !cli.address.is_empty();
    let tls = tls_files(cli)?;
    let trusted_proxies = TrustedProxies::parse(&cli.trusted_proxy).map_err(UsageError::from)?;
    if cli.redirport.is_some_and(|p| p != 0) && !tcp {
        return Err(UsageError::RedirectWithoutTcp.into());
    }
    if cli.program.is_some() && cli.dir.is_some() {
        return Err(UsageError::DirAndProgram.into());
    }
    // websocketd's rule: both would answer the same plain requests.
    if cli.devconsole && (cli.staticdir.is_some() || cli.cgidir.is_some()) {
        return Err(UsageError::ConsoleAndFiles.into());
    }
    if cli.devconsole && cli.upstream.is_some() {
        return Err(UsageError::ConsoleAndUpstream.into());
    }
    let shared_given = cli.shared.as_deref().is_some_and(|m| m.trim() != "false");
    let broker = broker::check(cli, shared_given)?;
    let shared = match broker.as_ref().map(|b| b.role()) {
        Some(Role::Edge) => Some(edge_shared(cli)?),
        // The producer starts at startup: its edges' clients may come before its own.
        Some(Role::Producer) => parse_shared(cli, framing)?.map(|s| Shared { eager: true, ..s }),
        None => parse_shared(cli, framing)?,
    };
    if cli.cgitimeout == 0 {
        return Err(UsageError::Zero("--cgitimeout").into());
    }
    if cli.maxperclient == Some(0) {
        return Err(UsageError::Zero("--maxperclient").into());
    }
    let headers = ExtraHeaders {
        all: parse_headers(&cli.header, "--header")?,
        ws: parse_headers(&cli.header_ws, "--header-ws")?,
        http: parse_headers(&cli.header_http, "--header-http")?,
    };
    let upstream = cli
        .upstream
        .as_deref()
        .map(Upstream::parse)
        .transpose()
        .map_err(UsageError::from)?;
    let metrics = cli.metrics.as_deref().map(parse_metrics).transpose()?;
    let access = access::check(cli)?;
    let origin = OriginPolicy::from_flags(cli.origin.as_deref(), cli.sameorigin).map_err(UsageError::from)?;
    if cli.unixsocket.is_none() && (cli.unixsocket_mode.is_some() || cli.unixsocket_group.is_some()) {
        return Err(UsageError::UnixSocketOptionWithoutSocket.into());
    }
    let unix_mode = cli.unixsocket_mode.as_deref().map(parse_mode).transpose()?;

    // The command line is right; now what it names.
    if tls.is_some() && !cfg!(feature = "tls") {
        return Err(ResolveError::NoTls.into());
    }
    let access = Box::new(access.resolve()?);
    let broker = broker
        .map(|b| b.resolve(cli.broker_creds.as_deref()).map(Box::new))
        .transpose()?;
    Ok(Serve {
        addresses: resolve_addresses(&cli.address, port)?,
        port,
        tcp,
        unix_socket: cli.unixsocket.clone(),
        unix_mode,
        unix_group: cli.unixsocket_group.as_deref().map(resolve_group).transpose()?,
        // 0 is websocketd's "no redirect listener".
        redirect_port: cli.redirport.filter(|p| *p != 0),
        tls,
        trusted_proxies,
        script_dir: resolve_dir(cli.dir.as_deref(), "--dir")?,
        static_dir: resolve_dir(cli.staticdir.as_deref(), "--staticdir")?,
        cgi_dir: resolve_dir(cli.cgidir.as_deref(), "--cgidir")?,
        cgi_timeout: Duration::from_secs(cli.cgitimeout),
        dev_console: cli.devconsole,
        upstream,
        max_forks: (cli.maxforks > 0).then_some(cli.maxforks),
        shared,
        broker,
        max_per_client: cli.maxperclient,
        origin,
        headers,
        metrics,
        access,
    })
}

/// `--metrics=IP:PORT`. A host name is refused rather than resolved: which of its
/// addresses (IPv4 or IPv6, public or not) would be bound should not be a surprise.
fn parse_metrics(value: &str) -> Result<SocketAddr, UsageError> {
    value.parse().map_err(|_| UsageError::MetricsAddress(value.to_owned()))
}

/// websocketd's rules: `--ssl` needs both files, and the files need `--ssl`.
fn tls_files(cli: &Cli) -> Result<Option<TlsFiles>, UsageError> {
    if !cli.ssl {
        return match (&cli.sslcert, &cli.sslkey, &cli.sslca) {
            (None, None, None) => Ok(None),
            _ => Err(UsageError::TlsFilesWithoutSsl),
        };
    }
    match (&cli.sslcert, &cli.sslkey) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: cli.sslca.clone(),
        })),
        _ => Err(UsageError::SslWithoutFiles),
    }
}

/// `--shared=MODES`, checked against the flags it cannot work with.
fn parse_shared(cli: &Cli, framing: Framing) -> Result<Option<Shared>, UsageError> {
    let Some(modes) = cli.shared.as_deref() else {
        return Ok(None);
    };
    if modes.trim() == "false" {
        return Ok(None);
    }
    let mut shared = Shared {
        eager: false,
        once: false,
        ids: false,
        queue_bytes: cli.sharedqueue,
    };
    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        match mode {
            "eager" => shared.eager = true,
            "once" => shared.once = true,
            "ids" => shared.ids = true,
            // websocketd-style booleans: --shared=true is --shared.
            "true" | "lazy" => {}
            other => return Err(UsageError::SharedMode(other.to_owned())),
        }
    }
    if cli.program.is_none() {
        return Err(UsageError::SharedWithoutProgram);
    }
    if cli.pty || cli.passstderr {
        return Err(UsageError::SharedAndPty);
    }
    if shared.ids && framing != Framing::Line {
        return Err(UsageError::SharedIdsFraming);
    }
    if shared.queue_bytes == 0 {
        return Err(UsageError::Zero("--sharedqueue"));
    }
    Ok(Some(shared))
}

/// An edge's `--shared` settings: it has no program, so only `--sharedqueue` and the
/// fan-out apply; it connects at startup (as `eager`). `--shared` and `--shared=ids` are
/// accepted (ids is the producer's choice), `eager` and `once` are refused.
fn edge_shared(cli: &Cli) -> Result<Shared, UsageError> {
    for mode in cli.shared.as_deref().unwrap_or("").split(',').map(str::trim) {
        match mode {
            "" | "true" | "false" | "lazy" | "ids" => {}
            "eager" => return Err(UsageError::EdgeSharedMode("eager")),
            "once" => return Err(UsageError::EdgeSharedMode("once")),
            other => return Err(UsageError::SharedMode(other.to_owned())),
        }
    }
    if cli.pty || cli.passstderr {
        return Err(UsageError::SharedAndPty);
    }
    Ok(Shared {
        eager: true,
        once: false,
        ids: false,
        queue_bytes: cli.sharedqueue,
    })
}

/// `--unixsocket-mode`: octal permission bits, at most 0777 (`0660`, `660`, `0o660`).
fn parse_mode(s: &str) -> Result<u32, UsageError> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.is_empty() => Ok(mode),
        _ => Err(UsageError::UnixSocketMode(s.to_owned())),
    }
}

/// `--unixsocket-group`: a group name from the group database, or a number.
fn resolve_group(name: &str) -> Result<u32, ResolveError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(ResolveError::NoGroup(name.to_owned())),
        Err(e) => Err(ResolveError::GroupLookup {
            group: name.to_owned(),
            why: std::io::Error::from(e),
        }),
    }
}

fn resolve_addresses(addresses: &[String], port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    let mut out = Vec::new();
    for a in addresses {
        let bad = |why| ResolveError::Address {
            address: a.clone(),
            why,
        };
        let host = a.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(a);
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
            continue;
        }
        let found = (host, port)
            .to_socket_addrs()
            .map_err(|e| bad(AddressProblem::Lookup(e)))?;
        let before = out.len();
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.len() == before {
            return Err(bad(AddressProblem::Nothing));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_accept_brackets_and_names() {
        let a = resolve_addresses(&["[::1]".into(), "127.0.0.1".into()], 9).unwrap();
        assert_eq!(a, vec!["[::1]:9".parse().unwrap(), "127.0.0.1:9".parse().unwrap()]);
        assert!(!resolve_addresses(&["localhost".into()], 9).unwrap().is_empty());
    }

    #[test]
    fn unix_socket_modes_are_octal_and_groups_resolve() {
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert_eq!(parse_mode("660").unwrap(), 0o660);
        assert_eq!(parse_mode("0o777").unwrap(), 0o777);
        for bad in ["", "0o", "8", "0999", "1777", "rw-rw----", "-1"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_mode("0999").unwrap_err().to_string(),
            "invalid --unixsocket-mode=0999: expected octal permissions from 0 to 0777, e.g. 0660"
        );
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert_eq!(resolve_group("33").unwrap(), 33);
        assert_eq!(
            resolve_group("no-such-group-xyz").unwrap_err().to_string(),
            "--unixsocket-group=no-such-group-xyz: no such group"
        );
    }

    #[test]
    fn upstream_is_http_host_port_only() {
        let a = |s: &str| Upstream::parse(s).map(|u| u.authority);
        assert_eq!(a("http://127.0.0.1:8000"), Ok("127.0.0.1:8000".into()));
        assert_eq!(a("http://board/"), Ok("board:80".into()));
        assert_eq!(a("http://[::1]:81"), Ok("[::1]:81".into()));
        assert_eq!(a("http://[::1]"), Ok("[::1]:80".into()));
        for bad in [
            "https://x:1",
            "x:1",
            "http://",
            "http://x:1/path",
            "http://x:port",
            "http://u@x:1",
            "http://[::1:1",
        ] {
            assert!(a(bad).is_err(), "{bad}");
        }
        assert_eq!(
            a("http://x:port").unwrap_err().to_string(),
            "invalid --upstream=http://x:port: bad port"
        );
    }
}
