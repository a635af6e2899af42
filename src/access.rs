//! The access line of one HTTP answer that is not a WebSocket session (a static file, a
//! CGI run, the upstream's answer, the console, a `--redirport` redirect, a refusal):
//! who asked for what, the status, the bytes of body sent, how long it took, why it was
//! refused, and for CGI how the script ended and whether its answer was cut off.
//!
//! The line is logged once the answer is over: its body sent to the end, cut off by an
//! error, or dropped because the client went away; and, for CGI, the script reaped. The
//! [`Record`] is shared (an `Arc`) between the [`Counted`] body and the handler that may
//! still report (CGI); the last owner to let go logs it. Sessions log their own lines
//! ([`crate::session`]); a 101 answer's record stays silent.
//!
//! Like every access line it is logged outside the connection's span, with the
//! connection's facts as its own fields.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::{Method, Response, StatusCode};

use crate::body::{Body, Reason};
use crate::net::Peer;

/// What the access line of one request says.
pub struct Record {
    started: Instant,
    conn: u64,
    peer: Peer,
    proxy: Option<Peer>,
    method: Method,
    path: String,
    query: Option<String>,
    facts: Mutex<Facts>,
}

/// What is learnt while answering.
#[derive(Default)]
struct Facts {
    /// Log nothing (a 101: the session logs its own lines).
    silent: bool,
    /// The handler that answered: `static`, `cgi`, `upstream`, `console`, `redirect`.
    handler: Option<&'static str>,
    /// Who the access checks (`--htpasswd`, `--authcmd`, `--authurl`) found: `REMOTE_USER`.
    user: Option<String>,
    /// An upgrade request that was refused: the `Origin` it sent.
    origin: Option<Option<String>>,
    status: Option<u16>,
    reason: Option<String>,
    bytes: u64,
    /// CGI: how the script ended (`exit=`).
    exit: Option<String>,
    /// Why the body was cut off, if it was.
    cut: Option<&'static str>,
}

impl Record {
    pub fn new(
        conn: u64,
        peer: Peer,
        proxy: Option<Peer>,
        method: Method,
        path: &str,
        query: Option<&str>,
    ) -> Arc<Self> {
        Arc::new(Record {
            started: Instant::now(),
            conn,
            peer,
            proxy,
            method,
            path: path.to_owned(),
            query: query.map(str::to_owned),
            facts: Mutex::default(),
        })
    }

    fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        // Facts are plain values; one left half-written by a panic is still worth logging.
        self.facts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Names the handler that answers.
    pub fn handler(&self, name: &'static str) {
        self.facts().handler = Some(name);
    }

    /// The user the access checks found (`REMOTE_USER`; nothing when it is empty).
    pub fn user(&self, name: &str) {
        if !name.is_empty() {
            self.facts().user = Some(name.to_owned());
        }
    }

    /// An upgrade request was refused; `origin` is what its `Origin` header said.
    pub fn refused_upgrade(&self, origin: Option<&str>) {
        self.facts().origin = Some(origin.map(str::to_owned));
    }

    /// CGI: how the script ended (see [`crate::child::exit_field`]).
    pub fn exit(&self, exit: String) {
        self.facts().exit = Some(exit);
    }

    /// Why the answer is being cut off; the first reason given is kept.
    pub fn cut(&self, why: &'static str) {
        self.facts().cut.get_or_insert(why);
    }

    /// Wraps the answer's body so its bytes are counted and the line is logged when it
    /// is over. A 101 stays silent.
    pub fn answer(self: &Arc<Self>, resp: Response<Body>) -> Response<Body> {
        let status = resp.status();
        {
            let mut f = self.facts();
            f.status = Some(status.as_u16());
            f.silent = status == StatusCode::SWITCHING_PROTOCOLS;
            if status.as_u16() >= 400 {
                f.reason = resp.extensions().get::<Reason>().map(|r| r.0.clone());
            }
        }
        // hyper sends no body for these; what was never meant to be sent is not a cut.
        let bodiless = self.method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        // hyper stops polling a body once it has sent its Content-Length.
        let length = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let record = Arc::clone(self);
        resp.map(|inner| {
            Counted {
                length: length.or(inner.size_hint().exact()),
                inner,
                bytes: 0,
                ended: bodiless,
                record,
            }
            .boxed_unsync()
        })
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let f = self.facts.get_mut().unwrap_or_else(PoisonError::into_inner);
        if f.silent {
            return;
        }
        if f.status.is_none() {
            // hyper dropped the request before it was answered: the client went away.
            f.cut.get_or_insert("client_gone");
        }
        let message = match (&f.origin, f.cut) {
            (Some(_), _) => "upgrade refused",
            (None, Some(_)) => "request cut off",
            (None, None) => "request",
        };
        tracing::info!(
            target: "wsbridge::access",
            parent: None,
            conn = self.conn,
            peer = %self.peer,
            proxy = self.proxy.map(tracing::field::display),
            user = f.user.as_deref(),
            method = %self.method,
            path = self.path.as_str(),
            query = self.query.as_deref(),
            origin = f.origin.as_ref().and_then(|o| o.as_deref()),
            handler = f.handler.map(tracing::field::display),
            status = f.status,
            reason = f.reason.as_deref(),
            bytes = f.bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            exit = f.exit.as_deref().map(tracing::field::display),
            cut = f.cut.map(tracing::field::display),
            "{message}"
        );
    }
}

/// A body that counts what hyper takes from it and, when dropped, tells its [`Record`]
/// how much was sent and whether it reached its end.
struct Counted {
    inner: Body,
    /// The body's length when it is known in advance.
    length: Option<u64>,
    bytes: u64,
    ended: bool,
    record: Arc<Record>,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.record.cut("error"),
            Poll::Ready(None) => self.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let ended = self.ended || self.inner.is_end_stream() || self.length == Some(self.bytes);
        if !ended {
            // Dropped before its end without an error: the client went away.
            self.record.cut("client_gone");
        }
        self.record.facts().bytes = self.bytes;
    }
}
