//! `--metrics`: the real binary with its Prometheus listener on 127.0.0.1:0, read from
//! the `metrics on http://ADDR/metrics` startup line. Sessions, refusals, a program that
//! exits 3, a `--shared` client dropped for being slow and a failed TLS handshake are
//! made to happen, then a scrape is parsed and its values checked exactly, and
//! `promtool check metrics` (Debian's `prometheus`) reads it as Prometheus would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::deploy::{run_to_exit, TempDir};
use crate::common::*;

/// One GET on the metrics listener: status line, `Content-Type` and body.
async fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut tcp = within(STEP, TcpStream::connect(addr))
        .await
        .expect("connect to metrics");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    within(STEP, tcp.write_all(req.as_bytes())).await.expect("write");
    let mut raw = Vec::new();
    within(STEP, tcp.read_to_end(&mut raw)).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head.lines().next().unwrap_or_default().to_owned();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    (status, ctype, body.to_owned())
}

/// The samples of a scrape: `name{labels}` → value.
fn parse(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {l:?}"));
            (
                series.to_owned(),
                value.parse().unwrap_or_else(|_| panic!("bad value {l:?}")),
            )
        })
        .collect()
}

/// One scrape of `addr`'s `/metrics` (must answer 200), parsed (see [`parse`]).
pub(crate) async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, _, body) = get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    parse(&body)
}

/// Scrapes until `series` has `want` (the counters of a session are final only once its
/// program is reaped); returns that scrape.
async fn scrape_until(addr: SocketAddr, series: &str, want: f64) -> HashMap<String, f64> {
    let deadline = Instant::now() + STEP;
    loop {
        let m = scrape(addr).await;
        if m.get(series) == Some(&want) {
            return m;
        }
        assert!(Instant::now() < deadline, "{series} never became {want}: {m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks every `(series, value)` of `want` in `m`.
fn assert_values(m: &HashMap<String, f64>, want: &[(&str, f64)]) {
    for (series, value) in want {
        assert_eq!(m.get(*series), Some(value), "{series} in {m:?}");
    }
}

/// `promtool check metrics` on `body`: no complaint. Skipped with a reason when promtool is
/// not installed, except in CI (`CI=true`), where it must be (tools/test.sh installs it).
fn promtool_check(body: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is missing in CI (tools/test.sh installs the prometheus package)"
            );
            eprintln!("skipping promtool check metrics: promtool not installed (apt-get install prometheus)");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{body}"
    );
}

/// A `--dir` with `echo.sh` (cat) and `exit3.sh` (prints `bye`, exits 3).
fn script_dir() -> TempDir {
    let dir = TempDir::new("metrics-dir");
    for (name, body) in [
        ("echo.sh", "#!/bin/sh\nexec cat\n"),
        ("exit3.sh", "#!/bin/sh\necho bye\nexit 3\n"),
    ] {
        let path = dir.path(name);
        std::fs::write(&path, body).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// A WebSocket from the origin the test server allows.
async fn open(url: &str) -> Ws {
    let mut req = url.into_client_request().expect("request");
    req.headers_mut()
        .insert("origin", "http://good.example".parse().expect("header"));
    within(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("websocket handshake")
        .0
}

/// The server with `--metrics=127.0.0.1:0`, started and announced.
fn start(args: &[&str]) -> BinServer {
    let mut all = vec!["--port=0", "--address=127.0.0.1", "--metrics=127.0.0.1:0"];
    all.extend(args);
    BinServer::from_proc(Proc::start(&all, &[], 2))
}

#[tokio::test]
async fn sessions_refusals_and_exits_are_counted_exactly() {
    let dir = script_dir();
    let dir_flag = format!("--dir={}", dir.0.display());
    let server = start(&[&dir_flag, "--maxforks=4", "--origin=http://good.example"]);
    let metrics = server.metrics_addr();
    // Before anything: every family is there, and valid.
    let (_, _, body) = get(metrics, "/metrics").await;
    promtool_check(&body);

    // Two echo sessions, one message each way; the client closes, cat exits 0.
    let mut first = true;
    for _ in 0..2 {
        let mut ws = open(&server.url("/echo.sh")).await;
        send_text(&mut ws, "hello").await;
        assert_eq!(recv_text(&mut ws).await, "hello");
        let m = scrape(metrics).await;
        assert_values(
            &m,
            &[
                ("wsbridge_sessions_active{route=\"/echo.sh\"}", 1.0),
                ("wsbridge_forks_in_use", 1.0),
            ],
        );
        within(STEP, ws.close(None)).await.expect("close");
        while within(STEP, ws.next()).await.is_some() {}
        // Active until the program is reaped, a moment after the close.
        scrape_until(metrics, "wsbridge_forks_in_use", 0.0).await;
        let m = scrape_until(metrics, "wsbridge_sessions_active{route=\"/echo.sh\"}", 0.0).await;
        assert_eq!(
            m["wsbridge_sessions_total{route=\"/echo.sh\"}"],
            if first { 1.0 } else { 2.0 }
        );
        first = false;
    }
    // One program that says bye and exits 3: close 1011.
    let mut ws = open(&server.url("/exit3.sh")).await;
    let (data, code, _) = recv_until_close(&mut ws).await;
    assert_eq!((data.len(), code), (1, CloseCode::Error));
    // Refused: no such script (404), a foreign origin (403), a plain GET of an endpoint (426).
    let refused = |path: &str, origin: Option<&str>| {
        let mut req = server.url(path).into_client_request().expect("request");
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().expect("header"));
        }
        async move { within(STEP, tokio_tungstenite::connect_async(req)).await.is_err() }
    };
    assert!(refused("/nothing.sh", Some("http://good.example")).await);
    assert!(refused("/echo.sh", Some("http://evil.example")).await);
    let (status, _, _) = get(server.addr, "/echo.sh").await;
    assert!(status.contains(" 426 "), "{status}");
    // A plain request nothing serves: 404, counted as plain HTTP.
    let (status, _, _) = get(server.addr, "/nothing.txt").await;
    assert!(status.contains(" 404 "), "{status}");

    // A session's slot is given back after everything else it counts (its exit, its end).
    let m = scrape_until(metrics, "wsbridge_forks_in_use", 0.0).await;
    assert_values(
        &m,
        &[
            ("wsbridge_sessions_total{route=\"/echo.sh\"}", 2.0),
            ("wsbridge_sessions_active{route=\"/echo.sh\"}", 0.0),
            ("wsbridge_sessions_total{route=\"/exit3.sh\"}", 1.0),
            ("wsbridge_sessions_active{route=\"/exit3.sh\"}", 0.0),
            ("wsbridge_session_duration_seconds_count", 3.0),
            ("wsbridge_session_duration_seconds_bucket{le=\"+Inf\"}", 3.0),
            ("wsbridge_messages_total{direction=\"in\"}", 2.0),
            ("wsbridge_messages_total{direction=\"out\"}", 3.0),
            ("wsbridge_bytes_total{direction=\"in\"}", 10.0),
            ("wsbridge_bytes_total{direction=\"out\"}", 13.0),
            ("wsbridge_child_exits_total{code=\"0\"}", 2.0),
            ("wsbridge_child_exits_total{code=\"3\"}", 1.0),
            ("wsbridge_refusals_total{status=\"403\"}", 1.0),
            ("wsbridge_refusals_total{status=\"404\"}", 1.0),
            ("wsbridge_refusals_total{status=\"426\"}", 1.0),
            ("wsbridge_http_requests_total{class=\"4xx\"}", 1.0),
            ("wsbridge_http_requests_total{class=\"2xx\"}", 0.0),
            ("wsbridge_forks_in_use", 0.0),
            ("wsbridge_forks_limit", 4.0),
            ("wsbridge_shared_clients", 0.0),
            ("wsbridge_tls_handshake_failures_total", 0.0),
            (
                &format!("wsbridge_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
                1.0,
            ),
        ],
    );
    // Only the routes that ran a program, and no other refusal or exit.
    let count = |prefix: &str| m.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(count("wsbridge_sessions_total{"), 2, "{m:?}");
    assert_eq!(count("wsbridge_refusals_total{"), 3, "{m:?}");
    assert_eq!(count("wsbridge_child_exits_total{"), 2, "{m:?}");
    let started = m["process_start_time_seconds"];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(started > now - 600.0 && started <= now + 1.0, "{started} vs {now}");

    let (_, _, body) = get(metrics, "/metrics").await;
    promtool_check(&body);
}

#[tokio::test]
async fn the_listener_speaks_prometheus_text_only_at_slash_metrics_and_stops_with_the_server() {
    let mut server = start(&["cat"]);
    let metrics = server.metrics_addr();
    assert_ne!(metrics, server.addr, "its own listener");
    let (status, ctype, body) = get(metrics, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    for family in [
        "wsbridge_sessions_total",
        "wsbridge_messages_total",
        "wsbridge_child_exits_total",
    ] {
        assert!(body.contains(&format!("# TYPE {family} counter\n")), "{body}");
        assert!(body.contains(&format!("# HELP {family} ")), "{body}");
    }
    assert!(
        body.contains("# TYPE wsbridge_session_duration_seconds histogram\n"),
        "{body}"
    );
    let (status, _, _) = get(metrics, "/").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    // Not on the public port.
    let (status, _, body) = get(server.addr, "/metrics").await;
    assert!(!body.contains("wsbridge_"), "{status}: {body}");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(STEP).await.success());
    assert!(
        TcpStream::connect(metrics).await.is_err(),
        "metrics listener still open"
    );
}

/// A masked client text frame (RFC 6455 §5.2), for a raw client.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shared_client_dropped_with_1008_is_counted() {
    let server = start(&["--shared", "--sharedqueue=65536", &fixture("shared.py")]);
    let metrics = server.metrics_addr();
    // A client that asks for a flood and never reads: its queue overflows.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = within(STEP, socket.connect(server.addr)).await.expect("connect");
    let _stalled = raw_upgrade_on(tcp, server.addr, "/", &masked_text(b"flood 20000")).await;
    // The hub counts the client at the handshake, the session once the upgrade is done.
    let m = scrape_until(metrics, "wsbridge_sessions_active{route=\"/\"}", 1.0).await;
    // Connected, or (if the flood was quick) already dropped: counted once either way.
    let counted = |k: &str| m.get(k).copied().unwrap_or(-1.0);
    assert_eq!(
        counted("wsbridge_shared_clients") + counted("wsbridge_shared_clients_dropped_total"),
        1.0,
        "{m:?}"
    );
    let m = scrape_until(metrics, "wsbridge_shared_clients_dropped_total", 1.0).await;
    let m = match m.get("wsbridge_shared_clients") {
        Some(0.0) => m,
        _ => scrape_until(metrics, "wsbridge_shared_clients", 0.0).await,
    };
    assert_values(
        &m,
        &[
            ("wsbridge_shared_clients_dropped_total", 1.0),
            ("wsbridge_sessions_total{route=\"/\"}", 1.0),
            ("wsbridge_messages_total{direction=\"in\"}", 1.0),
        ],
    );
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn a_failed_tls_handshake_is_counted() {
    use crate::common::deploy::{make_ca, make_leaf};
    let dir = TempDir::new("metrics-tls");
    make_ca(&dir.0, "srv");
    make_leaf(&dir.0, "srv", "server", false);
    let cert = format!("--sslcert={}", dir.path("server.pem").display());
    let key = format!("--sslkey={}", dir.path("server.key").display());
    let server = start(&["--ssl", &cert, &key, "cat"]);
    let metrics = server.metrics_addr();
    // Plain HTTP on the TLS port: the handshake fails.
    let mut tcp = within(STEP, TcpStream::connect(server.addr)).await.expect("connect");
    within(STEP, tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = within(STEP, tcp.read_to_end(&mut sink)).await;
    let m = scrape_until(metrics, "wsbridge_tls_handshake_failures_total", 1.0).await;
    assert!(!m.keys().any(|k| k.starts_with("wsbridge_sessions_total{")), "{m:?}");
}

#[test]
fn a_bad_metrics_address_is_a_usage_error_and_a_taken_one_exits_3() {
    for bad in [
        "--metrics=localhost",
        "--metrics=9100",
        "--metrics=1.2.3.4:x",
        "--metrics=",
    ] {
        let (code, stderr) = run_to_exit(&["--port=0", bad, "cat"]);
        assert_usage_error(code, &stderr, "invalid --metrics=");
    }
    let (code, stderr) = run_to_exit(&["--connect=ws://127.0.0.1:9/", "--metrics=127.0.0.1:0"]);
    assert_usage_error(code, &stderr, "--metrics is a server flag");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let (code, stderr) = run_to_exit(&["--port=0", "--address=127.0.0.1", &format!("--metrics={addr}"), "cat"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.starts_with(&format!("wsbridge: cannot listen on {addr}: ")),
        "{stderr}"
    );
}

/// A program killed by a signal is counted under `signal=` with the signal's name, not
/// as an exit code (issue 23: "child exits by code/signal").
#[tokio::test]
async fn a_program_killed_by_a_signal_is_counted_by_its_name() {
    let server = start(&["sh", "-c", "echo up; kill -KILL $$"]);
    let metrics = server.metrics_addr();
    let mut ws = connect(&server.url("/")).await;
    let (data, code, _) = recv_until_close(&mut ws).await;
    assert_eq!((data.len(), code), (1, CloseCode::Error));
    let m = scrape_until(metrics, "wsbridge_child_exits_total{signal=\"SIGKILL\"}", 1.0).await;
    assert!(
        !m.keys().any(|k| k.starts_with("wsbridge_child_exits_total{code=")),
        "a killed program is no exit code: {m:?}"
    );
}
