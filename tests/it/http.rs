//! HTTP answers on the WebSocket port: plain requests, handshake refusals, origin policy
//! and extra headers. Raw requests over TCP so every byte of the answer is visible.

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
const V13: &str = "Sec-WebSocket-Version: 13\r\n";
const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n";

/// Sends `head` (with `Connection: close` semantics left to the caller) and reads the
/// status line, headers and body of the answer.
async fn exchange(server: &TestServer, head: &str) -> (u16, String, String) {
    let mut tcp = within(STEP, TcpStream::connect(server.addr)).await.expect("connect");
    within(STEP, tcp.write_all(head.as_bytes())).await.expect("write");
    let mut buf = Vec::new();
    // Read until the head is complete and the body (Content-Length) is in.
    loop {
        let mut chunk = [0u8; 4096];
        let n = within(STEP, tcp.read(&mut chunk)).await.expect("read");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((h, body)) = text.split_once("\r\n\r\n") {
            let len = h
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len || n == 0 {
                let status = h[9..12].parse().expect("status code");
                return (status, h.to_owned(), body.to_owned());
            }
        }
        assert!(
            n > 0,
            "connection closed before a full answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
    }
}

fn req(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_request_gets_426_with_upgrade_header_and_one_line() {
    let server = TestServer::start(&[
        "--header=X-All: all",
        "--header-http=X-Http: http",
        "--header-ws=X-Ws: ws",
        "cat",
    ])
    .await;
    let host = server.addr.to_string();
    let (status, head, body) = exchange(&server, &req("/", &host, "")).await;
    assert_eq!(status, 426);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains("x-all: all") && head.contains("x-http: http") && !head.contains("x-ws"),
        "{head}"
    );
    assert_eq!(body.lines().count(), 1, "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_errors_get_defined_answers() {
    let server = TestServer::start(&["--header-ws=X-Ws: ws", "cat"]).await;
    let host = server.addr.to_string();
    let post = format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n{UPGRADE}{KEY}{V13}\r\n");
    for (what, request, want) in [
        ("missing key", req("/", &host, &format!("{UPGRADE}{V13}")), 400),
        (
            "bad key",
            req("/", &host, &format!("{UPGRADE}{V13}Sec-WebSocket-Key: abc\r\n")),
            400,
        ),
        ("two keys", req("/", &host, &format!("{UPGRADE}{V13}{KEY}{KEY}")), 400),
        (
            "version 8",
            req("/", &host, &format!("{UPGRADE}{KEY}Sec-WebSocket-Version: 8\r\n")),
            426,
        ),
        ("POST", post, 405),
        (
            "HTTP/1.0",
            format!("GET / HTTP/1.0\r\nHost: {host}\r\n{UPGRADE}{KEY}{V13}\r\n"),
            400,
        ),
    ] {
        let (status, head, body) = exchange(&server, &request).await;
        assert_eq!(status, want, "{what}: {head}\n{body}");
        assert!(
            head.to_ascii_lowercase().contains("x-ws: ws"),
            "{what}: --header-ws on refusals"
        );
        assert_eq!(body.lines().count(), 1, "{what}: one-line body, got {body:?}");
        if want == 426 {
            assert!(head.contains("sec-websocket-version: 13"), "{what}: {head}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_by_default() {
    let server = TestServer::start(&["cat"]).await;
    let host = server.addr.to_string();
    let ws = format!("{UPGRADE}{KEY}{V13}");
    let same = format!("{ws}Origin: http://{host}\r\n");
    assert_eq!(exchange(&server, &req("/", &host, &same)).await.0, 101);
    assert_eq!(
        exchange(&server, &req("/", &host, &ws)).await.0,
        101,
        "no Origin: not a browser"
    );
    let evil = format!("{ws}Origin: http://evil.example\r\n");
    let (status, _, body) = exchange(&server, &req("/", &host, &evil)).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("http://evil.example") && body.contains("--origin"),
        "{body}"
    );
    let null = format!("{ws}Origin: null\r\n");
    assert_eq!(exchange(&server, &req("/", &host, &null)).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_list_and_star() {
    let ws = format!("{UPGRADE}{KEY}{V13}");
    let server = TestServer::start(&["--origin=board", "cat"]).await;
    let host = "board:8080";
    let page = format!("{ws}Origin: http://board\r\n");
    assert_eq!(
        exchange(&server, &req("/", host, &page)).await.0,
        101,
        "page on :80, socket on :8080"
    );
    let other = format!("{ws}Origin: http://other\r\n");
    assert_eq!(exchange(&server, &req("/", host, &other)).await.0, 403);
    let star = TestServer::start(&["--origin=*", "cat"]).await;
    assert_eq!(exchange(&star, &req("/", host, &other)).await.0, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_upgrade_carries_ws_headers() {
    let server = TestServer::start(&[
        "--header=X-All: all",
        "--header-ws=X-Ws: ws",
        "--header-http=X-Http: h",
        "cat",
    ])
    .await;
    let host = server.addr.to_string();
    let (status, head, _) = exchange(&server, &req("/", &host, &format!("{UPGRADE}{KEY}{V13}"))).await;
    assert_eq!(status, 101);
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(
        head.contains("x-all: all") && head.contains("x-ws: ws") && !head.contains("x-http"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_gets_431() {
    let server = TestServer::start(&["cat"]).await;
    let host = server.addr.to_string();
    let big = format!("X-Big: {}\r\n", "a".repeat(40 * 1024));
    let (status, _, _) = exchange(&server, &req("/", &host, &big)).await;
    assert_eq!(status, 431);
}

/// Sends raw bytes and returns the status of the answer, or `None` when the server closed
/// the connection without one.
async fn status_of(server: &TestServer, raw: &[u8]) -> Option<u16> {
    let mut tcp = within(STEP, TcpStream::connect(server.addr)).await.expect("connect");
    within(STEP, tcp.write_all(raw)).await.expect("write");
    let mut buf = Vec::new();
    let _ = within(STEP, async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = tcp.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let head = String::from_utf8_lossy(&buf);
    head.get(9..12).and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_defined_answer() {
    let server = TestServer::start(&["cat"]).await;
    let host = server.addr.to_string();
    let ws = format!("{UPGRADE}{KEY}{V13}");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "missing Host",
            format!("GET / HTTP/1.1\r\n{ws}\r\n").into_bytes(),
            &[400],
        ),
        (
            "two Host headers",
            format!("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n{ws}\r\n").into_bytes(),
            &[400],
        ),
        (
            "too many headers",
            req("/", &host, &format!("{ws}{many}")).into_bytes(),
            &[431],
        ),
        (
            "huge request line",
            req(&format!("/{}", "a".repeat(70_000)), &host, &ws).into_bytes(),
            &[414, 431],
        ),
        (
            "NUL in a header value",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-A: a\0b\r\n{ws}\r\n").into_bytes(),
            &[400],
        ),
        (
            "bare LF inside a value",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-A: a\rb\r\n{ws}\r\n").into_bytes(),
            &[400],
        ),
        (
            "obs-fold continuation",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-A: a\r\n b\r\n{ws}\r\n").into_bytes(),
            &[400],
        ),
        ("not HTTP at all", b"\x16\x03\x01\x00\x05hello\r\n\r\n".to_vec(), &[400]),
    ];
    for (what, raw, want) in cases {
        let got = status_of(&server, &raw).await;
        assert!(
            got.is_some_and(|s| want.contains(&s)),
            "{what}: got {got:?}, want one of {want:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_is_served_by_its_path() {
    let server = TestServer::start(&["env"]).await;
    let host = server.addr.to_string();
    let head = format!("GET http://{host}/abs/path?q=1 HTTP/1.1\r\nHost: {host}\r\n{UPGRADE}{KEY}{V13}\r\n");
    let (status, _, _) = exchange(&server, &head).await;
    assert_eq!(status, 101);
}

/// An upstream that answers every request with `200 upstream`, for the tests that only
/// look at whether a request got through to it.
async fn answering_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nupstream\n";
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// One way a request is served, and how to ask for it.
struct Handler {
    name: &'static str,
    path: &'static str,
    /// Header lines the request needs besides Host.
    extra: String,
    /// The answer to a good request.
    ok: u16,
}

/// A server with every kind of handler (PROGRAM for upgrades, `--cgidir`, `--staticdir`,
/// `--upstream`), and a path for each.
async fn every_handler() -> (TestServer, Vec<Handler>) {
    let up = answering_upstream().await;
    let server = TestServer::start(&[
        &format!("--cgidir={}", fixture("cgi-bin")),
        &format!("--staticdir={}", fixture("wsdir")),
        &format!("--upstream=http://{up}"),
        "cat",
    ])
    .await;
    let plain = |name, path| Handler {
        name,
        path,
        extra: String::new(),
        ok: 200,
    };
    let handlers = vec![
        Handler {
            name: "websocket",
            path: "/",
            extra: format!("{UPGRADE}{KEY}{V13}"),
            ok: 101,
        },
        plain("cgi", "/env.cgi"),
        plain("static", "/echo.sh"),
        plain("upstream", "/elsewhere"),
    ];
    (server, handlers)
}

/// `GET` for `h` in `version` with one `Host` line per value (raw bytes, so any value
/// can be sent).
fn with_hosts(h: &Handler, version: &str, hosts: &[&[u8]]) -> Vec<u8> {
    let mut raw = format!("GET {} {version}\r\n", h.path).into_bytes();
    for host in hosts {
        raw.extend_from_slice(b"Host: ");
        raw.extend_from_slice(host);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(h.extra.as_bytes());
    raw.extend_from_slice(b"\r\n");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_lines_get_400() {
    let (server, handlers) = every_handler().await;
    for h in &handlers {
        let one = status_of(&server, &with_hosts(h, "HTTP/1.1", &[b"board"])).await;
        assert_eq!(one, Some(h.ok), "{}: one Host", h.name);
        for hosts in [&[&b"board"[..], b"board"][..], &[b"board", b"evil"], &[b"", b""]] {
            let got = status_of(&server, &with_hosts(h, "HTTP/1.1", hosts)).await;
            let shown: Vec<_> = hosts.iter().map(|v| String::from_utf8_lossy(v)).collect();
            assert_eq!(got, Some(400), "{}: Host lines {shown:?}", h.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_1_without_host_gets_400_but_http_1_0_is_served() {
    let (server, handlers) = every_handler().await;
    for h in &handlers {
        let got = status_of(&server, &with_hosts(h, "HTTP/1.1", &[])).await;
        assert_eq!(got, Some(400), "{}: HTTP/1.1 without Host", h.name);
    }
    // A WebSocket upgrade needs HTTP/1.1 anyway; the plain handlers serve HTTP/1.0.
    for h in handlers.iter().filter(|h| h.ok == 200) {
        let got = status_of(&server, &with_hosts(h, "HTTP/1.0", &[])).await;
        assert_eq!(got, Some(200), "{}: HTTP/1.0 without Host", h.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_values_that_are_not_host_and_port_get_400() {
    let (server, handlers) = every_handler().await;
    let good: &[&[u8]] = &[
        b"",
        b"board",
        b"board:8080",
        b"board:",
        b"Board.Example.",
        b"127.0.0.1:80",
        b"[::1]",
        b"[::1]:8080",
        b"[fe80::1%25eth0]",
        b"[v1.fe80::a+en1]:1",
        b"xn--bcher-kva.example",
        b"a-b_c~d!e$f&g'h(i)j*k+l;m=n%41",
    ];
    let bad: &[&[u8]] = &[
        b"board example",
        b"board\texample",
        b"board,evil",
        b"board/path",
        b"user@board",
        b"board:80:80",
        b"board:http",
        b":80",
        b"[::1",
        b"[::1]x",
        b"[::1]:x",
        b"[]",
        b"[::1]]",
        b"bo\"ard",
        b"board\\",
        b"b\xc3\xb6rd",
        b"board\x80",
        b"<script>",
    ];
    for h in &handlers {
        for host in good {
            let got = status_of(&server, &with_hosts(h, "HTTP/1.1", &[host])).await;
            assert_eq!(got, Some(h.ok), "{}: Host {:?}", h.name, String::from_utf8_lossy(host));
        }
        for host in bad {
            let got = status_of(&server, &with_hosts(h, "HTTP/1.1", &[host])).await;
            assert_eq!(got, Some(400), "{}: Host {:?}", h.name, String::from_utf8_lossy(host));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_other_than_chunked_get_501() {
    let (server, handlers) = every_handler().await;
    let body = "3\r\nabc\r\n0\r\n\r\n";
    let with_te = |h: &Handler, te: &str| {
        let method = if h.name == "cgi" || h.name == "upstream" {
            "POST"
        } else {
            "GET"
        };
        format!(
            "{method} {} HTTP/1.1\r\nHost: board\r\n{}Transfer-Encoding: {te}\r\n\r\n{body}",
            h.path, h.extra
        )
    };
    // hyper itself answers 400 when the last coding is not chunked; the rest reach us.
    let cases: &[(&str, Option<u16>)] = &[
        ("chunked", None),
        ("Chunked", None),
        (", chunked", None),
        ("gzip, chunked", Some(501)),
        ("GZIP,chunked", Some(501)),
        ("gzip\r\nTransfer-Encoding: chunked", Some(501)),
        ("x-custom;q=1, chunked", Some(501)),
        ("identity, chunked", Some(501)),
        ("gzip", Some(400)),
        ("chunked, gzip", Some(400)),
    ];
    for h in &handlers {
        for (te, want) in cases {
            let want = want.unwrap_or(h.ok);
            let (status, head, answer) = exchange(&server, &with_te(h, te)).await;
            assert_eq!(status, want, "{}: Transfer-Encoding: {te:?}: {head}", h.name);
            if want == 501 {
                assert_eq!(answer.lines().count(), 1, "{}: {te:?}: {answer:?}", h.name);
                assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
            }
        }
    }
}
