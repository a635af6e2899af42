//! wsbridge turns any program that reads stdin and writes stdout into a WebSocket
//! endpoint: one program per connection, messages in as lines on stdin, lines out as
//! messages. A drop-in for websocketd.
//!
//! # Layout
//!
//! How a connection travels, and who may import whom (one way, top to bottom):
//!
//! - [`cli`] → [`config`]: flags parsed (clap) and resolved into a typed `Config`.
//! - [`listen`] (TCP, Unix sockets, systemd socket activation), [`server`] (accept
//!   loop, TLS handshake, one task and span per connection, drain on shutdown), `tls`
//!   (rustls, SIGHUP reload; cargo feature `tls`) and [`forwarded`] (`--trusted-proxy`).
//! - [`http`]: one dispatch decision per request; extra headers; access lines.
//!   Plain requests go to [`console`] (`--devconsole`), [`cgi`] (`--cgidir`) or
//!   [`statics`] (`--staticdir`), then [`upstream`] (`--upstream`); [`route`] maps URL
//!   paths onto directories safely.
//! - [`ws`]: handshake checks, [`origin`] policy, `--maxforks`, program start, 101.
//! - [`session`]: one connection's life: relay, first ending, stop, Close, summary.
//!   With `--shared`, [`shared`] instead: one program's output fanned out to every
//!   client through bounded queues, every client's input funnelled into its stdin.
//! - [`child`] (spawn, exit watch, group signals), [`pty`] (`--pty` terminal),
//!   [`pipesize`] (the program's pipes grow when large messages pass), [`env`] (CGI
//!   environment),
//!   [`reap`] (stop ladder), [`relay`] (the two pumps; knows no processes) and
//!   [`framing`] (bytes ↔ messages for each `--framing` mode); [`text`] escapes control
//!   characters in a program's stderr before it is logged.
//! - [`outbound`] (`--connect`): the client direction. It dials out (through an HTTP
//!   proxy's CONNECT tunnel from [`outbound::proxy`] when one applies; client TLS for
//!   wss://), then hands the socket to [`session`] like [`ws`] does, with a program or, in
//!   pipe mode, wsbridge's own stdin/stdout; `--reconnect` backoff.
//! - [`logging`], [`shutdown`]: process-wide setup used by `main`.

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
pub mod http;
pub mod listen;
pub mod logging;
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
pub mod shutdown;
pub mod state;
pub mod statics;
pub mod text;
#[cfg(feature = "tls")]
pub mod tls;
pub mod upstream;
pub mod ws;

pub use config::Config;
pub use server::run;
