//! One WebSocket connection's life once the program is running: relay both directions,
//! notice the first ending (program output done, program exit, client close, ping
//! timeout, server shutdown), stop the program, send the right Close frame, and log one
//! summary line. The program's side is pipes, or with `--pty` one terminal (stderr merged
//! into the output): see [`ProgramIo`].
//!
//! Close codes: program exited 0 → 1000; any other exit → 1011 with `exit status N` or
//! `killed by signal NAME`; ping timeout and server shutdown → 1001; a client breaking a
//! rule → 1002/1003/1007/1009 from the relay. A client's own Close is echoed by the
//! protocol layer.
//!
//! The same code runs both sides ([`Side`]): `--connect` ([`crate::outbound`]) calls
//! [`run_with`] with the client role, and in its pipe mode without a program at all.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::pin::pin;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::child::{self, Child, Stdio};
use crate::config::{self, Program};
use crate::limit::{idle, Paced};
use crate::relay::{self, or_pending, Counters, InEnd, Liveness, OutEnd};
use crate::{pipesize, pty, reap, stats};

mod close;
mod summary;
pub use close::CLOSE_TIMEOUT;
pub(crate) use close::{close, close_for_exit, closing_for_idle, closing_for_input, closing_for_ping_timeout, Closing};
pub(crate) use summary::Summary;
pub use summary::{CloseSeen, EndedBy, Exchanged, Who};

/// After the program exits, how long its output may make no progress before the session
/// stops waiting for EOF.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// How long stderr may take to reach EOF once the program is gone.
const STDERR_DRAIN: Duration = Duration::from_millis(500);
/// `--passstderr` lines waiting for the output pump.
const STDERR_QUEUE: usize = 64;

/// The first thing that ended the relay.
enum Ending {
    Output(OutEnd),
    Input(InEnd),
    /// No frame from the client for two ping intervals.
    PingTimeout,
    /// `--idletimeout`: no message either way for that long.
    Idle,
    Shutdown,
}

/// What carries a WebSocket: an upgraded HTTP connection, TCP or TLS. Sessions take it
/// boxed ([`Socket`]), so the session and relay code is compiled once rather than once
/// per transport and program I/O (a virtual call per read or write, next to a syscall).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// A WebSocket over any [`Transport`].
pub type Socket = WebSocketStream<Box<dyn Transport>>;

/// The program's side of a session: its input, its output, and stderr when that is a
/// separate pipe (not with `--pty`, where it is merged into the terminal). Boxed for the
/// same reason as [`Socket`]: pipes, a terminal, or (`--connect` pipe mode) wsbridge's own
/// stdin and stdout.
pub struct ProgramIo<'a> {
    pub input: Box<dyn AsyncWrite + Unpin + Send + 'a>,
    pub output: Box<dyn AsyncRead + Unpin + Send + 'a>,
    pub stderr: Option<pipe::Receiver>,
}

impl From<Stdio> for ProgramIo<'static> {
    fn from(s: Stdio) -> Self {
        ProgramIo {
            input: Box::new(pipesize::Growing::new(s.stdin)),
            output: Box::new(pipesize::Growing::new(s.stdout)),
            stderr: Some(s.stderr),
        }
    }
}

impl From<pty::Master> for ProgramIo<'static> {
    fn from(m: pty::Master) -> Self {
        ProgramIo {
            input: Box::new(m.writer),
            output: Box::new(m.reader),
            stderr: None,
        }
    }
}

/// `TERM` for programs on a `--pty` terminal unless `--passenv` passes one: `dumb`, so
/// readline programs (bc, python) do not write terminal escapes (bracketed paste
/// `ESC[?2004h`, colours) that would reach the client as messages.
const PTY_TERM: &str = "dumb";

/// Starts `program` with exactly `env`: on pipes, or with `pty` on a terminal of that
/// size (with `TERM` set). Both sides of wsbridge start their programs here.
pub fn start(
    program: &Program,
    mut env: Vec<(OsString, OsString)>,
    pty: Option<pty::WinSize>,
) -> io::Result<(Child, ProgramIo<'static>)> {
    if pty.is_some() && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), PTY_TERM.into()));
    }
    let spec = child::Spec {
        name: &program.name,
        program: &program.path,
        args: &program.args,
        env,
        cwd: None,
        pinned: program.pinned.as_deref().map(|s| child::Pinned {
            file: s.file.as_fd(),
            cwd: None,
        }),
    };
    match pty {
        None => child::spawn(spec).map(|(c, s)| (c, s.into())),
        Some(size) => child::spawn_pty(spec, size).map(|(c, m)| (c, m.into())),
    }
}

/// Runs the session to its end and logs its summary. The caller holds the `--maxforks`
/// slot until this returns, which is after the program has been reaped.
pub async fn run(
    ws: Socket,
    child: Child,
    io: ProgramIo<'_>,
    settings: &config::Session,
    shutdown: &CancellationToken,
    who: &Who,
) {
    run_with(ws, Some(child), io, settings, shutdown, Side::Server, Some(who)).await;
}

/// Which end of the connection wsbridge is: only the wording of the shutdown Close and
/// the handling of input EOF without a program differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Server,
    /// `--connect` (see [`crate::outbound`]).
    Client,
}

/// How a session ended, for `--connect` to choose its exit status.
#[derive(Debug)]
pub struct Outcome {
    /// The program's exit status; `None` without a program (pipe mode).
    pub status: Option<io::Result<ExitStatus>>,
    /// The close code exchanged, if any.
    pub close: Option<u16>,
    /// The connection failed (dropped without a Close, protocol error, or a rule broken).
    pub failed: bool,
    /// It ended because of SIGINT/SIGTERM.
    pub shutdown: bool,
}

/// After EOF on wsbridge's own stdin in pipe mode (no program), how long the peer may stay
/// quiet before we close: its answers to what we sent are still printed.
pub const EOF_LINGER: Duration = Duration::from_secs(2);

/// [`run`] for either side, with or without a program. Without one (`--connect` pipe mode)
/// `io` is wsbridge's own stdin/stdout: its EOF is not the end of the session, the peer's
/// messages are still relayed until it is quiet for [`EOF_LINGER`] (or closes), then we
/// close with 1000.
///
/// Returned boxed: every caller (server, `--connect` with pipes, a terminal or no program)
/// then shares one compiled copy of the session instead of inlining its own. Inside, the
/// futures of the ending (drain, linger, close, stop ladder) are boxed when reached, so
/// the state every idle session keeps holds only the relay. `who` names the connection in
/// the summary line (`None` for `--connect`, whose `connected` line names the URL).
pub fn run_with<'a>(
    ws: Socket,
    child: Option<Child>,
    io: ProgramIo<'a>,
    settings: &'a config::Session,
    shutdown: &'a CancellationToken,
    side: Side,
    who: Option<&'a Who>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'a>> {
    Box::pin(session(ws, child, io, settings, shutdown, side, who))
}

async fn session(
    ws: Socket,
    mut child: Option<Child>,
    io: ProgramIo<'_>,
    settings: &config::Session,
    shutdown: &CancellationToken,
    side: Side,
    who: Option<&Who>,
) -> Outcome {
    let started = Instant::now();
    let ProgramIo {
        input: stdin,
        output: mut stdout,
        stderr,
    } = io;
    // --passstderr: stderr lines also go to the client, through the output pump.
    let (stderr_tx, stderr_rx) = match settings.pass_stderr {
        true => {
            let (tx, rx) = tokio::sync::mpsc::channel(STDERR_QUEUE);
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let stderr_task = stderr.map(|stderr| tokio::spawn(child::log_stderr(stderr, stderr_tx).in_current_span()));
    let (mut sink, stream) = ws.split();
    let mut stream = Paced::new(stream, settings.rate_limit);
    let liveness = Liveness::default();
    let ping = settings.ping_interval;
    let (sent, received) = stats::flows();
    let (sent, received) = (Counters::adding_to(sent), Counters::adding_to(received));
    let mut exited = false;

    let ending = {
        let mut out = pin!(relay::pump_out(
            &mut stdout,
            &mut sink,
            settings.framing,
            settings.max_message,
            ping,
            stderr_rx,
            &sent
        ));
        let mut inp = pin!(relay::pump_in(
            &mut stream,
            stdin,
            settings.framing,
            ping.map(|_| &liveness),
            &received
        ));
        tokio::select! {
            end = &mut out => match (end, &child) {
                (OutEnd::Eof, None) => Box::pin(linger(inp, &received)).await,
                (end, _) => Ending::Output(end),
            },
            end = &mut inp => Ending::Input(end),
            () = or_pending(child.as_mut().map(Child::exited)) => {
                exited = true;
                // Whatever the program left in its group would keep the output open.
                if let Some(child) = &child {
                    child.signal_group(Signal::SIGKILL);
                }
                Ending::Output(Box::pin(drain(out, &sent)).await)
            }
            () = or_pending(ping.map(|every| relay::watchdog(every, &liveness))) => Ending::PingTimeout,
            () = or_pending(settings.idle_timeout.map(|limit| idle(limit, || sent.messages() + received.messages()))) => Ending::Idle,
            () = shutdown.cancelled() => Ending::Shutdown,
        }
        // Leaving this block drops the input pump and with it the program's stdin.
    };

    // What to tell the client, when it does not depend on how the program ends.
    let output_done = matches!(ending, Ending::Output(OutEnd::Eof | OutEnd::ReadError(_)));
    let was_shutdown = matches!(ending, Ending::Shutdown);
    let failed = !was_shutdown && !matches!(ending, Ending::Output(OutEnd::Eof) | Ending::Input(InEnd::Closed(_)));
    let held = stream.held();
    let stream = stream.into_inner();
    let ended_by = match &ending {
        Ending::Output(end) => EndedBy::for_output(end),
        Ending::Input(end) => EndedBy::for_input(end),
        Ending::PingTimeout => EndedBy::Ping,
        Ending::Idle => EndedBy::Idle,
        Ending::Shutdown => EndedBy::Shutdown,
    };
    let early: Closing = match ending {
        Ending::PingTimeout => closing_for_ping_timeout(),
        Ending::Idle => closing_for_idle(settings.idle_timeout),
        Ending::Output(OutEnd::Socket(e)) => {
            tracing::debug!(error = %e, "sending to the client failed");
            Closing::Drop
        }
        Ending::Output(OutEnd::ReadError(e)) => {
            tracing::warn!(error = %e, "reading the program's output failed");
            Closing::Drop
        }
        Ending::Output(OutEnd::Eof) => Closing::Drop,
        Ending::Output(OutEnd::Malformed(e)) => {
            tracing::warn!(
                offset = e.offset,
                reason = e.reason,
                "program output broke --framing=lenprefix"
            );
            Closing::Send(
                CloseCode::Error,
                format!("malformed frame from the program at byte {}", e.offset),
            )
        }
        Ending::Input(end) => closing_for_input(end),
        Ending::Shutdown => Closing::Send(
            CloseCode::Away,
            match side {
                Side::Server => "server shutting down",
                Side::Client => "client shutting down",
            }
            .into(),
        ),
    };
    // Finish the close handshake before stopping the program, so the client does not wait
    // for the stop ladder; when the program's output ended, the Close carries its status.
    let mut socket = Some((sink, stream));
    let mut exchanged = Exchanged::default();
    if !output_done {
        if let Some((sink, stream)) = socket.take() {
            exchanged = Box::pin(close(sink, stream, early)).await;
        }
    }

    let (status, signalled) = match child {
        None => (None, None),
        Some(child) if exited => (Some(reap::collect(child)), None),
        Some(child) => {
            let stopped = Box::pin(reap::stop(child, settings.close_grace)).await;
            (Some(stopped.status), stopped.signalled)
        }
    };
    if let Some((sink, stream)) = socket.take() {
        let (code, reason) = match &status {
            Some(status) => close_for_exit(status),
            None => (CloseCode::Normal, String::new()),
        };
        exchanged = Box::pin(close(sink, stream, Closing::Send(code, reason))).await;
    }
    finish_stderr(stderr_task).await;
    // With --pty the terminal stays open until here, so the program was never hung up.
    drop(stdout);

    Summary {
        who,
        started,
        received: &received,
        sent: &sent,
        client: None,
        ended_by,
        exit: status.as_ref(),
        signalled,
        close: &exchanged,
        held,
    }
    .log();
    Outcome {
        status,
        close: exchanged.code,
        failed,
        shutdown: was_shutdown,
    }
}

/// Pipe mode after EOF on our stdin: keep relaying the peer's messages until it closes or
/// has been quiet for [`EOF_LINGER`].
async fn linger<F: std::future::Future<Output = InEnd>>(mut inp: std::pin::Pin<&mut F>, received: &Counters) -> Ending {
    let tick = EOF_LINGER / 10;
    let (mut seen, mut quiet_since) = (received.messages(), Instant::now());
    loop {
        match tokio::time::timeout(tick, &mut inp).await {
            Ok(end) => return Ending::Input(end),
            Err(_) if received.messages() != seen => (seen, quiet_since) = (received.messages(), Instant::now()),
            Err(_) if quiet_since.elapsed() >= EOF_LINGER => return Ending::Output(OutEnd::Eof),
            Err(_) => {}
        }
    }
}

/// After the program exited: finish sending its output for as long as it keeps moving.
/// EOF normally follows at once (the group is dead); only a descendant that left the
/// group can hold the pipe open, or a client stop taking messages, and then the session
/// ends after [`DRAIN_IDLE`] without progress. A slow client still gets everything.
async fn drain<F: std::future::Future<Output = OutEnd>>(mut out: std::pin::Pin<&mut F>, sent: &Counters) -> OutEnd {
    loop {
        let before = sent.bytes() + sent.messages();
        match tokio::time::timeout(DRAIN_IDLE, &mut out).await {
            Ok(end) => return end,
            Err(_) if sent.bytes() + sent.messages() != before => continue,
            Err(_) => {
                tracing::warn!(
                    "program exited but its output is not moving (held open by another process, or a stalled client); closing"
                );
                return OutEnd::Eof;
            }
        }
    }
}

/// Once the program is gone: lets the stderr reader reach EOF, for at most
/// [`STDERR_DRAIN`] (a descendant may still hold stderr open), then stops it.
pub(crate) async fn finish_stderr(task: Option<tokio::task::JoinHandle<()>>) {
    if let Some(mut task) = task {
        if tokio::time::timeout(STDERR_DRAIN, &mut task).await.is_err() {
            tracing::debug!("stderr still open after the program ended; no longer reading it");
            task.abort();
        }
    }
}
