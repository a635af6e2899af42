//! Test helpers: the server in-process ([`TestServer`]) or as the real binary
//! ([`BinServer`]), WebSocket client helpers, and polling with deadlines. Every await goes
//! through [`within`], so a bug fails the test instead of hanging it.
#![allow(dead_code)]

pub mod deploy;
pub mod proc;
pub mod rawhttp;
pub use proc::Proc;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use wsbridge::cli::Cli;
use wsbridge::Config;

/// The default bound for one step of a test.
pub const STEP: Duration = Duration::from_secs(10);

/// How long a program may take to be gone once its session ends: the ladder's SIGKILL
/// lands at 850 ms (with the default `--closems`), plus scheduling slack.
pub const LADDER: Duration = Duration::from_millis(850 + 2000);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Awaits `f`, failing the test if it takes longer than `d`.
pub async fn within<F: Future>(d: Duration, f: F) -> F::Output {
    match tokio::time::timeout(d, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?}"),
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`, `RssAnon`…).
pub fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Checks that a run of the binary ended as a usage error does: exit status 2 and, on
/// stderr, clap's format (`error: ` and a message containing `needle`, the usage line
/// unless a value was refused, the hint to try `--help`).
pub fn assert_usage_error(code: Option<i32>, stderr: &str, needle: &str) {
    assert_eq!(code, Some(2), "a usage error exits 2: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(needle),
        "{needle:?}: {stderr}"
    );
    // clap prints the usage line for every usage error but a refused value.
    if !first.starts_with("error: invalid value ") {
        assert!(stderr.contains("\n\nUsage: wsbridge "), "{stderr}");
    }
    assert!(
        stderr.ends_with("\n\nFor more information, try '--help'.\n"),
        "{stderr}"
    );
}

/// Path of a file under `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name].iter().collect();
    p.to_string_lossy().into_owned()
}

/// Path of a file under `examples`.
pub fn example(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "examples", name].iter().collect();
    p.to_string_lossy().into_owned()
}

/// The server running inside the test's runtime on 127.0.0.1 with an OS-chosen port.
/// Stops (cancel + drain) on [`TestServer::stop`] or, without waiting, on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    token: CancellationToken,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// `args` are wsbridge's command line without argv[0] (flags, then PROGRAM ARGS...).
    pub async fn start(args: &[&str]) -> Self {
        let mut argv = vec!["wsbridge".to_owned()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let cli = Cli::try_parse_args(argv.into_iter().map(Into::into)).expect("valid test command line");
        let config = Config::try_from(cli).expect("valid test config");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let token = CancellationToken::new();
        let handle = tokio::spawn(wsbridge::run(vec![listener], config, token.clone()));
        TestServer {
            addr,
            token,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Shuts down like SIGTERM does and waits for the drain to finish.
    pub async fn stop(mut self) {
        self.token.cancel();
        let handle = self.handle.take().expect("running");
        within(STEP, handle).await.expect("server task").expect("server result");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Opens a WebSocket to `url`.
pub async fn connect(url: &str) -> Ws {
    within(STEP, tokio_tungstenite::connect_async(url))
        .await
        .expect("websocket handshake")
        .0
}

/// The next data or close message, skipping pings and pongs.
pub async fn recv(ws: &mut Ws) -> Message {
    loop {
        let msg = within(STEP, ws.next())
            .await
            .expect("stream ended")
            .expect("websocket error");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The next message, which must be text.
pub async fn recv_text(ws: &mut Ws) -> String {
    match recv(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    within(STEP, ws.send(Message::text(text))).await.expect("send");
}

/// Reads until the server's Close frame and returns its code and reason; any data
/// message before it is returned too.
pub async fn recv_until_close(ws: &mut Ws) -> (Vec<Message>, CloseCode, String) {
    let mut data = Vec::new();
    loop {
        match recv(ws).await {
            Message::Close(Some(f)) => return (data, f.code, f.reason.to_string()),
            Message::Close(None) => return (data, CloseCode::Status, String::new()),
            m => data.push(m),
        }
    }
}

/// A WebSocket handshake over a raw TCP stream (so the test controls every byte after
/// it, and the client stays silent unless told otherwise): `GET path` with a fixed key;
/// `first` is sent in the same write as the request. Asserts the 101.
pub async fn raw_upgrade(addr: SocketAddr, path: &str, first: &[u8]) -> tokio::net::TcpStream {
    let tcp = within(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    raw_upgrade_on(tcp, addr, path, first).await
}

/// [`raw_upgrade`] on a stream the test connected itself (to set socket options first).
pub async fn raw_upgrade_on(
    mut tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    path: &str,
    first: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(first);
    within(STEP, tcp.write_all(&req)).await.expect("write");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed), up to and
/// including the blank line; each byte under [`STEP`].
pub async fn read_head(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        within(STEP, tcp.read_exact(&mut b)).await.expect("read head");
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// One unmasked frame from the server: (its first byte: FIN, RSV and opcode; payload).
/// `None` when the stream ends or stalls for [`STEP`].
pub async fn read_raw_frame(tcp: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 2];
    within(STEP, tcp.read_exact(&mut h)).await.ok()?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            within(STEP, tcp.read_exact(&mut l)).await.ok()?;
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            within(STEP, tcp.read_exact(&mut l)).await.ok()?;
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    within(STEP, tcp.read_exact(&mut payload)).await.ok()?;
    Some((h[0], payload))
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// Polls until `pid` is gone or `d` passes; true if it went.
pub async fn gone_within(pid: i32, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    !alive(pid)
}

/// The real binary, started with `--port=0 --address=127.0.0.1` plus `args`; its address
/// is read from the startup line. Killed on drop. Everything else ([`Proc::log`],
/// [`Proc::signal`], [`Proc::wait_exit`], …) comes from [`Proc`].
pub struct BinServer {
    pub addr: SocketAddr,
    proc: Proc,
}

impl BinServer {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like [`BinServer::start`], with extra variables in wsbridge's own environment.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(args, env, None)
    }

    /// Like [`BinServer::start`], with the open-files limit (RLIMIT_NOFILE) set to `nofile`.
    pub fn start_with_fd_limit(args: &[&str], nofile: u64) -> Self {
        Self::spawn(args, &[], Some(nofile))
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], nofile: Option<u64>) -> Self {
        let mut cmd = Proc::command();
        cmd.envs(env.iter().copied())
            .args(["--port=0", "--address=127.0.0.1"])
            .args(args);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the forked child.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        Self::from_proc(Proc::spawn(cmd, 1))
    }

    /// A server from a [`Proc`] that announced its TCP listener.
    pub fn from_proc(proc: Proc) -> Self {
        BinServer {
            addr: proc.tcp_addr(),
            proc,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

impl std::ops::Deref for BinServer {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for BinServer {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}
