//! `--connect=URL`: the other direction. wsbridge opens one WebSocket to a server (through
//! an HTTP proxy when one applies, see [`proxy`]; TLS for wss://) and relays it to PROGRAM
//! exactly as the server side does, through [`crate::session`] with the client role (our
//! frames are masked). Without PROGRAM, wsbridge's own stdin/stdout are the program's I/O
//! (pipe mode). `--reconnect` starts again after every ending with a capped, jittered
//! exponential backoff; a fresh program per connection.
//!
//! This file owns the loop (attempt, session, backoff) and the exit status. Dialing is
//! in `dial` (TCP, the CONNECT tunnel of [`proxy`], client TLS, the handshake), pipe
//! mode's stdin and stdout in `pipe`; the settings are resolved at startup by
//! [`crate::config::connect`].
//!
//! Exit status without `--reconnect` (and with it after SIGINT/SIGTERM): the program's
//! (128+N when a signal ended it); in pipe mode 0 after a normal close (1000, or a Close
//! without a code), else 1; 1 when the connection could not be made or failed; 0 when a
//! signal came while no session was running (connecting, or waiting to reconnect).

mod dial;
mod pipe;
pub mod proxy;
#[cfg(feature = "tls")]
mod tls;

pub use dial::{prepare, Client, DialError};

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_util::sync::CancellationToken;

use self::pipe::Pipes;
use crate::config::{Program, Session};
use crate::session::{self, Outcome, ProgramIo, Side, Socket};

/// `--reconnect`: the first delay, doubled after each failure up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the backoff.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// What one attempt came to.
enum Attempt {
    /// The connection could not be made, or the program not started.
    Failed(Failure),
    /// A session ran; its ending and how long it lasted.
    Ran(Outcome, Duration),
    /// SIGINT/SIGTERM while connecting.
    Cancelled,
}

/// Why an attempt failed: one line, printed (or, with `--reconnect`, logged).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("cannot start {}: {cause}", .program.display())]
    Start { program: PathBuf, cause: std::io::Error },
}

/// What the connection is relayed to: a fresh PROGRAM each time, or in pipe mode
/// wsbridge's own stdin and stdout, kept across reconnections.
enum Local<'a> {
    Program(&'a Program),
    Pipes(Pipes),
}

/// Runs `--connect` until it is over (once, or with `--reconnect` until a signal) and
/// returns the exit status.
pub async fn run(client: Client, config: &Session, signalled: CancellationToken) -> u8 {
    // In pipe mode a closed stdout (`... | head -1`) ends the run like a signal does.
    let shutdown = signalled.child_token();
    let mut local = match &config.program {
        Some(program) => Local::Program(program),
        None => Local::Pipes(Pipes::new(shutdown.clone())),
    };
    let mut backoff = Backoff::new();
    let mut code: u8;
    let reconnect = client.settings.reconnect;
    let url = client.settings.target.url();
    loop {
        tracing::debug!(
            url = %url,
            proxy = client.settings.proxy.as_ref().map(|p| p.shown()),
            "connecting"
        );
        // Only the connection is abandoned on a signal; a running session handles the
        // signal itself (Close 1001, program stopped).
        let connected = tokio::select! {
            r = client.connect(config) => Some(r),
            () = shutdown.cancelled() => None,
        };
        let attempt = match connected {
            None => Attempt::Cancelled,
            Some(Err(e)) => Attempt::Failed(e.into()),
            Some(Ok(conn)) => {
                let started = Instant::now();
                match run_session(conn, config, &url, &shutdown, &mut local).await {
                    Ok(outcome) => Attempt::Ran(outcome, started.elapsed()),
                    Err(e) => Attempt::Failed(e),
                }
            }
        };
        match attempt {
            Attempt::Cancelled => {
                code = 0; // a requested stop, with no session running
                break;
            }
            Attempt::Failed(e) if !reconnect => {
                // The one line a user sees, like a startup error.
                eprintln!("wsbridge: {e}");
                code = 1;
                break;
            }
            Attempt::Failed(e) => {
                code = 1;
                tracing::warn!(error = %e, "connection failed");
            }
            Attempt::Ran(outcome, lasted) => {
                code = exit_code(&outcome);
                if lasted >= BACKOFF_RESET_AFTER {
                    backoff.reset();
                }
                if outcome.shutdown || !reconnect {
                    break;
                }
                if matches!(&local, Local::Pipes(p) if p.stdin.eof) {
                    tracing::info!("stdin is at EOF: not reconnecting");
                    break;
                }
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        let delay = backoff.next_delay();
        tracing::info!(retry_in_ms = delay.as_millis() as u64, "reconnecting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => {
                code = 0;
                break;
            }
        }
    }
    if let Local::Pipes(p) = local {
        p.finish().await;
    }
    code
}

/// The exit status one session stands for.
fn exit_code(o: &Outcome) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match &o.status {
        _ if o.failed => 1,
        Some(Ok(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => c as u8,
            (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
            _ => 1,
        },
        Some(Err(_)) => 1,
        None => match o.close {
            None | Some(1000) | Some(1005) => 0,
            Some(1001) if o.shutdown => 0,
            Some(_) => 1,
        },
    }
}

/// Starts the program (or takes our own stdin/stdout) and runs the session.
async fn run_session(
    (ws, protocol): (Socket, Option<String>),
    config: &Session,
    url: &str,
    shutdown: &CancellationToken,
    local: &mut Local<'_>,
) -> Result<Outcome, Failure> {
    tracing::info!(url, protocol = protocol.as_deref(), "connected");
    let program = match local {
        Local::Program(program) => *program,
        Local::Pipes(pipes) => {
            let io = ProgramIo {
                input: Box::new(&mut pipes.stdout),
                output: Box::new(&mut pipes.stdin),
                stderr: None,
            };
            return Ok(session::run_with(ws, None, io, config, shutdown, Side::Client, None).await);
        }
    };
    let mut vars: Vec<(OsString, OsString)> = config
        .passenv
        .iter()
        .filter(|(k, _)| k != "WEBSOCKET_URL" && k != "WEBSOCKET_PROTOCOL")
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    vars.push(("WEBSOCKET_URL".into(), url.into()));
    if let Some(p) = &protocol {
        vars.push(("WEBSOCKET_PROTOCOL".into(), p.into()));
    }
    let pty = config.pty.then(crate::pty::WinSize::default);
    let started = session::start(program, vars, pty);
    let (child, io) = match started {
        Ok(s) => s,
        Err(cause) => {
            // Tell the server, as our server side would answer 500.
            let mut ws = ws;
            let frame = CloseFrame {
                code: CloseCode::Error,
                reason: "failed to start the program".into(),
            };
            let _ = tokio::time::timeout(session::CLOSE_TIMEOUT, ws.close(Some(frame))).await;
            return Err(Failure::Start {
                program: program.path.clone(),
                cause,
            });
        }
    };
    tracing::debug!(pid = child.id(), "program started");
    Ok(session::run_with(ws, Some(child), io, config, shutdown, Side::Client, None).await)
}

/// `--reconnect` delays: start at [`BACKOFF_START`], double up to [`BACKOFF_MAX`]; each
/// delay is 75–100% of the nominal one, so clients that lost the same server do not come
/// back in step, and the delays still grow strictly.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_START }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        nominal.mul_f64(0.75 + 0.25 * random_unit())
    }
}

/// A number in [0, 1) from std's randomly keyed hasher (no RNG dependency needed for
/// jitter).
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        for pair in delays.windows(2) {
            assert!(pair[1] > pair[0] || pair[1] >= BACKOFF_MAX.mul_f64(0.75), "{delays:?}");
        }
        assert!(delays[0] >= BACKOFF_START.mul_f64(0.75) && delays[0] <= BACKOFF_START);
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        b.reset();
        assert!(b.next_delay() <= BACKOFF_START);
    }

    #[test]
    fn exit_codes() {
        use std::os::unix::process::ExitStatusExt;
        let o = |status, close, failed, shutdown| Outcome {
            status,
            close,
            failed,
            shutdown,
        };
        let st = |raw| Some(Ok(std::process::ExitStatus::from_raw(raw)));
        assert_eq!(exit_code(&o(st(3 << 8), Some(1011), false, false)), 3);
        assert_eq!(exit_code(&o(st(9), None, false, false)), 137);
        assert_eq!(exit_code(&o(st(0), None, true, false)), 1);
        assert_eq!(exit_code(&o(None, Some(1000), false, false)), 0);
        assert_eq!(exit_code(&o(None, None, false, false)), 0);
        assert_eq!(exit_code(&o(None, Some(1011), false, false)), 1);
        assert_eq!(exit_code(&o(None, Some(1001), false, true)), 0);
        assert_eq!(exit_code(&o(None, Some(1001), false, false)), 1);
    }
}
