//! The real wsbridge binary as a child of the test: its stderr read line by line into a
//! log (a bounded tail), its startup lines (`listening on …`, `redirecting …`, `metrics on …`) handed
//! over as they come, signals, and exit with a deadline. Stopped on drop (SIGTERM, then
//! SIGKILL).
//!
//! Every test server that runs the binary is built on it: [`super::BinServer`] and the
//! deployment helpers in [`super::deploy`].

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::STEP;

/// Log lines kept for assertions and failure messages (a stderr flood logs thousands).
const LOG_TAIL: usize = 5000;

/// The wsbridge binary with a full command line. Killed on drop.
pub struct Proc {
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
    lines: mpsc::Receiver<String>,
    /// The startup lines read so far, without the `wsbridge: ` prefix.
    pub announced: Vec<String>,
}

impl Proc {
    /// The binary, stdin and stdout null, stderr piped (as [`Proc::spawn`] needs).
    pub fn command() -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wsbridge"));
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    pub fn start(args: &[&str], env: &[(&str, &str)], announcements: usize) -> Self {
        let mut c = Self::command();
        c.args(args).envs(env.iter().copied());
        Self::spawn(c, announcements)
    }

    /// Spawns `cmd` (stderr must be piped) and waits for `announcements` startup lines.
    pub fn spawn(mut cmd: Command, announcements: usize) -> Self {
        let mut child = cmd.spawn().expect("start wsbridge");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).into_owned();
                if let Some(rest) = line.strip_prefix("wsbridge: ") {
                    if rest.starts_with("listening on ")
                        || rest.starts_with("redirecting ")
                        || rest.starts_with("metrics on ")
                    {
                        let _ = tx.send(rest.to_owned());
                    }
                }
                let mut l = log2.lock().expect("log lock");
                if l.len() == LOG_TAIL {
                    l.pop_front();
                }
                l.push_back(line);
            }
        });
        let mut p = Proc {
            child,
            log,
            lines: rx,
            announced: Vec::new(),
        };
        for _ in 0..announcements {
            match p.lines.recv_timeout(STEP) {
                Ok(l) => p.announced.push(l),
                Err(_) => panic!("no startup line; log:\n{}", p.log()),
            }
        }
        p
    }

    /// The address of the first `listening on SCHEME://ADDR/` line.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.announced
            .iter()
            .find_map(|l| {
                let rest = l.strip_prefix("listening on ")?;
                let rest = rest.strip_prefix("ws://").or_else(|| rest.strip_prefix("wss://"))?;
                rest.trim_end_matches('/').parse().ok()
            })
            .unwrap_or_else(|| panic!("no TCP listener in {:?}", self.announced))
    }

    /// The address of the `metrics on http://ADDR/metrics` line (`--metrics`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.announced
            .iter()
            .find_map(|l| {
                l.strip_prefix("metrics on http://")?
                    .strip_suffix("/metrics")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no metrics listener in {:?}", self.announced))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The log so far (its last [`LOG_TAIL`] lines), one line each.
    pub fn log(&self) -> String {
        let l = self.log.lock().expect("log lock");
        let mut out = String::new();
        for line in l.iter() {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal wsbridge");
    }

    /// Whether the process has exited (and is reaped).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_some()
    }

    /// Polls for the exit status until `d` passes.
    pub async fn wait_exit(&mut self, d: Duration) -> ExitStatus {
        let deadline = Instant::now() + d;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wsbridge did not exit within {d:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls the log until it contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + STEP;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "{needle:?} not logged; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL and reap (again on drop: harmless).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    /// SIGTERM first, so wsbridge stops its programs (a test that failed half-way may
    /// leave one that ignores EOF); SIGKILL if it has not exited after [`STEP`].
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + STEP;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.kill();
    }
}
