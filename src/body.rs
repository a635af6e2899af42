//! The bodies of HTTP answers and the helpers every handler builds them with: a short
//! plain-text answer, a whole buffer, nothing, or chunks streamed from a task through a
//! bounded channel. It owns the body type, not what any handler answers or which handler
//! answers ([`crate::http`] decides that and imports the handlers; a handler imports this
//! instead of its dispatcher).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

/// The body type of every answer: a whole buffer, or chunks streamed from a task.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// The message of a [`text`] answer, kept with it (as a response extension) so that the
/// access line of a refusal can say why.
#[derive(Debug, Clone)]
pub struct Reason(pub String);

/// A short plain-text answer: the message plus a newline.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut resp = Response::new(full(format!("{message}\n")));
    *resp.status_mut() = status;
    if status.as_u16() >= 400 {
        resp.extensions_mut().insert(Reason(message.to_owned()));
    }
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// A body of one buffer.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// The producing end of [`channel`]: send chunks, or an error to abort the response.
pub type BodySender = mpsc::Sender<io::Result<Bytes>>;

/// A body streamed from a task through a bounded channel of `capacity` chunks, so a slow
/// client pushes back on the producer. An `Err` aborts the response (the client sees it
/// cut off, never complete); the body ends when the sender is dropped.
pub fn channel(capacity: usize) -> (BodySender, Body) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody { rx, held: None }.boxed_unsync())
}

struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    /// An error waiting for hyper to flush what came before it.
    held: Option<io::Error>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(e) = self.held.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match self.rx.poll_recv(cx) {
            // hyper drops its unwritten buffer when a body fails. Answering Pending once
            // (and asking to be polled again) makes it flush the data sent so far first,
            // so a cut-off answer still delivers everything before the cut.
            Poll::Ready(Some(Err(e))) => {
                self.held = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other.map(|item| item.map(|r| r.map(Frame::data))),
        }
    }
}
