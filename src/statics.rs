//! `--staticdir`: files for plain HTTP requests. It owns the answer for one file (type,
//! validators, conditional GET, a single byte range, streaming); where a path may lead is
//! [`crate::route`]'s job.
//!
//! Safe by default: paths are mapped by [`crate::route`] (no `..`, no dotfiles, no
//! symlinks out), a directory is served only through its `index.html` (never listed), and
//! nothing under `--cgidir` is ever served, so scripts cannot leak as source. GET and HEAD
//! only (other methods: 405). A directory asked for without the final `/` is redirected to
//! it (301), so the page's relative links work. Files are streamed in 64 KiB chunks read on
//! the blocking pool; one connection holds at most a few chunks in memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

use crate::body::{self, Body};
use crate::route::{self, Static};

/// Bytes read from the file at a time.
const CHUNK: usize = 64 * 1024;
/// Chunks read ahead of the client.
const READ_AHEAD: usize = 2;

/// What serving a path found.
pub enum Outcome {
    Served(Response<Body>),
    /// Nothing here: the caller tries the next handler or answers 404.
    Miss,
}

/// Serves `raw_path` from `root` (canonical). `cgi_root` is never served from.
pub async fn serve(
    root: &Path,
    cgi_root: Option<&Path>,
    method: &Method,
    raw_path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Outcome {
    let Some(segs) = route::segments(raw_path) else {
        return Outcome::Miss;
    };
    let (file, path) = match route::open_static(root, &segs.parts) {
        Static::File(file, path) if !segs.trailing_slash => (file, path),
        Static::Dir(rel) => {
            if !segs.trailing_slash {
                let location = match query {
                    Some(q) => format!("{raw_path}/?{q}"),
                    None => format!("{raw_path}/"),
                };
                let mut resp = body::text(StatusCode::MOVED_PERMANENTLY, "moved: the directory's URL ends with /");
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                return Outcome::Served(resp);
            }
            match route::open_index(root, &rel) {
                Static::File(file, path) => (file, path),
                Static::Denied => return Outcome::Served(body::text(StatusCode::FORBIDDEN, "forbidden")),
                _ => return Outcome::Miss,
            }
        }
        Static::Denied if !segs.trailing_slash => {
            return Outcome::Served(body::text(StatusCode::FORBIDDEN, "forbidden"));
        }
        _ => return Outcome::Miss,
    };
    if cgi_root.is_some_and(|c| path.starts_with(c)) {
        tracing::debug!(file = %path.display(), "refusing to serve a file under --cgidir");
        return Outcome::Miss;
    }
    if method != Method::GET && method != Method::HEAD {
        let mut resp = body::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET or HEAD");
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Outcome::Served(resp);
    }
    Outcome::Served(answer(file, &path, method == Method::HEAD, headers))
}

/// The answer from the file that was opened (never reopened by path, so it is the file
/// that was checked).
fn answer(file: File, path: &Path, head_only: bool, req: &HeaderMap) -> Response<Body> {
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a static file's metadata");
            return body::text(StatusCode::NOT_FOUND, "not found");
        }
    };
    let len = meta.len();
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let since_epoch = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    let etag = format!(
        "\"{len:x}-{:x}.{:x}\"",
        since_epoch.as_secs(),
        since_epoch.subsec_nanos()
    );
    let last_modified = http_date(mtime);

    let mut resp = Response::new(body::empty());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime_type(path)));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Both are built from digits, hex and ASCII names, always valid header values.
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("ascii etag"));
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&last_modified).expect("ascii date"),
    );

    if not_modified(req, &etag, since_epoch) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp.headers_mut().remove(header::CONTENT_TYPE);
        return resp;
    }
    let (start, count) = match range(req, &etag, len) {
        RangeAsk::Full => (0, len),
        RangeAsk::Part(a, b) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let cr = format!("bytes {a}-{b}/{len}");
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii range"));
            (a, b - a + 1)
        }
        RangeAsk::Unsatisfiable => {
            let mut resp = body::text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            let cr = format!("bytes */{len}");
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii range"));
            return resp;
        }
    };
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if !head_only && count > 0 {
        let (tx, body) = body::channel(READ_AHEAD);
        tokio::spawn(stream_file(file, start, count, tx));
        *resp.body_mut() = body;
    }
    resp
}

/// Sends `count` bytes from `start`, one chunk at a time; an error (or a file that
/// shrank) aborts the response, so the client sees it incomplete, not short.
async fn stream_file(mut file: File, start: u64, mut count: u64, tx: body::BodySender) {
    if start > 0 {
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
    while count > 0 {
        let want = count.min(CHUNK as u64) as usize;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, io::Error>((file, buf))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        let chunk = match read {
            Ok((f, buf)) if !buf.is_empty() => {
                file = f;
                buf
            }
            Ok(_) => {
                let _ = tx.send(Err(io::Error::other("file shrank while being sent"))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        count -= chunk.len() as u64;
        if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
            return; // the client went away
        }
    }
}

/// If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
fn not_modified(req: &HeaderMap, etag: &str, mtime: Duration) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == etag);
    }
    match req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
    {
        Some(since) => mtime.as_secs() <= since,
        None => false,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    Full,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range; several ranges, other units, a stale `If-Range` or a malformed
/// header all get the whole file (which RFC 9110 allows).
fn range(req: &HeaderMap, etag: &str, len: u64) -> RangeAsk {
    let Some(spec) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAsk::Full;
    };
    if let Some(ir) = req.get(header::IF_RANGE) {
        if ir.as_bytes() != etag.as_bytes() {
            return RangeAsk::Full;
        }
    }
    let Some(spec) = spec.trim().strip_prefix("bytes=") else {
        return RangeAsk::Full;
    };
    if spec.contains(',') {
        return RangeAsk::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Full;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a, b) {
        ("", n) => match num(n) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if len == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(len.saturating_sub(n), len - 1),
            None => RangeAsk::Full,
        },
        (a, "") => match num(a) {
            Some(a) if a < len => RangeAsk::Part(a, len - 1),
            Some(_) => RangeAsk::Unsatisfiable,
            None => RangeAsk::Full,
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a > b => RangeAsk::Full,
            (Some(a), Some(_)) if a >= len => RangeAsk::Unsatisfiable,
            (Some(a), Some(b)) => RangeAsk::Part(a, b.min(len - 1)),
            _ => RangeAsk::Full,
        },
    }
}

/// The Content-Type for a file name: a small table of what web pages use; anything else
/// is `application/octet-stream`.
pub fn mime_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "text" | "log" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        _ => "application/octet-stream",
    }
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch from an IMF-fixdate; the obsolete formats are not accepted
/// (the header is then ignored, which only costs a full answer).
fn parse_http_date(s: &str) -> Option<u64> {
    let mut w = s.split_whitespace();
    let (_, d, mon, y, hms, gmt) = (w.next()?, w.next()?, w.next()?, w.next()?, w.next()?, w.next()?);
    if gmt != "GMT" || w.next().is_some() {
        return None;
    }
    let d: u32 = d.parse().ok()?;
    let m = MONTHS.iter().position(|x| *x == mon)? as u32 + 1;
    let y: i64 = y.parse().ok()?;
    let mut t = hms.split(':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 || y < 1970 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    Some(days as u64 * 86400 + hh * 3600 + mm * 60 + ss)
}

// Howard Hinnant's civil-date algorithms (public domain), for the proleptic Gregorian
// calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(parse_http_date(&http_date(leap)), Some(1_709_210_096));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        let mut ask = |v: &str| {
            h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
            range(&h, "\"e\"", 100)
        };
        assert_eq!(ask("bytes=0-9"), RangeAsk::Part(0, 9));
        assert_eq!(ask("bytes=90-"), RangeAsk::Part(90, 99));
        assert_eq!(ask("bytes=-10"), RangeAsk::Part(90, 99));
        assert_eq!(ask("bytes=-1000"), RangeAsk::Part(0, 99));
        assert_eq!(ask("bytes=50-1000"), RangeAsk::Part(50, 99));
        assert_eq!(ask("bytes=100-"), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=100-200"), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=-0"), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=0-1,5-6"), RangeAsk::Full);
        assert_eq!(ask("bytes=9-3"), RangeAsk::Full);
        assert_eq!(ask("items=0-1"), RangeAsk::Full);
        assert_eq!(ask("bytes=x-1"), RangeAsk::Full);
    }

    #[test]
    fn types() {
        assert_eq!(mime_type(Path::new("a/INDEX.HTML")), "text/html; charset=utf-8");
        assert_eq!(mime_type(Path::new("x.wasm")), "application/wasm");
        assert_eq!(mime_type(Path::new("noext")), "application/octet-stream");
    }
}
