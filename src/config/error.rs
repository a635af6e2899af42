//! [`ConfigError`]: why a command line cannot run, in the two kinds main branches on.
//! A [`UsageError`] is decided by the command line alone (flags that cannot go together,
//! a flag that needs another, a value that cannot be right): main prints it the way clap
//! prints its own and exits 2. A [`ResolveError`] comes from looking up what the flags
//! name (PROGRAM on PATH, a directory, an address, a proxy from the environment) or from
//! a feature this build lacks: one `wsbridge:` line, exit 1. Every variant's `Display` is
//! the message a user reads. Pure values; the rules that raise them are in [`super`] and
//! its files.

use std::io;

#[cfg(feature = "connect")]
use hyper::http::HeaderName;

use super::broker::BrokerProblem;
#[cfg(feature = "connect")]
use super::connect::{ProxyUrlError, TargetError};
use super::limits::ValueProblem;
use super::serve::UpstreamError;
use crate::cli::ParseError;
use crate::forwarded::CidrError;
use crate::htpasswd::HtpasswdError;
use crate::origin::OriginError;
use crate::shebang::InterpreterError;

/// Why the flags cannot be turned into a [`super::Config`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// A command line that is wrong in itself: exit status 2, printed like clap's errors.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Clap refused the words [`super::Config::for_program`] built.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// `--maxframesize`, `--cgitimeout`, `--sharedqueue` or `--connect-timeout` was 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),

    /// `--ratelimit`, `--idletimeout`, or another duration or rate.
    #[error("invalid {flag}={value:?}: {why}")]
    Value {
        flag: &'static str,
        value: String,
        why: ValueProblem,
    },

    // How the program's bytes are framed, in both modes.
    #[error("unknown --framing={0}")]
    UnknownFraming(String),
    #[error("--binary means --framing=binary; give only one of them")]
    BinaryAndFraming,
    #[error("--passstderr sends JSON text messages: it needs line framing, not --binary or --framing")]
    PassStderrFraming,
    #[error("--pty merges stderr into the terminal: it cannot be combined with --passstderr")]
    PtyAndPassStderr,
    #[error("--pty changes the bytes (CR LF, line editing): it cannot carry --framing=lenprefix")]
    PtyAndLenPrefix,
    #[error("--subprotocol={0}: a per-path list needs --dir")]
    SubprotocolPathWithoutDir(String),
    #[error("--subprotocol: {0} is given twice")]
    SubprotocolPathTwice(String),
    #[error("--subprotocol: give one common list (or /PATH=LIST with --dir)")]
    SubprotocolListTwice,
    #[error("--subprotocol needs at least one name")]
    SubprotocolEmpty,
    #[error("invalid --subprotocol name {0:?}: not an HTTP token")]
    SubprotocolName(String),
    #[error("invalid {flag}={value:?}: {why}")]
    Header {
        flag: &'static str,
        value: String,
        why: HeaderProblem,
    },

    // Serving.
    #[error("--proxy, --reconnect and --insecure need --connect=URL")]
    ClientFlagWithoutConnect,
    #[error("--sslcert, --sslkey and --sslca need --ssl")]
    TlsFilesWithoutSsl,
    #[error("--ssl needs both --sslcert=FILE and --sslkey=FILE")]
    SslWithoutFiles,
    #[error("--redirport needs a TCP listener (--port or --address)")]
    RedirectWithoutTcp,
    #[error("--dir cannot be combined with PROGRAM: give one or the other")]
    DirAndProgram,
    #[error("--devconsole cannot be combined with --staticdir or --cgidir")]
    ConsoleAndFiles,
    #[error("--devconsole answers every plain request, so --upstream would never be used: give one")]
    ConsoleAndUpstream,
    #[error("unknown --shared mode {0:?}: expected eager, once or ids")]
    SharedMode(String),
    #[error("--shared needs PROGRAM (it cannot be combined with --dir)")]
    SharedWithoutProgram,
    #[error("--shared cannot be combined with --pty or --passstderr")]
    SharedAndPty,
    #[error("--shared=ids prefixes lines: it needs line framing")]
    SharedIdsFraming,
    #[error("--unixsocket-mode and --unixsocket-group need --unixsocket=PATH")]
    UnixSocketOptionWithoutSocket,
    #[error("invalid --unixsocket-mode={0}: expected octal permissions from 0 to 0777, e.g. 0660")]
    UnixSocketMode(String),
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    TrustedProxy(#[from] CidrError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("invalid --metrics={0:?}: expected IP:PORT, e.g. 127.0.0.1:9100")]
    MetricsAddress(String),

    // Access control.
    #[error("--authcmd and --authurl are two ways to do the same check: give one")]
    AuthHookTwice,
    #[error("--authcmd-http needs --authcmd or --authurl")]
    AuthHttpWithoutHook,
    #[error("--realm is named in --htpasswd's 401 answers: it needs --htpasswd")]
    RealmWithoutHtpasswd,
    /// `--authtimeout` or `--authmax` given without a check for it to bound.
    #[error("{0} bounds the access checks: it needs --htpasswd, --authcmd or --authurl")]
    AuthTuningWithoutCheck(&'static str),
    #[error("invalid --realm={0:?}: no quotes, backslashes or control characters")]
    Realm(String),
    /// The whole message, naming `--authurl` and the value.
    #[error("{0}")]
    AuthUrl(String),

    // Connecting out.
    #[cfg(feature = "connect")]
    #[error("{0} is a server flag: it cannot be combined with --connect")]
    ServerFlag(&'static str),
    #[cfg(feature = "connect")]
    #[error(transparent)]
    Url(#[from] TargetError),
    #[cfg(feature = "connect")]
    #[error("--proxy: {0}")]
    Proxy(ProxyUrlError),
    #[cfg(feature = "connect")]
    #[error("--header={0}: wsbridge sets that handshake header itself")]
    HandshakeHeader(HeaderName),
    #[cfg(feature = "connect")]
    #[error("--origin={0:?}: with --connect it is the one Origin value to send (e.g. https://example.com)")]
    OriginList(String),
    #[cfg(feature = "connect")]
    #[error("--origin={0:?}: not a valid header value")]
    OriginValue(String),
    #[cfg(feature = "connect")]
    #[error("--sslca, --sslcert and --sslkey are for wss:// URLs")]
    TlsFilesForWs,
    #[cfg(feature = "connect")]
    #[error("--insecure is about wss:// certificates; this URL is ws://")]
    InsecureForWs,
    #[cfg(feature = "connect")]
    #[error("--insecure skips the certificate check that --sslca is for: give one")]
    InsecureAndCa,
    #[cfg(feature = "connect")]
    #[error("--sslcert and --sslkey go together (a client certificate and its key)")]
    HalfClientCert,
    #[cfg(feature = "connect")]
    #[error("--pty and --passstderr need PROGRAM (without it wsbridge relays its own stdin/stdout)")]
    PipeModeTerminal,

    // The broker (`--broker`, `--topic`); the value is printed without credentials.
    #[error("invalid {flag}={value}: {why}")]
    Broker {
        flag: &'static str,
        value: String,
        why: BrokerProblem,
    },
    #[error("--topic, --broker-ca and --broker-creds need --broker=URL")]
    BrokerFlagWithoutBroker,
    #[error("--broker needs --topic=NAME (the subjects are wsbridge.NAME.*)")]
    BrokerWithoutTopic,
    #[error("--broker-ca is for tls:// brokers; this --broker is nats://")]
    BrokerCaWithoutTls,
    #[error("--broker-creds and a user in the --broker URL are two sets of credentials: give one")]
    BrokerCredentialsTwice,
    #[error("--broker with PROGRAM needs --shared (the producer runs one program for every instance); without PROGRAM it is an edge")]
    BrokerProgramWithoutShared,
    #[error("--broker cannot be combined with --dir (a topic has one program)")]
    BrokerAndDir,
    #[error("--shared={0} is about the program: an edge (--broker without PROGRAM) has none")]
    EdgeSharedMode(&'static str),
}

/// What is wrong with a `--header*` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    #[error("expected \"Name: value\"")]
    NoColon,
    #[error("bad header name")]
    Name,
    #[error("bad header value")]
    Value,
}

/// The flags are fine, but what they name cannot be had here: exit status 1, one line.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no program given")]
    NoProgram,
    #[error("program {0} not found on PATH")]
    NotOnPath(String),
    #[error("cannot run {program}: {why}")]
    CannotRun { program: String, why: PathProblem },
    /// PROGRAM's `#!` line names an interpreter that is not there (or not executable).
    #[error("cannot run {program}: {why}")]
    Interpreter { program: String, why: InterpreterError },
    /// `--dir`, `--staticdir` or `--cgidir`.
    #[error("cannot use {flag}={dir}: {why}")]
    Dir {
        flag: &'static str,
        dir: String,
        why: PathProblem,
    },
    #[error("cannot resolve --address={address}: {why}")]
    Address { address: String, why: AddressProblem },
    #[error("--unixsocket-group={0}: no such group")]
    NoGroup(String),
    #[error("--unixsocket-group={group}: {}", lower_io(.why))]
    GroupLookup { group: String, why: io::Error },
    #[error("--ssl: this wsbridge was built without TLS (cargo feature `tls`)")]
    NoTls,
    #[error("{0}: this wsbridge was built without access control (cargo feature `auth`)")]
    NoAuth(&'static str),
    /// `--htpasswd`: unreadable, a line in a format we do not verify, or no `auth` feature.
    #[error(transparent)]
    Htpasswd(HtpasswdError),
    #[cfg(not(feature = "connect"))]
    #[error("--connect: this wsbridge was built without it (cargo feature `connect`)")]
    NoConnect,
    #[cfg(not(feature = "compress"))]
    #[error("--compress: this wsbridge was built without it (cargo feature `compress`)")]
    NoCompress,
    #[cfg(feature = "connect")]
    #[error("wss:// needs TLS: this wsbridge was built without it (cargo feature `tls`)")]
    NoTlsForWss,
    #[error("--broker: this wsbridge was built without NATS (cargo feature `nats`)")]
    NoNats,
    #[error("cannot use --broker-creds={file}: {why}")]
    BrokerCreds { file: String, why: String },
    /// A proxy variable of the environment (`$http_proxy`, ...) that is not a proxy URL.
    #[cfg(feature = "connect")]
    #[error("{error} (from ${var})")]
    ProxyEnv { var: &'static str, error: ProxyUrlError },
}

/// Why a file or directory named on the command line cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PathProblem {
    #[error("{}", lower_io(.0))]
    Io(io::Error),
    #[error("not a regular file")]
    NotFile,
    #[error("permission denied (no execute bit?)")]
    NotExecutable,
    #[error("not a directory")]
    NotDirectory,
}

/// Why `--address` did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum AddressProblem {
    #[error("{0}")]
    Lookup(io::Error),
    #[error("no addresses")]
    Nothing,
}

/// `io::Error`'s text without the " (os error N)" suffix, lower-cased.
pub(super) fn lower_io(e: &io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    s.to_lowercase()
}
