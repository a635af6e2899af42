//! Who may connect: the access checks every request meets before dispatch, when any is
//! configured. [`check`] runs, in order, HTTP basic auth against `--htpasswd` (upgrades
//! and plain HTTP alike) and then the auth hook, `--authcmd` ([`hook`]) or `--authurl`
//! ([`url`]), before every upgrade and, with `--authcmd-http`, before plain HTTP too. It
//! answers a refusal itself (401 with `WWW-Authenticate`, 403, the hook's status, or 503
//! when a check cannot finish), or hands back the [`Identity`] that the handlers put in
//! the program's environment (`AUTH_TYPE`, `REMOTE_USER`, the hook's `AUTH_*`).
//!
//! Bounds: a check waits at most `--authtimeout` in all (for a slot and for the hook);
//! at most `--authmax` checks run at once (hook runs, `--authurl` requests and password
//! verifications that miss the cache), apart from `--maxforks`, so a flood of clients
//! that are not let in never takes a slot a session needs. Password verification runs on
//! the blocking pool, never on an async worker. Per-client limits will sit beside this
//! (they need the same client address and come before any check).
//!
//! All of it is the cargo feature `auth` (default on; 0.19 MB of release binary with the
//! password crates); without it config refuses the access flags at startup (exit 1).

#[cfg(feature = "auth")]
mod gate;
#[cfg(feature = "auth")]
mod hook;
#[cfg(feature = "auth")]
mod url;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::body::Body;
use crate::env::Identity;
use crate::state::{Conn, Endpoint};

#[cfg(feature = "auth")]
pub use self::gate::{credentials, MAX_AUTHORIZATION, MAX_HOOK_VARS};

/// The access checks for one request: `Ok(None)` when none is configured, `Ok(Some)`
/// with who the client is, or `Err` with the refusal to send.
pub async fn check(
    req: &Request<Incoming>,
    ep: &Arc<Endpoint>,
    conn: Conn,
    upgrade: bool,
) -> Result<Option<Identity>, Response<Body>> {
    if ep.serve.access.is_open() {
        return Ok(None);
    }
    #[cfg(feature = "auth")]
    return gate::checks(req, ep, conn, upgrade).await;
    // Config refuses every access flag in a build without `auth`; should one get here
    // anyway, nobody is let in.
    #[cfg(not(feature = "auth"))]
    {
        let _ = (req, conn, upgrade);
        Err(crate::body::text(
            hyper::StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable: access checks are not built in",
        ))
    }
}
