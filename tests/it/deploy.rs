//! Deployment without TLS, with the real binary: `--trusted-proxy` (and that nobody else
//! can spoof the client), `--unixsocket` (alone, beside TCP, stale and live socket
//! files), systemd socket activation (TCP and Unix, variables hidden from programs),
//! `--redirport` and `--threads`; Python's `websockets` over the Unix socket.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Command;

use crate::common::deploy::*;

fn reporter_args<'a>(flags: &[&'a str]) -> Vec<&'a str> {
    let mut v = flags.to_vec();
    v.extend(REPORTER);
    v
}

#[tokio::test]
async fn trusted_proxy_headers_name_the_client() {
    let p = Proc::start(
        &reporter_args(&["--port=0", "--address=127.0.0.1", "--trusted-proxy=127.0.0.1/32"]),
        &[],
        1,
    );
    let addr = p.tcp_addr();
    let mut ws = ws_tcp(
        addr,
        &[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    let r = report(&mut ws).await;
    assert_eq!(r[..3], ["203.0.113.7", "", "on"], "{r:?}");
    echo(&mut ws, "hello").await;

    let mut ws = ws_tcp(addr, &[("forwarded", r#"for="[2001:db8::5]:4711";proto=http"#)]).await;
    let r = report(&mut ws).await;
    assert_eq!(r[..3], ["2001:db8::5", "4711", "off"], "{r:?}");
    drop(ws);
    // The session's access lines name the client.
    p.wait_log("peer=[2001:db8::5]:4711").await;
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_peers_are_ignored() {
    let spoof = [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.8;proto=https"),
        ("x-forwarded-proto", "https"),
    ];
    for flags in [
        vec!["--port=0", "--address=127.0.0.1", "--trusted-proxy=10.0.0.0/8,unix"],
        vec!["--port=0", "--address=127.0.0.1"],
    ] {
        let p = Proc::start(&reporter_args(&flags), &[], 1);
        let mut ws = ws_tcp(p.tcp_addr(), &spoof).await;
        let r = report(&mut ws).await;
        assert_eq!(r[0], "127.0.0.1", "{flags:?}: {r:?}");
        assert!(r[1].parse::<u16>().is_ok(), "the socket's own port: {r:?}");
        assert_eq!(r[2], "off", "{flags:?}");
        assert!(
            !p.log().contains("203.0.113"),
            "spoofed address in the log:\n{}",
            p.log()
        );
    }
}

#[tokio::test]
async fn bad_trusted_proxy_is_a_usage_error() {
    let (code, err) = run_to_exit(&["--trusted-proxy=10.0.0.0/40", "cat"]);
    crate::common::assert_usage_error(code, &err, "invalid --trusted-proxy=10.0.0.0/40");
}

#[tokio::test]
async fn unix_socket_alone_has_no_tcp_listener() {
    let dir = TempDir::new("unix");
    let sock = dir.path("ws.sock");
    let arg = format!("--unixsocket={}", sock.display());
    let mut p = Proc::start(&reporter_args(&[&arg]), &[], 1);
    assert_eq!(p.announced, [format!("listening on unix:{}", sock.display())]);
    let mut ws = ws_unix(&sock).await;
    let r = report(&mut ws).await;
    assert_eq!(r[..3], ["unix-socket", "", "off"], "{r:?}");
    echo(&mut ws, "over unix").await;
    // Nothing else is listening: the process holds exactly one listening socket.
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
        + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let inodes = socket_inodes(p.pid());
    let listening_tcp = tcp
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
        .filter_map(|l| l.split_whitespace().nth(9))
        .any(|ino| inodes.contains(&ino.to_owned()));
    assert!(!listening_tcp, "a TCP listener exists");
    drop(ws);
    p.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(p.wait_exit(STEP).await.success());
    assert!(!sock.exists(), "the socket file is removed at exit");
}

fn socket_inodes(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn unix_socket_beside_tcp_and_trusted_unix_proxy() {
    let dir = TempDir::new("unix2");
    let sock = dir.path("ws.sock");
    let arg = format!("--unixsocket={}", sock.display());
    let p = Proc::start(
        &reporter_args(&["--port=0", "--address=127.0.0.1", &arg, "--trusted-proxy=unix"]),
        &[],
        2,
    );
    let mut tcp = ws_tcp(p.tcp_addr(), &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(report(&mut tcp).await[0], "127.0.0.1", "TCP peers are not trusted");
    let s = within(STEP, tokio::net::UnixStream::connect(&sock))
        .await
        .expect("connect");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = "ws://localhost/".into_client_request().expect("request");
    req.headers_mut()
        .insert("x-forwarded-for", "203.0.113.9".parse().expect("value"));
    let (mut unix, _) = within(STEP, tokio_tungstenite::client_async(req, s))
        .await
        .expect("handshake");
    assert_eq!(report(&mut unix).await[..2], ["203.0.113.9", ""]);
}

#[tokio::test]
async fn stale_socket_file_is_replaced_and_live_one_refused() {
    let dir = TempDir::new("stale");
    let sock = dir.path("ws.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
    assert!(sock.exists(), "a stale socket file is left behind");
    let arg = format!("--unixsocket={}", sock.display());
    let p = Proc::start(&reporter_args(&[&arg]), &[], 1);
    let mut ws = ws_unix(&sock).await;
    report(&mut ws).await;
    echo(&mut ws, "fresh").await;

    // Now a live server holds it: a second wsbridge must refuse, exit 3, one line.
    let (code, err) = run_to_exit(&reporter_args(&[&arg]));
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("another server is answering there"), "{err}");
    echo(&mut ws, "still served").await;
    drop(p);

    let file = dir.path("not-a-socket");
    std::fs::write(&file, "x").expect("write");
    let (code, err) = run_to_exit(&["--unixsocket", file.to_str().expect("utf-8"), "cat"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert!(file.exists(), "a regular file is never removed");
}

/// `sh -c 'LISTEN_PID=$$ ... exec wsbridge ARGS'` with `listener` as descriptor 3.
fn activated(fd: i32, extra_env: &[(&str, &str)], args: &[&str], announcements: usize) -> Proc {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_wsbridge"))
        .args(args)
        .envs(extra_env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    pass_as_fd3(&mut c, fd);
    Proc::spawn(c, announcements)
}

#[tokio::test]
async fn socket_activation_serves_the_inherited_tcp_socket() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let program = [
        "sh",
        "-c",
        "n=0; for f in /proc/$$/fd/*; do case $(readlink $f) in socket:*) n=$((n+1));; esac; done; \
         echo \"fds=[$LISTEN_FDS][$LISTEN_PID][$LISTEN_FDNAMES] sockets=$n\"; exec cat",
    ];
    let mut args = vec!["--passenv=PATH,LISTEN_FDS,LISTEN_PID,LISTEN_FDNAMES"];
    args.extend(program);
    let p = activated(listener.as_raw_fd(), &[], &args, 1);
    drop(listener); // the server holds its own copy now
    assert_eq!(p.announced, [format!("listening on ws://{addr}/")]);
    let mut ws = ws_tcp(addr, &[]).await;
    assert_eq!(next_text(&mut ws).await, "fds=[][][] sockets=0");
    echo(&mut ws, "activated").await;
}

#[tokio::test]
async fn socket_activation_serves_an_inherited_unix_socket() {
    let dir = TempDir::new("act");
    let sock = dir.path("act.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let p = activated(listener.as_raw_fd(), &[], &REPORTER, 1);
    drop(listener);
    assert_eq!(p.announced, [format!("listening on unix:{}", sock.display())]);
    let mut ws = ws_unix(&sock).await;
    assert_eq!(report(&mut ws).await[0], "unix-socket");
    echo(&mut ws, "activated unix").await;
}

#[tokio::test]
async fn activation_for_another_pid_is_ignored() {
    let mut c = Proc::command();
    c.args(["--port=0", "--address=127.0.0.1", "cat"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1");
    let p = Proc::spawn(c, 1);
    assert!(
        p.announced[0].starts_with("listening on ws://127.0.0.1:"),
        "{:?}",
        p.announced
    );
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(STEP)).expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn location(resp: &str) -> Option<&str> {
    resp.lines()
        .find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: ")))
        .map(str::trim)
}

#[tokio::test]
async fn redirport_redirects_to_the_main_port_keeping_path_and_query() {
    let mut attempt = 0;
    let (p, redir) = loop {
        attempt += 1;
        let port = free_port();
        let arg = format!("--redirport={port}");
        let mut c = Proc::command();
        c.args(["--port=0", "--address=127.0.0.1", &arg, "cat"]);
        let child_ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || Proc::spawn(c, 2)));
        match child_ok {
            Ok(p) => break (p, port),
            Err(_) if attempt < 5 => continue,
            Err(e) => std::panic::resume_unwind(e),
        }
    };
    let main = p.tcp_addr();
    assert!(
        p.announced.contains(&format!(
            "redirecting http://127.0.0.1:{redir}/ to port {}",
            main.port()
        )),
        "{:?}",
        p.announced
    );
    let raddr: std::net::SocketAddr = format!("127.0.0.1:{redir}").parse().expect("addr");
    let resp = tokio::task::spawn_blocking(move || {
        let with_host = raw_request(
            raddr,
            &format!("GET /a/b%20c?x=1&y=2 HTTP/1.1\r\nHost: example.com:{redir}\r\nConnection: close\r\n\r\n"),
        );
        let no_port = raw_request(
            raddr,
            "GET /p HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        );
        let no_host = raw_request(raddr, "GET /q?z HTTP/1.0\r\n\r\n");
        let bad_host = raw_request(raddr, "GET / HTTP/1.1\r\nHost: a/b@evil\r\nConnection: close\r\n\r\n");
        [with_host, no_port, no_host, bad_host]
    });
    let [with_host, no_port, no_host, bad_host] = within(STEP, resp).await.expect("requests");
    let port = main.port();
    assert!(with_host.starts_with("HTTP/1.1 301"), "{with_host}");
    assert_eq!(
        location(&with_host),
        Some(format!("http://example.com:{port}/a/b%20c?x=1&y=2").as_str())
    );
    assert_eq!(
        location(&no_port),
        Some(format!("http://example.com:{port}/p").as_str())
    );
    assert_eq!(
        location(&no_host),
        Some(format!("http://127.0.0.1:{port}/q?z").as_str())
    );
    assert_eq!(location(&bad_host), Some(format!("http://127.0.0.1:{port}/").as_str()));
    // Each redirect has its access line, with the path and query it was asked for.
    p.wait_log(r#"handler=redirect status=301"#).await;
    assert!(
        p.log()
            .contains(r#"method=GET path="/a/b%20c" query="x=1&y=2" handler=redirect status=301 bytes="#),
        "{}",
        p.log()
    );
    // The main port still speaks WebSocket.
    let mut ws = ws_tcp(main, &[]).await;
    echo(&mut ws, "main").await;
}

/// systemd's own activation tool (when installed), as a unit file would start wsbridge.
#[tokio::test]
async fn systemd_socket_activate_starts_wsbridge_on_the_first_connection() {
    let Some(tool) = ["/usr/bin/systemd-socket-activate", "/bin/systemd-socket-activate"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("systemd-socket-activate is not installed; skipping");
        return;
    };
    // The tool binds a port that was just free; if another test took it meanwhile, the
    // tool exits and another port is tried. It says when it holds the port, and only then
    // is a connection certain to reach it.
    let mut attempt = 0;
    let (p, addr) = loop {
        attempt += 1;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let listen = addr.to_string();
        let mut c = Command::new(tool);
        c.args(["-l", &listen, env!("CARGO_BIN_EXE_wsbridge")])
            .args(REPORTER)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut p = Proc::spawn(c, 0);
        let deadline = std::time::Instant::now() + STEP;
        while !p.log().contains(&format!("Listening on {listen}")) && !p.exited() {
            assert!(
                std::time::Instant::now() < deadline,
                "tool did not start; log:\n{}",
                p.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if !p.exited() {
            break (p, addr);
        }
        assert!(attempt < 5, "systemd-socket-activate did not listen; log:\n{}", p.log());
    };
    let tcp = within(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect to the activation socket");
    let mut ws = ws_over(&format!("ws://{addr}/"), tcp).await;
    assert_eq!(report(&mut ws).await[0], "127.0.0.1");
    echo(&mut ws, "activated by systemd's tool").await;
    p.wait_log(&format!("wsbridge: listening on ws://{addr}/")).await;
}

#[cfg(not(feature = "tls"))]
#[test]
fn ssl_without_the_tls_feature_is_a_startup_error() {
    let (code, err) = run_to_exit(&["--ssl", "--sslcert=a.pem", "--sslkey=b.pem", "cat"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("built without TLS"), "{err}");
}

#[cfg(not(feature = "auth"))]
#[test]
fn access_flags_without_the_auth_feature_are_a_startup_error() {
    for flag in [
        "--htpasswd=users",
        "--authcmd=/bin/true",
        "--authurl=http://127.0.0.1:1/",
    ] {
        let (code, err) = run_to_exit(&[flag, "cat"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("built without access control"), "{flag}: {err}");
    }
}

#[tokio::test]
async fn sighup_without_tls_is_logged_not_fatal() {
    let p = Proc::start(&reporter_args(&["--port=0", "--address=127.0.0.1"]), &[], 1);
    p.signal(nix::sys::signal::Signal::SIGHUP);
    p.wait_log("nothing to reload").await;
    let mut ws = ws_tcp(p.tcp_addr(), &[]).await;
    report(&mut ws).await;
    echo(&mut ws, "still up").await;
}

#[tokio::test]
async fn python_websockets_connects_over_the_unix_socket() {
    let dir = TempDir::new("pyunix");
    let sock = dir.path("ws.sock");
    let arg = format!("--unixsocket={}", sock.display());
    let _p = Proc::start(&reporter_args(&[&arg]), &[], 1);
    let script = "import asyncio, sys\n\
        from websockets.asyncio.client import unix_connect\n\
        async def main():\n\
        \x20   async with unix_connect(sys.argv[1], 'ws://localhost/') as ws:\n\
        \x20       print((await ws.recv()).split('|')[0])\n\
        \x20       await ws.send('from python')\n\
        \x20       print(await ws.recv())\n\
        asyncio.run(main())\n";
    let out = within(
        STEP,
        tokio::process::Command::new("python3")
            .args(["-c", script, sock.to_str().expect("utf-8")])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run python3");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "unix-socket\nfrom python\n");
}

/// Threads of process `pid`, from /proc.
fn threads_of(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: line")
}

/// `--threads=1`, for single-core boards: everything runs on the main thread, and
/// sessions at once, a static file (read off the async thread) and the SIGTERM drain all
/// still work. `--threads=N` gives N worker threads; 0 is a usage error.
#[tokio::test]
async fn threads_1_serves_everything_from_the_main_thread() {
    let dir = TempDir::new("threads");
    std::fs::write(dir.path("hello.txt"), "hi\n").expect("write");
    let staticdir = format!("--staticdir={}", dir.0.display());
    let mut p = Proc::start(
        &["--threads=1", "--port=0", "--address=127.0.0.1", &staticdir, "cat"],
        &[],
        1,
    );
    assert_eq!(threads_of(p.pid()), 1, "one thread when idle");
    let addr = p.tcp_addr();
    let mut sessions = Vec::new();
    for _ in 0..20 {
        sessions.push(ws_tcp(addr, &[]).await);
    }
    for (i, ws) in sessions.iter_mut().enumerate() {
        echo(ws, &format!("session {i}")).await;
    }
    let resp = tokio::task::spawn_blocking(move || {
        raw_request(addr, "GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    });
    let resp = within(STEP, resp).await.expect("request");
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("\r\n\r\nhi\n"),
        "{resp}"
    );
    for (i, ws) in sessions.iter_mut().enumerate() {
        echo(ws, &format!("still there {i}")).await;
    }
    p.signal(nix::sys::signal::Signal::SIGTERM);
    for ws in &mut sessions {
        let code = loop {
            match within(STEP, futures_util::StreamExt::next(ws)).await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => break f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("expected Close 1001, got {other:?}"),
            }
        };
        assert_eq!(code, Some(1001), "draining sessions get 1001");
    }
    assert!(p.wait_exit(STEP).await.success(), "{}", p.log());

    let p = Proc::start(&["--threads=3", "--port=0", "--address=127.0.0.1", "cat"], &[], 1);
    assert_eq!(threads_of(p.pid()), 4, "the main thread and 3 workers");
    let (code, err) = run_to_exit(&["--threads=0", "cat"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--threads"), "{err}");
}

/// With `--threads=1` the stop ladder of a program that ignores EOF, SIGINT and SIGTERM
/// runs on the one thread beside a live session: that session keeps echoing while the
/// stubborn program is brought down by SIGKILL and reaped.
#[tokio::test]
async fn threads_1_runs_the_stop_ladder_beside_a_live_session() {
    let script = "read first; if [ \"$first\" = stubborn ]; then trap '' INT TERM; echo \"ready $$\"; \
                  while :; do sleep 0.1; done; else echo \"$first\"; exec cat; fi";
    let p = Proc::start(
        &["--threads=1", "--port=0", "--address=127.0.0.1", "sh", "-c", script],
        &[],
        1,
    );
    let addr = p.tcp_addr();
    let mut stubborn = ws_tcp(addr, &[]).await;
    let hello = tokio_tungstenite::tungstenite::Message::text("stubborn");
    within(STEP, futures_util::SinkExt::send(&mut stubborn, hello))
        .await
        .expect("send");
    let ready = next_text(&mut stubborn).await;
    let pid: i32 = ready
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ready:?}"));
    let mut live = ws_tcp(addr, &[]).await;
    echo(&mut live, "first").await;

    within(STEP, stubborn.close(None)).await.expect("close");
    let deadline = std::time::Instant::now() + STEP;
    let mut n = 0;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stubborn program is still there; log:\n{}",
            p.log()
        );
        echo(&mut live, &format!("during the ladder {n}")).await;
        n += 1;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    echo(&mut live, "after the ladder").await;
    p.wait_log("exit=SIGKILL").await;
}
