//! The CONNECT tunnel through an HTTP proxy for `--connect` (RFC 6455 §4.1, RFC 9110
//! §9.3.6): the request, the proxy's answer, and the errors a user reads. Which proxy
//! applies (`--proxy`, else the environment with `no_proxy`) is decided at startup by
//! [`crate::config::connect`]. The request and answer parsing are unit-tested here; the
//! tunnel is tested against tinyproxy in `tests/it/outbound.rs`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::connect::{join_host_port, Proxy, Target};

/// The proxy's answer to CONNECT must fit in this many bytes.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Why the tunnel could not be opened: one line naming the proxy (`proxy` is its
/// `host:port`, never its credentials).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot connect to proxy {proxy}: {}", lower(.cause))]
    Connect { proxy: String, cause: std::io::Error },
    #[error("cannot connect to proxy {proxy}: timed out after {after:?}")]
    ConnectTimeout { proxy: String, after: Duration },
    #[error("proxy {proxy}: no answer to CONNECT {authority}: {}", lower(.cause))]
    NoAnswer {
        proxy: String,
        authority: String,
        cause: std::io::Error,
    },
    #[error("proxy {proxy}: no answer to CONNECT {authority} within {after:?}")]
    AnswerTimeout {
        proxy: String,
        authority: String,
        after: Duration,
    },
    #[error("proxy {proxy}: malformed answer to CONNECT")]
    Malformed { proxy: String },
    /// A status other than 2xx; `hint` says what 401 and 407 usually mean.
    #[error("proxy {proxy} refused CONNECT {authority}: {code} {reason}{hint}")]
    Refused {
        proxy: String,
        authority: String,
        code: u16,
        reason: String,
        hint: &'static str,
    },
}

/// Connects to the proxy and asks it for a tunnel to `target`; returns the stream, which
/// then carries the target's bytes. Each step is bounded by `timeout`. Errors are one line
/// naming the proxy.
pub async fn tunnel(proxy: &Proxy, target: &Target, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let shown = proxy.shown();
    let mut tcp = match tokio::time::timeout(timeout, TcpStream::connect((proxy.host.as_str(), proxy.port))).await {
        Ok(Ok(t)) => t,
        Ok(Err(cause)) => return Err(ProxyError::Connect { proxy: shown, cause }),
        Err(_) => {
            return Err(ProxyError::ConnectTimeout {
                proxy: shown,
                after: timeout,
            })
        }
    };
    let _ = tcp.set_nodelay(true);
    let authority = join_host_port(&target.host, target.port);
    let request = connect_request(&authority, proxy.credentials.as_ref());
    let exchange = async {
        tcp.write_all(request.as_bytes()).await?;
        read_head(&mut tcp).await
    };
    let head = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(h)) => h,
        Ok(Err(cause)) => {
            return Err(ProxyError::NoAnswer {
                proxy: shown,
                authority,
                cause,
            })
        }
        Err(_) => {
            return Err(ProxyError::AnswerTimeout {
                proxy: shown,
                authority,
                after: timeout,
            })
        }
    };
    let Some((code, reason)) = parse_status(&head) else {
        return Err(ProxyError::Malformed { proxy: shown });
    };
    if !(200..300).contains(&code) {
        let hint = match (code, &proxy.credentials) {
            (407, None) => " (it wants credentials: http://user:pass@host:port)",
            (401 | 407, Some(_)) => " (credentials refused)",
            _ => "",
        };
        return Err(ProxyError::Refused {
            proxy: shown,
            authority,
            code,
            reason,
            hint,
        });
    }
    Ok(tcp)
}

fn connect_request(authority: &str, credentials: Option<&(String, String)>) -> String {
    let mut r = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, pass)) = credentials {
        r.push_str("Proxy-Authorization: Basic ");
        r.push_str(&data_encoding::BASE64.encode(format!("{user}:{pass}").as_bytes()));
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// Reads the response head byte by byte, so nothing of the tunnel after it is consumed.
async fn read_head(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(std::io::Error::other(format!(
                "answer head longer than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        if tcp.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// `HTTP/1.x CODE REASON` → (code, reason).
fn parse_status(head: &[u8]) -> Option<(u16, String)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?.parse().ok()?;
    let reason: String = parts
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    Some((code, reason))
}

/// An I/O error as a lower-case phrase without the `(os error N)` tail.
pub(crate) fn lower(e: &std::io::Error) -> String {
    let s = e.to_string();
    s.split(" (os error").next().unwrap_or(&s).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_and_status() {
        let r = connect_request("h:443", Some(&("Aladdin".into(), "open sesame".into())));
        assert_eq!(
            r,
            "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\nProxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
        assert_eq!(
            parse_status(b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n"),
            Some((407, "Proxy Authentication Required".into()))
        );
        assert_eq!(parse_status(b"HTTP/1.1 200\r\n\r\n"), Some((200, String::new())));
        assert_eq!(parse_status(b"SSH-2.0\r\n\r\n"), None);
    }
}
