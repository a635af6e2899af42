//! Stopping a program: the stop ladder and the final collection of its exit status.
//!
//! The ladder is websocketd's, measured on 0.4.1 (reference §3.6): with the program's
//! stdin already closed, wait 100 ms + C for it to exit, then SIGINT; 250 ms + C later
//! SIGTERM; 500 ms + C later SIGKILL (C = `--closems`), so the signals land at 100+C,
//! 350+2C and 850+3C ms. Unlike websocketd every signal goes to the whole process group,
//! and whatever is left in the group when the leader has exited is killed, so
//! grandchildren never outlive a session. The program is always reaped.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::timeout;

use crate::child::Child;

/// The ladder's steps: how long to wait, then which signal to send.
const LADDER: [(Duration, Signal); 3] = [
    (Duration::from_millis(100), Signal::SIGINT),
    (Duration::from_millis(250), Signal::SIGTERM),
    (Duration::from_millis(500), Signal::SIGKILL),
];

/// How long to wait for the exit after SIGKILL before handing the process to a
/// background reaper (only a process stuck in uninterruptible sleep takes that long).
const AFTER_KILL: Duration = Duration::from_secs(1);

/// The longest [`stop`] can take for a given `--closems`.
pub fn max_stop_time(grace: Duration) -> Duration {
    LADDER.iter().map(|(d, _)| *d + grace).sum::<Duration>() + AFTER_KILL
}

/// How a stop went.
#[derive(Debug)]
pub struct Stopped {
    pub status: io::Result<ExitStatus>,
    /// The last signal the ladder had to send, if any.
    pub signalled: Option<Signal>,
}

/// Runs the ladder on a program whose stdin the caller has closed, and reaps it.
pub async fn stop(mut child: Child, grace: Duration) -> Stopped {
    let mut signalled = None;
    for (wait, sig) in LADDER {
        if timeout(wait + grace, child.exited()).await.is_ok() {
            return Stopped {
                status: collect(child),
                signalled,
            };
        }
        tracing::debug!(
            signal = sig.as_str(),
            "program still running; signalling its process group"
        );
        child.signal_group(sig);
        signalled = Some(sig);
    }
    if timeout(AFTER_KILL, child.exited()).await.is_err() {
        tracing::error!(
            pid = child.id(),
            "program did not exit after SIGKILL; it will be reaped in the background"
        );
        drop(child);
        return Stopped {
            status: Err(io::Error::other("did not exit after SIGKILL")),
            signalled,
        };
    }
    Stopped {
        status: collect(child),
        signalled,
    }
}

/// Kills whatever the exited leader left in its process group, then reaps the leader.
/// Call only after [`Child::exited`] resolved.
pub fn collect(child: Child) -> io::Result<ExitStatus> {
    // The leader is a zombie, so its group id cannot have been reused.
    child.signal_group(Signal::SIGKILL);
    child.reap()
}
