//! Command-line surface: every flag, its help heading, default and help text (clap
//! derive), and the one place that builds clap's [`Command`] ([`command`]).
//!
//! Spellings follow websocketd so existing command lines keep working, including Go's
//! single-dash long flags (`-port=8080`) and `--flag=false` for booleans. This module does
//! no I/O and no validation beyond types and ranges; [`crate::config`] turns a [`Cli`] into
//! a resolved `Config`, and the usage errors it finds are printed here, as clap prints its
//! own ([`Cli::exit_usage`]), since no other module touches clap.
//!
//! Help conventions (tests in tests/it/help.rs and cli.rs hold them): every flag has a
//! `help_heading` from [`HEADINGS`]; a field's doc comment starts with a one-line summary
//! (what `-h` shows, one line per flag at 80 columns, so keep it under ~45 characters)
//! and may go on in more paragraphs (what `--help` adds). Defaults and possible values
//! are shown by `--help` only ([`command`] moves them there). A new field goes at the end
//! of [`Cli`], before `program`; its heading places it in its group.

mod help;
mod parse;
pub mod value;

use std::ffi::OsString;
use std::fmt::Display;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Command, FromArgMatches, Parser};

use value::{number, MAX_BYTES, MAX_FORKS, MAX_MS, MAX_SECS};

pub use help::command;
pub use parse::{Unsupported, UNSUPPORTED};

/// The help headings, in the order `--help` shows them (clap shows a heading only once a
/// flag has it).
pub const HEADINGS: &[&str] = &[
    "Listening",
    "Program and framing",
    "Origins and limits",
    "TLS",
    "HTTP serving",
    "Reverse proxy",
    "Outbound",
    "Logging and metrics",
    "Access control",
    "Broker",
    "Compression",
];

/// Turn any program that reads stdin and writes stdout into a WebSocket endpoint.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "wsbridge",
    version,
    about = "Turn any program that reads stdin and writes stdout into a WebSocket endpoint.",
    long_about = "Turn any program that reads stdin and writes stdout into a WebSocket endpoint.\n\n\
        Every WebSocket connection starts PROGRAM once. Each incoming message becomes a line on \
        its stdin; each line it prints becomes a message. Everything after PROGRAM is passed to \
        PROGRAM, even words that look like flags. Flags may be written with one dash \
        (-port=8080), and booleans as --flag, --flag=true or --flag=false.",
    after_help = "--help shows more detail, defaults and examples; man wsbridge has everything.",
    after_long_help = help::EXAMPLES
)]
pub struct Cli {
    // ---- Listening
    /// TCP port to listen on (0 picks a free port)
    ///
    /// 0 picks a free port for each listener; the startup line names it. [default: 80, 443
    /// with --ssl]
    #[arg(long, value_name = "PORT", help_heading = "Listening", value_parser = number::<u16>(0, 65535))]
    pub port: Option<u16>,

    /// Address to listen on; repeatable
    ///
    /// An IP address or a host name (resolved at startup, bound on every address it has).
    /// Repeat for several listeners. [default: all interfaces, IPv4 and IPv6]
    #[arg(long, value_name = "ADDR", help_heading = "Listening")]
    pub address: Vec<String>,

    /// Also (or alone) listen on a Unix socket
    ///
    /// Without --port or --address this is the only listener. A stale socket file is
    /// replaced; one a live server answers on is refused (exit 3).
    #[arg(long, value_name = "PATH", help_heading = "Listening")]
    pub unixsocket: Option<PathBuf>,

    /// Permissions of the --unixsocket file (octal)
    ///
    /// For example 0660, so a proxy in the socket's group can connect. [default: as the
    /// umask leaves them]
    #[arg(long = "unixsocket-mode", value_name = "MODE", help_heading = "Listening")]
    pub unixsocket_mode: Option<String>,

    /// Group of the --unixsocket file
    ///
    /// A name or a number, e.g. www-data for nginx; wsbridge must be root or a member of
    /// it. [default: wsbridge's own group]
    #[arg(long = "unixsocket-group", value_name = "NAME", help_heading = "Listening")]
    pub unixsocket_group: Option<String>,

    /// Redirect plain HTTP on PORT to the main port
    ///
    /// Also listen on PORT (plain HTTP, same addresses) and answer every request there with
    /// 301 to the main scheme and port, path and query kept.
    #[arg(long, value_name = "PORT", help_heading = "Listening", value_parser = number::<u16>(0, 65535))]
    pub redirport: Option<u16>,

    /// Threads that run connections
    ///
    /// 1 runs everything on the main thread (single-core boards); at most 1024. [default:
    /// one per CPU core]
    #[arg(long, value_name = "N", help_heading = "Listening", value_parser = value::threads)]
    pub threads: Option<std::num::NonZeroUsize>,

    // ---- Program and framing
    /// Run every executable under DIR, by URL path
    ///
    /// Every executable under DIR is a WebSocket endpoint at its URL path, instead of
    /// PROGRAM.
    #[arg(long, value_name = "DIR", help_heading = "Program and framing")]
    pub dir: Option<PathBuf>,

    /// Messages map to: line, nul, binary, lenprefix
    ///
    /// How messages map to the program's bytes: line (text lines), nul (NUL-terminated
    /// text), binary (raw bytes, as --binary) or lenprefix (a length header before each
    /// message, both ways). See FRAMING in the man page. [default: line]
    #[arg(long, value_name = "MODE", help_heading = "Program and framing",
          value_parser = ["line", "nul", "binary", "lenprefix"])]
    pub framing: Option<String>,

    /// Raw bytes as binary messages (--framing=binary)
    ///
    /// Relay raw bytes both ways as binary messages instead of text lines.
    #[arg(long, value_name = "BOOL", help_heading = "Program and framing", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub binary: bool,

    /// wsbridge's variables the program gets
    ///
    /// Comma-separated names of wsbridge's own environment variables passed to the program
    /// (replaces the default; HTTPS is never passed).
    #[arg(
        long,
        value_name = "LIST",
        help_heading = "Program and framing",
        default_value = "PATH,LD_LIBRARY_PATH"
    )]
    pub passenv: String,

    /// Send stderr to the client too, as JSON
    ///
    /// Every message becomes {"stream":"stdout"|"stderr","data":"..."}; line framing only.
    #[arg(long, value_name = "BOOL", help_heading = "Program and framing", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub passstderr: bool,

    /// Run the program on a pseudo-terminal
    ///
    /// stdin, stdout and stderr are the terminal (merged); echo off; TERM=dumb unless
    /// --passenv passes TERM; ?cols=N&rows=M sets the window, default 80x24. The program
    /// line-buffers as in a shell. Not with --passstderr or --framing=lenprefix.
    #[arg(long, value_name = "BOOL", help_heading = "Program and framing", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub pty: bool,

    /// WebSocket subprotocols to accept (comma list)
    ///
    /// The first one the client offers that is listed is chosen, answered in
    /// Sec-WebSocket-Protocol and given to the program as WEBSOCKET_PROTOCOL; a client
    /// offering only others gets 400, one offering none is accepted without one. With
    /// --dir, /PATH=LIST sets the list of the script at URL path /PATH; repeatable. With
    /// --connect, the protocols to offer. [default: offers are ignored]
    #[arg(long, value_name = "LIST", help_heading = "Program and framing")]
    pub subprotocol: Vec<String>,

    /// One program for all clients
    ///
    /// Every line it prints goes to every client, every client's messages go to its stdin.
    /// MODES (comma list, optional): eager (start now, not at the first connection), once
    /// (exit with it instead of restarting), ids (prefix input lines with the client's id;
    /// `@ID text` answers one client).
    #[arg(long, value_name = "MODES", help_heading = "Program and framing", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub shared: Option<String>,

    /// With --shared: output bytes a client may lag
    ///
    /// A client with more than BYTES of output waiting is dropped (close 1008); 1 to
    /// 1073741824.
    #[arg(long, value_name = "BYTES", help_heading = "Program and framing", default_value_t = 1 << 20,
          value_parser = number::<usize>(1, MAX_BYTES))]
    pub sharedqueue: usize,

    /// Extra ms for each step of the stop ladder
    ///
    /// Added to each step of stdin EOF, SIGINT, SIGTERM, SIGKILL (see STOPPING THE PROGRAM
    /// in the man page); 0 to 86400000.
    #[arg(long, value_name = "MS", help_heading = "Program and framing", default_value_t = 0,
          value_parser = number::<u64>(0, MAX_MS))]
    pub closems: u64,

    // ---- Origins and limits
    /// Allowed browser origins (comma list, or *)
    ///
    /// Entries are [scheme://]host[:port], `null`, or `*` for any. With --connect, the one
    /// Origin value to send. [default: same origin only]
    #[arg(long, value_name = "LIST", help_heading = "Origins and limits")]
    pub origin: Option<String>,

    /// Require a same-origin Origin header
    ///
    /// The Origin header must be present and have the same scheme, host and port
    /// (websocketd compatibility); with --origin both checks apply.
    #[arg(long, value_name = "BOOL", help_heading = "Origins and limits", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub sameorigin: bool,

    /// Most programs at once (0 = unlimited)
    ///
    /// Over it, upgrades get 429; a slot is freed when its program has been reaped. 0 to
    /// 4194304.
    #[arg(long, value_name = "N", help_heading = "Origins and limits", default_value_t = 1024,
          value_parser = number::<usize>(0, MAX_FORKS))]
    pub maxforks: usize,

    /// Largest message in bytes
    ///
    /// A bigger incoming one closes with 1009; a longer output line is sent in pieces. 1 to
    /// 1073741824.
    #[arg(long, value_name = "BYTES", help_heading = "Origins and limits", default_value_t = 1 << 20,
          value_parser = number::<usize>(1, MAX_BYTES))]
    pub maxframesize: usize,

    /// Ping every MS milliseconds (0 = off)
    ///
    /// No answer within two intervals closes with 1001. 0 to 86400000.
    #[arg(long, value_name = "MS", help_heading = "Origins and limits", default_value_t = 0,
          value_parser = number::<u64>(0, MAX_MS))]
    pub pingms: u64,

    // ---- TLS
    /// Serve TLS (wss://); default port 443
    ///
    /// Needs --sslcert and --sslkey; SIGHUP rereads the files.
    #[arg(long, value_name = "BOOL", help_heading = "TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub ssl: bool,

    /// TLS certificate chain (PEM)
    ///
    /// With --ssl; reread on SIGHUP. With --connect, the client certificate.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub sslcert: Option<PathBuf>,

    /// TLS private key (PEM)
    ///
    /// With --ssl; reread on SIGHUP. With --connect, the client key.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub sslkey: Option<PathBuf>,

    /// Require client certificates from these CAs
    ///
    /// Mutual TLS: client certificates must be signed by a CA certificate in FILE (PEM;
    /// reread on SIGHUP). With --connect=wss://, trust only the CAs in FILE instead of the
    /// system's.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub sslca: Option<PathBuf>,

    // ---- HTTP serving
    /// Serve DIR's files to plain HTTP requests
    ///
    /// No dotfiles, no directory listings, nothing outside DIR.
    #[arg(long, value_name = "DIR", help_heading = "HTTP serving")]
    pub staticdir: Option<PathBuf>,

    /// Run CGI scripts from DIR for plain requests
    ///
    /// The URL path is the path under DIR.
    #[arg(long, value_name = "DIR", help_heading = "HTTP serving")]
    pub cgidir: Option<PathBuf>,

    /// Longest CGI run in seconds
    ///
    /// A script still running then is stopped; 1 to 86400.
    #[arg(long, value_name = "SECS", help_heading = "HTTP serving", default_value_t = 60,
          value_parser = number::<u64>(1, MAX_SECS))]
    pub cgitimeout: u64,

    /// A page for trying the endpoint in a browser
    ///
    /// Answer plain HTTP requests with it.
    #[arg(long, value_name = "BOOL", help_heading = "HTTP serving", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub devconsole: bool,

    /// Extra header on every response; repeatable
    ///
    /// "Name: value". With --connect, an extra request header of the handshake.
    #[arg(long, value_name = "HEADER", help_heading = "HTTP serving")]
    pub header: Vec<String>,

    /// Extra header on upgrade responses; repeatable
    ///
    /// Refusals of upgrade requests included.
    #[arg(long = "header-ws", value_name = "HEADER", help_heading = "HTTP serving")]
    pub header_ws: Vec<String>,

    /// Extra header on plain HTTP responses; repeatable
    #[arg(long = "header-http", value_name = "HEADER", help_heading = "HTTP serving")]
    pub header_http: Vec<String>,

    // ---- Reverse proxy
    /// Trust forwarding headers from CIDR
    ///
    /// Believe Forwarded / X-Forwarded-For / X-Forwarded-Proto only from peers in CIDR (an
    /// address, ADDR/PREFIX, or `unix` for Unix-socket clients); repeatable.
    #[arg(long = "trusted-proxy", value_name = "CIDR", help_heading = "Reverse proxy")]
    pub trusted_proxy: Vec<String>,

    /// Forward other plain HTTP to this server
    ///
    /// Every plain HTTP request wsbridge does not serve itself goes to http://HOST:PORT.
    #[arg(long, value_name = "URL", help_heading = "Reverse proxy")]
    pub upstream: Option<String>,

    // ---- Outbound
    /// Connect out to a ws:// or wss:// URL
    ///
    /// Instead of listening, relay that connection to PROGRAM, or without PROGRAM to
    /// wsbridge's own stdin/stdout (see CONNECTING OUT in the man page).
    #[arg(long, value_name = "URL", help_heading = "Outbound")]
    pub connect: Option<String>,

    /// HTTP proxy to tunnel through, or none
    ///
    /// With --connect: http://[USER:PASS@]HOST:PORT, or `none`. [default: from wss_proxy,
    /// https_proxy, ws_proxy, http_proxy, all_proxy, no_proxy]
    #[arg(long, value_name = "URL", help_heading = "Outbound")]
    pub proxy: Option<String>,

    /// Connect again after every ending
    ///
    /// With --connect: when the connection or the program ends, connect again with a fresh
    /// program (waits 0.5 s, doubling up to 30 s, while connecting fails).
    #[arg(long, value_name = "BOOL", help_heading = "Outbound", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub reconnect: bool,

    /// Do not check the server's certificate
    ///
    /// With --connect=wss://. DANGEROUS: anyone on the path can read and change the
    /// traffic; for tests only; logged as a warning.
    #[arg(long, value_name = "BOOL", help_heading = "Outbound", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub insecure: bool,

    /// Seconds each step of connecting may take
    ///
    /// With --connect: TCP connect, the proxy's answer, TLS handshake, WebSocket handshake;
    /// 1 to 86400.
    #[arg(long = "connect-timeout", value_name = "SECS", help_heading = "Outbound", default_value_t = 10,
          value_parser = number::<u64>(1, MAX_SECS))]
    pub connect_timeout: u64,

    // ---- Logging and metrics
    /// Log level (RUST_LOG overrides)
    ///
    /// Most verbose first: trace, debug, access, info, error, fatal, none. trace: debug plus message payloads (their first 256 bytes); debug: one line per
    /// message (direction, size, framing); access: lifecycle and one line per request or
    /// session; info: the same without the access lines. RUST_LOG, if set, overrides it.
    #[arg(long, value_name = "LEVEL", help_heading = "Logging and metrics", default_value = "access",
          value_parser = ["trace", "debug", "access", "info", "error", "fatal", "none"])]
    pub loglevel: String,

    /// Log line format: text or json
    ///
    /// json: one JSON object per line; LOGGING in the man page lists the field names.
    #[arg(long, value_name = "FORMAT", help_heading = "Logging and metrics", default_value = "text",
          value_parser = ["text", "json"])]
    pub logformat: String,

    /// Serve Prometheus metrics on ADDR (IP:PORT)
    ///
    /// At http://ADDR/metrics, on a listener of their own, never the public port (e.g.
    /// 127.0.0.1:9100; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", help_heading = "Logging and metrics")]
    pub metrics: Option<String>,

    // ---- Access control
    /// Basic auth with the users of FILE
    ///
    /// Require HTTP basic auth from every client (upgrades and plain HTTP alike) with the
    /// users of FILE, Apache htpasswd format: bcrypt (htpasswd -B) or SHA-crypt (mkpasswd -m
    /// sha-512); reread on SIGHUP. The program gets AUTH_TYPE=Basic and REMOTE_USER.
    #[arg(long, value_name = "FILE", help_heading = "Access control")]
    pub htpasswd: Option<PathBuf>,

    /// Realm of --htpasswd's 401 answers
    ///
    /// The realm named in the 401 answer's WWW-Authenticate (with --htpasswd).
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "wsbridge",
        help_heading = "Access control"
    )]
    pub realm: String,

    /// Auth hook run before each upgrade
    ///
    /// Run PROGRAM (no arguments) with the request's CGI environment: exit 0 allows (its
    /// AUTH_*=value and REMOTE_USER=value lines join the endpoint's environment), anything
    /// else denies with 403 or the `Status: N` it prints.
    #[arg(long, value_name = "PROGRAM", help_heading = "Access control")]
    pub authcmd: Option<OsString>,

    /// Auth service asked before each upgrade
    ///
    /// A GET with the request's headers and X-Original-URI, like nginx's auth_request: 2xx
    /// allows (X-Auth-NAME headers become AUTH_NAME), 401/403 deny, anything else is 503.
    #[arg(long, value_name = "URL", help_heading = "Access control")]
    pub authurl: Option<String>,

    /// Run the auth hook for plain HTTP too
    ///
    /// Also run --authcmd or --authurl for plain HTTP requests (static files, CGI, console,
    /// upstream).
    #[arg(long = "authcmd-http", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", help_heading = "Access control")]
    pub authcmd_http: bool,

    /// Longest auth check, then 503
    ///
    /// How long --authcmd or --authurl may take (and a check may wait for a free slot)
    /// before the answer is 503: 500ms, 5s, 1m; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "5s", help_heading = "Access control")]
    pub authtimeout: String,

    /// Most auth checks at once
    ///
    /// Hook runs, --authurl requests and password verifications that are not cached; they
    /// do not take --maxforks slots. 1 to 4194304.
    #[arg(long, value_name = "N", default_value_t = 16, help_heading = "Access control",
          value_parser = number::<usize>(1, MAX_FORKS))]
    pub authmax: usize,

    /// Most sessions one client may have at once
    ///
    /// A client is an IPv4 address or an IPv6 /64; behind --trusted-proxy, the forwarded
    /// client. Over it, upgrades get 429. 1 to 4194304. [default: no limit]
    #[arg(long, value_name = "N", help_heading = "Access control",
          value_parser = number::<usize>(1, MAX_FORKS))]
    pub maxperclient: Option<usize>,

    /// Messages a second read from each client
    ///
    /// N/s or N/s:BURST (default burst: N). A faster client is read more slowly (TCP
    /// backpressure); nothing is dropped. [default: no limit]
    #[arg(long, value_name = "RATE", help_heading = "Access control")]
    pub ratelimit: Option<String>,

    /// Close a session idle for DURATION
    ///
    /// Close with 1001 when neither side has sent a message for DURATION (500ms, 30s, 5m,
    /// 1h; a bare number is seconds). Pings do not count. [default: no limit]
    #[arg(long, value_name = "DURATION", help_heading = "Access control")]
    pub idletimeout: Option<String>,

    // ---- Broker
    /// NATS servers for --shared across instances
    ///
    /// nats://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...], or tls:// to require TLS. With
    /// PROGRAM and --shared this instance is the producer: it also publishes the program's
    /// output and feeds it its edges' input. Without PROGRAM it is an edge: it serves what
    /// the producer publishes. Needs --topic. See SCALING OUT in the man page. [default:
    /// none, --shared stays on this machine]
    #[arg(long, value_name = "URL", help_heading = "Broker")]
    pub broker: Option<String>,

    /// Topic that ties producer and edges together
    ///
    /// One NATS subject token (no spaces, '.', '*' or '>'); the subjects are
    /// wsbridge.NAME.out, wsbridge.NAME.in.ID and wsbridge.NAME.to.INSTANCE.
    #[arg(long, value_name = "NAME", help_heading = "Broker")]
    pub topic: Option<String>,

    /// CA certificates (PEM) for a tls:// broker
    ///
    /// Trusted for the broker's certificate beside the system's. [default: the system's]
    #[arg(long = "broker-ca", value_name = "FILE", help_heading = "Broker")]
    pub broker_ca: Option<PathBuf>,

    /// Broker credentials: USER:PASSWORD or TOKEN
    ///
    /// The first line of FILE that is not empty or a # comment: USER:PASSWORD, or a token
    /// when it has no colon. Instead of credentials in the --broker URL; never logged.
    #[arg(long = "broker-creds", value_name = "FILE", help_heading = "Broker")]
    pub broker_creds: Option<PathBuf>,
    /// Use permessage-deflate
    ///
    /// Accept a client's permessage-deflate offer (with --connect: offer it). Costs CPU per
    /// message and memory per connection (about 350 KiB with a 15-bit window and context
    /// takeover), so it is off unless asked for. Messages under 16 bytes go uncompressed.
    #[arg(long, value_name = "BOOL", help_heading = "Compression", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub compress: bool,

    /// Largest window, in bits
    ///
    /// The LZ77 window we compress with and ask the peer to use: 9 (512 bytes) to 15 (32
    /// KiB). Smaller saves memory per connection and compresses less. 8 is not offered:
    /// zlib cannot compress with it.
    #[arg(long, value_name = "N", help_heading = "Compression", default_value_t = 15,
          value_parser = number::<u8>(9, 15), requires = "compress")]
    pub compress_window_bits: u8,

    /// Compress each message on its own
    ///
    /// Both ways: no compression state is kept between messages, so an idle connection holds
    /// none (less memory, somewhat bigger messages).
    #[arg(long, value_name = "BOOL", help_heading = "Compression", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", requires = "compress")]
    pub compress_no_context_takeover: bool,

    // ---- New flags go here, each with its help_heading; a number takes value::number.
    /// The program to run for each connection
    ///
    /// Optional with --dir, --staticdir, --cgidir, --devconsole, --connect or --broker.
    #[arg(value_name = "PROGRAM", required_unless_present_any = ["dir", "staticdir", "cgidir", "devconsole", "connect", "broker"])]
    pub program: Option<OsString>,

    /// Arguments for PROGRAM, passed as they are
    #[arg(value_name = "ARGS", num_args = 0.., allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// A command line clap refused, for callers that build one themselves
/// ([`crate::Config::for_program`]); its `Display` is clap's whole message.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ParseError(#[from] clap::Error);

impl Cli {
    /// Parse like websocketd: Go-style single-dash long flags are accepted, and the first
    /// word that is not a flag (or a flag's value) is PROGRAM; everything after it belongs
    /// to PROGRAM. Exits with status 2 on a usage error, like clap, and with one
    /// `wsbridge: --FLAG is not supported by wsbridge: WHY` line for a websocketd flag that
    /// wsbridge does not implement.
    pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Self {
        let mut cmd = command();
        let args = match parse::normalize(&cmd, args.into_iter().collect()) {
            Ok(a) => a,
            Err(unsupported) => {
                eprintln!("wsbridge: {unsupported}");
                std::process::exit(2);
            }
        };
        match Self::from_command(&mut cmd, args) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    }

    /// Same as [`Cli::parse_args`] but returns clap's error instead of exiting.
    pub fn try_parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Self, clap::Error> {
        let mut cmd = command();
        let args = parse::normalize(&cmd, args.into_iter().collect())
            .map_err(|u| clap::Error::raw(ErrorKind::UnknownArgument, format!("{u}\n")))?;
        Self::from_command(&mut cmd, args)
    }

    fn from_command(cmd: &mut Command, args: Vec<OsString>) -> Result<Self, clap::Error> {
        let mut matches = cmd.try_get_matches_from_mut(args).map_err(parse::tidy)?;
        Self::from_arg_matches_mut(&mut matches).map_err(|e| e.format(cmd))
    }

    /// A usage error found after parsing (flags that cannot go together, a flag that needs
    /// another, a value that cannot be right), as clap reports its own: `error: MESSAGE`,
    /// the usage line and the hint to try `--help`.
    pub fn usage_error(message: impl Display) -> clap::Error {
        // The kind is not shown; every usage kind exits 2. A conflict is the usual case.
        command().error(ErrorKind::ArgumentConflict, message)
    }

    /// Prints [`Cli::usage_error`] on stderr and exits with status 2, as clap does.
    pub fn exit_usage(message: impl Display) -> ! {
        Self::usage_error(message).exit()
    }
}

#[cfg(test)]
mod tests;
