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
//! takes a partial page for a whole one. Its stderr is logged like a session's. On
//! shutdown (SIGINT/SIGTERM) a running script gets the stop ladder too: 503 before its
//! header block, a cut-off answer after; its tasks are tracked with the sessions, so the
//! drain waits for them.
//!
//! This file runs the script (slot, spawn, deadline, stop); `request` builds what goes
//! into it (body, environment), `response` reads what comes out (header block, stream).

mod request;
mod response;

use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::request::{environment, feed, read_input, too_large};
use self::response::{parse_head, read_head, stream, Cut};
use crate::access::Record;
use crate::body::{self, Body, BodySender};
use crate::child::{self, Child, Spec};
use crate::reap;
use crate::route;
use crate::state::{Conn, Endpoint};

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
/// `record` is the request's access line: it learns how the script ended and whether its
/// answer was cut off.
pub async fn run(
    script: Script,
    parts: &Parts,
    body: Option<Incoming>,
    ep: &Arc<Endpoint>,
    conn: Conn,
    record: &Arc<Record>,
) -> Answer {
    let text = |s, m: &str| Answer::Response(body::text(s, m));
    let file = script.found.path.as_path();
    if !script.found.is_executable() {
        tracing::info!(script = %file.display(), "CGI script is not executable");
        return text(StatusCode::FORBIDDEN, "forbidden: the script is not executable");
    }
    let deadline = Instant::now() + ep.serve.cgi_timeout;
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
    // Every task of a run is tracked with the sessions, so the shutdown drain waits for
    // it; each ends once the script is stopped (or, for the feed, at the deadline).
    let stderr = ep.sessions.spawn(child::log_stderr(stderr, None).in_current_span());
    // Bounded by the deadline too: a client that stops sending cannot hold the task.
    let body_too_large = CancellationToken::new();
    ep.sessions
        .spawn(timeout_at(deadline, feed(stdin, input, body_too_large.clone())).in_current_span());

    let head = tokio::select! {
        head = timeout_at(deadline, read_head(&mut stdout)) => head,
        () = body_too_large.cancelled() => {
            finish(child, stderr, ep.session.close_grace, None, permit, record).await;
            return Answer::Response(too_large());
        }
        () = ep.shutdown.cancelled() => {
            tracing::info!(script = %file.display(), "server shutting down; stopping the CGI script");
            finish(child, stderr, ep.session.close_grace, None, permit, record).await;
            return text(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
        }
    };
    let head = match head {
        Ok(Ok(h)) => h,
        Ok(Err(why)) => {
            tracing::warn!(script = %file.display(), reason = why, "bad CGI response");
            finish(child, stderr, ep.session.close_grace, None, permit, record).await;
            return text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: the script's answer was not a CGI response",
            );
        }
        Err(_) => {
            tracing::warn!(script = %file.display(), "CGI script timed out before its headers");
            finish(child, stderr, ep.session.close_grace, None, permit, record).await;
            return text(StatusCode::GATEWAY_TIMEOUT, "gateway timeout: the script took too long");
        }
    };
    let parsed = match parse_head(&head.block) {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!(script = %file.display(), reason = why, "bad CGI header block");
            finish(child, stderr, ep.session.close_grace, None, permit, record).await;
            return text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: the script's answer was not a CGI response",
            );
        }
    };
    if let Some(local) = parsed.local_redirect {
        finish(child, stderr, ep.session.close_grace, None, permit, record).await;
        return Answer::LocalRedirect(local);
    }
    let (tx, body) = body::channel(READ_AHEAD);
    let mut resp = Response::new(body);
    *resp.status_mut() = parsed.status;
    *resp.headers_mut() = parsed.headers;
    let grace = ep.session.close_grace;
    let shutdown = ep.shutdown.clone();
    let record = Arc::clone(record);
    ep.sessions.spawn(
        async move {
            let cut = stream(
                &mut stdout,
                head.rest,
                &tx,
                deadline,
                &mut child,
                &body_too_large,
                &shutdown,
            )
            .await;
            drop(stdout);
            finish(child, stderr, grace, Some((tx, cut)), permit, &record).await;
        }
        .in_current_span(),
    );
    Answer::Response(resp)
}

/// Stops (or collects) the script, tells the access line how it ended, and ends the
/// answer: cleanly, or with an error that makes hyper cut it off. The `--maxforks` slot
/// is freed last.
async fn finish(
    mut child: Child,
    stderr: tokio::task::JoinHandle<()>,
    grace: std::time::Duration,
    answer: Option<(BodySender, Cut)>,
    permit: Option<OwnedSemaphorePermit>,
    record: &Record,
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
    record.exit(child::exit_field(&status));
    if let Some((tx, cut)) = answer {
        // (the access line's `cut=`, the warning's reason)
        let why = match cut {
            Cut::Complete if signalled => Some(("killed", "the script was killed")),
            Cut::Complete | Cut::ClientGone => None,
            Cut::TimedOut => Some(("timeout", "the script ran out of time (--cgitimeout)")),
            Cut::ReadError => Some(("read_error", "reading the script's output failed")),
            Cut::BodyTooLarge => Some((
                "body_too_large",
                "the request body passed the limit after the script had answered",
            )),
            Cut::Shutdown => Some(("shutdown", "the server is shutting down")),
        };
        match why {
            Some((cut, why)) => {
                tracing::warn!(exit = %exit, reason = why, "CGI answer cut off");
                record.cut(cut);
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
