//! The accept loop: one task per listener, one task per connection (with its span), the
//! TLS handshake inside that task, hyper serving HTTP/1.1 with upgrades on each, the
//! `--trusted-proxy` view of the client per request, `--redirport` answers, and the drain
//! on shutdown. A connection's error ends in its own task; accept errors back off and
//! retry. Binding is [`crate::listen`]'s; certificates are [`crate::tls`]'s.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::access::Record;
use crate::body::{self, Body};
use crate::config::{Config, Mode, Serve, Session};
use crate::http;
use crate::listen::Listener;
use crate::metrics;
use crate::net::Peer;
use crate::reap;
use crate::session::CLOSE_TIMEOUT;
use crate::state::{Conn, Endpoint};
use crate::stats;

#[cfg(feature = "tls")]
pub use crate::tls::{Tls, TlsError};

/// Without the `tls` feature there is no TLS state ([`Serve::tls`] is always `None`).
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
pub enum Tls {}

/// Without the `tls` feature the one TLS failure is having asked for it.
#[cfg(not(feature = "tls"))]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--ssl: this wsbridge was built without TLS (cargo feature `tls`)")]
    NotBuilt,
}

/// A client must send its whole request head within this time (slowloris bound).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS client must finish its handshake within this time (the same bound as a head).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = HEADER_TIMEOUT;
/// hyper's read buffer limit (it answers 431 when a head does not fit); the exact bound
/// on header size is [`http::MAX_HEAD_BYTES`].
const HYPER_BUF_BYTES: usize = 2 * http::MAX_HEAD_BYTES;
/// Longest pause between accept retries when out of file descriptors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Loads the TLS settings of `config` (if any), then [`serve`]s. For embedding and tests;
/// `main` loads TLS itself so that it can reload it on SIGHUP. A `--connect` config is
/// refused (`InvalidInput`).
pub async fn run<L: Into<Listener>>(
    listeners: impl IntoIterator<Item = L>,
    config: Config,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // Without the `connect` feature serving is the only mode, hence the allow.
    #[allow(clippy::infallible_destructuring_match)]
    let settings = match config.mode {
        Mode::Serve(s) => s,
        #[cfg(feature = "connect")]
        Mode::Connect(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a --connect config does not serve",
            ))
        }
    };
    let tls = load_tls(&settings).map_err(io::Error::other)?;
    let listeners = listeners.into_iter().map(Into::into).collect();
    serve(listeners, config.session, settings, tls, shutdown)
        .await
        .map(drop)
}

/// The TLS state for `settings`: `None` without `--ssl`.
pub fn load_tls(settings: &Serve) -> Result<Option<Tls>, TlsError> {
    match &settings.tls {
        None => Ok(None),
        #[cfg(feature = "tls")]
        Some(files) => Tls::load(files).map(Some),
        #[cfg(not(feature = "tls"))]
        Some(_) => Err(TlsError::NotBuilt),
    }
}

/// Serves on `listeners` until `shutdown` is cancelled, then stops accepting, sends every
/// session Close 1001, stops every program and returns once all are reaped (or a bounded
/// time has passed). TCP listeners speak TLS when `tls` is given; Unix sockets never do.
/// Returns wsbridge's exit status: 0, or with `--shared=once` the program's.
pub async fn serve(
    listeners: Vec<Listener>,
    session: Session,
    settings: Serve,
    tls: Option<Tls>,
    shutdown: CancellationToken,
) -> io::Result<u8> {
    let drain_limit = reap::max_stop_time(session.close_grace) + 2 * CLOSE_TIMEOUT + Duration::from_secs(1);
    let ep = Arc::new(Endpoint::new(session, settings, shutdown.clone()));
    let connections = TaskTracker::new();
    let mut accepting = Vec::new();
    for l in listeners {
        let (acceptor, kind) = match l {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                (Acceptor::Tcp(TcpListener::from_std(l)?), Kind::Main(tls.clone()))
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                (Acceptor::Unix(UnixListener::from_std(l)?), Kind::Main(None))
            }
            Listener::Metrics(l) => {
                l.set_nonblocking(true)?;
                stats::enable();
                let l = TcpListener::from_std(l)?;
                accepting.push(tokio::spawn(metrics::serve(l, Arc::clone(&ep))));
                continue;
            }
            Listener::Redirect { listener, to_port } => {
                listener.set_nonblocking(true)?;
                let scheme = if tls.is_some() { "https" } else { "http" };
                (
                    Acceptor::Tcp(TcpListener::from_std(listener)?),
                    Kind::Redirect { scheme, to_port },
                )
            }
        };
        accepting.push(tokio::spawn(accept_loop(
            acceptor,
            kind,
            Arc::clone(&ep),
            connections.clone(),
        )));
    }
    shutdown.cancelled().await;
    for task in accepting {
        let _ = task.await;
    }
    connections.close();
    ep.sessions.close();
    let drained = tokio::time::timeout(drain_limit, async {
        connections.wait().await;
        ep.sessions.wait().await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("all sessions ended"),
        Err(_) => tracing::warn!(sessions = ep.sessions.len(), "shutdown drain timed out"),
    }
    Ok(ep.hub.as_ref().map_or(0, |hub| hub.exit_status()))
}

enum Acceptor {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Stream {
    Tcp(TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Acceptor {
    async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Acceptor::Tcp(l) => l.accept().await.map(|(s, a)| (Stream::Tcp(s), Peer::Addr(a))),
            Acceptor::Unix(l) => l.accept().await.map(|(s, _)| (Stream::Unix(s), Peer::Unix)),
        }
    }
}

/// What a listener's connections get.
#[derive(Clone)]
enum Kind {
    /// WebSocket and HTTP; TLS first when given.
    Main(Option<Tls>),
    /// `--redirport`: 301 to `scheme://host:to_port/same-path`.
    Redirect { scheme: &'static str, to_port: u16 },
}

async fn accept_loop(listener: Acceptor, kind: Kind, ep: Arc<Endpoint>, connections: TaskTracker) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = ep.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_resource_exhaustion(&e) => {
                tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "accept failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = ep.shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        let conn = Conn {
            peer,
            proxy: None,
            id: ep.next_conn_id(),
            tls: false,
        };
        // Each request has a span of its own inside this one (see crate::http::serve).
        let span = tracing::info_span!("conn", id = conn.id, peer = %peer);
        connections.spawn(serve_connection(stream, conn, kind.clone(), Arc::clone(&ep)).instrument(span));
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

async fn serve_connection(stream: Stream, conn: Conn, kind: Kind, ep: Arc<Endpoint>) {
    let tcp = match stream {
        Stream::Unix(s) => return serve_main(s, conn, ep).await,
        Stream::Tcp(tcp) => tcp,
    };
    // Messages are small and interactive; never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    match kind {
        Kind::Redirect { scheme, to_port } => {
            let local = tcp.local_addr().ok();
            let ep2 = Arc::clone(&ep);
            let service = service_fn(move |req| {
                let ep = Arc::clone(&ep2);
                async move {
                    let record = Record::new(
                        conn.id,
                        conn.peer,
                        None,
                        req.method().clone(),
                        req.uri().path(),
                        req.uri().query(),
                    );
                    record.handler("redirect");
                    Ok::<_, Infallible>(record.answer(redirect(&req, scheme, to_port, local, &ep)))
                }
            });
            serve_http(tcp, service, &ep.shutdown).await;
        }
        Kind::Main(None) => serve_main(tcp, conn, ep).await,
        #[cfg(feature = "tls")]
        Kind::Main(Some(tls)) => {
            let handshake = tokio::select! {
                r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)) => r,
                () = ep.shutdown.cancelled() => return,
            };
            match handshake {
                Ok(Ok(stream)) => serve_main(stream, Conn { tls: true, ..conn }, ep).await,
                // One access line per connection that never got to HTTP, as for requests.
                Ok(Err(e)) => {
                    stats::tls_failed();
                    tracing::info!(target: "wsbridge::access", parent: None, conn = conn.id, peer = %conn.peer,
                        error = %crate::tls::explain_io(&e, "client certificate"), "tls handshake failed")
                }
                Err(_) => {
                    stats::tls_failed();
                    tracing::info!(target: "wsbridge::access", parent: None,
                        conn = conn.id, peer = %conn.peer, "tls handshake timed out")
                }
            }
        }
        #[cfg(not(feature = "tls"))]
        Kind::Main(Some(never)) => match never {},
    }
}

/// Serves WebSocket and HTTP on one connection. Each request sees the client through
/// `--trusted-proxy` (address, port, scheme); its span records it as `client`.
async fn serve_main<I>(io: I, conn: Conn, ep: Arc<Endpoint>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ep2 = Arc::clone(&ep);
    let service = service_fn(move |req: Request<Incoming>| {
        let mut c = conn;
        let proxies = &ep2.serve.trusted_proxies;
        if !proxies.is_empty() {
            c.proxy = proxies.trusts(&conn.peer).then_some(conn.peer);
            let client = proxies.client(conn.peer, conn.tls, req.headers());
            c.peer = client.peer;
            c.tls = client.tls;
        }
        http::serve(req, Arc::clone(&ep2), c)
    });
    serve_http(io, service, &ep.shutdown).await;
}

async fn serve_http<I, S>(io: I, service: S, shutdown: &CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(HYPER_BUF_BYTES);
    let served = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    let mut served = std::pin::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        () = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_TIMEOUT, served.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

/// The `--redirport` answer: 301 to the same host (the request's `Host` without its port,
/// or this listener's own address when `Host` is missing or unusable) on the main port,
/// keeping path and query.
fn redirect(
    req: &Request<Incoming>,
    scheme: &str,
    to_port: u16,
    local: Option<SocketAddr>,
    ep: &Endpoint,
) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_without_port)
        .map(str::to_owned)
        .or_else(|| {
            local.map(|a| match a.ip().to_canonical() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            })
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = if to_port == default_port {
        String::new()
    } else {
        format!(":{to_port}")
    };
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("{scheme}://{host}{port}{target}");
    let extra = &ep.serve.headers;
    let mut resp = body::text(StatusCode::MOVED_PERMANENTLY, &format!("moved to {location}"));
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    for (name, value) in extra.all.iter().chain(&extra.http) {
        resp.headers_mut().append(name.clone(), value.clone());
    }
    resp
}

/// The host part of a `Host` header value, if it looks like a host name or address
/// (`name`, `name:port`, `[v6]`, `[v6]:port`); anything else is not echoed back.
fn host_without_port(h: &str) -> Option<&str> {
    let host = if h.starts_with('[') {
        let end = h.find(']')?;
        let rest = &h[end + 1..];
        if !(rest.is_empty() || rest.starts_with(':')) {
            return None;
        }
        &h[..=end]
    } else {
        match h.rsplit_once(':') {
            Some((name, _port)) => name,
            None => h,
        }
    };
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':'));
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_host_forms() {
        assert_eq!(host_without_port("example.com:8081"), Some("example.com"));
        assert_eq!(host_without_port("example.com"), Some("example.com"));
        assert_eq!(host_without_port("[::1]:8081"), Some("[::1]"));
        assert_eq!(host_without_port("[::1]"), Some("[::1]"));
        assert_eq!(host_without_port("[::1]x"), None);
        assert_eq!(host_without_port("evil.com/x"), None);
        assert_eq!(host_without_port(""), None);
        assert_eq!(host_without_port("a b"), None);
    }
}
