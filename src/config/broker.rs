//! `--broker`, `--topic`, `--broker-ca` and `--broker-creds` resolved ([`Broker`]): the
//! NATS servers to use, the topic, TLS and credentials, and which [`Role`] this instance
//! plays (the producer runs the `--shared` program, an edge has no PROGRAM). The rules of
//! these flags are checked here once; the connection itself is [`crate::shared`]'s.
//!
//! Credentials never reach a log line or an error message: [`Broker::redacted`] and every
//! error print the URL with its userinfo replaced by `***`, and [`Secret`]'s `Debug` hides
//! its value.

use std::fmt;
use std::path::PathBuf;

use super::error::{ResolveError, UsageError};
use crate::cli::Cli;
use crate::net::percent_decode;

/// The NATS port when a server names none.
pub const DEFAULT_PORT: u16 = 4222;
/// The longest `--topic`.
const MAX_TOPIC: usize = 128;

/// The broker settings of a `--shared` producer or an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// `nats://HOST:PORT` or `tls://HOST:PORT`, without userinfo, in the given order.
    pub servers: Vec<String>,
    /// `tls://`: TLS is required with every server.
    pub tls: bool,
    /// `--broker-ca`: trusted CA certificates (PEM) for the servers' certificates, beside
    /// the system's.
    pub ca: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    /// `--topic`: one NATS subject token.
    pub topic: String,
    pub role: Role,
}

/// What this instance does on the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the `--shared` PROGRAM; publishes its output, feeds it the input.
    Producer,
    /// No PROGRAM: serves what the producer publishes, forwards its clients' input.
    Edge,
}

/// How wsbridge authenticates to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

/// A value that `Debug` does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// What is wrong with a `--broker` or `--topic` value (the value is printed redacted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BrokerProblem {
    #[error("expected nats://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...] (or tls://)")]
    Scheme,
    #[error("every server must use the same scheme (nats:// or tls://)")]
    MixedSchemes,
    #[error("user and password may only be given on the first server")]
    LateUserinfo,
    #[error("bad host")]
    Host,
    #[error("bad port")]
    Port,
    #[error("no path, query or fragment may follow HOST:PORT")]
    Path,
    #[error("a topic is one NATS subject token: no spaces, '.', '*' or '>', at most 128 bytes")]
    Topic,
}

impl Broker {
    /// The servers as the user gave them, with any password hidden: for log lines.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "tls://" } else { "nats://" };
        let auth = if self.credentials.is_some() { "***@" } else { "" };
        let hosts: Vec<&str> = self
            .servers
            .iter()
            .map(|s| s.split_once("://").map_or(s.as_str(), |(_, h)| h))
            .collect();
        format!("{scheme}{auth}{}", hosts.join(","))
    }
}

/// `value` with everything from its scheme to its last `@` replaced by `***`: the
/// userinfo, even when a password holds a `,` or a `@` that would split it elsewhere.
pub fn redact(value: &str) -> String {
    let Some(at) = value.rfind('@') else {
        return value.to_owned();
    };
    let start = value.find("://").map_or(0, |i| i + 3).min(at);
    format!("{}***{}", &value[..start], &value[at..])
}

/// `--broker=URL`: the servers, whether TLS is required, and the userinfo if any.
#[allow(clippy::type_complexity)]
pub fn parse_url(value: &str) -> Result<(Vec<String>, bool, Option<Credentials>), BrokerProblem> {
    let mut servers = Vec::new();
    let mut tls = None;
    let mut credentials = None;
    for (i, item) in value.split(',').map(str::trim).enumerate() {
        let (scheme, rest) = match item.split_once("://") {
            Some((s, r)) => (Some(s), r),
            None if i > 0 => (None, item),
            None => return Err(BrokerProblem::Scheme),
        };
        let is_tls = match scheme {
            Some("nats") => Some(false),
            Some("tls") => Some(true),
            Some(_) => return Err(BrokerProblem::Scheme),
            None => None,
        };
        match (tls, is_tls) {
            (None, t) => tls = t,
            (Some(a), Some(b)) if a != b => return Err(BrokerProblem::MixedSchemes),
            _ => {}
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(BrokerProblem::Path);
        }
        let hostport = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                if i > 0 {
                    return Err(BrokerProblem::LateUserinfo);
                }
                credentials = Some(userinfo_credentials(userinfo));
                hostport
            }
            None => rest,
        };
        let (host, port) = split_host_port(hostport)?;
        let scheme = if tls == Some(true) { "tls" } else { "nats" };
        servers.push(format!("{scheme}://{host}:{port}"));
    }
    Ok((servers, tls == Some(true), credentials))
}

/// `USER:PASSWORD` (or a lone token), percent-decoded.
fn userinfo_credentials(userinfo: &str) -> Credentials {
    let decode = |s: &str| String::from_utf8_lossy(&percent_decode(s.as_bytes())).into_owned();
    match userinfo.split_once(':') {
        Some((user, password)) => Credentials::UserPassword {
            user: decode(user),
            password: Secret(decode(password)),
        },
        None => Credentials::Token(Secret(decode(userinfo))),
    }
}

fn split_host_port(s: &str) -> Result<(&str, u16), BrokerProblem> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !s.ends_with(']') => (h, Some(p)),
        _ => (s, None),
    };
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let ok = match bare {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        }
    };
    if !ok {
        return Err(BrokerProblem::Host);
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(BrokerProblem::Port),
        },
    };
    Ok((host, port))
}

/// `--topic`: one NATS subject token, so that `wsbridge.TOPIC.out` is one subject.
pub fn check_topic(topic: &str) -> Result<(), BrokerProblem> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC
        && topic
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>'));
    match ok {
        true => Ok(()),
        false => Err(BrokerProblem::Topic),
    }
}

/// The broker flags, checked against each other and against PROGRAM and `--shared`
/// (given = not `false`); `None` without `--broker`. Nothing is read yet.
pub(super) fn check(cli: &Cli, shared: bool) -> Result<Option<Unresolved>, UsageError> {
    let Some(url) = cli.broker.as_deref() else {
        if cli.topic.is_some() || cli.broker_ca.is_some() || cli.broker_creds.is_some() {
            return Err(UsageError::BrokerFlagWithoutBroker);
        }
        return Ok(None);
    };
    let bad = |why| UsageError::Broker {
        flag: "--broker",
        value: redact(url),
        why,
    };
    let (servers, tls, credentials) = parse_url(url).map_err(bad)?;
    let Some(topic) = cli.topic.clone() else {
        return Err(UsageError::BrokerWithoutTopic);
    };
    check_topic(&topic).map_err(|why| UsageError::Broker {
        flag: "--topic",
        value: topic.clone(),
        why,
    })?;
    if cli.broker_ca.is_some() && !tls {
        return Err(UsageError::BrokerCaWithoutTls);
    }
    if credentials.is_some() && cli.broker_creds.is_some() {
        return Err(UsageError::BrokerCredentialsTwice);
    }
    if cli.dir.is_some() {
        return Err(UsageError::BrokerAndDir);
    }
    let role = match (cli.program.is_some(), shared) {
        (true, true) => Role::Producer,
        (true, false) => return Err(UsageError::BrokerProgramWithoutShared),
        (false, _) => Role::Edge,
    };
    Ok(Some(Unresolved(Broker {
        servers,
        tls,
        ca: cli.broker_ca.clone(),
        credentials,
        topic,
        role,
    })))
}

/// Checked broker settings whose `--broker-creds` file has not been read yet.
#[derive(Debug)]
pub(super) struct Unresolved(Broker);

impl Unresolved {
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// Reads `--broker-creds` (exit 1 if it cannot be read); refuses a build without
    /// the `nats` feature.
    pub fn resolve(self, creds: Option<&std::path::Path>) -> Result<Broker, ResolveError> {
        if !cfg!(feature = "nats") {
            return Err(ResolveError::NoNats);
        }
        let mut broker = self.0;
        if let Some(path) = creds {
            broker.credentials = Some(read_creds(path)?);
        }
        Ok(broker)
    }
}

/// `--broker-creds=FILE`: its first non-empty line, `USER:PASSWORD` or a token.
fn read_creds(path: &std::path::Path) -> Result<Credentials, ResolveError> {
    let bad = |why: String| ResolveError::BrokerCreds {
        file: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(super::error::lower_io(&e)))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| bad("empty: expected one line USER:PASSWORD or TOKEN".into()))?;
    Ok(match line.split_once(':') {
        Some((user, password)) => Credentials::UserPassword {
            user: user.to_owned(),
            password: Secret(password.to_owned()),
        },
        None => Credentials::Token(Secret(line.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_servers_scheme_and_credentials() {
        let (s, tls, c) = parse_url("nats://u:p%40ss@127.0.0.1:4333,h2,nats://[::1]:5").unwrap();
        assert_eq!(s, ["nats://127.0.0.1:4333", "nats://h2:4222", "nats://[::1]:5"]);
        assert!(!tls);
        assert_eq!(
            c,
            Some(Credentials::UserPassword {
                user: "u".into(),
                password: Secret("p@ss".into())
            })
        );
        let (s, tls, c) = parse_url("tls://tok@broker.example:4443/").unwrap();
        assert_eq!((s, tls), (vec!["tls://broker.example:4443".to_owned()], true));
        assert_eq!(c, Some(Credentials::Token(Secret("tok".into()))));
        let bad = |v: &str| parse_url(v).unwrap_err();
        assert_eq!(bad("host:4222"), BrokerProblem::Scheme);
        assert_eq!(bad("http://h"), BrokerProblem::Scheme);
        assert_eq!(bad("nats://h,tls://g"), BrokerProblem::MixedSchemes);
        assert_eq!(bad("nats://h,u:p@g"), BrokerProblem::LateUserinfo);
        assert_eq!(bad("nats://h:0"), BrokerProblem::Port);
        assert_eq!(bad("nats://h:x"), BrokerProblem::Port);
        assert_eq!(bad("nats://"), BrokerProblem::Host);
        assert_eq!(bad("nats://h b"), BrokerProblem::Host);
        assert_eq!(bad("nats://h/x"), BrokerProblem::Path);
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("nats://u:secret@h:1,g:2"), "nats://***@h:1,g:2");
        assert_eq!(redact("tls://tok@h"), "tls://***@h");
        assert_eq!(redact("nats://h"), "nats://h");
        // A comma or @ in the password (unencoded) must not leak any of it.
        assert_eq!(redact("nats://u:pa,ss@w@h:1"), "nats://***@h:1");
        assert_eq!(redact("u:x@h"), "***@h");
        let (servers, tls, credentials) = parse_url("nats://u:secret@h:1,g").unwrap();
        let b = Broker {
            servers,
            tls,
            ca: None,
            credentials,
            topic: "t".into(),
            role: Role::Edge,
        };
        assert_eq!(b.redacted(), "nats://***@h:1,g:4222");
        assert!(!format!("{b:?}").contains("secret"), "{b:?}");
    }

    #[test]
    fn topics_are_one_subject_token() {
        for ok in ["sensors", "a-b_c", "Room42"] {
            assert!(check_topic(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a*", ">", "a b", "é", &"x".repeat(129)] {
            assert!(check_topic(bad).is_err(), "{bad}");
        }
    }
}
