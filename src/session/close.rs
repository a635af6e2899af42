//! How a session's WebSocket is closed, the same for every kind of session (per
//! connection, `--shared` clients, `--connect`): which Close an ending calls for, sending
//! it and waiting briefly for the client's, and the code that was exchanged. Log lines
//! keep the `wsbridge::session` target they have always had.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::summary::{CloseSeen, Exchanged};
use crate::child;
use crate::relay::InEnd;

/// How long a Close frame may take to send, and the client's Close reply to arrive.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How the WebSocket ends.
pub(crate) enum Closing {
    /// Send this Close and wait (briefly) for the client's.
    Send(CloseCode, String),
    /// The client sent this Close; flush our automatic answer (its echo).
    Answer(Option<CloseFrame>),
    /// The connection is already broken: just drop it.
    Drop,
}

/// The client stopped answering pings: the one wording for every kind of session.
pub(crate) fn closing_for_ping_timeout() -> Closing {
    tracing::info!(target: "wsbridge::session", "no pong within two ping intervals; closing");
    Closing::Send(CloseCode::Away, "ping timeout".into())
}

/// `--idletimeout` ran out: the one wording for every kind of session.
pub(crate) fn closing_for_idle(limit: Option<Duration>) -> Closing {
    let ms = limit.map_or(0, |d| d.as_millis() as u64);
    tracing::info!(target: "wsbridge::session", idle_ms = ms, "no message either way for --idletimeout; closing");
    Closing::Send(CloseCode::Away, "idle timeout".into())
}

/// How to close after the client's side ended the relay.
pub(crate) fn closing_for_input(end: InEnd) -> Closing {
    match end {
        InEnd::Closed(frame) => Closing::Answer(frame),
        InEnd::Gone => {
            tracing::debug!(target: "wsbridge::session", "client went away without a Close frame");
            Closing::Drop
        }
        InEnd::Refused(code, reason) => {
            tracing::info!(target: "wsbridge::session", code = u16::from(code), reason = reason.as_ref(), "closing: client broke a rule");
            Closing::Send(code, reason.into_owned())
        }
        InEnd::Error(e) => {
            tracing::warn!(target: "wsbridge::session", error = %e, "websocket error");
            Closing::Send(CloseCode::Error, "internal error".into())
        }
    }
}

/// The Close for a program that ended with `status`.
pub(crate) fn close_for_exit(status: &io::Result<ExitStatus>) -> (CloseCode, String) {
    match status {
        Ok(s) if s.success() => (CloseCode::Normal, String::new()),
        Ok(s) => (CloseCode::Error, child::describe(s)),
        Err(_) => (CloseCode::Error, "program did not exit".to_owned()),
    }
}

/// Ends the WebSocket as `how` says, then drops it; returns what was exchanged.
pub(crate) async fn close<S>(mut sink: S, mut stream: impl WsStream, how: Closing) -> Exchanged
where
    S: futures_util::Sink<Message> + Unpin,
{
    match how {
        Closing::Drop => Exchanged::default(),
        Closing::Answer(frame) => {
            let flushed = tokio::time::timeout(CLOSE_TIMEOUT, sink.flush()).await;
            let received = seen(frame.as_ref());
            Exchanged {
                code: Some(received.code),
                sent: matches!(flushed, Ok(Ok(()))).then(|| received.clone()),
                received: Some(received),
            }
        }
        Closing::Send(code, reason) => {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            };
            let ours = seen(Some(&frame));
            let sent = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
            let sent = matches!(sent, Ok(Ok(())));
            let received = match sent {
                true => await_client_close(&mut stream).await,
                false => None,
            };
            Exchanged {
                code: Some(ours.code),
                sent: sent.then_some(ours),
                received,
            }
        }
    }
}

/// A Close frame as the access line reports it (1005 when it has no code).
fn seen(frame: Option<&CloseFrame>) -> CloseSeen {
    match frame {
        Some(f) => CloseSeen {
            code: u16::from(f.code),
            reason: f.reason.to_string(),
        },
        None => CloseSeen {
            code: u16::from(CloseCode::Status),
            reason: String::new(),
        },
    }
}

/// The receiving half of a WebSocket.
pub(crate) trait WsStream:
    futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin
{
}
impl<T: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin> WsStream for T {}

/// After our Close: read until the client's Close (or EOF) so that unread data does not
/// turn our close into a TCP reset, for at most [`CLOSE_TIMEOUT`]; returns the client's
/// Close if it came.
async fn await_client_close(stream: &mut impl WsStream) -> Option<CloseSeen> {
    let mut late = 0u64;
    let mut theirs = None;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Close(frame) => {
                    theirs = Some(seen(frame.as_ref()));
                    break;
                }
                Message::Text(_) | Message::Binary(_) => late += 1,
                _ => {}
            }
        }
    })
    .await;
    if late > 0 {
        tracing::info!(target: "wsbridge::session",
            discarded = late,
            "client messages arrived after the session ended; discarded"
        );
    }
    theirs
}
