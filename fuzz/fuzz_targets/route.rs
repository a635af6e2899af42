//! `route::segments`, the URL path → directory mapping shared by `--staticdir`,
//! `--cgidir` and `--dir`, on arbitrary strings.
//!
//! Invariants checked (as in tests/it/properties.rs): a path that is accepted yields only
//! non-empty segments that do not start with `.` and contain no `/`, `\` or NUL, so
//! joining them under a root can never leave it lexically; and the segments re-encoded
//! are accepted again to the same result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsbridge::route::segments;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Some(seg) = segments(raw) else { return };
    let mut again = String::new();
    for p in &seg.parts {
        assert!(!p.is_empty(), "empty segment from {raw:?}");
        assert!(!p.starts_with(b"."), "dot segment from {raw:?}");
        assert!(!p.iter().any(|&b| b == b'/' || b == b'\\' || b == 0), "separator from {raw:?}");
        again.push('/');
        for &b in p {
            again.push_str(&format!("%{b:02X}"));
        }
    }
    if seg.trailing_slash || seg.parts.is_empty() {
        again.push('/');
    }
    let re = segments(&again).expect("re-encoded segments are accepted");
    assert_eq!(re.parts, seg.parts, "re-encoding changed the segments of {raw:?}");
});
