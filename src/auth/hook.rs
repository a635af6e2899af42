//! `--authcmd`: one run of the auth hook program. It starts with the request's CGI
//! environment in its own process group, stdin closed, stderr logged like a program's;
//! its stdout is read while it runs (at most [`MAX_OUTPUT`] bytes: past that it is
//! stopped at once and the answer is 503). Exit 0 allows, and its `NAME=value` lines
//! (names [`super::gate::allowed_var`] accepts; others are logged and ignored) go to the
//! endpoint's environment. Any other exit denies: 403, or the
//! `Status: N` line it printed (3xx to 5xx), with its `WWW-Authenticate`, `Location` and
//! `Retry-After` lines as headers. Past the deadline the answer is 503 and the stop
//! ladder ([`crate::reap`]) takes the whole group down in the background, holding the
//! `--authmax` slot until it is gone.
//!
//! The hook's input (headers, query, cookies) is the client's: attacker-controlled.

use std::ffi::OsString;
use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{timeout_at, Instant};
use tracing::Instrument;

use super::gate::{allowed_var, Verdict, MAX_HOOK_VARS};
use crate::child::{self, Spec};
use crate::config::Program;
use crate::reap;
use crate::state::Endpoint;

/// Most bytes a hook may print; more is a failure (503).
pub const MAX_OUTPUT: usize = 16 * 1024;

/// Runs the hook and reads its verdict; `permit` is held until the hook is gone.
pub(super) async fn run(
    program: &Program,
    vars: Vec<(OsString, OsString)>,
    deadline: Instant,
    ep: &Arc<Endpoint>,
    permit: OwnedSemaphorePermit,
) -> Verdict {
    let spec = Spec {
        name: &program.name,
        program: &program.path,
        args: &program.args,
        env: vars,
        cwd: None,
        pinned: None,
    };
    let (mut child, stdio) = match child::spawn(spec) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(hook = %program.path.display(), error = %e, "failed to start the auth hook");
            return Verdict::Fail(format!("cannot start the hook: {e}"));
        }
    };
    tracing::debug!(pid = child.id(), "auth hook started");
    let child::Stdio {
        stdin,
        mut stdout,
        stderr,
    } = stdio;
    drop(stdin);
    ep.sessions.spawn(child::log_stderr(stderr, None).in_current_span());
    // Read while waiting for the exit: a pipe may hold less than MAX_OUTPUT (one or two
    // pages once the user's pipe-user-pages-soft is used up), and a hook that printed
    // too much would otherwise sit blocked on a full pipe until the deadline.
    let mut out = Vec::new();
    let early = timeout_at(deadline, read_until_exit(&mut child, &mut stdout, &mut out))
        .await
        .unwrap_or(Early::TimedOut);
    let why = match &early {
        Early::Exited => None,
        Early::TimedOut => Some("the hook timed out".to_owned()),
        Early::TooMuch => Some(format!("the hook printed more than {MAX_OUTPUT} bytes")),
        Early::ReadFailed(e) => Some(format!("cannot read the hook's output: {e}")),
    };
    if let Some(why) = why {
        if matches!(early, Early::TimedOut) {
            tracing::warn!(
                pid = child.id(),
                "auth hook timed out (--authtimeout); stopping its process group"
            );
        } else {
            tracing::warn!(
                pid = child.id(),
                reason = why,
                "auth hook output refused; stopping its process group"
            );
        }
        let grace = ep.session.close_grace;
        ep.sessions.spawn(
            async move {
                drop(stdout);
                reap::stop(child, grace).await;
                drop(permit);
            }
            .in_current_span(),
        );
        return Verdict::Fail(why);
    }
    // Kills whatever the hook left in its group, so its stdout reaches EOF.
    let status = reap::collect(child);
    let rest = (MAX_OUTPUT + 1).saturating_sub(out.len()) as u64;
    let mut limited = (&mut stdout).take(rest);
    let read = timeout_at(deadline, limited.read_to_end(&mut out)).await;
    drop(permit);
    let status = match status {
        Ok(s) => s,
        Err(e) => return Verdict::Fail(format!("cannot collect the hook's exit: {e}")),
    };
    match read {
        Ok(Ok(_)) if out.len() <= MAX_OUTPUT => {}
        Ok(Ok(_)) => return Verdict::Fail(format!("the hook printed more than {MAX_OUTPUT} bytes")),
        Ok(Err(e)) => return Verdict::Fail(format!("cannot read the hook's output: {e}")),
        Err(_) => return Verdict::Fail("the hook's output did not end (a process outside its group?)".into()),
    }
    let parsed = parse_output(&out);
    for name in &parsed.ignored {
        tracing::warn!(target: "wsbridge::auth", name, "auth hook line ignored (only AUTH_* and REMOTE_USER may be set)");
    }
    tracing::debug!(exit = %child::describe(&status), "auth hook ended");
    if status.success() {
        return Verdict::Allow(parsed.vars);
    }
    Verdict::Deny {
        status: parsed.status.unwrap_or(StatusCode::FORBIDDEN),
        headers: parsed.headers,
    }
}

/// How reading a hook's output while it runs ended.
enum Early {
    Exited,
    TimedOut,
    TooMuch,
    ReadFailed(std::io::Error),
}

/// Reads the hook's stdout into `out` until the hook exits, or until it has printed
/// more than [`MAX_OUTPUT`].
async fn read_until_exit(
    child: &mut child::Child,
    stdout: &mut tokio::net::unix::pipe::Receiver,
    out: &mut Vec<u8>,
) -> Early {
    let mut chunk = [0u8; 4096];
    let mut open = true;
    loop {
        tokio::select! {
            () = child.exited() => return Early::Exited,
            n = stdout.read(&mut chunk), if open => match n {
                Ok(0) => open = false,
                Ok(n) => {
                    out.extend_from_slice(&chunk[..n]);
                    if out.len() > MAX_OUTPUT {
                        return Early::TooMuch;
                    }
                }
                Err(e) => return Early::ReadFailed(e),
            },
        }
    }
}

/// What a hook printed, sorted out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Output {
    pub vars: Vec<(String, String)>,
    pub status: Option<StatusCode>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Names of variables or headers that were not taken (for the log).
    pub ignored: Vec<String>,
}

/// Reads a hook's lines: `NAME=value` is a variable, `Name: value` a header (whichever
/// separator comes first decides). Variables outside [`allowed_var`], headers other
/// than `Status`, `WWW-Authenticate`, `Location` and `Retry-After`, and lines that are
/// not UTF-8 are ignored (and named in `ignored`).
pub(crate) fn parse_output(out: &[u8]) -> Output {
    let mut o = Output::default();
    for line in out.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.trim_ascii().is_empty() {
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            o.ignored.push("(a line that is not UTF-8)".into());
            continue;
        };
        let eq = line.find('=');
        let colon = line.find(':');
        let is_var = match (eq, colon) {
            (Some(e), Some(c)) => e < c,
            (Some(_), None) => true,
            _ => false,
        };
        if is_var {
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            if allowed_var(name) && o.vars.len() < MAX_HOOK_VARS && !value.contains('\0') {
                o.vars.retain(|(k, _)| k != name);
                o.vars.push((name.to_owned(), value.to_owned()));
            } else {
                o.ignored.push(name.to_owned());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            o.ignored.push(line.chars().take(40).collect());
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            // Three digits, then the end or a space before the reason ("401 Unauthorized"):
            // "4011" or "401x" is not a status.
            let digits = value.split(' ').next().unwrap_or_default();
            let code = (digits.len() == 3).then(|| digits.parse::<u16>().ok()).flatten();
            match code.and_then(|c| StatusCode::from_u16(c).ok()) {
                Some(s) if (300..600).contains(&s.as_u16()) => o.status = Some(s),
                _ => o.ignored.push("Status".into()),
            }
            continue;
        }
        let passed = ["www-authenticate", "location", "retry-after"];
        let header = passed
            .iter()
            .find(|p| name.eq_ignore_ascii_case(p))
            .and_then(|p| Some((HeaderName::from_static(p), HeaderValue::from_str(value).ok()?)));
        match header {
            Some(h) => o.headers.push(h),
            None => o.ignored.push(name.to_owned()),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_become_variables_status_and_headers() {
        let o = parse_output(
            b"AUTH_USER=alice\r\nAUTH_URL=http://x/?a=b:c\nPATH=/evil\nLD_PRELOAD=/x.so\n\
              Status: 401 Unauthorized\nWWW-Authenticate: Bearer realm=\"x\"\nSet-Cookie: a=b\n\
              REMOTE_USER=al\nAUTH_USER=alice2\n\xff\xfe\n",
        );
        assert_eq!(
            o.vars,
            [
                ("AUTH_URL".to_owned(), "http://x/?a=b:c".to_owned()),
                ("REMOTE_USER".to_owned(), "al".to_owned()),
                ("AUTH_USER".to_owned(), "alice2".to_owned()),
            ]
        );
        assert_eq!(o.status, Some(StatusCode::UNAUTHORIZED));
        assert_eq!(o.headers.len(), 1);
        assert_eq!(o.headers[0].0, "www-authenticate");
        assert_eq!(o.headers[0].1, "Bearer realm=\"x\"");
        assert!(o.ignored.contains(&"PATH".to_owned()));
        assert!(o.ignored.contains(&"LD_PRELOAD".to_owned()));
        assert!(o.ignored.contains(&"Set-Cookie".to_owned()));
        assert_eq!(parse_output(b"Status: 200\n").status, None, "a deny cannot be a 2xx");
        assert_eq!(parse_output(b"Status: abc\n").status, None);
        assert_eq!(
            parse_output(b"Status: 4011\n").status,
            None,
            "four digits are not a status"
        );
        assert_eq!(parse_output(b"Status: 401x\n").status, None);
        assert_eq!(parse_output(b"Status: 401\n").status, Some(StatusCode::UNAUTHORIZED));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever a hook prints, only allowed names come out, at most
        /// [`MAX_HOOK_VARS`] of them, values without NUL or line breaks, and a status
        /// only from 300 to 599.
        #[test]
        fn whatever_a_hook_prints_only_allowed_variables_come_out(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            lines in proptest::collection::vec("(AUTH_|REMOTE_|PATH|Status|LD_)?[A-Za-z0-9_ =:\\x00-]{0,24}", 0..80),
        ) {
            let mut out = noise;
            out.extend(lines.join("\n").bytes());
            let o = parse_output(&out);
            proptest::prop_assert!(o.vars.len() <= MAX_HOOK_VARS);
            for (k, v) in &o.vars {
                proptest::prop_assert!(allowed_var(k), "{k}");
                proptest::prop_assert!(!v.contains(['\0', '\n']), "{v:?}");
            }
            proptest::prop_assert!(o.status.is_none_or(|s| (300..600).contains(&s.as_u16())));
        }
    }
}
