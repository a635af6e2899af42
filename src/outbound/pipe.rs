//! Pipe mode of `--connect` (no PROGRAM): wsbridge's own stdin and stdout as the
//! program's side of the session, each served by a thread of its own, kept across
//! reconnects so that nothing read ahead is lost. It owns those two streams, not the
//! session that relays them ([`crate::session`]).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, PollSender};

/// Pipe mode: wsbridge's own stdin and stdout, kept across reconnects so nothing read
/// ahead is lost between sessions.
pub(super) struct Pipes {
    pub(super) stdin: Stdin,
    pub(super) stdout: Stdout,
}

impl Pipes {
    /// `stdout_closed` is cancelled when stdout can no longer be written.
    pub(super) fn new(stdout_closed: CancellationToken) -> Self {
        Pipes {
            stdin: Stdin::new(),
            stdout: Stdout::new(stdout_closed),
        }
    }

    /// Waits until everything queued for stdout is written.
    pub(super) async fn finish(self) {
        let Pipes { stdin, stdout } = self;
        drop(stdin); // its thread may be blocked in read(2); it ends with the process
        let Stdout { tx, thread } = stdout;
        drop(tx);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Our stdin, read by a thread of its own (a blocking read cannot be cancelled, and stdin
/// may be a terminal or a file, which epoll cannot watch), noting EOF: pipe mode does not
/// reconnect once it is reached. Chunks read ahead wait in a small bounded queue.
pub(super) struct Stdin {
    rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Part of a chunk not yet returned.
    rest: Vec<u8>,
    pub(super) eof: bool,
}

impl Stdin {
    fn new() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut input = std::io::stdin().lock();
            let mut buf = vec![0u8; crate::relay::READ_CHUNK];
            loop {
                let chunk = match input.read(&mut buf) {
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let done = !matches!(&chunk, Ok(c) if !c.is_empty());
                if tx.blocking_send(chunk).is_err() || done {
                    return;
                }
            }
        });
        Stdin {
            rx,
            rest: Vec::new(),
            eof: false,
        }
    }
}

impl AsyncRead for Stdin {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.rest.is_empty() && !self.eof {
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(chunk)) if !chunk.is_empty() => self.rest = chunk,
                Some(Err(e)) => {
                    self.eof = true;
                    return Poll::Ready(Err(e));
                }
                _ => self.eof = true,
            }
        }
        let n = self.rest.len().min(buf.remaining());
        buf.put_slice(&self.rest[..n]);
        self.rest.drain(..n);
        Poll::Ready(Ok(()))
    }
}

/// Our stdout, written and flushed by a thread of its own, so every message reaches it at
/// once (std's stdout is line-buffered, which would hold back binary data) and a blocked
/// stdout never blocks the runtime. The queue is bounded: a stdout that is not read pushes
/// back on the socket like a program's stdin does.
pub(super) struct Stdout {
    tx: PollSender<Vec<u8>>,
    thread: std::thread::JoinHandle<()>,
}

impl Stdout {
    fn new(closed: CancellationToken) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let thread = std::thread::spawn(move || {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = out.write_all(&chunk).and_then(|()| out.flush()) {
                    // Nobody reads what the server sends any more: end the session.
                    tracing::info!(target: "wsbridge::outbound", error = %e, "stdout is closed; closing the connection");
                    closed.cancel();
                    return; // later writes fail like a closed pipe
                }
            }
        });
        Stdout {
            tx: PollSender::new(tx),
            thread,
        }
    }
}

impl AsyncWrite for Stdout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "stdout is closed");
        ready!(self.tx.poll_reserve(cx)).map_err(|_| closed())?;
        self.tx.send_item(buf.to_vec()).map_err(|_| closed())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
