//! The hyper service for one connection: one dispatch decision per request (WebSocket
//! upgrade → [`crate::ws`], anything else → 426 until static files and CGI exist), the
//! extra `--header*` headers, and an access line for every answer that is not a session
//! (sessions log their own when they end).
//!
//! Headers: `--header` goes on every response; `--header-ws` on every response to an
//! upgrade request (101 and refusals alike); `--header-http` on every other response.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::ws::{self, Conn, Endpoint};

/// Largest total size of a request's header fields; above it the answer is 431.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// The body type of every answer.
pub type Body = Full<Bytes>;

/// Answers one request.
pub async fn serve(req: Request<Incoming>, ep: Arc<Endpoint>, conn: Conn) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    tracing::Span::current().record("path", path.as_str());
    let method = req.method().clone();
    let extra = &ep.config.headers;
    let head_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let resp = if head_bytes > MAX_HEAD_BYTES {
        // hyper enforces its buffer limit only between reads; this makes the bound exact
        // (it also keeps the program's environment far below the exec limit).
        let resp = text(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large");
        with_headers(resp, &[&extra.all, &extra.http])
    } else if ws::is_upgrade(req.headers()) {
        let resp = match ws::accept(req, &ep, conn) {
            Ok(resp) => resp.map(|()| Body::default()),
            Err(refusal) => {
                let mut resp = text(refusal.status, &refusal.message);
                resp.headers_mut().extend(refusal.headers);
                resp
            }
        };
        with_headers(resp, &[&extra.all, &extra.ws])
    } else {
        let mut resp = text(
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint: connect with a WebSocket client",
        );
        resp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        with_headers(resp, &[&extra.all, &extra.http])
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        tracing::info!(target: "wsbridge::access", %method, path, status = resp.status().as_u16(), "request");
    }
    Ok(resp)
}

/// A short plain-text answer: the message plus a newline.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(format!("{message}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

fn with_headers(mut resp: Response<Body>, groups: &[&Vec<(HeaderName, HeaderValue)>]) -> Response<Body> {
    for (name, value) in groups.iter().flat_map(|g| g.iter()) {
        resp.headers_mut().append(name.clone(), value.clone());
    }
    resp
}
