//! Helpers for the deployment tests (tls, deploy, nginx, outbound): the binary started with any
//! command line and its startup lines read, WebSocket clients over TCP, Unix sockets and
//! TLS, certificates made with the `openssl` command, and a program that reports its
//! client. Every wait has a deadline.
#![allow(dead_code)]

pub use super::proc::Proc;
pub use super::{within, STEP};

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A program that prints `REMOTE_ADDR|REMOTE_PORT|HTTPS|SERVER_PORT|INSTANCE` and then
/// echoes.
pub const REPORTER: [&str; 3] = [
    "sh",
    "-c",
    "printf '%s|%s|%s|%s|%s\\n' \"$REMOTE_ADDR\" \"$REMOTE_PORT\" \"${HTTPS:-off}\" \"$SERVER_PORT\" \"$INSTANCE\"; exec cat",
];

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("wsbridge-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// wsbridge with `--ssl` on 127.0.0.1 (port 0) with `dir`'s `server.pem`/`server.key`
/// (from [`make_leaf`]), then `rest`: more flags, PROGRAM and its arguments.
pub fn tls_server(dir: &TempDir, rest: &[&str]) -> Proc {
    let cert = format!("--sslcert={}", dir.path("server.pem").display());
    let key = format!("--sslkey={}", dir.path("server.key").display());
    let mut args = vec!["--port=0", "--address=127.0.0.1", "--ssl", &cert, &key];
    args.extend(rest);
    Proc::start(&args, &[], 1)
}

/// Runs the binary to completion (for startup errors).
pub fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut c = Proc::command();
    c.args(args);
    let out = c.output().expect("run wsbridge");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Makes `cmd` see `fd` as its descriptor 3, for socket activation. The caller sets
/// `LISTEN_FDS` and `LISTEN_PID` (through `sh -c 'LISTEN_PID=$$ exec ...'`, since the pid
/// is only known in the child).
pub fn pass_as_fd3(cmd: &mut Command, fd: std::os::fd::RawFd) {
    // SAFETY: between fork and exec only async-signal-safe calls are made (dup2, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A WebSocket over any stream.
pub async fn ws_over<S: AsyncRead + AsyncWrite + Unpin>(url: &str, stream: S) -> WebSocketStream<S> {
    within(STEP, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("websocket handshake")
        .0
}

/// A WebSocket over a Unix socket.
pub async fn ws_unix(path: &Path) -> WebSocketStream<tokio::net::UnixStream> {
    let s = within(STEP, tokio::net::UnixStream::connect(path))
        .await
        .expect("connect unix socket");
    ws_over("ws://localhost/", s).await
}

/// A WebSocket over TCP with extra request headers.
pub async fn ws_tcp(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/").into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let s = within(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    within(STEP, tokio_tungstenite::client_async(req, s))
        .await
        .expect("websocket handshake")
        .0
}

/// The next text message, skipping pings and pongs.
pub async fn next_text<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> String {
    loop {
        match within(STEP, ws.next())
            .await
            .expect("stream ended")
            .expect("websocket error")
        {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Sends `text` and expects it back (the REPORTER program echoes).
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, text: &str) {
    within(STEP, ws.send(Message::text(text))).await.expect("send");
    assert_eq!(next_text(ws).await, text);
}

/// The REPORTER's first line, split: [addr, port, https, server_port, instance].
pub async fn report<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Vec<String> {
    next_text(ws).await.split('|').map(str::to_owned).collect()
}

/// Runs `openssl` with `args` in `dir`, failing the test on error.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `openssl` with a command line split on spaces (no argument contains one).
fn openssl_words(dir: &Path, line: &str) {
    openssl(dir, &line.split_whitespace().collect::<Vec<_>>());
}

/// Makes a CA (`NAME-ca.pem`, `NAME-ca.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    openssl_words(
        dir,
        &format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}-ca.key \
             -out {name}-ca.pem -days 2 -subj /CN={name}-test-CA \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
}

/// Makes a leaf certificate `LEAF.pem`/`LEAF.key` signed by CA `ca`: a server
/// certificate for localhost and 127.0.0.1, or a client certificate.
pub fn make_leaf(dir: &Path, ca: &str, leaf: &str, client: bool) {
    openssl_words(
        dir,
        &format!(
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {leaf}.key \
             -out {leaf}.csr -subj /CN={leaf}"
        ),
    );
    let ext = if client {
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"
    } else {
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    };
    std::fs::write(dir.join(format!("{leaf}.ext")), ext).expect("write ext");
    openssl_words(
        dir,
        &format!(
            "x509 -req -in {leaf}.csr -CA {ca}-ca.pem -CAkey {ca}-ca.key -CAcreateserial \
             -out {leaf}.pem -days 2 -extfile {leaf}.ext"
        ),
    );
}
