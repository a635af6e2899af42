//! The accept loop: one task per listener, one task per connection (with its span), hyper
//! serving HTTP/1.1 with upgrades on each, and the drain on shutdown. A connection's error
//! ends in its own task; accept errors back off and retry.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::http;
use crate::reap;
use crate::session::CLOSE_TIMEOUT;
use crate::ws::{Conn, Endpoint};

/// A client must send its whole request head within this time (slowloris bound).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer limit (it answers 431 when a head does not fit); the exact bound
/// on header size is [`http::MAX_HEAD_BYTES`].
const HYPER_BUF_BYTES: usize = 2 * http::MAX_HEAD_BYTES;
/// Longest pause between accept retries when out of file descriptors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves on `listeners` until `shutdown` is cancelled, then stops accepting, sends every
/// session Close 1001, stops every program and returns once all are reaped (or a bounded
/// time has passed).
pub async fn run(listeners: Vec<std::net::TcpListener>, config: Config, shutdown: CancellationToken) -> io::Result<()> {
    let drain_limit = reap::max_stop_time(config.close_grace) + 2 * CLOSE_TIMEOUT + Duration::from_secs(1);
    let ep = Arc::new(Endpoint::new(config, shutdown.clone()));
    let connections = TaskTracker::new();
    let mut accepting = Vec::new();
    for l in listeners {
        l.set_nonblocking(true)?;
        let l = TcpListener::from_std(l)?;
        accepting.push(tokio::spawn(accept_loop(l, Arc::clone(&ep), connections.clone())));
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
    Ok(())
}

async fn accept_loop(listener: TcpListener, ep: Arc<Endpoint>, connections: TaskTracker) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = ep.shutdown.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
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
            id: ep.next_conn_id(),
            tls: false,
        };
        let span = tracing::info_span!("conn", id = conn.id, peer = %peer, path = tracing::field::Empty, pid = tracing::field::Empty);
        connections.spawn(serve_connection(tcp, conn, Arc::clone(&ep)).instrument(span));
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

async fn serve_connection(tcp: TcpStream, conn: Conn, ep: Arc<Endpoint>) {
    // Messages are small and interactive; never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let ep2 = Arc::clone(&ep);
    let service = service_fn(move |req| http::serve(req, Arc::clone(&ep2), conn));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(HYPER_BUF_BYTES);
    let served = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades();
    let mut served = std::pin::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        () = ep.shutdown.cancelled() => {
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
