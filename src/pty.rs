//! `--pty`: a pseudo-terminal for the program, and the master side as a non-blocking
//! tokio reader and writer that [`crate::relay`] pumps like pipes.
//!
//! Both ends are opened close-on-exec (`posix_openpt` with `O_CLOEXEC`, not `openpty`,
//! whose descriptors could leak into a program another session starts at the same
//! moment). The terminal starts with echo off and the requested window size.
//!
//! Two terminal facts shape the wrapper: reading the master after every program-side
//! descriptor is closed fails with `EIO` on Linux, which here means end of output; and
//! closing the master would hang the program up (SIGHUP), so the end of the client's
//! input is the terminal's EOF character (Ctrl-D, sent when the [`Writer`] is dropped)
//! instead.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The terminal's EOF character (VEOF's default, Ctrl-D).
const EOF_CHAR: u8 = 0x04;

/// Largest `?cols=` and `?rows=`.
const MAX_WINDOW: u16 = 1000;

/// The terminal's window, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    pub cols: u16,
    pub rows: u16,
}

impl Default for WinSize {
    fn default() -> Self {
        WinSize { cols: 80, rows: 24 }
    }
}

/// A `?cols=` or `?rows=` that is not a number from 1 to 1000 (the upgrade gets 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {key}={value}: must be a number from 1 to {MAX_WINDOW}")]
pub struct WinSizeError {
    key: &'static str,
    value: String,
}

impl WinSize {
    /// From a request's raw query: `cols=N` and `rows=M`, each 1..=1000; a missing one
    /// keeps the default (80x24). Other parameters are the program's business.
    pub fn from_query(query: Option<&str>) -> Result<Self, WinSizeError> {
        let mut size = WinSize::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (key, slot) = match k {
                "cols" => ("cols", &mut size.cols),
                "rows" => ("rows", &mut size.rows),
                _ => continue,
            };
            *slot = v
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=MAX_WINDOW).contains(n))
                .ok_or_else(|| WinSizeError {
                    key,
                    value: v.to_owned(),
                })?;
        }
        Ok(size)
    }
}

/// The master side: what the program prints comes out of `reader`, what is written to
/// `writer` is typed into the terminal. Each holds its own descriptor for the same
/// terminal.
pub struct Master {
    pub reader: Reader,
    pub writer: Writer,
}

/// Opens a terminal pair: the master (non-blocking, registered with tokio) and the
/// slave descriptor for the program.
pub fn open(size: WinSize) -> io::Result<(Master, OwnedFd)> {
    let master = cvt(
        // SAFETY: posix_openpt takes flags and returns a new descriptor or -1.
        unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) },
        "pty",
    )?;
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let fd = master.as_raw_fd();
    // SAFETY: grantpt takes a master descriptor, which `fd` is.
    cvt(unsafe { libc::grantpt(fd) }, "pty")?;
    // SAFETY: as above.
    cvt(unsafe { libc::unlockpt(fd) }, "pty")?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the buffer is writable for its whole length, which is what we pass; on
    // success it holds a NUL-terminated path.
    let rc = unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(annotate(io::Error::from_raw_os_error(rc), "pty"));
    }
    // SAFETY: ptsname_r succeeded, so `name` is NUL-terminated within its length.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    let slave = cvt(
        // SAFETY: a valid C string and flags; returns a new descriptor or -1.
        unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) },
        "pty slave",
    )?;
    // SAFETY: just returned to us, owned by nothing else.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    configure(&slave, size)?;
    // O_NONBLOCK is on the open file description, so the dup below shares it.
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own only change its status flags.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL), "pty")?;
        cvt(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK), "pty")?;
    }
    let dup = master.try_clone()?;
    Ok((
        Master {
            reader: Reader(register(master)?),
            writer: Writer(register(dup)?),
        },
        slave,
    ))
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: OwnedFd always returns the descriptor it owns, which stays open until the
    // AsyncFd (its only owner) is dropped.
    unsafe { AsyncFd::register(fd) }.map_err(Into::into)
}

/// Echo off, and the window size.
fn configure(slave: &OwnedFd, size: WinSize) -> io::Result<()> {
    let fd = slave.as_raw_fd();
    let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills the termios it is given when it returns 0.
    cvt(unsafe { libc::tcgetattr(fd, t.as_mut_ptr()) }, "pty settings")?;
    // SAFETY: initialized by the successful tcgetattr above.
    let mut t = unsafe { t.assume_init() };
    t.c_lflag &= !(libc::ECHO | libc::ECHONL);
    // SAFETY: a valid termios for a terminal descriptor we own.
    cvt(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) }, "pty settings")?;
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) }, "pty window size")?;
    Ok(())
}

fn cvt(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(annotate(io::Error::last_os_error(), what))
    } else {
        Ok(rc)
    }
}

fn annotate(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("cannot set up the {what}: {e}"))
}

/// The program's output. `EIO` (the program's side is closed) reads as end of file.
pub struct Reader(AsyncFd<OwnedFd>);

impl AsyncRead for Reader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            // SAFETY: only read(2) writes into the unfilled part, and only the `n` bytes it
            // reports are marked initialized below.
            let unfilled = unsafe { buf.unfilled_mut() };
            let res = guard.try_io(|fd| {
                // SAFETY: reads at most `unfilled.len()` bytes into memory we borrow mutably.
                let n = unsafe { libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    // SAFETY: read(2) initialized these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Typing into the terminal. Dropping it types the EOF character (Ctrl-D) instead of
/// closing, so a program reading its input sees end of file and is not hung up.
pub struct Writer(AsyncFd<OwnedFd>);

impl AsyncWrite for Writer {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            // SAFETY: writes at most `data.len()` bytes from memory we borrow.
            match guard.try_io(|fd| {
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => return Poll::Ready(Ok(n)),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Best effort and non-blocking: a full terminal or a program already gone just
        // loses the EOF, and the stop ladder follows either way.
        // SAFETY: writes one byte from a local to a descriptor we own.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), [EOF_CHAR].as_ptr().cast(), 1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_size_is_bounded() {
        assert_eq!(WinSize::from_query(None).unwrap(), WinSize { cols: 80, rows: 24 });
        assert_eq!(
            WinSize::from_query(Some("a=1&rows=40&cols=100")).unwrap(),
            WinSize { cols: 100, rows: 40 }
        );
        for bad in ["rows=0", "cols=1001", "rows=x", "cols"] {
            assert!(WinSize::from_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
