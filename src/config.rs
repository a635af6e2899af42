//! `Config`: the resolved, typed settings the server runs with, built from [`Cli`] with
//! cross-flag validation. The rest of the code never sees clap.
//!
//! Resolution that can fail happens here, at startup, so that a bad command line is a
//! one-line error and exit status 1 rather than a surprise at the first connection: the
//! program is looked up on PATH and checked for the execute bit, `--passenv` values are
//! read once, headers and origins are parsed.
//!
//! Config is the bottom of the tree: it holds only values whose types live here or in
//! other leaves ([`crate::forwarded`], [`crate::framing`], [`crate::origin`],
//! [`crate::route`], [`crate::net`]), never a runtime module's. This file has the types
//! and the server's cross-flag rules; `program` finds and checks PROGRAM and the
//! directories; [`connect`] resolves `--connect`'s settings (target, proxy, TLS files).

#[cfg(feature = "connect")]
pub mod connect;
mod program;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use hyper::http::{HeaderName, HeaderValue};

#[cfg(feature = "connect")]
use self::connect::client_config;
use self::program::resolve_dir;
pub use self::program::{is_executable_file, Program};
use crate::cli::Cli;
use crate::forwarded::TrustedProxies;
use crate::framing::Framing;
use crate::origin::OriginPolicy;

/// Everything the server needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen. Empty means "all interfaces" on [`Config::port`].
    pub addresses: Vec<SocketAddr>,
    pub port: u16,
    /// Whether to listen on TCP at all: false when only `--unixsocket` was given.
    pub tcp: bool,
    /// `--unixsocket`.
    pub unix_socket: Option<PathBuf>,
    /// `--redirport`: a plain-HTTP listener beside each TCP address that redirects (301).
    pub redirect_port: Option<u16>,
    /// `--ssl` with its files; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// `--trusted-proxy`.
    pub trusted_proxies: TrustedProxies,
    /// `None` with `--dir` (scripts are found per request) or when only HTTP is served.
    pub program: Option<Program>,
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
    pub framing: Framing,
    /// `None` = unlimited.
    pub max_forks: Option<usize>,
    /// `--threads`: the runtime's threads; `None` = one per CPU core.
    pub threads: Option<std::num::NonZeroUsize>,
    /// `--closems`: added to each step of the stop ladder.
    pub close_grace: Duration,
    /// `--passenv` names with the values wsbridge had at startup (empty ones skipped).
    pub passenv: Vec<(String, String)>,
    pub max_message: usize,
    pub ping_interval: Option<Duration>,
    /// `--passstderr`: stderr lines go to the client too, as tagged JSON messages.
    pub pass_stderr: bool,
    /// `--subprotocol`, in our order; empty = offers are ignored.
    pub subprotocols: Subprotocols,
    /// `--pty`: the program runs on a pseudo-terminal.
    pub pty: bool,
    /// `--shared`: one program for every client.
    pub shared: Option<Shared>,
    pub origin: OriginPolicy,
    pub headers: ExtraHeaders,
    pub log_level: LogLevel,
    /// `--connect`: wsbridge is a client; the listening settings above are unused.
    pub outbound: Option<ClientSettings>,
}

/// `--subprotocol` lists: one for every endpoint, and with `--dir` one per script path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subprotocols {
    pub all: Vec<String>,
    /// `/PATH=LIST`: the script at URL path `/PATH` (its `SCRIPT_NAME`) speaks `LIST`.
    pub by_path: Vec<(String, Vec<String>)>,
}

impl Subprotocols {
    /// The list for the endpoint at `script_name`: its own, else the common one.
    pub fn for_path(&self, script_name: &str) -> &[String] {
        self.by_path
            .iter()
            .find(|(p, _)| p == script_name)
            .map_or(&self.all, |(_, list)| list)
    }
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

impl Upstream {
    /// Parses the `--upstream` value. Only `http://` and no path: wsbridge forwards the
    /// request's own path.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid --upstream={s}: {why}");
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| bad("expected http://HOST:PORT"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad("expected http://HOST:PORT (no path)"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !rest.ends_with(']') => (h, Some(p)),
            _ => (rest, None),
        };
        if host.is_empty() || (host.starts_with('[') != host.ends_with(']')) {
            return Err(bad("bad host"));
        }
        let port: u16 = match port {
            None => 80,
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
        };
        Ok(Upstream {
            authority: format!("{host}:{port}"),
        })
    }
}

/// websocketd's log levels, from most to least verbose as websocketd orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Trace,
    Access,
    Info,
    Error,
    Fatal,
    None,
}

impl TryFrom<Cli> for Config {
    type Error = String;

    fn try_from(cli: Cli) -> Result<Self, String> {
        if cli.connect.is_some() {
            return client_config(cli);
        }
        if cli.proxy.is_some() || cli.reconnect || cli.insecure {
            return Err("--proxy, --reconnect and --insecure need --connect=URL".into());
        }
        let port = cli.port.unwrap_or(if cli.ssl { 443 } else { 80 });
        let tcp = cli.unixsocket.is_none() || cli.port.is_some() || !cli.address.is_empty();
        let tls = tls_files(&cli)?;
        let trusted_proxies = TrustedProxies::parse(&cli.trusted_proxy).map_err(|e| e.to_string())?;
        if cli.redirport.is_some_and(|p| p != 0) && !tcp {
            return Err("--redirport needs a TCP listener (--port or --address)".into());
        }
        let addresses = resolve_addresses(&cli.address, port)?;
        if cli.program.is_some() && cli.dir.is_some() {
            return Err("--dir cannot be combined with PROGRAM: give one or the other".into());
        }
        if let Some(conflict) = cli.console_conflict() {
            return Err(conflict.into());
        }
        if cli.devconsole && cli.upstream.is_some() {
            return Err("--devconsole answers every plain request, so --upstream would never be used: give one".into());
        }
        let shared = parse_shared(&cli)?;
        let program = Program::resolve(cli.program, cli.args)?;
        if cli.cgitimeout == 0 {
            return Err("--cgitimeout must be at least 1".into());
        }
        let headers = ExtraHeaders {
            all: parse_headers(&cli.header, "--header")?,
            ws: parse_headers(&cli.header_ws, "--header-ws")?,
            http: parse_headers(&cli.header_http, "--header-http")?,
        };
        if cli.passstderr && framing(cli.binary, cli.framing.as_deref())? != Framing::Line {
            return Err(
                "--passstderr sends JSON text messages: it needs line framing, not --binary or --framing".into(),
            );
        }
        if cli.pty && cli.passstderr {
            return Err("--pty merges stderr into the terminal: it cannot be combined with --passstderr".into());
        }
        if cli.pty && framing(cli.binary, cli.framing.as_deref())? == Framing::LenPrefix {
            return Err("--pty changes the bytes (CR LF, line editing): it cannot carry --framing=lenprefix".into());
        }
        if cli.maxframesize == 0 {
            return Err("--maxframesize must be at least 1".into());
        }
        Ok(Config {
            addresses,
            port,
            tcp,
            unix_socket: cli.unixsocket.clone(),
            // 0 is websocketd's "no redirect listener".
            redirect_port: cli.redirport.filter(|p| *p != 0),
            tls,
            trusted_proxies,
            program,
            script_dir: resolve_dir(cli.dir.as_deref(), "--dir")?,
            static_dir: resolve_dir(cli.staticdir.as_deref(), "--staticdir")?,
            cgi_dir: resolve_dir(cli.cgidir.as_deref(), "--cgidir")?,
            cgi_timeout: Duration::from_secs(cli.cgitimeout),
            dev_console: cli.devconsole,
            upstream: cli.upstream.as_deref().map(Upstream::parse).transpose()?,
            framing: framing(cli.binary, cli.framing.as_deref())?,
            max_forks: (cli.maxforks > 0).then_some(cli.maxforks),
            threads: cli.threads,
            close_grace: Duration::from_millis(cli.closems),
            passenv: read_passenv(&cli.passenv),
            max_message: cli.maxframesize,
            ping_interval: (cli.pingms > 0).then(|| Duration::from_millis(cli.pingms)),
            pass_stderr: cli.passstderr,
            subprotocols: subprotocols(&cli.subprotocol, cli.dir.is_some())?,
            pty: cli.pty,
            shared,
            origin: OriginPolicy::from_flags(cli.origin.as_deref(), cli.sameorigin).map_err(|e| e.to_string())?,
            headers,
            log_level: log_level(&cli.loglevel),
            outbound: None,
        })
    }
}

fn log_level(name: &str) -> LogLevel {
    match name {
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        "info" => LogLevel::Info,
        "error" => LogLevel::Error,
        "fatal" => LogLevel::Fatal,
        "none" => LogLevel::None,
        _ => LogLevel::Access,
    }
}

/// What `--connect` needs beyond the session settings (cargo feature `connect`).
#[cfg(feature = "connect")]
pub type ClientSettings = connect::Settings;
/// Built without the cargo feature `connect`: there is never a client side.
#[cfg(not(feature = "connect"))]
#[derive(Debug, Clone)]
pub enum ClientSettings {}

#[cfg(not(feature = "connect"))]
fn client_config(_cli: Cli) -> Result<Config, String> {
    Err("--connect: this wsbridge was built without it (cargo feature `connect`)".into())
}

impl Config {
    /// Whether this is `--connect` (client) mode.
    pub fn is_client(&self) -> bool {
        self.outbound.is_some()
    }

    /// A config for `program` with every other setting at its default; for embedding and
    /// tests. Fails like the command line does when the program cannot be run.
    pub fn for_program(program: &str, args: &[&str]) -> Result<Self, String> {
        let mut argv = vec![OsString::from("wsbridge"), OsString::from(program)];
        argv.extend(args.iter().map(OsString::from));
        let cli = Cli::try_parse_args(argv).map_err(|e| e.to_string())?;
        Config::try_from(cli)
    }

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

/// websocketd's rules: `--ssl` needs both files, and the files need `--ssl`.
fn tls_files(cli: &Cli) -> Result<Option<TlsFiles>, String> {
    if !cli.ssl {
        return match (&cli.sslcert, &cli.sslkey, &cli.sslca) {
            (None, None, None) => Ok(None),
            _ => Err("--sslcert, --sslkey and --sslca need --ssl".into()),
        };
    }
    if !cfg!(feature = "tls") {
        return Err("--ssl: this wsbridge was built without TLS (cargo feature `tls`)".into());
    }
    match (&cli.sslcert, &cli.sslkey) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: cli.sslca.clone(),
        })),
        _ => Err("--ssl needs both --sslcert=FILE and --sslkey=FILE".into()),
    }
}

fn framing(binary: bool, mode: Option<&str>) -> Result<Framing, String> {
    let mode = match mode {
        None => return Ok(if binary { Framing::Binary } else { Framing::Line }),
        Some(m) => Framing::parse(m).ok_or_else(|| format!("unknown --framing={m}"))?,
    };
    if binary && mode != Framing::Binary {
        return Err("--binary means --framing=binary; give only one of them".into());
    }
    Ok(mode)
}

fn resolve_addresses(addresses: &[String], port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for a in addresses {
        let host = a.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(a);
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
            continue;
        }
        let found = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve --address={a}: {e}"))?;
        let before = out.len();
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.len() == before {
            return Err(format!("cannot resolve --address={a}: no addresses"));
        }
    }
    Ok(out)
}

fn read_passenv(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "HTTPS")
        .filter_map(|n| {
            let v = std::env::var(n).ok()?;
            let v = v.replace(['\r', '\n'], " ");
            let v = v.trim();
            (!v.is_empty()).then(|| (n.to_owned(), v.to_owned()))
        })
        .collect()
}

/// `--shared=MODES`, checked against the flags it cannot work with.
fn parse_shared(cli: &Cli) -> Result<Option<Shared>, String> {
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
            other => return Err(format!("unknown --shared mode {other:?}: expected eager, once or ids")),
        }
    }
    if cli.program.is_none() {
        return Err("--shared needs PROGRAM (it cannot be combined with --dir)".into());
    }
    if cli.pty || cli.passstderr {
        return Err("--shared cannot be combined with --pty or --passstderr".into());
    }
    if shared.ids && framing(cli.binary, cli.framing.as_deref())? != Framing::Line {
        return Err("--shared=ids prefixes lines: it needs line framing".into());
    }
    if shared.queue_bytes == 0 {
        return Err("--sharedqueue must be at least 1".into());
    }
    Ok(Some(shared))
}

/// Every `--subprotocol`: at most one common `LIST`, and (with `--dir` only) one
/// `/PATH=LIST` per path.
fn subprotocols(values: &[String], dir: bool) -> Result<Subprotocols, String> {
    let mut out = Subprotocols::default();
    let mut common = false;
    for v in values {
        match v.split_once('=') {
            Some((path, list)) if path.starts_with('/') => {
                if !dir {
                    return Err(format!("--subprotocol={v}: a per-path list needs --dir"));
                }
                if out.by_path.iter().any(|(p, _)| p == path) {
                    return Err(format!("--subprotocol: {path} is given twice"));
                }
                out.by_path.push((path.to_owned(), parse_subprotocols(list)?));
            }
            _ if common => return Err("--subprotocol: give one common list (or /PATH=LIST with --dir)".into()),
            _ => {
                out.all = parse_subprotocols(v)?;
                common = true;
            }
        }
    }
    Ok(out)
}

/// `--subprotocol=a,b`: names are HTTP tokens (RFC 6455 §4.1), kept in the given order.
fn parse_subprotocols(list: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err("--subprotocol needs at least one name".into());
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if let Some(bad) = names.iter().find(|n| !n.chars().all(token)) {
        return Err(format!("invalid --subprotocol name {bad:?}: not an HTTP token"));
    }
    Ok(names)
}

fn parse_headers(raw: &[String], flag: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    raw.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("invalid {flag}={h:?}: expected \"Name: value\""))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("invalid {flag}={h:?}: bad header name"))?;
            let value = HeaderValue::from_str(value.trim_start())
                .map_err(|_| format!("invalid {flag}={h:?}: bad header value"))?;
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_refuse_garbage() {
        let h = parse_headers(&["X-A:  b c".into()], "--header").unwrap();
        assert_eq!(h[0].0.as_str(), "x-a");
        assert_eq!(h[0].1, "b c");
        assert!(parse_headers(&["nocolon".into()], "--header").is_err());
        assert!(parse_headers(&["bad name: x".into()], "--header").is_err());
    }

    #[test]
    fn subprotocols_parse_in_order_and_refuse_garbage() {
        assert_eq!(parse_subprotocols(" b.v1, a ,").unwrap(), ["b.v1", "a"]);
        assert!(parse_subprotocols(",").is_err());
        assert!(parse_subprotocols("a b").is_err());
    }

    #[test]
    fn subprotocols_per_path_need_dir_and_fall_back_to_the_common_list() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(subprotocols(&[], false).unwrap(), Subprotocols::default());
        let s = subprotocols(&v(&["a", "/chat.sh=chat.v2,chat.v1"]), true).unwrap();
        assert_eq!(s.for_path("/chat.sh"), ["chat.v2", "chat.v1"]);
        assert_eq!(s.for_path("/other.sh"), ["a"]);
        assert!(subprotocols(&v(&["/chat.sh=x"]), false)
            .unwrap_err()
            .contains("needs --dir"));
        assert!(subprotocols(&v(&["a", "b"]), false).is_err());
        assert!(subprotocols(&v(&["/x=a", "/x=b"]), true).is_err());
        assert!(subprotocols(&v(&["/x=a b"]), true).is_err());
    }

    #[test]
    fn addresses_accept_brackets_and_names() {
        let a = resolve_addresses(&["[::1]".into(), "127.0.0.1".into()], 9).unwrap();
        assert_eq!(a, vec!["[::1]:9".parse().unwrap(), "127.0.0.1:9".parse().unwrap()]);
        assert!(!resolve_addresses(&["localhost".into()], 9).unwrap().is_empty());
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
    }
}
