//! `--subprotocol` negotiation (101 header, `WEBSOCKET_PROTOCOL`,
//! refusal) and `--pty` (line-buffered output, window size, no echo, Ctrl-D on close,
//! the stop ladder, `TERM=dumb` unless `--passenv` passes one, a readline program).

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// A handshake offering `offer` as Sec-WebSocket-Protocol (none when empty).
async fn connect_offering(
    url: &str,
    offer: &[&str],
) -> Result<(Ws, tokio_tungstenite::tungstenite::handshake::client::Response), tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().expect("request");
    for o in offer {
        req.headers_mut().append(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(o).expect("header value"),
        );
    }
    within(STEP, tokio_tungstenite::connect_async(req)).await
}

/// All text messages until the server closes.
async fn lines_until_close(ws: &mut Ws) -> Vec<String> {
    let (data, _, _) = recv_until_close(ws).await;
    data.into_iter()
        .filter_map(|m| match m {
            Message::Text(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_negotiation_picks_the_clients_first_listed_offer() {
    let server = TestServer::start(&["--subprotocol=chat.v2,chat.v1", "env"]).await;
    // The client prefers chat.v1 (first listed by the client), over two headers.
    let (mut ws, resp) = connect_offering(&server.url("/"), &["x.other, chat.v1", "chat.v2"])
        .await
        .expect("handshake");
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").map(|v| v.as_bytes()),
        Some(&b"chat.v1"[..])
    );
    let env = lines_until_close(&mut ws).await;
    assert!(env.iter().any(|l| l == "WEBSOCKET_PROTOCOL=chat.v1"), "{env:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_offer_with_nothing_in_common_is_refused() {
    let server = TestServer::start(&["--subprotocol=chat.v2,chat.v1", "env"]).await;
    match connect_offering(&server.url("/"), &["mqtt", "x"]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("chat.v2, chat.v1"), "{body}");
        }
        other => panic!("expected a 400, got {:?}", other.map(|(_, r)| r.status())),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_not_offered_is_accepted_without_one() {
    let server = TestServer::start(&["--subprotocol=chat.v1", "env"]).await;
    let (mut ws, resp) = connect_offering(&server.url("/"), &[]).await.expect("handshake");
    assert!(resp.headers().get("Sec-WebSocket-Protocol").is_none());
    let env = lines_until_close(&mut ws).await;
    assert!(env.iter().any(|l| l.starts_with("REMOTE_ADDR=")), "{env:?}");
    assert!(!env.iter().any(|l| l.starts_with("WEBSOCKET_PROTOCOL=")), "{env:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_lists_per_dir_path_fall_back_to_the_common_one() {
    let dir = format!("--dir={}", fixture("wsdir"));
    let server = TestServer::start(&[
        &dir,
        "--subprotocol=plain.v1",
        "--subprotocol=/sub/info.sh=info.v2,info.v1",
    ])
    .await;
    // The script with its own list answers from it…
    let (ws, resp) = connect_offering(&server.url("/sub/info.sh"), &["plain.v1, info.v1"])
        .await
        .expect("handshake");
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").map(|v| v.as_bytes()),
        Some(&b"info.v1"[..])
    );
    drop(ws);
    // …and refuses the common list's protocol, naming its own.
    match connect_offering(&server.url("/sub/info.sh"), &["plain.v1"]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("info.v2, info.v1"), "{body}");
        }
        other => panic!("expected a 400, got {:?}", other.map(|(_, r)| r.status())),
    }
    // A script without a list of its own uses the common one.
    let (_ws, resp) = connect_offering(&server.url("/echo.sh"), &["info.v1, plain.v1"])
        .await
        .expect("handshake");
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").map(|v| v.as_bytes()),
        Some(&b"plain.v1"[..])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_offers_are_ignored_without_the_flag() {
    // tungstenite's client refuses an answer without the protocol it offered (as browsers
    // do), so this handshake is written by hand to see what the server answers.
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(&["env"]).await;
    let mut tcp = within(STEP, tokio::net::TcpStream::connect(server.addr))
        .await
        .expect("connect");
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: chat.v1\r\n\r\n",
        server.addr
    );
    within(STEP, tcp.write_all(req.as_bytes())).await.expect("write");
    let head = read_head(&mut tcp).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-protocol"), "{head}");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let env = lines_until_close(&mut ws).await;
    assert!(!env.iter().any(|l| l.starts_with("WEBSOCKET_PROTOCOL=")), "{env:?}");
    server.stop().await;
}

/// examples/buffered.py, which never flushes: two lines, 3 s apart.
fn buffered_py() -> [String; 4] {
    [python().to_owned(), example("buffered.py"), "2".into(), "3".into()]
}

fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_makes_a_buffered_program_line_buffered() {
    let [py, script, n, delay] = buffered_py();
    let server = TestServer::start(&["--pty", &py, &script, &n, &delay]).await;
    let mut ws = connect(&server.url("/")).await;
    assert_eq!(within(Duration::from_secs(2), recv_text(&mut ws)).await, "tick 1");
    assert_eq!(recv_text(&mut ws).await, "tick 2");
    drop(ws);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pty_a_buffered_program_holds_its_output() {
    let [py, script, n, delay] = buffered_py();
    let server = TestServer::start(&[&py, &script, &n, &delay]).await;
    let mut ws = connect(&server.url("/")).await;
    let early = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
    assert!(early.is_err(), "output arrived before the program exited: {early:?}");
    assert_eq!(recv_text(&mut ws).await, "tick 1");
    assert_eq!(recv_text(&mut ws).await, "tick 2");
    drop(ws);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_window_size_defaults_and_follows_the_query() {
    let server = TestServer::start(&["--pty", "stty", "size"]).await;
    let mut ws = connect(&server.url("/")).await;
    assert_eq!(lines_until_close(&mut ws).await, ["24 80"]);
    let mut ws = connect(&server.url("/?rows=40&cols=100")).await;
    assert_eq!(lines_until_close(&mut ws).await, ["40 100"]);
    let refused = within(STEP, tokio_tungstenite::connect_async(server.url("/?rows=0"))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("expected a 400, got {:?}", other.map(|(_, r)| r.status())),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_does_not_echo_input() {
    let server = TestServer::start(&["--pty", "cat"]).await;
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "hi").await;
    assert_eq!(recv_text(&mut ws).await, "hi");
    let second = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    assert!(second.is_err(), "a second message (an echo?): {second:?}");
    send_text(&mut ws, "there").await;
    assert_eq!(recv_text(&mut ws).await, "there");
    drop(ws);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_client_close_sends_eof_then_the_ladder_and_term_is_set() {
    let marker = std::env::temp_dir().join(format!("wsbridge-pty-eof-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // `cat` ends on the terminal's EOF (Ctrl-D); only then is the marker written.
    let script = format!("echo \"$$ $TERM\"; cat; touch '{}'", marker.display());
    let server = TestServer::start(&["--pty", "sh", "-c", &script]).await;
    let mut ws = connect(&server.url("/")).await;
    let first = recv_text(&mut ws).await;
    let (pid, term) = first.split_once(' ').expect("pid and TERM");
    assert_eq!(term, "dumb");
    let pid: i32 = pid.parse().expect("pid");
    within(STEP, ws.close(None)).await.expect("close");
    assert!(gone_within(pid, LADDER).await, "pty program still running");
    assert!(marker.exists(), "the program did not see end of input");
    let _ = std::fs::remove_file(&marker);

    // A program that ignores its input is stopped by the ladder, as with pipes.
    let server2 = TestServer::start(&["--pty", "sh", "-c", "echo $$; while :; do sleep 1; done"]).await;
    let mut ws = connect(&server2.url("/")).await;
    let pid: i32 = recv_text(&mut ws).await.parse().expect("pid");
    within(STEP, ws.close(None)).await.expect("close");
    assert!(gone_within(pid, LADDER).await, "pty program survived the ladder");
    server.stop().await;
    server2.stop().await;
}

#[test]
fn pty_refuses_passstderr_and_lenprefix() {
    for (flag, named) in [("--passstderr", "--passstderr"), ("--framing=lenprefix", "lenprefix")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsbridge"))
            .args(["--port=0", "--pty", flag, "cat"])
            .output()
            .expect("run wsbridge");
        let err = String::from_utf8_lossy(&out.stderr);
        crate::common::assert_usage_error(out.status.code(), &err, named);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_merges_stderr_and_binary_gets_raw_terminal_bytes() {
    let server = TestServer::start(&["--pty", "sh", "-c", "echo out; echo err >&2"]).await;
    let mut ws = connect(&server.url("/")).await;
    assert_eq!(lines_until_close(&mut ws).await, ["out", "err"]);
    server.stop().await;

    let server = TestServer::start(&["--pty", "--binary", "sh", "-c", "echo x"]).await;
    let mut ws = connect(&server.url("/")).await;
    let (data, _, _) = recv_until_close(&mut ws).await;
    let bytes: Vec<u8> = data
        .into_iter()
        .flat_map(|m| match m {
            Message::Binary(b) => b.to_vec(),
            other => panic!("expected binary, got {other:?}"),
        })
        .collect();
    assert_eq!(bytes, b"x\r\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_example_reports_the_agreed_subprotocol() {
    let server = TestServer::start(&["--subprotocol=chat.v2,chat.v1", &example("protocol.sh")]).await;
    let (mut ws, _) = connect_offering(&server.url("/"), &["chat.v1"])
        .await
        .expect("handshake");
    assert_eq!(recv_text(&mut ws).await, "speaking chat.v1");
    send_text(&mut ws, "hi").await;
    assert_eq!(recv_text(&mut ws).await, "hi");
    drop(ws);
    server.stop().await;
}

/// A readline program on `--pty` (`bc`, or Python's interactive prompt where there is no
/// `bc`): with `TERM=dumb` it sends no terminal escapes (bracketed paste `ESC[?2004h`,
/// which readline 8.1+ turns on for other terminals), so a message round-trips as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_readline_program_sends_no_escape_sequences() {
    let (argv, input, answer) = match std::path::Path::new("/usr/bin/bc").exists() {
        true => (vec!["/usr/bin/bc", "-q"], "1+2", "3"),
        false => (vec![python(), "-i", "-q"], "print(6*7)", "42"),
    };
    let server = TestServer::start(&[&["--pty"][..], &argv].concat()).await;
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, input).await;
    let mut seen = Vec::new();
    loop {
        let line = recv_text(&mut ws).await;
        let done = line.ends_with(answer);
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(
        seen.iter().all(|l| !l.contains('\x1b')),
        "terminal escapes sent as messages: {seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some(answer), "{seen:?}");
    drop(ws);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_term_comes_from_passenv_when_passed() {
    let server = BinServer::start_with_env(
        &["--pty", "--passenv=PATH,TERM", "sh", "-c", "echo \"$TERM\""],
        &[("TERM", "xterm-256color")],
    );
    let mut ws = connect(&server.url("/")).await;
    assert_eq!(recv_text(&mut ws).await, "xterm-256color");
}
