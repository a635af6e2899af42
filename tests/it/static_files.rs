//! `--staticdir`: files, types, validators, ranges, and every way out of the directory
//! that must stay shut (`..` plain and encoded, backslash, absolute forms, symlinks,
//! dotfiles, listings, scripts under `--cgidir`). Raw requests so the exact request line
//! reaches the server.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::rawhttp::*;
use crate::common::*;

const SECRET: &str = "TOPSECRET-outside-the-staticdir";

/// A fresh tree: `ROOT/www` is the static dir, `ROOT/secret.txt` lies outside it.
fn tree(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("wsbridge-static-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let www = root.join("www");
    for d in ["sub", "docs", ".hidden", "cgi-bin"] {
        std::fs::create_dir_all(www.join(d)).unwrap();
    }
    let w = |p: &str, s: &[u8]| std::fs::write(www.join(p), s).unwrap();
    w("index.html", b"<h1>home</h1>\n");
    w("hello.txt", b"hello world\n");
    w(".env", SECRET.as_bytes());
    w(".hidden/x.txt", SECRET.as_bytes());
    w("sub/a.txt", b"a\n");
    w("docs/index.html", b"<h1>docs</h1>\n");
    w("app.js", b"console.log(1)\n");
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    w("big.bin", &big);
    w("cgi-bin/show.cgi", format!("#!/bin/sh\n# {SECRET}\necho\n").as_bytes());
    std::fs::set_permissions(www.join("cgi-bin/show.cgi"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("secret.txt"), SECRET).unwrap();
    std::os::unix::fs::symlink("../secret.txt", www.join("link")).unwrap();
    std::os::unix::fs::symlink("..", www.join("updir")).unwrap();
    std::os::unix::fs::symlink("hello.txt", www.join("inlink.txt")).unwrap();
    root
}

fn flag(name: &str, p: &Path) -> String {
    format!("--{name}={}", p.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_files_with_type_length_and_validators() {
    let root = tree("serve");
    let server = TestServer::start(&[&flag("staticdir", &root.join("www")), "cat"]).await;
    let a = get(server.addr, "/hello.txt").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "hello world\n");
    assert_eq!(a.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(a.header("content-length"), Some("12"));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));
    assert!(a.header("etag").is_some_and(|e| e.starts_with('"')), "{:?}", a.headers);
    assert!(a.header("last-modified").is_some_and(|d| d.ends_with(" GMT")));

    let a = get(server.addr, "/").await;
    assert_eq!((a.status, a.text().as_str()), (200, "<h1>home</h1>\n"));
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    let a = get(server.addr, "/docs/").await;
    assert_eq!((a.status, a.text().as_str()), (200, "<h1>docs</h1>\n"));
    let a = get(server.addr, "/docs?x=1").await;
    assert_eq!((a.status, a.header("location")), (301, Some("/docs/?x=1")));
    let a = get(server.addr, "/app.js").await;
    assert_eq!(a.header("content-type"), Some("text/javascript; charset=utf-8"));
    let a = get(server.addr, "/inlink.txt").await;
    assert_eq!(
        (a.status, a.text().as_str()),
        (200, "hello world\n"),
        "a symlink inside is fine"
    );
    let a = get(server.addr, "/sub/a.txt").await;
    assert_eq!(a.status, 200);
    let a = get(server.addr, "/hello.txt/more").await;
    assert_eq!(a.status, 404, "a file is not a directory");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_has_the_headers_and_no_body() {
    let root = tree("head");
    let server = TestServer::start(&[&flag("staticdir", &root.join("www")), "cat"]).await;
    let a = request(server.addr, "HEAD", "/hello.txt", "").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-length"), Some("12"));
    assert!(a.body.is_empty());
    // Read raw: nothing may follow the head.
    let raw = format!(
        "HEAD /hello.txt HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr
    );
    let a = send(server.addr, raw.as_bytes(), false).await;
    assert!(a.body.is_empty(), "HEAD answer carried a body: {:?}", a.text());
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_get_answers_304() {
    let root = tree("cond");
    let server = TestServer::start(&[&flag("staticdir", &root.join("www")), "cat"]).await;
    let first = get(server.addr, "/hello.txt").await;
    let etag = first.header("etag").unwrap().to_owned();
    let date = first.header("last-modified").unwrap().to_owned();
    let a = request(server.addr, "GET", "/hello.txt", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(a.status, 304);
    assert!(a.body.is_empty());
    assert_eq!(a.header("etag"), Some(etag.as_str()));
    let a = request(
        server.addr,
        "GET",
        "/hello.txt",
        "If-None-Match: \"other\", W/\"x\"\r\n",
    )
    .await;
    assert_eq!(a.status, 200);
    let a = request(
        server.addr,
        "GET",
        "/hello.txt",
        &format!("If-Modified-Since: {date}\r\n"),
    )
    .await;
    assert_eq!(a.status, 304);
    let old = "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n";
    let a = request(server.addr, "GET", "/hello.txt", old).await;
    assert_eq!((a.status, a.text().as_str()), (200, "hello world\n"));
    // If-None-Match wins over If-Modified-Since.
    let both = format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {date}\r\n");
    let a = request(server.addr, "GET", "/hello.txt", &both).await;
    assert_eq!(a.status, 200);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ranges_206_and_416() {
    let root = tree("range");
    let server = TestServer::start(&[&flag("staticdir", &root.join("www")), "cat"]).await;
    let a = request(server.addr, "GET", "/hello.txt", "Range: bytes=0-4\r\n").await;
    assert_eq!((a.status, a.text().as_str()), (206, "hello"));
    assert_eq!(a.header("content-range"), Some("bytes 0-4/12"));
    assert_eq!(a.header("content-length"), Some("5"));
    let a = request(server.addr, "GET", "/hello.txt", "Range: bytes=-6\r\n").await;
    assert_eq!((a.status, a.text().as_str()), (206, "world\n"));
    let a = request(server.addr, "GET", "/hello.txt", "Range: bytes=6-\r\n").await;
    assert_eq!((a.status, a.text().as_str()), (206, "world\n"));
    let a = request(server.addr, "GET", "/hello.txt", "Range: bytes=50-\r\n").await;
    assert_eq!(a.status, 416);
    assert_eq!(a.header("content-range"), Some("bytes */12"));
    let a = request(server.addr, "GET", "/hello.txt", "Range: bytes=0-1,3-4\r\n").await;
    assert_eq!((a.status, a.text().len()), (200, 12), "several ranges: the whole file");
    let stale = "Range: bytes=0-4\r\nIf-Range: \"stale\"\r\n";
    let a = request(server.addr, "GET", "/hello.txt", stale).await;
    assert_eq!(a.status, 200, "stale If-Range: the whole file");
    let a = request(server.addr, "GET", "/big.bin", "Range: bytes=4999990-\r\n").await;
    let want: Vec<u8> = (4_999_990..5_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!((a.status, a.body), (206, want));
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_attempts_never_leave_the_directory() {
    let root = tree("traversal");
    let server = TestServer::start(&[&flag("staticdir", &root.join("www")), "cat"]).await;
    let abs = format!("http://{}/../secret.txt", server.addr);
    let abs_root = root.join("secret.txt").display().to_string();
    for path in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/sub/..%5c..%5csecret.txt",
        "/..\\secret.txt",
        "//secret.txt",
        abs_root.as_str(),
        &format!("/{abs_root}"),
        abs.as_str(),
        "/link",
        "/updir/secret.txt",
        "/%00/secret.txt",
    ] {
        let a = get(server.addr, path).await;
        assert!(
            a.status == 404 || a.status == 400,
            "{path}: got {} {:?}",
            a.status,
            a.text()
        );
        assert!(!a.text().contains(SECRET), "{path} leaked the file");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotfiles_listings_and_cgi_sources_are_not_served() {
    let root = tree("hidden");
    let www = root.join("www");
    let server = TestServer::start(&[
        &flag("staticdir", &www),
        &flag("cgidir", &www.join("cgi-bin")),
        "--header-http=X-Http: h",
        "--header-ws=X-Ws: w",
        "cat",
    ])
    .await;
    for path in [
        "/.env",
        "/%2eenv",
        "/.hidden/x.txt",
        "/.hidden/",
        "/sub/",
        "/cgi-bin/show.cgi",
        "/cgi-bin/",
        "/missing.txt",
    ] {
        let a = get(server.addr, path).await;
        assert_eq!(a.status, 404, "{path}: {:?}", a.text());
        assert_eq!(a.text().lines().count(), 1, "{path}: one short line");
        assert!(!a.text().contains(SECRET), "{path} leaked");
        assert_eq!(a.header("x-http"), Some("h"), "{path}: --header-http on errors too");
        assert_eq!(a.header("x-ws"), None);
    }
    let a = request(server.addr, "POST", "/hello.txt", "Content-Length: 0\r\n").await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("GET, HEAD"));
    let a = request(server.addr, "DELETE", "/hello.txt", "").await;
    assert_eq!(a.status, 405);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_files_stream_and_keep_alive_works() {
    let root = tree("big");
    let server = TestServer::start(&[&flag("staticdir", &root.join("www")), "cat"]).await;
    let a = get(server.addr, "/big.bin").await;
    assert_eq!(a.status, 200);
    assert!(a.complete);
    assert_eq!(a.body.len(), 5_000_000);
    assert!(a.body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    // Two requests on one connection, the second closing it.
    let host = server.addr;
    let raw = format!(
        "GET /hello.txt HTTP/1.1\r\nHost: {host}\r\n\r\nGET /sub/a.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let all = String::from_utf8_lossy(&send_raw(server.addr, raw.as_bytes()).await).into_owned();
    assert_eq!(all.matches("HTTP/1.1 200").count(), 2, "{all}");
    assert!(all.contains("hello world\n") && all.ends_with("a\n"), "{all}");
    // The WebSocket still works next to the files.
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "hi").await;
    assert_eq!(recv_text(&mut ws).await, "hi");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_static_files_plain_requests_still_get_426() {
    let server = TestServer::start(&["cat"]).await;
    assert_eq!(get(server.addr, "/anything").await.status, 426);
    let root = tree("miss");
    let server = TestServer::start(&[&flag("staticdir", &root.join("www")), "cat"]).await;
    assert_eq!(get(server.addr, "/anything").await.status, 404);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_page_and_its_socket_share_a_port() {
    let server = TestServer::start(&[&format!("--staticdir={}", example("www")), &example("echo.py")]).await;
    let a = get(server.addr, "/").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(a.text().contains("new WebSocket("), "{}", a.text());
    let mut ws = connect(&server.url("/")).await;
    send_text(&mut ws, "same port").await;
    assert_eq!(recv_text(&mut ws).await, "same port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_alone_need_no_program() {
    let root = tree("alone");
    let server = TestServer::start(&[&flag("staticdir", &root.join("www"))]).await;
    assert_eq!(get(server.addr, "/hello.txt").await.status, 200);
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    let a = send(server.addr, raw.as_bytes(), false).await;
    assert_eq!(a.status, 404, "no endpoint: {}", a.text());
    let _ = std::fs::remove_dir_all(&root);
}
