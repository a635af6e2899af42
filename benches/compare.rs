//! # wsbridge vs websocketd: side-by-side benchmark harness
//!
//! Starts `target/release/wsbridge` and `websocketd` (0.4.1, `apt-get install -y
//! websocketd`) on 127.0.0.1 with the same child program, drives both with the same
//! WebSocket client (one current-thread runtime, so the client uses at most one core), and
//! prints, per scenario, the median and min–max over several runs for each server and the
//! ratio wsbridge/websocketd: the median of the run-by-run ratios, each of wsbridge's runs
//! over the other subject's run in the same round, so that a slower stretch of a shared
//! host (steal) weighs on both sides of a ratio alike. The echo and rtt scenarios use a
//! lean client of raw frames (see [`Raw`]: with tokio-tungstenite the client spent more CPU
//! per message than wsbridge, so it bounded what was measured); the others use
//! tokio-tungstenite. Runs are interleaved (wsbridge, websocketd, wsbridge, …) and every
//! run starts a fresh server, so noise from other load on the machine hits both.
//!
//! ## Scenarios
//!
//! - `churn` (connections/s, client CPU µs/conn): connect, one echo through `cat`, close; 4
//!   in flight, with the raw-frame client. Also the floor without any server: spawn `cat`,
//!   one line through its pipes, close, wait (4 at once on a 2-worker tokio runtime),
//!   reported as "bare spawn+cat". Client CPU is this process's user + system time per
//!   connection (for the floor: spawning `cat` and the round trip through its pipes), the
//!   part of the two cores the measuring takes. Within each run both servers are up and
//!   the three subjects take turns in blocks of 250 connections ([`run_churn`]).
//! - `echo16`, `echo1k` (msgs/s, MB/s, server CPU µs/msg): one connection through `cat`,
//!   16 B / 1 KiB text messages, 32 in flight. Server CPU is the server process's user +
//!   system time (all its threads, not its children) over the run, from `/proc/PID/stat`
//!   in 10 ms ticks, divided by the messages: what the server spends per message even
//!   where wakeup latency, not CPU, bounds the rate. Client CPU µs/msg is the same for
//!   this harness's own process: what the client paid, so that a reader can see whether
//!   the client, not the server, bounded the rate.
//! - `echo64k` (msgs/s, MB/s, server CPU µs/msg): 64 KiB text messages (one 64 KiB line
//!   each), only 2 in flight: websocketd 0.4.1 deadlocks with 3 or more (see
//!   [`ECHO64K_WINDOW`]).
//! - `echo16x8` (aggregate msgs/s, MB/s, server CPU µs/msg): 16 B messages on 8
//!   connections at once, 32 in flight each.
//! - `burst` (lines/s): the child `seq 1 N` prints N lines as fast as it can; the client reads
//!   to the end (a TCP close without a close frame after the last line counts as the end).
//! - `rtt` (µs, p50 and p99): one 16 B message at a time through `cat`. Also two floors:
//!   the same round trips straight through `cat`'s pipes, reported as "bare spawn+cat",
//!   and through a minimal relay in this process (TCP to `cat`'s pipes, no WebSocket; see
//!   [`run_rtt_relay`]), reported as "bare relay+cat".
//! - `rss_idle` (KiB): VmRSS of the server process alone, 0.5 s after start, and its
//!   private part (`RssAnon`: heap, stacks, relocated data; the rest of VmRSS is pages of
//!   the binary and shared libraries, which every process running them shares). Each
//!   server's binary is dropped from the page cache first ([`evict_from_page_cache`]).
//! - `rss_1000` (KiB): VmRSS with 1000 idle connections open (1000 `cat` children), and
//!   KiB per connection = (loaded - idle) / 1000, idle measured on the same instance; the
//!   same for the private part (`RssAnon` delta / 1000). Then the connections all close,
//!   and 5 s after the last close (once every program has exited) the server's `RssAnon`
//!   and VmRSS again: the private memory a server keeps after a peak, which on a small
//!   board no other process can share and the kernel cannot drop.
//! - `size` (bytes): the server binaries on disk (wsbridge's release profile strips): the
//!   measured wsbridge, and in full runs also the minimal-features build (`cargo build
//!   --release --no-default-features`, into `target/minimal`; about a minute the first time).
//!
//! Each scenario also prints the host's steal time during its runs (from `/proc/stat`): on a
//! shared VM host it is the first thing to look at when figures jump between runs.
//!
//! Every echoed payload is checked (content and order: each carries its sequence number and
//! a filler derived from it), and every burst line must be the next number. MB/s counts
//! payload bytes echoed back (one direction), 1 MB = 10^6 bytes.
//!
//! ## Running
//!
//! ```text
//! cargo bench --bench compare                      # full run: 5 runs per scenario, a few minutes
//! cargo bench --bench compare -- --quick           # 1 run, small counts, ~5 s once built
//! cargo bench --bench compare -- --runs=3 --only=echo16,rtt
//! cargo bench --bench compare -- --wsbridge=/path/to/wsbridge   # another build; no cargo build
//! ```
//!
//! Options:
//! - `--quick`: 1 run, small counts (the test suite's smoke check); implies `--no-build`.
//! - `--runs=N` (default 5), `--only=NAME[,NAME…]` (scenario names above, comma-separated).
//! - `--wsbridge=PATH`: measure that binary (e.g. a minimal-features build) instead.
//! - `--build` / `--no-build`: which wsbridge binary is measured, see below.
//!
//! Which wsbridge: by default (full runs) the harness first runs
//! `cargo build --release --bin wsbridge` (a no-op taking well under a second when the release
//! build is current) and measures the release-profile `target/release/wsbridge` next to this
//! bench executable. That step matters: `cargo bench` builds its own copy of the binary for
//! benches (bench profile = release settings, except that cargo forces panic=unwind on
//! anything linked into a bench) and copies it over `target/release/wsbridge`; the nested
//! build puts the release-profile binary back. With `--no-build` (and by default with
//! `--quick`) the copy `cargo bench` just built is measured instead, which avoids a second
//! fat-LTO build in the smoke test; its size is a few KB larger than the release binary.
//!
//! If `websocketd` is not on `PATH`, the harness runs `apt-get install -y websocketd` (and
//! says so). It raises its soft `RLIMIT_NOFILE` for the 1000-connection scenario, makes
//! itself a child subreaper so that programs orphaned by a killed server are reaped here,
//! and kills and waits for every server and child it starts, also on error paths.
//!
//! Exit status: 0 when every run completed (whether or not targets are met, see the final
//! table), 1 when a run failed (a server hung, died, lost or reordered data), 2 on bad
//! arguments. Everything binds and connects to 127.0.0.1 only; every load loop is bounded in
//! count and in time, and every await has a timeout.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, Stream};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{client_async, WebSocketStream};

type Ws = WebSocketStream<TcpStream>;

/// Longest any single await may take before the run is declared failed.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server gets to print its address / accept connections after start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages in flight for `echo64k`. websocketd 0.4.1 deadlocks with 3 or more 64 KiB
/// lines in flight through `cat`: one goroutine moves both directions, so while its write
/// to the program's full stdin blocks, nobody drains the program's stdout (fixed in later
/// websocketd, which runs each direction on its own goroutine). 2 works for both servers.
const ECHO64K_WINDOW: usize = 2;
/// Settle time before reading an idle server's RSS.
const SETTLE: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------
// Options and sizes
// ---------------------------------------------------------------------------------------

struct Opts {
    quick: bool,
    runs: usize,
    only: Option<Vec<String>>,
    wsbridge: Option<PathBuf>,
    /// None: default (build unless --quick).
    build: Option<bool>,
}

const USAGE: &str = "usage: cargo bench --bench compare -- [--quick] [--runs=N] \
[--only=NAME[,NAME...]] [--wsbridge=PATH] [--build | --no-build]\n\
scenarios: churn echo16 echo1k echo64k echo16x8 burst rtt rss_idle rss_1000 size";

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        runs: 5,
        only: None,
        wsbridge: None,
        build: None,
    };
    let mut runs_given = false;
    for arg in std::env::args().skip(1) {
        if arg == "--bench" {
            continue; // passed by `cargo bench` to every bench target
        } else if arg == "--quick" {
            o.quick = true;
        } else if arg == "--no-build" {
            o.build = Some(false);
        } else if arg == "--build" {
            o.build = Some(true);
        } else if let Some(v) = arg.strip_prefix("--runs=") {
            o.runs = v
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(format!("bad --runs value {v:?}"))?;
            runs_given = true;
        } else if let Some(v) = arg.strip_prefix("--only=") {
            let names: Vec<String> = v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
            for n in &names {
                if !SCENARIOS.iter().any(|s| s.name == n) && n != "size" {
                    return Err(format!("unknown scenario {n:?}"));
                }
            }
            o.only = Some(names);
        } else if let Some(v) = arg.strip_prefix("--wsbridge=") {
            o.wsbridge = Some(PathBuf::from(v));
        } else if arg == "--help" || arg == "-h" {
            return Err(String::new());
        } else {
            return Err(format!("unknown argument {arg:?}"));
        }
    }
    if o.quick && !runs_given {
        o.runs = 1;
    }
    Ok(o)
}

/// Counts and limits for one run of each scenario.
struct Params {
    /// Wall-clock cap for each load loop; a loop stops sending when it is reached and the
    /// rate is computed over what completed.
    time_limit: Duration,
    churn_conns: u64,
    churn_in_flight: usize,
    echo16: u64,
    echo1k: u64,
    echo64k: u64,
    echo16x8: u64,
    burst_lines: u64,
    rtt_trips: usize,
    rss_conns: usize,
    /// How long after the last close `rss_1000` reads the memory kept after use.
    after_use: Duration,
}

impl Params {
    fn new(quick: bool) -> Self {
        if quick {
            Params {
                time_limit: Duration::from_secs(2),
                churn_conns: 100,
                churn_in_flight: 4,
                echo16: 5_000,
                echo1k: 2_000,
                echo64k: 100,
                echo16x8: 8_000,
                burst_lines: 20_000,
                rtt_trips: 200,
                rss_conns: 100,
                after_use: Duration::from_secs(2),
            }
        } else {
            Params {
                time_limit: Duration::from_secs(8),
                churn_conns: 2_000,
                churn_in_flight: 4,
                echo16: 300_000,
                echo1k: 150_000,
                echo64k: 4_000,
                echo16x8: 400_000,
                burst_lines: 300_000,
                rtt_trips: 2_000,
                rss_conns: 1_000,
                after_use: Duration::from_secs(5),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Subjects and servers
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Subject {
    Wsbridge,
    Websocketd,
    /// No server: spawn `cat` directly and talk to its pipes (churn baseline).
    BareSpawn,
    /// The least any relay can add (rtt baseline): a minimal relay in this process, two
    /// blocking threads copying TCP to `cat`'s pipes and back, no WebSocket.
    BareRelay,
}

impl Subject {
    fn label(self) -> &'static str {
        match self {
            Subject::Wsbridge => "wsbridge",
            Subject::Websocketd => "websocketd",
            Subject::BareSpawn => "bare spawn+cat",
            Subject::BareRelay => "bare relay+cat",
        }
    }
}

/// Everything a scenario needs.
struct Env {
    wsbridge: PathBuf,
    /// The minimal-features build, sized in full runs (see [`minimal_binary`]).
    minimal: Option<PathBuf>,
    websocketd: PathBuf,
    cat: PathBuf,
    seq: PathBuf,
    /// Current-thread runtime for the WebSocket client (at most one core).
    rt: Runtime,
    /// Two-worker runtime for the bare spawn baseline.
    rt_mt: Runtime,
    p: Params,
}

/// A running server. Dropping it stops it (SIGTERM, then SIGKILL after 3 s), waits for
/// it, and, once no other server is running, reaps any program it orphaned.
struct Server {
    who: Subject,
    child: Option<Child>,
    port: u16,
    /// Ports from the server's "listening on" lines.
    port_rx: mpsc::Receiver<u16>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    fn start(env: &Env, who: Subject, program: &[&Path], args: &[String]) -> Result<Server, String> {
        match who {
            Subject::Wsbridge => {
                let mut server = Server::spawn(env, who, "--port=0", program, args)?;
                match server.port_rx.recv_timeout(START_TIMEOUT) {
                    Ok(p) => server.port = p,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(format!("wsbridge exited before listening{}", server.log_tail()))
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        return Err(format!(
                            "wsbridge printed no 'listening on' line in {START_TIMEOUT:?}{}",
                            server.log_tail()
                        ))
                    }
                }
                Ok(server)
            }
            // websocketd cannot be given port 0 (it then listens on 80), so it gets a port
            // that was free a moment ago. Another process may take it first: websocketd then
            // exits at start, and the next try has another port.
            Subject::Websocketd => {
                let mut last = String::new();
                for _ in 0..5 {
                    let port = free_port()?;
                    let mut server = Server::spawn(env, who, &format!("--port={port}"), program, args)?;
                    let end = Instant::now() + START_TIMEOUT;
                    loop {
                        if let Ok(Some(st)) = server.child.as_mut().expect("child").try_wait() {
                            last = format!("websocketd exited at start ({st}){}", server.log_tail());
                            break;
                        }
                        // Its own listening socket, not a connect that another process
                        // on the same port could answer.
                        if listens_on(server.pid(), port) {
                            server.port = port;
                            return Ok(server);
                        }
                        if Instant::now() > end {
                            return Err(format!(
                                "websocketd not listening on 127.0.0.1:{port} after {START_TIMEOUT:?}{}",
                                server.log_tail()
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Err(last)
            }
            Subject::BareSpawn | Subject::BareRelay => unreachable!("a baseline has no server"),
        }
    }

    /// Starts the server with `port_arg` and a thread that drains its stderr.
    fn spawn(env: &Env, who: Subject, port_arg: &str, program: &[&Path], args: &[String]) -> Result<Server, String> {
        let bin = match who {
            Subject::Wsbridge => &env.wsbridge,
            Subject::Websocketd => &env.websocketd,
            Subject::BareSpawn | Subject::BareRelay => unreachable!("a baseline has no server"),
        };
        let mut cmd = Command::new(bin);
        cmd.arg(port_arg).args(["--address=127.0.0.1", "--loglevel=error"]);
        cmd.args(program).args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (port_tx, port_rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            // Detached: drains the server's stderr (so it never blocks on it) and keeps the
            // last lines for error messages; ends at EOF.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(p) = parse_listening(&line) {
                        let _ = port_tx.send(p);
                    }
                    let mut l = log.lock().expect("log lock");
                    if l.len() == 20 {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            });
        }
        LIVE_SERVERS.fetch_add(1, Ordering::Relaxed);
        Ok(Server {
            who,
            child: Some(child),
            port: 0,
            port_rx,
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    fn log_tail(&self) -> String {
        std::thread::sleep(Duration::from_millis(50)); // let the drain thread catch up
        let l = self.log.lock().expect("log lock");
        if l.is_empty() {
            String::new()
        } else {
            format!(
                "; its stderr ends with:\n    {}",
                l.iter().cloned().collect::<Vec<_>>().join("\n    ")
            )
        }
    }

    /// Fails if the server died during the run.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().expect("child").try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!(
                "{} died during the run ({st}){}",
                self.who.label(),
                self.log_tail()
            )),
            Err(e) => Err(format!("cannot check {}: {e}", self.who.label())),
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 3 s) and waits for it; a no-op the
    /// second time.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            LIVE_SERVERS.fetch_sub(1, Ordering::Relaxed);
            // One that has been waited for already (a websocketd that exited at start)
            // must not be signalled: its pid may belong to another process by now.
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            // SAFETY: plain kill(2) on the pid of a child we have not waited for yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(3);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

/// Servers started and not yet stopped. Reaping orphans waits for every child of this
/// process, a running server included, so it waits until this is zero: the last server
/// stopped reaps what the others orphaned too.
static LIVE_SERVERS: AtomicUsize = AtomicUsize::new(0);

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if LIVE_SERVERS.load(Ordering::Relaxed) == 0 {
            reap_orphans();
        }
    }
}

/// Whether process `pid` has a socket listening on 127.0.0.1:`port` (/proc/net/tcp gives
/// the listening socket's inode, /proc/PID/fd the process's sockets).
fn listens_on(pid: u32, port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    let Ok(tcp) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inodes: Vec<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local address, state 0A = LISTEN, inode
            (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
}

/// `wsbridge: listening on ws://127.0.0.1:PORT/` → PORT.
fn parse_listening(line: &str) -> Option<u16> {
    let rest = line.split("listening on ws://").nth(1)?;
    let hostport = rest.trim_end().trim_end_matches('/');
    hostport.rsplit(':').next()?.parse().ok()
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Reaps programs that a stopped server orphaned (we are their subreaper). Only called
/// when none of our own children is running. Bounded: gives up after 5 s.
fn reap_orphans() {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if r < 0 {
            return; // ECHILD: nothing left
        }
        if Instant::now() > end {
            eprintln!("warning: orphaned programs still running after 5 s");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// CPU time a process has used (user + system, all its threads, not its children), in
/// seconds; the kernel counts it in ticks of 1/`_SC_CLK_TCK` s (10 ms).
fn cpu_secs(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The fields after the command name in parentheses (which may hold spaces) start at
    // the state, field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (tick(11), tick(12)) else {
        return Err(format!("/proc/{pid}/stat: no utime and stime in {stat:?}"));
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok((utime + stime) as f64 / hz as f64)
}

/// The machine's CPU time so far from the first line of `/proc/stat`, in ticks: (steal,
/// all). Steal is time the hypervisor ran something else while a vCPU wanted to run; on a
/// shared host it makes every figure noisier, so each scenario reports its share.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    // already counted in user and nice.
    Some((*ticks.get(7)?, ticks.iter().take(8).sum()))
}

/// Steal as a percentage of all CPU time between two [`cpu_ticks`] samples.
fn steal_pct(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (before?, after?);
    (t1 > t0).then(|| (s1 - s0) as f64 * 100.0 / (t1 - t0) as f64)
}

/// A `KiB` line of `/proc/PID/status` (`VmRSS:`, `RssAnon:`), in KiB.
fn status_kib(pid: u32, key: &str) -> Result<f64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
}

/// Drops a binary's pages from the page cache (`fsync`, then `POSIX_FADV_DONTNEED`), so that
/// the next process reads it from disk as after a reboot. How much of a binary a process
/// maps depends on how its file sits in the page cache: a file just written (by the linker
/// or `cp`) mapped 0.05–0.2 MiB more than the same file read back from disk. Best effort:
/// pages another process maps stay.
fn evict_from_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// Number of live child processes of `pid` (all its threads' children).
fn child_count(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .map(|c| c.split_whitespace().count())
        .sum()
}

// ---------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------

async fn within<T, E: Display>(what: &str, fut: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no progress in {IO_TIMEOUT:?}")),
    }
}

async fn timed<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| format!("{what}: no progress in {IO_TIMEOUT:?}"))
}

async fn connect(port: u16) -> Result<Ws, String> {
    let tcp = within("TCP connect", TcpStream::connect(("127.0.0.1", port))).await?;
    tcp.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
    let (ws, _) = within(
        "WebSocket handshake",
        client_async(format!("ws://127.0.0.1:{port}/"), tcp),
    )
    .await?;
    Ok(ws)
}

/// Next data message; control frames are skipped, a close or end is an error.
async fn next_msg<S>(rx: &mut S, what: &str) -> Result<Message, String>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        match timed(what, rx.next()).await? {
            None => return Err(format!("{what}: connection ended")),
            Some(Err(e)) => return Err(format!("{what}: {e}")),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(c))) => return Err(format!("{what}: server closed the connection ({c:?})")),
            Some(Ok(m)) => return Ok(m),
        }
    }
}

/// Checkable payloads: `{i:016}` followed by a filler that depends on `i`.
struct Payload {
    size: usize,
    filler: String,
}

impl Payload {
    fn new(size: usize) -> Self {
        assert!(size >= 16);
        let filler = (0..size + 26).map(|j| (b'a' + (j % 26) as u8) as char).collect();
        Payload { size, filler }
    }
    fn tail(&self, i: u64) -> &str {
        let off = (i % 26) as usize;
        &self.filler[off..off + self.size - 16]
    }
    fn make(&self, i: u64) -> Message {
        let mut s = String::with_capacity(self.size);
        s.push_str(&format!("{i:016}"));
        s.push_str(self.tail(i));
        Message::text(s)
    }
    fn check(&self, i: u64, msg: &Message) -> Result<(), String> {
        let Message::Text(t) = msg else {
            return Err(format!("echo #{i}: expected a text message, got {msg:?}"));
        };
        self.check_bytes(i, t.as_bytes())
    }
    /// Whether `b` is message `i`: its length, sequence number and filler.
    fn check_bytes(&self, i: u64, b: &[u8]) -> Result<(), String> {
        if b.len() == self.size && b[..16] == seq_digits(i) && b[16..] == *self.tail(i).as_bytes() {
            return Ok(());
        }
        let head = String::from_utf8_lossy(&b[..b.len().min(24)]);
        Err(format!(
            "echo #{i}: wrong payload ({} bytes, starts {head:?}; expected {} bytes, starts {i:016})",
            b.len(),
            self.size
        ))
    }
}

// ---------------------------------------------------------------------------------------
// The lean client: raw frames over TCP for the echo and rtt scenarios
// ---------------------------------------------------------------------------------------

/// The RFC 6455 example key and its accept value (section 1.3).
const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const HANDSHAKE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The client's masking key. Any key is valid for a server; the XOR is still done on both
/// sides, as with a random key.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A WebSocket client connection for the throughput and latency scenarios, cheaper per
/// message than tokio-tungstenite: with tungstenite the client spent more CPU per echoed
/// message than wsbridge did (2.6 against 1.7 µs for 16 B), so the figures measured the
/// client as much as the server. This one writes every frame in flight with one `write`
/// and parses the replies in place without an allocation per message. It speaks only what
/// these scenarios need: text out, text (possibly fragmented) back; a ping or pong from
/// the server is skipped, a close or a masked frame is an error.
struct Raw {
    tcp: TcpStream,
    /// Bytes read but not yet parsed (the handshake may leave some).
    inbuf: Vec<u8>,
}

async fn raw_connect(port: u16) -> Result<Raw, String> {
    let mut tcp = within("TCP connect", TcpStream::connect(("127.0.0.1", port))).await?;
    tcp.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    within("handshake request", tcp.write_all(req.as_bytes())).await?;
    let mut inbuf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(p) = inbuf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if inbuf.len() > 16 * 1024 {
            return Err("handshake: response head over 16 KiB".into());
        }
        if within("handshake response", tcp.read_buf(&mut inbuf)).await? == 0 {
            return Err("handshake: connection closed before the response ended".into());
        }
    };
    let head = String::from_utf8_lossy(&inbuf[..end]).into_owned();
    if !head.starts_with("HTTP/1.1 101") || !head.contains(HANDSHAKE_ACCEPT) {
        return Err(format!("handshake refused: {:?}", head.lines().next().unwrap_or("")));
    }
    inbuf.drain(..end);
    Ok(Raw { tcp, inbuf })
}

/// Appends message `i` of `pay` as one masked text frame.
fn push_text(out: &mut Vec<u8>, pay: &Payload, i: u64) {
    let n = pay.size;
    out.push(0x81);
    match n {
        0..=125 => out.push(0x80 | n as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    let start = out.len();
    out.extend_from_slice(&seq_digits(i));
    out.extend_from_slice(pay.tail(i).as_bytes());
    // Eight bytes at a time (the compiler vectorizes this); 8 is a multiple of the key's
    // length, so the tail starts at key offset 0.
    let key = u64::from_ne_bytes([MASK[0], MASK[1], MASK[2], MASK[3], MASK[0], MASK[1], MASK[2], MASK[3]]);
    let mut words = out[start..].chunks_exact_mut(8);
    for w in &mut words {
        let v = u64::from_ne_bytes(w.try_into().expect("8 bytes")) ^ key;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in words.into_remainder().iter_mut().zip(MASK) {
        *b ^= k;
    }
}

/// `i` as 16 zero-padded decimal digits, like `format!("{i:016}")`.
fn seq_digits(mut i: u64) -> [u8; 16] {
    let mut d = [b'0'; 16];
    for slot in d.iter_mut().rev() {
        *slot = b'0' + (i % 10) as u8;
        i /= 10;
    }
    d
}

/// One complete frame at the start of `buf`: (FIN, opcode, payload range); the range's end
/// is the frame's length. A frame announcing more than `max` payload bytes is an error, so
/// a wrong length cannot make the client buffer without bound.
fn parse_frame(buf: &[u8], max: usize) -> Result<Option<(bool, u8, std::ops::Range<usize>)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err("server sent a masked frame".into());
    }
    let (hdr, len) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
        127 if buf.len() >= 10 => (10, u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")) as usize),
        126 | 127 => return Ok(None),
        n => (2, n as usize),
    };
    if len > max {
        return Err(format!(
            "server announced a frame of {len} bytes (at most {max} expected)"
        ));
    }
    if buf.len() < hdr + len {
        return Ok(None);
    }
    Ok(Some((buf[0] & 0x80 != 0, buf[0] & 0x0f, hdr..hdr + len)))
}

/// Reads until at least one whole message is parsed, checking each against `pay` and the
/// sequence number `*got`, which it advances. `partial` holds a fragmented message.
async fn raw_read_echoes(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
    inbuf: &mut Vec<u8>,
    partial: &mut Vec<u8>,
    pay: &Payload,
    got: &mut u64,
) -> Result<u64, String> {
    let before = *got;
    loop {
        let mut used = 0;
        // Control frames carry at most 125 bytes.
        while let Some((fin, op, range)) = parse_frame(&inbuf[used..], pay.size.max(125))? {
            let body = &inbuf[used + range.start..used + range.end];
            match op {
                0x1 if fin && partial.is_empty() => {
                    pay.check_bytes(*got, body)?;
                    *got += 1;
                }
                0x0 | 0x1 => {
                    partial.extend_from_slice(body);
                    if partial.len() > pay.size {
                        return Err(format!("echo #{got}: fragments exceed {} bytes", pay.size));
                    }
                    if fin {
                        pay.check_bytes(*got, partial)?;
                        *got += 1;
                        partial.clear();
                    }
                }
                0x8 => return Err(format!("echo #{got}: server closed the connection")),
                0x9 | 0xa => {}
                _ => return Err(format!("echo #{got}: unexpected frame opcode {op:#x}")),
            }
            used += range.end;
        }
        inbuf.drain(..used);
        if *got > before {
            return Ok(*got - before);
        }
        if inbuf.capacity() - inbuf.len() < 64 * 1024 {
            inbuf.reserve(256 * 1024);
        }
        // The error text is built only on failure: this runs once per read.
        match tokio::time::timeout(IO_TIMEOUT, rd.read_buf(inbuf)).await {
            Ok(Ok(0)) => return Err(format!("echo #{got}: connection ended")),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("echo #{got}: {e}")),
            Err(_) => return Err(format!("echo #{got}: no progress in {IO_TIMEOUT:?}")),
        }
    }
}

/// Pipelines `count` messages (stopping early at `deadline`) with at most `window`
/// unanswered, checking every echo; the writer puts every frame the window allows into one
/// `write`, and reads and writes run concurrently so a full socket cannot deadlock them.
/// Returns the connection and the number echoed.
async fn raw_pipeline(
    raw: Raw,
    pay: &Payload,
    count: u64,
    window: u64,
    deadline: Instant,
) -> Result<(Raw, u64), String> {
    let Raw { tcp, mut inbuf } = raw;
    let (mut rd, mut wr) = tcp.into_split();
    let sent = Cell::new(0u64);
    let got = Cell::new(0u64);
    let done = Cell::new(false);
    let room = Notify::new();
    let progress = Notify::new();
    let writer = async {
        let mut out = Vec::with_capacity(window as usize * (pay.size + 14));
        let mut i = 0;
        while i < count && Instant::now() < deadline {
            while i - got.get() < window && i < count {
                push_text(&mut out, pay, i);
                i += 1;
            }
            within("send", wr.write_all(&out)).await?;
            out.clear();
            sent.set(i);
            progress.notify_one();
            if i - got.get() >= window {
                timed("waiting for echoes", room.notified()).await?;
            }
        }
        done.set(true);
        progress.notify_one();
        Ok::<_, String>(wr)
    };
    let reader = async {
        let mut partial = Vec::new();
        let mut n = 0u64;
        loop {
            if n == sent.get() {
                if done.get() {
                    break;
                }
                timed("waiting for the sender", progress.notified()).await?;
                continue;
            }
            raw_read_echoes(&mut rd, &mut inbuf, &mut partial, pay, &mut n).await?;
            got.set(n);
            room.notify_one();
        }
        Ok::<_, String>((rd, n))
    };
    let (wr, (rd, n)) = futures_util::try_join!(writer, reader)?;
    let tcp = rd.reunite(wr).map_err(|e| format!("reunite: {e}"))?;
    Ok((Raw { tcp, inbuf }, n))
}

/// Sends a close frame (1000) and reads until the server ends the connection. Bounded;
/// errors ignored (a server may drop TCP without answering the close).
async fn raw_close(mut raw: Raw) {
    let _ = tokio::time::timeout(Duration::from_secs(3), raw_shutdown(&mut raw)).await;
}

/// Sends a close frame (1000) and reads until the server ends the connection (a reset
/// ends it too).
async fn raw_shutdown(raw: &mut Raw) -> std::io::Result<()> {
    let code = 1000u16.to_be_bytes();
    let frame = [
        0x88,
        0x82,
        MASK[0],
        MASK[1],
        MASK[2],
        MASK[3],
        code[0] ^ MASK[0],
        code[1] ^ MASK[1],
    ];
    raw.tcp.write_all(&frame).await?;
    let mut sink = [0u8; 4096];
    loop {
        match raw.tcp.read(&mut sink).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

struct Metric {
    label: &'static str,
    better: Better,
}

const fn hi(label: &'static str) -> Metric {
    Metric {
        label,
        better: Better::Higher,
    }
}
const fn lo(label: &'static str) -> Metric {
    Metric {
        label,
        better: Better::Lower,
    }
}

/// One run's metrics for one subject, in the order of its scenario's `metrics`.
type Metrics = Vec<f64>;

/// How a scenario's runs go.
enum Run {
    /// One subject at a time: a run of each, one after the other.
    Each(fn(&Env, Subject) -> Result<Metrics, String>),
    /// All subjects within one call, taking turns in short blocks; returns each subject's
    /// metrics in the order given.
    Interleaved(fn(&Env, &[Subject]) -> Result<Vec<Metrics>, String>),
}

struct Scenario {
    name: &'static str,
    about: fn(&Params) -> String,
    subjects: &'static [Subject],
    metrics: &'static [Metric],
    run: Run,
}

const BOTH: &[Subject] = &[Subject::Wsbridge, Subject::Websocketd];

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "churn",
        about: |p| {
            format!(
                "connect, one echo through cat, close; {} per run, {} in flight",
                p.churn_conns, p.churn_in_flight
            )
        },
        subjects: &[Subject::Wsbridge, Subject::Websocketd, Subject::BareSpawn],
        metrics: &[hi("conn/s"), lo("client CPU µs/conn")],
        run: Run::Interleaved(run_churn),
    },
    Scenario {
        name: "echo16",
        about: |p| {
            format!(
                "one connection through cat, 16 B text, 32 in flight, up to {} msgs",
                p.echo16
            )
        },
        subjects: BOTH,
        metrics: &[
            hi("msg/s"),
            hi("MB/s"),
            lo("server CPU µs/msg"),
            lo("client CPU µs/msg"),
        ],
        run: Run::Each(|env, who| run_echo(env, who, 16, env.p.echo16, 32, 1)),
    },
    Scenario {
        name: "echo1k",
        about: |p| {
            format!(
                "one connection through cat, 1 KiB text, 32 in flight, up to {} msgs",
                p.echo1k
            )
        },
        subjects: BOTH,
        metrics: &[
            hi("msg/s"),
            hi("MB/s"),
            lo("server CPU µs/msg"),
            lo("client CPU µs/msg"),
        ],
        run: Run::Each(|env, who| run_echo(env, who, 1024, env.p.echo1k, 32, 1)),
    },
    Scenario {
        name: "echo64k",
        about: |p| {
            format!(
                "one connection through cat, 64 KiB text lines, {ECHO64K_WINDOW} in flight, up to {} msgs",
                p.echo64k
            )
        },
        subjects: BOTH,
        metrics: &[
            hi("msg/s"),
            hi("MB/s"),
            lo("server CPU µs/msg"),
            lo("client CPU µs/msg"),
        ],
        run: Run::Each(|env, who| run_echo(env, who, 64 * 1024, env.p.echo64k, ECHO64K_WINDOW, 1)),
    },
    Scenario {
        name: "echo16x8",
        about: |p| {
            format!(
                "8 connections through cat at once, 16 B text, 32 in flight each, up to {} msgs total",
                p.echo16x8
            )
        },
        subjects: BOTH,
        metrics: &[
            hi("msg/s"),
            hi("MB/s"),
            lo("server CPU µs/msg"),
            lo("client CPU µs/msg"),
        ],
        run: Run::Each(|env, who| run_echo(env, who, 16, env.p.echo16x8, 32, 8)),
    },
    Scenario {
        name: "burst",
        about: |p| {
            format!(
                "child `seq 1 {}` writes as fast as it can; every line checked",
                p.burst_lines
            )
        },
        subjects: BOTH,
        metrics: &[hi("lines/s")],
        run: Run::Each(run_burst),
    },
    Scenario {
        name: "rtt",
        about: |p| {
            format!(
                "one 16 B message at a time through cat, {} round trips (bare spawn: straight through \
                 cat's pipes; bare relay: TCP through a minimal relay to cat)",
                p.rtt_trips
            )
        },
        subjects: &[
            Subject::Wsbridge,
            Subject::Websocketd,
            Subject::BareSpawn,
            Subject::BareRelay,
        ],
        metrics: &[lo("p50 µs"), lo("p99 µs")],
        run: Run::Each(run_rtt),
    },
    Scenario {
        name: "rss_idle",
        about: |_| {
            "VmRSS of the server process, idle, 0.5 s after start; private: its RssAnon (heap, \
             stacks, relocated data), the part no other process shares"
                .into()
        },
        subjects: BOTH,
        metrics: &[lo("idle KiB"), lo("private KiB")],
        run: Run::Each(|env, who| run_rss(env, who, 0)),
    },
    Scenario {
        name: "rss_1000",
        about: |p| {
            format!(
                "VmRSS with {n} idle connections (one cat each); per conn = (loaded - idle)/{n}, \
                 private: the same for RssAnon; after: {s} s after the last of them closed",
                n = p.rss_conns,
                s = p.after_use.as_secs()
            )
        },
        subjects: BOTH,
        metrics: &[
            lo("idle KiB"),
            lo("loaded KiB"),
            lo("KiB/conn"),
            lo("private KiB/conn"),
            lo("private after KiB"),
            lo("after KiB"),
        ],
        run: Run::Each(|env, who| run_rss(env, who, env.p.rss_conns)),
    },
];

/// Connections per churn block (full runs).
const CHURN_BLOCK: u64 = 250;

/// Connection churn, interleaved: each run starts both servers, then the subjects take
/// turns in blocks of [`CHURN_BLOCK`] connections (wsbridge, websocketd, the bare floor;
/// each block led by the next subject), so a busy or quiet stretch of the host falls on
/// all of them alike. (Until 2026-12-03 each subject ran its 2,000 connections, about a
/// second, one after the other: with host steal at 0% the floor alone still moved
/// between 1,515 and 2,391 conn/s from run to run.) A subject's rate is its connections
/// over the summed time of its blocks; its client CPU is this process's (including the
/// floor's spawning), summed the same way.
fn run_churn(env: &Env, subjects: &[Subject]) -> Result<Vec<Metrics>, String> {
    // Dropped in any order, the last one stopped reaps what either orphaned.
    let mut servers = Vec::new();
    for &who in subjects {
        if who != Subject::BareSpawn {
            servers.push((who, Server::start(env, who, &[&env.cat], &[])?));
        }
    }
    let blocks = (env.p.churn_conns / CHURN_BLOCK).max(1);
    let per_block = env.p.churn_conns / blocks;
    let limit = env.p.time_limit / blocks as u32;
    // Per subject: connections done, seconds, client CPU seconds.
    let mut sums = vec![(0u64, 0.0, 0.0); subjects.len()];
    for b in 0..blocks {
        for k in (0..subjects.len()).map(|j| (j + b as usize) % subjects.len()) {
            let who = subjects[k];
            let cpu0 = process_cpu_secs();
            let first = b * per_block;
            let (done, secs) = match servers.iter().find(|(s, _)| *s == who) {
                Some((_, server)) => churn_block(env, server.port, first..first + per_block, limit),
                None => bare_block(env, first..first + per_block, limit),
            }
            .map_err(|e| format!("{}: {e}", who.label()))?;
            let sum = &mut sums[k];
            sum.0 += done;
            sum.1 += secs;
            sum.2 += process_cpu_secs() - cpu0;
        }
    }
    for (_, server) in &mut servers {
        server.check_alive()?;
    }
    Ok(sums
        .into_iter()
        .map(|(done, secs, cpu)| vec![done as f64 / secs, cpu / done.max(1) as f64 * 1e6])
        .collect())
}

/// CPU time of this whole process (every thread) in seconds, to the nanosecond: the churn
/// blocks are too short for `/proc`'s 10 ms ticks.
fn process_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer; this clock exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Connections `ids` against the server on `port`, `churn_in_flight` at a time, on the
/// one-thread client runtime. Returns (connections done, seconds); stops starting new
/// ones after `limit`.
fn churn_block(env: &Env, port: u16, ids: Range<u64>, limit: Duration) -> Result<(u64, f64), String> {
    let pay = Payload::new(16);
    env.rt.block_on(async {
        let next = Cell::new(ids.start);
        let done = Cell::new(0u64);
        let t0 = Instant::now();
        let worker = || async {
            loop {
                let i = next.get();
                if i >= ids.end || t0.elapsed() >= limit {
                    return Ok::<_, String>(());
                }
                next.set(i + 1);
                churn_once(port, &pay, i).await?;
                done.set(done.get() + 1);
            }
        };
        futures_util::future::try_join_all((0..env.p.churn_in_flight).map(|_| worker())).await?;
        Ok((done.get(), t0.elapsed().as_secs_f64()))
    })
}

/// The churn floor without any server: `churn_in_flight` tasks on a 2-worker runtime (like
/// wsbridge's own), each looping spawn `cat` → one line through it → close stdin → wait.
fn bare_block(env: &Env, ids: Range<u64>, limit: Duration) -> Result<(u64, f64), String> {
    env.rt_mt.block_on(async {
        let next = Arc::new(AtomicU64::new(ids.start));
        let done = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..env.p.churn_in_flight)
            .map(|_| {
                let (next, done, cat) = (Arc::clone(&next), Arc::clone(&done), env.cat.clone());
                let end = ids.end;
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= end || t0.elapsed() >= limit {
                            return Ok::<_, String>(());
                        }
                        bare_once(&cat, i).await?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.map_err(|e| format!("bare spawn task: {e}"))??;
        }
        Ok((done.load(Ordering::Relaxed), t0.elapsed().as_secs_f64()))
    })
}

/// One churn connection, with the raw client (as the echo scenarios since 2026-12-03):
/// the handshake, one 16-byte text message, its echo (checked), a close, and reading until
/// the server ends the connection. tokio-tungstenite's client (a random key, SHA-1 of the
/// answer, a buffer and a task's worth of state per connection) cost more CPU per
/// connection on the same two cores than the floor this scenario is compared with.
async fn churn_once(port: u16, pay: &Payload, i: u64) -> Result<(), String> {
    let mut raw = raw_connect(port).await?;
    let mut out = Vec::with_capacity(32);
    push_text(&mut out, pay, i);
    within("send", raw.tcp.write_all(&out)).await?;
    loop {
        match parse_frame(&raw.inbuf, 125)? {
            Some((true, 0x1, range)) => {
                pay.check_bytes(i, &raw.inbuf[range])?;
                break;
            }
            Some((_, 0x9 | 0xa, range)) => drop(raw.inbuf.drain(..range.end)),
            Some((_, op, _)) => {
                return Err(format!(
                    "churn #{i}: expected the echo, got a frame with opcode {op:#x}"
                ))
            }
            None if within("churn echo", raw.tcp.read_buf(&mut raw.inbuf)).await? == 0 => {
                return Err(format!("churn #{i}: connection ended before the echo"));
            }
            None => {}
        }
    }
    within("waiting for the server to close", raw_shutdown(&mut raw)).await
}

/// `cat` on pipes, for the floors measured without a server.
struct CatPipes {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
}

/// Writes `line` (at most 64 bytes, ending in a newline) to `w` and reads from `r` until the
/// echo's newline; checks the echo. `who` names the other side in errors (and costs nothing
/// otherwise: the round trip is what the rtt floors time).
async fn line_round_trip(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    line: &str,
    who: &str,
) -> Result<(), String> {
    within("write", w.write_all(line.as_bytes()))
        .await
        .map_err(|e| format!("{who}: {e}"))?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while !buf[..got].contains(&b'\n') {
        let n = within("read", r.read(&mut buf[got..]))
            .await
            .map_err(|e| format!("{who}: {e}"))?;
        if n == 0 {
            return Err(format!("{who} ended before echoing"));
        }
        got += n;
    }
    if buf[..got] != *line.as_bytes() {
        return Err(format!("{who} echoed {:?}", String::from_utf8_lossy(&buf[..got])));
    }
    Ok(())
}

impl CatPipes {
    fn spawn(cat: &Path) -> Result<Self, String> {
        let mut child = tokio::process::Command::new(cat)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", cat.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        Ok(CatPipes { child, stdin, stdout })
    }

    /// Writes `line` (one line of at most 64 bytes, with its newline) and reads until cat
    /// has echoed it; checks the echo.
    async fn round_trip(&mut self, line: &str) -> Result<(), String> {
        line_round_trip(&mut self.stdin, &mut self.stdout, line, "cat").await
    }

    /// Closes cat's stdin and waits for it to exit.
    async fn close(self) -> Result<(), String> {
        let CatPipes { mut child, stdin, .. } = self;
        drop(stdin);
        within("waiting for cat to exit", child.wait()).await?;
        Ok(())
    }
}

/// The floor for churn: spawn `cat`, one line through its pipes, close stdin, wait.
async fn bare_once(cat: &Path, i: u64) -> Result<(), String> {
    let mut pipes = CatPipes::spawn(cat)?;
    pipes.round_trip(&format!("churn-{i}\n")).await?;
    pipes.close().await
}

fn run_echo(env: &Env, who: Subject, size: usize, total: u64, window: usize, conns: usize) -> Result<Vec<f64>, String> {
    let mut server = Server::start(env, who, &[&env.cat], &[])?;
    let port = server.port;
    let pay = Payload::new(size);
    let per_conn = total / conns as u64;
    let pid = server.pid();
    let (msgs, secs, cpu, client) = env.rt.block_on(async {
        let mut wss = Vec::with_capacity(conns);
        for _ in 0..conns {
            wss.push(raw_connect(port).await?);
        }
        let me = std::process::id();
        let (cpu0, client0) = (cpu_secs(pid)?, cpu_secs(me)?);
        let t0 = Instant::now();
        let deadline = t0 + env.p.time_limit;
        let results = futures_util::future::try_join_all(
            wss.into_iter()
                .map(|raw| raw_pipeline(raw, &pay, per_conn, window as u64, deadline)),
        )
        .await?;
        let secs = t0.elapsed().as_secs_f64();
        let (cpu, client) = (cpu_secs(pid)? - cpu0, cpu_secs(me)? - client0);
        let mut msgs = 0;
        for (raw, got) in results {
            msgs += got;
            raw_close(raw).await;
        }
        Ok::<_, String>((msgs, secs, cpu, client))
    })?;
    server.check_alive()?;
    let rate = msgs as f64 / secs;
    let per_msg = |s: f64| s / msgs as f64 * 1e6;
    Ok(vec![rate, rate * size as f64 / 1e6, per_msg(cpu), per_msg(client)])
}

fn run_burst(env: &Env, who: Subject) -> Result<Vec<f64>, String> {
    let n = env.p.burst_lines;
    let mut server = Server::start(env, who, &[&env.seq], &["1".into(), n.to_string()])?;
    let port = server.port;
    let limit = env.p.time_limit * 3;
    let rate = env.rt.block_on(async {
        let t0 = Instant::now();
        let mut ws = connect(port).await?;
        let mut got = 0u64;
        loop {
            match timed("burst line", ws.next()).await? {
                Some(Ok(Message::Text(t))) => {
                    got += 1;
                    if t.parse::<u64>() != Ok(got) {
                        return Err(format!("burst: line {got} is {:?}", t.as_str()));
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(Message::Binary(_))) => return Err("burst: unexpected binary message".into()),
                Some(Ok(_)) => {}
                // websocketd may drop TCP without a close frame: fine once every line is in.
                Some(Err(e)) if got < n => return Err(format!("burst: after {got} of {n} lines: {e}")),
                Some(Err(_)) => break,
            }
            if got % 4096 == 0 && t0.elapsed() > limit {
                return Err(format!("burst: only {got} of {n} lines after {limit:?}"));
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        if got != n {
            return Err(format!("burst: connection ended after {got} of {n} lines"));
        }
        Ok(got as f64 / secs)
    })?;
    server.check_alive()?;
    Ok(vec![rate])
}

/// The floor under `rtt`: the same round trips straight through `cat`'s pipes, no server
/// and no socket, on the same current-thread runtime.
fn run_rtt_bare(env: &Env) -> Result<Vec<f64>, String> {
    let (trips, limit, cat) = (env.p.rtt_trips, env.p.time_limit, &env.cat);
    let us = env.rt.block_on(async {
        let mut pipes = CatPipes::spawn(cat)?;
        // What cat gets through a server: the 16 B message and a newline.
        let samples = sample_trips(trips, limit, async |i| pipes.round_trip(&format!("{i:016}\n")).await).await?;
        pipes.close().await?;
        Ok::<_, String>(samples)
    })?;
    p50_p99(us, limit)
}

fn run_rtt(env: &Env, who: Subject) -> Result<Vec<f64>, String> {
    match who {
        Subject::BareSpawn => return run_rtt_bare(env),
        Subject::BareRelay => return run_rtt_relay(env),
        _ => {}
    }
    let mut server = Server::start(env, who, &[&env.cat], &[])?;
    let port = server.port;
    let trips = env.p.rtt_trips;
    let limit = env.p.time_limit;
    let us = env.rt.block_on(async {
        let mut raw = raw_connect(port).await?;
        let pay = Payload::new(16);
        let (mut out, mut partial, mut got) = (Vec::new(), Vec::new(), 0);
        let samples = sample_trips(trips, limit, async |i| {
            out.clear();
            push_text(&mut out, &pay, i);
            within("rtt send", raw.tcp.write_all(&out)).await?;
            raw_read_echoes(&mut raw.tcp, &mut raw.inbuf, &mut partial, &pay, &mut got)
                .await
                .map(drop)
        })
        .await;
        raw_close(raw).await;
        samples
    })?;
    server.check_alive()?;
    p50_p99(us, limit)
}

/// The round-trip floor of any relay between TCP and a program's pipes: a relay with no
/// WebSocket and no event loop, one blocking thread per direction copying with `read` and
/// `write` (not `std::io::copy`: its `splice` path holds small writes back), the client
/// sending the same 17-byte lines over TCP. What wsbridge or websocketd adds above this is
/// their own; the rest is loopback TCP, pipes and waking threads on this machine.
fn run_rtt_relay(env: &Env) -> Result<Vec<f64>, String> {
    let (trips, limit) = (env.p.rtt_trips, env.p.time_limit);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("relay bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| format!("relay address: {e}"))?.port();
    let cat = env.cat.clone();
    let relay = std::thread::spawn(move || -> Result<(), String> {
        let (sock, _) = listener.accept().map_err(|e| format!("relay accept: {e}"))?;
        sock.set_nodelay(true).map_err(|e| format!("relay nodelay: {e}"))?;
        let mut child = Command::new(&cat)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("relay: spawn {}: {e}", cat.display()))?;
        let (mut stdin, mut stdout) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"));
        let mut sock_in = sock.try_clone().map_err(|e| format!("relay clone: {e}"))?;
        let mut sock_out = sock;
        // Ends when the client closes; dropping `stdin` then ends cat, which ends the copy below.
        let up = std::thread::spawn(move || pump(&mut sock_in, &mut stdin));
        let down = pump(&mut stdout, &mut sock_out);
        let _ = sock_out.shutdown(std::net::Shutdown::Both);
        let _ = up.join();
        let _ = child.kill();
        child.wait().map_err(|e| format!("relay wait: {e}"))?;
        down.map_err(|e| format!("relay copy: {e}"))
    });
    let us = env.rt.block_on(async {
        let mut tcp = within("TCP connect", TcpStream::connect(("127.0.0.1", port))).await?;
        tcp.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
        let (mut rd, mut wr) = tcp.split();
        sample_trips(trips, limit, async |i| {
            line_round_trip(&mut wr, &mut rd, &format!("{i:016}\n"), "the relay").await
        })
        .await
    });
    // The client's socket is closed by now (dropped in the block above, also on error),
    // so the relay thread ends: its reads see the end, cat exits. Had the client failed
    // before connecting, one more connection ends the relay's wait in accept.
    if us.is_err() {
        let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    }
    relay.join().map_err(|_| "relay thread panicked".to_owned())??;
    p50_p99(us?, limit)
}

/// Copies `from` to `to` until the end of `from`, one `write` per `read`.
fn pump(from: &mut impl std::io::Read, to: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf)? {
            0 => return Ok(()),
            n => to.write_all(&buf[..n])?,
        }
    }
}

/// Times the round trips `trip(0)`, `trip(1)`, …: 50 to warm up, then up to `trips` timed
/// ones (µs), stopping early at `limit`. Each trip includes building its message.
async fn sample_trips(
    trips: usize,
    limit: Duration,
    mut trip: impl AsyncFnMut(u64) -> Result<(), String>,
) -> Result<Vec<f64>, String> {
    const WARM: u64 = 50;
    let mut samples = Vec::with_capacity(trips);
    let t_all = Instant::now();
    for i in 0..WARM + trips as u64 {
        let t = Instant::now();
        trip(i).await?;
        if i >= WARM {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        if t_all.elapsed() > limit {
            break;
        }
    }
    Ok(samples)
}

/// Median and 99th percentile of round-trip samples (µs); fewer than 100 is an error.
fn p50_p99(mut us: Vec<f64>, limit: Duration) -> Result<Vec<f64>, String> {
    if us.len() < 100 {
        return Err(format!("rtt: only {} round trips in {limit:?}", us.len()));
    }
    us.sort_by(f64::total_cmp);
    Ok(vec![us[us.len() / 2], us[us.len() * 99 / 100]])
}

fn run_rss(env: &Env, who: Subject, conns: usize) -> Result<Vec<f64>, String> {
    evict_from_page_cache(match who {
        Subject::Wsbridge => &env.wsbridge,
        Subject::Websocketd => &env.websocketd,
        Subject::BareSpawn | Subject::BareRelay => unreachable!("no memory baseline"),
    });
    let mut server = Server::start(env, who, &[&env.cat], &[])?;
    let (port, pid) = (server.port, server.pid());
    std::thread::sleep(SETTLE);
    let idle = status_kib(pid, "VmRSS:")?;
    let idle_anon = status_kib(pid, "RssAnon:")?;
    if conns == 0 {
        return Ok(vec![idle, idle_anon]);
    }
    let (loaded, loaded_anon, closed) = env.rt.block_on(async {
        let pay = Payload::new(16);
        let pay = &pay;
        let open = stream::iter(0..conns as u64)
            .map(|i| async move {
                let mut ws = connect(port).await?;
                within("send", ws.send(pay.make(i))).await?;
                pay.check(i, &next_msg(&mut ws, "first echo").await?)?;
                Ok::<_, String>(ws)
            })
            .buffer_unordered(16);
        let wss: Vec<Ws> = timed("opening connections", open.try_collect()).await??;
        tokio::time::sleep(SETTLE).await;
        let kids = child_count(pid);
        let loaded = status_kib(pid, "VmRSS:")?;
        let loaded_anon = status_kib(pid, "RssAnon:")?;
        drop(wss); // every connection ends; each server then ends its cat
        let closed = Instant::now();
        let end = closed + IO_TIMEOUT;
        while child_count(pid) > 0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if kids < conns {
            return Err(format!(
                "expected {conns} programs running under the server, found {kids}"
            ));
        }
        match child_count(pid) {
            0 => Ok((loaded, loaded_anon, closed)),
            left => Err(format!(
                "{left} programs still running {IO_TIMEOUT:?} after the last close"
            )),
        }
    })?;
    // What the server keeps once the peak is over: read a fixed time after the last close,
    // so that a server that gives memory back on a timer or when idle is measured alike.
    std::thread::sleep((closed + env.p.after_use).saturating_duration_since(Instant::now()));
    let after = status_kib(pid, "VmRSS:")?;
    let after_anon = status_kib(pid, "RssAnon:")?;
    server.check_alive()?;
    let n = conns as f64;
    Ok(vec![
        idle,
        loaded,
        (loaded - idle) / n,
        (loaded_anon - idle_anon) / n,
        after_anon,
        after,
    ])
}

// ---------------------------------------------------------------------------------------
// Results, statistics, report
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Outcome {
    /// subject → runs → metric values
    runs: HashMap<Subject, Vec<Vec<f64>>>,
    error: Option<String>,
}

#[derive(Default)]
struct Results {
    by_scenario: HashMap<&'static str, Outcome>,
    sizes: Option<Sizes>,
}

impl Results {
    fn median(&self, scenario: &str, who: Subject, metric: usize) -> Option<f64> {
        let o = self.by_scenario.get(scenario)?;
        if o.error.is_some() {
            return None;
        }
        let v: Vec<f64> = o.runs.get(&who)?.iter().map(|r| r[metric]).collect();
        stats(&v).map(|s| s.0)
    }
    /// The run-by-run ratio a/b of a metric ([`paired`]) and the two medians.
    fn ratio(&self, scenario: &str, a: Subject, b: Subject, metric: usize) -> Option<Ratio> {
        let o = self.by_scenario.get(scenario)?;
        Some(Ratio {
            paired: paired(o.runs.get(&a)?, o.runs.get(&b)?, metric)?,
            a: self.median(scenario, a, metric)?,
            b: self.median(scenario, b, metric)?,
        })
    }
}

struct Ratio {
    /// (median, min, max) of the run-by-run ratios
    paired: (f64, f64, f64),
    /// the medians of the two subjects
    a: f64,
    b: f64,
}

/// (median, min, max) of `a[r][metric] / b[r][metric]` over the runs r. A scenario runs its
/// subjects one after another within each run (churn in alternating blocks), so the two
/// runs of a pair saw about the same host: on a shared VM whose steal time drifts over minutes, the ratio of the two
/// medians can compare one subject's quiet runs with the other's busy ones, the median of
/// the pairs does not. Pairs with a zero divisor (CPU time under one 10 ms tick) are left out.
fn paired(a: &[Vec<f64>], b: &[Vec<f64>], metric: usize) -> Option<(f64, f64, f64)> {
    let r: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x[metric] / y[metric])
        .filter(|r| r.is_finite())
        .collect();
    stats(&r)
}

/// (median, min, max)
fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((med, s[0], s[n - 1]))
}

fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        // thousands separators for readability
        let s = format!("{:.0}", x);
        let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
        let mut out = String::new();
        for (k, c) in digits.chars().enumerate() {
            if k > 0 && (digits.len() - k) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn run_scenario(env: &Env, sc: &Scenario, runs: usize) -> Outcome {
    println!("\n== {}: {} ==", sc.name, (sc.about)(&env.p));
    let mut out = Outcome::default();
    let ticks0 = cpu_ticks();
    'runs: for r in 0..runs {
        let mut line = format!("  run {}/{runs}:", r + 1);
        // Each subject's metrics so far, and what stopped the run if something did.
        let (got, err) = match sc.run {
            Run::Each(f) => {
                let mut got = Vec::new();
                let mut err = None;
                for &who in sc.subjects {
                    match f(env, who) {
                        Ok(v) => got.push(v),
                        Err(e) => {
                            err = Some(format!("{}: {e}", who.label()));
                            break;
                        }
                    }
                }
                (got, err)
            }
            Run::Interleaved(f) => match f(env, sc.subjects) {
                Ok(got) => (got, None),
                Err(e) => (Vec::new(), Some(e)),
            },
        };
        for (&who, v) in sc.subjects.iter().zip(got) {
            let shown: Vec<String> = v
                .iter()
                .zip(sc.metrics)
                .map(|(x, m)| format!("{} {}", num(*x), m.label))
                .collect();
            line.push_str(&format!("  {} {}", who.label(), shown.join(", ")));
            out.runs.entry(who).or_default().push(v);
        }
        println!("{line}");
        if let Some(e) = err {
            println!("  ERROR (run {}): {e}", r + 1);
            out.error = Some(e);
            break 'runs;
        }
    }
    if let Some(p) = steal_pct(ticks0, cpu_ticks()) {
        println!("  host steal: {p:.0}% of the machine's CPU time during these runs");
    }
    if out.error.is_some() {
        return out;
    }
    for (k, m) in sc.metrics.iter().enumerate() {
        let dir = if m.better == Better::Higher {
            "higher is better"
        } else {
            "lower is better"
        };
        println!("  {} ({dir}):", m.label);
        for &who in sc.subjects {
            let v: Vec<f64> = out.runs[&who].iter().map(|r| r[k]).collect();
            let (md, mn, mx) = stats(&v).expect("at least one run");
            println!(
                "    {:<15} median {:>12}   [{} – {}]",
                who.label(),
                num(md),
                num(mn),
                num(mx)
            );
        }
        let mut ratios = String::from("    ratio, run by run:");
        for (vs, label) in [
            (Subject::Websocketd, "wsbridge/websocketd"),
            (Subject::BareSpawn, "wsbridge/bare spawn"),
            (Subject::BareRelay, "wsbridge/bare relay"),
        ] {
            if let Some(b) = out.runs.get(&vs) {
                if let Some((md, mn, mx)) = paired(&out.runs[&Subject::Wsbridge], b, k) {
                    ratios.push_str(&format!("  {label} {md:.2}x [{mn:.2} – {mx:.2}]"));
                }
            }
        }
        println!("{ratios}");
    }
    out
}

/// Binary sizes on disk, in bytes.
struct Sizes {
    /// The measured wsbridge and whether it was built with TLS.
    wsbridge: (u64, bool),
    /// The minimal-features build, when this run built it.
    minimal: Option<u64>,
}

fn run_sizes(env: &Env) -> Sizes {
    println!("\n== size: server binaries on disk ==");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    let ws = size(&env.wsbridge).unwrap_or(0);
    // TLS builds expose websocketd's --ssl flags; the size goal depends on it.
    let tls = Command::new(&env.wsbridge)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--ssl"))
        .unwrap_or(false);
    println!(
        "    wsbridge    {} bytes ({}, TLS {})",
        num(ws as f64),
        env.wsbridge.display(),
        if tls { "included" } else { "not included" }
    );
    let minimal = env.minimal.as_deref().and_then(|p| {
        let bytes = size(p)?;
        println!(
            "    wsbridge, minimal features  {} bytes ({}, --no-default-features)",
            num(bytes as f64),
            p.display()
        );
        Some(bytes)
    });
    if minimal.is_none() {
        println!("    wsbridge, minimal features: not sized (only full runs build it)");
    }
    if let Some(wd) = size(&env.websocketd) {
        println!(
            "    websocketd  {} bytes ({})",
            num(wd as f64),
            env.websocketd.display()
        );
        println!("    ratio wsbridge/websocketd {:.2}x", ws as f64 / wd as f64);
    }
    Sizes {
        wsbridge: (ws, tls),
        minimal,
    }
}

/// Prints the target table (markdown).
fn report_targets(res: &Results, p: &Params) {
    use Subject::{BareRelay, BareSpawn, Websocketd, Wsbridge};
    type Row = (String, String, Option<(String, bool)>);
    let ratio_row =
        |name: &str, goal_txt: &str, sc: &str, m: usize, unit: &str, vs: Subject, goal: f64, higher: bool| -> Row {
            let cell = res.ratio(sc, Wsbridge, vs, m).map(
                |Ratio {
                     paired: (r, lo, hi),
                     a,
                     b,
                 }| {
                    let ok = if higher { r >= goal } else { r <= goal };
                    (
                        format!("{r:.2}× [{lo:.2} – {hi:.2}] ({} vs {} {unit})", num(a), num(b)),
                        ok,
                    )
                },
            );
            (name.to_owned(), goal_txt.to_owned(), cell)
        };
    // A private-memory target (RssAnon, a metric of rss_1000) with the total (VmRSS, metric
    // `total`) beside it, and websocketd's two: no target for the totals.
    let memory_row = |name: String, goal_txt: &str, anon: usize, total: usize, limit: f64| -> Row {
        let cell = res.median("rss_1000", Wsbridge, anon).map(|v| {
            let mut text = format!("{} KiB", num(v));
            if let Some(t) = res.median("rss_1000", Wsbridge, total) {
                text.push_str(&format!(" (VmRSS {}", num(t)));
                if let (Some(wa), Some(wt)) = (
                    res.median("rss_1000", Websocketd, anon),
                    res.median("rss_1000", Websocketd, total),
                ) {
                    text.push_str(&format!("; websocketd {} private, VmRSS {}", num(wa), num(wt)));
                }
                text.push(')');
            }
            (text, v <= limit)
        });
        (name, goal_txt.to_owned(), cell)
    };
    let mut rows: Vec<Row> = vec![
        ratio_row(
            "churn vs websocketd",
            "≥ 1.5×",
            "churn",
            0,
            "conn/s",
            Websocketd,
            1.5,
            true,
        ),
        ratio_row(
            "churn vs bare spawn+cat",
            "≥ 0.85×",
            "churn",
            0,
            "conn/s",
            BareSpawn,
            0.85,
            true,
        ),
        ratio_row("echo 16 B msg/s", "≥ 4×", "echo16", 0, "msg/s", Websocketd, 4.0, true),
        ratio_row(
            "echo 1 KiB msg/s",
            "≥ 3.5×",
            "echo1k",
            0,
            "msg/s",
            Websocketd,
            3.5,
            true,
        ),
        ratio_row(
            "echo 64 KiB MB/s",
            "≥ 2.5×",
            "echo64k",
            1,
            "MB/s",
            Websocketd,
            2.5,
            true,
        ),
        ratio_row("burst lines/s", "≥ 8×", "burst", 0, "lines/s", Websocketd, 8.0, true),
        ratio_row("RTT p50", "≤ 0.7×", "rtt", 0, "µs", Websocketd, 0.7, false),
        memory_row(
            format!(
                "private memory (RssAnon) idle after {} connections, {} s after they closed",
                num(p.rss_conns as f64),
                p.after_use.as_secs()
            ),
            "≤ 1.5 MiB (1,536 KiB)",
            4,
            5,
            1536.0,
        ),
        memory_row(
            "private memory (RssAnon) per idle connection".into(),
            "≤ 12 KiB",
            3,
            2,
            12.0,
        ),
    ];
    let (with_tls, without_tls) = match &res.sizes {
        Some(Sizes {
            wsbridge: (bytes, true),
            minimal,
        }) => (Some(*bytes), *minimal),
        Some(Sizes {
            wsbridge: (bytes, false),
            ..
        }) => (None, Some(*bytes)),
        None => (None, None),
    };
    let size_row = |name: &str, goal_txt: &str, bytes: Option<u64>, limit: f64| -> Row {
        let cell = bytes.map(|b| {
            (
                format!("{} bytes ({:.2} MB)", num(b as f64), b as f64 / 1e6),
                b as f64 <= limit,
            )
        });
        (name.into(), goal_txt.into(), cell)
    };
    rows.push(size_row("stripped binary (with TLS)", "≤ 2.0 MB", with_tls, 2.0e6));
    rows.push(size_row(
        "stripped binary (minimal features, without TLS)",
        "≤ 1.2 MB",
        without_tls,
        1.2e6,
    ));
    println!(
        "\n== targets (wsbridge; ratios are wsbridge/other: the median of the run-by-run ratios [min – max], then the two medians) ==\n"
    );
    println!("| target | goal | measured | status |");
    println!("|---|---|---|---|");
    for (name, goal, cell) in rows {
        let (measured, status) = match cell {
            Some((m, true)) => (m, "PASS"),
            Some((m, false)) => (m, "MISS"),
            None => ("—".into(), "not measured"),
        };
        println!("| {name} | {goal} | {measured} | {status} |");
    }
    // Not measured here: the test command builds it (`tools/static.sh`).
    println!(
        "| static musl build | documented, built, smoke-tested | not by this harness | see the test command (`tools/static.sh`) |"
    );
    let extra = [
        ("echo16x8", 0, "msg/s"),
        ("echo64k", 0, "msg/s"),
        ("rtt", 1, "µs p99"),
        ("echo16", 2, "server CPU µs/msg"),
        ("echo1k", 2, "server CPU µs/msg"),
        ("echo64k", 2, "server CPU µs/msg"),
        ("echo16x8", 2, "server CPU µs/msg"),
    ];
    let mut notes: Vec<String> = extra
        .iter()
        .filter_map(|&(sc, m, unit)| {
            res.ratio(sc, Wsbridge, Websocketd, m)
                // Server CPU comes in 10 ms ticks: a short (--quick) run may count none.
                .filter(|r| r.a > 0.0 && r.b > 0.0)
                .map(|Ratio { paired: (r, ..), a, b }| format!("{sc} {r:.2}× ({} vs {} {unit})", num(a), num(b)))
        })
        .collect();
    // A fresh server's memory, the target until 2026-12 (most of it shared, clean pages).
    for who in [Wsbridge, Websocketd] {
        if let (Some(total), Some(anon)) = (res.median("rss_idle", who, 0), res.median("rss_idle", who, 1)) {
            notes.push(format!(
                "fresh idle {} VmRSS {} KiB, private {} KiB",
                who.label(),
                num(total),
                num(anon)
            ));
        }
    }
    // How far each server is above the least any relay adds: the RTT target's bound.
    for who in [Wsbridge, Websocketd] {
        if let Some(Ratio { paired: (r, ..), a, b }) = res.ratio("rtt", who, BareRelay, 0) {
            notes.push(format!(
                "rtt p50 {} / bare relay {r:.2}× ({} vs {} µs)",
                who.label(),
                num(a),
                num(b)
            ));
        }
    }
    if !notes.is_empty() {
        println!("\nno target, for reference: {}", notes.join("; "));
    }
}

// ---------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.metadata().map(|m| m.is_file()).unwrap_or(false))
}

fn ensure_websocketd() -> Result<PathBuf, String> {
    if let Some(p) = which("websocketd") {
        return Ok(p);
    }
    println!("websocketd is not on PATH; running: apt-get install -y websocketd");
    let st = Command::new("apt-get")
        .args(["install", "-y", "websocketd"])
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !st.success() {
        return Err(format!(
            "apt-get install -y websocketd failed ({st}); install websocketd 0.4.1 and retry"
        ));
    }
    which("websocketd").ok_or_else(|| "websocketd still not on PATH after apt-get install".into())
}

/// Whether this run builds the binaries it measures (full runs) rather than taking the copy
/// `cargo bench` built or the one `--wsbridge` names.
fn building(opts: &Opts) -> bool {
    opts.wsbridge.is_none() && opts.build.unwrap_or(!opts.quick)
}

/// The target directory this bench executable was built in: it is
/// `TARGET/<profile dir>/deps/compare-HASH`.
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| "cannot locate the target directory".into())
}

/// Runs `cargo build --release --bin wsbridge EXTRA` in this package (a no-op taking well
/// under a second when that build is current).
fn cargo_build(extra: &[&str]) -> Result<(), String> {
    let shown = ["cargo build --release --bin wsbridge"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    println!("running: {shown} (no-op when current)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "--bin", "wsbridge"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({st}); fix the build or pass --no-build / --wsbridge=PATH"
        ))
    }
}

fn wsbridge_binary(opts: &Opts) -> Result<PathBuf, String> {
    if let Some(p) = &opts.wsbridge {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(format!("--wsbridge={}: no such file", p.display()))
        };
    }
    if !building(opts) {
        // The copy `cargo bench` built for this bench (bench profile: release settings, but
        // panic=unwind as cargo forces for anything linked into a test or bench).
        return Ok(PathBuf::from(env!("CARGO_BIN_EXE_wsbridge")));
    }
    cargo_build(&[])?;
    let bin = target_dir()?.join("release/wsbridge");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} not found after the build", bin.display()))
    }
}

/// The minimal-features release build (`--no-default-features`: no TLS, no `--connect`),
/// built into `TARGET/minimal` so that it does not replace the default build, for the size
/// table. Only full runs build it; `--quick`, `--no-build` and `--wsbridge` runs leave it
/// out rather than size a binary of unknown age.
fn minimal_binary(opts: &Opts) -> Result<Option<PathBuf>, String> {
    if !building(opts) {
        return Ok(None);
    }
    let dir = target_dir()?.join("minimal");
    let dir_arg = format!("--target-dir={}", dir.display());
    cargo_build(&["--no-default-features", &dir_arg])?;
    let bin = dir.join("release/wsbridge");
    if bin.is_file() {
        Ok(Some(bin))
    } else {
        Err(format!("{} not found after the build", bin.display()))
    }
}

/// Soft RLIMIT_NOFILE high enough for `conns` connections (client socket, server socket
/// and 3 pipes per connection, counted in this process and inherited by the servers),
/// within the hard limit (raised too if we may).
fn raise_nofile(conns: usize) -> Result<(), String> {
    let want = (conns as u64 * 6 + 1024).max(8192);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err("getrlimit(RLIMIT_NOFILE) failed".into());
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    let new = libc::rlimit {
        rlim_cur: want.max(lim.rlim_cur),
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
        println!("raised RLIMIT_NOFILE from {} to {}", lim.rlim_cur, new.rlim_cur);
        return Ok(());
    }
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if lim.rlim_max >= want && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        println!("raised RLIMIT_NOFILE from {} to {}", lim.rlim_cur, capped.rlim_cur);
        return Ok(());
    }
    Err(format!(
        "RLIMIT_NOFILE is {} (hard {}), need {want} for {conns} connections",
        lim.rlim_cur, lim.rlim_max
    ))
}

fn main() -> ExitCode {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("compare: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let selected = |name: &str| opts.only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    let setup = || -> Result<Env, String> {
        let p = Params::new(opts.quick);
        raise_nofile(p.rss_conns)?;
        // SAFETY: prctl with integer arguments. Orphans of killed servers come to us.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let websocketd = ensure_websocketd()?;
        let wsbridge = wsbridge_binary(&opts)?;
        let minimal = if selected("size") { minimal_binary(&opts)? } else { None };
        let cat = which("cat").ok_or("cat not on PATH")?;
        let seq = which("seq").ok_or("seq not on PATH")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let rt_mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        Ok(Env {
            wsbridge,
            minimal,
            websocketd,
            cat,
            seq,
            rt,
            rt_mt,
            p,
        })
    };
    let env = match setup() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("compare: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "wsbridge: {}\nwebsocketd: {}\nruns per scenario: {}{}; child programs: {} and {}",
        env.wsbridge.display(),
        env.websocketd.display(),
        opts.runs,
        if opts.quick { " (quick)" } else { "" },
        env.cat.display(),
        env.seq.display()
    );
    let started = Instant::now();
    let ticks0 = cpu_ticks();
    let mut res = Results::default();
    let mut failed = false;
    for sc in SCENARIOS.iter().filter(|s| selected(s.name)) {
        let out = run_scenario(&env, sc, opts.runs);
        failed |= out.error.is_some();
        res.by_scenario.insert(sc.name, out);
    }
    if selected("size") {
        res.sizes = Some(run_sizes(&env));
    }
    report_targets(&res, &env.p);
    print!("\nmeasuring took {:.1} s", started.elapsed().as_secs_f64());
    match steal_pct(ticks0, cpu_ticks()) {
        Some(p) => println!("; host steal: {p:.0}% of the machine's CPU time (the higher, the noisier)"),
        None => println!(),
    }
    if failed {
        println!("some runs FAILED (see ERROR lines above)");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
