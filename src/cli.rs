//! Command-line surface: every flag, its default and its help text (clap derive).
//!
//! Spellings follow websocketd so existing command lines keep working, including Go's
//! single-dash long flags (`-port=8080`) and `--flag=false` for booleans. This module does
//! no I/O and no validation beyond types; [`crate::config`] turns a [`Cli`] into a
//! resolved `Config`, and the usage errors it finds are printed here, as clap prints its
//! own ([`Cli::exit_usage`]), since no other module touches clap.

use std::ffi::OsString;
use std::fmt::Display;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

/// Turn any program that reads stdin and writes stdout into a WebSocket endpoint.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "wsbridge",
    version,
    about = "Turn any program that reads stdin and writes stdout into a WebSocket endpoint.",
    long_about = "Turn any program that reads stdin and writes stdout into a WebSocket endpoint.\n\n\
        Every WebSocket connection starts PROGRAM once. Each incoming message becomes a line on \
        its stdin; each line it prints becomes a message. Everything after PROGRAM is passed to \
        PROGRAM, even words that look like flags.",
    after_help = "Examples: wsbridge --port=8080 ./count.sh\n          echo hi | wsbridge --connect=ws://localhost:8080/"
)]
pub struct Cli {
    /// TCP port to listen on (0 picks a free port) [default: 80]
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Interface address to listen on; repeat for several [default: all interfaces, IPv4 and IPv6]
    #[arg(long, value_name = "ADDR")]
    pub address: Vec<String>,

    /// Relay raw bytes both ways as binary messages instead of text lines (= --framing=binary)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub binary: bool,

    /// How messages map to the program's bytes: line, nul, binary or lenprefix (see the man page)
    #[arg(long, value_name = "MODE", value_parser = ["line", "nul", "binary", "lenprefix"])]
    pub framing: Option<String>,

    /// Most programs running at once; over it, upgrades get 429 (0 = unlimited)
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub maxforks: usize,

    /// Threads that run connections (default: one per CPU core); 1 runs them all on the main thread
    #[arg(long, value_name = "N")]
    pub threads: Option<std::num::NonZeroUsize>,

    /// Extra milliseconds added to each step of the stop ladder (stdin EOF, SIGINT, SIGTERM, SIGKILL)
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub closems: u64,

    /// Comma-separated names of wsbridge's environment variables passed to the program
    #[arg(long, value_name = "LIST", default_value = "PATH,LD_LIBRARY_PATH")]
    pub passenv: String,

    /// Largest message in bytes: a bigger incoming one closes with 1009; a longer output line is sent in pieces
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub maxframesize: usize,

    /// Ping every MS milliseconds; no answer within two intervals closes with 1001 (0 = off)
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub pingms: u64,

    /// Allowed browser origins: comma list of [scheme://]host[:port], `null`, or `*` for any
    /// [default: same origin only]; with --connect, the one Origin value to send
    #[arg(long, value_name = "LIST")]
    pub origin: Option<String>,

    /// Also send the program's stderr to the client; every message becomes
    /// {"stream":"stdout"|"stderr","data":"..."} (text line framing only)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub passstderr: bool,

    /// Accept these WebSocket subprotocols (comma list): the first one the client offers that is
    /// listed is chosen, answered in Sec-WebSocket-Protocol and given to the program as
    /// WEBSOCKET_PROTOCOL; a client offering only others gets 400, one offering none is accepted
    /// without one. With --dir, /PATH=LIST sets the list of the script at URL path /PATH;
    /// repeatable [default: offers are ignored]; with --connect, the protocols to offer
    #[arg(long, value_name = "LIST")]
    pub subprotocol: Vec<String>,

    /// Run the program on a pseudo-terminal (stdin, stdout and stderr merged; echo off;
    /// TERM=dumb unless --passenv passes TERM; ?cols=N&rows=M sets the window, default 80x24) so
    /// it line-buffers like in a shell; not with --passstderr or --framing=lenprefix
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub pty: bool,

    /// One program for all clients: every line it prints goes to every client, every client's
    /// messages go to its stdin. MODES (comma list, optional): eager (start now, not at the
    /// first connection), once (exit with it instead of restarting), ids (prefix input lines
    /// with the client's id; `@ID text` answers one client)
    #[arg(long, value_name = "MODES", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub shared: Option<String>,

    /// With --shared: a client with more than BYTES of output waiting is dropped (close 1008)
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub sharedqueue: usize,

    /// Require an Origin header from the same scheme, host and port (websocketd compatibility)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub sameorigin: bool,

    /// Extra response header "Name: value" on every response (with --connect: extra request
    /// header of the handshake); repeatable
    #[arg(long, value_name = "HEADER")]
    pub header: Vec<String>,

    /// Extra response header on responses to WebSocket upgrade requests; repeatable
    #[arg(long = "header-ws", value_name = "HEADER")]
    pub header_ws: Vec<String>,

    /// Extra response header on responses to plain HTTP requests; repeatable
    #[arg(long = "header-http", value_name = "HEADER")]
    pub header_http: Vec<String>,

    /// Log level: debug, trace, access, info, error, fatal or none (RUST_LOG overrides)
    #[arg(long, value_name = "LEVEL", default_value = "access",
          value_parser = ["debug", "trace", "access", "info", "error", "fatal", "none"])]
    pub loglevel: String,

    /// Serve TLS (wss://) with --sslcert and --sslkey; the default port becomes 443
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub ssl: bool,

    /// TLS certificate chain, PEM (with --ssl; reread on SIGHUP; with --connect, the client certificate)
    #[arg(long, value_name = "FILE")]
    pub sslcert: Option<PathBuf>,

    /// TLS private key, PEM (with --ssl; reread on SIGHUP; with --connect, the client key)
    #[arg(long, value_name = "FILE")]
    pub sslkey: Option<PathBuf>,

    /// Require client certificates signed by the CA certificates in FILE, PEM (mutual TLS;
    /// reread on SIGHUP); with --connect=wss://, trust only the CAs in FILE instead of the system's
    #[arg(long, value_name = "FILE")]
    pub sslca: Option<PathBuf>,

    /// Also (or, without --port/--address, only) listen on a Unix socket at PATH
    #[arg(long, value_name = "PATH")]
    pub unixsocket: Option<PathBuf>,

    /// Believe Forwarded / X-Forwarded-For / X-Forwarded-Proto only from peers in CIDR
    /// (an address, ADDR/PREFIX, or `unix` for Unix-socket clients); repeatable
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxy: Vec<String>,

    /// Also listen on PORT (plain HTTP, same addresses) and redirect every request there
    /// to the main port with 301
    #[arg(long, value_name = "PORT")]
    pub redirport: Option<u16>,

    /// Serve the files in DIR to plain HTTP requests (no dotfiles, no directory listings)
    #[arg(long, value_name = "DIR")]
    pub staticdir: Option<PathBuf>,

    /// Run the CGI scripts in DIR for plain HTTP requests (URL path = path under DIR)
    #[arg(long, value_name = "DIR")]
    pub cgidir: Option<PathBuf>,

    /// Seconds a CGI script may run before it is stopped
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub cgitimeout: u64,

    /// Every executable under DIR is a WebSocket endpoint at its URL path (instead of PROGRAM)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Answer plain HTTP requests with a page for trying the endpoint from a browser
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub devconsole: bool,

    /// Forward every plain HTTP request wsbridge does not serve itself to this server (http://HOST:PORT)
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,

    /// Connect out to this ws:// or wss:// URL instead of listening, and relay it to PROGRAM, or
    /// without PROGRAM to wsbridge's own stdin/stdout (see "Connecting out" in the man page)
    #[arg(long, value_name = "URL")]
    pub connect: Option<String>,

    /// With --connect: tunnel through this HTTP proxy, http://[USER:PASS@]HOST:PORT, or `none`
    /// [default: from wss_proxy, https_proxy, ws_proxy, http_proxy, all_proxy, no_proxy]
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,

    /// With --connect: when the connection or the program ends, connect again with a fresh
    /// program (waits 0.5 s, doubling up to 30 s, while connecting fails)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub reconnect: bool,

    /// With --connect=wss://: do not check the server's certificate (DANGEROUS: anyone on
    /// the path can read and change the traffic; for tests only; logged as a warning)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub insecure: bool,

    /// With --connect: seconds each step of connecting may take (TCP connect, the proxy's
    /// answer, TLS handshake, WebSocket handshake)
    #[arg(long = "connect-timeout", value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,

    /// Most WebSocket sessions one client address may have at once (IPv6 addresses count
    /// by /64; behind --trusted-proxy, the forwarded client); over it, upgrades get 429
    #[arg(long, value_name = "N", help_heading = "Access control")]
    pub maxperclient: Option<usize>,

    /// Most messages a second each session reads from its client, with an optional burst:
    /// N/s or N/s:BURST (default burst: N). A faster client is read more slowly (TCP
    /// backpressure); nothing is dropped
    #[arg(long, value_name = "RATE", help_heading = "Access control")]
    pub ratelimit: Option<String>,

    /// Close a session with 1001 when neither side has sent a message for DURATION (500ms,
    /// 30s, 5m, 1h; a bare number is seconds). Pings do not count
    #[arg(long, value_name = "DURATION", help_heading = "Access control")]
    pub idletimeout: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics on a listener of their own, never
    /// the public port (ADDR is IP:PORT, e.g. 127.0.0.1:9100; port 0 picks a free one)
    #[arg(long, value_name = "ADDR", help_heading = "Logging and metrics")]
    pub metrics: Option<String>,

    /// Require HTTP basic auth from every client (upgrades and plain HTTP alike) with the
    /// users of FILE, Apache htpasswd format: bcrypt (htpasswd -B) or SHA-crypt (mkpasswd
    /// -m sha-512); reread on SIGHUP. The program gets AUTH_TYPE=Basic and REMOTE_USER
    #[arg(long, value_name = "FILE", help_heading = "Access control")]
    pub htpasswd: Option<PathBuf>,

    /// The realm named in the 401 answer's WWW-Authenticate (with --htpasswd)
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "wsbridge",
        help_heading = "Access control"
    )]
    pub realm: String,

    /// Run PROGRAM before each upgrade with the request's CGI environment: exit 0 allows
    /// (its AUTH_*=value and REMOTE_USER=value lines join the endpoint's environment),
    /// anything else denies with 403 or the `Status: N` it prints
    #[arg(long, value_name = "PROGRAM", help_heading = "Access control")]
    pub authcmd: Option<OsString>,

    /// Ask this HTTP service before each upgrade (a GET with the request's headers and
    /// X-Original-URI, like nginx's auth_request): 2xx allows (X-Auth-NAME headers become
    /// AUTH_NAME), 401/403 deny, anything else is 503
    #[arg(long, value_name = "URL", help_heading = "Access control")]
    pub authurl: Option<String>,

    /// Also run --authcmd or --authurl for plain HTTP requests (static files, CGI, console, upstream)
    #[arg(long = "authcmd-http", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", help_heading = "Access control")]
    pub authcmd_http: bool,

    /// How long --authcmd or --authurl may take (and a check may wait for a free slot) before
    /// the answer is 503: 500ms, 5s, 1m; a bare number is seconds
    #[arg(long, value_name = "DURATION", default_value = "5s", help_heading = "Access control")]
    pub authtimeout: String,

    /// Most access checks running at once (hook runs, --authurl requests, password
    /// verifications that are not cached); they do not take --maxforks slots
    #[arg(long, value_name = "N", default_value_t = 16, help_heading = "Access control")]
    pub authmax: usize,

    /// Permissions of the --unixsocket file, in octal (e.g. 0660, so a proxy in the socket's
    /// group can connect) [default: as the umask leaves them]
    #[arg(long = "unixsocket-mode", value_name = "MODE", help_heading = "Listening")]
    pub unixsocket_mode: Option<String>,

    /// Group of the --unixsocket file (a name or a number), e.g. www-data for nginx; wsbridge
    /// must be root or a member of it
    #[arg(long = "unixsocket-group", value_name = "NAME", help_heading = "Listening")]
    pub unixsocket_group: Option<String>,

    /// The program to run for each connection (optional with --dir, --staticdir, --cgidir,
    /// --devconsole or --connect)
    #[arg(value_name = "PROGRAM", required_unless_present_any = ["dir", "staticdir", "cgidir", "devconsole", "connect"])]
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
    /// to PROGRAM. Exits with status 2 on a usage error, like clap.
    pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Self {
        Self::parse_from(normalize(args.into_iter().collect()))
    }

    /// A usage error found after parsing (flags that cannot go together, a flag that needs
    /// another, a value that cannot be right), as clap reports its own: `error: MESSAGE`,
    /// the usage line and the hint to try `--help`.
    pub fn usage_error(message: impl Display) -> clap::Error {
        // The kind is not shown; every usage kind exits 2. A conflict is the usual case.
        Self::command().error(ErrorKind::ArgumentConflict, message)
    }

    /// Prints [`Cli::usage_error`] on stderr and exits with status 2, as clap does.
    pub fn exit_usage(message: impl Display) -> ! {
        Self::usage_error(message).exit()
    }

    /// Same as [`Cli::parse_args`] but returns clap's error instead of exiting.
    pub fn try_parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Self, clap::Error> {
        Self::try_parse_from(normalize(args.into_iter().collect()))
    }
}

/// Rewrites `-flag` to `--flag` for known long flags and inserts `--` before PROGRAM, so
/// that clap never reads PROGRAM's own arguments as ours.
fn normalize(mut args: Vec<OsString>) -> Vec<OsString> {
    let cmd = Cli::command();
    let mut i = 1;
    while i < args.len() {
        let Some(word) = args[i].to_str().map(str::to_owned) else {
            break; // not UTF-8: cannot be one of our flags, so it is PROGRAM
        };
        if word == "--" {
            return args;
        }
        if !word.starts_with('-') || word == "-" {
            args.insert(i, OsString::from("--"));
            return args;
        }
        let body = word.trim_start_matches('-');
        let (name, has_value) = match body.split_once('=') {
            Some((n, _)) => (n, true),
            None => (body, false),
        };
        if (name == "help" || name == "version") && !has_value {
            args[i] = OsString::from(format!("--{name}")); // Go's -help, -version
            i += 1;
            continue;
        }
        if let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(name)) {
            if !word.starts_with("--") {
                args[i] = OsString::from(format!("-{word}"));
            }
            let takes_separate_value = arg.get_action().takes_values() && !arg.is_require_equals_set() && !has_value;
            if takes_separate_value {
                i += 1;
            }
        }
        i += 1;
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Cli {
        let mut v = vec![OsString::from("wsbridge")];
        v.extend(words.iter().map(OsString::from));
        Cli::try_parse_args(v).expect("parses")
    }

    #[test]
    fn everything_after_program_belongs_to_it() {
        let cli = parse(&["--port=8080", "./x.sh", "--port=9", "-n", "--", "y"]);
        assert_eq!(cli.port, Some(8080));
        assert_eq!(cli.program.as_deref(), Some("./x.sh".as_ref()));
        assert_eq!(cli.args, ["--port=9", "-n", "--", "y"]);
    }

    #[test]
    fn go_style_single_dash_and_separate_values() {
        let cli = parse(&["-port", "81", "-binary", "-address=127.0.0.1", "cat"]);
        assert_eq!(cli.port, Some(81));
        assert!(cli.binary);
        assert_eq!(cli.address, ["127.0.0.1"]);
        assert_eq!(cli.program.as_deref(), Some("cat".as_ref()));
    }

    #[test]
    fn go_style_help_and_version_are_usage_not_errors() {
        for word in ["-help", "-version"] {
            let err = Cli::try_parse_args(["wsbridge", word].map(OsString::from)).unwrap_err();
            assert_eq!(err.exit_code(), 0, "{word}");
        }
    }

    #[test]
    fn connect_needs_no_program_and_keeps_program_args() {
        let cli = parse(&["-connect", "ws://h/", "--reconnect", "cat", "--connect=x"]);
        assert_eq!(cli.connect.as_deref(), Some("ws://h/"));
        assert!(cli.reconnect);
        assert_eq!(cli.program.as_deref(), Some("cat".as_ref()));
        assert_eq!(cli.args, ["--connect=x"]);
        let cli = parse(&["--connect=ws://h/", "--proxy=http://p:1"]);
        assert!(cli.program.is_none());
        assert_eq!(cli.proxy.as_deref(), Some("http://p:1"));
    }

    #[test]
    fn boolean_false_form() {
        let cli = parse(&["--binary=false", "--sameorigin=true", "cat"]);
        assert!(!cli.binary);
        assert!(cli.sameorigin);
    }

    #[test]
    fn unknown_flag_and_missing_program_are_usage_errors() {
        let err = Cli::try_parse_args(["wsbridge", "--bogus", "cat"].map(OsString::from)).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_args(["wsbridge", "--port=1"].map(OsString::from)).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let cli = parse(&["--staticdir=www"]);
        assert!(cli.program.is_none());
    }

    #[test]
    fn usage_errors_found_later_look_like_clap_s_own() {
        let ours = Cli::usage_error("--a cannot be combined with --b");
        assert_eq!(ours.exit_code(), 2);
        let text = ours.to_string();
        assert!(
            text.starts_with("error: --a cannot be combined with --b\n\nUsage: wsbridge "),
            "{text}"
        );
        assert!(text.ends_with("\n\nFor more information, try '--help'.\n"), "{text}");
        // The same frame as an error clap finds itself.
        let clap_s = Cli::try_parse_args(["wsbridge", "--bogus", "cat"].map(OsString::from)).unwrap_err();
        let usage = |t: &str| t.lines().find(|l| l.starts_with("Usage: ")).map(str::to_owned);
        assert_eq!(usage(&text), usage(&clap_s.to_string()));
    }
}
