//! `Config`: the resolved, typed settings wsbridge runs with, built from [`Cli`]. One mode
//! each, [`Mode::Serve`] (listen for WebSocket clients) or [`Mode::Connect`] (`--connect`:
//! dial out), beside the [`Session`] settings both modes share; neither mode carries the
//! other's settings. The rest of the code never sees clap.
//!
//! Every cross-flag rule is checked once: the session's here, the server's in `serve`,
//! the client's in [`connect`]. Usage errors (flags that cannot go together, a value that
//! cannot be right) are all found before anything is looked up; then resolving what the
//! flags name can fail: PROGRAM is looked up on PATH and checked for the execute bit,
//! directories and addresses are resolved, the environment's proxy is read. Both are a
//! [`ConfigError`], whose kind main turns into exit status 2 or 1, at startup rather than
//! as a surprise at the first connection.
//!
//! Config is the bottom of the tree: it holds only values whose types live here or in
//! other leaves ([`crate::forwarded`], [`crate::framing`], [`crate::origin`],
//! [`crate::route`], [`crate::net`]), never a runtime module's. This file has the top
//! types and the session's rules; `serve` the server's settings, `program` finds and
//! checks PROGRAM and the directories, `error` the error types.

mod access;
pub mod broker;
#[cfg(feature = "connect")]
pub mod connect;
mod error;
mod limits;
mod program;
mod serve;

use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::time::Duration;

use hyper::http::{HeaderName, HeaderValue};

pub use self::access::{Access, AuthUrl, Hook};
pub use self::broker::{Broker, Role};
#[cfg(feature = "connect")]
pub use self::connect::Connect;
pub use self::error::{AddressProblem, ConfigError, HeaderProblem, PathProblem, ResolveError, UsageError};
pub use self::limits::{parse_duration, RateLimit, ValueProblem};
pub use self::program::{is_executable_file, Program};
pub use self::serve::{ExtraHeaders, Serve, Shared, TlsFiles, Upstream, UpstreamError};
use crate::cli::Cli;
use crate::framing::Framing;

/// Everything wsbridge needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// How each program runs and its messages are relayed, in both modes.
    pub session: Session,
    /// `--threads`: the runtime's threads; `None` = one per CPU core.
    pub threads: Option<NonZeroUsize>,
    pub log_level: LogLevel,
    /// `--logformat`.
    pub log_format: LogFormat,
    /// What wsbridge does with the session settings: serve, or connect out.
    pub mode: Mode,
}

/// Listening or `--connect`, each with only its own settings.
#[derive(Debug, Clone)]
pub enum Mode {
    Serve(Serve),
    /// `--connect` (cargo feature `connect`).
    #[cfg(feature = "connect")]
    Connect(Connect),
}

/// What every session uses, in both modes: the program, how its bytes become messages,
/// the limits and the timings.
#[derive(Debug, Clone)]
pub struct Session {
    /// PROGRAM. `None` serving with `--dir` (scripts are found per request) or HTTP only;
    /// with `--connect`, `None` relays wsbridge's own stdin/stdout (pipe mode).
    pub program: Option<Program>,
    pub framing: Framing,
    /// `--maxframesize`: the largest message, each way.
    pub max_message: usize,
    /// `--closems`: added to each step of the stop ladder.
    pub close_grace: Duration,
    /// `--passenv` names with the values wsbridge had at startup (empty ones skipped).
    pub passenv: Vec<(String, String)>,
    pub ping_interval: Option<Duration>,
    /// `--passstderr`: stderr lines go to the client too, as tagged JSON messages.
    pub pass_stderr: bool,
    /// `--pty`: the program runs on a pseudo-terminal.
    pub pty: bool,
    /// `--subprotocol`, in our order; empty = offers are ignored. With `--connect`, the
    /// protocols to offer (`all` only).
    pub subprotocols: Subprotocols,
    /// `--ratelimit`: how fast the peer's messages are read.
    pub rate_limit: Option<RateLimit>,
    /// `--idletimeout`: close when no message went either way for this long.
    pub idle_timeout: Option<Duration>,
    /// `--compress`: permessage-deflate within these limits (`None`: not offered, and
    /// declined when a client offers it).
    pub compress: Option<Compress>,
}

/// The operator's limits for permessage-deflate (`--compress-window-bits`,
/// `--compress-no-context-takeover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compress {
    /// The largest LZ77 window we compress with (and ask the peer to use), 9 to 15.
    pub window_bits: u8,
    /// Start every message with an empty window both ways, so no compression state is
    /// kept between messages.
    pub no_context_takeover: bool,
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

/// websocketd's log level names, from most to least verbose as wsbridge orders them:
/// `trace` shows the most (websocketd puts `debug` first; see README "Differences from
/// websocketd").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything, message payloads included (cut at a bound).
    Trace,
    /// One line per message (direction, size, framing), no payloads.
    Debug,
    Access,
    Info,
    Error,
    Fatal,
    None,
}

/// `--logformat`: how each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// tracing's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl TryFrom<Cli> for Config {
    type Error = ConfigError;

    fn try_from(cli: Cli) -> Result<Self, ConfigError> {
        let framing = framing(cli.binary, cli.framing.as_deref())?;
        if cli.passstderr && framing != Framing::Line {
            return Err(UsageError::PassStderrFraming.into());
        }
        if cli.pty && cli.passstderr {
            return Err(UsageError::PtyAndPassStderr.into());
        }
        if cli.pty && framing == Framing::LenPrefix {
            return Err(UsageError::PtyAndLenPrefix.into());
        }
        if cli.maxframesize == 0 {
            return Err(UsageError::Zero("--maxframesize").into());
        }
        let subprotocols = subprotocols(&cli.subprotocol, cli.dir.is_some())?;
        let rate_limit = value(cli.ratelimit.as_deref(), "--ratelimit", RateLimit::parse)?;
        let idle_timeout = value(cli.idletimeout.as_deref(), "--idletimeout", parse_duration)?;
        // Each mode checks its own flags first, then resolves what they name; PROGRAM is
        // looked up last, so that every usage error comes before any lookup's.
        let mode = match cli.connect.is_some() {
            true => connect_mode(&cli)?,
            false => Mode::Serve(serve::settings(&cli, framing)?),
        };
        let compress = compress(&cli)?;
        let passenv = read_passenv(&cli.passenv);
        let child_path = passenv.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_ref());
        let session = Session {
            program: Program::resolve(cli.program, cli.args, child_path)?,
            framing,
            max_message: cli.maxframesize,
            close_grace: Duration::from_millis(cli.closems),
            passenv,
            ping_interval: (cli.pingms > 0).then(|| Duration::from_millis(cli.pingms)),
            pass_stderr: cli.passstderr,
            pty: cli.pty,
            subprotocols,
            rate_limit,
            idle_timeout,
            compress,
        };
        Ok(Config {
            session,
            threads: cli.threads,
            log_level: log_level(&cli.loglevel),
            log_format: match cli.logformat.as_str() {
                "json" => LogFormat::Json,
                _ => LogFormat::Text,
            },
            mode,
        })
    }
}

/// `--compress` and its limits; a build without the `compress` feature refuses it.
fn compress(cli: &Cli) -> Result<Option<Compress>, ConfigError> {
    if !cli.compress {
        return Ok(None);
    }
    #[cfg(not(feature = "compress"))]
    return Err(ResolveError::NoCompress.into());
    #[cfg(feature = "compress")]
    Ok(Some(Compress {
        window_bits: cli.compress_window_bits,
        no_context_takeover: cli.compress_no_context_takeover,
    }))
}

#[cfg(feature = "connect")]
fn connect_mode(cli: &Cli) -> Result<Mode, ConfigError> {
    connect::settings(cli).map(Mode::Connect)
}

#[cfg(not(feature = "connect"))]
fn connect_mode(_cli: &Cli) -> Result<Mode, ConfigError> {
    Err(ResolveError::NoConnect.into())
}

impl Config {
    /// A config for `program` with every other setting at its default; for embedding and
    /// tests. Fails like the command line does when the program cannot be run.
    pub fn for_program(program: &str, args: &[&str]) -> Result<Self, ConfigError> {
        let mut argv = vec![OsString::from("wsbridge"), OsString::from(program)];
        argv.extend(args.iter().map(OsString::from));
        let cli = Cli::try_parse_args(argv).map_err(|e| UsageError::Parse(e.into()))?;
        Config::try_from(cli)
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

/// An optional flag's value, parsed; a bad one is a usage error naming the flag.
fn value<T>(
    raw: Option<&str>,
    flag: &'static str,
    parse: impl Fn(&str) -> Result<T, ValueProblem>,
) -> Result<Option<T>, UsageError> {
    raw.map(|v| {
        parse(v).map_err(|why| UsageError::Value {
            flag,
            value: v.to_owned(),
            why,
        })
    })
    .transpose()
}

fn framing(binary: bool, mode: Option<&str>) -> Result<Framing, UsageError> {
    let mode = match mode {
        None => return Ok(if binary { Framing::Binary } else { Framing::Line }),
        Some(m) => Framing::parse(m).ok_or_else(|| UsageError::UnknownFraming(m.to_owned()))?,
    };
    if binary && mode != Framing::Binary {
        return Err(UsageError::BinaryAndFraming);
    }
    Ok(mode)
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

/// Every `--subprotocol`: at most one common `LIST`, and (with `--dir` only) one
/// `/PATH=LIST` per path.
fn subprotocols(values: &[String], dir: bool) -> Result<Subprotocols, UsageError> {
    let mut out = Subprotocols::default();
    let mut common = false;
    for v in values {
        match v.split_once('=') {
            Some((path, list)) if path.starts_with('/') => {
                if !dir {
                    return Err(UsageError::SubprotocolPathWithoutDir(v.clone()));
                }
                if out.by_path.iter().any(|(p, _)| p == path) {
                    return Err(UsageError::SubprotocolPathTwice(path.to_owned()));
                }
                out.by_path.push((path.to_owned(), parse_subprotocols(list)?));
            }
            _ if common => return Err(UsageError::SubprotocolListTwice),
            _ => {
                out.all = parse_subprotocols(v)?;
                common = true;
            }
        }
    }
    Ok(out)
}

/// `--subprotocol=a,b`: names are HTTP tokens (RFC 6455 §4.1), kept in the given order.
fn parse_subprotocols(list: &str) -> Result<Vec<String>, UsageError> {
    let names: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err(UsageError::SubprotocolEmpty);
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if let Some(bad) = names.iter().find(|n| !n.chars().all(token)) {
        return Err(UsageError::SubprotocolName(bad.clone()));
    }
    Ok(names)
}

fn parse_headers(raw: &[String], flag: &'static str) -> Result<Vec<(HeaderName, HeaderValue)>, UsageError> {
    raw.iter()
        .map(|h| {
            let bad = |why| UsageError::Header {
                flag,
                value: h.clone(),
                why,
            };
            let (name, value) = h.split_once(':').ok_or_else(|| bad(HeaderProblem::NoColon))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad(HeaderProblem::Name))?;
            let value = HeaderValue::from_str(value.trim_start()).map_err(|_| bad(HeaderProblem::Value))?;
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
        let e = parse_headers(&["nocolon".into()], "--header").unwrap_err();
        assert_eq!(e.to_string(), r#"invalid --header="nocolon": expected "Name: value""#);
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
            .to_string()
            .contains("needs --dir"));
        assert!(subprotocols(&v(&["a", "b"]), false).is_err());
        assert!(subprotocols(&v(&["/x=a", "/x=b"]), true).is_err());
        assert!(subprotocols(&v(&["/x=a b"]), true).is_err());
    }

    fn config(words: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("wsbridge")
            .chain(words.iter().copied())
            .map(OsString::from);
        Config::try_from(Cli::try_parse_args(argv).expect("parses"))
    }

    #[test]
    fn usage_errors_come_before_any_lookup() {
        // Both wrong: the flags that cannot go together, and a program that is not there.
        let e = config(&["--pty", "--passstderr", "no-such-program-xyz"]).unwrap_err();
        assert!(matches!(e, ConfigError::Usage(UsageError::PtyAndPassStderr)), "{e:?}");
        // The command line cannot say 0 (its range starts at 1); a Cli built in code can.
        let argv = ["wsbridge", "--dir=/no/such/dir"].map(OsString::from);
        let mut cli = Cli::try_parse_args(argv).expect("parses");
        cli.maxframesize = 0;
        let e = Config::try_from(cli).unwrap_err();
        assert!(
            matches!(e, ConfigError::Usage(UsageError::Zero("--maxframesize"))),
            "{e:?}"
        );
        let e = config(&["--origin=http://", "--address=no-such-host.invalid", "sh"]).unwrap_err();
        assert!(matches!(e, ConfigError::Usage(UsageError::Origin(_))), "{e:?}");
        let e = config(&["no-such-program-xyz"]).unwrap_err();
        assert!(matches!(e, ConfigError::Resolve(ResolveError::NotOnPath(_))), "{e:?}");
    }

    #[test]
    fn each_mode_carries_only_its_own_settings() {
        let c = config(&["--port=81", "--pingms=5", "sh"]).unwrap();
        assert_eq!(c.session.ping_interval, Some(Duration::from_millis(5)));
        assert!(matches!(c.mode, Mode::Serve(ref s) if s.port == 81));
        #[cfg(feature = "connect")]
        {
            let c = config(&["--connect=ws://h/", "--pingms=5"]).unwrap();
            assert!(c.session.program.is_none(), "pipe mode");
            assert!(matches!(c.mode, Mode::Connect(ref k) if k.target.host == "h"));
        }
    }
}
