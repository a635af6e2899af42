//! Every integration test of wsbridge, in one binary (one link instead of one per file):
//! a module per area, named after the behaviour it pins, and [`common`], the one set of
//! helpers (the server in-process or as the real binary, WebSocket and raw HTTP clients,
//! TLS material, deadlines on every await).

mod common;

mod access_log;
#[cfg(feature = "auth")]
mod auth;
mod broker;
mod browser;
mod cgi;
mod cli;
mod completions;
mod compress;
mod confinement;
mod deploy;
mod env;
mod faults;
mod help;
mod hostile;
mod http;
mod interop;
mod lifecycle;
mod limits;
mod metrics;
mod nginx;
mod outbound;
mod properties;
mod pty_and_subprotocols;
mod relay;
mod script_dir;
mod shared;
mod startup;
mod static_files;
mod tls;
mod upstream;
