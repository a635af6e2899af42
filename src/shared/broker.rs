//! `--broker` (cargo feature `nats`): the hub's link to a NATS server, so that one
//! `--shared` program feeds clients on many instances. Core NATS, so delivery is at most
//! once; one connection per instance, so order is kept per producer.
//!
//! Subjects, for `--topic=T`:
//!
//! | subject | who publishes | who subscribes | payload |
//! |---|---|---|---|
//! | `wsbridge.T.out` | the producer, each output message | every edge | the message |
//! | `wsbridge.T.to.N` | the producer, `@ID text` for a client of instance N | edge N | the line, `@ID` kept |
//! | `wsbridge.T.in.ID` | an edge, its client ID's whole messages | the producer (`in.*`) | the program's bytes |
//!
//! A binary message carries the header `Wsbridge-Type: binary`; anything else is text.
//!
//! Bounds: the producer's output waits for the broker in a queue bounded like one
//! client's, by `--sharedqueue` bytes and [`PUBLISH_QUEUE`] messages, and is dropped (and
//! counted) when it is full, so a broker outage never stalls the program or the local
//! clients. The client's own command queue holds
//! [`CLIENT_CAPACITY`] commands; a subscription buffers [`SUBSCRIPTION_CAPACITY`]
//! messages, beyond which async-nats drops them and reports a slow consumer (logged and
//! counted). Input from an edge's clients waits for the broker like input for a program
//! that does not read: it pushes back on their sockets. In the producer, edges' input
//! waits for the program for at most `--sharedqueue` bytes; the subscription is always
//! read, and what is beyond that bound is dropped, counted and logged.
//!
//! It owns the connection, the subjects and the counting; who receives what is the hub's.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, HeaderMap, ServerAddr, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{Hub, Input, Source};
use crate::config::broker::{Broker, Credentials, Role};
use crate::stats::STATS;

/// Producer output waiting for the broker, in messages.
pub const PUBLISH_QUEUE: usize = super::QUEUE_MESSAGES;
/// async-nats' queue of commands (publishes) to its connection task.
pub const CLIENT_CAPACITY: usize = 1024;
/// Messages one subscription may buffer before async-nats drops them (slow consumer).
pub const SUBSCRIPTION_CAPACITY: usize = 64 * 1024;
/// Incoming messages handed to the fan-out at once.
const BATCH: usize = 256;
const HEADER_TYPE: &str = "Wsbridge-Type";

/// A message for the broker: for every edge (`None`) or for one instance.
type Outgoing = (Option<u64>, Message);

/// What the hub holds of the broker before and while it is connected.
pub struct Link {
    settings: Broker,
    instance: u32,
    out: mpsc::Sender<Outgoing>,
    out_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Payload bytes in `out`, at most `limit` (`--sharedqueue`).
    queued: AtomicUsize,
    limit: usize,
    /// Set while output is being dropped, so an outage is logged once, not per message.
    dropping: AtomicBool,
}

impl Link {
    /// A link whose publish queue holds at most `limit` bytes (`--sharedqueue`).
    pub fn new(settings: Broker, limit: usize) -> Self {
        let (out, out_rx) = mpsc::channel(PUBLISH_QUEUE);
        Link {
            settings,
            instance: instance_number(),
            out,
            out_rx: Mutex::new(Some(out_rx)),
            queued: AtomicUsize::new(0),
            limit,
            dropping: AtomicBool::new(false),
        }
    }

    /// This instance's number, the high half of its clients' ids: random, from 1 to
    /// 2^21 - 1, so that ids stay below 2^53 (exact as JavaScript numbers).
    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// Queues `msg` for every edge (`to` = `None`) or for instance `to`; never waits.
    pub fn publish(&self, to: Option<u64>, msg: Message) {
        let len = msg.len();
        let room = self.queued.load(Ordering::Acquire) < self.limit;
        // Counted before it is queued, so the publisher's subtraction never comes first.
        self.queued.fetch_add(len, Ordering::AcqRel);
        let sent = match room {
            true => self.out.try_send((to, msg)).is_ok(),
            false => false,
        };
        if !sent {
            self.queued.fetch_sub(len, Ordering::AcqRel);
        }
        match sent {
            true => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("broker publish queue has room again; publishing output");
                }
            }
            false => {
                STATS.broker.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        limit_bytes = self.limit,
                        "broker publish queue full (broker down or slow); dropping output for the other instances"
                    );
                }
            }
        }
    }
}

/// A random number in 1..2^21 (std's hasher keys are random per process).
fn instance_number() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let n = (h.finish() % ((1 << 21) - 1)) as u32;
    n + 1
}

/// The subjects of `topic`.
struct Subjects {
    out: Subject,
    /// `wsbridge.T.to.` and `wsbridge.T.in.`, to which a number is added.
    to: String,
    input: String,
}

impl Subjects {
    fn new(topic: &str) -> Self {
        Subjects {
            out: Subject::from(format!("wsbridge.{topic}.out")),
            to: format!("wsbridge.{topic}.to."),
            input: format!("wsbridge.{topic}.in."),
        }
    }
}

/// Connects, then serves the hub's side of the broker until shutdown: the producer
/// publishes output and feeds input to the program; an edge delivers output to its
/// clients and publishes their input.
pub async fn run(hub: Arc<Hub>) {
    let Some(link) = hub.link.as_ref() else { return };
    let settings = &link.settings;
    let subjects = Subjects::new(&settings.topic);
    let client = match connect(settings, link.instance).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(broker = %settings.redacted(), error = %e, "cannot use the broker");
            return;
        }
    };
    let served = async {
        match settings.role {
            Role::Producer => producer(&hub, link, &client, &subjects).await,
            Role::Edge => edge(&hub, link, &client, &subjects).await,
        }
    };
    tokio::select! {
        () = served => {}
        () = hub.shutdown.cancelled() => {}
    }
    // What was published reaches the server before wsbridge exits (bounded: the server
    // may be gone).
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    let b = &STATS.broker;
    tracing::info!(
        broker = %settings.redacted(),
        messages_in = b.received.messages.load(Ordering::Relaxed),
        messages_out = b.published.messages.load(Ordering::Relaxed),
        dropped = b.dropped.load(Ordering::Relaxed),
        slow_consumer = b.slow_consumer.load(Ordering::Relaxed),
        reconnects = b.reconnects.load(Ordering::Relaxed),
        "broker connection ended"
    );
}

async fn connect(settings: &Broker, instance: u32) -> Result<Client, async_nats::ConnectError> {
    let role = match settings.role {
        Role::Producer => "producer",
        Role::Edge => "edge",
    };
    let servers: Vec<ServerAddr> = settings
        .servers
        .iter()
        .filter_map(|s| ServerAddr::from_str(s).ok())
        .collect();
    let shown = settings.redacted();
    let counts = Arc::new(Counts::default());
    let mut options = ConnectOptions::new()
        .name(format!("wsbridge {role} {instance}"))
        .client_capacity(CLIENT_CAPACITY)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .retry_on_initial_connect()
        .max_reconnects(None)
        // 0, 100 ms, 200 ms, ... up to 2 s between attempts.
        .reconnect_delay_callback(|n| match n {
            0 | 1 => Duration::ZERO,
            n => Duration::from_millis(100u64 << (n - 2).min(5)).min(Duration::from_secs(2)),
        })
        .ping_interval(Duration::from_secs(20))
        .event_callback(move |event| {
            let (shown, counts) = (shown.clone(), Arc::clone(&counts));
            async move { log_event(event, &shown, &counts) }
        });
    options = match &settings.credentials {
        Some(Credentials::UserPassword { user, password }) => {
            options.user_and_password(user.clone(), password.0.clone())
        }
        Some(Credentials::Token(token)) => options.token(token.0.clone()),
        None => options,
    };
    if settings.tls {
        options = options.require_tls(true);
    }
    if let Some(ca) = &settings.ca {
        options = options.add_root_certificates(ca.clone());
    }
    tracing::info!(broker = %settings.redacted(), topic = %settings.topic, role, instance, "connecting to the broker");
    options.connect(servers).await
}

/// What [`log_event`] remembers between events.
#[derive(Default)]
struct Counts {
    connects: AtomicU64,
    /// Client errors (failed connection attempts) since the last connect.
    failures: AtomicU64,
}

/// One log line per connection change; counts reconnects and slow consumers. A broker
/// that stays away is retried every 2 s: its errors are logged 3 times, then once a
/// minute or so (every 30th).
fn log_event(event: Event, broker: &str, counts: &Counts) {
    let b = &STATS.broker;
    match event {
        Event::Connected => {
            counts.failures.store(0, Ordering::Relaxed);
            if counts.connects.fetch_add(1, Ordering::Relaxed) > 0 {
                b.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            b.connected.store(1, Ordering::Relaxed);
            tracing::info!(
                broker,
                messages_in = b.received.messages.load(Ordering::Relaxed),
                messages_out = b.published.messages.load(Ordering::Relaxed),
                "broker connected"
            );
        }
        Event::Disconnected => {
            b.connected.store(0, Ordering::Relaxed);
            tracing::warn!(
                broker,
                messages_in = b.received.messages.load(Ordering::Relaxed),
                messages_out = b.published.messages.load(Ordering::Relaxed),
                "broker disconnected; reconnecting (messages published meanwhile are lost)"
            );
        }
        Event::SlowConsumer(_) => {
            b.slow_consumer.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                capacity = SUBSCRIPTION_CAPACITY,
                "broker messages arrive faster than they are handled; the broker client dropped some"
            );
        }
        Event::ServerError(e) => tracing::error!(broker, error = %e, "broker error"),
        Event::ClientError(e) => {
            let n = counts.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n <= 3 || n % 30 == 0 {
                tracing::warn!(broker, error = %e, failures = n, "broker client error");
            }
        }
        Event::LameDuckMode => tracing::warn!(broker, "broker entering lame duck mode"),
        Event::Draining | Event::Closed => tracing::info!(broker, event = %event, "broker connection"),
    }
}

/// The producer: output to the broker, input from it to the program.
async fn producer(hub: &Hub, link: &Link, client: &Client, subjects: &Subjects) {
    let Some(mut out) = link.out_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let publishing = async {
        while let Some((to, msg)) = out.recv().await {
            let subject = match to {
                None => subjects.out.clone(),
                Some(n) => Subject::from(format!("{}{n}", subjects.to)),
            };
            let len = msg.len();
            publish(client, subject, msg).await;
            link.queued.fetch_sub(len, Ordering::AcqRel);
        }
    };
    let receiving = async {
        let wildcard = format!("{}*", subjects.input);
        let mut sub = match client.subscribe(wildcard).await {
            Ok(s) => s,
            Err(e) => return tracing::error!(error = %e, "cannot subscribe to the edges' input"),
        };
        subscribed(client, &format!("{}*", subjects.input)).await;
        // Edges' input waits here for the program, at most `--sharedqueue` bytes (one
        // message always fits). The subscription is always read, so a program that does
        // not read makes input beyond that be dropped, counted and logged, instead of
        // filling the subscription with up to its capacity of messages of any size.
        let mut waiting = std::collections::VecDeque::<Input>::new();
        let mut waiting_bytes = 0usize;
        let mut dropped = 0u64;
        loop {
            tokio::select! {
                permit = hub.input.reserve(), if !waiting.is_empty() => {
                    let Ok(permit) = permit else { return };
                    // The guard above: `waiting` is not empty.
                    let Some(item) = waiting.pop_front() else { continue };
                    waiting_bytes -= item.bytes.len();
                    permit.send(item);
                    if dropped > 0 && waiting.is_empty() {
                        tracing::warn!(messages = dropped, "edges' input dropped while the program was not reading");
                        dropped = 0;
                    }
                }
                msg = sub.next() => {
                    let Some(msg) = msg else { break };
                    let from = msg.subject.rsplit('.').next().and_then(|id| id.parse::<u64>().ok());
                    let Some(from) = from else {
                        tracing::debug!(subject = %msg.subject, "input on a subject without a client id; dropped");
                        continue;
                    };
                    let len = msg.payload.len();
                    STATS.broker.received.add(len);
                    if !waiting.is_empty() && waiting_bytes + len > link.limit {
                        if dropped == 0 {
                            tracing::warn!(
                                limit_bytes = link.limit,
                                "the program is not reading; dropping edges' input beyond --sharedqueue"
                            );
                        }
                        dropped += 1;
                        STATS.broker.input_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    waiting_bytes += len;
                    waiting.push_back(Input { from, bytes: msg.payload });
                }
            }
        }
        // The subscription ended (the connection closed for good): hand on what waits.
        for item in waiting {
            if hub.input.send(item).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(publishing, receiving);
}

/// An edge: the producer's output to the clients here, their input to the producer.
async fn edge(hub: &Hub, link: &Link, client: &Client, subjects: &Subjects) {
    let Some(mut input) = hub.take_input() else { return };
    let forwarding = async {
        while let Some(Input { from, bytes }) = input.recv().await {
            let subject = Subject::from(format!("{}{from}", subjects.input));
            let len = bytes.len();
            match client.publish(subject, bytes).await {
                Ok(()) => STATS.broker.published.add(len),
                Err(e) => {
                    STATS.broker.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(client = from, error = %e, "cannot publish client input to the broker; dropped");
                }
            }
        }
    };
    let delivering = async {
        let to_me = format!("{}{}", subjects.to, link.instance);
        let (all, mine) = match (
            client.subscribe(subjects.out.clone()).await,
            client.subscribe(to_me).await,
        ) {
            (Ok(a), Ok(m)) => (a, m),
            (Err(e), _) | (_, Err(e)) => {
                return tracing::error!(error = %e, "cannot subscribe to the producer's output")
            }
        };
        subscribed(client, &format!("{} {}{}", subjects.out, subjects.to, link.instance)).await;
        let all = all.map(|m| (Source::Broker, m));
        let mine = mine.map(|m| (Source::Addressed, m));
        let mut both = futures_util::stream::select(all, mine).ready_chunks(BATCH);
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(msgs) = both.next().await {
            let mut source = Source::Broker;
            for (from, msg) in msgs {
                if from != source && !batch.is_empty() {
                    hub.broadcast(&mut batch, source);
                }
                source = from;
                STATS.broker.received.add(msg.payload.len());
                if let Some(m) = to_message(msg) {
                    batch.push(m);
                }
            }
            hub.broadcast(&mut batch, source);
        }
    };
    tokio::join!(forwarding, delivering);
}

/// Logs once the server has the subscriptions (a flush is answered after them).
async fn subscribed(client: &Client, subjects: &str) {
    match client.flush().await {
        Ok(()) => tracing::info!(subjects, "broker subscribed"),
        Err(e) => tracing::warn!(subjects, error = %e, "broker subscription not confirmed"),
    }
}

async fn publish(client: &Client, subject: Subject, msg: Message) {
    let len = msg.len();
    let sent = match msg {
        Message::Text(t) => client.publish(subject, Bytes::from(t)).await,
        Message::Binary(b) => {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_TYPE, "binary");
            client.publish_with_headers(subject, headers, b).await
        }
        _ => return,
    };
    match sent {
        Ok(()) => STATS.broker.published.add(len),
        Err(e) => {
            STATS.broker.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(bytes = len, error = %e, "cannot publish output to the broker; dropped");
        }
    }
}

/// A broker message as a WebSocket message: binary when marked so, else text (dropped,
/// with a log line, when it is not UTF-8).
fn to_message(msg: async_nats::Message) -> Option<Message> {
    let binary = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER_TYPE))
        .is_some_and(|v| v.as_str() == "binary");
    if binary {
        return Some(Message::Binary(msg.payload));
    }
    match Utf8Bytes::try_from(msg.payload) {
        Ok(text) => Some(Message::Text(text)),
        Err(_) => {
            tracing::debug!(subject = %msg.subject, "broker message is not UTF-8 text nor marked binary; dropped");
            None
        }
    }
}
