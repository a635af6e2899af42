//! The server-wide state every connection shares ([`Endpoint`]: the session and serving
//! settings, the `--maxforks` slots, the session tracker, the connection counter, the `--shared` hub
//! and the shutdown token) and one accepted connection's facts ([`Conn`]). It owns that
//! state, not what is done with it: accepting is [`crate::server`]'s, answering is
//! [`crate::http`]'s and the handlers'.
//!
//! It sits below the WebSocket handshake and the HTTP handlers, which all take it, and
//! above [`crate::shared`], whose hub it holds; so it cannot live in `server.rs`, which
//! imports the HTTP layer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Serve, Session};
use crate::error::Refusal;
use crate::limit::{ClientKey, ClientSlot, PerClient};
use crate::net::Peer;
use crate::shared;

/// What every connection shares: settings, the fork limit, running sessions.
pub struct Endpoint {
    /// How each program runs and is relayed.
    pub session: Session,
    /// What the server does beyond that: listeners aside, everything a request meets.
    pub serve: Serve,
    forks: Option<Arc<Semaphore>>,
    /// Every session task, so shutdown can wait for them.
    pub sessions: TaskTracker,
    pub shutdown: CancellationToken,
    /// Server start in Unix nanoseconds; a connection's UNIQUE_ID is this plus its number.
    id_base: u64,
    /// The last connection number handed out, across all listeners.
    last_id: AtomicU64,
    /// `--shared`: the one program every connection joins.
    pub hub: Option<Arc<shared::Hub>>,
    /// `--maxperclient`: sessions open per client address.
    per_client: Option<Arc<PerClient>>,
    /// `--authmax`: access checks at once (apart from the `--maxforks` slots).
    pub auth_checks: Arc<Semaphore>,
}

/// One accepted TCP (or TLS) connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The client: the socket's peer, or who a `--trusted-proxy` says it is.
    pub peer: Peer,
    /// The socket's peer when it is a `--trusted-proxy`: the request came through it,
    /// and its forwarded headers are believed (and passed on by [`crate::upstream`]).
    pub proxy: Option<Peer>,
    /// Counts from 1 in accept order.
    pub id: u64,
    pub tls: bool,
}

impl Endpoint {
    pub fn new(session: Session, serve: Serve, shutdown: CancellationToken) -> Self {
        let id_base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let sessions = TaskTracker::new();
        let hub = serve.shared.map(|settings| {
            let broker = serve.broker.as_deref().cloned();
            shared::Hub::new(&session, settings, broker, shutdown.clone(), sessions.clone())
        });
        let per_client = serve.max_per_client.map(PerClient::new);
        Endpoint {
            auth_checks: Arc::new(Semaphore::new(serve.access.max_checks)),
            forks: serve.max_forks.map(|n| Arc::new(Semaphore::new(n))),
            session,
            serve,
            sessions,
            shutdown,
            id_base,
            last_id: AtomicU64::new(0),
            hub,
            per_client,
        }
    }

    /// The next connection number (from 1), unique across listeners.
    pub fn next_conn_id(&self) -> u64 {
        self.last_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// `UNIQUE_ID` for a request on `conn`.
    pub fn unique_id(&self, conn: &Conn) -> u64 {
        self.id_base.wrapping_add(conn.id)
    }

    /// Takes one of `conn`'s client's `--maxperclient` places for a session; `Ok(None)`
    /// when unlimited. Over the limit: a 429 refusal, before anything starts.
    pub fn client_slot(&self, conn: &Conn) -> Result<Option<ClientSlot>, Refusal> {
        let Some(table) = &self.per_client else { return Ok(None) };
        let key = ClientKey::of(&conn.peer);
        match table.take(key) {
            Some(slot) => Ok(Some(slot)),
            None => {
                let limit = table.max();
                tracing::warn!(target: "wsbridge::ws", client = %key, limit, "--maxperclient reached; upgrade refused");
                Err(Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many sessions from this client: {limit} are open (--maxperclient)"),
                ))
            }
        }
    }

    /// `--maxforks`: the slots in use and the limit; `None` when unlimited.
    pub fn fork_slots(&self) -> Option<(usize, usize)> {
        let (forks, limit) = (self.forks.as_ref()?, self.serve.max_forks?);
        Some((limit.saturating_sub(forks.available_permits()), limit))
    }

    /// Takes one `--maxforks` slot (sessions and CGI runs share them); `Ok(None)` when
    /// unlimited. Over the limit: a 429 refusal.
    pub fn fork_slot(&self) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        let Some(forks) = &self.forks else { return Ok(None) };
        match Arc::clone(forks).try_acquire_owned() {
            Ok(p) => Ok(Some(p)),
            Err(_) => {
                let limit = self.serve.max_forks.unwrap_or_default();
                // The target the line has always had (the handshake's), for log filters.
                tracing::warn!(target: "wsbridge::ws", limit, "--maxforks reached; upgrade refused");
                Err(Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many connections: {limit} programs are running (--maxforks)"),
                ))
            }
        }
    }
}
