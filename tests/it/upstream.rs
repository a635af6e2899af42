//! `--upstream`: requests wsbridge does not serve itself go to a real separate HTTP
//! server (Python's http.server with a 6 MB file, and a small header-echo server in the
//! test), streamed both ways, with hop-by-hop headers removed and the forwarded headers
//! written afresh (or, behind a trusted proxy, appended to);
//! an unreachable upstream is a 502. The WebSocket keeps working on the same port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::common::rawhttp::*;
use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIG: usize = 6_000_000;

/// `python3 -m http.server` on 127.0.0.1 with an OS-chosen port; killed on drop.
struct PyServer {
    addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl PyServer {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("wsbridge-upstream-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let big: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.join("big.bin"), big).unwrap();
        std::fs::write(dir.join("legacy.html"), "<p>legacy page</p>\n").unwrap();
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed for this test");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("Serving HTTP on 127.0.0.1 port ") {
                    let _ = tx.send(rest.split(' ').next().unwrap_or("").to_owned());
                }
            }
        });
        let port = match rx.recv_timeout(STEP) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("python3 -m http.server did not announce its port");
            }
        };
        PyServer {
            addr: format!("127.0.0.1:{port}").parse().expect("port"),
            child,
            dir,
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An upstream that answers every request with its own request head and body, so the
/// test sees exactly what wsbridge forwarded.
async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let chunked = head.contains("transfer-encoding: chunked");
                while (chunked && !buf[head_end..].ends_with(b"0\r\n\r\n")) || (!chunked && buf.len() < head_end + len)
                {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = if chunked { &buf[..] } else { &buf[..head_end + len] };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nX-Upstream: yes\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(resp.as_bytes()).await;
                let _ = tcp.write_all(body).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_stream_from_a_real_server() {
    let py = PyServer::start();
    let www = std::env::temp_dir().join(format!("wsbridge-upstream-www-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&www);
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<p>local page</p>\n").unwrap();
    let server = TestServer::start(&[
        &format!("--upstream=http://{}", py.addr),
        &format!("--staticdir={}", www.display()),
        "--header-http=X-Http: h",
        "cat",
    ])
    .await;
    let a = get(server.addr, "/big.bin").await;
    assert_eq!(a.status, 200);
    assert!(a.complete);
    assert_eq!(a.body.len(), BIG);
    assert!(
        a.body.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8),
        "content changed"
    );
    assert_eq!(a.header("x-http"), Some("h"), "--header-http on forwarded answers too");
    let a = get(server.addr, "/legacy.html").await;
    assert_eq!((a.status, a.text().as_str()), (200, "<p>legacy page</p>\n"));
    let a = get(server.addr, "/").await;
    assert_eq!(a.text(), "<p>local page</p>\n", "wsbridge's own files come first");
    assert_eq!(get(server.addr, "/missing").await.status, 404, "the upstream's 404");
    let a = request(server.addr, "HEAD", "/big.bin", "").await;
    assert_eq!((a.status, a.header("content-length")), (200, Some("6000000")));
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "still a websocket").await;
    assert_eq!(recv_text(&mut ws).await, "still a websocket");
    let _ = std::fs::remove_dir_all(&www);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_bodies() {
    let up = echo_upstream().await;
    let server = TestServer::start(&[&format!("--upstream=http://{up}/"), "cat"]).await;
    let body = "x".repeat(200_000);
    let raw = format!(
        "POST /api/thing?q=1 HTTP/1.1\r\nHost: board.example:8080\r\nConnection: close, X-Private\r\nX-Private: secret\r\nX-Forwarded-For: 10.9.8.7\r\nTE: trailers\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let a = send(server.addr, raw.as_bytes(), false).await;
    assert_eq!(a.status, 200);
    let seen = a.text();
    let (head, got_body) = seen.split_once("\r\n\r\n").expect("echoed head");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("post /api/thing?q=1 http/1.1\r\n"), "{head}");
    assert!(head.contains("host: board.example:8080"), "{head}");
    assert!(
        head.contains("x-forwarded-for: 127.0.0.1\r\n") && !head.contains("10.9.8.7"),
        "the client's own list is dropped: {head}"
    );
    assert!(head.contains("x-forwarded-proto: http"), "{head}");
    assert!(head.contains("x-forwarded-host: board.example:8080"), "{head}");
    assert!(
        !head.contains("x-private") && !head.contains("te: trailers"),
        "hop-by-hop: {head}"
    );
    assert_eq!(got_body.len(), body.len());
    assert_eq!(a.header("x-upstream"), Some("yes"));
    assert_eq!(a.header("x-drop"), None, "hop-by-hop fields of the answer go too");
    assert_eq!(a.header("keep-alive"), None);

    let chunked =
        "POST /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let a = send(server.addr, chunked.as_bytes(), false).await;
    assert_eq!(a.status, 200);
    assert!(a.text().contains("transfer-encoding: chunked"), "{}", a.text());
    assert!(a.text().ends_with("3\r\nabc\r\n0\r\n\r\n"), "{:?}", a.text());
}

/// The request head the echo upstream got for `raw`, lower-cased.
async fn head_seen_by_upstream(server: &TestServer, raw: &str) -> String {
    let a = send(server.addr, raw.as_bytes(), false).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let seen = a.text().to_ascii_lowercase();
    seen.split_once("\r\n\r\n").expect("echoed head").0.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_strip_the_host_the_upstream_sees() {
    let up = echo_upstream().await;
    let server = TestServer::start(&[&format!("--upstream=http://{up}"), "cat"]).await;
    // Each asks to close, so the answer ends the exchange.
    for connection in ["close, Host", "host, close", "Host\r\nConnection: close"] {
        let raw = format!("GET /page HTTP/1.1\r\nHost: board.example\r\nConnection: {connection}\r\n\r\n");
        let head = head_seen_by_upstream(&server, &raw).await;
        assert!(
            head.contains("\r\nhost: board.example\r\n"),
            "Connection: {connection}: {head}"
        );
        assert!(!head.contains(&up.to_string()), "Connection: {connection}: {head}");
    }
    let head = head_seen_by_upstream(&server, "GET /page HTTP/1.0\r\n\r\n").await;
    assert!(
        head.lines().any(|l| l == format!("host: {up}")),
        "HTTP/1.0 without Host: the upstream's own: {head}"
    );
}

/// The values of `name` in an echoed head, one per line.
fn values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_forwarded_headers_are_replaced_by_fresh_ones() {
    let up = echo_upstream().await;
    let spoof = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.7\r\nForwarded: for=6.6.6.6;host=evil.example\r\n\
                 X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n\
                 X-Forwarded-Prefix: /evil\r\n";
    // Nobody trusted, and a trusted range the client is not in: the same.
    for trusted in [None, Some("--trusted-proxy=10.0.0.0/8")] {
        let upstream = format!("--upstream=http://{up}");
        let mut args = vec![upstream.as_str(), "cat"];
        args.extend(trusted);
        let server = TestServer::start(&args).await;
        let raw = format!("GET /p HTTP/1.1\r\nHost: board.example:8080\r\nConnection: close\r\n{spoof}\r\n");
        let head = head_seen_by_upstream(&server, &raw).await;
        assert_eq!(values(&head, "x-forwarded-for"), ["127.0.0.1"], "{trusted:?}: {head}");
        assert_eq!(values(&head, "x-forwarded-proto"), ["http"], "{trusted:?}: {head}");
        assert_eq!(
            values(&head, "x-forwarded-host"),
            ["board.example:8080"],
            "{trusted:?}: {head}"
        );
        assert_eq!(
            values(&head, "forwarded"),
            [r#"for=127.0.0.1;host="board.example:8080";proto=http"#],
            "{trusted:?}: {head}"
        );
        assert!(
            !head.contains("6.6.6") && !head.contains("evil") && !head.contains("x-forwarded-port"),
            "{trusted:?}: the client's own went: {head}"
        );

        let raw = format!("GET /p HTTP/1.1\r\nHost: \r\nConnection: close\r\n{spoof}\r\n");
        let head = head_seen_by_upstream(&server, &raw).await;
        assert_eq!(values(&head, "x-forwarded-host"), [""; 0], "empty Host: {head}");
        assert_eq!(
            values(&head, "forwarded"),
            ["for=127.0.0.1;proto=http"],
            "empty Host: {head}"
        );
        let head = head_seen_by_upstream(&server, &format!("GET /p HTTP/1.0\r\n{spoof}\r\n")).await;
        assert_eq!(values(&head, "x-forwarded-host"), [""; 0], "no Host: {head}");
        assert_eq!(
            values(&head, "forwarded"),
            ["for=127.0.0.1;proto=http"],
            "no Host: {head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_forwarded_headers_are_kept_and_the_hop_appended() {
    let up = echo_upstream().await;
    let server = TestServer::start(&[&format!("--upstream=http://{up}"), "--trusted-proxy=127.0.0.1", "cat"]).await;
    let proxied = "X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 203.0.113.9\r\n\
                   Forwarded: for=203.0.113.9;proto=https\r\nX-Forwarded-Proto: https\r\n\
                   X-Forwarded-Host: public.example\r\nX-Forwarded-Port: 443\r\n";
    let raw = format!("GET /p HTTP/1.1\r\nHost: board:8080\r\nConnection: close\r\n{proxied}\r\n");
    let head = head_seen_by_upstream(&server, &raw).await;
    assert_eq!(
        values(&head, "x-forwarded-for"),
        ["198.51.100.1, 203.0.113.9, 127.0.0.1"],
        "the proxy itself is the last hop: {head}"
    );
    assert_eq!(
        values(&head, "forwarded"),
        ["for=203.0.113.9;proto=https, for=127.0.0.1"],
        "{head}"
    );
    assert_eq!(values(&head, "x-forwarded-proto"), ["https"], "{head}");
    assert_eq!(values(&head, "x-forwarded-host"), ["public.example"], "{head}");
    assert_eq!(values(&head, "x-forwarded-port"), ["443"], "{head}");

    // A trusted proxy that says nothing: the hop starts both lists.
    let head = head_seen_by_upstream(&server, "GET /p HTTP/1.1\r\nHost: board\r\nConnection: close\r\n\r\n").await;
    assert_eq!(values(&head, "x-forwarded-for"), ["127.0.0.1"], "{head}");
    assert_eq!(values(&head, "forwarded"), ["for=127.0.0.1"], "{head}");
    assert_eq!(values(&head, "x-forwarded-proto"), ["http"], "{head}");
    assert_eq!(values(&head, "x-forwarded-host"), ["board"], "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let server = TestServer::start(&[&format!("--upstream=http://127.0.0.1:{port}"), "cat"]).await;
    let a = get(server.addr, "/page").await;
    assert_eq!(a.status, 502);
    assert_eq!(a.text().lines().count(), 1, "{}", a.text());
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "up").await;
    assert_eq!(recv_text(&mut ws).await, "up");
}

#[test]
fn bad_upstream_values_are_usage_errors() {
    for bad in ["https://x:1", "http://x:1/path", "localhost:80"] {
        let o = Command::new(env!("CARGO_BIN_EXE_wsbridge"))
            .args(["--port=0", &format!("--upstream={bad}"), "cat"])
            .stdin(Stdio::null())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&o.stderr);
        crate::common::assert_usage_error(o.status.code(), &err, &format!("invalid --upstream={bad}"));
    }
}

/// Behind `--htpasswd` the upstream is reached only with a valid password, and never
/// sees it: wsbridge's own credentials stop at wsbridge.
#[cfg(feature = "auth")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_credentials_are_not_forwarded() {
    let up = echo_upstream().await;
    let dir = crate::common::deploy::TempDir::new("upauth");
    // `htpasswd -nbB alice secret` (cost 5).
    std::fs::write(
        dir.path("users"),
        "alice:$2y$05$oHDoqjaahT.px2fSebrXqO5p7t/DaCduttAW9RWkUUixAg.RP7M.y\n",
    )
    .expect("write users");
    let users = format!("--htpasswd={}", dir.path("users").display());
    let server = TestServer::start(&[&users, &format!("--upstream=http://{up}"), "cat"]).await;
    let raw = "GET /page HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
    assert_eq!(send(server.addr, raw.as_bytes(), false).await.status, 401);
    // alice:secret
    let raw = "GET /page HTTP/1.1\r\nHost: b\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\nConnection: close\r\n\r\n";
    let head = head_seen_by_upstream(&server, raw).await;
    assert!(!head.contains("authorization"), "{head}");
}
