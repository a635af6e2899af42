//! The two pumps between a WebSocket and a byte stream pair: output bytes → messages, and
//! messages → input bytes, through [`crate::framing`]. Knows nothing of processes or sockets
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
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::framing::{self, Decoder, Encoded, FrameError};
pub use crate::framing::{Framing, LineFramer};

/// Largest single read from the program's output; also the largest `--binary` message
/// the server sends (the size of a default Linux pipe buffer).
pub const READ_CHUNK: usize = 64 * 1024;
/// Messages already received are gathered up to this many bytes before one write to the
/// program; a bigger message is written on its own, without a copy.
pub const STDIN_BATCH: usize = 64 * 1024;

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
    /// The output broke `lenprefix` framing; what was decoded before was sent.
    Malformed(FrameError),
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
    let mut decoder = Decoder::new(framing, max_line);
    let mut messages = Vec::new();
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
        let decoded = match read {
            Ok(Some(chunk)) => decoder.push(chunk, &mut messages).map(|()| None),
            Ok(None) => decoder.finish(&mut messages).map(|()| Some(OutEnd::Eof)),
            Err(e) => Ok(Some(OutEnd::ReadError(e))),
        };
        let end = decoded.unwrap_or_else(|e| Some(OutEnd::Malformed(e)));
        for msg in messages.drain(..) {
            counters.messages += 1;
            counters.bytes += msg.len() as u64;
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
            if let Message::Close(frame) = msg {
                return input.finish(InEnd::Closed(frame)).await;
            }
            match framing::encode(framing, msg) {
                Ok(Some(encoded)) => {
                    counters.messages += 1;
                    counters.bytes += encoded.payload.len() as u64;
                    input.push(encoded).await;
                }
                Ok(None) => {}
                Err((code, reason)) => return input.finish(InEnd::Refused(code, reason)).await,
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
    async fn push(&mut self, msg: Encoded) {
        if !self.open {
            self.discarded += 1;
            return;
        }
        self.buf.extend_from_slice(msg.head());
        if msg.payload.len() >= STDIN_BATCH {
            self.write_batch().await;
            self.write(&msg.payload).await;
        } else {
            self.buf.extend_from_slice(&msg.payload);
        }
        self.buf.extend_from_slice(msg.tail);
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
