//! Per-client and per-session limits with the real binary and real clients:
//! `--maxperclient` (429 beyond it, counted per address, a place given back when a
//! session ends), `--ratelimit` (a client sending as fast as it can is read at about the
//! rate, and the server does not buffer what it has not read), and `--idletimeout`
//! (1001 after a quiet spell, never while messages flow).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::common::deploy::run_to_exit;
use crate::common::*;

type Plain = WebSocketStream<TcpStream>;

/// A WebSocket to `server` from the local address `from` (any of 127.0.0.0/8 is this
/// machine): `Ok` with the socket or `Err` with the HTTP status of a refusal.
async fn ws_from(server: SocketAddr, from: &str) -> Result<Plain, u16> {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(from.parse::<IpAddr>().expect("ip"), 0))
        .expect("bind the client's address");
    let tcp = within(STEP, sock.connect(server)).await.expect("connect");
    let url = format!("ws://{server}/");
    match within(STEP, tokio_tungstenite::client_async(url, tcp)).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

async fn echo(ws: &mut Plain, text: &str) {
    within(STEP, ws.send(Message::text(text))).await.expect("send");
    loop {
        match within(STEP, ws.next()).await.expect("open").expect("ok") {
            Message::Text(t) => return assert_eq!(t.as_str(), text),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected the echo, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxperclient_refuses_the_next_session_from_one_address_only() {
    let server = BinServer::start(&["--maxperclient=3", "cat"]);
    // Twenty at once from one address: exactly three get in.
    let attempts = (0..20).map(|_| ws_from(server.addr, "127.0.0.1"));
    let results = futures_util::future::join_all(attempts).await;
    let refused: Vec<u16> = results.iter().filter_map(|r| r.as_ref().err().copied()).collect();
    assert_eq!(refused, vec![429; 17], "17 of 20 refused with 429");
    let mut open: Vec<Plain> = results.into_iter().filter_map(Result::ok).collect();
    for (i, ws) in open.iter_mut().enumerate() {
        echo(ws, &format!("in {i}")).await;
    }
    // Another address is another client.
    let mut other = ws_from(server.addr, "127.0.0.2")
        .await
        .expect("another address gets in");
    echo(&mut other, "other").await;
    assert_eq!(ws_from(server.addr, "127.0.0.1").await.err(), Some(429));

    // A session that ends gives its place back (once the server has seen the close).
    let mut first = open.remove(0);
    within(STEP, first.close(None)).await.expect("close");
    while within(STEP, first.next()).await.is_some() {}
    let deadline = Instant::now() + STEP;
    let mut again = loop {
        match ws_from(server.addr, "127.0.0.1").await {
            Ok(ws) => break ws,
            Err(429) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(s) => panic!("the place was not given back: {s}"),
        }
    };
    echo(&mut again, "again").await;
    server
        .wait_log("--maxperclient reached; upgrade refused client=127.0.0.1 limit=3")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_reads_a_flooding_client_at_the_rate() {
    // 20 messages a second after a burst of 5.
    let server = BinServer::start(&["--ratelimit=20/s:5", "cat"]);
    let mut ws = within(STEP, tokio_tungstenite::connect_async(server.url("/")))
        .await
        .expect("handshake")
        .0;
    let n = 45;
    let start = Instant::now();
    for i in 0..n {
        within(STEP, ws.feed(Message::text(format!("m{i}"))))
            .await
            .expect("send");
    }
    within(STEP, ws.flush()).await.expect("flush");
    let sent_in = start.elapsed();
    for i in 0..n {
        let want = format!("m{i}");
        loop {
            match within(STEP, ws.next()).await.expect("open").expect("ok") {
                Message::Text(t) => break assert_eq!(t.as_str(), want),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    let took = start.elapsed();
    // The limit is a floor: 40 messages past the burst at 20/s cannot take less than 2 s,
    // however fast the machine. (How close it comes to 2 s is the machine's business.)
    eprintln!(
        "sent {n} in {sent_in:?}; echoed in {took:?}: {:.1} msgs/s",
        n as f64 / took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_millis(1950),
        "read faster than --ratelimit: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "far slower than the rate: {took:?}");
    within(STEP, ws.close(None)).await.expect("close");
    while within(STEP, ws.next()).await.is_some() {}
    // Forty data messages waited for a token (the Close may have waited once more), for
    // about two seconds in all.
    server.wait_log("session ended").await;
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("session ended"))
        .expect("the access line");
    let field = |name: &str| -> u64 {
        let v = line
            .split(&format!(" {name}="))
            .nth(1)
            .unwrap_or_else(|| panic!("no {name}= in {line}"));
        v.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    };
    assert!((40..=41).contains(&field("ratelimited")), "{line}");
    assert!(field("ratelimited_ms") >= 1900, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_does_not_buffer_what_it_has_not_read() {
    let server = BinServer::start(&["--ratelimit=10/s", "--maxframesize=65536", "cat"]);
    let before = status_kib(server.pid(), "RssAnon");
    let (ws, _) = within(STEP, tokio_tungstenite::connect_async(server.url("/")))
        .await
        .expect("handshake");
    // Try to push 256 MiB; the sender stalls once the socket buffers are full, since the
    // server reads ten messages a second.
    let pushed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&pushed);
    let payload = "x".repeat(64 * 1024 - 1);
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for _ in 0..4096 {
            if tx.send(Message::text(payload.clone())).await.is_err() {
                break;
            }
            counter.fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
    });
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    // Wait until the sender has stalled: no progress for half a second.
    let deadline = Instant::now() + 2 * STEP;
    let mut last = (u64::MAX, Instant::now());
    while last.1.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "the sender never stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = pushed.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let after = status_kib(server.pid(), "RssAnon");
    let stalled_at = pushed.load(Ordering::Relaxed);
    eprintln!(
        "sender stalled after {} KiB; server RssAnon {before} -> {after} KiB",
        stalled_at / 1024
    );
    assert!(
        stalled_at < 64 << 20,
        "the client was not held back: {stalled_at} bytes sent"
    );
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "the server's memory grew by {} KiB while the client flooded",
        after - before
    );
    sender.abort();
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idletimeout_closes_a_quiet_session_with_1001_but_not_a_busy_one() {
    let server = BinServer::start(&["--idletimeout=1s", "cat"]);
    let mut busy = connect(&server.url("/")).await;
    let mut quiet = connect(&server.url("/")).await;
    send_text(&mut quiet, "once").await;
    assert_eq!(recv_text(&mut quiet).await, "once");
    // The busy client talks every 100 ms for 2.5 s: past the limit, and never closed.
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        send_text(&mut busy, &format!("b{i}")).await;
        assert_eq!(recv_text(&mut busy).await, format!("b{i}"));
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (data, code, reason) = recv_until_close(&mut quiet).await;
    assert!(data.is_empty(), "{data:?}");
    assert_eq!((code, reason.as_str()), (CloseCode::Away, "idle timeout"));
    send_text(&mut busy, "still here").await;
    assert_eq!(recv_text(&mut busy).await, "still here");
    server
        .wait_log("no message either way for --idletimeout; closing")
        .await;
    server.wait_log("ended_by=idle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idletimeout_applies_to_shared_clients_too() {
    let server = BinServer::start(&["--shared", "--idletimeout=300ms", "cat"]);
    let mut ws = connect(&server.url("/")).await;
    let (_, code, reason) = recv_until_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Away, "idle timeout"));
}

#[test]
fn bad_limit_values_are_usage_errors_naming_the_flag() {
    for (arg, needle) in [
        ("--ratelimit=10", "invalid --ratelimit=\"10\""),
        ("--ratelimit=0/s", "invalid --ratelimit=\"0/s\": must be more than zero"),
        ("--idletimeout=5x", "invalid --idletimeout=\"5x\": expected a duration"),
        ("--idletimeout=0", "must be more than zero"),
    ] {
        let (code, stderr) = run_to_exit(&["--port=0", arg, "cat"]);
        assert_usage_error(code, &stderr, needle);
    }
    // A number out of range is clap's invalid-value error, naming the flag and the range.
    let (code, stderr) = run_to_exit(&["--port=0", "--maxperclient=0", "cat"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: invalid value '0' for '--maxperclient <N>': must be a whole number from 1 to"),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit(&["--connect=ws://127.0.0.1:9/", "--maxperclient=2"]);
    assert_usage_error(code, &stderr, "--maxperclient is a server flag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_counts_alone() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = BinServer::start(&["--maxperclient=1", "--trusted-proxy=127.0.0.1", "cat"]);
    let through_proxy = |client: &'static str| {
        let url = server.url("/");
        async move {
            let mut req = url.into_client_request().expect("request");
            req.headers_mut()
                .insert("X-Forwarded-For", client.parse().expect("header value"));
            match within(STEP, tokio_tungstenite::connect_async(req)).await {
                Ok((ws, _)) => Ok(ws),
                Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
                Err(e) => panic!("handshake failed: {e}"),
            }
        }
    };
    let _a = through_proxy("203.0.113.1").await.expect("first client");
    let _b = through_proxy("203.0.113.2").await.expect("second client, same proxy");
    let _c = through_proxy("2001:db8:5:6::1").await.expect("an IPv6 client");
    assert_eq!(through_proxy("203.0.113.1").await.err(), Some(429));
    assert_eq!(
        through_proxy("2001:db8:5:6::ffff").await.err(),
        Some(429),
        "the same /64"
    );
    server
        .wait_log("--maxperclient reached; upgrade refused client=2001:db8:5:6::/64")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_maxperclient_is_refused_before_the_auth_hook_runs() {
    let dir = crate::common::deploy::TempDir::new("limits-hook");
    let runs = dir.path("runs");
    let hook = dir.path("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\necho run >> {}\n", runs.display())).expect("write hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let authcmd = format!("--authcmd={}", hook.display());
    let server = BinServer::start(&["--maxperclient=1", &authcmd, "cat"]);
    let mut first = ws_from(server.addr, "127.0.0.1").await.expect("the first session");
    echo(&mut first, "in").await;
    for _ in 0..5 {
        assert_eq!(ws_from(server.addr, "127.0.0.1").await.err(), Some(429));
    }
    let ran = std::fs::read_to_string(&runs).unwrap_or_default();
    assert_eq!(ran.lines().count(), 1, "the hook ran for refused clients: {ran:?}");
}
