//! The process-wide counters behind `--metrics`: plain atomics that the rooms below the
//! HTTP layer bump where things happen (a session starts or ends, a message passes, a
//! program exits, a request is refused, a TLS handshake fails, a `--shared` client is
//! dropped). It owns the numbers only; [`crate::metrics`] reads them at scrape time and
//! writes the Prometheus text.
//!
//! Why globals: every counter is a fact about the one process, like the exposition
//! itself, and the places that count (the relay's pumps, [`crate::reap`], the TLS task)
//! do not carry the server state. They are `static` atomics, so counting takes no lock
//! and allocates nothing. The per-message counters are the only ones on the hot path, and
//! they are bumped only when `--metrics` is on ([`enable`]): otherwise
//! [`crate::relay::Counters`] carries no total and the relay pays one branch.
//!
//! A session's route is looked up (one short lock, one allocation the first time a route
//! is seen) when the session starts, never per message. Routes are the `SCRIPT_NAME`s of
//! programs that were started, so their number is bounded by the scripts that exist.

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Upper bounds (seconds) of the session duration histogram's buckets; `+Inf` follows.
/// From a request/response exchange to a day-long terminal.
pub const DURATION_BUCKETS: [f64; 10] = [0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0];

/// Signal numbers counted by name; Linux has 64 (the real-time ones have no name in nix).
pub const SIGNALS: usize = 65;

/// Messages and payload bytes that went one way, summed over every session.
#[derive(Debug, Default)]
pub struct Flow {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

impl Flow {
    const fn new() -> Self {
        Flow {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn add(&self, payload: usize) {
        self.messages.fetch_add(1, Relaxed);
        self.bytes.fetch_add(payload as u64, Relaxed);
    }
}

/// Sessions of one route: running now, and started since startup.
#[derive(Debug, Default)]
pub struct Route {
    pub active: AtomicU64,
    pub total: AtomicU64,
}

/// Every counter of the process. One instance, [`STATS`].
pub struct Stats {
    /// Client → program.
    pub received: Flow,
    /// Program → client.
    pub sent: Flow,
    /// Sessions by route (`SCRIPT_NAME`: `/` for PROGRAM, the script's path with `--dir`).
    routes: Mutex<BTreeMap<Box<str>, Arc<Route>>>,
    /// Session durations: a count per bucket of [`DURATION_BUCKETS`] (not cumulative),
    /// then `+Inf`; the sum in microseconds.
    pub duration_buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    pub duration_sum_us: AtomicU64,
    /// Refused WebSocket upgrades, by HTTP status (index = status - 100).
    pub refusals: [AtomicU64; 500],
    /// Plain HTTP answers by status class (index 0 = 1xx … 4 = 5xx).
    pub http: [AtomicU64; 5],
    /// Programs (sessions, `--shared`, CGI) that exited with this code…
    pub exit_codes: [AtomicU64; 256],
    /// …or were killed by this signal number.
    pub exit_signals: [AtomicU64; SIGNALS],
    /// TLS handshakes that failed or timed out.
    pub tls_failures: AtomicU64,
    /// `--shared` clients connected now, and dropped for being too slow (1008).
    pub shared_clients: AtomicU64,
    pub shared_dropped: AtomicU64,
    /// `--broker`: messages in from and out to the broker, and what it cost.
    pub broker: BrokerStats,
}

/// `--broker`'s counters (always counted: one atomic add per broker message).
pub struct BrokerStats {
    /// Messages received from the broker (output on an edge, input on the producer)…
    pub received: Flow,
    /// …and published to it (output on the producer, input on an edge).
    pub published: Flow,
    /// Messages not published: the publish queue was full (broker down or slow) or the
    /// broker refused them (larger than its max_payload).
    pub dropped: AtomicU64,
    /// Messages the broker client dropped because wsbridge read them too slowly (NATS
    /// "slow consumer"), as reported.
    pub slow_consumer: AtomicU64,
    /// Edges' input the producer dropped: its program was not reading and more than
    /// `--sharedqueue` bytes of it were waiting.
    pub input_dropped: AtomicU64,
    /// Connections to the broker after the first (reconnects).
    pub reconnects: AtomicU64,
    /// 1 while connected to the broker.
    pub connected: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // only to build the arrays below
const ZERO: AtomicU64 = AtomicU64::new(0);

/// The process's counters.
pub static STATS: Stats = Stats {
    received: Flow::new(),
    sent: Flow::new(),
    routes: Mutex::new(BTreeMap::new()),
    duration_buckets: [ZERO; DURATION_BUCKETS.len() + 1],
    duration_sum_us: ZERO,
    refusals: [ZERO; 500],
    http: [ZERO; 5],
    exit_codes: [ZERO; 256],
    exit_signals: [ZERO; SIGNALS],
    tls_failures: ZERO,
    shared_clients: ZERO,
    shared_dropped: ZERO,
    broker: BrokerStats {
        received: Flow::new(),
        published: Flow::new(),
        dropped: ZERO,
        slow_consumer: ZERO,
        input_dropped: ZERO,
        reconnects: ZERO,
        connected: ZERO,
    },
};

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Unix time in seconds when metrics were switched on (the server's start).
static STARTED: OnceLock<f64> = OnceLock::new();

/// Switches on the per-message counters (`--metrics`); called once at server start,
/// before any session.
pub fn enable() {
    ENABLED.store(true, Relaxed);
    STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    });
}

/// When [`enable`] was called, in Unix seconds.
pub fn start_time() -> f64 {
    STARTED.get().copied().unwrap_or(0.0)
}

/// The totals a session's relay adds to: `Some` only with `--metrics`.
pub fn flows() -> (Option<&'static Flow>, Option<&'static Flow>) {
    match ENABLED.load(Relaxed) {
        true => (Some(&STATS.sent), Some(&STATS.received)),
        false => (None, None),
    }
}

/// The counters of route `name`, made on first use.
pub fn route(name: &str) -> Arc<Route> {
    // Every change is one insert, so a poisoned map is still whole.
    let mut routes = STATS.routes.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = routes.get(name) {
        return Arc::clone(r);
    }
    let r = Arc::<Route>::default();
    routes.insert(name.into(), Arc::clone(&r));
    r
}

/// A copy of every route's counters, for a scrape.
pub fn routes() -> Vec<(Box<str>, u64, u64)> {
    let routes = STATS.routes.lock().unwrap_or_else(|e| e.into_inner());
    routes
        .iter()
        .map(|(name, r)| (name.clone(), r.active.load(Relaxed), r.total.load(Relaxed)))
        .collect()
}

/// One running session: counted active from [`Live::start`] until dropped, when its
/// duration goes into the histogram.
#[must_use = "the session counts as active while this lives"]
pub struct Live {
    route: Arc<Route>,
    started: Instant,
}

impl Live {
    pub fn start(route: Arc<Route>) -> Self {
        route.total.fetch_add(1, Relaxed);
        route.active.fetch_add(1, Relaxed);
        Live {
            route,
            started: Instant::now(),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.route.active.fetch_sub(1, Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        STATS.duration_buckets[bucket].fetch_add(1, Relaxed);
        STATS.duration_sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
    }
}

/// A refused WebSocket upgrade (any answer but 101), or a plain HTTP answer. A 426 is a
/// refusal either way: a plain request to a WebSocket endpoint.
pub fn answered(upgrade: bool, status: u16) {
    match (upgrade || status == 426, status) {
        (_, 101) => {}
        (true, 100..=599) => {
            STATS.refusals[usize::from(status - 100)].fetch_add(1, Relaxed);
        }
        (false, 100..=599) => {
            STATS.http[usize::from(status / 100 - 1)].fetch_add(1, Relaxed);
        }
        _ => {}
    }
}

/// A program's end, by exit code or signal.
pub fn exited(status: &ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        // An exit code is 0–255 on Unix; the mask only keeps the index in bounds.
        STATS.exit_codes[(code & 0xff) as usize].fetch_add(1, Relaxed);
    } else if let Some(sig) = status.signal() {
        if let Some(slot) = usize::try_from(sig).ok().and_then(|s| STATS.exit_signals.get(s)) {
            slot.fetch_add(1, Relaxed);
        }
    }
}

/// A TLS handshake that failed or timed out.
pub fn tls_failed() {
    STATS.tls_failures.fetch_add(1, Relaxed);
}

/// A `--shared` client joined (`+1`) or left (`-1`).
pub fn shared_client(joined: bool) {
    match joined {
        true => STATS.shared_clients.fetch_add(1, Relaxed),
        false => STATS.shared_clients.fetch_sub(1, Relaxed),
    };
}

/// A `--shared` client dropped for being too slow (close 1008).
pub fn shared_dropped() {
    STATS.shared_dropped.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_first_bucket_that_holds_them() {
        let before: Vec<u64> = STATS.duration_buckets.iter().map(|b| b.load(Relaxed)).collect();
        drop(Live::start(route("/unit-test")));
        let after: Vec<u64> = STATS.duration_buckets.iter().map(|b| b.load(Relaxed)).collect();
        // Other tests may end sessions too; the first bucket grew by at least this one.
        assert!(after[0] > before[0]);
        let r = route("/unit-test");
        assert_eq!((r.active.load(Relaxed), r.total.load(Relaxed)), (0, 1));
    }

    #[test]
    fn statuses_out_of_range_are_ignored() {
        answered(true, 99);
        answered(false, 600);
        answered(true, 101);
        answered(true, 599);
        assert!(STATS.refusals[499].load(Relaxed) >= 1);
    }
}
