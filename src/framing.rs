//! Framing: how the bytes a program reads and writes map to WebSocket messages, for each
//! `--framing` mode. Pure and unit-tested (and fuzzed); knows nothing of sockets or
//! processes.
//!
//! | mode | client message → program | program output → client |
//! |---|---|---|
//! | `line` (default) | text payload + `\n`; binary refused (1003) | one text message per line; `\n` or `\r\n` removed |
//! | `nul` | text payload + NUL; binary refused (1003) | one text message per NUL-terminated record |
//! | `binary` (`--binary`) | payload bytes as they are | each read (≤ 64 KiB) is one binary message |
//! | `lenprefix` | header + payload | header + payload, type kept |
//!
//! `lenprefix` keeps message boundaries and types both ways for any bytes. Each message is
//! a header line, then exactly that many payload bytes:
//!
//! ```text
//! t 5\nhello        a text message of 5 bytes
//! b 3\n\x00\x01\x02  a binary message of 3 bytes
//! ```
//!
//! The header is the type letter (`t` or `b`), one space, the payload length in decimal
//! (ASCII digits, no sign, at most `--maxframesize`), and `\n`. Nothing separates the
//! payload from the next header. A malformed header from the program ends the session
//! with 1011 and a log line naming its byte offset.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// How bytes map to messages (`--framing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Text mode: one line = one text message, one message = one line.
    Line,
    /// Like `Line` with NUL as the separator, so messages may contain newlines.
    Nul,
    /// `--binary`: bytes unchanged; each read of the output is one binary message.
    Binary,
    /// Length-prefixed messages both ways (see the module docs).
    LenPrefix,
}

impl Framing {
    /// Parses a `--framing` value.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "line" => Some(Framing::Line),
            "nul" => Some(Framing::Nul),
            "binary" => Some(Framing::Binary),
            "lenprefix" => Some(Framing::LenPrefix),
            _ => None,
        }
    }

    /// The `--framing` name.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Line => "line",
            Framing::Nul => "nul",
            Framing::Binary => "binary",
            Framing::LenPrefix => "lenprefix",
        }
    }
}

/// Longest `lenprefix` header: type, space, 20 digits, newline.
const MAX_HEADER: usize = 23;

/// The program's output did not follow `lenprefix` framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// Byte offset in the output where the bad header starts.
    pub offset: u64,
    pub reason: &'static str,
}

/// Turns the program's output into messages.
#[derive(Debug)]
pub struct Decoder {
    kind: DecoderKind,
    bad_utf8_warned: bool,
    long_line_warned: bool,
}

#[derive(Debug)]
enum DecoderKind {
    Records(LineFramer),
    Raw,
    LenPrefix(LenPrefixDecoder),
}

impl Decoder {
    /// A decoder for `framing`. No message carries more than `max_message` bytes of output;
    /// a text message whose invalid UTF-8 was repaired with U+FFFD (3 bytes each) can be
    /// up to three times that long.
    pub fn new(framing: Framing, max_message: usize) -> Self {
        let kind = match framing {
            Framing::Line => DecoderKind::Records(LineFramer::new(max_message)),
            Framing::Nul => DecoderKind::Records(LineFramer::with_separator(0, false, max_message)),
            Framing::Binary => DecoderKind::Raw,
            Framing::LenPrefix => DecoderKind::LenPrefix(LenPrefixDecoder::new(max_message)),
        };
        Decoder {
            kind,
            bad_utf8_warned: false,
            long_line_warned: false,
        }
    }

    /// One warning per session when the framer had to cut a record into pieces.
    fn warn_if_cut(&mut self) {
        let DecoderKind::Records(f) = &mut self.kind else {
            return;
        };
        if f.take_cut() && !self.long_line_warned {
            self.long_line_warned = true;
            tracing::warn!(
                max = f.max_line,
                "program output has a line longer than --maxframesize; it goes out in pieces of at most that size (further ones are not logged)"
            );
        }
    }

    /// Feeds one read of output; appends every complete message to `out`. On an error the
    /// messages decoded before it are still in `out`.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Message>) -> Result<(), FrameError> {
        match &mut self.kind {
            DecoderKind::Raw => {
                out.push(Message::Binary(chunk));
                Ok(())
            }
            DecoderKind::Records(f) => {
                let mut records = Vec::new();
                f.push(chunk, &mut records);
                out.extend(
                    records
                        .into_iter()
                        .map(|r| Message::Text(to_text(r, &mut self.bad_utf8_warned))),
                );
                self.warn_if_cut();
                Ok(())
            }
            DecoderKind::LenPrefix(d) => d.push(chunk, out, &mut self.bad_utf8_warned),
        }
    }

    /// At EOF: emits an unterminated last record; a `lenprefix` frame cut short is an error.
    pub fn finish(&mut self, out: &mut Vec<Message>) -> Result<(), FrameError> {
        match &mut self.kind {
            DecoderKind::Raw => Ok(()),
            DecoderKind::Records(f) => {
                let mut records = Vec::new();
                f.finish(&mut records);
                out.extend(
                    records
                        .into_iter()
                        .map(|r| Message::Text(to_text(r, &mut self.bad_utf8_warned))),
                );
                self.warn_if_cut();
                Ok(())
            }
            DecoderKind::LenPrefix(d) => d.finish(),
        }
    }
}

/// What to write to the program for one client message: `head`, the payload, `tail`.
#[derive(Debug, PartialEq, Eq)]
pub struct Encoded {
    head: [u8; MAX_HEADER],
    head_len: u8,
    pub payload: Bytes,
    pub tail: &'static [u8],
}

impl Encoded {
    pub fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    fn plain(payload: Bytes, tail: &'static [u8]) -> Self {
        Encoded {
            head: [0; MAX_HEADER],
            head_len: 0,
            payload,
            tail,
        }
    }
}

/// Maps one client data message to the bytes for the program, or the Close code that
/// refuses it. Control messages map to `Ok(None)`.
pub fn encode(framing: Framing, msg: Message) -> Result<Option<Encoded>, (CloseCode, &'static str)> {
    let refuse = (
        CloseCode::Unsupported,
        "binary messages need --binary or --framing=lenprefix",
    );
    Ok(Some(match (framing, msg) {
        (Framing::Line, Message::Text(t)) => Encoded::plain(t.into(), b"\n"),
        (Framing::Nul, Message::Text(t)) => Encoded::plain(t.into(), b"\0"),
        (Framing::Line | Framing::Nul, Message::Binary(_)) => return Err(refuse),
        (Framing::Binary, Message::Text(t)) => Encoded::plain(t.into(), b""),
        (Framing::Binary, Message::Binary(b)) => Encoded::plain(b, b""),
        (Framing::LenPrefix, Message::Text(t)) => with_header(b't', t.into()),
        (Framing::LenPrefix, Message::Binary(b)) => with_header(b'b', b),
        (_, Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_)) => return Ok(None),
    }))
}

fn with_header(kind: u8, payload: Bytes) -> Encoded {
    let mut head = [0u8; MAX_HEADER];
    head[0] = kind;
    head[1] = b' ';
    let digits = payload.len().to_string();
    head[2..2 + digits.len()].copy_from_slice(digits.as_bytes());
    head[2 + digits.len()] = b'\n';
    Encoded {
        head,
        head_len: (3 + digits.len()) as u8,
        payload,
        tail: b"",
    }
}

/// Incremental `lenprefix` decoder. Payloads that lie wholly in one read are slices of it.
#[derive(Debug)]
struct LenPrefixDecoder {
    max: usize,
    /// Bytes of output consumed before the current frame's header.
    offset: u64,
    header: Vec<u8>,
    /// The frame being read: its type, bytes still missing, bytes gathered so far.
    body: Option<(u8, usize, Vec<u8>)>,
}

impl LenPrefixDecoder {
    fn new(max: usize) -> Self {
        LenPrefixDecoder {
            max,
            offset: 0,
            header: Vec::new(),
            body: None,
        }
    }

    fn push(&mut self, chunk: Bytes, out: &mut Vec<Message>, warned: &mut bool) -> Result<(), FrameError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            if let Some((kind, missing, gathered)) = &mut self.body {
                let take = (*missing).min(rest.len());
                let part = rest.split_to(take);
                *missing -= take;
                let payload = if gathered.is_empty() && *missing == 0 {
                    part
                } else {
                    gathered.extend_from_slice(&part);
                    if *missing > 0 {
                        continue;
                    }
                    Bytes::from(std::mem::take(gathered))
                };
                let kind = *kind;
                self.offset += (self.header.len() + 1 + payload.len()) as u64;
                self.header.clear();
                self.body = None;
                out.push(message(kind, payload, warned));
                continue;
            }
            // The newline must come within MAX_HEADER bytes of the header's start, however
            // the output is split into reads.
            let window = MAX_HEADER - self.header.len();
            let Some(nl) = rest.iter().take(window).position(|&b| b == b'\n') else {
                if rest.len() >= window {
                    return Err(self.error("header too long (expected \"t LEN\\n\" or \"b LEN\\n\")"));
                }
                self.header.extend_from_slice(&rest);
                return Ok(());
            };
            self.header.extend_from_slice(&rest[..nl]);
            rest = rest.slice(nl + 1..);
            let (kind, len) = self.parse_header()?;
            if len == 0 {
                self.offset += (self.header.len() + 1) as u64;
                self.header.clear();
                out.push(message(kind, Bytes::new(), warned));
            } else {
                self.body = Some((kind, len, Vec::new()));
            }
        }
        Ok(())
    }

    fn parse_header(&self) -> Result<(u8, usize), FrameError> {
        let h = &self.header;
        let bad = || self.error("malformed header (expected \"t LEN\\n\" or \"b LEN\\n\")");
        if h.len() < 3 || !matches!(h[0], b't' | b'b') || h[1] != b' ' || !h[2..].iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let len: usize = std::str::from_utf8(&h[2..])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)?;
        if len > self.max {
            return Err(self.error("message longer than --maxframesize"));
        }
        Ok((h[0], len))
    }

    fn finish(&self) -> Result<(), FrameError> {
        if self.header.is_empty() && self.body.is_none() {
            Ok(())
        } else {
            Err(self.error("output ended inside a frame"))
        }
    }

    fn error(&self, reason: &'static str) -> FrameError {
        FrameError {
            offset: self.offset,
            reason,
        }
    }
}

/// `--passstderr`'s message: `{"stream":STREAM,"data":TEXT}` (websocketd's format), with
/// invalid UTF-8 in `data` repaired with U+FFFD.
pub fn tag(stream: &str, data: &[u8]) -> Utf8Bytes {
    let text = String::from_utf8_lossy(data);
    let mut out = String::with_capacity(text.len() + stream.len() + 24);
    out.push_str("{\"stream\":\"");
    out.push_str(stream);
    out.push_str("\",\"data\":\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push_str("\"}");
    out.into()
}

fn message(kind: u8, payload: Bytes, warned: &mut bool) -> Message {
    if kind == b'b' {
        Message::Binary(payload)
    } else {
        Message::Text(to_text(payload, warned))
    }
}

/// Splits a byte stream into lines: `\n` ends a line and is removed, as is a `\r` just
/// before it. A line longer than the bound is emitted in pieces cut at a UTF-8 character
/// boundary. Feeding the same bytes in any chunking yields the same lines.
#[derive(Debug)]
pub struct LineFramer {
    partial: Vec<u8>,
    max_line: usize,
    separator: u8,
    strip_cr: bool,
    /// A line was cut into pieces since [`LineFramer::take_cut`] last looked.
    cut: bool,
}

impl LineFramer {
    /// A framer whose lines are at most `max_line` bytes (at least 4).
    pub fn new(max_line: usize) -> Self {
        Self::with_separator(b'\n', true, max_line)
    }

    /// A framer that ends records at `separator`, also removing a `\r` before it when
    /// `strip_cr` is set.
    pub fn with_separator(separator: u8, strip_cr: bool, max_line: usize) -> Self {
        LineFramer {
            partial: Vec::new(),
            max_line: max_line.max(4),
            separator,
            strip_cr,
            cut: false,
        }
    }

    /// Whether a line was cut into pieces since the last call.
    pub fn take_cut(&mut self) -> bool {
        std::mem::take(&mut self.cut)
    }

    /// Feeds `chunk`, appending every completed line (or piece) to `out`. Lines that lie
    /// wholly inside the chunk are slices of it, not copies.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) {
        let mut rest = chunk;
        while let Some(i) = find_byte(&rest, self.separator) {
            let line = if self.partial.is_empty() {
                rest.slice(..i)
            } else {
                self.partial.extend_from_slice(&rest[..i]);
                Bytes::from(std::mem::take(&mut self.partial))
            };
            let line = match line.last() {
                Some(b'\r') if self.strip_cr => line.slice(..line.len() - 1),
                _ => line,
            };
            self.emit(line, out);
            rest = rest.slice(i + 1..);
        }
        if !rest.is_empty() {
            self.partial.extend_from_slice(&rest);
            // A `\r` at the very end may be half of a `\r\n` that the next read completes: it
            // does not count, so the cut falls where one read of the same bytes puts it.
            while self.partial.len() - usize::from(self.strip_cr && self.partial.last() == Some(&b'\r')) > self.max_line
            {
                let cut = char_boundary(&self.partial, self.max_line);
                self.cut = true;
                let tail = self.partial.split_off(cut);
                out.push(Bytes::from(std::mem::replace(&mut self.partial, tail)));
            }
        }
    }

    /// At EOF: the unterminated last line, if any, is a line too.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if !self.partial.is_empty() {
            let last = Bytes::from(std::mem::take(&mut self.partial));
            self.emit(last, out);
        }
    }

    fn emit(&mut self, mut line: Bytes, out: &mut Vec<Bytes>) {
        while line.len() > self.max_line {
            let cut = char_boundary(&line, self.max_line);
            self.cut = true;
            out.push(line.split_to(cut));
        }
        out.push(line);
    }
}

/// The index of the first `byte` in `hay`: the C library's `memchr`, which compares a
/// vector register at a time (a byte loop cost a fifth of the server's CPU relaying
/// 64 KiB lines; BENCHMARKS.md).
fn find_byte(hay: &[u8], byte: u8) -> Option<usize> {
    // SAFETY: memchr reads at most `hay.len()` bytes from `hay`'s start, all in bounds,
    // and returns either null or a pointer into those bytes.
    let found = unsafe { libc::memchr(hay.as_ptr().cast(), i32::from(byte), hay.len()) };
    (!found.is_null()).then(|| found as usize - hay.as_ptr() as usize)
}

/// The largest index `<= max` (and more than `max - 4`) that does not fall inside a UTF-8
/// sequence; `max` itself when the bytes are not UTF-8 there. Requires `b.len() > max`.
fn char_boundary(b: &[u8], max: usize) -> usize {
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| i > 0 && (b[i] & 0xC0) != 0x80)
        .unwrap_or(max)
}

/// Text frames must carry UTF-8: invalid sequences become U+FFFD, with one warning per
/// connection. Valid output (the usual case) is checked with SIMD, several times faster
/// than std for long lines; only invalid output takes std's lossy path.
pub fn to_text(payload: Bytes, warned: &mut bool) -> Utf8Bytes {
    if simdutf8::basic::from_utf8(&payload).is_ok() {
        // SAFETY: just checked to be UTF-8.
        return unsafe { Utf8Bytes::from_bytes_unchecked(payload) };
    }
    if !*warned {
        *warned = true;
        tracing::warn!(
            "program output is not valid UTF-8; invalid bytes replaced with U+FFFD (use --binary for raw bytes)"
        );
    }
    String::from_utf8_lossy(&payload).into_owned().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]], max: usize) -> Vec<Vec<u8>> {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(Bytes::copy_from_slice(c), &mut out);
        }
        f.finish(&mut out);
        out.into_iter().map(|b| b.to_vec()).collect()
    }

    #[test]
    fn find_byte_finds_the_first_occurrence_anywhere() {
        assert_eq!(find_byte(b"", b'\n'), None);
        assert_eq!(find_byte(b"abc", b'\n'), None);
        let mut long = vec![b'x'; 70_000];
        assert_eq!(find_byte(&long, b'\n'), None);
        for at in [0, 1, 31, 32, 63, 64, 65_535, 69_999] {
            long[at] = b'\n';
            assert_eq!(find_byte(&long, b'\n'), Some(at));
            assert_eq!(find_byte(&long[at + 1..], b'\n'), None);
            long[at] = b'x';
        }
        assert_eq!(find_byte(b"a\0b\0", 0), Some(1));
    }

    #[test]
    fn lines_strip_lf_and_crlf_keep_inner_cr_and_empty_lines() {
        let got = lines_of(&[b"a\nb\r\n\nc\rd\nlast"], 100);
        assert_eq!(got, [&b"a"[..], b"b", b"", b"c\rd", b"last"]);
    }

    #[test]
    fn chunking_does_not_change_lines() {
        let input = b"hello\r\nworld\n\nx\xc3\xa9y\nend".to_vec();
        let whole = lines_of(&[&input], 4);
        for split in 0..input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(lines_of(&[a, b], 4), whole, "split at {split}");
        }
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(lines_of(&bytewise, 4), whole);
    }

    #[test]
    fn long_lines_are_cut_at_char_boundaries() {
        // "é" is two bytes; a cut at 5 would split the third one.
        let got = lines_of(&["ééééé\n".as_bytes()], 5);
        assert_eq!(got, ["éé".as_bytes(), "éé".as_bytes(), "é".as_bytes()]);
        let got = lines_of(&[&[b'x'; 10][..], b"\n"], 4);
        assert_eq!(got, [&b"xxxx"[..], b"xxxx", b"xx"]);
    }

    #[test]
    fn nul_records_keep_newlines_and_cr() {
        let mut f = LineFramer::with_separator(0, false, 100);
        let mut out = Vec::new();
        f.push(Bytes::from_static(b"a\nb\r\0c\0"), &mut out);
        assert_eq!(out, [Bytes::from_static(b"a\nb\r"), Bytes::from_static(b"c")]);
    }

    fn decode_lenprefix(chunks: &[&[u8]], max: usize) -> (Vec<Message>, Result<(), FrameError>) {
        let mut d = Decoder::new(Framing::LenPrefix, max);
        let mut out = Vec::new();
        for c in chunks {
            if let Err(e) = d.push(Bytes::copy_from_slice(c), &mut out) {
                return (out, Err(e));
            }
        }
        let r = d.finish(&mut out);
        (out, r)
    }

    #[test]
    fn lenprefix_round_trips_types_and_any_bytes_in_any_chunking() {
        let msgs = vec![
            Message::text("hello\nworld"),
            Message::binary(vec![0u8, 10, 13, 255]),
            Message::text(""),
            Message::binary(vec![]),
        ];
        let mut stream = Vec::new();
        for m in msgs.clone() {
            let e = encode(Framing::LenPrefix, m).unwrap().unwrap();
            stream.extend_from_slice(e.head());
            stream.extend_from_slice(&e.payload);
        }
        assert!(stream.starts_with(b"t 11\nhello\nworldb 4\n\x00\n\r\xfft 0\nb 0\n"));
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            let (got, r) = decode_lenprefix(&[a, b], 100);
            assert_eq!(r, Ok(()), "split at {split}");
            assert_eq!(got, msgs, "split at {split}");
        }
    }

    #[test]
    fn lenprefix_errors_name_the_offset() {
        let (got, r) = decode_lenprefix(&[b"t 2\nhix 1\na"], 100);
        assert_eq!(got, [Message::text("hi")]);
        assert_eq!(r.unwrap_err().offset, 6);
        let (_, r) = decode_lenprefix(&[b"t 200\n"], 100);
        assert_eq!(r.unwrap_err().reason, "message longer than --maxframesize");
        let (_, r) = decode_lenprefix(&[b"t 99999999999999999999999999\n"], 100);
        assert!(r.is_err());
        let (_, r) = decode_lenprefix(&[b"t 5\nabc"], 100);
        assert_eq!(
            r.unwrap_err(),
            FrameError {
                offset: 0,
                reason: "output ended inside a frame"
            }
        );
        let (_, r) = decode_lenprefix(&[b"t -1\n"], 100);
        assert!(r.is_err());
    }

    #[test]
    fn encode_refuses_binary_in_text_modes() {
        assert!(encode(Framing::Line, Message::binary(vec![1u8])).is_err());
        assert!(encode(Framing::Nul, Message::binary(vec![1u8])).is_err());
        let e = encode(Framing::Nul, Message::text("a\nb")).unwrap().unwrap();
        assert_eq!((e.head(), &e.payload[..], e.tail), (&b""[..], &b"a\nb"[..], &b"\0"[..]));
        assert_eq!(encode(Framing::Line, Message::Ping(Bytes::new())).unwrap(), None);
    }

    #[test]
    fn tags_are_json_with_escapes() {
        let t = tag("stderr", b"a\"b\\c\n\x01\xff");
        assert_eq!(
            t.as_str(),
            "{\"stream\":\"stderr\",\"data\":\"a\\\"b\\\\c\\n\\u0001\u{fffd}\"}"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut warned = false;
        let t = to_text(Bytes::from_static(b"bad-utf8:\xff\xfe"), &mut warned);
        assert_eq!(t.as_str(), "bad-utf8:\u{fffd}\u{fffd}");
        assert!(warned);
    }
}
