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
//!
//! Two small pieces are shared with the rooms that read a program without a WebSocket
//! ([`crate::child`]'s stderr, [`crate::cgi`], [`crate::shared`]'s hub): [`read_chunk`],
//! one bounded read that holds no buffer between reads, and [`or_pending`] for the
//! `select!` branches that the settings switch off.

use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{ready, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::error::InflateError;
use crate::framing::{self, Decoder, FrameError};
pub use crate::framing::{Framing, LineFramer};
use crate::stats;
use crate::text;

/// Largest single read from the program's output; also the largest `--binary` message
/// the server sends (the size of a default Linux pipe buffer).
pub const READ_CHUNK: usize = 64 * 1024;
/// Messages already received are gathered up to this many bytes (plus one message)
/// before one write to the program.
pub const STDIN_BATCH: usize = 64 * 1024;

/// Messages and payload bytes that went one way. Shared, so the session can watch a
/// pump's progress while it runs. With `--metrics` each message is also added to the
/// process's total for that direction ([`crate::stats`]): two more relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Counters {
    messages: AtomicU64,
    bytes: AtomicU64,
    total: Option<&'static stats::Flow>,
}

impl Counters {
    /// Counters that also add to `total` (see [`stats::flows`]).
    pub fn adding_to(total: Option<&'static stats::Flow>) -> Self {
        Counters {
            total,
            ..Counters::default()
        }
    }

    pub(crate) fn add(&self, payload: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(payload as u64, Ordering::Relaxed);
        if let Some(total) = self.total {
            total.add(payload);
        }
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
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
    Refused(CloseCode, Cow<'static, str>),
    /// Any other error from the WebSocket layer.
    Error(WsError),
}

/// Pumps `reader` (the program's output) into `sink` until EOF or an error, sending a
/// ping every `ping` interval while it is not blocked on the client. Lines of one read are
/// fed together and flushed once. A line longer than `max_line` goes out in pieces of at
/// most that size, cut at a UTF-8 character boundary.
///
/// With `side` (`--passstderr`), lines from that second source are sent too, and every
/// message is tagged: `{"stream":"stdout"|"stderr","data":"..."}`.
pub async fn pump_out<R, S>(
    reader: &mut R,
    sink: &mut S,
    framing: Framing,
    max_line: usize,
    ping: Option<Duration>,
    mut side: Option<mpsc::Receiver<Bytes>>,
    counters: &Counters,
) -> OutEnd
where
    R: AsyncRead + Unpin,
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut decoder = Decoder::new(framing, max_line);
    let mut messages = Vec::new();
    let tagged = side.is_some();
    // With a second source, the output ends when both have ended.
    let mut stdout_done = false;
    let mut ticker = ping_ticker(ping);
    loop {
        let read = tokio::select! {
            biased;
            r = read_chunk(reader), if !stdout_done => r,
            line = or_pending(side.as_mut().map(|rx| rx.recv())) => {
                match line {
                    Some(line) => {
                        let msg = Message::Text(framing::tag("stderr", &line));
                        counters.add(line.len());
                        log_message("out", Some(framing), &msg);
                        if let Err(e) = sink.send(msg).await {
                            return OutEnd::Socket(e);
                        }
                    }
                    None if stdout_done => return OutEnd::Eof,
                    None => side = None,
                }
                continue;
            }
            _ = or_pending(ticker.as_mut().map(|t| t.tick())) => {
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
            counters.add(msg.len());
            log_message("out", Some(framing), &msg);
            let msg = match msg {
                Message::Text(t) if tagged => Message::Text(framing::tag("stdout", t.as_bytes())),
                other => other,
            };
            if let Err(e) = sink.feed(msg).await {
                return OutEnd::Socket(e);
            }
        }
        if let Err(e) = sink.flush().await {
            return OutEnd::Socket(e);
        }
        match end {
            Some(OutEnd::Eof) if side.is_some() => stdout_done = true,
            Some(end) => return end,
            None => {}
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

/// A ticker for pings every `ping`, first one interval from now; `None` without pings.
pub(crate) fn ping_ticker(ping: Option<Duration>) -> Option<tokio::time::Interval> {
    ping.map(|every| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    })
}

/// `fut`'s output, or never when there is none: for a `select!` branch that the settings
/// switch off (no pings, no program, no second source), which then simply never wins.
pub async fn or_pending<F: Future>(fut: Option<F>) -> F::Output {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// One read into a stack buffer that lives only during the poll, so an idle connection
/// holds no read buffer at all; the bytes read are copied out once.
pub async fn read_chunk<R: AsyncRead + Unpin + ?Sized>(reader: &mut R) -> io::Result<Option<Bytes>> {
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
///
/// While one batch is being written, the next is gathered from the socket (up to
/// [`HOLD_LIMIT`]), so a Close, an error or a ping is not stuck behind a program that is
/// slow to read. Past that limit the socket is left unread: that is the backpressure.
pub async fn pump_in<St, W>(
    stream: &mut St,
    mut writer: W,
    framing: Framing,
    liveness: Option<&Liveness>,
    counters: &Counters,
) -> InEnd
where
    St: Stream<Item = Result<Message, WsError>> + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut batch = Batch {
        buf: Vec::new(),
        queued: 0,
        open: true,
        discarded: 0,
        framing,
        liveness,
        counters,
    };
    loop {
        if batch.buf.is_empty() {
            if let Some(end) = batch.accept(stream.next().await) {
                return batch.finish(&mut writer, end).await;
            }
        }
        // Gather what has already arrived, then write it all at once.
        while batch.buf.len() < STDIN_BATCH {
            let Some(next) = stream.next().now_or_never() else {
                break;
            };
            if let Some(end) = batch.accept(next) {
                return batch.finish(&mut writer, end).await;
            }
        }
        if let Some(end) = batch.write_watching(&mut writer, stream).await {
            if matches!(end, InEnd::Closed(_)) {
                // Messages gathered before the Close go to the program too.
                return batch.finish(&mut writer, end).await;
            }
            batch.log_discarded();
            return end;
        }
    }
}

/// How much the next batch may gather while the current one is still being written.
pub const HOLD_LIMIT: usize = 4 * STDIN_BATCH;

/// How long the last messages before a client's Close may take to reach a program that
/// is slow to read them.
const FINAL_WRITE: Duration = Duration::from_secs(1);

/// Client messages framed for the program, waiting to be written.
struct Batch<'a> {
    buf: Vec<u8>,
    /// Messages in `buf`.
    queued: u64,
    /// False once the program's stdin is closed.
    open: bool,
    discarded: u64,
    framing: Framing,
    liveness: Option<&'a Liveness>,
    counters: &'a Counters,
}

impl Batch<'_> {
    /// Takes one item from the socket: data is framed into the batch, control frames are
    /// noted; anything that ends the session is returned.
    fn accept(&mut self, next: Option<Result<Message, WsError>>) -> Option<InEnd> {
        let msg = match next {
            None => return Some(InEnd::Gone),
            Some(Err(e)) => return Some(end_for(e)),
            Some(Ok(msg)) => msg,
        };
        if let Some(l) = self.liveness {
            l.touch();
        }
        if let Message::Close(frame) = msg {
            return Some(InEnd::Closed(frame));
        }
        log_message("in", Some(self.framing), &msg);
        match framing::encode(self.framing, msg) {
            Ok(Some(encoded)) => {
                self.counters.add(encoded.payload.len());
                if self.open {
                    self.buf.extend_from_slice(encoded.head());
                    self.buf.extend_from_slice(&encoded.payload);
                    self.buf.extend_from_slice(encoded.tail);
                    self.queued += 1;
                } else {
                    self.discarded += 1;
                }
                None
            }
            Ok(None) => None,
            Err((code, reason)) => Some(InEnd::Refused(code, Cow::Borrowed(reason))),
        }
    }

    /// Writes the batch while gathering the next one from the socket. An ending seen
    /// meanwhile is returned: after a Close the write is given [`FINAL_WRITE`] to finish
    /// (what the client sent before closing is delivered if the program takes it); any
    /// other ending (the client is gone) abandons it.
    async fn write_watching<W, St>(&mut self, writer: &mut W, stream: &mut St) -> Option<InEnd>
    where
        W: AsyncWrite + Unpin,
        St: Stream<Item = Result<Message, WsError>> + Unpin,
    {
        let current = std::mem::take(&mut self.buf);
        self.queued = 0;
        if current.is_empty() || !self.open {
            return None;
        }
        let (written, end) = {
            let mut write = std::pin::pin!(writer.write_all(&current));
            loop {
                tokio::select! {
                    // The write first: a Close that arrived meanwhile must not abandon a
                    // batch the program (or our stdout) can take at once.
                    biased;
                    r = &mut write => break (Some(r), None),
                    next = stream.next(), if self.buf.len() < HOLD_LIMIT => {
                        if let Some(end) = self.accept(next) {
                            let r = match end {
                                InEnd::Closed(_) => tokio::time::timeout(FINAL_WRITE, &mut write).await.ok(),
                                _ => None,
                            };
                            break (r, Some(end));
                        }
                    }
                }
            }
        };
        if self.buf.is_empty() && current.capacity() <= 2 * STDIN_BATCH {
            self.buf = current; // reuse the allocation
            self.buf.clear();
        }
        match written {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                self.open = false;
                self.discarded += self.queued;
                self.queued = 0;
                self.buf.clear();
                tracing::warn!(error = %e, "program's stdin is closed; discarding further client messages");
            }
            None => tracing::info!(
                "the client's session ended while the program was not reading its input; \
                 the messages being written to it were not delivered"
            ),
        }
        end
    }

    /// Delivers what was gathered before the end (bounded: the program may not be
    /// reading), and logs what was discarded.
    async fn finish<W: AsyncWrite + Unpin>(mut self, writer: &mut W, end: InEnd) -> InEnd {
        if self.open && !self.buf.is_empty() {
            let pending = self.buf.len();
            if tokio::time::timeout(FINAL_WRITE, writer.write_all(&self.buf))
                .await
                .is_err()
            {
                tracing::info!(
                    bytes = pending,
                    "last client messages not delivered: the program is not reading"
                );
            }
            self.buf.clear();
        }
        self.log_discarded();
        end
    }

    fn log_discarded(&self) {
        if self.discarded > 0 {
            tracing::info!(
                discarded = self.discarded,
                "client messages discarded: the program no longer reads stdin"
            );
        }
    }
}

/// The per-message line (target `wsbridge::msg`): at debug its direction (`in` from the
/// client, `out` to it), kind, size and the `--framing` (`None` for `--shared`'s fan-out,
/// which sends what the hub framed); at trace also the first [`text::PAYLOAD_BYTES`] of
/// the payload, escaped. Below debug this is one check of a cached level, nothing else.
#[inline]
pub(crate) fn log_message(dir: &'static str, framing: Option<Framing>, msg: &Message) {
    if tracing::enabled!(target: "wsbridge::msg", tracing::Level::DEBUG) {
        log_message_at_debug(dir, framing, msg);
    }
}

#[cold]
#[inline(never)]
fn log_message_at_debug(dir: &'static str, framing: Option<Framing>, msg: &Message) {
    let (kind, payload): (&str, &[u8]) = match msg {
        Message::Text(t) => ("text", t.as_bytes()),
        Message::Binary(b) => ("binary", b),
        _ => return,
    };
    use tracing::field::display;
    let framing = framing.map(|f| display(f.name()));
    let (dir, kind) = (display(dir), display(kind));
    if tracing::enabled!(target: "wsbridge::msg", tracing::Level::TRACE) {
        tracing::trace!(target: "wsbridge::msg", dir, kind, bytes = payload.len(), framing,
            payload = %text::Payload(payload), "message");
    } else {
        tracing::debug!(target: "wsbridge::msg", dir, kind, bytes = payload.len(), framing, "message");
    }
}

/// The Close code for an error from the WebSocket layer.
fn end_for(e: WsError) -> InEnd {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => InEnd::Gone,
        // permessage-deflate's errors come up from the transport under tungstenite.
        WsError::Io(e) => match e.get_ref().and_then(|i| i.downcast_ref::<InflateError>()) {
            Some(InflateError::TooBig { max }) => InEnd::Refused(
                CloseCode::Size,
                format!("compressed message inflates past --maxframesize {max}").into(),
            ),
            Some(InflateError::Corrupt(_)) => {
                InEnd::Refused(CloseCode::Invalid, "compressed message does not inflate".into())
            }
            None => InEnd::Gone,
        },
        WsError::Protocol(tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            InEnd::Gone
        }
        // For a message in fragments, `size` is what it had reached when it passed the limit.
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => InEnd::Refused(
            CloseCode::Size,
            format!("message of {size} bytes > --maxframesize {max_size}").into(),
        ),
        WsError::Capacity(_) => InEnd::Refused(CloseCode::Size, "message too big (see --maxframesize)".into()),
        WsError::Utf8(_) => InEnd::Refused(CloseCode::Invalid, "invalid UTF-8 in a text message".into()),
        WsError::Protocol(_) => InEnd::Refused(CloseCode::Protocol, "protocol error".into()),
        other => InEnd::Error(other),
    }
}

#[cfg(test)]
mod tests {
    //! Both pumps in memory: `tokio::io::duplex` or a recording writer for the program's
    //! side, a channel-backed sink or a stream of messages for the client's. The paused
    //! clock makes "nothing more happens" checkable without real waiting: time only moves
    //! when every task is blocked.
    use std::sync::Arc;
    use std::task::Context;

    use tokio::io::AsyncReadExt;

    use super::*;

    type Sent = mpsc::Receiver<Message>;

    /// Every await of a test is bounded: a pump that hangs fails the test. (Under the
    /// paused clock the bound passes at once when every task waits.)
    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("timed out")
    }

    /// A message sink that holds `capacity` messages until the test takes them.
    fn channel_sink(capacity: usize) -> (Pin<Box<impl Sink<Message, Error = WsError>>>, Sent) {
        let (tx, rx) = mpsc::channel(capacity);
        let sink = futures_util::sink::unfold(tx, |tx, m: Message| async move {
            tx.send(m).await.map_err(|_| WsError::ConnectionClosed)?;
            Ok::<_, WsError>(tx)
        });
        (Box::pin(sink), rx)
    }

    fn texts(rx: &mut Sent) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(m.into_text().expect("a text message").to_string());
        }
        out
    }

    /// The program's stdin: records every write; after `fail_after` writes it is closed.
    #[derive(Default)]
    struct Stdin {
        writes: Vec<Vec<u8>>,
        fail_after: Option<usize>,
    }

    impl AsyncWrite for Stdin {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            if self.fail_after.is_some_and(|n| self.writes.len() > n) {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn pump_in_all(msgs: Vec<Result<Message, WsError>>, stdin: &mut Stdin) -> (InEnd, Counters) {
        let counters = Counters::default();
        let mut stream = futures_util::stream::iter(msgs);
        let end = pump_in(&mut stream, stdin, Framing::Line, None, &counters).await;
        (end, counters)
    }

    #[tokio::test]
    async fn output_lines_become_messages_and_the_final_partial_line_too() {
        let (mut out, mut program) = tokio::io::duplex(1024);
        within(program.write_all(b"one\r\ntwo\n\nlast")).await.expect("write");
        drop(program);
        let (mut sink, mut rx) = channel_sink(16);
        let counters = Counters::default();
        let end = within(pump_out(
            &mut out,
            &mut sink,
            Framing::Line,
            1024,
            None,
            None,
            &counters,
        ))
        .await;
        assert!(matches!(end, OutEnd::Eof), "{end:?}");
        assert_eq!(texts(&mut rx), ["one", "two", "", "last"]);
        assert_eq!((counters.messages(), counters.bytes()), (4, 10));
    }

    #[tokio::test]
    async fn long_output_lines_go_out_in_pieces_at_character_boundaries() {
        let (mut out, mut program) = tokio::io::duplex(1024);
        within(program.write_all("abcdé\n".as_bytes())).await.expect("write");
        drop(program);
        let (mut sink, mut rx) = channel_sink(16);
        let end = within(pump_out(
            &mut out,
            &mut sink,
            Framing::Line,
            5,
            None,
            None,
            &Counters::default(),
        ))
        .await;
        assert!(matches!(end, OutEnd::Eof), "{end:?}");
        assert_eq!(texts(&mut rx), ["abcd", "é"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_stops_the_output_pump_reading() {
        let (mut out, mut program) = tokio::io::duplex(4096);
        let (mut sink, mut rx) = channel_sink(1);
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let pump =
            tokio::spawn(async move { pump_out(&mut out, &mut sink, Framing::Line, 1024, None, None, &c).await });
        let line: Vec<u8> = [vec![b'x'; 99], vec![b'\n']].concat();
        let writer = tokio::spawn(async move {
            program.write_all(&line.repeat(1000)).await.expect("write");
        });
        // Nobody takes messages: a minute later (of paused time, which only passes while
        // every task waits) the program is still blocked on its full pipe.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!writer.is_finished(), "the program's writes did not block");
        let held = counters.messages();
        assert!(held < 100, "{held} of 1000 lines were taken from the program meanwhile");
        // Once the client reads, every line arrives, in order, and the pump ends.
        let got = within(async {
            let mut got = 0;
            while let Some(m) = rx.recv().await {
                assert_eq!(m.into_text().expect("text").len(), 99);
                got += 1;
            }
            got
        })
        .await;
        assert_eq!(got, 1000);
        assert!(matches!(within(pump).await.expect("pump"), OutEnd::Eof));
        within(writer).await.expect("writer");
    }

    #[tokio::test]
    async fn messages_already_received_reach_the_program_in_one_write() {
        let msgs = ["a", "b", "c"].map(|t| Ok(Message::text(t))).into_iter();
        let mut stdin = Stdin::default();
        let (end, counters) = within(pump_in_all(
            msgs.chain([Ok(Message::Close(None))]).collect(),
            &mut stdin,
        ))
        .await;
        assert!(matches!(end, InEnd::Closed(None)), "{end:?}");
        assert_eq!(stdin.writes, [b"a\nb\nc\n".to_vec()]);
        assert_eq!(counters.messages(), 3);
    }

    #[tokio::test]
    async fn broken_client_messages_end_with_their_close_codes() {
        let mut stdin = Stdin::default();
        let (end, _) = within(pump_in_all(
            vec![Ok(Message::text("ok")), Ok(Message::binary(vec![1u8]))],
            &mut stdin,
        ))
        .await;
        assert!(matches!(end, InEnd::Refused(CloseCode::Unsupported, _)), "{end:?}");
        assert_eq!(stdin.writes, [b"ok\n".to_vec()], "what came before is delivered");
        let too_big = WsError::Capacity(CapacityError::MessageTooLong { size: 10, max_size: 5 });
        let (end, _) = within(pump_in_all(vec![Err(too_big)], &mut Stdin::default())).await;
        assert!(matches!(end, InEnd::Refused(CloseCode::Size, _)), "{end:?}");
        let (end, _) = within(pump_in_all(
            vec![Err(WsError::Utf8("bad".into()))],
            &mut Stdin::default(),
        ))
        .await;
        assert!(matches!(end, InEnd::Refused(CloseCode::Invalid, _)), "{end:?}");
        let (end, _) = within(pump_in_all(vec![Ok(Message::text("x"))], &mut Stdin::default())).await;
        assert!(matches!(end, InEnd::Gone), "{end:?}");
    }

    #[tokio::test]
    async fn after_the_program_closes_stdin_messages_are_discarded_until_the_close() {
        let (tx, rx) = mpsc::channel::<Result<Message, WsError>>(8);
        let mut stream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        }));
        let mut stdin = Stdin {
            fail_after: Some(0),
            ..Stdin::default()
        };
        let counters = Counters::default();
        within(tx.send(Ok(Message::text("first")))).await.expect("send");
        let feed = async {
            // Sent only once the pump has tried (and failed) to write the first.
            tokio::task::yield_now().await;
            for m in ["second", "third"] {
                tx.send(Ok(Message::text(m))).await.expect("send");
            }
            tx.send(Ok(Message::Close(None))).await.expect("send");
        };
        let (end, ()) =
            within(async { tokio::join!(pump_in(&mut stream, &mut stdin, Framing::Line, None, &counters), feed) })
                .await;
        assert!(matches!(end, InEnd::Closed(None)), "{end:?}");
        assert_eq!(stdin.writes, [b"first\n".to_vec()], "nothing written after the failure");
        assert_eq!(counters.messages(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_program_that_does_not_read_leaves_the_socket_unread_past_a_bound() {
        let pulled = Arc::new(AtomicU64::new(0));
        let p = Arc::clone(&pulled);
        let mut stream = futures_util::stream::repeat_with(move || {
            p.fetch_add(1, Ordering::Relaxed);
            Ok(Message::text("x".repeat(1023)))
        });
        let (mut program, stdin) = tokio::io::duplex(1024);
        let pump = tokio::spawn(async move {
            let counters = Counters::default();
            pump_in(&mut stream, stdin, Framing::Line, None, &counters).await
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        let held = pulled.load(Ordering::Relaxed) as usize * 1024;
        assert!(
            held <= STDIN_BATCH + HOLD_LIMIT + 2 * 1024,
            "{held} bytes taken from a client whose program reads nothing"
        );
        // The program reads again: the pump goes on.
        let mut buf = vec![0u8; 64 * 1024];
        within(program.read_exact(&mut buf)).await.expect("read");
        assert!(!pump.is_finished());
        pump.abort();
    }
}
