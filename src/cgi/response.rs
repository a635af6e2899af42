//! The response side of one CGI run: reading the script's header block (RFC 3875 §6),
//! parsing it into a status and headers or a local redirect, and streaming the rest of
//! its output to the client until EOF or the deadline. It owns what comes out of the
//! script, not the run itself ([`super::run`]) nor what goes in ([`super::request`]).

use bytes::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::StatusCode;
use tokio::net::unix::pipe;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use super::MAX_HEAD;
use crate::body::BodySender;
use crate::child::Child;
use crate::relay;

/// The header block, and whatever output came after it.
pub(super) struct Head {
    pub(super) block: Vec<u8>,
    pub(super) rest: Bytes,
}

pub(super) async fn read_head(stdout: &mut pipe::Receiver) -> Result<Head, &'static str> {
    let mut buf = Vec::new();
    loop {
        let chunk = match relay::read_chunk(stdout).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err("output ended before the blank line after the headers"),
            Err(_) => return Err("reading the output failed"),
        };
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk);
        if let Some((end, sep)) = head_end(&buf[searched_from..]) {
            let end = searched_from + end;
            let rest = Bytes::copy_from_slice(&buf[end + sep..]);
            buf.truncate(end);
            return Ok(Head { block: buf, rest });
        }
        if buf.len() > MAX_HEAD {
            return Err("header block too large");
        }
    }
}

/// Where the blank line is (`\n\n` or `\r\n\r\n`), and its length.
fn head_end(b: &[u8]) -> Option<(usize, usize)> {
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

pub(super) struct Parsed {
    pub(super) status: StatusCode,
    pub(super) headers: hyper::HeaderMap,
    pub(super) local_redirect: Option<String>,
}

/// RFC 3875 §6: `Status`, `Location`, `Content-Type`, and other fields passed on;
/// hop-by-hop fields are dropped.
pub(super) fn parse_head(block: &[u8]) -> Result<Parsed, &'static str> {
    let mut headers = hyper::HeaderMap::new();
    let mut status = None;
    let mut location = None;
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or("a header line without ':'")?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| "a bad header name")?;
        let value = line[colon + 1..].trim_ascii();
        if name.as_str() == "status" {
            status = Some(parse_status(value)?);
            continue;
        }
        let value = HeaderValue::from_bytes(value).map_err(|_| "a bad header value")?;
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "te" | "trailer"
        ) {
            continue;
        }
        if name == header::LOCATION {
            location = Some(value.clone());
        }
        headers.append(name, value);
    }
    if let Some(loc) = &location {
        let local = loc.as_bytes().starts_with(b"/") && !loc.as_bytes().starts_with(b"//");
        if local && status.is_none() {
            let target = loc.to_str().map_err(|_| "a bad Location")?.to_owned();
            return Ok(Parsed {
                status: StatusCode::OK,
                headers,
                local_redirect: Some(target),
            });
        }
    }
    if status.is_none() && location.is_none() && !headers.contains_key(header::CONTENT_TYPE) {
        return Err("no Content-Type, Location or Status");
    }
    let status = status.unwrap_or(if location.is_some() {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    Ok(Parsed {
        status,
        headers,
        local_redirect: None,
    })
}

/// A `Status` value: three digits from 200 to 599, then nothing or a reason phrase. A
/// script cannot send an interim (1xx) answer, which hyper would send bare and then
/// fail, nor a code HTTP does not have.
fn parse_status(value: &[u8]) -> Result<StatusCode, &'static str> {
    let code = value.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit));
    let ends = matches!(value.get(3), None | Some(b' ' | b'\t'));
    let status = code
        .filter(|_| ends)
        .and_then(|c| StatusCode::from_bytes(c).ok())
        .ok_or("a bad Status")?;
    if (200..=599).contains(&status.as_u16()) {
        Ok(status)
    } else {
        Err("a Status outside 200-599")
    }
}

/// Why the answer was cut off, if it was.
pub(super) enum Cut {
    Complete,
    TimedOut,
    ClientGone,
    ReadError,
    /// The script answered before the client's chunked body passed [`super::MAX_BODY`].
    BodyTooLarge,
    /// The server is shutting down.
    Shutdown,
}

/// Sends the output after the header block until EOF, the deadline, a chunked request
/// body passing the limit, or the server's shutdown.
pub(super) async fn stream(
    stdout: &mut pipe::Receiver,
    first: Bytes,
    tx: &BodySender,
    deadline: Instant,
    child: &mut Child,
    body_too_large: &CancellationToken,
    shutdown: &CancellationToken,
) -> Cut {
    if !first.is_empty() && tx.send(Ok(first)).await.is_err() {
        return Cut::ClientGone;
    }
    let pump = async {
        loop {
            match relay::read_chunk(stdout).await {
                Ok(Some(chunk)) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Cut::ClientGone;
                    }
                }
                Ok(None) => return Cut::Complete,
                Err(_) => return Cut::ReadError,
            }
        }
    };
    let pump = async {
        tokio::select! {
            cut = pump => cut,
            () = body_too_large.cancelled() => Cut::BodyTooLarge,
            () = shutdown.cancelled() => Cut::Shutdown,
        }
    };
    let cut = timeout_at(deadline, pump).await.unwrap_or(Cut::TimedOut);
    if matches!(cut, Cut::Complete) && timeout_at(deadline, child.exited()).await.is_err() {
        return Cut::TimedOut;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks() {
        let p = parse_head(b"Content-Type: text/plain\r\nX-A: 1").unwrap();
        assert_eq!(p.status, StatusCode::OK);
        assert_eq!(p.headers["x-a"], "1");
        let p = parse_head(b"Status: 201 Created\nContent-Type: text/plain").unwrap();
        assert_eq!(p.status, StatusCode::CREATED);
        assert!(!p.headers.contains_key("status"));
        let p = parse_head(b"Location: /other?x=1").unwrap();
        assert_eq!(p.local_redirect.as_deref(), Some("/other?x=1"));
        let p = parse_head(b"Location: https://example.com/").unwrap();
        assert_eq!(p.status, StatusCode::FOUND);
        let p = parse_head(b"Status: 303 See Other\nLocation: /x").unwrap();
        assert_eq!((p.status, p.local_redirect), (StatusCode::SEE_OTHER, None));
        let p = parse_head(b"Location: //evil.example/").unwrap();
        assert_eq!(p.local_redirect, None, "protocol-relative is a client redirect");
        assert!(parse_head(b"X-Only: 1").is_err());
        assert!(parse_head(b"garbage").is_err());
        assert!(parse_head(b"Status: abc").is_err());
        let p = parse_head(b"Status: 599\nContent-Type: text/plain").unwrap();
        assert_eq!(p.status.as_u16(), 599);
        let p = parse_head(b"Status:\t204\tNo Content").unwrap();
        assert_eq!(p.status, StatusCode::NO_CONTENT);
        let p = parse_head(b"Content-Type: a/b\nConnection: close\nTransfer-Encoding: chunked").unwrap();
        assert_eq!(p.headers.len(), 1);
    }

    #[test]
    fn status_outside_200_to_599_is_refused() {
        for bad in [
            "100",
            "101",
            "101 Switching Protocols",
            "199",
            "600",
            "999",
            "1000",
            "2000",
            "200x",
            "20",
            "099",
            "-20",
            "",
            "abc",
        ] {
            let block = format!("Status: {bad}\nContent-Type: text/plain");
            assert!(parse_head(block.as_bytes()).is_err(), "Status: {bad}");
        }
        assert_eq!(parse_head(b"Status: 1000").err(), Some("a bad Status"));
        assert_eq!(parse_head(b"Status: 101").err(), Some("a Status outside 200-599"));
        for good in ["200", "200 OK", "302 Found", "599 Whatever"] {
            let block = format!("Status: {good}\nContent-Type: text/plain");
            assert!(parse_head(block.as_bytes()).is_ok(), "Status: {good}");
        }
    }

    #[test]
    fn blank_line_forms() {
        assert_eq!(head_end(b"A: b\n\nbody"), Some((4, 2)));
        assert_eq!(head_end(b"A: b\r\n\r\nbody"), Some((4, 4)));
        assert_eq!(head_end(b"A: b\r\n"), None);
    }
}
