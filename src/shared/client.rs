//! One client's side of `--shared`: its session with the hub, from the 101 to its summary
//! line. It sends what the hub queued for it (a flush per burst, and pings), feeds its
//! messages through [`crate::relay`]'s input pump into the hub's one input channel, and
//! ends with [`crate::session`]'s close. It owns the client's session, not the program,
//! the fan-out or the queues (that is the hub, [`super::Hub`]).

use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, StreamExt};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::{CancellationToken, PollSender};

use super::{Input, Membership, Precompress, Queued};
use crate::config::Session;
use crate::limit::{idle, Paced};
use crate::relay::{self, or_pending, Counters, InEnd, Liveness};
use crate::session::{self, Closing, EndedBy, Who};
use crate::stats;

/// Messages sent to one client before one flush.
const FLUSH_EVERY: usize = 256;

/// The program's input as one client sees it: each write (whole messages, from
/// [`relay::pump_in`]) becomes one batch on the hub's channel, marked with the client's
/// id (`--shared=ids` puts it before every line; an edge publishes it with the batch).
struct ClientInput {
    tx: PollSender<Input>,
    from: u64,
}

impl AsyncWrite for ClientInput {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "the shared program is gone");
        if std::task::ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(closed()));
        }
        let item = Input {
            from: self.from,
            bytes: Bytes::copy_from_slice(buf),
        };
        match self.tx.send_item(item) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(_) => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The first thing that ended a client's session.
enum Ending {
    /// The hub closed this client's queue (`once`: the program ended).
    HubEnded,
    Socket(WsError),
    Input(InEnd),
    Dropped,
    PingTimeout,
    Idle,
    Shutdown,
}

/// One client's session with the shared program, to its end; logs a summary line. With
/// `pre` (the client agreed the hub's permessage-deflate parameters) it is sent the
/// messages compressed once for all such clients.
pub async fn run_client(
    ws: session::Socket,
    pre: Option<Precompress>,
    mut member: Membership,
    config: &Session,
    shutdown: &CancellationToken,
    who: &Who,
) {
    let started = Instant::now();
    let hub = Arc::clone(&member.hub);
    let (mut sink, stream) = ws.split();
    let mut stream = Paced::new(stream, config.rate_limit);
    let liveness = Liveness::default();
    let ping = config.ping_interval;
    let (sent, received) = stats::flows();
    let (sent, received) = (Counters::adding_to(sent), Counters::adding_to(received));
    let input = ClientInput {
        tx: PollSender::new(hub.input.clone()),
        from: member.id,
    };
    let ending = {
        let mut out = pin!(send_queue(&mut member.rx, &member.queued, &mut sink, ping, &sent, pre));
        let mut inp = pin!(relay::pump_in(
            &mut stream,
            input,
            config.framing,
            ping.map(|_| &liveness),
            &received
        ));
        tokio::select! {
            end = &mut out => match end {
                Ok(()) => Ending::HubEnded,
                Err(e) => Ending::Socket(e),
            },
            end = &mut inp => Ending::Input(end),
            () = member.kick.token.cancelled() => Ending::Dropped,
            () = or_pending(ping.map(|every| relay::watchdog(every, &liveness))) => Ending::PingTimeout,
            () = or_pending(config.idle_timeout.map(|limit| idle(limit, || sent.messages() + received.messages()))) => Ending::Idle,
            () = shutdown.cancelled() => Ending::Shutdown,
        }
    };
    // Dropping a client also closes its queue, so the queue may be seen ending first.
    let ending = match member.kick.token.is_cancelled() {
        true => Ending::Dropped,
        false => ending,
    };
    let held = stream.held();
    let stream = stream.into_inner();
    let reason = member.kick.reason.get().cloned();
    let id = member.id;
    drop(member); // leave the hub: no more output is queued for this client
    let ended_by = match &ending {
        Ending::HubEnded => EndedBy::Program,
        Ending::Shutdown => EndedBy::Shutdown,
        Ending::Socket(e) => EndedBy::for_send_error(e),
        Ending::Input(end) => EndedBy::for_input(end),
        Ending::Dropped => EndedBy::Dropped,
        Ending::PingTimeout => EndedBy::Ping,
        Ending::Idle => EndedBy::Idle,
    };
    let closing = match ending {
        Ending::HubEnded | Ending::Shutdown => match hub.ended() {
            Some((code, reason)) => Closing::Send(code, reason),
            None => Closing::Send(CloseCode::Away, "server shutting down".into()),
        },
        Ending::Socket(e) => {
            tracing::debug!(target: "wsbridge::shared", error = %e, "sending to the client failed");
            Closing::Drop
        }
        Ending::Dropped => Closing::Send(CloseCode::Policy, reason.unwrap_or_default()),
        Ending::PingTimeout => session::closing_for_ping_timeout(),
        Ending::Idle => session::closing_for_idle(config.idle_timeout),
        Ending::Input(end) => session::closing_for_input(end),
    };
    let close = session::close(sink, stream, closing).await;
    session::Summary {
        who: Some(who),
        started,
        received: &received,
        sent: &sent,
        client: Some(id),
        ended_by,
        exit: None,
        signalled: None,
        close: &close,
        held,
    }
    .log();
}

/// Sends what the hub queues for this client, a flush per burst, and pings; `Ok` when
/// the hub closed the queue and everything in it was sent.
async fn send_queue<S>(
    rx: &mut mpsc::Receiver<Queued>,
    queued: &AtomicUsize,
    sink: &mut S,
    ping: Option<Duration>,
    sent: &Counters,
    pre: Option<Precompress>,
) -> Result<(), WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut ticker = relay::ping_ticker(ping);
    loop {
        let first = tokio::select! {
            biased;
            msg = rx.recv() => msg,
            _ = or_pending(ticker.as_mut().map(|t| t.tick())) => {
                sink.send(Message::Ping(Bytes::new())).await?;
                continue;
            }
        };
        let Some(mut msg) = first else {
            return sink.flush().await;
        };
        let mut n = 0;
        loop {
            let len = msg.len();
            sent.add(len);
            relay::log_message("out", None, &msg.msg);
            sink.feed(msg.wire(pre.as_ref())).await?;
            queued.fetch_sub(len, Ordering::AcqRel);
            n += 1;
            if n == FLUSH_EVERY {
                break;
            }
            match rx.try_recv() {
                Ok(next) => msg = next,
                Err(_) => break,
            }
        }
        sink.flush().await?;
    }
}
