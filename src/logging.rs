//! Logging setup: tracing to stderr, filtered by `--loglevel` (websocketd's names), with
//! `RUST_LOG` (target=level list) taking precedence when set.
//!
//! | --loglevel | shows |
//! |---|---|
//! | debug | everything wsbridge logs (trace level) |
//! | trace | debug level: per-message facts, no payloads |
//! | access (default) | info level: lifecycle, one access line per request/session, program stderr |
//! | info | like access without the access lines |
//! | error, fatal | errors only |
//! | none | nothing |

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::config::LogLevel;

/// Installs the global subscriber. Call once, before serving.
pub fn init(level: LogLevel) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match spec.parse::<Targets>() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("wsbridge: ignoring RUST_LOG={spec:?}: {e}");
                targets(level)
            }
        },
        _ => targets(level),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    tracing_subscriber::registry().with(layer.with_filter(filter)).init();
}

fn targets(level: LogLevel) -> Targets {
    let ours = match level {
        LogLevel::Debug => LevelFilter::TRACE,
        LogLevel::Trace => LevelFilter::DEBUG,
        LogLevel::Access | LogLevel::Info => LevelFilter::INFO,
        LogLevel::Error | LogLevel::Fatal => LevelFilter::ERROR,
        LogLevel::None => LevelFilter::OFF,
    };
    let t = Targets::new().with_target("wsbridge", ours);
    if level == LogLevel::Info {
        t.with_target("wsbridge::access", LevelFilter::OFF)
    } else {
        t
    }
}
