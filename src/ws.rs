//! The WebSocket handshake (RFC 6455 §4.2) on a hyper request: checks, origin policy,
//! the `--maxforks` slot, starting the program, the 101 answer, and handing the upgraded
//! stream to [`crate::session`].
//!
//! `--subprotocol` is negotiated here (the client's first offer that we list for this
//! endpoint, or 400 when nothing matches), and with `--pty` the window size comes from
//! `?cols=&rows=`.
//!
//! The program is started before the 101 is sent, so a program that cannot start gets a
//! 500 instead of websocketd's 101-then-drop. Over `--maxforks` the answer is 429 and no
//! process is started.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::child;
use crate::config::{Program, Session};
use crate::error::Refusal;
use crate::limit::ClientSlot;
use crate::session::Who;
use crate::state::{Conn, Endpoint};
use crate::{env, memory, reap, relay, session, shared, shebang, stats};

pub mod deflate;

/// The read buffer each connection starts with; tungstenite grows it for big frames.
/// Small, because it is paid per idle connection: 2 KiB instead of 4 KiB took 12.0 to
/// 10.0 KiB per idle connection with echo 1 KiB and 64 KiB throughput unchanged within
/// the noise (`cargo bench --bench compare -- --only=echo1k,echo64k,rss_1000 --runs=3`).
const WS_READ_BUFFER: usize = 2 * 1024;
/// Outgoing frames are gathered up to this size before a socket write.
const WS_WRITE_BUFFER: usize = 32 * 1024;
/// How long hyper may take to hand over the upgraded connection.
const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which program an upgrade starts, and the `SCRIPT_NAME` it sees (`/` for PROGRAM, the
/// script's URL path with `--dir`). `program` is `None` only for a `--broker` edge, whose
/// clients join the hub and start nothing.
pub struct Target<'a> {
    pub program: Option<&'a Program>,
    pub script_name: &'a str,
}

/// websocketd's test for "this is a WebSocket request": `Upgrade` has the token
/// `websocket` and `Connection` has the token `upgrade` (both case-insensitive).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket") && has_token(headers, header::CONNECTION, "upgrade")
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the handshake, starts the program and the session task, and returns the 101
/// answer; or says why not. `client_slot` is the client's `--maxperclient` place, taken by
/// [`crate::http`] before any access check ran; the session holds it to its end.
pub fn accept(
    mut req: Request<Incoming>,
    ep: &Arc<Endpoint>,
    conn: Conn,
    target: Target<'_>,
    client_slot: Option<ClientSlot>,
) -> Result<Response<()>, Refusal> {
    let key = check_handshake(&req)?;
    let (agreed, answer) = extensions(req.headers(), &ep.session, ep.hub.is_some());
    let protocol = negotiate(req.headers(), ep.session.subprotocols.for_path(target.script_name))?;
    let size = match ep.session.pty {
        true => Some(
            crate::pty::WinSize::from_query(req.uri().query())
                .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?,
        ),
        false => None,
    };
    check_origin(&req, ep, conn)?;
    let headers = req.headers();
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());
    if ep.shutdown.is_cancelled() {
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down"));
    }
    let permit = ep.fork_slot()?;
    let who = Who {
        conn: conn.id,
        peer: conn.peer,
        proxy: conn.proxy,
        path: req.uri().path().to_owned(),
        user: req
            .extensions()
            .get::<env::Identity>()
            .map(|id| id.remote_user.clone())
            .filter(|u| !u.is_empty()),
    };
    let started = Started {
        who: &who,
        query: req.uri().query(),
        origin: origin.as_deref(),
        user_agent: headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes())),
        subprotocol: protocol.as_deref(),
    };

    if let Some(hub) = &ep.hub {
        let member = hub
            .join(conn.id)
            .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
        started.log(None, Some(member.id()));
        let on_upgrade = hyper::upgrade::on(&mut req);
        let ep2 = Arc::clone(ep);
        let live = memory::Live::count();
        let route = stats::route(target.script_name);
        let tracked = hub.track(
            async move {
                let (_permit, _client, _live) = (permit, client_slot, live);
                match upgrade(on_upgrade, &ep2.session, agreed).await {
                    Ok(ws) => {
                        let _counted = stats::Live::start(route);
                        let pre = deflate::precompress(agreed, ep2.session.compress.as_ref());
                        shared::run_client(ws, pre, member, &ep2.session, &ep2.shutdown, &who).await
                    }
                    Err(why) => tracing::info!(reason = why.to_string(), "upgrade did not complete"),
                }
            }
            .in_current_span(),
        );
        ep.sessions.spawn(tracked);
        return Ok(switching(&key, protocol, answer));
    }

    let built = env::build(
        &env::Request {
            remote: conn.peer,
            version: req.version(),
            method: req.method().as_str(),
            raw_path: req.uri().path(),
            query: req.uri().query(),
            headers,
            tls: conn.tls,
            unique_id: ep.unique_id(&conn),
            script_name: target.script_name,
            protocol: protocol.as_deref(),
        },
        &ep.session.passenv,
    )
    .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e))?;
    for d in &built.dropped {
        tracing::debug!(header = ?d, "request header left out of the environment");
    }

    let Some(program) = target.program else {
        // Only an edge has no program, and its clients joined the hub above.
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not found: no WebSocket endpoint here",
        ));
    };
    let mut vars = built.vars;
    if let Some(id) = req.extensions().get::<env::Identity>() {
        env::add_identity(&mut vars, id);
    }
    if let Some(script) = &program.pinned {
        // `--dir`: a `#!` script runs from its checked descriptor, so its `$0` is
        // `/dev/fd/N`; this is where it lives.
        vars.push(("SCRIPT_FILENAME".into(), program.path.clone().into_os_string()));
        let path = vars.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_os_str());
        if let Ok(file) = script.open_read() {
            if let Err(e) = shebang::check_file(file, path) {
                let interpreter = e.interpreter().unwrap_or(std::path::Path::new("")).display();
                tracing::error!(program = %program.path.display(), %interpreter, error = %e, "failed to start the program");
                return Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "failed to start the program",
                ));
            }
        }
    }
    let spawned = session::start(program, vars, size);
    let (child, stdio) = spawned.map_err(|e| {
        tracing::error!(program = %program.path.display(), error = %e, "failed to start the program");
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "failed to start the program")
    })?;
    tracing::Span::current().record("pid", child.id());
    started.log(Some(child.id()), None);

    let on_upgrade = hyper::upgrade::on(&mut req);
    let ep2 = Arc::clone(ep);
    let live = memory::Live::count();
    let route = stats::route(target.script_name);
    let accepted = std::time::Instant::now();
    ep.sessions.spawn(
        async move {
            let (_permit, _client, _live) = (permit, client_slot, live);
            let ws = match upgrade(on_upgrade, &ep2.session, agreed).await {
                Ok(ws) => ws,
                Err(why) => return abandon(child, stdio, &ep2.session, &why, (&who, accepted)).await,
            };
            let _counted = stats::Live::start(route);
            session::run(ws, child, stdio, &ep2.session, &ep2.shutdown, &who).await
        }
        .in_current_span(),
    );

    Ok(switching(&key, protocol, answer))
}

/// `--compress`: what we agree to from the client's `Sec-WebSocket-Extensions` offers,
/// and the answer header (see [`deflate::accept`]; `shared`: [`deflate::accept_shared`]).
fn extensions(headers: &HeaderMap, config: &Session, shared: bool) -> (Option<deflate::Agreed>, Option<String>) {
    let Some(ours) = &config.compress else {
        return (None, None);
    };
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let accept = if shared {
        deflate::accept_shared
    } else {
        deflate::accept
    };
    match accept(offers, ours) {
        Some((agreed, answer)) => {
            tracing::debug!(extensions = answer.as_str(), "permessage-deflate agreed");
            (Some(agreed), Some(answer))
        }
        None => (None, None),
    }
}

/// The facts of the `session started` access line.
struct Started<'a> {
    who: &'a Who,
    query: Option<&'a str>,
    origin: Option<&'a str>,
    user_agent: Option<std::borrow::Cow<'a, str>>,
    subprotocol: Option<&'a str>,
}

impl Started<'_> {
    /// Logs the line: with the program's `pid`, or the `--shared` client's number.
    fn log(&self, pid: Option<u32>, client: Option<u64>) {
        let who = self.who;
        tracing::info!(
            target: "wsbridge::access",
            parent: None,
            conn = who.conn,
            peer = %who.peer,
            proxy = who.proxy.map(tracing::field::display),
            user = who.user.as_deref(),
            path = who.path.as_str(),
            query = self.query,
            origin = self.origin,
            user_agent = self.user_agent.as_deref(),
            subprotocol = self.subprotocol,
            pid,
            shared = client.map(|_| true),
            client,
            "session started"
        );
    }
}

/// The 101 answer for a client's key, the negotiated subprotocol and extensions.
fn switching(key: &str, protocol: Option<String>, extensions: Option<String>) -> Response<()> {
    let accept_key = derive_accept_key(key.as_bytes());
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    // derive_accept_key yields base64, always a valid header value.
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_key).expect("base64 is a valid header value"),
    );
    if let Some(p) = protocol {
        // Config checked every --subprotocol name is an HTTP token.
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&p).expect("a token is a valid header value"),
        );
    }
    if let Some(e) = extensions.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, e);
    }
    resp
}

/// Why hyper did not hand over an upgraded connection (logged; the 101 is already sent).
#[derive(Debug, thiserror::Error)]
enum UpgradeError {
    #[error("{0}")]
    Failed(hyper::Error),
    #[error("timed out")]
    TimedOut,
}

/// Waits for hyper to hand over the upgraded connection and wraps it as a WebSocket.
async fn upgrade(
    on_upgrade: hyper::upgrade::OnUpgrade,
    config: &Session,
    deflate: Option<deflate::Agreed>,
) -> Result<session::Socket, UpgradeError> {
    let upgraded = match tokio::time::timeout(UPGRADE_TIMEOUT, on_upgrade).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => return Err(UpgradeError::Failed(e)),
        Err(_) => return Err(UpgradeError::TimedOut),
    };
    let io = TokioIo::new(upgraded);
    let transport: Box<dyn session::Transport> = match deflate {
        #[cfg(feature = "compress")]
        Some(agreed) => Box::new(deflate::Deflating::server(io, agreed, config.max_message)),
        // Without the feature Config refused --compress, so nothing was agreed.
        _ => Box::new(io),
    };
    Ok(WebSocketStream::from_raw_socket(transport, Role::Server, Some(ws_config(config))).await)
}

/// RFC 6455 §4.2.2: the first protocol the client offers (in its order, over every
/// `Sec-WebSocket-Protocol` header) that `ours` lists. With `ours` empty offers are
/// ignored; an offer with nothing in common is refused (400) naming what we support.
fn negotiate(headers: &HeaderMap, ours: &[String]) -> Result<Option<String>, Refusal> {
    if ours.is_empty() {
        return Ok(None);
    }
    let mut offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    if offered.peek().is_none() {
        return Ok(None);
    }
    match offered.find(|p| ours.iter().any(|o| o == p)) {
        Some(p) => Ok(Some(p.to_owned())),
        None => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "no supported subprotocol offered; this server speaks: {}",
                ours.join(", ")
            ),
        )),
    }
}

/// The 101 was sent but the connection never came: stop the program, and end the
/// session's access lines (the start was logged) as `vanished`.
async fn abandon(
    child: child::Child,
    stdio: session::ProgramIo<'_>,
    config: &Session,
    why: &UpgradeError,
    (who, started): (&Who, std::time::Instant),
) {
    tracing::info!(
        reason = why.to_string(),
        "upgrade did not complete; stopping the program"
    );
    drop(stdio);
    let stopped = reap::stop(child, config.close_grace).await;
    let none = relay::Counters::default();
    session::Summary {
        who: Some(who),
        started,
        received: &none,
        sent: &none,
        client: None,
        ended_by: session::EndedBy::Vanished,
        exit: Some(&stopped.status),
        signalled: stopped.signalled,
        close: &session::Exchanged::default(),
        held: Default::default(),
    }
    .log();
}

pub(crate) fn ws_config(config: &Session) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_write_buffer_size(WS_WRITE_BUFFER + 2 * config.max_message + relay::READ_CHUNK)
        .max_message_size(Some(config.max_message))
        .max_frame_size(Some(config.max_message))
}

/// RFC 6455 §4.2.1 checks; returns the client's key.
/// The checks of an upgrade that need neither the program nor who the client is: the
/// handshake and the origin policy. [`crate::http`] runs them before the access checks,
/// so an upgrade refused anyway never runs the auth hook (with a visitor's cookies, if
/// another site's page opened it) nor a password check; [`accept`] makes them again.
pub fn precheck(req: &Request<Incoming>, ep: &Endpoint, conn: Conn) -> Result<(), Refusal> {
    check_handshake(req)?;
    check_origin(req, ep, conn)
}

/// The `--origin` policy for this request (403 when it refuses).
fn check_origin(req: &Request<Incoming>, ep: &Endpoint, conn: Conn) -> Result<(), Refusal> {
    let headers = req.headers();
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Err(refusal) = ep.serve.origin.check(origin.as_deref(), host, conn.tls) {
        // The access line of the refusal names the origin (crate::access).
        tracing::debug!(origin = refusal.origin(), "origin refused");
        return Err(Refusal::new(StatusCode::FORBIDDEN, refusal.to_string()));
    }
    Ok(())
}

fn check_handshake(req: &Request<Incoming>) -> Result<String, Refusal> {
    if req.method() != Method::GET {
        let mut r = Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "a WebSocket upgrade must use GET");
        r.headers.push((header::ALLOW, HeaderValue::from_static("GET")));
        return Err(r);
    }
    if req.version() != Version::HTTP_11 {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs HTTP/1.1",
        ));
    }
    // Exactly one valid Host: http refused anything else before dispatching here.
    let headers = req.headers();
    let mut versions = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    if versions.next().map(|v| v.as_bytes()) != Some(b"13") || versions.next().is_some() {
        let mut r = Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version: only 13 is supported",
        );
        r.headers
            .push((header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13")));
        return Err(r);
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    match (keys.next(), keys.next()) {
        (Some(k), None) if valid_key(k.as_bytes()) => Ok(String::from_utf8_lossy(k.as_bytes()).into_owned()),
        (None, _) => Err(Refusal::new(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key")),
        (Some(_), Some(_)) => Err(Refusal::new(StatusCode::BAD_REQUEST, "more than one Sec-WebSocket-Key")),
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key is not 16 bytes of base64",
        )),
    }
}

/// A key is 16 bytes in base64: 22 characters, the last carrying 2 bits, then `==`.
fn valid_key(k: &[u8]) -> bool {
    let b64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    k.len() == 24 && k.ends_with(b"==") && k[..22].iter().all(b64) && b"AQgw".contains(&k[21])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZR=="));
        assert!(!valid_key(b"short=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25j!Q=="));
    }

    #[test]
    fn negotiation_takes_the_clients_first_listed_offer() {
        let ours = ["b".to_owned(), "a".to_owned()];
        let mut h = HeaderMap::new();
        assert_eq!(negotiate(&h, &ours).unwrap(), None);
        h.append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("x, a"));
        h.append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("b"));
        assert_eq!(negotiate(&h, &ours).unwrap().as_deref(), Some("a"));
        assert_eq!(negotiate(&h, &[]).unwrap(), None);
        let e = negotiate(&h, &["z".to_owned()]).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("z"), "{}", e.message);
    }

    #[test]
    fn upgrade_detection_uses_tokens() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(is_upgrade(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!is_upgrade(&h));
    }
}
