//! Who may connect: the "Access control" flags resolved ([`Access`]: `--htpasswd` loaded,
//! `--realm`, the auth hook `--authcmd` or `--authurl`, `--authcmd-http`, `--authtimeout`,
//! `--authmax`) and their rules, checked once. Durations are read by
//! [`super::limits::parse_duration`], as every duration flag's. The checks themselves are
//! [`crate::auth`]'s.

use std::time::Duration;

use super::error::{ResolveError, UsageError};
use super::limits::parse_duration;
use super::program::Program;
use crate::cli::Cli;
use crate::htpasswd::Htpasswd;

/// The access control settings; [`Access::is_open`] when none is given.
#[derive(Debug, Clone)]
pub struct Access {
    /// `--htpasswd`, loaded (and reloaded on SIGHUP through the same handle).
    pub htpasswd: Option<Htpasswd>,
    /// `--realm`: quoted in `WWW-Authenticate: Basic realm="..."`.
    pub realm: String,
    pub hook: Option<Hook>,
    /// `--authcmd-http`: the hook also runs for plain HTTP requests.
    pub hook_http: bool,
    /// `--authtimeout`: the longest a hook run (or the wait for a slot) may take.
    pub timeout: Duration,
    /// `--authmax`: access checks at once.
    pub max_checks: usize,
}

/// The auth hook: a program, or an HTTP service.
#[derive(Debug, Clone)]
pub enum Hook {
    /// `--authcmd`: run with the request's CGI environment.
    Cmd(Program),
    /// `--authurl`.
    Url(AuthUrl),
}

/// `--authurl=http://HOST[:PORT][/PATH][?QUERY]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUrl {
    /// `HOST:PORT` to connect to (IPv6 in brackets); also the `Host` sent.
    pub authority: String,
    /// The request target: `/PATH?QUERY`, `/` when there was none.
    pub target: String,
}

impl AuthUrl {
    /// Parses an `--authurl` value: `http://` only (the service is expected beside
    /// wsbridge, on the same machine or network).
    pub fn parse(s: &str) -> Result<Self, UsageError> {
        let bad = |why: &str| UsageError::AuthUrl(format!("invalid --authurl={s}: {why}"));
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| bad("expected http://HOST[:PORT]/PATH"))?;
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let target = if target.starts_with('?') {
            format!("/{target}")
        } else {
            target.to_owned()
        };
        if target.contains(['#', ' ']) || target.parse::<hyper::Uri>().is_err() {
            return Err(bad("bad path"));
        }
        if authority.is_empty() || authority.contains(['@', ' ']) {
            return Err(bad("bad host"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !authority.ends_with(']') => (h, Some(p)),
            _ => (authority, None),
        };
        if host.is_empty() || host.starts_with('[') != host.ends_with(']') {
            return Err(bad("bad host"));
        }
        let port: u16 = match port {
            None => 80,
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
        };
        Ok(AuthUrl {
            authority: format!("{host}:{port}"),
            target,
        })
    }
}

impl Access {
    /// No check at all: every request goes straight to dispatch.
    pub fn is_open(&self) -> bool {
        self.htpasswd.is_none() && self.hook.is_none()
    }
}

/// The access flags checked against each other, not yet resolved.
pub(super) struct Checked<'a> {
    cli: &'a Cli,
    timeout: Duration,
    url: Option<AuthUrl>,
}

/// The access flags' usage rules (before anything is looked up).
pub(super) fn check(cli: &Cli) -> Result<Checked<'_>, UsageError> {
    if cli.authcmd.is_some() && cli.authurl.is_some() {
        return Err(UsageError::AuthHookTwice);
    }
    let hooked = cli.authcmd.is_some() || cli.authurl.is_some();
    if cli.authcmd_http && !hooked {
        return Err(UsageError::AuthHttpWithoutHook);
    }
    if cli.realm != "wsbridge" && cli.htpasswd.is_none() {
        return Err(UsageError::RealmWithoutHtpasswd);
    }
    // Like --realm: a value other than the default, with no check to apply it to, is a
    // flag the user thinks works but does nothing.
    let checked = cli.htpasswd.is_some() || hooked;
    if !checked && cli.authtimeout != "5s" {
        return Err(UsageError::AuthTuningWithoutCheck("--authtimeout"));
    }
    if !checked && cli.authmax != 16 {
        return Err(UsageError::AuthTuningWithoutCheck("--authmax"));
    }
    if cli.realm.contains(['"', '\\']) || cli.realm.chars().any(char::is_control) {
        return Err(UsageError::Realm(cli.realm.clone()));
    }
    let timeout = parse_duration(&cli.authtimeout).map_err(|why| UsageError::Value {
        flag: "--authtimeout",
        value: cli.authtimeout.clone(),
        why,
    })?;
    if cli.authmax == 0 {
        return Err(UsageError::Zero("--authmax"));
    }
    let url = cli.authurl.as_deref().map(AuthUrl::parse).transpose()?;
    Ok(Checked { cli, timeout, url })
}

impl Checked<'_> {
    /// What the flags name: the password file read, the hook program looked up.
    pub(super) fn resolve(self) -> Result<Access, ResolveError> {
        let cli = self.cli;
        let given = [
            ("--htpasswd", cli.htpasswd.is_some()),
            ("--authcmd", cli.authcmd.is_some()),
            ("--authurl", cli.authurl.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g && !cfg!(feature = "auth")) {
            return Err(ResolveError::NoAuth(flag));
        }
        let htpasswd = match &cli.htpasswd {
            Some(path) => Some(Htpasswd::load(path).map_err(ResolveError::Htpasswd)?),
            None => None,
        };
        let hook = match (&cli.authcmd, self.url) {
            (Some(cmd), _) => {
                // The hook gets the endpoint's --passenv, so its `#!` is checked against that PATH.
                let passenv = super::read_passenv(&cli.passenv);
                let child_path = passenv.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_ref());
                Program::resolve(Some(cmd.clone()), Vec::new(), child_path)?.map(Hook::Cmd)
            }
            (None, Some(url)) => Some(Hook::Url(url)),
            (None, None) => None,
        };
        Ok(Access {
            htpasswd,
            realm: cli.realm.clone(),
            hook,
            hook_http: cli.authcmd_http,
            timeout: self.timeout,
            max_checks: cli.authmax,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authurl_is_http_with_a_path() {
        let a = |s: &str| AuthUrl::parse(s).map(|u| (u.authority, u.target));
        assert_eq!(
            a("http://127.0.0.1:9000/auth?x=1").unwrap(),
            ("127.0.0.1:9000".into(), "/auth?x=1".into())
        );
        assert_eq!(a("http://auth").unwrap(), ("auth:80".into(), "/".into()));
        assert_eq!(a("http://[::1]:81?q").unwrap(), ("[::1]:81".into(), "/?q".into()));
        for bad in [
            "https://a/",
            "a:1",
            "http://",
            "http://u@a/",
            "http://a:x/",
            "http://a/ b",
        ] {
            assert!(a(bad).is_err(), "{bad}");
        }
    }
}
