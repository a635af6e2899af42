//! Raw HTTP/1.1 over TCP for the plain-HTTP tests (static files, CGI, `--dir`, upstream):
//! the exact request bytes reach the server, and the answer is read to EOF and parsed
//! here, chunked bodies included, so a cut-off body is visible as such.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one exchange may take.
pub const EXCHANGE: Duration = Duration::from_secs(20);

/// A parsed answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// False when a chunked body ended without its last chunk, or a Content-Length body
    /// came short: the server cut the answer off.
    pub complete: bool,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `raw` as it is and reads the answer until the server closes the connection
/// (requests should say `Connection: close`). `head_only` for HEAD requests.
pub async fn send(addr: SocketAddr, raw: &[u8], head_only: bool) -> Answer {
    tokio::time::timeout(EXCHANGE, async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(raw).await.expect("write request");
        let mut buf = Vec::new();
        // A reset after a complete answer is fine; an aborted one shows as incomplete.
        let _ = tcp.read_to_end(&mut buf).await;
        parse(&buf, head_only)
    })
    .await
    .expect("HTTP exchange timed out")
}

/// Sends `raw` and returns every byte the server sends until it closes.
pub async fn send_raw(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    tokio::time::timeout(EXCHANGE, async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(raw).await.expect("write request");
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf).await;
        buf
    })
    .await
    .expect("HTTP exchange timed out")
}

/// `METHOD path` with a Host header, `Connection: close` and `extra` header lines.
pub async fn request(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Answer {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    send(addr, raw.as_bytes(), method == "HEAD").await
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, "").await
}

pub fn parse(buf: &[u8], head_only: bool) -> Answer {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = &buf[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line[9..12].parse().expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    let (body, complete) = if no_body {
        (Vec::new(), true)
    } else if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().expect("content-length");
        (rest[..len.min(rest.len())].to_vec(), rest.len() >= len)
    } else {
        (rest.to_vec(), true)
    };
    Answer {
        status,
        headers,
        body,
        complete,
    }
}

fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_owned();
        let Ok(size) = usize::from_str_radix(&size_text, 16) else {
            return (out, false);
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            return (out, true);
        }
        if rest.len() < size + 2 {
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            return (out, false);
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
