//! The log as an operator reads it, from the real binary's stderr: the access lines of
//! sessions (who ended them and why, close frames each way, exit, traffic), of refusals
//! (with the reason and the refused origin), of plain HTTP (status, bytes, CGI exit, a
//! cut-off answer), one `path=` per request on a keep-alive connection, what
//! `--loglevel=debug` and `trace` add, and `--logformat=json`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::common::deploy::TempDir;
use crate::common::{
    connect, raw_upgrade, rawhttp, recv_text, recv_until_close, send_text, within, BinServer, Proc, STEP,
};

/// The first log line that contains every one of `parts`, waiting for it.
async fn line(p: &Proc, parts: &[&str]) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(l) = p.log().lines().find(|l| parts.iter().all(|x| l.contains(x))) {
            return l.to_owned();
        }
        assert!(Instant::now() < deadline, "no line with {parts:?}; log:\n{}", p.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn has(line: &str, fields: &[&str]) {
    for f in fields {
        assert!(line.contains(f), "{f:?} missing from:\n{line}");
    }
}

/// A directory of scripts, each `(name, body)` made executable.
fn scripts(tag: &str, list: &[(&str, &str)]) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(tag);
    for (name, body) in list {
        let path = dir.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

#[tokio::test]
async fn a_client_close_is_logged_with_its_code_and_the_start_line_says_who() {
    let server = BinServer::start(&["cat"]);
    let mut req = server.url("/chat?room=1").into_client_request().expect("request");
    let origin = format!("http://{}", server.addr);
    req.headers_mut().insert("origin", origin.parse().expect("origin"));
    req.headers_mut()
        .insert("user-agent", "access-test/1".parse().expect("ua"));
    let (mut ws, _) = within(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect");
    send_text(&mut ws, "hello").await;
    assert_eq!(recv_text(&mut ws).await, "hello");
    let bye = CloseFrame {
        code: CloseCode::Library(4000),
        reason: "bye".into(),
    };
    within(STEP, ws.close(Some(bye))).await.expect("close");
    while within(STEP, ws.next()).await.is_some() {}

    let start = line(&server, &["session started"]).await;
    has(
        &start,
        &[
            "wsbridge::access",
            "conn=1 ",
            "peer=127.0.0.1:",
            r#"path="/chat""#,
            r#"query="room=1""#,
            &format!(r#"origin="{origin}""#),
            r#"user_agent="access-test/1""#,
            "pid=",
        ],
    );
    let end = line(&server, &["session ended"]).await;
    has(
        &end,
        &[
            "conn=1 ",
            r#"path="/chat""#,
            "ended_by=client ",
            "exit=0 ",
            "close_received=4000 ",
            r#"close_received_reason="bye""#,
            "close_sent=4000 ",
            "msgs_in=1 bytes_in=5 msgs_out=1 bytes_out=5",
            "duration_ms=",
        ],
    );
    // The connection's span is not printed on access lines: each fact once.
    assert_eq!(end.matches("path=").count(), 1, "{end}");
    assert_eq!(end.matches("peer=").count(), 1, "{end}");
}

#[tokio::test]
async fn a_program_exit_is_logged_with_its_status_and_the_1011_sent() {
    let server = BinServer::start(&["sh", "-c", "echo last; exit 3"]);
    let mut ws = connect(&server.url("/")).await;
    let (_, code, reason) = recv_until_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Error, "exit status 3"));
    let end = line(&server, &["session ended"]).await;
    has(
        &end,
        &[
            "ended_by=program ",
            "exit=3 ",
            "close_sent=1011 ",
            r#"close_sent_reason="exit status 3""#,
            "msgs_out=1 bytes_out=4",
        ],
    );
}

#[tokio::test]
async fn a_client_that_vanishes_is_told_apart_from_a_program_exit() {
    let server = BinServer::start(&["cat"]);
    let tcp = raw_upgrade(server.addr, "/", b"").await;
    line(&server, &["session started"]).await;
    // Gone without a Close frame: the socket is reset (SO_LINGER 0), as when a laptop
    // lid closes or a process is killed.
    let std = tcp.into_std().expect("std socket");
    socket_linger_zero(&std);
    drop(std);
    let end = line(&server, &["session ended"]).await;
    has(&end, &["ended_by=vanished "]);
    assert!(!end.contains("close_sent") && !end.contains("close_received"), "{end}");
}

fn socket_linger_zero(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a linger struct of the size given.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt SO_LINGER");
}

#[tokio::test]
async fn a_ping_timeout_is_logged_as_ended_by_ping() {
    let server = BinServer::start(&["--pingms=100", "cat"]);
    // A client that never reads, so never answers a ping.
    let _tcp = raw_upgrade(server.addr, "/", b"").await;
    let end = line(&server, &["session ended"]).await;
    has(
        &end,
        &[
            "ended_by=ping ",
            "close_sent=1001 ",
            r#"close_sent_reason="ping timeout""#,
        ],
    );
}

#[tokio::test]
async fn an_idle_timeout_is_logged_as_ended_by_idle() {
    let server = BinServer::start(&["--idletimeout=200ms", "cat"]);
    let mut ws = connect(&server.url("/")).await;
    let (_, code, _) = recv_until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Away);
    let end = line(&server, &["session ended"]).await;
    has(
        &end,
        &[
            "ended_by=idle ",
            "close_sent=1001 ",
            r#"close_sent_reason="idle timeout""#,
        ],
    );
}

#[tokio::test]
async fn sigterm_ends_sessions_as_ended_by_shutdown() {
    let mut server = BinServer::start(&["cat"]);
    let mut ws = connect(&server.url("/")).await;
    line(&server, &["session started"]).await;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let (_, code, _) = recv_until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Away);
    let end = line(&server, &["session ended"]).await;
    has(
        &end,
        &[
            "ended_by=shutdown ",
            "close_sent=1001 ",
            r#"close_sent_reason="server shutting down""#,
        ],
    );
    assert!(server.wait_exit(STEP).await.success(), "{}", server.log());
}

#[tokio::test]
async fn refusals_are_logged_with_their_reason_and_the_refused_origin() {
    let www = TempDir::new("access-www");
    std::fs::write(www.path("index.html"), "hello\n").expect("write");
    let dir = format!("--staticdir={}", www.0.display());
    let server = BinServer::start(&["--maxforks=1", &dir, "cat"]);
    let addr = server.addr;

    // A page on about:blank (or a sandboxed frame) sends `Origin: null`.
    let raw = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: null\r\n\r\n"
    );
    assert_eq!(rawhttp::send(addr, raw.as_bytes(), false).await.status, 403);
    let refused = line(&server, &["upgrade refused", r#"path="/ws""#]).await;
    has(
        &refused,
        &[
            r#"origin="null""#,
            "status=403 ",
            r#"reason="origin null is not allowed"#,
        ],
    );

    assert_eq!(rawhttp::get(addr, "/missing").await.status, 404);
    let missing = line(&server, &["request", r#"path="/missing""#]).await;
    has(&missing, &["method=GET", "status=404 ", r#"reason="not found""#]);

    // The one --maxforks slot is taken: the next upgrade gets 429.
    let _first = connect(&server.url("/")).await;
    line(&server, &["session started"]).await;
    let raw = raw.replace("Origin: null\r\n", "");
    assert_eq!(rawhttp::send(addr, raw.as_bytes(), false).await.status, 429);
    let busy = line(&server, &["upgrade refused", "status=429"]).await;
    has(&busy, &["--maxforks"]);
    assert!(!busy.contains("origin="), "no Origin header, no origin field: {busy}");

    let got = rawhttp::get(addr, "/index.html").await;
    assert_eq!((got.status, got.text().as_str()), (200, "hello\n"));
    let served = line(&server, &["request", r#"path="/index.html""#]).await;
    has(&served, &["handler=static ", "status=200 ", "bytes=6 ", "duration_ms="]);
    assert!(!served.contains("cut="), "{served}");
}

#[tokio::test]
async fn access_lines_name_the_user_the_access_checks_found() {
    // The hook lets alice in and refuses anyone who asks for /private.
    let hooks = scripts(
        "access-hook",
        &[(
            "hook.sh",
            "case \"$REQUEST_URI\" in /private*) exit 1;; esac; echo REMOTE_USER=alice",
        )],
    );
    let www = TempDir::new("access-hook-www");
    std::fs::write(www.path("index.html"), "hello\n").expect("write");
    let server = BinServer::start(&[
        &format!("--authcmd={}", hooks.path("hook.sh").display()),
        "--authcmd-http",
        &format!("--staticdir={}", www.0.display()),
        "cat",
    ]);
    let mut ws = connect(&server.url("/chat")).await;
    send_text(&mut ws, "hi").await;
    assert_eq!(recv_text(&mut ws).await, "hi");
    within(STEP, ws.close(None)).await.expect("close");
    has(&line(&server, &["session started"]).await, &[r#"user="alice""#]);
    has(
        &line(&server, &["session ended"]).await,
        &[r#"user="alice""#, "ended_by=client "],
    );

    assert_eq!(rawhttp::get(server.addr, "/index.html").await.status, 200);
    let served = line(&server, &["request", r#"path="/index.html""#]).await;
    has(&served, &[r#"user="alice""#, "status=200 "]);

    assert_eq!(rawhttp::get(server.addr, "/private").await.status, 403);
    let refused = line(&server, &["request", r#"path="/private""#]).await;
    has(&refused, &["status=403 ", "reason="]);
    assert!(!refused.contains("user="), "{refused}");
}

/// Two CGI scripts that write a line to stderr: one exits 3 after a whole answer, the
/// other is killed after its headers.
fn cgi_dir() -> TempDir {
    scripts(
        "access-cgi",
        &[
            (
                "three.cgi",
                "echo 'script three says hi' >&2; printf 'Content-Type: text/plain\\n\\nhi\\n'; exit 3",
            ),
            (
                "ok.cgi",
                "echo 'script ok says hi' >&2; printf 'Content-Type: text/plain\\n\\nok\\n'",
            ),
            (
                "dies.cgi",
                "printf 'Content-Type: text/plain\\n\\npartial output'; kill -9 $$",
            ),
        ],
    )
}

#[tokio::test]
async fn cgi_runs_are_logged_with_their_exit_and_a_cut_off_answer_as_cut_off() {
    let cgi = cgi_dir();
    let server = BinServer::start(&[&format!("--cgidir={}", cgi.0.display())]);
    let got = rawhttp::get(server.addr, "/three.cgi").await;
    assert_eq!((got.status, got.text().as_str()), (200, "hi\n"));
    let ran = line(&server, &["request", r#"path="/three.cgi""#]).await;
    has(&ran, &["handler=cgi ", "status=200 ", "bytes=3 ", "exit=3"]);
    assert!(!ran.contains("cut="), "{ran}");

    let got = rawhttp::get(server.addr, "/dies.cgi").await;
    assert!(!got.complete, "the answer was cut off: {got:?}");
    let cut = line(&server, &["wsbridge::access", r#"path="/dies.cgi""#]).await;
    has(&cut, &["request cut off", "status=200 ", "exit=SIGKILL", "cut=killed"]);
}

#[tokio::test]
async fn each_request_on_a_keep_alive_connection_names_its_own_path_once() {
    let cgi = cgi_dir();
    let server = BinServer::start(&[&format!("--cgidir={}", cgi.0.display())]);
    let addr = server.addr;
    let raw = format!(
        "GET /ok.cgi HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /three.cgi HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let answers = String::from_utf8_lossy(&rawhttp::send_raw(addr, raw.as_bytes()).await).into_owned();
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 2, "{answers}");
    let first = line(&server, &["request", r#"path="/ok.cgi""#]).await;
    let second = line(&server, &["request", r#"path="/three.cgi""#]).await;
    has(&first, &["conn=1 "]);
    has(&second, &["conn=1 "]);
    // The scripts' stderr lines carry their own request's path, and only that one.
    let said = line(&server, &["script three says hi"]).await;
    has(&said, &[r#"path="/three.cgi""#]);
    for l in server.log().lines() {
        assert!(l.matches("path=").count() <= 1, "path repeated: {l}");
    }
}

#[tokio::test]
async fn debug_logs_message_sizes_without_payloads_and_trace_adds_them() {
    for (level, payload_shown) in [("debug", false), ("trace", true)] {
        let server = BinServer::start(&[&format!("--loglevel={level}"), "cat"]);
        let mut ws = connect(&server.url("/")).await;
        send_text(&mut ws, "secret-payload").await;
        assert_eq!(recv_text(&mut ws).await, "secret-payload");
        within(STEP, ws.close(None)).await.expect("close");
        line(&server, &["session ended"]).await;
        let inbound = line(&server, &["wsbridge::msg", "dir=in"]).await;
        has(&inbound, &["kind=text", "bytes=14", "framing=line"]);
        line(&server, &["wsbridge::msg", "dir=out", "bytes=14"]).await;
        let log = server.log();
        assert_eq!(
            log.contains("payload=secret-payload"),
            payload_shown,
            "--loglevel={level}:\n{log}"
        );
        if !payload_shown {
            assert!(!log.contains("secret-payload"), "a payload at {level}:\n{log}");
        }
    }
    // The default level has no per-message lines.
    let server = BinServer::start(&["cat"]);
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "quiet").await;
    assert_eq!(recv_text(&mut ws).await, "quiet");
    within(STEP, ws.close(None)).await.expect("close");
    line(&server, &["session ended"]).await;
    assert!(!server.log().contains("wsbridge::msg"), "{}", server.log());
}

#[cfg(feature = "json")]
#[tokio::test]
async fn json_lines_parse_and_carry_the_documented_fields() {
    let server = BinServer::start(&[
        "--logformat=json",
        "sh",
        "-c",
        "echo oops >&2; read x; echo \"$x\"; exit 3",
    ]);
    let mut ws = connect(&server.url("/p?q=1")).await;
    send_text(&mut ws, "hi").await;
    let (_, code, _) = recv_until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Error);
    line(&server, &["session ended"]).await;
    // A plain GET on a WebSocket endpoint: 426.
    let got = rawhttp::get(server.addr, "/nothing-here").await;
    assert_eq!(got.status, 426);
    line(&server, &["nothing-here"]).await;

    let mut objects = Vec::new();
    for l in server.log().lines() {
        if l.starts_with("wsbridge: ") {
            continue; // the startup announcement stays plain text (see LOGGING)
        }
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        // (`message` too, except on a program's stderr lines, whose text is `line`)
        for key in ["timestamp", "level", "target"] {
            assert!(v.get(key).is_some(), "no {key:?}: {l}");
        }
        objects.push(v);
    }
    let find = |message: &str| {
        objects
            .iter()
            .find(|v| v["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {objects:#?}"))
    };
    let start = find("session started");
    assert_eq!(start["target"], "wsbridge::access");
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["conn"], 1);
    assert_eq!(start["path"], "/p");
    assert_eq!(start["query"], "q=1");
    assert!(
        start["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{start}"
    );
    assert!(start["pid"].as_u64().is_some(), "{start}");
    let end = find("session ended");
    assert_eq!(end["ended_by"], "program");
    assert_eq!(end["exit"], "3");
    assert_eq!(end["close_sent"], 1011);
    assert_eq!(end["close_sent_reason"], "exit status 3");
    assert_eq!((end["msgs_in"].as_u64(), end["bytes_in"].as_u64()), (Some(1), Some(2)));
    assert_eq!(
        (end["msgs_out"].as_u64(), end["bytes_out"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(end["duration_ms"].as_u64().is_some(), "{end}");
    let miss = objects
        .iter()
        .find(|v| v["path"] == "/nothing-here")
        .expect("the 426's line");
    assert_eq!(
        (miss["message"].as_str(), miss["status"].as_u64()),
        (Some("request"), Some(426))
    );
    assert!(
        miss["reason"]
            .as_str()
            .is_some_and(|r| r.contains("WebSocket endpoint")),
        "{miss}"
    );
    assert_eq!(miss["method"], "GET");
    assert!(
        miss["bytes"].as_u64().is_some() && miss["duration_ms"].as_u64().is_some(),
        "{miss}"
    );
    // Lines inside a connection list its spans: the stderr line knows its request.
    let stderr = objects
        .iter()
        .find(|v| v["target"] == "wsbridge::stderr")
        .expect("the program's stderr line");
    assert_eq!(stderr["line"], "oops");
    assert_eq!(stderr["spans"][0]["name"], "conn");
    assert_eq!(stderr["spans"][1]["name"], "req");
    assert_eq!(stderr["spans"][1]["path"], "/p");
}

#[tokio::test]
async fn a_message_over_maxframesize_is_refused_with_the_sizes_in_the_reason() {
    let server = BinServer::start(&["--maxframesize=1000", "cat"]);
    let mut ws = connect(&server.url("/")).await;
    within(STEP, ws.send(Message::text("x".repeat(5000))))
        .await
        .expect("send");
    let (_, code, reason) = recv_until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Size);
    assert_eq!(reason, "message of 5000 bytes > --maxframesize 1000");
    let end = line(&server, &["session ended"]).await;
    has(&end, &["ended_by=error ", "close_sent=1009 "]);
}

#[tokio::test]
async fn output_lines_cut_into_pieces_warn_once_per_session() {
    let server = BinServer::start(&[
        "--maxframesize=10",
        "sh",
        "-c",
        "echo aaaaaaaaaaaaaaaaaaaaaaaaa; echo bbbbbbbbbbbbbbbbbbbbbbbbbbbb; echo short",
    ]);
    let mut ws = connect(&server.url("/")).await;
    let (got, code, _) = recv_until_close(&mut ws).await;
    assert_eq!(code, CloseCode::Normal);
    assert_eq!(got.len(), 3 + 3 + 1, "{got:?}");
    line(&server, &["session ended"]).await;
    let warned = server.log().matches("longer than --maxframesize").count();
    assert_eq!(warned, 1, "{}", server.log());
}
