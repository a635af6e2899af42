//! The limits on one client and one session: how many sessions a client address may
//! have at once (`--maxperclient`, [`PerClient`]), how fast a session reads its client's
//! messages (`--ratelimit`, [`Paced`]), and how long a session may go without a message
//! either way (`--idletimeout`, [`idle`]). It owns the counting and the waiting, not the
//! answers: [`crate::ws`] turns a full [`PerClient`] into a 429, and [`crate::session`]
//! closes an idle session with 1001.
//!
//! The rate limit never drops and never buffers: when the session has no token left, it
//! simply does not read the socket until it has one, so the client's own TCP window
//! fills and the client is slowed where it sends. Control frames (ping, pong, close) take
//! no token, but they wait behind a data message that does.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::config::RateLimit;
use crate::net::Peer;

/// Who counts as one client for `--maxperclient`: an IPv4 address, an IPv6 /64 (one
/// host's usual allocation: a client with a whole /64 could otherwise take a slot per
/// address), or every Unix-socket client together (without `--trusted-proxy=unix` they
/// cannot be told apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    V6Net(u64),
    Unix,
}

impl ClientKey {
    pub fn of(peer: &Peer) -> Self {
        let ip = match peer {
            Peer::Addr(a) => a.ip(),
            Peer::Ip(ip) => *ip,
            Peer::Unix => return ClientKey::Unix,
        };
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => ClientKey::V6Net((v6.to_bits() >> 64) as u64),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(ip) => ip.fmt(f),
            ClientKey::V6Net(net) => {
                let ip = std::net::Ipv6Addr::from_bits(u128::from(*net) << 64);
                write!(f, "{ip}/64")
            }
            ClientKey::Unix => f.write_str("unix-socket"),
        }
    }
}

/// Sessions open per client, for `--maxperclient`. The table holds only clients with a
/// session open, so it is as big as the sessions are many, never more.
#[derive(Debug)]
pub struct PerClient {
    max: usize,
    open: Mutex<HashMap<ClientKey, usize>>,
}

/// One session's place in [`PerClient`]; dropping it gives the place back.
#[derive(Debug)]
pub struct ClientSlot {
    table: Arc<PerClient>,
    key: ClientKey,
}

impl PerClient {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerClient {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more session of `key`'s, or `None` when it has `max` already.
    pub fn take(self: &Arc<Self>, key: ClientKey) -> Option<ClientSlot> {
        // A poisoned lock means a panic while counting, which cannot happen in the few
        // lines that hold it; the counts are still whole, so keep using them.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: Arc::clone(self),
            key,
        })
    }

    /// Sessions `key` has open now.
    pub fn open(&self, key: ClientKey) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&key).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A client's message stream read no faster than a [`RateLimit`] allows (token bucket);
/// without a limit, the stream itself.
pub struct Paced<S> {
    inner: S,
    bucket: Option<Box<Bucket>>,
}

/// How much a [`Paced`] stream held its client back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Times the stream waited for a token.
    pub waits: u64,
    pub waited: Duration,
}

struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    waiting_since: Option<Instant>,
    held: Held,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Bucket {
            per_second: f64::from(limit.per_second),
            burst: f64::from(limit.burst),
            tokens: f64::from(limit.burst),
            last: Instant::now(),
            sleep: None,
            waiting_since: None,
            held: Held::default(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
    }

    /// Ready when a token is there (not taken yet: only a data message takes one).
    fn poll_token(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let now = Instant::now();
            self.refill(now);
            if self.tokens >= 1.0 {
                if let Some(since) = self.waiting_since.take() {
                    self.held.waits += 1;
                    self.held.waited += now.saturating_duration_since(since);
                }
                return Poll::Ready(());
            }
            let due = now + Duration::from_secs_f64((1.0 - self.tokens) / self.per_second);
            self.waiting_since.get_or_insert(now);
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(due),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(due))),
            }
            if let Some(s) = &mut self.sleep {
                ready!(s.as_mut().poll(cx));
            }
        }
    }
}

impl<S> Paced<S> {
    pub fn new(inner: S, limit: Option<RateLimit>) -> Self {
        Paced {
            inner,
            bucket: limit.map(|l| Box::new(Bucket::new(l))),
        }
    }

    /// How much the limit has held the client back so far.
    pub fn held(&self) -> Held {
        self.bucket.as_ref().map_or_else(Held::default, |b| b.held)
    }

    /// The stream without the limit: for the closing handshake, which must not wait for
    /// a token (the client's Close would otherwise be read up to a token's time late).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Stream for Paced<S>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(bucket) = &mut this.bucket {
            ready!(bucket.poll_token(cx));
        }
        let item = ready!(Pin::new(&mut this.inner).poll_next(cx));
        if let (Some(bucket), Some(Ok(Message::Text(_) | Message::Binary(_)))) = (&mut this.bucket, &item) {
            bucket.tokens -= 1.0;
        }
        Poll::Ready(item)
    }
}

/// Returns once `messages()` (the messages both ways, counted by the relay) has not
/// changed for `limit`; checks eight times per `limit`, so it fires between `limit` and
/// `limit * 9/8` after the last message.
pub async fn idle(limit: Duration, messages: impl Fn() -> u64) {
    let step = (limit / 8).max(Duration::from_millis(1));
    let (mut seen, mut since) = (messages(), Instant::now());
    loop {
        tokio::time::sleep(step).await;
        let now = messages();
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= limit {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::{Ipv6Addr, SocketAddr};

    use futures_util::StreamExt;

    use super::*;

    fn text(i: usize) -> Result<Message, WsError> {
        Ok(Message::Text(i.to_string().into()))
    }

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_64() {
        let v6 = |s: &str| ClientKey::of(&Peer::Addr(SocketAddr::new(s.parse().unwrap(), 1)));
        assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff::9"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:192.0.2.7"), ClientKey::V4(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(v6("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientKey::of(&Peer::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))).to_string(),
            "::/64"
        );
        assert_eq!(ClientKey::of(&Peer::Unix).to_string(), "unix-socket");
    }

    #[test]
    fn per_client_slots_are_counted_and_given_back() {
        let table = PerClient::new(2);
        let (a, b) = (ClientKey::V4(Ipv4Addr::LOCALHOST), ClientKey::Unix);
        let one = table.take(a).expect("first");
        let two = table.take(a).expect("second");
        assert!(table.take(a).is_none(), "a third is over the limit");
        let other = table.take(b).expect("another client is not affected");
        drop(one);
        let three = table.take(a).expect("a slot given back can be taken again");
        drop((two, three, other));
        assert_eq!(table.open(a), 0);
        assert!(
            table.open.lock().unwrap().is_empty(),
            "no entry is kept for a client with no session"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn paced_reads_at_the_rate_after_the_burst() {
        let limit = RateLimit {
            per_second: 10,
            burst: 5,
        };
        let mut s = Paced::new(futures_util::stream::iter((0..25).map(text)), Some(limit));
        let start = Instant::now();
        for _ in 0..5 {
            s.next().await.expect("burst").expect("ok");
        }
        assert!(start.elapsed() < Duration::from_millis(1), "the burst is read at once");
        for _ in 0..20 {
            s.next().await.expect("paced").expect("ok");
        }
        let took = start.elapsed();
        assert!(
            (Duration::from_millis(1990)..=Duration::from_millis(2010)).contains(&took),
            "20 messages at 10/s after the burst take 2 s, took {took:?}"
        );
        assert_eq!(s.held().waits, 20);
        assert!(s.held().waited >= Duration::from_millis(1990));
    }

    #[tokio::test(start_paused = true)]
    async fn control_frames_take_no_token() {
        let limit = RateLimit {
            per_second: 1,
            burst: 1,
        };
        let frames = vec![
            text(1),
            Ok(Message::Ping(Default::default())),
            Ok(Message::Pong(Default::default())),
        ];
        let mut s = Paced::new(futures_util::stream::iter(frames), Some(limit));
        let start = Instant::now();
        s.next().await.expect("data").expect("ok");
        // The next read waits for a token, but the ping does not spend it.
        s.next().await.expect("ping").expect("ok");
        s.next().await.expect("pong").expect("ok");
        assert!(s.next().await.is_none());
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(999) && took < Duration::from_millis(1100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_nothing_waits() {
        let mut s = Paced::new(futures_util::stream::iter((0..1000).map(text)), None);
        let start = Instant::now();
        let mut n = 0;
        while s.next().await.is_some() {
            n += 1;
        }
        assert_eq!((n, start.elapsed()), (1000, Duration::ZERO));
        assert_eq!(s.held(), Held::default());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_after_a_quiet_limit() {
        let count = Cell::new(0u64);
        let limit = Duration::from_secs(8);
        let start = Instant::now();
        let watch = idle(limit, || count.get());
        tokio::pin!(watch);
        // Activity every 5 s keeps it from firing.
        for _ in 0..4 {
            assert!(tokio::time::timeout(Duration::from_secs(5), &mut watch).await.is_err());
            count.set(count.get() + 1);
        }
        let quiet_from = Instant::now();
        watch.await;
        let quiet = quiet_from.elapsed();
        assert!(
            quiet >= limit && quiet <= limit + limit / 8,
            "fired after {quiet:?} of quiet"
        );
        assert!(start.elapsed() > Duration::from_secs(20));
    }
}
