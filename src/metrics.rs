//! `--metrics`: the Prometheus listener and its one page, `GET /metrics`, in the text
//! exposition format 0.0.4. It reads the counters of [`crate::stats`] and the server's
//! state (the `--maxforks` slots) at scrape time and writes them out; it counts nothing
//! itself. Its own listener, plain HTTP, so metrics never show on the public port; it
//! stops when the server shuts down.
//!
//! Hand-written rather than with the `prometheus-client` crate: the format is a few lines
//! of text per family, every counter already lives in `stats` as an atomic, and the crate
//! would bring its own registry, encoder and dependencies into a binary kept small.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::state::Endpoint;
use crate::stats::{self, DURATION_BUCKETS, STATS};

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A scraper must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Answers scrapes on `listener` until the server shuts down.
pub async fn serve(listener: TcpListener, ep: Arc<Endpoint>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = ep.shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let ep = Arc::clone(&ep);
        tokio::spawn(async move {
            let ep2 = Arc::clone(&ep);
            let service = service_fn(move |req| {
                let resp = answer(&req, &ep2);
                async move { Ok::<_, Infallible>(resp) }
            });
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "metrics: connection ended with an error");
                },
                () = ep.shutdown.cancelled() => {}
            }
        });
    }
}

/// `GET /metrics` (or `HEAD`); 405 for another method there, 404 elsewhere.
fn answer(req: &Request<Incoming>, ep: &Endpoint) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return body::text(StatusCode::NOT_FOUND, "not found: metrics are at /metrics");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = body::text(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let mut resp = Response::new(body::full(render(ep.fork_slots())));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// One metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The whole exposition. `forks` is `--maxforks`'s (in use, limit), when it is set.
pub fn render(forks: Option<(usize, usize)>) -> String {
    let mut o = String::with_capacity(4096);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);

    family(
        &mut o,
        "wsbridge_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(o, "wsbridge_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    family(
        &mut o,
        "process_start_time_seconds",
        "gauge",
        "Start time of the server since the Unix epoch in seconds.",
    );
    let _ = writeln!(o, "process_start_time_seconds {:.3}", stats::start_time());

    let routes = stats::routes();
    family(
        &mut o,
        "wsbridge_sessions_active",
        "gauge",
        "WebSocket sessions running now, by route (the program's SCRIPT_NAME).",
    );
    for (route, active, _) in &routes {
        let _ = writeln!(o, "wsbridge_sessions_active{{route=\"{}\"}} {active}", escape(route));
    }
    family(
        &mut o,
        "wsbridge_sessions_total",
        "counter",
        "WebSocket sessions started, by route (the program's SCRIPT_NAME).",
    );
    for (route, _, total) in &routes {
        let _ = writeln!(o, "wsbridge_sessions_total{{route=\"{}\"}} {total}", escape(route));
    }

    family(
        &mut o,
        "wsbridge_session_duration_seconds",
        "histogram",
        "How long WebSocket sessions lasted, from the upgrade to the end.",
    );
    let mut cumulative = 0;
    for (i, count) in STATS.duration_buckets.iter().enumerate() {
        cumulative += load(count);
        let le = DURATION_BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(
            o,
            "wsbridge_session_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let sum = load(&STATS.duration_sum_us) as f64 / 1e6;
    let _ = writeln!(o, "wsbridge_session_duration_seconds_sum {sum:.6}");
    let _ = writeln!(o, "wsbridge_session_duration_seconds_count {cumulative}");

    family(
        &mut o,
        "wsbridge_refusals_total",
        "counter",
        "WebSocket upgrade requests refused, by HTTP status.",
    );
    for (i, n) in STATS.refusals.iter().enumerate() {
        let n = load(n);
        if n > 0 {
            let _ = writeln!(o, "wsbridge_refusals_total{{status=\"{}\"}} {n}", i + 100);
        }
    }
    family(
        &mut o,
        "wsbridge_http_requests_total",
        "counter",
        "Plain HTTP requests (not WebSocket upgrades) answered, by status class.",
    );
    for (i, n) in STATS.http.iter().enumerate() {
        let _ = writeln!(o, "wsbridge_http_requests_total{{class=\"{}xx\"}} {}", i + 1, load(n));
    }

    for (name, what, pick) in [("messages", "Messages", true), ("bytes", "Payload bytes", false)] {
        let help = format!("{what} relayed; direction in is client to program, out is program to client.");
        family(&mut o, &format!("wsbridge_{name}_total"), "counter", &help);
        for (direction, flow) in [("in", &STATS.received), ("out", &STATS.sent)] {
            let n = load(if pick { &flow.messages } else { &flow.bytes });
            let _ = writeln!(o, "wsbridge_{name}_total{{direction=\"{direction}\"}} {n}");
        }
    }

    family(
        &mut o,
        "wsbridge_child_exits_total",
        "counter",
        "Programs that ended (sessions, --shared, CGI), by exit code or by signal.",
    );
    for (code, n) in STATS.exit_codes.iter().enumerate() {
        let n = load(n);
        if n > 0 {
            let _ = writeln!(o, "wsbridge_child_exits_total{{code=\"{code}\"}} {n}");
        }
    }
    for (sig, n) in STATS.exit_signals.iter().enumerate() {
        let n = load(n);
        if n > 0 {
            let name = i32::try_from(sig)
                .ok()
                .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
                .map_or_else(|| format!("SIG{sig}"), |s| s.as_str().to_owned());
            let _ = writeln!(o, "wsbridge_child_exits_total{{signal=\"{name}\"}} {n}");
        }
    }

    if let Some((in_use, limit)) = forks {
        family(
            &mut o,
            "wsbridge_forks_in_use",
            "gauge",
            "--maxforks slots taken by running programs (sessions and CGI).",
        );
        let _ = writeln!(o, "wsbridge_forks_in_use {in_use}");
        family(
            &mut o,
            "wsbridge_forks_limit",
            "gauge",
            "--maxforks: most programs running at once.",
        );
        let _ = writeln!(o, "wsbridge_forks_limit {limit}");
    }

    family(
        &mut o,
        "wsbridge_shared_clients",
        "gauge",
        "--shared clients connected now.",
    );
    let _ = writeln!(o, "wsbridge_shared_clients {}", load(&STATS.shared_clients));
    family(
        &mut o,
        "wsbridge_shared_clients_dropped_total",
        "counter",
        "--shared clients dropped for falling behind --sharedqueue (close 1008).",
    );
    let _ = writeln!(
        o,
        "wsbridge_shared_clients_dropped_total {}",
        load(&STATS.shared_dropped)
    );
    broker(&mut o);
    family(
        &mut o,
        "wsbridge_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out.",
    );
    let _ = writeln!(o, "wsbridge_tls_handshake_failures_total {}", load(&STATS.tls_failures));
    o
}

/// `--broker`'s families (zero without a broker).
fn broker(o: &mut String) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    let b = &STATS.broker;
    for (name, what, received, published) in [
        (
            "wsbridge_broker_messages_total",
            "Messages",
            &b.received.messages,
            &b.published.messages,
        ),
        (
            "wsbridge_broker_bytes_total",
            "Payload bytes",
            &b.received.bytes,
            &b.published.bytes,
        ),
    ] {
        let help = format!("{what} received from (in) and published to (out) the --broker.");
        family(o, name, "counter", &help);
        let _ = writeln!(o, "{name}{{direction=\"in\"}} {}", load(received));
        let _ = writeln!(o, "{name}{{direction=\"out\"}} {}", load(published));
    }
    for (name, help, value) in [
        (
            "wsbridge_broker_dropped_total",
            "Messages not published: the publish queue was full (broker down or slow) or refused.",
            &b.dropped,
        ),
        (
            "wsbridge_broker_slow_consumer_total",
            "Times the broker client dropped incoming messages that wsbridge read too slowly.",
            &b.slow_consumer,
        ),
        (
            "wsbridge_broker_input_dropped_total",
            "Edges' input messages the producer dropped: its program was not reading.",
            &b.input_dropped,
        ),
        (
            "wsbridge_broker_reconnects_total",
            "Connections to the --broker after the first.",
            &b.reconnects,
        ),
    ] {
        family(o, name, "counter", help);
        let _ = writeln!(o, "{name} {}", load(value));
    }
    family(
        o,
        "wsbridge_broker_connected",
        "gauge",
        "1 while connected to the --broker.",
    );
    let _ = writeln!(o, "wsbridge_broker_connected {}", load(&b.connected));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(Some((1, 4)));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
                    .unwrap_or(name);
                assert!(typed.contains(base), "{line}");
            }
        }
        assert!(text.contains("wsbridge_forks_in_use 1\n"), "{text}");
        assert!(text.contains("wsbridge_forks_limit 4\n"), "{text}");
    }
}
