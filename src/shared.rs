//! `--shared`: one long-running program for every client. Each message the program prints
//! goes to every connected client (with `--shared=ids`, a line `@ID text` goes to client
//! `ID` only); each client's messages go to its stdin, whole messages never interleaved
//! (with `ids`, each line prefixed by `ID `).
//!
//! The [`Hub`] owns the program. Its output is decoded once and each message is queued
//! for every client (the queues share the bytes); a client whose queue holds more than
//! `--sharedqueue` bytes is dropped with close 1008, so a slow client never stalls the
//! program or the others. Input from all clients funnels through one bounded channel into
//! one writer, so a program that does not read pushes back on the clients' sockets.
//!
//! The program starts at the first connection (or at startup with `eager`). When it ends
//! it is restarted with a growing delay (100 ms doubling to 10 s, back to 100 ms after a
//! run of 10 s), and clients stay connected; with `once` every client gets the Close its
//! exit status deserves (1000 or 1011), then wsbridge exits with that status.
//!
//! This file is the hub: the program, its restarts, the fan-out and the input writer.
//! Each client's session is in `client` ([`run_client`]); it reuses [`crate::relay`]'s
//! input pump and [`crate::session`]'s close, and neither of those knows `--shared`.

mod client;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::pin;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::child;
use crate::config::{Program, Session, Shared};
use crate::framing::{Decoder, Framing};
use crate::reap;
use crate::relay;
use crate::session;
use crate::stats;

pub use self::client::run_client;

/// Most messages one client may have waiting, whatever their size.
const QUEUE_MESSAGES: usize = 64 * 1024;
/// Input batches (each up to a read of client messages) waiting for the program.
const INPUT_QUEUE: usize = 64;
/// Client input gathered into one write to the program.
const INPUT_BATCH: usize = 64 * 1024;
const RESTART_MIN: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(10);
/// A run at least this long resets the restart delay.
const STABLE_RUN: Duration = Duration::from_secs(10);
/// After the program exited, how long its remaining output may take to be read.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// With `once`: how long clients may take to receive the last output and close.
const CLIENT_DRAIN: Duration = Duration::from_secs(3);

/// The one program and everyone connected to it.
pub struct Hub {
    program: Program,
    env: Vec<(OsString, OsString)>,
    settings: Shared,
    framing: Framing,
    max_message: usize,
    close_grace: Duration,
    members: Mutex<Members>,
    input: mpsc::Sender<Bytes>,
    input_rx: Mutex<Option<mpsc::Receiver<Bytes>>>,
    started: AtomicBool,
    shutdown: CancellationToken,
    /// Where the supervisor runs, so the server's drain waits for the program's stop.
    tasks: TaskTracker,
    /// The client sessions, so `once` can let them finish before shutting down.
    clients: TaskTracker,
    /// With `once`: wsbridge's exit status, set when the program ended.
    exit: OnceLock<u8>,
}

#[derive(Default)]
struct Members {
    map: HashMap<u64, Member>,
    /// With `once`, after the program ended: the Close every client gets.
    ended: Option<(CloseCode, String)>,
    /// Messages printed while nobody was connected.
    unheard: u64,
}

struct Member {
    tx: mpsc::Sender<Message>,
    queued: Arc<AtomicUsize>,
    kick: Arc<Kick>,
}

/// Why and when a client is dropped by the hub.
#[derive(Default)]
struct Kick {
    token: CancellationToken,
    reason: OnceLock<String>,
}

/// One client's place in the hub, from the handshake on; leaving the hub on drop.
pub struct Membership {
    hub: Arc<Hub>,
    id: u64,
    rx: mpsc::Receiver<Message>,
    queued: Arc<AtomicUsize>,
    kick: Arc<Kick>,
}

impl Membership {
    /// The client's number in the hub (`--shared=ids` prefixes its lines with it).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        lock(&self.hub.members).map.remove(&self.id);
        stats::shared_client(false);
    }
}

fn lock(m: &Mutex<Members>) -> std::sync::MutexGuard<'_, Members> {
    // A panic while holding the lock cannot leave the map half-updated in a way that
    // matters (every change is one insert or remove), so a poisoned lock is still used.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// A hub for `config`'s PROGRAM (`--shared` is checked to come with one). With
    /// `eager` the program starts now; call from within the runtime.
    pub fn new(config: &Session, settings: Shared, shutdown: CancellationToken, tasks: TaskTracker) -> Arc<Self> {
        let program = config
            .program
            .clone()
            .expect("--shared is checked to come with PROGRAM");
        let mut env: Vec<(OsString, OsString)> = config.passenv.iter().map(|(k, v)| (k.into(), v.into())).collect();
        env.push((
            "SERVER_SOFTWARE".into(),
            concat!("wsbridge/", env!("CARGO_PKG_VERSION")).into(),
        ));
        let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
        let hub = Arc::new(Hub {
            program,
            env,
            settings,
            framing: config.framing,
            max_message: config.max_message,
            close_grace: config.close_grace,
            members: Mutex::default(),
            input,
            input_rx: Mutex::new(Some(input_rx)),
            started: AtomicBool::new(false),
            shutdown,
            tasks,
            clients: TaskTracker::new(),
            exit: OnceLock::new(),
        });
        if settings.eager {
            hub.start();
        }
        hub
    }

    /// wsbridge's exit status: the program's with `once` after it ended, else 0.
    pub fn exit_status(&self) -> u8 {
        self.exit.get().copied().unwrap_or(0)
    }

    /// Adds client `id`; starts the program if it is not running yet. Refused once a
    /// `once` program has ended.
    pub fn join(self: &Arc<Self>, id: u64) -> Result<Membership, &'static str> {
        let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
        let queued = Arc::new(AtomicUsize::new(0));
        let kick = Arc::new(Kick::default());
        {
            let mut members = lock(&self.members);
            if members.ended.is_some() {
                return Err("the shared program has exited");
            }
            members.map.insert(
                id,
                Member {
                    tx,
                    queued: Arc::clone(&queued),
                    kick: Arc::clone(&kick),
                },
            );
        }
        self.start();
        stats::shared_client(true);
        Ok(Membership {
            hub: Arc::clone(self),
            id,
            rx,
            queued,
            kick,
        })
    }

    fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            let hub = Arc::clone(self);
            self.tasks
                .spawn(async move { hub.supervise().await }.instrument(tracing::info_span!(parent: None, "shared")));
        }
    }

    /// Runs the program, again and again unless `once`, until shutdown.
    async fn supervise(self: Arc<Self>) {
        let Some(mut input) = self.input_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let mut delay = RESTART_MIN;
        loop {
            let began = Instant::now();
            let Some(status) = self.run_once(&mut input).await else {
                return; // shutdown
            };
            let exit = match &status {
                Ok(s) => child::describe(s),
                Err(e) => e.to_string(),
            };
            if self.settings.once {
                tracing::info!(exit = %exit, "shared program ended; closing every client and exiting (--shared=once)");
                self.finish(&status).await;
                return;
            }
            if began.elapsed() >= STABLE_RUN {
                delay = RESTART_MIN;
            }
            tracing::warn!(exit = %exit, restart_in_ms = delay.as_millis() as u64, "shared program ended; restarting");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(RESTART_MAX);
        }
    }

    /// One run of the program; `None` when it was stopped for shutdown.
    async fn run_once(&self, input: &mut mpsc::Receiver<Bytes>) -> Option<io::Result<ExitStatus>> {
        let (mut child, io) = match session::start(&self.program, self.env.clone(), None) {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(program = %self.program.path.display(), error = %e, "failed to start the shared program");
                return if self.shutdown.is_cancelled() {
                    None
                } else {
                    Some(Err(e))
                };
            }
        };
        let session::ProgramIo {
            input: stdin,
            output: mut stdout,
            stderr,
        } = io;
        tracing::info!(pid = child.id(), "shared program started");
        // Started on pipes, so stderr is its own pipe.
        let stderr_task = stderr.map(|e| tokio::spawn(child::log_stderr(e, None).in_current_span()));
        let mut exited = false;
        let mut stopping = false;
        {
            let mut out = pin!(self.pump_output(&mut stdout));
            let mut inp = pin!(feed_input(input, stdin));
            tokio::select! {
                () = &mut out => {}
                () = &mut inp => {}
                () = child.exited() => {
                    exited = true;
                    child.signal_group(Signal::SIGKILL);
                    if tokio::time::timeout(OUTPUT_DRAIN, &mut out).await.is_err() {
                        tracing::warn!("shared program exited but its output is still open; no longer reading it");
                    }
                }
                () = self.shutdown.cancelled() => stopping = true,
            }
        }
        let status = match exited {
            true => reap::collect(child),
            false => reap::stop(child, self.close_grace).await.status,
        };
        session::finish_stderr(stderr_task).await;
        if stopping {
            let exit = status.as_ref().map_or_else(|e| e.to_string(), child::describe);
            tracing::info!(exit = %exit, "shared program stopped for shutdown");
            return None;
        }
        Some(status)
    }

    /// Reads the program's output and hands each message to the clients; returns at EOF
    /// or on a read or framing error (logged).
    async fn pump_output(&self, stdout: &mut (dyn AsyncRead + Unpin + Send)) {
        let mut decoder = Decoder::new(self.framing, self.max_message);
        let mut messages = Vec::new();
        loop {
            let (decoded, done) = match relay::read_chunk(stdout).await {
                Ok(Some(chunk)) => (decoder.push(chunk, &mut messages), false),
                Ok(None) => (decoder.finish(&mut messages), true),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the shared program's output failed");
                    (decoder.finish(&mut messages), true)
                }
            };
            self.broadcast(&mut messages);
            if let Err(e) = decoded {
                tracing::warn!(
                    offset = e.offset,
                    reason = e.reason,
                    "shared program output broke --framing=lenprefix; stopping it"
                );
                return;
            }
            if done {
                return;
            }
        }
    }

    /// Queues each message for every client (or, with `ids`, for the one it names).
    fn broadcast(&self, messages: &mut Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let mut members = lock(&self.members);
        if members.map.is_empty() {
            members.unheard += messages.len() as u64;
            tracing::debug!(
                messages = messages.len(),
                "shared program output with no client connected; dropped"
            );
            messages.clear();
            return;
        }
        let mut dropped = Vec::new();
        for msg in messages.drain(..) {
            let (to, msg) = match self.settings.ids {
                true => address(msg),
                false => (None, msg),
            };
            match to {
                Some(id) => match members.map.get(&id) {
                    Some(m) => {
                        if !self.deliver(id, m, msg) {
                            dropped.push(id);
                        }
                    }
                    None => tracing::debug!(
                        client = id,
                        "output addressed to a client that is not connected; dropped"
                    ),
                },
                None => {
                    for (id, m) in &members.map {
                        if !self.deliver(*id, m, msg.clone()) {
                            dropped.push(*id);
                        }
                    }
                }
            }
            for id in dropped.drain(..) {
                members.map.remove(&id);
            }
        }
    }

    /// Queues `msg` for one client; false when the client is dropped (too slow) or gone.
    fn deliver(&self, id: u64, m: &Member, msg: Message) -> bool {
        let len = msg.len();
        let waiting = m.queued.load(Ordering::Acquire);
        let full = waiting >= self.settings.queue_bytes;
        if !full {
            // Counted before it is queued, so the client's subtraction never comes first.
            m.queued.fetch_add(len, Ordering::AcqRel);
            match m.tx.try_send(msg) {
                Ok(()) => return true,
                Err(e) => {
                    m.queued.fetch_sub(len, Ordering::AcqRel);
                    if matches!(e, mpsc::error::TrySendError::Closed(_)) {
                        return false;
                    }
                }
            }
        }
        tracing::warn!(
            client = id,
            waiting_bytes = waiting,
            limit = self.settings.queue_bytes,
            "client too slow for the shared program's output; dropping it (1008)"
        );
        let _ = m
            .kick
            .reason
            .set(format!("too slow: {waiting} bytes of output waiting (--sharedqueue)"));
        m.kick.token.cancel();
        stats::shared_dropped();
        false
    }

    /// With `once`: every client gets the last output and a Close with the exit status,
    /// then wsbridge shuts down.
    async fn finish(&self, status: &io::Result<ExitStatus>) {
        let code = match status {
            Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
            Err(_) => 1,
        };
        let _ = self.exit.set(u8::try_from(code).unwrap_or(1));
        {
            let mut members = lock(&self.members);
            members.ended = Some(session::close_for_exit(status));
            // Dropping the queues' senders: each client sends what is queued, then closes.
            members.map.clear();
        }
        self.clients.close();
        if tokio::time::timeout(CLIENT_DRAIN, self.clients.wait()).await.is_err() {
            tracing::warn!("clients still open after the shared program ended; shutting down anyway");
        }
        self.shutdown.cancel();
    }

    /// `fut` (a client's session) counted among the clients `once` waits for.
    pub fn track<F: std::future::Future>(&self, fut: F) -> impl std::future::Future<Output = F::Output> {
        self.clients.track_future(fut)
    }

    fn ended(&self) -> Option<(CloseCode, String)> {
        lock(&self.members).ended.clone()
    }
}

/// `@ID text` → (`ID`, `text`); anything else is for everyone.
fn address(msg: Message) -> (Option<u64>, Message) {
    let Message::Text(text) = &msg else { return (None, msg) };
    let Some(rest) = text.as_str().strip_prefix('@') else {
        return (None, msg);
    };
    let Some((id, _)) = rest.split_once(' ') else {
        return (None, msg);
    };
    let Ok(n) = id.parse::<u64>() else { return (None, msg) };
    let skip = 1 + id.len() + 1;
    let bytes = Bytes::from(text.clone()).slice(skip..);
    // Cut after an ASCII space, so still UTF-8.
    match Utf8Bytes::try_from(bytes) {
        Ok(t) => (Some(n), Message::Text(t)),
        Err(_) => (None, msg),
    }
}

/// Writes client input to the program, a batch at a time. If the program closes its
/// stdin, input is read and discarded (with a log line) until the run ends; returns only
/// when the hub is gone.
async fn feed_input(input: &mut mpsc::Receiver<Bytes>, mut stdin: Box<dyn AsyncWrite + Unpin + Send>) {
    let mut batch = BytesMut::new();
    let mut discarded = 0u64;
    let mut open = true;
    while let Some(first) = input.recv().await {
        if !open {
            discarded += 1;
            tracing::info!(
                batches = discarded,
                "shared program no longer reads stdin; client input discarded"
            );
            continue;
        }
        batch.extend_from_slice(&first);
        while batch.len() < INPUT_BATCH {
            match input.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = stdin.write_all(&batch).await {
            tracing::warn!(error = %e, "shared program's stdin is closed; discarding further client input");
            open = false;
        }
        batch.clear();
    }
}
