//! Starting the program for one connection and watching it: argv, environment, pipes, its
//! own process group, exit notification, group signals, reaping, and logging what it
//! writes to stderr ([`log_stderr`], for sessions, `--shared` and CGI alike). Knows
//! nothing of WebSockets.
//!
//! Spawning uses std's `posix_spawn` fast path (no `pre_exec`; the program path always
//! contains a `/`; the process group is set through `POSIX_SPAWN_SETPGROUP`), so the cost
//! does not grow with the server's memory. All of wsbridge's own descriptors are
//! close-on-exec, so the program sees only 0, 1 and 2. `--pty` ([`spawn_pty`]) is the
//! exception: the terminal must become the program's controlling terminal in a new
//! session, which needs `pre_exec`, so std forks and execs. So does a [`Pinned`] program
//! (`--cgidir`, `--dir`): it is executed from the descriptor that was checked.
//!
//! The exit is observed without reaping (a pidfd on Linux ≥ 5.3, else `SIGCHLD` plus
//! `waitid(WNOWAIT)`), so the exited leader stays a zombie until [`Child::reap`]. While it
//! is a zombie its pid, which is also the process group id, cannot be reused, so a signal
//! to the group can never hit an unrelated process.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio as StdStdio};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use crate::framing::LineFramer;
use crate::relay::read_chunk;
use crate::text::Escaped;

/// Longest stderr line logged as one line; longer ones are logged in pieces.
pub const MAX_STDERR_LINE: usize = 4096;

/// What to run.
pub struct Spec<'a> {
    /// `argv[0]`: the name as the user gave it (what websocketd passes too).
    pub name: &'a std::ffi::OsStr,
    pub program: &'a Path,
    pub args: &'a [OsString],
    /// The complete environment (nothing is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; `None` keeps wsbridge's. (Setting one makes std fork+exec
    /// instead of posix_spawn on glibc before 2.29; CGI scripts use it.)
    pub cwd: Option<&'a Path>,
    /// Run exactly this directory entry instead of looking `program` up by path
    /// (`--cgidir` and `--dir`, see [`crate::route`]).
    pub pinned: Option<Pinned<'a>>,
}

/// A program pinned to the file that was checked: the descriptor [`crate::route`]
/// opened is executed itself (`execveat(fd, "", AT_EMPTY_PATH)`, as `fexecve`), so no
/// path is looked up again between the check and the exec. This needs `pre_exec`, so
/// std forks.
///
/// A `#!` script's interpreter opens the script again by the name the kernel gives it,
/// which for a descriptor is `/dev/fd/N`: the same file, never a swapped one. So the
/// descriptor stays open in the program (only there), and a script's `$0` is `/dev/fd/N`
/// (its real path is in `SCRIPT_FILENAME`). Running by path would let a symlink swapped
/// in after the check pick what the interpreter reads.
#[derive(Clone, Copy)]
pub struct Pinned<'a> {
    /// The program, opened (`O_PATH` is enough).
    pub file: std::os::fd::BorrowedFd<'a>,
    /// Working directory, entered by descriptor (CGI: the script's own directory).
    pub cwd: Option<std::os::fd::BorrowedFd<'a>>,
}

/// Everything the forked child needs to exec a [`Pinned`] program, built before the
/// fork: after it only async-signal-safe calls are allowed, no allocation.
struct PinnedExec {
    file: std::os::fd::RawFd,
    cwd: Option<std::os::fd::RawFd>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Owns what `argv` and `envp` point into.
    _strings: Vec<CString>,
}

// SAFETY: the pointers point into `_strings`, owned by the same value and never changed.
unsafe impl Send for PinnedExec {}
// SAFETY: as above; the child only reads them.
unsafe impl Sync for PinnedExec {}

impl PinnedExec {
    fn new(
        p: Pinned<'_>,
        argv0: &std::ffi::OsStr,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let c = |b: &[u8]| CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"));
        let mut strings = Vec::with_capacity(1 + args.len() + env.len());
        strings.push(c(argv0.as_bytes())?);
        for a in args {
            strings.push(c(a.as_bytes())?);
        }
        for (k, v) in env {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            strings.push(c(&kv)?);
        }
        let ptrs = |s: &[CString]| s.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect();
        Ok(PinnedExec {
            file: p.file.as_raw_fd(),
            cwd: p.cwd.map(|d| d.as_raw_fd()),
            argv: ptrs(&strings[..1 + args.len()]),
            envp: ptrs(&strings[1 + args.len()..]),
            _strings: strings,
        })
    }

    /// In the forked child: execs the descriptor. Returns only on failure.
    ///
    /// # Safety
    /// Call only in a forked child before exec (it changes the working directory and
    /// descriptor flags of the calling process).
    unsafe fn exec(&self) -> io::Error {
        if let Some(dir) = self.cwd {
            if libc::fchdir(dir) < 0 {
                return io::Error::last_os_error();
            }
        }
        // The child's copy only: a `#!` interpreter reads the script through it.
        if libc::fcntl(self.file, libc::F_SETFD, 0) < 0 {
            return io::Error::last_os_error();
        }
        libc::syscall(
            libc::SYS_execveat,
            self.file,
            c"".as_ptr(),
            self.argv.as_ptr(),
            self.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        io::Error::last_os_error()
    }
}

/// Makes `cmd` exec the pinned entry (after std's own child setup and any earlier
/// `pre_exec`), or fail to spawn.
fn pin(cmd: &mut Command, spec: &Spec<'_>) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let Some(p) = spec.pinned else { return Ok(()) };
    let plan = PinnedExec::new(p, spec.name, spec.args, &spec.env)?;
    // SAFETY: `exec` makes only async-signal-safe calls (fchdir, fcntl, execveat) on
    // data built before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || Err(plan.exec()));
    }
    Ok(())
}

/// The program's standard streams, non-blocking and registered with tokio.
pub struct Stdio {
    pub stdin: pipe::Sender,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

/// A running (or exited but not yet reaped) program, leader of its own process group.
pub struct Child {
    inner: std::process::Child,
    watch: ExitWatch,
    reaped: bool,
}

enum ExitWatch {
    Pidfd(AsyncFd<OwnedFd>),
    Sigchld(tokio::signal::unix::Signal),
}

/// Starts the program with piped stdio in a new process group.
pub fn spawn(spec: Spec<'_>) -> io::Result<(Child, Stdio)> {
    use std::os::unix::process::CommandExt;
    let mut cmd = command(&spec);
    cmd.stdin(StdStdio::piped())
        .stdout(StdStdio::piped())
        .stderr(StdStdio::piped())
        .process_group(0);
    pin(&mut cmd, &spec)?;
    let inner = cmd.spawn()?;
    let mut child = manage(inner)?;
    let stdio = child.take_stdio()?;
    Ok((child, stdio))
}

/// The command for `spec`, without its stdio.
fn command(spec: &Spec<'_>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(spec.program);
    // A pinned program with a working directory enters it by descriptor instead.
    if let Some(dir) = spec.cwd.filter(|_| spec.pinned.is_none_or(|p| p.cwd.is_none())) {
        cmd.current_dir(dir);
    }
    cmd.arg0(spec.name)
        .args(spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Marks every descriptor above 2 close-on-exec. Call once at startup: descriptors
/// wsbridge inherited without that flag (from a leaky shell or supervisor) would
/// otherwise reach every program it starts. Its own are opened close-on-exec already.
pub fn protect_inherited_fds() {
    // SAFETY: close_range only changes descriptor flags; a kernel without it (before
    // 5.11) returns an error and we fall back to doing it one descriptor at a time.
    let done = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } == 0;
    if done {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for fd in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        if fd > 2 {
            // SAFETY: F_GETFD/F_SETFD on a descriptor number only change its flags; a
            // number that is no longer open just fails.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
}

/// Set `WSBRIDGE_NO_PIDFD=1` to use the `SIGCHLD` path even where pidfds exist, as on
/// kernels older than 5.3 (common on small boards); the tests use it to cover that path.
fn pidfd_disabled() -> bool {
    static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DISABLED.get_or_init(|| std::env::var_os("WSBRIDGE_NO_PIDFD").is_some_and(|v| v == "1"))
}

/// Starts watching a just-spawned process for its exit. Without a way to see it exit we
/// cannot manage it, so on failure it is killed and reaped rather than left running.
fn manage(mut inner: std::process::Child) -> io::Result<Child> {
    match watch_exit(inner.id()) {
        Ok(watch) => Ok(Child {
            inner,
            watch,
            reaped: false,
        }),
        Err(e) => {
            let _ = inner.kill();
            let _ = inner.wait();
            Err(e)
        }
    }
}

fn watch_exit(pid: u32) -> io::Result<ExitWatch> {
    if pidfd_disabled() {
        return sigchld_watch();
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd >= 0 {
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: OwnedFd always returns the descriptor it owns, which stays open until
        // the AsyncFd (its only owner) is dropped.
        let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        return registered.map(ExitWatch::Pidfd).map_err(|e| e.into());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EPERM) => sigchld_watch(),
        _ => Err(err),
    }
}

fn sigchld_watch() -> io::Result<ExitWatch> {
    let sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    Ok(ExitWatch::Sigchld(sig))
}

impl Child {
    fn take_stdio(&mut self) -> io::Result<Stdio> {
        let missing = || io::Error::other("child pipe missing");
        let stdin = self.inner.stdin.take().ok_or_else(missing)?;
        let stdout = self.inner.stdout.take().ok_or_else(missing)?;
        let stderr = self.inner.stderr.take().ok_or_else(missing)?;
        Ok(Stdio {
            stdin: pipe::Sender::from_owned_fd(OwnedFd::from(stdin))?,
            stdout: pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))?,
            stderr: pipe::Receiver::from_owned_fd(OwnedFd::from(stderr))?,
        })
    }

    /// The program's pid (also its process group id).
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.inner.id() as i32)
    }

    /// Resolves once the program has exited. It is not reaped, so this can be awaited
    /// again, and dropping the future loses nothing.
    pub async fn exited(&mut self) {
        let pid = self.pid();
        match &mut self.watch {
            ExitWatch::Pidfd(fd) => {
                // Readable means exited; the readiness is never cleared, so later calls
                // return at once.
                let _ = fd.readable().await;
            }
            ExitWatch::Sigchld(sig) => loop {
                if has_exited(pid) {
                    return;
                }
                sig.recv().await;
            },
        }
    }

    /// Sends `sig` to the program's whole process group; a group that is already gone is
    /// not an error.
    pub fn signal_group(&self, sig: Signal) {
        if !self.reaped {
            let _ = killpg(self.pid(), sig);
        }
    }

    /// Collects the exit status of a program that has exited (after [`Child::exited`]).
    pub fn reap(mut self) -> io::Result<ExitStatus> {
        let status = self.inner.wait();
        self.reaped = true;
        status
    }
}

fn has_exited(pid: Pid) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(
        waitid(Id::Pid(pid), flags),
        Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR)
    )
}

impl Drop for Child {
    /// A child dropped without being reaped (an error path) is killed with its group and
    /// reaped off the async threads, so it can neither outlive us nor stay a zombie.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let pid = self.inner.id();
        if let Ok(Some(_)) = self.inner.try_wait() {
            return;
        }
        let res = std::thread::Builder::new().name("wsbridge-reap".into()).spawn(move || {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None);
        });
        if let Err(e) = res {
            tracing::error!(pid, error = %e, "cannot start a thread to reap the program");
        }
    }
}

/// Describes how a program ended, for logs and Close reasons: `exit status 3`,
/// `killed by signal SIGTERM`.
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => "ended".to_owned(),
    }
}

/// How a program ended, for the `exit=` field of access lines: the exit code (`3`), the
/// signal's name (`SIGTERM`), or `unknown` when it could not be waited for.
pub fn exit_field(status: &io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let Ok(status) = status else {
        return "unknown".to_owned();
    };
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => s.as_str().to_owned(),
            Err(_) => format!("signal {sig}"),
        },
        _ => "unknown".to_owned(),
    }
}

/// Starts the program on a new pseudo-terminal (`--pty`): the terminal is its stdin,
/// stdout and stderr and its controlling terminal, in a new session (so its pid is also
/// its process group, as with [`spawn`]). Echo is off; the window is `size`.
///
/// This needs `pre_exec` (setsid + TIOCSCTTY), so std forks and execs instead of using
/// posix_spawn; the normal path ([`spawn`]) is untouched.
pub fn spawn_pty(spec: Spec<'_>, size: crate::pty::WinSize) -> io::Result<(Child, crate::pty::Master)> {
    use std::os::unix::process::CommandExt;
    let (master, slave) = crate::pty::open(size)?;
    let mut cmd = command(&spec);
    cmd.stdin(StdStdio::from(slave.try_clone()?))
        .stdout(StdStdio::from(slave.try_clone()?))
        .stderr(StdStdio::from(slave));
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (setsid, ioctl); it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // fd 0 is the terminal (std set up stdio before this runs).
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    pin(&mut cmd, &spec)?;
    let inner = cmd.spawn()?;
    // The Command (and with it the parent's copies of the slave) is dropped here, so the
    // master reads EIO once the program's side is closed.
    drop(cmd);
    Ok((manage(inner)?, master))
}

/// Logs the program's stderr line by line (long lines in pieces, control characters
/// escaped), always reading, so it can never fill up and block the program; with
/// `to_client` (`--passstderr`) each line is also queued for the client, unescaped, which
/// then paces the program like stdout does.
pub async fn log_stderr(mut stderr: pipe::Receiver, mut to_client: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>) {
    let mut framer = LineFramer::new(MAX_STDERR_LINE);
    let mut lines = Vec::new();
    loop {
        let more = match read_chunk(&mut stderr).await {
            Ok(Some(chunk)) => {
                framer.push(chunk, &mut lines);
                true
            }
            Ok(None) | Err(_) => {
                framer.finish(&mut lines);
                false
            }
        };
        for line in lines.drain(..) {
            // Escaped for the log only: the client (--passstderr) gets the line as written.
            tracing::warn!(target: "wsbridge::stderr", line = %Escaped(&String::from_utf8_lossy(&line)));
            if let Some(tx) = &to_client {
                if tx.send(line).await.is_err() {
                    to_client = None; // the session's output side is done
                }
            }
        }
        if !more {
            return;
        }
    }
}
