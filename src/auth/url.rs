//! `--authurl`: the auth hook's contract over HTTP, like nginx's `auth_request`. One GET
//! per check to the service (hyper's client, a new connection each time, all of it under
//! the `--authtimeout` deadline) with the request's end-to-end headers, `Host` set to the
//! service, and `X-Original-URI`, `X-Original-Method`, `X-Forwarded-For` (the client as
//! `--trusted-proxy` sees it; whatever the client sent under that name is dropped),
//! `X-Forwarded-Proto` and `X-Forwarded-Host` (the client's `Forwarded` and `X-Real-IP`
//! are dropped too). A 2xx allows, and its `X-Auth-NAME` headers (at most
//! [`MAX_OUTPUT`] bytes in all, as a hook's output; more is a failure) become
//! `AUTH_NAME` (`X-Remote-User` becomes `REMOTE_USER`); 401 and 403 deny
//! with that status and the service's `WWW-Authenticate`; anything else, or no answer in
//! time, is a failure (503). The service's body is not read.

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::Instrument;

use super::gate::{allowed_var, Verdict, MAX_HOOK_VARS};
use super::hook::MAX_OUTPUT;
use crate::body;
use crate::config::AuthUrl;
use crate::state::Conn;

/// Asks the service about `req`.
pub(super) async fn ask(url: &AuthUrl, req: &Request<Incoming>, conn: Conn, deadline: Instant) -> Verdict {
    match timeout_at(deadline, exchange(url, req, conn)).await {
        Ok(Ok(v)) => v,
        Ok(Err(why)) => Verdict::Fail(format!("{}: {why}", url.authority)),
        Err(_) => Verdict::Fail(format!("{}: no answer within --authtimeout", url.authority)),
    }
}

async fn exchange(url: &AuthUrl, req: &Request<Incoming>, conn: Conn) -> Result<Verdict, String> {
    let tcp = TcpStream::connect(url.authority.as_str())
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake failed: {e}"))?;
    // Dropped with the answer: the service's body is never read.
    tokio::spawn(
        async move {
            let _ = connection.await;
        }
        .in_current_span(),
    );
    let mut ask = Request::new(body::empty());
    *ask.uri_mut() = url.target.parse().map_err(|_| "bad --authurl path".to_owned())?;
    *ask.version_mut() = Version::HTTP_11;
    *ask.headers_mut() = headers_for(url, req, conn);
    let answer = sender
        .send_request(ask)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    Ok(verdict(answer.status(), answer.headers()))
}

/// The request's headers as the service gets them.
fn headers_for<B>(url: &AuthUrl, req: &Request<B>, conn: Conn) -> HeaderMap {
    let mut h = req.headers().clone();
    // Hop-by-hop fields, and what describes a body this GET does not have.
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::EXPECT,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        HeaderName::from_static("x-original-uri"),
        HeaderName::from_static("x-original-method"),
        HeaderName::from_static("x-forwarded-for"),
        HeaderName::from_static("x-forwarded-proto"),
        HeaderName::from_static("x-forwarded-host"),
        // The client's other ways of saying where it is from: a service that reads
        // them instead of X-Forwarded-For must not believe the client.
        HeaderName::from_static("forwarded"),
        HeaderName::from_static("x-real-ip"),
    ] {
        h.remove(name);
    }
    if let Some(host) = req.headers().get(header::HOST) {
        h.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&url.authority) {
        h.insert(header::HOST, v);
    }
    let uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if let Ok(v) = HeaderValue::from_str(uri) {
        h.insert(HeaderName::from_static("x-original-uri"), v);
    }
    if let Ok(v) = HeaderValue::from_str(req.method().as_str()) {
        h.insert(HeaderName::from_static("x-original-method"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&conn.peer.addr_string()) {
        h.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    let proto = if conn.tls { "https" } else { "http" };
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    h
}

/// The service's answer as a verdict.
fn verdict(status: StatusCode, headers: &HeaderMap) -> Verdict {
    if status.is_success() {
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut bytes = 0;
        for (name, value) in headers {
            let var = match name.as_str() {
                "x-remote-user" => "REMOTE_USER".to_owned(),
                n => match n.strip_prefix("x-auth-") {
                    Some(rest) => format!("AUTH_{}", rest.to_ascii_uppercase().replace('-', "_")),
                    None => continue,
                },
            };
            let Ok(value) = value.to_str() else { continue };
            if allowed_var(&var) && vars.len() < MAX_HOOK_VARS && !vars.iter().any(|(k, _)| *k == var) {
                // The bound a hook's output has: past it the program could not even be
                // started (one variable over 128 KiB makes exec fail).
                bytes += var.len() + value.len() + 2;
                if bytes > MAX_OUTPUT {
                    return Verdict::Fail(format!(
                        "the auth service's X-Auth-* headers are over {MAX_OUTPUT} bytes"
                    ));
                }
                vars.push((var, value.to_owned()));
            } else {
                tracing::warn!(target: "wsbridge::auth", header = name.as_str(), "auth service header ignored");
            }
        }
        return Verdict::Allow(vars);
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let headers = headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| (header::WWW_AUTHENTICATE, v.clone()))
            .collect();
        return Verdict::Deny { status, headers };
    }
    Verdict::Fail(format!("the auth service answered {}", status.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Peer;

    #[test]
    fn the_client_cannot_say_where_it_is_from() {
        let req = Request::get("/x?y=1")
            .header("host", "board:8080")
            .header("x-forwarded-for", "10.9.9.9")
            .header("forwarded", "for=10.9.9.9;proto=https")
            .header("x-real-ip", "10.9.9.9")
            .header("x-forwarded-proto", "https")
            .header("cookie", "s=1")
            .body(())
            .unwrap();
        let conn = Conn {
            id: 1,
            peer: Peer::Addr("192.0.2.7:5000".parse().unwrap()),
            proxy: None,
            tls: false,
        };
        let url = AuthUrl::parse("http://127.0.0.1:9000/auth").unwrap();
        let h = headers_for(&url, &req, conn);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "board:8080");
        assert_eq!(h["host"], "127.0.0.1:9000");
        assert_eq!(h["x-original-uri"], "/x?y=1");
        assert_eq!(h["cookie"], "s=1");
        assert!(
            h.get("forwarded").is_none(),
            "the client's Forwarded reached the service"
        );
        assert!(
            h.get("x-real-ip").is_none(),
            "the client's X-Real-IP reached the service"
        );
    }

    #[test]
    fn answers_become_verdicts() {
        let mut h = HeaderMap::new();
        h.insert("x-auth-user", HeaderValue::from_static("alice"));
        h.insert("x-auth-role-name", HeaderValue::from_static("admin"));
        h.insert("x-remote-user", HeaderValue::from_static("al"));
        h.insert("x-other", HeaderValue::from_static("x"));
        let Verdict::Allow(mut vars) = verdict(StatusCode::NO_CONTENT, &h) else {
            panic!("2xx allows")
        };
        vars.sort();
        assert_eq!(
            vars,
            [
                ("AUTH_ROLE_NAME".to_owned(), "admin".to_owned()),
                ("AUTH_USER".to_owned(), "alice".to_owned()),
                ("REMOTE_USER".to_owned(), "al".to_owned()),
            ]
        );
        let mut h = HeaderMap::new();
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        let Verdict::Deny { status, headers } = verdict(StatusCode::UNAUTHORIZED, &h) else {
            panic!("401 denies")
        };
        assert_eq!((status, headers.len()), (StatusCode::UNAUTHORIZED, 1));
        assert!(matches!(verdict(StatusCode::FOUND, &h), Verdict::Fail(_)));
        // hyper's client takes a 400 KiB head; one value that big would make every exec
        // of the program fail (E2BIG: 128 KiB per variable), so the service is held to
        // what a hook may print.
        let mut h = HeaderMap::new();
        let big = HeaderValue::from_str(&"t".repeat(MAX_OUTPUT)).unwrap();
        h.insert("x-auth-token", big);
        assert!(matches!(verdict(StatusCode::OK, &h), Verdict::Fail(_)));
        let mut h = HeaderMap::new();
        for i in 0..40 {
            let name = HeaderName::from_bytes(format!("x-auth-v{i}").as_bytes()).unwrap();
            h.insert(name, HeaderValue::from_str(&"v".repeat(500)).unwrap());
        }
        assert!(matches!(verdict(StatusCode::OK, &h), Verdict::Fail(_)), "20 KB in all");
        assert!(matches!(
            verdict(StatusCode::INTERNAL_SERVER_ERROR, &h),
            Verdict::Fail(_)
        ));
    }
}
