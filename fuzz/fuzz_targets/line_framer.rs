//! `LineFramer`: arbitrary bytes fed in arbitrary chunks.
//!
//! Input layout: `[max][n][n × u16 LE cut offsets][payload]`; `max % 64` is the `max_line`
//! given to `LineFramer::new` (which raises it to at least 4), `n % 8` the number of cuts,
//! each taken modulo `payload.len() + 1` (sorted; duplicates give empty chunks).
//!
//! Invariants checked (the same as tests/it/properties.rs):
//! - chunked = one-shot: pushing the chunks one by one and then `finish` yields exactly the
//!   lines of one `push` of the whole payload plus `finish`;
//! - no line or piece is longer than `max(max_line, 4)`;
//! - one-shot output splits into consecutive runs, one per logical line (split on `\n`, one
//!   `\r` before a `\n` removed, unterminated last line kept only when non-empty and with
//!   its `\r`), each run concatenating to its line;
//! - if the payload is valid UTF-8, every piece is valid UTF-8 (cuts at char boundaries).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wsbridge::relay::LineFramer;

fn frame(chunks: &[&[u8]], max_line: usize) -> Vec<Bytes> {
    let mut framer = LineFramer::new(max_line);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(Bytes::copy_from_slice(chunk), &mut out);
    }
    framer.finish(&mut out);
    out
}

fn reference_lines(input: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut rest = input;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..i];
        lines.push(line.strip_suffix(b"\r").unwrap_or(line));
        rest = &rest[i + 1..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines
}

fuzz_target!(|data: &[u8]| {
    let Some((max, payload, chunks)) = wsbridge_fuzz::cut(data) else {
        return;
    };
    let max_line = usize::from(max % 64);

    let whole = frame(&[payload], max_line);
    let chunked = frame(&chunks, max_line);
    assert_eq!(chunked, whole, "chunking changed the lines; chunks {chunks:?}");

    let bound = max_line.max(4);
    for piece in whole.iter().chain(&chunked) {
        assert!(piece.len() <= bound, "piece of {} bytes > {bound}", piece.len());
    }

    let mut pieces = whole.iter();
    for line in reference_lines(payload) {
        let mut run = pieces.next().expect("a piece for every line").to_vec();
        while run.len() < line.len() {
            run.extend_from_slice(pieces.next().expect("more pieces for a cut line"));
        }
        assert_eq!(run, line, "pieces do not rebuild the line");
    }
    assert!(pieces.next().is_none(), "pieces left over");

    if std::str::from_utf8(payload).is_ok() {
        for piece in whole.iter().chain(&chunked) {
            assert!(std::str::from_utf8(piece).is_ok(), "cut inside a char: {piece:?}");
        }
    }
});
