//! The request side of one CGI run: the body as the script will get it (gathered, or
//! streamed with a bound), the environment of RFC 3875 §4.1, and the task that feeds
//! the body to the script's stdin. It owns what goes into the script, not the run
//! itself ([`super::run`]) nor what comes out ([`super::response`]).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use super::{Script, CHUNKED_GATHER, MAX_BODY};
use crate::body::{self, Body};
use crate::env;
use crate::state::{Conn, Endpoint};

/// The request body, as the script will get it.
pub(super) enum Input {
    None,
    Buffered(Bytes),
    /// Streamed to the script as it arrives, after `first`: exactly `len` bytes when the
    /// client said so (`Content-Length`), else until the body ends (chunked); at most
    /// [`MAX_BODY`] in all.
    Stream {
        body: Incoming,
        first: Bytes,
        len: Option<u64>,
    },
}

impl Input {
    /// `CONTENT_LENGTH`, when it is known before the script starts.
    pub(super) fn len(&self) -> Option<u64> {
        match self {
            Input::None => None,
            Input::Buffered(b) => Some(b.len() as u64),
            Input::Stream { len, .. } => *len,
        }
    }
}

pub(super) fn too_large() -> Response<Body> {
    body::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body too large: at most {MAX_BODY} bytes"),
    )
}

pub(super) async fn read_input(
    parts: &Parts,
    body: Option<Incoming>,
    deadline: Instant,
) -> Result<Input, Response<Body>> {
    let Some(mut body) = body else { return Ok(Input::None) };
    if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| body::text(StatusCode::BAD_REQUEST, "bad Content-Length"))?;
        return match len {
            0 => Ok(Input::None),
            n if n > MAX_BODY => Err(too_large()),
            n => Ok(Input::Stream {
                body,
                first: Bytes::new(),
                len: Some(n),
            }),
        };
    }
    if !parts.headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(Input::None);
    }
    // Chunked: a short body is gathered, so the script is told CONTENT_LENGTH as CGI
    // scripts expect (php-cgi reads nothing without it); a longer one is streamed from
    // what came so far, with CONTENT_LENGTH unset and EOF marking its end.
    let mut first = bytes::BytesMut::new();
    while first.len() <= CHUNKED_GATHER {
        match timeout_at(deadline, body.frame()).await {
            Ok(None) => {
                return Ok(match first.is_empty() {
                    true => Input::None,
                    false => Input::Buffered(first.freeze()),
                })
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    first.extend_from_slice(&data);
                }
            }
            Ok(Some(Err(_))) => return Err(body::text(StatusCode::BAD_REQUEST, "request body could not be read")),
            Err(_) => return Err(body::text(StatusCode::REQUEST_TIMEOUT, "request body too slow")),
        }
    }
    Ok(Input::Stream {
        body,
        first: first.freeze(),
        len: None,
    })
}

pub(super) fn environment(
    script: &Script,
    parts: &Parts,
    input: &Input,
    ep: &Endpoint,
    conn: Conn,
) -> Result<Vec<(OsString, OsString)>, &'static str> {
    let built = env::build(
        &env::Request {
            remote: conn.peer,
            version: parts.version,
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            tls: conn.tls,
            unique_id: ep.unique_id(&conn),
            script_name: &script.script_name,
            protocol: None,
        },
        &ep.session.passenv,
    )?;
    let mut vars: Vec<(OsString, OsString)> = built
        .vars
        .into_iter()
        .filter(|(k, _)| k != "HTTP_CONTENT_LENGTH" && k != "HTTP_CONTENT_TYPE")
        .collect();
    if let Some(id) = parts.extensions.get::<env::Identity>() {
        env::add_identity(&mut vars, id);
    }
    let path_info = vars
        .iter()
        .find(|(k, _)| k == "PATH_INFO")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| OsString::from_vec(v.as_bytes().to_vec()))
        .unwrap_or_default();
    for (k, v) in &mut vars {
        match k.as_bytes() {
            b"CONTENT_LENGTH" => *v = input.len().map(|n| n.to_string()).unwrap_or_default().into(),
            b"CONTENT_TYPE" => *v = content_type.clone(),
            b"PATH_TRANSLATED" => {
                *v = if path_info.is_empty() {
                    OsString::new()
                } else {
                    let root = ep.serve.cgi_dir.as_deref().unwrap_or(Path::new("/"));
                    let mut p = root.as_os_str().to_owned();
                    p.push(&path_info);
                    p
                }
            }
            _ => {}
        }
    }
    vars.retain(|(k, v)| k != "PATH_TRANSLATED" || !v.is_empty());
    vars.push(("SCRIPT_FILENAME".into(), script.found.path.clone().into_os_string()));
    Ok(vars)
}

/// Writes the body to the script's stdin as it arrives (one frame at a time, so a script
/// that reads slowly slows the client down), then closes it. A script that does not read
/// its input is not an error: the rest is discarded. A chunked body that passes
/// [`MAX_BODY`] is cut there and `over_limit` is told, so the client gets 413.
pub(super) async fn feed(mut stdin: pipe::Sender, input: Input, over_limit: CancellationToken) {
    let (mut body, first, len) = match input {
        Input::None => return,
        Input::Buffered(b) => {
            let _ = stdin.write_all(&b).await;
            return;
        }
        Input::Stream { body, first, len } => (body, first, len),
    };
    let limit = len.unwrap_or(MAX_BODY);
    let mut sent = first.len() as u64;
    if stdin.write_all(&first).await.is_err() {
        return;
    }
    drop(first);
    while sent < limit || len.is_none() {
        let data = match body.frame().await {
            None => return,
            Some(Err(e)) => {
                tracing::info!(target: "wsbridge::cgi", error = %e, sent, "request body ended early; the script got what came");
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        if len.is_none() && sent + data.len() as u64 > limit {
            tracing::info!(target: "wsbridge::cgi", limit = MAX_BODY, "chunked request body too large; answering 413");
            over_limit.cancel();
            return;
        }
        let n = (data.len() as u64).min(limit - sent);
        sent += n;
        if stdin.write_all(&data[..n as usize]).await.is_err() {
            return;
        }
    }
}
