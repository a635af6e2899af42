//! The access checks themselves (cargo feature `auth`): basic auth against `--htpasswd`,
//! then the hook ([`super::hook`], [`super::url`]), with the `--authmax` slots and the
//! answers to refusals. [`super::check`] calls [`checks`] when any check is configured.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::body::{text, Body};
use crate::config::Hook;
use crate::env::{self, Identity};
use crate::state::{Conn, Endpoint};

/// Longest `Authorization` value looked at; a longer one is refused (401) unread.
pub const MAX_AUTHORIZATION: usize = 4096;
/// Most variables a hook or an auth service may add.
pub const MAX_HOOK_VARS: usize = 64;

/// What a hook (program or service) decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Let in, with these variables (`AUTH_*`, `REMOTE_USER`) for the program.
    Allow(Vec<(String, String)>),
    /// Refused with this status and these headers (`WWW-Authenticate`, ...).
    Deny {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// The check could not be made (timeout, crash, bad answer): 503, and why.
    Fail(String),
}

/// The configured checks for one request: `Ok` with who the client is, or `Err` with
/// the refusal to send.
pub(super) async fn checks(
    req: &Request<Incoming>,
    ep: &Arc<Endpoint>,
    conn: Conn,
    upgrade: bool,
) -> Result<Option<Identity>, Response<Body>> {
    let access = &ep.serve.access;
    let deadline = Instant::now() + access.timeout;
    let mut id = Identity::default();
    if let Some(users) = &access.htpasswd {
        let (user, password) = credentials(req.headers()).map_err(|why| {
            tracing::info!(target: "wsbridge::auth", reason = why, "basic auth refused");
            challenge(&access.realm, why)
        })?;
        let ok = if users.cached(&user, &password) {
            true
        } else {
            let Some(permit) = slot(ep, deadline).await else {
                return Err(busy());
            };
            let (users, name) = (users.clone(), user.clone());
            let verified = tokio::task::spawn_blocking(move || {
                let ok = users.verify(&name, &password);
                drop(permit);
                ok
            });
            // The answer comes by the deadline like every check's; a verification that
            // outlives it still holds its slot until it ends, so the work stays bounded.
            match tokio::time::timeout_at(deadline, verified).await {
                Ok(done) => done.unwrap_or(false),
                Err(_) => {
                    tracing::warn!(target: "wsbridge::auth", user, "password check did not finish within --authtimeout; answering 503");
                    return Err(unfinished());
                }
            }
        };
        if !ok {
            tracing::info!(target: "wsbridge::auth", user, reason = "wrong user name or password", "basic auth refused");
            return Err(challenge(&access.realm, "wrong user name or password"));
        }
        id.auth_type = "Basic".into();
        id.remote_user = user;
    }
    let Some(hook) = &access.hook else { return Ok(Some(id)) };
    if !(upgrade || access.hook_http) {
        return Ok(Some(id));
    }
    let Some(permit) = slot(ep, deadline).await else {
        return Err(busy());
    };
    // Which check answered, in its log lines: a refusal from --authurl's service is not
    // the hook's.
    let by = match hook {
        Hook::Cmd(_) => "--authcmd",
        Hook::Url(_) => "--authurl",
    };
    let verdict = match hook {
        Hook::Cmd(program) => {
            let vars = hook_environment(req, ep, conn, &id).map_err(|e| text(StatusCode::BAD_REQUEST, e))?;
            super::hook::run(program, vars, deadline, ep, permit).await
        }
        Hook::Url(url) => {
            let v = super::url::ask(url, req, conn, deadline).await;
            drop(permit);
            v
        }
    };
    match verdict {
        Verdict::Allow(vars) => {
            for (k, v) in vars {
                if k == "REMOTE_USER" {
                    id.remote_user = v;
                } else {
                    id.vars.push((k, v));
                }
            }
            Ok(Some(id))
        }
        Verdict::Deny { status, headers } => {
            tracing::info!(target: "wsbridge::auth", by, status = status.as_u16(), "access check refused");
            let why = match status {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::FORBIDDEN => "forbidden",
                _ => "refused by the access check",
            };
            let mut resp = text(status, why);
            resp.headers_mut().extend(headers);
            Err(resp)
        }
        Verdict::Fail(why) => {
            tracing::warn!(target: "wsbridge::auth", by, reason = why, "access check failed; answering 503");
            Err(unfinished())
        }
    }
}

fn unfinished() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "service unavailable: the access check did not finish",
    )
}

/// One `--authmax` slot, waiting until `deadline` at most.
async fn slot(ep: &Endpoint, deadline: Instant) -> Option<OwnedSemaphorePermit> {
    let waiting = Arc::clone(&ep.auth_checks).acquire_owned();
    match tokio::time::timeout_at(deadline, waiting).await {
        Ok(Ok(p)) => Some(p),
        _ => {
            tracing::warn!(target: "wsbridge::auth", "no free access-check slot in time (--authmax)");
            None
        }
    }
}

fn busy() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "service unavailable: too many access checks at once",
    )
}

/// The 401 that asks for credentials (RFC 7617), saying what was wrong.
fn challenge(realm: &str, why: &str) -> Response<Body> {
    let mut resp = text(StatusCode::UNAUTHORIZED, &format!("unauthorized: {why}"));
    // Config refused quotes, backslashes and control characters in the realm.
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The user and password of `Authorization: Basic`, or why there are none.
pub fn credentials(headers: &HeaderMap) -> Result<(String, Vec<u8>), &'static str> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (all.next(), all.next()) {
        (None, _) => return Err("credentials needed"),
        (Some(_), Some(_)) => return Err("more than one Authorization header"),
        (Some(v), None) => v.as_bytes(),
    };
    if value.len() > MAX_AUTHORIZATION {
        return Err("the Authorization header is too long");
    }
    let value = value.trim_ascii();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], value[i..].trim_ascii()),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err("only the Basic scheme is accepted");
    }
    let decoded = data_encoding::BASE64
        .decode(rest)
        .map_err(|_| "the Basic credentials are not base64")?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or("the Basic credentials have no colon")?;
    let user = std::str::from_utf8(&decoded[..colon]).map_err(|_| "the user name is not UTF-8")?;
    if user.is_empty() || user.chars().any(char::is_control) {
        return Err("the user name is empty or has control characters");
    }
    Ok((user.to_owned(), decoded[colon + 1..].to_vec()))
}

/// The CGI environment the endpoint would get (with `SCRIPT_NAME=/`: the hook runs before
/// routing), plus what basic auth found.
fn hook_environment(
    req: &Request<Incoming>,
    ep: &Endpoint,
    conn: Conn,
    id: &Identity,
) -> Result<Vec<(std::ffi::OsString, std::ffi::OsString)>, &'static str> {
    let built = env::build(
        &env::Request {
            remote: conn.peer,
            version: req.version(),
            method: req.method().as_str(),
            raw_path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
            tls: conn.tls,
            unique_id: ep.unique_id(&conn),
            script_name: "/",
            protocol: None,
        },
        &ep.session.passenv,
    )?;
    let mut vars = built.vars;
    env::add_identity(&mut vars, id);
    Ok(vars)
}

/// Whether a hook may set this variable: `REMOTE_USER`, or `AUTH_` and then capitals,
/// digits and `_` (so never `PATH`, `LD_PRELOAD` or a header's `HTTP_*`).
pub(crate) fn allowed_var(name: &str) -> bool {
    name == "REMOTE_USER"
        || name.strip_prefix("AUTH_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(v: &str) -> Result<(String, Vec<u8>), &'static str> {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        credentials(&h)
    }

    #[test]
    fn basic_credentials_and_their_malformations() {
        // "alice:se:cret"
        assert_eq!(
            auth("Basic YWxpY2U6c2U6Y3JldA==").unwrap(),
            ("alice".into(), b"se:cret".to_vec())
        );
        assert_eq!(auth("basic  YWxpY2U6").unwrap(), ("alice".into(), Vec::new()));
        assert_eq!(credentials(&HeaderMap::new()), Err("credentials needed"));
        assert_eq!(auth("Bearer abc"), Err("only the Basic scheme is accepted"));
        assert_eq!(auth("Basic !!!"), Err("the Basic credentials are not base64"));
        assert_eq!(auth("Basic YWxpY2U"), Err("the Basic credentials are not base64"));
        assert_eq!(auth("Basic YWxpY2U="), Err("the Basic credentials have no colon"));
        assert_eq!(
            auth("Basic OnB3"),
            Err("the user name is empty or has control characters")
        );
        assert_eq!(
            auth(&format!("Basic {}", "A".repeat(5000))),
            Err("the Authorization header is too long")
        );
        let mut h = HeaderMap::new();
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Basic YWxpY2U6"));
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Basic YWxpY2U6"));
        assert_eq!(credentials(&h), Err("more than one Authorization header"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Any `Authorization` value is either refused or yields a non-empty user
        /// without a colon or control characters; it never panics.
        #[test]
        fn any_authorization_value_is_refused_or_clean(
            v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let mut h = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&v) {
                h.insert(header::AUTHORIZATION, value);
            }
            if let Ok((user, _)) = credentials(&h) {
                proptest::prop_assert!(!user.is_empty() && !user.contains(':'));
                proptest::prop_assert!(!user.chars().any(char::is_control));
            }
        }

        /// What a client encodes is what comes out, password bytes included.
        #[test]
        fn basic_credentials_round_trip(
            user in "[^:\\p{Cc}]{1,40}",
            password in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
        ) {
            let mut raw = user.clone().into_bytes();
            raw.push(b':');
            raw.extend_from_slice(&password);
            let value = format!("Basic {}", data_encoding::BASE64.encode(&raw));
            proptest::prop_assert_eq!(auth(&value), Ok((user, password)));
        }
    }

    #[test]
    fn hooks_may_set_only_auth_names() {
        for ok in ["AUTH_USER", "AUTH_ROLE_2", "REMOTE_USER", "AUTH_TYPE"] {
            assert!(allowed_var(ok), "{ok}");
        }
        for bad in [
            "PATH",
            "LD_PRELOAD",
            "AUTH_",
            "AUTH_user",
            "HTTP_AUTH_X",
            "REMOTE_ADDR",
            "AUTH_X-Y",
            "",
        ] {
            assert!(!allowed_var(bad), "{bad}");
        }
    }
}
