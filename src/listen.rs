//! Listening sockets: binding TCP addresses, `--unixsocket` (a stale socket file is
//! replaced, a live one refused), `--redirport` listeners, and systemd socket activation
//! (`LISTEN_FDS`/`LISTEN_PID`). Knows nothing of HTTP; [`crate::server`] accepts on what
//! this returns.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::config::Serve;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;
/// More inherited sockets than this is surely a mistake in the unit file.
const MAX_LISTEN_FDS: usize = 64;

/// One listening socket and what it serves.
#[derive(Debug)]
pub enum Listener {
    /// WebSocket (and HTTP) over TCP; over TLS when the server has a certificate.
    Tcp(TcpListener),
    /// WebSocket (and HTTP) over a Unix socket; always plain (local clients, proxies).
    Unix(UnixListener),
    /// `--redirport`: every request is answered with 301 to the main port `to_port`.
    Redirect { listener: TcpListener, to_port: u16 },
    /// `--metrics`: Prometheus scrapes, plain HTTP.
    Metrics(TcpListener),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Listener::Tcp(l)
    }
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Self {
        Listener::Unix(l)
    }
}

impl Listener {
    /// The startup line for this listener, in its stable format:
    /// `listening on ws://ADDR/` (`wss://` over TLS), `listening on unix:PATH`,
    /// `redirecting http://ADDR/ to port N`, or `metrics on http://ADDR/metrics`.
    pub fn announcement(&self, tls: bool) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("listening on {}://{a}/", if tls { "wss" } else { "ws" }),
                Err(_) => "listening on an unknown TCP address".to_owned(),
            },
            Listener::Unix(l) => match l.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_owned)) {
                Some(p) => format!("listening on unix:{}", p.display()),
                None => "listening on an unnamed unix socket".to_owned(),
            },
            Listener::Redirect { listener, to_port } => match listener.local_addr() {
                Ok(a) => format!("redirecting http://{a}/ to port {to_port}"),
                Err(_) => format!("redirecting to port {to_port}"),
            },
            Listener::Metrics(l) => match l.local_addr() {
                Ok(a) => format!("metrics on http://{a}/metrics"),
                Err(_) => "metrics on an unknown TCP address".to_owned(),
            },
        }
    }
}

/// A listener that could not be bound or taken over from systemd: one line, for exit
/// status 3.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot read a listener's address: {0}")]
    LocalAddr(io::Error),
    #[error("cannot listen on {addr}: {cause}")]
    Tcp { addr: SocketAddr, cause: io::Error },
    #[error("cannot listen on unix:{}: {cause}", .path.display())]
    Unix { path: PathBuf, cause: io::Error },
    #[error("cannot listen on unix:{}: the file exists and is not a socket", .path.display())]
    UnixNotSocket { path: PathBuf },
    #[error("cannot listen on unix:{}: another server is answering there", .path.display())]
    UnixAnswered { path: PathBuf },
    #[error("cannot remove stale unix:{}: {cause}", .path.display())]
    UnixStale { path: PathBuf, cause: io::Error },
    #[error("invalid LISTEN_FDS={0}")]
    ListenFds(String),
    #[error("inherited descriptor {fd} (LISTEN_FDS) is not a socket: {cause}")]
    NotSocket { fd: RawFd, cause: io::Error },
    #[error("inherited descriptor {fd} (LISTEN_FDS) is not a listening stream socket")]
    NotListening { fd: RawFd },
    #[error("inherited descriptor {fd} (LISTEN_FDS) has unsupported address family {family}")]
    Family { fd: RawFd, family: i32 },
}

/// What [`bind`] made, plus the Unix socket file to remove at exit.
#[derive(Debug)]
pub struct Bound {
    pub listeners: Vec<Listener>,
    pub unix_socket: Option<SocketFile>,
}

/// A socket file this process created; [`SocketFile::remove`] deletes it only if it is
/// still the same file (another server may have replaced it since).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The `--metrics` listener, if asked for. Bound apart from [`bind`] because it is
/// bound even when systemd passes the main sockets. Errors are for exit status 3.
pub fn bind_metrics(config: &Serve) -> Result<Option<Listener>, ListenError> {
    let Some(addr) = config.metrics else { return Ok(None) };
    let listener = TcpListener::bind(addr).map_err(|cause| ListenError::Tcp { addr, cause })?;
    Ok(Some(Listener::Metrics(listener)))
}

/// Binds everything the configuration asks for. Errors are one line, for exit status 3.
pub fn bind(config: &Serve) -> Result<Bound, ListenError> {
    let mut listeners = Vec::new();
    if config.tcp {
        let tcp = bind_tcp(config)?;
        let mut redirects = Vec::new();
        if let Some(port) = config.redirect_port {
            for l in &tcp {
                let main = l.local_addr().map_err(ListenError::LocalAddr)?;
                let addr = SocketAddr::new(main.ip(), port);
                let listener = TcpListener::bind(addr).map_err(|cause| ListenError::Tcp { addr, cause })?;
                redirects.push(Listener::Redirect {
                    listener,
                    to_port: main.port(),
                });
            }
        }
        listeners.extend(tcp.into_iter().map(Listener::Tcp));
        listeners.extend(redirects);
    }
    let mut unix_socket = None;
    if let Some(path) = &config.unix_socket {
        let (l, file) = bind_unix(path)?;
        listeners.push(Listener::Unix(l));
        unix_socket = Some(file);
    }
    Ok(Bound { listeners, unix_socket })
}

fn bind_tcp(config: &Serve) -> Result<Vec<TcpListener>, ListenError> {
    let addrs = config.bind_addresses();
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match TcpListener::bind(addr) {
            Ok(l) => out.push(l),
            // No IPv6 on this host: the IPv4 wildcard still serves "all interfaces".
            Err(e) if config.addresses.is_empty() && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                let v4 = SocketAddr::from(([0, 0, 0, 0], config.port));
                out.push(TcpListener::bind(v4).map_err(|cause| ListenError::Tcp { addr: v4, cause })?);
            }
            Err(cause) => return Err(ListenError::Tcp { addr, cause }),
        }
    }
    Ok(out)
}

/// Binds a Unix socket at `path`. A socket file nobody answers on (left by a crash) is
/// replaced; one where a server answers, or a file that is not a socket, is refused.
pub fn bind_unix(path: &Path) -> Result<(UnixListener, SocketFile), ListenError> {
    let path_buf = || path.to_owned();
    let fail = |cause| ListenError::Unix {
        path: path_buf(),
        cause,
    };
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let meta = std::fs::symlink_metadata(path).map_err(fail)?;
            if !meta.file_type().is_socket() {
                return Err(ListenError::UnixNotSocket { path: path_buf() });
            }
            match UnixStream::connect(path) {
                Ok(_) => return Err(ListenError::UnixAnswered { path: path_buf() }),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale unix socket file");
                    std::fs::remove_file(path).map_err(|cause| ListenError::UnixStale {
                        path: path_buf(),
                        cause,
                    })?;
                    UnixListener::bind(path).map_err(fail)?
                }
                Err(e) => return Err(fail(e)),
            }
        }
        Err(e) => return Err(fail(e)),
    };
    let meta = std::fs::symlink_metadata(path).map_err(fail)?;
    Ok((
        listener,
        SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
    ))
}

/// systemd socket activation: the sockets passed as descriptors 3, 4, … when
/// `LISTEN_PID` is this process and `LISTEN_FDS` says how many. `Ok(None)` when not
/// activated. The variables (and `LISTEN_FDNAMES`) are removed either way, so nothing
/// started later inherits them. Call before any thread starts.
pub fn from_systemd() -> Result<Option<Vec<Listener>>, ListenError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // Edition 2021: safe; main calls this while the process has one thread.
        std::env::remove_var(name);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let n: usize = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| *n <= MAX_LISTEN_FDS)
        .ok_or_else(|| ListenError::ListenFds(fds.clone()))?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // i < MAX_LISTEN_FDS, so this cannot overflow.
        let fd = LISTEN_FDS_START + i as RawFd;
        out.push(inherited(fd)?);
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Takes ownership of inherited descriptor `fd`, which must be a listening stream socket.
fn inherited(fd: RawFd) -> Result<Listener, ListenError> {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage is a valid, large enough buffer and len says its size.
    let r = unsafe { libc::getsockname(fd, std::ptr::addr_of_mut!(storage).cast(), &mut len) };
    if r != 0 {
        return Err(ListenError::NotSocket {
            fd,
            cause: io::Error::last_os_error(),
        });
    }
    if !is_listening_stream(fd) {
        return Err(ListenError::NotListening { fd });
    }
    // SAFETY: fd is an open socket handed to this process by its parent, and nothing
    // else in the process owns it; from here on the listener does.
    match i32::from(storage.ss_family) {
        libc::AF_INET | libc::AF_INET6 => Ok(Listener::Tcp(unsafe { TcpListener::from_raw_fd(fd) })),
        libc::AF_UNIX => Ok(Listener::Unix(unsafe { UnixListener::from_raw_fd(fd) })),
        family => Err(ListenError::Family { fd, family }),
    }
}

fn is_listening_stream(fd: RawFd) -> bool {
    let get = |opt| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: v is a c_int and len its size, as getsockopt expects for these options.
        let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, std::ptr::addr_of_mut!(v).cast(), &mut len) };
        (r == 0).then_some(v)
    };
    get(libc::SO_TYPE) == Some(libc::SOCK_STREAM) && get(libc::SO_ACCEPTCONN) == Some(1)
}
