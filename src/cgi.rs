//! `--cgidir`: CGI/1.1 (RFC 3875) for plain HTTP requests. It owns one script run: the
//! environment, the request body on stdin, the script's header block, the streamed
//! answer, the time limit and the stop; which file a path names is [`crate::route`]'s job.
//!
//! Mapping: the URL path is walked under DIR from the root (websocketd's mapping); the
//! first segment that is a regular file is the script, the rest of the path is
//! `PATH_INFO`. A file that is not executable gets 403. The script runs with its own
//! directory as working directory, in its own process group, with the environment of
//! [`crate::env`] plus `CONTENT_LENGTH`, `CONTENT_TYPE`, `SCRIPT_FILENAME` and (when
//! there is extra path) `PATH_TRANSLATED`; `HTTP_CONTENT_*` are left out as RFC 3875 asks.
//!
//! The script is executed from the descriptor [`crate::route`] opened (see
//! [`child::Pinned`]), so the file checked is the file run.
//!
//! The request body is streamed to the script's stdin as it arrives (a frame at a time
//! through the pipe, so a slow script slows the client down and nothing piles up here). A
//! chunked body of up to [`CHUNKED_GATHER`] bytes is gathered first so the script can be
//! told `CONTENT_LENGTH`; a longer one leaves it empty and ends at EOF.
//!
//! Bounds: a request body of at most [`MAX_BODY`] bytes in all (413 above it, also when a
//! chunked body passes it while the script runs), a header block of at most [`MAX_HEAD`]
//! bytes, and `--cgitimeout` for the whole run, output included. A run
//! takes a `--maxforks` slot until the script is reaped. A script that fails before its
//! header block is complete, or whose block is not a CGI response (a `Status` outside
//! 200–599 included), gets the client a 502 (504 on timeout); one that dies by a
//! signal or runs out of time after that has its answer cut off, so the client never
//! takes a partial page for a whole one. Its stderr is logged like a session's.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::body::{self, Body, BodySender};
use crate::child::{self, Child, Spec};
use crate::route;
use crate::state::{Conn, Endpoint};
use crate::{env, reap, relay};

/// Largest request body given to a script.
pub const MAX_BODY: u64 = 16 * 1024 * 1024;
/// A chunked request body up to this size is gathered before the script starts, so
/// that the script is told `CONTENT_LENGTH`; a longer one is streamed without it.
pub const CHUNKED_GATHER: usize = 64 * 1024;
/// Largest header block a script may print.
pub const MAX_HEAD: usize = 32 * 1024;
/// How long stderr may take to reach EOF once the script is gone.
const STDERR_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);
/// Output chunks buffered ahead of a slow client.
const READ_AHEAD: usize = 4;

/// A script a path names.
pub struct Script {
    /// The file, pinned to the directory entry that was checked; what runs.
    pub found: route::Script,
    /// Its decoded URL path: `SCRIPT_NAME`.
    pub script_name: String,
}

/// The script `raw_path` names under `root` (canonical), if any.
pub fn find(root: &Path, raw_path: &str) -> Option<Script> {
    let segs = route::segments(raw_path)?;
    let found = route::find_script(root, &segs.parts)?;
    let script_name = String::from_utf8(route::url_path(&segs.parts, found.used)).ok()?;
    Some(Script { found, script_name })
}

/// What a run produced.
pub enum Answer {
    Response(Response<Body>),
    /// `Location: /path` without `Status`: the server is to answer with that resource
    /// instead (RFC 3875 §6.2.2), as a GET.
    LocalRedirect(String),
}

/// Runs `script` for a request.
pub async fn run(script: Script, parts: &Parts, body: Option<Incoming>, ep: &Arc<Endpoint>, conn: Conn) -> Answer {
    let text = |s, m: &str| Answer::Response(body::text(s, m));
    let file = script.found.path.as_path();
    if !script.found.is_executable() {
        tracing::info!(script = %file.display(), "CGI script is not executable");
        return text(StatusCode::FORBIDDEN, "forbidden: the script is not executable");
    }
    let deadline = Instant::now() + ep.config.cgi_timeout;
    let permit = match ep.fork_slot() {
        Ok(p) => p,
        Err(refusal) => return text(refusal.status, &refusal.message),
    };
    let input = match read_input(parts, body, deadline).await {
        Ok(i) => i,
        Err(resp) => return Answer::Response(resp),
    };
    let vars = match environment(&script, parts, &input, ep, conn) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let spec = Spec {
        name: file.as_os_str(),
        program: file,
        args: &[],
        env: vars,
        // The script's own directory, entered by descriptor (`pinned.cwd`).
        cwd: None,
        pinned: Some(child::Pinned {
            file: script.found.file.as_fd(),
            cwd: Some(script.found.dir.as_fd()),
        }),
    };
    let (mut child, stdio) = match child::spawn(spec) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(script = %file.display(), error = %e, "failed to start the CGI script");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "failed to start the script");
        }
    };
    tracing::Span::current().record("pid", child.id());
    tracing::debug!(pid = child.id(), script = %file.display(), "CGI script started");
    let child::Stdio {
        stdin,
        mut stdout,
        stderr,
    } = stdio;
    let stderr = tokio::spawn(child::log_stderr(stderr, None).in_current_span());
    // Bounded by the deadline too: a client that stops sending cannot hold the task.
    let body_too_large = CancellationToken::new();
    tokio::spawn(timeout_at(deadline, feed(stdin, input, body_too_large.clone())).in_current_span());

    let head = tokio::select! {
        head = timeout_at(deadline, read_head(&mut stdout)) => head,
        () = body_too_large.cancelled() => {
            finish(child, stderr, ep.config.close_grace, None, permit).await;
            return Answer::Response(too_large());
        }
    };
    let head = match head {
        Ok(Ok(h)) => h,
        Ok(Err(why)) => {
            tracing::warn!(script = %file.display(), reason = why, "bad CGI response");
            finish(child, stderr, ep.config.close_grace, None, permit).await;
            return text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: the script's answer was not a CGI response",
            );
        }
        Err(_) => {
            tracing::warn!(script = %file.display(), "CGI script timed out before its headers");
            finish(child, stderr, ep.config.close_grace, None, permit).await;
            return text(StatusCode::GATEWAY_TIMEOUT, "gateway timeout: the script took too long");
        }
    };
    let parsed = match parse_head(&head.block) {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!(script = %file.display(), reason = why, "bad CGI header block");
            finish(child, stderr, ep.config.close_grace, None, permit).await;
            return text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: the script's answer was not a CGI response",
            );
        }
    };
    if let Some(local) = parsed.local_redirect {
        finish(child, stderr, ep.config.close_grace, None, permit).await;
        return Answer::LocalRedirect(local);
    }
    let (tx, body) = body::channel(READ_AHEAD);
    let mut resp = Response::new(body);
    *resp.status_mut() = parsed.status;
    *resp.headers_mut() = parsed.headers;
    let grace = ep.config.close_grace;
    tokio::spawn(
        async move {
            let cut = stream(&mut stdout, head.rest, &tx, deadline, &mut child, body_too_large).await;
            drop(stdout);
            finish(child, stderr, grace, Some((tx, cut)), permit).await;
        }
        .in_current_span(),
    );
    Answer::Response(resp)
}

/// The request body, as the script will get it.
enum Input {
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
    fn len(&self) -> Option<u64> {
        match self {
            Input::None => None,
            Input::Buffered(b) => Some(b.len() as u64),
            Input::Stream { len, .. } => *len,
        }
    }
}

fn too_large() -> Response<Body> {
    body::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body too large: at most {MAX_BODY} bytes"),
    )
}

async fn read_input(parts: &Parts, body: Option<Incoming>, deadline: Instant) -> Result<Input, Response<Body>> {
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

fn environment(
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
        &ep.config.passenv,
    )?;
    let mut vars: Vec<(OsString, OsString)> = built
        .vars
        .into_iter()
        .filter(|(k, _)| k != "HTTP_CONTENT_LENGTH" && k != "HTTP_CONTENT_TYPE")
        .collect();
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
                    let root = ep.config.cgi_dir.as_deref().unwrap_or(Path::new("/"));
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
async fn feed(mut stdin: pipe::Sender, input: Input, over_limit: CancellationToken) {
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
                tracing::info!(error = %e, sent, "request body ended early; the script got what came");
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        if len.is_none() && sent + data.len() as u64 > limit {
            tracing::info!(limit = MAX_BODY, "chunked request body too large; answering 413");
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

/// The header block, and whatever output came after it.
struct Head {
    block: Vec<u8>,
    rest: Bytes,
}

async fn read_head(stdout: &mut pipe::Receiver) -> Result<Head, &'static str> {
    let mut buf = Vec::new();
    loop {
        let chunk = match relay::read_chunk(stdout).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err("output ended before the blank line after the headers"),
            Err(_) => return Err("reading the output failed"),
        };
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk);
        if let Some((end, sep)) = head_end(&buf[searched_from..]) {
            let end = searched_from + end;
            let rest = Bytes::copy_from_slice(&buf[end + sep..]);
            buf.truncate(end);
            return Ok(Head { block: buf, rest });
        }
        if buf.len() > MAX_HEAD {
            return Err("header block too large");
        }
    }
}

/// Where the blank line is (`\n\n` or `\r\n\r\n`), and its length.
fn head_end(b: &[u8]) -> Option<(usize, usize)> {
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

struct Parsed {
    status: StatusCode,
    headers: hyper::HeaderMap,
    local_redirect: Option<String>,
}

/// RFC 3875 §6: `Status`, `Location`, `Content-Type`, and other fields passed on;
/// hop-by-hop fields are dropped.
fn parse_head(block: &[u8]) -> Result<Parsed, &'static str> {
    let mut headers = hyper::HeaderMap::new();
    let mut status = None;
    let mut location = None;
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or("a header line without ':'")?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| "a bad header name")?;
        let value = line[colon + 1..].trim_ascii();
        if name.as_str() == "status" {
            status = Some(parse_status(value)?);
            continue;
        }
        let value = HeaderValue::from_bytes(value).map_err(|_| "a bad header value")?;
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "te" | "trailer"
        ) {
            continue;
        }
        if name == header::LOCATION {
            location = Some(value.clone());
        }
        headers.append(name, value);
    }
    if let Some(loc) = &location {
        let local = loc.as_bytes().starts_with(b"/") && !loc.as_bytes().starts_with(b"//");
        if local && status.is_none() {
            let target = loc.to_str().map_err(|_| "a bad Location")?.to_owned();
            return Ok(Parsed {
                status: StatusCode::OK,
                headers,
                local_redirect: Some(target),
            });
        }
    }
    if status.is_none() && location.is_none() && !headers.contains_key(header::CONTENT_TYPE) {
        return Err("no Content-Type, Location or Status");
    }
    let status = status.unwrap_or(if location.is_some() {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    Ok(Parsed {
        status,
        headers,
        local_redirect: None,
    })
}

/// A `Status` value: three digits from 200 to 599, then nothing or a reason phrase. A
/// script cannot send an interim (1xx) answer, which hyper would send bare and then
/// fail, nor a code HTTP does not have.
fn parse_status(value: &[u8]) -> Result<StatusCode, &'static str> {
    let code = value.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit));
    let ends = matches!(value.get(3), None | Some(b' ' | b'\t'));
    let status = code
        .filter(|_| ends)
        .and_then(|c| StatusCode::from_bytes(c).ok())
        .ok_or("a bad Status")?;
    if (200..=599).contains(&status.as_u16()) {
        Ok(status)
    } else {
        Err("a Status outside 200-599")
    }
}

/// Why the answer was cut off, if it was.
enum Cut {
    Complete,
    TimedOut,
    ClientGone,
    ReadError,
    /// The script answered before the client's chunked body passed [`MAX_BODY`].
    BodyTooLarge,
}

/// Sends the output after the header block until EOF or the deadline.
async fn stream(
    stdout: &mut pipe::Receiver,
    first: Bytes,
    tx: &BodySender,
    deadline: Instant,
    child: &mut Child,
    body_too_large: CancellationToken,
) -> Cut {
    if !first.is_empty() && tx.send(Ok(first)).await.is_err() {
        return Cut::ClientGone;
    }
    let pump = async {
        loop {
            match relay::read_chunk(stdout).await {
                Ok(Some(chunk)) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Cut::ClientGone;
                    }
                }
                Ok(None) => return Cut::Complete,
                Err(_) => return Cut::ReadError,
            }
        }
    };
    let pump = async {
        tokio::select! {
            cut = pump => cut,
            () = body_too_large.cancelled() => Cut::BodyTooLarge,
        }
    };
    let cut = timeout_at(deadline, pump).await.unwrap_or(Cut::TimedOut);
    if matches!(cut, Cut::Complete) && timeout_at(deadline, child.exited()).await.is_err() {
        return Cut::TimedOut;
    }
    cut
}

/// Stops (or collects) the script, logs how it ended, and ends the answer: cleanly, or
/// with an error that makes hyper cut it off. The `--maxforks` slot is freed last.
async fn finish(
    mut child: Child,
    stderr: tokio::task::JoinHandle<()>,
    grace: std::time::Duration,
    answer: Option<(BodySender, Cut)>,
    permit: Option<OwnedSemaphorePermit>,
) {
    let exited = tokio::time::timeout(std::time::Duration::ZERO, child.exited())
        .await
        .is_ok();
    let status = if exited {
        reap::collect(child)
    } else {
        reap::stop(child, grace).await.status
    };
    let signalled = matches!(&status, Ok(s) if std::os::unix::process::ExitStatusExt::signal(s).is_some());
    let exit = match &status {
        Ok(s) => child::describe(s),
        Err(e) => e.to_string(),
    };
    if let Some((tx, cut)) = answer {
        let why = match cut {
            Cut::Complete if signalled => Some("the script was killed"),
            Cut::Complete | Cut::ClientGone => None,
            Cut::TimedOut => Some("the script ran out of time (--cgitimeout)"),
            Cut::ReadError => Some("reading the script's output failed"),
            Cut::BodyTooLarge => Some("the request body passed the limit after the script had answered"),
        };
        match why {
            Some(why) => {
                tracing::warn!(exit = %exit, reason = why, "CGI answer cut off");
                let _ = tx.send(Err(io::Error::other(why))).await;
            }
            None => tracing::debug!(exit = %exit, "CGI script ended"),
        }
    } else {
        tracing::debug!(exit = %exit, "CGI script ended");
    }
    // stderr reaches EOF once the group is gone; only an escaped descendant holds it.
    let mut stderr = stderr;
    if tokio::time::timeout(STDERR_DRAIN, &mut stderr).await.is_err() {
        stderr.abort();
    }
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks() {
        let p = parse_head(b"Content-Type: text/plain\r\nX-A: 1").unwrap();
        assert_eq!(p.status, StatusCode::OK);
        assert_eq!(p.headers["x-a"], "1");
        let p = parse_head(b"Status: 201 Created\nContent-Type: text/plain").unwrap();
        assert_eq!(p.status, StatusCode::CREATED);
        assert!(!p.headers.contains_key("status"));
        let p = parse_head(b"Location: /other?x=1").unwrap();
        assert_eq!(p.local_redirect.as_deref(), Some("/other?x=1"));
        let p = parse_head(b"Location: https://example.com/").unwrap();
        assert_eq!(p.status, StatusCode::FOUND);
        let p = parse_head(b"Status: 303 See Other\nLocation: /x").unwrap();
        assert_eq!((p.status, p.local_redirect), (StatusCode::SEE_OTHER, None));
        let p = parse_head(b"Location: //evil.example/").unwrap();
        assert_eq!(p.local_redirect, None, "protocol-relative is a client redirect");
        assert!(parse_head(b"X-Only: 1").is_err());
        assert!(parse_head(b"garbage").is_err());
        assert!(parse_head(b"Status: abc").is_err());
        let p = parse_head(b"Status: 599\nContent-Type: text/plain").unwrap();
        assert_eq!(p.status.as_u16(), 599);
        let p = parse_head(b"Status:\t204\tNo Content").unwrap();
        assert_eq!(p.status, StatusCode::NO_CONTENT);
        let p = parse_head(b"Content-Type: a/b\nConnection: close\nTransfer-Encoding: chunked").unwrap();
        assert_eq!(p.headers.len(), 1);
    }

    #[test]
    fn status_outside_200_to_599_is_refused() {
        for bad in [
            "100",
            "101",
            "101 Switching Protocols",
            "199",
            "600",
            "999",
            "1000",
            "2000",
            "200x",
            "20",
            "099",
            "-20",
            "",
            "abc",
        ] {
            let block = format!("Status: {bad}\nContent-Type: text/plain");
            assert!(parse_head(block.as_bytes()).is_err(), "Status: {bad}");
        }
        assert_eq!(parse_head(b"Status: 1000").err(), Some("a bad Status"));
        assert_eq!(parse_head(b"Status: 101").err(), Some("a Status outside 200-599"));
        for good in ["200", "200 OK", "302 Found", "599 Whatever"] {
            let block = format!("Status: {good}\nContent-Type: text/plain");
            assert!(parse_head(block.as_bytes()).is_ok(), "Status: {good}");
        }
    }

    #[test]
    fn blank_line_forms() {
        assert_eq!(head_end(b"A: b\n\nbody"), Some((4, 2)));
        assert_eq!(head_end(b"A: b\r\n\r\nbody"), Some((4, 4)));
        assert_eq!(head_end(b"A: b\r\n"), None);
    }
}
