//! Browser origin policy for WebSocket upgrades: parsing `--origin`, and deciding whether a
//! request's `Origin` header is allowed. Pure logic, no I/O.
//!
//! Secure by default, unlike websocketd: a request that carries an `Origin` (a browser)
//! must come from the same scheme, host and port as the request's `Host` unless
//! `--origin` says otherwise. Requests without `Origin` (non-browser clients) are allowed,
//! except under `--sameorigin`, which keeps websocketd's stricter meaning.

use std::fmt;

/// Which origins may open a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Same scheme, host and port as the request. `require` also refuses requests that
    /// carry no `Origin` at all (`--sameorigin`).
    SameOrigin { require: bool },
    /// Any origin (`--origin='*'`, websocketd's default).
    Any,
    /// Only these (`--origin=a,b`); with `--sameorigin` too, the origin must also be the
    /// request's own (websocketd checks both).
    List { rules: Vec<OriginRule>, same: bool },
}

/// One `--origin` entry: `[scheme://]host[:port]`, or `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRule {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

/// Why an origin was refused; its `Display` is the body of the 403 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    origin: Option<String>,
    hint: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) => write!(f, "origin {o} is not allowed; {}", self.hint),
            None => write!(f, "an Origin header is required; {}", self.hint),
        }
    }
}

impl Refusal {
    /// The refused origin, if the request had one.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
}

/// An `--origin` value that cannot be right (a startup error, exit status 2). Each names
/// the entry: an entry that can never match a browser's `Origin` would refuse everyone
/// at the first connection instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// `--origin=,` or `a,,b`: a stray comma.
    #[error("invalid --origin={list:?}: entry {position} is empty (a stray comma?)")]
    Empty { list: String, position: usize },
    #[error("invalid --origin entry {entry:?}: expected [scheme://]host[:port]")]
    Syntax { entry: String },
    /// `ws://` or `wss://`: browsers send the page's origin, never the socket's URL.
    #[error(
        "invalid --origin entry {entry:?}: a browser's Origin is the page's (http:// or https://), never {scheme}://; write {suggest:?}"
    )]
    SocketScheme {
        entry: String,
        scheme: String,
        suggest: String,
    },
    /// `*` inside a list matches nothing; it only means "any" on its own.
    #[error("invalid --origin entry \"*\": '*' allows any origin only as the whole value (--origin='*')")]
    StarInList,
}

/// A parsed `scheme://host[:port]` with the port made explicit.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl OriginPolicy {
    /// Builds the policy from `--origin` and `--sameorigin`.
    pub fn from_flags(origin: Option<&str>, sameorigin: bool) -> Result<Self, OriginError> {
        match origin.map(str::trim) {
            None | Some("") => Ok(OriginPolicy::SameOrigin { require: sameorigin }),
            Some("*") if sameorigin => Ok(OriginPolicy::SameOrigin { require: true }),
            Some("*") => Ok(OriginPolicy::Any),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .enumerate()
                .map(|(i, entry)| match entry {
                    "" => Err(OriginError::Empty {
                        list: list.to_owned(),
                        position: i + 1,
                    }),
                    "*" => Err(OriginError::StarInList),
                    _ => OriginRule::parse(entry),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|rules| OriginPolicy::List {
                    rules,
                    same: sameorigin,
                }),
        }
    }

    /// Decides on a request. `host` is the `Host` header; `tls` says whether the request
    /// came in over TLS (it sets the scheme that same-origin expects).
    pub fn check(&self, origin: Option<&str>, host: Option<&str>, tls: bool) -> Result<(), Refusal> {
        let refuse = |hint| {
            Err(Refusal {
                origin: origin.map(str::to_owned),
                hint,
            })
        };
        match self {
            OriginPolicy::Any => Ok(()),
            OriginPolicy::SameOrigin { require } => {
                let Some(o) = origin else {
                    return if *require { refuse(SAME_HINT) } else { Ok(()) };
                };
                let (Some(o), Some((host, port))) = (Origin::parse(o), host.and_then(parse_host)) else {
                    return refuse(SAME_HINT);
                };
                let scheme = if tls { "https" } else { "http" };
                let port = port.unwrap_or(default_port(scheme));
                if o.scheme == scheme && o.host == host && o.port == port {
                    Ok(())
                } else {
                    refuse(SAME_HINT)
                }
            }
            OriginPolicy::List { rules, same } => {
                if *same {
                    OriginPolicy::SameOrigin { require: true }.check(origin, host, tls)?;
                }
                let Some(raw) = origin else { return refuse(LIST_HINT) };
                if raw.trim().eq_ignore_ascii_case("null") {
                    return if rules.iter().any(OriginRule::is_null) {
                        Ok(())
                    } else {
                        refuse(LIST_HINT)
                    };
                }
                let Some(o) = Origin::parse(raw) else {
                    return refuse(LIST_HINT);
                };
                if rules.iter().any(|r| r.matches(&o)) {
                    Ok(())
                } else {
                    refuse(LIST_HINT)
                }
            }
        }
    }
}

const SAME_HINT: &str = "only same-origin pages may connect; allow others with --origin=HOST (or --origin='*' for any)";
const LIST_HINT: &str = "it is not in --origin";

impl OriginRule {
    fn parse(entry: &str) -> Result<Self, OriginError> {
        let bad = || OriginError::Syntax {
            entry: entry.to_owned(),
        };
        if entry.eq_ignore_ascii_case("null") {
            return Ok(OriginRule {
                scheme: None,
                host: "null".into(),
                port: None,
            });
        }
        let (scheme, rest) = match entry.split_once("://") {
            Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
            None => (None, entry),
        };
        if let Some(s) = scheme.as_deref() {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
                return Err(bad());
            }
            if s == "ws" || s == "wss" {
                let page = if s == "ws" { "http" } else { "https" };
                return Err(OriginError::SocketScheme {
                    entry: entry.to_owned(),
                    scheme: s.to_owned(),
                    suggest: format!("{page}://{}", &entry[s.len() + 3..]),
                });
            }
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = parse_host(rest).ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(OriginRule { scheme, host, port })
    }

    fn is_null(&self) -> bool {
        self.scheme.is_none() && self.host == "null" && self.port.is_none()
    }

    fn matches(&self, o: &Origin) -> bool {
        !self.is_null()
            && self.scheme.as_deref().is_none_or(|s| s == o.scheme)
            && self.host == o.host
            && self.port.is_none_or(|p| p == o.port)
    }
}

impl Origin {
    fn parse(raw: &str) -> Option<Self> {
        let (scheme, rest) = raw.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
            return None;
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = parse_host(rest)?;
        if host.is_empty() {
            return None;
        }
        let port = port.unwrap_or(default_port(&scheme));
        Some(Origin { scheme, host, port })
    }
}

fn default_port(scheme: &str) -> u16 {
    match scheme {
        "https" | "wss" => 443,
        _ => 80,
    }
}

/// Splits `host[:port]` (IPv6 in brackets); lower-cases the host and drops a trailing dot,
/// so `Example.COM.` and `example.com` compare equal.
pub fn parse_host(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", h.to_ascii_lowercase()), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (s.to_ascii_lowercase(), None),
        }
    };
    if host.contains(['/', '@', '?', '#', ' ', ':']) && !host.starts_with('[') {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let host = host.strip_suffix('.').map(str::to_owned).unwrap_or(host);
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> OriginPolicy {
        OriginPolicy::from_flags(Some(s), false).unwrap()
    }

    #[test]
    fn same_origin_default_allows_missing_origin_and_matching_page() {
        let p = OriginPolicy::from_flags(None, false).unwrap();
        assert!(p.check(None, Some("board:8080"), false).is_ok());
        assert!(p.check(Some("http://board:8080"), Some("board:8080"), false).is_ok());
        assert!(p.check(Some("http://BOARD.:8080"), Some("board:8080"), false).is_ok());
        assert!(p.check(Some("http://board"), Some("board"), false).is_ok());
        assert!(p.check(Some("https://board"), Some("board"), true).is_ok());
    }

    #[test]
    fn same_origin_refuses_other_port_scheme_host_and_null() {
        let p = OriginPolicy::from_flags(None, false).unwrap();
        assert!(p.check(Some("http://board"), Some("board:8080"), false).is_err());
        assert!(p.check(Some("https://board:8080"), Some("board:8080"), false).is_err());
        assert!(p.check(Some("http://evil:8080"), Some("board:8080"), false).is_err());
        assert!(p.check(Some("null"), Some("board:8080"), false).is_err());
        assert!(p.check(Some("foo"), Some("board:8080"), false).is_err());
        let err = p.check(Some("http://evil"), Some("board"), false).unwrap_err();
        assert!(err.to_string().contains("http://evil"));
        assert!(err.to_string().contains("--origin"));
    }

    #[test]
    fn sameorigin_flag_requires_an_origin() {
        let p = OriginPolicy::from_flags(None, true).unwrap();
        assert!(p.check(None, Some("board"), false).is_err());
        assert!(p.check(Some("http://board"), Some("board"), false).is_ok());
    }

    #[test]
    fn list_matches_like_websocketd() {
        let p = list("good.example,https://secure.example:8443,127.0.0.1:18101");
        assert!(p.check(Some("http://good.example"), None, false).is_ok());
        assert!(p.check(Some("https://good.example:9999"), None, false).is_ok());
        assert!(p.check(Some("http://secure.example:8443"), None, false).is_err());
        assert!(p.check(Some("https://secure.example:8443"), None, false).is_ok());
        assert!(p.check(Some("https://secure.example"), None, false).is_err());
        assert!(p.check(Some("http://127.0.0.1:18101"), None, false).is_ok());
        assert!(p.check(Some("null"), None, false).is_err());
        assert!(p.check(None, None, false).is_err());
    }

    #[test]
    fn sameorigin_and_list_must_both_pass() {
        let p = OriginPolicy::from_flags(Some("board"), true).unwrap();
        assert!(p.check(Some("http://board"), Some("board"), false).is_ok());
        assert!(p.check(Some("http://board"), Some("board:8080"), false).is_err());
        let star = OriginPolicy::from_flags(Some("*"), true).unwrap();
        assert!(star.check(Some("http://evil"), Some("board"), false).is_err());
    }

    #[test]
    fn list_null_star_and_ipv6() {
        assert!(list("null").check(Some("null"), None, false).is_ok());
        assert!(list("*").check(Some("anything"), None, false).is_ok());
        assert!(list("[::1]:80").check(Some("http://[::1]"), None, false).is_ok());
        assert!(OriginPolicy::from_flags(Some("http://"), false).is_err());
        assert!(OriginPolicy::from_flags(Some("a:notaport"), false).is_err());
    }

    #[test]
    fn entries_that_can_never_match_are_refused_at_startup() {
        let err = |s: &str| OriginPolicy::from_flags(Some(s), false).unwrap_err().to_string();
        assert_eq!(err(","), r#"invalid --origin=",": entry 1 is empty (a stray comma?)"#);
        assert_eq!(
            err("a,,b"),
            r#"invalid --origin="a,,b": entry 2 is empty (a stray comma?)"#
        );
        assert!(err("a, ").contains("entry 2 is empty"));
        assert_eq!(
            err("board,WSS://board:8443"),
            r#"invalid --origin entry "WSS://board:8443": a browser's Origin is the page's (http:// or https://), never wss://; write "https://board:8443""#
        );
        assert!(err("ws://board").contains(r#"write "http://board""#));
        assert!(err("http://board/app").contains(r#""http://board/app": expected"#));
        assert!(err("ht tp://board").contains("expected [scheme://]host[:port]"));
        assert!(err("://board").contains("expected"));
        assert!(err("a,*").contains("only as the whole value"));
        // Blank as a whole is the default, as with websocketd.
        assert!(OriginPolicy::from_flags(Some("  "), false).is_ok());
    }
}
