//! Logging setup: tracing to stderr, filtered by `--loglevel` (websocketd's names), with
//! `RUST_LOG` (target=level list) taking precedence when set, written as text or, with
//! `--logformat=json`, one JSON object per line. It owns the subscriber, not what is
//! logged (each room logs its own events; the access lines' fields are listed in the man
//! page, LOGGING).
//!
//! | --loglevel | shows |
//! |---|---|
//! | trace | everything: debug plus message payloads (the first 256 bytes, escaped) |
//! | debug | per-message facts (direction, kind, size, framing), no payloads |
//! | access (default) | info level: lifecycle, one access line per request/session, program stderr |
//! | info | like access without the access lines |
//! | error, fatal | errors only |
//! | none | nothing |
//!
//! websocketd orders `debug` before `trace`; wsbridge's `trace` is the more verbose, as
//! the names say everywhere else (README, "Differences from websocketd").
//!
//! JSON lines: tracing-subscriber's JSON format with the event's fields at the top level
//! (`timestamp`, `level`, `target`, `message`, then the fields) and, for events inside a
//! connection, `spans` (each span's name and fields, outermost first). Access lines are
//! logged with no parent span and every fact as a field of their own, so a text line
//! stands alone; tracing-subscriber's JSON `spans` still lists the spans they were
//! logged in.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::config::{LogFormat, LogLevel};

/// A log format this build cannot write.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("--logformat=json: this wsbridge was built without JSON logs (cargo feature `json`)")]
    NoJson,
}

/// Installs the global subscriber. Call once, before serving.
pub fn init(level: LogLevel, format: LogFormat) -> Result<(), LogError> {
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
    match format {
        LogFormat::Text => tracing_subscriber::registry().with(layer.with_filter(filter)).init(),
        #[cfg(feature = "json")]
        LogFormat::Json => {
            let layer = layer
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true);
            tracing_subscriber::registry().with(layer.with_filter(filter)).init()
        }
        #[cfg(not(feature = "json"))]
        LogFormat::Json => return Err(LogError::NoJson),
    }
    Ok(())
}

fn targets(level: LogLevel) -> Targets {
    let ours = match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_is_more_verbose_than_debug() {
        use tracing::Level;
        let on = |level, at| targets(level).would_enable("wsbridge::msg", &at);
        assert!(on(LogLevel::Trace, Level::TRACE));
        assert!(on(LogLevel::Debug, Level::DEBUG));
        assert!(!on(LogLevel::Debug, Level::TRACE));
        assert!(!on(LogLevel::Access, Level::DEBUG));
        assert!(targets(LogLevel::Access).would_enable("wsbridge::access", &Level::INFO));
        assert!(!targets(LogLevel::Info).would_enable("wsbridge::access", &Level::INFO));
    }
}
