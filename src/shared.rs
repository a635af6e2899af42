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
//! With `--broker` (cargo feature `nats`) the hub also talks to a NATS broker, in `broker`:
//! the producer publishes every output message and feeds the program what its edges'
//! clients send; an edge has no program, and its "program" is the subscription. Client ids
//! then carry the instance's number in their high 32 bits, so they are unique across the
//! deployment and `@ID text` finds its client on any instance.
//!
//! This file is the hub: who is connected, the restarts and the fan-out. The program's
//! runs and the input writer are in `program`; what a queue holds (with `--compress`, a
//! message's compressed form shared by its copies) in `queued`; each client's session is
//! in `client` ([`run_client`]); it reuses [`crate::relay`]'s input pump and
//! [`crate::session`]'s close, and neither of those knows `--shared`.

#[cfg(feature = "nats")]
mod broker;
mod client;
mod program;
mod queued;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::child;
use crate::config::{Broker, Program, Session, Shared};
use crate::framing::Framing;
use crate::session;
use crate::stats;

pub use self::client::run_client;
pub use self::queued::Precompress;
use self::queued::Queued;

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

/// Whole messages from one client for the program's stdin.
struct Input {
    /// The client's id (`ids` prefixes each line with it).
    from: u64,
    bytes: Bytes,
}

/// Where messages for the fan-out come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The local program: with `ids`, `@ID text` goes to client ID wherever it is; the
    /// rest to everyone (and, with a broker, to every edge).
    Program,
    /// The producer through the broker, for every client here.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    Broker,
    /// The producer through the broker, `@ID text` for one client here.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    Addressed,
}

/// The one program (or, on an edge, the broker) and everyone connected to it.
pub struct Hub {
    /// `None` on an edge (`--broker` without PROGRAM).
    program: Option<Program>,
    env: Vec<(OsString, OsString)>,
    settings: Shared,
    framing: Framing,
    max_message: usize,
    close_grace: Duration,
    /// `--compress`: messages for everyone carry a slot for their compressed form.
    compress: bool,
    members: Mutex<Members>,
    input: mpsc::Sender<Input>,
    input_rx: Mutex<Option<mpsc::Receiver<Input>>>,
    /// With `--broker`: the high 32 bits of every client id here (0 without).
    instance: u64,
    #[cfg(feature = "nats")]
    link: Option<broker::Link>,
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
    tx: mpsc::Sender<Queued>,
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
    rx: mpsc::Receiver<Queued>,
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
    /// A hub for `config`'s PROGRAM (`--shared` is checked to come with one unless
    /// `broker` makes this an edge). With `eager` the program (or the broker connection)
    /// starts now; call from within the runtime.
    pub fn new(
        config: &Session,
        settings: Shared,
        broker: Option<Broker>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        let program = config.program.clone();
        #[cfg(feature = "nats")]
        let link = broker.map(|b| broker::Link::new(b, settings.queue_bytes));
        #[cfg(feature = "nats")]
        let instance = link.as_ref().map_or(0, |l| u64::from(l.instance()) << 32);
        #[cfg(not(feature = "nats"))]
        let instance = {
            // The config refuses --broker in a build without the `nats` feature.
            debug_assert!(broker.is_none());
            0
        };
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
            compress: config.compress.is_some(),
            members: Mutex::default(),
            input,
            input_rx: Mutex::new(Some(input_rx)),
            instance,
            #[cfg(feature = "nats")]
            link,
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

    /// Adds the client of connection `conn`; starts the program if it is not running
    /// yet. Refused once a `once` program has ended. Its id is `conn`, with a broker in
    /// the low 32 bits beside the instance's number.
    pub fn join(self: &Arc<Self>, conn: u64) -> Result<Membership, &'static str> {
        let id = match self.instance {
            0 => conn,
            instance => instance | (conn & 0xffff_ffff),
        };
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
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        #[cfg(feature = "nats")]
        if self.link.is_some() {
            let hub = Arc::clone(self);
            self.tasks
                .spawn(async move { broker::run(hub).await }.instrument(tracing::info_span!(parent: None, "broker")));
        }
        if let Some(program) = self.program.clone() {
            let hub = Arc::clone(self);
            self.tasks.spawn(
                async move { hub.supervise(program).await }.instrument(tracing::info_span!(parent: None, "shared")),
            );
        }
    }

    /// The receiving end of the clients' input: the program's writer takes it, or on an
    /// edge the broker's forwarder.
    fn take_input(&self) -> Option<mpsc::Receiver<Input>> {
        self.input_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Runs the program, again and again unless `once`, until shutdown.
    async fn supervise(self: Arc<Self>, program: Program) {
        let Some(mut input) = self.take_input() else {
            return;
        };
        let mut delay = RESTART_MIN;
        loop {
            let began = Instant::now();
            let Some(status) = self.run_once(&program, &mut input).await else {
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

    /// Queues each message for every client (or, with `ids`, for the one it names); the
    /// program's output also goes to the broker, if any.
    fn broadcast(&self, messages: &mut Vec<Message>, source: Source) {
        if messages.is_empty() {
            return;
        }
        let mut members = lock(&self.members);
        if members.map.is_empty() && !self.publishes(source) {
            members.unheard += messages.len() as u64;
            tracing::debug!(
                messages = messages.len(),
                "shared output with no client connected; dropped"
            );
            messages.clear();
            return;
        }
        let mut dropped = Vec::new();
        let addressing = match source {
            Source::Program => self.settings.ids,
            Source::Broker => false,
            Source::Addressed => true,
        };
        for msg in messages.drain(..) {
            // The program's `@ID text` for a client of another instance goes there whole.
            let original = (addressing && self.publishes(source)).then(|| msg.clone());
            let (to, msg) = match addressing {
                true => address(msg),
                false => (None, msg),
            };
            match to {
                Some(id) if original.is_some() && id >> 32 != self.instance >> 32 => {
                    if let Some(original) = original {
                        self.publish(Some(id >> 32), original);
                    }
                }
                Some(id) => match members.map.get(&id) {
                    Some(m) => {
                        if !self.deliver(id, m, Queued::plain(msg)) {
                            dropped.push(id);
                        }
                    }
                    None => tracing::debug!(
                        client = id,
                        "output addressed to a client that is not connected; dropped"
                    ),
                },
                None => {
                    if self.publishes(source) {
                        self.publish(None, msg.clone());
                    }
                    let all = Queued::for_all(msg, self.compress);
                    for (id, m) in &members.map {
                        if !self.deliver(*id, m, all.clone()) {
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

    /// Whether messages from `source` go to the broker too (the producer's output).
    fn publishes(&self, source: Source) -> bool {
        #[cfg(feature = "nats")]
        return source == Source::Program && self.link.is_some();
        #[cfg(not(feature = "nats"))]
        return {
            let _ = source;
            false
        };
    }

    /// Hands `msg` to the broker: for every edge, or for instance `to`.
    fn publish(&self, to: Option<u64>, msg: Message) {
        #[cfg(feature = "nats")]
        if let Some(link) = &self.link {
            link.publish(to, msg);
        }
        #[cfg(not(feature = "nats"))]
        let _ = (to, msg);
    }

    /// Queues `msg` for one client; false when the client is dropped (too slow) or gone.
    fn deliver(&self, id: u64, m: &Member, msg: Queued) -> bool {
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
