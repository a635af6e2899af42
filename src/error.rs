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
