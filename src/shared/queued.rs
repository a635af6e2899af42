//! What the hub queues for each `--shared` client: the message, and with `--compress` a
//! slot for its compressed form that every client who agreed the hub's permessage-deflate
//! parameters shares. The first such client to send the message fills the slot (so the
//! compressing happens once, in a client task, not under the hub's lock); the others send
//! the same bytes. It owns the slot and turning an entry into what goes to tungstenite; the
//! compressing itself is the WebSocket layer's ([`Precompress`] is handed in by it, since
//! `shared` may not import `ws`).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// One message for one client (a clone shares the slot).
#[derive(Clone)]
pub(super) struct Queued {
    pub msg: Message,
    /// The message compressed, shared by every copy of it (`None`: not compressed for all,
    /// e.g. no `--compress`, or addressed to one client).
    pub deflated: Option<Arc<OnceLock<Option<Bytes>>>>,
}

impl Queued {
    pub fn plain(msg: Message) -> Self {
        Queued { msg, deflated: None }
    }

    /// A message for every client, with an empty slot when `compress`.
    pub fn for_all(msg: Message, compress: bool) -> Self {
        let deflated = compress.then(|| Arc::new(OnceLock::new()));
        Queued { msg, deflated }
    }

    /// Bytes the message counts (its uncompressed payload).
    pub fn len(&self) -> usize {
        self.msg.len()
    }

    /// What to hand tungstenite: for a client that agreed the hub's parameters (`pre`), the
    /// shared compressed form as one frame with RSV1 set (compressed now if nobody did
    /// yet), which the deflate layer under tungstenite passes untouched; else the message.
    pub fn wire(&self, pre: Option<&Precompress>) -> Message {
        let (Some(slot), Some(pre)) = (&self.deflated, pre) else {
            return self.msg.clone();
        };
        let (payload, op) = match &self.msg {
            Message::Text(t) => (t.as_bytes(), Data::Text),
            Message::Binary(b) => (&b[..], Data::Binary),
            _ => return self.msg.clone(),
        };
        match slot.get_or_init(|| (pre.deflate)(payload, pre.window_bits).map(Bytes::from)) {
            Some(z) => {
                let mut frame = Frame::message(z.clone(), OpCode::Data(op), true);
                frame.header_mut().rsv1 = true;
                Message::Frame(frame)
            }
            // Too small to compress: plain, as the deflate layer would send it.
            None => self.msg.clone(),
        }
    }
}

/// How a client's messages are compressed once for all: given by the WebSocket layer to a
/// client whose agreed server window is the hub's, without context takeover.
#[derive(Clone, Copy)]
pub struct Precompress {
    /// One message on its own → the payload of an RSV1 frame, `None` to send it plain.
    pub deflate: fn(&[u8], u8) -> Option<Vec<u8>>,
    /// The LZ77 window every such client agreed (the operator's `--compress-window-bits`).
    pub window_bits: u8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn reverse(input: &[u8], bits: u8) -> Option<Vec<u8>> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        (input.len() >= 4).then(|| input.iter().rev().copied().chain([bits]).collect())
    }

    const PRE: Precompress = Precompress {
        deflate: reverse,
        window_bits: 12,
    };

    fn frame_of(m: &Message) -> (bool, OpCode, Vec<u8>) {
        let Message::Frame(f) = m else {
            panic!("not a frame: {m:?}")
        };
        (f.header().rsv1, f.header().opcode, f.payload().to_vec())
    }

    #[test]
    fn compressed_once_for_every_copy_and_sent_with_rsv1() {
        let before = CALLS.load(Ordering::SeqCst);
        let q = Queued::for_all(Message::text("abcdef"), true);
        let copy = q.clone();
        let a = frame_of(&q.wire(Some(&PRE)));
        let b = frame_of(&copy.wire(Some(&PRE)));
        assert_eq!(a, (true, OpCode::Data(Data::Text), b"fedcba\x0c".to_vec()));
        assert_eq!(a, b);
        assert_eq!(CALLS.load(Ordering::SeqCst) - before, 1);
        let bin = Queued::for_all(Message::binary(&b"\x00\x01\x02\x03"[..]), true);
        assert_eq!(frame_of(&bin.wire(Some(&PRE))).1, OpCode::Data(Data::Binary));
        assert_eq!(q.len(), 6);
    }

    #[test]
    fn plain_for_clients_without_the_hubs_parameters_or_when_too_small() {
        let q = Queued::for_all(Message::text("abcdef"), true);
        assert_eq!(q.wire(None), Message::text("abcdef"));
        assert_eq!(
            Queued::plain(Message::text("abcdef")).wire(Some(&PRE)),
            Message::text("abcdef")
        );
        assert_eq!(
            Queued::for_all(Message::text("abcdef"), false).wire(Some(&PRE)),
            Message::text("abcdef")
        );
        let tiny = Queued::for_all(Message::text("ab"), true);
        assert_eq!(tiny.wire(Some(&PRE)), Message::text("ab"));
        // A compressed copy for one client does not change what another is sent.
        let _ = q.wire(Some(&PRE));
        assert_eq!(q.wire(None), Message::text("abcdef"));
    }
}
