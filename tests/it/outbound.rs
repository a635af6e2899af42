#![cfg(feature = "connect")]
//! `--connect` with the real binary on both ends: our server mode as the peer, and a real
//! HTTP proxy (Debian's tinyproxy, started by the test on a free port with a config in a
//! temp dir) in between. Pipe mode and program mode, ws:// and wss://, proxy auth, the
//! proxy environment with no_proxy, failures that must be quick one-line errors, close
//! codes both ways, `--reconnect` with its backoff, and SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::deploy::{make_ca, make_leaf, openssl, tls_server, within, Proc, TempDir, STEP};
use tokio::io::AsyncWriteExt;

/// Our server mode, the real binary on 127.0.0.1 with an OS-chosen port; killed on drop.
struct BinServer {
    addr: SocketAddr,
    proc: Proc,
}

impl BinServer {
    fn start(args: &[&str]) -> Self {
        let mut all = vec!["--port=0", "--address=127.0.0.1"];
        all.extend(args);
        let proc = Proc::start(&all, &[], 1);
        BinServer {
            addr: proc.tcp_addr(),
            proc,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    fn log(&self) -> String {
        self.proc.log()
    }
}

/// Every proxy variable the client could read; cleared so the machine's own settings do
/// not leak into a test.
const PROXY_VARS: [&str; 14] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "ws_proxy",
    "WS_PROXY",
    "wss_proxy",
    "WSS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
    "RUST_LOG",
];

/// What a client run came to.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `wsbridge args` with `env` (proxy variables cleared first). With `input`, it is
/// written to stdin, which is then closed; without, stdin stays open until the client
/// exits. The whole run is bounded by `limit`.
async fn client(args: &[&str], env: &[(&str, &str)], input: Option<&[u8]>, limit: Duration) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsbridge"));
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start the client");
    let mut stdin = child.stdin.take().expect("stdin");
    let held = match input {
        Some(data) => {
            within(STEP, stdin.write_all(data)).await.expect("write stdin");
            drop(stdin);
            None
        }
        None => Some(stdin),
    };
    let out = within(limit, child.wait_with_output()).await.expect("client output");
    drop(held);
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// A port that was free a moment ago (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("addr")
        .port()
}

/// tinyproxy on 127.0.0.1, in the foreground, in its own process group; killed (group
/// and all) on drop.
struct Tinyproxy {
    port: u16,
    child: std::process::Child,
    dir: TempDir,
}

impl Tinyproxy {
    /// Allows CONNECT to `connect_port` only; with `auth`, requires Basic credentials.
    /// tinyproxy cannot listen on port 0, so a port that was just free is tried, and
    /// another if that one was taken meanwhile.
    async fn start(connect_port: u16, auth: Option<(&str, &str)>) -> Self {
        for _ in 0..5 {
            if let Some(p) = Self::try_start(free_port(), connect_port, auth).await {
                return p;
            }
        }
        panic!("tinyproxy did not start on any of 5 ports");
    }

    async fn try_start(port: u16, connect_port: u16, auth: Option<(&str, &str)>) -> Option<Self> {
        let dir = TempDir::new("tinyproxy");
        let pid_file = dir.path("tinyproxy.pid");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nConnectPort {connect_port}\n\
             MaxClients 16\nLogLevel Connect\nPidFile \"{pid}\"\nLogFile \"{log}\"\n",
            pid = pid_file.display(),
            log = dir.path("tinyproxy.log").display(),
        );
        if let Some((user, pass)) = auth {
            conf.push_str(&format!("BasicAuth {user} {pass}\n"));
        }
        let conf_path = dir.path("tinyproxy.conf");
        std::fs::write(&conf_path, conf).expect("write tinyproxy.conf");
        let child = std::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start tinyproxy (tools/test.sh installs it)");
        let mut proxy = Tinyproxy { port, child, dir };
        // Ready once it writes its pid file, which it does right after opening its
        // listening socket. A successful connect would not prove that: on a port taken
        // meanwhile it exits, and the connect reaches whoever holds the port.
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(Some(_)) = proxy.child.try_wait() {
                return None;
            }
            if pid_file.exists() {
                return Some(proxy);
            }
            assert!(Instant::now() < deadline, "tinyproxy did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A CA `srv` and a server certificate for 127.0.0.1 signed by it.
fn certs() -> TempDir {
    let dir = TempDir::new("outbound-pki");
    make_ca(&dir.0, "srv");
    make_leaf(&dir.0, "srv", "server", false);
    dir
}

async fn wait_log(server: &BinServer, needle: &str) {
    let deadline = Instant::now() + STEP;
    while !server.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn pipe_mode_prints_the_servers_reply_and_exits_0() {
    let server = BinServer::start(&["cat"]);
    let url = format!("--connect={}", server.url("/"));
    let run = client(&[&url], &[], Some(b"hi\n"), STEP).await;
    assert_eq!(run.stdout, "hi\n", "stderr: {}", run.stderr);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    // Binary framing: bytes without a newline still come out (our stdout is flushed).
    let binary = BinServer::start(&["--binary", "cat"]);
    let url = format!("--connect={}", binary.url("/"));
    let run = client(&[&url, "--binary", "--loglevel=none"], &[], Some(b"\x00\x01abc"), STEP).await;
    assert_eq!(run.stdout.as_bytes(), b"\x00\x01abc");
    assert_eq!(run.code, Some(0));
    assert_eq!(run.stderr, "", "--loglevel=none keeps stderr quiet");
}

#[tokio::test]
async fn through_tinyproxy_ws() {
    let server = BinServer::start(&["cat"]);
    let proxy = Tinyproxy::start(server.addr.port(), None).await;
    let url = format!("--connect={}", server.url("/p"));
    let via = format!("--proxy={}", proxy.url());
    let run = client(&[&url, &via], &[], Some(b"through\n"), STEP).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "through\n"),
        "{}",
        run.stderr
    );
    assert!(
        proxy
            .log()
            .contains(&format!("CONNECT 127.0.0.1:{}", server.addr.port())),
        "the tunnel went through tinyproxy; its log:\n{}",
        proxy.log()
    );
    // The same from the environment (http_proxy for ws://).
    let run = client(&[&url], &[("http_proxy", &proxy.url())], Some(b"env\n"), STEP).await;
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "env\n"), "{}", run.stderr);
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn through_tinyproxy_wss_with_a_private_ca() {
    let pki = certs();
    let server = tls_server(&pki, &["cat"]);
    let port = server.tcp_addr().port();
    let proxy = Tinyproxy::start(port, None).await;
    let url = format!("--connect=wss://127.0.0.1:{port}/secure");
    let ca = format!("--sslca={}", pki.path("srv-ca.pem").display());
    // https_proxy applies to wss://.
    let env = [
        ("https_proxy", proxy.url()),
        ("http_proxy", "http://127.0.0.1:1".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = client(&[&url, &ca], &env, Some(b"secret\n"), STEP).await;
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "secret\n"), "{}", run.stderr);
    assert!(
        proxy.log().contains(&format!("CONNECT 127.0.0.1:{port}")),
        "{}",
        proxy.log()
    );
    // Without the private CA the server is not trusted: a one-line error, exit 1.
    let run = client(&[&url], &env, Some(b"x\n"), STEP).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("TLS handshake with 127.0.0.1"), "{}", run.stderr);
}

#[tokio::test]
async fn proxy_basic_auth_accepted_and_refused_with_407() {
    let server = BinServer::start(&["cat"]);
    let proxy = Tinyproxy::start(server.addr.port(), Some(("user", "s3cret"))).await;
    let url = format!("--connect={}", server.url("/"));
    // Percent-encoded user info is decoded (%73 is "s").
    let good = format!("--proxy=http://user:%733cret@127.0.0.1:{}", proxy.port);
    let run = client(&[&url, &good], &[], Some(b"auth\n"), STEP).await;
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "auth\n"), "{}", run.stderr);
    // tinyproxy answers a missing Proxy-Authorization with 407 and a wrong one with 401.
    for (bad, status) in [
        (format!("--proxy={}", proxy.url()), "407"),
        (format!("--proxy=http://user:wrong@127.0.0.1:{}", proxy.port), "401"),
    ] {
        let run = client(&[&url, &bad], &[], Some(b"x\n"), STEP).await;
        assert_eq!(run.code, Some(1), "{bad}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{bad}: {}", run.stderr);
        let shown = format!("proxy 127.0.0.1:{} refused CONNECT", proxy.port);
        assert!(
            run.stderr.contains(&shown) && run.stderr.contains(status),
            "{bad}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("wrong"),
            "no password in the message: {}",
            run.stderr
        );
        assert_eq!(run.stdout, "");
    }
}

#[tokio::test]
async fn no_proxy_bypasses_the_environment_proxy() {
    let server = BinServer::start(&["cat"]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let url = format!("--connect={}", server.url("/"));
    let run = client(
        &[&url],
        &[("http_proxy", &dead), ("no_proxy", "example.com,127.0.0.1")],
        Some(b"direct\n"),
        STEP,
    )
    .await;
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "direct\n"), "{}", run.stderr);
    // Without no_proxy the dead proxy is used, and fails; --proxy=none overrides it.
    let run = client(&[&url], &[("http_proxy", &dead)], Some(b"x\n"), STEP).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let run = client(&[&url, "--proxy=none"], &[("http_proxy", &dead)], Some(b"none\n"), STEP).await;
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "none\n"), "{}", run.stderr);
}

#[tokio::test]
async fn proxy_down_is_a_quick_one_line_error() {
    let port = free_port();
    let via = format!("--proxy=http://127.0.0.1:{port}");
    let run = client(&["--connect=ws://127.0.0.1:9/", &via], &[], Some(b""), STEP).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        run.stderr,
        format!("wsbridge: cannot connect to proxy 127.0.0.1:{port}: connection refused\n")
    );
    assert!(run.took < Duration::from_secs(3), "took {:?}", run.took);
    // The server down, directly: the same kind of line.
    let run = client(&[&format!("--connect=ws://127.0.0.1:{port}/")], &[], Some(b""), STEP).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        format!("wsbridge: cannot connect to 127.0.0.1:{port}: connection refused\n")
    );
}

#[tokio::test]
async fn program_mode_gets_url_protocol_and_passenv_only() {
    let server = BinServer::start(&["--subprotocol=chat.v1", "cat"]);
    let dir = TempDir::new("outbound-env");
    let out = dir.path("seen");
    let script = format!(
        "echo \"url=$WEBSOCKET_URL proto=$WEBSOCKET_PROTOCOL foo=$FOO home=${{HOME:-unset}}\"; \
         read reply; printf '%s' \"$reply\" > {}",
        out.display()
    );
    let url = format!("--connect={}", server.url("/path?x=1"));
    let run = client(
        &[
            &url,
            "--subprotocol=other,chat.v1",
            "--passenv=FOO,PATH",
            "sh",
            "-c",
            &script,
        ],
        &[("FOO", "bar"), ("HOME", "/root")],
        None,
        STEP,
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let seen = std::fs::read_to_string(&out).expect("the program wrote the echoed line");
    assert_eq!(
        seen,
        format!("url=ws://{}/path?x=1 proto=chat.v1 foo=bar home=unset", server.addr)
    );
    // Offering only what the server does not speak: its 400, in one line.
    let run = client(&[&url, "--subprotocol=nope", "cat"], &[], None, STEP).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("refused the WebSocket upgrade: 400"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn client_program_exit_status_is_sent_as_1011_and_returned() {
    let server = BinServer::start(&["cat"]);
    let url = format!("--connect={}", server.url("/"));
    let run = client(&[&url, "sh", "-c", "echo last; exit 3"], &[], None, STEP).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    wait_log(&server, "close_received=1011").await;
    assert!(
        run.stderr.contains("ended_by=program exit=3 close_sent=1011"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn server_program_exit_ends_the_client() {
    // Pipe mode: its output is printed; Close 1000 → exit 0, Close 1011 → exit 1, even
    // with our stdin still open.
    let server = BinServer::start(&["sh", "-c", "echo bye; exit 0"]);
    let url = format!("--connect={}", server.url("/"));
    let run = client(&[&url], &[], None, STEP).await;
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "bye\n"), "{}", run.stderr);
    let failing = BinServer::start(&["sh", "-c", "echo oops; exit 4"]);
    let run = client(&[&format!("--connect={}", failing.url("/"))], &[], None, STEP).await;
    assert_eq!((run.code, run.stdout.as_str()), (Some(1), "oops\n"), "{}", run.stderr);
    // Program mode: the server's Close closes the program's stdin; its status is ours.
    let run = client(&[&url, "sh", "-c", "while read l; do :; done; exit 5"], &[], None, STEP).await;
    assert_eq!(run.code, Some(5), "{}", run.stderr);
}

#[tokio::test]
async fn reconnect_backs_off_until_the_server_is_back_and_sigterm_ends_it() {
    let port = free_port();
    let mut cmd = Proc::command();
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    let url = format!("--connect=ws://127.0.0.1:{port}/");
    cmd.args([url.as_str(), "--reconnect", "sh", "-c", "echo hello; exec cat"]);
    let mut client = Proc::spawn(cmd, 0);
    // Three failed attempts, each followed by a longer wait.
    let deadline = Instant::now() + STEP;
    let delays = loop {
        let delays: Vec<u64> = client
            .log()
            .lines()
            .filter(|l| l.contains("reconnecting"))
            .filter_map(|l| l.split("retry_in_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect();
        if delays.len() >= 3 {
            break delays;
        }
        assert!(Instant::now() < deadline, "no retries; log:\n{}", client.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]) && (375..=500).contains(&delays[0]),
        "delays {delays:?}"
    );
    assert!(client.log().contains("connection refused"), "{}", client.log());
    // The server comes back on the same port.
    let listen = format!("--port={port}");
    let server = Proc::start(&[listen.as_str(), "--address=127.0.0.1", "cat"], &[], 1);
    client.wait_log("connected url").await;
    // SIGTERM: Close 1001 to the server, the program stopped, a clean exit.
    client.signal(nix::sys::signal::Signal::SIGTERM);
    let status = client.wait_exit(STEP).await;
    assert!(status.code().is_some(), "exited, not killed: {status:?}");
    server.wait_log("close_received=1001").await;
    assert!(client.log().contains("close_sent=1001"), "{}", client.log());
}

#[tokio::test]
async fn bad_command_lines_are_usage_errors_and_a_missing_program_one_line() {
    for (args, needle) in [
        (vec!["--connect=http://h/"], "ws:// or wss://"),
        (vec!["--connect=ws://h/", "--port=80"], "--port is a server flag"),
        (
            vec!["--connect=ws://h/", "--staticdir=."],
            "--staticdir is a server flag",
        ),
        (vec!["--connect=ws://h/", "--proxy=socks5://p:1"], "only http://"),
        (vec!["--connect=ws://h/", "--sslca=x.pem"], "wss://"),
        (vec!["--connect=ws://h/", "--origin=a,b"], "one Origin"),
        (vec!["--connect=ws://h/", "--header=Upgrade: x"], "itself"),
        (vec!["--reconnect", "cat"], "need --connect"),
        (vec!["--connect=ws://h/", "--insecure"], "wss://"),
        (vec!["--connect=wss://h/", "--insecure", "--sslca=x.pem"], "give one"),
    ] {
        let run = client(&args, &[], Some(b""), STEP).await;
        crate::common::assert_usage_error(run.code, &run.stderr, needle);
    }
    let run = client(&["--connect=ws://h/", "no-such-program-xyz"], &[], Some(b""), STEP).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stderr, "wsbridge: program no-such-program-xyz not found on PATH\n");
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn client_certificate_for_a_server_that_requires_one() {
    let pki = certs();
    make_ca(&pki.0, "cli");
    make_leaf(&pki.0, "cli", "client", true);
    let require = format!("--sslca={}", pki.path("cli-ca.pem").display());
    let server = tls_server(&pki, &[require.as_str(), "cat"]);
    let url = format!("--connect=wss://127.0.0.1:{}/", server.tcp_addr().port());
    let ca = format!("--sslca={}", pki.path("srv-ca.pem").display());
    let cert = format!("--sslcert={}", pki.path("client.pem").display());
    let key = format!("--sslkey={}", pki.path("client.key").display());
    let run = client(&[&url, &ca, &cert, &key], &[], Some(b"mtls\n"), STEP).await;
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "mtls\n"), "{}", run.stderr);
    // Without it the server refuses us: one line, exit 1.
    let run = client(&[&url, &ca], &[], Some(b"x\n"), STEP).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
}

/// A listener that accepts and then, per connection, writes `answer` and stays silent.
async fn fake_peer(answer: Vec<u8>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            let _ = sock.write_all(&answer).await;
            held.push(sock); // never closed, never answered further
        }
    });
    (addr, task)
}

#[tokio::test]
async fn silent_or_babbling_peers_are_bounded_errors_not_hangs() {
    // A proxy that accepts and never answers CONNECT.
    let (silent, t1) = fake_peer(Vec::new()).await;
    let via = format!("--proxy=http://{silent}");
    let run = client(
        &["--connect=ws://example.com/", &via, "--connect-timeout=1"],
        &[],
        Some(b""),
        STEP,
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        run.stderr,
        format!("wsbridge: proxy {silent}: no answer to CONNECT example.com:80 within 1s\n")
    );
    assert!(run.took < Duration::from_secs(4), "took {:?}", run.took);
    // A proxy whose answer head never ends: cut at 8 KiB.
    let (babbling, t2) = fake_peer(format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(9000)).into_bytes()).await;
    let via = format!("--proxy=http://{babbling}");
    let run = client(&["--connect=ws://example.com/", &via], &[], Some(b""), STEP).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("longer than 8192 bytes"), "{}", run.stderr);
    // A server that accepts and never answers the WebSocket handshake.
    let url = format!("--connect=ws://{silent}/");
    let run = client(&[&url, "--connect-timeout=1"], &[], Some(b""), STEP).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("timed out after 1s"), "{}", run.stderr);
    t1.abort();
    t2.abort();
}

#[tokio::test]
async fn a_plain_tungstenite_server_sees_masked_frames_and_the_exit_status_close() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        // tungstenite's server side refuses unmasked client frames (RFC 6455 §5.1).
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("handshake");
        ws.send(Message::text("ping-me")).await.expect("send");
        let mut seen = Vec::new();
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => seen.push(t.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    let frame = frame.expect("a close code");
                    return (seen, frame.code, frame.reason.to_string());
                }
                Some(Ok(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let url = format!("--connect=ws://{addr}/");
    let run = client(
        &[&url, "sh", "-c", "read line; echo \"got $line\"; exit 3"],
        &[],
        None,
        STEP,
    )
    .await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let (seen, code, reason) = within(STEP, server).await.expect("server task");
    assert_eq!(seen, ["got ping-me"]);
    assert_eq!((code, reason.as_str()), (CloseCode::Error, "exit status 3"));
}

#[tokio::test]
async fn pipe_mode_ends_when_its_stdout_is_closed() {
    use tokio::io::AsyncReadExt;
    // `wsbridge --connect=ws://feed | head -c 5`: an endless feed must not keep it running.
    let server = BinServer::start(&["yes", "tick"]);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsbridge"));
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    let mut child = cmd
        .arg(format!("--connect={}", server.url("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the client");
    let _stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 5];
    within(STEP, stdout.read_exact(&mut first)).await.expect("read");
    assert_eq!(&first, b"tick\n");
    drop(stdout);
    let status = within(STEP, child.wait()).await.expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn a_self_signed_server_needs_an_explicit_and_loud_insecure() {
    // `openssl req -x509` as people make it: a CA certificate used as the server's own.
    let dir = TempDir::new("outbound-selfsigned");
    openssl(
        &dir.0,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-subj",
            "/CN=self",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    let server = tls_server(&dir, &["cat"]);
    let url = format!("--connect=wss://127.0.0.1:{}/", server.tcp_addr().port());
    let ca = format!("--sslca={}", dir.path("server.pem").display());
    let run = client(&[&url, &ca], &[], Some(b"x\n"), STEP).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("openssl req -x509"), "a hint: {}", run.stderr);
    let run = client(&[&url, "--insecure"], &[], Some(b"anyway\n"), STEP).await;
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "anyway\n"), "{}", run.stderr);
    assert!(
        run.stderr.contains("WARN") && run.stderr.contains("NOT checked"),
        "{}",
        run.stderr
    );
}
