//! The typed errors that callers branch on: today a refused request ([`Refusal`]), which
//! carries the status, the message and any headers of its answer. Pure values; it owns
//! neither the decision to refuse (the handshake in [`crate::ws`], the fork limit in
//! [`crate::state`]) nor the writing of the answer ([`crate::http`]).

use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;

/// A request that was refused, and how to answer it.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }
}

/// Why a compressed (permessage-deflate) message from the peer was refused: carried to
/// [`crate::relay`] inside an `io::Error` from the transport under tungstenite, and
/// answered with 1009 or 1007.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The inflated message passed `--maxframesize` (checked while inflating).
    #[error("compressed message inflates past --maxframesize {max}")]
    TooBig { max: usize },
    /// The payload is not a valid DEFLATE stream.
    #[error("compressed message does not inflate: {0}")]
    Corrupt(String),
}
