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
use crate::stats;

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
    let status = child.reap();
    if let Ok(s) = &status {
        stats::exited(s);
    }
    status
}

#[cfg(test)]
mod tests {
    //! The ladder on real processes (a fake clock cannot make a real program exit, so
    //! these take real time: under a second each).
    use std::os::unix::process::ExitStatusExt;

    use super::*;
    use crate::child::{self, Spec};

    fn start(script: &str) -> (Child, child::Stdio) {
        let args = ["-c".into(), script.into()];
        child::spawn(Spec {
            name: "sh".as_ref(),
            program: "/bin/sh".as_ref(),
            args: &args,
            env: Vec::new(),
            cwd: None,
            pinned: None,
        })
        .expect("spawn /bin/sh")
    }

    /// Starts `script`, waits for its first line (so its traps are set), closes its
    /// stdin and runs the ladder.
    async fn stop_after_ready(script: &str) -> Stopped {
        let (child, stdio) = start(script);
        let mut out = stdio.stdout;
        let ready = timeout(Duration::from_secs(10), crate::relay::read_chunk(&mut out)).await;
        assert!(matches!(ready, Ok(Ok(Some(_)))), "the script never said it was ready");
        drop(stdio.stdin);
        timeout(
            max_stop_time(Duration::ZERO) + Duration::from_secs(5),
            stop(child, Duration::ZERO),
        )
        .await
        .expect("stop took longer than the ladder allows")
    }

    #[tokio::test]
    async fn a_program_that_exits_on_eof_gets_no_signal() {
        let s = stop_after_ready("echo ready; cat >/dev/null").await;
        assert_eq!(s.signalled, None);
        assert!(s.status.expect("status").success());
    }

    #[tokio::test]
    async fn each_ignored_signal_moves_one_step_up_the_ladder() {
        let s = stop_after_ready("trap 'exit 7' TERM; trap '' INT; echo ready; while :; do sleep 0.05; done").await;
        assert_eq!(s.signalled, Some(Signal::SIGTERM));
        assert_eq!(s.status.expect("status").code(), Some(7));
        let s = stop_after_ready("trap '' INT TERM; echo ready; while :; do sleep 0.05; done").await;
        assert_eq!(s.signalled, Some(Signal::SIGKILL));
        assert_eq!(s.status.expect("status").signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn what_the_program_leaves_in_its_group_is_killed() {
        // The leader exits at once and leaves a descendant that would sleep for a minute.
        let (child, stdio) = start("sleep 60 & echo $!");
        let mut out = stdio.stdout;
        let line = timeout(Duration::from_secs(10), crate::relay::read_chunk(&mut out))
            .await
            .expect("pid in time")
            .expect("read")
            .expect("a line");
        let pid: i32 = std::str::from_utf8(&line).expect("utf8").trim().parse().expect("a pid");
        drop(stdio.stdin);
        let s = timeout(
            max_stop_time(Duration::ZERO) + Duration::from_secs(5),
            stop(child, Duration::ZERO),
        )
        .await
        .expect("stop took longer than the ladder allows");
        assert!(s.status.expect("status").success());
        // Killed (a zombie until its new parent reaps it, or gone).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = state.rsplit(") ").next().and_then(|s| s.chars().next());
            if matches!(state, None | Some('Z') | Some('X')) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "pid {pid} survived its group");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn the_ladder_lasts_what_the_man_page_says() {
        // Signals at 100+C, 350+2C and 850+3C ms, then up to a second for SIGKILL.
        assert_eq!(max_stop_time(Duration::ZERO), Duration::from_millis(1850));
        assert_eq!(max_stop_time(Duration::from_millis(100)), Duration::from_millis(2150));
    }
}
