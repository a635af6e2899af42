//! `--connect=URL`: the other direction. wsbridge opens one WebSocket to a server (through
//! an HTTP proxy when one applies, see [`proxy`]; TLS for wss://) and relays it to PROGRAM
//! exactly as the server side does, through [`crate::session`] with the client role (our
//! frames are masked). Without PROGRAM, wsbridge's own stdin/stdout are the program's I/O
//! (pipe mode). `--reconnect` starts again after every ending with a capped, jittered
//! exponential backoff; a fresh program per connection.
//!
//! Exit status without `--reconnect` (and with it after SIGINT/SIGTERM): the program's
//! (128+N when a signal ended it); in pipe mode 0 after a normal close (1000, or a Close
//! without a code), else 1; 1 when the connection could not be made or failed; 0 when a
//! signal came while no session was running (connecting, or waiting to reconnect).

pub mod proxy;
#[cfg(feature = "tls")]
mod tls;

use std::ffi::OsString;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use hyper::http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_util::sync::{CancellationToken, PollSender};

use crate::config::connect::{Settings, Target};
use crate::config::Config;
use crate::session::{self, Outcome, ProgramIo, Side, Socket, Transport};

/// `--reconnect`: the first delay, doubled after each failure up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the backoff.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// A ready client: settings plus the TLS configuration (built once, at startup).
pub struct Client {
    settings: Settings,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsConnector>,
}

/// Builds the client for `config` (which must have `outbound`); TLS files are read here,
/// so a bad one is a startup error.
pub fn prepare(config: &Config) -> Result<Client, String> {
    let settings = config
        .outbound
        .clone()
        .ok_or_else(|| "not in --connect mode".to_owned())?;
    #[cfg(feature = "tls")]
    {
        let tls = match settings.target.secure {
            true => Some(tls::connector(
                settings.ca.as_deref(),
                settings.client_cert.as_ref(),
                settings.insecure,
            )?),
            false => None,
        };
        Ok(Client { settings, tls })
    }
    #[cfg(not(feature = "tls"))]
    {
        if settings.target.secure {
            return Err("wss:// needs TLS: this wsbridge was built without it (cargo feature `tls`)".into());
        }
        Ok(Client { settings })
    }
}

impl Client {
    /// Connects (through the proxy, if any), does TLS and the WebSocket handshake; returns
    /// the socket and the subprotocol the server chose.
    async fn connect(&self, config: &Config) -> Result<(Socket, Option<String>), String> {
        let s = &self.settings;
        let t = &s.target;
        let step = s.step_timeout;
        let tcp = match &s.proxy {
            Some(p) => proxy::tunnel(p, t, step).await?,
            None => match tokio::time::timeout(step, TcpStream::connect((t.host.as_str(), t.port))).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => return Err(format!("cannot connect to {}: {}", t.shown(), proxy::lower(&e))),
                Err(_) => return Err(format!("cannot connect to {}: timed out after {step:?}", t.shown())),
            },
        };
        let _ = tcp.set_nodelay(true);
        let request = self.request(config)?;
        let ws_config = Some(crate::ws::ws_config(config));
        #[cfg(feature = "tls")]
        if let Some(connector) = &self.tls {
            if s.insecure {
                tracing::warn!(
                    server = %t.shown(),
                    "--insecure: the server's certificate is NOT checked; anyone on the path can read and change this connection"
                );
            }
            let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|_| format!("cannot use {:?} as a TLS server name", t.host))?;
            let tls = match tokio::time::timeout(step, connector.connect(name, tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    return Err(format!(
                        "TLS handshake with {} failed: {}",
                        t.shown(),
                        tls::describe(&e)
                    ))
                }
                Err(_) => return Err(format!("TLS handshake with {} timed out", t.shown())),
            };
            return handshake(request, Box::new(tls), ws_config, t, step).await;
        }
        handshake(request, Box::new(tcp), ws_config, t, step).await
    }

    fn request(&self, config: &Config) -> Result<Request, String> {
        let s = &self.settings;
        let mut req = s
            .target
            .url()
            .into_client_request()
            .map_err(|e| format!("cannot build the request for {}: {e}", s.target.url()))?;
        let h = req.headers_mut();
        h.insert(
            hyper::header::USER_AGENT,
            HeaderValue::from_static(concat!("wsbridge/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(origin) = &s.origin {
            h.insert(hyper::header::ORIGIN, origin.clone());
        }
        if !config.subprotocols.all.is_empty() {
            // Config checked every name is a token.
            let list = HeaderValue::from_str(&config.subprotocols.all.join(", "))
                .map_err(|_| "invalid --subprotocol list".to_owned())?;
            h.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, list);
        }
        for (name, _) in &s.headers {
            h.remove(name);
        }
        for (name, value) in &s.headers {
            h.append(name.clone(), value.clone());
        }
        Ok(req)
    }
}

async fn handshake(
    request: Request,
    stream: Box<dyn Transport>,
    ws_config: Option<tokio_tungstenite::tungstenite::protocol::WebSocketConfig>,
    t: &Target,
    step: Duration,
) -> Result<(Socket, Option<String>), String> {
    let url = t.url();
    let shake = tokio_tungstenite::client_async_with_config(request, stream, ws_config);
    let (ws, response) = match tokio::time::timeout(step, shake).await {
        Ok(Ok(r)) => r,
        Ok(Err(WsError::Http(resp))) => {
            let status = resp.status();
            return Err(format!(
                "{url} refused the WebSocket upgrade: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_owned());
        }
        Ok(Err(e)) => return Err(format!("WebSocket handshake with {url} failed: {e}")),
        Err(_) => return Err(format!("WebSocket handshake with {url} timed out after {step:?}")),
    };
    let protocol = response
        .headers()
        .get(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, protocol))
}

/// What one attempt came to.
enum Attempt {
    /// The connection could not be made.
    Failed(String),
    /// A session ran; its ending and how long it lasted.
    Ran(Outcome, Duration),
    /// SIGINT/SIGTERM while connecting.
    Cancelled,
}

/// Runs `--connect` until it is over (once, or with `--reconnect` until a signal) and
/// returns the exit status.
pub async fn run(client: Client, config: &Config, signalled: CancellationToken) -> u8 {
    // In pipe mode a closed stdout (`... | head -1`) ends the run like a signal does.
    let shutdown = signalled.child_token();
    let mut pipes = config.program.is_none().then(|| Pipes::new(shutdown.clone()));
    let mut backoff = Backoff::new();
    let mut code: u8;
    let reconnect = client.settings.reconnect;
    let url = client.settings.target.url();
    loop {
        tracing::debug!(
            url = %url,
            proxy = client.settings.proxy.as_ref().map(|p| p.shown()),
            "connecting"
        );
        // Only the connection is abandoned on a signal; a running session handles the
        // signal itself (Close 1001, program stopped).
        let connected = tokio::select! {
            r = client.connect(config) => Some(r),
            () = shutdown.cancelled() => None,
        };
        let attempt = match connected {
            None => Attempt::Cancelled,
            Some(Err(e)) => Attempt::Failed(e),
            Some(Ok(conn)) => {
                let started = Instant::now();
                match run_session(conn, config, &url, &shutdown, pipes.as_mut()).await {
                    Ok(outcome) => Attempt::Ran(outcome, started.elapsed()),
                    Err(e) => Attempt::Failed(e),
                }
            }
        };
        match attempt {
            Attempt::Cancelled => {
                code = 0; // a requested stop, with no session running
                break;
            }
            Attempt::Failed(e) if !reconnect => {
                // The one line a user sees, like a startup error.
                eprintln!("wsbridge: {e}");
                code = 1;
                break;
            }
            Attempt::Failed(e) => {
                code = 1;
                tracing::warn!(error = %e, "connection failed");
            }
            Attempt::Ran(outcome, lasted) => {
                code = exit_code(&outcome);
                if lasted >= BACKOFF_RESET_AFTER {
                    backoff.reset();
                }
                if outcome.shutdown || !reconnect {
                    break;
                }
                if pipes.as_ref().is_some_and(|p| p.stdin.eof) {
                    tracing::info!("stdin is at EOF: not reconnecting");
                    break;
                }
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        let delay = backoff.next_delay();
        tracing::info!(retry_in_ms = delay.as_millis() as u64, "reconnecting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => {
                code = 0;
                break;
            }
        }
    }
    if let Some(p) = pipes {
        p.finish().await;
    }
    code
}

/// The exit status one session stands for.
fn exit_code(o: &Outcome) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match &o.status {
        _ if o.failed => 1,
        Some(Ok(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => c as u8,
            (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
            _ => 1,
        },
        Some(Err(_)) => 1,
        None => match o.close {
            None | Some(1000) | Some(1005) => 0,
            Some(1001) if o.shutdown => 0,
            Some(_) => 1,
        },
    }
}

/// Starts the program (or takes our own stdin/stdout) and runs the session.
async fn run_session(
    (ws, protocol): (Socket, Option<String>),
    config: &Config,
    url: &str,
    shutdown: &CancellationToken,
    pipes: Option<&mut Pipes>,
) -> Result<Outcome, String> {
    tracing::info!(url, protocol = protocol.as_deref(), "connected");
    let Some(program) = &config.program else {
        let pipes = pipes.ok_or_else(|| "pipe mode without pipes".to_owned())?;
        let io = ProgramIo {
            input: Box::new(&mut pipes.stdout),
            output: Box::new(&mut pipes.stdin),
            stderr: None,
        };
        return Ok(session::run_with(ws, None, io, config, shutdown, Side::Client).await);
    };
    let mut vars: Vec<(OsString, OsString)> = config
        .passenv
        .iter()
        .filter(|(k, _)| k != "WEBSOCKET_URL" && k != "WEBSOCKET_PROTOCOL")
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    vars.push(("WEBSOCKET_URL".into(), url.into()));
    if let Some(p) = &protocol {
        vars.push(("WEBSOCKET_PROTOCOL".into(), p.into()));
    }
    let pty = config.pty.then(crate::pty::WinSize::default);
    let started = session::start(program, vars, pty);
    let (child, io) = match started {
        Ok(s) => s,
        Err(e) => {
            // Tell the server, as our server side would answer 500.
            let mut ws = ws;
            let frame = CloseFrame {
                code: CloseCode::Error,
                reason: "failed to start the program".into(),
            };
            let _ = tokio::time::timeout(session::CLOSE_TIMEOUT, ws.close(Some(frame))).await;
            return Err(format!("cannot start {}: {e}", program.path.display()));
        }
    };
    tracing::debug!(pid = child.id(), "program started");
    Ok(session::run_with(ws, Some(child), io, config, shutdown, Side::Client).await)
}

/// `--reconnect` delays: start at [`BACKOFF_START`], double up to [`BACKOFF_MAX`]; each
/// delay is 75–100% of the nominal one, so clients that lost the same server do not come
/// back in step, and the delays still grow strictly.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_START }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        nominal.mul_f64(0.75 + 0.25 * random_unit())
    }
}

/// A number in [0, 1) from std's randomly keyed hasher (no RNG dependency needed for
/// jitter).
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Pipe mode: wsbridge's own stdin and stdout, kept across reconnects so nothing read
/// ahead is lost between sessions.
struct Pipes {
    stdin: Stdin,
    stdout: Stdout,
}

impl Pipes {
    /// `stdout_closed` is cancelled when stdout can no longer be written.
    fn new(stdout_closed: CancellationToken) -> Self {
        Pipes {
            stdin: Stdin::new(),
            stdout: Stdout::new(stdout_closed),
        }
    }

    /// Waits until everything queued for stdout is written.
    async fn finish(self) {
        let Pipes { stdin, stdout } = self;
        drop(stdin); // its thread may be blocked in read(2); it ends with the process
        let Stdout { tx, thread } = stdout;
        drop(tx);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Our stdin, read by a thread of its own (a blocking read cannot be cancelled, and stdin
/// may be a terminal or a file, which epoll cannot watch), noting EOF: pipe mode does not
/// reconnect once it is reached. Chunks read ahead wait in a small bounded queue.
struct Stdin {
    rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Part of a chunk not yet returned.
    rest: Vec<u8>,
    eof: bool,
}

impl Stdin {
    fn new() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut input = std::io::stdin().lock();
            let mut buf = vec![0u8; crate::relay::READ_CHUNK];
            loop {
                let chunk = match input.read(&mut buf) {
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let done = !matches!(&chunk, Ok(c) if !c.is_empty());
                if tx.blocking_send(chunk).is_err() || done {
                    return;
                }
            }
        });
        Stdin {
            rx,
            rest: Vec::new(),
            eof: false,
        }
    }
}

impl AsyncRead for Stdin {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.rest.is_empty() && !self.eof {
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(chunk)) if !chunk.is_empty() => self.rest = chunk,
                Some(Err(e)) => {
                    self.eof = true;
                    return Poll::Ready(Err(e));
                }
                _ => self.eof = true,
            }
        }
        let n = self.rest.len().min(buf.remaining());
        buf.put_slice(&self.rest[..n]);
        self.rest.drain(..n);
        Poll::Ready(Ok(()))
    }
}

/// Our stdout, written and flushed by a thread of its own, so every message reaches it at
/// once (std's stdout is line-buffered, which would hold back binary data) and a blocked
/// stdout never blocks the runtime. The queue is bounded: a stdout that is not read pushes
/// back on the socket like a program's stdin does.
struct Stdout {
    tx: PollSender<Vec<u8>>,
    thread: std::thread::JoinHandle<()>,
}

impl Stdout {
    fn new(closed: CancellationToken) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let thread = std::thread::spawn(move || {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = out.write_all(&chunk).and_then(|()| out.flush()) {
                    // Nobody reads what the server sends any more: end the session.
                    tracing::info!(error = %e, "stdout is closed; closing the connection");
                    closed.cancel();
                    return; // later writes fail like a closed pipe
                }
            }
        });
        Stdout {
            tx: PollSender::new(tx),
            thread,
        }
    }
}

impl AsyncWrite for Stdout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "stdout is closed");
        ready!(self.tx.poll_reserve(cx)).map_err(|_| closed())?;
        self.tx.send_item(buf.to_vec()).map_err(|_| closed())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        for pair in delays.windows(2) {
            assert!(pair[1] > pair[0] || pair[1] >= BACKOFF_MAX.mul_f64(0.75), "{delays:?}");
        }
        assert!(delays[0] >= BACKOFF_START.mul_f64(0.75) && delays[0] <= BACKOFF_START);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        b.reset();
        assert!(b.next_delay() <= BACKOFF_START);
    }

    #[test]
    fn exit_codes() {
        use std::os::unix::process::ExitStatusExt;
        let o = |status, close, failed, shutdown| Outcome {
            status,
            close,
            failed,
            shutdown,
        };
        let st = |raw| Some(Ok(std::process::ExitStatus::from_raw(raw)));
        assert_eq!(exit_code(&o(st(3 << 8), Some(1011), false, false)), 3);
        assert_eq!(exit_code(&o(st(9), None, false, false)), 137);
        assert_eq!(exit_code(&o(st(0), None, true, false)), 1);
        assert_eq!(exit_code(&o(None, Some(1000), false, false)), 0);
        assert_eq!(exit_code(&o(None, None, false, false)), 0);
        assert_eq!(exit_code(&o(None, Some(1011), false, false)), 1);
        assert_eq!(exit_code(&o(None, Some(1001), false, true)), 0);
        assert_eq!(exit_code(&o(None, Some(1001), false, false)), 1);
    }
}
