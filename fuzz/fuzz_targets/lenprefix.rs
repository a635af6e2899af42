//! `lenprefix` output decoder (`framing::Decoder` with `Framing::LenPrefix`): arbitrary
//! bytes fed in arbitrary chunks.
//!
//! Input layout as for `line_framer`: `[max][n][n × u16 LE cut offsets][payload]`; `max` is
//! `--maxframesize` (0–255), `n % 8` the number of cuts (modulo `payload.len() + 1`).
//!
//! Invariants checked (as in tests/it/properties.rs):
//! - chunked = one-shot: the same messages, and the same error (offset and reason) or none;
//! - no binary message is longer than `max` (text ones may grow when invalid UTF-8 becomes
//!   U+FFFD: see `lenprefix_invalid_utf8_text_within_max` in tests/it/properties.rs);
//! - the decoded messages, encoded again with `encode` and decoded, give the same messages
//!   and no error.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wsbridge::framing::{encode, Decoder, FrameError, Framing};

fn decode(chunks: &[&[u8]], max: usize) -> (Vec<impl PartialEq + std::fmt::Debug + Clone>, Result<(), FrameError>) {
    let mut decoder = Decoder::new(Framing::LenPrefix, max);
    let mut out = Vec::new();
    for chunk in chunks {
        if let Err(e) = decoder.push(Bytes::copy_from_slice(chunk), &mut out) {
            return (out, Err(e));
        }
    }
    let end = decoder.finish(&mut out);
    (out, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((max, payload, chunks)) = wsbridge_fuzz::cut(data) else {
        return;
    };
    let max = usize::from(max);

    let whole = decode(&[payload], max);
    let chunked = decode(&chunks, max);
    assert_eq!(chunked, whole, "chunking changed the result; chunks {chunks:?}");

    let mut decoder = Decoder::new(Framing::LenPrefix, max);
    let mut messages = Vec::new();
    let _ = decoder.push(Bytes::copy_from_slice(payload), &mut messages);
    let mut stream = Vec::new();
    for m in &messages {
        if m.is_binary() {
            assert!(m.len() <= max, "binary message of {} bytes > {max}", m.len());
        }
        let e = encode(Framing::LenPrefix, m.clone()).unwrap().expect("a data message");
        stream.extend_from_slice(e.head());
        stream.extend_from_slice(&e.payload);
        stream.extend_from_slice(e.tail);
    }
    let mut again = Vec::new();
    let mut decoder = Decoder::new(Framing::LenPrefix, usize::MAX);
    decoder
        .push(Bytes::from(stream), &mut again)
        .expect("re-encoded messages decode");
    decoder.finish(&mut again).expect("re-encoded messages end cleanly");
    assert_eq!(again, messages, "re-encoding changed the messages");
});
