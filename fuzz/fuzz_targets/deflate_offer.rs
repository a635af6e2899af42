//! permessage-deflate negotiation: arbitrary `Sec-WebSocket-Extensions` values, as the
//! server's offers and as `--connect`'s answer.
//!
//! Input layout: `[window_bits][flags][text]`; `text` (lossily UTF-8) is split on `\n`
//! into header values. `window_bits` is mapped into 9..=15 (the flag's range); flag bit 0
//! is `--compress-no-context-takeover`.
//!
//! Invariants checked (as in src/ws/deflate/tests.rs):
//! - `accept`, `offer` and `check_answer` never panic, and an error's `Display` neither;
//! - an accepted offer's answer is a valid header value that names permessage-deflate
//!   first, and the agreed windows are 8 to 15 with ours within the operator's limit;
//! - with --compress-no-context-takeover both directions agree to no context takeover.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsbridge::config::Compress;
use wsbridge::ws::deflate::{accept, check_answer, offer};

fuzz_target!(|data: &[u8]| {
    let [bits, flags, rest @ ..] = data else { return };
    let ours = Compress {
        window_bits: 9 + bits % 7,
        no_context_takeover: flags & 1 != 0,
    };
    let text = String::from_utf8_lossy(rest);
    let values: Vec<&str> = text.split('\n').collect();
    let _ = offer(&ours);
    if let Some((agreed, answer)) = accept(values.iter().copied(), &ours) {
        assert!(hyper::header::HeaderValue::from_str(&answer).is_ok(), "{answer:?}");
        assert!(answer.starts_with("permessage-deflate"), "{answer:?}");
        assert!((9..=ours.window_bits).contains(&agreed.ours.window_bits), "{agreed:?}");
        assert!((8..=15).contains(&agreed.theirs.window_bits), "{agreed:?}");
        if ours.no_context_takeover {
            assert!(agreed.ours.no_context_takeover && agreed.theirs.no_context_takeover);
        }
    }
    match check_answer(values.iter().copied(), &ours) {
        Ok(Some(agreed)) => assert!((9..=ours.window_bits).contains(&agreed.ours.window_bits), "{agreed:?}"),
        Ok(None) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
