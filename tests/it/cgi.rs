//! `--cgidir`: RFC 3875 scripts for plain HTTP requests: the environment, bodies in
//! (Content-Length and chunked), Status and Location out, scripts that die, hang or
//! answer garbage, the time limit and `--maxforks`. Raw requests over TCP.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::rawhttp::*;
use crate::common::*;

fn cgidir() -> String {
    format!("--cgidir={}", fixture("cgi-bin"))
}

fn var<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_follows_rfc_3875() {
    let server = TestServer::start(&[&cgidir(), "--header-http=X-Http: h"]).await;
    let extra = "X-Test: yes\r\nProxy: http://evil:3128\r\nX_Test: sneaky\r\n";
    let a = request(server.addr, "GET", "/env.cgi/extra/path?q=1&r=a%20b", extra).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("text/plain"));
    assert_eq!(a.header("x-http"), Some("h"));
    let body = a.text();
    let dir = std::fs::canonicalize(fixture("cgi-bin")).unwrap();
    let dir = dir.display().to_string();
    for (name, want) in [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/env.cgi"),
        ("PATH_INFO", "/extra/path"),
        ("PATH_TRANSLATED", &format!("{dir}/extra/path")),
        ("QUERY_STRING", "q=1&r=a%20b"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("HTTP_X_TEST", "yes"),
        ("SCRIPT_FILENAME", &format!("{dir}/env.cgi")),
        ("CWD", &dir),
        ("CONTENT_LENGTH", ""),
    ] {
        assert_eq!(var(&body, name), Some(want), "{name} in\n{body}");
    }
    assert!(var(&body, "SERVER_SOFTWARE").unwrap().starts_with("wsbridge/"));
    assert_eq!(var(&body, "HTTP_PROXY"), None, "httpoxy");
    assert_eq!(
        var(&body, "PATH").is_some(),
        std::env::var_os("PATH").is_some(),
        "--passenv default"
    );
    let a = get(server.addr, "/env.cgi").await;
    assert_eq!(var(&a.text(), "PATH_INFO"), Some(""));
    assert_eq!(var(&a.text(), "PATH_TRANSLATED"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_bodies_reach_the_script() {
    let server = TestServer::start(&[&cgidir()]).await;
    let body = "name=wsbridge&x=1";
    let extra = format!(
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let raw = format!(
        "POST /echo.cgi HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra}",
        server.addr
    );
    let a = send(server.addr, raw.as_bytes(), false).await;
    assert_eq!(a.status, 201);
    assert_eq!(a.text(), body);
    assert_eq!(a.header("x-length"), Some("17"));

    let chunked = format!(
        "POST /echo.cgi HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        server.addr
    );
    let a = send(server.addr, chunked.as_bytes(), false).await;
    assert_eq!((a.status, a.text().as_str()), (201, "hello world"));
    assert_eq!(a.header("x-length"), Some("11"));

    let big: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut raw = format!(
        "POST /echo.cgi HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        big.len()
    )
    .into_bytes();
    raw.extend_from_slice(&big);
    let a = send(server.addr, &raw, false).await;
    assert_eq!(a.status, 201);
    assert!(a.complete);
    assert!(a.body == big, "1 MB body came back changed ({} bytes)", a.body.len());

    let a = request(server.addr, "POST", "/echo.cgi", "Content-Length: 99999999999\r\n").await;
    assert_eq!(a.status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_location() {
    let server = TestServer::start(&[&cgidir()]).await;
    let a = get(server.addr, "/status.cgi").await;
    assert_eq!((a.status, a.text().as_str()), (418, "short and stout\n"));
    let a = get(server.addr, "/away.cgi").await;
    assert_eq!(a.status, 302);
    assert_eq!(a.header("location"), Some("http://example.com/elsewhere"));
    // Local redirect: the server answers with the other resource itself, as a GET.
    let a = request(server.addr, "POST", "/redirect.cgi", "Content-Length: 0\r\n").await;
    assert_eq!(a.status, 200);
    let body = a.text();
    assert_eq!(var(&body, "QUERY_STRING"), Some("from=redirect"), "{body}");
    assert_eq!(var(&body, "PATH_INFO"), Some("/after"));
    assert_eq!(var(&body, "REQUEST_METHOD"), Some("GET"));
    let a = get(server.addr, "/big.cgi").await;
    assert_eq!((a.status, a.body.len(), a.complete), (200, 3_000_000, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_outside_200_to_599_gets_502() {
    let server = TestServer::start(&[&cgidir()]).await;
    for good in ["200", "204", "299", "404", "599"] {
        let a = get(server.addr, &format!("/anystatus.cgi?{good}")).await;
        assert_eq!(a.status.to_string(), good);
    }
    for bad in [
        "100", "101", "103", "199", "600", "999", "1000", "2000", "099", "20", "20x", "abc", "",
    ] {
        let a = get(server.addr, &format!("/anystatus.cgi?{bad}")).await;
        assert_eq!(a.status, 502, "Status: {bad}");
        assert_eq!(a.text().lines().count(), 1, "Status: {bad}: {:?}", a.text());
        assert!(a.complete, "Status: {bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_scripts_get_clear_answers() {
    let server = TestServer::start(&[&cgidir()]).await;
    let a = get(server.addr, "/dies.cgi").await;
    assert_eq!(a.status, 200);
    assert!(!a.complete, "a script killed mid-output must not look complete");
    assert!(a.text().starts_with("partial output"), "{:?}", a.text());
    let a = get(server.addr, "/noheaders.cgi").await;
    assert_eq!(a.status, 502);
    assert_eq!(a.text().lines().count(), 1);
    let a = get(server.addr, "/noexec.cgi").await;
    assert_eq!(a.status, 403);
    assert!(!a.text().contains("printf"), "no source");
    assert_eq!(get(server.addr, "/missing.cgi").await.status, 404);
    assert_eq!(get(server.addr, "/../cgi-bin/env.cgi").await.status, 404);
    assert_eq!(get(server.addr, "/%2e%2e/cgi-bin/env.cgi").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_stops_the_script_and_its_group() {
    let server = TestServer::start(&[&cgidir(), "--cgitimeout=1"]).await;
    let pidfile = std::env::temp_dir().join(format!("wsbridge-cgi-slow-{}", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let started = Instant::now();
    let a = get(server.addr, &format!("/slow.cgi?{}", pidfile.display())).await;
    assert_eq!(a.status, 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(
        gone_within(pid, Duration::from_secs(3)).await,
        "timed-out script still running"
    );
    let _ = std::fs::remove_file(&pidfile);

    let a = get(server.addr, "/slowbody.cgi").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "started\n");
    assert!(!a.complete, "an answer cut by the timeout must not look complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgi_runs_count_against_maxforks() {
    let server = TestServer::start(&[&cgidir(), "--maxforks=1", "--cgitimeout=2"]).await;
    let pidfile = std::env::temp_dir().join(format!("wsbridge-cgi-forks-{}", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let addr = server.addr;
    let path = format!("/slow.cgi?{}", pidfile.display());
    let first = tokio::spawn(async move { get(addr, &path).await.status });
    let deadline = Instant::now() + STEP;
    while !pidfile.exists() {
        assert!(Instant::now() < deadline, "the slow script never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(server.addr, "/env.cgi").await.status, 429);
    assert_eq!(within(STEP, first).await.unwrap(), 504);
    assert_eq!(get(server.addr, "/env.cgi").await.status, 200, "the slot came back");
    let _ = std::fs::remove_file(&pidfile);
}

/// Sends a chunked POST of `chunks` chunks of `size` bytes (and the last chunk only when
/// `finish`); a write that cannot go on within a second means the server pushes back,
/// and sending stops there. Returns the connection and how many chunks went.
async fn chunked_post(
    addr: std::net::SocketAddr,
    path: &str,
    chunks: usize,
    size: usize,
    finish: bool,
) -> (tokio::net::TcpStream, usize) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = within(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n");
    within(STEP, tcp.write_all(head.as_bytes())).await.expect("head");
    let mut chunk = format!("{size:x}\r\n").into_bytes();
    chunk.extend(std::iter::repeat_n(b'x', size));
    chunk.extend_from_slice(b"\r\n");
    let mut sent = 0;
    while sent < chunks {
        match tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&chunk)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) | Err(_) => return (tcp, sent),
        }
    }
    if finish {
        let _ = within(STEP, tcp.write_all(b"0\r\n\r\n")).await;
    }
    (tcp, sent)
}

async fn answer_of(mut tcp: tokio::net::TcpStream) -> Answer {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let _ = within(STEP, tcp.read_to_end(&mut buf)).await;
    parse(&buf, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_chunked_bodies_stream_to_the_script() {
    let server = TestServer::start(&[&cgidir()]).await;
    // A short chunked body is gathered, so the script is told CONTENT_LENGTH.
    let (tcp, _) = chunked_post(server.addr, "/count.cgi", 2, 1000, true).await;
    let a = answer_of(tcp).await;
    assert_eq!((a.status, a.text().as_str()), (200, "read=2000 content_length=2000\n"));
    // A long one streams as it comes, CONTENT_LENGTH unset, EOF at its end.
    let (tcp, sent) = chunked_post(server.addr, "/count.cgi", 64, 64 * 1024, true).await;
    assert_eq!(sent, 64);
    let a = answer_of(tcp).await;
    assert_eq!((a.status, a.text().as_str()), (200, "read=4194304 content_length=\n"));
    // The 16 MiB limit holds for the total: 413, and the script is stopped.
    let (tcp, _) = chunked_post(server.addr, "/count.cgi", 260, 64 * 1024, true).await;
    let a = answer_of(tcp).await;
    assert_eq!(a.status, 413, "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_floods_are_not_held_in_memory() {
    // 24 clients each start a 16 MiB chunked body for a script that never reads it and
    // never finish it. The server used to gather every body before starting the script.
    let server = BinServer::start(&[&cgidir()]);
    let a = get(server.addr, "/env.cgi").await;
    assert_eq!(a.status, 200);
    let before = status_kib(server.pid(), "VmRSS");
    let mut flood = Vec::new();
    for _ in 0..24 {
        flood.push(tokio::spawn(chunked_post(
            server.addr,
            "/ignores.cgi",
            250,
            64 * 1024,
            false,
        )));
    }
    let mut held = Vec::new();
    let mut sent = 0;
    for f in flood {
        let (tcp, n) = within(Duration::from_secs(60), f).await.expect("flood task");
        sent += n;
        held.push(tcp);
    }
    let after = status_kib(server.pid(), "VmRSS");
    eprintln!("RSS {before} KiB -> {after} KiB with {sent} chunks of 64 KiB sent");
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB while {sent} chunks of 64 KiB were pushed"
    );
    drop(held);
}

/// Waits (bounded) until `path` exists and returns what it holds.
async fn file_appears(path: &std::path::Path) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_running_scripts_with_the_ladder_and_answers() {
    // One script still before its headers, one streaming its answer; SIGTERM reaches the
    // server. Each is stopped by the ladder (so its trap runs: not a bare SIGKILL at
    // exit), the first client gets 503, the second a cut-off answer, and the server exits.
    let mut server = BinServer::start(&[&cgidir()]);
    let dir = crate::common::deploy::TempDir::new("cgi-shutdown");
    let (early, late) = (dir.path("early"), dir.path("late"));
    let addr = server.addr;
    let path = format!("/trapping.cgi?{}", early.display());
    let first = tokio::spawn(async move { get(addr, &path).await });
    // The second client reads until the first line of the body has come: only then is the
    // answer under way (the script's pid file alone does not say wsbridge read its head).
    let path = format!("/trapping.cgi/answered?{}", late.display());
    let mut tcp = within(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    within(STEP, tcp.write_all(req.as_bytes())).await.expect("write");
    let mut buf = Vec::new();
    while !String::from_utf8_lossy(&buf).contains("first\n") {
        let mut chunk = [0u8; 4096];
        let n = within(STEP, tcp.read(&mut chunk)).await.expect("read");
        assert!(
            n > 0,
            "closed before the first line: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let second = tokio::spawn(async move {
        let _ = tcp.read_to_end(&mut buf).await;
        crate::common::rawhttp::parse(&buf, false)
    });
    file_appears(&early).await;
    file_appears(&late).await;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", server.log());
    let first = within(STEP, first).await.expect("first client");
    assert_eq!(first.status, 503, "{first:?}\n{}", server.log());
    let second = within(STEP, second).await.expect("second client");
    assert_eq!((second.status, second.text().as_str()), (200, "first\n"));
    assert!(!second.complete, "an answer cut by the shutdown must not look complete");
    for p in [&early, &late] {
        let stopped = p.with_extension("stopped");
        assert!(
            stopped.exists(),
            "{} was not stopped by the ladder\n{}",
            p.display(),
            server.log()
        );
    }
}
