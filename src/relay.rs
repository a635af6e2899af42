//! The two pumps between a WebSocket and a byte stream pair: output bytes → messages, and
//! messages → input bytes, with the framing modes. Knows nothing of processes or sockets
//! beyond `AsyncRead`/`AsyncWrite` and a message `Sink`/`Stream`, so a pipe, a pty or an
//! outbound socket plug in unchanged.
//!
//! Flow control: each pump awaits its own writes, so a slow reader on one side pushes back
//! only on its own source (a full pipe stops the program; an unread socket stops reading
//! the pipe), and the two directions never wait on each other. Buffers are bounded: one
//! read of at most [`READ_CHUNK`] bytes at a time, a partial line of at most
//! `max_line` (`--maxframesize`), a stdin batch of at most [`STDIN_BATCH`] plus one message.
//! Coalescing: every line of one read goes out in one socket write (one flush per read),
//! and messages that are already received are written to the program in one `write`.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{ready, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

/// Largest single read from the program's output; also the largest `--binary` message
/// the server sends (the size of a default Linux pipe buffer).
pub const READ_CHUNK: usize = 64 * 1024;
/// Messages already received are gathered up to this many bytes before one write to the
/// program; a bigger message is written on its own, without a copy.
pub const STDIN_BATCH: usize = 64 * 1024;

/// How bytes map to messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Text mode: one line = one text message, one message = one line.
    Line,
    /// `--binary`: bytes unchanged; each read of the output is one binary message.
    Binary,
}

/// Messages and payload bytes that went one way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub messages: u64,
    pub bytes: u64,
}

/// Set by the input pump on every frame received; read by [`watchdog`].
#[derive(Debug, Default)]
pub struct Liveness(AtomicBool);

impl Liveness {
    fn touch(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// Why the output pump stopped.
#[derive(Debug)]
pub enum OutEnd {
    /// The output reached EOF and everything read was sent and flushed.
    Eof,
    /// Reading the output failed (logged by the caller); what was read before was sent.
    ReadError(io::Error),
    /// Sending to the client failed.
    Socket(WsError),
}

/// Why the input pump stopped.
#[derive(Debug)]
pub enum InEnd {
    /// The client sent a Close frame (already answered by the protocol layer).
    Closed(Option<CloseFrame>),
    /// The connection ended without a Close frame.
    Gone,
    /// The client broke a rule; close with this code and reason.
    Refused(CloseCode, &'static str),
    /// Any other error from the WebSocket layer.
    Error(WsError),
}

/// Pumps `reader` (the program's output) into `sink` until EOF or an error, sending a
/// ping every `ping` interval while it is not blocked on the client. Lines of one read are
/// fed together and flushed once. A line longer than `max_line` goes out in pieces of at
/// most that size, cut at a UTF-8 character boundary.
pub async fn pump_out<R, S>(
    reader: &mut R,
    sink: &mut S,
    framing: Framing,
    max_line: usize,
    ping: Option<Duration>,
    counters: &mut Counters,
) -> OutEnd
where
    R: AsyncRead + Unpin,
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut framer = LineFramer::new(max_line);
    let mut lines = Vec::new();
    let mut bad_utf8_warned = false;
    let mut ticker = ping.map(|every| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        let read = tokio::select! {
            biased;
            r = read_chunk(reader) => r,
            () = tick(&mut ticker) => {
                if let Err(e) = sink.send(Message::Ping(Bytes::new())).await {
                    return OutEnd::Socket(e);
                }
                continue;
            }
        };
        let (chunk, end) = match read {
            Ok(Some(chunk)) => (Some(chunk), None),
            Ok(None) => (None, Some(OutEnd::Eof)),
            Err(e) => (None, Some(OutEnd::ReadError(e))),
        };
        match framing {
            Framing::Binary => {
                if let Some(chunk) = chunk {
                    lines.push(chunk);
                }
            }
            Framing::Line => {
                if let Some(chunk) = chunk {
                    framer.push(chunk, &mut lines);
                } else {
                    framer.finish(&mut lines);
                }
            }
        }
        for payload in lines.drain(..) {
            counters.messages += 1;
            counters.bytes += payload.len() as u64;
            let msg = match framing {
                Framing::Binary => Message::Binary(payload),
                Framing::Line => Message::Text(to_text(payload, &mut bad_utf8_warned)),
            };
            if let Err(e) = sink.feed(msg).await {
                return OutEnd::Socket(e);
            }
        }
        if let Err(e) = sink.flush().await {
            return OutEnd::Socket(e);
        }
        if let Some(end) = end {
            return end;
        }
    }
}

/// Resolves once no frame has come from the client for two whole `every` intervals:
/// neither an answer to our pings nor anything else. It also ends sessions whose client
/// stopped reading (so our pings cannot even be sent).
pub async fn watchdog(every: Duration, liveness: &Liveness) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut missed = 0u32;
    while missed < 2 {
        ticker.tick().await;
        missed = if liveness.take() { 0 } else { missed + 1 };
    }
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Text frames must carry UTF-8: invalid sequences become U+FFFD, with one warning per
/// connection.
fn to_text(payload: Bytes, warned: &mut bool) -> Utf8Bytes {
    if std::str::from_utf8(&payload).is_ok() {
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

/// One read into a stack buffer that lives only during the poll, so an idle connection
/// holds no read buffer at all; the bytes read are copied out once.
pub async fn read_chunk<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Bytes>> {
    poll_fn(|cx| {
        let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut rb = ReadBuf::uninit(&mut buf);
        ready!(Pin::new(&mut *reader).poll_read(cx, &mut rb))?;
        let filled = rb.filled();
        Poll::Ready(Ok((!filled.is_empty()).then(|| Bytes::copy_from_slice(filled))))
    })
    .await
}

/// Pumps client messages into `writer` (the program's input) until the client closes, the
/// connection ends, or a rule is broken. If the program stops reading (its input is
/// closed), later messages are discarded with a log line, and the pump keeps serving the
/// connection so a Close from the client is still seen.
pub async fn pump_in<St, W>(
    stream: &mut St,
    mut writer: W,
    framing: Framing,
    liveness: Option<&Liveness>,
    counters: &mut Counters,
) -> InEnd
where
    St: Stream<Item = Result<Message, WsError>> + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut input = Input {
        writer: &mut writer,
        buf: Vec::new(),
        open: true,
        discarded: 0,
    };
    loop {
        let mut next = stream.next().await;
        loop {
            let msg = match next {
                None => return input.finish(InEnd::Gone).await,
                Some(Err(e)) => return input.finish(end_for(e)).await,
                Some(Ok(msg)) => msg,
            };
            if let Some(l) = liveness {
                l.touch();
            }
            let is_data = matches!(msg, Message::Text(_) | Message::Binary(_));
            let payload = match msg {
                Message::Text(t) => Bytes::from(t),
                Message::Binary(b) if framing == Framing::Binary => b,
                Message::Binary(_) => {
                    let end = InEnd::Refused(CloseCode::Unsupported, "binary messages need --binary");
                    return input.finish(end).await;
                }
                Message::Close(frame) => return input.finish(InEnd::Closed(frame)).await,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Bytes::new(),
            };
            if is_data {
                counters.messages += 1;
                counters.bytes += payload.len() as u64;
                input.push(payload, framing == Framing::Line).await;
            }
            if input.buf.len() >= STDIN_BATCH {
                break;
            }
            // Gather what has already arrived, then write it all at once.
            match stream.next().now_or_never() {
                Some(n) => next = n,
                None => break,
            }
        }
        input.write_batch().await;
    }
}

/// The program's input side of [`pump_in`].
struct Input<'a, W> {
    writer: &'a mut W,
    buf: Vec<u8>,
    open: bool,
    discarded: u64,
}

impl<W: AsyncWrite + Unpin> Input<'_, W> {
    async fn push(&mut self, payload: Bytes, newline: bool) {
        if !self.open {
            self.discarded += 1;
            return;
        }
        if payload.len() >= STDIN_BATCH {
            self.write_batch().await;
            self.write(&payload).await;
        } else {
            self.buf.extend_from_slice(&payload);
        }
        if newline {
            self.buf.push(b'\n');
        }
    }

    async fn write_batch(&mut self) {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.write(&buf).await;
            self.buf = buf;
            self.buf.clear();
            if self.buf.capacity() > 2 * STDIN_BATCH {
                self.buf = Vec::new();
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        if !self.open {
            return;
        }
        if let Err(e) = self.writer.write_all(bytes).await {
            self.open = false;
            tracing::warn!(error = %e, "program's stdin is closed; discarding further client messages");
        }
    }

    async fn finish(mut self, end: InEnd) -> InEnd {
        self.write_batch().await;
        if self.discarded > 0 {
            tracing::info!(
                discarded = self.discarded,
                "client messages discarded: the program no longer reads stdin"
            );
        }
        end
    }
}

/// The Close code for an error from the WebSocket layer.
fn end_for(e: WsError) -> InEnd {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => InEnd::Gone,
        WsError::Io(_) => InEnd::Gone,
        WsError::Protocol(tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            InEnd::Gone
        }
        WsError::Capacity(_) => InEnd::Refused(CloseCode::Size, "message too big (see --maxframesize)"),
        WsError::Utf8(_) => InEnd::Refused(CloseCode::Invalid, "invalid UTF-8 in a text message"),
        WsError::Protocol(_) => InEnd::Refused(CloseCode::Protocol, "protocol error"),
        other => InEnd::Error(other),
    }
}

/// Splits a byte stream into lines: `\n` ends a line and is removed, as is a `\r` just
/// before it. A line longer than the bound is emitted in pieces cut at a UTF-8 character
/// boundary. Feeding the same bytes in any chunking yields the same lines.
#[derive(Debug)]
pub struct LineFramer {
    partial: Vec<u8>,
    max_line: usize,
}

impl LineFramer {
    /// A framer whose lines are at most `max_line` bytes (at least 4).
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            partial: Vec::new(),
            max_line: max_line.max(4),
        }
    }

    /// Feeds `chunk`, appending every completed line (or piece) to `out`. Lines that lie
    /// wholly inside the chunk are slices of it, not copies.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let line = if self.partial.is_empty() {
                rest.slice(..i)
            } else {
                self.partial.extend_from_slice(&rest[..i]);
                Bytes::from(std::mem::take(&mut self.partial))
            };
            let line = match line.last() {
                Some(b'\r') => line.slice(..line.len() - 1),
                _ => line,
            };
            self.emit(line, out);
            rest = rest.slice(i + 1..);
        }
        if !rest.is_empty() {
            self.partial.extend_from_slice(&rest);
            while self.partial.len() > self.max_line {
                let cut = char_boundary(&self.partial, self.max_line);
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

    fn emit(&self, mut line: Bytes, out: &mut Vec<Bytes>) {
        while line.len() > self.max_line {
            let cut = char_boundary(&line, self.max_line);
            out.push(line.split_to(cut));
        }
        out.push(line);
    }
}

/// The largest index `<= max` (and more than `max - 4`) that does not fall inside a UTF-8
/// sequence; `max` itself when the bytes are not UTF-8 there. Requires `b.len() > max`.
fn char_boundary(b: &[u8], max: usize) -> usize {
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| i > 0 && (b[i] & 0xC0) != 0x80)
        .unwrap_or(max)
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
    fn invalid_utf8_is_replaced() {
        let mut warned = false;
        let t = to_text(Bytes::from_static(b"bad-utf8:\xff\xfe"), &mut warned);
        assert_eq!(t.as_str(), "bad-utf8:\u{fffd}\u{fffd}");
        assert!(warned);
    }
}
