//! wsbridge turns any program that reads stdin and writes stdout into a WebSocket
//! endpoint: one program per connection, messages in as lines on stdin, lines out as
//! messages. A drop-in for websocketd.
//!
//! # Layout
//!
//! The modules form a tree in four layers, and every import points down: a module uses
//! modules of lower layers, or of its own layer below it, never one above (README.md,
//! "How it works", draws the graph). How a connection travels, from the top:
//!
//! Layer 3, the process:
//! - [`server`]: accept loop, TLS handshake inside each connection's task, one task and
//!   span per connection, the `--trusted-proxy` view of each request, `--redirport`
//!   answers, drain on shutdown; [`listen`] (TCP, Unix sockets, systemd socket
//!   activation) and `tls` (rustls, SIGHUP reload; cargo feature `tls`).
//! - [`outbound`] (`--connect`): the client direction. It dials out (through an HTTP
//!   proxy's CONNECT tunnel from [`outbound::proxy`] when one applies; client TLS for
//!   wss://), then hands the socket to [`session`] like [`ws`] does, with a program or, in
//!   pipe mode, wsbridge's own stdin/stdout; `--reconnect` backoff.
//! - [`logging`], [`shutdown`]: process-wide setup used by `main`.
//!
//! Layer 2, HTTP serving:
//! - [`auth`]: who may connect: basic auth ([`htpasswd`]), the auth hook (`--authcmd`,
//!   `--authurl`), checked before dispatch.
//! - [`http`]: one dispatch decision per request; extra headers; access lines. It
//!   imports the handlers and no handler imports it: [`console`] (`--devconsole`),
//!   [`cgi`] (`--cgidir`), [`statics`] (`--staticdir`) and [`upstream`] (`--upstream`)
//!   build their answers with [`body`]; [`access`] logs each answer's access line once
//!   its body is sent (and, for CGI, the script reaped).
//!
//! Layer 1, one program and its sockets:
//! - [`ws`]: handshake checks, [`origin`] policy, `--maxforks`, program start, 101.
//! - [`state`]: what every connection shares (settings, fork slots, connection numbers,
//!   the `--shared` hub, the shutdown token) and one connection's facts.
//! - [`session`]: one connection's life: relay, first ending, stop, Close, summary.
//!   With `--shared`, [`shared`] instead: one program's output fanned out to every
//!   client through bounded queues, every client's input funnelled into its stdin.
//! - [`child`] (spawn, exit watch, group signals, stderr logging), [`pty`] (`--pty`
//!   terminal), [`pipesize`] (the program's pipes grow when large messages pass),
//!   [`reap`] (stop ladder), [`relay`] (the two pumps; knows no processes) and
//!   [`memory`] (the allocator's free pages returned when the last session ends).
//!
//! Layer 0, leaves without tokio:
//! - [`cli`] → [`config`]: flags parsed (clap) and resolved into a typed `Config`: the
//!   session settings, and one mode, serving (`config::Serve`) or `--connect`
//!   (`config::connect`); a bad command line is a `config::ConfigError`.
//! - [`env`](mod@env) (CGI environment), [`route`] (URL paths onto directories, safely),
//!   [`framing`] (bytes ↔ messages for each `--framing` mode), [`forwarded`] (the client
//!   behind a `--trusted-proxy`), [`htpasswd`] (the password file and its checks), [`net`]
//!   (`Peer`, `Cidr`, percent decoding), [`shebang`] (a program's `#!` interpreter checked
//!   before it runs), [`error`]
//!   (a refused request) and [`text`] (control characters in a program's stderr escaped
//!   before it is logged).

pub mod access;
pub mod auth;
pub mod body;
pub mod cgi;
pub mod child;
pub mod cli;
pub mod config;
pub mod console;
pub mod env;
pub mod error;
pub mod forwarded;
pub mod framing;
pub mod htpasswd;
pub mod http;
pub mod limit;
pub mod listen;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod origin;
#[cfg(feature = "connect")]
pub mod outbound;
pub mod pipesize;
pub mod pty;
pub mod reap;
pub mod relay;
pub mod route;
pub mod server;
pub mod session;
pub mod shared;
pub mod shebang;
pub mod shutdown;
pub mod state;
pub mod statics;
pub mod stats;
pub mod text;
#[cfg(feature = "tls")]
pub mod tls;
pub mod upstream;
pub mod ws;

pub use config::Config;
pub use server::run;
