//! `--dir`: every executable under DIR is an endpoint at its URL path, with SCRIPT_NAME
//! and PATH_INFO split where the script is found; anything that is not an executable
//! inside DIR is a 404 before any upgrade. Also the command-line rules around it.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::common::rawhttp::*;
use crate::common::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const UPGRADE: &str =
    "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

async fn upgrade_status(server: &TestServer, path: &str) -> u16 {
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, close\r\n{UPGRADE}\r\n",
        server.addr
    );
    send(server.addr, raw.as_bytes(), false).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_path_sets_script_name_and_path_info() {
    let server = TestServer::start(&[&format!("--dir={}", fixture("wsdir"))]).await;
    let mut ws = connect(&server.url("/sub/info.sh/extra/more?z=9")).await;
    let (msgs, code, _) = recv_until_close(&mut ws).await;
    let got: Vec<String> = msgs.iter().map(|m| m.to_text().unwrap().to_owned()).collect();
    assert_eq!(
        got,
        [
            "SCRIPT_NAME=/sub/info.sh",
            "PATH_INFO=/extra/more",
            "PATH_TRANSLATED=/sub/info.sh/extra/more",
            "REQUEST_URI=/sub/info.sh/extra/more?z=9",
            "QUERY_STRING=z=9",
        ]
    );
    assert_eq!(code, CloseCode::Normal);
    let mut ws = connect(&server.url("/sub/info.sh")).await;
    let (msgs, _, _) = recv_until_close(&mut ws).await;
    assert_eq!(msgs[1].to_text().unwrap(), "PATH_INFO=");
    let mut ws = connect(&server.url("/echo.sh")).await;
    send_text(&mut ws, "hello").await;
    assert_eq!(recv_text(&mut ws).await, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_an_executable_inside_is_404_before_upgrade() {
    let dir = std::env::temp_dir().join(format!("wsbridge-wsdir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("outside.sh"), "#!/bin/sh\necho escaped\n").unwrap();
    std::fs::set_permissions(dir.join("outside.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(fixture("wsdir/echo.sh"), dir.join("in/echo.sh")).unwrap();
    std::fs::set_permissions(dir.join("in/echo.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("in/noexec.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::os::unix::fs::symlink("../outside.sh", dir.join("in/link.sh")).unwrap();
    std::os::unix::fs::symlink("echo.sh", dir.join("in/alias.sh")).unwrap();

    let server = TestServer::start(&[&format!("--dir={}", dir.join("in").display())]).await;
    for path in [
        "/noexec.sh",
        "/missing.sh",
        "/",
        "/link.sh",
        "/../outside.sh",
        "/%2e%2e/outside.sh",
        "/..%2foutside.sh",
        "/echo.sh%2fx",
    ] {
        assert_eq!(upgrade_status(&server, path).await, 404, "{path}");
    }
    let mut ws = connect(&server.url("/echo.sh/x")).await;
    send_text(&mut ws, "extra path is PATH_INFO").await;
    assert_eq!(recv_text(&mut ws).await, "extra path is PATH_INFO");
    let mut ws = connect(&server.url("/alias.sh")).await;
    send_text(&mut ws, "via a symlink inside").await;
    assert_eq!(recv_text(&mut ws).await, "via a symlink inside");

    let fixtures = TestServer::start(&[&format!("--dir={}", fixture("wsdir"))]).await;
    for path in ["/noexec.sh", "/.hidden.sh", "/sub", "/sub/", "/sub/missing.sh"] {
        assert_eq!(upgrade_status(&fixtures, path).await, 404, "{path}");
    }
    // Plain requests: 426 on a script (it is an endpoint), 404 elsewhere.
    assert_eq!(get(fixtures.addr, "/echo.sh").await.status, 426);
    assert_eq!(get(fixtures.addr, "/noexec.sh").await.status, 404);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_with_static_files_on_one_port() {
    let www = std::env::temp_dir().join(format!("wsbridge-dirwww-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&www);
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<p>page</p>\n").unwrap();
    let server = TestServer::start(&[
        &format!("--dir={}", fixture("wsdir")),
        &format!("--staticdir={}", www.display()),
    ])
    .await;
    assert_eq!(get(server.addr, "/").await.text(), "<p>page</p>\n");
    assert_eq!(get(server.addr, "/echo.sh").await.status, 404, "static miss: 404");
    let mut ws = connect(&server.url("/echo.sh")).await;
    send_text(&mut ws, "x").await;
    assert_eq!(recv_text(&mut ws).await, "x");
    let _ = std::fs::remove_dir_all(&www);
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wsbridge"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wsbridge")
}

#[test]
fn command_line_rules() {
    let dir = format!("--dir={}", fixture("wsdir"));
    let o = run(&["--port=0", &dir, "cat"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_usage_error(o.status.code(), &err, "--dir cannot be combined with PROGRAM");
    let o = run(&["--port=0"]);
    assert_eq!(o.status.code(), Some(2), "nothing to serve is a usage error");
    let o = run(&[
        "--port=0",
        "--devconsole",
        &format!("--staticdir={}", fixture("wsdir")),
        "cat",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_usage_error(o.status.code(), &err, "--devconsole cannot be combined");
    let o = run(&["--port=0", "--dir=/no/such/dir"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("wsbridge: cannot use --dir=/no/such/dir"));
}
