//! `percent_decode` on arbitrary bytes.
//!
//! Invariants checked (as in tests/it/properties.rs):
//! - decoding never makes the input longer;
//! - input without `%` decodes to itself;
//! - encoding every byte as `%XX` (upper- or lower-case hex, chosen by the byte's low bit)
//!   and decoding gives the input back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsbridge::net::percent_decode;

fuzz_target!(|data: &[u8]| {
    let decoded = percent_decode(data);
    assert!(decoded.len() <= data.len(), "decoding grew the input");
    if !data.contains(&b'%') {
        assert_eq!(decoded, data, "input without '%' changed");
    }
    let mut encoded = Vec::with_capacity(3 * data.len());
    for &b in data {
        let hex = if b & 1 == 0 {
            format!("%{b:02X}")
        } else {
            format!("%{b:02x}")
        };
        encoded.extend_from_slice(hex.as_bytes());
    }
    assert_eq!(percent_decode(&encoded), data, "decode(encode(x)) != x");
});
