//! The program's stdin and stdout pipes, grown when large messages pass through them.
//!
//! A Linux pipe holds 64 KiB. A message larger than that crosses it in pieces, with a
//! wakeup of the program and of wsbridge for each piece; a larger pipe moves it in fewer
//! (the echo of 64 KiB messages through `cat` moves about a tenth more MB/s with 256 KiB
//! pipes; see BENCHMARKS.md). Growing every pipe up front would cost every connection
//! kernel memory it rarely needs, and pipe pages are charged per user: past
//! `/proc/sys/fs/pipe-user-pages-soft` (16,384 pages) every new pipe of an unprivileged
//! user is created with 2 pages, slowing every program started after that.
//!
//! So a pipe grows only when traffic shows it is too small: a write to the program
//! larger than its stdin pipe, or a read that found its stdout pipe full. It then grows
//! once to [`GROWN`], if the process-wide budget (an eighth of the soft limit) has the
//! pages; they go back to the budget when wsbridge drops its end. A grown pipe holds
//! only as much kernel memory as the data in it: pages are allocated as data is written
//! and freed as it is read, so up to 256 KiB while it is full. (The kernel charges the
//! pages until both ends are closed: a descendant of the program that outlives the
//! session's process-group kill and keeps the pipe open keeps them charged.)
//!
//! [`Growing`] wraps any pipe end and passes every read and write through, so the relay
//! stays generic over its streams.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The size a pipe grows to. Unprivileged processes may set up to
/// `/proc/sys/fs/pipe-max-size` (1 MiB by default).
pub const GROWN: usize = 256 * 1024;

/// The share of `pipe-user-pages-soft` that grown pipes may take, as a divisor.
const BUDGET_SHARE: usize = 8;

/// Pages of the budget that grown pipes hold now.
static USED: AtomicUsize = AtomicUsize::new(0);

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf only reads a system constant.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    })
}

/// The budget in pages: an eighth of the per-user soft limit (of its default, 16,384
/// pages, where the limit is off or unreadable).
pub fn budget_pages() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let soft = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(16_384);
        soft / BUDGET_SHARE
    })
}

/// Pages of the budget held by grown pipes right now.
pub fn used_pages() -> usize {
    USED.load(Ordering::Relaxed)
}

/// Takes `pages` from the budget of `limit` pages, or nothing if they are not all there.
fn take(pages: usize, limit: usize) -> bool {
    USED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
        used.checked_add(pages).filter(|&total| total <= limit)
    })
    .is_ok()
}

fn give(pages: usize) {
    USED.fetch_sub(pages, Ordering::AcqRel);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn pipe_size(fd: RawFd) -> Option<usize> {
    // SAFETY: F_GETPIPE_SZ only reads the size of the pipe behind a descriptor we own.
    let n = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    (n > 0).then_some(n as usize)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_pipe_size(fd: RawFd, size: usize) -> io::Result<usize> {
    // SAFETY: F_SETPIPE_SZ only resizes the pipe behind a descriptor we own; growing
    // never drops data.
    match unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size as libc::c_int) } {
        n if n > 0 => Ok(n as usize),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn pipe_size(_fd: RawFd) -> Option<usize> {
    None
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_pipe_size(_fd: RawFd, _size: usize) -> io::Result<usize> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// A pipe end that grows its pipe to [`GROWN`] the first time traffic shows the pipe is
/// too small. Reads and writes pass through unchanged.
pub struct Growing<T> {
    io: T,
    fd: RawFd,
    /// The pipe's size now; `usize::MAX` once it has grown or cannot grow.
    size: usize,
    /// Budget pages this pipe holds.
    held: usize,
}

impl<T: AsRawFd> Growing<T> {
    pub fn new(io: T) -> Self {
        let fd = io.as_raw_fd();
        // A size we cannot read (not a pipe) or already at least GROWN: never grow.
        let size = pipe_size(fd).filter(|&s| s < GROWN).unwrap_or(usize::MAX);
        Growing { io, fd, size, held: 0 }
    }
}

impl<T> Growing<T> {
    /// The pipe's size as this end last knew it: `None` once grown or never to grow.
    pub fn size(&self) -> Option<usize> {
        (self.size != usize::MAX).then_some(self.size)
    }

    fn grow(&mut self) {
        let pages = (GROWN - self.size).div_ceil(page_size());
        let old = std::mem::replace(&mut self.size, usize::MAX);
        if !take(pages, budget_pages()) {
            tracing::debug!(size = old, "pipe budget spent; the program's pipe keeps its size");
            return;
        }
        match set_pipe_size(self.fd, GROWN) {
            Ok(size) => {
                self.held = pages;
                tracing::trace!(from = old, to = size, "grew the program's pipe");
            }
            Err(e) => {
                give(pages);
                tracing::debug!(error = %e, "could not grow the program's pipe");
            }
        }
    }
}

impl<T> Drop for Growing<T> {
    fn drop(&mut self) {
        if self.held > 0 {
            give(self.held);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Growing<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        // A read that took the pipe's whole size found it full: the program was
        // waiting on us.
        if buf.filled().len() - before >= self.size {
            self.grow();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Growing<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.len() > self.size {
            self.grow();
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::unix::pipe;

    const T: std::time::Duration = std::time::Duration::from_secs(10);

    fn pair() -> (pipe::Sender, pipe::Receiver) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (
            pipe::Sender::from_owned_fd(w).unwrap(),
            pipe::Receiver::from_owned_fd(r).unwrap(),
        )
    }

    // One test, because the budget is process-wide and tests run in parallel.
    #[tokio::test]
    async fn grows_on_large_transfers_only_and_returns_its_budget() {
        let default = {
            let (w, _r) = pair();
            pipe_size(w.as_raw_fd()).unwrap()
        };
        assert!(default < GROWN, "this kernel's pipes are already {default} bytes");
        let start = used_pages();

        // Small writes leave the pipe alone. (Only one end of a pipe is ever wrapped:
        // the budget is counted per end.)
        let (w, mut r) = pair();
        let mut w = Growing::new(w);
        let mut got = vec![0u8; 10];
        tokio::time::timeout(T, w.write_all(b"0123456789"))
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(T, r.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(pipe_size(w.fd), Some(default));
        assert_eq!(w.size(), Some(default));

        // A write larger than the pipe grows it first, so it fits in one go.
        let big = vec![7u8; default + 1];
        tokio::time::timeout(T, w.write_all(&big)).await.unwrap().unwrap();
        assert_eq!(pipe_size(w.fd), Some(GROWN));
        let held = (GROWN - default).div_ceil(page_size());
        assert_eq!(used_pages(), start + held);
        let mut got = vec![0u8; default + 1];
        tokio::time::timeout(T, r.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, big);
        drop(w);
        assert_eq!(used_pages(), start, "budget returned when the end is dropped");

        // The reader side grows a pipe that a writer filled.
        let (w, r) = pair();
        let mut r = Growing::new(r);
        let mut w = w;
        let full = vec![1u8; default];
        tokio::time::timeout(T, w.write_all(&full)).await.unwrap().unwrap();
        let mut got = vec![0u8; default];
        tokio::time::timeout(T, r.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(pipe_size(r.fd), Some(GROWN));
        assert_eq!(used_pages(), start + held);
        drop(r);
        assert_eq!(used_pages(), start);

        // With the budget spent a pipe keeps its size, and stops asking.
        let (w, _r) = pair();
        let mut w = Growing::new(w);
        assert!(take(budget_pages() - used_pages(), budget_pages()));
        let spent = used_pages();
        w.grow();
        assert_eq!(pipe_size(w.fd), Some(default));
        assert_eq!(w.size(), None);
        assert_eq!(used_pages(), spent);
        give(spent - start);
    }
}
