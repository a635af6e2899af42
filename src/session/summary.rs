//! A WebSocket session's two access lines: `session started` when the 101 is sent and
//! `session ended` with who ended it and why, the close frames each way, the program's
//! exit, the duration and the traffic. The same lines for per-connection sessions,
//! `--shared` clients and `--connect`; fields that do not apply are left out.
//!
//! Access lines are logged outside the connection's span, with the connection's facts as
//! fields of their own (`conn`, `peer`, `path`), so a line stands alone in either log
//! format and names each fact once.

use std::io;
use std::process::ExitStatus;
use std::time::Instant;

use nix::sys::signal::Signal;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::child;
use crate::limit::Held;
use crate::net::Peer;
use crate::relay::{Counters, InEnd, OutEnd};

/// Which connection a session runs on, for its access lines.
#[derive(Debug, Clone)]
pub struct Who {
    /// The connection's number (the `conn` span's `id`).
    pub conn: u64,
    /// The client (through `--trusted-proxy`, the one the proxy names).
    pub peer: Peer,
    /// The `--trusted-proxy` the request came through, if any.
    pub proxy: Option<Peer>,
    /// The request's URL path, as sent.
    pub path: String,
    /// Who the access checks found (`REMOTE_USER`), if any.
    pub user: Option<String>,
}

/// Who or what ended a session (`ended_by=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The client sent a Close frame.
    Client,
    /// The program ended its output or exited (`--shared`: the shared program ended).
    Program,
    /// The client answered no ping for two `--pingms` intervals.
    Ping,
    /// No message either way for `--idletimeout`.
    Idle,
    /// wsbridge was stopped (SIGINT/SIGTERM).
    Shutdown,
    /// The connection went away without a Close frame (TCP closed or reset).
    Vanished,
    /// A rule was broken (a client message too big, binary without `--binary`, invalid
    /// UTF-8, a protocol error; output that broke `--framing=lenprefix`) or an I/O error.
    Error,
    /// `--shared`: the client fell more than `--sharedqueue` behind and was dropped.
    Dropped,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Client => "client",
            EndedBy::Program => "program",
            EndedBy::Ping => "ping",
            EndedBy::Idle => "idle",
            EndedBy::Shutdown => "shutdown",
            EndedBy::Vanished => "vanished",
            EndedBy::Error => "error",
            EndedBy::Dropped => "dropped",
        }
    }

    /// For an ending of the input pump.
    pub(crate) fn for_input(end: &InEnd) -> Self {
        match end {
            InEnd::Closed(_) => EndedBy::Client,
            InEnd::Gone => EndedBy::Vanished,
            InEnd::Refused(..) | InEnd::Error(_) => EndedBy::Error,
        }
    }

    /// For an ending of the output pump.
    pub(crate) fn for_output(end: &OutEnd) -> Self {
        match end {
            OutEnd::Eof => EndedBy::Program,
            OutEnd::ReadError(_) | OutEnd::Malformed(_) => EndedBy::Error,
            OutEnd::Socket(e) => Self::for_send_error(e),
        }
    }

    /// For a failed send to the client: a connection that is gone, or another error.
    pub(crate) fn for_send_error(e: &WsError) -> Self {
        use tokio_tungstenite::tungstenite::error::ProtocolError;
        match e {
            WsError::Io(_)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing) => {
                EndedBy::Vanished
            }
            _ => EndedBy::Error,
        }
    }
}

/// One Close frame: its code (1005 for a Close without one, as RFC 6455 §7.1.5 reports
/// it) and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseSeen {
    pub code: u16,
    pub reason: String,
}

/// What the closing handshake exchanged.
#[derive(Debug, Default, Clone)]
pub struct Exchanged {
    /// The Close we sent (for a client's Close, the echo of it).
    pub sent: Option<CloseSeen>,
    /// The Close the client sent.
    pub received: Option<CloseSeen>,
    /// The code that ended the session: ours when we closed first (sent or not), else
    /// the client's.
    pub code: Option<u16>,
}

/// The `session ended` line.
pub(crate) struct Summary<'a> {
    pub who: Option<&'a Who>,
    pub started: Instant,
    pub received: &'a Counters,
    pub sent: &'a Counters,
    /// `--shared`: the client's number (the program is the hub's, not this session's).
    pub client: Option<u64>,
    pub ended_by: EndedBy,
    /// How the program ended, when this session owned one.
    pub exit: Option<&'a io::Result<ExitStatus>>,
    /// The last signal the stop ladder had to send.
    pub signalled: Option<Signal>,
    pub close: &'a Exchanged,
    /// How much `--ratelimit` held the client back.
    pub held: Held,
}

impl Summary<'_> {
    pub(crate) fn log(&self) {
        let who = self.who;
        let (sent, received) = (self.close.sent.as_ref(), self.close.received.as_ref());
        tracing::info!(
            target: "wsbridge::access",
            parent: None,
            conn = who.map(|w| w.conn),
            peer = who.map(|w| tracing::field::display(w.peer)),
            proxy = who.and_then(|w| w.proxy).map(tracing::field::display),
            user = who.and_then(|w| w.user.as_deref()),
            path = who.map(|w| w.path.as_str()),
            status = 101,
            shared = self.client.map(|_| true),
            client = self.client,
            ended_by = %self.ended_by.as_str(),
            exit = self.exit.map(|s| tracing::field::display(child::exit_field(s))),
            signalled = self.signalled.map(|s| tracing::field::display(s.as_str())),
            close_sent = sent.map(|c| c.code),
            close_sent_reason = sent.filter(|c| !c.reason.is_empty()).map(|c| c.reason.as_str()),
            close_received = received.map(|c| c.code),
            close_received_reason = received.filter(|c| !c.reason.is_empty()).map(|c| c.reason.as_str()),
            duration_ms = self.started.elapsed().as_millis() as u64,
            msgs_in = self.received.messages(),
            bytes_in = self.received.bytes(),
            msgs_out = self.sent.messages(),
            bytes_out = self.sent.bytes(),
            ratelimited = (self.held.waits > 0).then_some(self.held.waits),
            ratelimited_ms = (self.held.waits > 0).then_some(self.held.waited.as_millis() as u64),
            "session ended"
        );
    }
}
