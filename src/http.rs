//! The hyper service for one connection: one dispatch decision per request, the extra
//! `--header*` headers, the request's span, and an access line for every answer that is
//! not a session ([`crate::access`]; sessions log their own). It owns the order of the handlers, not what
//! any handler does, nor the body type every answer uses ([`crate::body`], which the
//! handlers import so that none of them imports this dispatcher).
//!
//! Before dispatch, a request that breaks the rules every handler relies on is refused
//! here, once: a transfer coding other than `chunked` gets 501 (RFC 9112 §6.1); two
//! `Host` lines, HTTP/1.1 without `Host`, or a `Host` that is not `host[:port]` (RFC 9112
//! §3.2) get 400.
//!
//! Access: when `--htpasswd`, `--authcmd` or `--authurl` is given, [`crate::auth`] checks
//! every request first and answers the refusals; who it found travels with the request.
//! An upgrade meets `--maxperclient` and [`ws::precheck`] (handshake, origin) before it,
//! so what would be refused anyway costs no hook run and no password check.
//!
//! Dispatch: a WebSocket upgrade goes to [`crate::ws`] (PROGRAM, or with `--dir` the
//! script its path names; no script there is a 404 before any upgrade). Any other request
//! goes to the first of `--devconsole` ([`crate::console`]), `--cgidir` ([`crate::cgi`]),
//! `--staticdir` ([`crate::statics`]) that serves its path, and then to `--upstream`
//! ([`crate::upstream`]) if set. A request none of them serves gets 404, or 426 when wsbridge serves no plain HTTP at all and the path is a WebSocket
//! endpoint (so a browser opening the socket's URL learns why nothing is there).
//!
//! Headers: `--header` goes on every response; `--header-ws` on every response to an
//! upgrade request (101 and refusals alike); `--header-http` on every other response.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode, Version};

use tracing::Instrument;

use crate::access::Record;
use crate::body::{empty, text, Body};
use crate::config::Program;
use crate::error::Refusal;
use crate::limit::ClientSlot;
use crate::route;
use crate::state::{Conn, Endpoint};
use crate::stats;
use crate::ws::{self, Target};
use crate::{auth, cgi, console, statics, upstream};

/// Largest total size of a request's header fields; above it the answer is 431.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Answers one request, inside its own span (`req`, with `path`, then `pid` when a
/// program starts, and `client` when a `--trusted-proxy` names it), under the
/// connection's: on a keep-alive connection each request has its own.
pub async fn serve(req: Request<Incoming>, ep: Arc<Endpoint>, conn: Conn) -> Result<Response<Body>, Infallible> {
    let span = tracing::info_span!(
        "req",
        path = req.uri().path(),
        client = conn.proxy.map(|_| tracing::field::display(conn.peer)),
        pid = tracing::field::Empty
    );
    Ok(answer(req, ep, conn).instrument(span).await)
}

async fn answer(req: Request<Incoming>, ep: Arc<Endpoint>, conn: Conn) -> Response<Body> {
    let record = Record::new(
        conn.id,
        conn.peer,
        conn.proxy,
        req.method().clone(),
        req.uri().path(),
        req.uri().query(),
    );
    let extra = &ep.serve.headers;
    let upgrade_request = ws::is_upgrade(req.headers());
    let head_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let resp = if head_bytes > MAX_HEAD_BYTES {
        // hyper enforces its buffer limit only between reads; this makes the bound exact
        // (it also keeps the program's environment far below the exec limit).
        let resp = text(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large");
        with_headers(resp, &[&extra.all, &extra.http])
    } else if let Some(resp) = refuse_malformed(&req) {
        let kind = if ws::is_upgrade(req.headers()) {
            &extra.ws
        } else {
            &extra.http
        };
        with_headers(resp, &[&extra.all, kind])
    } else {
        let is_upgrade = ws::is_upgrade(req.headers());
        let kind = if is_upgrade { &extra.ws } else { &extra.http };
        // A client over --maxperclient, or an upgrade the handshake or origin checks
        // refuse, is refused before any access check runs for it (cheap checks first:
        // no hook run or bcrypt for what would be refused anyway).
        let client_slot = match is_upgrade {
            true => ep
                .client_slot(&conn)
                .and_then(|slot| ws::precheck(&req, &ep, conn).map(|()| slot)),
            false => Ok(None),
        };
        let resp = match client_slot {
            Err(refusal) => {
                record.refused_upgrade(origin_of(req.headers()).as_deref());
                refusal_response(refusal)
            }
            Ok(client_slot) => match auth::check(&req, &ep, conn, is_upgrade).await {
                Err(refused) => {
                    if is_upgrade {
                        record.refused_upgrade(origin_of(req.headers()).as_deref());
                    }
                    refused
                }
                Ok(id) => {
                    let mut req = req;
                    if let Some(id) = id {
                        record.user(&id.remote_user);
                        req.extensions_mut().insert(id);
                    }
                    match is_upgrade {
                        true => upgrade(req, &ep, conn, &record, client_slot),
                        false => plain(req, &ep, conn, &record).await,
                    }
                }
            },
        };
        with_headers(resp, &[&extra.all, kind])
    };
    stats::answered(upgrade_request, resp.status().as_u16());
    record.answer(resp)
}

/// The answer to a request no handler may see (websocketd's Go server refuses the same
/// ones): a transfer coding other than chunked, which would be lost on the way (501, RFC
/// 9112 §6.1), or a `Host` that breaks RFC 9112 §3.2 (400). The connection is closed
/// after it, since the body's framing may not be understood.
fn refuse_malformed(req: &Request<Incoming>) -> Option<Response<Body>> {
    let (status, why) = if !only_chunked(req.headers()) {
        (
            StatusCode::NOT_IMPLEMENTED,
            "not implemented: a transfer coding other than chunked",
        )
    } else {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let why = match (hosts.next(), hosts.next()) {
            (Some(_), Some(_)) => "bad request: more than one Host header",
            // HTTP/1.0 clients may leave it out; hyper speaks nothing older.
            (None, _) if req.version() != Version::HTTP_10 => "bad request: an HTTP/1.1 request needs a Host header",
            (Some(host), None) if !valid_host(host.as_bytes()) => "bad request: Host is not host[:port]",
            _ => return None,
        };
        (StatusCode::BAD_REQUEST, why)
    };
    tracing::debug!(reason = why, "request refused");
    let mut resp = text(status, why);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(resp)
}

/// Whether every coding in `Transfer-Encoding` is `chunked`. hyper refuses (400) a
/// request whose last coding is not, but lets `gzip, chunked` through and decodes only
/// the chunks, so the other coding would silently vanish.
fn only_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case(b"chunked"))
}

/// Whether a `Host` value is `host[:port]` (RFC 9112 §3.2, RFC 3986 §3.2.2), or empty.
/// host is a non-empty reg-name (ALPHA, DIGIT, `-._~!$&'()*+;=%`: RFC 3986's set without
/// the comma, which separates `X-Forwarded-Host` values) or an IP literal in brackets
/// (the same characters and `:`); port is digits, possibly none.
pub fn valid_host(value: &[u8]) -> bool {
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+;=%".contains(b);
    if value.is_empty() {
        return true;
    }
    let (host_ok, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &rest[..end];
            let ok = !literal.is_empty() && literal.iter().all(|b| reg_name(b) || *b == b':');
            match &rest[end + 1..] {
                [] => (ok, &b""[..]),
                [b':', port @ ..] => (ok, port),
                _ => return false,
            }
        }
        None => {
            let (host, port) = match value.iter().position(|&b| b == b':') {
                Some(i) => (&value[..i], &value[i + 1..]),
                None => (value, &b""[..]),
            };
            (!host.is_empty() && host.iter().all(reg_name), port)
        }
    };
    host_ok && port.iter().all(u8::is_ascii_digit)
}

fn upgrade(
    req: Request<Incoming>,
    ep: &Arc<Endpoint>,
    conn: Conn,
    record: &Record,
    client_slot: Option<ClientSlot>,
) -> Response<Body> {
    let origin = origin_of(req.headers());
    let accepted = match (&ep.session.program, &ep.serve.script_dir) {
        (Some(program), _) => ws::accept(
            req,
            ep,
            conn,
            Target {
                program: Some(program),
                script_name: "/",
            },
            client_slot,
        ),
        (None, Some(dir)) => match find_script(dir, req.uri().path()) {
            Some((program, script_name)) => ws::accept(
                req,
                ep,
                conn,
                Target {
                    program: Some(&program),
                    script_name: &script_name,
                },
                client_slot,
            ),
            None => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "not found: no WebSocket endpoint at this path",
            )),
        },
        // A `--broker` edge: its clients join the hub, which has no program.
        (None, None) if ep.hub.is_some() => ws::accept(
            req,
            ep,
            conn,
            Target {
                program: None,
                script_name: "/",
            },
            client_slot,
        ),
        (None, None) => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not found: no WebSocket endpoint here",
        )),
    };
    match accepted {
        Ok(resp) => resp.map(|()| empty()),
        Err(refusal) => {
            record.refused_upgrade(origin.as_deref());
            refusal_response(refusal)
        }
    }
}

/// The answer that carries a refusal.
fn refusal_response(refusal: Refusal) -> Response<Body> {
    let mut resp = text(refusal.status, &refusal.message);
    resp.headers_mut().extend(refusal.headers);
    resp
}

/// The `Origin` a request sent, kept for the access line of a refused upgrade (escaped
/// there: it is the client's text).
fn origin_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
}

/// `--dir`: the executable the path names, and its `SCRIPT_NAME`. The first segment
/// that is a regular file is the script; the rest of the path is `PATH_INFO`.
fn find_script(dir: &std::path::Path, raw_path: &str) -> Option<(Program, String)> {
    let segs = route::segments(raw_path)?;
    let script = route::find_script(dir, &segs.parts)?;
    if !script.is_executable() {
        tracing::info!(script = %script.path.display(), "not executable; answering 404");
        return None;
    }
    let script_name = String::from_utf8(route::url_path(&segs.parts, script.used)).ok()?;
    let program = Program {
        name: script.path.clone().into_os_string(),
        path: script.path.clone(),
        args: Vec::new(),
        pinned: Some(Arc::new(script)),
    };
    Some((program, script_name))
}

/// Is there a WebSocket endpoint at this path?
fn is_endpoint(ep: &Endpoint, raw_path: &str) -> bool {
    match (&ep.session.program, &ep.serve.script_dir) {
        (Some(_), _) => true,
        (None, Some(dir)) => find_script(dir, raw_path).is_some(),
        (None, None) => ep.hub.is_some(),
    }
}

/// How many `Location: /path` answers from CGI scripts one request may follow.
const MAX_LOCAL_REDIRECTS: usize = 3;

async fn plain(req: Request<Incoming>, ep: &Arc<Endpoint>, conn: Conn, record: &Arc<Record>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let mut body = Some(body);
    for _ in 0..=MAX_LOCAL_REDIRECTS {
        match plain_once(&parts, body.take(), ep, conn, record).await {
            Ok(resp) => return resp,
            Err(location) => match redirected(&parts, &location) {
                Some(next) => {
                    tracing::debug!(location, "CGI local redirect");
                    parts = next;
                }
                None => {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        "bad gateway: the script's Location is not a path",
                    )
                }
            },
        }
    }
    text(StatusCode::BAD_GATEWAY, "bad gateway: too many local redirects")
}

/// The request for a CGI local redirect: a GET of `location` without a body.
fn redirected(parts: &Parts, location: &str) -> Option<Parts> {
    let mut req = Request::get(location).version(parts.version).body(()).ok()?;
    *req.headers_mut() = parts.headers.clone();
    // Who the access checks found stays the same across the redirect.
    *req.extensions_mut() = parts.extensions.clone();
    for h in [header::CONTENT_LENGTH, header::CONTENT_TYPE, header::TRANSFER_ENCODING] {
        req.headers_mut().remove(h);
    }
    Some(req.into_parts().0)
}

/// One pass through the handlers; `Err(location)` asks for a local redirect.
async fn plain_once(
    parts: &Parts,
    body: Option<Incoming>,
    ep: &Arc<Endpoint>,
    conn: Conn,
    record: &Arc<Record>,
) -> Result<Response<Body>, String> {
    let cfg = &ep.serve;
    let path = parts.uri.path();
    if cfg.dev_console {
        record.handler("console");
        return Ok(console::serve(&parts.method));
    }
    if let Some(root) = &cfg.cgi_dir {
        if let Some(script) = cgi::find(root, path) {
            record.handler("cgi");
            return match cgi::run(script, parts, body, ep, conn, record).await {
                cgi::Answer::Response(resp) => Ok(resp),
                cgi::Answer::LocalRedirect(location) => Err(location),
            };
        }
    }
    if let Some(root) = &cfg.static_dir {
        let served = statics::serve(
            root,
            cfg.cgi_dir.as_deref(),
            &parts.method,
            path,
            parts.uri.query(),
            &parts.headers,
        )
        .await;
        if let statics::Outcome::Served(resp) = served {
            record.handler("static");
            return Ok(resp);
        }
    }
    if let Some(up) = &cfg.upstream {
        record.handler("upstream");
        return Ok(upstream::forward(up, parts, body, conn).await);
    }
    Ok(miss(ep, path))
}

/// Nothing serves this request.
fn miss(ep: &Endpoint, path: &str) -> Response<Body> {
    let cfg = &ep.serve;
    let serves_http = cfg.static_dir.is_some() || cfg.cgi_dir.is_some() || cfg.dev_console;
    if !serves_http && is_endpoint(ep, path) {
        let mut resp = text(
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint: connect with a WebSocket client",
        );
        resp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return resp;
    }
    text(StatusCode::NOT_FOUND, "not found")
}

fn with_headers(mut resp: Response<Body>, groups: &[&Vec<(HeaderName, HeaderValue)>]) -> Response<Body> {
    for (name, value) in groups.iter().flat_map(|g| g.iter()) {
        resp.headers_mut().append(name.clone(), value.clone());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values() {
        for good in [
            "",
            "board",
            "board:8080",
            "board:",
            "b.example.",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[::ffff:127.0.0.1]",
            "[fe80::1%25eth0]:1",
            "[v1.fe80::a+en1]",
            "a-b_c~d!e$f&g'h(i)j*k+l;m=n%41",
        ] {
            assert!(valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b",
            "a\tb",
            " a",
            "a,b",
            "a/b",
            "u@a",
            "a?",
            "a#",
            "a\"",
            "a\\",
            "a:80:80",
            "a:http",
            "a:-1",
            ":80",
            ":",
            "[::1",
            "[::1]x",
            "[::1]:x",
            "[]",
            "[::1]]",
            "[[::1]]",
            "[::1/64]",
            "a]",
            "b\u{f6}rd",
            "a\0",
            "a\r\n",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
        assert!(!valid_host(b"a\x80"), "high bytes");
    }

    #[test]
    fn only_chunked_transfer_codings() {
        let te = |lines: &[&'static str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(header::TRANSFER_ENCODING, HeaderValue::from_static(l));
            }
            only_chunked(&h)
        };
        assert!(te(&[]));
        assert!(te(&["chunked"]));
        assert!(te(&["Chunked"]));
        assert!(te(&[" , chunked"]), "empty list elements do not count");
        assert!(!te(&["gzip, chunked"]));
        assert!(!te(&["gzip", "chunked"]));
        assert!(!te(&["chunked;x=1"]));
        assert!(!te(&["identity"]));
    }
}
